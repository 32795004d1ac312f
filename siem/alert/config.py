"""The `[alerting]` table: what the user wrote, validated into frozen dataclasses.

Example (all keys optional except the routes' names and URLs)::

    [alerting]
    log_path = "alerts/alerts.jsonl"      # relative paths are under the state directory
    log_max_bytes = 67108864               # rotate the alert log at 64 MiB ...
    log_keep = 10                          # ... keeping alerts.jsonl.1 .. .10
    log_fsync = true                       # fsync the alert log once per submitted batch
    outbox_path = "alerts/outbox.sqlite"
    group_wait = "30s"                     # first notification of a new group waits this long
    group_interval = "5m"                  # later alerts of the group: one update per interval at most
    repeat_interval = "4h"                 # a group quiet this long is closed; the next alert opens a new one
    link_template = "https://grafana.example.org/explore?rule=$rule_url&from=$first_ms&to=$last_ms"
    dedup_retention = "7d"                 # how long alert ids are remembered to drop replays
    default_route = "oncall"               # used when no route matches
    fallback_route = "ops-mail"            # gets notifications that kept failing for max_retry_age
    max_retry_age = "1h"

    [alerting.by_severity.critical]        # timers per severity (defaults: critical and high immediate,
    group_wait = "0s"                      # every alert its own notification); a route's own timers win
    group_interval = "0s"

    [alerting.rate_limit]                  # per route; a route may override it
    max_notifications = 20
    per = "10m"
    by = "rule"                            # a window per rule (default), per "severity", or per "route":
                                           # one noisy rule never holds back the alerts of others
    exempt = ["critical"]                  # severities never rate limited (default: critical)

    [alerting.alertmanager]                # for alertmanager:// destinations
    resolve_timeout = "5m"                 # endsAt = now + this on every POST ...
    resend_interval = "1m"                 # ... re-POSTed this often while the alert fires ...
    firing_for = "1h"                      # ... which is this long after it was raised

    [alerting.retry]
    initial = "10s"
    max = "10m"
    multiplier = 2.0
    parallel = 4

    [alerting.heartbeat]                   # dead man's switch, off unless this table exists
    route = "deadman"
    interval = "5m"

    [[alerting.routes]]
    name = "oncall"
    urls = ["json://hooks.example.org/siem", "alertmanager://127.0.0.1:9093"]
    urls_env = "SIEM_ONCALL_URLS"          # or urls_file = "/run/credentials/siem.service/oncall"
    severity = "high"                      # minimum, or a list: ["high", "critical"]
    tags = ["attack.t1110*"]               # any of, glob
    rules = ["ssh_*"]                      # glob
    schedule = { days = ["mon-fri"], hours = ["09:00-18:00"], timezone = "Europe/Berlin" }
    continue = false
    title_template = "[$severity] $title$where"
    body_template = "$message"
    group_by = ["rule"]                    # "..." (default): rule and every key field; or rule, title,
                                           # key field names: alerts agreeing on these share a group
    group_wait = "10s"                     # this route's timers (over by_severity and the global ones)
    group_interval = "2m"
    repeat_interval = "1h"
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from siem.alert.record import SEVERITIES
from siem.errors import Issue
from siem.tomlcheck import duration_value_ms, unknown_key

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Placeholders a route template may use (see siem.alert.render.template_values); `group_<field>` too.
TEMPLATE_FIELDS = frozenset(
    {
        "id", "rule", "title", "severity", "tags", "key", "where", "message", "status", "alerts", "total",
        "events", "first", "last", "route", "group_id", "aggregates", "alert_ids", "kind", "keys", "samples",
        "link", "runbook", "references", "rules",
    }
)
# Placeholders of link_template: URL-encoded values (rule_url, key_url, group_<field>_url) and times.
LINK_FIELDS = frozenset(
    {"rule", "rule_url", "key_url", "id", "group_id", "severity", "first", "last", "first_ms", "last_ms",
     "first_s", "last_s"}
)
DEFAULT_TITLE = "[$severity] $status: $title$where"
DEFAULT_BODY = (
    "$message\n\n"
    "$alerts new alert(s) of rule $rule ($total in this group so far, $events events)\n"
    "first event: $first, last event: $last\n"
    "key: $key\n"
    "keys: $keys\n"
    "tags: $tags\n"
    "link: $link\n"
    "runbook: $runbook\n"
    "references: $references\n"
    "alert id: $id\n\n"
    "$samples"
)
RATE_LIMIT_SCOPES = ("rule", "severity", "route")
GROUP_BY_ALL = "..."


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """When a route applies: local days of week and time-of-day ranges in one timezone."""

    days: frozenset[int]  # 0 = Monday ... 6 = Sunday
    hours: tuple[tuple[int, int], ...]  # (start_minute, end_minute) of the local day; end may be <= start
    timezone: str
    outside: bool = False  # match when the time is NOT inside the schedule (nights and weekends)


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """At most max_notifications per sliding window per route and `by` scope; exempt severities pass."""

    max_notifications: int
    per_ms: int
    exempt: frozenset[str] = frozenset({"critical"})
    by: str = "rule"  # "rule": a window per rule; "severity": per severity; "route": one for the route


@dataclass(frozen=True, slots=True)
class Timers:
    """Grouping timers of one group (see siem.alert.noise). group_interval 0: every alert notifies at once."""

    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int


@dataclass(frozen=True, slots=True)
class SeverityTimers:
    """`[alerting.by_severity.<severity>]`: timer defaults for one severity (None: the global value)."""

    group_wait_ms: int | None = None
    group_interval_ms: int | None = None
    repeat_interval_ms: int | None = None


# Critical and high alerts are never batched behind a timer unless the user says so.
DEFAULT_BY_SEVERITY: dict[str, SeverityTimers] = {
    "critical": SeverityTimers(0, 0),
    "high": SeverityTimers(0, 0),
}


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    """How alertmanager:// destinations are fed (Alertmanager's client contract: resend while firing)."""

    resolve_timeout_ms: int = 300_000
    resend_interval_ms: int = 60_000
    firing_for_ms: int = 3_600_000
    timeout_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    urls: tuple[str, ...] = ()
    urls_env: str | None = None
    urls_file: str | None = None
    severity: frozenset[str] | None = None  # None: any severity
    tags: tuple[str, ...] = ()  # globs, any of; empty: any
    rules: tuple[str, ...] = ()  # globs; empty: any
    schedule: ScheduleConfig | None = None
    cont: bool = False  # `continue`: keep evaluating later routes after a match
    title_template: str = DEFAULT_TITLE
    body_template: str = DEFAULT_BODY
    rate_limit: RateLimitConfig | None = None  # None: the global one
    group_by: tuple[str, ...] = (GROUP_BY_ALL,)  # "rule", "title" or key field names; "..." = rule + all keys
    group_wait_ms: int | None = None  # None: by_severity, else the global value
    group_interval_ms: int | None = None
    repeat_interval_ms: int | None = None
    link_template: str | None = None  # None: the global one


@dataclass(frozen=True, slots=True)
class RetryConfig:
    initial_ms: int = 10_000
    max_ms: int = 600_000
    multiplier: float = 2.0
    parallel: int = 4


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    route: str
    interval_ms: int


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    routes: tuple[RouteConfig, ...] = ()
    default_route: str | None = None
    fallback_route: str | None = None
    log_path: str = "alerts/alerts.jsonl"
    log_max_bytes: int = 64 * 1024 * 1024
    log_keep: int = 10
    log_fsync: bool = True
    outbox_path: str = "alerts/outbox.sqlite"
    group_wait_ms: int = 30_000
    group_interval_ms: int = 300_000
    repeat_interval_ms: int = 4 * 3_600_000
    max_groups: int = 10_000
    dedup_retention_ms: int = 7 * 86_400_000
    sent_retention_ms: int = 7 * 86_400_000
    rate_limit: RateLimitConfig | None = field(default_factory=lambda: RateLimitConfig(20, 600_000))
    retry: RetryConfig = field(default_factory=RetryConfig)
    max_retry_age_ms: int = 3_600_000
    heartbeat: HeartbeatConfig | None = None
    field_max_chars: int = 2_000
    body_max_chars: int = 8_000
    by_severity: dict[str, SeverityTimers] = field(default_factory=lambda: dict(DEFAULT_BY_SEVERITY))
    link_template: str = ""  # "" : notifications carry no link
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)

    def route(self, name: str) -> RouteConfig | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None

    def timers(self, route: RouteConfig | None, severity: str) -> Timers:
        """The timers of a group: the route's own, else the severity's, else the global ones."""
        sev = self.by_severity.get(severity, SeverityTimers())

        def pick(own: int | None, by_sev: int | None, glob: int) -> int:
            return own if own is not None else by_sev if by_sev is not None else glob

        return Timers(
            pick(route.group_wait_ms if route else None, sev.group_wait_ms, self.group_wait_ms),
            pick(route.group_interval_ms if route else None, sev.group_interval_ms, self.group_interval_ms),
            pick(route.repeat_interval_ms if route else None, sev.repeat_interval_ms, self.repeat_interval_ms),
        )


# --- validation helpers ---------------------------------------------------------------------------


class _Checker:
    """This table's reads, with the value rules of siem.tomlcheck (unknown keys with did-you-mean, durations
    with units); the issues' dotted paths get their lines from siem.tomlcheck.locate_issues."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues

    def err(self, where: str, message: str, code: str = "config") -> None:
        self.issues.append(Issue(code=code, message=f"{where}: {message}"))

    def warn(self, where: str, message: str) -> None:
        self.issues.append(Issue(code="config", message=f"{where}: {message}", severity="warning"))

    def unknown(self, table: dict[str, object], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.issues.append(unknown_key(where, key, allowed))

    def string(self, table: dict[str, object], key: str, where: str, default: str | None) -> str | None:
        v = table.get(key, default)
        if v is None or isinstance(v, str):
            return v
        self.err(f"{where}.{key}", f"expected a string, got {type(v).__name__}", "wrong-type")
        return default

    def integer(self, table: dict[str, object], key: str, where: str, default: int, minimum: int = 0) -> int:
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(f"{where}.{key}", f"expected an integer, got {type(v).__name__}", "wrong-type")
            return default
        if v < minimum:
            self.err(f"{where}.{key}", f"must be >= {minimum}, got {v}")
            return default
        return v

    def boolean(self, table: dict[str, object], key: str, where: str, default: bool) -> bool:
        v = table.get(key, default)
        if not isinstance(v, bool):
            self.err(f"{where}.{key}", f"expected true or false, got {type(v).__name__}", "wrong-type")
            return default
        return v

    def duration(self, table: dict[str, object], key: str, where: str, default_ms: int, minimum_ms: int = 0) -> int:
        if key not in table:
            return default_ms
        v = table[key]
        try:
            ms = duration_value_ms(v)  # siem.tomlcheck: a string with a unit, never a bare number
        except TypeError as exc:
            self.err(f"{where}.{key}", str(exc), "wrong-type")
            return default_ms
        except ValueError as exc:
            self.err(f"{where}.{key}", str(exc), "bad-value")
            return default_ms
        if ms < minimum_ms:
            self.err(f"{where}.{key}", f"must be at least {minimum_ms} ms, got {v!r}")
            return default_ms
        return ms

    def str_list(self, table: dict[str, object], key: str, where: str) -> tuple[str, ...]:
        v = table.get(key, [])
        if isinstance(v, str):
            return (v,)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.err(f"{where}.{key}", "expected a list of strings", "wrong-type")
            return ()
        return tuple(v)

    def table(self, table: dict[str, object], key: str, where: str) -> dict[str, object] | None:
        v = table.get(key)
        if v is None:
            return None
        if not isinstance(v, dict):
            self.err(f"{where}.{key}", f"expected a table, got {type(v).__name__}", "wrong-type")
            return None
        return v


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _parse_days(items: tuple[str, ...], where: str, c: _Checker) -> frozenset[int]:
    out: set[int] = set()
    for item in items:
        text = item.strip().lower()[:40]
        parts = text.split("-")
        if len(parts) == 1 and parts[0][:3] in DAYS:
            out.add(DAYS.index(parts[0][:3]))
        elif len(parts) == 2 and parts[0][:3] in DAYS and parts[1][:3] in DAYS:
            a, b = DAYS.index(parts[0][:3]), DAYS.index(parts[1][:3])
            i = a
            while True:
                out.add(i)
                if i == b:
                    break
                i = (i + 1) % 7
        else:
            c.err(where, f"not a day or day range: {item!r} (use mon..sun, e.g. \"mon-fri\")")
    return frozenset(out)


def _parse_hours(items: tuple[str, ...], where: str, c: _Checker) -> tuple[tuple[int, int], ...]:
    out = []
    for item in items:
        parts = item.strip().split("-")
        m = [_HHMM.match(p.strip()) for p in parts] if len(parts) == 2 else [None]
        if len(parts) != 2 or not all(m):
            c.err(where, f"not a time range: {item!r} (use \"HH:MM-HH:MM\", e.g. \"09:00-18:00\")")
            continue
        start, end = (int(x.group(1)) * 60 + int(x.group(2)) for x in m if x)
        if start > 1440 or end > 1440 or start == end:
            c.err(where, f"empty or invalid time range: {item!r}")
            continue
        out.append((start, end))
    return tuple(out)


def _schedule(t: dict[str, object], where: str, c: _Checker) -> ScheduleConfig | None:
    c.unknown(t, {"days", "hours", "timezone", "outside"}, where)
    days = _parse_days(c.str_list(t, "days", where), f"{where}.days", c) if "days" in t else frozenset(range(7))
    hours = _parse_hours(c.str_list(t, "hours", where), f"{where}.hours", c) if "hours" in t else ((0, 1440),)
    tz = c.string(t, "timezone", where, "UTC") or "UTC"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        c.err(f"{where}.timezone", f"unknown time zone {tz!r} (use an IANA name such as \"Europe/Berlin\")")
    return ScheduleConfig(days=days, hours=hours, timezone=tz, outside=c.boolean(t, "outside", where, False))


def _severities(t: dict[str, object], key: str, where: str, c: _Checker, default: frozenset[str]) -> frozenset[str]:
    if key not in t:
        return default
    items = c.str_list(t, key, where)
    bad = [x for x in items if x not in SEVERITIES]
    if bad:
        c.err(f"{where}.{key}", f"unknown severities {bad!r} (one of {', '.join(SEVERITIES)})")
    return frozenset(x for x in items if x in SEVERITIES)


def _rate_limit(t: dict[str, object], where: str, c: _Checker) -> RateLimitConfig | None:
    c.unknown(t, {"max_notifications", "per", "enabled", "exempt", "by"}, where)
    if not c.boolean(t, "enabled", where, True):
        return None
    by = c.string(t, "by", where, "rule") or "rule"
    if by not in RATE_LIMIT_SCOPES:
        c.err(f"{where}.by", f"expected one of {', '.join(RATE_LIMIT_SCOPES)}, got {by[:40]!r}")
    return RateLimitConfig(
        by=by,
        max_notifications=c.integer(t, "max_notifications", where, 20, minimum=1),
        per_ms=c.duration(t, "per", where, 600_000, minimum_ms=1000),
        exempt=_severities(t, "exempt", where, c, frozenset({"critical"})),
    )


def _opt_duration(t: dict[str, object], key: str, where: str, c: _Checker, minimum_ms: int = 0) -> int | None:
    return c.duration(t, key, where, -1, minimum_ms) if key in t else None


def _by_severity(t: dict[str, object], where: str, c: _Checker) -> dict[str, SeverityTimers]:
    out = dict(DEFAULT_BY_SEVERITY)
    for sev, st in t.items():
        w = f"{where}.{sev}"
        if sev not in SEVERITIES:
            c.err(w, f"unknown severity {sev!r} (one of {', '.join(SEVERITIES)})", "unknown-key")
            continue
        if not isinstance(st, dict):
            c.err(w, f"expected a table, got {type(st).__name__}", "wrong-type")
            continue
        c.unknown(st, {"group_wait", "group_interval", "repeat_interval"}, w)
        # Keys left out fall back to the global value, not to the built-in severity default.
        out[sev] = SeverityTimers(_opt_duration(st, "group_wait", w, c), _opt_duration(st, "group_interval", w, c),
                                  _opt_duration(st, "repeat_interval", w, c, 1000))
    return out


def _group_by(t: dict[str, object], where: str, c: _Checker) -> tuple[str, ...]:
    if "group_by" not in t:
        return (GROUP_BY_ALL,)
    items = c.str_list(t, "group_by", where)
    if GROUP_BY_ALL in items and len(items) > 1:
        c.err(f"{where}.group_by", f"\"{GROUP_BY_ALL}\" (rule and every key field) stands alone")
    for x in items:
        if x != GROUP_BY_ALL and not re.fullmatch(r"[A-Za-z_@][A-Za-z0-9_.@-]{0,127}", x):
            c.err(f"{where}.group_by", f"not a field name: {x[:60]!r} (use rule, title, or a rule's `by` field)")
    return tuple(items)


def _check_link(text: str, where: str, c: _Checker) -> None:
    tpl = string.Template(text)
    if not tpl.is_valid():
        c.err(where, "invalid template: use $name or ${name}, and $$ for a literal dollar sign")
        return
    for name in tpl.get_identifiers():
        if name not in LINK_FIELDS and not (name.startswith("group_") and name.endswith("_url")):
            c.warn(where, f"unknown placeholder ${name} is left as written "
                          f"(known: {', '.join(sorted(LINK_FIELDS))}, group_<field>_url)")


def _check_template(text: str, where: str, c: _Checker) -> None:
    tpl = string.Template(text)
    if not tpl.is_valid():
        c.err(where, "invalid template: use $name or ${name}, and $$ for a literal dollar sign")
        return
    for name in tpl.get_identifiers():
        if name not in TEMPLATE_FIELDS and not name.startswith("group_"):
            c.warn(where, f"unknown placeholder ${name} is left as written "
                          f"(known: {', '.join(sorted(TEMPLATE_FIELDS))}, group_<field>)")


def _check_url(url: str, where: str, c: _Checker) -> None:
    from siem.alert.alertmanager import SCHEMES, check_url

    if url.split("://", 1)[0].lower() in SCHEMES:
        problem = check_url(url)
        if problem:
            c.err(where, problem)
        return
    import apprise  # slow to import; only when there are routes to check

    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        # Never echo the URL: it may carry a token.
        scheme = url.split("://", 1)[0][:20] if "://" in url else "?"
        c.err(where, f"apprise cannot use this URL (scheme {scheme!r}); see https://appriseit.com for URL forms")


_ROUTE_KEYS = {
    "name", "urls", "urls_env", "urls_file", "severity", "tags", "rules", "schedule", "continue",
    "title_template", "body_template", "rate_limit", "group_by", "group_wait", "group_interval",
    "repeat_interval", "link_template",
}


def _route(t: dict[str, object], where: str, c: _Checker) -> RouteConfig | None:
    c.unknown(t, _ROUTE_KEYS, where)
    name = c.string(t, "name", where, None)
    if not name:
        c.err(f"{where}.name", "every route needs a name")
        return None
    urls = c.str_list(t, "urls", where)
    for i, u in enumerate(urls):
        _check_url(u, f"{where}.urls[{i}]", c)
    urls_env = c.string(t, "urls_env", where, None)
    urls_file = c.string(t, "urls_file", where, None)
    if not urls and not urls_env and not urls_file:
        c.err(where, f"route {name!r} has no destination: give urls, urls_env or urls_file")
    severity: frozenset[str] | None = None
    if "severity" in t:
        v = t["severity"]
        if isinstance(v, str):
            if v not in SEVERITIES:
                c.err(f"{where}.severity", f"unknown severity {v!r} (one of {', '.join(SEVERITIES)})")
            else:
                severity = frozenset(SEVERITIES[SEVERITIES.index(v):])
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            bad = [x for x in v if x not in SEVERITIES]
            if bad:
                c.err(f"{where}.severity", f"unknown severities {bad!r} (one of {', '.join(SEVERITIES)})")
            severity = frozenset(x for x in v if x in SEVERITIES)
        else:
            c.err(f"{where}.severity", "expected a minimum severity or a list of severities", "wrong-type")
    schedule = None
    st = c.table(t, "schedule", where)
    if st is not None:
        schedule = _schedule(st, f"{where}.schedule", c)
    title = c.string(t, "title_template", where, DEFAULT_TITLE) or DEFAULT_TITLE
    body = c.string(t, "body_template", where, DEFAULT_BODY) or DEFAULT_BODY
    _check_template(title, f"{where}.title_template", c)
    _check_template(body, f"{where}.body_template", c)
    rl = c.table(t, "rate_limit", where)
    link = c.string(t, "link_template", where, None)
    if link is not None:
        _check_link(link, f"{where}.link_template", c)
    return RouteConfig(
        name=name,
        urls=urls,
        urls_env=urls_env,
        urls_file=urls_file,
        severity=severity,
        tags=c.str_list(t, "tags", where),
        rules=c.str_list(t, "rules", where),
        schedule=schedule,
        cont=c.boolean(t, "continue", where, False),
        title_template=title,
        body_template=body,
        rate_limit=_rate_limit(rl, f"{where}.rate_limit", c) if rl is not None else None,
        group_by=_group_by(t, where, c),
        group_wait_ms=_opt_duration(t, "group_wait", where, c),
        group_interval_ms=_opt_duration(t, "group_interval", where, c),
        repeat_interval_ms=_opt_duration(t, "repeat_interval", where, c, 1000),
        link_template=link,
    )


_TOP_KEYS = {
    "routes", "default_route", "fallback_route", "log_path", "log_max_bytes", "log_keep", "log_fsync",
    "outbox_path", "group_wait", "group_interval", "repeat_interval", "max_groups", "dedup_retention",
    "sent_retention", "rate_limit", "retry", "max_retry_age", "heartbeat", "field_max_chars", "body_max_chars",
    "by_severity", "link_template", "alertmanager",
}


def config_from_toml(table: dict[str, object], where: str = "alerting") -> tuple[AlertingConfig | None, list[Issue]]:
    """Validate the `[alerting]` table; (None, issues) when any issue is an error."""
    issues: list[Issue] = []
    c = _Checker(issues)
    if not isinstance(table, dict):
        c.err(where, "expected a table", "wrong-type")
        return None, issues
    c.unknown(table, _TOP_KEYS, where)
    routes: list[RouteConfig] = []
    raw_routes = table.get("routes", [])
    if not isinstance(raw_routes, list):
        c.err(f"{where}.routes", "expected an array of tables ([[alerting.routes]])", "wrong-type")
        raw_routes = []
    for i, rt in enumerate(raw_routes):
        if not isinstance(rt, dict):
            c.err(f"{where}.routes[{i}]", "expected a table", "wrong-type")
            continue
        r = _route(rt, f"{where}.routes[{i}]", c)
        if r is None:
            continue
        if any(x.name == r.name for x in routes):
            c.err(f"{where}.routes[{i}].name", f"duplicate route name {r.name!r}")
            continue
        routes.append(r)
    names = {r.name for r in routes}

    def route_ref(key: str) -> str | None:
        name = c.string(table, key, where, None)
        if name is not None and name not in names:
            c.err(f"{where}.{key}", f"no route named {name!r} (routes: {', '.join(sorted(names)) or 'none'})")
        return name

    default_route = route_ref("default_route")
    fallback_route = route_ref("fallback_route")
    rl: RateLimitConfig | None = RateLimitConfig(20, 600_000)
    rlt = c.table(table, "rate_limit", where)
    if rlt is not None:
        rl = _rate_limit(rlt, f"{where}.rate_limit", c)
    retry = RetryConfig()
    rt = c.table(table, "retry", where)
    if rt is not None:
        w = f"{where}.retry"
        c.unknown(rt, {"initial", "max", "multiplier", "parallel"}, w)
        mult = rt.get("multiplier", 2.0)
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not 1.0 <= float(mult) <= 10.0:
            c.err(f"{w}.multiplier", "expected a number between 1.0 and 10.0")
            mult = 2.0
        retry = RetryConfig(
            initial_ms=c.duration(rt, "initial", w, 10_000, minimum_ms=100),
            max_ms=c.duration(rt, "max", w, 600_000, minimum_ms=100),
            multiplier=float(mult),
            parallel=c.integer(rt, "parallel", w, 4, minimum=1),
        )
    heartbeat = None
    ht = c.table(table, "heartbeat", where)
    if ht is not None:
        w = f"{where}.heartbeat"
        c.unknown(ht, {"route", "interval", "enabled"}, w)
        hr = c.string(ht, "route", w, None)
        if not hr:
            c.err(f"{w}.route", "the heartbeat needs a route")
        elif hr not in names:
            c.err(f"{w}.route", f"no route named {hr!r}")
        if c.boolean(ht, "enabled", w, True) and hr:
            heartbeat = HeartbeatConfig(route=hr, interval_ms=c.duration(ht, "interval", w, 300_000, minimum_ms=1000))
    by_severity = dict(DEFAULT_BY_SEVERITY)
    bst = c.table(table, "by_severity", where)
    if bst is not None:
        by_severity = _by_severity(bst, f"{where}.by_severity", c)
    link = c.string(table, "link_template", where, "") or ""
    if link:
        _check_link(link, f"{where}.link_template", c)
    am = AlertmanagerConfig()
    amt = c.table(table, "alertmanager", where)
    if amt is not None:
        w = f"{where}.alertmanager"
        c.unknown(amt, {"resolve_timeout", "resend_interval", "firing_for", "timeout"}, w)
        am = AlertmanagerConfig(
            resolve_timeout_ms=c.duration(amt, "resolve_timeout", w, 300_000, minimum_ms=1000),
            resend_interval_ms=c.duration(amt, "resend_interval", w, 60_000, minimum_ms=1000),
            firing_for_ms=c.duration(amt, "firing_for", w, 3_600_000, minimum_ms=0),
            timeout_ms=c.duration(amt, "timeout", w, 10_000, minimum_ms=100),
        )
        if am.resend_interval_ms >= am.resolve_timeout_ms:
            c.err(f"{w}.resend_interval", "must be shorter than resolve_timeout, or Alertmanager resolves an alert "
                                          "between two resends")
    log_path = c.string(table, "log_path", where, "alerts/alerts.jsonl") or "alerts/alerts.jsonl"
    outbox_path = c.string(table, "outbox_path", where, "alerts/outbox.sqlite") or "alerts/outbox.sqlite"
    cfg = AlertingConfig(
        routes=tuple(routes),
        default_route=default_route,
        fallback_route=fallback_route,
        log_path=log_path,
        log_max_bytes=c.integer(table, "log_max_bytes", where, 64 * 1024 * 1024, minimum=4096),
        log_keep=c.integer(table, "log_keep", where, 10, minimum=0),
        log_fsync=c.boolean(table, "log_fsync", where, True),
        outbox_path=outbox_path,
        group_wait_ms=c.duration(table, "group_wait", where, 30_000),
        group_interval_ms=c.duration(table, "group_interval", where, 300_000, minimum_ms=0),
        repeat_interval_ms=c.duration(table, "repeat_interval", where, 4 * 3_600_000, minimum_ms=1000),
        max_groups=c.integer(table, "max_groups", where, 10_000, minimum=1),
        dedup_retention_ms=c.duration(table, "dedup_retention", where, 7 * 86_400_000, minimum_ms=60_000),
        sent_retention_ms=c.duration(table, "sent_retention", where, 7 * 86_400_000, minimum_ms=0),
        rate_limit=rl,
        retry=retry,
        max_retry_age_ms=c.duration(table, "max_retry_age", where, 3_600_000, minimum_ms=1000),
        heartbeat=heartbeat,
        field_max_chars=c.integer(table, "field_max_chars", where, 2_000, minimum=16),
        body_max_chars=c.integer(table, "body_max_chars", where, 8_000, minimum=64),
        by_severity=by_severity,
        link_template=link,
        alertmanager=am,
    )
    if cfg.retry.max_ms < cfg.retry.initial_ms:
        c.err(f"{where}.retry.max", "must not be smaller than retry.initial")
    if any(i.severity == "error" for i in issues):
        return None, issues
    return cfg, issues


# --- secrets --------------------------------------------------------------------------------------


def _split_urls(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.extend(u for u in re.split(r"[\s,]+", line) if u)
    return out


def resolve_route_urls(route: RouteConfig, environ: dict[str, str] | None = None) -> tuple[list[str], list[Issue]]:
    """The route's URLs: inline ones, then those from `urls_env` and `urls_file` (one or more per line,
    `#` comments). Issues name the route and the source, never a URL (they carry tokens)."""
    env = os.environ if environ is None else environ
    issues: list[Issue] = []
    urls = list(route.urls)
    where = f"alerting.routes[{route.name}]"
    if route.urls_env:
        value = env.get(route.urls_env)
        if not value:
            issues.append(Issue("config", f"{where}.urls_env: environment variable {route.urls_env} is not set"))
        else:
            urls.extend(_split_urls(value))
    if route.urls_file:
        try:
            urls.extend(_split_urls(Path(route.urls_file).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            issues.append(Issue("config", f"{where}.urls_file: cannot read {route.urls_file}: {reason}"))
    c = _Checker(issues)
    good = []
    for i, u in enumerate(urls):
        before = len(issues)
        _check_url(u, f"{where} URL #{i + 1}", c)
        if len(issues) == before:
            good.append(u)
    return good, issues
