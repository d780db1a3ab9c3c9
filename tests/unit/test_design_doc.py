"""docs/design.md's layer table names every ``decomp`` sub-command and says how many there are
(checked against :mod:`decomp.cli`, so a new sub-command updates the doc)."""

from __future__ import annotations

import re
from pathlib import Path

from decomp.cli import build_parser

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"
NUMBERS = {7: "seven", 8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}


def _subcommands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return list(sub.choices)


def test_design_md_lists_every_subcommand() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    m = re.search(r"decomp\.cli\s+one module per sub-command: ([a-z |\n]+?) \(", text)
    assert m, "the decomp.cli row of the layer table moved"
    listed = [w.strip() for w in m.group(1).replace("\n", " ").split("|")]
    assert sorted(listed) == sorted(_subcommands())
    n = len(_subcommands())
    assert f"lists all {NUMBERS.get(n, n)}" in text


def test_readme_lists_what_decomp_h_prints() -> None:
    """README's ``decomp -h`` line is the sub-command list of the real ``decomp -h``."""
    import contextlib
    import io

    import pytest

    from decomp.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["-h"])
    printed = re.findall(r"^    ([a-z]+)\s", out.getvalue(), re.M)
    assert printed == _subcommands()
    readme = (DESIGN.parents[1] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^decomp -h\s+# ([a-z ]+)$", readme, re.M)
    assert m, "README's `decomp -h` line moved"
    assert m.group(1).split() == printed
