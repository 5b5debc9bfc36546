"""Tree utilities for parameter and state trees.

``ps`` and ``st`` are plain nested :class:`dict` s whose leaves are tensors, so
``torch.func`` and ``torch.compile`` understand them natively. Static values (the
training flag) are :class:`Static` nodes: registered as *leafless* pytree nodes with both
``optree`` and ``torch.utils._pytree``, they live in a tree's structure, not among its
leaves, so ``torch.func.vmap(f)(stacked_ps, stacked_st)`` never sees a non-tensor leaf.

All functions here are thin wrappers over ``optree`` in the ``"lux_torch"`` namespace, in
eager mode and while ``torch.compile`` traces alike (Dynamo traces optree), so specs are
always optree specs. Only :func:`map` and :func:`leaves`, which return no spec, use
``torch.utils._pytree`` while tracing: it flattens in the same order and is cheaper for
Dynamo to trace (a fifth less compile time for a 12-layer training step).

**Leaf order.** Every function here flattens a tree in one order, in every mode (eager,
``torch.compile(fullgraph=True)``, ``torch.func.vmap``, ``make_fx`` traces): **dict
insertion order**, which is also the order of ``torch.utils._pytree`` (what ``torch.func``
uses) and of ``torch.nn.Module.parameters()`` / ``state_dict()``. So ``layer_10`` follows
``layer_9``, a Linear's ``weight`` comes before its ``bias``, :func:`paths` pair with
:func:`leaves`, and ``ravel(ps)[0]`` equals ``parameters_to_vector(module.parameters())``
for the equivalent ``torch.nn`` module. This module switches optree's
``dict_insertion_ordered`` mode on for the ``"lux_torch"`` namespace only, once, at import
(as ``torch.utils._cxx_pytree`` does for its ``"torch"`` namespace); other namespaces and
libraries keep optree's default (sorted keys).

**Surgery** (Equinox's ``tree_at``, ``partition``, ``combine``): :func:`at` returns a copy of
a tree -- or of a layer -- with selected parts replaced; :func:`map_with_path` maps with
each leaf's dotted path; :func:`partition` splits ``ps`` in two trees of the same
structure (the absent leaves are :data:`ABSENT`, a leafless node for torch.func too) and
:func:`combine` joins them. None of them mutates its input.

Two dicts with the same keys in different orders are different *structures*
(:func:`structure`, :func:`flatten` specs), as in ``torch.utils._pytree``; functions that
pair two trees (:func:`map`, :func:`allclose`, :func:`flatten_like`, :func:`stack`) match
dict entries by key, as ``dict`` equality does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import optree
import torch
import torch.utils._pytree as torch_pytree

__all__ = [
    "ABSENT",
    "Absent",
    "Static",
    "allclose",
    "at",
    "combine",
    "count",
    "flatten",
    "flatten_like",
    "leaves",
    "map",
    "map_with_path",
    "partition",
    "paths",
    "ravel",
    "stack",
    "structure",
    "to",
    "unflatten",
    "unstack",
]

NAMESPACE = "lux_torch"

# Dict insertion order for the "lux_torch" namespace, for the life of the process (see the
# module docstring). The context manager is kept referenced: collecting it would undo it.
_INSERTION_ORDER = optree.dict_insertion_ordered(True, namespace=NAMESPACE)
_INSERTION_ORDER.__enter__()

Tree = Any


class Static:
    """An immutable, hashable static value stored in a tree without being a leaf.

    ``bool(Static(True))`` is ``True``; equality and hashing follow the wrapped value.
    Because it flattens to no children, ``vmap``, ``grad`` and ``torch.compile`` treat it
    as part of the tree's structure: changing it changes the structure (and, under
    ``torch.compile``, selects another graph), exactly like a Python constant.

    Example:
        >>> st = {"training": Static(True)}
        >>> bool(st["training"])
        True
    """

    __slots__ = ("value",)
    value: Any

    def __init__(self, value: Any) -> None:
        hash(value)  # static values must be hashable (they key compiled graphs)
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("lux_torch.tree.Static is immutable")

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        return type(other) is Static and other.value == self.value

    def __hash__(self) -> int:
        return hash((Static, self.value))

    def __repr__(self) -> str:
        return f"Static({self.value!r})"

    def __reduce__(self) -> tuple[type, tuple[Any]]:
        return (Static, (self.value,))


optree.register_pytree_node(
    Static,  # type: ignore[arg-type]  # a leafless node is not a Collection
    lambda s: ((), s.value),  # type: ignore[attr-defined]  # typed as a Collection, not Static
    lambda value, _children: Static(value),  # type: ignore[arg-type,return-value]  # as above
    namespace=NAMESPACE,
)
torch_pytree.register_pytree_node(
    Static,
    lambda s: ([], s.value),
    lambda _children, value: Static(value),
    serialized_type_name="lux_torch.tree.Static",
    flatten_with_keys_fn=lambda s: ([], s.value),
)


class Absent:
    """The placeholder :func:`partition` puts where a leaf went to the other tree.

    One instance, :data:`ABSENT`. Like :class:`Static` it is a *leafless* node in both
    optree and ``torch.utils._pytree``, so a partitioned tree keeps its structure and
    ``torch.func.grad``, ``vmap`` and ``torch.compile`` see only the leaves that are present
    (``None`` would not do: ``torch.func`` counts it as a leaf and refuses it).
    """

    __slots__ = ()
    _instance: Absent | None = None

    def __new__(cls) -> Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (Absent, ())


ABSENT = Absent()

optree.register_pytree_node(
    Absent,  # type: ignore[arg-type]  # a leafless node is not a Collection
    lambda a: ((), None),
    lambda _meta, _children: ABSENT,  # type: ignore[arg-type,return-value]  # as for Static
    namespace=NAMESPACE,
)
torch_pytree.register_pytree_node(
    Absent,
    lambda a: ([], None),
    lambda _children, _meta: ABSENT,
    serialized_type_name="lux_torch.tree.Absent",
    flatten_with_keys_fn=lambda a: ([], None),
)


def map(fn: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Apply ``fn`` to every leaf (and the matching leaves of ``rest``); keep the structure.

    Example:
        >>> map(lambda t: t * 2, {"w": torch.ones(2)})
        {'w': tensor([2., 2.])}
    """
    if torch.compiler.is_compiling():  # the same order, cheaper to trace (module docstring)
        return torch_pytree.tree_map(fn, tree, *rest)
    return optree.tree_map(fn, tree, *rest, namespace=NAMESPACE)


def leaves(tree: Tree) -> list[Any]:
    """The leaves of ``tree`` (tensors), in dict insertion order (see the module docstring)."""
    if torch.compiler.is_compiling():  # the same order, cheaper to trace (module docstring)
        return torch_pytree.tree_leaves(tree)
    return optree.tree_leaves(tree, namespace=NAMESPACE)


def flatten(tree: Tree) -> tuple[list[Any], Any]:
    """``(leaves, spec)``; :func:`unflatten` inverts it. Works inside ``torch.compile``.

    Example:
        >>> leaves, spec = flatten({"w": torch.ones(2)})
        >>> unflatten(spec, [t * 2 for t in leaves])
        {'w': tensor([2., 2.])}
    """
    return optree.tree_flatten(tree, namespace=NAMESPACE)


def unflatten(spec: Any, leaves: Iterable[Any]) -> Tree:
    """The tree of structure ``spec`` (from :func:`flatten`) holding ``leaves``."""
    return optree.tree_unflatten(spec, leaves)


def flatten_like(tree: Tree, like: Tree, what: str) -> tuple[list[Any], Any]:
    """:func:`flatten` ``tree`` along the structure of ``like``: its leaves in ``like``'s order.

    Dict entries are matched by key, so ``tree`` may hold ``like``'s keys in another order.
    Returns ``(leaves, spec)`` with ``spec`` the structure of ``like``.

    Raises:
        ValueError: ``"{what} has a different structure from the parameters: missing
            [paths], unexpected [paths]; ..."``.
    """
    leaves, spec = flatten(tree)
    like_spec = structure(like)
    if spec == like_spec:
        return leaves, spec
    reordered = _leaves_along(like_spec, tree)
    if reordered is not None:
        return reordered, like_spec
    got, want = set(paths(tree)), set(paths(like))
    raise ValueError(
        f"{what} has a different structure from the parameters: missing "
        f"{sorted(want - got)}, unexpected {sorted(got - want)}; expected {like_spec}, "
        f"got {spec}"
    )


def _leaves_along(spec: optree.PyTreeSpec, tree: Tree) -> list[Any] | None:
    """The leaves of ``tree`` in the order of ``spec`` (dict entries matched by key), or
    ``None`` when ``tree``'s structure differs from ``spec``'s by more than dict order."""
    try:
        leaves = spec.flatten_up_to(tree)
    except ValueError:
        return None
    if all(optree.tree_is_leaf(leaf, namespace=NAMESPACE) for leaf in leaves):
        return leaves
    return None


def structure(tree: Tree) -> Any:
    """The tree's structure (an ``optree.PyTreeSpec``), static values included."""
    return optree.tree_structure(tree, namespace=NAMESPACE)


def paths(tree: Tree) -> list[str]:
    """Dotted names of the leaves, in the order of :func:`leaves`.

    Example:
        >>> paths({"layer_1": {"weight": torch.ones(1), "bias": torch.ones(1)}})
        ['layer_1.weight', 'layer_1.bias']
    """
    return [".".join(str(k) for k in p) for p in optree.tree_paths(tree, namespace=NAMESPACE)]


def is_inexact(x: Any) -> bool:
    """Whether ``x`` is a floating-point or complex tensor: a leaf that gradients reach and
    that a dtype cast applies to (integer and bool leaves are neither)."""
    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


def count(tree: Tree) -> int:
    """Total number of elements over all leaves."""
    return sum(leaf.numel() for leaf in leaves(tree))


def ravel(tree: Tree) -> tuple[torch.Tensor, Callable[[torch.Tensor], Tree]]:
    """Flatten a tree of tensors into one 1-D vector and return it with its inverse.

    The vector has the promoted dtype of the leaves; ``unravel(flat)`` splits, reshapes and
    casts back to each leaf's own dtype. Both directions are differentiable, so a
    monolithic parameter vector works with ``torch.func``, optimisers and ODE solvers.

    Returns:
        ``(flat, unravel)`` with ``flat.shape == (count(tree),)``.

    Example:
        >>> flat, unravel = ravel({"a": torch.zeros(2, 3), "b": torch.ones(4)})
        >>> flat.shape
        torch.Size([10])
        >>> unravel(flat)["a"].shape
        torch.Size([2, 3])
    """
    flat_leaves, spec = optree.tree_flatten(tree, namespace=NAMESPACE)
    shapes = [leaf.shape for leaf in flat_leaves]
    dtypes = [leaf.dtype for leaf in flat_leaves]
    sizes = [leaf.numel() for leaf in flat_leaves]
    flat = torch.cat([leaf.reshape(-1) for leaf in flat_leaves]) if flat_leaves else torch.zeros(0)
    total = flat.numel()
    # the tree with each leaf's position: a traced unravel rebuilds from it, because Dynamo
    # cannot unflatten a spec made outside the trace (an eager ravel, a compiled loss)
    positions = optree.tree_unflatten(spec, range(len(flat_leaves)))

    def unravel(vector: torch.Tensor) -> Tree:
        if vector.shape != (total,):
            raise ValueError(
                f"unravel: expected a 1-D tensor of {total} elements, got shape "
                f"{tuple(vector.shape)}"
            )
        parts = torch.split(vector, sizes) if sizes else ()
        rebuilt = [p.reshape(s).to(d) for p, s, d in zip(parts, shapes, dtypes, strict=True)]
        if torch.compiler.is_compiling():
            return optree.tree_map(lambda i: rebuilt[i], positions, namespace=NAMESPACE)
        return optree.tree_unflatten(spec, rebuilt)

    return flat, unravel


def stack(trees: Sequence[Tree], dim: int = 0) -> Tree:
    """Stack equally-structured trees leaf by leaf (an ensemble for ``torch.func.vmap``).

    Example:
        >>> s = stack([{"w": torch.zeros(3)}, {"w": torch.ones(3)}])
        >>> s["w"].shape
        torch.Size([2, 3])
    """
    trees = list(trees)
    if not trees:
        raise ValueError("lux_torch.tree.stack: needs at least one tree")
    return optree.tree_map(
        lambda *xs: torch.stack(xs, dim), trees[0], *trees[1:], namespace=NAMESPACE
    )


def unstack(tree: Tree, dim: int = 0) -> list[Tree]:
    """Inverse of :func:`stack`: split every leaf along ``dim`` into a list of trees."""
    flat, spec = optree.tree_flatten(tree, namespace=NAMESPACE)
    if not flat:
        raise ValueError("lux_torch.tree.unstack: the tree has no leaves")
    sizes = {leaf.shape[dim] for leaf in flat}
    if len(sizes) != 1:
        raise ValueError(
            f"lux_torch.tree.unstack: leaves disagree on the size of dim {dim}: {sorted(sizes)}"
        )
    columns = [leaf.unbind(dim) for leaf in flat]
    return [optree.tree_unflatten(spec, list(col)) for col in zip(*columns, strict=True)]


def to(
    tree: Tree,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tree:
    """Move every leaf to ``device``; cast *floating-point* leaves to ``dtype``.

    Integer leaves (random keys, counters) keep their dtype, so ``to(st, dtype=float64)``
    never corrupts a key.
    """

    def move(leaf: torch.Tensor) -> torch.Tensor:
        if dtype is not None and is_inexact(leaf):
            return leaf.to(device=device, dtype=dtype)
        return leaf.to(device=device) if device is not None else leaf

    return map(move, tree)


def allclose(a: Tree, b: Tree, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """``True`` when ``a`` and ``b`` have the same structure and all leaves are close.

    Dict entries are matched by key (as ``dict`` equality does), whatever their order.
    """
    leaves_a, spec_a = optree.tree_flatten(a, namespace=NAMESPACE)
    leaves_b, spec_b = optree.tree_flatten(b, namespace=NAMESPACE)
    if spec_a != spec_b:
        reordered = _leaves_along(spec_a, b)
        if reordered is None:
            return False
        leaves_b = reordered
    return all(
        x.shape == y.shape and torch.allclose(x, y, rtol=rtol, atol=atol)
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def flatten_with_paths(tree: Tree) -> list[tuple[str, Any]]:
    """``[(dotted_path, leaf), ...]`` in the order of :func:`leaves`."""
    return list(zip(paths(tree), leaves(tree), strict=True))


def key_paths(tree: Tree, prefix: str = "") -> Iterable[str]:
    """Dotted paths of every dict entry that is a leaf or a static value (for diffs)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from key_paths(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


# --------------------------------------------------------------------------- surgery
#
# ``at`` (Equinox's ``tree_at``), ``map_with_path``, ``partition`` / ``combine`` (Equinox's
# filters). Every function returns new dicts (and new layers) and never mutates its input.


class _Selector:
    """What a ``where`` function of :func:`at` receives: it records the attribute and index
    accesses made on it (``m.layer_1.weight``, ``ps["layer_1"]["weight"]``) as a path."""

    __slots__ = ("_steps",)
    _steps: tuple[Any, ...]

    def __init__(self, steps: tuple[Any, ...]) -> None:
        object.__setattr__(self, "_steps", steps)

    def __getattr__(self, name: str) -> _Selector:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Selector((*self._steps, name))

    def __getitem__(self, key: Any) -> _Selector:
        return _Selector((*self._steps, key))

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "lux_torch.tree.at: a where function may only select by attribute and index "
            "(lambda m: m.layer_1.weight, lambda ps: ps['layer_1']['weight']); it cannot "
            "call, iterate, compare or test what it selects"
        )

    __call__ = __iter__ = __len__ = __bool__ = __eq__ = __contains__ = _refuse
    __hash__ = None  # type: ignore[assignment]  # unhashable, like the tree it stands for


_UNSET: Any = _Selector(())  # ``at``'s default ``replace``: no value given


def _constant(value: Any) -> Callable[[Any], Any]:
    return lambda _old: value


def _dotted(steps: Sequence[Any]) -> str:
    return ".".join(str(s) for s in steps) or "<root>"


def _is_layer(node: Any) -> bool:
    from .core import Layer

    return isinstance(node, Layer)


def _layer_location(layer: Any, name: Any) -> tuple[Any, ...] | None:
    """Where ``name`` (a field or a child's name) lives in ``layer``: ``(field,)`` or
    ``(field, key_or_index)``; ``None`` if neither."""
    import dataclasses

    fields = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)}
    if name in fields:
        return (name,)
    for field_name, value in fields.items():  # a child named after a collection entry
        if isinstance(value, Mapping) and name in value and _is_layer(value[name]):
            return (field_name, name)
        if isinstance(value, tuple) and value and all(_is_layer(v) for v in value):
            for i in range(len(value)):
                if name == f"{field_name}_{i + 1}":
                    return (field_name, i)
    return None


def _step(node: Any, step: Any) -> tuple[tuple[Any, ...], Any] | None:
    """``(canonical steps, child)`` for one step into ``node``; ``None`` when absent."""
    if _is_layer(node):
        location = _layer_location(node, step)
        if location is None:
            return None
        child = getattr(node, location[0])
        return location, child if len(location) == 1 else child[location[1]]
    if isinstance(node, Mapping):
        return ((step,), node[step]) if step in node else None
    if isinstance(node, (tuple, list)):
        index = int(step) if isinstance(step, str) and step.lstrip("-").isdigit() else step
        if isinstance(index, int) and -len(node) <= index < len(node):
            return (index % len(node),), node[index]
    return None


def _choices(node: Any) -> str:
    import dataclasses

    if _is_layer(node):
        names = [f.name for f in dataclasses.fields(node)] + list(node.children())
        return f"fields and children {list(dict.fromkeys(names))}"
    if isinstance(node, Mapping):
        return f"keys {list(node)}"
    if isinstance(node, (tuple, list)):
        return f"indices 0..{len(node) - 1}"
    return f"nothing: it is a {type(node).__name__}"


def _resolve(tree: Tree, steps: Sequence[Any]) -> tuple[Any, ...]:
    """The canonical path of ``steps`` in ``tree`` (a child's name becomes its field and
    key), raising ``KeyError`` naming the first step that does not exist."""
    node, out = tree, ()
    for i, step in enumerate(steps):
        found = _step(node, step)
        if found is None:
            raise KeyError(
                f"lux_torch.tree.at: {_dotted(steps[: i + 1])!r} does not exist: "
                f"{_dotted(steps[:i])} has {_choices(node)}"
            )
        canonical, node = found
        out = (*out, *canonical)
    return out


def _replaced(node: Any, path: tuple[Any, ...], fn: Callable[[Any], Any]) -> Any:
    """A copy of ``node`` with ``fn(old)`` at the canonical ``path`` (never mutating)."""
    if not path:
        return fn(node)
    head, rest = path[0], path[1:]
    if _is_layer(node):
        from .core import rebuild_layer

        return rebuild_layer(node, **{head: _replaced(getattr(node, head), rest, fn)})
    if isinstance(node, Mapping):
        out = dict(node)  # a layer's read-only mapping is frozen again by its rebuild
        out[head] = _replaced(node[head], rest, fn)
        return out
    items = list(node)
    items[head] = _replaced(items[head], rest, fn)
    return type(node)(items)


def at(
    where: Callable[[Any], Any] | str | Sequence[str],
    tree: Tree,
    *,
    replace: Any = _UNSET,
    replace_fn: Callable[[Any], Any] | None = None,
) -> Tree:
    """A copy of ``tree`` with the selected parts replaced (Equinox's ``tree_at``).

    ``tree`` is a parameter or state tree, or a :class:`lux_torch.Layer` (then the selected
    part is a field or a child layer, and the layers on the way are rebuilt: their
    constructor checks run again). Nothing is mutated; unselected parts are shared.

    Arguments:
        where: selects what to replace, either a function of ``tree`` that returns a part
            or a tuple of parts, written with attribute and index access only
            (``lambda ps: ps["layer_1"]["weight"]``, ``lambda m: m.layer_2.out_features``,
            ``lambda m: (m.layer_1, m.layer_3)``), or a dotted path (``"layer_1.weight"``),
            or a sequence of them. In a layer a name is a field or a child's name
            (``Chain``'s ``layer_1``); in a tuple an index.
        tree: a tree of tensors (``ps``, ``st``) or a layer.
        replace: the new value, or, when ``where`` selects several parts, a sequence with
            one new value per part.
        replace_fn: instead of ``replace``: ``new = replace_fn(old)`` for every part.

    Returns:
        The new tree (or layer).

    Raises:
        TypeError: neither or both of ``replace`` / ``replace_fn``; a ``where`` function
            that does more than select, or returns something it did not select.
        KeyError: a path that does not exist (what exists there is listed).
        ValueError: a part selected twice or inside another selected part; ``replace``
            whose length differs from the number of parts.

    Example:
        >>> ps = {"layer_1": {"weight": torch.ones(2), "bias": torch.zeros(2)}}
        >>> at(lambda p: p["layer_1"]["bias"], ps, replace=torch.ones(2))["layer_1"]["bias"]
        tensor([1., 1.])
        >>> at("layer_1.weight", ps, replace_fn=lambda w: 2 * w)["layer_1"]["weight"]
        tensor([2., 2.])
    """
    no_replace = replace is _UNSET
    if no_replace == (replace_fn is None):
        raise TypeError("lux_torch.tree.at: give exactly one of replace= and replace_fn=")
    if isinstance(where, str):
        selected: Any = _Selector(tuple(where.split(".")) if where else ())
    elif callable(where):
        selected = where(_Selector(()))
    elif isinstance(where, Sequence):
        selected = tuple(_Selector(tuple(w.split("."))) for w in where)
    else:
        raise TypeError(
            f"lux_torch.tree.at: where must be a function, a dotted path or a "
            f"sequence of paths, got {type(where).__name__}"
        )
    several = isinstance(selected, (tuple, list))
    parts = list(selected) if several else [selected]
    if not all(isinstance(p, _Selector) for p in parts):
        raise TypeError(
            "lux_torch.tree.at: where must return parts of its argument (or a tuple of "
            f"them), got {type(selected).__name__}"
        )
    paths_ = [_resolve(tree, p._steps) for p in parts]
    for i, p in enumerate(paths_):
        for j, q in enumerate(paths_):
            if i != j and q[: len(p)] == p:
                raise ValueError(
                    f"lux_torch.tree.at: {_dotted(parts[j]._steps)!r} is selected twice or "
                    f"lies inside {_dotted(parts[i]._steps)!r}; select each part once"
                )
    if replace_fn is not None:
        fns = [replace_fn] * len(parts)
    elif several:
        values = list(replace)
        if len(values) != len(parts):
            raise ValueError(
                f"lux_torch.tree.at: where selects {len(parts)} parts but replace has "
                f"{len(values)} values"
            )
        fns = [_constant(v) for v in values]
    else:
        fns = [_constant(replace)]
    for path, fn in zip(paths_, fns, strict=True):
        tree = _replaced(tree, path, fn)
    return tree


def map_with_path(fn: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Like :func:`map`, with the leaf's dotted path first: ``fn(path, leaf, *rest_leaves)``.

    Example:
        >>> map_with_path(lambda p, t: t * 0 if p.endswith("bias") else t,
        ...               {"weight": torch.ones(1), "bias": torch.ones(1)})
        {'weight': tensor([1.]), 'bias': tensor([0.])}
    """
    return optree.tree_map_with_path(
        lambda p, *xs: fn(".".join(str(k) for k in p), *xs), tree, *rest, namespace=NAMESPACE
    )


def partition(tree: Tree, predicate: Callable[[Any], bool] | Tree) -> tuple[Tree, Tree]:
    """Split ``tree`` in two trees of the same structure (Equinox's ``partition``).

    The first holds the leaves for which ``predicate`` is ``True``, the second the others;
    an absent leaf is :data:`ABSENT`, a leafless node for ``torch.func``, ``torch.compile``
    and optree alike, so ``torch.func.grad(lambda a: loss(combine(a, b)))(a)`` differentiates
    with respect to the selected leaves only. Static values (mode flags) stay in both.

    Arguments:
        tree: a tree of tensors.
        predicate: ``predicate(leaf) -> bool``, or a tree of Python bools with the structure
            of ``tree`` or a prefix of it (``{"encoder": True, "head": False}``), e.g. from
            :func:`map_with_path`.

    Returns:
        ``(selected, rest)``; :func:`combine` inverts it.

    Raises:
        TypeError: the predicate gives something other than a Python ``bool``.
        ValueError: a predicate tree that is not a prefix of ``tree``'s structure.

    Example:
        >>> a, b = partition({"w": torch.ones(2, 2), "b": torch.ones(2)}, lambda t: t.ndim > 1)
        >>> a["b"] is ABSENT and b["w"] is ABSENT
        True
    """
    flat, spec = flatten(tree)
    if callable(predicate):
        flags = [predicate(leaf) for leaf in flat]
    else:
        try:
            flags = optree.broadcast_prefix(predicate, tree, namespace=NAMESPACE)
        except ValueError as err:
            raise ValueError(
                f"lux_torch.tree.partition: the predicate tree is not a prefix of the tree's "
                f"structure ({err})"
            ) from None
    bad = [p for p, f in zip(paths(tree), flags, strict=True) if not isinstance(f, bool)]
    if bad:
        raise TypeError(
            "lux_torch.tree.partition: the predicate must give a Python bool for every leaf; "
            f"it did not for {bad[:10]}"
        )
    selected = unflatten(spec, [x if f else ABSENT for x, f in zip(flat, flags, strict=True)])
    rest = unflatten(spec, [ABSENT if f else x for x, f in zip(flat, flags, strict=True)])
    return selected, rest


def combine(*trees: Tree) -> Tree:
    """The inverse of :func:`partition`: at each position the leaf of the tree that has one.

    Raises:
        ValueError: the trees' structures differ (:data:`ABSENT` counted as a leaf), or two trees
            both have a leaf at the same position (they would silently override each other).

    Example:
        >>> t = {"w": torch.ones(2, 2), "b": torch.ones(2)}
        >>> combine(*partition(t, lambda x: x.ndim > 1))["b"]
        tensor([1., 1.])
    """
    if not trees:
        raise ValueError("lux_torch.tree.combine: needs at least one tree")
    flats = [
        optree.tree_flatten(t, is_leaf=lambda x: x is ABSENT, namespace=NAMESPACE) for t in trees
    ]
    spec = flats[0][1]
    if any(s != spec for _, s in flats[1:]):
        raise ValueError(
            "lux_torch.tree.combine: the trees have different structures; combine takes "
            "the outputs of partition of one tree"
        )
    out: list[Any] = []
    both: list[int] = []
    for i, column in enumerate(zip(*(leaves_ for leaves_, _ in flats), strict=True)):
        present = [x for x in column if x is not ABSENT]
        if len(present) > 1:
            both.append(i)
        out.append(present[0] if present else ABSENT)
    if both:
        names = [".".join(map(str, p)) for p in spec.paths()]
        raise ValueError(
            "lux_torch.tree.combine: more than one tree has a leaf at "
            f"{[names[i] for i in both][:10]}; partition's outputs never overlap"
        )
    return optree.tree_unflatten(spec, out)
