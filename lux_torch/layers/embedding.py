"""Embedding bags: ``EmbeddingBag`` (``torch.nn.EmbeddingBag``), the sum, mean or max of
the embeddings of each bag of indices, computed without the ``(*, embedding_dim)``
intermediate of a lookup.

``Embedding`` itself lives in :mod:`lux_torch.layers.basic` (import paths are stable).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .. import init
from .._graph import forward_ad_active
from ..core import Layer, State, describe_config
from ._common import (
    TORCH_PLACEMENT_AND_WEIGHT,
    check_callable,
    check_int,
    describe_value,
    options_problem,
)
from .basic import Initializer, Params, embedding_forward_mode

__all__ = ["EmbeddingBag"]

_MODES = ("sum", "mean", "max")
_INPUT_FORMS = (
    "expected indices, (indices, offsets), (indices, offsets, per_sample_weights) or "
    "(indices, options) with options a dict"
)


def _is_index(t: torch.Tensor) -> bool:
    return t.dtype in (torch.int64, torch.int32)


class EmbeddingBag(Layer):
    """The sum, mean or max of the embeddings in each bag of indices
    (``torch.nn.EmbeddingBag``): ``y[b] = reduce_{i in bag b} weight[i]``.

    Arguments:
        num_embeddings: number of rows (valid indices are ``0 .. num_embeddings - 1``).
        embedding_dim: size of each embedding vector.
        max_norm: not supported (must be ``None``): torch renormalises the weight rows
            *in place* (they stay renormalised for later calls and for the optimizer),
            which a pure layer cannot do (as :class:`~lux_torch.Embedding`). Renormalise
            the parameter explicitly where it is updated, e.g. after each optimizer step
            ``ps = {"weight": torch.renorm(ps["weight"], p=2, dim=0, maxnorm=m)}``.
        norm_type: the ``p`` of ``max_norm``'s p-norm (kept for torch's signature).
        scale_grad_by_freq: scale the weight's gradient by the inverse frequency of each
            index in the batch (backward only, as torch; not with ``mode="max"``, which
            raises here at construction, in torch at every call).
        mode: ``"sum"``, ``"mean"`` (the default, as torch) or ``"max"``.
        sparse: must be ``False``: ``True`` makes torch return the weight's gradient as
            a sparse COO tensor, which ``torch.compile`` cannot trace and
            ``lux_torch.optim`` (e.g. ``adam``) and ``lux_torch.tree.ravel`` cannot
            take. The dense gradient holds the same values.
        include_last_offset: ``offsets`` has one more entry, the end of the last bag
            (CSR format), as torch.
        padding_idx: if given, that row is initialised to zeros, receives no gradient and
            is left out of every bag (also of a ``"mean"``'s count); negative values
            count from the end (stored normalised).
        weight_init: ``f(key, num_embeddings, embedding_dim) -> Tensor``; default torch's
            ``N(0, 1)``. The ``padding_idx`` row is zeroed afterwards in either case.

    ``torch.nn.EmbeddingBag``'s ``_weight``, ``device`` and ``dtype`` are not arguments:
    parameters come from :func:`lux_torch.setup` (``device=``, ``dtype=``).

    Input:
        ``x`` is one of

        - ``indices`` of shape ``(B, bag_size)``: ``B`` bags of equal size;
        - ``(indices, offsets)`` or ``(indices, offsets, per_sample_weights)`` (torch's
          ``forward`` order), ``offsets`` ``None`` for 2-d indices;
        - ``(indices, options)``, ``options`` a dict of torch's ``forward`` keywords:
          ``"offsets"``, ``"per_sample_weights"`` (both default ``None``).

        - ``indices``: ``int64`` or ``int32``, ``(B, bag_size)``, or 1-d ``(total,)`` with
          ``offsets``.
        - ``offsets``: 1-d, the same dtype, the start of each bag in 1-d ``indices``
          (``offsets[0] == 0``, non-decreasing); with ``include_last_offset`` also the end.
        - ``per_sample_weights``: floating, the shape of ``indices``: each embedding is
          multiplied by its weight before the sum (``mode="sum"`` only, as torch);
          gradients flow to it.

    Returns:
        ``y`` of shape ``(B, embedding_dim)`` (an empty bag gives zeros) and the unchanged
        (empty) state.

    Raises:
        ValueError: for an input of another form or shape, an unknown call option, or
            ``per_sample_weights`` with another mode than ``"sum"``. Indices or offsets
            out of range raise (torch's CPU checks; CUDA checks them with a device-side
            assertion).

    **Parameters**
        - ``weight``: ``(num_embeddings, embedding_dim)``

    **States**
        None (``{}``).

    Example:
        >>> layer = EmbeddingBag(10, 3, mode="sum")
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> x = (torch.tensor([1, 2, 4, 5, 4, 3]), torch.tensor([0, 2]))  # two bags
        >>> y, st = layer(x, ps, st)  # y.shape == (2, 3)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT_AND_WEIGHT  # torch.nn's arguments, not stored

    num_embeddings: int
    embedding_dim: int
    max_norm: float | None = None
    norm_type: float = 2.0
    scale_grad_by_freq: bool = False
    mode: str = "mean"
    sparse: bool = False
    include_last_offset: bool = False
    padding_idx: int | None = None
    weight_init: Initializer | None = None

    _OPTIONS: ClassVar[tuple[str, ...]] = ("offsets", "per_sample_weights")

    def __post_init__(self) -> None:
        owner = "EmbeddingBag"
        n = check_int(owner, "num_embeddings", self.num_embeddings)
        check_int(owner, "embedding_dim", self.embedding_dim)
        if self.max_norm is not None:
            raise ValueError(
                "EmbeddingBag: max_norm is not supported: torch.nn.EmbeddingBag renormalises "
                "its weight in place, which a pure layer cannot do; renormalise ps['weight'] "
                "explicitly after each update, e.g. with torch.renorm (see the docstring)"
            )
        p = self.norm_type
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{owner}: norm_type must be a number, got {type(p).__name__}")
        for name in ("scale_grad_by_freq", "sparse", "include_last_offset"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"{owner}: {name} must be a bool, got {type(getattr(self, name)).__name__}"
                )
        if self.sparse:
            raise ValueError(
                "EmbeddingBag: sparse=True is not supported: it makes the weight's gradient a "
                "sparse COO tensor, which torch.compile cannot trace and lux_torch.optim and "
                "lux_torch.tree.ravel cannot take; use sparse=False (a dense gradient with "
                "the same values)"
            )
        if self.mode not in _MODES:
            raise ValueError(f"{owner}: mode must be 'sum', 'mean' or 'max', got {self.mode!r}")
        if self.mode == "max" and self.scale_grad_by_freq:
            raise ValueError(
                f"{owner}: scale_grad_by_freq=True does not go with mode='max' (torch rejects "
                "it at every call: the gradient of a max is not a count of the indices)"
            )
        if self.padding_idx is not None:
            idx = check_int(owner, "padding_idx", self.padding_idx, minimum=None)
            if not -n <= idx < n:
                raise ValueError(
                    f"{owner}: padding_idx must be in [-{n}, {n}) (num_embeddings={n}), got {idx}"
                )
            self._set_fields(padding_idx=idx % n)
        check_callable(owner, "weight_init", self.weight_init)
        self._set_fields(norm_type=float(p))

    def init_params(self, key: torch.Tensor) -> Params:
        weight = (self.weight_init or init.normal)(key, self.num_embeddings, self.embedding_dim)
        if self.padding_idx is not None:
            row = torch.tensor([self.padding_idx], device=weight.device)
            weight = weight.index_fill(0, row, 0.0)
        return {"weight": weight}

    def _parse(self, x: Any) -> tuple[Any, Any, Any] | str:
        """``(indices, offsets, per_sample_weights)`` or what is wrong with ``x``."""
        if isinstance(x, torch.Tensor):
            return x, None, None
        if not isinstance(x, (tuple, list)) or not 2 <= len(x) <= 3:
            return f"{_INPUT_FORMS}, got {describe_value(x)}"
        if isinstance(x[-1], dict):
            if len(x) != 2:
                return f"a dict of call options must follow the indices alone, got {len(x)} items"
            problem = options_problem(x[1], self._OPTIONS, ())
            if problem is not None:
                return problem
            return x[0], x[1].get("offsets"), x[1].get("per_sample_weights")
        return x[0], x[1], x[2] if len(x) == 3 else None

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        parts = self._parse(x)
        if isinstance(parts, str):
            raise ValueError(f"EmbeddingBag: {parts}")
        indices, offsets, weights = parts
        if weights is not None and self.mode != "sum":
            raise ValueError(
                "EmbeddingBag: per_sample_weights needs mode='sum' (as torch), got "
                f"mode={self.mode!r}"
            )
        if forward_ad_active():  # torch's fused kernel has no forward-mode rule
            return _bags_forward_mode(indices, ps["weight"], offsets, weights, self), st
        y = F.embedding_bag(
            indices,
            ps["weight"],
            offsets,
            scale_grad_by_freq=self.scale_grad_by_freq,
            mode=self.mode,
            per_sample_weights=weights,
            include_last_offset=self.include_last_offset,
            padding_idx=self.padding_idx,
        )
        return y, st

    def extra_repr(self) -> str:
        parts = [f"{self.num_embeddings} => {self.embedding_dim}", f"mode={self.mode!r}"]
        if self.padding_idx is not None:
            parts.append(f"padding_idx={self.padding_idx}")
        for flag in ("scale_grad_by_freq", "include_last_offset"):
            if getattr(self, flag):
                parts.append(f"{flag}=True")
        if self.weight_init is not None:
            parts.append(f"weight_init={describe_config(self.weight_init)}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        parts = self._parse(x)
        if isinstance(parts, str):
            return parts
        indices, offsets, weights = parts
        if not isinstance(indices, torch.Tensor) or not _is_index(indices):
            return f"expected int64 or int32 indices, got {describe_value(indices)}"
        if indices.dim() == 2 and offsets is not None:
            return (
                "offsets must be None for 2-d indices (bags of equal size), got "
                + describe_value(offsets)
            )
        if indices.dim() == 1:
            if not isinstance(offsets, torch.Tensor) or offsets.dim() != 1:
                return (
                    "1-d indices need 1-d offsets (the start of each bag), got "
                    + describe_value(offsets)
                )
        elif indices.dim() != 2:
            return (
                f"expected indices of shape (B, bag_size) or (total,), got {tuple(indices.shape)}"
            )
        if weights is not None and (
            not isinstance(weights, torch.Tensor) or weights.shape != indices.shape
        ):
            return (
                f"expected per_sample_weights of the shape of indices {tuple(indices.shape)}, "
                f"got {describe_value(weights)}"
            )
        n = self.num_embeddings
        if indices.numel() and (indices.min() < 0 or indices.max() >= n):
            low, high = int(indices.min()), int(indices.max())
            return f"expected indices in [0, {n}), got values in [{low}, {high}]"
        return None


def _bags_forward_mode(
    indices: torch.Tensor,
    weight: torch.Tensor,
    offsets: torch.Tensor | None,
    weights: torch.Tensor | None,
    layer: EmbeddingBag,
) -> torch.Tensor:
    """``F.embedding_bag`` written out (lookup, then a sum, mean or max per bag) for
    forward-mode AD, with the tangents torch's backward implies (see
    :func:`~lux_torch.layers.basic.embedding_forward_mode`); ``padding_idx`` entries are
    left out of their bags, an empty bag gives zeros."""
    flat = indices.reshape(-1)
    if indices.dim() == 2:
        bags = indices.shape[0]
        bag_of = torch.arange(bags, device=flat.device).repeat_interleave(indices.shape[1])
    else:
        assert offsets is not None
        starts = offsets[:-1] if layer.include_last_offset else offsets
        bags = starts.shape[0]
        position = torch.arange(flat.shape[0], device=flat.device)
        bag_of = torch.searchsorted(starts.to(flat.dtype), position, right=True) - 1
    rows = embedding_forward_mode(flat, weight, layer)
    keep = torch.ones_like(flat, dtype=torch.bool)
    if layer.padding_idx is not None:
        keep = flat != layer.padding_idx % weight.shape[0]
    if weights is not None:
        rows = rows * weights.reshape(-1, 1)
    out = rows.new_zeros(bags, rows.shape[-1])
    if layer.mode == "max":
        rows = rows.masked_fill(~keep[:, None], -torch.inf)
        index = bag_of[:, None].expand_as(rows)
        out = out.fill_(-torch.inf).scatter_reduce(0, index, rows, "amax")
        return torch.where(out.isneginf(), 0.0, out)
    out = out.index_add(0, bag_of, rows * keep[:, None])
    if layer.mode == "mean":
        count = keep.to(rows.dtype).new_zeros(bags).index_add(0, bag_of, keep.to(rows.dtype))
        out = out / count.clamp(min=1.0)[:, None]
    return out
