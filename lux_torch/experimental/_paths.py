"""Dotted paths into parameter trees, shared by :mod:`.frozen` and :mod:`.shared`.

``"layer_1.weight"`` names a tensor, ``"layer_1"`` the whole subtree of the child
``layer_1`` (the names of :func:`lux_torch.tree.paths`). Every function returns new dicts
and never mutates its argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core import Params

_MAX_LISTED = 40  # paths listed in an error message


def all_paths(tree: Any, prefix: str = "") -> list[str]:
    """Every dict entry of ``tree`` by dotted path (subtrees and leaves), depth first."""
    out: list[str] = []
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            path = f"{prefix}{k}"
            out.append(path)
            out += all_paths(v, path + ".")
    return out


def listing(tree: Any) -> str:
    paths = all_paths(tree)
    shown = ", ".join(paths[:_MAX_LISTED])
    more = f", ... ({len(paths) - _MAX_LISTED} more)" if len(paths) > _MAX_LISTED else ""
    return (shown + more) if paths else "(none: the layer has no parameters)"


def has_path(tree: Any, path: str) -> bool:
    node = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def get_path(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split("."):
        node = node[part]
    return node


def set_path(tree: Params, path: str, value: Any) -> Params:
    """A copy of ``tree`` with ``value`` at ``path`` (dicts on the way copied, not mutated)."""
    head, _, rest = path.partition(".")
    out = dict(tree)
    out[head] = set_path(out.get(head, {}), rest, value) if rest else value
    return out


def remove_path(tree: Params, path: str) -> Params:
    """A copy of ``tree`` without the entry at ``path`` (its parent dict stays, maybe empty)."""
    head, _, rest = path.partition(".")
    out = dict(tree)
    if rest:
        out[head] = remove_path(out[head], rest)
    else:
        del out[head]
    return out
