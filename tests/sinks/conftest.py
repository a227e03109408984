"""Fixtures for the sink tests: TLS material and a state folder (helpers live in ``sink_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sink_fakes import TlsFiles, make_tls


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
