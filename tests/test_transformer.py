"""Transformer blocks against torch.nn.TransformerEncoderLayer / TransformerDecoderLayer.

The reference is a callable running the torch layer (built on the meta device: no global
RNG is drawn) on our tensors through ``torch.func.functional_call``. It is built with
``dropout=0.0`` and kept in training mode: check_layer compares stochastic layers in test
mode only (where dropout is the identity) and ``dropout=0`` layers in both modes, and
torch's inference fast path (zeros at padded positions) is never taken. One
configuration is compiled with inductor, the others with ``aot_eager``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, check, randn
from torch import nn

from lux_torch import tree as ltree
from lux_torch.core import setup, test_mode, train_mode
from lux_torch.interop import load_state_dict
from lux_torch.layers.transformer import TransformerDecoderLayer, TransformerEncoderLayer

E, H, FF = 8, 2, 16
N, L, S = 2, 4, 3


def _torch_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kw.items() if k not in ("causal", "dropout")}
    return {"dim_feedforward": FF, **out, "dropout": 0.0}


def _causal(length: int, mask: torch.Tensor | None) -> torch.Tensor:
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    return causal if mask is None else mask | causal


def _encoder_reference(kw: dict[str, Any]) -> Any:
    module = nn.TransformerEncoderLayer(E, H, **_torch_kwargs(kw), device="meta")
    known = {n for n, _ in module.named_parameters()}

    def reference(tensors: dict[str, torch.Tensor], *inputs: Any) -> Any:
        src, kpm, mask = (*inputs, None, None)[:3]
        if kw.get("causal"):
            seq = 1 if src.dim() == 3 and kw.get("batch_first") else 0
            mask = _causal(src.shape[seq], mask)
        params = {n: t for n, t in tensors.items() if n in known}
        options = {"src_mask": mask, "src_key_padding_mask": kpm}
        return torch.func.functional_call(module, params, (src,), options)

    return reference


def _decoder_reference(kw: dict[str, Any]) -> Any:
    module = nn.TransformerDecoderLayer(E, H, **_torch_kwargs(kw), device="meta")
    known = {n for n, _ in module.named_parameters()}

    def reference(tensors: dict[str, torch.Tensor], *inputs: Any) -> Any:
        tgt, memory, tgt_mask, mem_mask, tgt_kpm, mem_kpm = (*inputs, None, None, None, None)[:6]
        if kw.get("causal"):
            seq = 1 if tgt.dim() == 3 and kw.get("batch_first") else 0
            tgt_mask = _causal(tgt.shape[seq], tgt_mask)
        params = {n: t for n, t in tensors.items() if n in known}
        options = {
            "tgt_mask": tgt_mask,
            "memory_mask": mem_mask,
            "tgt_key_padding_mask": tgt_kpm,
            "memory_key_padding_mask": mem_kpm,
        }
        return torch.func.functional_call(module, params, (tgt, memory), options)

    return reference


def _seq(kw: dict[str, Any], t: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    shape = (N, t, E) if kw.get("batch_first") else (t, N, E)
    return randn(*shape, dtype=dtype, seed=seed)


def _padding(n: int, s: int) -> torch.Tensor:
    kpm = torch.zeros(n, s, dtype=torch.bool)
    kpm[0, -1] = True  # never a whole row: that gives NaN (as torch)
    return kpm


def _encoder_inputs(kw: dict[str, Any], dtype: torch.dtype, masks: str) -> Any:
    src = _seq(kw, L, dtype, 1)
    if not masks:
        return src
    mask = None
    if masks == "both":
        mask = torch.zeros(L, L, dtype=torch.bool)
        mask[0, 2] = mask[3, 1] = True
    return (src, _padding(N, L), mask)


# (layer keyword arguments, masks, compile backend: None = aot_eager, "off" = not compiled
# (training-mode graphs with dropout take seconds to capture; other cases cover them))
ENCODER_CASES = [
    ({"batch_first": True}, "padding", "inductor"),
    ({}, "", None),
    ({"norm_first": True}, "padding", "off"),
    ({"norm_first": True, "batch_first": True, "activation": "gelu"}, "both", None),
    ({"activation": "gelu", "dropout": 0.0}, "padding", None),
    ({"dropout": 0.0, "norm_first": True, "batch_first": True, "causal": True}, "padding", None),
    ({"dropout": 0.0, "bias": False, "activation": F.silu, "layer_norm_eps": 1e-3}, "", None),
]


def _case_id(case: Any) -> str:
    kw, masks, _ = case
    parts = [f"{k}={getattr(v, '__name__', v)}" for k, v in kw.items()]
    return ",".join(parts + ([masks] if masks else [])) or "default"


def _assert_passed(
    report: dict[str, str], dtype: torch.dtype, stochastic: bool, compiled: bool = True
) -> None:
    for name, result in report.items():
        if name.startswith("compile"):
            ok = dtype == torch.float32 and compiled
            expected = "passed" if ok else "skipped: disabled"
            assert result == expected, (name, result)
        elif name == "parity[train]" and stochastic:
            assert result.startswith("skipped: stochastic"), (name, result)
        elif not name.startswith("device"):
            assert result == "passed", (name, result)
    assert ("parity[test]" in report) == stochastic
    assert report.get("parity", report.get("parity[test]")) == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ENCODER_CASES, ids=_case_id)
def test_encoder_layer_matches_torch(case, dtype):
    kw, masks, backend = case
    layer = TransformerEncoderLayer(E, H, FF, **kw)
    report = check(
        layer,
        _encoder_inputs(kw, dtype, masks),
        dtype,
        reference=_encoder_reference(kw),
        compile=dtype == torch.float32 and backend != "off",
        compile_backend=backend if backend in ("inductor",) else "aot_eager",
    )
    stochastic = kw.get("dropout", 0.1) > 0
    _assert_passed(report, dtype, stochastic, compiled=backend != "off")


def _decoder_inputs(kw: dict[str, Any], dtype: torch.dtype, masks: str) -> Any:
    tgt, memory = _seq(kw, L, dtype, 1), _seq(kw, S, dtype, 2)
    if not masks:
        return (tgt, memory)
    tgt_mask = mem_mask = None
    if masks == "all":
        tgt_mask = torch.zeros(L, L, dtype=torch.bool)
        tgt_mask[0, 2] = True
        mem_mask = torch.zeros(L, S, dtype=torch.bool)
        mem_mask[3, 1] = True
    return (tgt, memory, tgt_mask, mem_mask, _padding(N, L), _padding(N, S))


DECODER_CASES = [
    ({"batch_first": True}, "padding", "off"),
    ({"norm_first": True, "activation": "gelu"}, "all", None),
    ({"dropout": 0.0, "causal": True}, "padding", None),
    ({"dropout": 0.0, "norm_first": True, "batch_first": True, "bias": False}, "", None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DECODER_CASES, ids=_case_id)
def test_decoder_layer_matches_torch(case, dtype):
    kw, masks, backend = case
    layer = TransformerDecoderLayer(E, H, FF, **kw)
    report = check(
        layer,
        _decoder_inputs(kw, dtype, masks),
        dtype,
        reference=_decoder_reference(kw),
        compile=dtype == torch.float32 and backend != "off",
        compile_backend=backend if backend in ("inductor",) else "aot_eager",
    )
    stochastic = kw.get("dropout", 0.1) > 0
    _assert_passed(report, dtype, stochastic, compiled=backend != "off")


# --------------------------------------------------------------------------- structure


def _flat(tree: Any) -> dict[str, torch.Tensor]:
    return dict(zip(ltree.paths(tree), ltree.flatten(tree)[0], strict=True))


def test_parameter_names_are_torchs_state_dict_names():
    for ours, theirs in (
        (TransformerEncoderLayer(E, H, FF), nn.TransformerEncoderLayer(E, H, FF)),
        (TransformerDecoderLayer(E, H, FF), nn.TransformerDecoderLayer(E, H, FF)),
        (
            TransformerEncoderLayer(E, H, FF, bias=False),
            nn.TransformerEncoderLayer(E, H, FF, bias=False),
        ),
    ):
        ps, st = setup(0, ours)
        shapes = {p: tuple(t.shape) for p, t in _flat(ps).items()}
        assert shapes == {n: tuple(t.shape) for n, t in theirs.state_dict().items()}
        dropouts = [n for n in ours.children() if n.startswith("dropout")]
        keys = {f"{n}.key" for n in ["self_attn", *dropouts]}
        if isinstance(ours, TransformerDecoderLayer):
            keys.add("multihead_attn.key")
        assert set(ltree.paths(st)) == keys


def test_dropout_zero_has_no_state():
    layer = TransformerEncoderLayer(E, H, FF, dropout=0.0)
    _, st = setup(0, layer)
    assert ltree.paths(st) == [] and set(st) == set(layer.children())
    assert layer.dropout.p == 0.0 and layer.self_attn.dropout == 0.0


def test_initial_values_follow_torch():
    layer = TransformerEncoderLayer(64, 4, 128)
    ps, _ = setup(0, layer)
    assert torch.equal(ps["norm1"]["weight"], torch.ones(64))
    assert torch.equal(ps["norm2"]["bias"], torch.zeros(64))
    assert torch.equal(ps["self_attn"]["in_proj_bias"], torch.zeros(192))
    bound = 1 / 64**0.5
    assert 0.9 * bound < ps["linear1"]["weight"].abs().max() <= bound
    assert not torch.equal(ps["linear1"]["weight"][:64, :], ps["linear2"]["weight"][:, :64].T)


@pytest.mark.parametrize("norm_first", [False, True])
def test_load_state_dict_from_torch(norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(E, H, FF, norm_first=norm_first).eval()
    ours = TransformerEncoderLayer(E, H, FF, norm_first=norm_first)
    # torch's state_dict has no random keys: take them from our own setup
    _, st0 = setup(0, ours)
    ps, st = load_state_dict(ours, {**theirs.state_dict(), **_flat(st0)})
    x = randn(L, N, E)
    y, _ = ours(x, ps, test_mode(st))
    with torch.no_grad():
        torch.testing.assert_close(y, theirs(x))
    # dropout = 0: torch's state_dict alone
    theirs_d = nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, norm_first=norm_first).eval()
    ours_d = TransformerDecoderLayer(E, H, FF, dropout=0.0, norm_first=norm_first)
    ps, st = load_state_dict(ours_d, theirs_d.state_dict())
    tgt, memory = randn(L, N, E), randn(S, N, E, seed=2)
    y, _ = ours_d((tgt, memory), ps, st)
    with torch.no_grad():
        torch.testing.assert_close(y, theirs_d(tgt, memory))


# --------------------------------------------------------------------------- semantics


def test_dropout_keys_advance_and_state_is_not_mutated():
    layer = TransformerEncoderLayer(E, H, FF, dropout=0.5, batch_first=True)
    ps, st = setup(0, layer)
    before = {p: t.clone() for p, t in _flat(st).items()}
    x = randn(N, L, E)
    y1, st1 = layer(x, ps, st)
    y1b, _ = layer(x, ps, st)
    assert torch.equal(y1, y1b)
    for p, t in _flat(st).items():
        assert torch.equal(t, before[p])  # st untouched
    for name in ("self_attn", "dropout", "dropout1", "dropout2"):
        assert not torch.equal(st1[name]["key"], st[name]["key"]), name
    y2, _ = layer(x, ps, st1)
    assert not torch.equal(y1, y2)
    y_test, st_test = layer(x, ps, test_mode(st))
    assert st_test == test_mode(st)
    det = TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
    y_det, _ = det(x, ps, setup(0, det)[1])
    torch.testing.assert_close(y_test, y_det)
    y3, _ = layer(x, ps, train_mode(test_mode(st)))
    assert torch.equal(y3, y1)


def test_causal_field_equals_an_explicit_mask():
    x = randn(L, N, E, dtype=torch.float64)
    mask = torch.ones(L, L, dtype=torch.bool).triu(1)
    plain = TransformerEncoderLayer(E, H, FF, dropout=0.0)
    ps, st = setup(0, plain, dtype=torch.float64)
    y_mask, _ = plain((x, None, mask), ps, st)
    y_causal, _ = TransformerEncoderLayer(E, H, FF, dropout=0.0, causal=True)(x, ps, st)
    torch.testing.assert_close(y_causal, y_mask)
    dec = TransformerDecoderLayer(E, H, FF, dropout=0.0)
    ps, st = setup(0, dec, dtype=torch.float64)
    memory = randn(S, N, E, dtype=torch.float64, seed=2)
    y_mask, _ = dec((x, memory, mask, None, None, None), ps, st)
    causal = TransformerDecoderLayer(E, H, FF, dropout=0.0, causal=True)
    y_causal, _ = causal((x, memory), ps, st)
    torch.testing.assert_close(y_causal, y_mask)


def test_unbatched_and_layout_agree():
    a = TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
    b = TransformerEncoderLayer(E, H, FF, dropout=0.0)
    ps, st = setup(0, a, dtype=torch.float64)
    x = randn(N, L, E, dtype=torch.float64)
    ya, _ = a(x, ps, st)
    yb, _ = b(x.transpose(0, 1), ps, st)
    torch.testing.assert_close(ya, yb.transpose(0, 1))
    yu, _ = a(x[1], ps, st)
    torch.testing.assert_close(yu, ya[1])


def test_activation_argument():
    assert TransformerEncoderLayer(E, H, activation="gelu").activation is F.gelu
    assert TransformerEncoderLayer(E, H).activation is F.relu
    assert TransformerDecoderLayer(E, H, activation=torch.tanh).activation is torch.tanh
    with pytest.raises(ValueError, match="TransformerEncoderLayer: activation should be"):
        TransformerEncoderLayer(E, H, activation="swish")
    with pytest.raises(TypeError, match="TransformerDecoderLayer: activation must be"):
        TransformerDecoderLayer(E, H, activation=nn.ReLU())


def test_configuration_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"embed_dim \(10\).*num_heads \(3\)"):
        TransformerEncoderLayer(10, 3)
    with pytest.raises(ValueError, match=r"TransformerEncoderLayer: dropout must be in \[0, 1\]"):
        TransformerEncoderLayer(E, H, dropout=1.5)
    with pytest.raises(TypeError, match="TransformerEncoderLayer: norm_first must be a bool"):
        TransformerEncoderLayer(E, H, norm_first=1)
    with pytest.raises(TypeError, match="TransformerDecoderLayer: dim_feedforward must be"):
        TransformerDecoderLayer(E, H, dim_feedforward=2.0)
    with pytest.raises(ValueError, match="eps"):
        TransformerEncoderLayer(E, H, layer_norm_eps=0.0)


def test_input_errors_name_the_layer():
    enc = TransformerEncoderLayer(E, H, FF)
    ps, st = setup(0, enc)
    with pytest.raises(ValueError, match=r"expected src or a tuple"):
        enc((randn(L, N, E), None), ps, st)
    with pytest.raises(ValueError, match=r"expected query of shape \(L, N, 8\), got \(4, 2, 5\)"):
        enc(randn(L, N, 5), ps, st)
    assert enc.describe_input_error(randn(L, N, E)) is None
    bad = (randn(L, N, E), torch.zeros(L, N, dtype=torch.bool), None)
    assert "key_padding_mask of shape (2, 4)" in (enc.describe_input_error(bad) or "")
    dec = TransformerDecoderLayer(E, H, FF)
    ps, st = setup(0, dec)
    with pytest.raises(ValueError, match=r"expected a tuple \(tgt, memory\)"):
        dec(randn(L, N, E), ps, st)
    problem = dec.describe_input_error((randn(L, N, E), randn(S, N, 5)))
    assert problem is not None and problem.startswith("memory attention: expected key")
    assert dec.describe_input_error((randn(L, N, E), randn(S, N, E))) is None


def test_repr():
    text = repr(TransformerEncoderLayer(E, H, FF, dropout=0.2, activation="gelu", norm_first=True))
    assert text.startswith("TransformerEncoderLayer(")
    head = "d_model=8, nhead=2, dim_feedforward=16, dropout=0.2, activation=gelu, norm_first=True"
    assert head in text
    assert "linear1 = Linear(8 => 16)" in text
    assert "dropout1 = Dropout(p=0.2)" in text
    text = repr(TransformerDecoderLayer(E, H))
    assert "TransformerDecoderLayer(" in text and "d_model=8, nhead=2," in text
    assert "multihead_attn = MultiheadAttention" in text and "dim_feedforward" not in text


def test_equality_and_hash():
    a = TransformerEncoderLayer(E, H, FF, activation="gelu")
    b = TransformerEncoderLayer(E, H, FF, activation=F.gelu)
    assert a == b and hash(a) == hash(b)
    assert a != TransformerEncoderLayer(E, H, FF)
