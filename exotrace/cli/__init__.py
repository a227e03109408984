"""The ``exotrace`` command line: a thin click layer over the library.

Commands live one per module in this package and are loaded lazily, so ``exotrace --help`` stays fast
and a command's heavy imports (uvicorn, elasticsearch) load only when it runs.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from typing import Any

import click

from exotrace import __version__

#: command name -> "module:attribute" (a click.Command)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("exotrace.cli.demo:demo", "Run the simulator, collect it into ./exotrace.db, show searches."),
    "ingest": ("exotrace.cli.ingest:ingest", "Normalize message-trace files into the archive and/or NDJSON."),
    "search": ("exotrace.cli.search:search", "Search the archive."),
    "stats": ("exotrace.cli.search:stats", "Counts by status, direction and day; top senders and domains."),
    "collect": ("exotrace.cli.collect:collect", "Collect message traces from Microsoft 365 (or the simulator)."),
    "status": ("exotrace.cli.collect:status", "Coverage, lag, errors, quota and sink metrics per tenant."),
    "doctor": ("exotrace.cli.doctor:doctor", "Check credentials, permissions and reachability; explain fixes."),
    "init": ("exotrace.cli.collect:init", "Write a commented configuration template."),
    "simulate": ("exotrace.cli.simulate:simulate", "Serve a simulated tenant: Entra ID, Graph and RWS."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _unavailable(cmd_name, target[1])
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text + " (not available in this build)")
    def _cmd() -> None:
        raise click.UsageError(f"'{name}' is not available in this build")

    return _cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exotrace")
def cli() -> None:
    """exotrace: Exchange Online message trace, collected exactly once.

    \b
    Quick start:
      exotrace demo                      simulator in, archive out, searches shown
      exotrace ingest export.json        read PowerShell/Graph/RWS/CSV exports
      exotrace search --sender '*@contoso.com' --since 7d
    """


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point. Files exotrace creates (archive, NDJSON, rejects, spools, state) hold mail
    metadata, so they are private to the user running it: the umask loses its group and other bits."""
    os.umask(os.umask(0o077) | 0o077)
    # a terminal or file whose encoding cannot show a subject gets "?" for it, never a crash (data, the
    # JSON and CSV of search, stats and status, is written as UTF-8 bytes: write_stdout)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    try:
        code = cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="exotrace",
                        standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort as exc:  # Ctrl-C before a command's own handling (while it loads): exit 130 too
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
