"""LoRA: the wrapper against ``x W^T + b + (alpha/r) x A^T B^T`` written here, the zero
initial update, merge/unmerge exactness, gradients for A/B only, and apply_lora/merge_lora
on a TransformerLM (outputs, cached generation, a training step that changes only A/B)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import DTYPES, randn

import lux_torch as lux
from lux_torch.experimental.frozen import Frozen
from lux_torch.layers.lora import LoRA, apply_lora, merge, merge_lora, unmerge
from lux_torch.models import TransformerLM, generate
from lux_torch.testing import check_layer


def _with_b(layer: LoRA, dtype: torch.dtype, seed: int = 0) -> tuple[Any, Any]:
    """ps/st with a non-zero B (B = 0 would make A's gradient zero)."""
    ps, st = lux.setup(seed, layer, dtype=dtype)
    ps = {**ps, "lora_B": randn(*ps["lora_B"].shape, dtype=dtype, seed=seed + 11)}
    return ps, st


def _reference(scale: float) -> Any:
    def reference(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        w = t["base.frozen_params.weight"]
        base = x @ w.T + t.get("base.frozen_params.bias", 0.0)
        return base + scale * (x @ t["lora_A"].T @ t["lora_B"].T)

    return reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_lora_conforms(bias: bool, dtype: torch.dtype) -> None:
    layer = LoRA(lux.Linear(5, 4, bias=bias), rank=2, alpha=6.0)
    ps, st = _with_b(layer, dtype)
    report = check_layer(
        layer, randn(3, 5, dtype=dtype), ps=ps, st=st, reference=_reference(3.0), compile=False
    )
    for name in ("parity", "gradcheck", "jvp", "vmap", "purity", "counts"):
        assert report[name] == "passed", (name, report)
    assert lux.param_count(layer) == 2 * 5 + 4 * 2


@pytest.mark.slow
def test_lora_compiles() -> None:
    layer = LoRA(lux.Linear(5, 4), rank=2, dropout=0.25)
    report = check_layer(layer, randn(3, 5), compile=True)
    assert report["compile[train]"] == "passed"


def test_lora_starts_as_the_base_and_keeps_its_weights_frozen() -> None:
    base = lux.Linear(6, 3)
    layer = LoRA(base, rank=4)
    ps, st = lux.setup(1, layer)
    assert set(ps) == {"base", "lora_A", "lora_B"} and ps["base"] == {}
    assert torch.equal(ps["lora_B"], torch.zeros(3, 4))
    x = randn(2, 6)
    frozen = st["base"]["frozen_params"]
    assert torch.equal(layer(x, ps, st)[0], base(x, frozen, {})[0])
    grads = torch.func.grad(lambda p: layer(x, p, st)[0].square().sum())(ps)
    assert set(lux.tree.paths(grads)) == {"lora_A", "lora_B"}
    assert torch.equal(grads["lora_A"], torch.zeros(4, 6))  # B = 0: no signal for A yet
    assert grads["lora_B"].abs().sum() > 0


def test_merge_and_unmerge_are_exact_in_float64() -> None:
    layer = LoRA(lux.Linear(7, 5), rank=3, alpha=12.0)
    ps, st = _with_b(layer, torch.float64)
    x = randn(4, 7, dtype=torch.float64)
    y, _ = layer(x, ps, st)
    merged, m_ps, m_st = merge(layer, ps, st)
    assert isinstance(merged, lux.Linear)
    y_merged, _ = merged(x, m_ps, m_st)
    torch.testing.assert_close(y_merged, y, rtol=1e-12, atol=1e-12)
    back, b_ps, b_st = unmerge(layer, ps, m_ps, m_st)
    w0 = st["base"]["frozen_params"]["weight"]
    torch.testing.assert_close(b_st["base"]["frozen_params"]["weight"], w0, rtol=0, atol=1e-14)
    torch.testing.assert_close(back(x, b_ps, b_st)[0], y, rtol=1e-12, atol=1e-12)


def test_lora_rejects_layers_without_a_matrix_weight() -> None:
    with pytest.raises(TypeError, match="2-d parameter 'weight'"):
        LoRA(lux.RMSNorm(4), rank=2)


def _lm() -> TransformerLM:
    return TransformerLM(11, 16, 2, 4, 2, hidden_dim=24, max_len=16)


def test_apply_lora_to_a_language_model() -> None:
    lm = _lm()
    ps, st = lux.setup(0, lm, dtype=torch.float64)
    tokens = lux.random.randint(lux.random.key(1), (2, 6), 0, 11)
    logits, _ = lm(tokens, ps, st)
    model, l_ps, l_st = apply_lora(lm, ps, st, lux.random.key(2), rank=2, alpha=4.0)
    assert isinstance(model, Frozen)
    wrapped = sorted(p for p in lux.tree.paths(l_ps))
    assert wrapped == sorted(
        f"blocks_{i}.attn.{n}_proj.lora_{ab}" for i in (1, 2) for n in "qv" for ab in "AB"
    )
    assert torch.equal(model(tokens, l_ps, l_st)[0], logits)  # B = 0

    # one gradient step on A/B only changes the outputs; the frozen tensors are untouched
    def loss(p: Any) -> torch.Tensor:
        out, _ = model(tokens, p, l_st)
        return torch.nn.functional.cross_entropy(out.reshape(-1, 11), tokens.reshape(-1))

    grads = torch.func.grad(loss)(l_ps)
    new_ps = lux.tree.map(lambda p, g: p - 0.5 * g, l_ps, grads)
    assert loss(new_ps) < loss(l_ps)

    merged, m_ps, m_st = merge_lora(model, new_ps, l_st)
    assert merged == lm and lux.tree.paths(m_ps) == lux.tree.paths(ps)
    tuned, _ = model(tokens, new_ps, l_st)
    torch.testing.assert_close(merged(tokens, m_ps, m_st)[0], tuned, rtol=1e-12, atol=1e-12)
    # untouched weights are the same tensors; the adapted ones differ
    assert m_ps["blocks_1"]["mlp"]["w1"]["weight"] is ps["blocks_1"]["mlp"]["w1"]["weight"]
    q = "blocks_1", "attn", "q_proj"
    assert not torch.equal(m_ps[q[0]][q[1]][q[2]]["weight"], ps[q[0]][q[1]][q[2]]["weight"])

    # cached generation through the frozen LoRA model equals the merged model's
    prompt = tokens[:, :3]
    a = generate(model, new_ps, l_st, prompt, 8)
    b = generate(merged, m_ps, m_st, prompt, 8)  # type: ignore[arg-type]
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-10, atol=1e-12)


def test_apply_lora_needs_a_match() -> None:
    lm = _lm()
    ps, st = lux.setup(0, lm)
    with pytest.raises(ValueError, match="no Linear layer named"):
        apply_lora(lm, ps, st, lux.random.key(0), targets=("nope",))


@pytest.mark.parametrize("targets", [("k_proj",), ("q_proj", "k_proj", "v_proj", "o_proj")])
def test_generate_through_lora_on_the_key_projection(targets: tuple[str, ...]) -> None:
    """The KV cache takes its dtype from the key projection, whose weight a LoRA on
    ``k_proj`` keeps frozen in ``st`` (the frozen model's ``ps`` then has no ``attn``)."""
    lm = _lm()
    ps, st = lux.setup(0, lm, dtype=torch.float64)
    model, l_ps, l_st = apply_lora(lm, ps, st, lux.random.key(2), targets, rank=2)
    assert isinstance(model, Frozen)
    l_ps = lux.tree.map(lambda p: p + 0.1, l_ps)  # B != 0: the adapters change the outputs
    merged, m_ps, m_st = merge_lora(model, l_ps, l_st)
    prompt = lux.random.randint(lux.random.key(1), (2, 3), 0, 11)
    a = generate(model, l_ps, l_st, prompt, 5)
    b = generate(merged, m_ps, m_st, prompt, 5)  # type: ignore[arg-type]
    assert a.logits.dtype == torch.float64
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-10, atol=1e-12)
