"""Vision Transformer (Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words") with
torchvision's layout: ``lux.state_dict(ps, st)`` has the keys and shapes of
``torchvision.models.vit_*().state_dict()``, so torchvision's weights load directly::

    tv = torchvision.models.vit_b_16(weights="DEFAULT")
    ps, st = lux.load_state_dict(models.vit_b_16(), tv.state_dict())

``VisionTransformer`` (alias ``ViT``) builds any size; ``vit_b_16``, ``vit_b_32``,
``vit_l_16``, ``vit_l_32`` and ``vit_h_14`` are torchvision's, ``vit_tiny`` and ``vit_small``
DeiT's sizes (Touvron et al. 2021) in the same layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import torch
import torch.nn.functional as F

from .. import init
from ..core import Layer, Params, State, child_key
from ..layers._common import check_int, describe_value
from ..layers.activation import GELU, Tanh
from ..layers.attention import MultiheadAttention
from ..layers.basic import Linear
from ..layers.containers import Chain
from ..layers.conv import Conv2d
from ..layers.dropout import Dropout
from ..layers.normalization import LayerNorm

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = [
    "ViT",
    "ViTEncoder",
    "ViTEncoderBlock",
    "ViTOptions",
    "VisionTransformer",
    "interpolate_embeddings",
    "vit_b_16",
    "vit_b_32",
    "vit_h_14",
    "vit_l_16",
    "vit_l_32",
    "vit_small",
    "vit_tiny",
]

_EPS = 1e-6  # torchvision's LayerNorm eps


def lecun_truncated_normal(
    key: torch.Tensor,
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``trunc_normal(std=sqrt(1 / fan_in))`` on ``[-2, 2]`` (torchvision's ViT patch
    projection and ``pre_logits``), ``fan_in`` the product of ``shape[1:]``."""
    std = math.sqrt(1.0 / math.prod(shape[1:]))
    return init.truncated_normal(key, *shape, std=std, dtype=dtype, device=device)


def _mlp(hidden_dim: int, mlp_dim: int, dropout: float) -> Chain:
    """torchvision's ``MLPBlock``: ``Linear, GELU, Dropout, Linear, Dropout`` named ``"0"`` to
    ``"4"``; Xavier-uniform weights, ``N(0, 1e-6^2)`` biases."""
    bias_init = functools.partial(init.normal, std=1e-6)

    def linear(i: int, o: int) -> Linear:
        return Linear(i, o, weight_init=init.glorot_uniform, bias_init=bias_init)

    layers = (linear(hidden_dim, mlp_dim), GELU(), Dropout(dropout), linear(mlp_dim, hidden_dim))
    return Chain({str(i): layer for i, layer in enumerate((*layers, Dropout(dropout)))})


def _tokens_problem(x: Any, length: int | None, dim: int) -> str | None:
    """Why ``x`` is not a ``(N, length, dim)`` sequence (any length when ``None``)."""
    want = f"(N, {'L' if length is None else length}, {dim})"
    if (
        not isinstance(x, torch.Tensor)
        or x.dim() != 3
        or x.shape[2] != dim
        or (length is not None and x.shape[1] != length)
    ):
        return f"expected a token sequence of shape {want}, got {describe_value(x)}"
    return None


class ViTEncoderBlock(Layer):
    """One pre-norm encoder block of ViT (torchvision's ``EncoderBlock``)::

        x = x + dropout(self_attention(ln_1(x)))
        y = x + mlp(ln_2(x))

    Arguments:
        num_heads: attention heads; must divide ``hidden_dim``.
        hidden_dim: token width ``E``.
        mlp_dim: the MLP's hidden width.
        dropout: drop probability after the attention and in the MLP (training mode).
        attention_dropout: drop probability of the attention weights (training mode).

    Input:
        Tokens ``(N, L, E)``.

    Returns:
        Tokens ``(N, L, E)`` and the new state.

    **Parameters**
        - ``ln_1``, ``ln_2``: ``{"weight": (E,), "bias": (E,)}`` (LayerNorm, eps 1e-6).
        - ``self_attention``: ``{"in_proj_weight": (3E, E), "in_proj_bias": (3E,),
          "out_proj": {"weight": (E, E), "bias": (E,)}}``
          (:class:`~lux_torch.layers.MultiheadAttention`, ``batch_first``).
        - ``dropout``: ``{}``.
        - ``mlp``: ``"0"``: ``{"weight": (mlp_dim, E), "bias": (mlp_dim,)}``, ``"3"``:
          ``{"weight": (E, mlp_dim), "bias": (E,)}``; ``{}`` for the GELU (``"1"``) and the
          dropouts (``"2"``, ``"4"``).

    **States**
        - ``dropout``, ``mlp["2"]``, ``mlp["4"]``: ``{"key": (2,) int64, "training": Static}``.
        - ``self_attention``: the same when ``attention_dropout > 0``, else ``{}``.
        - the others: ``{}``.
    """

    hidden_dim: int
    ln_1: LayerNorm
    self_attention: MultiheadAttention
    dropout: Dropout
    ln_2: LayerNorm
    mlp: Chain

    def __init__(
        self,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        check_int("ViTEncoderBlock", "mlp_dim", mlp_dim, 1)
        self._set_fields(
            hidden_dim=hidden_dim,
            ln_1=LayerNorm(hidden_dim, eps=_EPS),
            self_attention=MultiheadAttention(
                hidden_dim, num_heads, dropout=attention_dropout, batch_first=True
            ),
            dropout=Dropout(dropout),
            ln_2=LayerNorm(hidden_dim, eps=_EPS),
            mlp=_mlp(hidden_dim, mlp_dim, dropout),
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem is not None:
            raise ValueError(f"ViTEncoderBlock: {problem}")
        new_st = dict(st)
        h, new_st["ln_1"] = self.ln_1(x, ps["ln_1"], st["ln_1"])
        h, new_st["self_attention"] = self.self_attention(
            h, ps["self_attention"], st["self_attention"]
        )
        h, new_st["dropout"] = self.dropout(h, ps["dropout"], st["dropout"])
        x = x + h
        h, new_st["ln_2"] = self.ln_2(x, ps["ln_2"], st["ln_2"])
        h, new_st["mlp"] = self.mlp(h, ps["mlp"], st["mlp"])
        return x + h, new_st

    def describe_input_error(self, x: Any) -> str | None:
        return _tokens_problem(x, None, self.hidden_dim)

    def extra_repr(self) -> str:
        return f"{self.hidden_dim}, num_heads={self.self_attention.num_heads}"


class ViTEncoder(Layer):
    """ViT's encoder (torchvision's ``Encoder``): ``ln(layers(dropout(x + pos_embedding)))``.

    Arguments:
        seq_length: tokens per image ``L`` (patches + 1 class token).
        num_layers: encoder blocks (:class:`ViTEncoderBlock`).
        num_heads, hidden_dim, mlp_dim, dropout, attention_dropout: as
            :class:`ViTEncoderBlock`.

    Input:
        Tokens ``(N, L, E)``.

    Returns:
        Tokens ``(N, L, E)`` and the new state.

    **Parameters**
        - ``pos_embedding``: ``(1, L, E)``, learned position embedding (``N(0, 0.02^2)``).
        - ``dropout``: ``{}``.
        - ``layers``: ``{"encoder_layer_0": ..., ..., "encoder_layer_{num_layers-1}": ...}``,
          each a :class:`ViTEncoderBlock`'s parameters.
        - ``ln``: ``{"weight": (E,), "bias": (E,)}``.

    **States**
        ``dropout``: ``{"key": (2,) int64, "training": Static}``; ``layers``: the blocks'
        states; ``ln``: ``{}``.
    """

    seq_length: int
    hidden_dim: int
    dropout: Dropout
    layers: Chain
    ln: LayerNorm

    def __init__(
        self,
        seq_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        check_int("ViTEncoder", "seq_length", seq_length, 1)
        check_int("ViTEncoder", "num_layers", num_layers, 1)
        block = ViTEncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, attention_dropout)
        self._set_fields(
            seq_length=seq_length,
            hidden_dim=hidden_dim,
            dropout=Dropout(dropout),
            layers=Chain({f"encoder_layer_{i}": block for i in range(num_layers)}),
            ln=LayerNorm(hidden_dim, eps=_EPS),
        )

    def init_params(self, key: torch.Tensor) -> Params:
        shape = (1, self.seq_length, self.hidden_dim)
        pos = init.normal(child_key(key, "pos_embedding"), *shape, std=0.02)
        return {"pos_embedding": pos, **super().init_params(key)}

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem is not None:
            raise ValueError(f"ViTEncoder: {problem}")
        new_st = dict(st)
        h, new_st["dropout"] = self.dropout(x + ps["pos_embedding"], ps["dropout"], st["dropout"])
        h, new_st["layers"] = self.layers(h, ps["layers"], st["layers"])
        h, new_st["ln"] = self.ln(h, ps["ln"], st["ln"])
        return h, new_st

    def describe_input_error(self, x: Any) -> str | None:
        return _tokens_problem(x, self.seq_length, self.hidden_dim)

    def extra_repr(self) -> str:
        return f"seq_length={self.seq_length}, hidden_dim={self.hidden_dim}"


class VisionTransformer(Layer):
    """Vision Transformer with torchvision's names (``torchvision.models.VisionTransformer``).

    The image is cut into ``patch_size`` x ``patch_size`` patches by a strided convolution
    (``conv_proj``), a learned class token is put in front, the :class:`ViTEncoder` adds
    position embeddings and runs ``num_layers`` pre-norm blocks; the class token's final
    state goes through ``heads``.

    Arguments:
        image_size: height and width of the (square) input images; a multiple of
            ``patch_size``.
        patch_size: patch height and width.
        num_layers: encoder blocks.
        num_heads: attention heads; must divide ``hidden_dim``.
        hidden_dim: token width ``E``.
        mlp_dim: the blocks' MLP hidden width.
        dropout: drop probability after the position embedding, the attention and in the MLPs.
        attention_dropout: drop probability of the attention weights.
        num_classes: outputs of ``heads.head``.
        representation_size: if given, ``heads`` is ``pre_logits`` (``Linear(E =>
            representation_size)``), ``act`` (tanh), ``head``; otherwise just ``head``.

    The initialisation is torchvision's: ``conv_proj`` truncated normal with
    ``std = sqrt(1 / fan_in)`` and zero bias, class token zeros, position embedding
    ``N(0, 0.02^2)``, attention as ``torch.nn.MultiheadAttention``, MLP weights
    Xavier-uniform with ``N(0, 1e-6^2)`` biases, ``heads.head`` zeros (a fresh model
    outputs zeros: fine-tuning starts from there).

    Input:
        Images ``(N, 3, image_size, image_size)``.

    Returns:
        Logits ``(N, num_classes)`` and the new state.

    **Parameters**
        - ``class_token``: ``(1, 1, E)``.
        - ``conv_proj``: ``{"weight": (E, 3, patch_size, patch_size), "bias": (E,)}``.
        - ``encoder``: :class:`ViTEncoder`'s parameters, ``L = (image_size // patch_size)**2 + 1``.
        - ``heads``: ``{"head": {"weight": (num_classes, E'), "bias": (num_classes,)}}`` with
          ``E' = E``; with ``representation_size`` ``R`` also ``"pre_logits": {"weight":
          (R, E), "bias": (R,)}``, ``"act": {}`` and ``E' = R``.

    **States**
        ``encoder``: the dropout keys (see :class:`ViTEncoder`); ``conv_proj``, ``heads``:
        ``{}`` leaves.

    Example:
        >>> model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
        >>> ps, st = lux_torch.setup(0, model)  # doctest: +SKIP
        >>> logits, st = model(torch.randn(4, 3, 32, 32), ps, st)  # doctest: +SKIP
    """

    image_size: int
    patch_size: int
    hidden_dim: int
    num_classes: int
    conv_proj: Conv2d
    encoder: ViTEncoder
    heads: Chain

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        num_classes: int = 1000,
        representation_size: int | None = None,
    ) -> None:
        owner = "VisionTransformer"
        check_int(owner, "image_size", image_size, 1)
        check_int(owner, "patch_size", patch_size, 1)
        check_int(owner, "num_classes", num_classes, 1)
        if image_size % patch_size:
            raise ValueError(
                f"{owner}: image_size ({image_size}) must be a multiple of patch_size "
                f"({patch_size})"
            )
        heads: dict[str, Layer] = {}
        width = hidden_dim
        if representation_size is not None:
            check_int(owner, "representation_size", representation_size, 1)
            heads["pre_logits"] = Linear(
                hidden_dim,
                representation_size,
                weight_init=lecun_truncated_normal,
                bias_init=init.zeros,
            )
            heads["act"] = Tanh()
            width = representation_size
        heads["head"] = Linear(width, num_classes, weight_init=init.zeros, bias_init=init.zeros)
        seq_length = (image_size // patch_size) ** 2 + 1
        self._set_fields(
            image_size=image_size,
            patch_size=patch_size,
            hidden_dim=hidden_dim,
            num_classes=num_classes,
            conv_proj=Conv2d(
                3,
                hidden_dim,
                patch_size,
                stride=patch_size,
                weight_init=lecun_truncated_normal,
                bias_init=init.zeros,
            ),
            encoder=ViTEncoder(
                seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout
            ),
            heads=Chain(heads),
        )

    def init_params(self, key: torch.Tensor) -> Params:
        token = init.zeros(child_key(key, "class_token"), 1, 1, self.hidden_dim)
        return {"class_token": token, **super().init_params(key)}

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem is not None:
            raise ValueError(f"VisionTransformer: {problem}")
        n = x.shape[0]
        new_st = dict(st)
        h, new_st["conv_proj"] = self.conv_proj(x, ps["conv_proj"], st["conv_proj"])
        h = h.flatten(2).transpose(1, 2)  # (N, E, H/p, W/p) -> (N, patches, E)
        h = torch.cat([ps["class_token"].expand(n, -1, -1), h], dim=1)
        h, new_st["encoder"] = self.encoder(h, ps["encoder"], st["encoder"])
        y, new_st["heads"] = self.heads(h[:, 0], ps["heads"], st["heads"])
        return y, new_st

    def describe_input_error(self, x: Any) -> str | None:
        size = self.image_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1:] != (3, size, size):
            return f"expected images of shape (N, 3, {size}, {size}), got {describe_value(x)}"
        return None

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, patch_size={self.patch_size}, "
            f"num_classes={self.num_classes}"
        )


#: Lux/Boltz's name for :class:`VisionTransformer`.
ViT = VisionTransformer


class ViTOptions(TypedDict, total=False):
    """The keyword arguments of the ``vit_*`` constructors, as :class:`VisionTransformer`'s
    (defaults: ``image_size=224``, ``num_classes=1000``, ``dropout=0.0``,
    ``attention_dropout=0.0``, ``representation_size=None``)."""

    image_size: int
    num_classes: int
    dropout: float
    attention_dropout: float
    representation_size: int | None


def _vit(
    owner: str, size: tuple[int, int, int, int, int], options: ViTOptions
) -> VisionTransformer:
    """A :class:`VisionTransformer` of ``size = (patch_size, num_layers, num_heads,
    hidden_dim, mlp_dim)`` with ``options``; an unknown option is a ``TypeError``."""
    unknown = sorted(set(options) - set(ViTOptions.__annotations__))
    if unknown:
        raise TypeError(
            f"{owner}() got unexpected keyword arguments {unknown}; it takes "
            f"{sorted(ViTOptions.__annotations__)}"
        )
    return VisionTransformer(
        options.get("image_size", 224),
        *size,
        dropout=options.get("dropout", 0.0),
        attention_dropout=options.get("attention_dropout", 0.0),
        num_classes=options.get("num_classes", 1000),
        representation_size=options.get("representation_size"),
    )


def vit_b_16(**options: Unpack[ViTOptions]) -> VisionTransformer:
    """ViT-B/16 (torchvision's ``vit_b_16``): patch 16, 12 layers, 12 heads, width 768, MLP
    3072; 86,567,656 parameters for 1000 classes at 224x224. Keyword arguments:
    :class:`ViTOptions`."""
    return _vit("vit_b_16", (16, 12, 12, 768, 3072), options)


def vit_b_32(**options: Unpack[ViTOptions]) -> VisionTransformer:
    """ViT-B/32 (torchvision's ``vit_b_32``): patch 32, otherwise as :func:`vit_b_16`."""
    return _vit("vit_b_32", (32, 12, 12, 768, 3072), options)


def vit_l_16(**options: Unpack[ViTOptions]) -> VisionTransformer:
    """ViT-L/16 (torchvision's ``vit_l_16``): patch 16, 24 layers, 16 heads, width 1024,
    MLP 4096. Keyword arguments: :class:`ViTOptions`."""
    return _vit("vit_l_16", (16, 24, 16, 1024, 4096), options)


def vit_l_32(**options: Unpack[ViTOptions]) -> VisionTransformer:
    """ViT-L/32 (torchvision's ``vit_l_32``): patch 32, otherwise as :func:`vit_l_16`."""
    return _vit("vit_l_32", (32, 24, 16, 1024, 4096), options)


def vit_h_14(**options: Unpack[ViTOptions]) -> VisionTransformer:
    """ViT-H/14 (torchvision's ``vit_h_14``): patch 14, 32 layers, 16 heads, width 1280, MLP
    5120 (torchvision's pretrained weights are for ``image_size=518``). Keyword arguments:
    :class:`ViTOptions`."""
    return _vit("vit_h_14", (14, 32, 16, 1280, 5120), options)


def vit_tiny(*, patch_size: int = 16, **options: Unpack[ViTOptions]) -> VisionTransformer:
    """ViT-Tiny (DeiT-Ti's size): 12 layers, 3 heads, width 192, MLP 768, in torchvision's
    layout (not timm's: DeiT checkpoints need their names mapped); 5,717,416 parameters for
    1000 classes at 224x224 with 16x16 patches. Keyword arguments: ``patch_size`` and
    :class:`ViTOptions`."""
    return _vit("vit_tiny", (patch_size, 12, 3, 192, 768), options)


def vit_small(*, patch_size: int = 16, **options: Unpack[ViTOptions]) -> VisionTransformer:
    """ViT-Small (DeiT-S's size): 12 layers, 6 heads, width 384, MLP 1536, in torchvision's
    layout; 22,050,664 parameters for 1000 classes at 224x224 with 16x16 patches. Keyword
    arguments: ``patch_size`` and :class:`ViTOptions`."""
    return _vit("vit_small", (patch_size, 12, 6, 384, 1536), options)


def interpolate_embeddings(
    image_size: int,
    patch_size: int,
    model_state: Mapping[str, torch.Tensor],
    interpolation_mode: str = "bicubic",
    reset_heads: bool = False,
) -> dict[str, torch.Tensor]:
    """A ViT state dict whose position embedding is resized for ``image_size`` images
    (torchvision's ``interpolate_embeddings``): pretrained weights for another resolution,
    e.g. ``vit_b_16`` weights trained at 224 for a ``vit_b_16(image_size=384)``.

    The class token's embedding is kept; the patch embeddings, a square grid, are
    interpolated to ``image_size // patch_size`` per side (``F.interpolate`` with
    ``align_corners=True``, as torchvision). Unlike torchvision's, the given mapping is
    not modified: a new dict is returned (the other tensors are shared, not copied).

    Arguments:
        image_size: the new image side (square images).
        patch_size: the model's patch side.
        model_state: a state dict in torchvision's ViT layout (``"encoder.pos_embedding"``
            of shape ``(1, 1 + n * n, hidden_dim)``), e.g. ``torchvision`` model weights or
            ``lux.state_dict(model, ps, st)`` of a lux ViT.
        interpolation_mode: ``"bicubic"`` (torchvision's default), ``"bilinear"`` or
            ``"nearest"``... as ``F.interpolate``'s ``mode``.
        reset_heads: leave the classification head (keys starting with ``"heads"``) out,
            for a model with another number of classes; as in torchvision, only when the
            embedding is resized (at the same size the mapping's keys are all kept).

    Returns:
        The state dict for ``image_size``; load it with ``lux.load_state_dict``.

    Example:
        >>> sd = interpolate_embeddings(384, 16, lux.state_dict(vit_b_16(), ps, st))
        >>> ps, st = lux.load_state_dict(vit_b_16(image_size=384), sd)
    """
    name = "lux_torch.models.interpolate_embeddings"
    check_int(name, "image_size", image_size, minimum=1)
    check_int(name, "patch_size", patch_size, minimum=1)
    if "encoder.pos_embedding" not in model_state:
        raise KeyError(f"{name}: model_state has no 'encoder.pos_embedding' (torchvision's ViT)")
    pos = model_state["encoder.pos_embedding"]
    if pos.dim() != 3 or pos.shape[0] != 1:
        raise ValueError(
            f"{name}: expected 'encoder.pos_embedding' of shape (1, L, hidden_dim), got "
            f"{tuple(pos.shape)}"
        )
    _, length, hidden = pos.shape
    side, new_side = math.isqrt(length - 1), image_size // patch_size
    if side * side != length - 1:
        raise ValueError(
            f"{name}: the position embedding holds {length - 1} patch positions after the "
            "class token, not a square grid"
        )
    state = dict(model_state)
    if new_side != side:
        grid = pos[:, 1:].permute(0, 2, 1).reshape(1, hidden, side, side)
        grid = F.interpolate(grid, size=new_side, mode=interpolation_mode, align_corners=True)
        grid = grid.reshape(1, hidden, new_side * new_side).permute(0, 2, 1)
        state["encoder.pos_embedding"] = torch.cat([pos[:, :1], grid], dim=1)
        if reset_heads:
            state = {k: v for k, v in state.items() if not k.startswith("heads")}
    return state
