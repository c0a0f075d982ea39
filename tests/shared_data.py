"""Where the real data beside the project is, for tests that use it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data() -> Path:
    return Path(os.environ.get("ICONICITY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def references_root() -> Path:
    """`../shared/data/references`, or a skip that says it is missing."""
    root = shared_data() / "references"
    if not (root / "catalog.json").exists():
        pytest.skip(f"real reference images not found at {root} (set ICONICITY_SHARED_DATA)")
    return root
