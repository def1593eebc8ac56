"""The embedded offline task: synthetic "reviews" whose label needs more than word counting.

Each example is a few clauses. A clause carries a polar word (positive or negative) that may be
negated ("not") and, optionally, intensified ("very") or put in a "but" clause (each doubles its
weight). The label is the sign of the weighted polarity sum. Reading a negation needs a token to
see its predecessor, which a one-layer model pooled at the last token cannot represent: it stays
near bag-of-words accuracy (~0.6) while two-layer models reach ~0.85-0.93 with 6,000 examples.
That is the ladder's accuracy gap (measured in benchmarks/RESULTS.md).
Everything is a pure function of the seed, so every worker regenerates identical data.
"""

from __future__ import annotations

import numpy as np

POSITIVE = [f"good{i}" for i in range(12)]
NEGATIVE = [f"bad{i}" for i in range(12)]
FILLER = [f"w{i}" for i in range(60)]
MODIFIERS = ["not", "very", "but"]
VOCAB = POSITIVE + NEGATIVE + FILLER + MODIFIERS + ["."]


def synthetic_rows(
    n: int,
    seed: int = 0,
    min_clauses: int = 2,
    max_clauses: int = 3,
    p_not: float = 0.5,
    p_very: float = 0.0,
    p_but: float = 0.0,
    max_filler: int = 1,
) -> tuple[list[str], list[int]]:
    """Return ``n`` (text, label) pairs, balanced by construction of the label rule's symmetry."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[int] = []
    # Draw every random choice for a block of candidates at once (per-call numpy overhead made
    # the clause-by-clause version take seconds per worker), then assemble strings in Python.
    # The block size is fixed, so the first k rows are the same whatever n is.
    while len(texts) < n:
        m = 2048
        c = max_clauses
        n_clauses = rng.integers(min_clauses, max_clauses + 1, size=m)
        n_before = rng.integers(0, max_filler + 1, size=(m, c))
        n_after = rng.integers(0, max_filler, size=(m, c)) if max_filler > 0 else np.zeros((m, c))
        fillers = rng.integers(0, len(FILLER), size=(m, c, 2 * max_filler + 1))
        but = rng.random((m, c)) < p_but
        very = rng.random((m, c)) < p_very
        neg = rng.random((m, c)) < p_not
        positive = rng.random((m, c)) < 0.5
        polar = rng.integers(0, len(POSITIVE), size=(m, c))
        for i in range(m):
            words: list[str] = []
            score = 0.0
            for j in range(int(n_clauses[i])):
                fill = fillers[i, j]
                words += [FILLER[k] for k in fill[: n_before[i, j]]]
                weight = 1.0
                if but[i, j]:
                    words.append("but")
                    weight *= 2.0
                if very[i, j]:
                    words.append("very")
                    weight *= 2.0
                if neg[i, j]:
                    words.append("not")
                words.append((POSITIVE if positive[i, j] else NEGATIVE)[polar[i, j]])
                score += weight * (-1.0 if neg[i, j] else 1.0) * (1.0 if positive[i, j] else -1.0)
                words += [FILLER[k] for k in fill[max_filler + 1 :][: int(n_after[i, j])]]
                words.append(".")
            if score == 0:  # ambiguous: no label exists, skip it
                continue
            texts.append(" ".join(words))
            labels.append(int(score > 0))
            if len(texts) == n:
                break
    return texts, labels
