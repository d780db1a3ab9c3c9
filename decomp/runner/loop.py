"""The engine's loop: every method of a run, one after the other, on this rank.

Every rank runs :func:`run` with the same config; rank 0 writes ``<out_dir>/<name>/``
(:class:`~decomp.runner.outputs.Outputs`). The config is resolved first (methods, world, W, the
run folder: every check that needs no data), then the data is loaded once and each method runs
through :func:`~decomp.runner.method.run_method` and the one step loop
:func:`~decomp.runner.drive.drive` that :class:`decomp.torch.Trainer` uses too.

Master–worker methods (EF21 family) run over :class:`~decomp.comm.MasterWorker`;
decentralized ones make every rank a node of the ``[topology]`` W over
:class:`~decomp.comm.Neighborhood`. Their metrics are taken at x̄ plus the consensus distance,
the mean local loss and the step time split into compute / compress / comm. Torch problems add
the test loss and accuracy at every log step.

Lifecycle: checkpoints every ``run.checkpoint_every`` steps, at the end of every method and on
a stop signal (:mod:`~decomp.runner.checkpoint`); ``mode = "resume"`` continues a run folder
from them (:mod:`~decomp.runner.resume`); a signal on any rank stops every rank after the same
step (:mod:`~decomp.runner.lifecycle`), a silent rank ends the job after
``run.comm_timeout_s`` (:mod:`decomp.comm.watchdog`).
"""

from __future__ import annotations

import math
import os
from typing import Any

from decomp.config import Config, dump_toml
from decomp.errors import ConfigError
from decomp.log import LOGGER
from decomp.runner.checkpoint import CheckpointStore
from decomp.runner.datahash import DATA_KEY, data_digest
from decomp.runner.drive import drive
from decomp.runner.lifecycle import Interrupted, RunControl
from decomp.runner.metadata import mpi_metadata
from decomp.runner.method import run_method
from decomp.runner.outputs import Outputs
from decomp.runner.plan import (
    check_sizes,
    check_world,
    mixing_for,
    plan_methods,
    resolved_config,
)
from decomp.runner.results import MethodResult
from decomp.runner.resume import check_data, check_resume, fingerprint
from decomp.runner.rundir import Claim, claim_run_dir
from decomp.runner.workload import Workload, local_workers, prepare

__all__ = ["drive", "run", "run_method"]


def _check_run_settings(cfg: Config, world_size: int) -> None:
    r = cfg.run
    if r.fail_rank is not None and not 0 <= r.fail_rank < world_size:
        raise ConfigError(f"run.fail_rank = {r.fail_rank} is not a rank of this world (0 .. "
                          f"{world_size - 1})")
    if r.checkpoint_every < 0:
        raise ConfigError(f"run.checkpoint_every must be >= 0 (0: only at the end of each "
                          f"method and on a signal), got {r.checkpoint_every}")
    if not (math.isfinite(r.comm_timeout_s) and r.comm_timeout_s > 0):
        raise ConfigError(f"run.comm_timeout_s must be a positive number of seconds, got "
                          f"{r.comm_timeout_s}")
    delay = cfg.network.delay_ms
    if not (math.isfinite(delay) and delay >= 0):
        raise ConfigError(f"network.delay_ms must be a number of milliseconds >= 0 (0: off), "
                          f"got {delay}")


def _running(plan: Any) -> MethodResult:
    """The summary entry of a method that has started and not ended (yet)."""
    nan = float("nan")
    return MethodResult(plan.label, plan.config.algorithm, plan.compressor_name, nan, 0, nan,
                        nan, nan, nan, 0.0, status="running", family=plan.family,
                        message="started; no result yet (a killed job leaves this mark)")


def run(cfg: Config, comm: Any, *, progress: bool | None = None, mode: str = "new",
        resume_hint: str = "decomp run CONFIG --resume") -> list[MethodResult]:
    """Run every method of ``cfg`` on ``comm``; rank 0 writes the outputs.

    mode: ``new`` (the run folder must not exist), ``overwrite`` (replace decomp's files in
    it), ``resume`` (continue it from its checkpoints; see :mod:`decomp.runner.resume`) or
    ``auto`` (resume if the folder holds a run, else new). resume_hint: the command that
    continues this run, written into an interrupted method's summary entry.
    Raises :class:`~decomp.runner.lifecycle.Interrupted` after a stop signal (the results
    so far, the interrupted method included, are in ``summary.json``).
    """
    n = check_world(cfg, comm)
    _check_run_settings(cfg, comm.Get_size())
    plans = plan_methods(cfg)  # fail fast on a bad method before any data is loaded
    cfg = resolved_config(cfg, plans)  # what the run folder records: every option resolved
    if len({p.label for p in plans}) != len(plans):
        raise ConfigError("two [[methods]] have the same name: give each its own name (the "
                          "metrics rows and checkpoints are keyed by it)")
    mixing = mixing_for(cfg, plans, n)
    claim = claim_run_dir(cfg.out_dir, cfg.name, mode, comm)  # the lock, before any write
    ok = False
    try:
        results = _run_claimed(cfg, comm, plans, mixing, n, claim, progress, resume_hint)
        ok = True
    finally:
        note = claim.end(ok)  # --overwrite: the old results kept or put back
        if note:
            LOGGER.warning("%s", note)
        claim.release()
    return results


def _run_claimed(cfg: Config, comm: Any, plans: list[Any], mixing: Any, n: int, claim: Claim,
                 progress: bool | None, resume_hint: str) -> list[MethodResult]:
    run_dir, mode = claim.run_dir, claim.mode
    store = CheckpointStore(run_dir, comm)
    fp = fingerprint(cfg)
    pointers: list[dict[str, Any] | None] = [None] * len(plans)
    if mode == "resume":
        pointers = check_resume(cfg, run_dir, store, comm, comm.Get_size())
    if progress is None:
        progress = cfg.run.progress and os.environ.get("DECOMP_PROGRESS", "1") != "0"
    rank = comm.Get_rank()
    results: list[MethodResult] = []
    out: Outputs | None = None
    with RunControl(comm, comm_timeout_s=cfg.run.comm_timeout_s) as control:
        try:
            work = prepare(cfg, n, local_workers(cfg, rank), comm)
            check_sizes(plans, work.d, work.layout)
            store.layout = work.layout  # recorded in checkpoints, checked on resume
            fp = {**fp, DATA_KEY: data_digest(work, comm)}  # collective: the data's hash
            if mode == "resume":
                check_data(cfg, pointers, fp[DATA_KEY])
            meta = mpi_metadata(comm, n)  # collective: the hosts of all ranks
            claim.start()  # every check passed: --overwrite moves the old results aside
            out = Outputs(run_dir, dump_toml(cfg), rank == 0, resume=mode == "resume",
                          meta=meta, cfg=cfg)
            if mode == "resume":
                out.keep_rows({p.label: int(ptr["step"]) for p, ptr
                               in zip(plans, pointers, strict=True) if ptr is not None},
                              log_every=cfg.run.log_every, steps=cfg.run.steps)
            _log_problem(comm, work, n, out)
            for i, plan in enumerate(plans):
                out.summary([*results, _running(plan)])
                out.begin(plan.label)
                try:
                    r = run_method(cfg, plan, comm, work, out, progress and rank == 0, mixing,
                                   index=i, store=store, control=control, pointer=pointers[i],
                                   fingerprint=fp, resume_hint=resume_hint)
                except Interrupted as e:
                    results.append(e.result)  # type: ignore[attr-defined]
                    raise
                except Exception as e:
                    failed = _running(plan)
                    failed.status, failed.message = "failed", f"{type(e).__name__}: {e}"
                    results.append(failed)
                    raise
                results.append(r)
                out.summary(results)
            out.finish()
        except Interrupted:  # agreed by every rank: the collective clean-up is safe
            control.close()
            raise
        else:  # any other error is this rank's alone (the caller ends the job): nothing
            control.close()  # collective then, the other ranks may be waiting inside a step
        finally:
            if out is not None:
                out.summary(results)
                out.close()
    return results


def _log_problem(comm: Any, work: Workload, n: int, out: Outputs) -> None:
    if comm.Get_rank() == 0:
        table = work.table()
        if table is not None:
            LOGGER.info("%s", table)
    LOGGER.info("%s, %d workers, outputs in %s", work.description(), n, out.dir)
    meta = out.meta or {}
    if meta.get("node_layout") is not None:  # what aggregation = "auto" and the tree go by
        LOGGER.info("%d ranks on %d node(s), layout %s (from %s)", comm.Get_size(),
                    meta["nodes"], meta["node_layout"], meta["node_layout_from"])
