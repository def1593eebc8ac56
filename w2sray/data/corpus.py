"""Pretraining corpora: unlabeled texts, as a pretraining run carries them and as workers load them.

A corpus is a registered dataset's texts (its loader's, labels dropped, drawn with the corpus's
own seed) or a local file: ``.txt`` holds one document per line, a table (.jsonl, .csv, ...)
one per row in ``text_column``. A file is keyed by its sha256, not its path.
"""

from __future__ import annotations

import os
from typing import Any

from w2sray.data import DATASETS, loader_params, resolved_dataset_params
from w2sray.data.hub import with_hub_commit

FILE = "file"  # the dataset name a run carries for a corpus read from a local file


def corpus_dict(corpus: Any) -> dict[str, Any]:
    """The corpus (a w2sray.spec.CorpusSpec) as a pretraining run carries and keys it."""
    from w2sray.digests import file_digest

    if corpus.path is not None:
        path = os.path.abspath(os.path.expanduser(corpus.path))
        params = {"path": path, "text_column": corpus.text_column}
        # sha256: Run.content keys the file by its bytes and drops the path.
        return {"name": FILE, "params": params, "n": corpus.n, "sha256": file_digest(path)}
    params = resolved_dataset_params(corpus.dataset, corpus.params)
    d = {"name": corpus.dataset, "params": params, "n": corpus.n, "seed": corpus.seed}
    return with_hub_commit(d)


def load_corpus(d: Any) -> list[str]:
    """The texts of a corpus (a settings.CorpusRef of corpus_dict's dict): up to ``n``
    documents (a file's first ``n`` non-empty ones, in file order)."""
    if d.name == FILE:
        path, column = d.params["path"], d.params["text_column"]
        if path.endswith(".txt"):
            with open(path, encoding="utf-8") as fh:
                texts = [line.strip() for line in fh]
        else:
            from w2sray.data.local import read_rows

            texts = []
            for i, row in enumerate(read_rows(path)):
                if column not in row:
                    raise ValueError(f"{path}: row {i + 1} has no column {column!r}")
                texts.append(str(row[column]).strip())
        texts = [t for t in texts if t]
        if not texts:
            raise ValueError(f"{path}: the corpus file holds no text")
        return texts[: d.n]
    texts, _ = DATASETS[d.name].load(d.n, d.seed, **loader_params(d))
    return list(texts)
