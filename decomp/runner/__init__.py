"""The engine: a config (or the torch API's arguments) resolved once into parts, then one loop.

- :mod:`~decomp.runner.plan`: config -> methods (registry), world size, W; every check that
  needs no data.
- :mod:`~decomp.runner.workload`: the data all methods share (problems, L, L_i, x^0).
- :mod:`~decomp.runner.session`: one algorithm on this rank (transport, env, state, warm-up,
  the collective divergence protocol).
- :mod:`~decomp.runner.loop`: :func:`drive` (the step loop of both front ends) and :func:`run`.
- :mod:`~decomp.runner.metrics`, :mod:`~decomp.runner.outputs`, :mod:`~decomp.runner.results`:
  evaluation, the run folder, the summary table.
- :mod:`~decomp.runner.simulate`: the same plan through the reference :mod:`decomp.sim`.
"""

from decomp.runner.loop import drive, run, run_method
from decomp.runner.plan import (
    MethodPlan,
    build_mixing,
    check_sizes,
    check_world,
    plan_method,
    plan_methods,
    resolve_lr,
)
from decomp.runner.results import MethodResult, format_bits, format_table
from decomp.runner.session import Session, open_transport
from decomp.runner.simulate import simulate_config
from decomp.runner.workload import Workload, local_workers, prepare

__all__ = ["MethodPlan", "MethodResult", "Session", "Workload", "build_mixing", "check_sizes",
           "check_world", "drive", "format_bits", "format_table", "local_workers",
           "open_transport", "plan_method", "plan_methods", "prepare", "resolve_lr", "run",
           "run_method", "simulate_config"]
