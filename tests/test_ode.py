"""Tests for lux_torch.ode: parity with torchdiffeq, gradients, statistics, errors, transforms."""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
from typing import Any

import pytest
import torch
import torchdiffeq
from torch import nn

import lux_torch as lux
from lux_torch.ode import NeuralODE, vector_field
from lux_torch.testing import check_layer

F64 = torch.float64
T = (0.0, 0.25, 0.5, 1.0)


def _field(hidden: int = 8) -> lux.Chain:
    return lux.Chain(lux.Linear(2, hidden, activation=torch.tanh), lux.Linear(hidden, 2))


def _y0(n: int = 5, dtype: torch.dtype = F64) -> torch.Tensor:
    return lux.random.normal(lux.random.key(1), (n, 2), dtype=dtype)


class _TorchField(nn.Module):
    """The same vector field as ``_field`` as an nn.Module (torchdiffeq's usual style)."""

    def __init__(self, ps: dict[str, Any]) -> None:
        super().__init__()
        hidden = ps["layer_1"]["weight"].shape[0]
        first, last = nn.Linear(2, hidden), nn.Linear(hidden, 2)
        self.net = nn.Sequential(first, nn.Tanh(), last).to(F64)  # .to moves them in place
        self.nfe = 0
        with torch.no_grad():
            for linear, name in ((first, "layer_1"), (last, "layer_2")):
                linear.weight.copy_(ps[name]["weight"])
                linear.bias.copy_(ps[name]["bias"])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        dy: torch.Tensor = self.net(y)
        return dy

    def grads(self) -> dict[str, Any]:
        return {
            name: {"weight": self.net[i].weight.grad, "bias": self.net[i].bias.grad}
            for i, name in ((0, "layer_1"), (2, "layer_2"))
        }


def _requiring_grad(ps: Any) -> Any:
    return lux.tree.map(lambda p: p.detach().clone().requires_grad_(True), ps)


def _grads(node: NeuralODE, ps: Any, st: Any, y0: torch.Tensor) -> tuple[Any, Any]:
    """Gradients of sum(ys**2) with respect to ps (torch.autograd) and the new state."""
    ps = _requiring_grad(ps)
    ys, new_st = node(y0, ps, st)
    leaves = lux.tree.leaves(ps)
    grads = torch.autograd.grad((ys**2).sum(), leaves)
    return lux.tree.unflatten(lux.tree.flatten(ps)[1], list(grads)), new_st


class Decay(lux.Layer):
    """``dy/dt = -rate * t * y``: solution ``exp(-rate * t**2 / 2) * y0``."""

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"rate": torch.ones(())}

    def __call__(self, x: Any, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        t, y = x
        return -ps["rate"] * t * y, st


class Counter(lux.Layer):
    """``dy/dt = -y``, counting its evaluations in its state."""

    def init_state(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"calls": torch.zeros((), dtype=torch.int64)}

    def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        return -y, {"calls": st["calls"] + 1}


class Rotation(lux.Layer):
    """A tuple state: ``d(a, b)/dt = (-b, a)``."""

    def __call__(self, y: Any, ps: Any, st: Any) -> tuple[Any, Any]:
        a, b = y
        return (-b, a), st


# --------------------------------------------------------------------------- parity


def test_trajectory_and_gradients_equal_torchdiffeq_with_nn_module() -> None:
    node = NeuralODE(_field(), T, rtol=1e-9, atol=1e-12)
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = _y0()
    ys, new_st = node(y0, ps, st)

    module = _TorchField(ps["vector_field"])
    ref = torchdiffeq.odeint(module, y0, torch.tensor(T, dtype=F64), rtol=1e-9, atol=1e-12)
    assert ys.shape == (len(T), *y0.shape)
    torch.testing.assert_close(ys, ref, rtol=1e-9, atol=1e-12)
    assert int(new_st["stats"]["nfe"]) == module.nfe  # the same solve, step for step

    grads, _ = _grads(node, ps, st, y0)
    (ref**2).sum().backward()
    assert lux.tree.allclose(grads["vector_field"], module.grads(), rtol=1e-9, atol=1e-12)


def test_adjoint_gradients_equal_backprop() -> None:
    backprop = NeuralODE(_field(), T)
    adjoint = dataclasses.replace(backprop, adjoint=True)
    ps, st = lux.setup(0, backprop, dtype=F64)
    y0 = _y0()
    g_backprop, _ = _grads(backprop, ps, st, y0)
    g_adjoint, new_st = _grads(adjoint, ps, st, y0)
    assert lux.tree.allclose(g_adjoint, g_backprop, rtol=1e-4, atol=1e-4)
    assert int(new_st["stats"]["nfe_adjoint"]) > 0  # filled in by the backward pass


def test_adjoint_gradient_with_respect_to_y0() -> None:
    node = NeuralODE(_field(), T, adjoint=True)
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = _y0().requires_grad_(True)
    (g,) = torch.autograd.grad(node(y0, ps, st)[0].sum(), y0)  # ps need no grad
    y0_ref = y0.detach().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(
        torchdiffeq.odeint(
            _TorchField(ps["vector_field"]), y0_ref, torch.tensor(T, dtype=F64)
        ).sum(),
        y0_ref,
    )
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("adjoint", [False, True])
def test_time_dependent_field_matches_closed_form(adjoint: bool) -> None:
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)
    node = NeuralODE(Decay(), t, time_dependent=True, rtol=1e-10, atol=1e-12, adjoint=adjoint)
    ps, st = lux.setup(0, node, dtype=F64)
    ps = _requiring_grad(ps)
    y0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    ys, _ = node(y0, ps, st)
    exact = torch.exp(-(t**2) / 2)[:, None] * y0
    torch.testing.assert_close(ys, exact, rtol=1e-8, atol=1e-10)
    # d y(T) / d rate = -T**2 / 2 * y(T)
    (g,) = torch.autograd.grad(ys[-1].sum(), ps["vector_field"]["rate"])
    torch.testing.assert_close(g, (-2.0 * exact[-1]).sum(), rtol=1e-6, atol=1e-8)


def test_tuple_state_and_save_at_last() -> None:
    t = (0.0, math.pi / 2, math.pi)
    node = NeuralODE(Rotation(), t, rtol=1e-10, atol=1e-12)
    ps, st = lux.setup(0, node, dtype=F64)
    a0, b0 = torch.ones(3, dtype=F64), torch.zeros(3, dtype=F64)
    (a, b), _ = node((a0, b0), ps, st)
    assert a.shape == b.shape == (3, 3)
    torch.testing.assert_close(
        a[:, 0], torch.tensor([1.0, 0.0, -1.0], dtype=F64), atol=1e-8, rtol=0
    )
    torch.testing.assert_close(b[:, 0], torch.tensor([0.0, 1.0, 0.0], dtype=F64), atol=1e-8, rtol=0)
    (a_last, b_last), _ = dataclasses.replace(node, save_at="last")([a0, b0], ps, st)
    assert torch.equal(a_last, a[-1]) and torch.equal(b_last, b[-1])


def test_decreasing_times_and_tensor_options_match_torchdiffeq() -> None:
    t = (1.0, 0.5, 0.0)
    step_t = torch.tensor([0.75, 0.25], dtype=F64)
    node = NeuralODE(_field(), t, options={"step_t": step_t})
    assert node.options == {"step_t": (0.75, 0.25)}  # layers hold no tensors
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = _y0()
    ys, _ = node(y0, ps, st)
    ref = torchdiffeq.odeint(
        _TorchField(ps["vector_field"]),
        y0,
        torch.tensor(t, dtype=F64),
        options={"step_t": step_t},
    )
    torch.testing.assert_close(ys, ref, rtol=1e-12, atol=1e-14)


def test_float32_matches_torchdiffeq_with_float32_times() -> None:
    t = torch.linspace(0.0, 25.0, 1000)[:10]  # the ode_demo batch times
    node = NeuralODE(_field(), t)
    assert node.t == tuple(t.tolist())
    ps, st = lux.setup(0, node)
    y0 = _y0(dtype=torch.float32)
    module = _TorchField(ps["vector_field"]).float()
    ys, _ = node(y0, ps, st)
    assert torch.equal(ys, torchdiffeq.odeint(module, y0, t))


# --------------------------------------------------------------------------- state, stats


def test_vector_field_state_is_threaded_and_stats_are_counted() -> None:
    node = NeuralODE(Counter(), T)
    ps, st = lux.setup(0, node, dtype=F64)
    _, new_st = node(_y0(), ps, st)
    stats = new_st["stats"]
    assert int(new_st["vector_field"]["calls"]) == int(stats["nfe"]) > 0
    assert int(stats["steps_accepted"]) > 0 and int(stats["steps_rejected"]) >= 0
    assert int(stats["nfe_adjoint"]) == 0
    assert all(v.dtype == torch.int64 and v.shape == () for v in stats.values())
    assert int(st["vector_field"]["calls"]) == 0  # the input state is untouched


def test_fixed_grid_stats() -> None:
    node = NeuralODE(_field(), T, method="rk4")
    ps, st = lux.setup(0, node)
    _, new_st = node(_y0(dtype=torch.float32), ps, st)
    stats = {k: int(v) for k, v in new_st["stats"].items()}
    assert stats == {"nfe": 4 * 3, "nfe_adjoint": 0, "steps_accepted": 3, "steps_rejected": 0}


def test_rejected_steps_are_counted() -> None:
    # a stiff-ish field with a huge first step forces rejections
    node = NeuralODE(lux.Scale(2), (0.0, 10.0), options={"first_step": 5.0})
    ps, st = lux.setup(0, node, dtype=F64)
    ps = {
        "vector_field": {
            "weight": torch.full((2,), -3.0, dtype=F64),
            "bias": torch.zeros(2, dtype=F64),
        }
    }
    _, new_st = node(_y0(), ps, st)
    assert int(new_st["stats"]["steps_rejected"]) > 0


def test_vector_field_helper_for_direct_torchdiffeq_use() -> None:
    node = NeuralODE(_field(), T)
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = _y0()
    f = vector_field(node.vector_field, ps["vector_field"], st["vector_field"])
    ys = torchdiffeq.odeint(f, y0, torch.tensor(T, dtype=F64))
    assert torch.equal(ys, node(y0, ps, st)[0])
    assert f.nfe > 0 and not isinstance(f, nn.Module)

    ps_g = _requiring_grad(ps["vector_field"])
    f = vector_field(node.vector_field, ps_g, st["vector_field"])
    assert len(f.adjoint_params) == 4
    out = torchdiffeq.odeint_adjoint(
        f, y0, torch.tensor(T, dtype=F64), adjoint_params=f.adjoint_params
    )
    grads = torch.autograd.grad((out**2).sum(), f.adjoint_params)
    ref, _ = _grads(node, ps, st, y0)
    for g, r in zip(grads, lux.tree.leaves(ref), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- errors


def test_output_shape_mismatch_names_the_layer() -> None:
    field = lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Linear(8, 3))
    node = NeuralODE(field, T)
    ps, st = lux.setup(0, node)
    with pytest.raises(
        ValueError,
        match=r"Chain\(.*\) returned dy/dt of shape \(5, 3\) for a state of shape \(5, 2\)",
    ) as info:
        node(_y0(dtype=torch.float32), ps, st)
    assert any("NeuralODE" in note for note in info.value.__notes__)
    tuple_node = NeuralODE(lux.WrappedFunction(lambda y: y[0]), T)
    ps, st = lux.setup(0, tuple_node)
    with pytest.raises(ValueError, match="returned Tensor for a state that is a tuple of 2"):
        tuple_node((torch.ones(2), torch.ones(2)), ps, st)


def test_adjoint_with_partly_frozen_parameters_matches_backprop() -> None:
    # torchdiffeq 0.2.5 leaves out adjoint parameters that do not require grad (its issue
    # #118 is fixed): the trainable ones get backprop's gradients, the frozen ones none.
    grads = {}
    for adjoint in (False, True):
        node = NeuralODE(_field(), T, adjoint=adjoint, rtol=1e-10, atol=1e-10)
        ps, st = lux.setup(0, node, dtype=F64)
        ps = _requiring_grad(ps)
        frozen = ps["vector_field"]["layer_2"]["bias"] = ps["vector_field"]["layer_2"][
            "bias"
        ].detach()
        ys, _ = node(_y0(), ps, st)
        leaves = [p for p in lux.tree.leaves(ps) if p.requires_grad]
        grads[adjoint] = torch.autograd.grad((ys**2).sum(), leaves)
        assert not frozen.requires_grad and len(leaves) == 3
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("t", "match"),
    [
        (
            (0.0, 1.0, 0.5),
            r"strictly increasing or strictly decreasing, but t\[1\] = 1.0 and t\[2\] = 0.5",
        ),
        ((0.0, 0.5, 0.5), "are equal"),
        ((), "at least one time point"),
        ((0.0, math.inf), "finite"),
        (torch.zeros(2, 2), "one-dimensional"),
    ],
)
def test_invalid_times_raise_at_construction(t: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NeuralODE(_field(), t)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "rk5"}, ValueError, "method must be one of torchdiffeq's solvers"),
        ({"adjoint_rtol": 1e-3}, ValueError, "adjoint_rtol only apply with adjoint=True"),
        ({"save_at": "first"}, ValueError, "save_at must be one of"),
        ({"rtol": -1.0}, ValueError, "rtol must be a non-negative float"),
        ({"adjoint": 1}, TypeError, "adjoint must be a bool"),
        (
            {"adjoint": True, "adjoint_method": "rk4", "options": {"first_step": 0.1}},
            ValueError,
            "give adjoint_options too",
        ),
    ],
)
def test_invalid_configuration_raises(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        NeuralODE(_field(), T, **kwargs)


def test_bad_input_and_module_vector_field() -> None:
    node = NeuralODE(_field(), T)
    ps, st = lux.setup(0, node)
    with pytest.raises(TypeError, match="y0 must be a floating-point Tensor"):
        node(torch.ones(3, 2, dtype=torch.int64), ps, st)
    with pytest.raises(TypeError, match=r"wrap it with lux_torch\.from_torch"):
        NeuralODE(nn.Linear(2, 2), T)  # type: ignore[arg-type]


def test_missing_torchdiffeq_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)
    with pytest.raises(ImportError, match=r"pip install lux-torch\[ode\]"):
        NeuralODE(_field(), T)


# --------------------------------------------------------------------------- the layer contract


def test_layer_is_immutable_and_hashable() -> None:
    node = NeuralODE(_field(), torch.tensor(T), options={"first_step": 0.1})
    assert node.t == T and all(type(v) is float for v in node.t)
    assert node == NeuralODE(_field(), list(T), options={"first_step": 0.1})
    assert hash(node) == hash(NeuralODE(_field(), T, options={"first_step": 0.1}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.method = "rk4"  # type: ignore[misc]
    assert lux.param_count(node) == lux.param_count(_field())
    assert "t=0 => 1 (4 points)" in repr(node) and "first_step" in repr(node)


class _Reference(nn.Module):
    """torchdiffeq + nn.Module with ``ps``'s names, for check_layer's parity check."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.vector_field = nn.Sequential(
            collections.OrderedDict(
                layer_1=nn.Linear(2, 8), tanh=nn.Tanh(), layer_2=nn.Linear(8, 2)
            )
        )
        self.kwargs = kwargs

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        field = self.vector_field
        t = torch.tensor(T, dtype=y0.dtype)
        result: torch.Tensor = torchdiffeq.odeint(lambda t, y: field(y), y0, t, **self.kwargs)
        return result


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_check_layer(method: str) -> None:
    # compile and vmap cannot work with torchdiffeq: see the two tests below
    node = NeuralODE(_field(), T, method=method)
    ps, st = lux.setup(0, node, dtype=F64)
    # torchdiffeq's adaptive solvers use an autograd.Function without setup_context: no
    # torch.func transform (test_torch_func_grad_with_fixed_grid_and_clear_error_otherwise)
    jvp = True if method == "rk4" else "adaptive torchdiffeq solvers: no torch.func transforms"
    report = check_layer(
        node,
        _y0(3),
        ps=ps,
        st=st,
        reference=_Reference(method=method),
        compile=False,
        vmap=False,
        jvp=jvp,
    )
    for check in ("forward", "purity", "determinism", "parity", "gradcheck"):
        assert report[check] == "passed", report
    assert report["jvp"] == ("passed" if jvp is True else f"skipped: {jvp}")


def test_compile_fullgraph_fails_clearly_and_partial_compile_runs_eagerly() -> None:
    node = NeuralODE(_field(), T, method="rk4")
    ps, st = lux.setup(0, node)
    y0 = _y0(dtype=torch.float32)
    expected, _ = node(y0, ps, st)
    with pytest.raises(AssertionError, match="torchdiffeq's solvers branch in Python on tensor"):
        check_layer(node, y0, ps=ps, st=st, gradcheck=False, vmap=False, compile_backend="eager")
    partial = torch.compile(lambda y, p, s: node(y, p, s)[0] * 2, backend="eager")
    torch.testing.assert_close(partial(y0, ps, st), expected * 2)


def test_vmap_fails_clearly() -> None:
    node = NeuralODE(_field(), T, method="rk4")
    st = lux.init_state(0, node)
    stacked = lux.tree.stack([lux.setup(k, node)[0] for k in range(3)])
    y0 = _y0(dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"cannot run under torch\.func\.vmap"):
        torch.func.vmap(lambda p: node(y0, p, st)[0])(stacked)


# --------------------------------------------------------------------------- torch.func, training


def test_requires_autograd() -> None:
    assert NeuralODE(_field(), T).requires_autograd  # adaptive
    assert NeuralODE(_field(), T, method="rk4", adjoint=True).requires_autograd
    assert NeuralODE(_field(), T, method="euler", options={"perturb": True}).requires_autograd
    assert not NeuralODE(_field(), T, method="rk4").requires_autograd


def test_torch_func_grad_with_fixed_grid_and_clear_error_otherwise() -> None:
    node = NeuralODE(_field(), T, method="rk4")
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = _y0()
    g_func = torch.func.grad(lambda p: (node(y0, p, st)[0] ** 2).sum())(ps)
    g_autograd, _ = _grads(node, ps, st, y0)
    assert lux.tree.allclose(g_func, g_autograd, rtol=1e-12, atol=1e-14)
    for bad in (NeuralODE(_field(), T), dataclasses.replace(node, adjoint=True)):
        with pytest.raises(RuntimeError, match=r"cannot be differentiated with torch\.func"):
            torch.func.grad(lambda p, bad=bad: bad(y0, p, st)[0].sum())(ps)


@pytest.mark.parametrize(
    "kwargs", [{}, {"adjoint": True}, {"method": "rk4"}], ids=["dopri5", "adjoint", "rk4"]
)
def test_train_step_learns(kwargs: dict[str, Any]) -> None:
    node = NeuralODE(_field(16), (0.0, 0.1, 0.2, 0.3), **kwargs)
    ps, st = lux.setup(0, node)
    y0 = _y0(8, torch.float32)
    target = torch.stack([y0 * (1 - 0.2 * i) for i in range(4)])
    ts = lux.TrainState(node, ps, st, lux.optim.adam(1e-2))
    losses = []
    for _ in range(30):
        ts, loss, _ = lux.train_step(lux.losses.MSELoss(), (y0, target), ts)
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 4, losses
    assert int(ts.states["stats"]["nfe"]) > 0
    assert (int(ts.states["stats"]["nfe_adjoint"]) > 0) == bool(kwargs.get("adjoint"))


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_train_step_compiled_runs_the_solve_eagerly(method: str) -> None:
    node = NeuralODE(_field(), (0.0, 0.1), method=method, options=None)
    ps, st = lux.setup(0, node)
    eager = compiled = lux.TrainState(node, ps, st, lux.optim.adam(1e-2))
    y0 = _y0(dtype=torch.float32)
    data = (y0, y0[None].expand(2, -1, -1) * 0.5)
    for _ in range(3):
        eager, loss_e, _ = lux.train_step(lux.losses.MSELoss(), data, eager)
        compiled, loss_c, _ = lux.train_step(lux.losses.MSELoss(), data, compiled, compile=True)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-7)
    assert lux.tree.allclose(compiled.params, eager.params, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- events, augmentation


class ConstantDecay(lux.Layer):
    """``dy/dt = -rate``: ``y(t) = y0 - rate * t``."""

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"rate": torch.full((), 2.0)}

    def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        return -ps["rate"] * torch.ones_like(y), st


def half(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y - 0.5


@pytest.mark.parametrize(
    ("method", "options", "adjoint"),
    [("dopri5", None, False), ("dopri5", None, True), ("rk4", {"step_size": 0.01}, False)],
)
def test_event_time_and_its_gradient(method: str, options: Any, adjoint: bool) -> None:
    # y(t) = 1 - rate * t hits 0.5 at t* = 0.5 / rate: t* = 0.25, dt*/drate = -0.125
    node = NeuralODE(
        ConstantDecay(), (0.0, 1.0), event_fn=half, method=method, options=options, adjoint=adjoint
    )
    assert node.requires_autograd and "event_fn=half" in repr(node)
    ps, st = lux.setup(0, node, dtype=F64)
    ps = _requiring_grad(ps)
    (event_t, ys), new_st = node(torch.ones(1, dtype=F64), ps, st)
    assert ys.shape == (2, 1)
    torch.testing.assert_close(event_t, torch.tensor(0.25, dtype=F64), rtol=0, atol=1e-8)
    torch.testing.assert_close(ys[-1], torch.tensor([0.5], dtype=F64), rtol=0, atol=1e-8)
    (g,) = torch.autograd.grad(event_t, ps["vector_field"]["rate"])
    torch.testing.assert_close(g, torch.tensor(-0.125, dtype=F64), rtol=1e-6, atol=0)
    steps = int(new_st["stats"]["steps_accepted"])
    assert steps == -1 if method == "rk4" else steps > 0  # fixed grid: no step callbacks
    # backwards in time: from y(0) = 0 down to t* = -0.25
    back = dataclasses.replace(node, t=(0.0, -1.0), save_at="last")
    (event_t, y_event), _ = back(torch.zeros(1, dtype=F64), ps, st)
    torch.testing.assert_close(event_t.detach(), torch.tensor(-0.25, dtype=F64), rtol=0, atol=1e-8)
    assert y_event.shape == (1,)


def test_augmented_state() -> None:
    node = NeuralODE(lux.Linear(3, 3), T, augment=1, method="rk4")
    ps, st = lux.setup(0, node)
    y0 = _y0(4, torch.float32)
    ys, _ = node(y0, ps, st)
    assert ys.shape == (len(T), 4, 3)
    assert torch.equal(ys[0, :, :2], y0) and torch.equal(ys[0, :, 2], torch.zeros(4))
    plain = NeuralODE(lux.Linear(3, 3), T, method="rk4")
    torch.testing.assert_close(ys, plain(torch.cat([y0, torch.zeros(4, 1)], -1), ps, st)[0])
    with pytest.raises(ValueError, match="augment must be an int >= 0"):
        NeuralODE(lux.Linear(3, 3), T, augment=-1)
    with pytest.raises(TypeError, match="augment needs a Tensor state"):
        node((y0, y0), ps, st)


# ------------------------------------------------------------------ regularization, ensembles


class Linear1(lux.Layer):
    """``dy/dt = a * y``: kinetic energy and Jacobian integrals in closed form."""

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": torch.full((), -0.5)}

    def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        return ps["a"] * y, st


@pytest.mark.parametrize("adjoint", [False, True])
def test_regularization_integrals_and_gradients(adjoint: bool) -> None:
    horizon, a = 2.0, -0.5
    node = NeuralODE(
        Linear1(),
        (0.0, 1.0, horizon),
        regularize=("jacobian", "kinetic"),
        adjoint=adjoint,
        rtol=1e-10,
        atol=1e-12,
    )
    assert node.regularize == ("kinetic", "jacobian") and node.requires_autograd
    ps, st = lux.setup(0, node, dtype=F64)
    ps = _requiring_grad(ps)
    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=F64)
    ys, new_st = node(y0, ps, st)
    assert ys.shape == (3, 2, 2)
    # kinetic: ∫ a² |y0|² e^{2at} dt; jacobian: ∫ |a eps|² dt with the probe eps from st["key"]
    s, grow = (y0**2).sum(), math.exp(2 * a * horizon)
    eps = lux.random.normal(lux.random.split(st["key"])[1], y0.shape, dtype=F64)
    reg = new_st["regularization"]
    torch.testing.assert_close(reg["kinetic"], a * s * (grow - 1) / 2, rtol=1e-8, atol=0)
    torch.testing.assert_close(reg["jacobian"], horizon * a**2 * (eps**2).sum(), rtol=1e-8, atol=0)
    assert not torch.equal(new_st["key"], st["key"])  # a fresh probe next call
    (g,) = torch.autograd.grad(reg["kinetic"] + reg["jacobian"], ps["vector_field"]["a"])
    expected = s / 2 * (grow - 1) + a * s * horizon * grow + 2 * a * horizon * (eps**2).sum()
    torch.testing.assert_close(g, expected, rtol=1e-6, atol=0)


# torch warns once when the autograd engine's device thread first runs cuBLAS (benign)
@pytest.mark.filterwarnings("ignore:Attempting to run cuBLAS, but there was no current CUDA")
def test_regularized_node_passes_check_layer() -> None:
    node = NeuralODE(_field(), T, method="rk4", regularize=("kinetic", "jacobian"))
    ps, st = lux.setup(0, node, dtype=F64)
    # the regularizers differentiate with torch.autograd inside the call: no torch.func
    no_func = "the regularizers call torch.autograd inside the forward: no torch.func"
    report = check_layer(node, _y0(3), ps=ps, st=st, compile=False, vmap=False, jvp=no_func)
    assert report["gradcheck"] == report["determinism"] == "passed", report
    kinetic_only = NeuralODE(_field(), T, method="rk4", regularize="kinetic")
    assert not kinetic_only.requires_autograd and "key" not in lux.init_state(0, kinetic_only)
    with pytest.raises(ValueError, match="regularize must name some of"):
        NeuralODE(_field(), T, regularize=("l2",))


class VmapEnsemble(lux.Layer):
    """``n`` copies of ``member`` with their own parameters, batched with vmap inside f."""

    member: lux.Layer
    n: int

    def init_params(self, key: torch.Tensor) -> dict[str, Any]:
        keys = lux.random.split(key, self.n)
        result: dict[str, Any] = lux.tree.stack([self.member.init_params(k) for k in keys])
        return result

    def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        dy = torch.func.vmap(lambda p, yi: self.member(yi, p, st["member"])[0])(ps, y)
        return dy, st


def test_ensemble_by_vmap_inside_the_vector_field() -> None:
    member = _field()
    node = NeuralODE(VmapEnsemble(member, 3), T, method="rk4")
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = _y0(5).expand(3, 5, 2)  # (members, batch, features)
    ys, _ = node(y0, ps, st)
    single = NeuralODE(member, T, method="rk4")
    _, st1 = lux.setup(0, single, dtype=F64)
    for i, p in enumerate(lux.tree.unstack(ps["vector_field"])):
        torch.testing.assert_close(ys[:, i], single(y0[i], {"vector_field": p}, st1)[0])
