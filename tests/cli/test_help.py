"""Every command has help that ends with examples, and is documented in the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from exotrace.cli import COMMANDS, cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_has_examples(name: str):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"{name} --help has no Example block"
    assert f"exotrace {name}" in README, f"{name} is not in the README"


def test_top_level_help_and_module_entry():
    assert CliRunner().invoke(cli, ["--help"]).exit_code == 0
    done = subprocess.run([sys.executable, "-m", "exotrace", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "exotrace" in done.stdout


def test_unknown_command_is_a_usage_error():
    assert CliRunner().invoke(cli, ["nope"]).exit_code == 2
