"""Master–worker invariants (test_invariants.py runs them by name from its table): each runs
the real algorithm object on the thread transports and checks the paper's identity at every
step, then (where cheap) the same identity on the decomp.sim reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from _inv_harness import LR, SEED, build, close, grads, ref_states, run_mw

from decomp.algorithms.env import stream_key
from decomp.compress import Identity, TopK
from decomp.participation import participants

STEPS = 5


def _workers(ranks: list[tuple[int | None, Any]]) -> dict[int, Any]:
    return {w: s for w, s in ranks if w is not None}


def replicated_model(name: str) -> None:
    """Every rank holds the same x^t, bit for bit, after init and every step (a dedicated
    master too)."""
    alg = build(name)
    for master in ("shared", "dedicated"):
        _, _, ranks = run_mw(alg, 3, STEPS, master=master)
        for t in range(STEPS + 1):
            xs = [s[t]["x"] for _, s in ranks]
            for x in xs[1:]:
                np.testing.assert_array_equal(x, xs[0], err_msg=f"{name} {master} step {t}")
        assert not np.array_equal(ranks[0][1][0]["x"], ranks[0][1][-1]["x"])  # it moved


def _aggregate_field(name: str) -> str:
    return "g_tilde" if name == "ef21_bc" else "g"


def g_is_mean(name: str) -> None:
    """EF21 family: g^t = (1/n) Σ_i g_i^t after init and every step, on every rank that keeps
    g (EF21-BC: the master's g̃ = (1/n) Σ_i g̃_i); EF21+: the master's G[i] is worker i's g_i
    bit for bit. Both downlinks where the method has the option, a shared and a dedicated
    master. Then the same on the reference (its G and g after s steps)."""
    from decomp.algorithms import REGISTRY

    n = 4
    agg = _aggregate_field(name)
    downlinks = ("compressed", "model") if "downlink" in REGISTRY[name].options else (None,)
    for downlink in downlinks:
        alg = build(name, **({"downlink": downlink} if downlink else {}))
        for master in ("shared", "dedicated"):
            problems, x0, ranks = run_mw(alg, n, STEPS, master=master)
            workers = _workers(ranks)
            for t in range(STEPS + 1):
                G = np.stack([workers[i][t]["g_local"] for i in range(n)])
                holders = [s[t][agg] for _, s in ranks if s[t].get(agg) is not None]
                assert holders, f"{name}: nobody holds {agg}"
                for g in holders:
                    close(g, G.mean(axis=0), f"{name} {downlink} {master} step {t}: {agg}")
                if ranks[0][1][t].get("G") is not None:
                    np.testing.assert_array_equal(ranks[0][1][t]["G"], G)
    for s, tr in enumerate(ref_states(alg, problems, x0, STEPS)):
        close(tr.state[agg], tr.state["G"].mean(axis=0), f"{name} reference after {s} steps")


def pp_participation(name: str) -> None:
    """EF21-PP (Algorithm 4): a worker outside S_t keeps g_i unchanged over the step, and
    g^{t+1} − g^t = (1/n) Σ_{i ∈ S_t} (g_i^{t+1} − g_i^t) — the mean over all n, no 1/p — with
    S_t drawn independently from decomp.participation. Both samplings; the reference too."""
    n, p = 4, 0.5
    for sampling in ("bernoulli", "fixed"):
        alg = build(name, p=p, sampling=sampling)
        problems, x0, ranks = run_mw(alg, n, STEPS)
        workers = _workers(ranks)
        partial = 0
        for t in range(1, STEPS + 1):
            S = participants(SEED, t, n, p, sampling)
            partial += 0 < S.sum() < n
            before = np.stack([workers[i][t - 1]["g_local"] for i in range(n)])
            after = np.stack([workers[i][t]["g_local"] for i in range(n)])
            for i in np.flatnonzero(~S):
                np.testing.assert_array_equal(after[i], before[i],
                                              err_msg=f"{sampling} step {t}: worker {i} ∉ S_t")
            moved = (after[S] - before[S]).sum(axis=0) / n
            close(ranks[0][1][t]["g"] - ranks[0][1][t - 1]["g"], moved,
                  f"{sampling} step {t}: g's update vs the participants' mean")
        assert partial, f"{sampling}: no step with a proper subset: the test proves nothing"
        trs = ref_states(alg, problems, x0, STEPS)
        for t in range(1, STEPS + 1):
            S = participants(SEED, t, n, p, sampling)
            np.testing.assert_array_equal(trs[t].state["S"][t], S)
            prev, cur = trs[t - 1].state["G"], trs[t].state["G"]
            np.testing.assert_array_equal(cur[~S], prev[~S])
            close(trs[t].state["g"] - trs[t - 1].state["g"], (cur[S] - prev[S]).sum(axis=0) / n,
                  f"reference {sampling} step {t}")


def bc_downlink(name: str) -> None:
    """EF21-BC (Algorithm 5) with γ = 0, identity uplink (so g̃ is constant) and a Top-k
    downlink: each step moves the workers' g on at most k coordinates — those of the k largest
    |g̃ − g| — to g̃'s values exactly, so g reaches the master's g̃ exactly after ⌈d/k⌉ rounds
    (init included) and not before (a downlink compressing g̃ instead of g̃ − g never does).
    On the reference too."""
    k, d, n = 2, 9, 3
    rounds = math.ceil(d / k)
    steps = rounds + 1
    alg = build(name, compressor=Identity(), downlink_compressor=TopK(k))
    problems, x0, ranks = run_mw(alg, n, steps, lr=0.0, d=d)
    master = ranks[0][1]
    gt = master[0]["g_tilde"]
    assert np.all(gt != 0), "a zero coordinate of g̃ would blur the count"
    for t in range(steps + 1):
        np.testing.assert_array_equal(master[t]["g_tilde"], gt)
        for _, s in ranks:
            np.testing.assert_array_equal(s[t]["g"], master[t]["g"])
        g = master[t]["g"]
        prev = np.zeros(d) if t == 0 else master[t - 1]["g"]
        changed = np.flatnonzero(g != prev)
        top = set(np.argsort(-np.abs(gt - prev), kind="stable")[:k].tolist())
        assert len(changed) <= k and set(changed.tolist()) <= top, (t, changed, top)
        np.testing.assert_array_equal(g[changed], gt[changed])
        assert np.array_equal(g, gt) == (t >= rounds - 1), f"step {t}: g == g̃ at round {t + 1}"
    trs = ref_states(alg, problems, x0, steps, lr=0.0)
    for t, tr in enumerate(trs):
        assert np.array_equal(tr.state["g"], tr.state["g_tilde"]) == (t >= rounds - 1), t


def ef_virtual_iterate(name: str) -> None:
    """Classic EF (Stich et al. 2018): x̃^t = x^t − (1/n) Σ_i e_i^t takes the plain gradient
    step, x̃^{t+1} = x̃^t − γ (1/n) Σ_i ∇f_i(x^t); on the reference too."""
    alg = build(name)
    n = 3
    problems, x0, ranks = run_mw(alg, n, STEPS)
    workers = _workers(ranks)
    xt = [ranks[0][1][t]["x"] - np.mean([workers[i][t]["e"] for i in range(n)], axis=0)
          for t in range(STEPS + 1)]
    for t in range(STEPS):
        step = LR * grads(problems, ranks[0][1][t]["x"], t + 1, None).mean(axis=0)
        close(xt[t + 1], xt[t] - step, f"{name} step {t + 1}")
    trs = ref_states(alg, problems, x0, STEPS)
    for t in range(1, STEPS + 1):
        e_prev = trs[t - 1].state.get("E", np.zeros((n, x0.size)))
        x_prev, x = trs[t].xs[t - 1], trs[t].xs[t]
        close(x - trs[t].state["E"].mean(axis=0),
              x_prev - e_prev.mean(axis=0) - LR * grads(problems, x_prev, t, None).mean(axis=0),
              f"reference step {t}")


def heavy_ball(name: str) -> None:
    """SGDM (heavy ball): m^{t+1} = β m^t + (1/n) Σ_i ∇F_i(x^t; ξ_i^{t+1}) and
    x^t − x^{t+1} = γ m^{t+1}, gradients from the oracle; on the reference too."""
    alg = build(name, momentum=0.7)
    problems, x0, ranks = run_mw(alg, 3, STEPS)
    s = ranks[0][1]
    trs = ref_states(alg, problems, x0, STEPS)
    for t in range(STEPS):
        gbar = grads(problems, s[t]["x"], t + 1, alg.batch_size).mean(axis=0)
        close(s[t + 1]["m"], 0.7 * s[t]["m"] + gbar, f"m at step {t + 1}")
        close(s[t]["x"] - s[t + 1]["x"], LR * s[t + 1]["m"], f"x at step {t + 1}")
        close(trs[t + 1].xs[t] - trs[t + 1].xs[t + 1], LR * trs[t + 1].state["m"],
              f"reference step {t + 1}")


def mean_gradient_step(name: str) -> None:
    """GD / SGD: x^{t+1} = x^t − γ (1/n) Σ_i ∇F_i(x^t; ξ_i^{t+1}), gradients from the oracle."""
    alg = build(name)
    problems, _, ranks = run_mw(alg, 3, STEPS)
    s = ranks[0][1]
    for t in range(STEPS):
        g = grads(problems, s[t]["x"], t + 1, alg.batch_size).mean(axis=0)
        close(s[t + 1]["x"], s[t]["x"] - LR * g, f"{name} step {t + 1}")


def markov_compressor(name: str) -> None:
    """The EF21 mechanism on every worker: g_i^{t+1} = g_i^t + C(u_i − g_i^t) with u_i =
    ∇F_i(x^{t+1}; ξ_i^{t+1}) (EF21-SGDM: u_i = v_i^{t+1} = (1 − η) v_i^t + η ∇F_i(x^{t+1});
    EF21-PP: for i ∈ S_t only), C the compressor's plain reference with worker i's key."""
    alg = build(name)
    n = 3
    problems, _, ranks = run_mw(alg, n, STEPS)
    workers = _workers(ranks)
    C = alg.compressor
    for t in range(1, STEPS + 1):
        x = ranks[0][1][t]["x"]  # x^{t+1} of the paper: the step descends first
        G = grads(problems, x, t, alg.batch_size)
        S = participants(SEED, t, n, alg.p, alg.sampling) if name == "ef21_pp" else \
            np.ones(n, dtype=bool)
        for i in range(n):
            before, after = workers[i][t - 1], workers[i][t]
            u = G[i]
            if name == "ef21_sgdm":
                u = (1.0 - alg.eta) * before["v"] + alg.eta * G[i]
                close(after["v"], u, f"v_{i} step {t}")
            if not S[i]:
                continue
            want = before["g_local"] + C.reference(u - before["g_local"],
                                                   stream_key(SEED, i, n, t))
            close(after["g_local"], want, f"{name} g_{i} step {t}")


def compressed_mean_step(name: str) -> None:
    """DCGD: x^{t+1} = x^t − γ (1/n) Σ_i C(∇f_i(x^t)), C the compressor's plain reference with
    worker i's key (not the runtime's encode/decode)."""
    alg = build(name)
    n = 3
    problems, _, ranks = run_mw(alg, n, STEPS)
    s = ranks[0][1]
    for t in range(STEPS):
        G = grads(problems, s[t]["x"], t + 1, alg.batch_size)
        V = np.stack([alg.compressor.reference(G[i], stream_key(SEED, i, n, t + 1))
                      for i in range(n)])
        close(s[t + 1]["x"], s[t]["x"] - LR * V.mean(axis=0), f"{name} step {t + 1}")


def low_rank_error_feedback(name: str) -> None:
    """PowerSGD (Vogels et al. 2019, Alg. 1–2) on a model of a 3×2 matrix and a 3-vector: on
    every worker and step, with M_i = ∇f_i(x^t) + e_i^t and U = (x^t − x^{t+1})/γ, the
    matrix's update M̂ has rank ≤ r and is the projection of M̄ = (1/n) Σ_i M_i on its own
    column space (M̂ = P̂ P̂ᵀ M̄), e_i^{t+1} = M_i − M̂ there; the vector takes the mean gradient
    and keeps no error. Shared and dedicated master (whose e stays 0)."""
    from decomp.layout import Layout

    layout = Layout.from_shapes([("w", (3, 2)), ("b", (3,))])
    alg = build(name, rank=1, min_compression_rate=1.0)
    assert len(alg.plan(layout, 9).blocks) == 1
    n = 3
    for master in ("shared", "dedicated"):
        problems, _, ranks = run_mw(alg, n, STEPS, master=master, layout=layout)
        workers = _workers(ranks)
        for t in range(STEPS):
            x, x1 = ranks[0][1][t]["x"], ranks[0][1][t + 1]["x"]
            U = (x - x1) / LR
            G = grads(problems, x, t + 1, alg.batch_size)
            M = G + np.stack([workers[i][t]["e"] for i in range(n)])
            Mhat = U[:6].reshape(3, 2)
            u, sv, _ = np.linalg.svd(Mhat)
            assert sv[1] <= 1e-12 * max(sv[0], 1.0), f"rank of M̂ at step {t + 1}: {sv}"
            Pi = np.outer(u[:, 0], u[:, 0])
            close(Pi @ M.mean(axis=0)[:6].reshape(3, 2), Mhat, f"M̂ = P̂P̂ᵀM̄ step {t + 1}",
                  ulps=1e4)  # U comes back from x's rounding: a few ulp of x, over γ
            close(U[6:], G.mean(axis=0)[6:], f"dense mean step {t + 1}", ulps=1e4)
            for i in range(n):
                e1 = workers[i][t + 1]["e"]
                close(e1[:6], M[i, :6] - U[:6], f"e_{i} step {t + 1}", ulps=1e4)
                assert not e1[6:].any()
            if master == "dedicated":
                assert not ranks[0][1][t + 1]["e"].any()


CHECKS = {f.__name__: f for f in (replicated_model, g_is_mean, pp_participation, bc_downlink,
                                  ef_virtual_iterate, heavy_ball, mean_gradient_step,
                                  markov_compressor, compressed_mean_step,
                                  low_rank_error_feedback)}
