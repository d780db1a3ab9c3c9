"""Calibration of the cost model: the link (α, β), the codec costs and the compute time.

* Link. ``link_params(...)``: from a link measurement (``decomp bench link --json FILE``:
  fields ``alpha_s`` seconds, ``beta_Bps`` bytes/s; a plain dict with them works too), or from
  a rate and a delay given by the user: β = rate / 8 (bytes/s), α = delay + a base latency
  (the MPI stack's own per-message cost; default 30 µs — measure it here with
  ``decomp bench link`` without a delay and pass its α).
* Codecs. Seconds of one encode / decode_add of a compressor as ``c0 + c1·m`` (m = d for an
  encode or a dense decode; m = k, the kept entries, for a Top-k / Rand-k decode), fitted from
  two timings (d = 1,000 and 100,000) with :func:`decomp.bench.kernels.bench_compressor` on this
  machine, single-threaded. Cached per compressor (its repr) and dtype in a JSON file, by
  default ``~/.cache/decomp/netmodel-calibration.json``; a missing entry is measured on first
  use. ``axpy``: one dense y += a·x pass (mixing rows, applying a downlink sum).
* Compute. The seconds of one gradient: given by the user, or timed here on the config's
  problem (:func:`estimate_compute`: a full or minibatch gradient on a shard of ⌈N/n⌉ rows).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decomp.compress import Compressor, PerTensor
from decomp.compress.randk import RandK
from decomp.compress.topk import TopK
from decomp.errors import ConfigError

__all__ = ["BASE_LATENCY_S", "CodecCosts", "Link", "default_cache", "estimate_compute",
           "link_from_json", "link_params", "model_dim", "model_layout", "shard_rows",
           "parse_delay", "parse_rate"]

#: per-message latency of the MPI stack added to a user-given delay (seconds)
BASE_LATENCY_S = 30e-6
SIZES = (1_000, 100_000)

_RATE_UNITS = {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
               "tbit": 1e12 / 8, "bps": 1 / 8, "kbps": 1e3 / 8, "mbps": 1e6 / 8,
               "gbps": 1e9 / 8, "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9,
               "kib": 1024.0, "mib": 1024.0 ** 2, "gib": 1024.0 ** 3}
_DELAY_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_rate(text: str) -> float:
    """A link rate to bytes/s: ``1gbit``, ``100mbit``, ``1Gbit/s``, ``10gbps`` (decimal bits),
    ``125MB/s`` (decimal bytes), ``100MiB/s`` (binary bytes); case-insensitive."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)(/s)?\s*",
                     str(text))
    key = m.group(2).lower() if m else ""
    if m is None or key not in _RATE_UNITS:
        raise ConfigError(f"cannot read the rate {text!r}: give a number and a unit, e.g. 1gbit, "
                          f"100mbit, 125MB/s (units: {', '.join(_RATE_UNITS)})")
    rate = float(m.group(1)) * _RATE_UNITS[key]
    if not (rate > 0 and math.isfinite(rate)):
        raise ConfigError(f"the rate must be positive, got {text!r}")
    return rate


def parse_delay(text: str) -> float:
    """A one-way delay to seconds: ``1ms``, ``500us``, ``0.002s`` (a bare number: ms)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ]*)\s*", str(text))
    unit = (m.group(2) or "ms").lower() if m else ""
    if m is None or unit not in _DELAY_UNITS:
        raise ConfigError(f"cannot read the delay {text!r}: give e.g. 1ms, 500us, 0.002s "
                          f"(units: {', '.join(_DELAY_UNITS)})")
    return float(m.group(1)) * _DELAY_UNITS[unit]


@dataclass(frozen=True)
class Link:
    """α seconds per message hop, β bytes/s per link, and where they came from."""

    alpha_s: float
    beta_Bps: float
    source: str


def link_from_json(data: Mapping[str, Any] | str | os.PathLike[str]) -> Link:
    """α, β from a link measurement: a JSON file or dict with ``alpha_s`` and ``beta_Bps``
    (also nested under ``fit`` or ``link``)."""
    src = "link measurement"
    if not isinstance(data, Mapping):
        p = Path(data)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the link measurement {p}: {e}") from None
        src = f"link measurement {p}"
    assert isinstance(data, Mapping)
    for key in ("fit", "link"):
        if "alpha_s" not in data and isinstance(data.get(key), Mapping):
            data = data[key]
    try:
        a, b = float(data["alpha_s"]), float(data["beta_Bps"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{src}: needs numbers alpha_s (seconds) and beta_Bps (bytes/s), "
                          f"got keys {sorted(data)}") from None
    if not (a >= 0 and b > 0 and math.isfinite(a)):
        raise ConfigError(f"{src}: alpha_s must be >= 0 and beta_Bps > 0, got {a}, {b}")
    return Link(a, b, src)


def link_params(rate: str | float | None = None, delay: str | float | None = None, *,
                link: Mapping[str, Any] | str | os.PathLike[str] | None = None,
                base_latency_s: float = BASE_LATENCY_S) -> Link:
    """The link: a measurement (``link``), overridden by ``rate`` (β = rate/8) and ``delay``
    (α = delay + base latency) when given. Rates and delays are strings (parsed) or numbers
    (bytes/s, seconds)."""
    base = link_from_json(link) if link is not None else None
    if base is None and rate is None:
        raise ConfigError("give the link rate (e.g. --rate 1gbit) or a link measurement "
                          "(--link FILE from decomp bench link --json)")
    beta = base.beta_Bps if rate is None else (
        parse_rate(rate) if isinstance(rate, str) else float(rate))
    if delay is None:
        alpha = base.alpha_s if base is not None else base_latency_s
        why = base.source if base is not None else "base latency only"
    else:
        d = parse_delay(delay) if isinstance(delay, str) else float(delay)
        alpha, why = d + base_latency_s, f"delay {d * 1e3:g} ms + base {base_latency_s * 1e6:g} µs"
    src = f"β = {beta * 8 / 1e6:g} Mbit/s, α = {alpha * 1e3:.4g} ms ({why})"
    return Link(alpha, beta, src)


def default_cache() -> Path:
    """``~/.cache/decomp/netmodel-calibration.json`` (``$XDG_CACHE_HOME`` respected)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "decomp" / "netmodel-calibration.json"


def _fit(m: tuple[int, int], t: tuple[float, float]) -> list[float]:
    """[c0, c1] of t = c0 + c1·m through two points (c1 = 0 when m is the same twice)."""
    if m[0] == m[1]:
        return [min(t), 0.0]
    c1 = max(0.0, (t[1] - t[0]) / (m[1] - m[0]))
    return [max(0.0, t[0] - c1 * m[0]), c1]


def _sizes_for(C: Compressor) -> tuple[int, int]:
    """Two vector lengths, 100x apart, the compressor accepts (d = 1,000 and 100,000 unless,
    e.g., a Top-k's fixed k needs longer vectors)."""
    for d in (SIZES[0], 10 * SIZES[0], 100 * SIZES[0], 1000 * SIZES[0]):
        try:
            C.check(d)
            if hasattr(C, "k_for"):
                C.k_for(d)
        except ConfigError:
            continue
        return d, 100 * d
    raise ConfigError(f"cannot calibrate {C!r}: it accepts none of the lengths 1e3 ... 1e6")


def _sparse_k(C: Compressor, d: int) -> int | None:
    inner = getattr(C, "inner", C)
    return inner.k_for(d) if type(inner) in (TopK, RandK) and not hasattr(C, "factor") else None


@dataclass
class CodecCosts:
    """Seconds per codec call, fitted on this machine and cached (module doc).

    entries: {"<repr(C)>|<dtype>": {"encode": [c0, c1], "decode": [c0, c1], "per": "d"|"k"}}
    plus "axpy|<dtype>"; path: the JSON file they are kept in (None: memory only).
    """

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None
    machine: str = ""
    repeat: int = 5

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> CodecCosts:
        """The cached costs at ``path`` (default :func:`default_cache`; a missing file is an
        empty cache, written on the first measurement)."""
        p = Path(path) if path is not None else default_cache()
        entries: dict[str, Any] = {}
        machine = ""
        if p.exists():
            try:
                doc = json.loads(p.read_text())
                entries, machine = dict(doc.get("codecs", {})), str(doc.get("machine", ""))
            except (OSError, ValueError, AttributeError) as e:
                raise ConfigError(f"cannot read the calibration file {p}: {e}") from None
        return cls(entries, p, machine)

    def save(self) -> None:
        if self.path is None:
            return
        from decomp.bench.kernels import machine_info

        self.machine = self.machine or machine_info()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machine": self.machine, "sizes": list(SIZES),
                                   "codecs": self.entries}, indent=1, sort_keys=True))
        tmp.replace(self.path)

    def _measure(self, key: str, C: Compressor | None, dtype: np.dtype) -> dict[str, Any]:
        from decomp.bench.kernels import bench_compressor, time_call

        rng = np.random.default_rng(0)
        if C is None:
            ts = []
            for d in SIZES:
                x, y = rng.standard_normal(d).astype(dtype), np.zeros(d, dtype)
                a = dtype.type(0.5)
                ts.append(time_call(lambda x=x, y=y, a=a: np.add(y, a * x, out=y), self.repeat))
            entry: dict[str, Any] = {"axpy": _fit(SIZES, (ts[0], ts[1])), "per": "d"}
        else:
            sizes = _sizes_for(C)
            rows = [bench_compressor(key, C, rng.standard_normal(d).astype(dtype), 1.0,
                                     self.repeat) for d in sizes]
            k = [_sparse_k(C, d) for d in sizes]
            dec_m = (k[0], k[1]) if k[0] is not None else sizes
            entry = {"encode": _fit(sizes, (rows[0].encode_s, rows[1].encode_s)),
                     "decode": _fit(dec_m, (rows[0].decode_add_s, rows[1].decode_add_s)),  # type: ignore[arg-type]
                     "per": "k" if k[0] is not None else "d", "sizes": list(sizes)}
        self.entries[key] = entry
        self.save()
        return entry

    def seconds(self, op: str, C: Compressor | None, d: int, dtype: Any = np.float64) -> float:
        """Seconds of one ``op`` (encode | decode | axpy) of C on a length-d vector. A
        per-tensor compressor is priced as its inner one on the whole vector: it runs the same
        codec over the same d values, tensor by tensor (the per-tensor headers aside)."""
        if isinstance(C, PerTensor):
            C = C.inner
        dt = np.dtype(dtype)
        key = f"{'axpy' if C is None else repr(C)}|{dt.name}"
        entry = self.entries.get(key) or self._measure(key, C, dt)
        c0, c1 = entry["axpy" if C is None else op]
        m = d
        if op == "decode" and entry.get("per") == "k" and C is not None:
            m = _sparse_k(C, d) or d
        return float(c0 + c1 * m)


def estimate_compute(cfg: Any, n: int, batch_size: int | None, repeat: int = 5) -> float:
    """Seconds of one gradient of worker 0 when the config's data set is cut into n shards,
    timed on a problem over ⌈N/n⌉ rows of it (a shard's size; timed directly, since the cost
    is not linear in the rows once the shard leaves the cache): the full local gradient, or
    the minibatch gradient of ``batch_size`` rows (of all the shard's rows when it has fewer —
    a configuration ``decomp run`` refuses; ``decomp model`` says so). Numpy problems only."""
    from decomp.bench.kernels import time_call
    from decomp.config import is_torch
    from decomp.problems import make_problem, oracle_grad

    if is_torch(cfg):
        raise ConfigError("a torch problem has no cheap gradient to time here: give the "
                          "compute time per step with --compute-ms")
    full = _workload(cfg, 1)
    whole, x = full.problems[0], full.x0
    rows = max(1, math.ceil(whole.n_samples / n))
    key = f"{id(full)}#{rows}#{batch_size}"
    if key not in _WORK:
        shard = make_problem(cfg.problem.kind, whole.A[:rows].copy(), whole.b[:rows].copy(),
                             cfg.problem.lam)
        b = None if batch_size is None else min(batch_size, rows)
        _WORK[key] = time_call(lambda: oracle_grad(shard, x, seed=0, worker=0, step=1,
                                                   batch_size=b), repeat)
    return float(_WORK[key])


def shard_rows(cfg: Any, n: int) -> int | None:
    """⌈N/n⌉, the rows of a shard of the config's numpy data set (None for torch problems)."""
    from decomp.config import is_torch

    if is_torch(cfg):
        return None
    return max(1, math.ceil(_workload(cfg, 1).problems[0].n_samples / n))


def model_dim(cfg: Any) -> int:
    """d of the config's problem (loads its data set once; numpy and torch problems)."""
    return int(_workload(cfg, 1).x0.size)


def model_layout(cfg: Any) -> Any:
    """The config's model as a list of tensors (:class:`decomp.layout.Layout`: one slot for
    a numpy problem, the torch model's parameters otherwise)."""
    return _workload(cfg, 1).layout


_WORK: dict[str, Any] = {}


def _workload(cfg: Any, n: int) -> Any:
    """The config's workload cut into n shards, built once per (config, n)."""
    from decomp.config import dump_toml
    from decomp.runner.workload import prepare

    key = f"{dump_toml(cfg)}#{n}"
    if key not in _WORK:
        _WORK[key] = prepare(cfg, n)
    return _WORK[key]
