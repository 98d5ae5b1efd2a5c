"""mkdocs hooks for the API reference (mkdocs.yml loads them).

Every module of groksweep gets documented: one that no page of docs/api/ names with a
``::: module`` line is appended to the Internals page, so that a new module is in the reference
(and references to it resolve) without anyone editing the pages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "groksweep"
DIRECTIVE = re.compile(r"^::: *([\w.]+)", re.M)


def modules() -> list[str]:
    """Every public module of the package, dotted, in file order."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "api/internals.md":
        return markdown
    named = set()
    for doc in (ROOT / "docs" / "api").glob("*.md"):
        named |= set(DIRECTIVE.findall(doc.read_text(encoding="utf-8")))
    missing = [name for name in modules() if name not in named]
    if not missing:
        return markdown
    return markdown + "\n## Other modules\n\n" + "\n\n".join(f"::: {name}" for name in missing)
