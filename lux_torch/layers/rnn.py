"""``torch.nn``-compatible recurrent stacks: ``RNN``, ``LSTM`` and ``GRU``.

Multi-layer, optionally bidirectional, with inter-layer dropout from ``st["key"]``, an
optional initial state, LSTM projections (``proj_size``), variable-length batches (a
``lengths`` tensor, equivalent to packed sequences) and ``torch.nn``'s flat parameter
names, so ``lux_torch.load_state_dict(layer, torch_lstm.state_dict())`` works directly.

Two execution paths, same numbers
---------------------------------
- **Fused** (plain eager, or under ``torch.func.grad``/``vjp`` only): torch's own
  recurrent kernels (``torch._VF.lstm``/``gru``/``rnn_tanh``/``rnn_relu``, the ones
  ``nn.LSTM`` calls), one call for the whole stack, or one per layer when inter-layer
  dropout is on (our dropout, drawn from the key, runs between the calls). The kernels
  are pure: their own dropout argument is always 0 and torch's global RNG is never read.
- **Unrolled** (under ``torch.compile``/``make_fx``, ``vmap``, ``jvp``/forward-mode AD):
  the cells' step function in a Python loop over time, with each layer's input
  projection computed for the whole sequence in one matmul. ``torch.compile`` turns it
  into one graph; ``vmap`` and forward-mode AD go through it op by op (torch's fused
  kernels have no batching rule and, on CPU, no forward-mode derivative).

The two paths agree to round-off (tested); dropout masks are identical in both because
they come from the same key and are drawn in the padded ``(L, N, D * H_out)`` layout.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import _VF
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import random as lrandom
from .._graph import forward_ad_active, tracing
from ..core import Layer, Params, State
from ..tree import Static
from ._common import TORCH_PLACEMENT, changed_options, check_bool, check_int, describe_shape
from .basic import fan_in_uniform
from .recurrent import NONLINEARITIES, Cell, GRUCell, LSTMCell, RNNCell

__all__ = ["GRU", "LSTM", "RNN"]

Carry = tuple[torch.Tensor, ...]


@contextlib.contextmanager
def _quiet_projection() -> Iterator[None]:
    """oneDNN has no projected LSTM: torch's C++ loop runs instead, and warns that it does.
    (Entered for projected LSTMs only: warning filters are process-wide.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections is not supported")
        yield


def fused_kernels_usable(packed: bool = False) -> bool:
    """Whether torch's fused recurrent kernels can run here: not while tracing
    (``torch.compile``, ``make_fx``), not under forward-mode AD, and under no ``torch.func``
    transform other than ``grad``/``vjp`` (under none at all for ``packed`` sequences: the
    packed kernel reads its input's storage, which ``grad``'s wrapped tensors do not have)."""
    if tracing() or forward_ad_active():
        return False
    if torch._C._functorch.peek_interpreter_stack() is None:
        return True
    if packed:
        return False
    return all(i.key() == TransformType.Grad for i in retrieve_all_functorch_interpreters())


class _LSTMSequence(torch.autograd.Function):
    """One LSTM layer direction over a whole sequence, with a hand-written backward
    (backpropagation through time), for the compiled path.

    Autograd through the unrolled steps computes ``dW_hh`` as one small matmul per step;
    this backward keeps only the unavoidable sequential matmul (``dh_{t-1} = dgates_t
    W_hh``) in the loop and gets ``dW_hh`` from one ``(4H, L*N) @ (L*N, H)`` matmul at the
    end: about a quarter fewer kernels, which takes the compiled LSTM from 1.3x to parity
    with ``nn.LSTM``'s fused kernel. First-order only (``once_differentiable``): a second
    derivative raises instead of being silently wrong.

    Inputs: ``gi`` ``(L, *, 4H)`` (the input projection, ``x W_ih^T + b_ih``), ``h0``,
    ``c0`` ``(*, H)``, ``w_hh`` ``(4H, H)``, ``b_hh`` ``(4H,)`` or ``None``. Outputs:
    ``ys`` ``(L, *, H)``, ``h_n``, ``c_n``, and (non-differentiable, saved for the
    backward) the cell states ``(L, *, H)`` and gate activations ``(L, *, 4H)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        gi: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
        w_hh: torch.Tensor,
        b_hh: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        h, c = h0, c0
        hs, cs, acts = [], [], []
        for t in range(gi.shape[0]):
            i, f, g, o = (gi[t] + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            hs.append(h)
            cs.append(c)
            acts.append(torch.cat([i, f, g, o], dim=-1))
        return torch.stack(hs), h, c, torch.stack(cs), torch.stack(acts)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        _, h0, c0, w_hh, b_hh = inputs
        ys, _, _, cs, acts = output
        ctx.save_for_backward(h0, c0, w_hh, ys, cs, acts)
        ctx.has_bias = b_hh is not None
        ctx.mark_non_differentiable(cs, acts)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        d_ys, dh, dc_next = grads[:3]
        h0, c0, w_hh, ys, cs, acts = ctx.saved_tensors
        steps = ys.shape[0]
        d_gates: list[torch.Tensor] = [ys] * steps
        for t in range(steps - 1, -1, -1):
            i, f, g, o = acts[t].chunk(4, dim=-1)
            c_prev = cs[t - 1] if t > 0 else c0
            tanh_c = torch.tanh(cs[t])
            dh = dh + d_ys[t]
            dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
            d_gates[t] = torch.cat(
                [
                    dc * g * i * (1 - i),
                    dc * c_prev * f * (1 - f),
                    dc * i * (1 - g * g),
                    dh * tanh_c * o * (1 - o),
                ],
                dim=-1,
            )
            dh = d_gates[t] @ w_hh
            dc_next = dc * f
        d_g = torch.stack(d_gates)  # (L, *, 4H): also the gradient of gi
        h_prev = torch.cat([h0.unsqueeze(0), ys[:-1]])
        d_w = d_g.reshape(-1, d_g.shape[-1]).t() @ h_prev.reshape(-1, h_prev.shape[-1])
        d_b = d_g.reshape(-1, d_g.shape[-1]).sum(0) if ctx.has_bias else None
        return d_g, dh, dc_next, d_w, d_b


class _StackedRNN(Layer):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU` (``torch.nn``'s
    multi-layer, optionally bidirectional recurrent modules), built from the cells."""

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False

    _cell_cls: ClassVar[type[Cell]]
    # the cell of each layer (both directions share its configuration); set in __post_init__
    # as a plain attribute (not a field: it is derived configuration, not a child)
    _cells: ClassVar[tuple[Cell, ...]]

    def _validate(self) -> None:
        name = type(self).__name__
        check_int(name, "input_size", self.input_size, minimum=1)
        check_int(name, "hidden_size", self.hidden_size, minimum=1)
        check_int(name, "num_layers", self.num_layers, minimum=1)
        check_bool(name, "bias", self.bias)
        check_bool(name, "batch_first", self.batch_first)
        check_bool(name, "bidirectional", self.bidirectional)
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{name}: dropout must be a float, got {type(p).__name__}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {p}")
        self._set_fields(dropout=float(p))

    def _make_cell(self, input_size: int) -> Cell:
        return self._cell_cls(input_size, self.hidden_size, self.bias)

    def __post_init__(self) -> None:
        self._validate()
        width = self._directions * self._h_out
        cells = tuple(
            self._make_cell(self.input_size if layer == 0 else width)
            for layer in range(self.num_layers)
        )
        object.__setattr__(self, "_cells", cells)

    # -- configuration helpers
    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _proj(self) -> int:
        return 0

    @property
    def _h_out(self) -> int:
        """The size of ``h`` (``proj_size`` for a projected LSTM, else ``hidden_size``)."""
        return self._proj or self.hidden_size

    def _carry_sizes(self) -> tuple[int, ...]:
        return (self._h_out, self.hidden_size)[: len(self._cell_cls._carry_names)]

    def _kernel(self) -> Callable[..., Any]:
        raise NotImplementedError

    def _slots(self) -> list[tuple[int, int, str]]:
        """``(layer, direction, suffix)`` in torch's order (``_l0``, ``_l0_reverse``, ...)."""
        return [
            (layer, d, f"_l{layer}" + ("_reverse" if d else ""))
            for layer in range(self.num_layers)
            for d in range(self._directions)
        ]

    def _cell_param_names(self) -> tuple[str, ...]:
        """One slot's parameter names in torch's flat-weights order."""
        names: tuple[str, ...] = ("weight_ih", "weight_hh")
        if self.bias:
            names += ("bias_ih", "bias_hh")
        return (*names, "weight_hr") if self._proj else names

    def init_params(self, key: torch.Tensor) -> Params:
        slots = self._slots()
        h, rows = self.hidden_size, self._cell_cls._gates * self.hidden_size
        shapes = {"weight_hh": (rows, self._h_out), "bias_ih": (rows,), "bias_hh": (rows,)}
        shapes["weight_hr"] = (self._proj, h)
        ps: Params = {}
        for k, (layer, _, suffix) in zip(lrandom.split(key, len(slots)), slots, strict=True):
            keys = dict(
                zip(
                    ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"),
                    lrandom.split(k, 5 if self._proj else 4),
                    strict=False,
                )
            )
            shapes["weight_ih"] = (rows, self._cells[layer].input_size)
            for n in self._cell_param_names():
                ps[n + suffix] = fan_in_uniform(keys[n], shapes[n], h)
        return ps

    def init_state(self, key: torch.Tensor) -> State:
        if self.dropout == 0.0:
            return {}
        return {"key": key.clone(), "training": Static(True)}

    # -- input handling
    def _layout(self) -> str:
        return "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"

    def _split(self, x: Any) -> tuple[Any, Any, Any]:
        """``(x, hx, lengths)`` from ``x``, ``(x, hx)`` or ``(x, hx, lengths)``."""
        name = type(self).__name__
        if not isinstance(x, tuple):
            return x, None, None
        if len(x) not in (2, 3):
            raise TypeError(
                f"{name}: expected x, (x, initial state) or (x, initial state, lengths), got "
                f"a tuple of {len(x)} items"
            )
        return x[0], x[1], x[2] if len(x) == 3 else None

    def _initial(self, hx: Any, seq: torch.Tensor, batched: bool) -> Carry:
        """The initial carry tensors, each ``(D * num_layers, N, size)``."""
        name = type(self).__name__
        names = self._cell_cls._carry_names
        sizes = self._carry_sizes()
        count, n = self._directions * self.num_layers, seq.shape[1]
        if hx is None:
            return tuple(seq.new_zeros((count, n, size)) for size in sizes)
        if len(names) > 1:
            if not isinstance(hx, tuple) or len(hx) != len(names):
                raise TypeError(
                    f"{name}: expected the initial state as a tuple (h0, c0), "
                    f"got {describe_shape(hx)}"
                )
            parts = hx
        else:
            parts = (hx,)
        for label, part, size in zip(names, parts, sizes, strict=True):
            expected = (count, n, size) if batched else (count, size)
            if not isinstance(part, torch.Tensor) or tuple(part.shape) != expected:
                dims = "D * num_layers, N, " if batched else "D * num_layers, "
                dims += "proj_size" if label == "h" and self._proj else "hidden_size"
                raise ValueError(
                    f"{name}: expected {label}0 of shape {expected} ({dims}), "
                    f"got {describe_shape(part)}"
                )
        return tuple(parts) if batched else tuple(p.unsqueeze(1) for p in parts)

    def _lengths(
        self, lengths: Any, seq: torch.Tensor, batched: bool, check_values: bool
    ) -> torch.Tensor:
        """``lengths`` as a tensor, validated (its values only where a host read is possible)."""
        name = type(self).__name__
        if not batched:
            raise ValueError(f"{name}: lengths needs a batched input {self._layout()}")
        if isinstance(lengths, (list, tuple)):
            lengths = torch.tensor(lengths, dtype=torch.int64)
        steps, n = seq.shape[0], seq.shape[1]
        if (
            not isinstance(lengths, torch.Tensor)
            or lengths.dtype.is_floating_point
            or lengths.dtype.is_complex
            or lengths.dtype == torch.bool
            or tuple(lengths.shape) != (n,)
        ):
            raise ValueError(
                f"{name}: expected lengths as an integer tensor of shape ({n},) (one length "
                f"per sequence), got {describe_shape(lengths)}"
                + (f" of dtype {lengths.dtype}" if isinstance(lengths, torch.Tensor) else "")
            )
        if check_values and bool(((lengths < 1) | (lengths > steps)).any()):
            raise ValueError(
                f"{name}: every length must be in [1, {steps}] (the padded length), got "
                f"{lengths.tolist()}"
            )
        return lengths

    # -- the two paths
    def _slot_weights(self, ps: Params, suffix: str) -> list[torch.Tensor]:
        return [ps[n + suffix] for n in self._cell_param_names()]

    def _bptt(self, mask: torch.Tensor | None) -> bool:
        """Whether the unrolled path runs :class:`_LSTMSequence`: for a plain LSTM (no
        projection, no lengths) while tracing for compilation, outside forward-mode AD."""
        if not (self._cell_cls is LSTMCell and not self._proj and mask is None and tracing()):
            return False
        if forward_ad_active():
            return False
        if torch.compiler.is_compiling():  # Dynamo handles transforms itself
            return True
        return all(i.key() != TransformType.Jvp for i in retrieve_all_functorch_interpreters())

    def _direction(
        self,
        layer: int,
        reverse: bool,
        gi: torch.Tensor,
        carry: Carry,
        w: dict[str, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Carry]:
        """One layer direction over the sequence: ``(outputs (L, N, H_h), final carry)``."""
        if self._bptt(mask):
            g = gi.flip(0) if reverse else gi
            # (c0 is cloned: autograd.Function under Dynamo refuses one tensor given twice)
            ys, h_n, c_n, _, _ = _LSTMSequence.apply(  # type: ignore[no-untyped-call]  # torch's
                g, carry[0], carry[1].clone(), w["weight_hh"], w.get("bias_hh")
            )
            return (ys.flip(0) if reverse else ys), (h_n, c_n)
        steps = gi.shape[0]
        step_fn = self._cells[layer]._step
        outs: list[Any] = [None] * steps
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            new = step_fn(gi[t], carry, w["weight_hh"], w.get("bias_hh"))
            if self._proj:
                new = (F.linear(new[0], w["weight_hr"]), *new[1:])
            if mask is not None:
                new = tuple(torch.where(mask[t], a, b) for a, b in zip(new, carry, strict=True))
                outs[t] = new[0].masked_fill(~mask[t], 0.0)
            else:
                outs[t] = new[0]
            carry = new
        return torch.stack(outs), carry

    def _unrolled(
        self,
        seq: torch.Tensor,
        initial: Carry,
        ps: Params,
        drop_keys: torch.Tensor | None,
        lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Carry]:
        mask = None
        if lengths is not None:
            positions = torch.arange(seq.shape[0], device=seq.device).unsqueeze(1)
            mask = (positions < lengths.to(seq.device)).unsqueeze(-1)  # (L, N, 1)
        finals: list[list[torch.Tensor]] = [[] for _ in initial]
        inp = seq
        for i, (layer, d, suffix) in enumerate(self._slots()):
            if d == 0:
                outs: list[torch.Tensor] = []
            w = dict(zip(self._cell_param_names(), self._slot_weights(ps, suffix), strict=True))
            gi = F.linear(inp, w["weight_ih"], w.get("bias_ih"))  # all steps in one matmul
            ys, carry = self._direction(layer, bool(d), gi, tuple(p[i] for p in initial), w, mask)
            outs.append(ys)
            for j, part in enumerate(carry):
                finals[j].append(part)
            if d == self._directions - 1:
                inp = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
                if drop_keys is not None and layer < self.num_layers - 1:
                    inp = lrandom.dropout(drop_keys[layer], inp, self.dropout)
        return inp, tuple(torch.stack(f) for f in finals)

    def _fused(
        self,
        seq: torch.Tensor,
        initial: Carry,
        ps: Params,
        drop_keys: torch.Tensor | None,
        lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Carry]:
        kernel, lstm, dirs = self._kernel(), len(initial) > 1, self._directions
        slots = self._slots()
        # one call for the whole stack, or one per layer with our dropout in between
        groups = (
            [(0, self.num_layers)]
            if drop_keys is None
            else [(k, k + 1) for k in range(self.num_layers)]
        )
        steps, finals, inp = seq.shape[0], [], seq
        for start, stop in groups:
            flat = [
                w
                for (layer, _, suffix) in slots
                if start <= layer < stop
                for w in self._slot_weights(ps, suffix)
            ]
            hx = tuple(p[dirs * start : dirs * stop] for p in initial)
            args = (flat, self.bias, stop - start, 0.0, True, self.bidirectional)
            with _quiet_projection() if self._proj else contextlib.nullcontext():
                if lengths is None:
                    res = kernel(inp, hx if lstm else hx[0], *args, False)
                    out, last = res[0], tuple(res[1:])
                else:
                    packed = pack_padded_sequence(inp, lengths.cpu(), enforce_sorted=False)
                    order, undo = packed.sorted_indices, packed.unsorted_indices
                    assert order is not None and undo is not None
                    hx = tuple(p.index_select(1, order) for p in hx)
                    res = kernel(packed.data, packed.batch_sizes, hx if lstm else hx[0], *args)
                    out_packed = PackedSequence(res[0], packed.batch_sizes, order, undo)
                    out = pad_packed_sequence(out_packed, total_length=steps)[0]
                    last = tuple(p.index_select(1, undo) for p in res[1:])
            finals.append(last)
            inp = out
            if drop_keys is not None and stop < self.num_layers:
                inp = lrandom.dropout(drop_keys[start], inp, self.dropout)
        return inp, tuple(torch.cat(parts) for parts in zip(*finals, strict=True))

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        name = type(self).__name__
        x, hx, lengths = self._split(x)
        if (
            not isinstance(x, torch.Tensor)
            or x.ndim not in (2, 3)
            or x.shape[-1] != self.input_size
        ):
            layout = self._layout().replace("H_in", str(self.input_size))
            raise ValueError(
                f"{name}: expected input of shape {layout} or (L, {self.input_size}), "
                f"got {describe_shape(x)}"
            )
        batched = x.ndim == 3
        seq = (x.transpose(0, 1) if self.batch_first else x) if batched else x.unsqueeze(1)
        if seq.shape[0] == 0:
            raise ValueError(f"{name}: the sequence is empty (L = 0)")
        initial = self._initial(hx, seq, batched)
        fused = fused_kernels_usable(packed=lengths is not None)
        if lengths is not None:
            lengths = self._lengths(lengths, seq, batched, fused)

        new_st = st
        drop_keys: torch.Tensor | None = None
        if self.dropout > 0.0 and st["training"]:
            new_key, use_key = lrandom.split(st["key"])
            new_st = {"key": new_key, "training": st["training"]}
            if self.num_layers > 1:
                drop_keys = lrandom.split(use_key, self.num_layers - 1)

        run = self._fused if fused else self._unrolled
        out, last = run(seq, initial, ps, drop_keys, lengths)
        out = (out.transpose(0, 1) if self.batch_first else out) if batched else out.squeeze(1)
        if not batched:
            last = tuple(p.squeeze(1) for p in last)
        return (out, last if len(last) > 1 else last[0]), new_st

    def extra_repr(self) -> str:
        parts = [f"{self.input_size} => {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        defaults = (
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
        )
        return ", ".join(parts + changed_options(self, defaults))

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, tuple) and len(x) in (2, 3):
            x = x[0]
        if isinstance(x, torch.Tensor) and (x.ndim not in (2, 3) or x.shape[-1] != self.input_size):
            return (
                f"expected input of shape {self._layout()} or (L, H_in) with H_in = "
                f"{self.input_size}, got {tuple(x.shape)}"
            )
        return None


class RNN(_StackedRNN):
    """Multi-layer Elman RNN, ``torch.nn.RNN`` as a pure layer.

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
        ``(L, H_in)``; or ``(x, h0)`` giving the initial state (``None`` for zeros);
        or ``(x, h0, lengths)`` for a padded batch of variable-length sequences:
        ``lengths`` is an integer tensor (or list) of shape ``(N,)`` with values in
        ``[1, L]``. With ``lengths`` the result equals ``torch.nn``'s on
        ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` followed by
        ``pad_packed_sequence(..., total_length=L)``: outputs past a sequence's end are
        zero, and the final state is the one at its last valid step (for the reverse
        direction, after its first step).
        ``h0`` has shape ``(D * num_layers, N, H_out)`` (``(D * num_layers, H_out)``
        unbatched) and defaults to zeros.

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
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"RNN: nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}"
            )
        super().__post_init__()

    def _make_cell(self, input_size: int) -> Cell:
        return RNNCell(input_size, self.hidden_size, self.bias, self.nonlinearity)

    def _kernel(self) -> Callable[..., Any]:
        return _VF.rnn_tanh if self.nonlinearity == "tanh" else _VF.rnn_relu

    def extra_repr(self) -> str:
        out = super().extra_repr()
        if self.nonlinearity != "tanh":
            out += f", nonlinearity={self.nonlinearity!r}"
        return out


class LSTM(_StackedRNN):
    """Multi-layer LSTM, ``torch.nn.LSTM`` as a pure layer.

    Arguments are :class:`RNN`'s (without ``nonlinearity``), plus:
        proj_size: if ``> 0``, an LSTM with projections (as torch): each step's ``h`` is
            projected to ``proj_size`` features by ``weight_hr_l{k}``, so ``h``, the
            output features and the next layer's input use ``H_h = proj_size`` instead of
            ``hidden_size``. Must be smaller than ``hidden_size``.

    Input:
        ``x`` of shape ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or unbatched
        ``(L, H_in)``; or ``(x, (h0, c0))`` giving the initial state (``None`` for zeros);
        or ``(x, (h0, c0), lengths)`` for a padded batch of variable-length sequences:
        ``lengths`` is an integer tensor (or list) of shape ``(N,)`` with values in
        ``[1, L]``. With ``lengths`` the result equals ``torch.nn``'s on
        ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` followed by
        ``pad_packed_sequence(..., total_length=L)``: outputs past a sequence's end are
        zero, and the final state is the one at its last valid step (for the reverse
        direction, after its first step).
        The initial state is the pair ``(h0, c0)``: ``h0`` of shape
        ``(D * num_layers, N, H_h)`` and ``c0`` of shape ``(D * num_layers, N, H_out)``
        (without the ``N`` unbatched), where ``H_h`` is ``proj_size`` or ``hidden_size``.

    Returns:
        ``((output, (h_n, c_n)), st)`` like torch's ``(output, (h_n, c_n))``; ``output``
        has ``D * H_h`` features.

    **Parameters**
        torch's flat names as for :class:`RNN`, with ``4 * H_out`` rows (gates ``i, f, g,
        o``): ``weight_ih_l{k}``, ``weight_hh_l{k}`` (``(4 * H_out, H_h)``),
        ``bias_ih_l{k}``, ``bias_hh_l{k}``, with ``proj_size`` also ``weight_hr_l{k}``
        ``(proj_size, H_out)``, and their ``_reverse`` counterparts.

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
        self._validate()
        check_int("LSTM", "proj_size", self.proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"LSTM: proj_size must be smaller than hidden_size ({self.hidden_size}), "
                f"got {self.proj_size}"
            )
        super().__post_init__()

    @property
    def _proj(self) -> int:
        return self.proj_size

    def _kernel(self) -> Callable[..., Any]:
        return _VF.lstm

    def extra_repr(self) -> str:
        out = super().extra_repr()
        return out + (f", proj_size={self.proj_size}" if self.proj_size else "")


class GRU(_StackedRNN):
    """Multi-layer GRU, ``torch.nn.GRU`` as a pure layer.

    Arguments, input and output are :class:`RNN`'s (without ``nonlinearity``): the input is
    ``x``, ``(x, h0)`` or ``(x, h0, lengths)`` and the result ``((output, h_n), st)``.

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

    def _kernel(self) -> Callable[..., Any]:
        return _VF.gru
