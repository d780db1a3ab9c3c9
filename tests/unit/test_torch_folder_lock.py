"""The torch front ends take the run-folder lock (decomp.torch.ownership, docs/reliability.md):
``MetricsWriter``, ``opt.save`` and the Trainer's ``metrics_path`` on a folder another live job
holds (its lock names a running process on this host) are refused with the owner named, and
nothing in the folder changes; within one process the holders of a folder share its lock, which
goes when the last lets go. One process (MPI.COMM_SELF); the lock's own rules (stale takeover,
another host) are tests/e2e/test_faults_ownership.py's."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from decomp.algorithms import EF21, GD
from decomp.compress import TopK
from decomp.data.classification import load
from decomp.errors import LaunchError
from decomp.runner import lock as runlock
from decomp.torch import DistributedOptimizer, MetricsWriter
from decomp.torch.trainer import Trainer


@pytest.fixture(scope="module")
def comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


@pytest.fixture()
def other_job() -> Iterator[dict]:
    """A live process of this host standing for another job (its lock document)."""
    p = subprocess.Popen(["sleep", "120"])
    try:
        doc = {**runlock.owner_document(), "pid": p.pid, "start": runlock._start_time(p.pid),
               "command": "decomp run other.toml"}
        yield doc
    finally:
        p.kill()
        p.wait()


def _held(folder: Path, doc: dict) -> Path:
    """``folder`` with a file in it, locked by ``doc``; returns the lock's path."""
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 0}\n')
    lock = runlock.lock_path(folder.parent, folder.name)
    lock.write_text(json.dumps(doc) + "\n")
    return lock


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/"
            for p in sorted(folder.rglob("*"))}


def _opt(comm) -> tuple[nn.Module, DistributedOptimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    return model, DistributedOptimizer(None, model, EF21(TopK(ratio=0.5)), comm=comm, lr=0.1)


def _refused(info: pytest.ExceptionInfo, what: str, folder: Path, doc: dict) -> None:
    msg = str(info.value)
    assert msg.startswith(f"{what}: run folder {folder.absolute()} is in use by PID "
                          f"{doc['pid']} on host {doc['host']}"), msg
    assert "(decomp run other.toml)" in msg


def test_a_metrics_writer_on_a_folder_in_use_is_refused(comm, tmp_path: Path,
                                                        other_job: dict) -> None:
    folder = tmp_path / "run"
    lock = _held(folder, other_job)
    before = _snapshot(folder)
    _, opt = _opt(comm)
    with pytest.raises(LaunchError) as info:
        MetricsWriter(opt, folder)
    _refused(info, f"MetricsWriter({folder})", folder, other_job)
    assert _snapshot(folder) == before
    assert json.loads(lock.read_text())["pid"] == other_job["pid"]  # the owner's lock stays


def test_opt_save_into_a_folder_in_use_is_refused(comm, tmp_path: Path,
                                                  other_job: dict) -> None:
    folder = tmp_path / "ckpt"
    _held(folder, other_job)
    before = _snapshot(folder)
    _, opt = _opt(comm)
    with pytest.raises(LaunchError) as info:
        opt.save(folder)
    _refused(info, f"opt.save({folder})", folder, other_job)
    assert _snapshot(folder) == before


def test_a_trainer_writing_into_a_folder_in_use_is_refused(comm, tmp_path: Path,
                                                           other_job: dict) -> None:
    folder = tmp_path / "trainer"
    _held(folder, other_job)
    before = _snapshot(folder)
    data = load("synthetic", n_samples=40, n_features=4, n_classes=2)
    with pytest.raises(LaunchError) as info:
        Trainer(nn.Linear(4, 2), nn.CrossEntropyLoss(), data, algorithm=GD(lr=0.1),
                batch_size=8, comm=comm, metrics_path=folder / "metrics.jsonl",
                verbose=False)
    _refused(info, f"Trainer(metrics_path={folder / 'metrics.jsonl'})", folder, other_job)
    assert _snapshot(folder) == before


def test_one_process_shares_a_folder_and_lets_go_of_it(comm, tmp_path: Path) -> None:
    """A writer and the optimizer's saves in one folder: one lock, held until both let go
    (the writer's close, the optimizer's close); then another job may take it."""
    folder = tmp_path / "run"
    lock = runlock.lock_path(tmp_path, "run")
    model, opt = _opt(comm)
    writer = MetricsWriter(opt, folder)
    assert json.loads(lock.read_text())["pid"] == runlock.owner_document()["pid"]
    opt.save(folder)
    opt.save(folder)  # the second save of a folder takes nothing new
    writer.log(loss=1.0)
    writer.close()
    assert lock.exists()  # the optimizer still holds it
    opt.close()
    assert not lock.exists()
    runlock.acquire(tmp_path, "run", folder).release()  # free for the next job
