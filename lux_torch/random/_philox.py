"""The Philox4x32 block function behind :mod:`lux_torch.random`, computed on one of two paths.

* **host** (numpy): a CPU key in plain eager mode -- split, fold_in and every sampler outside
  ``torch.compile``, ``torch.func`` transforms and tracing. Words are ``uint32`` arrays; a
  ``uint32 * uint64`` multiply gives the exact 64-bit product, whose low and high halves are
  read through a ``uint32`` view, so a round is three numpy calls on preallocated buffers
  (a torch round takes about twelve ops, each costing a dispatch).
* **tensor** (torch ops, functional): everything else -- tracing, ``vmap``/``grad``, CUDA and
  the meta device. ``torch`` has no arithmetic on unsigned 64-bit words, so each 32-bit word
  is an ``int64`` value in ``[0, 2**32)`` and the 32x32-bit product is formed from 16-bit limbs
  of the multiplier, ``M = Mh * 2**16 + Ml``: ``pl = a * Ml``, ``ph = a * Mh`` (both below
  ``2**48``), ``s = ph + (pl >> 16)``, ``hi = s >> 16``,
  ``lo = ((s & 0xFFFF) << 16) | (pl & 0xFFFF)``. Nothing overflows signed 64-bit arithmetic
  (undefined behaviour in the C++/Triton code that ``torch.compile`` generates).

Both compute the same integers, so the bits agree everywhere (the tests compare both with a
pure-Python reference). The state of a round is two stacked pairs, ``x = [c0, c2]`` (the
multiplied words) and ``y = [c1, c3]``; with ``[hi, lo]`` the halves of ``x * [M0, M1]``,
the next state is ``x = reversed(hi) ^ y ^ [k0, k1]`` and ``y = reversed(lo)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MAX_BLOCKS",
    "ROUNDS",
    "TAG_DATA",
    "TAG_FOLD",
    "TAG_SPLIT",
    "keep_mask",
    "on_host",
    "philox",
    "stream",
]

M0, M1 = 0xD2511F53, 0xCD9E8D57  # multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85  # key bumps (Weyl sequence)
ROUNDS = 10
MASK32 = 0xFFFFFFFF

# Domain tags (the third counter word) of the data, split and fold_in streams.
TAG_DATA = 0
TAG_SPLIT = 0x53504C54  # "SPLT"
TAG_FOLD = 0x464F4C44  # "FOLD"

# Blocks per call: the block index is the first counter word.
MAX_BLOCKS = 2**31

# Calls of up to this many blocks (all keys together) run on Python integers.
SMALL = 8

# Explicitly little-endian, so the uint32 view of a uint64 product reads (low, high) and the
# uint16 view of a word (low lane, high lane) on every host.
_U2, _U4, _U8 = np.dtype("<u2"), np.dtype("<u4"), np.dtype("<u8")
_MULT = np.array([M0, M1], dtype=_U8)
_BUMP = np.array([[r * W0, r * W1] for r in range(64)], dtype=_U8)
_MULT.setflags(write=False)
_BUMP.setflags(write=False)

Word = int | Tensor


def on_host(*tensors: Tensor) -> bool:
    """True when every tensor is a plain CPU tensor outside tracing and ``torch.func``
    transforms: the host path applies."""
    if torch.compiler.is_compiling() or torch._C._is_tracing():
        return False
    return all(
        type(t) is Tensor
        and t.device.type == "cpu"
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
        for t in tensors
    )


def _ones(shape: Sequence[int], batch: Sequence[int]) -> tuple[int, ...]:
    """Leading 1s that right-align a key batch ``batch`` with the broadcast ``shape``."""
    return (1,) * (len(shape) - len(batch))


def _ints(
    counters: Sequence[Sequence[int]], keys: Sequence[Sequence[int]], rounds: int, words: int
) -> Tensor:
    """Small calls (split, fold_in) on Python integers: the first ``words`` output words,
    ``(len(counters), words)`` for one key, else ``(len(keys), len(counters), words)``."""
    out = []
    for kw in keys:
        k0, k1 = kw[0] & MASK32, kw[1] & MASK32
        sched = [((k0 + r * W0) & MASK32, (k1 + r * W1) & MASK32) for r in range(rounds)]
        rows = []
        for c0, c1, c2, c3 in counters:
            for r0, r1 in sched:
                p0, p1 = M0 * c0, M1 * c2
                c0, c1, c2, c3 = (
                    (p1 >> 32) ^ c1 ^ r0,
                    p1 & MASK32,
                    (p0 >> 32) ^ c3 ^ r1,
                    p0 & MASK32,
                )
            rows.append([c0, c1, c2, c3][:words])
        out.append(rows)
    return torch.tensor(out[0] if len(out) == 1 else out, dtype=torch.int64)


def _host(
    c: Sequence[int | np.ndarray], k: np.ndarray, shape: tuple[int, ...], rounds: int
) -> np.ndarray:
    """Output words ``shape + (4,)`` (``uint32``, contiguous) of the counters ``c``
    (broadcastable to ``shape``) under the keys ``k`` (``(..., 2)``, right-aligned)."""
    nd, kb = len(shape), k.shape[:-1]
    ones = (1,) * nd
    kw = k.astype(_U8).transpose(k.ndim - 1, *range(k.ndim - 1)).reshape(2, *_ones(shape, kb), *kb)
    bump = (
        _BUMP[:rounds] if rounds <= len(_BUMP) else np.arange(rounds, dtype=_U8)[:, None] * _BUMP[1]
    )
    keys = ((kw + bump.reshape(rounds, 2, *ones)) & MASK32).astype(_U4)
    x = np.empty((2, *shape), _U4)
    x[0], x[1] = c[0], c[2]
    y = np.empty((2, *shape), _U4)
    y[0], y[1] = c[1], c[3]
    mult = _MULT.reshape(2, *ones)
    out = np.empty((*shape, 4), _U4)
    last = (nd, *range(nd))  # the (c0, c2) / (c1, c3) axis of `out` first
    x_out, y_out = out[..., 0::2].transpose(last), out[..., 1::2].transpose(last)
    bufs = []
    for _ in range(2):
        p = np.empty((2, *shape), _U8)
        halves = p.view(_U4).reshape(*p.shape, 2)[::-1]  # rows swapped: [M1 c2, M0 c0]
        bufs.append((p, halves[..., 1], halves[..., 0]))
    for r in range(rounds):
        p, hi, lo = bufs[r & 1]
        np.multiply(x, mult, out=p)
        if r == rounds - 1:
            x = x_out
        np.bitwise_xor(hi, y, out=x)
        np.bitwise_xor(x, keys[r], out=x)
        y = lo
    y_out[...] = y
    return out


def _tensor(c: Sequence[Word], k: Tensor, rounds: int, words: int) -> Tensor:
    """Output words ``(..., 4)`` (``int64``) with torch ops (traceable, vmap-able)."""
    dev = k.device
    ct = [w if isinstance(w, Tensor) else torch.tensor(w, dtype=torch.int64, device=dev) for w in c]
    shape = torch.broadcast_shapes(k.shape[:-1], *(w.shape for w in ct))
    lead = (2,) + (1,) * len(shape)
    bump = torch.tensor(
        [[r * W0, r * W1] for r in range(rounds)], dtype=torch.int64, device=dev
    ).reshape(rounds, *lead)
    kw = k.movedim(-1, 0).reshape(2, *_ones(shape, k.shape[:-1]), *k.shape[:-1])
    keys = (kw + bump) & MASK32
    limbs = torch.tensor([[M0, M1], [M0 >> 16, M1 >> 16]], dtype=torch.int64, device=dev)
    ml = (limbs[0] & 0xFFFF).reshape(lead)
    mh = limbs[1].reshape(lead)
    x = torch.stack([ct[0].expand(shape), ct[2].expand(shape)])
    y = torch.stack([ct[1].expand(shape), ct[3].expand(shape)])
    for r in range(rounds):
        pl = x * ml
        s = (x * mh).add_(pl >> 16)
        lo = ((s & 0xFFFF) << 16).bitwise_or_(pl.bitwise_and_(0xFFFF))
        x = (s >> 16).flip(0) ^ y ^ keys[r]  # out of place: keys may be batched (vmap)
        y = lo.flip(0)
    return torch.stack([x[0], y[0], x[1], y[1]][:words], -1)


def _meta(key: Tensor, shape: Sequence[int], words: int) -> Tensor:
    """Shapes only (param_count, printouts, structure checks)."""
    shape = torch.broadcast_shapes(key.shape[:-1], tuple(shape))
    return torch.empty((*shape, words), dtype=torch.int64, device="meta")


def philox(counter: Sequence[Word], key: Tensor, rounds: int = ROUNDS, *, words: int = 4) -> Tensor:
    """The first ``words`` output words of Philox4x32, ``int64`` of shape
    ``broadcast(key.shape[:-1], counter shapes) + (words,)``, of four counter words (ints or
    integer tensors in ``[0, 2**32)``) under the key words ``key[..., 0]``, ``key[..., 1]``."""
    tensors = [w for w in counter if isinstance(w, Tensor)]
    if not tensors and key.numel() <= 2 * SMALL and key.device.type != "meta" and on_host(key):
        ints = [int(w) for w in counter]
        out = _ints([ints], key.reshape(-1, 2).tolist(), rounds, words)
        return out.reshape((*key.shape[:-1], words))
    shape = torch.broadcast_shapes(key.shape[:-1], *(w.shape for w in tensors))
    if key.device.type == "meta":
        return _meta(key, shape, words)
    if not on_host(key, *tensors):
        return _tensor(counter, key, rounds, words)
    c: list[int | np.ndarray] = [w.numpy() if isinstance(w, Tensor) else w for w in counter]
    return torch.from_numpy(_host(c, key.numpy(), shape, rounds)[..., :words].astype(np.int64))


def _host_stream(key: Tensor, n_blocks: int, tag: int) -> np.ndarray:
    counter: list[int | np.ndarray] = [np.arange(n_blocks, dtype=_U4), 0, tag, 0]
    k = key.numpy()[..., None, :]
    return _host(counter, k, (*key.shape[:-1], n_blocks), ROUNDS)


def stream(key: Tensor, n_blocks: int, tag: int = TAG_DATA, *, words: int = 4) -> Tensor:
    """The first ``words`` words of the blocks ``(i, 0, tag, 0)``, ``i < n_blocks``:
    ``int64`` of shape ``key.shape[:-1] + (n_blocks, words)``."""
    batch = key.shape[:-1]
    if key.device.type == "meta":
        return _meta(key, (n_blocks,), words)
    if not on_host(key):
        index = torch.arange(n_blocks, dtype=torch.int64, device=key.device)
        return philox([index, 0, tag, 0], key.unsqueeze(-2), words=words)
    if n_blocks * key.numel() <= 2 * SMALL:
        counters = [(i, 0, tag, 0) for i in range(n_blocks)]
        out = _ints(counters, key.reshape(-1, 2).tolist(), ROUNDS, words)
        return out.reshape(*batch, n_blocks, words)  # also for n_blocks == 0
    w = _host_stream(key, n_blocks, tag)[..., :words]
    return torch.from_numpy(w.astype(np.int64))


def keep_mask(key: Tensor, n_blocks: int, threshold: int | Tensor) -> Tensor:
    """Dropout's keep mask, ``key.shape[:-1] + (8 * n_blocks,)``: the 16-bit lanes (low
    half first) of the data stream's words, compared with ``lane < threshold``."""
    batch = key.shape[:-1]
    if isinstance(threshold, int) and key.device.type != "meta" and on_host(key):
        lanes = _host_stream(key, n_blocks, TAG_DATA).view(_U2)
        return torch.from_numpy(lanes < threshold).reshape((*batch, 8 * n_blocks))
    w = stream(key, n_blocks)
    halves = torch.stack([w & 0xFFFF, w >> 16], -1)
    return (halves < threshold).reshape((*batch, 8 * n_blocks))
