"""A functional L-BFGS: :func:`lbfgs` (a :class:`GradientTransformation` whose update
may run a line search) and the :func:`lbfgs_minimize` driver (see :mod:`lux_torch.optim`).

The algorithm is ``torch.optim.LBFGS``'s (minFunc's): the two-loop recursion over the last
``memory_size`` pairs ``(s, y)`` with the initial Hessian ``(s.y / y.y) I`` of the newest
pair, a pair kept only when ``s.y > 1e-10``, a first step of ``min(1, 1 / |g|_1) * lr``, and
torch's strong-Wolfe line search (bracketing + zoom with cubic interpolation) ported as it
is, so :func:`lbfgs_minimize` reproduces ``torch.optim.LBFGS.step`` iterate for iterate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch

from ..tree import ravel, unflatten
from ._base import GradientTransformation, State, Tree
from ._checks import check_int, check_nonneg, check_positive, checked_leaves

LineSearch = Literal["strong_wolfe", "backtracking"] | None
ValueFn = Callable[[Tree], torch.Tensor]
# ``obj(t) -> (value, flat gradient)`` at ``x + t d``
Objective = Callable[[float], tuple[float, torch.Tensor]]


class LbfgsInfo(NamedTuple):
    """What :func:`lbfgs_minimize` did: the final ``value``, ``grad_max`` (the largest absolute
    gradient entry), ``iterations``, loss/gradient ``evaluations`` and why it ``stopped``
    ("tolerance_grad", "tolerance_change", "max_iter", "max_eval" or "no_descent")."""

    value: float
    grad_max: float
    iterations: int
    evaluations: int
    stopped: str


# ---------------------------------------------------------------------- the recursion


def _flat(tree: Tree) -> torch.Tensor:
    return ravel(tree)[0]


def init_state(x: torch.Tensor, memory_size: int) -> State:
    """The L-BFGS state for a flat parameter vector ``x`` (see :func:`lbfgs`)."""
    n = x.shape[0]
    return {
        "count": torch.zeros((), dtype=torch.int64, device=x.device),
        "s": x.new_zeros(memory_size, n),
        "y": x.new_zeros(memory_size, n),
        "rho": x.new_zeros(memory_size),
        "diag": x.new_ones(()),
        "prev_grad": x.new_zeros(n),
        "prev_step": x.new_zeros(n),
    }


def remember(state: State, g: torch.Tensor) -> State:
    """Add the newest pair ``s = prev_step``, ``y = g - prev_grad`` when ``s.y > 1e-10``
    (oldest first; the oldest dropped when full) and set ``diag = s.y / y.y``."""
    s, y = state["prev_step"], g - state["prev_grad"]
    ys = y.dot(s)
    keep = (ys > 1e-10) & (state["count"] > 0)
    safe = torch.where(keep, ys, torch.ones_like(ys))

    def push(buf: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, torch.cat([buf[1:], new[None]]), buf)

    return {
        **state,
        "s": push(state["s"], s),
        "y": push(state["y"], y),
        "rho": push(state["rho"], 1.0 / safe),
        "diag": torch.where(keep, ys / y.dot(y), state["diag"]),
    }


def direction(state: State, g: torch.Tensor) -> torch.Tensor:
    """``-H g`` by the two-loop recursion (empty slots have ``rho = 0`` and do nothing)."""
    s, y, rho = state["s"], state["y"], state["rho"]
    m = s.shape[0]
    q = -g
    alpha = [q.new_zeros(())] * m
    for i in range(m - 1, -1, -1):
        alpha[i] = s[i].dot(q) * rho[i]
        q = q - alpha[i] * y[i]
    diag: torch.Tensor = state["diag"]
    r = q * diag
    for i in range(m):
        beta = y[i].dot(r) * rho[i]
        r = r + (alpha[i] - beta) * s[i]
    return r


def first_step(state: State, g: torch.Tensor, lr: float) -> torch.Tensor:
    """The initial step length: ``min(1, 1 / |g|_1) * lr`` on the first iteration, else
    ``lr`` (a 0-dim tensor)."""
    scaled = torch.clamp(1.0 / g.abs().sum(), max=1.0) * lr
    return torch.where(state["count"] == 0, scaled, torch.full_like(scaled, lr))


def advance(state: State, g: torch.Tensor, step: torch.Tensor) -> State:
    return {**state, "count": state["count"] + 1, "prev_grad": g, "prev_step": step}


# ---------------------------------------------------------------------- line searches


def _cubic_interpolate(
    x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple[Any, Any] | None = None
) -> Any:
    """The minimiser of the cubic through two points with slopes, clamped to ``bounds``
    (``torch.optim.lbfgs._cubic_interpolate``)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square.sqrt()
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(
    obj: Objective,
    t: Any,
    d: torch.Tensor,
    f: float,
    g: torch.Tensor,
    gtd: torch.Tensor,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, torch.Tensor, Any, int]:
    """A step ``t`` along ``d`` satisfying the strong Wolfe conditions
    ``f(t) <= f + c1 t g.d`` and ``|g(t).d| <= c2 |g.d|``: bracketing then zoom, as
    ``torch.optim.lbfgs._strong_wolfe``. Returns ``(f(t), g(t), t, evaluations)``."""
    d_norm = d.abs().max()
    f_new, g_new = obj(t)
    evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[Any] = []
    bracket_f: list[Any] = []
    bracket_g: list[torch.Tensor] = []
    bracket_gtd: list[Any] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(
            t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step)
        )
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj(t)
        evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(
            bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1]
        )
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj(t)
        evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high] = t, f_new
            bracket_g[high], bracket_gtd[high] = g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low] = t, f_new
            bracket_g[low], bracket_gtd[low] = g_new, gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals


def backtracking(
    obj: Objective,
    t: Any,
    gtd: torch.Tensor,
    f: float,
    c1: float = 1e-4,
    decrease_factor: float = 0.5,
    max_ls: int = 25,
) -> tuple[float, torch.Tensor, Any, int]:
    """The first ``t * decrease_factor**k`` with ``f(t) <= f + c1 t g.d`` (Armijo), at most
    ``max_ls`` evaluations (then the last one). Returns ``(f(t), g(t), t, evaluations)``."""
    f_new, g_new = obj(t)
    evals = 1
    while f_new > f + c1 * t * gtd and evals < max_ls:
        t = t * decrease_factor
        f_new, g_new = obj(t)
        evals += 1
    return f_new, g_new, t, evals


# ---------------------------------------------------------------------- public API


def _refuse_traced(fn: str) -> None:
    if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None:
        raise RuntimeError(
            f"lux_torch.optim.{fn}: the line search takes data-dependent steps and runs "
            "eagerly only, not under torch.compile, vmap or other torch.func transforms; "
            "use line_search=None there"
        )


def _objective(value_fn: ValueFn, x: torch.Tensor, d: torch.Tensor, unravel: Any) -> Objective:
    grad_and_value = torch.func.grad_and_value(lambda v: value_fn(unravel(v)))

    def obj(t: Any) -> tuple[float, torch.Tensor]:
        g, value = grad_and_value(torch.add(x, d, alpha=float(t)))  # torch's _add_grad
        return float(value), g.detach()

    return obj


def _check_config(
    fn: str, lr: float, memory_size: int, line_search: LineSearch, c1: float, c2: float
) -> None:
    check_positive("lr", lr, fn)
    check_int("memory_size", memory_size, fn, 1)
    if line_search not in ("strong_wolfe", "backtracking", None):
        raise ValueError(
            f"lux_torch.optim.{fn}: line_search must be 'strong_wolfe', 'backtracking' or "
            f"None, got {line_search!r}"
        )
    if not 0.0 < c1 < c2 < 1.0:
        raise ValueError(f"lux_torch.optim.{fn}: need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")


def lbfgs(
    lr: float = 1.0,
    memory_size: int = 10,
    line_search: LineSearch = "strong_wolfe",
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch_steps: int = 25,
    tolerance_change: float = 1e-9,
    decrease_factor: float = 0.5,
) -> GradientTransformation:
    """Limited-memory BFGS (Nocedal, 1980; Liu & Nocedal, 1989), ``torch.optim.LBFGS``'s
    algorithm as a pure transformation on a ``ps`` tree or a flat vector (``tree.ravel``).

    One ``update`` is one iteration: with ``g`` the gradient at ``ps`` (flattened),
    ``s_k = x_k - x_{k-1}``, ``y_k = g_k - g_{k-1}`` (kept when ``s.y > 1e-10``; the last
    ``memory_size`` pairs), ``d = -H g`` by the two-loop recursion with ``H_0 = (s.y / y.y)
    I``, the step is ``t d`` with ``t`` from the line search started at ``lr`` (at ``min(1,
    1 / |g|_1) * lr`` on the first iteration), or that start itself when ``line_search``
    is None.

    ``update(grads, state, ps, *, value=None, value_fn=None)``: the line searches evaluate
    ``value_fn(ps) -> loss`` (with its gradient by :func:`torch.func.grad_and_value`) at
    trial points, so they need ``value_fn`` (and ``value``, the loss at ``ps``, or it is
    computed); they run eagerly only and raise under ``torch.compile``/``vmap``. With
    ``line_search=None`` the update is tensor ops only: it compiles (``fullgraph``) and
    vmaps. :func:`lbfgs_minimize` drives the iterations (and reuses the line search's last
    gradient instead of evaluating it again).

    Arguments:
        lr: the step length the line search starts from (> 0).
        memory_size: the number of pairs kept (torch's ``history_size``).
        line_search: "strong_wolfe" (torch's), "backtracking" (Armijo) or None.
        c1, c2: the sufficient-decrease and curvature constants (0 < c1 < c2 < 1).
        max_linesearch_steps: evaluations per line search.
        tolerance_change: the strong-Wolfe zoom stops on brackets narrower than this.
        decrease_factor: the backtracking factor in (0, 1).

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "s": (m, n),
        "y": (m, n), "rho": (m,), "diag": (), "prev_grad": (n,), "prev_step": (n,)}``
        (``n`` parameters, ``m = memory_size``; pairs oldest first, empty slots zero).

    Example:
        >>> opt = lbfgs(line_search=None)
        >>> state = opt.init(ps)
        >>> updates, state = opt.update(torch.func.grad(loss)(ps), state, ps)
        >>> ps = apply_updates(ps, updates)
    """
    fn = "lbfgs"
    _check_config(fn, lr, memory_size, line_search, c1, c2)
    check_int("max_linesearch_steps", max_linesearch_steps, fn, 1)
    check_nonneg("tolerance_change", tolerance_change, fn)
    if not 0.0 < decrease_factor < 1.0:
        raise ValueError(
            f"lux_torch.optim.{fn}: decrease_factor must be in (0, 1), got {decrease_factor}"
        )

    def init(ps: Tree) -> State:
        return init_state(_flat(ps), memory_size)

    def update(
        grads: Tree,
        state: State,
        ps: Tree = None,
        *,
        value: torch.Tensor | float | None = None,
        value_fn: ValueFn | None = None,
    ) -> tuple[Tree, State]:
        if ps is None:
            raise ValueError(f"lux_torch.optim.{fn}: update needs ps")
        g_leaves, _, spec = checked_leaves(grads, ps)
        x, unravel = ravel(ps)
        g = _flat(unflatten(spec, g_leaves))
        if state["s"].shape[1:] != x.shape:
            raise ValueError(
                f"lux_torch.optim.{fn}: the state holds {state['s'].shape[1]} parameters, "
                f"ps has {x.shape[0]}; was the state made by init() for other parameters?"
            )
        state = remember(state, g)
        d = direction(state, g)
        t: Any = first_step(state, g, lr)
        if line_search is not None:
            _refuse_traced(fn)
            if value_fn is None:
                raise ValueError(
                    f"lux_torch.optim.{fn}: line_search={line_search!r} needs value_fn "
                    "(ps -> loss) in update(); or use line_search=None"
                )
            f = float(value_fn(ps) if value is None else value)
            t, _ = _search(line_search, _objective(value_fn, x, d, unravel), t, f, g, d, settings)
        step = t * d
        return unravel(step), advance(state, g, step)

    settings = (c1, c2, tolerance_change, max_linesearch_steps, decrease_factor)
    return GradientTransformation(init, update)


def _search(
    kind: str,
    obj: Objective,
    t: Any,
    f: float,
    g: torch.Tensor,
    d: torch.Tensor,
    settings: tuple[float, float, float, int, float],
) -> tuple[Any, tuple[float, torch.Tensor, int]]:
    """Run the line search from ``t``: ``(t, (f(t), g(t), evaluations))``."""
    c1, c2, tolerance_change, max_ls, decrease = settings
    gtd = g.dot(d)
    if kind == "strong_wolfe":
        f_new, g_new, t, evals = strong_wolfe(
            obj, t, d, f, g, gtd, c1, c2, tolerance_change, max_ls
        )
    else:
        f_new, g_new, t, evals = backtracking(obj, t, gtd, f, c1, decrease, max_ls)
    return t, (f_new, g_new, evals)


def lbfgs_minimize(
    loss_fn: ValueFn,
    ps: Tree,
    *,
    lr: float = 1.0,
    memory_size: int = 10,
    line_search: LineSearch = "strong_wolfe",
    max_iter: int = 100,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    c1: float = 1e-4,
    c2: float = 0.9,
    decrease_factor: float = 0.5,
) -> tuple[Tree, LbfgsInfo]:
    """Minimise ``loss_fn(ps)`` with L-BFGS: ``torch.optim.LBFGS(...).step(closure)``'s loop,
    functionally (``ps`` is not modified; gradients by :func:`torch.func.grad_and_value`).

    Each iteration is :func:`lbfgs`'s update; the line search's last loss and gradient are
    reused by the next iteration. It stops, as torch does, when the largest gradient entry
    is ``<= tolerance_grad``, the directional derivative is ``> -tolerance_change``, the
    step's largest entry or the change of the loss is ``< tolerance_change``, or after
    ``max_iter`` iterations / ``max_eval`` evaluations. Eager only (the loop and the line
    search branch on values).

    Arguments:
        loss_fn: ``ps -> 0-dim loss tensor``, differentiable by :mod:`torch.func`.
        ps: the initial parameters: a tree, or a flat vector from ``tree.ravel``.
        lr, memory_size, line_search, c1, c2, decrease_factor: see :func:`lbfgs`.
        max_iter: the most iterations.
        max_eval: the most loss evaluations (default ``max_iter * 5 // 4``, torch's).
        tolerance_grad, tolerance_change: the stopping tolerances (torch's defaults).

    Returns:
        ``(ps, info)``: the final parameters (a tree like ``ps``) and an :class:`LbfgsInfo`.

    Example:
        >>> ps, info = lbfgs_minimize(lambda p: ((p["w"] - 3.0) ** 2).sum(), {"w": torch.zeros(2)})
        >>> info.stopped
        'tolerance_grad'
    """
    fn = "lbfgs_minimize"
    _check_config(fn, lr, memory_size, line_search, c1, c2)
    check_int("max_iter", max_iter, fn, 1)
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
    check_int("max_eval", max_eval, fn, 1)
    _refuse_traced(fn)
    x, unravel = ravel(ps)
    grad_and_value = torch.func.grad_and_value(lambda v: loss_fn(unravel(v)))
    g, value = grad_and_value(x)
    f, evals, fresh = float(value), 1, True
    if g.abs().max() <= tolerance_grad:
        return unravel(x), LbfgsInfo(f, float(g.abs().max()), 0, evals, "tolerance_grad")
    state = init_state(x, memory_size)
    settings = (c1, c2, tolerance_change, max_eval, decrease_factor)
    n_iter, stopped = 0, "max_iter"
    while n_iter < max_iter:
        n_iter += 1
        state = remember(state, g)
        d = direction(state, g)
        t: Any = first_step(state, g, lr)
        prev_f = f
        if g.dot(d) > -tolerance_change:
            stopped = "no_descent"
            break
        if line_search is not None:
            budget = (*settings[:3], max_eval - evals, *settings[4:])
            obj = _objective(loss_fn, x, d, unravel)
            t, (f, g_new, used) = _search(line_search, obj, t, f, g, d, budget)
            state, x, g = advance(state, g, t * d), torch.add(x, d, alpha=float(t)), g_new
            evals += used
        else:
            state, x = advance(state, g, t * d), x + t * d
            fresh = n_iter != max_iter
            if fresh:
                g, value = grad_and_value(x)
                f, evals = float(value), evals + 1
        if n_iter == max_iter:
            break
        if evals >= max_eval:
            stopped = "max_eval"
            break
        if g.abs().max() <= tolerance_grad:
            stopped = "tolerance_grad"
            break
        if (t * d).abs().max() <= tolerance_change or abs(f - prev_f) < tolerance_change:
            stopped = "tolerance_change"
            break
    if not fresh:  # the last step was not evaluated: report the loss where it ends
        g, value = grad_and_value(x)
        f, evals = float(value), evals + 1
    return unravel(x), LbfgsInfo(f, float(g.abs().max()), n_iter, evals, stopped)
