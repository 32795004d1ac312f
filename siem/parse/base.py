"""Shared pieces of the parsers: the parse context, error notes, IP classification, limits.

Everything here is on the hot path of every line: no datetime objects, no exceptions, and caches
for what repeats (IP validation). ParseContext and ParserFn are re-exported by siem.parse.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Callable, Final

from siem.enrich import GeoSpec
from siem.schema import Event

# Line caps (decided here, documented in README "Parsers and the event schema"):
# text formats are cut at 64 KiB, JSON formats (one object per line) at 1 MiB because a CloudTrail
# record may legitimately be up to 256 KB. A cut line is still parsed and gets an error.message.
MAX_LINE_BYTES: Final = 64 * 1024
MAX_JSON_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What a parser may know besides the line itself.

    tz:     zone of timestamps that carry none (RFC 3164, zone-less RFC 3339); a ZoneInfo for local
            time with DST, UTC by default.
    now_ms: reference wall clock for RFC 3164 year inference and for the @timestamp of lines
            without a usable time; None means the current wall clock.
    host:   host.name for formats that do not carry one (access logs), and for syslog lines
            without a HOSTNAME.
    geo:    GeoIP enrichment of source/destination addresses after parsing (siem.enrich), or None.
    """

    tz: tzinfo = UTC
    now_ms: int | None = None
    host: str = ""
    geo: GeoSpec | None = None


ParserFn = Callable[[str, ParseContext], Event]


def now_ms(ctx: ParseContext) -> int:
    """The context's reference time in ms, or the wall clock."""
    if ctx.now_ms is not None:
        return ctx.now_ms
    return time.time_ns() // 1_000_000


def note(ev: Event, text: str) -> None:
    """Add one problem to the event's error.message (several are joined with '; ')."""
    old = ev.get("error.message")
    ev["error.message"] = text if old is None else f"{old}; {text}"


def error_event(text: str, dataset: str, message: str, ctx: ParseContext) -> Event:
    """The event for a line nothing could be read from."""
    return {
        "@timestamp": now_ms(ctx),
        "event.original": text,
        "event.dataset": dataset,
        "error.message": message,
    }


def clip(value: str, limit: int = 200) -> str:
    """A bounded excerpt of attacker-controlled text for an error message."""
    return value if len(value) <= limit else value[:limit] + "..."


# --- IP addresses ---------------------------------------------------------------------------------

_IPV4: Final = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_IPV4_FULL = _IPV4.fullmatch
IP_CACHE: dict[str, str | None] = {}


def ip_or_none(text: str) -> str | None:
    """The canonical text of an IP address, or None when `text` is not one.

    IPv4 is returned as given (validated); IPv6 is compressed; IPv4-mapped IPv6 (``::ffff:1.2.3.4``,
    as logged by dual-stack servers) becomes the IPv4 address so CIDR rules see one form.
    Results are cached (bounded): brute-force traffic repeats its sources.
    """
    got = IP_CACHE.get(text, "")
    if got != "":
        return got
    out: str | None = None
    if _IPV4_FULL(text) is not None:
        out = text
    elif ":" in text and len(text) <= 64:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            mapped = getattr(addr, "ipv4_mapped", None)
            out = str(mapped) if mapped is not None else str(addr)
    if len(text) <= 64:
        if len(IP_CACHE) >= 100_000:
            IP_CACHE.clear()
        IP_CACHE[text] = out
    return out


def set_source(ev: Event, addr: str) -> None:
    """source.ip when `addr` is an IP address, else source.address (a host name as logged)."""
    ip = IP_CACHE.get(addr, "")
    if ip == "":
        ip = ip_or_none(addr)
    if ip is not None:
        ev["source.ip"] = ip
    elif addr:
        ev["source.address"] = addr
