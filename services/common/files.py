"""Files written whole or not at all, for every part that keeps results or caches on disk."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """Where iconicity keeps what it computes once (embeddings, validations, the MLflow store
    template, the harvester's indexes): $ICONICITY_CACHE, else ~/.cache/iconicity."""
    return Path(os.environ.get("ICONICITY_CACHE", Path.home() / ".cache" / "iconicity"))


def write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """`data` at `path` (its folder made if missing) by a temporary file in the same folder
    renamed over it: a reader, or a process killed meanwhile, never sees half a file, only
    the old one or the new one.

    >>> import tempfile; folder = tempfile.mkdtemp()
    >>> write_atomically(Path(folder) / "a" / "b.txt", b"whole").read_bytes()
    b'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


__all__ = ["cache_root", "write_atomically"]
