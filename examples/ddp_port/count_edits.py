"""Count the edits that port train_ddp.py to train_decomp.py: a line diff (difflib) of the
two scripts, the module docstrings left out (they describe each file). Prints the places
(hunks), the lines removed and added, and the diff itself.

    python examples/ddp_port/count_edits.py
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def code_lines(path: Path) -> list[str]:
    """The file's lines without its module docstring."""
    text = path.read_text()
    lines = text.splitlines()
    doc = ast.parse(text).body[0]
    if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
        del lines[doc.lineno - 1:doc.end_lineno]
    return lines


def count(a: Path = HERE / "train_ddp.py", b: Path = HERE / "train_decomp.py") -> dict[str, int]:
    """{"places", "removed", "added", "changed"} (changed: lines of the port that are new or
    replaced, removed: lines of the DDP script that are gone or replaced)."""
    old, new = code_lines(a), code_lines(b)
    ops = [op for op in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    removed = sum(i2 - i1 for _, i1, i2, _, _ in ops)
    added = sum(j2 - j1 for _, _, _, j1, j2 in ops)
    return {"places": len(ops), "removed": removed, "added": added, "ddp_lines": len(old),
            "decomp_lines": len(new)}


def main() -> None:
    c = count()
    a, b = HERE / "train_ddp.py", HERE / "train_decomp.py"
    for line in difflib.unified_diff(code_lines(a), code_lines(b), a.name, b.name, n=0,
                                     lineterm=""):
        print(line)
    print(f"{c['places']} places: {c['removed']} lines removed, {c['added']} added "
          f"({c['ddp_lines']} code lines in train_ddp.py, {c['decomp_lines']} in "
          f"train_decomp.py)")


if __name__ == "__main__":
    main()
