"""The engine: event-time ordering, rule evaluation on micro-batches, suppression, alerts, checkpoints.

Ordering. Events arrive roughly in time order. The engine keeps a watermark ``wm = max event time
seen - allowed lateness`` and releases an event for evaluation once ``wm >= its time``, in (time,
arrival) order. An event older than the watermark when it arrives is *late*: it is counted and
evaluated at once with its own time (never dropped, never moved): window state is kept per key, and
per key such events are usually still in order (a second host's log backfilled after the first one's).
Where a key's own events arrive out of order beyond the lateness, its window is re-sorted by time.
Watermarks are computed per event (a running maximum), so where a batch boundary falls changes nothing
for events within the allowed lateness: batch sizes 1, 7 and 1000 give identical alerts.

Repeats. An event with ``event.repeat_count`` N > 1 (rsyslog's ``message repeated N times: [...]``) stands
for N occurrences: the engine evaluates it N times (at most MAX_REPEAT; the rest are counted in
``siem_events_repeated_total{outcome="capped"}``), so a threshold counts the attempts, not the lines.

Time-driven rules (`absent`) advance with the watermark; the daemon also calls ``advance(now - lateness)``
when the input is idle and caught up, so silence is noticed even when nothing arrives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Callable

import numpy as np

from siem import metrics
from siem.alert.record import Alert, alert_id
from siem.dsl import ast
from siem.engine.compiler import MaskFn, compile_expr
from siem.dsl.loader import RuleSet, render_template, template_fields
from siem.engine import snapshot
from siem.engine.batch import SAMPLE_FIELDS, Batch
from siem.engine.snapshot import Malformed, SampleTable, StateData, array_data, fields, int_, list_, map_, str_
from siem.engine.windows import Correlator, Fire, Member, make_correlator, member, share_key
from siem.parse.block import EventBlock, Projection
from siem.schema import ALERT_DATASET, Event
from siem.timeutil import iso_ms, wall_ms

log = logging.getLogger(__name__)
EXPIRE_EVERY_MS = 60_000  # event time between sweeps of idle window keys
_MIN_TS = -(2**62)
MAX_REPEAT = 100  # copies one repeated line may become (a forged "repeated 10^9 times" must not cost memory)
_AGG_RE = re.compile(r"(distinct|sum|min|max)\((.+)\)")


@dataclass(slots=True)
class CompiledRule:
    """A rule as it runs: closures and state, built once from its RuleSpec."""

    spec: ast.RuleSpec
    filter: MaskFn
    member: Member | None  # the rule as a correlator sees it (None: a single-event rule)
    correlator: Correlator | None  # set by the Engine, maybe shared with other rules (windows.py, "Shared state")
    fingerprint: str
    suppress: dict[Any, int]  # suppression key -> muted until (event time, ms)
    evaluations: Any
    matches: Any
    fired: Any  # the rule's children of siem_alerts_fired_total / _suppressed_total, bound once
    suppressed: Any
    datasets: frozenset[str] | None  # the rule can only match these event.dataset values (None: any)

    @property
    def id(self) -> str:
        return self.spec.id


def fingerprint(spec: ast.RuleSpec) -> str:
    """Identity of what a rule computes: unchanged rules keep their window state across reloads."""
    text = repr((spec.when, spec.correlation, spec.suppress)) + ast.v2_repr(spec.correlation)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compile_rule(spec: ast.RuleSpec) -> CompiledRule:
    corr = spec.correlation
    expr = filter_expr(spec)
    agg_fields = tuple(
        dict.fromkeys(m.group(2) for n in template_fields(spec.message) if (m := _AGG_RE.fullmatch(n)))
    )
    flat = _flatten(expr)
    m = member(spec.id, corr, agg_fields) if corr is not None else None
    return CompiledRule(
        spec=spec,
        filter=compile_expr(flat),
        member=m,
        correlator=None,  # given by the Engine, which lets rules share one (_attach)
        fingerprint=fingerprint(spec),
        suppress={},
        evaluations=metrics.RULE_EVALUATIONS.labels(rule=spec.id),
        matches=metrics.RULE_MATCHES.labels(rule=spec.id),
        fired=metrics.ALERTS_FIRED.labels(rule=spec.id, severity=spec.severity),
        suppressed=metrics.ALERTS_SUPPRESSED.labels(rule=spec.id),
        datasets=required_values(flat, "event.dataset"),
    )


def required_values(node: ast.Expr, field: str) -> frozenset[str] | None:
    """Values `field` must take for `node` to match, when the expression pins it down (else None).

    Lets the engine skip a rule without evaluating it when none of a batch's events can match: with a
    large pack, most rules concern datasets a given batch does not contain."""
    match node:
        case ast.Compare(f, "==", value, False) if f == field:
            return frozenset((str(value),))
        case ast.InSet(f, values, False) if f == field:
            return frozenset(map(str, values))
        case ast.And(args):
            known = [v for v in (required_values(a, field) for a in args) if v is not None]
            return frozenset.intersection(*known) if known else None
        case ast.Or(args):
            parts = [required_values(a, field) for a in args]
            return None if any(p is None for p in parts) else frozenset().union(*parts)  # type: ignore[arg-type]
    return None


def _flatten(node: ast.Expr) -> ast.Expr:
    """Drop TrueExpr from conjunctions so `when`-less rules share sub-expressions with others."""
    if isinstance(node, ast.And):
        args = tuple(a for a in (_flatten(x) for x in node.args) if not isinstance(a, ast.TrueExpr))
        return ast.TrueExpr() if not args else args[0] if len(args) == 1 else ast.And(args)
    return node


MAX_ALERT_CHAIN = 4  # rules over alerts over alerts ...: deeper chains are not evaluated


def alert_event(a: Alert) -> Event:
    """An alert as an event for rules over alerts: ``event.dataset`` "siem.alert", ``rule.id`` /
    ``rule.name`` / ``siem.alert.*`` (id, severity, count, first_ms), ``message``, and the alert's group
    fields (e.g. ``source.ip``) under their own names, so a rule can count alerts by them."""
    ev: Event = {f: v for f, v in a.group}
    ev.update({
        "@timestamp": a.last_ms, "event.dataset": ALERT_DATASET, "event.kind": "alert",
        "rule.id": a.rule_id, "rule.name": a.title, "message": a.message,
        "siem.alert.id": a.id, "siem.alert.severity": a.severity, "siem.alert.count": str(a.count),
        "siem.alert.first_ms": str(a.first_ms), "event.original": f"{a.rule_id} {a.id} {a.message}",
    })
    return ev
def _repeated(e: Event) -> bool:
    n = e.get("event.repeat_count")
    return type(n) is int and n > 1


def expand_repeats(events: list[Event]) -> list[Event]:
    """Each event with event.repeat_count N > 1 followed by N - 1 copies of itself (MAX_REPEAT in all)."""
    out: list[Event] = []
    made = capped = 0
    for e in events:
        out.append(e)
        n = e.get("event.repeat_count")
        if type(n) is int and n > 1:
            k = min(n, MAX_REPEAT)
            out.extend(dict(e) for _ in range(k - 1))
            made += k - 1
            capped += n - k
    metrics.EVENTS_REPEATED.labels(outcome="expanded").inc(made)
    if capped:
        metrics.EVENTS_REPEATED.labels(outcome="capped").inc(capped)
    return out


def _event_ts(e: Event) -> int:
    t = e.get("@timestamp")
    if type(t) is int:
        return t
    try:
        return int(t)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _MIN_TS  # no usable time: treated as late, evaluated at the watermark


class Engine:
    def __init__(
        self,
        ruleset: RuleSet,
        lateness_ms: int = 10_000,
        future_skew_ms: int | None = 3_600_000,
        clock: Callable[[], int] = wall_ms,
        sample_size: int = 3,
        max_pending: int | None = None,
    ) -> None:
        self.lateness_ms = lateness_ms
        self.future_skew_ms = future_skew_ms
        self.clock = clock
        self.sample_size = sample_size
        self.max_pending = max_pending  # events held for the watermark at most; the oldest beyond go early
        self.rules = [compile_rule(r) for r in ruleset.rules]
        self._attach([])
        self.max_ts = _MIN_TS
        self.wm = _MIN_TS
        self.seq = 0
        self.pending_events: list[Event] | EventBlock = []
        self._projection: Projection | None = None
        self.pending_ts = np.empty(0, np.int64)
        self.pending_seq = np.empty(0, np.int64)
        self._expired_ms = _MIN_TS  # event time of the last sweep of idle window keys

    # --- public API -------------------------------------------------------------------------------

    def process(self, events: list[Event]) -> list[Alert]:
        """Accept events in arrival order; return the alerts they complete."""
        n = len(events)
        if n == 0:
            return []
        if any(map(dict.get, events, repeat("event.repeat_count", n))) and any(map(_repeated, events)):  # one C loop
            events = expand_repeats(events)
            n = len(events)
        try:  # the usual case, every @timestamp an int: one C loop
            ts = np.fromiter(map(dict.get, events, repeat("@timestamp", n)), dtype=np.int64, count=n)
        except (TypeError, ValueError, OverflowError):
            ts = np.fromiter((_event_ts(e) for e in events), dtype=np.int64, count=n)
        return self._accept(events, ts)

    def process_block(self, block: EventBlock) -> list[Alert]:
        """``process`` for a columnar block (siem.parse.block), parsed for ``self.projection`` or a
        wider one; the same alerts as ``process(block.events())``. Raises ValueError for a block that
        lacks fields the rules read (parse it again with this engine's projection)."""
        if not block.n:
            return []
        if not block.projection.covers(self.projection):
            missing = self.projection.fields - block.projection.fields
            raise ValueError(f"event block lacks what the rules read: {', '.join(sorted(missing)) or 'prefiltered rows'}")
        return self._accept(block, block.ts.copy(), block.inert)

    @property
    def projection(self) -> Projection:
        """What the block parser must extract for these rules (siem.parse.block.Projection)."""
        if self._projection is None:
            self._projection = projection_of([r.spec for r in self.rules])
        return self._projection

    def _accept(self, events: list[Event] | EventBlock, ts: np.ndarray, inert: np.ndarray | None = None) -> list[Alert]:
        """Order and evaluate events. `inert` marks rows no rule can match (prefiltered by the block
        parser): their times move the watermark like any other's, then they are dropped (evaluating
        them would change nothing)."""
        n = len(ts)
        if self.future_skew_ms is not None:
            limit = self.clock() + self.future_skew_ms
            future = ts > limit
            if future.any():  # a forged future time must not drag the watermark forward
                ts[future] = limit
        maxes = np.maximum.accumulate(np.concatenate([[self.max_ts], ts]))
        wms = np.maximum(maxes - self.lateness_ms, self.wm)
        wm_before, wm_after = wms[:-1], wms[1:]
        late = ts < wm_before  # a late event keeps its own time: windows are per key, and per key it is usually in order
        seq = np.arange(self.seq, self.seq + n, dtype=np.int64)
        idx = np.arange(n, dtype=np.int64)
        step = np.where(late, idx, np.maximum(idx, np.searchsorted(wm_after, ts, "left")))
        phase = np.where(late, 0, 1)
        n_late = int(late.sum())
        if n_late:
            metrics.EVENTS_LATE.inc(n_late)
        if inert is not None and isinstance(events, EventBlock):
            live = np.flatnonzero(~inert)
            events, ts, seq, step, phase = events.take(live), ts[live], seq[live], step[live], phase[live]
        # events carried from earlier batches, released at the first step whose watermark covers them
        p_step = np.searchsorted(wm_after, self.pending_ts, "left")
        all_events = _concat(self.pending_events, events)
        all_ts = np.concatenate([self.pending_ts, ts])
        all_seq = np.concatenate([self.pending_seq, seq])
        all_step = np.concatenate([p_step, step])
        all_phase = np.concatenate([np.ones(len(self.pending_ts), np.int64), phase])
        released = all_step < n
        order = np.lexsort((all_seq, all_ts, all_phase, all_step))
        order = order[released[order]]
        keep = np.flatnonzero(~released)
        if self.max_pending is not None and len(keep) > self.max_pending:  # memory budget: the oldest go now
            by_time = keep[np.lexsort((all_seq[keep], all_ts[keep]))]
            excess = len(keep) - self.max_pending
            order = np.concatenate([order, by_time[:excess]])
            keep = np.sort(by_time[excess:])
            metrics.EVENTS_RELEASED_EARLY.inc(excess)
        self.pending_events = _take(all_events, keep)
        self.pending_ts, self.pending_seq = all_ts[keep], all_seq[keep]
        self.seq += n
        self.max_ts = int(maxes[-1])
        self.wm = int(wms[-1])
        metrics.WATERMARK.set(max(self.wm, 0) / 1000)
        alerts = self._evaluate(_take(all_events, order), all_ts[order])
        alerts.extend(self._advance_time(self.wm))
        return alerts

    def advance(self, to_ms: int) -> list[Alert]:
        """Move the watermark to `to_ms` (idle daemon, end of a test): release and expire what it covers."""
        if to_ms <= self.wm:
            return []
        self.wm = to_ms
        alerts = self._release_until(to_ms)
        alerts.extend(self._advance_time(to_ms))
        return alerts

    def flush(self) -> list[Alert]:
        """End of input: evaluate everything still waiting for the watermark."""
        return self.advance(self.max_ts) if self.max_ts > self.wm else self._release_until(self.wm)

    def window_keys(self) -> dict[str, int]:
        """Live window keys per rule (rules sharing a correlator each report its keys)."""
        return {r.id: r.correlator.key_count() for r in self.rules if r.correlator is not None}

    def correlators(self) -> dict[int, tuple[Correlator, list[CompiledRule]]]:
        """Each correlator once, with its member rules."""
        out: dict[int, tuple[Correlator, list[CompiledRule]]] = {}
        for r in self.rules:
            if r.correlator is not None:
                out.setdefault(id(r.correlator), (r.correlator, []))[1].append(r)
        return out

    # --- evaluation -------------------------------------------------------------------------------

    def _release_until(self, wm: int) -> list[Alert]:
        if not len(self.pending_ts):
            return []
        ready = self.pending_ts <= wm
        if not ready.any():
            return []
        idx = np.flatnonzero(ready)
        order = idx[np.lexsort((self.pending_seq[idx], self.pending_ts[idx]))]
        events = _take(self.pending_events, order)
        ts = self.pending_ts[order]
        keep = np.flatnonzero(~ready)
        self.pending_events = _take(self.pending_events, keep)
        self.pending_ts, self.pending_seq = self.pending_ts[keep], self.pending_seq[keep]
        return self._evaluate(events, ts)

    def _evaluate(self, rows: list[Event] | EventBlock, ts: np.ndarray, depth: int = 0) -> list[Alert]:
        alerts = self._evaluate_batch(rows, ts)
        if alerts and depth < MAX_ALERT_CHAIN and any(r.datasets and ALERT_DATASET in r.datasets for r in self.rules):
            # rules over rules' alerts: each alert is an event of dataset siem.alert, evaluated right after
            # the batch that raised it, at that batch's latest time (windows need non-decreasing times)
            derived = [alert_event(a) for a in alerts]
            at = int(ts.max()) if len(ts) else 0
            dts = np.array([max(a.last_ms, at) for a in alerts], dtype=np.int64)
            alerts = alerts + self._evaluate(derived, dts, depth + 1)
        return alerts

    def _evaluate_batch(self, rows: list[Event] | EventBlock, ts: np.ndarray) -> list[Alert]:
        if not len(rows):
            return []
        metrics.BATCHES.inc()
        batch = Batch(rows, ts)
        events = batch.events
        alerts: list[Alert] = []
        n = batch.n
        correlated: dict[int, list[tuple[CompiledRule, np.ndarray]]] = {}  # correlator -> its rules' rows
        for rule, rows in zip(self.rules, matching_rows(self.rules, batch)):
            if rule.correlator is not None:
                correlated.setdefault(id(rule.correlator), []).append((rule, rows))
            elif len(rows):
                try:
                    fires = [Fire((), int(ts[r]), int(ts[r]), 1, events[r], [events[r]]) for r in rows.tolist()]
                    alerts.extend(a for f in fires if (a := self._alert(rule, f)) is not None)
                except Exception:  # noqa: BLE001 - one rule's failure must not stop the others or the daemon
                    _failed([rule], n)
        for members in correlated.values():
            for corr, rules, rows in _agreeing(members):
                if not len(rows):
                    continue
                try:
                    fires = corr.process(batch, rows)
                    by_id = {r.id: r for r in rules} if fires else {}
                    for f in fires:
                        for rule in (by_id[f.rule],) if f.rule is not None else rules:
                            if (a := self._alert(rule, f)) is not None:
                                alerts.append(a)
                except Exception:  # noqa: BLE001 - as above
                    _failed(rules, n)
        alerts.sort(key=lambda a: (a.last_ms, a.rule_id, a.id))
        return alerts

    def _advance_time(self, stream_ms: int) -> list[Alert]:
        alerts: list[Alert] = []
        groups = self.correlators().values()
        for corr, rules in groups:
            if isinstance(corr.spec, ast.Absent):
                alerts.extend(a for f in corr.advance(stream_ms) for r in rules if (a := self._alert(r, f)) is not None)
        if stream_ms - self._expired_ms >= EXPIRE_EVERY_MS:  # a sweep over all keys: not on every batch
            self._expired_ms = stream_ms
            for corr, _ in groups:
                metrics.WINDOW_KEYS_EXPIRED.inc(corr.expire(stream_ms))
        return alerts

    def _alert(self, rule: CompiledRule, fire: Fire) -> Alert | None:
        spec = rule.spec
        group = _group_of(spec, fire)
        if spec.suppress is not None:
            if spec.suppress.by is None:
                skey: Any = group
            else:
                skey = tuple(str(fire.trigger.get(f)) for f in spec.suppress.by)
            until = rule.suppress.get(skey)
            if until is not None and fire.last_ms < until:
                rule.suppressed.inc()
                return None
            rule.suppress[skey] = fire.last_ms + spec.suppress.window_ms
            if len(rule.suppress) > 100_000:  # prune expired entries
                rule.suppress = {k: v for k, v in rule.suppress.items() if v > fire.last_ms}
        identity = group
        if spec.correlation is None:
            ev = fire.trigger
            ident = ev.get("event.id") or hashlib.sha1(str(ev.get("event.original", ev)).encode()).hexdigest()[:16]
            identity = group + (("_event", str(ident)),)
        values: dict[str, object] = dict(group)  # the key's values, also where no event carries them (absent)
        values.update(fire.trigger)
        values.update(fire.aggregates)
        values.update(
            count=fire.count, rule=spec.id, title=spec.title, severity=spec.severity,
            first=iso_ms(fire.first_ms), last=iso_ms(fire.last_ms), key=", ".join(v for _, v in group) or "-",
        )
        aggregates = {"count": fire.count, **fire.aggregates}
        rule.fired.inc()
        return Alert(
            id=alert_id(spec.id, identity, fire.first_ms),
            rule_id=spec.id,
            title=spec.title,
            severity=spec.severity,
            tags=spec.tags,
            group=group,
            first_ms=fire.first_ms,
            last_ms=fire.last_ms,
            count=fire.count,
            message=render_template(spec.message, values),
            aggregates=aggregates,
            events=tuple(fire.samples),
            emitted_ms=self.clock(),
            references=spec.references,
            runbook=spec.runbook,
        )

    # --- state ------------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything needed to continue after a restart: pending events, watermark, window state and
        suppression, as data in the format of siem.engine.snapshot (kind ENGINE; its schema is there)."""
        samples = SampleTable()
        groups = [{"rules": {r.id: r.fingerprint for r in rules}, "kind": corr.KIND, "state": corr.to_data(samples)}
                  for corr, rules in self.correlators().values()]
        return snapshot.encode(snapshot.ENGINE, {
            "max_ts": self.max_ts,
            "wm": self.wm,
            "seq": self.seq,
            "pending": {"events": snapshot.events_data(_as_events(self.pending_events)), "ts": array_data(self.pending_ts),
                        "seq": array_data(self.pending_seq)},
            "samples": snapshot.events_data(samples.events),
            "groups": groups,
            "suppress": {r.id: {"fingerprint": r.fingerprint, "until": list(r.suppress.items())} for r in self.rules},
        })

    def restore(self, blob: bytes) -> None:
        """Continue from a snapshot() of an engine with these or other rules (rules whose fingerprint
        changed start empty). All or nothing: a blob that is not a valid snapshot (corrupt, crafted, a pickle
        of an earlier release) raises StateError saying why, counted in siem_state_refused_total, and
        leaves the engine as it was."""
        with snapshot.paused_gc():
            self._restore(blob)

    def _restore(self, blob: bytes) -> None:
        body = snapshot.decode(blob, snapshot.ENGINE, "engine snapshot")
        try:
            top = fields(body, "engine snapshot", ("max_ts", "wm", "seq", "pending", "samples", "groups", "suppress"))
            clock = [int_(top["max_ts"], "max_ts", _MIN_TS), int_(top["wm"], "wm", _MIN_TS), int_(top["seq"], "seq", 0)]
            pend = fields(top["pending"], "pending", ("events", "ts", "seq"))
            events = snapshot.events(pend["events"], "pending.events")
            pending = (events, snapshot.array(pend["ts"], "pending.ts", len(events)),
                       snapshot.array(pend["seq"], "pending.seq", len(events)))
            samples = snapshot.events(top["samples"], "samples")
            groups: list[tuple[dict[str, str], Any]] = []
            for i, g in enumerate(list_(top["groups"], "groups")):
                g = fields(g, f"groups[{i}]", ("rules", "kind", "state"))
                members = map_(g["rules"], f"groups[{i}].rules")
                for rid, fp in members.items():
                    str_(fp, f"groups[{i}].rules[{rid!r}]")
                where = f"groups[{i}] (rules {', '.join(members)})"
                groups.append((members, StateData(str_(g["kind"], f"{where}.kind"), map_(g["state"], f"{where}.state"),
                                                  samples, where)))
            suppress = {rid: _suppression(s, f"suppress[{rid!r}]")
                        for rid, s in map_(top["suppress"], "suppress").items()}
            before = self._rule_states()
            try:
                self._adopt({"groups": groups, "suppress": suppress})
            except Malformed:
                self._adopt(before)
                raise
        except Malformed as exc:
            raise snapshot.refuse("malformed", f"engine snapshot: {exc}") from None
        self.max_ts, self.wm, self.seq = clock
        self.pending_events, self.pending_ts, self.pending_seq = pending

    def replace_rules(self, ruleset: RuleSet) -> None:
        """Hot reload: new rules; window state kept for rules whose computation did not change."""
        old = self._rule_states()
        self.rules = [compile_rule(r) for r in ruleset.rules]
        self._projection = None
        self._adopt(old)

    def _rule_states(self) -> dict[str, Any]:
        """Each correlator's state with its members (rule id -> fingerprint); each rule's suppression."""
        return {
            "groups": [({r.id: r.fingerprint for r in rules}, corr.get_state())
                       for corr, rules in self.correlators().values()],
            "suppress": {r.id: (r.fingerprint, r.suppress) for r in self.rules},
        }

    def _adopt(self, saved: dict[str, Any]) -> None:
        for rule in self.rules:
            got = saved["suppress"].get(rule.id)
            if got is not None and got[0] == rule.fingerprint:
                rule.suppress = dict(got[1])
        self._attach(saved["groups"])

    def _attach(self, saved: list[tuple[dict[str, str], dict[str, Any]]]) -> None:
        """Give the correlation rules their correlators: rules whose state was one correlator's in `saved`
        (same id and fingerprint) get it back, together; the others start empty, one correlator per
        share key (they split at the first batch where their rows differ)."""
        owner = {(rid, fp): i for i, (members, _) in enumerate(saved) for rid, fp in members.items()}
        together: dict[tuple[object, ...], list[CompiledRule]] = {}
        for rule in self.rules:
            if rule.member is not None:
                together.setdefault((share_key(rule.member), owner.get((rule.id, rule.fingerprint))), []).append(rule)
        adopted: set[int] = set()
        for (_, i), rules in together.items():
            corr = make_correlator([r.member for r in rules if r.member is not None], self.sample_size)
            if i is not None:
                got = saved[i][1]
                if isinstance(got, StateData):  # from a snapshot: checked against the rules it goes to
                    if got.kind != corr.KIND:
                        raise Malformed(f"{got.where}: {got.kind!r} state for {corr.KIND} rules")
                    try:
                        corr.set_state(corr.from_data(got))
                    except Malformed as exc:
                        raise Malformed(f"{got.where}: {exc}") from None
                else:
                    # a saved state goes to one correlator; members that now differ (a `first_seen` rule whose
                    # message aggregates another field) take copies
                    corr.set_state(got if i not in adopted else corr.copy_of(got))
                adopted.add(i)
            for r in rules:
                r.correlator = corr


_NO_ROWS = np.empty(0, np.int64)


def _concat(a: list[Event] | EventBlock, b: list[Event] | EventBlock) -> list[Event] | EventBlock:
    """Rows of a then b, in b's form (the pending side is the one converted: it is the smaller)."""
    if isinstance(b, EventBlock):
        if isinstance(a, EventBlock):
            return a.concat(b)
        return b if not a else EventBlock.from_events(a, b.projection.fields).concat(b)
    if isinstance(a, EventBlock):
        return a.events() + b if len(a) else b
    return a + b


def _take(rows: list[Event] | EventBlock, idx: np.ndarray) -> list[Event] | EventBlock:
    if isinstance(rows, EventBlock):
        return rows.take(idx)
    return [rows[i] for i in idx.tolist()]


def _as_events(rows: list[Event] | EventBlock) -> list[Event]:
    return rows.events() if isinstance(rows, EventBlock) else rows


def projection_of(specs: list[ast.RuleSpec]) -> Projection:
    """The fields rules read (filters, keys, aggregated fields, message templates, suppression keys),
    the fields alert samples show, and the (dataset, action) pairs they can match (None: any event)."""
    fields: set[str] = {"@timestamp", "event.id", *SAMPLE_FIELDS}
    wanted: set[tuple[str, str | None]] | None = set()
    for spec in specs:
        fields.update(_fields_in(spec.when))
        fields.update(_fields_in(spec.correlation))
        fields.update(_fields_in(spec.suppress))
        for name in template_fields(spec.message):
            m = _AGG_RE.fullmatch(name)
            if m or name not in _TEMPLATE_BUILTINS:
                fields.add(m.group(2) if m else name)
        if wanted is None:
            continue
        flat = _flatten(filter_expr(spec))
        datasets = required_values(flat, "event.dataset")
        if datasets is None:
            wanted = None
            continue
        actions = required_values(flat, "event.action")
        wanted.update((d, a) for d in datasets for a in (actions if actions is not None else (None,)))
    return Projection(frozenset(fields), None if wanted is None else frozenset(wanted))


def filter_expr(spec: ast.RuleSpec) -> ast.Expr:
    """The expression a rule's filter evaluates (compile_rule): `when`, and for sequences and absence
    the disjunction of their steps."""
    match spec.correlation:
        case ast.Sequence(steps):
            return ast.And((spec.when, ast.Or(tuple(s.expr for s in steps))))
        case ast.Absent(absent_expr):
            return ast.And((spec.when, absent_expr))
    return spec.when


_FIELD_ATTRS = ("field", "other", "by", "fields")
_TEMPLATE_BUILTINS = frozenset({"count", "rule", "title", "severity", "first", "last", "key"})  # Engine._alert


def _fields_in(node: object) -> set[str]:
    """Field names anywhere in an AST node: attributes named field/other/by/fields, nested nodes walked."""
    out: set[str] = set()
    if node is None or isinstance(node, (str, int, float, bool)):
        return out
    if isinstance(node, (tuple, list)):
        for x in node:
            out |= _fields_in(x)
        return out
    if not dataclasses.is_dataclass(node):
        return out
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if f.name in _FIELD_ATTRS:
            if isinstance(v, str):
                out.add(v)
            elif isinstance(v, tuple):
                out.update(x for x in v if isinstance(x, str))
        elif isinstance(v, (tuple, list)) or dataclasses.is_dataclass(v):
            out |= _fields_in(v)
    return out


def _suppression(v: object, what: str) -> tuple[str, dict[Any, int]]:
    """A rule's saved suppression: (fingerprint, {key: muted until}); a key is a tuple of str or of
    (field, value) pairs of str (_alert)."""
    m = fields(v, what, ("fingerprint", "until"))
    until: dict[Any, int] = {}
    for i, pair in enumerate(list_(m["until"], f"{what}.until")):
        key, t = list_(pair, f"{what}.until[{i}]", 2)
        parts = []
        for x in list_(key, f"{what}.until[{i}] key"):
            if type(x) is list and len(x) == 2 and type(x[0]) is str and type(x[1]) is str:
                parts.append(tuple(x))
            elif type(x) is str:
                parts.append(x)
            else:
                raise Malformed(f"{what}.until[{i}]: a key part must be a str or a [field, value] pair of str")
        until[tuple(parts)] = int_(t, f"{what}.until[{i}] time")
    return str_(m["fingerprint"], f"{what}.fingerprint"), until


def matching_rows(rules: list[CompiledRule], batch: Batch) -> list[np.ndarray]:
    """The rows each rule's filter selects in `batch` (masks shared through the batch's memo). A rule whose
    `event.dataset` values the batch does not hold is not evaluated; a rule that fails selects nothing
    (counted and logged), so one rule's failure never stops the others."""
    n = batch.n
    datasets = batch.keyword("event.dataset")
    present = {v for v in datasets.values if v is not None}
    views = _DatasetViews(batch, datasets)
    out = []
    for rule in rules:
        rule.evaluations.inc(n)
        rows = _NO_ROWS
        if rule.datasets is None or not rule.datasets.isdisjoint(present):
            try:
                rows = views.rows(rule)
            except Exception:  # noqa: BLE001 - see the docstring
                _failed([rule], n)
            if len(rows):
                rule.matches.inc(len(rows))
        out.append(rows)
    return out


class _DatasetViews:
    """A rule whose filter pins event.dataset (required_values) is evaluated on the batch's rows of those
    datasets only: one sub-batch per distinct set of datasets, shared (with its mask memo) by every rule
    that pins the same set. In a batch that mixes sshd, nginx and CloudTrail events, a CloudTrail rule's
    text predicates then run on CloudTrail values only. Rows come back as positions in the whole batch,
    so correlators see no difference."""

    __slots__ = ("batch", "datasets", "views", "mapped")

    def __init__(self, batch: Batch, datasets: Any) -> None:
        self.batch = batch
        self.datasets = datasets
        self.views: dict[frozenset[str], tuple[Batch, np.ndarray] | None] = {}
        self.mapped: dict[tuple[int, int], np.ndarray] = {}

    def rows(self, rule: CompiledRule) -> np.ndarray:
        batch = self.batch
        view = self._view(rule.datasets) if rule.datasets is not None else None
        if view is None:
            return batch.rows(rule.filter(batch))
        sub, where = view
        local = sub.rows(rule.filter(sub))
        key = (id(sub), id(local))  # one array for rules whose masks agree: keeps _agreeing's identity test
        got = self.mapped.get(key)
        if got is None:
            got = self.mapped[key] = where[local]
        return got

    def _view(self, wanted: frozenset[str]) -> tuple[Batch, np.ndarray] | None:
        if wanted in self.views:
            return self.views[wanted]
        col = self.datasets
        lut = np.fromiter((v in wanted for v in col.values), dtype=bool, count=len(col.values))
        selected = lut[col.codes]
        view: tuple[Batch, np.ndarray] | None = None
        if not selected.all():
            where = np.flatnonzero(selected)
            events = self.batch.events
            view = (Batch([events[i] for i in where.tolist()], self.batch.ts[where]), where)
        self.views[wanted] = view
        return view


def _failed(rules: list[CompiledRule], n: int) -> None:
    for rule in rules:
        metrics.RULE_ERRORS.labels(rule=rule.id).inc()
    log.exception("rule %s failed on a batch of %d events; skipped", ", ".join(r.id for r in rules), n)


def _agreeing(members: list[tuple[CompiledRule, np.ndarray]]) -> list[tuple[Correlator, list[CompiledRule], np.ndarray]]:
    """The rules of one correlator grouped by the rows their filters selected in this batch. Where they
    differ, all but the largest group move to correlators of their own with a copy of the state."""
    corr = members[0][0].correlator
    assert corr is not None
    if len(members) == 1:
        return [(corr, [members[0][0]], members[0][1])]
    parts: list[tuple[np.ndarray, list[CompiledRule]]] = []
    for rule, rows in members:
        for got, rules in parts:
            if got is rows or (len(got) == len(rows) and np.array_equal(got, rows)):
                rules.append(rule)
                break
        else:
            parts.append((rows, [rule]))
    if len(parts) == 1:
        return [(corr, parts[0][1], parts[0][0])]
    parts.sort(key=lambda p: -len(p[1]))
    out = [(corr, parts[0][1], parts[0][0])]
    for rows, rules in parts[1:]:
        twin = corr.split({r.id for r in rules})
        for r in rules:
            r.correlator = twin
        out.append((twin, rules, rows))
    return out


def _group_of(spec: ast.RuleSpec, fire: Fire) -> tuple[tuple[str, str], ...]:
    corr = spec.correlation
    by: tuple[str, ...] = getattr(corr, "by", ()) if corr is not None else ()
    if corr is None:
        by = spec.suppress.by or () if spec.suppress is not None else ()
        return tuple((f, str(fire.trigger.get(f, "-"))) for f in by)
    key = fire.key
    extra: tuple[tuple[str, str], ...] = ()
    if isinstance(corr, ast.FirstSeen):
        key, value = key
        extra = ((corr.field, value),)
    values = (key,) if len(by) == 1 else tuple(key)
    return tuple((f, str(v)) for f, v in zip(by, values)) + extra
