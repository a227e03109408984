"""GeoIP city and ASN enrichment from MaxMind mmdb files (the normalizer caches lookups per IP).

Fields follow Elasticsearch's ``geoip`` processor defaults: ``continent_name``, ``country_iso_code``,
``country_name``, ``region_iso_code``, ``region_name``, ``city_name`` and ``location``; ASN data gives
``as.number`` and ``as.organization.name``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import maxminddb

from exotrace.errors import ConfigError

log = logging.getLogger("exotrace.normalize.geo")

#: Folders searched when no --geoip-dir is given (where geoipupdate writes on Linux).
DEFAULT_GEOIP_DIRS = ("/var/lib/GeoIP", "/usr/share/GeoIP", "/usr/local/share/GeoIP")


def find_databases(geoip_dir: str | os.PathLike[str] | None) -> tuple[Path | None, Path | None]:
    """(city, asn) mmdb paths found in ``geoip_dir`` (or the default folders); None where absent."""
    dirs = [Path(geoip_dir)] if geoip_dir else [Path(d) for d in DEFAULT_GEOIP_DIRS]
    city = asn = None
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.mmdb")):
            name = path.name.lower()
            if city is None and "city" in name:
                city = path
            elif asn is None and "asn" in name:
                asn = path
    return city, asn


class GeoEnricher:
    """Looks up IPs in the City and ASN databases; missing databases mean no enrichment."""

    def __init__(self, city_db: Path | None, asn_db: Path | None) -> None:
        """Open the databases; an unreadable or corrupt one raises :class:`ConfigError` naming the file."""
        self._city = _open(city_db) if city_db else None
        try:
            self._asn = _open(asn_db) if asn_db else None
        except ConfigError:
            if self._city is not None:
                self._city.close()
            raise

    @classmethod
    def from_dir(cls, geoip_dir: str | os.PathLike[str] | None, *, warn: bool = True) -> GeoEnricher:
        city, asn = find_databases(geoip_dir)
        enricher = cls(city, asn)
        if warn and (city is None or asn is None):
            missing = " and ".join(n for n, p in (("City", city), ("ASN", asn)) if p is None)
            where = geoip_dir or ", ".join(DEFAULT_GEOIP_DIRS)
            log.warning(
                "No GeoIP %s database in %s: IPs are not enriched with %s data (point --geoip-dir or geoip_dir "
                "at a folder with GeoLite2 .mmdb files, or use --no-geoip).", missing, where, missing)
        return enricher

    @property
    def enabled(self) -> bool:
        return self._city is not None or self._asn is not None

    def lookup(self, ip: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(geo, as) ECS objects for one IP; raises ValueError for a malformed IP."""
        geo = _city_fields(self._city.get(ip)) if self._city else None
        asn = _asn_fields(self._asn.get(ip)) if self._asn else None
        return geo or None, asn or None

    def close(self) -> None:
        for db in (self._city, self._asn):
            if db is not None:
                db.close()


def _open(path: Path) -> Any:
    try:
        return maxminddb.open_database(str(path))
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a valid MaxMind DB file"
        raise ConfigError(f"GeoIP database {path}: {reason}; replace it (geoipupdate) or use --no-geoip",
                          key="geoip_dir") from None


def _name(record: Any) -> str | None:
    if isinstance(record, dict):
        names = record.get("names")
        if isinstance(names, dict):
            return names.get("en")
    return None


def _city_fields(rec: Any) -> dict[str, Any]:
    if not isinstance(rec, dict):
        return {}
    geo: dict[str, Any] = {}
    if (city := _name(rec.get("city"))) is not None:
        geo["city_name"] = city
    if (continent := _name(rec.get("continent"))) is not None:
        geo["continent_name"] = continent
    country = rec.get("country") or {}
    if country.get("iso_code"):
        geo["country_iso_code"] = country["iso_code"]
    if (country_name := _name(country)) is not None:
        geo["country_name"] = country_name
    loc = rec.get("location") or {}
    if "latitude" in loc and "longitude" in loc:
        geo["location"] = {"lat": loc["latitude"], "lon": loc["longitude"]}
    subdivisions = rec.get("subdivisions") or []
    if subdivisions:
        sub = subdivisions[-1]  # the most specific, as Elasticsearch's geoip processor takes it
        if sub.get("iso_code") and country.get("iso_code"):
            geo["region_iso_code"] = f"{country['iso_code']}-{sub['iso_code']}"
        if (region := _name(sub)) is not None:
            geo["region_name"] = region
    return geo


def _asn_fields(rec: Any) -> dict[str, Any]:
    if not isinstance(rec, dict) or rec.get("autonomous_system_number") is None:
        return {}
    out: dict[str, Any] = {"number": rec["autonomous_system_number"]}
    if rec.get("autonomous_system_organization"):
        out["organization"] = {"name": rec["autonomous_system_organization"]}
    return out
