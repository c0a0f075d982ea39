"""Validation against plain similarity: the transformations, the labelled set, the measures
(checked against scikit-learn and hand counts), `calibrate --data` and `iconicity validate`.

The real-data tests score a small labelled set made from five works of
../shared/data/references with the `classical` encoder, once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr
from shared_data import references_root
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from services.cli import main
from services.common.images import DecodedImage
from services.scorer import baselines, edits
from services.scorer.calibration import roc_curve
from services.scorer.encoders import Thresholds
from services.scorer.encoders.classical import ClassicalEncoder, load_classical_encoder
from services.scorer.references import Reference, load_catalog
from services.scorer.validation import (
    LABELS,
    PHASH,
    PREDICTED,
    SSIM,
    LabelledPair,
    PairScores,
    _baselines,
    as_image,
    confusion,
    global_cosine_names,
    labelled_pairs,
    metric_roc,
    partial_reuse,
    predict,
    read_labelled_set,
    tasks,
    validate,
    write_labelled_set,
)

SEED = 20261128
PER_CLASS = 2
PARTIAL_KS = (2, 8, 14)
EVERY_SIXTH_WORK = slice(None, None, 6)


# -- fixtures: five real works, their labelled set scored once ----------------------------------
@pytest.fixture(scope="module")
def entries():
    return load_catalog(references_root())[EVERY_SIXTH_WORK]


@pytest.fixture(scope="module")
def works(entries) -> list[Reference]:
    return [entry.load() for entry in entries]


@pytest.fixture(scope="module")
def encoder():
    return load_classical_encoder()


@pytest.fixture(scope="module")
def validation(works, encoder):
    return validate(encoder, encoder, works, seed=SEED, per_class=PER_CLASS, partial_ks=PARTIAL_KS)


@pytest.fixture(scope="module")
def references_folder(entries, tmp_path_factory) -> Path:
    """A catalog of the five works, their folders linked from the shared data."""
    root = tmp_path_factory.mktemp("references")
    for entry in entries:
        (root / entry.slug).symlink_to(entry.folder.resolve(), target_is_directory=True)
    (root / "catalog.json").write_text(json.dumps(
        [{"slug": e.slug, "title": e.title, "imagery": e.imagery.value, "images": list(e.image_names)} for e in entries]))
    return root


@pytest.fixture(scope="module")
def written_set(validation, references_folder, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("labelled")
    write_labelled_set(validation.pairs, folder, references_folder)
    return folder


def small(work: Reference, side: int = 320) -> np.ndarray:
    return edits.shrink(work.images[0].pixels, side)


def thumbnail(pixels: np.ndarray, side: int = 32) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BOX), np.float32)


# -- transformations --------------------------------------------------------------------------
TRANSFORMS = {**edits.TRANSFORMATIONS, "transformation": edits.transformation}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_a_seed_fixes_each_transformation(works, name):
    pixels = small(works[0])
    first, done = TRANSFORMS[name](pixels, np.random.default_rng(1))
    again, done_again = TRANSFORMS[name](pixels, np.random.default_rng(1))
    assert np.array_equal(first, again) and done == done_again
    json.dumps(done)  # recorded as the pair's edit
    others = [TRANSFORMS[name](pixels, np.random.default_rng(seed))[0] for seed in range(2, 6)]
    assert any(other.shape != first.shape or not np.array_equal(other, first) for other in others)


def test_transformations_are_far_from_the_original_pixels_while_replicas_are_near(works):
    """Mean absolute difference of 32 x 32 thumbnails, on the 0-255 scale: a replica compared
    with the part of the work it was cropped from, a transformation with the whole work."""
    distances: dict[str, list[float]] = {"replica": [], **{name: [] for name in edits.TRANSFORMATIONS}}
    for work in works[:4]:
        pixels, rng = small(work), np.random.default_rng(SEED)
        for _ in range(2):
            copy, done = edits.replica(pixels, rng)
            top, left, height, width = done["crop_box"]
            distances["replica"].append(float(np.abs(thumbnail(copy) - thumbnail(pixels[top : top + height, left : left + width])).mean()))
            for name, transform in edits.TRANSFORMATIONS.items():
                distances[name].append(float(np.abs(thumbnail(transform(pixels, rng)[0]) - thumbnail(pixels)).mean()))
    replica = np.mean(distances["replica"])
    assert replica < 30
    for name in edits.TRANSFORMATIONS:
        assert np.mean(distances[name]) > 1.4 * replica, (name, np.mean(distances[name]), replica)


def test_transformations_keep_the_subject(works):
    pixels = small(works[1])
    # Mirrored and recomposed: undoing the shift and the mirror gives the work back.
    out, done = edits.mirrored_recomposition(pixels, np.random.default_rng(3))
    assert np.array_equal(np.roll(out, -done["shift"], axis=1)[:, ::-1], pixels)
    # Recoloured: light and shade stay where they were.
    for transform in (edits.flat_colour, edits.palette_texture):
        out, _ = transform(pixels, np.random.default_rng(3))
        luma = [thumbnail(np.asarray(Image.fromarray(p).convert("L").convert("RGB")))[..., 0].ravel() for p in (out, pixels)]
        assert np.corrcoef(*luma)[0, 1] > 0.6, transform.__name__
    out, done = edits.flat_colour(pixels, np.random.default_rng(3))
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= done["colours"] + 1  # the flat colours and the ink


# -- the labelled set ----------------------------------------------------------------------------
def test_the_set_has_the_classes_it_promises(validation, works):
    expected = {"replica": PER_CLASS * len(works), "partial": len(PARTIAL_KS) * len(works),
                "transformation": PER_CLASS * len(works), "unrelated": PER_CLASS * len(works)}
    assert validation.n_pairs == expected
    for pair in validation.pairs:
        if pair.label == "partial":
            assert pair.k in PARTIAL_KS and len(pair.reuse_cells) == pair.k
        if pair.label == "unrelated":
            assert pair.edit["other"] != pair.reference_id


def test_a_works_pairs_do_not_depend_on_the_other_works(works):
    """Each work has its own stream: its replicas and transformations come out the same with
    fewer works around."""
    def own(pairs):
        return [(p.label, p.image.pixels) for p in pairs if p.reference_id == works[0].reference_id and p.label in ("replica", "transformation")]

    alone = own(labelled_pairs(works[:2], seed=SEED, per_class=1, partial_ks=(8,)))
    together = own(labelled_pairs(works[:3], seed=SEED, per_class=1, partial_ks=(8,)))
    assert [label for label, _ in alone] == [label for label, _ in together]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(alone, together))


def test_a_labelled_set_round_trips(validation, written_set, references_folder):
    read = read_labelled_set(written_set)
    assert read.references == references_folder.resolve()
    assert len(read.pairs) == len(validation.pairs)
    for before, after in zip(validation.pairs, read.pairs):
        assert (after.reference_id, after.label, after.k, after.reuse_cells, after.source, after.edit) == (
            before.reference_id, before.label, before.k, before.reuse_cells, before.source, before.edit)
        assert np.array_equal(after.image.pixels, before.image.pixels)


def human_folder(tmp_path: Path, works: list[Reference], rows: list[str], header: str = "reference_id,image,label") -> Path:
    """What people make: images and a labels.csv naming them relative to itself."""
    (tmp_path / "shots").mkdir()
    Image.fromarray(small(works[0], 96)).save(tmp_path / "shots" / "copy.png")
    Image.fromarray(small(works[1], 96)).save(tmp_path / "shots" / "other.jpg")
    (tmp_path / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return tmp_path


def test_human_labels_are_read_with_their_images(tmp_path, works):
    a = works[0].reference_id
    folder = human_folder(tmp_path, works, [f"{a},shots/copy.png,replica", f"{a},shots/other.jpg,unrelated"])
    read = read_labelled_set(folder / "labels.csv")
    assert [(p.reference_id, p.label, p.k, p.source) for p in read.pairs] == [(a, "replica", None, "human"), (a, "unrelated", None, "human")]
    assert np.array_equal(read.pairs[0].image.pixels, small(works[0], 96))
    assert read.references is None  # neither set.json nor a references/ folder beside it


@pytest.mark.parametrize("rows, message", [
    (["w,shots/copy.png,replica,,", "w,shots/copy.png,copy,,"], r"labels.csv line 3: label 'copy' is not one of replica, partial"),
    (["w,shots/missing.png,replica,,"], r"labels.csv line 2: image 'shots/missing.png' not found"),
    (["w,shots/copy.png,partial,17,"], r"line 2: k must lie in \[0, 16\], got 17"),
    (["w,shots/copy.png,partial,2,0 0"], r"line 2: reuse cells must be distinct"),
    (["w,shots/copy.png,partial,two,"], r"line 2: invalid literal for int"),
    ([",shots/copy.png,replica,,"], r"line 2: empty reference_id"),
    ([], r"no labelled pairs"),
])
def test_bad_human_labels_say_what_was_wrong(tmp_path, works, rows, message):
    folder = human_folder(tmp_path, works, rows, header="reference_id,image,label,k,reuse_cells")
    with pytest.raises(ValueError, match=message):
        read_labelled_set(folder)


def test_a_labels_file_without_a_label_column_or_a_folder_without_one_is_refused(tmp_path):
    (tmp_path / "labels.csv").write_text("reference_id,image\nw,a.png\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) label"):
        read_labelled_set(tmp_path)
    with pytest.raises(ValueError, match="no labelled set at"):
        read_labelled_set(tmp_path / "nowhere")


def test_human_pairs_merge_into_a_validation_and_unknown_works_are_refused(tmp_path, works, encoder):
    a = works[0].reference_id
    folder = human_folder(tmp_path, works, [f"{a},shots/copy.png,replica", f"{a},shots/other.jpg,unrelated"])
    pairs = read_labelled_set(folder).pairs
    v = validate(encoder, encoder, works[:2], labelled=pairs, generate=False)
    assert v.n_pairs == {"replica": 1, "partial": 0, "transformation": 0, "unrelated": 1}
    assert v.provenance["sources"] == {"human": 2}
    # The unchanged work is recognized and its replica predicted; the other work is not.
    assert v.confusion.counts == [[1, 0, 0], [0, 0, 1]]
    stranger = LabelledPair("no_such_work", pairs[0].image, "replica")
    with pytest.raises(ValueError, match="pairs name works not among the 2 references: no_such_work"):
        validate(encoder, encoder, works[:2], labelled=[stranger], generate=False)


# -- the measures on real works ---------------------------------------------------------------
def test_the_baselines_are_the_baselines_modules_own_values(validation, works, encoder):
    """The validation's baselines are `services.scorer.baselines`' own values for (pair image,
    its work at web size), under the names the tasks use, one encoder per role."""
    web_size = {w.reference_id: edits.shrink(w.images[0].pixels, edits.REPLICA_MAX_SIDE) for w in works}
    pairs = [p for p in validation.pairs if p.reference_id in (works[0].reference_id, works[1].reference_id)]
    images, canonical = [p.image for p in pairs], [web_size[p.reference_id] for p in pairs]
    realization = ClassicalEncoder(None)  # an encoder of its own in each role
    names = global_cosine_names(encoder, realization)
    got = _baselines(encoder, realization, web_size, pairs)
    assert list(got) == [*names, PHASH, SSIM]
    assert np.array_equal(got[names[0]], baselines.global_cosines(encoder, images, canonical))
    assert np.array_equal(got[names[1]], baselines.global_cosines(realization, images, canonical))
    assert np.array_equal(got[PHASH], baselines.phash_distances(images, canonical).astype(float))
    assert np.array_equal(got[SSIM], baselines.ssims(images, canonical))


def test_a_composite_of_another_work_already_at_the_works_size_is_the_same(works):
    """The labelled set resizes each other work to a work's size once, not per composite."""
    own, other = small(works[0]), small(works[1], 200)
    at_own_size = edits.resize(other, *own.shape[:2])
    for k in (2, 8):
        made, cells = edits.composite(own, other, k, np.random.default_rng(k))
        again, same_cells = edits.composite(own, at_own_size, k, np.random.default_rng(k))
        assert np.array_equal(made, again) and cells == same_cells


def test_vr_separates_replicas_from_unrelated_works(validation):
    assert validation.tasks["replica vs unrelated"].metrics["VR"].auc >= 0.95
    assert validation.tasks["replica vs unrelated"].metrics["CRA"].auc >= 0.95


def test_partial_composites_vr_tracks_the_share_of_reused_cells(validation):
    means = [row["vr_mean"] for row in validation.partial]
    assert [row["k"] for row in validation.partial] == list(PARTIAL_KS)
    assert means == sorted(means) and means[0] < means[-1]
    assert [row["vr_expected"] for row in validation.partial] == [k / 16 for k in PARTIAL_KS]
    assert validation.partial_tracking["spearman"] > 0.8
    assert validation.partial_tracking["mean_abs_error"] < 0.15
    # The tracking figures, recomputed from the per-pair scores.
    scores = validation.scores
    composite = scores.labels == "partial"
    assert validation.partial_tracking["spearman"] == pytest.approx(spearmanr(scores.ks[composite], scores.vr[composite]).statistic, abs=1e-6)
    assert validation.partial_tracking["mean_abs_error"] == pytest.approx(np.abs(scores.vr[composite] - scores.ks[composite] / 16).mean(), abs=1e-6)


def test_every_auc_and_roc_curve_agrees_with_scikit_learn(validation):
    metrics = validation.scores.metrics()
    for name, task in validation.tasks.items():
        keep = np.isin(validation.scores.labels, task.positive + task.negative)
        truth = np.isin(validation.scores.labels[keep], task.positive)
        for metric, roc in task.metrics.items():
            score = metrics[metric][keep] * (1.0 if roc.direction == "higher" else -1.0)
            assert roc.auc == pytest.approx(roc_auc_score(truth, score), abs=1e-6), (name, metric)
            fpr, tpr, _ = sklearn_roc_curve(truth, score, drop_intermediate=False)
            np.testing.assert_allclose(roc.fpr, fpr, atol=1e-6)
            np.testing.assert_allclose(roc.tpr, tpr, atol=1e-6)


def test_directions_follow_the_method(validation):
    replica_vs_transformation = validation.tasks["replica vs transformation"].metrics
    assert replica_vs_transformation["CRT"].direction == "lower" and replica_vs_transformation["VI"].direction == "lower"
    assert validation.tasks["replica vs unrelated"].metrics[PHASH].direction == "lower"
    assert "CRT" not in validation.tasks["replica vs unrelated"].metrics
    # VI is 1 - VR read the other way: the same separation.
    for task in validation.tasks.values():
        assert task.metrics["VI"].auc == pytest.approx(task.metrics["VR"].auc)


def test_confusion_counts_each_pair_once_as_recognition_and_reuse_say(validation):
    c, scores = validation.confusion, validation.scores
    assert c.labels == list(LABELS) and c.predicted == list(PREDICTED)
    assert sum(map(sum, c.counts)) == len(validation.pairs)
    tau_reuse_vr = validation.provenance["replica_vr"]
    for row, label in zip(c.counts, c.labels):
        expected = {"replica": 0, "transformation": 0, "unrelated": 0}
        for recognized, vr, true in zip(scores.recognized, scores.vr, scores.labels):
            if true == label:
                expected["unrelated" if not recognized else "replica" if vr > tau_reuse_vr else "transformation"] += 1
        assert row == [expected[p] for p in PREDICTED], label
    # CRA is s_i > tau, the recognition threshold in use.
    assert np.array_equal(scores.recognized, scores.recognition_similarity > validation.thresholds.recognition_static)


def test_the_json_has_the_layout_the_report_reads(validation):
    document = json.loads(json.dumps(validation.to_json(), allow_nan=False))
    assert {"encoders", "thresholds", "seed", "n_pairs", "tasks", "confusion", "partial", "partial_tracking",
            "provenance"} <= set(document)
    assert document["encoders"] == {"recognition": "classical", "realization": "classical"}
    assert set(document["thresholds"]) == {"recognition_static", "recognition_dynamic", "reuse"}
    assert set(document["tasks"]) == {"replica vs unrelated", "replica vs transformation", "evoked vs unrelated"}
    assert document["tasks"]["evoked vs unrelated"]["positive"] == ["replica", "transformation"]
    for task in document["tasks"].values():
        for roc in task["metrics"].values():
            assert set(roc) == {"auc", "fpr", "tpr", "direction"} and len(roc["fpr"]) == len(roc["tpr"])
    assert set(document["partial"][0]) == {"k", "n", "vr_mean", "vr_expected"}
    assert set(document["partial_tracking"]) == {"mean_abs_error", "spearman"}


# -- the measures on hand-made scores -----------------------------------------------------------
def test_roc_curve_and_auc_by_hand():
    # Positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9 > 0.5, 0.9 > 0.1, 0.5 ~ 0.5, 0.5 > 0.1) = 3.5 / 4.
    fpr, tpr = roc_curve(np.array([0.9, 0.5]), np.array([0.5, 0.1]))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert np.trapz(tpr, fpr) == pytest.approx(0.875)
    lower = metric_roc(np.array([2.0, 30.0]), np.array([40.0, 30.0]), "lower")
    assert lower.auc == 0.875 and lower.direction == "lower"


def hand_scores(labels, recognized, vr, ks=None) -> PairScores:
    n = len(labels)
    return PairScores(np.array(labels), np.array(ks if ks is not None else [-1] * n), np.zeros(n),
                      np.array(recognized), np.array(vr, float), {PHASH: np.zeros(n)})


def test_prediction_and_confusion_by_hand():
    assert predict(np.array([False, True, True, True]), np.array([1.0, 0.5, 0.5625, 0.0])).tolist() == [
        "unrelated", "transformation", "replica", "transformation"]
    scores = hand_scores(["replica", "replica", "transformation", "unrelated"], [True, True, True, False], [0.9, 0.25, 0.1, 0.0])
    c = confusion(scores)
    assert c.labels == ["replica", "transformation", "unrelated"]
    assert c.counts == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert confusion(scores, replica_vr=0.2).counts[0] == [2, 0, 0]


def test_partial_tracking_by_hand_and_without_composites():
    scores = hand_scores(["partial"] * 4, [True] * 4, [0.25, 0.5, 0.5, 1.0], ks=[4, 8, 8, 16])
    rows, tracking = partial_reuse(scores)
    assert rows == [{"k": 4, "n": 1, "vr_mean": 0.25, "vr_expected": 0.25}, {"k": 8, "n": 2, "vr_mean": 0.5, "vr_expected": 0.5},
                    {"k": 16, "n": 1, "vr_mean": 1.0, "vr_expected": 1.0}]
    assert tracking == {"mean_abs_error": 0.0, "spearman": 1.0}
    assert partial_reuse(hand_scores(["replica"], [True], [1.0])) == ([], {"mean_abs_error": None, "spearman": None})


def test_a_task_without_one_side_is_left_out():
    scores = hand_scores(["replica", "transformation"], [True, True], [1.0, 0.0])
    assert list(tasks(scores)) == ["replica vs transformation"]


@pytest.mark.parametrize("make, message", [
    (lambda image: LabelledPair("w", image, "copy"), "label 'copy' is not one of"),
    (lambda image: LabelledPair("w", image, "partial", 3, (1, 2)), r"k = 3 but 2 reuse cells"),
    (lambda image: LabelledPair("w", image, "partial", 1, (16,)), r"distinct cells of \[0, 16\)"),
])
def test_impossible_pairs_say_what_was_wrong(make, message):
    with pytest.raises(ValueError, match=message):
        make(as_image(np.zeros((8, 8, 3), np.uint8), "x"))


def test_validation_needs_two_works_and_some_pairs(works, encoder):
    with pytest.raises(ValueError, match="at least two works"):
        labelled_pairs(works[:1])
    with pytest.raises(ValueError, match="no pairs to validate"):
        validate(encoder, encoder, works[:2], generate=False)


def test_given_thresholds_are_the_ones_used(works, encoder):
    image = DecodedImage("copy.png", small(works[0], 128), "test:copy")
    pairs = [LabelledPair(works[0].reference_id, image, "replica")]
    strict = validate(encoder, encoder, works[:2], labelled=pairs, generate=False, thresholds=Thresholds(0.999, 0.999, 0.999))
    assert strict.thresholds.reuse == 0.999
    assert strict.confusion.counts == [[0, 0, 1]]  # s_i < 0.999 at 128 px: not recognized


# -- the commands -----------------------------------------------------------------------------
def test_calibrate_on_a_labelled_set_writes_thresholds_and_curves(written_set, validation, works, tmp_path, capsys):
    out = tmp_path / "classical.json"
    assert main(["calibrate", "--encoder", "classical", "--data", str(written_set), "--out", str(out),
                 "--keep-background", "--quiet"]) == 0
    document = json.loads(out.read_text())
    assert all(0.0 < value < 1.0 for value in document["thresholds"].values())
    calibration = document["calibration"]
    # Positives and negatives, counted by hand from the labels.
    n, w = validation.n_pairs, len(works)
    assert calibration["recognition_static"]["positives"] == n["replica"] + n["transformation"] + w * sum(k >= 8 for k in PARTIAL_KS)
    assert calibration["recognition_static"]["negatives"] == n["unrelated"]
    assert calibration["reuse"]["positives"] == 16 * n["replica"] + w * sum(PARTIAL_KS)
    assert calibration["reuse"]["negatives"] == 16 * n["unrelated"] + w * sum(16 - k for k in PARTIAL_KS)
    assert calibration["provenance"]["labelled_set"]["source"] == str(written_set)
    curves = out.with_suffix(".png")
    with Image.open(curves) as png:
        assert png.format == "PNG" and png.width > 400 and png.height > 400
    printed = capsys.readouterr().out
    assert "criterion: max balanced accuracy" in printed and f"curves written to {curves}" in printed


@pytest.mark.parametrize("extra", [[], ["--references", "REFS", "--data", "DATA"]])
def test_calibrate_needs_exactly_one_source(extra, references_folder, written_set, tmp_path, capsys):
    argv = [arg.replace("REFS", str(references_folder)).replace("DATA", str(written_set)) for arg in extra]
    assert main(["calibrate", *argv, "--out", str(tmp_path / "x.json"), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == "iconicity: error: give exactly one of --references DIR (replicas of its works) or --data DIR (a labelled set)"
    assert not (tmp_path / "x.json").exists()


def test_calibrate_refuses_a_set_that_does_not_say_where_its_works_are(tmp_path, works, capsys):
    folder = human_folder(tmp_path, works, [f"{works[0].reference_id},shots/copy.png,replica"])
    assert main(["calibrate", "--data", str(folder), "--out", str(tmp_path / "x.json"), "--quiet"]) == 1
    assert "does not say where its works' images are" in capsys.readouterr().err


def test_the_validate_command_prints_its_table_and_writes_json(references_folder, tmp_path, capsys):
    out = tmp_path / "validation.json"
    assert main(["validate", "--references", str(references_folder), "--encoder", "classical", "--no-cache",
                 "--per-class", "1", "--partial-k", "8", "--seed", "3", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for text in ("replica vs unrelated", "replica vs transformation", "evoked vs unrelated", "VR", "CRT", "SSIM",
                 "pHash distance", "true \\ predicted", "Spearman(k, VR)"):
        assert text in printed, text
    document = json.loads(out.read_text())
    assert document["seed"] == 3 and document["n_pairs"] == {"replica": 5, "partial": 5, "transformation": 5, "unrelated": 5}
    assert sum(map(sum, document["confusion"]["counts"])) == 20


def test_the_validate_command_refuses_two_ways_of_naming_encoders(references_folder, capsys):
    assert main(["validate", "--references", str(references_folder), "--encoder", "classical",
                 "--recognition-encoder", "classical"]) == 1
    assert "give --encoder or --recognition-encoder/--realization-encoder, not both" in capsys.readouterr().err
