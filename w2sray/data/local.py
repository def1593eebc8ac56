"""The ``local`` registry entry: a binary-labelled table from a local file.

Formats: jsonl, json (a list of objects, or an object of equal-length column lists), csv, tsv
(GLUE-style: tab-separated, no quoting) and parquet; gzip-compressed text formats are read
transparently (``train.jsonl.gz``). The format follows the file name unless ``format`` is set.
A column name may be a dotted path into nested JSON objects (``target_new.str``).

A relative ``path`` resolves against the working directory of the process that loads it: the
spec is validated in the driver, but splits are made in every Ray Train worker, so on a
multi-node cluster give a path that exists on every node (shared storage).

A separate test source: ``test_path`` (one file or a list of files, read with ``test_format``,
``test_text_column`` and ``test_label_column``, each defaulting to its training counterpart;
``text_pair_column`` and ``label_map`` are shared). Splits A and B are then cut from the rows of
``path`` only, and the test split is ``n_test`` rows of the test files (a seeded sample, not
balanced: the test files' own label mix; ``n_test`` equal to their row count takes them all, a
larger one is an error). A training row whose text (stripped) is also a test text is dropped
from the training rows before sampling, and the count is logged and returned, never silently
kept (SST-2: one sentence of test.tsv is also in train.tsv). Run keys follow every file's bytes
(``file_digests``), not where the files lie.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pyarrow.parquet as pq

from w2sray.data import (
    SourcedExamples,
    Splits,
    log_dropped,
    register_dataset,
    shared_with_test,
    splits_from_sources,
)
from w2sray.data.formatters import Row, binary_label
from w2sray.data.hub import param_type_problems
from w2sray.data.sampling import balanced_indices, rng_for, shuffled_indices

FORMATS = ("jsonl", "jsonl.gz", "json", "csv", "tsv", "parquet")

PARAMS = (
    ("path", "str"),
    ("format", "str?"),
    ("text_column", "str"),
    ("label_column", "str"),
    ("text_pair_column", "str?"),
    ("label_map", "dict?"),
    ("balance", "bool"),
    ("test_format", "str?"),
    ("test_text_column", "str?"),
    ("test_label_column", "str?"),
)
# ``test_path`` (a file or a list of files) is checked by validate_local_params itself.
PARAM_NAMES = ("path", "test_path") + tuple(name for name, _ in PARAMS[1:])


def detect_format(path: str, format: str | None = None) -> str:
    """The table format of ``path``: ``format`` if set, else from the extension (a ``.gz``
    suffix is ignored: compression is detected from the content)."""
    fmt = format or ""
    if not fmt:
        name = path.lower().removesuffix(".gz")
        exts = ("jsonl", "json", "csv", "tsv", "parquet")
        fmt = next((f for f in exts if name.endswith("." + f)), "")
        if not fmt:
            raise ValueError(
                f"{path}: cannot tell the format from the file name; set params.format "
                f"({', '.join(FORMATS)})"
            )
    fmt = fmt.lower().removesuffix(".gz")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown format {format!r} (known: {', '.join(FORMATS)})")
    return fmt


def _open_text(path: str) -> IO[str]:
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _iter_rows(path: str, fmt: str) -> Iterator[Row]:
    if fmt == "parquet":
        yield from pq.read_table(path).to_pylist()
        return
    with _open_text(path) as fh:
        if fmt in ("csv", "tsv"):
            # GLUE tsv files are unquoted: a '"' inside a sentence is text, not a quote.
            kw = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
            yield from csv.DictReader(fh, **kw)
        elif fmt == "jsonl":
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {lineno}: not valid JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {lineno}: not a JSON object")
                yield row
        else:
            data = json.load(fh)
            if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
                lengths = {len(v) for v in data.values()}
                if len(lengths) > 1:
                    raise ValueError(f"{path}: columns have different lengths {sorted(lengths)}")
                keys = list(data)
                yield from (
                    dict(zip(keys, vals, strict=True)) for vals in zip(*data.values(), strict=True)
                )
            elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
                yield from data
            else:
                raise ValueError(f"{path}: expected a list of objects or an object of column lists")


def read_rows(path: str, format: str | None = None) -> list[Row]:
    """All rows of a local table as dicts (csv/tsv values are strings)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found (cwd: {os.getcwd()})")
    return list(_iter_rows(path, detect_format(path, format)))


_MISSING = object()


def _get(row: Row, column: str) -> Any:
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _columns_problem(path: str, first: Row, columns: list[str]) -> str | None:
    for col in columns:
        if _get(first, col) is _MISSING:
            return f"{path}: column {col!r} not found (columns: {', '.join(map(str, first))})"
    return None


def _map_label(raw: Any, label_map: dict | None) -> int:
    if label_map is None:
        return binary_label(raw)
    if raw in label_map:
        return binary_label(label_map[raw])
    # YAML keys and file values may differ in type (1 vs "1"): compare as strings too.
    by_str = {str(k): v for k, v in label_map.items()}
    if str(raw) in by_str:
        return binary_label(by_str[str(raw)])
    raise ValueError(f"label {raw!r} is not in label_map (keys: {', '.join(map(str, by_str))})")


def table_examples(
    path: str,
    rows: list[Row],
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    label_map: dict | None = None,
) -> tuple[list[str], list[int]]:
    """Every row as ``(text, label)``: the text column (and the pair column after a newline),
    the label as 0/1 (through ``label_map`` if given). Errors name the file, row and column."""
    if not rows:
        raise ValueError(f"{path}: no rows")
    columns = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    problem = _columns_problem(path, rows[0], columns)
    if problem:
        raise ValueError(problem)
    texts, labels = [], []
    for i, row in enumerate(rows):
        values = []
        for col in columns:
            value = _get(row, col)
            if value is _MISSING or value is None:
                raise ValueError(f"{path}: row {i}: column {col!r} is missing")
            values.append(value)
        text = str(values[0]) + (f"\n{values[2]}" if text_pair_column else "")
        try:
            label = _map_label(values[1], label_map)
        except ValueError as exc:
            raise ValueError(f"{path}: row {i}: column {label_column!r}: {exc}") from None
        texts.append(text)
        labels.append(label)
    return texts, labels


@register_dataset(
    "local",
    "A binary-labelled table from a local file (jsonl, jsonl.gz, json, csv, tsv, parquet): "
    "path (required), format, text_column ('text'), label_column ('label'), text_pair_column, "
    "label_map (raw label -> 0/1), balance (true: equal counts per class); test_path (a file "
    "or a list: the test split comes from these, A and B from path), test_format, "
    "test_text_column, test_label_column.",
    params=PARAM_NAMES,
    validate=lambda params: validate_local_params(params),
    load_sources=lambda n_train, n_test, seed, **params: (
        load_local_sources(n_train, n_test, seed, **params) if params.get("test_path") else None
    ),
    source="local files",
    splits="A, B: path; test: test_path (else cut from path)",
)
def load_local(
    n: int,
    seed: int,
    path: str = "",
    format: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    label_map: dict | None = None,
    balance: bool = True,
) -> tuple[list[str], list[int]]:
    """Up to ``n`` examples from a local table, deterministic in seed: ``n // 2`` per class if
    ``balance`` (fewer if the minority class runs out), else the first ``n`` of a seeded
    shuffle. Every row is parsed, so a bad label anywhere fails whatever the seed."""
    rows = read_rows(path, format)
    texts, labels = table_examples(
        path, rows, text_column, label_column, text_pair_column, label_map
    )
    idx = _sample(labels, n, seed, balance)
    return [texts[i] for i in idx], [labels[i] for i in idx]


def _sample(labels: list[int], n: int, seed: int, balance: bool) -> np.ndarray:
    """Indices of up to ``n`` rows: ``n // 2`` per class if ``balance``, else a seeded shuffle."""
    return balanced_indices(labels, n, seed) if balance else shuffled_indices(len(labels), n, seed)


# ---------------------------------------------------------------------------------------------
# A separate test source (``test_path``)

TEST_PARAMS = ("test_path", "test_format", "test_text_column", "test_label_column")


def test_paths(value: str | list[str]) -> list[str]:
    """``test_path`` as a list of files (one file may be given as a string)."""
    return [value] if isinstance(value, str) else list(value)


def load_local_sources(
    n_train: int,
    n_test: int,
    seed: int,
    path: str = "",
    test_path: str | list[str] = "",
    format: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    label_map: dict | None = None,
    balance: bool = True,
    test_format: str | None = None,
    test_text_column: str | None = None,
    test_label_column: str | None = None,
) -> SourcedExamples:
    """Up to ``n_train`` training rows from ``path`` (as load_local selects them) and exactly
    ``n_test`` test rows from the ``test_path`` files (the first ``n_test`` of a seeded shuffle
    of all their rows, not balanced; ValueError naming the count if they hold fewer).

    Training rows whose text, stripped, equals a test text are dropped before sampling, so no
    test example is trained on; their count is returned and logged."""
    test_texts: list[str] = []
    test_labels: list[int] = []
    for p in test_paths(test_path):
        t, y = table_examples(
            p,
            read_rows(p, test_format),
            test_text_column or text_column,
            test_label_column or label_column,
            text_pair_column,
            label_map,
        )
        test_texts += t
        test_labels += y
    if n_test > len(test_texts):
        raise ValueError(
            f"test_path ({', '.join(test_paths(test_path))}) has {len(test_texts)} rows, "
            f"n_test is {n_test}: set n_test to at most {len(test_texts)} (that many takes "
            "every test row)"
        )
    texts, labels = table_examples(
        path, read_rows(path, format), text_column, label_column, text_pair_column, label_map
    )
    shared = set(shared_with_test(texts, test_texts))
    keep = [i for i in range(len(texts)) if i not in shared]
    log_dropped(path, len(shared), ", ".join(test_paths(test_path)))
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    idx = _sample(labels, n_train, seed, balance)
    test_idx = rng_for(seed, "test").permutation(len(test_texts))[:n_test]
    return SourcedExamples(
        [texts[i] for i in idx],
        [labels[i] for i in idx],
        [test_texts[i] for i in test_idx],
        [test_labels[i] for i in test_idx],
        len(shared),
        path,
    )


def splits_with_test_source(
    params: dict, n_gt: int, n_weak: int, n_test: int, split_seed: int
) -> Splits:
    """make_splits for a ``local`` dataset with ``test_path``: A and B from ``path``, test
    from the test files (w2sray.data.splits_from_sources)."""
    src = load_local_sources(n_gt + n_weak, n_test, split_seed, **params)
    return splits_from_sources("local", src, n_gt, n_weak, n_test, split_seed)


def with_test_digests(dataset: dict) -> dict:
    """A run's dataset dict (runs.py ``dataset_ref``, before it is typed) with its test files,
    if any, made absolute in ``params.test_path`` and their sha256s in ``test_sha256`` (in
    order), so the run key follows the test files' bytes, not where they lie. Without
    ``test_path``: unchanged."""
    from w2sray.digests import file_digest

    value = dataset["params"].get("test_path")
    if not value:
        return dataset
    paths = [os.path.abspath(p) for p in test_paths(value)]
    params = {**dataset["params"], "test_path": paths[0] if isinstance(value, str) else paths}
    return {**dataset, "params": params, "test_sha256": [file_digest(p) for p in paths]}


def _first_row(path: str, fmt: str) -> Row | None:
    return next(_iter_rows(path, fmt), None)


def validate_local_params(params: dict) -> list[str]:
    """Spec-time problems with a ``local`` dataset: path missing or not a file, bad param types,
    a label_map value that is not 0/1, and columns absent from the file's first row."""
    problems = param_type_problems(params, PARAMS)
    # Params whose type is already reported are not used for the file checks below.
    bad = {k for k, kind in PARAMS if param_type_problems(params, [(k, kind)])}
    if "path" not in params:
        problems.append(
            "dataset 'local' needs parameter 'path' (a jsonl, jsonl.gz, json, csv, tsv or "
            "parquet file)"
        )
    if "label_map" not in bad:
        for key, value in (params.get("label_map") or {}).items():
            try:
                binary_label(value)
            except ValueError:
                problems.append(f"label_map[{key!r}] must be 0 or 1, got {value!r}")
    problems += _test_source_problems(params, bad)
    if "path" not in params or bad & {"path", "format"}:
        return problems
    names = ("text_column", "label_column", "text_pair_column")
    defaults = {"text_column": "text", "label_column": "label"}
    columns = [
        params.get(k, defaults.get(k))
        for k in names
        if k not in bad and params.get(k, defaults.get(k))
    ]
    problem = _file_problem("path", params["path"], params.get("format"), columns)
    return problems + ([problem] if problem else [])


def _file_problem(field: str, path: str, format: str | None, columns: list[str]) -> str | None:
    """The problem with one table file named by spec parameter ``field``: not a file,
    unreadable, empty, or lacking a column (read from its first row, before any Ray work)."""
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (relative to the current directory {os.getcwd()})"
        return f"{field} {path!r} is not a file{where}"
    try:
        first = _first_row(path, detect_format(path, format))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        return str(exc)
    except Exception as exc:  # e.g. a corrupt parquet file: pyarrow's own error types
        return f"{path}: cannot read as {format or 'auto'}: {exc}"
    if first is None:
        return f"{path}: no rows"
    return _columns_problem(path, first, columns)


def _test_source_problems(params: dict, bad: set[str]) -> list[str]:
    """Spec-time problems with ``test_path`` (a file or a non-empty list of files) and the
    ``test_*`` params that only apply with it; each test file is checked like ``path``, with
    the test columns (defaulting to the training ones)."""
    value = params.get("test_path")
    if value is None:
        stray = [k for k in TEST_PARAMS[1:] if params.get(k) is not None]
        return [f"parameter {k!r} applies only with 'test_path'" for k in stray]
    if not (
        (isinstance(value, str) and value)
        or (isinstance(value, list) and value and all(isinstance(p, str) and p for p in value))
    ):
        return [f"parameter 'test_path' must be a file or a non-empty list of files, got {value!r}"]
    if "test_format" in bad:
        return []
    columns = []
    for k, default in (("text_column", "text"), ("label_column", "label")):
        col = params.get(f"test_{k}") or params.get(k, default)
        if f"test_{k}" not in bad and k not in bad:
            columns.append(col)
    if params.get("text_pair_column") and "text_pair_column" not in bad:
        columns.append(params["text_pair_column"])
    problems = []
    for i, p in enumerate(test_paths(value)):
        field = "test_path" if isinstance(value, str) else f"test_path[{i}]"
        problem = _file_problem(field, p, params.get("test_format"), columns)
        if problem:
            problems.append(problem)
    return problems
