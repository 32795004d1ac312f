"""A columnar micro-batch: one numpy array per referenced field, built lazily on first use.

Text fields are dictionary-encoded: ``codes`` (int32, one per row) index ``values`` (the batch's unique
values, ``None`` standing for a missing field). Predicates on text are evaluated once per unique value
and mapped to rows with one fancy-index (``lut[codes]``), so a regex or CIDR test runs on the distinct
values of a column, not on every row. Number fields are float64 arrays with NaN for missing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from itertools import repeat

import numpy as np
import orjson

from siem.schema import Event

_NAN = math.nan


SAMPLE_FIELDS = ("@timestamp", "event.original", "event.dataset", "event.action", "event.outcome", "host.name",
                 "source.ip", "user.name", "log.file.path", "event.ingested")


def sample(event: Event, extra: tuple[str, ...] = ()) -> Event:
    """What window state keeps of a contributing event (and alerts show): the raw line, the fields an
    analyst looks at first and `extra` (fields a message aggregates). Keeping whole events would multiply
    state size and checkpoint time. Samples are shared and must not be modified."""
    return {k: event[k] for k in ((*SAMPLE_FIELDS, *extra) if extra else SAMPLE_FIELDS) if k in event}


class KeywordColumn:
    __slots__ = ("codes", "values", "index", "_objects")

    def __init__(self, raw: list[object]) -> None:
        try:
            values = list(dict.fromkeys(raw))  # C loops only: ~25% faster than a setdefault generator
        except TypeError:  # an unhashable value (a list or object from a JSON input): compare its JSON text
            raw = [v if isinstance(v, Hashable) else _json_text(v) for v in raw]
            values = list(dict.fromkeys(raw))
        index = {v: i for i, v in enumerate(values)}
        self.codes = np.fromiter(map(index.__getitem__, raw), dtype=np.int32, count=len(raw))
        self.index = index  # value -> code
        self.values: list[object] = values
        self._objects: np.ndarray | None = None  # values as an object array, made on first take()

    def code_of(self, value: object) -> int:
        return self.index.get(value, -1)

    def take(self, rows: np.ndarray) -> list[object]:
        """The values of `rows` (None where missing), gathered in C."""
        if self._objects is None:
            self._objects = np.fromiter(self.values, dtype=object, count=len(self.values))
        return self._objects[self.codes[rows]].tolist()  # type: ignore[no-any-return]


def _json_text(v: object) -> str:
    return orjson.dumps(v, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _as_float(v: object) -> float:
    t = type(v)
    if t is int or t is float:
        return v  # type: ignore[return-value]
    if t is str:
        try:
            return float(v)  # type: ignore[arg-type]
        except ValueError:
            return _NAN
    if t is bool:
        return float(v)  # type: ignore[arg-type]
    return _NAN


class Batch:
    """Events in processing order plus their effective event times (int64 ms)."""

    __slots__ = ("events", "ts", "n", "_kw", "_num", "_samples", "memo", "none", "every", "_rows")

    def __init__(self, events: list[Event], ts: np.ndarray) -> None:
        self.events = events
        self.ts = ts
        self.n = len(events)
        self._kw: dict[str, KeywordColumn] = {}
        self._num: dict[str, np.ndarray] = {}
        self._samples: list[Event | None] = [None] * self.n
        self.memo: dict[object, np.ndarray] = {}  # compiled sub-expression -> mask, shared by all rules
        # the constant masks: predicates return these very objects where no row / every row matches, so
        # a rule's exclusion that excludes nothing costs an identity test (compiler.py)
        self.none = np.zeros(self.n, dtype=bool)
        self.every = np.ones(self.n, dtype=bool)
        self.none.flags.writeable = self.every.flags.writeable = False
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def keyword(self, field: str) -> KeywordColumn:
        col = self._kw.get(field)
        if col is None:
            col = self._kw[field] = KeywordColumn(list(map(dict.get, self.events, repeat(field, self.n))))
        return col

    def rows(self, mask: np.ndarray) -> np.ndarray:
        """The rows `mask` selects, found once per mask object: rules that end with the same mask (a
        variant whose exclusion excluded nothing) get the same array."""
        got = self._rows.get(id(mask))
        if got is None:
            got = self._rows[id(mask)] = (mask, np.flatnonzero(mask))  # the mask is kept: its id stays its own
        return got[1]

    def sample(self, row: int) -> Event:
        """The compact copy of event `row` that window state keeps (made once per batch, shared by rules)."""
        got = self._samples[row]
        if got is None:
            got = self._samples[row] = sample(self.events[row])
        return got

    def number(self, field: str) -> np.ndarray:
        col = self._num.get(field)
        if col is None:
            col = self._num[field] = np.fromiter(
                map(_as_float, map(dict.get, self.events, repeat(field, self.n))), dtype=np.float64, count=self.n
            )
        return col
