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

In a notebook, a layer renders as a collapsible tree (:func:`layer_html`: one
``<details>`` element per container, the counts in two aligned columns, the totals at the
bottom), :func:`summary` as an HTML table, and a ``ps``/``st`` tree as the table of its
paths, shapes, dtypes and devices that :func:`tree_table` builds (never its values).
``%load_ext lux_torch`` (:func:`load_ipython_extension`) makes that table the display of
every dict of tensors in cell outputs. The HTML uses a monospace font and inherited colours
(light and dark themes alike), and escapes every user string.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import tree as ltree
from .core import Layer, init_params, init_state, map_children, param_count, state_count

__all__ = [
    "Summary",
    "TreeTable",
    "layer_html",
    "layer_repr",
    "load_ipython_extension",
    "short_repr",
    "summary",
    "tree_table",
    "unload_ipython_extension",
]

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
    Where the parent's tree is not keyed by child names (a wrapper), the child's own; a
    :class:`~lux_torch.experimental.Frozen` child's with the frozen parameters as states."""
    from .experimental.frozen import Frozen

    children = layer.children()
    child = children[name]
    if isinstance(layer, Frozen):  # frozen parameters sit in the state: counted as states
        return layer.counted_trees(*trees)
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


@dataclass
class _Row:
    """One line of a layer's printout, shared by the text and the HTML renderings: a
    child (or a run of identical children) with its counts, or the root."""

    label: str  # "layer_1", "layer_2 … layer_9"; "" for the root
    layer: Layer
    each: tuple[int, int]  # (parameters, states) of one layer of the run
    run: int = 1
    note: str = ""  # "tied to layer_1", "weight tied to layer_1.weight"
    tied: int = 0  # parameters counted in an earlier row (tied by a ``Shared``)
    own: tuple[int, int] | None = None  # a container's own tensors
    children: list[_Row] = field(default_factory=list)

    @property
    def is_container(self) -> bool:
        return bool(self.layer.children())

    @property
    def params(self) -> int:
        """Parameters of the row: the run's, or a container's subtree (its rows' sum)."""
        if not self.is_container:
            return self.each[0] * self.run
        own = self.own[0] if self.own else 0
        return own + sum(c.params - c.tied for c in self.children)

    @property
    def states(self) -> int:
        if not self.is_container:
            return self.each[1] * self.run
        own = self.own[1] if self.own else 0
        return own + sum(c.states for c in self.children)


def _tied_count(ties: dict[str, str], path: str, ps: Any) -> int:
    """Elements of the leaf layer at ``path`` (parameters ``ps``) tied to earlier paths."""
    total = 0
    for p in ties:
        if p.startswith(path + "."):
            sub = _subtree(ps, p[len(path) + 1 :])
            total += ltree.count(sub) if sub is not None else 0
    return total


def _rows(
    layer: Layer,
    trees: tuple[Any, Any],
    ties: tuple[dict[str, str], str] = ({}, ""),
    label: str = "",
) -> _Row:
    """The printout of ``layer`` as a tree of rows; ``trees``: its ``(ps, st)`` on the meta
    device; ``ties``: the ties of the enclosing ``Shared`` layer and ``layer``'s path below
    it."""
    row = _Row(label, layer, (ltree.count(trees[0]), ltree.count(trees[1])))
    own = [_own(tree, layer.children()) for tree in trees]
    if own[0] or own[1]:
        row.own = (own[0] or 0, own[1] or 0)
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
            child_label = f"{name} … {items[j - 1][0]}"
        else:
            child_label, j, run = name, i + 1, 1
        child_trees = _child_trees(layer, trees, name)
        sub = _rows(child, child_trees, below, child_label)
        sub.run, sub.note = run, note
        if note.startswith("tied to"):  # the whole child: every row below counted before
            sub.tied = sub.params
        elif note:  # some of a leaf's parameters ("weight tied to layer_1.weight")
            sub.tied = _tied_count(below[0], below[1], child_trees[0])
        row.children.append(sub)
        i = j
    return row


def _text_lines(row: _Row, depth: int) -> list[tuple[str, str]]:
    """``(code, comment)`` lines of the container ``row`` at ``depth`` (header excluded)."""
    pad = _INDENT * (depth + 1)
    out: list[tuple[str, str]] = []
    extra = row.layer.extra_repr()
    if extra:
        out.append((f"{pad}{extra},", ""))
    if row.own:
        out.append((f"{pad}(own tensors),", _counts_comment(*row.own)))
    for child in row.children:
        note = child.note
        if child.is_container:
            kind = type(child.layer).__name__
            out.append((f"{pad}{child.label} = {kind}(", f"# {note}" if note else ""))
            out.extend(_text_lines(child, depth + 1))
            out.append((f"{pad}),", ""))
            continue
        (p, s), run = child.each, child.run
        if run > 1:
            comment = f"# {p * run:,} ({p:,} × {run}) parameters"
            if s:
                comment += f", plus {s * run:,} states"
        else:
            comment = _counts_comment(p, s)
        out.append(
            (
                f"{pad}{child.label} = {short_repr(child.layer)},",
                comment + (f", {note}" if note else ""),
            )
        )
    return out


def _meta_trees(layer: Layer) -> tuple[Any, Any]:
    return init_params(0, layer, device="meta"), init_state(0, layer, device="meta")


def layer_repr(layer: Layer) -> str:
    """The Lux-style multi-line printout of ``layer`` (what ``repr(layer)`` returns)."""
    trees = _meta_trees(layer)
    params, states = ltree.count(trees[0]), ltree.count(trees[1])
    if not layer.children():
        return f"{short_repr(layer)}  {_counts_comment(params, states)}"
    body = _text_lines(_rows(layer, trees), 0)
    width = max([_COMMENT_COLUMN] + [len(code) + 2 for code, c in body if c])
    rendered = [f"{type(layer).__name__}("]
    rendered += [
        f"{code:<{width}}{comment}".rstrip() if comment else code for code, comment in body
    ]
    rendered.append(f"){' ' * 9}# Total: {params:,} parameters,")
    rendered.append(f"{' ' * 10}#        plus {states:,} states.")
    return "\n".join(rendered)


# --------------------------------------------------------------------------- HTML
#
# Notebook renderings. Everything that matters for reading them is in inline styles (a
# notebook viewer may drop <style> elements): the monospace font, the count columns, the
# indentation. Colours are inherited (``currentColor``, translucent greys), so the output
# reads on light and dark themes alike. The one <style> element only hides a container's
# subtotal while it is open and highlights the row under the pointer.


def _e(text: str) -> str:
    return html.escape(text, quote=True)


# the font family of every HTML rendering, set inline (exported notebooks keep it)
_MONOSPACE = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace'

_ROOT_STYLE = (
    f"font-family: {_e(_MONOSPACE)}; font-size: 12.5px; line-height: 1.5; color: inherit; "
    "background: transparent; text-align: left"
)
_RULE = "1px solid rgba(128, 128, 128, 0.35)"
_MUTED = "opacity: 0.65"
_CELL = "float: right; min-width: 9ch; padding-left: 2ch; text-align: right; white-space: pre"
# <details>/<summary> as the browser draws them (a disclosure triangle, no box), whatever
# the page's stylesheet does with them (mkdocs-material draws them as admonitions)
_RESET = (
    "margin: 0; padding: 0; border: none; border-radius: 0; box-shadow: none; "
    "background: transparent; color: inherit; font: inherit; min-height: 0; "
    "overflow: visible; position: static"
)
_DETAILS_STYLE = f"display: block; {_RESET}"
_SUMMARY_STYLE = f"display: list-item; {_RESET}; cursor: pointer; white-space: nowrap"
_BODY_STYLE = f"{_RESET}; margin-left: 0.3em; padding-left: 0.6em; border-left: {_RULE}"
_CSS = (
    "<style>"
    ".lux-display details[open] > summary .lux-sub { visibility: hidden; }"
    "div.lux-display details.lux-node > summary::before,"
    " div.lux-display details.lux-node > summary::after"
    " { content: none !important; display: none !important; }"
    ".lux-display .lux-row:hover, .lux-display summary:hover, .lux-display tbody tr:hover"
    " { background: rgba(128, 128, 128, 0.12) !important; }"
    "</style>"
)
_OPEN_LINES = 40  # containers open level by level while at most this many lines show


def _cells(params: str, states: str, cls: str = "", style: str = "") -> str:
    """The two count cells (floated right, states outermost), placed before the text."""
    extra = f" {cls}" if cls else ""
    params, states = params or "&nbsp;", states or "&nbsp;"  # an empty float takes no room
    return (
        f'<span class="lux-c lux-s{extra}" style="{_CELL}{style}">{states}</span>'
        f'<span class="lux-c lux-p{extra}" style="{_CELL}{style}">{params}</span>'
    )


def _n(n: int) -> str:
    return f"{n:,}"


def _html_row(row: _Row) -> str:
    """A layer without children: its line, with its counts in the columns."""
    text = f"<b>{_e(row.label)}</b> = {_e(short_repr(row.layer))}" if row.label else ""
    text = text or _e(short_repr(row.layer))
    notes = []
    if row.run > 1:
        notes.append(f"{_n(row.each[0])} × {row.run}")
    if row.note:
        notes.append(row.note)
    if notes:
        text += f' <i class="lux-note" style="{_MUTED}">{_e("; ".join(notes))}</i>'
    states = _n(row.states) if row.states else ""
    return (
        f'<div class="lux-row" data-kind="leaf" data-tied="{row.tied}" '
        f'style="padding-left: 1.25em; white-space: nowrap">'
        f"{_cells(_n(row.params), states)}{text}</div>"
    )


def _html_container(row: _Row, opened: set[int]) -> str:
    name = type(row.layer).__name__
    head = f"<b>{_e(row.label)}</b> = {_e(name)}" if row.label else f"<b>{_e(name)}</b>"
    if row.note:
        head += f' <i class="lux-note" style="{_MUTED}">{_e(row.note)}</i>'
    counts = (
        ""
        if not row.label
        else _cells(_n(row.params), _n(row.states) if row.states else "", "lux-sub", f"; {_MUTED}")
    )
    body = []
    extra = row.layer.extra_repr()
    if extra:
        body.append(
            f'<div class="lux-extra" style="padding-left: 1.25em; {_MUTED}">{_e(extra)}</div>'
        )
    if row.own:
        p, s = row.own
        body.append(
            f'<div class="lux-row" data-kind="own" style="padding-left: 1.25em">'
            f"{_cells(_n(p), _n(s) if s else '')}<i>(own tensors)</i></div>"
        )
    for child in row.children:
        if child.is_container:
            body.append(_html_container(child, opened))
        else:
            body.append(_html_row(child))
    is_open = " open" if id(row) in opened else ""
    return (
        f'<details class="lux-node" data-kind="container" data-tied="{row.tied}" '
        f'style="{_DETAILS_STYLE}"{is_open}>'
        f'<summary style="{_SUMMARY_STYLE}">{counts}{head}</summary>'
        f'<div class="lux-body" style="{_BODY_STYLE}">'
        f"{''.join(body)}</div></details>"
    )


def _lines_inside(row: _Row) -> int:
    """Lines an open container adds: its configuration, its own tensors, its children."""
    return bool(row.layer.extra_repr()) + bool(row.own) + len(row.children)


def _opened(root: _Row) -> set[int]:
    """The containers shown open (by ``id``): the root, then level by level (breadth
    first) every container of a level, while the lines shown stay within ``_OPEN_LINES``;
    the others show collapsed, with their subtotals. Siblings open or stay closed alike."""
    opened, shown = {id(root)}, 1 + _lines_inside(root)
    level = [c for c in root.children if c.is_container]
    while level and shown + sum(_lines_inside(row) for row in level) <= _OPEN_LINES:
        shown += sum(_lines_inside(row) for row in level)
        opened.update(id(row) for row in level)
        level = [c for row in level for c in row.children if c.is_container]
    return opened


def layer_html(layer: Layer) -> str:
    """Notebook rendering of ``layer``: a collapsible tree (one ``<details>`` element per
    container), each line with its parameter and state counts in two aligned columns,
    and the totals at the bottom. Shared (tied) parameters are marked as in the text
    printout; every name and configuration value is HTML-escaped."""
    trees = _meta_trees(layer)
    params, states = ltree.count(trees[0]), ltree.count(trees[1])
    header = (
        f'<div class="lux-head" style="{_MUTED}; border-bottom: {_RULE}">'
        f"{_cells('parameters', 'states')}layer</div>"
    )
    total = (
        f'<div class="lux-total" data-kind="total" style="border-top: {_RULE}">'
        f"{_cells(_n(params), _n(states))}<b>Total</b></div>"
    )
    if layer.children():
        row = _rows(layer, trees)
        body = _html_container(row, _opened(row)) + total
    else:
        body = _html_row(_Row("", layer, (params, states)))
    return (
        f'<div class="lux-display lux-layer" style="{_ROOT_STYLE}; display: inline-block; '
        f'min-width: 36em; max-width: 100%; overflow-x: auto">{_CSS}{header}{body}</div>'
    )


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


def _html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[bool],
    footer: str | Sequence[str],
    cls: str,
) -> str:
    """An HTML table in the monospace font, every cell escaped; ``right``: which columns
    are right-aligned (numbers); ``footer``: one line across the table, or a row."""
    aligns = ["right" if r else "left" for r in right]
    pad = "padding: 1px 1.2ch; white-space: pre; border: none; background: transparent"

    def row(cells: Sequence[str], tag: str) -> str:
        return (
            "<tr>"
            + "".join(
                f'<{tag} style="{pad}; text-align: {a}">{_e(c)}</{tag}>'
                for c, a in zip(cells, aligns, strict=True)
            )
            + "</tr>"
        )

    head = f'<thead style="{_MUTED}; border-bottom: {_RULE}">{row(headers, "th")}</thead>'
    body = "".join(row(r, "td") for r in rows)
    if isinstance(footer, str):
        foot = (
            f'<tr><td colspan="{len(headers)}" style="{pad}; text-align: left; {_MUTED}">'
            f"{_e(footer)}</td></tr>"
        )
    else:
        foot = row(footer, "td")
    table = (
        f'<table class="lux-table" style="border-collapse: collapse; border: none; '
        f'margin: 0; color: inherit; font: inherit">'
        f'{head}<tbody>{body}</tbody><tfoot style="border-top: {_RULE}">{foot}</tfoot></table>'
    )
    scroll = "; max-height: 40em; overflow-y: auto" if len(rows) > 60 else ""
    return (
        f'<div class="lux-display {cls}" style="{_ROOT_STYLE}; display: inline-block; '
        f'max-width: 100%; overflow-x: auto{scroll}">{_CSS}{table}</div>'
    )


@dataclass(repr=False)
class Summary:
    """Result of :func:`summary`: ``rows`` plus totals. ``str()`` and ``repr()`` give a
    text table (what a console shows), ``_repr_html_`` an HTML table (what a notebook
    shows), each ending with a ``Total`` row."""

    rows: list[tuple[str, str, str, int, int]]
    total_params: int
    total_states: int
    headers: tuple[str, ...] = field(default=("path", "layer", "output shape", "params", "states"))

    def _body(self) -> tuple[list[tuple[str, str, str, str, str]], tuple[str, ...]]:
        body = [(p, layer, shape, f"{n:,}", f"{s:,}") for p, layer, shape, n, s in self.rows]
        total = ("Total", "", "", f"{self.total_params:,}", f"{self.total_states:,}")
        return body, total

    def __str__(self) -> str:
        from tabulate import tabulate  # imported when first printed: it takes a while

        body, total = self._body()
        return tabulate(
            [*body, total],
            headers=list(self.headers),
            tablefmt="simple",
            disable_numparse=True,
            colalign=("left", "left", "left", "right", "right"),
        )

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        body, total = self._body()
        right = [False, False, False, True, True]
        return _html_table(self.headers, body, right, total, "lux-summary")


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


# --------------------------------------------------------------------------- trees


def _tree_leaves(
    tree: Any, path: str, out: list[tuple[str, Any]], above: frozenset[int] = frozenset()
) -> None:
    """``(dotted path, leaf)`` of every leaf of ``tree`` in dict insertion order, static
    values (:class:`~lux_torch.tree.Static`) and absent leaves included; ``None`` is no leaf.
    A container that holds itself (``d["self"] = d``) is a leaf where it recurs."""
    if isinstance(tree, (dict, list, tuple)) and id(tree) in above:
        out.append((path, tree))
        return
    items: Iterable[tuple[Any, Any]]
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        if tree is not None:
            out.append((path, tree))
        return
    inside = above | {id(tree)}
    for k, v in items:
        _tree_leaves(v, f"{path}.{k}" if path else str(k), out, inside)


def _bytes(n: int) -> str:
    text = f"{n:,} bytes"
    if n < 1024:
        return text
    size, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while size >= 1024 and len(units) > 1:
        size, units = size / 1024, units[1:]
    unit = units[0]
    return f"{text} ({size:.1f} {unit})"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True, repr=False)
class TreeTable:
    """Result of :func:`tree_table`: one row per leaf of a ``ps``/``st`` tree.

    ``rows`` holds ``(path, shape, dtype, device, grad)`` strings (``grad`` is ``"✓"``
    for a tensor that requires grad); a static value (``st``'s ``training`` flag) is a
    row whose shape column shows it. ``str()`` and ``repr()`` give an aligned text table,
    ``_repr_html_`` an HTML one; both end with the count of tensors, their elements and
    their bytes. Tensor values are never shown.
    """

    rows: tuple[tuple[str, str, str, str, str], ...]
    tensors: int
    elements: int
    nbytes: int
    statics: int = 0
    headers: tuple[str, ...] = ("path", "shape", "dtype", "device", "grad")

    @property
    def footer(self) -> str:
        """``"4 tensors, 65 elements, 260 bytes"`` (and the static values, if any)."""
        text = (
            f"{_plural(self.tensors, 'tensor')}, {_plural(self.elements, 'element')}, "
            f"{_bytes(self.nbytes)}"
        )
        if self.statics:
            text += f", {_plural(self.statics, 'static value')}"
        return text

    def __str__(self) -> str:
        if not self.rows:
            return self.footer
        from tabulate import tabulate  # imported when first printed: it takes a while

        table = tabulate(
            list(self.rows), headers=list(self.headers), tablefmt="simple", disable_numparse=True
        )
        return f"{table}\n{self.footer}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        right = [False] * len(self.headers)
        return _html_table(self.headers, self.rows, right, self.footer, "lux-tree-table")


def tree_table(tree: Any) -> TreeTable:
    """Describe a ``ps``/``st`` tree (or any nested dict/list/tuple of tensors): the path,
    shape, dtype and device of every leaf and whether it requires grad, with the counts
    and total bytes -- never a tensor's values. It prints as an aligned text table and
    renders as an HTML table in a notebook.

    Leaves are listed in dict insertion order under their dotted paths (those of
    :func:`lux_torch.tree.paths`). Static values (:class:`~lux_torch.tree.Static`) get a
    row too; a leaf that is neither a tensor nor a static value shows its type only.

    Example:
        >>> model = lux.Chain(lux.Linear(2, 16), lux.Linear(16, 1))  # doctest: +SKIP
        >>> ps, st = lux.setup(0, model)  # doctest: +SKIP
        >>> print(lux.display.tree_table(ps))  # doctest: +SKIP
        path            shape    dtype    device    grad
        --------------  -------  -------  --------  ------
        layer_1.weight  (16, 2)  float32  cpu
        layer_1.bias      (16,)  float32  cpu
        layer_2.weight  (1, 16)  float32  cpu
        layer_2.bias       (1,)  float32  cpu
        4 tensors, 65 elements, 260 bytes
    """
    from .tree import Absent, Static

    leaves: list[tuple[str, Any]] = []
    _tree_leaves(tree, "", leaves)
    rows = []
    tensors = elements = nbytes = statics = 0
    for path, leaf in leaves:
        path = path or "(root)"
        if isinstance(leaf, torch.Tensor):
            tensors += 1
            elements += leaf.numel()
            nbytes += leaf.numel() * leaf.element_size()
            shape = str(tuple(leaf.shape))
            dtype = str(leaf.dtype).removeprefix("torch.")
            grad = "✓" if leaf.requires_grad else ""
            rows.append((path, shape, dtype, str(leaf.device), grad))
        elif isinstance(leaf, Static):
            statics += 1
            rows.append((path, f"Static({leaf.value!r})", "", "", ""))
        elif isinstance(leaf, Absent):
            rows.append((path, "absent", "", "", ""))
        else:
            rows.append((path, "", type(leaf).__name__, "", ""))
    return TreeTable(tuple(rows), tensors, elements, nbytes, statics)


def _is_tensor_tree(obj: Any) -> bool:
    """Whether ``obj`` is a dict whose leaves are all tensors (static and absent values
    allowed), with at least one tensor: what the IPython extension renders as a table."""
    from .tree import Absent, Static

    if not isinstance(obj, dict):
        return False
    leaves: list[tuple[str, Any]] = []
    _tree_leaves(obj, "", leaves)
    kinds = [isinstance(leaf, torch.Tensor) for _, leaf in leaves]
    others = (leaf for _, leaf in leaves if not isinstance(leaf, torch.Tensor))
    return any(kinds) and all(isinstance(leaf, (Static, Absent)) for leaf in others)


# --------------------------------------------------------------------------- IPython


class _TreeFormatter:
    """The ``dict`` formatter that :func:`load_ipython_extension` registers for one MIME
    type: a tree of tensors becomes its :func:`tree_table`; any other dict goes to the
    formatter it replaced (``fallback``), kept here so that unloading restores it."""

    def __init__(self, html_output: bool, fallback: Any) -> None:
        self.html_output = html_output
        self.fallback = fallback

    def __call__(self, obj: Any, printer: Any = None, cycle: bool = False) -> Any:
        if self.html_output:
            if _is_tensor_tree(obj):
                return tree_table(obj)._repr_html_()
            return self.fallback(obj) if self.fallback is not None else None
        # text/plain: IPython's pretty printer calls (obj, printer, cycle); a dict nested
        # in another object (the printer's stack is deeper) keeps its ordinary printout
        top = len(getattr(printer, "stack", ())) <= 1
        if top and not cycle and _is_tensor_tree(obj):
            printer.text(str(tree_table(obj)))
            return None
        if self.fallback is not None:
            return self.fallback(obj, printer, cycle)
        printer.text(repr(obj))
        return None


_MIME_TYPES = (("text/html", True), ("text/plain", False))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lux_torch`` (or ``%load_ext lux_torch.display``): show a dict of
    tensors (``ps``, ``st``, gradients) as its :func:`tree_table` in cell outputs -- an
    HTML table in a notebook, a text table in a console -- instead of a dump of its
    values. Other dicts, and dicts nested in other objects, print as before.

    The formatters live in IPython's formatter registry only (``for_type(dict, ...)`` on
    the ``text/html`` and ``text/plain`` formatters); loading twice is loading once;
    :func:`unload_ipython_extension` restores the formatters they replaced.
    """
    formatters = ipython.display_formatter.formatters
    for mime, html_output in _MIME_TYPES:
        formatter = formatters[mime]
        current = formatter.for_type(dict)
        if isinstance(current, _TreeFormatter):
            current = current.fallback
        formatter.for_type(dict, _TreeFormatter(html_output, current))


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext lux_torch``: remove the formatters of :func:`load_ipython_extension`
    (restoring the ones they replaced); dicts print as IPython prints them again."""
    formatters = ipython.display_formatter.formatters
    for mime, _ in _MIME_TYPES:
        formatter = formatters[mime]
        current = formatter.for_type(dict)
        if not isinstance(current, _TreeFormatter):
            continue
        if current.fallback is None:
            formatter.pop(dict, None)
        else:
            formatter.for_type(dict, current.fallback)
