"""Neural SDEs on torchsde: :class:`NeuralSDE`.

A :class:`NeuralSDE` integrates ``dy = f(y) dt + g(y) dW`` (or ``f(t, y)``, ``g(t, y)``) whose
drift ``f`` and diffusion ``g`` are lux_torch layers, with torchsde's solvers::

    import torch, lux_torch as lux
    from lux_torch.sciml.sde import NeuralSDE

    drift = lux.Chain(lux.Linear(2, 32, activation=torch.tanh), lux.Linear(32, 2))
    diffusion = lux.Scale(2, activation=torch.sigmoid)    # diagonal noise: g_i(y_i)
    sde = NeuralSDE(drift, diffusion, t=torch.linspace(0.0, 1.0, 11), dt=0.01)
    ps, st = lux.setup(0, sde)
    ys, st = sde(y0, ps, st)            # y0: (batch, d); ys: (11, batch, d), like sdeint

torchsde is the optional extra ``sde`` (``pip install lux-torch[sde]``); it is imported on
first use, so ``import lux_torch.sciml.sde`` works without it.

Randomness
----------
The Brownian motion is a pure function of ``st["key"]``: every call splits the key,
``new_key, bm_key = lux.random.split(st["key"])``, returns ``new_key`` in the new state and
drives the solve with ::

    torchsde.BrownianInterval(t0=t[0], t1=t[-1], size=(batch, m), dtype=y0.dtype,
                              device=y0.device, entropy=entropy,
                              levy_area_approximation=...)

where ``entropy = (bm_key[0] << 32) | bm_key[1]`` (the key's two 32-bit words as one 64-bit
integer; torchsde seeds numpy's ``SeedSequence`` and local ``torch.Generator`` s from it,
never a global RNG), ``m`` the number of Brownian channels (``d`` for diagonal noise, 1 for
scalar noise, ``brownian_size`` otherwise) and the Lévy-area approximation the one the
forward and backward solvers need (``"space-time"`` for ``srk``, ``"foster"`` for
``log_ode``, else ``"none"``, as torchsde chooses). So the same ``(x, ps, st)`` gives the same
path and the same output, the backprop and adjoint solves see the same path, and successive
calls (threading the returned state) draw fresh paths. The path depends on the device too:
torchsde draws it with a ``torch.Generator`` of ``y0``'s device, so one key gives different
paths on CPU and CUDA (unlike :mod:`lux_torch.random`, which is bit-identical across
devices). :meth:`NeuralSDE.brownian_motion` returns a fresh copy of the exact Brownian
object a call with a given state uses, to run torchsde directly on the same path.

Gradients
---------
``adjoint=False`` (default) backpropagates through the solver's operations.
``adjoint=True`` uses :func:`torchsde.sdeint_adjoint` (the stochastic adjoint, Li et al.
2020) with ``adjoint_params`` = the floating-point leaves of ``ps["drift"]`` and
``ps["diffusion"]``, plus any floating leaf of ``st["drift"]``/``st["diffusion"]`` that
requires grad; its backward solve queries the same Brownian object in reverse. torchsde
cannot differentiate with respect to the output times: a ``t`` that requires grad is
refused.

How torchsde composes with torch.func and torch.compile
-------------------------------------------------------
Measured with torchsde 0.2.6 and torch 2.13:

- ``torch.autograd``: every solver, backprop and adjoint.
- ``torch.func.grad``/``vjp``: every solver without ``adjoint`` except ``"milstein"``
  (without ``options={"grad_free": True}``) and, for some noise types, ``"log_ode"``, which
  differentiate the diffusion with ``torch.autograd`` inside each step; ``sdeint_adjoint``
  is a ``torch.autograd.Function`` without ``setup_context``. A layer with ``adjoint=True``
  or one of these two solvers (conservatively, whatever its options) has
  ``requires_autograd == True``, so :func:`lux_torch.train_step` (``ad="auto"``) takes the
  ``torch.autograd`` path, and a ``torch.func`` transform that fails gets an error that
  says why.
- ``torch.func.vmap``: only with ``randomness="same"`` and an unbatched ``st`` (vmap over
  ``ps`` or ``y0``): torchsde draws the path with ``torch.randn`` from seeded generators,
  which ``randomness="error"`` refuses and ``"different"`` would silently replace by other
  draws per member (so the call refuses both). A batched key cannot seed torchsde (it
  needs Python integers): batch the samples in ``y0`` instead, or loop.
- ``torch.compile``: the Brownian interval is a Python tree searched with tensor
  comparisons and seeded with Python integers, so the solve is wrapped in
  :func:`torch.compiler.disable`: ``torch.compile(fullgraph=False)`` runs it eagerly (the
  code around it is compiled), ``fullgraph=True`` fails at once with an error that says
  why. :class:`NeuralSDE` sets ``compile_fullgraph = False``.

Diagonal noise
--------------
With ``noise_type="diagonal"`` torchsde's Itô solvers (``"srk"``, ``"milstein"``) and the Itô
adjoint assume that ``g_i`` depends on ``y_i`` only (their correction terms use the diagonal
of ``dg/dy``): a diffusion that mixes channels (e.g. a ``Linear(d, d)``) converges to another
SDE, silently. So a call with these solvers or the adjoint first checks, at ``y0``, that
``dg/dy`` is diagonal (two vector-Jacobian products with fixed probes) and raises if it is
not. Use an elementwise diffusion (``lux.Scale(d, activation=torch.sigmoid)``, or one small
network per channel), ``noise_type="general"`` or ``method="euler"``. (The check sees
``y0`` only: a diffusion that mixes channels elsewhere in the state space but not at
``y0`` would pass it.)
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn

import torch

from .. import random as lrandom
from .. import tree as ltree
from ..core import Layer, describe_value
from ..display import short_repr
from ..layers._common import check_bool, check_int
from ..layers.containers import as_layer
from ._common import import_extra, never_compiled, split_options

__all__ = ["NeuralSDE"]

Params = dict[str, Any]
State = dict[str, Any]

SDE_TYPES = ("ito", "stratonovich")
NOISE_TYPES = ("diagonal", "general", "scalar", "additive")
# solvers whose diagonal-noise steps use the diagonal of dg/dy (torchsde's correction terms)
_DIAGONAL_DERIVATIVE = frozenset({"milstein", "srk"})
# solvers that differentiate the diffusion inside the step with torch.autograd (Milstein's
# g dg/dy term, log-ODE's dg/dy ga), which torch.func transforms refuse
_AUTOGRAD_SOLVERS = frozenset({"milstein", "log_ode"})
_STATS = ("nfe_drift", "nfe_diffusion", "nfe_adjoint")
# torchsde's Lévy-area approximations, from the least to the most computed
_LEVY = ("none", "space-time", "davie", "foster")

_COMPILE_REASON = (
    "lux_torch.sciml.sde.NeuralSDE: torchsde's Brownian interval is a Python tree searched "
    "with tensor comparisons and seeded with Python integers, which torch.compile cannot "
    "capture in one graph. The SDE solve runs eagerly under torch.compile(fullgraph=False) "
    "and in lux.train_step(compile=True); with fullgraph=True it cannot be compiled"
)

_eager_only = never_compiled(_COMPILE_REASON)


def _torchsde() -> types.ModuleType:
    """The torchsde module, imported on first use (the optional extra ``sde``)."""
    return import_extra("torchsde", "sde", "lux_torch.sciml.sde")


def _solver_class(owner: str, name: str, method: str, sde_type: str, noise_type: str) -> Any:
    """torchsde's solver class for ``method``, checked against the SDE's types."""
    _torchsde()
    from torchsde._core import methods
    from torchsde.settings import METHODS

    known = [m for m in METHODS.all() if m != "adjoint_reversible_heun" or name != "method"]
    if method not in known:
        raise ValueError(
            f"{owner}: {name} must be one of torchsde's solvers {known}, got {method!r}"
        )
    solver = methods.select(method=method, sde_type=sde_type)
    if solver.sde_type != sde_type or noise_type not in solver.noise_types:
        raise ValueError(
            f"{owner}: {name}={method!r} solves {solver.sde_type} SDEs with noise types "
            f"{tuple(solver.noise_types)}, not a {sde_type} SDE with {noise_type} noise"
            + (" (the adjoint SDE of additive noise has general noise)" if name != "method" else "")
        )
    return solver


def _default_method(sde_type: str, noise_type: str, adjoint: bool) -> str:
    """torchsde's default solver (``sdeint``'s, or ``sdeint_adjoint``'s backward one)."""
    if sde_type == "stratonovich":
        return "midpoint"
    if adjoint:
        return "milstein" if noise_type == "diagonal" else "euler"
    return "euler" if noise_type == "general" else "srk"


def _positive(owner: str, name: str, value: Any, *, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a float, got {type(value).__name__}")
    ok = value > 0 if strict else value >= 0
    if not (ok and math.isfinite(value)):
        raise ValueError(
            f"{owner}: {name} must be a finite float {'>' if strict else '>='} 0, got {value!r}"
        )
    return float(value)


def _options(owner: str, name: str, options: Any) -> dict[str, Any] | None:
    """A copy of solver options; keys are strings and values hold no tensors."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"{owner}: {name} must be a dict or None, got {type(options).__name__}")
    for key, value in options.items():
        if not isinstance(key, str) or isinstance(value, torch.Tensor):
            raise TypeError(
                f"{owner}: {name} must map strings to plain values (layers hold no tensors), "
                f"got {key!r}: {type(value).__name__}"
            )
    return dict(options)


def _times(owner: str, t: Any) -> tuple[float, ...]:
    """``t`` as a tuple of at least two strictly increasing finite floats."""
    if isinstance(t, torch.Tensor):
        if t.ndim != 1:
            raise ValueError(f"{owner}: t must be one-dimensional, got shape {tuple(t.shape)}")
        t = t.detach().cpu().tolist()
    if isinstance(t, (str, bytes)) or not isinstance(t, Sequence):
        raise TypeError(f"{owner}: t must be a sequence of floats or a 1-D tensor, got {t!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in t):
        raise TypeError(f"{owner}: t must hold numbers, got {t!r}")
    values = tuple(float(v) for v in t)
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{owner}: t needs at least 2 finite time points, got {values!r}")
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            raise ValueError(
                f"{owner}: t must be strictly increasing (torchsde integrates forward in "
                f"time), but t[{i - 1}] = {values[i - 1]!r} and t[{i}] = {values[i]!r}"
            )
    return values


def _vmap_randomness() -> str | None:
    """The ``randomness`` of an enclosing ``torch.func.vmap`` other than ``"same"``, if any."""
    if torch._C._functorch.peek_interpreter_stack() is None:  # no torch.func transform
        return None
    from torch._functorch.pyfunctorch import VmapInterpreter, retrieve_all_functorch_interpreters

    for interpreter in retrieve_all_functorch_interpreters():
        if isinstance(interpreter, VmapInterpreter) and interpreter.randomness() != "same":
            return str(interpreter.randomness())
    return None


# --------------------------------------------------------------------------- the SDE object


class _Functions:
    """The drift ``f(t, y)`` and diffusion ``g(t, y)`` of one call, for torchsde.

    Threads the layers' states through the evaluations, counts them and checks the shapes
    of what they return. Not a ``torch.nn.Module``: ``sdeint_adjoint`` then insists on
    explicit ``adjoint_params`` (an ``nn.Module`` without ``nn.Parameter`` s would silently
    get no parameter gradients).
    """

    def __init__(self, sde: NeuralSDE, ps: Params, st: State, noise_channels: int) -> None:
        self.sde = sde
        self.sde_type = sde.sde_type
        self.noise_type = sde.noise_type
        self.ps = ps
        self.st_drift, self.st_diffusion = st["drift"], st["diffusion"]
        self.noise_channels = noise_channels
        self.nfe_drift = self.nfe_diffusion = 0
        self.adjoint_nfe: torch.Tensor | None = None  # set once the forward solve is done

    def _input(self, t: torch.Tensor, y: torch.Tensor) -> Any:
        if self.adjoint_nfe is not None:  # the backward pass of sdeint_adjoint
            self.adjoint_nfe.add_(1)
        return (t, y) if self.sde.time_dependent else y

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe_drift += 1
        out, self.st_drift = self.sde.drift(self._input(t, y), self.ps["drift"], self.st_drift)
        if not isinstance(out, torch.Tensor) or out.shape != y.shape:
            self._refuse("drift", out, y, tuple(y.shape), "the state's shape (batch, d)")
        return out

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe_diffusion += 1
        out, self.st_diffusion = self.sde.diffusion(
            self._input(t, y), self.ps["diffusion"], self.st_diffusion
        )
        shape = (*y.shape, self.noise_channels) if self.noise_type != "diagonal" else y.shape
        if not isinstance(out, torch.Tensor) or out.shape != shape:
            m = {"diagonal": "", "scalar": ", 1"}.get(self.noise_type, ", brownian_size")
            what = f"(batch, d{m}) for {self.noise_type} noise"
            self._refuse("diffusion", out, y, tuple(shape), what)
        return out

    def _refuse(
        self, which: str, out: Any, state: torch.Tensor, shape: tuple[int, ...], what: str
    ) -> NoReturn:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{short_repr(self.sde)}: the {which} {short_repr(getattr(self.sde, which))} "
            f"returned {got} for a state of shape {tuple(state.shape)}; it must return "
            f"{shape}, {what}"
        )


# --------------------------------------------------------------------------- NeuralSDE


class NeuralSDE(Layer):
    """Solve ``dy = f(y) dt + g(y) dW`` from ``y(t[0]) = y0``, ``f`` and ``g`` layers.

    The layer's input is the initial state ``y0``; its output is the solution at the times
    ``t``, computed by :func:`torchsde.sdeint` (or :func:`torchsde.sdeint_adjoint`) on a
    Brownian motion drawn from ``st["key"]`` (see the module docstring).

    Arguments:
        drift: the layer computing ``f(y)`` (``(batch, d) -> (batch, d)``), or ``f(t, y)``
            from ``(t, y)`` with ``time_dependent=True``; a plain callable is wrapped in
            :class:`~lux_torch.WrappedFunction`.
        diffusion: the layer computing ``g(y)``: of shape ``(batch, d)`` for
            ``noise_type="diagonal"`` (each channel its own Brownian motion), else
            ``(batch, d, m)`` with ``m = brownian_size`` (``"general"``, ``"additive"``) or
            ``m = 1`` (``"scalar"``). ``"additive"`` promises that ``g`` does not depend on
            ``y`` (solvers exploit it: a ``g`` that does gives wrong results).
        t: the output times, strictly increasing, at least two (a sequence of floats or a
            1-D tensor, stored as floats); ``None``: every call gives them, as
            ``(y0, {"t": t})``.
        sde_type: ``"ito"`` or ``"stratonovich"``.
        noise_type: ``"diagonal"``, ``"general"``, ``"scalar"`` or ``"additive"``.
        brownian_size: ``m``, the number of Brownian channels; required for
            ``"general"``/``"additive"`` noise, not given otherwise.
        method: a torchsde solver compatible with the SDE and noise types (``"euler"``,
            ``"milstein"``, ``"srk"``, ``"midpoint"``, ``"heun"``, ``"euler_heun"``,
            ``"log_ode"``, ``"reversible_heun"``); ``None``: torchsde's default (``"srk"``
            for Itô diagonal/scalar/additive noise, ``"euler"`` for Itô general noise,
            ``"midpoint"`` for Stratonovich).
        dt: the step size (the initial one with ``adaptive=True``).
        adaptive, rtol, atol, dt_min: adaptive stepping and its tolerances, minimum step.
        options: solver options (e.g. ``{"grad_free": True}`` for Milstein).
        adjoint: backpropagate with the stochastic adjoint (``sdeint_adjoint``).
        adjoint_method, adjoint_adaptive, adjoint_rtol, adjoint_atol, adjoint_options:
            settings of the backward solve, only with ``adjoint=True`` (torchsde's defaults:
            ``"milstein"`` for Itô diagonal noise, ``"euler"`` for other Itô noise,
            ``"midpoint"`` for Stratonovich, ``"adjoint_reversible_heun"`` after
            ``"reversible_heun"``; not adaptive; ``1e-5``, ``1e-4``).
        time_dependent: call drift and diffusion with ``(t, y)`` (``t`` a 0-dim tensor)
            instead of ``y``.

    All defaults equal torchsde's.

    Input:
        ``y0`` of shape ``(batch, d)``, floating point; or ``(y0, {"t": t})`` with ``t`` a
        1-D tensor of strictly increasing times that replaces the configured ``t`` for this
        call (it must not require grad: torchsde does not differentiate w.r.t. times).

    Returns:
        ``ys`` of shape ``(len(t), batch, d)`` (``ys[0] == y0``) and the new state.

    **Parameters**
        - ``drift``: the drift's parameters (nested, as in Lux containers).
        - ``diffusion``: the diffusion's parameters.

    **States**
        - ``drift``, ``diffusion``: the layers' states, threaded through the evaluations
          of one solve; the state after the last evaluation is returned.
        - ``key``: ``(2,)`` int64, the key of the Brownian motion, advanced by every call.
        - ``stats``: 0-dim ``int64`` tensors of the call that returned it: ``nfe_drift``,
          ``nfe_diffusion`` (evaluations in the forward solve, including torchsde's one
          shape probe of each at ``t[0]``) and ``nfe_adjoint`` (drift and diffusion
          evaluations of the adjoint's backward solve, written in place into the returned
          tensor while the backward pass runs; ``0`` until then and with ``adjoint=False``).

    Adjoint gradients
        torchsde's ``sdeint_adjoint`` differentiates only the ``adjoint_params`` it is
        given and silently drops those that do not require grad. Here they are every
        floating leaf of ``ps["drift"]``/``ps["diffusion"]`` and every floating leaf of
        ``st["drift"]``/``st["diffusion"]`` that requires grad; a call with gradients
        enabled where some parameter leaves require grad and others do not raises a
        ``ValueError`` naming them. Tensors a layer captures from outside ``ps``/``st``
        get no adjoint gradient: keep every trainable tensor in ``ps``.

    Attributes:
        requires_autograd: ``True`` with ``adjoint`` or a ``"milstein"``/``"log_ode"``
            solver, which ``torch.func`` cannot differentiate (see the module docstring).
        compile_fullgraph: ``False``: the solve runs eagerly.

    Raises:
        ValueError: invalid configuration (unknown or incompatible method, missing
            ``brownian_size``, adjoint settings without ``adjoint=True``, ...); at call
            time, a ``y0`` that is not ``(batch, d)``, times that are not strictly
            increasing or require grad, drift/diffusion outputs of the wrong shape,
            adjoint parameters of which only some require grad.
        ImportError: torchsde is not installed.

    Example::

        drift = lux.Linear(2, 2)
        diffusion = lux.Chain(lux.Linear(2, 4), lux.Reshape((2, 2)))  # (batch, 2, 2)
        sde = NeuralSDE(drift, diffusion, t=[0.0, 0.5, 1.0], noise_type="general",
                        brownian_size=2, method="euler", dt=0.05)
        ps, st = lux.setup(0, sde)
        ys, st = sde(torch.ones(8, 2), ps, st)  # ys.shape == (3, 8, 2)
        bm = sde.brownian_motion(torch.ones(8, 2), st)  # the path the next call will use
    """

    drift: Layer
    diffusion: Layer
    t: tuple[float, ...] | None = None
    _: dataclasses.KW_ONLY
    sde_type: str = "ito"
    noise_type: str = "diagonal"
    brownian_size: int | None = None
    method: str | None = None
    dt: float = 1e-3
    adaptive: bool = False
    rtol: float = 1e-5
    atol: float = 1e-4
    dt_min: float = 1e-5
    options: Mapping[str, Any] | None = None
    adjoint: bool = False
    adjoint_method: str | None = None
    adjoint_adaptive: bool | None = None
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    adjoint_options: Mapping[str, Any] | None = None
    time_dependent: bool = False

    def __post_init__(self) -> None:
        owner = "NeuralSDE"
        if self.sde_type not in SDE_TYPES:
            raise ValueError(f"{owner}: sde_type must be one of {SDE_TYPES}, got {self.sde_type!r}")
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(
                f"{owner}: noise_type must be one of {NOISE_TYPES}, got {self.noise_type!r}"
            )
        if self.noise_type in ("general", "additive"):
            if self.brownian_size is None:
                raise ValueError(
                    f"{owner}: noise_type={self.noise_type!r} needs brownian_size, the number "
                    "m of Brownian channels (the diffusion returns (batch, d, m))"
                )
            check_int(owner, "brownian_size", self.brownian_size, minimum=1)
        elif self.brownian_size is not None:
            raise ValueError(
                f"{owner}: brownian_size only applies to general and additive noise; "
                f"{self.noise_type} noise has {'d' if self.noise_type == 'diagonal' else 1} "
                "Brownian channel(s)"
            )
        for name in ("adaptive", "adjoint", "time_dependent"):
            check_bool(owner, name, getattr(self, name))
        if not self.adjoint:
            given = [
                name
                for name in (
                    "adjoint_method",
                    "adjoint_adaptive",
                    "adjoint_rtol",
                    "adjoint_atol",
                    "adjoint_options",
                )
                if getattr(self, name) is not None
            ]
            if given:
                raise ValueError(f"{owner}: {', '.join(given)} only apply with adjoint=True")
        if self.adjoint_adaptive is not None:
            check_bool(owner, "adjoint_adaptive", self.adjoint_adaptive)
        self._set_fields(
            drift=as_layer(owner, "drift", self.drift),
            diffusion=as_layer(owner, "diffusion", self.diffusion),
            t=None if self.t is None else _times(owner, self.t),
            dt=_positive(owner, "dt", self.dt, strict=True),
            rtol=_positive(owner, "rtol", self.rtol, strict=False),
            atol=_positive(owner, "atol", self.atol, strict=False),
            dt_min=_positive(owner, "dt_min", self.dt_min, strict=True),
            options=_options(owner, "options", self.options),
            adjoint_options=_options(owner, "adjoint_options", self.adjoint_options),
        )
        for name in ("adjoint_rtol", "adjoint_atol"):
            if getattr(self, name) is not None:
                self._set_fields(
                    **{name: _positive(owner, name, getattr(self, name), strict=False)}
                )
        self._levy()  # validates the methods

    # -- configuration
    compile_fullgraph: ClassVar[bool] = False  # the solve runs eagerly (torch.compiler.disable)

    @property
    def requires_autograd(self) -> bool:
        """Whether ``torch.func`` cannot differentiate the solve (see the module docstring)."""
        return self.adjoint or self.solver in _AUTOGRAD_SOLVERS

    @property
    def solver(self) -> str:
        """The forward solver: ``method``, or torchsde's default for the SDE."""
        return self.method or _default_method(self.sde_type, self.noise_type, adjoint=False)

    @property
    def adjoint_solver(self) -> str | None:
        """The backward solver of the adjoint (``None`` without ``adjoint``)."""
        if not self.adjoint:
            return None
        if self.adjoint_method is not None:
            return self.adjoint_method
        if self.solver == "reversible_heun":
            return "adjoint_reversible_heun"
        return _default_method(self.sde_type, self.noise_type, adjoint=True)

    def _levy(self) -> str:
        """The least Lévy-area approximation every solver of a call accepts."""
        owner = "NeuralSDE"
        solvers = [_solver_class(owner, "method", self.solver, self.sde_type, self.noise_type)]
        backward = self.adjoint_solver
        if backward is not None:
            noise = "general" if self.noise_type == "additive" else self.noise_type
            solvers.append(_solver_class(owner, "adjoint_method", backward, self.sde_type, noise))
        # "foster" (the most computed) is accepted by every torchsde solver
        return next(
            (levy for levy in _LEVY if all(levy in s.levy_area_approximations for s in solvers)),
            _LEVY[-1],
        )

    def init_state(self, key: torch.Tensor) -> State:
        st = super().init_state(key)
        st["key"] = key.clone()
        st["stats"] = {name: torch.zeros((), dtype=torch.int64) for name in _STATS}
        return st

    # -- the Brownian motion
    def brownian_motion(self, x: Any, st: State) -> Any:
        """A fresh copy of the ``torchsde.BrownianInterval`` a call ``self(x, ps, st)`` uses.

        Pass it as ``bm=`` to :func:`torchsde.sdeint` (with the same times, method and step
        settings) to solve on exactly the same path; each call of :class:`NeuralSDE`
        builds its own copy, since a Brownian interval caches the points it was asked for.

        Arguments:
            x: the call's input, ``y0`` or ``(y0, {"t": t})`` (only shapes, dtype, device
                and times are read).
            st: the state the call gets (its ``key`` decides the path).
        """
        y0, t = self._inputs(x)
        return self._brownian(lrandom.split(st["key"])[1], y0, t)

    def _brownian(self, key: torch.Tensor, y0: torch.Tensor, t: torch.Tensor) -> Any:
        try:
            high, low = (int(w) for w in key.tolist())
        except RuntimeError as err:  # a BatchedTensor (vmap), a FakeTensor (tracing)
            raise RuntimeError(
                f"{short_repr(self)} cannot run under torch.func.vmap or tracing: the Brownian "
                "motion is seeded with a Python integer derived from st['key']. Batch the "
                f"samples in y0 instead (or loop). ({type(err).__name__}: {err})"
            ) from err
        batch, d = y0.shape
        m = {"diagonal": d, "scalar": 1}.get(self.noise_type, self.brownian_size)
        return _torchsde().BrownianInterval(
            t0=float(t[0]),
            t1=float(t[-1]),
            size=(batch, m),
            dtype=y0.dtype,
            device=y0.device,
            entropy=(high << 32) | low,
            levy_area_approximation=self._levy(),
        )

    # -- the call
    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return self._solve(x, ps, st)

    def _inputs(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y0, t)`` from the input, checked; ``t`` in ``y0``'s dtype and device."""
        t: Any = self.t
        x, options = split_options(self, x, ("t",), "y0")
        if "t" in options:
            t = options["t"]
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"{short_repr(self)}: the call option 't' must be a 1-D tensor (tensor "
                    f"options are data), got {type(t).__name__}; configured times go to "
                    "the constructor"
                )
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2:
            raise ValueError(
                f"{short_repr(self)}: y0 must be a floating-point tensor of shape (batch, d) "
                f"(torchsde's layout), got {describe_value(x)}"
            )
        if t is None:
            raise ValueError(
                f"{short_repr(self)}: no output times: give t to the constructor or call "
                "with (y0, {'t': t})"
            )
        if not isinstance(t, torch.Tensor):
            return x, torch.tensor(t, dtype=x.dtype, device=x.device)
        if t.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                f"{short_repr(self)}: the times t require grad, but torchsde cannot "
                "differentiate with respect to them; pass t.detach()"
            )
        if t.ndim != 1 or len(t) < 2 or not bool((t[1:] > t[:-1]).all()):
            raise ValueError(
                f"{short_repr(self)}: t must be a 1-D tensor of at least 2 strictly increasing "
                f"times, got {t.tolist()!r}"
            )
        return x, t.detach().to(dtype=x.dtype, device=x.device)

    @_eager_only
    def _solve(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        """The call, never traced by torch.compile (see ``_COMPILE_REASON``)."""
        randomness = _vmap_randomness()
        if randomness is not None:
            raise RuntimeError(
                f"{short_repr(self)} cannot run under torch.func.vmap(randomness="
                f"{randomness!r}): torchsde draws the Brownian motion with torch.randn from "
                "generators seeded by st['key'], which vmap would refuse ('error') or replace "
                "by other draws for every member ('different'). Use randomness='same' with an "
                "unbatched st (every member then solves on st's path, as a loop would), batch "
                "the samples in y0, or loop"
            )
        y0, t = self._inputs(x)
        if self.noise_type == "diagonal" and (self.adjoint or self.solver in _DIAGONAL_DERIVATIVE):
            self._check_diagonal(y0, t, ps, st)
        new_key, bm_key = lrandom.split(st["key"])
        bm = self._brownian(bm_key, y0, t)
        sde = _Functions(self, ps, st, bm.shape[-1])
        tsde = _torchsde()
        kwargs: dict[str, Any] = {
            "bm": bm,
            "method": self.solver,
            "dt": self.dt,
            "adaptive": self.adaptive,
            "rtol": self.rtol,
            "atol": self.atol,
            "dt_min": self.dt_min,
            "options": self.options,
        }
        if self.adjoint:
            defaults = {"adjoint_adaptive": False, "adjoint_rtol": 1e-5, "adjoint_atol": 1e-4}
            kwargs.update(
                {
                    name: value if value is not None else defaults[name]
                    for name, value in (
                        ("adjoint_adaptive", self.adjoint_adaptive),
                        ("adjoint_rtol", self.adjoint_rtol),
                        ("adjoint_atol", self.adjoint_atol),
                    )
                },
                adjoint_method=self.adjoint_solver,
                adjoint_options=self.adjoint_options,
                adjoint_params=self._adjoint_params(ps, st),
            )
        solve = tsde.sdeint_adjoint if self.adjoint else tsde.sdeint
        try:
            ys = solve(sde, y0, t, **kwargs)
        except RuntimeError as err:
            if "functorch" not in str(err) and "setup_context" not in str(err):
                raise
            why = (
                "sdeint_adjoint is a torch.autograd.Function without setup_context"
                if self.adjoint
                else f"the {self.solver!r} solver differentiates the diffusion with "
                "torch.autograd inside each step"
            )
            raise RuntimeError(
                f"{short_repr(self)} cannot be differentiated with torch.func transforms "
                f"(grad, vjp, jacrev, ...): {why}. Use torch.autograd (lux.train_step and "
                "compute_gradients do with ad='auto' or 'autograd'), or another solver "
                "without adjoint"
            ) from err
        counts = (sde.nfe_drift, sde.nfe_diffusion, 0)
        values = torch.tensor(counts, dtype=torch.int64, device=st["stats"]["nfe_drift"].device)
        stats = dict(zip(_STATS, values.unbind(), strict=True))
        if self.adjoint:
            sde.adjoint_nfe = stats["nfe_adjoint"]
        new_st = {"drift": sde.st_drift, "diffusion": sde.st_diffusion}
        return ys, {**new_st, "key": new_key, "stats": stats}

    def _check_diagonal(self, y0: torch.Tensor, t: torch.Tensor, ps: Params, st: State) -> None:
        """Refuse a diffusion whose ``g_i`` reads other channels than ``y_i`` (at ``y0``).

        Solvers and adjoints that use the diagonal of ``dg/dy`` would converge to another
        SDE, silently. ``dg/dy`` is diagonal iff ``J^T (u * w) == (J^T u) * w`` for all
        ``u, w``: one evaluation and two vector-Jacobian products with fixed probes.
        """

        def diffusion(y: torch.Tensor) -> torch.Tensor:
            x = (t[0].detach(), y) if self.time_dependent else y
            out: torch.Tensor = self.diffusion(x, ps["diffusion"], st["diffusion"])[0]
            return out

        # torch.func.vjp: works in eager mode and inside grad/vjp transforms alike
        g, pullback = torch.func.vjp(diffusion, y0.detach())  # type: ignore[misc]  # torch annotates a 3-tuple (has_aux)
        key_u, key_w = lrandom.split(lrandom.key(0))
        u = lrandom.normal(key_u, g.shape, dtype=g.dtype, device=g.device)
        w = lrandom.normal(key_w, y0.shape, dtype=y0.dtype, device=y0.device)
        ((ju,), (juw,)) = pullback(u), pullback(u * w)
        off = (juw - ju * w).abs().max()
        ratio = (off / ((ju * w).abs().max() + juw.abs().max() + 1e-30)).detach()
        if torch._C._functorch.is_batchedtensor(ratio):
            return  # under vmap no value can reach Python; the check runs in eager calls
        mixing = float(ratio)
        if mixing > 1e-6:
            raise ValueError(
                f"{short_repr(self)}: with noise_type='diagonal' each diffusion output g_i must "
                f"depend on y_i only, but {short_repr(self.diffusion)} mixes channels (relative "
                f"off-diagonal part of dg/dy {mixing:.1e} at y0): the {self.solver!r} solver"
                f"{' and the adjoint' if self.adjoint else ''} use the diagonal of dg/dy and "
                "would converge to another SDE. Use an elementwise diffusion (lux.Scale, one "
                "small network per channel), noise_type='general', or method='euler'"
            )

    def _adjoint_params(self, ps: Params, st: State) -> tuple[torch.Tensor, ...]:
        """The floating leaves of the drift's and diffusion's ``ps``, and those of their
        ``st`` that require grad; refuses parameters of which only some require grad."""
        trees = {"drift": ps["drift"], "diffusion": ps["diffusion"]}
        named = [
            (f"{which}.{path}", leaf)
            for which, tree in trees.items()
            for path, leaf in zip(ltree.paths(tree), ltree.leaves(tree), strict=True)
            if ltree.is_inexact(leaf)
        ]
        flags = [leaf.requires_grad for _, leaf in named]
        if torch.is_grad_enabled() and any(flags) and not all(flags):
            frozen = [name for (name, _), flag in zip(named, flags, strict=True) if not flag]
            raise ValueError(
                f"{short_repr(self)}: with adjoint=True, every parameter of the drift and "
                "diffusion must require grad (or none, for inference), but ps entries "
                f"{', '.join(frozen)} do not: torchsde's sdeint_adjoint would silently give "
                "them no gradient. Make them require grad, or move constants out of ps"
            )
        states = [
            leaf
            for which in ("drift", "diffusion")
            for leaf in ltree.leaves(st[which])
            if ltree.is_inexact(leaf) and leaf.requires_grad
        ]
        return tuple(leaf for _, leaf in named) + tuple(states)

    # -- display
    def extra_repr(self) -> str:
        parts = (
            [] if self.t is None else [f"t={self.t[0]:g} => {self.t[-1]:g} ({len(self.t)} points)"]
        )
        for f in dataclasses.fields(self):
            if f.name in ("drift", "diffusion", "t"):
                continue
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f"{f.name}={dict(value) if isinstance(value, Mapping) else value!r}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], dict):
            x = x[0]
        if isinstance(x, torch.Tensor) and x.ndim == 2:
            return None
        shape = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        return f"expected y0 of shape (batch, d) or (y0, {{'t': t}}), got {shape}"
