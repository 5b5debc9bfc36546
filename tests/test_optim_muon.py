"""Muon: torch.optim.Muon parity, Newton-Schulz against the reference iteration written
here, the fallback optimizer and the masks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lux_torch import optim

STEPS = 50
A, B, C = 3.4445, -4.7750, 2.0315


def _params(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "hidden": torch.randn(8, 5, generator=g, dtype=dtype),
        "wide": torch.randn(3, 7, generator=g, dtype=dtype),
        "bias": torch.randn(5, generator=g, dtype=dtype),
    }


def _grad(p: torch.Tensor, i: int) -> torch.Tensor:
    return torch.sin(2.0 * p + i) + 0.05 * p


def _reference_ns(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Keller Jordan's zeropower_via_newtonschulz5 (github.com/KellerJordan/Muon), in g's
    dtype; the norm is bounded below by 1e-7 as torch.optim.Muon does (the reference adds
    1e-7 to it instead)."""
    x: torch.Tensor = g
    if g.size(-2) > g.size(-1):
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for _ in range(steps):
        a = x @ x.mT
        b = B * a + C * a @ a
        x = A * x + b @ x
    if g.size(-2) > g.size(-1):
        x = x.mT
    return x


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (16, 16), (64, 3)])
def test_newton_schulz_is_near_orthogonal_and_equals_the_reference(shape: tuple[int, int]) -> None:
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    o = optim.newton_schulz(g)
    torch.testing.assert_close(o, _reference_ns(g), rtol=1e-12, atol=1e-12)
    s = torch.linalg.svdvals(o)
    # the quintic's coefficients trade exactness for speed: singular values in ~[0.68, 1.13]
    assert float(s.min()) > 0.6 and float(s.max()) < 1.2, s
    # and the singular vectors are g's: o = U S' V^T with S' diagonal and positive
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    inner = u.mT @ o @ vh.mT
    assert float((inner - torch.diag(inner.diagonal())).abs().max()) < 1e-10
    assert bool((inner.diagonal() > 0.6).all())
    assert optim.newton_schulz(g, dtype=torch.bfloat16).dtype == torch.float64
    with pytest.raises(ValueError, match="newton_schulz: x must be 2-D"):
        optim.newton_schulz(torch.ones(2, 2, 2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"nesterov": False, "weight_decay": 0.0},
        {"adjust_lr_fn": "match_rms_adamw", "momentum": 0.8, "ns_steps": 3},
    ],
)
def test_matches_torch_muon_and_adamw(options: dict[str, Any], dtype: torch.dtype) -> None:
    # torch.optim.Muon computes Newton-Schulz in bfloat16: ns_dtype=torch.bfloat16 is torch
    ps = _params(dtype)
    muon_ps = [torch.nn.Parameter(ps[k].clone()) for k in ("hidden", "wide")]
    bias = torch.nn.Parameter(ps["bias"].clone())
    reference = torch.optim.Muon(muon_ps, lr=0.02, **options)
    fallback = torch.optim.AdamW([bias], lr=0.02, weight_decay=0.0)
    opt = optim.muon(0.02, ns_dtype=torch.bfloat16, **options)
    state = opt.init(ps)
    for i in range(STEPS):
        updates, state = opt.update({k: _grad(p, i) for k, p in ps.items()}, state, ps)
        ps = optim.apply_updates(ps, updates)
        for p in (*muon_ps, bias):
            p.grad = _grad(p.detach(), i)
        reference.step()
        fallback.step()
    # float32: torch decays p *= 1 - lr * wd before adding the step, the chain adds
    # -lr * (k O + wd p) at once; a one-ulp difference can flip a bfloat16 rounding of the
    # next iteration's input, so float32 agrees to bfloat16's resolution only
    tol = 1e-12 if dtype is torch.float64 else 2e-3
    for ours, theirs in zip((ps["hidden"], ps["wide"], ps["bias"]), (*muon_ps, bias), strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=tol, atol=tol)


def test_default_float_iteration_matches_the_reference_rule() -> None:
    ps = _params(torch.float64)
    ref = {k: ps[k].clone() for k in ("hidden", "wide")}
    buf = {k: torch.zeros_like(p) for k, p in ref.items()}
    opt = optim.muon(0.03, weight_decay=0.1, momentum=0.9, fallback=optim.set_to_zero())
    state = opt.init(ps)
    for i in range(STEPS):
        updates, state = opt.update({k: _grad(p, i) for k, p in ps.items()}, state, ps)
        ps = optim.apply_updates(ps, updates)
        for k, p in ref.items():  # Keller Jordan's Muon.step, written out
            g = _grad(p, i)
            buf[k] = 0.9 * buf[k] + 0.1 * g
            m = 0.1 * g + 0.9 * buf[k]
            o = _reference_ns(m) * math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
            ref[k] = p * (1 - 0.03 * 0.1) - 0.03 * o
    for k in ref:
        torch.testing.assert_close(ps[k], ref[k], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ps["bias"], _params(torch.float64)["bias"])  # set_to_zero


def test_conv_weights_are_reshaped_or_refused() -> None:
    ps = {"conv": torch.randn(4, 2, 3, 3, dtype=torch.float64)}
    grads = {"conv": torch.randn(4, 2, 3, 3, dtype=torch.float64)}
    t = optim.scale_by_muon(reshape_conv=True)
    u, _ = t.update(grads, t.init(ps), ps)
    expected = _reference_ns(torch.lerp(grads["conv"], 0.05 * grads["conv"], 0.95).reshape(4, 18))
    torch.testing.assert_close(u["conv"], expected.reshape(4, 2, 3, 3), rtol=1e-12, atol=1e-12)
    with pytest.raises(
        ValueError, match=r"'conv' has shape \(4, 2, 3, 3\); Muon orthog.*reshape_conv"
    ):
        optim.scale_by_muon().init(ps)
    with pytest.raises(ValueError, match=r"'b' has shape \(3,\); Muon orthogonalises matrices"):
        optim.scale_by_muon().update({"b": torch.ones(3)}, {"mu": {"b": torch.ones(3)}})
    # muon() routes conv weights to Muon only when asked
    opt = optim.muon(reshape_conv=True)
    assert "conv" in opt.init(ps)["muon"][0]["mu"]
    assert "conv" not in optim.muon().init(ps)["muon"][0]["mu"]


def test_mask_sends_embeddings_to_the_fallback() -> None:
    ps = {"embed": torch.randn(10, 4), "hidden": torch.randn(4, 4), "head": torch.randn(2, 4)}
    opt = optim.muon(0.02, mask={"embed": False, "hidden": True, "head": False})
    state = opt.init(ps)
    assert sorted(state["muon"][0]["mu"]) == ["hidden"]
    assert sorted(state["fallback"][0]["mu"]) == ["embed", "head"]
    by_fn = optim.muon(0.02, mask=lambda p: {k: k == "hidden" for k in p})
    assert sorted(by_fn.init(ps)["muon"][0]["mu"]) == ["hidden"]
    with pytest.raises(ValueError, match="muon: mask values must be Python bools"):
        optim.muon(mask={"embed": 0, "hidden": 1, "head": 0}).init(ps)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.muon(-1.0), "muon: lr must be >= 0"),
        (lambda: optim.muon(weight_decay=-1.0), "weight_decay must be >= 0"),
        (lambda: optim.scale_by_muon(momentum=1.0), r"scale_by_muon: momentum must be in \[0, 1\)"),
        (lambda: optim.scale_by_muon(ns_steps=0), "ns_steps must be an int >= 1"),
        (lambda: optim.scale_by_muon(eps=-1.0), "eps must be >= 0"),
        (lambda: optim.scale_by_muon(momentum=0.0), "nesterov needs momentum > 0"),
        (lambda: optim.scale_by_muon(adjust_lr_fn="x"), "adjust_lr_fn must be"),  # type: ignore[arg-type]
        (lambda: optim.scale_by_muon(ns_coeffs=(1.0, 2.0)), r"ns_coeffs must be \(a, b, c\)"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
