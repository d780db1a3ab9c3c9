"""``decomp bench step``: the wall time of one training step, decomp methods against PyTorch DDP.

Run under MPI, every rank the same command::

    mpiexec -n 4 decomp bench step --model mlp --json step.json

Every method trains the same torch model (:data:`MODELS`) on the same synthetic data (each
rank its own rows; a minibatch of ``batch`` rows per step, drawn by
:func:`decomp.problems.minibatch_rows` from (seed, rank, step) for every method, DDP included)
in the same processes. Methods (:data:`METHODS`): decomp's dense all-reduce SGD, EF21 with
Top-1 % (compressed downlink, and the dense-model broadcast for comparison), CHOCO-SGD with
Top-1 % on a ring, D-PSGD on a ring, PowerSGD of rank 1 and 4, EF21 with per-tensor Top-1 %
(per-tensor methods see the model's tensors: ``layout``); ``DistributedOptimizer`` with dense
SGD blocking and overlapped with backward (:mod:`decomp.bench.overlap`); DDP over gloo (plain,
the fp16 compression hook, the PowerSGD hook of rank 1 and 4); and "local", the same torch
step with no communication at all. Models (:data:`MODELS`): MLPs, ResNet-20 and a small
transformer (4 layers, width 256, sequence 128).

Interleaving: after ``warmup`` steps of each, ``rounds`` rounds run every method for ``steps``
steps in turn, so a drift of the (shared) machine affects all alike. A round's time of a
method is the slowest rank's mean step time (a barrier before it); the table gives the median
over rounds, the spread (min–max over rounds), the ratio of the median to plain DDP's, the
bytes this rank sent and received per step (rank 0's view for the master; the mean over ranks
is printed) and, for decomp methods, the split into compute / compress / comm (timing wrappers
of :mod:`decomp.comm.timing`). DDP's bytes are the ring all-reduce's, 2(n−1)/n times the
bucket bytes sent and received (gloo does not count them); for PowerSGD the P and Q factors
plus the uncompressed 1-D tensors.
"""

from __future__ import annotations

import gc
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from decomp.algorithms import CHOCOSGD, DPSGD, EF21, GD, PowerGossip, PowerSGD
from decomp.bench.overlap import OPTIMIZER_METHODS, OptimizerRunner, bench_model
from decomp.compress import make_compressor

#: --model name -> (make_model name, input shape, options)
MODELS: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "mlp": ("mlp", (1024,), {"hidden": (2048, 2048)}),  # d = 6,316,042
    "mlp-medium": ("mlp", (512,), {"hidden": (512, 512)}),  # d = 530,442
    "mlp-small": ("mlp", (64,), {"hidden": (128, 128)}),  # d = 26,122
    # the MNIST-1D MLP of jobs/configs/networks_mnist1d.toml (docs/networks.md)
    "mlp-mnist1d": ("mlp", (40,), {"hidden": (1024, 1024)}),  # d = 1,101,834
    "resnet20": ("resnet20", (3, 32, 32), {}),  # d = 269,722
    # 4 encoder layers, width 256, 4 heads, sequence 128 (decomp.bench.overlap)
    "transformer": ("transformer", (128, 16), {}),  # d = 3,165,962
}
N_CLASSES = 10
TOPK = {"kind": "topk", "ratio": 0.01}

#: label -> (kind, algorithm class (decomp) or DDP hook, compressor spec, options); the decomp
#: methods run with minibatches of ``--batch``
METHODS: dict[str, tuple[str, Any, Any, dict[str, Any]]] = {
    "sgd (dense all-reduce)": ("decomp", GD, None, {}),
    "sgd fp16 wire": ("decomp", GD, None, {"wire_dtype": "float16"}),
    "sgd bf16 wire": ("decomp", GD, None, {"wire_dtype": "bfloat16"}),
    "ef21 top1%": ("decomp", EF21, TOPK, {}),
    "ef21 top1% model-bcast": ("decomp", EF21, TOPK, {"downlink": "model"}),
    "choco top1% ring": ("decomp", CHOCOSGD, TOPK, {"consensus_step": 0.5}),
    "dpsgd ring": ("decomp", DPSGD, None, {}),
    "powergossip r1 ring": ("decomp", PowerGossip, None, {}),
    "ddp": ("ddp", "allreduce", None, {}),
    "ddp fp16": ("ddp", "fp16", None, {}),
    "ddp powersgd r1": ("ddp", "powersgd_hook", None, {"rank": 1}),
    "ddp powersgd r4": ("ddp", "powersgd_hook", None, {"rank": 4}),
    "powersgd r1": ("decomp", PowerSGD, None, {"rank": 1}),
    "powersgd r4": ("decomp", PowerSGD, None, {"rank": 4}),
    "ef21 per-tensor top1%": ("decomp", EF21, {**TOPK, "per_tensor": True}, {}),
    "local (no comm)": ("local", "", None, {}),
    **{label: ("optimizer", label, None, {}) for label in OPTIMIZER_METHODS},
}
REFERENCE = "ddp"


@dataclass
class StepRow:
    """One method's result. Times in milliseconds; bytes per rank per step."""

    method: str
    median_ms: float
    min_ms: float
    max_ms: float
    ratio_to_ddp: float
    bytes_sent: float
    bytes_received: float
    compute_ms: float | None = None
    compress_ms: float | None = None
    comm_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Runner:
    """One method on this rank: ``step()`` takes one training step; ``counts()`` gives
    (bytes sent, bytes received, compute s, compress s, comm s) accumulated so far."""

    step: Callable[[], None]

    def counts(self) -> tuple[float, float, float | None, float | None, float | None]:
        return 0.0, 0.0, None, None, None

    def close(self) -> None:
        pass


def _data(rank: int, input_shape: tuple[int, ...], rows: int, seed: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed * 1000 + rank)
    X = torch.randn((rows, *input_shape), generator=g)
    y = torch.randint(0, N_CLASSES, (rows,), generator=g)
    return X, y


class _DecompRunner(_Runner):
    def __init__(self, comm: Any, label: str, cls: type, comp: Any, opts: dict[str, Any],
                 model: Any, data: tuple[Any, Any], batch: int, lr: float, seed: int) -> None:
        import copy

        from torch import nn

        from decomp.algorithms.registry import DECENTRALIZED_FAMILY, family_of_class
        from decomp.runner.session import Session, open_transport
        from decomp.topologies import mixing_matrix
        from decomp.torch.flat import FlatModel
        from decomp.torch.problem import TorchProblem

        if "downlink" in opts and "downlink" not in inspect.signature(cls).parameters:
            raise KeyError(f"{label}: this decomp has no downlink option")
        alg = cls(make_compressor(comp), batch_size=batch, **opts) if comp is not None \
            else cls(batch_size=batch, **opts)
        flat = FlatModel(copy.deepcopy(model))
        self.problem = TorchProblem(flat, nn.CrossEntropyLoss(), *data, seed=seed,
                                    worker=comm.Get_rank())
        family = family_of_class(cls)
        mixing = mixing_matrix("ring", comm.Get_size()) if family == DECENTRALIZED_FAMILY else None
        tp = open_transport(family, comm, mixing=mixing)
        self.session = Session(alg, tp, self.problem, lr=lr, seed=seed, layout=flat.layout)
        self.watch = self.session.env.watch  # either family: the env times its steps
        x0 = flat.params.copy()
        self.session.warm_up(x0)
        self.session.init(x0)
        flat.bind(self.session.model())
        self.tp = tp
        self.watch.reset()
        tp.bytes.reset()

    def step(self) -> None:  # type: ignore[override]
        self.session.step()

    def counts(self) -> tuple[float, float, float | None, float | None, float | None]:
        b = self.tp.bytes
        tot = self.watch.totals
        return float(b.up), float(b.down), tot[0], tot[1], tot[2]

    def close(self) -> None:
        self.session.close()


def _torch_step(module: Any, data: tuple[Any, Any], batch: int, seed: int, rank: int,
                lr: float) -> Callable[[int], None]:
    import torch
    from torch import nn

    from decomp.problems import minibatch_rows

    X, y = data
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(module.parameters(), lr=lr)

    def step(t: int) -> None:
        rows = torch.from_numpy(minibatch_rows(seed, rank, t, X.shape[0], batch))
        opt.zero_grad(set_to_none=False)
        loss_fn(module(X[rows]), y[rows]).backward()
        opt.step()

    return step


class _TorchRunner(_Runner):
    """DDP (hook "allreduce" | "fp16" | "powersgd_hook") or a local step with no communication."""

    def __init__(self, comm: Any, kind: str, hook: str, model: Any, data: tuple[Any, Any],
                 batch: int, lr: float, seed: int, rank: int = 4) -> None:
        import copy

        module = copy.deepcopy(model)
        n = comm.Get_size()
        d = sum(p.numel() for p in module.parameters())
        self.t = 0
        self.sent_per_step = 0.0
        if kind == "ddp":
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel as DDP

            # each DDP its own group; one gloo thread per group: the PowerSGD hook's concurrent
            # all-reduces otherwise cross on the wire ("Received data size doesn't match")
            opts = dist.ProcessGroupGloo._Options()
            opts._threads = 1
            opts._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
            pg = dist.new_group(backend="gloo", pg_options=opts)
            # PowerSGD chains its all-reduces in gloo callbacks; with several buckets the next
            # bucket's all-reduce can overtake them on one rank only: one bucket for it
            cap = {"bucket_cap_mb": 4096.0} if hook == "powersgd_hook" else {}
            module = DDP(module, process_group=pg, **cap)
            ring = 2.0 * (n - 1) / n
            if hook == "fp16":
                from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

                module.register_comm_hook(None, default_hooks.fp16_compress_hook)
                self.sent_per_step = ring * 2 * d
            elif hook == "powersgd_hook":
                from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

                state = psgd.PowerSGDState(process_group=pg, matrix_approximation_rank=rank,
                                           start_powerSGD_iter=2, use_error_feedback=True,
                                           warm_start=True)
                module.register_comm_hook(state, psgd.powerSGD_hook)
                self.sent_per_step = ring * 4 * _powersgd_floats(module.module, rank)
            else:
                self.sent_per_step = ring * 4 * d
        self._step = _torch_step(module, data, batch, seed, comm.Get_rank(), lr)

    def step(self) -> None:  # type: ignore[override]
        self.t += 1
        self._step(self.t)
        self.steps = self.t

    def counts(self) -> tuple[float, float, float | None, float | None, float | None]:
        return self.sent_per_step * self.t, self.sent_per_step * self.t, None, None, None


def _powersgd_floats(module: Any, rank: int) -> int:
    """Floats all-reduced per step by the PowerSGD hook: P (m×r) and Q (n×r) per matrix
    parameter (viewed as m × rest) plus every 1-D parameter uncompressed."""
    total = 0
    for p in module.parameters():
        if p.ndim <= 1:
            total += p.numel()
        else:
            m = p.shape[0]
            k = p.numel() // m
            r = min(rank, m, k)
            total += (m + k) * r
    return total


def _init_ddp(comm: Any) -> None:
    """torch.distributed over gloo, its rendezvous taken from the MPI communicator."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        return
    # rank 0's address: this machine, or on the emulated cluster (jobs/local/emulate/) rank 0's
    # host, which the other hosts reach over their shaped links
    addr = os.environ.get("DECOMP_DDP_ADDR", "127.0.0.1")
    port = 0
    if comm.Get_rank() == 0:
        with socket.socket() as s:
            s.bind((addr, 0))
            port = s.getsockname()[1]
    port = comm.bcast(port, root=0)
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port),
                      RANK=str(comm.Get_rank()), WORLD_SIZE=str(comm.Get_size()))
    dist.init_process_group("gloo", rank=comm.Get_rank(), world_size=comm.Get_size())


def run_step_bench(comm: Any, *, model: str = "mlp", methods: list[str] | None = None,
                   steps: int = 5, rounds: int = 5, warmup: int = 3, batch: int = 32,
                   lr: float = 0.01, seed: int = 0,
                   log: Callable[[str], None] | None = None) -> list[StepRow]:
    """Time every method (collective over ``comm``); returns the rows on every rank."""
    import torch

    if model not in MODELS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    torch.set_num_threads(1)
    mname, shape, mopts = MODELS[model]
    net = bench_model(mname, input_shape=shape, n_classes=N_CLASSES, seed=seed, **mopts)
    data = _data(comm.Get_rank(), shape, 8 * batch, seed)
    labels = list(METHODS) if not methods else methods
    if any(METHODS[m][0] == "ddp" for m in labels):
        _init_ddp(comm)
    runners: dict[str, _Runner] = {}
    for label in labels:
        kind, name, comp, opts = METHODS[label]
        try:
            if kind == "decomp":
                runners[label] = _DecompRunner(comm, label, name, comp, opts, net, data, batch,
                                               lr, seed)
            elif kind == "optimizer":  # DistributedOptimizer, overlapped or not
                runners[label] = OptimizerRunner(comm, label, net, data, batch, lr, seed)
            else:
                runners[label] = _TorchRunner(comm, kind, name, net, data, batch, lr, seed,
                                              **opts)
        except KeyError as e:  # an option this version does not have
            if log:
                log(f"# skipped {label}: {e}")
    for r in runners.values():
        for _ in range(warmup):
            r.step()
    base = {label: r.counts() for label, r in runners.items()}
    times: dict[str, list[float]] = {label: [] for label in runners}
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for rnd in range(rounds):
            for label, r in runners.items():
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(steps):
                    r.step()
                dt = (time.perf_counter() - t0) / steps
                times[label].append(comm.allreduce(dt, op=_mpi_max()))
            if log and comm.Get_rank() == 0:
                log(f"# round {rnd + 1}/{rounds} done")
    finally:
        if gc_was:
            gc.enable()
    total_steps = rounds * steps
    rows = []
    ref = float(np.median(times[REFERENCE])) if REFERENCE in times else float("nan")
    for label, r in runners.items():
        now = r.counts()
        delta = [None if a is None else (a - (b or 0.0)) / total_steps
                 for a, b in zip(now, base[label], strict=True)]
        mean = comm.allreduce(np.array([delta[0] or 0.0, delta[1] or 0.0]), op=_mpi_sum())
        mean = mean / comm.Get_size()
        split = [None if v is None else 1e3 * comm.allreduce(v, op=_mpi_max()) for v in delta[2:]]
        med = float(np.median(times[label]))
        rows.append(StepRow(label, 1e3 * med, 1e3 * min(times[label]), 1e3 * max(times[label]),
                            med / ref, float(mean[0]), float(mean[1]), *split))
    for r in runners.values():
        r.close()
    if any(METHODS[m][0] == "ddp" for m in labels):
        import torch.distributed as dist

        dist.destroy_process_group()  # else gloo's threads can keep the ranks from exiting
    return rows


def _mpi_max() -> Any:
    from mpi4py import MPI

    return MPI.MAX


def _mpi_sum() -> Any:
    from mpi4py import MPI

    return MPI.SUM


HEADER = (f"{'method':<24} {'median ms':>9} {'spread ms':>13} {'x DDP':>6} {'sent B/step':>12} "
          f"{'recv B/step':>12} {'compute':>8} {'compress':>8} {'comm':>8}")


def format_row(r: StepRow) -> str:
    def ms(v: float | None) -> str:
        return f"{v:8.1f}" if v is not None else f"{'-':>8}"

    return (f"{r.method:<24} {r.median_ms:9.1f} {r.min_ms:6.1f}-{r.max_ms:<6.1f} "
            f"{r.ratio_to_ddp:6.2f} {r.bytes_sent:12,.0f} {r.bytes_received:12,.0f} "
            f"{ms(r.compute_ms)} {ms(r.compress_ms)} {ms(r.comm_ms)}")


def format_table(rows: list[StepRow]) -> str:
    return "\n".join([HEADER] + [format_row(r) for r in rows])


def overlap_probe(comm: Any, d: int = 6_316_042, compute_ms: float = 50.0, reps: int = 5,
                  method: str = "neighbor") -> dict[str, float]:
    """What posting the neighbour exchange before a computation hides (collective).

    A ring of float32 models of length d is exchanged (D-PSGD's message) around a busy
    computation of about ``compute_ms`` (numpy passes over a 4 MB array, no MPI calls):
    ``serial`` = compute, then exchange; ``overlapped`` = post, compute, wait. Medians over
    ``reps`` of the slowest rank, milliseconds; ``hidden`` = serial − overlapped. Run::

        mpiexec -n 4 python -c "from decomp.bench.step import main_overlap; main_overlap()"
    """
    from decomp.comm import Neighborhood
    from decomp.topologies import mixing_matrix

    nb = Neighborhood(mixing_matrix("ring", comm.Get_size()), comm, method=method)
    x = np.ones(d, dtype=np.float32).view(np.uint8)
    work = np.ones(1_000_000, dtype=np.float32)
    t0 = time.perf_counter()
    passes = 0
    while time.perf_counter() - t0 < compute_ms / 1e3:
        np.multiply(work, 1.0000001, out=work)
        passes += 1

    def compute() -> None:
        for _ in range(passes):
            np.multiply(work, 1.0000001, out=work)

    res: dict[str, list[float]] = {"compute": [], "exchange": [], "serial": [],
                                   "overlapped": []}
    for _ in range(reps):
        for name in res:
            comm.Barrier()
            t0 = time.perf_counter()
            if name == "overlapped":
                nb.exchange_start(x, x.size)
                compute()
                nb.exchange_finish()
            else:
                if name in ("compute", "serial"):
                    compute()
                if name in ("exchange", "serial"):
                    nb.exchange(x, x.size)
            res[name].append(comm.allreduce(time.perf_counter() - t0, op=_mpi_max()))
    nb.close()
    out = {k: 1e3 * float(np.median(v)) for k, v in res.items()}
    out["hidden"] = out["serial"] - out["overlapped"]
    return out


def main_overlap() -> None:  # pragma: no cover
    """Print :func:`overlap_probe` for 16 KB, 1 MB and 25 MB messages on rank 0."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    for d in (4096, 262_144, 6_316_042):
        r = overlap_probe(comm, d=d)
        if comm.Get_rank() == 0:
            print(f"{comm.Get_size()} ranks, ring, {4 * d:>11,} B per message: "
                  + ", ".join(f"{k} {v:.1f} ms" for k, v in r.items()), flush=True)
