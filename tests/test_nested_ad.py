"""Nested AD in compiled training steps: a physics-informed (PINN) loss differentiates the
model with respect to its *input* inside the loss (``vmap(hessian(u))``), and
``train_step(compile=True)`` differentiates that again with respect to the parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import lux_torch as lux
from lux_torch._graph import Traced, _meta_trace

# Inductor's lowering of the second-derivative graph calls a torch helper that torch itself
# deprecated (torch 2.13); not ours to fix
_TORCH_DEPRECATION = pytest.mark.filterwarnings(
    "ignore:`torch._prims_common.check` is deprecated:FutureWarning"
)

# ------------------------------------------------------------------ the PINN objective


def _mlp(width: int = 8) -> lux.Chain:
    return lux.Chain(
        lux.Linear(2, width, activation=torch.tanh),
        lux.Linear(width, width, activation=torch.tanh),
        lux.Linear(width, 1),
    )


def poisson_loss(model: lux.Layer, ps: Any, st: Any, data: Any) -> Any:
    """Mean squared residual of -Laplacian(u) = f plus the boundary misfit."""
    x, f, xb, ub = data

    def u(xi: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = model(xi.unsqueeze(0), ps, st)[0]
        return out.squeeze()

    lap = torch.func.vmap(torch.func.hessian(u))(x).diagonal(dim1=-2, dim2=-1).sum(-1)
    boundary = model(xb, ps, st)[0].squeeze(-1)
    return ((lap + f) ** 2).mean() + ((boundary - ub) ** 2).mean(), st, {}


def _data(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 2, generator=gen, dtype=dtype)
    f = torch.sin(torch.pi * x[:, 0]) * torch.sin(torch.pi * x[:, 1])
    xb = torch.rand(8, 2, generator=gen, dtype=dtype).round()
    return x, f, xb, torch.zeros(8, dtype=dtype)


def _laplacian_by_autograd(model: lux.Layer, ps: Any, st: Any, x: torch.Tensor) -> torch.Tensor:
    """The Laplacian from torch.autograd.functional.hessian, one point at a time."""

    def u(xi: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = model(xi.unsqueeze(0), ps, st)[0]
        return out.squeeze()

    return torch.stack([torch.autograd.functional.hessian(u, xi).trace() for xi in x])


def test_the_pinn_residual_matches_torch_autograd_functional() -> None:
    model = _mlp()
    ps, st = lux.setup(0, model, dtype=torch.float64)
    x, f, xb, ub = _data(torch.float64)
    lap = _laplacian_by_autograd(model, ps, st, x)
    expected = ((lap + f) ** 2).mean() + ((model(xb, ps, st)[0].squeeze(-1) - ub) ** 2).mean()
    loss, _, _ = poisson_loss(model, ps, st, (x, f, xb, ub))
    torch.testing.assert_close(loss, expected)


@pytest.mark.slow
@_TORCH_DEPRECATION
def test_pinn_step_compiles_and_equals_eager() -> None:
    model = _mlp()
    ps, st = lux.setup(0, model, dtype=torch.float64)
    data = _data(torch.float64)
    eager = lux.TrainState(model, ps, st, lux.optim.adam(1e-2))
    compiled = lux.TrainState(model, ps, st, lux.optim.adam(1e-2))
    for _ in range(3):  # warnings are errors here: no fallback, no warning
        eager, loss_e, _ = lux.train_step(poisson_loss, data, eager)
        compiled, loss_c, _ = lux.train_step(poisson_loss, data, compiled, compile=True)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-10, atol=1e-12)
    assert lux.tree.allclose(compiled.params, eager.params, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@_TORCH_DEPRECATION
def test_pinn_gradient_graph_matches_autograd_float32() -> None:
    model = _mlp()
    ps, st = lux.setup(1, model)
    data = _data(torch.float32)

    def grads(ps: Any, data: Any) -> Any:
        return torch.func.grad(lambda p: poisson_loss(model, p, st, data)[0])(ps)

    traced = Traced(grads, name="pinn")
    got = traced(ps, data)
    assert len(traced.entries) == 1  # traced, no fallback
    expected = torch.func.grad(lambda p: poisson_loss(model, p, st, data)[0])(ps)
    assert lux.tree.allclose(got, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ errors and fallbacks


def _numpy_tanh(x: torch.Tensor) -> torch.Tensor:  # .numpy() has no fake-tensor support
    return torch.from_numpy(np.tanh(x.numpy()))


def test_a_value_read_is_never_baked_into_the_retried_trace() -> None:
    # the fake trace fails; the meta retry must fail too (not trace numpy's result as a
    # constant), and the first error is the one raised
    with pytest.raises(RuntimeError) as raised:
        Traced(_numpy_tanh, name="np")(torch.randn(3))
    assert "meta tensors failed too" in "".join(getattr(raised.value, "__notes__", []))


def test_the_fallback_warning_names_the_first_error_even_when_the_fallback_fails() -> None:
    def failing_fallback(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("the fallback fails too")

    fn = Traced(_numpy_tanh, name="np", fallback=lambda: failing_fallback)
    with (
        pytest.warns(RuntimeWarning, match=r"np: could not trace it into one graph \(\w+Error"),
        pytest.raises(ValueError, match="the fallback fails too") as raised,
    ):
        fn(torch.randn(3))
    assert isinstance(raised.value.__cause__, RuntimeError)  # the tracing error
    assert fn.fallback is None  # not adopted


def test_meta_trace_restores_the_device_and_rejects_what_it_cannot_place() -> None:
    x = torch.randn(3)
    graph = _meta_trace(lambda t: [t + torch.ones(3, device=t.device)], [x])
    torch.testing.assert_close(graph(x)[0], x + 1)
    with pytest.raises(RuntimeError, match="several devices"):
        _meta_trace(lambda a, b: [a], [x, x.to("meta")])
    constant = torch.ones(3, device="meta")
    with pytest.raises(RuntimeError, match="meta tensor constant"):
        _meta_trace(lambda t: [t + constant], [x])
