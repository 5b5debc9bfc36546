"""Tests for lux_torch.sciml.hamiltonian: HamiltonianNN against closed forms, torch.autograd
references and finite differences, inside NeuralODE (backprop, adjoint, torch.func), energy
conservation, the conformance harness and its input errors."""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import pytest
import torch
import torchdiffeq
from torch import nn

import lux_torch as lux
from lux_torch.ode import NeuralODE
from lux_torch.sciml.hamiltonian import HamiltonianNN
from lux_torch.testing import check_layer

F64 = torch.float64
T = (0.0, 0.5, 1.0)


class Pendulum(lux.Layer):
    """``H = p**2 / 2 + g * (1 - cos q)`` with a trainable ``g`` (shape ``()``)."""

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"g": torch.ones(())}

    def __call__(self, x: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        q, p = x[..., 0], x[..., 1]
        return p**2 / 2 + ps["g"] * (1 - torch.cos(q)), st


class Oscillator(lux.Layer):
    """``H = sum(p**2) / 2 + sum(k * q**2) / 2`` in ``n`` dimensions, stiffness ``k`` (n,)."""

    n: int

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"k": torch.arange(1.0, self.n + 1)}

    def __call__(self, x: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        q, p = x[..., : self.n], x[..., self.n :]
        return ((p**2).sum(-1, keepdim=True) + (ps["k"] * q**2).sum(-1, keepdim=True)) / 2, st


class CountingEnergy(lux.Layer):
    """``H = |x|**2 / 2``, counting its evaluations in its state."""

    def init_state(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"calls": torch.zeros((), dtype=torch.int64)}

    def __call__(self, x: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        return (x**2).sum(-1) / 2, {"calls": st["calls"] + 1}


def _mlp(n: int = 1, hidden: int = 8) -> lux.Chain:
    return lux.Chain(lux.Linear(2 * n, hidden, activation=torch.tanh), lux.Linear(hidden, 1))


def _x(batch: int = 5, n: int = 1) -> torch.Tensor:
    return lux.random.normal(lux.random.key(3), (batch, 2 * n), dtype=F64)


def _leaf_grads(loss_of: Any, ps: Any) -> list[torch.Tensor]:
    """Gradients of ``loss_of(ps)`` with respect to every leaf of ``ps`` (torch.autograd);
    leaves the loss does not depend on (H's last bias moves no trajectory) get zeros."""
    ps = lux.tree.map(lambda p: p.detach().clone().requires_grad_(True), ps)
    leaves = lux.tree.leaves(ps)
    return list(torch.autograd.grad(loss_of(ps), leaves, allow_unused=True, materialize_grads=True))


# --------------------------------------------------------------------------- the field


def test_pendulum_field_is_analytic() -> None:
    hnn = HamiltonianNN(Pendulum())
    ps, st = lux.setup(0, hnn, dtype=F64)
    ps = {"model": {"g": torch.tensor(9.81, dtype=F64)}}
    x = _x()
    dx, new_st = hnn(x, ps, st)
    q, p = x[:, 0], x[:, 1]
    expected = torch.stack([p, -9.81 * torch.sin(q)], dim=-1)  # dq/dt = p, dp/dt = -g sin q
    torch.testing.assert_close(dx, expected, rtol=1e-14, atol=1e-14)
    assert new_st == {"model": {}}


def test_harmonic_oscillator_field_in_three_dimensions() -> None:
    hnn = HamiltonianNN(Oscillator(3))
    ps, st = lux.setup(0, hnn, dtype=F64)
    x = _x(n=3)
    dx, _ = hnn(x, ps, st)
    q, p = x[:, :3], x[:, 3:]
    torch.testing.assert_close(dx, torch.cat([p, -ps["model"]["k"] * q], -1), rtol=0, atol=1e-14)


def test_unbatched_state_and_no_grad() -> None:
    hnn = HamiltonianNN(Pendulum())
    ps, st = lux.setup(0, hnn, dtype=F64)
    x = torch.tensor([0.3, -0.7], dtype=F64)
    with torch.no_grad():  # functorch's grad ignores an outer no_grad: inference works
        dx, _ = hnn(x, ps, st)
    torch.testing.assert_close(dx, torch.stack([x[1], -torch.sin(x[0])]))


def test_state_of_the_energy_is_threaded() -> None:
    hnn = HamiltonianNN(CountingEnergy())
    ps, st = lux.setup(0, hnn)
    dx, new_st = hnn(torch.ones(4, 2), ps, st)
    assert int(new_st["model"]["calls"]) == 1 and int(st["model"]["calls"]) == 0
    torch.testing.assert_close(dx, torch.tensor([[1.0, -1.0]]).expand(4, 2))


class _AutogradHNN(nn.Module):
    """The same field with torch.nn and ``torch.autograd.grad(create_graph=True)``."""

    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            collections.OrderedDict(
                layer_1=nn.Linear(2 * n, hidden), tanh=nn.Tanh(), layer_2=nn.Linear(hidden, 1)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            (dh,) = torch.autograd.grad(self.model(x_in).sum(), x_in, create_graph=True)
        n = x.shape[-1] // 2
        return torch.cat([dh[..., n:], -dh[..., :n]], dim=-1)


def test_check_layer_with_autograd_reference() -> None:
    hnn = HamiltonianNN(_mlp(n=2))
    ps, st = lux.setup(0, hnn, dtype=F64)
    report = check_layer(hnn, _x(3, n=2), ps=ps, st=st, reference=_AutogradHNN(2, 8))
    for check in ("shapes", "purity", "parity", "gradcheck", "compile", "vmap", "vmap_inputs"):
        assert report[check] == "passed", report


# --------------------------------------------------------------------------- inside NeuralODE


def test_gradients_through_neural_ode_match_finite_differences() -> None:
    node = NeuralODE(HamiltonianNN(_mlp()), T, rtol=1e-12, atol=1e-12)
    ps, st = lux.setup(0, node, dtype=F64)
    x0 = _x()

    def loss(ps: Any) -> Any:
        return (node(x0, ps, st)[0] ** 2).sum()

    flat, unravel = lux.tree.ravel(ps)
    grads = torch.cat([g.reshape(-1) for g in _leaf_grads(loss, ps)])
    eps = 1e-6
    with torch.no_grad():
        fd = torch.stack(
            [
                (loss(unravel(flat + eps * e)) - loss(unravel(flat - eps * e))) / (2 * eps)
                for e in torch.eye(flat.numel(), dtype=F64)
            ]
        )
    # central differences: truncation ~eps**2, round-off ~1e-16 * loss / eps; measured
    # 1.2e-8 at most, for gradients up to 5.6
    torch.testing.assert_close(grads, fd, rtol=1e-6, atol=1e-7)


def test_adjoint_agrees_with_backprop() -> None:
    backprop = NeuralODE(HamiltonianNN(_mlp()), T)
    adjoint = dataclasses.replace(backprop, adjoint=True)
    ps, st = lux.setup(0, backprop, dtype=F64)
    x0 = _x()
    g_backprop = _leaf_grads(lambda p: (backprop(x0, p, st)[0] ** 2).sum(), ps)
    g_adjoint = _leaf_grads(lambda p: (adjoint(x0, p, st)[0] ** 2).sum(), ps)
    for a, b in zip(g_adjoint, g_backprop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert torch.count_nonzero(g_backprop[0]) > 0


def test_torch_func_grad_through_fixed_grid_solve_equals_autograd() -> None:
    node = NeuralODE(HamiltonianNN(_mlp()), T, method="rk4")
    assert not node.requires_autograd
    ps, st = lux.setup(0, node, dtype=F64)
    x0 = _x()

    def loss(ps: Any) -> Any:
        return (node(x0, ps, st)[0] ** 2).sum()

    g_func = lux.tree.leaves(torch.func.grad(loss)(ps))
    for a, b in zip(g_func, _leaf_grads(loss, ps), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_pendulum_trajectory_matches_torchdiffeq_with_the_analytic_field() -> None:
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    node = NeuralODE(HamiltonianNN(Pendulum()), t, rtol=1e-10, atol=1e-12)
    ps, st = lux.setup(0, node, dtype=F64)
    x0 = _x()
    xs, _ = node(x0, ps, st)

    def pendulum(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 1], -torch.sin(x[:, 0])], dim=-1)

    ref = torchdiffeq.odeint(pendulum, x0, t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(xs, ref, rtol=1e-8, atol=1e-9)


def _energy_drift(model: lux.Layer, ps_h: Any, node_ps: Any, node: NeuralODE) -> float:
    st = lux.init_state(0, node)
    x0 = torch.tensor([[1.0, 0.0], [2.5, 0.3], [-0.4, 1.2]], dtype=F64)
    xs, _ = node(x0, node_ps, st)
    energy = model(xs, ps_h, lux.init_state(0, model))[0].reshape(xs.shape[0], -1)
    return float((energy - energy[0]).abs().max())


def test_energy_is_conserved_along_hamiltonian_flows() -> None:
    t = torch.linspace(0.0, 15.0, 31, dtype=F64)  # over two periods of the small swings
    for H in (Pendulum(), _mlp(hidden=16)):
        node = NeuralODE(HamiltonianNN(H), t, rtol=1e-9, atol=1e-11)
        ps, _ = lux.setup(1, node, dtype=F64)
        # any H, learned or exact, is a conserved quantity of its own flow
        assert _energy_drift(H, ps["vector_field"]["model"], ps, node) < 1e-7, H
    # a plain field with the same linearisation at rest but a little friction drifts
    damped = NeuralODE(lux.Linear(2, 2, bias=False), t, rtol=1e-9, atol=1e-11)
    weight = torch.tensor([[0.0, 1.0], [-1.0, -0.01]], dtype=F64)  # q'' = -q - 0.01 q'
    drift = _energy_drift(
        Oscillator(1), {"k": torch.ones(1, dtype=F64)}, {"vector_field": {"weight": weight}}, damped
    )
    assert drift > 0.05, drift


def test_train_step_through_hamiltonian_node() -> None:
    node = NeuralODE(HamiltonianNN(_mlp()), T, method="rk4")
    ps, st = lux.setup(0, node, dtype=F64)
    x0 = _x()
    target = NeuralODE(HamiltonianNN(Pendulum()), T, method="rk4")
    ys, _ = target(x0, lux.setup(0, target, dtype=F64)[0], lux.init_state(0, target))

    def objective(model: Any, ps: Any, st: Any, data: Any) -> tuple[torch.Tensor, Any, Any]:
        pred, st = model(data[0], ps, st)
        return ((pred - data[1]) ** 2).mean(), st, {}

    ts = lux.TrainState(node, ps, st, lux.optim.adam(1e-2))
    losses = []
    for _ in range(30):
        ts, loss, _ = lux.train_step(objective, (x0, ys), ts)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    # the last bias of H moves nothing: its gradient is zero, not an error
    assert torch.equal(
        ts.params["vector_field"]["model"]["layer_2"]["bias"],
        ps["vector_field"]["model"]["layer_2"]["bias"],
    )


@pytest.mark.parametrize("adjoint", [False, True])
def test_autograd_path_equals_func_path(adjoint: bool) -> None:
    func = NeuralODE(HamiltonianNN(_mlp()), T, adjoint=adjoint)
    fast = NeuralODE(HamiltonianNN(_mlp(), ad="autograd"), T, adjoint=adjoint)
    fast_field, func_field = fast.vector_field, func.vector_field
    assert isinstance(fast_field, HamiltonianNN) and isinstance(func_field, HamiltonianNN)
    assert fast_field.requires_autograd and not fast_field.compile_fullgraph
    assert not func_field.requires_autograd and func_field.compile_fullgraph
    ps, st = lux.setup(0, func, dtype=F64)
    x0 = _x()
    torch.testing.assert_close(fast(x0, ps, st)[0], func(x0, ps, st)[0], rtol=1e-12, atol=1e-14)
    g_func = _leaf_grads(lambda p: (func(x0, p, st)[0] ** 2).sum(), ps)
    g_fast = _leaf_grads(lambda p: (fast(x0, p, st)[0] ** 2).sum(), ps)
    for a, b in zip(g_fast, g_func, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # the autograd path switches grad on for itself
        torch.testing.assert_close(fast(x0, ps, st)[0], func(x0, ps, st)[0])


def test_autograd_path_passes_check_layer() -> None:
    hnn = HamiltonianNN(_mlp(n=2), ad="autograd")
    ps, st = lux.setup(0, hnn, dtype=F64)
    report = check_layer(
        hnn,
        _x(3, n=2),
        ps=ps,
        st=st,
        reference=_AutogradHNN(2, 8),
        compile=False,
        vmap=False,
        jvp="ad='autograd' runs torch.autograd.grad: no torch.func transforms (ad='func' does)",
    )
    for check in ("shapes", "purity", "parity", "gradcheck"):
        assert report[check] == "passed", report


def test_autograd_path_under_torch_func_fails_clearly() -> None:
    hnn = HamiltonianNN(Pendulum(), ad="autograd")
    ps, st = lux.setup(0, hnn, dtype=F64)
    x = _x()
    with pytest.raises(RuntimeError, match=r"ad='autograd' .* cannot run inside torch.func"):
        torch.func.grad(lambda p: hnn(x, p, st)[0].sum())(ps)
    with pytest.raises(RuntimeError, match=r"use ad='func'"):
        torch.func.vmap(lambda xi: hnn(xi, ps, st)[0])(x)
    with pytest.raises(ValueError, match=r"ad must be one of \('func', 'autograd'\)"):
        HamiltonianNN(Pendulum(), ad="forward")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (
            torch.ones(4, 3),
            ValueError,
            r"last dimension 2n .* even and positive, got shape \(4, 3\)",
        ),
        (torch.ones(4, 0), ValueError, r"even and positive, got shape \(4, 0\)"),
        (torch.tensor(1.0), ValueError, r"got shape \(\)"),
        (torch.ones(4, 2, dtype=torch.int64), TypeError, "floating-point state"),
        ([1.0, 2.0], TypeError, "as a Tensor, got list"),
    ],
)
def test_bad_inputs_are_refused(x: Any, error: type[Exception], match: str) -> None:
    hnn = HamiltonianNN(Pendulum())
    ps, st = lux.setup(0, hnn)
    with pytest.raises(error, match=r"HamiltonianNN.*" + match):
        hnn(x, ps, st)


@pytest.mark.parametrize(
    ("energy", "got"),
    [
        (lambda x: x, r"got shape \(4, 2\)"),  # one value per coordinate
        (lambda x: x.sum(), r"got shape \(\)"),  # one value for the whole batch
        (lambda x: x.sum(-1, keepdim=True)[None], r"got shape \(1, 4, 1\)"),
        (lambda x: (x.sum(-1), x), "got tuple"),
    ],
)
def test_energy_must_be_one_value_per_sample(energy: Any, got: str) -> None:
    hnn = HamiltonianNN(lux.WrappedFunction(energy))
    ps, st = lux.setup(0, hnn)
    with pytest.raises(
        ValueError, match=r"one energy per sample, of shape \(4,\) or \(4, 1\).*" + got
    ):
        hnn(torch.ones(4, 2), ps, st)


def test_unbatched_energy_shapes_accepted() -> None:
    for energy in (lambda x: (x**2).sum(-1), lambda x: (x**2).sum(-1, keepdim=True)):
        hnn = HamiltonianNN(lux.WrappedFunction(energy))
        dx, _ = hnn(torch.tensor([1.0, 2.0]), {"model": {}}, {"model": {}})
        torch.testing.assert_close(dx, torch.tensor([4.0, -2.0]))
        assert math.isfinite(float(dx.sum()))
