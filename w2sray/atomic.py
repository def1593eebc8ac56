"""Atomic writes of local files: write a temp file beside the target, then rename it in.

Readers see either the old file or the complete new one, never a partial write. The temp name
contains ``.tmp-``, the mark :func:`w2sray.store.remove_stale` sweeps up when a killed writer
leaves one behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]

# Read once at import (os.umask can only be read by setting it, which is racy in threads).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp file in ``path``'s directory, then ``os.replace`` it in.

    The temp file is removed if ``write`` raises. Returns ``path`` as a :class:`Path`.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes 0600 files; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace ``path``'s content with ``data``."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically replace ``path``'s content with ``text`` encoded as UTF-8."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
