"""Pure functions turning hub-schema rows into ``(text, label)`` binary examples.

Tasks with a binary label column (sst2, amazon_polarity, boolq) format one row at a time; the
loader balances classes. Multiple-choice and preference tasks (sciq, cosmos_qa, anthropic_hh)
are made binary here, balanced by construction: exactly half of a batch's examples are
positive (one more negative for an odd batch), chosen by a seeded generator.

Texts put the short, decisive parts (question, answer) before long passages where the task
allows it: the training loop truncates texts to ``max_length`` tokens from the end, so a
question placed after a long passage would often be cut off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from w2sray.data.sampling import rng_for

Row = dict[str, Any]
Example = tuple[str, int]


def binary_label(raw: Any) -> int:
    """0/1 from a raw label: 0/1 ints or floats, bools, or strings "0"/"1"/"true"/"false".

    Raises ValueError for anything else (e.g. the -1 of unlabelled hub test splits).
    """
    if isinstance(raw, (bool, np.bool_)):
        return int(raw)
    if isinstance(raw, (int, np.integer)) and int(raw) in (0, 1):
        return int(raw)
    if isinstance(raw, (float, np.floating)) and float(raw) in (0.0, 1.0):
        return int(raw)
    if isinstance(raw, str):
        s = raw.strip().lower()
        if s in ("0", "1"):
            return int(s)
        if s in ("true", "false"):
            return int(s == "true")
    raise ValueError(f"label {raw!r} is not binary (expected 0/1 or true/false)")


def balanced_flags(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` booleans, exactly ``n // 2`` True, in random order."""
    return rng.permutation(np.arange(n) < n // 2)


def _balanced(
    rows: Sequence[Row], seed: int, purpose: str, example: Callable[..., Example], **kw: Any
) -> tuple[list[str], list[int]]:
    rng = rng_for(seed, purpose)
    flags = balanced_flags(len(rows), rng)
    pairs = [example(row, bool(f), rng, **kw) for row, f in zip(rows, flags, strict=True)]
    return [t for t, _ in pairs], [y for _, y in pairs]


# ---------------------------------------------------------------------------------------------
# Labelled tasks: one row, one example


def format_sst2(row: Row) -> Example:
    """SST-2 (``stanfordnlp/sst2``), row schema: ``{"idx": int, "sentence": str, "label": 0|1}``.

    Text: the sentence. Label: 1 positive, 0 negative.
    """
    return row["sentence"], binary_label(row["label"])


def format_amazon_polarity(row: Row) -> Example:
    """Amazon polarity (``fancyzhx/amazon_polarity``), row schema:
    ``{"label": 0|1, "title": str, "content": str}``.

    Text: ``"{title}\\n{content}"`` (the content alone if the title is empty). Label: 1 positive.
    """
    title, content = row["title"].strip(), row["content"].strip()
    return (f"{title}\n{content}" if title else content), binary_label(row["label"])


def format_boolq(row: Row) -> Example:
    """BoolQ (``google/boolq``), row schema: ``{"question": str, "answer": bool, "passage": str}``.

    Text: ``"Question: {question}?\\nPassage: {passage}"``; the question comes first so that
    truncating a long passage keeps it. Label: 1 if the answer is yes.
    """
    question = row["question"].strip().rstrip("?")
    return f"Question: {question}?\nPassage: {row['passage'].strip()}", binary_label(row["answer"])


# ---------------------------------------------------------------------------------------------
# Multiple choice, made binary: is this the correct answer?


def sciq_example(row: Row, correct: bool, rng: np.random.Generator) -> Example:
    """One SciQ (``allenai/sciq``) example; row schema: ``{"question": str,
    "correct_answer": str, "distractor1": str, "distractor2": str, "distractor3": str,
    "support": str}``.

    Text: ``"Question: {question}\\nAnswer: {answer}"``, the answer being the correct one if
    ``correct`` else a distractor drawn from ``rng``. Label: ``int(correct)``. The support
    paragraph is left out: it usually states the answer outright.
    """
    if correct:
        answer = row["correct_answer"]
    else:
        wrong = [
            d
            for d in (row["distractor1"], row["distractor2"], row["distractor3"])
            if d and d.strip() and d.strip() != row["correct_answer"].strip()
        ]
        if not wrong:
            raise ValueError(f"sciq row has no usable distractor: {row['question']!r}")
        answer = wrong[int(rng.integers(len(wrong)))]
    return f"Question: {row['question'].strip()}\nAnswer: {answer.strip()}", int(correct)


def format_sciq(rows: Sequence[Row], seed: int) -> tuple[list[str], list[int]]:
    """SciQ rows (see sciq_example) to examples, exactly half correct, deterministic in seed."""
    return _balanced(rows, seed, "sciq", sciq_example)


def cosmos_qa_example(row: Row, correct: bool, rng: np.random.Generator) -> Example:
    """One Cosmos QA (``allenai/cosmos_qa``) example; row schema: ``{"id": str,
    "context": str, "question": str, "answer0".."answer3": str, "label": 0-3}``.

    Text: ``"Question: {question}\\nAnswer: {answer}\\nContext: {context}"``, the answer being
    ``answer{label}`` if ``correct`` else one of the other three drawn from ``rng``; question and
    answer first so that truncating a long context keeps them. Label: ``int(correct)``.
    """
    label = row["label"]
    if not isinstance(label, (int, np.integer)) or not 0 <= int(label) <= 3:
        raise ValueError(f"cosmos_qa row {row.get('id')!r}: label {label!r} is not 0-3")
    if correct:
        answer = row[f"answer{int(label)}"]
    else:
        answer = row[f"answer{[i for i in range(4) if i != label][int(rng.integers(3))]}"]
    text = (
        f"Question: {row['question'].strip()}\nAnswer: {answer.strip()}\n"
        f"Context: {row['context'].strip()}"
    )
    return text, int(correct)


def format_cosmos_qa(rows: Sequence[Row], seed: int) -> tuple[list[str], list[int]]:
    """Cosmos QA rows to examples, exactly half correct, deterministic in seed."""
    return _balanced(rows, seed, "cosmos_qa", cosmos_qa_example)


# ---------------------------------------------------------------------------------------------
# Pairwise preference

_ASSISTANT = "\n\nAssistant:"


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH transcripts into ``(shared prompt, chosen response, rejected response)``.

    The prompt is the transcripts' common prefix cut back to its last ``"\\n\\nAssistant:"``
    (a character-level prefix would also swallow the responses' common first words); the
    responses are what follows that marker, stripped. When the transcripts share no assistant
    turn the prompt is empty and the responses are the whole transcripts.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(_ASSISTANT)
    if cut < 0:
        return "", chosen.strip(), rejected.strip()
    rest = cut + len(_ASSISTANT)
    return chosen[:cut].strip(), chosen[rest:].strip(), rejected[rest:].strip()


def anthropic_hh_example(
    row: Row,
    chosen_first: bool,
    rng: np.random.Generator | None = None,
    max_prompt_chars: int | None = None,
    max_response_chars: int | None = None,
) -> Example:
    """One pairwise example from an Anthropic HH-RLHF (``Anthropic/hh-rlhf``) row, schema:
    ``{"chosen": str, "rejected": str}``, two full ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``
    transcripts that differ in the final assistant response.

    One response alone leaves models at chance, so the example shows both::

        Human: ...

        Assistant: ...

        Human: <last human turn>

        Response A: <one final assistant response>

        Response B: <the other>

    The shared prompt (see split_hh_pair) comes first, then the two responses; Response A is the
    chosen one if ``chosen_first``. Label: 1 if Response A is the chosen one, else 0.
    ``max_prompt_chars`` keeps only the prompt's end (the latest turns, after "..."), and
    ``max_response_chars`` each response's start, so that truncation to ``max_length`` tokens
    does not cut Response B off. ``rng`` is unused (the order is ``chosen_first``); it is
    accepted for the balanced-batch signature.
    """
    prompt, good, bad = split_hh_pair(row["chosen"], row["rejected"])
    if max_prompt_chars is not None and len(prompt) > max_prompt_chars:
        prompt = "..." + prompt[len(prompt) - max_prompt_chars :]
    if max_response_chars is not None:
        good, bad = good[:max_response_chars], bad[:max_response_chars]
    a, b = (good, bad) if chosen_first else (bad, good)
    head = f"{prompt}\n\n" if prompt else ""
    return f"{head}Response A: {a}\n\nResponse B: {b}", int(chosen_first)


def format_anthropic_hh(
    rows: Sequence[Row],
    seed: int,
    max_prompt_chars: int | None = None,
    max_response_chars: int | None = None,
) -> tuple[list[str], list[int]]:
    """HH-RLHF rows to pairwise examples (see anthropic_hh_example), the chosen response first
    in exactly half of them, deterministic in seed."""
    return _balanced(
        rows,
        seed,
        "anthropic_hh",
        anthropic_hh_example,
        max_prompt_chars=max_prompt_chars,
        max_response_chars=max_response_chars,
    )
