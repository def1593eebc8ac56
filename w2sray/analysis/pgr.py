"""Performance gap recovered (PGR) and per-(dataset, variant) PGR matrices.

PGR = (w2s - weak) / (ceiling - weak): 0 means the strong student only matches its weak
supervisor, 1 means it recovers the full gap to the strong ceiling. It is undefined (NaN)
when the ceiling equals the weak performance, since the gap to recover is empty.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["PGRMatrix", "add_pgr", "format_matrix", "pgr", "pgr_array", "pgr_matrices"]

DEFAULT_EPS = 1e-9


def _as_float(x: float | None) -> float:
    try:
        return float("nan") if x is None else float(x)
    except (TypeError, ValueError):
        return float("nan")


def pgr(weak: float, w2s: float, ceiling: float, eps: float = DEFAULT_EPS) -> float:
    """(w2s - weak) / (ceiling - weak); NaN if any input is NaN/None or |ceiling - weak| < eps."""
    weak, w2s, ceiling = _as_float(weak), _as_float(w2s), _as_float(ceiling)
    if math.isnan(weak) or math.isnan(w2s) or math.isnan(ceiling):
        return float("nan")
    gap = ceiling - weak
    if abs(gap) < eps:
        return float("nan")
    return (w2s - weak) / gap


def pgr_array(weak, w2s, ceiling, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Vectorised :func:`pgr` over array-likes; never emits inf or a divide warning."""
    weak, w2s, ceiling = _num(weak), _num(w2s), _num(ceiling)
    gap = ceiling - weak
    ok = np.abs(gap) >= eps  # False for NaN gaps too, so NaN inputs stay NaN
    out = np.full(gap.shape, np.nan)
    out[ok] = (w2s[ok] - weak[ok]) / gap[ok]
    return out


def _num(x) -> np.ndarray:
    # None / strings / pd.NA become NaN rather than raising, as in pgr().
    return pd.to_numeric(pd.Series(np.asarray(x, dtype=object)), errors="coerce").to_numpy(float)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(np.nan, index=df.index, dtype=float)


def add_pgr(results: pd.DataFrame, eps: float = DEFAULT_EPS) -> pd.DataFrame:
    """Return a copy of ``results`` with columns ``pgr`` (accuracy) and ``pgr_auc`` added."""
    out = results.copy()
    out["pgr"] = pgr_array(
        _col(out, "weak_acc"), _col(out, "w2s_acc"), _col(out, "ceiling_acc"), eps
    )
    out["pgr_auc"] = pgr_array(
        _col(out, "weak_auc"), _col(out, "w2s_auc"), _col(out, "ceiling_auc"), eps
    )
    return out


@dataclass
class PGRMatrix:
    """PGR over seeds for one (dataset, variant); frames are weak (index) x strong (columns).

    ``mean``/``std`` ignore undefined PGRs; ``n`` counts defined ones; ``runs`` counts all
    transfer runs of the pair (so ``runs > 0`` with ``n == 0`` means "undefined", while
    ``runs == 0`` means "not run"). Pairs where weak is not below strong in the ladder are NaN.
    """

    dataset: str
    variant: str
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    runs: pd.DataFrame | None = field(default=None)

    @property
    def ladder(self) -> list[str]:
        return list(self.mean.index)

    def possible(self, weak: str, strong: str) -> bool:
        """Whether (weak, strong) is a weak-to-strong pair in ladder order."""
        lad = self.ladder
        return lad.index(weak) < lad.index(strong)

    def cell(self, weak: str, strong: str) -> str:
        """Display text for one cell: 'm ± s', 'm' (one seed), 'undef', '-' (not run), ''."""
        if not self.possible(weak, strong):
            return ""
        n = int(self.n.loc[weak, strong])
        runs = int(self.runs.loc[weak, strong]) if self.runs is not None else n
        if n == 0:
            return "undef" if runs > 0 else "-"
        mean = self.mean.loc[weak, strong]
        if n == 1:
            return f"{mean:.2f}"
        return f"{mean:.2f} ± {self.std.loc[weak, strong]:.2f}"

    def shown_rows(self) -> list[str]:
        """Weak models that have at least one possible strong partner (all but the last)."""
        return self.ladder[:-1]

    def shown_cols(self) -> list[str]:
        """Strong models that have at least one possible weak partner (all but the first)."""
        return self.ladder[1:]


def _ordered_unique(values: pd.Series) -> list:
    return sorted(pd.unique(values).tolist(), key=str)


def _wide(s: pd.Series, ladder: list[str], fill: float) -> pd.DataFrame:
    # (weak, strong)-indexed series -> square ladder x ladder frame.
    wide = s.unstack("strong").reindex(index=ladder, columns=ladder).fillna(fill).astype(float)
    wide.index.name, wide.columns.name = "weak", "strong"
    return wide


def ladder_rows(results: pd.DataFrame, ladder: list[str], stacklevel: int = 2) -> pd.DataFrame:
    """Keep only rows whose pair is weak-below-strong in ``ladder``; warn about the others."""
    rank = {m: i for i, m in enumerate(ladder)}
    wr, sr = results["weak"].map(rank), results["strong"].map(rank)
    valid = wr.notna() & sr.notna() & (wr < sr)
    if not valid.all():
        bad = results.loc[~valid, ["weak", "strong"]].drop_duplicates()
        pairs = ", ".join(f"{w}->{s}" for w, s in bad.itertuples(index=False))
        warnings.warn(
            f"ignoring {int((~valid).sum())} transfer rows whose pair is not weak<strong in "
            f"the ladder {list(ladder)}: {pairs}",
            stacklevel=stacklevel + 1,
        )
    return results.loc[valid]


def pgr_matrices(results: pd.DataFrame, ladder: list[str], metric: str = "pgr") -> list[PGRMatrix]:
    """One :class:`PGRMatrix` per (dataset, variant), sorted by dataset then variant.

    ``metric`` is the PGR column to aggregate ("pgr" on accuracy or "pgr_auc"); it is
    computed via :func:`add_pgr` if absent. Rows whose pair is not weak-below-strong in
    ``ladder`` (or names a model outside it) are left out with a warning.
    """
    ladder = list(ladder)
    if len(set(ladder)) != len(ladder):
        raise ValueError(f"ladder has duplicates: {ladder}")
    if results.empty:
        return []
    if metric not in results.columns:
        results = add_pgr(results)
    df = ladder_rows(results, ladder, stacklevel=3)
    df = df.assign(**{metric: pd.to_numeric(df[metric], errors="coerce")})

    out: list[PGRMatrix] = []
    for dataset in _ordered_unique(df["dataset"]):
        d = df[df["dataset"] == dataset]
        for variant in _ordered_unique(d["variant"]):
            v = d[d["variant"] == variant]
            g = v.groupby(["weak", "strong"])[metric]
            stats = pd.DataFrame(
                {"mean": g.mean(), "std": g.std(ddof=1), "n": g.count(), "runs": g.size()}
            )

            mean = _wide(stats["mean"], ladder, np.nan)
            std = _wide(stats["std"], ladder, np.nan)
            n = _wide(stats["n"], ladder, 0).astype(int)
            runs = _wide(stats["runs"], ladder, 0).astype(int)
            out.append(PGRMatrix(str(dataset), str(variant), mean, std, n, runs))
    return out


def format_matrix(m: PGRMatrix) -> str:
    """Plain-text table of ``m`` for the terminal (rows weak, columns strong)."""
    rows, cols = m.shown_rows(), m.shown_cols()
    header = ["weak \\ strong", *cols]
    body = [[w, *(m.cell(w, s) for s in cols)] for w in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(wd) for c, wd in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    title = f"PGR  {m.dataset} / {m.variant}"
    sep = "-" * max(len(title), sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, sep, line(header), *(line(r) for r in body)])
