"""Resume: which methods of a run folder continue from which checkpoint, refused when anything
but the run length differs; and the save/restore of one method's session.

A resumed run must be the same run: the resolved config may differ from the one that wrote the
checkpoints only in :data:`OPERATIONAL` keys (``run.steps`` may grow: every method is extended
from its last checkpoint), and the world size must be the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decomp.config import Config, load_config, to_dict
from decomp.errors import ConfigError
from decomp.runner.checkpoint import CheckpointStore
from decomp.runner.ckcheck import SESSION_KEYS, meta_problem
from decomp.runner.datahash import DATA_KEY
from decomp.runner.outputs import check_rows
from decomp.runner.plan import plan_methods, resolved_config
from decomp.runner.session import Session
from decomp.runner.workload import Workload

#: config keys that may change between a run and its resume (how it runs, not what it computes)
OPERATIONAL = ("out_dir", "data_dir", "run.steps", "run.progress", "run.checkpoint_every",
               "run.comm_timeout_s", "run.fail_rank", "run.fail_step", "run.progress_every_s",
               "network.delay_ms")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, list) and all(isinstance(v, dict) for v in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: d}


def fingerprint(cfg: Config) -> dict[str, Any]:
    """The resolved config as flat ``key: value`` pairs, without the operational keys."""
    flat = _flatten(to_dict(cfg))
    return {k: v for k, v in sorted(flat.items()) if k not in OPERATIONAL}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key that differs (missing on one side: ``<unset>``)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<unset>"), new.get(k, "<unset>")
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


def check_resume(cfg: Config, run_dir: Path, store: CheckpointStore, comm: Any,
                 world_size: int) -> list[dict[str, Any] | None]:
    """The checkpoint pointer of every method (None: start it at step 0) of the resolved
    config ``cfg`` (:func:`~decomp.runner.plan.resolved_config`), after refusing a changed
    config, another world size or fewer steps than a checkpoint has. Rank 0 reads the
    folder; every rank gets the same answer."""
    answer: tuple[str, list[dict[str, Any] | None]] = ("", [])
    if comm.Get_rank() == 0:
        try:
            answer = ("", _pointers(cfg, run_dir, store, world_size))
        except ConfigError as e:
            answer = (str(e), [])
    if comm.Get_size() > 1:
        answer = comm.bcast(answer, root=0)  # control path, once per run
    if answer[0]:
        raise ConfigError(answer[0])
    return answer[1]


def _pointers(cfg: Config, run_dir: Path, store: CheckpointStore,
              world_size: int) -> list[dict[str, Any] | None]:
    old_cfg = load_config(run_dir / "config.toml")
    old_cfg = resolved_config(old_cfg, plan_methods(old_cfg))  # resolved the same way as cfg
    diff = config_differences(fingerprint(old_cfg), fingerprint(cfg))
    if diff:
        raise ConfigError(f"--resume: the config differs from the one run in {run_dir} "
                          f"(only run.steps and how-to-run keys may change): "
                          + "; ".join(diff[:8]) + (" ..." if len(diff) > 8 else ""))
    pointers = [store.read_pointer(i) for i in range(len(cfg.methods))]
    for i, p in enumerate(pointers):
        if p is None:
            continue
        label = cfg.methods[i].label
        if int(p["world_size"]) != world_size:
            raise ConfigError(f"--resume: {label} was checkpointed with {p['world_size']} MPI "
                              f"rank(s); this run has {world_size}. Launch with mpiexec -n "
                              f"{p['world_size']}")
        saved = {k: v for k, v in (p.get("fingerprint") or {}).items() if k != DATA_KEY}
        if saved != fingerprint(cfg):
            raise ConfigError(f"--resume: the checkpoint of {label} was written for another "
                              f"config: " + "; ".join(config_differences(
                                  saved, fingerprint(cfg))[:8]))
        if int(p["step"]) > cfg.run.steps:
            raise ConfigError(f"--resume: {label} is checkpointed at step {p['step']} but "
                              f"run.steps = {cfg.run.steps}; run.steps may grow, not shrink")
        check_rows(run_dir, label, int(p["step"]), cfg.run.log_every)
    return pointers


def check_data(cfg: Config, pointers: list[dict[str, Any] | None], digest: str) -> None:
    """Refuse a resume whose loaded data hash to another value than the checkpoints record
    (every rank holds the same pointers and digest: every rank raises alike)."""
    for m, p in zip(cfg.methods, pointers, strict=True):
        saved = (p or {}).get("fingerprint", {}).get(DATA_KEY)
        if saved is not None and saved != digest:
            raise ConfigError(
                f"--resume: {m.label} was checkpointed on other data (sha256 of the loaded "
                f"arrays {saved[:16]}... then, {digest[:16]}... now: the data file, "
                f"problem.dataset or data_dir changed); resume with the data it was trained "
                "on, or start a new run (--overwrite or another name)")


def session_meta(session: Session, first: dict[str, Any], last: dict[str, Any],
                 status: str, message: str) -> dict[str, Any]:
    """The non-array part of a method's checkpoint."""
    d = session.state_dict()
    return {"wall_s": d["wall_s"], "bytes": d["bytes"], "split": d["split"], "first": first,
            "last": last, "status": status, "message": message}


def restore_session(session: Session, store: CheckpointStore, pointer: dict[str, Any],
                    work: Workload) -> dict[str, Any]:
    """Put the checkpointed state into a freshly initialised ``session`` (in place) and
    return the checkpoint's meta (first/last metrics rows, status)."""
    arrays, buffers, meta = store.load(pointer)
    problem = meta_problem(meta, int(pointer["step"]), SESSION_KEYS)
    if problem:
        raise ConfigError(f"checkpoint file {store.rank_file(pointer)}: {problem}; the file is "
                          "damaged: remove the checkpoints to restart from step 0")
    session.load_state_dict({"state": {**arrays, **meta["state_scalars"]},
                             "steps_done": meta["step"], "wall_s": meta["wall_s"],
                             "bytes": meta["bytes"], "split": meta.get("split")})
    live = work.buffers()
    if len(live) != len(buffers):
        raise ConfigError(f"checkpoint has {len(buffers)} BatchNorm buffer sets, the model "
                          f"{len(live)}")
    for dst, src in zip(live, buffers, strict=True):
        dst[...] = src
    return meta
