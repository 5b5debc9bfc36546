"""models.VisionTransformer against a torch.nn ViT with torchvision's layout
(tests/torchvision_ref/vision_transformer.py).

A small ViT (32x32 images, 8x8 patches, 2 layers, width 16, 2 heads) goes through the
conformance harness with the reference: outputs and gradients in train and test mode
(dropout 0), float64 (harness tolerance rtol 1e-10) and float32 (rtol 1e-5). Loading the
reference's ``state_dict`` and the round trip back are checked directly; the full-size
models by key set, shapes and parameter counts on the meta device.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision_ref import randomize, without_random_keys
from torchvision_ref import vision_transformer as ref
from zoo_checks import (
    assert_compiles,
    assert_conforms,
    assert_grads_match,
    assert_same_layout,
    images,
)

import lux_torch as lux
from lux_torch import models
from lux_torch.models import VisionTransformer, ViT, ViTEncoder, ViTEncoderBlock

SMALL = (32, 8, 2, 2, 16, 32)  # image_size, patch_size, num_layers, num_heads, hidden, mlp


def _pair(
    representation_size: int | None = None,
    dtype: torch.dtype = torch.float64,
    dropout: float = 0.0,
    seed: int = 0,
) -> tuple[VisionTransformer, nn.Module]:
    kw = {"num_classes": 10, "representation_size": representation_size}
    model = VisionTransformer(*SMALL, dropout, dropout, **kw)  # type: ignore[arg-type]
    reference = ref.VisionTransformer(*SMALL, dropout, dropout, **kw)  # type: ignore[arg-type]
    return model, randomize(reference.to(dtype), seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("representation_size", [None, 12], ids=["head", "pre_logits"])
def test_vit_conforms(representation_size: int | None, dtype: torch.dtype) -> None:
    model, reference = _pair(representation_size, dtype)
    assert_conforms(model, images(2, 32, dtype), reference)


def test_vit_loads_the_reference_state_dict_and_round_trips() -> None:
    model, reference = _pair()
    sd = reference.state_dict()
    ps, st = lux.load_state_dict(model, sd)
    assert set(without_random_keys(lux.state_dict(ps, st))) == set(sd)
    x = images(3, 32)
    reference.eval()
    with torch.no_grad():  # torch's MultiheadAttention takes its fused fast path here
        expected = reference(x)
    y, _ = model(x, ps, lux.test_mode(st))
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-12)
    fresh = ref.VisionTransformer(*SMALL, num_classes=10).to(torch.float64)
    fresh.load_state_dict(without_random_keys(lux.state_dict(ps, st)), strict=True)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), y, rtol=1e-10, atol=1e-12)


def test_vit_dropout_is_active_in_training_and_follows_the_keys() -> None:
    model, reference = _pair(dropout=0.25)
    ps, st = lux.load_state_dict(model, reference.state_dict())
    x = images(2, 32)
    y_test, _ = model(x, ps, lux.test_mode(st))
    y1, st1 = model(x, ps, st)
    y1_again, st1_again = model(x, ps, st)
    assert torch.equal(y1, y1_again) and lux.tree.allclose(st1, st1_again)
    assert not torch.allclose(y1, y_test)
    keys = [p for p in lux.tree.paths(st) if p.endswith(".key")]
    # encoder.dropout, and per block: attention, dropout, mlp.2, mlp.4
    assert len(keys) == 1 + 2 * 4
    old, new = lux.state_dict({}, st), lux.state_dict({}, st1)
    assert all(not torch.equal(old[k], new[k]) for k in keys)
    y2, _ = model(x, ps, st1)
    assert not torch.allclose(y1, y2)
    # in test mode the dropout configuration changes nothing: the reference in eval mode
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(y_test, reference(x), rtol=1e-10, atol=1e-12)


def test_vit_grad_and_vmap_with_torch_func() -> None:
    model, reference = _pair()
    assert_grads_match(model, reference, images(3, 32), torch.tensor([0, 3, 9]))


FULL = ["vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"]


@pytest.mark.parametrize("name", FULL)
def test_full_size_vit_has_torchvisions_keys_shapes_and_counts(name: str) -> None:
    model = getattr(models, name)(num_classes=10)
    with torch.device("meta"):
        reference = ref.vit(name, num_classes=10)
    _assert_same_layout(model, reference)


@pytest.mark.parametrize(("name", "heads", "width"), [("vit_tiny", 3, 192), ("vit_small", 6, 384)])
def test_deit_sized_vits(name: str, heads: int, width: int) -> None:
    model = getattr(models, name)(patch_size=8, image_size=64)
    with torch.device("meta"):
        reference = ref.VisionTransformer(64, 8, 12, heads, width, 4 * width)
    _assert_same_layout(model, reference)


def _assert_same_layout(model: VisionTransformer, reference: nn.Module) -> None:
    # the dropout keys: encoder.dropout, and per block dropout, mlp.2 and mlp.4
    assert_same_layout(model, reference, random_keys=1 + 3 * len(model.encoder.layers))


def test_vit_display_and_alias() -> None:
    assert ViT is VisionTransformer
    model, reference = _pair()
    text = repr(model)
    n = sum(p.numel() for p in reference.parameters())
    assert text.startswith("VisionTransformer(\n    image_size=32, patch_size=8, num_classes=10,")
    assert f"# Total: {n:,} parameters" in text
    assert (
        "self_attention = MultiheadAttention(embed_dim=16, num_heads=2, batch_first=True)" in text
    )


def test_vit_refuses_bad_configurations_and_inputs() -> None:
    with pytest.raises(ValueError, match=r"image_size \(30\) must be a multiple of patch_size"):
        VisionTransformer(30, 8, 1, 2, 16, 32)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        VisionTransformer(32, 8, 1, 3, 16, 32)
    for i, name in enumerate(["image_size", "patch_size", "num_layers"]):
        args = [32, 8, 1, 2, 16, 32]
        args[i] = 0
        with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
            VisionTransformer(*args)
    with pytest.raises(ValueError, match="ViTEncoderBlock: mlp_dim must be >= 1, got 0"):
        VisionTransformer(32, 8, 1, 2, 16, 0)
    with pytest.raises(ValueError, match="VisionTransformer: num_classes must be >= 1, got 0"):
        VisionTransformer(*SMALL, num_classes=0)
    with pytest.raises(ValueError, match="representation_size must be >= 1, got 0"):
        VisionTransformer(*SMALL, representation_size=0)
    model = VisionTransformer(*SMALL)
    ps, st = lux.setup(0, model)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, 32, 32\)"):
        model(torch.zeros(2, 3, 64, 64), ps, st)
    with pytest.raises(
        TypeError, match=r"vit_b_16\(\) got unexpected keyword arguments \['classes'\]"
    ):
        models.vit_b_16(classes=10)  # type: ignore[call-arg]
    encoder = model.encoder
    assert isinstance(encoder, ViTEncoder)
    with pytest.raises(ValueError, match=r"expected a token sequence of shape \(N, 17, 16\)"):
        encoder(torch.zeros(2, 16, 16), ps["encoder"], st["encoder"])
    block = encoder.layers["encoder_layer_0"]
    assert isinstance(block, ViTEncoderBlock)
    layer_ps, layer_st = ps["encoder"]["layers"], st["encoder"]["layers"]
    with pytest.raises(ValueError, match=r"ViTEncoderBlock: expected a token sequence of shape"):
        block(torch.zeros(2, 5, 8), layer_ps["encoder_layer_0"], layer_st["encoder_layer_0"])


@pytest.mark.slow
def test_vit_compiles_in_one_graph() -> None:
    model, reference = _pair(dtype=torch.float32)
    assert_compiles(model, images(2, 32, torch.float32), reference)


@pytest.mark.slow
def test_full_size_vit_b_32_forward_matches_the_reference() -> None:
    reference = randomize(ref.vit("vit_b_32", num_classes=10), 3)
    model = models.vit_b_32(num_classes=10)
    ps, st = lux.load_state_dict(model, reference.state_dict())
    x = images(2, 224, torch.float32)
    reference.eval()
    with torch.no_grad():
        expected = reference(x)
        y, _ = model(x, ps, lux.test_mode(st))
    # float32 through 12 blocks of width 768; torch's eval-mode attention takes its fused fast
    # path, lux scaled_dot_product_attention (measured: 1.7e-6 absolute at logits up to 1.8)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_interpolate_embeddings_resizes_the_patch_grid_for_another_image_size() -> None:
    _, reference = _pair()
    sd = reference.state_dict()
    before = {k: v.clone() for k, v in sd.items()}
    # 32 -> 56 pixels with 8-pixel patches: a 4x4 grid becomes 7x7; with align_corners the
    # new point (2i, 2j) lies on the old point (i, j), where bicubic weights are (0, 1, 0, 0)
    new = models.interpolate_embeddings(56, 8, sd)
    old_pos, new_pos = sd["encoder.pos_embedding"], new["encoder.pos_embedding"]
    assert new_pos.shape == (1, 1 + 7 * 7, 16) and new_pos.dtype == old_pos.dtype
    assert torch.equal(new_pos[:, :1], old_pos[:, :1])  # the class token's is kept
    old_grid = old_pos[0, 1:].reshape(4, 4, 16)
    new_grid = new_pos[0, 1:].reshape(7, 7, 16)
    torch.testing.assert_close(new_grid[::2, ::2], old_grid, rtol=0, atol=1e-12)
    assert not torch.allclose(new_grid[1, 1], old_grid[0, 0])  # in between: interpolated
    assert all(torch.equal(sd[k], before[k]) for k in sd) and sd.keys() == before.keys()
    assert all(new[k] is sd[k] for k in sd if k != "encoder.pos_embedding")
    bigger = VisionTransformer(56, 8, 2, 2, 16, 32, num_classes=10)
    ps, st = lux.load_state_dict(bigger, new)
    y, _ = bigger(images(2, 56), ps, lux.test_mode(st))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    headless = models.interpolate_embeddings(56, 8, sd, "bilinear", reset_heads=True)
    assert set(headless) == {k for k in sd if not k.startswith("heads")} != set(sd)
    same = models.interpolate_embeddings(32, 8, sd, reset_heads=True)  # as torchvision
    assert same.keys() == sd.keys() and same["encoder.pos_embedding"] is old_pos


def test_interpolate_embeddings_refuses_what_is_not_a_vit_state_dict() -> None:
    fn = models.interpolate_embeddings
    pos = torch.zeros(1, 17, 4)
    with pytest.raises(KeyError, match=r"no 'encoder\.pos_embedding'"):
        fn(64, 16, {"conv_proj.weight": pos})
    with pytest.raises(ValueError, match=r"shape \(1, L, hidden_dim\), got \(2, 17, 4\)"):
        fn(64, 16, {"encoder.pos_embedding": torch.zeros(2, 17, 4)})
    with pytest.raises(ValueError, match="15 patch positions after the class token"):
        fn(64, 16, {"encoder.pos_embedding": torch.zeros(1, 16, 4)})
    with pytest.raises(ValueError, match="image_size must be >= 1, got 0"):
        fn(0, 16, {"encoder.pos_embedding": pos})
    with pytest.raises(TypeError, match="patch_size must be an int, got bool"):
        fn(64, True, {"encoder.pos_embedding": pos})
