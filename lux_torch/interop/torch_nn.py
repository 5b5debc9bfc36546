"""Interoperability with ``torch.nn``: flat ``state_dict`` s, modules in, modules out.

Built-in layers name their tensors like ``torch.nn`` (``weight``, ``bias``, ...), and
containers nest them by child name, so ``state_dict(ps, st)`` gives the dotted names a
PyTorch user expects (``"layer_1.weight"``) and a torch ``state_dict`` whose names follow
the same layout loads directly with :func:`load_state_dict` (lux's random keys, which torch
has no counterpart for, then come from ``lux.setup(key, model)``).

:func:`from_torch` takes any ``nn.Module`` in as a pure layer (:class:`TorchModule`):
its parameters become ``ps`` and its buffers ``st``, nested by module path, so
``state_dict(ps, st)`` gives the module's own names. :func:`to_torch` hands a model out as
an ``nn.Module`` (:class:`LuxModule`) for ``torch.optim``, Lightning, DDP and friends::

    layer = lux.from_torch(torch_module)          # any nn.Module -> pure layer
    ps, st = lux.setup(0, layer)                  # copies of the module's tensors
    y, st = layer(x, ps, st)

    module = lux.to_torch(model, ps, st)          # pure layer -> nn.Module
    module(x).sum().backward()
    ps, st = module.lux_params(), module.lux_state()
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping
from operator import attrgetter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import tree as ltree
from ..core import (
    Layer,
    Params,
    State,
    check_structure,
    init_state,
    setup,
    test_mode,
    train_mode,
)
from ..tree import Static

__all__ = [
    "LuxModule",
    "StateDictError",
    "TorchModule",
    "from_torch",
    "load_state_dict",
    "state_dict",
    "to_torch",
]


def state_dict(ps: Params, st: State) -> dict[str, torch.Tensor]:
    """Flatten ``ps`` and ``st`` into one ``{"a.b.weight": tensor}`` dict.

    Parameters come first, then state tensors (random keys, running statistics). Mode
    flags are static and are not included. Tensors are shared, not copied.

    Raises:
        ValueError: if ``ps`` and ``st`` both hold an entry with the same dotted name.
    """
    flat = dict(ltree.flatten_with_paths(ps))
    for path, leaf in ltree.flatten_with_paths(st):
        if path in flat:
            raise ValueError(f"state_dict: {path!r} is both a parameter and a state entry")
        flat[path] = leaf
    return flat


class StateDictError(ValueError):
    """A flat ``state_dict`` does not match the model (:func:`load_state_dict`).

    The message lists, one per line, the missing entries, the unexpected ones and those
    whose shape differs; the same lists are the attributes ``missing``, ``unexpected`` and
    ``mis_shaped`` (tuples of strings), for code that wants to inspect them.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[str, ...] = (),
        unexpected: tuple[str, ...] = (),
        mis_shaped: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mis_shaped = mis_shaped


def _is_random_key(path: str, leaf: torch.Tensor) -> bool:
    """Whether a state entry is one of lux's random keys (``st["key"]`` of the dropout-like
    layers, ``st["mask_key"]`` of ``VariationalHiddenDropout``): an int64 tensor of shape
    ``(2,)``, as :func:`lux_torch.random.key` makes, under one of those names."""
    name = path.rsplit(".", 1)[-1]
    return name in ("key", "mask_key") and leaf.dtype == torch.int64 and leaf.shape == (2,)


def load_state_dict(
    model: Layer,
    sd: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    key: torch.Tensor | int = 0,
) -> tuple[Params, State]:
    """Rebuild ``(ps, st)`` for ``model`` from a flat ``state_dict``.

    The structure comes from ``model`` (built on the meta device, so nothing is
    allocated); tensors come from ``sd`` as given (not copied or cast). Mode flags are
    set to training mode, as after :func:`lux_torch.setup`.

    A torch ``nn.Module.state_dict()`` with the same layout loads directly, also for layers
    with dropout (``RNN``/``LSTM``/``GRU`` with ``dropout``, ``MultiheadAttention``,
    the Transformer layers): their random keys (``st[...]["key"]``, and
    ``VariationalHiddenDropout``'s ``mask_key``), which torch has no counterpart for, are
    taken from ``lux.setup(key, model)`` whenever ``sd`` lacks them, on the device of
    ``sd``'s tensors. Random keys that ``sd`` holds (a :func:`state_dict` of lux's own)
    are used as given. Every other entry must be in ``sd``.

    Arguments:
        model: the layer whose structure to fill.
        sd: flat mapping of dotted names to tensors (e.g. from :func:`state_dict`, or a
            torch ``nn.Module.state_dict()`` with the same layout).
        strict: if ``False``, entries of ``sd`` the model does not have are ignored (missing
            and mis-shaped entries are still errors).
        key: a :func:`lux_torch.random.key` or an int seed for the random keys ``sd``
            lacks (default 0: loading the same ``sd`` twice gives the same state).

    Returns:
        ``(ps, st)`` in training mode.

    Raises:
        StateDictError: (a ``ValueError``) listing every missing entry, every unexpected
            entry (when ``strict``) and every entry whose shape differs from the model's.
    """
    template_ps, template_st = setup(0, model, device="meta")
    ps_leaves, ps_spec = ltree.flatten(template_ps)
    st_leaves, st_spec = ltree.flatten(template_st)
    ps_items = list(zip(ltree.paths(template_ps), ps_leaves, strict=True))
    st_items = list(zip(ltree.paths(template_st), st_leaves, strict=True))

    missing: list[str] = []
    to_fill: list[str] = []
    mis_shaped: list[str] = []
    in_state = [False] * len(ps_items) + [True] * len(st_items)
    for (path, leaf), is_state in zip(ps_items + st_items, in_state, strict=True):
        if path in sd:
            value = sd[path]
            if not isinstance(value, torch.Tensor) or value.shape != leaf.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                mis_shaped.append(f"{path}: expected {tuple(leaf.shape)}, got {got}")
        elif is_state and _is_random_key(path, leaf):
            to_fill.append(path)
        else:
            missing.append(path)
    known = {path for path, _ in ps_items + st_items}
    unexpected = sorted(set(sd) - known) if strict else []
    if missing or unexpected or mis_shaped:
        lines = []
        if missing:
            lines.append(f"missing: {', '.join(missing)}")
        if unexpected:
            lines.append(f"unexpected: {', '.join(unexpected)}")
        if mis_shaped:
            lines.append(f"mis-shaped: {'; '.join(mis_shaped)}")
        raise StateDictError(
            f"load_state_dict({type(model).__name__}): the state_dict does not match the "
            "model:\n  " + "\n  ".join(lines),
            missing=tuple(missing),
            unexpected=tuple(unexpected),
            mis_shaped=tuple(mis_shaped),
        )

    fresh: dict[str, torch.Tensor] = {}
    if to_fill:
        device = next((t.device for t in sd.values() if isinstance(t, torch.Tensor)), None)
        fresh = dict(ltree.flatten_with_paths(init_state(key, model, device=device)))
    ps = ltree.unflatten(ps_spec, [sd[path] for path, _ in ps_items])
    st = ltree.unflatten(st_spec, [sd[path] if path in sd else fresh[path] for path, _ in st_items])
    return ps, st


# --------------------------------------------------------------------------- from_torch


def _nest(items: Iterator[tuple[str, Any]] | list[tuple[str, Any]]) -> dict[str, Any]:
    """``[("0.weight", t), ...]`` -> ``{"0": {"weight": t}}`` (the inverse of dotted paths)."""
    root: dict[str, Any] = {}
    for name, value in items:
        *parents, leaf = name.split(".")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return root


def _lookup(tree: Mapping[str, Any], name: str) -> Any:
    """``tree["a"]["b"]["weight"]`` for ``name = "a.b.weight"`` (a ``KeyError`` if absent)."""
    node: Any = tree
    for part in name.split("."):
        node = node[part]
    return node


class _FunctionalBatchNorm:
    """``forward`` of ``nn.BatchNorm*d`` that never updates a buffer in place.

    Mixed into private subclasses of ``nn.BatchNorm1d/2d/3d`` (see :data:`_FUNCTIONAL`),
    which :class:`TorchModule` swaps in on its *private* copy of the user's module. A
    training-mode call with running statistics gives the kernel fresh zero buffers and
    ``momentum=1`` (it fills them with the batch mean and unbiased variance, as in
    :class:`lux_torch.BatchNorm1d`) and *rebinds* the running-statistics buffers to
    ``(1 - momentum) * running + momentum * batch_statistic`` (an empty batch only
    increments ``num_batches_tracked``, as torch). Under ``torch.func.vmap``
    the fresh buffers are batched whenever the input is, so this works where torch's
    in-place update of unbatched buffers fails (pytorch issue 85533). Every other case
    (evaluation, no running statistics) is torch's own ``forward``, which writes nothing.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bn: Any = self  # an nn.BatchNorm*d instance (this class is mixed into subclasses)
        running_mean, running_var = bn.running_mean, bn.running_var
        if not (bn.training and bn.track_running_stats) or (
            running_mean is None or running_var is None
        ):
            return super().forward(input)  # type: ignore[misc,no-any-return]
        bn._check_input_dim(input)
        factor: float | torch.Tensor = 0.0 if bn.momentum is None else bn.momentum
        if bn.num_batches_tracked is not None:
            count = bn.num_batches_tracked + 1
            bn.num_batches_tracked = count
            if bn.momentum is None:  # cumulative moving average, as torch
                factor = 1.0 / count.to(running_mean.dtype)
        mean = input.new_zeros(bn.num_features, dtype=running_mean.dtype)
        var = input.new_zeros(bn.num_features, dtype=running_mean.dtype)
        y = F.batch_norm(input, mean, var, bn.weight, bn.bias, True, 1.0, bn.eps)
        if input.numel() == 0:  # a static shape: torch only counts an empty batch
            return y
        bn.running_mean = running_mean * (1 - factor) + mean * factor
        bn.running_var = running_var * (1 - factor) + var * factor
        return y


class _FunctionalBatchNorm1d(_FunctionalBatchNorm, nn.BatchNorm1d):
    pass


class _FunctionalBatchNorm2d(_FunctionalBatchNorm, nn.BatchNorm2d):
    pass


class _FunctionalBatchNorm3d(_FunctionalBatchNorm, nn.BatchNorm3d):
    pass


#: exact torch classes whose instances get a functional ``forward`` in the private copy
_FUNCTIONAL: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: _FunctionalBatchNorm1d,
    nn.BatchNorm2d: _FunctionalBatchNorm2d,
    nn.BatchNorm3d: _FunctionalBatchNorm3d,
}


class _Runner(nn.Module):
    """Calls the private copy and returns its buffers as they are at the end of the call.

    Under :func:`torch.func.functional_call` the buffers are the tensors we passed, either
    updated in place (fresh clones) or rebound by the module (e.g. ``_FunctionalBatchNorm``);
    reading them inside the call catches both.
    """

    def __init__(self, inner: nn.Module, buffer_names: tuple[str, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.buffer_names = buffer_names

    def forward(self, args: tuple[Any, ...]) -> tuple[Any, list[torch.Tensor]]:
        y = self.inner(*args)
        return y, [self.inner.get_buffer(name) for name in self.buffer_names]


def _private_copy(module: nn.Module, training: bool) -> nn.Module:
    """A structural copy of ``module`` whose tensors live on the meta device (no memory).

    Tied parameters stay tied (``deepcopy`` maps each tensor object once). BatchNorm
    instances of the exact torch classes get a functional ``forward``.
    """
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    private = copy.deepcopy(module, memo)
    for sub in private.modules():
        functional = _FUNCTIONAL.get(type(sub))
        if functional is not None:
            sub.__class__ = functional
    return private.train(training)


def _creating_on_meta() -> bool:
    """Whether the caller creates tensors on the meta device (``param_count`` etc.)."""
    return torch.get_default_device().type == "meta"


class _Private:
    """What a :class:`TorchModule` derives from its module once: names, private copies."""

    __slots__ = ("buffer_names", "lock", "param_names", "runners")

    def __init__(
        self,
        param_names: tuple[str, ...],
        buffer_names: tuple[str, ...],
        runners: tuple[_Runner, _Runner],
    ) -> None:
        self.param_names = param_names
        self.buffer_names = buffer_names
        self.runners = runners  # (eval copy, train copy): indexed by the training flag
        self.lock = threading.RLock()


class TorchModule(Layer):
    """Any ``torch.nn.Module`` as a pure lux layer (see :func:`from_torch`).

    Arguments:
        module: the module. It is configuration: the layer compares and hashes by the
            module's *identity* (two layers are equal when they wrap the same module
            object), and it is never modified by the layer.

    Input:
        ``x``: the module's input; a tuple is unpacked into positional arguments
        (``module(*x)``), like :func:`lux_torch.testing.check_layer` does.

    Returns:
        ``(y, new_st)``: the module's output and the state holding its buffers after the
        call (e.g. BatchNorm's updated running statistics), as new tensors.

    **Parameters**
        The module's parameters nested by module path, with the module's names and shapes:
        ``module.get_parameter("0.weight")`` is ``ps["0"]["weight"]``. Tied parameters
        (one ``nn.Parameter`` registered under several names) appear once, under their
        first name (``module.named_parameters()``), and stay tied in the call.

    **States**
        - The module's buffers (persistent and non-persistent), nested the same way, e.g.
          ``st["1"]["running_mean"]``.
        - ``training``: ``Static(module.training)``; :func:`lux_torch.test_mode` switches
          the whole module to ``eval()`` behaviour, :func:`lux_torch.train_mode` to
          ``train()`` (like ``module.train(mode)``: per-submodule modes are not kept).

    How the call stays pure: at construction the layer makes two private *structural*
    copies of the module (one in ``train()``, one in ``eval()`` mode) whose tensors are on
    the meta device, so they cost no memory. A call runs the copy of the requested mode
    through :func:`torch.func.functional_call` with the tensors of ``ps`` and *clones* of
    the buffers in ``st``: a module that updates a buffer in place updates the clone, and
    the clones come back in ``new_st``. ``nn.BatchNorm1d/2d/3d`` instances in the copy
    compute their running update out of place instead (see ``_FunctionalBatchNorm``), so
    they also work under :func:`torch.func.vmap` over parameters, inputs or states. The
    user's module is never modified and no mode is switched per call; eager calls of one
    layer from several threads are serialised by a per-layer lock, because
    ``functional_call`` swaps the tensors of the shared private copy for the call.

    Limitations: the module's structure and configuration are captured at construction
    (build a new layer after changing them). Modules whose forward branches in Python on
    tensor values cannot run under ``vmap`` or ``torch.compile(fullgraph=True)``, and
    modules other than the BatchNorms above that update a buffer *in place* work under
    ``vmap`` only when the buffer is batched too (stacked ``st``), as in plain torch.
    """

    module: nn.Module

    def __post_init__(self) -> None:
        module = self.module
        if not isinstance(module, nn.Module):
            raise TypeError(f"TorchModule: expected a torch.nn.Module, got {type(module).__name__}")
        lazy = [
            name
            for name, t in [*module.named_parameters(), *module.named_buffers()]
            if nn.parameter.is_lazy(t)
        ]
        if lazy:
            raise ValueError(
                f"TorchModule: {type(module).__name__} has uninitialized (lazy) tensors "
                f"{lazy}; run one forward pass of the module before wrapping it"
            )
        buffer_names = tuple(name for name, _ in module.named_buffers())
        runners = (
            _Runner(_private_copy(module, False), buffer_names),
            _Runner(_private_copy(module, True), buffer_names),
        )
        param_names = tuple(n for n, _ in module.named_parameters())
        # a private, non-field attribute: not configuration (eq/hash ignore it)
        self.__dict__["_impl"] = _Private(param_names, buffer_names, runners)

    @property
    def _private(self) -> _Private:
        return self.__dict__["_impl"]  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type, tuple[nn.Module]]:
        # copy and pickle rebuild the private copies from the module
        return (TorchModule, (self.module,))

    def __deepcopy__(self, memo: dict[int, Any]) -> TorchModule:
        # unlike built-in layers, this one holds a mutable module: a deep copy copies it
        return TorchModule(copy.deepcopy(self.module, memo))

    def _tensors(self, names: tuple[str, ...], tensors: list[torch.Tensor]) -> dict[str, Any]:
        if _creating_on_meta():  # parameter/state counting: allocate nothing
            tensors = [torch.empty_like(t, device="meta") for t in tensors]
        else:
            tensors = [t.detach().clone() for t in tensors]
        return _nest(list(zip(names, tensors, strict=True)))

    def init_params(self, key: torch.Tensor) -> Params:
        """Copies of the module's current parameters (``key`` is not used)."""
        params = dict(self.module.named_parameters())
        return self._tensors(
            self._private.param_names, [params[n] for n in self._private.param_names]
        )

    def init_state(self, key: torch.Tensor) -> State:
        """Copies of the module's current buffers, and its ``training`` flag."""
        buffers = dict(self.module.named_buffers())
        st = self._tensors(
            self._private.buffer_names, [buffers[n] for n in self._private.buffer_names]
        )
        st["training"] = Static(self.module.training)
        return st

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        training = bool(st["training"])
        tensors = {f"inner.{n}": _lookup(ps, n) for n in self._private.param_names}
        buffers = {f"inner.{n}": _lookup(st, n).clone() for n in self._private.buffer_names}
        args = x if isinstance(x, tuple) else (x,)
        runner = self._private.runners[training]
        if torch.compiler.is_compiling():  # traced once; the graph does not touch the copy
            y, new = torch.func.functional_call(runner, tensors | buffers, (args,))
        else:
            with self._private.lock:
                y, new = torch.func.functional_call(runner, tensors | buffers, (args,))
        new_st = _nest(list(zip(self._private.buffer_names, new, strict=True)))
        new_st["training"] = st["training"]
        return y, new_st

    def extra_repr(self) -> str:
        return type(self.module).__name__


def from_torch(module: nn.Module) -> TorchModule:
    """Wrap any ``torch.nn.Module`` as a pure lux layer.

    ``ps`` holds the module's parameters and ``st`` its buffers, nested by module path, so
    ``lux.state_dict(ps, st)`` gives the module's own ``state_dict`` names (plus its
    non-persistent buffers; a tied parameter appears once). ``st["training"]`` starts as
    ``module.training``. The module itself is never modified: :func:`lux_torch.setup`
    returns copies of its current tensors, and each call works on the given ``ps`` and on
    clones of the buffers in ``st``, returning the updated buffers (e.g. BatchNorm's running
    statistics) in the new state. The layer works under :func:`torch.func.grad`,
    :func:`torch.func.vmap` (BatchNorm included) and ``torch.compile(fullgraph=True)``; see
    :class:`TorchModule` for how, and for the limitations.

    Arguments:
        module: any ``nn.Module`` whose parameters are initialised (run lazy modules once).

    Returns:
        A :class:`TorchModule` layer; it equals another one exactly when both wrap the
        same module object.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ValueError: the module has uninitialized (lazy) parameters or buffers.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> layer = from_torch(net)
        >>> ps, st = setup(0, layer)
        >>> sorted(state_dict(ps, st)) == sorted(net.state_dict())
        True
        >>> y, st = layer(torch.randn(8, 3), ps, st)   # net is unchanged
    """
    return TorchModule(module)


# --------------------------------------------------------------------------- to_torch


class _Slot:
    """Where leaf number ``index`` goes in a tree template (see :func:`_template`)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _template(tree: Any, what: str) -> tuple[Any, list[tuple[tuple[str, ...], torch.Tensor]]]:
    """``(template, [(path parts, leaf), ...])``: ``tree`` with its tensors replaced by slots.

    Plain Python over dicts, lists, tuples and static flags, so that rebuilding a tree
    (:func:`_fill`) traces under ``torch.compile`` and ``torch.export(strict=True)``.
    """
    leaves: list[tuple[tuple[str, ...], torch.Tensor]] = []

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, torch.Tensor):
            bad = [p for p in path if p == "" or "." in p]
            if bad:
                raise ValueError(
                    f"to_torch: {what}.{'.'.join(path)}: the key {bad[0]!r} cannot be an "
                    "nn.Module attribute name (empty, or contains '.')"
                )
            leaves.append((path, node))
            return _Slot(len(leaves) - 1)
        if isinstance(node, Mapping):
            return {k: walk(v, (*path, str(k))) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v, (*path, str(i))) for i, v in enumerate(node))
        if isinstance(node, Static):
            return node
        raise TypeError(
            f"to_torch: {what}.{'.'.join(path)} is a {type(node).__name__}; expected a "
            "tensor, a dict, a list, a tuple or a static flag"
        )

    return walk(tree, ()), leaves


def _fill(template: Any, leaves: list[Any]) -> Any:
    """The tree of ``template`` holding ``leaves`` (inverse of :func:`_template`)."""
    if isinstance(template, _Slot):
        return leaves[template.index]
    if isinstance(template, dict):
        return {k: _fill(v, leaves) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(_fill(v, leaves) for v in template)
    return template


def _pull(template: Any, tree: Any, out: list[Any]) -> bool:
    """Append the leaves of ``tree`` at ``template``'s slots; ``False`` on a mismatch."""
    if isinstance(template, _Slot):
        out.append(tree)
        return isinstance(tree, torch.Tensor)
    if isinstance(template, dict):
        return (
            isinstance(tree, dict)
            and tree.keys() == template.keys()
            and all(_pull(v, tree[k], out) for k, v in template.items())
        )
    if isinstance(template, (list, tuple)):
        return (
            type(tree) is type(template)
            and len(tree) == len(template)
            and all(_pull(v, t, out) for v, t in zip(template, tree, strict=True))
        )
    return isinstance(tree, Static)


class _Config:
    """The immutable configuration of a :class:`LuxModule`, shared (not copied) by
    ``copy.deepcopy`` of the module: layers and templates are never modified."""

    __slots__ = ("model", "ps_names", "ps_template", "st_names", "st_template")

    def __init__(
        self,
        model: Layer,
        ps_template: Any,
        st_template: Any,
        ps_names: tuple[str, ...],
        st_names: tuple[str, ...],
    ) -> None:
        self.model = model
        self.ps_template = ps_template
        self.st_template = st_template
        self.ps_names = ps_names
        self.st_names = st_names

    def __deepcopy__(self, memo: dict[int, Any]) -> _Config:
        return self


class _Node(nn.Module):
    """A plain container for the tensors of one level of the parameter/state tree."""

    def forward(self, *args: Any) -> Any:
        raise RuntimeError("to_torch: an internal container module cannot be called")


class LuxModule(nn.Module):
    """A lux model as an ``nn.Module`` (see :func:`to_torch`).

    The parameters are ``nn.Parameter`` s holding ``ps`` and the buffers hold the tensors of
    ``st``, registered in nested submodules that mirror the trees, so
    ``module.state_dict()`` has the names of ``lux.state_dict(ps, st)`` (``"layer_1.weight"``)
    and ``module.get_parameter("layer_1.weight")`` is ``ps["layer_1"]["weight"]``.

    ``forward(*args)`` calls ``model(x, ps, st)`` with the current parameters and buffers
    (``x = args[0]``, or the tuple ``args`` for several arguments), in train or test mode
    following ``module.training``, and **rebinds** each buffer whose tensor the model
    replaced to the returned (detached) tensor: buffers are never written in place, so a
    tensor that autograd saved for the backward pass is never modified. ``train()`` and
    ``eval()`` map to :func:`lux_torch.train_mode` / :func:`lux_torch.test_mode`.

    Get the trees back with :meth:`lux_params` and :meth:`lux_state`; the model is
    :attr:`lux_model`.
    """

    def __init__(self, model: Layer, ps: Params, st: State, *, copy: bool = True) -> None:
        super().__init__()
        if not isinstance(model, Layer):
            raise TypeError(f"to_torch: expected a lux_torch Layer, got {type(model).__name__}")
        check_structure(model, ps, st)
        ps_template, param_leaves = _template(ps, "ps")
        st_template, state_leaves = _template(st, "st")
        ps_names = tuple(".".join(p) for p, _ in param_leaves)
        st_names = tuple(".".join(p) for p, _ in state_leaves)
        # st_template carries st's mode flags; every call sets them from self.training
        self._lux = _Config(model, ps_template, st_template, ps_names, st_names)
        clashes = set(ps_names) & set(st_names)
        if clashes:
            raise ValueError(f"to_torch: {sorted(clashes)} are both parameters and states")
        shared: dict[int, nn.Parameter] = {}  # one Parameter per tensor object: ties stay
        for parts, leaf in param_leaves:
            param = shared.get(id(leaf))
            if param is None:
                data = leaf.detach().clone() if copy else leaf.detach()
                param = nn.Parameter(data, requires_grad=ltree.is_inexact(leaf))
                shared[id(leaf)] = param
            self._container(parts).register_parameter(parts[-1], param)
        for parts, leaf in state_leaves:
            data = leaf.detach().clone() if copy else leaf.detach()
            self._container(parts).register_buffer(parts[-1], data)
        flags = [s.value for s in _flags(st)]
        self.train(all(flags))

    def _container(self, parts: tuple[str, ...]) -> nn.Module:
        """The (new or existing) submodule that holds the tensor at ``parts``."""
        node: nn.Module = self
        for i, part in enumerate(parts[:-1]):
            child = node._modules.get(part)
            if child is None:
                if part in node._parameters or part in node._buffers or hasattr(node, part):
                    raise ValueError(
                        f"to_torch: cannot create the submodule {'.'.join(parts[: i + 1])!r}: "
                        f"{part!r} is already a tensor or an nn.Module attribute"
                    )
                child = _Node()
                node.add_module(part, child)
            node = child
        name = parts[-1]
        if name in node._modules or (
            hasattr(node, name) and name not in node._parameters and name not in node._buffers
        ):
            raise ValueError(
                f"to_torch: cannot register {'.'.join(parts)!r}: {name!r} is already a "
                "submodule or an nn.Module attribute"
            )
        return node

    @property
    def lux_model(self) -> Layer:
        """The lux model this module runs."""
        return self._lux.model

    def _trees(self) -> tuple[Params, State]:
        """``(ps, st)`` holding the current parameters and buffers (no copies)."""
        # attribute lookup (not get_parameter): under functional_call they are plain tensors
        ps = _fill(self._lux.ps_template, [attrgetter(n)(self) for n in self._lux.ps_names])
        st = _fill(self._lux.st_template, [attrgetter(n)(self) for n in self._lux.st_names])
        return ps, train_mode(st) if self.training else test_mode(st)

    def lux_params(self, *, copy: bool = True) -> Params:
        """The current parameters as a lux ``ps`` tree.

        Arguments:
            copy: return detached clones (default); ``False`` returns detached tensors that
                share memory with the module's parameters (later optimizer steps show).
        """
        ps, _ = self._trees()
        out: Params = ltree.map(lambda t: t.detach().clone() if copy else t.detach(), ps)
        return out

    def lux_state(self, *, copy: bool = True) -> State:
        """The current buffers as a lux ``st`` tree, flags set by ``self.training``.

        Arguments:
            copy: return detached clones (default); ``False`` returns detached tensors that
                share memory with the module's buffers.
        """
        _, st = self._trees()
        out: State = ltree.map(lambda t: t.detach().clone() if copy else t.detach(), st)
        return out

    def lux_forward(self, *args: Any) -> tuple[Any, State]:
        """``model(x, ps, st)`` on the current tensors, without touching the buffers."""
        ps, st = self._trees()
        x = args[0] if len(args) == 1 else args
        return self._lux.model(x, ps, st)

    def forward(self, *args: Any) -> Any:
        """Run the model; buffers whose state changed are rebound to the new tensors."""
        y, new_st = self.lux_forward(*args)
        leaves: list[Any] = []
        if not _pull(self._lux.st_template, new_st, leaves):
            raise ValueError(
                f"to_torch: {type(self._lux.model).__name__} returned a state whose structure "
                "differs from its input state"
            )
        for name, leaf in zip(self._lux.st_names, leaves, strict=True):
            if leaf is not attrgetter(name)(self):
                *parents, attr = name.split(".")
                owner = self.get_submodule(".".join(parents)) if parents else self
                setattr(owner, attr, leaf.detach())
        return y

    def extra_repr(self) -> str:
        from ..display import short_repr

        return f"lux_model={short_repr(self._lux.model)}"


def _flags(st: Any) -> list[Static]:
    """The ``training`` flags in ``st``."""
    out: list[Static] = []
    if isinstance(st, Mapping):
        for k, v in st.items():
            if k == "training" and isinstance(v, Static):
                out.append(v)
            else:
                out.extend(_flags(v))
    return out


def to_torch(model: Layer, ps: Params, st: State, *, copy: bool = True) -> LuxModule:
    """A lux model with its parameters and state as an ``nn.Module``.

    The module's parameters are ``nn.Parameter`` s holding ``ps``; its buffers hold the
    tensors of ``st``. Both are registered in nested submodules that mirror the trees, so
    ``module.state_dict()`` has the names of :func:`state_dict` (``"layer_1.weight"``),
    and a tensor that appears several times in ``ps`` becomes one shared parameter. Its
    ``forward(x)`` calls ``model(x, ps, st)`` with the current tensors and rebinds the
    buffers to the returned state (see :class:`LuxModule`); ``.train()``/``.eval()`` select
    :func:`lux_torch.train_mode` / :func:`lux_torch.test_mode`. The module starts in
    ``eval()`` mode when a ``training`` flag of ``st`` is cleared, else in ``train()`` mode.
    Get the trees back with ``module.lux_params()`` and ``module.lux_state()``.

    Arguments:
        model: the lux layer.
        ps: its parameters.
        st: its state.
        copy: copy the tensors (default), so that training the module never changes the
            given trees; ``False`` shares their memory (in-place optimizer steps then
            change ``ps``).

    Returns:
        A :class:`LuxModule`.

    Raises:
        TypeError: ``model`` is not a layer, or a leaf is not a tensor.
        ValueError: ``ps``/``st`` do not match the model, a key cannot be a module
            attribute name (contains ``"."``, or is an ``nn.Module`` attribute such as
            ``"forward"``), or a name is both a parameter and a state entry.

    Example:
        >>> model = lux.Chain(lux.Linear(2, 8), lux.Linear(8, 1))  # doctest: +SKIP
        >>> module = to_torch(model, *lux.setup(0, model))  # doctest: +SKIP
        >>> opt = torch.optim.Adam(module.parameters(), lr=1e-3)  # doctest: +SKIP
        >>> ps = module.lux_params()  # doctest: +SKIP
    """
    return LuxModule(model, ps, st, copy=copy)
