"""Deterministic row selection shared by the hub and local loaders.

Loaders receive ``n`` (the examples the splits need) and ``seed`` (the split seed). They pick
rows here, as a pure function of both, so every Ray worker selects exactly the same examples.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """A generator for one purpose of one seed.

    make_splits permutes with ``default_rng(split_seed)``; mixing a purpose tag into the seed
    keeps the loaders' draws (row order, answer choice, pair order) independent of that stream.
    """
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def shuffled_indices(n_rows: int, n: int, seed: int) -> np.ndarray:
    """The first ``n`` of a seeded permutation of ``range(n_rows)`` (all rows if fewer)."""
    return rng_for(seed, "order").permutation(n_rows)[:n]


def balanced_indices(labels: Sequence[int], n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows with ``n // 2`` of each binary class, in seeded shuffled order.

    For odd ``n`` one class gets one more row. If the minority class is too small the result
    holds every minority row and as many majority rows, i.e. fewer than ``n``: make_splits then
    reports the shortfall.
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(y.tolist()) - {0, 1})[:5]}")
    order = rng_for(seed, "order").permutation(len(y))
    ys = y[order]
    pos, neg = ys == 1, ys == 0
    k = min(n // 2, int(pos.sum()), int(neg.sum()))
    # Take, in shuffled order, the first k rows of each class.
    take = (pos & (np.cumsum(pos) <= k)) | (neg & (np.cumsum(neg) <= k))
    if n % 2 and k == n // 2 and not take.all():
        take[np.argmin(take)] = True  # the odd one out: the next unused row in shuffled order
    return order[take]
