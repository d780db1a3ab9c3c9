"""``decomp.torch.MetricsWriter``: the run folder of ``decomp run`` from the user's own loop, so
``decomp plot`` and ``decomp compare`` read it.

Rank 0 writes ``<directory>/metrics.jsonl`` (one row per :meth:`MetricsWriter.log`) and
``<directory>/summary.json`` (``{"run": metadata, "methods": [entry]}``, replaced atomically at
every log and at :meth:`MetricsWriter.close`) with ``decomp run``'s columns:

- ``method`` (the writer's ``name``), ``step`` (``opt.steps`` unless given);
- the values passed to :meth:`~MetricsWriter.log` (``loss``, ``test_loss``, ``test_acc``,
  ``grad_norm_sq``, ... any numbers), each the mean over the ranks of what every rank passed;
- ``bits_up`` / ``bits_down``: payload bits sent / received per rank, mean over ranks,
  cumulative (:meth:`DistributedOptimizer.traffic`); ``consensus_distance``:
  (1/n) Σ_i ‖x_i − x̄‖² for the decentralized family, 0 for master–worker;
- ``wall_s``: seconds since the writer was created, the time inside ``log`` excluded (it is
  off the clock, as ``decomp run``'s evaluation), and the algorithm's step-time split
  (``compute_s``, ``compress_s``, ``comm_s`` of ``opt.session``).

The summary entry is a :class:`decomp.runner.results.MethodResult` (status ``running`` until
:meth:`~MetricsWriter.close`, then ``ok``, or ``interrupted`` after an agreed stop). Created after
``opt.load`` (``opt.steps`` > 0), the writer continues the folder: the rows of its method up to
the checkpoint's step are kept, later ones (logged after the checkpoint by the interrupted
run) dropped, and ``wall_s`` goes on from the last kept row.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from decomp.errors import ConfigError
from decomp.runner.diskfull import write_text_atomic as write_atomic
from decomp.runner.lifecycle import signal_name
from decomp.runner.metadata import mpi_metadata
from decomp.runner.results import MethodResult
from decomp.torch.ownership import held_by

#: where a value of the summary entry comes from in the last row
_ENTRY = ("loss", "grad_norm_sq", "bits_up", "bits_down", "consensus_distance", "loss_local",
          "test_loss", "test_acc", "test_acc_mean", "test_acc_min")


class MetricsWriter:
    """The run folder ``directory`` of the user's loop over ``opt`` (a
    :class:`~decomp.torch.DistributedOptimizer`); created on every rank (collective), rank 0
    writes. ``name``: the method's label in the files (default: the algorithm's name)."""

    def __init__(self, opt: Any, directory: str | Path, *, name: str | None = None) -> None:
        self.opt = opt
        self.dir = Path(directory)
        self._hold = held_by(self, opt.comm, self.dir, f"MetricsWriter({directory})")
        self.name = name or opt.algorithm.name
        self.active = opt.rank == 0
        self.meta = mpi_metadata(opt.comm, opt.comm.Get_size())  # collective: every host
        self.meta.update({"name": self.dir.name, "front_end": "decomp.torch.MetricsWriter"})
        self.last: dict[str, Any] = {}
        self._offset = 0.0
        self._closed = False
        rows: list[str] = []
        if self.active:
            self.dir.mkdir(parents=True, exist_ok=True)
            if opt.steps > 0:  # continuing after opt.load: keep the rows up to its step
                rows = self._kept_rows(opt.steps)
            write_atomic(self.dir / "metrics.jsonl", "".join(f"{r}\n" for r in rows))
            self._file = open(self.dir / "metrics.jsonl", "a")  # noqa: SIM115
        if opt.comm.Get_size() > 1:
            self._offset, self.last = opt.comm.bcast((self._offset, self.last), root=0)
        self._t0 = time.perf_counter()
        self._summary("running", "started; no result yet (a killed job leaves this mark)")

    def _kept_rows(self, step: int) -> list[str]:
        path = self.dir / "metrics.jsonl"
        kept: list[str] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if row.get("method") != self.name or row.get("step", math.inf) <= step:
                    kept.append(line)
                    if row.get("method") == self.name:
                        self._offset, self.last = float(row.get("wall_s", 0.0)), row
        return kept

    def wall_s(self) -> float:
        return self._offset + time.perf_counter() - self._t0

    def log(self, step: int | None = None, **values: float) -> dict[str, Any]:
        """Collective: one row; every value (the same names on every rank) is averaged over
        the ranks. Returns the row (on every rank)."""
        t_in = time.perf_counter()
        opt = self.opt
        names = sorted(values)
        check = opt.comm.allgather(names) if opt.comm.Get_size() > 1 else [names]
        if any(c != names for c in check):
            raise ConfigError(f"MetricsWriter.log: the ranks passed different values: "
                              f"{dict(enumerate(check))}; pass the same names on every rank")
        try:
            vec = np.array([float(values[k]) for k in names], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"MetricsWriter.log: values must be numbers ({e})") from None
        opt.transport.allreduce_uncounted(vec)
        vec /= opt.comm.Get_size()
        traffic = opt.traffic()
        row: dict[str, Any] = {"method": self.name,
                               "step": int(opt.steps if step is None else step)}
        row.update({k: float(v) for k, v in zip(names, vec, strict=True)})
        row.update({"bits_up": 8 * traffic["sent"], "bits_down": 8 * traffic["received"],
                    "consensus_distance": self._consensus(), "wall_s": self.wall_s()})
        row.update(opt.session.timings())
        self.last = row
        if self.active:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        self._summary("running", "")
        self._t0 += time.perf_counter() - t_in  # off the clock
        return row

    def _consensus(self) -> float:
        """(1/n) Σ_i ‖x_i − x̄‖² (decentralized), uncounted; 0 for master–worker."""
        opt = self.opt
        if not opt.decentralized:
            return 0.0
        n = opt.comm.Get_size()
        x = opt.flat.params.astype(np.float64)
        xbar = x.copy()
        opt.transport.allreduce_uncounted(xbar)
        dev = x - xbar / n
        acc = np.array([dev @ dev])
        opt.transport.allreduce_uncounted(acc)
        return float(acc[0] / n)

    def _summary(self, status: str, message: str) -> None:
        if not self.active:
            return
        opt, last = self.opt, self.last
        nan = float("nan")
        entry = {k: last.get(k) for k in _ENTRY}
        for k in ("loss", "grad_norm_sq", "bits_up", "bits_down"):
            entry[k] = nan if entry[k] is None else entry[k]
        result = MethodResult(
            method=self.name, algorithm=opt.algorithm.name,
            compressor=opt.session.compressor_name, lr=float(opt.param_groups[0]["lr"]),
            steps=int(last.get("step", 0)), wall_s=float(last.get("wall_s", 0.0)),
            status=status, message=message, family=opt.family,
            compute_s=last.get("compute_s"), compress_s=last.get("compress_s"),
            comm_s=last.get("comm_s"), **{**entry, "consensus_distance": float(
                entry["consensus_distance"] or 0.0)})
        doc = {"run": self.meta, "methods": [asdict(result)]}
        write_atomic(self.dir / "summary.json", json.dumps(doc, indent=2) + "\n")

    def close(self, status: str | None = None, message: str = "") -> None:
        """The final summary: ``status`` (default ``interrupted`` after an agreed stop, else
        ``ok``) and ``message``; then the file is closed. Not collective."""
        if self._closed:
            return
        if status is None:
            signum = opt_signal(self.opt)
            status = "interrupted" if signum else "ok"
            if signum and not message:
                message = (f"stopped by {signal_name(signum)} at step {self.opt.steps}; "
                           "continue with opt.load()")
        self._summary(status, message)
        if self.active:
            self._file.close()
        self._hold.release()
        self._closed = True

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, tp: Any, value: Any, tb: Any) -> None:
        self.close(None if tp is None else "failed",
                   "" if tp is None else f"{tp.__name__}: {value}")


def opt_signal(opt: Any) -> int:
    """The stop signal ``opt`` agreed on (0: none, or no should_stop() yet)."""
    poll = opt.__dict__.get("_stop")
    return int(poll.signum) if poll is not None else 0


__all__ = ["MetricsWriter"]
