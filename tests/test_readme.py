"""The README's two commands stay true: CI runs the README's test command, and the demo command exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(python3 -m venv[^\n]+)\n```", text)


def test_readme_opens_with_two_commands():
    main, tests = commands()[:2]
    assert main.endswith("exotrace demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands()[1] in ci


def _table_after(text: str, marker: str) -> list[str]:
    """First-column code spans of the Markdown table that follows ``marker``."""
    rest = text.split(marker, 1)[1]
    rows = []
    for line in rest.lstrip("\n").splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append(line)
    return [m for row in rows[2:] for m in re.findall(r"`([^`]+)`", re.split(r"(?<!\\)\|", row)[1])]


def test_readme_extra_fields_table_lists_exactly_the_code_extra_fields():
    from exotrace.normalize.ecs import EXTRA_FIELDS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted(_table_after(text, "**Extra fields**")) == sorted(EXTRA_FIELDS)


def test_readme_documents_output_schema_archive_and_ingest_options():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for heading in ("## Output schema", "## The archive", "### `exotrace ingest`", "### `exotrace search`",
                    "### `exotrace stats`"):
        assert heading in text
    schema = " ".join(_table_after(text, "## Output schema"))
    for field in ("@timestamp", "email.from.address", "email.to.address", "email.local_id", "email.direction",
                  "microsoft.online_message_trace.*", "event.outcome", "related.user"):
        assert field in schema
    from exotrace.cli.ingest import ingest

    options = " ".join(_table_after(text, "### `exotrace ingest`"))
    for param in ingest.params:
        for opt in param.opts:
            if opt.startswith("--") and opt != "--help":
                assert opt in options, f"{opt} of exotrace ingest is not in the README"
