"""Basic layers: Linear, Bilinear, Embedding, Scale and the shape/function utilities.

Every layer goes through the conformance harness (with its torch.nn reference where torch.nn
has the layer) in float32 and float64. Compilation is slow on CPU (inductor builds C++), so
the float32 run checks ``torch.compile`` and the float64 run, which traces the same graph
with another dtype, skips it; parameter-free shape layers are compiled together in one
Chain instead of one graph each.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, check, ks_statistic, randn
from torch import nn

from lux_torch.core import init_params, param_count, setup
from lux_torch.layers import (
    Bilinear,
    Chain,
    Embedding,
    Flatten,
    Linear,
    NoOpLayer,
    Reshape,
    Scale,
    SelectDim,
    WrappedFunction,
)

# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(dtype, bias):
    # references live on the meta device: no global RNG is drawn, the harness swaps our
    # tensors in anyway
    layer = Linear(3, 4, bias=bias)
    report = check(
        layer,
        randn(2, 3, dtype=dtype),
        dtype,
        reference=nn.Linear(3, 4, bias=bias, device="meta"),
        compile=dtype == torch.float32 and bias,
    )
    assert report["parity"] == "passed" and report["vmap"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_with_activation_matches_functional(dtype):
    def reference(t, x):
        return torch.tanh(F.linear(x, t["weight"], t["bias"]))

    layer = Linear(3, 4, activation=torch.tanh)
    report = check(
        layer,
        randn(2, 3, dtype=dtype),
        dtype,
        reference=reference,
        compile=False,  # the same graph as test_linear_matches_torch plus a tanh
        expected_repr="Linear(3 => 4, tanh)  # 16 parameters",
    )
    assert report["parity"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
def test_bilinear_matches_torch(dtype):
    x = (randn(2, 3, dtype=dtype), randn(2, 2, dtype=dtype, seed=2))
    report = check(
        Bilinear(3, 2, 4),
        x,
        dtype,
        reference=nn.Bilinear(3, 2, 4, device="meta"),
        expected_repr="Bilinear((3, 2) => 4)  # 28 parameters",
    )
    assert report["parity"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_matches_torch(dtype, padding_idx):
    x = torch.tensor([[1, 0, 3], [9, 4, 1]])
    layer = Embedding(10, 3, padding_idx=padding_idx)
    report = check(
        layer,
        x,
        dtype,
        reference=nn.Embedding(10, 3, padding_idx=padding_idx, device="meta"),
        compile=dtype == torch.float32 and padding_idx is None,
        # torch defines the padding row's gradient as zero (it is not the derivative), so
        # finite differences disagree by design; parity checks the gradient against torch
        gradcheck=padding_idx is None,
    )
    assert report["parity"] == "passed"


def test_embedding_scale_grad_by_freq_matches_torch():
    x = torch.tensor([[1, 1, 3], [9, 1, 1]])
    ref = nn.Embedding(10, 3, scale_grad_by_freq=True, device="meta")
    # the scaled "gradient" is not the derivative (by design), so no gradcheck
    report = check(
        Embedding(10, 3, scale_grad_by_freq=True), x, torch.float64, reference=ref, gradcheck=False
    )
    assert report["parity"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_sparse_matches_torch_with_dense_gradients(dtype):
    """``sparse=True`` is accepted; its gradient is dense, with the values of torch's sparse
    one, so torch.func transforms, gradcheck and lux's optimizers all work."""
    x = torch.tensor([[1, 0, 3], [9, 4, 1]])
    layer = Embedding(10, 3, sparse=True, padding_idx=4)
    assert layer.sparse and layer != Embedding(10, 3, padding_idx=4)
    report = check(
        layer,
        x,
        dtype,
        # parity in outputs; torch's own gradient is sparse, compared below
        reference=nn.Embedding(10, 3, padding_idx=4, device="meta"),
        compile=dtype == torch.float32,
        gradcheck=False,  # the padding row's gradient is zero by definition (see above)
    )
    assert report["parity"] == "passed" and report["vmap"] == "passed"
    ref = nn.Embedding(10, 3, padding_idx=4, sparse=True, dtype=dtype)
    ps = {"weight": ref.weight.detach().clone()}
    cotangent = randn(2, 3, 3, dtype=dtype)
    (ref(x) * cotangent).sum().backward()
    assert ref.weight.grad is not None and ref.weight.grad.layout == torch.sparse_coo
    grad = torch.func.grad(lambda p: (layer(x, p, {})[0] * cotangent).sum())(ps)["weight"]
    assert grad.layout == torch.strided
    assert torch.equal(grad, ref.weight.grad.to_dense())
    # transforms that sparse gradients break (jacrev, vmap of grad) work
    jac = torch.func.jacrev(lambda w: layer(x, {"weight": w}, {})[0])(ps["weight"])
    assert jac.shape == (2, 3, 3, 10, 3)
    stacked = {"weight": torch.stack([ps["weight"], 2 * ps["weight"]])}
    grads = torch.func.vmap(torch.func.grad(lambda p: layer(x, p, {})[0].square().sum()))(stacked)
    assert torch.equal(grads["weight"][1], 2 * grads["weight"][0])
    Embedding(10, 3, sparse=False)  # the default, accepted explicitly


def test_embedding_accepts_every_torch_constructor_argument():
    theirs = inspect.signature(nn.Embedding).parameters
    ours = inspect.signature(Embedding).parameters
    # torch's names, order (positional use carries over) and defaults; then lux's weight_init
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].default == parameter.default, name
        assert ours[name].kind == parameter.kind, name
    assert ours["weight_init"].kind == inspect.Parameter.KEYWORD_ONLY
    defaults = {n: p.default for n, p in theirs.items() if p.default is not p.empty}
    layer = Embedding(10, 3, **defaults)
    assert layer == Embedding(10, 3) and repr(layer) == "Embedding(10 => 3)  # 30 parameters"
    # torch's positional order: norm_type 5th, scale_grad_by_freq 6th, sparse 7th
    layer = Embedding(10, 3, None, None, 3.0, True, True)
    assert (layer.norm_type, layer.scale_grad_by_freq, layer.sparse) == (3.0, True, True)
    assert repr(layer) == (
        "Embedding(10 => 3, norm_type=3.0, scale_grad_by_freq=True, sparse=True)  # 30 parameters"
    )
    # the constructor-only arguments are not configuration: no fields, no state in the layer
    assert {"_weight", "_freeze", "device", "dtype"}.isdisjoint(
        f.name for f in dataclasses.fields(layer)
    )
    assert dataclasses.replace(layer, sparse=False).sparse is False


@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_matches_torch(dtype):
    x = randn(2, 3, 2, 2, dtype=dtype)
    for layer, ref in [(Flatten(), nn.Flatten()), (Flatten(0, 2), nn.Flatten(0, 2))]:
        report = check(layer, x, dtype, reference=ref, compile=False)  # compiled below
        assert report["parity"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_conformance(dtype):
    layer = Scale((2, 3), activation=torch.tanh)
    report = check(
        layer,
        randn(4, 2, 3, dtype=dtype),
        dtype,
        expected_repr="Scale((2, 3), tanh)  # 12 parameters",
    )
    assert report["gradcheck"] == "passed"
    assert report["vmap"] == "passed"
    check(Scale(3, bias=False), randn(4, 3, dtype=dtype), dtype, compile=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shape_and_function_layers_conformance(dtype):
    x = randn(2, 3, 4, dtype=dtype)
    layers = [
        NoOpLayer(),
        WrappedFunction(torch.sin),
        Reshape(4, 3),
        SelectDim(1, -1),
        Flatten(),
    ]
    for layer in layers:
        check(layer, x, dtype, compile=False)  # parameter-free: vmap is skipped
    # all of them in one compiled graph (a Scale gives vmap something to map over)
    chain = Chain(WrappedFunction(torch.sin), NoOpLayer(), Reshape(4, 3), SelectDim(1, -1))
    report = check(Chain(chain, Flatten(), Scale(3)), x, dtype)
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")


# --------------------------------------------------------------------------- semantics


def test_linear_and_bilinear_outputs():
    layer = Linear(3, 2, activation=torch.relu)
    ps, st = setup(0, layer)
    x = randn(5, 3)
    y, new_st = layer(x, ps, st)
    assert torch.equal(y, torch.relu(x @ ps["weight"].T + ps["bias"]))
    assert new_st == {}
    y, _ = layer(randn(7, 5, 3), ps, st)  # any leading dimensions
    assert y.shape == (7, 5, 2)
    bil = Bilinear(3, 2, 4, bias=False)
    ps, st = setup(0, bil)
    assert set(ps) == {"weight"} and ps["weight"].shape == (4, 3, 2)
    x1, x2 = randn(5, 3), randn(5, 2, seed=2)
    y, _ = bil((x1, x2), ps, st)
    torch.testing.assert_close(y, torch.einsum("bi,oij,bj->bo", x1, ps["weight"], x2))


def test_scale_embedding_and_shape_layers_outputs():
    scale = Scale(3)
    ps, st = setup(0, scale)
    assert torch.equal(ps["weight"], torch.ones(3)) and torch.equal(ps["bias"], torch.zeros(3))
    ps = {"weight": torch.tensor([1.0, 2.0, 3.0]), "bias": torch.tensor([0.0, 1.0, 0.0])}
    y, _ = scale(torch.ones(2, 3), ps, st)
    assert torch.equal(y, torch.tensor([[1.0, 3.0, 3.0]] * 2))
    assert Scale(3).dims == (3,) and Scale([2, 3]).dims == (2, 3)

    emb = Embedding(5, 2)
    ps, st = setup(0, emb)
    idx = torch.tensor([[4, 0], [2, 2]])
    y, _ = emb(idx, ps, st)
    assert torch.equal(y, ps["weight"][idx])

    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(Reshape(4, 3)(x, {}, {})[0], x.reshape(2, 4, 3))
    assert torch.equal(Reshape((2, -1))(x, {}, {})[0], x.reshape(2, 2, 6))
    assert torch.equal(SelectDim(2, 1)(x, {}, {})[0], x[:, :, 1])
    assert torch.equal(Flatten()(x, {}, {})[0], x.reshape(2, 12))
    assert torch.equal(Flatten(0, 1)(x, {}, {})[0], x.reshape(6, 4))
    assert NoOpLayer()(x, {}, {})[0] is x
    assert torch.equal(WrappedFunction(torch.relu)(x - 5, {}, {})[0], torch.relu(x - 5))


def test_embedding_padding_row_is_zero_and_gets_no_gradient():
    emb = Embedding(6, 4, padding_idx=-1)
    assert emb.padding_idx == 5 and emb == Embedding(6, 4, padding_idx=5)
    ps, st = setup(0, emb)
    assert torch.equal(ps["weight"][5], torch.zeros(4))
    assert ps["weight"][:5].abs().min() > 0

    def loss(p):
        return emb(torch.tensor([5, 1, 5]), p, st)[0].sum()

    grad = torch.func.grad(loss)(ps)["weight"]
    assert torch.equal(grad[5], torch.zeros(4)) and torch.equal(grad[1], torch.ones(4))


def test_custom_initializers_are_used():
    layer = Linear(
        3, 2, weight_init=lambda key, *s: torch.full(s, 2.0), bias_init=lambda k, n: torch.ones(n)
    )
    ps = init_params(0, layer)
    assert torch.equal(ps["weight"], torch.full((2, 3), 2.0))
    assert torch.equal(ps["bias"], torch.ones(2))
    assert "weight_init=<lambda>" in layer.extra_repr()
    ps = init_params(0, Scale(2, weight_init=lambda key, *s: torch.full(s, 3.0)))
    assert torch.equal(ps["weight"], torch.full((2,), 3.0))


def test_setup_dtype_and_param_counts():
    ps, _ = setup(0, Linear(3, 4), dtype=torch.float64)
    assert ps["weight"].dtype == torch.float64
    assert param_count(Linear(3, 4)) == 16 and param_count(Linear(3, 4, bias=False)) == 12
    assert param_count(Bilinear(3, 2, 4)) == 28 and param_count(Embedding(10, 3)) == 30
    assert param_count(Scale((2, 3))) == 12 and param_count(Scale(3, bias=False)) == 3


# --------------------------------------------------------------------------- initialisation


def test_linear_and_bilinear_init_match_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    # Linear(512, 512): weight and bias ~ U(-1/sqrt(512), 1/sqrt(512)), like nn.Linear's
    ps = init_params(1, Linear(512, 512))
    bound = 1 / math.sqrt(512)
    ref = torch.empty(512, 512)
    nn.init.kaiming_uniform_(ref, a=math.sqrt(5), generator=gen)  # nn.Linear.reset_parameters
    for t in (ps["weight"], ps["bias"]):
        assert t.abs().max() <= bound and t.abs().max() > 0.99 * bound
    assert abs(float(ps["weight"].mean())) < 5 * bound / math.sqrt(3 * 512 * 512)
    assert float(ps["weight"].std()) == pytest.approx(bound / math.sqrt(3), rel=0.01)
    # KS test at n = m = 262144: the 1e-6 critical value is about 0.0066
    assert ks_statistic(ps["weight"], ref) < 0.0066
    # Bilinear(64, 8, 32): U(-1/sqrt(in1), 1/sqrt(in1)) for weight and bias
    ps = init_params(2, Bilinear(64, 8, 32))
    bound = 1 / math.sqrt(64)
    assert ps["weight"].abs().max() <= bound and ps["weight"].abs().max() > 0.99 * bound
    assert ps["bias"].abs().max() <= bound
    assert float(ps["weight"].std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_embedding_init_matches_torch_distribution():
    ps = init_params(3, Embedding(1024, 256))
    w = ps["weight"]
    ref = torch.empty(1024, 256)
    nn.init.normal_(ref, generator=torch.Generator().manual_seed(0))  # nn.Embedding's
    n = w.numel()
    assert abs(float(w.mean())) < 5 / math.sqrt(n)
    assert float(w.std()) == pytest.approx(1.0, abs=5 * math.sqrt(0.5 / n))
    assert ks_statistic(w, ref) < 0.0066


def test_different_keys_give_different_parameters():
    a, b = init_params(0, Linear(4, 4)), init_params(1, Linear(4, 4))
    assert not torch.equal(a["weight"], b["weight"])
    assert not torch.equal(a["weight"].flatten()[:4], a["bias"])  # weight and bias keys differ


# --------------------------------------------------------------------------- errors


def test_bad_inputs_name_the_layer_and_the_expected_shape():
    model = Chain(Linear(2, 3), Linear(4, 1))
    ps, st = setup(0, model)
    with pytest.raises(RuntimeError, match=r"layer_2 \(Linear\(4 => 1\)\)") as info:
        model(randn(5, 2), ps, st)
    assert "expected input of shape (*, 4), got (5, 3)" in "\n".join(info.value.__notes__)
    layer = Linear(2, 3)
    ps, st = setup(0, layer)
    with pytest.raises(Exception, match=r"expected a Tensor, got list"):
        layer([1.0, 2.0], ps, st)  # type: ignore[arg-type]


def test_bilinear_embedding_and_shape_errors_explain_the_input():
    bil = Bilinear(3, 2, 4)
    ps, st = setup(0, bil)
    with pytest.raises(RuntimeError, match=r"expected inputs of shapes \(\*, 3\) and \(\*, 2\)"):
        bil((randn(5, 3), randn(5, 3)), ps, st)
    with pytest.raises(Exception, match=r"expected a tuple \(x1, x2\)"):
        bil(randn(5, 3), ps, st)  # type: ignore[arg-type]
    emb = Embedding(10, 3)
    ps, st = setup(0, emb)
    with pytest.raises(IndexError, match=r"expected indices in \[0, 10\), got values in \[1, 12\]"):
        emb(torch.tensor([1, 12]), ps, st)
    with pytest.raises(RuntimeError, match="expected a tensor of integer indices"):
        emb(torch.tensor([1.0]), ps, st)
    with pytest.raises(RuntimeError, match=r"to reshape to \(N, 4, 4\), got \(2, 3, 4\)"):
        Reshape(4, 4)(torch.zeros(2, 3, 4), {}, {})
    with pytest.raises(IndexError, match=r"SelectDim\(1, 5\).*got shape \(2, 3\)"):
        SelectDim(1, 5)(torch.zeros(2, 3), {}, {})
    with pytest.raises(IndexError, match="at least 4 dimensions"):
        Flatten(1, 3)(torch.zeros(2, 3), {}, {})
    with pytest.raises(RuntimeError, match=r"expected input of shape \(\*, 2, 3\)"):
        Scale((2, 3))(torch.zeros(4, 3, 3), *setup(0, Scale((2, 3))))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Linear(-1, 3), ValueError, r"Linear: in_features must be >= 0, got -1"),
        (lambda: Linear(2.0, 3), TypeError, r"Linear: in_features must be an int, got float"),  # type: ignore[arg-type]
        (lambda: Linear(2, 3, bias=1), TypeError, r"Linear: bias must be a bool"),  # type: ignore[arg-type]
        (lambda: Linear(2, 3, activation="relu"), TypeError, r"Linear: activation must be"),  # type: ignore[arg-type]
        (lambda: Linear(2, 3, activation=nn.ReLU()), TypeError, r"plain function"),
        (lambda: Bilinear(2, True, 3), TypeError, r"Bilinear: in2_features must be an int"),
        (lambda: Embedding(10, 3, padding_idx=10), ValueError, r"padding_idx must be in"),
        (lambda: Embedding(10, 3, max_norm=1.0), ValueError, r"max_norm is not supported"),
        (
            lambda: Embedding(10, 3, _weight=torch.zeros(10, 3)),
            ValueError,
            r"Embedding: _weight is not supported: a layer holds configuration only.*"
            r"put the tensor in ps instead \(or load it with lux_torch.load_state_dict\)",
        ),
        (
            lambda: Embedding(10, 3, _freeze=True),
            ValueError,
            r"Embedding: _freeze=True is not supported: .*lux_torch.freeze",
        ),
        (
            lambda: Embedding(10, 3, device="cpu"),
            ValueError,
            r"Embedding: device='cpu' is not supported: .*setup\(key, model, device=...\)",
        ),
        (
            lambda: Embedding(10, 3, dtype=torch.float64),
            ValueError,
            r"Embedding: dtype=torch.float64 is not supported: .*setup\(key, model, dtype=...\)",
        ),
        (
            lambda: Embedding(10, 3, sparse=1),  # type: ignore[arg-type]
            TypeError,
            r"Embedding: sparse must be a bool, got int",
        ),
        (lambda: Embedding(10, 3, _freeze=None), TypeError, r"Embedding: _freeze must be a bool"),  # type: ignore[arg-type]
        (
            lambda: Embedding(10, 3, norm_type="2"),  # type: ignore[arg-type]
            TypeError,
            r"Embedding: norm_type must be a float, got str",
        ),
        (lambda: Scale("3"), TypeError, r"Scale: dims must be an int or a tuple"),  # type: ignore[arg-type]
        (lambda: Scale((2, -1)), ValueError, r"Scale: dims must be >= 0"),
        (lambda: Reshape(2, -1, -1), ValueError, r"at most one of dims may be -1"),
        (lambda: Reshape(2.5), TypeError, r"Reshape: dims must be an int"),  # type: ignore[arg-type]
        (lambda: SelectDim(1, "a"), TypeError, r"SelectDim: index must be an int"),  # type: ignore[arg-type]
        (lambda: WrappedFunction(3), TypeError, r"func must be callable"),  # type: ignore[arg-type]
        (lambda: WrappedFunction(nn.ReLU()), TypeError, r"from_torch"),
        (lambda: WrappedFunction(NoOpLayer()), TypeError, r"already a layer"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_is_rejected_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


# --------------------------------------------------------------------------- configuration


def test_layers_are_immutable_and_compare_by_configuration():
    layer = Linear(2, 3, activation=torch.tanh)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.in_features = 4  # type: ignore[misc]
    assert layer == Linear(2, 3, activation=torch.tanh)
    assert hash(layer) == hash(Linear(2, 3, activation=torch.tanh))
    assert layer != Linear(2, 3) and layer != Linear(2, 3, activation=torch.relu)
    assert Linear(2, 3) != Bilinear(2, 3, 3)
    assert Reshape(2, 3) == Reshape((2, 3)) and hash(Reshape(2, 3)) == hash(Reshape((2, 3)))
    assert Scale(3) == Scale((3,)) and SelectDim(1, 0) != SelectDim(1, 1)
    assert WrappedFunction(torch.sin) == WrappedFunction(torch.sin)
    assert WrappedFunction(torch.sin) != WrappedFunction(torch.cos)
    assert len({Flatten(), Flatten(), NoOpLayer(), NoOpLayer()}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        Reshape(2, 3).dims = (3, 2)  # type: ignore[misc]


def test_printouts():
    assert repr(Linear(2, 16, activation=torch.tanh)) == "Linear(2 => 16, tanh)  # 48 parameters"
    assert repr(Linear(2, 3, bias=False)) == "Linear(2 => 3, bias=False)  # 6 parameters"
    assert repr(Embedding(10, 3, padding_idx=0)) == (
        "Embedding(10 => 3, padding_idx=0)  # 30 parameters"
    )
    assert repr(Scale(3)) == "Scale(3)  # 6 parameters"
    assert repr(WrappedFunction(torch.relu)) == "WrappedFunction(relu)  # 0 parameters"
    assert repr(NoOpLayer()) == "NoOpLayer()  # 0 parameters"
    assert repr(Flatten()) == "Flatten()  # 0 parameters"
    assert repr(Flatten(0)) == "Flatten(start_dim=0)  # 0 parameters"
    assert repr(Reshape(2, 3)) == "Reshape(2, 3)  # 0 parameters"
    assert repr(SelectDim(1, 0)) == "SelectDim(1, 0)  # 0 parameters"
