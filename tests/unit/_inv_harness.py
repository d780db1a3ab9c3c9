"""Shared by the invariant tests (test_invariants.py): run a real algorithm object on the
in-memory thread transports and keep every rank's whole state after init and after each step,
so an invariant from a paper can be checked on what the code computed (not only on its
reference, where a bug written the same way would hide). Also: the mixing matrices of the
one-peer schedules written out from their papers' definitions (not from decomp.topologies)."""

from __future__ import annotations

from typing import Any

import numpy as np
from _methods import build_any, required_options

from decomp.algorithms import REGISTRY, Env
from decomp.comm.threads import Board, ThreadMasterWorker, ThreadNeighborhood, run_ranks
from decomp.compress import Compressor
from decomp.data import load_dataset
from decomp.problems import Problem, initial_point, oracle_grad, split_problem
from decomp.sim import reference

SEED = 11
D = 9
LR = 0.1

#: one rank's states: [state after init, after step 1, ...], each {field: copy}
Snaps = list[dict[str, Any]]


def problem(n: int, d: int = D) -> tuple[list[Problem], np.ndarray]:
    ds = load_dataset("synthetic", n_samples=30 * n, n_features=d, seed=d + n)
    return split_problem(ds, "logistic", n), initial_point("normal", d, seed=d)


def build(name: str, compressor: Compressor | None = None, **options: Any) -> Any:
    """The registered method ``name`` as tests/unit/_methods.py builds any method (its
    default compressor, Top-2, else QSGD-8; the required options; τ = 4 where it needs a
    batch), with ``compressor`` (ignored by a dense method) and ``options`` given here."""
    spec = REGISTRY[name]
    if not spec.uses_compressor:
        compressor = None  # a dense method takes none
    if compressor is None and not options:
        return build_any(spec, D, 4)
    if compressor is None and spec.uses_compressor:
        compressor = build_any(spec, D, 4).compressor
    return spec.build(compressor=compressor, batch_size=4 if spec.needs_batch else None,
                      options={**required_options(spec), **options})


def snap(state: Any) -> dict[str, Any]:
    out = {f: (v.copy() if isinstance(v, np.ndarray) else v)
           for f, v in zip(state._fields, state, strict=True)}
    out["_type"] = type(state).__name__
    return out


def _drive(alg: Any, env: Env, x0: np.ndarray, steps: int) -> Snaps:
    st = alg.init(env, x0)
    out = [snap(st)]
    for _ in range(steps):
        st = alg.step(env, st)
        out.append(snap(st))
    return out


def run_mw(alg: Any, n: int, steps: int, *, lr: float = LR, d: int = D, master: str = "shared",
           layout: Any = None) -> tuple[list[Problem], np.ndarray, list[tuple[int | None, Snaps]]]:
    """(problems, x0, [(worker index or None, snapshots) per rank]); layout: the model's
    tensors given to the Env (None: one flat slot)."""
    problems, x0 = problem(n, d)
    size = n + (master == "dedicated")
    board = Board(size)

    def rank(r: int) -> tuple[int | None, Snaps]:
        tp = ThreadMasterWorker(r, board, master)
        prob = problems[tp.worker] if tp.worker is not None else None
        return tp.worker, _drive(alg, Env(tp, prob, n, SEED, lr, layout=layout), x0, steps)

    return problems, x0, run_ranks(board, rank)


def run_dec(alg: Any, W: Any, n: int, steps: int, *, lr: float = LR,
            d: int = D, layout: Any = None) -> tuple[list[Problem], np.ndarray, list[Snaps]]:
    """(problems, x0, snapshots of node i for i = 0..n−1); layout: the model's tensors given
    to the Env (None: one flat slot)."""
    problems, x0 = problem(n, d)
    board = Board(n)
    return problems, x0, run_ranks(board, lambda i: _drive(
        alg, Env(ThreadNeighborhood(W, i, board), problems[i], n, SEED, lr, layout=layout),
        x0, steps))


def ref_states(alg: Any, problems: list[Problem], x0: np.ndarray, steps: int, W: Any = None,
               lr: float = LR) -> list[Any]:
    """The reference's trace after s = 0..steps steps (one run per s: the reference keeps
    only its final state; the problems are tiny)."""
    return [reference(alg, problems, x0, W, lr=lr, steps=s, seed=SEED) for s in range(steps + 1)]


def grads(problems: list[Problem], X: np.ndarray, step: int, batch_size: int | None) -> np.ndarray:
    """(n, d): ∇F_i(X[i]; ξ_i^step) straight from the oracle (X (d,) is used for every i)."""
    X = np.broadcast_to(X, (len(problems), X.shape[-1]))
    return np.stack([oracle_grad(p, X[i], seed=SEED, worker=i, step=step,
                                 batch_size=batch_size) for i, p in enumerate(problems)])


def close(a: np.ndarray, b: np.ndarray, what: str, ulps: float = 64) -> None:
    """a == b to a few ulp of the magnitudes involved (sums in another order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)), float(np.max(np.abs(a), initial=0.0)))
    tol = ulps * np.finfo(np.float64).eps * scale
    err = float(np.max(np.abs(a - b), initial=0.0))
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {tol:.3g}"


# ---- the one-peer schedules, from their definitions (Ying et al. 2021; hypercube variant) ---
def tau(n: int) -> int:
    return int(np.ceil(np.log2(n)))


def hypercube_W(n: int, t: int) -> np.ndarray:
    """W_t[i, i] = W_t[i, i XOR 2^(t mod τ)] = 1/2 (n a power of two)."""
    s = 2 ** (t % tau(n))
    W = np.zeros((n, n))
    for i in range(n):
        W[i, i] += 0.5
        W[i, i ^ s] += 0.5
    return W


def exponential_W(n: int, t: int) -> np.ndarray:
    """W_t[i, i] = W_t[i, (i + 2^(t mod τ)) mod n] = 1/2, τ = ⌈log2 n⌉ (directed)."""
    s = 2 ** (t % tau(n))
    W = np.zeros((n, n))
    for i in range(n):
        W[i, i] += 0.5
        W[i, (i + s) % n] += 0.5
    return W


def stack(snaps: list[Snaps], field: str, t: int) -> np.ndarray:
    """(n, ...): ``field`` of every node at snapshot t."""
    return np.stack([s[t][field] for s in snaps])
