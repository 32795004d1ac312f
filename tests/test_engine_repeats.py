"""rsyslog's `message repeated N times` lines stand for N events: the engine evaluates them N times."""

from __future__ import annotations

from engine_support import S, ev, run

from siem import metrics
from siem.engine.runtime import MAX_REPEAT, expand_repeats

RULE = """
rule bf {
  severity high
  when event.outcome == "failure"
  count >= 6 within 5m by source.ip
  message "{count} from {source.ip}"
}
"""


def test_a_repeated_line_counts_as_its_repetitions() -> None:
    events = [ev(0, event__outcome="failure", source__ip="192.0.2.1"),
              ev(10 * S, event__outcome="failure", source__ip="192.0.2.1", event__repeat_count=5)]
    alerts = run(RULE, events)
    assert [a.count for a in alerts] == [6]


def test_without_the_repeat_the_two_lines_do_not_fire() -> None:
    events = [ev(0, event__outcome="failure", source__ip="192.0.2.1"),
              ev(10 * S, event__outcome="failure", source__ip="192.0.2.1")]
    assert run(RULE, events) == []


def test_expansion_is_capped_and_counted() -> None:
    before = metrics.value("siem_events_repeated_total", outcome="capped")
    forged = ev(0, event__outcome="failure", source__ip="192.0.2.9", event__repeat_count=10**9)
    out = expand_repeats([forged])
    assert len(out) == MAX_REPEAT and out[0] is forged and all(e == forged and e is not forged for e in out[1:])
    assert metrics.value("siem_events_repeated_total", outcome="capped") == before + 10**9 - MAX_REPEAT


def test_batch_boundaries_do_not_change_the_result() -> None:
    events = [ev(i * S, event__outcome="failure", source__ip="192.0.2.1", event__repeat_count=2) for i in range(3)]
    assert [a.count for a in run(RULE, events, batch=1)] == [a.count for a in run(RULE, events)] == [6]
