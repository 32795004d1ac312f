"""Parsers: raw records (bytes) to flat ECS events (``dict[str, object]``, see siem.schema).

    parse(fmt, data, ctx, input_name) -> Event        never raises; counts parsed/failed
    parse_batch(fmt, datas, ctx, input_name) -> list  the same for many records of one input and format
                                                      (updates the counters once per batch)
    parse_cloudtrail_record(rec, ctx) -> Event        one element of a CloudTrail file's Records
    PARSERS[fmt](text, ctx) -> Event                  the explicit registry (text already decoded)
    siem.parse.jsonfmt.loads_exact(text) -> object    JSON loading without silent precision loss (use it
                                                      for CloudTrail files before parse_cloudtrail_record)

Formats (keys of PARSERS): syslog (RFC 5424 or RFC 3164, detected per message), rfc3164, rfc5424,
nginx, apache, access_json, cloudtrail, json, journald, auditd (the records of one Linux audit event,
siem.parse.auditd). Syslog and journald messages are handed to
the program parsers of siem.parse.auth (sshd, sudo, su, pam_unix, systemd-logind, shadow utils).

What ``parse`` does around a parser: cuts the record at MAX_LINE_BYTES (64 KiB; MAX_JSON_BYTES =
1 MiB for the JSON formats) and notes the cut in ``error.message``; decodes UTF-8 replacing invalid
bytes with U+FFFD; strips one trailing ``\\r\\n`` or ``\\n``; turns any exception into an event
``{"@timestamp": now, "event.original": text, "event.dataset": fmt, "error.message": ...}``; counts
``siem_events_parsed_total`` or ``siem_events_failed_total`` (an event with ``error.message`` is
failed) with labels input and format (unknown formats are counted as format="unknown"). With
``ctx.geo`` set, every event is then enriched with GeoIP fields (siem.enrich).
"""

from __future__ import annotations

from typing import Callable, Final, Iterable

from siem import metrics
from siem.enrich import enrich
from siem.parse.auditd import parse_auditd
from siem.parse.access import parse_access_json, parse_apache, parse_nginx
from siem.parse.base import MAX_JSON_BYTES, MAX_LINE_BYTES, ParseContext, ParserFn, clip, error_event, note
from siem.parse.cloudtrail import parse_cloudtrail, parse_cloudtrail_record
from siem.parse.jsonfmt import parse_journald, parse_json
from siem.parse.syslog import parse_rfc3164, parse_rfc5424, parse_syslog
from siem.schema import Event

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_LINE_BYTES",
    "PARSERS",
    "ParseContext",
    "ParserFn",
    "parse",
    "parse_batch",
    "parse_cloudtrail_record",
]

PARSERS: Final[dict[str, ParserFn]] = {
    "syslog": parse_syslog,
    "rfc3164": parse_rfc3164,
    "rfc5424": parse_rfc5424,
    "nginx": parse_nginx,
    "apache": parse_apache,
    "access_json": parse_access_json,
    "cloudtrail": parse_cloudtrail,
    "json": parse_json,
    "journald": parse_journald,
    "auditd": parse_auditd,
}

# formats cut at MAX_JSON_BYTES: JSON records, and auditd events (all the lines of one event)
_JSON_FORMATS: Final = frozenset({"access_json", "cloudtrail", "json", "journald", "auditd"})
_counters: dict[tuple[str, str], tuple[Callable[[float], None], Callable[[float], None]]] = {}


def _incrementers(input_name: str, fmt: str) -> tuple[Callable[[float], None], Callable[[float], None]]:
    """inc functions of the parsed/failed counters for (input, format), built once per pair.

    The value objects' own ``inc`` is used: it is what ``Counter.inc`` calls after checks that cannot
    fail for a labelled child, and it halves the cost per line (the parse loop is the hot path).
    """
    label = fmt if fmt in PARSERS else "unknown"
    pair = []
    for family in (metrics.EVENTS_PARSED, metrics.EVENTS_FAILED):
        child = family.labels(input=input_name, format=label)
        value = getattr(child, "_value", None)
        pair.append(getattr(value, "inc", None) or child.inc)
    got = _counters[(input_name, fmt)] = (pair[0], pair[1])
    return got


def _as_bytes(data: object) -> bytes:
    """bytes of a str/bytearray/memoryview record; anything else as its repr (never raises)."""
    if isinstance(data, str):
        return data.encode("utf-8", "replace")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    return repr(data).encode("utf-8", "replace")


def parse(fmt: str, data: bytes, ctx: ParseContext, input_name: str = "") -> Event:
    """Parse one record of format `fmt`; never raises (failures become events with error.message)."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    cut = 0
    if len(data) > MAX_LINE_BYTES:
        limit = MAX_JSON_BYTES if fmt in _JSON_FORMATS else MAX_LINE_BYTES
        if len(data) > limit:
            cut = len(data)
            data = data[:limit]
    text = data.decode("utf-8", "replace")
    if text[-1:] == "\n":
        text = text[:-2] if text[-2:] == "\r\n" else text[:-1]
    fn = PARSERS.get(fmt)
    if fn is None:
        ev = error_event(text, fmt, f"unknown format {clip(fmt, 40)!r}", ctx)
    else:
        try:
            ev = fn(text, ctx)
        except Exception as e:  # noqa: BLE001 - the contract is "never raises"; the failure is in the event
            ev = error_event(text, fmt, f"{fmt} parser failed: {type(e).__name__}: {clip(str(e))}", ctx)
    if cut:
        note(ev, f"record of {cut} bytes truncated to {len(data)}")
    if ctx.geo is not None:
        enrich(ev, ctx.geo)
    pair = _counters.get((input_name, fmt)) or _incrementers(input_name, fmt)
    pair[1 if "error.message" in ev else 0](1)
    return ev


def parse_batch(fmt: str, datas: Iterable[bytes], ctx: ParseContext, input_name: str = "") -> list[Event]:
    """``[parse(fmt, d, ctx, input_name) for d in datas]`` with the per-record overhead paid once per batch."""
    fn = PARSERS.get(fmt)
    if fn is None:
        return [parse(fmt, d, ctx, input_name) for d in datas]
    out: list[Event] = []
    append = out.append
    failed = 0
    inline = 0
    for data in datas:
        if type(data) is not bytes or len(data) > MAX_LINE_BYTES:
            append(parse(fmt, data, ctx, input_name))  # rare: counted by parse itself
            continue
        inline += 1
        text = data.decode("utf-8", "replace")
        if text[-1:] == "\n":
            text = text[:-2] if text[-2:] == "\r\n" else text[:-1]
        try:
            ev = fn(text, ctx)
        except Exception as e:  # noqa: BLE001 - the contract is "never raises"; the failure is in the event
            ev = error_event(text, fmt, f"{fmt} parser failed: {type(e).__name__}: {clip(str(e))}", ctx)
        if "error.message" in ev:
            failed += 1
        append(ev)
    if ctx.geo is not None:
        geo = ctx.geo
        for ev in out:
            enrich(ev, geo)
    pair = _counters.get((input_name, fmt)) or _incrementers(input_name, fmt)
    if inline - failed:
        pair[0](inline - failed)
    if failed:
        pair[1](failed)
    return out
