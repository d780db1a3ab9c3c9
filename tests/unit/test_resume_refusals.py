"""What ``--resume`` refuses, read from the run folder on one process
(decomp/runner/resume.py, ``check_resume``): a checkpoint written for another config names
its differing keys — the first eight, sorted, ``key: then -> now`` — another world size names
the size to launch with, and fewer steps than a checkpoint holds is refused; a folder whose
checkpoints agree yields their pointers. Over MPI with real checkpoints:
tests/mpi/test_resume.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decomp.config import dump_toml, load_config
from decomp.errors import ConfigError
from decomp.runner.plan import plan_methods, resolved_config
from decomp.runner.resume import check_resume, fingerprint


def _cfg(tmp_path: Path, steps: int = 8):
    raw = {"name": "resume", "seed": 3, "out_dir": str(tmp_path),
           "problem": {"kind": "least_squares", "dataset": "synthetic", "n_samples": 40,
                       "n_features": 6, "lam": 0.0},
           "run": {"steps": steps, "log_every": 4, "progress": False},
           "methods": [{"algorithm": "gd", "name": "GD"}]}
    cfg = load_config(raw)
    return resolved_config(cfg, plan_methods(cfg))


class _Store:
    def __init__(self, pointer: dict[str, Any] | None) -> None:
        self.pointer = pointer

    def read_pointer(self, method: int) -> dict[str, Any] | None:
        return self.pointer


class _One:
    def Get_rank(self) -> int:  # noqa: N802 - the mpi4py names
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1


def _run_dir(tmp_path: Path, cfg: Any) -> Path:
    run = tmp_path / "resume"
    run.mkdir()
    (run / "config.toml").write_text(dump_toml(cfg))
    return run


def test_a_checkpoint_of_another_config_names_its_first_eight_differences(
        tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run = _run_dir(tmp_path, cfg)
    saved = dict(fingerprint(cfg), **{f"zz.extra{k}": k for k in range(10)})
    pointer = {"method": 0, "step": 4, "world_size": 1, "fingerprint": saved, "sha256": [""]}
    with pytest.raises(ConfigError) as e:
        check_resume(cfg, run, _Store(pointer), _One(), 1)  # type: ignore[arg-type]
    msg = str(e.value)
    head = "--resume: the checkpoint of GD was written for another config: "
    assert msg.startswith(head)
    assert msg[len(head):].split("; ") == [f"zz.extra{k}: {k} -> '<unset>'" for k in range(8)]


def test_another_world_size_or_fewer_steps_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run = _run_dir(tmp_path, cfg)
    pointer = {"method": 0, "step": 4, "world_size": 3, "fingerprint": fingerprint(cfg),
               "sha256": [""] * 3}
    with pytest.raises(ConfigError, match=r"GD was checkpointed with 3 MPI rank\(s\); this run "
                                          r"has 1\. Launch with mpiexec -n 3"):
        check_resume(cfg, run, _Store(pointer), _One(), 1)  # type: ignore[arg-type]
    pointer = dict(pointer, world_size=1, step=12, sha256=[""])
    with pytest.raises(ConfigError, match="GD is checkpointed at step 12 but run.steps = 8"):
        check_resume(cfg, run, _Store(pointer), _One(), 1)  # type: ignore[arg-type]
    assert check_resume(cfg, run, _Store(None), _One(), 1) == [None]  # type: ignore[arg-type]
