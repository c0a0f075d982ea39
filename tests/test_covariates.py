"""Covariates of the harvester: title uniqueness against the catalog and the Wikidata export,
caption-corpus frequency, and the per-reference rows. Counts are checked against independent
computations written here in a different way (plain scans, per-title regular expressions)."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
import unicodedata

import pytest

from services.harvester.covariates import (
    CaptionCounts,
    TitleIndex,
    TitleMatches,
    count_title_captions,
    covariate_row,
    covariate_rows,
    loose_title_key,
    normalize_title,
)
from services.harvester.records import ReferenceRecord
from tests.shared_data import shared_data

needs_automaton = pytest.mark.skipif(
    importlib.util.find_spec("ahocorasick") is None, reason="the harvester extra (pyahocorasick) is not installed"
)

# --------------------------------------------------------------------------------------
# independent title normalization: lower-casing by character, accents dropped via the
# Unicode decomposition table, words as maximal runs of letters/digits


_ARTICLES = {"the", "a", "an", "le", "la", "les", "l", "un", "une", "der", "die", "das", "ein", "eine"}
_ARTICLES |= {"el", "los", "las", "il", "lo", "gli", "het", "een"}
_SMALL = {"the", "a", "an", "of", "and", "in", "on", "at", "with", "by", "for", "to", "from", "or"}
_SMALL |= {"le", "la", "les", "l", "un", "une", "de", "du", "des", "d", "et", "au", "aux", "en", "sur", "avec"}
_SMALL |= {"der", "die", "das", "ein", "eine", "dem", "den", "und", "mit", "im", "am", "von", "vom", "zu", "zum", "zur"}
_SMALL |= {"el", "los", "las", "lo", "y", "con", "del", "il", "gli", "della", "delle", "dei", "degli", "di", "da"}
_SMALL |= {"het", "een", "van"}


def reference_words(title: str) -> list[str]:
    words, current = [], ""
    for ch in title:
        base = unicodedata.normalize("NFKD", ch)
        base = "".join(c for c in base if unicodedata.category(c) != "Mn")
        for c in base.casefold():
            if c.isalnum():
                current += c
            elif current:
                words.append(current)
                current = ""
    if current:
        words.append(current)
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return words


def reference_same(a: str, b: str) -> bool:
    return reference_words(a) == reference_words(b)


def reference_near_key(title: str) -> list[str]:
    words = reference_words(title)
    kept = [w for w in words if len(w) > 1 and w not in _SMALL]
    return sorted(kept) if kept else sorted(words)


def reference_near(a: str, b: str) -> bool:
    return reference_near_key(a) == reference_near_key(b)


@pytest.mark.parametrize(
    "title, normal",
    [
        ("The Starry Night", "starry night"),
        ("  STARRY   night!! ", "starry night"),
        ("La Nuit étoilée", "nuit etoilee"),
        ("L'Absinthe", "absinthe"),
        ("Self-Portrait", "self portrait"),
        ("Self Portrait", "self portrait"),
        ("Pietà", "pieta"),
        ("Die Straße", "strasse"),
        ("The", "the"),  # an article alone stays
        ("A Bar at the Folies-Bergère", "bar at the folies bergere"),
        ("Composition II en rouge, bleu et jaune", "composition ii en rouge bleu et jaune"),
    ],
)
def test_normalize_title(title, normal):
    assert normalize_title(title) == normal
    assert reference_words(title) == normal.split()


@pytest.mark.parametrize(
    "a, b, near",
    [
        ("Portrait of a Man", "Portrait of Man", True),
        ("Portrait of a Man", "Man, Portrait", True),
        ("Head of a Woman", "Woman's Head", True),
        ("Madonna and Child", "Madonna with Child", True),
        ("The Starry Night", "Starry Night Over the Rhône", False),
        ("The Kiss", "The Kissing", False),
        ("Self-Portrait", "Self-Portrait with Bandaged Ear", False),
    ],
)
def test_loose_title_key(a, b, near):
    assert (loose_title_key(a) == loose_title_key(b)) is near
    assert reference_near(a, b) is near


def test_title_index_excludes_the_work_itself():
    index = TitleIndex(
        [("Q1", "The Kiss"), ("Q2", "Kiss"), ("Q3", "the KISS."), ("Q4", "Kiss, The"), ("Q5", "The Kissing")]
    )
    assert index.matches("The Kiss", exclude_id="Q1") == TitleMatches(same=2, near=3)
    assert index.matches("The Kiss") == TitleMatches(same=3, near=4)
    assert index.matches("The Kiss", exclude_id="Q99") == TitleMatches(same=3, near=4)
    assert index.matches("Nothing like it") == TitleMatches(0, 0)


# --------------------------------------------------------------------------------------
# the 9,336-painting Wikidata export


@pytest.fixture(scope="module")
def export_rows():
    path = shared_data() / "wikidata" / "artonwikidata_paintings.csv"
    if not path.exists():
        pytest.skip(f"Wikidata export not found at {path} (set ICONICITY_SHARED_DATA)")
    with open(path, encoding="utf-8", newline="") as handle:
        titles = [(row["id"], row["_title"]) for row in csv.DictReader(handle)]
    rows = [(qid, reference_words(title), reference_near_key(title)) for qid, title in titles]
    return path, rows, titles


@pytest.fixture(scope="module")
def export_index(export_rows):
    return TitleIndex.from_export_csv(export_rows[0])


@pytest.mark.parametrize(
    "title, qid",
    [
        ("Self-Portrait", None),
        ("The Kiss", "Q698487"),  # Klimt; Hayez, Munch and Toulouse-Lautrec share the title
        ("The Starry Night", "Q45585"),  # van Gogh; Munch's "Starry Night" is the namesake
        ("Starry Night", "Q18209775"),
        ("Starry Night Over the Rhone", "Q1464531"),
        ("The Last Supper", "Q128910"),
        ("Madonna and Child", None),
        ("Portrait of a Man", None),
        ("The Scream", "Q471379"),
    ],
)
def test_export_counts_match_a_plain_scan(export_rows, export_index, title, qid):
    _, rows, _ = export_rows
    words, near_key = reference_words(title), reference_near_key(title)
    same = sum(1 for work_id, other, _ in rows if work_id != qid and other == words)
    near = sum(1 for work_id, _, other in rows if work_id != qid and other == near_key)
    assert export_index.matches(title, exclude_id=qid) == TitleMatches(same, near)
    assert near >= same


def test_normal_forms_of_every_export_title(export_rows):
    _, rows, titles = export_rows
    for (_, words, near_key), (_, title) in zip(rows, titles, strict=True):
        assert normalize_title(title) == " ".join(words), title
        assert list(loose_title_key(title)) == near_key, title


def test_export_known_namesakes(export_index):
    assert export_index.size == 9336
    assert export_index.matches("The Kiss", exclude_id="Q698487").same == 3
    assert export_index.matches("The Starry Night", exclude_id="Q45585").same == 1
    assert export_index.matches("The Starry Night").same == 2  # without the exclusion it counts itself
    assert export_index.matches("Self-Portrait").same >= 51
    assert export_index.matches("The Scream", exclude_id="Q471379") == TitleMatches(0, 0)


def test_same_title_decoys_of_the_french_excerpt():
    path = shared_data() / "wikidata" / "ashquiz_tableaux_excerpt.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    paintings = json.loads(path.read_text(encoding="utf-8"))["paintings"]
    index = TitleIndex((p["id"], p["title"]) for p in paintings)
    by_id = {p["id"]: p["title"] for p in paintings}
    # "La Nuit étoilée" (van Gogh, twice: the Starry Night and over the Rhône) and Munch's "Nuit étoilée"
    assert index.matches(by_id["Q45585"], exclude_id="Q45585").same == 2
    assert index.matches(by_id["Q18209775"], exclude_id="Q18209775").same == 2
    # "Le Baiser": Klimt and Munch
    assert index.matches(by_id["Q698487"], exclude_id="Q698487").same == 1
    for qid, title in by_id.items():
        expected = sum(1 for other_id, other in by_id.items() if other_id != qid and reference_same(title, other))
        assert index.matches(title, exclude_id=qid).same == expected, title


# --------------------------------------------------------------------------------------
# the export's index kept between runs


def _state(index: TitleIndex):
    return index.size, index._same, index._near


def test_ascii_titles_skip_the_decomposition_unchanged():
    from services.harvester.covariates import _strip_accents

    for code in range(128):
        ch = chr(code)
        assert unicodedata.normalize("NFKD", ch) == ch and not unicodedata.combining(ch)
    assert _strip_accents("Pietà, Ｓｔａｒｒｙ") == "Pieta, Starry" and _strip_accents("Self-Portrait") == "Self-Portrait"


def test_cached_export_index_equals_an_uncached_one(export_rows, tmp_path, monkeypatch):
    path, _, titles = export_rows
    uncached = TitleIndex.from_export_csv(path)
    first = TitleIndex.from_export_csv(path, cache_dir=tmp_path)  # computed, then kept
    (kept,) = tmp_path.glob("*.json")

    import services.harvester.covariates as covariates

    def fail(title):
        raise AssertionError("a kept index normalizes no title of the export")

    monkeypatch.setattr(covariates, "normalize_title", fail)
    second = TitleIndex.from_export_csv(path, cache_dir=tmp_path)  # read back
    monkeypatch.undo()
    assert _state(first) == _state(second) == _state(uncached) and second.size == 9336
    assert second.source == uncached.source == str(path)
    sample = [title for _, title in titles[::97]] + ["The Kiss", "Self-Portrait", "Untitled", "Nothing like it at all"]
    for qid, title in [(None, t) for t in sample] + titles[::211]:
        assert second.matches(title, exclude_id=qid) == uncached.matches(title, exclude_id=qid), title
    assert list(tmp_path.glob("*.json")) == [kept] and not list(tmp_path.glob(".*.tmp"))


def _write_export(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "_title", "_depicts"])
        writer.writerows(rows)


def test_a_changed_export_gives_new_counts(tmp_path):
    export, cache = tmp_path / "export.csv", tmp_path / "cache"
    _write_export(export, [("Q1", "The Kiss", ""), ("Q2", "Kiss", ""), ("Q3", "Starry Night", "")])
    before = TitleIndex.from_export_csv(export, cache_dir=cache)
    assert before.matches("The Kiss", exclude_id="Q1") == TitleMatches(1, 1)
    _write_export(export, [("Q1", "The Kiss", ""), ("Q2", "Kiss", ""), ("Q4", "Le Kiss", ""), ("Q5", "Kiss, The", "")])
    after = TitleIndex.from_export_csv(export, cache_dir=cache)
    assert after.matches("The Kiss", exclude_id="Q1") == TitleMatches(2, 3)
    assert after.matches("Starry Night") == TitleMatches(0, 0) and after.size == 4
    assert _state(after) == _state(TitleIndex.from_export_csv(export))
    assert len(list(cache.glob("*.json"))) == 1  # the one file of this export, rewritten
    # Other columns of the same file are another index.
    by_depicts = TitleIndex.from_export_csv(export, title_column="_depicts", cache_dir=cache)
    assert by_depicts.size == 0 and len(list(cache.glob("*.json"))) == 2


def test_export_index_is_computed_again_for_other_rules_or_a_damaged_file(tmp_path, monkeypatch):
    import services.harvester.covariates as covariates

    export, cache = tmp_path / "export.csv", tmp_path / "cache"
    _write_export(export, [("Q1", "The Kiss", ""), ("Q2", "Kiss", "")])
    expected = _state(TitleIndex.from_export_csv(export))
    made = []
    real = TitleIndex._from_csv.__func__

    def counting(cls, *args):
        made.append(1)
        return real(cls, *args)

    monkeypatch.setattr(TitleIndex, "_from_csv", classmethod(counting))
    assert _state(TitleIndex.from_export_csv(export, cache_dir=cache)) == expected and len(made) == 1
    assert _state(TitleIndex.from_export_csv(export, cache_dir=cache)) == expected and len(made) == 1
    (kept,) = cache.glob("*.json")
    for damage in (kept.read_bytes()[:40], b"", b"[]", b'{"key": 1}', kept.read_bytes().replace(b'"size":2', b'"size":"x"')):
        kept.write_bytes(damage)
        assert _state(TitleIndex.from_export_csv(export, cache_dir=cache)) == expected
    assert len(made) == 6  # each damaged file computed again and rewritten
    assert _state(TitleIndex.from_export_csv(export, cache_dir=cache)) == expected and len(made) == 6
    source, unicode = covariates._normalization_version()
    monkeypatch.setattr(covariates, "_normalization_version", lambda: (source + b"\n# changed rules", unicode))
    assert _state(TitleIndex.from_export_csv(export, cache_dir=cache)) == expected and len(made) == 7


def test_export_index_without_a_writable_cache(tmp_path):
    export = tmp_path / "export.csv"
    _write_export(export, [("Q1", "The Kiss", ""), ("Q2", "Kiss", "")])
    (tmp_path / "not-a-folder").write_text("")
    index = TitleIndex.from_export_csv(export, cache_dir=tmp_path / "not-a-folder" / "cache")
    assert _state(index) == _state(TitleIndex.from_export_csv(export))
    with pytest.raises(ValueError, match="no column _title"):
        TitleIndex.from_export_csv(tmp_path / "not-a-folder", cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------------------
# covariate rows


def test_covariate_rows_of_a_catalog(export_index):
    records = [
        ReferenceRecord("Q45585", "the_starry_night", "The Starry Night", sitelinks=70, inception="1889"),
        ReferenceRecord("Q698487", "the_kiss", "The Kiss", sitelinks=60, year=1908, inception="1907"),
        ReferenceRecord("the_kiss_munch", "the_kiss_munch", "Kiss, The"),
        ReferenceRecord("Q471379", "the_scream", "The Scream", inception="c. 1893"),
    ]
    rows = covariate_rows(records, export=export_index, caption_counts={"The Kiss": 12})
    by_id = {row.reference_id: row for row in rows}
    assert [row.reference_id for row in rows] == [r.id for r in records]
    assert (by_id["Q45585"].sitelinks, by_id["Q45585"].year) == (70, 1889)
    assert by_id["Q698487"].year == 1908  # the record's year wins over its inception
    assert by_id["Q471379"].year == 1893
    assert (by_id["Q698487"].same_title_catalog, by_id["Q698487"].near_title_catalog) == (0, 1)
    assert (by_id["Q698487"].same_title_export, by_id["Q698487"].near_title_export) == (3, 3)
    # a slug id has no QID to exclude: every "The Kiss" of the export counts
    assert by_id["the_kiss_munch"].near_title_export == 4
    assert by_id["Q698487"].caption_count == 12 and by_id["Q45585"].caption_count is None
    assert by_id["Q45585"].to_dict()["same_title_export"] == 1


def test_covariate_row_without_indexes():
    row = covariate_row(ReferenceRecord("x", "x", "Untitled"))
    assert (row.sitelinks, row.year, row.same_title_catalog, row.same_title_export, row.caption_count) == (
        None,
        None,
        0,
        None,
        None,
    )


# --------------------------------------------------------------------------------------
# caption corpus

TITLES = [
    "The Scream",
    "The Kiss",
    "Starry Night",
    "The Starry Night",
    "Impression, Sunrise",
    "Mr. and Mrs. Andrews",
    "Whistler's Mother",
    "Las Meninas",
    "It",  # a short word: must not match inside words
    "Never Mentioned",
]

TRAPS = [
    "The Screaming man",
    "the screamer",
    "Kiss the sky",
    "the kissing couple",
    "a starry nightfall",
    "impression sunrise without the comma",
    "mr and mrs andrews without the dots",
    "whistlers mother",
    "meninas only",
    "item, its, bit, iterate",
    "my_the kiss_tag",
]
HITS = [
    "The Scream by Edvard Munch",
    "the scream",
    "THE SCREAM (1893), the scream again, The Scream!",
    "poster of the kiss by klimt",
    "'The Kiss'",
    "The Starry Night over the village",
    "van gogh starry night print",
    "Impression, Sunrise at le havre",
    "Gainsborough: Mr. and Mrs. Andrews.",
    "Whistler’s Mother rocking chair",
    "whistler's  mother",
    "Las Meninas, Velazquez",
    "it is raining",
    "take it",
    "the kiss and the scream side by side",
    "  the   scream  ",
]


def make_captions(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    fillers = ["a photo of", "oil painting,", "museum shop", "wall art", "canvas print", "high resolution", "cheap"]
    captions = []
    for _ in range(n):
        parts = rng.sample(fillers, 2)
        pick = rng.random()
        if pick < 0.4:
            parts.insert(rng.randrange(3), rng.choice(HITS))
        elif pick < 0.75:
            parts.insert(rng.randrange(3), rng.choice(TRAPS))
        captions.append(" ".join(parts))
    return captions


def naive_counts(titles: list[str], captions: list[str]) -> dict[str, int]:
    """One regular expression per title, each caption scanned once per title."""
    counts = {}
    for title in titles:
        body = re.escape(title).replace("\\ ", r"\s+").replace("'", "['’]")
        left = r"(?<!\w)" if re.match(r"\w", title) else ""
        right = r"(?!\w)" if re.search(r"\w$", title) else ""
        pattern = re.compile(left + body + right, re.IGNORECASE)
        counts[title] = sum(1 for c in captions if pattern.search(c))
    return counts


def write_txt(path, captions):
    path.write_text("".join(c + "\n" for c in captions), encoding="utf-8")


def write_jsonl(path, captions, field="text"):
    with open(path, "w", encoding="utf-8") as handle:
        for i, caption in enumerate(captions):
            handle.write(json.dumps({"id": i, field: caption, "url": f"http://x/{i}.jpg"}) + "\n")
        handle.write(json.dumps({"id": "no caption"}) + "\n")
        handle.write("this line is not json\n")
        handle.write(json.dumps({"id": "null", field: None}) + "\n")


def write_parquet(path, captions, field="text", row_group_size=37):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    values = [*captions, None]
    pq.write_table(pa.table({"key": list(range(len(values))), field: values}), path, row_group_size=row_group_size)


@pytest.fixture(scope="module")
def captions():
    return make_captions(400)


@needs_automaton
def test_known_traps_and_hits_by_hand(tmp_path):
    write_txt(tmp_path / "c.txt", [*TRAPS, *HITS])
    result = count_title_captions(TITLES, tmp_path / "c.txt", workers=1)
    assert result.captions == len(TRAPS) + len(HITS)
    assert result.counts == {
        "The Scream": 5,  # the twice-in-one-caption line counts once
        "The Kiss": 3,
        "Starry Night": 2,  # also inside "The Starry Night"
        "The Starry Night": 1,
        "Impression, Sunrise": 1,
        "Mr. and Mrs. Andrews": 1,
        "Whistler's Mother": 2,  # curly apostrophe and double space
        "Las Meninas": 1,
        "It": 2,
        "Never Mentioned": 0,
    }
    assert result.counts == naive_counts(TITLES, [*TRAPS, *HITS])


@needs_automaton
@pytest.mark.parametrize("chunk_bytes, block", [(1, 1), (97, 3), (1 << 20, 1000)])
def test_txt_chunks_lose_and_repeat_no_line(tmp_path, captions, chunk_bytes, block):
    write_txt(tmp_path / "c.txt", captions)
    result = count_title_captions(TITLES, tmp_path / "c.txt", workers=1, chunk_bytes=chunk_bytes, block_captions=block)
    assert result.captions == len(captions)
    assert result.counts == naive_counts(TITLES, captions)


@needs_automaton
def test_jsonl_with_a_configurable_field(tmp_path, captions):
    write_jsonl(tmp_path / "c.jsonl", captions, field="text")
    result = count_title_captions(TITLES, tmp_path / "c.jsonl", caption_field="text", workers=1, chunk_bytes=500)
    assert (result.captions, result.skipped) == (len(captions), 3)
    assert result.counts == naive_counts(TITLES, captions)


@needs_automaton
def test_parquet_row_groups_and_batches(tmp_path, captions):
    write_parquet(tmp_path / "c.parquet", captions, field="text")
    result = count_title_captions(TITLES, tmp_path / "c.parquet", caption_field="text", workers=1, batch_rows=10)
    assert (result.captions, result.skipped) == (len(captions), 1)
    assert result.counts == naive_counts(TITLES, captions)
    with pytest.raises(ValueError, match=r"no column 'caption'"):
        count_title_captions(TITLES, tmp_path / "c.parquet", workers=1)


@needs_automaton
def test_all_formats_on_several_workers(tmp_path, captions):
    corpus = tmp_path / "corpus"
    (corpus / "shard").mkdir(parents=True)
    parts = [captions[:150], captions[150:300], captions[300:]]
    write_txt(corpus / "a.txt", parts[0])
    write_jsonl(corpus / "shard" / "b.jsonl", parts[1], field="caption")
    write_parquet(corpus / "shard" / "c.parquet", parts[2], field="caption", row_group_size=20)
    (corpus / "notes.md").write_text("The Scream The Scream", encoding="utf-8")  # not a caption file
    result = count_title_captions(TITLES, corpus, workers=3, chunk_bytes=2048)
    assert isinstance(result, CaptionCounts)
    assert result.captions == len(captions)
    assert result.skipped == 4
    assert len(result.files) == 3
    assert result.counts == naive_counts(TITLES, captions)
    assert result.counts["The Scream"] > 0 and result.counts["Never Mentioned"] == 0


@needs_automaton
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"corpus": "missing.txt"}, FileNotFoundError, "does not exist"),
        ({"corpus": "notes.md"}, ValueError, "must end in"),
        ({"titles": ["  "]}, ValueError, "empty"),
        ({"workers": 0}, ValueError, "at least 1"),
        ({"chunk_bytes": 0}, ValueError, "positive"),
        ({"block_captions": 0}, ValueError, "positive"),
        ({"corpus": "empty"}, ValueError, "no caption files"),
    ],
)
def test_invalid_inputs(tmp_path, kwargs, error, match):
    (tmp_path / "notes.md").write_text("x", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    write_txt(tmp_path / "c.txt", ["the scream"])
    arguments = {"titles": ["The Scream"], "corpus": "c.txt", "workers": 1, **kwargs}
    arguments["corpus"] = tmp_path / arguments["corpus"]
    with pytest.raises(error, match=match):
        count_title_captions(**arguments)
