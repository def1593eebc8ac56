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


def stored_contents(store: Store, kind: str) -> dict[str, dict[str, Any]]:
    """{key: recorded content} of the store's complete runs of ``kind`` (from config.json)."""
    out: dict[str, dict[str, Any]] = {}
    for key in store.run_keys():
        if not key.startswith(f"{kind}-") or not store.is_complete(key):
            continue
        try:
            stored = store.read_json(key, CONFIG).get("content")
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict):
            out[key] = stored
    return out


def closest_stored(
    stored: dict[str, dict[str, Any]], content: dict[str, Any]
) -> tuple[str, list] | None:
    """Of ``stored`` (``stored_contents``), the run whose content differs from ``content`` in
    the fewest settings, with those differences (None when there is none)."""
    best: tuple[str, list] | None = None
    for key, recorded in stored.items():
        diff = differences(recorded, content)
        if best is None or len(diff) < len(best[1]):
            best = (key, diff)
    return best


def explain(run: Any, store: Store, cache: dict[str, dict] | None = None) -> list[str]:
    """Lines saying what ``run`` (a runs.Run) is keyed by, whether it is stored, and if not,
    how the closest stored run of its kind differs. ``cache``: the stored contents by kind,
    shared across calls so several runs read (and checksum) the store once."""
    content = run.content()
    lines = [f"run {run.key} ({run.kind}, {run.model.name}, {run.variant}, seed {run.seed})"]
    lines.append("its key hashes:")
    lines += ["  " + ln for ln in json.dumps(content, indent=2, sort_keys=True).splitlines()]
    if store.is_complete(run.key):
        lines.append(f"status: done (stored under {store.run_dir(run.key)})")
        return lines
    lines.append("status: not in the store")
    cache = {} if cache is None else cache
    if run.kind not in cache:
        cache[run.kind] = stored_contents(store, run.kind)
    near = closest_stored(cache[run.kind], content)
    if near is None:
        lines.append(f"no complete {run.kind} run in the store to compare with")
        return lines
    key, diff = near
    lines.append(f"closest stored {run.kind} run: {key}, {len(diff)} setting(s) differ:")
    for setting, stored, planned in diff:
        lines.append(f"  {setting}: stored {stored!r} -> planned {planned!r}")
    return lines
