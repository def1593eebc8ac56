"""Write the sweep report: tables, summary.md, report.html and PNG figures, each atomically."""

from __future__ import annotations

import base64
import html
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

from w2sray.store import error_line

from .pgr import PGRMatrix, add_pgr, pgr_matrices
from .plots import heatmap, w2s_vs_ceiling
from .stats import (
    N_BOOT,
    cell_stats,
    choose_baseline,
    compare_all,
    generative_pairs,
    paired_differences,
)

__all__ = ["RESULT_COLUMNS", "ReportPaths", "atomic_write", "slugify", "write_report"]

RESULT_COLUMNS = [
    "dataset", "weak", "strong", "method", "loss", "hparams", "variant", "seed",
    "generative", "chain_length",
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
    stats_csv: Path | None = None
    comparisons_csv: Path | None = None
    html: Path | None = None


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


def _md_cell(m: PGRMatrix, weak: str, strong: str) -> str:
    text = m.cell(weak, strong)
    if text in ("", "-"):
        return text
    n = int(m.n.loc[weak, strong])
    runs = int(m.runs.loc[weak, strong]) if m.runs is not None else n
    if text == "undef":
        return f"undef (0/{runs})"
    return f"{text} (n={n})" if n == runs else f"{text} (n={n}/{runs})"


# A table as plain text: (header, rows). Rendered to markdown with _md or to HTML with
# html.escape, so both reports show the same cells.
Table = tuple[list[str], list[list[str]]]
Block = tuple[str, Table | None]  # (title, table or None when there is nothing to show)

GT_NOTE = "Test accuracy of each model trained on ground truth; mean ± std over seeds."


def _md_render(t: Table) -> list[str]:
    header, rows = t
    return _md_table([_md(h) for h in header], [[_md(c) for c in r] for r in rows])


def _gt_table(gt: pd.DataFrame, ladder: list[str]) -> Table:
    g = gt.assign(acc=pd.to_numeric(gt["acc"], errors="coerce"))
    stats = g.groupby(["dataset", "model"])["acc"].agg(["mean", "std", "count"])
    present = set(g["model"])
    models = [m for m in ladder if m in present] + sorted(present - set(ladder), key=str)
    rows = []
    for dataset in sorted(pd.unique(g["dataset"]), key=str):
        row = [str(dataset)]
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
    return ["dataset", *(str(m) for m in models)], rows


def _gt_section(gt: pd.DataFrame, ladder: list[str]) -> list[str]:
    lines = ["## Ground-truth accuracy", ""]
    if gt.empty:
        return lines + ["No ground-truth runs yet.", ""]
    return lines + [GT_NOTE, ""] + _md_render(_gt_table(gt, ladder)) + [""]


OVERVIEW_NOTE = "Mean PGR over (weak, strong) pairs, pairs weighted equally."


def _overview_table(matrices: list[PGRMatrix]) -> Table:
    # One number per (dataset, variant) to compare methods at a glance: the mean over
    # (weak, strong) pairs of the per-pair mean PGR, each pair weighted equally.
    datasets = sorted({m.dataset for m in matrices}, key=str)
    variants = sorted({m.variant for m in matrices}, key=str)
    by = {(m.dataset, m.variant): m for m in matrices}
    rows = []
    for d in datasets:
        row = [str(d)]
        for v in variants:
            m = by.get((d, v))
            vals = m.mean.stack().dropna() if m is not None else pd.Series(dtype=float)
            row.append(
                f"{vals.mean():.2f} ({len(vals)} pair{'s' * (len(vals) != 1)})"
                if len(vals)
                else "-"
            )
        rows.append(row)
    return ["dataset", *(str(v) for v in variants)], rows


BY_PAIR_NOTE = (
    "Per (weak, strong) pair, each method's PGR on test accuracy: mean over seeds and its 95% "
    "bootstrap CI over seeds (†: the CI includes 0; (n=1): a single seed, no CI). The gap "
    "column is the ground-truth gap the PGR divides by, ceiling minus weak accuracy, mean over "
    "seeds."
)
INVERTED = "‡"
INVERTED_NOTE = (
    f"{INVERTED} In some seeds the strong model's ceiling is not above the weak model's "
    "accuracy (k/n seeds): there is no gap to recover, and those seeds' PGR, whose sign flips, "
    "says nothing about weak-to-strong generalization."
)


def _gap_cells(table: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """(dataset, weak, strong) -> mean ceiling - weak accuracy over seeds, flagging pairs
    whose gap is <= 0 in some seed."""
    if table.empty:
        return {}
    # One value per (weak GT run, ceiling GT run): the methods of a sweep share them, while
    # sweeps in one store with other data or settings have GT runs of their own.
    per_seed = table.drop_duplicates(["dataset", "weak", "strong", "weak_key", "ceiling_key"])
    out = {}
    for (dataset, weak, strong), g in per_seed.groupby(["dataset", "weak", "strong"]):
        gaps = (g["ceiling_acc"] - g["weak_acc"]).dropna()
        if gaps.empty:
            continue
        bad = int((gaps <= 0).sum())
        text = f"{gaps.mean():+.2f}"
        out[(str(dataset), str(weak), str(strong))] = (
            f"{text} ({bad}/{len(gaps)} seeds ≤ 0) {INVERTED}" if bad else text
        )
    return out


def _by_pair_tables(
    stats: pd.DataFrame, table: pd.DataFrame, ladder: list[str]
) -> list[tuple[str, Table]]:
    """Per dataset: rows are pairs in ladder order, columns the GT gap then methods, cells
    mean [CI]."""
    if stats.empty:
        return []
    gaps = _gap_cells(table)
    st = stats[stats["metric"] == "pgr"]
    rank = {m: i for i, m in enumerate(ladder)}
    out = []
    for dataset in sorted(pd.unique(st["dataset"]).tolist(), key=str):
        d = st[st["dataset"] == dataset]
        variants = sorted({str(v) for v in d["variant"]})
        pairs = sorted(
            {(r.weak, r.strong) for r in d.itertuples(index=False)},
            key=lambda p: (rank.get(p[0], 0), rank.get(p[1], 0)),
        )
        cells = {(r.weak, r.strong, str(r.variant)): r for r in d.itertuples(index=False)}
        rows = []
        for w, s_ in pairs:
            row = [f"{w} → {s_}", gaps.get((str(dataset), str(w), str(s_)), "n/a")]
            for v in variants:
                r = cells.get((w, s_, v))
                if r is None or int(r.n) == 0:
                    row.append("-")
                elif int(r.n) == 1:
                    row.append(f"{_fmt(r.mean)} (n=1)")
                else:
                    row.append(f"{_fmt(r.mean)} {_ci_text(r)}")
            rows.append(row)
        out.append((str(dataset), (["weak → strong", "gap", *variants], rows)))
    return out


def _overview_section(matrices: list[PGRMatrix]) -> list[str]:
    lines = ["## PGR overview", "", OVERVIEW_NOTE, ""]
    return lines + _md_render(_overview_table(matrices)) + [""]


MATRIX_NOTE = (
    "PGR = (w2s - weak) / (ceiling - weak) on test accuracy. Cells: mean ± sample std "
    "over seeds (n = seeds with a defined PGR, /total when some are undefined). "
    "'undef': ceiling equals weak accuracy in every seed; '-': not run; blank: not a "
    "weak-to-strong pair."
)


def _matrix_section(m: PGRMatrix, png: str) -> list[str]:
    rows, cols = m.shown_rows(), m.shown_cols()
    table = [[_md(w), *(_md_cell(m, w, s) for s in cols)] for w in rows]
    lines = [f"### {_md(m.dataset)} / {_md(m.variant)}", ""]
    lines += _md_table(["weak \\ strong", *(_md(s) for s in cols)], table)
    return lines + ["", f"![PGR heatmap {_md(m.dataset)} / {_md(m.variant)}]({png})", ""]


def _matrix_table(m: PGRMatrix) -> Table:
    cols = m.shown_cols()
    rows = [[str(w), *(_md_cell(m, w, s) for s in cols)] for w in m.shown_rows()]
    return ["weak \\ strong", *(str(c) for c in cols)], rows


# --- seed statistics and comparisons (see stats.py) --------------------------------------

METRICS = {"pgr": "PGR (accuracy)", "pgr_auc": "PGR (AUC)"}
DAGGER = "†"
STATS_NOTE = (
    "Seed statistics per pair: mean, standard error (sample std / sqrt(n)) and a 95% "
    f"percentile bootstrap CI over seeds ({N_BOOT} resamples, fixed seed, so the report is "
    f"reproducible). {DAGGER} marks a CI that includes 0. n/a: fewer than 2 seeds with a "
    "defined PGR. With few seeds a bootstrap CI is too narrow (it never reaches past the "
    "observed seeds): read it as descriptive, not as a significance test."
)
LEGEND = f"{DAGGER} 95% CI includes 0."
COMPARISON_NOTE = (
    "Paired by seed: per-seed PGR of each variant minus the baseline's, over the seeds where "
    "both have a defined PGR (n); baseline / variant columns are the means over those same "
    'seeds. Baseline per dataset: "xent" if it was run, else the alphabetically first variant. '
    "CI: 95% percentile bootstrap over the paired differences."
)


def _fmt(x: object, spec: str = ".2f") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(v) else format(v, spec)


def _ci_text(r) -> str:
    if int(r.n) < 2:
        return "n/a"
    text = f"[{r.ci_low:.2f}, {r.ci_high:.2f}]"
    return f"{text} {DAGGER}" if r.ci_includes_zero else text


def _legend(t: Table) -> list[str]:
    # The legend lines, only under a table that has a marked cell.
    cells = [c for r in t[1] for c in r]
    return [LEGEND] * any(c.endswith(DAGGER) for c in cells) + [INVERTED_NOTE] * any(
        c.endswith(INVERTED) for c in cells
    )


def _md_block(t: Table) -> list[str]:
    return _md_render(t) + [""] + [x for line in _legend(t) for x in (line, "")]


def _pair(r) -> str:
    return f"{r.weak} → {r.strong}"


def _stats_blocks(stats: pd.DataFrame, dataset: str, variant: str) -> list[Block]:
    """Per metric: (title, table), table None when no seed has a defined value."""
    blocks: list[Block] = []
    for metric, title in METRICS.items():
        st = stats[
            (stats["metric"] == metric)
            & (stats["dataset"].astype(str) == dataset)
            & (stats["variant"].astype(str) == variant)
        ]
        if st.empty or int(st["n"].max()) == 0:
            blocks.append((title, None))
            continue
        rows = []
        for r in st.itertuples(index=False):
            n, runs = int(r.n), int(r.runs)
            ntext = str(n) if n == runs else f"{n}/{runs}"
            if n == 0:
                rows.append([_pair(r), ntext, "undef", "n/a", "n/a"])
            else:
                rows.append([_pair(r), ntext, _fmt(r.mean), _fmt(r.se), _ci_text(r)])
        blocks.append((title, (["weak → strong", "n", "mean", "SE", "95% CI"], rows)))
    return blocks


def _no_values(title: str) -> str:
    return f"No defined {title} in any seed (metric not recorded, or ceiling equals weak)."


def _stats_md(blocks: list[Block]) -> list[str]:
    lines: list[str] = []
    for title, t in blocks:
        lines += [f"#### Seed statistics: {title}", ""]
        lines += _md_block(t) if t else [_no_values(title), ""]
    return lines


def _comparison_blocks(comp: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = []
    if comp.empty:
        return blocks
    for dataset in sorted(pd.unique(comp["dataset"]).tolist(), key=str):
        for metric, title in METRICS.items():
            g = comp[(comp["dataset"] == dataset) & (comp["metric"] == metric)]
            if g.empty:
                continue
            head = f"{dataset}: {title}, baseline {g['a_variant'].iat[0]}"
            if int(g["n"].max()) == 0:
                blocks.append((head, None))
                continue
            rows = [
                [
                    str(r.b_variant),
                    _pair(r),
                    str(int(r.n)),
                    _fmt(r.a_mean),
                    _fmt(r.b_mean),
                    _fmt(r.mean, "+.2f"),
                    _fmt(r.se),
                    _ci_text(r),
                ]
                for r in g.itertuples(index=False)
            ]
            header = ["variant", "weak → strong", "n", "baseline mean", "variant mean",
                      "difference", "SE", "95% CI"]  # fmt: skip
            blocks.append((head, (header, rows)))
    return blocks


def _comparison_section(comp: pd.DataFrame) -> list[str]:
    lines = ["## Comparisons", ""]
    blocks = _comparison_blocks(comp)
    if not blocks:
        return lines + ["No comparisons: no dataset has two variants on a common pair.", ""]
    lines += [COMPARISON_NOTE, ""]
    for head, t in blocks:
        lines += [f"### {_md(head)}", ""]
        if t is None:
            lines += ["No seed has a defined value for both variants.", ""]
        else:
            lines += _md_block(t)
    return lines


def _failure_items(failures: pd.DataFrame) -> list[tuple[str, list[str], str]]:
    items = []
    for r in failures.itertuples(index=False):
        where = [
            str(v)
            for v in (r.kind, r.dataset, r.model, r.variant)
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v)
        ]
        err = r.error if isinstance(r.error, str) else None  # NaN where a record has none
        items.append((str(r.run_key), where, error_line(err)))
    return items


def _failure_section(failures: pd.DataFrame) -> list[str]:
    lines = ["## Failed runs", ""]
    if failures.empty:
        return lines + ["No failed runs.", ""]
    for key, where, err in _failure_items(failures):
        err = err.replace("`", "'")
        lines.append(f"- `{key}` ({', '.join(_md(w) for w in where)}): `{err}`")
    return lines + [""]


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.4; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
code { background: #f5f5f5; padding: 0 .25em; }
.note { color: #555; font-size: .92em; }
"""


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(t: Table) -> str:
    header, rows = t
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_h(alt)}">'


def _html_report(
    *,
    now: str,
    ladder: list[str],
    counts: list[tuple[str, int]],
    gt: pd.DataFrame,
    table: pd.DataFrame,
    matrices: list[PGRMatrix],
    heatmaps: list[Path],
    stats: pd.DataFrame,
    comparisons: pd.DataFrame,
    notes: list[str],
    failures: pd.DataFrame,
    scatter: Path,
) -> str:
    """One self-contained page: inline CSS, PNGs as data URIs, no script, no external URL."""
    title = "Weak-to-strong sweep report"
    p: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(title)}</h1>",
        f"<p>Generated {_h(now)}. Ladder (weak to strong): {_h(', '.join(map(str, ladder)))}.</p>",
        "<ul>" + "".join(f"<li>{_h(k)}: {v}</li>" for k, v in counts) + "</ul>",
        "<h2>Ground-truth accuracy</h2>",
    ]
    if gt.empty:
        p.append("<p>No ground-truth runs yet.</p>")
    else:
        p += [f'<p class="note">{_h(GT_NOTE)}</p>', _html_table(_gt_table(gt, ladder))]
    if table.empty:
        p += ["<h2>PGR</h2>", "<p>No transfer runs yet: no PGR to report.</p>"]
    else:
        p += [
            "<h2>PGR overview</h2>",
            f'<p class="note">{_h(OVERVIEW_NOTE)}</p>',
            _html_table(_overview_table(matrices)),
        ]
        by_pair = _by_pair_tables(stats, table, ladder)
        if by_pair:
            p += ["<h2>PGR by pair and method</h2>", f'<p class="note">{_h(BY_PAIR_NOTE)}</p>']
            for dataset, t in by_pair:
                p += [f"<h3>{_h(dataset)}</h3>", _html_table(t)]
                p += [f'<p class="note">{_h(x)}</p>' for x in _legend(t)]
        p += [
            "<h2>PGR matrices</h2>",
            f'<p class="note">{_h(MATRIX_NOTE)}</p>',
            f'<p class="note">{_h(STATS_NOTE)}</p>',
        ]
        p += [f'<p class="note">Note: {_h(n)}</p>' for n in notes]
        for m, png in zip(matrices, heatmaps, strict=True):
            name = f"{m.dataset} / {m.variant}"
            p += [
                f"<h3>{_h(name)}</h3>",
                _html_img(png, f"PGR heatmap {name}"),
                _html_table(_matrix_table(m)),
            ]
            for sub, t in _stats_blocks(stats, str(m.dataset), str(m.variant)):
                p.append(f"<h4>Seed statistics: {_h(sub)}</h4>")
                if t is None:
                    p.append(f"<p>{_h(_no_values(sub))}</p>")
                else:
                    p += [_html_table(t), *(f'<p class="note">{_h(x)}</p>' for x in _legend(t))]
        p.append("<h2>Comparisons</h2>")
        blocks = _comparison_blocks(comparisons)
        if not blocks:
            p.append("<p>No comparisons: no dataset has two variants on a common pair.</p>")
        else:
            p.append(f'<p class="note">{_h(COMPARISON_NOTE)}</p>')
        for head, t in blocks:
            p.append(f"<h3>{_h(head)}</h3>")
            if t is None:
                p.append("<p>No seed has a defined value for both variants.</p>")
            else:
                p += [_html_table(t), *(f'<p class="note">{_h(x)}</p>' for x in _legend(t))]
    p.append("<h2>Failed runs</h2>")
    if failures.empty:
        p.append("<p>No failed runs.</p>")
    else:
        p.append("<ul>")
        p += [
            f"<li><code>{_h(key)}</code> ({_h(', '.join(where))}): <code>{_h(err)}</code></li>"
            for key, where, err in _failure_items(failures)
        ]
        p.append("</ul>")
    p += [
        "<h2>Figures</h2>",
        _html_img(scatter, "weak-to-strong vs ceiling accuracy"),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(p)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    nonempty = [f for f in frames if not f.empty]
    if not nonempty:
        return frames[0]
    return pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else nonempty[0]


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
        stat_frames = [cell_stats(table, ladder, metric) for metric in METRICS]
        comp_frames = [compare_all(table, metric, ladder=ladder) for metric in METRICS]
        # Generative fine-tuning against the same method without it (unless that is the
        # baseline every variant is already compared with).
        base = choose_baseline(table["variant"].dropna()) if not table.empty else None
        for a, b in generative_pairs(table):
            if a != base:
                comp_frames += [
                    paired_differences(table, a, b, metric, ladder=ladder) for metric in METRICS
                ]
    # Each of the calls above warns about the same ignored rows: report each message once.
    ignored = list(dict.fromkeys(str(w.message) for w in caught))
    stats = _concat(stat_frames)
    comparisons = _concat(comp_frames)
    stats_csv = atomic_write(out / "stats.csv", lambda p: stats.to_csv(p, index=False))
    comparisons_csv = atomic_write(
        out / "comparisons.csv", lambda p: comparisons.to_csv(p, index=False)
    )

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
    html_path = out / "report.html"
    counts = [
        ("transfer runs", len(table)),
        ("ground-truth runs", len(gt)),
        ("failed runs", len(failures)),
    ]
    md = [
        "# Weak-to-strong sweep report",
        "",
        f"Generated {now}. Ladder (weak to strong): {', '.join(_md(m) for m in ladder)}.",
        "",
        *(f"- {k}: {v}" for k, v in counts),
        f"- tables: [results.csv]({table_csv.name}), "
        f"[results.parquet]({table_parquet.name}), [gt.csv]({gt_csv.name}), "
        f"[stats.csv]({stats_csv.name}), [comparisons.csv]({comparisons_csv.name})",
        f"- self-contained HTML report: [report.html]({html_path.name})",
        "",
    ]
    md += _gt_section(gt, ladder)
    if table.empty:
        md += ["## PGR", "", "No transfer runs yet: no PGR to report.", ""]
    else:
        n_undef = int(table["pgr"].isna().sum())
        md += _overview_section(matrices)
        by_pair = _by_pair_tables(stats, table, ladder)
        if by_pair:
            md += ["## PGR by pair and method", "", BY_PAIR_NOTE, ""]
            for dataset, t in by_pair:
                md += [f"### {_md(dataset)}", ""] + _md_block(t)
        md += ["## PGR matrices", "", MATRIX_NOTE, "", STATS_NOTE, ""]
        if n_undef:
            md += [f"{n_undef} transfer run(s) have an undefined PGR.", ""]
        md += [f"Note: {_md(msg)}" for msg in ignored] + ([""] if ignored else [])
        for m, png in zip(matrices, heatmaps, strict=True):
            md += _matrix_section(m, png.name)
            md += _stats_md(_stats_blocks(stats, str(m.dataset), str(m.variant)))
        md += _comparison_section(comparisons)
    md += _failure_section(failures)
    md += ["## Figures", "", f"![weak-to-strong vs ceiling]({scatter.name})", ""]
    summary_md = _write_text(out / "summary.md", "\n".join(md))
    page = _html_report(
        now=now,
        ladder=ladder,
        counts=counts,
        gt=gt,
        table=table,
        matrices=matrices,
        heatmaps=heatmaps,
        stats=stats,
        comparisons=comparisons,
        notes=ignored,
        failures=failures,
        scatter=scatter,
    )
    html_path = _write_text(html_path, page)
    return ReportPaths(
        table_parquet,
        table_csv,
        gt_csv,
        summary_md,
        heatmaps,
        scatter,
        matrices,
        stats_csv=stats_csv,
        comparisons_csv=comparisons_csv,
        html=html_path,
    )
