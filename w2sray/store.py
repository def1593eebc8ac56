"""Artifact store: one folder per run key under a local path or an s3:// / gs:// URI.

Layout::

    <root>/runs/<key>/config.json, metrics.json, *.parquet, DONE.json
    <root>/failures/<key>.json          a run's or search's last error (cleared on later success)
    <root>/sweeps/<name>.json           the manifest of a sweep: its ladder and run keys
    <root>/searches/<key>.json          an Optuna search's trials and chosen setting
    <root>/claims/<key>.json            a live claim on a run being trained (w2sray.claims)
    <root>/ray/                         Ray Tune / Train storage_path (checkpoints, trial state)

A run is complete only when DONE.json exists and every file it lists has the recorded sha256:
a truncated or half-written artifact is never read as a result. On a local disk the folder is
written under a temporary name and renamed into place (atomic); on object stores, where rename
is a copy, DONE.json is written last and is the commit point. Temporary names a killed writer
left behind (``.tmp-*``, ``.broken-*``) are removed by the next writer once older than
``TMP_GRACE_S``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import time
import uuid
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from w2sray.atomic import atomic_write_bytes

DONE = "DONE.json"
# A temporary file or folder older than this is a killed writer's leftover, not one in progress.
TMP_GRACE_S = float(os.environ.get("W2SRAY_TMP_GRACE_S", 3600))


# "OSError: ...", "ray.exceptions.RayTaskError(ValueError): ..." -- an exception line, which a
# traceback prints unindented (Ray's "\tpid: 123" detail lines are indented)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(\([\w.]+\))?: \S")


def error_line(error: object, limit: int = 300) -> str:
    """The one line of a recorded error worth showing: for a traceback, the exception line
    after its last frame (the last of chained tracebacks), after any message that precedes
    the traceback; otherwise the first line."""
    lines = [ln.rstrip() for ln in str(error or "").strip().splitlines() if ln.strip()]
    if not lines:
        return "(no error message)"
    frames = [
        i
        for i, ln in enumerate(lines)
        if ln.lstrip().startswith(("Traceback (most recent", 'File "'))
    ]
    if not frames:
        line = lines[0].strip()
    else:
        after = [ln for ln in lines[frames[-1] + 1 :] if not ln[0].isspace()]
        named = [ln for ln in after if _EXCEPTION_LINE.match(ln)]
        # the first unindented line after the frames; one without ": " is a bare exception
        exc = (named or after or lines[-1:])[0].strip()
        line = f"{lines[0].strip()} {exc}" if frames[0] > 0 else exc
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Store:
    """Read and write run artifacts under ``uri``."""

    def __init__(self, uri: str):
        self.uri = uri
        if "://" in uri and not uri.startswith("file://"):
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.local = False
        else:
            path = uri[len("file://") :] if uri.startswith("file://") else uri
            # Absolute, so Ray workers (whose working directory differs) write the same place.
            self.root = os.path.abspath(os.path.expanduser(path))
            self.uri = self.root
            self.fs = pafs.LocalFileSystem()
            self.local = True

    # -- paths -----------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def ray_storage_path(self, *parts: str) -> str:
        """Where Tune and Train keep their own state (a URI Ray understands), ``parts`` below it.

        The URI's query (``?endpoint_override=...&scheme=http`` for an S3-compatible server)
        is kept at the end, so Ray's pyarrow filesystem reaches the same endpoint as the store.
        """
        if self.local:
            return self.path("ray", *parts)
        scheme = self.uri.split("://", 1)[0]
        _, sep, query = self.uri.partition("?")
        return f"{scheme}://{self.path('ray', *parts)}{sep}{query}"

    # -- low-level io ------------------------------------------------------------------------
    def _write_bytes(self, path: str, data: bytes) -> None:
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        with self.fs.open_output_stream(path) as fh:
            fh.write(data)

    def _read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as fh:
            return fh.read()

    def _read_json_or_none(self, path: str) -> Any:
        return json.loads(self._read_bytes(path)) if self._exists(path) else None

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def _write_json_atomic(self, path: str, obj: Any) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, data)
            remove_stale(os.path.dirname(path))
        else:
            self._write_bytes(path, data)

    # -- runs ----------------------------------------------------------------------------------
    def run_dir(self, key: str) -> str:
        return self.path("runs", key)

    def is_complete(self, key: str) -> bool:
        """True when the run's DONE marker exists and every listed file matches its checksum."""
        done = posixpath.join(self.run_dir(key), DONE)
        try:
            manifest = json.loads(self._read_bytes(done))
            for name, digest in manifest["sha256"].items():
                data = self._read_bytes(posixpath.join(self.run_dir(key), name))
                if hashlib.sha256(data).hexdigest() != digest:
                    return False
        except (FileNotFoundError, OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return True

    def write_run(self, key: str, files: dict[str, bytes]) -> bool:
        """Write a run's artifacts atomically. Returns False if a complete copy already existed
        (another sweep sharing the store finished it first): the existing one is kept."""
        if self.is_complete(key):
            return False
        done = {
            "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
            "finished_at": time.time(),
        }
        payload = dict(files)
        payload[DONE] = json.dumps(done, indent=2, sort_keys=True).encode()
        final = self.run_dir(key)
        if self.local:
            runs = os.path.dirname(final)
            os.makedirs(runs, exist_ok=True)
            remove_stale(runs)
            tmp = os.path.join(runs, f".tmp-{key}-{uuid.uuid4().hex}")
            os.makedirs(tmp)
            for name, data in payload.items():
                if "/" in name:  # a file in a sub-folder (a pretrained model's model/...)
                    os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
                with open(os.path.join(tmp, name), "wb") as fh:
                    fh.write(data)
            if os.path.exists(final):  # an incomplete or corrupt leftover: move it aside
                if self.is_complete(key):
                    shutil.rmtree(tmp)
                    return False
                try:
                    os.rename(final, os.path.join(runs, f".broken-{key}-{uuid.uuid4().hex}"))
                except FileNotFoundError:  # a concurrent writer moved it aside first
                    pass
            try:
                os.rename(tmp, final)
            except OSError:  # lost a race with a concurrent writer of the same key
                shutil.rmtree(tmp, ignore_errors=True)
                return False
        else:
            # Object stores: the DONE marker, written last, is the commit point.
            self.fs.delete_dir_contents(final, missing_dir_ok=True)
            for name, data in files.items():
                self._write_bytes(posixpath.join(final, name), data)
            self._write_bytes(posixpath.join(final, DONE), payload[DONE])
        self.clear_failure(key)
        return True

    def local_folder(self, key: str, name: str, cache: str | None = None) -> str:
        """A local path to sub-folder ``name`` of complete run ``key`` (a pretrained model's
        ``model``): in place for a local store; from an object store, downloaded once into
        ``cache`` (default ~/.cache/w2sray/runs; run folders never change once complete)."""
        if self.local:
            return os.path.join(self.run_dir(key), name)
        from w2sray.digests import cache_dir

        target = os.path.join(cache or os.path.join(cache_dir(), "runs"), key, name)
        if os.path.isdir(target):
            return target
        src = posixpath.join(self.run_dir(key), name)
        sel = pafs.FileSelector(src, recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        for info in self.fs.get_file_info(sel):
            if info.type != pafs.FileType.File:
                continue
            dest = os.path.join(tmp, posixpath.relpath(info.path, src))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as fh:
                fh.write(self._read_bytes(info.path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another worker on this machine fetched it first
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def exists(self, key: str, name: str) -> bool:
        """Whether run ``key`` has a file ``name`` (complete or not)."""
        return self._exists(self.path("runs", key, name))

    def read_bytes(self, key: str, name: str) -> bytes:
        return self._read_bytes(posixpath.join(self.run_dir(key), name))

    def read_json(self, key: str, name: str) -> Any:
        return json.loads(self._read_bytes(posixpath.join(self.run_dir(key), name)))

    def read_parquet(self, key: str, name: str) -> pd.DataFrame:
        data = self._read_bytes(posixpath.join(self.run_dir(key), name))
        return pq.read_table(io.BytesIO(data)).to_pandas()

    def run_keys(self) -> list[str]:
        """Keys of folders under runs/ (complete or not; check with is_complete)."""
        sel = pafs.FileSelector(self.path("runs"), allow_not_found=True)
        return sorted(
            posixpath.basename(i.path)
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.Directory and not posixpath.basename(i.path).startswith(".")
        )

    # -- failures ------------------------------------------------------------------------------
    def record_failure(self, key: str, info: dict[str, Any]) -> None:
        self._write_json_atomic(self.path("failures", f"{key}.json"), info)

    def read_failure(self, key: str) -> dict[str, Any] | None:
        return self._read_json_or_none(self.path("failures", f"{key}.json"))

    def has_failure(self, key: str) -> bool:
        return self._exists(self.path("failures", f"{key}.json"))

    def clear_failure(self, key: str) -> None:
        path = self.path("failures", f"{key}.json")
        if self._exists(path):
            self.fs.delete_file(path)

    def failures(self) -> list[dict[str, Any]]:
        sel = pafs.FileSelector(self.path("failures"), allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(sel):
            if info.path.endswith(".json"):
                try:
                    out.append(json.loads(self._read_bytes(info.path)))
                except (OSError, ValueError):
                    continue
        return out

    # -- claims (w2sray.claims) ------------------------------------------------------------------
    def _claim_path(self, key: str) -> str:
        return self.path("claims", f"{key}.json")

    def read_claim(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._read_bytes(self._claim_path(key)))
        except (FileNotFoundError, ValueError):  # none (or released while read)
            return None
        except OSError:  # some filesystems report a missing object as a plain OSError
            if self._exists(self._claim_path(key)):
                raise
            return None

    def write_claim(self, key: str, claim: dict[str, Any]) -> None:
        self._write_json_atomic(self._claim_path(key), claim)

    def create_claim(self, key: str, claim: dict[str, Any]) -> bool:
        """Create the claim only if none exists (local disks: an exclusive hard link of a
        written temporary file, so the claim never exists half-written). False if one did."""
        if not self.local:
            raise NotImplementedError("create-if-absent is local only; see w2sray.claims")
        path = self._claim_path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "w") as fh:
            json.dump(claim, fh)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def claim_keys(self) -> list[str]:
        sel = pafs.FileSelector(self.path("claims"), allow_not_found=True)
        return sorted(
            posixpath.basename(i.path)[: -len(".json")]
            for i in self.fs.get_file_info(sel)
            if i.path.endswith(".json")
        )

    def delete_claim(self, key: str) -> None:
        try:
            self.fs.delete_file(self._claim_path(key))
        except FileNotFoundError:
            pass

    # -- sweep manifests -----------------------------------------------------------------------
    def write_manifest(self, name: str, manifest: dict[str, Any]) -> None:
        self._write_json_atomic(self.path("sweeps", f"{name}.json"), manifest)

    def write_search(self, key: str, record: dict[str, Any]) -> None:
        """An Optuna search's trials and chosen setting (searches/<key>.json), so a rerun uses
        the same choice instead of searching again."""
        self._write_json_atomic(self.path("searches", f"{key}.json"), record)
        self.clear_failure(key)

    def read_search(self, key: str) -> dict[str, Any] | None:
        return self._read_json_or_none(self.path("searches", f"{key}.json"))

    def manifests(self) -> list[dict[str, Any]]:
        sel = pafs.FileSelector(self.path("sweeps"), allow_not_found=True)
        out = []
        for info in sorted(self.fs.get_file_info(sel), key=lambda i: i.path):
            if info.path.endswith(".json"):
                out.append(json.loads(self._read_bytes(info.path)))
        return out


def remove_stale(folder: str, grace: float | None = None) -> list[str]:
    """Remove the ``.tmp-*`` / ``.broken-*`` entries of a local ``folder`` (killed writers'
    leftovers) last modified more than ``grace`` seconds ago; return the names removed."""
    grace = TMP_GRACE_S if grace is None else grace
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    cutoff = time.time() - grace
    for entry in entries:
        name = entry.name
        if ".tmp-" not in name and not name.startswith(".broken-"):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue  # perhaps still being written
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(name)
        except FileNotFoundError:  # another writer removed it first
            continue
    return removed


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """Serialise a frame to parquet in memory (artifacts are written as whole files)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
