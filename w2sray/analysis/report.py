"""Write the sweep report: tables, summary.md, report.html and PNG figures, each atomically.

What the report says is built once, as a :class:`~w2sray.analysis.document.Document`, and
rendered to both summary.md and report.html.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from w2sray.atomic import atomic_write, atomic_write_text
from w2sray.methods import report_pairs as method_report_pairs
from w2sray.provenance import mixed_note
from w2sray.store import error_line

from .collect import PRETRAIN_COLUMNS
from .document import (
    Block,
    BulletList,
    Code,
    Document,
    Figure,
    Inline,
    Item,
    Link,
    Paragraph,
    Section,
    Table,
    render_html,
    render_markdown,
)
from .pgr import PGRMatrix, add_pgr, pgr_matrices
from .plots import heatmap, w2s_vs_ceiling
from .stats import (
    N_BOOT,
    cell_stats,
    choose_baseline,
    compare_all,
    paired_differences,
)

__all__ = ["RESULT_COLUMNS", "ReportPaths", "atomic_write", "slugify", "write_report"]

RESULT_COLUMNS = [
    "dataset", "weak", "strong", "method", "loss", "hparams", "variant", "seed",
    "generative", "chain_length",
    "weak_acc", "ceiling_acc", "w2s_acc", "weak_auc", "ceiling_auc", "w2s_auc",
    "run_key", "weak_key", "ceiling_key", "software",
]  # fmt: skip
GT_COLUMNS = ["dataset", "model", "seed", "acc", "auc", "run_key", "software"]
FAILURE_COLUMNS = ["run_key", "kind", "dataset", "model", "variant", "error"]


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
    pretrain_csv: Path | None = None


def slugify(*parts: str) -> str:
    """Filesystem-safe lowercase name from ``parts`` joined by '__'."""
    out = []
    for p in parts:
        s = re.sub(r"[^a-z0-9._]+", "-", str(p).lower()).strip("-._")
        out.append(s or "x")
    return "__".join(out)


# --- content --------------------------------------------------------------------------------

_NUMERIC = {"seed", "weak_acc", "ceiling_acc", "w2s_acc", "weak_auc", "ceiling_auc", "w2s_auc",
            "acc", "auc", "documents", "steps", "lm_loss_start", "lm_loss", "uniform_loss",
            "vocab_size", "tokens", "train_seconds"}  # fmt: skip


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


TITLE = "Weak-to-strong sweep report"
NO_GT = "No ground-truth runs yet."
NO_TRANSFER = "No transfer runs yet: no PGR to report."
NO_COMPARISONS = "No comparisons: no dataset has two variants on a common pair."
NO_PAIRED = "No seed has a defined value for both variants."
NO_FAILURES = "No failed runs."
PRETRAIN_NOTE = (
    "Training loss of each pretraining run in nats per token (clm: next token; mlm: the masked "
    "tokens only), mean over the first and over the last 5% of its steps. Uniform: ln(vocabulary "
    "size), the loss of predicting every token as equally likely; a run ending near it learned "
    "little."
)
GT_NOTE = "Test accuracy of each model trained on ground truth; mean ± std over seeds."
OVERVIEW_NOTE = "Mean PGR over (weak, strong) pairs, pairs weighted equally."
BY_PAIR_NOTE = (
    "Per (weak, strong) pair, each method's PGR on test accuracy: mean over seeds and its 95% "
    "CI over seeds (Student t; †: the CI includes 0; (n=1): a single seed, no CI). The gap "
    "column is the ground-truth gap the PGR divides by, ceiling minus weak accuracy, mean over "
    "seeds."
)
INVERTED = "‡"
INVERTED_NOTE = (
    f"{INVERTED} In some seeds the strong model's ceiling is not above the weak model's "
    "accuracy (k/n seeds): there is no gap to recover, and those seeds' PGR, whose sign flips, "
    "says nothing about weak-to-strong generalization."
)
MATRIX_NOTE = (
    "PGR = (w2s - weak) / (ceiling - weak) on test accuracy. Cells: mean ± sample std "
    "over seeds (n = seeds with a defined PGR, /total when some are undefined). "
    "'undef': ceiling equals weak accuracy in every seed; '-': not run; blank: not a "
    "weak-to-strong pair."
)
METRICS = {"pgr": "PGR (accuracy)", "pgr_auc": "PGR (AUC)"}
DAGGER = "†"
STATS_NOTE = (
    "Seed statistics per pair: mean, standard error (sample std / sqrt(n)), the 95% CI over "
    f"seeds (Student t with n-1 degrees of freedom: mean ± t × SE; {DAGGER} marks one that "
    "includes 0) and, beside it, a 95% percentile bootstrap CI "
    f"({N_BOOT} resamples, fixed seed, so the report is reproducible). n/a: fewer than 2 "
    "seeds with a defined PGR. With the usual 2-5 seeds the bootstrap CI is too narrow (it "
    "never reaches past the observed seeds): it is descriptive; the t CI is the one to read."
)
LEGEND = f"{DAGGER} 95% CI includes 0."
COMPARISON_NOTE = (
    "Paired by seed: per-seed PGR of each variant minus the baseline's, over the seeds where "
    "both have a defined PGR (n); baseline / variant columns are the means over those same "
    'seeds. Baseline per dataset: "xent" if it was run, else the alphabetically first variant. '
    "CI: 95% Student-t CI of the mean paired difference; bootstrap: 95% percentile bootstrap "
    "over the paired differences (descriptive with few seeds)."
)


def _table(header: list[str], rows: list[list[str]]) -> Table:
    """A table with the legend of the marks its cells end with."""
    cells = [c for r in rows for c in r]
    marks = ((DAGGER, LEGEND), (INVERTED, INVERTED_NOTE))
    legend = [note for mark, note in marks if any(c.endswith(mark) for c in cells)]
    return Table(header, rows, legend)


def _fmt(x: object, spec: str = ".2f") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(v) else format(v, spec)


def _ci_text(r) -> str:
    """The Student-t 95% CI over seeds, marked when it includes 0."""
    if int(r.n) < 2:
        return "n/a"
    text = f"[{r.t_low:.2f}, {r.t_high:.2f}]"
    return f"{text} {DAGGER}" if r.t_includes_zero else text


def _boot_text(r) -> str:
    """The percentile bootstrap 95% CI over seeds (descriptive with few seeds)."""
    return "n/a" if int(r.n) < 2 else f"[{r.ci_low:.2f}, {r.ci_high:.2f}]"


def _pair(r) -> str:
    return f"{r.weak} → {r.strong}"


def _pretrain_sections(pretrain: pd.DataFrame, ladder: list[str]) -> list[Section]:
    """The pretraining runs, one row each; no section for a sweep without pretraining."""
    if pretrain.empty:
        return []
    rank = {m: i for i, m in enumerate(ladder)}
    done = pretrain[pretrain["lm_loss"].notna()]
    done = done.assign(_rank=done["model"].map(lambda m: rank.get(m, len(rank))))
    rows = [
        [
            str(r.model),
            str(r.objective),
            str(r.corpus),
            _fmt(r.documents, ".0f"),
            _fmt(r.steps, ".0f"),
            f"{_fmt(r.lm_loss_start, '.3f')} → {_fmt(r.lm_loss, '.3f')}",
            _fmt(r.uniform_loss, ".3f"),
            _fmt(r.train_seconds, ".1f"),
            str(r.run_key),
        ]
        for r in done.sort_values(["_rank", "model", "run_key"]).itertuples(index=False)
    ]
    blocks: list[Block] = [Paragraph(PRETRAIN_NOTE, note=True)]
    if rows:
        header = ["model", "objective", "corpus", "documents", "steps", "LM loss: start → end",
                  "uniform", "train s", "run key"]  # fmt: skip
        blocks.append(_table(header, rows))
    if missing := len(pretrain) - len(done):
        blocks.append(
            Paragraph(
                f"{missing} pretraining run(s) have no result yet (a failed one is listed under "
                "Failed runs)."
            )
        )
    return [Section("Pretraining", blocks)]


def _gt_section(gt: pd.DataFrame, ladder: list[str]) -> Section:
    if gt.empty:
        return Section("Ground-truth accuracy", [Paragraph(NO_GT)])
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
    table = _table(["dataset", *(str(m) for m in models)], rows)
    return Section("Ground-truth accuracy", [Paragraph(GT_NOTE, note=True), table])


def _overview_section(matrices: list[PGRMatrix]) -> Section:
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
    table = _table(["dataset", *(str(v) for v in variants)], rows)
    return Section("PGR overview", [Paragraph(OVERVIEW_NOTE, note=True), table])


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


def _by_pair_section(stats: pd.DataFrame, table: pd.DataFrame, ladder: list[str]) -> list[Section]:
    """Per dataset a table: rows are pairs in ladder order, columns the GT gap then methods,
    cells mean [CI]. No section when there are no seed statistics."""
    if stats.empty:
        return []
    gaps = _gap_cells(table)
    st = stats[stats["metric"] == "pgr"]
    rank = {m: i for i, m in enumerate(ladder)}
    blocks: list[Block] = [Paragraph(BY_PAIR_NOTE, note=True)]
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
        t = _table(["weak → strong", "gap", *variants], rows)
        blocks.append(Section(str(dataset), [t]))
    return [Section("PGR by pair and method", blocks)]


def _matrix_cell(m: PGRMatrix, weak: str, strong: str) -> str:
    text = m.cell(weak, strong)
    if text in ("", "-"):
        return text
    n = int(m.n.loc[weak, strong])
    runs = int(m.runs.loc[weak, strong]) if m.runs is not None else n
    if text == "undef":
        return f"undef (0/{runs})"
    return f"{text} (n={n})" if n == runs else f"{text} (n={n}/{runs})"


def _seed_stats_sections(stats: pd.DataFrame, dataset: str, variant: str) -> list[Section]:
    """Per metric: a table of each pair's seed statistics, or a line saying none is defined."""
    out = []
    for metric, title in METRICS.items():
        head = f"Seed statistics: {title}"
        st = stats[
            (stats["metric"] == metric)
            & (stats["dataset"].astype(str) == dataset)
            & (stats["variant"].astype(str) == variant)
        ]
        if st.empty or int(st["n"].max()) == 0:
            none = f"No defined {title} in any seed (metric not recorded, or ceiling equals weak)."
            out.append(Section(head, [Paragraph(none)]))
            continue
        rows = []
        for r in st.itertuples(index=False):
            n, runs = int(r.n), int(r.runs)
            ntext = str(n) if n == runs else f"{n}/{runs}"
            if n == 0:
                rows.append([_pair(r), ntext, "undef", "n/a", "n/a", "n/a"])
            else:
                rows.append([_pair(r), ntext, _fmt(r.mean), _fmt(r.se), _ci_text(r), _boot_text(r)])
        header = ["weak → strong", "n", "mean", "SE", "95% CI (t)", "bootstrap CI"]
        out.append(Section(head, [_table(header, rows)]))
    return out


def _matrices_section(
    matrices: list[PGRMatrix],
    heatmaps: list[Path],
    stats: pd.DataFrame,
    n_undef: int,
    notes: list[str],
) -> Section:
    blocks: list[Block] = [Paragraph(MATRIX_NOTE, note=True), Paragraph(STATS_NOTE, note=True)]
    if n_undef:
        blocks.append(Paragraph(f"{n_undef} transfer run(s) have an undefined PGR."))
    blocks += [Paragraph(f"Note: {n}", note=True) for n in notes]
    for m, png in zip(matrices, heatmaps, strict=True):
        name = f"{m.dataset} / {m.variant}"
        cols = m.shown_cols()
        rows = [[str(w), *(_matrix_cell(m, w, s) for s in cols)] for w in m.shown_rows()]
        sub: list[Block] = [
            _table(["weak \\ strong", *(str(c) for c in cols)], rows),
            Figure(png, f"PGR heatmap {name}"),
            *_seed_stats_sections(stats, str(m.dataset), str(m.variant)),
        ]
        blocks.append(Section(name, sub))
    return Section("PGR matrices", blocks)


def _comparison_section(comp: pd.DataFrame) -> Section:
    subs: list[Block] = []
    for dataset in sorted(pd.unique(comp["dataset"]).tolist(), key=str) if not comp.empty else []:
        for metric, title in METRICS.items():
            g = comp[(comp["dataset"] == dataset) & (comp["metric"] == metric)]
            if g.empty:
                continue
            head = f"{dataset}: {title}, baseline {g['a_variant'].iat[0]}"
            if int(g["n"].max()) == 0:
                subs.append(Section(head, [Paragraph(NO_PAIRED)]))
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
                    _boot_text(r),
                ]
                for r in g.itertuples(index=False)
            ]
            header = ["variant", "weak → strong", "n", "baseline mean", "variant mean",
                      "difference", "SE", "95% CI (t)", "bootstrap CI"]  # fmt: skip
            subs.append(Section(head, [_table(header, rows)]))
    if not subs:
        return Section("Comparisons", [Paragraph(NO_COMPARISONS)])
    return Section("Comparisons", [Paragraph(COMPARISON_NOTE, note=True), *subs])


def _failure_section(failures: pd.DataFrame) -> Section:
    if failures.empty:
        return Section("Failed runs", [Paragraph(NO_FAILURES)])
    items = []
    for r in failures.itertuples(index=False):
        where = [
            str(v)
            for v in (r.kind, r.dataset, r.model, r.variant)
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v)
        ]
        err = r.error if isinstance(r.error, str) else None  # NaN where a record has none
        parts = (Code(str(r.run_key)), f" ({', '.join(where)}): ", Code(error_line(err)))
        items.append(Item(parts))
    return Section("Failed runs", [BulletList(items)])


@dataclass
class _Analysis:
    """What the report shows, computed and written to files before the text is built."""

    ladder: list[str]
    table: pd.DataFrame  # transfer runs with PGR columns
    gt: pd.DataFrame
    pretrain: pd.DataFrame
    failures: pd.DataFrame
    matrices: list[PGRMatrix]
    stats: pd.DataFrame
    comparisons: pd.DataFrame
    notes: list[str]  # warnings about rows the analysis ignored, each once
    files: list[Path]  # the tables, linked from the summary
    heatmaps: list[Path]  # one per matrix
    scatter: Path


def _document(a: _Analysis, now: str, html_name: str) -> Document:
    """The whole report, once, for both renderers."""
    links: list[Inline] = ["tables: "]
    for i, f in enumerate(a.files):
        links += [", "] * (i > 0) + [Link(f.name, f.name)]
    counts = [
        *[("pretraining runs", len(a.pretrain))] * (not a.pretrain.empty),
        ("transfer runs", len(a.table)),
        ("ground-truth runs", len(a.gt)),
        ("failed runs", len(a.failures)),
    ]
    head = BulletList(
        [
            *(Item((f"{k}: {v}",)) for k, v in counts),
            Item(tuple(links), markdown_only=True),
            Item(("self-contained HTML report: ", Link(html_name, html_name)), markdown_only=True),
        ]
    )
    ladder = ", ".join(map(str, a.ladder))
    blocks: list[Block] = [
        Paragraph(f"Generated {now}. Ladder (weak to strong): {ladder}."),
        head,
        *_pretrain_sections(a.pretrain, a.ladder),
        _gt_section(a.gt, a.ladder),
    ]
    if a.table.empty:
        blocks.append(Section("PGR", [Paragraph(NO_TRANSFER)]))
    else:
        n_undef = int(a.table["pgr"].isna().sum())
        blocks += [
            _overview_section(a.matrices),
            *_by_pair_section(a.stats, a.table, a.ladder),
            _matrices_section(a.matrices, a.heatmaps, a.stats, n_undef, a.notes),
            _comparison_section(a.comparisons),
        ]
    blocks += [
        _failure_section(a.failures),
        Section("Figures", [Figure(a.scatter, "weak-to-strong vs ceiling")]),
    ]
    return Document(TITLE, blocks)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    nonempty = [f for f in frames if not f.empty]
    if not nonempty:
        return frames[0]
    return pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else nonempty[0]


def _analyse(
    table: pd.DataFrame, ladder: list[str]
) -> tuple[list[PGRMatrix], pd.DataFrame, pd.DataFrame, list[str]]:
    """PGR matrices, seed statistics, comparisons, and the warnings they raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        matrices = pgr_matrices(table, ladder)
        stat_frames = [cell_stats(table, ladder, metric) for metric in METRICS]
        comp_frames = [compare_all(table, metric, ladder=ladder) for metric in METRICS]
        # What method parts ask to compare (generative fine-tuning against the same method
        # without it), unless it is the baseline every variant is already compared with.
        base = choose_baseline(table["variant"].dropna()) if not table.empty else None
        for a, b in method_report_pairs(table):  # each method part's (w2sray.methods)
            if a != base:
                comp_frames += [
                    paired_differences(table, a, b, metric, ladder=ladder) for metric in METRICS
                ]
    # Each of the calls above warns about the same ignored rows: report each message once.
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    return matrices, _concat(stat_frames), _concat(comp_frames), notes


def _write_heatmaps(matrices: list[PGRMatrix], out: Path) -> list[Path]:
    used: set[str] = set()
    paths: list[Path] = []
    for m in matrices:
        stem = "pgr__" + slugify(m.dataset, m.variant)
        name, k = stem, 2
        while name in used:  # distinct variants can slugify alike
            name, k = f"{stem}-{k}", k + 1
        used.add(name)
        paths.append(atomic_write(out / f"{name}.png", lambda p, m=m: heatmap(m, p)))
    return paths


def write_report(
    results: pd.DataFrame,
    gt: pd.DataFrame,
    failures: pd.DataFrame,
    ladder: list[str],
    out_dir: str | Path,
    pretrain: pd.DataFrame | None = None,
) -> ReportPaths:
    """Write results.parquet/.csv (with PGR columns), gt.csv, pretrain.csv, summary.md and PNGs
    to ``out_dir``. ``pretrain``: the pretraining runs (:attr:`Tables.pretrain`), if any.

    Works with no transfer runs yet (empty ``results``): tables and summary are still written
    and the summary says so. Every file is written to a temp name and renamed into place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = _ensure_columns(results, RESULT_COLUMNS)
    gt = _ensure_columns(gt, GT_COLUMNS)
    failures = _ensure_columns(failures, FAILURE_COLUMNS)
    pretrain = _ensure_columns(pretrain, PRETRAIN_COLUMNS)

    table = add_pgr(results)
    sort_cols = ["dataset", "variant", "weak", "strong", "seed"]
    if not table.empty:
        table = table.sort_values(sort_cols, kind="stable").reset_index(drop=True)
    table_parquet = atomic_write(
        out / "results.parquet", lambda p: table.to_parquet(p, index=False)
    )
    table_csv = atomic_write(out / "results.csv", lambda p: table.to_csv(p, index=False))
    gt_csv = atomic_write(out / "gt.csv", lambda p: gt.to_csv(p, index=False))
    pretrain_csv = atomic_write(out / "pretrain.csv", lambda p: pretrain.to_csv(p, index=False))
    matrices, stats, comparisons, notes = _analyse(table, ladder)
    cells = [*table["software"], *gt["software"], *pretrain["software"]]
    if mixed := mixed_note(cells):  # w2sray/provenance.py
        notes.append(mixed)
    stats_csv = atomic_write(out / "stats.csv", lambda p: stats.to_csv(p, index=False))
    comparisons_csv = atomic_write(
        out / "comparisons.csv", lambda p: comparisons.to_csv(p, index=False)
    )
    heatmaps = _write_heatmaps(matrices, out)
    scatter = atomic_write(
        out / "w2s_vs_ceiling.png", lambda p: w2s_vs_ceiling(table, p, ladder=ladder)
    )

    analysis = _Analysis(
        ladder=ladder,
        table=table,
        gt=gt,
        pretrain=pretrain,
        failures=failures,
        matrices=matrices,
        stats=stats,
        comparisons=comparisons,
        notes=notes,
        files=[
            table_csv,
            table_parquet,
            gt_csv,
            *[pretrain_csv] * (not pretrain.empty),  # linked only when the sweep pretrains
            stats_csv,
            comparisons_csv,
        ],
        heatmaps=heatmaps,
        scatter=scatter,
    )
    html_path = out / "report.html"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = _document(analysis, now, html_path.name)
    summary_md = atomic_write_text(out / "summary.md", render_markdown(doc))
    atomic_write_text(html_path, render_html(doc))
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
        pretrain_csv=pretrain_csv,
    )
