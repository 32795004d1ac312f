"""Events in the log: one event dict per record, serialised with orjson.

The same encoding is used for LocalLog records and Kafka message values.
"""

from __future__ import annotations

import logging

import orjson

from siem import metrics
from siem.schema import Event

log = logging.getLogger(__name__)

_OPTS = orjson.OPT_NON_STR_KEYS


def _default(obj: object) -> object:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)


def _sanitise(obj: object) -> object:
    """A copy orjson can always encode: ints beyond 64 bits and odd types become strings."""
    if isinstance(obj, dict):
        return {str(k): _sanitise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitise(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, float):
        return obj
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> '?'
    return _default(obj)


def encode_event(event: Event) -> bytes:
    try:
        return orjson.dumps(event, default=_default, option=_OPTS)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps(_sanitise(event), option=_OPTS)


def encode_events(events: list[Event]) -> list[bytes]:
    """One record per event. Never fails: values orjson refuses (ints beyond 64 bits, lone surrogates,
    bytes) are turned into strings."""
    return [encode_event(e) for e in events]


def decode_event(payload: bytes) -> Event | None:
    """The event in one record; None (counted in LOG_UNDECODABLE) when it is not a JSON object."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        metrics.LOG_UNDECODABLE.inc()
        return None
    if not isinstance(obj, dict):
        metrics.LOG_UNDECODABLE.inc()
        return None
    return obj


def decode_events(records: list[tuple[int, bytes]]) -> list[tuple[int, Event]]:
    """(offset, event) for every record that holds a JSON object; others are counted and skipped."""
    out = []
    for offset, payload in records:
        event = decode_event(payload)
        if event is None:
            log.error("log record at offset %d is not a JSON object (%d bytes); skipped", offset, len(payload))
            continue
        out.append((offset, event))
    return out
