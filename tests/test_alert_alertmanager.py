"""The Alertmanager channel against a real Alertmanager (Debian's prometheus-alertmanager) on 127.0.0.1:
labels and annotations arrive, a silence is respected, delivery is retried while Alertmanager is down, and
re-POSTs bring an alert back after an Alertmanager restart (it keeps alerts in memory only)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_alert_delivery import HttpReceiver, free_port, make_config

from siem.alert import alertmanager
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert, alert_id
from siem.timeutil import wall_ms

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class Alertmanager:
    """A real Alertmanager on 127.0.0.1 (no clustering, storage in a temporary directory) whose only
    receiver is a webhook to `hook`."""

    def __init__(self, base: Path, hook: HttpReceiver, port: int | None = None, config: str | None = None) -> None:
        if BINARY is None:
            pytest.fail("prometheus-alertmanager is not installed (deploy/install-test-deps.sh installs it)")
        self.base, self.port = base, port or free_port()
        self.config = base / "alertmanager.yml"
        self.config.write_text(config or 
            "route:\n"
            "  receiver: hook\n"
            "  group_by: [alertname, source_ip]\n"
            "  group_wait: 100ms\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: http://127.0.0.1:{hook.port}/am\n"
            "        send_resolved: false\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        (self.base / "data").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={self.config}", f"--storage.path={self.base / 'data'}",  # type: ignore[list-item]
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.base / "alertmanager.log", "ab"),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"alertmanager did not start: {(self.base / 'alertmanager.log').read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/api/v2/{path}", data=data,
                                     headers={"Content-Type": "application/json"}, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"null")

    def silence(self, name: str, value: str) -> str:
        now = datetime.now(timezone.utc)
        got = self.api("silences", {
            "matchers": [{"name": name, "value": value, "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test", "comment": "maintenance",
        })
        return str(got["silenceID"])  # type: ignore[index]

    def alerts(self) -> list[dict[str, object]]:
        return self.api("alerts")  # type: ignore[return-value]


@pytest.fixture
def hook():
    r = HttpReceiver()
    yield r
    r.close()


@pytest.fixture
def am(tmp_path, hook):
    m = Alertmanager(tmp_path, hook)
    yield m
    m.stop()


def mk(rule: str, ip: str, n: int = 0, severity: str = "high") -> Alert:
    group = (("source.ip", ip),)
    now = wall_ms()
    return Alert(id=alert_id(rule, group, n), rule_id=rule, title=f"{rule} title", severity=severity,
                 tags=("attack.t1110",), group=group, first_ms=now - 5000, last_ms=now - 1000, count=7,
                 message=f"7 events from {ip}", events=({"@timestamp": now - 5000,
                                                        "event.original": f"sshd[1]: Failed password from {ip}"},),
                 runbook="https://wiki.example.org/rb", emitted_ms=now)


def am_config(port: int, **top: object):
    return make_config([{"name": "am", "urls": [f"alertmanager://127.0.0.1:{port}"]}],
                       link_template="https://grafana.example.org/d/siem?var-rule=$rule_url",
                       retry={"initial": "200ms", "max": "500ms"}, **top)


async def until(pred: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (got := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return got


def received(hook: HttpReceiver) -> list[dict[str, object]]:
    """Alerts Alertmanager notified its webhook about."""
    return [a for path, _, body in hook.requests if path == "/am" for a in body["alerts"]]  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_alerts_reach_alertmanager_with_labels_and_annotations_and_a_silence_is_respected(tmp_path, hook, am):
    """A silenced alert reaches Alertmanager (state suppressed) but not its receiver; an unsilenced one does."""
    am.start()
    silence = am.silence("alertname", "ssh_bruteforce")
    p = AlertPipeline(am_config(am.port), tmp_path / "state")
    silenced, loud = mk("ssh_bruteforce", "203.0.113.9"), mk("web_scanning", "198.51.100.3")

    async def go() -> None:
        task = asyncio.create_task(p.run())
        p.submit_many([silenced, loud])
        await until(lambda: received(hook), 20, "the unsilenced alert at the webhook")
        await until(lambda: len(am.alerts()) == 2, 10, "both alerts in Alertmanager")
        await asyncio.sleep(1.5)  # a group_interval more: the silenced one would have been sent by now
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await p.close()

    asyncio.run(go())
    assert [a["labels"]["alertname"] for a in received(hook)] == ["web_scanning"]  # type: ignore[index]
    by_name = {a["labels"]["alertname"]: a for a in am.alerts()}  # type: ignore[index]
    s = by_name["ssh_bruteforce"]
    assert s["status"] == {"state": "suppressed", "silencedBy": [silence], "inhibitedBy": []}
    assert s["labels"] == {"alertname": "ssh_bruteforce", "severity": "high", "rule_id": "ssh_bruteforce",
                           "siem": "siem", "source_ip": "203.0.113.9"}
    ann = s["annotations"]
    assert ann["summary"] == "ssh_bruteforce title (source.ip=203.0.113.9)"  # type: ignore[index]
    assert ann["description"] == "7 events from 203.0.113.9"  # type: ignore[index]
    assert ann["sample"] == "sshd[1]: Failed password from 203.0.113.9"  # type: ignore[index]
    assert ann["runbook_url"] == "https://wiki.example.org/rb" and ann["alert_id"] == silenced.id  # type: ignore[index]
    assert s["generatorURL"] == "https://grafana.example.org/d/siem?var-rule=ssh_bruteforce"
    assert by_name["web_scanning"]["status"]["state"] == "active"  # type: ignore[index]
    starts = datetime.fromisoformat(str(s["startsAt"]).replace("Z", "+00:00"))
    ends = datetime.fromisoformat(str(s["endsAt"]).replace("Z", "+00:00"))
    assert int(starts.timestamp() * 1000) == silenced.first_ms
    assert 280 <= (ends - datetime.now(timezone.utc)).total_seconds() <= 300  # now + resolve_timeout (5m)


@pytest.mark.timeout(120)
def test_an_alert_raised_while_alertmanager_is_down_arrives_when_it_is_back(tmp_path, hook, am):
    """Alertmanager down: the POST fails and is retried with back-off; once it is up the alert arrives."""
    p = AlertPipeline(am_config(am.port), tmp_path / "state")
    a = mk("ssh_bruteforce", "203.0.113.10")

    async def go() -> None:
        task = asyncio.create_task(p.run())
        p.submit(a)
        await until(lambda: any(r.attempts >= 2 for r in p.outbox.rows(state="pending")), 20, "two failed attempts")
        row = p.outbox.rows(state="pending")[0]
        assert row.kind == alertmanager.KIND and "Alertmanager unreachable" in row.last_error
        await asyncio.to_thread(am.start)
        await until(lambda: received(hook), 20, "the alert at the webhook once Alertmanager is up")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await p.close()

    asyncio.run(go())
    assert [x["labels"]["source_ip"] for x in received(hook)] == ["203.0.113.10"]  # type: ignore[index]


@pytest.mark.timeout(120)
def test_re_posts_bring_an_alert_back_after_an_alertmanager_restart(tmp_path, hook, am):
    """Alertmanager keeps alerts in memory only; siem re-POSTs a firing alert every resend_interval, so
    after a restart Alertmanager has it again. Once firing_for is over the row is done."""
    am.start()
    cfg = am_config(am.port, alertmanager={"resend_interval": "1s", "resolve_timeout": "5s", "firing_for": "8s"})
    p = AlertPipeline(cfg, tmp_path / "state")
    a = mk("ssh_bruteforce", "203.0.113.11")

    async def go() -> None:
        task = asyncio.create_task(p.run())
        p.submit(a)
        await until(lambda: am.alerts(), 20, "the alert in Alertmanager")
        row = p.outbox.rows()[0]
        assert row.state == "pending" and row.done_ms is not None  # delivered, waiting for its next re-POST
        assert p.outbox.depth() == 0  # not counted as undelivered
        await asyncio.to_thread(am.stop)
        await asyncio.to_thread(am.start)
        assert am.alerts() == []  # restarted empty
        await until(lambda: am.alerts(), 10, "the re-POSTed alert after the restart")
        await until(lambda: p.outbox.rows()[0].state == "sent", 15, "the end of firing_for")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await p.close()

    asyncio.run(go())


def test_alertmanager_urls_are_checked_without_echoing_them():
    """A bad alertmanager URL is a config error naming the route; the password never shows."""
    from siem.alert.config import config_from_toml

    cfg, issues = config_from_toml({"routes": [{"name": "am", "urls": ["alertmanager://u:s3cret@/x?y=1"]}]})
    assert cfg is None
    text = " ".join(i.render() for i in issues)
    assert "alerting.routes[0].urls[0]" in text and "s3cret" not in text
    assert alertmanager.redact("alertmanagers://u:s3cret@am.example.org:9093/p") == "alertmanagers://***@am.example.org:9093/p"


@pytest.mark.timeout(60)
def test_notify_test_posts_a_test_alert_to_alertmanager(tmp_path, hook, am, capsys):
    """`siem notify test ROUTE` on an alertmanager:// route puts a test alert into Alertmanager."""
    import argparse

    from siem.alert import notify_command

    am.start()
    conf = tmp_path / "siem.toml"
    conf.write_text(f'[alerting]\n[[alerting.routes]]\nname = "am"\nurls = ["alertmanager://127.0.0.1:{am.port}"]\n')
    parser = argparse.ArgumentParser()
    notify_command.add_arguments(parser)
    assert notify_command.run(parser.parse_args(["test", "am", "--config", str(conf)])) == 0
    assert capsys.readouterr().out.startswith(f"OK      alertmanager://127.0.0.1:{am.port}")
    [a] = am.alerts()
    assert a["labels"]["alertname"] == "siem_test_notification"  # type: ignore[index]


@pytest.mark.timeout(120)
def test_the_shipped_alertmanager_example_pages_urgent_alerts_and_inhibits_by_source(tmp_path, hook):
    """deploy/alertmanager/alertmanager.yml (amtool-checked): a critical alert about a source inhibits a
    high one about the same source; a high one about another source still pages."""
    from daemon_support import ROOT

    shipped = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    amtool = shutil.which("amtool")
    assert amtool is not None, "amtool comes with prometheus-alertmanager"
    subprocess.run([amtool, "check-config", str(shipped)], check=True, capture_output=True, timeout=30)
    m = Alertmanager(tmp_path, hook, config=shipped.read_text().replace("http://127.0.0.1:9095/",
                                                                        f"http://127.0.0.1:{hook.port}/")).start()
    critical = mk("ssh_login_after_bruteforce", "203.0.113.45", severity="critical")
    muted, other = mk("ssh_bruteforce", "203.0.113.45"), mk("ssh_bruteforce", "198.51.100.77")
    p = AlertPipeline(am_config(m.port), tmp_path / "state")

    def paged() -> list[tuple[str, str]]:
        return sorted((str(a["labels"]["alertname"]), str(a["labels"]["source_ip"]))  # type: ignore[index]
                      for path, _, body in hook.requests if path == "/oncall" for a in body["alerts"])  # type: ignore[union-attr]

    async def go() -> None:
        task = asyncio.create_task(p.run())
        p.submit(critical)
        await until(lambda: paged(), 20, "the critical page")
        p.submit_many([muted, other])
        await until(lambda: len(paged()) >= 2, 20, "the page about the other source")
        await until(lambda: len(m.alerts()) == 3, 10, "three alerts in Alertmanager")
        await asyncio.sleep(1.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await p.close()

    try:
        asyncio.run(go())
        assert paged() == [("ssh_bruteforce", "198.51.100.77"), ("ssh_login_after_bruteforce", "203.0.113.45")]
        state = {(a["labels"]["alertname"], a["labels"]["source_ip"]): a["status"] for a in m.alerts()}  # type: ignore[index]
        assert state[("ssh_bruteforce", "203.0.113.45")]["state"] == "suppressed"  # type: ignore[index]
        assert state[("ssh_bruteforce", "203.0.113.45")]["inhibitedBy"]  # type: ignore[index]
    finally:
        m.stop()


@pytest.mark.timeout(60)
def test_an_alert_alertmanager_never_took_goes_to_the_fallback_route_as_text(tmp_path, hook):
    """Alertmanager unreachable for max_retry_age (virtual clock): the alert goes to the fallback route as
    readable text (its annotations), not as Alertmanager JSON."""
    from test_alert_delivery import Clock, drain

    clock = Clock(wall_ms())
    cfg = make_config([{"name": "am", "urls": [f"alertmanager://127.0.0.1:{free_port()}"]},
                       {"name": "mail", "urls": [hook.url("/fallback")], "rules": ["-"]}],
                      fallback_route="mail", max_retry_age="10m", retry={"initial": "1s", "max": "1m"})
    p = AlertPipeline(cfg, tmp_path / "state", now_ms=clock)
    a = mk("ssh_bruteforce", "203.0.113.12")
    p.submit(a)

    states = []

    async def go() -> None:
        await drain(p, clock, rounds=40, step_ms=30_000)
        states.extend(r.state for r in p.outbox.rows() if r.route == "am")
        await p.close()

    asyncio.run(go())
    assert states == ["dead"]
    [(path, _, body)] = hook.requests
    assert path == "/fallback" and str(body["title"]).startswith("[undeliverable via am] ssh_bruteforce title")
    assert "description: 7 events from 203.0.113.12" in str(body["message"])
    assert "sample: sshd[1]: Failed password from 203.0.113.12" in str(body["message"])


@pytest.mark.timeout(60)
def test_the_heartbeat_is_an_always_firing_alert_in_alertmanager(tmp_path, hook, am):
    """[alerting.heartbeat] on an alertmanager:// route: Alertmanager holds a SiemHeartbeat alert whose
    endsAt is two heartbeat intervals ahead; nothing goes to the fallback."""
    am.start()
    cfg = make_config([{"name": "am", "urls": [f"alertmanager://127.0.0.1:{am.port}"], "rules": ["-"]},
                       {"name": "mail", "urls": [hook.url("/fallback")]}],
                      heartbeat={"route": "am", "interval": "5m"}, fallback_route="mail")
    p = AlertPipeline(cfg, tmp_path / "state")

    async def go() -> None:
        task = asyncio.create_task(p.run())
        await until(lambda: am.alerts(), 20, "the heartbeat alert")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await p.close()

    asyncio.run(go())
    [a] = am.alerts()
    assert a["labels"]["alertname"] == "SiemHeartbeat" and a["status"]["state"] == "active"  # type: ignore[index]
    ends = datetime.fromisoformat(str(a["endsAt"]).replace("Z", "+00:00"))
    assert 590 <= (ends - datetime.now(timezone.utc)).total_seconds() <= 600
    assert [path for path, _, _ in hook.requests if path == "/fallback"] == []  # (/am is Alertmanager notifying)
