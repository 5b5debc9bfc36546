"""freeze/unfreeze, share_parameters, layer_map and debug (lux_torch.experimental).

The contract under test: frozen parameters receive no gradient and never change while the
others train; tied parameters receive the sum of their uses' gradients and stay tied;
layer_map rewrites layers by path; debug names the layer where a NaN/Inf first appears,
in the forward or only in the backward.
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
import torch.nn.functional as F
from helpers import randn

import lux_torch as lux
from lux_torch.experimental import DebugLayer, Frozen, Shared
from lux_torch.testing import check_layer


def mlp() -> lux.Chain:
    return lux.Chain(
        lux.Linear(2, 4, activation=torch.tanh),
        lux.Chain(lux.Linear(4, 4, activation=torch.tanh), torch.relu),
        lux.Linear(4, 1),
    )


def mse(model, ps, st, data):
    x, y = data
    pred, st = model(x, ps, st)
    return ((pred - y) ** 2).mean(), st, {}


def same_objects(a, b) -> bool:
    """Same structure (key order included) and the very same tensor objects."""
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and list(a) == list(b) and all(same_objects(a[k], b[k]) for k in a)
        )
    return a is b


# --------------------------------------------------------------------------- freeze


def test_frozen_linear_conformance():
    layer = lux.freeze(lux.Linear(3, 4), "weight")

    def reference(t, x):  # the frozen weight comes from the state
        return F.linear(x, t["frozen_params.weight"], t["bias"])

    report = check_layer(
        layer, randn(2, 3), reference=reference, compile_backend="aot_eager", key=1
    )
    assert report["parity"] == "passed" and report["gradcheck"] == "passed"
    assert report["compile"] == "passed" and report["vmap"] == "passed"


def test_frozen_chain_with_batchnorm_conformance():
    # a stateful inner layer: its running statistics live in st["states"]
    model = lux.Chain(lux.Linear(3, 4), lux.BatchNorm1d(4), lux.Linear(4, 2))
    frozen = lux.freeze(model, ("layer_1", "layer_3.bias"))
    ps, st = lux.setup(2, frozen)
    assert lux.tree.paths(ps) == ["layer_2.weight", "layer_2.bias", "layer_3.weight"]
    report = check_layer(
        frozen,
        randn(5, 3, dtype=torch.float64),
        compile=False,
        key=2,
        ps=lux.tree.to(ps, dtype=torch.float64),
        st=lux.tree.to(st, dtype=torch.float64),
    )
    assert report["gradcheck[train]"] == "passed" and report["vmap[test]"] == "passed"


def test_frozen_has_the_unfrozen_layers_tensors_and_outputs():
    model = mlp()
    x = randn(5, 2)
    for which in [None, "layer_1", ("layer_1.weight", "layer_2.layer_1"), ["layer_3.bias"]]:
        frozen = lux.freeze(model, which)
        ps, st = lux.setup(7, frozen)
        ref_ps, ref_st = lux.setup(7, model)
        merged = lux.unfreeze(frozen, ps, st)[1]
        assert lux.tree.allclose(merged, ref_ps, rtol=0, atol=0)
        y, new_st = frozen(x, ps, st)
        assert torch.equal(y, model(x, ref_ps, ref_st)[0])
        assert new_st["frozen_params"] is st["frozen_params"]


def test_frozen_counts_and_repr():
    model = mlp()  # 12 + 20 + 5 = 37 parameters
    frozen = lux.freeze(model, "layer_2")
    assert lux.param_count(frozen) == 17 and lux.state_count(frozen) == 20
    text = repr(frozen)
    assert text.startswith("Frozen(")
    assert "which=('layer_2',), 20 of 37 parameters frozen" in text
    assert "Total: 17 parameters" in text and "plus 20 states" in text
    everything = lux.freeze(lux.Linear(2, 3))
    assert lux.param_count(everything) == 0 and lux.state_count(everything) == 9
    assert "all 9 parameters frozen" in repr(everything)
    # inside a container, the container's totals count trainable parameters only
    outer = lux.Chain(lux.freeze(lux.Linear(2, 3), "weight"), lux.Linear(3, 1))
    assert lux.param_count(outer) == 3 + 4 and "Total: 7 parameters" in repr(outer)


def test_frozen_parameters_get_no_gradient_and_do_not_change_under_train_step():
    model = mlp()
    frozen = lux.freeze(model, ("layer_1", "layer_3.weight"))
    ps, st = lux.setup(0, frozen)
    x = randn(16, 2)
    data = (x, torch.sin(x.sum(-1, keepdim=True)))

    # gradients exist for the trainable parameters only (the frozen ones are not in ps)
    grads = torch.func.grad(lambda p: mse(frozen, p, st, data)[0])(ps)
    assert lux.tree.paths(grads) == [
        "layer_2.layer_1.weight",
        "layer_2.layer_1.bias",
        "layer_3.bias",
    ]
    assert all(bool(g.abs().sum() > 0) for g in lux.tree.leaves(grads))

    frozen_before = {k: t.clone() for k, t in lux.state_dict({}, st["frozen_params"]).items()}
    trainable_before = lux.tree.map(torch.clone, ps)
    ts = lux.TrainState(frozen, ps, st, lux.optim.adam(1e-2))
    losses = []
    for _ in range(5):
        ts, loss, _ = lux.train_step(mse, data, ts)
        losses.append(loss.item())
    frozen_after = lux.state_dict({}, ts.states["frozen_params"])
    assert sorted(frozen_after) == ["layer_1.bias", "layer_1.weight", "layer_3.weight"]
    for name, before in frozen_before.items():
        assert torch.equal(frozen_after[name], before), name
    for path, before, after in zip(
        lux.tree.paths(ps),
        lux.tree.leaves(trainable_before),
        lux.tree.leaves(ts.params),
        strict=True,
    ):
        assert not torch.equal(before, after), f"{path} did not train"
    assert losses[-1] < losses[0]


def test_frozen_compiled_train_step_matches_eager():
    # the one inductor compilation of this file: the traced step of lux.train_step
    frozen = lux.freeze(
        lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Linear(8, 1)), "layer_1"
    )
    ps, st = lux.setup(0, frozen)
    x = randn(16, 2)
    data = (x, torch.sin(x[:, :1]))
    compiled = eager = lux.TrainState(frozen, ps, st, lux.optim.adam(1e-2))
    for _ in range(3):
        compiled, _, _ = lux.train_step(mse, data, compiled, compile=True)
        eager, _, _ = lux.train_step(mse, data, eager)
    assert lux.tree.allclose(compiled.params, eager.params, rtol=1e-5, atol=1e-6)
    assert not lux.tree.allclose(compiled.params, ps)
    frozen_after = compiled.states["frozen_params"]
    assert lux.tree.allclose(frozen_after, st["frozen_params"], rtol=0, atol=0)


def test_frozen_trains_with_torch_optim():
    frozen = lux.freeze(lux.Linear(3, 2), "bias")
    ps, st = lux.setup(0, frozen)
    bias = st["frozen_params"]["bias"].clone()
    weight = ps["weight"].clone()
    ts = lux.TrainState(frozen, ps, st, lambda params: torch.optim.Adam(params, lr=1e-2))
    x = randn(8, 3)
    for _ in range(3):
        ts, _, _ = lux.train_step(mse, (x, torch.zeros(8, 2)), ts)
    assert torch.equal(ts.states["frozen_params"]["bias"], bias)
    assert not torch.equal(ts.params["weight"], weight)


def test_freeze_and_unfreeze_trained_trees_round_trip_exactly():
    model = mlp()
    ps, st = lux.setup(3, model)
    frozen, fps, fst = lux.freeze(model, ps, st, ("layer_2.layer_1.weight", "layer_1"))
    assert isinstance(frozen, Frozen) and frozen.which == ("layer_2.layer_1.weight", "layer_1")
    assert fst["frozen_params"]["layer_1"] is ps["layer_1"]
    assert fps["layer_2"]["layer_1"]["bias"] is ps["layer_2"]["layer_1"]["bias"]
    x = randn(4, 2)
    assert torch.equal(frozen(x, fps, fst)[0], model(x, ps, st)[0])
    back, bps, bst = lux.unfreeze(frozen, fps, fst)
    assert back is model
    assert same_objects(bps, ps) and same_objects(bst, st)
    # keyword which, and which=None (everything)
    assert lux.freeze(model, ps, st, which="layer_3")[0].which == ("layer_3",)
    everything, eps, est = lux.freeze(model, ps, st)
    assert lux.tree.leaves(eps) == [] and same_objects(lux.unfreeze(everything, eps, est)[1], ps)
    assert lux.unfreeze(lux.freeze(model)) is model


def test_freeze_errors_name_the_problem():
    model = mlp()
    with pytest.raises(ValueError, match=r"unknown parameter path\(s\) 'layer_9'") as err:
        lux.freeze(model, ["layer_1", "layer_9"])
    assert "valid paths: layer_1, layer_1.weight, layer_1.bias, layer_2" in str(err.value)
    with pytest.raises(ValueError, match=r"'layer_1\.kernel'"):
        lux.freeze(model, "layer_1.kernel")
    with pytest.raises(ValueError, match="which is empty"):
        lux.freeze(model, [])
    with pytest.raises(TypeError, match="non-empty str"):
        lux.freeze(model, [1])  # type: ignore[list-item]
    ps, st = lux.setup(0, model)
    with pytest.raises(TypeError, match=r"freeze\(layer, ps, st, which=None\)"):
        lux.freeze(model, ps)
    with pytest.raises(ValueError, match="layer_3"):  # trees that do not match the model
        lux.freeze(model, {k: v for k, v in ps.items() if k != "layer_3"}, st)
    with pytest.raises(TypeError, match="expected a Frozen layer"):
        lux.unfreeze(model, ps, st)  # type: ignore[call-overload]
    frozen = lux.freeze(model, "layer_1")
    with pytest.raises(ValueError, match="frozen_params"):
        lux.unfreeze(frozen, ps, st)  # the unfrozen layout


# --------------------------------------------------------------------------- sharing


def tied_chain() -> lux.Chain:
    return lux.Chain(
        lux.Linear(3, 3, activation=torch.tanh),
        lux.Linear(3, 3, activation=torch.tanh),
        lux.Linear(3, 3),
    )


def test_shared_conformance_with_a_tied_reference():
    model = Shared(tied_chain(), [("layer_1", "layer_3")])

    def reference(t, x):  # the same tensors used twice: autograd sums both uses
        w, b = t["layer_1.weight"], t["layer_1.bias"]
        h = torch.tanh(F.linear(x, w, b))
        h = torch.tanh(F.linear(h, t["layer_2.weight"], t["layer_2.bias"]))
        return F.linear(h, w, b)

    report = check_layer(model, randn(4, 3), reference=reference, compile_backend="aot_eager")
    assert report["parity"] == "passed" and report["gradcheck"] == "passed"
    assert report["compile"] == "passed" and report["vmap"] == "passed"
    assert lux.param_count(model) == 24 and "Total: 24 parameters" in repr(model)


def test_tied_parameters_receive_the_sum_of_their_uses_gradients():
    inner = tied_chain()
    full_ps, st = lux.setup(0, inner)
    x = randn(6, 3)
    data = (x, randn(6, 3, seed=2))
    model, ps = lux.share_parameters(inner, full_ps, [("layer_1", "layer_3")])
    assert isinstance(model, Shared) and sorted(ps) == ["layer_1", "layer_2"]
    assert ps["layer_1"]["weight"] is full_ps["layer_1"]["weight"]

    grads = torch.func.grad(lambda p: mse(model, p, st, data)[0])(ps)
    # by hand: the untied model at the tied point, gradients of both uses added up
    untied_ps = model.expand(ps)
    untied = torch.func.grad(lambda p: mse(inner, p, st, data)[0])(untied_ps)
    for name in ("weight", "bias"):
        expected = untied["layer_1"][name] + untied["layer_3"][name]
        torch.testing.assert_close(grads["layer_1"][name], expected, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(grads["layer_1"][name], untied["layer_1"][name])
    torch.testing.assert_close(grads["layer_2"], untied["layer_2"], rtol=0, atol=0)

    # torch.autograd (train_step's eager path) agrees
    leaves = lux.tree.map(lambda t: t.detach().requires_grad_(), ps)
    loss = mse(model, leaves, st, data)[0]
    auto = torch.autograd.grad(loss, lux.tree.leaves(leaves))
    for a, g in zip(auto, lux.tree.leaves(grads), strict=True):
        torch.testing.assert_close(a, g, rtol=1e-6, atol=1e-7)


def test_tied_tensors_stay_tied_through_training():
    inner = lux.Chain(
        encoder=lux.Linear(4, 2, bias=False, activation=torch.tanh),
        decoder=lux.Linear(2, 4, bias=False),
    )
    # tie one tensor inside a subtree each; transposed shapes would be refused (below)
    inner = lux.Chain(inner, lux.Linear(4, 4, bias=False), lux.Linear(4, 4, bias=False))
    full_ps, st = lux.setup(1, inner)
    model, ps = lux.share_parameters(inner, full_ps, [("layer_2.weight", "layer_3.weight")])
    assert ps["layer_3"] == {}  # the tied entry lives at the group's first path only
    x = randn(8, 4)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-2))
    start = ps["layer_2"]["weight"].clone()
    for _ in range(4):
        ts, _, _ = lux.train_step(mse, (x, x), ts)
    full = model.expand(ts.params)
    assert full["layer_2"]["weight"] is full["layer_3"]["weight"]
    assert not torch.equal(full["layer_2"]["weight"], start)
    # the inner model with the expanded tree computes exactly what the shared one does
    assert torch.equal(model(x, ts.params, ts.states)[0], inner(x, full, ts.states)[0])


def test_share_parameters_lux_form_and_new_parameters():
    inner = tied_chain()
    ps, _ = lux.setup(0, inner)
    tied = lux.share_parameters(ps, [("layer_1.weight", "layer_2.weight", "layer_3.weight")])
    assert tied["layer_2"]["weight"] is ps["layer_1"]["weight"]
    assert tied["layer_3"]["weight"] is ps["layer_1"]["weight"]
    assert tied["layer_2"]["bias"] is ps["layer_2"]["bias"]
    assert ps["layer_2"]["weight"] is not ps["layer_1"]["weight"]  # input untouched
    new = torch.eye(3)
    tied = lux.share_parameters(ps, [("layer_1.weight", "layer_3.weight")], new_parameters=[new])
    assert tied["layer_1"]["weight"] is new and tied["layer_3"]["weight"] is new
    model, sps = lux.share_parameters(
        inner, ps, [("layer_1.weight", "layer_3.weight")], new_parameters=[new]
    )
    assert model.expand(sps)["layer_3"]["weight"] is new
    assert sps["layer_1"]["weight"] is new and "weight" not in sps["layer_3"]


def test_share_parameters_errors_name_the_problem():
    inner = lux.Chain(lux.Linear(3, 4), lux.Linear(4, 3), lux.Linear(3, 4))
    ps, _ = lux.setup(0, inner)
    with pytest.raises(ValueError) as err:
        lux.share_parameters(inner, ps, [("layer_1.weight", "layer_2.weight")])
    message = str(err.value)
    assert "'layer_1.weight' (shape (4, 3), float32)" in message
    assert "'layer_2.weight' (shape (3, 4), float32)" in message
    with pytest.raises(ValueError, match=r"'layer_1' \(\{weight: \(4, 3\), bias: \(4,\)\}\)"):
        Shared(inner, [("layer_1", "layer_2")])
    with pytest.raises(ValueError, match=r"unknown parameter path.*'layer_4'.*valid paths"):
        lux.share_parameters(ps, [("layer_1", "layer_4")])
    with pytest.raises(ValueError, match="overlaps 'layer_1'"):
        Shared(inner, [("layer_1", "layer_3"), ("layer_1.weight", "layer_3.weight")])
    with pytest.raises(TypeError, match="flat sequence of paths"):
        lux.share_parameters(ps, ("layer_1", "layer_3"))
    with pytest.raises(ValueError, match="two or more paths"):
        Shared(inner, [("layer_1",)])
    with pytest.raises(ValueError, match="new_parameters has 2 entries"):
        lux.share_parameters(ps, [("layer_1", "layer_3")], new_parameters=[{}, {}])
    with pytest.raises(ValueError, match="the new parameters for group"):
        lux.share_parameters(ps, [("layer_1.bias", "layer_3.bias")], new_parameters=[ps])
    with pytest.raises(TypeError, match="share_parameters"):
        lux.share_parameters(inner, ps)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- layer_map


def test_layer_map_visits_children_before_parents_with_paths():
    model = mlp()
    ps, st = lux.setup(0, model)
    seen = []

    def record(layer, p, s, path):
        seen.append((path, type(layer).__name__))
        return layer, p, s

    new_model, new_ps, new_st = lux.layer_map(record, model, ps, st)
    assert new_st == st
    assert seen == [
        ("layer_1", "Linear"),
        ("layer_2.layer_1", "Linear"),
        ("layer_2.layer_2", "WrappedFunction"),
        ("layer_2", "Chain"),
        ("layer_3", "Linear"),
        ("", "Chain"),
    ]
    assert new_model == model and lux.tree.allclose(new_ps, ps, rtol=0, atol=0)


def test_layer_map_rewrites_layers_and_parameters_by_path():
    model = mlp()
    ps, st = lux.setup(0, model)

    def rewrite(layer, p, s, path):
        if isinstance(layer, lux.Linear) and path.startswith("layer_2"):
            p = {**p, "weight": torch.zeros_like(p["weight"])}
        if isinstance(layer, lux.WrappedFunction):  # swap the activation
            layer = lux.WrappedFunction(torch.sigmoid)
        if isinstance(layer, lux.Linear) and path == "layer_3":
            layer = dataclasses.replace(layer, activation=torch.exp)
        return layer, p, s

    new_model, new_ps, new_st = lux.layer_map(rewrite, model, ps, st)
    assert torch.equal(new_ps["layer_2"]["layer_1"]["weight"], torch.zeros(4, 4))
    assert new_ps["layer_1"]["weight"] is ps["layer_1"]["weight"]
    assert not torch.equal(ps["layer_2"]["layer_1"]["weight"], torch.zeros(4, 4))  # pure
    assert isinstance(new_model, lux.Chain)
    assert new_model["layer_2"]["layer_2"] == lux.WrappedFunction(torch.sigmoid)
    assert new_model["layer_3"].activation is torch.exp and model["layer_3"].activation is None
    # with zero weights, layer_2's first output is tanh(bias), then sigmoid
    x = randn(3, 2)
    h = torch.sigmoid(torch.tanh(ps["layer_2"]["layer_1"]["bias"])).expand(3, 4)
    expected = torch.exp(F.linear(h, ps["layer_3"]["weight"], ps["layer_3"]["bias"]))
    torch.testing.assert_close(new_model(x, new_ps, new_st)[0], expected)


def test_layer_map_leaves_parent_laid_out_children_to_their_parent():
    model = lux.Chain(lux.freeze(lux.Linear(2, 3), "weight"), lux.Linear(3, 1))
    ps, st = lux.setup(0, model)
    paths = []

    def record(la, p, s, path):
        paths.append(path)
        return la, p, s

    lux.layer_map(record, model, ps, st)
    assert paths == ["layer_1", "layer_2", ""]  # Frozen's inner layer has no ps[name]


def test_layer_map_errors_name_the_path():
    model = mlp()
    ps, st = lux.setup(0, model)
    with pytest.raises(TypeError, match=r"for layer_2\.layer_1 \(Linear\(4 => 4, tanh\)\)"):
        lux.layer_map(
            lambda la, p, s, path: p if path == "layer_2.layer_1" else (la, p, s),  # type: ignore[arg-type, return-value]
            model,
            ps,
            st,
        )
    with pytest.raises(TypeError, match="must be a lux_torch Layer"):
        lux.layer_map(lambda *a: a[:3], ps, ps, st)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- debug


def nan_model() -> lux.Chain:
    return lux.Chain(
        lux.Linear(2, 4),
        lux.Chain(lux.Linear(4, 4), torch.log),  # log of negative values: NaN
        lux.Linear(4, 1),
    )


def test_debug_is_transparent():
    model = mlp()
    debugged = lux.debug(model)
    assert isinstance(debugged, DebugLayer)
    ps, st = lux.setup(0, model)
    dps, dst = lux.setup(0, debugged)
    assert dst == st
    assert lux.tree.allclose(ps, dps, rtol=0, atol=0) and lux.param_count(debugged) == 37
    x = randn(5, 2)
    assert torch.equal(debugged(x, ps, st)[0], model(x, ps, st)[0])
    g = torch.func.grad(lambda p: debugged(x, p, st)[0].sum())(ps)
    ref = torch.func.grad(lambda p: model(x, p, st)[0].sum())(ps)
    assert lux.tree.allclose(g, ref, rtol=0, atol=0)
    report = check_layer(
        debugged,
        randn(3, 2, dtype=torch.float64),
        compile=False,
        vmap=False,
        ps=lux.tree.to(ps, dtype=torch.float64),
        st=st,
    )
    assert report["gradcheck"] == "passed" and report["purity"] == "passed"


def test_debug_names_the_layer_whose_output_is_nan():
    model = nan_model()
    ps, st = lux.setup(0, model)
    x = randn(8, 2)
    assert torch.isnan(model(x, ps, st)[0]).any()  # undetected without debug
    with pytest.raises(FloatingPointError) as err:
        lux.debug(model)(x, ps, st)
    assert str(err.value).startswith("lux.debug: layer_2.layer_2 (WrappedFunction(log)): ")
    assert "NaN of 32 elements in the output y" in str(err.value)


def test_debug_checks_inputs_and_parameters():
    model = mlp()
    ps, st = lux.setup(0, model)
    x = randn(3, 2)
    bad_x = x.clone()
    bad_x[1, 0] = torch.inf
    with pytest.raises(FloatingPointError, match=r"model \(Chain\(...\)\): 1 Inf of 6 elements"):
        lux.debug(model)(bad_x, ps, st)
    bad_w = ps["layer_2"]["layer_1"]["weight"].clone()
    bad_w[0, 0] = torch.nan
    bad_ps = {
        **ps,
        "layer_2": {
            **ps["layer_2"],
            "layer_1": {"weight": bad_w, "bias": ps["layer_2"]["layer_1"]["bias"]},
        },
    }
    with pytest.raises(FloatingPointError, match=r"the parameter ps\.layer_2\.layer_1\.weight"):
        lux.debug(model)(x, bad_ps, st)
    # forward=False skips these checks
    y, _ = lux.debug(model, forward=False)(x, bad_ps, st)
    assert torch.isnan(y).any()


@pytest.mark.parametrize("ad", ["func", "autograd"])
def test_debug_catches_inf_produced_only_in_the_backward(ad):
    # sqrt(x * x) at x = 0 (a zero input row, no bias): the forward is finite, but sqrt's
    # derivative 1 / (2 sqrt(0)) is Inf, and the square's backward turns it into NaN
    model = lux.Chain(
        lux.Linear(2, 4, bias=False), lux.Chain(torch.square, torch.sqrt), lux.Linear(4, 1)
    )
    ps, st = lux.setup(0, model)
    x = torch.cat([torch.zeros(1, 2), randn(7, 2)])
    y = model(x, ps, st)[0]
    assert torch.isfinite(y).all()
    data = (x, torch.zeros_like(y))
    ts = lux.TrainState(lux.debug(model), ps, st, lux.optim.adam(1e-3))
    with pytest.raises(FloatingPointError) as err:
        lux.train_step(mse, data, ts, ad=ad)
    message = str(err.value)
    assert message.startswith("lux.debug: layer_2.layer_2 (WrappedFunction(sqrt)): ")
    assert "4 Inf of 32 elements in the gradient w.r.t. the input x" in message
    # without debug, the same step only knows that some gradient is not finite
    ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-3))
    with pytest.raises(FloatingPointError, match="a gradient is not finite"):
        lux.train_step(mse, data, ts, ad=ad)
    # backward=False: the forward pass is clean, so debug raises nothing
    grads = torch.func.grad(lambda p: mse(lux.debug(model, backward=False), p, st, data)[0])(ps)
    assert torch.isnan(grads["layer_1"]["weight"]).any()


def test_debug_keeps_the_layer_path_of_shape_errors():
    model = lux.Chain(lux.Linear(2, 16), lux.Chain(lux.Linear(8, 1)))
    ps, st = lux.setup(0, model)
    with pytest.raises(RuntimeError) as err:
        lux.debug(model)(randn(4, 2), ps, st)
    notes = "\n".join(getattr(err.value, "__notes__", []))
    assert "in layer_2.layer_1 (Linear(8 => 1)): expected input of shape (*, 8), got (4, 16)" in (
        notes
    )


def test_debug_under_compile_and_vmap():
    model = nan_model()
    ps, st = lux.setup(0, model)
    debugged = lux.debug(model)
    x = randn(3, 2)
    # fullgraph=True: lux's error is the one raised (not Dynamo's "Observed exception" with
    # lux's message in its debug context); otherwise Dynamo runs the debug model eagerly
    compiled = torch.compile(lambda x, p, s: debugged(x, p, s), fullgraph=True, backend="eager")
    with pytest.raises(RuntimeError) as info:
        compiled(x, ps, st)
    assert str(info.value).startswith("lux.debug: model (Chain(...)): a debug model checks values")
    assert "runs eagerly only" in str(info.value)
    assert "Observed exception" not in str(info.value)
    assert type(info.value).__module__ == "lux_torch.experimental.debugging"
    ts = lux.TrainState(debugged, ps, st, lux.optim.sgd(0.1))
    # the step cannot be traced into one graph: the warning says why before the
    # torch.compile fallback runs, and the fallback refuses with lux's message
    with (
        pytest.warns(RuntimeWarning, match="could not trace it into one graph"),
        pytest.raises(RuntimeError, match=r"^lux\.debug: model .*runs eagerly only"),
    ):
        lux.train_step(lux.losses.MSELoss(), (x, randn(3, 1)), ts, compile=True)
    compiled = torch.compile(lambda x, p, s: debugged(x, p, s), backend="eager")
    with pytest.raises(FloatingPointError, match=r"layer_2\.layer_2 \(WrappedFunction\(log\)\)"):
        compiled(x, ps, st)
    stacked = lux.tree.stack([ps, ps])
    with pytest.raises(RuntimeError, match=r"lux\.debug: .*not under torch\.func\.vmap"):
        torch.func.vmap(lambda p: debugged(x, p, st)[0])(stacked)


def test_debug_reaches_inside_frozen_and_shared_layers():
    inner = nan_model()
    ps, st = lux.setup(0, inner)
    x = randn(8, 2)
    frozen, fps, fst = lux.freeze(inner, ps, st, "layer_1")
    with pytest.raises(FloatingPointError, match=r"layer\.layer_2\.layer_2 \(WrappedFunction"):
        lux.debug(frozen)(x, fps, fst)
    shared, sps = lux.share_parameters(inner, ps, [("layer_1.bias", "layer_2.layer_1.bias")])
    with pytest.raises(FloatingPointError, match=r"layer\.layer_2\.layer_2 \(WrappedFunction"):
        lux.debug(shared)(x, sps, st)


def test_pickles_round_trip_and_load_from_the_old_module_path():
    """The wrappers pickle by configuration; pickles written when the tools lived in one
    module (classes referenced as ``lux_torch.experimental.X``) still load."""
    layers = [
        lux.freeze(mlp(), "layer_1"),
        Shared(lux.Chain(lux.Linear(4, 4), lux.Linear(4, 4)), [("layer_1", "layer_2")]),
        lux.debug(mlp()),
    ]
    for layer in layers:
        cls = type(layer)
        assert pickle.loads(pickle.dumps(layer)) == layer
        text = pickle.dumps(layer, protocol=0)  # text pickle: "c<module>\n<name>\n"
        new_ref = f"{cls.__module__}\n{cls.__name__}\n".encode()
        assert cls.__module__ != "lux_torch.experimental" and new_ref in text
        old = text.replace(new_ref, f"lux_torch.experimental\n{cls.__name__}\n".encode())
        assert pickle.loads(old) == layer
