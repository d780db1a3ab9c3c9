"""Figures of run folders with matplotlib (a ``Figure`` on the Agg canvas: no display, no
pyplot state): one line per method per run, a grid of axes with one row per y column and one
column per x column (or per value of a ``panel`` setting, e.g. one per dataset).

x: ``step`` | ``bits`` (``bits_up``, per worker) | ``bytes`` (bits_up / 8) | ``time``
(``wall_s``) | any metrics column; y: ``grad_norm_sq`` | ``loss`` | ``test_acc`` |
``consensus_distance`` | any metrics column.

Defaults that read right (each overridden by its argument):
- y (:func:`default_y`): ``grad_norm_sq`` for the numpy problems (the EF21 papers' measure),
  the training ``loss`` for torch runs (‖∇f‖² of a network rises while it learns and reads as
  divergence), else the task metric (``test_loss``, ``test_acc``);
- the y axis is logarithmic when all values are positive and span more than a factor 20;
- the x axis is logarithmic for bits and bytes (:data:`LOG_X`; step 0, with no bytes yet, is
  left out), so compressed methods are not squashed against the y axis by a dense one;
- with ``run_in_legend`` (``decomp plot`` given several paths), a method whose name occurs in
  several run folders (within a panel) has its run folder in the legend: "EF21 top-1%
  (runs/a)"; otherwise only methods whose labels would be equal do;
- the title is what the methods share (:func:`decomp.report.labels.title`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decomp.report.labels import _short_paths, find_key, labels, show_value, title, value_of
from decomp.report.runs import MethodRun, RunFolderError

ALIASES = {"steps": "step", "bits": "bits_up", "time": "wall_s", "wall": "wall_s",
           "grad": "grad_norm_sq", "acc": "test_acc", "consensus": "consensus_distance"}
DERIVED = {"bytes": ("bits_up", 1 / 8), "bytes_down": ("bits_down", 1 / 8),
           "mb": ("bits_up", 1 / 8e6)}
AXIS_LABEL = {"step": "step t", "bits_up": "bits sent per worker (node)",
              "bits_down": "bits received per worker",
              "bits_total": "bits sent + received per worker",
              "bytes": "bytes sent per worker (node)",
              "mb": "MB sent per worker (node)", "wall_s": "wall time (s)",
              "grad_norm_sq": "‖∇f(x)‖²", "loss": "loss f(x)",
              "test_acc": "test accuracy", "test_loss": "test loss",
              "consensus_distance": "consensus distance (1/n) Σ‖x_i − x̄‖²",
              "loss_local": "mean local loss (1/n) Σ f_i(x_i)"}
#: x columns drawn on a log axis unless ``xscale`` says otherwise (traffic spans decades)
LOG_X = frozenset({"bits_up", "bits_down", "bits_total", "bytes", "bytes_down", "mb"})


def is_torch(m: MethodRun) -> bool:
    """A torch run: its config says ``[problem] kind = "torch"``, its run metadata names a
    ``decomp.torch`` front end (``MetricsWriter`` in a user's loop), or, with neither, its
    metrics have no ``grad_norm_sq``."""
    kind = m.run.config.get("problem", {}).get("kind")
    if kind:
        return bool(kind == "torch")
    if str(m.run.meta.get("front_end", "")).startswith("decomp.torch"):
        return True
    return "grad_norm_sq" not in m.columns()


def default_y(methods: list[MethodRun]) -> str:
    """``grad_norm_sq`` when no method is a torch run and they have it; else the training
    ``loss``, else ``test_loss``, else ``test_acc`` (the first column every method has)."""
    have = [set(m.columns()) for m in methods]
    if not any(is_torch(m) for m in methods) and all("grad_norm_sq" in h for h in have):
        return "grad_norm_sq"
    for c in ("loss", "test_loss", "test_acc"):
        if have and all(c in h for h in have):
            return c
    return "grad_norm_sq" if all("grad_norm_sq" in h for h in have) else "loss"


def legend_names(methods: list[MethodRun], drop: Sequence[str] = (),
                 runs: bool = True) -> list[str]:
    """:func:`~decomp.report.labels.labels`, plus, with ``runs``, the run folder (its
    shortest distinct tail) for every method whose name occurs in more than one run folder."""
    if not runs:
        return labels(methods, drop=drop)
    names = labels(methods, drop=drop, unique=False)
    folders: dict[str, set[Path]] = {}
    for m in methods:
        folders.setdefault(m.label, set()).add(m.run.path.resolve())
    shared = {lab for lab, f in folders.items() if len(f) > 1}
    if shared:
        where = _short_paths([m.run.path.resolve() for m in methods])
        names = [f"{n} ({w})" if m.label in shared else n
                 for m, n, w in zip(methods, names, where, strict=True)]
    if len(set(names)) < len(names):  # the same folder given twice: labels' own fallback
        names = labels(methods, drop=drop)
    return names


def column(m: MethodRun, name: str) -> np.ndarray:
    """Values of a metrics column (aliases and the derived byte columns resolved)."""
    name = ALIASES.get(name, name)
    if name == "bits_total":  # sent + received per worker (bidirectional compression)
        return m.column("bits_up") + m.column("bits_down")
    if name in DERIVED:
        src, scale = DERIVED[name]
        return m.column(src) * scale
    return m.column(name)


def _scale(values: list[np.ndarray], wanted: str | None) -> str:
    if wanted:
        return wanted
    v = np.concatenate([a[np.isfinite(a)] for a in values]) if values else np.array([])
    if v.size and (v > 0).all() and v.max() > 20 * v.min():
        return "log"
    return "linear"


def plot_methods(methods: list[MethodRun], outputs: Sequence[str | Path], *,
                 x: Sequence[str] = ("step",), y: Sequence[str] | None = None,
                 panel: str | None = None, xscale: str | None = None,
                 yscale: str | None = None, heading: str | None = None,
                 drop: Sequence[str] = (), run_in_legend: bool = False,
                 dpi: int = 100) -> Any:
    """Draw ``methods`` and save the figure to every path of ``outputs`` (format from the
    suffix: .png, .pdf, .svg). Labels tell apart methods of the same name by their settings,
    except ``drop`` and the ``panel`` key (the same label has the same colour in every panel),
    and, with ``run_in_legend``, by their run folder. ``y=None``: :func:`default_y`;
    ``xscale=None``: log for the columns of :data:`LOG_X`, linear otherwise. Returns the
    matplotlib Figure."""
    from matplotlib.figure import Figure

    if not methods:
        raise RunFolderError("nothing to plot: no methods in these runs")
    for path in outputs:
        if Path(path).suffix.lower() not in (".png", ".pdf", ".svg"):
            raise RunFolderError(f"{path}: the figure's file name must end in .png, .pdf or "
                                 ".svg")
    ys = [ALIASES.get(c, c) for c in (y or [default_y(methods)])]
    xs = [ALIASES.get(c, c) for c in x]
    for c in (*xs, *ys):
        if c not in DERIVED and c != "bits_total" and not any(c in m.columns() for m in methods):
            known = sorted({k for m in methods for k in m.columns()})
            raise RunFolderError(f"no metrics column {c!r} in these runs (columns: "
                                 f"{', '.join(known)}; x also: bits, bits_total, bytes, time)")
    dropped = [find_key(methods, k) for k in drop]
    if panel:
        key = find_key(methods, panel)
        values = list(dict.fromkeys(repr(value_of(m, key)) for m in methods))
        panels = [(f"{key.split('.')[-1]} = {show_value(value_of(g[0], key))}", g)
                  for v in values for g in [[m for m in methods if repr(value_of(m, key)) == v]]]
        # labels from the differences inside a panel (what goes with the panel, e.g. a
        # dataset's step count, stays out of them)
        by_id = {id(m): name for _, g in panels
                 for m, name in zip(g, legend_names(g, [*dropped, key], run_in_legend),
                                               strict=True)}
        names = [by_id[id(m)] for m in methods]
    else:
        panels = [("", methods)]
        names = legend_names(methods, dropped, run_in_legend)
    cols = [(p, xc) for p in panels for xc in xs]
    # one colour per label; when no label is in two panels, the i-th method of each panel gets
    # the i-th colour instead (the panels' methods line up: same compressor, same colour)
    index = {id(m): i for i, m in enumerate(methods)}
    shared = panel and any(sum(names[index[id(m)]] == n for _, g in panels for m in g) > 1
                           for n in names)
    style = ({names[index[id(m)]]: _style(j) for _, g in panels for j, m in enumerate(g)}
             if panel and not shared
             else {n: _style(j) for j, n in enumerate(dict.fromkeys(names))})
    fig = Figure(figsize=(4.6 * len(cols), 3.4 * len(ys) + 0.9), layout="constrained")
    axes = fig.subplots(len(ys), len(cols), squeeze=False)
    handles: dict[str, Any] = {}
    for r, yc in enumerate(ys):
        ys_all = [column(m, yc) for m in methods]
        ysc = _scale(ys_all, yscale)
        for c, ((ptitle, group), xc) in enumerate(cols):
            ax = axes[r][c]
            xsc = xscale or ("log" if xc in LOG_X else "linear")
            for m in group:
                i = index[id(m)]
                xv, yv = column(m, xc), ys_all[i]
                ok = np.isfinite(xv) & np.isfinite(yv)
                if ysc == "log":
                    ok &= yv > 0
                if xsc == "log":  # step 0 (no bytes yet) has no place on a log axis
                    ok &= xv > 0
                if not ok.any():
                    continue
                diverged = m.status == "diverged"
                (line,) = ax.plot(xv[ok], yv[ok], color=style[names[i]][0],
                                  linestyle=style[names[i]][1], linewidth=1.4,
                                  label=names[i] + (" (diverged)" if diverged else ""))
                if diverged:
                    ax.plot(xv[ok][-1:], yv[ok][-1:], marker="x", markersize=8,
                            color=line.get_color())
                handles.setdefault(line.get_label(), line)
            ax.set_yscale(ysc)
            ax.set_xscale(xsc)
            ax.set_xlabel(AXIS_LABEL.get(xc, xc))
            ax.set_ylabel(_axis_label(yc, group))
            ax.grid(True, which="major", alpha=0.3)
            if r == 0 and ptitle:
                ax.set_title(ptitle, fontsize=10)
            if panel and r == len(ys) - 1 and c % len(xs) == 0 and ax.get_lines():
                ax.legend(fontsize=7, frameon=False)
    head = heading or title(methods)
    if head:
        fig.suptitle(head, fontsize=11)
    if handles and not panel:
        ncol = max(1, min(len(handles), int(4.6 * len(cols) // 3.2)))
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=ncol, fontsize=8, frameon=False)
    for path in outputs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def _axis_label(name: str, methods: list[MethodRun]) -> str:
    """The axis label; f and ∇f are taken at x̄ when any method is decentralized."""
    text = AXIS_LABEL.get(name, name)
    if any(m.summary.get("family") == "decentralized" for m in methods):
        text = text.replace("f(x)", "f(x̄)")
    return text


def _style(j: int) -> tuple[Any, str]:
    """The j-th (colour, linestyle): tab10, then the same colours dashed, dotted, dash-dotted."""
    from matplotlib import colormaps

    return colormaps["tab10"](j % 10), ("-", "--", ":", "-.")[(j // 10) % 4]


__all__ = ["ALIASES", "AXIS_LABEL", "DERIVED", "LOG_X", "column", "default_y", "is_torch",
           "legend_names", "plot_methods"]
