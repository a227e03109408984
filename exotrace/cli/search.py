"""``exotrace search`` and ``exotrace stats``: read the archive."""

from __future__ import annotations

import csv
import io
import ipaddress
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import chain, islice
from typing import Any

import click
import orjson
from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from exotrace.cli._common import (
    OutConsole,
    TimeType,
    archive_option,
    err_console,
    handle_errors,
    printable,
    write_stdout,
)
from exotrace.model import STATUSES, canonical_status

__all__ = ["CSV_COLUMNS", "defuse_cell", "search", "stats"]

#: Columns of ``--format csv``, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "received", "status", "sender", "recipient", "subject", "direction", "message_id", "trace_id",
    "from_ip", "to_ip", "size", "tenant", "first_seen", "updated_at",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_STATUS_STYLE = {"Delivered": "green", "Expanded": "green", "Resolved": "green", "Failed": "red",
                 "FilteredAsSpam": "yellow", "Quarantined": "yellow", "GettingStatus": "dim", "Pending": "dim"}
_DIRECTIONS = ("inbound", "outbound", "internal", "external")
#: Terminals at least this wide also show the direction column.
WIDE_TABLE = 120


def _check_ip(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ipaddress.ip_address(value.strip())
        return value.strip()  # as typed: the search also tries the other spellings (ip_variants)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IPv4 or IPv6 address") from None


def _check_statuses(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for item in value:
        for part in item.split(","):
            if part.strip():
                status = canonical_status(part)
                if status not in STATUSES:  # event.action's filtered-as-spam, FILTERED_AS_SPAM
                    joined = canonical_status(part.replace("-", "").replace("_", ""))
                    status = joined if joined in STATUSES else status
                out.append(status)
    return tuple(out)


def defuse_cell(value: Any) -> str:
    """CSV cell text, with a leading ``'`` when it would start a spreadsheet formula (= + - @ TAB CR)."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _open_archive(path: str) -> Any:
    from exotrace.archive import Archive

    return Archive.open(path, create=False)


# -- search -------------------------------------------------------------------------------------


@click.command()
@archive_option
@click.option("--sender", metavar="ADDRESS", help="Sender: user@dom, *@dom, dom (with subdomains), or '<>'.")
@click.option("--recipient", metavar="ADDRESS", help="Recipient: user@dom, *@dom, or dom (with subdomains).")
@click.option("--status", "statuses", multiple=True, callback=_check_statuses, metavar="STATUS",
              help="Delivered, Failed, GettingStatus, filteredAsSpam, ... (any case; repeat or comma-separate).")
@click.option("--since", type=TimeType(), help="Received at or after: 2024-05-01, 2024-05-01T08:00Z, 2h, 7d.")
@click.option("--until", type=TimeType(end=True), help="Received before (a bare date includes that day).")
@click.option("--message-id", metavar="ID", help="Internet Message-ID (angle brackets optional).")
@click.option("--trace-id", metavar="GUID", help="MessageTraceId.")
@click.option("--subject", metavar="TEXT", help="Subject contains TEXT (case-insensitive).")
@click.option("--ip", callback=_check_ip, metavar="IP", help="Sending (FromIP) or receiving (ToIP) address.")
@click.option("--direction", type=click.Choice(_DIRECTIONS, case_sensitive=False),
              help="Mail flow direction (needs local domains at ingest).")
@click.option("--tenant", metavar="NAME", help="Tenant label (organization.name).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=0, max=1_000_000_000),
              help="At most N rows, newest first (0: no limit).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "ndjson", "csv"]), default="table",
              show_default=True, help="table for people; json (rows), ndjson (ECS documents), csv.")
@click.option("--history", "with_history", is_flag=True,
              help="Also show each row's status history (first seen, every change); table or json.")
@handle_errors
def search(archive_path: str, sender: str | None, recipient: str | None, statuses: tuple[str, ...],
           since: datetime | None, until: datetime | None, message_id: str | None, trace_id: str | None,
           subject: str | None, ip: str | None, direction: str | None, tenant: str | None, limit: int,
           fmt: str, with_history: bool) -> None:
    """Search the archive, newest first.

    All given filters must match. Addresses are case-insensitive: 'user@contoso.com' is one
    address, '*@contoso.com' any address at exactly that domain, 'contoso.com' that domain and its
    subdomains, other '*' patterns are globs, and --sender '<>' finds null-sender mail (NDRs).
    Times are UTC; --since is inclusive, --until exclusive.

    Formats: table (fits the terminal), json (array of rows with the ECS document under "doc"),
    ndjson (one ECS document per line), csv (fixed columns, safe to open in a spreadsheet).

    \b
    Example:
      exotrace search --recipient linus@contoso.com --since 2d
      exotrace search --sender '*@example.com' --status failed,filteredAsSpam
      exotrace search --subject invoice --since 2024-05-01 --until 2024-05-31 --format csv > may.csv
      exotrace search --trace-id cf7a249a-5edd-4350-130a-08da8f69e0f6 --format ndjson
      exotrace search --message-id '<abc@contoso.com>' --history
    """
    from exotrace.archive import SearchQuery

    if with_history and fmt not in ("table", "json"):
        raise click.UsageError("--history works with --format table or json (ndjson and csv hold one row per line)")
    _check_range(since, until)
    with _open_archive(archive_path) as arch:
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            present = set(arch.statuses())
            missing = [s for s in unknown if s not in present]
            if missing:
                raise click.BadParameter(
                    f"unknown status {missing[0]!r} (one of: {', '.join(STATUSES)})", param_hint="'--status'"
                )
        query = SearchQuery(
            sender=sender, recipient=recipient, status=statuses or None, since=since, until=until,
            message_id=message_id, trace_id=trace_id, subject=subject, ip=ip, direction=direction,
            tenant=tenant, limit=limit + 1 if limit else None,
        )
        found = arch.iter_search(query)
        try:
            try:
                first = list(islice(found, 1))  # a bad filter fails here, before anything is written
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            rows = _Rows(chain(first, found), limit, arch if with_history else None)
            if fmt == "table":
                _print_table(rows, limit=limit, with_history=with_history)
            else:
                _write_data(rows, fmt)
        finally:
            found.close()  # its statement ends now, so closing the archive closes the file
        if rows.more and fmt != "table":
            err_console.print(f"Note: showing the newest {limit} matches; more match (--limit 0 for all).")


class _Rows:
    """The rows to show: the first ``limit`` of ``rows`` (all with 0), with their ``history`` when ``arch``
    is given (read 500 rows at a time); ``more`` tells, once they are used, whether another row followed."""

    def __init__(self, rows: Iterator[dict[str, Any]], limit: int, arch: Any = None) -> None:
        self._rows = rows
        self._limit = limit
        self._arch = arch
        self.more = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows = self._first()
        if self._arch is None:
            yield from rows
            return
        while chunk := list(islice(rows, 500)):
            histories = self._arch.histories([row["seq"] for row in chunk])
            for row in chunk:
                row["history"] = histories[row["seq"]]
                yield row

    def _first(self) -> Iterator[dict[str, Any]]:
        for n, row in enumerate(self._rows):
            if self._limit and n == self._limit:
                self.more = True
                return
            yield row


def _write_data(rows: Iterable[dict[str, Any]], fmt: str) -> None:
    """json, ndjson or csv on stdout, as UTF-8 whatever the locale (a Windows console's cp1252 could not
    hold most subjects), written as the rows come."""
    buffer = getattr(sys.stdout, "buffer", None)
    sys.stdout.flush()
    out = io.TextIOWrapper(buffer, encoding="utf-8", errors="replace", newline="", write_through=True) \
        if buffer is not None else sys.stdout
    try:
        if fmt == "json":
            count = 0  # the layout of orjson's OPT_INDENT_2 for the whole array, one element at a time
            for row in rows:
                text = orjson.dumps(row, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n  ")
                out.write(("[\n  " if not count else ",\n  ") + text)
                count += 1
            out.write("\n]\n" if count else "[]\n")
        elif fmt == "ndjson":
            for row in rows:
                out.write(orjson.dumps(row["doc"]).decode() + "\n")
        else:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                writer.writerow([defuse_cell(row.get(col)) for col in CSV_COLUMNS])
        out.flush()
    finally:
        if out is not sys.stdout:
            out.detach()


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise click.BadParameter(f"{until.isoformat()} is not after --since {since.isoformat()}: nothing could "
                                 "match", param_hint="--until")


def _short_time(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else ""


def fit_widths(natural: list[int], total: int, shrink: list[tuple[int, int]], overhead: int) -> list[int]:
    """Column widths that fit ``total``: shrink columns in ``shrink`` order (index, minimum width)."""
    widths = list(natural)
    excess = sum(widths) + overhead - total
    for index, minimum in shrink:
        if excess <= 0:
            break
        cut = min(excess, max(0, widths[index] - minimum))
        widths[index] -= cut
        excess -= cut
    return widths


#: Table rows laid out together: the column widths come from the first this many rows.
TABLE_CHUNK = 1000


def _print_table(rows: _Rows, *, limit: int, with_history: bool = False) -> None:
    """The rows as a table that fits the terminal, printed a chunk at a time (``--limit 0`` of a million
    rows starts at once and holds one chunk); widths come from the first chunk."""
    console = OutConsole()
    it = iter(rows)
    chunk = list(islice(it, TABLE_CHUNK))
    if not chunk:
        console.print("No messages match.")
        return
    headers = ["Received (UTC)", "Status", "Direction", "Sender", "Recipient", "Subject"]
    wide = console.width >= WIDE_TABLE  # narrow terminal: the direction column goes first
    if not wide:
        headers.pop(2)
    widths: list[int] | None = None
    count = 0
    kept: list[dict[str, Any]] = []
    while chunk:
        cells = [_table_cells(r, wide) for r in chunk]
        if widths is None:
            sender, recipient, subject = len(headers) - 3, len(headers) - 2, len(headers) - 1
            natural = [max(cell_len(h), *(cell_len(c[i]) for c in cells)) for i, h in enumerate(headers)]
            # The subject gives way first, then sender and recipient.
            shrink = [(subject, 16), (sender, 16), (recipient, 16), (subject, 8), (sender, 10), (recipient, 10)]
            widths = fit_widths(natural, console.width, shrink, overhead=2 * (len(headers) - 1))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                      header_style="bold", show_header=count == 0)
        for header, width in zip(headers, widths, strict=True):
            table.add_column(header, width=width, no_wrap=True, overflow="ellipsis")
        for cell in cells:  # Text, never markup: subjects and addresses are attacker-controlled
            status = Text(cell[1], style=_STATUS_STYLE.get(cell[1], ""))
            table.add_row(Text(cell[0]), status, *(Text(c) for c in cell[2:]))
        console.print(table)
        count += len(chunk)
        if with_history:
            kept += chunk
        chunk = list(islice(it, TABLE_CHUNK))
    noun = "message" if count == 1 else "messages"
    footer = f"{count} {noun}, newest first"
    if rows.more:
        footer += f"; more match (showing the newest {limit}, --limit 0 for all)"
    console.print(footer, markup=False, soft_wrap=True)
    if with_history:
        _print_history(kept)


def _table_cells(r: dict[str, Any], wide: bool) -> list[str]:
    cells = [_short_time(r["received"]), printable(r["status"] or ""), r["direction"] or "",
             printable(r["sender"] or "<>"), printable(r["recipient"] or ""), printable(r["subject"] or "")]
    if not wide:
        cells.pop(2)
    return cells


def _print_history(rows: list[dict[str, Any]]) -> None:
    """Each row's status history under the table: when observed, what changed, from which source."""
    console = OutConsole()
    if rows:
        console.print("\nStatus history (observed time, change, when archived and from which source):",
                      markup=False, soft_wrap=True)
    for row in rows:
        console.print(Text("\n" + printable(f"{row['trace_id']}  {row['recipient']}"), style="bold"), soft_wrap=True)
        for event in row["history"]:
            if event["event"] == "first_seen":
                change = f"first seen   {event['new_status']}"
            else:
                change = f"changed      {event['old_status']} -> {event['new_status']}"
            when = _short_time(event["observed_at"]) or "(time unknown)"
            line = f"  {when}  {change}   recorded {_short_time(event['recorded_at'])} from {event['source'] or '?'}"
            console.print(Text(printable(line)), soft_wrap=True)


# -- stats --------------------------------------------------------------------------------------


@click.command()
@archive_option
@click.option("--since", type=TimeType(), help="Only rows received at or after: 2024-05-01, 2h, 7d.")
@click.option("--until", type=TimeType(end=True), help="Only rows received before this time.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1, max=1_000_000),
              help="How many top senders and recipient domains.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def stats(archive_path: str, since: datetime | None, until: datetime | None, top: int, fmt: str) -> None:
    """Counts by status, direction and day; top senders and recipient domains; rejects.

    Rows are counted by received time (UTC); the rejects count covers the whole archive.

    \b
    Example:
      exotrace stats
      exotrace stats --since 7d --format json | jq .by_status
    """
    _check_range(since, until)
    with _open_archive(archive_path) as arch:
        result = arch.stats(since=since, until=until, top=top)
    if fmt == "json":
        write_stdout(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return
    _print_stats(result)


def _count_table(title: str, label: str, items: list[tuple[str, int]], total: int) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(label, overflow="fold")
    table.add_column("Count", justify="right")
    table.add_column("%", justify="right")
    for name, count in items:
        table.add_row(Text(printable(str(name))), f"{count:,}", f"{100 * count / total:.1f}" if total else "")
    return table


def _print_stats(result: dict[str, Any]) -> None:
    console = OutConsole()
    total = result["total"]
    span = ""
    if result["first_received"]:
        span = f", received {_short_time(result['first_received'])} .. {_short_time(result['last_received'])}"
    window = []
    if result["since"]:
        window.append(f"since {_short_time(result['since'])}")
    if result["until"]:
        window.append(f"until {_short_time(result['until'])}")
    text = Text.assemble((f"{total:,}", "bold"), f" messages{span}" + (f" ({', '.join(window)})" if window else ""))
    console.print(text)
    if total:
        sections: list[tuple[str, str, list[tuple[str, int]]]] = [
            ("By status", "Status", list(result["by_status"].items())),
            ("By direction", "Direction", list(result["by_direction"].items())),
            ("By day (UTC)", "Day", list(result["by_day"].items())),
            ("Top senders", "Sender", [(s["sender"], s["count"]) for s in result["top_senders"]]),
            ("Top recipient domains", "Domain", [(d["domain"], d["count"]) for d in result["top_recipient_domains"]]),
        ]
        for title, label, items in sections:
            console.print()
            console.print(_count_table(title, label, items, total))
    console.print()
    console.print(f"Rejected records: {result['rejects']:,}")
