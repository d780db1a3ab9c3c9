"""How a run ends, on one process (decomp/runner/lifecycle.py): the exit code of each stop
signal is 128 + its number (130 SIGINT, 143 SIGTERM, 138 SIGUSR1); before the loop a stop
signal raises :class:`Interrupted` at once (not agreed: nothing to save), inside it
(``RunControl`` entered) it is only recorded — the first one — and the stop is taken after
the step; the handlers in place before are put back on exit; without a communicator the
"vote" is this process's own flag; an uncaught error ends the MPI job with 1, a
KeyboardInterrupt with 130, an Interrupted with its signal's code (``abort_on_error``).
The same over MPI, with the stop vote and checkpoints: tests/mpi/test_resume.py and
tests/e2e/test_exit_codes.py."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import pytest

from decomp.runner import lifecycle
from decomp.runner.lifecycle import Interrupted, RunControl, SignalFlag, exit_code, signal_name


@pytest.mark.parametrize("signum,code,name", [(signal.SIGINT, 130, "SIGINT"),
                                              (signal.SIGTERM, 143, "SIGTERM"),
                                              (signal.SIGUSR1, 138, "SIGUSR1")])
def test_a_stop_signal_exits_with_128_plus_its_number(signum: int, code: int,
                                                      name: str) -> None:
    assert exit_code(signum) == code
    stop = Interrupted(signum, 12)
    assert (stop.signum, stop.step, stop.agreed, stop.exit_code) == (signum, 12, True, code)
    assert str(stop) == f"stopped by {name} after step 12"
    early = Interrupted(signum, 0, agreed=False)
    assert not early.agreed and early.exit_code == code
    assert str(early) == f"stopped by {name} before the first step"


def test_an_unknown_signal_number_is_named_by_its_number() -> None:
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(250) == "signal 250"


def test_before_the_loop_a_signal_interrupts_at_once_and_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in lifecycle.STOP_SIGNALS}
    flag = SignalFlag()
    with flag:
        assert flag.installed
        with pytest.raises(Interrupted) as e:
            os.kill(os.getpid(), signal.SIGUSR1)  # delivered to this thread before kill returns
        assert not e.value.agreed and e.value.exit_code == 138
        assert flag.signum == signal.SIGUSR1
    assert not flag.installed
    assert {s: signal.getsignal(s) for s in lifecycle.STOP_SIGNALS} == before


def test_in_the_loop_a_signal_is_recorded_and_the_first_one_kept() -> None:
    with RunControl() as control:  # no communicator: this process alone decides
        assert control.flag.deferred and control.flag.signum == 0
        assert control.after_step(1) == 0
        os.kill(os.getpid(), signal.SIGTERM)  # recorded only: no exception here
        os.kill(os.getpid(), signal.SIGUSR1)
        assert control.flag.signum == signal.SIGTERM  # the first one
        assert control.after_step(2) == signal.SIGTERM
        assert control.settle() == signal.SIGTERM
        control.enter_step(3)  # no watchdog: nothing to tell
        control.leave_step()
    assert not control.flag.deferred and not control.flag.stepping
    control.flag.signum = 0


def test_a_signal_before_the_run_control_does_not_stop_its_loop() -> None:
    lifecycle.SIGNALS.signum = signal.SIGTERM  # honoured already (it raised before the loop)
    with RunControl() as control:
        assert control.after_step(1) == 0 and control.settle() == 0


class _World:
    def __init__(self, size: int) -> None:
        self.size = size

    def Get_size(self) -> int:  # noqa: N802 - the mpi4py name
        return self.size

    def Get_rank(self) -> int:  # noqa: N802
        return 0


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """abort_on_error installed afresh over a fake 2-rank world; the aborts it asks for."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(lifecycle, "_installed", False)
    monkeypatch.setattr(lifecycle, "abort_job",
                        lambda comm, message, code=1: calls.append(("abort", code, message)))
    monkeypatch.setattr(sys, "excepthook", lambda *a: calls.append(("previous", a[0])))
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    return calls


@pytest.mark.parametrize("error,code", [(ValueError("bad"), 1), (KeyboardInterrupt(), 130),
                                        (Interrupted(signal.SIGTERM, 4), 143)])
def test_an_uncaught_error_ends_the_job_with_its_code(hooks: list, error: BaseException,
                                                      code: int) -> None:
    lifecycle.abort_on_error(_World(2))
    sys.excepthook(type(error), error, None)
    assert hooks[0][:2] == ("abort", code)
    assert hooks[0][2].startswith(f"uncaught {type(error).__name__}: ")
    assert hooks[1] == ("previous", type(error))  # the usual traceback too


def test_an_error_in_a_thread_ends_the_job_and_a_thread_exit_does_not(hooks: list) -> None:
    lifecycle.abort_on_error(_World(2))

    def fail() -> None:
        raise RuntimeError("in a thread")

    def leave() -> None:
        raise SystemExit(0)

    for target in (leave, fail):
        t = threading.Thread(target=target)
        t.start()
        t.join()
    assert [h[:2] for h in hooks] == [("abort", 1), ("previous", RuntimeError)]


def test_one_process_alone_keeps_pythons_own_error_handling(hooks: list) -> None:
    previous = sys.excepthook
    lifecycle.abort_on_error(_World(1))
    assert sys.excepthook is previous and not lifecycle._installed
    lifecycle.abort_on_error(_World(2))
    installed = sys.excepthook
    lifecycle.abort_on_error(_World(2))  # idempotent: not wrapped twice
    assert sys.excepthook is installed is not previous


_CTRL_C = """
import os, signal
from decomp.runner.lifecycle import Interrupted, RunControl, SignalFlag
with SignalFlag():
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except Interrupted as e:
        print("before the loop:", e.exit_code, e.agreed, flush=True)
with RunControl() as control:
    os.kill(os.getpid(), signal.SIGINT)
    print("in the loop:", control.flag.signum == signal.SIGINT, control.after_step(1), flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    print("not reached", flush=True)
"""


def test_a_first_ctrl_c_is_a_stop_and_a_second_one_leaves_at_once_with_130() -> None:
    """In a child process: a first SIGINT before the loop interrupts (130, not agreed), in the
    loop it is recorded for the vote like any stop signal; a second one while it is pending
    ends the process at once with 130, never 0."""
    import subprocess

    r = subprocess.run([sys.executable, "-c", _CTRL_C], capture_output=True, text=True,
                       timeout=300)
    assert r.stdout.splitlines() == ["before the loop: 130 False", "in the loop: True 2"], \
        (r.stdout, r.stderr)
    assert r.returncode == 130
    assert "second SIGINT: exiting at once" in r.stderr
