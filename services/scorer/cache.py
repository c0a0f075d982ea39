"""Reference embeddings, cached in memory and on disk, keyed by image content and encoder.

A reference is scored against many generated images, by many models and perturbations;
its embeddings are computed once per encoder and reused from then on.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from services.common.files import cache_root


def default_cache_dir() -> Path:
    """The reference embeddings' folder under `cache_root()`."""
    return cache_root() / "embeddings"


class EmbeddingCache:
    """A bounded in-memory LRU in front of an optional folder of `.npy` files."""

    def __init__(self, directory: str | Path | None = None, max_entries: int = 4096) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_entries = max_entries
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        # The gRPC server scores on several threads at once.
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(encoder_identity: str, view: str, content_hash: str) -> str:
        return f"{encoder_identity}|{view}|{content_hash}"

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        path = self._path(key)
        if path is not None and path.exists():
            try:
                value = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                value = None  # a torn or foreign file: recompute and overwrite it
            if value is not None:
                self._remember(key, value)
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        with self._lock:
            self._remember(key, value)
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so that a concurrent reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            np.save(handle, value, allow_pickle=False)
        os.replace(handle.name, path)

    def _remember(self, key: str, value: np.ndarray) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def _path(self, key: str) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.directory / digest[:2] / f"{digest}.npy"
