"""Neural ODEs on torchdiffeq: :class:`NeuralODE` and the :func:`vector_field` bridge.

A :class:`NeuralODE` integrates ``dy/dt = f(y)`` (or ``f(t, y)``) whose right-hand side
``f`` is any lux_torch layer, with torchdiffeq's solvers::

    import torch, lux_torch as lux
    from lux_torch.ode import NeuralODE

    field = lux.Chain(lux.Linear(2, 50, activation=torch.tanh), lux.Linear(50, 2))
    node = NeuralODE(field, t=torch.linspace(0.0, 1.0, 10))
    ps, st = lux.setup(0, node)
    ys, st = node(y0, ps, st)              # ys: (10, *y0.shape), like torchdiffeq.odeint

torchdiffeq is the optional extra ``ode`` (``pip install lux-torch[ode]``); it is imported
on first use, so ``import lux_torch.ode`` works without it.

Gradients
---------
``adjoint=False`` (default) backpropagates through the solver's operations (exact
gradients of the discrete solve, memory growing with the number of steps).
``adjoint=True`` uses :func:`torchdiffeq.odeint_adjoint` with ``adjoint_params`` set to
the parameter leaves ``ps["vector_field"]`` and the state leaves that require grad:
constant memory, gradients exact up to the tolerance of the backward solve. No gradient
is dropped silently: a vector field (with the adjoint) or an ``event_fn`` that reads a
tensor requiring grad which the solve cannot differentiate raises (see
:class:`NeuralODE`, "Adjoint gradients").

Time is data
------------
The output times (and an event solve's start) may come with the input as tensors,
``node((y0, {"t": t}), ps, st)``: gradients flow to them, and each batch may have its own
grid without rebuilding the layer or recompiling.

How torchdiffeq composes with torch.func and torch.compile
----------------------------------------------------------
Measured with torchdiffeq 0.2.5 and torch 2.13:

- ``torch.autograd`` (``backward``/``torch.autograd.grad``): every solver, backprop and
  adjoint.
- ``torch.func.grad``/``vjp``/``jacrev``: only the fixed-grid solvers (``euler``,
  ``midpoint``, ``heun2``, ``heun3``, ``rk4``, ``explicit_adams``, ``implicit_adams``)
  without the ``perturb`` option, ``adjoint`` or ``event_fn``. The adaptive solvers
  (``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``) write their
  Runge-Kutta stages through ``_UncheckedAssign``, and ``perturb``/adaptive steps use
  ``_StitchGradient``, ``odeint_adjoint`` is ``OdeintAdjointMethod`` and
  ``odeint_event`` uses ``ImplicitFnGradientRerouting``: all
  ``torch.autograd.Function`` s without ``setup_context``, which functorch refuses (the
  ``"jacobian"`` regularizer calls ``torch.autograd.grad`` inside the field). Such a
  :class:`NeuralODE` therefore has ``requires_autograd == True``, so that
  :func:`lux_torch.train_step` (``ad="auto"``) takes the ``torch.autograd`` path.
- ``torch.func.vmap``: no solver. Every solver preallocates the output with
  ``torch.empty`` and writes each time point into it in place, which vmap cannot do once
  the solution depends on batched tensors; the adaptive solvers also branch on tensor
  values (step acceptance). For ensembles, batch inside the vector field instead:
  ``NeuralODE(lux.Ensemble(field, n), t)`` solves all ``n`` members in one solve.
- ``torch.compile``: the solve cannot be captured in one graph by any solver:
  torchdiffeq branches in Python on tensor values (the checks of ``t``, the search for
  the next output time, step acceptance). The solve is wrapped in
  :func:`torch.compiler.disable`, so ``torch.compile(fullgraph=False)`` runs it eagerly
  (the code around it is compiled) and ``fullgraph=True`` fails at once with an error
  that says so, rather than deep inside torchdiffeq. :class:`NeuralODE` sets
  ``compile_fullgraph = False``, so ``lux.train_step(..., compile=True)`` takes the
  autograd path and compiles the forward with ``fullgraph=False`` around the eager solve
  (and the optimizer update as its own graph).

Beyond the plain solve
----------------------
``augment=k`` (augmented neural ODEs: ``k`` zero channels), ``event_fn=`` (solve until an
event, differentiable event time, via ``odeint_event``), ``regularize=("kinetic",
"jacobian")`` (RNODE's integrals, returned in ``st["regularization"]``) and
``time_dependent=True``; see :class:`NeuralODE`. For an ensemble of vector fields, batch
inside the field and solve once: :class:`lux_torch.Ensemble` (``torch.func.vmap`` over
stacked member parameters inside the field's call), as in
``NeuralODE(lux.Ensemble(field, n), t)`` with ``y0`` of shape ``(n, batch, ...)``; the
solve itself cannot be vmapped. The adaptive step size is then shared by the members
(the error norm covers them all).

Solver statistics
-----------------
``st["stats"]`` holds 0-dim ``int64`` tensors describing the solve of the call that
returned it (not cumulative):

- ``nfe``: vector-field evaluations in the forward solve.
- ``steps_accepted`` / ``steps_rejected``: solver steps, from torchdiffeq's step
  callbacks (a fixed-grid solver's steps are all accepted); ``-1`` where the solver
  reports none (``scipy_solver``, fixed-grid solvers with ``event_fn``).
- ``nfe_adjoint``: vector-field evaluations of the adjoint (backward) solve. The backward
  pass runs after the call returned, so this count is written *in place* into the tensor
  of the returned state while it runs: ``0`` until then, and always ``0`` with
  ``adjoint=False`` (backprop evaluates no vector field).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import torch

from .. import random as lrandom
from .. import tree as ltree
from ..core import Layer, describe_config
from ..display import short_repr
from ..layers.containers import as_layer
from ._common import import_extra, never_compiled, split_options

__all__ = [
    "FUNC_COMPATIBLE_METHODS",
    "DenseSolution",
    "ElementwiseTolerance",
    "NeuralODE",
    "VectorField",
    "vector_field",
]

Params = dict[str, Any]
State = dict[str, Any]

#: Solvers whose operations ``torch.func`` transforms can differentiate (without
#: ``perturb`` and without adjoint); see the module docstring.
FUNC_COMPATIBLE_METHODS = frozenset(
    {
        "euler",
        "midpoint",
        "heun2",
        "heun3",
        "rk4",
        "explicit_adams",
        "implicit_adams",
        "fixed_adams",
    }
)
_SAVE_AT = ("all", "last")
_TIME_OPTIONS = ("step_t", "jump_t")  # tensor-valued solver options (times)
_STATS = ("nfe", "nfe_adjoint", "steps_accepted", "steps_rejected")
_REGULARIZERS = ("kinetic", "jacobian")

_COMPILE_REASON = (
    "lux_torch.ode.NeuralODE: torchdiffeq's solvers branch in Python on tensor values "
    "(checks of t, the search for output times, step acceptance), which torch.compile "
    "cannot capture in one graph. The ODE solve runs eagerly under torch.compile("
    "fullgraph=False) and in lux.train_step(compile=True); with fullgraph=True it cannot "
    "be compiled"
)

_never_compiled = never_compiled(_COMPILE_REASON)


def _torchdiffeq() -> types.ModuleType:
    """The torchdiffeq module, imported on first use (the optional extra ``ode``)."""
    return import_extra("torchdiffeq", "ode", "lux_torch.ode")


def _solvers() -> dict[str, Any]:
    _torchdiffeq()
    from torchdiffeq._impl.odeint import SOLVERS

    return dict(SOLVERS)


# --------------------------------------------------------------------------- vector field


def _shape_problem(y: Any, dy: Any) -> str | None:
    """Why ``dy`` cannot be the derivative of the state ``y`` (``None``: it can)."""
    if isinstance(y, torch.Tensor):
        if not isinstance(dy, torch.Tensor):
            return f"returned {type(dy).__name__} for a Tensor state; it must return a Tensor"
        if dy.shape != y.shape:
            return (
                f"returned dy/dt of shape {tuple(dy.shape)} for a state of shape "
                f"{tuple(y.shape)}; dy/dt must have the state's shape"
            )
        return None
    if not isinstance(dy, tuple) or len(dy) != len(y):
        got = f"a tuple of {len(dy)}" if isinstance(dy, tuple) else type(dy).__name__
        return f"returned {got} for a state that is a tuple of {len(y)} tensors"
    for i, (yi, dyi) in enumerate(zip(y, dy, strict=True)):
        if not isinstance(dyi, torch.Tensor) or dyi.shape != yi.shape:
            what = (
                f"of shape {tuple(dyi.shape)}"
                if isinstance(dyi, torch.Tensor)
                else f"a {type(dyi).__name__}"
            )
            return (
                f"returned dy/dt[{i}] {what} for a state y[{i}] of shape "
                f"{tuple(yi.shape)}; dy/dt must have the state's shape"
            )
    return None


class VectorField:
    """``f(t, y)`` for torchdiffeq from a layer and its ``ps``/``st`` (see :func:`vector_field`).

    Calls ``model(y, ps, st)`` (or ``model((t, y), ps, st)`` when ``time_dependent``),
    threads the state from one evaluation to the next and checks that the output has the
    state's shape.

    Attributes:
        model, ps: as given.
        st: the state returned by the latest evaluation.
        nfe: number of evaluations so far.
        adjoint_params: the floating-point leaves of ``ps`` and the leaves of ``st`` that
            require grad (e.g. a context vector computed from other parameters), to pass to
            ``torchdiffeq.odeint_adjoint(f, y0, t, adjoint_params=f.adjoint_params)``.

    This is deliberately *not* a ``torch.nn.Module``: ``odeint_adjoint`` would take an
    ``nn.Module`` without ``nn.Parameter`` s as having no parameters and silently return no
    parameter gradients; with a plain callable it insists on ``adjoint_params``.
    """

    def __init__(
        self,
        model: Layer,
        ps: Params,
        st: State,
        *,
        time_dependent: bool = False,
    ) -> None:
        self.model = model
        self.ps = ps
        self.st = st
        self.time_dependent = time_dependent
        self.nfe = 0

    def __call__(self, t: torch.Tensor, y: Any) -> Any:
        self.nfe += 1
        dy, self.st = self.model((t, y) if self.time_dependent else y, self.ps, self.st)
        if not (
            isinstance(dy, torch.Tensor) and isinstance(y, torch.Tensor) and dy.shape == y.shape
        ):
            self._check(y, dy)  # a tuple state, or a wrong output (then it raises)
        return dy

    def _check(self, y: Any, dy: Any) -> None:
        problem = _shape_problem(y, dy)
        if problem is not None:
            raise ValueError(
                f"{self._where()}: the vector field {short_repr(self.model)} {problem}"
            )

    def _where(self) -> str:
        return "lux_torch.ode.vector_field"

    @property
    def adjoint_params(self) -> tuple[torch.Tensor, ...]:
        """The floating leaves of ``ps``, then those of ``st`` that require grad."""
        params = [p for p in ltree.leaves(self.ps) if p.is_floating_point() or p.is_complex()]
        return (*params, *(s for s in ltree.leaves(self.st) if s.requires_grad))

    def __repr__(self) -> str:
        return f"VectorField({short_repr(self.model)}, nfe={self.nfe})"


def vector_field(
    model: Layer, ps: Params, st: State, *, time_dependent: bool = False
) -> VectorField:
    """A layer as the right-hand side ``f(t, y)`` of ``dy/dt = f(t, y)`` for torchdiffeq.

    Arguments:
        model: the layer computing ``dy/dt``.
        ps, st: its parameters and state; ``f.st`` holds the state of the latest evaluation.
        time_dependent: pass ``(t, y)`` to the layer instead of ``y``.

    Returns:
        A :class:`VectorField` ``f`` with ``f(t, y) -> dy/dt``.

    Example::

        f = vector_field(model, ps, st)
        ys = torchdiffeq.odeint(f, y0, t)
        ys = torchdiffeq.odeint_adjoint(f, y0, t, adjoint_params=f.adjoint_params)
    """
    if not isinstance(model, Layer):
        raise TypeError(
            f"lux_torch.ode.vector_field: model must be a lux_torch Layer, got "
            f"{type(model).__name__}"
        )
    return VectorField(model, ps, st, time_dependent=time_dependent)


class _Solve(VectorField):
    """The vector field of one :class:`NeuralODE` call, counting what the solver does."""

    def __init__(self, node: NeuralODE, ps: Params, st: State, callbacks: frozenset[str]) -> None:
        super().__init__(node.vector_field, ps, st, time_dependent=node.time_dependent)
        self.node = node
        self.accepted = 0
        self.rejected = 0
        self.adjoint_nfe: torch.Tensor | None = None  # set once the forward solve is done
        self.kinetic = "kinetic" in node.regularize
        self.noise: torch.Tensor | None = None  # Hutchinson's probe for "jacobian"
        # torchdiffeq warns about callbacks a solver does not support: define only valid ones
        if "callback_accept_step" in callbacks:
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject
        elif "callback_step" in callbacks:
            self.callback_step = self._accept

    def _where(self) -> str:
        return short_repr(self.node)  # only on the error path: it costs tens of µs

    def _accept(self, t0: Any, y0: Any, dt: Any) -> None:
        self.accepted += 1

    def _reject(self, t0: Any, y0: Any, dt: Any) -> None:
        self.rejected += 1

    def __call__(self, t: torch.Tensor, y: Any) -> Any:
        if self.adjoint_nfe is not None:  # the backward pass of odeint_adjoint
            self.adjoint_nfe.add_(1)
        if not self.kinetic and self.noise is None:
            return super().__call__(t, y)
        # regularized: the state is (y, integrals...), integrated alongside y
        y = y[0]
        if self.noise is None:
            dy = super().__call__(t, y)
            return dy, (dy * dy).sum()
        with torch.enable_grad():
            y_in = y if y.requires_grad else y.detach().requires_grad_(True)
            dy = super().__call__(t, y_in)
            (eps_jac,) = torch.autograd.grad(dy, y_in, self.noise, create_graph=True)
        extra = [(dy * dy).sum()] if self.kinetic else []
        return (dy, *extra, (eps_jac * eps_jac).sum())


# --------------------------------------------------------------------------- dependencies


def _foreign_leaves(outputs: Any, known: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The tensors requiring grad that ``outputs`` depend on, other than ``known`` ones.

    Walks the autograd graph from ``outputs`` back to its leaves (``AccumulateGrad`` nodes),
    stopping at the graph nodes of the ``known`` tensors that are not leaves.
    """
    known_ids = {id(p) for p in known}
    stop = {p.grad_fn for p in known if p.grad_fn is not None}
    found: list[torch.Tensor] = []
    stack: list[Any] = []
    for out in ltree.leaves(outputs) if not isinstance(outputs, torch.Tensor) else [outputs]:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            if out.grad_fn is None and id(out) not in known_ids:
                found.append(out)
            stack.append(out.grad_fn)
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stop:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)
        if isinstance(leaf, torch.Tensor):  # AccumulateGrad: a leaf tensor
            if id(leaf) not in known_ids:
                found.append(leaf)
            continue
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def _described(tensors: list[torch.Tensor]) -> str:
    shown = ", ".join(f"{tuple(p.shape)}" for p in tensors[:3])
    return f"{len(tensors)} tensor(s) requiring grad, of shape {shown}" + (
        ", ..." if len(tensors) > 3 else ""
    )


def _check_dependencies(
    node: NeuralODE, f: _Solve, y0: Any, t: torch.Tensor, leaves: tuple[torch.Tensor, ...]
) -> None:
    """No tensor the solve depends on silently gets a ``None`` gradient (DESIGN §4).

    torchdiffeq's adjoint differentiates only through ``adjoint_params``, and an event
    time's gradient only through ``(t, y)``: one probe evaluation on detached inputs (not
    counted in ``st["stats"]``) finds any other tensor requiring grad that the vector
    field (adjoint) or ``event_fn`` reads, e.g. from a closure.
    """
    if not node.adjoint and node.event_fn is None:
        return
    if torch._C._functorch.maybe_current_level() is not None:
        return  # under torch.func the adjoint and events refuse to run at all (clear error)
    # the probe's state requires grad, as the solver's does (a field that differentiates
    # with respect to its input keeps it rather than making a leaf of its own)
    y = (
        y0.detach().requires_grad_(True)
        if isinstance(y0, torch.Tensor)
        else tuple(v.detach().requires_grad_(True) for v in y0)
    )
    inputs = (y,) if isinstance(y, torch.Tensor) else y
    t0 = t[0].detach()
    owner = short_repr(node)
    with torch.enable_grad():
        if node.adjoint:
            dy, st_out = node.vector_field((t0, y) if node.time_dependent else y, f.ps, f.st)
            foreign = _foreign_leaves(dy, (*leaves, *inputs))
            if foreign:
                raise ValueError(
                    f"{owner}: with adjoint=True the vector field reads {_described(foreign)} "
                    "from outside ps['vector_field'] and st['vector_field'] (e.g. captured "
                    "in a closure); torchdiffeq's odeint_adjoint cannot see them and would "
                    "give them no gradient. Pass them in through the vector field's st or "
                    "ps (st tensors that require grad get adjoint gradients), or use "
                    "adjoint=False. (A field that differentiates with respect to a fresh "
                    "leaf, y.detach().requires_grad_(), looks the same: use y itself when "
                    "it already requires grad)"
                )
            for before, after in zip(ltree.leaves(f.st), ltree.leaves(st_out), strict=False):
                if before.requires_grad and after is not before:
                    raise ValueError(
                        f"{owner}: with adjoint=True, a tensor of the vector field's st "
                        f"that requires grad (shape {tuple(before.shape)}) must pass "
                        "through the field unchanged: the adjoint differentiates each "
                        "evaluation with respect to the st it was given. Use adjoint=False"
                    )
        if node.event_fn is not None:
            foreign = _foreign_leaves(node.event_fn(t0, y), inputs)
            if foreign:
                raise ValueError(
                    f"{owner}: event_fn reads {_described(foreign)} besides (t, y); the "
                    "gradient of the event time flows only through (t, y) (torchdiffeq's "
                    "odeint_event), so they would get no gradient from it. Carry such "
                    "values in the ODE state (as torchdiffeq's bouncing_ball.py carries "
                    "the radius) or detach them"
                )


# --------------------------------------------------------------------------- validation


def _as_times(owner: str, name: str, t: Any) -> tuple[float, ...]:
    if isinstance(t, torch.Tensor):
        if t.ndim != 1:
            raise ValueError(f"{owner}: {name} must be one-dimensional, got shape {tuple(t.shape)}")
        t = t.detach().cpu().tolist()
    if isinstance(t, (str, bytes)) or not isinstance(t, Sequence):
        raise TypeError(
            f"{owner}: {name} must be a sequence of floats or a 1-D tensor, got {type(t).__name__}"
        )
    values = []
    for v in t:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{owner}: {name} must hold numbers, got {type(v).__name__}")
        values.append(float(v))
    return tuple(values)


def _check_times(owner: str, t: tuple[float, ...]) -> None:
    if not t:
        raise ValueError(f"{owner}: t needs at least one time point, got none")
    bad = [i for i, v in enumerate(t) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{owner}: t must be finite, got t[{bad[0]}] = {t[bad[0]]}")
    increasing = len(t) < 2 or t[1] > t[0]
    for i in range(1, len(t)):
        if (t[i] > t[i - 1]) != increasing or t[i] == t[i - 1]:
            raise ValueError(
                f"{owner}: t must be strictly increasing or strictly decreasing, but "
                f"t[{i - 1}] = {t[i - 1]!r} and t[{i}] = {t[i]!r}"
                + ("" if t[i] != t[i - 1] else " are equal")
            )


@dataclasses.dataclass(frozen=True)
class ElementwiseTolerance:
    """A per-element tolerance given as a tensor, kept as floats (layers hold no tensors).

    torchdiffeq honours a tensor ``rtol``/``atol`` element by element (its error norm
    compares ``|error|`` with ``atol + rtol * |y|``): the tensor must broadcast to the
    (tensor) state's shape. It becomes a tensor in the state's dtype and device per call.
    """

    values: tuple[float, ...]
    shape: tuple[int, ...]

    def tensor(self, like: torch.Tensor) -> torch.Tensor:
        out = torch.tensor(self.values, dtype=like.dtype.to_real(), device=like.device)
        return out.reshape(self.shape)

    def __repr__(self) -> str:
        return f"tensor of shape {self.shape}"


def _check_tol(owner: str, name: str, value: Any, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, torch.Tensor):
        ok = not value.is_complex() and value.dtype != torch.bool and not value.requires_grad
        flat = value.detach().reshape(-1).cpu().tolist() if ok else []
        if not ok or not all(math.isfinite(v) and v >= 0 for v in flat):
            raise ValueError(
                f"{owner}: {name} as a tensor must hold finite non-negative real numbers "
                f"and not require grad (torchdiffeq cannot differentiate tolerances), got "
                f"a {value.dtype} tensor{' requiring grad' if value.requires_grad else ''}"
            )
        return ElementwiseTolerance(tuple(float(v) for v in flat), tuple(value.shape))
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(
                f"{owner}: {name} must be a non-negative float (or a tuple of them, one per "
                f"state tensor), got {value!r}"
            )
    return tuple(float(v) for v in values) if isinstance(value, tuple) else float(value)


def _plain_options(owner: str, name: str, options: Any) -> dict[str, Any] | None:
    """A copy of solver ``options`` holding no tensors (times become tuples of floats)."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"{owner}: {name} must be a dict or None, got {type(options).__name__}")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise TypeError(f"{owner}: {name} keys must be strings, got {key!r}")
        if isinstance(value, torch.Tensor):
            value = value.item() if value.ndim == 0 else _as_times(owner, f"{name}[{key!r}]", value)
        elif key in _TIME_OPTIONS and value is not None:
            value = _as_times(owner, f"{name}[{key!r}]", value)
        out[key] = value
    return out


def _solver_options(options: Mapping[str, Any] | None, like: torch.Tensor) -> dict[str, Any] | None:
    """The options for torchdiffeq: time lists as tensors (it negates them for reversed t)."""
    if options is None:
        return None
    out = dict(options)
    for key in _TIME_OPTIONS:
        if out.get(key) is not None:
            out[key] = torch.tensor(out[key], dtype=like.dtype, device=like.device)
    return out


def _times_repr(t: tuple[float, ...] | None) -> str:
    if t is None:
        return "t per call"
    if len(t) == 1:
        return f"t={t[0]:g}"
    return f"t={t[0]:g} => {t[-1]:g} ({len(t)} points)"


_CALL_OPTIONS = ("t", "t0")


def _time_tensor(owner: str, name: str, given: Any, like: torch.Tensor) -> torch.Tensor:
    """A time option as a tensor in ``like``'s real dtype and device (differentiably)."""
    if isinstance(given, torch.Tensor):
        value = given
    else:
        times = _as_times(owner, name, given if name == "t" else [given])
        value = torch.tensor(times if name == "t" else times[0], dtype=torch.float64)
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{owner}: the call option {name!r} must be real, got {value.dtype}")
    want = 1 if name == "t" else 0
    if value.ndim != want and not (name == "t0" and value.shape == (1,)):
        raise ValueError(
            f"{owner}: the call option {name!r} must be "
            + ("a 1-D tensor of times" if want else "a 0-dim tensor (one time)")
            + f", got shape {tuple(value.shape)}"
        )
    return value.to(dtype=like.dtype.to_real(), device=like.device)


def _check_time_values(owner: str, t: torch.Tensor) -> None:
    """``t`` is finite and strictly monotone, at least one point (one host sync)."""
    if t.numel() == 0:
        raise ValueError(f"{owner}: the call option 't' needs at least one time point, got none")
    d = t.detach().diff()
    ok = torch.isfinite(t.detach()).all() & ((d > 0).all() | (d < 0).all())
    if not bool(ok):  # only now move the values to the host, to say what is wrong
        _check_times(f"{owner} (call option 't')", tuple(t.detach().cpu().tolist()))


# --------------------------------------------------------------------------- NeuralODE


class NeuralODE(Layer):
    """Solve ``dy/dt = f(y)`` from ``y(t[0]) = y0`` where ``f`` is a layer (DiffEqFlux's).

    The layer's input is the initial state ``y0``; its output is the solution at the times
    ``t``, computed by :func:`torchdiffeq.odeint` (or :func:`torchdiffeq.odeint_adjoint`).
    See the module docstring for what works under ``torch.func`` and ``torch.compile``.

    Arguments:
        vector_field: the layer computing ``dy/dt`` from ``y`` (or from ``(t, y)`` with
            ``time_dependent=True``); a plain callable is wrapped in
            :class:`~lux_torch.WrappedFunction`. It must return a tensor of the state's
            shape (a tuple of them for a tuple state).
        t: the default output times, a sequence of floats or a 1-D tensor (stored as a
            tuple of floats: layers hold no tensors), strictly increasing or strictly
            decreasing, at least one (one time returns ``y0[None]``, as torchdiffeq). The
            solve starts at ``t[0]``. At call time it becomes a tensor in ``y0``'s (real)
            dtype and on ``y0``'s device. ``None``: every call gives its times as data,
            ``node((y0, {"t": t}), ps, st)`` (see Input); such times take precedence
            over these.
        method: a torchdiffeq solver (``"dopri5"``, ``"rk4"``, ``"euler"``, ...).
        rtol, atol: tolerances of adaptive solvers: a float, a tuple (one per state
            tensor), or a tensor of per-element tolerances that broadcasts to a tensor
            state's shape (kept as an :class:`ElementwiseTolerance`).
        options: solver options (e.g. ``{"step_size": 0.1}`` for fixed-grid solvers);
            tensor values are stored as floats or tuples of floats.
        adjoint: backpropagate with the adjoint method (``odeint_adjoint``), with
            ``adjoint_params`` = the floating-point leaves of ``ps["vector_field"]``.
        adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options: settings of the
            backward solve (default: those of the forward solve, as in torchdiffeq); only
            with ``adjoint=True``.
        time_dependent: call the vector field with ``(t, y)`` (``t`` a 0-dim tensor in the
            state's real dtype) instead of ``y``.
        save_at: ``"all"`` returns the solution at every time of ``t``; ``"last"`` only at
            ``t[-1]`` (the solver still passes through every time of ``t``: give two times
            to step freely).
        augment: append this many zero channels to the last dimension of ``y0`` before
            solving (augmented neural ODEs, Dupont et al. 2019): the vector field maps
            ``d + augment`` features to ``d + augment``, and so does the output.
        event_fn: solve from ``t[0]`` until ``event_fn(t, y)`` crosses zero
            (:func:`torchdiffeq.odeint_event`), in the direction of ``t[-1]`` (which
            itself is not a bound). The output is then ``(event_t, ys)`` with ``ys`` the
            solution at ``(t[0], event_t)`` (``save_at="all"``) or at ``event_t``
            (``"last"``); gradients flow into ``event_t`` too. Fixed-grid solvers need
            ``options={"step_size": ...}`` for events.
        regularize: regularization integrals to compute alongside ``y`` (RNODE, Finlay et
            al. 2020), as extra components of the ODE state, returned in
            ``st["regularization"]`` (differentiable: add them to the loss):
            ``"kinetic"`` is ``∫ sum(f(y)**2) dt`` and ``"jacobian"`` is Hutchinson's
            estimate ``∫ sum((eps^T ∂f/∂y)**2) dt`` of ``∫ ||∂f/∂y||_F**2 dt``, with one
            standard normal probe ``eps`` (shaped like ``y0``) per call drawn from
            ``st["key"]``. Sums run over all elements of the state (divide by the batch
            size for a per-sample mean). Tensor states only.

    All defaults equal torchdiffeq's.

    Input:
        ``y0``: a floating-point tensor of any shape, or a tuple of them; or
        ``(y0, options)`` with a dict of call options (DESIGN's call-options convention):

        - ``"t"``: the output times as a 1-D tensor (or a sequence of floats), strictly
          monotone: they replace the configured ``t`` for this call. Times are data:
          gradients flow to them (as torchdiffeq's, backprop and adjoint), a different
          grid per batch needs no rebuild, and compiled code does not specialise on their
          values (``train_step(compile=True)`` compiles once for grids of one length).
        - ``"t0"`` (with ``event_fn`` only): the start time of the event solve, a 0-dim
          tensor, e.g. the previous event's time when chaining solves
          (``examples/bouncing_ball.py``): the gradients of the later event times flow
          through it. The direction of the solve comes from ``t`` (forward if absent).

    Returns:
        ``ys`` of shape ``(len(t), *y0.shape)`` (``save_at="all"``) or ``y0.shape``
        (``"last"``) — for a tuple state, a tuple of those; ``(event_t, ys)`` with
        ``event_fn`` — and the new state.

    **Parameters**
        - ``vector_field``: the vector field's parameters (nested, as in Lux containers).

    **States**
        - ``vector_field``: the vector field's state. It is threaded through the
          evaluations of one solve and the state after the *last* evaluation is returned
          (with an adaptive solver that may be a rejected trial step). A vector field
          whose output depends on its changing state (e.g. dropout) makes the ODE
          non-smooth and, with the adjoint method, the backward solve inconsistent.
        - ``stats``: solver statistics, 0-dim ``int64`` tensors ``nfe``,
          ``nfe_adjoint``, ``steps_accepted``, ``steps_rejected`` (see the module
          docstring; ``nfe_adjoint`` is filled in place during the backward pass).
        - ``regularization`` (with ``regularize``): ``{name: 0-dim tensor}``, the
          integrals over the whole solve, carrying gradients.
        - ``key`` (with ``regularize`` containing ``"jacobian"``): the random key of the
          Hutchinson probe, advanced by every call.

    Adjoint gradients
        torchdiffeq's ``odeint_adjoint`` computes gradients only for the
        ``adjoint_params`` it is given, which has produced missing gradients in practice
        (torchdiffeq issues #118, #178, #227, #246). Here ``adjoint_params`` are the
        floating leaves of ``ps["vector_field"]`` plus the leaves of
        ``st["vector_field"]`` that require grad (a context vector an encoder computed,
        say): all get the gradients backprop would give. Leaves of ``ps`` that do not
        require grad (partly frozen parameters) are left out, as torchdiffeq 0.2.5 does;
        they get no gradient, as they asked. Any *other* tensor requiring grad that the
        field reads (e.g. from a closure) would get none, so a call with gradients
        enabled first evaluates the field once on detached inputs (not counted in
        ``st["stats"]``) and raises a ``ValueError`` if its autograd graph reaches such a
        tensor, or if a state tensor that requires grad does not pass through the field
        unchanged. Likewise ``event_fn`` may depend only on ``(t, y)``: the event time's
        gradient flows only through those, so one that reads a tensor requiring grad
        raises (carry such values in the state, as torchdiffeq's bouncing ball carries its
        radius).

    Attributes:
        requires_autograd: ``True`` when the solve cannot be differentiated by
            ``torch.func`` (adaptive solvers, ``perturb``, adjoint, events, the
            ``"jacobian"`` regularizer), so that
            :func:`lux_torch.train_step` uses ``torch.autograd``.
        compile_fullgraph: ``False``: the solve runs eagerly, so
            ``train_step(..., compile=True)`` compiles the code around it.

    Raises:
        ValueError: invalid configuration (``t`` not strictly monotone, unknown method,
            adjoint settings without ``adjoint=True``, ...); at call time, a vector field
            whose output does not have the state's shape, or adjoint parameters of which
            only some require grad.
        ImportError: torchdiffeq is not installed.

    Example::

        field = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 2))
        node = NeuralODE(field, t=[0.0, 0.5, 1.0], method="rk4")
        ps, st = lux.setup(0, node)
        ys, st = node(torch.ones(8, 2), ps, st)  # ys.shape == (3, 8, 2)
    """

    vector_field: Layer
    t: Sequence[float] | torch.Tensor | None = None
    _: dataclasses.KW_ONLY
    method: str = "dopri5"
    rtol: float | tuple[float, ...] | torch.Tensor = 1e-7
    atol: float | tuple[float, ...] | torch.Tensor = 1e-9
    options: Mapping[str, Any] | None = None
    adjoint: bool = False
    adjoint_rtol: float | tuple[float, ...] | torch.Tensor | None = None
    adjoint_atol: float | tuple[float, ...] | torch.Tensor | None = None
    adjoint_method: str | None = None
    adjoint_options: Mapping[str, Any] | None = None
    time_dependent: bool = False
    save_at: str = "all"
    augment: int = 0
    event_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    regularize: str | tuple[str, ...] | list[str] = ()

    def __post_init__(self) -> None:
        owner = "NeuralODE"
        t = None if self.t is None else _as_times(owner, "t", self.t)
        if t is not None:
            _check_times(owner, t)
        solvers = _solvers()
        for name in ("method", "adjoint_method"):
            value = getattr(self, name)
            if value is None and name == "adjoint_method":
                continue
            if value not in solvers:
                raise ValueError(
                    f"{owner}: {name} must be one of torchdiffeq's solvers "
                    f"{sorted(solvers)}, got {value!r}"
                )
        for name in ("adjoint", "time_dependent"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{owner}: {name} must be a bool, got {getattr(self, name)!r}")
        if isinstance(self.augment, bool) or not isinstance(self.augment, int) or self.augment < 0:
            raise ValueError(f"{owner}: augment must be an int >= 0, got {self.augment!r}")
        if self.event_fn is not None and not callable(self.event_fn):
            raise TypeError(
                f"{owner}: event_fn must be a function (t, y) -> Tensor or None, got "
                f"{type(self.event_fn).__name__}"
            )
        regularize = (self.regularize,) if isinstance(self.regularize, str) else self.regularize
        if not isinstance(regularize, (tuple, list)) or not set(regularize) <= set(_REGULARIZERS):
            raise ValueError(
                f"{owner}: regularize must name some of {_REGULARIZERS}, got {self.regularize!r}"
            )
        if self.save_at not in _SAVE_AT:
            raise ValueError(f"{owner}: save_at must be one of {_SAVE_AT}, got {self.save_at!r}")
        if not self.adjoint:
            given = [
                n
                for n in ("adjoint_rtol", "adjoint_atol", "adjoint_method", "adjoint_options")
                if getattr(self, n) is not None
            ]
            if given:
                raise ValueError(f"{owner}: {', '.join(given)} only apply with adjoint=True")
        options = _plain_options(owner, "options", self.options)
        adjoint_options = _plain_options(owner, "adjoint_options", self.adjoint_options)
        if (
            self.adjoint
            and self.adjoint_method not in (None, self.method)
            and options is not None
            and adjoint_options is None
        ):
            raise ValueError(
                f"{owner}: with adjoint_method != method and options given, give "
                "adjoint_options too (torchdiffeq cannot reuse one solver's options for another)"
            )
        self._set_fields(
            vector_field=as_layer(owner, "vector_field", self.vector_field),
            t=t,
            rtol=_check_tol(owner, "rtol", self.rtol),
            atol=_check_tol(owner, "atol", self.atol),
            adjoint_rtol=_check_tol(owner, "adjoint_rtol", self.adjoint_rtol, optional=True),
            adjoint_atol=_check_tol(owner, "adjoint_atol", self.adjoint_atol, optional=True),
            options=options,
            adjoint_options=adjoint_options,
            regularize=tuple(name for name in _REGULARIZERS if name in regularize),
        )

    # -- configuration
    compile_fullgraph: ClassVar[bool] = False  # the solve runs eagerly (torch.compiler.disable)

    @property
    def requires_autograd(self) -> bool:
        """Whether ``torch.func`` cannot differentiate the solve (see the module docstring)."""
        perturb = bool(self.options and self.options.get("perturb"))
        return (
            self.adjoint
            or perturb
            or self.event_fn is not None
            or "jacobian" in self.regularize
            or self.method not in FUNC_COMPATIBLE_METHODS
        )

    def init_state(self, key: torch.Tensor) -> State:
        st = super().init_state(key)
        st["stats"] = {name: torch.zeros((), dtype=torch.int64) for name in _STATS}
        if self.regularize:
            st["regularization"] = {name: torch.zeros(()) for name in self.regularize}
        if "jacobian" in self.regularize:
            st["key"] = key.clone()
        return st

    # -- the call
    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        return self._solve(x, ps, st)

    @_never_compiled
    def _solve(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        """The call, never traced by torch.compile (see ``_COMPILE_REASON``)."""
        y0, options = split_options(self, x, _CALL_OPTIONS, "the initial state y0")
        y0 = self._augment(self._check_y0(y0))
        ps_f, stats = ps["vector_field"], st["stats"]
        first = y0 if isinstance(y0, torch.Tensor) else y0[0]
        t = self._times(options, first)
        solver = _solvers()[self.method]
        f = _Solve(self, ps_f, st["vector_field"], frozenset(solver.valid_callbacks()))
        leaves = f.adjoint_params if self.adjoint else ()
        if torch.is_grad_enabled():
            _check_dependencies(self, f, y0, t, leaves)
        new_st: State = {}
        state = y0
        if self.regularize:
            if not isinstance(y0, torch.Tensor):
                raise TypeError(f"{short_repr(self)}: regularize needs a Tensor state y0")
            state = (y0, *(y0.new_zeros(()) for _ in self.regularize))
            if "jacobian" in self.regularize:
                new_st["key"], key = lrandom.split(st["key"])
                f.noise = lrandom.normal(key, y0.shape, dtype=y0.dtype, device=y0.device)
        try:
            ys = _integrate(self, f, state, t, leaves)
        except RuntimeError as err:
            hint = self._transform_hint(str(err))
            if hint is None:
                raise
            raise RuntimeError(hint) from err
        callbacks = solver.valid_callbacks()
        # fixed-grid solvers call no step callback while searching for an event
        reported = "callback_step" in callbacks and (
            self.event_fn is None or "callback_accept_step" in callbacks
        )
        counts = (f.nfe, 0, f.accepted, f.rejected) if reported else (f.nfe, 0, -1, -1)
        values = torch.tensor(counts, dtype=torch.int64, device=stats["nfe"].device)
        new_stats = dict(zip(_STATS, values.unbind(), strict=True))  # one allocation
        if self.adjoint:
            f.adjoint_nfe = new_stats["nfe_adjoint"]
        event_t = None
        if self.event_fn is not None:
            event_t, ys = ys
        if self.regularize:
            ys, *integrals = ys
            regularization = {
                name: value[-1] for name, value in zip(self.regularize, integrals, strict=True)
            }
            new_st = {"regularization": regularization, **new_st}  # init_state's order
        if self.save_at == "last":
            ys = ys[-1] if isinstance(ys, torch.Tensor) else tuple(y[-1] for y in ys)
        out = ys if event_t is None else (event_t, ys)
        return out, {"vector_field": f.st, "stats": new_stats, **new_st}

    def _times(self, options: dict[str, Any], like: torch.Tensor) -> torch.Tensor:
        """The output times (for an event solve: the start, then the direction's sign)."""
        owner = short_repr(self)
        if "t0" in options and self.event_fn is None:
            raise ValueError(
                f"{owner}: the call option 't0' (the start of an event solve) needs event_fn; "
                "give the output times as {'t': tensor} instead"
            )
        if "t" in options:
            t = _time_tensor(owner, "t", options["t"], like)
            _check_time_values(owner, t)
        elif self.t is not None:
            t = torch.tensor(self.t, dtype=like.dtype.to_real(), device=like.device)
        elif "t0" in options:
            t = like.new_zeros((1,), dtype=like.dtype.to_real())
        else:
            raise ValueError(
                f"{owner}: no time points: give them at construction (NeuralODE(field, t)) "
                "or with the input, node((y0, {'t': t}), ps, st)"
            )
        if self.event_fn is None:
            return t
        forward = len(t) < 2 or bool(t[-1] > t[0])
        t0 = _time_tensor(owner, "t0", options["t0"], like) if "t0" in options else t[0]
        # the event solve needs only its start and direction: torchdiffeq's odeint_event
        return torch.stack([t0.reshape(()), t0.detach().reshape(()) + (1.0 if forward else -1.0)])

    @_never_compiled
    def dense(self, x: Any, ps: Params, st: State) -> tuple[DenseSolution, State]:
        """Solve once and return a continuous solution, evaluable at any time of the span.

        torchdiffeq's :func:`~torchdiffeq.odeint_dense`: one ``dopri5`` solve from ``t[0]``
        to ``t[-1]`` (the configured ``t`` or the ``{"t": t}`` call option; increasing)
        that keeps every accepted step's interpolation coefficients. The result
        ``sol(t)`` gives ``y`` at a time or a 1-D tensor of times in ``[t[0], t[-1]]``
        (shape ``(*t.shape, *y0.shape)``), differentiable with respect to ``ps`` and
        ``y0`` (backprop through the solve). Needs ``method="dopri5"`` and a tensor state,
        without ``adjoint``, ``event_fn`` or ``regularize`` (torchdiffeq's dense solve
        supports none of them); ``augment`` applies.

        Returns:
            ``(sol, new_st)``, a :class:`DenseSolution` and the state (``stats`` as for a
            call, ``steps_*`` = -1: the dense solve reports no steps).
        """
        owner = short_repr(self)
        unsupported = [
            name
            for name, on in (
                ("adjoint=True", self.adjoint),
                ("event_fn", self.event_fn is not None),
                ("regularize", bool(self.regularize)),
                (f"method={self.method!r}", self.method != "dopri5"),
            )
            if on
        ]
        if unsupported:
            raise ValueError(
                f"{owner}.dense: torchdiffeq's dense output is a dopri5 solve without adjoint, "
                f"events or regularization; this node has {', '.join(unsupported)}"
            )
        y0, options = split_options(self, x, _CALL_OPTIONS, "the initial state y0")
        y0 = self._augment(self._check_y0(y0))
        if not isinstance(y0, torch.Tensor):
            raise TypeError(f"{owner}.dense: torchdiffeq's dense output needs a Tensor state y0")
        t = self._times(options, y0)
        if len(t) < 2 or not bool(t[-1] > t[0]):
            raise ValueError(
                f"{owner}.dense: t must increase from t[0] to t[-1] (two times or more)"
            )
        f = _Solve(self, ps["vector_field"], st["vector_field"], frozenset())
        tdq = _torchdiffeq()
        fn = tdq.odeint_dense(
            f, y0, t[0], t[-1], rtol=_tolerance(self, "rtol", self.rtol, y0),
            atol=_tolerance(self, "atol", self.atol, y0), method="dopri5",
            options=_solver_options(self.options, t),
        )  # fmt: skip
        values = torch.tensor(
            (f.nfe, 0, -1, -1), dtype=torch.int64, device=st["stats"]["nfe"].device
        )
        stats = dict(zip(_STATS, values.unbind(), strict=True))
        sol = DenseSolution(fn, float(t[0]), float(t[-1]), t.dtype, owner)
        return sol, {**st, "vector_field": f.st, "stats": stats}

    def _augment(self, y0: Any) -> Any:
        """``y0`` with ``augment`` zero channels appended to its last dimension."""
        if not self.augment:
            return y0
        if not isinstance(y0, torch.Tensor) or y0.ndim == 0:
            raise TypeError(
                f"{short_repr(self)}: augment needs a Tensor state with at least one "
                f"dimension, got {type(y0).__name__}"
                + (" of 0 dimensions" if isinstance(y0, torch.Tensor) else "")
            )
        zeros = y0.new_zeros((*y0.shape[:-1], self.augment))
        return torch.cat([y0, zeros], dim=-1)

    def _check_y0(self, y0: Any) -> Any:
        if isinstance(y0, list):
            y0 = tuple(y0)
        items = (y0,) if isinstance(y0, torch.Tensor) else y0
        if not isinstance(items, tuple) or not items:
            raise TypeError(
                f"{short_repr(self)}: y0 must be a floating-point Tensor or a tuple of them, "
                f"got {type(y0).__name__}"
            )
        for y in items:
            if not isinstance(y, torch.Tensor) or not (y.is_floating_point() or y.is_complex()):
                got = f"a {y.dtype} Tensor" if isinstance(y, torch.Tensor) else type(y).__name__
                raise TypeError(
                    f"{short_repr(self)}: y0 must be a floating-point Tensor or a tuple of "
                    f"them, got {got}"
                )
        return y0

    def _transform_hint(self, message: str) -> str | None:
        """A clearer error for torch.func transforms that torchdiffeq does not support."""
        if "setup_context" in message:
            if self.adjoint:
                why = "odeint_adjoint"
            elif self.event_fn is not None:
                why = "odeint_event"
            elif self.method in FUNC_COMPATIBLE_METHODS:
                why = f"the {self.method!r} solver with perturb=True"
            else:
                why = f"the adaptive {self.method!r} solver"
            return (
                f"{short_repr(self)} cannot be differentiated with torch.func transforms "
                f"(grad, vjp, jacrev, ...): {why} uses torch.autograd.Function without "
                "setup_context. Use torch.autograd (lux.train_step/compute_gradients do with "
                "ad='auto' or 'autograd'), or a fixed-grid method "
                f"({', '.join(sorted(FUNC_COMPATIBLE_METHODS))}) without adjoint"
            )
        if message.startswith("vmap:"):
            return (
                f"{short_repr(self)} cannot run under torch.func.vmap: torchdiffeq writes "
                "every output time into a preallocated tensor in place (and its adaptive "
                "solvers branch on tensor values). For an ensemble, batch inside the vector "
                "field instead (NeuralODE(lux.Ensemble(field, n), t): one solve for all "
                f"members), or loop. (vmap said: {message.splitlines()[0]})"
            )
        return None

    # -- display
    def extra_repr(self) -> str:
        parts = [_times_repr(cast(tuple[float, ...] | None, self.t))]  # normalised
        for f in dataclasses.fields(self):
            if f.name in ("vector_field", "t"):
                continue
            value = getattr(self, f.name)
            default = f.default
            if value == default or (f.name == "options" and not value and default is None):
                continue
            if isinstance(value, Mapping):
                value = dict(value)
            shown = describe_config(value) if callable(value) else repr(value)
            parts.append(f"{f.name}={shown}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, (tuple, list)) and x and isinstance(x[-1], Mapping):
            x = x[0] if len(x) == 2 else tuple(x[:-1])  # (y0, options)
        if isinstance(x, torch.Tensor) or (
            isinstance(x, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in x)
        ):
            return None
        return (
            "expected y0 as a Tensor or a tuple of Tensors, optionally followed by a dict "
            f"of call options ((y0, {{'t': t}})), got {type(x).__name__}"
        )


class DenseSolution:
    """The continuous solution of :meth:`NeuralODE.dense`: ``sol(t) -> y(t)``.

    Wraps torchdiffeq's dense output function, evaluating one time at a time (its
    vectorised form does not broadcast over a batched state) and refusing times outside
    the solved span, where it would extrapolate or fail.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        t0: float,
        t1: float,
        dtype: torch.dtype,
        owner: str,
    ) -> None:
        self._fn, self.t0, self.t1, self._dtype, self._owner = fn, t0, t1, dtype, owner

    def __call__(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t).detach()  # (times are not differentiated here)
        if t.ndim > 1:
            raise ValueError(
                f"{self._owner} dense solution: t must be 0-dim or 1-D, got shape {tuple(t.shape)}"
            )
        times = t.reshape(-1).cpu().to(self._dtype)
        outside = (times < self.t0) | (times > self.t1) | ~torch.isfinite(times)
        if bool(outside.any()):
            bad = float(times[outside][0])
            raise ValueError(
                f"{self._owner} dense solution: t = {bad!r} is outside the solved span "
                f"[{self.t0!r}, {self.t1!r}]"
            )
        ys = [self._at(ti) for ti in times]
        return ys[0] if t.ndim == 0 else torch.stack(ys)

    def _at(self, t: torch.Tensor) -> torch.Tensor:
        try:
            return self._fn(t)
        except IndexError:  # t on the last accepted step's end: torchdiffeq indexes past it
            return self._fn(torch.nextafter(t, t.new_tensor(-math.inf)))

    def __repr__(self) -> str:
        return f"DenseSolution(t={self.t0:g} => {self.t1:g})"


def _tolerance(node: NeuralODE, name: str, tol: Any, y0: Any) -> Any:
    """A configured tolerance as torchdiffeq takes it (per-element ones as tensors)."""
    if not isinstance(tol, ElementwiseTolerance):
        return tol
    if not isinstance(y0, torch.Tensor) or node.regularize:
        raise TypeError(
            f"{short_repr(node)}: a tensor {name} needs a plain Tensor state (torchdiffeq "
            "takes one float per tensor of a tuple state; regularize makes the state a tuple)"
        )
    try:
        fits = torch.broadcast_shapes(tol.shape, y0.shape) == y0.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{short_repr(node)}: the tensor {name} of shape {tol.shape} does not broadcast "
            f"to the state's shape {tuple(y0.shape)}"
        )
    return tol.tensor(y0)


def _integrate(
    node: NeuralODE,
    f: _Solve,
    y0: Any,
    t: torch.Tensor,
    leaves: tuple[torch.Tensor, ...],
) -> Any:
    """Run torchdiffeq's ``odeint`` or ``odeint_adjoint`` with the node's settings."""
    tdq = _torchdiffeq()
    kwargs: dict[str, Any] = {
        "rtol": _tolerance(node, "rtol", node.rtol, y0),
        "atol": _tolerance(node, "atol", node.atol, y0),
        "method": node.method,
        "options": _solver_options(node.options, t),
    }
    solve = tdq.odeint
    if node.adjoint:
        solve = tdq.odeint_adjoint
        kwargs.update(
            adjoint_rtol=_tolerance(node, "adjoint_rtol", node.adjoint_rtol, y0),
            adjoint_atol=_tolerance(node, "adjoint_atol", node.adjoint_atol, y0),
            adjoint_method=node.adjoint_method,
            adjoint_options=_solver_options(node.adjoint_options, t),
            adjoint_params=leaves,
        )
    if node.event_fn is None:
        return solve(f, y0, t, **kwargs)
    return tdq.odeint_event(
        f,
        y0,
        t[0],
        event_fn=node.event_fn,
        reverse_time=bool(t[1] < t[0]),
        odeint_interface=solve,
        **kwargs,
    )
