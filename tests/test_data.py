"""Tests for w2sray.data: splits, the synthetic task's label rule, and the word-level tokenizer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from w2sray.data import DATASETS, make_splits, validate_dataset_params
from w2sray.data.synthetic import FILLER, NEGATIVE, POSITIVE, VOCAB, synthetic_rows
from w2sray.data.tokenizer import SPECIALS, build_synthetic_tokenizer

SIZES = dict(n_gt=120, n_weak=90, n_test=60)


def splits(seed: int, **params):
    return make_splits("synthetic", params, split_seed=seed, **SIZES)


# ------------------------------------------------------------------------------------------------
# Splits


def test_splits_disjoint_and_cover_distinct_examples():
    s = splits(0)
    a, b, t = (set(map(int, ids)) for ids in (s.gt_ids, s.weak_ids, s.test_ids))
    assert (len(a), len(b), len(t)) == (120, 90, 60)  # no repeated id within a split
    assert not a & b and not a & t and not b & t
    need = sum(SIZES.values())
    assert a | b | t == set(range(need))
    # Each split's rows are the loaded rows at its ids.
    texts, labels = DATASETS["synthetic"].load(need, 0)
    for ids, tx, ys in (
        (s.gt_ids, s.gt_texts, s.gt_labels),
        (s.weak_ids, s.weak_texts, s.weak_labels),
        (s.test_ids, s.test_texts, s.test_labels),
    ):
        assert tx == [texts[i] for i in ids]
        assert ys == [labels[i] for i in ids]
        assert all(isinstance(y, int) and y in (0, 1) for y in ys)
    assert (len(s.gt_texts), len(s.weak_texts), len(s.test_texts)) == (120, 90, 60)


def test_splits_deterministic_in_split_seed():
    a, b = splits(3), splits(3)
    for name in ("gt_ids", "weak_ids", "test_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.gt_texts == b.gt_texts and a.test_labels == b.test_labels


def test_splits_differ_for_another_split_seed():
    a, c = splits(0), splits(1)
    assert not np.array_equal(a.gt_ids, c.gt_ids)
    assert a.gt_texts != c.gt_texts
    assert a.test_texts != c.test_texts


def test_splits_pass_dataset_params():
    plain = splits(0)
    negated = splits(0, p_not=1.0)
    assert plain.gt_texts != negated.gt_texts
    assert all(t.count("not") == t.count(".") for t in negated.gt_texts)


def test_splits_too_large_for_dataset(monkeypatch):
    from w2sray.data import DatasetEntry

    monkeypatch.setitem(
        DATASETS, "tiny", DatasetEntry("tiny", lambda n, seed: (["a"] * 5, [0] * 5), "", ())
    )
    with pytest.raises(ValueError, match="has 5 examples, the splits need 6"):
        make_splits("tiny", {}, 2, 2, 2, 0)


def test_validate_dataset_params():
    assert validate_dataset_params("synthetic", {"p_not": 0.2, "max_clauses": 4}) == []
    (problem,) = validate_dataset_params("synthetic", {"n": 3})
    assert "unknown parameter 'n'" in problem
    assert "seed" not in DATASETS["synthetic"].params


# ------------------------------------------------------------------------------------------------
# Synthetic task


def test_labels_roughly_balanced_and_deterministic():
    texts, labels = synthetic_rows(1000, seed=11)
    assert len(texts) == len(labels) == 1000
    assert 0.4 <= float(np.mean(labels)) <= 0.6
    again = synthetic_rows(300, seed=11)  # generated row by row: a prefix of the same stream
    assert again == (texts[:300], labels[:300])
    other_texts, _ = synthetic_rows(300, seed=12)
    assert other_texts != texts[:300]


def rule_score(text: str) -> float:
    """The label rule, re-derived from the words: per clause (ending at '.'), the polar word
    counts +1 (goodN) or -1 (badN), flipped by 'not', doubled by each of 'very' and 'but'."""
    score = 0.0
    weight, sign = 1.0, 1.0
    for w in text.split():
        if w == ".":
            weight, sign = 1.0, 1.0
        elif w in ("very", "but"):
            weight *= 2
        elif w == "not":
            sign = -sign
        elif re.fullmatch(r"good\d+", w):
            score += weight * sign
        elif re.fullmatch(r"bad\d+", w):
            score -= weight * sign
        else:
            assert re.fullmatch(r"w\d+", w), w
    return score


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"p_very": 0.4, "p_but": 0.4, "min_clauses": 1, "max_clauses": 4},
        {"p_not": 1.0},
        {"p_not": 0.0, "max_filler": 3},
    ],
)
def test_label_rule(params):
    texts, labels = synthetic_rows(300, seed=5, **params)
    for text, label in zip(texts, labels, strict=True):
        score = rule_score(text)
        assert score != 0, text
        assert label == int(score > 0), text
        assert text.endswith(".")
        assert all(w in VOCAB for w in text.split())


def test_negation_flips_polarity():
    texts, labels = synthetic_rows(400, seed=2, min_clauses=1, max_clauses=1)
    negated = plain = 0
    for text, label in zip(texts, labels, strict=True):
        words = text.split()
        (polar,) = [w for w in words if w in POSITIVE or w in NEGATIVE]
        positive_word = polar in POSITIVE
        if "not" in words:
            negated += 1
            assert words.index("not") == words.index(polar) - 1
            assert label == int(not positive_word), text
        else:
            plain += 1
            assert label == int(positive_word), text
    assert negated > 100 and plain > 100


def test_no_filler_words():
    """max_filler=0 means clauses without filler words (it used to crash: rng.integers(0, 0))."""
    texts, labels = synthetic_rows(50, seed=0, max_filler=0)
    assert len(texts) == 50
    assert not any(w in FILLER for t in texts for w in t.split())
    for text, label in zip(texts, labels, strict=True):
        assert label == int(rule_score(text) > 0)


# ------------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_round_trip_and_pad():
    tok = build_synthetic_tokenizer()
    assert tok.pad_token == "[PAD]"
    assert tok.pad_token_id == SPECIALS.index("[PAD]")
    assert tok.padding_side == "right"
    assert len(tok) == len(SPECIALS) + len(VOCAB)
    texts, _ = synthetic_rows(20, seed=1, p_very=0.5, p_but=0.5)
    for text in texts:
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text.split())  # one id per word, no specials added
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    assert tok("good0 zzz")["input_ids"][1] == tok.unk_token_id
    batch = tok(["good1 .", "not bad2 w3 ."], padding=True)
    assert batch["input_ids"][0][-2:] == [tok.pad_token_id] * 2
    assert batch["attention_mask"][0] == [1, 1, 0, 0]


def test_corpus_tokenizer_learns_words_from_split_a():
    from w2sray.data.tokenizer import build_corpus_tokenizer

    texts = ["A good film, truly.", "a BAD film", "good good"]
    tok = build_corpus_tokenizer(texts)
    again = build_corpus_tokenizer(list(texts))
    assert tok.get_vocab() == again.get_vocab()  # deterministic
    # most frequent first after the specials; ties alphabetical
    assert tok.convert_ids_to_tokens(list(range(4, 7))) == ["good", "a", "film"]
    assert tok.tokenize("Good FILM, zebra") == ["good", "film", ",", "[UNK]"]
    ids = tok("good zebra")["input_ids"]
    assert ids[1] == tok.unk_token_id and tok.pad_token == "[PAD]"
    small = build_corpus_tokenizer(texts, max_vocab=6)
    assert len(small) == 6
