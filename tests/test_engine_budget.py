"""Pending events are bounded: a source dating its events into the future cannot grow memory without end
or hold other sources' alerts back (siem.engine.runtime.Engine max_pending)."""

from __future__ import annotations

import engine_support
from engine_support import ev, ruleset

from siem import metrics
from siem.engine.runtime import Engine
from siem.pipeline.evaluator import UNBOUNDED_LATENESS_MS

RULES = """
rule brute { severity high when event.outcome == "failure" count >= 3 within 1m by source.ip }
"""
T0 = 0  # engine_support.ev adds its own epoch


def _early() -> float:
    return metrics.EVENTS_RELEASED_EARLY._value.get()


def test_events_dated_ahead_wait_within_the_budget_and_others_still_alert() -> None:
    """As in the daemon: the engine moves only with watermarks (here the honest source's time). A liar
    dates 50,000 events 50 minutes ahead; pending never exceeds the budget (the oldest of them go early,
    counted), and the honest source's brute force alerts at the watermark as without the liar."""
    engine = Engine(ruleset(RULES), lateness_ms=UNBOUNDED_LATENESS_MS, future_skew_ms=None, max_pending=1_000)
    before = _early()
    alerts = []
    for k in range(50):
        liar = [ev(T0 + 3_000_000 + k * 1000 + i, **{"source.ip": "192.0.2.66", "event.outcome": "success"})
                for i in range(1000)]
        honest = [ev(T0 + k * 1000 + i, **{"source.ip": "203.0.113.5", "event.outcome": "failure"}) for i in (0, 1, 2)]
        alerts += engine.process(liar + honest)
        alerts += engine.advance(engine_support.T0 + T0 + k * 1000 + 500)
        assert len(engine.pending_events) <= 1_000
    assert [a.rule_id for a in alerts][:1] == ["brute"] and alerts[0].group == (("source.ip", "203.0.113.5"),)
    assert _early() - before >= 50 * 1000 - 1_000  # the liar's oldest (and honest ones held with them)


def test_no_budget_means_no_early_release() -> None:
    engine = Engine(ruleset(RULES), lateness_ms=UNBOUNDED_LATENESS_MS, future_skew_ms=None)
    engine.process([ev(T0 + i, **{"source.ip": "192.0.2.1", "event.outcome": "failure"}) for i in range(5000)])
    assert len(engine.pending_events) == 5000
