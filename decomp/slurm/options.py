"""Validation of sbatch option values (counts, time limits, names, ``--array`` specs) and the
TOML literals of ``--set``/``--sweep`` values, for :mod:`decomp.slurm`."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from decomp.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TIME_FORMS = (  # the forms sbatch --time accepts
    re.compile(r"^(?P<m>\d+)$"),
    re.compile(r"^(?P<m>\d+):(?P<s>\d+)$"),
    re.compile(r"^(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"),
)
_NAME = re.compile(r"^[A-Za-z0-9_.+@-]+$")
_PARTITION = re.compile(r"^[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*$")
_ARRAY_ITEM = re.compile(r"^(?P<lo>\d+)(-(?P<hi>\d+)(:(?P<step>\d+))?)?$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# ---- validation -------------------------------------------------------------------------------

def check_count(option: str, value: int | None) -> int | None:
    """A positive integer option (``--nodes``, ``--ntasks-per-node``, ``--cpus-per-task``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return value


def check_time(value: str | None) -> str | None:
    """A SLURM time limit: ``HH:MM:SS`` (also ``MM``, ``MM:SS``, ``D-HH[:MM[:SS]]``), > 0."""
    if value is None:
        return None
    text = str(value).strip()
    for form in _TIME_FORMS:
        m = form.match(text)
        if m is None:
            continue
        parts = {k: int(v) for k, v in m.groupdict().items() if v is not None}
        if parts.get("s", 0) > 59 or ("h" in parts and parts.get("m", 0) > 59):
            break  # minutes/seconds out of range
        if "d" in parts and parts["h"] > 23:
            break
        if not any(parts.values()):
            raise ConfigError(f"--time {value!r}: the time limit must be positive")
        return text
    raise ConfigError(f"--time {value!r} is not a SLURM time limit: use HH:MM:SS (e.g. "
                      "00:30:00), D-HH:MM:SS (e.g. 1-12:00:00) or minutes (e.g. 90)")


def check_name(option: str, value: str | None, pattern: re.Pattern[str] = _NAME) -> str | None:
    """A partition, account or job name: one word, no spaces or shell characters."""
    if value is None:
        return None
    if not value or not pattern.match(value):
        raise ConfigError(f"{option} {value!r}: use letters, digits and _ . + - only "
                          "(no spaces)")
    return value


def parse_array(spec: str) -> list[int]:
    """The task ids of an sbatch ``--array`` spec (``0-5``, ``0,2,4``, ``0-9:2``, ``0-9%2``)."""
    text = str(spec).strip()
    body, _, limit = text.partition("%")
    if limit and not (limit.isdigit() and int(limit) > 0):
        raise ConfigError(f"--array {spec!r}: the limit after % must be a positive integer")
    ids: list[int] = []
    for item in body.split(","):
        m = _ARRAY_ITEM.match(item.strip())
        if m is None:
            raise ConfigError(f"--array {spec!r} is not an array spec: use e.g. 0-5, 0,2,4, "
                              "0-9:2 or 0-9%2")
        lo = int(m["lo"])
        hi = int(m["hi"]) if m["hi"] is not None else lo
        step = int(m["step"]) if m["step"] is not None else 1
        if hi < lo or step < 1:
            raise ConfigError(f"--array {spec!r}: range {item!r} is empty")
        ids.extend(range(lo, hi + 1, step))
    return sorted(set(ids))


def check_array(spec: str | None, n_settings: int) -> str | None:
    """``--array`` whose every task id has a row in the sweep table of ``n_settings`` rows."""
    if spec is None:
        return None
    ids = parse_array(spec)
    bad = [i for i in ids if i >= n_settings]
    if bad:
        raise ConfigError(f"--array {spec!r}: task id(s) {', '.join(map(str, bad[:5]))} have no "
                          f"sweep setting (the sweep has {n_settings}: 0-{n_settings - 1})")
    return str(spec).strip()


# ---- TOML literals for --set ------------------------------------------------------------------

def toml_literal(value: Any) -> str:
    """``value`` as a TOML literal that ``decomp.config.parse_value`` reads back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = [f"{k if _BARE_KEY.match(k) else json.dumps(k)} = {toml_literal(v)}"
                 for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def parse_sweep_arg(text: str) -> tuple[str, list[Any]]:
    """``--sweep KEY=[v1, v2, ...]`` -> (KEY, [v1, v2, ...])."""
    key, eq, values = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"--sweep expects KEY=[v1, v2, ...], got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {values.strip()}")["v"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--sweep {key}: {values.strip()!r} is not a TOML array "
                          f"([v1, v2, ...]): {e}") from None
    if not isinstance(parsed, list) or not parsed:
        raise ConfigError(f"--sweep {key}: expected a non-empty array [v1, v2, ...], "
                          f"got {values.strip()!r}")
    return key, parsed
