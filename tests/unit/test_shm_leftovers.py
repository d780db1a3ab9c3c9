"""tests/shm_leftovers.py: only this session's old, unmapped MPICH segments are removed."""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import pytest

from tests import shm_leftovers

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir() or
                                shm_leftovers.mapped() is None, reason="needs /dev/shm and /proc")


def _segment(tag: str, age_s: float) -> Path:
    path = Path(f"/dev/shm/mpich_shm_decomptest_{os.getpid()}_{tag}")
    path.write_bytes(b"\0" * 4096)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_only_new_old_unmapped_segments_are_removed() -> None:
    earlier = _segment("earlier", 3600)
    before = shm_leftovers.segments()
    left = _segment("left", 3600)
    young = _segment("young", 0)
    held = _segment("held", 3600)
    with open(held, "r+b") as f, mmap.mmap(f.fileno(), 4096) as _:
        try:
            removed = shm_leftovers.remove_leftovers(before)
            assert str(left) in removed and not left.exists()
            for kept in (earlier, young, held):  # before the session, just created, in use
                assert kept.exists() and str(kept) not in removed
        finally:
            for p in (earlier, left, young, held):
                p.unlink(missing_ok=True)
