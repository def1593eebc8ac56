"""Tests for the public-task datasets: formatters, hub entries (on in-memory rows, no network,
no `datasets` package), the `local` loader on real files, and their spec validation.

Real files come from the shared data snapshot next to the repository (see its SOURCE.md files).
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from w2sray.data import DATASETS, make_splits, validate_dataset_params
from w2sray.data import hub as hub_mod
from w2sray.data.formatters import (
    anli_label,
    anthropic_hh_example,
    binary_label,
    format_amazon_polarity,
    format_anli,
    format_anthropic_hh,
    format_boolq,
    format_cola,
    format_cosmos_qa,
    format_ethics_commonsense,
    format_ethics_deontology,
    format_ethics_justice,
    format_ethics_virtue,
    format_mc_taco,
    format_multirc,
    format_paws,
    format_sciq,
    format_sst2,
    format_text_label,
    format_wic,
    split_hh_pair,
)
from w2sray.data.hub import HUB_TASKS, examples_from_rows
from w2sray.data.local import load_local, read_rows
from w2sray.data.sampling import balanced_indices
from w2sray.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SST2 = DATA / "sst2"
BOOLQ = DATA / "boolq"
HH = DATA / "anthropic_hh" / "harmless-base-test.jsonl.gz"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared data at {DATA}")


def sciq_rows(n: int) -> list[dict]:
    return [
        {
            "question": f"What is thing {i}?",
            "correct_answer": f"right{i}",
            "distractor1": f"wrongA{i}",
            "distractor2": f"wrongB{i}",
            "distractor3": f"wrongC{i}",
            "support": f"Thing {i} is right{i}.",
        }
        for i in range(n)
    ]


def cosmos_rows(n: int) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "context": f"Story {i} happened.",
            "question": f"Why {i}?",
            **{f"answer{j}": f"ans{i}_{j}" for j in range(4)},
            "label": i % 4,
        }
        for i in range(n)
    ]


def hh_rows(n: int) -> list[dict]:
    return [
        {
            "chosen": f"\n\nHuman: question {i}?\n\nAssistant: I'm sorry, good answer {i}.",
            "rejected": f"\n\nHuman: question {i}?\n\nAssistant: I'm sure, bad answer {i}.",
        }
        for i in range(n)
    ]


def real_hh_rows(k: int) -> list[dict]:
    with gzip.open(HH, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(k), fh, strict=False)]


# ------------------------------------------------------------------------------------------------
# Formatters


def test_binary_label():
    for raw, want in [(0, 0), (1, 1), (True, 1), (False, 0), ("1", 1), (" 0 ", 0), (1.0, 1)]:
        assert binary_label(raw) == want
    assert binary_label("True") == 1 and binary_label("false") == 0
    for bad in (-1, 2, "yes", None, 0.5):
        with pytest.raises(ValueError, match="not binary"):
            binary_label(bad)


def test_labelled_formatters():
    assert format_sst2({"idx": 3, "sentence": "a fine film", "label": 1}) == ("a fine film", 1)
    text, y = format_amazon_polarity({"label": 0, "title": "Broke", "content": "It broke fast."})
    assert (text, y) == ("Broke\nIt broke fast.", 0)
    assert format_amazon_polarity({"label": 1, "title": " ", "content": "Great."}) == ("Great.", 1)
    text, y = format_boolq(
        {"question": "is the sky blue", "answer": True, "passage": "Sky -- The sky is blue."}
    )
    assert y == 1 and isinstance(y, int)
    assert text == "Question: is the sky blue?\nPassage: Sky -- The sky is blue."
    assert format_boolq({"question": "q", "answer": False, "passage": "p"})[1] == 0
    with pytest.raises(ValueError, match="not binary"):
        format_sst2({"idx": 0, "sentence": "unlabelled", "label": -1})


def test_sciq_balanced_and_correct():
    rows = sciq_rows(40)
    texts, labels = format_sciq(rows, seed=0)
    assert labels.count(1) == labels.count(0) == 20
    for row, text, y in zip(rows, texts, labels, strict=True):
        assert text.startswith(f"Question: {row['question']}\nAnswer: ")
        answer = text.split("\nAnswer: ")[1]
        if y == 1:
            assert answer == row["correct_answer"]
        else:
            assert answer in (row["distractor1"], row["distractor2"], row["distractor3"])
        assert row["support"] not in text
    distractors = {
        t.split("\nAnswer: ")[1][:6] for t, y in zip(texts, labels, strict=True) if not y
    }
    assert distractors == {"wrongA", "wrongB", "wrongC"}  # all three are drawn
    assert format_sciq(rows, seed=0) == (texts, labels)
    assert format_sciq(rows, seed=1)[1] != labels
    _, odd = format_sciq(sciq_rows(7), seed=0)
    assert Counter(odd) == {0: 4, 1: 3}


def test_sciq_skips_empty_or_duplicate_distractors():
    row = {**sciq_rows(1)[0], "distractor1": "", "distractor2": "right0", "distractor3": "x"}
    texts, labels = format_sciq([row] * 10, seed=3)
    assert {t for t, y in zip(texts, labels, strict=True) if not y} == {
        "Question: What is thing 0?\nAnswer: x"
    }


def test_cosmos_qa_balanced_and_correct():
    rows = cosmos_rows(30)
    texts, labels = format_cosmos_qa(rows, seed=5)
    assert labels.count(1) == labels.count(0) == 15
    for row, text, y in zip(rows, texts, labels, strict=True):
        q, a, c = text.split("\n")
        assert q == f"Question: {row['question']}" and c == f"Context: {row['context']}"
        right = row[f"answer{row['label']}"]
        assert (a == f"Answer: {right}") == bool(y)
        assert a.removeprefix("Answer: ") in [row[f"answer{j}"] for j in range(4)]
    assert format_cosmos_qa(rows, seed=5) == (texts, labels)
    assert format_cosmos_qa(rows, seed=6)[1] != labels
    with pytest.raises(ValueError, match="label -1 is not 0-3"):
        format_cosmos_qa([{**rows[0], "label": -1}], seed=0)


def test_hh_split_strips_shared_prefix_at_the_assistant_turn():
    prompt, good, bad = split_hh_pair(hh_rows(1)[0]["chosen"], hh_rows(1)[0]["rejected"])
    # The common prefix runs into "I'm s"; the cut goes back to the last assistant marker.
    assert prompt == "Human: question 0?"
    assert good == "I'm sorry, good answer 0." and bad == "I'm sure, bad answer 0."
    assert split_hh_pair("\n\nHuman: a", "\n\nHuman: b") == ("", "Human: a", "Human: b")


def test_hh_pairwise_format_and_balance():
    rows = hh_rows(20)
    texts, labels = format_anthropic_hh(rows, seed=0)
    assert labels.count(1) == labels.count(0) == 10
    for i, (text, y) in enumerate(zip(texts, labels, strict=True)):
        a, b = (f"I'm sorry, good answer {i}.", f"I'm sure, bad answer {i}.")[:: 1 if y else -1]
        assert text == f"Human: question {i}?\n\nResponse A: {a}\n\nResponse B: {b}"
    assert format_anthropic_hh(rows, seed=0) == (texts, labels)
    assert format_anthropic_hh(rows, seed=1)[1] != labels


def test_hh_char_limits_keep_prompt_end_and_response_starts():
    row = {
        "chosen": "\n\nHuman: " + "x" * 50 + " last words\n\nAssistant: " + "g" * 30,
        "rejected": "\n\nHuman: " + "x" * 50 + " last words\n\nAssistant: " + "b" * 30,
    }
    text, y = anthropic_hh_example(row, True, max_prompt_chars=11, max_response_chars=5)
    assert y == 1
    assert text == "... last words\n\nResponse A: ggggg\n\nResponse B: bbbbb"


@needs_data
def test_hh_pairwise_on_real_rows():
    rows = real_hh_rows(40)
    texts, labels = format_anthropic_hh(rows, seed=0)
    assert labels.count(1) == labels.count(0) == 20
    for row, text, y in zip(rows, texts, labels, strict=True):
        prompt, good, bad = split_hh_pair(row["chosen"], row["rejected"])
        assert prompt.startswith("Human:") and good != bad
        assert text.startswith(prompt + "\n\nResponse A: ")
        first, second = (good, bad) if y else (bad, good)
        assert text.endswith(f"Response A: {first}\n\nResponse B: {second}")
        # The prompt appears once: it is stripped from both transcripts.
        assert text.count(prompt) == 1
        assert row["chosen"].endswith(good) and row["rejected"].endswith(bad)


# ------------------------------------------------------------------------------------------------
# Sampling and hub entries (in-memory rows; the hub call is monkeypatched)


def test_balanced_indices():
    labels = [1] * 30 + [0] * 10
    idx = balanced_indices(labels, 16, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 16
    assert Counter(labels[i] for i in idx) == {0: 8, 1: 8}
    np.testing.assert_array_equal(idx, balanced_indices(labels, 16, seed=0))
    assert set(idx.tolist()) != set(balanced_indices(labels, 16, seed=1).tolist())
    odd = balanced_indices(labels, 15, seed=0)
    assert len(odd) == 15 and abs(Counter(labels[i] for i in odd)[1] - 7.5) == 0.5
    short = balanced_indices(labels, 30, seed=0)  # minority runs out: 10 per class
    assert Counter(labels[i] for i in short) == {0: 10, 1: 10}
    with pytest.raises(ValueError, match="must be 0 or 1"):
        balanced_indices([0, 1, 2], 2, 0)


def test_hub_entries_registered():
    for name in ("amazon_polarity", "sciq", "boolq", "cosmos_qa", "anthropic_hh", "sst2"):
        entry = DATASETS[name]
        assert {"split", "revision", "hub_id"} <= set(entry.params)
        assert entry.doc and entry.validate is not None
        assert validate_dataset_params(name, {"split": "train", "revision": "abc"}) == []
        assert validate_dataset_params(name, {"split": "validation", "test_split": None}) == []
        (same,) = validate_dataset_params(name, {"split": "x", "test_split": "x"})
        assert same.startswith("test_split 'x' is the training split")
    assert "balance" in DATASETS["sst2"].params and "balance" not in DATASETS["sciq"].params
    assert "data_dir" in DATASETS["anthropic_hh"].params
    (problem,) = validate_dataset_params("sst2", {"balance": "yes"})
    assert problem == "parameter 'balance' must be true or false, got 'yes'"
    (problem,) = validate_dataset_params("anthropic_hh", {"max_prompt_chars": 0})
    assert "positive integer" in problem


def test_examples_from_rows_balances_labelled_tasks():
    rows = [{"idx": i, "sentence": f"s{i}", "label": int(i % 4 == 0)} for i in range(40)]
    texts, labels = examples_from_rows("sst2", rows, 16, seed=0)
    assert Counter(labels) == {0: 8, 1: 8}
    assert all(labels[k] == int(int(t[1:]) % 4 == 0) for k, t in enumerate(texts))
    assert examples_from_rows("sst2", rows, 16, seed=0) == (texts, labels)
    assert examples_from_rows("sst2", rows, 16, seed=1)[0] != texts
    # Too few positives: fewer than n rows come back and make_splits reports the shortfall.
    assert Counter(examples_from_rows("sst2", rows, 30, seed=0)[1]) == {0: 10, 1: 10}
    unbalanced = examples_from_rows("sst2", rows, 30, seed=0, balance=False)
    assert len(unbalanced[0]) == 30
    boolq = [{"question": f"q{i}", "answer": i < 5, "passage": "p"} for i in range(20)]
    assert Counter(examples_from_rows("boolq", boolq, 10, seed=0)[1]) == {0: 5, 1: 5}
    with pytest.raises(ValueError, match="row 1: column 'label'.*unlabelled"):
        examples_from_rows(
            "sst2", [{"sentence": "a", "label": 0}, {"sentence": "b", "label": -1}], 2, 0
        )


def test_examples_from_rows_constructed_tasks():
    texts, labels = examples_from_rows("sciq", sciq_rows(50), 20, seed=0)
    assert len(texts) == 20 and Counter(labels) == {0: 10, 1: 10}
    assert len(set(texts)) == 20  # distinct rows
    again = examples_from_rows("sciq", sciq_rows(50), 20, seed=0)
    assert again == (texts, labels)
    assert len(examples_from_rows("cosmos_qa", cosmos_rows(5), 20, seed=0)[0]) == 5  # all rows
    texts, labels = examples_from_rows("anthropic_hh", hh_rows(8), 8, 0, max_response_chars=4)
    assert Counter(labels) == {0: 4, 1: 4} and all("Response A: I'm " in t for t in texts)


def test_hub_loader_is_a_thin_shell(monkeypatch):
    calls = []

    def fake_rows(hub_id, split, revision=None, data_dir=None, config=None, dataset=""):
        calls.append((hub_id, split, revision, data_dir))
        return hh_rows(30)

    monkeypatch.setattr(hub_mod, "load_hub_rows", fake_rows)
    texts, labels = DATASETS["anthropic_hh"].load(
        10, 0, split="test", revision="abc", data_dir="harmless-base", max_prompt_chars=100
    )
    assert calls == [("Anthropic/hh-rlhf", "test", "abc", "harmless-base")]
    assert (texts, labels) == examples_from_rows("anthropic_hh", hh_rows(30), 10, 0)
    # test_split: null cuts all three splits from the training split, as a single source.
    splits = make_splits("anthropic_hh", {"test_split": None}, 8, 8, 4, split_seed=0)
    assert calls[-1] == ("Anthropic/hh-rlhf", "train", None, None)
    assert len(splits.gt_texts) == 8
    with pytest.raises(ValueError, match="has 30 examples, the splits need 40"):
        make_splits("anthropic_hh", {"test_split": None}, 20, 10, 10, split_seed=0)


def test_hub_loader_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="needs the `datasets` package"):
        DATASETS["sciq"].load(10, 0)


# Rows of each multiple-choice task in its hub schema: row i's right answer is "RIGHT i", the
# wrong ones "wrong i k"; ``at`` says where the right one sits (the label's encoding differs).
def _opts(i: int, n: int, at: int) -> list[str]:
    return [f"RIGHT {i}" if k == at else f"wrong {i} {k}" for k in range(n)]


MC_ROWS = {
    "openbookqa": lambda i, at: {
        "id": str(i),
        "question_stem": f"q{i}",
        "choices": {"text": _opts(i, 4, at), "label": ["A", "B", "C", "D"]},
        "answerKey": "ABCD"[at],
    },
    "quartz": lambda i, at: {
        "id": str(i),
        "question": f"q{i}",
        "choices": {"text": _opts(i, 2, at % 2), "label": ["A", "B"]},
        "answerKey": "AB"[at % 2],
        "para": f"para {i}",
        "para_id": "p",
        "para_anno": {},
        "question_anno": {},
    },
    "piqa": lambda i, at: {
        "goal": f"goal {i}",
        **dict(zip(("sol1", "sol2"), _opts(i, 2, at % 2), strict=True)),
        "label": at % 2,
    },
    "social_i_qa": lambda i, at: {
        "context": f"ctx {i}",
        "question": f"q{i}",
        **dict(zip(("answerA", "answerB", "answerC"), _opts(i, 3, at % 3), strict=True)),
        "label": str(at % 3 + 1),  # 1-based, a string
    },
    "hellaswag": lambda i, at: {
        "ind": i,
        "activity_label": "a",
        "ctx_a": f"ctx {i}",
        "ctx_b": "",
        "ctx": f"ctx {i}",
        "endings": _opts(i, 4, at),
        "source_id": "s",
        "split": "train",
        "split_type": "indomain",
        "label": str(at),  # a string
    },
    "quail": lambda i, at: {
        "id": f"q{i}",
        "context_id": "c",
        "question_id": str(i),
        "domain": "news",
        "metadata": {"author": "", "title": "", "url": ""},
        "context": f"ctx {i}",
        "question": f"q{i}",
        "question_type": "Causality",
        "answers": _opts(i, 4, at),
        "correct_answer_id": at,
    },
    "dream": lambda i, at: {
        "id": i,
        "dialogue_id": f"d{i}",
        "dialogue": [f"M: hello {i}", "W: hi"],
        "question": f"q{i}",
        "choice": _opts(i, 3, at % 3),
        "answer": f"RIGHT {i}",  # the right choice's text
    },
}


@pytest.mark.parametrize("name", sorted(MC_ROWS))
def test_multiple_choice_tasks_show_the_right_answer_iff_label_1(name):
    rows = [MC_ROWS[name](i, i % 4) for i in range(40)]
    texts, labels = HUB_TASKS[name].format_rows(rows, 0)
    assert Counter(labels) == {0: 20, 1: 20}
    for i, (text, y) in enumerate(zip(texts, labels, strict=True)):
        assert (f"RIGHT {i}" in text) == bool(y), (name, text)
        assert y or f"wrong {i} " in text
    shown = {t.split("wrong ")[1].split()[1] for t, y in zip(texts, labels, strict=True) if not y}
    assert len(shown) > 1  # the wrong answer is drawn, not always the same position
    assert HUB_TASKS[name].format_rows(rows, 0) == (texts, labels)


@pytest.mark.parametrize(
    "name, bad",
    [("piqa", -1), ("hellaswag", ""), ("social_i_qa", "0"), ("quail", 4), ("openbookqa", "E")],
)
def test_multiple_choice_unlabelled_rows_fail(name, bad):
    row = MC_ROWS[name](0, 0)
    key = {"quail": "correct_answer_id", "openbookqa": "answerKey"}.get(name, "label")
    with pytest.raises(ValueError, match=rf"{name}.*(does not name one of|answerKey 'E')"):
        HUB_TASKS[name].format_rows([{**row, key: bad}] * 2, 0)


def test_new_labelled_formatters():
    assert format_text_label({"text": "great", "label": 1}) == ("great", 1)
    assert format_cola({"sentence": "Him went.", "label": 0, "idx": 0}) == ("Him went.", 0)
    text, y = format_paws({"id": 1, "sentence1": "a b", "sentence2": "b a", "label": 1})
    assert (text, y) == ("Sentence 1: a b\nSentence 2: b a", 1)
    row = {"paragraph": "P" * 50, "question": "Who?", "answer": "Ann", "idx": {}, "label": 1}
    assert format_multirc(row)[0].startswith("Question: Who?\nAnswer: Ann\nPassage: PPP")
    wic = {"word": "bank", "sentence1": "river bank", "sentence2": "bank loan", "label": 0}
    assert format_wic(wic) == ("Word: bank\nSentence 1: river bank\nSentence 2: bank loan", 0)
    taco = {"sentence": "He ate.", "question": "How long?", "answer": "5 min", "label": 1}
    assert format_mc_taco({**taco, "category": 0})[0].startswith("Question: How long?\nAnswer")
    # ANLI: entailment (0) is the positive class; neutral (1) and contradiction (2) are not.
    nli = {"uid": "u", "premise": "p", "hypothesis": "h", "reason": ""}
    assert [format_anli({**nli, "label": k})[1] for k in (0, 1, 2)] == [1, 0, 0]
    assert [anli_label(k) for k in (0, 1, 2)] == [1, 0, 0]
    for bad in (-1, 3, True, "0"):
        with pytest.raises(ValueError, match="not an NLI label"):
            anli_label(bad)
    anli_rows = [{**nli, "hypothesis": f"h{i}", "label": i % 3} for i in range(30)]
    assert Counter(examples_from_rows("anli_r2", anli_rows, 20, 0)[1]) == {0: 10, 1: 10}
    deon = {"label": 1, "scenario": "I must go.", "excuse": "I promised."}
    assert format_ethics_deontology(deon) == ("Scenario: I must go.\nExcuse: I promised.", 1)
    assert format_ethics_commonsense({"label": 1, "input": "I lied.", "is_short": True})[1] == 1
    assert format_ethics_justice({"label": 0, "scenario": "s"}) == ("s", 0)
    assert format_ethics_virtue({"label": 1, "scenario": "He gave. [SEP] kind"})[1] == 1


def labelled_rows(name: str, i: int) -> dict:
    y = i % 2
    return {
        "sst2": {"idx": i, "sentence": f"s{i}", "label": y},
        "amazon_polarity": {"label": y, "title": f"t{i}", "content": f"c{i}"},
        "boolq": {"question": f"q{i}", "answer": bool(y), "passage": "p"},
        "imdb": {"text": f"review {i}", "label": y},
        "yelp_polarity": {"text": f"review {i}", "label": y},
        "cola": {"sentence": f"s{i}", "label": y, "idx": i},
        "paws": {"id": i, "sentence1": f"a{i}", "sentence2": "b", "label": y},
        "multirc": {"paragraph": "p", "question": f"q{i}", "answer": "a", "idx": {}, "label": y},
        "wic": {"word": "w", "sentence1": f"s{i}", "sentence2": "t", "idx": i, "label": y},
        "mc_taco": {"sentence": "s", "question": f"q{i}", "answer": "a", "label": y},
        "anli_r2": {"uid": "u", "premise": "p", "hypothesis": f"h{i}", "label": 2 * (1 - y)},
        "ethics_commonsense": {"label": y, "input": f"i{i}", "is_short": True, "edited": False},
        "ethics_justice": {"label": y, "scenario": f"s{i}"},
        "ethics_deontology": {"label": y, "scenario": f"s{i}", "excuse": "e"},
        "ethics_virtue": {"label": y, "scenario": f"s{i} [SEP] kind"},
    }[name]


def test_every_hub_task_formats_rows_of_its_hub_schema():
    constructed = {"sciq": sciq_rows, "cosmos_qa": cosmos_rows, "anthropic_hh": hh_rows}
    for name, task in HUB_TASKS.items():
        if name in constructed:
            task_rows = constructed[name](12)
        elif name in MC_ROWS:
            task_rows = [MC_ROWS[name](i, i % 4) for i in range(12)]
        else:  # a new labelled task needs rows of its schema in labelled_rows
            task_rows = [labelled_rows(name, i) for i in range(12)]
        texts, labels = examples_from_rows(name, task_rows, 12, seed=0)
        assert len(set(texts)) == 12 and all(t.strip() for t in texts), name
        assert Counter(labels) == {0: 6, 1: 6}, name
        # Every row has a key for the train/test overlap check, distinct per row here.
        assert len({hub_mod.row_key(task, r) for r in task_rows}) == 12, name


# ------------------------------------------------------------------------------------------------
# The local loader on real files


@needs_data
def test_local_sst2_train_tsv():
    path = str(SST2 / "train.tsv")
    texts, labels = load_local(2000, 0, path=path, text_column="sentence")
    assert len(texts) == 2000 and Counter(labels) == {0: 1000, 1: 1000}
    assert all(isinstance(y, int) and y in (0, 1) for y in labels)
    with open(path, encoding="utf-8") as fh:
        truth: dict[str, set[int]] = {}  # phrases repeat in SST-2 train, with either label
        for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            truth.setdefault(r["sentence"], set()).add(int(r["label"]))
    assert all(y in truth[t] for t, y in zip(texts, labels, strict=True))
    assert load_local(2000, 0, path=path, text_column="sentence") == (texts, labels)


@needs_data
def test_local_sst2_dev_unbalanced_and_all_rows():
    path = str(SST2 / "dev.tsv")
    texts, labels = load_local(10_000, 0, path=path, text_column="content", balance=False)
    assert len(texts) == 872 and Counter(labels) == {1: 444, 0: 428}  # SOURCE.md counts
    texts, labels = load_local(10_000, 0, path=path, text_column="content")
    assert Counter(labels) == {0: 428, 1: 428}


@needs_data
def test_local_boolq_jsonl_nested_label_and_pair():
    path = str(BOOLQ / "validation.jsonl")
    texts, labels = load_local(
        400,
        0,
        path=path,
        text_column="prompt",
        text_pair_column="subject",
        label_column="target_new.str",  # "True"/"False" strings, read as 1/0
    )
    assert len(texts) == 400 and Counter(labels) == {0: 200, 1: 200}
    first = texts[0].split("\n")
    assert first[0].startswith("passage: ") and first[1] == "question: {}" and len(first) == 3
    mapped = load_local(
        400,
        0,
        path=str(BOOLQ / "questions_only_validation.jsonl"),
        text_column="subject",
        label_column="target_new.str",
        label_map={"True": 0, "False": 1},  # deliberately inverted
        balance=False,
    )
    rows = read_rows(str(BOOLQ / "questions_only_validation.jsonl"))
    truth = {r["subject"]: r["target_new"]["str"] for r in rows}
    assert all(truth[t] == ("False" if y else "True") for t, y in zip(*mapped, strict=True))


def write_table(tmp_path: Path, fmt: str, rows: list[dict]) -> Path:
    """The same rows in each supported format."""
    path = tmp_path / f"t.{fmt}"
    if fmt in ("jsonl", "jsonl.gz"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if fmt == "jsonl.gz":
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
    elif fmt == "json":
        path.write_text(json.dumps({k: [r[k] for r in rows] for k in rows[0]}))  # columnar
    elif fmt in ("csv", "tsv"):
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, list(rows[0]), delimiter="," if fmt == "csv" else "\t")
            w.writeheader()
            w.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "json", "csv", "tsv", "parquet"])
def test_local_formats_agree(tmp_path, fmt):
    rows = [{"text": f"row {i}, with a comma", "label": i % 3 == 0, "b": "x"} for i in range(30)]
    if fmt in ("csv", "tsv"):
        rows = [{**r, "label": int(r["label"])} for r in rows]
    path = write_table(tmp_path, fmt, rows)
    texts, labels = load_local(20, 4, path=str(path), text_pair_column="b")
    assert Counter(labels) == {0: 10, 1: 10}
    assert all(t == f"{t.split(chr(10))[0]}\nx" for t in texts)
    want = [int(r["text"].split()[1].rstrip(",")) % 3 == 0 for r in rows]
    assert all(want[int(t.split()[1].rstrip(","))] == y for t, y in zip(texts, labels, strict=True))
    # The format can be named explicitly when the file name does not tell it.
    other = tmp_path / "data.bin"
    shutil.copy(path, other)
    assert load_local(20, 4, path=str(other), format=fmt, text_pair_column="b") == (texts, labels)


# ------------------------------------------------------------------------------------------------
# Local loader errors


def test_local_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("a\tb\nx\t1\n")
    with pytest.raises(ValueError) as exc:
        load_local(2, 0, path=str(path), text_column="sentence", label_column="b")
    assert str(exc.value) == f"{path}: column 'sentence' not found (columns: a, b)"
    with pytest.raises(ValueError, match=r"train.tsv: column 'label' not found"):
        load_local(2, 0, path=str(path), text_column="a")


@needs_data
def test_local_missing_column_on_real_file():
    with pytest.raises(ValueError, match=r"dev.tsv: column 'sentence' not found \(columns: label"):
        load_local(10, 0, path=str(SST2 / "dev.tsv"), text_column="sentence")


def test_local_non_binary_label(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,0\nb,1\nc,2\n")
    with pytest.raises(ValueError) as exc:
        load_local(2, 0, path=str(path))
    assert str(exc.value).startswith(f"{path}: row 2: column 'label': label '2' is not binary")
    with pytest.raises(ValueError, match=r"row 2: column 'label': label '2' is not in label_map"):
        load_local(2, 0, path=str(path), label_map={"0": 0, "1": 1})


def test_local_missing_value_and_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"label": 0}\n')
    with pytest.raises(ValueError, match=r"t.jsonl: row 1: column 'text' is missing"):
        load_local(2, 0, path=str(path))
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=f"{missing}: file not found"):
        load_local(2, 0, path=str(missing))
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_local(2, 0, path=str(shutil.copy(path, tmp_path / "t.txt")))


# ------------------------------------------------------------------------------------------------
# Spec validation and splits


def spec_with(params: dict) -> dict:
    return {
        "name": "unit",
        "storage": "/tmp/unused",
        "datasets": [{"name": "local", "params": params, "n_gt": 20, "n_weak": 20, "n_test": 10}],
        "models": ["w2s-tiny-1", "w2s-tiny-2"],
        "methods": ["xent"],
    }


def params_problems(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "s.yaml")
    return [p.split(": ", 1)[1] for p in exc.value.problems if p.startswith("datasets[0].params:")]


def test_spec_local_missing_path():
    (problem,) = params_problems(spec_with({"text_column": "sentence"}))
    assert problem.startswith("dataset 'local' needs parameter 'path'")


def test_spec_local_bad_path_and_params(tmp_path):
    missing = tmp_path / "none.tsv"
    (problem,) = params_problems(spec_with({"path": str(missing)}))
    assert problem == f"path {str(missing)!r} is not a file"
    problems = params_problems(spec_with({"path": "rel/none.tsv", "balance": "no", "sep": 1}))
    assert any("relative to the current directory" in p for p in problems)
    assert "parameter 'balance' must be true or false, got 'no'" in problems
    assert any(p.startswith("unknown parameter 'sep'") for p in problems)


@needs_data
def test_spec_local_checks_columns_and_label_map():
    path = str(SST2 / "dev.tsv")
    (problem,) = params_problems(spec_with({"path": path, "text_column": "sentence"}))
    assert problem == f"{path}: column 'sentence' not found (columns: label, content)"
    (problem,) = params_problems(
        spec_with({"path": path, "text_column": "content", "label_map": {0: 0, 1: 2}})
    )
    assert problem == "label_map[1] must be 0 or 1, got 2"
    spec = parse_spec(spec_with({"path": path, "text_column": "content"}), "s.yaml")
    assert spec.datasets[0].params["path"] == path


@needs_data
def test_make_splits_over_local_file():
    params = {"path": str(SST2 / "dev.tsv"), "text_column": "content"}
    s = make_splits("local", params, n_gt=300, n_weak=300, n_test=200, split_seed=0)
    ids = [set(map(int, i)) for i in (s.gt_ids, s.weak_ids, s.test_ids)]
    assert [len(i) for i in ids] == [300, 300, 200]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    texts = s.gt_texts + s.weak_texts + s.test_texts
    assert len(set(texts)) == len(texts)  # disjoint in content too (dev has no duplicates)
    assert Counter(s.gt_labels + s.weak_labels + s.test_labels) == {0: 400, 1: 400}
    again = make_splits("local", params, n_gt=300, n_weak=300, n_test=200, split_seed=0)
    assert again.test_texts == s.test_texts
    with pytest.raises(ValueError, match="has 856 examples, the splits need 900"):
        make_splits("local", params, n_gt=400, n_weak=400, n_test=100, split_seed=0)


@needs_data
def test_sst2_local_sweep_spec(tmp_path, monkeypatch):
    raw = yaml.safe_load((REPO / "sweeps" / "sst2_local.yaml").read_text())
    (ds,) = raw["datasets"]
    assert ds["name"] == "local" and ds["params"]["path"] == "data/sst2/train.tsv"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match="datasets\\[0\\].params: path 'data/sst2/train.tsv'"):
        load_spec(REPO / "sweeps" / "sst2_local.yaml")
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "train.tsv").symlink_to(SST2 / "train.tsv")
    spec = load_spec(REPO / "sweeps" / "sst2_local.yaml")
    assert [m.name for m in spec.models] == ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"]
    d = spec.datasets[0]
    assert d.n_gt + d.n_weak + d.n_test <= 2 * 29_780  # fits the balanced file
