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
    while len(texts) < n:
        words: list[str] = []
        score = 0.0
        for _ in range(int(rng.integers(min_clauses, max_clauses + 1))):
            words += list(rng.choice(FILLER, size=int(rng.integers(0, max_filler + 1))))
            weight = 1.0
            if rng.random() < p_but:
                words.append("but")
                weight *= 2.0
            if rng.random() < p_very:
                words.append("very")
                weight *= 2.0
            sign = 1.0
            if rng.random() < p_not:
                words.append("not")
                sign = -1.0
            positive = rng.random() < 0.5
            words.append(str(rng.choice(POSITIVE if positive else NEGATIVE)))
            score += weight * sign * (1.0 if positive else -1.0)
            # Trailing filler: fewer than max_filler words (none, without drawing, when it is 0).
            n_after = int(rng.integers(0, max_filler)) if max_filler > 0 else 0
            words += list(rng.choice(FILLER, size=n_after))
            words.append(".")
        if score == 0:  # ambiguous: no label exists, draw again
            continue
        texts.append(" ".join(words))
        labels.append(int(score > 0))
    return texts, labels
