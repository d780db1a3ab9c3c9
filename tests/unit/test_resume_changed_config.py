"""``--resume`` of a run folder whose config.toml differs from the config given now
(decomp/runner/resume.py, ``check_resume``) is refused with the differing keys of the flat,
resolved config (``section.key``, methods by index), sorted, as ``key: then -> now`` — a
value that went down as well as one that went up — at most eight of them, followed by
" ..." exactly when there are more than eight. On one process, from the run folder alone (a
checkpoint's own fingerprint: test_resume_refusals.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decomp.config import dump_toml, load_config
from decomp.errors import ConfigError
from decomp.runner.plan import plan_methods, resolved_config
from decomp.runner.resume import check_resume

HEAD = ("--resume: the config differs from the one run in {run} (only run.steps and "
        "how-to-run keys may change): ")


def _cfg(tmp_path: Path, *, seed: int = 3, lam: float = 0.0, n: int = 40, f: int = 6,
         log_every: int = 4, dtype: str = "float64", name: str = "GD",
         mult: float = 1.0, steps: int = 8, shard: str = "contiguous") -> Any:
    raw = {"name": "resume", "seed": seed, "out_dir": str(tmp_path),
           "problem": {"kind": "least_squares", "dataset": "synthetic", "n_samples": n,
                       "n_features": f, "lam": lam, "dtype": dtype, "shard": shard},
           "run": {"steps": steps, "log_every": log_every, "progress": False},
           "methods": [{"algorithm": "gd", "name": name, "lr_multiplier": mult}]}
    cfg = load_config(raw)
    return resolved_config(cfg, plan_methods(cfg))


class _One:
    def Get_rank(self) -> int:  # noqa: N802 - the mpi4py names
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1


def _refusal(tmp_path: Path, now: Any) -> str:
    run = tmp_path / "resume"
    run.mkdir()
    (run / "config.toml").write_text(dump_toml(_cfg(tmp_path)))
    with pytest.raises(ConfigError) as e:
        check_resume(now, run, None, _One(), 1)  # type: ignore[arg-type]
    msg = str(e.value)
    assert msg.startswith(HEAD.format(run=run)), msg
    return msg[len(HEAD.format(run=run)):]


def test_a_changed_config_names_each_key_then_and_now(tmp_path: Path) -> None:
    # seed went down, lam up; run.steps may change and is not named
    got = _refusal(tmp_path, _cfg(tmp_path, seed=2, lam=0.5, steps=20))
    assert got == "problem.lam: 0.0 -> 0.5; seed: 3 -> 2"


EIGHT = ["methods.0.lr_multiplier: 1.0 -> 0.5", "methods.0.name: 'GD' -> 'G'",
         "problem.dtype: 'float64' -> 'float32'", "problem.lam: 0.0 -> 0.5",
         "problem.n_features: 6 -> 5", "problem.n_samples: 40 -> 30", "run.log_every: 4 -> 2",
         "seed: 3 -> 2"]


def test_up_to_eight_differences_are_all_named_without_an_ellipsis(tmp_path: Path) -> None:
    now = _cfg(tmp_path, seed=2, lam=0.5, n=30, f=5, log_every=2, dtype="float32", name="G",
               mult=0.5)
    assert _refusal(tmp_path, now) == "; ".join(EIGHT)


def test_more_than_eight_differences_name_the_first_eight_then_an_ellipsis(
        tmp_path: Path) -> None:
    now = _cfg(tmp_path, seed=2, lam=0.5, n=30, f=5, log_every=2, dtype="float32", name="G",
               mult=0.5, shard="iid")  # a ninth, sorted between n_samples and log_every
    got = _refusal(tmp_path, now)
    assert got == "; ".join(EIGHT[:6] + ["problem.shard: 'contiguous' -> 'iid'",
                                         "run.log_every: 4 -> 2"]) + " ..."
