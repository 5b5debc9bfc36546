"""The primitive gradient transformations and :func:`masked` / :func:`partition`
(see :mod:`lux_torch.optim`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import optree
import torch

from ..tree import NAMESPACE, flatten, unflatten
from ..tree import map as tree_map
from ._base import (
    IDENTITY_LEAFWISE,
    Factor,
    GradientTransformation,
    Kit,
    Leafwise,
    LearningRate,
    Leaves,
    Owned,
    Scalar,
    ScalarCache,
    State,
    Tree,
    check_beta,
    check_lr,
    check_nonneg,
    check_shapes,
    flatten_checked,
    foreach_op,
    hoist,
    identity_transform,
    inc,
    kit_scalar,
    leafwise,
    leaves_along,
    make_transformation,
    materialize,
    moments_check,
    new_count,
    no_check,
    plain_count,
    stateless_transform,
    times,
    zeros_like_tree,
)

# -------------------------------------------------------------------------- primitives


def apply_updates(ps: Tree, updates: Tree) -> Tree:
    """Return ``ps + updates`` leaf by leaf (a new tree; ``ps`` is not modified).

    Arguments:
        ps: the parameter tree.
        updates: a tree of the same structure, e.g. from ``GradientTransformation.update``.

    Returns:
        The new parameter tree.

    Example:
        >>> apply_updates({"w": torch.ones(2)}, {"w": torch.ones(2)})
        {'w': tensor([2., 2.])}
    """
    if torch.compiler.is_compiling():
        p, spec = flatten(ps)
        traced = flatten_checked(updates, ps, "updates")[0]
        check_shapes("updates", traced, p, spec)
        return unflatten(spec, foreach_op("add", p, traced))
    p, spec = optree.tree_flatten(ps, namespace=NAMESPACE)
    u = leaves_along(spec, updates)
    if u is None:
        u = flatten_checked(updates, ps, "updates")[0]  # raises, naming the paths
    check_shapes("updates", u, p, spec)
    return optree.tree_unflatten(spec, foreach_op("add", p, u))


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Compose transformations left to right; the state is a tuple of their states.

    When every member is a built-in transformation (or a chain of them) the chain flattens
    the trees once per update and hands leaf lists from member to member; otherwise each
    member's ``update`` is called on trees.

    Arguments:
        transforms: the transformations, applied in order.

    Returns:
        A :class:`GradientTransformation` with state ``(state_1, ..., state_n)``.

    Example:
        >>> opt = chain(clip_by_global_norm(1.0), scale(-0.1))
    """

    def init(ps: Tree) -> State:
        return tuple(t.init(ps) for t in transforms)

    members = [lw for lw in map(leafwise, transforms) if lw is not None]
    if len(members) == len(transforms):
        active = [lw for lw in members if lw is not IDENTITY_LEAFWISE]

        def size(n: int) -> int:
            return sum(lw.size(n) for lw in active)

        def leaf_update(
            g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
        ) -> tuple[Leaves, Factor, Leaves]:
            n, start = len(g), 0
            new: list[torch.Tensor] = []
            for lw in active:
                stop = start + lw.size(n)
                g, f, part = lw.update(g, f, s[start:stop], p, kit)
                new += part
                start = stop
            return g, f, new

        def check(grads: Tree, state: State) -> None:
            if isinstance(state, tuple) and len(state) == len(members):
                for lw, st in zip(members, state, strict=True):
                    lw.check(grads, st)

        uses_ps = any(lw.uses_ps for lw in active)
        return make_transformation("chain", init, Leafwise(size, leaf_update, check, uses_ps))

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            grads, s = t.update(grads, s, ps)
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def scale(step_size: float) -> GradientTransformation:
    """Multiply updates by a constant ``step_size`` (use a negative value to descend).

    Arguments:
        step_size: the factor.

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = scale(-0.1)
    """
    return stateless_transform("scale", lambda g, f, p, kit: (g, times(f, step_size)))


def set_to_zero() -> GradientTransformation:
    """Replace the updates by zeros (freezes what it is applied to; see :func:`partition`).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = partition({"train": adam(1e-3), "frozen": set_to_zero()},
        ...                 {"encoder": "frozen", "head": "train"})
    """
    return stateless_transform(
        "set_to_zero", lambda g, f, p, kit: (kit.own([torch.zeros_like(x) for x in g]), None)
    )


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """Add ``weight_decay * ps`` to the updates (L2 regularisation / decoupled decay).

    With ``weight_decay == 0`` it is the identity (and costs nothing in a :func:`chain`).

    Arguments:
        weight_decay: the decay factor (>= 0).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``); ``update`` needs ``ps``.

    Example:
        >>> opt = chain(add_decayed_weights(1e-4), scale(-0.1))
    """
    check_nonneg("weight_decay", weight_decay, "add_decayed_weights")
    if weight_decay == 0.0:
        return identity_transform("add_decayed_weights")

    def fn(g: Leaves, f: Factor, p: Leaves | None, kit: Kit) -> tuple[Leaves, Factor]:
        if p is None:
            raise ValueError("lux_torch.optim.add_decayed_weights: update needs ps")
        g = materialize(g, f, kit)
        op = kit.op_ if isinstance(g, Owned) else kit.op
        return kit.own(op("add", g, p, alpha=weight_decay)), None

    return stateless_transform("add_decayed_weights", fn, uses_ps=True)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale updates so that their global L2 norm is at most ``max_norm``.

    Arguments:
        max_norm: the largest allowed global norm (> 0).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = chain(clip_by_global_norm(1.0), scale(-0.1))
    """
    if max_norm <= 0.0:
        raise ValueError(
            f"lux_torch.optim.clip_by_global_norm: max_norm must be > 0, got {max_norm}"
        )

    def fn(g: Leaves, f: Factor, p: Leaves | None, kit: Kit) -> tuple[Leaves, Factor]:
        g = materialize(g, f, kit)
        if not g:
            return g, None
        norm = torch.sqrt(sum(torch.sum(x * x) for x in g))  # type: ignore[arg-type]  # sum() of tensors
        return g, torch.clamp(max_norm / (norm + 1e-12), max=1.0)

    return stateless_transform("clip_by_global_norm", fn)


def scale_by_learning_rate(lr: LearningRate) -> GradientTransformation:
    """Multiply updates by ``-lr``; ``lr`` is a float or a schedule ``f(count) -> lr``.

    The schedule receives the number of updates done so far (0-dim ``int64`` tensor); see
    :mod:`lux_torch.schedules`.

    Arguments:
        lr: learning rate or schedule.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 ()}``, the number of
        updates done.

    Example:
        >>> opt = chain(scale_by_adam(), scale_by_learning_rate(1e-3))
    """
    check_lr(lr, "scale_by_learning_rate")
    constant = None if callable(lr) else -float(lr)

    def init(ps: Tree) -> State:
        return {"count": new_count()}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        count = s[0]
        step = -lr(count) if callable(lr) else constant
        return g, times(f, step), [inc(count)]  # type: ignore[arg-type]  # step: lr(count) or constant

    lw = Leafwise(lambda n: 1, update, no_check)
    return make_transformation("scale_by_learning_rate", init, lw)


def _adam_corrections(
    b1: float, b2: float, bases: torch.Tensor, count: torch.Tensor
) -> tuple[Scalar, Scalar]:
    """``1 / (1 - b1 ** count)`` and ``sqrt(1 - b2 ** count)``: floats when eager (as in
    ``torch.optim``), float64 tensors when traced."""
    t = plain_count(count)
    if t is not None:
        return 1.0 / (1.0 - b1**t), math.sqrt(1.0 - b2**t)
    if bases.device != count.device:
        bases = bases.to(count.device)
    bc1, bc2 = (1.0 - torch.pow(bases, count)).unbind()
    return torch.reciprocal(bc1), hoist(torch.sqrt(bc2))


def scale_by_adam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> GradientTransformation:
    """Adam's bias-corrected ``m_hat / (sqrt(v_hat) + eps)`` direction (torch.optim.Adam).

    Arguments:
        betas: decay rates ``(beta1, beta2)`` of the first and second moments.
        eps: added to the bias-corrected root of the second moment.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done, and the running first and second
        moments of the gradients (trees like ``ps``).

    Example:
        >>> opt = chain(scale_by_adam(), scale_by_learning_rate(1e-3))
    """
    b1, b2 = betas
    check_beta("betas[0]", b1, "scale_by_adam")
    check_beta("betas[1]", b2, "scale_by_adam")
    check_nonneg("eps", eps, "scale_by_adam")
    bases = torch.tensor([b1, b2], dtype=torch.float64)
    b2s: ScalarCache = {}
    epss: ScalarCache = {}

    def init(ps: Tree) -> State:
        return {"count": new_count(), "mu": zeros_like_tree(ps), "nu": zeros_like_tree(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, n, op, op_ = materialize(g, f, kit), len(g), kit.op, kit.op_
        count = inc(s[0])
        mu = op("lerp", s[1 : n + 1], g, 1.0 - b1)
        nu = op("mul", s[n + 1 :], kit_scalar(kit, g, b2, b2s))
        nu = op_("addcmul", nu, g, g, value=1.0 - b2)
        inv_bc1, bc2_sqrt = _adam_corrections(b1, b2, bases, count)
        denom = op_("div", op("sqrt", nu), kit_scalar(kit, nu, bc2_sqrt))
        denom = op_("add", denom, kit_scalar(kit, nu, eps, epss))
        return kit.own(op("div", mu, denom)), inv_bc1, [count, *mu, *nu]

    lw = Leafwise(lambda n: 1 + 2 * n, update, moments_check("scale_by_adam", ("mu", "nu")))
    return make_transformation("scale_by_adam", init, lw)


def scale_by_rms(
    alpha: float = 0.99, eps: float = 1e-8, centered: bool = False
) -> GradientTransformation:
    """RMSprop's ``g / (sqrt(E[g^2] - centered*E[g]^2) + eps)`` (torch.optim.RMSprop).

    Arguments:
        alpha: smoothing constant of the running averages.
        eps: added after the square root.
        centered: subtract the squared running mean of the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done, the running mean of the gradients (only
        updated when ``centered``) and that of their squares (trees like ``ps``).

    Example:
        >>> opt = chain(scale_by_rms(), scale_by_learning_rate(1e-2))
    """
    check_beta("alpha", alpha, "scale_by_rms")
    check_nonneg("eps", eps, "scale_by_rms")
    alphas: ScalarCache = {}
    epss: ScalarCache = {}

    def init(ps: Tree) -> State:
        return {"count": new_count(), "mu": zeros_like_tree(ps), "nu": zeros_like_tree(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, n, op, op_ = materialize(g, f, kit), len(g), kit.op, kit.op_
        mu, nu = s[1 : n + 1], s[n + 1 :]
        nu = op_("addcmul", op("mul", nu, kit_scalar(kit, g, alpha, alphas)), g, g, value=1 - alpha)
        if centered:
            mu = op("lerp", mu, g, 1.0 - alpha)
            root = op_("sqrt", op("addcmul", nu, mu, mu, value=-1.0))
        else:
            root = op("sqrt", nu)
        out = op("div", g, op_("add", root, kit_scalar(kit, root, eps, epss)))
        return kit.own(out), None, [inc(s[0]), *mu, *nu]

    lw = Leafwise(lambda n: 1 + 2 * n, update, moments_check("scale_by_rms", ("mu", "nu")))
    return make_transformation("scale_by_rms", init, lw)


def scale_by_adagrad(
    eps: float = 1e-10, initial_accumulator_value: float = 0.0
) -> GradientTransformation:
    """Adagrad's ``g / (sqrt(sum g^2) + eps)`` (torch.optim.Adagrad's direction).

    Arguments:
        eps: added after the square root.
        initial_accumulator_value: starting value of the sum of squares.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "sum": tree}``:
        the number of updates done and the running sum of squared gradients (like ``ps``).

    Example:
        >>> opt = chain(scale_by_adagrad(), scale_by_learning_rate(1e-2))
    """
    check_nonneg("eps", eps, "scale_by_adagrad")
    check_nonneg("initial_accumulator_value", initial_accumulator_value, "scale_by_adagrad")
    epss: ScalarCache = {}

    def init(ps: Tree) -> State:
        return {"count": new_count(), "sum": zeros_like_tree(ps, initial_accumulator_value)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, op = materialize(g, f, kit), kit.op
        acc = op("addcmul", s[1:], g, g)
        root = op("sqrt", acc)
        out = op("div", g, kit.op_("add", root, kit_scalar(kit, root, eps, epss)))
        return kit.own(out), None, [inc(s[0]), *acc]

    lw = Leafwise(lambda n: 1 + n, update, moments_check("scale_by_adagrad", ("sum",)))
    return make_transformation("scale_by_adagrad", init, lw)


def scale_by_lion(betas: tuple[float, float] = (0.9, 0.99)) -> GradientTransformation:
    """Lion's direction ``sign(b1 * mu + (1 - b1) * g)``; then ``mu = b2 * mu + (1 - b2) * g``.

    From "Symbolic Discovery of Optimization Algorithms" (Chen et al., 2023), as optax's
    ``scale_by_lion``.

    Arguments:
        betas: ``(beta1, beta2)``: the interpolation factor of the direction and the decay
            rate of the momentum.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree}``:
        the number of updates done and the momentum (a tree like ``ps``).

    Example:
        >>> opt = chain(scale_by_lion(), scale_by_learning_rate(1e-4))
    """
    b1, b2 = betas
    check_beta("betas[0]", b1, "scale_by_lion")
    check_beta("betas[1]", b2, "scale_by_lion")

    def init(ps: Tree) -> State:
        return {"count": new_count(), "mu": zeros_like_tree(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, mu = materialize(g, f, kit), s[1:]
        direction = kit.op_("sign", kit.op("lerp", mu, g, 1.0 - b1))
        return kit.own(direction), None, [inc(s[0]), *kit.op("lerp", mu, g, 1.0 - b2)]

    lw = Leafwise(lambda n: 1 + n, update, moments_check("scale_by_lion", ("mu",)))
    return make_transformation("scale_by_lion", init, lw)


def trace(momentum: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: ``buf = momentum * buf + g``; output ``buf`` (or ``g + momentum * buf``).

    With ``momentum == 0`` it is the identity with an empty state.

    Arguments:
        momentum: the momentum factor in [0, 1).
        nesterov: use Nesterov momentum.

    Returns:
        A :class:`GradientTransformation` with state ``{"buf": tree}`` (the momentum buffer,
        like ``ps``), or ``()`` when ``momentum == 0``.

    Example:
        >>> opt = chain(trace(0.9), scale_by_learning_rate(0.1))
    """
    check_beta("momentum", momentum, "trace")
    if nesterov and momentum == 0.0:
        raise ValueError("lux_torch.optim.trace: nesterov needs momentum > 0")
    if momentum == 0.0:
        return identity_transform("trace")
    momenta: ScalarCache = {}

    def init(ps: Tree) -> State:
        return {"buf": zeros_like_tree(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g = materialize(g, f, kit)
        buf = kit.op_("add", kit.op("mul", s, kit_scalar(kit, s, momentum, momenta)), g)
        if nesterov:
            return kit.own(kit.op("add", g, buf, alpha=momentum)), None, buf
        return buf, None, buf  # not owned: the state holds it

    lw = Leafwise(lambda n: n, update, moments_check("trace", ("buf",)))
    return make_transformation("trace", init, lw)


# ------------------------------------------------------------------ masked / partition

_EMPTY: Any = object()  # marks a subtree that keeps no leaf


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _expand(
    prefix: Tree, tree: Tree, fn: str, what: str, valid: Callable[[Any], bool]
) -> tuple[Tree, list[str]]:
    """``prefix`` broadcast to the structure of ``tree`` (a value covers a whole subtree).

    Returns the broadcast tree and ``path=value`` for every value that is not ``valid``.
    """
    bad: list[str] = []

    def fail(path: str, message: str) -> ValueError:
        where = f"'{path}'" if path else "the root"
        return ValueError(
            f"lux_torch.optim.{fn}: the {what} tree does not match the parameters at "
            f"{where}: {message}"
        )

    def expand(pre: Any, node: Any, path: str) -> Tree:
        if isinstance(pre, dict):
            if not isinstance(node, dict):
                raise fail(path, f"a dict where the parameters have {type(node).__name__}")
            missing = sorted(str(k) for k in node if k not in pre)
            extra = sorted(str(k) for k in pre if k not in node)
            if missing or extra:
                raise fail(path, f"missing {missing}, unexpected {extra}")
            return {k: expand(pre[k], v, _join(path, k)) for k, v in node.items()}
        if type(pre) in (list, tuple):
            if type(node) is not type(pre) or len(node) != len(pre):
                raise fail(path, f"{pre!r} where the parameters have {type(node).__name__}")
            return type(pre)(
                expand(a, b, _join(path, i)) for i, (a, b) in enumerate(zip(pre, node, strict=True))
            )
        if not valid(pre):
            bad.append(f"{path or '<root>'}={pre!r}")
        return tree_map(lambda _: pre, node)

    return expand(prefix, tree, ""), bad


def _invalid(prefix: Tree, valid: Callable[[Any], bool]) -> list[str]:
    """``path=value`` for every leaf of a mask or label tree that is not ``valid``."""
    paths, values, _ = optree.tree_flatten_with_path(prefix, none_is_leaf=True, namespace=NAMESPACE)
    return [
        f"{'.'.join(map(str, path)) or '<root>'}={value!r}"
        for path, value in zip(paths, values, strict=True)
        if not valid(value)
    ]


def _select(node: Tree, full: Tree, keep: Callable[[Any], bool]) -> Tree:
    """The subtree of ``node`` whose values in ``full`` are kept (empty dicts dropped)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            sub = _select(v, full[k], keep)
            if sub is not _EMPTY:
                out[k] = sub
        return out or _EMPTY
    if type(node) in (list, tuple):
        kept = [s for s in map(lambda v, m: _select(v, m, keep), node, full) if s is not _EMPTY]
        return type(node)(kept) if kept else _EMPTY
    flags = [keep(v) for v in flatten(full)[0]]
    if flags and all(flags):
        return node
    if not any(flags):
        return _EMPTY
    raise ValueError(
        f"lux_torch.optim: cannot split a {type(node).__name__} node between transformations"
    )


def _subtree(node: Tree, full: Tree, keep: Callable[[Any], bool]) -> Tree:
    sub = _select(node, full, keep)
    return {} if sub is _EMPTY else sub


def _split_apply(
    t: GradientTransformation,
    keep: Callable[[Any], bool],
    values: list[Any],
    full: Tree,
    grads: Tree,
    state: State,
    ps: Tree,
    out: list[torch.Tensor],
) -> State:
    """Run ``t`` on the kept part of ``grads``; write its updates into ``out``; new state."""
    sub_ps = None if ps is None else _subtree(ps, full, keep)
    sub_u, state = t.update(_subtree(grads, full, keep), state, sub_ps)
    where = [i for i, v in enumerate(values) if keep(v)]
    for i, u in zip(where, flatten(sub_u)[0], strict=True):
        out[i] = u
    return state


def masked(
    inner: GradientTransformation, mask: Tree | Callable[[Tree], Tree]
) -> GradientTransformation:
    """Apply ``inner`` to the masked leaves only; the other updates pass through unchanged.

    ``inner`` sees the *masked sub-tree*: ``ps`` (and ``grads``) with every leaf whose mask is
    ``False`` removed, and dicts left without leaves removed too, so its state holds the
    masked leaves only. Semantics of optax's ``masked``.

    Arguments:
        inner: the transformation to apply.
        mask: a tree of Python bools with the structure of ``ps``, or a prefix of it (a bool
            at a dict covers the whole subtree, e.g. ``{"encoder": False, "head": True}``), or
            a callable returning one. The callable gets ``ps`` in ``init`` and ``ps`` (or,
            when ``update`` gets none, ``grads``) in ``update``; it should depend on their
            structure and shapes only, e.g. ``lambda ps: lux.tree.map(lambda p: p.ndim > 1,
            ps)``.

    Returns:
        A :class:`GradientTransformation` whose state is ``inner``'s state for the masked
        sub-tree.

    Example:
        >>> decay_matrices = masked(add_decayed_weights(1e-4), lambda ps: lux.tree.map(
        ...     lambda p: p.ndim > 1, ps))
    """

    def is_bool(v: Any) -> bool:
        return isinstance(v, bool)

    def not_bools(bad: list[str]) -> ValueError:
        return ValueError(
            f"lux_torch.optim.masked: mask values must be Python bools, got {', '.join(bad)}"
        )

    if not callable(mask) and (bad := _invalid(mask, is_bool)):
        raise not_bools(bad)

    def expand(tree: Tree, ref: Tree) -> Tree:
        full, bad = _expand(mask(ref) if callable(mask) else mask, tree, "masked", "mask", is_bool)
        if bad:
            raise not_bools(bad)
        return full

    def keep(v: bool) -> bool:
        return v

    def init(ps: Tree) -> State:
        return inner.init(_subtree(ps, expand(ps, ps), keep))

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec = flatten(grads) if ps is None else flatten_checked(grads, ps, "grads")
        full = expand(grads, grads if ps is None else ps)
        out = list(g)
        state = _split_apply(inner, keep, flatten(full)[0], full, grads, state, ps, out)
        return unflatten(spec, out), state

    return GradientTransformation(init, update)


def partition(
    transforms: Mapping[str, GradientTransformation], labels: Tree | Callable[[Tree], Tree]
) -> GradientTransformation:
    """Apply a different transformation to each labelled part of the tree (optax semantics).

    Every leaf of ``ps`` gets a label; ``transforms[label]`` sees the sub-tree of the leaves
    with that label (as in :func:`masked`). Freeze a sub-model with :func:`set_to_zero`.

    Arguments:
        transforms: ``{label: transformation}``. A label no leaf carries gets the (empty)
            state of its transformation on an empty tree.
        labels: a tree of ``str`` labels with the structure of ``ps``, or a prefix of it (a
            label at a dict covers the whole subtree), or a callable returning one (called
            as the mask of :func:`masked`).

    Returns:
        A :class:`GradientTransformation` with state ``{label: state of transforms[label]}``.

    Example:
        >>> opt = partition({"train": adam(1e-3), "frozen": set_to_zero()},
        ...                 {"encoder": "frozen", "head": "train"})
    """
    names = sorted(transforms)
    if not names:
        raise ValueError("lux_torch.optim.partition: transforms is empty")

    def known(v: Any) -> bool:
        return isinstance(v, str) and v in transforms

    def unknown_error(bad: list[str]) -> ValueError:
        return ValueError(
            f"lux_torch.optim.partition: unknown labels {', '.join(bad)}; the labels of "
            f"transforms are {names}"
        )

    if not callable(labels) and (bad := _invalid(labels, known)):
        raise unknown_error(bad)

    def expand(tree: Tree, ref: Tree) -> Tree:
        prefix = labels(ref) if callable(labels) else labels
        full, bad = _expand(prefix, tree, "partition", "label", known)
        if bad:
            raise unknown_error(bad)
        return full

    def init(ps: Tree) -> State:
        full = expand(ps, ps)
        return {k: transforms[k].init(_subtree(ps, full, k.__eq__)) for k in names}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if not isinstance(state, dict) or sorted(state) != names:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"lux_torch.optim.partition: the state must have one entry per label "
                f"{names}, got {got}"
            )
        g, spec = flatten(grads) if ps is None else flatten_checked(grads, ps, "grads")
        full = expand(grads, grads if ps is None else ps)
        values = flatten(full)[0]
        out = list(g)
        new = {
            k: _split_apply(transforms[k], k.__eq__, values, full, grads, state[k], ps, out)
            for k in names
        }
        return unflatten(spec, out), new

    return GradientTransformation(init, update)
