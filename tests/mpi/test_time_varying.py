"""Time-varying W_t over MPI (``[topology] schedule``), against the reference.

- D-PSGD on the one-peer exponential schedule (directed) and the one-peer hypercube
  (symmetric), DCD-PSGD and CHOCO-SGD on the hypercube with their per-edge replicas
  (decomp/algorithms/edge_replica.py), through the runner's own transport
  (``open_transport`` of a schedule: one neighbourhood per distinct W_t, selected per step):
  every iterate equals ``simulate_decentralized`` on the same schedule bit for bit, and the
  byte counts are the reference's (one payload per current neighbour per step);
- the two ends of every edge hold the same replica x̂_{i→k} bit for bit after every step,
  also on edges idle for τ − 1 steps;
- ``decomp run`` with ``[topology] schedule`` gives the metrics of ``decomp sim``; the
  runner refuses the directed schedule for DCD/ECD/CHOCO and ECD on any schedule, on every
  rank, naming the hypercube;
- the Trainer takes a schedule object and trains D-PSGD and CHOCO on it like the reference;
- a run checkpointed mid-period and resumed equals a straight run;
- the transport builds each distinct W_t once and reuses its buffers across periods.

Runs at 2 and 4 ranks (the hypercube needs a power of two) under `make test-mpi`, and at 8
from tests/e2e/test_time_varying_8ranks.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _iterates import run_iterates

from decomp.algorithms import DECENTRALIZED, Env, registry
from decomp.compress import make_compressor
from decomp.data import load_dataset
from decomp.problems import initial_point, split_problem
from decomp.runner.session import open_transport
from decomp.sim import reference, simulate_decentralized
from decomp.topologies import mixing_schedule

STEPS = 16
SEED = 11
LR = 0.2
BATCH = 16

#: case -> (algorithm, constructor options, schedule)
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "dpsgd-exponential": ("dpsgd", {}, "one-peer-exponential"),
    "dpsgd-hypercube": ("dpsgd", {}, "one-peer-hypercube"),
    "dcd-qsgd-hypercube": ("dcd_psgd", {"compressor": {"kind": "qsgd", "levels": 4}},
                           "one-peer-hypercube"),
    "dcd-randk-hypercube": ("dcd_psgd", {"compressor": {"kind": "randk", "k": 5}},
                            "one-peer-hypercube"),
    "choco-topk-hypercube": ("choco_sgd", {"compressor": {"kind": "topk", "k": 4},
                                           "consensus_step": 0.4}, "one-peer-hypercube"),
    "choco-identity-hypercube": ("choco_sgd", {"consensus_step": 1.0}, "one-peer-hypercube"),
}


def _power_of_two(n: int) -> bool:
    return n & (n - 1) == 0


@pytest.fixture(scope="module")
def problems():
    from mpi4py import MPI

    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    return (split_problem(ds, "logistic", MPI.COMM_WORLD.size),
            initial_point("normal", ds.n_features, seed=SEED))


def _build(case: str) -> Any:
    """The algorithm object of ``case`` (run over MPI and handed to its reference), built by
    the registry from its name and options."""
    name, opts, _ = CASES[case]
    kw = dict(opts)
    comp = kw.pop("compressor", None)
    return registry.get(name).build(compressor=comp, batch_size=BATCH, options=kw)


def _run(comm, problems, case: str,
         every_step: Callable[[Any, Env, Any], None] | None = None):
    """``case`` on this rank through the runner's transport for a schedule; the iterates
    (STEPS + 1, d), the transport's byte counts and the reference trace."""
    probs, x0 = problems
    _, _, kind = CASES[case]
    sched = mixing_schedule(kind, comm.size)
    alg = _build(case)
    alg.check_mixing(sched)
    tp = open_transport("decentralized", comm, mixing=sched)
    env = Env(tp, probs[comm.rank], comm.size, SEED, LR)
    state, xs = run_iterates(alg, env, x0, STEPS, every_step)
    counts = (tp.bytes.up, tp.bytes.down)
    tp.close()
    ref = reference(alg, probs, x0, sched, lr=LR, steps=STEPS, seed=SEED)
    return xs, counts, ref, state


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
def test_iterates_equal_the_reference_on_a_schedule(comm, problems, case: str) -> None:
    if CASES[case][2] == "one-peer-hypercube" and not _power_of_two(comm.size):
        pytest.skip("the one-peer hypercube needs n a power of two")
    xs, counts, ref, state = _run(comm, problems, case)
    rank = comm.rank
    exact = bool(np.array_equal(xs, ref.xs[:, rank]))
    first_diff = int(np.argmax(np.any(xs != ref.xs[:, rank], axis=1))) if not exact else -1
    want = (int(ref.bytes_sent[rank]), int(ref.bytes_received[rank]))
    got = comm.allgather((exact, first_diff, counts, want, state.bad,
                          float(np.abs(xs[-1] - xs[0]).max())))
    assert all(g[0] for g in got), [(r, g[1]) for r, g in enumerate(got)]
    assert all(g[2] == g[3] for g in got), [(g[2], g[3]) for g in got]
    assert all(g[4] == 0 for g in got)
    assert min(g[5] for g in got) > 1e-3  # the models moved
    # one payload per step to the one current peer (n >= 2): up = STEPS × one message
    per_step = {g[2][0] // STEPS for g in got}
    assert len(per_step) == 1 and all(g[2][0] % STEPS == 0 for g in got)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["dcd-qsgd-hypercube", "choco-topk-hypercube"])
def test_both_ends_of_every_edge_hold_the_same_replica(comm, problems, case: str) -> None:
    """After every step, node i's own-side x̂_{i→k} (A row of k) equals node k's copy of it
    (B row of i) bit for bit, for every edge of the period — the current one and the idle
    ones; and the copies of an idle edge were not touched this step."""
    if not _power_of_two(comm.size):
        pytest.skip("the one-peer hypercube needs n a power of two")
    bad: list[tuple[int, int, int, str]] = []
    before: dict[str, np.ndarray] = {}

    def check(alg, env, state) -> None:
        peers = env.transport.peers
        mine = {k: (state.A[p].copy(), state.B[p].copy()) for p, k in enumerate(peers)}
        everyone = comm.allgather(mine)
        for k, (a, b) in mine.items():
            if not np.array_equal(a, everyone[k][env.rank][1]):
                bad.append((state.t, env.rank, k, "A != peer's B"))
            if not np.array_equal(b, everyone[k][env.rank][0]):
                bad.append((state.t, env.rank, k, "B != peer's A"))
        current = set(env.transport.sources)
        if "A" in before:
            for p, k in enumerate(peers):
                if k not in current and not (np.array_equal(before["A"][p], state.A[p])
                                             and np.array_equal(before["B"][p], state.B[p])):
                    bad.append((state.t, env.rank, k, "idle edge changed"))
        before["A"], before["B"] = state.A.copy(), state.B.copy()
        if len(peers) != max(1, (comm.size - 1).bit_length()):
            bad.append((state.t, env.rank, -1, f"{len(peers)} peers"))

    _run(comm, problems, case, every_step=check)
    assert not any(comm.allgather(bad)), comm.allgather(bad)


def _config(tmp: str, methods: list[dict[str, Any]], schedule: str) -> Any:
    from decomp.config import load_config

    return load_config({"name": "tv", "seed": SEED, "out_dir": tmp,
                        "problem": {"kind": "logistic", "dataset": "breast_cancer",
                                    "scale": "standard"},
                        "run": {"steps": 12, "log_every": 4, "progress": False},
                        "topology": {"schedule": schedule}, "methods": methods})


@pytest.mark.mpi(min_size=2)
def test_decomp_run_on_a_schedule_gives_the_metrics_of_decomp_sim(comm, tmp_path) -> None:
    from decomp.runner import run, simulate_config

    schedule = "one-peer-hypercube" if _power_of_two(comm.size) else "one-peer-exponential"
    methods = [{"algorithm": "dpsgd", "lr": 0.2, "batch_size": BATCH}]
    if schedule == "one-peer-hypercube":
        methods += [{"algorithm": "dcd_psgd", "lr": 0.2,
                     "compressor": {"kind": "qsgd", "levels": 8}},
                    {"algorithm": "choco_sgd", "lr": 0.2, "consensus_step": 0.5,
                     "compressor": {"kind": "topk", "k": 3}}]
    res = run(_config(str(tmp_path), methods, schedule), comm, progress=False)
    ref = simulate_config(_config(str(tmp_path / "sim"), methods, schedule), comm.size)
    rows = [(r.status, s.status, abs(r.loss - s.loss) / s.loss, r.bits_up == s.bits_up,
             r.bits_down == s.bits_down,
             abs(r.consensus_distance - s.consensus_distance) / s.consensus_distance)
            for r, s in zip(res, ref, strict=True)]
    everyone = comm.allgather(rows)
    assert all(e == everyone[0] for e in everyone)
    for st_run, st_ref, dloss, up, down, dcons in rows:
        assert st_run == st_ref == "ok" and up and down
        assert dloss <= 1e-12 and dcons <= 1e-9, (dloss, dcons)


REFUSED = {
    ("dcd_psgd", "one-peer-exponential"): "needs a symmetric W",
    ("choco_sgd", "one-peer-exponential"): "needs a symmetric W",
    ("ecd_psgd", "one-peer-exponential"): "cannot run on the time-varying schedule",
    ("ecd_psgd", "one-peer-hypercube"): "cannot run on the time-varying schedule",
}
OPTIONS = {"dcd_psgd": {"compressor": {"kind": "qsgd", "levels": 4}},
           "ecd_psgd": {"compressor": {"kind": "qsgd", "levels": 4}},
           "choco_sgd": {"compressor": {"kind": "topk", "k": 3}, "consensus_step": 0.3}}


@pytest.mark.mpi(min_size=2)
def test_the_runner_refuses_on_every_rank(comm, tmp_path) -> None:
    from decomp.errors import ConfigError
    from decomp.runner import run

    outcomes = []
    for (name, schedule), why in REFUSED.items():
        if schedule == "one-peer-hypercube" and not _power_of_two(comm.size):
            continue
        cfg = _config(str(tmp_path / name), [{"algorithm": "dpsgd", "lr": 0.2},
                                             {"algorithm": name, "name": f"{name} on W_t",
                                              "lr": 0.2, **OPTIONS[name]}], schedule)
        try:
            run(cfg, comm, progress=False)
            outcomes.append((name, schedule, why, "ran"))
        except ConfigError as e:
            outcomes.append((name, schedule, why, str(e)))
    everyone = comm.allgather(outcomes)
    assert all(o == everyone[0] for o in everyone)
    for name, schedule, why, msg in everyone[0]:
        assert msg.startswith(f"{name} on W_t: {name} {why}"), msg
        assert f"{schedule}({comm.size})" in msg, msg
        # the directed schedule's refusal names the symmetric alternative
        assert "one-peer-hypercube" in msg or "static topology" in msg, msg


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("name", ["dpsgd", "choco_sgd"])
def test_the_trainer_trains_on_a_schedule_like_the_reference(comm, name: str) -> None:
    """decomp.Trainer shares the runner's transport and session: given a schedule object it
    trains on W_t and equals the reference on its own shards, bit for bit."""
    from _torch_case import net
    from torch import nn

    from decomp.data.classification import load
    from decomp.torch import make_torch_problems
    from decomp.torch.trainer import Trainer

    kind = "one-peer-hypercube" if _power_of_two(comm.size) else "one-peer-exponential"
    if name == "choco_sgd" and kind != "one-peer-hypercube":
        pytest.skip("CHOCO needs the symmetric schedule: n a power of two")
    ds = load("synthetic", n_samples=240, n_features=10, n_classes=3)
    sched = mixing_schedule(kind, comm.size)
    alg = DECENTRALIZED[name](lr=0.1) if name == "dpsgd" else \
        DECENTRALIZED[name](make_compressor({"kind": "topk", "k": 7}), consensus_step=0.5, lr=0.1)
    tr = Trainer(net(False), nn.CrossEntropyLoss(), ds, algorithm=alg, comm=comm,
                 topology=sched, batch_size=8, seed=SEED, verbose=False)
    tr.fit(steps=6, eval_every=6)
    probs = make_torch_problems(net(False), nn.CrossEntropyLoss(), ds.X, ds.y, tr.parts,
                                seed=SEED)
    kw = {} if name == "dpsgd" else {"compressor": alg.compressor, "consensus_step": 0.5}
    ref = simulate_decentralized(name, probs, probs[0].flat.params.copy(), sched, lr=0.1,
                                 steps=6, seed=SEED, batch_size=8, **kw)
    same = bool(np.array_equal(tr.x, ref.xs[-1][comm.rank]))
    moved = float(np.abs(ref.xs[-1] - ref.xs[0]).max())
    got = comm.allgather((same, moved, tr.mixing is sched))
    assert all(g[0] and g[2] for g in got) and got[0][1] > 1e-4, got


@pytest.mark.mpi(min_size=2)
def test_a_run_extended_from_a_checkpoint_mid_period_equals_a_straight_run(comm,
                                                                          tmp_path) -> None:
    """5 steps (mid-period for τ >= 2), then --resume to 10: the same rows and states as 10
    straight steps — the step count alone selects W_t, and the per-edge replicas are state."""
    from pathlib import Path

    from decomp.runner import run

    tmp = Path(comm.bcast(str(tmp_path) if comm.rank == 0 else None))
    schedule = "one-peer-hypercube" if _power_of_two(comm.size) else "one-peer-exponential"
    methods = [{"algorithm": "dpsgd", "lr": 0.2, "batch_size": BATCH}]
    if schedule == "one-peer-hypercube":
        methods += [{"algorithm": "dcd_psgd", "lr": 0.2, **OPTIONS["dcd_psgd"]},
                    {"algorithm": "choco_sgd", "lr": 0.2, **OPTIONS["choco_sgd"]}]

    def cfg(out: str, steps: int) -> Any:
        c = _config(str(tmp / out), methods, schedule)
        c.run.steps, c.run.log_every = steps, 5
        return c

    def key(results) -> list[tuple[Any, ...]]:
        return [(r.method, r.status, r.steps, r.loss, r.bits_up, r.bits_down,
                 r.consensus_distance) for r in results]

    straight = run(cfg("straight", 10), comm, progress=False)
    run(cfg("half", 5), comm, progress=False)
    extended = run(cfg("half", 10), comm, progress=False, mode="resume")
    got = comm.allgather(key(extended) == key(straight))
    assert all(got), (key(extended), key(straight))


@pytest.mark.mpi(min_size=2)
def test_the_transport_builds_each_distinct_W_t_once_and_reuses_its_buffers(comm) -> None:
    """One Neighborhood per distinct W_t of a period (a static W wrapped as a schedule: one),
    selected by the step; its receive buffer and persistent requests survive the periods (no
    per-step allocation); bytes go to one counter; a switch with an exchange in flight is an
    error."""
    from decomp.comm.timevarying import TimeVaryingNeighborhood
    from decomp.topologies import StaticSchedule, mixing_matrix

    kind = "one-peer-hypercube" if _power_of_two(comm.size) else "one-peer-exponential"
    sched = mixing_schedule(kind, comm.size)
    tp = TimeVaryingNeighborhood(sched, comm, method="persistent")
    payload = np.full(16, comm.rank, dtype=np.uint8)
    seen: dict[int, tuple[int, int]] = {}
    stable = True
    for t in range(3 * sched.period):
        nb = tp.select(t)
        got = tp.exchange(payload, 16)
        want = {int(j) for j in sched(t).neighbors(comm.rank)[0]}
        stable &= set(got) == want and all(int(v[0]) == j for j, v in got.items())
        ident = (id(nb._recv), id(nb._preqs[0]) if nb._preqs else 0)
        stable &= seen.setdefault(t % sched.period, ident) == ident
    tp.select(0)
    tp.exchange_start(payload, 16)
    try:
        tp.select(1)
        switched = "no error"
    except RuntimeError as e:
        switched = str(e)
    tp.exchange_finish()
    counts = (len(tp.members), tp.bytes.up, sum(nb.bytes is tp.bytes for nb in tp.members))
    tp.close()
    static = TimeVaryingNeighborhood(StaticSchedule(mixing_matrix("ring", comm.size)), comm)
    n_static = len(static.members)
    static.close()
    got_all = comm.allgather((stable, switched, counts, n_static))
    assert all(g[0] for g in got_all)
    assert all("not finished" in g[1] for g in got_all)
    assert all(g[2] == (sched.period, 16 * (3 * sched.period + 1), sched.period)
               for g in got_all), got_all
    assert all(g[3] == 1 for g in got_all)
