"""Kernel benchmarks: encode/decode speed of every compressor against memory bandwidth.

Usable programmatically (``run_kernels(...)`` returns rows of numbers) and from the command line
through :mod:`decomp.cli.bench` (``decomp bench kernels``). Each timing is the minimum over
``repeat`` runs after a warm-up run (which also triggers numba compilation), single-threaded.

The yardstick is one memory-bandwidth pass: ``np.copyto(y, x)`` on the same float32 vector
(reads d*4 bytes, writes d*4 bytes), timed interleaved with each compressor's runs so that load
from other processes affects both alike. "/copy" columns are time / copy time. For Top-k the
baselines are numpy (``np.argpartition(np.abs(x), d - k)`` then gathering ``x[idx]``) and
``torch.topk(x.abs(), k)`` plus the gather, on the same vector, single-threaded.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from decomp.compress import QSGD, Compressor, Identity, Natural, RandK, ScaledSign, Sign, TopK

DEFAULT_SIZES = (100_000, 1_000_000, 25_000_000)
KEY = (0, 0, 0)


def default_compressors() -> list[tuple[str, Compressor]]:
    """(label, compressor) pairs benchmarked by default: k = 1 % of d for the sparsifiers."""
    return [
        ("identity", Identity()),
        ("topk 1%", TopK(ratio=0.01)),
        ("randk 1%", RandK(ratio=0.01)),
        ("qsgd s=1", QSGD(1)),
        ("qsgd s=15", QSGD(15)),
        ("natural", Natural()),
        ("sign", Sign()),
        ("scaled_sign", ScaledSign()),
    ]


def time_call(fn: Callable[[], Any], repeat: int) -> float:
    """Minimum wall time (s) of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    fn()
    best = float("inf")
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return best


def memory_pass(x: np.ndarray, repeat: int) -> float:
    """Time of one np.copyto pass over x (the memory-bandwidth yardstick)."""
    y = np.empty_like(x)
    return time_call(lambda: np.copyto(y, x), repeat)


@dataclass
class Row:
    """One benchmark line. Times in seconds; ratios are time / copy time."""

    d: int
    label: str
    encode_s: float
    decode_s: float
    decode_add_s: float
    copy_s: float
    payload_bytes: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def encode_gbs(self) -> float:
        return self.d * 4 / self.encode_s / 1e9

    @property
    def encode_x_copy(self) -> float:
        return self.encode_s / self.copy_s

    @property
    def decode_x_copy(self) -> float:
        return self.decode_s / self.copy_s

    @property
    def decode_add_x_copy(self) -> float:
        return self.decode_add_s / self.copy_s

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(encode_gbs=self.encode_gbs, encode_x_copy=self.encode_x_copy,
                   decode_x_copy=self.decode_x_copy, decode_add_x_copy=self.decode_add_x_copy)
        return out


def interleaved(fns: Sequence[Callable[[], Any]], repeat: int) -> list[float]:
    """Minimum time of each fn over ``repeat`` rounds, the fns run in turn within a round
    (after one warm-up round), so a slow drift of the machine affects all of them alike."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, repeat)):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return best


def bench_compressor(label: str, c: Compressor, x: np.ndarray, copy_s: float | None,
                     repeat: int) -> Row:
    """Encode, decode (into a preallocated out, zeroing included) and decode_add times,
    interleaved with the np.copyto yardstick (re-measured here unless ``copy_s`` is given)."""
    key = KEY if c.is_random else None
    payload = c.encode(x, key)
    out = np.zeros(x.size, dtype=c.decode(payload).dtype)
    y = np.empty_like(x)
    fns = [lambda: c.encode(x, key), lambda: c.decode(payload, out=out),
           lambda: c.decode_add(payload, out), lambda: np.copyto(y, x)]
    enc, dec, dec_add, cp = interleaved(fns, repeat)
    return Row(x.size, label, enc, dec, dec_add, cp if copy_s is None else copy_s,
               int(payload.size))


def topk_baselines(x: np.ndarray, k: int, repeat: int) -> dict[str, float]:
    """Seconds for numpy argpartition+gather and (if importable) torch.topk+gather."""
    d = x.size

    def numpy_topk() -> np.ndarray:
        idx = np.argpartition(np.abs(x), d - k)[d - k:]
        return x[idx]

    res = {"argpartition_s": time_call(numpy_topk, max(1, min(repeat, 3)))}
    try:
        import torch
    except Exception:  # torch is optional
        return res
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt = torch.from_numpy(x)

        def torch_topk() -> Any:
            _, idx = torch.topk(xt.abs(), k, sorted=False)
            return xt[idx]

        res["torch_topk_s"] = time_call(torch_topk, max(1, min(repeat, 3)))
    finally:
        torch.set_num_threads(threads)
    return res


def run_kernels(sizes: Sequence[int] = DEFAULT_SIZES, repeat: int = 5,
                only: Sequence[str] | None = None, baselines: bool = True,
                log: Callable[[str], None] | None = None, seed: int = 0) -> list[Row]:
    """Benchmark every (selected) compressor at every size on a float32 N(0, 1) vector."""
    rows: list[Row] = []
    comps = [(lab, c) for lab, c in default_compressors()
             if not only or any(o in lab for o in only)]
    for d in sizes:
        x = np.random.default_rng(seed).standard_normal(int(d), dtype=np.float32)
        copy_s = memory_pass(x, repeat)
        if log:
            log(f"d = {d:,}: copy pass {copy_s * 1e3:.2f} ms "
                f"({2 * x.nbytes / copy_s / 1e9:.1f} GB/s read+write)")
        for label, c in comps:
            row = bench_compressor(label, c, x, None, repeat)
            if baselines and isinstance(c, TopK):
                row.extra = topk_baselines(x, c.k_for(x.size), repeat)
            rows.append(row)
            if log:
                log("  " + format_row(row))
        del x
        gc.collect()
    return rows


HEADER = (f"{'d':>11} {'compressor':<12} {'enc ms':>8} {'enc GB/s':>8} {'enc/copy':>8} "
          f"{'dec ms':>8} {'dec/copy':>8} {'add/copy':>8} {'bytes':>11}  baselines")


def format_row(r: Row) -> str:
    s = (f"{r.d:>11,} {r.label:<12} {r.encode_s * 1e3:>8.2f} {r.encode_gbs:>8.2f} "
         f"{r.encode_x_copy:>8.2f} {r.decode_s * 1e3:>8.2f} {r.decode_x_copy:>8.2f} "
         f"{r.decode_add_x_copy:>8.2f} {r.payload_bytes:>11,}")
    if "argpartition_s" in r.extra:
        s += f"  argpartition {r.extra['argpartition_s'] / r.encode_s:.1f}x slower"
        if "torch_topk_s" in r.extra:
            s += f", torch.topk {r.extra['torch_topk_s'] / r.encode_s:.1f}x slower"
        else:
            s += ", torch.topk n/a (torch not importable)"
    return s


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table (the format of docs/benchmarks.md)."""
    return "\n".join([HEADER] + [format_row(r) for r in rows])


def machine_info() -> str:
    """One line on the CPU, numba/numpy versions and thread settings."""
    import platform

    import numba

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "load avg " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "load avg n/a"
    return (f"{cpu}; {os.cpu_count()} cpus; numpy {np.__version__}; numba {numba.__version__}; "
            f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}; {load}")
