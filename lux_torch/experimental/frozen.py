"""Freeze parameters: :func:`freeze`, :func:`unfreeze` and the :class:`Frozen` wrapper.

Frozen parameters move from ``ps`` to ``st`` (Lux's ``FrozenLayer``), so that gradients,
optimizers and :func:`lux_torch.train_step` never see them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, overload

import torch

from .. import tree as ltree
from ..core import Layer, Params, State, check_structure, init_params
from ..display import short_repr
from ._paths import has_path, listing

Which = str | Iterable[str] | None


def _normalize_which(which: Any, where: str) -> tuple[str, ...] | None:
    if which is None:
        return None
    if isinstance(which, str):
        which = (which,)
    elif isinstance(which, Mapping) or not isinstance(which, Iterable):
        raise TypeError(
            f"{where}: which must be None (every parameter), a dotted path such as "
            f"'layer_1.weight', or an iterable of paths, got {type(which).__name__}"
        )
    paths = tuple(dict.fromkeys(which))  # unique, in the given order
    bad = [p for p in paths if not isinstance(p, str) or not p]
    if bad:
        raise TypeError(f"{where}: every path in which must be a non-empty str, got {bad!r}")
    if not paths:
        raise ValueError(
            f"{where}: which is empty, so nothing would be frozen; pass None to freeze "
            "every parameter"
        )
    return paths


def _selected(path: str, which: tuple[str, ...] | None) -> bool:
    return which is None or any(path == w or path.startswith(w + ".") for w in which)


def _split(
    tree: Mapping[str, Any], which: tuple[str, ...] | None, prefix: str = ""
) -> tuple[Params, Params]:
    """``(trainable, frozen)``: selected subtrees go to ``frozen`` whole; the rest of the
    structure (empty dicts of parameter-free layers included) stays in ``trainable``."""
    trainable: Params = {}
    frozen: Params = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if _selected(path, which):
            frozen[k] = v
        elif isinstance(v, Mapping):
            t, f = _split(v, which, path + ".")
            trainable[k] = t
            if f:
                frozen[k] = f
        else:
            trainable[k] = v
    return trainable, frozen


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> Params:
    """Deep union of two trees with disjoint leaves (the inverse of :func:`_split`)."""
    out = dict(a)
    for k, v in b.items():
        if k in out and isinstance(out[k], Mapping) and isinstance(v, Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _ordered(tree: Any, template: Any) -> Any:
    """``tree`` with its dict keys in the order of ``template`` (extra keys last)."""
    if not isinstance(tree, Mapping) or not isinstance(template, Mapping):
        return tree
    keys = [k for k in template if k in tree] + [k for k in tree if k not in template]
    return {k: _ordered(tree[k], template.get(k)) for k in keys}


class Frozen(Layer):
    """``layer`` with some (or all) of its parameters frozen: moved from ``ps`` to ``st``.

    Lux's ``FrozenLayer``. Frozen tensors are *state*: ``torch.func.grad`` with respect
    to ``ps``, optimizers and :func:`lux_torch.train_step` never see them, so they get no
    gradient and never change. The forward merges them back and calls ``layer`` exactly as
    the unfrozen layer would be called. Usually built with :func:`freeze`.

    Arguments:
        layer: the layer to freeze (any layer, containers included).
        which: ``None`` freezes every parameter; otherwise a dotted path or an iterable of
            dotted paths into ``layer``'s parameters: a tensor (``"layer_1.weight"``) or a
            whole subtree (``"layer_1"``).

    Raises:
        ValueError: a path in ``which`` is not in ``layer``'s parameters (the valid paths
            are listed), or ``which`` is empty.
        TypeError: ``which`` is not a str or an iterable of str.

    Input:
        Whatever ``layer`` accepts.

    Returns:
        ``layer``'s output and ``{"frozen_params": ..., "states": new inner state}``.

    **Parameters**
        ``layer``'s parameter tree without the frozen entries (a subtree whose every
        parameter is frozen is left out; the remaining structure is kept, empty dicts of
        parameter-free children included). ``{}`` when ``which`` is ``None``.

    **States**
        - ``frozen_params``: the frozen entries, nested as in ``layer``'s parameters
          (same names and shapes), returned unchanged by every call.
        - ``states``: ``layer``'s own state tree (mode flags, keys, running statistics).

    ``param_count`` counts the trainable parameters only; the frozen ones count as states.
    With the same key, ``setup(key, Frozen(layer))`` holds exactly the tensors of
    ``setup(key, layer)``.

    Example:
        >>> model = Frozen(Chain(Linear(2, 3), Linear(3, 1)), which=("layer_1",))  # doctest: +SKIP
        >>> ps, st = lux.setup(0, model)  # ps == {"layer_2": {...}}  # doctest: +SKIP
    """

    layer: Layer
    which: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, Layer):
            raise TypeError(f"Frozen: layer must be a lux_torch Layer, got {type(self.layer)}")
        which = _normalize_which(self.which, "Frozen")
        self._set_fields(which=which)
        if which is not None:
            template = init_params(0, self.layer, device="meta")
            unknown = [p for p in which if not has_path(template, p)]
            if unknown:
                raise ValueError(
                    f"Frozen({short_repr(self.layer)}): unknown parameter path(s) "
                    f"{', '.join(map(repr, unknown))} in which; valid paths: {listing(template)}"
                )

    def init_params(self, key: torch.Tensor) -> Params:
        return _split(self.layer.init_params(key), self.which)[0]

    def init_state(self, key: torch.Tensor) -> State:
        frozen = _split(self.layer.init_params(key), self.which)[1]
        return {"frozen_params": frozen, "states": self.layer.init_state(key)}

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        frozen = st["frozen_params"]
        y, inner_st = self.layer(x, _merge(ps, frozen), st["states"])
        return y, {"frozen_params": frozen, "states": inner_st}

    def counted_trees(self, ps: Params, st: State) -> tuple[Params, State]:
        """The wrapped layer's trees as the printout counts them: ``ps`` (the trainable
        parameters) and its state with the frozen parameters merged in (they count as
        states, as in :func:`~lux_torch.state_count`)."""
        return ps, _merge(st["states"], st["frozen_params"])

    def extra_repr(self) -> str:
        template = init_params(0, self.layer, device="meta")
        total = ltree.count(template)
        frozen = ltree.count(_split(template, self.which)[1])
        if self.which is None:
            return f"all {total:,} parameters frozen"
        return f"which={self.which!r}, {frozen:,} of {total:,} parameters frozen"


@overload
def freeze(layer: Layer, /, which: Which = None) -> Frozen: ...


@overload
def freeze(
    layer: Layer, ps: Params, st: State, /, which: Which = None
) -> tuple[Frozen, Params, State]: ...


def freeze(layer: Layer, /, *args: Any, which: Any = None) -> Any:
    """Freeze parameters of ``layer`` (Lux's ``Experimental.freeze``); two forms.

    ``freeze(layer, which=None) -> Frozen``
        A :class:`Frozen` wrapper to initialise with :func:`lux_torch.setup`.

    ``freeze(layer, ps, st, which=None) -> (frozen_layer, ps, st)``
        Also convert *existing* (e.g. trained) ``ps``/``st`` of ``layer`` to the frozen
        layout: the frozen tensors move (the same tensor objects, not copies) from ``ps``
        to ``st["frozen_params"]`` and ``st`` becomes ``st["states"]``. :func:`unfreeze`
        with the same three arguments inverts it exactly.

    Arguments:
        layer: the layer.
        *args: ``ps, st``, ``layer``'s parameters and state (second form only).
        which: ``None`` (every parameter), a dotted path (``"layer_1.weight"`` or a
            subtree such as ``"layer_1"``), or an iterable of paths; positional or keyword.

    Returns:
        The :class:`Frozen` layer, or ``(frozen_layer, ps, st)``.

    Raises:
        ValueError: unknown paths in ``which`` (the valid ones are listed); ``ps``/``st``
            that do not match ``layer`` (the keys are named).
        TypeError: a wrong number or kind of arguments.

    Example:
        >>> frozen, ps, st = lux.freeze(model, ps, st, "layer_1")  # doctest: +SKIP
        >>> model, ps, st = lux.unfreeze(frozen, ps, st)           # doctest: +SKIP
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"freeze: layer must be a lux_torch Layer, got {type(layer).__name__}")
    if args and isinstance(args[0], Mapping):  # freeze(layer, ps, st[, which])
        if len(args) not in (2, 3) or not isinstance(args[1], Mapping):
            raise TypeError(
                "freeze: call freeze(layer, which=None) or freeze(layer, ps, st, which=None); "
                f"got a parameter tree and {len(args) - 1} more positional argument(s)"
            )
        if len(args) == 3:
            which = args[2]
        ps, st = args[0], args[1]
        check_structure(layer, dict(ps), dict(st))
        frozen_layer = Frozen(layer, which)
        trainable, frozen = _split(ps, frozen_layer.which)
        return frozen_layer, trainable, {"frozen_params": frozen, "states": st}
    if len(args) > 1:
        raise TypeError(
            "freeze: call freeze(layer, which=None) or freeze(layer, ps, st, which=None); "
            f"got {len(args) + 1} positional arguments whose second is not a parameter dict"
        )
    if args:
        which = args[0]
    return Frozen(layer, which)


@overload
def unfreeze(layer: Frozen, /) -> Layer: ...


@overload
def unfreeze(layer: Frozen, ps: Params, st: State, /) -> tuple[Layer, Params, State]: ...


def unfreeze(layer: Frozen, /, *args: Any) -> Any:
    """Undo :func:`freeze`: ``unfreeze(frozen) -> layer`` or
    ``unfreeze(frozen, ps, st) -> (layer, ps, st)``.

    The three-argument form merges ``st["frozen_params"]`` back into ``ps`` (the same
    tensor objects, keys in the layer's own order) and returns ``st["states"]`` as the
    state, so ``unfreeze(*freeze(layer, ps, st, which))`` gives back ``ps`` and ``st``.

    Raises:
        TypeError: ``layer`` is not a :class:`Frozen`, or a wrong number of arguments.
        ValueError: ``ps``/``st`` do not match ``layer`` (the keys are named).
    """
    if not isinstance(layer, Frozen):
        raise TypeError(
            f"unfreeze: expected a Frozen layer (from lux.freeze), got {type(layer).__name__}"
        )
    if not args:
        return layer.layer
    if len(args) != 2:
        raise TypeError(
            f"unfreeze: call unfreeze(frozen) or unfreeze(frozen, ps, st), got "
            f"{len(args) + 1} positional arguments"
        )
    ps, st = args
    check_structure(layer, ps, st)
    template = init_params(0, layer.layer, device="meta")
    return layer.layer, _ordered(_merge(ps, st["frozen_params"]), template), st["states"]
