"""The watchdog in a user's own loop (issue 24 item 1, issue 26 items 2 and 4): small torch
scripts under ``mpiexec -n 4`` (8 for the slow start) whose ranks are all alive but not in the
same collective call. Each case asserts the exit code, the first error line (which names the
ranks and the calls), a time bound derived from the configured ``comm_timeout`` and measured
from the event that caused the hang (the script prints it), and that no rank is left running.

- ``if rank == 0: with opt.averaged(): ...`` (the DDP habit): rank 0 waits in averaged(), the
  others in the next step(): the progress rule ends the job within comm_timeout (+ 10 s);
- one extra batch on one rank: the others finish; the watchdog ends the job at once;
- ``DECOMP_COLLECTIVE_CHECK=1``: the same mismatch is reported before any collective runs;
- the first Ctrl-C (SIGINT to mpiexec) ends a job blocked in a collective, with 130;
- a ``Trainer.fit`` rank in a collective of its own inside a step while the others wait in
  the step's collective: the progress rule of the step loop;
- a slow start (one rank holds the interpreter for longer than the timeout before its first
  step, 8 ranks on 2 cores) finishes; without the start-up allowance the same start is ended.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import _tool
from tests.e2e.test_faults_input import first_error_line, processes_mentioning

pytestmark = pytest.mark.timeout(600)  # 4 to 8 torch ranks on a loaded 2-core machine

SCRIPT = r"""
import itertools, os, sys, time
import torch
import decomp.torch
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
case, timeout = sys.argv[1], float(sys.argv[2])


def event(name):
    print(f"EVENT {name} {rank} {time.time():.3f}", flush=True)


torch.manual_seed(0)
x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
if case == "trainer":
    from decomp.data.classification import load
    from decomp.torch.trainer import Trainer

    def lr(t):  # rank 3 makes a collective of its own inside step 5
        if rank == 3 and t == 5:
            event("blocked")
            MPI.COMM_WORLD.Barrier()
        return 0.1

    net = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    tr = Trainer(net, torch.nn.CrossEntropyLoss(), load("synthetic", n_samples=200,
                 n_features=10, n_classes=3), lr=0.1, batch_size=8, comm_timeout_s=timeout,
                 verbose=False, progress=False)
    tr.fit(steps=20, lr_schedule=lr)
    event("done")
    sys.exit(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                            torch.nn.Linear(16, 2))
opt = decomp.torch.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                                        comm_timeout=timeout)
if case == "slow-start" and rank == 0:
    # loading data, compiling: one C call that holds the interpreter (no heartbeat can run)
    # for longer than 1.5 x the timeout; grown until it does on this machine's load
    n, held = 10**6, 0.0
    while held <= 1.5 * timeout:
        t0 = time.monotonic()
        sum(itertools.repeat(1, n))
        held = time.monotonic() - t0
        n = int(n * max(2.0, 2.0 * timeout / max(held, 1e-3)))
    event(f"held-{held:.1f}")
steps = 20 + (case == "extra-batch" and rank == 3)
for t in range(steps):
    if case in ("averaged", "sigint") and rank == 0 and t == 5:
        event("mismatch")
        with opt.averaged():
            model(x)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
event("done")
"""


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="0", **extra)


def _start(tmp: Path, case: str, timeout: float, np: int = 4, extra: str = "",
           **env: str) -> subprocess.Popen:
    script = tmp / "train.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([_tool("mpiexec"), "-n", str(np), _tool("python"), str(script),
                             case, str(timeout), extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**env), cwd=tmp)


def _events(out: str) -> dict[str, list[tuple[int, float]]]:
    """name -> [(rank, time)] of the script's events (the ranks' lines may run together)."""
    ev: dict[str, list[tuple[int, float]]] = {}
    for name, rank, when in re.findall(r"EVENT (\S+) (\d+) (\d+\.\d{3})", out):
        ev.setdefault(name, []).append((int(rank), float(when)))
    return ev


def _finish(p: subprocess.Popen, limit: float, tag: str) -> tuple[int, str, str, float]:
    """Wait for the job (at most ``limit`` + 60 s of start-up); the exit code, the outputs
    and the wall-clock time of its end (time.time(), as the script's events)."""
    try:
        out, err = p.communicate(timeout=limit + 120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"still running {limit + 120:.0f} s later\n{err[-3000:]}")
    ended = time.time()
    time.sleep(0.3)
    assert not processes_mentioning(tag), processes_mentioning(tag)
    return p.returncode, out, err, ended


def test_a_rank_0_only_averaged_ends_the_job_naming_the_ranks(tmp_path: Path) -> None:
    timeout = 5.0
    rc, out, err, ended = _finish(_start(tmp_path, "averaged", timeout), timeout,
                                  str(tmp_path))
    assert rc != 0, err[-3000:]  # 124 (MPI_Abort) unless ranks aborting together race
    msg = first_error_line(err)
    assert msg.startswith("watchdog: no watched call completed for more than comm_timeout "
                          "= 5 s while every rank is alive"), msg
    assert "rank 0 in opt.averaged()" in msg and "ranks 1-3 in opt.step()" in msg, msg
    (_, hung_at), = _events(out)["mismatch"]
    print(f"measured: the job ended {ended - hung_at:.1f} s after the mismatch (rc {rc})")
    assert ended - hung_at < timeout + 10, (ended - hung_at, msg)
    assert "done" not in _events(out)


def test_one_extra_batch_on_one_rank_ends_the_job_at_once(tmp_path: Path) -> None:
    timeout = 30.0  # the rule for a finished peer does not wait for it
    rc, out, err, ended = _finish(_start(tmp_path, "extra-batch", timeout), timeout,
                                  str(tmp_path))
    assert rc != 0, err[-3000:]
    msg = first_error_line(err)
    assert msg.startswith("watchdog: rank(s) 0-2 finished without making this call"), msg
    assert "rank 3 in opt.step() (its call 21, after step 20)" in msg, msg
    done = _events(out)["done"]
    assert sorted(r for r, _ in done) == [0, 1, 2]
    print(f"measured: the job ended {ended - max(t for _, t in done):.1f} s after the others "
          f"finished (rc {rc})")
    assert ended - max(t for _, t in done) < 10, ended - max(t for _, t in done)


def test_the_collective_check_reports_the_first_mismatch(tmp_path: Path) -> None:
    timeout = 300.0  # the check, not the watchdog, must end it
    rc, out, err, ended = _finish(_start(tmp_path, "averaged", timeout,
                                         DECOMP_COLLECTIVE_CHECK="1"), 10, str(tmp_path))
    assert rc == 1, err[-3000:]
    msg = first_error_line(err)
    assert msg.startswith("uncaught UsageError: collective check (DECOMP_COLLECTIVE_CHECK=1): "
                          "the ranks are not in the same call. First mismatch: rank 0 is in "
                          "opt.averaged() after step 5 with model size "), msg
    assert "while ranks 1, 2, 3 are in opt.step() after step 5" in msg, msg
    (_, hung_at), = _events(out)["mismatch"]
    print(f"measured: the job ended {ended - hung_at:.1f} s after the mismatch (rc {rc})")
    assert ended - hung_at < 10, ended - hung_at


def test_the_first_sigint_ends_a_job_blocked_in_a_collective(tmp_path: Path) -> None:
    p = _start(tmp_path, "sigint", 300.0)
    assert p.stdout is not None
    seen = ""
    for line in p.stdout:  # until rank 0 is inside averaged() and the others in step()
        seen += line
        if line.startswith("EVENT mismatch"):
            break
    time.sleep(2.0)
    os.kill(p.pid, signal.SIGINT)
    sent = time.time()
    rc, _, err, ended = _finish(p, 10, str(tmp_path))
    assert rc == 130, err[-3000:]
    assert first_error_line(err).startswith("interrupted (SIGINT) while blocked in opt."), err
    print(f"measured: the job ended {ended - sent:.1f} s after the SIGINT (rc {rc})")
    assert ended - sent < 10, ended - sent


def test_a_trainer_rank_in_a_collective_of_its_own_ends_the_job(tmp_path: Path) -> None:
    """Rank 3 of a Trainer.fit enters a barrier of its own inside step 5 (its lr_schedule);
    the others wait in the step's collective: every rank alive, no step completes — the
    progress rule of the step loop."""
    timeout = 5.0
    rc, out, err, ended = _finish(_start(tmp_path, "trainer", timeout), timeout, str(tmp_path))
    assert rc != 0, err[-3000:]
    msg = first_error_line(err)
    assert msg.startswith("watchdog: no watched call completed for more than "
                          "run.comm_timeout_s = 5 s while every rank is alive — ranks 0-3 in a "
                          "step (its call 5, after step 4); every rank is in the same call, "
                          "which does not complete: a rank blocked inside it (in a collective "
                          "of its own"), msg
    (_, blocked_at), = _events(out)["blocked"]
    print(f"measured: the job ended {ended - blocked_at:.1f} s after rank 3 blocked (rc {rc})")
    assert ended - blocked_at < timeout + 10, ended - blocked_at


@pytest.mark.parametrize("allowance", [True, False])
def test_a_slow_start_on_8_loaded_ranks_is_not_a_frozen_rank(tmp_path: Path,
                                                              allowance: bool) -> None:
    """Rank 0 holds the interpreter (one long C call: its heartbeat thread cannot run) for
    more than 1.5 x comm_timeout before its first step while 7 ranks wait in theirs. With the
    start-up allowance (DECOMP_START_TIMEOUT_S, default 300 s) the job finishes; without it
    (0) the same start is taken for a frozen rank — the case the allowance is for."""
    timeout = 3.0
    env = {} if allowance else {"DECOMP_START_TIMEOUT_S": "0"}
    rc, out, err, _ = _finish(_start(tmp_path, "slow-start", timeout, np=8, **env), 60,
                              str(tmp_path))
    held = [float(name.split("-")[1]) for name in _events(out) if name.startswith("held-")]
    print(f"measured: rank 0 held the interpreter {held} s; rc {rc}")
    if allowance:
        assert rc == 0, err[-3000:]
        assert held and held[0] > 1.5 * timeout
        assert sorted(r for r, _ in _events(out)["done"]) == list(range(8))
    else:
        assert rc != 0, err[-3000:]
        assert first_error_line(err).startswith("watchdog: no sign of life from rank 0"), err
