"""Checkpoint/resume is exact: for every registered algorithm (numpy problem) and for the torch
methods, a run interrupted by a stop signal and resumed, and a run of N/2 steps extended to N
with --resume, give the same metrics rows (timing columns aside) and the same final state on
every rank as a straight run of N steps. Also: the interrupted method is marked in
summary.json, a changed config or world size is refused."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decomp.algorithms import REGISTRY
from decomp.config import load_config
from decomp.errors import ConfigError
from decomp.runner import method as method_module
from decomp.runner import run
from decomp.runner.lifecycle import SIGNALS, Interrupted

TOP2 = {"kind": "topk", "k": 2}
QSGD = {"kind": "qsgd", "levels": 64}
#: [[methods]] entries tuned per registry name; a method without one gets :func:`_generic`
TUNED: dict[str, dict[str, Any]] = {
    "gd": {"lr": "1/L"}, "sgd": {"lr": 0.05, "batch_size": 8},
    "sgdm": {"lr": 0.02, "batch_size": 8, "momentum": 0.8},
    "dcgd": {"compressor": QSGD}, "ef": {"compressor": TOP2},
    "ef21": {"compressor": TOP2, "lr_multiplier": 4}, "ef21_sgd": {"compressor": TOP2,
                                                                 "batch_size": 8},
    "ef21_plus": {"compressor": TOP2}, "ef21_sgdm": {"compressor": TOP2, "batch_size": 8,
                                                     "lr": 0.02, "eta": 0.5},
    "ef21_pp": {"compressor": TOP2, "p": 0.5, "lr_multiplier": 4},
    "ef21_bc": {"compressor": TOP2, "downlink_compressor": {"kind": "topk", "k": 3}},
    "dpsgd": {"lr": 0.05}, "dcd_psgd": {"compressor": QSGD, "lr": 0.05},
    "ecd_psgd": {"compressor": {"kind": "qsgd", "levels": 4096}, "lr": 0.02},
    "choco_sgd": {"compressor": TOP2, "lr": 0.05, "consensus_step": 0.4},
    "beer": {"compressor": TOP2, "lr": 0.05, "consensus_step": 0.4},
    "allreduce_sgd": {"lr": 0.05, "batch_size": 8}, "allreduce_qsgd": {"lr": 0.05},
}
#: values for the options a class takes without a default (by option, not by method)
REQUIRED = {"consensus_step": 0.4}


def _generic(name: str) -> dict[str, Any]:
    """A [[methods]] entry from what the class declares: lr 0.05, τ = 8 if it needs one, Top-2
    (QSGD for an unbiased-only method) unless it has a default compressor, and its required
    options from :data:`REQUIRED`."""
    spec = REGISTRY[name]
    m: dict[str, Any] = {"lr": 0.05}
    if spec.needs_batch:
        m["batch_size"] = 8
    if spec.uses_compressor and spec.default_compressor is None:
        m["compressor"] = QSGD if spec.cls.requirement == "unbiased" else TOP2
    m.update({k: REQUIRED[k] for k, v in spec.options.items() if v is None and k in REQUIRED})
    return m


#: one [[methods]] entry per registry name, in its order
NUMPY_METHODS: dict[str, dict[str, Any]] = {n: TUNED.get(n) or _generic(n) for n in REGISTRY}
TORCH_METHODS = [
    {"algorithm": "ef21_sgdm", "compressor": {"kind": "topk", "ratio": 0.05}, "lr": 0.2,
     "batch_size": 8, "eta": 0.3},
    {"algorithm": "sgdm", "lr": 0.1, "batch_size": 8, "momentum": 0.9},
    # per-tensor state (errors e_i, warm-started Q's) on the model's layout
    {"algorithm": "powersgd", "lr": 0.2, "batch_size": 8, "rank": 2,
     "min_compression_rate": 1.0},
    {"algorithm": "ef", "compressor": {"kind": "topk", "ratio": 0.05}, "lr": 0.2,
     "batch_size": 8},
    {"algorithm": "choco_sgd", "compressor": {"kind": "topk", "ratio": 0.05}, "lr": 0.3,
     "consensus_step": 0.3, "batch_size": 8},
    {"algorithm": "dcd_psgd", "compressor": {"kind": "qsgd", "levels": 127}, "lr": 0.3,
     "batch_size": 8},
]


def test_every_registered_algorithm_has_a_numpy_case() -> None:
    assert set(NUMPY_METHODS) == set(REGISTRY) and set(TUNED) <= set(REGISTRY)


def _numpy_raw(out: str, steps: int) -> dict[str, Any]:
    return {"name": "resume", "seed": 3, "out_dir": out,
            "problem": {"kind": "least_squares", "dataset": "synthetic", "n_samples": 200,
                        "n_features": 12, "lam": 0.0},
            "run": {"steps": steps, "log_every": 4, "progress": False},
            "topology": {"kind": "ring"},
            "methods": [{"algorithm": a, "name": a, **m} for a, m in NUMPY_METHODS.items()]}


def _torch_raw(out: str, steps: int) -> dict[str, Any]:
    return {"name": "resume", "seed": 5, "out_dir": out,
            "problem": {"kind": "torch", "model": "mlp", "model_options": {"hidden": [16]},
                        "dataset": "synthetic",
                        "dataset_options": {"n_samples": 320, "n_features": 10,
                                            "n_classes": 3}, "shard": "iid"},
            "run": {"steps": steps, "log_every": 4, "progress": False},
            "topology": {"kind": "ring"},
            "methods": [{"name": m["algorithm"], **m} for m in TORCH_METHODS]}


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _final_states(run_dir: Path, rank: int, n_methods: int) -> list[dict[str, np.ndarray]]:
    out = []
    for i in range(n_methods):
        pointer = json.loads((run_dir / "checkpoints" / f"m{i}.json").read_text())
        path = run_dir / "checkpoints" / f"m{i}-s{pointer['step']}" / f"rank{rank}.npz"
        with np.load(path) as z:
            out.append({k: z[k] for k in z.files if k != "meta"})
    return out


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, comm: Any, label: str, step: int) -> None:
    """Rank 0 receives SIGTERM just before ``step`` of method ``label`` (the flag a real
    signal sets); the vote stops every rank one step later."""
    inject = method_module.MethodRun.inject

    def patched(self: Any, t: int) -> None:
        if comm.Get_rank() == 0 and self.plan.label == label and t == step:
            SIGNALS.signum = signal.SIGTERM
        inject(self, t)

    monkeypatch.setattr(method_module.MethodRun, "inject", patched)


def _shared_tmp(comm: Any, tmp_path: Path) -> Path:
    return Path(comm.bcast(str(tmp_path), root=0))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_interrupted_and_extended_runs_equal_a_straight_run(comm, tmp_path: Path,
                                                            monkeypatch, kind: str) -> None:
    tmp = _shared_tmp(comm, tmp_path)
    raw = _numpy_raw if kind == "numpy" else _torch_raw
    n_methods = len(raw("x", 1)["methods"])
    steps = 16
    straight = run(load_config(raw(str(tmp / "straight"), steps)), comm)
    victim = raw("x", 1)["methods"][n_methods // 2]["name"]
    _interrupt_at(monkeypatch, comm, victim, 7)
    with pytest.raises(Interrupted) as info:
        run(load_config(raw(str(tmp / "split"), steps)), comm, progress=False)
    assert info.value.step == 8 and info.value.signum == signal.SIGTERM  # the vote: one step
    monkeypatch.undo()
    if comm.Get_rank() == 0:
        summary = json.loads((tmp / "split" / "resume" / "summary.json").read_text())["methods"]
        assert [s["status"] for s in summary][-1] == "interrupted"
        assert summary[-1]["method"] == victim and summary[-1]["steps"] == 8
    resumed = run(load_config(raw(str(tmp / "split"), steps)), comm, mode="resume")
    # N/2 then extended to N
    run(load_config(raw(str(tmp / "half"), steps // 2)), comm)
    extended = run(load_config(raw(str(tmp / "half"), steps)), comm, mode="resume")
    for other in (resumed, extended):
        assert [(r.method, r.status, r.steps, r.loss, r.grad_norm_sq, r.bits_up, r.bits_down,
                 r.consensus_distance) for r in other] == \
               [(r.method, r.status, r.steps, r.loss, r.grad_norm_sq, r.bits_up, r.bits_down,
                 r.consensus_distance) for r in straight]
    rank = comm.Get_rank()
    if rank == 0:
        want = _rows(tmp / "straight" / "resume")
        assert _rows(tmp / "split" / "resume") == want
        assert _rows(tmp / "half" / "resume") == want
    want_states = _final_states(tmp / "straight" / "resume", rank, n_methods)
    for folder in ("split", "half"):
        got = _final_states(tmp / folder / "resume", rank, n_methods)
        for a, b in zip(want_states, got, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{folder}: {k}")


@pytest.mark.mpi(min_size=2)
def test_resume_refuses_another_config_or_world(comm, tmp_path: Path) -> None:
    tmp = _shared_tmp(comm, tmp_path)
    raw = _numpy_raw(str(tmp), 8)
    raw["methods"] = raw["methods"][:2]
    run(load_config(raw), comm)
    changed = _numpy_raw(str(tmp), 8)
    changed["methods"] = changed["methods"][:2]
    changed["methods"][0]["lr"] = "theory"
    with pytest.raises(ConfigError, match=r"config differs.*methods\.0\.lr: '1/L' -> 'theory'"):
        run(load_config(changed), comm, mode="resume")
    shrink = dict(raw, run={**raw["run"], "steps": 4})
    with pytest.raises(ConfigError, match="run.steps may grow, not shrink"):
        run(load_config(shrink), comm, mode="resume")
    sub = comm.Split(0 if comm.Get_rank() == 0 else 1, comm.Get_rank())
    if comm.Get_rank() == 0:  # the same folder from a world of one rank
        with pytest.raises(ConfigError, match=r"checkpointed with \d+ MPI rank\(s\); this run "
                                              r"has 1"):
            run(load_config(raw), sub, mode="resume")
    sub.Free()
    comm.Barrier()
