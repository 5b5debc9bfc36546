"""``lux.from_torch`` (any nn.Module as a pure layer) and ``lux.to_torch`` (a lux model as an
nn.Module).

from_torch: the conformance harness with the module as its own reference (parity of
outputs, running statistics and gradients, purity, determinism, gradcheck, compile, vmap),
then the issue's "must show": a torch model with BatchNorm gives the module's outputs and
running statistics, leaves the module untouched, and trains under ``torch.func.grad`` and
``vmap`` (also in the case where plain ``functional_call`` + ``vmap`` fails, pytorch issue
85533); tied weights stay tied; modules that update buffers in place.

to_torch: ``state_dict`` names, 50 steps of ``torch.optim.Adam`` equal 50 steps of
``lux.optim.adam`` through ``lux.train_step``, BatchNorm running statistics in buffers
(train mode updates them, eval mode does not), random keys advance, round trips, errors.

Module tensors are set from ``lux.random`` keys (never torch's global RNG); running
variances are kept positive.
"""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any, TypeVar

import pytest
import torch
import torch.nn.functional as F
from helpers import check, fresh_call, randn
from torch import nn

import lux_torch as lux
from lux_torch import tree as ltree
from lux_torch.interop import LuxModule, TorchModule
from lux_torch.testing import check_layer
from lux_torch.tree import Static

F32, F64 = torch.float32, torch.float64


M = TypeVar("M", bound=nn.Module)


def _filled(module: M, seed: int = 0) -> M:
    """``module`` with every floating tensor drawn from a lux key (variances positive)."""
    with torch.no_grad():
        for i, (name, t) in enumerate(module.state_dict(keep_vars=True).items()):
            if t.is_floating_point():
                value = lux.random.normal(lux.random.key(seed * 1000 + i), tuple(t.shape))
                if name.endswith("running_var"):
                    value = value.abs() + 0.5
                t.copy_(value.to(t.dtype))
    return module


def _mlp_bn() -> nn.Sequential:
    return _filled(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)))


def _conv_bn() -> nn.Sequential:
    return _filled(
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.BatchNorm2d(3, momentum=None),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(3, 2),
        )
    )


class _Tied(nn.Module):
    """Two linear maps sharing one weight Parameter (registered as a.weight and b.weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.b(torch.tanh(self.a(x)))
        return y


class _Counter(nn.Module):
    """Updates a buffer in place at every call (a custom module, not a BatchNorm)."""

    calls: torch.Tensor
    total: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((3,), 2.0))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("total", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        self.total.add_(x.sum(0))
        return x * self.scale


def _module_snapshot(module: nn.Module) -> dict[str, Any]:
    """Names, values, versions and modes: what "the module is untouched" compares."""
    tensors = {n: (t.detach().clone(), t._version) for n, t in module.state_dict().items()}
    modes = [m.training for m in module.modules()]
    return {"tensors": tensors, "modes": modes}


def _assert_untouched(module: nn.Module, before: dict[str, Any]) -> None:
    after = _module_snapshot(module)
    assert after["modes"] == before["modes"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, (value, version) in before["tensors"].items():
        new_value, new_version = after["tensors"][name]
        assert torch.equal(new_value, value), name
        assert new_version == version, name


# --------------------------------------------------------------------------- from_torch


@pytest.mark.parametrize("dtype", [F32, F64])
def test_from_torch_batchnorm_mlp_passes_the_harness(dtype: torch.dtype) -> None:
    net = _mlp_bn()
    report = check(
        lux.from_torch(net),
        randn(5, 3, dtype=dtype),
        dtype,
        reference=net,
        compile_backend="aot_eager",  # graph capture; inductor: test_compile_fullgraph_...
    )
    for mode in ("train", "test"):
        for name in ("parity", "purity", "gradcheck", "vmap"):
            assert report[f"{name}[{mode}]"] == "passed"
        expected = "passed" if dtype == F32 else "skipped: disabled"
        assert report[f"compile[{mode}]"] == expected


def test_from_torch_conv_and_tied_modules_pass_the_harness() -> None:
    conv = _conv_bn().double()
    report = check_layer(
        lux.from_torch(conv),
        randn(2, 2, 3, 3, dtype=F64),
        reference=conv,
        compile_backend="aot_eager",
    )
    assert report["parity[train]"] == report["vmap[train]"] == "passed"
    tied = _filled(_Tied()).double()
    report = check_layer(
        lux.from_torch(tied), randn(4, 3, dtype=F64), reference=tied, compile=False
    )
    for mode in ("train", "test"):
        assert report[f"parity[{mode}]"] == report[f"vmap[{mode}]"] == "passed"


def test_ps_and_st_follow_the_module_names() -> None:
    net = _mlp_bn()
    layer = lux.from_torch(net)
    ps, st = lux.setup(0, layer)
    assert set(ps) == {"0", "1", "3"}
    assert set(ps["1"]) == {"weight", "bias"}
    assert set(st) == {"1", "training"}
    assert st["training"] == Static(True)
    assert set(st["1"]) == {"running_mean", "running_var", "num_batches_tracked"}
    assert sorted(lux.state_dict(ps, st)) == sorted(net.state_dict())
    for name, t in lux.state_dict(ps, st).items():
        assert torch.equal(t, net.state_dict()[name])
        assert t.data_ptr() != net.state_dict()[name].data_ptr()  # copies
        assert not t.requires_grad
    assert lux.param_count(layer) == sum(p.numel() for p in net.parameters())
    assert lux.state_count(layer) == 4 + 4 + 1
    assert repr(layer) == "TorchModule(Sequential)  # 34 parameters, plus 9 states"
    # the flag starts as the module's mode
    assert lux.init_state(0, lux.from_torch(net.eval()))["training"] == Static(False)


def test_counting_allocates_nothing() -> None:
    layer = lux.from_torch(_mlp_bn())
    ps = lux.init_params(0, layer, device="meta")
    assert all(t.device.type == "meta" for t in ltree.leaves(ps))


def test_batchnorm_module_outputs_stats_and_untouched_module() -> None:
    """Must show: the module's outputs and running statistics; the module is untouched."""
    net = _mlp_bn()
    before = _module_snapshot(net)
    layer = lux.from_torch(net)
    ps, st = lux.setup(0, layer)
    st_before = ltree.map(torch.clone, st)
    reference = copy.deepcopy(net).train()
    for step in range(3):
        x = randn(6, 3, seed=step)
        y, st = layer(x, ps, st)
        torch.testing.assert_close(y, reference(x), rtol=1e-5, atol=1e-6)
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(lux.state_dict(ps, st)[name], buffer, rtol=1e-5, atol=1e-6)
    assert int(st["1"]["num_batches_tracked"]) == 3
    # test mode: eval behaviour with the new running statistics; nothing changes
    x = randn(4, 3, seed=9)
    y, st_test = layer(x, ps, lux.test_mode(st))
    torch.testing.assert_close(y, reference.eval()(x), rtol=1e-5, atol=1e-6)
    assert ltree.allclose(ltree.map(torch.clone, st_test), lux.test_mode(st), rtol=0, atol=0)
    _assert_untouched(net, before)
    # the first st given is untouched too
    assert torch.equal(lux.setup(0, layer)[1]["1"]["running_mean"], st_before["1"]["running_mean"])


@pytest.mark.parametrize("momentum", [0.3, None])
@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda m: nn.BatchNorm1d(3, momentum=m), (0, 3)),
        (lambda m: nn.BatchNorm1d(3, momentum=m), (2, 3, 0)),
        (lambda m: nn.BatchNorm2d(3, momentum=m, bias=False), (0, 3, 2, 2)),
        (lambda m: nn.BatchNorm3d(3, momentum=m), (0, 3, 1, 2, 2)),
    ],
)
def test_batchnorm_module_on_an_empty_batch_only_counts_as_torch(make, shape, momentum) -> None:
    """torch leaves the running statistics of an empty training batch as they are and only
    increments ``num_batches_tracked`` (also the cumulative average, ``momentum=None``)."""
    net = _filled(make(momentum))
    net.num_batches_tracked.fill_(4)
    layer = lux.from_torch(net)
    ps, st = lux.setup(0, layer)
    reference = copy.deepcopy(net).train()
    x = randn(*shape)
    y, new_st = layer(x, ps, st)
    assert y.shape == reference(x).shape == x.shape
    for name, buffer in reference.named_buffers():
        assert torch.equal(new_st[name], buffer), name
    assert torch.equal(new_st["running_mean"], st["running_mean"])
    assert int(new_st["num_batches_tracked"]) == 5
    compiled = torch.compile(fresh_call(layer), fullgraph=True, backend="aot_eager", dynamic=False)
    assert ltree.allclose(compiled(x, ps, st)[1], new_st, rtol=0, atol=0)


def test_test_mode_does_not_switch_the_users_module() -> None:
    net = _filled(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)))
    layer = lux.from_torch(net)
    ps, st = lux.setup(0, layer)
    x = randn(8, 3)
    y, _ = layer(x, ps, lux.test_mode(st))
    torch.testing.assert_close(y, net[0](x))  # no dropout in test mode
    assert net.training and net[1].training


def test_grad_with_batchnorm_equals_torch_autograd() -> None:
    """Must show: trains under torch.func.grad (new running statistics as aux output)."""
    net = _mlp_bn()
    layer = lux.from_torch(net)
    ps, st = lux.setup(0, layer)
    x, target = randn(6, 3), randn(6, 2, seed=2)

    def loss(p: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        y, new_st = layer(x, p, st)
        return F.mse_loss(y, target), new_st

    grads, new_st = torch.func.grad(loss, has_aux=True)(ps)
    reference = copy.deepcopy(net)
    F.mse_loss(reference(x), target).backward()
    for name, p in reference.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(lux.state_dict(grads, {})[name], p.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_st["1"]["running_mean"], reference[1].running_mean)
    # a few steps of gradient descent lower the loss
    first = float(loss(ps)[0])
    for _ in range(20):
        grads, st = torch.func.grad(loss, has_aux=True)(ps)
        ps = ltree.map(lambda p, g: p - 0.1 * g, ps, grads)
    assert float(loss(ps)[0]) < 0.5 * first


def _ensemble(layer: TorchModule, n: int) -> dict[str, Any]:
    ps = lux.init_params(0, layer)
    result: dict[str, Any] = ltree.stack(
        [ltree.map(lambda t, i=i: t * (1 + 0.1 * i), ps) for i in range(n)]
    )
    return result


def test_vmap_over_parameters_inputs_and_shared_state_with_batchnorm() -> None:
    """Must show: vmap of a BatchNorm module; the case where plain torch.func fails."""
    net = _mlp_bn()
    layer = lux.from_torch(net)
    st = lux.init_state(0, layer)
    stacked_ps = _ensemble(layer, 3)
    xs = torch.stack([randn(5, 3, seed=s) for s in range(3)])

    ys, new_st = torch.func.vmap(layer, in_dims=(0, 0, None))(xs, stacked_ps, st)
    for i, ps in enumerate(ltree.unstack(stacked_ps)):
        y, st_i = layer(xs[i], ps, st)
        torch.testing.assert_close(ys[i], y)
        for name, t in lux.state_dict({}, st_i).items():
            torch.testing.assert_close(lux.state_dict({}, new_st)[name][i], t)
        member = copy.deepcopy(net)
        member.load_state_dict(lux.state_dict(ps, st))
        torch.testing.assert_close(ys[i], member(xs[i]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new_st["1"]["running_var"][i], member[1].running_var)

    # plain torch: functional_call + vmap updates the unbatched buffers in place and fails
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    params = {n: t for n, t in lux.state_dict(stacked_ps, {}).items()}
    with pytest.raises(RuntimeError, match=r"in-place|inplace|batched"):
        torch.func.vmap(
            lambda x, p: torch.func.functional_call(net, p | buffers, (x,)), in_dims=(0, 0)
        )(xs, params)


def test_vmap_over_stacked_states_with_an_in_place_buffer_module() -> None:
    layer = lux.from_torch(_Counter())
    ps, st = lux.setup(0, layer)
    stacked_st = ltree.stack([st, ltree.map(lambda t: t + 1, st)])
    x = randn(4, 3)
    y, new_st = torch.func.vmap(layer, in_dims=(None, None, 0))(x, ps, stacked_st)
    torch.testing.assert_close(y, torch.stack([2 * x, 2 * x]))
    assert new_st["calls"].tolist() == [1, 2]
    torch.testing.assert_close(new_st["total"][1], 1 + x.sum(0))
    assert stacked_st["calls"].tolist() == [0, 1]  # the given state is not modified


def test_in_place_buffer_updates_hit_copies() -> None:
    module = _Counter()
    layer = lux.from_torch(module)
    ps, st = lux.setup(0, layer)
    x = randn(2, 3)
    _, st1 = layer(x, ps, st)
    _, st2 = layer(x, ps, st1)
    assert (int(st["calls"]), int(st1["calls"]), int(st2["calls"])) == (0, 1, 2)
    torch.testing.assert_close(st2["total"], 2 * x.sum(0))
    assert int(module.calls) == 0 and module.calls._version == 0


def test_compile_fullgraph_matches_eager() -> None:
    """One graph per mode; inductor for the training mode (the running-statistics update)."""
    layer = lux.from_torch(_mlp_bn())
    ps, st = lux.setup(0, layer)
    x = randn(6, 3)
    for mode, backend in ((lux.train_mode, "inductor"), (lux.test_mode, "aot_eager")):
        compiled = torch.compile(
            lambda x, p, s: layer(x, p, s), fullgraph=True, dynamic=False, backend=backend
        )
        y, new_st = compiled(x, ps, mode(st))
        y_ref, st_ref = layer(x, ps, mode(st))
        torch.testing.assert_close(y, y_ref)
        assert ltree.structure(new_st) == ltree.structure(st_ref)
        assert ltree.allclose(new_st, st_ref)


def test_copy_deepcopy_and_pickle_rebuild_the_layer() -> None:
    net = _mlp_bn()
    layer = lux.from_torch(net)
    ps, st = lux.setup(0, layer)
    x = randn(6, 3)
    y, _ = layer(x, ps, st)
    assert copy.copy(layer) == layer
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert isinstance(other, TorchModule) and other != layer  # another module object
        assert sorted(other.module.state_dict()) == sorted(net.state_dict())
        torch.testing.assert_close(other(x, ps, st)[0], y)
    # a LuxModule deep-copies (sharing its immutable lux model) like any nn.Module
    model = lux.Chain(lux.Linear(3, 2), lux.BatchNorm1d(2))
    module = lux.to_torch(model, *lux.setup(0, model))
    twin = copy.deepcopy(module)
    assert twin.lux_model is model
    assert twin.get_parameter("layer_1.weight") is not module.get_parameter("layer_1.weight")
    torch.testing.assert_close(twin(x), module(x))


def test_tied_weights_stay_tied() -> None:
    module = _filled(_Tied())
    layer = lux.from_torch(module)
    ps, st = lux.setup(0, layer)
    assert "weight" in ps["a"] and "weight" not in ps["b"]  # once, under the first name
    assert set(ps["b"]) == {"bias"}
    x = randn(4, 3)
    y, _ = layer(x, ps, st)
    torch.testing.assert_close(y, module(x))
    # the tied weight's gradient is the sum over both uses (as in torch)
    grads = torch.func.grad(lambda p: layer(x, p, st)[0].sum())(ps)
    module.zero_grad()
    module(x).sum().backward()
    assert module.a.weight.grad is not None
    torch.testing.assert_close(grads["a"]["weight"], module.a.weight.grad)
    # a new value of the tied weight is used by both maps
    ps2 = {**ps, "a": {**ps["a"], "weight": torch.zeros(3, 3)}}
    y2, _ = layer(x, ps2, st)
    torch.testing.assert_close(y2, ps["b"]["bias"].expand(4, 3))


def test_tuple_inputs_are_unpacked() -> None:
    module = _filled(nn.Bilinear(2, 3, 4))
    layer = lux.from_torch(module)
    ps, st = lux.setup(0, layer)
    a, b = randn(5, 2), randn(5, 3, seed=2)
    y, _ = layer((a, b), ps, st)
    torch.testing.assert_close(y, module(a, b))


def test_identity_equality_and_concurrent_calls() -> None:
    net = _mlp_bn()
    assert lux.from_torch(net) == lux.from_torch(net)
    assert hash(lux.from_torch(net)) == hash(lux.from_torch(net))
    assert lux.from_torch(net) != lux.from_torch(copy.deepcopy(net))
    layer = lux.from_torch(net)
    ps, st = lux.setup(0, layer)
    x = randn(6, 3)
    expected = {mode: layer(x, ps, st if mode else lux.test_mode(st))[0] for mode in (True, False)}
    results: list[bool] = []

    def worker(mode: bool) -> None:
        for _ in range(20):
            y, _ = layer(x, ps, st if mode else lux.test_mode(st))
            results.append(torch.equal(y, expected[mode]))

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and all(results)


def test_from_torch_errors() -> None:
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module, got int"):
        lux.from_torch(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uninitialized"):
        lux.from_torch(nn.LazyLinear(3))
    layer = lux.from_torch(_mlp_bn())
    ps, st = lux.setup(0, layer)
    del st["1"]["running_mean"]
    with pytest.raises(KeyError, match="running_mean"):
        layer(randn(4, 3), ps, st)


# --------------------------------------------------------------------------- to_torch


def _lux_mlp() -> lux.Chain:
    return lux.Chain(lux.Linear(3, 16, activation=torch.tanh), lux.Linear(16, 1))


def test_to_torch_registers_parameters_and_buffers_by_lux_names() -> None:
    model = lux.Chain(lux.Linear(3, 4), lux.BatchNorm1d(4), lux.Dropout(0.5), lux.Linear(4, 2))
    ps, st = lux.setup(0, model)
    module = lux.to_torch(model, ps, st)
    assert isinstance(module, LuxModule) and module.lux_model is model
    assert sorted(module.state_dict()) == sorted(lux.state_dict(ps, st))
    assert sorted(n for n, _ in module.named_parameters()) == sorted(lux.state_dict(ps, {}))
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in module.parameters())
    assert sorted(n for n, _ in module.named_buffers()) == sorted(lux.state_dict({}, st))
    assert torch.equal(module.get_parameter("layer_1.weight"), ps["layer_1"]["weight"])
    assert module.get_parameter("layer_1.weight").data_ptr() != ps["layer_1"]["weight"].data_ptr()
    assert module.training
    assert "Chain" in repr(module)
    # a module's state_dict loads back into the lux trees
    ps2, st2 = lux.load_state_dict(model, module.state_dict())
    assert ltree.allclose(ps2, ps) and ltree.allclose(st2, st)


def test_to_torch_with_torch_adam_equals_lux_adam() -> None:
    """Must show: 50 steps of torch.optim.Adam on to_torch(...) == lux.optim.adam."""
    model = _lux_mlp()
    ps, st = lux.setup(0, model)
    x = lux.random.uniform(lux.random.key(1), (32, 3), low=-1.0, high=1.0)
    y = torch.sin(2 * x[:, :1]) * x[:, 1:2] + x[:, 2:]
    lr, betas, eps = 1e-2, (0.9, 0.999), 1e-8

    module = lux.to_torch(model, ps, st)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=eps)
    for _ in range(50):
        optimizer.zero_grad()
        F.mse_loss(module(x), y).backward()
        optimizer.step()

    ts = lux.TrainState(model, ps, st, lux.optim.adam(lr, betas=betas, eps=eps))
    for _ in range(50):
        ts, _, _ = lux.train_step(lux.losses.MSELoss(), (x, y), ts)

    trained = module.lux_params()
    moved = ltree.map(lambda a, b: (a - b).abs().max(), trained, ps)
    assert all(float(d) > 1e-2 for d in ltree.leaves(moved))  # training did something
    for (name, a), (_, b) in zip(
        ltree.flatten_with_paths(trained), ltree.flatten_with_paths(ts.params), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # the given trees are untouched (the module holds copies)
    assert ltree.allclose(ps, lux.setup(0, model)[0], rtol=0, atol=0)


def test_to_torch_batchnorm_buffers_update_in_train_mode_only() -> None:
    model = lux.Chain(lux.Linear(3, 4), lux.BatchNorm1d(4), lux.Linear(4, 2))
    ps, st = lux.setup(0, model)
    module = lux.to_torch(model, ps, st)
    lux_st = st
    for step in range(3):
        x = randn(8, 3, seed=step)
        y = module(x)
        y_lux, lux_st = model(x, ps, lux_st)
        torch.testing.assert_close(y, y_lux)
    for name, t in lux.state_dict({}, lux_st).items():
        torch.testing.assert_close(module.get_buffer(name), t)
    assert int(module.get_buffer("layer_2.num_batches_tracked")) == 3
    assert not module.get_buffer("layer_2.running_mean").requires_grad

    module.eval()
    assert module.lux_state()["layer_2"]["training"] == Static(False)
    before = {n: b.clone() for n, b in module.named_buffers()}
    x = randn(5, 3, seed=7)
    y = module(x)
    torch.testing.assert_close(y, model(x, ps, lux.test_mode(lux_st))[0])
    for name, b in module.named_buffers():
        assert torch.equal(b, before[name]), name
    module.train()
    module(x)
    assert int(module.get_buffer("layer_2.num_batches_tracked")) == 4


def test_to_torch_backward_after_state_update_and_dropout_keys() -> None:
    model = lux.Chain(lux.Linear(3, 8), lux.Dropout(0.5), lux.BatchNorm1d(8))
    ps, st = lux.setup(0, model)
    module = lux.to_torch(model, ps, st)
    x = randn(6, 3)
    y1 = module(x)
    y2 = module(x)
    assert not torch.equal(y1, y2)  # the key buffer advanced
    (y1.sum() + y2.sum()).backward()  # buffers are rebound, never modified in place
    assert all(p.grad is not None for p in module.parameters())
    module.eval()
    torch.testing.assert_close(module(x), module(x))


def test_to_torch_recurrent_carry_state_in_tuple_buffers() -> None:
    """A state computed from the parameters (an LSTM carry) is stored detached, rebound."""
    model = lux.StatefulRecurrentCell(lux.LSTMCell(3, 4), batch_shape=(2,))
    ps, st = lux.setup(0, model)
    module = lux.to_torch(model, ps, st)
    assert sorted(n for n, _ in module.named_buffers()) == ["carry.0", "carry.1"]
    x = randn(2, 3)
    y1, y2 = module(x), module(x)
    (y1.sum() + y2.sum()).backward()  # the first call's graph is still intact
    _, st1 = model(x, ps, st)
    y2_lux, st2 = model(x, ps, st1)
    torch.testing.assert_close(y2, y2_lux)
    carry = module.lux_state()["carry"]
    assert isinstance(carry, tuple) and not carry[0].requires_grad
    torch.testing.assert_close(carry[1], st2["carry"][1])


def test_lux_params_and_state_round_trip() -> None:
    model = lux.Chain(lux.Linear(3, 4), lux.BatchNorm1d(4))
    ps, st = lux.setup(0, model)
    module = lux.to_torch(model, ps, st)
    assert ltree.allclose(module.lux_params(), ps, rtol=0, atol=0)
    assert ltree.structure(module.lux_state()) == ltree.structure(st)
    assert module.lux_params()["layer_1"]["weight"].data_ptr() != ps["layer_1"]["weight"].data_ptr()
    shared = module.lux_params(copy=False)["layer_1"]["weight"]
    assert shared.data_ptr() == module.get_parameter("layer_1.weight").data_ptr()
    # copy=False shares memory with the given trees
    linked = lux.to_torch(model, ps, st, copy=False)
    assert linked.get_parameter("layer_1.weight").data_ptr() == ps["layer_1"]["weight"].data_ptr()
    # starts in eval mode for a test-mode st
    assert not lux.to_torch(model, ps, lux.test_mode(st)).training
    # a lux model -> nn.Module -> lux layer gives the same function
    layer = lux.from_torch(module)
    x = randn(5, 3)
    y, _ = layer(x, *lux.setup(0, layer))
    torch.testing.assert_close(y, model(x, ps, st)[0])


def test_to_torch_keeps_shared_parameters_shared() -> None:
    model = lux.Chain(lux.Linear(3, 3), lux.Linear(3, 3))
    ps, st = lux.setup(0, model)
    ps["layer_2"]["weight"] = ps["layer_1"]["weight"]
    module = lux.to_torch(model, ps, st)
    assert module.get_parameter("layer_1.weight") is module.get_parameter("layer_2.weight")
    assert len(list(module.parameters())) == 3


def test_to_torch_errors() -> None:
    model = _lux_mlp()
    ps, st = lux.setup(0, model)
    with pytest.raises(TypeError, match="expected a lux_torch Layer"):
        lux.to_torch(nn.Linear(2, 2), ps, st)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"missing keys: layer_2\.bias"):
        lux.to_torch(model, {**ps, "layer_2": {"weight": ps["layer_2"]["weight"]}}, st)
    clash = lux.Chain(forward=lux.Linear(2, 2))
    with pytest.raises(ValueError, match=r"'forward' is already a tensor or an nn\.Module attr"):
        lux.to_torch(clash, *lux.setup(0, clash))


# --------------------------------------------------------------------------- load_state_dict


def _seq(*shape: int, seed: int = 0) -> torch.Tensor:
    return randn(*shape, seed=seed)


# (lux layer, torch module, input): every layer draws from random keys torch does not have
_RANDOM_KEY_LAYERS = [
    pytest.param(
        lambda: lux.RNN(4, 5, num_layers=2, dropout=0.3),
        lambda: nn.RNN(4, 5, num_layers=2, dropout=0.3),
        lambda: _seq(6, 2, 4),
        id="RNN",
    ),
    pytest.param(
        lambda: lux.LSTM(4, 5, num_layers=2, dropout=0.3, bidirectional=True),
        lambda: nn.LSTM(4, 5, num_layers=2, dropout=0.3, bidirectional=True),
        lambda: _seq(6, 2, 4),
        id="LSTM",
    ),
    pytest.param(
        lambda: lux.GRU(4, 5, num_layers=3, dropout=0.5, batch_first=True),
        lambda: nn.GRU(4, 5, num_layers=3, dropout=0.5, batch_first=True),
        lambda: _seq(2, 6, 4),
        id="GRU",
    ),
    pytest.param(
        lambda: lux.MultiheadAttention(8, 2, dropout=0.2),
        lambda: nn.MultiheadAttention(8, 2, dropout=0.2),
        lambda: (_seq(5, 2, 8), _seq(3, 2, 8, seed=1), _seq(3, 2, 8, seed=2)),
        id="MultiheadAttention",
    ),
    pytest.param(  # torch's default dropout=0.1
        lambda: lux.TransformerEncoderLayer(8, 2, 16),
        lambda: nn.TransformerEncoderLayer(8, 2, 16),
        lambda: _seq(5, 2, 8),
        id="TransformerEncoderLayer",
    ),
    pytest.param(
        lambda: lux.TransformerDecoderLayer(8, 2, 16, norm_first=True),
        lambda: nn.TransformerDecoderLayer(8, 2, 16, norm_first=True),
        lambda: (_seq(5, 2, 8), _seq(3, 2, 8, seed=1)),
        id="TransformerDecoderLayer",
    ),
    pytest.param(
        lambda: lux.TransformerEncoder(lux.TransformerEncoderLayer(8, 2, 16), 2),
        lambda: nn.TransformerEncoder(
            nn.TransformerEncoderLayer(8, 2, 16), 2, enable_nested_tensor=False
        ),
        lambda: _seq(5, 2, 8),
        id="TransformerEncoder",
    ),
]


def _first(y: Any) -> torch.Tensor:
    """The output tensor (``MultiheadAttention`` and RNNs return tuples)."""
    out = y[0] if isinstance(y, tuple) else y
    assert isinstance(out, torch.Tensor)
    return out


@pytest.mark.parametrize(("make", "make_torch", "make_x"), _RANDOM_KEY_LAYERS)
def test_torch_state_dicts_of_layers_with_dropout_load_directly(make, make_torch, make_x) -> None:
    """torch's state_dict has no random keys: they come from ``lux.setup(key, layer)``."""
    layer, module, x = make(), _filled(make_torch()), make_x()
    sd = module.state_dict()
    ps, st = lux.load_state_dict(layer, sd)  # strict
    flat = lux.state_dict(ps, st)
    filled = sorted(set(flat) - set(sd))
    assert filled and all(name.split(".")[-1] == "key" for name in filled)
    fresh = lux.state_dict(*lux.setup(0, layer))  # the default key is 0
    assert all(torch.equal(flat[name], fresh[name]) for name in filled)
    assert all(flat[name] is sd[name] for name in sd)  # torch's tensors as given
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        expected = _first(module.eval()(*args))
    y, _ = layer(x, ps, lux.test_mode(st))
    torch.testing.assert_close(_first(y), expected, rtol=1e-5, atol=1e-5)
    # training mode runs with the filled keys and advances them
    _, new_st = layer(x, ps, st)
    new_flat = lux.state_dict({}, new_st)
    assert any(not torch.equal(new_flat[name], flat[name]) for name in filled)
    # key= chooses the keys: those of lux.setup(key, layer)
    _, st7 = lux.load_state_dict(layer, sd, key=lux.random.key(7))
    seven = lux.state_dict(*lux.setup(lux.random.key(7), layer))
    flat7 = lux.state_dict({}, st7)
    assert all(torch.equal(flat7[name], seven[name]) for name in filled)
    assert any(not torch.equal(flat7[name], fresh[name]) for name in filled)


def test_random_keys_in_the_state_dict_are_kept_and_variational_masks_filled() -> None:
    model = lux.Chain(lux.Linear(3, 4), lux.VariationalHiddenDropout(0.5), lux.Dropout(0.3))
    ps, st = lux.setup(5, model)
    st = lux.train_mode(model(randn(2, 3), ps, st)[1])  # advanced keys
    sd = lux.state_dict(ps, st)
    _, st2 = lux.load_state_dict(model, sd, key=9)  # keys present: taken from sd
    assert ltree.allclose(st2, st, rtol=0, atol=0)
    # a torch-like dict (parameters only): both kinds of random key are filled
    _, st3 = lux.load_state_dict(model, lux.state_dict(ps, {}), key=9)
    assert ltree.allclose(st3, lux.setup(9, model)[1], rtol=0, atol=0)
    # torch's nn.Dropout has an empty state_dict, and so loads
    _, st4 = lux.load_state_dict(lux.Dropout(0.5), nn.Dropout(0.5).state_dict())
    assert torch.equal(st4["key"], lux.setup(0, lux.Dropout(0.5))[1]["key"])


@pytest.mark.parametrize(
    ("model", "sd", "missing"),
    [
        (lux.Linear(3, 2), {}, ["bias", "weight"]),  # only missing keys
        (lux.BatchNorm1d(3), {}, ["bias", "weight", "running_mean", "running_var"]),
        (  # missing and present
            lux.Chain(lux.Linear(3, 2), lux.Dropout(0.5), lux.Linear(2, 1)),
            {"layer_1.weight": torch.zeros(2, 3), "layer_3.bias": torch.zeros(1)},
            ["layer_1.bias", "layer_3.weight"],
        ),
        (lux.LSTM(3, 2, dropout=0.5, num_layers=2), {}, ["weight_ih_l0", "bias_hh_l1"]),
    ],
)
def test_missing_entries_raise_even_when_random_keys_could_be_filled(model, sd, missing) -> None:
    for strict in (True, False):
        with pytest.raises(lux.StateDictError) as info:
            lux.load_state_dict(model, sd, strict=strict)
        assert all(name in info.value.missing for name in missing)
        assert not any(name.endswith("key") for name in info.value.missing)
        message = str(info.value)
        assert message.splitlines()[1].startswith("  missing: ")
        assert all(name in message.splitlines()[1] for name in missing)


def test_state_dict_errors_print_as_written_and_list_every_problem() -> None:
    model = lux.Chain(lux.Linear(2, 4), lux.Dropout(0.5), lux.Linear(4, 1))
    sd = lux.state_dict(*lux.setup(0, model))
    del sd["layer_1.bias"]
    sd["layer_9.weight"] = torch.zeros(1)
    sd["layer_3.weight"] = torch.zeros(2, 2)
    with pytest.raises(lux.StateDictError) as info:
        lux.load_state_dict(model, sd)
    err = info.value
    assert isinstance(err, ValueError) and not isinstance(err, KeyError)
    assert str(err) == (
        "load_state_dict(Chain): the state_dict does not match the model:\n"
        "  missing: layer_1.bias\n"
        "  unexpected: layer_9.weight\n"
        "  mis-shaped: layer_3.weight: expected (1, 4), got (2, 2)"
    )
    assert err.missing == ("layer_1.bias",) and err.unexpected == ("layer_9.weight",)
    assert err.mis_shaped == ("layer_3.weight: expected (1, 4), got (2, 2)",)
    # strict=False ignores the unexpected entry only
    with pytest.raises(lux.StateDictError, match=r"missing: layer_1\.bias") as info:
        lux.load_state_dict(model, sd, strict=False)
    assert info.value.unexpected == ()


class _KeyNamed(nn.Module):
    """Tensors named like lux's random keys that are not: a parameter and a float buffer."""

    key: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Module()
        self.inner.key = nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)
        self.register_buffer("key", torch.zeros(3))
        self.register_buffer("mask_key", torch.zeros(2, dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.key


def test_only_random_keys_of_the_state_are_filled() -> None:
    """A parameter, or a state entry of another dtype or shape, is never a random key."""
    layer = lux.from_torch(_KeyNamed())
    with pytest.raises(lux.StateDictError) as info:
        lux.load_state_dict(layer, {})
    assert sorted(info.value.missing) == ["inner.key", "key", "mask_key"]
