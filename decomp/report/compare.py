"""Tables over run folders: final metrics, steps / bits / time to a target, status; and the
best value of a swept setting per group (e.g. the best step-size multiplier per method).

Every number comes from the files: final metrics are the last ``metrics.jsonl`` row of a
method, the status and step size its ``summary.json`` entry. "To a target" is the first
*logged* step whose value reaches the target (resolution: ``run.log_every``), with that row's
``bits_up`` (per worker) and ``wall_s``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from decomp.report.labels import find_key, group_key, labels, show_value, value_of
from decomp.report.runs import MethodRun, RunFolderError

#: columns of the final-metrics part, shown when at least one method has them
FINAL = ("loss", "grad_norm_sq", "test_loss", "test_acc", "consensus_distance", "bits_up",
         "bits_down", "wall_s")
_TARGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|=)\s*([^\s]+)\s*$")


@dataclass(frozen=True)
class Target:
    """A threshold on a metrics column: reached when ``column op value`` holds."""

    column: str
    value: float
    op: str  # "<=" or ">="

    def reached(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        return v <= self.value if self.op == "<=" else v >= self.value

    @property
    def text(self) -> str:
        return f"{self.column}{self.op}{self.value:g}"


def parse_target(text: str) -> Target:
    """``grad_norm_sq=1e-4`` (at most, or at least for accuracy columns), ``loss<=0.3``,
    ``test_acc>=0.9``."""
    m = _TARGET.match(text)
    if m is None:
        raise RunFolderError(f"--target {text!r}: expected COLUMN=VALUE, COLUMN<=VALUE or "
                             "COLUMN>=VALUE, e.g. grad_norm_sq=1e-4")
    col, op, raw = m.groups()
    try:
        value = float(raw)
    except ValueError:
        raise RunFolderError(f"--target {text!r}: {raw!r} is not a number") from None
    if op == "=":
        op = ">=" if "acc" in col else "<="
    return Target(col, value, op)


def first_reach(m: MethodRun, t: Target) -> dict[str, float]:
    """step, bits (``bits_up`` per worker), total bits (``bits_up`` + ``bits_down``: what
    bidirectional compression saves) and wall_s of the first row reaching ``t`` (nan when
    never reached)."""
    for row in m.rows:
        v = row.get(t.column)
        if isinstance(v, (int, float)) and t.reached(float(v)):
            return {"step": float(row.get("step", math.nan)),
                    "bits": float(row.get("bits_up", math.nan)),
                    "bits_total": float(row.get("bits_up", math.nan))
                    + float(row.get("bits_down", math.nan)),
                    "wall_s": float(row.get("wall_s", math.nan))}
    return {"step": math.nan, "bits": math.nan, "bits_total": math.nan, "wall_s": math.nan}


def _target_cells(m: MethodRun, targets: list[Target]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in targets:
        hit = first_reach(m, t)
        out[f"steps to {t.text}"] = hit["step"]
        out[f"bits to {t.text}"] = hit["bits"]
        out[f"total bits to {t.text}"] = hit["bits_total"]
        out[f"time to {t.text}"] = hit["wall_s"]
    return out


_AT_STEP = re.compile(r"at step (\d+)")


def diverged_at(m: MethodRun) -> float:
    """The step a diverged method's message names (the first non-finite step, or the log
    step whose loss blew up); nan for other methods."""
    if m.status != "diverged":
        return math.nan
    hit = _AT_STEP.search(str(m.summary.get("message", "")))
    return float(hit.group(1)) if hit else math.nan


def compare_rows(methods: list[MethodRun], targets: Sequence[Target] = ()) -> list[dict[str, Any]]:
    """One row per method of every run: run folder, label, status, step size, final metrics,
    and steps / bits / time to each target."""
    names = labels(methods)
    rows = []
    for m, name in zip(methods, names, strict=True):
        row: dict[str, Any] = {"run": str(m.run.path), "method": name, "status": m.status,
                               "diverged at": diverged_at(m), "lr": m.summary.get("lr", math.nan),
                               "steps": m.final("step")}
        for col in FINAL:
            row[col] = m.final(col)
        row.update(_target_cells(m, list(targets)))
        rows.append(row)
    return _drop_empty(rows)


def best_groups(methods: list[MethodRun], metric: str, over: str,
                maximize: bool | None = None) -> list[tuple[list[MethodRun], MethodRun | None]]:
    """Groups of methods that differ only in the setting ``over`` (e.g. lr_multiplier), each
    with its best member: the final ``metric`` lowest (highest for accuracies) among those that
    finished with status ok and a finite value (None if none did)."""
    key = find_key(methods, over)
    maximize = ("acc" in metric) if maximize is None else maximize
    groups: dict[tuple[str, str], list[MethodRun]] = {}
    for m in methods:
        groups.setdefault(group_key(m, key), []).append(m)
    out = []
    for group in groups.values():
        ok = [m for m in group if m.status == "ok" and math.isfinite(m.final(metric))]
        best = (max if maximize else min)(ok, key=lambda m: m.final(metric)) if ok else None
        out.append((group, best))
    return out


def best_rows(methods: list[MethodRun], metric: str, over: str,
              targets: Sequence[Target] = (), maximize: bool | None = None) -> list[dict[str, Any]]:
    """One row per group of :func:`best_groups`: the best value of ``over``, its final
    ``metric``, step size and run folder, and steps / bits / time to each target."""
    if not methods:
        return []
    key = find_key(methods, over)
    groups = best_groups(methods, metric, over, maximize)
    names = labels([g[0] for g, _ in groups], drop=[key])
    short = key.split(".")[-1]
    rows = []
    for (group, best), name in zip(groups, names, strict=True):
        row: dict[str, Any] = {"method": name, "tried": len(group),
                               "diverged": sum(m.status == "diverged" for m in group),
                               f"best {short}": "-" if best is None
                               else show_value(value_of(best, key)),
                               f"final {metric}": math.nan if best is None
                               else best.final(metric),
                               "lr": math.nan if best is None else best.summary.get("lr"),
                               "run": "-" if best is None else str(best.run.path)}
        if best is not None:
            row.update(_target_cells(best, list(targets)))
        rows.append(row)
    return _drop_empty(rows)


def _drop_empty(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave out the columns no row has a value in (all nan)."""
    if not rows:
        return rows
    keys = list(dict.fromkeys(k for r in rows for k in r))
    keep = [k for k in keys if any(not _is_nan(r.get(k)) for r in rows)]
    return [{k: r.get(k, math.nan) for k in keep} for r in rows]


def _is_nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _cell(v: Any) -> str:
    if _is_nan(v):
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return str(v)


def format_rows(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """An aligned text table (numbers to 4 significant digits; "-": not reached / none)."""
    if not rows:
        return "(no runs)"
    cols = columns or list(rows[0])
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def format_markdown(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """The same table as Markdown (for docs)."""
    if not rows:
        return ""
    cols = columns or list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |"
            for r in rows]
    return "\n".join(out)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with full-precision numbers (``repr`` of the floats in the files); empty = none."""
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if _is_nan(v) else (repr(v) if isinstance(v, float) else v)
                    for k, v in r.items()})
    return buf.getvalue()


__all__ = ["FINAL", "Target", "best_groups", "best_rows", "compare_rows", "diverged_at",
           "first_reach",
           "format_markdown", "format_rows", "parse_target", "to_csv"]
