"""Events in the log: one event dict per record, or one columnar block of events per record (below),
serialised with orjson.

The same encodings are used for LocalLog records and Kafka message values; ``is_block`` tells them apart.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from siem import metrics
from siem.parse import ParseContext
from siem.parse.block import EventBlock, Projection, object_array, parse_block
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


# --- columnar blocks ---------------------------------------------------------------------------------
#
# One log record per block of events (siem.parse.block.EventBlock) instead of one per event:
#
#     {"siem.block": 1, "n": N, "source": {...}, "projection": {"fields": [...], "wanted": [[ds, action], ...]
#      or null}, "ts": [N ints], "inert": [row, ...] or null, "cols": {field: [N values, null = missing]}}
#
# ``source`` (BlockSource) says how the rows were parsed, so a reader whose rules read more than the
# record holds (a reload that added a field, or a prefilter that now lets more through) parses the rows
# again from their raw lines (``event.original`` is always a column) with the same format, zone, host
# and reference time: the result is what parsing them at intake with the wider projection gave.
# Decoding is one orjson.loads and one array per column: no dict per event.

BLOCK_VERSION = 1
_BLOCK_MAGIC = b'{"siem.block":'


@dataclass(frozen=True, slots=True)
class BlockSource:
    """How a block's rows were parsed: format, input name, ParseContext (zone name, reference time,
    host) and the constant fields the input adds (e.g. log.file.path)."""

    fmt: str
    input_name: str = ""
    tz: str = "UTC"
    now_ms: int | None = None
    host: str = ""
    constants: tuple[tuple[str, str], ...] = ()

    def context(self) -> ParseContext:
        return ParseContext(tz=ZoneInfo(self.tz) if self.tz != "UTC" else UTC, now_ms=self.now_ms, host=self.host)

    @classmethod
    def of(cls, fmt: str, ctx: ParseContext, input_name: str = "", constants: dict[str, str] | None = None) -> BlockSource:
        """The source of blocks parsed with `ctx` now (a wall-clock context is pinned to the current time)."""
        tz = getattr(ctx.tz, "key", None) or "UTC"
        now = ctx.now_ms if ctx.now_ms is not None else time.time_ns() // 1_000_000
        return cls(fmt, input_name, tz, now, ctx.host, tuple(sorted((constants or {}).items())))


def is_block(payload: bytes) -> bool:
    """Whether a log record holds a block (else it is one JSON event, the older encoding)."""
    return payload[:len(_BLOCK_MAGIC)] == _BLOCK_MAGIC


def encode_block(block: EventBlock, source: BlockSource, max_bytes: int = 1 << 20) -> list[bytes]:
    """The records of one block: one, or several of consecutive rows when one would exceed `max_bytes`
    (a LocalLog's max_record_bytes, a Kafka topic's max message size). Never fails on values orjson
    refuses (ints beyond 64 bits, lone surrogates): those are turned into strings."""
    payload = _encode_one(block, source)
    if len(payload) <= max_bytes or block.n <= 1:
        return [payload]
    half = block.n // 2
    return (encode_block(block.take(np.arange(half)), source, max_bytes)
            + encode_block(block.take(np.arange(half, block.n)), source, max_bytes))


def _encode_one(block: EventBlock, source: BlockSource) -> bytes:
    proj = block.projection
    doc = {
        "siem.block": BLOCK_VERSION,
        "n": block.n,
        "source": {"fmt": source.fmt, "input": source.input_name, "tz": source.tz, "now_ms": source.now_ms,
                   "host": source.host, "constants": dict(source.constants)},
        "projection": {"fields": sorted(proj.fields),
                       "wanted": None if proj.wanted is None else sorted(map(list, proj.wanted), key=repr)},
        "ts": block.ts.tolist(),
        "inert": None if block.inert is None else np.flatnonzero(block.inert).tolist(),
        "cols": {k: c.tolist() for k, c in block.columns.items()},
    }
    try:
        return orjson.dumps(doc, default=_default, option=_OPTS)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps(_sanitise(doc), option=_OPTS)


def decode_block(payload: bytes, projection: Projection | None = None, where: str = "") -> EventBlock | None:
    """The block in one record, holding at least what `projection` reads (rows parsed again from their
    raw lines when the record holds less: counted in siem_log_blocks_reparsed_total). None, logged
    with `where` and counted in siem_log_undecodable_records_total, when the record is not a valid block."""
    try:
        doc = orjson.loads(payload)
        n = doc["n"]
        src = doc["source"]
        source = BlockSource(src["fmt"], src["input"], src["tz"], src["now_ms"], src["host"],
                             tuple(sorted(src["constants"].items())))
        p = doc["projection"]
        stored = Projection(frozenset(p["fields"]),
                            None if p["wanted"] is None else frozenset((d, a) for d, a in p["wanted"]))
        ts = np.array(doc["ts"], dtype=np.int64)
        cols = {k: object_array(v) for k, v in doc["cols"].items()}
        inert = None
        if doc["inert"] is not None:
            inert = np.zeros(n, dtype=bool)
            inert[np.array(doc["inert"], dtype=np.int64)] = True
        if doc["siem.block"] != BLOCK_VERSION or len(ts) != n or any(len(c) != n for c in cols.values()) \
                or "event.original" not in cols:
            raise ValueError("inconsistent block record")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        metrics.LOG_UNDECODABLE.inc()
        log.error("log record%s is not a valid event block (%d bytes): %s", f" at {where}" if where else "",
                  len(payload), exc)
        return None
    block = EventBlock(ts, cols, stored, inert)
    if projection is None or stored.covers(projection):
        return block
    metrics.LOG_BLOCKS_REPARSED.inc()
    wider = Projection(stored.fields | projection.fields, projection.wanted)  # what both need
    raw = [str(v).encode("utf-8", "surrogatepass") for v in cols["event.original"].tolist()]
    again = parse_block(source.fmt, raw, source.context(), wider, source.input_name, dict(source.constants))
    return EventBlock(ts, again.columns, wider, again.inert)
