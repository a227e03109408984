"""The collector's window ledger (tables in the archive file)."""

from exotrace.state.ledger import (
    TICK,
    Ledger,
    Window,
    fmt_time,
    parse_time,
)

__all__ = ["TICK", "Ledger", "Window", "fmt_time", "parse_time"]
