"""models.ConvMixer against the paper's torch code (Trockman & Kolter 2022, arXiv:2201.09792,
appendix: ``Residual`` and the ``nn.Sequential`` ConvMixer, written here as published), and
the Residual layer it is built from.

Tolerances: float64 at the harness's defaults for check_layer, and 1e-10 relative for the
loading test; float32 at 1e-4 relative / 1e-5 absolute (measured on CPU: bitwise equal, the
same kernels in the same order; the margin is for other devices and kernels).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_parity import assert_matches_reference, random_weights

import lux_torch as lux
from lux_torch import random as lrandom
from lux_torch.layers.residual import Residual
from lux_torch.models import ConvMixer, convmixer_768_32, convmixer_1536_20, convmixer_cifar10
from lux_torch.testing import check_layer


class TorchResidual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x  # type: ignore[no-any-return]


def TorchConvMixer(  # the paper's code, with in_channels and the activation as arguments
    dim: int,
    depth: int,
    kernel_size: int = 9,
    patch_size: int = 7,
    n_classes: int = 1000,
    act: type[nn.Module] = nn.GELU,
    in_channels: int = 3,
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size),
        act(),
        nn.BatchNorm2d(dim),
        *[
            nn.Sequential(
                TorchResidual(
                    nn.Sequential(
                        nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                        act(),
                        nn.BatchNorm2d(dim),
                    )
                ),
                nn.Conv2d(dim, dim, kernel_size=1),
                act(),
                nn.BatchNorm2d(dim),
            )
            for i in range(depth)
        ],
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, n_classes),
    )


def _images(
    n: int, size: int, dtype: torch.dtype = torch.float64, channels: int = 3
) -> torch.Tensor:
    return lrandom.normal(lrandom.key(5), (n, channels, size, size), dtype=dtype)


def test_residual_conforms() -> None:
    layer = Residual(lux.Chain(lux.Linear(4, 4), lux.Tanh()))
    ref = TorchResidual(nn.Sequential(nn.Linear(4, 4, device="meta"), nn.Tanh()))
    ps, st = lux.setup(0, layer, dtype=torch.float64)
    x = lrandom.normal(lrandom.key(1), (3, 4), dtype=torch.float64)
    report = check_layer(
        layer, x, ps=ps, st=st, reference=ref, rename=lambda n: n.replace("layer_1", "0")
    )
    for name in ("parity", "gradcheck", "jvp", "compile", "vmap", "counts", "purity", "repr"):
        assert report[name] == "passed", (name, report)
    assert lux.state_dict(ps, st).keys() == {"fn.layer_1.weight", "fn.layer_1.bias"}


def test_residual_refuses_a_shape_changing_fn() -> None:
    layer = Residual(lux.Linear(4, 1))  # (3, 1) + (3, 4) would broadcast to (3, 4)
    ps, st = lux.setup(0, layer)
    with pytest.raises(
        ValueError, match=r"Residual: fn\(x\) has shape \(3, 1\) but x has shape \(3, 4\)"
    ):
        layer(torch.ones(3, 4), ps, st)


def test_residual_wraps_a_plain_function() -> None:
    layer = Residual(torch.sin)
    y, _ = layer(torch.ones(2), *lux.setup(0, layer))
    torch.testing.assert_close(y, torch.sin(torch.ones(2)) + 1)


# torch's own warning for an even kernel with padding="same" (it pads a copy of the input)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize("kernel_size", [3, 4], ids=["odd-kernel", "even-kernel"])
def test_convmixer_conforms(kernel_size: int) -> None:
    # odd image size (9): the patch embedding drops the last row/column, as torch
    model = ConvMixer(6, 2, kernel_size=kernel_size, patch_size=2, num_classes=4)
    ps, st = random_weights(model, torch.float64)
    with torch.device("meta"):
        ref = TorchConvMixer(6, 2, kernel_size, 2, 4)
    report = check_layer(model, _images(3, 9), ps=ps, st=st, reference=ref, compile=False)
    for mode in ("train", "test"):
        for name in ("parity", "gradcheck", "jvp", "vmap", "purity", "determinism"):
            assert report[f"{name}[{mode}]"] == "passed", (name, mode, report)
    assert report["counts"] == "passed" and report["structure"] == "passed"


@pytest.mark.parametrize(
    ("dtype", "tol"),
    [
        (torch.float64, {"rtol": 1e-10, "atol": 1e-12}),
        (torch.float32, {"rtol": 1e-4, "atol": 1e-5}),
    ],
    ids=["float64", "float32"],
)
def test_convmixer_loads_the_papers_module(dtype: torch.dtype, tol: dict[str, float]) -> None:
    model = ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=5)
    assert_matches_reference(
        model, lambda: TorchConvMixer(8, 2, 3, 2, 5), _images(2, 8, dtype), dtype, **tol
    )


def test_convmixer_relu_and_in_channels() -> None:
    model = ConvMixer(
        4, 1, kernel_size=3, patch_size=3, num_classes=2, activation=lux.ReLU(), in_channels=1
    )
    build = lambda: TorchConvMixer(4, 1, 3, 3, 2, nn.ReLU, in_channels=1)  # noqa: E731
    x = _images(2, 9, channels=1)
    assert_matches_reference(model, build, x, torch.float64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("make", "args"),
    [
        (convmixer_cifar10, (256, 8, 5, 2, 10)),
        (convmixer_1536_20, (1536, 20, 9, 7, 1000)),
        (convmixer_768_32, (768, 32, 7, 7, 1000, nn.ReLU)),
    ],
    ids=["cifar10", "1536_20", "768_32"],
)
def test_named_configurations_match_the_reference(make, args) -> None:
    model = make()
    with torch.device("meta"):
        ref = TorchConvMixer(*args)
    ps, st = lux.setup(0, model, device="meta")
    sd = lux.state_dict(ps, st)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        k: tuple(v.shape) for k, v in ref.state_dict().items()
    }
    assert lux.param_count(model) == sum(p.numel() for p in ref.parameters())
    expected_act = lux.ReLU() if args[-1] is nn.ReLU else lux.GELU()
    assert model["1"] == expected_act


def test_convmixer_display_shows_counts() -> None:
    model = ConvMixer(8, 1, kernel_size=3, patch_size=2, num_classes=5)
    text = repr(model)
    assert text.startswith(
        "ConvMixer(\n    dim=8, depth=1, kernel_size=3, patch_size=2, num_classes=5,"
    )
    assert "0 = Conv2d(3 => 8, (2, 2), stride=2),  " in text
    assert "fn = Chain(" in text and "Conv2d(8 => 8, (3, 3), padding='same', groups=8)" in text
    n = sum(p.numel() for p in TorchConvMixer(8, 1, 3, 2, 5).parameters())
    assert f"# Total: {n:,} parameters," in text
    assert "plus 51 states." in text  # 3 BatchNorm2d(8): 8 + 8 + 1 each


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0}, ValueError, "ConvMixer: dim must be >= 1, got 0"),
        ({"depth": 0}, ValueError, "ConvMixer: depth must be >= 1, got 0"),
        ({"kernel_size": 2.0}, TypeError, "ConvMixer: kernel_size must be an int, got float"),
        ({"patch_size": 0}, ValueError, "ConvMixer: patch_size must be >= 1, got 0"),
        ({"num_classes": 0}, ValueError, "ConvMixer: num_classes must be >= 1, got 0"),
        ({"in_channels": 0}, ValueError, "ConvMixer: in_channels must be >= 1, got 0"),
        ({"activation": "gelu"}, TypeError, "ConvMixer: activation must be a Layer or a callable"),
    ],
)
def test_convmixer_configuration_errors(kwargs, error, match) -> None:
    config = {"dim": 4, "depth": 1} | kwargs
    with pytest.raises(error, match=match):
        ConvMixer(**config)


def test_convmixer_input_errors_name_the_layer_and_the_expected_shape() -> None:
    model = ConvMixer(4, 1, kernel_size=3, patch_size=2, num_classes=2)
    ps, st = lux.setup(0, model)
    with pytest.raises(RuntimeError) as info:
        model(torch.ones(2, 1, 8, 8), ps, st)
    assert "in 0 (Conv2d(3 => 4, (2, 2), stride=2)): expected input of shape (N, C_in=3, H, W)" in (
        "\n".join(info.value.__notes__)
    )


def test_convmixer_per_sample_gradients_with_vmap() -> None:
    # test mode (running statistics): samples are independent, so per-sample gradients by
    # vmap(grad) equal gradients of each sample alone
    model = ConvMixer(4, 1, kernel_size=3, patch_size=2, num_classes=3)
    ps, st = random_weights(model, torch.float64)
    st = lux.test_mode(st)
    x = _images(3, 6)

    def loss(p, xi):
        return model(xi[None], p, st)[0].square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(ps, x)
    for i in range(3):
        one = torch.func.grad(loss)(ps, x[i])
        lux.tree.map(lambda a, b, i=i: torch.testing.assert_close(a[i], b), per_sample, one)


@pytest.mark.slow
def test_convmixer_compiles_fullgraph() -> None:
    model = ConvMixer(6, 2, kernel_size=3, patch_size=2, num_classes=4)
    with torch.device("meta"):
        ref = TorchConvMixer(6, 2, 3, 2, 4)
    report = check_layer(
        model, _images(2, 8, torch.float32), reference=ref, gradcheck=False, jvp=False, vmap=False
    )
    assert report["compile[train]"] == "passed" and report["compile[test]"] == "passed"
