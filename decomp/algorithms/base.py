"""What every master–worker algorithm gets and returns.

An algorithm is a small object holding its hyper-parameters (compressor C, step size γ, ...)
with two methods in the spirit of optax: ``init(env) -> state`` and ``step(env, state) ->
state``. The state is a NamedTuple of a few named arrays (x, g_i, e_i, ...) — everything needed
to continue the run, so it can be checkpointed. ``env`` (:class:`decomp.algorithms.env.Env`,
shared with the decentralized family) holds the resources of this rank (transport, local
problem, seed, a timer, a scratch :class:`Workspace`), which are not state.

Timing: as in the decentralized family, a method implements ``_step``; the public
:meth:`MasterWorkerAlgorithm.step` runs it inside ``with env.watch:`` (the env's transport is
timed), so ``env.watch.as_dict()`` splits the step time into compute / compress / comm.

Algorithm objects are pure: ``init`` and ``step`` never write to ``self``. Temporaries live in
the env's workspace (``env.scratch(name, like=x)``, one array per name and run), so one
algorithm object can drive any number of runs (envs) at the same time.

Step numbering: ``state.t`` counts the steps done; the step that produces x^{t+1} draws its
randomness with step index t + 1, the initialisation with step index 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import numpy as np

from decomp.algorithms.env import Env, Workspace, scratch
from decomp.comm.pattern import (
    Call,
    CodecOp,
    bcast_bytes_calls,
    master_world,
    tree_calls,
)
from decomp.compress import Compressor, Identity
from decomp.compress.aggregate import SumDecoder, SumEncoder, is_poison, sum_payload_bytes
from decomp.compress.merge import RangeSum
from decomp.errors import ConfigError, DivergenceError
from decomp.kernels.fused import all_finite, apply_dense, descend
from decomp.layout import Layout
from decomp.problems import oracle_grad
from decomp.theory import TOPOLOGY_FREE, StepsScaling

__all__ = ["DOWNLINKS", "POISON", "AlgorithmOptions", "Env", "MasterWorkerAlgorithm",
           "Own", "Workspace", "aggregate", "apply_sum", "check_downlink", "check_finite",
           "check_lr", "collect",
           "decode_add_or_poison", "descend_and_broadcast", "descend_checked", "diverged",
           "encode_or_poison", "scratch", "share_sum", "update_from_sum"]

#: how the master–worker family moves the master's update to the workers: the re-encoded sum
#: of the compressed payloads (every rank applies it) or the dense model
DOWNLINKS = ("compressed", "model")


def check_lr(name: str, lr: Any) -> float | None:
    """An algorithm's optional default step size: None, or a positive number (as a float)."""
    if lr is None:
        return None
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not lr > 0:
        raise ConfigError(f"{name}: lr must be a positive number, got {lr!r}")
    return float(lr)


def check_consensus_step(name: str, value: Any) -> float:
    """A gossip method's consensus step size (γ of CHOCO-SGD and BEER, η of DeepSqueeze):
    required, in (0, 1] (1 with the identity compressor; smaller for stronger compression)."""
    if value is None:
        raise ConfigError(f"{name} needs consensus_step, the consensus step size in (0, 1] "
                          "(1 with the identity compressor; smaller for stronger "
                          "compression, e.g. 0.1-0.5 for top-k)")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or \
            not 0.0 < float(value) <= 1.0:
        raise ConfigError(f"{name}: consensus_step must be in (0, 1], got {value!r}")
    return float(value)


def diverged(step: int, algorithm: str, what: str = "model x") -> DivergenceError:
    """The :class:`DivergenceError` of a non-finite ``what`` at ``step``."""
    return DivergenceError(f"{algorithm}: {what} became non-finite at step {step}",
                           step=step, algorithm=algorithm, quantity=what)


def check_finite(x: np.ndarray, step: int, algorithm: str, what: str = "model x") -> None:
    """Raise :class:`DivergenceError` naming the step if x has NaN/inf (one pass, no
    temporary)."""
    if not all_finite(x):
        raise diverged(step, algorithm, what)


def check_downlink(algorithm: str, downlink: str) -> str:
    """Validate a ``downlink`` option (one of :data:`DOWNLINKS`)."""
    if downlink not in DOWNLINKS:
        raise ConfigError(f"{algorithm}: downlink must be one of {DOWNLINKS}, got {downlink!r}")
    return downlink


#: what a worker sends when the vector it should compress is non-finite: an empty payload
#: (or, where every payload has a fixed size, that many zero bytes: no header magic)
POISON = np.empty(0, dtype=np.uint8)


def encode_or_poison(compressor: Compressor, v: np.ndarray, key: Any,
                     nbytes: int | None = None) -> np.ndarray:
    """``compressor.encode(v, key)``, or a poison payload when v (d,) has NaN/inf (every
    compressor refuses it with a FloatingPointError in a pass it makes anyway — the Top-k
    selection, the norm, the max — as does a value beyond the float32 wire range).

    A torch model can return a non-finite gradient at a finite x (an overflowing loss). A
    worker that raised there alone would leave the others waiting in the next collective;
    instead it sends the poison payload (:data:`POISON`, or ``nbytes`` zero bytes when the
    gather has a fixed size), whose receivers (:func:`decode_add_or_poison`, the master's sum
    encoder) turn into NaN. The master's update then makes x non-finite, and every rank raises
    :class:`DivergenceError` at the same step.
    """
    try:
        return compressor.encode(v, key)
    except FloatingPointError:
        return POISON if nbytes is None else np.zeros(nbytes, dtype=np.uint8)


def decode_add_or_poison(compressor: Compressor, payload: np.ndarray, out: np.ndarray,
                         scale: float = 1.0) -> None:
    """out += scale · C(x) for the x behind ``payload``; out (d,) becomes NaN for a poison
    payload (see :func:`encode_or_poison`)."""
    if is_poison(payload):
        out[:] = np.nan
    else:
        compressor.decode_add(payload, out, scale)


def descend_checked(env: Env, x: np.ndarray, g: np.ndarray, step: int, algorithm: str) -> None:
    """x ← x − γ g in place (one fused pass, x and g (d,)); raise :class:`DivergenceError`
    if x became non-finite (x and g are the same on every rank, so all stop together)."""
    if not descend(x, x.dtype.type(env.lr), g):
        raise diverged(step, algorithm)


def descend_and_broadcast(env: Env, x: np.ndarray, g: np.ndarray | None, step: int,
                          algorithm: str) -> None:
    """The dense-model downlink (``downlink = "model"``): the master takes x ← x − γ g (x, g:
    (d,)), broadcasts x in place, and every rank checks it is finite."""
    if env.transport.is_master:
        assert g is not None
        descend(x, x.dtype.type(env.lr), g)
    env.transport.broadcast(x)
    check_finite(x, step, algorithm)


class Own(NamedTuple):
    """The uplink of ``aggregation = "tree"`` before the sum: this rank's own payload (None:
    it sends none), summed over the tree by :func:`share_sum` (nothing crossed MPI yet)."""

    payload: np.ndarray | None


def collect(alg: MasterWorkerAlgorithm, env: Env, payload: np.ndarray | None,
            nbytes: int) -> list[np.ndarray] | Own | None:
    """The uplink of one step: the gather of every worker's ``payload`` (``nbytes`` each) at
    the master (its list there, None elsewhere) — or, when the run aggregates over the tree
    and ``alg`` can (:meth:`MasterWorkerAlgorithm.aggregation_for`), :class:`Own`: the
    payload is summed over the tree in :func:`share_sum`."""
    if alg.aggregation_for(env.transport.aggregation) == "tree":
        return Own(payload)
    return env.transport.gather(payload, nbytes)


def share_sum(env: Env, compressor: Compressor, payloads: list[np.ndarray] | Own | None,
              x: np.ndarray) -> np.ndarray:
    """The compressed downlink: the master re-encodes s = Σ_i decode(payload_i) (summed in
    worker order; sparse union or dense, whichever is smaller, see
    :mod:`decomp.compress.aggregate`) and broadcasts it; returns it on every rank. x: a
    (d,) vector of the model's dtype (for the size). For :class:`Own` (tree aggregation)
    the sum is formed by the tree's fixed-order reduce-scatter + all-gather instead
    (:mod:`decomp.compress.merge`, :meth:`decomp.comm.MasterWorker.tree_sum`), in its
    grouping."""
    if isinstance(payloads, Own):
        state = env.workspace.keep(f"range_sum_{x.size}_{x.dtype}",
                                   lambda: RangeSum(x.size, x.dtype))
        state.start(compressor, payloads.payload)
        return env.transport.tree_sum(state)
    down = None
    if env.transport.is_master:
        assert payloads is not None
        enc = env.workspace.keep(f"sum_encoder_{x.size}_{x.dtype}",
                                 lambda: SumEncoder(x.size, x.dtype))
        down = enc.encode(compressor, payloads)
    return env.transport.broadcast_bytes(down)


def update_from_sum(env: Env, compressor: Compressor, downlink: str,
                    payloads: list[np.ndarray] | Own | None, out: np.ndarray | None, c: float,
                    like: np.ndarray) -> bool:
    """out ← out + c · (s / n) with s = Σ_i decode(payload_i): on every rank through the
    compressed downlink (:func:`share_sum`, :func:`apply_sum`), or on the master only for
    ``downlink = "model"`` (out is None elsewhere; the caller broadcasts). like: a (d,)
    vector of the model's dtype. True iff the entries written are finite."""
    if downlink == "compressed":
        assert out is not None
        return apply_sum(env, share_sum(env, compressor, payloads, like), out, c)
    if not env.transport.is_master:
        return True
    assert isinstance(payloads, list) and out is not None
    acc = aggregate(compressor, payloads, env.scratch("sum", like))
    t = out.dtype.type
    return bool(apply_dense(out, acc, t(c), t(env.n)))


def apply_sum(env: Env, down: np.ndarray, out: np.ndarray, c: float) -> bool:
    """out ← out + c · (s / n) for the sum s in the downlink payload ``down`` (the same
    arithmetic on every rank); True iff the entries written are finite."""
    dec = env.workspace.keep("sum_decoder", lambda: SumDecoder(env.n))
    return dec.apply(down, out, c)


def aggregate(compressor: Compressor, payloads: list[np.ndarray], out: np.ndarray) -> np.ndarray:
    """out = Σ_i decode(payload_i), decoded in worker order into ``out`` (d,) (NaN if any
    payload is poison); returns out. The dense-model downlink's aggregation."""
    out[:] = 0
    for p in payloads:
        decode_add_or_poison(compressor, p, out)
    return out


#: what a method's analysis needs of its compressor C (the class's ``requirement``):
#: E‖C(x) − x‖² ≤ (1 − α)‖x‖² ("contractive"), E C(x) = x ("unbiased"), or nothing ("any")
REQUIREMENTS = ("contractive", "unbiased", "any")


class AlgorithmOptions:
    """Hyper-parameters every algorithm of both families takes, checked once.

    compressor: C (Identity if omitted); batch_size: τ for stochastic gradients (None = the
    full local gradient); lr: optional default step size γ > 0 (used by :class:`decomp.Trainer`
    when it is given none; a step uses the resolved ``Env.lr``).

    Class declarations read by the rest of the code (the class is the unit): ``name``;
    ``requirement`` (one of :data:`REQUIREMENTS`, enforced by ``check``); ``reference``: its
    reference in :mod:`decomp.sim` as ``"module:function"``, resolved lazily by
    :func:`decomp.sim.reference` (so this package never imports decomp.sim).
    """

    name: ClassVar[str]
    requirement: ClassVar[str] = "any"
    reference: ClassVar[str]
    #: options renamed since: {old name: new name}; the old name is refused naming the new
    renamed: ClassVar[dict[str, str]] = {}

    def __init__(self, compressor: Compressor | None = None, *, batch_size: int | None = None,
                 lr: float | None = None, **unknown: Any) -> None:
        for old, new in type(self).renamed.items():
            if old in unknown:
                raise ConfigError(f"{self.name}: option '{old}' is now called '{new}' "
                                  f"(write {new} = {unknown[old]!r})")
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
    requirement: ClassVar[str] = "contractive"
    #: how a step's update reaches every rank: "compressed" (the master's re-encoded sum of the
    #: payloads), "model" (the master broadcasts the dense x: EF21+, or the ``downlink``
    #: option of EF/EF21/...), "allreduce" (GD, SGDM: a dense all-reduce of the gradients,
    #: d values received by every worker); read by ``decomp sim``'s byte count and the
    #: cost model (a method without the ``downlink`` option keeps its class's value)
    downlink: str = "compressed"
    #: the init sends each worker's g_i^0 at step 0 and the sum goes down (the EF21 family)
    init_round: ClassVar[bool] = False

    def alpha(self, d: int) -> float:
        """Contraction constant α of the compressor, for the theory step size."""
        return self.compressor.alpha(d) if self.uses_compressor else 1.0

    def check(self, d: int) -> None:
        """Refuse a compressor this algorithm's analysis does not cover (clear message)."""
        if not self.uses_compressor:
            return
        self.compressor.check(d)
        if self.requirement == "contractive":
            self.compressor.alpha(d)  # raises for an unbiased, unscaled compressor
        elif self.requirement == "unbiased" and not self.compressor.is_unbiased:
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

    def step(self, env: Env, state: Any) -> Any:
        """One iteration: returns the state at t + 1 (arrays are updated in place).

        Runs :meth:`_step` inside ``with env.watch:`` so the step's wall time not spent in
        the timed transport or codecs is booked as compute. Subclasses implement
        :meth:`_step`, not this.
        """
        with env.watch:
            return self._step(env, state)

    @abstractmethod
    def _step(self, env: Env, state: Any) -> Any:
        """The method's iteration (untimed body; the transport is timed by the env)."""

    def model(self, state: Any) -> np.ndarray:
        """The point at which metrics are evaluated (x^t, identical on every rank)."""
        return state.x

    # ---- declarations: traffic, codec work, steps to target, torch driving ---------------
    #: every rank applies the same update: the steps to a target do not depend on a topology
    steps_scaling: ClassVar[StepsScaling | None] = TOPOLOGY_FREE
    #: how :class:`decomp.torch.DistributedOptimizer` drives the method ("estimator" |
    #: "update"; "" = it cannot, :meth:`torch_refusal` says why)
    torch_driver: ClassVar[str] = ""
    #: option values the cost model uses when a method is priced without them (required
    #: options that do not change the traffic)
    pricing_options: ClassVar[dict[str, Any]] = {}
    #: compressed payloads a worker encodes per step (and decodes into its own state)
    encodes_per_step: ClassVar[int] = 1
    #: a worker decodes its own payload into its state (g_i, e_i); DCGD keeps none
    decodes_own: ClassVar[bool] = True

    def comm_pattern(self, d: int, n: int, degree: int = 0, *, master: str = "shared",
                     dtype: Any = np.float64, layout: Layout | None = None,
                     aggregation: str = "gather", ranks_per_node: int = 1) -> list[Call]:
        """The calls of one step for n workers and a d-vector of ``dtype`` (degree: unused
        here). Dense methods all-reduce the gradient; the others gather the workers' payloads
        at the master (:meth:`uplink`) and send the update back (:meth:`downlink_calls`) —
        or, with ``aggregation = "tree"`` (where :meth:`aggregation_for` allows it), sum
        them by the fixed-order reduce-scatter + all-gather of :mod:`decomp.comm.tree`
        (:func:`decomp.comm.pattern.tree_calls`; ranks_per_node > 1: node-aware).
        layout: the model's tensors (None: one slot), for a method whose traffic depends on
        the shapes (PowerSGD); a per-tensor compressor is bound to it beforehand."""
        world, fanin = master_world(n, master)
        if not self.uses_compressor:
            return [Call("allreduce", d * np.dtype(dtype).itemsize, 1, world,
                         what="dense gradient sum")]
        if self.aggregation_for(aggregation) == "tree" and master == "shared":
            return tree_calls(self.compressor, d, n, dtype, ranks_per_node)
        up = self.uplink(self.compressor.payload_bytes(d, dtype), n, fanin, world)
        return [up, *self.downlink_calls(d, self.expected_senders(n), world, dtype)]

    def expected_senders(self, n: int) -> float:
        """Workers that send a payload in one step (on average): all n."""
        return n

    def uplink(self, nbytes: int, n: int, fanin: int, world: int) -> Call:
        """The gather of one step's payloads of ``nbytes`` at the master."""
        return Call("gather", nbytes, fanin, world, what="payloads")

    def downlink_calls(self, d: int, senders: float, world: int, dtype: Any) -> list[Call]:
        """The broadcast of the master's update: the dense model, or the re-encoded sum of
        ``senders`` payloads (:func:`decomp.compress.aggregate.sum_payload_bytes`)."""
        if self.downlink == "model":
            return [Call("broadcast", d * np.dtype(dtype).itemsize, 1, world,
                         what="dense model")]
        return bcast_bytes_calls(sum_payload_bytes(self.compressor, d, senders, dtype), world,
                                 "sum of payloads")

    def codec_ops(self, n: int, degree: int = 0, *, master: str = "shared",
                  aggregation: str = "gather", d: int | None = None,
                  ranks_per_node: int = 1) -> list[CodecOp]:
        """The codec work of one step on the master's path: a worker's encode (before the
        gather), the shared master's decode into its own g_i / e_i (a dedicated master has
        none), the decode of every payload into the sum and the downlink's work. On the tree
        (``aggregation = "tree"``, d given; any node layout): every rank's own leaf (a
        decode) and its ranges (:class:`decomp.compress.merge.RangeSum`): encoding and
        adding the reduce-scatter's halves (they cover d once), encoding and putting the
        all-gather's (d once more) and the total's message — priced as 5 dense passes
        (axpy) over d, as measured on d = 1.1 M at 16 ranks."""
        if not self.uses_compressor:
            return []
        C = self.compressor
        own = 0 if master == "dedicated" else 1
        k = self.encodes_per_step
        head = [CodecOp("encode", C, k, "a worker's payload"),
                CodecOp("decode", C, k * own if self.decodes_own else 0, "own g_i / e_i")]
        if self.aggregation_for(aggregation) == "tree" and master == "shared" and d:
            ranges = CodecOp("axpy", None, 5 if n > 1 else 1,
                             "reduce-scatter, all-gather and total ranges")
            return [*head, CodecOp("decode", C, 1, "own leaf sum"), ranges,
                    *self.downlink_ops()]
        return [*head, CodecOp("decode", C, self.expected_senders(n), "aggregate"),
                *self.downlink_ops()]

    def downlink_ops(self) -> list[CodecOp]:
        """Codec work of the downlink on every rank: applying the decoded sum (one axpy)."""
        return [CodecOp("axpy", None, 1, "apply the sum")] if self.downlink == "compressed" \
            else []

    def torch_refusal(self) -> str:
        """Why :class:`decomp.torch.DistributedOptimizer` cannot drive this object ("" = it
        can, as :attr:`torch_driver`)."""
        return ""

    # ---- aggregation (run.aggregation) ----------------------------------------------------
    def tree_refusal(self) -> str:
        """Why this object sums its payloads at a master even when the run asks for
        ``aggregation = "tree"`` ("" = it runs on the tree). Dense methods all-reduce
        (MPI's own tree) either way; the dense-model downlink needs the master's sum."""
        if self.uses_compressor and self.downlink == "model":
            return (f"{self.name}: downlink = 'model' has the master descend and broadcast x; "
                    "the tree gives every rank the sum instead (downlink = 'compressed', the "
                    "same iterates)")
        return ""

    def aggregation_for(self, requested: str) -> str:
        """The aggregation this object runs with when the run asks for ``requested``:
        "tree" only if it can (:meth:`tree_refusal`), else "gather"."""
        return "tree" if requested == "tree" and not self.tree_refusal() else "gather"
