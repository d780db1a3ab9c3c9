"""Rank 0's progress display: the tqdm bar on a terminal, a plain line in a log.

Under ``mpiexec`` (Hydra pipes stderr) or in a batch job stderr is not a terminal, so a bar
would either never show or write one line per refresh. There :class:`ProgressLine` prints

    [progress] EF21 top-1: step 1200/3000 (40%), ||grad f||^2 1.234e-04, 2.30 Mbit/worker,
    412 steps/s, ETA 4 s

at most every ``every_s`` seconds (default 10; ``DECOMP_PROGRESS_EVERY`` in seconds overrides
it, 0 prints at every step). Both objects take the same calls from the loop: ``update(n)`` per
step, :func:`show_metrics` at log steps, ``close()``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

DEFAULT_EVERY_S = 10.0
ENV_EVERY = "DECOMP_PROGRESS_EVERY"


def _bits(bits: float) -> str:
    for unit, scale in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.2f} {unit}"
    return f"{bits:.0f} bit"


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class ProgressLine:
    """A tqdm stand-in that prints a plain line at most every ``every_s`` seconds."""

    def __init__(self, total: int, label: str, every_s: float = DEFAULT_EVERY_S, *,
                 initial: int = 0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.label, self.every_s = total, label, every_s
        self.n = self.start = initial
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.t0 = self.last = clock()
        self.metrics: dict[str, float] = {}
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
            self.lines += 1

    def observe(self, metrics: dict[str, Any]) -> None:
        """The latest logged metrics (shown from the next line on)."""
        self.metrics = {k: float(v) for k, v in metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        rate = (self.n - self.start) / elapsed
        parts = [f"step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)"]
        m = self.metrics
        if "test_acc" in m:
            parts.append(f"loss {m.get('loss', float('nan')):.4f}, test acc {m['test_acc']:.4f}")
        elif "grad_norm_sq" in m:
            parts.append(f"||grad f||^2 {m['grad_norm_sq']:.3e}")
        elif "loss" in m:
            parts.append(f"loss {m['loss']:.4g}")
        if "bits_up" in m:
            parts.append(f"{_bits(m['bits_up'])}/worker")
        parts.append(f"{rate:.3g} steps/s")
        if rate > 0 and self.n < self.total:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        return f"[progress] {self.label}: " + ", ".join(parts)

    def set_postfix(self, **kw: Any) -> None:  # tqdm's call, for callers that use it
        self.observe(kw)

    def close(self) -> None:
        pass


def every_s_from_env(default: float = DEFAULT_EVERY_S) -> float:
    """``DECOMP_PROGRESS_EVERY`` (seconds) if set to a number >= 0, else ``default``."""
    text = os.environ.get(ENV_EVERY, "").strip()
    try:
        value = float(text)
    except ValueError:
        return default
    return value if value >= 0 else default


def make_progress(total: int, label: str, enabled: bool, *, every_s: float | None = None,
                  initial: int = 0, stream: TextIO | None = None) -> Any:
    """A tqdm bar when ``stream`` (stderr) is a terminal, else a :class:`ProgressLine`; None
    when not ``enabled`` (other ranks, --no-progress, DECOMP_PROGRESS=0)."""
    if not enabled:
        return None
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=label, leave=False, file=stream,
                    dynamic_ncols=True)
    every = every_s_from_env() if every_s is None else every_s
    return ProgressLine(total, label, every, initial=initial, stream=stream)


def show_metrics(bar: Any, metrics: dict[str, Any]) -> None:
    """Hand a log step's metrics to the display: the bar's postfix or the next plain line."""
    if bar is None:
        return
    if isinstance(bar, ProgressLine):
        bar.observe(metrics)
    elif "test_acc" in metrics:
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['test_acc']:.4f}")
    else:
        bar.set_postfix(grad_norm_sq=f"{metrics['grad_norm_sq']:.3e}")


__all__ = ["DEFAULT_EVERY_S", "ENV_EVERY", "ProgressLine", "every_s_from_env", "make_progress",
           "show_metrics"]
