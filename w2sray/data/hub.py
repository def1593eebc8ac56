"""Registry entries for public NLP tasks loaded by name from the Hugging Face hub.

Each entry trains on one split and tests on another, as the weak-to-strong paper and
EleutherAI/w2s do: splits A and B are cut from ``split`` (train), the test split is drawn from
``test_split`` (the held-out split the paper evaluates on; ``test_split: null`` cuts all three
from ``split`` instead). A training row that is also a test row (same key, see HubTask.key) is
dropped from training and counted, so no test example is trained on.

Rows come from ``datasets.load_dataset(hub_id, config, split=..., revision=...)``, picked
deterministically from the split seed and formatted (w2sray.data.formatters). The ``datasets``
package (``pip install 'w2sray[hub]'``) is imported only inside the hub call, so it is needed
only by sweeps that use these entries. Everything after the download is a pure function of the
rows (examples_from_rows, hub_sources), which the tests exercise on in-memory rows.

Pin ``revision`` (a commit hash of the dataset repo) for reproducible sweeps: the default is
the repo's current main branch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from w2sray.data import (
    SourcedExamples,
    log_dropped,
    register_dataset,
    shared_with_test,
    signature_defaults,
)
from w2sray.data.formatters import (
    Example,
    Row,
    anli_label,
    binary_label,
    format_amazon_polarity,
    format_anli,
    format_anthropic_hh,
    format_boolq,
    format_cola,
    format_cosmos_qa,
    format_dream,
    format_ethics_commonsense,
    format_ethics_deontology,
    format_ethics_justice,
    format_ethics_virtue,
    format_hellaswag,
    format_mc_taco,
    format_multirc,
    format_openbookqa,
    format_paws,
    format_piqa,
    format_quail,
    format_quartz,
    format_sciq,
    format_social_i_qa,
    format_sst2,
    format_text_label,
    format_wic,
)
from w2sray.data.sampling import balanced_indices, rng_for, shuffled_indices


@dataclass(frozen=True)
class HubTask:
    """How one hub dataset becomes binary examples.

    A labelled task has ``label_column`` and ``format_row`` (one row, one example) and is
    balanced by the loader; a constructed task has ``format_rows(rows, seed, **extra)``, which
    makes balanced examples itself, and a ``key``.
    """

    hub_id: str
    split: str  # splits A and B come from this split
    # The test split comes from this one: the split the paper / EleutherAI/w2s evaluate on.
    test_split: str | None
    doc: str
    config: str | None = None  # the hub dataset's configuration (load_dataset's ``name``)
    label_column: str | None = None
    format_row: Callable[[Row], Example] | None = None
    format_rows: Callable[..., tuple[list[str], list[int]]] | None = None
    # A row's identity for the train/test overlap check; default: its formatted text. A
    # constructed task's text depends on the drawn answer, so it names the row's own fields.
    key: Callable[[Row], str] | None = None
    label_of: Callable[[Any], int] = binary_label  # the label column's value as 0/1
    # extra loader params: name -> kind (see param_type_problems)
    extra: tuple[tuple[str, str], ...] = ()


def _fields(*names: str) -> Callable[[Row], str]:
    return lambda row: "\n".join(str(row[n]) for n in names)


# Splits follow the paper (openai/weak-to-strong) and EleutherAI/w2s's registry: train on the
# train split, test on the labelled held-out split (validation where the hub's test split is
# unlabelled or absent).
HUB_TASKS: dict[str, HubTask] = {
    "sst2": HubTask(
        "stanfordnlp/sst2",
        "train",
        "validation",  # the hub's test split is unlabelled (-1)
        "SST-2 movie-review sentiment (sentence -> positive); classes balanced by the loader.",
        label_column="label",
        format_row=format_sst2,
    ),
    "amazon_polarity": HubTask(
        "fancyzhx/amazon_polarity",
        "train",
        "test",  # labelled, 400k rows
        "Amazon review polarity (title + content -> positive); classes balanced by the loader.",
        label_column="label",
        format_row=format_amazon_polarity,
    ),
    "boolq": HubTask(
        "google/boolq",
        "train",
        "validation",  # BoolQ's test answers are not public
        "BoolQ yes/no questions (question + passage -> yes); classes balanced by the loader.",
        label_column="answer",
        format_row=format_boolq,
    ),
    "sciq": HubTask(
        "allenai/sciq",
        "train",
        "test",  # labelled, 1000 rows (the paper's test split)
        "SciQ science questions: is the shown answer the correct one or a distractor "
        "(balanced 50/50 by construction).",
        format_rows=format_sciq,
        key=_fields("question", "correct_answer"),
    ),
    "cosmos_qa": HubTask(
        "allenai/cosmos_qa",
        "train",
        "validation",  # the hub's test split is unlabelled
        "Cosmos QA commonsense reading comprehension: is the shown answer the correct one or "
        "a random wrong one (balanced 50/50 by construction). The hub repo is script-based; "
        "recent `datasets` releases may need revision 'refs/convert/parquet'.",
        format_rows=format_cosmos_qa,
        key=_fields("context", "question"),
    ),
    "anthropic_hh": HubTask(
        "Anthropic/hh-rlhf",
        "train",
        "test",  # labelled (chosen/rejected), 8.5k pairs
        "Anthropic HH-RLHF preferences, pairwise: shared prompt, then Response A and B in random "
        "order; label 1 if A is the chosen one (balanced 50/50 by construction). "
        "data_dir selects a subset, e.g. 'harmless-base' (default: all).",
        format_rows=format_anthropic_hh,
        key=_fields("chosen", "rejected"),
        extra=(
            ("data_dir", "str?"),
            ("max_prompt_chars", "posint?"),
            ("max_response_chars", "posint?"),
        ),
    ),
    # --- The paper's NLP set / EleutherAI/w2s's registry (w2s/ds_registry.py): its train and
    # test splits. Repos marked script-based may need revision 'refs/convert/parquet' with
    # recent `datasets` releases, as cosmos_qa does.
    "imdb": HubTask(
        "stanfordnlp/imdb",
        "train",
        "test",  # labelled, 25k reviews
        "IMDB movie reviews (text -> positive); classes balanced by the loader.",
        label_column="label",
        format_row=format_text_label,
    ),
    "yelp_polarity": HubTask(
        "fancyzhx/yelp_polarity",
        "train",
        "test",  # labelled, 38k reviews
        "Yelp review polarity (text -> positive); classes balanced by the loader.",
        label_column="label",
        format_row=format_text_label,
    ),
    "cola": HubTask(
        "nyu-mll/glue",
        "train",
        "validation",  # GLUE test labels are hidden (-1)
        "GLUE CoLA: is the sentence grammatically acceptable; classes balanced by the loader.",
        config="cola",
        label_column="label",
        format_row=format_cola,
    ),
    "paws": HubTask(
        "google-research-datasets/paws",
        "train",
        "test",  # labelled_final's test split is labelled (8k pairs)
        "PAWS: are the two sentences paraphrases; classes balanced by the loader.",
        config="labeled_final",
        label_column="label",
        format_row=format_paws,
    ),
    "multirc": HubTask(
        "aps/super_glue",
        "train",
        "validation",  # SuperGLUE test labels are hidden (-1)
        "SuperGLUE MultiRC: is the answer to the question about the paragraph true; classes "
        "balanced by the loader.",
        config="multirc",
        label_column="label",
        format_row=format_multirc,
    ),
    "wic": HubTask(
        "aps/super_glue",
        "train",
        "validation",  # SuperGLUE test labels are hidden (-1)
        "SuperGLUE WiC: does the word mean the same in both sentences; classes balanced by the "
        "loader.",
        config="wic",
        label_column="label",
        format_row=format_wic,
    ),
    "mc_taco": HubTask(
        "CogComp/mc_taco",
        "test",  # no train split: EleutherAI/w2s trains on the larger test split (9.4k)
        "validation",  # and tests on validation (3.8k)
        "MC-TACO temporal commonsense: is the answer plausible; classes balanced by the loader. "
        "Script-based repo.",
        label_column="label",
        format_row=format_mc_taco,
    ),
    "anli_r2": HubTask(
        "facebook/anli",
        "train_r2",  # round 2, as the paper's FLAN ANLI R2
        "test_r2",
        "ANLI round 2: does the premise entail the hypothesis (neutral and contradiction are "
        "0); classes balanced by the loader.",
        label_column="label",
        format_row=format_anli,
        label_of=anli_label,
    ),
    "ethics_commonsense": HubTask(
        "hendrycks/ethics",
        "train",
        "test",  # EleutherAI/w2s's test split
        "ETHICS commonsense morality: is the act clearly wrong; classes balanced by the loader. "
        "Script-based repo.",
        config="commonsense",
        label_column="label",
        format_row=format_ethics_commonsense,
    ),
    "ethics_justice": HubTask(
        "hendrycks/ethics",
        "train",
        "test",
        "ETHICS justice: is the claim reasonable; classes balanced by the loader. "
        "Script-based repo.",
        config="justice",
        label_column="label",
        format_row=format_ethics_justice,
    ),
    "ethics_deontology": HubTask(
        "hendrycks/ethics",
        "train",
        "test",
        "ETHICS deontology: is the excuse reasonable for the scenario; classes balanced by the "
        "loader. Script-based repo.",
        config="deontology",
        label_column="label",
        format_row=format_ethics_deontology,
    ),
    "ethics_virtue": HubTask(
        "hendrycks/ethics",
        "train",
        "test",
        "ETHICS virtue: does the behaviour show the trait after [SEP]; classes balanced by the "
        "loader. Script-based repo.",
        config="virtue",
        label_column="label",
        format_row=format_ethics_virtue,
    ),
    "openbookqa": HubTask(
        "allenai/openbookqa",
        "train",
        "test",  # labelled, 500 questions
        "OpenBookQA: is the shown answer the right one of four (balanced 50/50 by construction).",
        config="main",
        format_rows=format_openbookqa,
        key=_fields("question_stem"),
    ),
    "quartz": HubTask(
        "allenai/quartz",
        "train",
        "test",  # labelled
        "QuaRTz qualitative relations: is the shown answer the right one of two (balanced 50/50 "
        "by construction).",
        format_rows=format_quartz,
        key=_fields("para", "question"),
    ),
    "piqa": HubTask(
        "ybisk/piqa",
        "train",
        "validation",  # the test split is unlabelled
        "PIQA physical commonsense: is the shown solution the right one of two (balanced 50/50 "
        "by construction). Script-based repo.",
        format_rows=format_piqa,
        key=_fields("goal", "sol1", "sol2"),
    ),
    "social_i_qa": HubTask(
        "allenai/social_i_qa",
        "train",
        "validation",  # no labelled test split on the hub
        "Social IQa: is the shown answer the right one of three (balanced 50/50 by "
        "construction). Script-based repo.",
        format_rows=format_social_i_qa,
        key=_fields("context", "question"),
    ),
    "hellaswag": HubTask(
        "Rowan/hellaswag",
        "train",
        "validation",  # the test split is unlabelled
        "HellaSwag: is the shown ending the right one of four (balanced 50/50 by construction).",
        format_rows=format_hellaswag,
        key=_fields("ctx", "endings"),
    ),
    "quail": HubTask(
        "textmachinelab/quail",
        "train",
        "validation",  # as EleutherAI/w2s (the 'challenge' split is a harder set)
        "QuAIL reading comprehension: is the shown answer the right one of four (balanced 50/50 "
        "by construction).",
        format_rows=format_quail,
        key=_fields("context", "question"),
    ),
    "dream": HubTask(
        "dataset-org/dream",
        "train",
        "test",  # labelled
        "DREAM dialogue comprehension: is the shown answer the right one of three (balanced "
        "50/50 by construction).",
        format_rows=format_dream,
        key=_fields("dialogue", "question"),
    ),
}

_COMMON = (("split", "str"), ("test_split", "str?"), ("revision", "str?"), ("hub_id", "str"))
_LABELLED = (("balance", "bool"),)


def task_params(task: HubTask) -> tuple[tuple[str, str], ...]:
    """The params (name, kind) a spec may set for this task."""
    return _COMMON + (_LABELLED if task.label_column else ()) + task.extra


def param_type_problems(params: dict, kinds: Sequence[tuple[str, str]]) -> list[str]:
    """Problems with the types of set params. Kinds: str, bool, dict, posint, and a trailing
    ``?`` allowing None (unknown names are reported by validate_dataset_params)."""
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "str": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        "bool": (lambda v: isinstance(v, bool), "true or false"),
        "dict": (lambda v: isinstance(v, dict), "a mapping"),
        "posint": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
            "a positive integer",
        ),
    }
    problems = []
    for name, kind in kinds:
        if name not in params:
            continue
        value, optional = params[name], kind.endswith("?")
        check, want = checks[kind.rstrip("?")]
        if not (check(value) or (optional and value is None)):
            problems.append(f"parameter {name!r} must be {want}, got {value!r}")
    return problems


def hub_param_problems(name: str, params: dict) -> list[str]:
    """Spec-time problems with a hub task's params: their types, and a test split that is
    the training split (the test rows would be training rows)."""
    task = HUB_TASKS[name]
    problems = param_type_problems(params, task_params(task))
    split, test = params.get("split", task.split), params.get("test_split", task.test_split)
    if test is not None and test == split:
        problems.append(
            f"test_split {test!r} is the training split: name another split, or set "
            "test_split: null to cut the test rows from the training split"
        )
    return problems


def _column(rows: Any, name: str) -> list[Any]:
    # A datasets.Dataset returns a whole column at once, far faster than reading row by row.
    if hasattr(rows, "column_names"):
        return list(rows[name])
    return [row[name] for row in rows]


def examples_from_rows(
    name: str,
    rows: Sequence[Row],
    n: int,
    seed: int,
    balance: bool = True,
    **format_params: Any,
) -> tuple[list[str], list[int]]:
    """Up to ``n`` examples of hub task ``name`` from its rows, deterministic in seed.

    ``rows`` is any sequence of hub-schema dicts (a ``datasets.Dataset`` or a list). Labelled
    tasks take ``n`` rows with ``n // 2`` per class if ``balance`` (fewer if the minority class
    runs out) or the first ``n`` of a seeded shuffle; constructed tasks take the first ``n`` of a
    seeded shuffle and balance by construction. Fewer rows than ``n`` give all of them.
    """
    task = HUB_TASKS[name]
    if task.label_column is not None and balance:
        labels = []
        for i, raw in enumerate(_column(rows, task.label_column)):
            try:
                labels.append(task.label_of(raw))
            except ValueError as exc:
                raise ValueError(
                    f"dataset {name!r}: row {i}: column {task.label_column!r}: {exc} "
                    "(is this split unlabelled?)"
                ) from None
        idx = balanced_indices(labels, n, seed)
    else:
        idx = shuffled_indices(len(rows), n, seed)
    picked = [rows[int(i)] for i in idx]
    if task.format_rows is not None:
        return task.format_rows(picked, seed, **format_params)
    assert task.format_row is not None
    texts, labels = [], []
    for row in picked:
        text, label = task.format_row(row)
        texts.append(text)
        labels.append(label)
    return texts, labels


def row_key(task: HubTask, row: Row) -> str:
    """The row's identity for the train/test overlap check (HubTask.key)."""
    if task.key is not None:
        return task.key(row)
    assert task.format_row is not None and task.label_column is not None
    # The text whatever the label: an unlabelled row (-1) has a key too.
    return task.format_row({**row, task.label_column: 0})[0]


def _iter_rows(rows: Sequence[Row]) -> Iterator[Row]:
    # A datasets.Dataset read in batches: row by row is far slower on a large train split.
    if hasattr(rows, "iter") and hasattr(rows, "column_names"):
        for batch in rows.iter(batch_size=4096):
            yield from (
                dict(zip(batch, vals, strict=True)) for vals in zip(*batch.values(), strict=True)
            )
    else:
        yield from rows


def _subset(rows: Sequence[Row], idx: list[int]) -> Sequence[Row]:
    if hasattr(rows, "select"):  # a datasets.Dataset: an index mapping, no copy
        return rows.select(idx)
    return [rows[i] for i in idx]


def hub_sources(
    name: str,
    train_rows: Sequence[Row],
    test_rows: Sequence[Row],
    n_train: int,
    n_test: int,
    seed: int,
    balance: bool = True,
    train_source: str = "train rows",
    test_source: str = "test rows",
    **format_params: Any,
) -> SourcedExamples:
    """Up to ``n_train`` training examples from ``train_rows`` and exactly ``n_test`` test
    examples from ``test_rows``, each selected as examples_from_rows selects them (the test
    side with a seed of its own). Training rows whose key (HubTask.key) is a test row's are
    dropped before sampling and counted; ValueError if the test rows give fewer than
    ``n_test`` examples. ``train_source`` and ``test_source`` name the sources in messages."""
    task = HUB_TASKS[name]
    test_seed = int(rng_for(seed, "test").integers(2**31))
    te = examples_from_rows(name, test_rows, n_test, test_seed, balance, **format_params)
    if len(te[0]) < n_test:
        most = len(examples_from_rows(name, test_rows, len(test_rows), test_seed, balance)[0])
        raise ValueError(
            f"dataset {name!r}: {test_source} gives {most} test "
            f"examples{' (classes balanced)' if balance and task.label_column else ''}, n_test "
            f"is {n_test}: set n_test to at most {most}"
        )
    test_keys = [row_key(task, r) for r in _iter_rows(test_rows)]
    shared = set(shared_with_test((row_key(task, r) for r in _iter_rows(train_rows)), test_keys))
    log_dropped(f"dataset {name!r}: {train_source}", len(shared), test_source)
    if shared:
        train_rows = _subset(train_rows, [i for i in range(len(train_rows)) if i not in shared])
    tr = examples_from_rows(name, train_rows, n_train, seed, balance, **format_params)
    return SourcedExamples(*tr, *te, len(shared), train_source)


def with_hub_commit(d: dict[str, Any]) -> dict[str, Any]:
    """A run's dataset (or corpus) dict with ``commit``: for a hub dataset, the commit its
    resolved params' ``revision`` points at (w2sray/models/revisions.py). The run key hashes
    the commit instead of the revision, and the workers load exactly it (data.loader_params).
    Unchanged for other datasets and when the commit cannot be resolved."""
    if d["name"] not in HUB_TASKS:
        return d
    from w2sray.models.revisions import resolve_revision

    params = d["params"]
    hub_id = params.get("hub_id") or HUB_TASKS[d["name"]].hub_id
    commit = resolve_revision(hub_id, params.get("revision"), "dataset").commit
    return {**d, "commit": commit} if commit else d


def load_hub_rows(
    hub_id: str,
    split: str,
    revision: str | None = None,
    data_dir: str | None = None,
    config: str | None = None,
    dataset: str = "",
) -> Sequence[Row]:
    """One split of a hub dataset as a ``datasets.Dataset`` (downloaded and cached by
    ``datasets``; HF_HUB_OFFLINE=1 reads the cache only). ``dataset`` (the registry name)
    names the dataset in the error when ``datasets`` is missing."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            f"dataset {dataset or hub_id!r} loads {hub_id!r} from the Hugging Face hub and "
            "needs the `datasets` package, which is not installed: pip install 'w2sray[hub]'"
        ) from exc
    kwargs: dict[str, Any] = {"split": split, "revision": revision}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    return datasets.load_dataset(hub_id, config, **kwargs)


def _register(name: str, task: HubTask) -> None:
    kinds = task_params(task)

    def rows_of(split: str, hub_id: str, revision: str | None, data_dir: str | None) -> Any:
        return load_hub_rows(hub_id, split, revision, data_dir, task.config, dataset=name)

    def load(
        n: int,
        seed: int,
        split: str = task.split,
        test_split: str | None = task.test_split,
        revision: str | None = None,
        hub_id: str = task.hub_id,
        balance: bool = True,
        data_dir: str | None = None,
        **format_params: Any,
    ) -> tuple[list[str], list[int]]:
        # Rows of ``split`` only: make_splits takes the test rows from ``test_split`` through
        # load_sources; a pretraining corpus reads its texts from here.
        rows = rows_of(split, hub_id, revision, data_dir)
        return examples_from_rows(name, rows, n, seed, balance=balance, **format_params)

    def load_sources(
        n_train: int,
        n_test: int,
        seed: int,
        split: str = task.split,
        test_split: str | None = task.test_split,
        revision: str | None = None,
        hub_id: str = task.hub_id,
        balance: bool = True,
        data_dir: str | None = None,
        **format_params: Any,
    ) -> SourcedExamples | None:
        if test_split is None:  # all three splits from ``split``
            return None
        return hub_sources(
            name,
            rows_of(split, hub_id, revision, data_dir),
            rows_of(test_split, hub_id, revision, data_dir),
            n_train,
            n_test,
            seed,
            balance,
            train_source=f"{hub_id} split {split!r}",
            test_source=f"{hub_id} split {test_split!r}",
            **format_params,
        )

    config = f" (config {task.config!r})" if task.config else ""
    test = f"test split {task.test_split!r}" if task.test_split else "no test split"
    doc = f"{task.doc} Hub: {task.hub_id}{config}, train split {task.split!r}, {test}."
    extra = tuple(k for k, _ in task.extra)
    register_dataset(
        name,
        doc,
        params=tuple(k for k, _ in kinds),
        validate=lambda params: hub_param_problems(name, params),
        # The formatter's own params reach it through **format_params: declare their defaults.
        defaults=signature_defaults(task.format_rows, extra) if task.format_rows else None,
        load_sources=load_sources,
        requires=(("datasets", "hub"),),
        source=task.hub_id + (f" ({task.config})" if task.config else ""),
        splits=f"A, B: {task.split}; test: {task.test_split or 'cut from ' + task.split}",
    )(load)


for _name, _task in HUB_TASKS.items():
    _register(_name, _task)
