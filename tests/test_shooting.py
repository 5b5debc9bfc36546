"""Tests for lux_torch.sciml.shooting: DiffEqFlux's segments, the loss against a hand-written
torchdiffeq computation, continuity on exact trajectories, training, errors."""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Any

import pytest
import torch
import torchdiffeq
from torch import nn

import lux_torch as lux
from lux_torch.ode import NeuralODE
from lux_torch.sciml.shooting import (
    MultipleShootingLoss,
    ShootingNODE,
    group_ranges,
    initial_shooting_nodes,
    multiple_shoot,
)
from lux_torch.testing import check_layer

F64 = torch.float64
A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)  # a damped rotation


def _field() -> lux.Chain:
    return lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Linear(8, 2))


def _linear_data(n: int = 11, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact trajectory ``y(t) = y0 @ expm(A t)^T`` of ``dy/dt = A y``: ``(n, batch, 2)``."""
    t = torch.linspace(0.0, 2.0, n, dtype=F64)
    y0 = lux.random.normal(lux.random.key(2), (batch, 2), dtype=F64)
    ys = torch.stack([y0 @ torch.linalg.matrix_exp(A * ti).T for ti in t])
    return ys, t


def _linear_node(**kwargs: Any) -> NeuralODE:
    return NeuralODE(lux.Linear(2, 2, bias=False), (0.0, 1.0), rtol=1e-10, atol=1e-12, **kwargs)


def _diffeqflux_group_ranges(datasize: int, groupsize: int) -> list[range]:
    """DiffEqFlux's ``[i:min(datasize, i + groupsize - 1) for i in 1:(groupsize - 1):(datasize -
    1)]`` with Julia's 1-based inclusive ranges and steps spelled out, shifted to 0-based."""
    out = []
    i = 1
    while i <= datasize - 1:
        last = min(datasize, i + groupsize - 1)
        out.append(range(i - 1, last))  # Julia i:last (inclusive) is Python range(i-1, last)
        i += groupsize - 1
    return out


# --------------------------------------------------------------------------- segments


@pytest.mark.parametrize("datasize", [2, 3, 5, 10, 11, 30])
def test_group_ranges_are_diffeqflux_s(datasize: int) -> None:
    for group_size in range(2, datasize + 1):
        ranges = group_ranges(datasize, group_size)
        assert ranges == _diffeqflux_group_ranges(datasize, group_size)
        assert ranges[0].start == 0 and ranges[-1].stop == datasize
        for a, b in itertools.pairwise(ranges):
            assert b.start == a.stop - 1  # overlap by exactly one point
        assert all(2 <= len(r) <= group_size for r in ranges)
    assert group_ranges(10, 3) == [range(0, 3), range(2, 5), range(4, 7), range(6, 9), range(8, 10)]


@pytest.mark.parametrize(("datasize", "group_size"), [(10, 1), (10, 11), (1, 2), (5, 0)])
def test_group_ranges_refuses_bad_group_size(datasize: int, group_size: int) -> None:
    with pytest.raises(ValueError, match=r"group_size must be in \[2, datasize\]"):
        group_ranges(datasize, group_size)
    with pytest.raises(TypeError, match="group_size must be an int"):
        group_ranges(10, 2.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the loss


class _TorchField(nn.Module):
    def __init__(self, ps: dict[str, Any]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            collections.OrderedDict(
                layer_1=nn.Linear(2, 8), tanh=nn.Tanh(), layer_2=nn.Linear(8, 2)
            )
        ).to(F64)
        with torch.no_grad():
            for name in ("layer_1", "layer_2"):
                getattr(self.net, name).weight.copy_(ps[name]["weight"])
                getattr(self.net, name).bias.copy_(ps[name]["bias"])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> Any:
        return self.net(y)


@pytest.mark.parametrize("learnable_starts", [False, True])
def test_loss_equals_a_hand_written_torchdiffeq_computation(learnable_starts: bool) -> None:
    data, t = _linear_data(n=10)
    node = NeuralODE(_field(), (0.0, 1.0))
    ps, st = lux.setup(0, node, dtype=F64)
    nodes = data[[0, 3, 6]] + 0.1 if learnable_starts else None
    loss, new_st, stats = multiple_shoot(
        node, ps, st, data, t, group_size=4, continuity_term=7.0, shooting_nodes=nodes
    )
    # the reference: DiffEqFlux's ranges for 10 points in groups of 4 are 1:4, 4:7, 7:10
    # (1-based, inclusive), i.e. points 0-3, 3-6 and 6-9
    f = _TorchField(ps["vector_field"])
    expected_data = torch.zeros((), dtype=F64)
    expected_cont = torch.zeros((), dtype=F64)
    previous_end = None
    for k, (a, b) in enumerate([(0, 4), (3, 7), (6, 10)]):
        start = data[a] if nodes is None else nodes[k]
        pred = torchdiffeq.odeint(f, start, t[a:b], rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(stats["predictions"][k], pred, rtol=1e-10, atol=1e-12)
        expected_data = expected_data + ((pred - data[a:b]) ** 2).mean()
        if previous_end is not None:
            expected_cont = expected_cont + ((previous_end - start) ** 2).sum()
        previous_end = pred[-1]
    assert len(stats["predictions"]) == 3
    torch.testing.assert_close(stats["data_loss"], expected_data, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stats["continuity_loss"], expected_cont, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, expected_data + 7.0 * expected_cont, rtol=1e-10, atol=1e-12)
    assert int(new_st["stats"]["nfe"]) > 0


def test_custom_losses_are_used() -> None:
    data, t = _linear_data(n=7)
    node = NeuralODE(_field(), (0.0, 1.0), method="rk4")
    ps, st = lux.setup(0, node, dtype=F64)
    l1 = lambda a, b: (a - b).abs().sum()  # noqa: E731
    loss, _, stats = multiple_shoot(
        node, ps, st, data, t, group_size=3, loss=l1, continuity_loss=l1, continuity_term=2.0
    )
    preds = stats["predictions"]
    ranges = group_ranges(7, 3)
    data_l1 = sum(
        (p - data[r.start : r.stop]).abs().sum() for p, r in zip(preds, ranges, strict=True)
    )
    cont_l1 = sum(
        (preds[k - 1][-1] - data[ranges[k].start]).abs().sum() for k in range(1, len(preds))
    )
    torch.testing.assert_close(loss, data_l1 + 2.0 * cont_l1)


def test_continuity_is_zero_on_the_exact_trajectory_of_a_linear_ode() -> None:
    data, t = _linear_data()
    node = _linear_node()
    ps, st = lux.setup(0, node, dtype=F64)
    ps = {"vector_field": {"weight": A.clone()}}  # y @ W^T = A y
    for group_size in (2, 3, 5, 11):
        loss, _, stats = multiple_shoot(node, ps, st, data, t, group_size=group_size)
        assert float(stats["continuity_loss"]) < 1e-16
        assert float(stats["data_loss"]) < 1e-16 and float(loss) < 1e-14
    wrong = {"vector_field": {"weight": A.T.clone()}}
    _, _, stats = multiple_shoot(node, wrong, st, data, t, group_size=3)
    assert float(stats["continuity_loss"]) > 1e-2


def test_gradient_flows_to_shooting_nodes_and_parameters() -> None:
    data, t = _linear_data(n=7)
    node = _linear_node()
    ps, st = lux.setup(0, node, dtype=F64)
    nodes = initial_shooting_nodes(data, 3).requires_grad_(True)
    weight = ps["vector_field"]["weight"].requires_grad_(True)
    loss, _, _ = multiple_shoot(node, ps, st, data, t, group_size=3, shooting_nodes=nodes)
    g_nodes, g_weight = torch.autograd.grad(loss, (nodes, weight))
    assert nodes.shape == (3, 3, 2) and torch.equal(nodes.detach(), data[[0, 2, 4]])
    assert torch.count_nonzero(g_nodes) > 0 and torch.count_nonzero(g_weight) > 0


def test_torch_func_grad_equals_autograd_with_a_fixed_grid_solver() -> None:
    data, t = _linear_data(n=7)
    node = NeuralODE(_field(), (0.0, 1.0), method="rk4")
    ps, st = lux.setup(0, node, dtype=F64)

    def loss(ps: Any) -> torch.Tensor:
        return multiple_shoot(node, ps, st, data, t, group_size=3)[0]

    g_func = lux.tree.leaves(torch.func.grad(loss)(ps))
    leaves = [p.detach().requires_grad_(True) for p in lux.tree.leaves(ps)]
    g_autograd = torch.autograd.grad(
        loss(lux.tree.unflatten(lux.tree.flatten(ps)[1], leaves)), leaves
    )
    for a, b in zip(g_func, g_autograd, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- training


def _train(
    model: lux.Layer, ps: Any, st: Any, data: Any, steps: int, lr: float
) -> tuple[Any, list[float]]:
    objective = MultipleShootingLoss(group_size=4, continuity_term=10.0)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(lr))
    losses = []
    for _ in range(steps):
        ts, loss, _ = lux.train_step(objective, data, ts)
        losses.append(float(loss))
    return ts, losses


def test_training_a_linear_ode_with_multiple_shooting_recovers_its_matrix() -> None:
    data, t = _linear_data(n=11)
    node = dataclasses.replace(_linear_node(), method="rk4", rtol=1e-7, atol=1e-9)
    ps, st = lux.setup(0, node, dtype=F64)
    ts, losses = _train(node, ps, st, (data, t), steps=300, lr=0.05)
    assert losses[-1] < 1e-3 * losses[0], (losses[0], losses[-1])
    torch.testing.assert_close(ts.params["vector_field"]["weight"], A, rtol=0, atol=2e-2)


def test_training_with_learnable_shooting_nodes() -> None:
    data, t = _linear_data(n=11)
    noisy = data + 0.02 * lux.random.normal(lux.random.key(5), data.shape, dtype=F64)
    node = dataclasses.replace(_linear_node(), method="rk4", rtol=1e-7, atol=1e-9)
    model = ShootingNODE(node, n_segments=len(group_ranges(11, 4)), state_shape=noisy.shape[1:])
    ps, st = lux.setup(0, model, dtype=F64)
    assert ps["shooting_nodes"].shape == (4, 3, 2)
    ps["shooting_nodes"] = initial_shooting_nodes(noisy, 4)
    ts, losses = _train(model, ps, st, (noisy, t), steps=100, lr=0.1)
    assert losses[-1] < 1e-2 * losses[0], (losses[0], losses[-1])
    before = (ps["node"]["vector_field"]["weight"] - A).abs().max()
    after = (ts.params["node"]["vector_field"]["weight"] - A).abs().max()
    assert after < 0.5 * before, (before, after)
    moved = (ts.params["shooting_nodes"] - ps["shooting_nodes"]).abs().max()
    assert float(moved) > 1e-3  # the starts were trained too
    ys, _ = model(data[0], ts.params, ts.states)  # called as a plain NeuralODE
    assert ys.shape == (2, 3, 2)


# --------------------------------------------------------------------------- errors


def test_errors() -> None:
    data, t = _linear_data(n=7)
    node = _linear_node()
    ps, st = lux.setup(0, node, dtype=F64)
    with pytest.raises(ValueError, match=r"group_size must be in \[2, datasize\] = \[2, 7\]"):
        multiple_shoot(node, ps, st, data, t, group_size=8)
    with pytest.raises(ValueError, match="t has 6 time points but data has 7"):
        multiple_shoot(node, ps, st, data, t[:-1], group_size=3)
    with pytest.raises(ValueError, match="t must be one-dimensional"):
        multiple_shoot(node, ps, st, data, t[None], group_size=3)
    with pytest.raises(TypeError, match="data must be a floating-point Tensor"):
        multiple_shoot(node, ps, st, data.long(), t, group_size=3)
    with pytest.raises(ValueError, match="continuity_term must be finite and >= 0"):
        multiple_shoot(node, ps, st, data, t, group_size=3, continuity_term=-1.0)
    with pytest.raises(
        ValueError, match=r"shooting_nodes must have shape .* = \(3, 3, 2\).*\(2, 3, 2\)"
    ):
        multiple_shoot(node, ps, st, data, t, group_size=3, shooting_nodes=data[:2])
    with pytest.raises(TypeError, match="node must be a lux_torch NeuralODE"):
        multiple_shoot(lux.Linear(2, 2), ps, st, data, t, group_size=3)  # type: ignore[arg-type]
    for bad in ({"save_at": "last"}, {"augment": 1}):
        with pytest.raises(ValueError, match="must return the state at every time point"):
            multiple_shoot(dataclasses.replace(node, **bad), ps, st, data, t, group_size=3)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        MultipleShootingLoss(group_size=1)
    with pytest.raises(TypeError, match="the model must be a NeuralODE or a ShootingNODE"):
        MultipleShootingLoss(group_size=2)(lux.Linear(2, 2), {}, {}, (data, t))
    with pytest.raises(ValueError, match="n_segments must be >= 1"):
        ShootingNODE(node, n_segments=0, state_shape=(2,))


def test_type_errors() -> None:
    data, t = _linear_data(n=7)
    node = _linear_node()
    ps, st = lux.setup(0, node, dtype=F64)
    with pytest.raises(TypeError, match="continuity_term must be a float"):
        multiple_shoot(node, ps, st, data, t, group_size=3, continuity_term=True)
    with pytest.raises(TypeError, match="t must be a 1-D tensor or a sequence of floats"):
        multiple_shoot(node, ps, st, data, "0123456", group_size=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="datasize must be an int"):
        group_ranges(7.0, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"data must be a Tensor of shape \(T, \*state\)"):
        initial_shooting_nodes([1.0, 2.0], 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="group_size must be an int"):
        MultipleShootingLoss(group_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n_segments must be an int"):
        ShootingNODE(node, n_segments=2.0, state_shape=(2,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must return the state at every time point"):
        ShootingNODE(dataclasses.replace(node, save_at="last"), n_segments=2, state_shape=(2,))


def test_shooting_node_passes_check_layer() -> None:
    # compile and vmap cannot work with torchdiffeq (see tests/test_ode.py)
    model = ShootingNODE(NeuralODE(_field(), (0.0, 0.5, 1.0), method="rk4"), 2, (2,))
    ps, st = lux.setup(0, model, dtype=F64)
    y0 = lux.random.normal(lux.random.key(1), (3, 2), dtype=F64)
    report = check_layer(model, y0, ps=ps, st=st, compile=False, vmap=False)
    for check in ("structure", "counts", "shapes", "purity", "determinism", "gradcheck"):
        assert report[check] == "passed", report
    ys, _ = model(y0, ps, st)
    expected, _ = model.node(y0, ps["node"], st["node"])
    assert torch.equal(ys, expected)
