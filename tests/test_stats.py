import base64
import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from w2sray.analysis import (
    ReportPaths,
    cell_stats,
    choose_baseline,
    compare_all,
    paired_differences,
    seed_summary,
    write_report,
)

LADDER = ["tiny", "base", "huge"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<b>bold</b>"  # a variant name that is markup if not escaped


def _row(variant, weak, strong, seed, pgr, pgr_auc=None, dataset="sciq"):
    """A transfer row whose PGR on accuracy is ``pgr`` (and on AUC ``pgr_auc``, if given)."""
    return dict(
        dataset=dataset,
        weak=weak,
        strong=strong,
        method=variant,
        hparams="{}",
        variant=variant,
        seed=seed,
        weak_acc=0.6,
        ceiling_acc=0.8,
        w2s_acc=0.6 + 0.2 * pgr if pgr is not None else 0.7,
        weak_auc=0.7,
        ceiling_auc=0.9,
        w2s_auc=0.7 + 0.2 * pgr_auc if pgr_auc is not None else np.nan,
        run_key=f"t-{dataset}-{variant}-{weak}-{strong}-{seed}",
        weak_key=f"gt-{weak}-{seed}",
        ceiling_key=f"gt-{strong}-{seed}",
    )


def _undefined(variant, weak, strong, seed):
    # ceiling == weak: PGR undefined
    return dict(_row(variant, weak, strong, seed, 0.0), ceiling_acc=0.6, w2s_acc=0.65)


# --- seed_summary -------------------------------------------------------------------------


def test_bootstrap_two_values_hand_computed():
    # Resample means of [0.2, 0.4] are 0.2, 0.3, 0.4 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5th percentile is 0.2 and the 97.5th is 0.4.
    s = seed_summary([0.2, 0.4])
    assert s["n"] == 2
    assert s["mean"] == pytest.approx(0.3)
    assert s["se"] == pytest.approx(0.1)  # std = 0.1 * sqrt(2), / sqrt(2)
    attainable = [0.2, 0.3, 0.4]
    assert any(s["ci_low"] == pytest.approx(v) for v in attainable)
    assert any(s["ci_high"] == pytest.approx(v) for v in attainable)
    assert s["ci_low"] == pytest.approx(0.2)
    assert s["ci_high"] == pytest.approx(0.4)
    # A 40% interval cuts 30% from each tail: P(mean <= 0.2) = 0.25 < 0.3, so both ends land on
    # the middle value (B = 2000 puts this several binomial SDs from the boundary).
    s40 = seed_summary([0.2, 0.4], level=0.4)
    assert s40["ci_low"] == pytest.approx(0.3)
    assert s40["ci_high"] == pytest.approx(0.3)


def test_constant_values_ci_is_the_value():
    s = seed_summary([0.7] * 4)
    assert s["mean"] == 0.7
    assert s["ci_low"] == 0.7 and s["ci_high"] == 0.7
    assert s["se"] == 0.0
    assert s["n"] == 4


def test_single_value_and_nan_dropping():
    s = seed_summary([0.5, float("nan"), None])
    assert s["n"] == 1 and s["mean"] == 0.5
    assert math.isnan(s["se"]) and math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
    e = seed_summary([float("nan")])
    assert e["n"] == 0
    assert all(math.isnan(e[k]) for k in ("mean", "se", "ci_low", "ci_high"))
    assert seed_summary([])["n"] == 0


def test_se_formula_by_hand():
    # mean 0.4; deviations -0.3, 0, 0.3 -> sample var 0.18 / 2 = 0.09, std 0.3, se 0.3 / sqrt 3
    s = seed_summary(np.array([0.1, 0.4, 0.7]))
    assert s["mean"] == pytest.approx(0.4)
    assert s["se"] == pytest.approx(0.3 / math.sqrt(3))
    assert 0.1 - 1e-12 <= s["ci_low"] <= s["mean"] <= s["ci_high"] <= 0.7 + 1e-12


# Student t 0.975 quantiles from a printed table (df: value)
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 29: 2.045, 120: 1.980}


@pytest.mark.parametrize("df", T_TABLE)
def test_t_quantile_matches_the_table(df):
    from w2sray.analysis.stats import t_cdf, t_quantile

    assert t_quantile(0.975, df) == pytest.approx(T_TABLE[df], abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-T_TABLE[df], abs=5e-4)
    assert t_cdf(T_TABLE[df], df) == pytest.approx(0.975, abs=1e-4)


def test_t_interval_by_hand_is_wider_than_the_bootstrap_with_few_seeds():
    # three seeds: mean 0.4, se 0.3 / sqrt(3); t(2) = 4.303 -> half width 0.745
    s = seed_summary(np.array([0.1, 0.4, 0.7]))
    half = 4.303 * 0.3 / math.sqrt(3)
    assert (s["t_low"], s["t_high"]) == pytest.approx((0.4 - half, 0.4 + half), abs=1e-3)
    assert s["t_low"] < s["ci_low"] and s["t_high"] > s["ci_high"]
    assert all(math.isnan(seed_summary(np.array([0.3]))[k]) for k in ("t_low", "t_high"))
    # a constant column: no spread, the interval is the value
    c = seed_summary(np.array([0.5, 0.5, 0.5]))
    assert (c["t_low"], c["t_high"]) == (0.5, 0.5)


def test_bootstrap_reproducible():
    vals = [0.13, -0.4, 0.77, 0.2, 0.05, 0.61]
    a, b = seed_summary(vals), seed_summary(vals)
    assert a == b
    # Independent of calls in between (fresh generator per call).
    seed_summary([1.0, 2.0, 3.0])
    assert seed_summary(vals) == a


# --- cell_stats ---------------------------------------------------------------------------


@pytest.fixture
def flagged():
    return pd.DataFrame(
        [
            _row("xent", "tiny", "base", 0, -0.1, 0.2),  # CI [-0.1, 0.3] spans 0
            _row("xent", "tiny", "base", 1, 0.3, 0.4),
            _row("xent", "tiny", "huge", 0, 0.4),  # CI [0.4, 0.6] does not
            _row("xent", "tiny", "huge", 1, 0.6),
            _row("xent", "base", "huge", 0, 0.5),  # one seed: no CI
        ]
    )


def test_cell_stats_flags(flagged):
    st = cell_stats(flagged, LADDER)
    assert list(st.columns)[:4] == ["dataset", "variant", "weak", "strong"]
    for c in ("mean", "se", "ci_low", "ci_high", "n", "ci_includes_zero"):
        assert c in st.columns
    assert st["ci_includes_zero"].dtype == bool
    # Ladder order of pairs, not alphabetical.
    assert list(zip(st["weak"], st["strong"], strict=True)) == [
        ("tiny", "base"),
        ("tiny", "huge"),
        ("base", "huge"),
    ]
    by = st.set_index(["weak", "strong"])
    tb, th, bh = by.loc[("tiny", "base")], by.loc[("tiny", "huge")], by.loc[("base", "huge")]
    assert tb["mean"] == pytest.approx(0.1)
    assert (tb["ci_low"], tb["ci_high"]) == pytest.approx((-0.1, 0.3))
    assert bool(tb["ci_includes_zero"]) is True
    assert (th["ci_low"], th["ci_high"]) == pytest.approx((0.4, 0.6))
    assert bool(th["ci_includes_zero"]) is False
    assert bh["n"] == 1 and math.isnan(bh["ci_low"]) and bool(bh["ci_includes_zero"]) is False
    # the t interval (what the report marks): 2 seeds, t(1) = 12.706; it includes 0 on both
    assert (tb["t_low"], tb["t_high"]) == pytest.approx((0.1 - 2.5412, 0.1 + 2.5412), abs=1e-3)
    assert bool(tb["t_includes_zero"]) and bool(th["t_includes_zero"])
    assert bool(bh["t_includes_zero"]) is False and math.isnan(bh["t_low"])

    auc = cell_stats(flagged, LADDER, metric="pgr_auc").set_index(["weak", "strong"])
    assert auc.loc[("tiny", "base"), "mean"] == pytest.approx(0.3)
    assert auc.loc[("tiny", "huge"), "n"] == 0  # no AUC recorded
    assert auc.loc[("tiny", "huge"), "runs"] == 2

    pd.testing.assert_frame_equal(st, cell_stats(flagged, LADDER))  # reproducible


def test_cell_stats_undefined_and_ladder_warning(flagged):
    rows = pd.concat(
        [
            flagged,
            pd.DataFrame(
                [_undefined("xent", "tiny", "huge", 2), _row("xent", "huge", "tiny", 0, 0.1)]
            ),
        ]
    )
    with pytest.warns(UserWarning, match="huge->tiny"):
        st = cell_stats(rows, LADDER)
    th = st.set_index(["weak", "strong"]).loc[("tiny", "huge")]
    assert th["n"] == 2 and th["runs"] == 3
    assert ("huge", "tiny") not in set(zip(st["weak"], st["strong"], strict=True))
    assert cell_stats(pd.DataFrame(), LADDER).empty


# --- paired differences -------------------------------------------------------------------


@pytest.fixture
def unpaired():
    # xent has seeds 0, 1, 2; logconf only 0 and 1 (and seed 3 where xent is undefined).
    # Unpaired means: logconf 0.4 - xent 0.4 = 0. Paired by seed: (0.3-0.1, 0.5-0.2) = 0.25.
    return pd.DataFrame(
        [
            _row("logconf", "tiny", "base", 1, 0.5),
            _row("xent", "tiny", "base", 2, 0.9),
            _row("xent", "tiny", "base", 0, 0.1),
            _row("logconf", "tiny", "base", 0, 0.3),
            _row("xent", "tiny", "base", 1, 0.2),
            _undefined("xent", "tiny", "base", 3),
            _row("logconf", "tiny", "base", 3, 0.7),
            _row("xent", "tiny", "huge", 0, 0.5),  # only xent ran this pair: no row
        ]
    )


def test_paired_differences_pair_by_seed(unpaired):
    d = paired_differences(unpaired, "xent", "logconf")
    assert len(d) == 1
    r = d.iloc[0]
    assert (r["dataset"], r["weak"], r["strong"]) == ("sciq", "tiny", "base")
    assert (r["a_variant"], r["b_variant"]) == ("xent", "logconf")
    assert r["n"] == 2
    assert r["mean"] == pytest.approx(0.25)  # not the unpaired 0.0
    assert r["a_mean"] == pytest.approx(0.15) and r["b_mean"] == pytest.approx(0.4)
    assert r["se"] == pytest.approx(0.05)  # diffs 0.2, 0.3
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.2, 0.3))
    assert not r["ci_includes_zero"]

    rev = paired_differences(unpaired, "logconf", "xent").iloc[0]
    assert rev["mean"] == pytest.approx(-0.25)
    assert (rev["ci_low"], rev["ci_high"]) == pytest.approx((-0.3, -0.2))


def test_paired_differences_no_common_seed():
    rows = pd.DataFrame([_row("xent", "tiny", "base", 0, 0.1), _row("lc", "tiny", "base", 1, 0.2)])
    r = paired_differences(rows, "xent", "lc").iloc[0]
    assert r["n"] == 0 and math.isnan(r["mean"]) and not r["ci_includes_zero"]


def test_choose_baseline():
    assert choose_baseline(["logconf", "xent", "aaa"]) == "xent"
    assert choose_baseline(["zeta", "beta"]) == "beta"
    assert choose_baseline(["xent(lr=1)", "zz"]) == "xent(lr=1)"  # only exactly "xent" wins
    assert choose_baseline([]) is None


def test_compare_all_baseline_and_pairs(unpaired):
    extra = pd.DataFrame([_row("aaa", "tiny", "base", s, 0.1 * s) for s in (0, 1)])
    comp = compare_all(pd.concat([unpaired, extra]), "pgr", ladder=LADDER)
    assert set(comp["a_variant"]) == {"xent"}  # xent beats the alphabetically first "aaa"
    assert list(comp["b_variant"]) == ["aaa", "logconf"]
    lc = comp[comp["b_variant"] == "logconf"].iloc[0]
    assert lc["mean"] == pytest.approx(0.25)

    no_xent = compare_all(unpaired.replace({"variant": {"xent": "zzz"}}), "pgr")
    assert set(no_xent["a_variant"]) == {"logconf"}
    assert no_xent.iloc[0]["mean"] == pytest.approx(-0.25)
    assert compare_all(unpaired[unpaired["variant"] == "xent"], "pgr").empty


# --- report -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rows = [
        _row("xent", "tiny", "base", 0, -0.1, 0.2),  # spans 0 -> dagger
        _row("xent", "tiny", "base", 1, 0.3, 0.4),
        _row("xent", "tiny", "huge", 0, 0.4),
        _row("xent", "tiny", "huge", 1, 0.6),
        _row(EVIL, "tiny", "base", 0, 0.5, 0.5),
        _row(EVIL, "tiny", "base", 1, 0.7, 0.6),
        _row(EVIL, "huge", "tiny", 0, 0.1),  # against the ladder: a note, once
    ]
    gt = pd.DataFrame(
        [dict(dataset="sciq", model=m, seed=0, acc=0.7, auc=0.8, run_key=f"gt-{m}") for m in LADDER]
    )
    failures = pd.DataFrame(
        [
            dict(
                run_key="t-bad",
                kind="transfer",
                dataset="sciq",
                model="huge",
                variant=EVIL,
                error="ValueError: x < y & z",
            )
        ]
    )
    out = tmp_path_factory.mktemp("report")
    return write_report(pd.DataFrame(rows), gt, failures, LADDER, out)  # notes the warning


def test_report_paths_and_csvs(report):
    out = report.summary_md.parent
    for p in (report.stats_csv, report.comparisons_csv, report.html):
        assert p is not None and p.is_file() and p.parent == out
    assert {report.stats_csv.name, report.comparisons_csv.name, report.html.name} == {
        "stats.csv",
        "comparisons.csv",
        "report.html",
    }
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic, no temp files
    st = pd.read_csv(report.stats_csv)
    assert set(st["metric"]) == {"pgr", "pgr_auc"}
    tb = st[(st["metric"] == "pgr") & (st["variant"] == "xent") & (st["weak"] == "tiny")]
    tb = tb[tb["strong"] == "base"].iloc[0]
    assert bool(tb["ci_includes_zero"]) and tb["ci_low"] == pytest.approx(-0.1)
    comp = pd.read_csv(report.comparisons_csv)
    assert set(comp["a_variant"]) == {"xent"} and set(comp["b_variant"]) == {EVIL}
    c = comp[comp["metric"] == "pgr"].iloc[0]
    assert c["mean"] == pytest.approx(0.5)  # per-seed diffs 0.5 - -0.1 and 0.7 - 0.3
    # Old positional construction still works (new fields default to None).
    old = ReportPaths(*(report.table_parquet,) * 4, [], report.scatter, [])
    assert old.html is None and old.stats_csv is None


def test_summary_md_ci_and_dagger(report):
    md = report.summary_md.read_text()
    # t CI: mean +- 12.706 x SE (t with 1 degree of freedom); the bootstrap's beside it
    assert "| tiny → base | 2 | 0.10 | 0.20 | [-2.44, 2.64] † | [-0.10, 0.30] |" in md
    assert "| tiny → huge | 2 | 0.50 | 0.10 | [-0.77, 1.77] † | [0.40, 0.60] |" in md
    assert "† 95% CI includes 0." in md
    assert "#### Seed statistics: PGR (AUC)" in md
    assert "[0.20, 0.40]" in md  # xent tiny -> base on AUC
    assert "## Comparisons" in md and "baseline xent" in md
    assert "+0.50" in md
    assert md.count("ignoring 1 transfer rows") == 1  # warning from several calls, noted once
    assert "stats.csv" in md and "report.html" in md


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


def test_html_self_contained_and_escaped(report):
    page = report.html.read_text(encoding="utf-8")
    low = page.lower()
    for bad in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert bad not in low, bad
    assert page.startswith("<!DOCTYPE html>")
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == len(report.heatmaps) + 1  # heatmaps and the scatter
    for data in imgs:
        assert base64.b64decode(data)[:8] == PNG_MAGIC
    # The variant name is text, never markup.
    assert EVIL not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "x &lt; y &amp; z" in page
    parser = _Tags()
    parser.feed(page)
    assert "b" not in parser.tags and "script" not in parser.tags
    srcs = [v for k, v in parser.attrs if k in ("src", "href")]
    assert srcs and all(v.startswith("data:image/png;base64,") for v in srcs)
    for text in ("Ground-truth accuracy", "Comparisons", "Failed runs", "[-2.44, 2.64] †"):
        assert text in page
    assert "<li>transfer runs: 7</li>" in page
