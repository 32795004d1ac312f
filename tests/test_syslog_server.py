"""The syslog server against real senders: util-linux logger and an rsyslog instance, over real sockets."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from siem.collect.syslog import Protocol, SyslogConfig
from syslog_support import RSYSLOGD, rsyslogd, run_logger, serving, unique_name, wait_until

N_MESSAGES = 300
LOGGER = shutil.which("logger")
_NUMBERED = re.compile(rb"siemtest-(\w+)-(\d+)-end")

needs_logger = pytest.mark.skipif(LOGGER is None, reason="util-linux logger not installed (deploy/install-test-deps.sh)")


def numbered_file(tmp_path: Path, run: str, n: int = N_MESSAGES) -> Path:
    """A file of n distinct numbered lines, one message each for `logger -f`."""
    path = tmp_path / f"{run}.txt"
    path.write_text("".join(f"message siemtest-{run}-{i}-end from the test\n" for i in range(n)))
    return path


def numbers_received(data: list[bytes], run: str) -> Counter[int]:
    """How often each message number of this run arrived."""
    got: Counter[int] = Counter()
    for d in data:
        for m in _NUMBERED.finditer(d):
            if m.group(1).decode() == run:
                got[int(m.group(2))] += 1
    return got


def exactly_once(got: Counter[int], n: int = N_MESSAGES) -> bool:
    return set(got) == set(range(n)) and all(v == 1 for v in got.values())


async def _logger_roundtrip(tmp_path: Path, protocol: Protocol, flags: list[str]) -> tuple[Counter[int], list[bytes]]:
    run = unique_name("r").replace("_", "")
    lines = numbered_file(tmp_path, run)
    async with serving(SyslogConfig(protocol=protocol, port=0)) as (server, sink):
        await run_logger("-n", "127.0.0.1", "-P", str(server.port), *flags, "-t", "siemtest", "-f", str(lines))
        await wait_until(lambda: len(numbers_received(sink.data, run)) >= N_MESSAGES)
        await asyncio.sleep(0.05)  # let a duplicate, if any, arrive before counting
        return numbers_received(sink.data, run), sink.data


@needs_logger
@pytest.mark.timeout(60)
def test_logger_tcp_rfc3164_every_message_once(tmp_path: Path) -> None:
    """logger --tcp --rfc3164 (LF framing): every numbered message arrives exactly once."""
    got, data = asyncio.run(_logger_roundtrip(tmp_path, "tcp", ["--tcp", "--rfc3164"]))
    assert exactly_once(got)
    assert all(d.startswith(b"<13>") and not d.endswith(b"\n") for d in data)


@needs_logger
@pytest.mark.timeout(60)
def test_logger_udp_every_message_once(tmp_path: Path) -> None:
    """logger --udp: every numbered datagram arrives exactly once."""
    got, _ = asyncio.run(_logger_roundtrip(tmp_path, "udp", ["--udp", "--rfc3164"]))
    assert exactly_once(got)


@needs_logger
@pytest.mark.timeout(60)
def test_logger_udp_rfc5424_every_message_once(tmp_path: Path) -> None:
    """logger --udp --rfc5424: every numbered datagram arrives exactly once, RFC 5424 header intact."""
    got, data = asyncio.run(_logger_roundtrip(tmp_path, "udp", ["--udp", "--rfc5424"]))
    assert exactly_once(got)
    assert all(d.startswith(b"<13>1 ") for d in data)


@needs_logger
@pytest.mark.timeout(60)
def test_logger_tcp_rfc5424_every_message_once(tmp_path: Path) -> None:
    """logger --tcp --rfc5424: every numbered message arrives exactly once, RFC 5424 header intact."""
    got, data = asyncio.run(_logger_roundtrip(tmp_path, "tcp", ["--tcp", "--rfc5424"]))
    assert exactly_once(got)
    assert all(d.startswith(b"<13>1 ") for d in data)


@needs_logger
@pytest.mark.timeout(60)
def test_logger_tcp_octet_count_every_message_once(tmp_path: Path) -> None:
    """logger --tcp --octet-count (RFC 6587 octet counting): every message exactly once, no count prefix left."""
    got, data = asyncio.run(_logger_roundtrip(tmp_path, "tcp", ["--tcp", "--octet-count"]))
    assert exactly_once(got)
    assert all(d.startswith(b"<13>1 ") for d in data)


# --- rsyslog forwarding ------------------------------------------------------------------------------

RSYSLOG_CONF = """
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{portfile}" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" tcp_framing="{framing}"
         template="RSYSLOG_SyslogProtocol23Format"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"""


async def _rsyslog_roundtrip(tmp_path: Path, framing: str) -> tuple[Counter[int], list[bytes]]:
    run = unique_name("rs").replace("_", "")
    lines = numbered_file(tmp_path, run)
    work = tmp_path / "rsyslog"
    work.mkdir()
    async with serving(SyslogConfig(protocol="tcp", port=0)) as (server, sink):
        conf = RSYSLOG_CONF.format(work=work, portfile=work / "port", port=server.port, framing=framing)
        async with rsyslogd(work, conf) as rs_port:
            await run_logger("-n", "127.0.0.1", "-P", str(rs_port), "--tcp", "--octet-count",
                             "-t", "siemtest", "-f", str(lines))
            await wait_until(lambda: len(numbers_received(sink.data, run)) >= N_MESSAGES, 30)
            await asyncio.sleep(0.1)
        return numbers_received(sink.data, run), sink.data


@pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd not installed (Debian package rsyslog; deploy/install-test-deps.sh)")
@needs_logger
@pytest.mark.timeout(90)
@pytest.mark.parametrize("framing", ["octet-counted", "traditional"])
def test_rsyslog_forwards_every_message_once(tmp_path: Path, framing: str) -> None:
    """logger -> rsyslogd (imtcp) -> omfwd over TCP -> our server: every message exactly once."""
    got, data = asyncio.run(_rsyslog_roundtrip(tmp_path, framing))
    assert exactly_once(got)
    assert all(d.startswith(b"<13>1 ") and not d.endswith(b"\n") for d in data)


# --- several bind addresses --------------------------------------------------------------------------

async def _two_addresses(protocol: Protocol) -> tuple[list[bytes], list[str]]:
    import socket

    config = SyslogConfig(protocol=protocol, address=("127.0.0.1", "::1"), port=0)
    async with serving(config) as (server, sink):
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            payload = b"<13>via " + host.encode() + b"\n"
            if protocol == "udp":
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.sendto(payload, (host, server.port))
            else:
                _, writer = await asyncio.open_connection(host, server.port)
                writer.write(payload)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            await wait_until(lambda: any(host.encode() in d for d in sink.data))
        return sink.data, [r.origin.rsplit(":", 1)[0] for r in sink.records]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_listens_on_every_configured_address(protocol: Protocol) -> None:
    """address = ["127.0.0.1", "::1"]: both are bound on the same port; origins name the peer."""
    data, origins = asyncio.run(_two_addresses(protocol))
    assert (data, origins) == ([b"<13>via 127.0.0.1", b"<13>via ::1"], ["127.0.0.1", "[::1]"])
