"""Tests for lux_torch.sciml.cnf: closed forms, Hutchinson, sampling, gradients, errors."""

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
from lux_torch.sciml.cnf import CNF, CNFDynamics, standard_normal_logp
from lux_torch.testing import check_layer

F64 = torch.float64
TIGHT: dict[str, Any] = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12}
RK4: dict[str, Any] = {"method": "rk4", "options": {"step_size": 0.1}}


def _field(hidden: int = 8, dim: int = 2) -> lux.Chain:
    return lux.Chain(lux.Linear(dim, hidden, activation=torch.tanh), lux.Linear(hidden, dim))


def _x(n: int = 5, dim: int = 2, seed: int = 1) -> torch.Tensor:
    return lux.random.normal(lux.random.key(seed), (n, dim), dtype=F64)


def _requiring_grad(ps: Any) -> Any:
    return lux.tree.map(lambda p: p.detach().clone().requires_grad_(True), ps)


def _field_ps(ps: Any) -> Any:
    return ps["ode"]["vector_field"]["field"]


# --------------------------------------------------------------------------- closed forms


def _linear_cnf(a: torch.Tensor, t: tuple[float, float], **kwargs: Any) -> tuple[CNF, Any, Any]:
    d = a.shape[0]
    cnf = CNF(lux.Linear(d, d, bias=False), t, **kwargs)
    ps, st = lux.setup(0, cnf, dtype=F64)
    ps["ode"]["vector_field"]["field"]["weight"] = a.clone()  # f(z) = A z
    return cnf, ps, st


def test_linear_field_log_density_matches_closed_form() -> None:
    a = torch.tensor([[0.3, -0.7, 0.1], [0.5, -0.2, 0.4], [-0.6, 0.2, 0.8]], dtype=F64)
    t0, t1 = 0.5, 1.75
    cnf, ps, st = _linear_cnf(a, (t0, t1), **TIGHT)
    x = _x(6, 3)
    (logp, z0), new_st = cnf(x, ps, st)
    expected_z0 = x @ torch.linalg.matrix_exp(-a * (t1 - t0)).T
    expected = standard_normal_logp(expected_z0) - torch.trace(a) * (t1 - t0)
    torch.testing.assert_close(z0, expected_z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logp, expected, rtol=1e-9, atol=1e-9)
    # the closed form of the base density itself
    gauss = torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64)
    )
    torch.testing.assert_close(standard_normal_logp(z0), gauss.log_prob(z0))
    assert logp.shape == (6,) and z0.shape == (6, 3)
    assert int(new_st["ode"]["stats"]["nfe"]) > 0 and "key" not in new_st


def test_hutchinson_rademacher_is_exact_for_a_diagonal_jacobian() -> None:
    # eps^T A eps = tr(A) for every Rademacher eps when A is diagonal (eps_i**2 == 1)
    a = torch.diag(torch.tensor([0.4, -1.1], dtype=F64))
    cnf, ps, st = _linear_cnf(a, (0.0, 1.0), trace="hutchinson", **TIGHT)
    x = _x(4)
    (logp, _), _ = cnf(x, ps, st)
    expected_z0 = x * torch.exp(-torch.diagonal(a))
    torch.testing.assert_close(logp, standard_normal_logp(expected_z0) - torch.trace(a))
    gaussian, ps_g, st_g = _linear_cnf(a, (0.0, 1.0), trace="hutchinson", probe="gaussian", **TIGHT)
    (logp_g, _), _ = gaussian(x, ps_g, st_g)
    assert not torch.allclose(logp_g, logp)  # a Gaussian probe is not exact here


class ScaledByTime(lux.Layer):
    """``f(t, z) = t * A z`` with ``A = ps["a"]``."""

    dim: int

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": lux.random.normal(key, (self.dim, self.dim))}

    def __call__(self, x: Any, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        t, z = x
        return t * z @ ps["a"].T, st


def test_time_dependent_field_matches_closed_form() -> None:
    t0, t1 = 0.0, 1.5
    cnf = CNF(ScaledByTime(2), (t0, t1), time_dependent=True, **TIGHT)
    ps, st = lux.setup(0, cnf, dtype=F64)
    a = ps["ode"]["vector_field"]["field"]["a"]
    x = _x()
    (logp, z0), _ = cnf(x, ps, st)
    scale = (t1**2 - t0**2) / 2  # the integral of t
    expected_z0 = x @ torch.linalg.matrix_exp(-a * scale).T
    torch.testing.assert_close(z0, expected_z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logp, standard_normal_logp(expected_z0) - torch.trace(a) * scale)


# --------------------------------------------------------------------------- Hutchinson


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_and_keyed(probe: str) -> None:
    exact = CNF(_field(), **RK4)
    ps, st = lux.setup(0, exact, dtype=F64)
    point = _x(1)
    (expected, _), _ = exact(point, ps, st)
    hutch = CNF(_field(), trace="hutchinson", probe=probe, **RK4)
    st_h = lux.init_state(0, hutch)
    # every row gets its own probe: 4000 independent estimates of the same log-density
    (logp, _), new_st = hutch(point.expand(4000, 2), ps, st_h)
    stderr = float(logp.std()) / math.sqrt(logp.numel())
    assert float(logp.std()) > 1e-3  # really stochastic
    assert abs(float(logp.mean() - expected)) < 4 * stderr, (float(logp.mean()), float(expected))
    # same key, same estimate; the key advances, and the next call differs
    (again, _), _ = hutch(point.expand(4000, 2), ps, st_h)
    torch.testing.assert_close(again, logp, rtol=0, atol=0)
    assert not torch.equal(new_st["key"], st_h["key"])
    (other, _), _ = hutch(point.expand(4000, 2), ps, {**st_h, "key": new_st["key"]})
    assert not torch.equal(other, logp)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_sampling_inverts_density_evaluation(trace: str) -> None:
    cnf = CNF(_field(), trace=trace, **TIGHT)
    ps, st = lux.setup(0, cnf, dtype=F64)
    x = _x(6)
    (logp, z0), _ = cnf(x, ps, st)
    (x_back, logp_back), _ = cnf.transform(z0, ps, st)  # same st: same probe
    torch.testing.assert_close(x_back, x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(logp_back, logp, rtol=1e-8, atol=1e-8)
    (samples, logp_s), st_s = cnf.sample(lux.random.key(7), (16, 2), ps, st)
    assert samples.shape == (16, 2) and samples.dtype == F64 and logp_s.shape == (16,)
    z = lux.random.normal(lux.random.key(7), (16, 2), dtype=F64)
    (expected, _), _ = cnf.transform(z, ps, st)
    torch.testing.assert_close(samples, expected, rtol=0, atol=0)
    (z_back_logp, z_back), _ = cnf(samples, ps, st)  # and back to the base points
    torch.testing.assert_close(z_back, z, rtol=1e-8, atol=1e-8)
    if trace == "exact":
        torch.testing.assert_close(z_back_logp, logp_s, rtol=1e-8, atol=1e-8)
    else:
        assert not torch.equal(st_s["key"], st["key"])


# --------------------------------------------------------------------------- gradients


class _TorchODEFunc(nn.Module):
    """The same CNF as an nn.Module for torchdiffeq (FFJORD's style: autograd traces)."""

    def __init__(self, ps: Any, probe: torch.Tensor | None = None) -> None:
        super().__init__()
        hidden = ps["layer_1"]["weight"].shape[0]
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2)).to(F64)
        self.probe = probe
        with torch.no_grad():
            for i, name in ((0, "layer_1"), (2, "layer_2")):
                linear = self.net[i]
                assert isinstance(linear, nn.Linear)
                linear.weight.copy_(ps[name]["weight"])
                linear.bias.copy_(ps[name]["bias"])

    def forward(self, t: torch.Tensor, states: Any) -> tuple[torch.Tensor, torch.Tensor]:
        z = states[0]
        with torch.enable_grad():
            z = z if z.requires_grad else z.detach().requires_grad_(True)
            dz = self.net(z)
            if self.probe is not None:
                (e_jac,) = torch.autograd.grad(dz, z, self.probe, create_graph=True)
                trace = (e_jac * self.probe).sum(-1)
            else:
                trace = sum(
                    torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i]
                    for i in range(z.shape[1])
                )
        return dz, -trace

    def grads(self) -> dict[str, Any]:
        return {
            name: {"weight": self.net[i].weight.grad, "bias": self.net[i].bias.grad}
            for i, name in ((0, "layer_1"), (2, "layer_2"))
        }


def _torchdiffeq_logp(func: _TorchODEFunc, x: torch.Tensor) -> torch.Tensor:
    t = torch.tensor([1.0, 0.0], dtype=F64)
    z_t, logp_t = torchdiffeq.odeint(
        func, (x, x.new_zeros(x.shape[0])), t, method="rk4", options={"step_size": 0.1}
    )
    logp: torch.Tensor = standard_normal_logp(z_t[-1]) - logp_t[-1]
    return logp


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_gradients_match_torchdiffeq_with_nn_module(trace: str) -> None:
    cnf = CNF(_field(), trace=trace, **RK4)
    ps, st = lux.setup(0, cnf, dtype=F64)
    x = _x(7).requires_grad_(True)
    ps = _requiring_grad(ps)
    (logp, _), _ = cnf(x, ps, st)
    loss = -(logp * torch.linspace(0.5, 1.5, 7, dtype=F64)).sum()
    grads = torch.autograd.grad(loss, [x, *lux.tree.leaves(ps)])
    probe = None
    if trace == "hutchinson":  # the probe the CNF draws: Rademacher from split(st["key"])[1]
        signs = lux.random.bernoulli(lux.random.split(st["key"])[1], 0.5, (7, 2))
        probe = torch.where(signs, 1.0, -1.0).to(F64)
    func = _TorchODEFunc(_field_ps(ps), probe)
    x_ref = x.detach().clone().requires_grad_(True)
    logp_ref = _torchdiffeq_logp(func, x_ref)
    torch.testing.assert_close(logp, logp_ref, rtol=1e-12, atol=1e-12)
    (-(logp_ref * torch.linspace(0.5, 1.5, 7, dtype=F64)).sum()).backward()
    torch.testing.assert_close(grads[0], x_ref.grad, rtol=1e-10, atol=1e-12)
    expected = func.grads()
    got = lux.tree.unflatten(lux.tree.flatten(ps)[1], list(grads[1:]))
    for name in ("layer_1", "layer_2"):
        for leaf in ("weight", "bias"):
            torch.testing.assert_close(
                _field_ps(got)[name][leaf], expected[name][leaf], rtol=1e-10, atol=1e-12
            )


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_gradients_match_finite_differences(trace: str) -> None:
    cnf = CNF(_field(4), trace=trace, **RK4)
    ps, st = lux.setup(0, cnf, dtype=F64)
    leaves, spec = lux.tree.flatten(ps)
    x = _x(3)

    def f(x: torch.Tensor, *leaves: torch.Tensor) -> torch.Tensor:
        (logp, z0), _ = cnf(x, lux.tree.unflatten(spec, list(leaves)), st)
        return torch.cat([logp, z0.reshape(-1)])

    inputs = [x.requires_grad_(True), *(p.requires_grad_(True) for p in leaves)]
    assert torch.autograd.gradcheck(f, inputs)


def test_adjoint_matches_backprop() -> None:
    x = _x(5)
    results = []
    for adjoint in (False, True):
        cnf = CNF(_field(), adjoint=adjoint, **TIGHT)
        ps, st = lux.setup(0, cnf, dtype=F64)
        ps = _requiring_grad(ps)
        (logp, _), new_st = cnf(x, ps, st)
        grads = torch.autograd.grad(-logp.mean(), lux.tree.leaves(ps))
        results.append((logp, grads, new_st))
    (logp_bp, grads_bp, _), (logp_adj, grads_adj, st_adj) = results
    torch.testing.assert_close(logp_adj, logp_bp, rtol=0, atol=0)
    for g_adj, g_bp in zip(grads_adj, grads_bp, strict=True):
        torch.testing.assert_close(g_adj, g_bp, rtol=1e-7, atol=1e-9)
    assert int(st_adj["ode"]["stats"]["nfe_adjoint"]) > 0


def test_train_step_lowers_the_negative_log_likelihood() -> None:
    cnf = CNF(_field(16), trace="hutchinson", **RK4)
    ps, st = lux.setup(0, cnf)
    x = lux.random.normal(lux.random.key(3), (64, 2)) * 0.3 + 1.0

    def loss(model: lux.Layer, ps: Any, st: Any, x: Any) -> tuple[torch.Tensor, Any, Any]:
        (logp, _), st = model(x, ps, st)
        return -logp.mean(), st, {}

    ts = lux.TrainState(cnf, ps, st, lux.optim.adam(3e-2))
    _, first, _ = lux.train_step(loss, x, ts)
    for _ in range(15):
        ts, last, _ = lux.train_step(loss, x, ts)
    assert float(last) < float(first) - 0.3, (float(first), float(last))


# --------------------------------------------------------------------------- conformance


class _Reference(nn.Module):
    """torchdiffeq + nn.Module with ``ps``'s dotted names, for check_layer's parity check."""

    def __init__(self) -> None:
        super().__init__()
        field = nn.Sequential(
            collections.OrderedDict(
                layer_1=nn.Linear(2, 8), tanh=nn.Tanh(), layer_2=nn.Linear(8, 2)
            )
        )
        self.ode = nn.Module()
        self.ode.vector_field = nn.Module()
        self.ode.vector_field.field = field

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net: Any = self.ode.vector_field.field  # type: ignore[union-attr]
        ps = {
            n: {"weight": net[i].weight, "bias": net[i].bias}
            for n, i in (("layer_1", 0), ("layer_2", 2))
        }
        func = _TorchODEFunc(ps)
        func.net = net  # the functional_call'd weights themselves, so gradients reach them
        t = torch.tensor([1.0, 0.0], dtype=x.dtype)
        z_t, logp_t = torchdiffeq.odeint(
            func, (x, x.new_zeros(x.shape[0])), t, method="rk4", options={"step_size": 0.1}
        )
        return standard_normal_logp(z_t[-1]) - logp_t[-1], z_t[-1]


def test_check_layer() -> None:
    # compile and vmap cannot work with torchdiffeq (NeuralODE's limits): see the next test
    cnf = CNF(_field(), **RK4)
    ps, st = lux.setup(0, cnf, dtype=F64)
    report = check_layer(
        cnf, _x(3), ps=ps, st=st, reference=_Reference(), compile=False, vmap=False
    )
    for check in (
        "structure",
        "counts",
        "shapes",
        "forward",
        "purity",
        "determinism",
        "parity",
        "gradcheck",
    ):
        assert report[check] == "passed", report
    hutch = CNF(_field(), trace="hutchinson", **RK4)
    ps, st = lux.setup(0, hutch, dtype=F64)
    report = check_layer(hutch, _x(3), ps=ps, st=st, compile=False, vmap=False)
    assert report["determinism"] == report["gradcheck"] == "passed", report


def test_compile_and_vmap_fail_clearly() -> None:
    cnf = CNF(_field(), **RK4)
    ps, st = lux.setup(0, cnf)
    x = lux.random.normal(lux.random.key(1), (4, 2))
    with pytest.raises(AssertionError, match="torchdiffeq's solvers branch in Python on tensor"):
        check_layer(cnf, x, ps=ps, st=st, gradcheck=False, vmap=False, compile_backend="eager")
    (expected, _), _ = cnf(x, ps, st)
    partial = torch.compile(lambda x, p, s: cnf(x, p, s)[0][0] * 2, backend="eager")
    torch.testing.assert_close(partial(x, ps, st), expected * 2)
    with pytest.raises(RuntimeError, match=r"cannot run under torch\.func\.vmap"):
        torch.func.vmap(lambda x: cnf(x, ps, st)[0][0])(x[None].expand(3, 4, 2))


def test_repr_and_attributes() -> None:
    cnf = CNF(_field(), (0.0, 2.0), trace="hutchinson", probe="gaussian", **RK4)
    text = repr(cnf)
    assert "CNF(" in text and "t=0 => 2" in text and "probe='gaussian'" in text
    assert "NeuralODE(" in text and "CNFDynamics(" in text
    assert cnf.t == (0.0, 2.0) and cnf.trace == "hutchinson" and cnf.vector_field == _field()
    assert cnf.ode.t == (2.0, 0.0) and cnf.ode.save_at == "last"
    assert set(lux.init_state(0, cnf)) == {"ode", "key"}
    assert CNF(_field(), **RK4) == CNF(_field(), **RK4)


def test_with_trace_shares_parameters() -> None:
    hutch = CNF(_field(), trace="hutchinson", probe="gaussian", **RK4)
    exact = hutch.with_trace("exact")
    assert exact == CNF(_field(), **RK4) and exact.probe is None and exact.trace == "exact"
    assert hutch.with_trace("hutchinson") == CNF(_field(), trace="hutchinson", **RK4)
    ps, st = lux.setup(0, hutch, dtype=F64)
    (logp, _), new_st = exact(_x(), ps, st)  # the key is ignored
    (expected, _), _ = CNF(_field(), **RK4)(_x(), ps, {"ode": st["ode"]})
    torch.testing.assert_close(logp, expected, rtol=0, atol=0)
    assert "key" not in new_st and "key" in lux.init_state(0, exact.with_trace("hutchinson"))
    with pytest.raises(
        ValueError, match=r"CNF\(t=0 => 1, trace='exact', ...\): probe='gaussian' only"
    ):
        exact.with_trace("exact", "gaussian")
    with pytest.raises(ValueError, match="CNFDynamics: trace must be one of"):
        exact.with_trace("approximate")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trace": "stochastic"}, r"CNF: trace must be one of \('exact', 'hutchinson'\)"),
        ({"probe": "rademacher"}, r"CNF: probe='rademacher' only applies with trace='hutchinson'"),
        ({"trace": "hutchinson", "probe": "uniform"}, r"CNF: probe must be one of"),
        ({"t": (1.0, 0.0)}, r"CNF: t = \(t0, t1\) must be finite with t0 < t1"),
        ({"t": (0.0, math.inf)}, r"CNF: t = \(t0, t1\) must be finite"),
        ({"t": (0.0, 0.5, 1.0)}, r"CNF: t must be a pair of numbers"),
        ({"save_at": "all"}, r"CNF: save_at cannot be given: the CNF sets them itself"),
        ({"regularize": "kinetic"}, r"CNF: regularize cannot be given"),
        ({"method": "nope"}, r"CNF: NeuralODE: method must be one of torchdiffeq's solvers"),
    ],
)
def test_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    t = kwargs.pop("t", (0.0, 1.0))
    with pytest.raises(ValueError, match=match):
        CNF(_field(), t, **kwargs)


def test_input_errors() -> None:
    cnf = CNF(_field(), **RK4)
    ps, st = lux.setup(0, cnf)
    for bad, what in (
        (torch.ones(2), r"a torch.float32 tensor of shape \(2,\)"),
        (torch.ones(2, 2, dtype=torch.int64), "a torch.int64 tensor"),
        ([1.0, 2.0], "list"),
    ):
        with pytest.raises(
            TypeError,
            match=r"CNF\(t=0 => 1.*x must be a floating-point tensor of shape \(batch, d\), got "
            + what,
        ):
            cnf(bad, ps, st)
    with pytest.raises(TypeError, match=r"z0 must be a floating-point tensor"):
        cnf.transform(torch.ones(3), ps, st)
    for shape in ((4,), (4, 0), (4, 2.0), [4, 2]):
        with pytest.raises(ValueError, match=r"sample: shape must be \(n, d\) with positive ints"):
            cnf.sample(lux.random.key(0), shape, ps, st)  # type: ignore[arg-type]


def test_field_with_wrong_output_shape_raises() -> None:
    cnf = CNF(lux.Linear(2, 3), **RK4)
    ps, st = lux.setup(0, cnf)
    with pytest.raises(
        ValueError,
        match=r"CNFDynamics\(.*the field Linear\(2 => 3\) returned \(4, 3\) for z of shape "
        r"\(4, 2\)",
    ):
        cnf(torch.ones(4, 2), ps, st)


def test_dynamics_without_probe_raises() -> None:
    dynamics = CNFDynamics(_field(), "hutchinson")
    ps, st = lux.setup(0, dynamics)
    z = torch.ones(4, 2)
    with pytest.raises(ValueError, match=r"trace='hutchinson' needs st\['probe'\]"):
        dynamics((torch.zeros(()), (z, torch.zeros(4))), ps, st)
    with pytest.raises(ValueError, match="CNFDynamics: trace must be one of"):
        CNFDynamics(_field(), "approx")
    with pytest.raises(TypeError, match="CNFDynamics: time_dependent must be a bool"):
        CNFDynamics(_field(), "exact", 1)  # type: ignore[arg-type]
    # with a probe, the dynamics give FFJORD's estimate
    probe = torch.tensor([[1.0, -1.0]] * 4)
    (_, minus_trace), new_st = dynamics(
        (torch.zeros(()), (z, torch.zeros(4))), ps, {**st, "probe": probe}
    )
    jac = torch.func.jacrev(lambda v: _field()(v, ps["field"], st["field"])[0])(z[0])
    torch.testing.assert_close(minus_trace, -(probe[0] @ jac @ probe[0]).expand(4))
    assert new_st["probe"] is probe


def test_time_call_option() -> None:
    a = torch.tensor([[0.3, -0.7], [0.5, -0.2]], dtype=F64)
    cnf, ps, st = _linear_cnf(a, (0.0, 1.0), **TIGHT)
    x = _x()
    t = torch.tensor([0.25, 2.0], dtype=F64)
    (logp, z0), _ = cnf((x, {"t": t}), ps, st)
    expected_z0 = x @ torch.linalg.matrix_exp(-a * 1.75).T
    torch.testing.assert_close(z0, expected_z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logp, standard_normal_logp(expected_z0) - torch.trace(a) * 1.75)
    (x_back, _), _ = cnf.transform((z0, {"t": t}), ps, st)
    torch.testing.assert_close(x_back, x, rtol=1e-8, atol=1e-8)
    (same, _), _ = cnf((x, {}), ps, st)  # no t: the configured times
    torch.testing.assert_close(same, cnf(x, ps, st)[0][0], rtol=0, atol=0)
    # times are data: gradients reach them (central differences, float64)
    t_req = t.clone().requires_grad_(True)
    (logp_t, _), _ = cnf((x, {"t": t_req}), ps, st)
    (grad_t,) = torch.autograd.grad(logp_t.sum(), t_req)
    eps = 1e-6
    for i in range(2):
        step = torch.zeros(2, dtype=F64)
        step[i] = eps
        up, down = (float(cnf((x, {"t": t + s}), ps, st)[0][0].sum()) for s in (step, -step))
        assert float(grad_t[i]) == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match=r"call option t must be a tensor \(t0, t1\) of shape"):
        cnf((x, {"t": torch.linspace(0, 1, 3)}), ps, st)
    with pytest.raises(ValueError, match=r"t = \(t0, t1\) must be finite with t0 < t1"):
        cnf((x, {"t": t.flip(0)}), ps, st)
    with pytest.raises(
        ValueError, match=r"unknown call option 'mask'; the options dict accepts 't'"
    ):
        cnf((x, {"mask": t}), ps, st)


def test_time_tensor_and_replace() -> None:
    cnf = CNF(_field(), torch.tensor([0.0, 2.0]), **RK4)
    assert cnf.t == (0.0, 2.0)
    longer = dataclasses.replace(cnf.ode, t=(3.0, 0.0))
    assert longer.t == (3.0, 0.0)
