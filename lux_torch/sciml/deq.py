"""Deep equilibrium models: :class:`DEQ`, an implicit layer ``z* = f(z*, x)``.

A :class:`DEQ` (Bai, Kolter & Koltun, "Deep Equilibrium Models", NeurIPS 2019) wraps a
layer ``f`` mapping ``(z, x) -> z`` (input injection) and returns its fixed point
``z* = f(z*, x)``, found by a solver of :mod:`lux_torch.sciml.fixed_point`, instead of
stacking layers::

    import torch, lux_torch as lux
    from lux_torch.sciml.deq import DEQ

    f = lux.Chain(lux.Parallel(torch.add, lux.Linear(16, 16), lux.NoOpLayer()), torch.tanh)
    deq = DEQ(f, solver="anderson", max_iter=30)
    ps, st = lux.setup(0, deq)
    z, st = deq(x, ps, st)           # x: (batch, 16); z: (batch, 16); st["stats"]: the solve

Gradients (``grad=``)
---------------------
The solver is never differentiated (it runs on detached tensors). The output is computed
from ``z*`` by a few differentiable evaluations of ``f``:

- ``"implicit"`` (default): exact gradients by the implicit function theorem. The output
  is ``f(z*, x)``; its backward solves the adjoint fixed point ``g = v + (df/dz)^T g``
  at ``z*`` (``v`` the incoming gradient) with the same kind of solver, and passes ``g``
  to that last evaluation, so ``ps`` and ``x`` receive ``g^T df/d(ps, x)``. This is an
  ``autograd.Function`` with ``setup_context`` and ``generate_vmap_rule``: it works with
  ``torch.autograd``, ``torch.func.grad``/``vjp``/``vmap`` and ``torch.compile``.
- ``"jfb"``: Jacobian-free backpropagation (Fung et al., "JFB: Jacobian-Free
  Backpropagation for Implicit Networks", AAAI 2022): the output is ``f(z*, x)`` with
  ``z*`` treated as a constant, i.e. ``(I - df/dz)^{-1}`` replaced by ``I``.
- ``"phantom"``: the unrolling phantom gradient (Geng et al., "On Training Implicit
  Models", NeurIPS 2021): ``grad_steps`` damped steps ``z <- (1 - damping) z + damping
  f(z, x)`` from the constant ``z*``, backpropagated through.
- ``"unroll"``: backpropagation through ``grad_steps`` plain steps ``z <- f(z, x)`` from
  the constant ``z*`` (the last ``k`` steps of a fixed-point iteration).

All four return ``z*`` up to the solver's tolerance (``f`` applied to it once or a few
times) in the forward pass.

Transforms and compilation
--------------------------
Eagerly, the solver stops once every sample has converged. Under ``torch.func.vmap``
(ensembles of DEQs, per-sample gradients) and ``torch.compile``/``lux.train_step(...,
compile=True)`` the number of iterations cannot depend on tensor values, so the solver
runs ``max_iter`` iterations with the converged samples masked (they stop changing): the
results equal the eager ones, at the cost of the extra iterations. Under ``torch.compile``
the loop is unrolled into the graph (compile time grows with ``max_iter``: tens of seconds
for ``max_iter=20`` on a CPU). Forward-mode AD (``torch.func.jvp``/``jacfwd``) is not
supported with ``grad="implicit"`` (torch refuses the ``autograd.Function``, which has no
``jvp`` rule); the other modes are plain torch operations and support it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import random as lrandom
from .. import tree as ltree
from ..core import Layer
from ..display import short_repr
from ..layers._common import options_problem
from ..layers.containers import as_layer
from .fixed_point import SOLVERS, solve, solver_options, stops_early

__all__ = ["DEQ", "GRADIENTS"]

Params = dict[str, Any]
State = dict[str, Any]

#: The gradient modes of :class:`DEQ` (``grad=``).
GRADIENTS = ("implicit", "jfb", "phantom", "unroll")
_POLICIES = ("warn", "raise", "ignore")
_REGULARIZERS = ("jacobian",)


# --------------------------------------------------------------------------- the problem


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Everything the implicit backward needs besides tensors: how to rebuild ``f`` from the
    flat ``(x, ps, st)`` leaves, the backward solver's settings and where to report."""

    deq: DEQ
    spec: Any  # the tree structure of (x, ps["model"], st["model"])
    counter: torch.Tensor | None  # st["stats"]["backward_iterations"], written eagerly

    def map(self, tensors: tuple[torch.Tensor, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
        x, ps, st = ltree.unflatten(self.spec, tensors)
        model = self.deq.model
        return lambda z: model((z, x), ps, st)[0]


class _ImplicitGrad(torch.autograd.Function):
    """Identity on ``f(z*, x)`` in the forward; in the backward, the incoming gradient
    ``v`` becomes the solution ``g`` of the adjoint fixed point ``g = v + J^T g``,
    ``J = df/dz`` at ``z*`` (the implicit function theorem)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z_out: torch.Tensor, z_star: torch.Tensor, problem: _Problem, *tensors: torch.Tensor
    ) -> torch.Tensor:
        return z_out.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, z_star, problem, *tensors = inputs
        ctx.problem = problem
        ctx.save_for_backward(z_star, *tensors)

    @staticmethod
    def backward(ctx: Any, v: torch.Tensor) -> tuple[Any, ...]:
        z_star, *tensors = ctx.saved_tensors
        problem: _Problem = ctx.problem
        deq = problem.deq
        f = problem.map(tuple(t.detach() for t in tensors))
        with torch.enable_grad():
            vjp = torch.func.vjp(f, z_star.detach())[1]
        result = solve(
            lambda g: v + vjp(g)[0],
            v,
            solver=deq.backward_solver or deq.solver,
            max_iter=deq.backward_max_iter or deq.max_iter,
            atol=deq.atol if deq.backward_atol is None else deq.backward_atol,
            rtol=deq.rtol if deq.backward_rtol is None else deq.backward_rtol,
            options=deq.solver_options if deq.backward_solver in (None, deq.solver) else None,
        )
        if stops_early():  # eagerly: report the cost and any failure
            if problem.counter is not None and not torch._C._functorch.is_functorch_wrapped_tensor(
                problem.counter
            ):
                problem.counter.fill_(int(result.iterations.max()))
            max_iter = deq.backward_max_iter or deq.max_iter
            deq._report(result.converged, result.residual, "backward (adjoint) solve", max_iter)
        return (result.z, None, None, *(None for _ in tensors))


def _differentiated(z: torch.Tensor) -> bool:
    """Whether a gradient of ``z`` may be taken: it requires grad, or a ``torch.func``
    transform is active. (Applying :class:`_ImplicitGrad` only then also avoids a Dynamo
    failure of torch 2.13 on such a Function none of whose inputs requires grad.)"""
    if not torch.is_grad_enabled():
        return False
    if z.requires_grad or torch.compiler.is_compiling():
        return bool(z.requires_grad)
    return torch._C._functorch.peek_interpreter_stack() is not None


# --------------------------------------------------------------------------- the layer


class DEQ(Layer):
    """A deep equilibrium layer: the fixed point ``z* = model((z*, x))`` (Bai et al. 2019).

    Arguments:
        model: the layer ``f``, called as ``model((z, x), ps, st)`` and returning the next
            ``z`` (same shape as ``z``). For exact gradients and the solvers' guarantees
            it should be a contraction in ``z`` (e.g. weight-normalised, or with small
            weights). Every evaluation of one call uses the same ``ps``/``st``; sample
            ``i`` of the output may depend only on sample ``i`` of ``z`` (the first
            dimension is the batch: no batch statistics inside ``f``).
        solver: ``"anderson"`` (default), ``"broyden"`` or ``"fixed_point"``; see
            :mod:`lux_torch.sciml.fixed_point` for the algorithms and their papers.
        max_iter: the most evaluations of ``f`` in the forward solve.
        atol, rtol: sample ``i`` has converged when ``||f(z_i) - z_i||_2 <= atol + rtol *
            ||f(z_i)||_2``.
        solver_options: the solver's options: ``{"damping"}`` (fixed_point), ``{"m",
            "beta", "lam"}`` (anderson), ``{"m"}`` (broyden); see
            :data:`lux_torch.sciml.fixed_point.SOLVERS` for the defaults.
        grad: ``"implicit"`` (exact, default), ``"jfb"``, ``"phantom"`` or ``"unroll"``
            (see the module docstring).
        grad_steps: the number of differentiated steps of ``"phantom"``/``"unroll"``.
        damping: the damping ``lambda`` of ``"phantom"`` (Geng et al.'s), in (0, 1].
        backward_solver, backward_max_iter, backward_atol, backward_rtol: the adjoint
            solve of ``grad="implicit"`` (default: as the forward; a different backward
            solver gets its default options).
        regularize: ``"jacobian"`` adds Bai et al. 2021's ("Stabilizing Equilibrium
            Models by Jacobian Regularization", ICML 2021) Hutchinson estimate
            ``sum((eps^T df/dz)**2) / eps.numel()`` at ``z*``, one standard normal probe
            ``eps`` shaped like ``z`` per call drawn from ``st["key"]``, to
            ``st["regularization"]["jacobian"]`` (differentiable: add it to the loss).
        warm_start: an explicit layer predicting the initial ``z`` from ``x`` (SkipDEQ of
            DeepEquilibriumNetworks.jl). It gets no gradient through ``z*`` (the fixed
            point does not depend on where the solve started); train it with
            ``st["regularization"]["warm_start"]``.
        on_nonconvergence: what a solve that leaves a sample unconverged after
            ``max_iter`` does, besides ``st["stats"]["converged"] == False``: ``"warn"``
            (default: a ``RuntimeWarning`` naming the layer and the residual),
            ``"raise"`` (a ``RuntimeError``) or ``"ignore"``. Under ``vmap`` and
            ``torch.compile`` no value can be read on the host: ``"warn"`` then only
            reports in ``st["stats"]``, and ``"raise"`` refuses to run.

    Input:
        ``x``: the injected input, a tensor or a tuple of tensors (passed to ``model``
        as is); or ``(x, {"z0": z0})`` with an initial guess ``z0`` for this call (e.g.
        the previous batch's solution). Without ``z0`` or ``warm_start``, the solve starts
        from ``zeros_like(x)`` (``x`` a tensor; ``z`` then has ``x``'s shape).

    Returns:
        ``z*``, shaped like the initial ``z``, and the new state.

    **Parameters**
        - ``model``: ``f``'s parameters.
        - ``warm_start`` (with ``warm_start``): its parameters.

    **States**
        - ``model``: ``f``'s state; the one returned by the last differentiable
          evaluation of ``f`` (the solver's evaluations all use the given one).
        - ``warm_start`` (with ``warm_start``): its state.
        - ``stats``: the forward solve of the call (0-dim tensors): ``iterations``
          (int64, evaluations of ``f`` until the last sample converged, at most
          ``max_iter``), ``residual`` (floating, the largest per-sample
          ``||f(z_i) - z_i||``), ``converged`` (bool, every sample met the tolerance),
          ``backward_iterations`` (int64, the adjoint solve's iterations; written in
          place when the backward pass runs eagerly, ``0`` before that, under
          ``vmap``/compiled backward passes, and for other ``grad`` modes).
        - ``regularization`` (with ``regularize`` or ``warm_start``): ``{"jacobian":
          0-dim, "warm_start": 0-dim}``, differentiable; ``warm_start`` is
          ``mean((z0 - z*)**2)`` with ``z*`` constant.
        - ``key`` (with ``regularize="jacobian"``): the key of the Hutchinson probe,
          advanced by every call.

    Example::

        f = lux.Chain(lux.Parallel(torch.add, lux.Linear(8, 8), lux.NoOpLayer()), torch.tanh)
        deq = DEQ(f, solver="broyden", grad="implicit")
        ps, st = lux.setup(0, deq)
        z, st = deq(torch.randn(4, 8), ps, st)   # z.shape == (4, 8)
    """

    model: Layer
    _: dataclasses.KW_ONLY
    solver: str = "anderson"
    max_iter: int = 50
    atol: float = 1e-6
    rtol: float = 1e-4
    solver_options: Mapping[str, Any] | None = None
    grad: str = "implicit"
    grad_steps: int = 5
    damping: float = 0.5
    backward_solver: str | None = None
    backward_max_iter: int | None = None
    backward_atol: float | None = None
    backward_rtol: float | None = None
    regularize: str | tuple[str, ...] = ()
    warm_start: Layer | None = None
    on_nonconvergence: str = "warn"

    def __post_init__(self) -> None:
        owner = "DEQ"
        options = solver_options(owner, self.solver, self.solver_options)
        if self.backward_solver is not None:
            solver_options(owner, self.backward_solver, None)
        if self.grad not in GRADIENTS:
            raise ValueError(f"{owner}: grad must be one of {GRADIENTS}, got {self.grad!r}")
        if self.on_nonconvergence not in _POLICIES:
            raise ValueError(
                f"{owner}: on_nonconvergence must be one of {_POLICIES}, "
                f"got {self.on_nonconvergence!r}"
            )
        for name in ("max_iter", "grad_steps", "backward_max_iter"):
            value = getattr(self, name)
            if value is None and name == "backward_max_iter":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}")
        for name in ("atol", "rtol", "backward_atol", "backward_rtol"):
            value = getattr(self, name)
            if value is None and name.startswith("backward"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{owner}: {name} must be a float >= 0, got {value!r}")
        if self.atol == 0 and self.rtol == 0:
            raise ValueError(f"{owner}: atol and rtol cannot both be 0 (nothing would converge)")
        if isinstance(self.damping, bool) or not 0.0 < self.damping <= 1.0:
            raise ValueError(f"{owner}: damping must be in (0, 1], got {self.damping!r}")
        regularize = (self.regularize,) if isinstance(self.regularize, str) else self.regularize
        if not isinstance(regularize, (tuple, list)) or not set(regularize) <= set(_REGULARIZERS):
            raise ValueError(
                f"{owner}: regularize must name some of {_REGULARIZERS}, got {self.regularize!r}"
            )
        self._set_fields(
            model=as_layer(owner, "model", self.model),
            warm_start=None
            if self.warm_start is None
            else as_layer(owner, "warm_start", self.warm_start),
            solver_options=options,
            regularize=tuple(regularize),
            atol=float(self.atol),
            rtol=float(self.rtol),
        )

    # -- state
    def init_state(self, key: torch.Tensor) -> State:
        st = super().init_state(key)
        st["stats"] = {
            "iterations": torch.zeros((), dtype=torch.int64),
            "residual": torch.zeros(()),
            "converged": torch.zeros((), dtype=torch.bool),
            "backward_iterations": torch.zeros((), dtype=torch.int64),
        }
        names = [*self.regularize, *(("warm_start",) if self.warm_start is not None else ())]
        if names:
            st["regularization"] = {name: torch.zeros(()) for name in names}
        if "jacobian" in self.regularize:
            st["key"] = key.clone()
        return st

    # -- the call
    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        x, options = self._split_input(x)
        early = stops_early()
        if self.on_nonconvergence == "raise" and not early:
            raise RuntimeError(
                f"{short_repr(self)}: on_nonconvergence='raise' needs to read the residual "
                "on the host, which is impossible under vmap and torch.compile; use "
                "on_nonconvergence='warn' or 'ignore' there and check st['stats']['converged']"
            )
        new_st: State = {}
        regularization: dict[str, torch.Tensor] = {}
        z0 = self._initial(x, options, ps, st, new_st)
        ps_m, st_m = ps["model"], st["model"]
        frozen_x = ltree.map(torch.Tensor.detach, x)
        frozen_ps = ltree.map(torch.Tensor.detach, ps_m)

        def f_frozen(z: torch.Tensor) -> torch.Tensor:
            return self._f(z, frozen_x, frozen_ps, st_m)[0]

        result = solve(
            f_frozen,
            z0,
            solver=self.solver,
            max_iter=self.max_iter,
            atol=self.atol,
            rtol=self.rtol,
            options=self.solver_options,
            early_stop=early,
        )
        z_star = result.z
        stats = {
            "iterations": result.iterations.max(),
            "residual": result.residual.max(),
            "converged": result.converged.all(),
            "backward_iterations": torch.zeros((), dtype=torch.int64, device=z_star.device),
        }
        if early:
            self._report(result.converged, result.residual, "solve", self.max_iter)
        counter = stats["backward_iterations"] if early else None  # written by eager backwards
        z, st_m_new = self._output(z_star, x, ps_m, st_m, counter)
        if "jacobian" in self.regularize:
            new_st["key"], key = lrandom.split(st["key"])
            regularization["jacobian"] = self._jacobian_penalty(z_star, x, ps_m, st_m, key)
        if self.warm_start is not None:
            regularization["warm_start"] = (z0 - z_star.detach()).square().mean()
        out: State = {"model": st_m_new, **new_st, "stats": stats}
        if regularization:
            out["regularization"] = regularization
        return z, {k: out[k] for k in st}  # init_state's order

    def _f(self, z: torch.Tensor, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        """One evaluation of ``model((z, x))``, its output checked to have ``z``'s shape."""
        fz, st = self.model((z, x), ps, st)
        if not isinstance(fz, torch.Tensor) or fz.shape != z.shape:
            got = tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
            raise ValueError(
                f"{short_repr(self)}: the model {short_repr(self.model)} returned {got} for "
                f"z of shape {tuple(z.shape)}; a DEQ's model must map (z, x) to a tensor "
                "of z's shape"
            )
        return fz, st

    def _output(
        self, z_star: torch.Tensor, x: Any, ps: Params, st: State, counter: torch.Tensor | None
    ) -> tuple[torch.Tensor, State]:
        """The differentiable output from the constant ``z*`` (see ``grad``)."""
        if self.grad in ("phantom", "unroll"):
            z, damping = z_star, (self.damping if self.grad == "phantom" else 1.0)
            for _ in range(self.grad_steps):
                fz, st = self._f(z, x, ps, st)
                z = fz if damping == 1.0 else torch.lerp(z, fz, damping)
            return z, st
        z, st_new = self._f(z_star, x, ps, st)
        if self.grad == "jfb" or not _differentiated(z):
            return z, st_new
        tensors, spec = ltree.flatten((x, ps, st))
        problem = _Problem(self, spec, counter)
        z = _ImplicitGrad.apply(z, z_star, problem, *tensors)  # type: ignore[no-untyped-call]  # torch's
        return z, st_new

    def _jacobian_penalty(
        self, z_star: torch.Tensor, x: Any, ps: Params, st: State, key: torch.Tensor
    ) -> torch.Tensor:
        """Hutchinson's estimate of ``||df/dz||_F**2 / numel(z)`` at ``z*`` (Bai et al. 2021)."""
        eps = lrandom.normal(key, z_star.shape, dtype=z_star.dtype, device=z_star.device)
        vjp = torch.func.vjp(lambda z: self._f(z, x, ps, st)[0], z_star.detach())[1]
        eps_jac: torch.Tensor = vjp(eps)[0]
        return eps_jac.square().sum() / eps.numel()

    def _initial(
        self, x: Any, options: dict[str, Any], ps: Params, st: State, new_st: State
    ) -> torch.Tensor:
        """The solve's starting point: the ``z0`` option, the warm start, or zeros."""
        if self.warm_start is not None:
            z0, new_st["warm_start"] = self.warm_start(x, ps["warm_start"], st["warm_start"])
            if "z0" not in options:
                return z0  # type: ignore[no-any-return]
        if "z0" in options:
            z0 = options["z0"]
            if not isinstance(z0, torch.Tensor) or not z0.is_floating_point():
                raise TypeError(
                    f"{short_repr(self)}: the call option 'z0' must be a floating-point "
                    f"Tensor, got {type(z0).__name__}"
                )
            return z0
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{short_repr(self)}: with an input that is not one tensor, give the initial "
                "z as the call option {'z0': z0} or a warm_start layer (the default start "
                "zeros_like(x) needs x to be a tensor)"
            )
        return torch.zeros_like(x)

    def _split_input(self, x: Any) -> tuple[Any, dict[str, Any]]:
        """``(x, options)`` from ``x`` or ``(x, {"z0": z0})``."""
        if isinstance(x, list):
            x = tuple(x)
        if not (isinstance(x, tuple) and x and isinstance(x[-1], Mapping)):
            options: dict[str, Any] = {}
        else:
            options = dict(x[-1])
            problem = options_problem(options, ("z0",), ())
            if problem is not None:
                raise ValueError(f"{short_repr(self)}: {problem}")
            x = x[0] if len(x) == 2 else tuple(x[:-1])
        leaves = [x] if isinstance(x, torch.Tensor) else x
        if not (isinstance(leaves, tuple | list) and leaves) or not all(
            isinstance(v, torch.Tensor) for v in leaves
        ):
            raise TypeError(f"{short_repr(self)}: {self.describe_input_error(x)}")
        return x, options

    def _report(
        self, converged: torch.Tensor, residual: torch.Tensor, what: str, max_iter: int
    ) -> None:
        """Warn or raise (``on_nonconvergence``) when a sample did not converge (eager)."""
        if self.on_nonconvergence == "ignore" or bool(converged.all()):
            return
        worst = float(residual.max())
        failed = int((~converged).sum())
        message = (
            f"{short_repr(self)}: the {what} did not converge for {failed} of "
            f"{converged.numel()} sample(s) within {max_iter} iterations: largest residual "
            f"||f(z) - z|| = {worst:.3g} (atol={self.atol:g}, rtol={self.rtol:g}). Raise "
            "max_iter, loosen the tolerances, try another solver, or make the model more "
            "contractive (e.g. smaller weights or regularize='jacobian')"
        )
        if math.isnan(worst):
            message += "; the iterates contain NaN"
        if self.on_nonconvergence == "raise":
            raise RuntimeError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    # -- configuration
    @property
    def requires_autograd(self) -> bool:
        """``False``: every gradient mode works under ``torch.func``."""
        return False

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, (tuple, list)) and x and isinstance(x[-1], Mapping):
            x = x[0] if len(x) == 2 else tuple(x[:-1])
        if isinstance(x, torch.Tensor) or (
            isinstance(x, (tuple, list)) and x and all(isinstance(v, torch.Tensor) for v in x)
        ):
            return None
        return (
            "expected the injected input x as a Tensor or a tuple of Tensors, optionally "
            f"followed by a dict of call options ((x, {{'z0': z0}})), got {type(x).__name__}"
        )

    def extra_repr(self) -> str:
        parts = [repr(self.solver)]
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in ("max_iter", "atol", "rtol", "grad", "grad_steps", "damping"):
            if getattr(self, name) != defaults[name]:
                if name in ("grad_steps", "damping") and self.grad in ("implicit", "jfb"):
                    continue
                parts.append(f"{name}={getattr(self, name)!r}")
        if self.solver_options != SOLVERS[self.solver]:
            parts.append(f"solver_options={dict(self.solver_options or {})!r}")
        if self.regularize:
            parts.append(f"regularize={self.regularize!r}")
        if self.on_nonconvergence != "warn":
            parts.append(f"on_nonconvergence={self.on_nonconvergence!r}")
        return ", ".join(parts)
