"""Parity of a model-zoo layer with a torch.nn reference of the same layout (shared by
the model tests): state_dict names, loading, outputs, gradients, running statistics.

The reference is built on the meta device (no global RNG) and filled from lux: every
floating tensor of ``lux.setup`` is replaced by a random one drawn from an explicit key
(BatchNorm's ``running_var`` made positive), so that no parameter is trivially 0 or 1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import lux_torch as lux
from lux_torch import random as lrandom
from lux_torch.core import Layer


def random_weights(model: Layer, dtype: torch.dtype, seed: int = 3, scale: float = 0.3) -> Any:
    """``(ps, st)`` of ``model`` in ``dtype``, every floating tensor random (explicit key)."""
    ps, st = lux.setup(0, model, dtype=dtype)
    key = lrandom.key(seed)
    paths = lux.tree.paths(ps) + lux.tree.paths(st)
    keys = dict(zip(paths, lrandom.split(key, len(paths)), strict=True))

    def fill(path: str, leaf: torch.Tensor) -> torch.Tensor:
        if not leaf.is_floating_point():
            return leaf
        noise = lrandom.normal(keys[path], tuple(leaf.shape), dtype=dtype)
        if path.endswith("running_var"):
            return 0.5 + noise.abs()
        if path.endswith(".weight") and leaf.ndim == 1:  # norm scales around 1
            return 1.0 + scale * noise
        return scale * noise

    with_paths = lux.tree.map_with_path
    return with_paths(fill, ps), with_paths(fill, st)


def reference_from(
    build: Callable[[], nn.Module], ps: Any, st: Any, dtype: torch.dtype
) -> nn.Module:
    """The reference built on the meta device, given lux's tensors (``strict=True``: every
    name of ``lux.state_dict`` is one of the reference's and none is missing)."""
    with torch.device("meta"):
        ref = build()
    ref = ref.to_empty(device="cpu").to(dtype)
    ref.load_state_dict(lux.state_dict(ps, st), strict=True)
    return ref


def assert_close_trees(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], rtol: float, atol: float
) -> None:
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, theirs[name], msg=name, rtol=rtol, atol=atol)
        else:
            assert torch.equal(value, theirs[name]), name


def assert_matches_reference(
    model: Layer,
    build: Callable[[], nn.Module],
    x: Any,
    dtype: torch.dtype,
    rtol: float,
    atol: float,
) -> None:
    """:func:`assert_matches_module` against the reference ``build()`` makes, filled with
    :func:`random_weights` of ``model``; the state after the training step also equals the
    reference's exactly."""
    ps0, st0 = random_weights(model, dtype)
    ref = reference_from(build, ps0, st0, dtype)
    new_state = assert_matches_module(model, ref, x, rtol, atol)
    assert_close_trees(new_state, ref.state_dict(), rtol=0.0, atol=0.0)


def assert_matches_module(
    model: Layer, ref: nn.Module, x: Any, rtol: float, atol: float
) -> dict[str, torch.Tensor]:
    """Load the reference's ``state_dict`` into ``model``; outputs (train and eval mode),
    gradients w.r.t. every parameter and the state after a training step equal the
    reference's; the new state round-trips into a copy of the reference with ``strict=True``.
    Returns the new state as a flat ``state_dict``.

    ``ref``: the reference module in the dtype of ``x``; ``x``: the input (a tuple is
    unpacked into the reference's arguments).
    """
    # copies: the reference's training step updates its buffers in place
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    ps, st = lux.load_state_dict(model, sd)
    ours = lux.state_dict(ps, st)
    assert set(ours) == set(sd)
    assert all(ours[k].shape == sd[k].shape for k in sd)
    args = x if isinstance(x, tuple) else (x,)
    y0 = model(x, ps, st)[0]
    w = lrandom.normal(lrandom.key(11), tuple(y0.shape), dtype=y0.dtype)

    # training mode: output, gradients of sum(y * w), the updated state
    ref.train()
    ref.zero_grad()
    y_ref = ref(*args)
    (y_ref * w).sum().backward()

    def loss(p: Any) -> tuple[torch.Tensor, Any]:
        y, new_st = model(x, p, st)
        return (y * w).sum(), (y, new_st)

    grads, (y, new_st) = torch.func.grad(loss, has_aux=True)(ps)
    torch.testing.assert_close(y, y_ref.detach(), rtol=rtol, atol=atol)
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    assert_close_trees(dict(lux.tree.flatten_with_paths(grads)), ref_grads, rtol=rtol, atol=atol)  # type: ignore[arg-type]
    assert_close_trees(lux.state_dict(ps, new_st), ref.state_dict(), rtol=rtol, atol=atol)

    # test mode: the running statistics normalise
    ref.eval()
    with torch.no_grad():
        y_ref = ref(*args)
    y, _ = model(x, ps, lux.test_mode(new_st))
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)

    # round trip: the new state loads back into a copy of the reference, strict and exact
    new_state = lux.state_dict(ps, new_st)
    again = copy.deepcopy(ref)
    again.load_state_dict(new_state, strict=True)
    assert_close_trees(again.state_dict(), new_state, rtol=0.0, atol=0.0)
    return new_state
