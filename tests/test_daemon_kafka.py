"""Scale-out over Kafka against a real Kafka-protocol broker (Tansu): collector -> matcher -> two correlators
(one SIGKILLed mid-stream) -> notifier gives exactly the alerts of a one-correlator run and of `siem replay`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from daemon_support import DaemonProc, replay_ids, wait_for, write_config
from kafka_broker import TansuBroker

RULES = """
macro ssh_failure = event.dataset == "sshd" and event.outcome == "failure"

rule ssh_bruteforce {
  severity high
  when ssh_failure
  count >= 5 within 2m by source.ip
}

rule ssh_spray {
  severity medium
  when ssh_failure
  distinct(user.name) >= 3 within 5m by source.ip
  suppress 10m by source.ip
}
"""
IPS = [f"203.0.113.{i}" for i in range(1, 9)]
USERS = ["root", "admin", "oracle", "git", "ubuntu"]
T0 = 1_709_280_000  # 2024-03-01T08:00:00Z


def lines(n: int) -> list[bytes]:
    """n sshd failures over 8 sources in event-time order, then one success per source 2 h later (moves
    every partition's watermark past the failures)."""
    import random

    rng = random.Random(7)
    t = T0
    out = []
    for i in range(n):
        t += rng.choice([1, 3, 10, 40])
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        out.append(f"<38>1 {ts} web1 sshd {1000 + i} - - Failed password for {rng.choice(USERS)} from "
                   f"{rng.choice(IPS)} port {20000 + i} ssh2".encode())
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 7200))
    out += [f"<38>1 {ts} web1 sshd 9 - - Accepted publickey for deploy from {ip} port 22 ssh2".encode() for ip in IPS]
    return out


class Cluster:
    """Role processes sharing one set of topics and groups (a fresh set per cluster)."""

    def __init__(self, base: Path, broker: TansuBroker, log_file: Path, rules: str = RULES) -> None:
        self.base = base
        self.broker = broker
        self.log_file = log_file
        tag = uuid.uuid4().hex[:8]
        (base / "rules").mkdir(parents=True)
        (base / "rules" / "test.rules").write_text(rules)
        self.kafka = (
            f'\n[kafka]\nbootstrap_servers = ["{broker.bootstrap}"]\npartitions = 4\nlinger_ms = 5\n'
            f"fetch_max_wait_ms = 100\nsession_timeout_ms = 3000\nheartbeat_interval_ms = 300\n"
            f'[kafka.topics]\nevents = "ev.{tag}"\nmatches = "m.{tag}"\nalerts = "al.{tag}"\nstate = "st.{tag}"\n'
            f'[kafka.groups]\nmatcher = "gm.{tag}"\ncorrelator = "gc.{tag}"\nnotifier = "gn.{tag}"\n')
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, role: str, **daemon: object) -> None:
        d = self.base / name
        d.mkdir()
        inputs = {}
        if role == "collector":
            inputs = {"auth": {"type": "files", "format": "syslog", "paths": [str(self.log_file)],
                               "poll_interval": "50ms"}}
        config = write_config(d / "siem.toml", {
            "state_dir": str(d / "state"), "rules": [str(self.base / "rules")], "role": role,
            "metrics_address": "127.0.0.1:0", "checkpoint_interval": "500ms", "lateness": "10s", "log_format": "json",
            **daemon}, inputs, self.kafka)
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "siem", "run", "--config", str(config)],
                                            stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "wb"))

    def alerts(self) -> list[str]:
        d = DaemonProc(self.base / "notifier", self.base / "notifier" / "siem.toml", {})
        return [a["id"] for a in d.alerts()]

    def diagnose(self) -> str:
        """Key counters of every role, for a failure message."""
        import json
        import urllib.request

        from siem.metrics import parse_samples

        out = []
        for name in self.procs:
            try:
                info = json.loads((self.base / name / "state" / "run.json").read_text())
                with urllib.request.urlopen(f"http://127.0.0.1:{info['metrics_port']}/metrics", timeout=5) as r:
                    samples = parse_samples(r.read().decode())
            except (OSError, ValueError, KeyError) as exc:
                out.append(f"{name}: {exc}")
                continue
            keep = ("siem_events_parsed_total", "siem_rule_matches_total", "siem_alerts_fired_total",
                    "siem_alerts_duplicate_total", "siem_kafka_rebalances_total", "siem_kafka_commit_failed_total")
            got = {k: sum(v for n, _, v in samples if n == k) for k in keep}
            out.append(f"{name}: {got}")
        return "; ".join(out)

    def check_alive(self) -> bool:
        for name, p in self.procs.items():
            if p.poll() is not None and p.returncode not in (0, -9):
                raise AssertionError(f"{name} exited {p.returncode}: "
                                     f"{(self.base / name / 'stderr.log').read_text()[-3000:]}")
        return True

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def settle(cluster: Cluster, want: int, timeout_s: float = 90) -> list[str]:
    try:
        wait_for(lambda: cluster.check_alive() and len(set(cluster.alerts())) >= want, timeout_s,
                 f"{want} alerts from the cluster", interval_s=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; got {len(cluster.alerts())}; {cluster.diagnose()}") from None
    time.sleep(2.0)  # nothing more may come
    return cluster.alerts()


@pytest.mark.timeout(240)
def test_two_correlators_one_killed_give_the_alerts_of_one(kafka_broker: TansuBroker, tmp_path: Path) -> None:
    """Matcher + two correlators (one SIGKILLed mid-stream, its partitions restored by the other) + notifier:
    the same alert ids as a single-correlator run and as `siem replay`, none logged twice."""
    feed = lines(1500)
    full = tmp_path / "all.log"
    full.write_bytes(b"".join(line + b"\n" for line in feed))
    expected = sorted(replay_ids(_rules(tmp_path), [full]))
    assert len(expected) >= 20

    one = Cluster(tmp_path / "one", kafka_broker, full)
    try:
        for name, role in (("collector", "collector"), ("matcher", "matcher"), ("correlator", "correlator"),
                           ("notifier", "notifier")):
            one.start(name, role)
        single = settle(one, len(expected))
    finally:
        one.stop()
    assert sorted(single) == expected

    growing = tmp_path / "growing.log"
    growing.touch()
    two = Cluster(tmp_path / "two", kafka_broker, growing)
    written = threading.Event()

    def writer() -> None:
        with open(growing, "ab", buffering=0) as f:
            for i in range(0, len(feed), 25):
                f.write(b"".join(line + b"\n" for line in feed[i: i + 25]))
                time.sleep(0.25)
        written.set()

    try:
        for name, role in (("collector", "collector"), ("matcher", "matcher"), ("c1", "correlator"),
                           ("c2", "correlator"), ("notifier", "notifier")):
            two.start(name, role)
        wait_for(lambda: two.check_alive() and all(_holds_partitions(two, c) for c in ("c1", "c2")), 60,
                 "both correlators to hold partitions")
        feeder = threading.Thread(target=writer, daemon=True)
        feeder.start()
        wait_for(lambda: two.check_alive() and len(two.alerts()) >= len(expected) // 4, 90, "a quarter of the alerts")
        two.procs["c1"].send_signal(signal.SIGKILL)
        assert not written.is_set(), "the kill should land mid-stream"
        feeder.join(60)
        both = settle(two, len(expected))
    finally:
        two.stop()
    assert two.procs["c1"].returncode == -9
    assert len(both) == len(set(both)), "an alert was logged twice"
    assert sorted(both) == expected


def _holds_partitions(cluster: Cluster, name: str) -> bool:
    """The last assignment the correlator logged is not empty."""
    text = (cluster.base / name / "stderr.log").read_text(errors="replace")
    got = [line for line in text.splitlines() if "partitions assigned" in line]
    return bool(got) and "(none)" not in got[-1]


def _rules(tmp_path: Path) -> Path:
    d = tmp_path / "replay-rules"
    d.mkdir(exist_ok=True)
    (d / "test.rules").write_text(RULES)
    return d


@pytest.mark.timeout(120)
def test_absent_rule_fires_without_traffic_over_kafka(kafka_broker: TansuBroker, tmp_path: Path) -> None:
    """A host that falls silent is noticed by an `absent` rule in the correlator although nothing else
    arrives: the matcher's watermark follows the wall clock when no live event is coming."""
    from datetime import UTC, datetime

    log_file = tmp_path / "live.log"
    log_file.touch()
    rules = 'rule host_silent { severity medium absent event.dataset == "sshd" for 3s by host.name }\n'
    cluster = Cluster(tmp_path / "c", kafka_broker, log_file, rules=rules)
    fast = {"lateness": "1s", "idle_advance": "500ms"}
    try:
        for name in ("collector", "matcher", "correlator", "notifier"):
            cluster.start(name, name, **fast)
        wait_for(lambda: cluster.check_alive() and _holds_partitions(cluster, "correlator"), 60, "the correlator")
        ts = datetime.now(UTC).strftime("%b %e %H:%M:%S")
        log_file.write_bytes(f"{ts} web7 sshd[1]: Failed password for root from 192.0.2.3 port 1 ssh2\n".encode())
        alerts = wait_for(lambda: cluster.check_alive() and DaemonProc(
            cluster.base / "notifier", Path("-"), {}).alerts(), 60, "the absent alert")
        assert [(a["rule"], a["group"]) for a in alerts] == [("host_silent", {"host.name": "web7"})]  # type: ignore
    finally:
        cluster.stop()
