"""Collectors: turn outside input into RawRecords, with limits and back-pressure.

Every collector is an async object with ``async def run(self, sink: Sink) -> None`` that runs until
cancelled, calling ``await sink(record)`` for each record; a full pipeline slows the collector down
because ``sink`` awaits a bounded queue (UDP, which cannot be slowed, counts what it drops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One unit of outside input before parsing."""

    input: str  # the configured input name, e.g. "syslog_tcp" (a bounded metric label)
    format: str  # a key of siem.parse.PARSERS, e.g. "syslog", "nginx", "cloudtrail"
    data: bytes  # the raw line / frame / JSON record, without framing
    received_ms: int  # wall clock at receipt
    origin: str = ""  # peer address or file path, for provenance (never a metric label)


Sink = Callable[[RawRecord], Awaitable[None]]
