import html
import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from w2sray.analysis import (
    PGRMatrix,
    add_pgr,
    atomic_write,
    format_matrix,
    pgr,
    pgr_array,
    pgr_matrices,
    slugify,
    write_report,
)
from w2sray.analysis.collect import collect
from w2sray.data.corpus import FILE
from w2sray.store import Store

# Deliberately not alphabetical, so ladder order is distinguishable from sorting.
LADDER = ["tiny", "base", "huge"]
XENT = "xent"
LOGCONF = "logconf(alpha_max=0.5)"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(variant, weak, strong, seed, weak_acc, ceiling_acc, w2s_acc):
    method, hparams = ("xent", "{}") if variant == XENT else ("logconf", '{"alpha_max": 0.5}')
    return dict(
        dataset="sciq",
        weak=weak,
        strong=strong,
        method=method,
        hparams=hparams,
        variant=variant,
        seed=seed,
        weak_acc=weak_acc,
        ceiling_acc=ceiling_acc,
        w2s_acc=w2s_acc,
        weak_auc=weak_acc + 0.05,
        ceiling_auc=ceiling_acc + 0.05,
        w2s_auc=np.nan,
        run_key=f"t-{variant}-{weak}-{strong}-{seed}",
        weak_key=f"gt-{weak}-{seed}",
        ceiling_key=f"gt-{strong}-{seed}",
    )


# Hand-computed PGRs in the comments: (w2s - weak) / (ceiling - weak).
ROWS = [
    _row(XENT, "tiny", "base", 0, 0.60, 0.70, 0.65),  # 0.5
    _row(XENT, "tiny", "base", 1, 0.62, 0.72, 0.66),  # 0.4  -> mean 0.45, std 0.0707
    _row(XENT, "tiny", "huge", 0, 0.60, 0.80, 0.75),  # 0.75
    _row(XENT, "tiny", "huge", 1, 0.62, 0.82, 0.73),  # 0.55 -> mean 0.65, std 0.1414
    _row(XENT, "base", "huge", 0, 0.70, 0.80, 0.68),  # -0.2 (student worse than supervisor)
    _row(XENT, "base", "huge", 1, 0.72, 0.72, 0.75),  # undefined -> mean -0.2, n 1, std NaN
    _row(LOGCONF, "tiny", "base", 0, 0.60, 0.70, 0.68),  # 0.8
    _row(LOGCONF, "tiny", "base", 1, 0.62, 0.72, 0.69),  # 0.7 -> mean 0.75, std 0.0707
    _row(LOGCONF, "tiny", "huge", 0, 0.60, 0.80, 0.78),  # 0.9
    _row(LOGCONF, "tiny", "huge", 1, 0.62, 0.82, 0.80),  # 0.9 -> mean 0.9, std 0
    _row(LOGCONF, "base", "huge", 0, 0.70, 0.80, 0.76),  # 0.6
    _row(LOGCONF, "base", "huge", 1, 0.72, 0.82, 0.80),  # 0.8 -> mean 0.7, std 0.1414
]
S2 = math.sqrt(2)


@pytest.fixture
def results():
    return pd.DataFrame(ROWS)


@pytest.fixture
def gt():
    accs = {"tiny": (0.60, 0.62), "base": (0.70, 0.72), "huge": (0.80, 0.82)}
    return pd.DataFrame(
        [
            dict(dataset="sciq", model=m, seed=s, acc=a[s], auc=a[s] + 0.05, run_key=f"gt-{m}-{s}")
            for m, a in accs.items()
            for s in (0, 1)
        ]
    )


@pytest.fixture
def failures():
    return pd.DataFrame(
        [
            dict(
                run_key="t-xent-huge-seed7",
                kind="transfer",
                dataset="sciq",
                model="huge",
                variant=XENT,
                error="RuntimeError: CUDA out of memory\n  Traceback line two",
            )
        ]
    )


def _by_variant(ms):
    return {m.variant: m for m in ms}


# --- pgr arithmetic ---------------------------------------------------------------------


def test_pgr_basic_and_negative():
    assert pgr(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert pgr(0.6, 0.8, 0.8) == pytest.approx(1.0)
    assert pgr(0.6, 0.6, 0.8) == pytest.approx(0.0)
    assert pgr(0.6, 0.5, 0.8) == pytest.approx(-0.5)
    assert pgr(0.6, 0.9, 0.8) == pytest.approx(1.5)
    # Ceiling below weak: the sign convention still holds.
    assert pgr(0.8, 0.7, 0.6) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "weak,w2s,ceiling",
    [
        (0.7, 0.75, 0.7),  # ceiling == weak
        (0.7, 0.7, 0.7),
        (0.7, 0.75, 0.7 + 1e-12),  # within eps
        (float("nan"), 0.7, 0.8),
        (0.6, float("nan"), 0.8),
        (0.6, 0.7, float("nan")),
        (None, 0.7, 0.8),
    ],
)
def test_pgr_undefined_is_nan(weak, w2s, ceiling):
    assert math.isnan(pgr(weak, w2s, ceiling))


def test_pgr_eps_is_configurable():
    assert pgr(0.7, 0.71, 0.7 + 1e-6) == pytest.approx(1e4)
    assert math.isnan(pgr(0.7, 0.71, 0.7 + 1e-6, eps=1e-3))


def test_pgr_array_no_inf_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            out = pgr_array(
                [0.6, 0.7, 0.6, np.nan, None], [0.7, 0.8, 0.5, 0.7, 0.7], [0.8, 0.7, 0.8, 0.8, 0.8]
            )
    assert out[0] == pytest.approx(0.5)
    assert out[2] == pytest.approx(-0.5)
    assert np.isnan(out[[1, 3, 4]]).all()
    assert not np.isinf(out).any()


def test_add_pgr_columns(results):
    out = add_pgr(results)
    assert "pgr" not in results.columns  # input not mutated
    assert len(out) == len(results)
    expected = [0.5, 0.4, 0.75, 0.55, -0.2, np.nan, 0.8, 0.7, 0.9, 0.9, 0.6, 0.8]
    np.testing.assert_allclose(out["pgr"].to_numpy(), expected, atol=1e-9)
    # AUC: weak and ceiling shifted by the same amount, w2s_auc missing -> all NaN.
    assert out["pgr_auc"].isna().all()
    assert not np.isinf(out["pgr"]).any()


def test_add_pgr_missing_auc_columns(results):
    out = add_pgr(results.drop(columns=["weak_auc", "ceiling_auc", "w2s_auc"]))
    assert out["pgr_auc"].isna().all()
    assert out["pgr"].notna().sum() == 11


# --- matrices ---------------------------------------------------------------------------


def test_pgr_matrices_values(results):
    ms = pgr_matrices(results, LADDER)
    assert [(m.dataset, m.variant) for m in ms] == [("sciq", LOGCONF), ("sciq", XENT)]
    xent, lc = _by_variant(ms)[XENT], _by_variant(ms)[LOGCONF]

    for m in ms:
        for f in (m.mean, m.std, m.n):
            assert list(f.index) == LADDER
            assert list(f.columns) == LADDER

    assert xent.mean.loc["tiny", "base"] == pytest.approx(0.45)
    assert xent.std.loc["tiny", "base"] == pytest.approx(0.1 / S2)
    assert xent.n.loc["tiny", "base"] == 2
    assert xent.mean.loc["tiny", "huge"] == pytest.approx(0.65)
    assert xent.std.loc["tiny", "huge"] == pytest.approx(0.2 / S2)
    # One seed undefined: mean ignores it, n counts only the defined one, std needs 2.
    assert xent.mean.loc["base", "huge"] == pytest.approx(-0.2)
    assert xent.n.loc["base", "huge"] == 1
    assert math.isnan(xent.std.loc["base", "huge"])
    assert xent.runs.loc["base", "huge"] == 2

    assert lc.mean.loc["tiny", "base"] == pytest.approx(0.75)
    assert lc.std.loc["tiny", "base"] == pytest.approx(0.1 / S2)
    assert lc.mean.loc["tiny", "huge"] == pytest.approx(0.9)
    assert lc.std.loc["tiny", "huge"] == pytest.approx(0.0, abs=1e-9)
    assert lc.mean.loc["base", "huge"] == pytest.approx(0.7)
    assert lc.std.loc["base", "huge"] == pytest.approx(0.2 / S2)

    # Impossible pairs (weak not below strong) are NaN with n == 0.
    for w, s in [("base", "tiny"), ("huge", "tiny"), ("huge", "base"), ("tiny", "tiny")]:
        assert math.isnan(xent.mean.loc[w, s])
        assert xent.n.loc[w, s] == 0


def test_pgr_matrices_single_seed_std_nan(results):
    (m, *_) = pgr_matrices(results[results["seed"] == 0], LADDER)
    assert m.n.loc["tiny", "base"] == 1
    assert math.isnan(m.std.loc["tiny", "base"])


def test_pgr_matrices_ignores_pairs_against_ladder(results):
    bad = results.iloc[[0]].assign(weak="huge", strong="tiny")
    with pytest.warns(UserWarning, match="huge->tiny"):
        ms = pgr_matrices(pd.concat([results, bad]), LADDER)
    xent = _by_variant(ms)[XENT]
    assert math.isnan(xent.mean.loc["huge", "tiny"])
    assert xent.n.loc["tiny", "base"] == 2


def test_pgr_matrices_empty():
    assert pgr_matrices(pd.DataFrame(columns=["dataset", "weak", "strong"]), LADDER) == []


def test_format_matrix(results):
    xent = _by_variant(pgr_matrices(results, LADDER))[XENT]
    text = format_matrix(xent)
    assert "sciq / xent" in text
    assert "0.45 ± 0.07" in text
    assert "0.65 ± 0.14" in text
    assert "-0.20" in text and "-0.20 ±" not in text
    header = next(ln for ln in text.splitlines() if ln.startswith("weak"))
    assert header.index("base") < header.index("huge")
    assert "tiny" not in header  # no model is weaker than the smallest: column dropped
    rows = [ln.split()[0] for ln in text.splitlines()[3:]]
    assert rows == ["tiny", "base"]
    # Impossible pair (base -> base) is blank, not "nan".
    assert "nan" not in text.lower()


def test_format_matrix_undef_and_not_run():
    rows = [_row(XENT, "tiny", "base", s, 0.7, 0.7, 0.72) for s in (0, 1)]
    (m,) = pgr_matrices(pd.DataFrame(rows), LADDER)
    assert isinstance(m, PGRMatrix)
    assert m.n.loc["tiny", "base"] == 0
    text = format_matrix(m)
    assert "undef" in text
    assert m.cell("tiny", "huge") == "-"  # never run
    assert m.cell("huge", "tiny") == ""


# --- report -----------------------------------------------------------------------------


def test_slugify():
    assert slugify("sciq", LOGCONF) == "sciq__logconf-alpha_max-0.5"
    assert slugify("A/B", "") == "a-b__x"


def test_write_report(tmp_path, results, gt, failures):
    out = tmp_path / "report"
    paths = write_report(results, gt, failures, LADDER, out)

    for p in (paths.table_parquet, paths.table_csv, paths.gt_csv, paths.summary_md):
        assert p.is_file() and p.parent == out
    assert len(paths.heatmaps) == 2 and len(paths.matrices) == 2
    for png in [*paths.heatmaps, paths.scatter]:
        assert png.read_bytes()[:8] == PNG_MAGIC
    assert {p.name for p in paths.heatmaps} == {
        "pgr__sciq__xent.png",
        "pgr__sciq__logconf-alpha_max-0.5.png",
    }
    # No temp files left behind by the atomic writes.
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    back = pd.read_parquet(paths.table_parquet)
    assert len(back) == len(results)
    assert set(back["run_key"]) == set(results["run_key"])
    assert {"pgr", "pgr_auc"} <= set(back.columns)
    got = back.set_index("run_key")["pgr"]
    assert got["t-xent-base-huge-0"] == pytest.approx(-0.2)
    assert math.isnan(got["t-xent-base-huge-1"])
    assert len(pd.read_csv(paths.table_csv)) == len(results)
    assert len(pd.read_csv(paths.gt_csv)) == len(gt)

    md = paths.summary_md.read_text()
    assert "0.45 ± 0.07 (n=2)" in md
    assert "0.65 ± 0.14 (n=2)" in md
    assert "-0.20 (n=1/2)" in md
    assert "0.75 ± 0.07 (n=2)" in md
    assert "0.70 ± 0.14 (n=2)" in md
    assert "0.610 ± 0.014 (n=2)" in md  # GT accuracy of "tiny"
    assert "RuntimeError: CUDA out of memory" in md
    assert "Traceback line two" not in md
    assert "t-xent-huge-seed7" in md
    for png in [*paths.heatmaps, paths.scatter]:
        assert f"]({png.name})" in md
    # Ladder order in the markdown tables too.
    assert md.index("| weak \\ strong | base | huge |") > 0


def test_write_report_empty(tmp_path, gt):
    paths = write_report(pd.DataFrame(), gt, pd.DataFrame(), LADDER, tmp_path)
    assert paths.heatmaps == [] and paths.matrices == []
    assert paths.scatter.read_bytes()[:8] == PNG_MAGIC
    assert len(pd.read_parquet(paths.table_parquet)) == 0
    md = paths.summary_md.read_text()
    assert "No transfer runs yet" in md
    assert "No failed runs." in md
    assert "0.810 ± 0.014 (n=2)" in md  # GT still reported


def test_write_report_overwrites(tmp_path, results, gt, failures):
    write_report(results.iloc[:2], gt, failures.iloc[:0], LADDER, tmp_path)
    paths = write_report(results, gt, failures, LADDER, tmp_path)
    assert len(pd.read_parquet(paths.table_parquet)) == len(results)
    assert "RuntimeError" in paths.summary_md.read_text()


def test_report_pgr_by_pair_and_method(tmp_path, results, gt, failures):
    """One table per dataset: each pair's PGR per method with its Student-t CI over seeds
    (hand-computed: two seeds a, b give mean +- t(1, 0.975) x |a - b| / 2, t = 12.706)."""
    write_report(results, gt, failures, LADDER, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    section = md.split("## PGR by pair and method")[1].split("## PGR matrices")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert lines[0] == f"| weak → strong | gap | {LOGCONF} | {XENT} |"
    assert lines[2] == "| tiny → base | +0.10 | 0.75 [0.11, 1.39] | 0.45 [-0.19, 1.09] † |"
    assert lines[3] == "| tiny → huge | +0.20 | 0.90 [0.90, 0.90] | 0.65 [-0.62, 1.92] † |"
    assert lines[4] == "| base → huge | +0.10 | 0.70 [-0.57, 1.97] † | -0.20 (n=1) |"
    assert "‡" not in section  # no pair has an inverted gap
    html = (tmp_path / "report.html").read_text()
    assert "PGR by pair and method" in html and "0.75 [0.11, 1.39]" in html


def test_report_flags_pairs_whose_ceiling_is_not_above_the_weak_model(tmp_path, gt, failures):
    """A seed whose strong ceiling is below its weak model (an inverted ladder, as a tiny model
    that failed to train gives) is counted beside the pair's PGR, with the legend saying why."""
    rows = [
        _row(XENT, "tiny", "base", 0, 0.60, 0.70, 0.65),  # gap +0.10, PGR 0.5
        _row(XENT, "tiny", "base", 1, 0.62, 0.58, 0.66),  # gap -0.04, PGR -1.0
        _row(XENT, "tiny", "huge", 0, 0.60, 0.80, 0.75),  # gap +0.20, PGR 0.75
        # the same pair and seed from another sweep in the store, with GT runs of its own
        {
            **_row(XENT, "tiny", "huge", 0, 0.60, 0.70, 0.675),  # gap +0.10, PGR 0.75
            "weak_key": "gt-tiny-0-other",
            "ceiling_key": "gt-huge-0-other",
            "run_key": "t-other",
        },
    ]
    write_report(pd.DataFrame(rows), gt, failures, LADDER, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    section = md.split("## PGR by pair and method")[1].split("## PGR matrices")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert lines[2] == "| tiny → base | +0.03 (1/2 seeds ≤ 0) ‡ | -0.25 [-9.78, 9.28] † |"
    assert lines[3].startswith("| tiny → huge | +0.15 | 0.75 ")  # both sweeps' GT gaps
    assert "‡ In some seeds the strong model's ceiling is not above" in section
    assert "(1/2 seeds ≤ 0) ‡" in (tmp_path / "report.html").read_text()


def _md_text(text: str) -> str:
    # GFM: a backslash escapes ASCII punctuation and is literal before anything else.
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def _md_cells(md: str) -> list[list[str]]:
    # Table rows of the markdown, cells unescaped; the |---| separator rows dropped.
    rows = []
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            rows.append([_md_text(c.strip()) for c in cells])
    return rows


def _html_cells(page: str) -> list[list[str]]:
    return [
        [html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", tr)]
        for tr in re.findall(r"<tr>(.*?)</tr>", page)
    ]


def test_markdown_and_html_show_the_same_report(tmp_path, results, gt, failures):
    """Both files render one document: the same headings, in order, and the same table cells
    (names with characters each format escapes included)."""
    odd = "x|e*nt<b>&"
    results = results.assign(variant=results["variant"].replace(XENT, odd))
    pretrain = pd.DataFrame([_pretrain_row("tiny", "pretrain-a", steps=10, lm_loss=5.0)])
    write_report(results, gt, failures, LADDER, tmp_path, pretrain=pretrain)
    md = (tmp_path / "summary.md").read_text()
    page = (tmp_path / "report.html").read_text()

    md_heads = [(len(h), _md_text(t)) for h, t in re.findall(r"(?m)^(#+) (.*)$", md)]
    html_heads = [(int(n), html.unescape(t)) for n, t in re.findall(r"<h(\d)>(.*?)</h\d>", page)]
    assert md_heads == html_heads
    assert (3, f"sciq / {odd}") in md_heads and (2, "Pretraining") in md_heads

    md_cells, html_cells = _md_cells(md), _html_cells(page)
    assert md_cells == html_cells
    assert ["tiny", "0.45 ± 0.07 (n=2)", "0.65 ± 0.14 (n=2)"] in md_cells
    assert any(odd in row for row in md_cells)

    # Every figure in the markdown is inlined in the HTML.
    alts = re.findall(r"!\[(.*?)\]\(", md)
    assert len(alts) == 3
    assert [_md_text(a) for a in alts] == [
        html.unescape(a)
        for a in re.findall(r'<img src="data:image/png;base64,[^"]+" alt="(.*?)"', page)
    ]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "gt.csv"
    target.write_text("old")

    def fail(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["gt.csv"]  # temp file removed
    atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"


# --- pretraining ----------------------------------------------------------------------------


def _pretrain_row(model, key, corpus="latent", **metrics):
    return dict(model=model, objective="clm", corpus=corpus, seed=0, run_key=key, **metrics)


def test_report_lists_pretraining_runs(tmp_path, results, gt, failures):
    done = dict(documents=2000, steps=300, lm_loss_start=6.2447, lm_loss=5.7122,
                uniform_loss=math.log(516), vocab_size=516, tokens=5740,
                train_seconds=7.54)  # fmt: skip
    pretrain = pd.DataFrame(
        [
            _pretrain_row("huge", "pretrain-b", **{**done, "lm_loss": 4.25}),
            _pretrain_row("tiny", "pretrain-a", "file: corpus.txt", **done),
            _pretrain_row("base", "pretrain-c"),  # not finished: no metrics
        ]
    )
    paths = write_report(results, gt, failures, LADDER, tmp_path, pretrain=pretrain)
    md = paths.summary_md.read_text()
    section = md.split("## Pretraining")[1].split("## Ground-truth accuracy")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert lines[0] == (
        "| model | objective | corpus | documents | steps | LM loss: start → end | uniform "
        "| train s | run key |"
    )
    # Ladder order; ln(516) = 6.246 is the loss of a model that learned nothing.
    assert lines[2:] == [
        "| tiny | clm | file: corpus.txt | 2000 | 300 | 6.245 → 5.712 | 6.246 | 7.5 | pretrain-a |",
        "| huge | clm | latent | 2000 | 300 | 6.245 → 4.250 | 6.246 | 7.5 | pretrain-b |",
    ]
    assert "1 pretraining run(s) have no result yet" in section
    assert "- pretraining runs: 3" in md and "[pretrain.csv](pretrain.csv)" in md
    assert md.index("## Pretraining") < md.index("## Ground-truth accuracy")
    assert "<h2>Pretraining</h2>" in paths.html.read_text()

    back = pd.read_csv(paths.pretrain_csv)
    assert paths.pretrain_csv.parent == paths.gt_csv.parent
    assert list(back["run_key"]) == ["pretrain-b", "pretrain-a", "pretrain-c"]
    assert back["lm_loss"].tolist()[:2] == [4.25, 5.7122] and math.isnan(back["lm_loss"][2])


def test_report_without_pretraining_has_no_section(tmp_path, results, gt, failures):
    paths = write_report(results, gt, failures, LADDER, tmp_path)
    md = paths.summary_md.read_text()
    assert "Pretraining" not in md and "pretraining runs" not in md and "pretrain.csv" not in md
    assert "Pretraining" not in paths.html.read_text()
    assert len(pd.read_csv(paths.pretrain_csv)) == 0  # written, with its header, like gt.csv


def test_collect_reads_pretraining_runs_from_the_store(tmp_path):
    """Every planned pretraining run is a row: a finished one with its metrics and ln(vocab),
    a file corpus named by its file, an unfinished one with its metrics missing."""
    store = Store(str(tmp_path))
    base = {"kind": "pretrain", "method": "pretrain", "loss": "clm", "seed": 0}
    rows = [
        {**base, "key": "pretrain-a", "model": "tiny", "dataset": "latent"},
        {**base, "key": "pretrain-b", "model": "base", "dataset": FILE, "loss": "mlm"},
        {**base, "key": "pretrain-c", "model": "huge", "dataset": "latent"},
    ]
    store.write_manifest("s", {"name": "s", "ladder": LADDER, "runs": rows, "searches": []})
    metrics = {"lm_loss_start": 6.2, "lm_loss": 5.7, "steps": 300, "documents": 2000,
               "tokens": 57400, "train_seconds": 7.5, "vocab_size": 516}  # fmt: skip
    config = {"dataset": {"name": FILE, "params": {"path": "/data/corpus.txt"}}}
    store.write_run("pretrain-a", {"metrics.json": json.dumps(metrics).encode()})
    store.write_run(
        "pretrain-b",
        {
            "metrics.json": json.dumps({**metrics, "objective": "mlm"}).encode(),
            "config.json": json.dumps(config).encode(),
        },
    )
    pre = collect(store).pretrain.set_index("run_key")
    assert pre.loc["pretrain-a", "uniform_loss"] == pytest.approx(math.log(516))
    assert pre.loc["pretrain-a", "lm_loss"] == 5.7 and pre.loc["pretrain-a", "objective"] == "clm"
    assert pre.loc["pretrain-b", "corpus"] == "file: corpus.txt"
    assert pre.loc["pretrain-b", "objective"] == "mlm"
    assert math.isnan(pre.loc["pretrain-c", "lm_loss"]) and pre.loc["pretrain-c", "model"] == "huge"
