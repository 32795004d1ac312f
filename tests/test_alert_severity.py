"""Severity first, grouping across keys and notifications a person can act on: AlertPipeline with a real
webhook receiver and a real SMTP server on 127.0.0.1, on a virtual clock."""

from __future__ import annotations

import argparse
import asyncio
import re

import pytest
from test_alert_delivery import Clock, HttpReceiver, MailReceiver, T0, drain, make_config, mk

from siem import metrics
from siem.alert import commands
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert, alert_id

S = 1000
M = 60 * S


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


def ips(n: int, prefix: str = "10.1") -> list[str]:
    return [f"{prefix}.{i // 250}.{i % 250}" for i in range(n)]


def titles(hook: HttpReceiver) -> list[str]:
    return [str(b["title"]) for _, _, b in hook.requests]


# --- severity first --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_medium_flood_does_not_use_up_the_budget_of_high_and_critical_is_exempt(tmp_path, hook):
    """50 medium alerts fill a 5-per-10m limit; 5 high alerts after them all go out (their own budget), and
    30 critical ones all go out (critical is exempt by default)."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}], group_wait="30s",
                                  rate_limit={"max_notifications": 5, "per": "10m"}), tmp_path, now_ms=clock)

    async def go() -> None:
        p.submit_many([mk(0, ip=ip, severity="medium", rule="web_scan") for ip in ips(50)])
        clock.advance(30 * S)
        await drain(p, clock)
        p.submit_many([mk(0, ip=ip, severity="high") for ip in ips(5, "10.2")])
        p.submit_many([mk(0, ip=ip, severity="critical", rule="root_login") for ip in ips(30, "10.3")])
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    got = [t.split("]")[0] + "]" for t in titles(hook)]
    assert got.count("[medium]") == 5 and got.count("[high]") == 5 and got.count("[critical]") == 30
    assert metrics.value("siem_alerts_held_total", route="hook", severity="medium", reason="rate_limit") >= 45


@pytest.mark.timeout(60)
def test_a_held_alert_says_why_in_alerts_show(tmp_path, hook, capsys):
    """`siem alerts show` of an alert the rate limit held names the route, the limit and the summary."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()]}], rate_limit={"max_notifications": 1, "per": "10m"})
    p = AlertPipeline(cfg, tmp_path / "state", now_ms=clock)
    first, held = mk(0, ip="10.9.0.1"), mk(0, ip="10.9.0.2")

    async def go() -> None:
        p.submit_many([first, held])
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert len(hook.requests) == 1
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    assert commands.run(parser.parse_args(["show", held.id, "--state-dir", str(tmp_path / "state")])) == 0
    out = capsys.readouterr().out.split("notifications (")[1]
    assert out.startswith("1):")
    assert re.search(r"held +route=hook kind=first .*reason: held by the rate limit of route 'hook' "
                     r"\(1 notifications of rule ssh_bruteforce per 600s\); counted in the summary", out)


@pytest.mark.timeout(60)
def test_critical_is_immediate_while_medium_waits_group_wait(tmp_path, hook):
    """Defaults: a critical and a high alert are notified at once; a medium one waits the global group_wait."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}], group_wait="30s"), tmp_path,
                      now_ms=clock)

    async def go() -> None:
        p.submit_many([mk(1, severity="critical", rule="a"), mk(1, severity="high", rule="b"),
                       mk(1, severity="medium", rule="c")])
        await drain(p, clock)
        assert sorted(titles(hook)) == ["[critical] NEW: SSH brute force (source.ip=203.0.113.7)",
                                        "[high] NEW: SSH brute force (source.ip=203.0.113.7)"]
        clock.advance(30 * S)
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert len(hook.requests) == 3 and titles(hook)[-1].startswith("[medium] NEW")


@pytest.mark.timeout(60)
def test_a_route_timer_overrides_the_severity_default(tmp_path, hook):
    """A route with its own group_wait holds even a critical alert that long; another route stays immediate."""
    clock = Clock()
    cfg = make_config([{"name": "digest", "urls": [hook.url("/digest")], "group_wait": "1m", "continue": True},
                       {"name": "pager", "urls": [hook.url("/pager")]}])
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)

    async def go() -> None:
        p.submit(mk(1, severity="critical"))
        await drain(p, clock)
        assert [path for path, _, _ in hook.requests] == ["/pager"]
        clock.advance(59 * S)
        await drain(p, clock)
        assert len(hook.requests) == 1
        clock.advance(S)
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [path for path, _, _ in hook.requests] == ["/pager", "/digest"]


@pytest.mark.timeout(60)
def test_by_severity_table_changes_the_default(tmp_path, hook):
    """[alerting.by_severity.high] group_wait = "20s": high alerts wait 20 s, critical ones still do not."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}],
                                  by_severity={"high": {"group_wait": "20s"}}), tmp_path, now_ms=clock)

    async def go() -> None:
        p.submit_many([mk(1, severity="high", rule="h"), mk(1, severity="critical", rule="c")])
        await drain(p, clock)
        assert [t[:10] for t in titles(hook)] == ["[critical]"]
        clock.advance(20 * S)
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [t[:6] for t in titles(hook)] == ["[criti", "[high]"]


# --- grouping across keys --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_group_by_rule_turns_a_storm_over_1000_keys_into_a_handful_of_notifications(tmp_path, hook):
    """1,000 alerts of one rule over 1,000 source IPs in 10 minutes, on a route with group_by = ["rule"]:
    one notification after group_wait and one update per group_interval, listing the keys."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()], "group_by": ["rule"], "group_wait": "30s",
                        "group_interval": "5m"}], rate_limit={"max_notifications": 20, "per": "10m"})
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)

    async def go() -> None:
        for i, ip in enumerate(ips(1000)):
            clock.t = T0 + i * 600
            p.submit(mk(i, ip=ip))
            p.tick()
        for _ in range(12):
            clock.advance(M)
            p.tick()
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [t.split(":")[0] for t in titles(hook)] == ["[high] NEW", "[high] UPDATE", "[high] UPDATE"]
    bodies = [str(b["message"]) for _, _, b in hook.requests]
    counts = [int(b.split("\n\n")[1].split()[0]) for b in bodies]
    assert sum(counts) == 1000
    keys_line = next(line for line in bodies[0].splitlines() if line.startswith("keys: "))
    assert keys_line.startswith("keys: source.ip=10.1.0.0; source.ip=10.1.0.1; ")
    assert keys_line.count("source.ip=") == 50 and keys_line.endswith(f"(+{counts[0] - 50} more alerts)")


@pytest.mark.timeout(60)
def test_group_by_a_key_field_groups_alerts_of_several_rules(tmp_path, hook):
    """group_by = ["source.ip"]: alerts of two rules from one source share a notification (both rules kept)."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()], "group_by": ["source.ip"], "group_wait": "10s"}])
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)

    async def go() -> None:
        p.submit_many([mk(1, rule="ssh_bruteforce"), mk(1, rule="web_scanning"), mk(1, rule="x", ip="10.0.0.9")])
        clock.advance(10 * S)
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert len(hook.requests) == 2
    counts = sorted(int(str(b["message"]).split("\n\n")[1].split()[0]) for _, _, b in hook.requests)
    assert counts == [1, 2]


# --- notifications a person can act on -------------------------------------------------------------


def _alert_with_context() -> Alert:
    group = (("source.ip", "203.0.113.45"),)
    events = (
        {"@timestamp": T0 - 4000, "event.original": "Mar  1 10:00:01 web1 sshd[1]: Failed password for root from "
                                                    "203.0.113.45 port 40000 ssh2 <b>x</b>"},
        {"@timestamp": T0 - 2000, "event.original": "Mar  1 10:00:03 web1 sshd[1]: Failed password for admin"},
    )
    return Alert(id=alert_id("ssh_bruteforce", group, T0), rule_id="ssh_bruteforce", title="SSH brute force",
                 severity="high", tags=("attack.t1110",), group=group, first_ms=T0 - 4000, last_ms=T0 - 2000,
                 count=2, message="2 failed SSH logins from 203.0.113.45", events=events,
                 runbook="https://wiki.example.org/runbooks/ssh-bruteforce",
                 references=("https://attack.mitre.org/techniques/T1110/",))


@pytest.mark.timeout(60)
def test_email_carries_raw_lines_times_link_runbook_and_references_as_readable_html(tmp_path, mail):
    """The mail's HTML part has a heading, a field table, the raw sample lines (escaped, monospace) with their
    event times, and clickable link, runbook and reference URLs."""
    clock = Clock()
    cfg = make_config([{"name": "mail", "urls": [mail.url()]}],
                      link_template="https://grafana.example.org/explore?rule=$rule_url&from=$first_ms&to=$last_ms")
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)
    p.submit(_alert_with_context())

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    msg = mail.messages[0]
    html = msg.get_body(("html",)).get_content()
    link = f"https://grafana.example.org/explore?rule=ssh_bruteforce&amp;from={T0 - 4000}&amp;to={T0 - 2000}"
    assert f'<a href="{link}">' in html
    assert '<a href="https://wiki.example.org/runbooks/ssh-bruteforce">' in html
    assert '<a href="https://attack.mitre.org/techniques/T1110/">' in html
    assert "<h2 " in html and "[high] NEW: SSH brute force (source.ip=203.0.113.45)</h2>" in html
    assert "<table" in html and ">runbook</td>" in html
    assert "<pre " in html and ("2024-05-18T02:39:56.000Z  Mar  1 10:00:01 web1 sshd[1]: Failed password for root "
                                "from 203.0.113.45 port 40000 ssh2 &lt;b&gt;x&lt;/b&gt;") in html
    assert "<b>x</b>" not in html


@pytest.mark.timeout(60)
def test_webhook_text_lists_samples_and_drops_lines_of_empty_fields(tmp_path, hook):
    """Plain text: the sample lines come under "sample events:"; an alert without runbook has no runbook line."""
    clock = Clock()
    p = AlertPipeline(make_config([{"name": "hook", "urls": [hook.url()]}]), tmp_path, now_ms=clock)
    p.submit_many([_alert_with_context(), mk(7, ip="10.7.7.7")])

    async def go() -> None:
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    by_ip = {str(b["title"]).split("=")[-1].rstrip(")"): str(b["message"]) for _, _, b in hook.requests}
    rich, bare = by_ip["203.0.113.45"], by_ip["10.7.7.7"]
    assert "runbook: https://wiki.example.org/runbooks/ssh-bruteforce\n" in rich
    assert rich.endswith("sample events:\n  2024-05-18T02:39:56.000Z  Mar  1 10:00:01 web1 sshd[1]: Failed password "
                         "for root from 203.0.113.45 port 40000 ssh2 <b>x</b>\n  2024-05-18T02:39:58.000Z  Mar  1 "
                         "10:00:03 web1 sshd[1]: Failed password for admin")
    assert "runbook:" not in bare and "link:" not in bare and "sample events" not in bare


@pytest.mark.timeout(60)
def test_rate_limit_per_rule_keeps_one_noisy_rule_from_holding_back_another(tmp_path, hook):
    """by = "rule" (default): 30 alerts of one rule use up its budget of 5; 3 of another rule still go out.
    by = "route": the same flood holds the other rule back too."""
    def run(by: str, base) -> list[str]:
        h = HttpReceiver()
        clock = Clock()
        p = AlertPipeline(make_config([{"name": "hook", "urls": [h.url()]}],
                                      rate_limit={"max_notifications": 5, "per": "10m", "by": by}), base,
                          now_ms=clock)

        async def go() -> None:
            p.submit_many([mk(0, ip=ip, rule="noisy") for ip in ips(30)])
            p.submit_many([mk(0, ip=ip, rule="quiet") for ip in ips(3, "10.5")])
            await drain(p, clock)
            await p.close()

        asyncio.run(go())
        h.close()
        return [str(b["alert_id"]) for _, _, b in h.requests]

    quiet = {mk(0, ip=ip, rule="quiet").id for ip in ips(3, "10.5")}
    assert quiet <= set(run("rule", tmp_path / "a")) and len(run("rule", tmp_path / "b")) == 8
    assert quiet.isdisjoint(run("route", tmp_path / "c"))


@pytest.mark.timeout(60)
def test_alerts_show_says_what_a_waiting_or_unrouted_alert_waits_for(tmp_path, capsys):
    """A medium alert inside group_wait shows its group and when it is due; one no route matches says so."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": ["json://127.0.0.1:9/hook"], "severity": "medium"}],
                      group_wait="30s", default_route=None)
    state = tmp_path / "state"
    p = AlertPipeline(cfg, state, now_ms=clock)
    waiting, unrouted = mk(1, severity="medium"), mk(2, severity="low", ip="10.0.0.2")
    p.submit_many([waiting, unrouted])
    asyncio.run(p.close())
    conf = tmp_path / "siem.toml"
    conf.write_text('[daemon]\nstate_dir = "state"\n[alerting]\n[[alerting.routes]]\nname = "hook"\n'
                    'urls = ["json://127.0.0.1:9/hook"]\nseverity = "medium"\n')
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    assert commands.run(parser.parse_args(["show", waiting.id, "--config", str(conf)])) == 0
    out = capsys.readouterr().out.split("notifications (0):")[1]
    assert "waiting route=hook: in a group of 1 pending alert(s); its notification is due 2024-05-18T02:40:30.000Z" in out
    assert commands.run(parser.parse_args(["show", unrouted.id, "--config", str(conf)])) == 0
    assert "none: no alerting route matches this alert" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_a_critical_alert_does_not_queue_behind_a_backlog_of_lower_ones(tmp_path, hook):
    """40 medium notifications already waiting for one destination: a critical one raised after them is
    the first to be sent."""
    clock = Clock()
    cfg = make_config([{"name": "hook", "urls": [hook.url()], "group_wait": "0s"}],
                      rate_limit={"max_notifications": 100, "per": "10m"})
    p = AlertPipeline(cfg, tmp_path, now_ms=clock)
    critical = mk(0, ip="10.9.9.9", severity="critical", rule="root_login")

    async def go() -> None:
        p.submit_many([mk(0, ip=ip, severity="medium", rule="web_scan") for ip in ips(40)])
        clock.advance(S)
        p.submit(critical)
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    sent = [str(b["alert_id"]) for _, _, b in hook.requests]
    assert len(sent) == 41 and sent[0] == critical.id


@pytest.mark.timeout(60)
def test_a_reload_gives_open_groups_their_route_s_new_timers(tmp_path, hook):
    """A medium group notified once waits group_interval (5m) for its update; after reconfigure() with
    group_interval = "0s" on the route, the next alert of the group goes out at once."""
    clock = Clock()
    route = {"name": "hook", "urls": [hook.url()], "group_wait": "0s"}
    p = AlertPipeline(make_config([route]), tmp_path, now_ms=clock)

    async def go() -> None:
        p.submit(mk(1, severity="medium"))
        await drain(p, clock)
        p.submit(mk(2, severity="medium"))
        await drain(p, clock)
        assert len(hook.requests) == 1  # the update waits for group_interval
        p.reconfigure(make_config([{**route, "group_interval": "0s"}]))
        p.submit(mk(3, severity="medium"))
        await drain(p, clock)
        await p.close()

    asyncio.run(go())
    assert [t.split(":")[0] for t in titles(hook)] == ["[medium] NEW", "[medium] UPDATE"]
