"""The contract of an optimizer and the helpers every transformation is written with (see
:mod:`lux_torch.optim`).

A transformation is two pure functions. ``init(ps)`` builds a named state (a dict of
tensors and of trees like ``ps``); ``update(grads, state, ps)`` reads the leaves of the
trees (:func:`leaves_like`, :func:`leaves_along`), computes the rule with the leaf-list
ops of :mod:`lux_torch.optim.foreach` and rebuilds the trees (``unflatten``)::

    def update(grads, state, ps=None):
        g, spec = leaves_like(grads, state["mu"], "grads (to scale_by_x)", of=STATE)
        mu = fe.lerp(leaves_along(spec, state["mu"], "scale_by_x"), g, 1 - beta)
        return unflatten(spec, mu), {"mu": unflatten(spec, mu)}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any, NamedTuple

import torch

from .._graph import tracing
from ..tree import flatten, flatten_like
from ..tree import map as tree_map

Tree = Any
State = Any
Scalar = float | torch.Tensor
Schedule = Callable[[torch.Tensor], Scalar]
LearningRate = float | Schedule
Leaves = Sequence[torch.Tensor]  # a list, or the tuple a torch._foreach_* op returns
STATE = "update computed with the optimizer state"  # ``of`` when grads are checked against it


class FusedAdam(NamedTuple):
    """The configuration of :func:`~lux_torch.optim.adam` / ``adamw`` with a constant learning
    rate or a schedule: :func:`~lux_torch.optim.step` runs torch's fused Adam kernel for it.

    ``moments``: the index of ``scale_by_adam``'s state in the chain's state tuple; the
    learning rate's count is the last entry (a schedule is evaluated at it, as ``update``
    evaluates it).
    """

    decoupled: bool  # AdamW: decay the parameters, not the gradients
    lr: float | Schedule
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    moments: int


class FusedSGD(NamedTuple):
    """The configuration of :func:`~lux_torch.optim.sgd` with a constant learning rate or a
    schedule: :func:`~lux_torch.optim.step` runs torch's fused SGD kernel for it.

    The chain's state is ``((), {"buf"} or (), {"count"})``: the momentum buffer (when
    ``momentum > 0``) at index 1, the learning rate's count last (a schedule is evaluated
    at it).
    """

    lr: float | Schedule
    momentum: float
    nesterov: bool
    weight_decay: float


class Reduced(NamedTuple):
    """An optimizer that first reduces the gradients (e.g. averages them across processes,
    :func:`lux_torch.distributed.DistributedOptimizer`), then runs ``inner``."""

    reduce: Callable[[Tree], Tree]
    inner: GradientTransformation


Descriptor = FusedAdam | FusedSGD | Reduced | None


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``init(ps) -> state`` and ``update(grads, state, ps) -> (u, state)``.

    A pair, as optax's (``init, update = opt`` works). ``descriptor``: what
    :func:`~lux_torch.optim.step` may run instead of ``update`` + ``apply_updates`` (a
    :class:`FusedAdam` or :class:`FusedSGD` configuration, a :class:`Reduced` wrapper),
    or ``None`` (the default: ``step`` runs ``update``); :func:`described` attaches one.
    A transformation built from another one (``chain``, ``_replace``, a wrapper) does not
    inherit it.
    """

    init: Callable[[Tree], State]
    update: Callable[..., tuple[Tree, State]]

    @property
    def descriptor(self) -> Descriptor:
        return None


class _Described(GradientTransformation):
    """A :class:`GradientTransformation` (still the pair ``(init, update)``) that carries a
    descriptor for :func:`~lux_torch.optim.step`."""

    def __new__(
        cls, init: Callable[[Tree], State], update: Callable[..., tuple[Tree, State]], d: Any
    ) -> _Described:
        self = super().__new__(cls, init, update)
        self.__dict__["_descriptor"] = d
        return self

    @property
    def descriptor(self) -> Descriptor:
        d: Descriptor = self.__dict__.get("_descriptor")  # None after _replace / _make
        return d

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling keeps the descriptor
        return (self.init, self.update, self.descriptor)


def described(opt: GradientTransformation, descriptor: Descriptor) -> GradientTransformation:
    """``opt`` carrying ``descriptor`` (the fast path :func:`~lux_torch.optim.step` may
    take); ``None`` gives the plain pair."""
    if descriptor is None:
        return GradientTransformation(opt.init, opt.update)
    return _Described(opt.init, opt.update, descriptor)


LeafRule = Callable[..., "tuple[Leaves, State, bool] | None"]


class LeafUpdate:
    """An ``update`` that also runs on leaf lists, the protocol :func:`chain` uses to
    flatten once per update instead of once per member (internal). A chain of them is one
    too, and :func:`~lux_torch.optim.step` runs it on the leaves it has flattened.

    Calling it is the ordinary ``update(grads, state, ps=None) -> (updates, state)``
    (``tree``: checks the trees, flattens, rebuilds). ``leaves(g, spec, state, p, owned)``
    is the same rule on the leaves ``g`` of the gradients (along ``spec``; ``p``: the leaves
    of ``ps`` along ``spec``, or ``None``) and returns ``(u, new_state, u_owned)``, or
    ``None`` when ``state`` is not laid out along ``spec`` (``chain`` then calls ``tree`` on
    the rebuilt gradients, which reorders or raises the usual error). ``owned`` says that the
    leaves of ``g`` are temporaries of this update, referred to by nothing else: the rule
    may write into them with the ``_`` ops of :mod:`~lux_torch.optim.foreach`; ``u_owned``
    says the same of ``u`` for the next member.
    """

    __slots__ = ("leaves", "tree")

    def __init__(self, tree: Callable[..., tuple[Tree, State]], leaves: LeafRule) -> None:
        self.tree = tree
        self.leaves = leaves

    def __call__(self, grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        return self.tree(grads, state, ps)


class StateMismatch(ValueError):
    """A state that does not fit the transformation (see :func:`check_state`)."""


# ----------------------------------------------------------------------------- helpers


def check_shapes(what: str, leaves: Leaves, like: Leaves, spec: Any, of: str = "parameter") -> None:
    """Raise when a leaf's shape differs from the parameter's: torch's ``_foreach`` ops
    would broadcast it silently (a gradient of shape ``(1,)`` updating every element)."""
    if [a.shape for a in leaves] == [b.shape for b in like]:
        return
    for i, (a, b) in enumerate(zip(leaves, like, strict=True)):
        if a.shape != b.shape:
            path = ".".join(str(k) for k in spec.paths()[i])
            raise ValueError(
                f"lux_torch.optim: {what} {path!r} has shape {tuple(a.shape)}, but the "
                f"{of} has shape {tuple(b.shape)}"
            )


def leaves_up_to(spec: Any, tree: Tree) -> list[torch.Tensor] | None:
    """The leaves of ``tree`` in the order of ``spec`` (dict entries matched by key), when
    ``tree`` has that structure; ``None`` when it has another one, or while Dynamo traces
    (callers then flatten ``tree`` and name the difference).

    The one full flatten of an update is that of the tree that gives ``spec``: reading
    another tree along it costs a twentieth of flattening it (optree 0.20, 6 leaves).
    """
    if torch.compiler.is_compiling():
        return None
    try:
        leaves = spec.flatten_up_to(tree)
    except ValueError:  # another structure
        return None
    if all(map(isinstance, leaves, repeat(torch.Tensor))):  # no subtree where spec has a leaf
        return leaves  # type: ignore[no-any-return]  # optree's list
    return None


def flatten_checked(tree: Tree, like: Tree, what: str) -> tuple[list[torch.Tensor], Any]:
    """Leaves of ``tree``, checking that its structure equals that of ``like`` (dict
    entries matched by key); ``(leaves, spec)``, ``spec`` the structure of ``like``."""
    spec = flatten(like)[1]
    leaves = leaves_up_to(spec, tree)
    if leaves is None:
        return flatten_like(tree, like, f"lux_torch.optim: {what}")  # reorders or raises
    return leaves, spec


def leaves_like(
    tree: Tree, like: Tree, what: str, of: str = "parameter"
) -> tuple[list[torch.Tensor], Any]:
    """``(leaves, spec)``: the leaves of ``tree`` in the order of ``like`` (``spec``: the
    structure of ``like``), refusing another structure or a leaf of another shape."""
    leaves, _, spec = leaves_and_like(tree, like, what, of)
    return leaves, spec


def leaves_and_like(
    tree: Tree, like: Tree, what: str, of: str = "parameter"
) -> tuple[list[torch.Tensor], list[torch.Tensor], Any]:
    """``(leaves of tree, leaves of like, spec)`` as :func:`leaves_like`."""
    ref, spec = flatten(like)
    leaves = leaves_up_to(spec, tree)
    if leaves is None:
        leaves = flatten_like(tree, like, f"lux_torch.optim: {what}")[0]  # reorders or raises
    check_shapes(what, leaves, ref, spec, of)
    return leaves, ref, spec


def along(spec: Any, tree: Tree) -> list[torch.Tensor] | None:
    """The leaves of ``tree`` when it has the structure ``spec`` (dict entries matched by
    key, or, while Dynamo traces, in ``spec``'s order), else ``None``."""
    leaves = leaves_up_to(spec, tree)
    if leaves is None:
        leaves, got = flatten(tree)
        if got != spec:
            return None
    return leaves


def leaves_along(spec: Any, tree: Tree, name: str) -> list[torch.Tensor]:
    """The leaves of the state tree ``tree``, which must have the structure ``spec``."""
    leaves = along(spec, tree)
    if leaves is None:
        raise StateMismatch(
            f"lux_torch.optim.{name}: the state does not fit these grads: expected {spec}, "
            f"got {flatten(tree)[1]}"
        )
    return leaves


def check_grads(grads: Tree, ps: Tree) -> tuple[list[torch.Tensor], Any]:
    """``(leaves, spec)`` of ``grads``, refusing grads unlike ``ps`` (when given)."""
    if ps is None:
        return flatten(grads)
    return leaves_like(grads, ps, "grads")


def check_state(state: State, keys: tuple[str, ...], name: str) -> None:
    """Refuse a state that is not a dict with exactly ``keys``."""
    if not isinstance(state, dict) or state.keys() != set(keys):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise StateMismatch(
            f"lux_torch.optim.{name}: the state does not fit this transformation: expected "
            f"the keys {sorted(keys)}, got {got}"
        )


def zeros_like_tree(ps: Tree, fill: float = 0.0) -> Tree:
    return tree_map(lambda p: torch.full_like(p, fill), ps)


def new_count() -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64)


_ONE = torch.ones((), dtype=torch.int64)  # a constant, never written


def inc(count: torch.Tensor) -> torch.Tensor:
    """``count + 1`` (a tensor-tensor add skips wrapping the Python ``1`` in a tensor)."""
    return torch.add(count, _ONE)


# The checks of hyperparameters pass 0-dim tensors (values injected by inject_hyperparams,
# which checks them as floats when eager; a traced value cannot be read).


def check_nonneg(name: str, value: Scalar, fn: str) -> None:
    if not isinstance(value, torch.Tensor) and value < 0.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be >= 0, got {value}")


def check_lr(lr: LearningRate, fn: str) -> None:
    if not callable(lr):
        check_nonneg("lr", lr, fn)


def check_beta(name: str, value: Scalar, fn: str) -> None:
    if not isinstance(value, torch.Tensor) and not 0.0 <= value < 1.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be in [0, 1), got {value}")


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


_HOIST = 64  # above Inductor's unroll_reductions_threshold (8 in torch 2.13)


def hoist(x: Scalar) -> Scalar:
    """A traced 0-dim tensor factor, computed once per step.

    Inductor otherwise inlines scalar arithmetic (``pow``, ``cos``, ...) into every vector
    iteration of the elementwise kernels that use it: Adam's bias corrections made the
    compiled CPU update 5-15x slower. A reduction is materialized as a buffer, unless it
    is small enough for Inductor to unroll into pointwise code (a size-1 ``sum`` was, and
    got inlined again): the maximum of ``x`` repeated 64 times, exactly ``x``.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 0 and tracing():
        return x.reshape(1).expand(_HOIST).amax()
    return x


def exponent(count: torch.Tensor) -> int | torch.Tensor:
    """``count`` to raise a decay rate to: a Python int when eager (scalar factors such as
    ``1 - beta ** t`` are then Python floats, as ``torch.optim`` computes them), a float64
    tensor when traced."""
    t = plain_count(count)
    return count.to(torch.float64) if t is None else t


def is_zero(value: Scalar) -> bool:
    """``value`` is the Python number 0 (a tensor, possibly traced, never counts)."""
    return not isinstance(value, torch.Tensor) and value == 0.0
