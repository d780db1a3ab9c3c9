"""Metrics of a run, collective and off the clock: f, ‖∇f‖², bits (master–worker: at x;
decentralized: at x̄ = (1/n) Σ_i x_i, plus the consensus distance). Test-set metrics come from
the workload (:meth:`decomp.runner.workload.Workload.test_evaluator`)."""

from __future__ import annotations

import numpy as np

from decomp.comm import MasterWorker, Neighborhood
from decomp.problems import Problem


def evaluate(tp: MasterWorker, problem: Problem | None, x: np.ndarray, n: int) -> dict[str, float]:
    """f(x) = (1/n) Σ f_i(x) and ‖∇f(x)‖², plus mean bits per worker; off the clock."""
    buf = np.zeros(x.size + 3, dtype=np.float64)
    if problem is not None:
        buf[0] = problem.loss(x)
        buf[1:-2] = problem.grad(x)
        buf[-2] = tp.bytes.up
        buf[-1] = tp.bytes.down
    tp.allreduce_uncounted(buf)
    buf /= n
    grad = buf[1:-2]
    return {"loss": float(buf[0]), "grad_norm_sq": float(grad @ grad),
            "bits_up": float(8 * buf[-2]), "bits_down": float(8 * buf[-1])}


def evaluate_nodes(tp: Neighborhood, problem: Problem, x: np.ndarray, n: int) -> dict[str, float]:
    """Decentralized metrics, off the clock and uncounted (two all-reduces).

    x̄ = (1/n) Σ_i x_i; loss f(x̄) and ‖∇f(x̄)‖²; consensus distance (1/n) Σ_i ‖x_i − x̄‖²;
    loss_local = (1/n) Σ_i f_i(x_i) (each node's own model on its own data); mean bits sent
    (bits_up) and received (bits_down) per rank.
    """
    d = x.size
    xbar = x.copy()
    tp.allreduce_uncounted(xbar)
    xbar /= n
    buf = np.zeros(d + 5, dtype=np.float64)
    with np.errstate(all="ignore"):
        buf[0] = problem.loss(xbar)
        buf[1:d + 1] = problem.grad(xbar)
        dev = (x - xbar).astype(np.float64)
        buf[d + 1] = dev @ dev
        buf[d + 2] = problem.loss(x)
    buf[d + 3] = tp.bytes.up
    buf[d + 4] = tp.bytes.down
    tp.allreduce_uncounted(buf)
    with np.errstate(all="ignore"):
        buf /= n
        grad = buf[1:d + 1]
        gsq = float(grad @ grad)
    return {"loss": float(buf[0]), "grad_norm_sq": gsq,
            "consensus_distance": float(buf[d + 1]), "loss_local": float(buf[d + 2]),
            "bits_up": float(8 * buf[d + 3]), "bits_down": float(8 * buf[d + 4])}
