"""The [alerting] config table: what is accepted, what is refused and how the refusal names the place."""

from __future__ import annotations

import tomllib

from siem.alert.config import RateLimitConfig, Timers, config_from_toml, resolve_route_urls

FULL = """
[alerting]
log_path = "alerts/alerts.jsonl"
log_max_bytes = 1048576
log_keep = 3
outbox_path = "alerts/outbox.sqlite"
group_wait = "10s"
group_interval = "2m"
repeat_interval = "1h"
default_route = "oncall"
fallback_route = "mail"
max_retry_age = "30m"

link_template = "https://grafana.example.org/explore?rule=$rule_url&from=$first_ms&to=$last_ms"

[alerting.by_severity.high]
group_wait = "5s"

[alerting.rate_limit]
max_notifications = 5
per = "10m"
by = "severity"
exempt = ["critical", "high"]

[alerting.alertmanager]
resolve_timeout = "10m"
resend_interval = "2m"
firing_for = "2h"
timeout = "5s"

[alerting.retry]
initial = "2s"
max = "5m"
multiplier = 3.0

[alerting.heartbeat]
route = "mail"
interval = "15m"

[[alerting.routes]]
name = "oncall"
urls = ["json://127.0.0.1:8080/hook"]
severity = "high"
tags = ["attack.*"]
schedule = { days = ["mon-fri"], hours = ["09:00-18:00"], timezone = "Europe/Berlin" }
title_template = "[$severity] $title$where"
rate_limit = { max_notifications = 2, per = "1m" }
group_by = ["rule", "source.ip"]
group_wait = "0s"
group_interval = "1m"
repeat_interval = "2h"
link_template = "https://kibana.example.org/app/discover#/?q=$group_source_ip_url"

[[alerting.routes]]
name = "mail"
urls = ["mailto://127.0.0.1:2525?from=siem@example.org&to=soc@example.org"]
"""


def load(text: str) -> tuple[object, list[str]]:
    cfg, issues = config_from_toml(tomllib.loads(text).get("alerting", {}))
    return cfg, [i.render() for i in issues]


def test_full_example_is_accepted():
    """Every documented key together loads without issues."""
    cfg, issues = load(FULL)
    assert issues == []
    assert cfg.group_wait_ms == 10_000 and cfg.group_interval_ms == 120_000 and cfg.repeat_interval_ms == 3_600_000
    assert cfg.rate_limit == RateLimitConfig(5, 600_000, frozenset({"critical", "high"}), "severity")
    assert cfg.route("oncall").rate_limit == RateLimitConfig(2, 60_000)
    assert cfg.route("oncall").schedule.days == frozenset(range(5))
    assert cfg.route("oncall").schedule.hours == ((540, 1080),)
    assert cfg.heartbeat.interval_ms == 900_000 and cfg.retry.multiplier == 3.0


def test_empty_table_gives_defaults():
    """An empty [alerting] is valid: no routes, heartbeat off."""
    cfg, issues = load("[alerting]\n")
    assert issues == [] and cfg.routes == () and cfg.heartbeat is None


def test_unknown_key_names_its_dotted_path():
    """A typo in a route is reported with its full path."""
    _, issues = load(FULL.replace('severity = "high"', 'severty = "high"'))
    assert any("alerting.routes[0].severty: unknown key" in i for i in issues)


def test_wrong_type_is_named():
    """A number where a duration string belongs is a wrong-type error."""
    cfg, issues = load(FULL.replace('group_wait = "10s"', "group_wait = 10"))
    assert cfg is None
    assert any("alerting.group_wait" in i and "wrong-type" in i for i in issues)


def test_reference_to_missing_route_is_an_error():
    """default_route must name a route."""
    cfg, issues = load(FULL.replace('default_route = "oncall"', 'default_route = "nobody"'))
    assert cfg is None and any("alerting.default_route: no route named 'nobody'" in i for i in issues)


def test_unknown_timezone_and_bad_hours_are_errors():
    """Schedules with an unknown zone or an unreadable range are refused with their paths."""
    bad = FULL.replace('"Europe/Berlin"', '"Mars/Olympus"').replace('"09:00-18:00"', '"9-18"')
    cfg, issues = load(bad)
    assert cfg is None
    assert any("alerting.routes[0].schedule.timezone" in i for i in issues)
    assert any("alerting.routes[0].schedule.hours" in i for i in issues)


def test_unusable_url_is_an_error_without_echoing_it():
    """A URL apprise cannot parse is refused, and the message does not repeat the (secret-bearing) URL."""
    cfg, issues = load(FULL.replace("json://127.0.0.1:8080/hook", "nosuchscheme://token-s3cret@x"))
    assert cfg is None
    assert any("alerting.routes[0].urls[0]" in i for i in issues)
    assert not any("s3cret" in i for i in issues)


def test_unknown_template_placeholder_is_a_warning():
    """$nosuch in a template warns but loads."""
    cfg, issues = load(FULL.replace('title_template = "[$severity] $title$where"', 'title_template = "$nosuch"'))
    assert cfg is not None and any("warning" in i and "$nosuch" in i for i in issues)


def test_route_without_destination_is_an_error():
    """A route needs urls, urls_env or urls_file."""
    cfg, issues = load('[alerting]\n[[alerting.routes]]\nname = "x"\n')
    assert cfg is None and any("has no destination" in i for i in issues)


def test_urls_from_env_and_credential_file(tmp_path):
    """Secrets come from an environment variable and a systemd credential file, comments skipped."""
    cred = tmp_path / "webhook"
    cred.write_text("# from LoadCredential\njsons://hooks.example.org/T0K3N\n")
    text = f'[alerting]\n[[alerting.routes]]\nname = "x"\nurls_env = "SIEM_X"\nurls_file = "{cred}"\n'
    cfg, issues = load(text)
    assert issues == []
    urls, problems = resolve_route_urls(cfg.route("x"), {"SIEM_X": "json://127.0.0.1:1/a, json://127.0.0.1:1/b"})
    assert problems == []
    assert urls == ["json://127.0.0.1:1/a", "json://127.0.0.1:1/b", "jsons://hooks.example.org/T0K3N"]


def test_missing_secret_sources_are_reported(tmp_path):
    """An unset variable and an unreadable file are issues naming the route and the source."""
    text = f'[alerting]\n[[alerting.routes]]\nname = "x"\nurls_env = "SIEM_UNSET"\nurls_file = "{tmp_path}/nope"\n'
    cfg, _ = load(text)
    urls, problems = resolve_route_urls(cfg.route("x"), {})
    assert urls == []
    msgs = [p.message for p in problems]
    assert any("SIEM_UNSET is not set" in m for m in msgs) and any("cannot read" in m for m in msgs)


def test_new_timing_grouping_and_alertmanager_keys_are_typed():
    """by_severity, group_by, per-route timers, rate_limit.by/exempt and [alerting.alertmanager] load typed;
    a route's timers win over by_severity, which wins over the global ones."""
    cfg, issues = load(FULL)
    assert issues == []
    oncall, mail = cfg.routes  # type: ignore[attr-defined]
    assert oncall.group_by == ("rule", "source.ip") and mail.group_by == ("...",)
    assert cfg.timers(oncall, "high") == Timers(0, 60_000, 7_200_000)  # type: ignore[attr-defined]
    assert cfg.timers(mail, "high") == Timers(5_000, 120_000, 3_600_000)  # type: ignore[attr-defined]
    assert cfg.timers(mail, "critical") == Timers(0, 0, 3_600_000)  # type: ignore[attr-defined]
    assert cfg.timers(mail, "low") == Timers(10_000, 120_000, 3_600_000)  # type: ignore[attr-defined]
    assert (cfg.alertmanager.resolve_timeout_ms, cfg.alertmanager.resend_interval_ms,  # type: ignore[attr-defined]
            cfg.alertmanager.firing_for_ms) == (600_000, 120_000, 7_200_000)  # type: ignore[attr-defined]


def test_bad_new_keys_are_named_with_their_place():
    """Unknown severity tables, "..." mixed with fields, a bad scope, resend >= resolve: each an error."""
    bad = {
        "by_severity": {"urgent": {"group_wait": "0s"}},
        "rate_limit": {"by": "host", "exempt": ["sev1"]},
        "alertmanager": {"resend_interval": "5m", "resolve_timeout": "5m"},
        "routes": [{"name": "r", "urls": ["json://127.0.0.1:1/x"], "group_by": ["...", "rule"],
                    "group_wait": 30}],
    }
    cfg, issues = config_from_toml(bad)
    assert cfg is None
    text = "\n".join(i.render() for i in issues)
    for place in ("alerting.by_severity.urgent", "alerting.rate_limit.by", "alerting.rate_limit.exempt",
                  "alerting.alertmanager.resend_interval", "alerting.routes[0].group_by",
                  "alerting.routes[0].group_wait"):
        assert place in text, place
