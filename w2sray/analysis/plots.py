"""PNG figures: PGR heatmaps and the paper's fig. 3 style w2s-vs-ceiling plot.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas rather than pyplot, so
nothing touches global backend state (safe in Ray workers, threads and headless machines).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .pgr import PGRMatrix

__all__ = ["heatmap", "w2s_vs_ceiling"]

_GREY = "#c8c8c8"


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    # Explicit format: callers may write to a temp name without a .png suffix.
    fig.savefig(path, format="png")
    return path


def heatmap(m: PGRMatrix, path: str | Path) -> Path:
    """Annotated PGR heatmap of ``m`` (weak rows x strong columns) written as PNG to ``path``.

    Diverging colormap centred on 0 (symmetric limits, at least [-1, 1]); undefined or not-run
    cells are grey, pairs that cannot be weak-to-strong are blank.
    """
    rows, cols = m.shown_rows(), m.shown_cols()
    if not rows or not cols:  # ladder of one model: nothing to draw but keep a valid PNG
        rows, cols = m.ladder[:1], m.ladder[:1]
    vals = m.mean.loc[rows, cols].to_numpy(float)
    impossible = np.array([[not m.possible(w, s) for s in cols] for w in rows])
    finite = vals[np.isfinite(vals)]
    lim = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0

    fig = _new_figure(1.5 * len(cols) + 2.2, 0.9 * len(rows) + 1.6)
    ax = fig.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad=_GREY)  # red < 0 < blue
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, norm=Normalize(-lim, lim), aspect="auto")
    # Paint impossible pairs white on top so they read as "no such pair", not "missing".
    ax.imshow(
        np.where(impossible, 1.0, np.nan),
        cmap=ListedColormap(["white"]),
        vmin=0,
        vmax=1,
        aspect="auto",
    )
    fig.colorbar(im, ax=ax, label="PGR", shrink=0.9)

    for i, w in enumerate(rows):
        for j, s in enumerate(cols):
            text = m.cell(w, s)
            if not text:
                continue
            if text == "-":
                text = "not run"
            if " ± " in text:
                text = text.replace(" ± ", "\n± ")
            n = int(m.n.loc[w, s])
            if n > 1:
                text += f"\nn={n}"
            v = vals[i, j]
            dark = np.isfinite(v) and abs(v) / lim > 0.6
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black"
            )

    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("strong model")
    ax.set_ylabel("weak model")
    ax.set_title(f"PGR: {m.dataset} / {m.variant}", fontsize=10)
    return _save(fig, path)


def _order(models: list[str], ladder: list[str] | None, key: dict[str, float]) -> list[str]:
    if ladder:
        rank = {m: i for i, m in enumerate(ladder)}
        return sorted(models, key=lambda m: (rank.get(m, len(rank)), key.get(m, 0.0), m))
    return sorted(models, key=lambda m: (key.get(m, 0.0), m))


def w2s_vs_ceiling(
    results: pd.DataFrame, path: str | Path, ladder: list[str] | None = None
) -> Path:
    """Burns et al. fig. 3 style plot written as PNG to ``path``; one subplot per dataset x variant.

    x is the strong model's ceiling accuracy, y accuracy. Per weak model: solid line of
    weak-to-strong accuracy over strong models (mean over seeds, bars = std), a dashed
    horizontal line at the weak model's own accuracy, and the y = x diagonal (the ceiling).
    ``ladder`` only fixes the colour order of weak models.
    """
    if results.empty:
        fig = _new_figure(5, 3)
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no transfer runs yet", ha="center", va="center", fontsize=12)
        ax.set_axis_off()
        return _save(fig, path)

    df = results.copy()
    for c in ("weak_acc", "ceiling_acc", "w2s_acc"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    # Weak accuracy and ceiling accuracy are per trained model, repeated over transfer rows;
    # dedupe per seed before averaging so every seed weighs the same.
    weak_acc = (
        df.drop_duplicates(["dataset", "weak", "seed"])
        .groupby(["dataset", "weak"])["weak_acc"]
        .mean()
    )
    ceil_acc = (
        df.drop_duplicates(["dataset", "strong", "seed"])
        .groupby(["dataset", "strong"])["ceiling_acc"]
        .mean()
    )
    weak_order = _order(
        pd.unique(df["weak"]).tolist(),
        ladder,
        df.groupby("weak")["weak_acc"].mean().to_dict(),
    )
    palette = _palette(len(weak_order))
    colour = dict(zip(weak_order, palette, strict=True))

    panels = sorted(
        df[["dataset", "variant"]].drop_duplicates().itertuples(index=False, name=None),
        key=lambda t: (str(t[0]), str(t[1])),
    )
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(4.2 * ncols + 1.8, 3.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)

    for k, (dataset, variant) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        d = df[(df["dataset"] == dataset) & (df["variant"] == variant)]
        g = d.groupby(["weak", "strong"])["w2s_acc"].agg(["mean", "std"]).reset_index()
        g["x"] = [ceil_acc.get((dataset, s), np.nan) for s in g["strong"]]
        xs, ys = [g["x"].to_numpy()], [g["mean"].to_numpy()]
        for w in [m for m in weak_order if m in set(g["weak"])]:
            gw = g[g["weak"] == w].sort_values("x")
            c = colour[w]
            ax.errorbar(
                gw["x"],
                gw["mean"],
                yerr=gw["std"].fillna(0.0),
                color=c,
                marker="o",
                ms=4,
                lw=1.5,
                capsize=2,
            )
            wa = weak_acc.get((dataset, w), np.nan)
            if np.isfinite(wa):
                ax.axhline(wa, color=c, ls="--", lw=1, alpha=0.8)
                ys.append(np.array([wa]))
        allv = np.concatenate([*xs, *ys])
        allv = allv[np.isfinite(allv)]
        lo, hi = (allv.min(), allv.max()) if allv.size else (0.0, 1.0)
        pad = max(0.02, 0.08 * (hi - lo))
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, alpha=0.6)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"{dataset} / {variant}", fontsize=9)
        ax.set_xlabel("strong ceiling accuracy", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()

    handles = [
        Line2D([], [], color=colour[w], marker="o", ms=4, label=f"weak: {w}") for w in weak_order
    ]
    handles += [
        Line2D([], [], color="grey", ls="--", label="weak model accuracy"),
        Line2D([], [], color="black", label="strong ceiling (y = x)"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return _save(fig, path)


def _palette(n: int) -> list:
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0, 0.95, n)]
