"""The two reports that turn a would-be deadlock into one error on every rank: the collective
check of DistributedOptimizer's calls (decomp/torch/guard.py, ``DECOMP_COLLECTIVE_CHECK=1``)
and the agreement of every rank's restored checkpoint (decomp/runner/agree.py)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from decomp.runner.agree import check_restored, disagreement, restored_summary
from decomp.torch.guard import _decode, _encode, check_enabled, mismatch


def test_the_same_call_on_every_rank_is_no_mismatch() -> None:
    assert mismatch([("opt.step()", 3, 10)] * 4) == ""


def test_the_first_rank_not_in_the_common_call_is_named() -> None:
    calls = [("opt.averaged()", 5, 210)] + [("opt.step()", 5, 210)] * 3
    msg = mismatch(calls)
    assert msg.startswith("collective check (DECOMP_COLLECTIVE_CHECK=1): the ranks are not in "
                          "the same call. First mismatch: rank 0 is in opt.averaged() after "
                          "step 5 with model size 210 while ranks 1, 2, 3 are in opt.step() "
                          "after step 5 with model size 210"), msg


@pytest.mark.parametrize("odd,what", [(("opt.step()", 6, 10), "after step 6 with model size 10"),
                                      (("opt.step()", 5, 11), "after step 5 with model size 11")])
def test_a_step_or_size_difference_is_a_mismatch(odd: tuple[str, int, int], what: str) -> None:
    calls = [("opt.step()", 5, 10)] * 2 + [odd] + [("opt.step()", 5, 10)]
    msg = mismatch(calls)
    assert f"First mismatch: rank 2 is in opt.step() {what}" in msg, msg


def test_a_tie_takes_the_lowest_ranks_call_as_the_common_one() -> None:
    msg = mismatch([("a", 1, 1), ("b", 1, 1), ("a", 1, 1), ("b", 1, 1)])
    assert "First mismatch: rank 1 is in b after step 1" in msg and "ranks 0, 2 are in a" in msg


def test_a_call_travels_as_int64_words() -> None:
    row = _encode("opt.averaged()", 41, 5210)
    assert row.dtype == np.int64 and row.size == 6
    assert _decode(row) == ("opt.averaged()", 41, 5210)


@pytest.mark.parametrize("value,on", [("", False), ("0", False), ("1", True),
                                      ("DETAIL", True)])
def test_the_check_is_an_environment_switch(value: str, on: bool) -> None:
    assert check_enabled({"DECOMP_COLLECTIVE_CHECK": value}) is on
    assert check_enabled({}) is False


class _State(NamedTuple):
    t: int
    x: np.ndarray
    g: np.ndarray


def _summary(step: int = 100, x: float = 1.0, status: str = "ok", d: int = 3) -> dict:
    state = _State(step, np.full(d, x, np.float32), np.zeros(d, np.float32))
    return restored_summary(state, [np.ones(2, np.float32)], 0, step, status)


def test_agreeing_checkpoints_pass() -> None:
    assert disagreement([_summary()] * 4, "EF21", "checkpoints/m0-s100") == ""


def test_a_rank_at_another_step_is_refused_naming_it() -> None:
    msg = disagreement([_summary(), _summary(), _summary(50), _summary()], "EF21",
                       "checkpoints/m0-s100")
    assert msg.startswith("--resume: the checkpoint of EF21 (checkpoints/m0-s100) disagrees "
                          "across ranks on the step: ranks 0, 1, 3: 100; rank 2: 50"), msg
    assert msg.endswith("or remove checkpoints/m0.json and checkpoints/m0-s100 to restart "
                        "EF21 from step 0")


def test_another_layout_is_accepted() -> None:
    # a master–worker master's state is not the workers' (EF21+ keeps every g_i on rank 0)
    assert disagreement([_summary(), _summary(d=4)], "EF21", "checkpoints/m0-s100") == ""


def test_a_non_finite_value_is_refused_unless_the_method_diverged() -> None:
    bad = [_summary(), _summary(x=np.inf)]
    msg = disagreement(bad, "EF21", "checkpoints/m0-s100")
    assert msg.startswith("--resume: the checkpoint of EF21 (checkpoints/m0-s100) holds "
                          "non-finite values on rank 1 (rank 1: x)"), msg
    diverged = [_summary(status="diverged"), _summary(x=np.nan, status="diverged")]
    assert disagreement(diverged, "EF21", "checkpoints/m0-s100") == ""


def test_one_rank_alone_checks_itself() -> None:
    class One:
        def Get_size(self) -> int:  # noqa: N802
            return 1

    check_restored(One(), _summary(), "EF21", "checkpoints/m0-s100")
    with pytest.raises(Exception, match="holds non-finite values on rank 0"):
        check_restored(One(), _summary(x=np.nan), "EF21", "checkpoints/m0-s100")
