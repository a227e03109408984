"""``exotrace ingest``: read message-trace exports into the archive and/or NDJSON."""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from exotrace.cli._common import (
    TimeType,
    archive_option,
    err_console,
    handle_errors,
    printable,
    setup_logging,
    silence_stdout,
)
from exotrace.errors import ConfigError
from exotrace.ingest import IngestStats, RejectWriter, naming, open_output
from exotrace.ingest import ingest as run_ingest
from exotrace.normalize import NormalizeOptions, Normalizer
from exotrace.sources.file import FORMATS
from exotrace.timeparse import format_ts

if TYPE_CHECKING:
    from exotrace.sinks import SyncSinkPipeline

log = logging.getLogger("exotrace.cli.ingest")

MAX_REJECT_LINES = 20
PROGRESS_MIN_BYTES = 1 << 20


def _check_domains(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from exotrace.normalize.domains import local_domain

    try:
        return tuple(local_domain(d) for d in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@archive_option
@click.option("--no-archive", is_flag=True, help="Do not write the archive (use with --out).")
@click.option("--out", "out", metavar="FILE|-", help="Also write ECS documents as NDJSON ('-' for stdout).")
@click.option("--local-domain", "local_domains", multiple=True, metavar="DOMAIN", callback=_check_domains,
              help="A domain of your organisation, for email.direction (repeatable).")
@click.option("--geoip-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with GeoLite2/GeoIP2 City and ASN .mmdb files.")
@click.option("--no-geoip", is_flag=True, help="Skip GeoIP/ASN enrichment.")
@click.option("--preserve-original", is_flag=True, help="Keep the raw record in event.original.")
@click.option("--tenant", help="Label written to organization.name.")
@click.option("--format", "fmt", default="auto", show_default=True, type=click.Choice(FORMATS),
              help="Input format: auto-detected, or forced (see docs/sources-file.md).")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False),
              help="Append rejected records (with file, line and reason) to this NDJSON file.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML config: [[sink]] tables receive the documents too.")
@click.option("--observed-at", "observed_at", type=TimeType(), metavar="TIME",
              help="When the export was taken (ISO or 2h, 7d): orders its statuses against others of the same "
                   "rows. Default: its EndDate, at most the file's modification time.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("-v", "--verbose", count=True, help="More logging (-v, -vv).")
@handle_errors
def ingest(paths: tuple[Path, ...], archive_path: str, no_archive: bool, out: str | None,
           local_domains: tuple[str, ...], geoip_dir: Path | None, no_geoip: bool, preserve_original: bool,
           tenant: str | None, fmt: str, rejects_path: str | None, config_path: Path | None,
           observed_at: datetime | None, quiet: bool, verbose: int) -> None:
    """Normalize message-trace files or folders into the archive and/or NDJSON.

    Reads Graph JSON, Reporting Web Service pages, PowerShell exports (NDJSON, JSON arrays, CSV, any
    encoding, gzip) and the admin center's CSV reports; the format is detected. Rows are upserted by
    (MessageTraceId, RecipientAddress): reading the same file twice changes nothing.

    Exit codes: 0 everything read, 1 some records rejected, 2 usage or config error (or an output that
    cannot be written), 4 a required sink has not acknowledged every document (kept for the next run).

    \b
    Example:
      exotrace ingest exports/ --local-domain contoso.com
      exotrace ingest trace.json --no-archive --out - | jq .email.subject
    """
    setup_logging(verbose)
    from exotrace.sources.file import read_paths, total_bytes

    if no_archive and out is None and config_path is None:
        raise ConfigError("--no-archive needs --out FILE|- (or --config with sinks): nothing would be written")
    for option, target in (("--out", out), ("--rejects", rejects_path)):
        if target and target != "-":
            _check_not_an_input(option, Path(target), paths)
    _check_outputs_apart(out, rejects_path, None if no_archive else archive_path)
    if observed_at is not None and observed_at > datetime.now(UTC) + timedelta(minutes=5):
        raise click.BadParameter(f"{observed_at.isoformat()} is in the future: no export was taken then (its "
                                 "statuses would outrank every later one)", param_hint="'--observed-at'")

    normalizer = Normalizer(
        NormalizeOptions(
            local_domains=local_domains,
            geoip_dir=geoip_dir,
            geoip=not no_geoip,
            preserve_original=preserve_original,
            tenant=tenant,
        )
    )
    shown = 0

    def on_reject(message: str) -> None:
        nonlocal shown
        shown += 1
        if shown <= MAX_REJECT_LINES:
            err_console.print(printable(message), markup=False, highlight=False, soft_wrap=True)

    with ExitStack() as stack:
        # Outputs the user named first: a bad --out or --rejects path fails before anything is written.
        stream, to_stdout = open_output(out)
        if stream is not None and not to_stdout:
            def close_out(stream: IO[bytes] = stream) -> None:
                with naming(stream, out):  # a failed last flush names the file
                    stream.close()

            stack.callback(close_out)
        rejects_file = RejectWriter(rejects_path) if rejects_path else None
        if rejects_file is not None:
            stack.callback(rejects_file.close)
        archive = None
        if not no_archive:
            from exotrace.archive import Archive

            archive = stack.enter_context(Archive.open(archive_path))
        deliver = _sink_delivery(config_path, stack, archive_path, archive)

        size = total_bytes(paths)
        show_progress = not quiet and err_console.is_terminal and size >= PROGRESS_MIN_BYTES
        if show_progress:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            progress = stack.enter_context(
                Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                         TimeRemainingColumn(), console=err_console, transient=True)
            )
            task = progress.add_task("Ingesting", total=size)
            items = read_paths(paths, format=fmt, on_progress=lambda n: progress.advance(task, n))
        else:
            items = read_paths(paths, format=fmt)
        stats = run_ingest(items, normalizer, archive=archive, out=stream, rejects_file=rejects_file,
                           deliver=deliver, on_reject=on_reject,
                           observed_at=format_ts(observed_at) if observed_at is not None else None)
        if stream is not None and not stats.out_closed:
            try:
                with naming(stream, out):
                    stream.flush()
            except BrokenPipeError:
                stats.out_closed = True
        if stats.out_closed and to_stdout:
            silence_stdout()
        delivered = deliver.finish() if deliver is not None else True

    if shown > MAX_REJECT_LINES:
        err_console.print(f"... and {shown - MAX_REJECT_LINES} more rejected records", highlight=False)
    if not quiet:
        _summary(stats, None if no_archive else archive_path, rejects_path)
    if not delivered:
        err_console.print("Error: some documents are not yet acknowledged by a required sink; they are kept in "
                          "the spool and sent on the next run.", highlight=False, soft_wrap=True)
        sys.exit(4)
    sys.exit(stats.exit_code)


def _check_not_an_input(option: str, target: Path, paths: tuple[Path, ...]) -> None:
    """An output that is one of the inputs, or inside an input folder, would be truncated or read back."""
    where = target.resolve()
    for given in paths:
        source = given.resolve()
        if where == source or (given.is_dir() and where.is_relative_to(source)):
            relation = "the input" if where == source else "inside the input folder"
            raise ConfigError(f"{option} {target} is {relation} {given}; write it elsewhere", key=option)


def _check_outputs_apart(out: str | None, rejects_path: str | None, archive_path: str | None) -> None:
    """--out, --rejects and the archive (with its -wal and -shm files) are three different files."""
    named = [(option, Path(target).resolve()) for option, target in (("--out", out), ("--rejects", rejects_path))
             if target and target != "-"]
    if archive_path:
        archive = Path(archive_path).resolve()
        for option, where in named:
            if where in (archive, Path(f"{archive}-wal"), Path(f"{archive}-shm")):
                raise ConfigError(f"{option} {where} is the archive; it would be overwritten: write it elsewhere",
                                  key=option)
    if len(named) == 2 and named[0][1] == named[1][1]:
        raise ConfigError(f"--out and --rejects are the same file {named[0][1]}; give each its own", key="--out")


def _summary(stats: IngestStats, archive_path: str | None, rejects_path: str | None) -> None:
    parts = [f"read {stats.read}"]
    if archive_path:
        parts += [f"new {stats.new}", f"updated {stats.updated}", f"unchanged {stats.unchanged}"]
    if stats.written:
        parts.append(f"written {stats.written}")
    parts.append(f"rejected {stats.rejected}")
    line = ", ".join(parts)
    where = f" -> {archive_path}" if archive_path else ""
    _note(f"Ingested: {line}{where}")
    if not stats.read:
        _note("Warning: no record was read (empty files, or folders without files: hidden files and folders, "
              "SQLite files and sink spools are skipped; -v names each skip).")
    if stats.out_closed:
        _note("The reader of --out went away; NDJSON output stopped there"
              + (", the archive got every row." if archive_path else "."))
    if stats.derived:
        rows = "1 row has" if stats.derived == 1 else f"{stats.derived} rows have"
        _note(f"{rows} no MessageTraceId: archived under a key derived from "
              "Message-ID (or sender and subject), recipient and received time (see docs/archive.md).")
    if stats.rejected:
        kept = f"the archive's rejects table{' and ' + rejects_path if rejects_path else ''}"
        if archive_path or rejects_path:
            _note(f"Rejected records are kept in {kept if archive_path else rejects_path}.")
        else:
            _note("Rejected records are only listed above (use --rejects FILE to keep them).")


def _note(text: str) -> None:
    """One line of plain text on stderr (paths and file names are never read as markup)."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _sink_delivery(config_path: Path | None, stack: ExitStack, archive_path: str,
                   archive: Any = None) -> _SinkDelivery | None:
    """Deliver to the [[sink]] tables of a config file, if one is given.

    Sink state (spool, tickets, metrics) lives in ``<archive>.spool``, as for ``collect``, so
    ``exotrace status`` shows the same sinks' metrics whichever command fed them. With an archive, the
    archive's sink cursor is the collector's too (see :class:`_SinkDelivery`).
    """
    if config_path is None:
        return None
    from exotrace.config import read_toml

    data = read_toml(config_path)
    tables = data.get("sink") or []
    if not tables:
        raise ConfigError(f"{config_path}: no [[sink]] table; add one (see docs/sinks.md)", key="sink")
    from exotrace.sinks import SyncSinkPipeline, load_sinks

    spool = Path(f"{archive_path}.spool")
    pipeline = SyncSinkPipeline(load_sinks(tables, config_path.resolve().parent), state_dir=spool)
    pipeline.start()
    stack.callback(pipeline.close)
    return _SinkDelivery(pipeline, archive)


class _SinkDelivery:
    """Submits each batch to the sinks and remembers the last ticket, to check delivery at the end.

    With an archive, delivery is at-least-once across runs, as the collector's: the archive keeps the change
    (``seq``) up to which every required sink acknowledged everything. A run first resubmits what came
    after it (committed by a run that stopped before its sinks acknowledged), and moves it to its own last
    change once its documents, and those another process archived in between, are acknowledged. Without
    it, a row committed but not delivered would never be sent again: the sinks get only new and updated
    rows.
    """

    def __init__(self, pipeline: SyncSinkPipeline, archive: Any = None) -> None:
        from exotrace.collect.shipper import Coverage, foreign_changes, read_cursor

        self.pipeline = pipeline
        self.archive = archive
        self.ticket: int | None = None
        self.replayed = 0
        self.covered = Coverage()  # the archive changes handed to the sinks by this run
        self.cursor = 0
        if archive is not None:
            from exotrace.state.ledger import MIGRATIONS

            archive.ensure_schema("collector", MIGRATIONS)
            self.cursor, upto = read_cursor(archive), archive.last_seq()
            for docs, _ in foreign_changes(archive, self.cursor, upto, Coverage()):  # all after the cursor
                self.ticket = pipeline.submit(docs)
                self.replayed += len(docs)
            self.covered.add(self.cursor, upto)
            if self.replayed:
                log.warning("Resubmitting %d archived changes the sinks had not acknowledged.", self.replayed)

    def __call__(self, docs: list, seqs: tuple[int, int] = (0, 0)) -> None:  # type: ignore[type-arg]
        """Submit the changed documents of one upsert, which wrote the changes ``seqs[0] < seq <= seqs[1]``."""
        self.covered.add(*seqs)
        if docs:
            self.ticket = self.pipeline.submit(docs)

    def finish(self, timeout: float = 60.0) -> bool:
        """Flush; True when every required sink acknowledged every document. The archive's cursor then
        moves to this run's last change, once the changes another process archived between this run's are
        delivered too (an ``ingest`` without sinks at the same time: they were never sent before)."""
        from exotrace.collect.shipper import foreign_changes, save_cursor

        if self.archive is not None:
            upto = self.covered.high()
            for docs, _ in foreign_changes(self.archive, self.cursor, upto, self.covered):
                self.ticket = self.pipeline.submit(docs)
                self.replayed += len(docs)
        self.pipeline.flush(timeout)
        done = self.ticket is None or self.pipeline.acked(self.ticket)
        if done and self.archive is not None and self.covered.high() > self.cursor:
            save_cursor(self.archive, self.covered.high())
        return done
