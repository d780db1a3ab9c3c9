"""Per-edge replicas: DCD-PSGD and CHOCO-SGD on a time-varying schedule W_t.

On a static W every holder of node j's replica x̂_j hears every update of it, so one x̂_j
per node is enough (:mod:`decomp.algorithms.replica`). When the neighbour set changes with the
step (one-peer hypercube: node i pairs with i XOR 2^(t mod τ)), a neighbour that is not
current misses updates and its copy goes stale. The rule here keeps every replica exact:

**one replica per directed edge.** For every peer k it has in some step of a period
(``env.transport.peers``, ascending; row p = ``env.transport.slot(k)``) node i keeps

    A[p] = x̂_{i→k}: node i's public value as peer k knows it    (own side)
    B[p] = x̂_{k→i}: peer k's public value as node i knows it    (neighbour side)

and peer k keeps the same two vectors the other way round (its B row for i is i's A row for
k). A step with W_t on node i with current peer k (one peer per step: one-peer schedules;
W_t symmetric, so i also sends to k), for the method's vector v_i (d,)::

    p_i = encode(C, v_i − A[k])           (zeros if non-finite: see encode_or_zeros)
    send p_i to k, receive p_k from k     (one C.payload_bytes(d, dtype) message per edge)
    A[k] ← A[k] + C(v_i − A[k])           (decoded from p_i, as k does into its B row of i)
    B[k] ← B[k] + C(v_k − x̂_{k→i})        (decoded from p_k)

Both ends apply the same decoded payload to the same value, so x̂_{i→k} is equal bit for bit
on i and on k at all times, however long the edge was idle; the catch-up is in the compressed
difference v_i − A[k] (the drift of node i since it last met k). Rows of non-current peers are
not touched. The mixing term of step t is the edge form of Σ_j W_ij (x̂_j − x̂_i)::

    M_i = Σ_{k current, ascending} W_t[i, k] (B[k] − A[k])        (summed from zero)

which is mass-conserving gossip for a symmetric W_t: W_ik (x̂_{k→i} − x̂_{i→k}) on i and
W_ki (x̂_{i→k} − x̂_{k→i}) on k cancel in the sum over nodes.

- CHOCO-SGD: x_i^{t+1/2} = x_i − γ ∇F_i(x_i);  v_i = x_i^{t+1/2};  x_i^{t+1} = x_i^{t+1/2} +
  γ_c M_i with M_i after the round. With C = identity, γ_c = 1: A[k] = x_i^{t+1/2}, B[k] =
  x_k^{t+1/2}, so X^{t+1} = W_t (X^t − γ G): over a period of the one-peer hypercube, exact
  averaging, as D-PSGD.
- DCD-PSGD: x_i^{t+1/2} = W_t[i,i] x_i + Σ_k W_t[i,k] B[k] − γ ∇F_i(x_i) (DCD's mix, B read
  before the round);  v_i = x_i^{t+1/2};  x_i^{t+1} = A[k] (the public value of the edge
  just used — on a static W, where every A row is x_i, this is DCD's x_i + C(x_i^{t+1/2} −
  x_i)). DCD computes its payload *after* mixing, so on a one-peer schedule the mix reads
  peer k as of their last meeting (τ − 1 steps old for the hypercube): delayed gossip, a
  convex combination, so it contracts, but slower than one exact average per period (the
  mass-conserving form x_i + W_ik (B[k] − A[k]) with these delayed values oscillates and
  diverges, which is why DCD keeps its own convex mix).

Memory: 2 P vectors of d per node besides x_i, P = the number of distinct peers over a period
(log2 n for the one-peer hypercube: 2 log2 n replicas, e.g. 8 at n = 16, vs 1 + deg = 3 on a
ring); bytes per step are unchanged: one payload per current neighbour.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.decentralized_base import Env, encode_or_zeros
from decomp.comm.timing import TimedCodec
from decomp.compress import Compressor
from decomp.errors import ConfigError
from decomp.rng import Key


class EdgeState(NamedTuple):
    """State of DCD-PSGD / CHOCO-SGD on a time-varying schedule (see the module doc)."""

    t: int
    x: np.ndarray  # x_i^t (d,)
    A: np.ndarray  # (P, d): A[p] = x̂_{i→peers[p]}, node i's value as that peer knows it
    B: np.ndarray  # (P, d): B[p] = x̂_{peers[p]→i}, that peer's value as node i knows it
    bad: int  # first step at which this node met a non-finite value (0: none)


def init_edges(env: Env, x0: np.ndarray) -> EdgeState:
    """Every replica starts at x^0 (every node starts there)."""
    P = len(env.transport.peers)
    return EdgeState(0, x0.copy(), np.tile(x0, (P, 1)), np.tile(x0, (P, 1)), 0)


def edge_mix(env: Env, A: np.ndarray, B: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out ← Σ_{k in W_t's sources, ascending} W_t[i, k] (B[k] − A[k]), summed from zero (the
    order :mod:`decomp.sim.decentralized` uses). out: (d,)."""
    tp = env.transport
    tmp = env.scratch("edge_tmp", out)
    out[...] = 0
    for j in tp.sources:
        p = env.transport.slot(j)
        np.subtract(B[p], A[p], out=tmp)
        tmp *= tp.weights[j]
        out += tmp
    return out


def edge_rows(env: Env, B: np.ndarray) -> np.ndarray:
    """(indeg, d): the B rows of W_t's sources in ascending order (a view for one source,
    the one-peer case; else gathered into a scratch array)."""
    slots = [env.transport.slot(j) for j in env.transport.sources]
    if len(slots) == 1:
        return B[slots[0]:slots[0] + 1]
    out = env.scratch("edge_rows", shape=(len(slots), B.shape[1]), dtype=B.dtype)
    for r, p in enumerate(slots):
        out[r] = B[p]
    return out


def edge_round(env: Env, compressor: Compressor | TimedCodec, v: np.ndarray,
               A: np.ndarray, B: np.ndarray, step: int, bad: int, *,
               key: Key | None = None) -> tuple[int, int | None]:
    """One exchange on W_t's edge (module doc): A[k] += C(v − A[k]) here and on peer k,
    B[k] += peer k's payload. Returns (bad, the row p of the current peer, or None when this
    node has no peer at this step). v (d,) is read only; step: the compressor key's step;
    key: the compressor key (None: ``env.key(step)``; BEER's second payload uses another
    stream)."""
    tp = env.transport
    srcs, dests = tuple(tp.sources), tuple(tp.destinations)
    if len(dests) > 1 or srcs != dests:
        raise ConfigError(f"per-edge replicas need one symmetric peer per step (a one-peer "
                          f"schedule such as one-peer-hypercube); node {env.rank} has sources "
                          f"{srcs} and destinations {dests} at step {step}")
    if not dests:
        return bad, None
    C = env.codec(compressor)
    p = env.transport.slot(dests[0])
    diff = np.subtract(v, A[p], out=env.scratch("edge_diff", v))
    payload, bad = encode_or_zeros(C, diff, env.key(step) if key is None else key, step, bad)
    tp.exchange_start(payload, C.payload_bytes(v.size, v.dtype))
    C.decode_add(payload, A[p], 1.0)  # x̂_{i→k} while the payloads travel
    got = tp.exchange_finish()
    C.decode_add(got[srcs[0]], B[p], 1.0)  # x̂_{k→i}
    return bad, p


def edge_replicas(env: Env, state: EdgeState) -> dict[int, np.ndarray]:
    """{k: x̂_{k→i}} for every peer k over a period (node i's copies of its peers' values)."""
    return {k: state.B[p] for p, k in enumerate(env.transport.peers)}


__all__ = ["EdgeState", "edge_mix", "edge_replicas", "edge_round", "edge_rows", "init_edges"]
