"""Hamiltonian neural networks: :class:`HamiltonianNN` (Greydanus, Dzamba & Yosinski, 2019).

A :class:`HamiltonianNN` wraps a layer ``H`` that maps a phase-space state
``x = [q, p]`` (last dimension ``2n``: ``n`` positions, then ``n`` momenta) to one scalar
energy per sample. Its output is Hamilton's vector field

    dx/dt = [dH/dp, -dH/dq],

so ``NeuralODE(HamiltonianNN(H), t)`` integrates a learned conservative system: along
exact trajectories ``dH/dt = dH/dq . dH/dp - dH/dp . dH/dq = 0``, whatever ``H`` learned.
It is DiffEqFlux's ``HamiltonianNN`` (``ps["model"]`` holds ``H``'s parameters, the
first half of the state is ``q``)::

    import torch, lux_torch as lux
    from lux_torch.ode import NeuralODE
    from lux_torch.sciml.hamiltonian import HamiltonianNN

    H = lux.Chain(lux.Linear(2, 64, activation=torch.tanh), lux.Linear(64, 1))
    node = NeuralODE(HamiltonianNN(H), t=torch.linspace(0.0, 5.0, 50))
    ps, st = lux.setup(0, node)
    xs, st = node(x0, ps, st)          # x0: (batch, 2); xs: (50, batch, 2)

How the gradient is taken
-------------------------
``dH/dx`` is :func:`torch.func.grad` of ``sum(H(x))`` with respect to ``x`` (the sum over
samples, as DiffEqFlux differentiates ``sum(H(x))``: every sample's energy depends on its
own state only, so the gradient of the sum is every sample's own gradient). A functorch
gradient, unlike ``torch.autograd.grad(..., create_graph=True)``, needs no
``requires_grad`` input and composes with everything around it; measured with torch
2.13 and torchdiffeq 0.2.5 (tested):

- ``torch.autograd`` through the solve (``NeuralODE(..., adjoint=False)``): the field is
  differentiable with respect to ``x`` and ``ps`` (second derivatives of ``H``).
- ``NeuralODE(..., adjoint=True)``: torchdiffeq's backward solve evaluates the field under
  ``enable_grad`` and calls ``torch.autograd.grad`` on it: works, and agrees with backprop.
- ``torch.func.grad``/``vjp``/``jacrev``/``vmap`` of the layer itself, and
  ``torch.func.grad`` through a fixed-grid ``NeuralODE`` solve (``rk4``, ...).
- ``torch.no_grad``: still computes the field (functorch ignores an outer ``no_grad``),
  so inference and plotting need no special care.
- ``torch.compile(fullgraph=True)``: the field compiles in one graph.

With the default ``ad="func"``, a call outside every torch.func transform and outside
``torch.compile`` (plain eager code, ``torch.autograd`` training, the adjoint's backward)
takes the same gradient with ``torch.autograd.grad(create_graph=True)``, the cheaper of the
two there (same values; about the torch.nn reference's time); under transforms and
compilation it takes ``torch.func.grad``, which composes with them.

``ad="autograd"`` always takes ``dH/dx`` with ``torch.autograd.grad(create_graph=True)``,
as plain PyTorch Hamiltonian networks do (functorch's tensor wrappers cost as much as the
maths of a small MLP: with ``torch.func.grad`` in eager mode one evaluation took 350 µs
against the torch.nn reference's 180 µs; with the dispatch above, ``benchmarks/hamiltonian.py``,
2-64-64-1 MLP, 32 states, one thread, measures 1.10x the reference for one evaluation and
1.03x for an ``rk4`` solve and its backward, for both settings). It works with backprop and
the adjoint, but not under ``torch.func`` transforms (a clear error says so) nor inside
one ``torch.compile`` graph; the layer then sets ``requires_autograd`` and
``compile_fullgraph = False`` so that :func:`lux_torch.train_step` takes the autograd
path.

``H`` must treat samples independently (no ``BatchNorm`` in training mode, no attention
across the batch): a layer mixing samples would make the gradient of the sum differ from
the per-sample gradients, which no shape check can detect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from .. import tree as ltree
from ..core import Layer
from ..display import short_repr
from ..layers.containers import as_layer

__all__ = ["HamiltonianNN"]

_AD = ("func", "autograd")

Params = dict[str, Any]
State = dict[str, Any]


def _plain_eager() -> bool:
    """No torch.func transform is active and nothing is being compiled: there
    ``torch.autograd.grad`` gives ``torch.func.grad``'s values at about half the cost."""
    return torch._C._functorch.maybe_current_level() is None and not torch.compiler.is_compiling()


class HamiltonianNN(Layer):
    """Hamilton's vector field ``[dH/dp, -dH/dq]`` of a learned energy ``H(q, p)``.

    Arguments:
        model: the Hamiltonian ``H``: a layer mapping ``x`` of shape ``(*, 2n)`` to one
            energy per sample, shape ``(*,)`` or ``(*, 1)``. A plain function is wrapped in
            :class:`lux_torch.WrappedFunction`.

        ad: how ``dH/dx`` is taken: ``"func"`` (default), :func:`torch.func.grad`, which
            composes with every transform; or ``"autograd"``,
            ``torch.autograd.grad(create_graph=True)`` everywhere (``"func"`` takes it too
            in plain eager calls, where it is cheaper) but not
            usable under ``torch.func`` transforms nor in one ``torch.compile`` graph (it
            sets ``requires_autograd``, so :func:`lux_torch.train_step` takes the autograd
            path). See the module docstring.

    Input:
        ``x`` of shape ``(*, 2n)``, ``n >= 1``: positions ``q = x[..., :n]`` and momenta
        ``p = x[..., n:]``, floating point.

    Returns:
        ``(dx/dt, st)`` with ``dx/dt = cat([dH/dp, -dH/dq], -1)`` of ``x``'s shape.

    **Parameters**
        - ``model``: ``H``'s parameters.

    **States**
        - ``model``: ``H``'s state (returned updated by the evaluation of ``H``).

    Raises:
        ValueError: ``x``'s last dimension is odd or 0, or ``H`` does not return one value
            per sample.
        TypeError: ``x`` is not a floating-point tensor.

    ``H`` must treat the samples independently (see the module docstring).

    Example::

        H = lux.Chain(lux.Linear(2, 32, activation=torch.tanh), lux.Linear(32, 1))
        hnn = HamiltonianNN(H)
        ps, st = lux.setup(0, hnn)
        dx, st = hnn(torch.randn(8, 2), ps, st)   # dx.shape == (8, 2)
    """

    model: Layer
    _: dataclasses.KW_ONLY
    ad: str = "func"

    def __post_init__(self) -> None:
        if self.ad not in _AD:
            raise ValueError(f"HamiltonianNN: ad must be one of {_AD}, got {self.ad!r}")
        self._set_fields(model=as_layer("HamiltonianNN", "model", self.model))

    @property
    def requires_autograd(self) -> bool:
        """``ad="autograd"`` cannot run under ``torch.func`` transforms."""
        return self.ad == "autograd"

    @property
    def compile_fullgraph(self) -> bool:
        """``torch.autograd.grad`` breaks a ``torch.compile`` graph."""
        return self.ad != "autograd"

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        self._check_input(x)
        model, ps_h = self.model, ps["model"]

        def energy(x: torch.Tensor) -> tuple[torch.Tensor, State]:
            h, new_st = model(x, ps_h, st["model"])
            self._check_energy(x, h)
            return h.sum(), new_st

        if self.ad == "autograd" or _plain_eager():
            dh, new_st = self._autograd(energy, x, ps_h)
        else:  # under torch.func transforms or torch.compile
            dh, new_st = torch.func.grad(energy, has_aux=True)(x)
        n = x.shape[-1] // 2
        dh_dq, dh_dp = dh[..., :n], dh[..., n:]
        return torch.cat([dh_dp, -dh_dq], dim=-1), {"model": new_st}

    def _autograd(
        self,
        energy: Callable[[torch.Tensor], tuple[torch.Tensor, State]],
        x: torch.Tensor,
        ps_h: Params,
    ) -> tuple[torch.Tensor, State]:
        """``dH/dx`` by ``torch.autograd.grad``, keeping the graph (``create_graph``) only
        where something outside asks for gradients: like ``torch.func.grad``, a result
        requires grad exactly when ``x`` or ``H``'s parameters do."""
        create_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in ltree.leaves(ps_h))
        )
        try:
            with torch.enable_grad():
                x_in = x if x.requires_grad else x.detach().requires_grad_(True)
                h, new_st = energy(x_in)
                (dh,) = torch.autograd.grad(h, x_in, create_graph=create_graph)
        except RuntimeError as err:
            if "functorch" not in str(err):
                raise
            raise RuntimeError(
                f"{short_repr(self)}: ad='autograd' (torch.autograd.grad) cannot run inside "
                "torch.func transforms (grad, vmap, jacrev, ...); use ad='func'"
            ) from err
        return dh, new_st

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{short_repr(self)}: {self.describe_input_error(x)}")
        if x.ndim == 0 or x.shape[-1] == 0 or x.shape[-1] % 2:
            raise ValueError(f"{short_repr(self)}: {self.describe_input_error(x)}")

    def _check_energy(self, x: torch.Tensor, h: Any) -> None:
        batch = tuple(x.shape[:-1])
        if isinstance(h, torch.Tensor) and tuple(h.shape) in (batch, (*batch, 1)):
            return
        got = f"shape {tuple(h.shape)}" if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(
            f"{short_repr(self)}: the Hamiltonian {short_repr(self.model)} must return one "
            f"energy per sample, of shape {batch} or {(*batch, 1)} for a state of shape "
            f"{tuple(x.shape)}, got {got}. End H with a layer of 1 output "
            "(e.g. lux.Linear(hidden, 1))"
        )

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor):
            return f"expected a state x = [q, p] as a Tensor, got {type(x).__name__}"
        if not x.is_floating_point():
            return f"expected a floating-point state x = [q, p], got a {x.dtype} Tensor"
        if x.ndim == 0 or x.shape[-1] == 0 or x.shape[-1] % 2:
            return (
                "expected a state x = [q, p] whose last dimension 2n (n positions, then n "
                f"momenta) is even and positive, got shape {tuple(x.shape)}"
            )
        return None
