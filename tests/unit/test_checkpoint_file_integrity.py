"""A checkpoint file is loaded only if it is the file the pointer recorded and holds what a
checkpoint holds (decomp/runner/checkpoint.py, ``CheckpointStore.load``):

- any sha256 other than the recorded one is "corrupt" — whichever way the digests compare
  (a recorded digest below and above the file's own, all zeros and all f's);
- a file with the recorded digest that lacks a member (the metadata, a buffer of the
  numbered run) "cannot be read": a ConfigError naming the file, never a bare KeyError.
On one process (the pointer faults and forged headers: test_checkpoint_faults.py)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from decomp.errors import ConfigError
from decomp.runner.checkpoint import CheckpointStore
from tests.unit.test_checkpoint_layout import _Comm


class _State(NamedTuple):
    x: np.ndarray
    step: int


def _saved(tmp_path: Path, buffers: int = 0) -> tuple[CheckpointStore, dict[str, Any]]:
    store = CheckpointStore(tmp_path, _Comm())
    store.save(0, 5, _State(np.arange(16.0), 5), {"wall_s": 1.0},
               [np.full(3, float(k)) for k in range(buffers)], {"seed": 1})
    pointer = store.read_pointer(0)
    assert pointer is not None
    return store, pointer


def test_the_saved_file_loads(tmp_path: Path) -> None:
    store, pointer = _saved(tmp_path, buffers=2)
    arrays, buffers, meta = store.load(pointer)
    assert np.array_equal(arrays["x"], np.arange(16.0)) and meta["step"] == 5
    assert [b.tolist() for b in buffers] == [[0.0] * 3, [1.0] * 3]


@pytest.mark.parametrize("digest", ["0" * 64, "f" * 64])
def test_a_file_whose_sha256_is_not_the_recorded_one_is_corrupt(tmp_path: Path,
                                                                 digest: str) -> None:
    store, pointer = _saved(tmp_path)
    assert hashlib.sha256(store.rank_file(pointer).read_bytes()).hexdigest() != digest
    pointer["sha256"] = [digest]
    with pytest.raises(ConfigError, match=r"rank0.npz is corrupt \(its sha256 differs from "
                                          r"the one recorded in m0.json\)"):
        store.load(pointer)


@pytest.mark.parametrize("drop", ["meta", "buffers.0"])
def test_a_file_missing_a_member_cannot_be_read_and_is_named(tmp_path: Path,
                                                             drop: str) -> None:
    store, pointer = _saved(tmp_path, buffers=2)
    f = store.rank_file(pointer)
    with zipfile.ZipFile(f) as src:
        names = [i.filename for i in src.infolist()]
        assert f"{drop}.npy" in names, names
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as out:
            for info in src.infolist():
                if info.filename != f"{drop}.npy":
                    out.writestr(info, src.read(info))
    f.write_bytes(buf.getvalue())
    pointer["sha256"] = [hashlib.sha256(buf.getvalue()).hexdigest()]  # the forged file's own
    store.pointer_path(0).write_text(json.dumps(pointer))
    with pytest.raises(ConfigError, match=rf"checkpoint file {f} cannot be read: "):
        store.load(pointer)
