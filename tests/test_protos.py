"""The wire contract: `buf lint` passes and the committed stubs are what protoc makes."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"


def buf() -> str:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    found = str(local) if local.exists() else shutil.which("buf")
    if found is None:
        pytest.fail("buf is not installed: run scripts/setup.sh (it installs the npm package @bufbuild/buf)")
    return found


def test_buf_lint():
    result = subprocess.run([buf(), "lint"], cwd=PROTOS, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_a_violation(tmp_path):
    """The lint really runs on our files: a copy with a badly named enum value fails."""
    shutil.copytree(PROTOS, tmp_path / "protos", ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))
    common = tmp_path / "protos" / "iconicity" / "v1" / "common.proto"
    common.write_text(common.read_text().replace("IMAGERY_STATIC = 1;", "STATIC = 1;"))
    result = subprocess.run([buf(), "lint"], cwd=tmp_path / "protos", capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "should be prefixed with \"IMAGERY_\"" in result.stdout


def test_committed_stubs_are_current(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_protos.py"), str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "protoc wrote nothing"
    for relative in generated:
        committed = PROTOS / relative
        assert committed.exists(), f"{relative} is not committed: run scripts/generate_protos.py"
        assert filecmp.cmp(committed, tmp_path / relative, shallow=False), (
            f"{relative} is stale: run scripts/generate_protos.py")
