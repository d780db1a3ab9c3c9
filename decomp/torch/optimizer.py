"""``decomp.torch.DistributedOptimizer``: a decomp algorithm under the user's own torch loop.

How it drives each family, the equations, exactness, checkpoints and the bucketed overlap with
backward (:mod:`decomp.torch.buckets`): docs/torch.md, "Your own loop". ``should_stop``,
``save``/``load`` (one folder, bit for bit), ``export``: :mod:`decomp.torch.saving`; a rank
missing a collective call ends the job: :mod:`decomp.torch.guard`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from decomp.algorithms.base import diverged
from decomp.algorithms.registry import DECENTRALIZED_FAMILY
from decomp.errors import ConfigError
from decomp.kernels.fused import all_finite, descend
from decomp.launch import start_script
from decomp.runner.build import build_session, check_family, default_algorithm, world
from decomp.torch import compat, guard, ownership
from decomp.torch.flat import FlatModel
from decomp.torch.oracle import GradientOracle, driver_kind
from decomp.torch.overlap import attach as attach_buckets
from decomp.torch.saving import LoopMethods
from decomp.torch.state import check_meta, from_torch, to_torch


class DistributedOptimizer(LoopMethods, torch.optim.Optimizer):
    """Wrap ``optimizer`` (any ``torch.optim.Optimizer``, or None) so that ``step()`` runs
    ``algorithm`` across the ranks of ``comm``.

    Args:
        optimizer: the user's optimizer over (a subset of) ``model``'s parameters, or None for
            the algorithm's own update x ← x − γ ĝ (γ = ``lr`` or the algorithm's ``lr``).
        model: the ``torch.nn.Module`` being trained (float32, CPU). Its trainable parameters
            form x ∈ R^d; rank 0's parameters and buffers are broadcast at construction.
        algorithm: a decomp algorithm object (default ``GD()``: dense all-reduce, i.e. DDP);
            without ``batch_size`` (the minibatch is the user's).
        lr: step size γ of ``optimizer=None`` (default: the algorithm's ``lr``); refused with
            a torch optimizer, whose own ``lr`` governs.
        comm: mpi4py communicator (default ``MPI.COMM_WORLD``); every rank is a worker (a
            shared master: rank 0) or a node of W.
        topology, weights, topology_options, exchange: the decentralized family's mixing
            matrix W and wire method, as for :class:`decomp.Trainer` (default ring).
        seed: run seed: compressor randomness is a function of (seed, rank, step).
        find_unused_parameters: master–worker: ``zero_grad()`` sets ``.grad`` to None and
            every ``step()`` all-reduces which parameters got a gradient (a few bytes, counted
            as control); a parameter whose gradient is None on every rank keeps ``.grad =
            None`` for the wrapped optimizer (skipped, as torch would), one None on some ranks
            only counts as zero there. False (default): None counts as zero everywhere.
        check_every: decentralized: steps between collective divergence checks.
        overlap: send gradient buckets while backward runs (GD/SGD, SGDM, AllreduceSGD; EF21,
            DCGD per-tensor; PowerSGD; docs/torch.md, "Overlap with backward"); accumulate with
            :meth:`no_sync`. bucket_cap_mb: its bucket size (MiB; None: DDP's 25 MiB scaled
            to the model, :func:`decomp.torch.buckets.cap_bytes`).
        comm_timeout: the watchdog's limit (s) on a collective call; :mod:`decomp.torch.guard`.
        aggregation: master–worker: "tree" | "gather" | "auto" (None: auto, docs/netmodel.md).
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, model: nn.Module,
                 algorithm: Any = None, *, lr: float | None = None, comm: Any = None,
                 topology: Any = None, weights: str = "metropolis",
                 topology_options: dict[str, Any] | None = None, exchange: str = "auto",
                 seed: int = 0, find_unused_parameters: bool = False,
                 check_every: int = 50, overlap: bool = False,
                 bucket_cap_mb: float | None = None,
                 comm_timeout: float | None = 300.0, aggregation: str | None = None) -> None:
        comm = world(comm)  # first: an error on any rank from here on ends the job
        start_script(comm)  # torchrun / srun without PMI refused; threads per rank
        algorithm = default_algorithm(algorithm)
        self.kind = driver_kind(algorithm)
        self.family = check_family(algorithm,
                                   topology=topology is not None or bool(topology_options))
        decentralized = self.family == DECENTRALIZED_FAMILY
        if isinstance(optimizer, DistributedOptimizer):
            raise ConfigError("the optimizer is already a DistributedOptimizer")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(f"optimizer must be a torch.optim.Optimizer or None, got "
                              f"{type(optimizer).__name__}")
        if check_every < 1:
            raise ConfigError(f"check_every must be >= 1, got {check_every}")
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.algorithm = algorithm
        self.optimizer = optimizer
        self.find_unused = bool(find_unused_parameters) and not decentralized
        self.check_every = int(check_every)
        compat.warn_sync_batchnorm(model)
        self.flat = FlatModel(model)
        self._flat_ids = {id(p) for p in self.flat.parameters()}
        if optimizer is None:
            lr = lr if lr is not None else getattr(algorithm, "lr", None)
            if lr is None or not lr > 0:
                raise ConfigError("DistributedOptimizer(None, ...) takes the algorithm's own "
                                  "update: give it a positive lr (lr= or the algorithm's lr)")
        elif lr is not None:
            raise ConfigError("lr= is for optimizer=None; the wrapped optimizer's own lr "
                              "governs (set it there, or with an LR scheduler)")
        else:
            self._check_params(optimizer.param_groups)
        self._broadcast_rest(model)
        d = self.flat.d
        pseudo = decentralized and optimizer is not None
        self._prev = np.empty(d, np.float32) if pseudo else None  # x_i before the local step
        self.oracle = GradientOracle(np.zeros(d, np.float32) if pseudo else self.flat.grads)
        env_lr = {"estimator": 0.0, "update": 1.0, "gossip": 1.0}[self.kind]
        if optimizer is None and self.kind != "estimator":
            env_lr = float(lr)  # type: ignore[arg-type]
        self.session = build_session(
            algorithm, comm, problem=lambda worker, n: self.oracle, lr=env_lr, seed=seed,
            topology=topology, weights=weights, topology_options=topology_options,
            exchange=exchange, share=(self.flat.params, self.flat.buffers),
            layout=self.flat.layout, aggregation=aggregation)
        self.transport = self.session.transport
        self.buckets = attach_buckets(self.flat, self.session, algorithm, pseudo=pseudo,
                                     overlap=overlap, bucket_cap_mb=bucket_cap_mb)
        self.mixing: Any = self.session.mixing
        self._probe: np.ndarray | None = None  # "update" with a torch optimizer: p = −ĝ
        self._used = np.zeros(len(self.flat.slots), np.int32)
        self._synced = False
        self.steps = 0  # step() calls so far
        if optimizer is None:
            super().__init__(list(self.flat.parameters()), {"lr": float(lr)})  # type: ignore
        else:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            super().__init__(params or list(self.flat.parameters()), dict(optimizer.defaults))
        self._guard = ownership.guarded(comm, comm_timeout, d)  # refused: too many open
        ownership.attach(self)  # dropped: its watchdog thread stops, its folder locks go
        self._ready = True  # from here on param_groups, state, defaults are the wrapped ones

    # the wrapped optimizer's param_groups / state / defaults, also after its load_state_dict
    # replaces them, so LR schedulers act on the wrapped optimizer
    def _inner_attr(self, name: str) -> Any:
        d = self.__dict__
        if d.get("_ready") and d.get("optimizer") is not None:
            return getattr(d["optimizer"], name)
        return d["_" + name]

    def _set_inner_attr(self, name: str, value: Any) -> None:
        d = self.__dict__
        if d.get("_ready") and d.get("optimizer") is not None:
            setattr(d["optimizer"], name, value)
        else:
            d["_" + name] = value

    param_groups = property(lambda self: self._inner_attr("param_groups"),  # type: ignore
                            lambda self, v: self._set_inner_attr("param_groups", v))
    state = property(lambda self: self._inner_attr("state"),  # type: ignore
                     lambda self, v: self._set_inner_attr("state", v))
    defaults = property(lambda self: self._inner_attr("defaults"),  # type: ignore
                        lambda self, v: self._set_inner_attr("defaults", v))

    # --- set-up ------------------------------------------------------------------------------
    def _check_params(self, groups: list[dict[str, Any]]) -> None:
        for g in groups:
            for p in g["params"]:
                if p.requires_grad and id(p) not in self._flat_ids:
                    raise ConfigError(f"the optimizer holds a parameter of shape "
                                      f"{tuple(p.shape)} that is not a trainable parameter of "
                                      "the model: wrap the model the optimizer trains")

    def _broadcast_rest(self, model: nn.Module) -> None:
        """Rank 0's values of what is not in the flat vectors (frozen parameters, integer
        buffers) everywhere (set-up, not counted); :func:`build_session` shares x^0 and the
        float buffers: the model starts the same on every rank, as DDP does."""
        rest = [p for p in model.parameters() if id(p) not in self._flat_ids]
        rest += [b for b in model.buffers() if not b.is_floating_point()]
        for t in rest:
            with torch.no_grad():
                if t.is_contiguous() and t.dtype not in (torch.bfloat16,):
                    self.comm.Bcast(t.detach().numpy(), root=0)
                else:
                    t.copy_(self.comm.bcast(t.detach(), root=0))

    # --- the loop ----------------------------------------------------------------------------
    model = property(lambda self: self.flat.module, doc="The trained module.")
    decentralized = property(lambda self: self.family == DECENTRALIZED_FAMILY)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients. The flat gradient buffer is zeroed in place and every
        ``.grad`` stays a view of it (backward then writes in place, no allocation), unless
        ``find_unused_parameters`` asks for torch's None semantics (``set_to_none``)."""
        if self.buckets is not None:  # a backward whose step was skipped: its buckets land
            self.buckets.discard()
        if self.find_unused and set_to_none:
            for p in self.flat.parameters():
                p.grad = None
        else:
            self.flat.check_grads()  # re-attach any replaced .grad
            self.flat.zero_grad()
        for g in self.param_groups:
            for p in g["params"]:
                if id(p) not in self._flat_ids and p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step (collective: every rank calls it once per iteration).

        Master–worker: :meth:`synchronize` (unless already called), then the wrapped
        optimizer's step with ĝ as the gradient (or x ← x − γ ĝ). Decentralized: the wrapped
        optimizer's local step, then the algorithm's step (its gossip). ``closure``
        re-evaluates the loss and gradients first, as for torch optimizers."""
        compat.refuse_grad_scaler(self)  # the same on every rank, before any collective
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.decentralized:
            self._gossip_step()
        else:
            if not self._synced:
                self._aggregate()
            self._synced = False
            self._apply()
        self.steps += 1
        return loss

    def synchronize(self) -> None:
        """Master–worker with a torch optimizer (collective): compress and aggregate now, so
        ``p.grad`` holds ĝ^t before :meth:`step` (e.g. to clip the aggregated gradient, as
        with Horovod's ``synchronize``); the next :meth:`step` only applies it."""
        if self.decentralized or self.optimizer is None:
            raise ConfigError("synchronize() is for a master–worker algorithm under a torch "
                              "optimizer (decentralized nodes mix parameters after their own "
                              "step; optimizer=None applies the update inside step())")
        if self._synced:
            raise ConfigError("synchronize() called twice before step()")
        self._aggregate()
        self._synced = True

    _step_supports_amp_scaling = True  # GradScaler.step always calls step(): refused there

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip what step() applies: ĝ^t (master–worker; synchronizes first) or this node's
        gradient (decentralized); :func:`decomp.torch.compat.clip_grad_norm_`."""
        return compat.clip_grad_norm_(self, max_norm, norm_type)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """As DDP's: backward inside only accumulates. Without ``overlap`` a no-op (only
        step() communicates); with it the next backward outside posts the buckets."""
        with self.buckets.paused() if self.buckets is not None else contextlib.nullcontext():
            yield

    def _start(self) -> None:
        """The algorithm's init at the model's x^0; the model is then bound (zero-copy) to
        the algorithm's x, except for the probe of "update" under a torch optimizer."""
        s = self.session
        s.warm_up(self.flat.params)
        s.init(self.flat.params)
        x = self.algorithm.model(s.state)
        if self.kind == "update" and self.optimizer is not None:
            self._probe = x
        else:
            self.flat.bind(x)

    def _collect(self) -> None:
        """This rank's gradient into the flat buffer (None counts as zero); with
        ``find_unused_parameters``, which parameters got one on any rank."""
        if self.find_unused:
            for i, p in enumerate(self.flat.parameters()):
                self._used[i] = p.grad is not None
        self.flat.check_grads()
        if self.find_unused:
            self.transport.allreduce_uncounted(self._used)
            self.transport.bytes.control += self._used.nbytes

    def _aggregate(self) -> None:
        """Master–worker: run the algorithm's init or step on this step's gradient and leave
        ĝ^t in the flat gradient buffer (with a torch optimizer): docs/torch.md, "What the
        wrapped optimizer sees"."""
        self._collect()
        s = self.session
        if s.state is None:
            self._start()
            if self.kind == "estimator":  # init consumed this gradient: g^0
                self._estimate()
                return
        if self.optimizer is None:
            s.env.lr = self._lr() if self.kind == "update" else 0.0
        if self._probe is not None:
            self._probe.fill(0.0)
        s.step()
        if self.kind == "estimator":
            self._estimate()
        elif self._probe is not None:
            np.negative(self._probe, out=self.flat.grads)  # ĝ = −p
            self._skip_unused()

    def _estimate(self) -> None:
        g = self.session.state.g
        if not all_finite(g):  # g is the same on every rank: all raise together
            raise diverged(self.session.state.t, self.algorithm.name, "estimator g")
        if self.optimizer is not None:
            np.copyto(self.flat.grads, g)
            self._skip_unused()

    def _skip_unused(self) -> None:
        for p, used in zip(self.flat.parameters(), self._used, strict=True):
            if self.find_unused and not used:
                p.grad = None

    def _apply(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
        elif self.kind == "estimator":  # x^{t+1} = x^t − γ g^t, EF21's own descend
            x, g = self.flat.params, self.session.state.g
            if not descend(x, x.dtype.type(self._lr()), g):
                raise diverged(self.session.state.t + 1, self.algorithm.name)

    def _gossip_step(self) -> None:
        s = self.session
        if s.state is None:
            self._start()
        if self.optimizer is not None:  # Δ_i = x_i' − x_i replaces −γ∇F_i(x_i; ξ)
            x, prev = self.flat.params, self._prev
            assert prev is not None
            np.copyto(prev, x)
            self.optimizer.step()
            np.subtract(prev, x, out=self.oracle.vector)  # pseudo-gradient x_i − x_i'
            np.copyto(x, prev)
        else:
            self.flat.check_grads()
            s.env.lr = self._lr()
        s.step()
        if (self.steps + 1) % self.check_every == 0:
            self.check_divergence()

    _mode = property(lambda self: "own update" if self.optimizer is None else "torch optimizer")

    def _lr(self) -> float:
        return float(self.param_groups[0]["lr"])

    # --- checks, traffic, evaluation -----------------------------------------------------------
    def check_divergence(self) -> None:
        """Collective: raise the same :class:`~decomp.errors.DivergenceError` on every rank if
        any node met a non-finite value (decentralized; master–worker steps raise at once)."""
        self.session.check_divergence(self.algorithm.name, self.session.steps_done)

    @property
    def bytes(self) -> Any:
        """This rank's :class:`~decomp.comm.ByteCounter`: ``up`` payload bytes sent (to the
        master, the neighbours or into an all-reduce), ``down`` received, ``control``."""
        return self.transport.bytes

    def traffic(self) -> dict[str, float]:
        """Collective: payload bytes per rank, mean over ranks: ``sent``, ``received``, and
        ``control`` (size messages, the unused-parameter mask)."""
        b = self.transport.bytes
        v = np.array([b.up, b.down, b.control], dtype=np.float64)
        self.transport.allreduce_uncounted(v)
        v /= self.comm.Get_size()
        return {"sent": float(v[0]), "received": float(v[1]), "control": float(v[2])}

    @contextlib.contextmanager
    def averaged(self) -> Iterator[nn.Module]:
        """Collective: inside, the model holds x̄ = (1/n) Σ_i x_i (decentralized; the
        master–worker x is already the same everywhere) and the mean of every rank's float
        buffers (BatchNorm statistics); both are restored on exit. Off the clock, uncounted."""
        flat = self.flat
        saved = flat.params.copy() if self.decentralized else None
        own = flat.buffers.copy()
        n = self.comm.Get_size()
        try:
            for vec, do in ((flat.params, saved is not None), (flat.buffers, own.size > 0)):
                if do:
                    acc = vec.astype(np.float64)
                    self.transport.allreduce_uncounted(acc)
                    vec[:] = acc / n
            yield flat.module
        finally:
            if saved is not None:
                flat.params[:] = saved
            flat.buffers[:] = own

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This rank's state: the wrapped optimizer's ``state_dict()`` (or the param groups'
        hyper-parameters), the algorithm state (x or x_i, error-feedback memories,
        estimators, replicas; torch tensors), step counts and byte counters. ``torch.save``
        it per rank with the model's own ``state_dict()``."""
        s = self.session
        meta = {"algorithm": self.algorithm.name, "mode": self._mode, "rank": self.rank,
                "world": self.comm.Get_size(), "d": self.flat.d, "steps": self.steps,
                "session": None if s.state is None else to_torch(s.state_dict())}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"decomp": meta,
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "param_groups": groups if self.optimizer is None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of the same rank (collective: every rank loads
        its own). The next :meth:`step` is exactly the one the saved run would have taken."""
        meta = state_dict["decomp"]
        check_meta(meta, algorithm=self.algorithm.name, mode=self._mode, rank=self.rank,
                   world=self.comm.Get_size(), d=self.flat.d)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state_dict["optimizer"])
        else:
            for g, saved in zip(self.param_groups, state_dict["param_groups"], strict=True):
                g.update(saved)
        self.steps = int(meta["steps"])
        self._synced = False
        if meta["session"] is not None:
            if self.session.state is None:  # a template to restore into (for EF21 one
                grads = self.oracle.vector  # gather of zeros; the counters are restored)
                self.oracle.vector = np.zeros_like(grads)
                try:
                    self._start()
                finally:
                    self.oracle.vector = grads
            self.session.load_state_dict(from_torch(meta["session"]))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (its parameters must be the model's)."""
        if not getattr(self, "_ready", False):  # torch's own __init__
            super().add_param_group(param_group)
            return
        if self.optimizer is None:
            raise ConfigError("optimizer=None has one parameter group (all of x, one γ); "
                              "wrap a torch optimizer for several")
        self._check_params([param_group])
        self.optimizer.add_param_group(param_group)

    def close(self) -> None:
        """Collective: stop the watchdog, free its communicators, release the folder locks."""
        ownership.close(self)

    def _stop_poll(self) -> Any:  # its vote's communicator counts (decomp.torch.ownership)
        return ownership.track_poll(self, super()._stop_poll())

    def __repr__(self) -> str:
        inner = "None" if self.optimizer is None else type(self.optimizer).__name__
        where = (f"{self.comm.Get_size()} nodes on {self.mixing.name}" if self.mixing is not None
                 else f"{self.comm.Get_size()} workers")
        return (f"DistributedOptimizer({inner}, {type(self.algorithm).__name__}, "
                f"{self.kind}, d={self.flat.d}, {where})")


guard.guard_methods(DistributedOptimizer)
__all__ = ["DistributedOptimizer"]
