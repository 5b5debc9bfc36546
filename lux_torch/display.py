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
    drops the state of its ``p = 0`` dropouts); the child's own trees where the parent's
    have no entry under the child's name."""
    ps, st = trees
    if isinstance(ps, dict) and isinstance(st, dict) and name in ps and name in st:
        return ps[name], st[name]
    child = layer.children()[name]
    return init_params(0, child, device="meta"), init_state(0, child, device="meta")


def _lines(layer: Layer, depth: int, trees: tuple[Any, Any] | None = None) -> list[tuple[str, str]]:
    """``(code, comment)`` lines of ``layer`` rendered at ``depth`` (header excluded);
    ``trees``: its ``(ps, st)`` on the meta device, if known."""
    if trees is None:
        trees = (init_params(0, layer, device="meta"), init_state(0, layer, device="meta"))
    pad = _INDENT * (depth + 1)
    out: list[tuple[str, str]] = []
    extra = layer.extra_repr()
    if extra:
        out.append((f"{pad}{extra},", ""))
    items = list(layer.children().items())
    i = 0
    while i < len(items):
        name, child = items[i]
        j = i + 1
        while j < len(items) and items[j][1] == child and not items[j][1].children():
            j += 1
        run = j - i
        if run >= 3:
            label = f"{name} … {items[j - 1][0]}"
        else:
            label, j, run = name, i + 1, 1
        child_trees = _child_trees(layer, trees, name)
        if child.children():
            out.append((f"{pad}{label} = {type(child).__name__}(", ""))
            out.extend(_lines(child, depth + 1, child_trees))
            out.append((f"{pad}),", ""))
        else:
            p, s = ltree.count(child_trees[0]), ltree.count(child_trees[1])
            if run > 1:
                comment = f"# {p * run:,} ({p:,} × {run}) parameters"
                if s:
                    comment += f", plus {s * run:,} states"
            else:
                comment = _counts_comment(p, s)
            out.append((f"{pad}{label} = {short_repr(child)},", comment))
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
    """Mutable call log shared by the recorders of one ``summary`` run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []


class _Recorder(Layer):
    """Transparent wrapper that logs the output of ``inner`` under ``path``."""

    inner: Layer
    path: str
    log: _Log

    def __call__(self, x: Any, ps: Any, st: Any) -> tuple[Any, Any]:
        y, new_st = self.inner(x, ps, st)
        self.log.calls.append((self.path, y))
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
    is ``""`` (shown as ``(model)``). Parameter and state counts come from ``ps``/``st``.
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
    for path, y in log.calls:
        outputs.setdefault(path, []).append(y)
    rows = []
    for path, layer in order:
        ys = outputs.get(path, [])
        shape = _shape(ys[-1]) if ys else "not called"
        if len(ys) > 1:
            shape += f" (×{len(ys)} calls)"
        sub_ps, sub_st = _subtree(ps, path), _subtree(st, path)
        n_ps = ltree.count(sub_ps) if sub_ps is not None else param_count(layer)
        n_st = ltree.count(sub_st) if sub_st is not None else state_count(layer)
        rows.append((path or "(model)", short_repr(layer), shape, n_ps, n_st))
    return Summary(rows, ltree.count(ps), ltree.count(st))
