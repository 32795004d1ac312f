"""Helpers for engine tests: load rules from text, build events on a timeline, run to completion."""

from __future__ import annotations

import functools

from siem.alert.record import Alert
from siem.dsl.loader import RuleSet, load_texts
from siem.engine.runtime import Engine
from siem.schema import Event

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
S = 1000
M = 60_000


@functools.lru_cache(maxsize=64)
def ruleset(src: str) -> RuleSet:
    return load_texts({"test.rules": src})


def engine(src: str, lateness_ms: int = 0) -> Engine:
    return Engine(ruleset(src), lateness_ms=lateness_ms, future_skew_ms=None)


def run(src: str, events: list[Event], lateness_ms: int = 0, batch: int = 10_000) -> list[Alert]:
    eng = engine(src, lateness_ms)
    out: list[Alert] = []
    for i in range(0, len(events), batch):
        out.extend(eng.process(events[i : i + batch]))
    out.extend(eng.flush())
    return out


def ev(t_ms: int, **fields: object) -> Event:
    e: Event = {"@timestamp": T0 + t_ms}
    e.update({k.replace("__", "."): v for k, v in fields.items()})
    e.setdefault("event.original", f"{t_ms} {sorted(fields.items())}")
    return e


def fails(ip: str, times_s: list[float], user: str = "root") -> list[Event]:
    return [ev(int(t * S), event__dataset="sshd", event__outcome="failure", source__ip=ip, user__name=user)
            for t in times_s]
