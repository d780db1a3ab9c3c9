"""Mutation testing of the core with cosmic-ray (`make mutation`; docs/testing.md).

Why cosmic-ray: it mutates the source files themselves (an AST operator applied to the file,
the test command run, the file restored), so numba's @njit kernels are compiled from the
mutated source like any other module; mutmut 3 swaps functions for trampolines, which numba
cannot compile. Its sessions are sqlite files that `exec` resumes, so a time budget can stop a
run and the next one continues where it stopped.

Isolation: mutants are applied to a copy of one commit (``git archive``, ``--commit``, default
HEAD) under ``.mutation/work-<commit>``, never to the working tree other people edit and test.
The copy is imported through PYTHONPATH (before the editable install), with ``decomp/kernels``
and ``decomp/topologies`` symlinked to the copy's top-level folders (setup.cfg's package_dir).

Speed (see mutant_tests.py, the per-mutant command): once per copy the unmutated tests run
with trace_plugin.py, which records which tests call which function, and fill a pristine numba
cache; a mutant then runs only the tests that call the function it is in (-x), and only if it
survives those, the package's whole test list (unit tests, and the 2-rank MPI tests for
``algorithms``, ``comm``, ``topologies``). Mutants are a fixed random sample per package
(``--sample``, seed 17), so runs compare; ``--budget`` is the wall time of one invocation; run
it again to continue. ``--copy NAME`` runs other packages in a second copy at the same time.
``--report`` prints the table and every surviving mutant (its diff); ``--after COMMIT`` reruns
the survivors against the kill tests (:data:`KILLS`, named after what they protect) of COMMIT.

    python tests/mutation/run_mutation.py [--packages kernels,compress] [--sample 40]
        [--budget 1200] [--commit HEAD] [--tests <commit>] [--copy b] [--report]
        [--after <commit>]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from packages import KILLS, PACKAGES  # run as a script: tests/mutation is on sys.path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ROOT = REPO / ".mutation"
PY = sys.executable
BIN = Path(PY).parent
UNIT = [PY, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
MPI2 = [str(BIN / "mpiexec"), "-n", "2", *UNIT[:3], "--with-mpi", *UNIT[3:]]

CR_TIMEOUT = 1800.0  # cosmic-ray's own limit; mutant_tests.py stops a stage much earlier


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def rev(name: str) -> str:
    return sh(["git", "rev-parse", "--short=7", name], cwd=REPO).stdout.strip()


def extract(commit: str, dest: Path, *paths: str) -> None:
    archive = subprocess.run(["git", "archive", commit, *paths], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def work_dir(commit: str, tests_rev: str, copy: str = "") -> Path:
    """The copy of the committed tree (source from ``commit``, tests from ``tests_rev``) that
    mutants are applied to."""
    work = ROOT / (f"work-{commit}" if tests_rev == commit else f"work-{commit}-tests-{tests_rev}")
    if copy:  # a second copy runs other packages at the same time; it reuses the first's traces
        first, work = work, work.with_name(f"{work.name}-{copy}")
        if not (work / ".ready").exists() and (first / "mutation-setup.json").exists():
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(first, work, symlinks=True, ignore=shutil.ignore_patterns(
                "cr-*", ".numba-*", "__pycache__"))
            for f in (work / ".pristine").rglob("*.py"):  # the first copy may hold a mutant
                shutil.copy2(f, work / f.relative_to(work / ".pristine"))
            data = json.loads((work / "mutation-setup.json").read_text())
            data["baseline"] = {}
            (work / "mutation-setup.json").write_text(json.dumps(data))
    if not (work / ".ready").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        extract(commit, work)
        if tests_rev != commit:  # the same source with another commit's tests
            shutil.rmtree(work / "tests")
            extract(tests_rev, work, "tests")
        (work / "decomp" / "kernels").symlink_to("../kernels")
        (work / "decomp" / "topologies").symlink_to("../topologies")
        for files, _, _ in PACKAGES.values():
            for f in files:
                if (work / f).exists():
                    (work / ".pristine" / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(work / f, work / ".pristine" / f)
        (work / ".ready").touch()
    return work


def env_for(work: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(work), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", DECOMP_PROGRESS="0",
                NUMBA_CACHE_DIR=str(work / ".numba-pristine"))


def pools(work: Path, pkg: str) -> tuple[list[str], list[str], list[str]]:
    """The package's files and test files that exist in the copy (another commit's tests may
    not have them all); a test named ``file::test`` exists if its file does."""
    files, unit, mpi = PACKAGES[pkg]
    def there(t: str) -> bool:
        return (work / t.split("::")[0]).exists()

    return ([f for f in files if there(f)], [t for t in unit if there(t)],
            [t for t in mpi if there(t)])


def trace(work: Path, cmd: list[str], files: list[str], out: Path, **extra: str) -> dict:
    """Run ``files`` with trace_plugin; {"file:first line": [test ids that call it]}."""
    env = dict(env_for(work), MUTATION_TRACE_OUT=str(out), MUTATION_TRACE_ROOT=str(work),
               PYTHONPATH=f"{work}{os.pathsep}{HERE}", **extra)
    t0 = time.monotonic()
    r = subprocess.run([*cmd, "-p", "trace_plugin", *files], cwd=work, env=env, check=False,
                       capture_output=True, text=True)
    print(f"  traced {len(files)} files in {time.monotonic() - t0:.0f}s (exit {r.returncode})",
          flush=True)
    inverted: dict[str, set[str]] = {}
    for part in [out, *out.parent.glob(out.name + ".rank*")]:
        if part.exists():
            for test, funcs in json.loads(part.read_text()).items():
                for fn in funcs:
                    inverted.setdefault(fn, set()).add(test)
    if r.returncode != 0 and "NUMBA_DISABLE_JIT" not in extra:
        sys.exit(f"the unmutated tests fail in the copy:\n{r.stdout[-3000:]}")
    return inverted


def setup(work: Path, pkgs: list[str]) -> dict:
    """Once per copy (again if a package not traced yet is asked for): the pristine numba
    cache, which tests of the selected packages call which function (traced on the unmutated
    copy) and each package's baseline time."""
    path = work / "mutation-setup.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    traced = old.get("traced", list(PACKAGES) if old else [])  # older setups traced them all
    if old and set(pkgs) <= set(traced):
        return old
    pkgs = sorted(set(pkgs) | set(traced))
    print(f"setting up {work.name}: tracing the unmutated tests of {pkgs}", flush=True)
    unit = sorted({t for p in pkgs for t in pools(work, p)[1]})
    mpi = sorted({t for p in pkgs for t in pools(work, p)[2]})
    tu = trace(work, UNIT[:3] + ["-q", "-p", "no:cacheprovider"], unit, work / "trace-unit.json")
    if "kernels" in pkgs:  # compiled kernels call no Python a profiler sees: trace as Python
        tk = trace(work, UNIT[:3] + ["-q", "-p", "no:cacheprovider", "--timeout=120"],
                   pools(work, "kernels")[1], work / "trace-kernels.json", NUMBA_DISABLE_JIT="1")
        for k, v in tk.items():
            tu.setdefault(k, set()).update(v)
    tm = trace(work, MPI2[:6] + ["--with-mpi", "-q", "-p", "no:cacheprovider"], mpi,
               work / "trace-mpi.json") if mpi else {}
    data = {"unit": UNIT, "mpi": MPI2,
            "packages": {p: dict(zip(("files", "unit", "mpi"), pools(work, p), strict=True))
                         for p in PACKAGES},
            "trace_unit": {k: sorted(v) for k, v in tu.items()},
            "trace_mpi": {k: sorted(v) for k, v in tm.items()},
            "timeout": 900, "baseline": old.get("baseline", {}), "traced": pkgs}
    path.write_text(json.dumps(data))
    return data


def baseline(pkg: str, work: Path, data: dict) -> bool:
    """The package's whole test list on the unmutated copy: it must pass (else every mutant
    would count as killed); its time sets the per-stage timeout. Once per copy."""
    if pkg not in data["baseline"]:
        t0 = time.monotonic()
        r = subprocess.run([PY, str(HERE / "mutant_tests.py"), str(work), pkg, "--baseline"],
                           cwd=work, env=env_for(work), check=False, capture_output=True,
                           text=True)
        data["baseline"][pkg] = [r.returncode, round(time.monotonic() - t0)]
        (work / "mutation-setup.json").write_text(json.dumps(data))
        print(f"  baseline {pkg}: exit {r.returncode}, {data['baseline'][pkg][1]}s", flush=True)
        if r.returncode:
            print(r.stdout[-3000:], file=sys.stderr)
    return data["baseline"][pkg][0] == 0


@functools.cache
def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every annotation in a module. Every module here has
    ``from __future__ import annotations``: annotations are strings, never evaluated, so a
    mutant inside one (``Key | None`` -> ``Key // None``) is equivalent by construction."""
    import ast

    spans = []
    for node in ast.walk(ast.parse(path.read_text())):
        anns = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            anns = [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs,
                                           a.vararg, a.kwarg) if x is not None]
            anns.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            anns = [node.annotation]
        spans += [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset))
                  for n in anns if n is not None]
    return spans


def in_annotation(item, work: Path) -> bool:
    m = item.mutations[0]
    spans = annotation_spans(work / m.module_path)
    return any(lo <= tuple(m.start_pos) and tuple(m.end_pos) <= hi for lo, hi in spans)


def session(pkg: str, work: Path, sample: int) -> Path:
    """The package's session: every mutant cosmic-ray generates, then a fixed sample kept."""
    files = pools(work, pkg)[0]
    cfg = work / f"cr-{pkg}.toml"
    db = work / f"cr-{pkg}.sqlite"
    if db.exists():
        return db
    mods = ", ".join(json.dumps(f) for f in files)
    test_command = json.dumps(f"{PY} {HERE / 'mutant_tests.py'} {work} {pkg}")
    cfg.write_text(f"[cosmic-ray]\nmodule-path = [{mods}]\ntimeout = {CR_TIMEOUT}\n"
                   f"excluded-modules = []\ntest-command = {test_command}\n"
                   '[cosmic-ray.distributor]\nname = "local"\n')
    sh([str(BIN / "cosmic-ray"), "init", str(cfg), str(db)], cwd=work, env=env_for(work))
    from cosmic_ray.work_db import WorkDB, use_db

    with use_db(str(db), WorkDB.Mode.open) as wdb:
        items = sorted(wdb.work_items, key=lambda w: (w.mutations[0].module_path,
                                                      w.mutations[0].operator_name,
                                                      w.mutations[0].occurrence))
        total = len(items)
        items = [w for w in items if not in_annotation(w, work)]  # equivalent by construction
        (work / f"cr-{pkg}.annotations").write_text(str(total - len(items)))
        keep = random.Random(17).sample(items, min(sample, len(items)))
        wdb.clear()
        wdb.add_work_items(keep)
    (work / f"cr-{pkg}.total").write_text(str(total))
    return db


def run(pkg: str, work: Path, db: Path, deadline: float, data: dict) -> None:
    left = deadline - time.monotonic()
    if left < 60 or not baseline(pkg, work, data):
        return
    left = deadline - time.monotonic()
    cfg = work / f"cr-{pkg}.toml"
    cmd = ["timeout", "-s", "INT", "-k", "30", str(max(int(left), 1)),
           str(BIN / "cosmic-ray"), "exec", str(cfg), str(db)]
    subprocess.run(cmd, cwd=work, env=env_for(work), check=False)


def after(pkg: str, work: Path, commit: str) -> None:
    """Rerun the package's survivors against its new kill tests only
    (:data:`KILLS`, from ``commit``, copied into the copy): a mutant
    those fail on is killed; one they pass on survived the whole list already. Results in
    ``cr-<pkg>.after.json`` ({job id: outcome}), reported as the score after."""
    from cosmic_ray.mutating import mutate_and_test

    # their names before issue 21 (tests/*/test_mutation_kills_<pkg>.py), for older commits
    kills = KILLS[pkg] + [f"tests/{d}/test_mutation_kills_{pkg}.py" for d in ("unit", "mpi")]
    kills = [k for k in kills if subprocess.run(["git", "cat-file", "-e", f"{commit}:{k}"],
                                                cwd=REPO, capture_output=True).returncode == 0]
    if not kills:
        return
    extract(commit, work, *kills)
    out = work / f"cr-{pkg}.after.json"
    done = json.loads(out.read_text()) if out.exists() else {}
    r = report(pkg, work)
    from cosmic_ray.work_db import WorkDB, use_db

    with use_db(str(work / f"cr-{pkg}.sqlite"), WorkDB.Mode.open) as wdb:
        items = {w.job_id: w for w in wdb.work_items}
    cmd = f"{PY} {HERE / 'mutant_tests.py'} {work} {pkg} --only {' '.join(kills)}"
    old = os.getcwd()
    os.chdir(work)
    try:
        for s in r["survivors"]:
            if done.get(s["job"]) == "killed":  # a survivor is retried (newer kill tests)
                continue
            res = mutate_and_test(items[s["job"]].mutations, cmd, 900)
            done[s["job"]] = res.test_outcome.value if res.test_outcome else "error"
            out.write_text(json.dumps(done, indent=1))
            print(f"  after: {s['file']}:{s['line']} {s['operator']} -> {done[s['job']]}",
                  flush=True)
    finally:
        os.chdir(old)


def compiles(work: Path, m) -> bool:
    """Whether the mutated module parses: cosmic-ray sometimes writes code that does not
    (a keyword-only ``*`` turned into ``-``); such a mutant is incompetent, not killed."""
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    src = (work / ".pristine" / m.module_path).read_text()
    operator = get_operator(m.operator_name)(**(getattr(m, "operator_args", None) or {}))
    try:
        code = mutate_code(src, operator, m.occurrence)
        compile(code if code is not None else src, str(m.module_path), "exec")
    except SyntaxError:
        return False
    return True


def report(pkg: str, work: Path) -> dict[str, object]:
    db = work / f"cr-{pkg}.sqlite"
    if not db.exists():
        return {"package": pkg, "total": 0, "sampled": 0}
    from cosmic_ray.work_db import WorkDB, use_db

    out: dict[str, object] = {"package": pkg, "survivors": []}
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        items = {w.job_id: w for w in wdb.work_items}
        results = dict(wdb.results)
    unparsable = {j for j, r in results.items() if r.test_outcome == "killed"
                  and not compiles(work, items[j].mutations[0])}
    killed = sum(1 for j, r in results.items() if r.is_killed and r.test_outcome == "killed"
                 and j not in unparsable)
    survived = [j for j, r in results.items() if r.test_outcome == "survived"]
    incompetent = sum(1 for r in results.values() if r.test_outcome == "incompetent") + \
        len(unparsable)
    log = work / f"cr-{pkg}.log.jsonl"
    secs = sorted(json.loads(x)["seconds"] for x in log.read_text().splitlines()) \
        if log.exists() else []
    aft = work / f"cr-{pkg}.after.json"
    after_kills = {j for j, o in json.loads(aft.read_text()).items() if o == "killed"} \
        if aft.exists() else set()
    out.update(total=int((work / f"cr-{pkg}.total").read_text()), sampled=len(items),
               killed_after=killed + len(after_kills & set(survived)),
               done=len(results), killed=killed, survived=len(survived),
               incompetent=incompetent,
               median=f"{secs[len(secs) // 2]:.0f} s" if secs else "-")
    for j in survived:
        m = items[j].mutations[0]
        out["survivors"].append({"file": m.module_path, "line": m.start_pos[0],
                                 "operator": m.operator_name, "occurrence": m.occurrence,
                                 "job": j, "diff": results[j].diff,
                                 "after": "killed" if j in after_kills else "survived"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", default=",".join(PACKAGES))
    ap.add_argument("--sample", type=int, default=40, help="mutants per package")
    ap.add_argument("--budget", type=float, default=1200, help="wall seconds for this run")
    ap.add_argument("--commit", default="HEAD", help="commit whose source is mutated")
    ap.add_argument("--tests", default=None, help="commit whose tests/ judge the mutants")
    ap.add_argument("--report", action="store_true", help="only print the table")
    ap.add_argument("--copy", default="", help="a second copy (name) to run other packages in "
                    "parallel; it reuses the first copy's traces")
    ap.add_argument("--after", metavar="COMMIT", default=None,
                    help="rerun the survivors against the kill tests of COMMIT")
    a = ap.parse_args()
    pkgs = [p for p in a.packages.split(",") if p]
    commit = rev(a.commit)
    tests = rev(a.tests) if a.tests else commit
    work = work_dir(commit, tests, a.copy)
    deadline = time.monotonic() + a.budget
    if a.after:
        for pkg in pkgs:
            after(pkg, work, rev(a.after))
    elif not a.report:
        data = setup(work, pkgs)
        for pkg in pkgs:
            run(pkg, work, session(pkg, work, a.sample), deadline, data)
    print(f"source {commit}, tests {tests} ({work}); sample of {a.sample} per package, seed 17")
    print("| package | mutants | sampled | run | killed | survived | incompetent | score "
          "| killed after | score after | median s/mutant |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    survivors = []
    for pkg in pkgs:
        r = report(pkg, work)
        if not r.get("sampled"):
            print(f"| {pkg} | - | - | 0 | - | - | - | - | - | - | - |")
            continue
        judged = int(r["killed"]) + int(r["survived"])
        score = f"{100 * int(r['killed']) / judged:.0f} %" if judged else "-"
        score2 = f"{100 * int(r['killed_after']) / judged:.0f} %" if judged else "-"
        print(f"| {pkg} | {r['total']} | {r['sampled']} | {r['done']} | {r['killed']} | "
              f"{r['survived']} | {r['incompetent']} | {score} | {r['killed_after']} | "
              f"{score2} | {r['median']} |")
        survivors += r["survivors"]
    for s in survivors:
        print(f"\n--- survived: {s['file']}:{s['line']} {s['operator']} #{s['occurrence']} "
              f"(job {s['job']}; with the kill tests: {s['after']})")
        print(s["diff"])


if __name__ == "__main__":
    main()
