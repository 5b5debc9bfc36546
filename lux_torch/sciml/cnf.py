"""Continuous normalizing flows (FFJORD): :class:`CNF` and its dynamics :class:`CNFDynamics`.

A continuous normalizing flow (Chen et al. 2018; FFJORD, Grathwohl et al. 2019) moves a
standard normal base density at ``t0`` to the data at ``t1`` along ``dz/dt = f(t, z)``,
where ``f`` is any lux_torch layer. By the instantaneous change of variables the
log-density along a trajectory changes as ``d log p(z(t))/dt = -tr(df/dz)``, so solving the
joint state ``(z, logp_diff)`` backwards from a data point ``x = z(t1)``
(``logp_diff(t1) = 0``) to ``t0`` gives the exact log-likelihood::

    log p(x) = log N(z(t0); 0, I) - logp_diff(t0)

The solve is a :class:`lux_torch.sciml.ode.NeuralODE` over the joint state (its solver
options, adjoint method and statistics apply unchanged)::

    import torch, lux_torch as lux
    from lux_torch.sciml.cnf import CNF

    field = lux.Chain(lux.Linear(2, 32, activation=torch.tanh), lux.Linear(32, 2))
    cnf = CNF(field, t=(0.0, 1.0), method="rk4", options={"step_size": 0.1})
    ps, st = lux.setup(0, cnf)
    (logp, z0), st = cnf(x, ps, st)            # log p(x): (batch,); z(t0): (batch, d)
    (samples, logp_s), st = cnf.sample(key, (512, 2), ps, st)   # base -> data

Traces
------
``trace="exact"`` computes ``tr(df/dz)`` of every sample exactly from one evaluation of
``f`` on the batch and ``d`` vector-Jacobian products (``torch.func.vjp``, vmapped over the
basis vectors): for small ``d``. ``trace="hutchinson"`` is FFJORD's unbiased estimator
``eps^T (df/dz) eps`` with one vector-Jacobian product, the probe ``eps`` (Rademacher or
standard normal, ``probe=``) drawn from ``st["key"]`` once per call and held fixed over the
whole solve; the key advances with every call and the same key gives the same estimate.
Both assume, as every normalizing flow does, that ``f`` acts on each sample independently
(no mixing across the batch, e.g. no batch statistics). ``cnf.with_trace("exact")`` is the
same flow with the other trace and the same ``ps`` (train with Hutchinson's, evaluate
densities exactly).

torch.func, torch.compile, vmap
-------------------------------
Whatever the :class:`NeuralODE` allows: ``torch.func`` differentiation with the fixed-grid
solvers (``rk4``, ...) without adjoint, ``torch.autograd`` always (``lux.train_step``
picks the right one); the solve runs eagerly under ``torch.compile`` (``fullgraph=True``
fails with a clear error) and cannot be vmapped (batch the samples instead).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import torch

from .. import random as lrandom
from .. import tree as ltree
from ..core import Layer, describe_value, replace_fields
from ..display import short_repr
from ..layers.containers import as_layer
from ._common import split_options
from .ode import NeuralODE

__all__ = ["CNF", "CNFDynamics", "standard_normal_logp"]

Params = dict[str, Any]
State = dict[str, Any]

_TRACES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")
# NeuralODE settings that the CNF fixes itself (the joint state, its times, its output)
_OWN_SETTINGS = ("t", "time_dependent", "save_at", "augment", "event_fn", "regularize")


def standard_normal_logp(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` of every row of ``z`` (shape ``(batch, d)`` -> ``(batch,)``)."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class CNFDynamics(Layer):
    """``(t, (z, logp_diff)) -> (f(t, z), -tr(df/dz))``: the joint field of a CNF.

    The vector field of the :class:`~lux_torch.sciml.ode.NeuralODE` inside :class:`CNF`;
    usable on its own with ``NeuralODE(CNFDynamics(field), t, time_dependent=True)``.

    Arguments:
        field: the layer computing ``dz/dt`` from ``z`` (or from ``(t, z)`` with
            ``time_dependent=True``); ``z`` has shape ``(batch, d)`` and so must its output.
        trace: ``"exact"`` (``d`` vector-Jacobian products) or ``"hutchinson"``
            (``eps^T (df/dz) eps`` with the probe ``st["probe"]``).
        time_dependent: call ``field`` with ``(t, z)`` (``t`` a 0-dim tensor) instead of ``z``.

    Input:
        ``(t, (z, logp_diff))`` with ``z`` of shape ``(batch, d)`` and ``logp_diff`` of shape
        ``(batch,)`` (not used: the field does not depend on it).

    Returns:
        ``(dz/dt, -trace)`` of shapes ``(batch, d)`` and ``(batch,)``, and the new state.

    **Parameters**
        - ``field``: the field's parameters.

    **States**
        - ``field``: the field's state, threaded through the evaluations.
        - ``probe`` (given by the caller with ``trace="hutchinson"``, returned unchanged):
          Hutchinson's probe, shape ``(batch, d)``, fixed over one solve.
    """

    field: Layer
    trace: str = "exact"
    time_dependent: bool = False

    def __post_init__(self) -> None:
        if self.trace not in _TRACES:
            raise ValueError(f"CNFDynamics: trace must be one of {_TRACES}, got {self.trace!r}")
        if not isinstance(self.time_dependent, bool):
            raise TypeError(
                f"CNFDynamics: time_dependent must be a bool, got {self.time_dependent!r}"
            )
        self._set_fields(field=as_layer("CNFDynamics", "field", self.field))

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        t, (z, _) = x
        f_st = st["field"]

        def f(z: torch.Tensor) -> tuple[torch.Tensor, State]:
            dz, new_st = self.field((t, z) if self.time_dependent else z, ps["field"], f_st)
            if not isinstance(dz, torch.Tensor) or dz.shape != z.shape:
                got = tuple(dz.shape) if isinstance(dz, torch.Tensor) else type(dz).__name__
                raise ValueError(
                    f"{short_repr(self)}: the field {short_repr(self.field)} returned {got} for "
                    f"z of shape {tuple(z.shape)}; dz/dt must have z's shape (batch, d)"
                )
            return dz, new_st

        # torch types vjp's return as a pair; with has_aux it is (out, vjp_fn, aux)
        dz, vjp_fn, new_f_st = torch.func.vjp(f, z, has_aux=True)  # type: ignore[misc]
        new_st: State = {"field": new_f_st}
        if self.trace == "exact":
            d = z.shape[-1]
            basis = torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, *z.shape)
            (rows,) = torch.func.vmap(vjp_fn)(basis)  # rows[i, b] = e_i^T J_b
            trace = rows.diagonal(dim1=0, dim2=-1).sum(-1)
        else:
            probe = st.get("probe")
            if not isinstance(probe, torch.Tensor) or probe.shape != z.shape:
                raise ValueError(
                    f"{short_repr(self)}: trace='hutchinson' needs st['probe'], a tensor of z's "
                    f"shape {tuple(z.shape)} (CNF draws it from st['key'] for every call)"
                )
            (eps_jac,) = vjp_fn(probe)
            trace = (eps_jac * probe).sum(-1)
            new_st["probe"] = probe
        return (dz, -trace), new_st

    def describe_input_error(self, x: Any) -> str | None:
        return "expected (t, (z, logp_diff)) with z of shape (batch, d)"


class CNF(Layer):
    """A continuous normalizing flow (FFJORD) with a standard normal base density.

    Arguments:
        vector_field: the layer computing ``dz/dt`` from ``z`` of shape ``(batch, d)`` (or
            from ``(t, z)`` with ``time_dependent=True``); a plain callable is wrapped in
            :class:`~lux_torch.WrappedFunction`. It must act on each sample independently.
        t: ``(t0, t1)``, ``t0 < t1``: the base density lives at ``t0``, the data at ``t1``.
        trace: ``"exact"`` (default; ``d`` vector-Jacobian products per evaluation: small
            ``d``) or ``"hutchinson"`` (FFJORD's stochastic estimator, one product).
        probe: Hutchinson's probe distribution, ``"rademacher"`` (default) or
            ``"gaussian"``; only with ``trace="hutchinson"``.
        time_dependent: call the field with ``(t, z)`` (``t`` a 0-dim tensor) instead of ``z``.
        **solver: settings of the :class:`~lux_torch.sciml.ode.NeuralODE` that solves the
            joint state (``method``, ``rtol``, ``atol``, ``options``, ``adjoint``,
            ``adjoint_rtol``, ...; default ``dopri5`` with torchdiffeq's tolerances). Its
            ``t``, ``time_dependent``, ``save_at``, ``augment``, ``event_fn`` and
            ``regularize`` are the CNF's own and cannot be given.

    Attributes:
        ode: the ``NeuralODE(CNFDynamics(vector_field, trace, time_dependent), t=(t1, t0),
            time_dependent=True, save_at="last", **solver)`` that computes the density (its
            child: ``ps["ode"]``, ``st["ode"]``).

    Input:
        ``x``: data of shape ``(batch, d)``, floating point; or ``(x, {"t": t})`` with
        ``t`` a tensor ``(t0, t1)`` for this call instead of the configured times (the
        call-options form of :class:`~lux_torch.sciml.ode.NeuralODE`, to which it is
        passed as data: gradients flow to ``t``, and a new ``t`` needs no rebuild).

    Returns:
        ``(logp, z0)``: ``logp`` of shape ``(batch,)`` is ``log p(x)`` under the flow (an
        unbiased estimate with ``trace="hutchinson"``), ``z0`` of shape ``(batch, d)`` is
        ``z(t0)``, the base point of ``x``; and the new state.

    Sampling and transforming (see :meth:`sample`, :meth:`transform`):
        ``cnf.sample(key, (n, d), ps, st)`` draws ``n`` base points from ``key`` and maps
        them to the data; ``cnf.transform(z0, ps, st)`` maps given base points. Both solve
        ``t0 -> t1`` and return ``((x, logp), st)`` with ``logp = log p(x)``. Mapping the
        result back with the call recovers ``z0`` (up to the solver's tolerance).

    **Parameters**
        - ``ode``: ``{"vector_field": {"field": <vector_field's parameters>}}``.

    **States**
        - ``ode``: the NeuralODE's state: ``{"vector_field": {"field": <vector_field's
          state>}, "stats": {...}}``; ``st["ode"]["stats"]`` holds the solver statistics
          of the latest call (``nfe``, ``nfe_adjoint``, ``steps_accepted``,
          ``steps_rejected``; see :mod:`lux_torch.sciml.ode`).
        - ``key`` (``trace="hutchinson"`` only): the key of the probe, advanced by every call.

    Raises:
        ValueError, TypeError: bad configuration (at construction) or input (at the call),
            naming the layer.

    Example::

        cnf = CNF(field, t=(0.0, 1.0), trace="hutchinson", method="rk4",
                  options={"step_size": 0.1})
        ps, st = lux.setup(0, cnf)
        (logp, z0), st = cnf(x, ps, st)
        loss = -logp.mean()
    """

    ode: NeuralODE
    probe: str | None

    def __init__(
        self,
        vector_field: Any,
        t: Any = (0.0, 1.0),
        *,
        trace: str = "exact",
        probe: str | None = None,
        time_dependent: bool = False,
        **solver: Any,
    ) -> None:
        owner = "CNF"
        t0, t1 = _check_t(owner, t)
        if trace not in _TRACES:
            raise ValueError(f"{owner}: trace must be one of {_TRACES}, got {trace!r}")
        probe = _check_probe(owner, trace, probe)
        fixed = [name for name in _OWN_SETTINGS if name in solver]
        if fixed:
            raise ValueError(
                f"{owner}: {', '.join(fixed)} cannot be given: the CNF sets them itself "
                "(its NeuralODE solves the joint state (z, logp_diff) between t0 and t1)"
            )
        dynamics = CNFDynamics(as_layer(owner, "vector_field", vector_field), trace, time_dependent)
        try:
            ode = NeuralODE(dynamics, (t1, t0), time_dependent=True, save_at="last", **solver)
        except TypeError as err:
            raise type(err)(f"{owner}: {err}") from err
        except ValueError as err:
            raise ValueError(f"{owner}: {err}") from err
        self._set_fields(ode=ode, probe=probe)

    # -- configuration
    @property
    def vector_field(self) -> Layer:
        """The layer computing ``dz/dt``."""
        dynamics: CNFDynamics = self.ode.vector_field  # type: ignore[assignment]
        return dynamics.field

    @property
    def trace(self) -> str:
        return self.ode.vector_field.trace  # type: ignore[attr-defined,no-any-return]

    @property
    def t(self) -> tuple[float, float]:
        """``(t0, t1)``."""
        t = cast(tuple[float, ...], self.ode.t)  # normalised by NeuralODE's __post_init__
        return t[-1], t[0]

    def with_trace(self, trace: str, probe: str | None = None) -> CNF:
        """This CNF with another trace (and probe): same vector field, solver and ``ps``.

        E.g. train with ``"hutchinson"`` and evaluate densities with
        ``cnf.with_trace("exact")``. The state is shared too, except ``st["key"]``, which
        only the Hutchinson trace has (an exact CNF ignores one it is given).
        """
        dynamics = dataclasses.replace(self.ode.vector_field, trace=trace)
        ode = replace_fields(self.ode, vector_field=dynamics)
        probe = _check_probe(short_repr(self), trace, probe)
        return replace_fields(self, ode=ode, probe=probe)  # type: ignore[return-value]

    def init_state(self, key: torch.Tensor) -> State:
        st = super().init_state(key)
        if self.trace == "hutchinson":
            st["key"] = key.clone()
        return st

    # -- the call: log-density
    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        x, t = self._split_options(x, "x")
        (z0, logp_diff), new_st = self._solve(x, None if t is None else t.flip(0), ps, st)
        return (standard_normal_logp(z0) - logp_diff, z0), new_st

    # -- sampling
    def transform(
        self, z0: Any, ps: Params, st: State
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], State]:
        """Map base points ``z0`` (``(batch, d)``) at ``t0`` to the data at ``t1``.

        ``z0`` may also be ``(z0, {"t": t})``, as the call's input.

        Returns:
            ``((x, logp), st)``: ``x`` of shape ``(batch, d)`` and ``logp = log p(x)`` of
            shape ``(batch,)`` (``log N(z0) + logp_diff(t1)``, an estimate with
            ``trace="hutchinson"``), and the new state.
        """
        z0, t = self._split_options(z0, "z0")
        if t is None:  # t0 -> t1: the configured times, forward (the ode holds them reversed)
            t = torch.tensor(self.t, dtype=z0.dtype, device=z0.device)
        (x, logp_diff), new_st = self._solve(z0, t, ps, st)
        return (x, standard_normal_logp(z0) + logp_diff), new_st

    def sample(
        self,
        key: torch.Tensor,
        shape: tuple[int, int],
        ps: Params,
        st: State,
        *,
        dtype: torch.dtype | None = None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], State]:
        """Draw ``shape = (n, d)`` base points from ``key`` and :meth:`transform` them.

        Arguments:
            key: a :mod:`lux_torch.random` key (not ``st["key"]``, which stays the probe's).
            shape: ``(n, d)``.
            dtype: of the samples (default: that of the first floating parameter, else
                float32). They are drawn on ``key``'s device.

        Returns:
            ``((x, logp), st)`` as :meth:`transform`.
        """
        if (
            not isinstance(shape, tuple)
            or len(shape) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        ):
            raise ValueError(
                f"{short_repr(self)}.sample: shape must be (n, d) with positive ints, got {shape!r}"
            )
        if dtype is None:
            floats = [p for p in ltree.leaves(ps) if p.is_floating_point()]
            dtype = floats[0].dtype if floats else torch.float32
        z0 = lrandom.normal(key, shape, dtype=dtype, device=key.device)
        return self.transform(z0, ps, st)

    # -- internals
    def _solve(
        self, z: torch.Tensor, t: torch.Tensor | None, ps: Params, st: State
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], State]:
        """Solve the joint state ``(z, 0)`` over ``t`` (default: the ode's ``(t1, t0)``);
        draw and strip the probe."""
        ode_st = st["ode"]
        new_st: State = {}
        if self.trace == "hutchinson":
            new_st["key"], key = lrandom.split(st["key"])
            ode_st = {
                **ode_st,
                "vector_field": {**ode_st["vector_field"], "probe": self._probe(key, z)},
            }
        y0 = (z, z.new_zeros(z.shape[0]))
        x = y0 if t is None else (y0, {"t": t})  # times as data: gradients reach t
        (z_end, logp_diff), ode_st = self.ode(x, ps["ode"], ode_st)
        dynamics_st = {k: v for k, v in ode_st["vector_field"].items() if k != "probe"}
        return (z_end, logp_diff), {"ode": {**ode_st, "vector_field": dynamics_st}, **new_st}

    def _probe(self, key: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.probe == "gaussian":
            return lrandom.normal(key, z.shape, dtype=z.dtype, device=z.device)
        signs = lrandom.bernoulli(key, 0.5, z.shape, device=z.device)
        return torch.where(signs, 1.0, -1.0).to(z.dtype)

    def _split_options(self, x: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` or ``(x, {"t": t})``: the checked batch and the given times ``(t0, t1)``
        (``None``: the configured ones)."""
        x, options = split_options(self, x, ("t",), name)
        t = options.get("t")
        if t is None:
            return self._check_batch(x, name), None
        if not isinstance(t, torch.Tensor) or t.shape != (2,):
            raise ValueError(
                f"{short_repr(self)}: the call option t must be a tensor (t0, t1) of shape (2,), "
                f"got {describe_value(t)}"
            )
        _check_t(short_repr(self), t)
        batch = self._check_batch(x, name)
        return batch, t.to(dtype=batch.dtype, device=batch.device)

    def _check_batch(self, x: Any, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2:
            raise TypeError(
                f"{short_repr(self)}: {name} must be a floating-point tensor of shape "
                f"(batch, d), got {describe_value(x)}"
            )
        return x

    # -- display
    def extra_repr(self) -> str:
        t0, t1 = self.t
        parts = [f"t={t0:g} => {t1:g}", f"trace={self.trace!r}"]
        if self.probe not in (None, "rademacher"):
            parts.append(f"probe={self.probe!r}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], dict):
            x = x[0]
        if isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point():
            return None
        return f"expected x of shape (batch, d) or (x, {{'t': t}}), got {describe_value(x)}"


def _check_probe(owner: str, trace: str, probe: str | None) -> str | None:
    """The probe for ``trace`` (Rademacher by default for Hutchinson's, else ``None``)."""
    if trace != "hutchinson":
        if probe is not None:
            raise ValueError(f"{owner}: probe={probe!r} only applies with trace='hutchinson'")
        return None
    probe = "rademacher" if probe is None else probe
    if probe not in _PROBES:
        raise ValueError(f"{owner}: probe must be one of {_PROBES}, got {probe!r}")
    return probe


def _check_t(owner: str, t: Any) -> tuple[float, float]:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().tolist()
    if (
        not isinstance(t, (tuple, list))
        or len(t) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in t)
    ):
        raise ValueError(f"{owner}: t must be a pair of numbers (t0, t1), got {t!r}")
    t0, t1 = float(t[0]), float(t[1])
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
        raise ValueError(f"{owner}: t = (t0, t1) must be finite with t0 < t1, got {t!r}")
    return t0, t1
