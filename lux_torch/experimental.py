"""Parameter manipulation (Lux's ``Experimental`` module): freeze, share, map, debug.

Four tools that rewrite a model and its trees without touching any built-in layer:

- :func:`freeze` / :func:`unfreeze`: move some (or all) parameters of a layer into its
  *state*, so that gradients, optimizers and :func:`lux_torch.train_step` never see them
  (the :class:`Frozen` wrapper, Lux's ``FrozenLayer``).
- :func:`share_parameters`: tie parameters by their dotted paths. Through the
  :class:`Shared` wrapper every tied group is stored once, so its gradient is the sum of
  the gradients of its uses and optimizer updates keep it tied.
- :func:`layer_map`: rebuild a model layer by layer, ``fn(layer, ps, st, path)``.
- :func:`debug`: a copy of the model whose every layer checks its inputs, outputs and the
  gradients of its backward for NaN/Inf and names its path (Lux's ``DebugLayer``).

Paths are the dotted names of :func:`lux_torch.tree.paths`: ``"layer_1.weight"`` is a
tensor, ``"layer_1"`` the whole subtree of the child ``layer_1``.

Example:
    >>> model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 1))
    >>> frozen = lux.freeze(model, "layer_1")          # layer_1 is not trained
    >>> ps, st = lux.setup(0, frozen)                   # ps: only layer_2's tensors
    >>> tied = lux.experimental.Shared(lux.Chain(lux.Linear(4, 4), lux.Linear(4, 4)),
    ...                                [("layer_1", "layer_2")])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, overload

import optree
import torch

from . import tree as ltree
from .core import (
    Layer,
    Params,
    State,
    check_structure,
    init_params,
    map_children,
    structure_problems,
)
from .display import short_repr

__all__ = [
    "DebugLayer",
    "Frozen",
    "Shared",
    "debug",
    "freeze",
    "layer_map",
    "share_parameters",
    "unfreeze",
]

Which = str | Iterable[str] | None
Sharing = Sequence[Sequence[str]]
LayerFn = Callable[[Layer, Params, State, str], tuple[Layer, Params, State]]

_MAX_LISTED = 40  # paths listed in an error message


# --------------------------------------------------------------------------- dotted paths


def _all_paths(tree: Any, prefix: str = "") -> list[str]:
    """Every dict entry of ``tree`` by dotted path (subtrees and leaves), depth first."""
    out: list[str] = []
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            path = f"{prefix}{k}"
            out.append(path)
            out += _all_paths(v, path + ".")
    return out


def _listing(tree: Any) -> str:
    paths = _all_paths(tree)
    shown = ", ".join(paths[:_MAX_LISTED])
    more = f", ... ({len(paths) - _MAX_LISTED} more)" if len(paths) > _MAX_LISTED else ""
    return (shown + more) if paths else "(none: the layer has no parameters)"


def _has(tree: Any, path: str) -> bool:
    node = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _get(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split("."):
        node = node[part]
    return node


def _set(tree: Params, path: str, value: Any) -> Params:
    """A copy of ``tree`` with ``value`` at ``path`` (dicts on the way copied, not mutated)."""
    head, _, rest = path.partition(".")
    out = dict(tree)
    out[head] = _set(out.get(head, {}), rest, value) if rest else value
    return out


def _remove(tree: Params, path: str) -> Params:
    """A copy of ``tree`` without the entry at ``path`` (its parent dict stays, maybe empty)."""
    head, _, rest = path.partition(".")
    out = dict(tree)
    if rest:
        out[head] = _remove(out[head], rest)
    else:
        del out[head]
    return out


def _describe(tree: Any) -> str:
    """``shape (4, 3)`` for a tensor; ``{'bias': (4,), 'weight': (4, 3)}`` for a subtree."""
    if isinstance(tree, torch.Tensor):
        return f"shape {tuple(tree.shape)}, {str(tree.dtype).replace('torch.', '')}"
    if isinstance(tree, Mapping):
        leaves = dict(zip(ltree.paths(tree), ltree.leaves(tree), strict=True))
        return "{" + ", ".join(f"{p}: {tuple(t.shape)}" for p, t in leaves.items()) + "}"
    return type(tree).__name__


def _signature(tree: Any) -> Any:
    """What must agree between tied entries: structure, shapes and dtypes."""
    if isinstance(tree, torch.Tensor):
        return ("tensor", tuple(tree.shape), tree.dtype)
    leaves, spec = optree.tree_flatten(tree, namespace=ltree.NAMESPACE)
    return (spec, tuple((tuple(t.shape), t.dtype) for t in leaves))


# --------------------------------------------------------------------------- freeze


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
            unknown = [p for p in which if not _has(template, p)]
            if unknown:
                raise ValueError(
                    f"Frozen({short_repr(self.layer)}): unknown parameter path(s) "
                    f"{', '.join(map(repr, unknown))} in which; valid paths: {_listing(template)}"
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
        ps, st: ``layer``'s parameters and state (second form only).
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


# --------------------------------------------------------------------------- sharing


def _normalize_sharing(sharing: Any, where: str) -> tuple[tuple[str, ...], ...]:
    example = "e.g. [('layer_1', 'layer_3')] or [('encoder.weight', 'decoder.weight')]"
    if isinstance(sharing, (str, Mapping)) or not isinstance(sharing, Iterable):
        raise TypeError(
            f"{where}: sharing must be a sequence of groups of dotted paths ({example}), "
            f"got {type(sharing).__name__}"
        )
    groups = list(sharing)
    if groups and all(isinstance(g, str) for g in groups):
        raise TypeError(
            f"{where}: sharing must be a sequence of groups ({example}); got a flat "
            f"sequence of paths {tuple(groups)!r}: wrap it as [{tuple(groups)!r}]"
        )
    out: list[tuple[str, ...]] = []
    for group in groups:
        if isinstance(group, str) or not isinstance(group, Iterable):
            raise TypeError(f"{where}: every group must be a sequence of paths, got {group!r}")
        paths = tuple(group)
        if not all(isinstance(p, str) and p for p in paths):
            raise TypeError(f"{where}: every path must be a non-empty str, got {paths!r}")
        if len(paths) < 2:
            raise ValueError(f"{where}: a group ties two or more paths, got {paths!r}")
        out.append(paths)
    seen: dict[str, tuple[str, ...]] = {}
    for group in out:
        for p in group:
            for q, other in seen.items():
                if p == q or p.startswith(q + ".") or q.startswith(p + "."):
                    raise ValueError(
                        f"{where}: {p!r} (group {group!r}) overlaps {q!r} (group {other!r}); "
                        "each parameter may belong to one group only"
                    )
            seen[p] = group
    return tuple(out)


def _check_groups(tree: Mapping[str, Any], groups: tuple[tuple[str, ...], ...], where: str) -> None:
    """Every path exists, and tied entries agree in structure, shapes and dtypes."""
    unknown = [p for g in groups for p in g if not _has(tree, p)]
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter path(s) {', '.join(map(repr, unknown))}; "
            f"valid paths: {_listing(tree)}"
        )
    for group in groups:
        first = _get(tree, group[0])
        for p in group[1:]:
            other = _get(tree, p)
            if _signature(other) != _signature(first):
                raise ValueError(
                    f"{where}: cannot tie {group[0]!r} ({_describe(first)}) and {p!r} "
                    f"({_describe(other)}): tied parameters must have the same structure, "
                    "shapes and dtypes"
                )


def _with_new_parameters(
    tree: Params, groups: tuple[tuple[str, ...], ...], new: Any, where: str
) -> Params:
    """``tree`` with each group's first entry replaced by ``new[i]`` (shapes checked)."""
    if new is None:
        return tree
    new = list(new)
    if len(new) != len(groups):
        raise ValueError(
            f"{where}: new_parameters has {len(new)} entries, sharing has {len(groups)} "
            "groups; give one tensor (or subtree) per group"
        )
    for group, value in zip(groups, new, strict=True):
        old = _get(tree, group[0])
        if _signature(value) != _signature(old):
            raise ValueError(
                f"{where}: the new parameters for group {group!r} have {_describe(value)}, "
                f"the tied entries have {_describe(old)}"
            )
        tree = _set(tree, group[0], value)
    return tree


class Shared(Layer):
    """``layer`` with tied parameters: each group of paths stored once, used everywhere.

    Every group of dotted paths (tensors or whole subtrees with identical structure,
    shapes and dtypes) is stored *once*, at its first path; the forward places that one
    tensor at every path of the group and calls ``layer``. Autograd therefore gives the
    stored tensor the **sum of the gradients of all its uses**, and an optimizer update
    (``lux.optim``, ``torch.optim``, :func:`lux_torch.train_step`) keeps the group tied,
    because there is only one tensor to update. Usually built with
    :func:`share_parameters`.

    Arguments:
        layer: the layer whose parameters to tie.
        sharing: a sequence of groups, each a sequence of two or more dotted paths into
            ``layer``'s parameters: ``[("layer_1", "layer_3")]`` ties two whole layers,
            ``[("encoder.weight", "decoder.weight")]`` two tensors. A path belongs to at
            most one group and no path lies inside another.

    Raises:
        ValueError: unknown paths (the valid ones are listed), overlapping paths, or tied
            entries whose structure, shapes or dtypes differ (both paths and shapes named).
        TypeError: ``sharing`` is not a sequence of groups of str.

    Input:
        Whatever ``layer`` accepts.

    Returns:
        ``layer``'s output and its new state.

    **Parameters**
        ``layer``'s parameter tree without the entries of each group but its first (the
        dicts that held them remain, possibly empty). ``param_count`` counts a tied
        tensor once. :meth:`expand` gives the full tree ``layer`` is called with.

    **States**
        ``layer``'s state, unchanged.

    Example:
        >>> model = Shared(Chain(Linear(4, 4, activation=torch.tanh), Linear(4, 4)),
        ...                [("layer_1.weight", "layer_2.weight")])  # doctest: +SKIP
        >>> ps, st = lux.setup(0, model)   # ps["layer_2"] == {"bias": ...}  # doctest: +SKIP
    """

    layer: Layer
    sharing: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.layer, Layer):
            raise TypeError(f"Shared: layer must be a lux_torch Layer, got {type(self.layer)}")
        where = f"Shared({short_repr(self.layer)})"
        groups = _normalize_sharing(self.sharing, where)
        self._set_fields(sharing=groups)
        _check_groups(init_params(0, self.layer, device="meta"), groups, where)

    def init_params(self, key: torch.Tensor) -> Params:
        return self.compact(self.layer.init_params(key))

    def init_state(self, key: torch.Tensor) -> State:
        return self.layer.init_state(key)

    def compact(self, full: Params) -> Params:
        """The stored layout of the full parameter tree ``full`` of ``layer``: every path of
        a group but its first removed (the first path's values are kept)."""
        for group in self.sharing:
            for p in group[1:]:
                full = _remove(full, p)
        return full

    def expand(self, ps: Params) -> Params:
        """The full parameter tree of ``layer``: each group's tensor at all of its paths.

        Dicts on the way are new; the tensors are the same objects (no copy), so the
        gradients of every use flow into the one stored tensor.
        """
        for group in self.sharing:
            value = _get(ps, group[0])
            for p in group[1:]:
                ps = _set(ps, p, value)
        return ps

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        return self.layer(x, self.expand(ps), st)

    def extra_repr(self) -> str:
        return f"sharing={self.sharing!r}"


@overload
def share_parameters(ps: Params, sharing: Sharing, /, new_parameters: Any = None) -> Params: ...


@overload
def share_parameters(
    model: Layer, ps: Params, sharing: Sharing, /, new_parameters: Any = None
) -> tuple[Shared, Params]: ...


def share_parameters(first: Any, /, *args: Any, new_parameters: Any = None) -> Any:
    """Tie parameters by dotted paths (Lux's ``Experimental.share_parameters``); two forms.

    ``share_parameters(model, ps, sharing, new_parameters=None) -> (shared_model, ps)``
        **Use this one to train tied weights.** Returns the :class:`Shared` wrapper and
        ``ps`` in its layout (each group stored once, at its first path). Under
        ``torch.func.grad``, ``torch.autograd`` and :func:`lux_torch.train_step` the stored
        tensor receives the sum of the gradients of all its uses, and stays tied through
        optimizer updates. ``st`` is unchanged.

    ``share_parameters(ps, sharing, new_parameters=None) -> ps``
        Lux's form: a copy of ``ps`` in which every path of a group holds the *same*
        tensor object as the group's first path. The values are tied, and a model called
        with these ``ps`` uses one tensor — but a function transform or optimizer over
        the tree sees each path as a separate leaf: ``torch.func.grad`` returns one
        gradient per path (not their sum) and an update unties them. Fine for inference,
        initialisation or hand-written loops that re-tie; train with the first form.

    Arguments:
        model: the layer (first form).
        ps: its parameters; the values of each group's first path are kept.
        sharing: groups of dotted paths, e.g. ``[("layer_1", "layer_3")]`` (whole
            subtrees) or ``[("encoder.weight", "decoder.weight")]`` (tensors).
        new_parameters: optional, one tensor (or subtree) per group to use instead of the
            first path's values (Lux's ``new_parameters``).

    Returns:
        ``(Shared(model, sharing), ps)``, or the tied ``ps`` (second form).

    Raises:
        ValueError: unknown paths (valid ones listed), overlapping groups, or tied entries
            whose structure, shapes or dtypes differ (both paths and shapes named).
        TypeError: malformed ``sharing`` or a wrong number of arguments.

    Example:
        >>> model, ps = lux.share_parameters(model, ps, [("layer_1", "layer_3")])  # doctest: +SKIP
        >>> ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-3))  # doctest: +SKIP
    """
    if isinstance(first, Layer):
        if len(args) != 2:
            raise TypeError(
                "share_parameters: call share_parameters(model, ps, sharing) or "
                f"share_parameters(ps, sharing), got a model and {len(args)} more arguments"
            )
        ps, sharing = args
        model = Shared(first, sharing)
        where = f"share_parameters({short_repr(first)})"
        _check_groups(ps, model.sharing, where)
        ps = _with_new_parameters(dict(ps), model.sharing, new_parameters, where)
        return model, model.compact(ps)
    if not isinstance(first, Mapping):
        raise TypeError(
            "share_parameters: the first argument must be a parameter dict (Lux's form "
            "share_parameters(ps, sharing)) or a Layer (share_parameters(model, ps, "
            f"sharing)), got {type(first).__name__}"
        )
    if len(args) != 1:
        raise TypeError(
            "share_parameters: call share_parameters(ps, sharing) or "
            f"share_parameters(model, ps, sharing), got ps and {len(args)} more arguments"
        )
    where = "share_parameters"
    groups = _normalize_sharing(args[0], where)
    _check_groups(first, groups, where)
    ps = _with_new_parameters(dict(first), groups, new_parameters, where)
    for group in groups:
        value = _get(ps, group[0])
        for p in group[1:]:
            ps = _set(ps, p, value)
    return ps


# --------------------------------------------------------------------------- layer_map


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


# --------------------------------------------------------------------------- debug


class _GradCheck(torch.autograd.Function):
    """Identity whose backward checks the incoming gradient for NaN/Inf."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, where: str, what: str) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.where, ctx.what = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        _check_finite(grad, ctx.where, ctx.what)
        return grad, None, None


def _check_finite(t: Any, where: str, what: str) -> None:
    """Raise ``FloatingPointError`` naming ``where`` if ``t`` holds NaN or Inf."""
    if not ltree.is_inexact(t):
        return
    try:
        ok = bool(torch.isfinite(t).all())
    except RuntimeError as err:  # e.g. under torch.func.vmap: values cannot be read
        raise RuntimeError(
            f"lux.debug: {where}: cannot read {what} to check it ({err}). A debug model "
            "reads values on the host and runs eagerly only: not under torch.func.vmap "
            "or torch.compile"
        ) from err
    if ok:
        return
    nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
    counts = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "Inf")) if n)
    raise FloatingPointError(f"lux.debug: {where}: {counts} of {t.numel()} elements in {what}")


def _named_leaves(tree: Any, root: str) -> list[tuple[str, Any]]:
    paths, leaves, _ = optree.tree_flatten_with_path(tree, namespace=ltree.NAMESPACE)
    names = [root + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in p) for p in paths]
    return list(zip(names, leaves, strict=True))


def _wrap_grads(tree: Any, root: str, where: str, what: str) -> Any:
    """``tree`` with each floating tensor passed through :class:`_GradCheck`; ``what``
    describes its gradient (``{name}`` is replaced by the leaf's name)."""
    paths, leaves, spec = optree.tree_flatten_with_path(tree, namespace=ltree.NAMESPACE)
    out = []
    for p, leaf in zip(paths, leaves, strict=True):
        if ltree.is_inexact(leaf):
            name = root + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in p)
            leaf = _GradCheck.apply(leaf, where, what.format(name=name))
        out.append(leaf)
    return optree.tree_unflatten(spec, out)


class _EagerOnlyError(RuntimeError, AssertionError):
    """A debug model traced by Dynamo where the trace must be one graph.

    A ``RuntimeError``; also an ``AssertionError`` only because Dynamo re-raises assertion
    errors from code it runs (rather than traces) unchanged, where it would replace any
    other exception by its own ("Observed exception", or an internal error) with this
    message buried in the details.
    """


@torch.compiler.assume_constant_result
def _refuse_one_graph(message: str) -> bool:
    """Raise ``message`` when the running Dynamo trace must be one graph
    (``fullgraph=True``, ``torch._dynamo.error_on_graph_break``); else ``False``.

    ``assume_constant_result`` makes Dynamo run this function while tracing instead of
    tracing it, so the exception reaches the user as raised. Dynamo's trace state is
    private: where it cannot be read this returns ``False`` (the error then comes from the
    traced ``raise`` in the caller, wrapped by Dynamo)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        one_graph = bool(tx.one_graph or tx.error_on_graph_break)
    except (ImportError, AttributeError):
        return False
    if one_graph:
        raise _EagerOnlyError(message)
    return False


class _UnannotatedCall:
    """Holds :class:`DebugLayer`'s ``__call__``. Defined outside the Layer subclass, it is
    not wrapped by core's error annotation, so a debug wrapper adds no frame of its own
    and errors raised inside the model keep the wrapped model's layer paths."""

    def __call__(self: Any, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        if torch.compiler.is_compiling():
            message = (
                f"lux.debug: {self.where()}: a debug model checks values on the host at every "
                "layer and runs eagerly only; call it without torch.compile (or compile=True)"
            )
            # fullgraph=True: raised as is; otherwise Dynamo breaks the graph at the raise
            # below and runs this call eagerly
            _refuse_one_graph(message)
            raise RuntimeError(message)
        return _checked_call(self, x, ps, st)


@torch.compiler.disable
def _checked_call(layer: DebugLayer, x: Any, ps: Params, st: State) -> tuple[Any, State]:
    """The checks and the wrapped call, never traced by Dynamo (see :func:`debug`)."""
    where = layer.where()
    root = layer.path == ""
    if layer.forward:
        if root:
            for name, leaf in _named_leaves(ps, "ps"):
                _check_finite(leaf, where, f"the parameter {name}")
            for name, leaf in _named_leaves(st, "st"):
                _check_finite(leaf, where, f"the state {name}")
        for name, leaf in _named_leaves(x, "x"):
            _check_finite(leaf, where, f"the input {name}")
    if layer.backward:
        # parameters once, at the root: their dicts stay shared below, so errors raised
        # inside the model keep naming the layer paths (core matches ps by identity)
        if root:
            ps = _wrap_grads(
                ps, "ps", where, "the gradient w.r.t. the parameter {name} (summed over its uses)"
            )
        x = _wrap_grads(
            x,
            "x",
            where,
            "the gradient w.r.t. the input {name} (computed by the backward of this layer)",
        )
    y, new_st = layer.layer(x, ps, st)
    if layer.forward:
        for name, leaf in _named_leaves(y, "y"):
            _check_finite(leaf, where, f"the output {name}")
        for name, leaf in _named_leaves(new_st, "st"):
            _check_finite(leaf, where, f"the returned state {name}")
    return y, new_st


class DebugLayer(_UnannotatedCall, Layer):
    """``layer`` with NaN/Inf checks around its call (Lux's ``DebugLayer``); see :func:`debug`.

    Arguments:
        layer: the layer to check.
        path: its dotted path in the model (``""``: the root, which also checks every
            parameter and state tensor and the gradients of the parameters).
        forward: check inputs, outputs and returned states in the forward pass.
        backward: check the gradients with respect to the inputs (and, at the root, the
            parameters) that the backward pass computes.

    Input:
        Whatever ``layer`` accepts.

    Returns:
        ``layer``'s output and new state, after the checks.

    **Parameters** / **States**
        Exactly ``layer``'s: the wrapper is transparent.

    Raises:
        FloatingPointError: a NaN/Inf, naming the path, the layer and the tensor.
    """

    layer: Layer
    path: str = ""
    forward: bool = True
    backward: bool = True

    def init_params(self, key: torch.Tensor) -> Params:
        return self.layer.init_params(key)

    def init_state(self, key: torch.Tensor) -> State:
        return self.layer.init_state(key)

    def where(self) -> str:
        """``"layer_2.layer_1 (Linear(16 => 1))"``; ``"model (...)"`` for the root."""
        return f"{self.path or 'model'} ({short_repr(self.layer)})"


def _instrument(layer: Layer, path: str, forward: bool, backward: bool) -> Layer:
    inner = map_children(
        layer,
        lambda name, child: _instrument(
            child, f"{path}.{name}" if path else name, forward, backward
        ),
    )
    return DebugLayer(inner, path, forward, backward)


def debug(model: Layer, *, forward: bool = True, backward: bool = True) -> DebugLayer:
    """A copy of ``model`` whose every layer checks for NaN/Inf and names its path.

    Lux's ``DebugLayer`` applied to every layer. Each layer (containers included) is
    wrapped in a transparent :class:`DebugLayer` that, in the forward pass, checks its
    inputs, its outputs and the state it returns, and, in the backward pass, the gradient
    that its backward computes with respect to its inputs (through an identity
    ``torch.autograd.Function``, so ``torch.autograd``, ``torch.func.grad`` and
    :func:`lux_torch.train_step` all trigger it). The root also checks every parameter and
    state tensor, and the gradients of the parameters (named by their paths).

    The first problem raises ``FloatingPointError`` naming the layer, e.g.
    ``lux.debug: layer_2.layer_1 (Linear(16 => 1)): 3 NaN of 4 elements in the output y``
    or ``lux.debug: layer_2 (WrappedFunction(sqrt)): 2 Inf of 32 elements in the gradient
    w.r.t. the input x (computed by the backward of this layer)``. The backward check
    reports every non-finite gradient a layer produces, also one that a later operation
    would mask (an Inf multiplied by ``relu``'s zero derivative). Other errors, such as
    shape errors, keep the notes that name the failing layer's path, as without
    ``debug``. ``ps`` and ``st`` are those of ``model`` (``setup`` gives the same trees).

    **For eager debugging only**: every check reads values on the host (a device sync
    per tensor and layer). Under ``torch.compile(fullgraph=True)`` (and
    ``train_step(compile=True)``) the debug model raises while tracing, and the exception
    that reaches the caller is lux's ``RuntimeError('lux.debug: ... runs eagerly only ...')``
    (not Dynamo's "Observed exception" wrapper). Without ``fullgraph``, Dynamo
    runs the debug model eagerly (``torch.compiler.disable``), with every check. Under
    ``torch.func.vmap`` values cannot be read: the checks raise ``RuntimeError`` naming
    the layer, so layers that ``vmap`` their children (``Ensemble``) cannot be debugged
    inside; debug their member layer instead.

    Arguments:
        model: the model.
        forward: check the forward pass.
        backward: check the backward pass.

    Returns:
        The instrumented model (a :class:`DebugLayer`).

    Example:
        >>> y, _ = lux.debug(model)(x, ps, st)  # doctest: +SKIP
    """
    if not isinstance(model, Layer):
        raise TypeError(f"debug: model must be a lux_torch Layer, got {type(model).__name__}")
    out = _instrument(model, "", forward, backward)
    assert isinstance(out, DebugLayer)
    return out
