"""Pure-Python reference of lux_torch.random's bits: Philox4x32 (Salmon, Moraes, Dror and
Shaw, SC'11; Random123) on Python integers, the stream layout and the dropout lanes, written
from the published algorithm and the documented layout, independent of the library's code."""

from __future__ import annotations

from collections.abc import Sequence

MASK32 = 0xFFFFFFFF
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
TAG_SPLIT = 0x53504C54  # "SPLT"
TAG_FOLD = 0x464F4C44  # "FOLD"


def ref_philox(counter: Sequence[int], key: Sequence[int], rounds: int = 10) -> list[int]:
    """The four output words of Philox4x32-``rounds``."""
    c0, c1, c2, c3 = (int(v) & MASK32 for v in counter)
    k0, k1 = (int(v) & MASK32 for v in key)
    for _ in range(rounds):
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
        k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return [c0, c1, c2, c3]


def ref_words(key: Sequence[int], n_blocks: int, tag: int = 0) -> list[int]:
    """The stream ``block(0)[0..3], block(1)[0..3], ...`` of the counters ``(i, 0, tag, 0)``."""
    return [w for i in range(n_blocks) for w in ref_philox((i, 0, tag, 0), key)]


def ref_keep_mask(key: Sequence[int], n: int, threshold: int) -> list[bool]:
    """Dropout's keep mask: the 16-bit lanes of the data words, low lane first, ``< t``."""
    words = ref_words(key, (n + 7) // 8)
    lanes = [half for w in words for half in (w & 0xFFFF, w >> 16)]
    return [lane < threshold for lane in lanes[:n]]
