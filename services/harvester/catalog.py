"""The catalog: references, their images, covariates and prompt variants, kept in one folder.

    DIR/catalog.sqlite                 references, versions, images, covariates, prompts
    DIR/images/ab/abcdef....jpg        image bytes, named by their SHA-256

Every harvest is a snapshot: it records its source, query and time, and the version of each
reference it saw. A reference's id is its QID where it has one, its slug otherwise, so a
second harvest of the same work merges into the same row instead of adding a duplicate.
Each reference is committed on its own (record, then images), so a harvest that stops half
way keeps everything it finished and a rerun only does the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.harvester.records import ImageRecord, ReferenceRecord

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    source TEXT NOT NULL,
    query TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS reference_versions (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id),
    reference_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, reference_id)
);
CREATE TABLE IF NOT EXISTS images (
    reference_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    media_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    PRIMARY KEY (reference_id, sha256)
);
CREATE INDEX IF NOT EXISTS images_by_source ON images (reference_id, source);
CREATE TABLE IF NOT EXISTS covariates (
    reference_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prompts (
    reference_id TEXT NOT NULL,
    perturbation TEXT NOT NULL,
    text TEXT NOT NULL,
    method TEXT NOT NULL,
    PRIMARY KEY (reference_id, perturbation)
);
CREATE TABLE IF NOT EXISTS failures (
    snapshot_id INTEGER NOT NULL,
    reference_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""

_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/tiff": ".tif",
               "image/gif": ".gif", "image/bmp": ".bmp"}


@dataclass(frozen=True)
class Snapshot:
    id: int
    started_at: float
    finished_at: float | None
    source: str
    query: str
    status: str  # running | complete | failed
    summary: dict[str, Any] | None


@dataclass(frozen=True)
class StoredPrompt:
    reference_id: str
    perturbation: str
    text: str
    method: str


class CatalogError(RuntimeError):
    """The catalog folder cannot be used as asked."""


class Catalog:
    """A catalog folder. Safe to share between threads (one connection, one lock)."""

    def __init__(self, root: str | Path, create: bool = True) -> None:
        self.root = Path(root)
        database = self.root / "catalog.sqlite"
        if not create and not database.exists():
            raise CatalogError(f"no catalog in {str(self.root)!r} (expected {database.name}; run `iconicity harvest --out DIR`)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._check_schema()

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise CatalogError(f"catalog {str(self.root)!r} has schema {row[0]}, this version reads {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- snapshots ---------------------------------------------------------------------
    def begin_snapshot(self, source: str, query: str) -> int:
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO snapshots (started_at, source, query, status) VALUES (?, ?, ?, 'running')",
                                (time.time(), source, query))
            return int(cursor.lastrowid)

    def finish_snapshot(self, snapshot_id: int, status: str, summary: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute("UPDATE snapshots SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                       (time.time(), status, json.dumps(summary, sort_keys=True), snapshot_id))

    def snapshots(self) -> list[Snapshot]:
        with self._lock:
            rows = self._db.execute("SELECT id, started_at, finished_at, source, query, status, summary "
                                    "FROM snapshots ORDER BY id").fetchall()
        return [Snapshot(*row[:6], json.loads(row[6]) if row[6] else None) for row in rows]

    def snapshot(self, snapshot_id: int) -> Snapshot:
        for snapshot in self.snapshots():
            if snapshot.id == snapshot_id:
                return snapshot
        raise KeyError(f"no harvest snapshot {snapshot_id} in {str(self.root)!r}")

    # -- references --------------------------------------------------------------------
    def put_reference(self, snapshot_id: int, record: ReferenceRecord) -> ReferenceRecord:
        """Records `record` as seen by this snapshot, merged into what earlier snapshots
        knew of the same work; returns the merged record."""
        with self._transaction() as db:
            previous = self._latest(db, record.id, snapshot_id)
            merged = previous.merged(record) if previous is not None else self._unique_slug(db, record)
            db.execute("INSERT OR REPLACE INTO reference_versions VALUES (?, ?, ?)",
                       (snapshot_id, record.id, json.dumps(merged.to_dict(), sort_keys=True)))
            return merged

    @staticmethod
    def _unique_slug(db: sqlite3.Connection, record: ReferenceRecord) -> ReferenceRecord:
        """Two works with one title would share a slug: the newcomer's gets its id appended."""
        taken = db.execute("SELECT 1 FROM reference_versions WHERE reference_id != ? AND "
                           "json_extract(data, '$.slug') = ? LIMIT 1", (record.id, record.slug)).fetchone()
        if taken is None:
            return record
        return ReferenceRecord.from_dict({**record.to_dict(), "slug": f"{record.slug}_{record.id.lower()}"})

    @staticmethod
    def _latest(db: sqlite3.Connection, reference_id: str, snapshot_id: int | None) -> ReferenceRecord | None:
        limit = snapshot_id if snapshot_id is not None else 2**62
        row = db.execute("SELECT data FROM reference_versions WHERE reference_id = ? AND snapshot_id <= ? "
                         "ORDER BY snapshot_id DESC LIMIT 1", (reference_id, limit)).fetchone()
        return ReferenceRecord.from_dict(json.loads(row[0])) if row else None

    def references(self, snapshot_id: int | None = None) -> list[ReferenceRecord]:
        """Every reference as of `snapshot_id` (default: the latest), ordered by id."""
        limit = snapshot_id if snapshot_id is not None else 2**62
        with self._lock:
            rows = self._db.execute(
                "SELECT v.data FROM reference_versions v JOIN ("
                "  SELECT reference_id, MAX(snapshot_id) AS latest FROM reference_versions"
                "  WHERE snapshot_id <= ? GROUP BY reference_id"
                ") l ON v.reference_id = l.reference_id AND v.snapshot_id = l.latest ORDER BY v.reference_id",
                (limit,)).fetchall()
        return [ReferenceRecord.from_dict(json.loads(row[0])) for row in rows]

    def reference(self, reference_id: str) -> ReferenceRecord:
        """The latest version of a reference, found by id (QID or slug) or by slug."""
        with self._lock:
            record = self._latest(self._db, reference_id, None)
        if record is None:
            for candidate in self.references():
                if candidate.slug == reference_id:
                    return candidate
            raise KeyError(f"no reference {reference_id!r} in the catalog")
        return record

    def snapshot_references(self, snapshot_id: int) -> list[str]:
        """Ids of the references a snapshot saw."""
        with self._lock:
            rows = self._db.execute("SELECT reference_id FROM reference_versions WHERE snapshot_id = ? ORDER BY reference_id",
                                    (snapshot_id,)).fetchall()
        return [row[0] for row in rows]

    # -- images ------------------------------------------------------------------------
    def image_path(self, image: ImageRecord) -> Path:
        return self.root / "images" / image.sha256[:2] / (image.sha256 + _EXTENSIONS.get(image.media_type, ".img"))

    def has_image_from(self, reference_id: str, source: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM images WHERE reference_id = ? AND source = ?",
                                   (reference_id, source)).fetchone()
        return row is not None

    def put_image(self, reference_id: str, position: int, data: bytes, source: str,
                  media_type: str, width: int, height: int) -> ImageRecord:
        """Stores image bytes by content (written atomically, once) and links them to the
        reference at `position`; the same bytes twice for one reference are one image."""
        image = ImageRecord(reference_id, position, hashlib.sha256(data).hexdigest(), source, media_type,
                            width, height, len(data))
        path = self.image_path(image)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(path.suffix + f".{threading.get_ident()}.partial")
            partial.write_bytes(data)
            partial.replace(path)
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (image.reference_id, image.position, image.sha256, image.source, image.media_type,
                        image.width, image.height, image.size_bytes))
        return image

    def images(self, reference_id: str) -> list[ImageRecord]:
        """A reference's images, canonical first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM images WHERE reference_id = ? ORDER BY position, sha256",
                                    (reference_id,)).fetchall()
        return [ImageRecord(*row) for row in rows]

    def read_image(self, image: ImageRecord) -> bytes:
        data = self.image_path(image).read_bytes()
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise CatalogError(f"image {self.image_path(image)} does not match its checksum {image.sha256[:12]}")
        return data

    # -- covariates, prompts, failures ---------------------------------------------------
    def put_covariates(self, rows: dict[str, dict[str, Any]]) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO covariates VALUES (?, ?)",
                           [(rid, json.dumps(row, sort_keys=True)) for rid, row in rows.items()])

    def covariates(self, reference_id: str | None = None) -> dict[str, dict[str, Any]]:
        query, args = "SELECT reference_id, data FROM covariates", ()
        if reference_id is not None:
            query, args = query + " WHERE reference_id = ?", (reference_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY reference_id", args).fetchall()
        return {rid: json.loads(data) for rid, data in rows}

    def put_prompts(self, prompts: Iterable[StoredPrompt]) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO prompts VALUES (?, ?, ?, ?)",
                           [(p.reference_id, p.perturbation, p.text, p.method) for p in prompts])

    def prompts(self, reference_id: str | None = None, perturbation: str | None = None) -> list[StoredPrompt]:
        clauses, args = [], []
        if reference_id is not None:
            clauses.append("reference_id = ?")
            args.append(reference_id)
        if perturbation is not None:
            clauses.append("perturbation = ?")
            args.append(perturbation)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM prompts{where} ORDER BY reference_id, perturbation", args).fetchall()
        return [StoredPrompt(*row) for row in rows]

    def record_failure(self, snapshot_id: int, reference_id: str, stage: str, reason: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO failures VALUES (?, ?, ?, ?)", (snapshot_id, reference_id, stage, reason))

    def failures(self, snapshot_id: int) -> list[tuple[str, str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT reference_id, stage, reason FROM failures WHERE snapshot_id = ?",
                                    (snapshot_id,)).fetchall()
        return [tuple(row) for row in rows]
