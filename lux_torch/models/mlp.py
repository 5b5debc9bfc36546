"""``MLP``: a multi-layer perceptron (Boltz's ``MLP``, torchvision's ``ops.MLP`` layout)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core import Layer, Params, State, replace_fields
from ..layers._common import check_int
from ..layers.basic import Linear
from ..layers.dropout import Dropout

__all__ = ["MLP"]


class MLP(Layer):
    """``Linear -> [norm] -> activation -> [Dropout]`` per hidden layer, then a ``Linear``.

    The children are named by their index in the ``torch.nn.Sequential`` of
    ``torchvision.ops.MLP(in_dims, [*hidden_dims, out_dims], norm_layer=..., dropout=...)``
    (``0``, ``1``, ...), so its ``state_dict()`` loads with ``lux.load_state_dict``. The
    activation is the ``activation=`` of the hidden ``Linear`` (or of its norm), so it has no
    index of its own; a dropout layer exists only when ``dropout > 0``. Unlike
    torchvision's, no dropout follows the output layer (as Boltz's ``MLP``).

    Arguments:
        in_dims: input features.
        hidden_dims: the widths of the hidden layers (may be empty: one ``Linear``).
        out_dims: output features.
        activation: applied after every hidden layer (after its norm), default ``relu``.
        dropout: dropout probability after every hidden activation (0: none).
        norm: ``norm(features) -> Layer`` after every hidden ``Linear`` (e.g.
            ``lux.BatchNorm1d``, ``lux.LayerNorm``); ``None``: none.
        bias: whether the ``Linear`` layers have biases.

    Input:
        ``(*, in_dims)`` (``(N, in_dims)`` with a BatchNorm ``norm``).

    Returns:
        ``(*, out_dims)`` and the new state.

    **Parameters**
        For hidden layer ``i`` (0-based) at index ``k = i * s`` (``s = 3``, plus 1 with a
        norm): ``"k": {"weight": (hidden_dims[i], fan_in), "bias": (hidden_dims[i],)}``,
        ``"k+1"``: the norm's parameters (with a norm); the output layer
        ``{"weight": (out_dims, fan_in), "bias": (out_dims,)}`` at index
        ``len(hidden_dims) * s``.

    **States**
        ``{}`` for each ``Linear``; the norm's state (e.g. BatchNorm's running statistics);
        ``{"key", "training"}`` for each ``Dropout`` (at index ``k + s - 1``).

    Example:
        >>> mlp = MLP(4, [32, 32], 2, activation=torch.tanh, dropout=0.1)  # doctest: +SKIP
        >>> ps, st = lux.setup(0, mlp)  # doctest: +SKIP
        >>> y, st = mlp(torch.ones(8, 4), ps, st)  # doctest: +SKIP
    """

    in_dims: int
    hidden_dims: tuple[int, ...]
    out_dims: int
    layers: dict[str, Layer]

    def __init__(
        self,
        in_dims: int,
        hidden_dims: Sequence[int],
        out_dims: int,
        activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
        dropout: float = 0.0,
        norm: Callable[[int], Layer] | None = None,
        bias: bool = True,
    ) -> None:
        owner = "MLP"
        check_int(owner, "in_dims", in_dims, minimum=1)
        check_int(owner, "out_dims", out_dims, minimum=1)
        if isinstance(hidden_dims, int):
            raise TypeError(f"{owner}: hidden_dims must be a sequence of ints, got {hidden_dims}")
        hidden = tuple(hidden_dims)
        for width in hidden:
            check_int(owner, "hidden_dims entries", width, minimum=1)
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{owner}: dropout must be a probability in [0, 1), got {dropout!r}")
        step = 4 if norm is not None else 3  # torchvision: Linear, [norm], activation, Dropout
        layers: dict[str, Layer] = {}
        fan_in = in_dims
        for i, width in enumerate(hidden):
            k = i * step
            if norm is None:
                layers[str(k)] = Linear(fan_in, width, bias=bias, activation=activation)
            else:
                layers[str(k)] = Linear(fan_in, width, bias=bias)
                layers[str(k + 1)] = _with_activation(norm(width), activation)
            if dropout > 0:
                layers[str(k + step - 1)] = Dropout(float(dropout))
            fan_in = width
        layers[str(len(hidden) * step)] = Linear(fan_in, out_dims, bias=bias)
        self._set_fields(in_dims=in_dims, hidden_dims=hidden, out_dims=out_dims, layers=layers)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        new_st: State = {}
        for name, layer in self.layers.items():
            x, new_st[name] = layer(x, ps[name], st[name])
        return x, new_st

    def extra_repr(self) -> str:
        return f"{self.in_dims} => {list(self.hidden_dims)} => {self.out_dims}"


def _with_activation(layer: Layer, activation: Callable[[torch.Tensor], torch.Tensor]) -> Layer:
    """``layer`` with ``activation=`` set (the norm layers of lux_torch take one)."""
    fields: dict[str, Any] = getattr(layer, "__dataclass_fields__", {})
    if "activation" not in fields:
        raise TypeError(
            f"MLP: norm must build a layer with an activation= field (as lux_torch's norm "
            f"layers), got {type(layer).__name__}"
        )
    if getattr(layer, "activation", None) is not None:
        raise ValueError(f"MLP: the norm layer already has an activation: {layer!r}")
    return replace_fields(layer, activation=activation)
