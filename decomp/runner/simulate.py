"""``decomp sim``: every method of a config through the single-process reference
:mod:`decomp.sim` (no MPI), resolved by the same plan as ``decomp run``.

The reference returns every iterate, so the run folder gets the same curve as ``decomp run``: a
``metrics.jsonl`` row at step 0, every ``run.log_every`` steps and at the last step, with the
columns of ``decomp run`` that follow from the iterates (loss, grad_norm_sq, bits_up,
bits_down, consensus_distance; decentralized: loss_local; the workload's test metrics). Not
``wall_s`` per row: the reference is not timed step by step (the summary has its total).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from decomp.config import Config, dump_toml
from decomp.errors import ConfigError, DivergenceError
from decomp.runner.metadata import sim_metadata
from decomp.runner.outputs import Outputs
from decomp.runner.plan import (
    MethodPlan,
    check_sizes,
    mixing_for,
    plan_methods,
    resolved_config,
    workload_lr,
)
from decomp.runner.results import MethodResult
from decomp.runner.rundir import Claim, claim_run_dir
from decomp.runner.workload import Workload, prepare


def simulate_config(cfg: Config, n_workers: int, *, write: bool = False,
                    mode: str = "new") -> list[MethodResult]:
    """Run every method with the single-process reference :mod:`decomp.sim` (no MPI).

    Same problems, step sizes, W, options and randomness as ``run`` with n_workers workers
    (nodes); metrics at x (master–worker) or x̄ (decentralized) at every log step. A
    non-finite iterate, or a loss above ``run.loss_blowup`` × its start, ends the method as
    ``diverged`` with the rows logged before it (as ``decomp run`` does). write: also write
    ``config.toml``, ``metrics.jsonl`` and ``summary.json`` to ``<out_dir>/<name>/``, under
    the same name, lock and overwrite rules as ``decomp run`` (mode: ``new`` or
    ``overwrite``; :func:`~decomp.runner.rundir.claim_run_dir`).
    """
    if mode not in ("new", "overwrite"):
        raise ConfigError(f"decomp sim writes a new run folder or overwrites one (mode new or "
                          f"overwrite), got {mode!r}")
    if cfg.run.lr_schedule is not None:
        raise ConfigError("decomp sim's references take one constant step size and do not "
                          "follow run.lr_schedule: run the config under MPI (mpiexec -n N "
                          "decomp run CONFIG), or drop run.lr_schedule")
    plans = plan_methods(cfg)
    cfg = resolved_config(cfg, plans)
    claim = claim_run_dir(cfg.out_dir, cfg.name, mode) if write else None
    ok = False
    try:
        results = _simulate_claimed(cfg, plans, n_workers, write, claim)
        ok = True
    finally:
        if claim is not None:
            note = claim.end(ok)
            if note:
                print(note, file=sys.stderr)
            claim.release()
    return results


def _simulate_claimed(cfg: Config, plans: list[MethodPlan], n_workers: int, write: bool,
                      claim: Claim | None) -> list[MethodResult]:
    work = prepare(cfg, n_workers)
    check_sizes(plans, work.d, work.layout)
    mixing = mixing_for(cfg, plans, n_workers)
    if claim is not None:
        claim.start()
    out = Outputs(Path(cfg.out_dir) / cfg.name, dump_toml(cfg), write,
                  meta=sim_metadata(n_workers), cfg=cfg)
    results = []
    try:
        for plan in plans:
            lr = workload_lr(plan.config, plan.algorithm, work)
            work.reset()
            r, rows = _simulate_method(cfg, plan, lr, work, mixing)
            for row in rows:
                out.metrics({"method": r.method, **row})
            results.append(r)
            out.summary(results)
    finally:
        out.close()
    return results


def log_steps(steps: int, log_every: int) -> list[int]:
    """The steps ``decomp run`` logs: 0, every ``log_every``-th, and the last."""
    return sorted({0, steps, *range(log_every, steps + 1, log_every)})


def _simulate_method(cfg: Config, plan: MethodPlan, lr: float, work: Workload,
                     mixing: Any) -> tuple[MethodResult, list[dict[str, Any]]]:
    m, alg = plan.config, plan.algorithm
    comp = alg.compressor if alg.uses_compressor else None
    steps = cfg.run.steps
    t0 = time.perf_counter()
    status, message = "ok", ""
    try:
        tr = _trace(cfg, plan, lr, work, mixing, steps)
    except (DivergenceError, FloatingPointError) as e:
        status, message = "diverged", str(e)
        bad = getattr(e, "step", None)
        # the rows before the first non-finite step: run the reference again up to it
        tr = _trace(cfg, plan, lr, work, mixing, bad - 1) if bad else None
    wall = time.perf_counter() - t0
    rows = [] if tr is None else _curve(cfg, plan, work, tr, status == "ok")
    if rows:  # a loss blow-up at an earlier log step stops the run there first, as on MPI
        verdict, why = _verdict(cfg, m.label, rows, tr)
        if verdict != "ok":
            status, message = verdict, why
            rows = [r for r in rows if r["step"] <= _bad_step(cfg, rows, tr)]
    last = rows[-1] if rows else {"step": 0, "loss": float("nan"),
                                  "grad_norm_sq": float("nan"), "bits_up": float("nan"),
                                  "bits_down": float("nan"), "consensus_distance": 0.0}
    if status != "ok":
        message = f"{message} (compressor {comp!r}, lr {lr:.6g})" if comp else \
            f"{message} (lr {lr:.6g})"
    return MethodResult(
        m.label, m.algorithm, repr(comp) if comp else "-", lr, int(last["step"]), last["loss"],
        last["grad_norm_sq"], last["bits_up"], last["bits_down"], wall, status, message,
        plan.family, float(last.get("consensus_distance", 0.0)), last.get("loss_local"),
        test_loss=last.get("test_loss"), test_acc=last.get("test_acc"),
        test_acc_mean=last.get("test_acc_mean"), test_acc_min=last.get("test_acc_min"),
        aggregation=_aggregation(cfg, plan, len(work.problems))), rows


def _aggregation(cfg: Config, plan: MethodPlan, n: int) -> str | None:
    """The aggregation the reference ran ``plan`` with (as ``decomp run`` records it): the
    run's, "auto" resolved by the given node layout (``--node-layout``), then by the
    method."""
    from decomp.comm.nodes import count_env
    from decomp.comm.tree import resolve_aggregation
    from decomp.runner.session import aggregation_of

    resolved = resolve_aggregation(cfg.run.master, cfg.run.aggregation, count_env(n))
    return aggregation_of(plan.algorithm, resolved)


class _Trace:
    """A reference run reduced to what the metrics need: iterates and byte counts at t."""

    def __init__(self, xs: np.ndarray, up: np.ndarray, down: np.ndarray) -> None:
        self.xs, self.up, self.down = xs, up, down  # up/down: (T+1,) mean bytes per worker

    @property
    def steps(self) -> int:
        return self.xs.shape[0] - 1


def _trace(cfg: Config, plan: MethodPlan, lr: float, work: Workload, mixing: Any,
           steps: int) -> _Trace:
    """Run the reference for ``steps`` steps. Every payload of a method has the same size
    (the compressor contract), so the bytes grow linearly after the start: the count at step
    t is start + t × (end − start) / T, with the start from a 0-step run (EF21's g_i^0)."""
    from decomp.comm.tree import resolve_aggregation
    from decomp.sim import reference

    alg = plan.algorithm  # the reference reads its hyper-parameters (C, τ, options)
    comp = _StepTagged(alg.compressor) if alg.uses_compressor else None
    kw = {"lr": lr, "seed": cfg.seed, "compressor": comp, "layout": work.layout}
    agg = {"aggregation": resolve_aggregation(cfg.run.master, cfg.run.aggregation)}
    t = np.arange(steps + 1, dtype=np.float64)
    if plan.decentralized:
        tr = reference(alg, work.problems, work.x0, mixing, steps=steps, **kw)
        up = t * float(tr.bytes_sent.mean()) / max(steps, 1)
        down = t * float(tr.bytes_received.mean()) / max(steps, 1)
        return _Trace(tr.xs, up, down)
    rec = (_StepTagged(alg.compressor, record=len(work.problems), like=work.x0)
           if comp is not None else None)
    tr = reference(alg, work.problems, work.x0, steps=steps, **{**kw, "compressor": rec}, **agg)
    if "up_bytes" in tr.state:  # traffic that varies by step (EF21-PP/BC, PowerSGD, a tree)
        up = np.cumsum(tr.state["up_bytes"])
        if alg.downlink == "allreduce":  # every worker receives what it contributed
            return _Trace(tr.xs, up, up.copy())
        return _Trace(tr.xs, up, _per_step_downlink(cfg, plan, work, tr.state["down_bytes"]))
    if rec is not None:
        rec.finish()
    start = float(reference(alg, work.problems, work.x0, steps=0,
                            **kw, **agg).bytes_up.mean()) if steps else float(tr.bytes_up.mean())
    up = start + t * (float(tr.bytes_up.mean()) - start) / max(steps, 1)
    return _Trace(tr.xs, up, _downlink(cfg, plan, work, rec, steps))


def _downlink(cfg: Config, plan: MethodPlan, work: Workload, rec: Any, steps: int) -> np.ndarray:
    """(T+1,) downlink bytes per worker up to step t, as :class:`~decomp.comm.MasterWorker`
    counts them (received bytes summed over ranks, divided by n): the dense all-reduce of
    GD/SGD/SGDM (every worker receives d values); the dense model of EF21+ and of
    ``downlink = "model"`` (every rank but the master); else the compressed downlink, the
    master's re-encoding of each step's payloads (:class:`~decomp.compress.aggregate.
    SumEncoder`: sparse union or dense), and for the EF21 family g^0's sum at t = 0."""
    from decomp.compress.base import HEADER_BYTES

    alg = plan.algorithm
    n, d, dt = len(work.problems), work.d, work.x0.dtype
    ranks = n + 1 if cfg.run.master == "dedicated" else n
    per = np.zeros(steps + 1, dtype=np.float64)  # bytes received by all ranks at step t
    if alg.downlink == "allreduce":  # every worker receives the reduced vector
        per[1:] = d * dt.itemsize * n
    elif alg.downlink == "model":
        per[1:] = d * dt.itemsize * (ranks - 1)
    else:
        for t in range(steps + 1):
            if t in rec.sent:
                size = rec.sent[t]
            elif t == 0 and alg.init_round:  # g_i^0 = ∇f_i(x^0) sent dense: a dense sum
                size = HEADER_BYTES + d * dt.itemsize
            else:
                size = 0
            per[t] = size * (ranks - 1)
    return np.cumsum(per) / n


def _per_step_downlink(cfg: Config, plan: MethodPlan, work: Workload,
                       down: np.ndarray) -> np.ndarray:
    """(T+1,) cumulative downlink bytes per worker from the reference's broadcast payload
    sizes ``down`` (T+1,), received by every rank but the master; ``downlink = "model"``
    broadcasts the dense x instead at every step after the first."""
    n, d, dt = len(work.problems), work.d, work.x0.dtype
    ranks = n + 1 if cfg.run.master == "dedicated" else n
    per = np.array(down, dtype=np.float64)
    if plan.algorithm.downlink == "model":
        per[1:] = d * dt.itemsize
    return np.cumsum(per * (ranks - 1)) / n


class _StepTagged:
    """A compressor whose refusal of a vector (QSGD: a norm beyond float32) names the step, as
    a :class:`DivergenceError`: on MPI that node flags the step and the collective check stops
    every rank; here the step lets the rows before it be kept. With ``record`` = n and the
    model's (d, dtype) it also sizes, per step t, the master's downlink of what workers
    0..n-1 send: ``sent[t]``, the bytes of the :class:`~decomp.compress.aggregate.SumEncoder`
    payload of their wire payloads (in worker order). Everything else is the inner
    compressor's."""

    def __init__(self, inner: Any, record: int = 0, like: np.ndarray | None = None) -> None:
        self._inner = inner
        self._record = record
        self.sent: dict[int, int] = {}
        self._step, self._payloads = -1, []  # type: tuple[int, list[np.ndarray]]
        if record:
            from decomp.compress.aggregate import SumEncoder

            assert like is not None
            self._enc = SumEncoder(like.size, like.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def inner(self) -> Any:
        """The wrapped compressor: a reference that sizes a downlink sum itself (EF21-PP)
        hands this wrapper to :class:`~decomp.compress.aggregate.SumEncoder`, which looks
        through ``inner`` for the sparse formats."""
        return self._inner

    def __repr__(self) -> str:
        return repr(self._inner)

    def reference(self, x: np.ndarray, key: Any) -> np.ndarray:
        try:
            out = self._inner.reference(x, key)
        except FloatingPointError as e:
            raise DivergenceError(f"{e} at step {key.step}", step=key.step,
                                  quantity="compressor input") from None
        if key.rank < self._record and np.isfinite(x).all():  # a worker's message (stream 0)
            if key.step != self._step:
                self.finish()
                self._step = key.step
            self._payloads.append(self._inner.encode(x, key).copy())
        return out

    def finish(self) -> None:
        """Size the downlink of the step recorded last."""
        if self._payloads:
            self.sent[self._step] = int(self._enc.encode(self._inner, self._payloads).size)
            self._payloads = []


def _curve(cfg: Config, plan: MethodPlan, work: Workload, tr: _Trace,
           complete: bool) -> list[dict[str, Any]]:
    """Metrics rows at the log steps (the final step too only when the run completed)."""
    steps = log_steps(tr.steps, cfg.run.log_every) if complete else \
        [t for t in log_steps(cfg.run.steps, cfg.run.log_every) if t <= tr.steps]
    rows = []
    for t in steps:
        X = tr.xs[t]
        finite = bool(np.isfinite(X).all())
        if not finite:
            break
        test = work.reference_test(X, final=t == tr.steps)
        with work.kept():  # the full gradient runs a model in train mode
            row = _row(work, X, plan.decentralized)
        rows.append({"step": t, **row, "bits_up": 8 * float(tr.up[t]),
                     "bits_down": 8 * float(tr.down[t]), **test})
    return rows


def _row(work: Workload, X: np.ndarray, decentralized: bool) -> dict[str, Any]:
    """Training metrics at x (master–worker) or x̄ (decentralized, X has rows x_i)."""
    x = X.mean(axis=0) if decentralized else X
    with np.errstate(all="ignore"):
        loss = float(np.mean([p.loss(x) for p in work.problems]))
        g = np.mean([np.array(p.grad(x), dtype=np.float64) for p in work.problems], axis=0)
        row: dict[str, Any] = {"loss": loss, "grad_norm_sq": float(g @ g)}
        if decentralized:
            row["consensus_distance"] = float(((X - x) ** 2).sum(axis=1).mean())
            row["loss_local"] = float(np.mean([p.loss(X[i])
                                               for i, p in enumerate(work.problems)]))
        else:
            row["consensus_distance"] = 0.0
    return row


def _verdict(cfg: Config, label: str, rows: list[dict[str, Any]], tr: _Trace) -> tuple[str, str]:
    """``decomp run``'s checks on a finished reference curve: a non-finite iterate, or a loss
    above ``run.loss_blowup`` × the starting loss at a log step."""
    bad = _bad_step(cfg, rows, tr)
    if bad is None:
        return "ok", ""
    first = rows[0]["loss"]
    hit = [r for r in rows if r["step"] == bad]
    if hit and np.isfinite(hit[0]["loss"]):
        return "diverged", (f"{label}: loss {hit[0]['loss']:.4g} exceeded "
                            f"{cfg.run.loss_blowup:g} x its start {first:.4g} at step {bad}")
    return "diverged", f"{label}: non-finite value at step {bad}"


def _bad_step(cfg: Config, rows: list[dict[str, Any]], tr: _Trace) -> int | None:
    first = abs(rows[0]["loss"])
    for r in rows[1:]:
        if not np.isfinite(r["loss"]) or r["loss"] > cfg.run.loss_blowup * max(first, 1e-12):
            return int(r["step"])
    finite = np.isfinite(tr.xs.reshape(tr.xs.shape[0], -1)).all(axis=1)
    if not finite.all():
        return int(np.argmin(finite))
    return None


__all__ = ["log_steps", "simulate_config"]
