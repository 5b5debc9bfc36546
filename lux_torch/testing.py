"""The conformance harness: check a layer the way every built-in layer is checked.

:func:`check_layer` runs one layer through the checks that make it a good lux_torch
citizen and raises ``AssertionError("check_layer(<layer>): <check> failed: <details>")``
at the first failure. It returns a report ``{check name: "passed" | "skipped: <reason>"}``
so a test can assert which checks actually ran.

Checks (in this order):

- ``structure``: ``ps``/``st`` have the keys and shapes the layer's initialisers give.
- ``counts``: ``param_count``/``state_count`` equal the elements in ``ps``/``st`` (and the
  reference module's parameter count).
- ``repr``: ``repr(layer)`` names the class and shows ``"{n:,} parameters"``.
- ``shapes``: a call with any one tensor of ``ps`` or ``st`` replaced by one of another
  shape raises an error that names that entry and the shape the configuration expects
  (the layer's shape signature, see :mod:`lux_torch.core`), instead of computing with it.

then once per requested training mode (just once when ``st`` holds no ``training`` flag):

- ``forward``: the call returns ``(y, new_st)`` with ``new_st`` shaped like ``st``.
- ``purity``: ``x``, ``ps`` and ``st`` are untouched: same dict keys, same tensor
  objects, same values, same ``tensor._version`` (no in-place update, not even a hidden one).
- ``determinism``: a second call gives bitwise-equal outputs and state; a stochastic
  layer in training mode (or without a flag) returns an advanced ``key`` (pass
  ``stochastic=False`` for a configuration that draws nothing, such as ``Dropout(0.0)``).
- ``parity``: outputs, state buffers and gradients (of ``sum(y * w)`` for fixed random
  ``w``, w.r.t. ``ps`` and floating inputs) equal those of the ``torch.nn`` reference fed
  our tensors through :func:`torch.func.functional_call`; every reference parameter must be
  in ``ps`` under the same dotted name and shape. The reference runs in ``train()`` for the
  training mode and in ``eval()`` otherwise (also for layers without a flag); buffers are
  cloned first, so it is never modified. Stochastic layers: test mode only.
- ``gradcheck``: :func:`torch.autograd.gradcheck` (float64, ``fast_mode=True``) w.r.t.
  floating inputs and parameters, with the state held fixed.
- ``jvp``: forward-mode AD works: :func:`torch.func.jvp` (float64, same inputs and
  parameters as ``gradcheck``) returns the eager output, and its ``J v`` passes the
  dot-product test ``<w, J v> = <J^T w, v>`` against reverse mode for random ``v``, ``w``
  (tolerance: the float64 ``rtol`` of the sum of ``|w_i (J v)_i| + |(J^T w)_j v_j|``).
  A layer that cannot support forward mode declares it with ``jvp="<reason>"``.
- ``compile``: ``torch.compile(fullgraph=True, dynamic=False)`` runs without a graph
  break and matches eager (integer/bool leaves such as keys bitwise, floats within
  tolerance: inductor may fuse and reorder float arithmetic).
- ``vmap``: :func:`torch.func.vmap` over 3 stacked ``(ps, st)`` sets initialised from
  different keys equals a Python loop; ``randomness="error"`` proves that no torch RNG is used.
- ``vmap_inputs``: :func:`torch.func.vmap` over 3 stacked inputs (scaled copies of the
  input's floating tensors) with shared ``ps``/``st`` equals a loop: the per-sample
  pattern, and the vmap check of layers without parameters or state.
- ``device``: output and new state on another device (CUDA when available) match the
  CPU's; skipped cleanly where there is none.

Report keys carry the mode, ``"parity[train]"``/``"parity[test]"``, for layers with a
``training`` flag, and are plain (``"parity"``) otherwise.

Tolerances
----------
Floating-point comparisons (parity, compile, vmap) pass when, elementwise,
``|actual - expected| <= rtol * |expected| + atol * scale`` with
``scale = max(1, max|expected|)``: the absolute part is measured in units of the tensor's
magnitude, because the round-off of a near-zero result of a reduction is proportional to
the size of the terms, not of the result. Defaults by dtype:

=========  =======  =======  ===========================================================
dtype      rtol     atol     why
=========  =======  =======  ===========================================================
float64    1e-10    1e-12    same maths in another order is ~1e-15 relative; the margin
                             covers algebraically equal formulas of condition <= 1e4
float32    1e-5     1e-6     ~100 ulp (eps 1.2e-7): the random-walk round-off of
                             reductions of ~10^4 terms summed in another order
float16    5e-3     1e-3     ~5 ulp (eps 9.8e-4), accumulation in float32
bfloat16   3e-2     1e-2     ~4 ulp (eps 7.8e-3), accumulation in float32
=========  =======  =======  ===========================================================

``rtol=``/``atol=`` override these for every floating dtype. The ``device`` check allows
10x more (other kernels and algorithms, e.g. cuDNN convolutions; TF32 is switched off
during the check). Integer and bool tensors are always compared exactly. ``gradcheck``
uses torch's defaults (``eps=1e-6, atol=1e-5, rtol=1e-3`` in float64).

Example
-------
Check a custom layer in a test (the same way the built-in layers are tested)::

    import torch
    import torch.nn.functional as F
    import lux_torch as lux
    from lux_torch.testing import check_layer

    class MyLinear(lux.Layer):
        in_features: int
        out_features: int

        def init_params(self, key):
            k1, k2 = lux.random.split(key)
            bound = self.in_features ** -0.5
            shape = (self.out_features, self.in_features)
            return {"weight": lux.init.uniform(k1, *shape, low=-bound, high=bound),
                    "bias": lux.init.uniform(k2, self.out_features, low=-bound, high=bound)}

        def __call__(self, x, ps, st):
            return F.linear(x, ps["weight"], ps["bias"]), st

    def test_my_linear():
        x = lux.random.normal(lux.random.key(1), (4, 3))
        report = check_layer(MyLinear(3, 2), x, reference=torch.nn.Linear(3, 2))
        assert report["parity"] == "passed"

Keep inputs small (gradcheck is quadratic-ish in their size) and away from kinks
(``relu`` at 0, ties in ``max``); pass ``ps=``/``st=`` to check particular values.
``reference`` may also be a plain callable ``reference(tensors, *inputs) -> output``,
where ``tensors`` is the flat ``{"a.b.weight": tensor}`` dict of ``ps`` and ``st`` (clones;
update state entries in place, as a module updates its buffers). Then every state leaf
except random keys is compared, and parameters are matched by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optree
import torch
from torch import nn
from torch.autograd.gradcheck import GradcheckError

from . import core
from . import random as lrandom
from . import tree as ltree
from .display import short_repr

__all__ = ["TOLERANCES", "check_layer"]

Report = dict[str, str]

#: Default ``(rtol, atol)`` by dtype; see the module docstring for the reasoning.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (5e-3, 1e-3),
    torch.bfloat16: (3e-2, 1e-2),
}
_DEVICE_FACTOR = 10.0
_VMAP_MEMBERS = 3
_MAX_PROBLEMS = 8


class _Fail(Exception):
    """A check failed; the message is the detail shown after ``<check> failed:``."""


@dataclasses.dataclass(frozen=True)
class _Tol:
    """Tolerance policy: per-dtype defaults, optional overrides, a loosening factor."""

    rtol: float | None = None
    atol: float | None = None
    factor: float = 1.0

    def get(self, dtype: torch.dtype) -> tuple[float, float]:
        rtol, atol = TOLERANCES.get(dtype.to_real(), TOLERANCES[torch.float32])
        rtol = self.rtol if self.rtol is not None else rtol
        atol = self.atol if self.atol is not None else atol
        return rtol * self.factor, atol * self.factor

    def scaled(self, factor: float) -> _Tol:
        return dataclasses.replace(self, factor=self.factor * factor)


# --------------------------------------------------------------------------- trees


def _map(fn: Callable[[Any], Any], tree: Any) -> Any:
    return optree.tree_map(fn, tree, namespace=ltree.NAMESPACE)


def _named(tree: Any, root: str) -> tuple[list[tuple[str, Any]], Any]:
    """``([(name, leaf), ...], spec)`` with names like ``y[0]`` or ``st.layer_1.key``."""
    paths, leaves, spec = optree.tree_flatten_with_path(tree, namespace=ltree.NAMESPACE)
    names = [
        root + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path) for path in paths
    ]
    return list(zip(names, leaves, strict=True)), spec


def _flat(tree: Any) -> dict[str, Any]:
    """``{"a.b.weight": tensor}``, like ``lux.state_dict`` (static flags are not leaves)."""
    return dict(zip(ltree.paths(tree), ltree.leaves(tree), strict=True))


def _copy(t: Any, requires_grad: bool = False) -> Any:
    """A detached clone; floating ones optionally require grad. Non-tensors pass through."""
    if not isinstance(t, torch.Tensor):
        return t
    c = t.detach().clone()
    return c.requires_grad_() if requires_grad and ltree.is_inexact(c) else c


def _inputs(x: Any) -> tuple[Any, ...]:
    """The positional arguments of the torch reference: ``x``, or the items of a tuple."""
    return tuple(x) if isinstance(x, tuple) else (x,)


# --------------------------------------------------------------------------- comparison


def _leaf_problem(name: str, expected: Any, actual: Any, tol: _Tol | None) -> str | None:
    """Why ``actual`` differs from ``expected`` (``tol=None``: bitwise), or ``None``."""
    if not isinstance(expected, torch.Tensor) or not isinstance(actual, torch.Tensor):
        if type(expected) is type(actual) and expected == actual:
            return None
        return f"{name}: got {actual!r}, expected {expected!r}"
    if expected.shape != actual.shape:
        return f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if expected.dtype != actual.dtype:
        return f"{name}: dtype {actual.dtype}, expected {expected.dtype}"
    e = expected.detach().cpu()
    a = actual.detach().cpu()
    if e.numel() == 0:
        return None
    if tol is None or not ltree.is_inexact(e):
        if e.dtype == torch.bool or not ltree.is_inexact(e):
            bad = e != a
        else:
            bad = ~((e == a) | (e.isnan() & a.isnan()))
        rule = "bitwise equality"
        err = bad.to(torch.float64)
    else:
        wide = torch.complex128 if e.is_complex() else torch.float64
        e, a = e.to(wide), a.to(wide)
        rtol, atol = tol.get(expected.dtype)
        finite = e.abs()[e.isfinite()]
        scale = max(1.0, float(finite.max())) if finite.numel() else 1.0
        err = (a - e).abs()
        same_special = (e == a) | (e.isnan() & a.isnan())
        bad = ~(err <= rtol * e.abs() + atol * scale) & ~same_special
        err = torch.where(err.isnan(), torch.inf, err)
        rule = f"rtol={rtol:g}, atol={atol:g} x {scale:.3g}"
    if not bool(bad.any()):
        return None
    worst = int(torch.where(bad, err, -1.0).reshape(-1).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), e.shape))
    got, want = a.reshape(-1)[worst].item(), e.reshape(-1)[worst].item()
    return (
        f"{name}: {int(bad.sum())} of {e.numel()} elements differ ({rule}); worst at "
        f"index {index}: got {got!r}, expected {want!r}"
    )


def _problems(
    expected: Any, actual: Any, root: str, tol: _Tol | None, *, same_structure: bool = True
) -> list[str]:
    """Differences between two trees; ``same_structure=False`` compares leaves only."""
    e_named, e_spec = _named(expected, root)
    a_named, a_spec = _named(actual, root)
    if same_structure and e_spec != a_spec:
        return [f"{root}: structure {a_spec}, expected {e_spec}"]
    if len(e_named) != len(a_named):
        return [f"{root}: {len(a_named)} tensors, expected {len(e_named)}"]
    out = []
    for (name, e), (_, a) in zip(e_named, a_named, strict=True):
        problem = _leaf_problem(name, e, a, tol)
        if problem:
            out.append(problem)
    return out


def _require(problems: list[str], what: str = "") -> None:
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise _Fail("\n  ".join([what, *shown] if what else shown))


# --------------------------------------------------------------------------- purity


def _snapshot(tree: Any, name: str, out: dict[str, tuple[Any, ...]]) -> None:
    """Record ``(kind, identity, data...)`` of containers (keys) and tensors (version, values)."""
    if isinstance(tree, dict):
        out[name] = ("dict", id(tree), tuple(tree))
        for k, v in tree.items():
            _snapshot(v, f"{name}.{k}", out)
    elif isinstance(tree, (list, tuple)):
        out[name] = (type(tree).__name__, id(tree) if isinstance(tree, list) else 0, len(tree))
        for i, v in enumerate(tree):
            _snapshot(v, f"{name}[{i}]", out)
    elif isinstance(tree, torch.Tensor):
        out[name] = ("tensor", id(tree), tree._version, tree.detach().clone())
    else:
        out[name] = ("value", 0, tree)


def _snapshots(**trees: Any) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for name, tree in trees.items():
        _snapshot(tree, name, out)
    return out


def _purity_problems(
    before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]
) -> list[str]:
    problems = [f"{n} was added" for n in after if n not in before]
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            problems.append(f"{name} was removed")
        elif old[0] != new[0] or old[1] != new[1]:
            problems.append(f"{name} was replaced by another object")
        elif old[0] == "tensor":
            if old[2] != new[2]:
                problems.append(
                    f"{name} was modified in place (tensor._version {old[2]} -> {new[2]})"
                )
            elif _leaf_problem(name, old[3], new[3], None):
                problems.append(f"{name}: values changed")
        elif old[2:] != new[2:]:
            problems.append(f"{name} changed: {old[2]!r} -> {new[2]!r}")
    return problems


# --------------------------------------------------------------------------- the checks


@dataclasses.dataclass
class _Case:
    """One layer in one training mode, with its eager result."""

    layer: core.Layer
    x: Any
    ps: dict[str, Any]
    st: dict[str, Any]
    training: bool | None  # None: the layer has no training flag
    stochastic: bool
    tol: _Tol
    y: Any = None
    new_st: Any = None

    def call(self) -> Any:
        return self.layer(self.x, self.ps, self.st)


def _check_counts(layer: core.Layer, ps: Any, st: Any, reference: Any) -> None:
    problems = []
    n_ps, n_st = ltree.count(ps), ltree.count(st)
    if core.param_count(layer) != n_ps:
        problems.append(f"param_count(layer) = {core.param_count(layer)}, ps has {n_ps}")
    if core.state_count(layer) != n_st:
        problems.append(f"state_count(layer) = {core.state_count(layer)}, st has {n_st}")
    if isinstance(reference, nn.Module):
        n_ref = sum(p.numel() for p in reference.parameters())
        if n_ref != n_ps:
            problems.append(f"the reference has {n_ref} parameters, ps has {n_ps}")
    _require(problems)


def _check_repr(layer: core.Layer, expected: str | None) -> None:
    text = repr(layer)
    if expected is not None:
        if text != expected:
            raise _Fail(f"repr(layer) is\n{text}\nexpected\n{expected}")
        return
    name = type(layer).__name__
    if name not in text:
        raise _Fail(f"repr(layer) does not name the class {name!r}:\n{text}")
    n = core.param_count(layer)
    if n and not re.search(rf"(?<![\d,]){n:,} parameter", text):  # not "18" for 8
        raise _Fail(f"repr(layer) does not show '{n:,} parameters':\n{text}")


def _check_shapes(layer: core.Layer, x: Any, ps: Any, st: Any) -> None:
    """Every tensor of ``ps``/``st``, replaced by one of another shape, must be refused."""
    problems = []
    for root, tree in (("ps", ps), ("st", st)):
        named, spec = _named(tree, root)
        for i, (name, leaf) in enumerate(named):
            if not isinstance(leaf, torch.Tensor):
                continue
            bad = torch.zeros((*leaf.shape, 2), dtype=leaf.dtype, device=leaf.device)
            leaves = [bad if j == i else v for j, (_, v) in enumerate(named)]
            changed = optree.tree_unflatten(spec, leaves)
            args = (changed, st) if root == "ps" else (ps, changed)
            what = (
                f"{name} of shape {tuple(leaf.shape)} replaced by one of shape {tuple(bad.shape)}"
            )
            try:
                layer(x, *args)
            except (ValueError, TypeError, KeyError) as err:
                text = str(err) + "".join(f"\n{n}" for n in getattr(err, "__notes__", ()))
                key = name.rsplit(".", 1)[-1].split("[", 1)[0]  # "st.carry[0]": "carry"
                # (a wrapper that vmaps its child over stacked tensors, such as Ensemble,
                # gets the error from the child, with the member's shape)
                if "expects a tensor of shape" in text and key in text:
                    continue
                problems.append(f"{what}: raised {type(err).__name__}: {text}")
            except Exception as err:
                problems.append(f"{what}: raised {type(err).__name__}: {err}")
            else:
                problems.append(f"{what}: the call did not refuse it")
    _require(problems, "mis-shaped parameters/state are not refused with a clear error:")


def _check_forward(case: _Case) -> None:
    # st as it is before the call (a call that mutates st is for the purity check to name)
    st_structure, st_named = ltree.structure(case.st), _named(case.st, "st")[0]
    out = case.call()
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _Fail(f"a layer call must return (y, new_st), got {type(out).__name__}")
    case.y, case.new_st = out
    # the state must keep its structure, shapes and dtypes (loops, scan, vmap need that)
    problems = []
    if ltree.structure(case.new_st) != st_structure:
        problems.append(
            f"new_st has structure {ltree.structure(case.new_st)}, st has {st_structure}"
        )
    else:
        for (name, old), (_, new) in zip(st_named, _named(case.new_st, "new_st")[0], strict=True):
            if isinstance(old, torch.Tensor) and (
                not isinstance(new, torch.Tensor)
                or (old.shape, old.dtype) != (new.shape, new.dtype)
            ):
                got = (tuple(new.shape), new.dtype) if isinstance(new, torch.Tensor) else new
                problems.append(f"new_{name} is {got}, expected {(tuple(old.shape), old.dtype)}")
    _require(problems, "the returned state does not match st:")


def _check_determinism(case: _Case) -> None:
    y, new_st = case.call()
    _require(
        _problems(case.y, y, "y", None) + _problems(case.new_st, new_st, "new_st", None),
        "two calls with the same inputs differ:",
    )
    if case.stochastic and case.training is not False:
        old, new = _flat(case.st), _flat(case.new_st)
        stale = [p for p in old if p.split(".")[-1] == "key" and torch.equal(old[p], new[p])]
        if stale:
            raise _Fail(
                f"a stochastic layer must return an advanced key; st.{', st.'.join(stale)} "
                "came back unchanged"
            )


@contextlib.contextmanager
def _module_mode(module: nn.Module, training: bool) -> Iterator[None]:
    saved = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


def _weighted_sum(y: Any, weights: list[torch.Tensor]) -> torch.Tensor | None:
    """``sum(y_i * w_i)`` over the floating leaves of ``y``; ``None`` if not differentiable."""
    floats = [leaf for leaf in ltree.leaves(y) if ltree.is_inexact(leaf)]
    terms = [(leaf * w).sum() for leaf, w in zip(floats, weights, strict=True)]
    total = torch.stack([t.real for t in terms]).sum() if terms else None
    return total if total is not None and total.requires_grad else None


def _grads(loss: torch.Tensor | None, targets: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Gradients by name; unused targets (and a loss without a graph) give zeros."""
    if loss is None:
        return {n: torch.zeros_like(t) for n, t in targets.items()}
    grads = torch.autograd.grad(loss, list(targets.values()), allow_unused=True)
    return {
        n: torch.zeros_like(t) if g is None else g
        for (n, t), g in zip(targets.items(), grads, strict=True)
    }


def _call_reference(
    reference: Any, tensors: dict[str, torch.Tensor], inputs: tuple[Any, ...], training: bool
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Run the reference on our tensors; return its output and the state tensors it saw."""
    if not isinstance(reference, nn.Module):
        return reference(tensors, *inputs), tensors
    known, buffers = _names(reference), dict(reference.named_buffers())
    # our state tensors the module lacks (random keys, counters) are not passed; buffers we
    # do not hold are cloned, so that the reference module itself is never updated
    ours = {n: t for n, t in tensors.items() if n in known}
    theirs = {n: b.detach().clone() for n, b in buffers.items() if n not in ours}
    with _module_mode(reference, training):
        out = torch.func.functional_call(reference, ours | theirs, inputs)
    return out, ours


def _names(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters()) | dict(module.named_buffers())


def _naming_problems(module: nn.Module, flat_ps: dict[str, Any]) -> list[str]:
    """Where our parameter names and shapes do not follow the torch module's."""
    params, known = dict(module.named_parameters()), _names(module)
    missing = [n for n in params if n not in flat_ps]
    extra = [n for n in flat_ps if n not in known]
    problems = [f"the reference's parameter {n!r} is missing from ps" for n in missing]
    problems += [f"ps[{n!r}] has no counterpart in the reference" for n in extra]
    problems += [
        f"ps[{n!r}] has shape {tuple(t.shape)}, the reference's {tuple(known[n].shape)}"
        for n, t in flat_ps.items()
        if n in known and t.shape != known[n].shape
    ]
    return problems


def _check_parity(
    case: _Case, reference: Any, input_grad: bool, rename: Callable[[str], str] | None
) -> str | None:
    if case.stochastic and case.training is not False:
        return "stochastic layer (parity is checked in test mode)"
    flat_ps, flat_st = _flat(case.ps), _flat(case.st)
    theirs = {n: rename(n) if rename else n for n in [*flat_ps, *flat_st]}  # our -> its names
    if isinstance(reference, nn.Module):
        _require(
            _naming_problems(reference, {theirs[n]: t for n, t in flat_ps.items()}),
            "parameter names and shapes must follow the torch.nn reference:",
        )
    # ours, and the reference's on separate copies of the same tensors
    our_ps = _map(lambda t: _copy(t, True), case.ps)
    our_x = _map(lambda t: _copy(t, input_grad), case.x)
    y, new_st = case.layer(our_x, our_ps, case.st)
    their_ps = {theirs[n]: _copy(t, True) for n, t in flat_ps.items()}
    their_st = {theirs[n]: _copy(t) for n, t in flat_st.items()}
    their_x = _map(lambda t: _copy(t, input_grad), case.x)
    out, seen = _call_reference(
        reference, their_ps | their_st, _inputs(their_x), case.training is True
    )
    _require(
        _problems(out, y, "y", case.tol, same_structure=False),
        "outputs differ from the reference's:",
    )
    # state: every tensor the module holds as a buffer (for a callable: all but random keys)
    module = isinstance(reference, nn.Module)
    state_problems = [
        _leaf_problem(f"new_st.{n}", seen[theirs[n]], t, case.tol)
        for n, t in _flat(new_st).items()
        if theirs[n] in seen and (module or n.split(".")[-1] != "key")
    ]
    _require(
        [p for p in state_problems if p],
        "the returned state differs from the reference's updated buffers:",
    )
    # gradients of sum(y * w) for fixed random w, w.r.t. parameters and floating inputs
    gen = torch.Generator().manual_seed(0)
    weights = [
        torch.randn(leaf.shape, generator=gen, dtype=torch.float64).to(leaf.device, leaf.dtype)
        for leaf in ltree.leaves(y)
        if ltree.is_inexact(leaf)
    ]
    ours_t = {f"ps.{n}": t for n, t in _flat(our_ps).items() if t.requires_grad}
    theirs_t = {f"ps.{n}": their_ps[theirs[n]] for n, t in _flat(our_ps).items() if t.requires_grad}
    for (n, t), (_, u) in zip(_named(our_x, "x")[0], _named(their_x, "x")[0], strict=True):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            ours_t[n], theirs_t[n] = t, u
    ours_g = _grads(_weighted_sum(y, weights), ours_t)
    theirs_g = _grads(_weighted_sum(out, weights), theirs_t)
    grad_problems = [_leaf_problem(f"grad {n}", theirs_g[n], ours_g[n], case.tol) for n in ours_t]
    _require(
        [p for p in grad_problems if p], "gradients of sum(y * w) differ from the reference's:"
    )
    return None


_F64 = tuple[Callable[..., tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...], list[str]]


def _f64_function(case: _Case, input_grad: bool) -> _F64 | str:
    """``(f, inputs, labels)``: the layer as a function of its floating inputs (when
    ``input_grad``) and parameters in float64, with the state held fixed, returning the
    floating leaves of ``y``; the inputs (requiring grad) and their names. Or the reason
    there is nothing to differentiate."""
    f64 = torch.float64
    x_leaves, x_spec = optree.tree_flatten(
        _map(lambda t: _copy(t).to(f64) if ltree.is_inexact(t) else t, case.x),
        namespace=ltree.NAMESPACE,
    )
    ps_leaves, ps_spec = optree.tree_flatten(
        ltree.to(case.ps, dtype=f64), namespace=ltree.NAMESPACE
    )
    st64 = ltree.to(case.st, dtype=f64)
    x_idx = [i for i, t in enumerate(x_leaves) if input_grad and ltree.is_inexact(t)]
    ps_idx = [i for i, t in enumerate(ps_leaves) if ltree.is_inexact(t)]
    x_names = [name for name, _ in _named(case.x, "x")[0]]
    labels = [x_names[i] for i in x_idx] + [f"ps.{ltree.paths(case.ps)[i]}" for i in ps_idx]
    inputs = tuple(
        [_copy(x_leaves[i], True) for i in x_idx] + [_copy(ps_leaves[i], True) for i in ps_idx]
    )
    if not inputs:
        return "no floating-point inputs or parameters"

    def f(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xs, pl = list(x_leaves), list(ps_leaves)
        for i, t in zip(x_idx, tensors[: len(x_idx)], strict=True):
            xs[i] = t
        for i, t in zip(ps_idx, tensors[len(x_idx) :], strict=True):
            pl[i] = t
        x: Any = optree.tree_unflatten(x_spec, xs)
        ps: Any = optree.tree_unflatten(ps_spec, pl)
        y, _ = case.layer(x, ps, st64)
        return tuple(leaf for leaf in ltree.leaves(y) if ltree.is_inexact(leaf))

    if not f(*inputs):
        return "no floating-point outputs"
    return f, inputs, labels


def _check_gradcheck(case: _Case, input_grad: bool) -> str | None:
    built = _f64_function(case, input_grad)
    if isinstance(built, str):
        return built
    f, inputs, labels = built
    try:
        torch.autograd.gradcheck(f, inputs, fast_mode=True)
    except GradcheckError as err:
        lines = str(err).strip().splitlines()
        summary = lines[:3] + [line for line in lines if line.startswith("The max per-element")]
        legend = ", ".join(f"input {i} = {label}" for i, label in enumerate(labels))
        raise _Fail("\n".join([*summary, f"({legend})"])) from None
    return None


def _check_jvp(case: _Case, input_grad: bool) -> str | None:
    """Forward mode: :func:`torch.func.jvp` in float64 gives the eager output and a ``J v``
    that passes the dot-product test against reverse mode, ``<w, J v> = <J^T w, v>`` for
    random ``v`` and ``w`` (reverse mode itself is checked against finite differences by
    ``gradcheck``)."""
    built = _f64_function(case, input_grad)
    if isinstance(built, str):
        return built
    f, inputs, labels = built
    primals = tuple(t.detach() for t in inputs)
    gen = torch.Generator().manual_seed(1)

    def noise(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)

    tangents = tuple(noise(t) for t in primals)
    try:
        out: Any = torch.func.jvp(f, primals, tangents)
        y, jv = out
    except Exception as err:
        lines = str(err).strip().splitlines()
        raise _Fail(
            f"torch.func.jvp (forward-mode AD) raised {type(err).__name__}: "
            + "\n".join(lines[:3])
            + "\n(every operation needs a forward-mode rule: under forward AD, route around "
            "one that has none, as lux_torch.layers.rnn does for the fused RNN kernels; or "
            "pass jvp='<reason>' to declare forward mode unsupported)"
        ) from err
    pair: Any = torch.func.vjp(f, *primals)
    y_ref, vjp_fn = pair
    tol = case.tol
    _require(
        _problems(list(y_ref), list(y), "y", tol),
        "the output under torch.func.jvp differs from the output without it:",
    )
    cotangents = tuple(noise(t) for t in y_ref)
    grads = vjp_fn(cotangents)
    forward = [(w * t).sum() for w, t in zip(cotangents, jv, strict=True)]
    reverse = [(g * v).sum() for g, v in zip(grads, tangents, strict=True)]
    lhs, rhs = float(sum(forward)), float(sum(reverse))
    size = sum(float((w * t).abs().sum()) for w, t in zip(cotangents, jv, strict=True)) + sum(
        float((g * v).abs().sum()) for g, v in zip(grads, tangents, strict=True)
    )
    rtol, atol = tol.get(torch.float64)
    if not abs(lhs - rhs) <= rtol * size + atol:
        legend = ", ".join(labels)
        raise _Fail(
            "forward and reverse mode disagree: <w, J v> = "
            f"{lhs!r} (torch.func.jvp) but <J^T w, v> = {rhs!r} (torch.func.vjp), "
            f"allowed difference {rtol * size + atol:.3g}; v over ({legend})"
        )
    return None


def _fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object.

    Dynamo keeps its cache (and recompile limit) per code object, so every check starts
    from an empty cache without resetting anyone else's compiled functions.
    """
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


def _check_compile(case: _Case, backend: Any) -> None:
    layer = case.layer
    compiled = torch.compile(
        _fresh(lambda x, ps, st: layer(x, ps, st)), fullgraph=True, dynamic=False, backend=backend
    )
    try:
        y, new_st = compiled(case.x, case.ps, case.st)
    except Exception as err:
        from torch._dynamo.exc import Unsupported  # raised for graph breaks under fullgraph

        lines = str(err).strip().splitlines()
        detail = "\n".join(lines[:20] + (["..."] if len(lines) > 20 else []))
        what = (
            "torch.compile(fullgraph=True) could not capture the layer in one graph "
            "(graph break or unsupported operation)"
            if isinstance(err, Unsupported)
            else f"torch.compile(backend={backend!r}) failed"
        )
        raise _Fail(f"{what}: {type(err).__name__}: {detail}") from err
    _require(
        _problems(case.y, y, "y", case.tol) + _problems(case.new_st, new_st, "new_st", case.tol),
        "compiled results differ from eager:",
    )


def _like(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new.to(device=old.device, dtype=old.dtype)


def _members(case: _Case, key: torch.Tensor) -> list[tuple[Any, Any]]:
    """``_VMAP_MEMBERS`` (ps, st) sets from different keys, in the case's dtypes and mode."""
    out = []
    for k in lrandom.split(key, _VMAP_MEMBERS):
        ps, st = core.setup(k, case.layer)
        if case.training is not None:
            st = core.train_mode(st) if case.training else core.test_mode(st)
        out.append((ltree.map(_like, ps, case.ps), ltree.map(_like, st, case.st)))
    return out


def _vmap_equals_loop(
    case: _Case, fn: Callable[..., Any], members: list[Any], stacked: list[Any], what: str
) -> None:
    """``vmap(fn)(*stacked)`` equals ``stack([fn(*m) for m in members])``."""
    expected = ltree.stack([fn(*m) for m in members])
    try:
        with warnings.catch_warnings():  # a missing batching rule is slow, not wrong
            warnings.filterwarnings("ignore", message="There is a performance drop")
            got = torch.func.vmap(fn, randomness="error")(*stacked)
    except Exception as err:
        hint = (
            " (the layer uses torch's random number generator; draw randomness from "
            "st['key'] with lux_torch.random instead)"
            if "random" in str(err).lower()
            else ""
        )
        raise _Fail(f"torch.func.vmap {what} failed{hint}: {type(err).__name__}: {err}") from err
    _require(
        _problems(expected[0], got[0], "y", case.tol)
        + _problems(expected[1], got[1], "new_st", case.tol),
        f"vmap {what} differs from a loop:",
    )


def _check_vmap(case: _Case, key: torch.Tensor) -> str | None:
    if not ltree.leaves(case.ps) and not ltree.leaves(case.st):
        return "the layer has no parameters or state to vmap over"
    members = _members(case, key)
    stacked = [ltree.stack([ps for ps, _ in members]), ltree.stack([st for _, st in members])]
    layer, x = case.layer, case.x
    what = f"over {_VMAP_MEMBERS} stacked (ps, st)"
    _vmap_equals_loop(case, lambda p, s: layer(x, p, s), members, stacked, what)
    return None


def _check_vmap_inputs(case: _Case) -> str | None:
    """vmap over a batch of inputs with shared ``ps``/``st`` (per-sample gradients,
    ensembles of data) equals a loop: the input's floating tensors are stacked from scaled
    copies; integer, bool and non-tensor parts of the input are shared."""
    leaves, spec = optree.tree_flatten(case.x, none_is_leaf=True)
    at = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not at:
        return "the input has no floating-point tensor to vmap over"

    def rebuild(values: Sequence[torch.Tensor]) -> Any:
        new = list(leaves)
        for i, v in zip(at, values, strict=True):
            new[i] = v
        return optree.tree_unflatten(spec, new)

    scales = [1.0 + 0.25 * k for k in range(_VMAP_MEMBERS)]
    members = [[leaves[i] * c for i in at] for c in scales]
    stacked = [torch.stack(column) for column in zip(*members, strict=True)]
    layer, ps, st = case.layer, case.ps, case.st
    what = f"over {_VMAP_MEMBERS} stacked inputs (shared ps, st)"
    _vmap_equals_loop(case, lambda *v: layer(rebuild(v), ps, st), members, stacked, what)
    return None


@contextlib.contextmanager
def _exact_float32() -> Iterator[None]:
    """Switch TF32 off for CUDA matmuls and convolutions (restored afterwards)."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv  # type: ignore[attr-defined]
    try:
        saved = (matmul.fp32_precision, conv.fp32_precision)
    except RuntimeError:  # settings made through the legacy allow_tf32 API: leave them
        saved = None
    if saved is not None:
        matmul.fp32_precision = conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        if saved is not None:
            matmul.fp32_precision, conv.fp32_precision = saved


def _target_device(device: torch.device | str | None, cuda: bool) -> torch.device | str:
    """The device to compare against the CPU, or a skip reason (a ``str``)."""
    if device is None:
        if not cuda:
            return "disabled (cuda=False)"
        device = "cuda"
    target = torch.device(device)
    if target.type == "cpu":
        return "the device is the CPU"
    if target.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    return target


def _check_device(case: _Case, target: torch.device) -> None:
    def move(t: Any) -> Any:
        return t.to(target) if isinstance(t, torch.Tensor) else t

    with _exact_float32():
        y, new_st = case.layer(_map(move, case.x), _map(move, case.ps), _map(move, case.st))
    tol = case.tol.scaled(_DEVICE_FACTOR)
    _require(
        _problems(case.y, y, "y", tol) + _problems(case.new_st, new_st, "new_st", tol),
        f"results on {target} differ from the CPU's:",
    )


# --------------------------------------------------------------------------- driver


@dataclasses.dataclass(frozen=True)
class _Options:
    reference: Any
    rename: Callable[[str], str] | None
    gradcheck: bool
    jvp: bool | str  # a str is the reason forward mode is unsupported
    compile: bool
    vmap: bool
    input_grad: bool
    backend: Any
    key: torch.Tensor
    target: torch.device | str  # a str is the reason the device check is skipped


def _mode_checks(case: _Case, o: _Options) -> list[tuple[str, Callable[[], str | None]]]:
    """The checks of one mode, in order. Call it before the first call of the layer."""
    before = _snapshots(x=case.x, ps=case.ps, st=case.st)

    def purity() -> None:
        after = _snapshots(x=case.x, ps=case.ps, st=case.st)
        _require(_purity_problems(before, after), "the call changed its inputs:")

    def unless(skip: str | None, check: Callable[[], str | None]) -> Callable[[], str | None]:
        return check if skip is None else lambda: skip

    target = o.target
    return [
        ("forward", lambda: _check_forward(case)),
        ("purity", purity),
        ("determinism", lambda: _check_determinism(case)),
        (
            "parity",
            unless(
                "no reference" if o.reference is None else None,
                lambda: _check_parity(case, o.reference, o.input_grad, o.rename),
            ),
        ),
        (
            "gradcheck",
            unless(
                None if o.gradcheck else "disabled", lambda: _check_gradcheck(case, o.input_grad)
            ),
        ),
        (
            "jvp",
            unless(
                None if o.jvp is True else (o.jvp or "disabled"),
                lambda: _check_jvp(case, o.input_grad),
            ),
        ),
        (
            "compile",
            unless(None if o.compile else "disabled", lambda: _check_compile(case, o.backend)),
        ),
        ("vmap", unless(None if o.vmap else "disabled", lambda: _check_vmap(case, o.key))),
        ("vmap_inputs", unless(None if o.vmap else "disabled", lambda: _check_vmap_inputs(case))),
        (
            "device",
            unless(
                target if isinstance(target, str) else None,
                lambda: _check_device(case, torch.device(target)),
            ),
        ),
    ]


def _run(report: Report, label: str, check: str, fn: Callable[[], str | None]) -> None:
    """Run one check; record it, or raise ``AssertionError`` naming layer and check."""
    try:
        skipped = fn()
    except _Fail as err:
        raise AssertionError(f"check_layer({label}): {check} failed: {err}") from err.__cause__
    except Exception as err:
        notes = "".join(f"\n{n}" for n in getattr(err, "__notes__", ()))
        raise AssertionError(
            f"check_layer({label}): {check} failed: the layer raised "
            f"{type(err).__name__}: {err}{notes}"
        ) from err
    report[check] = "passed" if skipped is None else f"skipped: {skipped}"


def _has_flag(st: Any) -> bool:
    return bool(ltree.structure(core.train_mode(st)) != ltree.structure(core.test_mode(st)))


def _layer_checks(
    layer: core.Layer, x: Any, ps: Any, st: Any, reference: Any, expected_repr: str | None
) -> list[tuple[str, Callable[[], str | None]]]:
    """The checks of the layer as a whole, in order, before those of each mode."""
    return [
        ("structure", lambda: _require(core.structure_problems(layer, ps, st))),
        ("counts", lambda: _check_counts(layer, ps, st, reference)),
        ("repr", lambda: _check_repr(layer, expected_repr)),
        ("shapes", lambda: _check_shapes(layer, x, ps, st)),
    ]


def _modes(st: Any, training: Sequence[bool]) -> list[tuple[bool | None, str, Any]]:
    """``(mode, report suffix, st in that mode)`` for each mode to check: those of
    ``training`` when ``st`` has a ``training`` flag, else one ``(None, "", st)``."""
    if not _has_flag(st):
        return [(None, "", st)]
    return [
        (mode, "[train]" if mode else "[test]", core.train_mode(st) if mode else core.test_mode(st))
        for mode in training
    ]


def check_layer(
    layer: core.Layer,
    x: Any,
    *,
    reference: nn.Module | Callable[..., Any] | None = None,
    ps: dict[str, Any] | None = None,
    st: dict[str, Any] | None = None,
    key: torch.Tensor | int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    gradcheck: bool = True,
    jvp: bool | str = True,
    compile: bool = True,
    vmap: bool = True,
    training: Sequence[bool] = (True, False),
    stochastic: bool | None = None,
    expected_repr: str | None = None,
    input_grad: bool = True,
    device: torch.device | str | None = None,
    cuda: bool = True,
    compile_backend: str | Callable[..., Any] = "inductor",
    rename: Callable[[str], str] | None = None,
) -> Report:
    """Run ``layer`` through the conformance checks; raise ``AssertionError`` on a failure.

    Arguments:
        layer: the layer to check.
        x: its input: a tensor, or a tuple of tensors that the layer receives as its single
            ``x`` argument (the reference is called as ``reference(*x)``).
        reference: a ``torch.nn.Module`` computing the same function; its parameters and
            buffers are replaced by ours (same dotted names) through
            :func:`torch.func.functional_call`. Or a callable ``reference(tensors, *inputs)``
            (see the module docstring). ``None``: no parity check.
        ps, st: the parameters and state to check with (default: ``lux.setup(key, layer)``).
        key: a ``lux_torch.random`` key or an int seed for the default ``ps``/``st`` and
            for the vmap ensemble.
        rtol, atol: override the per-dtype tolerances of the module docstring.
        gradcheck, compile, vmap: run these (slower) checks.
        jvp: run the forward-mode check; ``False`` skips it as ``"disabled"``, a string
            declares forward mode unsupported and is the reason the report shows.
        training: the modes to check (``True``: ``train_mode(st)``, ``False``:
            ``test_mode(st)``); ignored when ``st`` has no ``training`` flag.
        stochastic: whether the layer is random (default: ``st`` holds a ``key``). Parity
            is then checked in test mode only, and training mode must advance the key.
        expected_repr: if given, ``repr(layer)`` must equal it exactly.
        input_grad: differentiate w.r.t. floating-point inputs too (parity, gradcheck).
        device: a device to compare with the CPU (default: CUDA when available and
            ``cuda`` is true); skipped cleanly when that device is not available.
        cuda: with ``device=None``, whether to use CUDA when it is available.
        rename: maps our dotted tensor names to the reference's, for references whose
            layout differs only in naming (``nn.Sequential``'s ``0.weight`` for Chain's
            ``layer_1.weight``: ``rename=lambda n: n.replace("layer_1", "0")``).
        compile_backend: the ``torch.compile`` backend (``"eager"``/``"aot_eager"`` check
            graph capture only, much faster than ``"inductor"``).

    Returns:
        ``{check name: "passed" | "skipped: <reason>"}``; per-mode checks are named
        ``"<check>[train]"``/``"<check>[test]"`` when ``st`` has a ``training`` flag.

    Raises:
        AssertionError: ``"check_layer(<layer>): <check> failed: <details>"``.
    """
    label = short_repr(layer)
    report: Report = {}
    key_t = lrandom.key(key) if isinstance(key, int) else key
    ps = core.init_params(key_t, layer) if ps is None else ps
    st = core.init_state(key_t, layer) if st is None else st
    for name, check in _layer_checks(layer, x, ps, st, reference, expected_repr):
        _run(report, label, name, check)
    if stochastic is None:
        stochastic = any(p.split(".")[-1] == "key" for p in ltree.paths(st))
    options = _Options(
        reference=reference,
        rename=rename,
        gradcheck=gradcheck,
        jvp=jvp,
        compile=compile,
        vmap=vmap,
        input_grad=input_grad,
        backend=compile_backend,
        key=key_t,
        target=_target_device(device, cuda),
    )
    for mode, suffix, mode_st in _modes(st, training):
        case = _Case(layer, x, ps, mode_st, mode, stochastic, _Tol(rtol, atol))
        for name, check in _mode_checks(case, options):
            _run(report, label, name + suffix, check)
    return report
