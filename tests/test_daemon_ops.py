"""The daemon under operation: reload (SIGHUP / `siem reload`), SIGTERM, sd_notify, metrics, `siem status`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemon_support import SSH_RULES, DaemonProc, sshd_line, wait_for
from notify_socket import NotifySocket

from siem.log.checkpoint import load_checkpoint
from siem.metrics import parse_samples

TCP = {"syslog_tcp": {"type": "syslog", "protocol": "tcp", "address": "127.0.0.1", "port": 0}}
FAST = {"lateness": "1s", "idle_advance": "300ms"}


def _ts() -> str:
    return datetime.now(UTC).strftime("%b %e %H:%M:%S")


def _failures(ip: str, n: int, start: int = 0) -> list[bytes]:
    return [b"<38>" + sshd_line(_ts(), ip, start + i) for i in range(n)]


def _scrape(d: DaemonProc) -> str:
    with urllib.request.urlopen(d.metrics_url(), timeout=5) as r:
        return r.read().decode()


def _metric(d: DaemonProc, name: str, **labels: str) -> float:
    try:
        samples = parse_samples(_scrape(d))
    except OSError:
        return 0.0
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def _siem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siem", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def daemon(tmp_path: Path):
    d = DaemonProc.create(tmp_path, SSH_RULES, TCP, daemon=FAST)
    yield d
    d.close()


@pytest.mark.timeout(90)
def test_broken_rules_on_reload_keep_the_old_rules_firing(daemon: DaemonProc) -> None:
    """`siem reload` with a broken rule file: the failure is counted, the old rule set keeps firing."""
    daemon.start()
    daemon.send_tcp("syslog_tcp", _failures("203.0.113.1", 5))
    daemon.wait_alerts(1)
    (daemon.base / "rules" / "test.rules").write_text(SSH_RULES.replace("count >= 5", "count >= 5 within"))
    out = _siem("reload", "--config", str(daemon.config))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: _metric(daemon, "siem_reloads_total", result="failure") == 1, 20, "a failed reload counted")
    daemon.send_tcp("syslog_tcp", _failures("203.0.113.2", 5))
    alerts = daemon.wait_alerts(2)
    assert sorted(a["group"]["source.ip"] for a in alerts) == ["203.0.113.1", "203.0.113.2"]
    assert _metric(daemon, "siem_reloads_total", result="success") == 0
    assert "reload failed" in daemon.stderr()
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_valid_reload_keeps_window_state_of_unchanged_rules(daemon: DaemonProc) -> None:
    """SIGHUP with an added rule: 3 failures before and 2 after the reload still make one 5-count alert,
    and the new rule is live."""
    daemon.start()
    daemon.send_tcp("syslog_tcp", _failures("192.0.2.9", 3))
    wait_for(lambda: _metric(daemon, "siem_rule_matches_total", rule="ssh_bruteforce") == 3, 20, "3 matches")
    new_rule = '\nrule root_failure { severity low when ssh_failure and user.name == "oracle" }\n'
    (daemon.base / "rules" / "test.rules").write_text(SSH_RULES + new_rule)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: _metric(daemon, "siem_reloads_total", result="success") == 1, 20, "a successful reload")
    assert _metric(daemon, "siem_rules_loaded") == 2
    daemon.send_tcp("syslog_tcp", _failures("192.0.2.9", 2, start=3))
    daemon.send_tcp("syslog_tcp", [b"<38>" + sshd_line(_ts(), "192.0.2.10", 99, user="oracle")])
    alerts = daemon.wait_alerts(2)
    assert sorted((a["rule"], a["count"]) for a in alerts) == [("root_failure", 1), ("ssh_bruteforce", 5)]
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_sigterm_drains_checkpoints_and_exits_zero(daemon: DaemonProc) -> None:
    """SIGTERM right after a burst: exit 0, and the checkpoint covers every record in the log."""
    daemon.start()
    daemon.send_tcp("syslog_tcp", _failures("198.51.100.3", 200))
    wait_for(lambda: _metric(daemon, "siem_events_received_total", input="syslog_tcp") == 200, 20, "200 received")
    assert daemon.terminate() == 0
    ckpt = load_checkpoint(daemon.state_dir)
    assert ckpt is not None
    from siem.log.local import LocalLog

    with LocalLog(daemon.state_dir / "log") as lg:
        assert ckpt.offset == lg.end_offset >= 200
    assert "stopped cleanly" in daemon.stderr()


@pytest.mark.timeout(90)
def test_notify_socket_gets_ready_watchdog_reloading_stopping(tmp_path: Path) -> None:
    """The real daemon speaks sd_notify: READY=1 once inputs are bound, WATCHDOG=1, RELOADING=1 on SIGHUP,
    STOPPING=1 on SIGTERM."""
    with NotifySocket() as ns:
        d = DaemonProc.create(tmp_path, SSH_RULES, TCP, daemon=FAST, env=ns.env(watchdog_usec=1_000_000))
        try:
            d.start(wait_ready=False)
            ready = ns.wait_for("READY", timeout_s=30)
            assert ready.pid == d.proc.pid  # type: ignore[union-attr]
            d.send_tcp("syslog_tcp", _failures("203.0.113.7", 1))  # bound before READY
            ns.wait_for("WATCHDOG", timeout_s=5)
            d.signal(signal.SIGHUP)
            ns.wait_for("RELOADING", timeout_s=10)
            assert d.terminate() == 0
            ns.wait_for("STOPPING", timeout_s=10)
        finally:
            d.close()
    assert any("STATUS" in n for n in ns.received)


@pytest.mark.timeout(120)
def test_metrics_move_with_traffic_and_pass_promtool(daemon: DaemonProc, tmp_path: Path) -> None:
    """Counters on /metrics move as events flow and alerts fire; `promtool check metrics` accepts the scrape;
    `siem status` summarises it."""
    daemon.start()
    before = _metric(daemon, "siem_events_received_total", input="syslog_tcp")
    daemon.send_tcp("syslog_tcp", _failures("203.0.113.20", 6))
    daemon.wait_alerts(1)
    wait_for(lambda: _metric(daemon, "siem_alerts_fired_total", rule="ssh_bruteforce", severity="high") == 1, 20,
             "alerts_fired")
    assert (before, _metric(daemon, "siem_events_received_total", input="syslog_tcp")) == (0, 6)
    assert _metric(daemon, "siem_events_parsed_total", input="syslog_tcp", format="syslog") == 6
    assert _metric(daemon, "siem_log_appended_records_total") >= 6
    assert _metric(daemon, "siem_batches_total") >= 1
    text = _scrape(daemon)
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    status = _siem("status", "--config", str(daemon.config), "--interval", "0")
    assert status.returncode == 0, status.stderr
    assert "syslog_tcp" in status.stdout
    time.sleep(0)
    assert daemon.terminate() == 0


@pytest.mark.timeout(120)
def test_a_small_intake_queue_slows_tcp_senders_instead_of_dropping(tmp_path: Path) -> None:
    """With a 16-record intake queue, 20,000 lines sent over one TCP connection all reach the log: the
    queue's back-pressure slows the reads (and the sender), nothing is dropped."""
    d = DaemonProc.create(tmp_path, SSH_RULES, TCP, daemon={**FAST, "intake_queue_size": 16})
    try:
        d.start()
        d.send_tcp("syslog_tcp", [b"<38>" + sshd_line(_ts(), f"10.9.{i % 250}.{i % 200}", i) for i in range(20_000)])
        wait_for(lambda: _metric(d, "siem_events_parsed_total", input="syslog_tcp") == 20_000, 60,
                 "20,000 parsed")
        assert _metric(d, "siem_input_dropped_total") == 0
        assert _metric(d, "siem_log_appended_records_total") >= 20_000
        assert d.terminate() == 0
    finally:
        d.close()


@pytest.mark.timeout(90)
def test_reload_starts_an_input_added_to_the_config(daemon: DaemonProc) -> None:
    """A files input added to the config is started by SIGHUP and its lines raise alerts."""
    from daemon_support import write_config

    daemon.start()
    log_file = daemon.base / "added.log"
    log_file.write_bytes(b"".join(sshd_line(_ts(), "198.51.100.77", n) + b"\n" for n in range(5)))
    settings = {"state_dir": str(daemon.state_dir), "rules": [str(daemon.base / "rules")],
                "metrics_address": daemon.run_info()["metrics_address"], "log_format": "json", **FAST}
    write_config(daemon.config, settings, {**TCP, "added": {"type": "files", "format": "syslog",
                                                            "paths": [str(log_file)], "poll_interval": "50ms"}})
    daemon.signal(signal.SIGHUP)
    alerts = daemon.wait_alerts(1)
    assert [a["group"] for a in alerts] == [{"source.ip": "198.51.100.77"}]
    assert sorted(daemon.run_info()["inputs"]) == ["added", "syslog_tcp"]
    assert daemon.terminate() == 0


@pytest.mark.timeout(120)
def test_sigterm_mid_burst_loses_nothing_the_senders_wrote(tmp_path: Path) -> None:
    """SIGTERM while four TCP senders write as fast as they can (most of what they wrote is still in the
    kernel's buffers and the intake queue): the daemon stops accepting, reads on until every connection is
    quiet (within drain_timeout), logs it all and exits 0. Every line whose write returned is in the log;
    before the drain, what the kernel and the connections held was lost."""
    d = DaemonProc.create(tmp_path, SSH_RULES, TCP, daemon={**FAST, "drain_timeout": "20s", "intake_queue_size": 500})
    try:
        _sigterm_mid_burst(d)
    finally:
        d.close()


def _sigterm_mid_burst(d: DaemonProc) -> None:
    import json
    import socket
    import threading

    d.start()
    per_conn, written = 12_000, [0, 0, 0, 0]
    port = d.port("syslog_tcp")

    def send(k: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for i in range(0, per_conn, 200):
                chunk = b"".join(b"<38>" + sshd_line(_ts(), f"192.0.2.{k}", j, user=f"u{k}-{j}") + b"\n"
                                 for j in range(i, i + 200))
                s.sendall(chunk)
                written[k] = i + 200

    senders = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(4)]
    for t in senders:
        t.start()
    wait_for(lambda: _metric(d, "siem_events_received_total") >= 4_000, 30, "the burst to be under way")
    received = _metric(d, "siem_events_received_total")
    d.signal(signal.SIGTERM)
    assert received < 4 * per_conn / 2, "the daemon had read most of it before SIGTERM: not a mid-burst test"
    for t in senders:
        t.join(30)
    assert d.proc.wait(40) == 0, d.stderr()[-2000:]
    dump = _siem("log", "dump", str(d.state_dir))
    got = {json.loads(line)["event"].get("user.name") for line in dump.stdout.splitlines() if '"event"' in line}
    assert sum(written) == 4 * per_conn, f"a sender was cut off after {written}"
    assert len(got) >= 4 * per_conn, f"{4 * per_conn - len(got)} of {4 * per_conn} written lines are not in the log"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


@pytest.mark.timeout(120)
def test_a_hung_checkpoint_writer_stops_the_watchdog_and_ages_the_checkpoint(tmp_path: Path) -> None:
    """The forked checkpoint writer is frozen (SIGSTOP) mid-write: the engine stops moving, so the daemon
    stops feeding systemd's watchdog, says why, shows siem_stage_stalled 1 and a growing
    siem_checkpoint_age_seconds (what SiemCheckpointStale alerts on). Once the writer dies, it recovers."""
    import os
    import threading

    with NotifySocket() as ns:
        d = DaemonProc.create(tmp_path, SSH_RULES, TCP, env=ns.env(watchdog_usec=1_000_000), daemon={
            **FAST, "parse_workers": 0, "checkpoint_interval": "100ms", "stall_timeout": "2s"})
        stop = threading.Event()
        frozen: list[int] = []
        try:
            d.start(wait_ready=False)
            ns.wait_for("READY", timeout_s=30)

            def traffic() -> None:
                n = 0
                while not stop.is_set():
                    try:
                        d.send_tcp("syslog_tcp", _failures("203.0.113.9", 50, n))
                    except OSError:
                        return
                    n += 50
                    time.sleep(0.02)

            threading.Thread(target=traffic, daemon=True).start()
            deadline = time.monotonic() + 30
            while not frozen and time.monotonic() < deadline:  # catch a writer while it lives
                for child in _children(d.proc.pid):  # type: ignore[union-attr]
                    os.kill(child, signal.SIGSTOP)
                    frozen.append(child)
            assert frozen, "no checkpoint writer was seen"
            wait_for(lambda: _metric(d, "siem_stage_stalled") == 1, 15, "the stall to be noticed")
            age = _metric(d, "siem_checkpoint_age_seconds")
            assert age >= 2, age
            ns.received.clear()
            time.sleep(2.5)
            assert not [n for n in ns.received if "WATCHDOG" in n], "still pinging the watchdog while stalled"
            assert _metric(d, "siem_checkpoint_age_seconds") > age + 2
            assert "no longer telling systemd's watchdog" in d.stderr()
            for child in frozen:
                os.kill(child, signal.SIGKILL)
            wait_for(lambda: _metric(d, "siem_stage_stalled") == 0, 15, "the engine to move again")
            ns.wait_for("WATCHDOG", timeout_s=5)
            stop.set()
            assert d.terminate() == 0
        finally:
            stop.set()
            for child in frozen:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            d.close()


@pytest.mark.timeout(120)
def test_sigterm_with_the_state_disk_full_exits_within_the_drain_bound(tmp_path: Path) -> None:
    """The state directory on a 4 MiB tmpfs, filled up while the daemon runs: appends are refused and
    retried (intake waits, nothing is dropped), and SIGTERM still ends the daemon within drain_timeout,
    saying how many accepted records did not reach the log."""
    import os
    import shutil

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    state = tmp_path / "state"  # DaemonProc's state directory
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)], check=True)
    try:
        d = DaemonProc.create(tmp_path, SSH_RULES, TCP, daemon={**FAST, "drain_timeout": "3s"})
        try:
            d.start()
            with open(state / "filler", "wb") as f:  # what is left of the disk
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            d.send_tcp("syslog_tcp", _failures("203.0.113.8", 2000))
            wait_for(lambda: "cannot append to the log" in d.stderr(), 30, "the full disk to be noticed")
            started = time.monotonic()
            d.signal(signal.SIGTERM)
            code = d.proc.wait(30)  # type: ignore[union-attr]
            took = time.monotonic() - started
        finally:
            d.close()
        assert took < 3 + 10, f"SIGTERM took {took:.1f}s"
        assert code in (0, 1), d.stderr()[-2000:]
        assert "could not be logged within the drain bound" in d.stderr()
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
