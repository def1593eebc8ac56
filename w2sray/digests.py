"""Content digests of local files and model folders, for run keys that follow content, not place.

A file's sha256 is cached by (absolute path, size, mtime_ns) in a small JSON file, so planning a
sweep over a multi-gigabyte local model does not re-read its weights every time; a file whose
size or mtime changed is read again. The cache lives in ``$W2SRAY_CACHE_DIR/digests.json``, else
``$XDG_CACHE_HOME/w2sray/digests.json``, else ``~/.cache/w2sray/digests.json``, and is written
atomically (write, then rename). An unreadable or unwritable cache only costs the re-reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

# The files of a model folder that determine what loads: weights, configs, tokenizer files and
# (trust_remote_code) code. READMEs, logs and hidden files (.git, .cache) are not hashed.
MODEL_FILE_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".msgpack",
    ".h5",
    ".gguf",
    ".json",
    ".txt",
    ".model",
    ".spm",
    ".tiktoken",
    ".vocab",
    ".py",
)


def cache_dir() -> str:
    """w2sray's local cache: $W2SRAY_CACHE_DIR, else $XDG_CACHE_HOME/w2sray, else
    ~/.cache/w2sray."""
    root = os.environ.get("W2SRAY_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "w2sray")
    return root


def cache_path() -> str:
    return os.path.join(cache_dir(), "digests.json")


def _load_cache() -> dict[str, Any]:
    try:
        with open(cache_path(), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict[str, Any]) -> None:
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Entries of files that no longer exist are dropped, so the cache does not grow forever.
        kept = {p: e for p, e in cache.items() if os.path.exists(p)}
        fd, tmp = tempfile.mkstemp(prefix=".digests-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(kept, fh, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _hash_file(path: str) -> str:
    """Read a whole file: the sha256 of its bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached(path: str, cache: dict[str, Any]) -> tuple[str, bool]:
    """(sha256 of file ``path``, whether the cache changed)."""
    path = os.path.abspath(path)
    st = os.stat(path)
    entry = cache.get(path)
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"], False
    sha = _hash_file(path)
    cache[path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    return sha, True


def file_digest(path: str) -> str:
    """The sha256 of a file's bytes (cached)."""
    cache = _load_cache()
    sha, changed = _cached(path, cache)
    if changed:
        _save_cache(cache)
    return sha


def model_files(folder: str) -> list[str]:
    """The hashed files of a model folder: relative posix paths, sorted (subfolders included,
    hidden files and folders skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.endswith(MODEL_FILE_SUFFIXES):
                continue
            rel = os.path.relpath(os.path.join(root, name), folder)
            found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def folder_digest(folder: str) -> str:
    """The sha256 of a model folder's content: the names and bytes of its weight, config,
    tokenizer and code files (see MODEL_FILE_SUFFIXES), not where the folder lies."""
    cache = _load_cache()
    changed = False
    digest = hashlib.sha256()
    for rel in model_files(folder):
        sha, new = _cached(os.path.join(folder, rel), cache)
        changed = changed or new
        digest.update(f"{rel}\0{sha}\n".encode())
    if changed:
        _save_cache(cache)
    return digest.hexdigest()
