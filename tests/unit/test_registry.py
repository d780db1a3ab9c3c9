"""The algorithm registry is the one list of methods: every name has a class of its family, a
reference in decomp.sim, a docs entry and an MPI-vs-reference case; options come from the
constructor; and one contract test runs every method through the engine's Session on one rank
against its reference (n = 1: the same arithmetic, so exactly equal)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _methods import build_any
from mpi4py import MPI

from decomp.algorithms import REGISTRY, AlgorithmSpec, DecentralizedAlgorithm, family
from decomp.algorithms.registry import family_of, names
from decomp.config import load_config
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, split_problem
from decomp.runner import Session, open_transport, plan_method
from decomp.sim import reference, reference_of, simulate
from decomp.topologies import MixingMatrix

REPO = Path(__file__).resolve().parents[2]


def _build(spec: AlgorithmSpec) -> Any:
    """The method with a compressor it accepts (tests/unit/_methods.py)."""
    return build_any(spec, 30, 8)


@pytest.fixture(scope="module")
def one_worker() -> tuple[list[Any], np.ndarray]:
    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "logistic", 1), initial_point("normal", ds.n_features, seed=1)


def test_names_families_and_classes_agree() -> None:
    assert set(names()) == set(REGISTRY)
    assert set(names("master_worker")) | set(names("decentralized")) == set(REGISTRY)
    for name, spec in REGISTRY.items():
        assert spec.name == name and family(name) == spec.family
        assert family_of(_build(spec)) == spec.family
        assert issubclass(spec.cls, DecentralizedAlgorithm) == (spec.family == "decentralized")
    with pytest.raises(ConfigError, match="unknown algorithm 'ef2l'; did you mean 'ef21'"):
        family("ef2l")
    with pytest.raises(ConfigError, match="not a decomp algorithm"):
        family_of(object())


def test_options_come_from_the_constructor_with_its_defaults() -> None:
    assert REGISTRY["choco_sgd"].options == {"consensus_step": None}
    assert REGISTRY["beer"].options == {"consensus_step": None}
    assert REGISTRY["ecd_psgd"].options == {"t_start": 1}
    assert REGISTRY["sgdm"].options == {"momentum": 0.9, "nesterov": False}
    assert REGISTRY["ef21_sgdm"].resolve_options({"eta": 0.5}, "m") == {
        "eta": 0.5, "init": "full", "downlink": "compressed", "init_batch": None}
    for spec in REGISTRY.values():
        assert not {"compressor", "batch_size", "lr"} & set(spec.options)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_name_has_docs_and_an_mpi_case(name: str) -> None:
    docs = (REPO / "docs" / "algorithms.md").read_text()
    assert f"`{name}`" in docs, f"docs/algorithms.md has no entry for `{name}`"
    mpi = "".join(f.read_text() for f in sorted((REPO / "tests" / "mpi").glob("test_*_vs_sim.py")))
    cases = set(re.findall(r'\(\s*"([a-z0-9_]+)",', mpi))
    assert name in cases, f"no MPI-vs-reference case for {name!r} in tests/mpi"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_on_one_rank_equals_its_reference(one_worker, name: str) -> None:
    """The contract: init/step through the engine's Session, 5 steps on one rank, equal to
    the reference the class declares (decomp.sim.reference of the same object), iterate for
    iterate."""
    spec = REGISTRY[name]
    alg = _build(spec)
    problems, x0 = one_worker
    comm = MPI.COMM_SELF
    if spec.family == "decentralized":
        W = MixingMatrix(np.ones((1, 1)))
        ref = reference(alg, problems, x0, W, lr=0.1, steps=5, seed=3)
        xs = [X[0] for X in ref.xs]
        tp = open_transport(spec.family, comm, mixing=W)
    else:
        ref = reference(alg, problems, x0, lr=0.1, steps=5, seed=3)
        xs = list(ref.xs)
        tp = open_transport(spec.family, comm)
    s = Session(alg, tp, problems[0], lr=0.1, seed=3)
    s.init(x0)
    got = [s.model().copy()]
    for _ in range(5):
        s.step()
        got.append(s.model().copy())
    s.close()
    assert s.steps_done == 5 and s.state.t == 5
    np.testing.assert_array_equal(np.array(got), np.array(xs))


def test_a_method_entry_is_resolved_through_the_registry() -> None:
    cfg = load_config({"methods": [
        {"algorithm": "choco_sgd", "compressor": {"kind": "topk", "k": 2}, "lr": 0.1,
         "consensus_step": 0.3},
        {"algorithm": "ef21", "compressor": {"kind": "topk", "k": 2}, "init": "full"}]})
    choco, ef21 = (plan_method(m) for m in cfg.methods)
    assert choco.algorithm.consensus_step == 0.3 and choco.decentralized
    assert ef21.options == {"init": "full", "downlink": "compressed"}
    assert ef21.family == "master_worker"
    with pytest.raises(ConfigError, match="unknown config key 'methods.0.consensus_stp'; did "
                                          "you mean 'consensus_step'"):
        load_config({"methods": [{"algorithm": "choco_sgd", "consensus_stp": 0.3}]})
    with pytest.raises(ConfigError, match="consensus_step applies to the decentralized family "
                                          "only"):
        plan_method(load_config({"methods": [{"algorithm": "ef21", "consensus_step": 0.3}]})
                    .methods[0])


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_class_declares_its_requirement_and_reference(name: str) -> None:
    """One requirement vocabulary for both families, and a reference in decomp.sim that is a
    function (the class is the unit: decomp.sim dispatches through it)."""
    from decomp.algorithms.base import REQUIREMENTS

    cls = REGISTRY[name].cls
    assert cls.requirement in REQUIREMENTS, (name, cls.requirement)
    assert cls.reference.startswith("decomp.sim."), cls.reference
    assert callable(reference_of(_build(REGISTRY[name])))


def test_the_reference_refuses_what_is_not_a_decomp_algorithm_or_the_wrong_w(
        one_worker) -> None:
    problems, x0 = one_worker
    with pytest.raises(ConfigError, match="not a decomp algorithm"):
        reference(object(), problems, x0, lr=0.1, steps=1)
    with pytest.raises(ConfigError, match="unknown algorithm 'ef2l'; did you mean 'ef21'"):
        simulate("ef2l", problems, x0, lr=0.1, steps=1)
    with pytest.raises(ConfigError, match="needs the mixing matrix W"):
        reference(_build(REGISTRY["dpsgd"]), problems, x0, lr=0.1, steps=1)
    with pytest.raises(ConfigError, match="takes no mixing matrix W"):
        reference(_build(REGISTRY["ef21"]), problems, x0, np.ones((1, 1)), lr=0.1, steps=1)


def _docs_index() -> list[tuple[str, str, str]]:
    """(name, family, class) of every row of docs/algorithms.md's index table."""
    text = (REPO / "docs" / "algorithms.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]+?) \| `([A-Za-z0-9]+)` \|", text, re.M)
    return [(n, f.replace("–", "_").replace("-", "_"), c) for n, f, c in rows]


def test_the_docs_index_lists_exactly_the_registry_in_its_order() -> None:
    want = [(n, s.family, s.cls.__name__) for n, s in REGISTRY.items()]
    assert _docs_index() == want


def test_the_package_exports_every_registered_class() -> None:
    import decomp.algorithms as pkg

    for spec in REGISTRY.values():
        assert getattr(pkg, spec.cls.__name__) is spec.cls
        assert spec.cls.__name__ in pkg.__all__
