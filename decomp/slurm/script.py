"""SLURM batch scripts from the templates in ``jobs/slurm/``: validation, rendering, submission.

A template is a working sbatch script (a user may copy and edit it by hand). Rendering changes
three kinds of lines and nothing else:

* ``#SBATCH --key=value`` lines (a commented ``##SBATCH --key=...`` line is switched on; an
  option the template lacks is added after its last ``#SBATCH`` line);
* the settings block, lines ``NAME=value  # comment`` (``CONFIG``, ``OUT``, ``RUN_ARGS``,
  ``VENV``, ``MODULES``, ``LAUNCHER``, ``SRUN_MPI``, ``SWEEP_NAME``);
* in a sweep template, the ``case`` table between ``# >>> sweep table`` and ``# <<< sweep table``:
  one case per array task, each a list of ``--set`` overrides for ``decomp run``.

Every value is checked before anything is written (positive counts, a SLURM time limit, array
indices inside the sweep table, names without spaces) and every config setting is loaded with
:func:`decomp.config.load_config`, so a typo fails here and not after the job waited in the queue.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decomp.errors import ConfigError, LaunchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_SUFFIX = ".sbatch"
TABLE_BEGIN = "# >>> sweep table"
TABLE_END = "# <<< sweep table"
LAUNCHERS = ("srun", "mpiexec")
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
_PLUGIN = re.compile(r"^[a-z0-9_]+$")
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


# ---- what to run: a config, or a sweep file over one -----------------------------------------

@dataclass
class Source:
    """The config to run and, for a sweep, the grid of ``--set`` overrides."""

    config: Path
    raw: dict[str, Any]
    sweep_name: str | None = None
    base_sets: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def is_sweep(self) -> bool:
        return bool(self.grid)

    def settings(self) -> list[list[str]]:
        """One list of ``KEY=VALUE`` overrides per array task (last grid key varies fastest)."""
        if not self.grid:
            return []
        keys = list(self.grid)
        return [[f"{k}={toml_literal(v)}" for k, v in zip(keys, combo, strict=True)]
                for combo in itertools.product(*(self.grid[k] for k in keys))]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


SWEEP_KEYS = ("config", "name", "set", "grid")


def load_source(path: str | Path, sweeps: Sequence[str] = ()) -> Source:
    """A config file, or a sweep file (top-level ``config`` and ``[grid]``), plus ``--sweep``s.

    A sweep file::

        config = "ef21_a9a.toml"          # relative to this file
        name = "ef21-a9a-sweep"           # results in runs/<name>/<array task>/
        set = ["run.steps=1000"]          # optional: overrides for every task
        [grid]                            # one array task per combination
        "methods.0.lr_multiplier" = [4, 16, 64]
        "methods.0.compressor" = [{kind = "topk", k = 1}, {kind = "topk", k = 8}]
    """
    raw = _read_toml(Path(path).expanduser())
    p = Path(path).expanduser().resolve()
    if "grid" in raw or ("config" in raw and isinstance(raw.get("config"), str)):
        unknown = sorted(set(raw) - set(SWEEP_KEYS))
        if unknown:
            raise ConfigError(f"{p}: unknown sweep key(s) {', '.join(unknown)} "
                              f"(valid: {', '.join(SWEEP_KEYS)})")
        if not isinstance(raw.get("config"), str):
            raise ConfigError(f"{p}: a sweep file needs config = \"path/to/config.toml\"")
        grid = raw.get("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError(f"{p}: [grid] must be a table of KEY = [values]")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{p}: grid key {key!r} needs a non-empty array of values")
        base_sets = raw.get("set", [])
        if not isinstance(base_sets, list) or not all(isinstance(s, str) for s in base_sets):
            raise ConfigError(f"{p}: set must be an array of \"key=value\" strings")
        config = (p.parent / raw["config"]).resolve()
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{p}: name must be a string")
        src = Source(config, _read_toml(config), sweep_name=name, base_sets=list(base_sets),
                     grid=dict(grid))
    else:
        src = Source(p, raw)
    for text in sweeps:
        key, values = parse_sweep_arg(text)
        src.grid[key] = values
    if src.grid and src.sweep_name is None:
        src.sweep_name = f"{src.raw.get('name', 'run')}-sweep"
    if src.sweep_name is not None:
        check_name("sweep name", src.sweep_name)
    return src


def choose_template(src: Source) -> str:
    """sweep for a grid; decentralized for gossip algorithms; torch for torch models; else
    ef21 (master–worker)."""
    if src.is_sweep:
        return "sweep"
    methods = src.raw.get("methods", [])
    algos = {str(m.get("algorithm", "")).lower() for m in methods if isinstance(m, dict)}
    from decomp.algorithms.registry import names

    if algos & set(names("decentralized")) or "topology" in src.raw:
        return "decentralized"
    problem = src.raw.get("problem", {})
    if isinstance(problem, dict) and ("model" in problem or "torch" in str(problem.get("kind"))
                                      or "mnist1d" in str(problem.get("dataset", "")).lower()):
        return "torch"
    return "ef21"


def template_dirs() -> list[Path]:
    """Where templates are looked up by name: ./jobs/slurm, then the repository's."""
    dirs = [Path.cwd() / "jobs" / "slurm", REPO / "jobs" / "slurm"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def find_template(name: str) -> Path:
    """A template by name (``ef21``, ``sweep``, ...) or path."""
    p = Path(name).expanduser()
    if p.suffix == TEMPLATE_SUFFIX or "/" in name:
        if p.is_file():
            return p.resolve()
        raise ConfigError(f"template file {name!r} not found")
    for d in template_dirs():
        cand = d / f"{name}{TEMPLATE_SUFFIX}"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in template_dirs() if d.is_dir()
                    for f in d.glob(f"*{TEMPLATE_SUFFIX}")})
    raise ConfigError(f"no SLURM template {name!r} in {', '.join(map(str, template_dirs()))} "
                      f"(known: {', '.join(known) or 'none'})")


# ---- rendering --------------------------------------------------------------------------------

@dataclass
class JobSpec:
    """Everything a rendered script needs. ``None`` keeps the template's value."""

    config: Path
    template: Path
    job_name: str
    output: str
    out_dir: str
    nodes: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    array: str | None = None
    sbatch_extra: list[str] = field(default_factory=list)
    run_args: list[str] = field(default_factory=list)
    venv: str = ""
    modules: list[str] = field(default_factory=list)
    launcher: str = "srun"
    srun_mpi: str = "pmi2"
    sweep_name: str | None = None
    settings: list[list[str]] = field(default_factory=list)
    command: str = ""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        check_count("--nodes", self.nodes)
        check_count("--ntasks-per-node", self.ntasks_per_node)
        check_count("--cpus-per-task", self.cpus_per_task)
        check_time(self.time)
        check_name("--partition", self.partition, _PARTITION)
        check_name("--account", self.account)
        check_name("--job-name", self.job_name)
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, "
                              f"got {self.launcher!r}")
        if not _PLUGIN.match(self.srun_mpi):
            raise ConfigError(f"--mpi {self.srun_mpi!r}: a plugin name such as pmi2 or pmix "
                              "(`srun --mpi=list` shows them)")
        for text in (self.output, self.out_dir, *self.modules, *self.sbatch_extra):
            if "\n" in text or "\r" in text:
                raise ConfigError(f"value {text!r} contains a line break")
        for opt in self.sbatch_extra:
            if not opt.startswith("--") or " " in opt:
                raise ConfigError(f"--sbatch {opt!r}: give one sbatch option as --key=value")
        if self.settings:
            check_array(self.array, len(self.settings))
        elif self.array is not None:
            raise ConfigError("--array runs one task per sweep setting: give --sweep "
                              "KEY=[v1, v2, ...] or a sweep file (see jobs/configs/"
                              "ef21_a9a_sweep.toml)")

    def sbatch_options(self) -> dict[str, str]:
        """The ``#SBATCH`` options this spec sets, in the order they are written."""
        opts: dict[str, Any] = {"job-name": self.job_name, "array": self.array,
                                "nodes": self.nodes, "ntasks-per-node": self.ntasks_per_node,
                                "cpus-per-task": self.cpus_per_task, "time": self.time,
                                "output": self.output, "partition": self.partition,
                                "account": self.account}
        return {k: str(v) for k, v in opts.items() if v is not None}

    def variables(self) -> dict[str, str]:
        """The settings-block lines, shell-quoted."""
        vars_ = {"CONFIG": shlex.quote(str(self.config)), "OUT": shlex.quote(self.out_dir),
                 "RUN_ARGS": _shell_array(self.run_args), "VENV": shlex.quote(self.venv),
                 "MODULES": _shell_array(self.modules), "LAUNCHER": self.launcher,
                 "SRUN_MPI": self.srun_mpi}
        if self.sweep_name is not None:
            vars_["SWEEP_NAME"] = shlex.quote(self.sweep_name)
        return vars_


def _shell_array(items: Sequence[str]) -> str:
    return "(" + " ".join(shlex.quote(s) for s in items) + ")"


_SBATCH_LINE = re.compile(r"^#{1,2}SBATCH\s+--(?P<key>[a-z-]+)(?:[=\s](?P<value>.*))?$")


def sbatch_options(script: str) -> dict[str, str]:
    """The active ``#SBATCH --key=value`` options of a script (commented ``##SBATCH`` skipped)."""
    opts: dict[str, str] = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH"):
            m = _SBATCH_LINE.match(line.strip())
            if m:
                opts[m["key"]] = (m["value"] or "").strip()
    return opts


def script_variable(script: str, name: str) -> str | None:
    """The raw value of ``NAME=...`` in a script's settings block (comment stripped)."""
    for line in script.splitlines():
        if line.startswith(f"{name}="):
            return line[len(name) + 1:].split("  # ", 1)[0]
    return None


def _set_sbatch(lines: list[str], key: str, value: str | None) -> None:
    """Set ``#SBATCH --key=value`` (``value`` None: a flag such as ``--exclusive``)."""
    new = f"#SBATCH --{key}" if value is None else f"#SBATCH --{key}={value}"
    last = -1
    for i, line in enumerate(lines):
        m = _SBATCH_LINE.match(line.strip())
        if m is None:
            continue
        last = i
        if m["key"] == key:
            lines[i] = new
            return
    if last < 0:
        raise ConfigError("the template has no #SBATCH lines: not a SLURM template")
    lines.insert(last + 1, new)


def _set_variable(lines: list[str], name: str, value: str, template: Path) -> None:
    for i, line in enumerate(lines):
        if line.startswith(f"{name}="):
            _, sep, comment = line.partition("  # ")
            lines[i] = f"{name}={value}" + (f"  # {comment}" if sep else "")
            return
    raise ConfigError(f"template {template} has no {name}=... line in its settings block")


def sweep_table(settings: list[list[str]]) -> list[str]:
    """The ``case`` block of a sweep script: one row of ``--set`` overrides per task."""
    rows = ['case "$TASK" in']
    for i, sets in enumerate(settings):
        args = " ".join(f"--set {shlex.quote(s)}" for s in sets)
        rows.append(f"    {i}) SETTING=({args}) ;;")
    rows.append(f'    *) echo "no sweep setting for array task $TASK (the table has '
                f'0-{len(settings) - 1})" >&2; exit 2 ;;')
    rows.append("esac")
    return rows


def render(template_text: str, spec: JobSpec) -> str:
    """The ready-to-submit script: ``template_text`` with ``spec``'s values."""
    spec.validate()
    lines = template_text.splitlines()
    if not lines or not lines[0].startswith("#!"):
        raise ConfigError(f"template {spec.template} does not start with #!/bin/bash")
    for key, value in spec.sbatch_options().items():
        _set_sbatch(lines, key, value)
    for opt in spec.sbatch_extra:
        key, eq, value = opt[2:].partition("=")
        _set_sbatch(lines, key, value if eq else None)
    for name, value in spec.variables().items():
        _set_variable(lines, name, value, spec.template)
    has_table = TABLE_BEGIN in lines and TABLE_END in lines
    if spec.settings:
        if not has_table:
            raise ConfigError(f"template {spec.template} has no sweep table "
                              f"({TABLE_BEGIN!r} ... {TABLE_END!r}): use --template sweep")
        a, b = lines.index(TABLE_BEGIN), lines.index(TABLE_END)
        lines[a + 1:b] = sweep_table(spec.settings)
    elif has_table:
        raise ConfigError(f"template {spec.template} is a sweep: give --sweep KEY=[...] or a "
                          "sweep file")
    header = [f"# Written by `{spec.command or 'decomp slurm'}`",
              f"# from {spec.template}. Submit with: sbatch <this file>"]
    return "\n".join([lines[0], *header, *lines[1:]]) + "\n"


# ---- submission -------------------------------------------------------------------------------

def submit(script: Path, cwd: Path | None = None) -> str:
    """``sbatch --parsable SCRIPT``; returns the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise LaunchError("sbatch not found on PATH: submit from a SLURM login node, or drop "
                          f"--submit and run `sbatch {script}` there")
    r = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True,
                       cwd=cwd, check=False, timeout=120)
    if r.returncode != 0:
        raise LaunchError(f"sbatch {script} failed (exit {r.returncode}): "
                          f"{(r.stderr or r.stdout).strip()}")
    job_id = r.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise LaunchError(f"sbatch {script}: unexpected answer {r.stdout.strip()!r}")
    return job_id


def log_path(output: str, job_id: str, job_name: str, array_task: int | None = None) -> str:
    """The job's log file: ``--output`` with %x, %j, %A and %a expanded."""
    task = "" if array_task is None else str(array_task)
    return (output.replace("%x", job_name).replace("%j", job_id).replace("%A", job_id)
            .replace("%a", task))
