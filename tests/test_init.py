"""Initializers: shapes, dtypes, and distributions equal to torch.nn.init's.

Statistical tolerances: with n samples, a sample mean is within 5 standard errors
(5 * sigma / sqrt(n)) with probability 1 - 6e-7, and the sample standard deviation within
5 * sigma / sqrt(2n); the draws are deterministic (fixed keys), so these never flake.

Moments alone pass a wrong distribution with the right mean and std (a normal in place of
a uniform), so every initializer with a torch.nn.init counterpart is also compared with a
large sample of torch's by the two-sample Kolmogorov-Smirnov test: the largest distance D
between the two empirical CDFs must stay below the critical value of significance
alpha = 1e-6, c(alpha) * sqrt((n + m) / (n m)) with c(alpha) = sqrt(-ln(alpha / 2) / 2)
= 2.69 (the asymptotic Kolmogorov distribution; n = m = 49,152 gives 0.017). Two samples
of one distribution exceed it with probability 1e-6, while a normal in place of a uniform
of the same std is at D = 0.057 (the distance of the two CDFs).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from helpers import ks_statistic

import lux_torch as lux
from lux_torch import init

KEY = lux.random.key(42)


def _check_moments(x: torch.Tensor, mean: float, std: float, samples: int = 1) -> None:
    n = x.numel()
    x64 = x.double()
    k = 5 * math.sqrt(samples)
    assert abs(x64.mean().item() - mean) < k * std / math.sqrt(n)
    assert abs(x64.std().item() - std) < k * std / math.sqrt(2 * n)


KS_ALPHA = 1e-6


def _ks_critical(n: int, m: int, alpha: float = KS_ALPHA) -> float:
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def _check_same_distribution(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    d, critical = ks_statistic(ours, theirs), _ks_critical(ours.numel(), theirs.numel())
    assert d < critical, f"Kolmogorov-Smirnov D = {d:.4g} >= {critical:.4g} (alpha {KS_ALPHA})"


def test_ks_statistic_and_critical_value():
    # D by hand: {0, 1} against {0.5, 2}: the CDFs differ by 1/2 at most
    assert ks_statistic(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 2.0])) == 0.5
    assert ks_statistic(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert ks_statistic(torch.arange(10.0), torch.arange(10.0).flip(0)) == 0.0
    # the tabulated alpha = 0.05 value, c = 1.358
    assert abs(_ks_critical(100, 100, 0.05) - 1.358 * math.sqrt(2 / 100)) < 1e-3
    # a normal in place of a uniform of the same std is far beyond the critical value
    n = 49_152
    u = init.uniform(KEY, n, low=-1.0, high=1.0)
    g = init.normal(lux.random.key(1), n, std=1 / math.sqrt(3))
    assert ks_statistic(u, g) > 2 * _ks_critical(n, n)


@pytest.mark.parametrize(
    "fn,kwargs,torch_fn",
    [
        (init.glorot_uniform, {}, torch.nn.init.xavier_uniform_),
        (
            init.glorot_uniform,
            {"gain": 0.5},
            functools.partial(torch.nn.init.xavier_uniform_, gain=0.5),
        ),
        (init.glorot_normal, {}, torch.nn.init.xavier_normal_),
        (
            init.glorot_normal,
            {"gain": 2.0},
            functools.partial(torch.nn.init.xavier_normal_, gain=2.0),
        ),
        (
            init.kaiming_uniform,
            {"a": math.sqrt(5)},
            functools.partial(torch.nn.init.kaiming_uniform_, a=math.sqrt(5)),
        ),
        (
            init.kaiming_normal,
            {"nonlinearity": "relu"},
            functools.partial(torch.nn.init.kaiming_normal_, nonlinearity="relu"),
        ),
        (
            init.kaiming_normal,
            {"mode": "fan_out"},
            functools.partial(torch.nn.init.kaiming_normal_, mode="fan_out"),
        ),
        (init.normal, {"std": 0.02}, functools.partial(torch.nn.init.normal_, std=0.02)),
        (
            init.uniform,
            {"low": -2.0, "high": 3.0},
            functools.partial(torch.nn.init.uniform_, a=-2.0, b=3.0),
        ),
        (init.kaiming_uniform, {}, torch.nn.init.kaiming_uniform_),
        (init.kaiming_normal, {}, torch.nn.init.kaiming_normal_),
        (
            init.kaiming_uniform,
            {"mode": "fan_out", "nonlinearity": "relu"},
            functools.partial(torch.nn.init.kaiming_uniform_, mode="fan_out", nonlinearity="relu"),
        ),
        (init.normal, {}, torch.nn.init.normal_),
        (init.uniform, {}, torch.nn.init.uniform_),
        (
            init.truncated_normal,
            {"std": 0.5, "a": -1.0, "b": 1.0},
            functools.partial(torch.nn.init.trunc_normal_, std=0.5, a=-1.0, b=1.0),
        ),
        (
            init.truncated_normal,
            {"mean": 1.0, "std": 2.0, "a": 0.0, "b": 1.5},
            functools.partial(torch.nn.init.trunc_normal_, mean=1.0, std=2.0, a=0.0, b=1.5),
        ),
        (init.orthogonal, {"gain": 2.0}, functools.partial(torch.nn.init.orthogonal_, gain=2.0)),
    ],
)
def test_distribution_matches_torch(fn, kwargs, torch_fn):
    shape = (256, 64, 3)
    ours = fn(KEY, *shape, **kwargs)
    theirs = torch_fn(torch.empty(shape), generator=torch.Generator().manual_seed(0))
    assert ours.shape == shape and ours.dtype == torch.float32
    # the same moments: two independent samples, so the standard errors add (sqrt(2) factor)
    _check_moments(ours, theirs.double().mean().item(), theirs.double().std().item(), samples=2)
    _check_same_distribution(ours, theirs)


def test_sparse_distribution_matches_torch():
    shape, sparsity = (256, 256), 0.25
    ours = init.sparse(KEY, *shape, sparsity=sparsity, std=0.5)
    theirs = torch.nn.init.sparse_(
        torch.empty(shape), sparsity, std=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal((ours == 0).sum(0), (theirs == 0).sum(0))
    _check_same_distribution(ours[ours != 0], theirs[theirs != 0])


@pytest.mark.parametrize(
    "fn,torch_fn,shape",
    [
        (init.zeros, torch.nn.init.zeros_, (3, 4)),
        (init.ones, torch.nn.init.ones_, (3, 4)),
        (init.identity, torch.nn.init.eye_, (3, 5)),
        (init.identity, torch.nn.init.dirac_, (4, 2, 3, 3)),
    ],
)
def test_deterministic_initializers_equal_torch(fn, torch_fn, shape):
    assert torch.equal(fn(KEY, *shape), torch_fn(torch.empty(shape)))


def test_uniform_bounds_are_exact_for_linear_default():
    w = init.kaiming_uniform(KEY, 512, 512, a=math.sqrt(5))
    bound = 1 / math.sqrt(512)
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.99 * bound
    _check_moments(w, 0.0, bound / math.sqrt(3))


def test_truncated_normal_respects_bounds():
    x = init.truncated_normal(KEY, 10000, mean=1.0, std=2.0, a=0.0, b=1.5)
    assert x.min() >= 0.0 and x.max() <= 1.5
    with pytest.raises(ValueError, match="a < b"):
        init.truncated_normal(KEY, 3, a=1.0, b=0.0)


@pytest.mark.parametrize("shape", [(8, 8), (4, 10), (10, 4), (6, 3, 3)])
def test_orthogonal(shape):
    w = init.orthogonal(KEY, *shape, gain=2.0)
    flat = w.reshape(shape[0], -1)
    rows, cols = flat.shape
    gram = flat @ flat.T if rows <= cols else flat.T @ flat
    assert torch.allclose(gram, 4.0 * torch.eye(min(rows, cols)), atol=1e-4)


def test_sparse_has_exact_zeros_per_column():
    w = init.sparse(KEY, 20, 7, sparsity=0.3, std=0.5)
    assert ((w == 0).sum(dim=0) == math.ceil(0.3 * 20)).all()
    with pytest.raises(ValueError, match="sparsity"):
        init.sparse(KEY, 4, 4, sparsity=1.5)


def test_identity_and_dirac():
    assert torch.equal(init.identity(KEY, 3, 4), torch.eye(3, 4))
    dirac = init.identity(KEY, 2, 2, 3, 3, gain=0.5)
    ref = torch.nn.init.dirac_(torch.empty(2, 2, 3, 3)) * 0.5
    assert torch.equal(dirac, ref)


def test_zeros_ones_dtype_and_device():
    assert init.zeros(KEY, 2, 3, dtype=torch.float64).dtype == torch.float64
    assert init.ones(KEY, 2, device="meta").is_meta
    with init.default_dtype(torch.float64):
        assert init.normal(KEY, 3).dtype == torch.float64
    assert init.normal(KEY, 3).dtype == torch.float32


def test_initializers_are_deterministic_and_pure():
    state = torch.get_rng_state()
    a = init.glorot_normal(KEY, 5, 5)
    assert torch.equal(a, init.glorot_normal(KEY, 5, 5))
    assert not torch.equal(a, init.glorot_normal(lux.random.key(43), 5, 5))
    assert torch.equal(state, torch.get_rng_state())


def test_fan_errors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.glorot_uniform(KEY, 5)
    with pytest.raises(ValueError, match="mode must be"):
        init.kaiming_normal(KEY, 3, 3, mode="fan_avg")  # type: ignore[arg-type]
