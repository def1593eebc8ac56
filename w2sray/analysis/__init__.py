"""Analysis of a finished (or running) sweep: PGR, PGR matrices, figures and the report."""

from .pgr import PGRMatrix, add_pgr, format_matrix, pgr, pgr_array, pgr_matrices
from .plots import heatmap, w2s_vs_ceiling
from .report import ReportPaths, atomic_write, slugify, write_report
from .stats import cell_stats, choose_baseline, compare_all, paired_differences, seed_summary

__all__ = [
    "PGRMatrix",
    "ReportPaths",
    "add_pgr",
    "atomic_write",
    "cell_stats",
    "choose_baseline",
    "compare_all",
    "format_matrix",
    "heatmap",
    "paired_differences",
    "pgr",
    "pgr_array",
    "pgr_matrices",
    "seed_summary",
    "slugify",
    "w2s_vs_ceiling",
    "write_report",
]
