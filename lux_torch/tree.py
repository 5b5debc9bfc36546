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

Two dicts with the same keys in different orders are different *structures*
(:func:`structure`, :func:`flatten` specs), as in ``torch.utils._pytree``; functions that
pair two trees (:func:`map`, :func:`allclose`, :func:`flatten_like`, :func:`stack`) match
dict entries by key, as ``dict`` equality does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import optree
import torch
import torch.utils._pytree as torch_pytree

__all__ = [
    "Static",
    "allclose",
    "count",
    "flatten",
    "flatten_like",
    "leaves",
    "map",
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
