"""pytest plugin: which functions of the mutated packages each test calls (mutant -> tests).

Loaded by ``run_mutation.py`` (``-p tests.mutation.trace_plugin``) once per copy, on the
unmutated code; writes ``$MUTATION_TRACE_OUT`` (``{nodeid: ["kernels/quant.py:30", ...]}``,
a function named by its file and its code object's first line, i.e. its first decorator).
Under MPI every rank writes its own file (``.rank<r>`` appended). The kernels are traced with
``NUMBA_DISABLE_JIT=1`` (compiled code calls no Python functions a profiler could see).

This only speeds mutation testing up: a mutant first runs the tests that call the function it
is in, and a mutant that survives those is run against the package's whole test list.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import pytest

PREFIXES = ("kernels/", "decomp/compress/", "decomp/algorithms/", "decomp/comm/", "topologies/",
            "decomp/runner/", "decomp/torch/")
_ROOT = os.path.realpath(os.environ.get("MUTATION_TRACE_ROOT", os.getcwd())) + os.sep
_seen: dict[str, set] = {}
_current: set | None = None
_names: dict[object, str | None] = {}


def _name(code) -> str | None:
    try:
        return _names[code]
    except KeyError:
        path = os.path.realpath(code.co_filename)
        name = None
        if path.startswith(_ROOT):
            rel = path[len(_ROOT):]
            if rel.startswith(PREFIXES):
                name = f"{rel}:{code.co_firstlineno}"
        _names[code] = name
        return name


def _profile(frame, event, arg):
    if event == "call" and _current is not None:
        name = _name(frame.f_code)
        if name is not None:
            _current.add(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _current
    _current = _seen.setdefault(item.nodeid, set())
    threading.setprofile(_profile)
    sys.setprofile(_profile)
    try:
        yield
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        _current = None


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("MUTATION_TRACE_OUT")
    if not out:
        return
    if "OMPI_COMM_WORLD_RANK" in os.environ or "PMI_RANK" in os.environ:
        rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK"))
        out = f"{out}.rank{rank}"
    with open(out, "w") as f:
        json.dump({k: sorted(v) for k, v in _seen.items()}, f)
