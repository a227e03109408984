"""One exception tree for exotrace.

    ExotraceError
    ├── TransientError          retry later (429, 5xx, timeouts); carries ``retry_after``
    │   └── ThrottledError
    └── PermanentError          retrying the same thing will not help
        ├── ConfigError         bad or missing configuration; the message says how to fix it
        ├── AuthError           token or permission problems
        ├── InputError          malformed input record (file, line, field)
        ├── SinkError           a destination rejected data for good
        └── ArchiveError        the SQLite archive cannot be used

The CLI maps them to exit codes: 1 some records rejected, 2 usage/config, 3 auth/permission,
4 delivery incomplete (data kept for retry), 70 internal error.
"""

from __future__ import annotations


class ExotraceError(Exception):
    """Root of every error exotrace raises on purpose."""

    exit_code = 70


class TransientError(ExotraceError):
    """A failure that may go away: retry with backoff, honouring ``retry_after`` seconds when set."""

    exit_code = 4

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ThrottledError(TransientError):
    """The service said 429: wait ``retry_after`` seconds."""


class PermanentError(ExotraceError):
    """A failure that will repeat until someone changes something."""


class ConfigError(PermanentError):
    """Configuration is wrong; ``key`` names the offending setting when known."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class AuthError(PermanentError):
    """Credentials, consent, role or service-principal problem."""

    exit_code = 3


class PrivilegeError(AuthError):
    """The credentials work but lack privileges the destination requires (a sink's health check)."""


class InputError(PermanentError):
    """A record or file that cannot be read; ``origin``/``line``/``field`` locate it."""

    exit_code = 1

    def __init__(self, message: str, *, origin: str = "", line: int = 0, field: str | None = None) -> None:
        super().__init__(message)
        self.origin = origin
        self.line = line
        self.field = field


class SinkError(PermanentError):
    """A destination refused data permanently."""

    exit_code = 4


class ArchiveError(PermanentError):
    """The archive file cannot be opened, migrated or written."""

    exit_code = 2
