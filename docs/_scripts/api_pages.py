"""The ``::: path`` entries of the API pages (docs/api/*.md), for the checks of the site.

Used by ``tests/test_docs_api.py`` (every public name has an entry) and by the mkdocs hook
``docs/_scripts/hooks.py`` (every entry is rendered). Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

API = Path(__file__).resolve().parents[1] / "api"

_ENTRY = re.compile(r"^::: ([\w.]+)[ \t]*$", re.M)
_MEMBERS = re.compile(r"^\s*members:[ \t]*(\[.*\])?[ \t]*\n((?:\s*- .+\n?)*)", re.M)


def _members(block: str) -> list[str] | None:
    """The ``members:`` list of one entry's options block (``None`` when not given)."""
    match = _MEMBERS.search(block)
    if match is None:
        return None
    if match.group(1):
        return [m.strip() for m in match.group(1).strip("[]").split(",") if m.strip()]
    return [line.strip()[2:].strip() for line in match.group(2).splitlines() if line.strip()]


def entries(pages: dict[str, str]) -> list[tuple[str, str, list[str] | None]]:
    """``(page, path, members)`` for every ``::: path`` entry of ``pages`` (name -> text)."""
    found = []
    for page, text in pages.items():
        matches = list(_ENTRY.finditer(text))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            found.append((page, match.group(1), _members(text[match.end() : end])))
    return found


_ANCHOR = re.compile(r"^#+ .*\{ #([\w.]+) \}[ \t]*$", re.M)


def anchors(pages: dict[str, str]) -> list[tuple[str, str]]:
    """``(page, path)`` for every heading with an explicit anchor ``{ #path }``: how a page
    documents by hand a name that is not lux_torch's own (``lux_torch.init.calculate_gain``
    is torch's function; mkdocstrings would have to load all of torch to render it)."""
    return [(page, m.group(1)) for page, text in pages.items() for m in _ANCHOR.finditer(text)]


def read_pages(api: Path = API) -> dict[str, str]:
    """The API pages, file name -> text."""
    return {p.name: p.read_text() for p in sorted(api.glob("*.md"))}
