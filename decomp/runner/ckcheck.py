"""Checks of a checkpoint's parts before they are trusted, each naming the file and the field:
the pointer (``checkpoints/m<i>.json``: step, world size, one sha256 per rank), the arrays of a
rank's ``.npz`` (no member may declare a shape larger than the bytes it holds: a damaged or
forged header would otherwise allocate without bound) and the ``meta`` document (the keys and
types a resume reads)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from decomp.errors import ConfigError

_HEX = set("0123456789abcdef")


def pointer_problem(doc: dict[str, Any], method: int) -> str:
    """'' if the pointer document ``doc`` of method ``method`` is well formed, else what is
    wrong with which field."""
    step, size, shas = int(doc["step"]), int(doc["world_size"]), list(doc["sha256"])
    if step < 0:
        return f"field 'step' is {step} (must be >= 0)"
    if size < 1:
        return f"field 'world_size' is {size} (must be >= 1)"
    if len(shas) != size:
        return (f"field 'sha256' lists {len(shas)} digest(s) for a world of {size} rank(s) "
                "(one per rank)")
    for r, h in enumerate(shas):
        if not (isinstance(h, str) and len(h) == 64 and set(h) <= _HEX):
            return f"field 'sha256' entry {r} is not a sha256 digest: {h!r:.80}"
    if "method" in doc and doc["method"] != method:
        return f"field 'method' is {doc['method']!r}, the file is method {method}'s"
    if not isinstance(doc.get("fingerprint", {}), dict):
        return "field 'fingerprint' is not a table"
    return ""


def check_members(path: Path) -> None:
    """Refuse (ConfigError) an ``.npz`` member whose header declares more bytes than the
    member holds, or that is not a plain numeric array."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    header = f.tell()
                name = info.filename.removesuffix(".npy")
                if dtype.hasobject:
                    raise ConfigError(f"checkpoint file {path}: field {name!r} holds Python "
                                      "objects (a checkpoint holds numeric arrays only)")
                declared = math.prod(shape) * dtype.itemsize
                held = info.file_size - header
                if declared > held:
                    raise ConfigError(
                        f"checkpoint file {path}: field {name!r} declares shape "
                        f"{tuple(shape)} of {dtype} ({declared} bytes) but holds {held} bytes; "
                        "the file is damaged: remove the checkpoints to restart from step 0")
    except ConfigError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ConfigError(f"checkpoint file {path} cannot be read: {e}") from None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: the meta fields the store writes itself, and those a resumed session reads
STORE_KEYS = ("step", "state_scalars")
SESSION_KEYS = ("wall_s", "bytes", "first", "last", "split")


def meta_problem(meta: Any, step: int, keys: tuple[str, ...] = STORE_KEYS) -> str:
    """'' if a rank's ``meta`` document has ``keys`` with the types a resume reads, else the
    field and why."""
    if not isinstance(meta, dict):
        return "field 'meta' is not a JSON object"
    checks = {
        "step": (lambda v: isinstance(v, int) and v == step, f"the step the pointer names "
                 f"({step})"),
        "wall_s": (_is_num, "a number"),
        "bytes": (lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_num, v)),
                  "a list of 3 byte counts"),
        "state_scalars": (lambda v: isinstance(v, dict), "a table"),
        "first": (lambda v: isinstance(v, dict), "a table (a metrics row)"),
        "last": (lambda v: isinstance(v, dict), "a table (a metrics row)"),
        "split": (lambda v: v is None or (isinstance(v, list) and all(map(_is_num, v))),
                  "a list of numbers"),
    }
    for key in keys:
        ok, want = checks[key]
        if key not in meta:
            if key == "split":
                continue
            return f"meta field {key!r} is missing"
        if not ok(meta[key]):
            return f"meta field {key!r} is {meta[key]!r:.80}, expected {want}"
    return ""
