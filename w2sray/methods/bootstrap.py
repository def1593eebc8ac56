"""Which ladder paths a method trains: every [weak, strong] pair (naive weak-to-strong), a
subset (``pairs``), or bootstrapping (``bootstrap: true``: through every rung in between;
``chains``: explicit paths), where each step trains on the previous step's labels.

The spec checks (``check``) and the plan's expansion (``paths``, used by w2sray/runs.py) live
here; a chain's intermediate runs are ordinary transfer runs (depth k, w2sray/runs.py), so the
worker loop needs nothing of its own.
"""

from __future__ import annotations

import itertools
from typing import Any


def check(chk: Any, method: Any, ladder: list[str], where: str) -> None:
    """A method's ``pairs`` and ``chains``: known models, in ladder order; problems go to
    ``chk`` (spec._Checker)."""
    rank = {name: i for i, name in enumerate(ladder)}

    def names_ok(seq: Any, at: str, min_len: int) -> bool:
        if not isinstance(seq, list) or len(seq) < min_len:
            chk.bad(at, f"must be a list of at least {min_len} model names, got {seq!r}")
            return False
        unknown = [n for n in seq if n not in rank]
        if unknown:
            chk.bad(at, f"unknown model(s) {unknown} (ladder: {', '.join(ladder)})")
            return False
        if any(rank[a] >= rank[b] for a, b in itertools.pairwise(seq)):
            chk.bad(at, f"models must follow the ladder order, weakest first: got {seq}")
            return False
        return True

    for j, pair in enumerate(method.pairs):
        if names_ok(pair, f"{where}.pairs[{j}]", 2) and len(pair) != 2:
            chk.bad(f"{where}.pairs[{j}]", f"a pair is [weak, strong], got {pair}")
    for j, chain in enumerate(method.chains):
        names_ok(chain, f"{where}.chains[{j}]", 3)


def check_part(chk: Any, method: Any, ctx: Any, where: str) -> Any:
    """The registry's check (w2sray/methods/__init__.py): ``check`` on the context's ladder."""
    check(chk, method, ctx.ladder, where)
    return method


def paths(method: Any, ladder: list[str]) -> list[list[str]]:
    """The ladder paths a method trains: [weak, strong] pairs, or bootstrapping chains."""
    if method.chains:
        return [list(c) for c in method.chains]
    pairs = [[w, s] for i, w in enumerate(ladder) for s in ladder[i + 1 :]]
    if method.pairs:
        wanted = {tuple(p) for p in method.pairs}
        pairs = [p for p in pairs if tuple(p) in wanted]
    if method.bootstrap:  # through every rung in between; pairs with none have no chain
        routes = [ladder[ladder.index(w) : ladder.index(s) + 1] for w, s in pairs]
        return [p for p in routes if len(p) >= 3]
    return pairs
