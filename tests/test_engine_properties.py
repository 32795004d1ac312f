"""Properties of the engine that must hold for any input: batch-size independence and agreement of the
vectorised count window with a plain reference implementation."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine_support import S, T0, ev, run

PACK = """
macro fail = event.dataset == "sshd" and event.outcome == "failure"
rule bf { when fail count >= 3 within 30s by source.ip suppress 20s message "{count} {distinct(user.name)}" }
rule spray { when fail distinct(user.name) >= 3 within 1m by source.ip }
rule bytes { when event.dataset == "sshd" sum(source.port) > 100 within 20s by user.name }
rule seq { sequence within 1m by source.ip { fail count >= 2, event.dataset == "sshd" and event.outcome == "success" } }
rule quiet { absent event.dataset == "sshd" for 40s by user.name }
rule newip { when event.outcome == "success" first_seen source.ip by user.name learn 10s }
rule burst { when event.dataset == "sshd" spike 3x baseline 40s within 10s by user.name min 3 }
rule root { when user.name == "root" and event.outcome == "success" suppress 15s by source.ip }
"""

event_st = st.builds(
    lambda t, ip, user, outcome, port: ev(
        t * 250, event__dataset="sshd", event__outcome=outcome, source__ip=ip, user__name=user, source__port=port
    ),
    st.integers(0, 1200),
    st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    st.sampled_from(["root", "a", "b", "c"]),
    st.sampled_from(["failure", "failure", "success"]),
    st.integers(1, 60),
)


def arrival_order(events: list, delays: list[int], lateness: int) -> list:
    """Events in the order they arrive when each is delayed by less than `lateness` (ms)."""
    if not delays or lateness == 0:
        return sorted(events, key=lambda e: e["@timestamp"])
    keyed = [(e["@timestamp"] + delays[i % len(delays)] % lateness, i, e) for i, e in enumerate(events)]
    return [e for *_, e in sorted(keyed, key=lambda x: (x[0], x[1]))]


def signature(alerts: list) -> list:
    return sorted((a.id, a.rule_id, a.count, a.first_ms, a.last_ms, a.message, a.group) for a in alerts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_st, min_size=1, max_size=120), st.lists(st.integers(0, 60_000), max_size=10),
       st.sampled_from([0, 2_000, 30_000]))
def test_batch_size_does_not_change_alerts(events: list, delays: list[int], lateness: int) -> None:
    """Batch sizes 1, 7 and 1000 give identical alerts for any arrival disorder within the lateness."""
    stream = arrival_order(events, delays, lateness)
    one = signature(run(PACK, stream, lateness_ms=lateness, batch=1))
    assert one == signature(run(PACK, stream, lateness_ms=lateness, batch=7))
    assert one == signature(run(PACK, stream, lateness_ms=lateness, batch=1000))


CORRELATIONS = "\n".join(line for line in PACK.splitlines() if "absent" not in line)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_st, min_size=1, max_size=120), st.sampled_from([1, 7, 1000]))
def test_backfilled_sources_keep_their_own_time(events: list, batch: int) -> None:
    """One source's log read after another's (all of it late) gives the alerts of the time-merged stream.

    Windows are per key: a late event keeps its own time, so a host backfilled after another host does
    not look like a burst. (`absent` is left out: a source backfilled late really was silent meanwhile.)"""
    by_ip: dict[str, list] = {}
    for e in sorted(events, key=lambda e: e["@timestamp"]):
        by_ip.setdefault(e["source.ip"], []).append(e)
    per_source = [e for ip in sorted(by_ip) for e in by_ip[ip]]
    merged = sorted(events, key=lambda e: e["@timestamp"])
    pack = CORRELATIONS.replace("by user.name", "by source.ip")
    assert signature(run(pack, per_source, batch=batch)) == signature(run(pack, merged))


def reference_count(times_ms: list[int], need: int, window_ms: int) -> list[tuple[int, int, int]]:
    """The count window spelt out one event at a time: (first, last, count) of each fire."""
    fires = []
    window: list[int] = []
    for t in times_ms:
        window = [x for x in window if x > t - window_ms] + [t]
        if len(window) >= need:
            fires.append((window[0], t, len(window)))
            window = []
    return fires


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 600), min_size=1, max_size=200), st.integers(1, 6), st.integers(1, 120),
       st.integers(1, 300))
def test_vectorised_count_matches_reference(offsets_s: list[int], need: int, window_s: int, batch: int) -> None:
    """The numpy count window finds exactly the fires of the one-event-at-a-time definition."""
    times = sorted(T0 + o * S for o in offsets_s)
    src = f'rule r {{ when event.outcome == "failure" count >= {need} within {window_s}s by source.ip }}'
    events = [ev(t - T0, event__outcome="failure", source__ip="1.1.1.1") for t in times]
    got = sorted((a.first_ms, a.last_ms, a.count) for a in run(src, events, batch=batch))
    assert got == sorted(reference_count(times, need, window_s * S))


def variants(pack: str, n: int) -> list[str]:
    """`n` tuned copies of each rule of `pack`: other thresholds, windows and factors, and an exclusion
    of one host each (hosts h0-h2 occur in the events, so some variants' rows part mid-stream)."""
    out = []
    for line in pack.splitlines():
        if not line.startswith("rule "):
            continue
        for i in range(n):
            v = line.replace("rule ", "rule ", 1).split(" {", 1)
            body = v[1]
            for a, b in ((">= 3", f">= {3 + i % 3}"), ("> 100", f"> {100 + 40 * i}"), ("30s", f"{30 + 15 * i}s"),
                         ("1m", f"{1 + i % 2}m"), ("3x", f"{3 + i}x"), ("40s", f"{40 + 20 * (i % 2)}s")):
                body = body.replace(a, b, 1)
            body = body.replace(" suppress 20s", "")  # suppression would hide a window that fires twice
            body = body.replace(" when ", f' when not host.name == "h{i}" and ', 1)
            body = body.replace(" sequence ", f' when not host.name == "h{i}" sequence ', 1)
            out.append(f"{v[0]}_v{i} {{{body}")
    return out


def full_signature(alerts: list) -> list:
    return sorted((a.id, a.rule_id, a.count, a.first_ms, a.last_ms, a.message, a.group, repr(a.aggregates),
                   repr(a.events)) for a in alerts)


shared_event_st = st.builds(
    lambda e, host: {**e, "host.name": host}, event_st, st.sampled_from(["h0", "h1", "h2", "web", "web", "web"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(shared_event_st, min_size=1, max_size=150), st.lists(st.integers(0, 90_000), max_size=10),
       st.sampled_from([1, 7, 1000]))
def test_rules_sharing_state_fire_as_they_would_alone(events: list, delays: list[int], batch: int) -> None:
    """Rules whose filters select the same rows share one correlator (windows.py, "Shared state"); a
    pack of tuned variants gives exactly the alerts, counts, aggregates and samples that each rule gives
    in an engine of its own, also when variants part mid-stream and when a key's events arrive out of
    order beyond the allowed lateness (its timeline is re-sorted)."""
    macro = next(line for line in PACK.splitlines() if line.startswith("macro "))
    rules = variants(PACK, 4)
    stream = arrival_order(events, delays, 1)  # disorder up to 90 s, lateness 0: late events re-sort windows
    together = full_signature(run("\n".join([macro, *rules]), stream, batch=batch))
    alone = full_signature([a for r in rules for a in run(f"{macro}\n{r}", stream, batch=batch)])
    assert together == alone
