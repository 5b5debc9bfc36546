"""models.UNet and layers.SinusoidalTimeEmbedding against a torch.nn reference written here in
the layout of diffusers' UNet2DModel (diffusers is not a dependency). The reference follows
diffusers' source (models/embeddings.py get_timestep_embedding, TimestepEmbedding;
models/resnet.py ResnetBlock2D, Downsample2D, Upsample2D; models/attention_processor.py
Attention with AttnProcessor2_0; models/unets/unet_2d_blocks.py DownBlock2D,
AttnDownBlock2D, UNetMidBlock2D, UpBlock2D, AttnUpBlock2D; models/unets/unet_2d.py
UNet2DModel; checked against diffusers commit 58eb52c080), with the options UNet2DModel
uses and one change: the time features are computed in the images' dtype (diffusers
computes them in float32, then casts).

Tolerances: float64 at the harness's defaults / 1e-10 relative; float32 at 1e-4 relative
and 1e-5 absolute (measured on CPU: outputs 6e-7 and gradients 2e-6 of each tensor's largest
entry; in float64 4e-15). The gradients of the key projections' biases are 0 mathematically
(softmax ignores a constant added to every score), so both sides are round-off there, which
the absolute part covers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_parity import assert_matches_reference, random_weights

import lux_torch as lux
from lux_torch import random as lrandom
from lux_torch.layers.timestep import SinusoidalTimeEmbedding
from lux_torch.models import UNet, unet_ddpm_cifar10
from lux_torch.testing import check_layer

# --------------------------------------------------------------------------- the reference


def get_timestep_embedding(
    timesteps: torch.Tensor,
    embedding_dim: int,
    flip_sin_to_cos: bool = False,
    downscale_freq_shift: float = 1,
    scale: float = 1,
    max_period: int = 10000,
) -> torch.Tensor:
    dtype = timesteps.dtype if timesteps.is_floating_point() else torch.get_default_dtype()
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=dtype)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].to(dtype) * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


class Timesteps(nn.Module):
    def __init__(self, num_channels: int, flip_sin_to_cos: bool, shift: float, scale: float = 1):
        super().__init__()
        self.num_channels, self.flip, self.shift, self.scale = (
            num_channels,
            flip_sin_to_cos,
            shift,
            scale,
        )

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return get_timestep_embedding(
            timesteps, self.num_channels, self.flip, self.shift, self.scale
        )


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))  # type: ignore[no-any-return]


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0)

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        temb = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        hidden_states = hidden_states + temb
        hidden_states = self.conv2(self.nonlinearity(self.norm2(hidden_states)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return input_tensor + hidden_states  # type: ignore[no-any-return]


class Attention(nn.Module):
    def __init__(self, query_dim: int, heads: int, dim_head: int, eps: float, groups: int):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.group_norm = nn.GroupNorm(
            num_channels=query_dim, num_groups=groups, eps=eps, affine=True
        )
        self.to_q = nn.Linear(query_dim, inner_dim, bias=True)
        self.to_k = nn.Linear(query_dim, inner_dim, bias=True)
        self.to_v = nn.Linear(query_dim, inner_dim, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim, bias=True), nn.Dropout(0.0)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # AttnProcessor2_0
        residual = hidden_states
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        hidden_states = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = self.to_q(hidden_states)
        key = self.to_k(hidden_states)
        value = self.to_v(hidden_states)
        head_dim = key.shape[-1] // self.heads
        query = query.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, self.heads * head_dim)
        hidden_states = self.to_out[1](self.to_out[0](hidden_states))
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        return hidden_states + residual


def _attention(channels: int, head_dim: int | None, groups: int, eps: float) -> Attention:
    head_dim = channels if head_dim is None else head_dim
    return Attention(channels, channels // head_dim, head_dim, eps, groups)


class Downsample2D(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(hidden_states)  # type: ignore[no-any-return]


class Upsample2D(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
        return self.conv(hidden_states)  # type: ignore[no-any-return]


class DownBlock(nn.Module):  # DownBlock2D, and AttnDownBlock2D with attention
    def __init__(self, cin, cout, temb, num_layers, attention, add_downsample, groups, eps, hd):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups, eps)
                for i in range(num_layers)
            ]
        )
        if attention:
            self.attentions = nn.ModuleList(
                [_attention(cout, hd, groups, eps) for _ in range(num_layers)]
            )
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_downsample else None

    def forward(self, hidden_states, temb):
        output_states: tuple[torch.Tensor, ...] = ()
        for i, resnet in enumerate(self.resnets):
            hidden_states = resnet(hidden_states, temb)
            if hasattr(self, "attentions"):
                hidden_states = self.attentions[i](hidden_states)
            output_states = (*output_states, hidden_states)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            output_states = (*output_states, hidden_states)
        return hidden_states, output_states


class UNetMidBlock2D(nn.Module):
    def __init__(self, channels, temb, attention, groups, eps, hd):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(channels, channels, temb, groups, eps) for _ in range(2)]
        )
        self.attentions = nn.ModuleList(
            [_attention(channels, hd, groups, eps) if attention else None]  # type: ignore[list-item]
        )

    def forward(self, hidden_states, temb):
        hidden_states = self.resnets[0](hidden_states, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:], strict=True):
            if attn is not None:
                hidden_states = attn(hidden_states)
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


class UpBlock(nn.Module):  # UpBlock2D, and AttnUpBlock2D with attention
    def __init__(self, cin, prev, cout, temb, num_layers, attention, add_upsample, groups, eps, hd):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            res_skip_channels = cin if (i == num_layers - 1) else cout
            resnet_in_channels = prev if i == 0 else cout
            resnets.append(
                ResnetBlock2D(resnet_in_channels + res_skip_channels, cout, temb, groups, eps)
            )
        self.resnets = nn.ModuleList(resnets)
        if attention:
            self.attentions = nn.ModuleList(
                [_attention(cout, hd, groups, eps) for _ in range(num_layers)]
            )
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, hidden_states, res_hidden_states_tuple, temb):
        for i, resnet in enumerate(self.resnets):
            res_hidden_states = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states = torch.cat([hidden_states, res_hidden_states], dim=1)
            hidden_states = resnet(hidden_states, temb)
            if hasattr(self, "attentions"):
                hidden_states = self.attentions[i](hidden_states)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states)
        return hidden_states


class UNet2DModel(nn.Module):
    def __init__(
        self,
        in_channels=3,
        out_channels=3,
        block_out_channels=(64, 128, 256, 256),
        layers_per_block=2,
        attention=(False, True, True, True),
        add_attention=True,
        attention_head_dim=8,
        norm_num_groups=32,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
    ):
        super().__init__()
        ch = block_out_channels
        time_embed_dim = ch[0] * 4
        g, eps, hd = norm_num_groups, norm_eps, attention_head_dim
        self.conv_in = nn.Conv2d(in_channels, ch[0], kernel_size=3, padding=(1, 1))
        self.time_proj = Timesteps(ch[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], time_embed_dim)
        self.down_blocks = nn.ModuleList([])
        output_channel = ch[0]
        for i in range(len(ch)):
            input_channel, output_channel = output_channel, ch[i]
            is_final_block = i == len(ch) - 1
            self.down_blocks.append(
                DownBlock(input_channel, output_channel, time_embed_dim, layers_per_block,
                          attention[i], not is_final_block, g, eps, hd)
            )  # fmt: skip
        self.mid_block = UNetMidBlock2D(ch[-1], time_embed_dim, add_attention, g, eps, hd)
        self.up_blocks = nn.ModuleList([])
        reversed_block_out_channels = list(reversed(ch))
        reversed_attention = list(reversed(attention))
        output_channel = reversed_block_out_channels[0]
        for i in range(len(ch)):
            prev_output_channel = output_channel
            output_channel = reversed_block_out_channels[i]
            input_channel = reversed_block_out_channels[min(i + 1, len(ch) - 1)]
            is_final_block = i == len(ch) - 1
            self.up_blocks.append(
                UpBlock(input_channel, prev_output_channel, output_channel, time_embed_dim,
                        layers_per_block + 1, reversed_attention[i], not is_final_block, g, eps, hd)
            )  # fmt: skip
        self.conv_norm_out = nn.GroupNorm(num_channels=ch[0], num_groups=g, eps=eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        timesteps = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype)
        t_emb = self.time_proj(timesteps.to(sample.dtype))
        emb = self.time_embedding(t_emb)
        sample = self.conv_in(sample)
        down_block_res_samples: tuple[torch.Tensor, ...] = (sample,)
        for downsample_block in self.down_blocks:
            sample, res_samples = downsample_block(sample, emb)
            down_block_res_samples += res_samples
        sample = self.mid_block(sample, emb)
        for upsample_block in self.up_blocks:
            used = len(cast(nn.ModuleList, upsample_block.resnets))
            res_samples = down_block_res_samples[-used:]
            down_block_res_samples = down_block_res_samples[:-used]
            sample = upsample_block(sample, res_samples, emb)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- tests


def _small() -> UNet:
    return UNet(
        channels=(8, 16),
        layers_per_block=1,
        attention=(False, True),
        attention_head_dim=4,
        norm_groups=4,
    )


def _small_reference(**kw):
    return lambda: UNet2DModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention=(False, True),
        attention_head_dim=4,
        norm_num_groups=4,
        **kw,
    )


def _images(
    n: int, size: int, dtype: torch.dtype = torch.float64, channels: int = 3
) -> torch.Tensor:
    return lrandom.normal(lrandom.key(5), (n, channels, size, size), dtype=dtype)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"flip_sin_to_cos": False, "downscale_freq_shift": 1.0},
        {"scale": 2.5, "max_period": 100.0},
    ],
    ids=["unet2d", "ddpm", "scaled"],
)
@pytest.mark.parametrize("dim", [8, 7], ids=["even", "odd"])
def test_time_embedding_conforms(dim: int, options: dict) -> None:
    layer = SinusoidalTimeEmbedding(dim, **options)
    ref: nn.Module | Callable[..., torch.Tensor] = Timesteps(
        dim,
        options.get("flip_sin_to_cos", True),
        options.get("downscale_freq_shift", 0.0),
        options.get("scale", 1.0),
    )
    if "max_period" in options:  # not an argument of diffusers' Timesteps
        ref = lambda tensors, t: get_timestep_embedding(t, dim, True, 0.0, 2.5, 100)  # noqa: E731
    t = torch.tensor([0.0, 1.0, 17.5, 999.0], dtype=torch.float64)
    report = check_layer(layer, t, reference=ref, compile=False)
    for name in ("parity", "gradcheck", "jvp", "vmap_inputs", "purity", "repr"):
        assert report[name] == "passed", (name, report)


def test_time_embedding_of_integer_steps_is_in_the_default_dtype() -> None:
    layer = SinusoidalTimeEmbedding(6)
    y, _ = layer(torch.tensor([0, 3, 999]), {}, {})
    assert y.dtype == torch.get_default_dtype()
    expected = get_timestep_embedding(torch.tensor([0.0, 3.0, 999.0]), 6, True, 0)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    # t = 0: cos(0) = 1 first, sin(0) = 0 second
    assert y[0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 1}, ValueError, "dim must be >= 2, got 1"),
        ({"max_period": 0}, ValueError, "max_period must be a positive number, got 0"),
        ({"scale": -1.0}, ValueError, "scale must be a positive number, got -1.0"),
        ({"downscale_freq_shift": 4}, ValueError, r"downscale_freq_shift must be < dim // 2 = 4"),
        ({"downscale_freq_shift": "1"}, TypeError, "downscale_freq_shift must be a number"),
        ({"flip_sin_to_cos": 1}, TypeError, "flip_sin_to_cos must be a bool, got int"),
    ],
)
def test_time_embedding_configuration_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match="SinusoidalTimeEmbedding: " + match):
        SinusoidalTimeEmbedding(**({"dim": 8} | kwargs))


@pytest.mark.parametrize("t", [torch.ones(2, 1), torch.ones(2, dtype=torch.bool)])
def test_time_embedding_refuses_other_inputs(t: torch.Tensor) -> None:
    with pytest.raises(
        ValueError,
        match=r"expected time steps of shape \(N,\), got a torch.\w+ tensor of shape \(2",
    ):
        SinusoidalTimeEmbedding(4)(t, {}, {})


def _tiny_conformance(gradcheck: bool, jvp: bool = True, vmap: bool = True) -> dict[str, str]:
    model = UNet(
        channels=(4, 8),
        layers_per_block=1,
        attention=(False, True),
        attention_head_dim=4,
        norm_groups=2,
    )
    ps, st = random_weights(model, torch.float64)
    with torch.device("meta"):
        ref = UNet2DModel(block_out_channels=(4, 8), layers_per_block=1, attention=(False, True),
                          attention_head_dim=4, norm_num_groups=2)  # fmt: skip
    x = (_images(2, 4), torch.tensor([3.0, 250.5], dtype=torch.float64))
    return check_layer(
        model,
        x,
        ps=ps,
        st=st,
        reference=ref,
        compile=False,
        gradcheck=gradcheck,
        jvp=jvp,
        vmap=vmap,
    )


def test_unet_conforms() -> None:
    # the gradients are compared with the reference's autograd here; finite differences
    # (gradcheck, ~1 min on 2 cores) run in the slow test below
    report = _tiny_conformance(gradcheck=False)
    for name in ("parity", "jvp", "vmap", "vmap_inputs", "purity", "determinism", "shapes"):
        assert report[name] == "passed", (name, report)
    assert report["counts"] == "passed" and report["structure"] == "passed"


@pytest.mark.slow
def test_unet_passes_gradcheck() -> None:
    report = _tiny_conformance(gradcheck=True, jvp=False, vmap=False)
    assert report["gradcheck"] == "passed"


@pytest.mark.parametrize(
    ("dtype", "tol"),
    [
        (torch.float64, {"rtol": 1e-10, "atol": 1e-12}),
        (torch.float32, {"rtol": 1e-4, "atol": 1e-5}),
    ],
    ids=["float64", "float32"],
)
def test_unet_loads_the_reference(dtype: torch.dtype, tol: dict[str, float]) -> None:
    model = _small()
    x = (_images(2, 8, dtype), torch.tensor([0, 999]))
    assert_matches_reference(model, _small_reference(), x, dtype, **tol)


def test_unet_three_levels_and_options() -> None:
    # three levels (two downsamplings), attention everywhere but the middle, one head,
    # 1 input and 2 output channels, DDPM's time features, a scalar time step
    model = UNet(
        1,
        2,
        channels=(4, 4, 8),
        layers_per_block=2,
        attention=(True, False, True),
        mid_attention=False,
        attention_head_dim=None,
        norm_groups=2,
        norm_eps=1e-6,
        flip_sin_to_cos=False,
        freq_shift=1.0,
    )
    build = lambda: UNet2DModel(  # noqa: E731
        1, 2, (4, 4, 8), 2, (True, False, True), False, None, 2, 1e-6, False, 1.0
    )
    x = (_images(2, 8, channels=1), torch.tensor(17.0, dtype=torch.float64))
    assert_matches_reference(model, build, x, torch.float64, rtol=1e-10, atol=1e-12)


def test_ddpm_cifar10_configuration_matches_the_reference() -> None:
    model = unet_ddpm_cifar10()
    with torch.device("meta"):
        ref = UNet2DModel(3, 3, (128, 256, 256, 256), 2, (False, True, False, False), True,
                          None, 32, 1e-6, False, 1)  # fmt: skip
    ps, st = lux.setup(0, model, device="meta")
    shapes = {k: tuple(v.shape) for k, v in lux.state_dict(ps, st).items()}
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert lux.param_count(model) == sum(p.numel() for p in ref.parameters()) == 35_746_307


def test_unet_display_shows_counts() -> None:
    model = _small()
    text = repr(model)
    assert text.startswith("UNet(\n    3 => 3, channels=(8, 16), layers_per_block=1,\n")
    assert "time_proj = SinusoidalTimeEmbedding(8)," in text
    assert "to_q … to_v = Linear(16 => 16)," in text
    n = sum(p.numel() for p in _small_reference()().parameters())
    assert f"# Total: {n:,} parameters," in text and "plus 0 states." in text


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (
            _images(2, 8),
            r"expected the tuple \(x, t\), got a torch.float64 tensor of shape \(2, 3, 8, 8\)",
        ),
        ((_images(2, 8)[0], torch.ones(2)), r"expected images x of shape \(N, C, H, W\)"),
        (
            (_images(2, 8, channels=1), torch.ones(2)),
            r"expected x with 3 channels, got shape \(2, 1, 8, 8\)",
        ),
        (
            (_images(2, 6), torch.ones(2)),
            r"the image size \(6 x 6\) must be divisible by 4 \(2 \*\* 2",
        ),
        (
            (_images(2, 8), torch.ones(3)),
            r"expected time steps t of shape \(2,\) or \(\), got a torch.float32 tensor of",
        ),
        (
            (_images(2, 8), torch.ones(2, dtype=torch.bool)),
            r"expected time steps t of shape \(2,\) or \(\), got a torch.bool tensor",
        ),
    ],
)
def test_unet_input_errors(x, match) -> None:
    model = UNet(channels=(8, 8, 8), layers_per_block=1, attention_head_dim=4, norm_groups=4)
    ps, st = lux.setup(0, model, dtype=torch.float64)
    with pytest.raises(ValueError, match="UNet: " + match):
        model(x, ps, st)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"channels": ()}, ValueError, r"channels must name at least one level, got \(\)"),
        ({"channels": (8, 0)}, ValueError, r"channels\[i\] must be >= 1, got 0"),
        ({"attention": (True,)}, ValueError, r"attention needs one flag per level \(2\), got 1"),
        ({"attention": (1, 0)}, TypeError, r"attention\[i\] must be a bool, got int"),
        (
            {"norm_groups": 3},
            ValueError,
            r"ResnetBlock2D: the channels \(8\) must be divisible by norm_groups \(3\)",
        ),
        (
            {"attention_head_dim": 3},
            ValueError,
            r"AttentionBlock2D: the channels \(16\) must be divisible by attention_head_dim \(3\)",
        ),
        ({"layers_per_block": 0}, ValueError, "layers_per_block must be >= 1, got 0"),
        ({"attention_head_dim": 0}, ValueError, "AttentionBlock2D: head_dim must be >= 1, got 0"),
        ({"in_channels": 0}, ValueError, "UNet: in_channels must be >= 1, got 0"),
        ({"out_channels": 0}, ValueError, "UNet: out_channels must be >= 1, got 0"),
        ({"norm_groups": 0}, ValueError, "UNet: norm_groups must be >= 1, got 0"),
        ({"mid_attention": None}, TypeError, "UNet: mid_attention must be a bool, got NoneType"),
    ],
)
def test_unet_configuration_errors(kwargs, error, match) -> None:
    config = {"channels": (8, 16), "norm_groups": 4, "attention_head_dim": 4} | kwargs
    with pytest.raises(error, match=match):
        UNet(**config)


# torch's notice that sdpa has no batching rule on CPU (it loops; as check_layer's vmap check)
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_unet_grad_and_vmap_over_a_batch_of_parameter_sets() -> None:
    # a denoising loss; torch.func.grad of it equals autograd of the reference, and vmap
    # over 2 stacked parameter sets equals a loop
    model = _small()
    sets = [random_weights(model, torch.float64, seed=s) for s in (1, 2)]
    x, t = _images(2, 4), torch.tensor([10, 900])
    noise = lrandom.normal(lrandom.key(8), (2, 3, 4, 4), dtype=torch.float64)

    def loss(ps, st):
        eps, _ = model((x + noise, t), ps, st)
        return (eps - noise).square().mean()

    grads = [torch.func.grad(loss)(ps, st) for ps, st in sets]
    ref = _small_reference()().to(torch.float64)
    ref.load_state_dict(lux.state_dict(*sets[0]))
    (ref(x + noise, t) - noise).square().mean().backward()
    for name, g in lux.tree.flatten_with_paths(grads[0]):
        torch.testing.assert_close(g, ref.get_parameter(name).grad, rtol=1e-10, atol=1e-12)
    stacked_ps = lux.tree.stack([ps for ps, _ in sets])
    stacked_st = lux.tree.stack([st for _, st in sets])
    batched = torch.func.vmap(torch.func.grad(loss))(stacked_ps, stacked_st)
    for i in range(2):
        lux.tree.map(
            lambda a, b, i=i: torch.testing.assert_close(a[i], b, rtol=1e-10, atol=1e-12),
            batched,
            grads[i],
        )


@pytest.mark.slow
def test_unet_compiles_fullgraph() -> None:
    model = _small()
    with torch.device("meta"):
        ref = _small_reference()()
    x = (_images(2, 4, torch.float32), torch.tensor([3, 400]))
    # float32 at the loading test's tolerances (see the module docstring): the harness's
    # float32 default (1e-5 relative) is ~10 ulp too tight for gradients through GroupNorm
    report = check_layer(
        model, x, reference=ref, gradcheck=False, jvp=False, vmap=False, rtol=1e-4, atol=1e-5
    )
    assert report["compile"] == "passed"
