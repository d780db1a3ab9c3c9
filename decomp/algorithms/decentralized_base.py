"""What every decentralized algorithm gets and returns (Tang et al. 2018 family, CHOCO-SGD).

Every MPI rank is a node i of the mixing matrix W with its own model x_i. An algorithm is a
small object holding its hyper-parameters with ``init(env, x0) -> state`` and
``step(env, state) -> state``, like the master–worker family (:mod:`decomp.algorithms.base`).
The state is a NamedTuple of named arrays and holds everything needed to continue the run:
x_i, and the replicas x̂_j / estimates ỹ_j this node keeps of itself and its neighbours.

Replica layout: a ``(1 + deg, d)`` array, row 0 = this node, rows 1.. = its in-neighbours in
ascending rank order (``env.transport.sources``).

Time-varying W_t (``[topology] schedule``, docs/topologies.md): the env's transport is then a
:class:`~decomp.comm.timevarying.TimeVaryingNeighborhood`. :meth:`DecentralizedAlgorithm.step`
calls ``env.transport.select(state.t)`` before the method's ``_step`` (a no-op on a static W:
:class:`~decomp.comm.protocols.NeighborTransport`), so inside a step ``env.transport``
(``sources``, ``destinations``, ``weights``, ``self_weight``, ``exchange*``) *is* W_t's
neighbourhood and a method written for a static W needs no change (D-PSGD). Methods with
per-neighbour state use ``env.transport.time_varying``, ``env.transport.peers`` (every
neighbour over a period, ascending) and ``env.transport.slot(j)`` (its row); DCD and CHOCO
keep per-edge replicas there (:mod:`decomp.algorithms.edge_replica`).

Step numbering: ``state.t`` counts the steps done; the step producing x^{t+1} draws its
minibatch and compressor randomness with step index t + 1 (``Key(seed, rank, t + 1)``).

Divergence: x_i differ between ranks, so a local NaN check could fire on one rank only and
leave the others blocked in the next exchange. Steps therefore never raise on non-finite
values: a node that meets one records the step in ``state.bad`` (0 = never) and keeps taking
part in the exchanges (sending a payload of zeros); the runner combines ``bad`` over all ranks
(:meth:`Neighborhood.min_uncounted`) at every log step, so every rank stops at the same step
and reports the first step at which any node went non-finite.

Purity: ``init`` and ``step`` never write to the algorithm object. Temporaries come from the
env (``env.scratch(name, like=x)``, one array per name and run); everything else is state. One
algorithm object can therefore drive several runs (envs) at once.

Timing (:mod:`decomp.comm.timing`): step bodies contain no timing calls. :class:`Env`
wraps its transport at construction (:class:`~decomp.comm.timing.TimedTransport`: counted
calls book comm time) and hands out timed codecs (:meth:`Env.codec`: encode / decode book
compress time). :meth:`DecentralizedAlgorithm.step` is the public entry point: it runs the
method's own ``_step`` inside ``with env.watch:``, which books the step's wall time minus the
comm and compress time as compute. So ``env.watch.as_dict()`` is right for any caller that
just calls ``alg.step(env, state)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from decomp.algorithms.base import AlgorithmOptions
from decomp.algorithms.env import Env
from decomp.comm.pattern import Call, CodecOp
from decomp.comm.timing import COMM, COMPRESS, COMPUTE, SECTIONS, Stopwatch, TimedCodec
from decomp.compress import Compressor
from decomp.errors import ConfigError
from decomp.kernels.fused import gossip_mix
from decomp.layout import Layout
from decomp.problems import oracle_grad
from decomp.rng import Key
from decomp.theory import StepsScaling

__all__ = ["COMM", "COMPRESS", "COMPUTE", "SECTIONS", "DecentralizedAlgorithm", "Env",
           "Stopwatch", "encode_or_zeros", "mix"]


def encode_or_zeros(C: Compressor | TimedCodec, v: np.ndarray, key: Key, step: int,
                    bad: int) -> tuple[np.ndarray, int]:
    """(C.encode(v, key), bad) for v (d,): a non-finite v (or one C refuses with a
    FloatingPointError), or a node already bad, sends C's encoding of zeros instead and
    ``bad`` becomes ``step`` if it was 0 — so the exchange goes on and nobody is left waiting.
    (Every compressor refuses non-finite input with a FloatingPointError in a pass it makes
    anyway, so there is no separate check.)
    """
    if bad == 0:
        try:
            return C.encode(v, key), bad
        except FloatingPointError:
            pass
    return C.encode(np.zeros_like(v), Key(key.seed, key.rank, 0)), bad or step


def mix(env: Env, out: np.ndarray, x0: np.ndarray, rest: np.ndarray,
        g: np.ndarray) -> bool:
    """out ← W_ii x0 + Σ_k W_{i,sources[k]} rest[k] − γ g in one fused pass (summed self
    first, then the neighbours ascending, as :mod:`decomp.sim.decentralized` does, so the
    results agree bit for bit); out may be x0. x0, g, out: (d,); rest: (deg, d). True iff out
    is finite."""
    tp = env.transport
    t = out.dtype.type
    w = env.scratch("mix_w", shape=(len(tp.sources),), dtype=out.dtype)
    for k, j in enumerate(tp.sources):
        w[k] = tp.weights[j]
    return bool(gossip_mix(out, x0, rest, t(tp.self_weight), w, t(env.lr), g))


class DecentralizedAlgorithm(AlgorithmOptions, ABC):
    """Base of the decentralized family.

    compressor: C (Identity if omitted); batch_size: τ for minibatch gradients ∇F_i(x; ξ)
    (None = the full local gradient ∇f_i); lr: optional default step size γ > 0, used by
    :class:`decomp.Trainer` when it is given no ``lr`` (a step uses ``Env.lr``).

    Class attributes: ``uses_compressor``; ``requirement`` (DCD/ECD: "unbiased", E C(x) = x is
    required by their analysis; BEER: "contractive"; default "any"); ``gossip`` (False for the
    all-reduce baselines, whose models are identical on every rank); ``needs_symmetric_w``
    (DCD/ECD/CHOCO: the reason their analysis needs W = Wᵀ; :meth:`check_mixing` refuses a
    directed W for them).

    A method implements ``init`` and ``_step`` (never writing to ``self``: temporaries from
    ``env.scratch``); callers call :meth:`step`, which times ``_step`` (see the module doc).
    """

    name: ClassVar[str]
    uses_compressor: ClassVar[bool] = True
    gossip: ClassVar[bool] = True
    #: why this method's analysis needs a symmetric W ("" = any doubly stochastic W, directed
    #: ones such as one-peer-exponential included); read by :meth:`check_mixing`
    needs_symmetric_w: ClassVar[str] = ""
    #: why this method cannot run on a time-varying schedule W_t ("" = it can); read by
    #: :meth:`check_mixing`
    refuses_schedule: ClassVar[str] = ""
    #: on a schedule this method keeps per-edge replicas (edge_replica.py), which need one
    #: symmetric peer per step; checked by :meth:`check_mixing`
    per_edge_replicas: ClassVar[bool] = False

    def __init__(self, compressor: Compressor | None = None, *, batch_size: int | None = None,
                 lr: float | None = None, **unknown: Any) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr, **unknown)
        self.check_compressor()

    def check(self, d: int) -> None:
        """Refuse a compressor that cannot compress length-d vectors or that this algorithm's
        analysis does not cover (clear message)."""
        if not self.uses_compressor:
            return
        self.compressor.check(d)
        self.check_compressor()
        if self.requirement == "contractive":
            self.compressor.alpha(d)  # raises the ConfigError with the hint to wrap in scaled

    def check_compressor(self) -> None:
        """DCD/ECD (and the QSGD baseline) need E C(x) = x; raised at construction."""
        if (self.uses_compressor and self.requirement == "unbiased"
                and not self.compressor.is_unbiased):
            raise ConfigError(
                f"{self.name} needs an unbiased compressor (E C(x) = x): its analysis (Tang et "
                f"al. 2018) relies on the compression error averaging out, and "
                f"{self.compressor!r} is biased. Use an unbiased compressor (identity, qsgd, "
                "randk, natural) or choco_sgd, which allows biased compressors.")

    def check_mixing(self, mixing: Any) -> None:
        """Refuse a non-symmetric (directed) W for a method whose analysis needs a symmetric
        one (``needs_symmetric_w`` says why), and a time-varying schedule for a method that
        cannot follow one (``refuses_schedule``); called where a method meets its W (the
        runner's plan, the Trainer)."""
        from decomp.topologies import is_schedule

        if is_schedule(mixing):
            name = getattr(mixing, "name", "the schedule")
            if self.refuses_schedule:
                raise ConfigError(
                    f"{self.name} cannot run on the time-varying schedule {name}: "
                    f"{self.refuses_schedule}. Use a static topology ([topology] kind) or "
                    "dpsgd, dcd_psgd or choco_sgd on the schedule.")
            if self.needs_symmetric_w and not getattr(mixing, "symmetric", True):
                raise ConfigError(
                    f"{self.name} needs a symmetric W, and every W_t of {name} is directed "
                    f"(W_ij != W_ji): {self.needs_symmetric_w}. Use the symmetric schedule "
                    "one-peer-hypercube ([topology] schedule = \"one-peer-hypercube\", n a "
                    "power of two: pairwise exchanges, also one message per node per step) "
                    "or dpsgd, which allows a directed doubly stochastic W_t.")
            if self.per_edge_replicas:  # checked here, on every rank alike, not mid-step
                for k in range(mixing.period):
                    W = mixing(k)
                    if not W.symmetric or W.degree_max > 1:
                        raise ConfigError(
                            f"{self.name} on a schedule keeps one replica per edge and needs "
                            f"one symmetric peer per step (one-peer-hypercube); step {k} of "
                            f"{name} is {W.name} (max degree {W.degree_max})")
            return
        if self.needs_symmetric_w and not getattr(mixing, "symmetric", True):
            raise ConfigError(
                f"{self.name} needs a symmetric W, and {getattr(mixing, 'name', 'W')} is "
                f"directed (W_ij != W_ji): {self.needs_symmetric_w}. Use a symmetric topology "
                "(e.g. one-peer-hypercube, exponential, ring) or dpsgd, which allows a directed "
                "doubly stochastic W.")

    def grad(self, env: Env, x: np.ndarray, step: int) -> np.ndarray:
        """∇F_i(x_i; ξ_i^step): this node's minibatch gradient (or full ∇f_i), shape (d,)."""
        return oracle_grad(env.problem, x, seed=env.seed, worker=env.rank, step=step,
                           batch_size=self.batch_size)

    def payload_bytes(self, d: int, dtype: np.dtype) -> int:
        """Bytes of one message this algorithm sends (each neighbour gets one per step)."""
        if not self.uses_compressor:
            return d * np.dtype(dtype).itemsize
        return self.compressor.payload_bytes(d, dtype)

    def encode(self, env: Env, v: np.ndarray, step: int, bad: int) -> tuple[np.ndarray, int]:
        """(C.encode(v, key(step)), bad) through the env's timed codec; see
        :func:`encode_or_zeros` for a non-finite v."""
        return encode_or_zeros(env.codec(self.compressor), v, env.key(step), step, bad)

    @abstractmethod
    def init(self, env: Env, x0: np.ndarray) -> Any:
        """State at t = 0 from x^0 (the same on every node; replicas start equal to it)."""

    def step(self, env: Env, state: Any) -> Any:
        """One iteration; returns the state at t + 1 (arrays are updated in place).

        Runs :meth:`_step` inside ``with env.watch:`` so the step's wall time not spent in
        the timed transport or codecs is booked as compute. Subclasses implement
        :meth:`_step`, not this.
        """
        env.transport.select(state.t)  # W_t for the step t → t + 1 (no-op on a static W)
        with env.watch:
            return self._step(env, state)

    @abstractmethod
    def _step(self, env: Env, state: Any) -> Any:
        """The method's iteration (untimed body; transport and codecs are timed by the env)."""

    def model(self, state: Any) -> np.ndarray:
        """x_i: this node's own model, the one it evaluates (metrics also report x̄)."""
        return state.x

    def replicas(self, env: Env, state: Any) -> dict[int, np.ndarray]:
        """{j: this node's copy of node j's public value} (x̂_j or ỹ_j), self included."""
        R = getattr(state, "R", None)
        if R is None:
            return {}
        return {j: R[k] for k, j in enumerate((env.rank, *env.transport.sources))}

    # ---- declarations: traffic, codec work, steps to target, torch driving ---------------
    #: how a method's steps to a target scale with W (decomp.netmodel.steps); None: not
    #: declared, and the cost model refuses to carry its count to another topology
    steps_scaling: ClassVar[StepsScaling | None] = None
    #: how :class:`decomp.torch.DistributedOptimizer` drives the method (module doc of
    #: decomp.torch.oracle): the local step is replaced by the wrapped optimizer's
    torch_driver: ClassVar[str] = "gossip"
    #: option values the cost model uses when a method is priced without them (required
    #: options that do not change the traffic, e.g. a consensus step)
    pricing_options: ClassVar[dict[str, Any]] = {}
    #: the exchanges of one step with every neighbour, by what they carry (one payload each)
    exchanges: ClassVar[tuple[str, ...]] = ("replica update",)
    #: the exchange is posted before the gradient and waited for after it (D-PSGD)
    overlaps_exchange: ClassVar[bool] = False
    #: the step mixes dense x_j with 1 + degree axpy passes (D-PSGD, DCD, ECD)
    dense_mixing: ClassVar[bool] = False
    #: how many times a step decodes each payload it holds (CHOCO-SGD, BEER: 2, into the
    #: replica and into the kept mixing sum S)
    decodes_per_payload: ClassVar[int] = 1

    def comm_pattern(self, d: int, n: int, degree: int = 2, *, master: str = "shared",
                     dtype: Any = np.float64, layout: Layout | None = None) -> list[Call]:
        """The calls of one step on n nodes of degree ``degree`` for a d-vector of ``dtype``
        (master: unused here): each of :attr:`exchanges` sends one message of
        :meth:`payload_bytes` to every neighbour."""
        B = self.payload_bytes(d, dtype)
        return [Call("exchange", B, degree, n, overlap=self.overlaps_exchange, what=w)
                for w in self.exchanges]

    def codec_ops(self, n: int, degree: int = 2, *, master: str = "shared") -> list[CodecOp]:
        """The codec work of one step on a node: per exchange one encode and 1 + k decodes
        (own and neighbours' replicas; twice each where :attr:`decodes_per_payload` says so),
        and 1 + k dense axpy for a dense mixing."""
        mixing = [CodecOp("axpy", None, 1 + degree, "mixing")] if self.dense_mixing else []
        if not self.uses_compressor:
            return mixing
        rounds = len(self.exchanges)
        return [CodecOp("encode", self.compressor, rounds),
                CodecOp("decode", self.compressor,
                        rounds * (1 + degree) * self.decodes_per_payload,
                        "own + neighbours' replicas"), *mixing]

    def torch_refusal(self) -> str:
        """Why :class:`decomp.torch.DistributedOptimizer` cannot drive this object ("" = it
        can, as :attr:`torch_driver`)."""
        return ""
