"""Fault catalogue, who owns a run folder (docs/reliability.md, "One owner per run folder"):
the lock that refuses a second run, resume, overwrite or ``sim --out`` on a folder in use, stale
locks, ``--overwrite`` that validates first and restores, ``decomp sim --out``'s name and
overwrite rules, the resume hint and the SLURM templates' requeue arguments. Every case asserts
the exit code, the first line of the message, a time bound and that no process is left.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, _tool
from tests.e2e.test_faults_input import RUN_BOUND_S, first_error_line, left_running
from tests.e2e.test_faults_lifecycle import (
    SIGNAL_BOUND_S,
    _digest,
    _env,
    _finish,
    _run,
    _start,
    _summary,
    _wait_for_rows,
    _write,
)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _sim(tmp: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("decomp"), "sim", str(cfg), "--workers", "2", *args],
                          capture_output=True, text=True, env=_env(), timeout=120, cwd=tmp)


def test_a_folder_in_use_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "busy")
    run_dir = tmp_path / "runs" / "busy"
    p = _start(tmp_path, cfg)
    _wait_for_rows(run_dir, rows=3)
    lock = json.loads((tmp_path / "runs" / ".busy.lock").read_text())
    assert lock["host"] == socket.gethostname()
    for args in ([], ["--resume"], ["--overwrite"], ["--resume", "auto"]):
        before = len(_rows(run_dir))
        t0 = time.monotonic()
        r = _run(tmp_path, cfg, *args)
        assert r.returncode == 1, r.stderr[-2000:]
        assert time.monotonic() - t0 < RUN_BOUND_S
        assert first_error_line(r.stderr).startswith(
            f"run folder {run_dir} is in use by PID {lock['pid']} on host {lock['host']}"), \
            r.stderr[-2000:]
        assert len(_rows(run_dir)) >= before  # the running job's file was not rewritten
    s = _sim(tmp_path, cfg, "--out", str(tmp_path / "runs"), "--overwrite")
    assert s.returncode == 1
    assert first_error_line(s.stderr).startswith(f"run folder {run_dir} is in use by PID")
    os.kill(p.pid, signal.SIGTERM)
    rc, _, err, _ = _finish(p, SIGNAL_BOUND_S, str(tmp_path / "runs"))
    assert rc == 143, err[-2000:]
    rows = _rows(run_dir)  # every line a row; each method's steps in order, none twice
    for method in {r["method"] for r in rows}:
        steps = [r["step"] for r in rows if r["method"] == method]
        assert steps == sorted(set(steps)), steps
    assert not (tmp_path / "runs" / ".busy.lock").exists()  # released at the end


def test_two_runs_started_together_one_is_refused(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "twin", steps=300, every=100)
    procs = [_start(tmp_path, cfg) for _ in range(2)]
    t0 = time.monotonic()
    outs = [p.communicate(timeout=4 * RUN_BOUND_S) for p in procs]  # both end (each's bound)
    assert time.monotonic() - t0 < 4 * RUN_BOUND_S
    assert not left_running(str(tmp_path / "runs"))
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], [err[-1500:] for _, err in outs]
    loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 1)
    assert "is in use by PID" in first_error_line(loser), loser[-2000:]
    rows = _rows(tmp_path / "runs" / "twin")
    assert len(rows) == 2 * (300 // 50 + 1)  # one run's rows, once
    assert all(m["status"] == "ok" for m in _summary(tmp_path / "runs" / "twin"))


def test_a_stale_lock_is_taken_over_and_a_live_one_named(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "stale", steps=100)
    (tmp_path / "runs").mkdir()
    lock = tmp_path / "runs" / ".stale.lock"
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "start": "",
                                "command": "decomp run killed.toml"}))
    r = _run(tmp_path, cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"took over a stale lock (its process {gone.pid} on" in r.stderr
    assert not lock.exists()
    lock.write_text(json.dumps({"host": "node-7", "pid": 4242, "start": "", "since": "then",
                                "command": "decomp run other.toml"}))
    t0 = time.monotonic()
    r = _run(tmp_path, cfg, "--resume")
    assert r.returncode == 1 and time.monotonic() - t0 < RUN_BOUND_S
    msg = first_error_line(r.stderr)
    assert "is in use by PID 4242 on host node-7" in msg and f"remove {lock}" in msg, msg
    assert not left_running(str(tmp_path / "runs"))


def test_overwrite_validates_first_and_restores_on_an_early_failure(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "ow", steps=100, every=50)
    assert _run(tmp_path, cfg).returncode == 0
    run_dir = tmp_path / "runs" / "ow"
    before = _digest(run_dir)
    # a Top-k k > d is found only once the data is loaded: the old results are untouched
    r = _run(tmp_path, cfg, "--overwrite", "--set", "methods.0.compressor.k=31")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "k=31 exceeds the vector length d=30" in first_error_line(r.stderr), r.stderr
    assert _digest(run_dir) == before
    # the new run fails before its first checkpoint (rank 0, step 10): the old results return
    r = _run(tmp_path, cfg, "--overwrite", "--set", "run.fail_rank=0", "--set",
             "run.fail_step=10")
    assert r.returncode == 1 and "injected failure" in r.stderr, r.stderr[-2000:]
    assert "earlier results in" in r.stderr and "are restored" in r.stderr
    assert _digest(run_dir) == before
    assert not (run_dir / ".replaced").exists()
    assert not left_running(str(tmp_path / "runs"))


def test_sim_out_follows_the_run_folder_rules(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "same", steps=100, every=50)
    out = tmp_path / "runs"
    for name in ("/abs/escape", "../escape"):
        s = _sim(tmp_path, cfg, "--out", str(out), "--set", f'name="{name}"')
        assert s.returncode == 1 and "must be one folder name" in first_error_line(s.stderr)
    assert not Path("/abs/escape").exists() and not (tmp_path / "escape").exists()
    assert _run(tmp_path, cfg).returncode == 0
    before = _digest(out / "same")
    t0 = time.monotonic()
    s = _sim(tmp_path, cfg, "--out", str(out))
    assert s.returncode == 1 and time.monotonic() - t0 < RUN_BOUND_S
    assert first_error_line(s.stderr).startswith(f"run folder {out / 'same'} already exists")
    assert _digest(out / "same") == before
    s = _sim(tmp_path, cfg, "--out", str(out), "--overwrite")
    assert s.returncode == 0, s.stderr[-2000:]
    assert json.loads((out / "same" / "summary.json").read_text())["run"]["engine"] == "sim"


@pytest.mark.timeout(1200)  # a deadlock backstop; the resumed run's bound is measured below
def test_the_resume_hint_repeats_every_flag(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "hint")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "hint").mkdir()  # a folder of the same name where --out is not
    elsewhere = tmp_path / "elsewhere"
    steps = 4000  # enough that the run is still going when the signal comes after 3 rows
    args = ["--steps", str(steps), "--checkpoint-every", "300", "--set", "run.log_every=100"]
    cmd = [_tool("mpiexec"), "-n", "2", _tool("decomp"), "run", str(cfg), "--out",
           str(elsewhere), *args]
    t_launch = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(), cwd=tmp_path)
    _wait_for_rows(elsewhere / "hint", rows=3)
    # The resumed run does up to `steps` steps: its bound follows this machine's measured pace
    # (start-up included, so an over-estimate), not a fixed guess that a loaded machine misses.
    per_step = (time.monotonic() - t_launch) / 200  # 3 rows: at least 200 steps were done
    resume_bound = RUN_BOUND_S + 3 * per_step * steps * 2  # both methods of the config
    os.kill(p.pid, signal.SIGTERM)
    rc, out, err, _ = _finish(p, SIGNAL_BOUND_S, str(elsewhere))
    assert rc == 143, err[-2000:]
    hint = out.split("continue with: ", 1)[1].rsplit(")", 1)[0]
    words = shlex.split(hint)
    assert words[:3] == ["mpiexec", "-n", "2"] and words[-1] == "--resume", hint
    for a in ["--out", str(elsewhere), *args]:
        assert a in words, (a, hint)
    assert hint in _summary(elsewhere / "hint")[-1]["message"]
    words[0], words[3] = _tool("mpiexec"), _tool("decomp")
    r = subprocess.run(words, capture_output=True, text=True, env=_env(), timeout=resume_bound,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _summary(elsewhere / "hint")[0]["steps"] == 4000
    assert not any((tmp_path / "runs" / "hint").iterdir())


FAKE_MPIEXEC = """#!/bin/bash
# stands in for mpiexec: records the command line (NUL-separated), runs nothing
printf '%s\\0' "$@" > "$RECORD"
"""


@pytest.mark.parametrize("template", ["master_worker", "decentralized", "torch", "sweep"])
@pytest.mark.parametrize("run_args,restart,expect", [
    ("()", "0", []),
    ("()", "1", ["--resume", "auto"]),
    ("(--overwrite)", "0", ["--overwrite"]),
    ("(--overwrite)", "1", ["--resume", "auto"]),
    ("(--resume auto --set run.steps=500)", "1", ["--set", "run.steps=500", "--resume", "auto"]),
    ("(--resume --data-dir /d)", "2", ["--data-dir", "/d", "--resume", "auto"]),
])
def test_a_requeued_template_passes_arguments_decomp_run_accepts(
        tmp_path: Path, template: str, run_args: str, restart: str, expect: list[str]) -> None:
    """The templates' requeue path with the RUN_ARGS docs/running.md shows: on a requeue
    --resume auto replaces --overwrite and --resume (never both: a usage error, exit 2)."""
    text = (REPO / "jobs" / "slurm" / f"{template}.sbatch").read_text()
    lines = [f"RUN_ARGS={run_args}" if line.startswith("RUN_ARGS=") else
             "VENV=" if line.startswith("VENV=") else
             "LAUNCHER=mpiexec" if line.startswith("LAUNCHER=") else line
             for line in text.splitlines()]
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join(lines) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mpiexec").write_text(FAKE_MPIEXEC)
    (bin_dir / "mpiexec").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", RECORD=str(tmp_path / "record"),
               SLURM_NTASKS="4", SLURM_RESTART_COUNT=restart, SLURM_ARRAY_TASK_ID="0")
    cfg = REPO / "jobs" / "configs" / "demo.toml"
    r = subprocess.run(["bash", str(script), str(cfg)], capture_output=True,
                       text=True, env=env, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    words = (tmp_path / "record").read_text().split("\0")[:-1]
    run = words[words.index("run") + 1:]
    tail = run[len(run) - len(expect):] if expect else []
    assert tail == expect, run
    assert run.count("--resume") + run.count("--overwrite") == (1 if expect else 0), run
    from decomp.cli import build_parser

    build_parser().parse_args(["run", *run])  # argparse exits 2 on a usage error


@pytest.mark.parametrize("change,message", [
    ("labels flipped", "was checkpointed on other data (sha256 of the loaded arrays"),
    ("rows deleted", "rows were removed or the file replaced"),
])
def test_a_resume_on_changed_data_or_lost_rows_is_refused(tmp_path: Path, change: str,
                                                          message: str) -> None:
    rng = __import__("numpy").random.default_rng(0)
    lines = [f"{1 if rng.random() < 0.5 else -1} " + " ".join(
        f"{j + 1}:{rng.normal():.4f}" for j in range(5)) for _ in range(64)]
    data = tmp_path / "d.svm"
    data.write_text("\n".join(lines) + "\n")
    cfg = _write(tmp_path, "data", steps=200, every=100)
    sets = ["--set", 'problem.dataset="d.svm"', "--set", "methods.1.compressor.k=1"]
    assert _run(tmp_path, cfg, *sets).returncode == 0
    run_dir = tmp_path / "runs" / "data"
    if change == "labels flipped":
        data.write_text("\n".join(("-1" if ln.startswith("1 ") else "1") + ln[ln.index(" "):]
                                  for ln in lines) + "\n")
    else:
        rows = (run_dir / "metrics.jsonl").read_text().splitlines()
        (run_dir / "metrics.jsonl").write_text("\n".join(rows[:1] + rows[2:]) + "\n")
    before = _digest(run_dir)
    t0 = time.monotonic()
    r = _run(tmp_path, cfg, *sets, "--resume", "--steps", "400")
    assert r.returncode == 1, r.stderr[-2000:]
    assert time.monotonic() - t0 < RUN_BOUND_S
    assert message in first_error_line(r.stderr), r.stderr[-2000:]
    assert _digest(run_dir) == before
    assert not left_running(str(tmp_path / "runs"))
