from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = Path(os.environ.get("EDGEFORMER_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not (OFFICIAL / "edgeformer_s.pt").is_file():
        pytest.fail(f"official fixtures not found in {OFFICIAL} (set EDGEFORMER_FIXTURES)")
    return OFFICIAL
