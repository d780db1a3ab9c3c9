"""What a class declares is what the rest of the code reads (issue 21, "the class is the unit").

- Its communication pattern (``comm_pattern``) is read by both the cost model and the bytes
  its reference counts: the bytes one step adds to the reference's per-rank counters equal
  what the pattern says a rank sends (and the MPI runs equal the reference's counters, see
  tests/mpi/*_vs_sim.py).
- decomp.netmodel refuses an unknown name, and a class that declares no steps scaling, with a
  clear error (no silent default, no assert).
- The torch front end drives a method the way its class declares (``torch_driver``), refuses
  an object the class says it cannot drive (``torch_refusal``) and anything that is not a
  decomp algorithm.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

from decomp.algorithms.registry import DECENTRALIZED_FAMILY, REGISTRY
from decomp.comm.pattern import Call
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, split_problem
from decomp.sim import reference
from decomp.topologies import mixing_matrix

N = 4
TOPK = {"kind": "topk", "k": 3}
QSGD = {"kind": "qsgd", "levels": 4}


@pytest.fixture(scope="module")
def work() -> tuple[Any, np.ndarray]:
    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "logistic", N), initial_point("normal", ds.n_features, seed=2)


def _sent(c: Call) -> float:
    """Bytes one rank sends in a call (an exchange: one message per neighbour; a gather: a
    worker's payload; an all-reduce / all-gather: its own contribution)."""
    return c.nbytes * c.fan if c.call == "exchange" else c.nbytes


def _built(name: str) -> Any:
    """The registered method ``name`` with a compressor its class accepts (Top-k where it
    needs a contractive one, QSGD where unbiased) and its required options at stand-in values
    (``pricing_options``: they do not change the traffic)."""
    spec = REGISTRY[name]
    comp = None
    if spec.uses_compressor:
        comp = QSGD if spec.cls.requirement == "unbiased" else TOPK
    return spec.build(compressor=comp, batch_size=8 if spec.needs_batch else None,
                      options=dict(spec.cls.pricing_options))


def _per_step(alg: Any, work: Any, W: Any = None, aggregation: str = "gather") -> np.ndarray:
    """(n,) bytes each rank's reference counter adds per step (steps 3 → 5)."""
    probs, x0 = work
    runs = [reference(alg, probs, x0, W, lr=0.01, steps=s, seed=1, aggregation=aggregation)
            for s in (3, 5)]
    sent = [r.bytes_up if W is None else r.bytes_sent for r in runs]  # the two families' traces
    return (sent[1] - sent[0]) / 2


MASTER_WORKER = [n for n in REGISTRY if REGISTRY[n].family != DECENTRALIZED_FAMILY]
DECENTRALIZED = [n for n in REGISTRY if REGISTRY[n].family == DECENTRALIZED_FAMILY]


@pytest.mark.parametrize("name", MASTER_WORKER)
def test_master_worker_pattern_is_the_bytes_the_reference_counts(work, name) -> None:
    """Every registered master–worker method: a worker's uplink per step (the gather's
    payload; EF21-PP's participants vary per step, so its mean over workers is the expected
    p·B) equals what the reference counts."""
    alg = _built(name)
    _, x0 = work
    up = [c for c in alg.comm_pattern(x0.size, N, dtype=x0.dtype)
          if c.call in ("gather", "allreduce")]
    per_step = _per_step(alg, work)
    if up[0].call == "gather" and up[0].fan != N - 1:  # partial participation: a worker
        assert set(2 * per_step) <= {0, up[0].nbytes, 2 * up[0].nbytes}, name  # sends B or 0
        return
    assert (per_step == _sent(up[0])).all(), (name, per_step, up[0])


@pytest.mark.parametrize("name", MASTER_WORKER)
def test_the_tree_pattern_is_the_bytes_the_reference_counts(work, name) -> None:
    """``aggregation = "tree"``: every rank sends one range of its partial sum per
    reduce-scatter step (decomp.comm.tree); the class declares each step's message (a
    ``sendrecv`` call: the largest range, its entries those of disjoint supports spread
    evenly — for QSGD, whose sums are dense, the dense range). The ranks' mean bytes stay
    within the declared steps' for a sparse compressor (the supports overlap; one rank's
    range may hold more than its share) and every rank's equal them for a dense one. A
    method that keeps the master, or sends dense vectors, declares what it declares under
    the gather."""
    alg = _built(name)
    _, x0 = work
    if "aggregation" not in inspect.signature(alg.comm_pattern).parameters:
        assert not alg.uses_compressor, name  # its own all-reduce pattern (PowerSGD)
        return
    calls = alg.comm_pattern(x0.size, N, dtype=x0.dtype, aggregation="tree")
    per_step = _per_step(alg, work, aggregation="tree")
    if not alg.uses_compressor or alg.aggregation_for("tree") == "gather":
        assert calls == alg.comm_pattern(x0.size, N, dtype=x0.dtype), name
        assert (per_step == _per_step(alg, work)).all(), name
        return
    steps = [c for c in calls if c.what.startswith("reduce-scatter")]
    assert len(steps) == 2 and all(c.call == "sendrecv" for c in calls), (name, calls)
    declared = sum(c.nbytes for c in steps)
    dense = alg.compressor.is_unbiased  # QSGD here: its sums are dense
    assert (0 < per_step).all() and per_step.mean() <= declared, (name, per_step, steps)
    if dense and x0.size % N == 0:
        assert (per_step == declared).all(), (name, per_step, steps)


@pytest.mark.parametrize("name", DECENTRALIZED)
def test_decentralized_pattern_is_the_bytes_the_reference_counts(work, name) -> None:
    """Every registered decentralized method on a ring: the bytes a node sends per step
    (messages × bytes of every call the class declares) equal what the reference counts."""
    _, x0 = work
    W = mixing_matrix("ring", N)
    alg = _built(name)
    calls = alg.comm_pattern(x0.size, N, W.degree_max, dtype=x0.dtype)
    per_step = _per_step(alg, work, W)
    assert (per_step == sum(_sent(c) for c in calls)).all(), (name, per_step, calls)


def test_every_registered_class_declares_its_traffic_and_steps_scaling() -> None:
    for name, spec in REGISTRY.items():
        from decomp.netmodel.patterns import method_spec

        alg = method_spec(name).algorithm_object
        assert alg.comm_pattern(100, 8, 2), name
        assert isinstance(alg.codec_ops(8, 2), list), name
        assert spec.cls.steps_scaling is not None, name
        if spec.family == DECENTRALIZED_FAMILY:
            assert spec.cls.torch_driver == "gossip", name


# --------------------------------------------------------------------------- netmodel errors

@pytest.mark.parametrize("call", ["pattern", "codec", "predict", "steps"])
def test_netmodel_refuses_an_unknown_name(call: str) -> None:
    from decomp.netmodel.patterns import codec_ops, step_pattern
    from decomp.netmodel.predict import predict_step_time
    from decomp.netmodel.steps import scale_steps

    run = {"pattern": lambda: step_pattern("ef22", 100, 8),
           "codec": lambda: codec_ops({"algorithm": "ef22"}, 8),
           "predict": lambda: predict_step_time("ef22", 100, 8),
           "steps": lambda: scale_steps("ef22", 100, 0.5, 0.9)}[call]
    with pytest.raises(ConfigError, match=r"unknown algorithm 'ef22'; did you mean 'ef21'"):
        run()


def test_netmodel_refuses_a_class_without_steps_scaling(monkeypatch) -> None:
    from decomp.netmodel.steps import scale_steps

    cls = REGISTRY["choco_sgd"].cls
    monkeypatch.setattr(cls, "steps_scaling", None)
    with pytest.raises(ConfigError, match="does not declare how its steps to a target scale"):
        scale_steps("choco_sgd", 100, 0.5, 0.9)


def test_a_required_option_that_does_not_change_traffic_is_not_needed_for_pricing() -> None:
    from decomp.netmodel.patterns import step_pattern

    a = step_pattern({"algorithm": "choco_sgd", "compressor": TOPK}, 100, 8, 2)
    b = step_pattern({"algorithm": "choco_sgd", "compressor": TOPK, "consensus_step": 0.3},
                     100, 8, 2)
    assert a == b


# --------------------------------------------------------------------------- torch driving

def test_the_torch_driver_is_the_class_declaration() -> None:
    from decomp.torch.oracle import KINDS, drivable, driver_kind

    for name, spec in REGISTRY.items():
        if spec.needs_batch:
            continue
        alg = REGISTRY[name].build(options={k: 0.5 for k in spec.cls.pricing_options})
        refusal = alg.torch_refusal()
        if refusal or spec.cls.torch_driver not in KINDS:
            with pytest.raises(ConfigError, match="DistributedOptimizer"):
                driver_kind(alg)
        else:
            assert driver_kind(alg) == spec.cls.torch_driver, name
    assert "EF21," in drivable() and "EF21Plus" not in drivable()


def test_the_torch_front_end_refuses_what_it_cannot_drive() -> None:
    from decomp.algorithms import EF21, EF21Plus
    from decomp.algorithms.ef21_bc import EF21BC
    from decomp.compress import TopK
    from decomp.torch.oracle import driver_kind

    with pytest.raises(ConfigError, match="EF21Plus keeps g on the master only"):
        driver_kind(EF21Plus(TopK(2)))
    with pytest.raises(ConfigError, match=r"EF21\(downlink='model'\) keeps g on the master"):
        driver_kind(EF21(TopK(2), downlink="model"))
    with pytest.raises(ConfigError, match="cannot drive EF21BC yet .*master–worker: GD"):
        driver_kind(EF21BC(TopK(2)))
    with pytest.raises(ConfigError, match="'ef21' is not a decomp algorithm"):
        driver_kind("ef21")
