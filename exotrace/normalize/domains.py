"""Registered domain, top-level domain and subdomain from the public suffix list, as Elasticsearch's
``registered_domain`` processor finds them.

Uses the list bundled with the ``publicsuffixlist`` package: no network at run time. Like Elasticsearch
(``PublicSuffixMatcher.getDomainRoot`` with no domain type), rules of both sections apply, ICANN and
private (``1.www.global.ssl.fastly.net`` has the registered domain ``www.global.ssl.fastly.net``);
``onmicrosoft.com`` is in neither, so ``x.onmicrosoft.com`` has the registered domain ``onmicrosoft.com``.
The registered domain and the top-level domain are lower-case; ``subdomain`` is the part of the domain
as written before ``.<registered domain>``, so it is absent when the registered part is not written in
lower case. A domain whose last label is no known suffix (``contoso.local``, ``contoso.com>``) gets no
field; a domain that is itself a suffix (``co.uk``) only ``top_level_domain``, as written.
"""

from __future__ import annotations

from functools import lru_cache

from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList(accept_unknown=False)


@lru_cache(maxsize=65536)
def domain_parts(domain: str) -> dict[str, str]:
    """ECS ``registered_domain``, ``top_level_domain`` and ``subdomain`` (when there is one) for a host."""
    if not domain.strip() or domain.endswith("."):
        return {}
    if domain.startswith("."):
        return {"top_level_domain": domain} if _PSL.is_public(domain[1:].lower()) else {}
    registered = _PSL.privatesuffix(domain.lower())
    if registered is None:  # an unknown suffix, or the domain is itself a public suffix
        return {"top_level_domain": domain} if _PSL.is_public(domain.lower()) else {}
    parts = {"registered_domain": registered, "top_level_domain": registered.split(".", 1)[1]}
    cut = domain.rfind("." + registered)
    if cut > 0:
        parts["subdomain"] = domain[:cut]
    return parts


def local_domain(value: str) -> str:
    """A ``--local-domain``/``local_domains`` entry as compared: lower-case, without a leading ``@`` and a
    trailing dot. Raises ValueError for what is no domain name (empty, spaces, ``@`` inside, a ``*``
    wildcard: subdomains are matched one by one, as in Elastic)."""
    name = value.strip().lower().removeprefix("@").rstrip(".")
    if not name or any(c in name for c in " @/\\:,;*") or ".." in name:
        raise ValueError(f"{value!r} is not a domain name (write it as contoso.com)")
    return name
