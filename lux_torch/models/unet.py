"""A UNet for diffusion models (DDPM, Ho et al. 2020; DDIM, Song et al. 2021), in the layout
and with the parameter names of diffusers' ``UNet2DModel``.

``eps = unet((x_t, t))``: the time step ``t`` becomes sinusoidal features and an MLP
embedding; ``conv_in`` lifts the image to ``channels[0]``; each level of ``down_blocks`` runs
ResNet blocks (GroupNorm, SiLU, 3x3 convolutions, the time embedding added in between),
optionally each followed by self-attention, and halves the resolution (a stride-2
convolution) except at the last level; the ``mid_block`` is ResNet, attention, ResNet; the
``up_blocks`` mirror the down path, concatenating the saved activations (skip connections)
before every ResNet block and doubling the resolution (nearest neighbour, then a 3x3
convolution); ``conv_norm_out`` (GroupNorm, SiLU) and ``conv_out`` map back to the image's
channels.

The blocks are small lux layers: :class:`ResnetBlock2D`, :class:`AttentionBlock2D`,
:class:`DownBlock2D`, :class:`MidBlock2D`, :class:`UpBlock2D`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._graph import forward_ad_active
from ..core import Layer, Params, State, describe_value
from ..layers._common import check_bool, check_int
from ..layers.activation import SiLU
from ..layers.basic import Linear
from ..layers.containers import Chain
from ..layers.conv import Conv2d
from ..layers.normalization import GroupNorm
from ..layers.timestep import SinusoidalTimeEmbedding
from ..layers.transformer import LayerList
from ..layers.upsample import Upsample

__all__ = [
    "AttentionBlock2D",
    "DownBlock2D",
    "MidBlock2D",
    "ResnetBlock2D",
    "UNet",
    "UpBlock2D",
    "unet_ddpm_cifar10",
]


def _numbered(*layers: Layer) -> LayerList:
    """``nn.ModuleList`` names: ``{"0": layers[0], "1": layers[1], ...}``."""
    return LayerList({str(i): layer for i, layer in enumerate(layers)})


def _check_groups(owner: str, channels: int, groups: int) -> None:
    if channels % groups:
        raise ValueError(
            f"{owner}: the channels ({channels}) must be divisible by norm_groups ({groups})"
        )


# --------------------------------------------------------------------------- blocks


class ResnetBlock2D(Layer):
    """A ResNet block conditioned on a time embedding (diffusers' ``ResnetBlock2D``)::

        h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]
        y = conv_shortcut(x) + conv2(silu(norm2(h)))   # conv_shortcut: only if C_in != C_out

    Arguments:
        in_channels, out_channels: ``C_in``, ``C_out``.
        temb_channels: the time embedding's features ``T``.
        groups: the GroupNorms' groups (must divide ``C_in`` and ``C_out``).
        eps: the GroupNorms' ``eps``.

    Input:
        ``(x, temb)``: ``x`` of shape ``(N, C_in, H, W)``, ``temb`` of shape ``(N, T)``.

    Returns:
        ``(N, C_out, H, W)`` and the unchanged state.

    **Parameters**
        - ``norm1``: ``{"weight": (C_in,), "bias": (C_in,)}``
        - ``conv1``: ``{"weight": (C_out, C_in, 3, 3), "bias": (C_out,)}``
        - ``time_emb_proj``: ``{"weight": (C_out, T), "bias": (C_out,)}``
        - ``norm2``: ``{"weight": (C_out,), "bias": (C_out,)}``
        - ``conv2``: ``{"weight": (C_out, C_out, 3, 3), "bias": (C_out,)}``
        - ``conv_shortcut`` (only if ``C_in != C_out``): ``{"weight": (C_out, C_in, 1, 1),
          "bias": (C_out,)}``

    **States**
        ``{}`` for every child.
    """

    norm1: GroupNorm
    conv1: Conv2d
    time_emb_proj: Linear
    norm2: GroupNorm
    conv2: Conv2d
    conv_shortcut: Conv2d | None

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float
    ) -> None:
        for channels in (in_channels, out_channels):
            _check_groups("ResnetBlock2D", channels, groups)
        self._set_fields(
            norm1=GroupNorm(groups, in_channels, eps, activation=F.silu),
            conv1=Conv2d(in_channels, out_channels, 3, padding=1),
            time_emb_proj=Linear(temb_channels, out_channels),
            norm2=GroupNorm(groups, out_channels, eps, activation=F.silu),
            conv2=Conv2d(out_channels, out_channels, 3, padding=1),
            conv_shortcut=(
                Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
            ),
        )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        x, temb = x
        h, _ = self.norm1(x, ps["norm1"], st["norm1"])
        h, _ = self.conv1(h, ps["conv1"], st["conv1"])
        t, _ = self.time_emb_proj(F.silu(temb), ps["time_emb_proj"], st["time_emb_proj"])
        h = h + t[:, :, None, None]
        h, _ = self.norm2(h, ps["norm2"], st["norm2"])
        h, _ = self.conv2(h, ps["conv2"], st["conv2"])
        if self.conv_shortcut is not None:
            x, _ = self.conv_shortcut(x, ps["conv_shortcut"], st["conv_shortcut"])
        return x + h, st


class AttentionBlock2D(Layer):
    """Multi-head self-attention over the pixels of a feature map, with a residual
    (diffusers' ``Attention`` as ``UNet2DModel`` uses it)::

        h = group_norm(x) as (N, H*W, C);  q, k, v = to_q(h), to_k(h), to_v(h)
        y = x + to_out.0(softmax(q k^T / sqrt(d)) v) as (N, C, H, W)   # per head

    The attention is :func:`torch.nn.functional.scaled_dot_product_attention` (an explicit
    softmax under forward-mode AD, which CPU sdpa does not support).

    Arguments:
        channels: ``C``.
        head_dim: ``d``, the features per head (must divide ``C``; ``C // d`` heads).
        groups, eps: the GroupNorm's.

    Input:
        ``x`` of shape ``(N, C, H, W)``.

    Returns:
        ``(N, C, H, W)`` and the unchanged state.

    **Parameters**
        - ``group_norm``: ``{"weight": (C,), "bias": (C,)}``
        - ``to_q``, ``to_k``, ``to_v``, ``to_out.0``: ``{"weight": (C, C), "bias": (C,)}``

    **States**
        ``{}`` for every child.
    """

    heads: int
    group_norm: GroupNorm
    to_q: Linear
    to_k: Linear
    to_v: Linear
    to_out: LayerList

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float) -> None:
        check_int("AttentionBlock2D", "head_dim", head_dim, 1)
        if channels % head_dim:
            raise ValueError(
                f"AttentionBlock2D: the channels ({channels}) must be divisible by "
                f"attention_head_dim ({head_dim})"
            )
        self._set_fields(
            heads=channels // head_dim,
            group_norm=GroupNorm(groups, channels, eps),
            to_q=Linear(channels, channels),
            to_k=Linear(channels, channels),
            to_v=Linear(channels, channels),
            to_out=_numbered(Linear(channels, channels)),
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        n, c, height, width = x.shape
        h, _ = self.group_norm(x, ps["group_norm"], st["group_norm"])
        h = h.reshape(n, c, height * width).transpose(1, 2)  # (N, L, C)

        def heads(name: str) -> torch.Tensor:  # (N, heads, L, d)
            projection: Linear = getattr(self, name)
            y, _ = projection(h, ps[name], st[name])
            return y.reshape(n, -1, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = heads("to_q"), heads("to_k"), heads("to_v")
        if forward_ad_active():  # CPU sdpa has no forward-mode rule: the same maths explicitly
            scores = (q * (c // self.heads) ** -0.5) @ k.transpose(-1, -2)
            out = torch.softmax(scores, dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(n, height * width, c)
        out, _ = self.to_out.layers["0"](out, ps["to_out"]["0"], st["to_out"]["0"])
        return x + out.transpose(1, 2).reshape(n, c, height, width), st


def _attention(channels: int, head_dim: int | None, groups: int, eps: float) -> Layer:
    """An :class:`AttentionBlock2D`; ``head_dim=None``: a single head."""
    return AttentionBlock2D(channels, channels if head_dim is None else head_dim, groups, eps)


class DownBlock2D(Layer):
    """One level of the down path: ``num_layers`` ResNet blocks (each followed by attention
    when ``attention``), then a stride-2 3x3 convolution unless ``add_downsample`` is false.

    Input:
        ``(h, temb)``.

    Returns:
        ``(h_out, skips)`` (``skips``: the output of every ResNet/attention pair and of the
        downsampler, in order) and the unchanged state.

    **Parameters**
        ``resnets.i`` (:class:`ResnetBlock2D`), ``attentions.i``
        (:class:`AttentionBlock2D`; with ``attention``), ``downsamplers.0.conv``
        (``{"weight": (C_out, C_out, 3, 3), "bias": (C_out,)}``; with ``add_downsample``).

    **States**
        ``{}`` for every child.
    """

    resnets: LayerList
    attentions: LayerList | None
    downsamplers: LayerList | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        attention: bool,
        add_downsample: bool,
        groups: int,
        eps: float,
        head_dim: int | None,
    ) -> None:
        ins = [in_channels] + [out_channels] * (num_layers - 1)
        self._set_fields(
            resnets=_numbered(
                *(ResnetBlock2D(c, out_channels, temb_channels, groups, eps) for c in ins)
            ),
            attentions=(
                _numbered(*(_attention(out_channels, head_dim, groups, eps) for _ in ins))
                if attention
                else None
            ),
            downsamplers=(
                _numbered(Chain(conv=Conv2d(out_channels, out_channels, 3, 2, 1)))
                if add_downsample
                else None
            ),
        )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        h, temb = x
        skips = []
        for name, resnet in self.resnets.layers.items():
            h, _ = resnet((h, temb), ps["resnets"][name], st["resnets"][name])
            if self.attentions is not None:
                attention = self.attentions.layers[name]
                h, _ = attention(h, ps["attentions"][name], st["attentions"][name])
            skips.append(h)
        if self.downsamplers is not None:
            down = self.downsamplers.layers["0"]
            h, _ = down(h, ps["downsamplers"]["0"], st["downsamplers"]["0"])
            skips.append(h)
        return (h, tuple(skips)), st


class MidBlock2D(Layer):
    """The bottom of the UNet: ResNet block, attention (unless ``attention`` is false),
    ResNet block, at ``C`` channels.

    Input:
        ``(h, temb)``. Returns: ``h`` of the same shape and the unchanged state.

    **Parameters**
        ``resnets.0``, ``resnets.1`` (:class:`ResnetBlock2D`), ``attentions.0``
        (:class:`AttentionBlock2D`; with ``attention``).

    **States**
        ``{}`` for every child.
    """

    resnets: LayerList
    attentions: LayerList | None

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        attention: bool,
        groups: int,
        eps: float,
        head_dim: int | None,
    ) -> None:
        block = ResnetBlock2D(channels, channels, temb_channels, groups, eps)
        attend = _attention(channels, head_dim, groups, eps)
        self._set_fields(
            resnets=_numbered(block, block),
            attentions=_numbered(attend) if attention else None,
        )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        h, temb = x
        first, second = self.resnets.layers["0"], self.resnets.layers["1"]
        h, _ = first((h, temb), ps["resnets"]["0"], st["resnets"]["0"])
        if self.attentions is not None:
            attention = self.attentions.layers["0"]
            h, _ = attention(h, ps["attentions"]["0"], st["attentions"]["0"])
        h, _ = second((h, temb), ps["resnets"]["1"], st["resnets"]["1"])
        return h, st


class UpBlock2D(Layer):
    """One level of the up path: ``num_layers`` ResNet blocks, each on the concatenation of
    ``h`` and the last unused skip (each followed by attention when ``attention``), then
    nearest-neighbour upsampling by 2 and a 3x3 convolution unless ``add_upsample`` is false.

    Input:
        ``(h, skips, temb)``; the last ``num_layers`` skips are used, the last one first.

    Returns:
        ``h`` and the unchanged state.

    **Parameters**
        ``resnets.i`` (:class:`ResnetBlock2D`), ``attentions.i``
        (:class:`AttentionBlock2D`; with ``attention``), ``upsamplers.0.conv``
        (``{"weight": (C_out, C_out, 3, 3), "bias": (C_out,)}``; with ``add_upsample``).

    **States**
        ``{}`` for every child.
    """

    resnets: LayerList
    attentions: LayerList | None
    upsamplers: LayerList | None

    def __init__(
        self,
        in_channels: int,
        prev_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        attention: bool,
        add_upsample: bool,
        groups: int,
        eps: float,
        head_dim: int | None,
    ) -> None:
        # resnet i sees h (prev_channels first, then out_channels) and a skip (out_channels,
        # but in_channels for the last: the skip saved before the down level's first block)
        hs = [prev_channels] + [out_channels] * (num_layers - 1)
        skips = [out_channels] * (num_layers - 1) + [in_channels]
        up = Chain(
            upsample=Upsample(scale_factor=2.0),
            conv=Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self._set_fields(
            resnets=_numbered(
                *(
                    ResnetBlock2D(h + s, out_channels, temb_channels, groups, eps)
                    for h, s in zip(hs, skips, strict=True)
                )
            ),
            attentions=(
                _numbered(*(_attention(out_channels, head_dim, groups, eps) for _ in hs))
                if attention
                else None
            ),
            upsamplers=_numbered(up) if add_upsample else None,
        )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        h, skips, temb = x
        for i, (name, resnet) in enumerate(self.resnets.layers.items(), 1):
            h = torch.cat([h, skips[-i]], dim=1)
            h, _ = resnet((h, temb), ps["resnets"][name], st["resnets"][name])
            if self.attentions is not None:
                attention = self.attentions.layers[name]
                h, _ = attention(h, ps["attentions"][name], st["attentions"][name])
        if self.upsamplers is not None:
            up = self.upsamplers.layers["0"]
            h, _ = up(h, ps["upsamplers"]["0"], st["upsamplers"]["0"])
        return h, st


# --------------------------------------------------------------------------- the UNet


class UNet(Layer):
    """A diffusion UNet ``eps = unet((x, t))`` in the layout of diffusers' ``UNet2DModel``.

    Arguments:
        in_channels: the image's channels ``C`` (3).
        out_channels: the output's channels (default ``in_channels``).
        channels: the feature channels per level (diffusers' ``block_out_channels``); the
            resolution halves between levels, ``len(channels) - 1`` times.
        layers_per_block: ResNet blocks per down level (the up levels have one more).
        attention: per level, whether its ResNet blocks are followed by self-attention
            (``AttnDownBlock2D``/``AttnUpBlock2D``); default: every level but the first.
        mid_attention: self-attention in the middle block.
        attention_head_dim: features per attention head (``None``: one head).
        norm_groups: the GroupNorms' groups (must divide every level's channels).
        norm_eps: the GroupNorms' ``eps``.
        flip_sin_to_cos, freq_shift: the time features' options
            (:class:`~lux_torch.layers.timestep.SinusoidalTimeEmbedding`).

    Input:
        ``(x, t)``: noisy images ``x`` of shape ``(N, C, H, W)`` with ``H`` and ``W``
        divisible by ``2 ** (len(channels) - 1)``, and time steps ``t`` of shape ``(N,)``
        (integer or floating) or a scalar (used for every sample).

    Returns:
        ``(N, out_channels, H, W)`` (the predicted noise, or whatever it was trained for)
        and the unchanged state.

    Raises:
        ValueError: for an input that is not ``(x, t)`` as above, naming what came.

    **Parameters** (``C0 = channels[0]``, ``T = 4 * C0``; the names of ``UNet2DModel``)
        - ``conv_in``: ``{"weight": (C0, C, 3, 3), "bias": (C0,)}``
        - ``time_embedding.linear_1``: ``{"weight": (T, C0), "bias": (T,)}``
        - ``time_embedding.linear_2``: ``{"weight": (T, T), "bias": (T,)}``
        - ``down_blocks.i`` (:class:`DownBlock2D`), ``mid_block`` (:class:`MidBlock2D`),
          ``up_blocks.i`` (:class:`UpBlock2D`)
        - ``conv_norm_out``: ``{"weight": (C0,), "bias": (C0,)}``
        - ``conv_out``: ``{"weight": (out_channels, C0, 3, 3), "bias": (out_channels,)}``

    **States**
        ``{}`` for every child (no running statistics, no randomness).

    Example:
        >>> unet = UNet(channels=(32, 64), layers_per_block=1, norm_groups=8)
        >>> ps, st = lux_torch.setup(0, unet)  # doctest: +SKIP
        >>> x, t = torch.randn(4, 3, 16, 16), torch.tensor([1, 50, 500, 999])
        >>> eps, st = unet((x, t), ps, st)  # doctest: +SKIP
    """

    in_channels: int
    out_channels: int
    channels: tuple[int, ...]
    layers_per_block: int
    attention: tuple[bool, ...]
    mid_attention: bool
    conv_in: Conv2d
    time_proj: SinusoidalTimeEmbedding
    time_embedding: Chain
    down_blocks: LayerList
    mid_block: MidBlock2D
    up_blocks: LayerList
    conv_norm_out: GroupNorm
    conv_out: Conv2d

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        channels: tuple[int, ...] | list[int] = (64, 128, 256, 256),
        layers_per_block: int = 2,
        attention: tuple[bool, ...] | list[bool] | None = None,
        mid_attention: bool = True,
        attention_head_dim: int | None = 8,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0.0,
    ) -> None:
        owner = "UNet"
        check_int(owner, "in_channels", in_channels, 1)
        out_channels = in_channels if out_channels is None else out_channels
        check_int(owner, "out_channels", out_channels, 1)
        channels = tuple(channels)
        if not channels:
            raise ValueError(f"{owner}: channels must name at least one level, got ()")
        for c in channels:
            check_int(owner, "channels[i]", c, 1)
        check_int(owner, "layers_per_block", layers_per_block, 1)
        check_int(owner, "norm_groups", norm_groups, 1)
        levels = len(channels)
        attention = tuple(i > 0 for i in range(levels)) if attention is None else tuple(attention)
        if len(attention) != levels:
            raise ValueError(
                f"{owner}: attention needs one flag per level ({levels}), got {len(attention)}"
            )
        for flag in attention:
            check_bool(owner, "attention[i]", flag)
        check_bool(owner, "mid_attention", mid_attention)
        temb = 4 * channels[0]
        norm = (norm_groups, norm_eps, attention_head_dim)
        down, prev = [], channels[0]
        for i, c in enumerate(channels):
            last = i == levels - 1
            down.append(DownBlock2D(prev, c, temb, layers_per_block, attention[i], not last, *norm))
            prev = c
        up, rev, prev = [], channels[::-1], channels[-1]
        for i, c in enumerate(rev):
            skip_in = rev[min(i + 1, levels - 1)]
            last = i == levels - 1
            att = attention[levels - 1 - i]
            up.append(UpBlock2D(skip_in, prev, c, temb, layers_per_block + 1, att, not last, *norm))
            prev = c
        self._set_fields(
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            layers_per_block=layers_per_block,
            attention=attention,
            mid_attention=mid_attention,
            conv_in=Conv2d(in_channels, channels[0], 3, padding=1),
            time_proj=SinusoidalTimeEmbedding(
                channels[0], flip_sin_to_cos=flip_sin_to_cos, downscale_freq_shift=freq_shift
            ),
            time_embedding=Chain(
                linear_1=Linear(channels[0], temb), act=SiLU(), linear_2=Linear(temb, temb)
            ),
            down_blocks=_numbered(*down),
            mid_block=MidBlock2D(channels[-1], temb, mid_attention, *norm),
            up_blocks=_numbered(*up),
            conv_norm_out=GroupNorm(norm_groups, channels[0], norm_eps, activation=F.silu),
            conv_out=Conv2d(channels[0], out_channels, 3, padding=1),
        )

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem is not None:
            raise ValueError(f"UNet: {problem}")
        sample, t = x
        t = t.expand(sample.shape[0]) if t.dim() == 0 else t
        t_emb, _ = self.time_proj(t.to(sample.dtype), ps["time_proj"], st["time_proj"])
        temb, _ = self.time_embedding(t_emb, ps["time_embedding"], st["time_embedding"])
        h, _ = self.conv_in(sample, ps["conv_in"], st["conv_in"])
        skips: tuple[torch.Tensor, ...] = (h,)
        for name, block in self.down_blocks.layers.items():
            (h, saved), _ = block((h, temb), ps["down_blocks"][name], st["down_blocks"][name])
            skips += saved
        h, _ = self.mid_block((h, temb), ps["mid_block"], st["mid_block"])
        for name, block in self.up_blocks.layers.items():
            used = len(block.resnets.layers)  # type: ignore[attr-defined]  # an UpBlock2D
            h, _ = block((h, skips, temb), ps["up_blocks"][name], st["up_blocks"][name])
            skips = skips[:-used]
        h, _ = self.conv_norm_out(h, ps["conv_norm_out"], st["conv_norm_out"])
        out, _ = self.conv_out(h, ps["conv_out"], st["conv_out"])
        return out, st

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            return f"expected the tuple (x, t), got {describe_value(x)}"
        sample, t = x
        if not isinstance(sample, torch.Tensor) or sample.dim() != 4:
            return f"expected images x of shape (N, C, H, W), got {describe_value(sample)}"
        n, c, height, width = sample.shape
        if c != self.in_channels:
            return f"expected x with {self.in_channels} channels, got shape {tuple(sample.shape)}"
        factor = 2 ** (len(self.channels) - 1)
        if height % factor or width % factor:
            return (
                f"the image size ({height} x {width}) must be divisible by {factor} "
                f"(2 ** {len(self.channels) - 1}: the resolution halves "
                f"{len(self.channels) - 1} times)"
            )
        if not isinstance(t, torch.Tensor) or t.shape not in ((), (n,)) or t.dtype == torch.bool:
            return f"expected time steps t of shape ({n},) or (), got {describe_value(t)}"
        return None

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels} => {self.out_channels}", f"channels={self.channels}"]
        parts.append(f"layers_per_block={self.layers_per_block}")
        return ", ".join(parts)


def unet_ddpm_cifar10() -> UNet:
    """The CIFAR-10 model of DDPM (Ho et al. 2020; diffusers' ``google/ddpm-cifar10-32``
    configuration): channels (128, 256, 256, 256), 2 ResNet blocks per level, attention at
    the 16x16 level (the second) and in the middle, one head, GroupNorm eps 1e-6, time
    features ``[sin, cos]`` with ``freq_shift=1``. DDPM's dropout (0.1) is not part of this
    model (it has none).

    Returns:
        The :class:`UNet` for ``(N, 3, 32, 32)`` images.
    """
    return UNet(
        channels=(128, 256, 256, 256),
        layers_per_block=2,
        attention=(False, True, False, False),
        attention_head_dim=None,
        norm_eps=1e-6,
        flip_sin_to_cos=False,
        freq_shift=1.0,
    )
