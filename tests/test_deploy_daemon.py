"""The real daemon under a stand-in for systemd: it speaks sd_notify (READY, WATCHDOG, STATUS,
RELOADING, STOPPING) to a notify socket, and its metrics endpoint moves as events flow and passes
`promtool check metrics`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_socket import NotifySocket

from siem import metrics

RULE = """
rule deploy_test_sshd_failure {
  title    "sshd failure seen"
  severity low
  when     event.dataset == "sshd" and event.outcome == "failure"
  message  "failed login for {user.name}"
}
"""
TOKEN = "tok-5ecret-9f8e7d"
LINE = "<38>Nov 25 10:00:{sec:02d} web1 sshd[4242]: Failed password for root from 192.0.2.{n} port 4{n:04d} ssh2\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _total(text: str, name: str, **match: str) -> float:
    return sum(v for n, labels, v in metrics.parse_samples(text)
               if n == name and all(labels.get(k) == m for k, m in match.items()))


def _wait_until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


class Daemon:
    def __init__(self, tmp: Path, ns: NotifySocket) -> None:
        (tmp / "rules").mkdir()
        (tmp / "rules" / "deploy.rules").write_text(RULE)
        self.metrics_port = _free_port()
        self.state = tmp / "state"
        config = tmp / "siem.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{self.state}"\nrules = ["{tmp / "rules"}"]\n'
            f'metrics_address = "127.0.0.1:{self.metrics_port}"\nstatus_interval = "1s"\nlog_format = "json"\nlog_level = "debug"\n'
            '[inputs.tcp]\ntype = "syslog"\nprotocol = "tcp"\naddress = "127.0.0.1"\nport = 0\n'
            '[alerting]\ndefault_route = "hook"\ngroup_wait = "0s"\n'
            '[[alerting.routes]]\nname = "hook"\nurls_env = "SIEM_TEST_HOOK_URLS"\n'
        )
        siem = Path(sys.executable).parent / "siem"
        # nothing listens on port 9: deliveries fail, and get logged - without the token
        env = {**os.environ, **ns.env(watchdog_usec=2_000_000), "SIEM_TEST_HOOK_URLS": f"json://127.0.0.1:9/hook?token={TOKEN}"}
        self.stderr = open(tmp / "stderr.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(siem), "run", "--config", str(config)], env=env, cwd=tmp,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.log_path = tmp / "stderr.log"

    def syslog_port(self) -> int:
        info = json.loads((self.state / "run.json").read_text())
        return int(info["inputs"]["tcp"]["port"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, NotifySocket]]:
    with NotifySocket() as ns:
        d = Daemon(tmp_path, ns)
        try:
            yield d, ns
        finally:
            d.stop()


@pytest.mark.timeout(120)
def test_daemon_notifies_systemd_and_exports_moving_metrics(daemon: tuple[Daemon, NotifySocket]) -> None:
    """READY=1 from the main pid, WATCHDOG=1 pings, STATUS lines, RELOADING=1 then READY=1 on SIGHUP,
    STOPPING=1 on SIGTERM; counters follow the events sent; promtool accepts the exposition."""
    d, ns = daemon
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; `make test` installs it (deploy/install-test-deps.sh)")
    try:
        ready = ns.wait_for("READY", timeout_s=60)
    except TimeoutError:
        pytest.fail(f"no READY=1; daemon log:\n{d.log_path.read_text()}")
    assert ready.pid == d.proc.pid

    before = _scrape(d.metrics_port)
    with socket.create_connection(("127.0.0.1", d.syslog_port()), timeout=10) as conn:
        conn.sendall("".join(LINE.format(sec=i, n=i + 1) for i in range(25)).encode())

    rule = "deploy_test_sshd_failure"

    def moved() -> bool:
        text = _scrape(d.metrics_port)
        return (_total(text, "siem_events_received_total", input="tcp") >= 25
                and _total(text, "siem_log_appended_records_total") >= 25
                and _total(text, "siem_alerts_fired_total", rule=rule) > 0)

    _wait_until(moved, 30, "25 events received and appended, and an alert fired")
    after = _scrape(d.metrics_port)
    sent_bytes = sum(len(LINE.format(sec=i, n=i + 1)) for i in range(25))
    assert [_total(before, "siem_events_received_total", input="tcp"),
            _total(after, "siem_events_received_total", input="tcp"),
            _total(after, "siem_events_parsed_total", input="tcp"),
            _total(after, "siem_received_bytes_total", input="tcp")] == [0, 25, 25, sent_bytes]
    assert _total(after, "siem_rule_matches_total", rule=rule) > _total(before, "siem_rule_matches_total", rule=rule)
    check = subprocess.run([promtool, "check", "metrics"], input=after, capture_output=True, text=True, timeout=30)
    assert (check.returncode, check.stdout + check.stderr) == (0, "")

    ns.wait_for("WATCHDOG", timeout_s=30)
    ns.wait_for("WATCHDOG", timeout_s=30)
    status = ns.wait_for("STATUS", timeout_s=30)
    assert status.get("STATUS")

    d.proc.send_signal(signal.SIGHUP)
    reloading = ns.wait_for("RELOADING", timeout_s=30)
    assert reloading.get("MONOTONIC_USEC") is not None
    ns.wait_for("READY", timeout_s=30)

    d.proc.send_signal(signal.SIGTERM)
    ns.wait_for("STOPPING", timeout_s=60)
    assert d.proc.wait(timeout=60) == 0
    senders = {note.pid for note in ns.received}
    assert senders == {d.proc.pid}


@pytest.mark.timeout(120)
def test_daemon_logs_are_json_lines_without_secrets(daemon: tuple[Daemon, NotifySocket]) -> None:
    """Every stderr line of the daemon is a JSON object, and the webhook token never appears, even
    while deliveries to that webhook fail."""
    d, ns = daemon
    ns.wait_for("READY", timeout_s=60)
    with socket.create_connection(("127.0.0.1", d.syslog_port()), timeout=10) as conn:
        conn.sendall("".join(LINE.format(sec=i, n=i + 1) for i in range(25)).encode())
    _wait_until(lambda: _total(_scrape(d.metrics_port), "siem_notifications_failed_total") > 0, 60,
                "a failed delivery to the unreachable webhook")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0
    d.stderr.flush()
    lines = d.log_path.read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    assert (TOKEN in d.log_path.read_text(), len(docs) > 3, all({"ts", "level", "msg"} <= set(x) for x in docs)) == (
        False, True, True)
