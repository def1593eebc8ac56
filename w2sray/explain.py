"""Why a run has the key it has, and why it would retrain: ``w2sray plan SPEC --explain KEY``.

A run key hashes the run's resolved settings (w2sray/runs.py ``Run.content``). When a change to
a spec, a default or a version makes runs retrain, the question is which setting moved: this
prints what the planned run's key hashes and, when the store has no result under that key, the
stored run of the same kind closest to it (fewest differing settings, read from the
``content`` its config.json recorded) with every setting that differs.
"""

from __future__ import annotations

import json
from typing import Any

from w2sray.artifacts import CONFIG
from w2sray.store import Store


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {"a.b.c": leaf}; lists are leaves."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(setting, value in a, value in b) for every leaf that differs; ``None`` for a missing
    side is shown as "(absent)"."""
    fa, fb = flatten(a), flatten(b)
    missing = "(absent)"
    return [
        (k, fa.get(k, missing), fb.get(k, missing))
        for k in sorted({*fa, *fb})
        if fa.get(k, missing) != fb.get(k, missing)
    ]


def closest_stored(store: Store, content: dict[str, Any]) -> tuple[str, list] | None:
    """The complete stored run of the same kind whose recorded content differs from
    ``content`` in the fewest settings, with those differences (None when there is none)."""
    kind = content.get("kind")
    best: tuple[str, list] | None = None
    for key in store.run_keys():
        if not key.startswith(f"{kind}-") or not store.is_complete(key):
            continue
        try:
            stored = store.read_json(key, CONFIG).get("content")
        except (OSError, ValueError):
            continue
        if not isinstance(stored, dict):
            continue
        diff = differences(stored, content)
        if best is None or len(diff) < len(best[1]):
            best = (key, diff)
    return best


def explain(run: Any, store: Store) -> list[str]:
    """Lines saying what ``run`` (a runs.Run) is keyed by, whether it is stored, and if not,
    how the closest stored run of its kind differs."""
    content = run.content()
    lines = [f"run {run.key} ({run.kind}, {run.model.name}, {run.variant}, seed {run.seed})"]
    lines.append("its key hashes:")
    lines += ["  " + ln for ln in json.dumps(content, indent=2, sort_keys=True).splitlines()]
    if store.is_complete(run.key):
        lines.append(f"status: done (stored under {store.run_dir(run.key)})")
        return lines
    lines.append("status: not in the store")
    near = closest_stored(store, content)
    if near is None:
        lines.append(f"no complete {run.kind} run in the store to compare with")
        return lines
    key, diff = near
    lines.append(f"closest stored {run.kind} run: {key}, {len(diff)} setting(s) differ:")
    for setting, stored, planned in diff:
        lines.append(f"  {setting}: stored {stored!r} -> planned {planned!r}")
    return lines
