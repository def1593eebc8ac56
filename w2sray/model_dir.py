"""Local copies of hub models: ``--model-dir DIR`` (or ``$W2SRAY_MODEL_DIR``) without editing
the spec.

A model whose source is a hub id ``org/name`` is read from ``DIR/org/name`` or, failing that,
``DIR/name`` (an id without org: ``DIR/name``) when that folder holds a config.json; other hub
ids stay hub ids, built-ins and local paths are left alone. The replacement happens on the spec,
before planning: the model becomes exactly a spec that named the folder as its ``source`` (so
its runs are keyed by the folder's content, like any local model), with three things kept from
the hub entry: its ``name`` (tables show the name the spec gave), the defaults-table training
values of the hub id (w2sray/models/defaults.py; frozen into the model's ``train:`` so a local
copy trains with the same settings), and nothing of ``revision`` (a folder has none: a pinned
revision is dropped and reported, the folder is used as it is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from w2sray.spec import SweepSpec

ENV_VAR = "W2SRAY_MODEL_DIR"


def local_copy(source: str, model_dir: str) -> str | None:
    """The folder under ``model_dir`` holding hub model ``source``, absolute, or None:
    ``DIR/org/name`` first, then ``DIR/name``; only a folder with a config.json counts."""
    from w2sray.models.registry import is_builtin, resolve_model_source

    looks_local = source.startswith(("/", "./", "../", "~")) or os.path.exists(source)
    if is_builtin(source) or looks_local or resolve_model_source(source) is not None:
        return None
    parts = source.split("/")
    for rel in (parts, parts[-1:]):
        folder = os.path.join(model_dir, *rel)
        if os.path.isfile(os.path.join(folder, "config.json")):
            return os.path.abspath(folder)
    return None


@dataclass(frozen=True)
class Resolution:
    name: str  # the model's name in the spec
    hub_id: str  # its source in the spec
    folder: str | None  # the local copy used, or None: loaded from the hub (or its cache)
    dropped_revision: str | None = None


def apply_model_dir(spec: SweepSpec, model_dir: str) -> tuple[SweepSpec, list[Resolution]]:
    """``spec`` with every hub model that has a local copy in ``model_dir`` pointed at it, and
    what happened to each hub model (see the module docstring). ValueError if ``model_dir`` is
    not a directory."""
    from w2sray.models.registry import is_builtin

    if not os.path.isdir(model_dir):
        raise ValueError(f"model directory {model_dir!r} does not exist")
    models, report = [], []
    for m in spec.models:
        folder = local_copy(m.source, model_dir)
        if folder is None:
            models.append(m)
            if not is_builtin(m.source) and not os.path.exists(os.path.expanduser(m.source)):
                report.append(Resolution(m.name, m.source, None))
            continue
        train = {**spec.table_train(m), **m.train}
        models.append(replace(m, source=folder, revision=None, train=train))
        report.append(Resolution(m.name, m.source, folder, m.revision))
    return replace(spec, models=tuple(models)), report


def model_dir_from(arg: str | None) -> tuple[str | None, str]:
    """The model directory to use and where it came from: the option, else the environment."""
    if arg:
        return arg, "--model-dir"
    env = os.environ.get(ENV_VAR)
    return (env, ENV_VAR) if env else (None, "")


def describe(report: list[Resolution], model_dir: str, origin: str) -> list[str]:
    """Lines for ``w2sray plan`` / ``run``: which models load from local folders."""
    lines = [f"model directory {model_dir} ({origin}):"]
    for r in report:
        if r.folder:
            note = f" (revision {r.dropped_revision} not checked)" if r.dropped_revision else ""
            lines.append(f"  {r.name}: {r.hub_id} -> local {r.folder}{note}")
        else:
            lines.append(f"  {r.name}: {r.hub_id} -> hub (no local copy in {model_dir})")
    if not report:
        lines.append("  (the spec names no hub model)")
    return lines
