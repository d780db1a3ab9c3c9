"""``decomp sim``: every method of a config through the single-process reference
:mod:`decomp.sim` (no MPI), resolved by the same plan as ``decomp run``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from decomp.config import Config, dump_toml
from decomp.errors import DivergenceError
from decomp.runner.outputs import Outputs
from decomp.runner.plan import MethodPlan, check_sizes, mixing_for, plan_methods, resolve_lr
from decomp.runner.results import MethodResult
from decomp.runner.workload import Workload, prepare


def simulate_config(cfg: Config, n_workers: int, *, write: bool = False) -> list[MethodResult]:
    """Run every method with the single-process reference :mod:`decomp.sim` (no MPI).

    Same problems, step sizes, W, options and randomness as ``run`` with n_workers workers
    (nodes); metrics are computed at the final iterate (at x̄ for decentralized methods; for
    torch problems also the test loss / accuracy). write: also write ``config.toml``,
    ``metrics.jsonl`` (the final row of each method) and ``summary.json`` to
    ``<out_dir>/<name>/``, as ``decomp run`` does.
    """
    from decomp.sim import simulate

    plans = plan_methods(cfg)
    work = prepare(cfg, n_workers)
    check_sizes(plans, work.d)
    mixing = mixing_for(cfg, plans, n_workers)
    out = Outputs(Path(cfg.out_dir) / cfg.name, dump_toml(cfg), write)
    results = []
    try:
        for plan in plans:
            m, alg = plan.config, plan.algorithm
            lr = resolve_lr(m, alg, work.L, work.Ls, work.d)
            if work.torch is not None:
                work.torch.reset_buffers()
            if plan.decentralized:
                r = _simulate_decentralized(cfg, plan, lr, work, mixing)
            else:
                r = _simulate_master_worker(cfg, plan, lr, work, simulate)
            results.append(r)
            out.metrics({"method": r.method, "step": r.steps, "loss": r.loss,
                         "grad_norm_sq": r.grad_norm_sq, "bits_up": r.bits_up,
                         "bits_down": r.bits_down, "wall_s": r.wall_s})
            out.summary(results)
    finally:
        out.close()
    return results


def _simulate_master_worker(cfg: Config, plan: MethodPlan, lr: float, work: Workload,
                            simulate: Any) -> MethodResult:
    m, alg = plan.config, plan.algorithm
    n_workers = len(work.problems)
    t0 = time.perf_counter()
    comp = alg.compressor if alg.uses_compressor else None
    try:
        tr = simulate(m.algorithm, work.problems, work.x0, lr=lr, steps=cfg.run.steps,
                      seed=cfg.seed, compressor=comp, batch_size=m.batch_size, **plan.options)
        status, message, x = "ok", "", tr.xs[-1]
        bits_up = 8 * float(tr.bytes_up.mean())
    except (DivergenceError, FloatingPointError) as e:
        status, message, x, bits_up = "diverged", str(e), work.x0, float("nan")
    wall = time.perf_counter() - t0
    test = _reference_test(work, x)
    loss = float(np.mean([p.loss(x) for p in work.problems]))
    g = np.mean([np.array(p.grad(x), dtype=np.float64) for p in work.problems], axis=0)
    # Bcast bytes received, averaged over workers (a shared master receives nothing); the
    # dense methods (no compressor) all-reduce instead and count no downlink.
    receivers = n_workers - 1 if cfg.run.master == "shared" else n_workers
    down = (8.0 * work.d * work.x0.itemsize * cfg.run.steps * receivers / n_workers
            if alg.uses_compressor else 0.0)
    return MethodResult(m.label, m.algorithm, repr(comp) if comp else "-", lr, cfg.run.steps,
                        loss, float(g @ g), bits_up, down, wall, status, message,
                        test_loss=test.get("test_loss"), test_acc=test.get("test_acc"))


def _reference_test(work: Workload, X: np.ndarray) -> dict[str, Any]:
    """Test metrics of a reference iterate (x, or X with rows x_i) for torch problems; {}
    for the numpy problems. Run before the training metrics, whose full gradients touch the
    BatchNorm statistics."""
    if work.torch is None:
        return {}
    from decomp.torch.workload import reference_test_metrics

    return reference_test_metrics(work.torch, X, work.problems)


def _simulate_decentralized(cfg: Config, plan: MethodPlan, lr: float, work: Workload,
                            mixing: Any) -> MethodResult:
    """One decentralized method through :func:`decomp.sim.simulate_decentralized`."""
    from decomp.sim import simulate_decentralized

    m, alg = plan.config, plan.algorithm
    comp = alg.compressor if alg.uses_compressor else None
    t0 = time.perf_counter()
    steps, status, message = cfg.run.steps, "ok", ""
    try:
        tr = simulate_decentralized(
            m.algorithm, work.problems, work.x0, mixing, lr=lr, steps=cfg.run.steps,
            seed=cfg.seed, compressor=comp, batch_size=m.batch_size, **plan.options)
        X = tr.xs[-1]
        bits_up, bits_down = 8 * float(tr.bytes_sent.mean()), 8 * float(tr.bytes_received.mean())
    except (DivergenceError, FloatingPointError) as e:
        steps, status, message = getattr(e, "step", 0), "diverged", str(e)
        X = np.tile(work.x0, (len(work.problems), 1))
        bits_up = bits_down = float("nan")
    wall = time.perf_counter() - t0
    test = _reference_test(work, X)
    xbar = X.mean(axis=0)
    loss = float(np.mean([p.loss(xbar) for p in work.problems]))
    g = np.mean([np.array(p.grad(xbar), dtype=np.float64) for p in work.problems], axis=0)
    cd = float(((X - xbar) ** 2).sum(axis=1).mean())
    local = float(np.mean([p.loss(X[i]) for i, p in enumerate(work.problems)]))
    return MethodResult(m.label, m.algorithm, repr(comp) if comp else "-", lr, steps, loss,
                        float(g @ g), bits_up, bits_down, wall, status, message,
                        "decentralized", cd, local, test_loss=test.get("test_loss"),
                        test_acc=test.get("test_acc"), test_acc_mean=test.get("test_acc_mean"),
                        test_acc_min=test.get("test_acc_min"))
