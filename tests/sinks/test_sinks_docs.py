"""docs/sinks.md cannot drift: config tables and examples are generated, every type and column documented."""

from __future__ import annotations

import re
from pathlib import Path

from exotrace.sinks import SINK_TYPES
from exotrace.sinks.config import render_docs
from exotrace.sinks.sentinel import COLUMNS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sinks.md"


def test_generated_blocks_are_current() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert render_docs(text) == text, "run: python -m exotrace.sinks docs/sinks.md"


def test_every_type_has_a_section_table_and_example() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for t in SINK_TYPES:
        assert f"\n## {t}\n" in text
        assert f"<!-- config-table: {t} -->" in text
        assert f"<!-- config-example: {t} -->" in text


def test_sentinel_table_and_dcr_match_the_columns() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for name, (kind, _) in COLUMNS.items():
        assert f"| `{name}` | {kind} |" in text
        assert f'{{"name": "{name}", "type": "{kind}"}}' in text
        assert re.search(rf"\b{name}={kind}\b", text), f"az table create misses {name}"
