"""Collectors: turn outside input into RawRecords, with limits and back-pressure.

Every input type is an entry of :data:`INPUT_TYPES`: the module that validates its config
(``config_from_toml(table, where)``) and the class that collects. A collector (:class:`Collector`) runs
until stopped, awaiting ``sink(record)`` for each record; a full pipeline slows it down because ``sink``
awaits a bounded queue (UDP, which cannot be slowed, counts what it drops). Inputs that can resume where
they stopped (files, CloudTrail, journald, auditd) also keep positions (:class:`PositionKeeper`): the intake logs
them behind the records they cover and hands them back at a restart.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, NamedTuple, Protocol, runtime_checkable


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
the record's intake sequence number, which ``durable(seq)`` (:data:`Durable`) waits on; other
sinks may return None."""

Durable = Callable[[int], Awaitable[None]]
"""``await durable(seq)`` returns once the record the sink returned ``seq`` for is in the durable event log
(siem.pipeline.intake.Intake.durable)."""


class Collector(Protocol):
    async def run(self, sink: Sink) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class PositionKeeper(Protocol):
    """A collector that can resume: ``positions()`` covers exactly what it has put into the sink."""

    def positions(self) -> dict[str, Any]: ...

    def commit(self, positions: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class InputType:
    """One kind of input: where its collector class lives and how it is built."""

    module: str
    cls: str
    keeps_positions: bool  # built with (config, name, state_dir, autocommit=False); else (config, name)
    acks: bool = False  # started with start(sink, durable): acknowledges what is durable (siem.collect.relp)
    settle_polls: int = 0  # poll intervals before what is already there is delivered (a file must settle)

    def backlog_ms(self, config: object) -> int:
        """How long after its start this input may take to deliver what was there when it started."""
        return self.settle_polls * int(getattr(config, "poll_interval_ms", 0))

    def build(self, config: object, name: str, state_dir: Path) -> Any:
        factory: Callable[..., Any] = getattr(importlib.import_module(self.module), self.cls)
        if self.keeps_positions:
            return factory(config, name, state_dir, autocommit=False)
        return factory(config, name)


INPUT_TYPES: dict[str, InputType] = {
    "syslog": InputType("siem.collect.syslog", "SyslogServer", keeps_positions=False),
    "relp": InputType("siem.collect.relp", "RelpServer", keeps_positions=False, acks=True),
    "files": InputType("siem.collect.files", "FileTailer", keeps_positions=True),
    "cloudtrail": InputType("siem.collect.cloudtrail", "CloudTrailCollector", keeps_positions=True, settle_polls=1),
    "journald": InputType("siem.collect.journald", "JournaldFollower", keeps_positions=True),
    "auditd": InputType("siem.collect.auditd", "AuditdTailer", keeps_positions=True),
}


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
