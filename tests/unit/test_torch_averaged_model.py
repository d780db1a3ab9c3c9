"""``DistributedOptimizer.averaged()`` (collective): inside, a decentralized model holds the
mean x̄ = (1/n) Σ_i x_i of the nodes' parameters and the mean of their float buffers
(BatchNorm statistics), summed in float64; on exit both are this node's own again. Played on
node 0 of two by a transport stand-in whose all-reduce adds node 1's vectors (no MPI)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from decomp.torch import DistributedOptimizer


def test_inside_the_model_is_the_nodes_mean_and_afterwards_its_own() -> None:
    mine_x, peer_x = np.array([1.0, 2.0, 4.0], np.float32), np.array([3.0, 0.0, 5.0], np.float32)
    mine_b, peer_b = np.array([0.5, 1.5], np.float32), np.array([2.5, 0.5], np.float32)
    flat = SimpleNamespace(params=mine_x.copy(), buffers=mine_b.copy(), module="the module")
    peers = {len(peer_x): peer_x, len(peer_b): peer_b}

    def allreduce_uncounted(acc: np.ndarray) -> None:
        assert acc.dtype == np.float64
        acc += peers[len(acc)]

    opt = SimpleNamespace(flat=flat, decentralized=True,
                          comm=SimpleNamespace(Get_size=lambda: 2),
                          transport=SimpleNamespace(allreduce_uncounted=allreduce_uncounted))
    with DistributedOptimizer.averaged(opt) as m:
        assert m == "the module"
        assert np.array_equal(flat.params, (mine_x + peer_x) / 2)
        assert np.array_equal(flat.buffers, (mine_b + peer_b) / 2)
    assert np.array_equal(flat.params, mine_x) and np.array_equal(flat.buffers, mine_b)
