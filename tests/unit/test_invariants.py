"""Invariants from the papers, for EVERY registered method (issue 25, item 1).

:data:`INVARIANTS` says, per registry name, which identities of its paper the method must
satisfy — or ``"none: <reason>"``. A newly registered method fails
:func:`test_every_registered_method_declares_its_invariants` until it has an entry. Each
invariant (_inv_mw.py, _inv_gossip.py) runs the real algorithm object on the in-memory thread
transports (decomp.comm.threads) and checks the identity at every step on every rank's state —
not only on the decomp.sim reference, so a bug written the same way in a class and its
reference (the twin bugs test_threads cannot see) is caught — then, where cheap, on the
reference too. The table is repeated in docs/testing.md.

Time-varying W: the reference AND the thread run equal the dense recurrence with W_t written
out here from the schedule's definition (not from decomp.topologies), for D-PSGD, and for
CHOCO-SGD, DeepSqueeze and DCD-PSGD with the identity compressor where they reduce to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _inv_gossip import CHECKS as GOSSIP
from _inv_harness import (
    LR,
    build,
    close,
    exponential_W,
    grads,
    hypercube_W,
    ref_states,
    run_dec,
    stack,
    tau,
)
from _inv_mw import CHECKS as MW

from decomp.algorithms import REGISTRY
from decomp.compress import Identity
from decomp.topologies import mixing_schedule

CHECKS: dict[str, Callable[[str], None]] = {**MW, **GOSSIP}

#: registry name -> the invariants it must satisfy (names in CHECKS), or "none: <reason>"
INVARIANTS: dict[str, tuple[str, ...] | str] = {
    "gd": ("replicated_model", "mean_gradient_step"),
    "sgd": ("replicated_model", "mean_gradient_step"),
    "sgdm": ("replicated_model", "heavy_ball"),
    "dcgd": ("replicated_model", "compressed_mean_step"),
    "ef": ("replicated_model", "ef_virtual_iterate"),
    "ef21": ("replicated_model", "g_is_mean", "markov_compressor"),
    "ef21_sgd": ("replicated_model", "g_is_mean", "markov_compressor"),
    "ef21_plus": ("replicated_model", "g_is_mean"),
    "ef21_sgdm": ("replicated_model", "g_is_mean", "markov_compressor"),
    "ef21_pp": ("replicated_model", "g_is_mean", "pp_participation", "markov_compressor"),
    "ef21_bc": ("replicated_model", "g_is_mean", "bc_downlink", "markov_compressor"),
    "powersgd": ("replicated_model", "low_rank_error_feedback"),
    "dpsgd": ("mean_step",),
    "dcd_psgd": ("replicas_agree", "dcd_difference"),
    "ecd_psgd": ("replicas_agree", "ecd_estimate"),
    "choco_sgd": ("mean_step", "replicas_agree", "mixing_sum_from_replicas"),
    "beer": ("replicas_agree", "mixing_sum_from_replicas", "beer_tracking"),
    "deepsqueeze": ("mean_step", "deepsqueeze_error"),
    "powergossip": ("mean_step", "low_rank_gossip"),
    "allreduce_sgd": ("identical_models", "mean_step"),
    "allreduce_qsgd": ("identical_models",),
}

CASES = [(name, inv) for name, invs in INVARIANTS.items() if not isinstance(invs, str)
         for inv in invs]


def test_every_registered_method_declares_its_invariants() -> None:
    missing = sorted(set(REGISTRY) - set(INVARIANTS))
    assert not missing, (f"registered without an entry in INVARIANTS: {missing} — name the "
                         "paper's identities it keeps (or 'none: <reason>')")
    assert not set(INVARIANTS) - set(REGISTRY), "entries for methods no longer registered"
    for name, invs in INVARIANTS.items():
        if isinstance(invs, str):
            assert invs.startswith("none: ") and len(invs) > 12, (name, invs)
        else:
            assert invs and set(invs) <= set(CHECKS), (name, set(invs) - set(CHECKS))
    assert {inv for _, inv in CASES} == set(CHECKS), "an invariant no method uses"


@pytest.mark.parametrize("name,invariant", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_invariant(name: str, invariant: str) -> None:
    CHECKS[invariant](name)


# ---- time-varying W: the dense recurrence with W_t from the schedule's definition -----------
def _dense(n: int, W_of: Callable[[int, int], np.ndarray], steps: int, problems: list[Any],
           x0: np.ndarray, alg: Any, form: str, shift: int = 0) -> np.ndarray:
    """(steps + 1, n, d): X^{t+1} = W_t X^t − γ G(X^t) ("dpsgd"), W_t (X^t − γ G(X^t))
    ("atc"), or DCD's delayed gossip with the identity compressor ("dcd": peer k's value as of
    their last meeting, X^{max(t − τ + 1, 0)}). W_{t + shift}: a shifted schedule for the
    manual check that the test sees it."""
    X = [np.tile(x0, (n, 1))]
    for t in range(steps):
        W, Xt = W_of(n, t + shift), X[-1]
        G = np.stack([grads(problems, Xt[i], t + 1, alg.batch_size)[i] for i in range(n)])
        if form == "dpsgd":
            X.append(W @ Xt - LR * G)
        elif form == "atc":
            X.append(W @ (Xt - LR * G))
        else:
            old = X[max(t - tau(n) + 1, 0)]
            off = W - np.diag(np.diag(W))
            X.append(np.diag(W)[:, None] * Xt + off @ old - LR * G)
    return np.stack(X)


SCHEDULE_CASES = [
    ("dpsgd", {}, None, "one-peer-hypercube", "dpsgd", 4),
    ("dpsgd", {}, None, "one-peer-hypercube", "dpsgd", 8),
    ("dpsgd", {}, None, "one-peer-exponential", "dpsgd", 4),
    ("dpsgd", {}, None, "one-peer-exponential", "dpsgd", 6),
    ("choco_sgd", {"consensus_step": 1.0}, Identity(), "one-peer-hypercube", "atc", 4),
    ("deepsqueeze", {"consensus_step": 1.0}, Identity(), "one-peer-hypercube", "atc", 4),
    ("dcd_psgd", {}, Identity(), "one-peer-hypercube", "dcd", 4),
    ("powergossip", {}, None, "one-peer-hypercube", "dpsgd", 4),  # one flat slot: dense
]


@pytest.mark.parametrize("name,opts,C,kind,form,n", SCHEDULE_CASES,
                         ids=[f"{c[0]}-{c[3]}-{c[5]}" for c in SCHEDULE_CASES])
def test_schedule_is_the_dense_recurrence(name: str, opts: dict[str, Any], C: Any, kind: str,
                                          form: str, n: int, shift: int = 0) -> None:
    """The reference and the thread run of ``name`` on the schedule ``kind`` both equal the
    dense recurrence with W_t built here (6 steps: every W_t of a period is used)."""
    alg = build(name, C, **opts)
    W_of = hypercube_W if kind == "one-peer-hypercube" else exponential_W
    sched = mixing_schedule(kind, n)
    steps = 2 * tau(n) + 1
    problems, x0, snaps = run_dec(alg, sched, n, steps)
    want = _dense(n, W_of, steps, problems, x0, alg, form, shift)
    ref = ref_states(alg, problems, x0, steps, sched)[-1].xs
    for t in range(steps + 1):
        close(ref[t], want[t], f"{name} reference step {t}", ulps=256)
        close(stack(snaps, "x", t), want[t], f"{name} threads step {t}", ulps=256)
