"""The core contract: immutable layers, explicit parameter and state trees, pure calls.

A :class:`Layer` is a frozen description (sizes, activations, initializers, child layers).
Its parameters ``ps`` and state ``st`` are nested dicts of tensors created by
:func:`setup`; the forward pass ``y, st = layer(x, ps, st)`` is a pure function::

    model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 1))
    ps, st = lux.setup(lux.random.key(0), model)
    y, st = model(x, ps, st)

Writing a layer
---------------
Subclass :class:`Layer`, declare configuration fields with annotations (the subclass
becomes a frozen dataclass automatically), implement ``__call__(self, x, ps, st)`` and,
if the layer owns tensors, ``init_params(self, key)`` / ``init_state(self, key)``.

Children are automatic. A field holding a :class:`Layer` is a child named after the field;
a field holding a mapping of layers contributes its keys as child names; a field holding
a tuple or list of layers contributes ``{field}_1, {field}_2, ...``. The default
``init_params``/``init_state`` return ``{child_name: child_tree}``, each child initialised
with its own key ``fold_in(key, crc32(child_name))`` so that adding a layer never changes
its siblings' initial values. Display, counting, mode switching, ``vmap`` and
``torch.compile`` support need nothing more.

Shape checks
------------
Every call checks the tensors the layer owns in ``ps`` and ``st`` (not its children's:
each child checks its own) against the layer's *shape signature*: the shapes its
``init_params``/``init_state`` give, computed once at construction on the meta device (so
nothing is allocated; custom initialisers are called there too). A mis-shaped tensor raises
``ValueError`` before the layer computes anything with it -- a bias of shape ``(1,)`` would
otherwise broadcast silently, and torch's fused RNN kernels do not check shapes at all::

    Linear(2 => 16): ps['weight'] has shape (32, 2), but the layer's configuration expects
    a tensor of shape (16, 2) (do these parameters/state belong to another model?)

A missing entry raises ``KeyError``, a value that is not a tensor ``TypeError``. The check
costs a few tuple comparisons per layer per call; under ``torch.compile`` it becomes guards
and under ``vmap`` it sees each member's shapes. Inside a ``torch.compile`` trace the
error is raised as is (a ``ValueError``, not Dynamo's "Observed exception"), saying which
shape was expected. Custom layers get it for free; a layer
whose initialisers cannot run on the meta device is not checked (and fails the harness's
``structure`` check).

Errors
------
An exception raised inside a layer is re-raised unchanged (same type) with a note naming
the layer's path in the model and its repr, e.g.
``in layer_2.decoder.layer_1 (Linear(16 => 1)): expected input of shape (*, 16), got (4, 3)``;
when ``ps`` or ``st`` do not match the model's structure the note lists the missing and
unexpected keys, and when the input's floating dtype differs from the parameters' it says
how to cast (``lux.f64(ps)``). That work happens only on the error path, and not while
``torch.compile`` traces (Dynamo reports the error itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import types
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

try:
    from typing import dataclass_transform
except ImportError:  # Python 3.10: typing_extensions ships with torch
    from typing_extensions import dataclass_transform

from . import random as lrandom
from . import tree as ltree
from ._graph import assume_constant_result
from .init import default_dtype
from .tree import Static

__all__ = [
    "Layer",
    "StatefulLayer",
    "apply",
    "check_structure",
    "init_params",
    "init_state",
    "param_count",
    "setup",
    "state_count",
    "test_mode",
    "train_mode",
]

Params = dict[str, Any]
State = dict[str, Any]


# --------------------------------------------------------------------------- layers


def _freeze(value: Any) -> Any:
    """Make a field value immutable: lists become tuples, dicts read-only mappings."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return types.MappingProxyType(dict(value))
    return value


def _rebuild_layer(cls: Any, attrs: dict[str, Any]) -> Any:
    """Unpickle a layer: its attributes as they were, without running its constructor."""
    layer = cls.__new__(cls)
    for name, value in attrs.items():
        object.__setattr__(layer, name, _freeze(value))
    layer.__dict__[_SIGNATURE] = _signature(layer)
    return layer


# --------------------------------------------------------------------------- shape signature

_SIGNATURE = "_lux_signature"  # a private, non-field attribute (eq, hash and pickle ignore it)

# (0 for ps or 1 for st, (key or index, ...), shape) for every tensor a layer owns directly
_Signature = tuple[tuple[int, tuple[Any, ...], tuple[int, ...]], ...]


def _own_entries(which: int, tree: Any, children: Mapping[str, Any]) -> _Signature:
    """The tensor leaves of ``tree`` outside the children's subtrees, with their paths."""
    out: list[tuple[int, tuple[Any, ...], tuple[int, ...]]] = []

    def walk(node: Any, keys: tuple[Any, ...]) -> None:
        if isinstance(node, torch.Tensor):
            out.append((which, keys, tuple(node.shape)))  # plain ints: trace constants
        elif isinstance(node, Mapping):
            for k, v in node.items():
                if not (keys == () and k in children):
                    walk(v, (*keys, k))
        elif isinstance(node, (tuple, list)):
            for i, v in enumerate(node):
                walk(v, (*keys, i))

    walk(tree, ())
    return tuple(out)


def _signature(layer: Layer) -> _Signature | None:
    """The shapes of the tensors ``layer`` owns in ``ps`` and ``st``, from its configuration.

    Computed once per layer (at construction) by running ``init_params``/``init_state`` on
    the meta device, so nothing is allocated. ``None`` when the layer owns no tensor, or when
    its initialisers cannot run on the meta device (a custom layer: it is then not checked).
    """
    cls = type(layer)
    if cls.init_params is Layer.init_params and cls.init_state is Layer.init_state:
        return None  # a plain container: each child checks its own tensors
    try:
        ps, st = setup(0, layer, device="meta")
    except Exception:
        return None
    children = layer.children()
    return _own_entries(0, ps, children) + _own_entries(1, st, children) or None


def _check_shapes(layer: Layer, signature: _Signature, ps: Any, st: Any) -> None:
    """Raise when a tensor that ``layer`` owns in ``ps``/``st`` is missing or mis-shaped.

    ``KeyError`` for a missing entry (the error note then lists every missing key),
    ``TypeError`` for a value that is not a tensor, ``ValueError`` for a wrong shape.
    """
    trees = (ps, st)
    for i, (which, keys, shape) in enumerate(signature):
        node = trees[which]
        for k in keys:
            try:
                node = node[k]
            except (KeyError, TypeError, IndexError):
                raise KeyError(k) from None
        if getattr(node, "shape", None) != shape:
            tensor = isinstance(node, torch.Tensor)
            if torch.compiler.is_compiling():  # pass constants only (the entry's index)
                _refuse_while_tracing(layer, i, None if tensor else type(node).__name__)
            got = tuple(node.shape) if tensor else type(node).__name__
            raise _shape_error(layer, ("ps", "st")[which], keys, shape, got)


def _shape_error(
    layer: Layer, label: str, keys: tuple[Any, ...], shape: tuple[int, ...], got: Any
) -> Exception:
    """``TypeError`` for a value that is not a tensor (``got`` its type's name), else
    ``ValueError`` (``got`` its shape, or ``None`` inside a ``torch.compile`` trace)."""
    from .display import short_repr

    name = label + "".join(f"[{k!r}]" for k in keys)
    expected = f"the layer's configuration expects a tensor of shape {tuple(shape)}"
    if isinstance(got, str):
        return TypeError(f"{short_repr(layer)}: {name} is a {got}, but {expected}")
    has = "has another shape" if got is None else f"has shape {tuple(got)}"
    return ValueError(
        f"{short_repr(layer)}: {name} {has}, but {expected} "
        "(do these parameters/state belong to another model?)"
    )


class _TracedShapeError(ValueError, AssertionError):
    """A shape error raised from a ``torch.compile`` trace: a ``ValueError`` (what the eager
    call raises); also an ``AssertionError`` only because Dynamo passes assertion errors
    from code it runs (rather than traces) through unchanged, where it would wrap any other
    exception in its own."""


@assume_constant_result
def _refuse_while_tracing(layer: Layer, entry: int, got: str | None) -> bool:
    """Raise the shape error of signature entry ``entry`` from a ``torch.compile`` trace.

    Dynamo runs this function instead of tracing it, so the user gets lux's ``ValueError``
    (see :class:`_TracedShapeError`), not Dynamo's "Observed exception" with lux's message
    in its details; a ``TypeError`` comes wrapped as ``InternalTorchDynamoError: TypeError:
    ...``. Its arguments must be trace constants: the actual sizes may be symbolic, and
    under ``dynamic=True`` even the signature's ints read in the trace are, so the entry is
    looked up here."""
    which, keys, shape = layer.__dict__[_SIGNATURE][entry]
    error = _shape_error(layer, ("ps", "st")[which], keys, shape, got)
    if isinstance(error, ValueError):
        raise _TracedShapeError(*error.args)
    raise error


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, tuple):
        return tuple(_hashable(v) for v in value)
    return value


def _is_layer_collection(value: Any) -> bool:
    if isinstance(value, Mapping):
        return len(value) > 0 and all(isinstance(v, Layer) for v in value.values())
    if isinstance(value, tuple):
        return len(value) > 0 and all(isinstance(v, Layer) for v in value)
    return False


def _annotating_call(call: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a layer's ``__call__``: check the shapes of the tensors it owns in ``ps``/``st``
    against its signature, and give errors a note naming the layer's path (error path only)."""

    @functools.wraps(call)
    def __call__(self: Layer, x: Any, ps: Any, st: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            signature = self.__dict__.get(_SIGNATURE)
            if signature is not None:
                _check_shapes(self, signature, ps, st)
            return call(self, x, ps, st, *args, **kwargs)
        except Exception as err:
            if not torch.compiler.is_compiling():  # Dynamo reports the error as it is
                _annotate(err, self, x, ps, st)
            raise

    # a code object per layer class: Dynamo keeps its cache and recompile limit per code
    # object, so compiling one class's calls never uses up another's
    __call__.__code__ = __call__.__code__.replace()  # type: ignore[attr-defined]  # a def
    __call__._lux_annotating = True  # type: ignore[attr-defined]  # a marker, read with getattr
    return __call__


@dataclass_transform(frozen_default=True, eq_default=False)
class Layer:
    """Base class of every lux_torch layer: an immutable, hashable description.

    Subclasses are turned into frozen dataclasses (``eq`` and ``hash`` by configuration),
    so setting an attribute after construction raises
    :class:`dataclasses.FrozenInstanceError`; use :func:`dataclasses.replace` to derive a
    modified layer. Fields must hold configuration, never tensors.

    Hooks a subclass may override:

    - ``__call__(self, x, ps, st) -> (y, new_st)``: the pure forward pass.
    - ``init_params(self, key) -> dict`` and ``init_state(self, key) -> dict``.
    - ``extra_repr(self) -> str``: what goes between the parentheses in a printout.
    - ``describe_input_error(self, x) -> str | None``: on the error path only, explain
      what input was expected (e.g. ``"expected input of shape (*, 16), got (4, 3)"``).

    Example:
        >>> class Affine(Layer):
        ...     features: int
        ...     def init_params(self, key):
        ...         return {"scale": torch.ones(self.features), "shift": torch.zeros(self.features)}
        ...     def __call__(self, x, ps, st):
        ...         return x * ps["scale"] + ps["shift"], st
        >>> ps, st = setup(lrandom.key(0), Affine(3))
        >>> Affine(3)(torch.ones(2, 3), ps, st)[0].shape
        torch.Size([2, 3])
    """

    if TYPE_CHECKING:  # every subclass is a dataclass (set in __init_subclass__)
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    #: Keyword arguments the constructor accepts without storing them, ``{name: check}``:
    #: ``check(class_name, name, value)`` raises when the value cannot be honoured. Built-in
    #: layers use it for torch.nn's ``device``/``dtype`` (tensors are made by :func:`setup`)
    #: and ``inplace`` (a pure layer never mutates) arguments.
    constructor_only: ClassVar[Mapping[str, Callable[[str, str, Any], None]]] = (
        types.MappingProxyType({})
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)
        if "__call__" in cls.__dict__ and not getattr(cls.__call__, "_lux_annotating", False):
            cls.__call__ = _annotating_call(cls.__call__)  # type: ignore[method-assign]  # wrap once
        original_init = cls.__init__
        own = set(inspect.signature(original_init).parameters)
        only = {k: v for k, v in cls.constructor_only.items() if k not in own}

        @functools.wraps(original_init)
        def __init__(self: Layer, *args: Any, **kw: Any) -> None:
            for name in [n for n in kw if n in only]:
                only[name](cls.__name__, name, kw.pop(name))
            original_init(self, *args, **kw)
            if type(self) is cls:
                self._finalize()

        cls.__init__ = __init__  # type: ignore[method-assign,assignment]  # wraps the dataclass's

    def _set_fields(self, **values: Any) -> None:
        """Set fields from a custom ``__init__`` (the dataclass is frozen)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _finalize(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                raise TypeError(
                    f"{type(self).__name__}.{f.name} is a Tensor: layers hold configuration "
                    "only. Create trainable tensors in init_params and state tensors in "
                    "init_state."
                )
            frozen = _freeze(value)
            if frozen is not value:
                object.__setattr__(self, f.name, frozen)
        self.children()  # validates that child names are unique
        self.__dict__[_SIGNATURE] = _signature(self)

    # -- configuration identity
    def _config(self) -> tuple[Any, ...]:
        return tuple(_hashable(getattr(self, f.name)) for f in dataclasses.fields(self))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return type(other) is type(self) and other._config() == self._config()

    def __hash__(self) -> int:
        return hash((type(self), self._config()))

    # -- copying and pickling (read-only mappings are not picklable as such)
    def __deepcopy__(self, memo: dict[int, Any]) -> Layer:
        return self  # immutable: a deep copy is the layer itself

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_layer, (type(self), _attributes(self)))

    # -- structure
    def children(self) -> dict[str, Layer]:
        """The child layers by name, in declaration order (see the module docstring)."""
        out: dict[str, Layer] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Layer):
                items: list[tuple[str, Layer]] = [(f.name, value)]
            elif _is_layer_collection(value):
                if isinstance(value, Mapping):
                    items = [(str(k), v) for k, v in value.items()]
                else:
                    items = [(f"{f.name}_{i}", v) for i, v in enumerate(value, 1)]
            else:
                continue
            for name, child in items:
                if name in out:
                    raise ValueError(
                        f"{type(self).__name__}: two children are named {name!r}; "
                        "child names must be unique"
                    )
                out[name] = child
        return out

    def init_params(self, key: torch.Tensor) -> Params:
        """Initial parameters; by default ``{name: child.init_params(child_key)}``."""
        return {
            name: child.init_params(child_key(key, name)) for name, child in self.children().items()
        }

    def init_state(self, key: torch.Tensor) -> State:
        """Initial state; by default ``{name: child.init_state(child_key)}``."""
        return {
            name: child.init_state(child_key(key, name)) for name, child in self.children().items()
        }

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    # -- display hooks (rendering lives in lux_torch.display)
    def extra_repr(self) -> str:
        """Arguments shown in the printout: fields that differ from their defaults."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Layer) or _is_layer_collection(value):
                continue
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            parts.append(f"{f.name}={describe_config(value)}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        """Explain, on the error path, what input the layer expected. ``None``: no opinion."""
        return None

    def __repr__(self) -> str:
        from .display import layer_repr

        return layer_repr(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        from .display import layer_html

        return layer_html(self)


def _attributes(layer: Layer) -> dict[str, Any]:
    """The layer's own attributes (read-only mappings as dicts), without derived ones."""
    return {
        k: dict(v) if isinstance(v, types.MappingProxyType) else v
        for k, v in vars(layer).items()
        if k != _SIGNATURE
    }


def describe_config(value: Any) -> str:
    """Short display of a configuration value (functions by name)."""
    if isinstance(value, functools.partial):
        args = [describe_config(a) for a in value.args] + [
            f"{k}={describe_config(v)}" for k, v in value.keywords.items()
        ]
        return f"{describe_config(value.func)}({', '.join(args)})"
    if callable(value) and hasattr(value, "__name__") and not isinstance(value, Layer):
        return str(value.__name__)
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    return repr(value)


def child_key(key: torch.Tensor, name: str) -> torch.Tensor:
    """The key of the child called ``name``: ``fold_in(key, crc32(name))`` (stable)."""
    return lrandom.fold_in(key, zlib.crc32(name.encode()))


def replace_fields(layer: Layer, /, **changes: Any) -> Layer:
    """A copy of ``layer`` with some fields replaced, bypassing its constructor.

    Used to rebuild containers with rewritten children (display, layer_map): unlike
    :func:`dataclasses.replace` it works for layers with custom ``__init__`` signatures.
    """
    # _rebuild_layer freezes the values and derives the signature once, from the new
    # children (a layer's own tensors may depend on them, as WeightNorm's do)
    rebuilt: Layer = _rebuild_layer(type(layer), {**_attributes(layer), **changes})
    return rebuilt


def rebuild_layer(layer: Layer, /, **changes: Any) -> Layer:
    """A copy of ``layer`` with some fields replaced, its constructor's checks run again.

    When the constructor takes every field by its name (a plain dataclass layer), the copy
    is built by it (:func:`dataclasses.replace`); otherwise (``Chain(*layers)``) the fields
    are set directly and the checks every layer gets at construction (no tensor fields,
    unique child names, the shape signature) and its ``__post_init__`` run on the copy.
    """
    cls = type(layer)
    params = inspect.signature(cls.__init__).parameters
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if all(f.name in named for f in dataclasses.fields(layer) if f.init):
        return dataclasses.replace(layer, **changes)
    for name, value in changes.items():
        old = getattr(layer, name)
        was_child = isinstance(old, Layer) or _is_layer_collection(old)
        if was_child and not (isinstance(value, Layer) or _is_layer_collection(_freeze(value))):
            entries = dict(value) if isinstance(value, Mapping) else {}
            bad = {k: describe_value(v) for k, v in entries.items() if not isinstance(v, Layer)}
            raise TypeError(
                f"{type(layer).__name__}.{name} holds child layers; the replacement must be "
                f"a layer (or a collection of layers) too, got {bad or describe_value(value)}"
            )
    rebuilt = replace_fields(layer, **changes)
    post_init = getattr(rebuilt, "__post_init__", None)
    if post_init is not None:
        post_init()
    rebuilt._finalize()
    return rebuilt


def map_children(layer: Layer, fn: Callable[[str, Layer], Layer]) -> Layer:
    """Rebuild ``layer`` with every direct child ``c`` (named ``n``) replaced by ``fn(n, c)``."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(layer):
        value = getattr(layer, f.name)
        if isinstance(value, Layer):
            changes[f.name] = fn(f.name, value)
        elif _is_layer_collection(value):
            if isinstance(value, Mapping):
                changes[f.name] = {k: fn(str(k), v) for k, v in value.items()}
            else:
                changes[f.name] = tuple(fn(f"{f.name}_{i}", v) for i, v in enumerate(value, 1))
    return replace_fields(layer, **changes) if changes else layer


# --------------------------------------------------------------------------- setup


def describe_value(value: Any) -> str:
    """``"a <dtype> tensor of shape (...)"`` for a tensor, else the type's name (errors)."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _as_key(key: torch.Tensor | int, where: str) -> torch.Tensor:
    if isinstance(key, int) and not isinstance(key, bool):
        return lrandom.key(key)
    if not (isinstance(key, torch.Tensor) and key.shape == (2,) and key.dtype == torch.int64):
        got = describe_value(key)
        raise TypeError(
            f"{where}: expected a key from lux.random.key(seed) (an int64 tensor of "
            f"shape (2,)) or an int seed, got {got}"
        )
    return key


def _check_model(model: Any, where: str, key: Any = None) -> Layer:
    if model is None:  # ``lux.setup(model)``: the key was left out
        if isinstance(key, (Layer, torch.nn.Module)):
            _check_model(key, where)  # a torch module: the from_torch hint
            raise TypeError(
                f"{where} takes a key first: {where}(lux.random.key(seed), model) (or an int seed)"
            )
        raise TypeError(f"{where}(key, model): no model given")
    if isinstance(model, torch.nn.Module):
        raise TypeError(
            f"{where}: expected a lux_torch Layer, got the torch.nn.Module "
            f"{type(model).__name__}; wrap it as a pure layer first: layer = "
            "lux.from_torch(module), then ps, st = lux.setup(key, layer)"
        )
    if not isinstance(model, Layer):
        raise TypeError(f"{where}: expected a lux_torch Layer, got {type(model).__name__}")
    return model


@contextlib.contextmanager
def _creating(device: torch.device | str | None, dtype: torch.dtype | None) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if device is not None:
            stack.enter_context(torch.device(device))
        stack.enter_context(default_dtype(dtype))
        yield


def _finish(
    tree: dict[str, Any], device: torch.device | str | None, dtype: torch.dtype | None
) -> dict[str, Any]:
    """Convert leaves a custom init created elsewhere (built-ins are already right)."""
    target = torch.device(device) if device is not None else None

    def fix(leaf: torch.Tensor) -> torch.Tensor:
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"init_params/init_state must return tensors as leaves, got {type(leaf).__name__}"
            )
        if target is not None and leaf.device.type != target.type:
            leaf = leaf.to(target)
        if dtype is not None and leaf.is_floating_point() and leaf.dtype != dtype:
            leaf = leaf.to(dtype)
        return leaf

    fixed: dict[str, Any] = ltree.map(fix, tree)  # a map keeps the root's type
    return fixed


def _initialise(
    which: str,
    key: torch.Tensor | int,
    model: Layer | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> dict[str, Any]:
    where = f"lux.{which}"
    model = _check_model(model, where, key)
    key = _as_key(key, where)
    if device is not None:
        key = key.to(device)
    with _creating(device, dtype):
        tree = getattr(model, which)(key)
    return _finish(tree, device, dtype)


def init_params(
    key: torch.Tensor | int,
    model: Layer | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Params:
    """Initial parameters of ``model``, created directly on ``device`` in ``dtype``.

    ``dtype`` applies to floating-point tensors; ``key`` may be an int seed.
    """
    return _initialise("init_params", key, model, device, dtype)


def init_state(
    key: torch.Tensor | int,
    model: Layer | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> State:
    """Initial state of ``model`` (training mode), on ``device``, floats in ``dtype``."""
    return _initialise("init_state", key, model, device, dtype)


def setup(
    key: torch.Tensor | int,
    model: Layer | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Params, State]:
    """``(init_params(...), init_state(...))`` from one key.

    Arguments:
        key: a key from :func:`lux_torch.random.key` (or an int seed).
        model: the layer.
        device: where to create every tensor (default: the key's device, usually CPU).
        dtype: dtype of every floating-point tensor (default: torch's default dtype).

    Returns:
        ``(ps, st)``: nested dicts of tensors; ``st`` holds mode flags and random keys.
    """
    _check_model(model, "lux.setup", key)
    return (
        init_params(key, model, device=device, dtype=dtype),
        init_state(key, model, device=device, dtype=dtype),
    )


def apply(model: Layer, x: Any, ps: Params, st: State) -> tuple[Any, State]:
    """``model(x, ps, st)``: run the pure forward pass, return ``(y, new_st)``."""
    return model(x, ps, st)


def param_count(model: Layer) -> int:
    """Number of parameter elements, computed on the meta device (no memory allocated)."""
    return ltree.count(init_params(0, model, device="meta"))


def state_count(model: Layer) -> int:
    """Number of state elements (mode flags count zero), computed on the meta device."""
    return ltree.count(init_state(0, model, device="meta"))


# --------------------------------------------------------------------------- modes


def _set_mode(st: State, training: bool) -> State:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: Static(training) if k == "training" and isinstance(v, Static) else walk(v)
                for k, v in node.items()
            }
        return node

    new: State = walk(st)  # a dict stays a dict
    return new


def train_mode(st: State) -> State:
    """A copy of ``st`` with every ``training`` flag set (leaves are shared, not copied)."""
    return _set_mode(st, True)


def test_mode(st: State) -> State:
    """A copy of ``st`` with every ``training`` flag cleared: inference behaviour."""
    return _set_mode(st, False)


test_mode.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --------------------------------------------------------------------------- structure


def _diff(expected: Any, given: Any, prefix: str = "") -> tuple[list[str], list[str], list[str]]:
    missing: list[str] = []
    extra: list[str] = []
    shapes: list[str] = []
    if isinstance(expected, dict) and isinstance(given, Mapping):
        for k, v in expected.items():
            if k in given:
                m, e, s = _diff(v, given[k], f"{prefix}{k}.")
                missing += m
                extra += e
                shapes += s
            else:
                missing += [p for p in ltree.key_paths(v, f"{prefix}{k}.")] or [prefix + k]
        for k in given:
            if k not in expected:
                extra.append(prefix + str(k))
    elif isinstance(expected, dict):
        missing.append(f"{prefix[:-1] or '<root>'} (expected a dict, got {type(given).__name__})")
    elif isinstance(expected, torch.Tensor):
        if not isinstance(given, torch.Tensor):
            shapes.append(f"{prefix[:-1]}: expected a Tensor, got {type(given).__name__}")
        elif given.shape != expected.shape:
            shapes.append(
                f"{prefix[:-1]}: expected shape {tuple(expected.shape)}, got {tuple(given.shape)}"
            )
    return missing, extra, shapes


def structure_problems(model: Layer, ps: Any, st: Any) -> list[str]:
    """Human-readable differences between ``(ps, st)`` and what ``model`` expects."""
    expected_ps, expected_st = setup(0, model, device="meta")
    problems = []
    for label, expected, given in (("ps", expected_ps, ps), ("st", expected_st, st)):
        missing, extra, shapes = _diff(expected, given)
        if missing:
            problems.append(f"{label} is missing keys: {', '.join(missing)}")
        if extra:
            problems.append(f"{label} has unexpected keys: {', '.join(extra)}")
        if shapes:
            problems.append(f"{label} has mis-shaped entries: {'; '.join(shapes)}")
    return problems


def check_structure(model: Layer, ps: Params, st: State) -> None:
    """Raise ``ValueError`` naming every missing, unexpected or mis-shaped entry.

    Called once by :class:`StatefulLayer` and by :mod:`lux_torch.testing`. A plain call of
    the model checks only the shapes of the tensors each layer owns (see the module
    docstring); this check compares the whole trees, extra keys included.
    """
    problems = structure_problems(model, ps, st)
    if problems:
        from .display import short_repr

        raise ValueError(
            f"parameters/state do not match {short_repr(model)}:\n  " + "\n  ".join(problems)
        )


# --------------------------------------------------------------------------- errors


def _child_name(parent: Layer, parent_ps: Any, child: Layer, child_ps: Any) -> str:
    if isinstance(parent_ps, Mapping):
        for name, value in parent_ps.items():
            if value is child_ps:
                return str(name)
    for name, value in parent.children().items():
        if value is child:
            return name
    return f"<{type(child).__name__}>"


_PRECISION_CASTS = {
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float32: "f32",
    torch.float64: "f64",
}


def _float_dtypes(tree: Any) -> set[torch.dtype]:
    found = ltree.leaves(tree) if not isinstance(tree, torch.Tensor) else [tree]
    return {t.dtype for t in found if isinstance(t, torch.Tensor) and t.is_floating_point()}


def _dtype_hint(err: Exception, x: Any, ps: Any) -> str | None:
    """On a dtype error, say how to make the input's and the parameters' dtypes agree."""
    if not isinstance(err, (RuntimeError, TypeError)) or "type" not in str(err).lower():
        return None
    given, own = _float_dtypes(x), _float_dtypes(ps)
    if len(given) != 1 or len(own) != 1 or given == own:
        return None
    (x_dtype,), (p_dtype,) = given, own
    cast = _PRECISION_CASTS.get(x_dtype)
    fix = f"cast the parameters with lux.{cast}(ps) (and the state with lux.{cast}(st)), or "
    return (
        f"the input is {describe_config(x_dtype)} "
        f"but the parameters are {describe_config(p_dtype)}: "
        f"{fix if cast else ''}convert the input with x.to({p_dtype})"
    )


def _annotate(err: Exception, layer: Layer, x: Any, ps: Any, st: Any) -> None:
    """Attach (or refresh) a note naming the failing layer's path; error path only."""
    from .display import short_repr

    frames: list[tuple[Layer, Any]] = err.__dict__.setdefault("_lux_frames", [])
    if frames and frames[-1][0] is layer and frames[-1][1] is ps:
        return  # the same layer, via super().__call__
    if not frames:
        detail = None
        try:
            detail = layer.describe_input_error(x) or _dtype_hint(err, x, ps)
        except Exception:
            detail = None
        err.__dict__["_lux_detail"] = detail
    frames.append((layer, ps))
    names = [
        _child_name(frames[i][0], frames[i][1], frames[i - 1][0], frames[i - 1][1])
        for i in range(len(frames) - 1, 0, -1)
    ]
    inner = frames[0][0]
    where = f"{'.'.join(names)} ({short_repr(inner)})" if names else short_repr(inner)
    note = f"in {where}"
    detail = err.__dict__.get("_lux_detail")
    if detail:
        note += f": {detail}"
    if isinstance(err, (KeyError, TypeError, AttributeError, IndexError)):
        try:
            problems = structure_problems(layer, ps, st)
        except Exception:
            problems = []
        if problems:
            note += f"\nparameters/state do not match {short_repr(layer)}:\n  " + "\n  ".join(
                problems
            )
    index = err.__dict__.get("_lux_note_index")
    if index is None:
        err.add_note(note)
        err.__dict__["_lux_note_index"] = len(err.__notes__) - 1
    else:
        err.__notes__[index] = note


# --------------------------------------------------------------------------- bridge


class StatefulLayer:
    """Bridge to APIs that want ``f(x) -> y``: holds ``ps`` and the latest ``st``.

    Arguments:
        model: the layer.
        ps: its parameters (used as given: share, don't copy).
        st: its initial state; after each call ``self.st`` is the state the call returned.

    Raises:
        ValueError: if ``ps``/``st`` do not match ``model`` (checked once, here).

    Example::

        f = StatefulLayer(model, ps, st)
        y = f(x)          # f.st now holds the state this call returned
    """

    def __init__(self, model: Layer, ps: Params, st: State) -> None:
        _check_model(model, "lux.StatefulLayer")
        check_structure(model, ps, st)
        self.model = model
        self.ps = ps
        self.st = st

    def __call__(self, x: Any) -> Any:
        y, self.st = self.model(x, self.ps, self.st)
        return y

    def __repr__(self) -> str:
        from .display import short_repr

        return f"StatefulLayer({short_repr(self.model)})"
