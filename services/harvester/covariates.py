"""Covariates of a reference for the correlation analysis of METHOD.md ("What recognition
correlates with"): popularity (Wikidata sitelinks), creation year, textual uniqueness of
the title, and training-data frequency of the title in a local caption corpus.

- `covariate_row` / `covariate_rows`: one `CovariateRow` per reference.
- `TitleIndex`: titles keyed by their normalized form, to count the other works that share
  a title (`normalize_title`, `loose_title_key` give the rules), built from a catalog
  (`TitleIndex.from_records`) or from the Wikidata export (`TitleIndex.from_export_csv`).
- `count_title_captions`: how many captions of a corpus (.txt, .jsonl, .parquet files)
  contain each title, streamed in chunks over worker processes, each block of captions
  scanned for all titles at once in one Aho-Corasick pass (the `pyahocorasick` package, in
  the harvester extra).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import multiprocessing
import os
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.common.machine import usable_cpus
from services.harvester.cachefiles import digest, read_cached, write_cached
from services.harvester.records import ReferenceRecord, parse_year

# ---------------------------------------------------------------------------------------
# Textual uniqueness

# One leading article is dropped from a normalized title (English, French, German, Spanish,
# Italian, Dutch); "l" covers the elided "L'" once the apostrophe became a space.
LEADING_ARTICLES = frozenset("the a an le la les l un une der die das ein eine el los las il lo gli het een".split())
# Ignored by the loose ("near-identical") key, besides all single-character tokens.
LOOSE_IGNORED = frozenset(
    """
    the a an of and in on at with by for to from or
    le la les l un une de du des d et au aux en sur avec
    der die das ein eine dem den des und mit im am von vom zu zum zur
    el los las lo y con del il gli della delle dei degli di da het een van
    """.split()
)
_NON_ALNUM = re.compile(r"[^\w]+|_+")


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text  # NFKD leaves ASCII as it is, and no ASCII character is a combining mark
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _title_tokens(title: str) -> list[str]:
    return _NON_ALNUM.sub(" ", _strip_accents(title).casefold()).split()


def normalize_title(title: str) -> str:
    """A title's normal form: accents stripped, casefolded (so "ß" is "ss"), every run of
    punctuation, symbols or spaces made one space, and one leading article dropped when
    something follows it. Two titles are the *same* when their normal forms are equal.

    >>> normalize_title("The Starry Night"), normalize_title("  starry   NIGHT! ")
    ('starry night', 'starry night')
    >>> normalize_title("L'Absinthe"), normalize_title("Self-Portrait"), normalize_title("Pietà")
    ('absinthe', 'self portrait', 'pieta')
    """
    tokens = _title_tokens(title)
    if len(tokens) > 1 and tokens[0] in LEADING_ARTICLES:
        tokens = tokens[1:]
    return " ".join(tokens)


def loose_title_key(title: str) -> tuple[str, ...]:
    """The key under which titles are *near-identical*: the sorted tokens of the normal form
    without the small words of `LOOSE_IGNORED` and without single characters (the "s" of a
    possessive); the normal form's tokens when nothing else is left. So word order, articles
    and prepositions do not matter: "Portrait of a Man" ~ "Portrait of Man" ~ "Man, Portrait",
    "Woman's Head" ~ "Head of a Woman"; but "Starry Night Over the Rhône" is not "Starry Night".
    Same titles are always near-identical.

    >>> loose_title_key("Head of a Woman") == loose_title_key("Woman's Head")
    True
    >>> loose_title_key("The Starry Night") == loose_title_key("Starry Night over the Rhone")
    False
    """
    return _loose_key(normalize_title(title))


def _loose_key(normal: str) -> tuple[str, ...]:
    """`loose_title_key` of a title whose normal form is `normal`."""
    tokens = normal.split()
    kept = [t for t in tokens if len(t) > 1 and t not in LOOSE_IGNORED]
    return tuple(sorted(kept or tokens))


@dataclass(frozen=True)
class TitleMatches:
    """How many *other* works carry the same / a near-identical title (near includes same)."""

    same: int
    near: int


class TitleIndex:
    """Work ids keyed by normalized title and by loose key: counting a title's namesakes is
    two dict look-ups, however large the catalog.

    >>> index = TitleIndex([("Q1", "The Kiss"), ("Q2", "Kiss"), ("Q3", "The kiss!"), ("Q4", "Kiss, The")])
    >>> index.matches("The Kiss", exclude_id="Q1")
    TitleMatches(same=2, near=3)
    """

    def __init__(self, works: Iterable[tuple[str, str]], source: str = ""):
        self.source = source
        self._same: dict[str, dict[str, int]] = {}  # normal form -> work id -> titles
        self._near: dict[tuple[str, ...], dict[str, int]] = {}  # loose key -> work id -> titles
        self.size = 0
        for work_id, title in works:
            if not title or not title.strip():
                continue
            normal = normalize_title(title)
            same = self._same.setdefault(normal, {})
            same[work_id] = same.get(work_id, 0) + 1
            near = self._near.setdefault(_loose_key(normal), {})
            near[work_id] = near.get(work_id, 0) + 1
            self.size += 1

    @classmethod
    def from_records(cls, records: Iterable[ReferenceRecord], source: str = "catalog") -> TitleIndex:
        return cls(((r.id, r.title) for r in records), source=source)

    @classmethod
    def from_export_csv(
        cls,
        path: str | Path,
        *,
        title_column: str = "_title",
        id_column: str = "id",
        cache_dir: str | Path | None = None,
    ) -> TitleIndex:
        """The Wikidata paintings export (`artonwikidata_paintings.csv`: `id` is the QID,
        `_title` the English label), streamed row by row.

        With `cache_dir`, the index is also kept there as JSON, one file per export file and
        columns, and read back instead of normalizing every title again as long as the
        export's content (sha256), the columns and the normalization (this module's source,
        the Unicode version) are the same; otherwise it is computed and the file rewritten
        (`services.harvester.cachefiles`)."""
        path = Path(path)
        if cache_dir is None:
            with open(path, encoding="utf-8", newline="") as handle:
                return cls._from_csv(handle, path, title_column, id_column)
        data = path.read_bytes()
        try:
            key = digest(_EXPORT_INDEX_FORMAT, data, title_column, id_column, *_normalization_version())
        except OSError:  # this module's source cannot be read (a zipped install): nothing to key by
            return cls._from_csv(io.StringIO(data.decode("utf-8"), newline=""), path, title_column, id_column)
        entry = Path(cache_dir) / f"{digest(os.fsencode(path.resolve()), title_column, id_column)[:32]}.json"
        index = cls._from_cache(read_cached(entry), key, str(path))
        if index is None:
            index = cls._from_csv(io.StringIO(data.decode("utf-8"), newline=""), path, title_column, id_column)
            write_cached(entry, index._cache_body(key))
        return index

    @classmethod
    def _from_csv(cls, handle: Iterable[str], path: Path, title_column: str, id_column: str) -> TitleIndex:
        reader = csv.DictReader(handle)
        missing = {title_column, id_column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))} (columns: {reader.fieldnames})")
        return cls(((row[id_column], row[title_column]) for row in reader), source=str(path))

    @classmethod
    def _from_cache(cls, body: bytes | None, key: str, source: str) -> TitleIndex | None:
        """The index kept in `body` when it was kept under `key`; None otherwise."""
        if body is None:
            return None
        try:
            kept = json.loads(body)
            if kept["key"] != key:
                return None  # another export, or other normalization rules
            index = cls((), source=source)
            index._same = {normal: dict(ids) for normal, ids in kept["same"].items()}
            index._near = {tuple(near): dict(ids) for near, ids in kept["near"]}
            index.size = int(kept["size"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # damaged: computed again and rewritten
        return index

    def _cache_body(self, key: str) -> bytes:
        near = [[list(loose), ids] for loose, ids in self._near.items()]
        kept = {"key": key, "size": self.size, "same": self._same, "near": near}
        return json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def matches(self, title: str, *, exclude_id: str | None = None) -> TitleMatches:
        """Works of the index with the same and a near-identical title, the work `exclude_id`
        (the reference itself) not counted."""
        same = self._same.get(normalize_title(title), {})
        near = self._near.get(loose_title_key(title), {})
        return TitleMatches(
            same=sum(same.values()) - same.get(exclude_id, 0) if exclude_id else sum(same.values()),
            near=sum(near.values()) - near.get(exclude_id, 0) if exclude_id else sum(near.values()),
        )


_EXPORT_INDEX_FORMAT = "iconicity export title index 1"


def _normalization_version() -> tuple[bytes, str]:
    """What normal forms depend on besides the titles: this module's code (the rules) and
    the Unicode database of `unicodedata`, `str.casefold` and `re`'s `\\w`."""
    return Path(__file__).read_bytes(), f"unicode {unicodedata.unidata_version}, python {sys.version}"


# ---------------------------------------------------------------------------------------
# Covariate rows


@dataclass(frozen=True)
class CovariateRow:
    """The covariates of one reference. `None` where unknown or not computed: no export
    given, no caption corpus counted."""

    reference_id: str
    title: str
    sitelinks: int | None
    year: int | None
    same_title_catalog: int
    near_title_catalog: int
    same_title_export: int | None = None
    near_title_export: int | None = None
    caption_count: int | None = None  # captions that contain the title at least once

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def covariate_row(
    record: ReferenceRecord,
    *,
    catalog: TitleIndex | None = None,
    export: TitleIndex | None = None,
    caption_counts: dict[str, int] | CaptionCounts | None = None,
) -> CovariateRow:
    """The covariate row of one reference: sitelinks and year straight from the record (the
    year parsed from `inception` when `year` is not set), other works with the same or a
    near-identical title in the catalog and in the export (the reference itself, by id or
    QID, not counted), and its caption count by title.

    >>> record = ReferenceRecord("Q45585", "the_starry_night", "The Starry Night", sitelinks=70, inception="1889")
    >>> row = covariate_row(record, catalog=TitleIndex([("Q45585", "The Starry Night"), ("Q1", "Starry night")]))
    >>> row.sitelinks, row.year, row.same_title_catalog, row.near_title_catalog, row.same_title_export
    (70, 1889, 1, 1, None)
    """
    year = record.year if record.year is not None else parse_year(record.inception)
    if isinstance(caption_counts, CaptionCounts):
        caption_counts = caption_counts.counts
    in_catalog = catalog.matches(record.title, exclude_id=record.id) if catalog else TitleMatches(0, 0)
    in_export = export.matches(record.title, exclude_id=record.qid) if export else None
    return CovariateRow(
        reference_id=record.id,
        title=record.title,
        sitelinks=record.sitelinks,
        year=year,
        same_title_catalog=in_catalog.same,
        near_title_catalog=in_catalog.near,
        same_title_export=in_export.same if in_export else None,
        near_title_export=in_export.near if in_export else None,
        caption_count=caption_counts.get(record.title) if caption_counts is not None else None,
    )


def covariate_rows(
    records: Sequence[ReferenceRecord],
    *,
    export: TitleIndex | str | Path | None = None,
    caption_counts: dict[str, int] | CaptionCounts | None = None,
) -> list[CovariateRow]:
    """Covariate rows of a whole catalog; its title index is built from `records` itself,
    `export` is a `TitleIndex` or the path of the Wikidata CSV export."""
    if isinstance(export, (str, Path)):
        export = TitleIndex.from_export_csv(export)
    catalog = TitleIndex.from_records(records)
    return [covariate_row(r, catalog=catalog, export=export, caption_counts=caption_counts) for r in records]


# ---------------------------------------------------------------------------------------
# Training-data frequency: titles in a caption corpus

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
DEFAULT_BATCH_ROWS = 65_536
DEFAULT_BLOCK_CAPTIONS = 4096  # captions folded and scanned in one automaton pass
_QUOTES = ("’", "‘", "`")


def fold_caption(text: str) -> str:
    """What titles and captions are matched as: casefolded, curly apostrophes made straight,
    every run of white space one space. (Accents are kept: "Dejeuner" does not match
    "Déjeuner".)

    >>> fold_caption("The  Artist’s\\nGARDEN")
    "the artist's garden"
    """
    return _fold_block([text])


def _fold_block(captions: Iterable[str]) -> str:
    """`fold_caption` of each caption, joined by newlines (which no folded caption contains):
    built with str methods only, on the whole block at once where possible."""
    text = "\n".join(" ".join(c.split()) for c in captions)
    for quote in _QUOTES:
        if quote in text:
            text = text.replace(quote, "'")
    return text.casefold()


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


@dataclass(frozen=True)
class CaptionCounts:
    """Captions containing each title (a caption counts once per title, however often the
    title occurs in it), how many captions were read, and how many records had no caption
    (a .jsonl line that is not JSON or lacks the field, a null in a .parquet column)."""

    counts: dict[str, int]
    captions: int
    skipped: int = 0
    files: tuple[str, ...] = field(default_factory=tuple)


class _Matcher:
    """All titles in one Aho-Corasick automaton. A block of captions is folded and scanned in
    one pass (captions joined by newlines, which no folded title contains), overlapping
    matches included ("Starry Night" inside "The Starry Night"). A match counts only on word
    boundaries: the character before (after) it is not a letter, digit or "_" when the title
    starts (ends) with one, so "The Scream" does not match "The Screaming" while "Impression,
    Sunrise" and "Mr. and Mrs. Andrews" work."""

    def __init__(self, keys: Sequence[str]):
        import ahocorasick  # pyahocorasick, in the harvester extra

        self.automaton = ahocorasick.Automaton()
        for index, key in enumerate(keys):
            self.automaton.add_word(key, index)
        self.automaton.make_automaton()
        self.lengths = [len(key) for key in keys]
        self.word_start = [_is_word_char(key[0]) for key in keys]
        self.word_end = [_is_word_char(key[-1]) for key in keys]
        self.size = len(keys)

    def count(self, captions: Sequence[str]) -> Counter[int]:
        """For each title index, the number of `captions` that contain it."""
        if not captions or not self.size:
            return Counter()
        text = _fold_block(captions)
        ends = list(itertools.accumulate(len(line) + 1 for line in text.split("\n")))  # caption i ends before ends[i]
        last = len(text) - 1
        lengths, word_start, word_end = self.lengths, self.word_start, self.word_end
        hits: set[int] = set()  # caption * size + title, each pair once
        caption = 0
        for end, index in self.automaton.iter(text):  # matches come in order of their end
            start = end - lengths[index] + 1
            if word_start[index] and start > 0 and _is_word_char(text[start - 1]):
                continue
            if word_end[index] and end < last and _is_word_char(text[end + 1]):
                continue
            while ends[caption] <= end:
                caption += 1
            hits.add(caption * self.size + index)
        return Counter(pair % self.size for pair in hits)


_worker_matcher: _Matcher | None = None


def _init_worker(keys: Sequence[str]) -> None:
    global _worker_matcher
    _worker_matcher = _Matcher(keys)


@dataclass(frozen=True)
class _Task:
    path: str
    kind: str  # "txt" | "jsonl" | "parquet"
    start: int = 0  # byte range for txt/jsonl; row group index for parquet
    stop: int = 0
    field_name: str = "caption"
    batch_rows: int = DEFAULT_BATCH_ROWS
    block_captions: int = DEFAULT_BLOCK_CAPTIONS


def _line_captions(task: _Task) -> Iterator[str | None]:
    """The lines that start in [start, stop) of a text file, read a line at a time: a line
    belongs to the chunk its first byte is in."""
    with open(task.path, "rb") as handle:
        position = task.start
        if task.start > 0:
            handle.seek(task.start - 1)
            position = task.start - 1 + len(handle.readline())  # the end of a line begun before
        while position < task.stop:
            line = handle.readline()
            if not line:
                break
            position += len(line)
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if task.kind == "txt":
                yield text if text.strip() else None
                continue
            if not text.strip():
                continue  # blank lines between JSON records are no records
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                yield None
                continue
            value = record.get(task.field_name) if isinstance(record, dict) else None
            yield value if isinstance(value, str) else None


def _parquet_captions(task: _Task) -> Iterator[str | None]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(task.path)
    for batch in parquet.iter_batches(batch_size=task.batch_rows, row_groups=[task.start], columns=[task.field_name]):
        for value in batch.column(0).to_pylist():
            yield value if isinstance(value, str) else None


def _count_task(task: _Task, matcher: _Matcher | None = None) -> tuple[Counter[int], int, int]:
    matcher = matcher or _worker_matcher
    if matcher is None:  # pragma: no cover - the pool initializer sets it
        raise RuntimeError("caption counting worker started without titles")
    counts: Counter[int] = Counter()
    captions = skipped = 0
    block: list[str] = []
    # A blank .txt line is no caption at all; a .jsonl/.parquet record without one is skipped.
    source = _parquet_captions(task) if task.kind == "parquet" else _line_captions(task)
    for caption in source:
        if caption is None:
            if task.kind != "txt":
                skipped += 1
            continue
        captions += 1
        block.append(caption)
        if len(block) >= task.block_captions:
            counts.update(matcher.count(block))
            block = []
    counts.update(matcher.count(block))
    return counts, captions, skipped


def corpus_files(corpus: str | Path | Iterable[str | Path]) -> list[Path]:
    """The caption files of a corpus: files given, and the .txt/.jsonl/.parquet files under
    folders given (recursively, in sorted order)."""
    items = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in CORPUS_SUFFIXES:
                raise ValueError(f"{path}: caption files must end in {', '.join(CORPUS_SUFFIXES)}")
            files.append(path)
        else:
            raise FileNotFoundError(f"caption corpus {path} does not exist")
    if not files:
        raise ValueError(f"no caption files ({', '.join(CORPUS_SUFFIXES)}) in {[str(i) for i in items]}")
    return files


def _tasks(files: Sequence[Path], field_name: str, chunk_bytes: int, batch_rows: int, block: int) -> list[_Task]:
    tasks: list[_Task] = []
    for path in files:
        kind = path.suffix.lower().lstrip(".")
        if kind == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            if field_name not in parquet.schema_arrow.names:
                raise ValueError(f"{path}: no column {field_name!r} (columns: {parquet.schema_arrow.names})")
            tasks += [
                _Task(str(path), kind, g, g + 1, field_name, batch_rows, block) for g in range(parquet.num_row_groups)
            ]
        else:
            size = path.stat().st_size
            tasks += [
                _Task(str(path), kind, start, min(start + chunk_bytes, size), field_name, batch_rows, block)
                for start in range(0, size, chunk_bytes)
            ]
    return tasks


def _worker_count(workers: int | None) -> int:
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return workers
    return usable_cpus()


def count_title_captions(
    titles: Iterable[str],
    corpus: str | Path | Iterable[str | Path],
    *,
    caption_field: str = "caption",
    workers: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    block_captions: int = DEFAULT_BLOCK_CAPTIONS,
) -> CaptionCounts:
    """For each title, the number of captions in `corpus` that contain it (once per caption),
    case-insensitively and on word boundaries (`_Matcher`, `fold_caption`).

    `corpus`: files or folders of .txt (one caption per line; blank lines skipped), .jsonl
    (one JSON object per line, the caption under `caption_field`) and .parquet (the column
    `caption_field`). Nothing is loaded whole: text files are cut into byte ranges of
    `chunk_bytes` at line ends, parquet files into row groups read `batch_rows` at a time;
    each chunk is read a line or a batch at a time and scanned `block_captions` captions per
    automaton pass; the chunks are counted on `workers` processes (default: the CPUs this
    process may use; 1 counts in this process) and the counts summed. Workers are spawned,
    not forked (the caller may be a threaded server), so a script that calls this needs the
    `if __name__ == "__main__":` guard. Titles that differ only in case or spacing share
    their count.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "captions.txt")
    ...     _ = open(path, "w").write("The Scream by Munch\\nthe screaming man\\nTHE SCREAM, the scream\\n")
    ...     count_title_captions(["The Scream"], path, workers=1).counts
    {'The Scream': 2}
    """
    titles = list(dict.fromkeys(titles))
    keys = list(dict.fromkeys(fold_caption(t) for t in titles))
    if any(not k for k in keys):
        raise ValueError("a title to count is empty")
    if min(chunk_bytes, batch_rows, block_captions) < 1:
        raise ValueError(
            "chunk_bytes, batch_rows and block_captions must be positive, "
            f"got {chunk_bytes}, {batch_rows}, {block_captions}"
        )
    files = corpus_files(corpus)
    tasks = _tasks(files, caption_field, chunk_bytes, batch_rows, block_captions)
    totals: Counter[int] = Counter()
    captions = skipped = 0
    workers = min(_worker_count(workers), max(len(tasks), 1))
    if keys and tasks:
        if workers == 1:
            matcher = _Matcher(keys)
            results: Iterable[tuple[Counter[int], int, int]] = (_count_task(t, matcher) for t in tasks)
            for counts, n, s in results:
                totals.update(counts)
                captions, skipped = captions + n, skipped + s
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(keys,)) as pool:
                for counts, n, s in pool.map(_count_task, tasks):
                    totals.update(counts)
                    captions, skipped = captions + n, skipped + s
    index = {key: i for i, key in enumerate(keys)}
    return CaptionCounts(
        counts={t: totals.get(index[fold_caption(t)], 0) for t in titles},
        captions=captions,
        skipped=skipped,
        files=tuple(str(f) for f in files),
    )
