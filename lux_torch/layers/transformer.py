"""Transformers: the blocks ``TransformerEncoderLayer`` and ``TransformerDecoderLayer``,
their stacks ``TransformerEncoder`` and ``TransformerDecoder``, and the encoder-decoder
``Transformer``.

All follow ``torch.nn``'s layers of the same names: constructor arguments, children named
like torch's submodules (so that the flattened parameter names equal torch's
``state_dict`` names and :func:`lux_torch.load_state_dict` reads a torch layer's weights
directly), initial distributions, and the post-norm / pre-norm formulas. Per-call options
such as torch's ``is_causal`` go in a dict that ends the input tuple, named as torch's
``forward`` keyword arguments: ``layer((src, {"is_causal": True}), ps, st)``. Every dropout
(the attention dropout inside the attention children and the ``dropout*`` children) draws
its mask from its own ``st[...]["key"]``, never from torch's global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .. import init
from .. import tree as ltree
from ..core import Layer, Params, State, child_key
from ._common import (
    TORCH_FAST_PATH,
    TORCH_PLACEMENT,
    changed_options,
    check_int,
    describe_value,
    options_problem,
)
from .attention import MultiheadAttention
from .basic import Linear
from .containers import as_layer
from .dropout import Dropout
from .normalization import LayerNorm

__all__ = [
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]

Activation = Callable[[torch.Tensor], torch.Tensor]

_ACTIVATIONS: dict[str, Activation] = {"relu": F.relu, "gelu": F.gelu}


def _activation(owner: str, value: Any) -> Activation:
    if isinstance(value, str):
        if value not in _ACTIVATIONS:
            raise ValueError(f"{owner}: activation should be 'relu' or 'gelu', got {value!r}")
        return _ACTIVATIONS[value]
    if not callable(value) or isinstance(value, (Layer, torch.nn.Module)):
        raise TypeError(
            f"{owner}: activation must be 'relu', 'gelu' or a plain function, got "
            f"{type(value).__name__}"
        )
    return value  # type: ignore[no-any-return]


def _check_config(
    owner: str, d_model: Any, nhead: Any, ff: Any, p: Any, flags: dict[str, Any]
) -> None:
    check_int(owner, "d_model", d_model, 1)
    check_int(owner, "nhead", nhead, 1)
    check_int(owner, "dim_feedforward", ff, 1)
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{owner}: dropout must be a float, got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: dropout must be in [0, 1], got {p}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be a bool, got {type(value).__name__}")


def _block_fields(
    owner: str,
    attentions: tuple[str, ...],
    d_model: Any,
    nhead: Any,
    dim_feedforward: Any,
    dropout: Any,
    activation: Any,
    layer_norm_eps: Any,
    batch_first: Any,
    norm_first: Any,
    bias: Any,
    causal: Any,
) -> dict[str, Any]:
    """The checked fields of a block with the given attention children (the first, the
    self-attention, takes ``causal``), then the feed-forward network, and one norm and one
    dropout per sublayer (attentions and feed-forward): ``norm1``, ``dropout1``, ..."""
    flags = {"batch_first": batch_first, "norm_first": norm_first, "bias": bias}
    _check_config(owner, d_model, nhead, dim_feedforward, dropout, {**flags, "causal": causal})
    fields: dict[str, Any] = {
        "d_model": d_model,
        "nhead": nhead,
        "dim_feedforward": dim_feedforward,
        "activation": _activation(owner, activation),
        "layer_norm_eps": layer_norm_eps,
        "causal": causal,
        **flags,
    }
    for i, name in enumerate(attentions):
        fields[name] = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
            causal=causal if i == 0 else False,
        )  # fmt: skip
    fields["linear1"] = Linear(d_model, dim_feedforward, bias=bias)
    fields["dropout"] = Dropout(dropout)
    fields["linear2"] = Linear(dim_feedforward, d_model, bias=bias)
    sublayers = range(1, len(attentions) + 2)
    fields.update(
        {f"norm{i}": LayerNorm(d_model, eps=layer_norm_eps, bias=bias) for i in sublayers}
    )
    fields.update({f"dropout{i}": Dropout(dropout) for i in sublayers})
    return fields


class _Block(Layer):
    """Shared machinery: the configuration and the self-attention (the first fields of
    both blocks), dropout children without state when ``p == 0``, repr."""

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    d_model: int
    nhead: int
    dim_feedforward: int
    activation: Activation
    layer_norm_eps: float
    batch_first: bool
    norm_first: bool
    bias: bool
    causal: bool
    self_attn: MultiheadAttention

    _DROPOUTS: ClassVar[tuple[str, ...]] = ()
    _NORMS: ClassVar[tuple[str, ...]] = ()

    def init_state(self, key: torch.Tensor) -> State:
        st = super().init_state(key)
        for name in self._DROPOUTS:
            if getattr(self, name).p == 0.0:
                st[name] = {}  # the identity: no key, no mode flag (as MultiheadAttention)
        return st

    def _drop(self, name: str, x: torch.Tensor, st: State, new_st: State) -> torch.Tensor:
        layer: Dropout = getattr(self, name)
        if layer.p == 0.0:
            new_st[name] = st[name]
            return x
        y, new_st[name] = layer(x, {}, st[name])
        return y

    def _ff_block(self, x: torch.Tensor, ps: Params, st: State, new_st: State) -> torch.Tensor:
        h, new_st["linear1"] = self.linear1(x, ps["linear1"], st["linear1"])  # type: ignore[attr-defined]
        h = self._drop("dropout", self.activation(h), st, new_st)
        out: torch.Tensor
        out, new_st["linear2"] = self.linear2(h, ps["linear2"], st["linear2"])  # type: ignore[attr-defined]
        return out

    def _norm(self, name: str, x: torch.Tensor, ps: Params, st: State, new_st: State) -> Any:
        y, new_st[name] = getattr(self, name)(x, ps[name], st[name])
        return y

    def _attend(self, name: str, x: Any, ps: Params, st: State, new_st: State) -> Any:
        y, new_st[name] = getattr(self, name)(x, ps[name], st[name])
        return y

    def _residuals(
        self,
        h: torch.Tensor,
        blocks: tuple[Callable[[torch.Tensor], torch.Tensor], ...],
        ps: Params,
        st: State,
        new_st: State,
    ) -> torch.Tensor:
        """The sublayers in turn, ``blocks[i]`` with the norm ``norm{i + 1}`` and a residual
        connection: ``h + block(norm(h))`` (pre-norm) or ``norm(h + block(h))`` (post-norm)."""
        for name, block in zip(self._NORMS, blocks, strict=True):
            if self.norm_first:
                h = h + block(self._norm(name, h, ps, st, new_st))
            else:
                h = self._norm(name, h + block(h), ps, st, new_st)
        return h

    def extra_repr(self) -> str:
        s = self
        parts = [f"d_model={s.d_model}", f"nhead={s.nhead}"]
        if s.dim_feedforward != 2048:
            parts.append(f"dim_feedforward={s.dim_feedforward}")
        if s.dropout.p != 0.1:  # type: ignore[attr-defined]
            parts.append(f"dropout={s.dropout.p}")  # type: ignore[attr-defined]
        act = s.activation
        if act is not F.relu:
            parts.append(f"activation={getattr(act, '__name__', repr(act))}")
        defaults = (
            ("layer_norm_eps", 1e-5),
            ("batch_first", False),
            ("norm_first", False),
            ("bias", True),
            ("causal", False),
        )
        return ", ".join(parts + changed_options(s, defaults))


class TransformerEncoderLayer(_Block):
    """A transformer encoder block (``torch.nn.TransformerEncoderLayer``): self-attention
    and a feed-forward network, each with a residual connection and layer normalization.

    Post-norm (``norm_first=False``, the default, as torch)::

        x = norm1(x + dropout1(self_attn(x)))
        x = norm2(x + dropout2(linear2(dropout(activation(linear1(x))))))

    Pre-norm (``norm_first=True``)::

        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(linear2(dropout(activation(linear1(norm2(x))))))

    ``self_attn`` is a :class:`MultiheadAttention` with attention dropout ``dropout``.

    Arguments:
        d_model: model dimension ``E``.
        nhead: number of attention heads (must divide ``d_model``).
        dim_feedforward: hidden size of the feed-forward network.
        dropout: drop probability of every dropout (attention weights included); active
            in training mode only.
        activation: ``"relu"``, ``"gelu"`` or a function of a tensor (e.g. ``F.silu``).
        layer_norm_eps: ``eps`` of both layer normalizations.
        batch_first: inputs are ``(N, L, E)`` instead of ``(L, N, E)``.
        norm_first: pre-norm instead of post-norm.
        bias: learnable biases in the linear layers, attention and layer norms.
        causal: always mask out key positions ``j > i`` for query position ``i`` (added
            to any ``src_mask``), as the call option ``is_causal=True`` does for one call.
            Equivalent to torch's
            ``src_mask=nn.Transformer.generate_square_subsequent_mask(L), is_causal=True``.

    Input:
        ``src`` alone; a tuple ``(src, src_key_padding_mask, src_mask)`` where either
        mask may be ``None``; or ``(src, options)`` with ``options`` a dict of call
        options named as torch's ``forward`` keyword arguments: ``"src_mask"``,
        ``"src_key_padding_mask"`` (default ``None``) and ``"is_causal"`` (default
        ``False``).

        - ``src``: ``(L, N, E)`` (``(N, L, E)`` with ``batch_first``) or unbatched
          ``(L, E)``.
        - ``src_key_padding_mask``: ``(N, L)`` (``(L,)`` unbatched); ``True`` ignores that
          key position.
        - ``src_mask``: ``(L, L)`` or ``(N * nhead, L, L)``; boolean ``True`` masks out, a
          float mask is added to the attention scores.
        - ``is_causal``: ``True`` masks out key positions ``j > i`` in this call (combined
          with ``src_mask`` and the ``causal`` field). torch's ``is_causal`` is only a hint
          that ``src_mask`` is the causal mask; here no ``src_mask`` is needed, and giving
          torch's causal mask as well changes nothing.

    Returns:
        The output, shaped like ``src``, and the new state.

        Unlike torch's inference fast path (which returns zeros at padded positions of
        a nested-tensor computation), padded query positions are computed like others.

    **Parameters** (torch's ``state_dict`` names)
        - ``self_attn``: ``in_proj_weight`` ``(3E, E)``, ``in_proj_bias`` ``(3E,)``,
          ``out_proj.weight`` ``(E, E)``, ``out_proj.bias`` ``(E,)``.
        - ``linear1``: ``weight`` ``(dim_feedforward, E)``, ``bias``;
          ``linear2``: ``weight`` ``(E, dim_feedforward)``, ``bias``.
        - ``norm1``, ``norm2``: ``weight`` ``(E,)`` (ones), ``bias`` ``(E,)`` (zeros).
        - ``dropout``, ``dropout1``, ``dropout2``: ``{}``.
        (No biases with ``bias=False``.)

    **States**
        ``self_attn``, ``dropout``, ``dropout1``, ``dropout2``: each
        ``{"key": (2,) int64, "training": Static(True)}`` when ``dropout > 0``, ``{}``
        when ``dropout == 0`` (the layer is then deterministic); the other children
        ``{}``.

    Example:
        >>> layer = TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(2, 5, 16), ps, st)  # doctest: +SKIP
        >>> y, st = layer((x, padding_mask, None), ps, st)  # doctest: +SKIP
        >>> y, st = layer((x, {"is_causal": True}), ps, st)  # doctest: +SKIP
    """

    linear1: Linear
    dropout: Dropout
    linear2: Linear
    norm1: LayerNorm
    norm2: LayerNorm
    dropout1: Dropout
    dropout2: Dropout

    _DROPOUTS = ("dropout", "dropout1", "dropout2")
    _NORMS = ("norm1", "norm2")

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Activation = F.relu,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        causal: bool = False,
    ) -> None:
        self._set_fields(
            **_block_fields(
                "TransformerEncoderLayer", ("self_attn",), d_model, nhead, dim_feedforward,
                dropout, activation, layer_norm_eps, batch_first, norm_first, bias, causal,
            )
        )  # fmt: skip
        self._set_fields(layer_norm_eps=self.norm1.eps)

    _OPTIONS: ClassVar[tuple[str, ...]] = ("src_mask", "src_key_padding_mask", "is_causal")

    def _parse(self, x: Any) -> tuple[Any, ...] | str:
        """``(src, src_key_padding_mask, src_mask, is_causal)`` or a problem."""
        if isinstance(x, torch.Tensor):
            return x, None, None, False
        if isinstance(x, (tuple, list)) and len(x) == 3 and not isinstance(x[-1], dict):
            return x[0], x[1], x[2], False
        if isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[1], dict):
            opts = x[1]
            problem = options_problem(opts, self._OPTIONS, ("is_causal",))
            if problem is not None:
                return problem
            causal = bool(opts.get("is_causal") or False)
            return x[0], opts.get("src_key_padding_mask"), opts.get("src_mask"), causal
        return (
            "expected src, a tuple (src, src_key_padding_mask, src_mask) or (src, options) "
            f"with options a dict, got {describe_value(x)}"
        )

    def describe_input_error(self, x: Any) -> str | None:
        parts = self._parse(x)
        if isinstance(parts, str):
            return parts
        src, kpm, mask, _ = parts
        return self.self_attn.describe_input_error((src, src, src, kpm, mask))

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        parts = self._parse(x)
        if isinstance(parts, str):
            raise ValueError(f"TransformerEncoderLayer: {parts}")
        src, kpm, mask, is_causal = parts
        options = {"key_padding_mask": kpm, "attn_mask": mask, "is_causal": is_causal}
        new_st: State = {}

        def sa_block(h: torch.Tensor) -> torch.Tensor:
            h = self._attend("self_attn", (h, h, h, options), ps, st, new_st)
            return self._drop("dropout1", h, st, new_st)

        def ff_block(h: torch.Tensor) -> torch.Tensor:
            return self._drop("dropout2", self._ff_block(h, ps, st, new_st), st, new_st)

        h = self._residuals(src, (sa_block, ff_block), ps, st, new_st)
        return h, {name: new_st[name] for name in st}


class TransformerDecoderLayer(_Block):
    """A transformer decoder block (``torch.nn.TransformerDecoderLayer``): self-attention,
    attention to the encoder's output (``memory``) and a feed-forward network, each with a
    residual connection and layer normalization.

    Post-norm (``norm_first=False``, the default)::

        x = norm1(x + dropout1(self_attn(x)))
        x = norm2(x + dropout2(multihead_attn(x, memory)))
        x = norm3(x + dropout3(linear2(dropout(activation(linear1(x))))))

    Pre-norm (``norm_first=True``)::

        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(multihead_attn(norm2(x), memory))
        x = x + dropout3(linear2(dropout(activation(linear1(norm3(x))))))

    Arguments:
        d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first:
            as :class:`TransformerEncoderLayer`.
        norm_first, bias: as :class:`TransformerEncoderLayer`.
        causal: always mask out target positions ``j > i`` in the self-attention (added
            to any ``tgt_mask``; torch's ``tgt_mask=generate_square_subsequent_mask(T),
            tgt_is_causal=True``), as the call option ``tgt_is_causal=True`` does for one
            call.

    Input:
        A tuple ``(tgt, memory)``, ``(tgt, memory, tgt_mask, memory_mask,
        tgt_key_padding_mask, memory_key_padding_mask)`` (torch's argument order) where
        each mask may be ``None``, or ``(tgt, memory, options)`` with ``options`` a dict
        of call options named as torch's ``forward`` keyword arguments: the four masks
        (default ``None``), ``"tgt_is_causal"`` and ``"memory_is_causal"`` (default
        ``False``).

        - ``tgt``: ``(T, N, E)`` (``(N, T, E)`` with ``batch_first``) or ``(T, E)``;
          ``memory``: ``(S, N, E)`` likewise.
        - ``tgt_mask``: ``(T, T)`` or ``(N * nhead, T, T)``; ``memory_mask``: ``(T, S)``
          or ``(N * nhead, T, S)``; boolean ``True`` masks out, float masks are added.
        - ``tgt_key_padding_mask``: ``(N, T)``; ``memory_key_padding_mask``: ``(N, S)``.
        - ``tgt_is_causal``: ``True`` masks out target positions ``j > i`` in the
          self-attention; ``memory_is_causal``: ``True`` masks out memory positions
          ``j > i`` in the memory attention (top-left aligned when ``T != S``, like
          ``scaled_dot_product_attention(is_causal=True)``). Both are combined with the
          masks; in torch they are hints that require the mask itself.

    Returns:
        The output, shaped like ``tgt``, and the new state.

    **Parameters** (torch's ``state_dict`` names)
        ``self_attn`` and ``multihead_attn`` (as :class:`MultiheadAttention`),
        ``linear1``, ``linear2``, ``norm1``, ``norm2``, ``norm3``; ``dropout``,
        ``dropout1``, ``dropout2``, ``dropout3``: ``{}``.

    **States**
        ``self_attn``, ``multihead_attn`` and the four dropouts: each
        ``{"key", "training"}`` when ``dropout > 0``, ``{}`` when ``dropout == 0``.

    Example:
        >>> layer = TransformerDecoderLayer(16, 4, dim_feedforward=32, batch_first=True)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer((tgt, memory), ps, st)  # doctest: +SKIP
        >>> y, st = layer((tgt, memory, {"tgt_is_causal": True}), ps, st)  # doctest: +SKIP
    """

    multihead_attn: MultiheadAttention
    linear1: Linear
    dropout: Dropout
    linear2: Linear
    norm1: LayerNorm
    norm2: LayerNorm
    norm3: LayerNorm
    dropout1: Dropout
    dropout2: Dropout
    dropout3: Dropout

    _DROPOUTS = ("dropout", "dropout1", "dropout2", "dropout3")
    _NORMS = ("norm1", "norm2", "norm3")

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Activation = F.relu,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        causal: bool = False,
    ) -> None:
        self._set_fields(
            **_block_fields(
                "TransformerDecoderLayer", ("self_attn", "multihead_attn"), d_model, nhead,
                dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first,
                bias, causal,
            )
        )  # fmt: skip
        self._set_fields(layer_norm_eps=self.norm1.eps)

    _OPTIONS: ClassVar[tuple[str, ...]] = (
        "tgt_mask",
        "memory_mask",
        "tgt_key_padding_mask",
        "memory_key_padding_mask",
        "tgt_is_causal",
        "memory_is_causal",
    )

    def _parse(self, x: Any) -> tuple[Any, ...] | str:
        """``(tgt, memory, tgt_mask, memory_mask, tgt_kpm, memory_kpm, tgt_is_causal,
        memory_is_causal)`` or a problem."""
        if isinstance(x, (tuple, list)) and len(x) == 3 and isinstance(x[2], dict):
            opts = x[2]
            problem = options_problem(opts, self._OPTIONS, ("tgt_is_causal", "memory_is_causal"))
            if problem is not None:
                return problem
            masks = [opts.get(name) for name in self._OPTIONS[:4]]
            flags = [bool(opts.get(name) or False) for name in self._OPTIONS[4:]]
            return (x[0], x[1], *masks, *flags)
        if isinstance(x, (tuple, list)) and len(x) in (2, 6):
            masks = [None] * 4 if len(x) == 2 else list(x[2:])
            return (x[0], x[1], *masks, False, False)
        return (
            "expected a tuple (tgt, memory), (tgt, memory, tgt_mask, memory_mask, "
            "tgt_key_padding_mask, memory_key_padding_mask) or (tgt, memory, options) with "
            f"options a dict, got {describe_value(x)}"
        )

    def describe_input_error(self, x: Any) -> str | None:
        parts = self._parse(x)
        if isinstance(parts, str):
            return parts
        tgt, mem, tgt_mask, mem_mask, tgt_kpm, mem_kpm, _, _ = parts
        problem = self.self_attn.describe_input_error((tgt, tgt, tgt, tgt_kpm, tgt_mask))
        if problem is not None:
            return f"self-attention: {problem}"
        problem = self.multihead_attn.describe_input_error((tgt, mem, mem, mem_kpm, mem_mask))
        return None if problem is None else f"memory attention: {problem}"

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        parts = self._parse(x)
        if isinstance(parts, str):
            raise ValueError(f"TransformerDecoderLayer: {parts}")
        tgt, mem, tgt_mask, mem_mask, tgt_kpm, mem_kpm, tgt_causal, mem_causal = parts
        self_opts = {"key_padding_mask": tgt_kpm, "attn_mask": tgt_mask, "is_causal": tgt_causal}
        mem_opts = {"key_padding_mask": mem_kpm, "attn_mask": mem_mask, "is_causal": mem_causal}
        new_st: State = {}

        def sa_block(h: torch.Tensor) -> torch.Tensor:
            h = self._attend("self_attn", (h, h, h, self_opts), ps, st, new_st)
            return self._drop("dropout1", h, st, new_st)

        def mha_block(h: torch.Tensor) -> torch.Tensor:
            h = self._attend("multihead_attn", (h, mem, mem, mem_opts), ps, st, new_st)
            return self._drop("dropout2", h, st, new_st)

        def ff_block(h: torch.Tensor) -> torch.Tensor:
            return self._drop("dropout3", self._ff_block(h, ps, st, new_st), st, new_st)

        h = self._residuals(tgt, (sa_block, mha_block, ff_block), ps, st, new_st)
        return h, {name: new_st[name] for name in st}


# --------------------------------------------------------------------------- stacks


class LayerList(Layer):
    """The ``layers`` child of :class:`TransformerEncoder` / :class:`TransformerDecoder`:
    independent layers named ``"0"``, ``"1"``, ... (torch's ``nn.ModuleList`` names),
    applied in turn.

    Input:
        ``(h, args)``: layer ``i`` is called with ``(h_i, *args)`` (``h_i`` alone when
        ``args == ()``) and returns ``h_{i+1}``; ``args`` (masks, memory, call options) is
        the same for every layer.

    Returns:
        The last layer's output and ``{"0": st_0, "1": st_1, ...}``.

    **Parameters** / **States**
        ``{"0": ..., "1": ..., ...}``, one entry per layer, each initialised from its own
        key (independent values).
    """

    layers: Mapping[str, Layer]

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        h, args = x
        new_st: State = {}
        for name, layer in self.layers.items():
            h, new_st[name] = layer((h, *args) if args else h, ps[name], st[name])
        return h, new_st


def _stack_fields(owner: str, layer: Any, num_layers: Any, norm: Any) -> dict[str, Any]:
    if not isinstance(layer, Layer):
        hint = (
            " (build the block with lux_torch's layer of the same name)"
            if isinstance(layer, torch.nn.Module)
            else ""
        )
        raise TypeError(
            f"{owner}: the layer to stack must be a Layer, got {describe_value(layer)}{hint}"
        )
    check_int(owner, "num_layers", num_layers, 1)
    return {
        "num_layers": num_layers,
        "layers": LayerList({str(i): layer for i in range(num_layers)}),
        "norm": None if norm is None else as_layer(owner, "norm", norm),
    }


class _Stack(Layer):
    """Shared machinery of the stacks: the call (input parsed by the subclass's ``_parse``,
    the blocks, the final norm), input errors from the first block, repr."""

    def _parse(self, x: Any) -> tuple[Any, ...] | str:
        """``(h, block_args)`` or a problem; ``block_args`` follow ``h`` in a block's input."""
        raise NotImplementedError

    def describe_input_error(self, x: Any) -> str | None:
        parts = self._parse(x)
        if isinstance(parts, str):
            return parts
        h, args = parts
        first: Layer = self.layers.layers["0"]  # type: ignore[attr-defined]
        return first.describe_input_error((h, *args) if args else h)

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        parts = self._parse(x)
        if isinstance(parts, str):
            raise ValueError(f"{type(self).__name__}: {parts}")
        h, layer_st = self.layers(parts, ps["layers"], st["layers"])  # type: ignore[attr-defined]
        new_st: State = {"layers": layer_st}
        norm: Layer | None = self.norm  # type: ignore[attr-defined]
        if norm is not None:
            h, new_st["norm"] = norm(h, ps["norm"], st["norm"])
        return h, new_st

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"  # type: ignore[attr-defined]


class TransformerEncoder(_Stack):
    """A stack of ``num_layers`` encoder blocks (``torch.nn.TransformerEncoder``)::

        for layer in layers:
            x = layer(x, masks)
        x = norm(x)  # if norm is given

    Each block is an independent copy of ``encoder_layer`` with its own parameters and
    its own dropout keys. Unlike torch's deep copies, which start from identical values,
    each copy is initialised from its own key (``lux.load_state_dict`` reads torch's
    values as they are).

    Arguments:
        encoder_layer: the block, usually a :class:`TransformerEncoderLayer` (any layer
            taking the same inputs works).
        num_layers: number of blocks (>= 1).
        norm: a layer applied to the output of the last block (e.g.
            ``LayerNorm(d_model)`` for pre-norm blocks), or ``None``.

    Input:
        ``src`` alone; a tuple ``(src, src_key_padding_mask, mask)`` (the order of
        :class:`TransformerEncoderLayer`) where either mask may be ``None``; or
        ``(src, options)`` with ``options`` a dict of call options named as torch's
        ``forward`` keyword arguments: ``"mask"``, ``"src_key_padding_mask"`` (default
        ``None``) and ``"is_causal"`` (default ``False``). Shapes and meanings as
        :class:`TransformerEncoderLayer`'s ``src``, ``src_key_padding_mask``,
        ``src_mask`` and ``is_causal``; every block gets the same masks.

    Returns:
        The output, shaped like ``src``, and the new state. Unlike torch's nested-tensor
        fast path (``enable_nested_tensor``, inference only), padded positions are
        computed like the others; the option does not exist here.

    Raises:
        ValueError: for an input of another form, an unknown call option, or (on the
            first block) a wrongly shaped tensor.

    **Parameters** (torch's ``state_dict`` names)
        - ``layers``: ``{"0": ps_0, ..., "<num_layers - 1>": ...}``, each the parameters
          of ``encoder_layer`` (``layers.0.self_attn.in_proj_weight``, ...).
        - ``norm``: the parameters of ``norm`` (only when it is given).

    **States**
        ``layers``: ``{"0": st_0, ...}``, each the state of ``encoder_layer`` (its own
        dropout keys); ``norm``: the state of ``norm`` (only when given).

    Example:
        >>> block = TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
        >>> encoder = TransformerEncoder(block, num_layers=2, norm=LayerNorm(16))
        >>> ps, st = lux_torch.setup(0, encoder)  # doctest: +SKIP
        >>> options = {"src_key_padding_mask": pad, "is_causal": True}  # doctest: +SKIP
        >>> y, st = encoder((x, options), ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_FAST_PATH  # torch.nn's arguments, not stored

    num_layers: int
    layers: LayerList
    norm: Layer | None

    _OPTIONS: ClassVar[tuple[str, ...]] = ("mask", "src_key_padding_mask", "is_causal")

    def __init__(
        self,
        encoder_layer: Layer,
        num_layers: int,
        norm: Layer | Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self._set_fields(**_stack_fields("TransformerEncoder", encoder_layer, num_layers, norm))

    def _parse(self, x: Any) -> tuple[Any, ...] | str:
        """``(src, block_args)`` or a problem; ``block_args`` follow ``src`` in a block's input."""
        if isinstance(x, torch.Tensor):
            return x, ()
        if isinstance(x, (tuple, list)) and len(x) == 3 and not isinstance(x[-1], dict):
            kpm, mask, causal = x[1], x[2], False
        elif isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[1], dict):
            problem = options_problem(x[1], self._OPTIONS, ("is_causal",))
            if problem is not None:
                return problem
            kpm, mask = x[1].get("src_key_padding_mask"), x[1].get("mask")
            causal = bool(x[1].get("is_causal") or False)
        else:
            return (
                "expected src, a tuple (src, src_key_padding_mask, mask) or (src, options) "
                f"with options a dict, got {describe_value(x)}"
            )
        if kpm is None and mask is None and not causal:
            return x[0], ()
        options = {"src_mask": mask, "src_key_padding_mask": kpm, "is_causal": causal}
        return x[0], (options,)


class TransformerDecoder(_Stack):
    """A stack of ``num_layers`` decoder blocks (``torch.nn.TransformerDecoder``)::

        for layer in layers:
            x = layer(x, memory, masks)
        x = norm(x)  # if norm is given

    Each block is an independent copy of ``decoder_layer`` with its own parameters and
    its own dropout keys, initialised from its own key (torch's deep copies start from
    identical values; ``lux.load_state_dict`` reads them as they are).

    Arguments:
        decoder_layer: the block, usually a :class:`TransformerDecoderLayer` (any layer
            taking the same inputs works).
        num_layers: number of blocks (>= 1).
        norm: a layer applied to the output of the last block, or ``None``.

    Input:
        As :class:`TransformerDecoderLayer`: ``(tgt, memory)``, ``(tgt, memory,
        tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask)``, or
        ``(tgt, memory, options)`` with the options ``"tgt_mask"``, ``"memory_mask"``,
        ``"tgt_key_padding_mask"``, ``"memory_key_padding_mask"``, ``"tgt_is_causal"``
        and ``"memory_is_causal"`` (torch's keyword arguments). Every block gets the same
        ``memory`` and masks.

    Returns:
        The output, shaped like ``tgt``, and the new state.

    Raises:
        ValueError: for an input of another form, an unknown call option, or (on the
            first block) a wrongly shaped tensor.

    **Parameters** (torch's ``state_dict`` names)
        - ``layers``: ``{"0": ps_0, ...}``, each the parameters of ``decoder_layer``
          (``layers.0.self_attn.in_proj_weight``, ``layers.0.multihead_attn...``, ...).
        - ``norm``: the parameters of ``norm`` (only when it is given).

    **States**
        ``layers``: ``{"0": st_0, ...}``, each the state of ``decoder_layer``; ``norm``:
        the state of ``norm`` (only when given).

    Example:
        >>> block = TransformerDecoderLayer(16, 4, dim_feedforward=32, batch_first=True)
        >>> decoder = TransformerDecoder(block, num_layers=2)
        >>> ps, st = lux_torch.setup(0, decoder)  # doctest: +SKIP
        >>> y, st = decoder((tgt, memory, {"tgt_is_causal": True}), ps, st)  # doctest: +SKIP
    """

    num_layers: int
    layers: LayerList
    norm: Layer | None

    def __init__(
        self,
        decoder_layer: Layer,
        num_layers: int,
        norm: Layer | Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self._set_fields(**_stack_fields("TransformerDecoder", decoder_layer, num_layers, norm))

    def _parse(self, x: Any) -> tuple[Any, ...] | str:
        """``(tgt, block_args)`` or a problem; ``block_args`` follow ``tgt`` in a block's input."""
        if isinstance(x, (tuple, list)) and len(x) == 3 and isinstance(x[2], dict):
            problem = options_problem(
                x[2], TransformerDecoderLayer._OPTIONS, ("tgt_is_causal", "memory_is_causal")
            )
            if problem is not None:
                return problem
            given = {k: v for k, v in x[2].items() if v is not None and v is not False}
            return x[0], ((x[1], dict(x[2])) if given else (x[1],))
        if isinstance(x, (tuple, list)) and len(x) in (2, 6):
            masks = tuple(x[2:])
            return x[0], ((x[1], *masks) if any(m is not None for m in masks) else (x[1],))
        return (
            "expected a tuple (tgt, memory), (tgt, memory, tgt_mask, memory_mask, "
            "tgt_key_padding_mask, memory_key_padding_mask) or (tgt, memory, options) with "
            f"options a dict, got {describe_value(x)}"
        )


# --------------------------------------------------------------------------- encoder-decoder


class Transformer(Layer):
    """The encoder-decoder transformer of "Attention Is All You Need"
    (``torch.nn.Transformer``)::

        memory = encoder(src, src_mask, src_key_padding_mask, src_is_causal)
        y = decoder(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                    memory_key_padding_mask, tgt_is_causal, memory_is_causal)

    ``encoder`` is a :class:`TransformerEncoder` of ``num_encoder_layers``
    :class:`TransformerEncoderLayer` blocks and a final ``LayerNorm``; ``decoder`` likewise
    with :class:`TransformerDecoderLayer` blocks (unless ``custom_encoder`` /
    ``custom_decoder`` replace them, as torch). As torch, every parameter with more than
    one dimension starts Xavier-uniform (the blocks' own defaults are overridden);
    biases and norms keep their layers' defaults.

    Arguments:
        d_model: model dimension ``E``.
        nhead: number of attention heads (must divide ``d_model``).
        num_encoder_layers, num_decoder_layers: number of blocks of each stack (>= 1).
        dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first, bias:
            as :class:`TransformerEncoderLayer`, for every block and both final norms.
        custom_encoder, custom_decoder: layers used instead of the default stacks (taking
            the inputs of :class:`TransformerEncoder` / :class:`TransformerDecoder`).

    ``torch.nn.Transformer``'s ``device`` and ``dtype`` are not arguments: parameters come
    from :func:`lux_torch.setup` (``device=``, ``dtype=``).

    Input:
        ``(src, tgt)`` or ``(src, tgt, options)``, ``options`` a dict of call options named
        as torch's ``forward`` keyword arguments: ``"src_mask"``, ``"tgt_mask"``,
        ``"memory_mask"``, ``"src_key_padding_mask"``, ``"tgt_key_padding_mask"``,
        ``"memory_key_padding_mask"`` (default ``None``), ``"src_is_causal"``,
        ``"tgt_is_causal"`` and ``"memory_is_causal"`` (default ``False``).

        - ``src``: ``(S, N, E)`` (``(N, S, E)`` with ``batch_first``) or unbatched
          ``(S, E)``; ``tgt``: ``(T, N, E)`` likewise.
        - ``src_mask``: ``(S, S)``, ``tgt_mask``: ``(T, T)``, ``memory_mask``: ``(T, S)``
          (or with a leading ``N * nhead``); boolean ``True`` masks out, float masks are
          added to the attention scores.
        - ``src_key_padding_mask``, ``memory_key_padding_mask``: ``(N, S)``;
          ``tgt_key_padding_mask``: ``(N, T)``; ``True`` ignores that position.
        - ``*_is_causal``: ``True`` masks out key positions ``j > i`` of that attention
          (combined with its mask). In torch they are hints that the mask already *is*
          the causal mask (``Transformer.generate_square_subsequent_mask``); here the mask
          is applied, and giving torch's causal mask as well changes nothing.

    Returns:
        ``y`` shaped like ``tgt`` and the new state.

    Raises:
        ValueError: for an input of another form, an unknown call option, or ``src`` and
            ``tgt`` of different batch sizes or feature sizes other than ``d_model``.

    **Parameters** (torch's ``state_dict`` names)
        - ``encoder``: ``layers.0 ... layers.<num_encoder_layers - 1>`` (each as
          :class:`TransformerEncoderLayer`) and ``norm`` (``weight`` ``(E,)``, ``bias``).
        - ``decoder``: ``layers.0 ...`` (each as :class:`TransformerDecoderLayer`) and
          ``norm``.

    **States**
        ``encoder`` and ``decoder``: the states of the stacks (every block's dropout keys
        and ``training`` flags when ``dropout > 0``; ``{}`` entries otherwise).

    Example:
        >>> model = Transformer(16, 4, 2, 2, dim_feedforward=32, batch_first=True)
        >>> ps, st = lux_torch.setup(0, model)  # doctest: +SKIP
        >>> y, st = model((src, tgt, {"tgt_is_causal": True}), ps, st)  # doctest: +SKIP
    """

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    d_model: int
    nhead: int
    num_encoder_layers: int
    num_decoder_layers: int
    batch_first: bool
    encoder: Layer
    decoder: Layer

    _OPTIONS: ClassVar[tuple[str, ...]] = (
        "src_mask",
        "tgt_mask",
        "memory_mask",
        "src_key_padding_mask",
        "tgt_key_padding_mask",
        "memory_key_padding_mask",
        "src_is_causal",
        "tgt_is_causal",
        "memory_is_causal",
    )

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Activation = F.relu,
        custom_encoder: Layer | None = None,
        custom_decoder: Layer | None = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
    ) -> None:
        owner = "Transformer"
        check_int(owner, "d_model", d_model, 1)
        check_int(owner, "nhead", nhead, 1)
        check_int(owner, "num_encoder_layers", num_encoder_layers, 1)
        check_int(owner, "num_decoder_layers", num_decoder_layers, 1)
        for name, custom in (
            ("custom_encoder", custom_encoder),
            ("custom_decoder", custom_decoder),
        ):
            if custom is not None and not isinstance(custom, Layer):
                raise TypeError(
                    f"{owner}: {name} must be a Layer or None, got {describe_value(custom)}"
                )
        block = dict(
            dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
            layer_norm_eps=layer_norm_eps, batch_first=batch_first, norm_first=norm_first,
            bias=bias,
        )  # fmt: skip
        encoder, decoder = custom_encoder, custom_decoder
        if encoder is None:
            encoder = TransformerEncoder(
                TransformerEncoderLayer(d_model, nhead, **block),  # type: ignore[arg-type]
                num_encoder_layers,
                norm=LayerNorm(d_model, eps=layer_norm_eps, bias=bias),
            )
        if decoder is None:
            decoder = TransformerDecoder(
                TransformerDecoderLayer(d_model, nhead, **block),  # type: ignore[arg-type]
                num_decoder_layers,
                norm=LayerNorm(d_model, eps=layer_norm_eps, bias=bias),
            )
        self._set_fields(
            d_model=d_model,
            nhead=nhead,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            batch_first=batch_first,
            encoder=encoder,
            decoder=decoder,
        )

    @staticmethod
    def generate_square_subsequent_mask(
        sz: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The ``(sz, sz)`` causal float mask: ``-inf`` above the diagonal, ``0`` elsewhere
        (``torch.nn.Transformer.generate_square_subsequent_mask``)."""
        full = torch.full((sz, sz), float("-inf"), device=device, dtype=dtype)
        return torch.triu(full, diagonal=1)

    def init_params(self, key: torch.Tensor) -> Params:
        """The children's parameters, then every one with more than one dimension drawn
        again Xavier-uniform from the key of its dotted name (torch's ``_reset_parameters``)."""
        ps = super().init_params(key)
        leaves, spec = ltree.flatten(ps)
        names = ltree.paths(ps)
        fresh = [
            init.glorot_uniform(child_key(key, name), *t.shape, dtype=t.dtype, device=t.device)
            if t.dim() > 1
            else t
            for name, t in zip(names, leaves, strict=True)
        ]
        return ltree.unflatten(spec, fresh)  # type: ignore[no-any-return]

    def _parse(self, x: Any) -> tuple[Any, Any, dict[str, Any]] | str:
        """``(src, tgt, options)`` or what is wrong with ``x``."""
        if not isinstance(x, (tuple, list)) or len(x) not in (2, 3):
            return (
                "expected a tuple (src, tgt) or (src, tgt, options) with options a dict, "
                f"got {describe_value(x)}"
            )
        options = x[2] if len(x) == 3 else {}
        if not isinstance(options, dict):
            return f"expected options (a dict) after (src, tgt), got {describe_value(options)}"
        problem = options_problem(options, self._OPTIONS, self._OPTIONS[6:])
        return problem if problem is not None else (x[0], x[1], options)

    def _problem(self, src: Any, tgt: Any) -> str | None:
        """torch's checks: equal batch sizes, feature size ``d_model``."""
        for name, t in (("src", src), ("tgt", tgt)):
            if not isinstance(t, torch.Tensor):
                return f"{name} must be a tensor, got {describe_value(t)}"
        if src.dim() == 3 and tgt.dim() == 3:
            batch = 0 if self.batch_first else 1
            if src.shape[batch] != tgt.shape[batch]:
                return f"src and tgt batch sizes differ: {tuple(src.shape)} and {tuple(tgt.shape)}"
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            return (
                f"src and tgt must have d_model={self.d_model} features, got "
                f"{tuple(src.shape)} and {tuple(tgt.shape)}"
            )
        return None

    @staticmethod
    def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The encoder's and the decoder's call options (torch's keyword names)."""
        encoder = {
            "mask": options.get("src_mask"),
            "src_key_padding_mask": options.get("src_key_padding_mask"),
            "is_causal": options.get("src_is_causal"),
        }
        names = TransformerDecoderLayer._OPTIONS
        return encoder, {name: options.get(name) for name in names}

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        parts = self._parse(x)
        if isinstance(parts, str):
            raise ValueError(f"Transformer: {parts}")
        src, tgt, options = parts
        problem = self._problem(src, tgt)
        if problem is not None:
            raise ValueError(f"Transformer: {problem}")
        enc_opts, dec_opts = self._split(options)
        memory, enc_st = self.encoder((src, enc_opts), ps["encoder"], st["encoder"])
        y, dec_st = self.decoder((tgt, memory, dec_opts), ps["decoder"], st["decoder"])
        return y, {"encoder": enc_st, "decoder": dec_st}

    def describe_input_error(self, x: Any) -> str | None:
        parts = self._parse(x)
        if isinstance(parts, str):
            return parts
        # (an error inside the encoder or decoder is described by the block that raised it)
        return self._problem(parts[0], parts[1])

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, nhead={self.nhead}"
