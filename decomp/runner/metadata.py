"""What a run folder records about how it was made: the engine (MPI or the reference), world
size and hosts, the MPI library, package versions, the git commit and the command line; and the
numeric step size of every method.

``summary.json`` is ``{"run": <metadata>, "methods": [<MethodResult>, ...]}``; ``config.toml``
keeps the config as given (it can be run again) and ends with the same facts as TOML comments
(:func:`config_footer`). Gathering never fails a run: a value that cannot be found is None.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import socket
import subprocess
import sys
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from decomp.config import Config
from decomp.runner.results import MethodResult

#: packages whose versions a run records (torch by its metadata only: never imported here)
PACKAGES = ("decomp", "numpy", "scipy", "numba", "mpi4py", "torch")
_REPO = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit(repo: Path = _REPO) -> str | None:
    """HEAD of the repository decomp is imported from ("+dirty" with uncommitted changes to
    tracked files); None outside a git checkout (an installed wheel)."""
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def command_line(argv: list[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("/decomp", "decomp/__main__.py")):
        argv[0] = "decomp"
    return " ".join(shlex.quote(a) for a in argv)


def _base(engine: str, world_size: int, n_workers: int, hosts: list[str],
          mpi_library: str | None) -> dict[str, Any]:
    return {"engine": engine, "world_size": world_size, "n_workers": n_workers,
            "hosts": sorted(set(hosts)), "mpi_library": mpi_library,
            "versions": package_versions(), "git_commit": git_commit(),
            "command": command_line(), "cwd": os.getcwd(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "threads": os.environ.get("OMP_NUM_THREADS")}


def mpi_metadata(comm: Any, n_workers: int) -> dict[str, Any]:
    """Collective (every rank calls it): hosts of all ranks, the MPI library of this one, and
    the node layout (:func:`decomp.comm.nodes.found`: which ranks share memory, as the tree
    aggregation and ``aggregation = "auto"`` see it; ``decomp sim --node-layout RUN_DIR``
    reads it back)."""
    from mpi4py import MPI

    from decomp.comm.nodes import describe, found

    hosts = comm.allgather(MPI.Get_processor_name())
    nodes, source = found(comm)
    # Open MPI ends the string with a NUL, which no TOML comment or JSON reader wants
    lib = " ".join(MPI.Get_library_version().replace("\0", "").strip().splitlines()[0].split())
    return {**_base("mpi", comm.Get_size(), n_workers, hosts, lib),
            "nodes": len(nodes), "node_layout": describe(nodes), "node_layout_from": source}


def sim_metadata(n_workers: int) -> dict[str, Any]:
    """``decomp sim``: one process on this host, no MPI (with the node layout it was given,
    ``--node-layout``, if any: its tree sums follow it)."""
    from decomp.comm.nodes import describe, from_env

    meta = _base("sim", 1, n_workers, [socket.gethostname()], None)
    nodes = from_env(n_workers)
    if nodes is not None:
        meta.update(nodes=len(nodes), node_layout=describe(nodes), node_layout_from="given")
    return meta


def step_sizes(cfg: Config, results: list[MethodResult]) -> list[dict[str, Any]]:
    """Per method run so far: the configured lr, the multiplier and the numeric step γ."""
    out = []
    for m, r in zip(cfg.methods, results, strict=False):
        out.append({"method": r.method, "lr": m.lr, "lr_multiplier": m.lr_multiplier,
                     "step_size": r.lr})
    return out


def summary_document(meta: dict[str, Any] | None, cfg: Config | None,
                     results: list[MethodResult]) -> dict[str, Any]:
    """The ``summary.json`` object: run metadata (with the numeric step sizes) and methods."""
    run = dict(meta or {})
    if cfg is not None:
        run["name"] = cfg.name
        run["step_sizes"] = step_sizes(cfg, results)
    return {"run": run, "methods": [asdict(r) for r in results]}


def config_footer(meta: dict[str, Any] | None, cfg: Config, results: list[MethodResult]) -> str:
    """TOML comment lines appended to ``config.toml``: the resolved step sizes and the run's
    metadata (comments, so the file still loads and runs as the same config)."""
    lines = ["", "# ---- resolved by decomp (comments; the config above is what ran) ----"]
    for i, s in enumerate(step_sizes(cfg, results)):
        lines.append(f"# methods.{i} ({s['method']}): lr = {s['lr']!r} x {s['lr_multiplier']:g}"
                     f" -> step size {s['step_size']:.10g}")
    meta = meta or {}
    for key in ("engine", "world_size", "n_workers", "hosts", "node_layout", "mpi_library",
                "git_commit", "command", "started"):
        if meta.get(key) is not None:
            value = (", ".join(str(v) for v in meta[key]) if isinstance(meta[key], list)
                     else meta[key])
            lines.append(f"# {key}: {value}")
    versions = meta.get("versions") or {}
    if versions:
        lines.append("# versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()
                                                if v is not None))
    return "\n".join(line.replace("\n", " ") for line in lines) + "\n"


__all__ = ["PACKAGES", "command_line", "config_footer", "git_commit", "mpi_metadata",
           "package_versions", "sim_metadata", "step_sizes", "summary_document"]
