"""A columnar micro-batch: one numpy array per referenced field, built lazily on first use.

Text fields are dictionary-encoded: ``codes`` (int32, one per row) index ``values`` (the batch's unique
values, ``None`` standing for a missing field). Predicates on text are evaluated once per unique value
and mapped to rows with one fancy-index (``lut[codes]``), so a regex or CIDR test runs on the distinct
values of a column, not on every row. Number fields are float64 arrays with NaN for missing.

A batch is built from event dicts or from an EventBlock (siem.parse.block: one array per field, as the
block parser produces them). From a block, columns are taken from its arrays, samples are gathered
from its columns, and ``events[row]`` makes an event dict only for the rows a window or an alert
reads (cached per batch): no dict per event on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from itertools import repeat

import numpy as np
import orjson

from siem.parse.block import EventBlock
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


class _Rows:
    """``batch.events`` of a block-backed batch: row i as an event dict, made on first access."""

    __slots__ = ("block", "made")

    def __init__(self, block: EventBlock) -> None:
        self.block = block
        self.made: dict[int, Event] = {}

    def __len__(self) -> int:
        return self.block.n

    def __getitem__(self, row: int) -> Event:
        got = self.made.get(row)
        if got is None:
            got = self.made[row] = self.block.row(row)
        return got


class Batch:
    """Events in processing order plus their effective event times (int64 ms)."""

    __slots__ = ("events", "block", "ts", "n", "_kw", "_num", "_samples", "memo", "none", "every", "_rows",
                 "_sample_cols")

    def __init__(self, events: list[Event] | EventBlock, ts: np.ndarray) -> None:
        if isinstance(events, EventBlock):
            self.block: EventBlock | None = events
            self.events: list[Event] | _Rows = _Rows(events)
        else:
            self.block = None
            self.events = events
        self.ts = ts
        self.n = len(events)
        self._sample_cols: list[tuple[str, list[object]]] | None = None
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
            col = self._kw[field] = KeywordColumn(self._values(field))
        return col

    def _values(self, field: str) -> list[object]:
        """The field's value per row, None where missing."""
        if self.block is None:
            return list(map(dict.get, self.events, repeat(field, self.n)))  # type: ignore[arg-type]
        got = self.block.columns.get(field)
        if got is None:
            if field == "@timestamp":
                return self.block.ts.tolist()
            return [None] * self.n
        return got.tolist()  # type: ignore[no-any-return]

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
            if self.block is None:
                got = self._samples[row] = sample(self.events[row])  # type: ignore[arg-type]
            else:
                got = self._samples[row] = self._block_sample(row)
        return got

    def _block_sample(self, row: int) -> Event:
        cols = self._sample_cols
        if cols is None:  # the block's sample columns as lists, once per batch (list indexing is the cheapest)
            block = self.block
            assert block is not None
            cols = self._sample_cols = [(k, block.column(k).tolist()) for k in SAMPLE_FIELDS
                                        if k in block.columns or k == "@timestamp"]
        return {k: v for k, col in cols if (v := col[row]) is not None}

    def number(self, field: str) -> np.ndarray:
        col = self._num.get(field)
        if col is None:
            col = self._num[field] = np.fromiter(map(_as_float, self._values(field)), dtype=np.float64, count=self.n)
        return col
