"""End to end: the real daemon as a subprocess, fed over TCP syslog and a tailed file, writes alerts."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemon_support import SSH_RULES, DaemonProc, sshd_line, wait_for


def _now_ts(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, UTC).strftime("%b %e %H:%M:%S")


@pytest.fixture
def daemon(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    d = DaemonProc.create(
        tmp_path, SSH_RULES,
        inputs={
            "syslog_tcp": {"type": "syslog", "protocol": "tcp", "address": "127.0.0.1", "port": 0},
            "auth_files": {"type": "files", "format": "syslog", "paths": [str(tmp_path / "logs" / "*.log")],
                           "poll_interval": "50ms"},
        },
        daemon={"lateness": "1s", "idle_advance": "300ms"},
    )
    yield d
    d.close()


@pytest.mark.timeout(90)
def test_tcp_and_file_events_meet_in_one_window(daemon: DaemonProc) -> None:
    """Failures from one source arriving partly over TCP syslog and partly in a tailed file give one alert."""
    daemon.start()
    daemon.send_tcp("syslog_tcp", [b"<38>" + sshd_line(_now_ts(), "203.0.113.5", n) for n in range(3)])
    with open(daemon.base / "logs" / "auth.log", "ab") as f:
        f.write(b"".join(sshd_line(_now_ts(), "203.0.113.5", n) + b"\n" for n in range(3, 6)))
    alerts = daemon.wait_alerts(1)
    assert [(a["rule"], a["group"]) for a in alerts] == [("ssh_bruteforce", {"source.ip": "203.0.113.5"})]
    assert alerts[0]["count"] == 5
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_alerts_per_source_from_file_and_tcp(daemon: DaemonProc) -> None:
    """A source seen only in the file and one seen only over TCP each raise their own alert."""
    daemon.start()
    with open(daemon.base / "logs" / "auth.log", "ab") as f:
        f.write(b"".join(sshd_line(_now_ts(), "198.51.100.1", n) + b"\n" for n in range(6)))
    daemon.send_tcp("syslog_tcp", [b"<38>" + sshd_line(_now_ts(), "198.51.100.2", n) for n in range(6)])
    alerts = daemon.wait_alerts(2)
    assert sorted(a["group"]["source.ip"] for a in alerts) == ["198.51.100.1", "198.51.100.2"]
    assert all(a["severity"] == "high" and a["message"].startswith("5 failed SSH logins") for a in alerts)
    time.sleep(1.0)  # the sixth failure of each source is inside the same window: no second alert
    assert len(daemon.alerts()) == 2
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_file_lines_written_while_stopped_are_read_after_restart(daemon: DaemonProc) -> None:
    """Lines appended while the daemon is down are picked up at the next start, from the committed offset."""
    daemon.start()
    log_file = daemon.base / "logs" / "auth.log"
    with open(log_file, "ab") as f:
        f.write(b"".join(sshd_line(_now_ts(), "192.0.2.77", n) + b"\n" for n in range(3)))
    wait_for(lambda: b'siem_events_parsed_total{format="syslog",input="auth_files"} 3.0' in _scrape(daemon), 20,
             "3 lines parsed")
    assert daemon.terminate() == 0
    with open(log_file, "ab") as f:
        f.write(b"".join(sshd_line(_now_ts(), "192.0.2.77", n) + b"\n" for n in range(3, 6)))
    daemon.start()
    alerts = daemon.wait_alerts(1)
    assert [(a["group"], a["count"]) for a in alerts] == [({"source.ip": "192.0.2.77"}, 5)]
    assert daemon.terminate() == 0


def _scrape(daemon: DaemonProc) -> bytes:
    import urllib.request

    try:
        with urllib.request.urlopen(daemon.metrics_url(), timeout=5) as r:
            return r.read()
    except OSError:
        return b""


@pytest.mark.timeout(90)
def test_absent_rule_fires_without_traffic(tmp_path: Path) -> None:
    """A host that goes silent is noticed by an `absent` rule although no further event arrives: the idle
    timer moves the watermark on with the wall clock."""
    rules = 'rule host_silent { severity medium absent event.dataset == "sshd" for 3s by host.name }\n'
    d = DaemonProc.create(tmp_path, rules,
                          {"syslog_tcp": {"type": "syslog", "protocol": "tcp", "address": "127.0.0.1", "port": 0}},
                          daemon={"lateness": "1s", "idle_advance": "300ms"})
    try:
        d.start()
        d.send_tcp("syslog_tcp", [b"<38>" + sshd_line(_now_ts(), "192.0.2.1", 1)])
        alerts = d.wait_alerts(1, timeout_s=30)
        assert [(a["rule"], a["group"]) for a in alerts] == [("host_silent", {"host.name": "web1"})]
        assert d.terminate() == 0
    finally:
        d.close()


@pytest.mark.timeout(90)
def test_a_source_with_a_broken_clock_does_not_hold_back_live_alerts(daemon: DaemonProc) -> None:
    """A sender stuck in 2001 keeps sending while a live host is attacked: the live alert still comes (the
    stale source is left out of the watermark and its events count as late)."""
    import socket
    import threading

    daemon.start()
    stop = threading.Event()

    def stale_sender() -> None:
        with socket.create_connection(("127.0.0.1", daemon.port("syslog_tcp")), timeout=10) as s:
            n = 0
            while not stop.is_set():
                s.sendall(b"<38>1 2001-01-01T00:00:00Z oldbox sshd 1 - - Failed password for x from "
                          b"192.0.2.200 port 1 ssh2\n")
                n += 1
                time.sleep(0.05)

    sender = threading.Thread(target=stale_sender, daemon=True)
    sender.start()
    try:
        time.sleep(1.0)
        with open(daemon.base / "logs" / "auth.log", "ab") as f:
            f.write(b"".join(sshd_line(_now_ts(), "203.0.113.99", n) + b"\n" for n in range(5)))
        wait_for(lambda: "203.0.113.99" in {a["group"]["source.ip"] for a in daemon.alerts()}, 20,
                 "the live source's alert")
        assert sender.is_alive()  # the stale source was still sending when the alert came
    finally:
        stop.set()
        sender.join(5)
    assert daemon.terminate() == 0


@pytest.mark.timeout(120)
def test_parse_worker_processes_give_the_alerts_of_replay(tmp_path: Path) -> None:
    """With parse_workers = 2, a backfilled file is parsed in worker processes: same alerts as replay,
    and the parsed-events counter still counts every line."""
    import subprocess
    import sys
    import urllib.request

    (tmp_path / "logs").mkdir()
    log_file = tmp_path / "logs" / "auth.log"
    lines = [sshd_line(f"Mar  9 10:{i // 60:02d}:{i % 60:02d}", f"198.51.100.{i % 7}", i) for i in range(3000)]
    log_file.write_bytes(b"".join(line + b"\n" for line in lines))
    d = DaemonProc.create(
        tmp_path, SSH_RULES,
        inputs={"auth_files": {"type": "files", "format": "syslog", "paths": [str(log_file)], "poll_interval": "50ms"}},
        daemon={"lateness": "1s", "idle_advance": "300ms", "parse_workers": 2, "timezone": "UTC"},
    )
    try:
        d.start()
        (tmp_path / "r.rules").write_text(SSH_RULES)
        replay = subprocess.run([sys.executable, "-m", "siem", "replay", "--rules", str(tmp_path / "r.rules"),
                                 "--timezone", "UTC", str(log_file)], capture_output=True, text=True, timeout=60)
        expected = sorted(line for line in replay.stdout.splitlines() if line)
        d.wait_alerts(len(expected))
        port = d.config.read_text().split("metrics_address = \"127.0.0.1:")[1].split("\"")[0]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        parsed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith('siem_events_parsed_total{') and 'input="auth_files"' in line)
        assert parsed == 3000
        assert sorted(a["id"] for a in d.alerts()) == sorted(__import__("orjson").loads(x)["id"] for x in expected)
        assert d.terminate() == 0
    finally:
        d.close()
