"""What :class:`decomp.Trainer` shows while it runs: the log line of a history row and the
tqdm bar on rank 0 (a terminal only)."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar of ``total`` steps on stderr, shown only if ``enabled`` and stderr is a
    terminal (disabled bars accept the same calls)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()),
                leave=False, file=sys.stderr, dynamic_ncols=True)


def fmt(v: float | None) -> str:
    """A metric with 4 decimals, "-" for None."""
    return "-" if v is None else f"{v:.4f}"


def log_line(row: dict[str, Any], decentralized: bool) -> str:
    """The log line of a history row (test metrics only when there is a test set)."""
    parts = [f"step {row['step']}: loss {fmt(row['loss'])}"]
    if "test_loss" in row:
        parts.append(f"test loss {fmt(row['test_loss'])}")
    if "test_acc" in row:
        parts.append(f"test acc{'(xbar)' if 'test_acc_mean' in row else ''} "
                     f"{fmt(row['test_acc'])}")
    if "test_acc_mean" in row:
        parts.append(f"x_i mean {fmt(row['test_acc_mean'])} min {fmt(row['test_acc_min'])}")
    if "consensus_distance" in row:
        parts.append(f"consensus {row['consensus_distance']:.3e}")
    parts.append(f"{row['bits_up'] / 8e6:.3f} MB " + ("sent/rank" if decentralized
                                                     else "up/worker"))
    return ", ".join(parts) + f", {row['wall_s']:.2f} s"


__all__ = ["fmt", "log_line", "progress_bar"]
