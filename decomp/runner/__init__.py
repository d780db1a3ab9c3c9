"""The engine: a config (or the torch API's arguments) resolved once into parts, then one loop.
No torch import and no torch branch here: a problem kind's data is a
:class:`~decomp.runner.workload.Workload`.

- :mod:`~decomp.runner.plan`: config -> methods (registry), world size, W; every check that
  needs no data; :func:`resolved_config`, the config a run records.
- :mod:`~decomp.runner.workload`: the :class:`Workload` protocol (the data all methods share:
  problems, L, L_i, x^0, and what a model carries besides x), the numpy one, the loaders.
- :mod:`~decomp.runner.build`: :func:`build_session`, the set-up of every front end.
- :mod:`~decomp.runner.session`: one algorithm on this rank (transport, env, state, warm-up,
  the collective divergence protocol).
- :mod:`~decomp.runner.drive`, :mod:`~decomp.runner.method`, :mod:`~decomp.runner.loop`:
  :func:`drive` (the step loop of both front ends), :func:`run_method`, :func:`run`.
- :mod:`~decomp.runner.metrics`, :mod:`~decomp.runner.outputs`, :mod:`~decomp.runner.results`:
  evaluation, the run folder, the summary table.
- :mod:`~decomp.runner.simulate`: the same plan through the reference :mod:`decomp.sim`.
"""

from decomp.runner.build import build_session
from decomp.runner.loop import drive, run, run_method
from decomp.runner.plan import (
    MethodPlan,
    build_mixing,
    check_sizes,
    check_world,
    plan_method,
    plan_methods,
    resolve_lr,
    resolved_config,
)
from decomp.runner.results import MethodResult, format_bits, format_table
from decomp.runner.session import Session, open_transport
from decomp.runner.simulate import simulate_config
from decomp.runner.workload import Workload, local_workers, prepare

__all__ = ["MethodPlan", "MethodResult", "Session", "Workload", "build_mixing", "build_session",
           "check_sizes", "check_world", "drive", "format_bits", "format_table",
           "local_workers", "open_transport", "plan_method", "plan_methods", "prepare",
           "resolve_lr", "resolved_config", "run", "run_method", "simulate_config"]
