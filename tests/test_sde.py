"""Tests for lux_torch.sciml.sde: parity with torchsde + nn.Module on the same Brownian path,
gradients (backprop and adjoint), keys, errors, transforms, the conformance harness."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import pytest
import torch
import torchsde
from torch import nn

import lux_torch as lux
from lux_torch.sciml._common import import_extra
from lux_torch.sciml.sde import NeuralSDE
from lux_torch.testing import check_layer

F64 = torch.float64
T = (0.0, 0.3, 0.7, 1.0)
M = 3  # Brownian channels of general noise


def _drift() -> lux.Chain:
    return lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Linear(8, 2))


def _diffusion(noise_type: str) -> lux.Layer:
    if noise_type == "diagonal":  # elementwise: g_i depends on y_i only (see the docstring)
        return lux.Scale(2, activation=torch.sigmoid)
    if noise_type == "additive":  # g does not depend on y: its bias, reshaped
        return lux.Chain(_zeros, lux.Linear(2, 2 * M), lux.Reshape((2, M)))
    m = M if noise_type == "general" else 1
    return lux.Chain(lux.Linear(2, 2 * m, activation=torch.tanh), lux.Reshape((2, m)))


def _zeros(y: torch.Tensor) -> torch.Tensor:
    return y * 0.0


class _Zeros(nn.Module):
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return _zeros(y)


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, dtype=F64))
        self.bias = nn.Parameter(torch.zeros(2, dtype=F64))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.weight * y + self.bias)


class _TorchSDE(nn.Module):
    """The same SDE as torchsde's usual nn.Module, its parameter names those of ``ps``."""

    def __init__(self, sde: NeuralSDE, ps: dict[str, Any]) -> None:
        super().__init__()
        self.sde_type, self.noise_type = sde.sde_type, sde.noise_type
        self.drift = nn.Sequential(
            collections.OrderedDict(
                layer_1=nn.Linear(2, 8), tanh=nn.Tanh(), layer_2=nn.Linear(8, 2)
            )
        ).to(F64)
        if sde.noise_type == "diagonal":
            self.diffusion: nn.Module = _Scale()
        elif sde.noise_type == "additive":
            self.diffusion = nn.Sequential(
                collections.OrderedDict(
                    layer_1=_Zeros(), layer_2=nn.Linear(2, 2 * M), layer_3=nn.Unflatten(1, (2, M))
                )
            ).to(F64)
        else:
            m = sde.brownian_size or 1
            self.diffusion = nn.Sequential(
                collections.OrderedDict(
                    layer_1=nn.Linear(2, 2 * m), tanh=nn.Tanh(), layer_2=nn.Unflatten(1, (2, m))
                )
            ).to(F64)
        flat = dict(zip(lux.tree.paths(ps), lux.tree.leaves(ps), strict=True))
        self.load_state_dict({k: v.detach() for k, v in flat.items()}, strict=True)
        self.nfe = [0, 0]

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe[0] += 1
        out: torch.Tensor = self.drift(y)
        return out

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe[1] += 1
        out: torch.Tensor = self.diffusion(y)
        return out


def _sde(noise_type: str = "diagonal", **kwargs: Any) -> NeuralSDE:
    size = M if noise_type in ("general", "additive") else None
    kwargs.setdefault("dt", 0.05)
    return NeuralSDE(
        _drift(), _diffusion(noise_type), T, noise_type=noise_type, brownian_size=size, **kwargs
    )


def _y0(n: int = 4) -> torch.Tensor:
    return lux.random.normal(lux.random.key(1), (n, 2), dtype=F64)


def _requiring_grad(tree: Any) -> Any:
    return lux.tree.map(lambda p: p.detach().clone().requires_grad_(True), tree)


def _reference(sde: NeuralSDE, ps: Any, st: Any, y0: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """torchsde itself on the nn.Module, with the Brownian path ``sde`` would use."""
    module = _TorchSDE(sde, ps)
    kwargs: dict[str, Any] = {
        "bm": sde.brownian_motion(y0, st),
        "method": sde.method,
        "dt": sde.dt,
        "adaptive": sde.adaptive,
        "options": sde.options,
    }
    t = torch.tensor(T, dtype=F64)
    if sde.adjoint:
        ys = torchsde.sdeint_adjoint(module, y0, t, adjoint_method=sde.adjoint_method, **kwargs)
    else:
        ys = torchsde.sdeint(module, y0, t, **kwargs)
    return ys, module


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
@pytest.mark.parametrize("noise_type", ["diagonal", "general"])
@pytest.mark.parametrize("sde_type", ["ito", "stratonovich"])
def test_values_and_gradients_equal_torchsde_with_nn_module(
    sde_type: str, noise_type: str, adjoint: bool
) -> None:
    sde = _sde(noise_type, sde_type=sde_type, adjoint=adjoint)
    ps, st = lux.setup(0, sde, dtype=F64)
    ps = _requiring_grad(ps)
    y0 = _y0().requires_grad_(True)
    ys, new_st = sde(y0, ps, st)

    y0_ref = y0.detach().clone().requires_grad_(True)
    ref, module = _reference(sde, ps, st, y0_ref)
    assert ys.shape == (len(T), *y0.shape)
    torch.testing.assert_close(ys, ref, rtol=1e-13, atol=1e-13)
    nfe = (int(new_st["stats"]["nfe_drift"]), int(new_st["stats"]["nfe_diffusion"]))
    assert nfe == tuple(module.nfe)  # the same solve, step for step

    w = lux.random.normal(lux.random.key(2), ys.shape, dtype=F64)
    grads = torch.autograd.grad((ys * w).sum(), [y0, *lux.tree.leaves(ps)])
    ref_grads = torch.autograd.grad((ref * w).sum(), [y0_ref, *module.parameters()])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    if adjoint:
        assert int(new_st["stats"]["nfe_adjoint"]) > 0  # filled in by the backward pass


@pytest.mark.parametrize(
    ("noise_type", "method"), [("scalar", "srk"), ("additive", "srk"), ("scalar", "milstein")]
)
def test_scalar_and_additive_noise_equal_torchsde(noise_type: str, method: str) -> None:
    sde = _sde(noise_type, method=method)
    ps, st = lux.setup(0, sde, dtype=F64)
    y0 = _y0()
    ys, _ = sde(y0, ps, st)
    ref, _ = _reference(sde, ps, st, y0)
    torch.testing.assert_close(ys, ref, rtol=1e-13, atol=1e-13)


def test_adaptive_solve_and_options_equal_torchsde() -> None:
    sde = _sde(sde_type="stratonovich", method="heun", adaptive=True, dt=0.2)
    ps, st = lux.setup(0, sde, dtype=F64)
    y0 = _y0()
    ys, _ = sde(y0, ps, st)
    torch.testing.assert_close(ys, _reference(sde, ps, st, y0)[0], rtol=1e-13, atol=1e-13)
    # Milstein's option; log-ODE needs Foster's Lévy area, which the Brownian motion provides
    for other in (
        _sde(method="milstein", options={"grad_free": True}),
        _sde(sde_type="stratonovich", method="log_ode"),
    ):
        ys, _ = other(y0, ps, st)
        torch.testing.assert_close(ys, _reference(other, ps, st, y0)[0], rtol=1e-13, atol=1e-13)


def test_time_dependent_drift_and_diffusion_equal_torchsde() -> None:
    class Wave(lux.Layer):
        """``amplitude * sin(t + phase) * y`` from ``(t, y)``."""

        phase: float

        def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"amplitude": torch.full((), 0.5)}

        def __call__(self, x: Any, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
            return ps["amplitude"] * torch.sin(x[0] + self.phase) * x[1], st

    sde = NeuralSDE(Wave(0.0), Wave(1.0), T, time_dependent=True, method="euler", dt=0.05)
    ps, st = lux.setup(0, sde, dtype=F64)
    y0 = _y0()
    ys, _ = sde(y0, ps, st)
    functions = type(
        "Functions",
        (),
        {
            "sde_type": "ito",
            "noise_type": "diagonal",
            "f": lambda self, t, y: 0.5 * torch.sin(t) * y,
            "g": lambda self, t, y: 0.5 * torch.sin(t + 1.0) * y,
        },
    )()
    bm = sde.brownian_motion(y0, st)
    ref = torchsde.sdeint(functions, y0, torch.tensor(T, dtype=F64), bm=bm, dt=0.05, method="euler")
    torch.testing.assert_close(ys, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    ("sde_type", "rtol"), [("ito", 5e-3), ("stratonovich", 1e-3)], ids=["ito", "stratonovich"]
)
def test_adjoint_gradients_converge_to_backprop(sde_type: str, rtol: float) -> None:
    # the adjoint solves a backward SDE on the same path: its error shrinks with dt
    # (measured relative errors at dt=0.01: Itô 2.3e-3, Stratonovich 1.2e-4)
    backprop = _sde(sde_type=sde_type, dt=0.01)
    adjoint = dataclasses.replace(backprop, adjoint=True)
    ps, st = lux.setup(0, backprop, dtype=F64)
    ps = _requiring_grad(ps)
    y0 = _y0()
    ys_b, _ = backprop(y0, ps, st)
    ys_a, _ = adjoint(y0, ps, st)
    assert torch.equal(ys_a, ys_b)  # the same path and the same forward solve
    g_b = torch.autograd.grad(ys_b.sum(), lux.tree.leaves(ps))
    g_a = torch.autograd.grad(ys_a.sum(), lux.tree.leaves(ps))
    scale = max(float(g.abs().max()) for g in g_b)
    for a, b in zip(g_a, g_b, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=rtol * scale)


# --------------------------------------------------------------------------- keys and paths


def test_same_key_same_path_different_key_different_path_and_key_advances() -> None:
    sde = _sde()
    ps, st = lux.setup(0, sde, dtype=F64)
    y0 = _y0()
    ys, new_st = sde(y0, ps, st)
    again, again_st = sde(y0, ps, st)
    assert torch.equal(ys, again) and torch.equal(new_st["key"], again_st["key"])
    assert torch.equal(new_st["key"], lux.random.split(st["key"])[0])  # advanced, as Dropout
    later, _ = sde(y0, ps, new_st)  # the next call draws a fresh path
    assert not torch.allclose(later[1:], ys[1:])
    other = dict(st, key=lux.random.key(7))
    assert not torch.allclose(sde(y0, ps, other)[0][1:], ys[1:])
    # the helper's path is the one the call uses: its increments differ between keys
    w_now = sde.brownian_motion(y0, st)(T[0], T[-1])
    assert torch.equal(w_now, sde.brownian_motion(y0, st)(T[0], T[-1]))
    assert not torch.equal(w_now, sde.brownian_motion(y0, new_st)(T[0], T[-1]))


def test_time_option_overrides_configured_times() -> None:
    sde = _sde()
    ps, st = lux.setup(0, sde, dtype=F64)
    y0 = _y0()
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float32)  # converted to y0's dtype
    ys, _ = sde((y0, {"t": t}), ps, st)
    expected, _ = dataclasses.replace(sde, t=(0.0, 0.5, 1.5))(y0, ps, st)
    assert ys.shape == (3, 4, 2) and torch.equal(ys, expected)
    free = dataclasses.replace(sde, t=None)
    assert torch.equal(free((y0, {"t": t}), ps, st)[0], ys)


def test_states_are_threaded_and_stats_count_evaluations() -> None:
    class Counted(lux.Layer):
        def init_state(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"calls": torch.zeros((), dtype=torch.int64)}

        def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
            return -y, {"calls": st["calls"] + 1}

    sde = NeuralSDE(Counted(), lux.Scale(2), T, method="euler", dt=0.1)
    ps, st = lux.setup(0, sde, dtype=F64)
    _, new_st = sde(_y0(), ps, st)
    assert int(new_st["drift"]["calls"]) == int(new_st["stats"]["nfe_drift"]) > 10


def test_state_tensors_requiring_grad_get_adjoint_gradients() -> None:
    class Scaled(lux.Layer):
        """``-c * y`` with ``c`` a state tensor (``in_ps``: a parameter)."""

        in_ps: bool = False

        def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"c": torch.ones(())} if self.in_ps else {}

        def init_state(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
            return {} if self.in_ps else {"c": torch.ones(())}

        def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
            return -(ps if self.in_ps else st)["c"] * y, st

    grads = {}
    for in_ps, adjoint in ((False, False), (False, True), (True, True)):
        sde = NeuralSDE(
            Scaled(in_ps),
            lux.Scale(2, activation=torch.sigmoid),
            T,
            sde_type="stratonovich",
            dt=0.01,
            adjoint=adjoint,
        )
        ps, st = lux.setup(0, sde, dtype=F64)
        ps = _requiring_grad(ps)
        c = torch.tensor(0.7, dtype=F64, requires_grad=True)
        tree = ps if in_ps else st
        tree["drift"] = {"c": c}
        (grads[in_ps, adjoint],) = torch.autograd.grad(sde(_y0(), ps, st)[0].sum(), c)
    # a state tensor gets the adjoint gradient a parameter gets (not None, not dropped) ...
    torch.testing.assert_close(grads[False, True], grads[True, True], rtol=1e-12, atol=0)
    # ... which approximates backprop's (measured relative error 1.6e-3 at dt=0.01)
    torch.testing.assert_close(grads[False, True], grads[False, False], rtol=5e-3, atol=0)


def test_adjoint_refuses_parameters_of_which_only_some_require_grad() -> None:
    sde = _sde(adjoint=True)
    ps, st = lux.setup(0, sde, dtype=F64)
    ps = _requiring_grad(ps)
    ps["diffusion"]["bias"] = ps["diffusion"]["bias"].detach()
    with pytest.raises(ValueError, match=r"diffusion\.bias do not"):
        sde(_y0(), ps, st)
    with torch.no_grad():  # inference: nothing is differentiated
        sde(_y0(), ps, st)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sde_type": "ito2"}, "sde_type must be one of"),
        ({"noise_type": "full"}, "noise_type must be one of"),
        ({"noise_type": "general"}, "needs brownian_size"),
        ({"brownian_size": 2}, "brownian_size only applies"),
        ({"noise_type": "general", "brownian_size": 0}, "brownian_size must be >= 1"),
        ({"method": "rk4"}, "method must be one of torchsde's solvers"),
        ({"method": "adjoint_reversible_heun"}, "method must be one of"),
        ({"method": "srk", "sde_type": "stratonovich"}, "solves ito SDEs"),
        ({"method": "milstein", "noise_type": "general", "brownian_size": 2}, "not a ito SDE"),
        ({"adjoint_method": "euler"}, "only apply with adjoint=True"),
        ({"adjoint_rtol": 1e-3}, "only apply with adjoint=True"),
        (
            {
                "adjoint": True,
                "noise_type": "additive",
                "brownian_size": 2,
                "adjoint_method": "srk",
            },
            "adjoint SDE of additive noise has general noise",
        ),
        ({"dt": 0.0}, "dt must be a finite float > 0"),
        ({"rtol": -1.0}, "rtol must be a finite float >= 0"),
        ({"adaptive": 1}, "adaptive must be a bool"),
        ({"adjoint": True, "adjoint_adaptive": "yes"}, "adjoint_adaptive must be a bool"),
        ({"options": {"grad_free": torch.tensor(1.0)}}, "layers hold no tensors"),
        ({"t": (0.0, 1.0, 0.5)}, "strictly increasing"),
        ({"t": (0.0,)}, "at least 2"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], match: str) -> None:
    t = kwargs.pop("t", T)
    with pytest.raises((ValueError, TypeError), match=match):
        NeuralSDE(_drift(), lux.Scale(2), t, **kwargs)


def test_bad_inputs_are_refused() -> None:
    sde = _sde()
    ps, st = lux.setup(0, sde, dtype=F64)
    with pytest.raises(
        ValueError, match=r"y0 must be a floating-point tensor of shape \(batch, d\)"
    ):
        sde(torch.ones(2, dtype=F64), ps, st)
    with pytest.raises(ValueError, match="y0 must be a floating-point"):
        sde(torch.ones(2, 2, dtype=torch.int64), ps, st)
    with pytest.raises(ValueError, match="unknown call option 'ts'"):
        sde((_y0(), {"ts": torch.tensor(T)}), ps, st)
    with pytest.raises(ValueError, match="strictly increasing"):
        sde((_y0(), {"t": torch.tensor([0.0, 1.0, 1.0])}), ps, st)
    with pytest.raises(TypeError, match="the call option 't' must be a 1-D tensor"):
        sde((_y0(), {"t": [1.0, 0.0]}), ps, st)
    t = torch.tensor(T, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="the times t require grad"):
        sde((_y0(), {"t": t}), ps, st)
    with pytest.raises(ValueError, match="no output times"):
        dataclasses.replace(sde, t=None)(_y0(), ps, st)


class _Const(lux.Layer):
    """Returns zeros of a fixed trailing shape (a mis-shaped drift or diffusion)."""

    shape: tuple[int, ...]

    def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        return y.new_zeros((y.shape[0], *self.shape)), st


@pytest.mark.parametrize(
    ("noise_type", "drift", "diffusion", "match"),
    [
        ("diagonal", (3,), (2,), r"drift _Const.* returned shape \(4, 3\).*\(4, 2\)"),
        ("diagonal", (2,), (2, 1), r"diffusion .* returned shape \(4, 2, 1\).*diagonal noise"),
        ("general", (2,), (2,), r"diffusion .* returned shape \(4, 2\).*\(4, 2, 3\)"),
        ("general", (2,), (2, 2), r"returned shape \(4, 2, 2\).*brownian_size\) for general"),
        ("scalar", (2,), (2, 3), r"returned shape \(4, 2, 3\).*\(4, 2, 1\).*scalar noise"),
    ],
)
def test_misshaped_drift_or_diffusion_is_refused(
    noise_type: str, drift: tuple[int, ...], diffusion: tuple[int, ...], match: str
) -> None:
    size = M if noise_type == "general" else None
    sde = NeuralSDE(
        _Const(drift),
        _Const(diffusion),
        T,
        noise_type=noise_type,
        brownian_size=size,
        method="euler",
    )
    ps, st = lux.setup(0, sde, dtype=F64)
    with pytest.raises(ValueError, match=match):
        sde(_y0(), ps, st)


# --------------------------------------------------------------------------- transforms


class _CheckReference:
    """check_layer's callable reference: torchsde on the nn.Module's functions fed our
    tensors (``torch.func.functional_call``), on the path of our state's key."""

    def __init__(self, sde: NeuralSDE, ps: Any) -> None:
        self.sde, self.module = sde, _TorchSDE(sde, ps)

    def __call__(self, tensors: dict[str, torch.Tensor], y0: torch.Tensor) -> torch.Tensor:
        sde, module = self.sde, self.module
        nfe = [0, 0]

        def part(which: str, y: torch.Tensor) -> torch.Tensor:
            nfe[which == "diffusion"] += 1
            own = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(which + ".")}
            out: torch.Tensor = torch.func.functional_call(
                getattr(module, which), own, (y,), strict=True
            )
            return out

        functions = type(
            "Functions",
            (),
            {
                "sde_type": sde.sde_type,
                "noise_type": sde.noise_type,
                "f": lambda self, t, y: part("drift", y),
                "g": lambda self, t, y: part("diffusion", y),
            },
        )()
        bm = sde.brownian_motion(y0, {"key": tensors["key"]})
        ys = torchsde.sdeint(functions, y0, torch.tensor(T, dtype=y0.dtype), bm=bm, dt=sde.dt)
        tensors["stats.nfe_drift"].fill_(nfe[0])  # as a module updates its buffers
        tensors["stats.nfe_diffusion"].fill_(nfe[1])
        out: torch.Tensor = ys
        return out


@pytest.mark.parametrize("noise_type", ["diagonal", "general"])
def test_check_layer(noise_type: str) -> None:
    # compile and vmap cannot pass (see the three tests below), nor can the device check:
    # torchsde draws the path with a generator of y0's device, so CUDA's path is another
    # one. Parity needs the state's key in the reference, so the layer is checked as not
    # stochastic (determinism then compares two calls; the key's advance is tested above)
    sde = _sde(noise_type, dt=0.1)
    ps, st = lux.setup(0, sde, dtype=F64)
    report = check_layer(
        sde,
        _y0(3),
        ps=ps,
        st=st,
        reference=_CheckReference(sde, ps),
        compile=False,
        vmap=False,
        stochastic=False,
        cuda=False,
    )
    for check in ("structure", "counts", "repr", "shapes", "forward", "purity"):
        assert report[check] == "passed", report
    for check in ("determinism", "parity", "gradcheck"):
        assert report[check] == "passed", report


def test_check_layer_stochastic_determinism_sees_the_key_advance() -> None:
    sde = _sde(dt=0.1)
    ps, st = lux.setup(0, sde, dtype=F64)
    report = check_layer(
        sde, _y0(3), ps=ps, st=st, gradcheck=False, compile=False, vmap=False, cuda=False
    )
    assert report["determinism"] == "passed"
    assert report["parity"] == "skipped: no reference"


def test_compile_fullgraph_fails_clearly_and_partial_compile_runs_eagerly() -> None:
    sde = _sde(dt=0.1)
    ps, st = lux.setup(0, sde)
    y0 = _y0().float()
    with pytest.raises(AssertionError, match="Brownian interval is a Python tree"):
        check_layer(sde, y0, ps=ps, st=st, gradcheck=False, vmap=False, compile_backend="eager")

    def step(y: torch.Tensor, p: Any, s: Any) -> tuple[torch.Tensor, Any]:
        ys, s = sde(y, p, s)
        return ys.square().mean(), s

    (loss, new_st), (eager_loss, eager_st) = torch.compile(step)(y0, ps, st), step(y0, ps, st)
    torch.testing.assert_close(loss, eager_loss)
    assert torch.equal(new_st["key"], eager_st["key"])  # the same path, the same next key


def test_missing_solver_library_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"optional extra 'sde': pip install lux-torch\[sde\]"):
        import_extra("lux_torch_no_such_solver", "sde", "lux_torch.sciml.sde")


def test_vmap_needs_randomness_same_and_then_equals_a_loop() -> None:
    sde = _sde(dt=0.1)
    st = lux.init_state(0, sde)
    members = [lux.setup(k, sde)[0] for k in range(3)]
    stacked = lux.tree.stack(members)
    y0 = _y0().float()
    for randomness in ("error", "different"):
        with pytest.raises(RuntimeError, match=rf"vmap\(randomness='{randomness}'\)"):
            torch.func.vmap(lambda p: sde(y0, p, st)[0], randomness=randomness)(stacked)
    got = torch.func.vmap(lambda p: sde(y0, p, st)[0], randomness="same")(stacked)
    torch.testing.assert_close(got, torch.stack([sde(y0, p, st)[0] for p in members]))
    keys = lux.tree.stack([st, lux.init_state(1, sde)])
    with pytest.raises(RuntimeError, match="seeded with a Python integer"):
        torch.func.vmap(lambda s: sde(y0, members[0], s)[0], randomness="same")(keys)


def test_requires_autograd_and_torch_func_grad() -> None:
    assert not _sde().requires_autograd and not _sde(method="euler").requires_autograd
    assert _sde(method="milstein").requires_autograd and _sde(adjoint=True).requires_autograd
    sde = _sde()
    ps, st = lux.setup(0, sde, dtype=F64)
    y0 = _y0()
    grads = torch.func.grad(lambda p: sde(y0, p, st)[0].sum())(ps)
    ps_g = _requiring_grad(ps)
    expected = torch.autograd.grad(sde(y0, ps_g, st)[0].sum(), lux.tree.leaves(ps_g))
    for g, e in zip(lux.tree.leaves(grads), expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)
    for bad in (_sde(method="milstein"), _sde(adjoint=True)):
        with pytest.raises(RuntimeError, match=r"cannot be differentiated with torch\.func"):
            torch.func.grad(lambda p, s=bad: s(y0, p, st)[0].sum())(ps)


def test_train_step_fits_with_autograd_and_torch_func() -> None:
    for sde in (_sde(method="euler"), _sde(method="euler", adjoint=True)):
        ps, st = lux.setup(0, sde, dtype=F64)
        y0 = _y0()

        def loss(model: Any, ps: Any, st: Any, batch: Any) -> tuple[torch.Tensor, Any, Any]:
            ys, st = model(batch, ps, st)
            return (ys[-1] ** 2).mean(), st, {}

        state = lux.TrainState(sde, ps, st, lux.optim.adam(0.05))
        losses = []
        for _ in range(5):
            state, value, _ = lux.train_step(loss, y0, state)
            losses.append(float(value))
        assert losses[-1] < losses[0], losses
        assert not torch.equal(state.states["key"], st["key"])  # the key advanced


def test_diagonal_noise_refuses_a_diffusion_that_mixes_channels() -> None:
    # milstein/srk and the Itô adjoint use only the diagonal of dg/dy: a Linear(d, d)
    # diffusion would converge to another SDE, silently; the call refuses it instead
    drift = lux.Linear(2, 2)
    mixing = lux.Chain(lux.Linear(2, 2), lux.WrappedFunction(torch.sigmoid))
    y0 = torch.ones(3, 2, dtype=torch.float64)
    for method, adjoint in (("milstein", False), ("srk", False), ("euler", True)):
        sde = NeuralSDE(drift, mixing, t=(0.0, 0.5), dt=0.1, method=method, adjoint=adjoint)
        ps, st = lux.setup(0, sde, dtype=torch.float64)
        with pytest.raises(ValueError, match=r"g_i must depend on y_i only.*mixes channels"):
            sde(y0, ps, st)
    plain = NeuralSDE(drift, mixing, t=(0.0, 0.5), dt=0.1, method="euler")
    ps, st = lux.setup(0, plain, dtype=torch.float64)
    ys, _ = plain(y0, ps, st)  # Euler-Maruyama needs no derivative of g: a valid SDE
    assert ys.shape == (2, 3, 2)
    elementwise = NeuralSDE(drift, lux.Scale(2), t=(0.0, 0.5), dt=0.1, method="milstein")
    ps, st = lux.setup(0, elementwise, dtype=torch.float64)
    elementwise(y0, ps, st)
