"""Decoder-only language-model blocks: ``GroupedQueryAttention`` (GQA/MQA/MHA with RoPE and
a KV cache kept in ``st``), the ``SwiGLU`` feed-forward network and the pre-norm
``DecoderBlock`` that combines them with ``RMSNorm``; :func:`init_cache` and
:func:`drop_cache` add and remove the KV caches of every attention layer of a model.

The KV cache is pure state: when ``st`` of a :class:`GroupedQueryAttention` holds a
``"cache"`` entry, a call writes the new keys and values into the preallocated
``(N, num_kv_heads, max_len, head_dim)`` buffers at the position counter ``pos``, attends
to every cached position up to its own, and returns the updated buffers and ``pos + T`` in
the new state. The buffers have a fixed size, so a compiled decoding step is traced once,
not once per token.

Cached decoding computes the same maths as the full forward, but not bitwise the same
numbers: the projections of one token are matrix-vector products, those of ``T`` tokens
matrix-matrix products, and BLAS sums them in another order (measured on CPU: at most
2.2e-16 absolute in float64, 2.4e-7 in float32, for outputs of order 1). Greedy tokens
agree; the tests compare float64 logits at ``rtol=1e-12``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .. import tree as ltree
from .._graph import forward_ad_active
from ..core import Layer, Params, State
from ..experimental.frozen import Frozen
from ._common import check_bool, check_int, describe_value
from .attention import check_rope_base, rotate
from .basic import Linear
from .normalization import RMSNorm
from .stacked import StackedChain

__all__ = ["DecoderBlock", "GroupedQueryAttention", "SwiGLU", "drop_cache", "init_cache"]


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None, groups: int
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D) | keep) v`` for ``q`` ``(N, H, T, D)`` and ``k``/``v``
    ``(N, H / groups, S, D)``; query head ``h`` reads key/value head ``h // groups``.

    :func:`torch.nn.functional.scaled_dot_product_attention` with ``enable_gqa``; under
    forward-mode AD (CPU sdpa has no forward rule) the same maths explicitly."""
    if not forward_ad_active():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=groups > 1)
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class GroupedQueryAttention(Layer):
    """Causal grouped-query self-attention with rotary position embeddings and an optional
    KV cache (Ainslie et al. 2023; ``num_kv_heads == num_heads`` is multi-head attention,
    ``num_kv_heads == 1`` multi-query attention).

    ``num_heads`` query heads of size ``head_dim`` share ``num_kv_heads`` key/value heads in
    groups of ``num_heads // num_kv_heads`` (query head ``h`` reads key/value head
    ``h // groups``, as ``repeat_interleave`` and sdpa's ``enable_gqa``). RoPE
    (:class:`~lux_torch.layers.attention.RotaryPositionalEmbedding`'s maths, interleaved
    pairs, base ``rope_base``) rotates queries and keys at their absolute positions. The core
    is :func:`torch.nn.functional.scaled_dot_product_attention` (an explicit softmax under
    forward-mode AD).

    Arguments:
        embed_dim: model dimension ``E``.
        num_heads: query heads ``H``.
        num_kv_heads: key/value heads ``H_kv`` (divides ``H``; default ``H``).
        head_dim: per-head size ``D`` (default ``E // H``).
        max_len: the KV cache length (positions ``0 .. max_len - 1``); ``None``: no cache
            can be used.
        bias: biases in the four projections (``False``, as Llama).
        rope: rotate queries and keys (``False``: no position information in the layer).
        rope_base: RoPE's frequency base.
        causal: mask out keys after each query (``True``; a cache needs it).

    Input:
        ``x`` of shape ``(N, T, E)``. With a cache in ``st`` the ``T`` new tokens take the
        positions ``pos, ..., pos + T - 1`` (``pos + T <= max_len``: writing past the end is
        an error in eager mode; under ``torch.compile`` the positions are not checked).

    Returns:
        ``(N, T, E)`` and the new state (the updated cache, when there is one).

    **Parameters**
        - ``q_proj``: ``{"weight": (H * D, E)}`` (and ``"bias"`` ``(H * D,)`` with ``bias``)
        - ``k_proj``, ``v_proj``: ``{"weight": (H_kv * D, E)}`` (and ``"bias"``)
        - ``o_proj``: ``{"weight": (E, H * D)}`` (and ``"bias"`` ``(E,)``)

        (``torch.nn.Linear``'s initialisation; the names of Llama-style checkpoints.)

    **States**
        - ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``: the projections' states (``{}``,
          or a :class:`~lux_torch.layers.lora.LoRA`'s frozen base weights).
        - ``cache`` (only after :func:`init_cache`): ``{"k": (N, H_kv, max_len, D),
          "v": (N, H_kv, max_len, D), "pos": int64 ()}`` -- the rotated keys, the values,
          and the number of positions written.

    Example:
        >>> attn = GroupedQueryAttention(64, 8, num_kv_heads=2, max_len=128)
        >>> ps, st = lux_torch.setup(0, attn)  # doctest: +SKIP
        >>> y, _ = attn(torch.randn(2, 10, 64), ps, st)  # doctest: +SKIP
    """

    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_len: int | None
    bias: bool
    rope: bool
    rope_base: float
    causal: bool
    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    o_proj: Linear

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        max_len: int | None = None,
        bias: bool = False,
        rope: bool = True,
        rope_base: float = 10000.0,
        causal: bool = True,
    ) -> None:
        owner = "GroupedQueryAttention"
        check_int(owner, "embed_dim", embed_dim, 1)
        check_int(owner, "num_heads", num_heads, 1)
        kv = (
            num_heads if num_kv_heads is None else check_int(owner, "num_kv_heads", num_kv_heads, 1)
        )
        if num_heads % kv:
            raise ValueError(f"{owner}: num_kv_heads={kv} must divide num_heads={num_heads}")
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(
                    f"{owner}: num_heads={num_heads} must divide embed_dim={embed_dim} "
                    "(or give head_dim)"
                )
            head_dim = embed_dim // num_heads
        check_int(owner, "head_dim", head_dim, 1)
        if rope and head_dim % 2:
            raise ValueError(f"{owner}: RoPE needs an even head_dim, got {head_dim}")
        if max_len is not None:
            check_int(owner, "max_len", max_len, 1)
        for name, flag in (("bias", bias), ("rope", rope), ("causal", causal)):
            check_bool(owner, name, flag)
        if max_len is not None and not causal:
            raise ValueError(f"{owner}: a KV cache (max_len) needs causal=True")
        inner, kv_inner = num_heads * head_dim, kv * head_dim
        self._set_fields(
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            max_len=max_len,
            bias=bias,
            rope=rope,
            rope_base=check_rope_base(owner, rope_base),
            causal=causal,
            q_proj=Linear(embed_dim, inner, bias=bias),
            k_proj=Linear(embed_dim, kv_inner, bias=bias),
            v_proj=Linear(embed_dim, kv_inner, bias=bias),
            o_proj=Linear(inner, embed_dim, bias=bias),
        )

    @property
    def groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def empty_cache(
        self, batch_size: int, dtype: torch.dtype, device: torch.device | str | None = None
    ) -> State:
        """A zeroed cache ``{"k", "v", "pos"}`` for ``batch_size`` sequences (see States)."""
        if self.max_len is None:
            raise ValueError(f"{self!r}: no KV cache without max_len")
        shape = (batch_size, self.num_kv_heads, self.max_len, self.head_dim)
        return {
            "k": torch.zeros(shape, dtype=dtype, device=device),
            "v": torch.zeros(shape, dtype=dtype, device=device),
            "pos": torch.zeros((), dtype=torch.int64, device=device),
        }

    def _heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        n, length = t.shape[0], t.shape[1]
        return t.reshape(n, length, heads, self.head_dim).transpose(1, 2)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem is not None:
            raise ValueError(f"GroupedQueryAttention: {problem}")
        new_st = dict(st)
        proj = {}
        for name in ("q_proj", "k_proj", "v_proj"):
            proj[name], new_st[name] = getattr(self, name)(x, ps[name], st[name])
        q = self._heads(proj["q_proj"], self.num_heads)
        k = self._heads(proj["k_proj"], self.num_kv_heads)
        v = self._heads(proj["v_proj"], self.num_kv_heads)
        n, length = x.shape[0], x.shape[1]
        cache = st.get("cache")
        start = (
            torch.zeros((), dtype=torch.int64, device=x.device) if cache is None else cache["pos"]
        )
        positions = start + torch.arange(length, device=x.device)
        if self.rope:
            q, k = rotate(q, positions, self.rope_base), rotate(k, positions, self.rope_base)
        if cache is not None:
            self._check_cache(cache, n, length, x)
            k = cache["k"].index_copy(2, positions, k.to(cache["k"].dtype))
            v = cache["v"].index_copy(2, positions, v.to(cache["v"].dtype))
            new_st["cache"] = {"k": k, "v": v, "pos": cache["pos"] + length}
        keep = None
        if self.causal:
            keys = torch.arange(k.shape[2], device=x.device)
            keep = keys[None, :] <= positions[:, None]  # (T, S)
        out = _attend(q, k, v, keep, self.groups)
        out = out.transpose(1, 2).reshape(n, length, self.num_heads * self.head_dim)
        y, new_st["o_proj"] = self.o_proj(out, ps["o_proj"], st["o_proj"])
        return y, new_st

    def _check_cache(self, cache: Any, n: int, length: int, x: torch.Tensor) -> None:
        """Eager checks of a cache (none while compiling: ``pos`` is data)."""
        if self.max_len is None:
            raise ValueError("GroupedQueryAttention: st holds a cache but max_len is None")
        want = (n, self.num_kv_heads, self.max_len, self.head_dim)
        for name in ("k", "v"):
            got = cache[name]
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != want:
                raise ValueError(
                    f"GroupedQueryAttention: st['cache'][{name!r}] should have shape {want} "
                    f"(batch {n}), got {describe_value(got)}; call init_cache again"
                )
        if torch.compiler.is_compiling() or forward_ad_active():
            return
        pos = cache["pos"]
        if pos.dim() == 0 and int(pos) + length > self.max_len:
            raise ValueError(
                f"GroupedQueryAttention: the cache holds {int(pos)} of max_len={self.max_len} "
                f"positions; {length} more do not fit"
            )

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor):
            return f"expected a tensor of shape (N, T, {self.embed_dim}), got {describe_value(x)}"
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            return f"expected input of shape (N, T, {self.embed_dim}), got {tuple(x.shape)}"
        return None

    def extra_repr(self) -> str:
        parts = [f"{self.embed_dim}", f"num_heads={self.num_heads}"]
        if self.num_kv_heads != self.num_heads:
            parts.append(f"num_kv_heads={self.num_kv_heads}")
        if self.head_dim * self.num_heads != self.embed_dim:
            parts.append(f"head_dim={self.head_dim}")
        if self.max_len is not None:
            parts.append(f"max_len={self.max_len}")
        for name, default in (("bias", False), ("rope", True), ("causal", True)):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)}")
        if self.rope_base != 10000.0:
            parts.append(f"rope_base={self.rope_base}")
        return ", ".join(parts)


class SwiGLU(Layer):
    """The SwiGLU feed-forward network (Shazeer 2020): ``w2(silu(w1 x) * w3 x)``.

    Arguments:
        dim: input and output features.
        hidden_dim: the gated hidden width.
        bias: biases in the three projections (``False``, as Llama).

    Input:
        ``x`` of shape ``(*, dim)``.

    Returns:
        ``(*, dim)`` and the (unchanged) state.

    **Parameters**
        - ``w1``, ``w3``: ``{"weight": (hidden_dim, dim)}`` (gate and value projections)
        - ``w2``: ``{"weight": (dim, hidden_dim)}`` (output projection)

        (and ``"bias"`` entries with ``bias``; ``torch.nn.Linear``'s initialisation.)

    **States**
        ``{"w1": {}, "w2": {}, "w3": {}}`` (the projections' states).

    Example:
        >>> mlp = SwiGLU(64, 172)
        >>> ps, st = lux_torch.setup(0, mlp)  # doctest: +SKIP
    """

    dim: int
    hidden_dim: int
    bias: bool
    w1: Linear
    w2: Linear
    w3: Linear

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False) -> None:
        check_int("SwiGLU", "dim", dim, 1)
        check_int("SwiGLU", "hidden_dim", hidden_dim, 1)
        check_bool("SwiGLU", "bias", bias)
        self._set_fields(
            dim=dim,
            hidden_dim=hidden_dim,
            bias=bias,
            w1=Linear(dim, hidden_dim, bias=bias),
            w2=Linear(hidden_dim, dim, bias=bias),
            w3=Linear(dim, hidden_dim, bias=bias),
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        gate, s1 = self.w1(x, ps["w1"], st["w1"])
        value, s3 = self.w3(x, ps["w3"], st["w3"])
        y, s2 = self.w2(F.silu(gate) * value, ps["w2"], st["w2"])
        return y, {**st, "w1": s1, "w2": s2, "w3": s3}

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.dim:
            return f"expected input of shape (*, {self.dim}), got {describe_value(x)}"
        return None

    def extra_repr(self) -> str:
        return f"{self.dim} => {self.hidden_dim}" + (", bias=True" if self.bias else "")


class DecoderBlock(Layer):
    """A pre-norm decoder block (Llama): ``h = x + attn(norm1(x))``,
    ``y = h + mlp(norm2(h))`` with :class:`RMSNorm`, :class:`GroupedQueryAttention` and
    :class:`SwiGLU`.

    Arguments:
        dim: model dimension.
        num_heads, num_kv_heads, max_len, rope_base: of the attention.
        hidden_dim: SwiGLU's hidden width (default ``4 * dim * 2 // 3`` rounded up to a
            multiple of 8).
        norm_eps: RMSNorm's ``eps`` (``None``: the dtype's machine epsilon, as torch).
        bias: biases in the linear maps.

    Input:
        ``(N, T, dim)``.

    Returns:
        ``(N, T, dim)`` and the new state (the attention's cache, when there is one).

    **Parameters**
        ``{"norm1": {"weight": (dim,)}, "attn": ..., "norm2": {"weight": (dim,)},
        "mlp": ...}`` (see :class:`GroupedQueryAttention` and :class:`SwiGLU`).

    **States**
        ``{"norm1": {}, "attn": ..., "norm2": {}, "mlp": ...}``.
    """

    dim: int
    norm1: RMSNorm
    attn: GroupedQueryAttention
    norm2: RMSNorm
    mlp: SwiGLU

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        hidden_dim: int | None = None,
        max_len: int | None = None,
        rope_base: float = 10000.0,
        norm_eps: float | None = 1e-6,
        bias: bool = False,
    ) -> None:
        check_int("DecoderBlock", "dim", dim, 1)
        if hidden_dim is None:
            hidden_dim = -(-(4 * dim * 2 // 3) // 8) * 8
        self._set_fields(
            dim=dim,
            norm1=RMSNorm(dim, eps=norm_eps),
            attn=GroupedQueryAttention(
                dim, num_heads, num_kv_heads, max_len=max_len, bias=bias, rope_base=rope_base
            ),
            norm2=RMSNorm(dim, eps=norm_eps),
            mlp=SwiGLU(dim, hidden_dim, bias=bias),
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        h, s_n1 = self.norm1(x, ps["norm1"], st["norm1"])
        a, s_attn = self.attn(h, ps["attn"], st["attn"])
        x = x + a
        h, s_n2 = self.norm2(x, ps["norm2"], st["norm2"])
        m, s_mlp = self.mlp(h, ps["mlp"], st["mlp"])
        return x + m, {**st, "norm1": s_n1, "attn": s_attn, "norm2": s_n2, "mlp": s_mlp}

    def describe_input_error(self, x: Any) -> str | None:
        return self.attn.describe_input_error(x)

    def extra_repr(self) -> str:
        return f"{self.dim}"


def _walk_caches(model: Layer, ps: Any, st: Any, fn: Any) -> Any:
    """``st`` with ``fn(attention_layer, ps, st)`` replacing the state of every
    :class:`GroupedQueryAttention` reached through children stored under their names (and
    through :class:`~lux_torch.experimental.frozen.Frozen`, whose parameters ``fn`` gets
    from ``st``; only their dtype and device are read)."""
    if isinstance(model, GroupedQueryAttention):
        return fn(model, ps, st)
    if not isinstance(st, Mapping):
        return st
    if isinstance(model, Frozen):  # frozen parameters are in st, the inner state below
        inner = _walk_caches(model.layer, st["frozen_params"], st["states"], fn)
        return {**st, "states": inner}
    if isinstance(model, StackedChain):  # block by block, the results stacked again
        blocks_ps = ps.get("layer", {}) if isinstance(ps, Mapping) else {}
        blocks = [
            _walk_caches(model.layer, _block(blocks_ps, i), _block(st["layer"], i), fn)
            for i in range(model.n)
        ]
        return {**st, "layer": ltree.stack(blocks) if ltree.leaves(blocks) else blocks[0]}
    out = dict(st)
    for name, child in model.children().items():
        if name in st:
            child_ps = ps.get(name, {}) if isinstance(ps, Mapping) else {}
            out[name] = _walk_caches(child, child_ps, st[name], fn)
    return out


def _block(tree: Any, i: int) -> Any:
    """Block ``i`` of a stacked tree."""
    return ltree.map(lambda t: t[i], tree)


def init_cache(model: Layer, ps: Params, st: State, batch_size: int) -> State:
    """``st`` with an empty KV cache for ``batch_size`` sequences in every
    :class:`GroupedQueryAttention` of ``model`` that has a ``max_len`` (dtype and device
    of its key projection's weight). Calls with the returned state decode incrementally.
    """
    check_int("init_cache", "batch_size", batch_size, 1)

    def add(layer: GroupedQueryAttention, ps: Any, st: Any) -> Any:
        if layer.max_len is None:
            return st
        # a LoRA on k_proj keeps its base weight in st; a frozen model has no ps entry
        w = _weight(ps.get("k_proj", {}) if isinstance(ps, Mapping) else {}, st["k_proj"])
        return {**st, "cache": layer.empty_cache(batch_size, w.dtype, w.device)}

    return dict(_walk_caches(model, ps, st, add))


def _weight(ps: Any, st: Any) -> torch.Tensor:
    """A floating tensor of a projection: its weight, or a LoRA's frozen base weight."""
    for tree in (ps, st):
        for leaf in _leaves(tree):
            if leaf.is_floating_point():
                return leaf
    raise ValueError("init_cache: no floating-point weight found in the key projection")


def _leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, Mapping):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    return []


def drop_cache(model: Layer, st: State) -> State:
    """``st`` without the KV caches that :func:`init_cache` added."""

    def drop(layer: GroupedQueryAttention, ps: Any, st: Any) -> Any:
        return {k: v for k, v in st.items() if k != "cache"}

    return dict(_walk_caches(model, {}, st, drop))
