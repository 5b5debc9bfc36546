"""Lux-style printouts with parameter counts, and ``summary`` tables.

``repr(layer)`` renders the layer tree with per-layer parameter counts and totals::

    Chain(
        layer_1 = Linear(2 => 16, tanh),    # 48 parameters
        layer_2 = Linear(16 => 1),          # 17 parameters
    )         # Total: 65 parameters,
              #        plus 0 states.

Runs of three or more identical consecutive children are collapsed into one line
(``layer_2 … layer_9 = Linear(64 => 64, relu),  # 33,280 (4,160 × 8) parameters``).
Counts are computed on the meta device, so printing allocates no tensor memory.
Custom layers get all of this from :meth:`lux_torch.Layer.extra_repr` alone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import torch
from tabulate import tabulate

from . import tree as ltree
from .core import Layer, init_params, init_state, map_children, param_count, state_count

__all__ = ["Summary", "layer_html", "layer_repr", "short_repr", "summary"]

_INDENT = "    "
_COMMENT_COLUMN = 40


def short_repr(layer: Layer) -> str:
    """One-line description: ``Linear(16 => 1)``; containers as ``Chain(...)``."""
    extra = layer.extra_repr()
    inner = (f"{extra}, ..." if extra else "...") if layer.children() else extra
    return f"{type(layer).__name__}({inner})"


def _counts_comment(params: int, states: int) -> str:
    text = f"# {params:,} parameters"
    if states:
        text += f", plus {states:,} states"
    return text


def _child_trees(layer: Layer, trees: tuple[Any, Any], name: str) -> tuple[Any, Any]:
    """The child's ``(ps, st)`` as its parent builds them (on the meta device): a parent
    may store a child's tensors differently from the child alone (e.g. a transformer block
    drops the state of its ``p = 0`` dropouts). Where the parent's tree is keyed by child
    names but has no entry for this child, the parent stores none of its tensors (a
    hypernetwork generates its target's parameters): empty, so nothing is counted twice.
    Where the parent's tree is not keyed by child names (a wrapper), the child's own."""
    children = layer.children()
    child = children[name]
    out = []
    for tree, init in zip(trees, (init_params, init_state), strict=True):
        if isinstance(tree, dict) and name in tree:
            out.append(tree[name])
        elif isinstance(tree, dict) and any(n in tree for n in children):
            # the tree is keyed by child names but stores nothing for this child: its
            # tensors come from elsewhere (a hypernetwork generates them), not from here
            out.append({})
        else:  # a wrapper passing its whole tree through, e.g. Shared: the child's own
            out.append(init(0, child, device="meta"))
    return out[0], out[1]


def _tie_note(ties: dict[str, str], path: str, inside: bool = True) -> str:
    """``"tied to layer_1"`` (or, with ``inside``, ``"weight tied to layer_1.weight"``) for
    the child at ``path`` where a :class:`~lux_torch.experimental.Shared` ties parameters."""
    notes = [f"tied to {first}" for p, first in ties.items() if p == path]
    notes += [
        f"{p[len(path) + 1 :]} tied to {first}"
        for p, first in ties.items()
        if inside and p.startswith(path + ".")
    ]
    return "; ".join(notes)


def _ties_of(layer: Layer) -> dict[str, str] | None:
    """``{path: first path of its group}`` of a ``Shared`` layer's ties; ``None`` otherwise."""
    from .experimental.shared import Shared

    if not isinstance(layer, Shared):
        return None
    return {p: group[0] for group in layer.sharing for p in group[1:]}


def _below(
    own_ties: dict[str, str] | None, ties: tuple[dict[str, str], str], name: str
) -> tuple[dict[str, str], str]:
    """The ties and path passed to the child ``name`` (a ``Shared`` layer starts anew)."""
    if own_ties is not None:  # Shared: its ties are paths in its child's parameters
        return own_ties, ""
    return ties[0], f"{ties[1]}.{name}" if ties[1] else name


def _lines(
    layer: Layer,
    depth: int,
    trees: tuple[Any, Any] | None = None,
    ties: tuple[dict[str, str], str] = ({}, ""),
) -> list[tuple[str, str]]:
    """``(code, comment)`` lines of ``layer`` rendered at ``depth`` (header excluded);
    ``trees``: its ``(ps, st)`` on the meta device, if known; ``ties``: the ties of the
    enclosing ``Shared`` layer and ``layer``'s path below it."""
    if trees is None:
        trees = (init_params(0, layer, device="meta"), init_state(0, layer, device="meta"))
    pad = _INDENT * (depth + 1)
    out: list[tuple[str, str]] = []
    extra = layer.extra_repr()
    if extra:
        out.append((f"{pad}{extra},", ""))
    own = [_own(tree, layer.children()) for tree in trees]
    if own[0] or own[1]:
        out.append((f"{pad}(own tensors),", _counts_comment(own[0] or 0, own[1] or 0)))
    own_ties = _ties_of(layer)
    items = list(layer.children().items())
    i = 0
    while i < len(items):
        name, child = items[i]
        below = _below(own_ties, ties, name)
        note = _tie_note(below[0], below[1], not child.children()) if below[1] else ""
        j = i + 1
        while j < len(items) and items[j][1] == child and not items[j][1].children():
            j += 1
        run = j - i
        if run >= 3 and not any(_tie_note(*_below(own_ties, ties, n)) for n, _ in items[i:j]):
            label = f"{name} … {items[j - 1][0]}"
        else:
            label, j, run = name, i + 1, 1
        child_trees = _child_trees(layer, trees, name)
        if child.children():
            out.append((f"{pad}{label} = {type(child).__name__}(", f"# {note}" if note else ""))
            out.extend(_lines(child, depth + 1, child_trees, below))
            out.append((f"{pad}),", ""))
        else:
            p, s = ltree.count(child_trees[0]), ltree.count(child_trees[1])
            if run > 1:
                comment = f"# {p * run:,} ({p:,} × {run}) parameters"
                if s:
                    comment += f", plus {s * run:,} states"
            else:
                comment = _counts_comment(p, s)
            out.append(
                (f"{pad}{label} = {short_repr(child)},", comment + (f", {note}" if note else ""))
            )
        i = j
    return out


def layer_repr(layer: Layer) -> str:
    """The Lux-style multi-line printout of ``layer`` (what ``repr(layer)`` returns)."""
    trees = (init_params(0, layer, device="meta"), init_state(0, layer, device="meta"))
    params, states = ltree.count(trees[0]), ltree.count(trees[1])
    if not layer.children():
        return f"{short_repr(layer)}  {_counts_comment(params, states)}"
    body = _lines(layer, 0, trees)
    width = max([_COMMENT_COLUMN] + [len(code) + 2 for code, c in body if c])
    rendered = [f"{type(layer).__name__}("]
    rendered += [
        f"{code:<{width}}{comment}".rstrip() if comment else code for code, comment in body
    ]
    rendered.append(f"){' ' * 9}# Total: {params:,} parameters,")
    rendered.append(f"{' ' * 10}#        plus {states:,} states.")
    return "\n".join(rendered)


def layer_html(layer: Layer) -> str:
    """Notebook rendering: the printout in a ``<pre>`` block."""
    return f"<pre>{html.escape(layer_repr(layer))}</pre>"


# --------------------------------------------------------------------------- summary


class _Log:
    """Mutable call log shared by the recorders of one ``summary`` run: per call, the
    layer's path, its output and the ids of the tensors it received in ``ps`` and ``st``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, set[int]]] = []


class _Recorder(Layer):
    """Transparent wrapper that logs the output of ``inner`` under ``path``, and what it
    received. Its trees are ``inner``'s own (not nested under ``"inner"``), so a parent that
    builds a child's trees itself (a hypernetwork) sees no difference."""

    inner: Layer
    path: str
    log: _Log

    def __getattr__(self, name: str) -> Any:
        # the inner layer's configuration (a parent may read it: ``layer.p``); only for
        # names the recorder lacks, never its own fields (unset while it is being built)
        if name in ("inner", "path", "log") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def init_params(self, key: torch.Tensor) -> Any:
        return self.inner.init_params(key)

    def init_state(self, key: torch.Tensor) -> Any:
        return self.inner.init_state(key)

    def __call__(self, x: Any, ps: Any, st: Any) -> tuple[Any, Any]:
        y, new_st = self.inner(x, ps, st)
        received = {id(t) for t in ltree.leaves((ps, st))}
        self.log.calls.append((self.path, y, received))
        return y, new_st


def _instrument(layer: Layer, path: str, log: _Log, order: list[tuple[str, Layer]]) -> Layer:
    order.append((path, layer))
    rebuilt = map_children(
        layer,
        lambda name, child: _instrument(child, f"{path}.{name}" if path else name, log, order),
    )
    return _Recorder(rebuilt, path, log)


def _shape(y: Any) -> str:
    if isinstance(y, torch.Tensor):
        return str(tuple(y.shape))
    if isinstance(y, (tuple, list)):
        return "(" + ", ".join(_shape(v) for v in y) + ")"
    return type(y).__name__


def _subtree(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split(".") if path else []:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _own(tree: Any, children: dict[str, Layer]) -> int | None:
    """Elements of ``tree`` outside the entries named after ``children``; ``None`` when the
    tree does not hold every child under its name (a wrapper, a hypernetwork)."""
    if not isinstance(tree, dict) or any(name not in tree for name in children):
        return None
    return ltree.count({k: v for k, v in tree.items() if k not in children})


class _Reach:
    """Which of the root's tensors each layer received during the ``summary`` run: the
    counts of layers whose tensors are not stored under their own names."""

    def __init__(self, ps: Any, st: Any, calls: list[tuple[str, Any, set[int]]]) -> None:
        self.sizes = [
            {id(t): t.numel() for t in ltree.leaves(ps)},
            {id(t): t.numel() for t in ltree.leaves(st)},
        ]
        self.ids: dict[str, set[int]] = {}
        for path, _, received in calls:
            self.ids.setdefault(path, set()).update(received)

    def count(self, ids: set[int], which: int) -> int:
        return sum(self.sizes[which].get(i, 0) for i in ids)

    def param_ids(self, path: str) -> set[int]:
        return {i for i in self.ids.get(path, set()) if i in self.sizes[0]}


@dataclass
class Summary:
    """Result of :func:`summary`: ``rows`` plus totals; ``str()`` is a tabulate table."""

    rows: list[tuple[str, str, str, int, int]]
    total_params: int
    total_states: int
    headers: tuple[str, ...] = field(default=("path", "layer", "output shape", "params", "states"))

    def _table(self, fmt: str) -> str:
        body = [(p, layer, shape, f"{n:,}", f"{s:,}") for p, layer, shape, n, s in self.rows]
        body.append(("Total", "", "", f"{self.total_params:,}", f"{self.total_states:,}"))
        return tabulate(body, headers=list(self.headers), tablefmt=fmt, disable_numparse=True)

    def __str__(self) -> str:
        return self._table("simple")

    def _repr_html_(self) -> str:
        return self._table("html")


def summary(model: Layer, x: Any, ps: Any, st: Any) -> Summary:
    """Run ``model`` once on ``x`` and tabulate every layer's output shape and counts.

    Rows appear in model order (a container before its children); the path of the root
    is ``""`` (shown as ``(model)``). Parameter and state counts come from ``ps``/``st``:
    a layer's row counts its whole subtree (children included). A container that stores
    tensors of its own (outside its children's entries) gets a second row,
    ``"{path} (own)"``, with just those, so the rows of layers without children plus the
    ``(own)`` rows add up to the totals, each tensor counted once, with two exceptions
    that the table marks or explains:

    - a layer whose tensors are not stored under its name (inside a wrapper such as
      :class:`~lux_torch.experimental.Shared` or :class:`~lux_torch.experimental.Frozen`)
      counts the stored tensors it received when called; one whose parameters its
      parent *generates* (a hypernetwork's target) received none, so it counts 0 and is
      not counted twice;
    - parameters tied by :func:`~lux_torch.share_parameters` count in every layer that
      uses them; each layer after the first is marked ``[tied to <first path>]``.

    The call is pure: ``ps`` and ``st`` are not modified and the new state is discarded.

    Example:
        >>> print(summary(model, x, ps, st))  # doctest: +SKIP
    """
    log = _Log()
    order: list[tuple[str, Layer]] = []
    instrumented = _instrument(model, "", log, order)
    with torch.no_grad():
        instrumented(x, ps, st)
    outputs: dict[str, list[Any]] = {}
    for path, y, _ in log.calls:
        outputs.setdefault(path, []).append(y)
    reach = _Reach(ps, st, log.calls)
    tied = _tied(reach, order)
    rows = []
    for path, layer in order:
        ys = outputs.get(path, [])
        shape = _shape(ys[-1]) if ys else "not called"
        if len(ys) > 1:
            shape += f" (×{len(ys)} calls)"
        counts = []
        for which, tree in enumerate((ps, st)):
            sub = _subtree(tree, path)
            if sub is not None:  # stored under its own name: what is stored there
                counts.append(ltree.count(sub))
            elif path in reach.ids:  # e.g. inside a wrapper: the stored tensors it received
                counts.append(reach.count(reach.ids[path], which))
            else:  # not called, not stored under its name
                counts.append((param_count, state_count)[which](layer))
        described = short_repr(layer) + (f" [tied to {tied[path]}]" if path in tied else "")
        rows.append((path or "(model)", described, shape, counts[0], counts[1]))
        children = layer.children()
        if children:
            own = _own_row(path, layer, ps, st, reach)
            if own is not None:
                rows.append(own)
    return Summary(rows, ltree.count(ps), ltree.count(st))


def _own_row(
    path: str, layer: Layer, ps: Any, st: Any, reach: _Reach
) -> tuple[str, str, str, int, int] | None:
    """The row of the tensors a container owns itself (not its children's), if any."""
    children = layer.children()
    counts = []
    for which, tree in enumerate((ps, st)):
        own = _own(_subtree(tree, path), children)
        if own is None:  # not stored by name: what it received and passed to no child
            inner = set().union(*(reach.ids.get(_join(path, n), set()) for n in children))
            own = reach.count(reach.ids.get(path, set()) - inner, which)
        counts.append(own)
    if not any(counts):
        return None
    label = f"{path or '(model)'} (own)"
    return (label, f"{type(layer).__name__}'s own tensors", "", counts[0], counts[1])


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _tied(reach: _Reach, order: list[tuple[str, Layer]]) -> dict[str, str]:
    """``{path: first path}`` for layers without children that received parameters an
    earlier such layer received too (tied by ``share_parameters``)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for path, layer in order:
        if layer.children():
            continue
        for i in sorted(reach.param_ids(path)):
            if i in first and first[i] != path:
                out.setdefault(path, first[i])
            first.setdefault(i, path)
    return out
