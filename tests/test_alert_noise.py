"""Noise control: grouping timers and the per-route rate limit, on a virtual clock (pure, no I/O)."""

from __future__ import annotations

from siem.alert.noise import Grouper, Notification, RateLimiter
from siem.alert.record import Alert, alert_id

S = 1000
M = 60 * S
T0 = 1_700_000_000_000


def mk(n: int, rule: str = "ssh_bruteforce", ip: str = "203.0.113.7") -> Alert:
    group = (("source.ip", ip),)
    return Alert(id=alert_id(rule, group, n), rule_id=rule, title="SSH brute force", severity="high",
                 tags=("attack.t1110",), group=group, first_ms=T0 + n, last_ms=T0 + n, count=10,
                 message=f"failed logins from {ip}")


def run_storm(g: Grouper, alerts: list[tuple[int, Alert]], until_ms: int, step_ms: int = S) -> list[tuple[int, Notification]]:
    """Feed alerts at their times and tick the grouper every step; returns (time, notification)."""
    out = []
    i = 0
    t = T0
    while t <= until_ms:
        while i < len(alerts) and alerts[i][0] <= t:
            out += [(t, n) for n in g.add(alerts[i][1], t)]
            i += 1
        out += [(t, n) for n in g.due(t)]
        t += step_ms
    return out


def test_brute_force_of_1000_alerts_gives_one_notification_plus_interval_updates():
    """1,000 alerts for one rule+key over 10 minutes: first after group_wait, then one update per group_interval."""
    # alerts  |||||||||||||||||||||||||||||||||||||||||||||||||||| (every 0.6 s from 0 to 599.4 s)
    # notify    N1 at 30s                 U1 at 330s                 U2 at 630s
    g = Grouper(group_wait_ms=30 * S, group_interval_ms=5 * M, repeat_interval_ms=4 * 60 * M, max_groups=100)
    alerts = [(T0 + i * 600, mk(i)) for i in range(1000)]
    out = run_storm(g, alerts, T0 + 20 * M)
    assert [(t - T0, n.kind) for t, n in out] == [(30 * S, "first"), (330 * S, "update"), (630 * S, "update")]
    assert sum(n.alerts for _, n in out) == 1000
    assert out[-1][1].total == 1000


def test_long_group_interval_sends_exactly_one_notification_in_ten_minutes():
    """With group_interval 1h the whole 10-minute brute force is one notification."""
    g = Grouper(group_wait_ms=30 * S, group_interval_ms=60 * M, repeat_interval_ms=4 * 60 * M, max_groups=100)
    alerts = [(T0 + i * 600, mk(i)) for i in range(1000)]
    out = run_storm(g, alerts, T0 + 10 * M)
    # 50 alerts (0 .. 29.4 s) in the first notification; the other 950 wait for the 1h update
    assert [(t - T0, n.kind, n.alerts) for t, n in out] == [(30 * S, "first", 50)]


def test_first_notification_collects_the_group_wait_burst():
    """Alerts inside group_wait are one notification carrying all of them."""
    g = Grouper(group_wait_ms=30 * S, group_interval_ms=5 * M, repeat_interval_ms=60 * M, max_groups=100)
    for i in range(5):
        assert g.add(mk(i), T0 + i * S) == []
    out = g.due(T0 + 30 * S)
    assert [(n.kind, n.alerts, n.total, n.events) for n in out] == [("first", 5, 5, 50)]
    assert out[0].alert_ids == tuple(mk(i).id for i in range(5))


def test_distinct_keys_are_distinct_groups():
    """Two source IPs of one rule notify separately."""
    g = Grouper(group_wait_ms=0, group_interval_ms=5 * M, repeat_interval_ms=60 * M, max_groups=100)
    a = g.add(mk(0, ip="198.51.100.1"), T0)
    b = g.add(mk(0, ip="198.51.100.2"), T0)
    assert len(a) == 1 and len(b) == 1 and a[0].group_id != b[0].group_id


def test_quiet_group_closes_after_repeat_interval_and_reopens_as_new():
    """After repeat_interval without alerts the next alert is a new group with its own first notification."""
    g = Grouper(group_wait_ms=0, group_interval_ms=5 * M, repeat_interval_ms=60 * M, max_groups=100)
    first = g.add(mk(0), T0)
    upd = g.add(mk(1), T0 + 59 * M)  # still the same group; group_interval is over, so the update goes at once
    assert [n.kind for n in first + upd] == ["first", "update"]
    g.due(T0 + 59 * M + 60 * M)  # quiet for a full repeat_interval: closed
    assert g.groups == {}
    again = g.add(mk(2), T0 + 200 * M)
    assert [(n.kind, n.total) for n in again] == [("first", 1)]


def test_notification_keys_are_deterministic():
    """The same alerts at the same times give the same notification keys (idempotent enqueue)."""
    def keys() -> list[str]:
        g = Grouper(group_wait_ms=10 * S, group_interval_ms=M, repeat_interval_ms=60 * M, max_groups=100)
        return [n.key for _, n in run_storm(g, [(T0 + i * 7 * S, mk(i)) for i in range(30)], T0 + 10 * M)]

    assert keys() == keys() and len(set(keys())) == len(keys())


def test_group_state_survives_a_json_round_trip():
    """Group state serialised to the database and loaded back keeps its timer and counts."""
    from siem.alert.noise import GroupState

    g = Grouper(group_wait_ms=30 * S, group_interval_ms=5 * M, repeat_interval_ms=60 * M, max_groups=100)
    g.add(mk(0), T0)
    g.add(mk(1), T0 + S)
    h = Grouper(group_wait_ms=30 * S, group_interval_ms=5 * M, repeat_interval_ms=60 * M, max_groups=100)
    h.load([GroupState.from_json(s.to_json()) for s in g.groups.values()])
    assert [(n.kind, n.alerts) for n in h.due(T0 + 30 * S)] == [("first", 2)]


def test_group_cap_evicts_idle_groups_only():
    """At max_groups the quietest group without pending alerts is dropped; pending ones are kept."""
    g = Grouper(group_wait_ms=0, group_interval_ms=5 * M, repeat_interval_ms=60 * M, max_groups=2)
    g.add(mk(0, ip="10.0.0.1"), T0)
    g.add(mk(0, ip="10.0.0.2"), T0 + S)
    g.add(mk(0, ip="10.0.0.3"), T0 + 2 * S)
    assert sorted(k.split("=")[1] for k in g.groups) == ["10.0.0.2", "10.0.0.3"]


def _note(i: int, rule: str = "r") -> Notification:
    return Notification(key=f"k{i}", kind="first", group_id=f"g{i}", rule=rule, title="t", severity="high",
                        tags=(), group=(), message="m", aggregates={}, alert_id=f"a{i}", alert_ids=(f"a{i}",),
                        alerts=1, total=1, events=1, first_ms=0, last_ms=0)


def test_rate_limit_storm_gives_n_notifications_and_one_summary():
    """500 distinct notifications in one minute with a limit of 5 per 10 minutes: 5 pass, then one summary."""
    rl = RateLimiter()
    passed = [i for i in range(500) if rl.allow("pager", 5, 10 * M, _note(i, rule=f"r{i % 3}"), T0 + i * 100)]
    assert passed == [0, 1, 2, 3, 4]
    assert rl.summaries({"pager": 10 * M}, T0 + 9 * M) == []  # window not over yet
    sums = rl.summaries({"pager": 10 * M}, T0 + 10 * M)
    assert [(s.route, s.alerts, s.notifications) for s in sums] == [("pager", 495, 495)]
    assert dict(sums[0].by_rule) == {"r0": 165, "r1": 165, "r2": 165}
    assert rl.summaries({"pager": 10 * M}, T0 + 30 * M) == []  # exactly one summary


def test_rate_limit_is_per_route():
    """Tripping one route's limit leaves another route's untouched."""
    rl = RateLimiter()
    for i in range(3):
        rl.allow("chat", 2, M, _note(i), T0)
    assert rl.allow("mail", 2, M, _note(9), T0) is True


def test_rate_limit_opens_again_after_the_summary():
    """After the summary a new window allows notifications again (the summary counts as one)."""
    rl = RateLimiter()
    for i in range(4):
        rl.allow("chat", 2, M, _note(i), T0)
    assert len(rl.summaries({"chat": M}, T0 + M)) == 1
    assert [rl.allow("chat", 2, M, _note(10 + i), T0 + M + i) for i in range(3)] == [True, False, False]


def test_idle_rate_limit_windows_are_dropped():
    """A window per rule must not pile up: once its sends are a window old and nothing is owed, it goes."""
    rl = RateLimiter()
    for i in range(100):
        rl.allow("chat", 5, M, _note(i, rule=f"r{i}"), T0, by="rule")
    assert len(rl.to_json()) == 100
    assert rl.summaries({"chat": M}, T0 + M) == [] and rl.to_json() == {}
