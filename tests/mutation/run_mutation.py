"""Mutation testing of the core with cosmic-ray (`make mutation`; docs/testing.md).

Why cosmic-ray: it mutates the source files themselves (an AST operator applied to the file,
the test command run, the file restored), so numba's @njit kernels are compiled from the
mutated source like any other module; mutmut 3 swaps functions for trampolines, which numba
cannot compile. Its sessions are sqlite files that `exec` resumes, so a time budget can stop a
run and the next one continues where it stopped.

Isolation: mutants are applied to a copy of the committed tree (``git archive HEAD``) under
``.mutation/work``, never to the working tree other people edit and test. The copy is imported
through PYTHONPATH (before the editable install), with ``decomp/kernels`` and
``decomp/topologies`` symlinked to the copy's top-level folders (setup.cfg's package_dir).

Each package has a fast, relevant test command (unit tests and, where the package is used
over MPI, the 2-rank MPI tests), stopping at the first failure. Mutants are a fixed random
sample per package (``--sample``, seed 17), so runs are comparable; ``--budget`` is the wall
time of one invocation; run it again to continue. ``--report`` prints the table and every
surviving mutant (its diff), without running anything.

    python tests/mutation/run_mutation.py [--packages kernels,compress] [--sample 40]
                                          [--budget 1200] [--tests HEAD|<commit>] [--report]
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

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / ".mutation"
PY = sys.executable
MPI2 = f"{Path(PY).parent / 'mpiexec'} -n 2 {PY} -m pytest --with-mpi -x -q -p no:cacheprovider"
UNIT = f"{PY} -m pytest -x -q -p no:cacheprovider"

#: package -> (files to mutate, test command run in the copy)
PACKAGES: dict[str, tuple[list[str], str]] = {
    "kernels": (["kernels/bits.py", "kernels/fused.py", "kernels/quant.py", "kernels/randk.py",
                 "kernels/reduce.py", "kernels/rng.py", "kernels/topk.py"],
                f"{UNIT} tests/unit/test_kernels.py tests/unit/test_compress_oracles.py "
                "tests/unit/test_compress_topk.py tests/unit/test_compress.py "
                "tests/unit/test_hot_path.py"),
    "compress": ([f"decomp/compress/{f}" for f in (
        "_common.py", "_ref.py", "_rng.py", "_wire.py", "aggregate.py", "base.py",
        "identity.py", "natural.py", "qsgd.py", "randk.py", "scaled.py", "sign.py",
        "topk.py")],
                 f"{UNIT} tests/unit/test_compress_oracles.py tests/unit/test_compress.py "
                 "tests/unit/test_compress_stats.py tests/unit/test_compress_topk.py "
                 "tests/unit/test_compress_registry.py"),
    "algorithms": ([f"decomp/algorithms/{f}" for f in (
        "allreduce.py", "base.py", "choco.py", "dcd.py", "decentralized_base.py", "dense.py",
        "dpsgd.py", "ecd.py", "ef.py", "ef21.py", "ef21_sgdm.py", "replica.py", "sgdm.py")],
                   f"{UNIT} tests/unit/test_algorithms_pure.py tests/unit/test_registry.py "
                   f"tests/unit/test_directed_mixing.py && {MPI2} "
                   "tests/mpi/test_masterworker_vs_sim.py tests/mpi/test_decentralized_vs_sim.py"),
    "comm": ([f"decomp/comm/{f}" for f in ("counters.py", "masterworker.py",
                                           "neighborhood.py", "timing.py")],
             f"{MPI2} tests/mpi/test_transport.py tests/mpi/test_decentralized_transport.py "
             "tests/mpi/test_decentralized_vs_sim.py"),
    "topologies": ([f"topologies/{f}" for f in (
        "adjacency.py", "comm.py", "factory.py", "graphs.py", "mixing.py", "sampled.py",
        "schedule.py", "validation.py", "weights.py")],
                   f"{UNIT} tests/unit/test_topologies.py tests/unit/test_topologies_validation.py "
                   f"tests/unit/test_directed_mixing.py && {MPI2} tests/mpi/test_topology_comm.py"),
}
TIMEOUT = 600.0  # one mutant's test command (an endless loop is a kill by timeout)


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def work_dir(tests_rev: str) -> Path:
    """The copy of the committed tree (tests from ``tests_rev``) that mutants are applied to."""
    work = ROOT / f"work-{tests_rev}"
    if not (work / ".ready").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        if tests_rev != "HEAD":  # the same source with another commit's tests
            shutil.rmtree(work / "tests")
            archive = subprocess.run(["git", "archive", tests_rev, "tests"], cwd=REPO,
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        (work / "decomp" / "kernels").symlink_to("../kernels")
        (work / "decomp" / "topologies").symlink_to("../topologies")
        (work / ".ready").touch()
    return work


def env_for(work: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(work), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", DECOMP_PROGRESS="0")


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
    files, command = PACKAGES[pkg]
    cfg = work / f"cr-{pkg}.toml"
    db = work / f"cr-{pkg}.sqlite"
    if db.exists():
        return db
    # test files another commit's tests/ does not have are left out (pytest would fail on them)
    command = " ".join(w for w in command.split()
                       if not (w.startswith("tests/") and not (work / w).exists()))
    mods = ", ".join(json.dumps(f) for f in files)
    test_command = json.dumps(f"bash -c {json.dumps(command)}")
    cfg.write_text(f"[cosmic-ray]\nmodule-path = [{mods}]\ntimeout = {TIMEOUT}\n"
                   f"excluded-modules = []\ntest-command = {test_command}\n"
                   '[cosmic-ray.distributor]\nname = "local"\n')
    sh([str(Path(PY).parent / "cosmic-ray"), "init", str(cfg), str(db)], cwd=work,
       env=env_for(work))
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


def baseline_ok(pkg: str, work: Path) -> bool:
    """The package's test command passes on the unmutated copy (else every mutant would
    count as killed); checked once per copy."""
    mark = work / f"cr-{pkg}.baseline"
    if not mark.exists():
        cfg = (work / f"cr-{pkg}.toml").read_text()
        command = json.loads(cfg.split("test-command = ", 1)[1].split("\n", 1)[0])
        t0 = time.monotonic()
        r = subprocess.run(command[len("bash -c "):].strip('"').replace('\\"', '"'),
                           shell=True, cwd=work, env=env_for(work), check=False,
                           capture_output=True, text=True)
        mark.write_text(f"{r.returncode} {time.monotonic() - t0:.0f}s\n{r.stdout[-2000:]}")
    ok = mark.read_text().startswith("0 ")
    if not ok:
        print(f"{pkg}: the unmutated tests fail in the copy; see {mark}", file=sys.stderr)
    return ok


def run(pkg: str, work: Path, db: Path, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left < 60 or not baseline_ok(pkg, work):
        return
    cfg = work / f"cr-{pkg}.toml"
    cmd = ["timeout", "-s", "INT", "-k", "30", str(int(left)),
           str(Path(PY).parent / "cosmic-ray"), "exec", str(cfg), str(db)]
    subprocess.run(cmd, cwd=work, env=env_for(work), check=False)


def report(pkg: str, work: Path) -> dict[str, object]:
    db = work / f"cr-{pkg}.sqlite"
    if not db.exists():
        return {"package": pkg, "total": 0, "sampled": 0}
    from cosmic_ray.work_db import WorkDB, use_db

    out: dict[str, object] = {"package": pkg, "survivors": []}
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        items = {w.job_id: w for w in wdb.work_items}
        results = dict(wdb.results)
    killed = sum(1 for r in results.values() if r.is_killed and r.test_outcome == "killed")
    survived = [j for j, r in results.items() if r.test_outcome == "survived"]
    incompetent = sum(1 for r in results.values() if r.test_outcome == "incompetent")
    out.update(total=int((work / f"cr-{pkg}.total").read_text()), sampled=len(items),
               done=len(results), killed=killed, survived=len(survived),
               incompetent=incompetent)
    for j in survived:
        m = items[j].mutations[0]
        out["survivors"].append({"file": m.module_path, "line": m.start_pos[0],
                                 "operator": m.operator_name, "occurrence": m.occurrence,
                                 "diff": results[j].diff})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", default=",".join(PACKAGES))
    ap.add_argument("--sample", type=int, default=40, help="mutants per package")
    ap.add_argument("--budget", type=float, default=1200, help="wall seconds for this run")
    ap.add_argument("--tests", default="HEAD", help="commit whose tests/ judge the mutants")
    ap.add_argument("--report", action="store_true", help="only print the table")
    a = ap.parse_args()
    pkgs = [p for p in a.packages.split(",") if p]
    work = work_dir(a.tests)
    deadline = time.monotonic() + a.budget
    if not a.report:
        for pkg in pkgs:
            run(pkg, work, session(pkg, work, a.sample), deadline)
    print(f"tests from {a.tests}; sample of {a.sample} mutants per package (seed 17)")
    print("| package | mutants | sampled | run | killed | survived | incompetent | score |")
    print("|---|---|---|---|---|---|---|---|")
    survivors = []
    for pkg in pkgs:
        r = report(pkg, work)
        if not r.get("sampled"):
            print(f"| {pkg} | - | - | 0 | - | - | - | - |")
            continue
        judged = int(r["killed"]) + int(r["survived"])
        score = f"{100 * int(r['killed']) / judged:.0f} %" if judged else "-"
        print(f"| {pkg} | {r['total']} | {r['sampled']} | {r['done']} | {r['killed']} | "
              f"{r['survived']} | {r['incompetent']} | {score} |")
        survivors += r["survivors"]
    for s in survivors:
        print(f"\n--- survived: {s['file']}:{s['line']} {s['operator']} #{s['occurrence']}")
        print(s["diff"])


if __name__ == "__main__":
    main()
