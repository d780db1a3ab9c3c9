"""Fault catalogue, a stop signal during a write blocked on a hung file system
(docs/reliability.md, "Signals, failures and the run folder"). A named pipe stands in for the
hung mount: opening it for writing blocks until a reader comes, as a write to a dead NFS server
does. The signal backstop (decomp.runner.guard) ends the process with 128 + the signal once the
write has made no progress for ``DECOMP_WRITE_STALL_S``, naming the file; a write that makes
progress is left to finish. One interpreter per case, no MPI (the e2e case in
tests/e2e/test_faults_phases.py covers the whole job)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from decomp.runner import diskfull
from decomp.runner.guard import WRITE_STALL_S, write_stall_s
from tests.e2e.conftest import REPO

STALL_S = 1.0
# the rank's loop: signals recorded for the stop vote (deferred), a step completed (stepping)
SCRIPT = """
import os, signal, sys, threading
from pathlib import Path
from decomp.runner import diskfull
from decomp.runner.guard import Backstop
from decomp.runner.lifecycle import STOP_SIGNALS, SignalFlag
mode, target = sys.argv[1], Path(sys.argv[2])
if mode == "torch":  # a user's loop: should_stop()'s handler records, the guard's thread watches
    from decomp.torch.guard import _SigintWatch
    signal.signal(signal.SIGTERM, lambda *_: None)
    class Guard:
        call = None
    g = Guard()
    _SigintWatch.install(g)
    mode = "during"
else:  # decomp run's rank in its loop
    flag = SignalFlag().__enter__()
    flag.deferred = flag.stepping = True
    Backstop(flag, STOP_SIGNALS).start()
diskfull.CHUNK = 1 << 16
if mode == "first":  # the signal, then the checkpoint write on the way out
    os.kill(os.getpid(), signal.SIGTERM)
else:  # the write blocks, then the signal
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
print("writing", flush=True)
try:
    diskfull.write_bytes_atomic(target, b"x" * int(sys.argv[3]), "checkpoint file")
except OSError as e:
    print("failed:", e, flush=True)
print("written", flush=True)
"""


def _run(tmp_path: Path, mode: str, stall: float = STALL_S, size: int = 1 << 18,
         ) -> tuple[subprocess.CompletedProcess, float, float]:
    """(the process, its start-up until it began writing, the time from then to its end)."""
    env = dict(os.environ, DECOMP_WRITE_STALL_S=str(stall), PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, mode, str(tmp_path / "rank0.npz"),
                          str(size)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None
    first = p.stdout.readline()
    t1 = time.monotonic()
    out, err = p.communicate(timeout=300)
    t2 = time.monotonic()
    return subprocess.CompletedProcess(p.args, p.returncode, first + out, err), t1 - t0, t2 - t1


@pytest.mark.parametrize("mode", ["first", "during", "torch"])
def test_a_signal_with_a_write_blocked_on_a_hung_file_system_ends_the_process(
        tmp_path: Path, mode: str) -> None:
    os.mkfifo(tmp_path / "rank0.npz.tmp")  # open(O_WRONLY) blocks: no reader ever comes
    p, start, took = _run(tmp_path, mode)
    assert p.returncode == 143, p.stderr
    assert p.stdout == "writing\n", p.stdout
    line = p.stderr.strip().splitlines()[0]
    assert line.startswith(f"[rank ?] ERROR: stopped by SIGTERM while writing checkpoint file "
                           f"{tmp_path / 'rank0.npz'}: no progress for "), line
    assert line.endswith("(a hung file system?); ending the job at once, the last complete "
                         "checkpoint is kept"), line
    quiet = float(line.split("no progress for ", 1)[1].split(" s ", 1)[0])
    assert quiet >= round(STALL_S)  # never before the stall limit
    # the upper bound: the limit, the watcher's 0.1 s polling and exit; a loaded machine's
    # scheduling delay is scaled by this process's own start-up (imports), which it stretches
    assert took < STALL_S + 2.0 + start, (took, start)


def test_a_slow_write_that_progresses_is_left_to_finish(tmp_path: Path) -> None:
    """A reader drains the pipe 64 KiB at a time, pausing a tenth of the stall limit (5 s
    here: a pause that long is no scheduling accident), taking longer than the limit in all:
    the process is not ended."""
    stall, chunks = 5.0, 16
    fifo = tmp_path / "rank0.npz.tmp"
    os.mkfifo(fifo)
    got = []

    def drain() -> None:
        with open(fifo, "rb") as f:
            while chunk := f.read(1 << 16):
                got.append(len(chunk))
                time.sleep(stall / 10)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    p, _, took = _run(tmp_path, "during", stall, chunks << 16)
    reader.join(60)
    assert p.returncode == 0, p.stderr
    assert sum(got) == chunks << 16
    assert took > stall  # it did take longer than the limit in all
    # fsync of a pipe is refused (EINVAL): the writer's usual error, with the path
    assert p.stdout.startswith("writing\nfailed: cannot write checkpoint file "), p.stdout


def test_the_stall_limit_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECOMP_WRITE_STALL_S", "2.5")
    assert write_stall_s() == 2.5
    for bad in ("abc", "0", "-1", "nan"):
        monkeypatch.setenv("DECOMP_WRITE_STALL_S", bad)
        assert write_stall_s() == WRITE_STALL_S
    assert diskfull.CURRENT is None  # no write marked outside a write
