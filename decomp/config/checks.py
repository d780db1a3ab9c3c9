"""Value checks of a built :class:`decomp.config.Config`, run by ``load_config`` before any
data is loaded or any rank communicates.

``decomp.config`` checks the shape of a config (known keys, TOML types, required keys, the
kind-dependent ``[problem]`` keys); this module checks the values: ranges (``lr > 0``, finite
floats, ``loss_blowup > 1``, ``seed >= 0``, sizes >= 1), names (``run.master``,
``problem.scale``, ``problem.shard``, ``problem.dtype``), and the files a config points at
that can be checked without the data (``data_dir`` is a directory; a ``run.x0`` ``.npy`` file
is readable and holds a finite real vector). Every error is a :class:`ConfigError` that names
the key, the value and the fix.

:func:`resolve_schedule` checks ``[topology] schedule`` against the raw table (the keys a
user gave) and resolves ``kind`` to the schedule's name.

Kept apart from ``decomp.config`` (which calls :func:`check_config`) so neither grows past
the module size limit; it never imports ``decomp.config``.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from decomp.errors import ConfigError

#: what run.x0 may be besides a .npy path
X0_KINDS = ("zeros", "normal", "model")
#: lr strings the runner resolves (decomp.runner.plan.resolve_lr)
LR_NAMES = ("theory", "1/L")


def check_config(cfg: Any) -> None:
    """Refuse out-of-range values of a built config (a :class:`decomp.config.Config` whose
    ``[problem]`` defaults are resolved); raise :class:`ConfigError` naming the key and fix."""
    if cfg.seed < 0:
        raise ConfigError(f"seed must be an integer >= 0 (it seeds every random stream), got "
                          f"{cfg.seed}")
    if cfg.data_dir is not None:
        check_data_dir(cfg.data_dir)
    if cfg.problem.kind != "torch":
        _check_numpy_problem(cfg.problem)
    _check_run(cfg.run)
    for i, m in enumerate(cfg.methods):
        _check_method(i, m)
    _check_overlap(cfg)


def _check_overlap(cfg: Any) -> None:
    """``run.overlap`` / ``run.bucket_cap_mb``: a torch model, a shared master, methods that
    can overlap (the per-tensor compressor and the aggregation are checked at the method's
    start, by :func:`decomp.torch.overlap.attach`, with the same error on every rank)."""
    run = cfg.run
    if not isinstance(run.overlap, bool):
        raise ConfigError(f"run.overlap must be true or false, got {run.overlap!r}")
    cap = run.bucket_cap_mb
    if cap is not None and not run.overlap:
        raise ConfigError("run.bucket_cap_mb sizes the buckets of run.overlap = true: set "
                          "overlap = true too (or drop bucket_cap_mb)")
    if cap is not None and not (_finite(cap) and cap > 0):
        raise ConfigError(f"run.bucket_cap_mb must be a positive number of MiB (DDP's default "
                          f"is 25; unset scales it to the model), got {cap!r}")
    if not run.overlap:
        return
    if cfg.problem.kind != "torch":
        raise ConfigError("run.overlap = true overlaps communication with a torch model's "
                          "backward; this problem is a numpy one (no backward): drop overlap")
    if run.master != "shared":
        raise ConfigError("run.overlap = true needs every rank to be a worker: master = "
                          "'shared' (a dedicated master has no backward), or drop overlap")
    from decomp.algorithms import DCGD, EF21, GD, SGDM, AllreduceSGD, PowerSGD
    from decomp.algorithms.registry import REGISTRY

    classes = (GD, SGDM, AllreduceSGD, EF21, DCGD, PowerSGD)  # decomp.torch.overlap's
    for i, m in enumerate(cfg.methods):
        spec = REGISTRY.get(m.algorithm)
        if spec is not None and spec.cls not in classes:
            names = ", ".join(sorted(n for n, sp in REGISTRY.items() if sp.cls in classes))
            raise ConfigError(
                f"methods.{i} ({m.label}): run.overlap = true cannot overlap {m.algorithm!r} "
                f"(its step needs the whole gradient, or a decentralized exchange the whole "
                f"model after the step); overlap works with {names} (the compressed ones with "
                "a per_tensor compressor): drop overlap for this config or run that method "
                "in a config of its own")


def check_data_dir(path: str) -> None:
    """``data_dir`` (``--data-dir``) must be an existing directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"data_dir {path!r} does not exist: point data_dir (or --data-dir) at "
                          "the directory that holds the dataset files")
    if not p.is_dir():
        raise ConfigError(f"data_dir {path!r} is a file, not a directory: give the directory "
                          "that holds the dataset files")


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _check_numpy_problem(p: Any) -> None:
    from decomp.data.tabular import PARTITIONS, SCALINGS

    if not (_finite(p.lam) and p.lam >= 0):
        raise ConfigError(f"problem.lam must be a finite number >= 0 (the weight of the "
                          f"non-convex regulariser), got {p.lam}")
    for key in ("n_samples", "n_features"):
        if getattr(p, key) < 1:
            raise ConfigError(f"problem.{key} must be >= 1 (size of the synthetic dataset), "
                              f"got {getattr(p, key)}")
    if p.scale not in SCALINGS:
        raise ConfigError(f"problem.scale must be one of {', '.join(SCALINGS)}, got "
                          f"{p.scale!r}")
    if p.shard not in PARTITIONS:
        raise ConfigError(f"problem.shard must be one of {', '.join(PARTITIONS)} for the numpy "
                          f"problems, got {p.shard!r}")
    if p.dtype not in ("float64", "float32"):
        raise ConfigError(f"problem.dtype must be float64 or float32, got {p.dtype!r}")


def _check_run(run: Any) -> None:
    from decomp.comm.masterworker import MASTER_MODES

    if run.steps < 0:
        raise ConfigError(f"run.steps must be >= 0, got {run.steps}")
    if run.log_every < 1:
        raise ConfigError(f"run.log_every must be >= 1 (steps between metrics), got "
                          f"{run.log_every}")
    from decomp.config.lrschedule import parse_lr_schedule

    parse_lr_schedule(run.lr_schedule, run.steps)
    if run.master not in MASTER_MODES:
        raise ConfigError(f"run.master must be one of {', '.join(MASTER_MODES)}, got "
                          f"{run.master!r}")
    from decomp.comm.tree import resolve_aggregation

    resolve_aggregation(run.master, run.aggregation)  # a known name; tree with a shared master
    if run.workers is not None and run.workers < 1:
        raise ConfigError(f"run.workers must be >= 1 (or left out), got {run.workers}")
    if not run.loss_blowup > 1:  # also refuses NaN; inf: never stop on a loss blow-up
        raise ConfigError(f"run.loss_blowup must be > 1 (stop when the loss exceeds this "
                          f"factor times its start; default 1e6), got {run.loss_blowup}")
    if run.fail_rank is not None and run.fail_rank < 0:
        raise ConfigError(f"run.fail_rank must be a rank >= 0, got {run.fail_rank}")
    if run.fail_step is not None and run.fail_step < 1:
        raise ConfigError(f"run.fail_step must be a step >= 1, got {run.fail_step}")
    if run.x0 is not None:
        check_x0_spec(run.x0)


def check_x0_spec(spec: str) -> None:
    """``run.x0``: zeros | normal | model | a readable .npy file of a finite real vector (its
    length is checked against the model once the data is loaded)."""
    if spec in X0_KINDS:
        return
    if not spec.endswith(".npy"):
        raise ConfigError(f"run.x0 must be one of {', '.join(X0_KINDS)} or the path of a .npy "
                          f"file, got {spec!r}")
    from decomp.problems import read_x0

    read_x0(spec)


def _check_method(i: int, m: Any) -> None:
    where = f"methods.{i} ({m.label})"
    if isinstance(m.lr, str):
        if m.lr not in LR_NAMES:
            raise ConfigError(f"{where}: lr must be a number > 0, 'theory' or '1/L', got "
                              f"{m.lr!r}")
    elif not (_finite(m.lr) and m.lr > 0):
        raise ConfigError(f"{where}: lr must be a finite number > 0 (or 'theory' / '1/L'), "
                          f"got {m.lr}")
    if not (_finite(m.lr_multiplier) and m.lr_multiplier > 0):
        raise ConfigError(f"{where}: lr_multiplier must be a finite number > 0 (a factor on "
                          f"lr, e.g. 2**m in a sweep), got {m.lr_multiplier}")
    if m.batch_size is not None and m.batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be >= 1 (or left out for full "
                          f"gradients), got {m.batch_size}")


#: values of ``[topology] schedule``
SCHEDULES = ("one-peer-exponential", "one-peer-hypercube")


def resolve_schedule(cfg: Any, table: Any) -> None:
    """``[topology] schedule``: a known name, without kind / weights / options in the raw
    ``[topology]`` table ``table`` (the schedule defines W_t, weights 1/2 included); sets the
    resolved ``kind`` to the schedule's name, so ``config.toml`` says what ran and reads back
    the same (``to_dict`` leaves weights and options out)."""
    t = cfg.topology
    if t.schedule is None:
        return
    if t.schedule not in SCHEDULES:
        close = difflib.get_close_matches(t.schedule, SCHEDULES, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"topology.schedule must be one of {', '.join(SCHEDULES)}, got "
                          f"{t.schedule!r}{hint}")
    given = table if isinstance(table, dict) else {}
    for key in ("kind", "weights", "options"):
        if key in given and not (key == "kind" and given[key] == t.schedule):
            raise ConfigError(
                f"topology.{key} does not apply with topology.schedule = {t.schedule!r}: the "
                f"schedule sets W_t itself (W_t[i,i] = W_t[i,peer] = 1/2); leave "
                f"topology.{key} out, or drop schedule for a static W")
    t.kind = t.schedule
