"""models.ResNet against torchvision's ResNet as torch.nn (tests/torchvision_ref/resnet.py),
and the CIFAR ResNet-20 against a torch.nn module of the same architecture written here.

The reference is built from a seeded generator (``torch.random.fork_rng``: the global RNG is
left as it was), its ``state_dict()`` (with random running statistics) is loaded with
``lux.load_state_dict``, and both run on the same input. Tolerances: float64 uses the
``torch.testing.assert_close``'s defaults (rtol 1e-7,
atol 1e-7); float32 ``rtol=atol=1e-4``: the same
convolutions in another summation order (lux's train-mode BatchNorm updates the running
statistics outside the kernel), through 20 layers whose BatchNorms divide by small batch
standard deviations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import randn
from torch import nn
from torch.testing import assert_close
from torchvision_ref import resnet as tv
from zoo_parity import assert_matches_module

import lux_torch as lux
from lux_torch import models
from lux_torch.models.resnet import BasicBlock, Bottleneck, PaddedShortcut, ResNet
from lux_torch.testing import check_layer

F32, F64 = torch.float32, torch.float64
TOL: dict[torch.dtype, dict[str, Any]] = {
    F64: {"rtol": 1e-7, "atol": 1e-7},  # torch.testing's float64 defaults
    F32: {"rtol": 1e-4, "atol": 1e-4},
}


def _seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``build()`` under a fixed seed, without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
        for name, buf in module.named_buffers():  # running statistics away from 0 and 1
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(3)
    return module


# --------------------------------------------------------------------------- CIFAR reference


class TorchPaddedShortcut(nn.Module):
    """Option A: subsample by ``stride``, append zero channels."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, :, :: self.stride, :: self.stride]
        zeros = y.new_zeros(y.shape[0], self.extra, *y.shape[2:])
        return torch.cat([y, zeros], dim=1)


class TorchResNet20(nn.Module):
    """He et al. 2016 sec. 4.2 for CIFAR-10, n = 3, option A shortcuts."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            short = TorchPaddedShortcut(width - cin, stride) if stride != 1 else None
            blocks = [tv.BasicBlock(cin, width, stride, short)]
            blocks += [tv.BasicBlock(width, width) for _ in range(2)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- structure


def _shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


BIG = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", BIG)
def test_state_dict_names_and_shapes_equal_torchvision(name):
    with torch.device("meta"):
        reference = getattr(tv, name)(num_classes=7)
    model = getattr(models, name)(num_classes=7)
    ps, st = lux.setup(0, model, device="meta")
    assert _shapes(lux.state_dict(ps, st)) == _shapes(reference.state_dict())
    assert list(lux.tree.paths(ps)) == [n for n, _ in reference.named_parameters()]
    assert lux.param_count(model) == sum(p.numel() for p in reference.parameters())


def test_resnext_and_dilation_options_match_torchvision():
    options: dict[str, Any] = {
        "groups": 4,
        "width_per_group": 8,
        "replace_stride_with_dilation": [False, True, True],
    }
    with torch.device("meta"):
        reference = tv.ResNet(tv.Bottleneck, [1, 1, 1, 1], num_classes=5, **options)
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5, **options)
    ps, st = lux.setup(0, model, device="meta")
    assert _shapes(lux.state_dict(ps, st)) == _shapes(reference.state_dict())
    conv = model.stages["layer4"][0].conv2
    assert (conv.dilation, conv.padding, conv.stride, conv.groups) == ((2, 2), (2, 2), (1, 1), 4)


def test_resnet20_is_the_papers_cifar_network():
    model = models.resnet20()
    assert lux.param_count(model) == sum(p.numel() for p in TorchResNet20().parameters())
    assert lux.param_count(model) == 269_722  # "0.27M" (He et al. 2016, table 6)
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1x1 conv + BatchNorm, twice
    assert lux.param_count(models.resnet20(shortcut="B")) == 269_722 + projections
    ps, st = lux.setup(0, model)
    y, _ = model(randn(2, 3, 32, 32), ps, st)
    assert y.shape == (2, 10)


# --------------------------------------------------------------------------- initialisation


def test_initialisation_follows_torchvision():
    model = models.resnet20(zero_init_residual=True)
    ps, _ = lux.setup(0, model)
    w = ps["layer3"]["1"]["conv1"]["weight"]  # (64, 64, 3, 3): fan_out = 64 * 9
    assert abs(w.std().item() / (2.0 / (64 * 9)) ** 0.5 - 1) < 0.03
    assert abs(w.mean().item()) < 0.003
    for stage in ("layer1", "layer3"):
        block = ps[stage]["1"]
        assert not block["bn2"]["weight"].any()
        assert block["bn1"]["weight"].eq(1).all() and not block["bn1"]["bias"].any()
    bottleneck = Bottleneck(8, 2, zero_init_residual=True)
    bps, _ = lux.setup(0, bottleneck)
    assert not bps["bn3"]["weight"].any() and bps["bn2"]["weight"].all()
    plain, _ = lux.setup(0, models.resnet20())
    assert plain["layer1"]["1"]["bn2"]["weight"].all()


# --------------------------------------------------------------------------- parity


def _parity(model: lux.Layer, reference: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> None:
    """Train and eval outputs, gradients, running statistics after a train step, and the
    round trip back into the reference, after ``lux.load_state_dict``."""
    assert_matches_module(model, reference.to(dtype), x.to(dtype), **TOL[dtype])


@pytest.mark.parametrize("dtype", [F64, F32])
def test_resnet18_matches_torchvision(dtype):
    reference = _seeded(lambda: tv.resnet18(num_classes=10))
    _parity(models.resnet18(num_classes=10), reference, randn(2, 3, 32, 32, seed=2), dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_bottleneck_resnet_matches_torchvision(dtype):
    # ResNet-50's blocks on a shorter stack (one block per stage keeps the test fast);
    # groups and width_per_group as in ResNeXt
    build = functools.partial(tv.ResNet, tv.Bottleneck, [2, 1, 1, 1], 6, False, 2, 32)
    reference = _seeded(build)
    model = ResNet(Bottleneck, [2, 1, 1, 1], 6, False, 2, 32)
    _parity(model, reference, randn(2, 3, 32, 32, seed=3), dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_resnet20_matches_a_torch_reference(dtype):
    reference = _seeded(TorchResNet20)
    _parity(models.resnet20(), reference, randn(2, 3, 16, 16, seed=4), dtype)


def test_pretrained_style_loading_is_strict():
    reference = _seeded(lambda: tv.resnet18(num_classes=10))
    sd = reference.state_dict()
    del sd["layer2.0.downsample.1.running_var"]
    with pytest.raises(lux.StateDictError, match=r"layer2\.0\.downsample\.1\.running_var"):
        lux.load_state_dict(models.resnet18(num_classes=10), sd)
    with pytest.raises(lux.StateDictError, match=r"fc\.weight"):
        lux.load_state_dict(models.resnet18(), reference.state_dict())  # 1000 vs 10 classes


# --------------------------------------------------------------------------- conformance


def _conformance(
    layer: lux.Layer,
    reference: nn.Module,
    x: torch.Tensor,
    suffixes: tuple[str, ...] = ("[train]", "[test]"),
) -> None:
    """check_layer in float64 (graph capture with ``aot_eager``; inductor: the slow test)."""
    ps, st = lux.setup(0, layer, dtype=F64)
    report = check_layer(layer, x, reference=reference, ps=ps, st=st, compile_backend="aot_eager")
    for check in ("parity", "gradcheck", "jvp", "purity", "determinism", "compile", "vmap_inputs"):
        for suffix in suffixes:
            assert report[check + suffix] == "passed", (check + suffix, report)
    assert report["shapes"] == "passed" and report["counts"] == "passed"


def test_basic_block_conformance():
    down = lux.Chain({"0": models.resnet.conv1x1(4, 6, 2), "1": lux.BatchNorm2d(6)})
    layer = BasicBlock(4, 6, 2, down)
    with torch.device("meta"):
        ref_down = nn.Sequential(tv.conv1x1(4, 6, 2), nn.BatchNorm2d(6))
        reference = tv.BasicBlock(4, 6, 2, ref_down)
    _conformance(layer, reference, randn(2, 4, 5, 5, dtype=F64))


def test_bottleneck_conformance():
    layer = Bottleneck(8, 2, 1, None, groups=2, base_width=32)
    with torch.device("meta"):
        reference = tv.Bottleneck(8, 2, 1, None, groups=2, base_width=32)
    _conformance(layer, reference, randn(2, 8, 4, 4, dtype=F64))


def test_padded_shortcut_conformance():
    _conformance(
        PaddedShortcut(3, 5, 2),
        TorchPaddedShortcut(2, 2),
        randn(2, 3, 5, 5, dtype=F64),
        suffixes=("",),
    )


@pytest.mark.slow  # ~80 s: gradcheck and jvp through 20 layers
def test_resnet20_conformance():
    with torch.device("meta"):
        reference = TorchResNet20()
    _conformance(models.resnet20(), reference, randn(2, 3, 8, 8, dtype=F64))


# --------------------------------------------------------------------------- errors


def test_configuration_errors_name_the_argument():
    with pytest.raises(ValueError, match="BasicBlock: only groups=1 and base_width=64"):
        models.resnet18(groups=2)
    with pytest.raises(ValueError, match="BasicBlock: only dilation=1"):
        models.resnet18(replace_stride_with_dilation=[False, False, True])
    with pytest.raises(ValueError, match="replace_stride_with_dilation needs 3 entries"):
        models.resnet50(replace_stride_with_dilation=[True])
    with pytest.raises(ValueError, match="shortcut must be 'A' or 'B'"):
        models.resnet20(shortcut="C")
    with pytest.raises(ValueError, match="stem must be"):
        ResNet(BasicBlock, [1], widths=[8], stem="tiny")
    with pytest.raises(ValueError, match="layers and widths need one entry per stage"):
        ResNet(BasicBlock, [1, 1], widths=[8])
    with pytest.raises(TypeError, match="block must be BasicBlock or Bottleneck"):
        ResNet(nn.Module, [1, 1, 1, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Bottleneck: groups"):
        Bottleneck(8, 2, groups=0)
    with pytest.raises(ValueError, match="Bottleneck: base_width"):
        Bottleneck(8, 2, base_width=0)
    with pytest.raises(ValueError, match="PaddedShortcut: out_channels"):
        PaddedShortcut(4, 2)


def test_wrong_input_names_the_layer_and_shape():
    model = models.resnet20()
    ps, st = lux.setup(0, model)
    with pytest.raises(
        RuntimeError, match=r"in conv1 \(Conv2d\(3 => 16.*C_in=3.*got \(2, 1, 8, 8\)"
    ):
        model(randn(2, 1, 8, 8), ps, st)
    shortcut = PaddedShortcut(3, 5, 2)
    with pytest.raises(
        ValueError, match=r"expected input of shape \(N, C=3, H, W\), got \(2, 4, 5, 5\)"
    ):
        shortcut(randn(2, 4, 5, 5), {}, {})


# --------------------------------------------------------------------------- transforms, display


def test_vmap_and_grad_over_an_ensemble_of_resnet20s():
    model = models.resnet20(num_classes=3)
    sets = [lux.setup(k, model) for k in range(2)]
    ps = lux.tree.stack([p for p, _ in sets])
    st = lux.tree.stack([s for _, s in sets])
    x = randn(2, 3, 8, 8)

    def loss(p: Any, s: Any) -> torch.Tensor:
        return model(x, p, s)[0].square().mean()

    grads = torch.func.vmap(torch.func.grad(loss))(ps, st)
    for i, (p, s) in enumerate(sets):
        expected = torch.func.grad(loss)(p, s)
        lux.tree.map(lambda a, b, i=i: assert_close(a[i], b, rtol=1e-4, atol=1e-5), grads, expected)


def test_display_shows_the_tree_with_parameter_counts():
    text = repr(models.resnet20())
    assert text.startswith("ResNet(\n    BasicBlock, [3, 3, 3], num_classes=10, stem='cifar'")
    assert "downsample = PaddedShortcut(16 => 32, stride=2)" in text
    assert "# Total: 269,722 parameters," in text
    assert "0 = BasicBlock(\n            16 => 16," in text
    text18 = repr(models.resnet18())
    assert "downsample = Chain(" in text18 and "fc = Linear(512 => 1000)" in text18
    assert "# Total: 11,689,512 parameters," in text18


@pytest.mark.slow
@pytest.mark.parametrize(
    "build", [models.resnet20, functools.partial(models.resnet18, num_classes=10)]
)
def test_compiled_fullgraph_matches_eager(build):
    # float64: Inductor reorders the convolutions' and BatchNorm's reductions, which in
    # float32 moves a logit near zero of ResNet-18 by 1.6e-5 (relative 3e-4)
    model = build()
    ps, st = lux.setup(0, model, dtype=torch.float64)
    x = randn(4, 3, 32, 32, dtype=torch.float64)
    compiled = torch.compile(model.__call__, fullgraph=True)
    for state in (st, lux.test_mode(st)):
        y, new_st = model(x, ps, state)
        yc, new_stc = compiled(x, ps, state)
        assert_close(yc, y, rtol=1e-10, atol=1e-12)
        lux.tree.map(lambda a, b: assert_close(a, b, rtol=1e-10, atol=1e-12), new_stc, new_st)


def test_the_torchvision_check_compares_what_it_says():
    # tests/check_torchvision.py runs against torchvision itself where it imports (not in
    # CI); its comparison is checked here with the module-tree reference in its place
    from check_torchvision import TOL, _compare, _reference

    x = randn(2, 3, 32, 32, dtype=F64)

    def reference():
        return _reference(functools.partial(tv.resnet18, num_classes=10), F64)

    deviations, failures = _compare(models.resnet18(num_classes=10), reference(), x, TOL[F64])
    assert failures == [] and set(deviations) == {
        "output (train)",
        "gradients",
        "running statistics",
        "output (eval)",
    }
    assert all(v is not None and v <= 1e-12 for v in deviations.values())
    # a reference that computes something else under the same names is found out ...
    bad = reference()
    bad.layer2[0].bn1.eps = 1e-2  # not in the state_dict
    deviations, failures = _compare(models.resnet18(num_classes=10), bad, x, TOL[F64])
    assert "output (train): output" in failures and "output (eval): output" in failures
    assert "gradients: conv1.weight" in failures and deviations["gradients"] > 1e-6
    # ... and a model of another layout does not load
    with pytest.raises(lux.StateDictError):
        _compare(models.resnet34(num_classes=10), reference(), x, TOL[F64])
