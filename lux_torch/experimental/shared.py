"""Tie parameters: :func:`share_parameters` and the :class:`Shared` wrapper.

Through :class:`Shared` every tied group is stored once, so its gradient is the sum of the
gradients of its uses and optimizer updates keep it tied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast, overload

import optree
import torch

from .. import tree as ltree
from ..core import Layer, Params, State, init_params
from ..display import short_repr
from ._paths import get_path, has_path, listing, remove_path, set_path

Sharing = Sequence[Sequence[str]]


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
    unknown = [p for g in groups for p in g if not has_path(tree, p)]
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter path(s) {', '.join(map(repr, unknown))}; "
            f"valid paths: {listing(tree)}"
        )
    for group in groups:
        first = get_path(tree, group[0])
        for p in group[1:]:
            other = get_path(tree, p)
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
        old = get_path(tree, group[0])
        if _signature(value) != _signature(old):
            raise ValueError(
                f"{where}: the new parameters for group {group!r} have {_describe(value)}, "
                f"the tied entries have {_describe(old)}"
            )
        tree = set_path(tree, group[0], value)
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
    sharing: Sequence[Sequence[str]]

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
                full = remove_path(full, p)
        return full

    def expand(self, ps: Params) -> Params:
        """The full parameter tree of ``layer``: each group's tensor at all of its paths.

        Dicts on the way are new; the tensors are the same objects (no copy), so the
        gradients of every use flow into the one stored tensor.
        """
        for group in self.sharing:
            value = get_path(ps, group[0])
            for p in group[1:]:
                ps = set_path(ps, p, value)
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
        first: ``model``, the layer (first form), or ``ps`` (second form).
        *args: ``ps, sharing`` (first form) or ``sharing`` (second form): ``ps`` are the
            parameters (the values of each group's first path are kept), ``sharing`` the
            groups of dotted paths, e.g. ``[("layer_1", "layer_3")]`` (whole subtrees) or
            ``[("encoder.weight", "decoder.weight")]`` (tensors).
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
        groups = cast(tuple[tuple[str, ...], ...], model.sharing)  # normalised by Shared
        _check_groups(ps, groups, where)
        ps = _with_new_parameters(dict(ps), groups, new_parameters, where)
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
        value = get_path(ps, group[0])
        for p in group[1:]:
            ps = set_path(ps, p, value)
    return ps
