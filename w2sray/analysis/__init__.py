"""Analysis of a finished (or running) sweep: PGR, PGR matrices, figures and the report."""

from .pgr import PGRMatrix, add_pgr, format_matrix, pgr, pgr_array, pgr_matrices
from .plots import heatmap, w2s_vs_ceiling
from .report import ReportPaths, atomic_write, slugify, write_report

__all__ = [
    "PGRMatrix",
    "ReportPaths",
    "add_pgr",
    "atomic_write",
    "format_matrix",
    "heatmap",
    "pgr",
    "pgr_array",
    "pgr_matrices",
    "slugify",
    "w2s_vs_ceiling",
    "write_report",
]
