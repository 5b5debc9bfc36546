"""Convolutions: Conv1d/2d/3d and ConvTranspose1d/2d/3d.

Every configuration goes through the conformance harness with the ``torch.nn`` module built
from the same arguments as its reference, in float32 and float64 (``helpers.check``: the
float64 run skips compilation, which does not depend on the dtype). Inductor compiles C++
per graph (seconds each on 2 cores), so one configuration per class is compiled with it
and the others with ``aot_eager``, which checks graph capture (no graph break) and the
traced forward and backward graphs without code generation. Inputs are tiny: gradcheck's
cost grows with them.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import DTYPES, check, ks_statistic, layer_case_id, randn
from torch import nn

import lux_torch as lux
from lux_torch.core import init_params, param_count, setup

# (class name, positional args, keyword args shared by lux and torch.nn, input shape, backend)
CASES = [
    ("Conv1d", (4, 6, 3), {}, (2, 4, 7), "inductor"),
    ("Conv1d", (4, 6, 3), {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}, (2, 4, 9), None),
    # even kernel: 'same' pads 1 before and 2 after
    ("Conv1d", (4, 6, 4), {"padding": "same", "padding_mode": "circular"}, (2, 4, 7), None),
    ("Conv1d", (4, 6, 3), {"padding": "valid", "bias": False}, (2, 4, 7), None),
    ("Conv2d", (4, 6, 3), {"padding": 1}, (2, 4, 5, 5), "inductor"),
    (
        "Conv2d",
        (4, 6, (3, 2)),
        {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2},
        (2, 4, 6, 6),
        None,
    ),
    ("Conv2d", (4, 6, 3), {"padding": "same", "dilation": 2}, (2, 4, 6, 6), None),
    ("Conv2d", (4, 6, 3), {"padding": (1, 2), "padding_mode": "reflect"}, (2, 4, 5, 5), None),
    ("Conv2d", (4, 6, 3), {"padding": (2, 1), "padding_mode": "replicate"}, (2, 4, 4, 5), None),
    (
        "Conv2d",
        (4, 6, 3),
        {"padding": 1, "padding_mode": "circular", "bias": False},
        (2, 4, 4, 4),
        None,
    ),
    ("Conv2d", (4, 6, (2, 3)), {"padding": "same", "padding_mode": "reflect"}, (2, 4, 5, 5), None),
    ("Conv2d", (4, 6, 3), {"padding": 1, "padding_mode": "reflect"}, (4, 4, 5), None),  # unbatched
    ("Conv3d", (2, 4, 2), {}, (2, 2, 3, 3, 3), "inductor"),
    (
        "Conv3d",
        (2, 4, (2, 3, 2)),
        {"stride": (1, 2, 1), "padding": (1, 1, 0), "groups": 2, "padding_mode": "reflect"},
        (1, 2, 4, 4, 4),
        None,
    ),
    (
        "Conv3d",
        (2, 4, 3),
        {"padding": "same", "padding_mode": "replicate", "bias": False},
        (1, 2, 3, 3, 3),
        None,
    ),
    ("Conv3d", (2, 4, 2), {"padding": 1, "padding_mode": "circular"}, (1, 2, 3, 3, 2), None),
    ("ConvTranspose1d", (4, 6, 3), {}, (2, 4, 5), "inductor"),
    (
        "ConvTranspose1d",
        (4, 6, 3),
        {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2, "dilation": 2},
        (2, 4, 5),
        None,
    ),
    # output_padding >= stride is allowed while it is below the dilation
    (
        "ConvTranspose1d",
        (4, 6, 3),
        {"output_padding": 1, "dilation": 2, "bias": False},
        (4, 5),
        None,
    ),
    (
        "ConvTranspose2d",
        (4, 6, 3),
        {"stride": 2, "padding": 1, "output_padding": 1},
        (2, 4, 3, 3),
        "inductor",
    ),
    (
        "ConvTranspose2d",
        (4, 6, (3, 2)),
        {
            "stride": (2, 1),
            "padding": (0, 1),
            "output_padding": (1, 0),
            "groups": 2,
            "dilation": (1, 2),
            "bias": False,
        },
        (2, 4, 3, 3),
        None,
    ),
    ("ConvTranspose3d", (2, 4, 2), {}, (1, 2, 2, 2, 2), "inductor"),
    (
        "ConvTranspose3d",
        (2, 4, 2),
        {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
        (1, 2, 3, 2, 3),
        None,
    ),
]


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=layer_case_id)
def test_conv_matches_torch(case, dtype):
    name, args, kw, shape, backend = case
    layer = getattr(lux, name)(*args, **kw)
    # the reference lives on the meta device: no global RNG is drawn, the harness swaps our
    # tensors in anyway
    reference = getattr(nn, name)(*args, **kw, device="meta")
    report = check(
        layer,
        randn(*shape, dtype=dtype),
        dtype,
        reference=reference,
        compile_backend=backend or "aot_eager",
    )
    for name_ in ("parity", "gradcheck", "vmap", "purity", "determinism"):
        assert report[name_] == "passed", name_
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("name", "args", "kw", "shape"),
    [
        ("Conv2d", (4, 6, 3), {"stride": 2, "padding": 1}, (2, 4, 5, 5)),
        ("ConvTranspose1d", (4, 6, 3), {"stride": 2, "groups": 2}, (2, 4, 5)),
    ],
)
def test_conv_with_activation_matches_torch(name, args, kw, shape, dtype):
    # tanh, not relu: gradcheck's finite differences must not straddle a kink
    layer = getattr(lux, name)(*args, **kw, activation=torch.tanh)
    reference = nn.Sequential(getattr(nn, name)(*args, **kw, device="meta"), nn.Tanh())
    report = check(
        layer,
        randn(*shape, dtype=dtype),
        dtype,
        reference=reference,
        rename=lambda n: f"0.{n}",
        compile_backend="aot_eager",
    )
    assert report["parity"] == "passed" and report["gradcheck"] == "passed"


# --------------------------------------------------------------------------- semantics


def test_outputs_equal_the_functional_convolutions():
    x = randn(2, 4, 6, 6)
    layer = lux.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, activation=torch.relu)
    ps, st = setup(0, layer)
    y, new_st = layer(x, ps, st)
    expected = torch.relu(torch.nn.functional.conv2d(x, ps["weight"], ps["bias"], 2, 1, 1, 2))
    assert torch.equal(y, expected) and new_st == {}
    layer_t = lux.ConvTranspose2d(4, 6, 3, 2, 1, 1)  # positional output_padding, as torch
    assert layer_t.output_padding == (1, 1)
    ps, st = setup(0, layer_t)
    y, _ = layer_t(x, ps, st)
    assert y.shape == (2, 6, 12, 12)
    assert torch.equal(
        y, torch.nn.functional.conv_transpose2d(x, ps["weight"], ps["bias"], 2, 1, 1)
    )


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_unbatched_input_equals_a_batch_of_one(mode):
    layer = lux.Conv1d(3, 2, 3, padding=1, padding_mode=mode)
    ps, st = setup(0, layer)
    x = randn(2, 3, 5)
    # (another kernel may sum in another order: equal up to float32 round-off)
    torch.testing.assert_close(layer(x[1], ps, st)[0], layer(x, ps, st)[0][1])


def test_same_padding_keeps_the_spatial_size():
    for mode in ("zeros", "reflect", "replicate", "circular"):
        layer = lux.Conv2d(2, 3, (3, 5), padding="same", dilation=(2, 1), padding_mode=mode)
        ps, st = setup(0, layer)
        assert layer(randn(1, 2, 7, 6), ps, st)[0].shape == (1, 3, 7, 6)


def test_layers_are_immutable_normalised_and_compare_by_configuration():
    layer = lux.Conv2d(3, 16, 3, padding=1)
    assert layer.kernel_size == (3, 3) and layer.stride == (1, 1) and layer.padding == (1, 1)
    assert layer == lux.Conv2d(3, 16, (3, 3), padding=(1, 1))
    assert hash(layer) == hash(lux.Conv2d(3, 16, [3, 3], 1, 1))
    assert layer != lux.Conv2d(3, 16, 3) and layer != lux.Conv3d(3, 16, 3, padding=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.stride = 2  # type: ignore[misc]
    assert dataclasses.replace(layer, stride=2).stride == (2, 2)
    # arguments after padding (output_padding) are keyword-only: torch.nn orders them
    # differently in the two families, so a positional call could be misread
    with pytest.raises(TypeError):
        lux.Conv2d(3, 16, 3, 1, 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        lux.ConvTranspose2d(3, 16, 3, 1, 1, 0, 2)  # type: ignore[call-arg]


def test_printouts():
    assert repr(lux.Conv2d(3, 16, 3, stride=2, padding=1, activation=torch.relu)) == (
        "Conv2d(3 => 16, (3, 3), stride=2, padding=1, relu)  # 448 parameters"
    )
    assert (
        repr(lux.Conv1d(2, 4, 3, bias=False)) == "Conv1d(2 => 4, (3,), bias=False)  # 24 parameters"
    )
    assert repr(
        lux.Conv2d(4, 8, (3, 1), padding="same", dilation=(2, 1), groups=2, padding_mode="reflect")
    ) == (
        "Conv2d(4 => 8, (3, 1), padding='same', dilation=(2, 1), groups=2, "
        "padding_mode='reflect')  # 56 parameters"
    )
    assert repr(lux.ConvTranspose3d(4, 2, 2, stride=2, output_padding=1, dilation=2)) == (
        "ConvTranspose3d(4 => 2, (2, 2, 2), stride=2, output_padding=1, dilation=2)  "
        "# 66 parameters"
    )
    model = lux.Chain(lux.Conv2d(1, 8, 3, activation=torch.relu), lux.Flatten())
    assert "layer_1 = Conv2d(1 => 8, (3, 3), relu)," in repr(model)


def test_custom_initializers_get_the_torch_shapes():
    seen = []

    def weight_init(key, *shape):
        seen.append(shape)
        return torch.full(shape, 2.0)

    layer = lux.ConvTranspose2d(
        4, 6, (3, 2), groups=2, weight_init=weight_init, bias_init=lambda k, n: torch.ones(n)
    )
    ps = init_params(0, layer)
    # (the layer's shape signature also called it once, on the meta device, at construction)
    assert set(seen) == {(4, 3, 3, 2)}
    assert torch.equal(ps["weight"], torch.full((4, 3, 3, 2), 2.0))
    assert torch.equal(ps["bias"], torch.ones(6))
    assert "weight_init=weight_init, bias_init=<lambda>" in repr(layer)


# --------------------------------------------------------------------------- initialisation


INIT_CASES = [
    ("Conv1d", (8, 64, 5), {"groups": 2}),
    ("Conv2d", (8, 64, 3), {"groups": 4}),
    ("Conv3d", (4, 64, 2), {"groups": 2}),
    ("ConvTranspose1d", (6, 64, 5), {"groups": 2}),
    ("ConvTranspose2d", (4, 64, (3, 2)), {"groups": 2}),
    ("ConvTranspose3d", (2, 64, 2), {}),
]


@pytest.mark.parametrize(("name", "args", "kw"), INIT_CASES)
def test_init_shapes_and_bounds_match_torch(name, args, kw):
    layer = getattr(lux, name)(*args, **kw)
    ref = getattr(nn, name)(*args, **kw, device="meta")
    ps = init_params(1, layer)
    assert {k: v.shape for k, v in ps.items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert param_count(layer) == sum(p.numel() for p in ref.parameters())
    # torch.nn: weight ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and
    # bias ~ the same, with torch's fan_in: weight.size(1) * prod(kernel_size) (for a
    # transposed convolution that is out_channels // groups, not in_channels)
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(ref.weight)
    bound = 1 / math.sqrt(fan_in)
    for t in (ps["weight"], ps["bias"]):  # >= 64 draws each: the max is near the bound
        assert t.abs().max() <= bound and t.abs().max() > 0.8 * bound


@pytest.mark.parametrize("layer", [lux.Conv2d(64, 64, 3), lux.ConvTranspose2d(64, 32, 3)])
def test_weight_distribution_matches_torch(layer):
    w = init_params(2, layer)["weight"]
    ref = torch.empty(w.shape)
    # what nn.ConvNd.reset_parameters does, with an explicit generator
    nn.init.kaiming_uniform_(ref, a=math.sqrt(5), generator=torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(w[0].numel())
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    # KS test at n = m >= 18432: the 1e-6 critical value is below 0.028
    assert ks_statistic(w, ref) < 0.028


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: lux.Conv2d(3, 16, 3, groups=2),
            ValueError,
            r"Conv2d: in_channels must be divisible by groups, got in_channels=3 and groups=2",
        ),
        (
            lambda: lux.Conv1d(4, 6, 3, groups=4),
            ValueError,
            r"Conv1d: out_channels must be divisible by groups",
        ),
        (lambda: lux.Conv2d(4, 6, 3, groups=0), ValueError, r"Conv2d: groups must be >= 1, got 0"),
        (lambda: lux.Conv2d(4, 6, 0), ValueError, r"Conv2d: kernel_size must be >= 1, got 0"),
        (lambda: lux.Conv2d(4, 6, 3, stride=0), ValueError, r"Conv2d: stride must be >= 1, got 0"),
        (
            lambda: lux.Conv2d(4, 6, 3, padding=(1, -1)),
            ValueError,
            r"Conv2d: padding must be >= 0, got -1",
        ),
        (
            lambda: lux.Conv3d(4, 6, 3, dilation=0),
            ValueError,
            r"Conv3d: dilation must be >= 1, got 0",
        ),
        (
            lambda: lux.Conv2d(4, 6, (3, 3, 3)),
            ValueError,
            r"Conv2d: kernel_size must be an int or a tuple of 2 ints, got \(3, 3, 3\)",
        ),
        (
            lambda: lux.Conv1d(4, 6, 3, stride=(1, 1)),
            ValueError,
            r"Conv1d: stride must be an int or a tuple of 1 ints",
        ),
        (
            lambda: lux.Conv2d(4, 6, 3.0),  # type: ignore[arg-type]
            TypeError,
            r"Conv2d: kernel_size must be an int or a tuple of 2 ints, got float",
        ),
        (
            lambda: lux.Conv2d(4, 6, (3, True)),
            TypeError,
            r"Conv2d: kernel_size must be an int, got bool",
        ),
        (lambda: lux.Conv2d(4.0, 6, 3), TypeError, r"Conv2d: in_channels must be an int"),  # type: ignore[arg-type]
        (
            lambda: lux.Conv2d(4, 6, 3, padding="full"),
            ValueError,
            r"Conv2d: padding must be an int, a tuple of 2 ints, 'same' or 'valid', got 'full'",
        ),
        (
            lambda: lux.Conv2d(4, 6, 3, stride=2, padding="same"),
            ValueError,
            r"Conv2d: padding='same' is not supported for strided convolutions",
        ),
        (
            lambda: lux.Conv2d(4, 6, 3, padding_mode="mirror"),
            ValueError,
            r"Conv2d: padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', "
            r"got 'mirror'",
        ),
        (lambda: lux.Conv2d(4, 6, 3, bias=None), TypeError, r"Conv2d: bias must be a bool"),  # type: ignore[arg-type]
        (
            lambda: lux.Conv2d(4, 6, 3, activation=nn.ReLU()),
            TypeError,
            r"Conv2d: activation must be a plain function",
        ),
        (
            lambda: lux.ConvTranspose2d(4, 6, 3, padding="same"),
            ValueError,
            r"ConvTranspose2d: padding must be an int or a tuple of 2 ints \(string padding",
        ),
        (
            lambda: lux.ConvTranspose1d(4, 6, 3, padding_mode="reflect"),
            ValueError,
            r"ConvTranspose1d: only padding_mode='zeros' is supported",
        ),
        (
            lambda: lux.ConvTranspose2d(4, 6, 3, stride=2, output_padding=2),
            ValueError,
            r"ConvTranspose2d: output_padding must be smaller than either stride or dilation "
            r"in each dimension, got output_padding=\(2, 2\), stride=\(2, 2\), "
            r"dilation=\(1, 1\)",
        ),
        (
            lambda: lux.ConvTranspose3d(4, 6, 3, output_padding=(0, 0, 1)),
            ValueError,
            r"ConvTranspose3d: output_padding must be smaller",
        ),
        (
            lambda: lux.ConvTranspose2d(4, 6, 3, output_padding=-1),
            ValueError,
            r"ConvTranspose2d: output_padding must be >= 0",
        ),
    ],
)
def test_bad_configuration_is_rejected_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_torch_rejects_the_same_configurations():
    # the checks above mirror torch.nn's (those it makes at construction)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 16, 3, groups=2, device="meta")
    with pytest.raises(ValueError, match="not supported for strided convolutions"):
        nn.Conv2d(4, 6, 3, stride=2, padding="same", device="meta")
    with pytest.raises(ValueError, match="padding mode is supported"):
        nn.ConvTranspose1d(4, 6, 3, padding_mode="reflect", device="meta")
    # torch checks output_padding when it runs (stride 2, padding 0, output_padding 2)
    x, w = torch.zeros(1, 4, 3, 3), torch.zeros(4, 6, 3, 3)
    with pytest.raises(RuntimeError, match="output padding must be smaller than either stride"):
        torch.nn.functional.conv_transpose2d(x, w, None, 2, 0, 2)


def test_bad_inputs_name_the_layer_and_the_expected_shape():
    model = lux.Chain(lux.Conv2d(3, 8, 3), lux.Conv2d(4, 2, 3))
    ps, st = setup(0, model)
    with pytest.raises(RuntimeError, match=r"layer_2 \(Conv2d\(4 => 2, \(3, 3\)\)\)") as info:
        model(randn(2, 3, 9, 9), ps, st)
    assert (
        "expected input of shape (N, C_in=4, H, W) or (C_in=4, H, W), got (2, 8, 7, 7)"
        in "\n".join(info.value.__notes__)
    )
    conv1 = lux.Conv1d(3, 2, 3)
    ps, st = setup(0, conv1)
    with pytest.raises(
        RuntimeError, match=r"\(N, C_in=3, L\) or \(C_in=3, L\), got \(2, 3, 4, 4\)"
    ):
        conv1(randn(2, 3, 4, 4), ps, st)
    with pytest.raises(Exception, match=r"expected a Tensor, got list"):
        conv1([1.0, 2.0], ps, st)  # type: ignore[arg-type]
    conv3 = lux.Conv3d(2, 2, 3, dilation=2)
    ps, st = setup(0, conv3)
    with pytest.raises(
        RuntimeError, match=r"with \(D, H, W\) >= \(5, 5, 5\) .*got \(1, 2, 5, 4, 5\)"
    ):
        conv3(randn(1, 2, 5, 4, 5), ps, st)
    reflect = lux.Conv1d(2, 2, 3, padding=3, padding_mode="reflect")
    ps, st = setup(0, reflect)
    with pytest.raises(RuntimeError, match=r"with \(L\) >= \(4,\)"):
        reflect(randn(1, 2, 3), ps, st)
    convt = lux.ConvTranspose2d(4, 2, 3)
    ps, st = setup(0, convt)
    with pytest.raises(
        RuntimeError, match=r"\(N, C_in=4, H, W\) or \(C_in=4, H, W\), got \(1, 2, 3, 3\)"
    ):
        convt(randn(1, 2, 3, 3), ps, st)
