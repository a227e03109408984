"""Registered domain, top-level domain and subdomain from the public suffix list (ICANN section).

Uses the list bundled with the ``publicsuffixlist`` package: no network at run time. Like Elastic's
``registered_domain`` processor, private-section suffixes are ignored, so ``x.onmicrosoft.com`` has the
registered domain ``onmicrosoft.com``. ``domain`` and ``subdomain`` keep the input's case; the
registered domain and the top-level domain are lower-case.
"""

from __future__ import annotations

from functools import lru_cache

from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList(only_icann=True)


@lru_cache(maxsize=65536)
def domain_parts(domain: str) -> dict[str, str]:
    """ECS ``registered_domain``, ``top_level_domain`` and ``subdomain`` (when there is one) for a host."""
    lower = domain.lower().rstrip(".")
    if not lower or "." not in lower:
        return {}
    suffix = _PSL.publicsuffix(lower)
    registered = _PSL.privatesuffix(lower)
    parts: dict[str, str] = {}
    if registered:
        parts["registered_domain"] = registered
        if len(lower) > len(registered):
            parts["subdomain"] = domain[: len(lower) - len(registered) - 1]
    if suffix:
        parts["top_level_domain"] = suffix
    return parts


def local_domain(value: str) -> str:
    """A ``--local-domain``/``local_domains`` entry as compared: lower-case, without a leading ``@`` and a
    trailing dot. Raises ValueError for what is no domain name (empty, spaces, ``@`` inside, a ``*``
    wildcard: subdomains are matched one by one, as in Elastic)."""
    name = value.strip().lower().removeprefix("@").rstrip(".")
    if not name or any(c in name for c in " @/\\:,;*") or ".." in name:
        raise ValueError(f"{value!r} is not a domain name (write it as contoso.com)")
    return name
