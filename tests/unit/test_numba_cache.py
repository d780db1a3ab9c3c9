"""The kernels' numba cache when many processes start together (decomp.kernels.jit): on a cold
cache exactly one process compiles each signature and the others load its result; a second
wave only loads; every process computes the right values. Fresh interpreters, released at one
instant, on a cache folder of their own (NUMBA_CACHE_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import decomp.kernels.fused as fused
from decomp.kernels.jit import LockedCache

KERNEL = '''
import numpy as np
from decomp.kernels.jit import njit


@njit(cache=True, nogil=True)
def sumsq(x):
    s = x.dtype.type(0)
    for v in x:
        s += v * v
    return s
'''

WORKER = '''
import json, sys, time
start = float(sys.argv[1])
import numpy as np
sys.path.insert(0, sys.argv[2])
import kmod
while time.time() < start:
    time.sleep(0.005)
a = float(kmod.sumsq(np.arange(10.0)))
b = float(kmod.sumsq(np.arange(10.0, dtype=np.float32)))
st = kmod.sumsq.stats
print(json.dumps({"a": a, "b": b, "misses": sum(st.cache_misses.values()),
                  "hits": sum(st.cache_hits.values())}))
'''


def _wave(tmp: Path, k: int) -> list[dict]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
    # released together once every interpreter has imported numpy (a few seconds under load)
    start = time.time() + 4.0 + 2.0 * (os.getloadavg()[0] / max(1, os.cpu_count() or 1))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(start), str(tmp)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(k)]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=600)
        assert p.returncode == 0, se
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def test_concurrent_cold_starts_compile_each_signature_once(tmp_path: Path) -> None:
    (tmp_path / "kmod.py").write_text(KERNEL)
    first = _wave(tmp_path, 4)
    assert all(r["a"] == 285.0 and r["b"] == 285.0 for r in first), first
    # two signatures (float64, float32): each compiled by one process, loaded by the others
    assert sum(r["misses"] for r in first) == 2, first
    assert sum(r["hits"] for r in first) == 2 * 4 - 2, first
    second = _wave(tmp_path, 2)
    assert [(r["misses"], r["hits"]) for r in second] == [(0, 2), (0, 2)], second
    index = list((tmp_path / "cache").rglob("*.nbi"))
    assert len(index) == 1 and len(list(index[0].parent.glob("*.nbc"))) == 2
    assert not list((tmp_path / "cache").rglob("*.tmp.*"))  # no temporary file left


def test_the_kernels_use_the_locked_cache() -> None:
    assert isinstance(fused.axpy._cache, LockedCache)
    x, s = np.zeros(3), np.ones(3)
    assert fused.axpy(x, np.float64(2.0), s) and np.array_equal(x, [2.0, 2.0, 2.0])
