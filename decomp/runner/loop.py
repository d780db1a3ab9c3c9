"""The engine's loop: every method of a run, one after the other, on this rank.

Every rank runs :func:`run` with the same config; rank 0 writes ``<out_dir>/<name>/``
(:class:`~decomp.runner.outputs.Outputs`). :func:`drive` is the one step loop both front ends
use (``decomp run`` here, :class:`decomp.torch.Trainer`): steps, the collective divergence
check, and a callback at log steps.

Master–worker methods (EF21 family) run over :class:`~decomp.comm.MasterWorker`;
decentralized ones make every rank a node of the ``[topology]`` W over
:class:`~decomp.comm.Neighborhood`. Their metrics are taken at x̄ plus the consensus distance,
the mean local loss and the step time split into compute / compress / comm. Torch problems add
the test loss and accuracy at every log step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from decomp.config import Config, dump_toml, is_torch
from decomp.errors import DivergenceError
from decomp.log import LOGGER
from decomp.runner.metrics import evaluate, evaluate_nodes, keeping_buffers, make_test_evaluator
from decomp.runner.outputs import Outputs, progress_bar
from decomp.runner.plan import (
    MethodPlan,
    check_sizes,
    check_world,
    mixing_for,
    plan_methods,
    resolve_lr,
)
from decomp.runner.results import MethodResult
from decomp.runner.session import Session, open_transport
from decomp.runner.workload import Workload, local_workers, prepare


def drive(session: Session, steps: int, *, log_every: int | None, on_log: Callable[[int], None],
          check_every: int | None = None, who: str = "",
          before_step: Callable[[int], None] | None = None,
          after_step: Callable[[int], None] | None = None, bar: Any = None) -> None:
    """Take ``steps`` more steps of ``session``.

    At every ``log_every``-th step (counted from the run's start; None: none) and at the last
    one: the collective divergence check
    (:meth:`Session.check_divergence`), then ``on_log(t)``; in between, the check alone every
    ``check_every`` steps (default: only at log steps). ``before_step(t)`` runs before step t
    (fault injection), ``after_step(t)`` right after it (the torch API's loss tally); ``bar``
    (tqdm) advances once per step.
    """
    start = session.steps_done
    end = start + steps
    for t in range(start + 1, end + 1):
        if before_step is not None:
            before_step(t)
        session.step()
        if after_step is not None:
            after_step(t)
        if bar is not None:
            bar.update(1)
        at_log = t == end or bool(log_every and t % log_every == 0)
        if at_log or (check_every and t % check_every == 0):
            session.check_divergence(who or session.algorithm.name, t)
        if at_log:
            on_log(t)


class _MethodRun:
    """The metrics side of one method of ``decomp run``: evaluation at log steps, the JSONL
    rows, the loss blow-up test and the summary."""

    def __init__(self, cfg: Config, plan: MethodPlan, session: Session, work: Workload,
                 out: Outputs, evaluator: Any) -> None:
        self.cfg, self.plan, self.session, self.work, self.out = cfg, plan, session, work, out
        self.evaluator = evaluator
        m = plan.config
        self.who = m.label if m.label == m.algorithm else f"{m.label} ({m.algorithm})"
        self.first: dict[str, Any] = {}
        self.last: dict[str, Any] = {}
        self.bar: Any = None

    def evaluate(self) -> dict[str, Any]:
        s = self.session
        x = s.model()
        if s.decentralized:
            ev: dict[str, Any] = keeping_buffers(self.work, evaluate_nodes, s.transport,
                                                 s.problem, x, s.n)
            if self.evaluator is not None:
                with np.errstate(all="ignore"):
                    test = self.evaluator.nodes(x)
                test.pop("consensus_distance")  # evaluate_nodes has it already
                ev.update(test)
            return ev
        ev = keeping_buffers(self.work, evaluate, s.transport, s.problem, x, s.n)
        ev["consensus_distance"] = 0.0
        if self.evaluator is not None:
            ev.update(self.evaluator.master(x, is_worker=s.transport.is_worker, n_workers=s.n))
        return ev

    def log(self, t: int) -> None:
        ev = self.evaluate()
        self.last = {"step": t, **ev}
        if t == 0:
            self.first = ev
        self.out.metrics({"method": self.plan.label, **self.last,
                          "wall_s": self.session.wall_s, **self.session.timings()})
        if self.bar is not None:
            if "test_acc" in ev:
                self.bar.set_postfix(loss=f"{ev['loss']:.4f}", acc=f"{ev['test_acc']:.4f}")
            else:
                self.bar.set_postfix(grad_norm_sq=f"{ev['grad_norm_sq']:.3e}")
        blowup = self.cfg.run.loss_blowup
        if t and (not np.isfinite(ev["loss"])
                  or ev["loss"] > blowup * max(abs(self.first["loss"]), 1e-12)):
            raise DivergenceError(
                f"{self.who}: loss {ev['loss']:.4g} exceeded {blowup:g} x its start "
                f"{self.first['loss']:.4g} at step {t}", step=t,
                algorithm=self.plan.config.algorithm, quantity="loss")

    def inject(self, t: int) -> None:
        run = self.cfg.run
        if run.fail_rank == self.session.rank and run.fail_step == t:
            raise RuntimeError(f"injected failure (run.fail_rank={self.session.rank}, "
                               f"run.fail_step={t})")

    def result(self, status: str, message: str) -> MethodResult:
        last, s, tm = self.last, self.session, self.session.timings()
        return MethodResult(
            method=self.plan.label, algorithm=self.plan.config.algorithm,
            compressor=s.compressor_name, lr=s.lr, steps=int(last["step"]), loss=last["loss"],
            grad_norm_sq=last["grad_norm_sq"], bits_up=last["bits_up"],
            bits_down=last["bits_down"], wall_s=s.wall_s, status=status, message=message,
            family=s.family, consensus_distance=float(last.get("consensus_distance", 0.0)),
            loss_local=last.get("loss_local"), compute_s=tm.get("compute_s"),
            compress_s=tm.get("compress_s"), comm_s=tm.get("comm_s"),
            test_loss=last.get("test_loss"), test_acc=last.get("test_acc"),
            test_acc_mean=last.get("test_acc_mean"), test_acc_min=last.get("test_acc_min"))


def run_method(cfg: Config, plan: MethodPlan, comm: Any, work: Workload, out: Outputs,
               progress: bool, mixing: Any = None) -> MethodResult:
    """Run one method to completion (or divergence); returns its summary."""
    m = plan.config
    lr = resolve_lr(m, plan.algorithm, work.L, work.Ls, work.d)
    tp = open_transport(plan.family, comm, master=cfg.run.master, mixing=mixing,
                        exchange=cfg.topology.exchange)
    worker = tp.rank if plan.decentralized else tp.worker  # type: ignore[union-attr]
    problem = work.problems[worker] if worker is not None else None
    session = Session(plan.algorithm, tp, problem, lr=lr, seed=cfg.seed)
    if plan.decentralized:
        where = (f"{mixing.name} (rho {mixing.rho:.4f}, exchange {cfg.topology.exchange})"
                 if plan.algorithm.gossip else "all ranks (collective)")
        LOGGER.info("method %s: %s, compressor %s, lr %.6g, %d nodes on %s", m.label,
                    m.algorithm, session.compressor_name, lr, session.n, where)
    else:
        LOGGER.info("method %s: %s, compressor %s, lr %.6g, %d workers", m.label, m.algorithm,
                    session.compressor_name, lr, session.n)
    mr = _MethodRun(cfg, plan, session, work, out, make_test_evaluator(work, comm))
    status, message = "ok", ""
    try:
        session.warm_up(work.x0)
        if work.torch is not None:
            work.torch.reset_buffers()
        session.init(work.x0)
        mr.log(0)
        mr.bar = progress_bar(cfg.run.steps, m.label, progress)
        drive(session, cfg.run.steps, log_every=cfg.run.log_every, on_log=mr.log, who=mr.who,
              before_step=mr.inject, bar=mr.bar)
    except DivergenceError as e:  # raised on every rank alike (replicated or reduced values)
        status = "diverged"
        message = f"{e} (compressor {session.compressor_name}, lr {lr:.6g})"
        LOGGER.error("diverged: %s", message)
    finally:
        if mr.bar is not None:
            mr.bar.close()
        session.close()
    return mr.result(status, message)


def run(cfg: Config, comm: Any, *, progress: bool | None = None) -> list[MethodResult]:
    """Run every method of ``cfg`` on ``comm``; rank 0 writes the outputs."""
    n = check_world(cfg, comm)
    plans = plan_methods(cfg)  # fail fast on a bad method before any data is loaded
    mixing = mixing_for(cfg, plans, n)
    if progress is None:
        progress = cfg.run.progress and os.environ.get("DECOMP_PROGRESS", "1") != "0"
    rank = comm.Get_rank()
    work = prepare(cfg, n, local_workers(cfg, rank) if is_torch(cfg) else None)
    check_sizes(plans, work.d)
    out = Outputs(Path(cfg.out_dir) / cfg.name, dump_toml(cfg), rank == 0)
    if work.torch is not None:
        comm.Bcast(work.x0, root=0)  # rank 0's x^0 everywhere (setup, not counted)
        tw = work.torch
        if rank == 0:
            LOGGER.info("%s", tw.label_table(f"label counts per worker ({cfg.problem.shard} "
                                             f"partition of {tw.data.name}):"))
        LOGGER.info("problem torch: model %s on %s (%d train / %d test rows), d = %d, "
                    "%d workers, outputs in %s", cfg.problem.model, tw.data.name,
                    tw.data.n_train, tw.data.n_test, work.d, n, out.dir)
    else:
        LOGGER.info("problem %s on %s: d = %d, L = %.6g, %d workers, outputs in %s",
                    cfg.problem.kind, cfg.problem.dataset, work.d, work.L, n, out.dir)
    results: list[MethodResult] = []
    try:
        for plan in plans:
            results.append(run_method(cfg, plan, comm, work, out, progress and rank == 0,
                                      mixing))
            out.summary(results)
    finally:
        out.close()
    return results
