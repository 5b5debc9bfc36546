"""Rebuild a model layer by layer: :func:`layer_map` (Lux's ``Experimental.layer_map``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..core import Layer, Params, State, map_children, structure_problems
from ..display import short_repr

LayerFn = Callable[[Layer, Params, State, str], tuple[Layer, Params, State]]


def _visits(child: Layer, ps: Any, st: Any, name: str) -> bool:
    """Whether ``child``'s tensors are stored under its name with its own structure."""
    if not (isinstance(ps, Mapping) and isinstance(st, Mapping) and name in ps and name in st):
        return False
    try:
        return not structure_problems(child, ps[name], st[name])
    except Exception:  # a child whose initialisers cannot run on the meta device
        return False


def layer_map(fn: LayerFn, model: Layer, ps: Params, st: State) -> tuple[Layer, Params, State]:
    """Rebuild ``model`` layer by layer: ``fn(layer, ps, st, path) -> (layer, ps, st)``.

    Lux's ``Experimental.layer_map``. Every layer is visited **depth first, children
    before their parent** (post-order), in the order of ``layer.children()``; the root
    comes last with ``path == ""``, others with dotted child names such as
    ``"layer_2.layer_1"``. A parent is visited with its children already replaced and
    ``ps``/``st`` holding the children's new trees, and may replace itself too. Nothing is
    mutated: new dicts are built, tensors ``fn`` does not replace are shared.

    A child is visited when its parameters and state are stored under its name
    (``ps[name]``, ``st[name]``) with the structure and shapes of the child's
    initialisers, as in every built-in container. Children whose tensors are laid out by
    their parent (the reparametrised layer of ``WeightNorm``, ``Ensemble``'s stacked
    members, the inner layer of :class:`Frozen` or :class:`Shared`) are part of the
    parent's visit and are not visited separately — map before freezing or sharing.

    Arguments:
        fn: ``fn(layer, ps, st, path)`` returning the replacement ``(layer, ps, st)``;
            return the arguments unchanged to keep a layer.
        model: the root layer.
        ps, st: its parameters and state.

    Returns:
        ``(new_model, new_ps, new_st)``.

    Raises:
        TypeError: ``fn`` did not return ``(Layer, ps, st)`` (the path is named).

    Example:
        >>> def zero_linear_weights(layer, ps, st, path):
        ...     if isinstance(layer, lux.Linear):
        ...         ps = {**ps, "weight": torch.zeros_like(ps["weight"])}
        ...     return layer, ps, st
        >>> model, ps, st = lux.layer_map(zero_linear_weights, model, ps, st)  # doctest: +SKIP
    """
    if not isinstance(model, Layer):
        raise TypeError(f"layer_map: model must be a lux_torch Layer, got {type(model).__name__}")
    if not callable(fn):
        raise TypeError(f"layer_map: fn must be callable, got {type(fn).__name__}")
    return _map_layer(fn, model, ps, st, "")


def _map_layer(
    fn: LayerFn, layer: Layer, ps: Any, st: Any, path: str
) -> tuple[Layer, Params, State]:
    new_children: dict[str, Layer] = {}
    new_ps, new_st = ps, st
    for name, child in layer.children().items():
        if not _visits(child, ps, st, name):
            continue
        child_path = f"{path}.{name}" if path else name
        c, c_ps, c_st = _map_layer(fn, child, ps[name], st[name], child_path)
        new_children[name] = c
        new_ps = {**new_ps, name: c_ps}
        new_st = {**new_st, name: c_st}
    if new_children:
        layer = map_children(layer, lambda name, child: new_children.get(name, child))
    out = fn(layer, new_ps, new_st, path)
    if not (isinstance(out, tuple) and len(out) == 3 and isinstance(out[0], Layer)):
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        if isinstance(out, tuple) and len(out) == 3:
            got = f"a tuple whose first item is a {type(out[0]).__name__}"
        raise TypeError(
            f"layer_map: fn must return (layer, ps, st); for {path or 'the root'} "
            f"({short_repr(layer)}) it returned {got}"
        )
    return out
