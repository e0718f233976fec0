"""Counter-based Gaussian noise (Philox4x32-10, Salmon et al. 2011), the numpy twin of cpp_ext/philox.h.

The noise of element j of sample ``index`` at sampler step ``step`` depends only on (seed, index, step, j):
counter = (j // 4, step, index, 0), key = (seed mod 2^32, seed div 2^32); the four 32-bit words of one
Philox block become four normals by the Box-Muller transform in float64, then float32. So a seed gives the
same image whatever the batch it is drawn in, and the C++ loop and this one agree. A batch's seed is one
integer for every row or one per row (``row_seeds``), so rows of different seeds can share a batch.
"""

from __future__ import annotations

import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
INIT_STEP = 0xFFFFFFFF  # the "step" of the initial noise x_T
GUIDE_STEP = 0xFFFFFFFE  # the "step" of a guide's posterior draw z ~ q(z | guide), one row per sample
MASK64 = (1 << 64) - 1


def row_seeds(seed, batch: int) -> np.ndarray:
    """The 64-bit seed of each of ``batch`` rows (uint64 [batch]): an integer seed for every row (a Python or
    numpy integer, or a 0-d integer array), or one seed per row (an integer array, or a list of integers);
    an integer is taken modulo 2^64 (a negative seed wraps), in a list as alone."""
    if isinstance(seed, np.ndarray) and seed.ndim == 0 and seed.dtype.kind in "iu":
        seed = seed.item()
    if np.ndim(seed) == 0 and not isinstance(seed, (list, tuple)):
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"a seed must be an integer, got {seed!r}")
        return np.full(batch, int(seed) & MASK64, dtype=np.uint64)
    if isinstance(seed, (list, tuple)):  # not np.asarray: a list holding 2**63 or more would become float64
        bad = [v for v in seed if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
        if bad:
            raise ValueError(f"per-row seeds must be {batch} integers (one per row), got {bad[0]!r} among them")
        s = np.array([int(v) & MASK64 for v in seed], dtype=np.uint64)
    else:
        s = np.asarray(seed)
    if s.shape != (batch,) or s.dtype.kind not in "iu":
        raise ValueError(f"per-row seeds must be {batch} integers (one per row), got {s.dtype} {list(s.shape)}")
    return s.astype(np.uint64)  # int64 wraps modulo 2^64, as an integer seed does


def philox4x32(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on uint64 arrays holding 32-bit values; returns four uint64 arrays of 32-bit words. The key
    words k0, k1 are 32-bit integers or uint64 arrays of them (broadcast against the counters: a key per row)."""
    c0, c1, c2, c3 = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) & MASK32 for c in (c0, c1, c2, c3)))
    k0, k1 = np.asarray(k0, dtype=np.uint64) & MASK32, np.asarray(k1, dtype=np.uint64) & MASK32
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(W0)) & MASK32, (k1 + np.uint64(W1)) & MASK32
        p0, p1 = M0 * c0, M1 * c2  # exact 64-bit products of 32-bit words
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _normals(seed, indices: np.ndarray, step: int, n: int) -> np.ndarray:
    """[len(indices), n] standard normals (float32); row b keyed by (seed (or seed[b]), indices[b], step)."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)[None, :]  # (1, n/4)
    idx = (np.asarray(indices, dtype=np.int64).astype(np.uint64) & MASK32)[:, None]  # (B, 1)
    seeds = row_seeds(seed, len(idx))[:, None]  # (B, 1)
    x0, x1, x2, x3 = philox4x32(blocks, np.uint64(step), idx, np.uint64(0), seeds & MASK32, seeds >> np.uint64(32))
    u = [(w.astype(np.float64) + 0.5) / 4294967296.0 for w in (x0, x1, x2, x3)]
    r01, r23 = np.sqrt(-2.0 * np.log(u[0])), np.sqrt(-2.0 * np.log(u[2]))
    th01, th23 = 2.0 * np.pi * u[1], 2.0 * np.pi * u[3]
    out = np.stack([r01 * np.cos(th01), r01 * np.sin(th01), r23 * np.cos(th23), r23 * np.sin(th23)], axis=2)
    return out.reshape(out.shape[0], -1)[:, :n].astype(np.float32)


def normals(seed: int, index: int, step: int, n: int) -> np.ndarray:
    """``n`` standard normals (float32) for one sample at one step."""
    return _normals(seed, np.array([index]), step, n)[0]


def batch_normals(seed, indices, step: int, shape) -> np.ndarray:
    """Normals of shape [len(indices), *shape], row b keyed by sample index indices[b] and by ``seed`` (one
    integer) or ``seed[b]`` (one per row)."""
    n = int(np.prod(shape))
    return _normals(seed, np.asarray(indices), step, n).reshape(len(indices), *shape)
