"""What travels through the pipeline's logs: events, and two kinds of typed control records.

::

    LogRecord = Event       a parsed event (a flat ECS dict)
              | Positions   input `input` has put exactly the records before this one (resume point)
              | Watermark   `origin` vouches that no event older than `ts_ms` follows (up to lateness)
              | Match       an event routed to the correlators of one group-by family (siem.matches)

One encoding serves the local log and the Kafka topics. A record is one tag byte and a JSON body::

    b"E" + event JSON          b"P" + {"input": ..., "positions": {...}}          b"W" + {"origin": ..., "ts": int}
    b"M" + {"family": ..., "event": {...}}

A record that starts with ``{`` is an event written by a release before the tags (its control records
were events with the magic keys ``@siem.positions`` / ``@siem.advance``); it is still read, so a log on
disk survives the upgrade. Anything else is refused by :func:`decode_record` (None, counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import orjson

from siem import metrics
from siem.log.codec import encode_event
from siem.schema import Event

_EVENT, _POSITIONS, _WATERMARK, _MATCH = b"E", b"P", b"W", b"M"
_LEGACY_POSITIONS, _LEGACY_ADVANCE = "@siem.positions", "@siem.advance"


@dataclass(frozen=True, slots=True)
class Positions:
    """Where input `input` resumes after every record before this one (its collector's own format)."""

    input: str
    positions: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Watermark:
    """No event older than `ts_ms` is expected after this record from `origin` (beyond lateness)."""

    origin: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Match:
    """An event on its way to the rules grouped by `family` (their group-by fields, comma-joined)."""

    family: str
    event: Event


LogRecord = Union[Event, Positions, Watermark, Match]


def encode_record(record: LogRecord) -> bytes:
    if isinstance(record, Positions):
        return _POSITIONS + orjson.dumps({"input": record.input, "positions": record.positions})
    if isinstance(record, Watermark):
        return _WATERMARK + orjson.dumps({"origin": record.origin, "ts": record.ts_ms})
    if isinstance(record, Match):
        return _MATCH + b'{"family":' + orjson.dumps(record.family) + b',"event":' + encode_event(record.event) + b"}"
    return _EVENT + encode_event(record)


def decode_record(payload: bytes) -> LogRecord | None:
    """The record in one payload; None (counted in siem_log_undecodable_total) when it is not one."""
    tag = payload[:1]
    try:
        if tag == _EVENT:
            doc = orjson.loads(payload[1:])
            if isinstance(doc, dict):
                return doc
        elif tag == _POSITIONS:
            doc = orjson.loads(payload[1:])
            if isinstance(doc, dict) and isinstance(doc.get("input"), str) and isinstance(doc.get("positions"), dict):
                return Positions(doc["input"], doc["positions"])
        elif tag == _WATERMARK:
            doc = orjson.loads(payload[1:])
            if isinstance(doc, dict) and isinstance(doc.get("origin"), str) and type(doc.get("ts")) is int:
                return Watermark(doc["origin"], doc["ts"])
        elif tag == _MATCH:
            doc = orjson.loads(payload[1:])
            if isinstance(doc, dict) and isinstance(doc.get("family"), str) and isinstance(doc.get("event"), dict):
                return Match(doc["family"], doc["event"])
        elif tag == b"{":
            legacy = _legacy(orjson.loads(payload))
            if legacy is not None:
                return legacy
    except orjson.JSONDecodeError:
        pass
    metrics.LOG_UNDECODABLE.inc()
    return None


def _legacy(doc: object) -> LogRecord | None:
    if not isinstance(doc, dict):
        return None
    if _LEGACY_POSITIONS in doc:
        pos = doc.get("positions")
        return Positions(str(doc[_LEGACY_POSITIONS]), pos if isinstance(pos, dict) else {})
    if _LEGACY_ADVANCE in doc:
        ts = doc[_LEGACY_ADVANCE]
        return Watermark("", ts) if type(ts) is int else None
    return doc


def with_header(magic: bytes, head: object, body: bytes) -> bytes:
    """State as data: ``magic``, a 4-byte length, a JSON header, then opaque ``body`` bytes."""
    raw = orjson.dumps(head)
    return magic + len(raw).to_bytes(4, "big") + raw + body


def split_header(magic: bytes, raw: bytes, what: str) -> tuple[object, bytes]:
    """(header, body) of :func:`with_header` output; StateError naming `what` for anything else."""
    from siem.errors import StateError  # noqa: PLC0415

    start = len(magic) + 4
    if not raw.startswith(magic) or len(raw) < start:
        raise StateError(f"{what}: not such a state (bad magic)")
    n = int.from_bytes(raw[len(magic): start], "big")
    if start + n > len(raw):
        raise StateError(f"{what}: header runs past the end")
    try:
        return orjson.loads(raw[start: start + n]), raw[start + n:]
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{what}: header is corrupt: {exc}") from exc
