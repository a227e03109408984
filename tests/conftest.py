"""Shared fixtures: paths to test data and to the reference material beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def geoip_dir() -> Path:
    return DATA / "geoip"


def missing_reference(reason: str) -> None:
    """Skip a test whose reference material is absent; in CI (env CI set), where it is always there, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "peers" / "elastic").is_dir():
        missing_reference(f"reference material not found at {SHARED} (CI places ../shared beside the project)")
    return SHARED
