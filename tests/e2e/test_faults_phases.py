"""Fault catalogue, phases and orphans (docs/reliability.md, "Signals, failures and the run
folder"): a stop signal during numba compilation ends the job within the documented bound, and
``kill -9`` of the launcher's proxy (hydra_pmi_proxy) leaves no rank and no mpiexec behind.
Each case asserts the exit code, the first line of the message (where there is one), a time
bound and that no process of the job is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from decomp.runner.guard import BACKSTOP_GRACE_S
from tests.e2e.test_faults_input import first_error_line, left_running
from tests.e2e.test_faults_lifecycle import _start, _wait_for_rows, _write

#: from the signal (or the kill) to the end of every process: the backstop's grace, then
#: MPI_Abort / the launcher's clean-up (measured ~1-3 s on the idle 2-core machine); plus
#: two start-ups of a 2-rank job (conftest's ``startup_s``), which a loaded machine stretches
#: as it stretches the clean-up, so the bound holds at any load and a hang still fails
BOUND_S = BACKSTOP_GRACE_S + 10.0


def bound_s(startup_s: float) -> float:
    return BOUND_S + 2 * startup_s


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (only processes this test started are looked at)."""
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(p))
    return out


def test_killing_the_launchers_proxy_leaves_no_rank(tmp_path: Path, startup_s: float) -> None:
    bound = bound_s(startup_s)
    p = _start(tmp_path, _write(tmp_path, "orphan"))
    _wait_for_rows(tmp_path / "runs" / "orphan")
    proxies = [c for c in _children(p.pid)
               if Path(f"/proc/{c}/comm").read_text().strip() == "hydra_pmi_proxy"]
    assert len(proxies) == 1, proxies
    ranks = _children(proxies[0])
    assert len(ranks) == 2
    os.kill(proxies[0], signal.SIGKILL)
    t0 = time.monotonic()
    while any(Path(f"/proc/{r}").exists() for r in ranks) and time.monotonic() - t0 < bound:
        time.sleep(0.1)
    took = time.monotonic() - t0
    p.wait(timeout=bound)
    assert took < bound, f"ranks still there {took:.1f} s after the proxy was killed"
    assert not left_running(str(tmp_path / "runs"))


def test_a_signal_while_compiling_ends_the_job(tmp_path: Path, startup_s: float) -> None:
    """A fresh numba cache makes the first method compile its kernels (seconds); SIGTERM to
    one rank as that method starts must end the job within the bound, exit 143."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    p = _start(tmp_path, _write(tmp_path, "compile", steps=100), **env)
    seen = threading.Event()
    err: list[str] = []

    def read() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            err.append(line)
            if "method EF21 top-2:" in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(180), "".join(err)[-2000:]
    ranks = _children(next(c for c in _children(p.pid)))
    os.kill(ranks[-1], signal.SIGTERM)
    t0 = time.monotonic()
    try:
        rc = p.wait(timeout=bound_s(startup_s) + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    took = time.monotonic() - t0
    reader.join(5)
    text = "".join(err)
    assert rc == 143, text[-2000:]
    assert took < bound_s(startup_s), f"{took:.1f} s"
    assert first_error_line(text).startswith("stopped by SIGTERM before the first step ("), \
        text[-2000:]
    assert not left_running(str(tmp_path / "runs"))


def test_a_signal_during_a_checkpoint_write_on_a_hung_file_system_ends_the_job(
        tmp_path: Path, startup_s: float) -> None:
    """Rank 1's checkpoint file cannot be written (a named pipe where its temporary file goes:
    opening it blocks, as a write to a dead NFS server does) while rank 0 has written its own
    and waits for rank 1. SIGTERM to mpiexec: the job ends with 143 once rank 1's write has
    made no progress for DECOMP_WRITE_STALL_S, naming the file; no process is left."""
    every, stall = 1000, 3.0
    cfg = _write(tmp_path, "hung", every=every)
    p = _start(tmp_path, cfg, DECOMP_WRITE_STALL_S=str(stall))
    run = tmp_path / "runs" / "hung"
    _wait_for_rows(run)
    # every checkpoint from a few ahead of where the run is: one of them blocks rank 1
    step = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    first = (step // every + 3) * every
    blocked = []
    for s in range(first, first + 200 * every, every):
        d = run / "checkpoints" / f"m0-s{s}"
        d.mkdir(parents=True, exist_ok=True)
        os.mkfifo(d / "rank1.npz.tmp")
        blocked.append(d)
    t0 = time.monotonic()
    while not any((d / "rank0.npz").exists() for d in blocked):
        assert p.poll() is None and time.monotonic() - t0 < 120, p.communicate()[1][-2000:]
        time.sleep(0.05)
    hung = next(d for d in blocked if (d / "rank0.npz").exists())
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        _, err = p.communicate(timeout=stall + bound_s(startup_s) + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    took = time.monotonic() - t0
    assert p.returncode == 143, err[-2000:]
    print(f"hung checkpoint write: ended {took:.1f} s after SIGTERM (stall limit {stall} s, "
          f"start-up {startup_s:.1f} s)")
    assert took < stall + bound_s(startup_s), f"{took:.1f} s"
    assert first_error_line(err).startswith(
        f"stopped by SIGTERM while writing checkpoint file {hung / 'rank1.npz'}: no progress "
        "for "), err[-2000:]
    assert not left_running(str(tmp_path / "runs"))
