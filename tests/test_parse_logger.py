"""Messages produced by the real util-linux `logger` (sent over UDP to 127.0.0.1) parse as the same sshd event."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from siem.parse import ParseContext, parse

MESSAGE = "Failed password for invalid user bob from 203.0.113.9 port 40022 ssh2"


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1, ephemeral port, that receives what logger sends."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    try:
        yield s
    finally:
        s.close()


def _send(sock: socket.socket, flag: str, tag: str, message: str) -> bytes:
    port = str(sock.getsockname()[1])
    subprocess.run(["logger", flag, "--udp", "-n", "127.0.0.1", "-P", port, "-t", tag, "-i", message],
                   check=True, timeout=10)
    data, _ = sock.recvfrom(65536)
    return data


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flag", ["--rfc3164", "--rfc5424"])
def test_logger_sshd_message_gives_the_sshd_event(udp: socket.socket, flag: str) -> None:
    """logger --rfc3164 and --rfc5424 output: same sshd fields, current time, the sender's host and pid."""
    before = int(datetime.now(UTC).timestamp() * 1000)
    data = _send(udp, flag, "sshd", MESSAGE)
    ev = parse("syslog", data, ParseContext(), "logger-test")
    assert "error.message" not in ev, ev.get("error.message")
    assert {k: ev[k] for k in ("event.dataset", "event.action", "event.outcome", "user.name", "source.ip",
                               "source.port", "ssh.method", "process.name", "message")} == {
        "event.dataset": "sshd", "event.action": "ssh_login", "event.outcome": "failure", "user.name": "bob",
        "source.ip": "203.0.113.9", "source.port": 40022, "ssh.method": "password", "process.name": "sshd",
        "message": MESSAGE}
    assert ev["host.name"] == socket.gethostname().split(".")[0] or ev["host.name"] == socket.gethostname()
    assert isinstance(ev["process.pid"], int)
    assert (ev["log.syslog.facility.name"], ev["log.syslog.severity.name"]) == ("user", "notice")
    assert before - 2000 <= ev["@timestamp"] <= before + 60_000  # type: ignore[operator]


@pytest.mark.timeout(30)
def test_logger_rfc5424_structured_data(udp: socket.socket) -> None:
    """logger --rfc5424 adds [timeQuality ...]; it becomes sd.timeQuality.* fields."""
    ev = parse("syslog", _send(udp, "--rfc5424", "app", "hello"), ParseContext())
    assert ev["sd.timeQuality.tzKnown"] == "1"
    assert (ev["message"], ev["event.dataset"], ev["log.syslog.version"]) == ("hello", "syslog", "1")
