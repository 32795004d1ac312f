"""Correlations at their edges: thresholds, window boundaries, keys, order, suppression."""

from __future__ import annotations

from tests.engine_support import M, S, T0, ev, fails, run

BF = """
rule bf { severity high
  when event.dataset == "sshd" and event.outcome == "failure"
  count >= 3 within 5m by source.ip
  message "{count} failures from {source.ip} ({distinct(user.name)} users)" }
"""


def test_count_fires_exactly_at_threshold() -> None:
    """3 failures inside 5m fire once, with count 3."""
    # t: 0s  60s  120s
    #    x   x    x     -> fire at 120s
    alerts = run(BF, fails("1.1.1.1", [0, 60, 120]))
    assert [(a.count, a.first_ms - T0, a.group) for a in alerts] == [(3, 0, (("source.ip", "1.1.1.1"),))]


def test_count_below_threshold_does_not_fire() -> None:
    """2 failures are not 3."""
    assert run(BF, fails("1.1.1.1", [0, 60])) == []


def test_window_boundary_is_exclusive() -> None:
    """Events exactly 5m apart are not in one 5m window."""
    # t: 0s  150s  300s
    #    x   x     x    -> (300s-5m, 300s] holds only 150s and 300s
    assert run(BF, fails("1.1.1.1", [0, 150, 300])) == []


def test_window_just_inside_boundary_fires() -> None:
    """Events 299.999s apart are within 5m."""
    assert len(run(BF, fails("1.1.1.1", [0, 150, 299.999]))) == 1


def test_keys_are_separate() -> None:
    """Failures from different sources do not add up."""
    events = fails("1.1.1.1", [0, 1]) + fails("2.2.2.2", [2, 3])
    events.sort(key=lambda e: e["@timestamp"])
    assert run(BF, events) == []


def test_window_clears_after_firing() -> None:
    """After an alert the next one needs a fresh threshold of events."""
    alerts = run(BF, fails("1.1.1.1", [0, 1, 2, 3, 4, 5, 6]))
    assert [a.count for a in alerts] == [3, 3]


def test_message_template_renders_fields_and_aggregates() -> None:
    """{count}, {source.ip} and {distinct(user.name)} are filled in."""
    events = fails("1.1.1.1", [0], "a") + fails("1.1.1.1", [1], "b") + fails("1.1.1.1", [2], "a")
    assert run(BF, events)[0].message == "3 failures from 1.1.1.1 (2 users)"


def test_out_of_order_within_lateness_is_reordered() -> None:
    """An event arriving late but within the allowed lateness counts in its own window."""
    # arrival: 0s, 200s, 100s (late by 100s, lateness 2m); window 150s holds 100s and 200s
    src = BF.replace("within 5m", "within 150s").replace(">= 3", ">= 2")
    events = fails("1.1.1.1", [0, 200, 100])
    alerts = run(src, events, lateness_ms=2 * M)
    assert [(a.first_ms - T0, a.last_ms - T0) for a in alerts] == [(0, 100 * S)]


def test_late_event_beyond_lateness_is_kept() -> None:
    """An event later than the allowed lateness is still counted, with its own time."""
    src = BF.replace(">= 3", ">= 2")
    events = fails("1.1.1.1", [100, 0])  # second arrives 100s late, lateness 0
    assert [a.count for a in run(src, events)] == [2]


def test_distinct_threshold() -> None:
    """distinct(user.name) counts different users, not events."""
    src = """rule spray { when event.outcome == "failure" distinct(user.name) >= 3 within 10m by source.ip }"""
    same = fails("1.1.1.1", [0, 1, 2, 3], "root")
    many = [e for i, u in enumerate(["a", "b", "a", "c"]) for e in fails("1.1.1.1", [i], u)]
    assert run(src, same) == []
    assert [a.count for a in run(src, many)] == [4]


def test_sum_threshold() -> None:
    """sum(field) adds up a number field within the window."""
    src = """rule exfil { when event.dataset == "nginx.access" sum(http.response.body.bytes) >= 1000 within 1m by source.ip }"""
    events = [ev(i * S, event__dataset="nginx.access", source__ip="9.9.9.9", http__response__body__bytes=400)
              for i in range(3)]
    assert [a.aggregates["count"] for a in run(src, events)] == [3]
    assert run(src, events[:2]) == []


def test_count_with_two_keys() -> None:
    """`by source.ip, user.name` keeps a window per pair."""
    src = BF.replace("by source.ip", "by source.ip, user.name")
    events = fails("1.1.1.1", [0, 1], "a") + fails("1.1.1.1", [2], "b")
    assert run(src, events) == []
    alerts = run(src, fails("1.1.1.1", [0, 1, 2], "a"))
    assert alerts[0].group == (("source.ip", "1.1.1.1"), ("user.name", "a"))


def test_missing_key_is_not_correlated() -> None:
    """Events without the `by` field are not counted."""
    events = [ev(i * S, event__dataset="sshd", event__outcome="failure") for i in range(5)]
    assert run(BF, events) == []


SEQ = """
rule after_bf { severity critical
  sequence within 10m by source.ip {
    event.dataset == "sshd" and event.outcome == "failure" count >= 3
    event.dataset == "sshd" and event.outcome == "success"
  } }
"""


def ok(ip: str, t_s: float) -> list:
    return [ev(int(t_s * S), event__dataset="sshd", event__outcome="success", source__ip=ip, user__name="root")]


def test_sequence_fires_in_order() -> None:
    """3 failures then a success from one source fire."""
    alerts = run(SEQ, fails("1.1.1.1", [0, 10, 20]) + ok("1.1.1.1", 30))
    assert [(a.count, a.first_ms - T0, a.last_ms - T0) for a in alerts] == [(4, 0, 30 * S)]


def test_sequence_wrong_order_does_not_fire() -> None:
    """A success before the failures is not the sequence."""
    assert run(SEQ, ok("1.1.1.1", 0) + fails("1.1.1.1", [10, 20, 30])) == []


def test_sequence_too_few_first_steps() -> None:
    """2 failures are not enough for `count >= 3`."""
    assert run(SEQ, fails("1.1.1.1", [0, 10]) + ok("1.1.1.1", 30)) == []


def test_sequence_outside_window() -> None:
    """The success must come within 10m of the first failure used."""
    assert run(SEQ, fails("1.1.1.1", [0, 10, 20]) + ok("1.1.1.1", 620)) == []


def test_sequence_different_keys() -> None:
    """Failures from one source and success from another do not chain."""
    assert run(SEQ, fails("1.1.1.1", [0, 10, 20]) + ok("2.2.2.2", 30)) == []


ABSENT = 'rule quiet { absent event.dataset == "aws.cloudtrail" for 15m by cloud.account.id }'


def ct(t_s: float, account: str = "111") -> list:
    return [ev(int(t_s * S), event__dataset="aws.cloudtrail", cloud__account__id=account)]


def test_absent_fires_when_key_goes_silent() -> None:
    """A source seen then silent for more than 15m fires (time moves with other events)."""
    events = ct(0) + [ev(16 * M, event__dataset="sshd")]
    alerts = run(ABSENT, events)
    assert [(a.group, a.first_ms - T0) for a in alerts] == [((("cloud.account.id", "111"),), 0)]


def test_absent_quiet_for_exactly_window_does_not_fire() -> None:
    """Silence of exactly 15m is not more than 15m."""
    assert run(ABSENT, ct(0) + ct(15 * 60)) == []


def test_absent_gaps_inside_a_batch_fire_once_each_with_the_last_event_before() -> None:
    """Two silences of one account inside the stream each fire, showing the event before the gap; a late
    event does not move "last seen" back; the result is the same in one batch or one event per batch."""
    events = ct(0) + ct(60) + ct(20 * 60) + ct(5 * 60) + ct(21 * 60) + ct(40 * 60) + ct(41 * 60, "222")
    for batch in (1, 2, 3, 10_000):
        alerts = run(ABSENT, events, lateness_ms=0, batch=batch)
        got = [(a.first_ms - T0, a.events[0]["@timestamp"] - T0) for a in alerts if a.group[0][1] == "111"]
        assert got == [(60 * S, 60 * S), (21 * 60 * S, 21 * 60 * S)], batch


def test_absent_fires_on_clock_advance_without_events() -> None:
    """The daemon's idle timer (engine.advance) fires absent rules with no events arriving."""
    from tests.engine_support import T0, engine

    eng = engine(ABSENT)
    assert eng.process(ct(0)) == []
    assert eng.advance(T0 + 10 * M) == []
    assert len(eng.advance(T0 + 16 * M)) == 1


FIRST = 'rule newsrc { when event.outcome == "success" first_seen source.ip by user.name learn 1h }'


def test_first_seen_after_learning() -> None:
    """A new source for a user fires only once the user has been learnt for 1h."""
    def login(t_s: float, ip: str) -> list:
        return [ev(int(t_s * S), event__outcome="success", user__name="alice", source__ip=ip)]

    events = login(0, "1.1.1.1") + login(60, "2.2.2.2") + login(7200, "1.1.1.1") + login(7300, "3.3.3.3")
    alerts = run(FIRST, events)
    assert [dict(a.group)["source.ip"] for a in alerts] == ["3.3.3.3"]


SPIKE = 'rule flood { when event.dataset == "nginx.access" spike 5x baseline 1h within 1m by host.name min 20 }'


def test_spike_against_baseline() -> None:
    """A minute with far more requests than the hourly baseline fires; steady traffic does not."""
    steady = [ev(i * 10 * S, event__dataset="nginx.access", host__name="web") for i in range(6 * 90)]  # 6/min, 90 min
    burst = [ev(90 * M + i * 500, event__dataset="nginx.access", host__name="web") for i in range(60)]
    assert run(SPIKE, steady) == []
    alerts = run(SPIKE, steady + burst)
    assert len(alerts) == 1 and alerts[0].aggregates["baseline"] == 6.0


def test_suppression_mutes_repeats_for_the_key() -> None:
    """suppress 30m: a second window for the same source within 30m is muted; another source is not."""
    src = BF.replace("message", "suppress 30m\n message")
    events = fails("1.1.1.1", [0, 1, 2, 10, 11, 12]) + fails("2.2.2.2", [20, 21, 22]) + fails("1.1.1.1", [1900, 1901, 1902])
    events.sort(key=lambda e: e["@timestamp"])
    alerts = run(src, events)
    assert [(dict(a.group)["source.ip"], (a.first_ms - T0) // 1000) for a in alerts] == [
        ("1.1.1.1", 0), ("2.2.2.2", 20), ("1.1.1.1", 1900)]


def test_single_event_rule_ids_are_deterministic() -> None:
    """The same input gives the same alert ids in two runs."""
    src = 'rule root { when user.name == "root" }'
    events = fails("1.1.1.1", [0, 1, 2])
    assert [a.id for a in run(src, events)] == [a.id for a in run(src, events)]
    assert len({a.id for a in run(src, events)}) == 3


def test_snapshot_restore_continues_windows() -> None:
    """A window half full at a checkpoint completes after restore into a fresh engine."""
    from tests.engine_support import engine

    first = engine(BF)
    assert first.process(fails("1.1.1.1", [0, 1])) == []
    blob = first.snapshot()
    second = engine(BF)
    second.restore(blob)
    assert [a.count for a in second.process(fails("1.1.1.1", [2]))] == [3]


def test_reload_keeps_state_of_unchanged_rules() -> None:
    """replace_rules keeps windows of rules whose logic did not change, and drops changed ones."""
    from siem.dsl.loader import load_texts
    from tests.engine_support import engine

    eng = engine(BF)
    eng.process(fails("1.1.1.1", [0, 1]))
    eng.replace_rules(load_texts({"t.rules": BF.replace('title', 'title')}))
    assert [a.count for a in eng.process(fails("1.1.1.1", [2]))] == [3]
    eng.process(fails("1.1.1.1", [3, 4]))
    eng.replace_rules(load_texts({"t.rules": BF.replace(">= 3", ">= 4")}))
    assert eng.process(fails("1.1.1.1", [5])) == []


def test_backfilled_host_keeps_its_own_time() -> None:
    """A second host's log read after the first's (all late) is windowed at its own times: no false burst."""
    # host A (1.1.1.1) then host B (2.2.2.2): each source fails once every 10 minutes for 5 hours
    a = fails("1.1.1.1", [i * 600 for i in range(30)])
    b = fails("2.2.2.2", [i * 600 + 5 for i in range(30)])
    assert run(BF, a + b) == []


def test_late_event_completes_its_own_window() -> None:
    """Late events of one key still count in the window of their own time."""
    a = fails("9.9.9.9", [1000, 1001])
    b = fails("1.1.1.1", [0, 30, 60])  # arrive after 9.9.9.9's, 1000s late
    assert [(dict(x.group)["source.ip"], x.count) for x in run(BF, a + b)] == [("1.1.1.1", 3)]


def test_a_failing_rule_is_counted_and_the_others_still_fire() -> None:
    """Fault injection: one rule's window raising does not stop the batch, the other rules, or the engine."""
    from siem import metrics
    from tests.engine_support import engine

    eng = engine(BF + '\nrule root { when user.name == "root" }')
    broken = next(r for r in eng.rules if r.id == "bf")

    def explode(batch, rows):  # noqa: ANN001, ANN202 - stands in for an engine bug
        raise RuntimeError("boom")

    broken.correlator.process = explode  # type: ignore[union-attr,method-assign]
    before = metrics.value("siem_rule_errors_total", rule="bf")
    alerts = eng.process(fails("1.1.1.1", [0, 1, 2]))
    assert [a.rule_id for a in alerts] == ["root", "root", "root"]
    assert metrics.value("siem_rule_errors_total", rule="bf") == before + 1


def test_idle_keys_leave_window_state() -> None:
    """A key whose events all left the window, and that did not change since the previous sweep marked it,
    is dropped (sweeps run every half window of event time) and counted; the alerts are those of an
    engine that never sweeps."""
    from siem import metrics
    from tests.engine_support import engine

    stream = (fails("10.0.0.1", [0]) + fails("10.0.0.2", [60, 61]) + fails("10.0.0.3", [400])
              + fails("10.0.0.2", [402, 403, 404]) + fails("10.0.0.4", [700, 1000]))
    eng = engine(BF)
    before = metrics.value("siem_window_keys_expired_total")
    alerts = []
    for e in stream:
        alerts += eng.process([e])
    # sweeps at 0, 400, 700 and 1000 s. At 400 s .1 (0 s) and .2 (61 s) are marked; .2 comes back and fires at
    # 404 s (its window is then cleared); at 700 s .1 goes and .3 (400 s) is marked; at 1000 s .3 goes
    assert eng.window_keys() == {"bf": 1}
    assert metrics.value("siem_window_keys_expired_total") - before == 2
    assert [a.group for a in alerts] == [(("source.ip", "10.0.0.2"),)]
    assert [a.id for a in alerts] == [a.id for a in run(BF, stream)]


def test_a_key_backfilled_late_keeps_its_window_across_sweeps() -> None:
    """Another source moved the watermark far ahead; a source whose old log arrives late, a batch at a
    time, still has its events windowed together (found by the property test of backfilled sources)."""
    late = fails("10.0.0.2", [0, 0, 0])
    stream = fails("10.0.0.1", [0, 0, 0, 0, 30]) + late
    for batch in (1, 2, 7):
        groups = sorted(a.group[0][1] for a in run(BF.replace("5m", "30s"), stream, batch=batch))
        assert groups == ["10.0.0.1", "10.0.0.2"], batch


def test_idle_sequence_keys_leave_window_state() -> None:
    """A sequence key with no step inside the window any more is dropped; a later success does not chain."""
    from tests.engine_support import engine

    eng = engine(SEQ)
    for e in fails("1.1.1.1", [0, 10, 20]) + fails("9.9.9.9", [11 * 60, 12 * 60]):
        eng.process([e])
    assert eng.window_keys() == {"after_bf": 2}  # 1.1.1.1 is marked by the sweep at 11 min, not yet dropped
    eng.process(fails("9.9.9.9", [17 * 60])[0:1])  # the next sweep (half a window later) drops it
    assert eng.window_keys() == {"after_bf": 1}
    assert eng.process(ok("1.1.1.1", 17 * 60 + 5)) == []


# --- rules sharing window state (windows.py, "Shared state") -----------------------------------------

TUNED = BF + """
rule bf_strict { severity high
  when event.dataset == "sshd" and event.outcome == "failure" and not host.name == "bastion"
  count >= 4 within 10m by source.ip }
"""


def test_variants_share_one_correlator_until_their_rows_differ() -> None:
    """Two rules whose filters select the same rows keep one window state; the first batch where they do
    not (an event from the excluded host) gives each its own copy, and both go on from it."""
    from tests.engine_support import engine

    eng = engine(TUNED)
    assert len(eng.correlators()) == 1
    assert eng.process(fails("1.1.1.1", [0, 1])) == []
    assert len(eng.correlators()) == 1
    bastion = [{**e, "host.name": "bastion"} for e in fails("1.1.1.1", [2])]
    assert [(a.rule_id, a.count) for a in eng.process(bastion)] == [("bf", 3)]
    assert len(eng.correlators()) == 2
    assert [(a.rule_id, a.count) for a in eng.process(fails("1.1.1.1", [3, 4]))] == [("bf_strict", 4)]


def test_each_variant_restarts_its_own_window_after_it_fires() -> None:
    """Sharing the events of a key, each rule still needs a fresh threshold after its own alert."""
    from tests.engine_support import engine

    eng = engine(TUNED)
    got = [(a.rule_id, a.count, (a.last_ms - T0) // S) for t in range(8) for a in eng.process(fails("1.1.1.1", [t]))]
    assert got == [("bf", 3, 2), ("bf_strict", 4, 3), ("bf", 3, 5), ("bf_strict", 4, 7)]


def test_shared_state_survives_snapshot_and_reload_per_rule() -> None:
    """A snapshot keeps correlators shared; a reload that changes one rule starts that rule afresh while
    the unchanged one keeps its window."""
    from siem.dsl.loader import load_texts
    from tests.engine_support import engine

    first = engine(TUNED)
    first.process(fails("1.1.1.1", [0, 1]))
    second = engine(TUNED)
    second.restore(first.snapshot())
    assert len(second.correlators()) == 1
    second.replace_rules(load_texts({"t.rules": TUNED.replace(">= 4", ">= 2")}))
    assert len(second.correlators()) == 2
    # bf has 2 events and fires with the third; bf_strict (now >= 2) starts empty: 1 event
    assert [(a.rule_id, a.count) for a in second.process(fails("1.1.1.1", [2]))] == [("bf", 3)]
    assert [(a.rule_id, a.count) for a in second.process(fails("1.1.1.1", [3]))] == [("bf_strict", 2)]


def test_a_reload_that_parts_rules_sharing_state_gives_each_its_own_copy() -> None:
    """Two identical `absent` rules share one state; a reload that changes one's message (not its logic,
    so its state is kept) puts them in different correlators, which must not share the saved state."""
    from siem.dsl.loader import load_texts
    from tests.engine_support import engine

    quiet = """
rule quiet_a { absent event.dataset == "sshd" for 1m by host.name }
rule quiet_b { absent event.dataset == "sshd" for 1m by host.name message "{host.name} silent" }
"""
    eng = engine(quiet)
    assert len(eng.correlators()) == 1
    eng.process([ev(0, event__dataset="sshd", host__name="h1")])
    eng.replace_rules(load_texts({"t.rules": quiet.replace('"{host.name} silent"', '"{distinct(user.name)}"')}))
    (a, _), (b, _) = eng.correlators().values()
    assert a.state == b.state and a.state is not b.state
    # h1 goes silent: both rules fire once, from their own (copied) state
    assert sorted(x.rule_id for x in eng.advance(T0 + 2 * M)) == ["quiet_a", "quiet_b"]
