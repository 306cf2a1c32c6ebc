"""GeoIP lookups and the geofence (SPEC §3.12).

``GeoDB`` opens a MaxMind database (City or Country) once, at config compile time; this is the
only file I/O in ``security``. Lookups go through a bounded LRU keyed by the client IP (the
same clients repeat; the key is client-controlled, hence the bound). Records are shared
between callers and must not be mutated.

``X-Geoip`` carries the MaxMind record as compact JSON with MaxMind's own keys
(``{"country":{"iso_code":"ES",...},...}``), not KrakenD EE's Go field names (``IsoCode``).

``Geofence`` admits by ISO country (``country.iso_code``, else ``registered_country.iso_code``,
compared case-insensitively). Addresses that do not parse, are not in the database or have no
country are "unknown" and follow ``unknown`` (``allow`` or ``deny``).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any, Final, Literal

import maxminddb
import msgspec

from fastproxy.security.cidr import format_ip, parse_ip

__all__ = ["GeoDB", "Geofence"]

_encode = msgspec.json.encode
class _Unset(enum.Enum):
    UNSET = 0


_UNSET: Final = _Unset.UNSET  # an entry's header before it is first asked for


class _Entry:
    __slots__ = ("record", "country", "header")

    def __init__(self, record: dict[str, Any] | None):
        self.record = record
        self.country = _country_of(record)
        self.header: bytes | None | Literal[_Unset.UNSET] = _UNSET


def _country_of(record: dict[str, Any] | None) -> str | None:
    if not isinstance(record, dict):
        return None
    for key in ("country", "registered_country"):
        part = record.get(key)
        if isinstance(part, dict):
            code = part.get("iso_code")
            if isinstance(code, str) and code:
                return code
    return None


class GeoDB:
    __slots__ = ("path", "_reader", "_cache", "_cache_size")

    def __init__(self, path: str, cache_size: int = 10_000):
        if cache_size < 1:
            raise ValueError(f"invalid GeoIP cache size {cache_size!r}: expected >= 1")
        try:
            self._reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ValueError(f"cannot open MaxMind database {path!r}: {reason}") from None
        self.path = path
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_size = cache_size

    def _entry(self, ip: str) -> _Entry:
        cache = self._cache
        entry = cache.get(ip)
        if entry is not None:
            cache.move_to_end(ip)
            return entry
        parsed = parse_ip(ip)
        record = None
        if parsed is not None:
            try:
                found = self._reader.get(format_ip(*parsed))
            except (ValueError, maxminddb.InvalidDatabaseError):
                found = None  # e.g. an IPv6 address in an IPv4-only database
            record = found if isinstance(found, dict) else None
        entry = cache[ip] = _Entry(record)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return entry

    def record(self, ip: str) -> dict[str, Any] | None:
        return self._entry(ip).record

    def country(self, ip: str) -> str | None:
        return self._entry(ip).country

    def geoip_header(self, ip: str) -> bytes | None:
        """Value of ``X-Geoip``: compact JSON of the record, or None when there is none."""
        entry = self._entry(ip)
        if entry.header is _UNSET:
            entry.header = None if entry.record is None else _encode(entry.record)
        return entry.header

    def close(self) -> None:
        self._reader.close()


def check_country(code: object) -> None:
    if not (isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha()):
        raise ValueError(f"invalid country code {code!r}: expected ISO 3166-1 alpha-2")


class Geofence:
    __slots__ = ("db", "_countries", "_listed_pass", "_unknown_pass")

    def __init__(self, db: GeoDB, allow_countries: list[str] | None = None,
                 deny_countries: list[str] | None = None, unknown: str = "allow"):
        if allow_countries is not None and deny_countries is not None:
            raise ValueError("allow_countries and deny_countries are exclusive; give one")
        if unknown not in ("allow", "deny"):
            raise ValueError(f"invalid unknown {unknown!r}: expected 'allow' or 'deny'")
        listed = allow_countries if allow_countries is not None else deny_countries or []
        for code in listed:
            check_country(code)
        self.db = db
        self._countries = frozenset(c.upper() for c in listed)
        # allow list: listed countries pass; deny list (or none): listed countries are refused
        self._listed_pass = allow_countries is not None
        self._unknown_pass = unknown == "allow"

    def permits(self, ip: str | None) -> bool:
        country = self.db.country(ip) if ip else None
        if country is None:
            return self._unknown_pass
        return (country.upper() in self._countries) is self._listed_pass
