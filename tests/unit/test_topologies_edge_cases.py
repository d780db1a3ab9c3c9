"""Graph constructors at their edges: the hypercube's refusal names the nearest powers of two,
a one-node one-peer hypercube is the identity, Erdős–Rényi's default p connects two nodes, an
adjacency's diagonal and stored zeros are ignored. Written for gaps mutation testing found
(docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.topologies import TopologyError, erdos_renyi, hypercube, one_peer_hypercube


@pytest.mark.parametrize(("n", "lo", "hi"), [(3, 2, 4), (6, 4, 8), (12, 8, 16), (100, 64, 128)])
def test_hypercube_refusal_names_the_nearest_powers_of_two(n: int, lo: int, hi: int) -> None:
    """A hypercube of n nodes (n not a power of two) is refused with the powers of two just
    below and just above n, so the user knows what to ask for."""
    with pytest.raises(TopologyError, match=rf"nearest: {lo} or {hi}\)"):
        hypercube(n)


@pytest.mark.parametrize("t", [0, 1, 5])
def test_one_peer_hypercube_of_one_node_is_the_identity(t: int) -> None:
    """n = 1 (2^0) is a power of two: the one-peer hypercube schedule is W = [[1]] at every
    step; 0, 3 and -2 nodes are refused."""
    W = one_peer_hypercube(1, t)
    assert np.array_equal(W.dense(), np.ones((1, 1)))
    for n in (0, 3, -2):
        with pytest.raises(TopologyError):
            one_peer_hypercube(n, t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_erdos_renyi_default_p_connects_two_nodes(seed: int) -> None:
    """With no p, two nodes get p = 1: their one edge, at once (a lower default could never
    sample a connected graph of two nodes)."""
    g = erdos_renyi(2, seed=seed)
    assert g.n == 2
    assert g.edges.tolist() == [[0, 1]]


def test_a_graph_from_an_adjacency_ignores_the_diagonal_and_stored_zeros() -> None:
    """``Graph.from_adjacency``: an edge per non-zero off-diagonal entry; a non-zero diagonal
    (self-weights) and explicitly stored zeros make no edge."""
    import scipy.sparse as sp

    from decomp.topologies.adjacency import Graph

    dense = np.array([[1, 1, 0], [1, 2, 1], [0, 1, 1]])
    assert Graph.from_adjacency(dense).edges.tolist() == [[0, 1], [1, 2]]
    stored_zero = sp.coo_array((np.array([1.0, 1.0, 0.0, 0.0]),
                                (np.array([0, 1, 0, 2]), np.array([1, 0, 2, 0]))), shape=(3, 3))
    assert Graph.from_adjacency(stored_zero).edges.tolist() == [[0, 1]]
