"""``decomp run`` from the command line ends without the interpreter's teardown
(decomp.cli.exit_now): the exit code is kept, stdout and stderr are flushed (no newline
needed), the atexit handlers run, and MPI is finalized (a world that was initialized exits
cleanly). That ``main([...])`` called from Python returns instead (a ``run`` included) is
what tests/unit/test_startup_imports.py relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import atexit, sys
from pathlib import Path
from mpi4py import MPI
from decomp.cli import exit_now
assert MPI.Is_initialized()
atexit.register(lambda: Path({mark!r}).write_text("ran"))
sys.stdout.write("unflushed out")
sys.stderr.write("unflushed err")
exit_now(7)
"""


def test_exit_now_keeps_the_code_the_output_and_the_atexit_handlers(tmp_path: Path) -> None:
    mark = tmp_path / "atexit"
    out = subprocess.run([sys.executable, "-c", PROBE.format(mark=str(mark))],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 7, out.stderr
    assert out.stdout == "unflushed out"
    assert out.stderr.startswith("unflushed err"), out.stderr
    assert mark.read_text() == "ran"

