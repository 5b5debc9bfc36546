"""Pure, optax-shaped optimizers on parameter trees.

An optimizer is a :class:`GradientTransformation`: a pair of pure functions

* ``init(ps) -> state`` builds the optimizer state, a tree of tensors (dicts/tuples of
  tensors, including 0-dim ``int64`` step counts), so it stacks, ``vmap`` s and
  ``torch.compile`` s exactly like ``ps``;
* ``update(grads, state, ps=None) -> (updates, new_state)`` turns gradients into updates.

:func:`apply_updates` adds the updates to the parameters. Nothing is mutated in place. The
aliases (:func:`sgd`, :func:`adam`, :func:`adamw`, :func:`rmsprop`, :func:`adagrad`,
:func:`lion`) are thin :func:`chain` s of small primitives and reproduce ``torch.optim``
step for step (Lion: the paper's algorithm). :func:`masked` and :func:`partition` apply
transformations to parts of the tree (e.g. to freeze a sub-model), and every learning
rate may be a schedule from :mod:`lux_torch.schedules` (re-exported here).

Leaf arithmetic uses ``torch._foreach_*`` on the flattened leaf lists, in place only on
the update's own temporaries (never on ``grads``, ``ps`` or a state), and falls back to
out-of-place per-leaf ops where a foreach kernel is unavailable (e.g. under ``vmap``) or
where autograd records the update (it stays differentiable). The built-in
transformations also have a private leaf-level form, so a :func:`chain` of them flattens
the gradients and the state once per update, skips members that do nothing
(``add_decayed_weights(0)``, ``trace(0)``) and folds scalar factors (bias correction,
learning rate, clipping) into a single multiplication; eager updates compute those
factors in Python floats, as ``torch.optim`` does, traced ones (``torch.compile``,
``vmap`` over states) with tensor ops.

Example:
    >>> ps = {"w": torch.ones(3)}
    >>> opt = adam(1e-2)
    >>> state = opt.init(ps)
    >>> updates, state = opt.update({"w": torch.ones(3)}, state, ps)
    >>> ps = apply_updates(ps, updates)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import optree
import torch

from lux_torch._graph import tracing
from lux_torch.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    linear_schedule,
    piecewise_constant_schedule,
    warmup_cosine_decay_schedule,
)
from lux_torch.tree import NAMESPACE, flatten, flatten_like, unflatten
from lux_torch.tree import map as tree_map

__all__ = [
    "GradientTransformation",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "exponential_decay",
    "linear_schedule",
    "lion",
    "masked",
    "partition",
    "piecewise_constant_schedule",
    "rmsprop",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_rms",
    "set_to_zero",
    "sgd",
    "step",
    "trace",
    "warmup_cosine_decay_schedule",
]

Tree = Any
State = Any
Scalar = float | torch.Tensor
Schedule = Callable[[torch.Tensor], Scalar]
LearningRate = float | Schedule
Leaves = Sequence[torch.Tensor]  # a list, or the tuple a torch._foreach_* op returns
Factor = Scalar | None  # a pending scalar multiplier of a leaf list; None means 1


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``init(ps) -> state`` and ``update(grads, state, ps) -> (u, state)``."""

    init: Callable[[Tree], State]
    update: Callable[..., tuple[Tree, State]]


# ----------------------------------------------------------------------------- helpers


def _foreach(name: str, *args: Any, **kwargs: Any) -> Leaves:
    """``torch._foreach_<name>`` (non-in-place) with a per-leaf fallback; ``args[0]`` a list."""
    first = args[0]
    if not first:
        return []
    try:
        return getattr(torch, f"_foreach_{name}")(*args, **kwargs)  # type: ignore[no-any-return]
    except _FAILURES:
        pass
    single = getattr(torch, name)
    return [
        single(*(a[i] if isinstance(a, list | tuple) else a for a in args), **kwargs)
        for i in range(len(first))
    ]


# what a foreach kernel raises where it cannot run (no vmap batching rule, empty list, ...)
_FAILURES = (RuntimeError, NotImplementedError, TypeError, AttributeError)


def _flatten(tree: Tree, like: Tree, what: str) -> tuple[list[torch.Tensor], Any]:
    """Leaves of ``tree``, checking that its structure equals that of ``like``."""
    return flatten_like(tree, like, f"lux_torch.optim: {what}")


def _zeros_like(ps: Tree, fill: float = 0.0) -> Tree:
    return tree_map(lambda p: torch.full_like(p, fill), ps)


def _count() -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64)


def _check_nonneg(name: str, value: float, fn: str) -> None:
    if value < 0.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be >= 0, got {value}")


def _check_lr(lr: LearningRate, fn: str) -> None:
    if not callable(lr):
        _check_nonneg("lr", float(lr), fn)


def _check_beta(name: str, value: float, fn: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be in [0, 1), got {value}")


# ------------------------------------------------------------------ leaf-level protocol
#
# Every built-in transformation is written once, on leaf lists, as a ``_Leafwise``;
# ``_transformation`` wraps it into the public tree API. A ``chain`` of leaf-level members
# is itself leaf-level: it flattens grads, state and ps once, hands the lists through its
# members and unflattens once. A member's ``update(g, f, s, p, kit) -> (u, f, s)`` gets the
# gradient leaves ``g`` with a pending scalar factor ``f`` (the gradients are ``g * f``;
# ``None`` means 1), its own state leaves ``s`` (in flattening order: dict keys sorted),
# the parameter leaves ``p`` (or ``None``) and the ``_Kit`` to compute with; it returns the
# update leaves, their pending factor and its new state leaves. Scaling members only
# multiply the factor, which is applied once, at the end: ``chain(scale_by_adam(),
# scale_by_learning_rate(lr))`` makes one pass of ``(m / (sqrt(v) / bc2 + eps)) * (-lr /
# bc1)`` over the leaves. Leaves that are ``_Owned`` are temporaries of the update in
# progress, which later members may overwrite in place.


class _Owned(list[torch.Tensor]):
    """Leaves that are temporaries of the update in progress: nothing else (inputs, state)
    refers to them, so they may be overwritten in place."""


class _Kit(NamedTuple):
    """How a leaf update computes.

    ``op(name, *args)`` is ``torch._foreach_<name>``; ``op_(name, target, *args)`` its
    in-place form on ``target``, a temporary of the update, or an out-of-place op;
    ``own(leaves)`` marks temporaries that later members may overwrite (Dynamo cannot pass
    the marker class to an op, and where ``op_`` is out of place it does nothing);
    ``dtype``: the common dtype of all the floating-point leaves (CPU float32/float64
    only), with which :func:`_scalar` hands scalars to the ops as tensors.
    """

    op: Callable[..., Leaves]
    op_: Callable[..., Leaves]
    own: Callable[[Leaves], Leaves]
    dtype: torch.dtype | None = None


def _direct(name: str, first: Leaves, *args: Any, **kwargs: Any) -> Leaves:
    if not first:
        return []
    return getattr(torch, f"_foreach_{name}")(first, *args, **kwargs)  # type: ignore[no-any-return]


def _direct_(name: str, target: Leaves, *args: Any, **kwargs: Any) -> Leaves:
    if target:
        getattr(torch, f"_foreach_{name}_")(target, *args, **kwargs)
    return target


def _same(leaves: Leaves) -> Leaves:
    return leaves


# _FAST: foreach kernels, in place on temporaries; any failure reruns the update with
# _SAFE, out of place with a per-leaf fallback (vmap), which autograd-tracked updates use
# from the start. _TRACE: while torch.compile traces.
_FAST = _Kit(_direct, _direct_, _Owned)
_SAFE = _Kit(_foreach, _foreach, _same)
_TRACE = _Kit(_direct, _direct_, _same)
_FAST_FOR = {dtype: _FAST._replace(dtype=dtype) for dtype in (torch.float32, torch.float64)}


def _scalar(kit: _Kit, leaves: Leaves, x: Scalar, cache: dict | None = None) -> Scalar:
    """``x`` as a 0-dim tensor of ``kit.dtype``, for a foreach op over ``leaves``.

    A CPU op converts a Python (or differently typed) scalar for every leaf; this converts
    it once, to the same value (float32 and float64 compute in their own precision).
    ``cache`` keeps the tensor of a constant ``x``.
    """
    dtype = kit.dtype
    if dtype is None or not leaves:
        return x
    if isinstance(x, torch.Tensor):
        return x if x.dtype is dtype or x.dim() else x.to(dtype)
    if cache is None:
        return torch.full((), x, dtype=dtype)
    t = cache.get(dtype)
    if t is None:
        t = cache[dtype] = torch.full((), x, dtype=dtype)
    return t


_ONE = torch.ones((), dtype=torch.int64)


def _inc(count: torch.Tensor) -> torch.Tensor:
    """``count + 1`` (a tensor-tensor add skips wrapping the Python ``1`` in a tensor)."""
    return torch.add(count, _ONE)


def _plain_count(count: torch.Tensor) -> int | None:
    """``count`` as an int when it is an ordinary CPU tensor outside any tracing, else None.

    Eager updates then compute their scalar factors in Python, as ``torch.optim`` does.
    """
    if (
        type(count) is torch.Tensor
        and count.is_cpu
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._functorch.is_functorch_wrapped_tensor(count)
        and torch._C._len_torch_dispatch_stack() == 0  # no make_fx / fake / functional mode
    ):
        return int(count.item())
    return None


def _hoist(x: Scalar) -> Scalar:
    """A traced 0-dim tensor factor, computed once per step.

    Inductor otherwise inlines scalar arithmetic (``pow``, ``cos``, ...) into every vector
    iteration of the elementwise kernels that use it: Adam's bias corrections made the
    compiled CPU update 15x slower. A reduction is always materialized as a buffer.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 0 and tracing():
        return x.reshape(1, 1).sum(1).reshape(())
    return x


def _times(f: Factor, k: Scalar) -> Scalar:
    return k if f is None else f * k


def _materialize(g: Leaves, f: Factor, kit: _Kit) -> Leaves:
    """``g * f`` (in place when ``g`` is owned); owned unless ``f`` is None."""
    if f is None:
        return g
    if isinstance(f, torch.Tensor) and f.requires_grad and torch.is_grad_enabled():
        return [x * f for x in g]  # foreach ops do not differentiate a tensor scalar
    op = kit.op_ if isinstance(g, _Owned) else kit.op
    return kit.own(op("mul", g, _scalar(kit, g, _hoist(f))))


class _Leafwise(NamedTuple):
    size: Callable[[int], int]  # number of state leaves for n parameter leaves
    update: Callable[[Leaves, Factor, Leaves, Leaves | None, _Kit], tuple[Leaves, Factor, Leaves]]
    check: Callable[[Tree, State], None]  # cold path: raise a named error for bad grads
    uses_ps: bool = False  # update reads the parameter leaves


_LEAFWISE = "_lux_leafwise"


def _no_check(grads: Tree, state: State) -> None:
    return None


_IDENTITY = _Leafwise(lambda n: 0, lambda g, f, s, p, kit: (g, f, s), _no_check)


def _leafwise(t: GradientTransformation) -> _Leafwise | None:
    return getattr(t.update, _LEAFWISE, None)


def _run(lw: _Leafwise, g: Leaves, s: Leaves, p: Leaves | None) -> tuple[Leaves, Leaves]:
    """``lw.update`` with the fastest kit that works; returns updates and new state."""
    leaves = (*g, *s, *(p or ()))
    if tracing():
        kit = _TRACE  # Dynamo, make_fx or fake tensors: no cached constant tensors
    elif torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
        kit = _SAFE  # in-place ops could break a graph that autograd records
    elif g and g[0].is_cpu and (dtype := g[0].dtype) in _FAST_FOR:
        uniform = all(t.dtype is dtype or not t.is_floating_point() for t in leaves)
        kit = _FAST_FOR[dtype] if uniform else _FAST
    else:
        kit = _FAST
    if kit is not _SAFE:
        try:
            u, f, new = lw.update(g, None, s, p, kit)
            return _materialize(u, f, kit), new
        except _FAILURES:
            pass  # e.g. no foreach kernel under vmap: recompute (inputs are untouched)
    u, f, new = lw.update(g, None, s, p, _SAFE)
    return _materialize(u, f, _SAFE), new


def _transformation(
    name: str, init: Callable[[Tree], State], lw: _Leafwise
) -> GradientTransformation:
    """The tree API of a leaf-level transformation: flatten once, check, update, unflatten.

    Eager updates flatten ``grads`` and read ``state`` (and ``ps``) along the structure
    that the grads imply, which is also the check: ``spec.flatten_up_to`` raises on a
    mismatch (then :func:`_state_mismatch` names it). While ``torch.compile`` traces, every
    tree is flattened with ``torch.utils._pytree`` and the structures are compared.
    """
    state_specs: dict[Any, Any] = {}  # grads structure -> state structure (from init)
    # ps is read where an update uses it, or to check grads where no state tree does
    check_ps = lw.uses_ps or lw.size(1) == lw.size(0)

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if torch.compiler.is_compiling():
            return traced(grads, state, ps)
        g, g_spec = optree.tree_flatten(grads, namespace=NAMESPACE)
        s_spec = state_specs.get(g_spec)
        if s_spec is None:
            s_spec = state_specs[g_spec] = optree.tree_structure(init(grads), namespace=NAMESPACE)
        s = _leaves_along(s_spec, state)
        if s is None:
            raise _state_mismatch(name, lw, grads, state, s_spec)
        p = None
        if ps is not None and check_ps:
            p = _leaves_along(g_spec, ps)
            if p is None:
                _flatten(grads, ps, "grads")  # raises, naming the paths
                p = flatten(ps)[0]
        u, new = _run(lw, g, s, p)
        return optree.tree_unflatten(g_spec, u), optree.tree_unflatten(s_spec, new)

    def traced(grads: Tree, state: State, ps: Tree) -> tuple[Tree, State]:
        g, g_spec = flatten(grads)
        s, s_spec = flatten(state)
        expected = flatten(init(grads))[1]
        if expected != s_spec:
            raise _state_mismatch(name, lw, grads, state, expected)
        p = None
        if ps is not None and check_ps:
            _flatten(grads, ps, "grads")
            p = flatten(ps)[0]
        u, new = _run(lw, g, s, p)
        return unflatten(g_spec, u), unflatten(s_spec, new)

    update.__dict__[_LEAFWISE] = lw
    return GradientTransformation(init, update)


def _leaves_along(spec: Any, tree: Tree) -> list[torch.Tensor] | None:
    """The leaves of ``tree`` if it has structure ``spec`` (an optree spec) and tensor
    leaves, else None. Much cheaper than flattening ``tree`` and comparing structures."""
    try:
        leaves = spec.flatten_up_to(tree)
    except ValueError:
        return None
    return leaves if all(isinstance(t, torch.Tensor) for t in leaves) else None


def _state_mismatch(
    name: str, lw: _Leafwise, grads: Tree, state: State, expected: Any
) -> ValueError:
    """The error for a state that does not fit the grads: the grads' missing and extra
    paths where a state tree is like ``ps``, else the two structures."""
    lw.check(grads, state)  # raises where it can name paths
    got = flatten(state)[1]
    if got == expected:
        kinds = sorted({type(x).__name__ for x in flatten(state)[0]})
        return ValueError(f"lux_torch.optim.{name}: state leaves must be tensors, got {kinds}")
    return ValueError(
        f"lux_torch.optim.{name}: the state does not fit this transformation and these "
        f"grads: expected {expected}, got {got}"
    )


def _stateless(
    name: str,
    fn: Callable[[Leaves, Factor, Leaves | None, _Kit], tuple[Leaves, Factor]],
    uses_ps: bool = False,
) -> GradientTransformation:
    def init(ps: Tree) -> State:
        return ()

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        u, f = fn(g, f, p, kit)
        return u, f, s

    return _transformation(name, init, _Leafwise(lambda n: 0, update, _no_check, uses_ps))


def _identity(name: str) -> GradientTransformation:
    return _transformation(name, lambda ps: (), _IDENTITY)


def _moments_check(name: str, keys: tuple[str, ...]) -> Callable[[Tree, State], None]:
    def check(grads: Tree, state: State) -> None:
        for key in keys:
            if isinstance(state, dict) and key in state:
                _flatten(grads, state[key], f"grads (to {name})")

    return check


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
        return unflatten(spec, _foreach("add", p, _flatten(updates, ps, "updates")[0]))
    p, spec = optree.tree_flatten(ps, namespace=NAMESPACE)
    u = _leaves_along(spec, updates)
    if u is None:
        u = _flatten(updates, ps, "updates")[0]  # raises, naming the paths
    return optree.tree_unflatten(spec, _foreach("add", p, u))


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

    members = [lw for lw in map(_leafwise, transforms) if lw is not None]
    if len(members) == len(transforms):
        active = [lw for lw in members if lw is not _IDENTITY]

        def size(n: int) -> int:
            return sum(lw.size(n) for lw in active)

        def leaf_update(
            g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
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
        return _transformation("chain", init, _Leafwise(size, leaf_update, check, uses_ps))

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
    return _stateless("scale", lambda g, f, p, kit: (g, _times(f, step_size)))


def set_to_zero() -> GradientTransformation:
    """Replace the updates by zeros (freezes what it is applied to; see :func:`partition`).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = partition({"train": adam(1e-3), "frozen": set_to_zero()},
        ...                 {"encoder": "frozen", "head": "train"})
    """
    return _stateless(
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
    _check_nonneg("weight_decay", weight_decay, "add_decayed_weights")
    if weight_decay == 0.0:
        return _identity("add_decayed_weights")

    def fn(g: Leaves, f: Factor, p: Leaves | None, kit: _Kit) -> tuple[Leaves, Factor]:
        if p is None:
            raise ValueError("lux_torch.optim.add_decayed_weights: update needs ps")
        g = _materialize(g, f, kit)
        op = kit.op_ if isinstance(g, _Owned) else kit.op
        return kit.own(op("add", g, p, alpha=weight_decay)), None

    return _stateless("add_decayed_weights", fn, uses_ps=True)


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

    def fn(g: Leaves, f: Factor, p: Leaves | None, kit: _Kit) -> tuple[Leaves, Factor]:
        g = _materialize(g, f, kit)
        if not g:
            return g, None
        norm = torch.sqrt(sum(torch.sum(x * x) for x in g))  # type: ignore[arg-type]
        return g, torch.clamp(max_norm / (norm + 1e-12), max=1.0)

    return _stateless("clip_by_global_norm", fn)


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
    _check_lr(lr, "scale_by_learning_rate")
    constant = None if callable(lr) else -float(lr)

    def init(ps: Tree) -> State:
        return {"count": _count()}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        count = s[0]
        step = -lr(count) if callable(lr) else constant
        return g, _times(f, step), [_inc(count)]  # type: ignore[arg-type]

    lw = _Leafwise(lambda n: 1, update, _no_check)
    return _transformation("scale_by_learning_rate", init, lw)


def _adam_corrections(
    b1: float, b2: float, bases: torch.Tensor, count: torch.Tensor
) -> tuple[Scalar, Scalar]:
    """``1 / (1 - b1 ** count)`` and ``sqrt(1 - b2 ** count)``: floats when eager (as in
    ``torch.optim``), float64 tensors when traced."""
    t = _plain_count(count)
    if t is not None:
        return 1.0 / (1.0 - b1**t), math.sqrt(1.0 - b2**t)
    if bases.device != count.device:
        bases = bases.to(count.device)
    bc1, bc2 = (1.0 - torch.pow(bases, count)).unbind()
    return torch.reciprocal(bc1), _hoist(torch.sqrt(bc2))


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
    _check_beta("betas[0]", b1, "scale_by_adam")
    _check_beta("betas[1]", b2, "scale_by_adam")
    _check_nonneg("eps", eps, "scale_by_adam")
    bases = torch.tensor([b1, b2], dtype=torch.float64)
    b2s: dict = {}
    epss: dict = {}

    def init(ps: Tree) -> State:
        return {"count": _count(), "mu": _zeros_like(ps), "nu": _zeros_like(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, n, op, op_ = _materialize(g, f, kit), len(g), kit.op, kit.op_
        count = _inc(s[0])
        mu = op("lerp", s[1 : n + 1], g, 1.0 - b1)
        nu = op("mul", s[n + 1 :], _scalar(kit, g, b2, b2s))
        nu = op_("addcmul", nu, g, g, value=1.0 - b2)
        inv_bc1, bc2_sqrt = _adam_corrections(b1, b2, bases, count)
        denom = op_("div", op("sqrt", nu), _scalar(kit, nu, bc2_sqrt))
        denom = op_("add", denom, _scalar(kit, nu, eps, epss))
        return kit.own(op("div", mu, denom)), inv_bc1, [count, *mu, *nu]

    lw = _Leafwise(lambda n: 1 + 2 * n, update, _moments_check("scale_by_adam", ("mu", "nu")))
    return _transformation("scale_by_adam", init, lw)


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
    _check_beta("alpha", alpha, "scale_by_rms")
    _check_nonneg("eps", eps, "scale_by_rms")
    alphas: dict = {}
    epss: dict = {}

    def init(ps: Tree) -> State:
        return {"count": _count(), "mu": _zeros_like(ps), "nu": _zeros_like(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, n, op, op_ = _materialize(g, f, kit), len(g), kit.op, kit.op_
        mu, nu = s[1 : n + 1], s[n + 1 :]
        nu = op_("addcmul", op("mul", nu, _scalar(kit, g, alpha, alphas)), g, g, value=1 - alpha)
        if centered:
            mu = op("lerp", mu, g, 1.0 - alpha)
            root = op_("sqrt", op("addcmul", nu, mu, mu, value=-1.0))
        else:
            root = op("sqrt", nu)
        out = op("div", g, op_("add", root, _scalar(kit, root, eps, epss)))
        return kit.own(out), None, [_inc(s[0]), *mu, *nu]

    lw = _Leafwise(lambda n: 1 + 2 * n, update, _moments_check("scale_by_rms", ("mu", "nu")))
    return _transformation("scale_by_rms", init, lw)


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
    _check_nonneg("eps", eps, "scale_by_adagrad")
    _check_nonneg("initial_accumulator_value", initial_accumulator_value, "scale_by_adagrad")
    epss: dict = {}

    def init(ps: Tree) -> State:
        return {"count": _count(), "sum": _zeros_like(ps, initial_accumulator_value)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, op = _materialize(g, f, kit), kit.op
        acc = op("addcmul", s[1:], g, g)
        root = op("sqrt", acc)
        out = op("div", g, kit.op_("add", root, _scalar(kit, root, eps, epss)))
        return kit.own(out), None, [_inc(s[0]), *acc]

    lw = _Leafwise(lambda n: 1 + n, update, _moments_check("scale_by_adagrad", ("sum",)))
    return _transformation("scale_by_adagrad", init, lw)


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
    _check_beta("betas[0]", b1, "scale_by_lion")
    _check_beta("betas[1]", b2, "scale_by_lion")

    def init(ps: Tree) -> State:
        return {"count": _count(), "mu": _zeros_like(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g, mu = _materialize(g, f, kit), s[1:]
        direction = kit.op_("sign", kit.op("lerp", mu, g, 1.0 - b1))
        return kit.own(direction), None, [_inc(s[0]), *kit.op("lerp", mu, g, 1.0 - b2)]

    lw = _Leafwise(lambda n: 1 + n, update, _moments_check("scale_by_lion", ("mu",)))
    return _transformation("scale_by_lion", init, lw)


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
    _check_beta("momentum", momentum, "trace")
    if nesterov and momentum == 0.0:
        raise ValueError("lux_torch.optim.trace: nesterov needs momentum > 0")
    if momentum == 0.0:
        return _identity("trace")
    momenta: dict = {}

    def init(ps: Tree) -> State:
        return {"buf": _zeros_like(ps)}

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: _Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        g = _materialize(g, f, kit)
        buf = kit.op_("add", kit.op("mul", s, _scalar(kit, s, momentum, momenta)), g)
        if nesterov:
            return kit.own(kit.op("add", g, buf, alpha=momentum)), None, buf
        return buf, None, buf  # not owned: the state holds it

    lw = _Leafwise(lambda n: n, update, _moments_check("trace", ("buf",)))
    return _transformation("trace", init, lw)


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
        g, spec = flatten(grads) if ps is None else _flatten(grads, ps, "grads")
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
        g, spec = flatten(grads) if ps is None else _flatten(grads, ps, "grads")
        full = expand(grads, grads if ps is None else ps)
        values = flatten(full)[0]
        out = list(g)
        new = {
            k: _split_apply(transforms[k], k.__eq__, values, full, grads, state[k], ps, out)
            for k in names
        }
        return unflatten(spec, out), new

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- aliases


def sgd(
    lr: LearningRate,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent, equal to ``torch.optim.SGD`` (dampening 0).

    Arguments:
        lr: learning rate (float or schedule).
        momentum: momentum factor.
        nesterov: Nesterov momentum.
        weight_decay: L2 penalty added to the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"buf"} or (), {"count"})``: the
        states of ``add_decayed_weights``, ``trace`` and ``scale_by_learning_rate``.

    Example:
        >>> opt = sgd(0.1, momentum=0.9)
    """
    _check_lr(lr, "sgd")
    return chain(
        add_decayed_weights(weight_decay), trace(momentum, nesterov), scale_by_learning_rate(lr)
    )


def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adam, equal to ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradients).

    Arguments:
        lr: learning rate (float or schedule).
        betas: moment decay rates.
        eps: numerical stabiliser.
        weight_decay: L2 penalty.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"count", "mu", "nu"},
        {"count"})``: the states of ``add_decayed_weights``, ``scale_by_adam`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = adam(1e-3)
    """
    _check_lr(lr, "adam")
    opt = chain(
        add_decayed_weights(weight_decay), scale_by_adam(betas, eps), scale_by_learning_rate(lr)
    )
    return _with_fused_step(opt, "adam", lr, betas, eps, weight_decay)


def adamw(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> GradientTransformation:
    """AdamW (decoupled weight decay), equal to ``torch.optim.AdamW``.

    Arguments:
        lr: learning rate (float or schedule); also scales the decay.
        betas: moment decay rates.
        eps: numerical stabiliser.
        weight_decay: decoupled decay factor.

    Returns:
        A :class:`GradientTransformation` with state ``({"count", "mu", "nu"}, (),
        {"count"})``: the states of ``scale_by_adam``, ``add_decayed_weights`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = adamw(1e-3, weight_decay=1e-2)
    """
    _check_lr(lr, "adamw")
    opt = chain(
        scale_by_adam(betas, eps), add_decayed_weights(weight_decay), scale_by_learning_rate(lr)
    )
    return _with_fused_step(opt, "adamw", lr, betas, eps, weight_decay)


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _with_fused_step(
    opt: GradientTransformation,
    kind: str,
    lr: LearningRate,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> GradientTransformation:
    """Attach ``fused_step(grads, state, ps, donate) -> (new_ps, new_state) | None`` to
    ``opt.update``.

    The step runs ``torch``'s fused Adam kernel (``torch._fused_adam_`` /
    ``torch._fused_adamw_``) on copies of the parameters and moments (inputs untouched), or
    on the given buffers themselves with ``donate=True``: one pass over the leaves instead
    of a dozen ``foreach`` passes, with the state layout of the ``chain``. :func:`step`
    (and so :func:`lux_torch.train_step`) uses it in eager mode; it returns ``None`` (use
    ``update`` + :func:`apply_updates`) when traced, under ``torch.func`` transforms, with
    a schedule, or for leaves the kernel does not take.
    """
    kernel = torch._fused_adam_ if kind == "adam" else torch._fused_adamw_
    adam_at = 1 if kind == "adam" else 0

    def fused_step(
        grads: Tree, state: State, ps: Tree, donate: bool = False
    ) -> tuple[Tree, State] | None:
        if callable(lr) or torch.compiler.is_compiling():
            return None
        p, spec = flatten(ps)
        if torch.is_grad_enabled() and any(t.requires_grad for t in p):
            return None
        moments = state[adam_at]
        count = _plain_count(moments["count"])
        if count is None:
            return None
        g = spec.flatten_up_to(grads) if hasattr(spec, "flatten_up_to") else None
        if g is None or not p:
            return None
        mu, nu = spec.flatten_up_to(moments["mu"]), spec.flatten_up_to(moments["nu"])
        device = p[0].device
        if (
            device.type not in ("cpu", "cuda")
            or any(
                type(t) is not torch.Tensor
                or t.device != device
                or t.dtype not in _FUSED_DTYPES
                or t.layout is not torch.strided
                for t in (*p, *g, *mu, *nu)
            )
            or not all(t.is_contiguous() for t in (*p, *mu, *nu))
        ):
            return None
        # The kernels walk memory linearly, ignoring strides (a transposed gradient, as
        # vmapped matmuls produce, silently updated the wrong elements): dense copies.
        g = [t if t.is_contiguous() else t.contiguous() for t in g]
        steps = [torch.full((), count + 1, dtype=torch.float32, device=device)] * len(p)
        if not donate:  # the in-place kernel on copies: no copy of the gradients
            p, mu, nu = ([t.clone() for t in x] for x in (p, mu, nu))
        kernel(
            p,
            g,
            mu,
            nu,
            [],
            steps,
            lr=float(lr),
            beta1=betas[0],
            beta2=betas[1],
            weight_decay=weight_decay,
            eps=eps,
            amsgrad=False,
            maximize=False,
        )
        new_p, new_mu, new_nu = p, mu, nu
        new_count = _inc(moments["count"])
        new_state = list(state)
        new_state[adam_at] = {
            "count": new_count,
            "mu": unflatten(spec, new_mu),
            "nu": unflatten(spec, new_nu),
        }
        new_state[2] = {"count": _inc(state[2]["count"])}
        return unflatten(spec, new_p), tuple(new_state)

    update = opt.update
    update.fused_step = fused_step  # type: ignore[attr-defined]
    return opt


def step(
    optimizer: GradientTransformation, grads: Tree, state: State, ps: Tree, *, donate: bool = False
) -> tuple[Tree, State]:
    """``update`` then :func:`apply_updates` in one call: ``(new_ps, new_state)``.

    Where the optimizer has a fused implementation (:func:`adam`, :func:`adamw` with a
    constant learning rate, in eager mode on CPU or CUDA) it runs that instead: one
    kernel, the same state layout, numerics equal up to floating-point rounding.

    Arguments:
        optimizer: the transformation.
        grads: gradients with the structure of ``ps``.
        state: the optimizer state.
        ps: the parameters.
        donate: allow the fused implementation to overwrite ``ps`` and ``state`` in place
            (like JAX's ``donate_argnums``): no copies, ``torch.optim``'s speed; the given
            ``ps`` and ``state`` must not be used afterwards. Ignored by the generic path.

    Returns:
        ``(new_ps, new_state)``; ``ps`` and ``state`` are not modified unless donated.

    Example:
        >>> ps, state = step(adam(1e-3), grads, state, ps)
    """
    _flatten(grads, ps, "grads")
    return _step(optimizer, grads, state, ps, donate)


def _step(
    optimizer: GradientTransformation, grads: Tree, state: State, ps: Tree, donate: bool
) -> tuple[Tree, State]:
    """:func:`step` for ``grads`` whose structure has been checked already."""
    fused = getattr(optimizer.update, "fused_step", None)
    if fused is not None:
        out = fused(grads, state, ps, donate)
        if out is not None:
            return out
    updates, state = optimizer.update(grads, state, ps)
    return apply_updates(ps, updates), state


def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    centered: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """RMSprop, equal to ``torch.optim.RMSprop``.

    Arguments:
        lr: learning rate (float or schedule).
        alpha: smoothing constant.
        eps: added after the square root.
        momentum: momentum factor applied to the scaled gradient.
        centered: normalise by the estimated variance.
        weight_decay: L2 penalty added to the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"count", "mu", "nu"},
        {"buf"} or (), {"count"})``: the states of ``add_decayed_weights``,
        ``scale_by_rms``, ``trace`` and ``scale_by_learning_rate``.

    Example:
        >>> opt = rmsprop(1e-2, centered=True)
    """
    _check_lr(lr, "rmsprop")
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_rms(alpha, eps, centered),
        trace(momentum),
        scale_by_learning_rate(lr),
    )


def adagrad(
    lr: LearningRate = 1e-2,
    eps: float = 1e-10,
    initial_accumulator_value: float = 0.0,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adagrad, equal to ``torch.optim.Adagrad``.

    The step size after ``count`` updates is ``lr / (1 + count * lr_decay)``.

    Arguments:
        lr: learning rate (float or schedule).
        eps: added after the square root.
        initial_accumulator_value: starting sum of squares.
        lr_decay: learning-rate decay (>= 0).
        weight_decay: L2 penalty added to the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"count", "sum"}, {"count"})``:
        the states of ``add_decayed_weights``, ``scale_by_adagrad`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = adagrad(1e-2, lr_decay=1e-3)
    """
    _check_lr(lr, "adagrad")
    _check_nonneg("lr_decay", lr_decay, "adagrad")
    step: LearningRate = lr
    if lr_decay != 0.0:

        def decayed(count: torch.Tensor) -> Scalar:
            base = lr(count) if callable(lr) else lr
            return base / (1.0 + count.to(torch.float64) * lr_decay)

        step = decayed
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_adagrad(eps, initial_accumulator_value),
        scale_by_learning_rate(step),
    )


def lion(
    lr: LearningRate = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Lion (Chen et al., 2023): sign updates with decoupled weight decay, as in optax.

    ``p -= lr * (sign(b1 * mu + (1 - b1) * g) + weight_decay * p)``, then
    ``mu = b2 * mu + (1 - b2) * g``.

    Arguments:
        lr: learning rate (float or schedule); also scales the decay. Lion wants a learning
            rate 3-10x smaller than AdamW's.
        betas: ``(beta1, beta2)`` of :func:`scale_by_lion`.
        weight_decay: decoupled decay factor.

    Returns:
        A :class:`GradientTransformation` with state ``({"count", "mu"}, (), {"count"})``:
        the states of ``scale_by_lion``, ``add_decayed_weights`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = lion(1e-4, weight_decay=1.0)
    """
    _check_lr(lr, "lion")
    return chain(
        scale_by_lion(betas), add_decayed_weights(weight_decay), scale_by_learning_rate(lr)
    )
