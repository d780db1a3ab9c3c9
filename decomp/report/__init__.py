"""Run folders read back, compared and drawn, for ``decomp compare`` and ``decomp plot``.

Imports neither MPI nor torch nor the engine: run folders copied to a laptop are read with
numpy, matplotlib (Agg canvas) and the standard library.

- :mod:`~decomp.report.runs`: :func:`find_runs` / :func:`load_run` -> :class:`Run` with
  :class:`MethodRun` (metrics rows, summary entry, config table).
- :mod:`~decomp.report.labels`: what tells runs apart (their settings), labels and titles.
- :mod:`~decomp.report.compare`: final metrics, steps / bits / time to a target, the best
  value of a swept setting per group; text, Markdown and CSV tables.
- :mod:`~decomp.report.plot`: :func:`plot_methods`, PNG / PDF / SVG figures.
"""

from decomp.report.compare import (
    Target,
    best_groups,
    best_rows,
    compare_rows,
    first_reach,
    format_markdown,
    format_rows,
    parse_target,
    to_csv,
)
from decomp.report.labels import labels, setting, title
from decomp.report.plot import plot_methods
from decomp.report.runs import (
    MethodRun,
    Run,
    RunFolderError,
    all_methods,
    find_runs,
    load_run,
    read_metrics,
    read_summary,
)

__all__ = ["MethodRun", "Run", "RunFolderError", "Target", "all_methods", "best_groups",
           "best_rows", "compare_rows", "find_runs", "first_reach", "format_markdown",
           "format_rows", "labels", "load_run", "parse_target", "plot_methods", "read_metrics",
           "read_summary", "setting", "title", "to_csv"]
