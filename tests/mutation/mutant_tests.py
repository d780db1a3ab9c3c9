"""The test command cosmic-ray runs for one mutant (``run_mutation.py`` writes it in the config).

    python tests/mutation/mutant_tests.py <work copy> <package>

Run in the copy with the mutant applied; exit 0 = the mutant survived, 1 = killed.

1. Which file and line were mutated: the package's files are compared with their pristine
   copies (``<work>/.pristine``). The mutated file's stale ``.pyc`` is deleted (and no bytecode
   is written: a same-size mutant written within the second of a cached ``.pyc`` would
   otherwise be read from the old bytecode).
2. The numba cache: a fresh hard-linked copy of the pristine cache (compiled from the unmutated
   copy at setup; numba replaces cache files atomically, so the pristine copy is never
   written), minus the cache files of the mutated kernel module and of every kernel module
   that imports it. Numba keys a cache on its own file's content hash only, so a caller whose
   compiled code includes (or inlines) a mutated callee in another module would otherwise run
   the unmutated callee, or store the mutated one under its unchanged key.
3. The tests that call the mutated function (``trace_plugin.py``, recorded on the unmutated
   copy), stopping at the first failure: unit tests, then the 2-rank MPI tests. A mutant
   outside any function (module or class level) runs the package's whole list.
4. A mutant that survives those runs the package's whole list (unit, then MPI), so the
   selection only saves time on killed mutants and never decides a survivor.

Each mutant appends one line to ``<work>/cr-<package>.log.jsonl`` (stage, seconds).
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def changed(work: Path, files: list[str]) -> tuple[str, int] | None:
    """(file, first changed line) of the mutant, comparing with the pristine copies."""
    for f in files:
        new = (work / f).read_bytes()
        old = (work / ".pristine" / f).read_bytes()
        if new != old:
            a, b = old.decode().splitlines(), new.decode().splitlines()
            for tag, i1, _i2, _j1, _j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
                if tag != "equal":
                    return f, i1 + 1
            return f, 1
    return None


def enclosing_function(src: str, line: int) -> int | None:
    """First line (first decorator) of the outermost function or method containing ``line``,
    None at module or class level."""
    def walk(body):
        for node in body:
            lo = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            hi = node.end_lineno or node.lineno
            if not lo <= line <= hi:
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return lo
            if isinstance(node, ast.ClassDef):
                return walk(node.body)
            for field in ("body", "orelse", "finalbody", "handlers"):  # if/try at module level
                found = walk(getattr(node, field, []) or [])
                if found is not None:
                    return found
            return None
        return None

    return walk(ast.parse(src).body)


def kernel_dependents(work: Path, module: str) -> set[str]:
    """``module`` and every kernel module that imports it, transitively."""
    imports = {}
    for p in (work / "kernels").glob("*.py"):
        imports[p.stem] = set(re.findall(r"from decomp\.kernels\.(\w+) import", p.read_text()))
    out, todo = {module}, [module]
    while todo:
        m = todo.pop()
        for k, deps in imports.items():
            if m in deps and k not in out:
                out.add(k)
                todo.append(k)
    return out


def function_sources(path: Path) -> dict[int, tuple[str, str]]:
    """{first line (first decorator): (name, source)} of the outermost functions and methods."""
    src = path.read_text()
    out = {}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lo = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out[lo] = (node.name, ast.get_source_segment(src, node) or "")
    return out


def kernel_tests(work: Path, setup: dict, fn_file: str, fn_line: int) -> set[str]:
    """Tests that call kernel function (fn_file, fn_line), found by name (compiled kernels are
    invisible to the tracer): tests whose own source names it or a kernel that calls it, and
    tests that call a traced function of the other packages whose source names one of those."""
    names = {function_sources(work / fn_file)[fn_line][0]}
    kernels = {p: function_sources(p) for p in (work / "kernels").glob("*.py")}
    grew = True
    while grew:  # kernels calling it (or inlining it), transitively
        grew = False
        for funcs in kernels.values():
            for name, body in funcs.values():
                if name not in names and any(re.search(rf"\b{n}\(", body) for n in names):
                    names.add(name)
                    grew = True
    pat = re.compile(r"\b(" + "|".join(sorted(names)) + r")\b")
    tests: set[str] = set()
    cache: dict[str, dict[int, tuple[str, str]]] = {}
    for key, ids in setup["trace_unit"].items():
        f, line = key.rsplit(":", 1)
        if f.startswith("kernels/"):
            continue
        if f not in cache:
            cache[f] = function_sources(work / f)
        if pat.search(cache[f].get(int(line), ("", ""))[1]):
            tests.update(ids)
    all_ids = set(json.loads((work / "trace-unit.json").read_text()))  # every unit test
    by_file: dict[str, dict[str, str]] = {}
    for t in sorted(all_ids):
        f, name = t.split("::")[0], t.split("::")[-1].split("[")[0]
        if f not in by_file:
            by_file[f] = {n: b for n, b in function_sources(work / f).values()}
        if pat.search(by_file[f].get(name, "")):
            tests.add(t)
    return tests


def numba_cache(work: Path, mutated: str | None) -> Path:
    run = work / ".numba-run"
    shutil.rmtree(run, ignore_errors=True)
    subprocess.run(["cp", "-al", str(work / ".numba-pristine"), str(run)], check=True)
    if mutated and mutated.startswith("kernels/"):
        drop = kernel_dependents(work, Path(mutated).stem)
        for p in run.rglob("*"):
            if p.is_file() and p.name.split(".", 1)[0] in drop:
                p.unlink()
    return run


def run(cmd: list[str], env: dict[str, str], timeout: float) -> int:
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return -9
    if proc.returncode not in (0, 5):
        sys.stdout.write(out[-3000:])
    return 0 if proc.returncode in (0, 5) else proc.returncode  # 5: no test collected



def listed(test_id: str, entries: list[str]) -> bool:
    """Whether a traced test id is in a package's list: its file is, or an entry names the
    test itself (``file::test``, any parametrization of it)."""
    return test_id.split("::")[0] in entries or \
        any(test_id == e or test_id.startswith(e + "[") for e in entries if "::" in e)

def main() -> int:
    work, pkg = Path(sys.argv[1]), sys.argv[2]
    is_baseline = sys.argv[3:] == ["--baseline"]  # the unmutated copy: whole list, no log
    only = sys.argv[4:] if sys.argv[3:4] == ["--only"] else None  # just these test files
    setup = json.loads((work / "mutation-setup.json").read_text())
    cfg = setup["packages"][pkg]
    t0 = time.monotonic()
    where = None if is_baseline else changed(work, cfg["files"])
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    # the baseline (unmutated) compiles straight into the pristine cache; a mutant gets a copy
    env["NUMBA_CACHE_DIR"] = str(work / ".numba-pristine") if is_baseline else \
        str(numba_cache(work, where[0] if where else None))
    if where:
        f = work / where[0]
        for pyc in (f.parent / "__pycache__").glob(f"{f.stem}.*.pyc"):
            pyc.unlink()
    if where:  # cosmic-ray sometimes writes code that does not parse (``*,`` -> ``-,``)
        try:
            compile((work / where[0]).read_text(), where[0], "exec")
        except SyntaxError:
            return 1  # incompetent: the report leaves it out (it recompiles every mutant)
    unit, mpi = setup["unit"], setup["mpi"]
    base = setup["baseline"].get(pkg)  # [exit, seconds] of the whole list, unmutated
    timeout = max(120, 3 * base[1]) if base else setup["timeout"]
    stages: list[tuple[str, list[str], list[str]]] = []
    fn = enclosing_function((work / ".pristine" / where[0]).read_text(), where[1]) \
        if where else None
    if only is not None:
        stages = [("only", [t for t in only if t.startswith("tests/unit/")],
                   [t for t in only if t.startswith("tests/mpi/")])]
    elif fn is not None:
        key = f"{where[0]}:{fn}"
        traced = setup["trace_unit"].get(key)
        if not traced and where[0].startswith("kernels/"):
            traced = sorted(kernel_tests(work, setup, where[0], fn))
        sel_u = [t for t in traced or [] if listed(t, cfg["unit"])]
        sel_m = [t for t in setup["trace_mpi"].get(key, []) if listed(t, cfg["mpi"])]
        stages.append(("selected", sel_u, sel_m))
    if only is None:
        stages.append(("all", cfg["unit"], cfg["mpi"]))
    log = {"file": where[0] if where else None, "line": where[1] if where else None,
           "function_line": fn}
    code = 0
    for stage, u, m in stages:
        log[f"{stage}_tests"] = len(u) + len(m)
        if u:
            code = run([*unit, *u], env, timeout)
        if code == 0 and m:
            code = run([*mpi, *m], env, timeout)
        if code != 0:
            log["killed_by"] = stage
            break
    log.update(exit=code, seconds=round(time.monotonic() - t0, 1))
    if not is_baseline and only is None:
        with open(work / f"cr-{pkg}.log.jsonl", "a") as fh:
            fh.write(json.dumps(log) + "\n")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
