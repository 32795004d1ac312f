"""Run the fire / no-fire test cases that rules carry (`expect fire { ... }`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from siem.dsl import ast
from siem.dsl.loader import RuleSet
from siem.engine.runtime import Engine
from siem.errors import Location
from siem.schema import Event

TEST_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: where a test's clock starts


@dataclass(frozen=True, slots=True)
class CaseResult:
    rule_id: str
    expect_fire: bool
    fired: int
    location: Location | None
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and (self.fired > 0) == self.expect_fire


def case_events(case: ast.TestCase) -> tuple[list[Event], int]:
    """The events of a test case with their times filled in, and the clock at its end."""
    t = TEST_EPOCH_MS
    out: list[Event] = []
    for line in case.lines:
        if line.event_json is None:
            t += line.wait_ms
            continue
        template = orjson.loads(line.event_json)
        for _ in range(line.times):
            ev: Event = dict(template)
            stamp = ev.get("@timestamp")
            if isinstance(stamp, str):
                ev["@timestamp"] = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
                t = max(t, ev["@timestamp"])  # type: ignore[call-overload]
            elif not isinstance(stamp, int):
                ev["@timestamp"] = t
            ev.setdefault("event.original", orjson.dumps(template).decode())
            out.append(ev)
            t += line.every_ms
    return out, t


def run_rule_tests(ruleset: RuleSet) -> list[CaseResult]:
    results: list[CaseResult] = []
    for rule in ruleset.rules:
        for case in rule.tests:
            try:
                events, end_ms = case_events(case)
                engine = Engine(RuleSet((rule,)), lateness_ms=0, future_skew_ms=None)
                alerts = engine.process(events) + engine.flush() + engine.advance(end_ms)
                results.append(CaseResult(rule.id, case.expect_fire, len(alerts), case.loc))
            except Exception as exc:  # noqa: BLE001 - a broken test case is reported, not fatal
                results.append(CaseResult(rule.id, case.expect_fire, 0, case.loc, f"{type(exc).__name__}: {exc}"))
    return results
