"""The compressed-replica round shared by DCD-PSGD, ECD-PSGD and CHOCO-SGD.

Node i keeps a replica of a public value of itself and of each in-neighbour j (DCD: x̂_j,
ECD: ỹ_j, CHOCO: x̂_j) in R, shape (1 + deg, d), row 0 = node i, row 1 + k = the k-th
in-neighbour in ascending rank order (``env.transport.sources``). One round, with the step's
vector v_i (d,) and constants κ (``keep``) and s (``scale``)::

    p_i = encode(C, v_i)                 (zeros if v_i is non-finite: see encode_or_zeros)
    post the exchange of p_i with the neighbours (one C.payload_bytes(d, dtype) message per edge)
    R[0]     ← κ R[0]     + s · C(v_i)   (decoded from p_i, exactly as the neighbours do)
    wait for the neighbours' payloads
    R[1 + k] ← κ R[1 + k] + s · C(v_j)   for each in-neighbour j = sources[k]

Every holder of node j's replica applies the same decoded payload to the same value, so all
copies stay equal bit for bit. DCD: v = z_i = x^{t+1/2} − x_i, κ = s = 1 (R[0] is x_i itself);
ECD: v = z_i^t, κ = 1 − 2/t, s = 2/t; CHOCO: v = x_i^{t+1/2} − x̂_i, κ = s = 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from decomp.algorithms.decentralized_base import Env, encode_or_zeros
from decomp.comm.timing import TimedCodec
from decomp.compress import Compressor
from decomp.rng import Key


def replica_round(env: Env, compressor: Compressor | TimedCodec, v: np.ndarray,
                  R: np.ndarray, step: int, bad: int, *, keep: float | None = None,
                  scale: float = 1.0, on_own: Callable[[Any, np.ndarray], None] | None = None,
                  on_received: Callable[[Any, np.ndarray, int, int], None] | None = None,
                  key: Key | None = None) -> int:
    """One round (see the module doc) on R (1 + deg, d) in place; returns ``bad``.

    v: (d,) vector node i compresses, same dtype as R (read only); step: the step index
    t + 1 (compressor key); bad: first non-finite step so far (0: none), set to ``step`` if v
    is non-finite; keep: κ (None: no rescaling, i.e. κ = 1); scale: s. on_own(C, p_i) runs
    after node i's own replica is updated (while the exchange is in flight), on_received(C,
    p_j, k, j) after each neighbour's (CHOCO's mixing sum). The codec and the exchange are
    timed by the env (``env.codec``, ``env.transport``). key: the compressor key (None:
    ``env.key(step)``; BEER's second payload of a step uses another stream).
    """
    C = env.codec(compressor)
    tp = env.transport
    payload, bad = encode_or_zeros(C, v, env.key(step) if key is None else key, step, bad)
    tp.exchange_start(payload, C.payload_bytes(v.size, v.dtype))
    if keep is not None:  # node i's own replica while the payloads travel
        R[0] *= keep
    C.decode_add(payload, R[0], scale)
    if on_own is not None:
        on_own(C, payload)
    got = tp.exchange_finish()
    for k, j in enumerate(tp.sources):
        if keep is not None:
            R[1 + k] *= keep
        C.decode_add(got[j], R[1 + k], scale)
        if on_received is not None:
            on_received(C, got[j], k, j)
    return bad
