"""EF21-PP takes a participation probability p in (0, 1] and nothing else (not 0, not a bool,
not a string); EF21-BC takes its master compressor C_M as a compressor table, a name, a
Compressor, or None (the uplink compressor), and refuses anything else by name. Written for gaps
mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.algorithms.ef21_bc import EF21BC
from decomp.algorithms.ef21_pp import EF21PP
from decomp.compress import QSGD, Identity, TopK
from decomp.errors import ConfigError


@pytest.mark.parametrize("p", [0, 0.0, -0.0, -0.25, -1, 1.0000001, 1.5, 2, True, False, "0.5",
                               None, float("nan")])
def test_ef21_pp_refuses_p_outside_0_1(p: object) -> None:
    """p = 0 would mean no worker ever takes part (g never moves); p > 1 is no probability;
    a bool is refused although Python counts it as an int."""
    with pytest.raises(ConfigError, match="p must be a probability in \\(0, 1\\]"):
        EF21PP(TopK(1), p=p)


@pytest.mark.parametrize("p", [1, 1.0, 0.25, 1e-9, np.float64(0.5)])
def test_ef21_pp_takes_p_in_0_1(p: float) -> None:
    """Every probability in (0, 1], an int 1 included; kept as a float."""
    alg = EF21PP(TopK(1), p=p)
    assert alg.p == float(p) and isinstance(alg.p, float)


def test_ef21_bc_master_compressor_from_a_table_a_name_a_compressor_or_none() -> None:
    """downlink_compressor: a table or a registry name is built, a Compressor is taken as it
    is, None means the uplink compressor (C_M = C_w); anything else is refused."""
    up = TopK(2)
    assert EF21BC(up).downlink_compressor is up
    table = EF21BC(up, downlink_compressor={"kind": "topk", "k": 3}).downlink_compressor
    assert isinstance(table, TopK) and table.k == 3
    assert isinstance(EF21BC(up, downlink_compressor="identity").downlink_compressor, Identity)
    q = QSGD(4)
    assert EF21BC(up, downlink_compressor=q).downlink_compressor is q
    for bad in (3, 0.5, ["topk"], TopK):
        with pytest.raises(ConfigError, match="downlink_compressor must be a compressor table"):
            EF21BC(up, downlink_compressor=bad)
