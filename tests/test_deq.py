"""DEQ (lux_torch.sciml.deq) and its fixed-point solvers: references are closed forms for
linear maps, backpropagation through 300 unrolled iterations and finite differences."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch.sciml.deq import DEQ
from lux_torch.sciml.fixed_point import solve
from lux_torch.testing import check_layer

F64 = torch.float64
D = 5
SOLVERS = ("fixed_point", "anderson", "broyden")


def _tanh_map(d: int = D) -> lux.Chain:
    """``f((z, x)) = tanh(W z + b + x)``."""
    return lux.Chain(lux.Parallel(torch.add, lux.Linear(d, d), lux.NoOpLayer()), torch.tanh)


def _linear_map(d: int = D) -> lux.Chain:
    """``f((z, x)) = A z + x``: z* = (I - A)^-1 x."""
    return lux.Chain(lux.Parallel(torch.add, lux.Linear(d, d, bias=False), lux.NoOpLayer()))


def _contractive(ps: Any, scale: float = 0.6) -> Any:
    """Rescale every weight matrix to spectral norm ``scale`` (a contraction)."""

    def fix(t: torch.Tensor) -> torch.Tensor:
        return t * (scale / torch.linalg.matrix_norm(t, 2)) if t.ndim == 2 else t

    return lux.tree.map(fix, ps)


def _x(n: int = 4, d: int = D) -> torch.Tensor:
    return lux.random.normal(lux.random.key(7), (n, d), dtype=F64)


def _setup(deq: DEQ, key: int = 0) -> tuple[Any, Any]:
    ps, st = lux.setup(key, deq, dtype=F64)
    return _contractive(ps), st


def _weight(ps: Any) -> torch.Tensor:
    return ps["model"]["layer_1"]["layer_1"]["weight"]  # type: ignore[no-any-return]


def _max_diff(a: Any, b: Any) -> float:
    return max(
        float((u - v).abs().max())
        for u, v in zip(lux.tree.leaves(a), lux.tree.leaves(b), strict=True)
    )


# ------------------------------------------------------------------------- solvers


@pytest.mark.parametrize("solver", SOLVERS)
def test_solvers_find_the_closed_form_fixed_point(solver: str) -> None:
    A = _contractive(torch.randn(D, D, dtype=F64, generator=torch.Generator().manual_seed(0)))
    x = _x()
    result = solve(lambda z: z @ A.T + x, torch.zeros_like(x), solver=solver, max_iter=200,
                   atol=1e-12, rtol=0.0)  # fmt: skip
    expected = torch.linalg.solve(torch.eye(D, dtype=F64) - A, x.T).T
    torch.testing.assert_close(result.z, expected, rtol=0, atol=1e-10)
    assert bool(result.converged.all()) and result.iterations.shape == (4,)
    if solver != "fixed_point":  # the accelerated solvers need fewer evaluations
        plain = solve(lambda z: z @ A.T + x, torch.zeros_like(x), solver="fixed_point",
                      max_iter=200, atol=1e-12, rtol=0.0)  # fmt: skip
        assert int(result.iterations.max()) < int(plain.iterations.max())


@pytest.mark.parametrize("solver", SOLVERS)
def test_masked_fixed_iterations_equal_early_stopping(solver: str) -> None:
    # vmap and compile run max_iter iterations with converged samples frozen
    A = _contractive(torch.randn(D, D, dtype=F64, generator=torch.Generator().manual_seed(1)))
    x = _x(6) * torch.logspace(-3, 0, 6, dtype=F64)[:, None]  # samples converge at different k

    def run(early: bool) -> Any:
        return solve(lambda z: torch.tanh(z @ A.T + x), torch.zeros_like(x), solver=solver,
                     max_iter=60, atol=1e-9, rtol=0.0, early_stop=early)  # fmt: skip

    eager, fixed = run(True), run(False)
    assert len(set(eager.iterations.tolist())) > 1  # per-sample convergence
    for a, b in zip(eager, fixed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("solver", SOLVERS)
def test_implicit_gradient_equals_backprop_through_300_iterations(solver: str) -> None:
    f = _tanh_map()
    deq = DEQ(f, solver=solver, max_iter=200, atol=1e-13, rtol=0.0)
    ps, st = _setup(deq)
    x = _x()
    w = lux.random.normal(lux.random.key(3), (4, D), dtype=F64)

    def implicit(ps: Any, x: torch.Tensor) -> Any:
        return (deq(x, ps, st)[0] * w).sum()

    def unrolled(ps: Any, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(x)
        for _ in range(300):
            z = f((z, x), ps["model"], st["model"])[0]
        return (z * w).sum()

    expected = torch.func.grad(unrolled, argnums=(0, 1))(ps, x)
    got = torch.func.grad(implicit, argnums=(0, 1))(ps, x)
    assert _max_diff(got, expected) < 1e-8
    leaves = [t.detach().requires_grad_() for t in (x, *lux.tree.leaves(ps))]
    ps_leaves = lux.tree.unflatten(lux.tree.flatten(ps)[1], leaves[1:])
    z, new_st = deq(leaves[0], ps_leaves, st)
    got_autograd = torch.autograd.grad((z * w).sum(), leaves)
    assert _max_diff(got_autograd, (expected[1], *lux.tree.leaves(expected[0]))) < 1e-8
    assert int(new_st["stats"]["backward_iterations"]) > 1  # written by the backward pass


def test_gradcheck_implicit() -> None:
    deq = DEQ(_tanh_map(3), max_iter=100, atol=1e-13, rtol=0.0)
    ps, st = _setup(deq)
    weight, bias = _weight(ps), ps["model"]["layer_1"]["layer_1"]["bias"]
    x = _x(2, 3)

    def fn(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> Any:
        p = {"model": {"layer_1": {"layer_1": {"weight": weight, "bias": bias}, "layer_2": {}},
                       "layer_2": {}}}  # fmt: skip
        return deq(x, p, st)[0]

    inputs = tuple(t.detach().requires_grad_() for t in (weight, bias, x))
    assert torch.autograd.gradcheck(fn, inputs)


def _linear_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    A = _contractive(torch.randn(D, D, dtype=F64, generator=torch.Generator().manual_seed(2)))
    x = _x(3)
    w = lux.random.normal(lux.random.key(4), (3, D), dtype=F64)
    z_star = torch.linalg.solve(torch.eye(D, dtype=F64) - A, x.T).T
    return A, x, w, z_star


@pytest.mark.parametrize(
    ("grad", "steps", "damping"),
    [("implicit", 1, 1.0), ("jfb", 1, 1.0), ("phantom", 4, 0.5), ("unroll", 3, 1.0)],
)
def test_gradient_modes_match_their_closed_forms(grad: str, steps: int, damping: float) -> None:
    # f(z) = A z + x, loss = sum(w * z): every mode has a closed form in A, x, w
    A, x, w, z_star = _linear_case()
    deq = DEQ(_linear_map(), solver="anderson", max_iter=100, atol=1e-13, rtol=0.0, grad=grad,
              grad_steps=steps, damping=damping)  # fmt: skip
    ps, st = lux.setup(0, deq, dtype=F64)
    ps["model"]["layer_1"]["layer_1"]["weight"] = A

    def loss(ps: Any, x: torch.Tensor) -> Any:
        return (deq(x, ps, st)[0] * w).sum()

    g_ps, g_x = torch.func.grad(loss, argnums=(0, 1))(ps, x)
    eye = torch.eye(D, dtype=F64)
    if grad == "implicit":  # (I - A)^-T w, and its outer product with z*
        adj = torch.linalg.solve((eye - A).T, w.T).T
        expected_x, expected_a = adj, adj.T @ z_star
    elif grad == "jfb":  # one step from the constant z*: df/dx = I, df/dA = z*
        expected_x, expected_a = w, w.T @ z_star
    else:  # k steps z <- M z + lam x, M = (1 - lam) I + lam A, from the constant z*
        M = (1 - damping) * eye + damping * A
        expected_x = torch.zeros_like(w)
        expected_a = torch.zeros_like(A)
        zs = [z_star]
        for _ in range(steps - 1):
            zs.append(zs[-1] @ M.T + damping * x)
        for i in range(steps):  # step i (from zs[i]) is followed by steps - 1 - i steps
            back = w @ torch.linalg.matrix_power(M, steps - 1 - i)
            expected_x = expected_x + damping * back
            expected_a = expected_a + damping * back.T @ zs[i]
    torch.testing.assert_close(g_x, expected_x, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(_weight(g_ps), expected_a, rtol=1e-9, atol=1e-10)


def test_vmap_ensemble_and_per_sample_gradients_equal_loops() -> None:
    deq = DEQ(_tanh_map(), solver="broyden", max_iter=60, atol=1e-11, rtol=0.0)
    st = lux.init_state(0, deq)
    members = [_setup(deq, key=k)[0] for k in range(3)]
    x = _x()

    def loss(ps: Any, x: torch.Tensor) -> Any:
        return deq(x, ps, st)[0].square().sum()

    grad = torch.func.grad(loss)
    vmapped = torch.func.vmap(grad, in_dims=(0, None))(lux.tree.stack(members), x)
    assert _max_diff(vmapped, lux.tree.stack([grad(p, x) for p in members])) < 1e-12
    ps = members[0]
    per_sample = torch.func.vmap(lambda xi: grad(ps, xi[None]))(x)
    loop = lux.tree.stack([grad(ps, x[i : i + 1]) for i in range(len(x))])
    assert _max_diff(per_sample, loop) < 1e-12
    _, stats = torch.func.vmap(lambda p: deq(x, p, st))(lux.tree.stack(members))
    assert stats["stats"]["iterations"].shape == (3,)


# ------------------------------------------------------------------------- state


def test_nonconvergence_is_reported_warned_or_raised() -> None:
    x = _x()
    for policy in ("ignore", "warn", "raise"):
        deq = DEQ(_tanh_map(), solver="fixed_point", max_iter=3, atol=1e-12, rtol=0.0,
                  on_nonconvergence=policy)  # fmt: skip
        ps, st = _setup(deq)
        if policy == "raise":
            with pytest.raises(RuntimeError, match=r"DEQ\(.*did not converge.*residual"):
                deq(x, ps, st)
            stacked = lux.tree.stack([ps, ps])
            with pytest.raises(RuntimeError, match="impossible under vmap"):
                torch.func.vmap(lambda p, deq=deq, st=st: deq(x, p, st)[0])(stacked)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, new_st = deq(x, ps, st)
        assert not bool(new_st["stats"]["converged"])
        assert int(new_st["stats"]["iterations"]) == 3
        assert float(new_st["stats"]["residual"]) > 1e-6
        messages = [str(c.message) for c in caught if c.category is RuntimeWarning]
        assert bool(messages) == (policy == "warn"), messages
        assert all("within 3 iterations: largest residual" in m for m in messages)


def test_backward_nonconvergence_raises() -> None:
    deq = DEQ(_tanh_map(), max_iter=100, atol=1e-12, rtol=0.0, backward_max_iter=2,
              on_nonconvergence="raise")  # fmt: skip
    ps, st = _setup(deq)
    with pytest.raises(RuntimeError, match=r"backward \(adjoint\) solve did not converge"):
        torch.func.grad(lambda p: deq(_x(), p, st)[0].sum())(ps)


def test_jacobian_regularization_is_hutchinson_of_the_frobenius_norm() -> None:
    A, x, _, z_star = _linear_case()
    deq = DEQ(_linear_map(), max_iter=100, atol=1e-12, rtol=0.0, regularize="jacobian")
    ps, st = lux.setup(0, deq, dtype=F64)
    ps["model"]["layer_1"]["layer_1"]["weight"] = A
    estimates = []
    for _ in range(400):
        _, st = deq((x, {"z0": z_star}), ps, st)  # starts at the fixed point: fast
        estimates.append(float(st["regularization"]["jacobian"]))
    # E[sum_b ||eps_b^T A||^2] / (B D) = ||A||_F^2 / D; the standard error here is ~3%
    expected = float(A.square().sum()) / D
    assert abs(sum(estimates) / len(estimates) - expected) < 0.1 * expected
    assert len(set(estimates)) == len(estimates)  # the key advances
    g = torch.func.grad(lambda p: deq(x, p, st)[1]["regularization"]["jacobian"])(ps)
    assert float(_weight(g).abs().max()) > 0  # differentiable with respect to ps


def test_warm_start_and_initial_guess() -> None:
    x = _x()
    deq = DEQ(_tanh_map(), max_iter=100, atol=1e-11, rtol=0.0)
    ps, st = _setup(deq)
    z, st1 = deq(x, ps, st)
    _, st2 = deq((x, {"z0": z}), ps, st)
    assert int(st2["stats"]["iterations"]) == 1 < int(st1["stats"]["iterations"])
    skip = DEQ(_tanh_map(), max_iter=100, atol=1e-11, rtol=0.0, warm_start=lux.Linear(D, D))
    ps_s, st_s = _setup(skip)
    ps_s["model"] = ps["model"]
    z_s, st_s = skip(x, ps_s, st_s)
    torch.testing.assert_close(z_s, z, rtol=0, atol=1e-10)
    z0 = lux.Linear(D, D)(x, ps_s["warm_start"], st_s["warm_start"])[0]
    torch.testing.assert_close(st_s["regularization"]["warm_start"], (z0 - z).square().mean())
    with pytest.raises(ValueError, match="unknown call option 't'"):
        deq((x, {"t": z}), ps, st)
    with pytest.raises(TypeError, match="call option 'z0' must be a floating-point Tensor"):
        deq((x, {"z0": [0.0]}), ps, st)
    product = lux.Parallel(torch.mul, lux.NoOpLayer(), lux.NoOpLayer())  # (x1, x2) -> x1 * x2
    cell = lux.Parallel(torch.add, lux.Linear(D, D), product)
    two_inputs = DEQ(cell, max_iter=100, atol=1e-11, rtol=0.0)
    ps2, st2 = _setup(two_inputs)
    with pytest.raises(TypeError, match=r"give the initial z as the call option \{'z0': z0\}"):
        two_inputs((x, x), ps2, st2)
    z2, _ = two_inputs((x, x, {"z0": torch.zeros_like(x)}), ps2, st2)  # z = A z + b + x * x
    A, b = ps2["model"]["layer_1"]["weight"], ps2["model"]["layer_1"]["bias"]
    expected = torch.linalg.solve(torch.eye(D, dtype=F64) - A, (x * x + b).T).T
    torch.testing.assert_close(z2, expected, rtol=0, atol=1e-9)


def test_validation_names_the_layer() -> None:
    with pytest.raises(ValueError, match="solver must be one of"):
        DEQ(_tanh_map(), solver="newton")
    with pytest.raises(ValueError, match="grad must be one of"):
        DEQ(_tanh_map(), grad="exact")
    with pytest.raises(ValueError, match="unknown option"):
        DEQ(_tanh_map(), solver="broyden", solver_options={"beta": 0.5})
    with pytest.raises(ValueError, match="on_nonconvergence must be one of"):
        DEQ(_tanh_map(), on_nonconvergence="panic")
    with pytest.raises(ValueError, match="atol and rtol cannot both be 0"):
        DEQ(_tanh_map(), atol=0.0, rtol=0.0)
    deq = DEQ(lux.Linear(D, 3), max_iter=3)
    with pytest.raises(ValueError, match=r"DEQ\(.*a DEQ's model must map \(z, x\)"):
        wrong = DEQ(lux.Chain(lux.Parallel(torch.add, lux.Linear(D, 3), lux.Linear(D, 3))))
        wrong(_x(), *lux.setup(0, wrong, dtype=F64))
    with pytest.raises(TypeError, match="expected the injected input x"):
        deq("x", *lux.setup(0, deq))


# ------------------------------------------------------------------------- harness


@pytest.mark.parametrize("grad", ["implicit", "phantom"])
def test_check_layer(grad: str) -> None:
    deq = DEQ(_tanh_map(3), max_iter=60, atol=1e-13, rtol=0.0, grad=grad)
    ps, st = _setup(deq)
    # phantom gradients approximate the true ones: finite differences check implicit only
    exact = grad == "implicit"
    # implicit gradients: a custom autograd.Function with no jvp rule (see the DEQ docstring)
    jvp = "implicit gradients have no forward-mode rule" if exact else True
    report = check_layer(deq, _x(2, 3), ps=ps, st=st, compile=False, gradcheck=exact, jvp=jvp)
    for check in ("structure", "forward", "purity", "determinism", "vmap", "vmap_inputs"):
        assert report[check] == "passed", report
    assert report["gradcheck"] == ("passed" if exact else "skipped: disabled")
    assert report["jvp"] == (f"skipped: {jvp}" if exact else "passed")


@pytest.mark.slow
def test_check_layer_compile_and_eager_equals_compiled() -> None:
    deq = DEQ(_tanh_map(3), solver="anderson", max_iter=12, atol=1e-6, rtol=0.0,
              regularize="jacobian")  # fmt: skip
    ps, st = _setup(deq)
    report = check_layer(deq, _x(2, 3), ps=ps, st=st, gradcheck=False, vmap=False,
                         jvp=False, compile_backend="aot_eager")  # fmt: skip
    assert report["compile"] == "passed", report
    x = _x(2, 3)

    def loss(ps: Any) -> Any:
        z, new_st = deq(x, ps, st)
        return z.square().sum() + new_st["regularization"]["jacobian"]

    eager = torch.func.grad(loss)(ps)
    compiled = torch.compile(torch.func.grad(loss), fullgraph=True, backend="aot_eager")(ps)
    assert _max_diff(eager, compiled) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("ad", ["func", "autograd"])
def test_train_step_paths_agree_eager_and_compiled(ad: str) -> None:
    model = lux.Chain(DEQ(_tanh_map(), max_iter=15, atol=1e-5, rtol=0.0), lux.Linear(D, 1))
    x = lux.random.normal(lux.random.key(1), (8, D))
    data = (x, x.sum(1, keepdim=True))
    ps, st = lux.setup(0, model)
    reference = lux.TrainState(model, ps, st, lux.optim.sgd(0.1))
    reference, ref_loss, _ = lux.train_step(lux.losses.MSELoss(), data, reference, ad="autograd")
    for compile in (False, True):
        ts = lux.TrainState(model, ps, st, lux.optim.sgd(0.1))
        ts, loss, _ = lux.train_step(lux.losses.MSELoss(), data, ts, ad=ad, compile=compile)
        torch.testing.assert_close(loss, ref_loss)
        assert _max_diff(ts.params, reference.params) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_iter": 0}, "max_iter must be an int >= 1"),
        ({"grad_steps": 2.5}, "grad_steps must be an int >= 1"),
        ({"backward_max_iter": -1}, "backward_max_iter must be an int >= 1"),
        ({"atol": -1.0}, "atol must be a float >= 0"),
        ({"backward_rtol": "tight"}, "backward_rtol must be a float >= 0"),
        ({"damping": 0.0}, r"damping must be in \(0, 1\]"),
        ({"regularize": "kinetic"}, "regularize must name some of"),
        ({"backward_solver": "newton"}, "solver must be one of"),
        ({"solver": "anderson", "solver_options": {"m": 0}}, "'m' must be an int >= 1"),
        ({"solver": "anderson", "solver_options": {"beta": 1.5}}, r"'beta' must be in \(0, 1\]"),
        ({"solver": "anderson", "solver_options": {"lam": -1.0}}, "'lam' must be >= 0"),
        ({"solver": "fixed_point", "solver_options": {"damping": "x"}}, "must be a number"),
    ],
)
def test_invalid_configuration_raises(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        DEQ(_tanh_map(), **kwargs)
