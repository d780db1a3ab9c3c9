"""One algorithm running on this rank: its transport, env and state, for either family.

A :class:`Session` is what the loop (:mod:`decomp.runner.loop`) drives and what the torch
front end (:class:`decomp.torch.Trainer`) holds: ``init(x0)``, ``step()``, ``first_bad()``
(the collective divergence protocol), ``timings()``. The concerns that exist once live here:
which transport a family uses (:func:`open_transport`), the kernel warm-up
(:meth:`Session.warm_up`) and the divergence protocol (:meth:`Session.first_bad`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from decomp.algorithms import Env
from decomp.algorithms.registry import DECENTRALIZED_FAMILY, family_of
from decomp.comm import MasterWorker, Neighborhood
from decomp.comm.delay import DelayedTransport
from decomp.comm.timevarying import NEIGHBOURHOODS, TimeVaryingNeighborhood
from decomp.comm.tree import resolve_aggregation
from decomp.compress import bind_attributes
from decomp.errors import ConfigError, DivergenceError
from decomp.layout import Layout
from decomp.topologies import is_schedule

#: "no bad step" in the min-reduction of first bad steps (larger than any step count)
NEVER = 2**62


def open_transport(family: str, comm: Any, *, master: str = "shared", mixing: Any = None,
                   exchange: str = "auto", aggregation: str | None = None,
                   ) -> MasterWorker | Neighborhood | TimeVaryingNeighborhood:
    """The transport of a family on ``comm``: :class:`MasterWorker` (``master`` shared or
    dedicated; ``aggregation`` as :func:`decomp.comm.tree.resolve_aggregation`), a
    :class:`Neighborhood` over the mixing matrix W (``mixing``), or, when ``mixing`` is a
    time-varying schedule, a :class:`TimeVaryingNeighborhood` (one
    neighbourhood per distinct W_t of a period, built here once)."""
    if family == DECENTRALIZED_FAMILY:
        if mixing is None:
            raise ConfigError("a decentralized method needs a mixing matrix W (topology)")
        if is_schedule(mixing):
            return TimeVaryingNeighborhood(mixing, comm, method=exchange)
        return Neighborhood(mixing, comm, method=exchange)
    return MasterWorker(comm, master, resolve_aggregation(master, aggregation))


def aggregation_of(algorithm: Any, resolved: str | None) -> str | None:
    """:attr:`Session.aggregation` of ``algorithm`` in a run whose transport resolved
    ``run.aggregation`` to ``resolved`` ("tree" | "gather")."""
    if family_of(algorithm) == DECENTRALIZED_FAMILY or resolved is None:
        return None
    if getattr(algorithm, "downlink", "") == "allreduce":
        return "allreduce"
    return str(algorithm.aggregation_for(resolved))


class Session:
    """``algorithm`` on this rank over ``transport``.

    problem: this rank's f_i (None on a dedicated master); lr: the resolved step size γ;
    seed: run seed; layout: the model's tensors (None: the problem's one slot), given to the
    env; the session runs a copy of ``algorithm`` with its per-tensor compressors bound to
    it. ``n`` is the number of workers (nodes); ``worker`` this rank's worker index (None on a
    dedicated master); ``state`` the algorithm state after :meth:`init`; ``wall_s`` the time
    spent inside init and steps (evaluation is off the clock).
    """

    def __init__(self, algorithm: Any,
                 transport: MasterWorker | Neighborhood | TimeVaryingNeighborhood, problem: Any,
                 *, lr: float, seed: int, delay_s: float = 0.0,
                 layout: Layout | None = None) -> None:
        if layout is None:
            layout = getattr(problem, "layout", None)
        self.algorithm = bind_attributes(algorithm, layout)
        self.family = family_of(algorithm)
        self.transport = transport
        self.problem = problem
        self.lr = float(lr)
        self.seed = int(seed)
        self.n = transport.size if isinstance(transport, NEIGHBOURHOODS) else transport.n_workers
        self.worker: int | None = transport.worker
        self.rank: int = transport.rank
        # emulated latency ([network] delay_ms) goes inside the env's timer
        wire = DelayedTransport(transport, delay_s, transport.comm.Get_size()) if delay_s > 0 \
            else transport
        self.env = Env(wire, problem, self.n, self.seed, self.lr, layout=layout)
        self.state: Any = None
        self.wall_s = 0.0
        self.steps_done = 0

    @property
    def decentralized(self) -> bool:
        return self.family == DECENTRALIZED_FAMILY

    @property
    def mixing(self) -> Any:
        """The W (or schedule W_t) a decentralized session gossips over; None otherwise."""
        return self.transport.mixing if self.decentralized else None  # type: ignore[union-attr]

    @property
    def compressor_name(self) -> str:
        alg = self.algorithm
        return repr(alg.compressor) if alg.uses_compressor else "-"

    @property
    def aggregation(self) -> str | None:
        """How this method sums over workers, as it runs: "tree" or "gather" (the run's
        ``aggregation`` resolved by the transport, "auto" by the node count, and then by the
        method: one that needs the master gathers), "allreduce" for a dense all-reduce
        method, None for the decentralized family."""
        return aggregation_of(self.algorithm, getattr(self.transport, "aggregation", None))

    def warm_up(self, x0: np.ndarray) -> None:
        """Compile / load the compressor's numba kernels before the clock starts (one encode
        and decode of a length-d vector; nothing is sent)."""
        if self.algorithm.uses_compressor:
            C = self.algorithm.compressor
            C.decode(C.encode(x0 + 1.0, (self.seed, 0, 0)))

    def init(self, x0: np.ndarray) -> None:
        """state ← algorithm.init(env, x^0) (x0 (d,) is not modified), on the clock."""
        t0 = time.perf_counter()
        self.state = self.algorithm.init(self.env, x0)
        self.wall_s += time.perf_counter() - t0
        self.env.watch.reset()

    def step(self) -> None:
        """One step of the algorithm, on the clock."""
        t0 = time.perf_counter()
        self.state = self.algorithm.step(self.env, self.state)
        self.wall_s += time.perf_counter() - t0
        self.steps_done += 1

    def model(self) -> np.ndarray:
        """The point this rank evaluates: x^t (master–worker) or its own x_i."""
        return self.algorithm.model(self.state)

    def first_bad(self) -> int:
        """Collective: the first step at which any node met a non-finite value (0: none).

        Master–worker steps raise :class:`DivergenceError` themselves, on every rank alike
        (the checked values are replicated), so this is 0 there without communicating.
        Decentralized steps never raise (x_i differ between ranks); each node records its
        first bad step in ``state.bad`` and one small min-reduction combines them.
        """
        if not self.decentralized or self.state is None:
            return 0
        assert isinstance(self.transport, NEIGHBOURHOODS)
        bad = self.transport.min_uncounted(getattr(self.state, "bad", 0) or NEVER)
        return 0 if bad >= NEVER else int(bad)

    def check_divergence(self, who: str, at_step: int) -> None:
        """Raise the same :class:`DivergenceError` on every rank if any node went bad."""
        bad = self.first_bad()
        if bad:
            raise DivergenceError(
                f"{who}: non-finite value at step {bad} (found by the collective check at step "
                f"{at_step})", step=bad, algorithm=self.algorithm.name, quantity="model x")

    def timings(self) -> dict[str, float]:
        """The step time split compute_s / compress_s / comm_s (either family)."""
        return self.env.watch.as_dict()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this rank bit for bit, as plain values (copies):
        ``state`` (the algorithm state's fields: arrays and scalars), ``steps_done``,
        ``wall_s``, ``bytes`` ([up, down, control]) and ``split`` (the step-time
        split). Randomness is a function of (seed, rank, step, purpose): no
        generator state is needed."""
        if self.state is None:
            raise ConfigError("state_dict() before init(): nothing to save yet")
        from decomp.runner.checkpoint import split_state

        arrays, scalars = split_state(self.state)
        b = self.transport.bytes
        split = list(self.env.watch.totals)
        return {"state": {**{k: v.copy() for k, v in arrays.items()}, **scalars},
                "steps_done": self.steps_done, "wall_s": self.wall_s,
                "bytes": [b.up, b.down, b.control], "split": split}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (after :meth:`init`, which made the arrays the
        saved values are copied into, so anything bound to them stays bound)."""
        if self.state is None:
            raise ConfigError("load_state_dict() needs init() first (it restores in place)")
        from decomp.runner.checkpoint import restore_state

        arrays = {k: np.asarray(v) for k, v in d["state"].items()
                  if isinstance(v, np.ndarray) or hasattr(v, "__array__")}
        scalars = {k: v for k, v in d["state"].items() if k not in arrays}
        self.state = restore_state(self.state, arrays, scalars)
        self.steps_done = int(d["steps_done"])
        self.wall_s = float(d["wall_s"])
        b = self.transport.bytes
        b.up, b.down, b.control = (int(v) for v in d["bytes"])
        if d.get("split") is not None:
            self.env.watch.totals[:] = [float(v) for v in d["split"]]

    def close(self) -> None:
        if isinstance(self.transport, NEIGHBOURHOODS):
            self.transport.close()
