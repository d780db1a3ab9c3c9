"""The one step loop of both front ends (decomp/runner/drive.py) on one process, with a
recording session: it takes ``steps`` more steps counted from the session's own step count
(a resumed run continues its numbering); the collective divergence check runs at every
``log_every``-th step, at the last one and every ``check_every``-th, before that step's log;
the log comes at every ``log_every``-th step and the last; a checkpoint after every
``checkpoint_every``-th step, after the log; a stop signal recorded during step t stops the
loop after step t — its log and checkpoint, if due, written first — with the signal's exit
code, and the watched call of every step is closed."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from decomp.runner.drive import drive
from decomp.runner.lifecycle import Interrupted, RunControl


class _Session:
    def __init__(self, done: int, events: list) -> None:
        self.steps_done = done
        self.events = events
        self.algorithm = SimpleNamespace(name="EF21")

    def step(self) -> None:
        self.steps_done += 1
        self.events.append(("step", self.steps_done))

    def check_divergence(self, who: str, t: int) -> None:
        self.events.append(("check", t, who))


class _Bar:
    def __init__(self) -> None:
        self.n = 0

    def update(self, k: int) -> None:
        self.n += k


def _run(done: int, steps: int, **kw) -> tuple[list, _Bar]:
    events: list = []
    bar = _Bar()
    drive(_Session(done, events), steps, on_log=lambda t: events.append(("log", t)),
          before_step=lambda t: events.append(("before", t)),
          after_step=lambda t: events.append(("after", t)), bar=bar,
          on_checkpoint=lambda t: events.append(("ckpt", t)), **kw)
    return events, bar


def _at(events: list, kind: str) -> list[int]:
    return [e[1] for e in events if e[0] == kind]


def test_logs_checks_and_checkpoints_fall_on_their_steps_counted_from_the_run_start() -> None:
    events, bar = _run(10, 12, log_every=5, check_every=3, checkpoint_every=4, who="EF21 #2")
    assert _at(events, "step") == list(range(11, 23)) and bar.n == 12
    assert _at(events, "before") == _at(events, "after") == list(range(11, 23))
    assert _at(events, "log") == [15, 20, 22]  # every 5th and the last
    assert _at(events, "check") == [12, 15, 18, 20, 21, 22]  # log steps and every 3rd
    assert {e[2] for e in events if e[0] == "check"} == {"EF21 #2"}
    assert _at(events, "ckpt") == [12, 16, 20]
    # within a step: before, step, after, check, log, checkpoint
    assert [e[0] for e in events if e[1] == 20] == ["before", "step", "after", "check", "log",
                                                     "ckpt"]
    assert [e[0] for e in events if e[1] == 16] == ["before", "step", "after", "ckpt"]


def test_without_a_log_interval_only_the_last_step_logs_and_checks() -> None:
    events, _ = _run(0, 7, log_every=None)
    assert _at(events, "log") == [7] and _at(events, "check") == [7]
    assert _at(events, "ckpt") == []
    events, _ = _run(0, 0, log_every=2)  # nothing more to take
    assert events == []


def test_the_check_names_the_algorithm_without_a_label() -> None:
    events, _ = _run(0, 2, log_every=1)
    assert [e for e in events if e[0] == "check"] == [("check", 1, "EF21"), ("check", 2, "EF21")]


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_signal_during_a_step_stops_after_it_with_its_log_and_checkpoint(
        signum: int, code: int) -> None:
    events: list = []
    session = _Session(0, events)
    with RunControl() as control:
        def before(t: int) -> None:
            events.append(("before", t))
            if t == 6:
                control.flag.signum = signum  # as the handler records it

        with pytest.raises(Interrupted) as e:
            drive(session, 20, log_every=3, on_log=lambda t: events.append(("log", t)),
                  before_step=before, control=control, checkpoint_every=2,
                  on_checkpoint=lambda t: events.append(("ckpt", t)))
        assert control.flag.stepping  # a step completed: the vote answers signals now
    control.flag.signum = 0
    assert (e.value.step, e.value.signum, e.value.exit_code, e.value.agreed) == \
        (6, signum, code, True)
    assert _at(events, "step") == [1, 2, 3, 4, 5, 6]
    assert _at(events, "log") == [3, 6] and _at(events, "ckpt") == [2, 4, 6]


def test_every_step_is_a_watched_call_closed_before_the_next() -> None:
    calls: list = []
    control = SimpleNamespace(flag=SimpleNamespace(stepping=True),
                              enter_step=lambda t: calls.append(("enter", t)),
                              leave_step=lambda: calls.append(("leave",)),
                              after_step=lambda t: calls.append(("vote", t)) or 0)
    drive(_Session(4, calls), 3, log_every=None, on_log=lambda t: calls.append(("log", t)),
          control=control)  # type: ignore[arg-type]
    assert control.flag.stepping is False  # until a step completes, the backstop's
    assert [c for c in calls if c[0] != "check"] == [
        ("enter", 5), ("step", 5), ("vote", 5), ("leave",),
        ("enter", 6), ("step", 6), ("vote", 6), ("leave",),
        ("enter", 7), ("step", 7), ("vote", 7), ("log", 7), ("leave",)]
