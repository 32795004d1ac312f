"""The alert record: what the engine emits and every later stage (log, dedup, routing, outbox) carries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson

from siem.timeutil import iso_ms

SEVERITIES = ("info", "low", "medium", "high", "critical")


def _json_fallback(obj: object) -> object:
    if isinstance(obj, (set, frozenset)):
        return sorted(str(x) for x in obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    return str(obj)


def _int(v: object) -> int:
    if isinstance(v, (int, float, str)):
        return int(v)
    raise ValueError(f"expected a number, got {type(v).__name__}")


def _seq(v: object) -> list[object] | tuple[object, ...]:
    return v if isinstance(v, (list, tuple)) else ()


def alert_id(rule_id: str, group: tuple[tuple[str, str], ...], window_start_ms: int) -> str:
    """Deterministic: the same rule, key and window always give the same id, so replays never notify twice."""
    text = "\x1f".join([rule_id, *(f"{k}={v}" for k, v in group), str(window_start_ms)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    rule_id: str
    title: str
    severity: str  # one of SEVERITIES
    tags: tuple[str, ...]
    group: tuple[tuple[str, str], ...]  # (field, value) pairs of the `by` keys, in rule order
    first_ms: int  # event time of the first contributing event
    last_ms: int  # event time of the last contributing event
    count: int  # contributing events
    message: str  # rendered message template (raw text: escape per channel when rendering)
    aggregates: dict[str, object] = field(default_factory=dict)  # e.g. {"distinct(user.name)": 7}
    events: tuple[dict[str, object], ...] = ()  # a sample (at most 10) of contributing events
    emitted_ms: int = 0  # wall clock when the engine emitted it (not part of identity)
    references: tuple[str, ...] = ()  # the rule's `references` (not part of identity)
    runbook: str = ""  # the rule's `runbook` URL

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "rule": self.rule_id,
            "title": self.title,
            "severity": self.severity,
            "tags": list(self.tags),
            "group": dict(self.group),
            "first": iso_ms(self.first_ms),
            "last": iso_ms(self.last_ms),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "count": self.count,
            "aggregates": self.aggregates,
            "message": self.message,
            "events": list(self.events),
            "emitted_ms": self.emitted_ms,
            **({"references": list(self.references)} if self.references else {}),
            **({"runbook": self.runbook} if self.runbook else {}),
        }

    def dumps(self) -> bytes:
        """One JSON object. numpy scalars/arrays in aggregates or sample events are serialised natively;
        anything else orjson cannot encode (sets, bytes, datetimes from odd sources) becomes its str()."""
        return orjson.dumps(self.to_json(), option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
                            default=_json_fallback)

    @classmethod
    def from_json(cls, d: dict[str, object]) -> "Alert":
        group = d["group"]
        if not isinstance(group, dict):
            raise ValueError("alert.group must be an object")
        return cls(
            id=str(d["id"]),
            rule_id=str(d["rule"]),
            title=str(d.get("title", "")),
            severity=str(d["severity"]),
            tags=tuple(str(t) for t in _seq(d.get("tags"))),
            group=tuple((str(k), str(v)) for k, v in group.items()),
            first_ms=_int(d["first_ms"]),
            last_ms=_int(d["last_ms"]),
            count=_int(d["count"]),
            message=str(d.get("message", "")),
            aggregates=dict(aggregates) if isinstance(aggregates := d.get("aggregates"), dict) else {},
            events=tuple(e for e in _seq(d.get("events")) if isinstance(e, dict)),
            emitted_ms=_int(d.get("emitted_ms", 0) or 0),
            references=tuple(str(r) for r in _seq(d.get("references"))),
            runbook=str(d.get("runbook", "") or ""),
        )
