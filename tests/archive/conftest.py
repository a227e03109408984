"""Fixtures for archive tests: a fresh archive file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exotrace.archive import Archive


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "exotrace.db"


@pytest.fixture
def arch(db_path: Path) -> Iterator[Archive]:
    with Archive.open(db_path) as archive:
        yield archive
