"""``aggregation = "auto"`` resolves by the *value* of ``master``: a master read from a TOML
file is a new string object equal to ``"shared"``, not the interned literal, and a run
configured so must take the tree across nodes and the gather on one, as the literal does
(and a dedicated master read so still gathers)."""

from __future__ import annotations

import tomllib

from decomp.comm.tree import resolve_aggregation


def test_auto_resolves_by_the_value_of_a_master_read_from_a_file() -> None:
    run = tomllib.loads('master = "shared"\naggregation = "auto"\n'
                        'other = "dedicated"')
    shared, auto, dedicated = run["master"], run["aggregation"], run["other"]
    assert shared == "shared"
    assert resolve_aggregation(shared, auto, 2) == "tree"
    assert resolve_aggregation(shared, auto, 1) == "gather"
    assert resolve_aggregation(shared, None, 3) == "tree"
    assert resolve_aggregation(shared, auto) == "auto"  # the transport decides later
    assert resolve_aggregation(dedicated, auto, 2) == "gather"
