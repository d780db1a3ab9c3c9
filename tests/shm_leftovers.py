"""MPICH shared-memory segments left in /dev/shm by test ranks that were killed on purpose.

The fault tests end ranks with SIGKILL (and SLURM's KillWait does the same), and a rank killed
before ``MPI_Finalize`` leaves its start-up segments ``/dev/shm/mpich_*`` behind: one ``make
test`` left 66 (170 MB of RAM), and a day of runs on a shared machine 900 (2.4 GB). At the end
of a test session they are removed: only files that appeared during the session, belong to
this user, are older than :data:`MIN_AGE_S` (a starting job maps its segment within
milliseconds of creating it) and are mapped by no process (``/proc/*/maps``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SHM = Path("/dev/shm")
PATTERN = "mpich_*"
MIN_AGE_S = 30.0


def segments() -> set[str]:
    """The MPICH segment paths in /dev/shm now (empty where there is none)."""
    try:
        return {str(p) for p in SHM.glob(PATTERN)}
    except OSError:
        return set()


def mapped() -> set[str] | None:
    """/dev/shm paths some process maps; None if /proc cannot tell (then nothing is removed)."""
    proc = Path("/proc")
    if not (proc / "self" / "maps").exists():
        return None
    found: set[str] = set()
    for pid in proc.iterdir():
        if not pid.name.isdigit():
            continue
        try:
            text = (pid / "maps").read_text()
        except OSError:  # gone, or another user's process: its segments are not ours
            continue
        for line in text.splitlines():
            at = line.find("/dev/shm/")
            if at >= 0:
                found.add(line[at:].removesuffix(" (deleted)"))
    return found


def remove_leftovers(before: set[str]) -> list[str]:
    """Remove the segments that appeared since ``before`` and that no process uses; returns
    the removed paths."""
    new = segments() - before
    if not new:
        return []
    in_use = mapped()
    if in_use is None:
        return []
    now, uid, removed = time.time(), os.getuid(), []
    for path in sorted(new - in_use):
        try:
            st = os.stat(path)
            if st.st_uid == uid and now - st.st_mtime > MIN_AGE_S:
                os.unlink(path)
                removed.append(path)
        except OSError:  # removed meanwhile
            continue
    return removed
