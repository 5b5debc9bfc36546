"""GroupedQueryAttention, SwiGLU and DecoderBlock against plain torch references written
here (same weights by name), and the KV cache against the uncached forward.

The references repeat the key/value heads with ``repeat_interleave`` and compute the
softmax explicitly (never the layer's code path); RoPE is torch-written too (complex
multiplication of consecutive pairs). Compilation is checked in the ``slow`` tests only.

Cached decoding is not bitwise equal to the full forward: the projections of one token are
matrix-vector products, those of T tokens matrix-matrix products, and BLAS sums them in
another order (measured: 2.2e-16 max abs difference in float64, 2.4e-7 in float32 on CPU),
so the comparison uses float64 at ``rtol=1e-12`` and greedy tokens are compared exactly.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, check, randn

import lux_torch as lux
from lux_torch.layers.lm import (
    DecoderBlock,
    GroupedQueryAttention,
    SwiGLU,
    drop_cache,
    init_cache,
)

E, N, T = 16, 2, 5


def _rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE by complex multiplication of pairs (positions 0..T-1 along dim -2)."""
    d, length = x.shape[-1], x.shape[-2]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(length, dtype=torch.float64)[:, None] * theta[None, :]
    rot = torch.polar(torch.ones_like(ang), ang)
    z = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * rot).reshape(x.shape).to(x.dtype)


def _linear(t: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    return x @ t[f"{name}.weight"].T + t.get(f"{name}.bias", 0.0)


def _gqa_reference(layer: GroupedQueryAttention, prefix: str = "") -> Any:
    h, kv, d = layer.num_heads, layer.num_kv_heads, layer.head_dim

    def reference(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        q = _linear(t, prefix + "q_proj", x).reshape(n, length, h, d).transpose(1, 2)
        k = _linear(t, prefix + "k_proj", x).reshape(n, length, kv, d).transpose(1, 2)
        v = _linear(t, prefix + "v_proj", x).reshape(n, length, kv, d).transpose(1, 2)
        if layer.rope:
            q, k = _rope(q, layer.rope_base), _rope(k, layer.rope_base)
        k, v = k.repeat_interleave(h // kv, 1), v.repeat_interleave(h // kv, 1)
        scores = torch.einsum("nhtd,nhsd->nhts", q, k) / math.sqrt(d)
        if layer.causal:
            upper = torch.ones(length, length, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(upper, float("-inf"))
        out = torch.einsum("nhts,nhsd->nhtd", scores.softmax(-1), v)
        return _linear(t, prefix + "o_proj", out.transpose(1, 2).reshape(n, length, h * d))

    return reference


def _swiglu_reference(prefix: str = "") -> Any:
    def reference(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        a = _linear(t, prefix + "w1", x)
        return _linear(t, prefix + "w2", a * torch.sigmoid(a) * _linear(t, prefix + "w3", x))

    return reference


def _rms(t: dict[str, torch.Tensor], name: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * t[f"{name}.weight"]


def _block_reference(block: DecoderBlock) -> Any:
    attn, mlp = _gqa_reference(block.attn, "attn."), _swiglu_reference("mlp.")
    eps = block.norm1.eps
    assert eps is not None

    def reference(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        x = x + attn(t, _rms(t, "norm1", x, eps))
        y: torch.Tensor = x + mlp(t, _rms(t, "norm2", x, eps))
        return y

    return reference


GQA_CONFIGS = [
    {"num_heads": 4, "num_kv_heads": 2},  # GQA
    {"num_heads": 4, "num_kv_heads": 1},  # MQA
    {"num_heads": 4},  # MHA
    {"num_heads": 2, "num_kv_heads": 1, "head_dim": 6, "bias": True},
    {"num_heads": 4, "num_kv_heads": 2, "rope": False, "causal": False},
    {"num_heads": 4, "num_kv_heads": 2, "rope_base": 500.0, "max_len": 8},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", GQA_CONFIGS, ids=str)
def test_gqa_conforms(kw: dict[str, Any], dtype: torch.dtype) -> None:
    layer = GroupedQueryAttention(E, **kw)
    report = check(
        layer, randn(N, T, E, dtype=dtype), dtype, reference=_gqa_reference(layer), compile=False
    )
    for name in ("parity", "gradcheck", "jvp", "vmap", "vmap_inputs", "purity", "shapes"):
        assert report[name] == "passed", (name, report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_conforms(dtype: torch.dtype) -> None:
    for layer in (SwiGLU(E, 24), SwiGLU(E, 12, bias=True)):
        report = check(
            layer, randn(N, T, E, dtype=dtype), dtype, reference=_swiglu_reference(), compile=False
        )
        assert report["parity"] == "passed" and report["gradcheck"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
def test_decoder_block_conforms(dtype: torch.dtype) -> None:
    block = DecoderBlock(E, 4, 2, hidden_dim=24, max_len=8)
    report = check(
        block, randn(N, T, E, dtype=dtype), dtype, reference=_block_reference(block), compile=False
    )
    assert report["parity"] == "passed" and report["jvp"] == "passed"


@pytest.mark.slow
@pytest.mark.parametrize(
    "layer",
    [GroupedQueryAttention(E, 4, 2, max_len=8), SwiGLU(E, 24), DecoderBlock(E, 4, 1, 24)],
    ids=lambda layer: type(layer).__name__,
)
def test_lm_layers_compile(layer: lux.Layer) -> None:
    report = check(layer, randn(N, T, E), torch.float32, compile=True)
    assert report["compile"] == "passed"


def _decode(layer: lux.Layer, ps: Any, st: Any, x: torch.Tensor, prefill: int) -> Any:
    """Outputs of a prefill of ``prefill`` tokens and then one token at a time."""
    cache = init_cache(layer, ps, st, x.shape[0])
    out, cache = layer(x[:, :prefill], ps, cache)
    outs = [out]
    for t in range(prefill, x.shape[1]):
        out, cache = layer(x[:, t : t + 1], ps, cache)
        outs.append(out)
    return torch.cat(outs, 1), cache


@pytest.mark.parametrize("kv", [1, 2, 4])
@pytest.mark.parametrize("prefill", [1, 3])
def test_cached_decoding_equals_full_forward(kv: int, prefill: int) -> None:
    block = DecoderBlock(E, 4, kv, hidden_dim=24, max_len=10)
    ps, st = lux.setup(3, block, dtype=torch.float64)
    x = randn(N, 7, E, dtype=torch.float64, seed=4)
    full, _ = block(x, ps, st)
    cached, cache = _decode(block, ps, st, x, prefill)
    torch.testing.assert_close(cached, full, rtol=1e-12, atol=1e-14)
    assert int(cache["attn"]["cache"]["pos"]) == 7
    # the cache holds the rotated keys of the first 7 positions, zeros after them
    assert torch.all(cache["attn"]["cache"]["k"][:, :, 7:] == 0)
    assert set(drop_cache(block, cache)["attn"]) == set(st["attn"])


def test_cached_state_is_pure_and_checked() -> None:
    layer = GroupedQueryAttention(E, 4, 2, max_len=4)
    ps, st = lux.setup(0, layer)
    cache = init_cache(layer, ps, st, N)
    before = cache["cache"]["k"].clone()
    _, new = layer(randn(N, 3, E), ps, cache)
    assert torch.equal(cache["cache"]["k"], before) and int(cache["cache"]["pos"]) == 0
    assert int(new["cache"]["pos"]) == 3
    with pytest.raises(ValueError, match="do not fit"):
        layer(randn(N, 2, E), ps, new)
    with pytest.raises(ValueError, match=r"batch 3"):
        layer(randn(3, 1, E), ps, cache)
    with pytest.raises(ValueError, match="max_len"):
        init_cache(layer, ps, st, N) and GroupedQueryAttention(E, 4).empty_cache(1, torch.float32)


def test_compiled_decoding_step_does_not_recompile() -> None:
    """One fixed-shape trace serves every position: ``pos`` is a tensor, not a constant."""
    from torch._dynamo.testing import CompileCounter

    layer = GroupedQueryAttention(E, 4, 2, max_len=6)
    ps, st = lux.setup(0, layer)
    counter = CompileCounter()
    step = torch.compile(layer.__call__, backend=counter, fullgraph=True)
    cache = init_cache(layer, ps, st, N)
    x = randn(N, 6, E)
    outs = []
    for t in range(6):
        y, cache = step(x[:, t : t + 1], ps, cache)
        outs.append(y)
    assert counter.frame_count == 1
    full, _ = layer(x, ps, st)
    torch.testing.assert_close(torch.cat(outs, 1), full)


def test_gqa_errors() -> None:
    with pytest.raises(ValueError, match="must divide num_heads"):
        GroupedQueryAttention(E, 4, 3)
    with pytest.raises(ValueError, match="must divide embed_dim"):
        GroupedQueryAttention(E, 5)
    with pytest.raises(ValueError, match="even head_dim"):
        GroupedQueryAttention(E, 2, head_dim=5)
    with pytest.raises(ValueError, match="causal"):
        GroupedQueryAttention(E, 2, max_len=4, causal=False)
    layer = GroupedQueryAttention(E, 4, 2)
    ps, st = lux.setup(0, layer)
    with pytest.raises(ValueError, match=r"\(N, T, 16\)"):
        layer(randn(2, 3), ps, st)
    assert "GroupedQueryAttention(\n    16, num_heads=4, num_kv_heads=2," in repr(layer)


def test_gqa_uses_sdpa_groups_like_repeat_interleave() -> None:
    """Query head h reads key/value head h // groups (sdpa's enable_gqa convention)."""
    q, k, v = randn(1, 4, 3, 8), randn(1, 2, 3, 8, seed=2), randn(1, 2, 3, 8, seed=3)
    fused = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    repeated = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    )
    torch.testing.assert_close(fused, repeated)
