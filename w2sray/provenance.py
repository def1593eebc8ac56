"""What software a run was trained with, recorded beside its results (``metrics.json``).

Library versions are not part of a run key: a key that hashed them would retrain a whole store
on every patch release. But a result does depend on them (a transformers release can change a
model's initialisation or a tokenizer), so every run records them, the tables carry them
(``software`` columns), and the report says when the runs it compares were trained under
different sets, so a difference a new torch made is not read as a method's.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable
from importlib import metadata

# The packages whose version can change what a run produces, in the order they are shown.
PACKAGES = ("w2sray", "torch", "transformers", "deepspeed", "peft", "ray", "numpy")


@functools.cache
def software() -> dict[str, str]:
    """{python, package: version} for the packages installed here (absent ones left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def describe(sw: dict[str, str] | None) -> str | None:
    """One line for a table cell: ``python 3.12.3, torch 2.13.0, ...``; None when unrecorded
    (runs stored before it was recorded)."""
    if not sw:
        return None
    return ", ".join(f"{k} {v}" for k, v in sw.items())


def mixed_note(cells: Iterable[str | None]) -> str | None:
    """The report's warning when the runs it uses were trained under more than one software
    set (``describe`` lines), with how many runs each; None when they agree."""
    counts: dict[str, int] = {}
    for cell in cells:
        if isinstance(cell, str) and cell:
            counts[cell] = counts.get(cell, 0) + 1
    if len(counts) < 2:
        return None
    by_count = sorted(counts.items(), key=lambda x: -x[1])
    sets = "; ".join(f"[{s}] ({n} run{'s' * (n > 1)})" for s, n in by_count)
    return (
        f"The runs in this report were trained under {len(counts)} different library sets, "
        f"so a difference between them may be the libraries', not the method's: {sets}. "
        "Rerun into a fresh store to compare on one set."
    )
