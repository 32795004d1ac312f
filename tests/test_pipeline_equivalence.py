"""The scale-out stages' pure cores give embedded mode's alerts, on random streams.

Embedded: one Engine with every rule, moved by the watermark records of the log. Scale-out: Routing (the
matcher) sends each event once per group-by family to partition crc32(key) % N; Correlation (the
correlators) keeps one Engine per partition and family, moved by the watermarks broadcast after each
segment. Poll batches are cut at random places, and a partition's state is saved and restored mid-stream
(a correlator killed and its partition taken over). The alert ids must be identical.
"""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from siem.dsl.loader import load_texts
from siem.engine.runtime import Engine
from siem.pipeline.evaluator import UNBOUNDED_LATENESS_MS
from siem.pipeline.records import Watermark, decode_record
from siem.pipeline.routing import Correlation, Routing, families

RULES = """
macro fail = event.dataset == "sshd" and event.outcome == "failure"
rule brute   { severity high   when fail  count >= 3 within 1m by source.ip }
rule spray   { severity medium when fail  distinct(user.name) >= 2 within 2m by source.ip  suppress 5m by source.ip }
rule per_user { severity low   when fail  count >= 4 within 3m by user.name }
macro ok = event.dataset == "sshd" and event.outcome == "success"
rule success_after { severity critical
  sequence within 5m by source.ip {
    fail count >= 2
    ok
  }
}
rule silent  { severity medium absent event.dataset == "sshd" for 2m by host.name }
rule root_ok { severity high   when event.dataset == "sshd" and event.outcome == "success" and user.name == "root"
  suppress 10m by source.ip }
rule any_ok  { severity info   when event.dataset == "sshd" and event.outcome == "success" }
"""
RULESET = load_texts({"test.rules": RULES})
LATENESS = 10_000
T0 = 1_700_000_000_000

event_st = st.tuples(
    st.integers(0, 40_000),  # ms after the previous event
    st.integers(-LATENESS, 0),  # jitter within the lateness
    st.sampled_from(["198.51.100.1", "198.51.100.2", "203.0.113.9"]),
    st.sampled_from(["root", "admin", "git"]),
    st.sampled_from(["web1", "db1"]),
    st.sampled_from(["failure", "failure", "success"]),
)


def _stream(draws: list[tuple], wm_every: list[bool]) -> list[object]:
    """Events with a Watermark record (newest - lateness, when it moved) after some of them."""
    out: list[object] = []
    t, newest, sent = T0, -(2**62), -(2**62)
    for i, (dt, jitter, ip, user, host, outcome) in enumerate(draws):
        t += dt
        ts = t + jitter
        out.append({"@timestamp": ts, "event.dataset": "sshd", "event.outcome": outcome, "source.ip": ip,
                    "user.name": user, "host.name": host, "event.id": f"e{i}"})
        newest = max(newest, ts)
        if wm_every[i % len(wm_every)] and newest - LATENESS > sent:
            sent = newest - LATENESS
            out.append(Watermark("collector", sent))
    out.append(Watermark("collector", newest + 10 * 60_000))  # the end: every window closes
    return out


def _embedded(stream: list[object]) -> list[str]:
    engine = Engine(RULESET, lateness_ms=UNBOUNDED_LATENESS_MS, future_skew_ms=None)
    alerts, batch = [], []
    for rec in stream:
        if isinstance(rec, Watermark):
            alerts += engine.process(batch) + engine.advance(rec.ts_ms)
            batch = []
        else:
            batch.append(rec)
    return sorted(a.id for a in alerts + engine.process(batch))


def _scale_out(stream: list[object], partitions: int, cuts: list[int], restore_at: int) -> list[str]:
    routing = Routing(RULESET)
    corr = Correlation(RULESET, future_skew_ms=None)
    for p in range(partitions):
        corr.open(p)
    lanes: dict[int, list[tuple[int, int, object]]] = {p: [] for p in range(partitions)}
    segment: list[dict] = []
    for rec in stream:  # the matcher: a segment's matches, then the watermark on every partition
        if isinstance(rec, Watermark):
            for key, raw in routing.match(segment):
                lanes[zlib.crc32(key) % partitions].append((0, 0, decode_record(raw)))
            segment = []
            for p in lanes:
                lanes[p].append((0, 0, Watermark("matcher", rec.ts_ms)))
        else:
            segment.append(rec)
    alerts = []
    for p, records in lanes.items():  # each correlator partition, polled in random batch sizes
        i, k = 0, 0
        while i < len(records):
            n = cuts[k % len(cuts)]
            k += 1
            alerts += corr.process([(p, ts, r) for _, ts, r in records[i: i + n]])
            i += n
            if k == restore_at:  # the partition moves to another correlator: from its saved state
                saved = corr.state(p)
                corr.close(p)
                corr.open(p, saved)
    return sorted(a.id for a in alerts)


@settings(max_examples=60, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=120), st.lists(st.booleans(), min_size=1, max_size=7),
       st.integers(1, 5), st.lists(st.integers(1, 40), min_size=1, max_size=5), st.integers(0, 6))
def test_routing_and_correlation_give_the_embedded_alerts(draws, wm_every, partitions, cuts, restore_at) -> None:
    stream = _stream(draws, wm_every)
    assert _scale_out(stream, partitions, cuts, restore_at) == _embedded(stream)


def test_families_split_rules_by_group_fields() -> None:
    fams = families(RULESET)
    assert {f: [r.id for r in rs.rules] for f, rs in fams.items()} == {
        "source.ip": ["brute", "spray", "success_after", "root_ok"], "user.name": ["per_user"],
        "host.name": ["silent"], "": ["any_ok"]}


class _Exploit:
    def __reduce__(self):  # noqa: ANN204 - what a crafted pickle runs when it is loaded
        import os

        return (os.system, ("touch /tmp/siem-pwned-by-partition-state",))


def test_crafted_or_corrupt_partition_state_is_refused_and_runs_nothing(tmp_path) -> None:  # noqa: ANN001
    """A partition's state is data: a pickle (what siem.state held before) or a truncated, padded or
    mis-shaped state is refused with StateError and never executed; the partition starts empty."""
    import os
    import pickle

    import pytest

    from siem.errors import StateError

    marker = "/tmp/siem-pwned-by-partition-state"
    if os.path.exists(marker):
        os.unlink(marker)
    corr = Correlation(RULESET, future_skew_ms=None)
    corr.open("p")
    corr.process([("p", 0, decode_record(raw)) for _, raw in Routing(RULESET).match(
        [{"@timestamp": 1, "event.dataset": "sshd", "event.outcome": "failure", "source.ip": "198.51.100.1"}])])
    good = corr.state("p")
    for bad in (pickle.dumps({"wm": 0, "rules": _Exploit()}), good[:-3], good + b"x", good[:12] + b"\xff" * 8,
                good.replace(b'"wm":', b'"wx":', 1)):
        with pytest.raises(StateError):
            corr.open("q", bad)
        assert not corr.parts["q"].engines
    assert not os.path.exists(marker)
    corr.open("r", good)
    assert set(corr.parts["r"].engines) == set(corr.parts["p"].engines)
