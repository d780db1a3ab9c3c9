"""The config-facing factories: ``mixing_matrix("ring", 8)`` and ``mixing_schedule(...)``."""

from __future__ import annotations

import os

import numpy as np

from .errors import TopologyError
from .graphs import GRAPH_ALIASES, GRAPH_GENERATORS, make_graph
from .mixing import MixingMatrix
from .schedule import (
    MixingSchedule,
    OnePeerExponential,
    StaticSchedule,
    is_schedule,
    one_peer_exponential,
    one_peer_hypercube,
)
from .weights import canonical_scheme, from_file, make_weights

__all__ = ["MATRIX_FILE_SUFFIXES", "SCHEDULE_KINDS", "is_matrix_file", "mixing_matrix",
           "mixing_schedule", "resolve_mixing"]

MATRIX_FILE_SUFFIXES = (".npy", ".npz", ".txt", ".csv", ".dat", ".tsv")

#: time-varying kinds; ``mixing_matrix`` returns the W of step ``step`` (default 0).
SCHEDULE_KINDS = ("one-peer-exponential", "one-peer-hypercube")

_EXPLICIT = ("metropolis", "file", "explicit")


def _key(kind: str) -> str:
    return kind.strip().lower().replace("_", "-")


def is_matrix_file(topology: str | os.PathLike[str]) -> bool:
    """True if ``topology`` names a W file rather than a generator: a path with a known suffix
    (``.npy``, ``.npz``, ``.txt``, ``.csv``, ``.dat``, ``.tsv``) or an existing file."""
    t = os.fspath(topology)
    key = _key(t)
    if key in GRAPH_GENERATORS or key in GRAPH_ALIASES or key in SCHEDULE_KINDS:
        return False
    return t.lower().endswith(MATRIX_FILE_SUFFIXES) or os.path.isfile(t)


def mixing_matrix(topology: str | os.PathLike[str], n: int, weights: str = "metropolis",
                  **opts: object) -> MixingMatrix:
    """A validated W for n ranks.

    Args:
        topology: a generator name (ring, torus, hypercube, exponential, complete, star,
            random-regular, erdos-renyi, edge-list; aliases allowed), a schedule kind
            (one-peer-exponential, one-peer-hypercube: W of step ``step``), or a path to an
            explicit W (``.npy``, ``.npz`` or text).
        n: number of nodes (ranks); an explicit W must be n x n.
        weights: metropolis (default), max-degree, lazy-metropolis, lazy-max-degree; ignored
            for a W file (only the default or "file" is accepted there) and for schedules.
        **opts: generator options (rows, cols, degree, p, seed, max_tries, path, center), ``step``
            for schedules, ``tol`` for validation. Options set to None are dropped.
    Raises:
        TopologyError: unknown name or option, generator failure, or invalid W.
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    tol = opts.pop("tol", None)
    if tol is not None and not isinstance(tol, int | float):
        raise TopologyError(f"tol must be a number, got {tol!r}")
    if is_matrix_file(topology):
        if _key(weights) not in _EXPLICIT:
            raise TopologyError(f"weights {weights!r} cannot be applied to an explicit W file "
                                f"({os.fspath(topology)}); W is used as given")
        if opts:
            raise TopologyError(f"unknown option {next(iter(opts))!r} for an explicit W file")
        return from_file(topology, n, tol=tol)
    key = _key(os.fspath(topology))
    if key in SCHEDULE_KINDS:
        step = opts.pop("step", 0)
        if opts:
            raise TopologyError(f"unknown option {next(iter(opts))!r} for {key!r}; it takes: step")
        f = one_peer_exponential if key == "one-peer-exponential" else one_peer_hypercube
        return f(n, step).validate(n, tol=tol, connected=False)  # type: ignore[arg-type]
    scheme = canonical_scheme(weights)
    graph = make_graph(key, n, **opts)
    return make_weights(scheme, graph).validate(n, tol=tol)


def mixing_schedule(topology: str | os.PathLike[str], n: int, weights: str = "metropolis",
                    **opts: object) -> MixingSchedule:
    """W as a function of the step, for algorithms that accept time-varying topologies.

    Schedule kinds give :class:`OnePeerExponential` (``one-peer-hypercube`` is its symmetric
    variant); anything else gives a :class:`StaticSchedule` of :func:`mixing_matrix`.
    """
    key = _key(os.fspath(topology))
    if key in SCHEDULE_KINDS and not is_matrix_file(topology):
        extra = {k: v for k, v in opts.items() if v is not None}
        if extra:
            raise TopologyError(f"unknown option {next(iter(extra))!r} for schedule {key!r}")
        return OnePeerExponential(n, symmetric=(key == "one-peer-hypercube")).validate(n)
    return StaticSchedule(mixing_matrix(topology, n, weights, **opts))


def resolve_mixing(topology: object, n: int, weights: str = "metropolis",
                   options: dict[str, object] | None = None) -> MixingMatrix | MixingSchedule:
    """The validated W for n nodes from whatever a user gave: a :class:`MixingMatrix`, an
    (n, n) array, or a generator name / W file for :func:`mixing_matrix` (with ``weights`` and
    generator ``options``). The one place the runner, the torch API and the CLI turn a
    topology into W.

    A time-varying schedule (a :class:`MixingSchedule` object such as
    ``mixing_schedule("one-peer-hypercube", n)``) is validated for n nodes and returned as is:
    the runner and the Trainer then use W_t at step t (``decomp.comm.timevarying``).
    """

    if is_schedule(topology):
        if options:
            raise TopologyError("topology options apply to a named topology, not to a given "
                                "schedule")
        sched: MixingSchedule = topology  # type: ignore[assignment]
        if sched.n != n:
            raise TopologyError(f"the schedule is for n = {sched.n} nodes but there are {n}")
        validate = getattr(sched, "validate", None)
        return validate(n) if validate is not None else sched  # type: ignore[no-any-return]
    if isinstance(topology, MixingMatrix):
        if options:
            raise TopologyError("topology options apply to a named topology, not to a given W")
        return topology.validate(n)
    if isinstance(topology, np.ndarray):
        if options:
            raise TopologyError("topology options apply to a named topology, not to an "
                                "explicit W")
        return MixingMatrix(topology).validate(n)  # as_csr: real float64 (complex refused)
    if not isinstance(topology, (str, os.PathLike)):
        raise TopologyError(f"topology must be a name, a W file, an (n, n) array or a "
                            f"MixingMatrix, got {type(topology).__name__}")
    return mixing_matrix(topology, n, weights, **(options or {}))

