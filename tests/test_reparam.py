"""Reparametrizations: WeightNorm and SpectralNorm against torch.nn.utils.parametrizations.

The references are torch modules parametrized with ``weight_norm`` / ``spectral_norm``, built
on the meta device (no global RNG is drawn): the harness swaps in our parameters *and* our
power-iteration buffers ``parametrizations.weight.0._u/_v`` by name, which works because
our ``ps``/``st`` use torch's names. Both modes are compared for SpectralNorm: in training
mode torch updates ``_u``/``_v`` in place, and our returned state must equal them.

SpectralNorm's gradient, in torch as here, treats ``u`` and ``v`` as constants; in training
mode they are recomputed from ``W``, so the gradient is the derivative of the output only at
a fixed point of the power iteration. ``gradcheck`` therefore runs from converged vectors
(the top singular pair from an SVD), while the parity, compile and vmap checks run from
unconverged random vectors, where the updated state differs visibly from the given one.
One case per class is compiled with inductor, the others with ``aot_eager``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import lux_torch as lux
from lux_torch import random as lrandom
from lux_torch.core import init_params, setup, test_mode, train_mode
from lux_torch.layers.conv import Conv2d, ConvTranspose2d
from lux_torch.layers.reparam import SpectralNorm, WeightNorm
from lux_torch.testing import check_layer

P = "parametrizations"


def _torch_module(make):
    """A module with torch's default init, leaving the global RNG's state as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return make()


# --------------------------------------------------------------------------- WeightNorm

# (lux layer, torch module factory, WeightNorm kwargs, input shape, backend)
WN_CASES = [
    ("linear", lambda: lux.Linear(3, 4), lambda: nn.Linear(3, 4, device="meta"), {}, (5, 3)),
    (
        "conv",
        lambda: Conv2d(2, 3, 3, padding=1),
        lambda: nn.Conv2d(2, 3, 3, padding=1, device="meta"),
        {},
        (2, 2, 4, 4),
    ),
    (
        "conv-dim1",
        lambda: Conv2d(2, 3, 3),
        lambda: nn.Conv2d(2, 3, 3, device="meta"),
        {"dim": 1},
        (2, 2, 4, 4),
    ),
    (
        "conv-whole",
        lambda: Conv2d(2, 3, 3),
        lambda: nn.Conv2d(2, 3, 3, device="meta"),
        {"dim": None},
        (2, 2, 4, 4),
    ),
    (
        "linear-weight-and-bias",
        lambda: lux.Linear(3, 4, activation=torch.tanh),
        lambda: nn.Sequential(nn.Linear(3, 4, device="meta"), nn.Tanh()),
        {"names": ("weight", "bias")},
        (5, 3),
    ),
]


def _torch_weight_norm(module: nn.Module, names=("weight",), dim=0) -> nn.Module:
    target = module[0] if isinstance(module, nn.Sequential) else module
    for name in names:
        weight_norm(target, name=name, dim=dim)
    return module


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WN_CASES, ids=[c[0] for c in WN_CASES])
def test_weight_norm_matches_torch(case, dtype):
    name, make_layer, make_module, kw, shape = case
    layer = WeightNorm(make_layer(), **kw)
    reference = _torch_weight_norm(make_module(), **kw)
    sequential = isinstance(reference, nn.Sequential)
    report = check(
        layer,
        randn(*shape, dtype=dtype),
        dtype,
        reference=reference,
        rename=(lambda n: f"0.{n}") if sequential else None,
        compile_backend="inductor" if name == "linear" else "aot_eager",
    )
    for check_name in ("parity", "gradcheck", "vmap", "purity", "determinism"):
        assert report[check_name] == "passed", check_name
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")


@pytest.mark.parametrize("dim", [0, 1, None])
@pytest.mark.parametrize("make", [lambda: lux.Linear(3, 4), lambda: Conv2d(2, 3, 3)])
def test_weight_norm_starts_from_the_wrapped_layers_init(make, dim):
    inner = make()
    layer = WeightNorm(inner, dim=dim)
    key = lrandom.key(7)
    ps = init_params(key, layer, dtype=torch.float64)
    inner_ps = init_params(key, inner, dtype=torch.float64)  # the same key
    g = ps[P]["weight"]["original0"]
    v = ps[P]["weight"]["original1"]
    assert torch.equal(v, inner_ps["weight"]) and torch.equal(ps["bias"], inner_ps["bias"])
    expected_g = (
        v.norm() if dim is None else v.transpose(0, dim).flatten(1).norm(dim=1)
    )  # one magnitude per index of dim
    assert g.numel() == expected_g.numel()
    torch.testing.assert_close(g.reshape(-1), expected_g.reshape(-1), rtol=1e-14, atol=0)
    # the effective weight, hence the output, is the wrapped layer's (up to round-off)
    others = [d for d in range(v.ndim) if d != dim]
    norm = v.norm() if dim is None else torch.linalg.vector_norm(v, dim=others, keepdim=True)
    w = g * v / norm
    torch.testing.assert_close(w, inner_ps["weight"], rtol=1e-14, atol=1e-16)
    x = randn(*((2, 3) if isinstance(inner, lux.Linear) else (2, 2, 4, 4)), dtype=torch.float64)
    y, st = layer(x, ps, {})
    torch.testing.assert_close(y, inner(x, inner_ps, {})[0], rtol=1e-13, atol=1e-14)
    assert st == {}


def test_weight_norm_state_dict_matches_torch():
    layer = WeightNorm(lux.Linear(3, 4))
    module = _torch_module(lambda: weight_norm(nn.Linear(3, 4)))
    sd = module.state_dict()
    ps, st = lux.load_state_dict(layer, sd)
    assert list(lux.state_dict(ps, st)) == list(sd)  # same names, same order
    assert ps[P]["weight"]["original0"] is sd[f"{P}.weight.original0"]
    x = randn(5, 3)
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(layer(x, ps, st)[0], expected, rtol=0, atol=0)
    # and back: our initial tensors load into the torch module
    ours_ps, ours_st = setup(0, layer)
    module.load_state_dict(lux.state_dict(ours_ps, ours_st))
    with torch.no_grad():
        torch.testing.assert_close(module(x), layer(x, ours_ps, ours_st)[0], rtol=0, atol=0)


def test_chain_of_wrapped_layers_has_the_names_of_a_parametrized_sequential():
    model = lux.Chain(
        SpectralNorm(lux.Linear(2, 3)), WeightNorm(lux.Linear(3, 1), names=("weight", "bias"))
    )
    reference = nn.Sequential(
        spectral_norm(nn.Linear(2, 3, device="meta")),
        weight_norm(weight_norm(nn.Linear(3, 1, device="meta")), name="bias"),
    )
    ps, st = setup(0, model)
    ours = {
        k.replace("layer_1", "0").replace("layer_2", "1"): tuple(v.shape)
        for k, v in lux.state_dict(ps, st).items()
    }
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_weight_norm_repr():
    layer = WeightNorm(lux.Linear(2, 3))
    expected = "\n".join(
        [
            "WeightNorm(",
            "    names=('weight',),",
            "    layer = Linear(2 => 3),             # 9 parameters",
            ")         # Total: 12 parameters,",
            "          #        plus 0 states.",
        ]
    )
    assert repr(layer) == expected
    assert "names=('weight', 'bias'), dim=None" in repr(
        WeightNorm(lux.Linear(2, 3), names=["weight", "bias"], dim=None)
    )
    assert WeightNorm(lux.Linear(2, 3), names="weight") == layer  # a single name is accepted


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"names": ("kernel",)},
            ValueError,
            r"'kernel' is not a parameter of the wrapped layer Linear "
            r"\(its parameter tensors: 'weight', 'bias'\)",
        ),
        ({"names": ("layer.weight",)}, ValueError, "without '.'"),
        ({"names": ()}, TypeError, "non-empty tuple"),
        ({"names": ("weight", "weight")}, ValueError, "duplicates"),
        ({"dim": 2}, ValueError, r"dim=2 is out of range for 'weight' of shape \(3, 2\)"),
        ({"dim": -1}, ValueError, "dim=None for the norm of the whole tensor"),
        ({"names": ("weight", "bias"), "dim": 1}, ValueError, "out of range for 'bias'"),
        ({"dim": 0.5}, TypeError, "dim must be an int"),
    ],
)
def test_weight_norm_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        WeightNorm(lux.Linear(2, 3), **kwargs)


def test_wrappers_refuse_torch_modules_and_parameterless_layers():
    with pytest.raises(TypeError, match="from_torch"):
        WeightNorm(nn.Linear(2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"parameter tensors: none"):
        SpectralNorm(torch.tanh)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SpectralNorm

# (id, lux layer, torch module, SpectralNorm kwargs, input shape)
SN_CASES = [
    ("linear", lambda: lux.Linear(3, 4), lambda: nn.Linear(3, 4, device="meta"), {}, (5, 3)),
    (
        "linear-dim1-3iter",
        lambda: lux.Linear(3, 4),
        lambda: nn.Linear(3, 4, device="meta"),
        {"dim": 1, "n_power_iterations": 3, "eps": 1e-6},
        (5, 3),
    ),
    (
        "conv",
        lambda: Conv2d(2, 3, 3, padding=1),
        lambda: nn.Conv2d(2, 3, 3, padding=1, device="meta"),
        {},
        (2, 2, 4, 4),
    ),
    (  # dim=None means dim=1 for the transposed convolutions, as in torch
        "conv-transpose",
        lambda: ConvTranspose2d(2, 3, 2),
        lambda: nn.ConvTranspose2d(2, 3, 2, device="meta"),
        {},
        (2, 2, 3, 3),
    ),
]


def _vectors(st):
    entry = st[P]["weight"]["0"]
    return entry["_u"], entry["_v"]


def _with_vectors(st, u, v):
    entry = dict(st[P]["weight"]["0"], _u=u, _v=v)
    return {**st, P: {**st[P], "weight": {"0": entry}}}


def _matrix(layer: SpectralNorm, weight: torch.Tensor) -> torch.Tensor:
    assert layer.dim is not None
    return weight.movedim(layer.dim, 0).flatten(1)


def _random_vectors(st, seed=3):
    """Unit vectors from a key: a state far from the power iteration's fixed point."""
    u, v = _vectors(st)
    k1, k2 = lrandom.split(lrandom.key(seed))
    u = lrandom.normal(k1, u.shape, dtype=u.dtype)
    v = lrandom.normal(k2, v.shape, dtype=v.dtype)
    return _with_vectors(st, u / u.norm(), v / v.norm())


def _converged_vectors(layer, ps, st):
    """The top singular pair of the weight matrix: a fixed point of the power iteration."""
    mat = _matrix(layer, ps[P]["weight"]["original"]).double()
    left, _, right_h = torch.linalg.svd(mat)
    u, v = _vectors(st)
    return _with_vectors(st, left[:, 0].to(u.dtype), right_h[0].to(v.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SN_CASES, ids=[c[0] for c in SN_CASES])
def test_spectral_norm_matches_torch(case, dtype):
    name, make_layer, make_module, kw, shape = case
    layer = SpectralNorm(make_layer(), **kw)
    reference = spectral_norm(make_module(), **kw)
    x = randn(*shape, dtype=dtype)
    ps, st = setup(0, layer, dtype=dtype)
    # outputs, gradients and the updated u, v against torch, from unconverged vectors
    report = check_layer(
        layer,
        x,
        ps=ps,
        st=_random_vectors(st),
        reference=reference,
        gradcheck=False,  # see the module docstring; run below from a fixed point
        compile=dtype == torch.float32,
        compile_backend="inductor" if name == "linear" else "aot_eager",
    )
    for mode in ("train", "test"):
        for check_name in ("parity", "vmap", "purity", "determinism"):
            assert report[f"{check_name}[{mode}]"] == "passed", check_name
        expected = "passed" if dtype == torch.float32 else "skipped: disabled"
        assert report[f"compile[{mode}]"] == expected
    # finite differences agree with autograd where u, v are a fixed point
    report = check_layer(
        layer,
        x,
        ps=ps,
        st=_converged_vectors(layer, ps, st),
        reference=reference,
        compile=False,
        vmap=False,
    )
    assert report["gradcheck[train]"] == report["gradcheck[test]"] == "passed"
    assert report["parity[train]"] == "passed"


def test_spectral_norm_of_a_vector_is_normalize():
    layer = SpectralNorm(lux.Linear(3, 4), name="bias", eps=1e-3)
    ps, st = setup(0, layer, dtype=torch.float64)
    assert st == {} and set(ps) == {"weight", P}
    report = check(
        layer,
        randn(5, 3, dtype=torch.float64),
        torch.float64,
        reference=spectral_norm(nn.Linear(3, 4, device="meta"), name="bias", eps=1e-3),
    )
    assert report["parity"] == report["gradcheck"] == "passed"


def test_training_updates_the_vectors_and_test_mode_does_not():
    layer = SpectralNorm(Conv2d(2, 3, 3))
    ps, st = setup(0, layer, dtype=torch.float64)
    st = _random_vectors(st)
    x = randn(1, 2, 3, 3, dtype=torch.float64)
    weight = ps[P]["weight"]["original"]
    mat = _matrix(layer, weight)
    inner = Conv2d(2, 3, 3)

    # test mode: sigma from the stored vectors, which come back as they are
    u, v = _vectors(st)
    y, new_st = layer(x, ps, test_mode(st))
    assert _vectors(new_st)[0] is u and _vectors(new_st)[1] is v
    inner_ps = {"weight": weight / (u @ mat @ v), "bias": ps["bias"]}
    torch.testing.assert_close(y, inner(x, inner_ps, {})[0], rtol=1e-13, atol=0)

    # training mode: one power iteration, the given state untouched
    y, new_st = layer(x, ps, st)
    u1 = mat @ v / (mat @ v).norm()
    v1 = mat.T @ u1 / (mat.T @ u1).norm()
    torch.testing.assert_close(_vectors(new_st), (u1, v1), rtol=1e-13, atol=1e-15)
    assert _vectors(st)[0] is u and _vectors(st)[1] is v
    assert bool(new_st[P]["weight"]["0"]["training"])
    inner_ps = {"weight": weight / (u1 @ mat @ v1), "bias": ps["bias"]}
    torch.testing.assert_close(y, inner(x, inner_ps, {})[0], rtol=1e-13, atol=0)

    # repeated training calls converge to the largest singular value
    for _ in range(200):
        _, st = layer(x, ps, st)
    u, v = _vectors(st)
    sigma = torch.linalg.matrix_norm(mat, ord=2)
    torch.testing.assert_close(u @ mat @ v, sigma, rtol=1e-12, atol=0)
    assert train_mode(test_mode(st)) == st


def test_spectral_norm_initial_state_is_like_torchs():
    layer = SpectralNorm(lux.Linear(3, 4))
    ps, st = setup(0, layer, dtype=torch.float64)
    u, v = _vectors(st)
    assert u.shape == (4,) and v.shape == (3,)
    torch.testing.assert_close((u.norm(), v.norm()), (torch.tensor(1.0).double(),) * 2)
    # the 15 registration iterations ran on the weight that ps starts from
    mat = ps[P]["weight"]["original"]
    sigma = torch.linalg.matrix_norm(mat, ord=2)
    torch.testing.assert_close(u @ mat @ v, sigma, rtol=1e-6, atol=0)
    again = setup(0, layer, dtype=torch.float64)[1]
    assert torch.equal(_vectors(again)[0], u)  # deterministic in the key
    assert not torch.equal(_vectors(setup(1, layer, dtype=torch.float64)[1])[0], u)
    assert lux.state_count(layer) == 7 and lux.param_count(layer) == 16


def test_spectral_norm_state_dict_matches_torch():
    layer = SpectralNorm(lux.Linear(3, 4))
    module = _torch_module(lambda: spectral_norm(nn.Linear(3, 4)))
    x = randn(5, 3)
    sd = {k: v.clone() for k, v in module.state_dict().items()}
    ps, st = lux.load_state_dict(layer, sd)
    assert list(lux.state_dict(ps, st)) == list(sd)
    with torch.no_grad():
        module.eval()
        torch.testing.assert_close(layer(x, ps, test_mode(st))[0], module(x), rtol=0, atol=0)
        module.train()
        expected = module(x)
    y, new_st = layer(x, ps, st)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    for key in ("_u", "_v"):
        torch.testing.assert_close(
            new_st[P]["weight"]["0"][key], module.state_dict()[f"{P}.weight.0.{key}"]
        )


def test_wrappers_nest_like_torch_parametrizations():
    model = WeightNorm(SpectralNorm(lux.Linear(3, 4)), names=("bias",))
    reference = weight_norm(spectral_norm(nn.Linear(3, 4, device="meta")), name="bias")
    report = check(
        model,
        randn(5, 3, dtype=torch.float64),
        torch.float64,
        reference=reference,
        gradcheck=False,  # SpectralNorm's training-mode gradient: see the module docstring
        training=(False, True),
    )
    assert report["parity[train]"] == report["parity[test]"] == "passed"
    with pytest.raises(ValueError, match="'weight' is not a parameter"):
        WeightNorm(SpectralNorm(lux.Linear(3, 4)))


def test_spectral_norm_repr():
    assert repr(SpectralNorm(lux.Linear(2, 3))).startswith("SpectralNorm(\n    name='weight',\n")
    text = repr(SpectralNorm(lux.Linear(2, 3), n_power_iterations=2, eps=1e-6, dim=1))
    assert "name='weight', n_power_iterations=2, eps=1e-06, dim=1," in text
    assert "plus 5 states." in text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "kernel"}, ValueError, "'kernel' is not a parameter of the wrapped layer"),
        ({"n_power_iterations": 0}, ValueError, "n_power_iterations must be >= 1"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"eps": -1e-3}, ValueError, "eps must be > 0"),
        ({"eps": True}, TypeError, "eps must be a float"),
        ({"dim": 2}, ValueError, r"dim=2 is out of range for 'weight' of shape \(3, 2\)"),
        ({"dim": -3}, ValueError, r"expected -2 <= dim < 2"),
        ({"name": "bias", "dim": 1}, ValueError, "expected -1 <= dim < 1"),
    ],
)
def test_spectral_norm_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SpectralNorm(lux.Linear(2, 3), **kwargs)
    # torch refuses a transposed convolution's bias with the default dim=1 too
    with pytest.raises(ValueError, match=r"dim=1 \(the default for ConvTranspose2d\)"):
        SpectralNorm(ConvTranspose2d(2, 3, 2), name="bias")


def test_dim_is_resolved_at_construction():
    assert SpectralNorm(ConvTranspose2d(2, 3, 2)).dim == 1
    assert SpectralNorm(lux.Linear(2, 3), dim=-1) == SpectralNorm(lux.Linear(2, 3), dim=1)
    assert "dim" not in repr(SpectralNorm(ConvTranspose2d(2, 3, 2)))
    # the call does not look at the wrapped layer's type: summary wraps it in a recorder
    model = lux.Chain(SpectralNorm(ConvTranspose2d(2, 3, 2)), WeightNorm(Conv2d(3, 1, 2)))
    ps, st = setup(0, model)
    table = str(lux.summary(model, randn(1, 2, 3, 3), ps, st))
    assert "(1, 3, 4, 4)" in table and "(1, 1, 3, 3)" in table


def test_a_missing_entry_names_the_wrapper_and_the_key():
    layer = SpectralNorm(lux.Linear(2, 3))
    ps, _ = setup(0, layer)
    with pytest.raises(KeyError) as info:
        layer(torch.ones(1, 2), ps, {})
    assert "st is missing keys: parametrizations.weight.0._u" in "\n".join(info.value.__notes__)
