"""models.VGG against a torch.nn VGG with torchvision's layout (tests/torchvision_ref/vgg.py).

Small configurations (two convolution stages, a 32-wide classifier, 16x16 images) go through
the conformance harness with the reference: outputs, gradients and BatchNorm running
statistics in train and test mode, float64 (harness tolerance rtol 1e-10) and float32
(rtol 1e-5). Loading the reference's ``state_dict`` and the round trip back are checked
directly; the full-size models by key set, shapes and parameter counts on the meta device.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision_ref import randomize, without_random_keys
from torchvision_ref import vgg as ref
from zoo_checks import (
    assert_compiles,
    assert_conforms,
    assert_grads_match,
    assert_same_layout,
    images,
)

import lux_torch as lux
from lux_torch.models import (
    VGG,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)

CFG: list[int | str] = [8, "M", 16, "M"]


def _small(batch_norm: bool = False, dropout: float = 0.0) -> VGG:
    """The small configuration: two stages, 5 classes, a 32-wide classifier, 2x2 pool."""
    return VGG(
        CFG, batch_norm=batch_norm, dropout=dropout, num_classes=5, hidden_features=32,
        pool_size=2,
    )  # fmt: skip


def _pair(
    batch_norm: bool, dtype: torch.dtype = torch.float64, dropout: float = 0.0, seed: int = 0
) -> tuple[VGG, nn.Module]:
    model = _small(batch_norm, dropout)
    reference = ref.VGG(
        ref.make_layers(CFG, batch_norm), 5, dropout=dropout, pool_size=2, hidden_features=32
    )
    return model, randomize(reference.to(dtype), seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_vgg_conforms(batch_norm: bool, dtype: torch.dtype) -> None:
    model, reference = _pair(batch_norm, dtype)
    assert_conforms(model, images(2, 16, dtype), reference)


def test_vgg_loads_the_reference_state_dict_and_round_trips() -> None:
    model, reference = _pair(batch_norm=True)
    sd = reference.state_dict()
    # clones: load_state_dict shares the tensors, and the reference updates its buffers in place
    ps, st = lux.load_state_dict(model, {k: v.clone() for k, v in sd.items()})
    assert set(without_random_keys(lux.state_dict(ps, st))) == set(sd)
    x = images(2, 16)
    reference.eval()
    with torch.no_grad():
        expected_eval = reference(x)
    y, _ = model(x, ps, lux.test_mode(st))
    torch.testing.assert_close(y, expected_eval, rtol=1e-12, atol=1e-12)
    # one training step: the reference updates its buffers in place, lux returns them
    reference.train()
    with torch.no_grad():
        expected_train = reference(x)
    y, new_st = model(x, ps, st)
    torch.testing.assert_close(y, expected_train, rtol=1e-12, atol=1e-12)
    ours = without_random_keys(lux.state_dict(ps, new_st))
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-12, atol=1e-12, msg=name)
    assert int(ours["features.1.num_batches_tracked"]) == 4  # randomize() set 3
    # round trip: lux's state_dict loads into a fresh reference with strict=True
    fresh = ref.VGG(ref.make_layers(CFG, True), 5, dropout=0.0, pool_size=2, hidden_features=32)
    fresh.to(torch.float64).load_state_dict(ours, strict=True)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(x), model(x, ps, lux.test_mode(new_st))[0], rtol=1e-12, atol=1e-12
        )


def test_vgg_dropout_is_active_in_training_and_follows_the_key() -> None:
    model = _small(dropout=0.5)
    ps, st = lux.setup(0, model, dtype=torch.float64)
    ps = lux.tree.map(lambda p: p * 30.0 if p.dim() == 2 else p, ps)  # outputs away from 0
    x = images(2, 16)
    y_test, _ = model(x, ps, lux.test_mode(st))
    y1, st1 = model(x, ps, st)
    y1_again, st1_again = model(x, ps, st)
    assert torch.equal(y1, y1_again) and lux.tree.allclose(st1, st1_again)
    assert not torch.allclose(y1, y_test)  # dropout changed the training output
    for name in ("2", "5"):  # both dropout layers advanced their keys
        assert not torch.equal(st1["classifier"][name]["key"], st["classifier"][name]["key"])
    y2, _ = model(x, ps, st1)
    assert not torch.allclose(y1, y2)  # the next call draws new masks
    # an independent computation of the classifier with the masks lux.random.dropout draws
    feats = F.adaptive_avg_pool2d(model.features(x, ps["features"], st["features"])[0], 2)
    h = feats.flatten(1)
    c, cs = ps["classifier"], st["classifier"]
    for lin, drop in (("0", "2"), ("3", "5")):
        h = torch.relu(F.linear(h, c[lin]["weight"], c[lin]["bias"]))
        h = lux.random.dropout(lux.random.split(cs[drop]["key"])[1], h, 0.5)
    expected = F.linear(h, c["6"]["weight"], c["6"]["bias"])
    torch.testing.assert_close(y1, expected, rtol=1e-12, atol=1e-12)


def test_vgg_grad_and_vmap_with_torch_func() -> None:
    model, reference = _pair(batch_norm=True)
    assert_grads_match(model, reference, images(3, 16), torch.tensor([0, 3, 4]))


VARIANTS = [
    (vgg11, "A", False),
    (vgg11_bn, "A", True),
    (vgg13, "B", False),
    (vgg13_bn, "B", True),
    (vgg16, "D", False),
    (vgg16_bn, "D", True),
    (vgg19, "E", False),
    (vgg19_bn, "E", True),
]


@pytest.mark.parametrize(("make", "cfg", "bn"), VARIANTS, ids=[v[0].__name__ for v in VARIANTS])
def test_full_size_vgg_has_torchvisions_keys_shapes_and_counts(
    make: Callable[..., VGG], cfg: str, bn: bool
) -> None:
    model = make(num_classes=10)
    with torch.device("meta"):
        reference = ref.vgg(cfg, bn, num_classes=10)
    assert_same_layout(model, reference, random_keys=2)


def test_vgg_display_shows_parameter_counts() -> None:
    model, reference = _pair(batch_norm=True)
    text = repr(model)
    n = sum(p.numel() for p in reference.parameters())
    assert text.startswith("VGG(\n    cfg=[8, 'M', 16, 'M'], batch_norm=True, num_classes=5,")
    assert f"# Total: {n:,} parameters" in text
    assert "0 = Conv2d(3 => 8, (3, 3), padding=1, weight_init=vgg_conv_init" in text
    assert repr(vgg16()).startswith("VGG(\n    'D', num_classes=1000,")


def test_vgg_refuses_bad_configurations_and_inputs() -> None:
    with pytest.raises(ValueError, match="cfg must be one of"):
        VGG("Z")
    with pytest.raises(ValueError, match="at least one convolution"):
        VGG(["M"])
    with pytest.raises(ValueError, match=r"ints >= 1 or 'M', got 0"):
        VGG([0, "M"])
    with pytest.raises(TypeError, match="cfg must be a configuration name or a sequence"):
        VGG(11)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch_norm must be a bool"):
        VGG("A", batch_norm=1)  # type: ignore[arg-type]
    for name in ("num_classes", "in_channels", "hidden_features", "pool_size"):
        with pytest.raises(ValueError, match=f"VGG: {name} must be >= 1, got 0"):
            VGG("A", **{name: 0})  # type: ignore[arg-type]
    model = _small()
    ps, st = lux.setup(0, model)
    with pytest.raises(ValueError, match=r"VGG: expected images of shape \(N, 3, H, W\)"):
        model(torch.zeros(2, 1, 16, 16), ps, st)


@pytest.mark.slow
def test_vgg_compiles_in_one_graph() -> None:
    model, reference = _pair(batch_norm=True, dtype=torch.float32)
    assert_compiles(model, images(2, 16, torch.float32), reference)


@pytest.mark.slow
def test_full_size_vgg11_bn_forward_matches_the_reference() -> None:
    reference = randomize(ref.vgg("A", True, num_classes=10), 3)
    model = vgg11_bn(num_classes=10)
    ps, st = lux.load_state_dict(model, reference.state_dict())
    x = images(2, 32, torch.float32)
    reference.eval()
    with torch.no_grad():
        expected = reference(x)
        y, _ = model(x, ps, lux.test_mode(st))
    # float32 through 8 convolutions and 3 linear layers of up to 4096 inputs: the same kernels
    # run (measured: bitwise equal); the margin is for other BLAS/oneDNN builds
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
