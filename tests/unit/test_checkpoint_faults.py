"""Fault catalogue, checkpoints and run files (docs/reliability.md, "Corrupt checkpoints and
full disks"): a damaged pointer, a forged array header, bad metadata, a full disk during a
checkpoint or a metrics write, a name longer than the file system allows. Each is refused with
a message naming the file and the field (or the bytes), and leaves no temporary file."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from decomp.errors import ConfigError, StorageError
from decomp.runner import diskfull
from decomp.runner.checkpoint import CheckpointStore
from decomp.runner.outputs import Outputs
from decomp.runner.rundir import claim_run_dir
from tests.unit.test_checkpoint_layout import _Comm

BOUND_S = 2.0  # one refused checkpoint: read a header, not the data


class _State(NamedTuple):
    x: np.ndarray
    step: int


def _saved(tmp_path: Path) -> tuple[CheckpointStore, dict[str, Any]]:
    store = CheckpointStore(tmp_path, _Comm())
    store.save(0, 5, _State(np.arange(16.0), 5), {"wall_s": 1.0}, [], {"seed": 1})
    pointer = store.read_pointer(0)
    assert pointer is not None
    return store, pointer


def _repoint(store: CheckpointStore, pointer: dict[str, Any], data: bytes) -> Path:
    """Write ``data`` as rank 0's file and record its sha256 (a forged, 'valid' checkpoint)."""
    f = store.rank_file(pointer)
    f.write_bytes(data)
    pointer["sha256"] = [hashlib.sha256(data).hexdigest()]
    store.pointer_path(0).write_text(json.dumps(pointer))
    return f


def test_a_huge_declared_shape_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    store, pointer = _saved(tmp_path)
    f = store.rank_file(pointer)
    src = zipfile.ZipFile(f)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "state.x.npy":
                data = data.replace(b"(16,)", b"(4000000000000,)".ljust(5))
            out.writestr(info.filename, data)
    _repoint(store, pointer, buf.getvalue())
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"checkpoint file {f}: field 'state.x' declares "
                       r"shape \(4000000000000,\) of float64 \(32000000000000 bytes\) but "
                       r"holds \d+ bytes; the file is damaged"):
        store.load(store.read_pointer(0))  # type: ignore[arg-type]
    assert time.monotonic() - t0 < BOUND_S


@pytest.mark.parametrize("edit,message", [
    (lambda p: p.update(sha256=[]), r"field 'sha256' lists 0 digest\(s\) for a world of 1"),
    (lambda p: p.update(sha256=["xyz"]), r"field 'sha256' entry 0 is not a sha256 digest"),
    (lambda p: p.update(step=-3), r"field 'step' is -3"),
    (lambda p: p.update(world_size=0), r"field 'world_size' is 0"),
    (lambda p: p.update(method=4), r"field 'method' is 4, the file is method 0's"),
])
def test_a_damaged_pointer_names_the_field(tmp_path: Path, edit: Any, message: str) -> None:
    store, pointer = _saved(tmp_path)
    edit(pointer)
    store.pointer_path(0).write_text(json.dumps(pointer))
    with pytest.raises(ConfigError, match=rf"{store.pointer_path(0)}: {message}"):
        store.read_pointer(0)


@pytest.mark.parametrize("meta,message", [
    ({"step": 5}, r"meta field 'state_scalars' is missing"),
    ({"step": 7, "state_scalars": {}}, r"meta field 'step' is 7, expected the step the "
                                       r"pointer names \(5\)"),
    ({"step": 5, "state_scalars": []}, r"meta field 'state_scalars' is \[\], expected a table"),
])
def test_bad_metadata_names_the_file_and_field(tmp_path: Path, meta: dict,
                                               message: str) -> None:
    store, pointer = _saved(tmp_path)
    buf = io.BytesIO()
    np.savez(buf, **{"state.x": np.arange(16.0),
                     "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    f = _repoint(store, pointer, buf.getvalue())
    with pytest.raises(ConfigError, match=rf"checkpoint file {f}: {message}"):
        store.load(store.read_pointer(0))  # type: ignore[arg-type]


def _no_space(*_: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_checkpoint_names_the_path_and_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = _saved(tmp_path)
    monkeypatch.setattr(diskfull.os, "fsync", _no_space)
    with pytest.raises(StorageError) as info:
        store.save(0, 10, _State(np.arange(16.0), 10), {"wall_s": 1.0}, [], {"seed": 1})
    msg = str(info.value)
    target = tmp_path / "checkpoints" / "m0-s10" / "rank0.npz"
    assert msg.startswith("checkpoint of step 10 not written (the previous one is kept): "
                          f"rank 0: cannot write checkpoint file {target}: no space left on "
                          "the device (needs "), msg
    assert "free there); free space there or point out_dir (--out) at a larger" in msg
    assert not target.parent.exists()  # neither the file, its temporary nor the folder
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["m0-s5", "m0.json"]
    assert store.read_pointer(0)["step"] == 5  # type: ignore[index]


def test_a_full_disk_during_a_metrics_or_summary_write(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = Outputs(tmp_path, "name = 'x'\n", True)
    real_write = io.TextIOWrapper.write
    monkeypatch.setattr(diskfull.os, "fsync", _no_space)  # the one atomic writer
    with pytest.raises(StorageError, match=rf"cannot write run file {tmp_path}/summary.json: "
                       r"no space left on the device \(needs \d+ B"):
        out.summary([])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            return None
    out._metrics.close()
    out._metrics = Full()  # type: ignore[assignment]
    with pytest.raises(StorageError, match=r"cannot write metrics row to .*metrics.jsonl: "
                       r"no space left on the device"):
        out.metrics({"step": 1})
    assert real_write is io.TextIOWrapper.write


def test_a_name_longer_than_the_file_system_allows_is_refused(tmp_path: Path) -> None:
    name = "€" * 90  # 90 characters (under MAX_NAME) but 270 bytes
    with pytest.raises(ConfigError, match=r"name is 270 bytes long \(UTF-8\); the file system "
                       r"of .* allows file names of 255 bytes"):
        claim_run_dir(tmp_path, name, "new")
    assert list(tmp_path.iterdir()) == []
