"""A real Prometheus server (Debian's `prometheus`) scrapes a real siem metrics endpoint: every query of
the Grafana dashboard returns data, and every alerting rule loads and evaluates without error."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "siem-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "siem-dashboard.json"

# Every labelled metric gets a child and keeps moving, like a daemon under traffic.
SOURCE = textwrap.dedent(
    """
    import sys, time
    from prometheus_client.metrics import MetricWrapperBase
    from siem import metrics
    children = []
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            children.append(obj.labels(**{n: "x" for n in obj._labelnames}) if obj._labelnames else obj)
    print(metrics.serve("127.0.0.1", 0), flush=True)
    while True:
        for c in children:
            kind = c._type
            if kind == "counter":
                c.inc(3)
            elif kind == "gauge":
                c.set(time.time() if c._name.endswith("timestamp_seconds") else 5)
            elif kind == "histogram":
                c.observe(0.02)
        time.sleep(0.2)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (Debian package `prometheus`); `make test` installs it")
    tmp = tmp_path_factory.mktemp("prometheus")
    source = subprocess.Popen([sys.executable, "-c", SOURCE], stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen[str]] = [source]
    try:
        assert source.stdout is not None
        target_port = int(source.stdout.readline())
        (tmp / "rules.yml").write_text(RULES.read_text())
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules.yml]\n"
            "scrape_configs:\n"
            f"  - job_name: siem\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        port = _free_port()
        log = open(tmp / "prometheus.log", "w")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, text=True)
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # ready once the target has been scraped a few times (rate() needs two samples)
            try:
                got = _get(f"{base}/api/v1/query?query=count_over_time(up%5B1m%5D)")
                result = got["data"]["result"]  # type: ignore[index]
                if result and float(result[0]["value"][1]) >= 4:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                log.flush()
                pytest.fail(f"prometheus did not scrape the target:\n{(tmp / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
        log.close()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _query(base: str, expr: str) -> list[dict[str, object]]:
    got = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if got.get("status") != "success":
        raise AssertionError(f"{expr}: {got}")
    return got["data"]["result"]  # type: ignore[index,return-value]


@pytest.mark.timeout(120)
def test_every_dashboard_query_returns_data(prometheus: str) -> None:
    """Each panel query, with Grafana's variables filled in, gives at least one series."""
    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "10s").replace("$__range", "1m")
                    .replace("$instance", ".*"))
            if not _query(prometheus, expr):
                empty.append(f"{panel['title']} / {target['refId']}: {expr}")
    assert empty == []


@pytest.mark.timeout(120)
def test_every_alert_rule_evaluates(prometheus: str) -> None:
    """Prometheus loads every rule of siem-alerts.yml and evaluates it without error."""
    deadline = time.monotonic() + 30
    while True:
        groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]  # type: ignore[index]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    health = {r["name"]: (r["health"], r.get("lastError", "")) for r in rules}
    expected = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert (set(health), {k: v for k, v in health.items() if v != ("ok", "")}) == (expected, {})
