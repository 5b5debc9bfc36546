"""Batched fixed-point solvers for implicit layers: ``z* = f(z*)``, one problem per sample.

:func:`solve` finds a fixed point of ``f`` for every sample of a batch with one of three
methods (the solvers of deep equilibrium models):

- ``"fixed_point"``: the iteration ``z <- (1 - damping) z + damping f(z)`` (Banach/Picard;
  ``damping=1`` is plain ``z <- f(z)``).
- ``"anderson"``: Anderson acceleration (Anderson 1965) in the form of Walker & Ni,
  "Anderson acceleration for fixed-point iterations", SIAM J. Numer. Anal. 49(4), 2011
  (their Algorithm AA with ``m`` stored residuals and mixing ``beta``), with the Tikhonov
  term of Bai et al. 2019's implementation (``lam``, here relative to the mean squared
  residual, so that it does not depend on the scale of ``z``).
- ``"broyden"``: limited-memory "good" Broyden's method on ``g(z) = f(z) - z`` as in
  Bai, Kolter & Koltun, "Deep Equilibrium Models", NeurIPS 2019 (inverse-Jacobian
  estimate ``-I + U V^T`` of at most ``m`` rank-one updates, unit step).

Why not torchdeq (0.1.0, evaluated): its solvers write their histories into preallocated
tensors in place (``X[:, k % m] = ...``), which ``torch.func.vmap`` refuses once they
depend on batched tensors, and stop with a Python ``if`` on tensor values (``.max() <
tol``), which neither ``vmap`` nor ``make_fx``/``torch.compile`` can trace; its implicit
gradient is an ``autograd.Function`` without ``setup_context``, which ``torch.func.grad``
refuses. These solvers are written out of place and with masks instead.

Convergence, per sample
-----------------------
The first dimension of ``z`` is the batch (a 0-dim or 1-D ``z`` is one sample). Sample
``i`` has converged when ``||f(z_i) - z_i||_2 <= atol + rtol * ||f(z_i)||_2`` (norms over
its features). From then on it stops changing (``torch.where``), while the others
continue; at most ``max_iter`` evaluations of ``f`` are made. A sample that does not
converge returns its iterate of smallest residual (as torchdeq and Bai et al.'s code do:
Broyden's unit steps, without a line search, can overshoot far from the solution).

- Eagerly, the loop stops as soon as every sample has converged (one host
  synchronisation per iteration).
- Under ``torch.func.vmap``, ``torch.compile`` or ``make_fx`` tracing (and forward-mode
  AD) the loop cannot depend on tensor values, so it always runs ``max_iter`` iterations,
  the converged samples masked: the result is the same as eagerly (the extra iterations
  change nothing), only slower. See :func:`stops_early`.

Nothing here is differentiated: :func:`solve` runs under ``torch.no_grad`` (the implicit
layer decides how gradients flow, see :mod:`lux_torch.sciml.deq`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from .._graph import forward_ad_active, tracing

__all__ = ["SOLVERS", "FixedPointResult", "solve", "stops_early"]

#: The solver names and their options with default values.
SOLVERS: dict[str, dict[str, float]] = {
    "fixed_point": {"damping": 1.0},
    "anderson": {"m": 5, "beta": 1.0, "lam": 1e-4},
    "broyden": {"m": 30},
}

Map = Callable[[torch.Tensor], torch.Tensor]


class FixedPointResult(NamedTuple):
    """What :func:`solve` returns; per-sample tensors have the batch's length ``B``.

    Attributes:
        z: the solution, shaped like ``z0`` (for a sample that did not converge, its
            iterate of smallest residual).
        residual: ``(B,)``, ``||f(z_i) - z_i||_2`` at the returned ``z``.
        converged: ``(B,)`` bool, whether sample ``i`` met the tolerance.
        iterations: ``(B,)`` int64, the evaluations of ``f`` until sample ``i`` converged
            (``max_iter`` if it did not).
    """

    z: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor


def stops_early() -> bool:
    """Whether a solve may stop on convergence here: not while tracing (``torch.compile``,
    ``make_fx``), not under ``torch.func.vmap`` or forward-mode AD, where the loop's trip
    count cannot depend on tensor values."""
    if tracing() or forward_ad_active():
        return False
    if torch._C._functorch.peek_interpreter_stack() is None:
        return True
    return all(
        i.key() not in (TransformType.Vmap, TransformType.Jvp)
        for i in retrieve_all_functorch_interpreters()
    )


def _rows(z: torch.Tensor) -> torch.Tensor:
    """``z`` as ``(B, D)``: the first dimension is the batch (0-/1-D: one sample)."""
    return z.reshape(1, -1) if z.ndim < 2 else z.reshape(z.shape[0], -1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


# ----------------------------------------------------------------------------- methods
# Each method is a pair: ``absorb(memory, z, fz) -> memory`` takes in a new iterate and
# its image, ``propose(memory, z, fz) -> z_next`` gives the next iterate. ``memory`` is a
# dict of (B, ...) tensors, updated out of place (vmap-safe); a Python int may say how
# many entries are stored (static, so tracing unrolls the loop).


def _fixed_point_propose(mem: dict[str, Any], z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    damping = float(mem["damping"])
    return fz if damping == 1.0 else torch.lerp(z, fz, damping)


def _push(history: torch.Tensor | None, row: torch.Tensor, m: int) -> torch.Tensor:
    """Append ``row`` (B, D) to ``history`` (B, n, D), keeping the last ``m`` entries."""
    row = row.unsqueeze(1)
    if history is None:
        return row
    return torch.cat([history[:, 1:] if history.shape[1] >= m else history, row], dim=1)


def _anderson_absorb(mem: dict[str, Any], z: torch.Tensor, fz: torch.Tensor) -> dict[str, Any]:
    m = int(mem["m"])
    return {**mem, "X": _push(mem.get("X"), z, m), "F": _push(mem.get("F"), fz, m)}


def _anderson_propose(mem: dict[str, Any], z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    """Walker & Ni's step: ``alpha = argmin ||G^T alpha||`` s.t. ``sum(alpha) = 1`` over the
    stored residuals ``G = F - X``, then ``z = beta F^T alpha + (1 - beta) X^T alpha``."""
    X: torch.Tensor = mem["X"]  # (B, n, D)
    F: torch.Tensor = mem["F"]
    n = X.shape[1]
    G = F - X
    H = G @ G.transpose(1, 2)  # (B, n, n)
    scale = (G.square().sum((1, 2)) / n).clamp_min(torch.finfo(H.dtype).tiny)  # mean diag(H)
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    H = H + (mem["lam"] * scale)[:, None, None] * eye
    w: torch.Tensor = torch.linalg.solve(H, torch.ones_like(H[:, :, :1]))[..., 0]  # H^-1 1
    alpha = w / w.sum(-1, keepdim=True)
    mixed_f = (alpha.unsqueeze(1) @ F).squeeze(1)
    beta = float(mem["beta"])
    if beta == 1.0:
        return mixed_f
    return torch.lerp((alpha.unsqueeze(1) @ X).squeeze(1), mixed_f, beta)


def _inv_jac(mem: dict[str, Any], v: torch.Tensor) -> torch.Tensor:
    """``(-I + U V^T) v`` for v of shape (B, D)."""
    if "U" not in mem:
        return -v
    U: torch.Tensor = mem["U"]
    V: torch.Tensor = mem["V"]
    return -v + (U.transpose(1, 2) @ (V @ v.unsqueeze(-1))).squeeze(-1)


def _inv_jac_t(mem: dict[str, Any], v: torch.Tensor) -> torch.Tensor:
    """``v^T (-I + U V^T)`` as (B, D)."""
    if "U" not in mem:
        return -v
    U: torch.Tensor = mem["U"]
    V: torch.Tensor = mem["V"]
    return -v + ((v.unsqueeze(1) @ U.transpose(1, 2)) @ V).squeeze(1)


def _broyden_absorb(mem: dict[str, Any], z: torch.Tensor, fz: torch.Tensor) -> dict[str, Any]:
    """The good Broyden update of the inverse Jacobian estimate ``J^-1 ~ -I + U V^T`` of
    ``g(z) = f(z) - z`` from the step ``dz`` and ``dg`` (Bai et al. 2019, Sherman-Morrison)."""
    g = fz - z
    if "z" not in mem:
        return {**mem, "z": z, "g": g}
    dz, dg = z - mem["z"], g - mem["g"]
    v = _inv_jac_t(mem, dz)
    denom = _dot(v, dg)
    ok = denom.abs() > torch.finfo(denom.dtype).tiny ** 0.5
    u = (dz - _inv_jac(mem, dg)) / torch.where(ok, denom, 1.0).unsqueeze(-1)
    u = torch.where(ok.unsqueeze(-1), u, 0.0)
    m = int(mem["m"])
    stored = mem.get("U")
    return {
        **mem,
        "z": z,
        "g": g,
        "U": _push(stored, u, m),  # rows u_i: (B, n, D)
        "V": _push(mem.get("V"), v, m),
    }


def _broyden_propose(mem: dict[str, Any], z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    return z - _inv_jac(mem, fz - z)  # the Newton step with the estimated inverse Jacobian


def _no_memory(mem: dict[str, Any], z: torch.Tensor, fz: torch.Tensor) -> dict[str, Any]:
    return mem


_METHODS = {
    "fixed_point": (_no_memory, _fixed_point_propose),
    "anderson": (_anderson_absorb, _anderson_propose),
    "broyden": (_broyden_absorb, _broyden_propose),
}


def solver_options(owner: str, solver: str, options: Mapping[str, Any] | None) -> dict[str, float]:
    """The full options of ``solver`` (defaults filled in), validated; errors name ``owner``."""
    if solver not in SOLVERS:
        raise ValueError(f"{owner}: solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    given = dict(options or {})
    unknown = sorted(set(given) - set(SOLVERS[solver]))
    if unknown:
        raise ValueError(
            f"{owner}: unknown option(s) {unknown} for solver {solver!r}; it takes "
            f"{sorted(SOLVERS[solver])}"
        )
    out = {**SOLVERS[solver], **given}
    for name, value in out.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}: solver option {name!r} must be a number, got {value!r}")
    if "m" in out and (int(out["m"]) != out["m"] or out["m"] < 1):
        raise ValueError(f"{owner}: solver option 'm' must be an int >= 1, got {out['m']!r}")
    for name in ("damping", "beta"):
        if name in out and not 0.0 < out[name] <= 1.0:
            raise ValueError(f"{owner}: solver option {name!r} must be in (0, 1], got {out[name]}")
    if out.get("lam", 0.0) < 0:
        raise ValueError(f"{owner}: solver option 'lam' must be >= 0, got {out['lam']}")
    return {k: float(v) if k != "m" else int(v) for k, v in out.items()}


def solve(
    f: Map,
    z0: torch.Tensor,
    *,
    solver: str = "anderson",
    max_iter: int = 50,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    options: Mapping[str, Any] | None = None,
    early_stop: bool | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> FixedPointResult:
    """Find ``z`` with ``f(z) = z`` for every sample, starting from ``z0``.

    Arguments:
        f: maps a tensor of ``z0``'s shape to one of the same shape; sample ``i`` of the
            output may depend only on sample ``i`` of the input (the first dimension).
        z0: the initial guess; its first dimension is the batch (0-/1-D: one sample).
        solver: ``"fixed_point"``, ``"anderson"`` or ``"broyden"`` (module docstring).
        max_iter: the most evaluations of ``f``.
        atol, rtol: sample ``i`` converged when ``||f(z_i) - z_i|| <= atol + rtol ||f(z_i)||``.
        options: the solver's options (see :data:`SOLVERS`; defaults filled in):
            ``damping`` (fixed_point), ``m``, ``beta``, ``lam`` (anderson), ``m`` (broyden).
        early_stop: stop once all samples converged; default :func:`stops_early`.
        callback: called as ``callback(k, residual)`` after the ``k``-th evaluation of
            ``f`` with the ``(B,)`` residuals of the current iterates (for plots and
            diagnostics; eager use only: a host read under ``vmap``/``compile`` fails).

    Returns:
        A :class:`FixedPointResult`.
    """
    opts = solver_options("lux_torch.sciml.fixed_point.solve", solver, options)
    absorb, propose = _METHODS[solver]
    early = stops_early() if early_stop is None else early_stop
    shape = z0.shape

    def g(rows: torch.Tensor) -> torch.Tensor:
        out = f(rows.reshape(shape))
        return _rows(out)

    with torch.no_grad():
        z = _rows(z0.detach())
        fz = g(z)
        res, done = _measure(z, fz, atol, rtol)
        iters = torch.ones_like(res, dtype=torch.int64)
        if callback is not None:
            callback(1, res)
        mem = absorb(dict(opts), z, fz)
        best = z
        for k in range(1, max_iter):
            if early and bool(done.all()):
                break
            z_new = propose(mem, z, fz)
            fz_new = g(z_new)
            res_new, done_new = _measure(z_new, fz_new, atol, rtol)
            if callback is not None:
                callback(k + 1, torch.where(done, res, res_new))
            mem = absorb(mem, z_new, fz_new)
            keep = done.unsqueeze(-1)
            z, fz = torch.where(keep, z, z_new), torch.where(keep, fz, fz_new)
            better = ~done & ((res_new < res) | done_new)  # NaN is never better
            best = torch.where(better.unsqueeze(-1), z_new, best)
            res = torch.where(better, res_new, res)
            iters = torch.where(done, iters, k + 1)
            done = done | done_new
    return FixedPointResult(best.reshape(shape), res, done, iters)


def _measure(
    z: torch.Tensor, fz: torch.Tensor, atol: float, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample residual ``||f(z) - z||`` and whether it meets the tolerance. A NaN
    residual never counts as converged."""
    res = torch.linalg.vector_norm(fz - z, dim=-1)
    return res, res <= atol + rtol * torch.linalg.vector_norm(fz, dim=-1)
