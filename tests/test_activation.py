"""Activation layers: every torch.nn activation module, PReLU and RReLU included.

Every configuration goes through the conformance harness with the ``torch.nn`` module built
from the same arguments as its reference, in float32 and float64 (``helpers.check``: the
float64 run skips compilation); a few representative configurations are compiled with
inductor, the others with ``aot_eager`` (graph capture without code generation).
``test_eager_outputs_equal_torchs`` is the fast eager parity check of every case.

Inputs are standard normal draws from an explicit key: the chance that one of them lies
within gradcheck's ``eps = 1e-6`` of a kink (ReLU's 0, Hardshrink's ``lambd``, ...) is
about 1e-4, and the draws are fixed, so a test never flips.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, check, randn
from torch import nn

import lux_torch as lux
from lux_torch import random as lrandom
from lux_torch.core import param_count, setup, state_count, test_mode, train_mode
from lux_torch.layers import activation as A
from lux_torch.testing import check_layer

# (class name, positional args, keyword args shared by lux and torch.nn)
CASES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("ReLU", (), {}),
    ("ReLU6", (), {}),
    ("LeakyReLU", (), {}),
    ("LeakyReLU", (0.2,), {}),
    ("ELU", (), {}),
    ("ELU", (0.5,), {}),
    ("CELU", (), {}),
    ("CELU", (), {"alpha": 2.0}),
    ("SELU", (), {}),
    ("GELU", (), {}),
    ("GELU", ("tanh",), {}),
    ("SiLU", (), {}),
    ("Mish", (), {}),
    ("Sigmoid", (), {}),
    ("Tanh", (), {}),
    ("LogSigmoid", (), {}),
    ("Hardsigmoid", (), {}),
    ("Hardswish", (), {}),
    ("Hardtanh", (), {}),
    ("Hardtanh", (-0.5, 0.7), {}),
    ("Tanhshrink", (), {}),
    ("Softsign", (), {}),
    ("Softplus", (), {}),
    ("Softplus", (2.0, 1.0), {}),
    ("Hardshrink", (), {}),
    ("Hardshrink", (0.3,), {}),
    ("Softshrink", (), {}),
    ("Softshrink", (0.3,), {}),
    ("Threshold", (0.1, 20.0), {}),
    ("Threshold", (-0.5,), {"value": -2.0}),
    ("GLU", (), {}),
    ("GLU", (1,), {}),
    ("Softmax", (1,), {}),
    ("Softmax", (), {"dim": -1}),
    ("Softmin", (0,), {}),
    ("LogSoftmax", (-1,), {}),
    ("LogSoftmax", (2,), {}),
    ("Softmax2d", (), {}),
    ("PReLU", (), {}),
    ("PReLU", (4,), {"init": 0.1}),
    ("RReLU", (), {}),
    ("RReLU", (0.1, 0.3), {}),
]
INDUCTOR = {"ReLU", "GELU", "Softmax", "PReLU", "RReLU"}  # first case of each: inductor
_seen: set[str] = set()
COMPILERS = []
for _name, _args, _kw in CASES:
    COMPILERS.append("inductor" if _name in INDUCTOR and _name not in _seen else "aot_eager")
    _seen.add(_name)
SHAPE = (3, 4, 2, 6)  # 4-d (Softmax2d), 4 channels (PReLU(4)), even last dimension (GLU)


def _case_id(case) -> str:
    name, args, kw = case
    options = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"{name}{args}[{options}]".replace(" ", "")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("case", "backend"), list(zip(CASES, COMPILERS, strict=True)), ids=[_case_id(c) for c in CASES]
)
def test_activation_matches_torch(case, backend, dtype):
    name, args, kw = case
    layer = getattr(A, name)(*args, **kw)
    report = check(
        layer,
        randn(*SHAPE, dtype=dtype),
        dtype,
        reference=getattr(nn, name)(*args, **kw),
        compile_backend=backend,
    )
    suffixes = ["[train]", "[test]"] if name == "RReLU" else [""]
    for s in suffixes:
        for check_name in ("gradcheck", "purity", "determinism", "vmap_inputs"):
            assert report[check_name + s] == "passed", check_name + s
        assert report["compile" + s] == (
            "passed" if dtype == torch.float32 else "skipped: disabled"
        )
    # parity with torch: RReLU's random slopes in test mode only (the harness's rule)
    assert report["parity[test]" if name == "RReLU" else "parity"] == "passed"
    if name in ("PReLU", "RReLU"):  # ensembles over stacked parameters / keys
        assert all(report["vmap" + s] == "passed" for s in suffixes)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_eager_outputs_equal_torchs(case):
    name, args, kw = case
    layer, module = getattr(A, name)(*args, **kw), getattr(nn, name)(*args, **kw).eval()
    ps, st = setup(0, layer)
    x = randn(*SHAPE)
    y, new_st = layer(x, ps, test_mode(st))
    assert torch.equal(y, torch.func.functional_call(module, ps, (x,)))
    assert new_st == test_mode(st)


def test_every_torch_activation_module_has_a_layer_with_torchs_signature():
    names = [n for n in nn.modules.activation.__all__ if n != "MultiheadAttention"]
    assert sorted(names) == sorted(A.__all__)
    for name in names:
        ours = inspect.signature(getattr(A, name)).parameters
        theirs: Mapping[str, inspect.Parameter] = inspect.signature(getattr(nn, name)).parameters
        theirs = {n: p for n, p in theirs.items() if p.kind is p.POSITIONAL_OR_KEYWORD}
        assert list(ours) == list(theirs), name
        for n, p in theirs.items():
            assert ours[n].default == p.default, f"{name}({n}=...)"
        assert getattr(lux, name) is getattr(A, name)
        assert name in lux.__all__ and name in lux.layers.__all__
    # MultiheadAttention lives in lux_torch.layers.attention
    assert lux.MultiheadAttention.__module__ == "lux_torch.layers.attention"


def test_printouts_are_torchs():
    for name, args, kw in CASES:
        layer = getattr(A, name)(*args, **kw)
        text = repr(getattr(nn, name)(*args, **kw))
        if name == "PReLU" and "init" in kw:
            text = text[:-1] + f", init={kw['init']})"  # lux shows a non-default init too
        counts = f"{param_count(layer)} parameters"
        if state_count(layer):
            counts += f", plus {state_count(layer)} states"
        assert repr(layer) == f"{text}  # {counts}"


# --------------------------------------------------------------------------- inplace


def _inplace_classes():
    return [n for n in A.__all__ if "inplace" in inspect.signature(getattr(nn, n)).parameters]


@pytest.mark.parametrize("name", _inplace_classes())
def test_inplace_is_accepted_and_ignored(name):
    cls = getattr(A, name)
    args = (0.1, 2.0) if name == "Threshold" else ()
    layer = cls(*args, inplace=True)
    assert layer == cls(*args) and hash(layer) == hash(cls(*args))
    assert "inplace" not in repr(layer)
    assert "inplace" not in {f.name for f in dataclasses.fields(layer)}
    x = randn(3, 4)
    before = x.clone()
    ps, st = setup(0, layer)
    y, _ = layer(x, ps, test_mode(st))
    assert torch.equal(x, before) and x._version == 0 and y is not x
    # the values of torch's in-place variant
    assert torch.equal(y, getattr(nn, name)(*args, inplace=True).eval()(before.clone()))
    with pytest.raises(TypeError, match=rf"{name}: inplace must be a bool, got str"):
        cls(*args, inplace="yes")


# --------------------------------------------------------------------------- arguments


def test_hardtanh_accepts_torchs_deprecated_spellings_with_its_warning():
    with pytest.warns(FutureWarning, match="`min_value` is deprecated and renamed to `min_val`"):
        layer = A.Hardtanh(min_value=-2.0)
    assert layer == A.Hardtanh(-2.0, 1.0)
    with pytest.warns(FutureWarning, match="`max_value`"):
        assert A.Hardtanh(max_value=3.0).max_val == 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = nn.Hardtanh(min_value=-2.0)
    x = 3 * randn(10)
    assert torch.equal(layer(x, {}, {})[0], reference(x))


def test_softmax_without_dim_keeps_torchs_implicit_choice_and_warning():
    x = randn(2, 3)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        y, _ = A.Softmax()(x, {}, {})
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        assert torch.equal(y, nn.Softmax()(x))
    torch.testing.assert_close(y.sum(1), torch.ones(2))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: A.GELU("fast"), ValueError, r"GELU: approximate must be 'none' or 'tanh'"),
        (lambda: A.Hardtanh(1.0, -1.0), ValueError, r"max_val \(-1.0\) must be greater"),
        (lambda: A.Hardtanh(0.0, 0.0), ValueError, r"Hardtanh: max_val \(0.0\) must be greater"),
        (lambda: A.Hardshrink(-0.1), ValueError, r"Hardshrink: lambd must be >= 0, got -0.1"),
        (lambda: A.Softshrink(-1), ValueError, r"Softshrink: lambd must be >= 0"),
        (lambda: A.CELU(0.0), ValueError, r"CELU: alpha must not be 0"),
        (lambda: A.LeakyReLU("0.1"), TypeError, r"LeakyReLU: negative_slope must be a number"),  # type: ignore[arg-type]
        (lambda: A.ELU(None), TypeError, r"ELU: alpha must be a number, got NoneType"),  # type: ignore[arg-type]
        (lambda: A.Softplus(beta=True), TypeError, r"Softplus: beta must be a number"),
        (lambda: A.Threshold(0.1), TypeError, r"missing 1 required positional argument"),  # type: ignore[call-arg]
        (lambda: A.Softmax(1.0), TypeError, r"Softmax: dim must be an int, got float"),  # type: ignore[arg-type]
        (lambda: A.GLU(None), TypeError, r"GLU: dim must be an int, got NoneType"),  # type: ignore[arg-type]
        (lambda: A.Sigmoid(1), TypeError, r"takes 1 positional argument but 2 were given"),  # type: ignore[call-arg]
        (lambda: A.PReLU(0), ValueError, r"PReLU: num_parameters must be >= 1, got 0"),
        (lambda: A.PReLU(2, "x"), TypeError, r"PReLU: init must be a number"),  # type: ignore[arg-type]
        (lambda: A.RReLU(0.5, 0.1), ValueError, r"RReLU: need finite bounds with lower <= upper"),
        (lambda: A.RReLU(0.1, math.inf), ValueError, r"RReLU: need finite bounds"),
    ],
)
def test_invalid_arguments_are_rejected_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_input_errors_name_the_layer_and_the_expected_shape():
    with pytest.raises(
        ValueError,
        match=re.escape("Softmax2d: expected input of shape (N, C, H, W) or (C, H, W), got (2, 3)"),
    ):
        A.Softmax2d()(randn(2, 3), {}, {})
    with pytest.raises(RuntimeError) as info:
        A.GLU()(randn(2, 3), {}, {})
    assert "expected an even size along dim -1, got shape (2, 3)" in info.value.__notes__[0]
    layer = A.PReLU(3)
    ps, st = setup(0, layer)
    # one channel would broadcast against three slopes: that is refused, as by torch
    for shape in [(2, 4, 5), (2, 1, 5), (4,), ()]:
        message = f"PReLU: expected input of shape (N, 3, *) or (3,), got {shape}"
        with pytest.raises(ValueError, match=re.escape(message)):
            layer(randn(*shape), ps, st)
        with pytest.raises(RuntimeError):
            nn.PReLU(3)(randn(*shape))
    # one slope: any shape, a 0-d input included
    y, _ = A.PReLU()(torch.tensor(-2.0), *setup(0, A.PReLU()))
    assert y.shape == () and y == -0.5


# --------------------------------------------------------------------------- PReLU


def test_prelu_parameters_follow_torch():
    layer = A.PReLU(3, init=0.1)
    ps, st = setup(0, layer)
    module = nn.PReLU(3, init=0.1)
    assert set(ps) == {"weight"} and st == {}
    assert torch.equal(ps["weight"], module.weight.detach())
    assert param_count(layer) == 3
    ps64, _ = setup(0, layer, dtype=torch.float64)
    assert ps64["weight"].dtype == torch.float64
    assert torch.equal(ps64["weight"], torch.full((3,), 0.1, dtype=torch.float64))
    # a torch state_dict loads directly
    module.weight.data.copy_(torch.tensor([0.2, 0.3, 0.4]))
    ps2, st2 = lux.load_state_dict(layer, module.state_dict())
    x = randn(2, 3, 4)
    assert torch.equal(layer(x, ps2, st2)[0], module(x))
    # the constructor's dtype/device are the weight's when setup gives none
    assert setup(0, A.PReLU(dtype=torch.float64))[0]["weight"].dtype == torch.float64
    assert setup(0, A.PReLU(device="meta"))[0]["weight"].device.type == "meta"
    assert setup(0, A.PReLU(dtype=torch.float64), dtype=torch.float32)[0]["weight"].dtype == (
        torch.float32
    )


def test_prelu_is_differentiable_in_its_slope():
    layer = A.PReLU()
    ps, st = setup(0, layer)
    x = randn(5, 3)
    grad = torch.func.grad(lambda p: layer(x, p, st)[0].sum())(ps)
    torch.testing.assert_close(grad["weight"], x.clamp(max=0).sum().reshape(1))


# --------------------------------------------------------------------------- RReLU


def test_rrelu_draws_uniform_slopes_from_its_key_in_training_mode():
    lower, upper, n = 0.1, 0.4, 20_000
    layer = A.RReLU(lower, upper)
    _, st = setup(lrandom.key(5), layer)
    x = -torch.ones(n)
    y, new_st = layer(x, {}, st)
    slopes = -y
    assert bool(((slopes >= lower) & (slopes < upper)).all())
    # mean and variance of U(lower, upper) within 5 standard errors
    mean, var = (lower + upper) / 2, (upper - lower) ** 2 / 12
    assert abs(float(slopes.mean()) - mean) < 5 * math.sqrt(var / n)
    assert abs(float(slopes.var()) - var) < 5 * var * math.sqrt(0.8 / n)  # var of s^2: 4/5 var^2
    # Kolmogorov-Smirnov distance to the uniform CDF: below the 0.1% critical value
    u = ((slopes.double() - lower) / (upper - lower)).sort().values
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = max(float((grid - u).max()), float((u - (grid - 1 / n)).max()))
    assert ks < 1.95 / math.sqrt(n)
    # the key is advanced, and the next call draws new slopes; the same state, the same ones
    assert not torch.equal(new_st["key"], st["key"])
    assert not torch.equal(layer(x, {}, new_st)[0], y)
    assert torch.equal(layer(x, {}, st)[0], y)


def test_rrelu_keeps_non_negative_inputs_and_uses_the_mean_slope_in_test_mode():
    layer = A.RReLU()
    _, st = setup(0, layer)
    x = randn(4, 50)
    y, _ = layer(x, {}, train_mode(st))
    assert torch.equal(y[x >= 0], x[x >= 0])
    assert bool((y[x < 0] < 0).all()) and not torch.equal(y, F.leaky_relu(x, (1 / 8 + 1 / 3) / 2))
    y_test, st_test = layer(x, {}, test_mode(st))
    assert torch.equal(y_test, F.leaky_relu(x, (1 / 8 + 1 / 3) / 2))
    assert torch.equal(y_test, nn.RReLU().eval()(x)) and st_test == test_mode(st)


def test_rrelu_with_equal_bounds_draws_nothing():
    layer = A.RReLU(0.2, 0.2)
    _, st = setup(0, layer)
    x = randn(3, 4)
    y, new_st = layer(x, {}, st)
    assert torch.equal(y, F.leaky_relu(x, 0.2)) and new_st is st
    check_layer(layer, x, reference=nn.RReLU(0.2, 0.2), stochastic=False, compile=False)


def test_rrelu_ensemble_members_draw_their_own_slopes():
    layer = A.RReLU()
    states = [setup(k, layer)[1] for k in lrandom.split(lrandom.key(0), 3)]
    x = -torch.ones(6)
    ys, _ = torch.func.vmap(lambda s: layer(x, {}, s), randomness="error")(lux.tree.stack(states))
    assert not torch.equal(ys[0], ys[1]) and not torch.equal(ys[1], ys[2])
    for y, s in zip(ys, states, strict=True):
        assert torch.equal(y, layer(x, {}, s)[0])


# --------------------------------------------------------------------------- in models


def test_a_chain_of_activation_layers_loads_an_nn_sequential_state_dict():
    model = lux.Chain(lux.Linear(3, 4), A.PReLU(), lux.Linear(4, 2), A.LogSoftmax(-1))
    reference = nn.Sequential(nn.Linear(3, 4), nn.PReLU(), nn.Linear(4, 2), nn.LogSoftmax(-1))
    state = {
        re.sub(r"^(\d+)", lambda m: f"layer_{int(m[1]) + 1}", k): v
        for k, v in reference.state_dict().items()
    }
    ps, st = lux.load_state_dict(model, state)
    x = randn(5, 3)
    torch.testing.assert_close(model(x, ps, st)[0], reference(x))
    assert "layer_2 = PReLU(num_parameters=1)," in repr(model)
