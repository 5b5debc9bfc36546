"""Padding layers: ZeroPad, ConstantPad, ReflectionPad, ReplicationPad, CircularPad (1d-3d).

Every configuration goes through the conformance harness with the ``torch.nn`` module built
from the same arguments as its reference, in float32 and float64 (``helpers.check``: the
float64 run skips compilation). One 2-d configuration per padding mode is compiled with
inductor (the 1-d and 3-d classes share its code path), the others with ``aot_eager``
(graph capture without code generation). The layers have neither parameters nor state, so
the harness's vmap check runs over stacked inputs (``vmap_inputs``).
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, assert_stateless_passed, check, randn
from torch import nn

import lux_torch as lux
from lux_torch.core import param_count, setup, state_count
from lux_torch.layers import padding as P

KINDS = ["Zero", "Constant", "Reflection", "Replication", "Circular"]
MODES = {
    "Zero": "constant",
    "Constant": "constant",
    "Reflection": "reflect",
    "Replication": "replicate",
    "Circular": "circular",
}
# padding arguments per dimension count: an int, an asymmetric tuple, one with a crop
PADDINGS = {
    1: [2, (1, 3), (2, -1)],
    2: [1, (1, 0, 2, 1), (0, 2, -1, 1)],
    3: [1, (1, 0, 2, 1, 0, 1), (1, -1, 0, 1, 1, 0)],
}
# batched and unbatched inputs; spatial sizes exceed every padding (reflection needs that)
SHAPES = {1: [(2, 3, 5), (3, 5)], 2: [(2, 3, 4, 5), (3, 4, 5)], 3: [(1, 2, 3, 4, 5), (2, 3, 4, 5)]}


def _args(kind: str, padding) -> tuple:
    return (padding, 1.5) if kind == "Constant" else (padding,)


CASES = [
    (f"{kind}Pad{n}d", _args(kind, padding), shape)
    for kind in KINDS
    for n in (1, 2, 3)
    for i, padding in enumerate(PADDINGS[n])
    for shape in SHAPES[n][i % 2 : i % 2 + 1]  # alternate batched / unbatched inputs
]
# inductor once per mode (2-d, first configuration), graph capture for the others
INDUCTOR = {(f"{kind}Pad2d", _args(kind, PADDINGS[2][0])) for kind in KINDS}


def _case_id(case) -> str:
    name, args, shape = case
    return f"{name}{args}x{shape}".replace(" ", "")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_padding_matches_torch(case, dtype):
    name, args, shape = case
    layer = getattr(P, name)(*args)
    report = check(
        layer,
        randn(*shape, dtype=dtype),
        dtype,
        reference=getattr(nn, name)(*args),
        compile_backend="inductor" if (name, args) in INDUCTOR else "aot_eager",
    )
    assert report["vmap_inputs"] == "passed"
    assert_stateless_passed(report, dtype)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_eager_outputs_equal_f_pad(case):
    # the fast eager parity check (no compilation): bitwise equal to F.pad and to torch.nn
    name, args, shape = case
    x = randn(*shape)
    y, st = getattr(P, name)(*args)(x, {}, {})
    value = args[1] if len(args) == 2 else None
    padding = args[0] if isinstance(args[0], tuple) else (args[0],) * (2 * int(name[-2]))
    assert torch.equal(y, F.pad(x, padding, MODES[name.split("Pad")[0]], value))
    assert torch.equal(y, getattr(nn, name)(*args)(x)) and st == {}


# --------------------------------------------------------------------------- semantics


def test_no_parameters_no_state_and_the_printout_is_torchs():
    for name in P.__all__:
        args = _args(name.split("Pad")[0], 2)
        layer = getattr(P, name)(*args)
        assert setup(0, layer) == ({}, {})
        assert param_count(layer) == 0 and state_count(layer) == 0
        assert repr(layer) == f"{getattr(nn, name)(*args)!r}  # 0 parameters"
    assert repr(P.ZeroPad2d((1, 0, 2, 3))) == "ZeroPad2d((1, 0, 2, 3))  # 0 parameters"
    assert repr(P.ConstantPad1d(2, 3.5)) == (
        "ConstantPad1d(padding=(2, 2), value=3.5)  # 0 parameters"
    )


def test_the_layers_are_exported():
    for name in P.__all__:
        assert getattr(lux, name) is getattr(P, name)
        assert name in lux.__all__ and name in lux.layers.__all__


def test_layers_are_immutable_normalised_and_compare_by_configuration():
    layer = P.ReflectionPad2d(1)
    assert layer.padding == (1, 1, 1, 1)
    assert layer == P.ReflectionPad2d((1, 1, 1, 1)) == P.ReflectionPad2d([1, 1, 1, 1])
    assert hash(layer) == hash(P.ReflectionPad2d([1, 1, 1, 1]))
    assert layer != P.ReplicationPad2d(1) and layer != P.ReflectionPad2d(2)
    assert P.ConstantPad1d(1, 0.0) != P.ConstantPad1d(1, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.padding = (2, 2, 2, 2)  # type: ignore[misc]
    assert dataclasses.replace(layer, padding=2).padding == (2, 2, 2, 2)


def test_constant_padding_keeps_any_leading_dimensions_and_crops_with_negative_values():
    x = randn(2, 3, 4, 5, 6)
    y, _ = P.ZeroPad2d((1, -2, 0, 3))(x, {}, {})
    assert y.shape == (2, 3, 4, 8, 5)
    assert torch.equal(y[..., :5, 1:], x[..., :4]) and not y[..., 5:, :].any()
    assert not y[..., 0].any()
    y, _ = P.ConstantPad1d(1, -7.0)(randn(4), {}, {})  # a 1-d input
    assert y.shape == (6,) and y[0] == y[-1] == -7.0


def test_inside_a_chain_with_convolutions():
    model = lux.Chain(P.ReflectionPad2d(1), lux.Conv2d(2, 3, 3), P.CircularPad2d((0, 0, 1, 1)))
    ps, st = setup(0, model)
    y, _ = model(randn(1, 2, 5, 5), ps, st)
    assert y.shape == (1, 3, 7, 5)
    assert "layer_1 = ReflectionPad2d((1, 1, 1, 1))," in repr(model)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: P.ZeroPad2d((1, 2)),
            ValueError,
            r"ZeroPad2d: padding must be an int or a tuple of 4 ints "
            r"\(left, right, top, bottom\), got \(1, 2\) \(2 values\)",
        ),
        (
            lambda: P.ReflectionPad1d((1, 2, 3)),
            ValueError,
            r"ReflectionPad1d: padding must be an int or a tuple of 2 ints \(left, right\)",
        ),
        (
            lambda: P.CircularPad3d((1,) * 4),
            ValueError,
            r"CircularPad3d: .* 6 ints \(left, right, top, bottom, front, back\)",
        ),
        (lambda: P.ZeroPad1d(1.5), TypeError, r"ZeroPad1d: padding must be an int or a tuple"),  # type: ignore[arg-type]
        (lambda: P.ZeroPad1d(True), TypeError, r"ZeroPad1d: padding must be an int"),
        (lambda: P.ReplicationPad1d((1, 2.0)), TypeError, r"padding must be an int, got float"),  # type: ignore[arg-type]
        (lambda: P.ConstantPad2d(1, "0"), TypeError, r"ConstantPad2d: value must be a number"),  # type: ignore[arg-type]
        (lambda: P.ConstantPad2d(1, None), TypeError, r"ConstantPad2d: value must be a number"),  # type: ignore[arg-type]
    ],
)
def test_invalid_arguments_are_rejected_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_padding_tuple_of_the_wrong_length_is_not_silently_accepted():
    # torch.nn.ZeroPad2d((1, 2)) stores the pair and pads one dimension instead of two
    assert nn.ZeroPad2d((1, 2))(randn(1, 1, 3, 3)).shape == (1, 1, 3, 6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tuple of 4 ints"):
        P.ZeroPad2d((1, 2))


@pytest.mark.parametrize("kind", ["Reflection", "Replication", "Circular"])
def test_non_constant_modes_need_a_batched_or_unbatched_input(kind):
    layer = getattr(P, f"{kind}Pad2d")(1)
    for shape in [(4, 5), (1, 2, 3, 4, 5)]:
        message = f"{kind}Pad2d: expected input of shape (N, C, H, W) or (C, H, W), got {shape}"
        with pytest.raises(ValueError, match=re.escape(message)):
            layer(randn(*shape), {}, {})


def test_reflection_padding_larger_than_the_input_names_the_layer():
    with pytest.raises(RuntimeError) as info:
        P.ReflectionPad1d(3)(randn(1, 2, 3), {}, {})
    note = "\n".join(info.value.__notes__)
    assert "in ReflectionPad1d((3, 3))" in note
    assert "reflection padding must be smaller than the padded dimension" in note


def test_constant_padding_of_too_few_dimensions_names_the_layer():
    with pytest.raises(RuntimeError) as info:
        P.ZeroPad3d(1)(randn(4, 5), {}, {})
    assert "expected input of shape (*, D, H, W), got (4, 5)" in "\n".join(info.value.__notes__)
