"""Attention: ``MultiheadAttention`` and the parameter-free positional embeddings
``SinusoidalPositionalEmbedding`` and ``RotaryPositionalEmbedding``.

``MultiheadAttention`` follows ``torch.nn.MultiheadAttention`` (constructor arguments,
parameter names and shapes, initial distributions, mask semantics); its attention dropout
draws from ``st["key"]``, never from torch's global RNG.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .. import init
from .. import random as lrandom
from .._graph import forward_ad_active
from ..core import Layer, Params, State
from ..tree import Static
from ._common import (
    TORCH_PLACEMENT,
    changed_options,
    check_bool,
    check_int,
    describe_value,
    options_problem,
)
from .basic import fan_in_uniform

__all__ = ["MultiheadAttention", "RotaryPositionalEmbedding", "SinusoidalPositionalEmbedding"]


_OPTIONS = ("key_padding_mask", "attn_mask", "is_causal")
_FIELD_OPTIONS = {
    name: f"it is a field of the layer (MultiheadAttention(..., {name}=...))"
    for name in ("need_weights", "average_attn_weights")
}
_INPUT_FORMS = (
    "expected a tensor (self-attention), (query, key, value), (query, key, value, "
    "key_padding_mask, attn_mask), (query, key, value, options) or (x, options) with "
    "options a dict"
)


def _float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean masks (``True`` = masked out) become ``0 / -inf``; float masks are kept."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


def _device_problem(ps: Params, *inputs: Any) -> str | None:
    """Why the input tensors are not all on the parameters' device, or ``None``.

    Checked before any kernel runs: with a meta-device input and CPU parameters,
    ``F.linear`` on a non-contiguous input returns an uninitialised CPU tensor.
    """
    device = ps["out_proj"]["weight"].device
    names = ("query", "key", "value", "key_padding_mask", "attn_mask")
    for name, t in zip(names, inputs, strict=True):
        if isinstance(t, torch.Tensor) and t.device != device:
            return (
                f"{name} is on {t.device} but the parameters are on {device}; move the "
                "inputs or the parameters (lux_torch.tree.to(ps, device=...)) to one device"
            )
    return None


class MultiheadAttention(Layer):
    """Multi-head scaled dot-product attention (``torch.nn.MultiheadAttention``).

    ``softmax(Q K^T / sqrt(d) + mask) V`` for ``num_heads`` heads of size
    ``d = embed_dim // num_heads``, with learned input projections of query, key and value
    and a learned output projection. Without attention dropout in effect (``dropout = 0``
    or test mode) and without ``need_weights`` the core is
    :func:`torch.nn.functional.scaled_dot_product_attention` (except under forward-mode
    AD, ``torch.func.jvp``/``jacfwd``, where the same attention is computed explicitly: CPU
    ``scaled_dot_product_attention`` has no forward-mode rule); otherwise it is computed
    explicitly and dropout is applied to the attention weights with a mask drawn from
    ``st["key"]`` (advanced at every training-mode call).

    Arguments:
        embed_dim: model dimension ``E`` (query features and output features).
        num_heads: number of heads; must divide ``embed_dim``.
        dropout: drop probability of the attention weights (training mode only).
        bias: learnable biases of the input and output projections.
        add_bias_kv: append a learned ``bias_k``/``bias_v`` to the key/value sequences.
        add_zero_attn: append a zero key and a zero value (after the projections and
            ``bias_k``/``bias_v``), as torch: every query can attend to it (masks are
            padded with "keep"), so a query whose keys are all masked out gets a zero
            attention result (the output is the output bias).
        kdim, vdim: feature sizes of key and value (default ``embed_dim``).
        batch_first: inputs are ``(N, L, E)`` instead of ``(L, N, E)``.
        need_weights: also return the attention weights (computed explicitly).
        average_attn_weights: with ``need_weights``, average the weights over heads
            (``(N, L, S)``) instead of returning ``(N, num_heads, L, S)``.
        causal: always mask out key positions ``j > i`` for query position ``i`` (as the
            call option ``is_causal=True`` does for one call).

    Input:
        ``x`` is one of

        - a tensor (self-attention: query = key = value);
        - ``(query, key, value)``;
        - ``(query, key, value, key_padding_mask, attn_mask)``, either mask may be ``None``;
        - ``(query, key, value, options)`` or ``(x, options)`` (self-attention), where
          ``options`` is a dict of call options named as the keyword arguments of
          torch's ``forward``: ``"key_padding_mask"``, ``"attn_mask"`` (both default
          ``None``) and ``"is_causal"`` (default ``False``).

        Shapes and meanings:

        - ``query``: ``(L, N, E)`` (``(N, L, E)`` with ``batch_first``) or unbatched
          ``(L, E)``; ``key``/``value``: ``(S, N, kdim)``/``(S, N, vdim)`` likewise.
        - ``key_padding_mask``: ``(N, S)`` (``(S,)`` unbatched); ``True`` (or ``-inf``
          in a float mask) ignores that key position.
        - ``attn_mask``: ``(L, S)`` or ``(N * num_heads, L, S)``; boolean ``True`` masks
          out, a float mask is added to the attention scores.
        - ``is_causal``: ``True`` masks out key positions ``j > i`` for query position
          ``i`` in this call (combined with any ``attn_mask`` and with the ``causal``
          field). In torch ``is_causal`` is only a hint that ``attn_mask`` already *is*
          the causal mask, and an ``attn_mask`` is required; here the mask is applied,
          and passing torch's causal ``attn_mask`` as well changes nothing.

        The options are plain Python values in the input, so they are static under
        ``torch.compile`` (one graph per combination) and ``torch.func.vmap``.

        A query whose keys are all masked out gets NaN on the explicit path
        (``need_weights``, or attention dropout in training) and a zero attention result
        on the ``scaled_dot_product_attention`` path, as torch on the same paths;
        ``add_zero_attn`` avoids both.

    Returns:
        ``attn_output`` shaped like ``query`` (last dimension ``E``), or with
        ``need_weights`` the pair ``(attn_output, attn_weights)`` (the weights after
        dropout, as torch; ``(N, L, S')``, ``(L, S')`` unbatched, where ``S'`` counts the
        ``bias_k`` and zero-attention columns too); and the new state.

        An empty batch (``N = 0``) gives torch's empty result.

    Raises:
        ValueError: for an input of another form or shape, an unknown call option, or an
            input tensor (masks included) on another device than the parameters.

    **Parameters**
        - ``in_proj_weight``: ``(3E, E)`` when ``kdim == vdim == E``; otherwise
          ``q_proj_weight`` ``(E, E)``, ``k_proj_weight`` ``(E, kdim)``,
          ``v_proj_weight`` ``(E, vdim)`` (Xavier-uniform).
        - ``in_proj_bias``: ``(3E,)`` (zeros; only with ``bias``).
        - ``bias_k``, ``bias_v``: ``(1, 1, E)`` (Xavier-normal; only with ``add_bias_kv``).
        - ``out_proj``: ``{"weight": (E, E), "bias": (E,)}`` (``torch.nn.Linear``'s
          weight init, zero bias; no bias without ``bias``).

    **States**
        ``{}`` when ``dropout == 0``; otherwise
        - ``key``: ``(2,)`` int64, the random key of the attention dropout.
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = MultiheadAttention(16, 4, batch_first=True)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(2, 5, 16), ps, st)  # self-attention  # doctest: +SKIP
        >>> causal = (x, {"is_causal": True})  # self-attention, causal  # doctest: +SKIP
        >>> y, st = layer(causal, ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    embed_dim: int
    num_heads: int
    dropout: float = 0.0
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False
    kdim: int | None = None
    vdim: int | None = None
    batch_first: bool = False
    need_weights: bool = False
    average_attn_weights: bool = True
    causal: bool = False

    def __post_init__(self) -> None:
        name = "MultiheadAttention"
        check_int(name, "embed_dim", self.embed_dim, 1)
        check_int(name, "num_heads", self.num_heads, 1)
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"{name}: embed_dim ({self.embed_dim}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{name}: dropout must be a float, got {type(p).__name__}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {p}")
        for flag in (
            "bias",
            "add_bias_kv",
            "add_zero_attn",
            "batch_first",
            "need_weights",
            "average_attn_weights",
            "causal",
        ):
            check_bool(name, flag, getattr(self, flag))
        kdim = self.embed_dim if self.kdim is None else check_int(name, "kdim", self.kdim, 1)
        vdim = self.embed_dim if self.vdim is None else check_int(name, "vdim", self.vdim, 1)
        self._set_fields(dropout=float(p), kdim=kdim, vdim=vdim)

    @property
    def _packed(self) -> bool:
        return self.kdim == self.embed_dim and self.vdim == self.embed_dim

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def init_params(self, key: torch.Tensor) -> Params:
        e = self.embed_dim
        keys = lrandom.split(key, 6)
        ps: Params = {}
        if self._packed:
            ps["in_proj_weight"] = init.glorot_uniform(keys[0], 3 * e, e)
        else:
            assert self.kdim is not None and self.vdim is not None
            ps["q_proj_weight"] = init.glorot_uniform(keys[0], e, e)
            ps["k_proj_weight"] = init.glorot_uniform(keys[1], e, self.kdim)
            ps["v_proj_weight"] = init.glorot_uniform(keys[2], e, self.vdim)
        if self.bias:
            ps["in_proj_bias"] = init.zeros(keys[3], 3 * e)
        if self.add_bias_kv:
            ps["bias_k"] = init.glorot_normal(keys[4], 1, 1, e)
            ps["bias_v"] = init.glorot_normal(lrandom.fold_in(keys[4], 1), 1, 1, e)
        out: Params = {"weight": fan_in_uniform(keys[5], (e, e), e)}
        if self.bias:
            out["bias"] = init.zeros(keys[5], e)
        ps["out_proj"] = out
        return ps

    def init_state(self, key: torch.Tensor) -> State:
        if self.dropout == 0.0:
            return {}
        return {"key": key.clone(), "training": Static(True)}

    # -- input handling
    def _parse(self, x: Any) -> tuple[Any, ...] | str:
        """``(query, key, value, key_padding_mask, attn_mask, is_causal)`` or a problem."""
        if isinstance(x, torch.Tensor):
            return x, x, x, None, None, False
        if not isinstance(x, (tuple, list)):
            return _INPUT_FORMS + f", got {describe_value(x)}"
        items = list(x)
        if items and isinstance(items[-1], dict):
            options = items.pop()
            problem = options_problem(options, _OPTIONS, ("is_causal",), _FIELD_OPTIONS)
            if problem is not None:
                return problem
            if len(items) == 1:
                items = items * 3
            if len(items) != 3:
                return (
                    "a dict of call options must follow x (self-attention) or "
                    f"(query, key, value), got it after {len(items)} items"
                )
            kpm, mask = options.get("key_padding_mask"), options.get("attn_mask")
            return (*items, kpm, mask, bool(options.get("is_causal") or False))
        if len(items) == 3:
            return (*items, None, None, False)
        if len(items) == 5:
            return (*items, False)
        return _INPUT_FORMS + f", got a {type(x).__name__} of {len(items)} items"

    def describe_input_error(self, x: Any) -> str | None:
        parts = self._parse(x)
        if isinstance(parts, str):
            return parts
        return self._problem(*parts[:5])

    def _problem(self, q: Any, k: Any, v: Any, kpm: Any, mask: Any) -> str | None:
        for name, t in (("query", q), ("key", k), ("value", v)):
            if not isinstance(t, torch.Tensor):
                return f"{name} must be a tensor, got {describe_value(t)}"
        if q.dim() not in (2, 3):
            return f"expected a 2-D (unbatched) or 3-D query, got shape {tuple(q.shape)}"
        batched = q.dim() == 3
        for name, t, features in (
            ("query", q, self.embed_dim),
            ("key", k, self.kdim),
            ("value", v, self.vdim),
        ):
            if t.dim() != q.dim() or t.shape[-1] != features:
                length = "L" if name == "query" else "S"
                if batched and not self.batch_first:
                    want = f"({length}, N, {features})"
                elif batched:
                    want = f"(N, {length}, {features})"
                else:
                    want = f"({length}, {features})"
                return f"expected {name} of shape {want}, got {tuple(t.shape)}"
        if k.shape[:-1] != v.shape[:-1]:
            return f"key and value shapes differ: {tuple(k.shape)} and {tuple(v.shape)}"
        seq = 1 if batched and self.batch_first else 0
        n = q.shape[1 - seq] if batched else 1
        if batched and k.shape[1 - seq] != n:
            return f"query and key batch sizes differ: {tuple(q.shape)} and {tuple(k.shape)}"
        return self._mask_problem(kpm, mask, batched, n, q.shape[seq], k.shape[seq])

    def _mask_problem(
        self, kpm: Any, mask: Any, batched: bool, n: int, length: int, src: int
    ) -> str | None:
        """Why ``key_padding_mask`` or ``attn_mask`` does not fit the query and key, or ``None``."""
        if kpm is not None:
            want_kpm = (n, src) if batched else (src,)
            if not isinstance(kpm, torch.Tensor) or tuple(kpm.shape) != want_kpm:
                return f"expected key_padding_mask of shape {want_kpm}, got {describe_value(kpm)}"
        if mask is not None:
            shapes = [(length, src), (n * self.num_heads, length, src)]
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) not in shapes:
                return (
                    f"expected attn_mask of shape {shapes[0]} or {shapes[1]}, "
                    f"got {describe_value(mask)}"
                )
        return None

    # -- forward
    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        q, k, v, kpm, mask, is_causal = self._checked_inputs(x, ps)
        batched = q.dim() == 3
        q, k, v, kpm = self._batch_first(q, k, v, kpm, batched)
        q, k, v = self._project(ps, q, k, v)
        # explicit sizes, never -1: an empty batch (N = 0) has to reshape too
        n, length, src = q.shape[0], q.shape[1], k.shape[1]
        k, v, extra = self._extra_keys(ps, k, v)
        bias = self._attention_bias(mask, kpm, self.causal or is_causal, n, length, src, extra, q)
        out, weights, new_st = self._attend(q, k, v, bias, st)
        out = F.linear(out, ps["out_proj"]["weight"], ps["out_proj"].get("bias"))
        out = self._batch_last(out, batched)
        if not self.need_weights:
            return out, new_st
        assert weights is not None
        if self.average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            weights = weights.squeeze(0)
        return (out, weights), new_st

    def _checked_inputs(self, x: Any, ps: Params) -> tuple[Any, ...]:
        """``(query, key, value, key_padding_mask, attn_mask, is_causal)``, checked: shapes
        against the configuration, devices against the parameters."""
        parts = self._parse(x)
        if isinstance(parts, str):
            raise ValueError(f"MultiheadAttention: {parts}")
        problem = self._problem(*parts[:5])
        if problem is not None:
            raise ValueError(f"MultiheadAttention: {problem}")
        problem = _device_problem(ps, *parts[:5])
        if problem is not None:
            raise ValueError(f"MultiheadAttention: {problem}")
        return parts

    def _batch_first(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kpm: Any, batched: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Query, key and value as ``(N, L, E)``, the padding mask as ``(N, S)``."""
        if not batched:
            q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
            kpm = None if kpm is None else kpm.unsqueeze(0)
        elif not self.batch_first:
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        return q, k, v, kpm

    def _batch_last(self, out: torch.Tensor, batched: bool) -> torch.Tensor:
        """The inverse of :meth:`_batch_first` for the output."""
        if not batched:
            return out.squeeze(0)
        return out if self.batch_first else out.transpose(0, 1)

    def _project(
        self, ps: Params, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The input projections (one packed weight or three)."""
        if self._packed:
            w_q, w_k, w_v = ps["in_proj_weight"].chunk(3)
        else:
            w_q, w_k, w_v = ps["q_proj_weight"], ps["k_proj_weight"], ps["v_proj_weight"]
        b_q = b_k = b_v = None
        if self.bias:
            b_q, b_k, b_v = ps["in_proj_bias"].chunk(3)
        return F.linear(q, w_q, b_q), F.linear(k, w_k, b_k), F.linear(v, w_v, b_v)

    def _extra_keys(
        self, ps: Params, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Append ``bias_k``/``bias_v`` and then a zero key/value (after the projections, as
        torch); return the number of positions appended too."""
        extra = 0
        if self.add_bias_kv:
            n, e = k.shape[0], self.embed_dim
            k = torch.cat([k, ps["bias_k"].expand(n, 1, e)], dim=1)
            v = torch.cat([v, ps["bias_v"].expand(n, 1, e)], dim=1)
            extra += 1
        if self.add_zero_attn:
            k = torch.cat([k, torch.zeros_like(k[:, :1])], dim=1)
            v = torch.cat([v, torch.zeros_like(v[:, :1])], dim=1)
            extra += 1
        return k, v, extra

    def _attention_bias(
        self,
        mask: Any,
        kpm: Any,
        causal: bool,
        n: int,
        length: int,
        src: int,
        extra: int,
        q: torch.Tensor,
    ) -> torch.Tensor | None:
        """The additive mask, broadcastable to ``(N, H, L, S + extra)``: ``attn_mask``, the
        causal mask and ``key_padding_mask`` together; the ``extra`` appended keys are never
        masked out by the first two and follow ``key_padding_mask``'s padding."""
        bias: torch.Tensor | None = None
        if mask is not None:
            m = _float_mask(mask, q.dtype)
            bias = m if m.dim() == 2 else m.reshape(n, self.num_heads, length, src)
        if causal:
            upper = torch.ones(length, src, dtype=torch.bool, device=q.device).triu(1)
            c = _float_mask(upper, q.dtype)
            bias = c if bias is None else bias + c
        for _ in range(extra):
            if bias is not None:
                bias = F.pad(bias, (0, 1))
            if kpm is not None:
                kpm = F.pad(kpm, (0, 1))
        if kpm is not None:
            pad = _float_mask(kpm, q.dtype).reshape(n, 1, 1, src + extra)
            bias = pad if bias is None else bias + pad
        return bias

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Any, st: State
    ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """Scaled dot-product attention over the heads: ``(N, L, E)`` output, the weights
        (``(N, H, L, S)``, after dropout as torch's) when they are needed, the new state."""
        n, length, src = q.shape[0], q.shape[1], k.shape[1]
        h, d = self.num_heads, self.head_dim
        qh = q.reshape(n, length, h, d).transpose(1, 2)  # (N, H, L, D)
        kh = k.reshape(n, src, h, d).transpose(1, 2)  # (N, H, S, D)
        vh = v.reshape(n, src, h, d).transpose(1, 2)
        drop = bool(st.get("training", False)) and self.dropout > 0.0
        fused = not (drop or self.need_weights)
        if fused and not forward_ad_active():
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias)
            return out.transpose(1, 2).reshape(n, length, self.embed_dim), None, st
        scores = (qh * (1.0 / math.sqrt(d))) @ kh.transpose(-2, -1)
        if bias is not None:
            scores = scores + bias
        weights = torch.softmax(scores, dim=-1)
        if fused:  # forward mode (CPU sdpa has no rule): sdpa's zeros for all-masked rows
            weights = torch.where(scores.isneginf().all(-1, keepdim=True), 0.0, weights)
        new_st = st
        if drop:
            new_key, use_key = lrandom.split(st["key"])
            if self.dropout == 1.0:
                weights = weights * 0.0
            else:
                weights = lrandom.dropout(use_key, weights, self.dropout)
            new_st = {"key": new_key, "training": st["training"]}
        out = weights @ vh  # (torch returns the weights after dropout too)
        return out.transpose(1, 2).reshape(n, length, self.embed_dim), weights, new_st

    def extra_repr(self) -> str:
        parts = [f"embed_dim={self.embed_dim}", f"num_heads={self.num_heads}"]
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if not self._packed:
            parts.append(f"kdim={self.kdim}, vdim={self.vdim}")
        defaults = (
            ("bias", True),
            ("add_bias_kv", False),
            ("add_zero_attn", False),
            ("batch_first", False),
            ("need_weights", False),
            ("average_attn_weights", True),
            ("causal", False),
        )
        return ", ".join(parts + changed_options(self, defaults))


# --------------------------------------------------------------------------- positions


def _check_dim(owner: str, dim: Any) -> None:
    check_int(owner, "dim", dim, 2)
    if dim % 2:
        raise ValueError(f"{owner}: dim must be even, got {dim}")


def check_rope_base(owner: str, base: Any) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or base <= 0:
        raise ValueError(f"{owner}: base must be a positive number, got {base!r}")
    return float(base)


def _angles(positions: torch.Tensor, dim: int, base: float, dtype: torch.dtype) -> torch.Tensor:
    """``(len(positions), dim // 2)``: ``t * base ** (-2i / dim)``, in at least float32."""
    work = torch.promote_types(dtype, torch.float32)
    inv = base ** (-torch.arange(0, dim, 2, dtype=work, device=positions.device) / dim)
    return positions.to(work)[:, None] * inv[None, :]


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE of ``x`` ``(*, T, D)`` at integer ``positions`` ``(T,)`` (interleaved pairs): the
    maths of :class:`RotaryPositionalEmbedding` (positions ``0, ..., T - 1``) and of
    :class:`~lux_torch.layers.lm.GroupedQueryAttention` (a cached step starts anywhere)."""
    ang = _angles(positions, x.shape[-1], base, x.dtype)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    pairs = x.unflatten(-1, (x.shape[-1] // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def _position_problem(layer: Any, x: Any) -> str | None:
    if not isinstance(x, torch.Tensor):
        return f"expected a Tensor, got {type(x).__name__}"
    if x.dim() < 2 or x.shape[-1] != layer.dim:
        return f"expected input of shape (*, T, {layer.dim}), got {tuple(x.shape)}"
    max_len = getattr(layer, "max_len", None)
    if max_len is not None and x.shape[-2] > max_len:
        return f"sequence length {x.shape[-2]} exceeds max_len={max_len}"
    return None


class SinusoidalPositionalEmbedding(Layer):
    """Add the sinusoidal position table of "Attention Is All You Need" to the input.

    ``y[..., t, 2i] = x[..., t, 2i] + sin(t * base^(-2i / dim))`` and
    ``y[..., t, 2i + 1] = x[..., t, 2i + 1] + cos(t * base^(-2i / dim))``, positions
    ``t = 0, ..., T - 1`` along the second-to-last dimension. The table is computed at
    each call (no parameters, no state); :meth:`table` returns it alone.

    Arguments:
        dim: feature size (even).
        max_len: the longest accepted sequence (``None``: unlimited).
        base: the wavelength base (10000 in the paper).

    Input:
        ``x`` of shape ``(*, T, dim)`` (batch-first; transpose ``(T, N, dim)`` inputs).

    Returns:
        ``x + table`` of the same shape, and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> layer = SinusoidalPositionalEmbedding(16)
        >>> y, _ = layer(torch.zeros(2, 5, 16), {}, {})  # doctest: +SKIP
    """

    dim: int
    max_len: int | None = None
    base: float = 10000.0

    def __post_init__(self) -> None:
        owner = "SinusoidalPositionalEmbedding"
        _check_dim(owner, self.dim)
        if self.max_len is not None:
            check_int(owner, "max_len", self.max_len, 1)
        self._set_fields(base=check_rope_base(owner, self.base))

    def table(
        self,
        length: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """The ``(length, dim)`` table (sines in even columns, cosines in odd ones)."""
        dtype = torch.get_default_dtype() if dtype is None else dtype
        positions = torch.arange(length, device=torch.device(device or "cpu"))
        ang = _angles(positions, self.dim, self.base, dtype)
        return torch.stack([ang.sin(), ang.cos()], dim=-1).reshape(length, self.dim).to(dtype)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = _position_problem(self, x)
        if problem is not None:
            raise ValueError(f"SinusoidalPositionalEmbedding: {problem}")
        return x + self.table(x.shape[-2], x.dtype, x.device), st

    def extra_repr(self) -> str:
        parts = [str(self.dim)]
        if self.max_len is not None:
            parts.append(f"max_len={self.max_len}")
        if self.base != 10000.0:
            parts.append(f"base={self.base}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        return _position_problem(self, x)


class RotaryPositionalEmbedding(Layer):
    """Rotary position embedding (RoPE, Su et al. 2021) of queries or keys.

    Each consecutive feature pair ``(x[..., t, 2i], x[..., t, 2i + 1])`` is rotated by the
    angle ``t * base^(-2i / dim)`` (the interleaved-pair convention of the paper), positions
    ``t = 0, ..., T - 1`` along the second-to-last dimension: as complex numbers,
    ``y_i = x_i * exp(1j * t * theta_i)``. Apply it to queries and keys shaped
    ``(N, H, T, head_dim)`` before the dot product, so that scores depend on relative
    positions only. No parameters, no state.

    Arguments:
        dim: feature size (even), e.g. the head dimension.
        base: the frequency base (10000 in the paper).

    Input:
        ``x`` of shape ``(*, T, dim)``.

    Returns:
        The rotated ``x`` (same shape), and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> rope = RotaryPositionalEmbedding(8)
        >>> q, _ = rope(torch.randn(2, 4, 5, 8), {}, {})  # doctest: +SKIP
    """

    dim: int
    base: float = 10000.0

    def __post_init__(self) -> None:
        owner = "RotaryPositionalEmbedding"
        _check_dim(owner, self.dim)
        self._set_fields(base=check_rope_base(owner, self.base))

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = _position_problem(self, x)
        if problem is not None:
            raise ValueError(f"RotaryPositionalEmbedding: {problem}")
        return rotate(x, torch.arange(x.shape[-2], device=x.device), self.base), st

    def extra_repr(self) -> str:
        return str(self.dim) if self.base == 10000.0 else f"{self.dim}, base={self.base}"

    def describe_input_error(self, x: Any) -> str | None:
        return _position_problem(self, x)
