"""Rearranging layers without parameters: Identity, Unflatten, Fold, Unfold, ChannelShuffle.

Every configuration goes through the conformance harness with the ``torch.nn`` module built
from the same arguments as its reference, in float32 and float64 (``helpers.check``: the
float64 run skips compilation); one configuration per class is compiled with inductor,
the others with ``aot_eager``. ``test_eager_outputs_equal_torchs`` is the fast eager parity
check of every case.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, assert_stateless_passed, check, layer_case_id, randn
from torch import nn

import lux_torch as lux
from lux_torch.core import param_count, setup, state_count

# (class name, positional args, keyword args shared by lux and torch.nn, input shape,
#  compile backend)
CASES: list[tuple[str, tuple[Any, ...], dict[str, Any], tuple[int, ...], str]] = [
    ("Identity", (), {}, (2, 3), "inductor"),
    ("Identity", (54,), {"unused_argument1": 0.1}, (4,), "aot_eager"),
    ("Unflatten", (1, (2, 5)), {}, (3, 10), "inductor"),
    ("Unflatten", (-1, (2, -1, 2)), {}, (2, 3, 12), "aot_eager"),
    ("Unflatten", (0, [3, 1]), {}, (3, 4), "aot_eager"),
    ("Unfold", (2,), {}, (2, 3, 4, 5), "inductor"),
    (
        "Unfold",
        ((2, 3),),
        {"dilation": (1, 2), "padding": 1, "stride": (2, 1)},
        (1, 2, 5, 6),
        "aot_eager",
    ),
    ("Unfold", (3,), {"padding": (1, 0)}, (2, 4, 5), "aot_eager"),  # unbatched
    ("Fold", ((4, 5), 2), {}, (2, 12, 12), "inductor"),
    (
        "Fold",
        ((5, 6), (2, 3)),
        {"dilation": (1, 2), "padding": 1, "stride": (2, 1)},
        (1, 12, 12),
        "aot_eager",
    ),
    ("Fold", (5, 3), {"stride": 2}, (9, 4), "aot_eager"),  # unbatched
    ("ChannelShuffle", (2,), {}, (2, 6, 3), "inductor"),
    ("ChannelShuffle", (3,), {}, (1, 6, 2, 2), "aot_eager"),
    ("ChannelShuffle", (1,), {}, (2, 4, 3), "aot_eager"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=layer_case_id)
def test_layer_matches_torch(case, dtype):
    name, args, kw, shape, backend = case
    report = check(
        getattr(lux, name)(*args, **kw),
        randn(*shape, dtype=dtype),
        dtype,
        reference=getattr(nn, name)(*args, **kw),
        compile_backend=backend,
    )
    assert report["vmap_inputs"] == "passed"
    assert_stateless_passed(report, dtype)


@pytest.mark.parametrize("case", CASES, ids=layer_case_id)
def test_eager_outputs_equal_torchs(case):
    name, args, kw, shape, _ = case
    layer = getattr(lux, name)(*args, **kw)
    x = randn(*shape)
    y, st = layer(x, {}, {})
    assert torch.equal(y, getattr(nn, name)(*args, **kw)(x)) and st == {}
    assert setup(0, layer) == ({}, {}) and param_count(layer) == state_count(layer) == 0


def test_printouts_are_torchs():
    for name, args, kw, _, _ in CASES:
        expected = repr(getattr(nn, name)(*args, **kw)).replace("[3, 1]", "(3, 1)")
        assert repr(getattr(lux, name)(*args, **kw)) == f"{expected}  # 0 parameters"
    model = lux.Chain(lux.Flatten(), lux.Unflatten(1, (4, 3)))
    assert "layer_2 = Unflatten(dim=1, unflattened_size=(4, 3))," in repr(model)


def test_the_layers_are_exported():
    for name in ("Identity", "Unflatten", "Fold", "Unfold", "ChannelShuffle"):
        assert name in lux.__all__ and name in lux.layers.__all__
        assert getattr(lux, name) is getattr(lux.layers, name)


# --------------------------------------------------------------------------- semantics


def test_identity_ignores_its_arguments_and_returns_its_input():
    layer = lux.Identity(3, "any", option=[1])
    assert layer == lux.Identity() and hash(layer) == hash(lux.Identity())
    x = randn(2, 3)
    y, st = layer(x, {}, {})
    assert y is x and st == {}
    assert isinstance(layer, lux.NoOpLayer)  # the same layer, under torch's name
    assert layer != lux.NoOpLayer()


def test_unflatten_undoes_flatten_and_normalises_its_sizes():
    x = randn(2, 3, 4, 5)
    flat, _ = lux.Flatten(1, 2)(x, {}, {})
    assert torch.equal(lux.Unflatten(1, (3, 4))(flat, {}, {})[0], x)
    layer = lux.Unflatten(1, torch.Size([3, 4]))
    assert layer.unflattened_size == (3, 4) and layer == lux.Unflatten(1, [3, 4])
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.dim = 2  # type: ignore[misc]


def test_fold_is_the_adjoint_of_unfold():
    # <unfold(x), c> == <x, fold(c)>: col2im sums the overlapping blocks im2col copied
    kw: dict[str, Any] = {"kernel_size": (2, 3), "dilation": (2, 1), "padding": 1, "stride": (1, 2)}
    x = randn(2, 3, 6, 7)
    cols, _ = lux.Unfold(**kw)(x, {}, {})
    c = randn(*cols.shape, seed=2)
    back, _ = lux.Fold((6, 7), **kw)(c, {}, {})
    torch.testing.assert_close((cols * c).sum(), (x * back).sum())
    assert lux.Fold((6, 7), **kw) == lux.Fold([6, 7], [2, 3], [2, 1], 1, (1, 2))


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).reshape(1, 6, 1)
    y, _ = lux.ChannelShuffle(3)(x, {}, {})
    assert y.flatten().tolist() == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]
    assert torch.equal(y, F.channel_shuffle(x, 3))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: lux.Unflatten(1, 5), TypeError, r"Unflatten: unflattened_size must be a tuple"),  # type: ignore[arg-type]
        (
            lambda: lux.Unflatten(1.0, (2, 2)),  # type: ignore[arg-type]
            TypeError,
            r"Unflatten: dim must be an int, got float",
        ),
        (lambda: lux.Unflatten("features", (("a", 2),)), TypeError, r"named dimensions"),  # type: ignore[arg-type]
        (lambda: lux.Unflatten(1, ()), ValueError, r"non-empty tuple with at most one -1"),
        (lambda: lux.Unflatten(1, (-1, -1)), ValueError, r"at most one -1, got \(-1, -1\)"),
        (lambda: lux.Unflatten(1, (2, 0.5)), TypeError, r"unflattened_size must be an int"),  # type: ignore[arg-type]
        (lambda: lux.Unflatten(1, (2, -3)), ValueError, r"unflattened_size must be >= -1"),
        (lambda: lux.Unfold(0), ValueError, r"Unfold: kernel_size must be >= 1, got 0"),
        (lambda: lux.Unfold(2, padding=-1), ValueError, r"Unfold: padding must be >= 0"),
        (
            lambda: lux.Unfold((2, 2, 2)),  # type: ignore[arg-type]
            ValueError,
            r"Unfold: kernel_size must be an int or a tuple of 2 ints",
        ),
        (lambda: lux.Unfold(2.0), TypeError, r"Unfold: kernel_size must be an int or a tuple"),  # type: ignore[arg-type]
        (lambda: lux.Fold((4, 0), 2), ValueError, r"Fold: output_size must be >= 1, got 0"),
        (lambda: lux.Fold(4, 2, stride=0), ValueError, r"Fold: stride must be >= 1, got 0"),
        (
            lambda: lux.Fold(4, 2, dilation=(1, True)),
            TypeError,
            r"Fold: dilation must be an int, got bool",
        ),
        (lambda: lux.ChannelShuffle(0), ValueError, r"ChannelShuffle: groups must be >= 1, got 0"),
        (lambda: lux.ChannelShuffle(2.0), TypeError, r"ChannelShuffle: groups must be an int"),  # type: ignore[arg-type]
    ],
)
def test_invalid_arguments_are_rejected_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    ("layer", "shape", "note"),
    [
        (
            lux.Unflatten(1, (2, 2)),
            (3, 10),
            "expected input whose dimension 1 has 4 elements to unflatten into (2, 2), "
            "got shape (3, 10)",
        ),
        (lux.Unfold(2), (2, 3), "expected input of shape (N, C, H, W) or (C, H, W), got (2, 3)"),
        (
            lux.Fold((4, 5), 2),
            (2, 10, 12),
            "expected input of shape (N, C * 4, 12) or (C * 4, 12), got (2, 10, 12)",
        ),
        (
            lux.ChannelShuffle(4),
            (2, 6, 3),
            "expected input of shape (N, C, *) with C divisible by 4 and at least one "
            "dimension after C, got (2, 6, 3)",
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, lux.Layer) else None,
)
def test_input_errors_name_the_layer_and_the_expected_shape(layer, shape, note):
    with pytest.raises((RuntimeError, IndexError)) as info:  # torch's own error, annotated
        layer(randn(*shape), {}, {})
    assert note in info.value.__notes__[0]
    assert info.value.__notes__[0].startswith(f"in {type(layer).__name__}(")
