"""``Residual``: ``fn(x) + x`` with the child named ``fn``.

The residual wrapper of the torch code of ConvMixer (Trockman & Kolter 2022) and of the
"annotated diffusion" UNet (``class Residual(nn.Module): forward = fn(x) + x``). It is
:class:`~lux_torch.layers.containers.SkipConnection` with ``torch.add``, except that the
child is named ``fn`` instead of ``layer``, so that flattened ``ps``/``st`` names equal
those models' ``state_dict`` names (``3.0.fn.0.weight``) and their weights load directly.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from ..core import Layer, Params, State
from .containers import LayerLike, as_layer

__all__ = ["Residual"]


class Residual(Layer):
    """``y = fn(x) + x`` (the torch idiom ``Residual(fn)``; the child is named ``fn``).

    Arguments:
        fn: the layer (or plain callable, wrapped in
            :class:`~lux_torch.layers.basic.WrappedFunction`) whose output is added to its
            input; it must keep the input's shape.

    Input:
        ``x``: a tensor that ``fn`` accepts.

    Returns:
        ``fn(x) + x`` and the new state ``{"fn": ...}``.

    Raises:
        ValueError: when ``fn(x)`` and ``x`` differ in shape (a broadcast would silently
            give another shape).

    **Parameters**
        ``{"fn": fn's parameters}``.

    **States**
        ``{"fn": fn's state}``.

    Example:
        >>> block = Residual(Linear(4, 4))  # doctest: +SKIP
        >>> ps, st = lux_torch.setup(0, block)  # doctest: +SKIP
        >>> y, st = block(torch.ones(2, 4), ps, st)  # doctest: +SKIP
    """

    fn: LayerLike

    def __post_init__(self) -> None:
        self._set_fields(fn=as_layer("Residual", "fn", self.fn))

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        y, st_fn = cast(Layer, self.fn)(x, ps["fn"], st["fn"])  # a Layer: see __post_init__
        if y.shape != x.shape:
            raise ValueError(
                f"Residual: fn(x) has shape {tuple(y.shape)} but x has shape "
                f"{tuple(x.shape)}; fn must keep the shape of its input"
            )
        return y + x, {"fn": st_fn}
