"""Attention: MultiheadAttention against torch.nn.MultiheadAttention, and the positional
embeddings against their formulas.

The reference is a callable that runs ``torch.nn.MultiheadAttention`` (built on the meta
device: no global RNG is drawn) on our tensors through ``torch.func.functional_call``,
forwarding the masks and call options of our input as its keyword arguments (a causal
call gives torch the causal ``attn_mask`` that its ``is_causal`` hint requires). One
configuration is compiled with inductor, the others with ``aot_eager`` (see ``test_conv.py``).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn

from lux_torch import random as lrandom
from lux_torch import tree as ltree
from lux_torch.core import setup, test_mode, train_mode
from lux_torch.layers.attention import (
    MultiheadAttention,
    RotaryPositionalEmbedding,
    SinusoidalPositionalEmbedding,
)

E, H = 8, 2


def _torch_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    names = ("dropout", "bias", "add_bias_kv", "add_zero_attn", "kdim", "vdim", "batch_first")
    return {k: v for k, v in kw.items() if k in names}


def _reference(kw: dict[str, Any]) -> Any:
    """``reference(tensors, *inputs)`` running torch.nn.MultiheadAttention like our layer."""
    module = nn.MultiheadAttention(E, H, **_torch_kwargs(kw), device="meta").eval()
    known = {n for n, _ in module.named_parameters()}
    need_weights = kw.get("need_weights", False)

    def reference(tensors: dict[str, torch.Tensor], *inputs: Any) -> Any:
        is_causal, hint = False, False
        if len(inputs) == 1 or (len(inputs) == 2 and isinstance(inputs[-1], dict)):
            inputs = (inputs[0],) * 3 + inputs[1:]  # self-attention
        if isinstance(inputs[-1], dict):
            opts, inputs = inputs[-1], inputs[:-1]
            inputs = (*inputs, opts.get("key_padding_mask"), opts.get("attn_mask"))
            is_causal = opts.get("is_causal", False)
            # torch's is_causal is a hint that attn_mask *is* the causal mask: give it only
            # then; with bias_k or a zero key its SDPA path would also mask those columns
            extra_keys = kw.get("add_bias_kv") or kw.get("add_zero_attn")
            hint = is_causal and opts.get("attn_mask") is None and not extra_keys
        q, k, v, kpm, mask = (*inputs, None, None)[:5]
        if kw.get("causal") or is_causal:
            seq = 1 if q.dim() == 3 and kw.get("batch_first") else 0
            causal = torch.ones(q.shape[seq], k.shape[seq], dtype=torch.bool).triu(1)
            mask = causal if mask is None else mask.masked_fill(causal, float("-inf"))
        options = {
            "key_padding_mask": kpm,
            "attn_mask": mask,
            "need_weights": need_weights,
            "average_attn_weights": kw.get("average_attn_weights", True),
            "is_causal": hint,
        }
        params = {n: t for n, t in tensors.items() if n in known}
        out = torch.func.functional_call(module, params, (q, k, v), options)
        return out if need_weights else out[0]

    return reference


def _padding(n: int, s: int) -> torch.Tensor:
    kpm = torch.zeros(n, s, dtype=torch.bool)
    kpm[0, -2:] = True  # never a whole row: that gives NaN (as torch)
    return kpm


def _inputs(kw: dict[str, Any], dtype: torch.dtype, masks: str = "") -> Any:
    """(query, key, value[, key_padding_mask, attn_mask]) with L=3, S=4, N=2."""
    n, length, s = 2, 3, 4
    bf = kw.get("batch_first", False)

    def seq(t: int, features: int, seed: int) -> torch.Tensor:
        return randn(*((n, t, features) if bf else (t, n, features)), dtype=dtype, seed=seed)

    q = seq(length, E, 1)
    k, v = seq(s, kw.get("kdim") or E, 2), seq(s, kw.get("vdim") or E, 3)
    if not masks:
        return (q, k, v)
    if masks.startswith("options"):  # call options: "options:causal,padding,bool"
        given = masks.split(":")[1].split(",")
        opts: dict[str, Any] = {"is_causal": "causal" in given}
        if "padding" in given:
            opts["key_padding_mask"] = _padding(n, s)
        if "bool" in given:
            opts["attn_mask"] = torch.zeros(length, s, dtype=torch.bool)
            opts["attn_mask"][2, 0] = True
        if "float" in given:
            opts["attn_mask"] = randn(n * H, length, s, dtype=dtype, seed=5)
        return (q, k, v, opts)
    if masks == "bool":
        mask = torch.zeros(length, s, dtype=torch.bool)
        mask[0, 1] = mask[2, 0] = True
        return (q, k, v, _padding(n, s), mask)
    if masks == "float":
        kpm = randn(n, s, dtype=dtype, seed=4)
        return (q, k, v, kpm, randn(n * H, length, s, dtype=dtype, seed=5))
    assert masks == "padding"
    return (q, k, v, _padding(n, s), None)


# (layer keyword arguments, masks, compile backend)
CASES = [
    ({"batch_first": True}, "", "inductor"),
    ({}, "", None),
    ({"kdim": 3, "vdim": 5, "batch_first": True}, "", None),
    ({"kdim": 3, "vdim": 5, "bias": False}, "padding", None),
    ({"batch_first": True}, "bool", None),
    ({}, "float", None),
    ({"causal": True}, "", None),
    ({"causal": True, "batch_first": True}, "float", None),
    ({"add_bias_kv": True}, "bool", None),
    ({"need_weights": True}, "bool", None),
    ({"need_weights": True, "average_attn_weights": False, "batch_first": True}, "", None),
    ({"add_zero_attn": True}, "", None),
    ({"add_zero_attn": True, "batch_first": True}, "padding", None),
    ({"add_zero_attn": True, "add_bias_kv": True}, "bool", None),
    ({"add_zero_attn": True, "add_bias_kv": True, "batch_first": True}, "float", None),
    ({"add_zero_attn": True, "need_weights": True, "kdim": 3, "vdim": 5}, "bool", None),
    ({}, "options:causal", None),
    ({"batch_first": True}, "options:causal,padding", None),
    ({"need_weights": True}, "options:causal,float", None),
    ({"add_zero_attn": True, "add_bias_kv": True}, "options:causal,padding", None),
    ({"add_zero_attn": True, "batch_first": True}, "options:causal", None),
    ({}, "options:padding,bool", None),
    ({"causal": True}, "options:bool", None),
]


def _case_id(case: Any) -> str:
    kw, masks, _ = case
    return ",".join([f"{k}={v}" for k, v in kw.items()] + ([masks] if masks else [])) or "default"


# --------------------------------------------------------------------------- conformance


def _assert_passed(report: dict[str, str], dtype: torch.dtype) -> None:
    for name, result in report.items():
        if name.startswith("compile"):
            expected = "passed" if dtype == torch.float32 else "skipped: disabled"
            assert result == expected, (name, result)
        elif not name.startswith("device"):
            assert result == "passed", (name, result)


def _assert_matches_torch(
    kw: dict[str, Any], x: Any, dtype: torch.dtype, backend: str = "aot_eager"
) -> None:
    """``MultiheadAttention(E, H, **kw)`` on ``x`` passes the harness against torch's."""
    report = check(
        MultiheadAttention(E, H, **kw), x, dtype, reference=_reference(kw), compile_backend=backend
    )
    _assert_passed(report, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_multihead_attention_matches_torch(case, dtype):
    kw, masks, backend = case
    _assert_matches_torch(kw, _inputs(kw, dtype, masks), dtype, backend or "aot_eager")


@pytest.mark.parametrize("dtype", DTYPES)
def test_self_attention_from_one_tensor(dtype):
    kw = {"batch_first": True}
    x = randn(2, 3, E, dtype=dtype)
    _assert_matches_torch(kw, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_self_attention_call_option(dtype):
    kw = {"batch_first": True, "need_weights": True}
    x = (randn(2, 3, E, dtype=dtype), {"is_causal": True, "key_padding_mask": _padding(2, 3)})
    _assert_matches_torch(kw, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_input_matches_torch(dtype):
    q, k, v = randn(3, E, dtype=dtype), randn(4, E, dtype=dtype, seed=2), randn(4, E, seed=3)
    x = (q, k, v.to(dtype), torch.tensor([False, False, True, False]), None)
    kw = {"need_weights": True}
    _assert_matches_torch(kw, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_parity_in_test_mode_and_fresh_masks_in_training(dtype):
    kw: dict[str, Any] = {"dropout": 0.25, "batch_first": True}
    layer = MultiheadAttention(E, H, **kw)
    report = check(
        layer,
        _inputs(kw, dtype, "padding"),
        dtype,
        reference=_reference(kw),
        compile_backend="aot_eager",
    )
    assert report["parity[test]"] == "passed"
    assert report["parity[train]"].startswith("skipped: stochastic")
    for name in ("determinism[train]", "vmap[train]", "gradcheck[train]", "purity[train]"):
        assert report[name] == "passed", name


def test_dropout_draws_from_the_state_key():
    kw: dict[str, Any] = {"dropout": 0.5, "batch_first": True, "need_weights": True}
    layer = MultiheadAttention(E, H, **kw)
    ps, st = setup(0, layer)
    x = _inputs(kw, torch.float32, "padding")
    (y1, w1), st1 = layer(x, ps, st)
    (y1b, _), st1b = layer(x, ps, st)
    assert torch.equal(y1, y1b) and torch.equal(st1["key"], st1b["key"])
    assert not torch.equal(st1["key"], st["key"])
    (y2, _), st2 = layer(x, ps, st1)
    assert not torch.equal(y1, y2) and not torch.equal(st2["key"], st1["key"])
    # the explicit computation: dropout of the softmax weights with the split key
    _, use_key = lrandom.split(st["key"])
    (_, w_test), st_test = layer(x, ps, test_mode(st))
    lux_weights = MultiheadAttention(
        E, H, batch_first=True, need_weights=True, average_attn_weights=False
    )
    (_, probs), _ = lux_weights(x, ps, {})
    dropped = lrandom.dropout(use_key, probs, 0.5)
    torch.testing.assert_close(w1, dropped.mean(dim=1))
    assert st_test == test_mode(st)  # test mode: no draw, state unchanged
    torch.testing.assert_close(w_test, probs.mean(dim=1))
    # back in training mode the same key gives the same mask
    (y3, _), _ = layer(x, ps, train_mode(test_mode(st)))
    assert torch.equal(y3, y1)


def test_dropout_one_keeps_only_the_output_bias():
    layer = MultiheadAttention(E, H, dropout=1.0)
    ps, st = setup(0, layer)
    ps["out_proj"]["bias"] = torch.arange(E, dtype=torch.float32)
    y, _ = layer(_inputs({}, torch.float32), ps, st)
    assert torch.equal(y, ps["out_proj"]["bias"].expand_as(y))


# --------------------------------------------------------------------------- semantics


def test_call_options_equal_the_positional_forms_and_the_causal_field():
    kw = {"batch_first": True}
    q, k, v, kpm, mask = _inputs(kw, torch.float64, "bool")
    layer = MultiheadAttention(E, H, **kw)
    ps, st = setup(0, layer, dtype=torch.float64)
    y_pos, _ = layer((q, k, v, kpm, mask), ps, st)
    y_opt, _ = layer((q, k, v, {"key_padding_mask": kpm, "attn_mask": mask}), ps, st)
    assert torch.equal(y_opt, y_pos)
    # is_causal=True is the causal mask, alone or combined with attn_mask
    causal = torch.ones(3, 4, dtype=torch.bool).triu(1)
    y_causal, _ = layer((q, k, v, {"attn_mask": mask, "is_causal": True}), ps, st)
    y_mask, _ = layer((q, k, v, None, mask | causal), ps, st)
    torch.testing.assert_close(y_causal, y_mask)
    y_field, _ = MultiheadAttention(E, H, causal=True, **kw)((q, k, v, None, mask), ps, st)
    torch.testing.assert_close(y_field, y_mask)
    # False and None are the default
    for flag in (False, None):
        y, _ = layer((q, k, v, {"is_causal": flag}), ps, st)
        assert torch.equal(y, layer((q, k, v), ps, st)[0])
    assert not torch.allclose(y_causal, y_pos)
    # self-attention with options
    y_self, _ = layer((q, {"is_causal": True}), ps, st)
    torch.testing.assert_close(y_self, layer((q, q, q, {"is_causal": True}), ps, st)[0])


def test_zero_attention_keeps_fully_masked_queries_finite():
    kw = {"add_zero_attn": True, "batch_first": True, "need_weights": True}
    q, k, v = _inputs(kw, torch.float64)
    kpm = torch.zeros(2, 4, dtype=torch.bool)
    kpm[0] = True  # every key of sample 0 is padding
    layer = MultiheadAttention(E, H, **kw)
    ps, st = setup(0, layer, dtype=torch.float64)
    ps["out_proj"]["bias"] = torch.arange(E, dtype=torch.float64)
    (y, w), _ = layer((q, k, v, kpm, None), ps, st)
    assert w.shape == (2, 3, 5)  # the zero key is the last column
    torch.testing.assert_close(w[0, :, -1], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(y[0], ps["out_proj"]["bias"].expand(3, E))  # zero values
    assert torch.isfinite(y).all()
    plain = MultiheadAttention(E, H, batch_first=True, need_weights=True)
    (y_nan, _), _ = plain((q, k, v, kpm, None), ps, st)
    assert torch.isnan(y_nan[0]).all()  # without it: NaN (with need_weights), as torch


def test_call_option_errors_name_the_layer():
    layer = MultiheadAttention(E, H)
    ps, st = setup(0, layer)
    q, k, v = _inputs({}, torch.float32)
    with pytest.raises(ValueError, match=r"MultiheadAttention: unknown call option 'mask'"):
        layer((q, k, v, {"mask": None}), ps, st)
    with pytest.raises(ValueError, match=r"'need_weights' is not a call option: it is a field"):
        layer((q, k, v, {"need_weights": True}), ps, st)
    with pytest.raises(ValueError, match=r"call option 'is_causal' must be a bool, got a"):
        layer((q, k, v, {"is_causal": torch.tensor(True)}), ps, st)
    with pytest.raises(ValueError, match=r"must follow x \(self-attention\) or \(query, key"):
        layer((q, k, {"is_causal": True}), ps, st)
    with pytest.raises(ValueError, match=r"expected key_padding_mask of shape \(2, 4\)"):
        layer((q, k, v, {"key_padding_mask": torch.zeros(4, 2, dtype=torch.bool)}), ps, st)
    assert layer.describe_input_error((q, {"is_causal": False})) is None


def test_parameters_follow_torch_init():
    layer = MultiheadAttention(64, 4, add_bias_kv=True)
    ps, st = setup(0, layer)
    assert st == {}
    assert ps["in_proj_weight"].shape == (192, 64) and ps["bias_k"].shape == (1, 1, 64)
    assert ps["in_proj_weight"].abs().max() <= math.sqrt(6 / (64 + 192))
    assert ps["in_proj_weight"].abs().max() > 0.9 * math.sqrt(6 / (64 + 192))
    assert torch.equal(ps["in_proj_bias"], torch.zeros(192))
    assert torch.equal(ps["out_proj"]["bias"], torch.zeros(64))
    bound = 1 / math.sqrt(64)
    assert bound * 0.9 < ps["out_proj"]["weight"].abs().max() <= bound
    assert abs(ps["bias_k"].std().item() - math.sqrt(2 / 128)) < 0.05
    assert not torch.equal(ps["bias_k"], ps["bias_v"])
    split = setup(0, MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False))[0]
    assert {n: tuple(t.shape) for n, t in split.items() if n != "out_proj"} == {
        "q_proj_weight": (8, 8),
        "k_proj_weight": (8, 3),
        "v_proj_weight": (8, 5),
    }
    assert set(split["out_proj"]) == {"weight"}


def test_layout_options_agree():
    q, k, v = _inputs({"batch_first": True}, torch.float64)
    a = MultiheadAttention(E, H, batch_first=True)
    b = MultiheadAttention(E, H)
    ps, st = setup(0, a, dtype=torch.float64)
    ya, _ = a((q, k, v), ps, st)
    yb, _ = b((q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)), ps, st)
    torch.testing.assert_close(ya, yb.transpose(0, 1))
    yu, _ = a((q[1], k[1], v[1]), ps, st)  # unbatched
    torch.testing.assert_close(yu, ya[1])


def test_configuration_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"MultiheadAttention: embed_dim \(10\).*num_heads \(3\)"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="MultiheadAttention: dropout"):
        MultiheadAttention(8, 2, dropout=1.5)
    with pytest.raises(TypeError, match="MultiheadAttention: batch_first"):
        MultiheadAttention(8, 2, batch_first=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MultiheadAttention: add_zero_attn must be a bool"):
        MultiheadAttention(8, 2, add_zero_attn=None)  # type: ignore[arg-type]
    # torch's positional order: (..., add_bias_kv, add_zero_attn, kdim, vdim, batch_first)
    assert MultiheadAttention(8, 2, 0.0, True, False, True, 3).add_zero_attn
    assert MultiheadAttention(8, 2, 0.0, True, False, True, 3).kdim == 3
    with pytest.raises(ValueError, match="SinusoidalPositionalEmbedding: dim must be even"):
        SinusoidalPositionalEmbedding(7)
    with pytest.raises(ValueError, match="RotaryPositionalEmbedding: base"):
        RotaryPositionalEmbedding(8, base=0)


def test_input_errors_name_the_layer():
    layer = MultiheadAttention(E, H, kdim=3)
    ps, st = setup(0, layer)
    q, k, v = randn(3, 2, E), randn(4, 2, 3), randn(4, 2, E)
    layer((q, k, v), ps, st)
    with pytest.raises(ValueError, match=r"MultiheadAttention: expected key of shape \(S, N, 3\)"):
        layer((q, v, v), ps, st)
    with pytest.raises(ValueError, match=r"expected query of shape \(L, N, 8\), got \(3, 2, 5\)"):
        layer((randn(3, 2, 5), k, v), ps, st)
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(2, 4\)"):
        layer((q, k, v, torch.zeros(4, 2, dtype=torch.bool), None), ps, st)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 4\) or \(4, 3, 4\)"):
        layer((q, k, v, None, torch.zeros(4, 3, dtype=torch.bool)), ps, st)
    with pytest.raises(ValueError, match="MultiheadAttention: expected a tensor"):
        layer((q, k), ps, st)
    assert layer.describe_input_error((q, k, v)) is None
    with pytest.raises(ValueError, match="max_len=4"):
        SinusoidalPositionalEmbedding(E, max_len=4)(randn(2, 5, E), {}, {})
    with pytest.raises(ValueError, match=r"RotaryPositionalEmbedding: expected input of shape"):
        RotaryPositionalEmbedding(E)(randn(2, 5, 6), {}, {})


def test_repr():
    assert repr(MultiheadAttention(8, 2)).startswith("MultiheadAttention(embed_dim=8, num_heads=2")
    text = repr(MultiheadAttention(8, 2, dropout=0.1, kdim=3, batch_first=True))
    assert "dropout=0.1" in text and "kdim=3, vdim=8" in text and "batch_first=True" in text
    assert "add_zero_attn=True" in repr(MultiheadAttention(8, 2, add_zero_attn=True))
    assert "add_zero_attn" not in text


# --------------------------------------------------------------------------- positions


def test_sinusoidal_table_is_the_formula():
    layer = SinusoidalPositionalEmbedding(6, base=100.0)
    x = randn(2, 5, 6, dtype=torch.float64)
    y, st = layer(x, {}, {})
    assert st == {}
    table = torch.zeros(5, 6, dtype=torch.float64)
    for t in range(5):
        for i in range(3):
            angle = t / 100.0 ** (2 * i / 6)
            table[t, 2 * i], table[t, 2 * i + 1] = math.sin(angle), math.cos(angle)
    torch.testing.assert_close(y, x + table)
    torch.testing.assert_close(layer.table(5, torch.float64), table)


def test_rotary_is_the_complex_rotation():
    layer = RotaryPositionalEmbedding(8)
    x = randn(2, 3, 5, 8, dtype=torch.float64)
    y, _ = layer(x, {}, {})
    theta = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angles = torch.arange(5, dtype=torch.float64)[:, None] * theta
    z = torch.view_as_complex(x.reshape(2, 3, 5, 4, 2).contiguous()) * torch.polar(
        torch.ones_like(angles), angles
    )
    torch.testing.assert_close(y, torch.view_as_real(z).reshape(2, 3, 5, 8))
    # scores of rotated queries and keys depend on relative positions only
    q, k = randn(1, 8, dtype=torch.float64, seed=2), randn(1, 8, dtype=torch.float64, seed=3)
    rq, _ = layer(q.expand(6, 8), {}, {})
    rk, _ = layer(k.expand(6, 8), {}, {})
    torch.testing.assert_close(rq[3] @ rk[1], rq[4] @ rk[2])
    torch.testing.assert_close(rq[0] @ rk[0], (q @ k.T).squeeze())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "layer",
    [SinusoidalPositionalEmbedding(8, max_len=16), RotaryPositionalEmbedding(8, base=500.0)],
    ids=["sinusoidal", "rotary"],
)
def test_positional_embeddings_conform(layer, dtype):
    report = check(layer, randn(2, 5, 8, dtype=dtype), dtype, compile_backend="inductor")
    for name in ("forward", "purity", "determinism", "gradcheck"):
        assert report[name] == "passed", name
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")


# --------------------------------------------------------------------------- edge cases


# (layer keyword arguments, masks) for empty batches: every path of the layer
EMPTY_CASES = [
    ({}, ""),
    ({"batch_first": True}, "padding"),
    ({"need_weights": True}, "bool"),
    ({"need_weights": True, "average_attn_weights": False, "batch_first": True}, "float"),
    ({"kdim": 3, "vdim": 5}, "options:causal,padding"),
    ({"add_bias_kv": True, "add_zero_attn": True, "batch_first": True}, "bool"),
    ({"dropout": 0.5}, "float"),
]


def _empty_batch(inputs: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    """``inputs`` with the batch dimension emptied (masks too; attn_mask (N*H, L, S) too)."""
    batch = 0 if kw.get("batch_first") else 1

    def empty(t: Any, dim: int) -> Any:
        return t.narrow(dim, 0, 0) if isinstance(t, torch.Tensor) else t

    q, k, v, *rest = inputs
    out: list[Any] = [empty(q, batch), empty(k, batch), empty(v, batch)]
    if rest and isinstance(rest[-1], dict):
        opts = dict(rest[-1])
        opts["key_padding_mask"] = empty(opts.get("key_padding_mask"), 0)
        mask = opts.get("attn_mask")
        opts["attn_mask"] = empty(mask, 0) if mask is not None and mask.dim() == 3 else mask
        return (*out, opts)
    if rest:
        kpm, mask = rest
        mask = empty(mask, 0) if mask is not None and mask.dim() == 3 else mask
        return (*out, empty(kpm, 0), mask)
    return tuple(out)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", EMPTY_CASES, ids=lambda c: _case_id((*c, None)))
def test_empty_batch_returns_torchs_empty_result(case, training):
    # torch returns an empty result for batch 0 (its fused path raises with masks; the
    # need_weights=True path is the same function and does not): so must we, with a
    # gradient that flows (zeros) instead of an error.
    kw, masks = case
    layer = MultiheadAttention(E, H, **kw)
    ps, st = setup(0, layer, dtype=torch.float64)
    st = train_mode(st) if training else test_mode(st)
    x = _empty_batch(_inputs(kw, torch.float64, masks), kw)
    y, new_st = layer(x, ps, st)
    tensors = dict(zip(ltree.paths(ps), ltree.leaves(ps), strict=True))
    expected = _reference({**kw, "need_weights": True})(tensors, *x)
    if not kw.get("need_weights"):
        expected = expected[0]
    for ours, theirs in zip(_tensors(y), _tensors(expected), strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert set(new_st) == set(st)
    grads = torch.func.grad(lambda p: _tensors(layer(x, p, st)[0])[0].sum())(ps)
    assert all(float(g.abs().sum()) == 0.0 for g in ltree.leaves(grads))


def test_zero_length_sequences_batched_and_unbatched_match_torch():
    # empty queries (L = 0), batched and unbatched, with and without masks
    layer = MultiheadAttention(E, H, need_weights=True)
    ps, st = setup(0, layer, dtype=torch.float64)
    tensors = dict(zip(ltree.paths(ps), ltree.leaves(ps), strict=True))
    k = randn(4, 2, E, dtype=torch.float64, seed=2)
    q = k[:0]
    for x in (
        (q, k, k),
        (q, k, k, _padding(2, 4), torch.zeros(0, 4, dtype=torch.bool)),
        (q[:, 0], k[:, 0], k[:, 0]),
        (q[:, 0], k[:, 0], k[:, 0], torch.zeros(4, dtype=torch.bool), None),
    ):
        (y, w), _ = layer(x, ps, st)
        y_ref, w_ref = _reference({"need_weights": True})(tensors, *x)
        assert y.shape == y_ref.shape and w.shape == w_ref.shape


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_input_on_another_device_than_the_parameters_raises(batch_first, need_weights):
    # meta-device inputs with CPU parameters: torch raises (and on one path of ours, the
    # sequence-first layout, F.linear returned an uninitialised CPU tensor)
    layer = MultiheadAttention(E, H, batch_first=batch_first, need_weights=need_weights)
    ps, st = setup(0, layer)
    q = torch.empty(3, 3, E, device="meta")  # L = N = 3 in either layout
    for x in ((q, q, q), q[0], (q, q, q, {"attn_mask": torch.zeros(3, 3, device="meta")})):
        with pytest.raises(ValueError, match=r"MultiheadAttention: .*meta.*parameters.*cpu"):
            layer(x, ps, st)
    cpu = randn(3, 3, E)
    mask = torch.zeros(3, 3, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match=r"MultiheadAttention: attn_mask is on meta"):
        layer((cpu, cpu, cpu, None, mask), ps, st)
    with pytest.raises(ValueError, match=r"MultiheadAttention: query is on cpu.*meta"):
        layer(cpu, ltree.to(ps, device="meta"), st)


def _tensors(y: Any) -> tuple[torch.Tensor, ...]:
    return tuple(y) if isinstance(y, tuple) else (y,)


def test_forward_mode_takes_the_explicit_path_with_sdpas_results():
    """Under torch.func.jvp/jacfwd (CPU scaled_dot_product_attention has no forward-mode
    rule) the attention is computed explicitly, with sdpa's zero result for a query whose
    keys are all masked out; its Jacobian equals reverse mode's (torch.autograd.functional)."""
    layer = MultiheadAttention(4, 2, batch_first=True)
    ps, st = setup(0, layer, dtype=torch.float64)
    x = randn(2, 3, 4, dtype=torch.float64)
    kpm = torch.tensor([[True, True, True], [False, True, False]])  # sample 0: all masked

    def f(x: torch.Tensor) -> Any:
        return layer((x, x, x, kpm, None), ps, st)[0]

    out: Any = torch.func.jvp(f, (x,), (torch.ones_like(x),))
    y, jv = out
    torch.testing.assert_close(y, f(x), rtol=1e-12, atol=1e-12)
    assert not jv.isnan().any()
    expected = torch.autograd.functional.jacobian(f, x)
    torch.testing.assert_close(torch.func.jacfwd(f)(x), expected, rtol=1e-10, atol=1e-12)
