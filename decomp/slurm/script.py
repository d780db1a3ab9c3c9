"""Rendering a SLURM batch script from a template in ``jobs/slurm/``, and submitting it.

Rendering changes three kinds of lines and nothing else:

* ``#SBATCH --key=value`` lines (a commented ``##SBATCH --key=...`` line is switched on; an
  option the template lacks is added after its last ``#SBATCH`` line);
* the settings block, lines ``NAME=value  # comment`` (``CONFIG``, ``OUT``, ``RUN_ARGS``,
  ``VENV``, ``MODULES``, ``LAUNCHER``, ``SRUN_MPI``, ``SWEEP_NAME``);
* in a sweep template, the ``case`` table between ``# >>> sweep table`` and ``# <<< sweep table``:
  one case per array task, each a list of ``--set`` overrides for ``decomp run``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decomp.errors import ConfigError, LaunchError
from decomp.slurm.options import _PARTITION, check_array, check_count, check_name, check_time

TABLE_BEGIN = "# >>> sweep table"
TABLE_END = "# <<< sweep table"
LAUNCHERS = ("srun", "mpiexec")
_PLUGIN = re.compile(r"^[a-z0-9_]+$")


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
