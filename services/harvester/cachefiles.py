"""What the harvester keeps between runs so that a harvest does not compute it again: files
under the project's cache folder, named by a digest of everything the value depends on (the
input's content, the code and library versions that compute it), each written whole or not
at all. A missing or damaged file is computed again; a folder that cannot be written leaves
the value uncached, never the harvest failed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from services.common import files


def cache_folder(name: str) -> Path:
    """`name` under the project's cache folder ($ICONICITY_CACHE, else ~/.cache/iconicity)."""
    return files.cache_root() / name


def digest(*parts: bytes | str | int) -> str:
    """The sha256 of `parts`, each length-prefixed (so ("ab", "c") is not ("a", "bc"))."""
    hashed = hashlib.sha256()
    for part in parts:
        chunk = part if isinstance(part, bytes) else str(part).encode("utf-8")
        hashed.update(len(chunk).to_bytes(8, "big"))
        hashed.update(chunk)
    return hashed.hexdigest()


def read_cached(path: Path) -> bytes | None:
    """The file's bytes; None when there is none (or it cannot be read)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def write_cached(path: Path, body: bytes) -> bool:
    """`body` at `path`, whole or not at all (`services.common.files.write_atomically`);
    False, leaving nothing behind, when the folder cannot be written (read-only, full)."""
    try:
        files.write_atomically(path, body)
    except OSError:
        return False
    return True
