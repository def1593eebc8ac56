"""The ``local`` registry entry: a binary-labelled table from a local file.

Formats: jsonl, json (a list of objects, or an object of equal-length column lists), csv, tsv
(GLUE-style: tab-separated, no quoting) and parquet; gzip-compressed text formats are read
transparently (``train.jsonl.gz``). The format follows the file name unless ``format`` is set.
A column name may be a dotted path into nested JSON objects (``target_new.str``).

A relative ``path`` resolves against the working directory of the process that loads it: the
spec is validated in the driver, but splits are made in every Ray Train worker, so on a
multi-node cluster give a path that exists on every node (shared storage).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterator
from typing import IO, Any

import pyarrow.parquet as pq

from w2sray.data import register_dataset
from w2sray.data.formatters import Row, binary_label
from w2sray.data.hub import param_type_problems
from w2sray.data.sampling import balanced_indices, shuffled_indices

FORMATS = ("jsonl", "jsonl.gz", "json", "csv", "tsv", "parquet")

PARAMS = (
    ("path", "str"),
    ("format", "str?"),
    ("text_column", "str"),
    ("label_column", "str"),
    ("text_pair_column", "str?"),
    ("label_map", "dict?"),
    ("balance", "bool"),
)


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
    "label_map (raw label -> 0/1), balance (true: equal counts per class).",
    params=tuple(name for name, _ in PARAMS),
    validate=lambda params: validate_local_params(params),
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
    if balance:
        idx = balanced_indices(labels, n, seed)
    else:
        idx = shuffled_indices(len(labels), n, seed)
    return [texts[i] for i in idx], [labels[i] for i in idx]


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
    if "path" not in params or bad & {"path", "format"}:
        return problems
    path = params["path"]
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (relative to the current directory {os.getcwd()})"
        return problems + [f"path {path!r} is not a file{where}"]
    # Reading the first row now reports a wrong column name before any Ray work starts.
    try:
        first = _first_row(path, detect_format(path, params.get("format")))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        return problems + [str(exc)]
    except Exception as exc:  # e.g. a corrupt parquet file: pyarrow's own error types
        return problems + [f"{path}: cannot read as {params.get('format') or 'auto'}: {exc}"]
    if first is None:
        return problems + [f"{path}: no rows"]
    names = ("text_column", "label_column", "text_pair_column")
    defaults = {"text_column": "text", "label_column": "label"}
    columns = [
        params.get(k, defaults.get(k))
        for k in names
        if k not in bad and params.get(k, defaults.get(k))
    ]
    problem = _columns_problem(path, first, columns)
    return problems + ([problem] if problem else [])
