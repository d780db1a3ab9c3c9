"""One owner per run folder: the lock ``<out_dir>/.<name>.lock``.

Taken by rank 0 (or ``decomp sim --out``) before anything is written to ``<out_dir>/<name>/``
and released when the run ends, so a second ``decomp run`` (new, ``--resume``, ``--overwrite``)
or ``decomp sim --out`` on a folder in use is refused and changes nothing. The lock sits beside
the folder (not in it), so it exists before the folder does and survives ``--overwrite``.

The lock file is a JSON document: the owner's host, PID, the process's start time (Linux
``/proc``; guards against a recycled PID), its SLURM job id and its command line. It is created
whole or not at all (written to a temporary file, then hard-linked to its name: the link fails
if the lock exists, on NFS too). A lock whose owner is gone is *stale* and is taken over with a
note in the log: on the same host when its PID is no longer running (or runs another
program), on any host when it was taken by this same SLURM job (a requeued job whose previous
run was killed). A lock of a live owner, or of another host's owner that cannot be checked, is
refused with a message naming the owner and the file to remove if that job is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from decomp.errors import LaunchError
from decomp.log import LOGGER

SUFFIX = ".lock"


def lock_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f".{name}{SUFFIX}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is not there)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return not (started and now and now != started)  # a recycled PID is another process


def owner_document() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "start": _start_time(os.getpid()), "slurm_job": os.environ.get("SLURM_JOB_ID", ""),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}


def describe(doc: dict[str, Any]) -> str:
    job = f", SLURM job {doc['slurm_job']}" if doc.get("slurm_job") else ""
    return (f"PID {doc.get('pid')} on host {doc.get('host')}{job}, since {doc.get('since')}"
            f" ({doc.get('command') or 'unknown command'})")


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's document; None: no lock; {} unreadable (a lock of an unknown owner)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def stale_reason(doc: dict[str, Any]) -> str:
    """Why the owner of a lock is gone ('' when it may be alive)."""
    me = owner_document()
    if doc.get("slurm_job") and doc.get("slurm_job") == me["slurm_job"]:
        return f"taken by this SLURM job ({me['slurm_job']}) before it was requeued"
    if doc.get("host") == me["host"]:
        try:
            pid = int(doc.get("pid", -1))
        except (TypeError, ValueError):
            return ""
        if pid > 0 and not _alive(pid, str(doc.get("start") or "")):
            return f"its process {pid} on {me['host']} is no longer running"
    return ""


class RunLock:
    """The lock of one run folder, held by this process (:meth:`release` it at the end)."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc

    def release(self) -> None:
        """Remove the lock if it is still ours (idempotent)."""
        doc = _read(self.path)
        if doc and doc.get("pid") == self.doc["pid"] and doc.get("host") == self.doc["host"] \
                and doc.get("start") == self.doc["start"]:
            self.path.unlink(missing_ok=True)


def acquire(out_dir: str | Path, name: str, run_dir: Path) -> RunLock:
    """Take the lock of ``<out_dir>/<name>/`` (LaunchError naming the owner if it is in use)."""
    path = lock_path(out_dir, name)
    doc = owner_document()
    tmp = path.with_name(f"{path.name}.{doc['pid']}.tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
                return RunLock(path, doc)
            except FileExistsError:
                pass
            held = _read(path)
            if held is None:  # released in between: try again
                continue
            reason = stale_reason(held) if held else ""
            if not reason:
                who = describe(held) if held else "an unknown owner (unreadable lock file)"
                raise LaunchError(
                    f"run folder {run_dir} is in use by {who}: wait for that run to end or "
                    f"choose another name (--set name=...); if that job is gone, remove {path}")
            aside = path.with_name(f"{path.name}.stale.{doc['pid']}")
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue
            if _read(aside) != held:  # moved a lock taken in between: put it back, refuse
                os.replace(aside, path)
                continue
            aside.unlink(missing_ok=True)
            LOGGER.warning("run folder %s: took over a stale lock (%s; it was held by %s)",
                           run_dir, reason, describe(held))
        raise LaunchError(f"run folder {run_dir}: its lock {path} keeps changing (several "
                          "runs starting on it at once?); start one run per folder")
    finally:
        tmp.unlink(missing_ok=True)
