"""Write the sweep report: tables, summary.md and PNG figures, each file atomically."""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .pgr import PGRMatrix, add_pgr, pgr_matrices
from .plots import heatmap, w2s_vs_ceiling

__all__ = ["RESULT_COLUMNS", "ReportPaths", "atomic_write", "slugify", "write_report"]

RESULT_COLUMNS = [
    "dataset", "weak", "strong", "method", "hparams", "variant", "seed",
    "weak_acc", "ceiling_acc", "w2s_acc", "weak_auc", "ceiling_auc", "w2s_auc",
    "run_key", "weak_key", "ceiling_key",
]  # fmt: skip
GT_COLUMNS = ["dataset", "model", "seed", "acc", "auc", "run_key"]
FAILURE_COLUMNS = ["run_key", "kind", "dataset", "model", "variant", "error"]


# Read once at import (os.umask can only be read by setting it, which is racy in threads).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass
class ReportPaths:
    """Where :func:`write_report` put things, plus the PGR matrices it computed."""

    table_parquet: Path
    table_csv: Path
    gt_csv: Path
    summary_md: Path
    heatmaps: list[Path]
    scatter: Path
    matrices: list[PGRMatrix]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp file in ``path``'s directory, then ``os.replace`` it in.

    Readers see either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes 0600 files; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def slugify(*parts: str) -> str:
    """Filesystem-safe lowercase name from ``parts`` joined by '__'."""
    out = []
    for p in parts:
        s = re.sub(r"[^a-z0-9._]+", "-", str(p).lower()).strip("-._")
        out.append(s or "x")
    return "__".join(out)


_NUMERIC = {"seed", "weak_acc", "ceiling_acc", "w2s_acc", "weak_auc", "ceiling_auc", "w2s_auc",
            "acc", "auc"}  # fmt: skip


def _ensure_columns(df: pd.DataFrame | None, cols: list[str]) -> pd.DataFrame:
    # Tolerate an empty frame without columns (nothing finished yet) or a missing optional
    # column, so the report never fails on shape alone.
    df = pd.DataFrame() if df is None else df
    missing = [c for c in cols if c not in df.columns]
    if missing:
        df = df.copy()
        for c in missing:
            df[c] = pd.Series(dtype=float if c in _NUMERIC else object, index=df.index)
    return df


def _md(text: object) -> str:
    # Escape what breaks tables or turns into markup; GFM ignores intraword underscores.
    return re.sub(r"([\\|*`<>])", r"\\\1", str(text))


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _first_line(err: object) -> str:
    if err is None or (isinstance(err, float) and math.isnan(err)):
        return "(no error message)"
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    line = lines[0] if lines else "(no error message)"
    return line if len(line) <= 300 else line[:297] + "..."


def _md_cell(m: PGRMatrix, weak: str, strong: str) -> str:
    text = m.cell(weak, strong)
    if text in ("", "-"):
        return text
    n = int(m.n.loc[weak, strong])
    runs = int(m.runs.loc[weak, strong]) if m.runs is not None else n
    if text == "undef":
        return f"undef (0/{runs})"
    return f"{text} (n={n})" if n == runs else f"{text} (n={n}/{runs})"


def _gt_section(gt: pd.DataFrame, ladder: list[str]) -> list[str]:
    lines = ["## Ground-truth accuracy", ""]
    if gt.empty:
        return lines + ["No ground-truth runs yet.", ""]
    g = gt.assign(acc=pd.to_numeric(gt["acc"], errors="coerce"))
    stats = g.groupby(["dataset", "model"])["acc"].agg(["mean", "std", "count"])
    present = set(g["model"])
    models = [m for m in ladder if m in present] + sorted(present - set(ladder), key=str)
    rows = []
    for dataset in sorted(pd.unique(g["dataset"]), key=str):
        row = [_md(dataset)]
        for m in models:
            if (dataset, m) not in stats.index:
                row.append("-")
                continue
            mean, std, n = stats.loc[(dataset, m)]
            if int(n) == 0:
                row.append("n/a")
            elif int(n) == 1:
                row.append(f"{mean:.3f} (n=1)")
            else:
                row.append(f"{mean:.3f} ± {std:.3f} (n={int(n)})")
        rows.append(row)
    lines += ["Test accuracy of each model trained on ground truth; mean ± std over seeds.", ""]
    lines += _md_table(["dataset", *(_md(m) for m in models)], rows)
    return lines + [""]


def _overview_section(matrices: list[PGRMatrix]) -> list[str]:
    # One number per (dataset, variant) to compare methods at a glance: the mean over
    # (weak, strong) pairs of the per-pair mean PGR, each pair weighted equally.
    datasets = sorted({m.dataset for m in matrices}, key=str)
    variants = sorted({m.variant for m in matrices}, key=str)
    by = {(m.dataset, m.variant): m for m in matrices}
    rows = []
    for d in datasets:
        row = [_md(d)]
        for v in variants:
            m = by.get((d, v))
            vals = m.mean.stack().dropna() if m is not None else pd.Series(dtype=float)
            row.append(
                f"{vals.mean():.2f} ({len(vals)} pair{'s' * (len(vals) != 1)})"
                if len(vals)
                else "-"
            )
        rows.append(row)
    lines = [
        "## PGR overview",
        "",
        "Mean PGR over (weak, strong) pairs, pairs weighted equally.",
        "",
    ]
    return lines + _md_table(["dataset", *(_md(v) for v in variants)], rows) + [""]


def _matrix_section(m: PGRMatrix, png: str) -> list[str]:
    rows, cols = m.shown_rows(), m.shown_cols()
    table = [[_md(w), *(_md_cell(m, w, s) for s in cols)] for w in rows]
    lines = [f"### {_md(m.dataset)} / {_md(m.variant)}", ""]
    lines += _md_table(["weak \\ strong", *(_md(s) for s in cols)], table)
    return lines + ["", f"![PGR heatmap {_md(m.dataset)} / {_md(m.variant)}]({png})", ""]


def _failure_section(failures: pd.DataFrame) -> list[str]:
    lines = ["## Failed runs", ""]
    if failures.empty:
        return lines + ["No failed runs.", ""]
    for r in failures.itertuples(index=False):
        where = ", ".join(
            _md(v)
            for v in (r.kind, r.dataset, r.model, r.variant)
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v)
        )
        err = _first_line(r.error).replace("`", "'")
        lines.append(f"- `{r.run_key}` ({where}): `{err}`")
    return lines + [""]


def write_report(
    results: pd.DataFrame,
    gt: pd.DataFrame,
    failures: pd.DataFrame,
    ladder: list[str],
    out_dir: str | Path,
) -> ReportPaths:
    """Write results.parquet/.csv (with PGR columns), gt.csv, summary.md and PNGs to ``out_dir``.

    Works with no transfer runs yet (empty ``results``): tables and summary are still written
    and the summary says so. Every file is written to a temp name and renamed into place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = _ensure_columns(results, RESULT_COLUMNS)
    gt = _ensure_columns(gt, GT_COLUMNS)
    failures = _ensure_columns(failures, FAILURE_COLUMNS)

    table = add_pgr(results)
    sort_cols = ["dataset", "variant", "weak", "strong", "seed"]
    if not table.empty:
        table = table.sort_values(sort_cols, kind="stable").reset_index(drop=True)
    table_parquet = atomic_write(
        out / "results.parquet", lambda p: table.to_parquet(p, index=False)
    )
    table_csv = atomic_write(out / "results.csv", lambda p: table.to_csv(p, index=False))
    gt_csv = atomic_write(out / "gt.csv", lambda p: gt.to_csv(p, index=False))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        matrices = pgr_matrices(table, ladder)
    ignored = [str(w.message) for w in caught]

    used: set[str] = set()
    heatmaps: list[Path] = []
    for m in matrices:
        stem = "pgr__" + slugify(m.dataset, m.variant)
        name, k = stem, 2
        while name in used:  # distinct variants can slugify alike
            name, k = f"{stem}-{k}", k + 1
        used.add(name)
        heatmaps.append(atomic_write(out / f"{name}.png", lambda p, m=m: heatmap(m, p)))
    scatter = atomic_write(
        out / "w2s_vs_ceiling.png", lambda p: w2s_vs_ceiling(table, p, ladder=ladder)
    )

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [
        "# Weak-to-strong sweep report",
        "",
        f"Generated {now}. Ladder (weak to strong): {', '.join(_md(m) for m in ladder)}.",
        "",
        f"- transfer runs: {len(table)}",
        f"- ground-truth runs: {len(gt)}",
        f"- failed runs: {len(failures)}",
        f"- tables: [results.csv]({table_csv.name}), "
        f"[results.parquet]({table_parquet.name}), [gt.csv]({gt_csv.name})",
        "",
    ]
    md += _gt_section(gt, ladder)
    if table.empty:
        md += ["## PGR", "", "No transfer runs yet: no PGR to report.", ""]
    else:
        n_undef = int(table["pgr"].isna().sum())
        md += _overview_section(matrices)
        md += [
            "## PGR matrices",
            "",
            "PGR = (w2s - weak) / (ceiling - weak) on test accuracy. Cells: mean ± sample std "
            "over seeds (n = seeds with a defined PGR, /total when some are undefined). "
            "'undef': ceiling equals weak accuracy in every seed; '-': not run; blank: not a "
            "weak-to-strong pair.",
            "",
        ]
        if n_undef:
            md += [f"{n_undef} transfer run(s) have an undefined PGR.", ""]
        md += [f"Note: {_md(msg)}" for msg in ignored] + ([""] if ignored else [])
        for m, png in zip(matrices, heatmaps, strict=True):
            md += _matrix_section(m, png.name)
    md += _failure_section(failures)
    md += ["## Figures", "", f"![weak-to-strong vs ceiling]({scatter.name})", ""]
    summary_md = _write_text(out / "summary.md", "\n".join(md))
    return ReportPaths(table_parquet, table_csv, gt_csv, summary_md, heatmaps, scatter, matrices)
