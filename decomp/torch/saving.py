"""Checkpoints and exports of :class:`decomp.torch.DistributedOptimizer` in the user's loop:
``opt.save(dir)``, ``opt.load(dir)``, ``opt.export(path)`` and ``opt.should_stop()``
(:class:`LoopMethods`, a base class of the optimizer).

One folder holds every rank's state, written the way ``decomp run`` writes its checkpoints
(:mod:`decomp.runner.checkpoint`)::

    <dir>/checkpoint.json        the pointer: step, world size, algorithm, mode, d, the model's
                                 layout and the sha256 of every rank's file (rank 0, last)
    <dir>/s<step>/rank<r>.pt     rank r's state after that step (``torch.save``)

A rank's file holds the model's ``state_dict()`` (x or this node's x_i, BatchNorm statistics),
``opt.state_dict()`` (the wrapped optimizer, the algorithm state: error-feedback memories,
estimators, replicas; the step counter), the LR scheduler's ``state_dict()`` if one is given,
the random generators' states (torch, numpy, python ``random``: dropout and shuffling repeat
exactly) and the user's ``extra`` (plain data). Writing is collective and atomic: every rank
writes ``rank<r>.pt.tmp``, fsyncs and renames it; once every rank reports success (and rank 0
sees every rank's file: the folder must be on a file system all ranks share), rank 0 replaces
the pointer and removes the previous step's folder. A kill at any moment leaves the previous
pointer and its files intact; :meth:`LoopMethods.load` checks every file's sha256.

Save, load and export are collective: :func:`decomp.torch.preempt.agree` refuses, with the
same message on every rank that made the call, a call that some rank does not make (``if rank
== 0: opt.save(...)``) or makes after another step or with another path, before anything is
written. The file formats are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decomp.errors import ConfigError
from decomp.layout import Layout
from decomp.runner.checkpoint import _sha256, _write_atomic
from decomp.torch.ownership import hold_for_save
from decomp.torch.preempt import DEFAULT_TIMEOUT_S, StopPoll, agree

POINTER = "checkpoint.json"
FORMAT = "decomp.torch checkpoint 1"


def rng_state() -> dict[str, Any]:
    """The torch, numpy (legacy global) and python ``random`` generators' states, as types
    ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (the user's)
    version, internal, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(np.asarray(keys, np.int64)), int(pos),
                      int(has_gauss), float(gauss)],
            "python": [version, list(internal), py_gauss]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss,  # noqa: NPY002
                         gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))


def _plain(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of tensors of their own (a model's are views into the flat vectors)."""
    return {k: v.detach().clone() for k, v in sd.items()}


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class LoopMethods:
    """``should_stop``, ``save``, ``load`` and ``export`` of the optimizer (it provides
    ``comm``, ``rank``, ``flat``, ``steps``, ``algorithm``, ``_mode``, ``averaged()`` and its
    ``state_dict``/``load_state_dict``)."""

    comm: Any
    rank: int
    flat: Any
    steps: int
    algorithm: Any
    _mode: str

    # --- preemption --------------------------------------------------------------------------
    def _stop_poll(self) -> StopPoll:
        poll = self.__dict__.get("_stop")
        if poll is None:
            poll = self.__dict__["_stop"] = StopPoll(self.comm)
        return poll

    def should_stop(self) -> bool:
        """Collective, once per step on every rank (after ``step()``): True on every rank
        after the same step once SIGINT, SIGTERM or SIGUSR1 reached any rank (the first call
        installs the handlers; the answer comes one step after the signal). Then save and exit
        with :attr:`exit_code`, as ``decomp run`` does."""
        return self._stop_poll().should_stop(self.steps)

    @property
    def stop_signal(self) -> int:
        """The signal every rank agreed to stop for (0: none)."""
        return self._stop_poll().signum

    @property
    def exit_code(self) -> int:
        """128 + :attr:`stop_signal` (143 for SIGTERM, 138 for SIGUSR1: the SLURM template
        requeues the job on 138), 0 without a stop."""
        return self._stop_poll().exit_code

    def _timeout(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            timeout_s = getattr(self, "comm_timeout", None) or DEFAULT_TIMEOUT_S
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
        return float(timeout_s)

    # --- checkpoints ---------------------------------------------------------------------------
    def save(self, directory: str | Path, *, scheduler: Any = None, extra: Any = None,
             timeout_s: float | None = None) -> Path:
        """Collective: every rank's state after step :attr:`steps` into ``directory`` (one
        folder on a file system every rank sees; the module doc lists what is saved), atomic.
        ``scheduler``: an LR scheduler to save with it; ``extra``: the loop's own plain data
        (epoch, ...), returned by :meth:`load`. Called on some ranks only, it raises on them
        after ``timeout_s`` (default: ``comm_timeout``, else 300 s) and writes nothing.
        Returns ``directory``."""
        d = Path(directory)
        agree(self.comm, "opt.save", self.steps, str(d.resolve()), self._timeout(timeout_s))
        hold_for_save(self, d)  # the folder's lock, before anything is written
        step, size = self.steps, self.comm.Get_size()
        state = {"format": FORMAT, "rank": self.rank, "world": size, "step": step,
                 "model": _plain(self.flat.module.state_dict()),
                 "optimizer": self.state_dict(),  # type: ignore[attr-defined]
                 "scheduler": None if scheduler is None else scheduler.state_dict(),
                 "rng": rng_state(), "extra": extra}
        path = d / f"s{step}" / f"rank{self.rank}.pt"
        digest, error = "", ""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, _torch_bytes(state))
            digest = _sha256(path)
        except (OSError, RuntimeError, TypeError) as e:  # disk full, an unpicklable extra
            error = f"rank {self.rank}: {type(e).__name__}: {e}"
        results = self.comm.allgather((digest, error))
        problem = "; ".join(err for _, err in results if err)
        if not problem and self.rank == 0:
            problem = self._write_pointer(d, step, [dg for dg, _ in results])
        problem = self.comm.bcast(problem, root=0)
        if problem:
            raise OSError(f"opt.save({d}) at step {step}: nothing new written ({problem})")
        return d

    def _write_pointer(self, d: Path, step: int, digests: list[str]) -> str:
        """Rank 0: the pointer, once every rank's file is visible here ("" or the error)."""
        files = [d / f"s{step}" / f"rank{r}.pt" for r in range(len(digests))]
        unseen = [r for r, f in enumerate(files) if not f.is_file()]
        if unseen:
            return (f"rank 0 does not see the file(s) of rank(s) {unseen} in {d}: the folder "
                    "must be on a file system every rank shares")
        pointer = {"format": FORMAT, "step": step, "world_size": len(digests),
                   "algorithm": self.algorithm.name, "mode": self._mode, "d": self.flat.d,
                   "layout": self.flat.layout.to_dict(), "sha256": digests}
        try:
            old = _read_pointer(d)
        except ConfigError:  # not ours or damaged: replaced, its files left alone
            old = None
        try:
            _write_atomic(d / POINTER, (json.dumps(pointer, indent=1) + "\n").encode())
        except OSError as e:
            return f"{type(e).__name__}: {e}"
        if old is not None and int(old["step"]) != step:
            shutil.rmtree(d / f"s{old['step']}", ignore_errors=True)
        return ""

    def load(self, directory: str | Path, *, scheduler: Any = None, missing_ok: bool = False,
             timeout_s: float | None = None) -> Any:
        """Collective: continue from :meth:`save`'s folder (the same world size, algorithm,
        mode and model): the model, the optimizer and algorithm state, :attr:`steps`, the
        scheduler and the random generators as they were, so the run goes on bit for bit.
        Returns the saved ``extra`` (None if none). ``missing_ok``: a folder without a
        checkpoint returns None and changes nothing (the first start of a requeued job)."""
        d = Path(directory)
        agree(self.comm, "opt.load", self.steps, str(d.resolve()), self._timeout(timeout_s))
        answer: tuple[str, Any] = ("", None)
        if self.rank == 0:
            try:
                answer = ("", _read_pointer(d))
                if answer[1] is not None:
                    self._check_pointer(d, answer[1])
            except ConfigError as e:
                answer = (str(e), None)
        err, pointer = self.comm.bcast(answer, root=0)
        if err:
            raise ConfigError(err)
        if pointer is None:
            if missing_ok:
                return None
            raise ConfigError(f"opt.load({d}): no checkpoint there ({d / POINTER} is missing); "
                              "pass missing_ok=True to start from scratch when there is none")
        state, error = None, ""
        path = d / f"s{pointer['step']}" / f"rank{self.rank}.pt"
        try:
            if _sha256(path) != pointer["sha256"][self.rank]:
                error = f"{path} is corrupt (its sha256 differs from the one in {POINTER})"
            else:
                state = torch.load(path, weights_only=True)
        except (OSError, RuntimeError, ValueError) as e:
            error = f"{path} cannot be read: {e}"
        errors = [e for e in self.comm.allgather(error) if e]
        if errors:
            raise ConfigError(f"opt.load({d}): " + "; ".join(errors))
        assert state is not None
        if (scheduler is None) != (state["scheduler"] is None):
            raise ConfigError(f"opt.load({d}): the checkpoint was saved "
                              f"{'without' if state['scheduler'] is None else 'with'} an LR "
                              "scheduler: pass scheduler= to load() as it was passed to save()")
        self.flat.module.load_state_dict(state["model"])
        self.load_state_dict(state["optimizer"])  # type: ignore[attr-defined]
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        return state["extra"]

    def _check_pointer(self, d: Path, pointer: dict[str, Any]) -> None:
        size = self.comm.Get_size()
        if int(pointer["world_size"]) != size:
            raise ConfigError(f"opt.load({d}): saved by {pointer['world_size']} MPI rank(s), this "
                              f"run has {size}: launch with mpiexec -n {pointer['world_size']}")
        for key, mine in (("algorithm", self.algorithm.name), ("mode", self._mode),
                          ("d", self.flat.d)):
            if pointer.get(key) != mine:
                raise ConfigError(f"opt.load({d}): saved with {key} {pointer.get(key)!r}, this "
                                  f"optimizer has {mine!r}: load it into the same set-up")
        saved = Layout.from_dict(pointer["layout"])
        if saved != self.flat.layout:
            raise ConfigError(f"opt.load({d}): saved for another model ({saved.describe()}); this "
                              f"model: {self.flat.layout.describe()}")

    # --- export --------------------------------------------------------------------------------
    def export(self, path: str | Path, *, timeout_s: float | None = None) -> Path:
        """Collective: rank 0 writes the model for inference as a plain ``state_dict`` file
        (``torch.save``, atomic): x̄ = (1/n) Σ_i x_i for the decentralized family, x for the
        master–worker one, with every rank's float buffers (BatchNorm statistics) averaged
        (:meth:`averaged`). Load it with ``model.load_state_dict(torch.load(path))``."""
        p = Path(path)
        agree(self.comm, "opt.export", self.steps, str(p.resolve()), self._timeout(timeout_s))
        error = ""
        with self.averaged() as model:  # type: ignore[attr-defined]
            if self.rank == 0:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    _write_atomic(p, _torch_bytes(_plain(model.state_dict())))
                except OSError as e:
                    error = f"{type(e).__name__}: {e}"
        error = self.comm.bcast(error, root=0) if self.comm.Get_size() > 1 else error
        if error:
            raise OSError(f"opt.export({p}): {error}")
        return p


def _read_pointer(d: Path) -> dict[str, Any] | None:
    p = d / POINTER
    if not p.exists():
        return None
    try:
        doc = json.loads(p.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
        int(doc["step"]), int(doc["world_size"]), list(doc["sha256"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{p}: not a decomp.torch checkpoint ({e}); point load() at the "
                          "folder opt.save() wrote") from None
    return dict(doc)


__all__ = ["FORMAT", "POINTER", "LoopMethods", "rng_state", "set_rng_state"]
