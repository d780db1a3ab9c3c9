"""Checkpoints: everything needed to continue a method bit for bit, one file per rank.

Layout in the run folder (which every rank must see: a shared file system, as on any cluster)::

    checkpoints/m<i>.json              the pointer: step, world size, config fingerprint and the
                                       sha256 of every rank's file (rank 0 writes it last)
    checkpoints/m<i>-s<step>/rank<r>.npz  rank r's state at that step

A rank's ``.npz`` holds the algorithm state's arrays (x or x_i, EF21's g_i and g, EF's e_i,
EF21+'s G, CHOCO's replicas, ECD's estimates, momenta ...) under ``state.<field>``, the torch
models' BatchNorm statistics under ``buffers.<k>``, and one JSON document ``meta`` (scalar
state fields, byte counters, wall and split times, the method's first and last metrics rows).

Writing is collective and atomic: every rank writes ``rank<r>.npz.tmp``, fsyncs and renames it;
once all ranks report success, rank 0 writes the pointer to ``m<i>.json.tmp`` and renames it,
then removes the older step folders. A kill at any moment leaves the previous pointer and the
files it names intact; a resume verifies each file's sha256 against the pointer.
Randomness is a function of (seed, rank, step, purpose), so no generator state is saved.

The pointer also records the model's :class:`~decomp.layout.Layout` (``"layout"``: its tensors'
names, offsets and shapes) when the store knows it (``CheckpointStore(..., layout=)`` or the
``layout`` attribute); loading a checkpoint whose layout differs from the run's is a
ConfigError naming the first differing tensor (:func:`check_layout`).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from decomp.errors import ConfigError, StorageError
from decomp.layout import Layout
from decomp.runner.ckcheck import check_members, meta_problem, pointer_problem
from decomp.runner.diskfull import storage_error, write_bytes_atomic

_STATE = "state."
_BUFFERS = "buffers."


def split_state(state: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A NamedTuple state as (arrays by field, JSON-able scalars by field; None kept)."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for name, value in zip(state._fields, state, strict=True):
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif value is None or isinstance(value, (bool, int, float, str, np.integer,
                                                 np.floating)):
            scalars[name] = value.item() if isinstance(value, np.generic) else value
        else:
            raise TypeError(f"state field {name!r} of {type(state).__name__} is a "
                            f"{type(value).__name__}: only arrays and scalars can be saved")
    return arrays, scalars


def restore_state(state: Any, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> Any:
    """``state`` (a fresh init of the same method) with the saved values: arrays copied in
    place (views bound to them, such as a torch module's parameters, stay valid), scalars
    replaced. A field whose shape or dtype differs is a ConfigError."""
    fields = set(state._fields)
    if set(arrays) | set(scalars) != fields:
        raise ConfigError(f"checkpoint state fields {sorted(set(arrays) | set(scalars))} do "
                          f"not match {type(state).__name__}{tuple(state._fields)}")
    for name, saved in arrays.items():
        live = getattr(state, name)
        if not isinstance(live, np.ndarray) or live.shape != saved.shape or \
                live.dtype != saved.dtype:
            raise ConfigError(f"checkpoint field {name!r}: saved {saved.dtype}{saved.shape}, "
                              f"the method has {getattr(live, 'dtype', None)}"
                              f"{getattr(live, 'shape', None)}")
        live[...] = saved
    return state._replace(**scalars)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data, "checkpoint file")


def check_layout(pointer: dict[str, Any], layout: Layout | None, where: str = "") -> None:
    """Refuse (ConfigError) a checkpoint ``pointer`` recorded for another layout than
    ``layout``; a pointer without one (older checkpoints) or ``layout=None`` is not checked."""
    doc = pointer.get("layout")
    if doc is None or layout is None:
        return
    where = f" {where}" if where else ""
    try:
        saved = Layout.from_dict(doc)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"checkpoint{where}: its recorded layout is malformed ({e}); remove "
                          "the checkpoints to restart from step 0") from None
    if saved == layout:
        return
    diff = next((f"tensor {t}: saved {a.name!r}{list(a.shape)}, now {b.name!r}{list(b.shape)}"
                 for t, (a, b) in enumerate(zip(saved, layout, strict=False)) if a != b),
                f"saved {len(saved)} tensors, now {len(layout)}")
    raise ConfigError(f"--resume: checkpoint{where} was written for another model layout "
                      f"({saved.describe()}; this run: {layout.describe()}; first difference: "
                      f"{diff}). Resume with the model it was trained with, or start a new "
                      "run (--overwrite or another run name)")


class CheckpointStore:
    """The checkpoints of one run folder ``run_dir`` over ``comm`` (the run's world).

    layout: the model's layout, recorded in every pointer and checked on :meth:`load`
    (None: not recorded, not checked); may be set after construction, once it is known."""

    def __init__(self, run_dir: Path, comm: Any, layout: Layout | None = None) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.layout = layout

    def pointer_path(self, method: int) -> Path:
        return self.dir / f"m{method}.json"

    def _step_dir(self, method: int, step: int) -> Path:
        return self.dir / f"m{method}-s{step}"

    def rank_file(self, pointer: dict[str, Any]) -> Path:
        """This rank's file of the checkpoint ``pointer`` names."""
        return self._step_dir(int(pointer["method"]), int(pointer["step"])) / \
            f"rank{self.rank}.npz"

    def save(self, method: int, step: int, state: Any, meta: dict[str, Any],
             buffers: list[np.ndarray], fingerprint: dict[str, Any]) -> Path:
        """Collective: write this rank's file for ``step`` of method ``method``, then (rank 0)
        the pointer. Returns this rank's file. An error on any rank (disk full, ...) raises
        on every rank before the pointer moves."""
        arrays, scalars = split_state(state)
        payload = {f"{_STATE}{k}": v for k, v in arrays.items()}
        payload.update({f"{_BUFFERS}{k}": b for k, b in enumerate(buffers)})
        doc = {**meta, "state_scalars": scalars, "rank": self.rank, "step": step,
               "method": method}
        payload["meta"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
        path = self._step_dir(method, step) / f"rank{self.rank}.npz"
        error = ""
        digest = ""
        try:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise storage_error(e, path.parent, None, "checkpoint folder") from None
            buf = io.BytesIO()
            np.savez(buf, **payload)
            _write_atomic(path, buf.getvalue())
            digest = _sha256(path)
        except OSError as e:  # StorageError included: it names the file and the bytes
            error = f"rank {self.rank}: {e}"
        results = self.comm.allgather((digest, error))  # control traffic, once per checkpoint
        errors = [err for _, err in results if err]
        if errors:  # the step is not kept: no file of it is left behind
            path.unlink(missing_ok=True)
            self.comm.Barrier()
            if self.rank == 0:
                shutil.rmtree(path.parent, ignore_errors=True)
            raise StorageError(f"checkpoint of step {step} not written (the previous one is "
                               f"kept): {'; '.join(errors)}")
        if self.rank == 0:
            pointer = {"method": method, "step": step, "world_size": self.size,
                       "fingerprint": fingerprint, "sha256": [d for d, _ in results]}
            if self.layout is not None:
                pointer["layout"] = self.layout.to_dict()
            old = self.read_pointer(method)
            _write_atomic(self.pointer_path(method),
                          (json.dumps(pointer, indent=1) + "\n").encode())
            if old is not None and old["step"] != step:
                shutil.rmtree(self._step_dir(method, old["step"]), ignore_errors=True)
        self.comm.Barrier()  # nobody moves on (or is killed) believing in a pointer not written
        return path

    def read_pointer(self, method: int) -> dict[str, Any] | None:
        """The pointer of method ``method`` on this rank's view of the disk (None: none)."""
        p = self.pointer_path(method)
        if not p.exists():
            return None
        try:
            doc = json.loads(p.read_text())
            int(doc["step"]), int(doc["world_size"]), list(doc["sha256"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{p}: not a decomp checkpoint pointer ({e}); remove it to "
                              "restart that method from step 0") from None
        problem = pointer_problem(doc, method)
        if problem:
            raise ConfigError(f"{p}: {problem}; the pointer is damaged: remove it to restart "
                              "that method from step 0") from None
        return dict(doc)

    def load(self, pointer: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[np.ndarray],
                                                     dict[str, Any]]:
        """This rank's (state arrays, buffers, meta) of ``pointer``, checked against its
        sha256 (a corrupt or partial file is a ConfigError naming it) and its layout against
        :attr:`layout` (:func:`check_layout`)."""
        method, step = int(pointer["method"]), int(pointer["step"])
        check_layout(pointer, self.layout, self.pointer_path(method).name)
        path = self._step_dir(method, step) / f"rank{self.rank}.npz"
        if not path.exists():
            raise ConfigError(f"checkpoint file {path} is missing (the pointer "
                              f"{self.pointer_path(method).name} names step {step})")
        if _sha256(path) != pointer["sha256"][self.rank]:
            raise ConfigError(f"checkpoint file {path} is corrupt (its sha256 differs from "
                              f"the one recorded in {self.pointer_path(method).name})")
        check_members(path)  # no field may declare more than the file holds
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k[len(_STATE):]: z[k] for k in z.files if k.startswith(_STATE)}
                nbuf = sum(k.startswith(_BUFFERS) for k in z.files)
                buffers = [z[f"{_BUFFERS}{k}"] for k in range(nbuf)]
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise ConfigError(f"checkpoint file {path} cannot be read: {e}") from None
        problem = meta_problem(meta, step)
        if problem:
            raise ConfigError(f"checkpoint file {path}: {problem}; the file is damaged: "
                              "remove the checkpoints to restart from step 0")
        return arrays, buffers, meta

    def remove_all(self) -> None:
        """Rank 0: delete every checkpoint of the run folder (``--overwrite``)."""
        if self.rank == 0:
            shutil.rmtree(self.dir, ignore_errors=True)
