"""A resume whose per-rank checkpoint files disagree is refused before any rank steps (issue 26
item 2; decomp/runner/agree.py). Both cases used to hang (400 s with ``--comm-timeout 30``; 316
s after one rank reported the divergence): one rank's file edited — its sha256 re-recorded in
the pointer, so the file check passes — to another step, or to hold a NaN. Each case asserts
the exit code, the first line of the message, a time bound and that no rank is left running.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_faults_input import first_error_line, processes_mentioning
from tests.e2e.test_faults_lifecycle import _run, _write

TIMEOUT = "30"  # --comm-timeout of the resumed run: the refusal must come well before it


def _edit_rank_file(ck: Path, rank: int, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Change rank ``rank``'s file of method 0's checkpoint and record its new sha256 in the
    pointer (what a tampered or torn copy that still passes the file check looks like)."""
    pointer_path = ck / "m0.json"
    pointer = json.loads(pointer_path.read_text())
    path = ck / f"m0-s{pointer['step']}" / f"rank{rank}.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    pointer["sha256"][rank] = hashlib.sha256(path.read_bytes()).hexdigest()
    pointer_path.write_text(json.dumps(pointer, indent=1) + "\n")


def _other_step(arrays: dict[str, np.ndarray]) -> None:
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["step"] -= 50
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def _a_nan(arrays: dict[str, np.ndarray]) -> None:
    arrays["state.x"] = arrays["state.x"].copy()
    arrays["state.x"][0] = np.nan


@pytest.mark.parametrize("edit,message", [
    # a rank file's own step against the pointer's: refused by that rank's file check
    # (decomp/runner/ckcheck.py) before the ranks compare with each other
    (_other_step, "checkpoint file "),  # ... rank1.npz: meta field 'step' is 50, expected 100
    (_a_nan, "--resume: the checkpoint of EF21 top-2 (checkpoints/m0-s100) holds non-finite "
             "values on rank 1 (rank 1: x)"),
], ids=["per-rank steps disagree", "one rank holds a NaN"])
def test_a_resume_from_disagreeing_rank_files_is_refused(tmp_path: Path, edit: Callable,
                                                         message: str) -> None:
    cfg = _write(tmp_path, "agree", steps=100, every=50)
    first = _run(tmp_path, cfg)
    assert first.returncode == 0, first.stderr[-2000:]
    _edit_rank_file(tmp_path / "runs" / "agree" / "checkpoints", 1, edit)
    t0 = time.monotonic()
    r = _run(tmp_path, cfg, "--resume", "--set", "run.steps=200", "--comm-timeout", TIMEOUT)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr[-3000:]
    line = first_error_line(r.stderr)
    assert line.startswith(message), r.stderr[-3000:]
    if edit is _other_step:
        assert ("rank1.npz: meta field 'step' is 50, expected the step the pointer names "
                "(100)") in line and line.endswith("to restart from step 0"), line
    else:
        assert line.endswith("or remove checkpoints/m0.json and checkpoints/m0-s100 to restart "
                             "EF21 top-2 from step 0"), r.stderr[-3000:]
    assert took < float(TIMEOUT), took  # refused, not ended by the watchdog
    time.sleep(0.3)
    assert not processes_mentioning(str(tmp_path / "runs"))
