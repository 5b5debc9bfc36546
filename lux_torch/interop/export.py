"""Export for inference through ``torch.export``.

:func:`export` turns a model with its parameters and state into a
``torch.export.ExportedProgram``: a graph of ATen operations whose parameters and
buffers are stored in the program, called with the input only. It runs (and can be saved
with ``torch.export.save`` and loaded with ``torch.export.load``) where only torch is
installed, and can be compiled further with AOTInductor or other torch.export consumers.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import Layer, Params, State, test_mode
from .torch_nn import LuxModule

__all__ = ["export"]


class _InferenceModule(LuxModule):
    """A :class:`LuxModule` whose forward returns the output only and writes no buffer."""

    def forward(self, *args: Any) -> Any:
        return self.lux_forward(*args)[0]


def export(
    model: Layer,
    ps: Params,
    st: State,
    example_x: Any,
    *,
    dynamic_batch: bool = False,
    dynamic_shapes: Any = None,
    **export_kwargs: Any,
) -> torch.export.ExportedProgram:
    """Export ``model`` for inference (test mode) with ``torch.export.export``.

    The model runs with :func:`lux_torch.test_mode` of ``st`` (running statistics, no
    dropout). ``ps`` become the program's parameters and the state tensors its buffers
    (both copied, named as in :func:`lux_torch.state_dict`), so the program takes only the
    input: ``ep.module()(x)``. Nothing of lux_torch is needed to load and run it.

    Arguments:
        model: the layer.
        ps: its parameters.
        st: its state (its mode flags are ignored: inference is test mode).
        example_x: an example input (a tensor, or a tuple of tensors passed as the model's
            tuple input); its shapes are fixed in the program unless made dynamic.
        dynamic_batch: make dimension 0 of every input tensor a dynamic ``batch`` size
            (one ``torch.export.Dim`` shared by all inputs). The example's batch size must
            then be at least 2: torch.export specialises sizes 0 and 1.
        dynamic_shapes: a sequence with one ``torch.export`` dynamic-shape specification
            per input tensor (``example_x`` or ``(example_x,)``), e.g.
            ``[{0: torch.export.Dim("batch")}]``; exclusive with ``dynamic_batch``.
        **export_kwargs: further keyword arguments of ``torch.export.export`` (e.g.
            ``strict=True``).

    Returns:
        The ``torch.export.ExportedProgram``.

    Raises:
        TypeError: ``model`` is not a layer.
        ValueError: ``ps``/``st`` do not match the model, or both ``dynamic_batch`` and
            ``dynamic_shapes`` are given.
        Exception: whatever ``torch.export.export`` raises for code it cannot capture
            (e.g. Python control flow on tensor values).

    Example:
        >>> ep = lux.export(model, ps, st, torch.randn(8, 3), dynamic_batch=True)  # doctest: +SKIP
        >>> torch.export.save(ep, "model.pt2")  # doctest: +SKIP
        >>> y = torch.export.load("model.pt2").module()(torch.randn(5, 3))  # doctest: +SKIP
    """
    if not isinstance(model, Layer):
        raise TypeError(f"lux.export: expected a lux_torch Layer, got {type(model).__name__}")
    if dynamic_batch and dynamic_shapes is not None:
        raise ValueError("lux.export: pass either dynamic_batch=True or dynamic_shapes, not both")
    module = _InferenceModule(model, ps, test_mode(st)).eval().requires_grad_(False)
    args = tuple(example_x) if isinstance(example_x, tuple) else (example_x,)
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple(
            {0: batch} if isinstance(a, torch.Tensor) and a.ndim > 0 else None for a in args
        )
    if dynamic_shapes is not None:  # forward(*args): torch.export nests the inputs once more
        dynamic_shapes = (tuple(dynamic_shapes),)
    return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, **export_kwargs)
