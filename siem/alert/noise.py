"""Noise control: grouping (Alertmanager-style timers) and a per-route rate limit with a summary.

Pure and synchronous: every method takes ``now_ms``; nothing here sleeps, reads a clock or does I/O.
Deduplication by alert id happens before this (siem.alert.pipeline keeps the persistent id set).

Grouping. Groups live per route (the pipeline routes an alert first, then groups it on each route it goes
to). Alerts on one route that have the same severity and agree on the route's ``group_by`` form a group;
``group_by`` names ``rule``, ``title`` or key fields (a rule's ``by`` fields), and the default ``...``
means the rule and every key field (one group per rule and key). ``group_by = ["rule"]`` puts all keys of
a rule in one group, whose notifications list the keys (up to MAX_KEYS_PER_NOTIFICATION, then "+N more").
Severity is always part of the group, so a critical alert never waits in a group of lower ones. Each group
has its route's timers (see siem.alert.config.AlertingConfig.timers)::

    alerts      a1  a2 a3          a4 ... a9                   (quiet for repeat_interval)   a10
    time    ----|---|--|-----------|-------|--------------------------------------------------|---->
                0   group_wait                group_interval              repeat_interval
    notify          N1 (a1..a3)               N2 (a4..a9: "+6, 9 in group")                      N1' (new group)

* ``group_wait``: the first notification of a new group waits this long, collecting the initial burst.
* ``group_interval``: once a group has notified, later alerts are held and sent as one update at most
  once per interval (and only when there is something new).
* ``repeat_interval``: our alerts are events, not states that resolve, so re-sending an unchanged group
  would only be noise; instead a group that stayed quiet for ``repeat_interval`` is closed, and the next
  alert for that rule and key opens a new group that notifies again as new.

* ``group_interval`` 0: every alert is notified at once (the default for critical and high).

Rate limit. Per route and scope (``by``: each rule, the default; each severity; or the whole route), at
most ``max_notifications`` alert notifications per sliding window ``per``. Per rule, a storm of one rule
never uses up the budget of others, so a critical or high alert is never held behind a flood of lower
ones; exempt severities (default: critical) are never limited. The rest are counted, and when the window
frees up ONE summary notification ("+K more alerts suppressed by the rate limit") goes out on the route.
Summaries, heartbeats and fallbacks are not limited. The limiter's
state is serialisable (``to_json``/``load``) and the pipeline keeps it in the outbox database.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

from siem.alert.config import GROUP_BY_ALL, Timers
from siem.alert.record import Alert
from siem.alert.render import raw_line

MAX_IDS_PER_NOTIFICATION = 20
MAX_KEYS_PER_NOTIFICATION = 50
MAX_SAMPLES_PER_NOTIFICATION = 5
_SAMPLE_CHARS = 4_000
_KEY_CHARS = 300


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def alert_key(alert: Alert) -> str:
    """The alert's key as people read it: ``source.ip=10.0.0.1, user.name=root`` ("" for a keyless rule)."""
    return ", ".join(f"{k}={v}" for k, v in alert.group)


def group_key(alert: Alert, route: str = "", group_by: tuple[str, ...] = (GROUP_BY_ALL,)) -> str:
    """Which group of ``route`` the alert joins (severity is always part of it)."""
    if group_by == (GROUP_BY_ALL,):
        parts = [alert.rule_id, *(f"{k}={v}" for k, v in alert.group)]
    else:
        values = dict(alert.group)
        parts = [f"{f}={alert.rule_id if f == 'rule' else alert.title if f == 'title' else values.get(f, '')}"
                 for f in group_by]
    if not route:  # groups of an older version: one per rule and key, routed when they notify
        return "\x1f".join(parts)
    return "\x1f".join([route, alert.severity, *parts])


@dataclass(slots=True)
class GroupState:
    """One open group. Serialised as JSON into the outbox database after every change."""

    key: str
    group_id: str  # id of the alert that opened the group: unique per group instance, deterministic
    rule: str
    title: str
    severity: str
    tags: list[str]
    group: list[list[str]]
    message: str
    aggregates: dict[str, object]
    opened_ms: int
    last_alert_ms: int
    last_notified_ms: int | None = None
    next_flush_ms: int | None = None
    seq: int = 0  # notifications sent so far
    pending_ids: list[str] = field(default_factory=list)
    pending: int = 0  # alerts not yet notified
    pending_events: int = 0
    first_ms: int = 0  # event time range of the pending alerts
    last_ms: int = 0
    total: int = 0  # alerts in this group instance
    route: str = ""  # "" in groups saved by an older version: routed when they notify
    interval_ms: int | None = None  # this group's timers (None: the Grouper's defaults)
    repeat_ms: int | None = None
    keys: list[str] = field(default_factory=list)  # distinct keys of the pending alerts, in arrival order
    keys_more: int = 0  # pending alerts whose key did not fit in `keys`
    rules: list[str] = field(default_factory=list)  # distinct rules of the pending alerts (at most 10)
    samples: list[list[object]] = field(default_factory=list)  # [event time ms, raw line] of pending alerts
    runbook: str = ""
    references: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {s: getattr(self, s) for s in self.__slots__}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> "GroupState":
        return cls(**d)  # type: ignore[arg-type]

    def take(self, alert: Alert) -> None:
        """Remember what a notification shows about one more pending alert (bounded)."""
        key = alert_key(alert)[:_KEY_CHARS]
        if key in self.keys:
            pass
        elif len(self.keys) < MAX_KEYS_PER_NOTIFICATION:
            self.keys.append(key)
        else:
            self.keys_more += 1
        if alert.rule_id not in self.rules and len(self.rules) < 10:
            self.rules.append(alert.rule_id)
        if len(self.samples) < MAX_SAMPLES_PER_NOTIFICATION:
            for e in alert.events[:3]:  # a few per alert, so a group shows several of its alerts
                line = raw_line(e)
                if line and len(self.samples) < MAX_SAMPLES_PER_NOTIFICATION:
                    ts = e.get("@timestamp")
                    self.samples.append([int(ts) if isinstance(ts, (int, float)) else alert.first_ms,
                                         line[:_SAMPLE_CHARS]])
        self.runbook = alert.runbook or self.runbook
        self.references = list(alert.references) or self.references


@dataclass(frozen=True, slots=True)
class Notification:
    """What noise control decided to say about a group (before routing and rendering)."""

    key: str  # deterministic: group id + sequence number
    kind: str  # "first" | "update"
    group_id: str
    rule: str
    title: str
    severity: str
    tags: tuple[str, ...]
    group: tuple[tuple[str, str], ...]
    message: str
    aggregates: dict[str, object]
    alert_id: str  # the latest alert in this notification
    alert_ids: tuple[str, ...]  # up to MAX_IDS_PER_NOTIFICATION of them
    alerts: int  # alerts in this notification
    total: int  # alerts in the group so far
    events: int
    first_ms: int
    last_ms: int
    route: str = ""  # "" : route it now (a group saved by an older version)
    keys: tuple[str, ...] = ()  # distinct keys of its alerts (at most MAX_KEYS_PER_NOTIFICATION) ...
    keys_more: int = 0  # ... and how many alerts had a key beyond those
    rules: tuple[str, ...] = ()
    samples: tuple[tuple[int, str], ...] = ()  # (event time ms, raw log line)
    runbook: str = ""
    references: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key, "kind": self.kind, "group_id": self.group_id, "rule": self.rule,
            "title": self.title, "severity": self.severity, "tags": list(self.tags),
            "group": [list(p) for p in self.group], "message": self.message, "aggregates": self.aggregates,
            "alert_id": self.alert_id, "alert_ids": list(self.alert_ids), "alerts": self.alerts,
            "total": self.total, "events": self.events, "first_ms": self.first_ms, "last_ms": self.last_ms,
            "route": self.route, "keys": list(self.keys), "keys_more": self.keys_more, "rules": list(self.rules),
            "samples": [list(x) for x in self.samples], "runbook": self.runbook,
            "references": list(self.references),
        }


class Grouper:
    """Open groups and their timers. The constructor's timers apply to ``add`` calls that give none."""

    def __init__(self, group_wait_ms: int, group_interval_ms: int, repeat_interval_ms: int, max_groups: int) -> None:
        self.group_wait_ms = group_wait_ms
        self.group_interval_ms = group_interval_ms
        self.repeat_interval_ms = repeat_interval_ms
        self.max_groups = max_groups
        self.groups: dict[str, GroupState] = {}
        self.dirty: set[str] = set()  # keys changed since the caller last persisted (removed ones too)

    def load(self, groups: list[GroupState]) -> None:
        self.groups = {g.key: g for g in groups}
        self.dirty.clear()

    def _repeat(self, g: GroupState) -> int:
        return g.repeat_ms if g.repeat_ms is not None else self.repeat_interval_ms

    def add(self, alert: Alert, now_ms: int, route: str = "", timers: Timers | None = None,
            group_by: tuple[str, ...] = (GROUP_BY_ALL,)) -> list[Notification]:
        """Fold one (new, deduplicated) alert into its group on ``route``. Returns notifications due right
        away (group_wait 0, or group_interval 0)."""
        t = timers or Timers(self.group_wait_ms, self.group_interval_ms, self.repeat_interval_ms)
        key = group_key(alert, route, group_by)
        g = self.groups.get(key)
        if g is not None and g.pending == 0 and now_ms - g.last_alert_ms >= self._repeat(g):
            del self.groups[key]
            g = None
        if g is None:
            if len(self.groups) >= self.max_groups:
                self._evict(now_ms)
            g = GroupState(
                key=key, group_id=alert.id, rule=alert.rule_id,
                title=alert.title, severity=alert.severity,
                tags=list(alert.tags), group=[list(p) for p in alert.group], message=alert.message,
                aggregates=dict(alert.aggregates), opened_ms=now_ms, last_alert_ms=now_ms,
                next_flush_ms=now_ms + t.group_wait_ms, route=route, interval_ms=t.group_interval_ms,
                repeat_ms=t.repeat_interval_ms,
            )
            self.groups[key] = g
        elif g.next_flush_ms is None:
            last = g.last_notified_ms if g.last_notified_ms is not None else now_ms
            interval = g.interval_ms if g.interval_ms is not None else self.group_interval_ms
            g.next_flush_ms = max(now_ms, last + interval)
        if g.pending == 0:
            g.first_ms, g.last_ms = alert.first_ms, alert.last_ms
        else:
            g.first_ms, g.last_ms = min(g.first_ms, alert.first_ms), max(g.last_ms, alert.last_ms)
        g.pending += 1
        g.pending_events += alert.count
        g.total += 1
        g.last_alert_ms = now_ms
        g.message, g.aggregates, g.severity, g.title = alert.message, dict(alert.aggregates), alert.severity, alert.title
        g.group = [list(p) for p in alert.group]
        g.take(alert)
        g.pending_ids.append(alert.id)
        if len(g.pending_ids) > MAX_IDS_PER_NOTIFICATION:
            del g.pending_ids[: len(g.pending_ids) - MAX_IDS_PER_NOTIFICATION]
        self.dirty.add(key)
        return self.due(now_ms) if g.next_flush_ms is not None and g.next_flush_ms <= now_ms else []

    def _evict(self, now_ms: int) -> None:
        """Make room: drop the groups quiet longest that have nothing pending; flushing is not lost
        because a group with pending alerts is never evicted (the cap may then be exceeded)."""
        idle = sorted((g.last_alert_ms, k) for k, g in self.groups.items() if g.pending == 0)
        for _, k in idle[: max(1, len(self.groups) - self.max_groups + 1)]:
            del self.groups[k]
            self.dirty.add(k)

    def due(self, now_ms: int) -> list[Notification]:
        """Notifications whose timer has come; closes groups quiet for repeat_interval."""
        out: list[Notification] = []
        for key, g in list(self.groups.items()):
            if g.next_flush_ms is not None and g.next_flush_ms <= now_ms:
                out.append(Notification(
                    key=_sha(f"{g.group_id}:{g.seq}"), kind="first" if g.seq == 0 else "update",
                    group_id=g.group_id, rule=g.rule, title=g.title, severity=g.severity, tags=tuple(g.tags),
                    group=tuple((str(a), str(b)) for a, b in g.group), message=g.message,
                    aggregates=g.aggregates, alert_id=g.pending_ids[-1] if g.pending_ids else g.group_id,
                    alert_ids=tuple(g.pending_ids), alerts=g.pending, total=g.total, events=g.pending_events,
                    first_ms=g.first_ms, last_ms=g.last_ms, route=g.route, keys=tuple(g.keys),
                    keys_more=g.keys_more, rules=tuple(g.rules),
                    samples=tuple((int(str(ts)), str(line)) for ts, line in g.samples),
                    runbook=g.runbook, references=tuple(g.references),
                ))
                g.seq += 1
                g.pending = g.pending_events = g.keys_more = 0
                g.pending_ids, g.keys, g.rules, g.samples = [], [], [], []
                g.last_notified_ms = now_ms
                g.next_flush_ms = None
                self.dirty.add(key)
            elif g.pending == 0 and now_ms - g.last_alert_ms >= self._repeat(g):
                del self.groups[key]
                self.dirty.add(key)
        return out

    def next_due_ms(self) -> int | None:
        times = [g.next_flush_ms for g in self.groups.values() if g.next_flush_ms is not None]
        return min(times) if times else None


@dataclass(slots=True)
class _Window:
    sent: deque[int] = field(default_factory=deque)
    suppressed_alerts: int = 0
    suppressed_notifications: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Summary:
    route: str
    key: str
    alerts: int
    notifications: int
    by_rule: tuple[tuple[str, int], ...]  # most suppressed first, at most 10
    scope: str = ""  # "rule ssh_bruteforce", "severity high" or "" (the whole route)


def scope_of(n: Notification, by: str) -> str:
    """What one rate-limit window counts: ``rule X``, ``severity Y`` or "" (by = "route")."""
    return f"rule {n.rule}" if by == "rule" else f"severity {n.severity}" if by == "severity" else ""


def _bucket(route: str, scope: str) -> str:
    return f"{route}\x1f{scope}" if scope else route


def _route_of(bucket: str) -> tuple[str, str]:
    route, _, scope = bucket.partition("\x1f")
    return route, scope


class RateLimiter:
    """Sliding-window limit per (route, scope); one summary per tripped window."""

    def __init__(self) -> None:
        self._w: dict[str, _Window] = {}
        self.changed = False  # since the caller last persisted to_json()

    def to_json(self) -> dict[str, object]:
        return {r: {"sent": list(w.sent), "alerts": w.suppressed_alerts, "notifications": w.suppressed_notifications,
                    "by_rule": w.by_rule} for r, w in self._w.items()}

    def load(self, d: dict[str, object]) -> None:
        self._w = {}
        for route, v in d.items():
            if isinstance(v, dict):
                self._w[route] = _Window(sent=deque(int(x) for x in v.get("sent", [])),
                                         suppressed_alerts=int(v.get("alerts", 0)),
                                         suppressed_notifications=int(v.get("notifications", 0)),
                                         by_rule={str(k): int(n) for k, n in dict(v.get("by_rule", {})).items()})
        self.changed = False

    def allow(self, route: str, max_n: int, per_ms: int, n: Notification, now_ms: int, by: str = "route") -> bool:
        w = self._w.setdefault(_bucket(route, scope_of(n, by)), _Window())
        self.changed = True
        while w.sent and w.sent[0] <= now_ms - per_ms:
            w.sent.popleft()
        if w.suppressed_notifications == 0 and len(w.sent) < max_n:
            w.sent.append(now_ms)
            return True
        # Tripped: everything is counted until the summary for this window has gone out.
        w.suppressed_alerts += n.alerts
        w.suppressed_notifications += 1
        w.by_rule[n.rule] = w.by_rule.get(n.rule, 0) + n.alerts
        return False

    def summaries(self, per_ms_of: dict[str, int], now_ms: int) -> list[Summary]:
        """Summaries owed whose window has freed up (the oldest counted send is a window old)."""
        out = []
        for bucket, w in list(self._w.items()):
            route, scope = _route_of(bucket)
            per_ms = per_ms_of.get(route, 0)
            if w.suppressed_notifications == 0:
                if not w.sent or w.sent[-1] <= now_ms - per_ms:  # idle: one window per rule would pile up
                    del self._w[bucket]
                    self.changed = True
                continue
            if w.sent and w.sent[0] > now_ms - per_ms:
                continue
            top = tuple(sorted(w.by_rule.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
            out.append(Summary(route=route, key=_sha(f"summary:{bucket}:{now_ms}"), alerts=w.suppressed_alerts,
                               notifications=w.suppressed_notifications, by_rule=top, scope=scope))
            w.suppressed_alerts = w.suppressed_notifications = 0
            w.by_rule = {}
            w.sent.clear()
            w.sent.append(now_ms)  # the summary itself counts as one sent in the new window
            self.changed = True
        return out

    def next_due_ms(self, per_ms_of: dict[str, int]) -> int | None:
        times = [w.sent[0] + per_ms_of.get(_route_of(b)[0], 0) for b, w in self._w.items()
                 if w.suppressed_notifications and w.sent]
        return min(times) if times else None
