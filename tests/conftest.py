"""Shared fixtures: paths to test data and to the reference material beside the project."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def geoip_dir() -> Path:
    return DATA / "geoip"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "peers" / "elastic").is_dir():
        pytest.skip(f"reference material not found at {SHARED} (CI places ../shared beside the project)")
    return SHARED
