"""Helpers shared by CLI commands: error handling, consoles, common options."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from exotrace.errors import ExotraceError
from exotrace.timeparse import parse_time

F = TypeVar("F", bound=Callable[..., Any])

#: Messages and summaries go to stderr so stdout stays clean for data (`--out -`, `--format ndjson`).
err_console = Console(stderr=True, highlight=False)

class OutConsole(Console):
    """Standard output for tables: when the reader goes away (``| head``), stop quietly with exit code 0,
    as the JSON formats do (rich's default exits 1)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(highlight=False, **kwargs)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence_stdout()
        raise SystemExit(0)


#: C0 and C1 control characters (ESC starts terminal sequences: cursor moves, hidden text, clipboard writes),
#: and the bidirectional controls that reorder what follows (``invoice\u202egnp.exe`` shows as "exe.png")
_CONTROLS = {code: "\ufffd" for code in (*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F),
                                         *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)} \
    | {9: " ", 10: " ", 13: " "}


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: tabs and line breaks as spaces, other control characters and
    bidirectional controls as U+FFFD. Subjects and addresses come from whoever sent the mail."""
    return text.translate(_CONTROLS)


class TimeType(click.ParamType):
    """An ISO date/time or a relative time (``30m``, ``2h``, ``7d``, ``2w``), as aware UTC datetime."""

    name = "TIME"

    def __init__(self, *, end: bool = False) -> None:
        self.end = end

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(value, end=self.end)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _check_archive_path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The archive is a file: an empty name or SQLite's ``:memory:`` would keep nothing."""
    if not value or not value.strip() or value.strip() == ":memory:" or value.startswith("file:"):
        raise click.BadParameter(f"{value!r} is not a file name; give the archive's path (default exotrace.db)")
    return value


def fail(message: str, code: int) -> None:
    """Print ``Error: message`` on stderr and exit with ``code`` (the message is plain text, never markup)."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn exotrace errors into one ``Error: ...`` line and the documented exit code (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ExotraceError as exc:
            fail(str(exc), exc.exit_code)
        except BrokenPipeError:  # `exotrace search ... | head`: the reader has what it wanted
            silence_stdout()
            sys.exit(0)
        except OSError as exc:  # a file or folder the user named cannot be read or written
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}", 2)
        except KeyboardInterrupt:
            err_console.print("Interrupted.")
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: one line and the documented code, traceback with -vv
            from exotrace.net.redact import redact

            logging.getLogger("exotrace").debug("internal error", exc_info=True)
            fail(f"internal error ({type(exc).__name__}: {redact(exc)}); please report it (-vv shows the "
                 "traceback)", 70)

    return wrapper  # type: ignore[return-value]


def write_stdout(data: bytes) -> None:
    """Data (JSON) on stdout as UTF-8 bytes, whatever the locale's encoding (a latin-1 or cp1252 stdout
    would turn every other character into "?")."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text stream (tests' captured output)
        sys.stdout.write(data.decode("utf-8"))
        return
    sys.stdout.flush()
    buffer.write(data)
    buffer.flush()


def silence_stdout() -> None:
    """After the reader of stdout went away, point stdout at /dev/null so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file descriptor (tests' captured stdout)
        pass


def setup_logging(verbose: int = 0) -> None:
    """Warnings by default; -v for INFO, -vv for DEBUG; to stderr."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def archive_option(func: F) -> F:
    return click.option(
        "--archive",
        "archive_path",
        default="exotrace.db",
        show_default=True,
        type=click.Path(dir_okay=False),
        callback=_check_archive_path,
        envvar="EXOTRACE_ARCHIVE",
        help="SQLite archive file (env EXOTRACE_ARCHIVE).",
    )(func)
