"""Collectors: turn outside input into RawRecords, with limits and back-pressure.

Every collector is an async object with ``async def run(self, sink: Sink) -> None`` that runs until
cancelled, calling ``await sink(record)`` for each record; a full pipeline slows the collector down
because ``sink`` awaits a bounded queue (UDP, which cannot be slowed, counts what it drops).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, NamedTuple


class RawRecord(NamedTuple):
    """One unit of outside input before parsing. A NamedTuple: one is made per line, and the daemon sends
    them to its parse worker processes; a frozen dataclass cost several times more to build and to pickle."""

    input: str  # the configured input name, e.g. "syslog_tcp" (a bounded metric label)
    format: str  # a key of siem.parse.PARSERS, e.g. "syslog", "nginx", "cloudtrail"
    data: bytes  # the raw line / frame / JSON record, without framing
    received_ms: int  # wall clock at receipt
    origin: str = ""  # peer address or file path, for provenance (never a metric label)


Sink = Callable[[RawRecord], Awaitable["int | None"]]
"""``await sink(record)``: takes the record (waiting while the pipeline is full). The daemon's sink returns
the record's intake sequence number, which ``durable(seq)`` (siem.collect.relp.Durable) waits on; other
sinks may return None."""


def commit_positions(name: str, commit: Callable[[], None], last_problem: str | None) -> str | None:
    """Persist an input's positions via `commit()`; a failure is counted and logged once per distinct problem
    (positions stay in memory and are written when possible). Returns the problem now current, or None."""
    from siem import metrics
    from siem.errors import StateError

    try:
        commit()
    except StateError as exc:
        metrics.INPUT_ERRORS.labels(input=name, reason="state_write").inc()
        if str(exc) != last_problem:
            logging.getLogger("siem.collect").error(
                "input %s: %s (positions are kept in memory and written when possible)", name, exc)
        return str(exc)
    return None
