"""Transformer blocks and stacks against torch.nn.TransformerEncoderLayer /
TransformerDecoderLayer / TransformerEncoder / TransformerDecoder.

The reference is a callable running the torch layer (built on the meta device: no global
RNG is drawn) on our tensors through ``torch.func.functional_call``. It is built with
``dropout=0.0`` and kept in training mode: check_layer compares stochastic layers in test
mode only (where dropout is the identity) and ``dropout=0`` layers in both modes, and
torch's inference fast path (zeros at padded positions) is never taken. One
configuration is compiled with inductor, the others with ``aot_eager``. A call option
``is_causal=True`` (``tgt_is_causal``, ``memory_is_causal``) is given to torch with the
causal mask its hint requires.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, check, randn
from torch import nn

import lux_torch as lux
from lux_torch import tree as ltree
from lux_torch.core import setup, test_mode, train_mode
from lux_torch.interop import load_state_dict
from lux_torch.layers.normalization import LayerNorm
from lux_torch.layers.transformer import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

E, H, FF = 8, 2, 16
N, L, S = 2, 4, 3


def _torch_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kw.items() if k not in ("causal", "dropout")}
    return {"dim_feedforward": FF, **out, "dropout": 0.0}


def _causal(length: int, mask: torch.Tensor | None, source: int | None = None) -> torch.Tensor:
    causal = torch.ones(length, length if source is None else source, dtype=torch.bool).triu(1)
    return causal if mask is None else mask | causal


def _length(kw: dict[str, Any], x: torch.Tensor) -> int:
    return x.shape[1 if x.dim() == 3 and kw.get("batch_first") else 0]


def _encoder_options(kw: dict[str, Any], inputs: tuple[Any, ...], mask_name: str) -> Any:
    """torch's ``(src, options)`` for our input (a tensor, a 3-tuple or ``(src, options)``)."""
    src, *rest = inputs
    if rest and isinstance(rest[0], dict):
        given = rest[0]
        kpm, mask, is_causal = given.get("src_key_padding_mask"), given.get(mask_name), False
        if given.get("is_causal"):
            is_causal = mask is None  # torch's hint: the mask must be the causal mask
            mask = _causal(_length(kw, src), mask)
    else:
        kpm, mask, is_causal = (*rest, None, None)[0], (*rest, None, None)[1], False
    if kw.get("causal"):
        mask = _causal(_length(kw, src), mask)
    return src, {mask_name: mask, "src_key_padding_mask": kpm, "is_causal": is_causal}


def _encoder_reference(kw: dict[str, Any]) -> Any:
    module = nn.TransformerEncoderLayer(E, H, **_torch_kwargs(kw), device="meta")
    known = {n for n, _ in module.named_parameters()}

    def reference(tensors: dict[str, torch.Tensor], *inputs: Any) -> Any:
        src, options = _encoder_options(kw, inputs, "src_mask")
        params = {n: t for n, t in tensors.items() if n in known}
        return torch.func.functional_call(module, params, (src,), options)

    return reference


def _decoder_reference(kw: dict[str, Any]) -> Any:
    module = nn.TransformerDecoderLayer(E, H, **_torch_kwargs(kw), device="meta")
    known = {n for n, _ in module.named_parameters()}

    def reference(tensors: dict[str, torch.Tensor], *inputs: Any) -> Any:
        tgt, memory, options = _decoder_options(kw, inputs)
        params = {n: t for n, t in tensors.items() if n in known}
        return torch.func.functional_call(module, params, (tgt, memory), options)

    return reference


_DECODER_MASKS = ("tgt_mask", "memory_mask", "tgt_key_padding_mask", "memory_key_padding_mask")


def _decoder_options(kw: dict[str, Any], inputs: tuple[Any, ...]) -> Any:
    """torch's ``(tgt, memory, options)`` for our decoder input."""
    tgt, memory, *rest = inputs
    flags = {"tgt_is_causal": False, "memory_is_causal": False}
    if rest and isinstance(rest[0], dict):
        given = rest[0]
        options = {name: given.get(name) for name in _DECODER_MASKS}
        t, s = _length(kw, tgt), _length(kw, memory)
        for which, source in (("tgt", t), ("memory", s)):
            if given.get(f"{which}_is_causal"):
                flags[f"{which}_is_causal"] = options[f"{which}_mask"] is None
                options[f"{which}_mask"] = _causal(t, options[f"{which}_mask"], source)
    else:
        options = dict(zip(_DECODER_MASKS, (*rest, None, None, None, None), strict=False))
    if kw.get("causal"):
        options["tgt_mask"] = _causal(_length(kw, tgt), options["tgt_mask"])
    return tgt, memory, {**options, **flags}


def _seq(kw: dict[str, Any], t: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    shape = (N, t, E) if kw.get("batch_first") else (t, N, E)
    return randn(*shape, dtype=dtype, seed=seed)


def _padding(n: int, s: int) -> torch.Tensor:
    kpm = torch.zeros(n, s, dtype=torch.bool)
    kpm[0, -1] = True  # never a whole row: that gives NaN (as torch)
    return kpm


def _mask(rows: int, cols: int, *masked: tuple[int, int]) -> torch.Tensor:
    """A boolean ``(rows, cols)`` attention mask, ``True`` (masked out) at ``masked``."""
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for i, j in masked:
        mask[i, j] = True
    return mask


def _encoder_inputs(
    kw: dict[str, Any], dtype: torch.dtype, masks: str, mask_name: str = "src_mask"
) -> Any:
    src = _seq(kw, L, dtype, 1)
    if not masks:
        return src
    if masks.startswith("options"):  # "options:causal,padding,both"
        given = masks.split(":")[1].split(",")
        opts: dict[str, Any] = {"is_causal": "causal" in given}
        if "padding" in given:
            opts["src_key_padding_mask"] = _padding(N, L)
        if "both" in given:
            opts[mask_name] = _mask(L, L, (0, 2))
        return (src, opts)
    mask = None
    if masks == "both":
        mask = _mask(L, L, (0, 2), (3, 1))
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
    ({"dropout": 0.0}, "options:causal", None),
    ({"dropout": 0.0, "batch_first": True}, "options:causal,padding", "off"),
    ({"norm_first": True}, "options:causal,padding,both", "off"),
    ({"dropout": 0.0, "causal": True}, "options:both", "off"),
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


def _assert_matches_torch(
    layer: Any,
    x: Any,
    reference: Any,
    kw: dict[str, Any],
    dtype: torch.dtype,
    compiled: bool,
    backend: str | None = None,
) -> None:
    """``layer`` on ``x`` passes the harness against ``reference``; dropout (``kw``) makes it
    stochastic; compiled in float32 only when ``compiled`` (with ``backend``, else aot_eager)."""
    report = check(
        layer,
        x,
        dtype,
        reference=reference,
        compile=dtype == torch.float32 and compiled,
        compile_backend=backend or "aot_eager",
    )
    _assert_passed(report, dtype, kw.get("dropout", 0.1) > 0, compiled=compiled)


def _decoder_inputs(kw: dict[str, Any], dtype: torch.dtype, masks: str) -> Any:
    tgt, memory = _seq(kw, L, dtype, 1), _seq(kw, S, dtype, 2)
    if not masks:
        return (tgt, memory)
    if masks.startswith("options"):  # "options:tgt_causal,memory_causal,padding,all"
        given = masks.split(":")[1].split(",")
        opts: dict[str, Any] = {
            "tgt_is_causal": "tgt_causal" in given,
            "memory_is_causal": "memory_causal" in given,
        }
        if "padding" in given:
            opts["tgt_key_padding_mask"] = _padding(N, L)
            opts["memory_key_padding_mask"] = _padding(N, S)
        if "all" in given:
            opts["tgt_mask"] = _mask(L, L, (3, 1))
            opts["memory_mask"] = _mask(L, S, (3, 0))
        return (tgt, memory, opts)
    tgt_mask = mem_mask = None
    if masks == "all":
        tgt_mask = _mask(L, L, (0, 2))
        mem_mask = _mask(L, S, (3, 1))
    return (tgt, memory, tgt_mask, mem_mask, _padding(N, L), _padding(N, S))


DECODER_CASES = [
    ({"batch_first": True}, "padding", "off"),
    ({"norm_first": True, "activation": "gelu"}, "all", None),
    ({"dropout": 0.0, "causal": True}, "padding", None),
    ({"dropout": 0.0, "norm_first": True, "batch_first": True, "bias": False}, "", None),
    ({"dropout": 0.0}, "options:tgt_causal", None),
    ({"dropout": 0.0, "batch_first": True}, "options:tgt_causal,memory_causal", "off"),
    ({"dropout": 0.0}, "options:tgt_causal,memory_causal,padding", "off"),
    ({"norm_first": True}, "options:memory_causal,padding,all", "off"),
]


# block: (layer class, inputs, reference)
BLOCKS: dict[str, tuple[Any, Any, Any]] = {
    "encoder": (TransformerEncoderLayer, _encoder_inputs, _encoder_reference),
    "decoder": (TransformerDecoderLayer, _decoder_inputs, _decoder_reference),
}
BLOCK_CASES = [
    pytest.param(block, case, id=f"{block}-{_case_id(case)}")
    for block, cases in (("encoder", ENCODER_CASES), ("decoder", DECODER_CASES))
    for case in cases
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("block", "case"), BLOCK_CASES)
def test_block_matches_torch(block, case, dtype):
    layer, inputs, reference = BLOCKS[block]
    kw, masks, backend = case
    _assert_matches_torch(
        layer(E, H, FF, **kw),
        inputs(kw, dtype, masks),
        reference(kw),
        kw,
        dtype,
        compiled=backend != "off",
        backend=backend if backend in ("inductor",) else None,
    )


# --------------------------------------------------------------------------- stacks


def _stack_reference(module: nn.Module, decoder: bool, kw: dict[str, Any]) -> Any:
    """Run torch's TransformerEncoder / TransformerDecoder (on the meta device) like ours."""
    known = {n for n, _ in module.named_parameters()}

    def reference(tensors: dict[str, torch.Tensor], *inputs: Any) -> Any:
        params = {n: t for n, t in tensors.items() if n in known}
        if decoder:
            tgt, memory, options = _decoder_options(kw, inputs)
            return torch.func.functional_call(module, params, (tgt, memory), options)
        src, options = _encoder_options(kw, inputs, "mask")
        return torch.func.functional_call(module, params, (src,), options)

    return reference


def _torch_stack(decoder: bool, kw: dict[str, Any], layers: int, norm: bool) -> nn.Module:
    final = nn.LayerNorm(E, device="meta") if norm else None
    if decoder:
        block = nn.TransformerDecoderLayer(E, H, **_torch_kwargs(kw), device="meta")
        return nn.TransformerDecoder(block, layers, norm=final)
    encoder_block = nn.TransformerEncoderLayer(E, H, **_torch_kwargs(kw), device="meta")
    return nn.TransformerEncoder(encoder_block, layers, norm=final, enable_nested_tensor=False)


def _stack(decoder: bool, kw: dict[str, Any], layers: int, norm: bool) -> Any:
    block = (TransformerDecoderLayer if decoder else TransformerEncoderLayer)(E, H, FF, **kw)
    final = LayerNorm(E) if norm else None
    return (TransformerDecoder if decoder else TransformerEncoder)(block, layers, norm=final)


# (decoder?, block keyword arguments, num_layers, final norm?, masks, compiled?)
STACK_CASES = [
    (False, {"dropout": 0.0, "batch_first": True}, 2, True, "both", True),
    (False, {"dropout": 0.0, "norm_first": True}, 3, False, "options:causal,padding", False),
    (False, {"norm_first": True, "activation": "gelu"}, 2, True, "padding", False),
    (True, {"dropout": 0.0, "batch_first": True}, 2, True, "all", True),
    (True, {"dropout": 0.0}, 2, False, "options:tgt_causal,memory_causal,padding", False),
    (True, {"norm_first": True}, 2, True, "options:tgt_causal", False),
]


def _stack_id(case: Any) -> str:
    decoder, kw, layers, norm, masks, _ = case
    parts = ["decoder" if decoder else "encoder", f"x{layers}", *(["norm"] if norm else [])]
    parts += [f"{k}={getattr(v, '__name__', v)}" for k, v in kw.items()]
    return ",".join(parts + ([masks] if masks else []))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", STACK_CASES, ids=_stack_id)
def test_stacks_match_torch(case, dtype):
    decoder, kw, layers, norm, masks, compiled = case
    inputs = (
        _decoder_inputs(kw, dtype, masks) if decoder else _encoder_inputs(kw, dtype, masks, "mask")
    )
    reference = _stack_reference(_torch_stack(decoder, kw, layers, norm), decoder, kw)
    _assert_matches_torch(_stack(decoder, kw, layers, norm), inputs, reference, kw, dtype, compiled)


def test_stack_parameter_names_are_torchs_and_load_from_torch():
    torch.manual_seed(0)
    for decoder in (False, True):
        kw = {"dropout": 0.0, "norm_first": True}
        ours = _stack(decoder, kw, 3, True)
        theirs: nn.Module
        if decoder:
            block = nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, norm_first=True)
            theirs = nn.TransformerDecoder(block, 3, norm=nn.LayerNorm(E)).eval()
        else:
            encoder_block = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, norm_first=True)
            theirs = nn.TransformerEncoder(
                encoder_block, 3, norm=nn.LayerNorm(E), enable_nested_tensor=False
            ).eval()
        ps, _ = setup(0, ours)
        shapes = {n: tuple(t.shape) for n, t in theirs.state_dict().items()}
        assert {p: tuple(t.shape) for p, t in _flat(ps).items()} == shapes
        assert "layers.2.self_attn.in_proj_weight" in shapes and "norm.weight" in shapes
        ps, st = load_state_dict(ours, theirs.state_dict())
        tgt, memory = randn(L, N, E), randn(S, N, E, seed=2)
        with torch.no_grad():
            expected = theirs(tgt, memory) if decoder else theirs(tgt)
        y, _ = ours((tgt, memory) if decoder else tgt, ps, st)
        torch.testing.assert_close(y, expected)
    assert set(setup(0, _stack(False, {}, 2, False))[0]) == {"layers"}  # no norm: no entry


def test_stack_layers_are_independent():
    encoder = _stack(False, {"dropout": 0.5, "batch_first": True}, 3, False)
    ps, st = setup(0, encoder)
    # three copies of one block: equal configuration, own parameters and own dropout keys
    assert list(encoder.layers.children()) == ["0", "1", "2"]
    assert len({layer for layer in encoder.layers.children().values()}) == 1
    w = [ps["layers"][i]["linear1"]["weight"] for i in "012"]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    keys = [t for p, t in _flat(st).items() if p.endswith(".key")]
    assert len(keys) == 3 * 4  # self_attn, dropout, dropout1, dropout2 per block
    assert len({tuple(k.tolist()) for k in keys}) == len(keys)
    # the gradient of a block's weight comes from that block alone
    x = randn(N, L, E)

    def loss(p: Any) -> torch.Tensor:
        result: torch.Tensor = encoder(x, p, test_mode(st))[0].square().sum()
        return result

    grads = torch.func.grad(loss)(ps)
    g = [grads["layers"][i]["linear1"]["weight"] for i in "012"]
    assert not torch.equal(g[0], g[1]) and not torch.equal(g[1], g[2])
    # training: every key advances, and st is not mutated
    before = {p: t.clone() for p, t in _flat(st).items()}
    y1, st1 = encoder(x, ps, st)
    for p, t in _flat(st).items():
        assert torch.equal(t, before[p])
    advanced = [
        p for p, t in _flat(st1).items() if p.endswith(".key") and torch.equal(t, before[p])
    ]
    assert advanced == []
    y2, _ = encoder(x, ps, st1)
    assert not torch.equal(y1, y2)


def test_stack_is_the_loop_over_its_blocks():
    kw = {"dropout": 0.0, "batch_first": True}
    decoder = _stack(True, kw, 2, True)
    ps, st = setup(0, decoder, dtype=torch.float64)
    tgt, memory = randn(N, L, E, dtype=torch.float64), randn(N, S, E, dtype=torch.float64, seed=2)
    opts = {"tgt_is_causal": True, "memory_key_padding_mask": _padding(N, S)}
    y, new_st = decoder((tgt, memory, opts), ps, st)
    h = tgt
    block = decoder.layers.layers["0"]
    for i in "01":
        h, _ = block((h, memory, opts), ps["layers"][i], st["layers"][i])
    h, _ = decoder.norm(h, ps["norm"], st["norm"])
    torch.testing.assert_close(y, h)
    assert new_st == st  # dropout 0: no keys to advance
    # positional masks and options give the same result; is_causal is the causal mask
    causal = torch.ones(L, L, dtype=torch.bool).triu(1)
    positional = (tgt, memory, causal, None, None, _padding(N, S))
    torch.testing.assert_close(decoder(positional, ps, st)[0], y)
    encoder = _stack(False, kw, 2, False)
    ps, st = setup(0, encoder, dtype=torch.float64)
    y_opt, _ = encoder((tgt, {"is_causal": True}), ps, st)
    y_mask, _ = encoder((tgt, None, causal), ps, st)
    torch.testing.assert_close(y_opt, y_mask)
    assert not torch.allclose(y_opt, encoder(tgt, ps, st)[0])


def test_stack_errors_name_the_layer():
    block = TransformerEncoderLayer(E, H, FF)
    with pytest.raises(ValueError, match="TransformerEncoder: num_layers must be >= 1"):
        TransformerEncoder(block, 0)
    with pytest.raises(TypeError, match="TransformerDecoder: num_layers must be an int"):
        TransformerDecoder(TransformerDecoderLayer(E, H, FF), 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TransformerEncoder: the layer to stack must be a Layer"):
        TransformerEncoder(nn.TransformerEncoderLayer(E, H, FF), 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"TransformerEncoder: norm is a torch\.nn\.Module"):
        TransformerEncoder(block, 2, norm=nn.LayerNorm(E))
    encoder = TransformerEncoder(block, 2)
    ps, st = setup(0, encoder)
    src = randn(L, N, E)
    with pytest.raises(ValueError, match=r"TransformerEncoder: unknown call option 'src_mask'"):
        encoder((src, {"src_mask": None}), ps, st)
    with pytest.raises(ValueError, match=r"expected query of shape \(L, N, 8\), got \(4, 2, 5\)"):
        encoder(randn(L, N, 5), ps, st)
    bad = (src, {"src_key_padding_mask": torch.zeros(L, N, dtype=torch.bool)})
    assert "key_padding_mask of shape (2, 4)" in (encoder.describe_input_error(bad) or "")
    decoder = TransformerDecoder(TransformerDecoderLayer(E, H, FF), 2)
    ps, st = setup(0, decoder)
    with pytest.raises(ValueError, match=r"TransformerDecoder: expected a tuple \(tgt, memory\)"):
        decoder(src, ps, st)
    with pytest.raises(ValueError, match=r"call option 'tgt_is_causal' must be a bool"):
        decoder((src, randn(S, N, E), {"tgt_is_causal": 1}), ps, st)
    problem = decoder.describe_input_error((src, randn(S, N, 5)))
    assert problem is not None and problem.startswith("memory attention: expected key")


def test_stack_repr_and_equality():
    encoder = TransformerEncoder(TransformerEncoderLayer(E, H, FF), 2, norm=LayerNorm(E))
    text = repr(encoder)
    assert text.startswith("TransformerEncoder(\n    num_layers=2,")
    assert "layers = LayerList(" in text and "1 = TransformerEncoderLayer(" in text
    assert "norm = LayerNorm((8,))" in text
    assert encoder == TransformerEncoder(TransformerEncoderLayer(E, H, FF), 2, norm=LayerNorm(E))
    assert encoder != TransformerEncoder(TransformerEncoderLayer(E, H, FF), 3, norm=LayerNorm(E))
    assert hash(encoder) == hash(
        TransformerEncoder(TransformerEncoderLayer(E, H, FF), 2, LayerNorm(E))
    )


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
        TransformerEncoderLayer(E, H, norm_first=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TransformerDecoderLayer: dim_feedforward must be"):
        TransformerDecoderLayer(E, H, dim_feedforward=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps"):
        TransformerEncoderLayer(E, H, layer_norm_eps=0.0)


def test_input_errors_name_the_layer():
    enc = TransformerEncoderLayer(E, H, FF)
    ps, st = setup(0, enc)
    with pytest.raises(ValueError, match=r"expected src, a tuple"):
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


# --------------------------------------------------------------------------- Transformer


def _torch_transformer(*args: Any, **kw: Any) -> nn.Transformer:
    """``nn.Transformer(*args, **kw)`` without its advice about the inference fast path
    (nested tensors), which these tests never take."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        return nn.Transformer(*args, **kw)


def _transformer_reference(kw: dict[str, Any], layers: tuple[int, int]) -> Any:
    """``reference(tensors, src, tgt[, options])`` running torch.nn.Transformer (meta
    device, dropout 0, training mode: no fast path) on our tensors; an ``*_is_causal``
    option becomes the causal mask its torch hint stands for."""
    module = _torch_transformer(E, H, *layers, **_torch_kwargs(kw), device="meta")
    known = {n for n, _ in module.named_parameters()}

    def reference(tensors: dict[str, torch.Tensor], src: Any, tgt: Any, *rest: Any) -> Any:
        options = dict(rest[0]) if rest else {}
        s, t = _length(kw, src), _length(kw, tgt)
        for which, rows, cols in (("src", s, s), ("tgt", t, t), ("memory", t, s)):
            if options.pop(f"{which}_is_causal", False):
                options[f"{which}_mask"] = _causal(rows, options.get(f"{which}_mask"), cols)
        params = {n: x for n, x in tensors.items() if n in known}
        return torch.func.functional_call(module, params, (src, tgt), options)

    return reference


def _transformer_inputs(kw: dict[str, Any], dtype: torch.dtype, masks: str) -> Any:
    src, tgt = _seq(kw, S, dtype, 1), _seq(kw, L, dtype, 2)
    if not masks:
        return (src, tgt)
    given = masks.split(",")
    opts: dict[str, Any] = {f"{w}_is_causal": f"{w}_causal" in given for w in ("src", "tgt")}
    opts["memory_is_causal"] = "memory_causal" in given
    if "padding" in given:
        opts["src_key_padding_mask"] = _padding(N, S)
        opts["tgt_key_padding_mask"] = _padding(N, L)
        opts["memory_key_padding_mask"] = _padding(N, S)
    if "masks" in given:
        opts["src_mask"] = _mask(S, S, (0, 2))
        opts["tgt_mask"] = _mask(L, L, (3, 1))
        opts["memory_mask"] = _mask(L, S, (2, 0))
    return (src, tgt, opts)


# (keyword arguments, (encoder layers, decoder layers), options, compiled?)
TRANSFORMER_CASES = [
    ({"dropout": 0.0}, (2, 1), "", True),
    (
        {"dropout": 0.0, "batch_first": True, "norm_first": True},
        (1, 2),
        "padding,tgt_causal",
        False,
    ),
    ({"activation": "gelu"}, (1, 1), "masks,padding", False),  # dropout 0.1: stochastic
    (
        {"dropout": 0.0, "bias": False, "layer_norm_eps": 1e-3},
        (1, 1),
        "src_causal,tgt_causal,memory_causal,masks",
        False,
    ),
]


def _transformer_id(case: Any) -> str:
    kw, layers, masks, _ = case
    parts = [f"{layers[0]}+{layers[1]}"] + [f"{k}={v}" for k, v in kw.items()]
    return ",".join(parts + ([masks] if masks else []))


# every case in float64 (parity, gradcheck, vmap); the compiled one in float32 as well (the
# model is the stacks' composition, whose float32 runs are above: this keeps the cost down)
TRANSFORMER_RUNS = [
    pytest.param(case, torch.float64, id=f"{_transformer_id(case)}-float64")
    for case in TRANSFORMER_CASES
] + [
    pytest.param(case, torch.float32, id=f"{_transformer_id(case)}-float32")
    for case in TRANSFORMER_CASES
    if case[-1]
]


@pytest.mark.parametrize(("case", "dtype"), TRANSFORMER_RUNS)
def test_transformer_matches_torch(case, dtype):
    kw, layers, masks, compiled = case
    model = Transformer(E, H, layers[0], layers[1], dim_feedforward=FF, **kw)
    inputs = _transformer_inputs(kw, dtype, masks)
    reference = _transformer_reference(kw, layers)
    _assert_matches_torch(model, inputs, reference, kw, dtype, compiled)


def test_transformer_state_dict_loads_both_ways():
    torch.manual_seed(0)  # (torch's own initialisation of the module below)
    theirs = _torch_transformer(E, H, 2, 2, FF, dropout=0.0, norm_first=True).eval()
    ours = Transformer(E, H, 2, 2, FF, dropout=0.0, norm_first=True)
    src, tgt = randn(S, N, E), randn(L, N, E, seed=2)
    mask = Transformer.generate_square_subsequent_mask(L)
    assert torch.equal(mask, nn.Transformer.generate_square_subsequent_mask(L))
    with torch.no_grad():
        expected = theirs(src, tgt, tgt_mask=mask, tgt_is_causal=True)
    # torch -> lux
    ps, st = load_state_dict(ours, theirs.state_dict())
    y, _ = ours((src, tgt, {"tgt_mask": mask}), ps, st)
    torch.testing.assert_close(y, expected)
    y_causal, _ = ours((src, tgt, {"tgt_is_causal": True}), ps, st)
    torch.testing.assert_close(y_causal, expected)
    # lux -> torch: our names are torch's (strict load), values from our own setup
    ps, st = setup(1, ours)
    names = _flat(ps)
    assert {n: t.shape for n, t in names.items()} == {
        n: t.shape for n, t in theirs.state_dict().items()
    }
    for name in ("encoder.layers.1.linear2.weight", "encoder.norm.bias", "decoder.norm.weight"):
        assert name in names
    theirs.load_state_dict(lux.state_dict(ps, st), strict=True)
    y, _ = ours((src, tgt), ps, st)
    with torch.no_grad():
        torch.testing.assert_close(y, theirs(src, tgt))
    # torch's default dropout (0.1): the random keys come from our own setup
    theirs = _torch_transformer(E, H, 1, 1, FF).eval()
    ours = Transformer(E, H, 1, 1, FF)
    ps, st = load_state_dict(ours, {**theirs.state_dict(), **_flat(setup(0, ours)[1])})
    y, _ = ours((src, tgt), ps, test_mode(st))
    with torch.no_grad():
        torch.testing.assert_close(y, theirs(src, tgt))


def test_transformer_initialisation_is_torchs_xavier():
    model = Transformer(64, 4, 1, 1, dim_feedforward=96)
    ps, _ = setup(0, model)
    flat = _flat(ps)
    for name, t in flat.items():
        if t.dim() > 1:  # torch's _reset_parameters: Xavier-uniform for every matrix
            bound = (6 / (t.shape[0] + t.shape[1])) ** 0.5
            assert 0.95 * bound < float(t.abs().max()) <= bound, name
            assert abs(float(t.std()) - bound / 3**0.5) < 0.1 * bound, name
    assert torch.equal(flat["encoder.norm.weight"], torch.ones(64))
    assert torch.equal(flat["decoder.layers.0.multihead_attn.in_proj_bias"], torch.zeros(192))
    fan_in_bound = 1 / 64**0.5  # biases keep Linear's default, as torch
    assert float(flat["encoder.layers.0.linear1.bias"].abs().max()) <= fan_in_bound
    matrices = [t for t in flat.values() if t.dim() > 1]
    assert len({float(t.reshape(-1)[0]) for t in matrices}) == len(matrices)  # independent


def test_transformer_custom_stacks_and_errors():
    encoder = TransformerEncoder(TransformerEncoderLayer(E, H, FF, dropout=0.0), 1)
    model = Transformer(E, H, custom_encoder=encoder, dim_feedforward=FF, num_decoder_layers=1)
    assert model.encoder is encoder and "norm" not in setup(0, model)[0]["encoder"]
    ps, st = setup(0, model)
    src, tgt = randn(S, N, E), randn(L, N, E, seed=2)
    assert model((src, tgt), ps, test_mode(st))[0].shape == (L, N, E)
    with pytest.raises(ValueError, match=r"(?s)batch sizes differ.*\nin Transformer\(d_model"):
        model((src, randn(L, 3, E)), ps, st)
    with pytest.raises(ValueError, match=r"Transformer: src and tgt must have d_model=8"):
        model((src, randn(L, N, 4)), ps, st)
    with pytest.raises(ValueError, match=r"Transformer: unknown call option 'mask'"):
        model((src, tgt, {"mask": None}), ps, st)
    with pytest.raises(
        ValueError, match=r"Transformer: call option 'tgt_is_causal' must be a bool"
    ):
        model((src, tgt, {"tgt_is_causal": torch.tensor(True)}), ps, st)
    with pytest.raises(
        ValueError, match=r"(?s)in encoder\.layers\.0\.self_attn .*: expected attn_mask"
    ):
        model((src, tgt, {"src_mask": torch.zeros(L, L, dtype=torch.bool)}), ps, st)
    with pytest.raises(
        ValueError, match=r"(?s)in decoder\.layers\.0\.multihead_attn .*: expected attn_mask"
    ):
        model((src, tgt, {"memory_mask": torch.zeros(L, L, dtype=torch.bool)}), ps, st)
    with pytest.raises(ValueError, match=r"Transformer: expected a tuple \(src, tgt\)"):
        model(src, ps, st)
    with pytest.raises(TypeError, match="Transformer: custom_decoder must be a Layer"):
        Transformer(E, H, custom_decoder=nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Transformer: num_encoder_layers must be >= 1"):
        Transformer(E, H, 0)
    with pytest.raises(ValueError, match=r"divisible by num_heads"):
        Transformer(E, 3)
    text = repr(Transformer(E, H, 1, 1, FF))
    assert text.startswith("Transformer(\n    d_model=8, nhead=2,")
    assert "encoder = TransformerEncoder(" in text and "decoder = TransformerDecoder(" in text
