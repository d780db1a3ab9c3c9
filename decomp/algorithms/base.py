"""What every master–worker algorithm gets and returns.

An algorithm is a small object holding its hyper-parameters (compressor C, step size γ, ...)
with two methods in the spirit of optax: ``init(env) -> state`` and ``step(env, state) ->
state``. The state is a NamedTuple of a few named arrays (x, g_i, e_i, ...) — everything needed
to continue the run, so it can be checkpointed. ``env`` holds the resources of this rank
(transport, local problem, seed, a scratch :class:`Workspace`), which are not state.

Algorithm objects are pure: ``init`` and ``step`` never write to ``self``. Temporaries live in
the env's workspace (``env.scratch(name, like=x)``, one array per name and run), so one
algorithm object can drive any number of runs (envs) at the same time.

Step numbering: ``state.t`` counts the steps done; the step that produces x^{t+1} draws its
randomness with step index t + 1, the initialisation with step index 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from decomp.comm import MasterWorker
from decomp.compress import Compressor, Identity
from decomp.errors import ConfigError, DivergenceError
from decomp.problems import Problem, oracle_grad
from decomp.rng import Key


class Workspace:
    """Scratch arrays of one run, by name: made on first use, then reused (no per-step
    allocation). A name asked for with another shape or dtype gets a fresh array.

    Contents are undefined on every request: a step writes a scratch array before reading it,
    and nothing in it outlives the step — what must survive belongs in the state.
    """

    __slots__ = ("_arrays",)

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """The scratch array ``name``, of ``shape`` and ``dtype`` (uninitialised)."""
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype=dtype)
        return a

    def clear(self) -> None:
        """Drop every array (the next requests allocate afresh)."""
        self._arrays.clear()


def scratch(ws: Workspace, name: str, like: np.ndarray | None, shape: tuple[int, ...] | None,
            dtype: Any) -> np.ndarray:
    """``ws.array(name, ...)`` with shape and dtype taken from ``like`` unless given."""
    if like is not None:
        shape = like.shape if shape is None else shape
        dtype = like.dtype if dtype is None else dtype
    if shape is None or dtype is None:
        raise TypeError("scratch needs like= or both shape= and dtype=")
    return ws.array(name, shape, dtype)


@dataclass
class Env:
    """This rank's resources for one run.

    transport: the master–worker transport; problem: this worker's f_i (None on a dedicated
    master); n: number of workers; seed: run seed; lr: step size γ (resolved, a float);
    workspace: this run's scratch arrays (:meth:`scratch`).
    """

    transport: MasterWorker
    problem: Problem | None
    n: int
    seed: int
    lr: float
    workspace: Workspace = field(default_factory=Workspace, repr=False)

    def scratch(self, name: str, like: np.ndarray | None = None, *,
                shape: tuple[int, ...] | None = None, dtype: Any = None) -> np.ndarray:
        """This run's scratch array ``name`` (shape/dtype of ``like`` unless given;
        uninitialised), see :class:`Workspace`."""
        return scratch(self.workspace, name, like, shape, dtype)

    @property
    def worker(self) -> int | None:
        return self.transport.worker

    def key(self, step: int, stream: int = 0) -> Key:
        """Compressor key for this worker at ``step``; ``stream`` > 0 selects an extra stream
        (stream s of worker i uses rank slot i + s·n, so streams never collide)."""
        assert self.worker is not None
        return Key(self.seed, self.worker + stream * self.n, step)


def check_lr(name: str, lr: Any) -> float | None:
    """An algorithm's optional default step size: None, or a positive number (as a float)."""
    if lr is None:
        return None
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not lr > 0:
        raise ConfigError(f"{name}: lr must be a positive number, got {lr!r}")
    return float(lr)


def check_finite(x: np.ndarray, step: int, algorithm: str, what: str = "model x") -> None:
    """Raise :class:`DivergenceError` naming the step if x has NaN/inf."""
    if not np.isfinite(x).all():
        raise DivergenceError(f"{algorithm}: {what} became non-finite at step {step}",
                              step=step, algorithm=algorithm, quantity=what)


#: what a worker sends when the vector it should compress is non-finite: an empty payload
POISON = np.empty(0, dtype=np.uint8)


def encode_or_poison(compressor: Compressor, v: np.ndarray, key: Any) -> np.ndarray:
    """``compressor.encode(v, key)``, or :data:`POISON` when v (d,) has NaN/inf (or the
    compressor refuses it with a FloatingPointError, e.g. beyond the float32 range).

    A torch model can return a non-finite gradient at a finite x (an overflowing loss). A
    worker that raised there alone would leave the others waiting in the next collective;
    instead it sends the empty payload, whose receivers (:func:`decode_add_or_poison`,
    :func:`aggregate`) turn into NaN. The master's update then makes x non-finite, and every
    rank raises :class:`DivergenceError` at the same step (:func:`check_finite` after the
    broadcast).
    """
    if not np.isfinite(v).all():
        return POISON
    try:
        return compressor.encode(v, key)
    except FloatingPointError:
        return POISON


def decode_add_or_poison(compressor: Compressor, payload: np.ndarray, out: np.ndarray,
                         scale: float = 1.0) -> None:
    """out += scale · C(x) for the x behind ``payload``; out (d,) becomes NaN for
    :data:`POISON` (see :func:`encode_or_poison`)."""
    if payload.size == 0:
        out[:] = np.nan
    else:
        compressor.decode_add(payload, out, scale)


def descend_and_broadcast(env: Env, x: np.ndarray, g: np.ndarray | None, step: int,
                          algorithm: str) -> None:
    """The EF21 family's downlink: the master takes x ← x − γ g (x, g: (d,)), broadcasts x in
    place, and every rank checks it is finite (the same x everywhere, so all stop together)."""
    if env.transport.is_master:
        assert g is not None
        x -= env.lr * g
    env.transport.broadcast(x)
    check_finite(x, step, algorithm)


def aggregate(compressor: Compressor, payloads: list[np.ndarray], d: int,
              dtype: np.dtype) -> np.ndarray:
    """Σ_i decode(payload_i): decoded in worker order into one dense (d,) vector (NaN if any
    payload is :data:`POISON`)."""
    acc = np.zeros(d, dtype=dtype)
    for p in payloads:
        decode_add_or_poison(compressor, p, acc)
    return acc


class AlgorithmOptions:
    """Hyper-parameters every algorithm of both families takes, checked once.

    compressor: C (Identity if omitted); batch_size: τ for stochastic gradients (None = the
    full local gradient); lr: optional default step size γ > 0 (used by :class:`decomp.Trainer`
    when it is given none; a step uses the resolved ``Env.lr``/``NodeEnv.lr``).
    """

    name: ClassVar[str]

    def __init__(self, compressor: Compressor | None = None, *, batch_size: int | None = None,
                 lr: float | None = None, **unknown: Any) -> None:
        if unknown:
            raise ConfigError(f"{self.name}: unknown option(s) {sorted(unknown)}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.compressor = compressor if compressor is not None else Identity()
        self.batch_size = batch_size
        self.lr = check_lr(self.name, lr)


class MasterWorkerAlgorithm(AlgorithmOptions, ABC):
    """Base: hyper-parameters common to the family.

    compressor: C (Identity if omitted); batch_size: τ for stochastic gradients (None = full
    local gradient ∇f_i); lr: optional default step size γ > 0, used by
    :class:`decomp.Trainer` when it is given no ``lr`` (``Env.lr`` is what a step uses; the
    config path resolves ``[[methods]] lr`` into it).
    """

    name: ClassVar[str]
    uses_compressor: ClassVar[bool] = True
    needs_contractive: ClassVar[bool] = True

    def alpha(self, d: int) -> float:
        """Contraction constant α of the compressor, for the theory step size."""
        return self.compressor.alpha(d) if self.uses_compressor else 1.0

    def check(self, d: int) -> None:
        """Refuse a compressor this algorithm's analysis does not cover (clear message)."""
        if not self.uses_compressor:
            return
        self.compressor.check(d)
        if self.needs_contractive:
            self.compressor.alpha(d)  # raises for an unbiased, unscaled compressor
        elif not self.compressor.is_unbiased:
            raise ConfigError(f"{self.name} needs an unbiased compressor (E C(x) = x); "
                              f"{self.compressor!r} is biased")

    def grad(self, env: Env, x: np.ndarray, step: int) -> np.ndarray:
        """This worker's ∇f_i(x) (or minibatch gradient at ``step``)."""
        assert env.problem is not None and env.worker is not None
        return oracle_grad(env.problem, x, seed=env.seed, worker=env.worker, step=step,
                           batch_size=self.batch_size)

    @abstractmethod
    def init(self, env: Env, x0: np.ndarray) -> Any:
        """State at t = 0 from the starting point x^0 (same on every rank)."""

    @abstractmethod
    def step(self, env: Env, state: Any) -> Any:
        """One iteration: returns the state at t + 1 (arrays are updated in place)."""

    def model(self, state: Any) -> np.ndarray:
        """The point at which metrics are evaluated (x^t, identical on every rank)."""
        return state.x
