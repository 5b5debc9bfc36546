"""mkdocs hooks of the lux_torch site (``hooks:`` in mkdocs.yml).

mkdocstrings skips a listed member it cannot render (an object without a docstring, an
alias it cannot resolve) without a warning, so ``--strict`` alone does not prove that the
API pages show what they list. After the build, every ``::: path`` entry of docs/api/*.md
and every member it lists must have its anchor (``id="path.member"``) on the built page.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from api_pages import entries, read_pages


def unrendered(site: Path, pages: dict[str, str]) -> list[str]:
    """``page: path`` for every entry or member of ``pages`` without an anchor in ``site``."""
    missing = []
    for page, path, members in entries(pages):
        html = (site / "api" / page.removesuffix(".md") / "index.html").read_text()
        ids = set(re.findall(r'id="([^"]+)"', html))
        for ident in [path] + [f"{path}.{m}" for m in members or []]:
            if ident not in ids:
                missing.append(f"{page}: {ident}")
    return missing


def on_post_build(config: Any, **kwargs: Any) -> None:
    from mkdocs.exceptions import PluginError

    missing = unrendered(Path(config["site_dir"]), read_pages(Path(config["docs_dir"]) / "api"))
    if missing:
        raise PluginError("API entries not rendered (no docstring?):\n  " + "\n  ".join(missing))
