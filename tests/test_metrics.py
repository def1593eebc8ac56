"""Tests for w2sray.metrics against brute-force definitions written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from w2sray.metrics import accuracy, roc_auc


def brute_auc(labels, scores) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(8))
def test_roc_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = rng.integers(0, 2, size=n)
    labels[0], labels[1] = 0, 1  # both classes present
    scores = rng.integers(0, 5, size=n) / 4.0  # few distinct values: many ties
    assert roc_auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


def test_roc_auc_continuous_scores():
    rng = np.random.default_rng(42)
    labels = rng.integers(0, 2, size=200)
    scores = rng.normal(size=200) + labels  # informative
    got = roc_auc(labels, scores)
    assert got == pytest.approx(brute_auc(labels, scores), abs=1e-12)
    assert 0.6 < got < 0.9


def test_roc_auc_extremes():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # A hand count: pairs (p, n): (0.4>0.3)=1, (0.4=0.4)=.5, (0.9>0.3)=1, (0.9>0.4)=1 -> 3.5 / 4
    assert roc_auc([0, 1, 0, 1], [0.3, 0.4, 0.4, 0.9]) == pytest.approx(0.875)


def test_roc_auc_invariant_to_order_and_monotone_transform():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=50)
    scores = rng.integers(0, 7, size=50).astype(float)
    perm = rng.permutation(50)
    base = roc_auc(labels, scores)
    assert roc_auc(labels[perm], scores[perm]) == pytest.approx(base)
    assert roc_auc(labels, np.exp(scores) * 3 - 1) == pytest.approx(base)


def test_roc_auc_one_class_is_nan():
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(roc_auc([0, 0], [0.1, 0.5]))


def test_accuracy():
    labels = np.array([1, 0, 1, 0, 1])
    p1 = np.array([0.9, 0.1, 0.4, 0.6, 0.51])
    assert accuracy(labels, p1) == pytest.approx(3 / 5)
    # Exactly 0.5 predicts class 0.
    assert accuracy([0, 1], [0.5, 0.5]) == 0.5
    assert accuracy([1, 1], [1.0, 0.7]) == 1.0
    assert accuracy([1, 0], [0.0, 1.0]) == 0.0
    assert isinstance(accuracy(labels, p1), float)
    assert math.isnan(accuracy([], []))


def test_accuracy_matches_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=101)
    p1 = rng.random(101)
    expected = sum(int(p > 0.5) == y for y, p in zip(labels, p1, strict=True)) / 101
    assert accuracy(labels, p1) == pytest.approx(expected)
