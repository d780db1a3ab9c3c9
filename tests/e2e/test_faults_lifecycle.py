"""Fault catalogue, lifecycle (docs/reliability.md, "Signals, failures and the run folder"):
signals to mpiexec or to one rank, a frozen or killed rank, a failing rank in either family,
a broken abort path, a full disk, duplicate runs, resume errors, a corrupt checkpoint, a run
started without srun inside a SLURM allocation. Every case asserts the exit code, the first
line of the message, a time bound, and that no process of the job is left running.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, _tool
from tests.e2e.test_faults_input import first_error_line, processes_mentioning

CONFIG = """
name = "{name}"
[problem]
dataset = "breast_cancer"
scale = "standard"
[run]
steps = {steps}
log_every = 50
checkpoint_every = {every}
[topology]
kind = "ring"
[[methods]]
name = "EF21 top-2"
algorithm = "ef21"
compressor = {{ kind = "topk", k = 2 }}
[[methods]]
name = "CHOCO top-2"
algorithm = "choco_sgd"
compressor = {{ kind = "topk", k = 2 }}
lr = 0.05
consensus_step = 0.5
"""
SIGNAL_BOUND_S = 10.0  # from the signal to the end of every process


def _write(tmp: Path, name: str, steps: int = 10**7, every: int = 0,
           gossip_only: bool = False) -> Path:
    cfg = tmp / f"{name}.toml"
    text = CONFIG.format(name=name, steps=steps, every=every)
    if gossip_only:  # drop the EF21 method: CHOCO-SGD alone
        head, rest = text.split("[[methods]]", 1)
        text = head + "[[methods]]" + rest.split("[[methods]]", 1)[1]
    cfg.write_text(text)
    return cfg


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="0", **extra)


def _start(tmp: Path, cfg: Path, *args: str, np: int = 2, **env: str) -> subprocess.Popen:
    cmd = [_tool("mpiexec"), "-n", str(np), _tool("decomp"), "run", str(cfg), "--out",
           str(tmp / "runs"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(**env), cwd=tmp)


def _wait_for_rows(run_dir: Path, rows: int = 2, timeout: float = 60) -> None:
    """Until the run has logged ``rows`` metrics rows (so it is inside the step loop)."""
    t0 = time.monotonic()
    path = run_dir / "metrics.jsonl"
    while time.monotonic() - t0 < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= rows:
            return
        time.sleep(0.1)
    pytest.fail(f"the run never logged {rows} rows in {timeout} s")


def _ranks(tag: str) -> list[int]:
    """PIDs of the job's Python ranks (not mpiexec or its proxy)."""
    return sorted(int(line.split(":")[0]) for line in processes_mentioning(tag)
                  if "python" in line and "mpiexec" not in line and "hydra" not in line)


def _finish(p: subprocess.Popen, bound: float, tag: str) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    try:
        out, err = p.communicate(timeout=bound + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"still running {bound + 30:.0f} s later\n{err[-2000:]}")
    took = time.monotonic() - t0
    time.sleep(0.3)
    assert not processes_mentioning(tag), processes_mentioning(tag)
    return p.returncode, out, err, took


def _summary(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "summary.json").read_text())["methods"]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGUSR1, 138)])
@pytest.mark.parametrize("target", ["mpiexec", "one rank"])
def test_a_signal_stops_every_rank_with_a_checkpoint(tmp_path: Path, sig: int, code: int,
                                                     target: str) -> None:
    name = f"sig{sig}-{target.replace(' ', '')}"
    p = _start(tmp_path, _write(tmp_path, name))
    run_dir = tmp_path / "runs" / name
    _wait_for_rows(run_dir)
    victim = p.pid if target == "mpiexec" else _ranks(str(tmp_path / "runs"))[-1]
    os.kill(victim, sig)
    rc, out, err, took = _finish(p, SIGNAL_BOUND_S, str(tmp_path / "runs"))
    assert rc == code, err[-3000:]
    assert took < SIGNAL_BOUND_S, took
    assert f"stopped by {signal.Signals(sig).name} after step" in out
    s = _summary(run_dir)
    assert s[-1]["status"] == "interrupted" and "--resume" in s[-1]["message"]
    pointer = json.loads((run_dir / "checkpoints" / "m0.json").read_text())
    assert pointer["step"] == s[-1]["steps"] > 0


def test_an_interrupted_run_resumes_to_the_straight_result(tmp_path: Path) -> None:
    straight = subprocess.run([_tool("mpiexec"), "-n", "2", _tool("decomp"), "run",
                               str(_write(tmp_path, "straight", steps=3000)), "--out",
                               str(tmp_path / "runs")], capture_output=True, text=True,
                              env=_env(), timeout=240)
    assert straight.returncode == 0, straight.stderr[-2000:]
    cfg = _write(tmp_path, "cut", steps=3000, every=200)
    p = _start(tmp_path, cfg)
    _wait_for_rows(tmp_path / "runs" / "cut", rows=3)
    os.kill(p.pid, signal.SIGTERM)
    rc, _, err, _ = _finish(p, SIGNAL_BOUND_S, str(tmp_path / "runs"))
    assert rc == 143, err[-2000:]
    resumed = subprocess.run([_tool("mpiexec"), "-n", "2", _tool("decomp"), "run", str(cfg),
                              "--out", str(tmp_path / "runs"), "--resume"],
                             capture_output=True, text=True, env=_env(), timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    def rows(name: str) -> list[dict]:
        text = (tmp_path / "runs" / name / "metrics.jsonl").read_text()
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
                for line in text.splitlines()]

    assert rows("cut") == rows("straight")


def test_a_second_sigint_never_exits_0(tmp_path: Path) -> None:
    p = _start(tmp_path, _write(tmp_path, "twice"))
    _wait_for_rows(tmp_path / "runs" / "twice")
    rank = _ranks(str(tmp_path / "runs"))[0]
    os.kill(rank, signal.SIGINT)
    os.kill(rank, signal.SIGINT)
    rc, _, err, took = _finish(p, SIGNAL_BOUND_S, str(tmp_path / "runs"))
    assert rc != 0 and took < SIGNAL_BOUND_S, (rc, err[-2000:])


def test_a_frozen_rank_is_named_by_the_watchdog(tmp_path: Path) -> None:
    p = _start(tmp_path, _write(tmp_path, "frozen"), "--comm-timeout", "4", np=3)
    _wait_for_rows(tmp_path / "runs" / "frozen")
    ranks = _ranks(str(tmp_path / "runs"))
    os.kill(ranks[-1], signal.SIGSTOP)
    try:
        rc, _, err, took = _finish(p, 4 + SIGNAL_BOUND_S, str(tmp_path / "runs"))
    finally:
        for pid in ranks:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert rc == 124, err[-2000:]  # one rank aborts for all (Watchdog._abort)
    msg = first_error_line(err)
    assert msg.startswith("watchdog: no sign of life from rank "), msg
    assert "run.comm_timeout_s = 4 s" in msg and "at step" in msg
    assert took < 4 + SIGNAL_BOUND_S


def test_a_killed_rank_ends_the_job(tmp_path: Path) -> None:
    p = _start(tmp_path, _write(tmp_path, "killed"), np=3)
    _wait_for_rows(tmp_path / "runs" / "killed")
    os.kill(_ranks(str(tmp_path / "runs"))[-1], signal.SIGKILL)
    rc, _, err, took = _finish(p, SIGNAL_BOUND_S, str(tmp_path / "runs"))
    assert rc != 0 and took < SIGNAL_BOUND_S, (rc, took, err[-2000:])


@pytest.mark.parametrize("method,grace", [(0, None), (1, None), (0, "abc")])
def test_a_failing_rank_ends_the_job_in_either_family(tmp_path: Path, method: int,
                                                      grace: str | None,
                                                      startup_s: float) -> None:
    """run.fail_rank raises on one rank of 4 in EF21 (master–worker) or CHOCO (gossip); an
    invalid DECOMP_ABORT_GRACE_S must not break the abort path."""
    cfg = _write(tmp_path, "fail", steps=400, gossip_only=method == 1)
    env = {"DECOMP_ABORT_GRACE_S": grace} if grace else {}
    t0 = time.monotonic()
    p = _start(tmp_path, cfg, "--set", "run.fail_rank=2", "--set", "run.fail_step=30", np=4,
               **env)
    limit = 30 + 4 * startup_s  # start-up of 4 ranks, 30 steps, the abort (conftest)
    rc, _, err, _ = _finish(p, limit, str(tmp_path / "runs"))
    assert rc == 1, err[-2000:]
    assert "injected failure (run.fail_rank=2" in err
    assert time.monotonic() - t0 < limit


def test_a_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a tiny tmpfs needs root (CI runs as root)")
    disk = tmp_path / "full"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=True)
    try:
        cmd = [_tool("mpiexec"), "-n", "2", _tool("decomp"), "run",
               str(_write(tmp_path, "disk", steps=20000, every=10)), "--out", str(disk)]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
        took = time.monotonic() - t0
        left = sorted(str(f.relative_to(disk)) for f in disk.rglob("*") if f.is_file())
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert r.returncode == 1, r.stderr[-2000:]
    assert took < 60 and "unexpected error" not in r.stderr
    msg = first_error_line(r.stderr)
    assert "cannot write " in msg and f" {disk}/disk/" in msg, msg
    assert "no space left on the device (needs " in msg and "free space there" in msg, msg
    assert not [f for f in left if f.endswith(".tmp")], left  # no temporary file left


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _run(tmp: Path, cfg: Path, *args: str, np: int = 2,
         **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [_tool("mpiexec"), "-n", str(np), _tool("decomp"), "run", str(cfg), "--out",
           str(tmp / "runs"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), timeout=120,
                          cwd=tmp)


def test_the_run_folder_is_never_silently_replaced(tmp_path: Path, startup_s: float) -> None:
    cfg = _write(tmp_path, "dup", steps=100, every=50)
    assert _run(tmp_path, cfg).returncode == 0
    run_dir = tmp_path / "runs" / "dup"
    before = _digest(run_dir)
    t0 = time.monotonic()
    again = _run(tmp_path, cfg)
    assert again.returncode == 1 and time.monotonic() - t0 < 10 + 2 * startup_s
    assert first_error_line(again.stderr).startswith(f"run folder {run_dir} already exists: "
                                                     "pass --resume")
    assert _digest(run_dir) == before  # nothing of the first run touched
    # --resume of a finished run with the same steps: nothing to do, same results
    assert _run(tmp_path, cfg, "--resume").returncode == 0
    assert _summary(run_dir)[0]["status"] == "ok"
    # --overwrite replaces decomp's files, keeps the user's
    (run_dir / "notes.txt").write_text("mine")
    assert _run(tmp_path, cfg, "--overwrite", "--set", "run.steps=60").returncode == 0
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert _summary(run_dir)[0]["steps"] == 60


@pytest.mark.parametrize("case,how,message", [
    ("no folder", "missing", "has no config.toml: nothing to resume"),
    ("config changed", "set", "--resume: the config differs from the one run in"),
    ("world size", "np3", "was checkpointed with 2 MPI rank(s); this run has 3"),
    ("corrupt checkpoint", "corrupt", "is corrupt (its sha256 differs"),
    ("partial checkpoint", "truncate", "is corrupt (its sha256 differs"),
    ("broken pointer", "pointer", "not a decomp checkpoint pointer"),
])
def test_a_bad_resume_is_refused(tmp_path: Path, case: str, how: str, message: str,
                                 startup_s: float) -> None:
    cfg = _write(tmp_path, "res", steps=100, every=50)
    if how != "missing":
        assert _run(tmp_path, cfg).returncode == 0
    ck = tmp_path / "runs" / "res" / "checkpoints"
    args: list[str] = ["--resume", "--set", "run.steps=200"]
    np = 2
    if how == "set":
        args += ["--set", "methods.0.compressor.k=3"]
    elif how == "np3":
        np = 3
    elif how in ("corrupt", "truncate"):
        f = next(ck.glob("m0-s*/rank1.npz"))
        data = bytearray(f.read_bytes())
        if how == "corrupt":
            data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data[: len(data) // 2]) if how == "truncate" else bytes(data))
    elif how == "pointer":
        (ck / "m1.json").write_text("{not json")
    t0 = time.monotonic()
    r = _run(tmp_path, cfg, *args, np=np)
    assert r.returncode == 1, r.stderr[-2000:]
    assert message in first_error_line(r.stderr), r.stderr[-2000:]
    assert time.monotonic() - t0 < 10 + 2 * startup_s


@pytest.mark.parametrize("name,message", [
    ("../escaped", "must be one folder name"), ("/abs/dir", "must be one folder name"),
    ("x" * 300, "at most 100"),
])
def test_a_run_name_stays_inside_out_dir(tmp_path: Path, name: str, message: str) -> None:
    cfg = _write(tmp_path, "n", steps=10)
    r = _run(tmp_path, cfg, "--set", f'name="{name}"')
    assert r.returncode == 1 and message in first_error_line(r.stderr), r.stderr[-2000:]
    assert not (tmp_path / "escaped").exists() and not Path("/abs/dir").exists()


def test_an_unwritable_out_dir_is_refused_before_the_data(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    cfg = _write(tmp_path, "w", steps=10)
    r = subprocess.run([_tool("mpiexec"), "-n", "2", _tool("decomp"), "run", str(cfg), "--out",
                        str(tmp_path / "afile")], capture_output=True, text=True, env=_env(),
                       timeout=60)
    assert r.returncode == 1
    assert "exists and is not a directory" in first_error_line(r.stderr)
    assert "problem logistic" not in r.stderr  # refused before the data was loaded


def test_copies_started_without_srun_in_an_allocation_are_refused(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "slurm", steps=10)
    env = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4"}
    r = subprocess.run([_tool("decomp"), "run", str(cfg), "--out", str(tmp_path / "runs")],
                       capture_output=True, text=True, env=_env(**env), timeout=60)
    assert r.returncode == 1
    assert "has 4 tasks but this run has 1 MPI rank" in first_error_line(r.stderr)
    assert not (tmp_path / "runs" / "slurm").exists()
    ok = subprocess.run([_tool("decomp"), "run", str(cfg), "--out", str(tmp_path / "runs"),
                         "--single-rank"], capture_output=True, text=True, env=_env(**env),
                        timeout=60)
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_the_catalogue_is_documented() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text()
    for name in ("test_a_signal_stops_every_rank_with_a_checkpoint",
                 "test_a_frozen_rank_is_named_by_the_watchdog", "test_a_bad_resume_is_refused",
                 "test_a_full_disk_is_a_clear_error"):
        assert name in doc, name
