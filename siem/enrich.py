"""GeoIP enrichment of parsed events: country and autonomous system of source and destination addresses.

    [daemon]
    geoip = "builtin"                               # the data the geoip2fast wheel ships (country + ASN name)
    # geoip = "/var/lib/GeoIP/GeoLite2-City.mmdb"   # or MaxMind databases through maxminddb
    # geoip_asn = "/var/lib/GeoIP/GeoLite2-ASN.mmdb"

For every event with ``source.ip`` (and ``destination.ip``) of a public address, the parse step adds
``<side>.geo.country_iso_code``, ``<side>.geo.country_name``, ``<side>.as.organization.name`` and, from
an ASN mmdb, ``<side>.as.number``. Private, loopback and reserved addresses get nothing. Lookups are
cached per address (bounded). The database is opened once per process, on first use (the parse workers
open their own); a database that cannot be opened is a configuration error at load time
(:func:`check`), so the daemon does not start with enrichment silently off.

``GeoSpec`` travels in :class:`siem.parse.ParseContext` (a frozen dataclass, pickled to parse workers).
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import Any, Final, Protocol

from siem.schema import Event

BUILTIN: Final = "builtin"
CACHE_MAX: Final = 200_000
_SIDES: Final = ("source", "destination")


@dataclass(frozen=True, slots=True)
class GeoSpec:
    """Which database: ``country`` is "builtin" or an mmdb path (Country or City); ``asn`` an ASN mmdb or ""."""

    country: str = BUILTIN
    asn: str = ""


@dataclass(frozen=True, slots=True)
class GeoInfo:
    country_iso_code: str | None
    country_name: str | None
    as_number: int | None
    as_organization: str | None


class GeoReader(Protocol):
    def lookup(self, ip: str) -> GeoInfo | None: ...


class BuiltinReader:
    """geoip2fast's bundled data (MaxMind GeoLite2 CSV derived): country and AS organisation, IPv4 + IPv6."""

    def __init__(self) -> None:
        from geoip2fast import GeoIP2Fast  # noqa: PLC0415 - 1.5 s and ~120 MiB: only when asked for

        self._g = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn-ipv6.dat.gz")

    def lookup(self, ip: str) -> GeoInfo | None:
        r = self._g.lookup(ip)
        if getattr(r, "is_private", False) or not getattr(r, "country_code", "") or r.country_code == "--":
            return None
        return GeoInfo(r.country_code or None, r.country_name or None, None, getattr(r, "asn_name", "") or None)


class MaxMindReader:
    """MaxMind DB files (GeoLite2/GeoIP2 Country or City, and ASN) through maxminddb."""

    def __init__(self, country: str, asn: str = "") -> None:
        import maxminddb  # noqa: PLC0415

        self._country = maxminddb.open_database(country) if country else None
        self._asn = maxminddb.open_database(asn) if asn else None

    def lookup(self, ip: str) -> GeoInfo | None:
        c: Any = self._country.get(ip) if self._country is not None else None
        a: Any = self._asn.get(ip) if self._asn is not None else None
        if not c and not a:
            return None
        country = (c or {}).get("country") or (c or {}).get("registered_country") or {}
        names = country.get("names") or {}
        return GeoInfo(country.get("iso_code"), names.get("en"), (a or {}).get("autonomous_system_number"),
                       (a or {}).get("autonomous_system_organization"))


_readers: dict[GeoSpec, GeoReader] = {}
_cache: dict[tuple[GeoSpec, str], GeoInfo | None] = {}
_lock = threading.Lock()


def reader(spec: GeoSpec) -> GeoReader:
    got = _readers.get(spec)
    if got is None:
        with _lock:
            got = _readers.get(spec)
            if got is None:
                got = _readers[spec] = BuiltinReader() if spec.country == BUILTIN else MaxMindReader(spec.country,
                                                                                                     spec.asn)
    return got


def check(spec: GeoSpec) -> str | None:
    """Why the database cannot be used, or None (opens it: call once at configuration time)."""
    try:
        reader(spec)
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError, InvalidDatabaseError...
        return f"{type(exc).__name__}: {exc}"
    return None


def _public(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_global


def lookup(spec: GeoSpec, ip: str) -> GeoInfo | None:
    key = (spec, ip)
    if key in _cache:
        return _cache[key]
    info = reader(spec).lookup(ip) if _public(ip) else None
    if len(_cache) >= CACHE_MAX:
        _cache.clear()
    _cache[key] = info
    return info


def enrich(ev: Event, spec: GeoSpec) -> None:
    """Add the geo and AS fields of the event's source and destination addresses (see the module docstring)."""
    for side in _SIDES:
        ip = ev.get(f"{side}.ip")
        if not isinstance(ip, str):
            continue
        info = lookup(spec, ip)
        if info is None:
            continue
        if info.country_iso_code:
            ev[f"{side}.geo.country_iso_code"] = info.country_iso_code
        if info.country_name:
            ev[f"{side}.geo.country_name"] = info.country_name
        if info.as_number is not None:
            ev[f"{side}.as.number"] = info.as_number
        if info.as_organization:
            ev[f"{side}.as.organization.name"] = info.as_organization
