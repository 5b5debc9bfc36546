"""Normalization: ``BatchNorm1d/2d/3d``, ``InstanceNorm1d/2d/3d``, ``GroupNorm``, ``LayerNorm``,
``RMSNorm`` (``torch.nn``'s, plus Lux's ``activation=``).

Constructor arguments, parameter names and shapes, the names of the running-statistics
buffers and the default initialisation (``weight = 1``, ``bias = 0``) follow ``torch.nn``, so
``state_dict``s carry over in both directions.

Running statistics are *state*: they live in ``st`` and a training-mode call returns
updated copies, never touching the given tensors. ``torch.nn`` lets the kernel of
:func:`torch.nn.functional.batch_norm` update its buffers in place; here the kernel gets
*fresh* zero buffers and ``momentum=1``, so it fills them with the statistics of the batch
(the mean and the *unbiased* variance, computed by torch's own kernel in the same pass as the
normalisation), and the running update
``running = (1 - momentum) * running + momentum * batch_statistic`` is plain arithmetic on new
tensors. Hence the layers are pure functions that work under :func:`torch.func.grad` (the
new state is the auxiliary output), under ``torch.compile(fullgraph=True)``, and under
:func:`torch.func.vmap`: the fresh buffers come from ``x.new_zeros``, which is batched
whenever ``x`` is, so every ensemble member gets its own statistics whether ``st`` is
stacked per member or shared (``in_dims=None``), the case where plain ``torch.func`` fails
("running_mean ... will be updated in place, were not batched", pytorch issue 85533). As
torch's buffers, the running statistics are not differentiable.

BatchNorm and InstanceNorm share one implementation, :class:`_RunningStatsNorm`,
parameterised by the class variables ``ndim`` (spatial dimensions) and ``per_instance``;
the public classes only fix those.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from .. import init
from ..core import Layer, State, describe_config
from ..tree import Static
from ._common import (
    SPATIAL,
    TORCH_PLACEMENT,
    activate,
    check_bool,
    check_callable,
    check_int,
    not_a_tensor,
    spatial_shapes,
)
from .basic import Activation, Params

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "RMSNorm",
]


# --------------------------------------------------------------------------- helpers


def _check_eps(owner: str, value: Any) -> float:
    """``eps > 0``, finite (``bool`` is rejected); returned as a ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: eps must be a float, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{owner}: eps must be a positive finite float, got {value}")
    return float(value)


def _check_momentum(owner: str, value: Any, *, allow_none: bool, hint: str = "") -> float | None:
    """``0 <= momentum <= 1`` (or ``None`` where allowed); returned as a ``float``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "a float in [0, 1] or None" if allow_none else "a float in [0, 1]"
        raise TypeError(f"{owner}: momentum must be {what}, got {type(value).__name__}{hint}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: momentum must be in [0, 1], got {value}")
    return float(value)


def _normalized_shape(owner: str, value: Any) -> tuple[int, ...]:
    """An int or a non-empty sequence of ints (each >= 1) as a tuple, as ``torch.nn``."""
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) == 0:
            raise ValueError(f"{owner}: normalized_shape must not be empty")
        return tuple(check_int(owner, "normalized_shape", v, minimum=1) for v in value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner}: normalized_shape must be an int or a tuple of ints, got "
            f"{type(value).__name__}"
        )
    return (check_int(owner, "normalized_shape", value, minimum=1),)


def _affine_params(key: torch.Tensor, n: int, affine: bool, bias: bool) -> Params:
    """``{"weight": ones(n), "bias": zeros(n)}``; no ``bias`` when ``bias=False`` (torch's
    keyword), nothing at all without ``affine``."""
    if not affine:
        return {}
    ps: Params = {"weight": init.ones(key, n)}
    if bias:
        ps["bias"] = init.zeros(key, n)
    return ps


def _affine(
    ps: Params, affine: bool, bias: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(weight, bias)`` from ``ps`` as configured (a missing entry is a ``KeyError``)."""
    if not affine:
        return None, None
    return ps["weight"], ps["bias"] if bias else None


def _options_repr(layer: Any, head: str, defaults: dict[str, Any]) -> str:
    """``"16, relu, eps=0.001"``: head, activation, then the options that differ."""
    parts = [head]
    if layer.activation is not None:
        parts.append(describe_config(layer.activation))
    for name, default in defaults.items():
        value = getattr(layer, name)
        if value != default:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)


def _shape_text(normalized_shape: tuple[int, ...]) -> str:
    return f"(*, {', '.join(map(str, normalized_shape))})"


def _trailing_shape_problem(x: Any, normalized_shape: tuple[int, ...]) -> str | None:
    problem = not_a_tensor(x)
    if problem is None:
        n = len(normalized_shape)
        if x.ndim < n or tuple(x.shape[x.ndim - n :]) != normalized_shape:
            problem = (
                f"expected input of shape {_shape_text(normalized_shape)}, got {tuple(x.shape)}"
            )
    return problem


# --------------------------------------------------------------------------- batch/instance


class _RunningStatsNorm(Layer):
    """BatchNorm (``per_instance = False``) and InstanceNorm of ``ndim`` spatial dimensions."""

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    ndim: ClassVar[int]
    per_instance: ClassVar[bool] = False

    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    _: KW_ONLY
    bias: bool = True
    activation: Activation | None = None

    # -- construction
    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_int(owner, "num_features", self.num_features, minimum=1)
        hint = ""
        if self.per_instance and self.momentum is None:
            hint = " (torch.nn reads momentum=None as 0 for InstanceNorm: pass 0.0)"
        momentum = _check_momentum(
            owner, self.momentum, allow_none=not self.per_instance, hint=hint
        )
        check_bool(owner, "affine", self.affine)
        check_bool(owner, "bias", self.bias)
        check_bool(owner, "track_running_stats", self.track_running_stats)
        check_callable(owner, "activation", self.activation)
        self._set_fields(eps=_check_eps(owner, self.eps), momentum=momentum)

    def init_params(self, key: torch.Tensor) -> Params:
        return _affine_params(key, self.num_features, self.affine, self.bias)

    def init_state(self, key: torch.Tensor) -> State:
        st: State = {}
        if self.track_running_stats:
            n = self.num_features
            st["running_mean"] = init.zeros(key, n)
            st["running_var"] = init.ones(key, n)
            st["num_batches_tracked"] = torch.zeros((), dtype=torch.int64, device=key.device)
        st["training"] = Static(True)
        return st

    # -- forward
    def _ranks(self) -> tuple[int, ...]:
        """The accepted input ranks."""
        n = self.ndim
        if self.per_instance or n == 1:  # (N, C, *spatial) or (C, *spatial) / (N, C)
            return (n + 1, n + 2)
        return (n + 2,)

    def _channel_dim(self, x: torch.Tensor) -> int:
        return 0 if self.per_instance and x.ndim == self.ndim + 1 else 1

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if x.ndim not in self._ranks() or x.shape[self._channel_dim(x)] != self.num_features:
            raise ValueError(self.describe_input_error(x))
        unbatched = self.per_instance and x.ndim == self.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        weight, bias = _affine(ps, self.affine, self.bias)
        norm = F.instance_norm if self.per_instance else F.batch_norm
        if not self.track_running_stats:  # batch (instance) statistics in both modes
            y = norm(x, None, None, weight, bias, True, 0.0, self.eps)
        elif not st["training"]:  # elementwise with the running statistics; nothing is written
            y = F.batch_norm(
                x, st["running_mean"], st["running_var"], weight, bias, False, 0.0, self.eps
            )
        else:
            # fresh buffers that the kernel fills with the batch statistics (see the module
            # docstring): the mean and the unbiased variance (InstanceNorm: per instance,
            # averaged over the batch)
            dtype = st["running_mean"].dtype
            mean = x.new_zeros(self.num_features, dtype=dtype)
            var = x.new_zeros(self.num_features, dtype=dtype)
            y = norm(x, mean, var, weight, bias, True, 1.0, self.eps)
            st = self._updated_state(st, mean, var, empty=x.numel() == 0)
        if unbatched:
            y = y.squeeze(0)
        return activate(self.activation, y), st

    def _updated_state(
        self, st: State, mean: torch.Tensor, var: torch.Tensor, *, empty: bool
    ) -> State:
        """A new state with the running statistics moved towards the batch's.

        An empty batch (``empty``: a static shape property, so no data-dependent branch)
        has no statistics: BatchNorm then only counts it, and the running statistics are
        returned as they are, as torch (whose kernel skips the update).
        """
        count = st["num_batches_tracked"]
        new_count = count if self.per_instance else count + 1  # torch: InstanceNorm never counts
        if empty and not self.per_instance:
            return {**st, "num_batches_tracked": new_count}
        # momentum=None: the cumulative moving average, 1 / (batches seen, this one included)
        momentum: float | torch.Tensor = (
            self.momentum if self.momentum is not None else 1.0 / new_count.to(mean.dtype)
        )
        return {
            "running_mean": st["running_mean"] * (1 - momentum) + mean * momentum,
            "running_var": st["running_var"] * (1 - momentum) + var * momentum,
            "num_batches_tracked": new_count,
            "training": st["training"],
        }

    # -- display and errors
    def extra_repr(self) -> str:
        defaults = {
            "eps": 1e-5,
            "momentum": 0.1,
            "affine": not self.per_instance,
            "track_running_stats": not self.per_instance,
            "bias": True,
        }
        return _options_repr(self, str(self.num_features), defaults)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        n, c = self.ndim, f"C={self.num_features}"
        if self.per_instance:
            expected = spatial_shapes(n, c)
        elif n == 1:
            expected = f"(N, {c}) or (N, {c}, L)"
        else:
            expected = f"(N, {c}, {', '.join(SPATIAL[n])})"
        if x.ndim not in self._ranks() or x.shape[self._channel_dim(x)] != self.num_features:
            return f"expected input of shape {expected}, got {tuple(x.shape)}"
        return None


class _BatchNormNd(_RunningStatsNorm):
    """Batch normalization of ``ndim`` spatial dimensions (docs: :class:`BatchNorm2d`)."""


class _InstanceNormNd(_RunningStatsNorm):
    """Instance normalization of ``ndim`` spatial dimensions (docs: InstanceNorm2d)."""

    per_instance = True

    # torch.nn's defaults (momentum=None is rejected: see __post_init__)
    affine: bool = False
    track_running_stats: bool = False


class BatchNorm1d(_BatchNormNd):
    """Batch normalization over a batch of vectors or sequences (``torch.nn.BatchNorm1d`` plus Lux's
    activation): ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)`` per channel.

    In training mode (after :func:`lux_torch.setup` or :func:`lux_torch.train_mode`) ``mean``
    and ``var`` are the (biased) statistics of the batch, over every dimension but the
    channels, and with ``track_running_stats`` the call returns the updated running statistics
    in the new state: ``running = (1 - momentum) * running + momentum * batch_statistic``, with
    the *unbiased* batch variance, and ``num_batches_tracked + 1``. The given ``st`` is never
    modified. In test mode (:func:`lux_torch.test_mode`) the running statistics normalise;
    without ``track_running_stats`` batch statistics are used in both modes. An empty batch
    (no values per channel) leaves the running statistics as they are and only increments
    ``num_batches_tracked``, as torch.

    Arguments:
        num_features: number of channels ``C``.
        eps: added to the variance for numerical stability (> 0).
        momentum: weight of the batch statistic in the running update (in ``[0, 1]``), or
            ``None`` for a cumulative moving average (``momentum = 1 / num_batches_tracked``,
            counting this batch), as torch.
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        track_running_stats: whether to keep running statistics in the state (and use them in
            test mode).

    Keyword Arguments:
        bias: with ``affine``, whether to learn ``bias`` too (``torch.nn``'s keyword; ``False``:
            a ``weight`` only).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(N, C)`` or ``(N, C, L)``. A training-mode call needs more than one value
        per channel (or none: an empty batch).

    Returns:
        ``y`` of the same shape and the new state (updated running statistics after a
        training-mode call with ``track_running_stats``; otherwise the given state).

    **Parameters** (only when ``affine=True``; else ``{}``)
        - ``weight``: ``(num_features,)``, initialised to ones
        - ``bias``: ``(num_features,)``, initialised to zeros (only when ``bias=True``)

    **States**
        - ``running_mean``: ``(num_features,)``, initialised to zeros (only when
          ``track_running_stats=True``, as are the next two)
        - ``running_var``: ``(num_features,)``, initialised to ones
        - ``num_batches_tracked``: ``()`` int64, initialised to 0; counts training-mode calls
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = BatchNorm1d(16, activation=torch.relu)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 16, 8), ps, st)  # doctest: +SKIP
        >>> y, _ = layer(torch.randn(4, 16, 8), ps, lux_torch.test_mode(st))  # doctest: +SKIP
    """

    ndim = 1


class BatchNorm2d(_BatchNormNd):
    """Batch normalization over a batch of images (``torch.nn.BatchNorm2d`` plus Lux's
    activation): ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)`` per channel.

    In training mode (after :func:`lux_torch.setup` or :func:`lux_torch.train_mode`) ``mean``
    and ``var`` are the (biased) statistics of the batch, over every dimension but the
    channels, and with ``track_running_stats`` the call returns the updated running statistics
    in the new state: ``running = (1 - momentum) * running + momentum * batch_statistic``, with
    the *unbiased* batch variance, and ``num_batches_tracked + 1``. The given ``st`` is never
    modified. In test mode (:func:`lux_torch.test_mode`) the running statistics normalise;
    without ``track_running_stats`` batch statistics are used in both modes. An empty batch
    (no values per channel) leaves the running statistics as they are and only increments
    ``num_batches_tracked``, as torch.

    Arguments:
        num_features: number of channels ``C``.
        eps: added to the variance for numerical stability (> 0).
        momentum: weight of the batch statistic in the running update (in ``[0, 1]``), or
            ``None`` for a cumulative moving average (``momentum = 1 / num_batches_tracked``,
            counting this batch), as torch.
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        track_running_stats: whether to keep running statistics in the state (and use them in
            test mode).

    Keyword Arguments:
        bias: with ``affine``, whether to learn ``bias`` too (``torch.nn``'s keyword; ``False``:
            a ``weight`` only).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(N, C, H, W)``. A training-mode call needs more than one value per channel
        (or none: an empty batch).

    Returns:
        ``y`` of the same shape and the new state (updated running statistics after a
        training-mode call with ``track_running_stats``; otherwise the given state).

    **Parameters** (only when ``affine=True``; else ``{}``)
        - ``weight``: ``(num_features,)``, initialised to ones
        - ``bias``: ``(num_features,)``, initialised to zeros (only when ``bias=True``)

    **States**
        - ``running_mean``: ``(num_features,)``, initialised to zeros (only when
          ``track_running_stats=True``, as are the next two)
        - ``running_var``: ``(num_features,)``, initialised to ones
        - ``num_batches_tracked``: ``()`` int64, initialised to 0; counts training-mode calls
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = BatchNorm2d(16, activation=torch.relu)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 16, 8, 8), ps, st)  # doctest: +SKIP
        >>> y, _ = layer(torch.randn(4, 16, 8, 8), ps, lux_torch.test_mode(st))  # doctest: +SKIP
    """

    ndim = 2


class BatchNorm3d(_BatchNormNd):
    """Batch normalization over a batch of volumes (``torch.nn.BatchNorm3d`` plus Lux's
    activation): ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)`` per channel.

    In training mode (after :func:`lux_torch.setup` or :func:`lux_torch.train_mode`) ``mean``
    and ``var`` are the (biased) statistics of the batch, over every dimension but the
    channels, and with ``track_running_stats`` the call returns the updated running statistics
    in the new state: ``running = (1 - momentum) * running + momentum * batch_statistic``, with
    the *unbiased* batch variance, and ``num_batches_tracked + 1``. The given ``st`` is never
    modified. In test mode (:func:`lux_torch.test_mode`) the running statistics normalise;
    without ``track_running_stats`` batch statistics are used in both modes. An empty batch
    (no values per channel) leaves the running statistics as they are and only increments
    ``num_batches_tracked``, as torch.

    Arguments:
        num_features: number of channels ``C``.
        eps: added to the variance for numerical stability (> 0).
        momentum: weight of the batch statistic in the running update (in ``[0, 1]``), or
            ``None`` for a cumulative moving average (``momentum = 1 / num_batches_tracked``,
            counting this batch), as torch.
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        track_running_stats: whether to keep running statistics in the state (and use them in
            test mode).

    Keyword Arguments:
        bias: with ``affine``, whether to learn ``bias`` too (``torch.nn``'s keyword; ``False``:
            a ``weight`` only).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(N, C, D, H, W)``. A training-mode call needs more than one value per
        channel (or none: an empty batch).

    Returns:
        ``y`` of the same shape and the new state (updated running statistics after a
        training-mode call with ``track_running_stats``; otherwise the given state).

    **Parameters** (only when ``affine=True``; else ``{}``)
        - ``weight``: ``(num_features,)``, initialised to ones
        - ``bias``: ``(num_features,)``, initialised to zeros (only when ``bias=True``)

    **States**
        - ``running_mean``: ``(num_features,)``, initialised to zeros (only when
          ``track_running_stats=True``, as are the next two)
        - ``running_var``: ``(num_features,)``, initialised to ones
        - ``num_batches_tracked``: ``()`` int64, initialised to 0; counts training-mode calls
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = BatchNorm3d(16, activation=torch.relu)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 16, 8, 8, 8), ps, st)  # doctest: +SKIP
        >>> y, _ = layer(torch.randn(4, 16, 8, 8, 8), ps, lux_torch.test_mode(st))  # doctest: +SKIP
    """

    ndim = 3


class InstanceNorm1d(_InstanceNormNd):
    """Instance normalization (``torch.nn.InstanceNorm1d`` plus Lux's
    activation): every channel of every sample is normalised over its spatial dimensions ``L``,
    ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)``.

    With ``track_running_stats`` a training-mode call also returns updated running statistics,
    ``running = (1 - momentum) * running + momentum * batch_statistic`` where the batch
    statistic is the per-instance mean (unbiased variance) averaged over the batch, as torch;
    test mode (:func:`lux_torch.test_mode`) then normalises with them. Otherwise instance
    statistics are used in both modes. As in torch, ``num_batches_tracked`` is kept (so
    ``state_dict``s carry over) but never incremented. The given ``st`` is never modified.

    Arguments:
        num_features: number of channels ``C``.
        eps: added to the variance for numerical stability (> 0).
        momentum: weight of the batch statistic in the running update, in ``[0, 1]``
            (``torch.nn`` reads ``None`` as 0; pass ``0.0`` for that).
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        track_running_stats: whether to keep running statistics in the state (and use them in
            test mode).

    Keyword Arguments:
        bias: with ``affine``, whether to learn ``bias`` too (``torch.nn``'s keyword; ``False``:
            a ``weight`` only).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(N, C, L)`` or unbatched ``(C, L)``. Normalising with instance statistics
        needs more than one value per channel (L not all 1).

    Returns:
        ``y`` of the same shape and the new state (updated running statistics after a
        training-mode call with ``track_running_stats``; otherwise the given state).

    **Parameters** (only when ``affine=True``; else ``{}``)
        - ``weight``: ``(num_features,)``, initialised to ones
        - ``bias``: ``(num_features,)``, initialised to zeros (only when ``bias=True``)

    **States**
        - ``running_mean``: ``(num_features,)``, initialised to zeros (only when
          ``track_running_stats=True``, as are the next two)
        - ``running_var``: ``(num_features,)``, initialised to ones
        - ``num_batches_tracked``: ``()`` int64, 0 (never incremented, as torch)
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = InstanceNorm1d(16, affine=True)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 16, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 1


class InstanceNorm2d(_InstanceNormNd):
    """Instance normalization (``torch.nn.InstanceNorm2d`` plus Lux's
    activation): every channel of every sample is normalised over its spatial dimensions ``H``,
    ``W``, ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)``.

    With ``track_running_stats`` a training-mode call also returns updated running statistics,
    ``running = (1 - momentum) * running + momentum * batch_statistic`` where the batch
    statistic is the per-instance mean (unbiased variance) averaged over the batch, as torch;
    test mode (:func:`lux_torch.test_mode`) then normalises with them. Otherwise instance
    statistics are used in both modes. As in torch, ``num_batches_tracked`` is kept (so
    ``state_dict``s carry over) but never incremented. The given ``st`` is never modified.

    Arguments:
        num_features: number of channels ``C``.
        eps: added to the variance for numerical stability (> 0).
        momentum: weight of the batch statistic in the running update, in ``[0, 1]``
            (``torch.nn`` reads ``None`` as 0; pass ``0.0`` for that).
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        track_running_stats: whether to keep running statistics in the state (and use them in
            test mode).

    Keyword Arguments:
        bias: with ``affine``, whether to learn ``bias`` too (``torch.nn``'s keyword; ``False``:
            a ``weight`` only).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``. Normalising with instance
        statistics needs more than one value per channel (H, W not all 1).

    Returns:
        ``y`` of the same shape and the new state (updated running statistics after a
        training-mode call with ``track_running_stats``; otherwise the given state).

    **Parameters** (only when ``affine=True``; else ``{}``)
        - ``weight``: ``(num_features,)``, initialised to ones
        - ``bias``: ``(num_features,)``, initialised to zeros (only when ``bias=True``)

    **States**
        - ``running_mean``: ``(num_features,)``, initialised to zeros (only when
          ``track_running_stats=True``, as are the next two)
        - ``running_var``: ``(num_features,)``, initialised to ones
        - ``num_batches_tracked``: ``()`` int64, 0 (never incremented, as torch)
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = InstanceNorm2d(16, affine=True)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 16, 8, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 2


class InstanceNorm3d(_InstanceNormNd):
    """Instance normalization (``torch.nn.InstanceNorm3d`` plus Lux's
    activation): every channel of every sample is normalised over its spatial dimensions ``D``,
    ``H``, ``W``, ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)``.

    With ``track_running_stats`` a training-mode call also returns updated running statistics,
    ``running = (1 - momentum) * running + momentum * batch_statistic`` where the batch
    statistic is the per-instance mean (unbiased variance) averaged over the batch, as torch;
    test mode (:func:`lux_torch.test_mode`) then normalises with them. Otherwise instance
    statistics are used in both modes. As in torch, ``num_batches_tracked`` is kept (so
    ``state_dict``s carry over) but never incremented. The given ``st`` is never modified.

    Arguments:
        num_features: number of channels ``C``.
        eps: added to the variance for numerical stability (> 0).
        momentum: weight of the batch statistic in the running update, in ``[0, 1]``
            (``torch.nn`` reads ``None`` as 0; pass ``0.0`` for that).
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        track_running_stats: whether to keep running statistics in the state (and use them in
            test mode).

    Keyword Arguments:
        bias: with ``affine``, whether to learn ``bias`` too (``torch.nn``'s keyword; ``False``:
            a ``weight`` only).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``. Normalising with instance
        statistics needs more than one value per channel (D, H, W not all 1).

    Returns:
        ``y`` of the same shape and the new state (updated running statistics after a
        training-mode call with ``track_running_stats``; otherwise the given state).

    **Parameters** (only when ``affine=True``; else ``{}``)
        - ``weight``: ``(num_features,)``, initialised to ones
        - ``bias``: ``(num_features,)``, initialised to zeros (only when ``bias=True``)

    **States**
        - ``running_mean``: ``(num_features,)``, initialised to zeros (only when
          ``track_running_stats=True``, as are the next two)
        - ``running_var``: ``(num_features,)``, initialised to ones
        - ``num_batches_tracked``: ``()`` int64, 0 (never incremented, as torch)
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = InstanceNorm3d(16, affine=True)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 16, 8, 8, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 3


# --------------------------------------------------------------------------- group norm


class GroupNorm(Layer):
    """Group normalization (``torch.nn.GroupNorm`` plus Lux's activation): the channels are
    split into ``num_groups`` groups and every group of every sample is normalised over its
    channels and spatial positions,
    ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)``.

    Statistics come from each sample alone, so training and test mode behave the same and
    the layer has no state.

    Arguments:
        num_groups: number of groups (must divide ``num_channels``).
        num_channels: number of channels ``C``.
        eps: added to the variance for numerical stability (> 0).
        affine: whether to learn a per-channel ``weight`` and ``bias``.

    Keyword Arguments:
        bias: with ``affine``, whether to learn ``bias`` too (``torch.nn``'s keyword;
            ``False``: a ``weight`` only).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(N, C, *)``.

    Returns:
        ``y`` of the same shape and the unchanged (empty) state.

    **Parameters** (only when ``affine=True``; else ``{}``)
        - ``weight``: ``(num_channels,)``, initialised to ones
        - ``bias``: ``(num_channels,)``, initialised to zeros (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = GroupNorm(4, 16, activation=torch.relu)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(2, 16, 8, 8), ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True
    _: KW_ONLY
    bias: bool = True
    activation: Activation | None = None

    def __post_init__(self) -> None:
        groups = check_int("GroupNorm", "num_groups", self.num_groups, minimum=1)
        channels = check_int("GroupNorm", "num_channels", self.num_channels, minimum=1)
        if channels % groups:
            raise ValueError(
                "GroupNorm: num_channels must be divisible by num_groups, got "
                f"num_channels={channels} and num_groups={groups}"
            )
        check_bool("GroupNorm", "affine", self.affine)
        check_bool("GroupNorm", "bias", self.bias)
        check_callable("GroupNorm", "activation", self.activation)
        self._set_fields(eps=_check_eps("GroupNorm", self.eps))

    def init_params(self, key: torch.Tensor) -> Params:
        return _affine_params(key, self.num_channels, self.affine, self.bias)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(self.describe_input_error(x))
        weight, bias = _affine(ps, self.affine, self.bias)
        y = F.group_norm(x, self.num_groups, weight, bias, self.eps)
        return activate(self.activation, y), st

    def extra_repr(self) -> str:
        head = f"{self.num_groups}, {self.num_channels}"
        return _options_repr(self, head, {"eps": 1e-5, "affine": True, "bias": True})

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem is None and (x.ndim < 2 or x.shape[1] != self.num_channels):
            problem = f"expected input of shape (N, C={self.num_channels}, *), got {tuple(x.shape)}"
        return problem


# --------------------------------------------------------------------------- layer norms


class LayerNorm(Layer):
    """Layer normalization (``torch.nn.LayerNorm`` plus Lux's activation): every sample is
    normalised over its last ``len(normalized_shape)`` dimensions,
    ``y = activation((x - mean) / sqrt(var + eps) * weight + bias)``.

    Arguments:
        normalized_shape: the trailing shape to normalise over: an int or a tuple of ints.
        eps: added to the variance for numerical stability (> 0).
        elementwise_affine: whether to learn an elementwise ``weight`` (and ``bias``).
        bias: whether to learn ``bias`` too (only with ``elementwise_affine``).

    Keyword Arguments:
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(*, *normalized_shape)``.

    Returns:
        ``y`` of the same shape and the unchanged (empty) state.

    **Parameters** (only when ``elementwise_affine=True``; else ``{}``)
        - ``weight``: ``normalized_shape``, initialised to ones
        - ``bias``: ``normalized_shape``, initialised to zeros (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = LayerNorm(16)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 10, 16), ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    normalized_shape: int | tuple[int, ...] | list[int]
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True
    _: KW_ONLY
    activation: Activation | None = None

    def __post_init__(self) -> None:
        shape = _normalized_shape("LayerNorm", self.normalized_shape)
        check_bool("LayerNorm", "elementwise_affine", self.elementwise_affine)
        check_bool("LayerNorm", "bias", self.bias)
        check_callable("LayerNorm", "activation", self.activation)
        self._set_fields(normalized_shape=shape, eps=_check_eps("LayerNorm", self.eps))

    @property
    def _shape(self) -> tuple[int, ...]:
        return cast(tuple[int, ...], self.normalized_shape)

    def init_params(self, key: torch.Tensor) -> Params:
        ps: Params = {}
        if self.elementwise_affine:
            ps["weight"] = init.ones(key, *self._shape)
            if self.bias:
                ps["bias"] = init.zeros(key, *self._shape)
        return ps

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        y = F.layer_norm(x, self._shape, ps.get("weight"), ps.get("bias"), self.eps)
        return activate(self.activation, y), st

    def extra_repr(self) -> str:
        defaults = {"eps": 1e-5, "elementwise_affine": True, "bias": True}
        return _options_repr(self, str(self._shape), defaults)

    def describe_input_error(self, x: Any) -> str | None:
        return _trailing_shape_problem(x, self._shape)


class RMSNorm(Layer):
    """Root-mean-square normalization (``torch.nn.RMSNorm`` plus Lux's activation): every
    sample is scaled by the root mean square of its last ``len(normalized_shape)``
    dimensions, ``y = activation(x / sqrt(mean(x**2) + eps) * weight)``.

    Arguments:
        normalized_shape: the trailing shape to normalise over: an int or a tuple of ints.
        eps: added to the mean square for numerical stability (> 0); ``None``: the machine
            epsilon of the input's dtype, ``torch.finfo(x.dtype).eps`` (as torch).
        elementwise_affine: whether to learn an elementwise ``weight``.

    Keyword Arguments:
        activation: function applied elementwise to the output (e.g. ``torch.relu``).

    Input:
        ``x`` of shape ``(*, *normalized_shape)``.

    Returns:
        ``y`` of the same shape and the unchanged (empty) state.

    **Parameters** (only when ``elementwise_affine=True``; else ``{}``)
        - ``weight``: ``normalized_shape``, initialised to ones

    **States**
        None (``{}``).

    Example:
        >>> layer = RMSNorm(16)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 10, 16), ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    normalized_shape: int | tuple[int, ...] | list[int]
    eps: float | None = None
    elementwise_affine: bool = True
    _: KW_ONLY
    activation: Activation | None = None

    def __post_init__(self) -> None:
        shape = _normalized_shape("RMSNorm", self.normalized_shape)
        eps = None if self.eps is None else _check_eps("RMSNorm", self.eps)
        check_bool("RMSNorm", "elementwise_affine", self.elementwise_affine)
        check_callable("RMSNorm", "activation", self.activation)
        self._set_fields(normalized_shape=shape, eps=eps)

    @property
    def _shape(self) -> tuple[int, ...]:
        return cast(tuple[int, ...], self.normalized_shape)

    def init_params(self, key: torch.Tensor) -> Params:
        if not self.elementwise_affine:
            return {}
        return {"weight": init.ones(key, *self._shape)}

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        y = F.rms_norm(x, self._shape, ps.get("weight"), self.eps)
        return activate(self.activation, y), st

    def extra_repr(self) -> str:
        defaults = {"eps": None, "elementwise_affine": True}
        return _options_repr(self, str(self._shape), defaults)

    def describe_input_error(self, x: Any) -> str | None:
        return _trailing_shape_problem(x, self._shape)
