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


_ROOT_BEFORE: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    _ROOT_BEFORE.update(p.name for p in ROOT.iterdir())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests write under their tmp_path only: a file left in the project folder (a default path taken
    relative to the working folder, say) fails the run."""
    left = sorted(p.name for p in ROOT.iterdir()  # pytest's own cache and bytecode are no test's doing
                  if p.name not in _ROOT_BEFORE and not p.name.startswith(".") and p.name != "__pycache__")
    if left:
        print(f"\ntests left files in the project folder: {', '.join(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
