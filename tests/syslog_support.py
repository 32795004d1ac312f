"""Shared pieces of the syslog server tests: a list sink, a serving context, polling with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path
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


async def send_tcp(port: int, payload: bytes, close: bool = True, local_addr: tuple[str, int] | None = None,
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection to 127.0.0.1:port (from local_addr, e.g. another loopback address: another
    source), write payload, optionally close the write side."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local_addr)
    writer.write(payload)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()
    return reader, writer


RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)


@asynccontextmanager
async def rsyslogd(work: Path, conf: str) -> AsyncIterator[int]:
    """Run `rsyslogd -n` with ``conf`` (which must write its imtcp port to ``{work}/port`` through
    listenPortFileName); yields that port; terminates rsyslogd afterwards."""
    conf_path = work / "rsyslog.conf"
    conf_path.write_text(conf)
    portfile = work / "port"
    proc = await asyncio.create_subprocess_exec(
        RSYSLOGD or "rsyslogd", "-n", "-f", str(conf_path), "-i", str(work / "pid"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        started = await wait_until(lambda: portfile.exists() and portfile.read_text().strip().isdigit(), 20)
        if not started:
            proc.kill()
            _, err = await proc.communicate()
            raise RuntimeError(f"rsyslogd did not start: {err.decode()[-2000:]}")
        yield int(portfile.read_text().strip())
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


async def run_logger(*args: str) -> None:
    """util-linux logger with these arguments; raises with its stderr when it fails."""
    proc = await asyncio.create_subprocess_exec(
        shutil.which("logger") or "logger", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"logger {' '.join(args)} failed: {err.decode()}")
