"""Shared pieces of the syslog server tests: a list sink, a serving context, polling with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from siem import metrics
from siem.collect import RawRecord
from siem.collect.syslog import SyslogConfig, SyslogServer

_names = itertools.count()


def unique_name(prefix: str = "syslog_test") -> str:
    """A fresh input name, so metric values of one test are not shared with another."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


class ListSink:
    """The real Sink interface: an awaitable callable; this one keeps every record in a list."""

    def __init__(self) -> None:
        self.records: list[RawRecord] = []

    async def __call__(self, record: RawRecord) -> None:
        self.records.append(record)

    @property
    def data(self) -> list[bytes]:
        return [r.data for r in self.records]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 15.0, interval_s: float = 0.01) -> bool:
    """Poll predicate until it holds or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def serving(config: SyslogConfig, sink: Callable | None = None, name: str | None = None
                  ) -> AsyncIterator[tuple[SyslogServer, ListSink]]:
    """A started server on an ephemeral 127.0.0.1 port, stopped afterwards."""
    list_sink = ListSink()
    server = SyslogServer(config, name or unique_name())
    await server.start(sink or list_sink)
    try:
        yield server, list_sink
    finally:
        await server.stop()


def counter(server: SyslogServer, metric: str, **labels: str) -> float:
    """A metric sample of this server's input (``metric`` without the _total suffix handling)."""
    return metrics.value(metric, input=server.name, **labels)


def dropped(server: SyslogServer, reason: str) -> float:
    return metrics.value("siem_input_dropped_total", input=server.name, reason=reason)


def errors(server: SyslogServer, reason: str) -> float:
    return metrics.value("siem_input_errors_total", input=server.name, reason=reason)


async def send_tcp(port: int, payload: bytes, close: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection to 127.0.0.1:port, write payload, optionally close the write side."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()
    return reader, writer
