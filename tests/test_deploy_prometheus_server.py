"""A real Prometheus server (Debian's `prometheus`) scrapes a real siem metrics endpoint: every query of
the Grafana dashboard returns data, and every alerting rule loads and evaluates without error.

Twice: against a synthetic endpoint where every metric moves, and against a real daemon (the shipped
rules, a TLS and a TCP syslog input, a files input, one webhook route) that got a little traffic, so a
panel cannot stay empty because a labelled counter was never created (siem.config.init_metric_series)."""

from __future__ import annotations

import contextlib
import json
import threading
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from daemon_support import DaemonProc, sshd_line, wait_for

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


@contextlib.contextmanager
def _prometheus_scraping(tmp: Path, target_port: int) -> Iterator[str]:
    """A Prometheus server on 127.0.0.1 scraping 127.0.0.1:target_port as job siem every second, with the
    shipped alert rules; yields its base URL once the target has been scraped a few times."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (Debian package `prometheus`); `make test` installs it")
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
    try:
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
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    source = subprocess.Popen([sys.executable, "-c", SOURCE], stdout=subprocess.PIPE, text=True)
    try:
        assert source.stdout is not None
        target_port = int(source.stdout.readline())
        with _prometheus_scraping(tmp, target_port) as base:
            yield base
    finally:
        source.terminate()
        try:
            source.wait(timeout=20)
        except subprocess.TimeoutExpired:
            source.kill()
            source.wait()


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


# --- a real daemon ----------------------------------------------------------------------------------



def _self_signed(tmp: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed; `make test` installs it through deploy/install-test-deps.sh")
    cert, key = tmp / "server.crt", tmp / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("live")
    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    cert, key = _self_signed(tmp)
    auth = tmp / "auth.log"
    auth.write_bytes(b"".join(sshd_line(f"Mar  1 10:00:{i:02d}", "203.0.113.9", i) + b"\n" for i in range(12)))
    alerting = (
        '\n[alerting]\ngroup_wait = "1s"\ndefault_route = "hook"\n[[alerting.routes]]\nname = "hook"\n'
        f'urls = ["json://127.0.0.1:{hook.server_address[1]}/siem"]\n'
    )
    daemon = DaemonProc.create(
        tmp, "", {
            "tcp": {"type": "syslog", "protocol": "tcp", "address": "127.0.0.1", "port": 0},
            "tls": {"type": "syslog", "protocol": "tls", "address": "127.0.0.1", "port": 0,
                    "cert_file": str(cert), "key_file": str(key)},
            "auth": {"type": "files", "paths": [str(auth)], "format": "syslog"},
        }, daemon={"rules": [str(ROOT / "rules")], "metrics_address": "127.0.0.1:0"}, extra=alerting)
    try:
        daemon.start()
        daemon.send_tcp("tcp", [sshd_line(f"Mar  1 11:00:{i:02d}", "198.51.100.4", i) for i in range(12)])
        wait_for(lambda: received, 60, "a notification at the webhook")
        with _prometheus_scraping(tmp, int(daemon.run_info()["metrics_port"])) as base:
            yield base
    finally:
        daemon.close()
        hook.shutdown()


@pytest.mark.timeout(240)
def test_every_dashboard_query_returns_data_from_a_real_daemon(live: str) -> None:
    """The shipped dashboard over a real daemon: no panel query comes back empty."""
    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "10s").replace("$__range", "1m")
                    .replace("$instance", ".*"))
            if not _query(live, expr):
                empty.append(f"{panel['title']} / {target['refId']}: {expr}")
    assert empty == []
