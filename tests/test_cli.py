"""The `iconicity` command as users and other tools call it: a subprocess, its output, its
exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from shared_data import references_root

CLI = [sys.executable, "-m", "services.cli"]
ROOT = Path(__file__).resolve().parents[1]


def iconicity(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--cache-dir", str(cache)], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Two 'generated' images: a half-size copy of the canonical Starry Night, and Mona Lisa."""
    root = references_root()
    folder = tmp_path_factory.mktemp("generated")
    starry = Image.open(root / "the_starry_night" / "1.jpg").convert("RGB")
    starry.resize((starry.width // 2, starry.height // 2)).save(folder / "copy.png")
    Image.open(root / "mona_lisa" / "1.jpg").convert("RGB").save(folder / "other.jpg")
    return folder


def test_score_json_contract(generated, tmp_path):
    reference = references_root() / "the_starry_night"
    result = iconicity("score", "--references", str(reference), "--images", str(generated), "--json",
                       "--out", str(tmp_path / "scores.parquet"), cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"cra", "vr", "vi", "crt", "crt_all_images", "n_images", "n_references_kept", "encoders", "thresholds", "images"} <= set(out)
    assert out["encoders"] == {"recognition": "classical", "realization": "classical"}  # no hub weights here
    assert set(out["thresholds"]) == {"recognition", "reuse"}
    assert out["n_images"] == 2 and out["n_references_kept"] == 1
    images = {i["file"]: i for i in out["images"]}
    assert set(images) == {"copy.png", "other.jpg"}
    for image in images.values():
        assert set(image) >= {"file", "recognition_similarity", "recognized", "vr", "vi", "reuse_map",
                              "crop_similarity_max", "crop_similarity_mean", "crop_similarity_p90"}
        assert np.array(image["reuse_map"]).shape == (4, 4)
        assert image["vi"] == pytest.approx(1 - image["vr"])
    assert images["copy.png"]["recognized"] and not images["other.jpg"]["recognized"]
    assert images["copy.png"]["vr"] > images["other.jpg"]["vr"]
    assert out["vr"] == pytest.approx(np.mean([i["vr"] for i in out["images"]]))
    assert out["cra"] == 0.5
    assert out["crt"] == pytest.approx(0.5 * images["copy.png"]["vi"])
    assert out["crt_all_images"] == pytest.approx(0.5 * out["vi"])

    table = pq.read_table(tmp_path / "scores.parquet").to_pylist()
    assert [row["file"] for row in table] == [i["file"] for i in out["images"]]
    assert table[0]["reference"] == "the_starry_night" and len(table[0]["reuse_map"]) == 16


def test_score_table_says_which_encoders(generated, tmp_path):
    reference = references_root() / "the_starry_night"
    result = iconicity("score", "--references", str(reference), "--images", str(generated), "--imagery", "dynamic",
                       cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recognition=classical" in result.stdout and "realization=classical" in result.stdout
    assert "copy.png" in result.stdout and "CRA=0.500" in result.stdout
    assert "(dynamic)" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--references", "/no/such/folder", "--images", "."], "no such folder: /no/such/folder"),
        (["--recognition-encoder", "nope"], "unknown encoder 'nope'"),
        (["--recognition-encoder", "clip-vit-b-16"], "encoder 'clip-vit-b-16' needs the weights 'openai/clip-vit-base-patch16'"),
        (["--reuse-threshold", "1.5"], r"reuse threshold must lie in (0, 1), got 1.5"),
    ],
)
def test_errors_are_one_line(generated, tmp_path, args, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    base = {"--references": str(references_root() / "mona_lisa"), "--images": str(generated)}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    result = iconicity("score", *[x for kv in base.items() for x in kv], cache=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iconicity: error: ") and message in lines[0], result.stderr


def test_corrupt_generated_image_is_named(tmp_path):
    folder = tmp_path / "generated"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    result = iconicity("score", "--references", str(references_root() / "mona_lisa"), "--images", str(folder), cache=tmp_path)
    assert result.returncode == 1
    assert "image 'broken.png' could not be decoded" in result.stderr


def test_help_lists_commands():
    result = subprocess.run([*CLI, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("score", "serve", "calibrate", "probe"):
        assert command in result.stdout


def test_only_the_command_given_is_imported():
    """`iconicity run` must not spend seconds importing what other commands need (torch,
    scipy) before it starts Triton; each command still gets its own arguments."""
    probe = ("import sys; from services.cli import build_parser, MODULE_COMMANDS; build_parser({command!r}); "
             "print(sorted(m for m in ('torch', 'scipy', 'prefect', 'mlflow') if m in sys.modules)); "
             "print(sorted(n for n, (_, module, *_) in MODULE_COMMANDS.items() if module in sys.modules))")
    for command, modules, commands in ((None, [], []), ("report", [], ["report"]), ("validate", ["scipy", "torch"], ["calibrate", "validate"])):  # validate uses calibrate's
        result = subprocess.run([sys.executable, "-c", probe.format(command=command)], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        heavy, imported = result.stdout.splitlines()
        assert heavy == str(modules) and imported == str(commands), (command, result.stdout)
    for command, option in (("run", "--no-validation"), ("validate", "--references"), ("report", "--tracking-uri")):
        result = subprocess.run([*CLI, command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and option in result.stdout, result.stderr
    listed = subprocess.run([*CLI, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    from services.cli import MODULE_COMMANDS

    assert all(name in listed for name in MODULE_COMMANDS)
