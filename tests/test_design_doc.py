"""docs/design.md keeps up with the code: every module is in its layout."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_modules() -> set[str]:
    doc = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"<!-- layout:start -->\n```\n(.*?)```\n<!-- layout:end -->", doc, re.S)
    assert block is not None, "docs/design.md lost its layout markers"
    found, stack = set(), []  # stack of (indent, "pkg/") for nested packages under src/musicgen_lens/
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        indent, name = len(line) - len(line.lstrip()), line.split()[0]
        if indent < 2:
            stack = []
            continue
        stack = [(i, n) for i, n in stack if i < indent]
        if name.endswith("/"):
            stack.append((indent, name))
        else:
            found.add("".join(n for _, n in stack) + name)
    return found


def test_every_module_is_in_the_layout():
    src = ROOT / "src" / "musicgen_lens"
    modules = {str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "__init__.py" or p.parent == src}
    missing = sorted(modules - _layout_modules())
    stale = sorted(m for m in _layout_modules() if m.endswith(".py") and m not in modules)
    assert not missing, f"add these modules to the layout in docs/design.md: {missing}"
    assert not stale, f"these layout entries name no file: {stale}"
