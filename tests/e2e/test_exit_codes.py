"""Exit codes and summary statuses as one table (issue 25, item 2; docs/testing.md repeats it),
driving ``mpiexec -n 2 decomp run`` as a user does, on a run of TWO methods: the first one's
outcome must not hide the second's, and the code must follow the rule of docs/reliability.md —
3 if ANY method diverged (not only when all did), 1 for a failure, 128 + signal for a stop
signal, whatever came before; ``summary.json`` marks each method (``ok``, ``diverged``,
``failed``, ``running`` for one killed with the job, ``interrupted``).

The single-method cases (a diverging method, a signal to mpiexec or to one rank, a failing rank
in either family) are in test_cli_run.py, test_decentralized_cli.py and
test_faults_lifecycle.py; these are the rows they do not cover.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_faults_lifecycle import SIGNAL_BOUND_S, _finish, _start, _summary

OK = ""  # the method's own step size (EF21's theory step): converges
BAD = "lr = 1e4"  # diverges within a few steps
CONFIG = """
name = "{name}"
[problem]
kind = "least_squares"
dataset = "synthetic"
[run]
steps = {steps}
log_every = 5
[[methods]]
name = "A"
algorithm = "ef21"
compressor = {{ kind = "topk", k = 2 }}
{a}
[[methods]]
name = "B"
algorithm = "ef21"
compressor = {{ kind = "topk", k = 2 }}
{b}
"""
LONG = 10**7

#: (case, method A, method B, steps, what happens during B, exit code, statuses of A and B)
TABLE = [
    ("both ok", OK, OK, 30, None, 0, ["ok", "ok"]),
    ("A diverges", BAD, OK, 30, None, 3, ["diverged", "ok"]),
    ("B diverges", OK, BAD, 30, None, 3, ["ok", "diverged"]),
    ("A diverged, B fails on rank 0", BAD, OK, 200, "fail 0", 1, ["diverged", "failed"]),
    ("A diverged, B fails on rank 1", BAD, OK, 200, "fail 1", 1, ["diverged", "running"]),
    ("A diverged, SIGINT in B", BAD, OK, LONG, signal.SIGINT, 130, ["diverged", "interrupted"]),
    ("A diverged, SIGTERM in B", BAD, OK, LONG, signal.SIGTERM, 143,
     ["diverged", "interrupted"]),
    ("A diverged, SIGUSR1 in B", BAD, OK, LONG, signal.SIGUSR1, 138,
     ["diverged", "interrupted"]),
]


def _wait_for_method(run_dir: Path, label: str, timeout: float = 90) -> None:
    """Until ``label`` has logged two metrics rows (so the run is inside its step loop)."""
    t0 = time.monotonic()
    path = run_dir / "metrics.jsonl"
    while time.monotonic() - t0 < timeout:
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if sum(r.get("method") == label for r in rows) >= 2:
                return
        time.sleep(0.1)
    pytest.fail(f"method {label} never logged 2 rows in {timeout} s")


@pytest.mark.parametrize("case,a,b,steps,event,code,statuses", TABLE,
                         ids=[row[0].replace(" ", "_").replace(",", "") for row in TABLE])
def test_exit_code_and_statuses(tmp_path: Path, case: str, a: str, b: str, steps: int,
                                event: object, code: int, statuses: list[str]) -> None:
    name = "x" + str(abs(hash(case)) % 10**6)
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(CONFIG.format(name=name, steps=steps, a=a, b=b))
    args = []
    if isinstance(event, str):  # "fail <rank>": run.fail_rank raises in B (A diverged earlier)
        args = ["--set", f"run.fail_rank={event.split()[1]}", "--set", "run.fail_step=30"]
    p = _start(tmp_path, cfg, *args)
    run_dir = tmp_path / "runs" / name
    bound = 120.0
    if isinstance(event, signal.Signals):
        _wait_for_method(run_dir, "B")
        os.kill(p.pid, event)
        bound = SIGNAL_BOUND_S
    rc, out, err, took = _finish(p, bound, str(tmp_path / "runs"))
    assert rc == code, f"{case}: exit {rc}, expected {code}\n{err[-3000:]}"
    assert took < bound + 1, took
    s = _summary(run_dir)
    assert [m["method"] for m in s] == ["A", "B"], s
    assert [m["status"] for m in s] == statuses, (case, s)
    if "diverged" in statuses:
        bad = s[statuses.index("diverged")]
        assert "at step" in bad["message"]
    if isinstance(event, signal.Signals):
        assert f"stopped by {event.name}" in out
    if isinstance(event, str):
        assert "injected failure" in err
