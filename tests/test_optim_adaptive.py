"""adabelief, novograd, lamb, lars: each against a reference of its published rule written
here (from the papers and optax's implementation), plus the properties every optimizer has."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from optim_checks import (
    STEPS,
    Make,
    assert_differentiable,
    grad_at,
    grads_at,
    max_abs_diff,
    params,
    property_tests,
    run,
)

from lux_torch import optim
from lux_torch.tree import leaves, map, paths

DTYPES = [torch.float64, torch.float32]
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
Reference = Callable[[list[torch.Tensor], list[str], torch.dtype], list[torch.Tensor]]


def _ps(dtype: torch.dtype) -> dict[str, Any]:
    """The shared parameters plus a zero-initialised bias (a zero norm for trust ratios)."""
    return {**params(dtype), "head": {"bias": torch.zeros(3, dtype=dtype)}}


def _is_matrix(tree: Any) -> Any:
    return map(lambda p: p.ndim > 1, tree)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((x * x).sum())


def adabelief_reference(
    lr: float, b1: float, b2: float, eps: float, eps_root: float, wd: float, nesterov: bool
) -> Reference:
    """Algorithm 2 of Zhuang et al. (2020), with optax's eps placement and decoupled decay."""

    def reference(
        ps: list[torch.Tensor], names: list[str], dtype: torch.dtype
    ) -> list[torch.Tensor]:
        m = [torch.zeros_like(p) for p in ps]
        s = [torch.zeros_like(p) for p in ps]
        for k in range(STEPS):
            t = k + 1
            for i, p in enumerate(ps):
                g = grad_at(k, p)
                m[i] = b1 * m[i] + (1 - b1) * g
                s[i] = b2 * s[i] + (1 - b2) * (g - m[i]) ** 2 + eps_root
                if nesterov:
                    m_hat = b1 * m[i] / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
                else:
                    m_hat = m[i] / (1 - b1**t)
                s_hat = s[i] / (1 - b2**t)
                decay = wd * p if names[i].endswith("weight") else 0.0 * p
                ps[i] = p - lr * (m_hat / (torch.sqrt(s_hat) + eps) + decay)
        return ps

    return reference


def novograd_reference(lr: float, b1: float, b2: float, eps: float, wd: float) -> Reference:
    """Algorithm 1 of Ginsburg et al. (2019): layer-wise second moments, decay in the momentum."""

    def reference(
        ps: list[torch.Tensor], names: list[str], dtype: torch.dtype
    ) -> list[torch.Tensor]:
        m = [torch.zeros_like(p) for p in ps]
        v = [torch.zeros((), dtype=dtype) for p in ps]
        for k in range(STEPS):
            for i, p in enumerate(ps):
                g = grad_at(k, p)
                v[i] = _norm(g) ** 2 if k == 0 else b2 * v[i] + (1 - b2) * _norm(g) ** 2
                m[i] = b1 * m[i] + (g / (torch.sqrt(v[i]) + eps) + wd * p)
                ps[i] = p - lr * m[i]
        return ps

    return reference


def lamb_reference(lr: float, b1: float, b2: float, eps: float, wd: float) -> Reference:
    """Algorithm 2 of You et al. (2019) with phi = identity; decay on matrices only."""

    def reference(
        ps: list[torch.Tensor], names: list[str], dtype: torch.dtype
    ) -> list[torch.Tensor]:
        m = [torch.zeros_like(p) for p in ps]
        v = [torch.zeros_like(p) for p in ps]
        for k in range(STEPS):
            t = k + 1
            for i, p in enumerate(ps):
                g = grad_at(k, p)
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                r = (m[i] / (1 - b1**t)) / (torch.sqrt(v[i] / (1 - b2**t)) + eps)
                if p.ndim > 1:
                    r = r + wd * p
                p_norm, r_norm = float(_norm(p)), float(_norm(r))
                ratio = 1.0 if p_norm == 0 or r_norm == 0 else p_norm / r_norm
                ps[i] = p - lr * ratio * r
        return ps

    return reference


def lars_reference(lr: float, wd: float, eta: float, momentum: float, nesterov: bool) -> Reference:
    """Algorithm 1 of You et al. (2017) with optax's trust ratio ||p|| / ||g + wd p||;
    no decay and no trust ratio for the vectors (biases)."""

    def reference(
        ps: list[torch.Tensor], names: list[str], dtype: torch.dtype
    ) -> list[torch.Tensor]:
        buf = [torch.zeros_like(p) for p in ps]
        for k in range(STEPS):
            for i, p in enumerate(ps):
                d = grad_at(k, p)
                if p.ndim > 1:
                    d = d + wd * p
                    p_norm, d_norm = float(_norm(p)), float(_norm(d))
                    d = d * (1.0 if p_norm == 0 or d_norm == 0 else eta * p_norm / d_norm)
                step = lr * (1 + 0.5 * math.sin(k))  # the schedule of the case
                buf[i] = momentum * buf[i] - step * d
                ps[i] = p + (buf[i] * momentum - step * d if nesterov else buf[i])
        return ps

    return reference


def _lars_lr(count: Any) -> Any:
    return 0.5 * (1 + 0.5 * torch.sin(torch.as_tensor(count, dtype=torch.float64)))


CASES: list[tuple[str, Make, Reference]] = [
    (
        "adabelief",
        lambda: optim.adabelief(0.01),
        adabelief_reference(0.01, 0.9, 0.999, 1e-16, 1e-16, 0.0, False),
    ),
    (
        "adabelief-all",
        lambda: optim.adabelief(
            0.02,
            (0.8, 0.99),
            1e-8,
            1e-10,
            weight_decay=0.1,
            weight_decay_mask=lambda ps: map(lambda p: p.ndim > 1, ps),
            nesterov=True,
        ),
        adabelief_reference(0.02, 0.8, 0.99, 1e-8, 1e-10, 0.1, True),
    ),
    ("novograd", lambda: optim.novograd(0.01), novograd_reference(0.01, 0.9, 0.25, 1e-6, 0.0)),
    (
        "novograd-decay",
        lambda: optim.novograd(0.01, (0.8, 0.5), 1e-4, weight_decay=0.1),
        novograd_reference(0.01, 0.8, 0.5, 1e-4, 0.1),
    ),
    (
        "lamb-masked-decay",
        lambda: optim.lamb(0.01, (0.8, 0.99), 1e-6, weight_decay=0.1, mask=_is_matrix),
        lamb_reference(0.01, 0.8, 0.99, 1e-6, 0.1),
    ),
    (
        "lars-masked-schedule",
        lambda: optim.lars(
            _lars_lr, 0.1, _is_matrix, 0.01, trust_ratio_mask=_is_matrix, momentum=0.8
        ),
        lars_reference(0.5, 0.1, 0.01, 0.8, False),
    ),
    (
        "lars-nesterov",
        lambda: optim.lars(
            _lars_lr,
            0.1,
            _is_matrix,
            0.01,
            trust_ratio_mask=_is_matrix,
            momentum=0.8,
            nesterov=True,
        ),
        lars_reference(0.5, 0.1, 0.01, 0.8, True),
    ),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "make", "reference"), CASES, ids=IDS)
def test_matches_the_published_rule(
    name: str, make: Make, reference: Reference, dtype: torch.dtype
) -> None:
    ps = _ps(dtype)
    ours, _ = run(make(), ps)
    expected = reference([p.clone() for p in leaves(ps)], paths(ps), dtype)
    assert max_abs_diff(ours, expected) < TOLERANCE[dtype]
    assert max_abs_diff(ours, leaves(ps)) > 1e-2  # it moved


def test_trust_ratio_is_one_for_zero_norms_and_scaled_otherwise() -> None:
    opt = optim.scale_by_trust_ratio(min_norm=0.0, trust_coefficient=2.0, eps=0.5)
    ps = {"w": torch.tensor([3.0, 4.0]), "z": torch.zeros(2), "u": torch.ones(2)}
    grads = {"w": torch.tensor([0.0, 1.0]), "z": torch.ones(2), "u": torch.zeros(2)}
    updates, state = opt.update(grads, opt.init(ps), ps)
    assert state == ()
    torch.testing.assert_close(updates["w"], torch.tensor([0.0, 2.0 * 5.0 / 1.5]))
    torch.testing.assert_close(updates["z"], grads["z"])  # ||p|| = 0: ratio 1
    torch.testing.assert_close(updates["u"], grads["u"])
    clipped = optim.scale_by_trust_ratio(min_norm=10.0)
    updates, _ = clipped.update(grads, (), ps)
    torch.testing.assert_close(updates["w"], grads["w"])  # both norms raised to 10


def test_novograd_starts_its_per_leaf_second_moment_at_the_first_squared_norm() -> None:
    ps = params(torch.float64)
    state = run(optim.novograd(0.01), ps, steps=1)[1]
    for v, g in zip(leaves(state[0]["nu"]), leaves(grads_at(0, ps)), strict=True):
        assert v.shape == ()
        torch.testing.assert_close(v, (g * g).sum())


ALL: list[Make] = [case[1] for case in CASES]


(
    test_pure,
    test_ensemble_vmaps,
    test_refuses_misshaped_gradients,
    test_compiles_fullgraph,
) = property_tests(ALL, IDS)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.adabelief(-1.0), "adabelief: lr must be >= 0"),
        (lambda: optim.adabelief(betas=(1.0, 0.9)), r"scale_by_belief: betas\[0\]"),
        (lambda: optim.adabelief(betas=(0.9, 1.0)), r"scale_by_belief: betas\[1\]"),
        (lambda: optim.adabelief(eps=-1.0), "scale_by_belief: eps must be >= 0"),
        (lambda: optim.adabelief(eps_root=-1.0), "scale_by_belief: eps_root must be >= 0"),
        (lambda: optim.adabelief(weight_decay=-1.0), "adabelief: weight_decay must be >= 0"),
        (lambda: optim.novograd(-1.0), "novograd: lr must be >= 0"),
        (lambda: optim.novograd(betas=(0.9, 1.0)), r"scale_by_novograd: betas\[1\]"),
        (lambda: optim.novograd(eps=-1.0), "scale_by_novograd: eps must be >= 0"),
        (lambda: optim.novograd(eps_root=-1.0), "scale_by_novograd: eps_root must be >= 0"),
        (lambda: optim.novograd(weight_decay=-1.0), "scale_by_novograd: weight_decay must be"),
        (lambda: optim.lamb(-1.0), "lamb: lr must be >= 0"),
        (lambda: optim.lamb(weight_decay=-1.0), "lamb: weight_decay must be >= 0"),
        (lambda: optim.lars(-1.0), "lars: lr must be >= 0"),
        (lambda: optim.lars(0.1, weight_decay=-1.0), "lars: weight_decay must be >= 0"),
        (lambda: optim.lars(0.1, trust_coefficient=-1.0), "trust_coefficient must be >= 0"),
        (lambda: optim.lars(0.1, eps=-1.0), "scale_by_trust_ratio: eps must be >= 0"),
        (lambda: optim.lars(0.1, momentum=1.0), "trace: momentum must be in"),
        (lambda: optim.scale_by_trust_ratio(min_norm=-1.0), "min_norm must be >= 0"),
        (
            lambda: optim.novograd().update(
                grads_at(0, params(torch.float32)), optim.adam().init(params(torch.float32))
            ),
            # the chain sees adam's 3 states against its 2 members first
            r"optim\.chain: the state does not fit this transformation",
        ),
        (
            lambda: optim.scale_by_belief().update(
                grads_at(0, params(torch.float32)),
                optim.scale_by_lion().init(params(torch.float32)),
            ),
            r"scale_by_belief: the state must be a dict with keys \['count', 'mu', 'nu'\]",
        ),
        (
            lambda: optim.novograd(weight_decay=0.1).update(
                grads_at(0, params(torch.float32)),
                optim.novograd(weight_decay=0.1).init(params(torch.float32)),
            ),
            "scale_by_novograd: update needs ps",
        ),
        (
            lambda: optim.scale_by_trust_ratio().update(grads_at(0, params(torch.float32)), ()),
            "scale_by_trust_ratio: update needs ps",
        ),
    ],
)
def test_bad_arguments_are_refused(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_novograd_refuses_misshaped_parameters() -> None:
    ps = params(torch.float32)
    opt = optim.novograd(weight_decay=0.1)
    state = opt.init(ps)
    ps["layer_1"]["bias"] = torch.ones(1)
    with pytest.raises(ValueError, match=r"grads 'layer_1.bias' has shape \(5,\), but the param"):
        opt.update(grads_at(0, params(torch.float32)), state, ps)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_update_is_differentiable(make: Make) -> None:
    assert_differentiable(make)
