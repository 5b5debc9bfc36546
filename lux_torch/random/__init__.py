"""Explicit, counter-based random numbers from integer arithmetic.

This module provides JAX-style *explicit* randomness for ``lux_torch``: every
random function takes a **key** and is a pure function of it.  Nothing here
reads or writes torch's global RNG state, and no ``torch.Generator`` is used.
Because the random bits are computed with exact integer arithmetic (multiply,
shift, and, or, xor), the results are

* deterministic: the same key always gives the same values;
* bit-identical in eager mode, under ``torch.compile(fullgraph=True)`` and on
  CPU or CUDA (for the key, bit, uniform, bernoulli, randint, permutation and
  dropout functions; ``normal`` may differ in the last ulp, see below, and so may
  ``uniform`` with non-default bounds if a compiler fuses its affine map into an
  FMA);
* usable under ``torch.func.vmap``: a batch of keys gives a batch of
  independent streams, each equal to the unbatched call with that key.

Algorithm
---------
The generator is **Philox4x32-10** (Salmon, Moraes, Dror and Shaw, "Parallel
random numbers: as easy as 1, 2, 3", SC'11; the Random123 library).  It maps a
128-bit *counter* ``(c0, c1, c2, c3)`` and a 64-bit *key* ``(k0, k1)`` to
128 random bits.  One round is::

    (hi0, lo0) = mulhilo(0xD2511F53, c0)
    (hi1, lo1) = mulhilo(0xCD9E8D57, c2)
    (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)

followed by the key bump ``k0 += 0x9E3779B9``, ``k1 += 0xBB67AE85``
(mod 2**32).  Ten rounds are applied; round ``r`` uses ``k + r * W``.
:func:`philox4x32` exposes the raw block function; it reproduces Random123's
published known-answer vectors.

Arithmetic
----------
Words are 32-bit unsigned integers; a word tensor is ``int64`` with values in
``[0, 2**32)``. The block function runs on one of two paths that compute the same integers
(see ``lux_torch/random/_philox.py``): numpy ``uint32``/``uint64`` arithmetic for a CPU key
in plain eager mode, and a functional torch implementation (16-bit limbs of the
multipliers, so no op overflows signed 64-bit arithmetic) under ``torch.compile``,
``torch.func`` transforms, tracing, and on other devices.

Keys
----
A key is an ``int64`` tensor of shape ``(2,)`` holding the two 32-bit key words
``(k0, k1)``; :func:`key` builds it from a 64-bit seed as
``[(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF]``.  Batched keys have shape
``(..., 2)``; every sampler then returns ``key.shape[:-1] + shape``.

Counter layout (domain separation)
----------------------------------
The third counter word is a domain tag, so that the streams used for data,
for :func:`split` and for :func:`fold_in` can never coincide:

============  =====================================================
domain        counter ``(c0, c1, c2, c3)``
============  =====================================================
data bits     ``(i, 0, 0, 0)``, ``i`` = block index
split         ``(i, 0, 0x53504C54, 0)`` ("SPLT"), child ``i`` = words 0, 1
fold_in       ``(d & 0xFFFFFFFF, d >> 32, 0x464F4C44, 0)`` ("FOLD"), new key = words 0, 1
============  =====================================================

The data stream is the sequence of 32-bit words ``block(0)[0..3],
block(1)[0..3], ...``.  :func:`bits` returns a prefix of it (so ``bits(k, n)``
is a prefix of ``bits(k, m)`` for ``n <= m``), and all samplers are pure
functions of this stream and the element index.  At most ``2**31`` blocks
(``2**33`` words) can be drawn from one key in a single call.

How values are made from the bits
---------------------------------
* ``uniform`` float32 (and float16/bfloat16, computed through float32):
  ``(w >> 8) * 2**-24`` -- the grid ``{0, 2**-24, ..., 1 - 2**-24}``.
  float64 uses 53 bits from two consecutive words.  For float16/bfloat16
  the float32 value is rounded to the dtype and then clamped to the largest
  representable value below ``high``, so ``high`` is never returned.
* ``normal``: Box--Muller on pairs of uniforms, ``u1 = 1 - u`` in ``(0, 1]``,
  both outputs used, evaluated in float64 and rounded once to the output dtype.
  Transcendental functions (``log``, ``sqrt``, ``cos``, ``sin``) may round the
  last ulp differently on other backends or compilers; for float32 (and narrower)
  outputs the final rounding almost always absorbs that, for float64 it does not.
  Everything else is identical.
* ``bernoulli(p)``: ``w < ceil(p * 2**32)``, exact to ``2**-32``.
* ``randint``: two words per element, ``((w0 % r) * (2**32 % r) + w1) % r``
  equals ``(w0 * 2**32 + w1) mod r``; the bias is at most ``r / 2**64``.
* ``permutation``: stable ``argsort`` of 63-bit random sort keys.
* ``dropout_mask`` / ``dropout``: each 32-bit word yields **two 16-bit
  lanes**, so one Philox block gives 8 mask elements.  An element is kept if
  its lane is ``< t`` with ``t = round((1 - p) * 2**16)`` (clamped to
  ``[1, 2**16 - 1]`` when ``0 < p < 1``); the scale is ``2**16 / t``, i.e.
  computed from the *quantized* keep probability, so ``E[dropout(x)] == x``
  exactly (up to rounding of the scale to ``x.dtype``).  The effective drop
  probability differs from ``p`` by at most ``2**-17`` (except that ``0 < p <
  2**-17`` still drops with probability ``2**-16``, and likewise near 1).

Speed
-----
In eager mode with a CPU key a round is three numpy calls (about 60 µs of fixed cost per
call), and ``split``/``fold_in`` of a single key run on Python integers (about 20 µs):
dropout of large tensors is about twice as fast as ``torch.nn.Dropout``, of a (64, 64)
tensor about three times slower (``benchmarks/dropout.py``). Under ``torch.compile`` the
generator fuses into the surrounding kernels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from torch import Tensor

from ._philox import MAX_BLOCKS, ROUNDS, TAG_DATA, TAG_FOLD, TAG_SPLIT, keep_mask, philox, stream

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "bernoulli",
    "bits",
    "dropout",
    "dropout_mask",
    "fold_in",
    "key",
    "normal",
    "permutation",
    "philox4x32",
    "randint",
    "split",
    "uniform",
]

ShapeLike = int | Sequence[int] | torch.Size
DeviceLike = torch.device | str | int | None

_MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _check_key(k: object, fn: str) -> Tensor:
    if not isinstance(k, Tensor):
        raise TypeError(
            f"lux_torch.random.{fn}: expected `key` to be an int64 torch.Tensor of shape "
            f"(..., 2) (make one with lux_torch.random.key(seed)), got {type(k).__name__}"
        )
    if k.dtype != torch.int64 or k.dim() == 0 or k.shape[-1] != 2:
        raise ValueError(
            f"lux_torch.random.{fn}: expected `key` to be an int64 tensor of shape (..., 2), "
            f"got dtype={k.dtype} shape={tuple(k.shape)}"
        )
    return k


def _prep_key(k: object, fn: str, device: DeviceLike) -> Tensor:
    kt = _check_key(k, fn)
    if device is not None:
        kt = kt.to(device)
    return kt


def _meta(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The result for a key on the meta device: only shapes exist there (``param_count``,
    printouts and layers' shape signatures initialise on it), so no bits are computed."""
    return torch.empty(shape, dtype=dtype, device="meta")


def _is_int(x: object) -> TypeGuard[int]:
    """An integer that is not a bool: a Python or numpy int, or a ``torch.SymInt`` (typed as
    ``int``, as torch types the entries of a ``torch.Size``)."""
    return isinstance(x, (numbers.Integral, torch.SymInt)) and not isinstance(x, bool)


def _is_real(x: object) -> TypeGuard[float]:
    """A real number that is not a bool: a Python or numpy number, a ``torch.SymFloat`` or
    ``SymInt`` (typed as ``float``, which stands for any real number in Python typing)."""
    return isinstance(x, (numbers.Real, torch.SymFloat, torch.SymInt)) and not isinstance(x, bool)


def _normalize_shape(shape: object, fn: str) -> tuple[int, ...]:
    if _is_int(shape):
        dims: tuple[int, ...] = (shape,)
    elif isinstance(shape, (tuple, list, torch.Size)):
        dims = tuple(shape)
    else:
        raise TypeError(
            f"lux_torch.random.{fn}: expected `shape` to be an int or a tuple of ints, "
            f"got {type(shape).__name__}"
        )
    for d in dims:
        if not _is_int(d):
            raise TypeError(
                f"lux_torch.random.{fn}: expected `shape` entries to be ints, got {shape!r}"
            )
        if d < 0:
            raise ValueError(
                f"lux_torch.random.{fn}: `shape` entries must be non-negative, got {shape!r}"
            )
    return dims


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n = n * d
    return n


def _check_blocks(n_blocks: int, fn: str) -> None:
    if n_blocks > MAX_BLOCKS:
        raise ValueError(
            f"lux_torch.random.{fn}: too many random values requested in one call "
            f"(needs {n_blocks} Philox blocks, the limit is 2**31 = 8.6e9 32-bit words)"
        )


# ---------------------------------------------------------------------------
# Philox blocks (computed in _philox.py)
# ---------------------------------------------------------------------------


def _stream_words(k: Tensor, n_words: int, fn: str, tag: int = TAG_DATA) -> Tensor:
    """The first ``n_words`` words of a data stream, shape ``key.shape[:-1] + (n_words,)``."""
    n_blocks = (n_words + 3) // 4
    _check_blocks(n_blocks, fn)
    w = stream(k, n_blocks, tag).reshape((*k.shape[:-1], 4 * n_blocks))
    return w if n_words == 4 * n_blocks else w[..., :n_words]


def _as_word(v: object, what: str, fn: str) -> int | Tensor:
    if _is_int(v):
        return int(v) & _MASK32
    if isinstance(v, Tensor):
        if v.dtype.is_floating_point or v.dtype.is_complex or v.dtype == torch.bool:
            raise TypeError(f"lux_torch.random.{fn}: {what} must be integers, got {v.dtype}")
        return v.to(torch.int64) & _MASK32
    raise TypeError(
        f"lux_torch.random.{fn}: {what} must be ints or integer tensors, got {type(v).__name__}"
    )


# ---------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------


def key(seed: int | np.integer[Any], *, device: DeviceLike = None) -> Tensor:
    """Create a PRNG key from an integer seed.

    Arguments:
        seed: any Python or numpy integer; it is reduced modulo ``2**64`` (so negative seeds work).
        device: device of the key (default CPU).  Random values are created on the
            key's device.

    Returns:
        ``int64`` tensor of shape ``(2,)``:
        ``[(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF]``.

    Example:
        >>> import lux_torch.random as r
        >>> r.key(42)
        tensor([ 0, 42])
    """
    if not _is_int(seed) or isinstance(seed, torch.SymInt):
        raise TypeError(
            f"lux_torch.random.key: expected `seed` to be a Python int, got {type(seed).__name__}"
            + (" (use fold_in to mix a tensor into a key)" if isinstance(seed, Tensor) else "")
        )
    s = int(seed) % (1 << 64)
    return torch.tensor([(s >> 32) & _MASK32, s & _MASK32], dtype=torch.int64, device=device)


def split(key: Tensor, n: int = 2) -> Tensor:
    """Split a key into ``n`` new, independent keys.

    Arguments:
        key: key of shape ``(..., 2)``.
        n: number of keys to create (``>= 0``).

    Returns:
        ``int64`` tensor of shape ``key.shape[:-1] + (n, 2)``.  Child ``i`` is words 0, 1
        of the Philox block ``(i, 0, SPLIT_TAG, 0)``, a stream disjoint from the data bits.

    Example:
        >>> import lux_torch.random as r
        >>> k1, k2 = r.split(r.key(0))
        >>> r.split(r.key(0), 4).shape
        torch.Size([4, 2])
    """
    k = _check_key(key, "split")
    if not _is_int(n):
        raise TypeError(
            f"lux_torch.random.split: expected `n` to be an int, got {type(n).__name__}"
        )
    if n < 0:
        raise ValueError(f"lux_torch.random.split: `n` must be >= 0, got {n}")
    _check_blocks(n, "split")
    if k.device.type == "meta":
        return _meta((*k.shape[:-1], n, 2), torch.int64)
    return stream(k, n, TAG_SPLIT, words=2)


def fold_in(key: Tensor, data: int | Tensor) -> Tensor:
    """Derive a new key from ``key`` and integer ``data``.

    Arguments:
        key: key of shape ``(..., 2)``.
        data: a Python int (reduced mod ``2**64``) or an integer tensor (its values are
            taken as 64-bit integers).  Typically a layer index or a CRC32 of a name.

    Returns:
        ``int64`` key of shape ``broadcast(key.shape[:-1], data.shape) + (2,)``: words 0, 1
        of the Philox block ``(data & 0xFFFFFFFF, data >> 32, FOLD_TAG, 0)``.

    Example:
        >>> import zlib, lux_torch.random as r
        >>> child = r.fold_in(r.key(0), zlib.crc32(b"layer_1"))
        >>> child.shape
        torch.Size([2])
    """
    k = _check_key(key, "fold_in")
    if k.device.type == "meta" and _is_int(data):
        return _meta(k.shape, torch.int64)
    if _is_int(data):
        d = int(data) % (1 << 64)
        lo: int | Tensor = d & _MASK32
        hi: int | Tensor = d >> 32
    elif isinstance(data, Tensor):
        if data.dtype.is_floating_point or data.dtype.is_complex or data.dtype == torch.bool:
            raise TypeError(
                f"lux_torch.random.fold_in: expected integer `data`, got a {data.dtype} tensor"
            )
        dt = data.to(device=k.device, dtype=torch.int64)
        lo = dt & _MASK32
        hi = (dt >> 32) & _MASK32
    else:
        raise TypeError(
            "lux_torch.random.fold_in: expected `data` to be an int or an integer tensor, "
            f"got {type(data).__name__}"
        )
    return philox((lo, hi, TAG_FOLD, 0), k, words=2)


def philox4x32(
    counter: Tensor | Sequence[int | Tensor],
    key: Tensor | Sequence[int | Tensor],
    rounds: int = ROUNDS,
) -> Tensor:
    """The raw Philox4x32 block function (Random123 ``philox4x32_R``).

    Arguments:
        counter: four 32-bit words, either a sequence of 4 ints/integer tensors or an
            integer tensor of shape ``(..., 4)``.  Values are taken mod ``2**32``.
        key: two 32-bit words, a sequence of 2 ints/integer tensors or a tensor ``(..., 2)``.
        rounds: number of rounds (10 for Philox4x32-10).

    Returns:
        ``int64`` tensor of shape ``broadcast(...) + (4,)`` holding the four output words.

    Example:
        >>> import lux_torch.random as r
        >>> [hex(v) for v in r.philox4x32((0, 0, 0, 0), (0, 0)).tolist()]
        ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    fn = "philox4x32"
    if not _is_int(rounds) or rounds < 1:
        raise ValueError(f"lux_torch.random.{fn}: `rounds` must be an int >= 1, got {rounds!r}")

    def words(v: object, n: int, what: str) -> list[int | Tensor]:
        if isinstance(v, Tensor):
            if v.dim() == 0 or v.shape[-1] != n:
                raise ValueError(
                    f"lux_torch.random.{fn}: `{what}` tensor must have shape (..., {n}), "
                    f"got {tuple(v.shape)}"
                )
            return [_as_word(v[..., i], what, fn) for i in range(n)]
        if isinstance(v, (tuple, list)) and len(v) == n:
            return [_as_word(e, what, fn) for e in v]
        raise TypeError(
            f"lux_torch.random.{fn}: `{what}` must be a tensor (..., {n}) or a sequence of "
            f"{n} words, got {v!r}"
        )

    cw = words(counter, 4, "counter")
    kw = words(key, 2, "key")
    dev = next((t.device for t in cw + kw if isinstance(t, Tensor)), torch.device("cpu"))
    kts = [
        w if isinstance(w, Tensor) else torch.tensor(w, dtype=torch.int64, device=dev) for w in kw
    ]
    return philox(cw, torch.stack(torch.broadcast_tensors(*kts), -1), int(rounds))


# ---------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------


def bits(key: Tensor, shape: ShapeLike, *, device: DeviceLike = None) -> Tensor:
    """Uniformly random 32-bit words.

    Arguments:
        key: key of shape ``(..., 2)``.
        shape: output shape (int or tuple).
        device: output device (default: the key's device).

    Returns:
        ``int64`` tensor of shape ``key.shape[:-1] + shape`` with values in ``[0, 2**32)``.
        In flat (row-major) order it is a prefix of the key's data stream, so the first
        ``m`` values of ``bits(k, n)`` equal ``bits(k, m)``.

    Example:
        >>> import lux_torch.random as r
        >>> w = r.bits(r.key(0), (2, 3))
        >>> w.dtype, w.shape
        (torch.int64, torch.Size([2, 3]))
    """
    k = _prep_key(key, "bits", device)
    shp = _normalize_shape(shape, "bits")
    w = _stream_words(k, _numel(shp), "bits")
    return w.reshape((*k.shape[:-1], *shp))


_HALF_TYPES = (torch.float16, torch.bfloat16)


def _check_float_dtype(dtype: object, fn: str) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"lux_torch.random.{fn}: `dtype` must be a floating dtype, got {dtype!r}")
    if dtype not in (torch.float32, torch.float64, *_HALF_TYPES):
        raise TypeError(
            f"lux_torch.random.{fn}: unsupported dtype {dtype}; use float16, bfloat16, "
            "float32 or float64"
        )
    return dtype


def _unit_f32(w: Tensor) -> Tensor:
    """Words -> float32 uniform on the grid {0, 2**-24, ..., 1 - 2**-24} (consumes ``w``)."""
    return w.bitwise_right_shift_(8).to(torch.float32).mul_(2.0**-24)


def _unit_f64(wa: Tensor, wb: Tensor) -> Tensor:
    """Two words -> float64 uniform on the grid of multiples of 2**-53."""
    m = (wa << 21) | (wb >> 11)
    return m.to(torch.float64).mul_(2.0**-53)


def _words_to_uniform(w: Tensor, dtype: torch.dtype, low: float = 0.0, high: float = 1.0) -> Tensor:
    """Map random words to ``dtype`` uniforms in ``[low, high)``.

    ``w`` has shape ``(..., n)`` (float16/bfloat16/float32) or ``(..., n, 2)`` (float64).
    The input may be overwritten.  Exposed (privately) so the clamping against ``high``
    can be tested with worst-case words.
    """
    u = _unit_f64(w[..., 0], w[..., 1]) if dtype == torch.float64 else _unit_f32(w)
    default = low == 0.0 and high == 1.0
    if not default:
        u = u.mul_(high - low).add_(low)
    if dtype in _HALF_TYPES:
        u = u.to(dtype)
    if dtype in _HALF_TYPES or not default:
        u = _clamp_below(u, high, dtype)
    return u


def _clamp_below(u: Tensor, high: float, dtype: torch.dtype) -> Tensor:
    """``min(u, largest dtype value < high)``, with tensor ops: under ``torch.compile`` with
    ``dynamic=True``, ``high`` may be a symbolic float."""
    h = torch.zeros((), dtype=torch.float64, device=u.device) + high
    hd = h.to(dtype)
    below = torch.nextafter(hd, torch.full((), -math.inf, dtype=dtype, device=u.device))
    return torch.minimum(u, torch.where(hd.to(torch.float64) >= h, below, hd))


def _check_bounds(a: object, b: object, fn: str, names: tuple[str, str]) -> tuple[float, float]:
    """Validate two real parameters (concrete Python numbers are checked for finiteness)."""
    for v, nm in ((a, names[0]), (b, names[1])):
        if not _is_real(v):
            raise TypeError(
                f"lux_torch.random.{fn}: `{nm}` must be a Python float, got {type(v).__name__}"
            )
        if not torch.compiler.is_compiling() and not math.isfinite(v):
            raise ValueError(f"lux_torch.random.{fn}: `{nm}` must be finite, got {v!r}")
    return a, b  # type: ignore[return-value]  # both checked by the loop


def uniform(
    key: Tensor,
    shape: ShapeLike,
    *,
    dtype: torch.dtype = torch.float32,
    low: float = 0.0,
    high: float = 1.0,
    device: DeviceLike = None,
) -> Tensor:
    """Uniform random floats in ``[low, high)``.

    float32 uses 24 random bits per value (``(w >> 8) * 2**-24``), float64 53 bits from
    two words; float16/bfloat16 are computed in float32, rounded, and clamped so that
    ``high`` is never produced.  With non-default bounds the affine map
    ``u * (high - low) + low`` is evaluated in float32/float64 (a compiler that fuses it
    into an FMA may change the last bit), then clamped below ``high``.

    Arguments:
        key: key of shape ``(..., 2)``.
        shape: output shape (int or tuple).
        dtype: float16, bfloat16, float32 (default) or float64.
        low, high: bounds (Python floats, ``low < high``).
        device: output device (default: the key's device).

    Returns:
        tensor of shape ``key.shape[:-1] + shape``.

    Example:
        >>> import lux_torch.random as r
        >>> u = r.uniform(r.key(0), (3,), low=-1.0, high=1.0)
        >>> bool(((u >= -1) & (u < 1)).all())
        True
    """
    fn = "uniform"
    k = _prep_key(key, fn, device)
    shp = _normalize_shape(shape, fn)
    dt = _check_float_dtype(dtype, fn)
    lo, hi = _check_bounds(low, high, fn, ("low", "high"))
    if not lo < hi:
        raise ValueError(f"lux_torch.random.{fn}: need low < high, got low={low} high={high}")
    big = torch.finfo(dt).max
    if not torch.compiler.is_compiling() and not -big <= lo < hi <= big:
        raise ValueError(
            f"lux_torch.random.{fn}: low={lo} and high={hi} must lie in {dt}'s range "
            f"[{-big}, {big}]"
        )
    if k.device.type == "meta":
        return _meta((*k.shape[:-1], *shp), dt)
    n = _numel(shp)
    if dt == torch.float64:
        w = _stream_words(k, 2 * n, fn).reshape((*k.shape[:-1], n, 2))
    else:
        w = _stream_words(k, n, fn)
    u = _words_to_uniform(w, dt, lo, hi)
    return u.reshape((*k.shape[:-1], *shp))


def normal(
    key: Tensor,
    shape: ShapeLike,
    *,
    dtype: torch.dtype = torch.float32,
    mean: float = 0.0,
    std: float = 1.0,
    device: DeviceLike = None,
) -> Tensor:
    """Normally distributed random floats (Box--Muller, both outputs used).

    Pairs of uniforms ``(u1, u2)`` (24-bit for float32/float16/bfloat16, 53-bit for
    float64) give ``r * cos(2 pi u2)`` and ``r * sin(2 pi u2)`` with
    ``r = sqrt(-2 log(1 - u1))``.  The transform (and ``mean + std * z``) is evaluated in
    float64 and rounded once to ``dtype``.  The random bits are identical everywhere; the
    transcendental functions may differ in the last ulp between backends, which for
    float32 and narrower results is almost always absorbed by the final rounding (eager
    vs ``torch.compile`` on CPU agree bit for bit in the tests) but is not guaranteed.

    Arguments:
        key: key of shape ``(..., 2)``.
        shape: output shape (int or tuple).
        dtype: float16, bfloat16, float32 (default) or float64.
        mean, std: Python floats; the result is ``mean + std * z``.
        device: output device (default: the key's device).

    Returns:
        tensor of shape ``key.shape[:-1] + shape``.

    Example:
        >>> import lux_torch.random as r
        >>> r.normal(r.key(0), (2, 2), std=0.1).shape
        torch.Size([2, 2])
    """
    fn = "normal"
    k = _prep_key(key, fn, device)
    shp = _normalize_shape(shape, fn)
    dt = _check_float_dtype(dtype, fn)
    mean, std = _check_bounds(mean, std, fn, ("mean", "std"))
    if k.device.type == "meta":
        return _meta((*k.shape[:-1], *shp), dt)
    n = _numel(shp)
    pairs = (n + 1) // 2
    batch = k.shape[:-1]
    if dt == torch.float64:
        w = _stream_words(k, 4 * pairs, fn).reshape((*batch, pairs, 2, 2))
        u1 = _unit_f64(w[..., 0, 0], w[..., 0, 1])
        u2 = _unit_f64(w[..., 1, 0], w[..., 1, 1])
    else:
        # 24-bit uniforms, but the transform runs in float64 and is rounded once at the
        # end: backend differences in the last ulp of log/sqrt/cos/sin (eager CPU sqrt,
        # for one, is not correctly rounded) then almost never reach the float32 result.
        w = _stream_words(k, 2 * pairs, fn).reshape((*batch, pairs, 2))
        u = w.bitwise_right_shift_(8).to(torch.float64).mul_(2.0**-24)
        u1 = u[..., 0]
        u2 = u[..., 1]
    # 1 - u1 is in (0, 1] and exact (u1 is a multiple of 2**-24 / 2**-53).
    radius = torch.log1p(-u1).mul_(-2.0).sqrt_()
    theta = u2 * (2.0 * math.pi)
    z = torch.stack([torch.cos(theta).mul_(radius), torch.sin(theta).mul_(radius)], -1)
    z = z.reshape((*batch, 2 * pairs))
    if 2 * pairs != n:
        z = z[..., :n]
    if not (mean == 0.0 and std == 1.0):
        z = z * std + mean
    if z.dtype != dt:
        z = z.to(dt)
    return z.reshape((*batch, *shp))


def bernoulli(
    key: Tensor,
    p: float | Tensor,
    shape: ShapeLike | None = None,
    *,
    device: DeviceLike = None,
) -> Tensor:
    """Bernoulli samples: ``True`` with probability ``p``.

    Element ``i`` is ``bits[i] < ceil(p * 2**32)``, so the probability is exact up to
    ``2**-32``; ``p = 0`` gives all ``False`` and ``p = 1`` all ``True``.

    Arguments:
        key: key of shape ``(..., 2)``.
        p: probability, a Python float in ``[0, 1]`` or a floating tensor broadcastable
            to ``shape`` (tensor values are not checked; values outside ``[0, 1]`` act
            as clamped).
        shape: output shape; defaults to ``p.shape`` (or ``()`` for a float ``p``).
        device: output device (default: the key's device).

    Returns:
        ``bool`` tensor of shape ``key.shape[:-1] + shape``.

    Example:
        >>> import lux_torch.random as r
        >>> r.bernoulli(r.key(0), 0.5, (4,)).dtype
        torch.bool
    """
    fn = "bernoulli"
    k = _prep_key(key, fn, device)
    if isinstance(p, Tensor):
        if not p.dtype.is_floating_point:
            raise TypeError(f"lux_torch.random.{fn}: `p` tensor must be floating, got {p.dtype}")
        shp = tuple(p.shape) if shape is None else _normalize_shape(shape, fn)
        try:
            ok = torch.broadcast_shapes(tuple(p.shape), shp) == torch.Size(shp)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"lux_torch.random.{fn}: `p` of shape {tuple(p.shape)} does not broadcast to "
                f"shape {shp}"
            )
        w = _stream_words(k, _numel(shp), fn).reshape((*k.shape[:-1], *shp))
        thr = p.to(device=k.device, dtype=torch.float64) * 2.0**32
        return w < thr
    if not _is_real(p):
        raise TypeError(
            f"lux_torch.random.{fn}: `p` must be a float or a floating tensor, got "
            f"{type(p).__name__}"
        )
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"lux_torch.random.{fn}: `p` must be in [0, 1], got {p}")
    shp = () if shape is None else _normalize_shape(shape, fn)
    w = _stream_words(k, _numel(shp), fn).reshape((*k.shape[:-1], *shp))
    if torch.compiler.is_compiling():  # keep a (possibly symbolic) p a graph input
        thr = (torch.zeros((), dtype=torch.float64, device=k.device) + p).mul_(2.0**32).ceil_()
        return w < thr.to(torch.int64)
    return w < math.ceil(float(p) * 2.0**32)


def randint(
    key: Tensor,
    shape: ShapeLike,
    low: int,
    high: int,
    *,
    dtype: torch.dtype = torch.int64,
    device: DeviceLike = None,
) -> Tensor:
    """Uniform random integers in ``[low, high)``.

    Each value uses two words ``(w0, w1)``: ``low + (w0 * 2**32 + w1) mod r`` with
    ``r = high - low``, computed as ``((w0 % r) * (2**32 % r) + w1) % r`` (all
    intermediates ``< 2**63``).  The bias is at most ``r / 2**64``.

    Arguments:
        key: key of shape ``(..., 2)``.
        shape: output shape (int or tuple).
        low, high: Python ints with ``1 <= high - low <= 2**31``.
        dtype: integer output dtype (default int64); must hold ``[low, high)``.
        device: output device (default: the key's device).

    Returns:
        tensor of shape ``key.shape[:-1] + shape``.

    Example:
        >>> import lux_torch.random as r
        >>> v = r.randint(r.key(0), (5,), 0, 10)
        >>> bool(((v >= 0) & (v < 10)).all())
        True
    """
    fn = "randint"
    k = _prep_key(key, fn, device)
    shp = _normalize_shape(shape, fn)
    for bound, nm in ((low, "low"), (high, "high")):
        if not _is_int(bound):
            raise TypeError(
                f"lux_torch.random.{fn}: `{nm}` must be an int, got {type(bound).__name__}"
            )
    lo_i, hi_i = int(low), int(high)
    r = hi_i - lo_i
    if r < 1:
        raise ValueError(f"lux_torch.random.{fn}: need low < high, got low={low} high={high}")
    if r > 2**31:
        raise ValueError(
            f"lux_torch.random.{fn}: the range high - low = {r} is too large (at most 2**31)"
        )
    if (
        not isinstance(dtype, torch.dtype)
        or dtype.is_floating_point
        or dtype.is_complex
        or dtype == torch.bool
    ):
        raise TypeError(f"lux_torch.random.{fn}: `dtype` must be an integer dtype, got {dtype!r}")
    info = torch.iinfo(dtype)
    if lo_i < info.min or hi_i - 1 > info.max:
        raise ValueError(f"lux_torch.random.{fn}: [{low}, {high}) does not fit in {dtype}")
    n = _numel(shp)
    w = _stream_words(k, 2 * n, fn).reshape((*k.shape[:-1], n, 2))
    m = (1 << 32) % r
    # (For a power-of-two r, m == 0 and this is simply w1 mod r.)
    v = torch.remainder((w[..., 0] % r).mul_(m).add_(w[..., 1]), r) if m else w[..., 1] % r
    if lo_i != 0:
        v = v + lo_i
    return v.to(dtype).reshape((*k.shape[:-1], *shp))


def permutation(key: Tensor, x: int | Tensor) -> Tensor:
    """A uniformly random permutation.

    Sorts 63-bit random sort keys (two words per element) with a stable ``argsort``.

    Arguments:
        key: key of shape ``(..., 2)``.
        x: an int ``n`` (permute ``arange(n)``) or a tensor (permuted along dim 0).

    Returns:
        for an int, an ``int64`` tensor of shape ``key.shape[:-1] + (n,)``; for a tensor,
        ``x`` with its first dimension shuffled (``x[perm]``).

    Example:
        >>> import lux_torch.random as r
        >>> sorted(r.permutation(r.key(0), 5).tolist())
        [0, 1, 2, 3, 4]
    """
    fn = "permutation"
    k = _check_key(key, fn)
    if isinstance(x, Tensor):
        if x.dim() == 0:
            raise ValueError(f"lux_torch.random.{fn}: cannot permute a 0-dim tensor")
        n = x.shape[0]
        k = k.to(x.device)
    elif _is_int(x):
        n = x
        if n < 0:
            raise ValueError(f"lux_torch.random.{fn}: `n` must be >= 0, got {n}")
    else:
        raise TypeError(
            f"lux_torch.random.{fn}: expected an int or a tensor, got {type(x).__name__}"
        )
    w = _stream_words(k, 2 * n, fn).reshape((*k.shape[:-1], n, 2))
    sort_key = (w[..., 0] >> 1).bitwise_left_shift_(32).bitwise_or_(w[..., 1])
    perm = torch.argsort(sort_key, dim=-1, stable=True)
    if isinstance(x, Tensor):
        return x[perm]
    return perm


# ---------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------


def _dropout_threshold(
    p: object, fn: str, device: torch.device
) -> tuple[int | Tensor, float | Tensor]:
    """Quantized keep threshold ``t`` (keep iff 16-bit lane < t) and scale ``2**16 / t``.

    Python numbers in eager mode.  While tracing, ``t`` and the scale are 0-dim tensors
    for ``0 < p < 1``: ``p`` may then be a symbolic float, and turning it into Python
    numbers (``float``, ``round``) could bake its trace-time value into the graph.
    """
    if not _is_real(p):
        raise TypeError(
            f"lux_torch.random.{fn}: `p` must be a Python float, got {type(p).__name__}"
        )
    tracing = torch.compiler.is_compiling()
    pf = p if tracing else float(p)
    if not 0.0 <= pf <= 1.0:
        raise ValueError(f"lux_torch.random.{fn}: `p` must be in [0, 1], got {p}")
    if pf == 0.0:
        return 1 << 16, 1.0
    if pf == 1.0:
        return 0, 0.0
    if tracing:
        return _threshold_tensor(pf, device)
    t = min(max(round((1.0 - pf) * 65536.0), 1), 65535)
    return t, 65536.0 / t


def _threshold_tensor(p: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Tensor form of :func:`_dropout_threshold` for ``0 < p < 1``, used while tracing.

    ``p`` may be a symbolic float there (``dynamic=True``); computing the threshold with
    tensor ops keeps it an input of the graph instead of a value baked in at trace time.
    """
    keep = torch.ones((), dtype=torch.float64, device=device) - p
    t = torch.round(keep * 65536.0).clamp_(1.0, 65535.0)
    return t.to(torch.int64), 65536.0 / t


def _lanes_mask(k: Tensor, shp: tuple[int, ...], t: int | Tensor, fn: str) -> Tensor:
    n = _numel(shp)
    batch = k.shape[:-1]
    if isinstance(t, int) and (t >= 1 << 16 or t == 0):
        return torch.full((*batch, *shp), t != 0, dtype=torch.bool, device=k.device)
    n_blocks = (n + 7) // 8
    _check_blocks(n_blocks, fn)
    m = keep_mask(k, n_blocks, t)
    if 8 * n_blocks != n:
        m = m[..., :n]
    return m.reshape((*batch, *shp))


def dropout_mask(
    key: Tensor, shape: ShapeLike, p: float, *, device: DeviceLike = None
) -> tuple[Tensor, float | Tensor]:
    """Keep-mask and scale for dropout with drop probability ``p``.

    Uses two 16-bit lanes per random word (8 mask elements per Philox block): element
    ``i`` is kept iff its lane is ``< t``, ``t = round((1 - p) * 2**16)`` (clamped to
    ``[1, 2**16 - 1]`` for ``0 < p < 1``).  ``scale = 2**16 / t`` is the inverse of the
    *quantized* keep probability, so ``x * mask * scale`` is exactly unbiased.

    Arguments:
        key: key of shape ``(..., 2)``.
        shape: mask shape (int or tuple).
        p: drop probability, a Python float in ``[0, 1]``.
        device: output device (default: the key's device).

    Returns:
        ``(mask, scale)``: a ``bool`` tensor of shape ``key.shape[:-1] + shape`` (``True`` =
        keep) and a Python float (``1.0`` for ``p = 0``, ``0.0`` for ``p = 1``); while being
        traced by ``torch.compile`` the scale of ``0 < p < 1`` is a 0-dim float64 tensor
        (so that a symbolic ``p`` stays a graph input).

    Example:
        >>> import lux_torch.random as r
        >>> mask, scale = r.dropout_mask(r.key(0), (4, 8), 0.5)
        >>> mask.dtype, scale
        (torch.bool, 2.0)
    """
    fn = "dropout_mask"
    k = _prep_key(key, fn, device)
    shp = _normalize_shape(shape, fn)
    t, scale = _dropout_threshold(p, fn, k.device)
    return _lanes_mask(k, shp, t, fn), scale


def dropout(key: Tensor, x: Tensor, p: float) -> Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest.

    Computes ``x * mask * scale`` with ``(mask, scale) = dropout_mask(key, x.shape, p)``
    on ``x``'s device.  ``p = 0`` returns ``x`` itself; ``p = 1`` returns zeros.

    Arguments:
        key: key of shape ``(..., 2)`` (a batched key gives a result of shape
            ``key.shape[:-1] + x.shape``).
        x: floating tensor.
        p: drop probability, a Python float in ``[0, 1]``.

    Returns:
        tensor like ``x``.

    Example:
        >>> import torch, lux_torch.random as r
        >>> y = r.dropout(r.key(0), torch.ones(4, 4), 0.25)
        >>> sorted(set(y.flatten().tolist()))  # doctest: +SKIP
        [0.0, 1.3333333730697632]
    """
    fn = "dropout"
    k = _check_key(key, fn)
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"lux_torch.random.{fn}: `x` must be a floating tensor, got {x!r:.80}")
    t, scale = _dropout_threshold(p, fn, x.device)
    batch = k.shape[:-1]
    if isinstance(t, int) and t >= 1 << 16:
        return x if len(batch) == 0 else x.expand(*batch, *x.shape)
    if isinstance(t, int) and t == 0:
        return torch.zeros((*batch, *x.shape), dtype=x.dtype, device=x.device)
    mask = _lanes_mask(k.to(x.device), tuple(x.shape), t, fn)
    return (x * mask).mul_(scale)
