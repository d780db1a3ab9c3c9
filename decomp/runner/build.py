"""One :func:`build_session` for every front end: ``decomp run`` (per method), the
:class:`decomp.torch.Trainer` and :class:`decomp.torch.DistributedOptimizer`.

The set-up they share is written here once: the world (``comm`` or ``MPI.COMM_WORLD``), the
abort hook (:func:`~decomp.runner.lifecycle.abort_on_error`), the default algorithm (dense
``GD()``), the family checks (``master`` and ``topology`` against the algorithm's family), the
mixing matrix W (resolved from any user input and checked against the method), the transport
(:func:`~decomp.runner.session.open_transport`), the broadcast of rank 0's x^0 (and any other
arrays that must start equal) and the :class:`~decomp.runner.session.Session`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from decomp.algorithms.registry import DECENTRALIZED_FAMILY, family_of
from decomp.errors import ConfigError
from decomp.layout import Layout
from decomp.runner.lifecycle import abort_on_error
from decomp.runner.session import Session, open_transport

#: a front end's problem for this rank: (worker index or None on a dedicated master, n) -> f_i
ProblemFor = Callable[[int | None, int], Any]


def world(comm: Any = None, *, abort: bool = True) -> Any:
    """``comm``, or ``MPI.COMM_WORLD`` when None; with ``abort``, an uncaught exception on
    any rank from here on ends the whole job (:func:`abort_on_error`, idempotent). A front
    end calls it first thing, so that even its data loading is covered."""
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    if abort:
        abort_on_error(comm)
    return comm


def default_algorithm(algorithm: Any = None) -> Any:
    """``algorithm``, or dense gradient descent ``GD()`` (an all-reduce, i.e. DDP) when None."""
    if algorithm is None:
        from decomp.algorithms import GD

        algorithm = GD()
    return algorithm


def check_family(algorithm: Any, *, master: str = "shared", topology: bool = False,
                 who: str | None = None, key: str = "master=") -> str:
    """The family of ``algorithm``, after refusing a dedicated master for a decentralized
    method and (``topology`` True: one was given) a topology for a master–worker one.

    who: how errors name the method (default: its class); key: how they name the master
    setting (``"master="`` for the API, ``"run.master = "`` for a config)."""
    family = family_of(algorithm)
    name = who or type(algorithm).__name__
    if family == DECENTRALIZED_FAMILY and master != "shared":
        raise ConfigError(f"{key}{master!r} applies to the master–worker family only; {name} "
                          f"is a decentralized method (every rank is a node of W): use "
                          f"{key}'shared'")
    if family != DECENTRALIZED_FAMILY and topology:
        raise ConfigError(f"topology applies to the decentralized family; {name} is a "
                          "master–worker algorithm")
    return family


def check_tree(algorithm: Any, aggregation: str | None, *, who: str | None = None,
               key: str = "aggregation=") -> None:
    """An explicit ``aggregation = "tree"`` for a master–worker method that sums at a master
    (:meth:`~decomp.algorithms.base.MasterWorkerAlgorithm.tree_refusal`: EF21+, EF21-BC,
    ``downlink = "model"``) is a ConfigError naming the reason and the fix; "auto" resolves
    per method instead (such a method gathers, and the run records it)."""
    if aggregation != "tree" or family_of(algorithm) == DECENTRALIZED_FAMILY:
        return
    refusal = getattr(algorithm, "tree_refusal", lambda: "")()
    if refusal:
        name = who or type(algorithm).__name__
        raise ConfigError(f"{key}'tree' cannot run {name}: {refusal}. Use {key}'auto' (the "
                          f"tree for the methods that can, the gather for this one) or "
                          f"{key}'gather'")


def build_session(algorithm: Any = None, comm: Any = None, *, problem: ProblemFor,
                  lr: float, seed: int, master: str = "shared", mixing: Any = None,
                  topology: Any = None, weights: str = "metropolis",
                  topology_options: dict[str, Any] | None = None, exchange: str = "auto",
                  delay_s: float = 0.0, share: Sequence[np.ndarray] = (),
                  abort: bool = True, layout: Layout | None = None,
                  aggregation: str | None = None) -> Session:
    """This rank's :class:`Session` of ``algorithm`` (None: ``GD()``) on ``comm`` (None: the
    world).

    problem(worker, n): this rank's problem, given its worker index (None on a dedicated
    master) and the number of workers n; called once the transport is open (a front end cuts
    its shards there). mixing: the decentralized family's W or schedule, already resolved;
    else W is resolved from ``topology`` (default ``"ring"``), ``weights`` and
    ``topology_options`` over the ranks of ``comm``; either way it is checked against the
    method (a directed W only where the method allows it). share: arrays (x^0, model
    buffers) set to rank 0's values on every rank (set-up, not counted), before ``problem``
    is called. abort: install :func:`abort_on_error` (a user's script; ``decomp run``
    handles errors itself). layout: the model's tensors (``FlatModel.layout``; None: the
    problem's one slot), for per-tensor compressors (see :class:`Session`). aggregation:
    the master–worker family's sum, "gather" | "tree" (None: the default with a shared
    master, gather with a dedicated one; :func:`decomp.comm.tree.resolve_aggregation`).
    """
    comm = world(comm, abort=abort)
    algorithm = default_algorithm(algorithm)
    given = topology is not None or bool(topology_options)
    family = check_family(algorithm, master=master, topology=given)
    check_tree(algorithm, aggregation)
    if family == DECENTRALIZED_FAMILY:
        if mixing is None:
            from decomp.topologies import resolve_mixing

            mixing = resolve_mixing("ring" if topology is None else topology, comm.Get_size(),
                                    weights, topology_options)
        algorithm.check_mixing(mixing)
    else:
        mixing = None
    tp = open_transport(family, comm, master=master, mixing=mixing, exchange=exchange,
                        aggregation=aggregation)
    for a in share:
        if a.size:
            comm.Bcast(a, root=0)
    if family == DECENTRALIZED_FAMILY:
        worker: int | None = tp.rank
        n = tp.size  # type: ignore[union-attr]
    else:
        worker, n = tp.worker, tp.n_workers  # type: ignore[union-attr]
    return Session(algorithm, tp, problem(worker, n), lr=lr, seed=seed, delay_s=delay_s,
                   layout=layout)


__all__ = ["ProblemFor", "build_session", "check_family", "default_algorithm", "world"]
