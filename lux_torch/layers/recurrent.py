"""Recurrent layers: ``RNNCell``, ``LSTMCell``, ``GRUCell``, ``Recurrence``,
``StatefulRecurrentCell`` and ``Bidirectional`` (the ``torch.nn``-compatible stacks ``RNN``,
``LSTM`` and ``GRU`` are in :mod:`lux_torch.layers.rnn`).

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
from ..core import Layer, Params, State, child_key
from ._common import TORCH_PLACEMENT, check_bool, check_int, describe_shape
from .basic import fan_in_uniform

__all__ = [
    "Bidirectional",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "Recurrence",
    "StatefulRecurrentCell",
]


NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


# --------------------------------------------------------------------------- helpers


class Cell(Layer):
    """Shared machinery of the three cells (``gates`` blocks of ``hidden_size`` rows)."""

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    input_size: int
    hidden_size: int
    bias: bool = True

    _gates: ClassVar[int] = 1
    _carry_names: ClassVar[tuple[str, ...]] = ("h",)

    def _validate(self) -> None:
        name = type(self).__name__
        check_int(name, "input_size", self.input_size, minimum=1)
        check_int(name, "hidden_size", self.hidden_size, minimum=1)
        check_bool(name, "bias", self.bias)

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
                raise TypeError(f"{name}: expected the carry (h, c), got {describe_shape(carry)}")
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
                        f"of shape {tuple(x.shape)}, got {describe_shape(part)}"
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

    def _step(
        self,
        gi: torch.Tensor,
        carry: tuple[torch.Tensor, ...],
        w_hh: torch.Tensor,
        b_hh: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        """The new carry from the input projection ``gi = x W_ih^T + b_ih`` and the carry
        (the output is the new carry's first tensor). Shared with the stacks in
        :mod:`lux_torch.layers.rnn`, which project a whole sequence at once."""
        raise NotImplementedError

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        x, carry = self._split_input(x)
        gi = F.linear(x, ps["weight_ih"], ps["bias_ih"] if self.bias else None)
        new = self._step(gi, carry, ps["weight_hh"], ps["bias_hh"] if self.bias else None)
        return (new[0], new if len(new) > 1 else new[0]), st

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


class RNNCell(Cell):
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
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}"
            )

    def _step(
        self,
        gi: torch.Tensor,
        carry: tuple[torch.Tensor, ...],
        w_hh: torch.Tensor,
        b_hh: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        return (NONLINEARITIES[self.nonlinearity](gi + F.linear(carry[0], w_hh, b_hh)),)

    def extra_repr(self) -> str:
        out = super().extra_repr()
        if self.nonlinearity != "tanh":
            out += f", nonlinearity={self.nonlinearity!r}"
        return out


class LSTMCell(Cell):
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

    def _step(
        self,
        gi: torch.Tensor,
        carry: tuple[torch.Tensor, ...],
        w_hh: torch.Tensor,
        b_hh: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        h, c = carry
        i, f, g, o = (gi + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new


class GRUCell(Cell):
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

    def _step(
        self,
        gi: torch.Tensor,
        carry: tuple[torch.Tensor, ...],
        w_hh: torch.Tensor,
        b_hh: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        (h,) = carry
        gh = F.linear(h, w_hh, b_hh)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (n + z * (h - n),)  # torch's form of (1 - z) * n + z * h


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
        check_bool("Recurrence", "return_sequence", self.return_sequence)
        check_bool("Recurrence", "batch_first", self.batch_first)

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
                f"got {describe_shape(x)}"
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
        if not isinstance(self.cell, Cell):
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
        assert isinstance(cell, Cell)
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
            raise ValueError(f"Bidirectional: expected a sequence tensor, got {describe_shape(x)}")
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
