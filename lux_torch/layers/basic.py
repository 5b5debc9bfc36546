"""Basic layers: ``Linear``, ``Bilinear``, ``Embedding``, ``Scale`` and shape utilities.

Constructor arguments, parameter names and shapes follow ``torch.nn`` (so flattened ``ps``
names match ``state_dict`` names); Lux's ``activation=`` argument is kept. Default
initialisation reproduces ``torch.nn``'s distributions, drawn from the explicit key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, InitVar
from typing import Any, cast

import torch
import torch.nn.functional as F

from .. import init
from .. import random as lrandom
from .._graph import forward_ad_active
from ..core import Layer, State, describe_config
from ._common import (
    TORCH_PLACEMENT,
    activate,
    affine_repr,
    check_affine,
    check_callable,
    check_int,
    not_a_tensor,
    refuse_tensor_argument,
)

__all__ = [
    "Bilinear",
    "Embedding",
    "Flatten",
    "Identity",
    "Linear",
    "NoOpLayer",
    "Reshape",
    "Scale",
    "SelectDim",
    "Unflatten",
    "WrappedFunction",
]

Activation = Callable[[torch.Tensor], torch.Tensor]
Initializer = Callable[..., torch.Tensor]
Params = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- helpers


def fan_in_uniform(key: torch.Tensor, shape: Sequence[int], fan_in: int) -> torch.Tensor:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: torch.nn's default for Linear-like weights.

    Equals ``init.kaiming_uniform(key, *shape, a=math.sqrt(5))`` for the weight, and is
    torch.nn's default bias distribution too; ``fan_in == 0`` gives zeros (as torch).
    """
    if fan_in == 0:
        return init.zeros(key, *shape)
    bound = 1.0 / math.sqrt(fan_in)
    return init.uniform(key, *shape, low=-bound, high=bound)


def affine_params(
    layer: Any,
    key: torch.Tensor,
    shape: tuple[int, ...],
    fan_in: int,
    bias_size: int | None = None,
) -> Params:
    """``{"weight": shape, "bias": (bias_size,)}`` (``bias_size`` defaults to ``shape[0]``)
    for a layer with ``weight_init``, ``bias_init`` and ``bias`` fields; torch.nn's
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the initializers left as ``None``."""
    size = shape[0] if bias_size is None else bias_size
    k_weight, k_bias = lrandom.split(key)
    if layer.weight_init is None:
        weight = fan_in_uniform(k_weight, shape, fan_in)
    else:
        weight = layer.weight_init(k_weight, *shape)
    ps = {"weight": weight}
    if layer.bias:
        if layer.bias_init is None:
            ps["bias"] = fan_in_uniform(k_bias, (size,), fan_in)
        else:
            ps["bias"] = layer.bias_init(k_bias, size)
    return ps


def _last_dim_problem(x: Any, features: int) -> str | None:
    """``"expected input of shape (*, n), got (...)"`` when the last dimension is wrong."""
    problem = not_a_tensor(x)
    if problem is None and (x.ndim == 0 or x.shape[-1] != features):
        problem = f"expected input of shape (*, {features}), got {tuple(x.shape)}"
    return problem


# --------------------------------------------------------------------------- affine layers


class Linear(Layer):
    """Affine map ``y = activation(x @ weight.T + bias)`` (``torch.nn.Linear`` + activation).

    Arguments:
        in_features: size of the last dimension of the input.
        out_features: size of the last dimension of the output.
        bias: whether to add a learnable bias.
        activation: function applied elementwise to the output (e.g. ``torch.tanh``).
        weight_init: ``f(key, out_features, in_features) -> Tensor``; default torch.nn's
            ``U(-1/sqrt(in_features), 1/sqrt(in_features))``.
        bias_init: ``f(key, out_features) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x`` of shape ``(*, in_features)``.

    Returns:
        ``y`` of shape ``(*, out_features)`` and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(out_features, in_features)``
        - ``bias``: ``(out_features,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = Linear(2, 16, activation=torch.tanh)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 2), ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    in_features: int
    out_features: int
    bias: bool = True
    activation: Activation | None = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        check_int("Linear", "in_features", self.in_features)
        check_int("Linear", "out_features", self.out_features)
        check_affine("Linear", self)

    def init_params(self, key: torch.Tensor) -> Params:
        shape = (self.out_features, self.in_features)
        return affine_params(self, key, shape, self.in_features)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        y = F.linear(x, ps["weight"], ps["bias"] if self.bias else None)
        return activate(self.activation, y), st

    def extra_repr(self) -> str:
        return affine_repr(f"{self.in_features} => {self.out_features}", self)

    def describe_input_error(self, x: Any) -> str | None:
        return _last_dim_problem(x, self.in_features)


class Bilinear(Layer):
    """Bilinear map ``y_k = activation(x1 @ weight[k] @ x2 + bias[k])`` (``torch.nn.Bilinear``).

    Arguments:
        in1_features: size of the last dimension of ``x1``.
        in2_features: size of the last dimension of ``x2``.
        out_features: size of the last dimension of the output.
        bias: whether to add a learnable bias.
        activation: function applied elementwise to the output.
        weight_init: ``f(key, out_features, in1_features, in2_features) -> Tensor``;
            default torch.nn's ``U(-1/sqrt(in1_features), 1/sqrt(in1_features))``.
        bias_init: ``f(key, out_features) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x = (x1, x2)``, a tuple with ``x1`` of shape ``(*, in1_features)`` and ``x2`` of
        shape ``(*, in2_features)`` (same leading dimensions).

    Returns:
        ``y`` of shape ``(*, out_features)`` and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(out_features, in1_features, in2_features)``
        - ``bias``: ``(out_features,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = Bilinear(2, 3, 4)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer((torch.ones(5, 2), torch.ones(5, 3)), ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    in1_features: int
    in2_features: int
    out_features: int
    bias: bool = True
    activation: Activation | None = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        for name in ("in1_features", "in2_features", "out_features"):
            check_int("Bilinear", name, getattr(self, name))
        check_affine("Bilinear", self)

    def init_params(self, key: torch.Tensor) -> Params:
        shape = (self.out_features, self.in1_features, self.in2_features)
        return affine_params(self, key, shape, self.in1_features)

    def __call__(
        self, x: tuple[torch.Tensor, torch.Tensor], ps: Params, st: State
    ) -> tuple[torch.Tensor, State]:
        x1, x2 = x
        y = F.bilinear(x1, x2, ps["weight"], ps["bias"] if self.bias else None)
        return activate(self.activation, y), st

    def extra_repr(self) -> str:
        head = f"({self.in1_features}, {self.in2_features}) => {self.out_features}"
        return affine_repr(head, self)

    def describe_input_error(self, x: Any) -> str | None:
        expected = f"(*, {self.in1_features}) and (*, {self.in2_features})"
        if not (isinstance(x, (tuple, list)) and len(x) == 2):
            return f"expected a tuple (x1, x2) of Tensors of shapes {expected}, got " + (
                f"a {type(x).__name__} of length {len(x)}"
                if isinstance(x, (tuple, list))
                else type(x).__name__
            )
        x1, x2 = x
        problem = not_a_tensor(x1) or not_a_tensor(x2)
        if problem:
            return f"x1 and x2: {problem}"
        if (
            x1.ndim == 0
            or x2.ndim == 0
            or x1.shape[-1] != self.in1_features
            or x2.shape[-1] != self.in2_features
            or x1.shape[:-1] != x2.shape[:-1]
        ):
            return (
                f"expected inputs of shapes {expected} with equal leading dimensions, "
                f"got {tuple(x1.shape)} and {tuple(x2.shape)}"
            )
        return None


class Scale(Layer):
    """Elementwise affine map ``y = activation(weight * x + bias)`` (Lux's ``Scale``).

    ``weight`` and ``bias`` have shape ``dims`` and broadcast against the trailing
    dimensions of ``x`` (batch first).

    Arguments:
        dims: shape of ``weight``/``bias`` (an int or a tuple of ints).
        bias: whether to add a learnable bias.
        activation: function applied elementwise to the output.
        weight_init: ``f(key, *dims) -> Tensor``; default ones.
        bias_init: ``f(key, *dims) -> Tensor``; default zeros.

    Input:
        ``x`` of shape ``(*, *dims)`` (anything that broadcasts with ``dims``).

    Returns:
        ``y`` of the broadcast shape and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``dims``
        - ``bias``: ``dims`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = Scale(3, activation=torch.tanh)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 3), ps, st)  # doctest: +SKIP
    """

    dims: int | tuple[int, ...] | list[int]
    bias: bool = True
    activation: Activation | None = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        dims = (self.dims,) if isinstance(self.dims, int) else self.dims
        if not isinstance(dims, (tuple, list)):
            raise TypeError(
                f"Scale: dims must be an int or a tuple of ints, got {type(self.dims).__name__}"
            )
        self._set_fields(dims=tuple(check_int("Scale", "dims", d) for d in dims))
        check_affine("Scale", self)

    @property
    def _shape(self) -> tuple[int, ...]:
        return cast(tuple[int, ...], self.dims)  # a tuple once __post_init__ has run

    def init_params(self, key: torch.Tensor) -> Params:
        k_weight, k_bias = lrandom.split(key)
        weight_init = self.weight_init or init.ones
        ps = {"weight": weight_init(k_weight, *self._shape)}
        if self.bias:
            ps["bias"] = (self.bias_init or init.zeros)(k_bias, *self._shape)
        return ps

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        y = x * ps["weight"]
        if self.bias:
            y = y + ps["bias"]
        return activate(self.activation, y), st

    def extra_repr(self) -> str:
        head = str(self._shape[0]) if len(self._shape) == 1 else str(self._shape)
        return affine_repr(head, self)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        try:
            torch.broadcast_shapes(x.shape, self._shape)
        except RuntimeError:
            dims = ", ".join(map(str, self._shape))
            return f"expected input of shape (*, {dims}), got {tuple(x.shape)}"
        return None


# --------------------------------------------------------------------------- embedding


def embedding_forward_mode(x: torch.Tensor, weight: torch.Tensor, layer: Any) -> torch.Tensor:
    """``F.embedding`` under forward-mode AD, with the tangents that torch's backward
    implies, so that ``jvp`` and ``vjp`` describe one linear map: the ``padding_idx`` row is
    a constant (torch gives it no gradient) and, with ``scale_grad_by_freq``, the tangent of
    each looked-up row is divided by the number of times its index occurs in ``x``."""
    n = weight.shape[0]
    if layer.padding_idx is not None:
        pad = torch.arange(n, device=weight.device) == layer.padding_idx % n
        weight = torch.where(pad[:, None], weight.detach(), weight)
    y = F.embedding(x, weight)
    if layer.scale_grad_by_freq:
        counts = torch.bincount(x.reshape(-1), minlength=n)[x].unsqueeze(-1).to(y.dtype)
        y = y.detach() + (y - y.detach()) / counts
    return y


class Embedding(Layer):
    """Lookup table: row ``i`` of ``weight`` for each index ``i`` (``torch.nn.Embedding``).

    Every ``torch.nn.Embedding`` constructor argument is accepted, by name and in torch's
    positional order, so torch code carries over; the ones a pure layer cannot honour raise
    a ``ValueError`` that says what to do instead.

    Arguments:
        num_embeddings: number of rows (valid indices are ``0 .. num_embeddings - 1``).
        embedding_dim: size of each embedding vector.
        padding_idx: if given, that row is initialised to zeros and receives no gradient
            (negative values count from the end, as in torch; stored normalised).
        max_norm: not supported (must be ``None``): ``torch.nn.Embedding`` renormalises
            its weight *in place*, which a pure layer cannot do. Renormalise explicitly,
            e.g. ``WrappedFunction(lambda e: e * (m / e.norm(dim=-1, keepdim=True)).clamp(max=1))``
            after the embedding.
        norm_type: the p of the p-norm for ``max_norm`` (as torch; with ``max_norm=None``
            it has no effect, in torch too).
        scale_grad_by_freq: scale gradients by the inverse frequency of the indices in the
            batch (as torch; affects the backward pass only).
        sparse: accepted for torch compatibility, and the gradient is **dense**: its values
            equal those of torch's sparse gradient (``grad.to_dense()``), but its layout is
            strided. Sparse gradients do not compose with ``torch.func`` (``jacrev``,
            ``vmap`` of ``grad``), ``gradcheck`` or lux's optimizers; a dense gradient does.
            What is lost is only the memory saving of a sparse gradient.
        _weight: not supported (must be ``None``): a layer holds configuration only, never
            tensors. Put the tensor in ``ps`` instead: ``ps = {"weight": w}`` or
            ``lux.load_state_dict(layer, {"weight": w})``.
        _freeze: not supported (must be ``False``): which parameters train is the caller's
            choice under pure functions; differentiate with respect to the others, or wrap
            the layer in :func:`lux_torch.freeze`.
        device, dtype: not supported (must be ``None``): a layer holds no tensors; pass them
            to :func:`lux_torch.setup` (``setup(key, layer, device=..., dtype=...)``).

    Keyword Arguments:
        weight_init: ``f(key, num_embeddings, embedding_dim) -> Tensor``; default torch.nn's
            ``N(0, 1)``. The ``padding_idx`` row is zeroed afterwards in either case.

    Input:
        ``x``: an integer tensor of indices, any shape ``(*)``.

    Returns:
        ``y`` of shape ``(*, embedding_dim)`` and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(num_embeddings, embedding_dim)``

    **States**
        None (``{}``).

    Example:
        >>> layer = Embedding(10, 3)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.tensor([[1, 2], [4, 9]]), ps, st)  # doctest: +SKIP
    """

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None = None
    max_norm: float | None = None
    norm_type: float = 2.0
    scale_grad_by_freq: bool = False
    sparse: bool = False
    # torch's constructor-only arguments: checked in __post_init__, never stored
    _weight: InitVar[torch.Tensor | None] = None
    _freeze: InitVar[bool] = False
    device: InitVar[torch.device | str | None] = None
    dtype: InitVar[torch.dtype | None] = None
    _: KW_ONLY
    weight_init: Initializer | None = None

    def __post_init__(
        self,
        _weight: torch.Tensor | None,
        _freeze: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        check_int("Embedding", "num_embeddings", self.num_embeddings)
        check_int("Embedding", "embedding_dim", self.embedding_dim)
        if self.padding_idx is not None:
            n = self.num_embeddings
            idx = check_int("Embedding", "padding_idx", self.padding_idx, minimum=None)
            if not -n <= idx < n:
                raise ValueError(
                    f"Embedding: padding_idx must be in [-{n}, {n}) (num_embeddings={n}), got {idx}"
                )
            self._set_fields(padding_idx=idx % n)
        if self.max_norm is not None:
            raise ValueError(
                "Embedding: max_norm is not supported: torch.nn.Embedding renormalises its "
                "weight in place, which a pure layer cannot do; renormalise the looked-up "
                "rows explicitly (see the Embedding docstring)"
            )
        if isinstance(self.norm_type, bool) or not isinstance(self.norm_type, (int, float)):
            raise TypeError(
                f"Embedding: norm_type must be a float, got {type(self.norm_type).__name__}"
            )
        self._set_fields(norm_type=float(self.norm_type))
        for name, value in (
            ("scale_grad_by_freq", self.scale_grad_by_freq),
            ("sparse", self.sparse),
            ("_freeze", _freeze),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"Embedding: {name} must be a bool, got {type(value).__name__}")
        tensor_arguments: dict[str, object] = {"_weight": _weight, "device": device, "dtype": dtype}
        for argument, given in tensor_arguments.items():
            refuse_tensor_argument("Embedding", argument, given)
        if _freeze:
            raise ValueError(
                "Embedding: _freeze=True is not supported: under pure functions the caller "
                "chooses what to differentiate; leave the weight out of the gradient or wrap "
                "the layer with lux_torch.freeze(layer)"
            )
        check_callable("Embedding", "weight_init", self.weight_init)

    def init_params(self, key: torch.Tensor) -> Params:
        shape = (self.num_embeddings, self.embedding_dim)
        weight = (self.weight_init or init.normal)(key, *shape)
        if self.padding_idx is not None:
            row = torch.tensor([self.padding_idx], device=weight.device)
            weight = weight.index_fill(0, row, 0.0)
        return {"weight": weight}

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if forward_ad_active():
            return embedding_forward_mode(x, ps["weight"], self), st
        y = F.embedding(
            x, ps["weight"], self.padding_idx, scale_grad_by_freq=self.scale_grad_by_freq
        )
        return y, st

    def extra_repr(self) -> str:
        parts = [f"{self.num_embeddings} => {self.embedding_dim}"]
        if self.padding_idx is not None:
            parts.append(f"padding_idx={self.padding_idx}")
        if self.norm_type != 2.0:
            parts.append(f"norm_type={self.norm_type!r}")
        if self.scale_grad_by_freq:
            parts.append("scale_grad_by_freq=True")
        if self.sparse:
            parts.append("sparse=True")
        if self.weight_init is not None:
            parts.append(f"weight_init={describe_config(self.weight_init)}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            return f"expected a tensor of integer indices, got dtype {x.dtype}"
        if x.numel() and (x.min() < 0 or x.max() >= self.num_embeddings):
            return (
                f"expected indices in [0, {self.num_embeddings}), got values in "
                f"[{int(x.min())}, {int(x.max())}]"
            )
        return None


# --------------------------------------------------------------------------- functions & shapes


class WrappedFunction(Layer):
    """A plain function ``x -> y`` as a layer without parameters or state (Lux's).

    Containers wrap plain callables in it automatically, so ``Chain(Linear(2, 3), torch.relu)``
    works. The function must be pure (torch ops on ``x`` only).

    Arguments:
        func: the function; its name appears in the printout.

    Input:
        whatever ``func`` accepts.

    Returns:
        ``func(x)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> layer = WrappedFunction(torch.relu)
        >>> y, _ = layer(torch.tensor([-1.0, 2.0]), {}, {})
        >>> y
        tensor([0., 2.])
    """

    func: Callable[[Any], Any]

    def __post_init__(self) -> None:
        if not callable(self.func):
            raise TypeError(
                f"WrappedFunction: func must be callable, got {type(self.func).__name__}"
            )
        if isinstance(self.func, Layer):
            raise TypeError(
                f"WrappedFunction: func is already a layer ({type(self.func).__name__}); "
                "use it directly"
            )
        if isinstance(self.func, torch.nn.Module):
            raise TypeError(
                f"WrappedFunction: func is a torch.nn.Module ({type(self.func).__name__}) whose "
                "parameters would be hidden from ps; wrap it with lux_torch.from_torch instead"
            )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        return self.func(x), st

    def extra_repr(self) -> str:
        return describe_config(self.func)


class NoOpLayer(Layer):
    """The identity: returns its input unchanged (Lux's ``NoOpLayer``).

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> NoOpLayer()(torch.ones(2), {}, {})[0]
        tensor([1., 1.])
    """

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        return x, st


class Identity(NoOpLayer):
    """The identity (``torch.nn.Identity``): returns its input unchanged.

    Arguments:
        *args, **kwargs: accepted and ignored, as by ``torch.nn.Identity`` (so that code
            choosing a layer by its arguments can pass them to either).

    Input:
        anything.

    Returns:
        ``x`` itself and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> Identity(54, unused_argument=0.1)(torch.ones(2), {}, {})[0]
        tensor([1., 1.])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class Flatten(Layer):
    """Flatten dimensions ``start_dim .. end_dim`` into one (``torch.nn.Flatten``).

    Arguments:
        start_dim: first dimension to flatten (default 1: keep the batch dimension).
        end_dim: last dimension to flatten (default -1).

    Input:
        ``x`` with at least ``max(start_dim, end_dim) + 1`` dimensions.

    Returns:
        ``x.flatten(start_dim, end_dim)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> Flatten()(torch.ones(2, 3, 4), {}, {})[0].shape
        torch.Size([2, 12])
    """

    start_dim: int = 1
    end_dim: int = -1

    def __post_init__(self) -> None:
        check_int("Flatten", "start_dim", self.start_dim, minimum=None)
        check_int("Flatten", "end_dim", self.end_dim, minimum=None)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return x.flatten(self.start_dim, self.end_dim), st

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        needed = max(d if d >= 0 else -d - 1 for d in (self.start_dim, self.end_dim)) + 1
        if x.ndim < needed:
            return (
                f"expected input with at least {needed} dimensions to flatten dims "
                f"{self.start_dim}..{self.end_dim}, got shape {tuple(x.shape)}"
            )
        return None


class Unflatten(Layer):
    """Split dimension ``dim`` into ``unflattened_size`` (``torch.nn.Unflatten``).

    The inverse of :class:`Flatten`: ``x.unflatten(dim, unflattened_size)``.

    Arguments:
        dim: the dimension to split (negative counts from the end).
        unflattened_size: the new sizes (a tuple of ints whose product is ``x.shape[dim]``;
            one entry may be ``-1``). torch's named-tensor form (a ``str`` dim) is not
            supported.

    Input:
        ``x`` with ``x.shape[dim] == prod(unflattened_size)``.

    Returns:
        ``y`` of shape ``x.shape[:dim] + unflattened_size + x.shape[dim + 1:]`` and the
        unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> Unflatten(1, (2, 5))(torch.ones(3, 10), {}, {})[0].shape
        torch.Size([3, 2, 5])
    """

    dim: int
    unflattened_size: tuple[int, ...] | list[int]  # or a torch.Size (a tuple)

    def __post_init__(self) -> None:
        if isinstance(self.dim, str):
            raise TypeError(
                "Unflatten: named dimensions (a str dim) are not supported; pass the "
                "dimension's index"
            )
        check_int("Unflatten", "dim", self.dim, minimum=None)
        sizes = self.unflattened_size
        if not isinstance(sizes, (tuple, list, torch.Size)):
            raise TypeError(
                f"Unflatten: unflattened_size must be a tuple of ints, got {type(sizes).__name__}"
            )
        checked = tuple(check_int("Unflatten", "unflattened_size", s, minimum=-1) for s in sizes)
        if not checked or checked.count(-1) > 1:
            raise ValueError(
                "Unflatten: unflattened_size must be a non-empty tuple with at most one -1, "
                f"got {checked}"
            )
        self._set_fields(unflattened_size=checked)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return x.unflatten(self.dim, self.unflattened_size), st

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        return (
            f"expected input whose dimension {self.dim} has "
            f"{'a multiple of ' if -1 in self.unflattened_size else ''}"
            f"{math.prod(s for s in self.unflattened_size if s != -1)} elements to unflatten "
            f"into {self.unflattened_size}, got shape {tuple(x.shape)}"
        )


class Reshape(Layer):
    """Reshape every sample, keeping the batch dimension: ``x.reshape(x.shape[0], *dims)``.

    Lux's ``ReshapeLayer`` (reshape all but the batch dimension), batch first.

    Arguments:
        dims: the new per-sample shape (ints, as ``Reshape(2, 3)`` or ``Reshape((2, 3))``;
            one entry may be ``-1``).

    Input:
        ``x`` of shape ``(N, *)`` with ``prod(dims)`` elements per sample.

    Returns:
        ``y`` of shape ``(N, *dims)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> Reshape(2, 3)(torch.ones(4, 6), {}, {})[0].shape
        torch.Size([4, 2, 3])
    """

    dims: tuple[int, ...]

    def __init__(self, *dims: int | Sequence[int]) -> None:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        checked = tuple(check_int("Reshape", "dims", d, minimum=-1) for d in dims)
        if checked.count(-1) > 1:
            raise ValueError(f"Reshape: at most one of dims may be -1, got {checked}")
        self._set_fields(dims=checked)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return x.reshape(x.shape[0], *self.dims), st

    def extra_repr(self) -> str:
        return ", ".join(map(str, self.dims))

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        target = ", ".join(["N", *map(str, self.dims)])
        known = math.prod(d for d in self.dims if d != -1)
        return (
            f"expected input of shape (N, ...) with {'a multiple of ' if -1 in self.dims else ''}"
            f"{known} elements per sample to reshape to ({target}), got {tuple(x.shape)}"
        )


class SelectDim(Layer):
    """Select ``index`` along dimension ``dim``, dropping that dimension: ``x.select(dim, index)``.

    Lux's ``SelectDim``; dimensions count from 0 with the batch first.

    Arguments:
        dim: the dimension (negative counts from the end).
        index: the position along ``dim`` (negative counts from the end).

    Input:
        ``x`` with more than ``dim`` dimensions.

    Returns:
        ``x.select(dim, index)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> SelectDim(1, 0)(torch.ones(4, 3, 2), {}, {})[0].shape
        torch.Size([4, 2])
    """

    dim: int
    index: int

    def __post_init__(self) -> None:
        check_int("SelectDim", "dim", self.dim, minimum=None)
        check_int("SelectDim", "index", self.index, minimum=None)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return x.select(self.dim, self.index), st

    def extra_repr(self) -> str:
        return f"{self.dim}, {self.index}"

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        return (
            f"expected input with a dimension {self.dim} holding index {self.index}, "
            f"got shape {tuple(x.shape)}"
        )
