"""Resume: every rank's restored checkpoint must agree before any rank takes a step.

Each rank loads its own file of a checkpoint (:meth:`CheckpointStore.load`, checked against
the pointer's sha256). A file that passes that check can still disagree with the others: an
edited file whose sha was re-recorded, a file copied from another checkpoint, a torn copy of a
run folder. Ranks that start from different steps, or one rank whose state holds a NaN, never
raise together — they wait in different collectives for ever (issue 26: 400 s with
``--comm-timeout 30``). :func:`check_restored` is one all-gather of a small summary of what
each rank restored — (method, step, status, non-finite fields; the state's structure is
recorded but may differ: the master's is not the workers') — and
raises the same :class:`~decomp.errors.ConfigError` on every rank on the first disagreement,
before the loop.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from decomp.errors import ConfigError


def restored_summary(state: Any, buffers: list[np.ndarray], method: int, step: int,
                     status: str) -> dict[str, Any]:
    """What this rank restored, in a few bytes: method, step, status, a hash of the state's
    field names, shapes and dtypes, and the fields holding a non-finite value."""
    shape = hashlib.sha256()
    bad = []
    fields = [(name, value) for name, value in zip(state._fields, state, strict=True)]
    fields += [(f"buffers.{k}", b) for k, b in enumerate(buffers)]
    for name, value in fields:
        if isinstance(value, np.ndarray):
            shape.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                bad.append(name)
        elif isinstance(value, float) and not np.isfinite(value):
            bad.append(name)
    return {"method": int(method), "step": int(step), "status": str(status),
            "shape": shape.hexdigest()[:16], "non_finite": bad}


def _ranks(rs: list[int]) -> str:
    return f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}"


def disagreement(summaries: list[dict[str, Any]], label: str, where: str) -> str:
    """The reason the restored checkpoints of ``label`` cannot be resumed ("" if they can):
    the first key (method, step, status) on which a rank differs from most ranks, else a
    rank holding non-finite values in a method whose status is ``ok``."""
    pointer = where.rsplit("-s", 1)[0] + ".json"  # checkpoints/m<i>-s<step> -> m<i>.json
    fix = (f"Restore the run folder's checkpoints from one copy, or remove {pointer} and "
           f"{where} to restart {label} from step 0")
    # not the state's layout ("shape"): ranks hold different state legitimately (a
    # master–worker master keeps the workers' g_i, EF21+ per-worker arrays, the workers not)
    for key, what in (("method", "method index"), ("step", "step"), ("status", "status")):
        groups: dict[Any, list[int]] = {}
        for r, s in enumerate(summaries):
            groups.setdefault(s[key], []).append(r)
        if len(groups) > 1:
            common = max(groups, key=lambda v: (len(groups[v]), -groups[v][0]))
            odd = "; ".join(f"{_ranks(rs)}: {v}" for v, rs in groups.items() if v != common)
            return (f"--resume: the checkpoint of {label} ({where}) disagrees across ranks "
                    f"on the {what}: {_ranks(groups[common])}: {common}; {odd} (a file "
                    f"edited or copied from another checkpoint; resuming would leave the ranks "
                    f"in different steps). {fix}")
    if summaries and summaries[0]["status"] == "ok":
        bad = [(r, s["non_finite"]) for r, s in enumerate(summaries) if s["non_finite"]]
        if bad:
            first, fields = bad[0]
            return (f"--resume: the checkpoint of {label} ({where}) holds non-finite values "
                    f"on {_ranks([r for r, _ in bad])} (rank {first}: {', '.join(fields)}) "
                    f"although its status is 'ok' (a run that diverged is saved as "
                    f"'diverged'): the file was altered or written by a faulty node. {fix}")
    return ""


def check_restored(comm: Any, summary: dict[str, Any], label: str, where: str) -> None:
    """Collective: raise the same ConfigError on every rank unless every rank's restored
    ``summary`` (:func:`restored_summary`) agrees."""
    summaries = comm.allgather(summary) if comm.Get_size() > 1 else [summary]
    reason = disagreement(summaries, label, where)
    if reason:
        raise ConfigError(reason)
