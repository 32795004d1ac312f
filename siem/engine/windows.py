"""Keyed event-time window state: one correlator per correlation rule.

The runtime hands every correlator the rows of a batch that passed its rule's filter, in processing
order, with effective event times that never decrease (runtime.py guarantees it: late events are
processed at the watermark). So a window is a half-open interval ``(t - window, t]`` ending at the
newest event, and "within 5m" means first and last event are less than 5 minutes apart:

    window 5m, count >= 3
    t:  0s    60s   299s | 300s
        x     x     x    |          -> fires at 299s (3 events in (299s-5m, 299s])
        x     x          | x        -> no alert: at 300s the event at 0s has left the window

After a window fires, the key's window is cleared (the next alert needs a fresh threshold of events);
suppression (runtime) decides whether a fire becomes an alert. State is carried across batches, so the
alerts do not depend on how events were cut into batches (tests/test_engine_properties.py).

Shared state. A correlator serves one or more rules, its *members*: rules of one kind and keys whose
filters have selected the same rows in every batch so far have the same window state, so it is kept and
updated once (a large pack is mostly tuned variants of a few rules: other thresholds and windows, one
more exclusion). Threshold members may differ in threshold, window, measure and message: they share one
timeline per key (the widest window's events) and each keeps only where its own window restarts after
it fired. Other kinds share state when their parameters are identical. The runtime splits a correlator
in two, copying its state, the first time its members' rows differ.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from siem.dsl import ast
from siem.engine.compiler import MaskFn, compile_expr
from siem.engine.batch import Batch, sample
from siem.engine.snapshot import (SCALARS, Malformed, SampleTable, StateData, array, array_data, fields, int_, ints,
                                  keyed, keys, list_, map_, strs, value)
from siem.schema import Event

Key = Any  # the value of a single `by` field, or a tuple of values for several
_NEVER = -(2**62)
_NO_KEY = object()


@dataclass(slots=True)
class Fire:
    """A window that reached its condition: the runtime turns it into an Alert (or suppresses it)."""

    key: Key
    first_ms: int
    last_ms: int
    count: int
    trigger: Event
    samples: list[Event]
    aggregates: dict[str, object] = field(default_factory=dict)
    rule: str | None = None  # the member rule that fired (None: every member of the correlator)


class Member(NamedTuple):
    """A rule as its correlator sees it."""

    rule: str  # rule id
    spec: Any  # its correlation (ast.Threshold, ast.Sequence, ...)
    fields: tuple[str, ...]  # fields whose values its message aggregates (and a threshold's own field)


def member(rule: str, corr: ast.Correlation, agg_fields: tuple[str, ...]) -> Member:
    own: tuple[str, ...] = ()
    if isinstance(corr, ast.Threshold):
        own = tuple(f for f in (corr.field, *(m.field for m in corr.extra)) if f)
    if isinstance(corr, ast.Sequence):  # a distinct step needs its field's values in the kept samples
        own = tuple(s.distinct for s in corr.steps if s.distinct)
    return Member(rule, corr, tuple(dict.fromkeys((*agg_fields, *own))))


def share_key(m: Member) -> tuple[object, ...]:
    """Rules with equal share keys can be members of one correlator (while their rows agree)."""
    if isinstance(m.spec, ast.Threshold):
        return ("threshold", m.spec.by)
    return (type(m.spec).__name__, repr(m.spec) + ast.v2_repr(m.spec), m.fields)


class _KeyedRows:
    """The keys of a set of rows, and (on first use) their grouping; shared per batch by every rule with
    the same `by` fields whose filter selected the same rows (variants of one rule, tuned per site)."""

    __slots__ = ("rows", "keys", "_groups")

    def __init__(self, rows: np.ndarray, keys: list[Key]) -> None:
        self.rows = rows
        self.keys = keys
        self._groups: dict[Key, list[int]] | None = None

    def groups(self) -> dict[Key, list[int]]:
        """Positions (into keys) per key, in processing order; keys that are None are dropped."""
        if self._groups is None:
            out: dict[Key, list[int]] = {}
            for i, k in enumerate(self.keys):
                if k is not None:
                    out.setdefault(k, []).append(i)
            self._groups = out
        return self._groups


def keyed_rows(batch: Batch, rows: np.ndarray, by: tuple[str, ...]) -> _KeyedRows:
    memo_key = ("keyed_rows", by, len(rows), hash(rows.tobytes()))
    got = batch.memo.get(memo_key)
    if not isinstance(got, _KeyedRows) or not np.array_equal(got.rows, rows):
        got = batch.memo[memo_key] = _KeyedRows(rows, _row_keys(batch, rows, by))  # type: ignore[assignment]
    return got


def row_keys(batch: Batch, rows: np.ndarray, by: tuple[str, ...]) -> list[Key]:
    """The key of each row (None where a `by` field is missing: such events are not correlated)."""
    return keyed_rows(batch, rows, by).keys


def _row_keys(batch: Batch, rows: np.ndarray, by: tuple[str, ...]) -> list[Key]:
    if not by:
        return [()] * len(rows)
    cols = [batch.keyword(f) for f in by]
    per_field = [c.take(rows) for c in cols]
    if len(by) == 1:
        return per_field[0]
    return [None if None in t else t for t in zip(*per_field)]


class Correlator(ABC):
    """Base: subclasses implement process(); advance() is for time-driven rules (absent).

    Members other than a threshold's have identical specs: `spec` and `agg_fields` are theirs."""

    STATE = ("state",)  # the attributes that are the correlator's state (snapshots, splits)
    KIND = ""  # its name in snapshots (siem.engine.snapshot)

    def __init__(self, members: list[Member], sample_size: int = 3) -> None:
        self.members = list(members)
        self.spec = members[0].spec
        self.sample_size = sample_size
        self.agg_fields = members[0].fields  # fields whose values the message template aggregates
        self._swept_ms = _NEVER  # watermark of the last sweep of idle keys
        self._marked: dict[Key, object] = {}  # idle keys found by that sweep, with their state's version

    def get_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.STATE}

    def set_state(self, saved: dict[str, Any]) -> None:
        for name in self.STATE:
            if name in saved:
                setattr(self, name, saved[name])

    @abstractmethod
    def to_data(self, samples: SampleTable) -> dict[str, Any]:
        """The state as plain data for a snapshot (siem.engine.snapshot): maps, arrays, scalars, samples as
        indexes into `samples`. Each kind documents its schema here."""

    @abstractmethod
    def from_data(self, saved: StateData) -> dict[str, Any]:
        """The inverse of to_data, checked against this correlator's rule: a state for set_state, built from
        new objects; Malformed (saying where) when the data breaks the schema."""

    def split(self, rules: set[str]) -> Correlator:
        """Move the members `rules` to a new correlator with a copy of the state (their rows differ now)."""
        twin = make_correlator([m for m in self.members if m.rule in rules], self.sample_size)
        twin.set_state(self.copy_of(self.get_state()))
        self._drop_members(rules)
        return twin

    def copy_of(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A copy of a state (get_state()) that can change on its own."""
        return {**saved, "state": {k: self._copy_entry(v) for k, v in saved["state"].items()}}

    @staticmethod
    @abstractmethod
    def _copy_entry(entry: Any) -> Any:
        """A key's state, copied so the copy can change alone. Samples and tuples are never modified in
        place, so they are shared (a deep copy took 3.3 s for 200,000 keys: a pause of the daemon)."""

    def _drop_members(self, rules: set[str]) -> None:
        self.members = [m for m in self.members if m.rule not in rules]

    @abstractmethod
    def process(self, batch: Batch, rows: np.ndarray) -> list[Fire]:
        """Take the rows of `batch` that passed the rule's filter; return the windows that fired."""

    def advance(self, stream_ms: int) -> list[Fire]:
        return []

    def describe_key(self, key: Key, rule: str) -> dict[str, object] | None:
        """What member ``rule`` holds for ``key`` now, as plain data for a person (``siem logtest``); None
        when the key has no state. Read-only, and never on the hot path."""
        return None

    def expire(self, watermark_ms: int) -> int:
        """Drop keys that can no longer contribute (see _sweep); returns how many. Correlators whose keys
        carry meaning beyond their window (absent, first_seen, spike's learning) keep them."""
        return 0

    def _sweep(self, watermark_ms: int, window_ms: int) -> int:
        """Once per half window of event time: drop the keys whose newest event is older than the watermark
        minus the window AND that did not change since the previous sweep, which marked them. An event in
        time can no longer share a window with such a key's events; the second condition keeps a key whose
        backlog is still arriving late (a host's log backfilled after another's, windowed at its own
        times). A key goes one to two sweeps after its last event; each is visited a few times in its life."""
        if watermark_ms - self._swept_ms < window_ms // 2:
            return 0
        self._swept_ms = watermark_ms
        idle = self._idle(watermark_ms - window_ms)
        state: dict[Key, Any] = self.state  # type: ignore[attr-defined]
        gone = 0
        for key, mark in self._marked.items():
            now = idle.get(key, _NO_KEY)
            if now is not _NO_KEY and self._unchanged(now, mark):
                del state[key], idle[key]
                gone += 1
        self._marked = idle
        return gone

    def _idle(self, horizon_ms: int) -> dict[Key, object]:
        """The keys whose newest event is at or before `horizon_ms`, with their state's version (kinds that
        sweep say which)."""
        return {}

    @staticmethod
    def _unchanged(version: object, mark: object) -> bool:
        return version == mark

    def key_count(self) -> int:
        return len(self.state)  # type: ignore[attr-defined]


class _Window:
    """A threshold key's timeline: the events of the widest member window, and where each member's
    window restarts after it fired (positions count from the key's first event, `base` is T[0]'s)."""

    __slots__ = ("ts", "vals", "samples", "base", "resets")

    def __init__(self, ts: list[int], vals: dict[str, list[object]], samples: list[Event], base: int = 0,
                 resets: dict[str, int] | None = None) -> None:
        self.ts = ts  # effective times, non-decreasing
        self.vals = vals  # per aggregated field, aligned with ts
        self.samples = samples  # the last few events
        self.base = base
        self.resets = resets  # member rule -> position of the first event its next window may use


def _aggregates(vals: dict[str, list[object]], lo: int, hi: int, fields: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields:
        window = [v for v in vals[f][lo:hi] if v is not None]
        out[f"distinct({f})"] = len(set(map(str, window)))
        nums = [v for v in window if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums:
            out[f"sum({f})"] = sum(nums)
            out[f"min({f})"] = min(nums)
            out[f"max({f})"] = max(nums)
    return out


_FEW = 32  # new events of a key up to which a count window is scanned in Python


def _measures(spec: ast.Threshold) -> list[ast.Measure]:
    return [ast.Measure(spec.kind, spec.field, spec.op, spec.value, spec.q), *spec.extra]


def _fire_floor(spec: ast.Threshold) -> int:
    """Fewest events a window can fire with: a count's or distinct's threshold (0 when only sums and
    averages are tested: any event may)."""
    return max([int(m.value) + (m.op == ">") for m in _measures(spec) if m.kind in ("count", "distinct")] or [0])


def _numbers(values: list[object]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]  # type: ignore[misc]


def measure_value(m: ast.Measure, values: list[object], count: int) -> float | None:
    """The aggregate of one window: `values` of m.field (None where absent), `count` events."""
    if m.kind == "count":
        return float(count)
    if m.kind == "distinct":
        return float(len({str(v) for v in values if v is not None}))
    nums = _numbers(values)
    if m.kind == "sum":
        return float(sum(nums))
    if not nums:
        return None
    if m.kind == "avg":
        return sum(nums) / len(nums)
    nums.sort()
    if m.kind == "median":
        mid = len(nums) // 2
        return float(nums[mid]) if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2
    rank = max(1, -(-int(round((m.q or 0) * len(nums))) // 100))  # nearest rank: ceil(q/100 * n)
    return float(nums[min(rank, len(nums)) - 1])


class ThresholdCorrelator(Correlator):
    """count / distinct(f) / sum(f) / avg(f) / median(f) / percentile(f, q) >= N [and ...] within W by
    keys; members may differ in all but the keys. Counts, distincts and sums of one measure slide in
    one pass; several measures, averages and percentiles test every window ending at a new event."""

    STATE = ("state", "agg_fields")
    KIND = "threshold"

    def __init__(self, members: list[Member], sample_size: int = 3) -> None:
        super().__init__(members, sample_size)
        # key -> its timeline; a key seen once is (time, aggregated values, sample) until it is seen again
        self.state: dict[Key, _Window | tuple[int, tuple[object, ...], Event]] = {}
        self._configure()

    def _configure(self) -> None:
        self.agg_fields = tuple(dict.fromkeys(f for m in self.members for f in m.fields))
        self.window_ms = max(m.spec.window_ms for m in self.members)
        self._floors = [(m, _fire_floor(m.spec)) for m in self.members]
        self._min_floor = min(f for _, f in self._floors)

    def _drop_members(self, rules: set[str]) -> None:
        super()._drop_members(rules)
        self._conform(self.agg_fields)

    @staticmethod
    def _copy_entry(entry: Any) -> Any:
        if type(entry) is tuple:
            return entry
        return _Window(list(entry.ts), {f: list(v) for f, v in entry.vals.items()}, list(entry.samples), entry.base,
                       dict(entry.resets) if entry.resets else None)

    def set_state(self, saved: dict[str, Any]) -> None:
        self.state = saved["state"]
        self._conform(tuple(saved.get("agg_fields", self.agg_fields)))

    def to_data(self, samples: SampleTable) -> dict[str, Any]:
        """``{fields: [str], once: {keys: [key], ts: array, vals: [[value per key] per field], samples: array},
        timelines: [[key, timeline]]}``. `fields` are the aggregated fields, in the order of `vals`. `once`
        holds the keys seen once, column by column (most keys: a table decodes several times faster than
        an entry per key). A timeline is ``{ts: [int], vals: {field: [value per ts]}, samples: [sample], base:
        int, resets: {rule: int} | nil}``: times non-decreasing, a member's reset in (base, base + len(ts)]."""
        once = [(k, v) for k, v in self.state.items() if type(v) is tuple]
        timelines = [[k, {"ts": w.ts, "vals": w.vals, "samples": samples.refs(w.samples), "base": w.base,
                          "resets": w.resets}] for k, w in self.state.items() if isinstance(w, _Window)]
        entries = [v for _, v in once]
        cols = [list(c) for c in zip(*[v[1] for v in entries])] if entries else [[] for _ in self.agg_fields]
        refs = samples.refs([v[2] for v in entries])
        return {"fields": list(self.agg_fields),
                "once": {"keys": [k for k, _ in once], "ts": array_data(np.array([v[0] for v in entries], np.int64)),
                         "vals": cols, "samples": array_data(np.array(refs, np.int64))},
                "timelines": timelines}

    def from_data(self, saved: StateData) -> dict[str, Any]:
        d = fields(saved.data, "state", ("fields", "once", "timelines"))
        had = tuple(strs(d["fields"], "fields"))
        if len(set(had)) != len(had):
            raise Malformed(f"fields: {list(had)} names a field twice")
        sample, arity = saved.sample, len(self.spec.by)

        def values(col: object, what: str, count: int) -> list[object]:
            for x in list_(col, what, count):
                if type(x) not in SCALARS:
                    value(x, what)
            return col  # type: ignore[return-value]

        once = fields(d["once"], "once", ("keys", "ts", "vals", "samples"))
        ks = keys(once["keys"], "once.keys", arity)
        n = len(ks)
        times = array(once["ts"], "once.ts", n).tolist()
        cols = [values(c, f"once.vals[{had[j]!r}]", n)
                for j, c in enumerate(list_(once["vals"], "once.vals", len(had)))]
        smp = saved.sample_list(array(once["samples"], "once.samples", n), "once.samples")
        state: dict[Key, Any] = dict(zip(ks, zip(times, zip(*cols) if cols else repeat((), n), smp)))
        if len(state) != n:
            raise Malformed(f"once.keys: {n - len(state)} duplicate keys")

        def timeline(v: object) -> _Window:
            w = fields(v, "timeline", ("ts", "vals", "samples", "base", "resets"))
            ts = ints(w["ts"], "ts")
            if not ts:
                raise Malformed("ts: a timeline holds at least one event")
            if any(a > b for a, b in zip(ts, ts[1:])):
                raise Malformed("ts: times decrease")
            vals = map_(w["vals"], "vals")
            if set(vals) != set(had):
                raise Malformed(f"vals: fields {sorted(vals)}, expected {sorted(had)}")
            for f, col in vals.items():
                values(col, f"vals[{f!r}]", len(ts))
            base = int_(w["base"], "base", 0)
            resets = w["resets"]
            if resets is not None:
                for r, at in map_(resets, "resets").items():
                    int_(at, f"resets[{r!r}]", base + 1, base + len(ts))
            return _Window(ts, vals, [sample(s) for s in list_(w["samples"], "samples")], base, resets or None)

        lines = keyed(d["timelines"], "timelines", arity, timeline)
        state.update(lines)
        if len(state) != n + len(lines):
            raise Malformed("timelines: a key also seen once")
        return {"state": state, "agg_fields": had}

    def _conform(self, had: tuple[str, ...]) -> None:
        """Make the state hold exactly this correlator's fields, in its order (members left or joined,
        a message now aggregates another field): values missing for a field are None."""
        fields = self.agg_fields
        self._configure()
        if fields == self.agg_fields == had:
            return
        want = self.agg_fields
        where = {f: i for i, f in enumerate(had)}
        for key, win in self.state.items():
            if type(win) is tuple:
                old = win[1]
                self.state[key] = (win[0], tuple(old[where[f]] if f in where and where[f] < len(old) else None
                                                 for f in want), win[2])
            else:
                win.vals = {f: win.vals.get(f) or [None] * len(win.ts) for f in want}  # type: ignore[union-attr]

    def process(self, batch: Batch, rows: np.ndarray) -> list[Fire]:
        keyed = keyed_rows(batch, rows, self.spec.by)
        fires: list[Fire] = []
        ts_all = batch.ts[rows].tolist()
        rows_l = rows.tolist()
        events = batch.events
        sample_of = batch.sample
        window_ms = self.window_ms
        k_samples = self.sample_size
        agg_fields = self.agg_fields
        state = self.state
        floors, min_floor = self._floors, self._min_floor
        members = self.members
        single_cannot_fire = min_floor > 1
        for key, pos in keyed.groups().items():
            win = state.get(key)
            if win is None and single_cannot_fire and len(pos) == 1:  # the common case: a key seen once,
                row = rows_l[pos[0]]  # kept as one tuple (most keys are never seen again)
                agg = tuple([events[row].get(f) for f in agg_fields]) if agg_fields else ()
                state[key] = (ts_all[pos[0]], agg, sample_of(row))
                continue
            new_ts = [ts_all[p] for p in pos]
            new_rows = [rows_l[p] for p in pos]
            first = 0
            resets: dict[str, int] | None = None
            if win is None:
                old_ts: list[int] = []
                old_vals: dict[str, list[object]] = {f: [] for f in agg_fields}
                old_samples: list[Event] = []
            elif type(win) is tuple:
                old_ts, old_vals, old_samples = [win[0]], {f: [v] for f, v in zip(agg_fields, win[1])}, [win[2]]
            else:
                old_ts, old_vals, old_samples = win.ts, win.vals, win.samples
                first, resets = win.base, win.resets
            base = len(old_ts)
            ordered = (not base or new_ts[0] >= old_ts[-1]) and (len(pos) < 2 or new_ts == sorted(new_ts))
            # the key's lists grow in place (copying a long window's lists every batch was the top cost of
            # rules with aggregates); the state entry is rewritten below in any case
            T = old_ts
            T.extend(new_ts)
            vals = old_vals
            for f in agg_fields:
                vals[f].extend([events[r].get(f) for r in new_rows])
            if ordered and len(T) < min_floor:  # no member can fire yet
                recent = (old_samples + [sample_of(r) for r in new_rows[-k_samples:]])[-k_samples:]
            else:
                # the timeline's events: samples kept in state (None where not kept), then this batch's rows
                kept = old_samples[-base:] if base else []
                evs: list[Event | int | None] = [None] * (base - len(kept)) + kept + new_rows
                start = base
                if not ordered:  # events later than the allowed lateness: windows use their own time per key
                    order = sorted(range(len(T)), key=T.__getitem__)
                    T = [T[i] for i in order]
                    vals = {f: [v[i] for i in order] for f, v in vals.items()}
                    evs = [evs[i] for i in order]
                    start = min(j for j, i in enumerate(order) if i >= base)
                    if resets:
                        resets = _resorted(resets, order, first)
                T_arr = None
                n = len(T)
                for m, floor in floors:
                    reset = resets.get(m.rule, first) - first if resets else 0
                    begin = max(start, reset)
                    # a window ending at a new event holds at most the events (values) since the first new
                    # one's window began: below the member's threshold, there is nothing to scan
                    lo = max(reset, bisect_right(T, T[begin] - m.spec.window_ms)) if begin < n else n
                    if n - lo < floor or (m.spec.kind == "distinct"
                                          and len(set(map(str, vals[m.spec.field][lo:]))) < floor):
                        continue
                    if m.spec.kind == "count" and not m.spec.extra and n - begin <= _FEW:
                        done = self._count_few(m, key, T, vals, begin, reset, evs, batch, fires)
                    else:
                        if T_arr is None:
                            T_arr = np.array(T, dtype=np.int64)
                        done = self._scan(m, key, T_arr, vals, begin, reset, evs, batch, fires)
                    if done > reset:
                        resets = resets or {}
                        resets[m.rule] = first + done
                recent = _last_samples(batch, evs, k_samples)
            keep_from = bisect_right(T, T[-1] - window_ms)
            if resets:  # events every member has fired with are not needed any more
                keep_from = max(keep_from, min(resets.get(m.rule, first) for m in members) - first)
            if keep_from >= len(T):
                state.pop(key, None)
                continue
            if keep_from:
                del T[:keep_from]
                for v in vals.values():
                    del v[:keep_from]
                first += keep_from
                if resets:
                    resets = {r: at for r, at in resets.items() if at > first} or None
            state[key] = _Window(T, vals, recent, first, resets)
        return fires

    def describe_key(self, key: Key, rule: str) -> dict[str, object] | None:
        win = self.state.get(key)
        m = next((m for m in self.members if m.rule == rule), None)
        if win is None or m is None:
            return None
        if type(win) is tuple:
            T, vals, reset = [win[0]], {f: [v] for f, v in zip(self.agg_fields, win[1])}, 0
        else:
            T, vals = win.ts, win.vals
            reset = (win.resets or {}).get(rule, win.base) - win.base
        spec = m.spec
        lo = max(reset, bisect_right(T, T[-1] - spec.window_ms))
        if spec.kind == "count":
            value: object = len(T) - lo
        elif spec.kind == "distinct":
            value = len({str(v) for v in vals[spec.field][lo:] if v is not None})
        else:
            value = sum(v for v in vals[spec.field][lo:] if isinstance(v, (int, float)) and not isinstance(v, bool))
        measure = spec.kind if spec.kind == "count" else f"{spec.kind}({spec.field})"
        return {"measure": measure, "value": value, "fires_at": f"{spec.op} {spec.value:g}",
                "window_ms": spec.window_ms, "events_in_window": len(T) - lo,
                "window_from_ms": T[lo] if lo < len(T) else None, "window_to_ms": T[-1]}

    def expire(self, watermark_ms: int) -> int:
        return self._sweep(watermark_ms, self.window_ms)

    def _idle(self, horizon_ms: int) -> dict[Key, object]:
        # a key's state is a new object after every update: the object is its version (kept alive by the
        # marks, so compared by identity)
        return {k: v for k, v in self.state.items() if (v[0] if type(v) is tuple else v.ts[-1]) <= horizon_ms}

    _unchanged = staticmethod(operator.is_)

    def _count_few(
        self, m: Member, key: Key, T: list[int], vals: dict[str, list[object]], base: int, reset: int,
        evs: list[Event | int | None], batch: Batch, fires: list[Fire],
    ) -> int:
        """_scan for a count over a few new events: one bisect per event beats numpy's set-up."""
        spec = m.spec
        w, need, strict = spec.window_ms, spec.value, spec.op == ">"
        for p in range(base, len(T)):
            start = max(bisect_right(T, T[p] - w), reset)
            if (p - start + 1 > need) if strict else (p - start + 1 >= need):
                reset = self._fire(m, key, T, vals, start, p, evs, batch, fires)
        return reset

    def _scan(
        self, m: Member, key: Key, T: np.ndarray, vals: dict[str, list[object]], base: int, reset: int,
        evs: list[Event | int | None], batch: Batch, fires: list[Fire],
    ) -> int:
        """Find member m's fires among positions >= base, its window starting at `reset` or later; returns
        the new reset position (start of its open window).

        `evs` is aligned with T: rows of this batch, the samples kept in state, None for the rest."""
        spec = m.spec
        n = len(T)
        lo = np.searchsorted(T, T - spec.window_ms, "right")
        need = spec.value
        strict = spec.op == ">"
        if spec.extra or spec.kind in ("avg", "median", "percentile"):
            # several measures, or ones without a running form: every window ending at a new event
            measures = _measures(spec)
            p = base
            while p < n:
                start = max(int(lo[p]), reset)
                if all(_holds(x, measure_value(x, vals[x.field][start : p + 1] if x.field else [], p - start + 1))
                       for x in measures):
                    reset = self._fire(m, key, T, vals, start, p, evs, batch, fires)
                p += 1
            return reset
        if spec.kind in ("count", "sum"):
            # cumulative measure: the window (start, p] holds S[p + 1] - S[start]
            if spec.kind == "count":
                S = np.arange(n + 1, dtype=np.float64)
            else:
                col = vals[spec.field or ""]
                V = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0 for v in col])
                S = np.concatenate([[0.0], np.cumsum(V, dtype=np.float64)])
            p = base
            while p < n:
                start = np.maximum(lo[p:], reset)
                tot = S[p + 1 : n + 1] - S[start]
                hits = np.flatnonzero(tot > need if strict else tot >= need)
                if not len(hits):
                    break
                p = p + int(hits[0])
                reset = self._fire(m, key, T, vals, max(int(lo[p]), reset), p, evs, batch, fires)
                p = reset
            return reset
        # distinct: a sliding multiset of values, one step per event
        col = vals[spec.field or ""]
        counts: Counter[str] = Counter()
        left = max(int(lo[base]), reset) if base < n else 0
        for i in range(left, base):
            if col[i] is not None:
                counts[str(col[i])] += 1
        for p in range(base, n):
            while left < p and (left < reset or T[left] <= T[p] - spec.window_ms):
                if col[left] is not None:
                    v = str(col[left])
                    counts[v] -= 1
                    if not counts[v]:
                        del counts[v]
                left += 1
            if col[p] is not None:
                counts[str(col[p])] += 1
            if (len(counts) > need) if strict else (len(counts) >= need):
                reset = self._fire(m, key, T, vals, left, p, evs, batch, fires)
                counts.clear()
                left = reset
        return reset

    def _fire(
        self, m: Member, key: Key, T: np.ndarray | list[int], vals: dict[str, list[object]], start: int, p: int,
        evs: list[Event | int | None], batch: Batch, fires: list[Fire],
    ) -> int:
        window = [e for e in evs[start : p + 1] if e is not None]
        last = evs[p] if evs[p] is not None else (window[-1] if window else None)
        if last is None:
            trigger: Event = {"@timestamp": int(T[p])}
        else:
            trigger = batch.events[last] if type(last) is int else last  # type: ignore[assignment]
        fires.append(
            Fire(key, int(T[start]), int(T[p]), p - start + 1, trigger,
                 [_as_sample(batch, e) for e in window[-self.sample_size :]],
                 _aggregates(vals, start, p + 1, m.fields), m.rule)
        )
        return p + 1


def _holds(m: ast.Measure, got: float | None) -> bool:
    return got is not None and (got > m.value if m.op == ">" else got >= m.value)


def _resorted(resets: dict[str, int], order: list[int], first: int) -> dict[str, int]:
    """Members' restart positions after the key's timeline was re-sorted (`order`: old position of each
    new one). A member's window restarts after the last event it fired with; an event later than the
    allowed lateness that sorts before that point is not counted again by it."""
    where = [0] * len(order)
    for new, old in enumerate(order):
        where[old] = new
    return {r: first + where[at - first - 1] + 1 if at > first else at for r, at in resets.items()}


def _last_samples(batch: Batch, evs: list[Event | int | None], k: int) -> list[Event]:
    out: list[Event] = []
    for e in reversed(evs):
        if len(out) == k:
            break
        if e is not None:
            out.append(_as_sample(batch, e))
    out.reverse()
    return out


def _as_sample(batch: Batch, e: Event | int) -> Event:
    """A window entry as a sample: a row of the current batch, or a sample kept in state."""
    return batch.sample(e) if type(e) is int else e  # type: ignore[arg-type, return-value]


class SequenceCorrelator(Correlator):
    """Steps, each with a minimum count (or a minimum of distinct values of a field), all within W by
    keys: in order for ``sequence``, in any order for ``all``.

        all within 5m by k { a, b }
        t:  0s   60s  | 400s  460s
            b    a    |           -> fires at 60s (a and b within 5m, b first)
            a         | b         -> no alert: at 400s the a at 0s has left the window
    """

    STATE = ("state", "seq")
    KIND = "sequence"

    @staticmethod
    def _copy_entry(entry: Any) -> Any:
        return [list(step) for step in entry]  # entries are tuples (never changed)

    def __init__(self, members: list[Member], sample_size: int = 3) -> None:
        super().__init__(members, sample_size)
        self.step_masks: list[MaskFn] = [compile_expr(s.expr) for s in self.spec.steps]
        # key -> per step: list of (ts, seq, event)
        self.state: dict[Key, list[list[tuple[int, int, Event]]]] = {}
        self.seq = 0

    def to_data(self, samples: SampleTable) -> dict[str, Any]:
        """``{seq: int, keys: [[key, [[[time, seq, sample]] per step]]]}``: one list per step of the rule,
        each entry's seq between 1 and the correlator's."""
        ref = samples.ref
        return {"seq": self.seq,
                "keys": [[k, [[[t, s, ref(e)] for t, s, e in step] for step in steps]]
                         for k, steps in self.state.items()]}

    def from_data(self, saved: StateData) -> dict[str, Any]:
        d = fields(saved.data, "state", ("seq", "keys"))
        seq = int_(d["seq"], "seq", 0)
        n_steps, sample = len(self.spec.steps), saved.sample

        def entry(v: object) -> list[list[tuple[int, int, Event]]]:
            out = []
            for j, step in enumerate(list_(v, "steps", n_steps)):
                got = []
                for x in list_(step, f"step {j + 1}"):
                    t, s, e = list_(x, f"step {j + 1} entry", 3)
                    got.append((int_(t, "time"), int_(s, "seq", 1, seq), sample(e)))
                out.append(got)
            return out

        return {"state": keyed(d["keys"], "keys", len(self.spec.by), entry), "seq": seq}

    def process(self, batch: Batch, rows: np.ndarray) -> list[Fire]:
        spec = self.spec
        masks = [m(batch)[rows].tolist() for m in self.step_masks]
        keys = row_keys(batch, rows, spec.by)
        ts_l, rows_l = batch.ts[rows].tolist(), rows.tolist()
        fires: list[Fire] = []
        last = len(spec.steps) - 1
        state, window_ms = self.state, spec.window_ms
        for i, key in enumerate(keys):
            if key is None:
                continue
            self.seq += 1
            t = ts_l[i]
            event = batch.events[rows_l[i]]
            steps = state.get(key)
            if steps is None:
                steps = state[key] = [[] for _ in spec.steps]
            else:
                for lst in steps:
                    while lst and lst[0][0] <= t - window_ms:
                        lst.pop(0)
            smp = batch.sample(rows_l[i]) if not self.agg_fields else sample(event, self.agg_fields)
            if not spec.ordered:
                hit = [j for j in range(last + 1) if masks[j][i]]
                for j in hit:
                    self._append(steps[j], spec.steps[j], (t, self.seq, smp))
                chain = self._complete_any(steps) if hit else None
                if chain is not None:
                    fires.append(self._chain_fire(key, chain, t, event))
                    del self.state[key]
                elif not any(steps):
                    del self.state[key]
                continue
            if masks[last][i]:
                chain = self._complete(steps, (t, self.seq, smp))
                if chain is not None:
                    fires.append(self._chain_fire(key, chain, t, event))
                    del self.state[key]
                    continue
            for j in range(last + 1):
                if masks[j][i]:
                    self._append(steps[j], spec.steps[j], (t, self.seq, smp))
            if not any(steps):
                del self.state[key]
        return fires

    @staticmethod
    def _append(lst: list[tuple[int, int, Event]], step: ast.Step, entry: tuple[int, int, Event]) -> None:
        """Keep a step's newest entries: 4x its count, and for a distinct step only the newest per value."""
        if step.distinct is not None:
            value = entry[2].get(step.distinct)
            if value is None:
                return
            lst[:] = [x for x in lst if x[2].get(step.distinct) != value]
        lst.append(entry)
        if len(lst) > max(step.min_count, 1) * 4:
            del lst[: len(lst) - step.min_count * 4]

    @staticmethod
    def _block(entries: list[tuple[int, int, Event]], step: ast.Step) -> list[tuple[int, int, Event]] | None:
        """The newest entries that satisfy `step` (its count, or its number of distinct values)."""
        if step.distinct is None:
            return entries[-step.min_count:] if len(entries) >= step.min_count else None
        seen: set[object] = set()
        for k in range(len(entries) - 1, -1, -1):
            seen.add(entries[k][2].get(step.distinct))
            if len(seen) >= step.min_count:
                return entries[k:]
        return None

    def _chain_fire(self, key: Key, chain: list[tuple[int, int, Event]], t: int, event: Event) -> Fire:
        """The alert of a completed sequence: from its first step's time to `t`, its last events as samples."""
        return Fire(key, chain[0][0], t, len(chain), event, [e for _, _, e in chain][-self.sample_size :],
                    _aggregates({f: [e.get(f) for _, _, e in chain] for f in self.agg_fields}, 0, len(chain),
                                self.agg_fields))

    def _complete_any(self, steps: list[list[tuple[int, int, Event]]]) -> list[Any] | None:
        blocks = [self._block(lst, st) for lst, st in zip(steps, self.spec.steps)]
        if any(b is None for b in blocks):
            return None
        chain = sorted({x[1]: x for b in blocks for x in b}.values(), key=lambda x: x[1])  # type: ignore[union-attr]
        if chain[-1][0] - chain[0][0] >= self.spec.window_ms:
            return None
        return chain

    def describe_key(self, key: Key, rule: str) -> dict[str, object] | None:
        steps = self.state.get(key)
        if steps is None:
            return None
        return {"steps": [{"seen": len(got), "needs": st.min_count} for st, got in zip(self.spec.steps, steps)],
                "window_ms": self.spec.window_ms,
                "first_ms": min((e[0] for got in steps for e in got), default=None)}

    def _complete(self, steps: list[list[tuple[int, int, Event]]], current: tuple[int, int, Event]) -> list[Any] | None:
        spec = self.spec
        last = len(spec.steps) - 1
        got = self._block(steps[last] + [current], spec.steps[last])
        if got is None:
            return None
        block: list[tuple[int, int, Event]] = got
        chain = list(block)
        before = block[0][1]
        for j in range(last - 1, -1, -1):
            candidates = [x for x in steps[j] if x[1] < before]
            got = self._block(candidates, spec.steps[j])
            if got is None:
                return None
            block = got
            chain = block + chain
            before = block[0][1]
        times = [x[0] for x in chain]
        if max(times) - min(times) >= spec.window_ms:  # possible only with events beyond the lateness
            return None
        return chain

    def expire(self, watermark_ms: int) -> int:
        return self._sweep(watermark_ms, self.spec.window_ms)

    def _idle(self, horizon_ms: int) -> dict[Key, object]:
        # steps are lists changed in place: the newest entry's sequence number is the version
        return {k: max([lst[-1][1] for lst in steps if lst] or [0]) for k, steps in self.state.items()
                if max([lst[-1][0] for lst in steps if lst] or [0]) <= horizon_ms}

    def key_count(self) -> int:
        return len(self.state)


class AbsentCorrelator(Correlator):
    """Fires when a key that was seen stays silent for longer than W of event time."""

    KIND = "absent"

    def to_data(self, samples: SampleTable) -> dict[str, Any]:
        """``{keys: [[key, [last seen, sample]]]}``."""
        ref = samples.ref
        return {"keys": [[k, [t, ref(e)]] for k, (t, e) in self.state.items()]}

    def from_data(self, saved: StateData) -> dict[str, Any]:
        d = fields(saved.data, "state", ("keys",))

        def entry(v: object) -> tuple[int, Event]:
            t, e = list_(v, "entry", 2)
            return (int_(t, "last seen"), saved.sample(e))

        return {"state": keyed(d["keys"], "keys", len(self.spec.by), entry)}

    @staticmethod
    def _copy_entry(entry: Any) -> Any:
        return entry  # (last seen, sample): replaced, never changed

    def __init__(self, members: list[Member], sample_size: int = 3) -> None:
        super().__init__(members, sample_size)
        self.state: dict[Key, tuple[int, Event]] = {}  # key -> (last seen, last event)

    def process(self, batch: Batch, rows: np.ndarray) -> list[Fire]:
        ts_l, rows_l = batch.ts[rows].tolist(), rows.tolist()
        window_ms, state = self.spec.window_ms, self.state
        fires: list[Fire] = []
        for key, pos in keyed_rows(batch, rows, self.spec.by).groups().items():
            prev = state.get(key)
            if len(pos) > 1:  # the usual case, no silence inside the batch: found with C-level loops only
                times = [ts_l[p] for p in pos]
                if (times == sorted(times) and (prev is None or prev[0] <= times[0] <= prev[0] + window_ms)
                        and max(map(operator.sub, times[1:], times[:-1])) <= window_ms):
                    state[key] = (times[-1], batch.sample(rows_l[pos[-1]]))
                    continue
            last_t, last_row = (prev[0], -1) if prev is not None else (None, -1)
            for p in pos:
                t = ts_l[p]
                if last_t is not None and t - last_t > window_ms:
                    fires.append(self._silence(key, (last_t, batch.sample(last_row) if last_row >= 0 else prev[1])))  # type: ignore[index]
                if last_t is None or t >= last_t:  # a late event never moves "last seen" backwards
                    last_t, last_row = t, rows_l[p]
            if last_row >= 0:  # only the key's last event is kept: one sample per key and batch
                state[key] = (last_t, batch.sample(last_row))  # type: ignore[assignment]
        return fires

    def describe_key(self, key: Key, rule: str) -> dict[str, object] | None:
        got = self.state.get(key)
        if got is None:
            return None
        return {"last_seen_ms": got[0], "fires_if_silent_until_ms": got[0] + self.spec.window_ms}

    def advance(self, stream_ms: int) -> list[Fire]:
        w = self.spec.window_ms
        gone = sorted(((t, k) for k, (t, _) in self.state.items() if stream_ms - t > w), key=lambda x: (x[0], repr(x[1])))
        return [self._silence(k, self.state.pop(k)) for _, k in gone]

    def _silence(self, key: Key, prev: tuple[int, Event]) -> Fire:
        t, event = prev
        return Fire(key, t, t + self.spec.window_ms, 0, event, [event], {"silent_ms": self.spec.window_ms})


class FirstSeenCorrelator(Correlator):
    """A value of `field` never seen for the key before, once the key has a learning history."""

    MAX_VALUES_PER_KEY = 10_000
    KIND = "first_seen"

    def to_data(self, samples: SampleTable) -> dict[str, Any]:
        """``{keys: [[key, [first seen, [value]]]]}``: the values seen (sorted; at most MAX_VALUES_PER_KEY)."""
        return {"keys": [[k, [t, sorted(seen)]] for k, (t, seen) in self.state.items()]}

    def from_data(self, saved: StateData) -> dict[str, Any]:
        d = fields(saved.data, "state", ("keys",))

        def entry(v: object) -> tuple[int, set[str]]:
            t, seen = list_(v, "entry", 2)
            got = set(strs(seen, "values"))
            if not 0 < len(got) <= self.MAX_VALUES_PER_KEY:
                raise Malformed(f"values: {len(got)} values, expected 1 to {self.MAX_VALUES_PER_KEY}")
            return (int_(t, "first seen"), got)

        return {"state": keyed(d["keys"], "keys", len(self.spec.by), entry)}

    @staticmethod
    def _copy_entry(entry: Any) -> Any:
        return (entry[0], set(entry[1]))

    def __init__(self, members: list[Member], sample_size: int = 3) -> None:
        super().__init__(members, sample_size)
        self.state: dict[Key, tuple[int, set[str]]] = {}  # key -> (first seen, values seen)

    def describe_key(self, key: Key, rule: str) -> dict[str, object] | None:
        got = self.state.get(key)
        if got is None:
            return None
        return {"first_seen_ms": got[0], "learning_until_ms": got[0] + self.spec.learn_ms,
                "values_seen": len(got[1]), "field": self.spec.field}

    def process(self, batch: Batch, rows: np.ndarray) -> list[Fire]:
        keys = row_keys(batch, rows, self.spec.by)
        ts_l, rows_l = batch.ts[rows].tolist(), rows.tolist()
        col = batch.keyword(self.spec.field)
        values = col.take(rows)
        fires: list[Fire] = []
        for i, key in enumerate(keys):
            value = values[i]
            if key is None or value is None:
                continue
            t = ts_l[i]
            v = str(value)
            st = self.state.get(key)
            if st is None:
                self.state[key] = (t, {v})
                continue
            first, seen = st
            if v in seen:
                continue
            if t - first >= self.spec.learn_ms:
                event = batch.events[rows_l[i]]
                fires.append(Fire((key, v), t, t, 1, event, [event], {}))
            if len(seen) < self.MAX_VALUES_PER_KEY:
                seen.add(v)
        return fires


class SpikeCorrelator(Correlator):
    """Count in the current window-sized bucket exceeds factor x the mean of the baseline buckets."""

    KIND = "spike"

    def to_data(self, samples: SampleTable) -> dict[str, Any]:
        """``{keys: [[key, [first bucket, [[bucket, count]], bucket fired]]]}`` (buckets are time // window)."""
        return {"keys": [[k, [first, list(counts.items()), fired]] for k, (first, counts, fired) in self.state.items()]}

    def from_data(self, saved: StateData) -> dict[str, Any]:
        d = fields(saved.data, "state", ("keys",))

        def entry(v: object) -> tuple[int, dict[int, int], int]:
            first, pairs, fired = list_(v, "entry", 3)
            counts: dict[int, int] = {}
            for p in list_(pairs, "counts"):
                b, c = list_(p, "count", 2)
                counts[int_(b, "bucket")] = int_(c, "count", 1)
            if len(counts) != len(pairs):
                raise Malformed("counts: a bucket appears twice")
            return (int_(first, "first bucket"), counts, int_(fired, "bucket fired"))

        return {"state": keyed(d["keys"], "keys", len(self.spec.by), entry)}

    @staticmethod
    def _copy_entry(entry: Any) -> Any:
        return (entry[0], dict(entry[1]), entry[2])

    def __init__(self, members: list[Member], sample_size: int = 3) -> None:
        super().__init__(members, sample_size)
        self.nb = self.spec.baseline_ms // self.spec.window_ms
        # key -> (first bucket seen, {bucket: count}, bucket already fired)
        self.state: dict[Key, tuple[int, dict[int, int], int]] = {}

    def describe_key(self, key: Key, rule: str) -> dict[str, object] | None:
        got = self.state.get(key)
        if got is None:
            return None
        first, counts, _ = got
        top = max(counts, default=first)
        baseline = sum(counts.get(x, 0) for x in range(top - self.nb, top)) / self.nb
        return {"bucket_count": counts.get(top, 0), "baseline_mean": round(baseline, 3), "factor": self.spec.factor,
                "min_count": self.spec.min_count, "learning": top - first < self.nb, "window_ms": self.spec.window_ms}

    def process(self, batch: Batch, rows: np.ndarray) -> list[Fire]:
        spec = self.spec
        w, nb, min_count = spec.window_ms, self.nb, spec.min_count
        ts_l, rows_l = batch.ts[rows].tolist(), rows.tolist()
        state = self.state
        fires: list[Fire] = []
        for key, pos in keyed_rows(batch, rows, spec.by).groups().items():
            got = state.get(key)
            if got is None:
                first, counts, fired = ts_l[pos[0]] // w, {}, -1
                top = first
            else:
                first, counts, fired = got
                top = max(counts, default=first)
            for p in pos:
                t = ts_l[p]
                b = t // w
                if b > top:  # a new bucket: older ones than the baseline can go
                    top = b
                    for old in [x for x in counts if x < b - nb]:
                        del counts[old]
                c = counts[b] = counts.get(b, 0) + 1
                if c < min_count or fired == b or b - first < nb:
                    continue
                baseline = sum(counts.get(x, 0) for x in range(b - nb, b)) / nb
                if c > spec.factor * baseline:
                    event = batch.events[rows_l[p]]
                    fires.append(Fire(key, b * w, t, c, event, [event],
                                      {"baseline": round(baseline, 3), "factor": spec.factor}))
                    fired = b
            state[key] = (first, counts, fired)
        return fires


_KINDS: dict[type, type[Correlator]] = {
    ast.Threshold: ThresholdCorrelator, ast.Sequence: SequenceCorrelator, ast.Absent: AbsentCorrelator,
    ast.FirstSeen: FirstSeenCorrelator, ast.Spike: SpikeCorrelator,
}


def make_correlator(members: list[Member], sample_size: int) -> Correlator:
    """One correlator for `members` (equal share keys)."""
    kind = _KINDS.get(type(members[0].spec))
    if kind is None:
        raise TypeError(f"unknown correlation {members[0].spec!r}")
    return kind(members, sample_size)
