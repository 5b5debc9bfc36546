"""Lux's combinators: ``Chain``, ``Parallel``, ``SkipConnection``, ``BranchLayer``,
``PairwiseFusion``, ``Maxout`` and ``RepeatedLayer``; and ``Ensemble`` (members with
their own parameters, evaluated at once with ``torch.func.vmap``).

Children are named as in Lux: positional layers become ``layer_1, layer_2, ...``, keyword
layers keep their names; ``ps`` and ``st`` hold one entry per child under that name. A plain
callable given where a layer is expected is wrapped in :class:`WrappedFunction`. Every
container threads state: the state each child returns goes into the returned ``st``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, cast

import torch

from .. import random as lrandom
from .. import tree as ltree
from ..core import Layer, Params, State, check_structure, describe_config, describe_value
from ._common import check_bool, check_int
from ._scan import repeated_calls, scan_active
from .basic import WrappedFunction

__all__ = [
    "BranchLayer",
    "Chain",
    "Ensemble",
    "Maxout",
    "PairwiseFusion",
    "Parallel",
    "RepeatedLayer",
    "SkipConnection",
]

LayerLike = Layer | Callable[[Any], Any]
Connection = Callable[..., Any]


# --------------------------------------------------------------------------- helpers


def as_layer(owner: str, name: str, value: Any) -> Layer:
    """``value`` if it is a layer, a :class:`WrappedFunction` if it is a plain callable."""
    if isinstance(value, Layer):
        return value
    if isinstance(value, torch.nn.Module):
        raise TypeError(
            f"{owner}: {name} is a torch.nn.Module ({type(value).__name__}); wrap it with "
            "lux_torch.from_torch so that its parameters go into ps"
        )
    if callable(value):
        return WrappedFunction(value)
    raise TypeError(f"{owner}: {name} must be a Layer or a callable, got {type(value).__name__}")


def collect_layers(
    owner: str,
    layers: Sequence[Any],
    named: Mapping[str, Any],
    *,
    minimum: int = 1,
) -> dict[str, Layer]:
    """Name the children of a multi-child container the Lux way.

    ``layers`` (positional) become ``layer_1, layer_2, ...``; ``named`` (keywords) keep their
    names; a single mapping given positionally is taken as ``named`` (like
    ``nn.Sequential(OrderedDict(...))``). Mixing positional and named layers is an error.
    """
    if len(layers) == 1 and isinstance(layers[0], Mapping):
        if named:
            raise TypeError(f"{owner}: give either a mapping of layers or keyword layers")
        named, layers = layers[0], ()
    if layers and named:
        raise TypeError(
            f"{owner}: give the layers either positionally (named layer_1, layer_2, ...) "
            "or as keywords, not both"
        )
    items = named.items() if named else ((f"layer_{i}", v) for i, v in enumerate(layers, 1))
    out: dict[str, Layer] = {}
    for name, value in items:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                f"{owner}: layer names must be non-empty strings without '.', got {name!r}"
            )
        out[name] = as_layer(owner, name, value)
    if len(out) < minimum:
        raise ValueError(f"{owner}: needs at least {minimum} layer(s), got {len(out)}")
    return out


def stacked_init(init: Callable[[torch.Tensor], Any], key: torch.Tensor, n: int) -> Any:
    """``n`` trees ``init(k)`` for ``k in split(key, n)``, stacked leaf by leaf (the
    parameters or state of :class:`Ensemble` members and ``StackedChain`` blocks)."""
    return ltree.stack([init(k) for k in lrandom.split(key, n)])


def _check_connection(owner: str, name: str, value: Any, *, layer_ok: bool) -> None:
    if value is None:
        return
    if isinstance(value, torch.nn.Module):
        raise TypeError(
            f"{owner}: {name} is a torch.nn.Module ({type(value).__name__}); wrap it with "
            "lux_torch.from_torch"
        )
    if isinstance(value, Layer) and not layer_ok:
        raise TypeError(
            f"{owner}: {name} must be a plain function, got the layer {type(value).__name__}"
        )
    if not callable(value):
        raise TypeError(f"{owner}: {name} must be a function or None, got {type(value).__name__}")


def _function_repr(name: str, value: Any) -> str:
    """``"connection=add"`` for a function; ``""`` for ``None`` or a layer (shown as a child)."""
    if value is None or isinstance(value, Layer):
        return ""
    return f"{name}={describe_config(value)}"


def _structure_error(layer: Layer, ps: Any, st: Any) -> NoReturn:
    check_structure(layer, ps, st)  # raises ValueError naming missing/unexpected keys
    raise ValueError(f"{type(layer).__name__}: ps/st do not have one entry per child layer")


def _check_children(layer: Layer, ps: Params, st: State, count: int) -> None:
    """Cheap guard (free under compile): ``ps``/``st`` have one entry per child."""
    if len(ps) != count or len(st) != count:
        _structure_error(layer, ps, st)


def _apply_each(
    layers: Mapping[str, Layer], inputs: Sequence[Any], ps: Params, st: State
) -> tuple[list[Any], State]:
    """``layer_i(inputs[i])`` for every child; the outputs and the new states by name."""
    ys: list[Any] = []
    new_st: State = {}
    for (name, layer), x in zip(layers.items(), inputs, strict=True):
        y, new_st[name] = layer(x, ps[name], st[name])
        ys.append(y)
    return ys, new_st


def _combine(
    combine: Connection | Layer | None,
    name: str,
    ys: list[Any],
    ps: Params,
    st: State,
    new_st: State,
) -> Any:
    """Combine outputs: a tuple (``None``), ``f(*ys)`` (function) or ``layer(tuple(ys))``."""
    if combine is None:
        return tuple(ys)
    if isinstance(combine, Layer):
        y, new_st[name] = combine(tuple(ys), ps[name], st[name])
        return y
    return combine(*ys)


def _split_inputs(owner: str, x: Any, count: int) -> Sequence[Any]:
    """Lux: a tuple input gives one element per layer; anything else goes to every layer."""
    if isinstance(x, (tuple, list)):
        if len(x) != count:
            raise ValueError(
                f"{owner}: got a tuple of {len(x)} inputs for {count} layers; pass one input "
                "per layer, or a single (non-tuple) input shared by all layers"
            )
        return x
    return (x,) * count


# --------------------------------------------------------------------------- Chain


class Chain(Layer):
    """Apply layers in sequence: ``y = layer_N(... layer_2(layer_1(x)))`` (Lux's ``Chain``).

    Arguments:
        *layers: layers (or plain callables, wrapped in :class:`WrappedFunction`), named
            ``layer_1, layer_2, ...``; or a single mapping ``{name: layer}``.
        **named_layers: alternatively, layers with the given names (``Chain(enc=..., dec=...)``).
            Nested chains stay nested. ``Chain()`` is the identity.

    Input:
        ``x``: whatever the first layer accepts.

    Returns:
        The output of the last layer and the new state ``{name: child_state}``.

    **Parameters**
        ``{name: child_params}`` for every child, in order.

    **States**
        ``{name: child_state}`` for every child, in order.

    Indexing: ``chain[i]`` is the ``i``-th child layer, ``chain["name"]`` the child of that
    name, ``chain[a:b]`` a ``Chain`` of those children that *keeps their names*, so
    ``{k: ps[k] for k in sub.layers}`` are its parameters. ``len(chain)`` and
    ``iter(chain)`` (over the child layers) work too.

    Example:
        >>> model = Chain(Linear(2, 16, activation=torch.tanh), Linear(16, 1))  # doctest: +SKIP
        >>> ps, st = lux_torch.setup(0, model)  # doctest: +SKIP
        >>> y, st = model(torch.ones(4, 2), ps, st)  # doctest: +SKIP
    """

    layers: Mapping[str, Layer]

    def __init__(self, *layers: LayerLike | Mapping[str, LayerLike], **named_layers: LayerLike):
        self._set_fields(layers=collect_layers("Chain", layers, named_layers, minimum=0))

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        _check_children(self, ps, st, len(self.layers))
        new_st: State = {}
        for name, layer in self.layers.items():
            x, new_st[name] = layer(x, ps[name], st[name])
        return x, new_st

    def __getitem__(self, index: int | str | slice) -> Any:
        if isinstance(index, str):
            return self.layers[index]
        items = list(self.layers.items())
        if isinstance(index, slice):
            return Chain(dict(items[index]))
        return items[index][1]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers.values())


# --------------------------------------------------------------------------- fan-out / fan-in


class Parallel(Layer):
    """Run layers side by side and combine their outputs (Lux's ``Parallel``).

    Arguments:
        connection: how to combine the outputs ``y_1 .. y_N``: a function called as
            ``connection(y_1, ..., y_N)``; a layer, called with the tuple ``(y_1, ..., y_N)``
            (a child named ``connection``); or ``None`` to return the tuple.
        *layers, **named_layers: the layers, as for :class:`Chain`.

    Input:
        ``x``: a tuple of ``N`` inputs (``layer_i`` gets ``x[i]``), or any other value,
        which every layer gets.

    Returns:
        The combined output and the new state.

    **Parameters**
        ``{layer_1: ..., layer_N: ...}`` (or the given names), plus ``connection`` when it is
        a layer.

    **States**
        The same keys as the parameters.

    Example:
        >>> model = Parallel(torch.add, Linear(2, 3), Linear(2, 3))  # doctest: +SKIP
        >>> y, st = model((x1, x2), ps, st)  # layer_1(x1) + layer_2(x2)  # doctest: +SKIP
    """

    layers: Mapping[str, Layer]
    connection: Connection | Layer | None

    def __init__(
        self,
        connection: Connection | Layer | None,
        *layers: LayerLike | Mapping[str, LayerLike],
        **named_layers: LayerLike,
    ) -> None:
        _check_connection("Parallel", "connection", connection, layer_ok=True)
        self._set_fields(
            layers=collect_layers("Parallel", layers, named_layers), connection=connection
        )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        _check_children(self, ps, st, len(self.layers) + isinstance(self.connection, Layer))
        inputs = _split_inputs("Parallel", x, len(self.layers))
        ys, new_st = _apply_each(self.layers, inputs, ps, st)
        return _combine(self.connection, "connection", ys, ps, st, new_st), new_st

    def extra_repr(self) -> str:
        return _function_repr("connection", self.connection)


class BranchLayer(Layer):
    """Send the same input through every layer; return the tuple of outputs (Lux's).

    Unlike :class:`Parallel`, a tuple input is *not* split: every layer gets all of ``x``.

    Arguments:
        *layers, **named_layers: the layers, as for :class:`Chain`.
        fusion: optional combination of the outputs: a function called as
            ``fusion(y_1, ..., y_N)`` or a layer called with the tuple (a child named
            ``fusion``); ``None`` returns the tuple.

    Input:
        ``x``: passed to every layer.

    Returns:
        ``(layer_1(x), ..., layer_N(x))`` (or its fusion) and the new state.

    **Parameters**
        ``{layer_1: ..., layer_N: ...}`` (or the given names), plus ``fusion`` when it is a
        layer.

    **States**
        The same keys as the parameters.

    Example:
        >>> model = BranchLayer(NoOpLayer(), Linear(2, 2))  # doctest: +SKIP
        >>> (a, b), st = model(x, ps, st)  # doctest: +SKIP
    """

    layers: Mapping[str, Layer]
    fusion: Connection | Layer | None

    def __init__(
        self,
        *layers: LayerLike | Mapping[str, LayerLike],
        fusion: Connection | Layer | None = None,
        **named_layers: LayerLike,
    ) -> None:
        _check_connection("BranchLayer", "fusion", fusion, layer_ok=True)
        self._set_fields(layers=collect_layers("BranchLayer", layers, named_layers), fusion=fusion)

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        _check_children(self, ps, st, len(self.layers) + isinstance(self.fusion, Layer))
        ys, new_st = _apply_each(self.layers, (x,) * len(self.layers), ps, st)
        return _combine(self.fusion, "fusion", ys, ps, st, new_st), new_st

    def extra_repr(self) -> str:
        return _function_repr("fusion", self.fusion)


class PairwiseFusion(Layer):
    """Alternate layers with a pairwise ``connection`` over a sequence of inputs (Lux's).

    ::

        x1 → layer_1 → connection → layer_2 → connection → ... → y
                           ↑                      ↑
                           x2                     x3

    With ``N`` layers and ``x = (x_1, ..., x_{N+1})``::

        y = x_1
        for i in 1..N:  y = connection(layer_i(y), x_{i+1})

    A non-tuple ``x`` is used as every ``x_i``.

    Arguments:
        connection: a function of two arguments ``(layer_output, next_input)``.
        *layers, **named_layers: the layers, as for :class:`Chain`.

    Input:
        ``x``: a tuple of ``N + 1`` inputs, or a single input.

    Returns:
        ``y`` as above and the new state.

    **Parameters**
        ``{layer_1: ..., layer_N: ...}`` (or the given names).

    **States**
        The same keys as the parameters.

    Example:
        >>> model = PairwiseFusion(torch.add, Linear(2, 2), Linear(2, 2))  # doctest: +SKIP
        >>> y, st = model((x1, x2, x3), ps, st)  # doctest: +SKIP
    """

    connection: Connection
    layers: Mapping[str, Layer]

    def __init__(
        self,
        connection: Connection,
        *layers: LayerLike | Mapping[str, LayerLike],
        **named_layers: LayerLike,
    ) -> None:
        if connection is None:
            raise TypeError("PairwiseFusion: connection must be a function of two arguments")
        _check_connection("PairwiseFusion", "connection", connection, layer_ok=False)
        self._set_fields(
            connection=connection, layers=collect_layers("PairwiseFusion", layers, named_layers)
        )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        count = len(self.layers)
        _check_children(self, ps, st, count)
        if isinstance(x, (tuple, list)):
            if len(x) != count + 1:
                raise ValueError(
                    f"PairwiseFusion: expected a tuple of {count + 1} inputs (one more than "
                    f"the {count} layers), got {len(x)}"
                )
            y, rest = x[0], x[1:]
        else:
            y, rest = x, (x,) * count
        new_st: State = {}
        for (name, layer), x_next in zip(self.layers.items(), rest, strict=True):
            out, new_st[name] = layer(y, ps[name], st[name])
            y = self.connection(out, x_next)
        return y, new_st

    def extra_repr(self) -> str:
        return _function_repr("connection", self.connection)


class Maxout(Layer):
    """Elementwise maximum of the outputs of layers that share one input (Lux's ``Maxout``).

    Arguments:
        *layers, **named_layers: the layers, as for :class:`Chain`; their outputs must
            have equal (broadcastable) shapes.

    Input:
        ``x``: passed to every layer.

    Returns:
        ``max(layer_1(x), ..., layer_N(x))`` elementwise and the new state.

    **Parameters**
        ``{layer_1: ..., layer_N: ...}`` (or the given names).

    **States**
        The same keys as the parameters.

    Example:
        >>> model = Maxout(Linear(2, 3), Linear(2, 3))  # doctest: +SKIP
    """

    layers: Mapping[str, Layer]

    def __init__(
        self, *layers: LayerLike | Mapping[str, LayerLike], **named_layers: LayerLike
    ) -> None:
        self._set_fields(layers=collect_layers("Maxout", layers, named_layers))

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        _check_children(self, ps, st, len(self.layers))
        ys, new_st = _apply_each(self.layers, (x,) * len(self.layers), ps, st)
        return functools.reduce(torch.maximum, ys), new_st


# --------------------------------------------------------------------------- single child


class SkipConnection(Layer):
    """``connection(layer(x), x)``: a residual / skip block (Lux's ``SkipConnection``).

    Arguments:
        layer: the layer (or chain, or plain callable) applied to ``x``.
        connection: a function ``f(layer(x), x)`` (e.g. ``torch.add`` for a ResNet block),
            or a layer, which is then a child called with the tuple ``(layer(x), x)``.

    Input:
        ``x``: passed to ``layer``.

    Returns:
        ``connection(layer(x), x)`` and the new state.

    **Parameters**
        ``{"layer": ...}``, plus ``"connection"`` when the connection is a layer.

    **States**
        The same keys as the parameters.

    Example:
        >>> block = SkipConnection(Linear(3, 3, activation=torch.relu), torch.add)  # doctest: +SKIP
    """

    layer: Layer | Callable[[Any], Any]  # a plain callable becomes a WrappedFunction
    connection: Connection | Layer

    def __post_init__(self) -> None:
        self._set_fields(layer=as_layer("SkipConnection", "layer", self.layer))
        if self.connection is None:
            raise TypeError("SkipConnection: connection must be a function or a layer")
        _check_connection("SkipConnection", "connection", self.connection, layer_ok=True)

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        connection_is_layer = isinstance(self.connection, Layer)
        _check_children(self, ps, st, 1 + connection_is_layer)
        y, st_layer = cast(Layer, self.layer)(x, ps["layer"], st["layer"])  # see __post_init__
        if isinstance(self.connection, Layer):
            out, st_connection = self.connection((y, x), ps["connection"], st["connection"])
            return out, {"layer": st_layer, "connection": st_connection}
        return self.connection(y, x), {"layer": st_layer}

    def extra_repr(self) -> str:
        return _function_repr("connection", self.connection)


class RepeatedLayer(Layer):
    """Apply the same layer, with the same parameters, ``repeats`` times (Lux's).

    ::

        y = x
        for _ in range(repeats):
            y, st = layer((y, x) if input_injection else y, ps, st)

    Eager, the loop runs in Python; under ``torch.compile`` it is one ``scan`` (torch's
    higher-order operator), so the layer is traced and compiled once whatever ``repeats``
    is (unrolled inside ``torch.func`` transforms; see :mod:`lux_torch.layers._scan`). The
    layer's output must then have the structure, shapes, dtypes and strides of ``x``.
    ``scan=False`` unrolls the loop under ``torch.compile`` too: compile time then grows
    with ``repeats``, but Inductor fuses across repetitions, which makes the compiled
    step of a small layer faster (a 24-block MLP of width 256 ran 1.5x slower scanned).

    Arguments:
        layer: the layer (or plain callable) to repeat.
        repeats: how many times (>= 1; default 10 as in Lux).
        input_injection: if ``True`` the layer receives the tuple ``(y, x)`` each time.
        scan: trace the layer once under ``torch.compile`` (default) or unroll the loop.

    Input:
        ``x``: passed to the first application.

    Returns:
        The output of the last application and the state it returned.

    **Parameters**
        ``{"layer": params_of_layer}`` (one set, shared by every repetition).

    **States**
        ``{"layer": state_of_layer}`` (threaded through the repetitions).

    Example:
        >>> model = RepeatedLayer(Linear(3, 3, activation=torch.tanh), repeats=4)  # doctest: +SKIP
    """

    layer: Layer
    repeats: int = 10
    input_injection: bool = False
    scan: bool = True

    def __post_init__(self) -> None:
        self._set_fields(layer=as_layer("RepeatedLayer", "layer", self.layer))
        check_int("RepeatedLayer", "repeats", self.repeats, minimum=1)
        check_bool("RepeatedLayer", "input_injection", self.input_injection)
        check_bool("RepeatedLayer", "scan", self.scan)

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        _check_children(self, ps, st, 1)
        if self.scan and scan_active(x, ps, st):  # one traced block under torch.compile
            y, state = repeated_calls(
                self,
                self.layer,
                x,
                ps["layer"],
                st["layer"],
                self.repeats,
                injected=self.input_injection,
            )
            return y, {"layer": state}
        params, state, y = ps["layer"], st["layer"], x
        for _ in range(self.repeats):
            y, state = self.layer((y, x) if self.input_injection else y, params, state)
        return y, {"layer": state}

    def extra_repr(self) -> str:
        text = f"repeats={self.repeats}"
        if self.input_injection:
            text += ", input_injection=True"
        if not self.scan:
            text += ", scan=False"
        return text


class Ensemble(Layer):
    """``n`` members of the same architecture with their own parameters and states,
    evaluated at once: one :func:`torch.func.vmap` over the stacked member trees.

    The vectorized form of a Python loop over ``n`` models: deep ensembles, uncertainty
    estimates, ``n`` random restarts trained in one step (gradients and optimizer states
    stack like the parameters), and ensembles of neural ODEs — as the vector field of a
    :class:`lux_torch.ode.NeuralODE`, every member is solved in one solve (vmap around
    torchdiffeq's solvers cannot work, see :mod:`lux_torch.ode`).

    Arguments:
        member: the layer (or plain callable) each member is an instance of.
        n: number of members (>= 1).
        in_dim: the input's member dimension: ``0`` (default) gives member ``i`` the slice
            ``x[i]`` (every tensor of a tuple input alike); ``None`` gives every member the
            same ``x``.

    Input:
        ``x``: a tensor (or tree of tensors) with the ``n`` members along ``in_dim``, or
        any input of ``member`` when ``in_dim=None``.

    Returns:
        The members' outputs stacked along dim 0 (shape ``(n, *member_output)``) and the
        new, stacked state.

    **Parameters**
        ``{"member": ps}`` where every leaf of the member's ``ps`` gains a leading
        dimension of size ``n`` (member ``i`` initialised from ``split(key, n)[i]``).

    **States**
        ``{"member": st}``, stacked the same way (each member its own random key).

    Example:
        >>> model = Ensemble(Linear(2, 1), 5, in_dim=None)  # doctest: +SKIP
        >>> ps, st = lux.setup(0, model)                      # doctest: +SKIP
        >>> model(torch.randn(8, 2), ps, st)[0].shape          # doctest: +SKIP
        torch.Size([5, 8, 1])
    """

    member: Layer
    n: int
    in_dim: int | None = 0

    def __post_init__(self) -> None:
        self._set_fields(member=as_layer("Ensemble", "member", self.member))
        check_int("Ensemble", "n", self.n, minimum=1)
        if self.in_dim is not None:
            check_int("Ensemble", "in_dim", self.in_dim, minimum=None)

    def init_params(self, key: torch.Tensor) -> Params:
        return {"member": stacked_init(self.member.init_params, key, self.n)}

    def init_state(self, key: torch.Tensor) -> State:
        return {"member": stacked_init(self.member.init_state, key, self.n)}

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        _check_children(self, ps, st, 1)
        if self.in_dim is not None:
            self._check_members(x)
        member = self.member

        def one(p: Params, s: State, xi: Any) -> tuple[Any, State]:
            return member(xi, p, s)

        y, new_st = torch.func.vmap(one, in_dims=(0, 0, self.in_dim))(ps["member"], st["member"], x)
        return y, {"member": new_st}

    def _check_members(self, x: Any) -> None:
        assert self.in_dim is not None
        for leaf in ltree.leaves(x):
            if not isinstance(leaf, torch.Tensor):
                continue
            dim = self.in_dim if self.in_dim >= 0 else leaf.dim() + self.in_dim
            if not 0 <= dim < leaf.dim() or leaf.shape[dim] != self.n:
                raise ValueError(
                    f"{type(self).__name__}(n={self.n}): expected the {self.n} members "
                    f"along dim {self.in_dim} of the input, got {describe_value(leaf)}; "
                    "pass in_dim=None to give every member the same input"
                )

    def extra_repr(self) -> str:
        text = f"n={self.n}"
        return text if self.in_dim == 0 else f"{text}, in_dim={self.in_dim}"
