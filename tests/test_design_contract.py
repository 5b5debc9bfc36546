"""The public API exactly as ../shared/DESIGN.md §2 writes it, plus ensembles and
per-sample gradients (the foundation issue's "must show" list)."""

from __future__ import annotations

import torch

import lux_torch as lux


def test_design_section_2_runs_as_written():
    x = torch.linspace(-1, 1, 10).reshape(5, 2)

    def loss(y):
        return (y**2).mean()

    model = lux.Chain(
        lux.Linear(2, 16, activation=torch.tanh),
        lux.Linear(16, 1),
    )
    key = lux.random.key(0)
    ps, st = lux.setup(key, model)  # nested dicts of tensors
    y, st = model(x, ps, st)  # == lux.apply(model, x, ps, st)
    assert torch.equal(y, lux.apply(model, x, ps, st)[0])
    assert "# Total: 65 parameters," in repr(model)
    table = str(lux.summary(model, x, ps, st))
    for column in ("path", "layer", "output shape", "params", "states"):
        assert column in table
    assert (lux.param_count(model), lux.state_count(model)) == (65, 0)
    st = lux.test_mode(st)
    st = lux.train_mode(st)
    f = lux.StatefulLayer(model, ps, st)  # f(x) -> y, keeps the latest state in f.st
    assert torch.equal(f(x), y)

    grads = torch.func.grad(lambda p: loss(model(x, p, st)[0]))(ps)
    assert set(grads) == {"layer_1", "layer_2"}
    assert grads["layer_1"]["weight"].shape == (16, 2)
    # the gradient is right: compare with autograd through an nn.Module with the same weights
    ref = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ref.load_state_dict(
        {
            k.replace("layer_1", "0").replace("layer_2", "2"): v
            for k, v in lux.state_dict(ps, st).items()
        }
    )
    loss(ref(x)).backward()
    first = ref[0]
    assert isinstance(first, torch.nn.Linear) and first.weight.grad is not None
    assert torch.allclose(grads["layer_1"]["weight"], first.weight.grad, atol=1e-6)


def _dropout_model() -> lux.Chain:
    return lux.Chain(lux.Linear(4, 32, activation=torch.relu), lux.Dropout(0.5), lux.Linear(32, 2))


def test_ensemble_vmap_with_dropout_gives_each_member_its_randomness():
    model = _dropout_model()
    keys = lux.random.split(lux.random.key(0), 5)
    members = [lux.setup(k, model) for k in keys]
    ps_list = [m[0] for m in members]
    shared = ps_list[0]
    # same parameters for every member: differences can only come from dropout keys
    st_list = [m[1] for m in members]
    x = torch.ones(3, 4)
    ys, new_st = torch.func.vmap(lambda p, s: model(x, p, s))(
        lux.tree.stack([shared] * 5), lux.tree.stack(st_list)
    )
    assert ys.shape == (5, 3, 2)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.allclose(ys[i], ys[j])
    # each member equals its own unbatched call, and its key advanced
    for i, st in enumerate(st_list):
        y_i, st_i = model(x, shared, st)
        assert torch.allclose(ys[i], y_i, atol=1e-6)
        assert torch.equal(new_st["layer_2"]["key"][i], st_i["layer_2"]["key"])
        assert not torch.equal(st_i["layer_2"]["key"], st["layer_2"]["key"])
    # and the full ensemble form from the issue: stacked ps and stacked st
    ys2, _ = torch.func.vmap(lambda p, s: model(x, p, s))(
        lux.tree.stack(ps_list), lux.tree.stack(st_list)
    )
    assert torch.allclose(ys2[1], model(x, ps_list[1], st_list[1])[0], atol=1e-6)


def test_per_sample_gradients():
    model = lux.Chain(lux.Linear(3, 8, activation=torch.tanh), lux.Linear(8, 1))
    ps, st = lux.setup(lux.random.key(1), model)
    xs = torch.linspace(-1, 1, 12).reshape(4, 3)
    ys = torch.linspace(0, 1, 4).reshape(4, 1)

    def f(p, x, y):
        pred, _ = model(x.unsqueeze(0), p, st)
        return ((pred - y.unsqueeze(0)) ** 2).sum()

    per_sample = torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))(ps, xs, ys)
    assert per_sample["layer_1"]["weight"].shape == (4, 8, 3)
    for i in range(4):
        g_i = torch.func.grad(f)(ps, xs[i], ys[i])
        assert torch.allclose(
            per_sample["layer_1"]["weight"][i], g_i["layer_1"]["weight"], atol=1e-6
        )
    # summed per-sample gradients are the batch gradient
    batch = torch.func.grad(lambda p: ((model(xs, p, st)[0] - ys) ** 2).sum())(ps)
    assert torch.allclose(per_sample["layer_2"]["bias"].sum(0), batch["layer_2"]["bias"], atol=1e-5)


def test_whole_model_compiles_without_graph_breaks():
    model = _dropout_model()
    ps, st = lux.setup(0, model)
    x = torch.ones(3, 4)
    compiled = torch.compile(lambda p, s: model(x, p, s), fullgraph=True)
    y_c, st_c = compiled(ps, st)
    y_e, st_e = model(x, ps, st)
    assert torch.allclose(y_c, y_e, atol=1e-5)
    assert torch.equal(st_c["layer_2"]["key"], st_e["layer_2"]["key"])
