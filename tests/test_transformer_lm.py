"""models.TransformerLM against a torch.nn module of the same architecture written here
(nn.Embedding, nn.RMSNorm, nn.Linear, sdpa with repeated heads, RoPE by complex
multiplication), and generate: greedy and sampled, cached against uncached.

Cached and uncached decoding give the same tokens; their logits agree to 1e-12 relative in
float64, not bitwise: one-token projections are matrix-vector products that BLAS sums in
another order than the full forward's matrix-matrix products (see test_lm_layers).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lux_torch as lux
from lux_torch.models import TransformerLM, generate
from lux_torch.testing import check_layer

V, E, DEPTH, H, KV, FF, MAXLEN = 13, 16, 2, 4, 2, 24, 24


def _rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    d, length = x.shape[-1], x.shape[-2]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(length, dtype=torch.float64)[:, None] * theta[None, :]
    rot = torch.polar(torch.ones_like(ang), ang).to(x.device)
    z = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * rot).reshape(x.shape).to(x.dtype)


class TorchAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv: int, device: str | None = None) -> None:
        super().__init__()
        self.h, self.kv, self.d = heads, kv, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.d, bias=False, device=device)
        self.k_proj = nn.Linear(dim, kv * self.d, bias=False, device=device)
        self.v_proj = nn.Linear(dim, kv * self.d, bias=False, device=device)
        self.o_proj = nn.Linear(heads * self.d, dim, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q = self.q_proj(x).view(n, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(n, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(n, t, self.kv, self.d).transpose(1, 2)
        q, k = _rope(q), _rope(k)
        g = self.h // self.kv
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(n, t, self.h * self.d))  # type: ignore[no-any-return]


class TorchBlock(nn.Module):
    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(E, eps=1e-6, device=device)
        self.attn = TorchAttention(E, H, KV, device)
        self.norm2 = nn.RMSNorm(E, eps=1e-6, device=device)
        self.mlp = nn.Module()
        self.mlp.w1 = nn.Linear(E, FF, bias=False, device=device)
        self.mlp.w2 = nn.Linear(FF, E, bias=False, device=device)
        self.mlp.w3 = nn.Linear(E, FF, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        h = self.norm2(x)
        m = self.mlp
        return x + m.w2(F.silu(m.w1(h)) * m.w3(h))  # type: ignore[no-any-return,operator]


class TorchLM(nn.Module):
    def __init__(self, tie: bool, device: str | None = None) -> None:
        super().__init__()
        self.tie = tie
        self.embed = nn.Embedding(V, E, device=device)
        for i in range(1, DEPTH + 1):
            self.add_module(f"blocks_{i}", TorchBlock(device))
        self.norm = nn.RMSNorm(E, eps=1e-6, device=device)
        if not tie:
            self.lm_head = nn.Linear(E, V, bias=False, device=device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for i in range(1, DEPTH + 1):
            h = getattr(self, f"blocks_{i}")(h)
        h = self.norm(h)
        return F.linear(h, self.embed.weight) if self.tie else self.lm_head(h)


def _lm(tie: bool = False) -> TransformerLM:
    return TransformerLM(V, E, DEPTH, H, KV, FF, max_len=MAXLEN, tie_embeddings=tie)


def _tokens(n: int, t: int, seed: int = 1) -> torch.Tensor:
    return lux.random.randint(lux.random.key(seed), (n, t), 0, V)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tie", [False, True])
def test_transformer_lm_conforms(tie: bool, dtype: torch.dtype) -> None:
    lm = _lm(tie)
    ps, st = lux.setup(0, lm, dtype=dtype)
    report = check_layer(
        lm, _tokens(2, 6), ps=ps, st=st, reference=TorchLM(tie, device="meta"), compile=False
    )
    for name in ("parity", "gradcheck", "jvp", "vmap", "counts", "purity"):
        assert report[name] == "passed", (name, report)
    assert lux.param_count(lm) == sum(p.numel() for p in TorchLM(tie, "meta").parameters())


@pytest.mark.slow
def test_transformer_lm_compiles() -> None:
    report = check_layer(_lm(), _tokens(2, 6), reference=TorchLM(False, "meta"))
    assert report["compile"] == "passed"


@pytest.mark.parametrize("key", [None, 5], ids=["greedy", "sampled"])
@pytest.mark.parametrize("top_k", [None, 3])
def test_cached_generation_equals_uncached(key: int | None, top_k: int | None) -> None:
    lm = _lm()
    ps, st = lux.setup(2, lm, dtype=torch.float64)
    # larger weights: confident, varied predictions instead of a near-uniform distribution
    ps = lux.tree.map(lambda p: p * 3.0, ps)
    prompt = _tokens(3, 4, seed=7)
    k = None if key is None else lux.random.key(key)
    a = generate(lm, ps, st, prompt, 12, k, top_k=top_k, temperature=0.8)
    b = generate(lm, ps, st, prompt, 12, k, top_k=top_k, temperature=0.8, cache=False)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-12, atol=1e-12)
    assert torch.equal(a.tokens[:, :4], prompt) and a.tokens.shape == (3, 16)
    # independent check of the uncached logits: the full forward of the final sequence
    full, _ = lm(a.tokens[:, :-1], ps, st)
    torch.testing.assert_close(b.logits, full[:, 3:], rtol=1e-12, atol=1e-12)
    if key is None:
        assert torch.equal(a.tokens[:, 4:], full[:, 3:].argmax(-1))


def test_sampling_is_reproducible_and_respects_top_k() -> None:
    lm = _lm()
    ps, st = lux.setup(1, lm)
    prompt = _tokens(4, 2)
    k = lux.random.key(9)
    a = generate(lm, ps, st, prompt, 10, k, top_k=2)
    assert torch.equal(a.tokens, generate(lm, ps, st, prompt, 10, k, top_k=2).tokens)
    assert not torch.equal(a.tokens, generate(lm, ps, st, prompt, 10, lux.random.key(10)).tokens)
    top2 = a.logits.topk(2, dim=-1).indices
    assert (top2 == a.tokens[:, 2:, None]).any(-1).all()
    # a tiny temperature is greedy
    greedy = generate(lm, ps, st, prompt, 10)
    assert torch.equal(generate(lm, ps, st, prompt, 10, k, temperature=1e-6).tokens, greedy.tokens)


def test_generate_errors() -> None:
    lm = _lm()
    ps, st = lux.setup(0, lm)
    with pytest.raises(ValueError, match="exceeds max_len"):
        generate(lm, ps, st, _tokens(1, 20), 5)
    with pytest.raises(ValueError, match="temperature"):
        generate(lm, ps, st, _tokens(1, 2), 1, lux.random.key(0), temperature=0.0)
    with pytest.raises(ValueError, match="token ids"):
        lm(torch.zeros(1, 3), ps, st)
