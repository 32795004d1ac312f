"""Routing: severity, tags, rules, continue, default, and schedules on a frozen clock across boundaries."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from siem.alert.config import AlertingConfig, config_from_toml
from siem.alert.route import select_routes

BERLIN = ZoneInfo("Europe/Berlin")


def at(y: int, mo: int, d: int, h: int, mi: int, tz: ZoneInfo = BERLIN) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=tz).timestamp() * 1000)


def cfg(text_routes: list[dict[str, object]], **top: object) -> AlertingConfig:
    table: dict[str, object] = {"routes": text_routes, **top}
    c, issues = config_from_toml(table)
    assert c is not None, [i.render() for i in issues]
    return c


BUSINESS = {"name": "chat", "urls": ["json://127.0.0.1:9/chat"],
            "schedule": {"days": ["mon-fri"], "hours": ["09:00-18:00"], "timezone": "Europe/Berlin"}}
OFF_HOURS = {"name": "pager", "urls": ["json://127.0.0.1:9/pager"],
             "schedule": {"days": ["mon-fri"], "hours": ["09:00-18:00"], "timezone": "Europe/Berlin",
                          "outside": True}}


def names(c: AlertingConfig, now_ms: int, rule: str = "r", severity: str = "high", tags: tuple[str, ...] = ()) -> list[str]:
    return [r.name for r in select_routes(c, rule, severity, tags, now_ms)]


def test_friday_1759_is_business_hours_and_1800_is_not():
    """Friday 17:59 Berlin goes to chat; 18:00 goes to the pager."""
    c = cfg([BUSINESS, OFF_HOURS])
    assert names(c, at(2024, 5, 17, 17, 59)) == ["chat"]
    assert names(c, at(2024, 5, 17, 18, 0)) == ["pager"]


def test_monday_0859_is_off_hours_and_0900_is_business_hours():
    """Monday 08:59 Berlin goes to the pager; 09:00 goes to chat."""
    c = cfg([BUSINESS, OFF_HOURS])
    assert names(c, at(2024, 5, 20, 8, 59)) == ["pager"]
    assert names(c, at(2024, 5, 20, 9, 0)) == ["chat"]


def test_saturday_noon_is_off_hours():
    """Weekends are outside Mon-Fri."""
    c = cfg([BUSINESS, OFF_HOURS])
    assert names(c, at(2024, 5, 18, 12, 0)) == ["pager"]


def test_schedule_follows_the_dst_change():
    """Business hours start at 09:00 local on both sides of the spring DST change (08:00 UTC, then 07:00 UTC)."""
    c = cfg([BUSINESS, OFF_HOURS])
    utc = ZoneInfo("UTC")
    # Friday 2024-03-29 (CET, UTC+1): 09:00 local = 08:00 UTC
    assert names(c, at(2024, 3, 29, 7, 59, utc)) == ["pager"]
    assert names(c, at(2024, 3, 29, 8, 0, utc)) == ["chat"]
    # Monday 2024-04-01 (CEST, UTC+2, after the change on Sunday 03-31): 09:00 local = 07:00 UTC
    assert names(c, at(2024, 4, 1, 6, 59, utc)) == ["pager"]
    assert names(c, at(2024, 4, 1, 7, 0, utc)) == ["chat"]
    assert names(c, at(2024, 4, 1, 16, 0, utc)) == ["pager"]  # 18:00 CEST


def test_overnight_range_covers_both_sides_of_midnight():
    """22:00-06:00 on Fridays matches Friday 23:30 and Saturday 05:59, not Saturday 06:00."""
    night = {"name": "night", "urls": ["json://127.0.0.1:9/n"],
             "schedule": {"days": ["fri"], "hours": ["22:00-06:00"], "timezone": "Europe/Berlin"}}
    c = cfg([night])
    assert names(c, at(2024, 5, 17, 23, 30)) == ["night"]
    assert names(c, at(2024, 5, 18, 5, 59)) == ["night"]
    assert names(c, at(2024, 5, 18, 6, 0)) == []
    assert names(c, at(2024, 5, 17, 21, 59)) == []


def test_minimum_severity_and_severity_list():
    """severity = "high" takes high and critical; a list takes exactly its members."""
    c = cfg([{"name": "hi", "urls": ["json://h/x"], "severity": "high", "continue": True},
             {"name": "odd", "urls": ["json://h/y"], "severity": ["low", "critical"]}])
    t = at(2024, 5, 17, 12, 0)
    assert names(c, t, severity="medium") == []
    assert names(c, t, severity="high") == ["hi"]
    assert names(c, t, severity="critical") == ["hi", "odd"]
    assert names(c, t, severity="low") == ["odd"]


def test_tags_any_of_glob_and_rule_glob():
    """tags match if any tag matches any glob; rules match by glob."""
    c = cfg([{"name": "mitre", "urls": ["json://h/x"], "tags": ["attack.t1110*"], "rules": ["ssh_*"]}])
    t = at(2024, 5, 17, 12, 0)
    assert names(c, t, rule="ssh_bruteforce", tags=("linux", "attack.t1110.001")) == ["mitre"]
    assert names(c, t, rule="ssh_bruteforce", tags=("linux",)) == []
    assert names(c, t, rule="web_scan", tags=("attack.t1110",)) == []


def test_first_match_wins_unless_continue():
    """Without continue the first matching route is the only one; with it later ones are tried too."""
    a = {"name": "a", "urls": ["json://h/a"]}
    b = {"name": "b", "urls": ["json://h/b"]}
    t = at(2024, 5, 17, 12, 0)
    assert names(cfg([a, b]), t) == ["a"]
    assert names(cfg([dict(a, **{"continue": True}), b]), t) == ["a", "b"]


def test_default_route_when_nothing_matches():
    """No matching route: the default route."""
    c = cfg([{"name": "crit", "urls": ["json://h/c"], "severity": "critical"},
             {"name": "catchall", "urls": ["mailto://h.example.org?from=siem@example.org&to=a@example.org"], "rules": ["never"]}],
            default_route="catchall")
    assert names(c, at(2024, 5, 17, 12, 0), severity="low") == ["catchall"]
