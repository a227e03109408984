"""Shared HTTP machinery: client factory (CA, proxy, TLS), backoff with jitter, Retry-After, redaction."""

from exotrace.net.client import make_async_client, make_requests_session, ssl_context
from exotrace.net.redact import redact, register_secret
from exotrace.net.retry import Backoff, parse_retry_after

__all__ = [
    "Backoff",
    "make_async_client",
    "make_requests_session",
    "parse_retry_after",
    "redact",
    "register_secret",
    "ssl_context",
]
