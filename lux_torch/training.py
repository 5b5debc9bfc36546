"""The training API: :class:`TrainState`, :func:`compute_gradients`, :func:`apply_gradients`
and :func:`train_step` (Lux's ``Training`` module).

A training objective follows Lux's convention::

    loss_fn(model, ps, st, data) -> (loss, new_st, stats)

where ``loss`` is a 0-dim floating tensor and ``stats`` any tree (``{}`` if unused). Every
:class:`lux_torch.losses.Loss` object is such an objective (``data = (x, y)``).

Example:
    >>> model = lux.Chain(lux.Linear(2, 32, activation=torch.tanh), lux.Linear(32, 1))
    >>> ps, st = lux.setup(0, model)
    >>> ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-3))
    >>> ts, loss, stats = lux.train_step(lux.losses.MSELoss(), (x, y), ts)

Gradient paths (``ad=``):

* ``"func"``: ``torch.func.grad_and_value`` — pure, composes with ``vmap`` and is what the
  compiled step uses.
* ``"autograd"``: ``torch.autograd.grad`` with respect to fresh ``requires_grad`` leaves
  (detached views of ``ps``). Needed where an op lacks functorch support (torchdiffeq's
  adaptive solvers, custom ``autograd.Function`` s without ``setup_context``) and faster
  in eager mode.
* ``"auto"`` (default): ``"autograd"`` for eager steps; for ``compile=True`` it uses
  ``"func"`` unless a layer of the model sets ``requires_autograd = True`` or
  ``compile_fullgraph = False``.

Compiled steps (``compile=True``) on the ``"func"`` path are **traced**, the ``jax.jit``
model: at the first call with a new input signature the whole step — forward,
``torch.func`` backward, finiteness check and optimizer update — is traced with
``make_fx`` on fake tensors into one graph and compiled by Inductor. Later calls flatten
the trees and run the compiled code directly, without Dynamo's guards and wrappers (the
tiny MLP step of ``benchmarks/train_step.py`` runs in 0.20-0.23x the time of eager
PyTorch, where ``torch.compile`` of the module and of ``optimizer.step`` takes
0.95-1.05x). Inductor keeps the compiled code in its on-disk caches
(``TORCHINDUCTOR_CACHE_DIR``): a later process that traces the same step loads it
instead of compiling it again. The signature is the tree structures, every tensor's
shape, strides, dtype, device and ``requires_grad``, the values of non-tensor leaves of
``data``, and the Python scalars (int, float, bool, str) that a plain-function
``loss_fn`` reads from its closure or module globals; a change in any of them traces
again. **Anything else read from outside the arguments is a constant of the graph**
(as under ``jax.jit``): tensors captured in closures, attributes of objects, values read
by functions that ``loss_fn`` calls — pass what changes through ``data``. Up to 8 graphs
are kept per step function; a ninth signature warns (``RuntimeWarning``, once) and drops
the oldest. Keep batch shapes fixed (e.g. ``drop_last=True``) to compile exactly once.
Derivatives with respect to the input inside the loss (a physics-informed loss with
``torch.func.vmap(torch.func.hessian(u))(x)``) are traced like the rest: nested AD
compiles into the same single graph. Python control flow on tensor values cannot be
traced: such a step falls back to ``torch.compile(fullgraph=True)`` with a
``RuntimeWarning`` naming the tracing error (its type and message), and where that fails
too raises its error chained to the tracing error.

On the autograd path (layers that set ``requires_autograd = True`` or
``compile_fullgraph = False``, e.g. :class:`lux_torch.ode.NeuralODE`) ``torch.compile``
is used: the forward (with its AOTAutograd backward) and the update are two graphs, and
a ``compile_fullgraph = False`` layer has its forward compiled with ``fullgraph=False``
around the part that runs eagerly. ``torch.compile`` guards on input shapes, dtypes and
devices: each new combination compiles once more, up to
``torch._dynamo.config.recompile_limit`` (8 by default), after which torch falls back
to eager for new shapes.

The compiled function is cached in the train state (per loss function, gradient path,
finiteness check and ``donate``; it travels with :meth:`TrainState.replace` and is
dropped when the model or optimizer changes).

``torch.optim`` optimizers are accepted as a factory, e.g.
``functools.partial(torch.optim.Adam, lr=1e-3)``: the train state then copies ``ps``
into ``requires_grad`` leaf tensors, holds the ``torch.optim.Optimizer`` as ``opt_state``
and **updates those leaves in place** at every step (so an older :class:`TrainState`
shares — and sees — the new values). With ``compile=True`` only the gradient computation
is compiled; ``optimizer.step()`` runs as torch.optim runs it.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch

from . import losses
from ._graph import Traced, python_reads, tracing
from .core import Layer, check_structure, describe_value
from .display import short_repr
from .optim import GradientTransformation, apply_updates
from .optim._base import Reduced
from .optim.aliases import has_fused_step
from .optim.aliases import step_unchecked as optim_step
from .tree import count, flatten, flatten_like, paths, unflatten
from .tree import leaves as lux_leaves
from .tree import map as lux_map

__all__ = ["TrainState", "apply_gradients", "compute_gradients", "train_step"]

Tree = Any
LossFn = Callable[[Layer, Tree, Tree, Any], tuple[torch.Tensor, Tree, Any]]
_AD_MODES = ("auto", "func", "autograd")
_AMP_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CACHE_WARN = 8  # compiled step functions per TrainState before a warning
# Parameters from which a traced, donated step runs the fused in-place Adam kernel after
# the gradient graph, rather than one pure graph (CPU, 2 threads: 0.41x vs 0.31x of eager
# torch for 1.1k parameters, 0.60x vs 0.77x for 670k; benchmarks/train_step.py).
_FUSED_MIN = 1 << 16


class TrainState:
    """Everything a training loop carries: model, parameters, states, optimizer and step.

    Arguments:
        model: the :class:`~lux_torch.Layer`.
        ps: its parameter tree (from :func:`lux_torch.setup`).
        st: its state tree.
        optimizer: a :class:`lux_torch.optim.GradientTransformation` (pure; ``ps`` are
            never mutated), or a factory of a ``torch.optim.Optimizer`` such as
            ``functools.partial(torch.optim.Adam, lr=1e-3)`` (then updated in place, see
            the module docstring).
        opt_state: the optimizer state; ``optimizer.init(ps)`` when omitted.
        step: number of steps taken so far.
        ema: a transformation that averages the parameters after every step, e.g.
            ``lux.optim.ema(0.999)`` (Polyak averaging); ``None`` (default): none.

    Attributes:
        model, params, states, optimizer, opt_state, step, ema: as above (``params`` is
            ``ps`` and ``states`` is ``st``).
        ema_params: the averaged parameters, to evaluate with (``model(x, ts.ema_params,
            st)``): ``ema``'s output after every step, starting from ``ema.update(ps,
            ema.init(ps))`` (with ``ema(decay)``'s debiasing: ``ps`` itself); ``None``
            without ``ema``.
        ema_state: ``ema``'s state (``None`` without ``ema``).

    The object is immutable: :func:`apply_gradients` and :func:`train_step` return new
    train states, built with :meth:`replace`.

    Raises:
        ValueError: ``ps``/``st`` do not match ``model`` (naming the keys).
        TypeError: ``optimizer`` is neither a ``GradientTransformation`` nor a factory of a
            ``torch.optim.Optimizer``.

    Example:
        >>> ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-3))
        >>> ts.step
        0
    """

    __slots__ = (
        "_cache",
        "ema",
        "ema_params",
        "ema_state",
        "model",
        "opt_state",
        "optimizer",
        "params",
        "states",
        "step",
    )

    _cache: dict[Hashable, Any]
    model: Layer
    params: Tree
    states: Tree
    optimizer: Any
    opt_state: Any
    step: int
    ema: GradientTransformation | None
    ema_state: Any
    ema_params: Tree

    def __init__(
        self,
        model: Layer,
        ps: Tree,
        st: Tree,
        optimizer: GradientTransformation | Callable[..., torch.optim.Optimizer],
        *,
        opt_state: Any = None,
        step: int = 0,
        ema: GradientTransformation | None = None,
    ) -> None:
        if not isinstance(model, Layer):
            raise TypeError(
                f"lux_torch.TrainState: model must be a lux_torch.Layer, got {type(model).__name__}"
            )
        check_structure(model, ps, st)
        if opt_state is None:
            if isinstance(optimizer, GradientTransformation):
                opt_state = optimizer.init(ps)
            else:
                ps, opt_state = _torch_optimizer(optimizer, ps)
        elif not isinstance(optimizer, GradientTransformation) and not isinstance(
            opt_state, torch.optim.Optimizer
        ):
            raise TypeError(
                "lux_torch.TrainState: with a torch.optim factory, opt_state must be the "
                f"torch.optim.Optimizer over ps, got {type(opt_state).__name__}"
            )
        ema_params = ema_state = None
        if ema is not None:
            if not isinstance(ema, GradientTransformation):
                raise TypeError(
                    "lux_torch.TrainState: ema must be a lux_torch.optim.GradientTransformation "
                    f"such as lux.optim.ema(0.999), got {type(ema).__name__}"
                )
            with torch.no_grad():  # an average of values, not part of any gradient
                ema_params, ema_state = ema.update(ps, ema.init(ps))
        self._set(model, ps, st, optimizer, opt_state, int(step), ema, ema_state, ema_params, {})

    _FIELDS = (
        "model",
        "params",
        "states",
        "optimizer",
        "opt_state",
        "step",
        "ema",
        "ema_state",
        "ema_params",
    )

    def _set(self, *values: Any) -> None:
        for name, value in zip((*self._FIELDS, "_cache"), values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"TrainState is immutable (tried to set {name!r}); use ts.replace({name}=...)"
        )

    def replace(self, **changes: Any) -> TrainState:
        """A copy with some fields changed (``model, params, states, optimizer, opt_state,
        step, ema, ema_state, ema_params``). The compiled-step cache is kept unless ``model``
        or ``optimizer`` change."""
        fields = {name: getattr(self, name) for name in self._FIELDS}
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise TypeError(f"TrainState.replace: unknown fields {unknown}; known {list(fields)}")
        same = all(changes.get(k, fields[k]) is fields[k] for k in ("model", "optimizer"))
        fields.update(changes)
        new = object.__new__(TrainState)
        new._set(*fields.values(), self._cache if same else {})
        return new

    @property
    def uses_torch_optim(self) -> bool:
        """True when the optimizer is a ``torch.optim.Optimizer`` (in-place updates)."""
        return isinstance(self.opt_state, torch.optim.Optimizer)

    def __repr__(self) -> str:
        n = count(self.params)
        opt = (
            type(self.opt_state).__name__
            if self.uses_torch_optim
            else getattr(self.optimizer, "__name__", "GradientTransformation")
        )
        model = short_repr(self.model)
        return f"TrainState(model={model}, {n} parameters, optimizer={opt}, step={self.step})"


def _torch_optimizer(factory: Any, ps: Tree) -> tuple[Tree, torch.optim.Optimizer]:
    if not callable(factory):
        raise TypeError(
            "lux_torch.TrainState: optimizer must be a lux_torch.optim.GradientTransformation "
            "or a factory of a torch.optim.Optimizer (e.g. functools.partial(torch.optim.Adam, "
            f"lr=1e-3)), got {type(factory).__name__}"
        )
    ps = lux_map(lambda p: p.detach().clone().requires_grad_(True), ps)
    opt = factory(lux_leaves(ps))
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(
            "lux_torch.TrainState: optimizer must be a lux_torch.optim.GradientTransformation "
            f"or a factory of a torch.optim.Optimizer; calling {factory!r} on the parameters "
            f"returned {type(opt).__name__}"
        )
    return ps, opt


# ------------------------------------------------------------------------ loss calls


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _lux_loss_named(name: str) -> str | None:
    """The :mod:`lux_torch.losses` class named like torch's loss ``name`` (``MSELoss``,
    ``mse_loss``), if any."""
    key = name.lower().replace("_", "").removesuffix("loss")
    found = [n for n in losses.__all__ if n != "Loss" and n.lower().removesuffix("loss") == key]
    return found[0] if found else None


def _takes_pred_target(fn: Any) -> bool:
    """``fn`` takes two positional arguments, not four (a signature that cannot be read
    counts as not)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(None, None, None, None)
    except TypeError:
        try:
            signature.bind(None, None)
        except TypeError:
            return False
        return True
    return False


def _plain_loss_hint(loss_fn: Any) -> str | None:
    """For a plain ``(pred, target)`` loss (a ``torch.nn`` loss module, a
    ``torch.nn.functional`` function, any callable of two arguments): how to use it with
    :func:`train_step`; else ``None``. Called only where a loss call failed, or once when a
    step compiles."""
    if isinstance(loss_fn, torch.nn.Module):
        if not _takes_pred_target(loss_fn.forward):
            return None
        cls = type(loss_fn)
        prefix = "torch.nn." if cls.__module__.startswith("torch.nn.") else ""
        shown, call = f"{prefix}{cls.__name__}()", "criterion"
        lux_name, setup = _lux_loss_named(cls.__name__), f"criterion = {shown}  # your arguments\n"
    elif getattr(loss_fn, "__module__", None) == "torch.nn.functional":
        shown = call = f"torch.nn.functional.{loss_fn.__name__}"
        lux_name, setup = _lux_loss_named(loss_fn.__name__), ""
    elif _takes_pred_target(loss_fn):
        shown = call = _name(loss_fn)
        lux_name, setup = None, ""
    else:
        return None
    use = (
        f"lux_torch.losses.{lux_name}() (it takes torch's arguments)"
        if lux_name is not None
        else "the matching lux_torch.losses class (e.g. lux_torch.losses.MSELoss())"
    )
    return (
        f"lux_torch.training: loss_fn {shown} is a plain (pred, target) loss, but train_step "
        "(and compute_gradients) calls loss_fn(model, ps, st, data) and expects (loss, st, "
        f"stats) back (Lux's convention). Use {use}, or wrap it:\n\n{setup}"
        "def loss_fn(model, ps, st, data):\n"
        "    x, y = data\n"
        "    pred, st = model(x, ps, st)\n"
        f"    return {call}(pred, y), st, {{}}\n"
    )


def _call_loss(loss_fn: LossFn, model: Layer, ps: Tree, st: Tree, data: Any) -> Any:
    out = loss_fn(model, ps, st, data)
    if not isinstance(out, tuple) or len(out) != 3:
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        raise TypeError(
            f"lux_torch.training: loss_fn {_name(loss_fn)} must return (loss, st, stats) "
            f"(Lux's convention, see lux_torch.losses), got {got}"
        )
    loss = out[0]
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.is_floating_point():
        got = describe_value(loss)
        raise ValueError(
            f"lux_torch.training: loss_fn {_name(loss_fn)} must return a scalar (0-dim) "
            f"floating loss as its first output, got {got}; reduce it (e.g. .mean())"
        )
    return out


def _detach(tree: Tree) -> Tree:
    return lux_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def _resolve_ad(ad: str, model: Layer, compiled: bool) -> str:
    if ad not in _AD_MODES:
        raise ValueError(f"lux_torch.training: ad must be one of {_AD_MODES}, got {ad!r}")
    if ad != "auto":
        return ad
    if compiled and not _requires_autograd(model) and not _breaks_graph(model):
        return "func"
    return "autograd"


def _any_layer(layer: Layer, predicate: Callable[[Layer], bool]) -> bool:
    return predicate(layer) or any(_any_layer(c, predicate) for c in layer.children().values())


def _requires_autograd(layer: Layer) -> bool:
    """A layer sets ``requires_autograd = True`` where ``torch.func`` cannot differentiate it."""
    return _any_layer(layer, lambda la: bool(getattr(la, "requires_autograd", False)))


def _breaks_graph(layer: Layer) -> bool:
    """A layer sets ``compile_fullgraph = False`` where a part must run eagerly (e.g. an ODE
    solve wrapped in ``torch.compiler.disable``)."""
    return _any_layer(layer, lambda la: not getattr(la, "compile_fullgraph", True))


GradFn = Callable[[Tree, Tree, Any], tuple[Tree, torch.Tensor, Tree, Any]]


def _grad_fn(loss_fn: LossFn, model: Layer, ad: str, forward: Callable[..., Any] | None) -> GradFn:
    """``(ps, st, data) -> (grads, loss, new_st, stats)`` on the chosen gradient path."""
    call = forward if forward is not None else _call_loss

    if ad == "func":

        def objective(ps: Tree, st: Tree, data: Any) -> Any:
            loss, new_st, stats = call(loss_fn, model, ps, st, data)
            return loss, (loss, new_st, stats)

        grad_and_value = torch.func.grad_and_value(objective, has_aux=True)

        def func_path(ps: Tree, st: Tree, data: Any) -> Any:
            grads, (_, (loss, new_st, stats)) = grad_and_value(ps, st, data)
            return grads, loss.detach(), new_st, stats

        return func_path

    def autograd_path(ps: Tree, st: Tree, data: Any) -> Any:
        leaves, spec = flatten(ps)
        if not all(p.requires_grad and p.is_leaf for p in leaves):
            leaves = [p.detach().requires_grad_(True) for p in leaves]
            ps = unflatten(spec, leaves)
        with torch.enable_grad():
            loss, new_st, stats = call(loss_fn, model, ps, st, data)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        dense = [
            torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)
        ]
        return unflatten(spec, dense), loss.detach(), _detach(new_st), _detach(stats)

    return autograd_path


def _eager_gradients(
    loss_fn: LossFn, data: Any, ts: TrainState, ad: str
) -> tuple[Tree, torch.Tensor, Tree, Any]:
    """``(grads, loss, new_st, stats)`` of an eager step. Where it fails and ``loss_fn`` is
    a plain ``(pred, target)`` loss, a ``TypeError`` says how to use it instead (checked on
    the error path only)."""
    mode = _resolve_ad(ad, ts.model, compiled=False)
    try:
        return _grad_fn(loss_fn, ts.model, mode, None)(ts.params, ts.states, data)
    except Exception as error:
        hint = _plain_loss_hint(loss_fn)
        if hint is not None:
            raise TypeError(hint) from error
        raise


# ----------------------------------------------------------------------- public API


def compute_gradients(
    loss_fn: LossFn, data: Any, ts: TrainState, *, ad: str = "auto"
) -> tuple[Tree, torch.Tensor, Any, TrainState]:
    """Gradients of ``loss_fn`` with respect to ``ts.params`` (Lux's ``compute_gradients``).

    Arguments:
        loss_fn: ``loss_fn(model, ps, st, data) -> (loss, st, stats)``.
        data: passed to ``loss_fn`` unchanged (e.g. ``(x, y)``).
        ts: the train state.
        ad: ``"auto"``, ``"func"`` or ``"autograd"`` (see the module docstring).

    Returns:
        ``(grads, loss, stats, ts)``: ``grads`` has the structure of ``ts.params``; ``loss``
        is detached; ``ts`` carries the updated states (parameters unchanged).

    Raises:
        TypeError / ValueError: ``loss_fn`` does not return ``(scalar loss, st, stats)``.
        TypeError: ``loss_fn`` is a plain ``(pred, target)`` loss (see :func:`train_step`).

    Example:
        >>> grads, loss, stats, ts = lux.compute_gradients(lux.losses.MSELoss(), (x, y), ts)
        >>> ts = lux.apply_gradients(ts, grads)
    """
    grads, loss, new_st, stats = _eager_gradients(loss_fn, data, ts, ad)
    return grads, loss, stats, ts.replace(states=new_st)


def _check_grads(grads: Tree, ps: Tree) -> list[torch.Tensor]:
    leaves, _ = flatten_like(grads, ps, "lux_torch.apply_gradients: grads")
    for i, (g, p) in enumerate(zip(leaves, lux_leaves(ps), strict=True)):
        if not isinstance(g, torch.Tensor) or g.shape != p.shape:
            got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(
                f"lux_torch.apply_gradients: gradient of {paths(ps)[i]} has shape "
                f"{got}, the parameter has {tuple(p.shape)}"
            )
    return leaves


def apply_gradients(ts: TrainState, grads: Tree, *, donate: bool = False) -> TrainState:
    """Update ``ts.params`` with ``grads`` through the optimizer; ``step`` increases by one.

    Arguments:
        ts: the train state.
        grads: gradients with exactly the structure and shapes of ``ts.params``.
        donate: let the optimizer overwrite ``ts.params`` / ``ts.opt_state`` in place where
            it has a fused in-place kernel (:func:`lux_torch.optim.adam`, ``adamw``), like
            JAX's ``donate_argnums``: ``ts`` (and the ``ps`` it was built from) must not be
            used afterwards. Saves a copy of the parameters and moments per step.

    Returns:
        A new :class:`TrainState` (with a ``torch.optim`` optimizer, the parameter leaves are
        updated in place and shared with ``ts``).

    Raises:
        ValueError: ``grads`` differ from ``ts.params`` in structure or shapes (paths named).

    Example:
        >>> ts = lux.apply_gradients(ts, grads)
    """
    _check_grads(grads, ts.params)
    return _apply(ts, grads, donate)


def _reduction(ts: TrainState) -> tuple[Callable[[Any], Any] | None, Any]:
    """``(reduce, optimizer)``: for an optimizer whose update first reduces the gradients
    across processes (:func:`lux_torch.distributed.DistributedOptimizer`), the reduction
    and the optimizer without it, so that :func:`train_step` reduces the gradients (and
    the loss) *before* its finiteness check and every rank raises, or none does;
    otherwise ``(None, ts.optimizer)``."""
    descriptor = None if ts.uses_torch_optim else ts.optimizer.descriptor
    if not isinstance(descriptor, Reduced):
        return None, ts.optimizer
    return descriptor.reduce, descriptor.inner


def _reduced(reduce: Callable[[Any], Any] | None, grads: Tree, loss: torch.Tensor) -> Any:
    return (grads, loss) if reduce is None else reduce((grads, loss))


def _apply(ts: TrainState, grads: Tree, donate: bool, optimizer: Any = None) -> TrainState:
    """:func:`apply_gradients` for gradients known to match ``ts.params`` (our own), with
    ``optimizer`` in place of ``ts.optimizer`` if given."""
    if ts.uses_torch_optim:
        opt: torch.optim.Optimizer = ts.opt_state
        for p, g in zip(lux_leaves(ts.params), lux_leaves(grads), strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        return _stepped(ts, params=ts.params)
    optimizer = ts.optimizer if optimizer is None else optimizer
    params, opt_state = optim_step(optimizer, grads, ts.opt_state, ts.params, donate)
    return _stepped(ts, params=params, opt_state=opt_state)


def _stepped(ts: TrainState, params: Tree, **changes: Any) -> TrainState:
    """``ts`` one step later with new ``params`` (and ``changes``); the parameter average
    (``ts.ema``) takes them in."""
    if ts.ema is not None:
        with torch.no_grad():  # an average of values, not part of any gradient
            changes["ema_params"], changes["ema_state"] = ts.ema.update(params, ts.ema_state)
    return ts.replace(params=params, step=ts.step + 1, **changes)


def _next_state(ts: TrainState, params: Tree, states: Tree, opt_state: Any) -> TrainState:
    """:func:`_stepped` with new ``params``, ``states`` and ``opt_state``, built directly
    (the compiled step's every call: a few microseconds less than ``replace``)."""
    if ts.ema is not None:
        return _stepped(ts, params, states=states, opt_state=opt_state)
    new = object.__new__(TrainState)
    fields = (ts.model, params, states, ts.optimizer, opt_state, ts.step + 1)
    new._set(*fields, ts.ema, ts.ema_state, ts.ema_params, ts._cache)
    return new


def _all_finite(loss: torch.Tensor, grads: Tree) -> torch.Tensor | bool:
    """The loss and every gradient element are finite: a 0-dim bool tensor while tracing
    (fused into the graph's reductions), a Python bool when eager (read on the host)."""
    leaves = lux_leaves(grads)
    if tracing():
        flags = [torch.isfinite(loss).reshape(1)]
        flags += [torch.isfinite(g).all().reshape(1) for g in leaves]
        return torch.cat(flags).all()
    if not math.isfinite(loss.item()):
        return False
    if not leaves:
        return True
    first = leaves[0]
    if first.dtype in _AMP_DTYPES and all(
        g.dtype is first.dtype and g.device == first.device and g.is_contiguous() for g in leaves
    ):
        # GradScaler's fused check, 25x faster than the norms on small models. Its
        # unscale multiplies by exactly 1.0 in place: the gradients (fresh, dense,
        # owned by the step) keep their values.
        found = torch.zeros((), dtype=torch.float32, device=first.device)
        one = torch.ones((), dtype=torch.float32, device=first.device)
        try:
            torch._amp_foreach_non_finite_check_and_unscale_(leaves, found, one)
        except (RuntimeError, NotImplementedError):  # e.g. a device without the kernel
            pass
        else:
            return found.item() == 0
    norms = torch._foreach_norm(leaves, 1)  # a non-finite element makes its norm non-finite
    return math.isfinite(torch.stack(norms).sum().item())


def _raise_not_finite(loss_fn: LossFn, ts: TrainState, loss: torch.Tensor) -> None:
    what = "the loss" if not torch.isfinite(loss) else "a gradient"
    raise FloatingPointError(
        f"lux_torch.train_step: {what} is not finite at step {ts.step} (loss_fn "
        f"{_name(loss_fn)}, loss={loss.item()}); the parameters were not updated and the "
        "TrainState you passed is unchanged. Pass check_finite=False to skip this check."
    )


def train_step(
    loss_fn: LossFn,
    data: Any,
    ts: TrainState,
    *,
    compile: bool = False,
    ad: str = "auto",
    check_finite: bool = True,
    donate: bool = False,
) -> tuple[TrainState, torch.Tensor, Any]:
    """One optimisation step: gradients of ``loss_fn`` on ``data``, then the optimizer update.

    Arguments:
        loss_fn: ``loss_fn(model, ps, st, data) -> (loss, st, stats)``; every
            :class:`lux_torch.losses.Loss` qualifies.
        data: passed to ``loss_fn`` unchanged (e.g. ``(x, y)``).
        ts: the train state.
        compile: run forward, backward and the optimizer update as one
            ``torch.compile(fullgraph=True)`` graph, cached in ``ts`` (see the module
            docstring for recompilation rules).
        ad: gradient path, ``"auto"``, ``"func"`` or ``"autograd"``.
        check_finite: raise ``FloatingPointError`` when the loss or a gradient is NaN/Inf,
            before any parameter changes (costs one small reduction and a host sync).
            With ``False`` a NaN propagates into the parameters.
        donate: the step may overwrite ``ts.params`` and ``ts.opt_state`` in place where the
            optimizer has a fused in-place kernel (``lux.optim.adam``/``adamw``/``sgd``;
            see :func:`apply_gradients`), like JAX's
            ``donate_argnums``: only the returned train state is valid afterwards. With
            ``compile=True`` the gradients are then one graph and the update the fused
            kernel. The finiteness check still runs before anything is overwritten.

    Returns:
        ``(ts, loss, stats)``: the new train state, the detached loss (computed at the old
        parameters) and the ``stats`` returned by ``loss_fn``.

    Raises:
        TypeError / ValueError: ``loss_fn`` does not return ``(scalar loss, st, stats)``.
        TypeError: ``loss_fn`` is a plain ``(pred, target)`` loss (``torch.nn.MSELoss()``,
            ``torch.nn.functional.mse_loss``); the message shows the ``lux_torch.losses``
            equivalent and a wrapper.
        FloatingPointError: non-finite loss or gradients with ``check_finite=True``.

    Example:
        >>> for x, y in loader:
        ...     ts, loss, _ = lux.train_step(lux.losses.MSELoss(), (x, y), ts, compile=True)
    """
    if compile:
        return _compiled_step(loss_fn, data, ts, ad, check_finite, donate)
    grads, loss, new_st, stats = _eager_gradients(loss_fn, data, ts, ad)
    reduce, optimizer = _reduction(ts)
    grads, loss = _reduced(reduce, grads, loss)
    if check_finite and not bool(_all_finite(loss, grads)):
        _raise_not_finite(loss_fn, ts, loss)
    return _apply(ts.replace(states=new_st), grads, donate, optimizer), loss, stats


# ---------------------------------------------------------------------- compiled steps


def _compiled_step(
    loss_fn: LossFn, data: Any, ts: TrainState, ad: str, check_finite: bool, donate: bool
) -> tuple[TrainState, torch.Tensor, Any]:
    try:
        key: Hashable = (hash(loss_fn), loss_fn, ad, check_finite, donate)
    except TypeError:  # an unhashable callable: its identity (the cache keeps it alive)
        key = (id(loss_fn), ad, check_finite, donate)
    fn = ts._cache.get(key)
    if fn is None:
        hint = _plain_loss_hint(loss_fn)  # once: a plain loss fails inside the tracer
        if hint is not None:
            raise TypeError(hint)
        if len(ts._cache) >= _CACHE_WARN:
            warnings.warn(
                f"lux_torch.train_step: {len(ts._cache) + 1} compiled steps are cached in this "
                "TrainState; pass the same loss_fn object at every step (a new lambda per "
                "step compiles a new graph each time)",
                RuntimeWarning,
                stacklevel=3,
            )
        mode = _resolve_ad(ad, ts.model, compiled=True)
        fn = _build_compiled(loss_fn, ts, mode, check_finite, donate)
        ts._cache[key] = fn
    return fn(ts, data)


def _quiet_resume(forward: Callable[..., Any]) -> Callable[..., Any]:
    """Silence the warning Dynamo triggers itself when it resumes tracing after a graph
    break with a non-leaf tensor that requires grad (it reads ``.grad`` to guard on it)."""

    def call(*args: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", "The .grad attribute of a Tensor that is not a leaf", UserWarning
            )
            return forward(*args)

    return call


_Step = Callable[[TrainState, Any], tuple[TrainState, torch.Tensor, Any]]
_Compile = Callable[[Callable[..., Any]], Callable[..., Any]]


def _build_compiled(
    loss_fn: LossFn, ts: TrainState, mode: str, check_finite: bool, donate: bool
) -> _Step:
    """The compiled step of :func:`train_step` for one loss function, AD mode and flags."""
    reduce, optimizer = _reduction(ts)
    grad_fn, compile_fn = _compiled_gradients(loss_fn, ts.model, mode)
    fused = not ts.uses_torch_optim and has_fused_step(optimizer)
    # A small traced model is fastest as one pure graph: donate does not pay there.
    donate = donate and fused and (mode != "func" or count(ts.params) >= _FUSED_MIN)
    if ts.uses_torch_optim or donate:
        grads_only = _grads_and_flag(grad_fn, reduce, check_finite)
        if mode == "func":
            grads_only = compile_fn(grads_only)
        return _split_step(loss_fn, grads_only, optimizer, check_finite, donate)
    step_fn = _step_fn(grad_fn, compile_fn, mode, reduce, optimizer, check_finite)
    return _pure_step(loss_fn, step_fn, check_finite)


def _compiled_gradients(loss_fn: LossFn, model: Layer, mode: str) -> tuple[GradFn, _Compile]:
    """``(grad_fn, compile_fn)``: the gradient function of ``mode`` and how to compile a
    step function around it."""
    options: dict[str, Any] = {"fullgraph": True, "dynamic": False}
    if mode == "func":
        grad_fn = _grad_fn(loss_fn, model, "func", None)
        guard = python_reads(loss_fn)
        name = f"lux_torch.train_step(compile=True, loss_fn={_name(loss_fn)})"

        def compile_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
            # traced once per input signature and compiled by Inductor; torch.compile
            # takes over where the step cannot be traced (see lux_torch._graph)
            return Traced(fn, name=name, guard=guard, fallback=lambda: torch.compile(fn, **options))

        return grad_fn, compile_fn
    # autograd: compile the forward (AOTAutograd compiles its backward too)
    forward: Callable[..., Any] = torch.compile(
        _call_loss, **{**options, "fullgraph": not _breaks_graph(model)}
    )
    if _breaks_graph(model):
        forward = _quiet_resume(forward)

    def compile_autograd(fn: Callable[..., Any]) -> Callable[..., Any]:
        return torch.compile(fn, **options)

    return _grad_fn(loss_fn, model, "autograd", forward), compile_autograd


def _grads_and_flag(
    grad_fn: GradFn, reduce: Callable[[Any], Any] | None, check_finite: bool
) -> Callable[[Tree, Tree, Any], Any]:
    """The gradients, reduced, and the finiteness flag (``None`` unless checked)."""

    def grads_and_flag(ps: Tree, st: Tree, data: Any) -> Any:
        grads, loss, new_st, stats = grad_fn(ps, st, data)
        grads, loss = _reduced(reduce, grads, loss)
        finite = _all_finite(loss, grads) if check_finite else None
        return grads, loss, new_st, stats, finite

    return grads_and_flag


def _split_step(
    loss_fn: LossFn,
    grads_only: Callable[[Tree, Tree, Any], Any],
    optimizer: Any,
    check_finite: bool,
    donate: bool,
) -> _Step:
    """The gradients (and the finiteness flag) in one graph, then an in-place update:
    torch.optim's step, or the fused Adam kernel on the donated buffers."""

    def split_step(ts: TrainState, data: Any) -> Any:
        grads, loss, new_st, stats, finite = grads_only(ts.params, ts.states, data)
        if check_finite and not bool(finite):
            _raise_not_finite(loss_fn, ts, loss)
        new = _apply(ts.replace(states=new_st), grads, donate, optimizer)
        return new, loss, stats

    return split_step


def _step_fn(
    grad_fn: GradFn,
    compile_fn: _Compile,
    mode: str,
    reduce: Callable[[Any], Any] | None,
    optimizer: Any,
    check_finite: bool,
) -> Callable[[Tree, Tree, Any, Any], Any]:
    """``(ps, st, opt_state, data) -> (new_ps, new_st, opt_state, loss, stats, finite)``:
    forward, backward and update as one graph (``func``), or the compiled forward and
    backward then a compiled update (``autograd``)."""

    def update(ps: Tree, opt_state: Any, grads: Tree, loss: torch.Tensor) -> Any:
        updates, opt_state = optimizer.update(grads, opt_state, ps)
        finite = _all_finite(loss, grads) if check_finite else torch.ones((), dtype=torch.bool)
        return apply_updates(ps, updates), opt_state, finite

    update_c = update if mode == "func" else compile_fn(update)

    def step_fn(ps: Tree, st: Tree, opt_state: Any, data: Any) -> Any:
        grads, loss, new_st, stats = grad_fn(ps, st, data)
        grads, loss = _reduced(reduce, grads, loss)
        new_ps, opt_state, finite = update_c(ps, opt_state, grads, loss)
        return new_ps, new_st, opt_state, loss, stats, finite

    return compile_fn(step_fn) if mode == "func" else step_fn


def _pure_step(
    loss_fn: LossFn, step_fn: Callable[[Tree, Tree, Any, Any], Any], check_finite: bool
) -> _Step:
    """A step that runs ``step_fn`` and returns the new train state (no buffer reused)."""

    def pure_step(ts: TrainState, data: Any) -> Any:
        new_ps, new_st, opt_state, loss, stats, finite = step_fn(
            ts.params, ts.states, ts.opt_state, data
        )
        if check_finite and not bool(finite):
            _raise_not_finite(loss_fn, ts, loss)
        new = _next_state(ts, new_ps, new_st, opt_state)
        return new, loss, stats

    return pure_step
