"""The embedded task with latent knowledge (w2sray/data/latent.py) and its registry entry."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from w2sray.data import DATASETS, make_splits, validate_dataset_params
from w2sray.data.latent import (
    DEFAULTS,
    FACET_DEFAULTS,
    combine_classes,
    latent_bayes_accuracy,
    latent_facets,
    latent_posterior,
    latent_rows,
    latent_task,
)


def test_a_pure_function_of_its_seeds():
    assert latent_rows(200, seed=3) == latent_rows(200, seed=3)
    assert latent_rows(200, seed=3)[0] != latent_rows(200, seed=4)[0]
    other_task = latent_rows(200, seed=3, task_seed=1)
    assert other_task[0] != latent_rows(200, seed=3)[0]


def test_documents_have_the_lengths_and_vocabulary_asked_for():
    texts, labels = latent_rows(500, seed=0, vocab=64, min_words=3, max_words=5)
    lengths = {len(t.split()) for t in texts}
    assert lengths == {3, 4, 5}
    assert all(0 <= int(w[1:]) < 64 for t in texts for w in t.split())
    assert 0.4 < np.mean(labels) < 0.6  # balanced in expectation


def test_with_shared_words_no_single_word_gives_the_class_away():
    """The shipped task (shared: 1.0): every word belongs to a topic of each class, so a bag of
    word counts learned from labels has nothing to go on; only co-occurrence (the topic) does."""
    topics, topic_label = latent_task(64, 8, shared=1.0)
    owner = {
        c: set(np.concatenate([t for t, y in zip(topics, topic_label, strict=True) if y == c]))
        for c in (0, 1)
    }  # noqa: E501
    assert owner[0] == owner[1] == set(range(64))
    texts, labels = latent_rows(20000, seed=0, vocab=64, n_topics=8, shared=1.0)
    per_class = [
        Counter(w for t, y in zip(texts, labels, strict=True) if y == c for w in t.split())
        for c in (0, 1)
    ]  # noqa: E501
    n = [sum(c.values()) for c in per_class]
    rates = [per_class[1][f"w{i}"] / n[1] / (per_class[0][f"w{i}"] / n[0]) for i in range(64)]
    assert 0.85 < min(rates) and max(rates) < 1.15  # each word about as frequent in both


def test_bayes_classifier_knows_the_topics():
    texts, labels = latent_rows(2000, seed=5)
    bayes = latent_bayes_accuracy(texts, labels, **DEFAULTS)
    assert bayes > 0.95
    # Less coherent documents carry less evidence: a lower ceiling.
    t2, y2 = latent_rows(2000, seed=5, coherence=0.3)
    assert latent_bayes_accuracy(t2, y2, **{**DEFAULTS, "coherence": 0.3}) < bayes - 0.05
    # The posterior is a probability and is wrong about the task under another task seed.
    p = latent_posterior(texts, **DEFAULTS)
    assert ((p >= 0) & (p <= 1)).all()
    assert latent_bayes_accuracy(texts, labels, **{**DEFAULTS, "task_seed": 1}) < 0.7


@pytest.mark.parametrize(
    "params, words",
    [
        ({"n_topics": 3}, "n_topics"),
        ({"coherence": 0.0}, "coherence"),
        ({"shared": 1.5}, "shared"),
        ({"min_words": 5, "max_words": 2}, "min_words"),
        ({"vocab": "many"}, "vocab must be an integer"),
        ({"vocab": 9000}, "vocab must be at most"),
    ],
)
def test_bad_params_are_named(params, words):
    assert any(words in p for p in validate_dataset_params("latent", params))
    with pytest.raises(ValueError, match=words):
        latent_rows(10, **params)


def test_registered_with_its_defaults_and_disjoint_splits():
    entry = DATASETS["latent"]
    assert entry.defaults == {**DEFAULTS, **FACET_DEFAULTS}
    assert set(entry.params) == set(DEFAULTS) | set(FACET_DEFAULTS)
    assert validate_dataset_params("latent", {"nope": 1}) == [
        f"unknown parameter 'nope' for dataset 'latent' (accepted: {', '.join(entry.params)})"
    ]
    s = make_splits("latent", {}, 100, 100, 100, split_seed=0)
    assert len(set(s.gt_ids) | set(s.weak_ids) | set(s.test_ids)) == 300
    # a pretraining corpus (another seed) shares the task, not the documents
    corpus, _ = latent_rows(300, seed=1)
    assert not set(corpus) & set(s.test_texts)


def test_facets_off_by_default_and_the_rule_then_changes_nothing():
    """n_facets = 1 (the default) is the shipped task document for document."""
    assert latent_rows(300, seed=2) == latent_rows(300, seed=2, n_facets=1, label_rule="parity")


def test_facets_a_pure_function_of_its_seeds():
    kw = dict(n_facets=3, n_topics=6, min_words=12, max_words=16)
    assert latent_rows(300, seed=2, **kw) == latent_rows(300, seed=2, **kw)
    assert latent_rows(300, seed=2, **kw)[0] != latent_rows(300, seed=3, **kw)[0]
    assert latent_rows(300, seed=2, **kw)[0] != latent_rows(300, seed=2, task_seed=1, **kw)[0]


@pytest.mark.parametrize("rule", ["majority", "parity"])
def test_facets_each_word_from_its_facets_topic_and_the_label_combines_their_classes(rule):
    """With coherence 1 every word is of its facet's topic: the facets' slices are disjoint,
    each document's words of a facet lie in one topic of it, and the label is the rule applied
    to those topics' classes (the Bayes classifier, which knows the topics, is then exact)."""
    k = 3
    facets = latent_facets(96, 4, shared=1.0, n_facets=k)
    slices = [set(words) for words, _, _ in facets]
    assert sum(len(s) for s in slices) == 96 and len(set().union(*slices)) == 96
    texts, labels = latent_rows(
        400, seed=0, vocab=96, n_topics=4, coherence=1.0, min_words=30, max_words=30,
        n_facets=k, label_rule=rule,
    )  # fmt: skip
    assert 0.4 < np.mean(labels) < 0.6
    for text, y in zip(texts[:100], labels[:100], strict=True):
        words = [int(w[1:]) for w in text.split()]
        classes = []
        for f, (_, topics, topic_label) in enumerate(facets):
            mine = {w for w in words if w in slices[f]}
            fits = [c for t, c in zip(topics, topic_label, strict=True) if mine <= set(t)]
            assert fits  # some topic of the facet holds all its words
            classes.append(fits[0] if len(set(fits)) == 1 else None)
        if None not in classes:
            assert y == int(combine_classes(np.array([classes]), rule)[0])
    params = dict(vocab=96, n_topics=4, coherence=1.0, n_facets=k, label_rule=rule)
    assert latent_bayes_accuracy(texts, labels, **params) > 0.97


def test_facets_posterior_is_a_probability_and_knows_the_task():
    kw = dict(n_facets=3, n_topics=6, coherence=0.9, min_words=24, max_words=32)
    texts, labels = latent_rows(1000, seed=4, **kw)
    p = latent_posterior(texts, **kw)
    assert ((p >= 0) & (p <= 1)).all()
    assert latent_bayes_accuracy(texts, labels, **kw) > 0.95
    assert latent_bayes_accuracy(texts, labels, **{**kw, "task_seed": 1}) < 0.7


@pytest.mark.parametrize(
    "params, words",
    [
        ({"n_facets": 2}, "odd n_facets"),
        ({"n_facets": 0}, "n_facets must be >= 1"),
        ({"n_facets": 2.0}, "n_facets must be an integer"),
        ({"label_rule": "sum"}, "label_rule must be one of"),
        ({"n_facets": 9, "vocab": 64}, "in each of 9 facets"),
    ],
)
def test_bad_facet_params_are_named(params, words):
    with pytest.raises(ValueError, match=words):
        latent_rows(10, **params)
