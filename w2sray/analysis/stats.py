"""Uncertainty over seeds: mean, standard error, a Student-t CI and a percentile bootstrap CI
per PGR cell, and paired (by seed) differences between variants.

The t interval (``t_low``, ``t_high``: mean +- t(n-1) x se) is the one the report shows and
marks: with the usual 2-5 seeds it is the honest one (it widens as n shrinks, and its
coverage holds for roughly normal per-seed values). The bootstrap resamples the n per-seed
values of one cell with replacement (``N_BOOT`` resamples) and takes the 2.5th / 97.5th
percentiles of the resample means. It uses a fresh ``numpy.random.Generator`` seeded with
``BOOT_SEED`` on every call, so a report is reproducible and a cell's CI does not depend on
which other cells were computed before it. With very few seeds a percentile bootstrap CI is
narrower than it should be (it can never reach beyond the observed min / max); read it as
descriptive, not as a test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .pgr import add_pgr, ladder_rows

__all__ = [
    "BOOT_SEED",
    "N_BOOT",
    "cell_stats",
    "choose_baseline",
    "compare_all",
    "paired_differences",
    "seed_summary",
]

N_BOOT = 2000
BOOT_SEED = 0
LEVEL = 0.95

_SUMMARY = ["mean", "se", "ci_low", "ci_high", "n", "t_low", "t_high"]
CELL_COLUMNS = [
    "dataset", "variant", "weak", "strong", "metric", "runs", *_SUMMARY, "ci_includes_zero",
    "t_includes_zero",
]  # fmt: skip
DIFF_COLUMNS = [
    "dataset", "weak", "strong", "metric", "a_variant", "b_variant", "a_mean", "b_mean",
    *_SUMMARY, "ci_includes_zero", "t_includes_zero",
]  # fmt: skip


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
        + b * math.log1p(-x)
    )  # fmt: skip
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on t_cdf;
    no scipy needed)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


def _values(values) -> np.ndarray:
    x = pd.to_numeric(pd.Series(np.asarray(values, dtype=object).ravel()), errors="coerce")
    return x.to_numpy(float)


def seed_summary(
    values, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = BOOT_SEED
) -> dict:
    """Mean, SE and percentile-bootstrap CI of per-seed ``values`` (NaN / None dropped first).

    Returns ``dict(mean, se, ci_low, ci_high, n, t_low, t_high)``: ``se`` = sample std
    (ddof=1) / sqrt(n), NaN when n < 2; both CIs are NaN when n < 2 (one value says nothing
    about spread) and everything but ``n`` is NaN when n == 0. ``ci_*``: the bootstrap's, order
    statistics of the resample means (symmetric ranks, rounded outwards), so always attainable
    resample means; ``t_*``: mean +- t(n-1, level) x se.
    """
    x = _values(values)
    x = x[~np.isnan(x)]
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        return dict(mean=nan, se=nan, ci_low=nan, ci_high=nan, n=0, t_low=nan, t_high=nan)
    lo, hi = float(x.min()), float(x.max())
    # Clamp to the data range: mathematically every (resample) mean lies in it, and this keeps
    # float rounding from moving a constant column's mean or CI off the constant.
    mean = min(max(float(x.mean()), lo), hi)
    if n == 1:
        return dict(mean=mean, se=nan, ci_low=nan, ci_high=nan, n=1, t_low=nan, t_high=nan)
    se = 0.0 if lo == hi else float(x.std(ddof=1)) / math.sqrt(n)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    half = t_quantile(1.0 - alpha, n - 1) * se
    ci_low = float(np.quantile(means, alpha, method="lower"))
    ci_high = float(np.quantile(means, 1.0 - alpha, method="higher"))
    return dict(
        mean=mean,
        se=se,
        ci_low=min(max(ci_low, lo), hi),
        ci_high=min(max(ci_high, lo), hi),
        n=n,
        t_low=mean - half,
        t_high=mean + half,
    )


def _includes_zero(s: dict, which: str = "ci") -> bool:
    # False when there is no CI (n < 2): "unknown" is reported via n, not as "includes 0".
    lo, hi = s[f"{which}_low"], s[f"{which}_high"]
    return bool(not (math.isnan(lo) or math.isnan(hi)) and lo <= 0.0 <= hi)


def _with_metric(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in results.columns:
        results = add_pgr(results)
    if metric not in results.columns:
        raise KeyError(f"no column {metric!r} in results (and add_pgr does not make it)")
    return results.assign(**{metric: pd.to_numeric(results[metric], errors="coerce")})


def _ladder_rows(results: pd.DataFrame, ladder: list[str] | None) -> pd.DataFrame:
    # Same rule and warning as pgr_matrices: keep only weak-below-strong pairs of the ladder.
    if ladder is None or results.empty:
        return results
    return ladder_rows(results, list(ladder), stacklevel=3)


def _pair_key(ladder: list[str] | None):
    rank = {m: i for i, m in enumerate(ladder or [])}

    def key(m: object) -> tuple:
        return (rank.get(m, len(rank)), str(m))

    return key


def _sorted(df: pd.DataFrame, first: list[str], ladder: list[str] | None) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    k = _pair_key(ladder)
    order = sorted(
        range(len(df)),
        key=lambda i: (
            *(str(df[c].iat[i]) for c in first),
            k(df["weak"].iat[i]),
            k(df["strong"].iat[i]),
        ),
    )
    return df.iloc[order].reset_index(drop=True)


def cell_stats(
    results: pd.DataFrame, ladder: list[str] | None, metric: str = "pgr"
) -> pd.DataFrame:
    """One row per (dataset, variant, weak, strong) run: :func:`seed_summary` of ``metric``.

    Columns: dataset, variant, weak, strong, metric, runs (transfer rows of the cell), mean,
    se, ci_low, ci_high, n (seeds with a defined value) and ``ci_includes_zero`` (False when
    there is no CI). With a ``ladder``, pairs that are not weak-below-strong in it are left out
    with a warning (as in :func:`~w2sray.analysis.pgr_matrices`) and rows follow ladder order.
    """
    if results is None or results.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    df = _ladder_rows(_with_metric(results, metric), ladder)
    rows = []
    for (dataset, variant, weak, strong), g in df.groupby(
        ["dataset", "variant", "weak", "strong"], sort=False, dropna=False
    ):
        s = seed_summary(g[metric])
        rows.append(
            dict(
                dataset=dataset,
                variant=variant,
                weak=weak,
                strong=strong,
                metric=metric,
                runs=len(g),
                **s,
                ci_includes_zero=_includes_zero(s),
                t_includes_zero=_includes_zero(s, "t"),
            )
        )
    out = pd.DataFrame(rows, columns=CELL_COLUMNS)
    return _sorted(out, ["dataset", "variant"], ladder)


def _per_seed(g: pd.DataFrame, metric: str) -> pd.Series:
    # One value per seed (mean if a seed was somehow recorded twice), undefined ones dropped.
    g = g.dropna(subset=["seed"])
    return g.groupby("seed")[metric].mean().dropna()


def _diff_rows(df: pd.DataFrame, a: str, b: str, metric: str) -> list[dict]:
    rows = []
    da, db = df[df["variant"] == a], df[df["variant"] == b]
    cells_a = set(da[["dataset", "weak", "strong"]].itertuples(index=False, name=None))
    cells_b = set(db[["dataset", "weak", "strong"]].itertuples(index=False, name=None))
    ga = dict(tuple(da.groupby(["dataset", "weak", "strong"], sort=False)))
    gb = dict(tuple(db.groupby(["dataset", "weak", "strong"], sort=False)))
    for cell in cells_a & cells_b:
        sa, sb = _per_seed(ga[cell], metric), _per_seed(gb[cell], metric)
        seeds = sa.index.intersection(sb.index)
        diff = sb.loc[seeds] - sa.loc[seeds]
        s = seed_summary(diff.to_numpy())
        nan = float("nan")
        rows.append(
            dict(
                dataset=cell[0],
                weak=cell[1],
                strong=cell[2],
                metric=metric,
                a_variant=a,
                b_variant=b,
                a_mean=float(sa.loc[seeds].mean()) if len(seeds) else nan,
                b_mean=float(sb.loc[seeds].mean()) if len(seeds) else nan,
                **s,
                ci_includes_zero=_includes_zero(s),
                t_includes_zero=_includes_zero(s, "t"),
            )
        )
    return rows


def paired_differences(
    results: pd.DataFrame,
    a_variant: str,
    b_variant: str,
    metric: str = "pgr",
    ladder: list[str] | None = None,
) -> pd.DataFrame:
    """Per (dataset, weak, strong) run with both variants: ``b - a`` of ``metric``, paired by seed.

    Only seeds where both variants have a defined value enter (``n`` counts them); a cell with
    both variants but no such seed gets a row with n == 0 and NaN statistics. ``a_mean`` and
    ``b_mean`` are the variants' means over those same paired seeds. Columns: dataset, weak,
    strong, metric, a_variant, b_variant, a_mean, b_mean, mean, se, ci_low, ci_high, n,
    ci_includes_zero.
    """
    if results is None or results.empty:
        return pd.DataFrame(columns=DIFF_COLUMNS)
    df = _ladder_rows(_with_metric(results, metric), ladder)
    out = pd.DataFrame(_diff_rows(df, a_variant, b_variant, metric), columns=DIFF_COLUMNS)
    return _sorted(out, ["dataset"], ladder)


def choose_baseline(variants) -> str | None:
    """The variant others are compared with: exactly "xent" if present, else the first sorted."""
    vs = sorted({str(v) for v in variants})
    if not vs:
        return None
    return "xent" if "xent" in vs else vs[0]


def compare_all(
    results: pd.DataFrame,
    metric: str = "pgr",
    ladder: list[str] | None = None,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Paired differences of every other variant vs a baseline, per dataset.

    The baseline (``a_variant``) is ``baseline`` if given, else :func:`choose_baseline` of the
    dataset's variants ("xent" when run, otherwise the alphabetically first). Each other
    variant of the dataset is compared (``b - baseline``) on every (weak, strong) cell that
    both ran. Rows are sorted by dataset, variant, then pair.
    """
    if results is None or results.empty:
        return pd.DataFrame(columns=DIFF_COLUMNS)
    df = _ladder_rows(_with_metric(results, metric), ladder)
    rows: list[dict] = []
    for dataset in sorted(pd.unique(df["dataset"]).tolist(), key=str):
        d = df[df["dataset"] == dataset]
        variants = sorted({str(v) for v in d["variant"].dropna()})
        base = baseline if baseline is not None else choose_baseline(variants)
        if base not in variants:
            continue
        for v in variants:
            if v != base:
                rows += _diff_rows(d, base, v, metric)
    out = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    return _sorted(out, ["dataset", "b_variant"], ladder)
