"""Types, helpers and the leaf-level protocol shared by the optimizers (see
:mod:`lux_torch.optim`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import optree
import torch

from .._graph import tracing
from ..tree import NAMESPACE, flatten, flatten_like, unflatten
from ..tree import map as tree_map

Tree = Any
State = Any
Scalar = float | torch.Tensor
Schedule = Callable[[torch.Tensor], Scalar]
LearningRate = float | Schedule
Leaves = Sequence[torch.Tensor]  # a list, or the tuple a torch._foreach_* op returns
Factor = Scalar | None  # a pending scalar multiplier of a leaf list; None means 1
ScalarCache = dict[torch.dtype, torch.Tensor]  # a constant scalar as a tensor, per dtype
# ``update.fused_step(grads, state, ps, donate) -> (new_ps, new_state)``, or None to fall back
FusedStep = Callable[[Tree, State, Tree, bool], tuple[Tree, State] | None]


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``init(ps) -> state`` and ``update(grads, state, ps) -> (u, state)``."""

    init: Callable[[Tree], State]
    update: Callable[..., tuple[Tree, State]]


# ----------------------------------------------------------------------------- helpers


def _under_vmap() -> bool:
    """Whether a :func:`torch.func.vmap` is active (at any level, e.g. around a ``grad``).

    Foreach kernels have no batching rule, so updates then use per-leaf ops. Decided up
    front rather than by catching the kernel's error, which would also hide real bugs.
    """
    if torch.compiler.is_compiling():  # Dynamo cannot trace the interpreter stack
        return False
    if torch._C._functorch.peek_interpreter_stack() is None:  # no torch.func transform
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    vmap = torch._C._functorch.TransformType.Vmap
    return any(i.key() == vmap for i in retrieve_all_functorch_interpreters())


def foreach_op(name: str, *args: Any, **kwargs: Any) -> Leaves:
    """``torch._foreach_<name>`` (non-in-place), per leaf under vmap; ``args[0]`` a list."""
    first = args[0]
    if not first:
        return []
    if not _under_vmap():
        return getattr(torch, f"_foreach_{name}")(*args, **kwargs)  # type: ignore[no-any-return]  # op by name
    single = getattr(torch, name)
    return [
        single(*(a[i] if isinstance(a, list | tuple) else a for a in args), **kwargs)
        for i in range(len(first))
    ]


def check_shapes(what: str, leaves: Leaves, like: Leaves, spec: Any, of: str = "parameter") -> None:
    """Raise when a leaf's shape differs from the parameter's: torch's ``foreach_op`` ops
    would broadcast it silently (a gradient of shape ``(1,)`` updating every element)."""
    for i, (a, b) in enumerate(zip(leaves, like, strict=True)):
        if a.shape != b.shape:
            path = ".".join(str(k) for k in spec.paths()[i])
            raise ValueError(
                f"lux_torch.optim: {what} {path!r} has shape {tuple(a.shape)}, but the "
                f"{of} has shape {tuple(b.shape)}"
            )


def flatten_checked(tree: Tree, like: Tree, what: str) -> tuple[list[torch.Tensor], Any]:
    """Leaves of ``tree``, checking that its structure equals that of ``like``."""
    return flatten_like(tree, like, f"lux_torch.optim: {what}")


def zeros_like_tree(ps: Tree, fill: float = 0.0) -> Tree:
    return tree_map(lambda p: torch.full_like(p, fill), ps)


def new_count() -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64)


def check_nonneg(name: str, value: float, fn: str) -> None:
    if value < 0.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be >= 0, got {value}")


def check_lr(lr: LearningRate, fn: str) -> None:
    if not callable(lr):
        check_nonneg("lr", float(lr), fn)


def check_beta(name: str, value: float, fn: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be in [0, 1), got {value}")


# ------------------------------------------------------------------ leaf-level protocol
#
# Every built-in transformation is written once, on leaf lists, as a ``Leafwise``;
# ``make_transformation`` wraps it into the public tree API. A ``chain`` of leaf-level members
# is itself leaf-level: it flattens grads, state and ps once, hands the lists through its
# members and unflattens once. A member's ``update(g, f, s, p, kit) -> (u, f, s)`` gets the
# gradient leaves ``g`` with a pending scalar factor ``f`` (the gradients are ``g * f``;
# ``None`` means 1), its own state leaves ``s`` (in flattening order: dict keys sorted),
# the parameter leaves ``p`` (or ``None``) and the ``Kit`` to compute with; it returns the
# update leaves, their pending factor and its new state leaves. Scaling members only
# multiply the factor, which is applied once, at the end: ``chain(scale_by_adam(),
# scale_by_learning_rate(lr))`` makes one pass of ``(m / (sqrt(v) / bc2 + eps)) * (-lr /
# bc1)`` over the leaves. Leaves that are ``Owned`` are temporaries of the update in
# progress, which later members may overwrite in place.


class Owned(list[torch.Tensor]):
    """Leaves that are temporaries of the update in progress: nothing else (inputs, state)
    refers to them, so they may be overwritten in place."""


class Kit(NamedTuple):
    """How a leaf update computes.

    ``op(name, *args)`` is ``torch._foreach_<name>``; ``op_(name, target, *args)`` its
    in-place form on ``target``, a temporary of the update, or an out-of-place op;
    ``own(leaves)`` marks temporaries that later members may overwrite (Dynamo cannot pass
    the marker class to an op, and where ``op_`` is out of place it does nothing);
    ``dtype``: the common dtype of all the floating-point leaves (CPU float32/float64
    only), with which :func:`kit_scalar` hands scalars to the ops as tensors.
    """

    op: Callable[..., Leaves]
    op_: Callable[..., Leaves]
    own: Callable[[Leaves], Leaves]
    dtype: torch.dtype | None = None


def _direct(name: str, first: Leaves, *args: Any, **kwargs: Any) -> Leaves:
    if not first:
        return []
    return getattr(torch, f"_foreach_{name}")(first, *args, **kwargs)  # type: ignore[no-any-return]  # op by name


def _direct_(name: str, target: Leaves, *args: Any, **kwargs: Any) -> Leaves:
    if target:
        getattr(torch, f"_foreach_{name}_")(target, *args, **kwargs)
    return target


def _same(leaves: Leaves) -> Leaves:
    return leaves


# _FAST: foreach kernels, in place on temporaries. _SAFE: out of place, per leaf under
# vmap (no foreach batching rules); autograd-tracked and vmapped updates use it. _TRACE:
# while torch.compile traces.
_FAST = Kit(_direct, _direct_, Owned)
_SAFE = Kit(foreach_op, foreach_op, _same)
_TRACE = Kit(_direct, _direct_, _same)
_FAST_FOR = {dtype: _FAST._replace(dtype=dtype) for dtype in (torch.float32, torch.float64)}


def kit_scalar(kit: Kit, leaves: Leaves, x: Scalar, cache: ScalarCache | None = None) -> Scalar:
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


def inc(count: torch.Tensor) -> torch.Tensor:
    """``count + 1`` (a tensor-tensor add skips wrapping the Python ``1`` in a tensor)."""
    return torch.add(count, _ONE)


def plain_count(count: torch.Tensor) -> int | None:
    """``count`` as an int when it is an ordinary CPU tensor outside any tracing, else None.

    Eager updates then compute their scalar factors in Python, as ``torch.optim`` does.
    """
    if (
        type(count) is torch.Tensor
        and count.is_cpu
        and not torch.compiler.is_compiling()
        and not torch._C._is_tracing()  # torch.jit.is_tracing() outside TorchScript, typed
        and not torch._C._functorch.is_functorch_wrapped_tensor(count)
        and torch._C._len_torch_dispatch_stack() == 0  # no make_fx / fake / functional mode
    ):
        return int(count.item())
    return None


def hoist(x: Scalar) -> Scalar:
    """A traced 0-dim tensor factor, computed once per step.

    Inductor otherwise inlines scalar arithmetic (``pow``, ``cos``, ...) into every vector
    iteration of the elementwise kernels that use it: Adam's bias corrections made the
    compiled CPU update 15x slower. A reduction is always materialized as a buffer.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 0 and tracing():
        return x.reshape(1, 1).sum(1).reshape(())
    return x


def times(f: Factor, k: Scalar) -> Scalar:
    return k if f is None else f * k


def materialize(g: Leaves, f: Factor, kit: Kit) -> Leaves:
    """``g * f`` (in place when ``g`` is owned); owned unless ``f`` is None."""
    if f is None:
        return g
    if isinstance(f, torch.Tensor) and f.requires_grad and torch.is_grad_enabled():
        return [x * f for x in g]  # foreach ops do not differentiate a tensor scalar
    op = kit.op_ if isinstance(g, Owned) else kit.op
    return kit.own(op("mul", g, kit_scalar(kit, g, hoist(f))))


class Leafwise(NamedTuple):
    size: Callable[[int], int]  # number of state leaves for n parameter leaves
    update: Callable[[Leaves, Factor, Leaves, Leaves | None, Kit], tuple[Leaves, Factor, Leaves]]
    check: Callable[[Tree, State], None]  # cold path: raise a named error for bad grads
    uses_ps: bool = False  # update reads the parameter leaves


_LEAFWISE = "_lux_leafwise"


def no_check(grads: Tree, state: State) -> None:
    return None


IDENTITY_LEAFWISE = Leafwise(lambda n: 0, lambda g, f, s, p, kit: (g, f, s), no_check)


def leafwise(t: GradientTransformation) -> Leafwise | None:
    return getattr(t.update, _LEAFWISE, None)


def _run(lw: Leafwise, g: Leaves, s: Leaves, p: Leaves | None) -> tuple[Leaves, Leaves]:
    """``lw.update`` with the fastest kit that applies; returns updates and new state."""
    leaves = (*g, *s, *(p or ()))
    if _under_vmap():
        kit = _SAFE  # foreach kernels have no batching rule: per-leaf ops
    elif tracing():
        kit = _TRACE  # Dynamo, make_fx or fake tensors: no cached constant tensors
    elif torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
        kit = _SAFE  # in-place ops could break a graph that autograd records
    elif g and g[0].is_cpu and (dtype := g[0].dtype) in _FAST_FOR:
        uniform = all(t.dtype is dtype or not t.is_floating_point() for t in leaves)
        kit = _FAST_FOR[dtype] if uniform else _FAST
    else:
        kit = _FAST
    u, f, new = lw.update(g, None, s, p, kit)
    return materialize(u, f, kit), new


def make_transformation(
    name: str, init: Callable[[Tree], State], lw: Leafwise
) -> GradientTransformation:
    """The tree API of a leaf-level transformation: flatten once, check, update, unflatten.

    Eager updates flatten ``grads`` and read ``state`` (and ``ps``) along the structure
    that the grads imply, which is also the check: ``spec.flatten_up_to`` raises on a
    mismatch (then :func:`_state_mismatch` names it). While ``torch.compile`` traces, every
    tree is flattened (in the same leaf order) and the structures are compared.
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
        s = leaves_along(s_spec, state)
        if s is None:
            raise _state_mismatch(name, lw, grads, state, s_spec)
        p = None
        if ps is not None and check_ps:
            p = leaves_along(g_spec, ps)
            if p is None:
                flatten_checked(grads, ps, "grads")  # raises, naming the paths
                p = flatten(ps)[0]
            check_shapes("grads", g, p, g_spec)
        u, new = _run(lw, g, s, p)
        # a state leaf of another shape than its gradient broadcast into the update
        check_shapes("grads", g, u, g_spec, of="update computed with the optimizer state")
        return optree.tree_unflatten(g_spec, u), optree.tree_unflatten(s_spec, new)

    def traced(grads: Tree, state: State, ps: Tree) -> tuple[Tree, State]:
        g, g_spec = flatten(grads)
        s, s_spec = flatten(state)
        expected = flatten(init(grads))[1]
        if expected != s_spec:
            raise _state_mismatch(name, lw, grads, state, expected)
        p = None
        if ps is not None and check_ps:
            flatten_checked(grads, ps, "grads")
            p = flatten(ps)[0]
            check_shapes("grads", g, p, g_spec)
        u, new = _run(lw, g, s, p)
        check_shapes("grads", g, u, g_spec, of="update computed with the optimizer state")
        return unflatten(g_spec, u), unflatten(s_spec, new)

    update.__dict__[_LEAFWISE] = lw
    return GradientTransformation(init, update)


def leaves_along(spec: Any, tree: Tree) -> list[torch.Tensor] | None:
    """The leaves of ``tree`` if it has structure ``spec`` (an optree spec) and tensor
    leaves, else None. Much cheaper than flattening ``tree`` and comparing structures."""
    try:
        leaves = spec.flatten_up_to(tree)
    except ValueError:
        return None
    return leaves if all(isinstance(t, torch.Tensor) for t in leaves) else None


def _state_mismatch(
    name: str, lw: Leafwise, grads: Tree, state: State, expected: Any
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


def stateless_transform(
    name: str,
    fn: Callable[[Leaves, Factor, Leaves | None, Kit], tuple[Leaves, Factor]],
    uses_ps: bool = False,
) -> GradientTransformation:
    def init(ps: Tree) -> State:
        return ()

    def update(
        g: Leaves, f: Factor, s: Leaves, p: Leaves | None, kit: Kit
    ) -> tuple[Leaves, Factor, Leaves]:
        u, f = fn(g, f, p, kit)
        return u, f, s

    return make_transformation(name, init, Leafwise(lambda n: 0, update, no_check, uses_ps))


def identity_transform(name: str) -> GradientTransformation:
    return make_transformation(name, lambda ps: (), IDENTITY_LEAFWISE)


def moments_check(name: str, keys: tuple[str, ...]) -> Callable[[Tree, State], None]:
    def check(grads: Tree, state: State) -> None:
        for key in keys:
            if isinstance(state, dict) and key in state:
                flatten_checked(grads, state[key], f"grads (to {name})")

    return check
