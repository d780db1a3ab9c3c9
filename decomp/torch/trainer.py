"""``decomp.Trainer``: train a torch model with any decomp algorithm across MPI ranks.

A user script, launched with ``mpiexec -n 4 python train.py``::

    import torch, decomp
    from decomp.compress import TopK
    from decomp.algorithms import EF21

    data = decomp.datasets.load("mnist1d")
    model = decomp.models.make_model("cnn1d", input_shape=data.input_shape, n_classes=10)
    trainer = decomp.Trainer(model, torch.nn.CrossEntropyLoss(), data,
                             algorithm=EF21(compressor=TopK(ratio=0.01), lr=0.05),
                             batch_size=32)
    history = trainer.fit(steps=2000, eval_every=200)

    # decentralized: every rank a node of W with its own x_i (topology="ring")

Every rank runs the same script. The Trainer

1. limits torch/BLAS threads per rank (cores / ranks on the node unless ``threads`` or
   OMP_NUM_THREADS says otherwise);
2. cuts the training rows into one shard per worker (``partition``; any torch ``Dataset``: only
   this worker's rows are read, per batch) and prints the label counts on rank 0;
3. makes the model flat (:class:`decomp.torch.FlatModel`), wraps this worker's shard in a
   :class:`decomp.torch.TorchProblem` and opens the session with
   :func:`decomp.runner.build.build_session` (as ``decomp run`` and the
   :class:`~decomp.torch.DistributedOptimizer` do: rank 0's x^0 and buffers broadcast, the
   family's transport);
4. runs ``algorithm.init`` / ``algorithm.step`` — master–worker algorithms over
   :class:`decomp.comm.MasterWorker`, decentralized ones over :class:`decomp.comm.Neighborhood`
   on the mixing matrix W of ``topology`` (one node per rank; every registered method and its
   family: :data:`decomp.algorithms.REGISTRY`, docs/algorithms.md); after ``init`` the
   module's parameters are bound to the algorithm's x (x_i) zero-copy, so a step copies
   nothing between torch and numpy;
5. every ``eval_every`` steps evaluates on the test set, split across ranks
   (:class:`decomp.torch.evaluation.TestEvaluator`) — the master model x^t, or for the
   decentralized family x̄ = (1/n) Σ_i x_i, every x_i and the consensus distance — and records a
   history row (rank 0 logs it, appends it to ``metrics_path`` as JSON and shows step, loss and
   accuracy in a tqdm bar on a terminal).

History rows: step, loss (mean minibatch training loss over all workers since the previous row;
None at step 0), test_loss and test_<metric> (``metrics``; accuracy ``test_acc`` by default for
class labels), bits_up / bits_down (cumulative payload bits per worker, mean over workers),
wall_s (time inside algorithm steps only). Decentralized rows add test_<m>_mean, test_<m>_i (of
every x_i), test_acc_min, consensus_distance and the split compute_s / compress_s / comm_s.

BatchNorm statistics (``buffers``: "average" or "local") and divergence (the same
:class:`~decomp.errors.DivergenceError` on every rank at the same step; decentralized: checked
collectively every ``check_every`` steps): docs/torch.md, "The Trainer".
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from decomp.data.classification import SplitDataset, format_label_counts, label_counts
from decomp.data.classification import load as load_dataset
from decomp.errors import ConfigError, DivergenceError
from decomp.launch import check_script_launch, configure_threads
from decomp.runner.build import build_session, check_family, default_algorithm, world
from decomp.runner.drive import drive
from decomp.runner.lifecycle import Interrupted, RunControl
from decomp.torch import FlatModel, TorchProblem
from decomp.torch.data import TrainingData
from decomp.torch.evaluation import BUFFER_MODES, TestEvaluator
from decomp.torch.overlap import attach as attach_buckets
from decomp.torch.ownership import held_by
from decomp.torch.problem import LossFn
from decomp.torch.progress import fmt, log_line, progress_bar


class Trainer:
    """Train ``model`` on ``dataset`` with ``algorithm`` across the ranks of ``comm``.

    Args:
        model: a ``torch.nn.Module`` (float32, CPU; trained in place) or a
            :data:`decomp.models.MODELS` name (built from ``seed``).
        loss_fn: ℓ(output, target) with mean reduction: ``nn.CrossEntropyLoss()``,
            ``nn.MSELoss()`` with float targets, any callable.
        dataset: a :class:`decomp.datasets.SplitDataset`, a dataset name for
            :func:`decomp.datasets.load`, or any sized torch ``Dataset`` of (input, target)
            items (each rank reads only its shard's rows, per batch).
        test_dataset: the test set of a torch ``Dataset`` (None: no test metrics).
        labels: every training row's class label, for by_label / dirichlet shards of a torch
            Dataset that does not expose them (``targets``); ``collate_fn``: batches' collate.
        metrics: test metrics besides the loss (:func:`decomp.torch.metrics.resolve_metrics`:
            names "acc", "mse", "mae" or {name: callable(output, target) -> batch sum});
            default: accuracy for class labels, none for regression.
        algorithm: a decomp algorithm object of either family (default: dense SGD, ``GD()``);
            the methods and their families are :data:`decomp.algorithms.REGISTRY`
            (docs/algorithms.md). It is not modified: with ``batch_size`` the Trainer runs a
            copy (:attr:`algorithm`).
        lr: step size γ; if None, the algorithm's own ``lr`` (every algorithm class accepts
            ``lr=``); a network has no theory step size.
        batch_size: τ, minibatch rows per worker and step; None keeps the algorithm's
            ``batch_size`` (None there too = full local gradients).
        partition: iid | contiguous | by_label | dirichlet; ``alpha``: Dirichlet concentration.
        seed: run seed (partition, minibatches, compressor randomness, dropout).
        comm: mpi4py communicator (default ``MPI.COMM_WORLD``).
        master: "shared" (rank 0 is also worker 0) or "dedicated" (master–worker family only).
        aggregation: "tree" | "gather" | "auto", the master–worker sum (None: auto, netmodel.md).
        topology: decentralized family only: W over the ranks — a generator name ("ring",
            "torus", "exponential", "complete", ...; default "ring"), a W file, an (n, n) array
            or a :class:`decomp.topologies.MixingMatrix`.
        weights: how a named topology gets its weights (metropolis, max-degree, lazy-...).
        topology_options: generator options, e.g. ``{"degree": 4, "seed": 1}``.
        exchange: neighbour exchange method (auto | persistent | isend | neighbor).
        buffers: "average" or "local" (BatchNorm statistics, see the module doc).
        weight_decay: wd, adds (wd/2)‖x‖² to every f_i.
        threads: torch/BLAS threads per rank (None: OMP_NUM_THREADS, else cores/local ranks).
        eval_chunk: rows per forward pass when evaluating / computing full gradients.
        metrics_path: rank 0 writes one JSON line per history row there (truncated at start).
        progress: tqdm bar on rank 0 (only when stderr is a terminal).
        verbose: rank 0 prints the label counts and one line per evaluation.
        check_every: decentralized family: steps between collective divergence checks.
        comm_timeout_s: the watchdog's limit on a silent rank or a step not completing during
            :meth:`fit` (None: off; docs/reliability.md).
        overlap, bucket_cap_mb: all-reduce gradient buckets during backward (dense methods,
            with ``batch_size``), as :class:`~decomp.torch.DistributedOptimizer`'s.

    Under MPI with several ranks, creating a Trainer installs
    :func:`decomp.runner.lifecycle.abort_on_error`: an uncaught exception on any rank ends the
    whole job instead of leaving the others waiting. A stop signal (SIGINT, SIGTERM, SIGUSR1)
    during :meth:`fit` makes every rank raise :class:`~decomp.runner.lifecycle.Interrupted`
    after the same step: catch it to save :meth:`state_dict` (``torch.save``) and resume
    later with :meth:`load_state_dict`.
    """

    def __init__(self, model: nn.Module | str, loss_fn: LossFn, dataset: SplitDataset | str | Any,
                 algorithm: Any = None, *, lr: float | None = None,
                 test_dataset: Any = None, labels: Any = None, collate_fn: Any = None,
                 metrics: Any = None,
                 batch_size: int | None = None, partition: str = "iid", alpha: float = 0.5,
                 seed: int = 0, comm: Any = None, master: str = "shared",
                 topology: Any = None, weights: str = "metropolis",
                 topology_options: dict[str, Any] | None = None, exchange: str = "auto",
                 buffers: str = "average", weight_decay: float = 0.0,
                 threads: int | None = None, eval_chunk: int = 1024,
                 metrics_path: str | Path | None = None, progress: bool = True,
                 verbose: bool = True, check_every: int = 50,
                 comm_timeout_s: float | None = 300.0, overlap: bool = False,
                 bucket_cap_mb: float | None = None, aggregation: str | None = None) -> None:
        comm = world(comm)  # first: an error on any rank from here on ends the job
        check_script_launch()  # torchrun / srun without PMI: N one-rank copies
        self.comm = comm
        self.comm_timeout_s = comm_timeout_s
        self.rank: int = comm.Get_rank()
        self.threads = configure_threads(comm, threads)
        if buffers not in BUFFER_MODES:
            raise ConfigError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        if check_every < 1:
            raise ConfigError(f"check_every must be >= 1, got {check_every}")
        self.buffers_mode = buffers
        self.check_every = int(check_every)
        algorithm = default_algorithm(algorithm)
        self.family = check_family(algorithm, master=master,
                                   topology=topology is not None or bool(topology_options))
        self.data = load_dataset(dataset) if isinstance(dataset, str) else dataset
        self.source = TrainingData(self.data, test_dataset=test_dataset, labels=labels,
                                   collate_fn=collate_fn)
        if isinstance(model, str):
            from decomp.torch.models import make_model

            if self.source.split is None:
                raise ConfigError("a model name needs a decomp dataset (input shape, classes): "
                                  "pass your own nn.Module for a torch Dataset")
            model = make_model(model, input_shape=self.data.input_shape,
                               n_classes=self.data.n_classes, seed=seed)
        if batch_size is not None:  # the user's algorithm object is never modified: a copy
            if algorithm.batch_size not in (None, batch_size):
                raise ConfigError(f"batch_size={batch_size} given to the Trainer but the "
                                  f"algorithm has batch_size={algorithm.batch_size}")
            algorithm = copy.copy(algorithm)
            algorithm.batch_size = int(batch_size)
        self.algorithm = algorithm
        self.loss_fn = loss_fn
        self.seed = int(seed)
        self.verbose = verbose
        self.progress = progress
        self.eval_chunk = int(eval_chunk)
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        if self.metrics_path is not None:  # its folder's lock (decomp.torch.ownership)
            held_by(self, comm, self.metrics_path.parent, f"Trainer(metrics_path={metrics_path})")
        lr = lr if lr is not None else getattr(algorithm, "lr", None)
        if lr is None:
            raise ConfigError("give the Trainer an explicit lr (step size γ), or the algorithm "
                              "one (e.g. EF21(TopK(ratio=0.01), lr=0.1)): a neural network has "
                              "no smoothness constant for a theory step size")
        if not lr > 0:
            raise ConfigError(f"lr must be positive, got {lr}")
        self._lr = float(lr)

        self.flat = FlatModel(model)
        self.problem: TorchProblem | None = None

        def shard(worker: int | None, n: int) -> TorchProblem | None:
            """This worker's shard as a TorchProblem (the label counts on rank 0)."""
            self.n_workers = n
            self._shards(n, partition, alpha)
            if worker is not None:
                Xi, yi = self.source.shard(self.parts[worker])
                self.problem = TorchProblem(self.flat, loss_fn, Xi, yi, chunk=self.eval_chunk,
                                            weight_decay=weight_decay, seed=self.seed,
                                            worker=worker)
            return self.problem

        self.session = build_session(
            algorithm, comm, problem=shard, lr=self.lr, seed=self.seed, master=master,
            topology=topology, weights=weights, topology_options=topology_options,
            exchange=exchange, share=(self.flat.params, self.flat.buffers),
            layout=self.flat.layout, aggregation=aggregation)
        self.transport = self.session.transport
        self.buckets = attach_buckets(self.flat, self.session, algorithm, overlap=overlap,
                                      bucket_cap_mb=bucket_cap_mb, problem=self.problem)
        self.mixing: Any = self.session.mixing
        if self.rank == 0 and verbose and self.mixing is not None:
            print(f"{self.n_workers} nodes on {self.mixing.name} (rho {self.mixing.rho:.4f})",
                  flush=True)
        src = self.source
        self.evaluator = (None if src.test is None else
                          TestEvaluator(self.flat, loss_fn, *src.test, comm, buffers=buffers,
                                        chunk=self.eval_chunk, metrics=metrics))
        self.history: list[dict[str, Any]] = []
        self._loss_sum = 0.0
        self._loss_cnt = 0

    # --- public helpers --------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The step size γ of the next steps. Assign it (the same on every rank) to change it,
        e.g. between fits; ``fit(lr_schedule=...)`` sets it before every step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"lr must be positive, got {value}")
        self._lr = float(value)
        self.session.env.lr = self._lr

    @property
    def state(self) -> Any:
        """The algorithm state (None before :meth:`init`)."""
        return self.session.state

    @property
    def env(self) -> Any:
        """This rank's algorithm env (transport, problem, n, seed, lr)."""
        return self.session.env

    @property
    def step_count(self) -> int:
        """Steps taken so far (all fits)."""
        return self.session.steps_done

    @property
    def wall_s(self) -> float:
        """Time spent inside the algorithm's init and steps (evaluation is off the clock)."""
        return self.session.wall_s

    @property
    def model(self) -> nn.Module:
        """The trained module (its parameters are views of :attr:`x`)."""
        return self.flat.module

    @property
    def x(self) -> np.ndarray:
        """The current model vector (d,), float32: x^t (identical on every rank) for the
        master–worker family, this node's x_i for the decentralized family."""
        return self.flat.params if self.state is None else self.algorithm.model(self.state)

    def init(self) -> None:
        """Run the algorithm's initialisation (called by the first :meth:`fit`)."""
        if self.state is not None:
            return
        self.session.warm_up(self.flat.params)
        self.session.init(self.flat.params.copy())
        x = self.algorithm.model(self.state)
        if (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (self.flat.d,)
                and x.flags.c_contiguous and x.flags.writeable):
            self.flat.bind(x)  # the module now *is* the algorithm's x: no per-step copy
        if self.problem is not None:  # the step-0 row reports no training loss
            self.problem.last_loss = float("nan")

    def fit(self, steps: int, eval_every: int | None = None,
            lr_schedule: Any = None) -> list[dict[str, Any]]:
        """Run ``steps`` more steps, evaluating every ``eval_every`` steps (default: only at
        the start and the end); ``lr_schedule(t)`` gives γ for step t (counted from the run's
        start, 1, 2, ...). Returns the whole history (all fits so far)."""
        if steps < 0:
            raise ConfigError(f"steps must be >= 0, got {steps}")
        if eval_every is not None and eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {eval_every}")
        first = self.state is None
        self.init()
        if first:
            self._record(self.evaluate())
        bar = progress_bar(steps, type(self.algorithm).__name__,
                           self.progress and self.rank == 0)

        def log(t: int) -> None:
            row = self._record(self.evaluate(), bar)
            bar.set_postfix(loss=fmt(row["loss"]), test=fmt(row.get("test_acc",
                                                                      row.get("test_loss"))))

        control = RunControl(self.comm, comm_timeout_s=self.comm_timeout_s)
        try:
            with control:
                drive(self.session, steps, log_every=eval_every, on_log=log,
                      check_every=self.check_every if self.session.decentralized else None,
                      after_step=self._note_loss, bar=bar, control=control,
                      before_step=None if lr_schedule is None else
                      lambda t: setattr(self, "lr", lr_schedule(t)))
                signum = control.settle()
        except (Interrupted, DivergenceError):  # the same on every rank: clean up together
            control.close()
            raise
        else:  # (any other error is this rank's alone: no collective clean-up, the job ends)
            control.close()
        finally:
            bar.close()
        if signum:
            raise Interrupted(signum, self.step_count)
        return self.history

    def state_dict(self) -> dict[str, Any]:
        """This rank's training state (copies): the algorithm state (x or x_i, error-feedback
        memories, replicas, momenta), the step, byte counters and times, the BatchNorm
        statistics, the history and the running loss tally. ``torch.save`` it per rank."""
        self.init()
        return {"session": self.session.state_dict(), "buffers": self.flat.buffers.copy(),
                "history": [dict(r) for r in self.history], "lr": self.lr,
                "loss_tally": [self._loss_sum, self._loss_cnt]}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of the same rank of an identical Trainer: the next
        :meth:`fit` steps exactly as the saved run would have."""
        self.init()
        self.session.load_state_dict(d["session"])
        self.lr = float(d.get("lr", self.lr))
        self.flat.buffers[...] = d["buffers"]
        self.history = [dict(r) for r in d["history"]]
        self._loss_sum, self._loss_cnt = float(d["loss_tally"][0]), int(d["loss_tally"][1])

    def check_divergence(self) -> None:
        """Decentralized family, collective: raise :class:`DivergenceError` on every rank if
        any node has met a non-finite value (reports the first such step)."""
        self.session.check_divergence(f"{self.algorithm.name} (lr {self.lr:g})",
                                      self.step_count)

    def evaluate(self) -> dict[str, Any]:
        """Collective: test metrics (master model, or x̄ and every x_i), mean training loss
        since the last evaluation, cumulative bits per worker. Every rank returns the same
        dict."""
        tp = self.transport
        test: dict[str, Any] = {}
        if self.evaluator is None:
            pass
        elif self.session.decentralized:
            test = self.evaluator.nodes(self.x)
        else:
            test = self.evaluator.master(self.x, is_worker=tp.is_worker,
                                         n_workers=self.n_workers)
        buf = np.array([self._loss_sum, self._loss_cnt, tp.bytes.up, tp.bytes.down],
                       dtype=np.float64)
        tp.allreduce_uncounted(buf)
        self._loss_sum, self._loss_cnt = 0.0, 0
        n = self.n_workers
        row: dict[str, Any] = {"step": self.step_count,
                               "loss": float(buf[0] / buf[1]) if buf[1] else None, **test}
        row.update({"bits_up": float(8 * buf[2] / n), "bits_down": float(8 * buf[3] / n),
                    "wall_s": self.wall_s})
        row.update(self.session.timings())
        return row

    def evaluate_decentralized(self, x_local: np.ndarray) -> dict[str, Any]:
        """Collective: :meth:`TestEvaluator.nodes` of per-rank vectors x_i (x̄ and every x_i on
        the test set, the per-node lists, means, minimum accuracy, consensus distance)."""
        if self.evaluator is None:
            raise ConfigError("no test set: pass test_dataset= with a torch Dataset")
        return self.evaluator.nodes(x_local)

    # --- internals --------------------------------------------------------------------------
    def _shards(self, n: int, partition: str, alpha: float) -> None:
        """Cut the training rows into n shards (at least τ rows each); rank 0 prints them."""
        src = self.source
        self.parts = src.shards(n, partition, seed=self.seed, alpha=alpha,
                                min_size=self.algorithm.batch_size or 1)
        self.label_counts = (None if src.labels is None else
                             label_counts(src.labels, self.parts, src.n_classes or 1))
        if self.rank == 0 and self.verbose:
            print(format_label_counts(self.label_counts, f"label counts per worker "
                                      f"({partition} partition of {src.name}):")
                  if self.label_counts is not None else
                  f"rows per worker ({partition} partition of {src.name}): "
                  f"{[int(p.size) for p in self.parts]}", flush=True)

    def _note_loss(self, t: int = 0) -> None:
        if self.problem is not None and np.isfinite(self.problem.last_loss):
            self._loss_sum += self.problem.last_loss
            self._loss_cnt += 1
            self.problem.last_loss = float("nan")

    def _record(self, row: dict[str, Any], bar: Any = None) -> dict[str, Any]:
        self.history.append(row)
        if self.rank == 0:
            if self.metrics_path is not None:
                mode = "w" if len(self.history) == 1 else "a"
                self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.metrics_path, mode) as f:
                    f.write(json.dumps(row) + "\n")
            if self.verbose:
                msg = log_line(row, self.session.decentralized)
                if bar is not None and not bar.disable:
                    bar.write(msg)
                else:
                    print(msg, flush=True)
        return row

    def __repr__(self) -> str:
        where = (f"{self.n_workers} nodes on {self.mixing.name}" if self.mixing is not None
                 else f"{self.n_workers} workers")
        return (f"Trainer({type(self.flat.module).__name__}, d={self.flat.d}, "
                f"{type(self.algorithm).__name__}, {where}, lr={self.lr})")


__all__ = ["BUFFER_MODES", "Trainer"]
