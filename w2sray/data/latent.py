"""The embedded task with latent knowledge: documents about one of many hidden topics.

A document first draws its topic ``t`` uniformly from ``n_topics``; each of its words then comes,
with probability ``coherence``, from topic ``t``'s own words and otherwise from the whole
vocabulary (background noise), uniformly in either case. The binary label is a fixed partition
of the topics: half of them (chosen by ``task_seed``) are class 1. So the label is a function of
a latent variable, the topic, that every word of the document depends on.

Each class's topics partition that class's words; ``shared`` is the fraction of the vocabulary
that both classes use (each such word is in one topic of each class). With the shipped
``shared=1.0`` every word is in exactly one class-0 topic and one class-1 topic, so a single word
says nothing about the label: a bag-of-words or any model trained from scratch on a few thousand
labels stays at chance, and only the co-occurrence of words (which topic they share) reveals it.

Why unlabeled text carries the concept (the weak-to-strong setting of Burns et al., 2023,
offline):

- A causal LM pretrained on unlabeled documents must infer the topic to predict the next word:
  knowing it moves most of the coherent words' probability from the whole vocabulary onto the
  topic's ``vocab / (n_topics / 2)`` words (about 1 nat per word at the shipped setting, far
  more than two topics give). Its hidden state then encodes the topic posterior, and the label
  is a linear function of that posterior (the mass on class-1 topics): latent knowledge that a
  head fine-tuned on a few (possibly weak) labels can read out. Linear probes on frozen
  pretrained features confirm it (benchmarks/latent_calibration.py ``--probe``).
- Labels alone are a poor teacher: with shared words they carry no per-word signal at all.
- Capacity and pretraining compute give a ladder: how well a model represents the 16-way topic
  posterior depends on its width and depth (a 16-wide one-layer model does it poorly) and on
  how long it was pretrained.

The topics' words and the label partition are fixed by ``task_seed`` (part of the task's
definition: the same for every split, corpus and model); ``seed`` draws the documents.
Everything is a pure, vectorised function of both, so a pretraining corpus (another seed) and
the labelled splits share the topics but not the documents. ``latent_bayes_accuracy`` gives the
ceiling (the exact posterior, knowing the topics).

``n_facets`` (1 unless asked) independent topics per document, each over its own slice of the
vocabulary, the label their classes' majority (or parity, ``label_rule``). The model must then
track several topic posteriors at once, so capacity and pretraining compute, not the evidence in
a document, bound its accuracy (benchmarks/RESULTS.md 8d): what the shipped sweeps use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The shipped (calibrated) task: see benchmarks/latent_calibration.py for how it was chosen.
DEFAULTS = dict(
    vocab=512, n_topics=16, shared=1.0, coherence=0.65, min_words=8, max_words=16, task_seed=0
)  # fmt: skip

# Optional structure (the defaults give the one-topic task's documents unchanged): ``n_facets``
# independent latent topics per document, each over its own slice of the vocabulary, and the
# rule that turns their classes into the label.
FACET_DEFAULTS = dict(n_facets=1, label_rule="majority")
LABEL_RULES = ("majority", "parity")


def latent_param_problems(**params: Any) -> list[str]:
    """Problems with the generator's parameters (empty when they are valid); those not given
    take their DEFAULTS."""
    p = {**DEFAULTS, **FACET_DEFAULTS, **params}
    vocab, n_topics, shared, coherence = p["vocab"], p["n_topics"], p["shared"], p["coherence"]
    min_words, max_words, task_seed = p["min_words"], p["max_words"], p["task_seed"]
    n_facets, label_rule = p["n_facets"], p["label_rule"]
    problems = []
    for name, v in (("vocab", vocab), ("n_topics", n_topics), ("min_words", min_words),
                    ("max_words", max_words), ("task_seed", task_seed),
                    ("n_facets", n_facets)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            problems.append(f"{name} must be an integer, got {v!r}")
    if label_rule not in LABEL_RULES:
        problems.append(f"label_rule must be one of {', '.join(LABEL_RULES)}, got {label_rule!r}")
    for name, v in (("shared", shared), ("coherence", coherence)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)):
            problems.append(f"{name} must be a number, got {v!r}")
    if problems:
        return problems
    if n_topics < 2 or n_topics % 2:
        problems.append(f"n_topics must be an even number >= 2 (half per class), got {n_topics}")
    elif not 0.0 <= shared <= 1.0:
        problems.append(f"shared must be in [0, 1], got {shared}")
    elif n_facets < 1:
        problems.append(f"n_facets must be >= 1, got {n_facets}")
    elif label_rule == "majority" and n_facets % 2 == 0:
        problems.append(f"label_rule majority needs an odd n_facets, got {n_facets}")
    elif (
        round(shared * (vocab // n_facets))
        + (vocab // n_facets - round(shared * (vocab // n_facets))) // 2
        < n_topics // 2
    ):
        problems.append(
            f"vocab {vocab} is too small for {n_topics} topics"
            + (f" in each of {n_facets} facets" if n_facets > 1 else "")
            + " (each needs at least one word)"
        )
    if vocab > 7996:
        problems.append(f"vocab must be at most 7996 (the corpus tokenizer's words), got {vocab}")
    if not 0.0 < coherence <= 1.0:
        problems.append(f"coherence must be in (0, 1], got {coherence}")
    if not 1 <= min_words <= max_words:
        problems.append(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    if task_seed < 0:
        problems.append(f"task_seed must be >= 0, got {task_seed}")
    return problems


def latent_task(
    vocab: int, n_topics: int, shared: float = 0.0, task_seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """The task's definition: the words of each topic and the class (0 or 1) of each topic.

    ``round(shared * vocab)`` words are shared by the classes, the rest split evenly into words
    of class 0 and of class 1; the ``n_topics / 2`` topics of a class partition that class's
    words plus the shared words (so a shared word belongs to one topic of each class, and says
    nothing about the class on its own). Words are ``0..vocab-1``; a pure function of its args.
    """
    return _topics(np.random.default_rng([task_seed, 104729]), vocab, n_topics, shared)


def _topics(
    rng: np.random.Generator, vocab: int, n_topics: int, shared: float
) -> tuple[list[np.ndarray], np.ndarray]:
    perm = rng.permutation(vocab)
    n_shared = int(round(shared * vocab))
    n_excl = (vocab - n_shared) // 2
    common = perm[:n_shared]
    own = (perm[n_shared : n_shared + n_excl], perm[n_shared + n_excl :])
    half = n_topics // 2
    topics = [
        np.sort(t)
        for cls in (0, 1)
        for t in np.array_split(rng.permutation(np.concatenate([common, own[cls]])), half)
    ]
    order = rng.permutation(n_topics)  # topic ids do not give the class away
    return [topics[i] for i in order], (order >= half).astype(np.int64)


def latent_facets(
    vocab: int, n_topics: int, shared: float = 0.0, task_seed: int = 0, n_facets: int = 2
) -> list[tuple[np.ndarray, list[np.ndarray], np.ndarray]]:
    """The definition of a task with ``n_facets`` latent topics per document: the vocabulary is
    cut into ``n_facets`` disjoint slices (a pure function of ``task_seed``) and each slice gets
    its own ``n_topics`` topics and class split, as :func:`latent_task` builds them for one.
    Returns, per facet, (its words, its topics' words, its topics' classes), in global word ids.
    """
    rng = np.random.default_rng([task_seed, 104729, n_facets])
    out = []
    for words in np.array_split(rng.permutation(vocab), n_facets):
        words = np.sort(words)
        topics, topic_label = _topics(rng, len(words), n_topics, shared)
        out.append((words, [words[t] for t in topics], topic_label))
    return out


def combine_classes(classes: np.ndarray, label_rule: str) -> np.ndarray:
    """The label from the facets' classes (``classes``: shape (n, n_facets), 0/1): the majority
    class (odd ``n_facets``) or the parity (XOR) of the classes."""
    k = classes.shape[1]
    total = classes.sum(axis=1)
    return (total > k / 2).astype(np.int64) if label_rule == "majority" else total % 2


def latent_rows(
    n: int,
    seed: int = 0,
    vocab: int = DEFAULTS["vocab"],
    n_topics: int = DEFAULTS["n_topics"],
    shared: float = DEFAULTS["shared"],
    coherence: float = DEFAULTS["coherence"],
    min_words: int = DEFAULTS["min_words"],
    max_words: int = DEFAULTS["max_words"],
    task_seed: int = DEFAULTS["task_seed"],
    n_facets: int = FACET_DEFAULTS["n_facets"],
    label_rule: str = FACET_DEFAULTS["label_rule"],
) -> tuple[list[str], list[int]]:
    """Return ``n`` (text, label) pairs: texts of ``min_words..max_words`` words ``w<i>``.

    Params: ``vocab`` words in all; ``n_topics`` (even) topics of ``vocab / n_topics`` words
    each; ``coherence``: probability that a word comes from the document's topic rather than
    from the whole vocabulary; ``task_seed`` fixes the word-topic map and which topics are class
    1; ``seed`` draws the documents. Labels are balanced in expectation. Raises ValueError for
    bad parameters.

    With ``n_facets`` K > 1 a document has K independent latent topics, one per facet (each
    facet: its own slice of ``vocab // K`` words, ``n_topics`` topics, class split and
    ``shared``); each word first picks a facet uniformly, then comes from that facet's topic with
    probability ``coherence``, else uniformly from the facet's words. The label combines the
    facets' classes by ``label_rule``: ``majority`` (odd K) or ``parity``. K = 1 is the task
    above, document for document (``label_rule`` then changes nothing).
    """
    problems = latent_param_problems(
        vocab=vocab, n_topics=n_topics, shared=shared, coherence=coherence,
        min_words=min_words, max_words=max_words, task_seed=task_seed, n_facets=n_facets,
        label_rule=label_rule,
    )  # fmt: skip
    if n < 0:
        problems.append(f"n must be >= 0, got {n}")
    if problems:
        raise ValueError("; ".join(problems))
    if n_facets > 1:
        return _facet_rows(n, seed, vocab, n_topics, shared, coherence, min_words, max_words,
                           task_seed, n_facets, label_rule)  # fmt: skip
    topics, topic_label = latent_task(vocab, n_topics, shared, task_seed)
    # Words grouped by topic: topic k's words are members[starts[k] : starts[k] + sizes[k]].
    members = np.concatenate(topics)
    sizes = np.array([len(t) for t in topics])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng([seed, 15485863])
    topic = rng.integers(0, n_topics, size=n)
    lengths = rng.integers(min_words, max_words + 1, size=n)
    # All draws at once: for every word slot, on topic or not, then a word of that pool.
    on_topic = rng.random((n, max_words)) < coherence
    u = rng.random((n, max_words))
    in_topic = members[starts[topic][:, None] + (u * sizes[topic][:, None]).astype(np.int64)]
    background = rng.integers(0, vocab, size=(n, max_words))
    words = np.where(on_topic, in_topic, background)
    texts = [" ".join(f"w{w}" for w in words[i, : lengths[i]]) for i in range(n)]
    return texts, [int(v) for v in topic_label[topic]]


def _facet_rows(
    n, seed, vocab, n_topics, shared, coherence, min_words, max_words, task_seed, n_facets,
    label_rule,
) -> tuple[list[str], list[int]]:  # fmt: skip
    facets = latent_facets(vocab, n_topics, shared, task_seed, n_facets)
    # Every topic of every facet in one table: topic g = f * n_topics + k.
    topics = [t for _, ts, _ in facets for t in ts]
    members = np.concatenate(topics)
    sizes = np.array([len(t) for t in topics])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    f_members = np.concatenate([w for w, _, _ in facets])
    f_sizes = np.array([len(w) for w, _, _ in facets])
    f_starts = np.concatenate([[0], np.cumsum(f_sizes)[:-1]])
    rng = np.random.default_rng([seed, 15485863, n_facets])
    topic = rng.integers(0, n_topics, size=(n, n_facets))
    lengths = rng.integers(min_words, max_words + 1, size=n)
    facet = rng.integers(0, n_facets, size=(n, max_words))
    on_topic = rng.random((n, max_words)) < coherence
    u = rng.random((n, max_words))
    g = facet * n_topics + np.take_along_axis(topic, facet, axis=1)
    in_topic = members[starts[g] + (u * sizes[g]).astype(np.int64)]
    v = rng.random((n, max_words))
    background = f_members[f_starts[facet] + (v * f_sizes[facet]).astype(np.int64)]
    words = np.where(on_topic, in_topic, background)
    classes = np.stack([lab[topic[:, f]] for f, (_, _, lab) in enumerate(facets)], axis=1)
    labels = combine_classes(classes, label_rule)
    texts = [" ".join(f"w{w}" for w in words[i, : lengths[i]]) for i in range(n)]
    return texts, [int(y) for y in labels]


def latent_posterior(
    texts: list[str],
    vocab: int = DEFAULTS["vocab"],
    n_topics: int = DEFAULTS["n_topics"],
    shared: float = DEFAULTS["shared"],
    coherence: float = DEFAULTS["coherence"],
    task_seed: int = DEFAULTS["task_seed"],
    n_facets: int = FACET_DEFAULTS["n_facets"],
    label_rule: str = FACET_DEFAULTS["label_rule"],
    **_: object,
) -> np.ndarray:
    """P(label = 1 | text) under the generator (it knows every topic's words and class): the
    Bayes-optimal classifier's probabilities. Extra generator params (lengths) are unused."""
    if n_facets > 1:
        # Each word belongs to one facet's slice, so the likelihood factorises over facets: each
        # facet's class posterior from its own words, then the rule over independent classes.
        q = np.stack(
            [
                _class_posterior(texts, vocab, ts, lab, coherence, len(words))
                for words, ts, lab in latent_facets(vocab, n_topics, shared, task_seed, n_facets)
            ],
            axis=1,
        )
        if label_rule == "parity":
            return (1.0 - np.prod(1.0 - 2.0 * q, axis=1)) / 2.0
        dist = np.ones((len(texts), 1))  # P(number of class-1 facets = j), facet by facet
        for f in range(n_facets):
            nxt = np.zeros((len(texts), dist.shape[1] + 1))
            nxt[:, :-1] += dist * (1 - q[:, f : f + 1])
            nxt[:, 1:] += dist * q[:, f : f + 1]
            dist = nxt
        return dist[:, n_facets // 2 + 1 :].sum(axis=1)
    topics, topic_label = latent_task(vocab, n_topics, shared, task_seed)
    return _class_posterior(texts, vocab, topics, topic_label, coherence, vocab)


def _class_posterior(texts, vocab, topics, topic_label, coherence, pool) -> np.ndarray:
    """P(class 1 | text) for one set of topics whose background words are ``pool`` many."""
    n_topics = len(topics)
    # log p(word | topic k) up to a term shared by all topics: a word of topic k has probability
    # coherence / size_k + (1 - coherence) / vocab, any other word (1 - coherence) / vocab.
    table = np.zeros((vocab, n_topics))
    for k, words in enumerate(topics):
        table[words, k] = (
            np.log1p(coherence * pool / ((1.0 - coherence) * len(words)))
            if coherence < 1
            else 1e6  # coherence 1: every word is of the topic
        )
    loglik = np.zeros((len(texts), n_topics))
    for i, text in enumerate(texts):
        loglik[i] = table[[int(w[1:]) for w in text.split()]].sum(axis=0)
    loglik -= loglik.max(axis=1, keepdims=True)
    post = np.exp(loglik)
    post /= post.sum(axis=1, keepdims=True)
    return post[:, topic_label == 1].sum(axis=1)


def latent_bayes_accuracy(texts: list[str], labels: list[int], **params: object) -> float:
    """The Bayes-optimal classifier's accuracy on ``texts`` (``params``: the generator's; a tie
    counted half right): the ceiling no model can pass in expectation."""
    p1 = latent_posterior(texts, **params)
    y = np.asarray(labels)
    correct = np.where(np.isclose(p1, 0.5), 0.5, ((p1 > 0.5) == (y == 1)).astype(float))
    return float(correct.mean()) if len(texts) else 0.0
