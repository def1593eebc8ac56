"""Registry entries for public NLP tasks loaded by name from the Hugging Face hub.

Each entry loads one split with ``datasets.load_dataset(hub_id, split=..., revision=...)``,
picks rows deterministically from the split seed, and formats them (w2sray.data.formatters).
The ``datasets`` package is imported only inside the hub call, so it is needed only by
sweeps that use these entries. Everything after the download is a pure function of the rows
(examples_from_rows), which the tests exercise on in-memory rows.

Pin ``revision`` (a commit hash of the dataset repo) for reproducible sweeps: the default is
the repo's current main branch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from w2sray.data import register_dataset, signature_defaults
from w2sray.data.formatters import (
    Example,
    Row,
    binary_label,
    format_amazon_polarity,
    format_anthropic_hh,
    format_boolq,
    format_cosmos_qa,
    format_sciq,
    format_sst2,
)
from w2sray.data.sampling import balanced_indices, shuffled_indices


@dataclass(frozen=True)
class HubTask:
    """How one hub dataset becomes binary examples.

    A labelled task has ``label_column`` and ``format_row`` (one row, one example) and is
    balanced by the loader; a constructed task has ``format_rows(rows, seed, **extra)``, which
    makes balanced examples itself.
    """

    hub_id: str
    split: str
    doc: str
    label_column: str | None = None
    format_row: Callable[[Row], Example] | None = None
    format_rows: Callable[..., tuple[list[str], list[int]]] | None = None
    # extra loader params: name -> kind (see param_type_problems)
    extra: tuple[tuple[str, str], ...] = ()


HUB_TASKS: dict[str, HubTask] = {
    "sst2": HubTask(
        "stanfordnlp/sst2",
        "train",
        "SST-2 movie-review sentiment (sentence -> positive); classes balanced by the loader. "
        "The hub's test split is unlabelled.",
        label_column="label",
        format_row=format_sst2,
    ),
    "amazon_polarity": HubTask(
        "fancyzhx/amazon_polarity",
        "train",
        "Amazon review polarity (title + content -> positive); classes balanced by the loader.",
        label_column="label",
        format_row=format_amazon_polarity,
    ),
    "boolq": HubTask(
        "google/boolq",
        "train",
        "BoolQ yes/no questions (question + passage -> yes); classes balanced by the loader.",
        label_column="answer",
        format_row=format_boolq,
    ),
    "sciq": HubTask(
        "allenai/sciq",
        "train",
        "SciQ science questions: is the shown answer the correct one or a distractor "
        "(balanced 50/50 by construction).",
        format_rows=format_sciq,
    ),
    "cosmos_qa": HubTask(
        "allenai/cosmos_qa",
        "train",
        "Cosmos QA commonsense reading comprehension: is the shown answer the correct one or "
        "a random wrong one (balanced 50/50 by construction). The hub repo is script-based; "
        "recent `datasets` releases may need revision 'refs/convert/parquet'.",
        format_rows=format_cosmos_qa,
    ),
    "anthropic_hh": HubTask(
        "Anthropic/hh-rlhf",
        "train",
        "Anthropic HH-RLHF preferences, pairwise: shared prompt, then Response A and B in random "
        "order; label 1 if A is the chosen one (balanced 50/50 by construction). "
        "data_dir selects a subset, e.g. 'harmless-base' (default: all).",
        format_rows=format_anthropic_hh,
        extra=(
            ("data_dir", "str?"),
            ("max_prompt_chars", "posint?"),
            ("max_response_chars", "posint?"),
        ),
    ),
}

_COMMON = (("split", "str"), ("revision", "str?"), ("hub_id", "str"))
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
                labels.append(binary_label(raw))
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


def load_hub_rows(
    hub_id: str, split: str, revision: str | None = None, data_dir: str | None = None
) -> Sequence[Row]:
    """One split of a hub dataset as a ``datasets.Dataset`` (downloaded and cached by
    ``datasets``; HF_HUB_OFFLINE=1 reads the cache only)."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            f"loading {hub_id!r} from the Hugging Face hub needs the `datasets` package "
            "(pip install datasets)"
        ) from exc
    kwargs: dict[str, Any] = {"split": split, "revision": revision}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    return datasets.load_dataset(hub_id, **kwargs)


def _register(name: str, task: HubTask) -> None:
    kinds = task_params(task)

    def load(
        n: int,
        seed: int,
        split: str = task.split,
        revision: str | None = None,
        hub_id: str = task.hub_id,
        balance: bool = True,
        data_dir: str | None = None,
        **format_params: Any,
    ) -> tuple[list[str], list[int]]:
        rows = load_hub_rows(hub_id, split, revision=revision, data_dir=data_dir)
        return examples_from_rows(name, rows, n, seed, balance=balance, **format_params)

    doc = f"{task.doc} Hub: {task.hub_id} (split {task.split!r} unless set)."
    extra = tuple(k for k, _ in task.extra)
    register_dataset(
        name,
        doc,
        params=tuple(k for k, _ in kinds),
        validate=lambda params: param_type_problems(params, kinds),
        # The formatter's own params reach it through **format_params: declare their defaults.
        defaults=signature_defaults(task.format_rows, extra) if task.format_rows else None,
    )(load)


for _name, _task in HUB_TASKS.items():
    _register(_name, _task)
