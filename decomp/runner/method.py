"""One method of ``decomp run`` on this rank: its session, metrics, checkpoints and summary.

:func:`run_method` opens the method's :class:`~decomp.runner.session.Session` (the
:func:`~decomp.runner.build.build_session` of every front end),
starts it from x^0 or restores it from its checkpoint, drives it to ``run.steps`` (logging,
checkpointing every ``run.checkpoint_every`` steps, watching for signals and silent ranks),
checkpoints its end and returns its :class:`~decomp.runner.results.MethodResult`, whose status
is ``ok``, ``diverged`` or (with :class:`~decomp.runner.lifecycle.Interrupted` raised on every
rank) ``interrupted``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from decomp.config import Config
from decomp.config.lrschedule import parse_lr_schedule
from decomp.errors import DivergenceError
from decomp.log import LOGGER
from decomp.runner.agree import check_restored, restored_summary
from decomp.runner.build import build_session
from decomp.runner.checkpoint import CheckpointStore
from decomp.runner.drive import drive
from decomp.runner.lifecycle import Interrupted, RunControl
from decomp.runner.metrics import evaluate, evaluate_nodes
from decomp.runner.outputs import Outputs
from decomp.runner.plan import MethodPlan, workload_lr
from decomp.runner.progress import make_progress, show_metrics
from decomp.runner.results import MethodResult
from decomp.runner.resume import restore_session, session_meta
from decomp.runner.session import Session
from decomp.runner.workload import Workload


class MethodRun:
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
        self.status, self.message = "ok", ""

    def evaluate(self) -> dict[str, Any]:
        s = self.session
        x = s.model()
        if s.decentralized:
            with self.work.kept():  # the full gradient runs a model in train mode
                ev: dict[str, Any] = evaluate_nodes(s.transport, s.problem, x, s.n)
            if self.evaluator is not None:
                with np.errstate(all="ignore"):
                    test = self.evaluator.nodes(x)
                test.pop("consensus_distance")  # evaluate_nodes has it already
                ev.update(test)
            return ev
        with self.work.kept():
            ev = evaluate(s.transport, s.problem, x, s.n)
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
        show_metrics(self.bar, ev)
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

    def result(self) -> MethodResult:
        status, message = self.status, self.message
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
            test_acc_mean=last.get("test_acc_mean"), test_acc_min=last.get("test_acc_min"),
            aggregation=s.aggregation)


class _Checkpointer:
    """Saves one method's checkpoints (and remembers the last step saved)."""

    def __init__(self, store: CheckpointStore, index: int, mr: MethodRun, work: Workload,
                 fingerprint: dict[str, Any]) -> None:
        self.store, self.index, self.mr, self.work = store, index, mr, work
        self.fingerprint = fingerprint
        self.saved = -1

    def __call__(self, step: int) -> None:
        if step == self.saved:
            return
        mr = self.mr
        meta = session_meta(mr.session, mr.first, mr.last, mr.status, mr.message)
        self.store.save(self.index, step, mr.session.state, meta, self.work.buffers(),
                        self.fingerprint)
        self.saved = step


def _scheduled(session: Any, lr: float, spec: Any,
               inject: Callable[[int], None]) -> Callable[[int], None]:
    """``before_step``: the fault injection, after setting step t's size from
    ``run.lr_schedule`` (:mod:`decomp.config.lrschedule`; a constant one: inject alone)."""
    schedule = parse_lr_schedule(spec)
    if schedule is None:
        return inject
    LOGGER.info("step size %.6g, schedule %s", lr, schedule.describe())

    def before(t: int) -> None:
        session.env.lr = lr * schedule.factor(t)
        inject(t)

    return before


def run_method(cfg: Config, plan: MethodPlan, comm: Any, work: Workload, out: Outputs,
               progress: bool, mixing: Any = None, *, index: int = 0,
               store: CheckpointStore | None = None, control: RunControl | None = None,
               pointer: dict[str, Any] | None = None,
               fingerprint: dict[str, Any] | None = None,
               resume_hint: str = "decomp run CONFIG --resume") -> MethodResult:
    """Run one method to ``run.steps`` (or divergence) and return its summary.

    store: where checkpoints go (None: none); control: signals, stop vote and watchdog (None:
    none); pointer: the checkpoint to continue from (None: start at step 0). Raises
    :class:`Interrupted` (with ``.result``) on every rank when a stop signal came, after the
    checkpoint of the step where every rank stopped.
    """
    m = plan.config
    lr = workload_lr(m, plan.algorithm, work)
    session = build_session(
        plan.algorithm, comm, lr=lr, seed=cfg.seed, master=cfg.run.master, mixing=mixing,
        exchange=cfg.topology.exchange, delay_s=cfg.network.delay_ms / 1e3,
        problem=lambda worker, n: None if worker is None else work.problems[worker],
        share=(work.x0,), abort=False,  # decomp run's CLI ends the job on an error itself
        layout=work.layout, aggregation=cfg.run.aggregation)
    if cfg.run.overlap:  # torch (checked with the config): buckets sent during backward
        work.overlap(session, plan.algorithm, cfg.run.bucket_cap_mb)
    if plan.decentralized:
        rho = (f"period {mixing.period}, rho over a period {mixing.rho:.4f}"
               if hasattr(mixing, "period") else f"rho {mixing.rho:.4f}")
        where = (f"{mixing.name} ({rho}, exchange {cfg.topology.exchange})"
                 if plan.algorithm.gossip else "all ranks (collective)")
        LOGGER.info("method %s: %s, compressor %s, lr %.6g, %d nodes on %s", m.label,
                    m.algorithm, session.compressor_name, lr, session.n, where)
    else:
        LOGGER.info("method %s: %s, compressor %s, lr %.6g, %d workers, aggregation %s",
                    m.label, m.algorithm, session.compressor_name, lr, session.n,
                    session.aggregation)
    mr = MethodRun(cfg, plan, session, work, out, work.test_evaluator(comm))
    save = (_Checkpointer(store, index, mr, work, fingerprint or {}) if store is not None
            else None)
    try:
        session.warm_up(work.x0)
        work.reset()
        session.init(work.x0)
        if pointer is not None:
            meta = restore_session(session, store, pointer, work)  # type: ignore[arg-type]
            check_restored(comm, restored_summary(session.state, work.buffers(), meta.get(
                "method", index), session.steps_done, meta["status"]), m.label,
                f"checkpoints/m{index}-s{pointer['step']}")  # before any rank steps
            mr.first, mr.last = meta["first"], meta["last"]
            mr.status, mr.message = meta["status"], meta["message"]
            if save is not None:
                save.saved = session.steps_done
            LOGGER.info("method %s: resumed from its checkpoint at step %d", m.label,
                        session.steps_done)
            if mr.status != "ok":  # a diverged method ends where it ended
                return mr.result()
        else:
            mr.log(0)
        remaining = cfg.run.steps - session.steps_done
        mr.bar = make_progress(cfg.run.steps, m.label, progress, initial=session.steps_done)
        every = cfg.run.checkpoint_every
        drive(session, remaining, log_every=cfg.run.log_every, on_log=mr.log, who=mr.who,
              before_step=_scheduled(session, lr, cfg.run.lr_schedule, mr.inject),
              bar=mr.bar, control=control,
              checkpoint_every=every if save is not None and every else None,
              on_checkpoint=save)
        signum = control.settle() if control is not None else 0
        if save is not None:
            save(session.steps_done)
        if signum:
            raise Interrupted(signum, session.steps_done)
    except DivergenceError as e:  # raised on every rank alike (replicated or reduced values)
        mr.status = "diverged"
        mr.message = f"{e} (compressor {session.compressor_name}, lr {lr:.6g})"
        LOGGER.error("diverged: %s", mr.message)
        if save is not None:
            save(session.steps_done)
        session.close()
    except Interrupted as e:
        if save is not None:
            save(e.step)
        if mr.last.get("step") != e.step:  # the summary reports where the method stopped
            mr.log(e.step)
        mr.status = "interrupted"
        mr.message = (f"{e}; checkpointed: continue with {resume_hint}"
                      if save is not None else str(e))
        LOGGER.warning("%s: %s", m.label, mr.message)
        e.result = mr.result()  # type: ignore[attr-defined]
        session.close()
        raise
    else:  # any other error is this rank's alone: no collective clean-up (the others may be
        session.close()  # inside a step's collective); the caller ends the whole job
    finally:
        if mr.bar is not None:
            mr.bar.close()
    return mr.result()
