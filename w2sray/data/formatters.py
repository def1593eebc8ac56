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


# ---------------------------------------------------------------------------------------------
# The paper's NLP set and EleutherAI/w2s's registry: more labelled tasks. Row schemas are the
# hub's; the decisive short parts (question, answer) come before long passages.


def format_text_label(row: Row) -> Example:
    """``{"text": str, "label": 0|1}`` rows (``stanfordnlp/imdb``, ``fancyzhx/yelp_polarity``):
    the text as is. Label: 1 positive."""
    return row["text"], binary_label(row["label"])


def format_cola(row: Row) -> Example:
    """GLUE CoLA (``nyu-mll/glue``, config ``cola``): ``{"sentence": str, "label": 0|1,
    "idx": int}``. Label: 1 if the sentence is grammatically acceptable."""
    return row["sentence"], binary_label(row["label"])


def format_paws(row: Row) -> Example:
    """PAWS (``google-research-datasets/paws``, config ``labeled_final``): ``{"id": int,
    "sentence1": str, "sentence2": str, "label": 0|1}``. Label: 1 if paraphrases."""
    text = f"Sentence 1: {row['sentence1'].strip()}\nSentence 2: {row['sentence2'].strip()}"
    return text, binary_label(row["label"])


def format_wic(row: Row) -> Example:
    """SuperGLUE WiC (``aps/super_glue``, config ``wic``): ``{"word": str, "sentence1": str,
    "sentence2": str, "start1".."end2": int, "idx": int, "label": 0|1}``. Label: 1 if the word
    has the same meaning in both sentences."""
    text = (
        f"Word: {row['word'].strip()}\nSentence 1: {row['sentence1'].strip()}\n"
        f"Sentence 2: {row['sentence2'].strip()}"
    )
    return text, binary_label(row["label"])


def format_multirc(row: Row) -> Example:
    """SuperGLUE MultiRC (``aps/super_glue``, config ``multirc``): ``{"paragraph": str,
    "question": str, "answer": str, "idx": {...}, "label": 0|1}``. Label: 1 if the answer is
    true. Question and answer precede the (long) paragraph."""
    text = (
        f"Question: {row['question'].strip()}\nAnswer: {row['answer'].strip()}\n"
        f"Passage: {row['paragraph'].strip()}"
    )
    return text, binary_label(row["label"])


def format_mc_taco(row: Row) -> Example:
    """MC-TACO (``CogComp/mc_taco``): ``{"sentence": str, "question": str, "answer": str,
    "label": 0|1, "category": int}``. Label: 1 if the answer is plausible."""
    text = (
        f"Question: {row['question'].strip()}\nAnswer: {row['answer'].strip()}\n"
        f"Context: {row['sentence'].strip()}"
    )
    return text, binary_label(row["label"])


def anli_label(raw: Any) -> int:
    """ANLI's 3-way label (0 entailment, 1 neutral, 2 contradiction) as 1 for entailment,
    0 otherwise, as EleutherAI/w2s binarises it."""
    if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool) and 0 <= raw <= 2:
        return int(raw == 0)
    raise ValueError(f"label {raw!r} is not an NLI label (expected 0, 1 or 2)")


def format_anli(row: Row) -> Example:
    """ANLI (``facebook/anli``): ``{"uid": str, "premise": str, "hypothesis": str,
    "label": 0|1|2, "reason": str}``. Label: 1 if the premise entails the hypothesis."""
    text = f"Premise: {row['premise'].strip()}\nHypothesis: {row['hypothesis'].strip()}"
    return text, anli_label(row["label"])


def format_ethics_commonsense(row: Row) -> Example:
    """ETHICS commonsense (``hendrycks/ethics``, config ``commonsense``): ``{"label": 0|1,
    "input": str, "is_short": bool, "edited": bool}``. Label: 1 if the act is clearly wrong."""
    return row["input"], binary_label(row["label"])


def format_ethics_justice(row: Row) -> Example:
    """ETHICS justice (config ``justice``): ``{"label": 0|1, "scenario": str}``. Label: 1 if
    the claim is reasonable (just)."""
    return row["scenario"], binary_label(row["label"])


def format_ethics_deontology(row: Row) -> Example:
    """ETHICS deontology (config ``deontology``): ``{"label": 0|1, "scenario": str,
    "excuse": str}``. Label: 1 if the excuse is reasonable."""
    text = f"Scenario: {row['scenario'].strip()}\nExcuse: {row['excuse'].strip()}"
    return text, binary_label(row["label"])


def format_ethics_virtue(row: Row) -> Example:
    """ETHICS virtue (config ``virtue``): ``{"label": 0|1, "scenario": str}``, the scenario
    ending in ``" [SEP] <trait>"``. Label: 1 if the behaviour shows the trait."""
    return row["scenario"], binary_label(row["label"])


# ---------------------------------------------------------------------------------------------
# More multiple choice, made binary. Each task says which answer is right (``answers``: the
# right one, the wrong ones) and how a row shows one answer (``text``).

Answers = tuple[str, list[str]]


def _index(raw: Any, n: int, what: str, base: int = 0) -> int:
    """A label naming one of ``n`` choices (an int, or a digit string as some hub datasets
    store it) as a 0-based index; ValueError for anything else (e.g. an unlabelled -1 / "")."""
    try:
        i = int(raw) - base
    except (TypeError, ValueError):
        i = -1
    if isinstance(raw, bool) or not 0 <= i < n:
        raise ValueError(f"{what}: label {raw!r} does not name one of the {n} choices")
    return i


def choice_formatter(
    purpose: str, answers: Callable[[Row], Answers], text: Callable[[Row, str], str]
) -> Callable[[Sequence[Row], int], tuple[list[str], list[int]]]:
    """A ``format_rows`` for a multiple-choice task: each row shows its right answer or one of
    its wrong ones (drawn; empty ones and copies of the right one skipped), exactly half right
    per batch, deterministic in seed. Label: 1 if the shown answer is the right one."""

    def example(row: Row, correct: bool, rng: np.random.Generator) -> Example:
        right, wrong = answers(row)
        wrong = [w for w in wrong if w and w.strip() and w.strip() != right.strip()]
        if correct:
            answer = right
        elif not wrong:
            raise ValueError(f"{purpose} row has no usable wrong answer: {text(row, right)[:80]!r}")
        else:
            answer = wrong[int(rng.integers(len(wrong)))]
        return text(row, answer.strip()), int(correct)

    def format_rows(rows: Sequence[Row], seed: int) -> tuple[list[str], list[int]]:
        return _balanced(rows, seed, purpose, example)

    format_rows.__name__ = f"format_{purpose}"
    return format_rows


def _pick(options: list[str], i: int) -> Answers:
    return options[i], options[:i] + options[i + 1 :]


def openbookqa_answers(row: Row) -> Answers:
    """OpenBookQA (``allenai/openbookqa``, config ``main``): ``{"id": str,
    "question_stem": str, "choices": {"text": [4 str], "label": ["A".."D"]},
    "answerKey": "A".."D"}``."""
    letters = list(row["choices"]["label"])
    if row["answerKey"] not in letters:
        raise ValueError(f"openbookqa row {row.get('id')!r}: answerKey {row['answerKey']!r}")
    return _pick(list(row["choices"]["text"]), letters.index(row["answerKey"]))


def quartz_answers(row: Row) -> Answers:
    """QuaRTz (``allenai/quartz``): ``{"id": str, "question": str, "choices": {"text": [2 str],
    "label": ["A", "B"]}, "answerKey": "A"|"B", "para": str, ...}``."""
    letters = list(row["choices"]["label"])
    if row["answerKey"] not in letters:
        raise ValueError(f"quartz row {row.get('id')!r}: answerKey {row['answerKey']!r}")
    return _pick(list(row["choices"]["text"]), letters.index(row["answerKey"]))


def piqa_answers(row: Row) -> Answers:
    """PIQA (``ybisk/piqa``): ``{"goal": str, "sol1": str, "sol2": str, "label": 0|1}``
    (label 0: sol1 is right)."""
    return _pick([row["sol1"], row["sol2"]], _index(row["label"], 2, "piqa"))


def social_i_qa_answers(row: Row) -> Answers:
    """Social IQa (``allenai/social_i_qa``): ``{"context": str, "question": str,
    "answerA": str, "answerB": str, "answerC": str, "label": "1"|"2"|"3"}`` (1-based)."""
    options = [row["answerA"], row["answerB"], row["answerC"]]
    return _pick(options, _index(row["label"], 3, "social_i_qa", base=1))


def hellaswag_answers(row: Row) -> Answers:
    """HellaSwag (``Rowan/hellaswag``): ``{"ind": int, "activity_label": str, "ctx_a": str,
    "ctx_b": str, "ctx": str, "endings": [4 str], "source_id": str, "split": str,
    "split_type": str, "label": "0".."3"}`` (a string; empty in the unlabelled test split)."""
    endings = list(row["endings"])
    return _pick(endings, _index(row["label"], len(endings), "hellaswag"))


def quail_answers(row: Row) -> Answers:
    """QuAIL (``textmachinelab/quail``): ``{"id": str, "context": str, "question": str,
    "answers": [4 str], "correct_answer_id": int, ...}``."""
    options = list(row["answers"])
    return _pick(options, _index(row["correct_answer_id"], len(options), "quail"))


def dream_answers(row: Row) -> Answers:
    """DREAM (``dataset-org/dream``): ``{"id": int, "dialogue_id": str, "dialogue": [str],
    "question": str, "choice": [3 str], "answer": str}`` (the answer is one choice's text)."""
    choices = list(row["choice"])
    if row["answer"] not in choices:
        raise ValueError(f"dream row {row.get('id')!r}: answer is not one of its choices")
    return _pick(choices, choices.index(row["answer"]))


def _qa_text(question: str, context: str | None = None, label: str = "Context") -> Callable:
    def text(row: Row, answer: str) -> str:
        head = f"Question: {row[question].strip()}\nAnswer: {answer}"
        return f"{head}\n{label}: {row[context].strip()}" if context else head

    return text


format_openbookqa = choice_formatter("openbookqa", openbookqa_answers, _qa_text("question_stem"))
format_quartz = choice_formatter("quartz", quartz_answers, _qa_text("question", "para", "Passage"))
format_piqa = choice_formatter(
    "piqa", piqa_answers, lambda row, a: f"Goal: {row['goal'].strip()}\nSolution: {a}"
)
format_social_i_qa = choice_formatter(
    "social_i_qa", social_i_qa_answers, _qa_text("question", "context")
)
format_hellaswag = choice_formatter(
    "hellaswag", hellaswag_answers, lambda row, a: f"Context: {row['ctx'].strip()}\nEnding: {a}"
)
format_quail = choice_formatter("quail", quail_answers, _qa_text("question", "context"))
format_dream = choice_formatter(
    "dream",
    dream_answers,
    lambda row, a: (
        f"Question: {row['question'].strip()}\nAnswer: {a}\nDialogue:\n"
        + "\n".join(row["dialogue"])
    ),
)
