"""Tests for lux_torch.random: Philox4x32-10 counter-based randomness in tensor ops.

Statistical tests use fixed keys, so they are deterministic; thresholds are chosen so a
correct generator would fail them with probability about 1e-4 (chi-square, KS) or
less (5-sigma bounds) for a random key.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from philox_reference import (
    M0,
    M1,
    MASK32,
    TAG_FOLD,
    TAG_SPLIT,
    ref_keep_mask,
    ref_philox,
    ref_words,
)

import lux_torch.random as lr

Z_1E4 = 3.719  # one-sided standard normal quantile for p = 1e-4


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def chi2_critical(df: int, z: float = Z_1E4) -> float:
    """Upper chi-square quantile (Wilson-Hilferty approximation), no scipy needed."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def chi2_stat(counts: torch.Tensor, expected: float | torch.Tensor) -> float:
    c = counts.to(torch.float64)
    return float(((c - expected) ** 2 / expected).sum())


def ks_critical(n: int, alpha: float = 1e-4) -> float:
    return math.sqrt(-0.5 * math.log(alpha / 2.0)) / math.sqrt(n)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten().to(torch.float64)
    b = b.flatten().to(torch.float64)
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


def everything(k: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    """One call of every public sampler (used by several tests)."""
    ks = lr.split(k, 9)
    mask, _ = lr.dropout_mask(ks[6], (5, 3), 0.3)
    return [
        lr.bits(ks[0], (3, 5)),
        lr.uniform(ks[1], (2, 7)),
        lr.uniform(ks[1], (4,), dtype=torch.float16),
        lr.uniform(ks[1], (4,), dtype=torch.float64),
        lr.normal(ks[2], (9,)),
        lr.bernoulli(ks[3], 0.3, (11,)),
        lr.randint(ks[4], (6,), -3, 12),
        lr.permutation(ks[5], 10),
        mask,
        lr.dropout(ks[7], x, 0.5),
        lr.fold_in(ks[8], 12345),
        lr.split(ks[8], 3),
    ]


# ---------------------------------------------------------------------------
# the block function
# ---------------------------------------------------------------------------

KAT = [  # Random123 kat_vectors, philox4x32_10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_known_answer_vectors(counter, key, expected):
    assert lr.philox4x32(counter, key).tolist() == list(expected)
    assert lr.philox4x32(torch.tensor(counter), torch.tensor(key)).tolist() == list(expected)
    assert ref_philox(counter, key) == list(expected)  # the test's own reference agrees


def test_known_answer_vectors_batched():
    counters = torch.tensor([c for c, _, _ in KAT])
    keys = torch.tensor([k for _, k, _ in KAT])
    out = lr.philox4x32(counters, keys)
    assert out.shape == (3, 4)
    assert out.tolist() == [list(e) for _, _, e in KAT]


def test_philox_matches_reference_on_random_inputs():
    counters = lr.bits(lr.key(99), (64, 4))
    keys = lr.bits(lr.key(98), (64, 2))
    counters[0] = torch.tensor([0, MASK32, 0, MASK32])
    keys[0] = torch.tensor([MASK32, 0])
    out = lr.philox4x32(counters, keys)
    for c, k, o in zip(counters.tolist(), keys.tolist(), out.tolist(), strict=True):
        assert o == ref_philox(c, k)
    # other round counts
    out7 = lr.philox4x32(counters[:4], keys[:4], rounds=7)
    for c, k, o in zip(counters[:4].tolist(), keys[:4].tolist(), out7.tolist(), strict=True):
        assert o == ref_philox(c, k, rounds=7)


def tensor_path(fn):
    """``fn`` run on torch's tensor path: under ``vmap`` (a batch of one key), which the host
    paths (numpy, Python integers) never see."""

    def run(k, *args):
        return torch.func.vmap(lambda kk: fn(kk, *args))(k.unsqueeze(0))[0]

    return run


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, MASK32), b=st.integers(0, MASK32))
def test_one_round_multiplies_exactly_on_every_path(a, b):
    # One round from (a, 0, b, 0) under the zero key gives the 32x32->64-bit products'
    # halves: [hi(M1 b), lo(M1 b), hi(M0 a), lo(M0 a)].
    want = [(M1 * b) >> 32, (M1 * b) & MASK32, (M0 * a) >> 32, (M0 * a) & MASK32]
    zero = torch.zeros(2, dtype=torch.int64)
    counter = torch.tensor([a, 0, b, 0])
    assert lr.philox4x32((a, 0, b, 0), (0, 0), rounds=1).tolist() == want  # Python ints
    assert lr.philox4x32(counter.expand(9, 4), zero, rounds=1)[0].tolist() == want  # numpy
    tensor = tensor_path(lambda k, c: lr.philox4x32(c, k, rounds=1))
    assert tensor(zero, counter).tolist() == want


@pytest.mark.parametrize("rounds", [1, 64, 65, 100])
def test_any_number_of_rounds_on_every_path(rounds):
    k = lr.key(0xABCDEF0123)
    counters = torch.tensor([[i, 7, MASK32 - i, 3] for i in range(20)])
    want = [ref_philox(c, k.tolist(), rounds) for c in counters.tolist()]
    assert lr.philox4x32(counters, k, rounds=rounds).tolist() == want  # numpy
    assert lr.philox4x32(counters[0].tolist(), k, rounds=rounds).tolist() == want[0]  # ints
    tensor = tensor_path(lambda kk, c: lr.philox4x32(c, kk, rounds=rounds))
    assert tensor(k, counters).tolist() == want


@pytest.mark.parametrize("tag", [0, TAG_SPLIT, MASK32])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 1001])
def test_every_path_matches_the_reference(n, tag):
    """Python integers (a few blocks), numpy (more) and torch ops (vmap) give the reference's
    blocks, through the public functions."""
    k = lr.key(0x0123456789ABCDEF)
    kw = k.tolist()
    ref = torch.tensor([ref_philox((i, 0, tag, 0), kw) for i in range(n)])
    counters = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.int64)] * 2, -1)
    counters[:, 2] = tag
    assert torch.equal(lr.philox4x32(counters, k), ref)
    assert torch.equal(tensor_path(lambda kk, c: lr.philox4x32(c, kk))(k, counters), ref)
    if n <= 9:
        for i in range(n):
            assert lr.philox4x32((i, 0, tag, 0), k).tolist() == ref[i].tolist()
    want = {0: ref.flatten(), TAG_SPLIT: ref[:, :2]}.get(tag)
    if want is not None:
        fn = (lambda kk: lr.bits(kk, 4 * n)) if tag == 0 else (lambda kk: lr.split(kk, n))
        assert torch.equal(fn(k), want)
        assert torch.equal(tensor_path(fn)(k), want)
        assert fn(k.to("meta")).shape == want.shape


def test_paths_agree_on_batched_keys():
    keys = lr.split(lr.key(5), 3)
    fns = [
        lambda kk: lr.bits(kk, (4, 3)),
        lambda kk: lr.bits(kk, 999),
        lambda kk: lr.split(kk, 2),
        lambda kk: lr.split(kk, 40),
        lambda kk: lr.fold_in(kk, 77),
        lambda kk: lr.dropout_mask(kk, 100, 0.3)[0],
    ]
    for fn in fns:
        host = fn(keys)
        assert torch.equal(host, torch.func.vmap(fn)(keys))
        for i in range(3):
            assert torch.equal(host[i], fn(keys[i]))
    assert lr.bits(keys, 4).tolist() == [ref_words(k, 1) for k in keys.tolist()]


@pytest.mark.parametrize("n", [1, 7, 64, 4096, 5000])
def test_dropout_lanes_match_the_reference(n):
    k = lr.key(0xFEEDFACE)
    t = round(0.7 * 65536)
    want = torch.tensor(ref_keep_mask(k.tolist(), n, t))
    assert torch.equal(lr.dropout_mask(k, n, 0.3)[0], want)
    assert torch.equal(tensor_path(lambda kk: lr.dropout_mask(kk, n, 0.3)[0])(k), want)


def test_stream_layout_and_domain_separation():
    k = lr.key(31337)
    kw = k.tolist()
    words = lr.bits(k, 40)
    assert words.tolist() == ref_words(kw, 10)
    children = lr.split(k, 5)
    assert children.tolist() == [ref_philox((i, 0, TAG_SPLIT, 0), kw)[:2] for i in range(5)]
    d = 0x1234_5678_9ABC_DEF0
    assert lr.fold_in(k, d).tolist() == ref_philox((d & MASK32, d >> 32, TAG_FOLD, 0), kw)[:2]
    # data, split and fold_in streams never coincide
    data_pairs = {tuple(p) for p in words.reshape(-1, 2).tolist()}
    split_pairs = {tuple(p) for p in lr.split(k, 64).tolist()}
    fold_pairs = {tuple(lr.fold_in(k, i).tolist()) for i in range(64)}
    assert not data_pairs & split_pairs
    assert not data_pairs & fold_pairs
    assert not split_pairs & fold_pairs
    assert len(split_pairs) == 64 and len(fold_pairs) == 64


# ---------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------


def test_key_layout():
    assert lr.key(0).tolist() == [0, 0]
    assert lr.key(42).tolist() == [0, 42]
    assert lr.key((7 << 32) | 5).tolist() == [7, 5]
    assert lr.key(-1).tolist() == [MASK32, MASK32]
    assert torch.equal(lr.key(2**64 + 3), lr.key(3))
    assert torch.equal(lr.key(np.int64(9)), lr.key(9))
    k = lr.key(1)
    assert k.dtype == torch.int64 and k.shape == (2,) and k.device.type == "cpu"
    assert lr.key(3, device="meta").device.type == "meta"


@pytest.mark.parametrize("bad", [1.5, "3", True, None, torch.tensor(3)])
def test_key_rejects_non_int(bad):
    with pytest.raises(TypeError, match=r"lux_torch\.random\.key"):
        lr.key(bad)


def test_split_shapes_and_distinctness():
    k = lr.key(0)
    ks = lr.split(k)
    assert ks.shape == (2, 2) and ks.dtype == torch.int64
    many = lr.split(k, 1000)
    assert len({tuple(v) for v in many.tolist()}) == 1000
    assert ((many >= 0) & (many <= MASK32)).all()
    assert lr.split(k, 0).shape == (0, 2)
    assert torch.equal(lr.split(k, 1000)[:2], ks)  # prefix property
    assert lr.split(many[:3], 4).shape == (3, 4, 2)


def test_fold_in_int_and_tensor_data():
    k = lr.key(11)
    a = lr.fold_in(k, 1)
    assert a.shape == (2,)
    assert not torch.equal(a, lr.fold_in(k, 2))
    data = torch.tensor([[1, 2], [3, -4]])
    batch = lr.fold_in(k, data)
    assert batch.shape == (2, 2, 2)
    assert torch.equal(batch[0, 0], a)
    assert torch.equal(batch[1, 1], lr.fold_in(k, -4))
    assert torch.equal(lr.fold_in(k, -4), lr.fold_in(k, 2**64 - 4))
    assert torch.equal(lr.fold_in(k, torch.tensor(7, dtype=torch.int32)), lr.fold_in(k, 7))
    # high and low halves of 64-bit data both matter
    assert not torch.equal(lr.fold_in(k, 1 << 32), lr.fold_in(k, 1))


# ---------------------------------------------------------------------------
# shapes, determinism, purity
# ---------------------------------------------------------------------------


def test_shapes_and_dtypes():
    k = lr.key(3)
    assert lr.bits(k, 5).shape == (5,)
    assert lr.bits(k, (2, 3)).shape == (2, 3)
    assert lr.bits(k, torch.Size([4, 1, 2])).shape == (4, 1, 2)
    assert lr.bits(k, [3]).shape == (3,)
    assert lr.bits(k, ()).shape == ()
    assert lr.bits(k, (0, 3)).shape == (0, 3)
    assert lr.uniform(k, (2, 0)).shape == (2, 0)
    assert lr.normal(k, 0).shape == (0,)
    assert lr.bits(k, 3).dtype == torch.int64
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert lr.uniform(k, 3, dtype=dt).dtype == dt
        assert lr.normal(k, 3, dtype=dt).dtype == dt
    assert lr.randint(k, 3, 0, 5, dtype=torch.int32).dtype == torch.int32
    assert lr.bernoulli(k, 0.5, 3).dtype == torch.bool
    kb = lr.split(k, 4)
    assert lr.uniform(kb, (2, 3)).shape == (4, 2, 3)
    assert lr.bernoulli(kb, torch.full((3,), 0.5)).shape == (4, 3)


def test_determinism_and_key_sensitivity():
    x = torch.ones(4, 6)
    a = everything(lr.key(7), x)
    b = everything(lr.key(7), x)
    c = everything(lr.key(8), x)
    for u, v, w in zip(a, b, c, strict=True):
        assert torch.equal(u, v)
        assert not torch.equal(u, w)


def test_prefix_property():
    k = lr.key(12)
    assert torch.equal(lr.bits(k, 103)[:37], lr.bits(k, 37))
    assert torch.equal(lr.uniform(k, 50)[:9], lr.uniform(k, 9))
    assert torch.equal(
        lr.uniform(k, 50, dtype=torch.float64)[:9], lr.uniform(k, 9, dtype=torch.float64)
    )
    assert torch.equal(lr.normal(k, 40)[:7], lr.normal(k, 7))
    assert torch.equal(lr.dropout_mask(k, 1000, 0.3)[0][:77], lr.dropout_mask(k, 77, 0.3)[0])
    assert torch.equal(lr.randint(k, 30, 0, 9)[:5], lr.randint(k, 5, 0, 9))
    assert torch.equal(lr.bits(k, (4, 5)).flatten(), lr.bits(k, 20))


def test_no_global_rng_state_touched():
    cpu_state = torch.get_rng_state()
    seed = torch.initial_seed()
    k = lr.key(5)
    x = torch.ones(3, 8)
    everything(k, x)
    torch.func.vmap(lambda kk: everything(kk, x))(lr.split(k, 2))
    lr.philox4x32((1, 2, 3, 4), (5, 6))
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.initial_seed() == seed


def test_device_argument():
    k = lr.key(4)
    assert torch.equal(lr.uniform(k, 5, device="cpu"), lr.uniform(k, 5))
    out = lr.uniform(k, (3, 2), device="meta")
    assert out.device.type == "meta" and out.shape == (3, 2)
    assert lr.bits(k.to("meta"), 4).device.type == "meta"


# ---------------------------------------------------------------------------
# floats
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "largest"),
    [
        (torch.float32, 1.0 - 2.0**-24),
        (torch.float16, 1.0 - 2.0**-11),
        (torch.bfloat16, 1.0 - 2.0**-8),
    ],
)
def test_uniform_worst_case_word_stays_below_one(dtype, largest):
    w = torch.tensor([MASK32, 0, 1 << 31], dtype=torch.int64)
    u = lr._words_to_uniform(w.clone(), dtype)
    assert u.dtype == dtype
    assert u[0].item() == largest < 1.0
    assert u[1].item() == 0.0
    assert u[2].item() == 0.5
    # without the clamp float16/bfloat16 rounding would give exactly 1.0
    assert ((MASK32 >> 8) * 2.0**-24) < 1.0
    assert torch.tensor((MASK32 >> 8) * 2.0**-24).to(torch.float16).item() == 1.0


def test_uniform_float64_worst_case_and_53_bits():
    w = torch.tensor([[MASK32, MASK32], [0, 0]], dtype=torch.int64)
    u = lr._words_to_uniform(w, torch.float64)
    assert u.tolist() == [1.0 - 2.0**-53, 0.0]
    v = lr.uniform(lr.key(0), 4096, dtype=torch.float64)
    scaled = v * 2.0**53
    assert torch.equal(scaled, scaled.round())
    assert (torch.remainder(scaled, 2.0**29) != 0).any()  # more than float32 resolution


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_uniform_custom_range_never_reaches_high(dtype):
    shape2 = (2,) if dtype == torch.float64 else ()
    w = torch.full((1, *shape2), MASK32, dtype=torch.int64)
    for low, high in [(0.0, 3.0), (-1.0, 1e-3), (-5.0, -2.0), (1.0, 1.0 + 2.0**-20)]:
        top = lr._words_to_uniform(w.clone(), dtype, low, high)
        assert top.item() < high
        assert top.dtype == dtype
    u = lr.uniform(lr.key(1), 20000, dtype=dtype, low=-2.0, high=3.0)
    assert u.min() >= -2.0 and u.max() < 3.0
    assert u.min() < -1.95 and u.max() > 2.95


def test_uniform_half_many_values_below_one():
    for dt in (torch.float16, torch.bfloat16):
        u = lr.uniform(lr.key(2), 1 << 16, dtype=dt)
        assert u.max() < 1.0 and u.min() >= 0.0


def test_uniform_statistics():
    n = 1 << 18
    u = lr.uniform(lr.key(123), n).to(torch.float64)
    assert ((u >= 0) & (u < 1)).all()
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.var().item() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
    counts = torch.bincount((u * 256).long(), minlength=256)
    assert chi2_stat(counts, n / 256) < chi2_critical(255)
    s, _ = torch.sort(u)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    d = torch.maximum(grid - s, s - (grid - 1 / n)).max().item()
    assert d < ks_critical(n)


def test_bits_bit_positions_and_bytes():
    n = 1 << 18
    w = lr.bits(lr.key(2024), n)
    assert w.min() >= 0 and w.max() <= MASK32
    shifts = torch.arange(32)
    freq = ((w[:, None] >> shifts) & 1).double().mean(0)
    assert ((freq - 0.5).abs() < 5 * 0.5 / math.sqrt(n)).all()
    for byte in range(4):
        counts = torch.bincount((w >> (8 * byte)) & 0xFF, minlength=256)
        assert chi2_stat(counts, n / 256) < chi2_critical(255)


def test_normal_statistics():
    n = 1 << 18
    z = lr.normal(lr.key(77), n).to(torch.float64)
    assert torch.isfinite(z).all()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    s, _ = torch.sort(z)
    cdf = 0.5 * (1 + torch.special.erf(s / math.sqrt(2)))
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert torch.maximum(grid - cdf, cdf - (grid - 1 / n)).max().item() < ks_critical(n)
    # the two Box-Muller outputs of a pair are uncorrelated
    assert abs(corr(z[0::2], z[1::2])) < 5 / math.sqrt(n / 2)


def test_normal_float64_and_mean_std():
    n = 1 << 16
    z = lr.normal(lr.key(78), n, dtype=torch.float64, mean=3.0, std=0.5)
    assert abs(z.mean().item() - 3.0) < 5 * 0.5 / math.sqrt(n)
    assert abs(z.std().item() - 0.5) < 5 * 0.5 * math.sqrt(1 / (2 * n)) * 1.5
    zh = lr.normal(lr.key(78), 1000, dtype=torch.bfloat16)
    assert torch.isfinite(zh).all() and zh.abs().max() > 1.0


# ---------------------------------------------------------------------------
# discrete samplers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.001])
def test_bernoulli_frequency(p):
    n = 1 << 18
    b = lr.bernoulli(lr.key(9), p, (n,))
    assert b.dtype == torch.bool
    assert abs(b.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_bernoulli_edge_probabilities_and_tensor_p():
    k = lr.key(10)
    assert not lr.bernoulli(k, 0.0, 5000).any()
    assert lr.bernoulli(k, 1.0, 5000).all()
    assert lr.bernoulli(k, 0.5).shape == ()
    p = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0])
    n = 1 << 14
    b = lr.bernoulli(k, p, (n, 5)).double()
    freq = b.mean(0)
    assert freq[0] == 0 and freq[4] == 1
    sigma = torch.sqrt(p * (1 - p) / n).double()
    assert ((freq - p).abs() <= 5 * sigma).all()
    # float p and tensor p agree bit for bit
    assert torch.equal(lr.bernoulli(k, 0.3, 999), lr.bernoulli(k, torch.full((999,), 0.3)))
    assert lr.bernoulli(k, torch.full((3, 1), 0.5), (3, 4)).shape == (3, 4)


def test_randint_all_values_and_chi_square():
    n = 1 << 17
    v = lr.randint(lr.key(21), n, -3, 7)
    assert v.min() == -3 and v.max() == 6
    counts = torch.bincount(v + 3, minlength=10)
    assert (counts > 0).all()
    assert chi2_stat(counts, n / 10) < chi2_critical(9)
    pow2 = lr.randint(lr.key(21), n, 0, 8)
    counts = torch.bincount(pow2, minlength=8)
    assert chi2_stat(counts, n / 8) < chi2_critical(7)


def test_randint_large_range_and_dtypes():
    n = 1 << 16
    v = lr.randint(lr.key(22), n, 0, 2**31)
    assert v.min() >= 0 and v.max() < 2**31
    assert abs(v.double().mean().item() / 2**31 - 0.5) < 5 * math.sqrt(1 / 12 / n)
    big = lr.randint(lr.key(22), 1000, 2**40, 2**40 + 5)
    assert big.min() >= 2**40 and big.max() < 2**40 + 5
    i8 = lr.randint(lr.key(23), 1000, -128, 128, dtype=torch.int8)
    assert i8.dtype == torch.int8 and i8.min() < -100 and i8.max() > 100


def test_permutation_is_uniform():
    n, trials = 6, 3000
    keys = lr.split(lr.key(31), trials)
    perms = lr.permutation(keys, n)
    assert perms.shape == (trials, n)
    assert torch.equal(perms.sort(-1).values, torch.arange(n).expand(trials, n))
    # counts[i, j] = how often value j lands at position i
    counts = torch.zeros(n, n, dtype=torch.int64)
    counts.index_put_((torch.arange(n).expand(trials, n), perms), torch.tensor(1), accumulate=True)
    assert chi2_stat(counts, trials / n) < chi2_critical((n - 1) ** 2)
    # all 720 permutations occur over 3000 trials with overwhelming probability
    assert len({tuple(p) for p in perms.tolist()}) > 600


def test_permutation_of_tensor_and_edge_cases():
    k = lr.key(32)
    x = torch.arange(20).reshape(10, 2)
    px = lr.permutation(k, x)
    assert torch.equal(px, x[lr.permutation(k, 10)])
    assert not torch.equal(px, x)
    assert lr.permutation(k, 0).shape == (0,)
    assert lr.permutation(k, 1).tolist() == [0]
    big = lr.permutation(k, 10000)
    assert torch.equal(big.sort().values, torch.arange(10000))


# ---------------------------------------------------------------------------
# independence between keys
# ---------------------------------------------------------------------------


def test_streams_of_related_keys_are_uncorrelated():
    n = 1 << 16
    bound = 5 / math.sqrt(n)
    k = lr.key(0)
    children = lr.split(k, 2)
    pairs = [
        (lr.key(0), lr.key(1)),  # adjacent seeds
        (lr.key(0), lr.key(1 << 32)),  # differ only in the high word
        (children[0], children[1]),
        (k, children[0]),
        (lr.fold_in(k, 0), lr.fold_in(k, 1)),
        (k, lr.fold_in(k, 0)),
    ]
    for a, b in pairs:
        ua, ub = lr.uniform(a, n), lr.uniform(b, n)
        assert abs(corr(ua, ub)) < bound
        assert abs(corr(ua[1:], ub[:-1])) < bound
        # avalanche: xor of the two word streams has every bit set half of the time
        x = lr.bits(a, n) ^ lr.bits(b, n)
        freq = ((x[:, None] >> torch.arange(32)) & 1).double().mean(0)
        assert ((freq - 0.5).abs() < 5 * 0.5 / math.sqrt(n)).all()


def test_adjacent_elements_uncorrelated():
    n = 1 << 18
    u = lr.uniform(lr.key(41), n)
    for lag in (1, 2, 3, 4, 5, 8):
        assert abs(corr(u[:-lag], u[lag:])) < 5 / math.sqrt(n)


# ---------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9, 0.3])
def test_dropout_mask_rate_and_scale(p):
    shape = (512, 256)
    n = shape[0] * shape[1]
    mask, scale = lr.dropout_mask(lr.key(51), shape, p)
    assert mask.shape == shape and mask.dtype == torch.bool
    t = round((1 - p) * 65536)
    keep = t / 65536
    assert abs(keep - (1 - p)) <= 2**-17
    assert scale == 65536 / t
    assert keep * scale == 1.0  # unbiased w.r.t. the quantized keep probability
    assert abs(mask.double().mean().item() - keep) < 5 * math.sqrt(keep * (1 - keep) / n)
    # the two 16-bit lanes of a word and neighbouring elements are independent
    m = mask.flatten().double()
    assert abs(corr(m[0::2], m[1::2])) < 5 / math.sqrt(n / 2)
    assert abs(corr(m[:-8], m[8:])) < 5 / math.sqrt(n)


def test_dropout_values():
    k = lr.key(52)
    x = lr.normal(lr.key(53), (64, 48))
    y = lr.dropout(k, x, 0.25)
    mask, scale = lr.dropout_mask(k, x.shape, 0.25)
    assert torch.equal(y, x * mask * scale)
    assert torch.equal(y == 0, ~mask | (x == 0))
    assert lr.dropout(k, x, 0.0) is x
    assert torch.equal(lr.dropout(k, x, 1.0), torch.zeros_like(x))
    m0, s0 = lr.dropout_mask(k, 10, 0.0)
    m1, s1 = lr.dropout_mask(k, 10, 1.0)
    assert m0.all() and s0 == 1.0 and not m1.any() and s1 == 0.0
    # tiny p still drops with probability >= 2**-16; near-1 p keeps with >= 2**-16
    assert lr.dropout_mask(k, 4, 1e-9)[1] == 65536 / 65535
    assert lr.dropout_mask(k, 4, 1 - 1e-9)[1] == 65536.0
    xh = x.to(torch.bfloat16)
    assert lr.dropout(k, xh, 0.5).dtype == torch.bfloat16
    assert lr.dropout(lr.split(k, 3), x, 0.5).shape == (3, 64, 48)


def test_dropout_is_unbiased_on_average():
    x = torch.full((256, 1024), 2.0)
    y = lr.dropout(lr.key(54), x, 0.3)
    n = x.numel()
    keep = round(0.7 * 65536) / 65536
    sd = 2.0 * math.sqrt((1 - keep) / keep / n)
    assert abs(y.double().mean().item() - 2.0) < 5 * sd


# ---------------------------------------------------------------------------
# transforms: vmap, compile, devices
# ---------------------------------------------------------------------------


def test_vmap_over_split_keys_gives_independent_streams():
    keys = lr.split(lr.key(61), 8)
    x = torch.ones(5, 7)
    fns = {
        "bits": lambda kk: lr.bits(kk, (3, 4)),
        "uniform": lambda kk: lr.uniform(kk, 9),
        "uniform16": lambda kk: lr.uniform(kk, 9, dtype=torch.float16),
        "normal": lambda kk: lr.normal(kk, 9),
        "bernoulli": lambda kk: lr.bernoulli(kk, 0.5, 40),
        "randint": lambda kk: lr.randint(kk, 9, 0, 1000),
        "permutation": lambda kk: lr.permutation(kk, 12),
        "dropout": lambda kk: lr.dropout(kk, x, 0.5),
        "split": lambda kk: lr.split(kk, 3),
        "fold_in": lambda kk: lr.fold_in(kk, 99),
    }
    for name, fn in fns.items():
        out = torch.func.vmap(fn)(keys)
        assert out.shape[0] == 8, name
        rows = [tuple(o.flatten().tolist()) for o in out]
        assert len(set(rows)) == 8, name
        for i in range(8):
            assert torch.equal(out[i], fn(keys[i])), name
        # explicit batched keys agree with vmap
        if name not in ("dropout",):
            assert torch.equal(fn(keys), out), name


def _check_compiled_matches_eager(fn, *args):
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    got = compiled(*args)
    want = fn(*args)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


def test_compile_bits_uniform_bernoulli():
    def f(k):
        return (
            lr.bits(k, (3, 5)),
            lr.uniform(k, (7,)),
            lr.uniform(k, (7,), dtype=torch.float16, low=-1.0, high=2.0),
            lr.bernoulli(k, 0.3, (19,)),
        )

    _check_compiled_matches_eager(f, lr.key(71))


def test_compile_dropout_randint_split_fold_in():
    x = lr.normal(lr.key(70), (5, 12))

    def f(k, x):
        return (
            lr.dropout(k, x, 0.5),
            lr.randint(k, (9,), -5, 11),
            lr.split(k, 3),
            lr.fold_in(k, 1234),
        )

    _check_compiled_matches_eager(f, lr.key(72), x)


def test_compile_normal_and_permutation():
    # Box-Muller uses log1p/sqrt/cos/sin: evaluated in float64 and rounded to float32, so
    # eager and compiled CPU results agree bit for bit (the bits and uniforms are exact
    # everywhere; only transcendental last-ulp rounding could ever differ).
    def g(k):
        return lr.normal(k, (33,)), lr.permutation(k, 17), lr.uniform(k, 5, dtype=torch.float64)

    _check_compiled_matches_eager(g, lr.key(73))


def test_compile_dynamic_with_symbolic_probability():
    # dynamic=True turns the float arguments into symbols: p must stay a graph input
    # (not be baked in at trace time) and the shapes must be symbolic.
    torch._dynamo.reset()

    def f(k, x, p):
        return lr.dropout(k, x, p), lr.bernoulli(k, p, x.shape)

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    k = lr.key(74)
    outs = []
    for rows, p in [(40, 0.3), (40, 0.6)]:
        x = torch.ones(rows, 8)
        got, want = compiled(k, x, p), f(k, x, p)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b), (rows, p)
        outs.append(got)
    assert not torch.equal(outs[0][1], outs[1][1])  # p really changed the samples
    assert not torch.equal(outs[0][0] == 0, outs[1][0] == 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    k = lr.key(80)
    x = lr.normal(lr.key(81), (33, 17))
    cpu = everything(k, x)
    gpu = everything(k.cuda(), x.cuda())
    for i, (a, b) in enumerate(zip(cpu, gpu, strict=True)):
        assert b.device.type == "cuda"
        if i == 4:  # normal: transcendental functions may differ in the last ulp
            torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(b.cpu(), a), i
    big_cpu = lr.dropout_mask(k, (300, 1000), 0.3)[0]
    assert torch.equal(lr.dropout_mask(k.cuda(), (300, 1000), 0.3)[0].cpu(), big_cpu)
    assert torch.equal(lr.bits(k, 1 << 16, device="cuda").cpu(), lr.bits(k, 1 << 16))
    compiled = torch.compile(lambda kk: lr.bits(kk, 1000), fullgraph=True)
    assert torch.equal(compiled(k.cuda()).cpu(), lr.bits(k, 1000))


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_bad_keys_are_rejected():
    with pytest.raises(TypeError, match=r"uniform: expected `key` to be an int64"):
        lr.uniform([0, 1], 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"bits: expected `key`.*shape \(\.\.\., 2\)"):
        lr.bits(torch.zeros(3, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match=r"split: .*dtype=torch.int32"):
        lr.split(torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"fold_in"):
        lr.fold_in(torch.tensor(3), 1)
    with pytest.raises(TypeError, match=r"dropout: expected `key`"):
        lr.dropout(None, torch.ones(2), 0.5)  # type: ignore[arg-type]


def test_bad_arguments_are_rejected():
    k = lr.key(0)
    with pytest.raises(ValueError, match=r"bernoulli: `p` must be in \[0, 1\]"):
        lr.bernoulli(k, 1.5, 3)
    with pytest.raises(TypeError, match=r"bernoulli: `p` tensor must be floating"):
        lr.bernoulli(k, torch.tensor([1]), 3)
    with pytest.raises(ValueError, match=r"does not broadcast"):
        lr.bernoulli(k, torch.full((4,), 0.5), (3,))
    with pytest.raises(ValueError, match=r"dropout: `p` must be in \[0, 1\]"):
        lr.dropout(k, torch.ones(3), -0.1)
    with pytest.raises(TypeError, match=r"dropout_mask: `p` must be a Python float"):
        lr.dropout_mask(k, 3, "0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"dropout: `x` must be a floating tensor"):
        lr.dropout(k, torch.ones(3, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match=r"uniform: need low < high"):
        lr.uniform(k, 3, low=1.0, high=1.0)
    with pytest.raises(ValueError, match=r"uniform: `high` must be finite"):
        lr.uniform(k, 3, high=math.inf)
    with pytest.raises(ValueError, match=r"uniform: low=0.0 and high=100000.0 must lie in"):
        lr.uniform(k, 3, dtype=torch.float16, high=1e5)  # no float16 lies in (65504, 1e5)
    with pytest.raises(ValueError, match=r"uniform: low=-1e\+39 .* torch.float32"):
        lr.uniform(k, 3, low=-1e39)
    with pytest.raises(TypeError, match=r"uniform: `dtype` must be a floating dtype"):
        lr.uniform(k, 3, dtype=torch.int32)
    with pytest.raises(TypeError, match=r"normal: unsupported dtype"):
        lr.normal(k, 3, dtype=torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"bits: expected `shape`"):
        lr.bits(k, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"bits: `shape` entries must be non-negative"):
        lr.bits(k, (2, -1))
    with pytest.raises(ValueError, match=r"randint: need low < high"):
        lr.randint(k, 3, 5, 5)
    with pytest.raises(ValueError, match=r"randint: the range .* too large"):
        lr.randint(k, 3, 0, 2**31 + 1)
    with pytest.raises(ValueError, match=r"does not fit in torch.int8"):
        lr.randint(k, 3, 0, 300, dtype=torch.int8)
    with pytest.raises(TypeError, match=r"randint: `high` must be an int"):
        lr.randint(k, 3, 0, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"split: `n` must be >= 0"):
        lr.split(k, -1)
    with pytest.raises(TypeError, match=r"fold_in: expected integer `data`"):
        lr.fold_in(k, torch.tensor([1.5]))
    with pytest.raises(TypeError, match=r"fold_in: expected `data` to be an int"):
        lr.fold_in(k, "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"permutation: `n` must be >= 0"):
        lr.permutation(k, -2)
    with pytest.raises(ValueError, match=r"permutation: cannot permute a 0-dim tensor"):
        lr.permutation(k, torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"philox4x32: `counter` tensor must have shape"):
        lr.philox4x32(torch.zeros(3, dtype=torch.int64), (0, 0))
    with pytest.raises(ValueError, match=r"philox4x32: `rounds` must be an int >= 1"):
        lr.philox4x32((0, 0, 0, 0), (0, 0), rounds=0)
    with pytest.raises(ValueError, match=r"too many random values"):
        lr.bits(k, (2**20, 2**14))
