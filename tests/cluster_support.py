"""Scale-out test clusters: role processes (collector, matcher, correlators, notifiers) over one broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

from daemon_support import DaemonProc, write_config
from kafka_broker import TansuBroker


class Cluster:
    """Role processes sharing one set of topics and groups (a fresh set per cluster)."""

    def __init__(self, base: Path, broker: TansuBroker, inputs: dict[str, dict], rules: str | Path,
                 partitions: int = 4) -> None:
        self.base = base
        self.broker = broker
        self.inputs = inputs  # the collector's
        tag = self.tag = uuid.uuid4().hex[:8]  # topics ev.<tag>, m.<tag>, al.<tag>, st.<tag>; groups g?.<tag>
        base.mkdir(parents=True)
        if isinstance(rules, Path):
            self.rules = rules
        else:
            self.rules = base / "rules"
            self.rules.mkdir()
            (self.rules / "test.rules").write_text(rules)
        self.kafka = (
            f'\n[kafka]\nbootstrap_servers = ["{broker.bootstrap}"]\npartitions = {partitions}\nlinger_ms = 5\n'
            f"fetch_max_wait_ms = 100\nsession_timeout_ms = 3000\nheartbeat_interval_ms = 300\n"
            f'[kafka.topics]\nevents = "ev.{tag}"\nmatches = "m.{tag}"\nalerts = "al.{tag}"\nstate = "st.{tag}"\n'
            f'[kafka.groups]\nmatcher = "gm.{tag}"\ncorrelator = "gc.{tag}"\nnotifier = "gn.{tag}"\n')
        self.procs: dict[str, subprocess.Popen] = {}

    def restart(self, name: str) -> None:
        """Start `name` again on its own config and state (after a kill)."""
        d = self.base / name
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "siem", "run", "--config", str(d / "siem.toml")],
                                            stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))

    def start(self, name: str, role: str, **daemon: object) -> None:
        d = self.base / name
        d.mkdir()
        inputs = self.inputs if role == "collector" else {}
        config = write_config(d / "siem.toml", {
            "state_dir": str(d / "state"), "rules": [str(self.rules)], "role": role,
            "metrics_address": "127.0.0.1:0", "checkpoint_interval": "500ms", "lateness": "10s", "log_format": "json",
            **daemon}, inputs, self.kafka)
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "siem", "run", "--config", str(config)],
                                            stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "wb"))

    def start_roles(self, *roles: tuple[str, str], **daemon: object) -> None:
        for name, role in roles:
            self.start(name, role, **daemon)

    def notifiers(self) -> list[str]:
        return [n for n in self.procs if (self.base / n / "siem.toml").read_text().count('role = "notifier"')]

    def alert_records_of(self, name: str) -> list[dict]:
        return DaemonProc(self.base / name, self.base / name / "siem.toml", {}).alerts()

    def alert_records(self) -> list[dict]:
        """Every alert record of every notifier's alert log."""
        return [a for n in self.notifiers() for a in self.alert_records_of(n)]

    def alerts(self) -> list[str]:
        return [a["id"] for a in self.alert_records()]

    def holds_partitions(self, name: str) -> bool:
        """The last assignment the role logged is not empty."""
        text = (self.base / name / "stderr.log").read_text(errors="replace")
        got = [line for line in text.splitlines() if "partitions assigned" in line]
        return bool(got) and "(none)" not in got[-1]

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
