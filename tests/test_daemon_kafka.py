"""Scale-out over Kafka against a real Kafka-protocol broker (Tansu): collector -> matcher -> two correlators
(one SIGKILLed mid-stream) -> notifier gives exactly the alerts of a one-correlator run and of `siem replay`."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from cluster_support import Cluster
from daemon_support import replay_ids, wait_for
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


def _file_input(path: Path) -> dict[str, dict]:
    return {"auth": {"type": "files", "format": "syslog", "paths": [str(path)], "poll_interval": "50ms"}}


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

    one = Cluster(tmp_path / "one", kafka_broker, _file_input(full), RULES)
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
    two = Cluster(tmp_path / "two", kafka_broker, _file_input(growing), RULES)
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
    return cluster.holds_partitions(name)


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
    cluster = Cluster(tmp_path / "c", kafka_broker, _file_input(log_file), rules)
    fast = {"lateness": "1s", "idle_advance": "500ms"}
    try:
        for name in ("collector", "matcher", "correlator", "notifier"):
            cluster.start(name, name, **fast)
        wait_for(lambda: cluster.check_alive() and _holds_partitions(cluster, "correlator"), 60, "the correlator")
        ts = datetime.now(UTC).strftime("%b %e %H:%M:%S")
        log_file.write_bytes(f"{ts} web7 sshd[1]: Failed password for root from 192.0.2.3 port 1 ssh2\n".encode())
        alerts = wait_for(lambda: cluster.check_alive() and cluster.alert_records(), 60, "the absent alert")
        assert [(a["rule"], a["group"]) for a in alerts] == [("host_silent", {"host.name": "web7"})]  # type: ignore
    finally:
        cluster.stop()


@pytest.mark.timeout(300)
def test_every_role_killed_mid_stream_gives_the_alerts_of_replay(kafka_broker: TansuBroker, tmp_path: Path) -> None:
    """collector, matcher, a correlator and a notifier are each SIGKILLed once while the log grows (the
    others restarted on their state): the alert ids are replay's, and no notifier logs one twice."""
    feed = lines(1500)
    full = tmp_path / "all.log"
    full.write_bytes(b"".join(line + b"\n" for line in feed))
    expected = sorted(replay_ids(_rules(tmp_path), [full]))
    growing = tmp_path / "growing.log"
    growing.touch()
    cluster = Cluster(tmp_path / "k", kafka_broker, _file_input(growing), RULES)
    kills = {12: ("collector", True), 24: ("matcher", True), 36: ("c1", False), 48: ("n1", True)}
    done: list[str] = []

    def writer() -> None:
        with open(growing, "ab", buffering=0) as f:
            for k, i in enumerate(range(0, len(feed), 25)):
                if k in kills:
                    name, again = kills[k]
                    cluster.procs[name].send_signal(signal.SIGKILL)
                    cluster.procs[name].wait(10)
                    done.append(name)
                    if again:
                        cluster.restart(name)
                f.write(b"".join(line + b"\n" for line in feed[i: i + 25]))
                time.sleep(0.25)

    try:
        cluster.start_roles(("collector", "collector"), ("matcher", "matcher"), ("c1", "correlator"),
                            ("c2", "correlator"), ("n1", "notifier"), ("n2", "notifier"))
        wait_for(lambda: cluster.check_alive() and all(cluster.holds_partitions(c) for c in ("c1", "c2", "n1", "n2")),
                 60, "both correlators and notifiers to hold partitions")
        feeder = threading.Thread(target=writer, daemon=True)
        feeder.start()
        feeder.join(120)
        assert done == ["collector", "matcher", "c1", "n1"]
        got = settle(cluster, len(expected), timeout_s=150)
        per = {n: [a["id"] for a in cluster.alert_records_of(n)] for n in ("n1", "n2")}
    finally:
        cluster.stop()
    assert sorted(set(got)) == expected
    for name, ids in per.items():
        assert len(ids) == len(set(ids)), f"{name} logged an alert twice"
    both = set(per["n1"]) & set(per["n2"])
    print(f"alerts {len(expected)}, logged by both notifiers after n1's kill: {len(both)}")


@pytest.mark.timeout(180)
def test_a_crafted_pickle_on_the_state_topic_is_refused_and_runs_nothing(kafka_broker: TansuBroker,
                                                                          tmp_path: Path) -> None:
    """What the correlator restored before: a pickle. One is put on siem.state for every matches partition,
    as the correlator's own snapshot (checksummed, the right key); the correlator refuses each (counted,
    logged), runs none of it, starts those partitions empty and still gives replay's alerts."""
    import asyncio
    import os
    import pickle

    from siem.log.checkpoint import encode_checkpoint
    from siem.log.kafka import KafkaProducerLog, build_config, ensure_topics

    class Exploit:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    feed = lines(300)
    full = tmp_path / "all.log"
    full.write_bytes(b"".join(line + b"\n" for line in feed))
    expected = sorted(replay_ids(_rules(tmp_path), [full]))
    cluster = Cluster(tmp_path / "k", kafka_broker, _file_input(full), RULES)
    config = build_config({"bootstrap_servers": [kafka_broker.bootstrap], "partitions": 4, "replication_factor": 1})
    tag = cluster.tag

    async def plant() -> None:
        await ensure_topics(config, [f"m.{tag}", f"st.{tag}"])
        async with KafkaProducerLog(config) as producer:
            payload = encode_checkpoint(0, pickle.dumps({"wm": 0, "rules": Exploit()}))
            await producer.send_many(f"st.{tag}", [(f"gc.{tag}|m.{tag}|{p}".encode(), payload) for p in range(4)])

    asyncio.run(plant())
    try:
        cluster.start_roles(("collector", "collector"), ("matcher", "matcher"), ("correlator", "correlator"),
                            ("notifier", "notifier"))
        got = settle(cluster, len(expected))
    finally:
        cluster.stop()
    assert not (tmp_path / "pwned").exists()
    assert sorted(got) == expected
    log_text = (cluster.base / "correlator" / "stderr.log").read_text()
    assert log_text.count("refused") >= 4, log_text[-2000:]
