"""Recurrent layers: ``RNNCell``, ``LSTMCell``, ``GRUCell``, ``Recurrence``,
``StatefulRecurrentCell``, ``Bidirectional`` and the ``torch.nn``-compatible stacks ``RNN``,
``LSTM`` and ``GRU``.

Parameter names, shapes, gate order and default initialisation follow ``torch.nn``'s cells
(``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``; LSTM gates ``i, f, g, o``, GRU
gates ``r, z, n``; every tensor drawn from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``),
and the numerics are torch's.

The carry convention (Lux's)
----------------------------
A cell maps an input and a *carry* to an output and the new carry::

    (y, carry), st = cell(x, ps, st)              # carry starts at zeros
    (y, carry), st = cell((x, carry), ps, st)     # continue from a given carry

- ``x`` has shape ``(*, input_size)`` (``*`` is any batch shape, possibly empty).
- The carry is ``h`` for ``RNNCell``/``GRUCell`` and the tuple ``(h, c)`` for ``LSTMCell``,
  each of shape ``(*, hidden_size)`` (the batch shape of ``x``).
- ``y`` is the new ``h``.

A bare tensor input lets a cell be the first step in a ``Chain``; the tuple form lets
:class:`Recurrence` thread the carry through time. Cells have empty state ``{}``.

:class:`Recurrence` unrolls a cell over a sequence (in Python: the length is static, so the
loop compiles to one graph) and returns the last ``y`` or all of them;
:class:`StatefulRecurrentCell` keeps the carry in its state for streaming one step per call.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .. import random as lrandom
from ..core import Layer, child_key
from ..tree import Static
from .basic import check_int, fan_in_uniform

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bidirectional",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "Recurrence",
    "StatefulRecurrentCell",
]

Params = dict[str, Any]
State = dict[str, Any]

_NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


# --------------------------------------------------------------------------- helpers


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool, got {type(value).__name__}")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


class _Cell(Layer):
    """Shared machinery of the three cells (``gates`` blocks of ``hidden_size`` rows)."""

    input_size: int
    hidden_size: int
    bias: bool = True

    _gates: ClassVar[int] = 1
    _carry_names: ClassVar[tuple[str, ...]] = ("h",)

    def _validate(self) -> None:
        name = type(self).__name__
        check_int(name, "input_size", self.input_size, minimum=1)
        check_int(name, "hidden_size", self.hidden_size, minimum=1)
        _check_bool(name, "bias", self.bias)

    def __post_init__(self) -> None:
        self._validate()

    def init_params(self, key: torch.Tensor) -> Params:
        rows = self._gates * self.hidden_size
        k_wih, k_whh, k_bih, k_bhh = lrandom.split(key, 4)
        h = self.hidden_size
        ps = {
            "weight_ih": fan_in_uniform(k_wih, (rows, self.input_size), h),
            "weight_hh": fan_in_uniform(k_whh, (rows, h), h),
        }
        if self.bias:
            ps["bias_ih"] = fan_in_uniform(k_bih, (rows,), h)
            ps["bias_hh"] = fan_in_uniform(k_bhh, (rows,), h)
        return ps

    def init_state(self, key: torch.Tensor) -> State:
        return {}

    # -- input handling
    def _split_input(self, x: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``(x, carry tensors)`` from a bare tensor (zero carry) or a tuple ``(x, carry)``."""
        name = type(self).__name__
        if isinstance(x, tuple):
            if len(x) != 2:
                raise TypeError(
                    f"{name}: expected x or a tuple (x, carry), got a tuple of {len(x)} items"
                )
            x, carry = x
            self._check_x(x)
            parts = carry if isinstance(carry, tuple) else (carry,)
            if len(self._carry_names) > 1 and not isinstance(carry, tuple):
                raise TypeError(f"{name}: expected the carry (h, c), got {_describe(carry)}")
            if len(parts) != len(self._carry_names):
                raise TypeError(
                    f"{name}: expected a carry of {len(self._carry_names)} tensor(s) "
                    f"({', '.join(self._carry_names)}), got {len(parts)}"
                )
            expected = (*x.shape[:-1], self.hidden_size)
            for label, part in zip(self._carry_names, parts, strict=True):
                if not isinstance(part, torch.Tensor) or tuple(part.shape) != expected:
                    raise ValueError(
                        f"{name}: expected carry {label} of shape {expected} for an input "
                        f"of shape {tuple(x.shape)}, got {_describe(part)}"
                    )
            return x, tuple(parts)
        self._check_x(x)
        zeros = x.new_zeros((*x.shape[:-1], self.hidden_size))
        return x, tuple(zeros for _ in self._carry_names)

    def _check_x(self, x: Any) -> None:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected x to be a Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: expected input of shape (*, {self.input_size}), got {tuple(x.shape)}"
            )

    def _projections(
        self, x: torch.Tensor, h: torch.Tensor, ps: Params
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gi = F.linear(x, ps["weight_ih"], ps["bias_ih"] if self.bias else None)
        gh = F.linear(h, ps["weight_hh"], ps["bias_hh"] if self.bias else None)
        return gi, gh

    def extra_repr(self) -> str:
        parts = [f"{self.input_size} => {self.hidden_size}"]
        if not self.bias:
            parts.append("bias=False")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, tuple) and len(x) == 2:
            x = x[0]
        if isinstance(x, torch.Tensor) and (x.ndim == 0 or x.shape[-1] != self.input_size):
            return f"expected input of shape (*, {self.input_size}), got {tuple(x.shape)}"
        return None


# --------------------------------------------------------------------------- cells


class RNNCell(_Cell):
    """Elman cell ``h' = nonlinearity(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (``torch.nn.RNNCell``).

    Arguments:
        input_size: size of the last dimension of ``x``.
        hidden_size: size of the hidden state ``h``.
        bias: whether to use the biases ``bias_ih`` and ``bias_hh``.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Input:
        ``x`` of shape ``(*, input_size)`` (carry starts at zeros), or ``(x, h)`` with ``h``
        of shape ``(*, hidden_size)`` (see the module docstring).

    Returns:
        ``((h', h'), st)``: the output and the new carry are both the new hidden state.

    **Parameters**
        - ``weight_ih``: ``(hidden_size, input_size)``
        - ``weight_hh``: ``(hidden_size, hidden_size)``
        - ``bias_ih``, ``bias_hh``: ``(hidden_size,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> cell = RNNCell(3, 8)
        >>> ps, st = lux_torch.setup(0, cell)  # doctest: +SKIP
        >>> (y, h), st = cell(torch.ones(4, 3), ps, st)  # doctest: +SKIP
    """

    input_size: int
    hidden_size: int
    bias: bool = True
    nonlinearity: str = "tanh"

    def __post_init__(self) -> None:
        self._validate()
        if self.nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}"
            )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        x, (h,) = self._split_input(x)
        gi, gh = self._projections(x, h, ps)
        h_new = _NONLINEARITIES[self.nonlinearity](gi + gh)
        return (h_new, h_new), st

    def extra_repr(self) -> str:
        out = super().extra_repr()
        if self.nonlinearity != "tanh":
            out += f", nonlinearity={self.nonlinearity!r}"
        return out


class LSTMCell(_Cell):
    """Long short-term memory cell (``torch.nn.LSTMCell``; gates ``i, f, g, o``)::

        i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    Arguments:
        input_size: size of the last dimension of ``x``.
        hidden_size: size of ``h`` and ``c``.
        bias: whether to use the biases ``bias_ih`` and ``bias_hh``.

    Input:
        ``x`` of shape ``(*, input_size)`` (carry starts at zeros), or ``(x, (h, c))`` with
        ``h`` and ``c`` of shape ``(*, hidden_size)`` (see the module docstring).

    Returns:
        ``((h', (h', c')), st)``.

    **Parameters**
        - ``weight_ih``: ``(4 * hidden_size, input_size)``
        - ``weight_hh``: ``(4 * hidden_size, hidden_size)``
        - ``bias_ih``, ``bias_hh``: ``(4 * hidden_size,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> cell = LSTMCell(3, 8)
        >>> ps, st = lux_torch.setup(0, cell)  # doctest: +SKIP
        >>> (y, (h, c)), st = cell(torch.ones(4, 3), ps, st)  # doctest: +SKIP
    """

    _gates = 4
    _carry_names = ("h", "c")

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        x, (h, c) = self._split_input(x)
        gi, gh = self._projections(x, h, ps)
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return (h_new, (h_new, c_new)), st


class GRUCell(_Cell):
    """Gated recurrent unit cell (``torch.nn.GRUCell``; gates ``r, z, n``)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Arguments:
        input_size: size of the last dimension of ``x``.
        hidden_size: size of ``h``.
        bias: whether to use the biases ``bias_ih`` and ``bias_hh``.

    Input:
        ``x`` of shape ``(*, input_size)`` (carry starts at zeros), or ``(x, h)`` with ``h``
        of shape ``(*, hidden_size)`` (see the module docstring).

    Returns:
        ``((h', h'), st)``.

    **Parameters**
        - ``weight_ih``: ``(3 * hidden_size, input_size)``
        - ``weight_hh``: ``(3 * hidden_size, hidden_size)``
        - ``bias_ih``, ``bias_hh``: ``(3 * hidden_size,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> cell = GRUCell(3, 8)
        >>> ps, st = lux_torch.setup(0, cell)  # doctest: +SKIP
        >>> (y, h), st = cell(torch.ones(4, 3), ps, st)  # doctest: +SKIP
    """

    _gates = 3

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        x, (h,) = self._split_input(x)
        gi, gh = self._projections(x, h, ps)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h_new = n + z * (h - n)  # torch's form of (1 - z) * n + z * h
        return (h_new, h_new), st


# --------------------------------------------------------------------------- wrappers


def _check_cell(owner: str, cell: Any) -> None:
    if not isinstance(cell, Layer):
        raise TypeError(f"{owner}: cell must be a Layer (e.g. LSTMCell), got {type(cell).__name__}")


class Recurrence(Layer):
    """Run a cell over a sequence, threading the carry (Lux's ``Recurrence``).

    The loop over time is unrolled in Python (the sequence length is static), so it
    compiles to one graph; the cell's parameters are shared by all steps.

    Arguments:
        cell: a cell following the carry convention (``RNNCell``, ``LSTMCell``, ``GRUCell``
            or any layer mapping ``(x_t, carry)`` to ``((y_t, carry), st)``).
        return_sequence: return every step's output (stacked along time) instead of the
            last one.
        batch_first: the input is ``(N, T, F)``; otherwise ``(T, N, F)``. An unbatched
            ``(T, F)`` sequence is accepted either way.

    Input:
        ``x`` of shape ``(N, T, F)`` (``(T, N, F)`` if not ``batch_first``, or ``(T, F)``),
        or a tuple ``(x, carry)`` giving the initial carry (default: the cell's zeros).

    Returns:
        The last output ``(N, H)`` or, with ``return_sequence``, all outputs ``(N, T, H)``
        (``(T, N, H)`` if not ``batch_first``), and the new state.

    **Parameters**
        ``{"cell": ...}``: the cell's.

    **States**
        ``{"cell": ...}``: the cell's (threaded through the steps).

    Example:
        >>> rnn = Recurrence(LSTMCell(3, 8), return_sequence=True)
        >>> ps, st = lux_torch.setup(0, rnn)  # doctest: +SKIP
        >>> y, st = rnn(torch.ones(4, 10, 3), ps, st)  # y: (4, 10, 8)  # doctest: +SKIP
    """

    cell: Layer
    return_sequence: bool = False
    batch_first: bool = True

    def __post_init__(self) -> None:
        _check_cell("Recurrence", self.cell)
        _check_bool("Recurrence", "return_sequence", self.return_sequence)
        _check_bool("Recurrence", "batch_first", self.batch_first)

    def _time_dim(self, x: torch.Tensor) -> int:
        return x.ndim - 2 if self.batch_first else 0

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        carry: Any = None
        if isinstance(x, tuple):
            if len(x) != 2:
                raise TypeError(
                    f"Recurrence: expected x or a tuple (x, carry), got a tuple of {len(x)} items"
                )
            x, carry = x
        if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
            raise ValueError(
                "Recurrence: expected a sequence of shape "
                f"{'(N, T, F)' if self.batch_first else '(T, N, F)'} or (T, F), "
                f"got {_describe(x)}"
            )
        dim = self._time_dim(x)
        steps = x.shape[dim]
        if steps == 0:
            raise ValueError("Recurrence: the sequence is empty (T = 0)")
        cell_st = st["cell"]
        outputs = []
        for t in range(steps):
            x_t = x.select(dim, t)
            inp = x_t if carry is None else (x_t, carry)
            (y, carry), cell_st = self.cell(inp, ps["cell"], cell_st)
            outputs.append(y)
        out = torch.stack(outputs, dim=dim) if self.return_sequence else outputs[-1]
        return out, {"cell": cell_st}


class StatefulRecurrentCell(Layer):
    """A cell that keeps its carry in the state, for streaming one step per call (Lux's).

    Each call takes one time step ``x_t`` and returns only the output ``y_t``; the carry is
    read from ``st["carry"]`` and the new carry returned in the new state. Feeding a
    sequence step by step equals :class:`Recurrence` over it.

    The carry's shape must be known when the state is created, so that the state keeps the
    same structure and shapes across calls (``torch.compile``, ``vmap`` and checkpointing
    see one fixed tree): it is ``zeros(*batch_shape, hidden_size)`` (for an LSTM cell the
    pair ``(h, c)``), and the input of every call must have shape
    ``(*batch_shape, input_size)``. To start a new stream, create the state again
    (``init_state``) or replace ``st["carry"]`` by zeros.

    Arguments:
        cell: ``RNNCell``, ``LSTMCell`` or ``GRUCell``.
        batch_shape: the batch shape of the stream's inputs, e.g. ``(N,)``; ``()`` for
            unbatched ``(input_size,)`` steps.

    Input:
        ``x_t`` of shape ``(*batch_shape, input_size)``.

    Returns:
        ``y_t`` of shape ``(*batch_shape, hidden_size)`` and the new state (new carry).

    **Parameters**
        ``{"cell": ...}``: the cell's.

    **States**
        ``{"cell": ..., "carry": h}`` (``RNNCell``/``GRUCell``) or
        ``{"cell": ..., "carry": (h, c)}`` (``LSTMCell``), zeros initially.

    Example:
        >>> stream = StatefulRecurrentCell(GRUCell(3, 8), batch_shape=(4,))
        >>> ps, st = lux_torch.setup(0, stream)  # doctest: +SKIP
        >>> for x_t in xs:  # each (4, 3)  # doctest: +SKIP
        ...     y_t, st = stream(x_t, ps, st)
    """

    cell: Layer
    batch_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.cell, _Cell):
            raise TypeError(
                "StatefulRecurrentCell: cell must be an RNNCell, LSTMCell or GRUCell, got "
                f"{type(self.cell).__name__}"
            )
        shape = self.batch_shape
        if not isinstance(shape, (tuple, list)):
            raise TypeError(
                "StatefulRecurrentCell: batch_shape must be a tuple of ints, got "
                f"{type(shape).__name__}"
            )
        for n in shape:
            check_int("StatefulRecurrentCell", "batch_shape entries", n, minimum=1)
        self._set_fields(batch_shape=tuple(shape))

    def init_state(self, key: torch.Tensor) -> State:
        cell = self.cell
        assert isinstance(cell, _Cell)
        shape = (*self.batch_shape, cell.hidden_size)
        parts = tuple(torch.zeros(shape) for _ in cell._carry_names)
        carry = parts if len(parts) > 1 else parts[0]
        return {"cell": cell.init_state(child_key(key, "cell")), "carry": carry}

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        if isinstance(x, torch.Tensor):
            expected = (*self.batch_shape, self.cell.input_size)  # type: ignore[attr-defined]
            if tuple(x.shape) != expected:
                raise ValueError(
                    f"StatefulRecurrentCell: expected a step of shape {expected} (batch_shape "
                    f"{self.batch_shape}), got {tuple(x.shape)}"
                )
        (y, carry), cell_st = self.cell((x, st["carry"]), ps["cell"], st["cell"])
        return y, {"cell": cell_st, "carry": carry}

    def extra_repr(self) -> str:
        return f"batch_shape={self.batch_shape}" if self.batch_shape else ""


# --------------------------------------------------------------------------- torch.nn-style stacks


class _StackedRNN(Layer):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU` (``torch.nn``'s
    multi-layer, optionally bidirectional recurrent modules), built from the cells above."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False

    _cell_cls: ClassVar[type[_Cell]]
    # the cell of each layer (both directions share its configuration); set in __post_init__
    # as a plain attribute (not a field: it is derived configuration, not a child)
    _cells: ClassVar[tuple[_Cell, ...]]

    def _validate(self) -> None:
        name = type(self).__name__
        check_int(name, "input_size", self.input_size, minimum=1)
        check_int(name, "hidden_size", self.hidden_size, minimum=1)
        check_int(name, "num_layers", self.num_layers, minimum=1)
        _check_bool(name, "bias", self.bias)
        _check_bool(name, "batch_first", self.batch_first)
        _check_bool(name, "bidirectional", self.bidirectional)
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{name}: dropout must be a float, got {type(p).__name__}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {p}")
        self._set_fields(dropout=float(p))

    def _make_cell(self, input_size: int) -> _Cell:
        return self._cell_cls(input_size, self.hidden_size, self.bias)

    def __post_init__(self) -> None:
        self._validate()
        width = self._directions * self.hidden_size
        cells = tuple(
            self._make_cell(self.input_size if layer == 0 else width)
            for layer in range(self.num_layers)
        )
        object.__setattr__(self, "_cells", cells)

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _slots(self) -> list[tuple[int, int, str]]:
        """``(layer, direction, suffix)`` in torch's order (``_l0``, ``_l0_reverse``, ...)."""
        return [
            (layer, d, f"_l{layer}" + ("_reverse" if d else ""))
            for layer in range(self.num_layers)
            for d in range(self._directions)
        ]

    def _cell_param_names(self) -> tuple[str, ...]:
        base = ("weight_ih", "weight_hh")
        return (*base, "bias_ih", "bias_hh") if self.bias else base

    def init_params(self, key: torch.Tensor) -> Params:
        slots = self._slots()
        keys = lrandom.split(key, len(slots))
        ps: Params = {}
        for k, (layer, _, suffix) in zip(keys, slots, strict=True):
            for n, t in self._cells[layer].init_params(k).items():
                ps[n + suffix] = t
        return ps

    def init_state(self, key: torch.Tensor) -> State:
        if self.dropout == 0.0:
            return {}
        return {"key": key.clone(), "training": Static(True)}

    # -- input handling
    def _layout(self) -> str:
        return "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"

    def _initial(self, hx: Any, seq: torch.Tensor, batched: bool) -> tuple[torch.Tensor, ...]:
        """The initial carry tensors, each ``(D * num_layers, N, hidden_size)``."""
        name = type(self).__name__
        names = self._cell_cls._carry_names
        count, n = self._directions * self.num_layers, seq.shape[1]
        if hx is None:
            zeros = seq.new_zeros((count, n, self.hidden_size))
            return tuple(zeros for _ in names)
        if len(names) > 1:
            if not isinstance(hx, tuple) or len(hx) != len(names):
                raise TypeError(
                    f"{name}: expected the initial state as a tuple (h0, c0), got {_describe(hx)}"
                )
            parts = hx
        else:
            parts = (hx,)
        expected = (count, n, self.hidden_size) if batched else (count, self.hidden_size)
        for label, part in zip(names, parts, strict=True):
            if not isinstance(part, torch.Tensor) or tuple(part.shape) != expected:
                dims = (
                    "D * num_layers, N, hidden_size" if batched else "D * num_layers, hidden_size"
                )
                raise ValueError(
                    f"{name}: expected {label}0 of shape {expected} ({dims}), got {_describe(part)}"
                )
        return tuple(parts) if batched else tuple(p.unsqueeze(1) for p in parts)

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        name = type(self).__name__
        hx: Any = None
        if isinstance(x, tuple):
            if len(x) != 2:
                raise TypeError(
                    f"{name}: expected x or a tuple (x, initial state), got a tuple of "
                    f"{len(x)} items"
                )
            x, hx = x
        if (
            not isinstance(x, torch.Tensor)
            or x.ndim not in (2, 3)
            or x.shape[-1] != self.input_size
        ):
            layout = self._layout().replace("H_in", str(self.input_size))
            raise ValueError(
                f"{name}: expected input of shape {layout} or (L, {self.input_size}), "
                f"got {_describe(x)}"
            )
        batched = x.ndim == 3
        seq = (x.transpose(0, 1) if self.batch_first else x) if batched else x.unsqueeze(1)
        steps = seq.shape[0]
        if steps == 0:
            raise ValueError(f"{name}: the sequence is empty (L = 0)")
        initial = self._initial(hx, seq, batched)
        lstm = len(initial) > 1

        new_st = st
        drop_keys: torch.Tensor | None = None
        if self.dropout > 0.0 and st["training"]:
            new_key, use_key = lrandom.split(st["key"])
            new_st = {"key": new_key, "training": st["training"]}
            if self.num_layers > 1:
                drop_keys = lrandom.split(use_key, self.num_layers - 1)

        names = self._cell_param_names()
        finals: list[list[torch.Tensor]] = [[] for _ in initial]
        inp = seq
        for i, (layer, d, suffix) in enumerate(self._slots()):
            if d == 0:
                outs: list[torch.Tensor] = []
            cell = self._cells[layer]
            cell_ps = {n: ps[n + suffix] for n in names}
            parts = tuple(p[i] for p in initial)
            carry: Any = parts if lstm else parts[0]
            ys: list[Any] = [None] * steps
            for t in range(steps - 1, -1, -1) if d else range(steps):
                (y, carry), _ = cell((inp[t], carry), cell_ps, {})
                ys[t] = y
            outs.append(torch.stack(ys))
            for j, part in enumerate(carry if lstm else (carry,)):
                finals[j].append(part)
            if d == self._directions - 1:
                inp = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
                if drop_keys is not None and layer < self.num_layers - 1:
                    inp = lrandom.dropout(drop_keys[layer], inp, self.dropout)

        out = (inp.transpose(0, 1) if self.batch_first else inp) if batched else inp.squeeze(1)
        last = tuple(torch.stack(f) if batched else torch.stack(f).squeeze(1) for f in finals)
        return (out, last if lstm else last[0]), new_st

    def extra_repr(self) -> str:
        parts = [f"{self.input_size} => {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        for field, default in (
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
        ):
            value = getattr(self, field)
            if value != default:
                parts.append(f"{field}={value}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, tuple) and len(x) == 2:
            x = x[0]
        if isinstance(x, torch.Tensor) and (x.ndim not in (2, 3) or x.shape[-1] != self.input_size):
            return (
                f"expected input of shape {self._layout()} or (L, H_in) with H_in = "
                f"{self.input_size}, got {tuple(x.shape)}"
            )
        return None


class RNN(_StackedRNN):
    """Multi-layer Elman RNN, ``torch.nn.RNN`` as a pure layer (built from :class:`RNNCell`).

    Arguments:
        input_size: the number of input features ``H_in``.
        hidden_size: the number of hidden features ``H_out``.
        num_layers: the number of stacked layers (each layer's input is the previous
            layer's output sequence).
        bias: whether to use the biases ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
        batch_first: the input and output are ``(N, L, H)`` instead of ``(L, N, H)``
            (``h_n`` is ``(D * num_layers, N, H_out)`` either way, as torch).
        dropout: dropout probability in ``[0, 1)`` applied to the outputs of every layer but
            the last, in training mode (as torch). The masks come from ``st["key"]``, which
            every training-mode call advances.
        bidirectional: also run every layer on the time-reversed sequence and concatenate
            the two outputs on the feature dimension (``D = 2``).
        nonlinearity: ``"tanh"`` or ``"relu"`` (pass it by keyword: unlike torch's
            ``RNN``, it is the last positional field).

    Input:
        ``x`` of shape ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or unbatched
        ``(L, H_in)``; or a tuple ``(x, h0)`` with ``h0`` of shape
        ``(D * num_layers, N, H_out)`` (``(D * num_layers, H_out)`` unbatched). ``h0``
        defaults to zeros.

    Returns:
        ``((output, h_n), st)`` like torch's ``(output, h_n)``: ``output`` is
        ``(L, N, D * H_out)`` (``(N, L, D * H_out)`` with ``batch_first``, ``(L, D * H_out)``
        unbatched), ``h_n`` is ``(D * num_layers, N, H_out)``.

    **Parameters**
        torch's flat names, so that :func:`lux_torch.load_state_dict` accepts
        ``torch.nn.RNN(...).state_dict()`` directly: ``weight_ih_l{k}``
        ``(H_out, H_in)`` for ``k = 0``, else ``(H_out, D * H_out)``; ``weight_hh_l{k}``
        ``(H_out, H_out)``; ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(H_out,)``; and the same with
        the suffix ``_reverse`` for the backward direction. Initialised from
        ``U(-1/sqrt(H_out), 1/sqrt(H_out))`` as torch.

    **States**
        ``{}`` when ``dropout == 0``; otherwise ``{"key": (2,) int64, "training":
        Static(True)}`` (:func:`lux_torch.test_mode` switches the dropout off).

    Example:
        >>> rnn = RNN(3, 8, num_layers=2, bidirectional=True)
        >>> ps, st = lux_torch.setup(0, rnn)  # doctest: +SKIP
        >>> (out, h_n), st = rnn(torch.ones(10, 4, 3), ps, st)  # doctest: +SKIP
        >>> out.shape, h_n.shape  # doctest: +SKIP
        (torch.Size([10, 4, 16]), torch.Size([4, 4, 8]))
    """

    nonlinearity: str = "tanh"

    _cell_cls = RNNCell

    def __post_init__(self) -> None:
        if self.nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"RNN: nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}"
            )
        super().__post_init__()

    def _make_cell(self, input_size: int) -> _Cell:
        return RNNCell(input_size, self.hidden_size, self.bias, self.nonlinearity)

    def extra_repr(self) -> str:
        out = super().extra_repr()
        if self.nonlinearity != "tanh":
            out += f", nonlinearity={self.nonlinearity!r}"
        return out


class LSTM(_StackedRNN):
    """Multi-layer LSTM, ``torch.nn.LSTM`` as a pure layer (built from :class:`LSTMCell`).

    Arguments are :class:`RNN`'s (without ``nonlinearity``), plus ``proj_size``, which must
    be ``0``: LSTMs with projections are not supported (a non-zero value raises).

    Input:
        ``x`` as for :class:`RNN`, or a tuple ``(x, (h0, c0))`` with ``h0`` and ``c0`` of
        shape ``(D * num_layers, N, H_out)`` (``(D * num_layers, H_out)`` unbatched).

    Returns:
        ``((output, (h_n, c_n)), st)`` like torch's ``(output, (h_n, c_n))``.

    **Parameters**
        torch's flat names as for :class:`RNN`, with ``4 * H_out`` rows (gates ``i, f, g,
        o``): ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
        and their ``_reverse`` counterparts.

    **States**
        ``{}`` when ``dropout == 0``; otherwise ``{"key", "training"}`` (see :class:`RNN`).

    Example:
        >>> lstm = LSTM(3, 8, num_layers=2, batch_first=True)
        >>> ps, st = lux_torch.setup(0, lstm)  # doctest: +SKIP
        >>> (out, (h_n, c_n)), st = lstm(torch.ones(4, 10, 3), ps, st)  # doctest: +SKIP
    """

    proj_size: int = 0

    _cell_cls = LSTMCell

    def __post_init__(self) -> None:
        check_int("LSTM", "proj_size", self.proj_size, minimum=0)
        if self.proj_size != 0:
            raise NotImplementedError(
                f"LSTM: proj_size={self.proj_size} is not supported (LSTMs with projections "
                "are not implemented); use proj_size=0"
            )
        super().__post_init__()


class GRU(_StackedRNN):
    """Multi-layer GRU, ``torch.nn.GRU`` as a pure layer (built from :class:`GRUCell`).

    Arguments, input and output are :class:`RNN`'s (without ``nonlinearity``): the input is
    ``x`` or ``(x, h0)`` and the result ``((output, h_n), st)``.

    **Parameters**
        torch's flat names as for :class:`RNN`, with ``3 * H_out`` rows (gates ``r, z, n``).

    **States**
        ``{}`` when ``dropout == 0``; otherwise ``{"key", "training"}`` (see :class:`RNN`).

    Example:
        >>> gru = GRU(3, 8, bidirectional=True)
        >>> ps, st = lux_torch.setup(0, gru)  # doctest: +SKIP
        >>> (out, h_n), st = gru(torch.ones(10, 4, 3), ps, st)  # doctest: +SKIP
    """

    _cell_cls = GRUCell


class Bidirectional(Layer):
    """Run a sequence layer forward and on the time-reversed input; concatenate the outputs.

    ``forward`` and ``backward`` are :class:`Recurrence` layers with
    ``return_sequence=True`` and the same ``batch_first``; ``backward`` defaults to a copy
    of ``forward``'s configuration (with its own parameters). The backward layer sees the
    sequence reversed in time and its outputs are reversed back, so step ``t`` of the
    result is ``cat(forward_t, backward_t)`` on the feature dimension (as one layer of
    ``torch.nn.LSTM(..., bidirectional=True)``).

    Arguments:
        forward: the forward :class:`Recurrence`.
        backward: the backward :class:`Recurrence` (default: same configuration).

    Input:
        ``x`` (the recurrences' layout), or ``(x, (carry_forward, carry_backward))``.

    Returns:
        ``y`` of shape ``(*, T, H_f + H_b)`` (time where the recurrences have it) and the
        new state.

    **Parameters**
        ``{"forward": ..., "backward": ...}``.

    **States**
        ``{"forward": ..., "backward": ...}``.

    Example:
        >>> bi = Bidirectional(Recurrence(LSTMCell(3, 8), return_sequence=True))
        >>> ps, st = lux_torch.setup(0, bi)  # doctest: +SKIP
        >>> y, st = bi(torch.ones(4, 10, 3), ps, st)  # y: (4, 10, 16)  # doctest: +SKIP
    """

    forward: Layer
    backward: Layer | None = None

    def __post_init__(self) -> None:
        backward = self.forward if self.backward is None else self.backward
        for label, layer in (("forward", self.forward), ("backward", backward)):
            if not isinstance(layer, Recurrence) or not layer.return_sequence:
                raise TypeError(
                    f"Bidirectional: {label} must be a Recurrence with return_sequence=True, "
                    f"got {type(layer).__name__}"
                )
        assert isinstance(self.forward, Recurrence) and isinstance(backward, Recurrence)
        if self.forward.batch_first != backward.batch_first:
            raise ValueError("Bidirectional: forward and backward must have the same batch_first")
        self._set_fields(backward=backward)

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        carry_f: Any = None
        carry_b: Any = None
        if isinstance(x, tuple):
            if len(x) != 2 or not isinstance(x[1], tuple) or len(x[1]) != 2:
                raise TypeError(
                    "Bidirectional: expected x or a tuple (x, (carry_forward, carry_backward))"
                )
            x, (carry_f, carry_b) = x
        if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
            raise ValueError(f"Bidirectional: expected a sequence tensor, got {_describe(x)}")
        forward, backward = self.forward, self.backward
        assert isinstance(forward, Recurrence) and isinstance(backward, Recurrence)
        dim = forward._time_dim(x)
        rev = x.flip(dim)
        y_f, st_f = forward(x if carry_f is None else (x, carry_f), ps["forward"], st["forward"])
        y_b, st_b = backward(
            rev if carry_b is None else (rev, carry_b), ps["backward"], st["backward"]
        )
        y = torch.cat([y_f, y_b.flip(dim)], dim=-1)
        return y, {"forward": st_f, "backward": st_b}
