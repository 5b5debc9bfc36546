"""Layers without a class: :class:`Compact` and the :func:`compact` decorator (Lux's
``@compact``, Flax's ``nn.compact``).

A layer with children and parameters of its own usually takes a class: fields for the
children, ``init_params`` for the parameters, ``__call__``. :class:`Compact` takes the
same three things as values -- the children, the declared tensors (:class:`Param`,
:class:`Buffer`) and a function ``(x, ps, st, layers) -> (y, st)`` -- and is an ordinary
:class:`~lux_torch.Layer`: it initialises, counts, prints, checks shapes, composes with
containers, ``torch.func`` and ``torch.compile`` like any other.

Example::

    @lux.compact(
        encoder=lux.Linear(2, 16, activation=torch.tanh),
        decoder=lux.Linear(16, 2),
        scale=lux.Param((2,), lux.init.ones),
    )
    def autoencoder(x, ps, st, layers):
        h, st_enc = layers.encoder(x, ps["encoder"], st["encoder"])
        y, st_dec = layers.decoder(h, ps["decoder"], st["decoder"])
        return y * ps["scale"], {**st, "encoder": st_enc, "decoder": st_dec}

    ps, st = lux.setup(0, autoencoder)   # ps: encoder, decoder, scale
    y, st = autoencoder(x, ps, st)
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import init as linit
from ..core import Layer, Params, State, child_key, describe_config, describe_value

__all__ = ["Buffer", "Compact", "Param", "compact"]

Initializer = Callable[..., torch.Tensor]
Forward = Callable[[Any, Params, State, Any], tuple[Any, State]]


@dataclasses.dataclass(frozen=True)
class Param:
    """A trainable tensor that a :class:`Compact` layer declares: ``init(key, *shape)``.

    Arguments:
        shape: the tensor's shape.
        init: an initializer ``f(key, *shape, dtype=None, device=None) -> Tensor``
            (:mod:`lux_torch.init`; ``functools.partial`` configures one). Default zeros.
    """

    shape: tuple[int, ...]
    init: Initializer = linit.zeros

    def __post_init__(self) -> None:
        _check_declaration(type(self).__name__, self.shape, self.init)


@dataclasses.dataclass(frozen=True)
class Buffer:
    """A state tensor (not trained, returned by the call) that a :class:`Compact` declares.

    Arguments: as :class:`Param`.
    """

    shape: tuple[int, ...]
    init: Initializer = linit.zeros

    def __post_init__(self) -> None:
        _check_declaration(type(self).__name__, self.shape, self.init)


def _check_declaration(kind: str, shape: Any, init: Any) -> None:
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise TypeError(f"{kind}: shape must be a tuple of ints >= 0, e.g. (16,), got {shape!r}")
    if not callable(init):
        raise TypeError(f"{kind}: init must be an initializer f(key, *shape), got {init!r}")


class _Layers:
    """What the function of a :class:`Compact` receives as ``layers``: its children, by
    attribute (``layers.encoder``) or by item (``layers["encoder"]``)."""

    def __init__(self, children: Mapping[str, Layer]) -> None:
        self.__dict__.update(children)
        self._names = list(children)

    def __getattr__(self, name: str) -> Layer:  # only for names that are not children
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"Compact: no child named {name!r}; declared children: {self._names}")

    def __getitem__(self, name: str) -> Layer:
        layer: Layer = getattr(self, name)
        return layer


class Compact(Layer):
    """A layer made of declared children, declared tensors and a forward function.

    Arguments:
        forward: ``forward(x, ps, st, layers) -> (y, new_st)``, pure. ``ps`` holds every
            child's parameters under its name and every :class:`Param` under its name;
            ``st`` likewise (children's states and :class:`Buffer` s); ``layers`` gives the
            children (``layers.encoder`` or ``layers["encoder"]``), each called as
            ``layers.encoder(h, ps["encoder"], st["encoder"])``. ``new_st`` must have the
            structure of ``st`` (children's new states, buffers' new values).
        layers: the children, ``{name: layer}``.
        params: the trainable tensors the layer owns, ``{name: Param(shape, init)}``.
        buffers: the state tensors the layer owns, ``{name: Buffer(shape, init)}``.
        name: the name shown in printouts (default ``forward.__name__``).

    Raises:
        ValueError: a name declared twice (a child and a tensor).
        TypeError: a child that is not a layer, a declaration that is not a
            :class:`Param` / :class:`Buffer`, or (when called) a ``forward`` that does
            not return ``(y, new_st)``.

    Input:
        Whatever ``forward`` accepts.

    Returns:
        ``(y, new_st)`` from ``forward``.

    **Parameters**
        - ``{child}``: each child's parameters.
        - ``{param}``: each :class:`Param`, of its declared shape.

    **States**
        - ``{child}``: each child's state.
        - ``{buffer}``: each :class:`Buffer`, of its declared shape.

    Each declared tensor is initialised with ``fold_in(key, crc32(name))``, as a child is,
    so adding a declaration never changes the others' initial values. ``param_count``,
    the printout (the own tensors on a line of their own), :func:`lux_torch.summary` and the
    per-call shape checks of the own tensors come from :class:`~lux_torch.Layer`.
    """

    forward: Forward
    layers: Mapping[str, Layer] = dataclasses.field(default_factory=dict)
    params: Mapping[str, Param] = dataclasses.field(default_factory=dict)
    buffers: Mapping[str, Buffer] = dataclasses.field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        label = f"Compact({self._name()})"
        if not callable(self.forward):
            raise TypeError(f"{label}: forward must be a function, got {self.forward!r}")
        for group, kind in ((self.layers, Layer), (self.params, Param), (self.buffers, Buffer)):
            bad = {k: describe_value(v) for k, v in group.items() if not isinstance(v, kind)}
            if bad:
                raise TypeError(f"{label}: expected {kind.__name__} values, got {bad}")
        names = [*self.layers, *self.params, *self.buffers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{label}: {twice} declared more than once; names must be unique")
        self._set_fields(
            layers=types.MappingProxyType(dict(self.layers)),
            params=types.MappingProxyType(dict(self.params)),
            buffers=types.MappingProxyType(dict(self.buffers)),
        )

    def _name(self) -> str:
        return self.name or str(getattr(self.forward, "__name__", "forward"))

    def init_params(self, key: torch.Tensor) -> Params:
        own = {n: p.init(child_key(key, n), *p.shape) for n, p in self.params.items()}
        return {**super().init_params(key), **own}

    def init_state(self, key: torch.Tensor) -> State:
        own = {n: b.init(child_key(key, n), *b.shape) for n, b in self.buffers.items()}
        return {**super().init_state(key), **own}

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        out = self.forward(x, ps, st, _Layers(self.layers))
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise TypeError(
                f"Compact({self._name()}): forward must return (y, new_st), got "
                f"{describe_value(out)}; return the new state too, e.g. (y, st)"
            )
        return out

    def extra_repr(self) -> str:
        shown = [self._name()]
        shown += [f"{n}={_describe_tensor(p)}" for n, p in self.params.items()]
        shown += [f"{n}={_describe_tensor(b)}" for n, b in self.buffers.items()]
        return ", ".join(shown)


def _describe_tensor(declared: Param | Buffer) -> str:
    return f"{type(declared).__name__}({declared.shape}, {describe_config(declared.init)})"


def compact(
    name: str | None = None, **declared: Layer | Param | Buffer
) -> Callable[[Forward], Compact]:
    """Decorator: turn a forward function into a :class:`Compact` layer (Lux's ``@compact``).

    Keyword arguments declare the children (layers), the parameters (:class:`Param`) and
    the state tensors (:class:`Buffer`), by name; the decorated function
    ``forward(x, ps, st, layers) -> (y, new_st)`` becomes the layer (see :class:`Compact`).

    Example:
        >>> @compact(dense=Linear(3, 3), bias=Param((3,)))  # doctest: +SKIP
        ... def block(x, ps, st, layers):
        ...     y, st_dense = layers.dense(x, ps["dense"], st["dense"])
        ...     return y + ps["bias"], {**st, "dense": st_dense}
    """

    def decorate(forward: Forward) -> Compact:
        layers = {k: v for k, v in declared.items() if isinstance(v, Layer)}
        params = {k: v for k, v in declared.items() if isinstance(v, Param)}
        buffers = {k: v for k, v in declared.items() if isinstance(v, Buffer)}
        other = {
            k: describe_value(v)
            for k, v in declared.items()
            if k not in {*layers, *params, *buffers}
        }
        if other:
            raise TypeError(
                f"compact: declare layers, Param(shape, init) or Buffer(shape, init); got {other}"
            )
        return Compact(forward, layers, params, buffers, name)

    return decorate
