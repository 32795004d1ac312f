"""One pipeline, two wirings: replay, the embedded daemon and Kafka mode give the same alert ids.

The shipped pack over sample_logs/ (syslog, nginx, CloudTrail, with `absent` rules such as
cloudtrail_silent): `siem replay`, `siem run` embedded, and collector + matcher + 2 correlators +
2 notifiers over a Kafka-protocol broker. Every alert is in exactly one notifier's alert log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_support import Cluster
from daemon_support import ROOT, DaemonProc, replay_ids, wait_for
from kafka_broker import TansuBroker

from siem.config import sample_inputs


SAMPLES = ROOT / "sample_logs"  # read in place: two web rules group by log.file.path, so paths must agree


@pytest.fixture(scope="module")
def expected() -> list[str]:
    files = sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix not in (".md",))
    ids = replay_ids(ROOT / "rules", files)
    assert len(ids) >= 30 and len(ids) == len(set(ids))
    return sorted(ids)


def _settled(get: callable, want: int, timeout_s: float, what: str) -> list[str]:  # type: ignore[valid-type]
    wait_for(lambda: len(set(get())) >= want, timeout_s, what, interval_s=0.2)
    time.sleep(3.0)  # nothing more may come
    return get()


@pytest.mark.timeout(180)
def test_embedded_daemon_gives_replays_alerts(tmp_path: Path, expected: list[str]) -> None:
    d = DaemonProc.create(tmp_path / "d", "", sample_inputs(SAMPLES), daemon={"rules": [str(ROOT / "rules")]})
    try:
        d.start()
        got = _settled(lambda: [a["id"] for a in d.alerts()], len(expected), 90, "the embedded daemon's alerts")
    finally:
        d.close()
    assert sorted(got) == expected


@pytest.mark.timeout(300)
def test_kafka_mode_with_two_correlators_and_two_notifiers_gives_replays_alerts(
        kafka_broker: TansuBroker, tmp_path: Path, expected: list[str]) -> None:
    cluster = Cluster(tmp_path / "k", kafka_broker, sample_inputs(SAMPLES), ROOT / "rules")
    try:
        cluster.start_roles(("collector", "collector"), ("matcher", "matcher"), ("c1", "correlator"),
                            ("c2", "correlator"), ("n1", "notifier"), ("n2", "notifier"))
        got = _settled(lambda: cluster.check_alive() and cluster.alerts() or [], len(expected), 150,
                       "the cluster's alerts")
        per_notifier = {n: [a["id"] for a in DaemonProc(cluster.base / n, Path("-"), {}).alerts()]
                        for n in ("n1", "n2")}
        run = json.loads((cluster.base / "c1" / "state" / "run.json").read_text())
        status = subprocess.run([sys.executable, "-m", "siem", "status", "--interval", "0", "--url",
                                 f"http://127.0.0.1:{run['metrics_port']}/metrics"], capture_output=True, text=True)
    finally:
        cluster.stop()
    assert len(got) == len(set(got)), "an alert reached two notifiers or was logged twice"
    assert sorted(got) == expected
    assert all(per_notifier.values()), f"one notifier got nothing: {[len(v) for v in per_notifier.values()]}"
    assert status.returncode == 0, status.stderr
    assert "(role correlator)" in status.stdout.splitlines()[0]
    assert "kafka     group " in status.stdout and ": lag 0 records over " in status.stdout, status.stdout
