"""The functional L-BFGS against torch.optim.LBFGS; Rosenbrock and a small network."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch import optim


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


X0 = torch.tensor([-1.2, 1.0, -0.5, 0.8], dtype=torch.float64)


def _torch_lbfgs(x0: torch.Tensor, steps: int, **kwargs: Any) -> torch.Tensor:
    p = torch.nn.Parameter(x0.clone())
    opt = torch.optim.LBFGS([p], tolerance_grad=0.0, tolerance_change=0.0, **kwargs)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _rosenbrock(p)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return p.detach()


@pytest.mark.parametrize("tree", [False, True])
def test_update_without_line_search_equals_torch(tree: bool) -> None:
    # one torch step of max_iter=1 is one iteration; history 5 < 50 iterations: it wraps
    expected = _torch_lbfgs(X0, 50, lr=0.1, max_iter=1, history_size=5)
    opt = optim.lbfgs(lr=0.1, memory_size=5, line_search=None)
    ps: Any = {"a": X0[:2].clone(), "b": {"c": X0[2:].clone()}} if tree else X0.clone()

    def loss(p: Any) -> torch.Tensor:
        return _rosenbrock(torch.cat([p["a"], p["b"]["c"]]) if tree else p)

    state = opt.init(ps)
    for _ in range(50):
        updates, state = opt.update(torch.func.grad(loss)(ps), state, ps)
        ps = optim.apply_updates(ps, updates)
    flat = lux.tree.ravel(ps)[0]
    torch.testing.assert_close(flat, expected, rtol=0, atol=1e-10)
    assert state["s"].shape == (5, 4) and int(state["count"]) == 50


@pytest.mark.parametrize(
    ("line_search", "lr", "max_iter"), [(None, 0.1, 60), ("strong_wolfe", 1.0, 20)]
)
def test_minimize_equals_torch_step(line_search: str | None, lr: float, max_iter: int) -> None:
    expected = _torch_lbfgs(
        X0, 1, lr=lr, max_iter=max_iter, history_size=7, line_search_fn=line_search
    )
    x, info = optim.lbfgs_minimize(
        _rosenbrock,
        X0.clone(),
        lr=lr,
        memory_size=7,
        line_search=line_search,  # type: ignore[arg-type]
        max_iter=max_iter,
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-10)
    assert info.iterations <= max_iter and info.evaluations <= max_iter * 5 // 4 + 1


def test_update_with_strong_wolfe_equals_minimize() -> None:
    x_min, _ = optim.lbfgs_minimize(
        _rosenbrock,
        X0.clone(),
        max_iter=12,
        max_eval=10_000,
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )
    opt = optim.lbfgs()
    x = X0.clone()
    state = opt.init(x)
    for _ in range(12):
        g, value = torch.func.grad_and_value(_rosenbrock)(x)
        updates, state = opt.update(g, state, x, value=value, value_fn=_rosenbrock)
        x = optim.apply_updates(x, updates)
    torch.testing.assert_close(x, x_min, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [2, 10])
@pytest.mark.parametrize("line_search", ["strong_wolfe", "backtracking"])
def test_converges_on_rosenbrock(n: int, line_search: Any) -> None:
    x0 = torch.zeros(n, dtype=torch.float64)
    x0[0] = -1.2
    x, info = optim.lbfgs_minimize(
        _rosenbrock,
        x0,
        line_search=line_search,
        max_iter=2000,
        max_eval=10_000,
        tolerance_grad=1e-10,
        tolerance_change=0.0,
    )
    assert info.stopped == "tolerance_grad", info
    assert float((x - 1.0).abs().max()) < 1e-8, (x, info)
    assert info.value < 1e-16


def test_finishes_a_network_after_adam() -> None:
    # Lux's tutorials: Adam first, then L-BFGS on the flat parameter vector
    model = lux.Chain(lux.Linear(1, 16, activation=torch.tanh), lux.Linear(16, 1))
    ps, st = lux.setup(lux.random.key(0), model, dtype=torch.float64)
    xs = torch.linspace(-2, 2, 64, dtype=torch.float64)[:, None]
    ys = torch.sin(2 * xs)

    def loss(p: Any) -> torch.Tensor:
        out: torch.Tensor = ((model(xs, p, st)[0] - ys) ** 2).mean()
        return out

    adam = optim.adam(1e-2)
    state = adam.init(ps)
    for _ in range(300):
        updates, state = adam.update(torch.func.grad(loss)(ps), state, ps)
        ps = optim.apply_updates(ps, updates)
    after_adam = float(loss(ps))
    flat, unravel = lux.tree.ravel(ps)
    flat, info = optim.lbfgs_minimize(lambda v: loss(unravel(v)), flat, max_iter=300)
    assert info.value < after_adam / 100, (after_adam, info)
    # the same on the tree directly
    tree_ps, tree_info = optim.lbfgs_minimize(loss, ps, max_iter=300)
    torch.testing.assert_close(lux.tree.ravel(tree_ps)[0], flat, rtol=0, atol=1e-12)
    assert tree_info == info


def test_no_line_search_vmaps_over_an_ensemble() -> None:
    opt = optim.lbfgs(lr=0.05, memory_size=3, line_search=None)
    starts = [X0 + 0.1 * i for i in range(3)]

    def step(x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        updates, state = opt.update(torch.func.grad(_rosenbrock)(x), state, x)
        return optim.apply_updates(x, updates), state

    xs, sts = torch.stack(starts), lux.tree.stack([opt.init(x) for x in starts])
    for _ in range(8):
        xs, sts = torch.func.vmap(step)(xs, sts)
    for i, x in enumerate(starts):
        state = opt.init(x)
        for _ in range(8):
            x, state = step(x, state)
        torch.testing.assert_close(xs[i], x, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_no_line_search_update_compiles_fullgraph() -> None:
    opt = optim.lbfgs(lr=0.05, memory_size=3, line_search=None)

    def step(x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        updates, state = opt.update(torch.func.grad(_rosenbrock)(x), state, x)
        return optim.apply_updates(x, updates), state

    compiled = torch.compile(step, fullgraph=True)
    x, state = X0.clone(), opt.init(X0)
    cx, cstate = X0.clone(), opt.init(X0)
    for _ in range(6):
        x, state = step(x, state)
        cx, cstate = compiled(cx, cstate)
    torch.testing.assert_close(cx, x, rtol=1e-12, atol=1e-12)


def test_line_search_refuses_vmap_and_missing_value_fn() -> None:
    opt = optim.lbfgs()
    state = opt.init(X0)
    g = torch.func.grad(_rosenbrock)(X0)
    with pytest.raises(ValueError, match="line_search='strong_wolfe' needs value_fn"):
        opt.update(g, state, X0)

    def step(x: torch.Tensor) -> Any:
        return opt.update(torch.func.grad(_rosenbrock)(x), opt.init(x), x, value_fn=_rosenbrock)

    with pytest.raises(RuntimeError, match=r"lbfgs: the line search .* eagerly only"):
        torch.func.vmap(step)(torch.stack([X0, X0]))
    with pytest.raises(ValueError, match="lbfgs: update needs ps"):
        opt.update(g, state)
    with pytest.raises(ValueError, match="the state holds 4 parameters, ps has 3"):
        optim.lbfgs(line_search=None).update(g[:3], state, X0[:3])
    with pytest.raises(ValueError, match=r"grads '' has shape \(3,\), but the parameter"):
        optim.lbfgs(line_search=None).update(g[:3], state, X0)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.lbfgs(lr=0.0), "lbfgs: lr must be > 0"),
        (lambda: optim.lbfgs(memory_size=0), "memory_size must be an int >= 1"),
        (lambda: optim.lbfgs(line_search="wolfe"), "line_search must be"),  # type: ignore[arg-type]
        (lambda: optim.lbfgs(c1=0.9, c2=0.1), "need 0 < c1 < c2 < 1"),
        (lambda: optim.lbfgs(max_linesearch_steps=0), "max_linesearch_steps must be"),
        (lambda: optim.lbfgs(tolerance_change=-1.0), "tolerance_change must be >= 0"),
        (lambda: optim.lbfgs(decrease_factor=1.0), r"decrease_factor must be in \(0, 1\)"),
        (lambda: optim.lbfgs_minimize(_rosenbrock, X0, max_iter=0), "max_iter must be an int"),
        (lambda: optim.lbfgs_minimize(_rosenbrock, X0, max_eval=0), "max_eval must be an int"),
        (lambda: optim.lbfgs_minimize(_rosenbrock, X0, lr=-1.0), "lbfgs_minimize: lr must be"),
    ],
)
def test_bad_configuration(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.slow
def test_line_search_refuses_compile() -> None:
    opt = optim.lbfgs()

    def step(x: torch.Tensor, state: Any) -> Any:
        return opt.update(torch.func.grad(_rosenbrock)(x), state, x, value_fn=_rosenbrock)

    with pytest.raises(Exception, match=r"lbfgs: the line search .* eagerly only"):
        torch.compile(step, fullgraph=True)(X0.clone(), opt.init(X0))
