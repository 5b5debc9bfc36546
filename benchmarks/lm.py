"""TransformerLM: KV-cached generation and training steps, lux vs a torch.nn model of the
same architecture with identical weights.

Run:  python benchmarks/lm.py [--threads 2] [--rounds 5] [--compiled 0]

Model: vocabulary 256, dim 128, 4 blocks, 8 query heads sharing 2 key/value heads, SwiGLU
hidden 352, RoPE, RMSNorm, untied head (about 1.1 M parameters).

Rows (medians of interleaved rounds after a warm-up):

* greedy generation of 64 tokens after a 16-token prompt, batch 4: lux with the KV cache
  (``generate``), lux without it (every step recomputes the prefix), and the torch.nn model
  with its own preallocated KV cache (``torch.no_grad``); reported as tokens/s and ratios;
* a training step (forward, cross-entropy over 4 x 128 tokens, backward to every
  parameter) eager, lux vs torch.nn; with ``--compiled 1`` also both compiled
  (``torch.compile``, inductor; slow to compile on CPU).

Issue 21's targets: training eager <= 1.05, compiled <= torch.compile's time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _harness import interleaved, parse_args, print_table, ratio_row
from torch import nn

import lux_torch as lux
from lux_torch.models import TransformerLM, generate

V, E, DEPTH, H, KV, FF, MAXLEN = 256, 128, 4, 8, 2, 352, 256
BATCH, PROMPT, NEW = 4, 16, 64


def _rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    inv = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = positions.float()[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    pairs = x.unflatten(-1, (d // 2, 2))  # (strided x[..., 0::2] slices backward slower)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)


class TorchAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d = E // H
        self.q_proj = nn.Linear(E, H * self.d, bias=False)
        self.k_proj = nn.Linear(E, KV * self.d, bias=False)
        self.v_proj = nn.Linear(E, KV * self.d, bias=False)
        self.o_proj = nn.Linear(H * self.d, E, bias=False)
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pos = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        positions = torch.arange(self.pos, self.pos + t)
        q = _rope(self.q_proj(x).view(n, t, H, self.d).transpose(1, 2), positions)
        k = _rope(self.k_proj(x).view(n, t, KV, self.d).transpose(1, 2), positions)
        v = self.v_proj(x).view(n, t, KV, self.d).transpose(1, 2)
        if self.cache is not None:
            ck, cv = self.cache
            ck[:, :, self.pos : self.pos + t] = k
            cv[:, :, self.pos : self.pos + t] = v
            k, v = ck[:, :, : self.pos + t], cv[:, :, : self.pos + t]
            self.pos += t
        keep = torch.arange(k.shape[2])[None, :] <= positions[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(n, t, E))  # type: ignore[no-any-return]


class TorchBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(E, eps=1e-6)
        self.attn = TorchAttention()
        self.norm2 = nn.RMSNorm(E, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.w1 = nn.Linear(E, FF, bias=False)
        self.mlp.w2 = nn.Linear(FF, E, bias=False)
        self.mlp.w3 = nn.Linear(E, FF, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        h, m = self.norm2(x), self.mlp
        return x + m.w2(F.silu(m.w1(h)) * m.w3(h))  # type: ignore[no-any-return,operator]


class TorchLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, E)
        for i in range(1, DEPTH + 1):
            self.add_module(f"blocks_{i}", TorchBlock())
        self.norm = nn.RMSNorm(E, eps=1e-6)
        self.lm_head = nn.Linear(E, V, bias=False)

    def attentions(self) -> list[TorchAttention]:
        return [m for m in self.modules() if isinstance(m, TorchAttention)]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for i in range(1, DEPTH + 1):
            h = getattr(self, f"blocks_{i}")(h)
        return self.lm_head(self.norm(h))  # type: ignore[no-any-return]

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, new: int) -> torch.Tensor:
        for a in self.attentions():
            shape = (prompt.shape[0], KV, MAXLEN, E // H)
            a.cache, a.pos = (torch.zeros(shape), torch.zeros(shape)), 0
        tokens, feed = prompt, prompt
        for _ in range(new):
            nxt = self(feed)[:, -1].argmax(-1, keepdim=True)
            tokens, feed = torch.cat([tokens, nxt], 1), nxt
        for a in self.attentions():
            a.cache, a.pos = None, 0
        return tokens


def setup_models() -> tuple[TransformerLM, Any, Any, TorchLM]:
    torch.manual_seed(0)
    module = TorchLM()
    model = TransformerLM(V, E, DEPTH, H, KV, FF, max_len=MAXLEN)
    ps, st = lux.load_state_dict(model, module.state_dict())
    return model, ps, st, module


def _generation_cases(
    model: TransformerLM, ps: Any, st: Any, module: TorchLM
) -> dict[str, Callable[[], Any]]:
    prompt = lux.random.randint(lux.random.key(1), (BATCH, PROMPT), 0, V)
    lux_tokens = generate(model, ps, st, prompt, NEW).tokens
    assert torch.equal(lux_tokens, module.generate(prompt, NEW)), "different greedy tokens"
    assert torch.equal(lux_tokens, generate(model, ps, st, prompt, NEW, cache=False).tokens)

    def lux_cached() -> None:
        with torch.no_grad():
            generate(model, ps, st, prompt, NEW)

    def lux_uncached() -> None:
        with torch.no_grad():
            generate(model, ps, st, prompt, NEW, cache=False)

    return {
        "torch cached": lambda: module.generate(prompt, NEW),
        "lux cached": lux_cached,
        "lux uncached": lux_uncached,
    }


def training_cases(
    model: TransformerLM, ps: Any, st: Any, module: TorchLM, compiled: bool
) -> dict[str, Callable[[], Any]]:
    tokens = lux.random.randint(lux.random.key(2), (BATCH, 129), 0, V)
    x, y = tokens[:, :-1], tokens[:, 1:].reshape(-1)
    leaves = [p.requires_grad_(True) for p in lux.tree.leaves(ps)]
    params = list(module.parameters())

    def lux_loss(ps: Any) -> torch.Tensor:
        logits, _ = model(x, ps, st)
        return F.cross_entropy(logits.reshape(-1, V), y)

    def torch_loss() -> torch.Tensor:
        return F.cross_entropy(module(x).reshape(-1, V), y)

    cases: dict[str, Callable[[], Any]] = {
        "torch": lambda: torch.autograd.grad(torch_loss(), params),
        "lux": lambda: torch.autograd.grad(lux_loss(ps), leaves),
    }
    if compiled:
        lux_c = torch.compile(lux_loss, fullgraph=True)
        torch_c = torch.compile(torch_loss)
        cases["torch compiled"] = lambda: torch.autograd.grad(torch_c(), params)
        cases["lux compiled"] = lambda: torch.autograd.grad(lux_c(ps), leaves)
    return cases


def main() -> None:
    args = parse_args(__doc__, rounds=5, compiled=0)
    model, ps, st, module = setup_models()
    gen = interleaved(
        _generation_cases(model, ps, st, module), rounds=args.rounds, number=1, warmup=1
    )
    tokens = BATCH * NEW
    rows = [(name, f"{t * 1e3:.1f}", f"{tokens / t:,.0f}") for name, t in gen.items()]
    print_table(
        f"Greedy generation, {NEW} tokens after a {PROMPT}-token prompt, batch {BATCH}",
        rows,
        ["case", "ms per call", "tokens/s"],
    )
    print(
        f"lux cached / torch.nn cached time: {gen['lux cached'] / gen['torch cached']:.3f}; "
        f"lux uncached / lux cached: {gen['lux uncached'] / gen['lux cached']:.2f}\n"
    )
    train = interleaved(
        training_cases(model, ps, st, module, bool(args.compiled)),
        rounds=args.rounds,
        number=3,
        warmup=3,
    )
    trows = [ratio_row("training step, eager", train, "torch", "lux")]
    if args.compiled:
        trows.append(ratio_row("training step, compiled", train, "torch compiled", "lux compiled"))
    print_table(
        f"Training step (forward + backward), batch {BATCH} x 128 tokens, ratio lux / torch.nn "
        "(targets: eager <= 1.05, compiled <= 1.0)",
        trows,
        ["case", "torch.nn (µs)", "lux (µs)", "ratio lux/torch"],
    )


if __name__ == "__main__":
    main()
