"""docs/design.md keeps up with the code: every module is in its layout."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_modules() -> set[str]:
    doc = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"<!-- layout:start -->\n```\n(.*?)```\n<!-- layout:end -->", doc, re.S)
    assert block is not None, "docs/design.md lost its layout markers"
    found, package = set(), None
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        name = line.split()[0] if line.strip() else ""
        if indent == 2 and name.endswith("/"):
            package = name
        elif indent == 2:
            package = None
            found.add(name)
        elif indent == 4 and package:
            found.add(package + name)
    return found


def test_every_module_is_in_the_layout():
    src = ROOT / "src" / "musicgen_lens"
    modules = {str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "__init__.py" or p.parent == src}
    missing = sorted(modules - _layout_modules())
    stale = sorted(m for m in _layout_modules() if m.endswith(".py") and m not in modules)
    assert not missing, f"add these modules to the layout in docs/design.md: {missing}"
    assert not stale, f"these layout entries name no file: {stale}"
