"""A small decoder-only transformer language model (Llama-style) and :func:`generate`.

``TransformerLM``: token embedding, ``depth`` pre-norm :class:`DecoderBlock` s (RMSNorm,
grouped-query attention with RoPE, SwiGLU), a final RMSNorm and a linear head (tied to the
embedding or not). :func:`generate` decodes greedily or by sampling from a
:mod:`lux_torch.random` key, with the KV cache (:func:`~lux_torch.layers.lm.init_cache`) or
by recomputing the whole prefix at every step.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .. import init
from .. import random as lrandom
from ..core import Layer, Params, State
from ..experimental.frozen import Frozen
from ..layers._common import check_bool, check_int, describe_value
from ..layers.basic import Embedding, Linear
from ..layers.lm import DecoderBlock, init_cache
from ..layers.normalization import RMSNorm
from ..layers.stacked import StackedChain

__all__ = ["Generation", "TransformerLM", "generate"]


class TransformerLM(Layer):
    """A decoder-only transformer LM: ``logits = head(norm(blocks(embed(tokens))))``.

    Arguments:
        vocab_size: number of tokens ``V``.
        dim: model dimension ``E``.
        depth: number of decoder blocks.
        num_heads: query heads per block.
        num_kv_heads: key/value heads (default ``num_heads``; 1 is multi-query attention).
        hidden_dim: SwiGLU's hidden width (default as :class:`DecoderBlock`).
        max_len: the longest sequence, and the KV cache length.
        tie_embeddings: the head's weight is the embedding's (``logits = h @ embed.T``);
            no ``lm_head`` then.
        norm_eps: the RMSNorms' ``eps``.
        rope_base: RoPE's frequency base.
        init_std: standard deviation of the embedding's normal initialisation (0.02, as
            GPT-2/Llama; the projections keep ``torch.nn.Linear``'s initialisation).
        scan_layers: keep the blocks' parameters stacked in one
            :class:`~lux_torch.layers.stacked.StackedChain` (``blocks``): ``torch.compile``
            then traces and compiles one block, not ``depth`` (compile time nearly
            independent of depth); eager results are bitwise those of the unrolled model with
            the same per-block parameters.

    Input:
        Token ids ``(N, T)`` (int64), ``T <= max_len``; with KV caches in ``st``
        (:func:`~lux_torch.layers.lm.init_cache`) the ``T`` tokens continue the cached ones.

    Returns:
        Logits ``(N, T, V)`` and the new state.

    **Parameters**
        - ``embed``: ``{"weight": (V, E)}``
        - ``blocks_1`` ... ``blocks_{depth}``: :class:`DecoderBlock` parameters
          (``norm1.weight (E,)``, ``attn.{q,k,v,o}_proj.weight``, ``norm2.weight (E,)``,
          ``mlp.{w1,w2,w3}.weight``)
        - with ``scan_layers=True`` instead ``blocks``: ``{"layer": ...}``, the same entries
          with a leading ``depth`` dimension (``blocks.layer.norm1.weight (depth, E)``,
          ``blocks.layer.attn.q_proj.weight (depth, H*D, E)``, ...: the ``state_dict`` names);
          block ``i`` is ``ps["blocks"]["layer"][...][i - 1]``
        - ``norm``: ``{"weight": (E,)}``
        - ``lm_head``: ``{"weight": (V, E)}`` (untied only)

    **States**
        The children's states (``{}`` leaves), plus ``blocks_i.attn.cache`` after
        :func:`~lux_torch.layers.lm.init_cache` (see
        :class:`~lux_torch.layers.lm.GroupedQueryAttention`); with ``scan_layers=True``
        ``blocks.layer.attn.cache`` holds every block's cache stacked
        (``k``/``v`` ``(depth, N, H_kv, max_len, D)``, ``pos`` ``(depth,)``).

    Example:
        >>> lm = TransformerLM(32, 64, 2, 4, num_kv_heads=2, max_len=128)
        >>> ps, st = lux_torch.setup(0, lm)  # doctest: +SKIP
        >>> logits, st = lm(torch.zeros(1, 5, dtype=torch.long), ps, st)  # doctest: +SKIP
    """

    vocab_size: int
    dim: int
    depth: int
    max_len: int
    tie_embeddings: bool
    embed: Embedding
    blocks: tuple[DecoderBlock, ...] | StackedChain
    norm: RMSNorm
    lm_head: Linear | None

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        hidden_dim: int | None = None,
        max_len: int = 2048,
        tie_embeddings: bool = False,
        norm_eps: float | None = 1e-6,
        rope_base: float = 10000.0,
        init_std: float = 0.02,
        scan_layers: bool = False,
    ) -> None:
        owner = "TransformerLM"
        check_int(owner, "vocab_size", vocab_size, 1)
        check_int(owner, "dim", dim, 1)
        check_int(owner, "depth", depth, 1)
        check_int(owner, "max_len", max_len, 1)
        check_bool(owner, "tie_embeddings", tie_embeddings)
        check_bool(owner, "scan_layers", scan_layers)
        block = DecoderBlock(dim, num_heads, num_kv_heads, hidden_dim, max_len, rope_base, norm_eps)
        self._set_fields(
            vocab_size=vocab_size,
            dim=dim,
            depth=depth,
            max_len=max_len,
            tie_embeddings=tie_embeddings,
            embed=Embedding(
                vocab_size, dim, weight_init=functools.partial(init.normal, std=init_std)
            ),
            blocks=StackedChain(block, depth) if scan_layers else (block,) * depth,
            norm=RMSNorm(dim, eps=norm_eps),
            lm_head=None if tie_embeddings else Linear(dim, vocab_size, bias=False),
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem is not None:
            raise ValueError(f"TransformerLM: {problem}")
        new_st = dict(st)
        h, new_st["embed"] = self.embed(x, ps["embed"], st["embed"])
        if isinstance(self.blocks, StackedChain):
            h, new_st["blocks"] = self.blocks(h, ps["blocks"], st["blocks"])
        else:
            for i, block in enumerate(self.blocks, 1):
                name = f"blocks_{i}"
                h, new_st[name] = block(h, ps[name], st[name])
        h, new_st["norm"] = self.norm(h, ps["norm"], st["norm"])
        if self.lm_head is None:
            return F.linear(h, ps["embed"]["weight"]), new_st
        logits, new_st["lm_head"] = self.lm_head(h, ps["lm_head"], st["lm_head"])
        return logits, new_st

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point():
            return f"expected integer token ids of shape (N, T), got {describe_value(x)}"
        if x.shape[1] > self.max_len:
            return f"sequence length {x.shape[1]} exceeds max_len={self.max_len}"
        return None

    def extra_repr(self) -> str:
        parts = [f"vocab_size={self.vocab_size}", f"dim={self.dim}", f"depth={self.depth}"]
        parts.append(f"max_len={self.max_len}")
        if self.tie_embeddings:
            parts.append("tie_embeddings=True")
        if isinstance(self.blocks, StackedChain):
            parts.append("scan_layers=True")
        return ", ".join(parts)


class Generation(NamedTuple):
    """What :func:`generate` returns."""

    tokens: torch.Tensor
    """``(N, P + max_new_tokens)``: the prompt followed by the generated tokens."""
    logits: torch.Tensor
    """``(N, max_new_tokens, V)``: the logits each new token was chosen from (before
    temperature and top-k)."""


def _choose(
    logits: torch.Tensor, key: torch.Tensor | None, step: int, temperature: float, top_k: int | None
) -> torch.Tensor:
    """The next token ``(N,)``: argmax, or a Gumbel-max sample with key ``fold_in(key, step)``."""
    if key is None:
        return logits.argmax(-1)
    scaled = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    u = lrandom.uniform(lrandom.fold_in(key, step), scaled.shape, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u))
    return (scaled.to(torch.float64) + gumbel.to(scaled.device)).argmax(-1)


def generate(
    model: TransformerLM | Frozen,
    ps: Params,
    st: State,
    prompt: torch.Tensor,
    max_new_tokens: int,
    key: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    cache: bool = True,
) -> Generation:
    """Continue ``prompt`` by ``max_new_tokens`` tokens.

    Greedy (argmax) when ``key`` is ``None``; otherwise token ``i`` is sampled from
    ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens, by
    the Gumbel-max trick with the key ``lux.random.fold_in(key, i)`` (the same key gives the
    same tokens, eager or compiled, on any device). With ``cache=True`` the prompt fills the
    KV caches once and every step feeds one token; with ``cache=False`` every step runs the
    whole sequence so far. Both give the same tokens; their logits agree to rounding (the
    projections of one token are matrix-vector products, BLAS sums them in another order
    than the matrix-matrix products of a full forward: measured <= 1e-15 relative in
    float64).

    Arguments:
        model: the language model, or one frozen by :func:`lux_torch.freeze` /
            :func:`~lux_torch.layers.lora.apply_lora`.
        ps, st: its parameters and state (``st`` without caches; it is not changed).
        prompt: ``(N, P)`` token ids, ``P >= 1``.
        max_new_tokens: how many tokens to add (``P + max_new_tokens <= model.max_len``).
        key: a :mod:`lux_torch.random` key for sampling; ``None``: greedy.
        temperature: divides the logits before sampling (> 0).
        top_k: sample among the ``top_k`` most likely tokens only.
        cache: decode with the KV cache.

    Returns:
        :class:`Generation` ``(tokens, logits)``.

    Example:
        >>> out = generate(lm, ps, st, torch.tensor([[1, 2, 3]]), 10)  # doctest: +SKIP
        >>> out.tokens.shape  # doctest: +SKIP
        torch.Size([1, 13])
    """
    check_int("generate", "max_new_tokens", max_new_tokens, 0)
    if prompt.dim() != 2 or prompt.shape[1] < 1 or prompt.is_floating_point():
        raise ValueError(f"generate: expected a prompt of token ids (N, P), got {prompt.shape}")
    lm = model.layer if isinstance(model, Frozen) else model
    if not isinstance(lm, TransformerLM):
        raise TypeError(f"generate: expected a TransformerLM, got {type(lm).__name__}")
    if prompt.shape[1] + max_new_tokens > lm.max_len:
        raise ValueError(
            f"generate: prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} "
            f"exceeds max_len={lm.max_len}"
        )
    if not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    if top_k is not None:
        check_int("generate", "top_k", top_k, 1)
    tokens = prompt
    chosen: list[torch.Tensor] = []
    state = init_cache(model, ps, st, prompt.shape[0]) if cache else st
    feed = prompt
    for i in range(max_new_tokens):
        if cache:
            logits, state = model(feed, ps, state)
        else:
            logits, _ = model(tokens, ps, st)
        last = logits[:, -1]
        chosen.append(last)
        nxt = _choose(last, key, i, temperature, top_k)[:, None].to(prompt.dtype)
        tokens = torch.cat([tokens, nxt], dim=1)
        feed = nxt
    vocab = lm.vocab_size
    stacked = (
        torch.stack(chosen, 1)
        if chosen
        else torch.zeros(prompt.shape[0], 0, vocab, device=prompt.device)
    )
    return Generation(tokens, stacked)
