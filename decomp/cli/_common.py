"""What every sub-command shares: exit codes, the job-ending error path, TOML quoting."""

from __future__ import annotations

from typing import Any

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3


def fail(comm: Any, message: str, code: int = EXIT_ERROR) -> int:
    """Print the error with this rank's id and end the whole MPI job (one rank: return
    ``code``)."""
    from decomp.comm.control import abort_job

    abort_job(comm, message, code)
    return code


def documented_parser(sub: Any, name: str, help: str, doc: str | None) -> Any:
    """A sub-command parser whose description is ``doc`` up to ``Examples::`` and whose
    epilog is the examples after it (the module docstring of the sub-command)."""
    import argparse

    head, _, examples = (doc or "").partition("Examples::")
    return sub.add_parser(name, help=help, description=head.strip(),
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=("examples:" + examples) if examples else None)


def world() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
