"""AlertPipeline end to end with real receivers on 127.0.0.1: an HTTP server for json:// webhooks and an
aiosmtpd SMTP server for mailto://. Time is a virtual clock except in the run() tests."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from siem import metrics
from siem.alert.alertlog import AlertLog, iter_log
from siem.alert.config import AlertingConfig, config_from_toml
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert, alert_id

T0 = 1_716_000_000_000  # 2024-05-18T02:40:00Z
S = 1000
M = 60 * S


# --- real receivers -------------------------------------------------------------------------------


class HttpReceiver:
    """A webhook receiver: records every POST (path, headers, JSON body) and answers with `status`."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, object]]] = []
        self.status = status
        self.hold = threading.Event()
        self.hold.set()  # clear it to make the receiver hang until set again
        self.entered = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                if receiver.status == 200:  # recorded on receipt, before the (possibly held) answer
                    receiver.requests.append((self.path, dict(self.headers), json.loads(body)))
                receiver.entered.set()
                receiver.hold.wait(30)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MailReceiver:
    """aiosmtpd on 127.0.0.1 keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.reply = "250 OK"  # e.g. "550 5.7.1 rejected" or "451 4.3.0 try later" to refuse
        receiver = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                if receiver.reply.startswith("250"):
                    receiver.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[attr-defined]
                return receiver.reply

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=siem@example.org&to=soc@example.org"

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def hook():
    r = HttpReceiver()
    yield r
    r.close()


@pytest.fixture
def mail():
    r = MailReceiver()
    yield r
    r.close()


class Clock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t

    def advance(self, ms: int) -> None:
        self.t += ms


def make_config(routes: list[dict[str, object]], **top: object) -> AlertingConfig:
    table: dict[str, object] = {"group_wait": "0s", "routes": routes, "default_route": routes[0]["name"],
                                "log_fsync": False, **top}
    cfg, issues = config_from_toml(table)
    assert cfg is not None, [i.render() for i in issues]
    return cfg


def mk(n: int, rule: str = "ssh_bruteforce", ip: str = "203.0.113.7", message: str | None = None,
       title: str = "SSH brute force", severity: str = "high") -> Alert:
    group = (("source.ip", ip),)
    return Alert(id=alert_id(rule, group, n), rule_id=rule, title=title, severity=severity,
                 tags=("attack.t1110",), group=group, first_ms=T0 + n, last_ms=T0 + n + 5, count=10,
                 message=message if message is not None else f"10 failed SSH logins from {ip}")


async def drain(p: AlertPipeline, clock: Clock, rounds: int = 20, step_ms: int = 0) -> None:
    """Tick and deliver until nothing is due (advancing the virtual clock by step_ms per round)."""
    for _ in range(rounds):
        p.tick()
        n = await p.deliver_due()
        if n == 0 and step_ms == 0:
            return
        clock.advance(step_ms)


# --- delivery to real receivers -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_json_webhook_receives_title_message_and_alert_id(tmp_path, hook):
    """The webhook gets one JSON POST with the rendered title and message and the alert id in body and header."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}]), tmp_path, now_ms=clock)
    a = mk(1)
    p.submit(a)

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert len(hook.requests) == 1
    path, headers, body = hook.requests[0]
    assert path == "/hook"
    assert body["title"] == "[high] NEW: SSH brute force (source.ip=203.0.113.7)"
    assert body["message"].startswith("10 failed SSH logins from 203.0.113.7\n")
    assert f"alert id: {a.id}" in body["message"]
    assert body["alert_id"] == a.id and body["group_id"] == a.id
    assert headers["X-Siem-Alert-Id"] == a.id and headers["Idempotency-Key"] == body["notification_id"]
    assert body["type"] == "failure"  # apprise notify type for high severity


@pytest.mark.timeout(60)
def test_email_arrives_with_subject_and_escaped_html_body(tmp_path, mail):
    """The SMTP server gets one mail: subject = rendered title, HTML body with attacker HTML escaped."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "mail", "urls": [mail.url()]}]), tmp_path, now_ms=clock)
    a = mk(1, message="login as <script>alert(1)</script> & <b>root</b>")
    p.submit(a)

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert len(mail.messages) == 1
    msg = mail.messages[0]
    assert msg["Subject"] == "[high] NEW: SSH brute force (source.ip=203.0.113.7)"
    assert msg["To"] == "soc@example.org"
    html = msg.get_body(("html",)).get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;root&lt;/b&gt;" in html
    assert "<script>" not in html
    assert a.id in html


@pytest.mark.timeout(60)
def test_injection_arrives_neutralised_and_capped(tmp_path, hook):
    """HTML, ANSI, BiDi, @channel and a 1 MB field reach the webhook inert and capped."""
    clock = Clock()
    evil = "<img src=x onerror=alert(1)> \x1b[2J\x1b]8;;http://evil\x07 @channel <!here> \u202eexe.pdf " + "A" * 1_000_000
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}], field_max_chars=2000,
                                  body_max_chars=6000), tmp_path, now_ms=clock)
    p.submit(mk(1, message=evil, title="@everyone " + "T" * 5000))

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    (_, _, body) = hook.requests[0]
    msg, title = body["message"], body["title"]
    assert "\x1b" not in msg and "\x07" not in msg and "\u202e" not in msg
    assert "@channel" not in msg and "<!here>" not in msg and "@\u200bchannel" in msg
    assert "@everyone" not in title and len(title) <= 300
    assert "[truncated" in msg and len(msg) <= 6100
    assert "<img src=x onerror=alert(1)>" in msg  # JSON is the encoding for webhooks; the receiver must not render HTML


# --- durability -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_receiver_down_restart_receiver_up_delivers_every_alert_exactly_once(tmp_path):
    """Alerts fired while the webhook is down survive a restart and arrive exactly once each when it returns."""
    port = free_port()  # nothing listens here yet: connection refused
    cfg = make_config([{"name": "hook", "urls": [f"json://127.0.0.1:{port}/hook"]}],
                      retry={"initial": "1s", "max": "10s"}, max_retry_age="1h")
    clock = Clock()
    alerts = [mk(i, ip=f"198.51.100.{i}") for i in range(10)]

    async def first_life() -> None:
        p = AlertPipeline(cfg, tmp_path, now_ms=clock)
        p.submit_many(alerts)
        await drain(p, clock, rounds=3, step_ms=20 * S)  # every attempt is refused
        await p.close()

    asyncio.run(first_life())
    assert metrics.value("siem_outbox_depth") == 10

    receiver = HttpReceiver(port=port)
    try:
        async def second_life() -> None:
            p = AlertPipeline(cfg, tmp_path, now_ms=clock)  # the restart
            p.submit_many(alerts)  # the engine replays the same alerts after its own restart
            await drain(p, clock, rounds=5, step_ms=20 * S)
            await p.close()

        asyncio.run(second_life())
    finally:
        receiver.close()
    got = [b["alert_id"] for _, _, b in receiver.requests]
    assert sorted(got) == sorted(a.id for a in alerts)  # every alert, each once
    assert len(list(iter_log(tmp_path / "alerts/alerts.jsonl"))) == 10  # and logged once


CHILD = """
import asyncio, sys
from siem.alert.config import config_from_toml
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert
cfg, _ = config_from_toml({"group_wait": "0s", "log_fsync": True,
                           "routes": [{"name": "hook", "urls": [sys.argv[2]]}], "default_route": "hook"})
p = AlertPipeline(cfg, sys.argv[1], now_ms=lambda: 1_716_000_000_000)
p.submit(Alert(id="a1b2c3", rule_id="ssh_bruteforce", title="t", severity="high", tags=(),
               group=(("source.ip", "192.0.2.9"),), first_ms=0, last_ms=0, count=1, message="m"))
asyncio.run(p.deliver_due())
print("NOT KILLED")
"""


@pytest.mark.timeout(120)
def test_kill_9_between_send_and_mark_sent_redelivers_once_with_the_same_key(tmp_path):
    """The receiver SIGKILLs the sending process before answering; after a restart the notification is
    delivered once more with the same idempotency key and alert id (at-least-once, never a new key)."""
    import os
    import signal
    import subprocess
    import sys

    victim: dict[str, int] = {}
    receiver = HttpReceiver()
    receiver.hold.clear()
    try:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), receiver.url()],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        victim["pid"] = child.pid
        assert receiver.entered.wait(60)  # the request is at the receiver, the sender awaits the answer
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        receiver.hold.set()
        assert child.returncode == -signal.SIGKILL
        cfg = make_config([{"name": "hook", "urls": [receiver.url()]}])
        clock = Clock()

        async def restart() -> None:
            p = AlertPipeline(cfg, tmp_path, now_ms=clock)
            await drain(p, clock)
            assert [r.state for r in p.outbox.rows()] == ["sent"]
            await p.close()

        asyncio.run(restart())
    finally:
        receiver.close()
    keys = {h["Idempotency-Key"] for _, h, _ in receiver.requests}
    assert len(receiver.requests) == 2 and len(keys) == 1  # the killed attempt and the one redelivery
    assert {b["alert_id"] for _, _, b in receiver.requests} == {"a1b2c3"}


@pytest.mark.timeout(60)
def test_resubmitted_alert_is_not_logged_or_notified_twice(tmp_path, hook):
    """The same alert id submitted again (also after a restart) writes no record and sends nothing."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()]}])
    before = metrics.value("siem_alerts_duplicate_total")

    async def life() -> None:
        p = AlertPipeline(cfg, tmp_path, now_ms=clock)
        p.submit(mk(1))
        p.submit(mk(1))
        await drain(p, clock)
        await p.close()

    asyncio.run(life())
    clock.advance(10 * M)
    asyncio.run(life())
    assert len(hook.requests) == 1
    assert len(list(iter_log(tmp_path / "alerts/alerts.jsonl"))) == 1
    assert metrics.value("siem_alerts_duplicate_total") - before == 3


@pytest.mark.timeout(60)
def test_alert_logged_before_a_crash_is_taken_in_at_start(tmp_path, hook):
    """An alert in the log but not in the database (crash between the two) is notified after the restart."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()]}])

    async def close_only() -> None:
        await AlertPipeline(cfg, tmp_path, now_ms=clock).close()

    asyncio.run(close_only())
    lost = mk(7)
    log = AlertLog(tmp_path / "alerts/alerts.jsonl", 1 << 20, 2)  # what submit() wrote before the crash
    log.append([lost.dumps()])
    log.close()

    async def restart() -> None:
        p = AlertPipeline(cfg, tmp_path, now_ms=clock)
        await drain(p, clock)
        await p.close()

    asyncio.run(restart())
    assert [b["alert_id"] for _, _, b in hook.requests] == [lost.id]
    assert len(list(iter_log(tmp_path / "alerts/alerts.jsonl"))) == 1


@pytest.mark.timeout(60)
def test_failing_webhook_is_retried_with_capped_backoff_then_sent_to_fallback(tmp_path, hook, caplog):
    """A webhook answering 503 is retried with full-jitter back-off under the cap; after max_retry_age the
    notification goes to the fallback route and an error is logged."""
    down = HttpReceiver(status=503)
    clock = Clock()
    cfg = make_config(
        [{"name": "pager", "urls": [down.url()]}, {"name": "backup", "urls": [hook.url("/backup")], "rules": ["none"]}],
        fallback_route="backup", max_retry_age="10m", retry={"initial": "10s", "max": "60s", "multiplier": 2.0},
    )
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)
    p.submit(mk(1))
    delays = []

    async def go() -> None:
        for _ in range(40):
            p.tick()
            await p.deliver_due()
            pending = p.outbox.rows(state="pending")
            mine = [r for r in pending if r.route == "pager"]
            if mine:
                delays.append(mine[0].next_attempt_ms - clock.t)
                clock.t = mine[0].next_attempt_ms
            else:
                break
        clock.advance(S)
        await drain(p, clock)
        dead.extend(p.outbox.rows(state="dead"))
        await p.close()

    dead: list = []
    try:
        with caplog.at_level(logging.ERROR, logger="siem.alert.pipeline"):
            asyncio.run(go())
    finally:
        down.close()
    assert len(delays) >= 10
    assert all(100 <= d <= 60 * S for d in delays)  # capped
    assert [r.route for r in dead] == ["pager"] and "503" in dead[0].last_error  # apprise's reason, kept
    assert len(hook.requests) == 1
    path, _, body = hook.requests[0]
    assert path == "/backup" and body["title"].startswith("[undeliverable via pager] [high] NEW: SSH brute force")
    assert any("UNDELIVERABLE" in r.getMessage() and "fallback route 'backup'" in r.getMessage()
               for r in caplog.records)


# --- noise control through the pipeline -----------------------------------------------------------


@pytest.mark.timeout(120)
def test_brute_force_of_1000_alerts_over_10_minutes_notifies_once_plus_updates(tmp_path, hook):
    """1,000 failed-login alerts for one rule and source IP over 10 virtual minutes: one notification after
    group_wait plus one update per group_interval (2), carrying all 1,000 alerts."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()]}], group_wait="30s", group_interval="5m",
                      rate_limit={"max_notifications": 100, "per": "10m"})
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)

    async def go() -> None:
        for i in range(1000):
            clock.t = T0 + i * 600
            p.submit(mk(i, severity="medium"))  # high and critical are not batched by default
            p.tick()
        for _ in range(12):  # one more minute at a time until 11 minutes past the first alert
            clock.advance(M)
            p.tick()
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    titles = [b["title"].split(":")[0] for _, _, b in hook.requests]
    assert titles == ["[medium] NEW", "[medium] UPDATE", "[medium] UPDATE"]
    counts = [int(b["message"].split("\n\n")[1].split()[0]) for _, _, b in hook.requests]
    assert sum(counts) == 1000


@pytest.mark.timeout(120)
def test_alert_storm_gives_at_most_n_notifications_and_one_summary(tmp_path, hook):
    """200 distinct alerts (distinct source IPs) against a limit of 5 per 10 minutes: 5 notifications, then
    one summary saying how many were suppressed."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()]}], rate_limit={"max_notifications": 5, "per": "10m"})
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)

    async def go() -> None:
        p.submit_many([mk(0, ip=f"10.0.{i // 250}.{i % 250}") for i in range(200)])
        p.tick()
        await drain(p, clock)
        clock.advance(10 * M)
        await drain(p, clock)
        clock.advance(30 * M)
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    titles = [b["title"] for _, _, b in hook.requests]
    assert len(titles) == 6
    assert titles[-1] == "[siem] +195 more alerts of rule ssh_bruteforce suppressed by the rate limit on route hook"
    assert metrics.value("siem_notifications_throttled_total", route="hook") >= 195


# --- the async shell ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_run_delivers_in_the_background_and_does_not_block_the_loop(tmp_path, hook):
    """With run() as a task, a submitted alert is delivered while a hanging receiver does not stall the loop."""
    hook.hold.clear()  # the receiver accepts and then hangs
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}]), tmp_path)

    async def go() -> None:
        task = asyncio.create_task(p.run())
        p.submit(mk(1))
        for _ in range(200):
            if hook.entered.is_set():
                break
            await asyncio.sleep(0.05)
        assert hook.entered.is_set()
        ticks = 0
        for _ in range(5):  # the event loop keeps turning while apprise waits on the receiver
            await asyncio.sleep(0.01)
            ticks += 1
        p.submit(mk(2, ip="198.51.100.2"))  # and intake still works (another group: notified at once)
        hook.hold.set()
        for _ in range(200):
            if len(hook.requests) == 2:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await p.close()
        assert ticks == 5

    asyncio.run(go())
    assert sorted(b["alert_id"] for _, _, b in hook.requests) == sorted([mk(1).id, mk(2, ip="198.51.100.2").id])


@pytest.mark.timeout(60)
def test_heartbeat_is_sent_once_per_interval(tmp_path, hook):
    """The dead man's switch sends one heartbeat per interval slot, no more."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url("/alerts")]}, {"name": "deadman", "urls": [hook.url("/hb")],
                                                                           "rules": ["none"]}],
                      heartbeat={"route": "deadman", "interval": "5m"})
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)

    async def go() -> None:
        await drain(p, clock)
        clock.advance(S)
        await drain(p, clock)
        clock.advance(5 * M)
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [(path, b["title"].split(" from ")[0]) for path, _, b in hook.requests] == [
        ("/hb", "[siem] heartbeat"), ("/hb", "[siem] heartbeat")]


# --- CLI ------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_notify_test_sends_through_the_route(tmp_path, hook, capsys):
    """`siem notify test ROUTE` delivers to each URL of the route and prints OK per destination."""
    import argparse

    from siem.alert import notify_command

    conf = tmp_path / "siem.toml"
    conf.write_text(f'[alerting]\n[[alerting.routes]]\nname = "oncall"\nurls = ["{hook.url("/t")}"]\n')
    parser = argparse.ArgumentParser()
    notify_command.add_arguments(parser)
    assert notify_command.run(parser.parse_args(["test", "oncall", "--config", str(conf)])) == 0
    assert hook.requests[0][2]["title"] == "[siem] test notification via route oncall"
    assert capsys.readouterr().out.startswith("OK ")


@pytest.mark.timeout(60)
def test_notify_test_reports_a_failing_destination(tmp_path, capsys):
    """A route whose receiver is down exits 1 and says FAILED."""
    import argparse

    from siem.alert import notify_command

    conf = tmp_path / "siem.toml"
    conf.write_text(f'[alerting]\n[[alerting.routes]]\nname = "x"\nurls = ["json://127.0.0.1:{free_port()}/t"]\n')
    parser = argparse.ArgumentParser()
    notify_command.add_arguments(parser)
    assert notify_command.run(parser.parse_args(["test", "x", "--config", str(conf)])) == 1
    assert capsys.readouterr().out.startswith("FAILED ")


@pytest.mark.timeout(60)
def test_alerts_list_and_show(tmp_path, hook, capsys):
    """`siem alerts list` prints logged alerts (filtered by rule) and `show` prints one with its deliveries."""
    import argparse

    from siem.alert import commands

    clock = Clock()
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}]), tmp_path, now_ms=clock)
    p.submit(mk(1, title="evil \x1b[31mred"))
    p.submit(mk(2, rule="web_scan"))

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    assert commands.run(parser.parse_args(["list", "--state-dir", str(tmp_path), "--rule", "ssh_*"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and mk(1).id in out[0] and "\x1b" not in out[0]
    scan = mk(2, rule="web_scan")
    assert commands.run(parser.parse_args(["show", scan.id[:10], "--state-dir", str(tmp_path)])) == 0
    shown = capsys.readouterr().out
    assert f'"id": "{scan.id}"' in shown and "sent    route=hook kind=first attempts=1" in shown


@pytest.mark.timeout(60)
def test_alerts_list_since_and_limit(tmp_path, hook, capsys):
    """--since keeps alerts emitted after the cut; --limit keeps the newest."""
    import argparse
    import dataclasses

    from siem.alert import commands
    from siem.timeutil import wall_ms

    clock = Clock()
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}]), tmp_path, now_ms=clock)
    now = wall_ms()
    old = [dataclasses.replace(mk(i, ip=f"10.1.0.{i}"), emitted_ms=now - 3 * 3_600_000) for i in range(3)]
    new = [dataclasses.replace(mk(i, ip=f"10.2.0.{i}"), emitted_ms=now - 60_000) for i in range(3)]
    p.submit_many(old + new)
    asyncio.run(p.close())
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    assert commands.run(parser.parse_args(["list", "--state-dir", str(tmp_path), "--since", "1h"])) == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == [a.id for a in new]
    assert commands.run(parser.parse_args(["list", "--state-dir", str(tmp_path), "--limit", "2", "--json"])) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == [a.id for a in new[1:]]


@pytest.mark.timeout(60)
def test_corrupt_outbox_is_moved_aside_and_alerting_continues(tmp_path, hook, caplog):
    """A garbage outbox file is kept as *.corrupt-*, logged at ERROR, and a fresh one takes alerts again."""
    (tmp_path / "alerts").mkdir()
    earlier = AlertLog(tmp_path / "alerts/alerts.jsonl", 1 << 20, 2)  # an alert handled before the corruption
    earlier.append([mk(0).dumps()])
    earlier.close()
    (tmp_path / "alerts" / "outbox.sqlite").write_bytes(b"this is not a database" * 100)
    clock = Clock()
    with caplog.at_level(logging.ERROR):
        p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}]), tmp_path, now_ms=clock)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / "alerts").glob("outbox.sqlite.corrupt-*"))) == 1
    p.submit(mk(0))  # replayed by the engine: remembered from the alert log, not notified again
    p.submit(mk(1))

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [b["alert_id"] for _, _, b in hook.requests] == [mk(1).id]


@pytest.mark.timeout(60)
def test_pending_row_whose_url_left_the_config_goes_to_the_fallback(tmp_path, hook):
    """After a config change removes a destination, its queued notification is sent to the fallback route."""
    port = free_port()
    clock = Clock()
    old = make_config([{"name": "pager", "urls": [f"json://127.0.0.1:{port}/gone"]}])
    p = AlertPipeline(old, tmp_path, now_ms=clock)
    p.submit(mk(1))
    asyncio.run(p.close())
    new = make_config([{"name": "pager", "urls": [hook.url("/pager-new")]},
                       {"name": "backup", "urls": [hook.url("/backup")], "rules": ["none"]}],
                      fallback_route="backup")
    p = AlertPipeline(new, tmp_path, now_ms=clock)

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [(path, b["alert_id"]) for path, _, b in hook.requests] == [("/backup", mk(1).id)]


@pytest.mark.timeout(60)
def test_rate_limit_window_survives_a_restart(tmp_path, hook):
    """A window filled before a restart still limits after it, and its summary is still sent."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()]}], rate_limit={"max_notifications": 2, "per": "10m"})

    async def life(alerts: list[Alert], advance_ms: int = 0) -> None:
        p = AlertPipeline(cfg, tmp_path, now_ms=clock)
        p.submit_many(alerts)
        await drain(p, clock)
        clock.advance(advance_ms)
        await drain(p, clock)
        await p.close()

    asyncio.run(life([mk(0, ip="10.9.0.1"), mk(0, ip="10.9.0.2")]))
    asyncio.run(life([mk(0, ip="10.9.0.3")], advance_ms=10 * M))
    titles = [b["title"] for _, _, b in hook.requests]
    assert len(titles) == 3 and titles[-1] == "[siem] +1 more alerts of rule ssh_bruteforce suppressed by the rate limit on route hook"


@pytest.mark.timeout(60)
def test_reconfigure_switches_routes_without_a_restart(tmp_path, hook):
    """After reconfigure() new notifications follow the new routes and templates."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "a", "urls": [hook.url("/a")]}]), tmp_path, now_ms=clock)
    notes = p.reconfigure(make_config([{"name": "b", "urls": [hook.url("/b")], "title_template": "B: $title"}],
                                      outbox_path="elsewhere.sqlite"))
    assert notes == ["alerting.outbox_path changes after a restart"]
    p.submit(mk(1))

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [(path, b["title"]) for path, _, b in hook.requests] == [("/b", "B: SSH brute force")]


@pytest.mark.timeout(60)
def test_alerts_list_finds_the_state_dir_through_the_config(tmp_path, hook, capsys):
    """`siem alerts list --config siem.toml` reads [daemon] state_dir (relative to the file) and [alerting]."""
    import argparse

    from siem.alert import commands

    state = tmp_path / "state"
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}], log_path="a/log.jsonl"), state)
    p.submit(mk(3))
    asyncio.run(p.close())
    conf = tmp_path / "siem.toml"
    conf.write_text('[daemon]\nstate_dir = "state"\n[alerting]\nlog_path = "a/log.jsonl"\n')
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    assert commands.run(parser.parse_args(["list", "--config", str(conf)])) == 0
    assert mk(3).id in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_only_the_newest_heartbeat_is_kept_while_its_receiver_is_down(tmp_path, hook):
    """Heartbeats that could not be sent are superseded by the next one, never piled up or sent to fallback."""
    port = free_port()
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()]},
                       {"name": "deadman", "urls": [f"json://127.0.0.1:{port}/hb"], "rules": ["none"]}],
                      heartbeat={"route": "deadman", "interval": "5m"}, fallback_route="hook",
                      max_retry_age="1h")
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)

    async def go() -> None:
        for _ in range(30):  # 2.5 hours of heartbeats into a dead receiver
            await drain(p, clock)
            clock.advance(5 * M)
        pending = [r for r in p.outbox.rows(state="pending") if r.kind == "heartbeat"]
        assert len(pending) == 1 and "Connection error" in pending[0].last_error
        await p.close()

    asyncio.run(go())
    assert hook.requests == []  # nothing went to the fallback


@pytest.mark.timeout(60)
def test_smtp_refusals_are_retried_and_the_mail_arrives_once_accepted(tmp_path, mail):
    """451 and 550 from the SMTP server are both retried (apprise cannot tell them apart); once the server
    accepts, exactly one mail arrives."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "mail", "urls": [mail.url()]}], retry={"initial": "1s", "max": "5s"}),
                      tmp_path, now_ms=clock)
    p.submit(mk(1))
    errors = []

    async def go() -> None:
        for reply in ("451 4.3.0 try again later", "550 5.7.1 rejected"):
            mail.reply = reply
            await drain(p, clock, rounds=1)
            errors.append(p.outbox.rows(state="pending")[0].last_error)
            clock.advance(10 * S)
        mail.reply = "250 OK"
        await drain(p, clock, rounds=3, step_ms=10 * S)
        await p.close()

    asyncio.run(go())
    assert len(mail.messages) == 1 and mail.messages[0]["Subject"].startswith("[high] NEW: SSH brute force")
    assert all(e and e != "apprise reported a failure" for e in errors)
