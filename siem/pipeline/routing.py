"""The pure cores of the scale-out stages: routing events to group-by families, and correlating them.

A rule's *family* is the set of fields its events must share to meet in one window: its correlation's
``by`` fields, or, for a single-event rule, its suppression's ``by`` (none: one family ""). The matcher
evaluates every filter at once over a batch (:class:`Routing`, masks and the dataset pre-filter shared)
and sends each matching event once per family, keyed by that family's values; the correlator keeps per
partition one Engine per family (:class:`Correlation`), so rules grouped by the same fields share masks
and window state as they do in embedded mode (window state is only ever shared between rules of the same
group-by fields).

A partition's state is data: a JSON header (the watermark merge, the families and the length of each
engine snapshot) followed by the engines' snapshots, behind a magic line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from siem.alert.record import Alert
from siem.dsl import ast
from siem.dsl.loader import RuleSet
from siem.engine.batch import Batch
from siem.engine.runtime import Engine, compile_rule, matching_rows
from siem.errors import StateError
from siem.pipeline.evaluator import UNBOUNDED_LATENESS_MS
from siem.pipeline.records import Match, Watermark, encode_record, split_header, with_header
from siem.pipeline.watermark import MIN_TS, MergedWatermark
from siem.schema import Event

log = logging.getLogger(__name__)

ORIGIN_TIMEOUT_MS = 300_000  # an origin silent this long (record time) no longer holds the watermark back
_STATE_MAGIC = b"SIEMPART1\n"


def family_of(spec: ast.RuleSpec) -> str:
    """The group-by fields that decide where a rule's events must meet: its correlation's `by`, or for a
    single-event rule its suppression's `by` (comma-joined; "" for none: one partition)."""
    corr = spec.correlation
    by: tuple[str, ...] = tuple(getattr(corr, "by", ()) or ()) if corr is not None else ()
    if corr is None and spec.suppress is not None and spec.suppress.by:
        by = tuple(spec.suppress.by)
    return ",".join(by)


def families(ruleset: RuleSet) -> dict[str, RuleSet]:
    out: dict[str, list[ast.RuleSpec]] = {}
    for spec in ruleset.rules:
        out.setdefault(family_of(spec), []).append(spec)
    return {f: RuleSet(tuple(specs)) for f, specs in out.items()}


def family_key(family: str, event: Event) -> bytes:
    fields = family.split(",") if family else []
    return "\x1f".join([family, *(str(event.get(f, "")) for f in fields)]).encode()


class Routing:
    """The matcher's pure core: every rule's filter over a batch at once, each event once per family."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.rules = [compile_rule(spec) for spec in ruleset.rules]
        self.family = [family_of(r.spec) for r in self.rules]

    def match(self, events: list[Event]) -> list[tuple[bytes, bytes]]:
        """(key, Match record) per event and family of the rules whose filter it passes, in event order."""
        if not events:
            return []
        ts = np.fromiter((e["@timestamp"] if type(e.get("@timestamp")) is int else MIN_TS for e in events),
                         dtype=np.int64, count=len(events))
        batch = Batch(events, ts)
        routed: dict[int, set[str]] = {}
        for k, rows in enumerate(matching_rows(self.rules, batch)):
            for r in rows.tolist():
                routed.setdefault(r, set()).add(self.family[k])
        out = []
        for r in sorted(routed):
            for fam in sorted(routed[r]):
                out.append((family_key(fam, events[r]), encode_record(Match(fam, events[r]))))
        return out


@dataclass(slots=True)
class _Partition:
    engines: dict[str, Engine]  # family -> engine of its rules
    merged: MergedWatermark  # over the matchers
    wm: int = MIN_TS


def encode_partition_state(part: _Partition) -> bytes:
    """A partition's state as data: a JSON header (watermark merge, family sizes) + engine snapshots."""
    blobs = {f: e.snapshot() for f, e in sorted(part.engines.items())}
    head = {"wm": part.wm, "latest": part.merged.latest, "seen": part.merged.seen_ts,
            "newest": part.merged.newest_ts, "families": [[f, len(b)] for f, b in blobs.items()]}
    return with_header(_STATE_MAGIC, head, b"".join(blobs.values()))


def decode_partition_state(raw: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(header, family -> engine snapshot); StateError for anything that is not such a state."""
    head, body = split_header(_STATE_MAGIC, raw, "partition state")
    if not isinstance(head, dict) or type(head.get("wm")) is not int or not isinstance(head.get("families"), list):
        raise StateError("partition state header has the wrong shape")
    pos, blobs = 0, {}
    for item in head["families"]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and type(item[1]) is int
                and 0 <= item[1] <= len(body) - pos):
            raise StateError("partition state lists a family it does not hold")
        blobs[item[0]] = body[pos: pos + item[1]]
        pos += item[1]
    if pos != len(body):
        raise StateError("partition state has trailing bytes")
    return head, blobs


class Correlation:
    """The correlator's pure core: per partition, one Engine per group-by family, moved by the merged
    watermark of the matchers. Records are (partition, record time, Match | Watermark) in partition order."""

    def __init__(self, ruleset: RuleSet, future_skew_ms: int | None, max_pending: int | None = None) -> None:
        self.families = families(ruleset)
        self.future_skew_ms = future_skew_ms
        self.max_pending = max_pending  # per engine
        self.parts: dict[Hashable, _Partition] = {}

    def open(self, partition: Hashable, state: bytes | None = None) -> None:
        """Own `partition`, from a saved state (StateError if it is not one: the partition stays empty)."""
        part = self.parts[partition] = _Partition({}, MergedWatermark(ORIGIN_TIMEOUT_MS))
        if state is not None:
            try:
                self._restore(part, state)
            except StateError:
                self.parts[partition] = _Partition({}, MergedWatermark(ORIGIN_TIMEOUT_MS))
                raise

    def close(self, partition: Hashable) -> None:
        self.parts.pop(partition, None)

    def state(self, partition: Hashable) -> bytes:
        return encode_partition_state(self.parts[partition])

    def _engine(self, part: _Partition, family: str) -> Engine | None:
        eng = part.engines.get(family)
        if eng is None:
            rules = self.families.get(family)
            if rules is None:
                return None
            eng = part.engines[family] = Engine(rules, lateness_ms=UNBOUNDED_LATENESS_MS,
                                                future_skew_ms=self.future_skew_ms, max_pending=self.max_pending)
            if part.wm > MIN_TS:
                eng.advance(part.wm)
        return eng

    def set_rules(self, ruleset: RuleSet) -> None:
        """New rules: each family's engine keeps the state of its unchanged rules (Engine.replace_rules)."""
        self.families = families(ruleset)
        for part in self.parts.values():
            for fam, eng in list(part.engines.items()):
                if fam in self.families:
                    eng.replace_rules(self.families[fam])
                else:
                    del part.engines[fam]

    def process(self, records: list[tuple[Hashable, int, object]]) -> list[Alert]:
        """Evaluate records in partition order: matches batch up per family; a watermark evaluates what
        came before it, then advances every engine of the partition."""
        alerts: list[Alert] = []
        pending: dict[Hashable, dict[str, list[Event]]] = {}

        def flush(tp: Hashable) -> None:
            part = self.parts[tp]
            for fam, events in pending.pop(tp, {}).items():
                eng = self._engine(part, fam)
                if eng is not None:
                    alerts.extend(eng.process(events))

        for tp, record_ts, rec in records:
            part = self.parts.get(tp)
            if part is None:  # revoked after the poll: its new owner reads it from the snapshot
                continue
            if isinstance(rec, Watermark):
                part.merged.observe(rec.origin, None, rec.ts_ms, record_ts)
                to = part.merged.value()
                if to is not None and to > part.wm:
                    flush(tp)
                    part.wm = to
                    for eng in part.engines.values():
                        alerts.extend(eng.advance(to))
            elif isinstance(rec, Match):
                if rec.family not in self.families:
                    log.warning("match for unknown group-by family %r skipped (matcher and correlator rules "
                                "differ?)", rec.family)
                    continue
                pending.setdefault(tp, {}).setdefault(rec.family, []).append(rec.event)
        for tp in list(pending):
            flush(tp)
        return alerts

    def _restore(self, part: _Partition, raw: bytes) -> None:
        head, blobs = decode_partition_state(raw)
        part.wm = head["wm"]
        m = part.merged
        for name, key in (("latest", "latest"), ("seen", "seen_ts")):
            got = head.get(name, {})
            if not isinstance(got, dict) or not all(isinstance(o, str) and type(t) is int for o, t in got.items()):
                raise StateError(f"partition state field {name!r} has the wrong shape")
            setattr(m, key, dict(got))
        m.lane = {o: None for o in m.latest}
        m.newest_ts = head["newest"] if type(head.get("newest")) is int else MIN_TS
        for fam, blob in blobs.items():
            eng = self._engine(part, fam)
            if eng is not None:
                eng.restore(blob)
