"""Remove secrets and tokens from text before it is logged, raised or stored."""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1[REDACTED]"),
    (re.compile(r"(?i)((?:client_secret|client_assertion|access_token|refresh_token|password|"
                r"id_token)[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]+"), r"\1[REDACTED]"),
    # credentials written into a URL: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s:]*:[^/?#@\s]*@"), r"\1[REDACTED]@"),
    # JWTs anywhere (three base64url parts, the first starting with eyJ).
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret value so :func:`redact` removes it verbatim wherever it appears."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: object) -> str:
    """Text with bearer tokens, JWTs, ``client_secret=...`` and registered secrets replaced."""
    s = str(text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in s:
            s = s.replace(secret, "[REDACTED]")
    for pattern, repl in _PATTERNS:
        s = pattern.sub(repl, s)
    return s
