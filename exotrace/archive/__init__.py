"""The embedded SQLite archive: latest state per (MessageTraceId, RecipientAddress), history, rejects.

    from exotrace.archive import Archive, SearchQuery

    with Archive.open("exotrace.db") as arch:
        result = arch.upsert(documents, source="ingest")
        rows = arch.search(SearchQuery(recipient="*@contoso.com", since="7d"))

See ``docs/archive.md`` for the schema, the upsert rule and the search syntax.
"""

from __future__ import annotations

from exotrace.archive.db import DEFAULT_PATH, Archive, UpsertResult
from exotrace.archive.migrations import Migration
from exotrace.archive.query import SearchQuery

__all__ = ["DEFAULT_PATH", "Archive", "Migration", "SearchQuery", "UpsertResult"]
