"""Pooling: MaxPool, AvgPool, LPPool (1d/2d/3d), AdaptiveAvgPool/AdaptiveMaxPool (1d/2d/3d),
GlobalAvgPool and GlobalMaxPool.

Every configuration goes through the conformance harness with the ``torch.nn`` module built
from the same arguments as its reference (the global pools: a plain callable), in float32
and float64 (``helpers.check``: the float64 run skips compilation). One 2-d configuration
per family is compiled with inductor (the 1-d and 3-d classes share its code path), the
others with ``aot_eager`` (graph capture without code generation: inductor compiles C++
per graph, seconds each on 2 cores).

Inputs are random permutations of distinct values (gaps >= 4 / numel, far above
gradcheck's eps = 1e-6): max pooling is not differentiable at ties, and with ties the
returned indices could legitimately differ. Power-average pooling with a fractional, odd
or infinite ``norm_type`` gets positive inputs (``x ** p`` of a negative ``x`` is NaN
there, in torch as here).

The layers have neither parameters nor state, so the harness's vmap-over-ensembles check
is skipped (it says so); ``test_vmap_over_inputs`` covers vmap of the forward pass instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, assert_stateless_passed, check
from torch import nn

import lux_torch as lux
from lux_torch import random as lrandom
from lux_torch.core import param_count, setup, state_count
from lux_torch.layers import pooling as P
from lux_torch.testing import check_layer

INF = math.inf


def distinct(*shape: int, dtype: torch.dtype = torch.float32, positive: bool = False):
    """Distinct values (a random permutation) in ``(-2, 2)``, or ``(0, 1]`` if positive."""
    n = math.prod(shape)
    perm = lrandom.permutation(lrandom.key(7), n).to(torch.float64)
    x = (perm + 1) / n if positive else ((perm + 0.5) / n - 0.5) * 4
    return x.reshape(shape).to(dtype)


# (class name, positional args, keyword args shared by lux and torch.nn, input shape,
#  positive input, compile backend (None: aot_eager))
CASES: list[tuple[str, tuple[Any, ...], dict[str, Any], tuple[int, ...], bool, str | None]] = [
    ("MaxPool1d", (3,), {}, (2, 3, 8), False, None),
    (
        "MaxPool1d",
        (3,),
        {"stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True},
        (2, 3, 10),
        False,
        None,
    ),
    ("MaxPool1d", (2,), {"padding": 1, "return_indices": True}, (3, 7), False, None),  # unbatched
    (
        "MaxPool2d",
        (3,),
        {"stride": 2, "padding": 1, "return_indices": True},
        (2, 2, 5, 5),
        False,
        "inductor",
    ),
    ("MaxPool2d", (2,), {}, (2, 3, 6, 6), False, None),
    (
        "MaxPool2d",
        ((3, 2),),
        {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "ceil_mode": True},
        (2, 2, 8, 6),
        False,
        None,
    ),
    ("MaxPool3d", (2,), {}, (1, 2, 4, 4, 4), False, None),
    (
        "MaxPool3d",
        ((2, 3, 2),),
        {
            "stride": (1, 2, 2),
            "padding": (1, 1, 0),
            "dilation": (2, 1, 1),
            "return_indices": True,
            "ceil_mode": True,
        },
        (1, 2, 5, 5, 4),
        False,
        None,
    ),
    ("AvgPool1d", (3,), {}, (2, 3, 8), False, None),
    (
        "AvgPool1d",
        (3,),
        {"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
        (2, 3, 8),
        False,
        None,
    ),
    ("AvgPool1d", (2,), {"padding": 1}, (3, 7), False, None),  # unbatched
    ("AvgPool2d", (2,), {}, (2, 3, 6, 6), False, "inductor"),
    (
        "AvgPool2d",
        ((3, 2),),
        {"stride": (2, 1), "padding": 1, "ceil_mode": True, "count_include_pad": False},
        (2, 2, 6, 5),
        False,
        None,
    ),
    (
        "AvgPool2d",
        (3,),
        {"stride": 2, "padding": 1, "divisor_override": 4},
        (2, 2, 5, 5),
        False,
        None,
    ),
    ("AvgPool3d", (2,), {}, (1, 2, 4, 4, 4), False, None),
    (
        "AvgPool3d",
        ((3, 2, 2),),
        {
            "stride": 2,
            "padding": (1, 0, 1),
            "ceil_mode": True,
            "count_include_pad": False,
            "divisor_override": 3,
        },
        (1, 2, 5, 4, 5),
        False,
        None,
    ),
    ("LPPool1d", (2, 3), {}, (2, 3, 9), False, None),
    ("LPPool1d", (1.5, 3), {"stride": 2, "ceil_mode": True}, (2, 3, 8), True, None),
    ("LPPool1d", (INF, 2), {}, (3, 8), True, None),  # unbatched; max pooling of |x|
    ("LPPool2d", (2, 2), {}, (2, 3, 6, 6), False, "inductor"),
    ("LPPool2d", (3, (3, 2)), {"stride": (1, 2), "ceil_mode": True}, (2, 2, 5, 5), True, None),
    ("LPPool3d", (2, 2), {}, (1, 2, 4, 4, 4), False, None),
    ("LPPool3d", (1.5, (2, 1, 2)), {"stride": (1, 2, 1)}, (1, 2, 4, 5, 4), True, None),
    ("AdaptiveAvgPool1d", (4,), {}, (2, 3, 9), False, None),
    ("AdaptiveAvgPool1d", ((3,),), {}, (3, 7), False, None),  # unbatched
    ("AdaptiveAvgPool2d", ((3, 4),), {}, (2, 2, 7, 9), False, "inductor"),
    ("AdaptiveAvgPool2d", ((None, 2),), {}, (2, 2, 5, 6), False, None),
    ("AdaptiveAvgPool2d", (1,), {}, (3, 4, 5), False, None),  # unbatched
    ("AdaptiveAvgPool3d", ((2, None, 3),), {}, (1, 2, 5, 4, 7), False, None),
    ("AdaptiveAvgPool3d", (2,), {}, (1, 2, 3, 4, 5), False, None),
    ("AdaptiveMaxPool1d", (4,), {}, (2, 3, 9), False, None),
    ("AdaptiveMaxPool1d", (3, True), {}, (3, 7), False, None),  # unbatched, with indices
    ("AdaptiveMaxPool2d", ((3, None),), {}, (2, 2, 7, 5), False, "inductor"),
    ("AdaptiveMaxPool2d", ((2, 3),), {"return_indices": True}, (2, 2, 5, 7), False, None),
    ("AdaptiveMaxPool3d", (2,), {}, (1, 2, 4, 5, 3), False, None),
    (
        "AdaptiveMaxPool3d",
        ((None, 2, 3),),
        {"return_indices": True},
        (1, 2, 3, 5, 7),
        False,
        None,
    ),
]


def _case_id(case) -> str:
    name, args, kw, shape, _, backend = case
    options = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"{name}{args}[{options}]x{shape}{'-inductor' if backend else ''}".replace(" ", "")


def _returns_indices(layer) -> bool:
    return getattr(layer, "return_indices", False)


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_pooling_matches_torch(case, dtype):
    name, args, kw, shape, positive, backend = case
    layer = getattr(P, name)(*args, **kw)
    reference = getattr(nn, name)(*args, **kw)
    report = check(
        layer,
        distinct(*shape, dtype=dtype, positive=positive),
        dtype,
        reference=reference,
        compile_backend=backend or "aot_eager",
    )
    assert_stateless_passed(report, dtype)
    assert report["vmap"] == "skipped: the layer has no parameters or state to vmap over"


GLOBAL_SHAPES = [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GLOBAL_SHAPES, ids=str)
@pytest.mark.parametrize(
    ("layer", "reduce"),
    [(P.GlobalAvgPool(), torch.mean), (P.GlobalMaxPool(), torch.amax)],
    ids=["GlobalAvgPool", "GlobalMaxPool"],
)
def test_global_pooling_matches_the_reduction(layer, reduce, shape, dtype):
    dims = tuple(range(2, len(shape)))
    report = check(
        layer,
        distinct(*shape, dtype=dtype),
        dtype,
        reference=lambda tensors, x: reduce(x, dim=dims, keepdim=True),
        # inductor once per class (4-d input), graph capture for the others
        compile_backend="inductor" if len(shape) == 4 else "aot_eager",
    )
    assert_stateless_passed(report, dtype)


# --------------------------------------------------------------------------- indices


INDEX_CASES = [c for c in CASES if c[2].get("return_indices") or c[1][-1] is True]


@pytest.mark.parametrize("case", INDEX_CASES, ids=_case_id)
def test_indices_equal_torchs(case):
    # check_layer's parity compares every output leaf, integer ones bitwise; this states it
    # directly, and that the indices are the ones MaxUnpool expects (for MaxPool)
    name, args, kw, shape, _, _ = case
    layer = getattr(P, name)(*args, **kw)
    x = distinct(*shape)
    (y, indices), st = layer(x, {}, {})
    y_ref, indices_ref = getattr(nn, name)(*args, **kw)(x)
    assert indices.dtype == torch.int64 and torch.equal(indices, indices_ref)
    assert torch.equal(y, y_ref) and st == {}
    # each index points at its maximum within the (flattened) input plane
    n = layer.ndim
    planes = x.flatten(-n)
    assert torch.equal(planes.gather(-1, indices.flatten(-n)).reshape(y.shape), y)


def test_the_harness_compares_the_indices():
    # a reference whose values agree but whose indices differ must fail parity: the harness
    # does compare integer outputs (exactly), so the conformance runs above check indices
    layer = P.MaxPool2d(2, return_indices=True)

    def off_by_one(tensors, x):
        values, indices = F.max_pool2d(x, 2, return_indices=True)
        return values, indices + 1

    with pytest.raises(
        AssertionError,
        match=r"(?s)parity failed.*y\[1\]: 8 of 8 elements differ \(bitwise equality\)",
    ):
        check_layer(layer, distinct(1, 2, 4, 4), reference=off_by_one, compile=False)


# --------------------------------------------------------------------------- semantics


def test_no_parameters_and_no_state():
    for name in P.__all__:
        cls = getattr(P, name)
        layer = cls() if name.startswith("Global") else cls(*(2, 2) if "LP" in name else (2,))
        assert setup(0, layer) == ({}, {})
        assert param_count(layer) == 0 and state_count(layer) == 0


@pytest.mark.parametrize(
    "layer",
    [
        P.MaxPool1d(3, 2, 1),
        P.AvgPool2d(3, 2, 1, count_include_pad=False),
        P.LPPool2d(2, 2),
        P.AdaptiveMaxPool2d((2, None)),
        P.AdaptiveAvgPool3d(2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_unbatched_input_equals_a_batch_of_one(layer):
    n = layer.ndim
    x = distinct(2, 3, *(6,) * n)
    torch.testing.assert_close(layer(x[1], {}, {})[0], layer(x, {}, {})[0][1])


@pytest.mark.parametrize(
    "layer",
    [
        P.MaxPool2d(2, return_indices=True),
        P.AvgPool1d(3, 2, 1),
        P.LPPool1d(2, 2),
        P.AdaptiveAvgPool2d((3, None)),
        P.AdaptiveMaxPool1d(2),
        P.GlobalMaxPool(),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_vmap_over_inputs(layer):
    xs = distinct(3, 2, 3, 6, 6) if "2d" in type(layer).__name__ else distinct(3, 2, 3, 6)
    got = torch.func.vmap(lambda x: layer(x, {}, {})[0])(xs)
    expected = lux.tree.stack([layer(x, {}, {})[0] for x in xs])
    assert lux.tree.allclose(got, expected)


def test_outputs_equal_the_functional_pooling():
    x = distinct(2, 3, 7, 6)
    y, st = P.MaxPool2d(3, 2, 1, 1, False, True)(x, {}, {})  # positional, in torch's order
    assert torch.equal(y, F.max_pool2d(x, 3, 2, 1, 1, ceil_mode=True)) and st == {}
    y, _ = P.AvgPool2d(3, 2, 1, True, False, 2)(x, {}, {})
    assert torch.equal(y, F.avg_pool2d(x, 3, 2, 1, True, False, 2))
    y, _ = P.LPPool2d(2, 3, 2, True)(x, {}, {})
    assert torch.equal(y, F.lp_pool2d(x, 2, 3, 2, True))


def test_adaptive_output_size_none_keeps_the_input_size():
    x = distinct(2, 3, 5, 7)
    y, _ = P.AdaptiveAvgPool2d((None, 3))(x, {}, {})
    assert y.shape == (2, 3, 5, 3)
    assert torch.equal(y, F.adaptive_avg_pool2d(x, (5, 3)))
    # torch.nn's 1-d layers do not accept None; here it means what it means in 2-d and 3-d
    x1 = distinct(2, 3, 7)
    y1, _ = P.AdaptiveMaxPool1d((None,))(x1, {}, {})
    assert torch.equal(y1, x1)
    assert P.AdaptiveAvgPool3d(2).output_size == (2, 2, 2)
    assert P.AdaptiveAvgPool2d([None, 4]).output_size == (None, 4)


def test_global_pooling_keeps_size_one_dimensions():
    x = distinct(2, 3, 4, 5)
    y, st = P.GlobalAvgPool()(x, {}, {})
    assert y.shape == (2, 3, 1, 1) and st == {}
    torch.testing.assert_close(y, nn.AdaptiveAvgPool2d(1)(x))
    y, _ = P.GlobalMaxPool()(x, {}, {})
    assert torch.equal(y, nn.AdaptiveMaxPool2d(1)(x))
    model = lux.Chain(P.GlobalAvgPool(), lux.Flatten())
    assert model(x, *setup(0, model))[0].shape == (2, 3)


def test_layers_are_immutable_normalised_and_compare_by_configuration():
    layer = P.MaxPool2d(3, padding=1)
    assert layer.kernel_size == (3, 3) and layer.padding == (1, 1) and layer.dilation == (1, 1)
    # stride=None stays None ("the kernel size", as torch), so replace keeps meaning it
    assert layer.stride is None
    assert dataclasses.replace(layer, kernel_size=2).stride is None
    assert layer == P.MaxPool2d((3, 3), padding=[1, 1])
    assert hash(layer) == hash(P.MaxPool2d([3, 3], None, 1))
    assert layer != P.MaxPool2d(3) and layer != P.MaxPool3d(3, padding=1)
    assert layer != P.AvgPool2d(3, padding=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.stride = 2  # type: ignore[misc]
    assert dataclasses.replace(layer, stride=2).stride == (2, 2)
    x = distinct(1, 2, 6, 6)
    assert torch.equal(P.MaxPool2d(2)(x, {}, {})[0], P.MaxPool2d(2, stride=2)(x, {}, {})[0])
    # AvgPool1d has no divisor_override, as torch.nn.AvgPool1d
    with pytest.raises(TypeError):
        P.AvgPool1d(2, divisor_override=2)  # type: ignore[call-arg]


def test_printouts():
    assert repr(P.MaxPool2d(2)) == "MaxPool2d((2, 2))  # 0 parameters"
    assert repr(P.MaxPool2d(3, 2, 1, dilation=(1, 2), return_indices=True, ceil_mode=True)) == (
        "MaxPool2d((3, 3), stride=2, padding=1, dilation=(1, 2), return_indices=True, "
        "ceil_mode=True)  # 0 parameters"
    )
    assert repr(
        P.AvgPool3d((2, 2, 1), padding=(1, 0, 0), count_include_pad=False, divisor_override=3)
    ) == (
        "AvgPool3d((2, 2, 1), padding=(1, 0, 0), count_include_pad=False, "
        "divisor_override=3)  # 0 parameters"
    )
    assert repr(P.LPPool1d(2, 3, stride=2)) == "LPPool1d(2, (3,), stride=2)  # 0 parameters"
    assert repr(P.LPPool2d(INF, 2)) == "LPPool2d(inf, (2, 2))  # 0 parameters"
    assert repr(P.AdaptiveAvgPool2d((5, None))) == "AdaptiveAvgPool2d((5, None))  # 0 parameters"
    assert repr(P.AdaptiveMaxPool1d(3, return_indices=True)) == (
        "AdaptiveMaxPool1d((3,), return_indices=True)  # 0 parameters"
    )
    assert repr(P.GlobalMaxPool()) == "GlobalMaxPool()  # 0 parameters"
    model = lux.Chain(lux.Conv2d(1, 4, 3), P.MaxPool2d(2), P.GlobalAvgPool())
    assert "layer_2 = MaxPool2d((2, 2)),        # 0 parameters" in repr(model)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: P.MaxPool2d(0), ValueError, r"MaxPool2d: kernel_size must be >= 1, got 0"),
        (lambda: P.AvgPool1d(2, stride=0), ValueError, r"AvgPool1d: stride must be >= 1, got 0"),
        (
            lambda: P.LPPool2d(2, 2, stride=(1, -1)),
            ValueError,
            r"LPPool2d: stride must be >= 1, got -1",
        ),
        (lambda: P.MaxPool1d(3, padding=-1), ValueError, r"MaxPool1d: padding must be >= 0"),
        (lambda: P.MaxPool3d(3, dilation=0), ValueError, r"MaxPool3d: dilation must be >= 1"),
        (
            lambda: P.MaxPool2d(3, padding=2),
            ValueError,
            r"MaxPool2d: padding must be at most half of kernel_size in each dimension "
            r"\(as torch\), got padding=2 and kernel_size=3",
        ),
        (
            # torch's rule uses the kernel size, not the dilated extent
            lambda: P.MaxPool1d(3, padding=2, dilation=2),
            ValueError,
            r"MaxPool1d: padding must be at most half of kernel_size",
        ),
        (
            lambda: P.AvgPool2d((4, 3), padding=(2, 2)),
            ValueError,
            r"AvgPool2d: padding must be at most half of kernel_size in each dimension "
            r"\(as torch\), got padding=2 and kernel_size=\(4, 3\)",
        ),
        (
            lambda: P.MaxPool2d((3, 3, 3)),
            ValueError,
            r"MaxPool2d: kernel_size must be an int or a tuple of 2 ints, got \(3, 3, 3\)",
        ),
        (
            lambda: P.AvgPool3d(2, stride=(1, 1)),
            ValueError,
            r"AvgPool3d: stride must be an int or a tuple of 3 ints",
        ),
        (
            lambda: P.MaxPool2d(2.0),  # type: ignore[arg-type]
            TypeError,
            r"MaxPool2d: kernel_size must be an int or a tuple of 2 ints, got float",
        ),
        (lambda: P.AvgPool2d((2, True)), TypeError, r"AvgPool2d: kernel_size must be an int"),
        (
            lambda: P.MaxPool2d(2, return_indices=1),  # type: ignore[arg-type]
            TypeError,
            r"MaxPool2d: return_indices must be a bool, got int",
        ),
        (
            lambda: P.MaxPool1d(2, ceil_mode="yes"),  # type: ignore[arg-type]
            TypeError,
            r"MaxPool1d: ceil_mode must be a bool, got str",
        ),
        (
            lambda: P.AvgPool2d(2, count_include_pad=None),  # type: ignore[arg-type]
            TypeError,
            r"AvgPool2d: count_include_pad must be a bool, got NoneType",
        ),
        (
            lambda: P.LPPool1d(2, 2, ceil_mode=0),  # type: ignore[arg-type]
            TypeError,
            r"LPPool1d: ceil_mode must be a bool, got int",
        ),
        (
            lambda: P.AvgPool2d(2, divisor_override=0),
            ValueError,
            r"AvgPool2d: divisor_override must be >= 1, got 0",
        ),
        (
            lambda: P.AvgPool3d(2, divisor_override=2.0),  # type: ignore[arg-type]
            TypeError,
            r"AvgPool3d: divisor_override must be an int, got float",
        ),
        (lambda: P.LPPool2d(0, 2), ValueError, r"LPPool2d: norm_type must be > 0, got 0"),
        (lambda: P.LPPool1d(-1.5, 2), ValueError, r"LPPool1d: norm_type must be > 0, got -1.5"),
        (lambda: P.LPPool1d(math.nan, 2), ValueError, r"LPPool1d: norm_type must be > 0"),
        (lambda: P.LPPool2d(True, 2), TypeError, r"LPPool2d: norm_type must be a number"),
        (lambda: P.LPPool2d("2", 2), TypeError, r"LPPool2d: norm_type must be a number, got str"),  # type: ignore[arg-type]
        (
            lambda: P.AdaptiveAvgPool2d(0),
            ValueError,
            r"AdaptiveAvgPool2d: output_size must be >= 1, got 0",
        ),
        (
            lambda: P.AdaptiveMaxPool3d((2, None, -1)),
            ValueError,
            r"AdaptiveMaxPool3d: output_size must be >= 1, got -1",
        ),
        (
            lambda: P.AdaptiveAvgPool2d((2, 2, 2)),
            ValueError,
            r"AdaptiveAvgPool2d: output_size must be an int or a tuple of 2 ints or None, "
            r"got \(2, 2, 2\) \(3 values\)",
        ),
        (
            lambda: P.AdaptiveAvgPool1d(None),  # type: ignore[arg-type]
            TypeError,
            r"AdaptiveAvgPool1d: output_size must be an int or a tuple of 1 ints or None, "
            r"got NoneType",
        ),
        (
            lambda: P.AdaptiveMaxPool2d((2, 2.5)),  # type: ignore[arg-type]
            TypeError,
            r"AdaptiveMaxPool2d: output_size must be an int, got float",
        ),
        (
            lambda: P.AdaptiveMaxPool2d(2, return_indices="no"),  # type: ignore[arg-type]
            TypeError,
            r"AdaptiveMaxPool2d: return_indices must be a bool, got str",
        ),
    ],
)
def test_bad_configuration_is_rejected_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_torch_rejects_the_same_padding():
    # torch checks it when it runs; the binding rule is half the kernel size (dilation 2
    # would allow padding 2 under an "effective kernel size" rule, torch does not)
    cases: list[tuple[Callable[..., torch.Tensor], tuple[Any, ...]]] = [
        (F.max_pool2d, (3, 1, 2)),
        (F.max_pool1d, (3, 1, 2, 2)),
        (F.max_pool3d, (3, 1, 2, 2)),
        (F.avg_pool2d, ((4, 3), 1, 2)),
    ]
    for pool, args in cases:
        x = torch.zeros(1, 1, *(9,) * int(pool.__name__[-2]))
        with pytest.raises(RuntimeError, match=r"at most half|half of kernel size"):
            pool(x, *args)
    F.max_pool1d(torch.zeros(1, 1, 9), 2, 1, 1, 2)  # padding = kernel_size / 2 is fine


def test_bad_inputs_name_the_layer_and_the_expected_shape():
    model = lux.Chain(lux.Flatten(), P.MaxPool2d(2))
    ps, st = setup(0, model)
    with pytest.raises(RuntimeError, match=r"layer_2 \(MaxPool2d\(\(2, 2\)\)\)") as info:
        model(distinct(2, 3, 4, 4), ps, st)
    assert "expected input of shape (N, C, H, W) or (C, H, W), got (2, 48)" in "\n".join(
        info.value.__notes__
    )
    for layer, shape, expected in [
        (P.AvgPool1d(2), (2, 3, 4, 4), r"\(N, C, L\) or \(C, L\), got \(2, 3, 4, 4\)"),
        (P.LPPool3d(2, 2), (2, 4, 4), r"\(N, C, D, H, W\) or \(C, D, H, W\), got \(2, 4, 4\)"),
        (P.AdaptiveAvgPool2d(2), (2, 3, 4, 4, 4), r"\(N, C, H, W\) or \(C, H, W\), got"),
        (P.AdaptiveMaxPool1d(2), (2, 3, 4, 4), r"\(N, C, L\) or \(C, L\), got \(2, 3, 4, 4\)"),
        (
            P.MaxPool2d(3, dilation=2, padding=1),
            (1, 2, 2, 6),
            r"with \(H, W\) >= \(3, 3\), got \(1, 2, 2, 6\)",
        ),
        (P.AvgPool1d(4), (1, 2, 3), r"with \(L\) >= \(4,\), got \(1, 2, 3\)"),
    ]:
        with pytest.raises(RuntimeError, match=expected):
            layer(distinct(*shape), {}, {})
    with pytest.raises(Exception, match=r"expected a Tensor, got list"):
        P.MaxPool1d(2)([1.0, 2.0], {}, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("layer", [P.GlobalAvgPool(), P.GlobalMaxPool()], ids=repr)
def test_global_pooling_needs_a_spatial_dimension(layer):
    # mean/amax over no dimension would reduce over all of them: refuse (N, C) and (C,)
    name = type(layer).__name__
    with pytest.raises(
        ValueError,
        match=rf"{name}: expected input of shape \(N, C, \*spatial\) with at least one "
        r"spatial dimension, got \(4, 3\)",
    ):
        layer(distinct(4, 3), {}, {})


# --------------------------------------------------------------------------- max unpooling


# (dimensions, MaxPool/MaxUnpool arguments, input shape, output_size option or None,
#  compile backend (None: aot_eager)). Windows do not overlap: overlapping ones can pick
# one maximum twice, and unpooling then writes one position twice (which write lands is
# unspecified, in torch as here), so its gradient is not defined there.
UNPOOL_CASES = [
    (1, (2,), (2, 3, 8), None, None),
    (1, (3, 3, 1), (3, 9), (9,), None),  # unbatched; the default size would be 7
    (2, (2,), (2, 3, 6, 6), None, "inductor"),
    (2, ((3, 2), (3, 2), (1, 0)), (1, 2, 6, 5), (6, 5), None),
    (2, (3, 3, 1), (2, 2, 6, 6), (6, 6), None),  # the default size would be 4 x 4
    (2, (2,), (2, 3, 5, 5), (2, 3, 5, 5), None),  # a full output_size, as torch accepts
    (2, ((2, 1),), (2, 3, 4, 3), None, None),
    (3, (2,), (1, 2, 4, 4, 4), None, None),
    (3, (2,), (2, 5, 5, 5), (5, 5, 5), None),  # unbatched
]


def _unpool_id(case) -> str:
    n, args, shape, size, backend = case
    return f"{n}d{args}x{shape}{f'->{size}' if size else ''}{'-inductor' if backend else ''}"


def _pooled(n: int, args: tuple, shape: tuple, dtype: torch.dtype = torch.float32):
    """``(values, indices)`` of torch's max pooling of a distinct-valued input."""
    return getattr(nn, f"MaxPool{n}d")(*args, return_indices=True)(distinct(*shape, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UNPOOL_CASES, ids=_unpool_id)
def test_max_unpool_matches_torch(case, dtype):
    n, args, shape, size, backend = case
    layer = getattr(P, f"MaxUnpool{n}d")(*args)
    module = getattr(nn, f"MaxUnpool{n}d")(*args)
    values, indices = _pooled(n, args, shape, dtype)
    x: tuple[Any, ...]
    if size is None:
        x, reference = (values, indices), module
    else:  # the call option: torch's keyword argument of forward
        x = (values, indices, {"output_size": size})
        reference = lambda tensors, v, i, options: module(v, i, **options)  # noqa: E731
    report = check(layer, x, dtype, reference=reference, compile_backend=backend or "aot_eager")
    for check_name in ("parity", "gradcheck", "purity", "determinism", "vmap_inputs"):
        assert report[check_name] == "passed", check_name
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")
    y, _ = layer(x, {}, {})
    assert y.shape == module(values, indices, output_size=size).shape


def test_max_unpool_inverts_max_pool_at_the_maxima():
    # MaxPool then MaxUnpool keeps each window's maximum in place and zeroes the rest
    x = distinct(2, 3, 6, 6)
    (y, indices), _ = P.MaxPool2d(2, return_indices=True)(x, {}, {})
    z, st = P.MaxUnpool2d(2)((y, indices), {}, {})
    assert z.shape == x.shape and st == {}
    kept = z != 0
    assert int(kept.sum()) == y.numel() and torch.equal(z[kept], x[kept])


def test_max_unpool_configuration_and_repr():
    assert repr(P.MaxUnpool2d(2)).startswith("MaxUnpool2d((2, 2))")
    text = repr(P.MaxUnpool3d((2, 1, 2), stride=1, padding=(0, 0, 1)))
    assert "stride=1" in text and "padding=(0, 0, 1)" in text
    assert P.MaxUnpool1d(2) == P.MaxUnpool1d((2,), None, 0)
    with pytest.raises(ValueError, match="MaxUnpool2d: kernel_size must be >= 1"):
        P.MaxUnpool2d(0)
    with pytest.raises(ValueError, match=r"MaxUnpool1d: padding must be an int or a tuple of 1"):
        P.MaxUnpool1d(2, padding=(1, 1))
    with pytest.raises(TypeError, match="MaxUnpool3d: stride must be an int"):
        P.MaxUnpool3d(2, stride=1.5)  # type: ignore[arg-type]
    assert param_count(P.MaxUnpool2d(2)) == state_count(P.MaxUnpool2d(2)) == 0


def test_max_unpool_input_errors_name_the_layer():
    layer = P.MaxUnpool2d(2)
    values, indices = _pooled(2, (2,), (1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"MaxUnpool2d: expected a tuple \(x, indices\)"):
        layer(values, {}, {})
    with pytest.raises(ValueError, match=r"MaxUnpool2d: unknown call option 'size'"):
        layer((values, indices, {"size": (4, 4)}), {}, {})
    with pytest.raises(ValueError, match=r"MaxUnpool2d: .*got a third item of type tuple"):
        layer((values, indices, (4, 4)), {}, {})
    with pytest.raises(RuntimeError, match=r"(?s)shape of indices.*int64 indices of the shape"):
        layer((values, indices[..., :1]), {}, {})
    with pytest.raises(RuntimeError, match=r"(?s)int64.*got torch.int32 indices"):
        layer((values, indices.int()), {}, {})
    with pytest.raises(RuntimeError, match="invalid max index"):  # torch's CPU check
        layer((values, indices + 100), {}, {})
    assert layer.describe_input_error((values, indices)) is None
