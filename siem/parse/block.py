"""Columnar parsing: a block of raw records of one format to an EventBlock (one array per field).

    parse_block(fmt, records, ctx, projection, input_name, constants) -> EventBlock    never raises
    EventBlock.from_events(events, fields) -> EventBlock       the same shape from event dicts
    Projection(fields, wanted)                                 what the loaded rules read (built by
                                                               siem.engine.runtime.Engine.projection)
    BlockParsers(workers, ctx, projection).map(chunks)         parse_block in worker processes

Parse only what is read. ``projection.fields`` names the fields the rules, their message templates,
suppression keys and alert samples read; the block has those columns only (``event.original``, the
raw line, always: samples and re-parsing need it; a field no row has may have no column). A column is
an object array with ``None`` where the event has no such field (the per-event form has no key there).

Prefilter. ``projection.wanted`` lists the (event.dataset, event.action) pairs some rule can match
(action ``None``: any action of that dataset), or is ``None`` when a rule can match any event. For
syslog blocks, a record that contains none of the literal needles of the wanted pairs
(``siem.parse.auth.DATASET_NEEDLES`` / ``ACTION_NEEDLES``, found with bytes.find over the whole block)
cannot become an event any rule matches: it is kept (``event.original``, and its ``@timestamp``, read
for the whole block at once with numpy from the fixed-width RFC 3164 header, since the watermark needs
every record's time) but not parsed further, and counted in ``siem_block_records_prefiltered_total``.
Records of any other shape (a PRI, an ISO time, a cut line...) go through the per-line parser.

In a prefiltered block, the sshd login lines (the bulk of brute-force traffic) of the common shape go
from one ``findall`` over the block straight into columns (``_sshd_logins``); without a prefilter that
costs as much as it saves. Everything else is parsed by the per-line reference
parsers (``siem.parse.parse_batch`` semantics: same limits, same counters, same events), projected to
the block's columns. tests/test_block.py shows, on
the shared datasets and on generated lines, that every projected field of every row equals the
reference's, and that a prefiltered row is never one a rule could match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Callable, Final, Iterable, Iterator, Mapping

import numpy as np

from siem import metrics
from siem.parse import MAX_LINE_BYTES, PARSERS, ParseContext, parse_batch
from siem.parse import timestamps as tsmod
from siem.parse.auth import ACTION_NEEDLES, DATASET_NEEDLES
from siem.parse.base import ip_or_none, now_ms
from siem.schema import Event

_MIN_TS: Final = -(2**62)  # the engine's "no usable time" (siem.engine.runtime)
_SYSLOG_FORMATS: Final = frozenset({"syslog", "rfc3164"})
_SEP: Final = b"\n"  # joins the records of a block for the needle search; no needle contains it


@dataclass(frozen=True, slots=True)
class Projection:
    """What the rules read: the fields to extract and the (dataset, action) pairs that can match.

    fields: every field a block must carry (always ``event.original``, ``error.message``).
    wanted: None (any event can match some rule: no prefilter) or (dataset, action-or-None) pairs.
    """

    fields: frozenset[str]
    wanted: frozenset[tuple[str, str | None]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", frozenset(self.fields) | {"event.original", "error.message"})

    def covers(self, other: Projection) -> bool:
        """Whether a block parsed for `self` holds everything `other` needs (a reload may need more)."""
        if not other.fields <= self.fields:
            return False
        if self.wanted is None:
            return True
        if other.wanted is None:
            return False
        return all(p in self.wanted or (p[0], None) in self.wanted for p in other.wanted)

    def needles(self) -> tuple[bytes, ...] | None:
        """Literal byte strings one of which a syslog record must contain to be parsed; None: parse all."""
        if self.wanted is None:
            return None
        out: list[bytes] = []
        for dataset, action in sorted(self.wanted, key=repr):
            got = ACTION_NEEDLES.get((dataset, action)) if action is not None else None
            if got is None:
                got = DATASET_NEEDLES.get(dataset)
            if got is None:
                return None  # a dataset whose records we cannot recognise from their text: parse all
            out.extend(n.encode() for n in got)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True, eq=False)
class EventBlock:
    """Events of one block as columns, in arrival order.

    ts:         int64 @timestamp per row (the engine's time; rows without a usable time hold -2**62)
    columns:    field -> object array of n values, None where the event has no such field; a field
                of the projection that no row has may have no column (read it as all None)
    projection: what the block was parsed for (a reader with a wider projection re-parses)
    inert:      None, or a bool per row: True where the row was prefiltered (no rule of the
                projection can match it; it holds only event.original and its time)
    """

    ts: np.ndarray
    columns: Mapping[str, np.ndarray]
    projection: Projection = field(default=Projection(frozenset()))
    inert: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.ts)

    def __len__(self) -> int:
        return len(self.ts)

    def column(self, field: str) -> np.ndarray:
        """The field's values (all None when no row has it)."""
        got = self.columns.get(field)
        if got is None:
            return object_array(self.ts.tolist()) if field == "@timestamp" else _nones(self.n)
        return got

    def failed(self) -> int:
        """Rows with an error.message (records that could not be parsed)."""
        got = self.columns.get("error.message")
        return 0 if got is None else int(np.not_equal(got, None).sum())

    def row(self, i: int) -> Event:
        """Row `i` as an event dict (only for rows that fire or are sampled: not on the hot path)."""
        ev: Event = {k: v for k, col in self.columns.items() if (v := col[i]) is not None}
        if "@timestamp" not in ev:
            ev["@timestamp"] = int(self.ts[i])
        return ev

    def with_column(self, field: str, values: list[object]) -> EventBlock:
        """The block with `field` set to `values` (one per row, None for none), e.g. event.ingested."""
        if len(values) != self.n:
            raise ValueError(f"{len(values)} values for a block of {self.n} rows")
        proj = Projection(self.projection.fields | {field}, self.projection.wanted)
        return EventBlock(self.ts, {**self.columns, field: object_array(values)}, proj, self.inert)

    def events(self) -> list[Event]:
        return [self.row(i) for i in range(self.n)]

    def take(self, rows: np.ndarray) -> EventBlock:
        """The rows `rows` (indices), in that order."""
        return EventBlock(self.ts[rows], {k: c[rows] for k, c in self.columns.items()}, self.projection,
                          None if self.inert is None else self.inert[rows])

    def concat(self, other: EventBlock) -> EventBlock:
        """self's rows then other's (columns missing on one side are None there)."""
        if not self.n:
            return other
        if not other.n:
            return self
        cols = {}
        for k in dict.fromkeys([*self.columns, *other.columns]):
            a, b = self.columns.get(k), other.columns.get(k)
            cols[k] = np.concatenate([_nones(self.n) if a is None else a, _nones(other.n) if b is None else b])
        proj = self.projection if self.projection == other.projection else Projection(
            self.projection.fields & other.projection.fields, None)
        inert = None
        if self.inert is not None or other.inert is not None:
            inert = np.concatenate([np.zeros(self.n, bool) if self.inert is None else self.inert,
                                    np.zeros(other.n, bool) if other.inert is None else other.inert])
        return EventBlock(np.concatenate([self.ts, other.ts]), cols, proj, inert)

    @classmethod
    def from_events(cls, events: list[Event], fields: Iterable[str] | None = None) -> EventBlock:
        """A block of event dicts: the columns `fields` (default: every key of any event)."""
        n = len(events)
        present = set().union(*events)
        fields = tuple(present if fields is None else fields)
        cols = {f: object_array(list(map(dict.get, events, repeat(f, n)))) for f in fields if f in present}
        cols.setdefault("@timestamp", object_array([ev.get("@timestamp") for ev in events]))
        return cls(_times(cols["@timestamp"]), cols, Projection(frozenset(fields)))

    @classmethod
    def empty(cls, fields: Iterable[str] = ()) -> EventBlock:
        return cls(np.empty(0, np.int64), {f: _nones(0) for f in fields}, Projection(frozenset(fields)))


def _nones(n: int) -> np.ndarray:
    return np.full(n, None, dtype=object)


def object_array(values: list[object]) -> np.ndarray:
    """An object array of exactly these values (lists stay elements, never a second dimension)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _times(col: np.ndarray) -> np.ndarray:
    try:
        return col.astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        return np.fromiter(map(_one_time, col.tolist()), dtype=np.int64, count=len(col))


def _one_time(t: object) -> int:
    if type(t) is int:
        return t
    try:
        return int(t)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return _MIN_TS


# --- parsing ---------------------------------------------------------------------------------------

def parse_block(
    fmt: str,
    records: list[bytes],
    ctx: ParseContext,
    projection: Projection,
    input_name: str = "",
    constants: Mapping[str, object] | None = None,
) -> EventBlock:
    """The events of `records` (raw records of format `fmt`, in arrival order) as an EventBlock.

    Row i is the event ``siem.parse.parse(fmt, records[i], ctx, input_name)`` restricted to
    ``projection.fields``, except for prefiltered syslog rows (module docstring), which hold only
    ``event.original`` and ``@timestamp``. `constants` fills fields the parser left unset (e.g.
    ``log.file.path`` of a file input). Counts parsed/failed records as parse_batch does."""
    n = len(records)
    fields = tuple(projection.fields)
    ts = np.empty(n, np.int64)
    full = np.ones(n, dtype=bool)  # rows the reference parser must take
    if n and fmt in _SYSLOG_FORMATS and (needles := projection.needles()) is not None:
        lens = np.fromiter(map(len, records), dtype=np.int64, count=n)
        starts = np.concatenate([[0], np.cumsum(lens[:-1] + 1)])
        buf = _SEP.join(records)
        full = np.zeros(n, dtype=bool)
        for needle in needles:
            full[np.searchsorted(starts, _find_all(buf, needle), "right") - 1] = True
        full |= lens > MAX_LINE_BYTES  # cut lines: parse notes the cut
        cheap = ~full
        if cheap.any():
            got = _rfc3164_times(buf, starts, lens, cheap, ctx)
            full |= got < 0  # a header of another shape: the reference parser decides
            cheap = ~full
            ts[cheap] = got[cheap]
    inert = ~full
    cheap_rows = np.flatnonzero(inert).tolist() if not full.all() else []
    cols: dict[str, np.ndarray] = {}

    def column(f: str) -> np.ndarray:
        got = cols.get(f)
        if got is None:
            got = cols[f] = _nones(n)
        return got

    lines: list[str] | None = None
    if fmt in _SYSLOG_FORMATS and n:
        buf = buf if cheap_rows else _SEP.join(records)
        if buf.count(_SEP) == n - 1:  # no record holds a line end: decode the block in one call
            lines = buf.decode("utf-8", "replace").split("\n")  # == each record decoded (LF is never in a
            # sequence the decoder replaces)
    if cheap_rows:
        if lines is not None:
            cols["event.original"] = object_array(lines)  # full rows: replaced below
        else:
            original = column("event.original")
            for i in cheap_rows:
                text = records[i].decode("utf-8", "replace")
                if text[-1:] == "\n":
                    text = text[:-2] if text[-2:] == "\r\n" else text[:-1]
                original[i] = text
        metrics.BLOCK_PREFILTERED.labels(format=fmt).inc(len(cheap_rows))
        if constants:
            for k, v in constants.items():
                if k in projection.fields:
                    column(k)[:] = [v] * n
    fast = 0
    if lines is not None and cheap_rows:  # without a prefilter the per-line path is as fast (measured)
        todo = np.flatnonzero(full & (np.fromiter(map(len, records), dtype=np.int64, count=n) <= MAX_LINE_BYTES))
        if len(todo):
            done = _sshd_logins(lines, todo.tolist(), ctx, projection.fields, column, ts, constants)
            if done:
                full[done] = False
                fast = len(done)
    n_cheap = len(cheap_rows) + fast
    if n_cheap:
        metrics.EVENTS_PARSED.labels(input=input_name, format=fmt if fmt in PARSERS else "unknown").inc(n_cheap)
    if n_cheap < n:
        rows = np.flatnonzero(full).tolist() if n_cheap else None
        events = parse_batch(fmt, [records[i] for i in rows] if rows is not None else records, ctx, input_name)
        if constants:
            for ev in events:
                for k, v in constants.items():
                    if k not in ev:
                        ev[k] = v
        present = set().union(*events)  # columns of fields no event has are left out (all None)
        for f in fields:
            if f not in present or f == "@timestamp":  # the times are block.ts
                continue
            vals = object_array(list(map(dict.get, events, repeat(f, len(events)))))
            if rows is None:
                cols[f] = vals
            else:
                column(f)[rows] = vals
        stamps = [ev.get("@timestamp") for ev in events]
        where = rows if rows is not None else slice(None)
        try:
            ts[where] = np.fromiter(stamps, dtype=np.int64, count=len(stamps))
        except (TypeError, ValueError, OverflowError):
            ts[where] = np.fromiter(map(_one_time, stamps), dtype=np.int64, count=len(stamps))
    if "event.original" not in cols:
        cols["event.original"] = _nones(n)
    return EventBlock(ts, cols, projection, inert if cheap_rows else None)


def _find_all(buf: bytes, needle: bytes) -> list[int]:
    """Offsets of `needle` in `buf`: bytes.find jumps between hits (a fast search in C), ~10x cheaper than
    testing each record with `in` or a regex when hits are a fraction of the records."""
    find = buf.find
    out: list[int] = []
    pos = find(needle)
    step = len(needle)
    while pos >= 0:
        out.append(pos)
        pos = find(needle, pos + step)
    return out


_LETTERS: Final = np.zeros(256, dtype=bool)
_LETTERS[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)] = True
_DIGITS: Final = np.zeros(256, dtype=bool)
_DIGITS[np.frombuffer(b"0123456789", np.uint8)] = True
_SHAPE_DIGITS: Final = (5, 7, 8, 10, 11, 13, 14)


def _rfc3164_times(buf: bytes, starts: np.ndarray, lens: np.ndarray, rows: np.ndarray, ctx: ParseContext) -> np.ndarray:
    """@timestamp of each row in `rows` (a mask) whose record starts with ``Mmm dd hh:mm:ss `` (the
    RFC 3164 header without PRI, year or fraction), from the 16 header bytes of all records at once;
    -1 for the other rows (and for rows not in `rows`). Minutes are resolved as the per-line parser
    resolves them (same cache, same year inference), once per distinct minute."""
    n = len(starts)
    out = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(rows & (lens >= 16))
    if not len(idx):
        return out
    data = np.frombuffer(buf, dtype=np.uint8)
    head = data[starts[idx][:, None] + np.arange(16)]
    ok = (_LETTERS[head[:, 0]] & _LETTERS[head[:, 1]] & _LETTERS[head[:, 2]]
          & (head[:, 3] == 32) & (_DIGITS[head[:, 4]] | (head[:, 4] == 32)) & (head[:, 6] == 32)
          & (head[:, 9] == 58) & (head[:, 12] == 58) & (head[:, 15] == 32))
    for c in _SHAPE_DIGITS:
        ok &= _DIGITS[head[:, c]]
    idx, head = idx[ok], head[ok]
    if not len(idx):
        return out
    secs = (head[:, 13].astype(np.int64) - 48) * 10 + (head[:, 14].astype(np.int64) - 48)
    keys, inverse = np.unique(np.ascontiguousarray(head[:, :12]).view("S12").ravel(), return_inverse=True)
    ref = now_ms(ctx)
    cache = tsmod.rfc3164_cache(ctx.tz, ref)
    bases = np.empty(len(keys), dtype=np.int64)
    for j, kb in enumerate(keys.tolist()):
        key = kb.decode("ascii")
        base = cache.get(key)
        if base is None:
            if len(cache) >= tsmod.CACHE_MAX:
                cache.clear()
            base = cache[key] = tsmod.rfc3164_minute_ms(key[:3], key[4:6], None, key[7:9], key[10:12], ctx.tz, ref)
        bases[j] = base if type(base) is int else -(2**62)
    got = bases[inverse.ravel()]
    good = (got != -(2**62)) & (secs <= 60)
    out[idx[good]] = got[good] + secs[good] * 1000
    return out


# --- sshd logins, the bulk of brute-force traffic, straight into columns -------------------------------
# The shape syslog._fast takes for them (RFC 3164 without PRI, a HOSTNAME, tag sshd/sshd-session with a
# PID, LOGIN with a protocol, a valid IP): each group is delimited by a space, so the split of a line is
# the one _fast's separate matches make. Any other line matches the empty alternative and goes to the
# per-line parser; findall over the block gives one tuple per line, in order.
_SSHD_LOGIN: Final = re.compile(
    r"^(?:(\w{3} [ \d]\d \d\d:\d\d):(\d\d) (\S*[^\s:\]]) (sshd|sshd-session)\[(\d{1,10})\]: "
    r"(Accepted|Failed) (\S+) for (?:(?:invalid|illegal) user )?(.*?) from (\S+) port (\d+)(?: (ssh\d))?(?:: .*)?"
    r"|.*)$", re.M)


def _sshd_logins(lines: list[str], rows: list[int], ctx: ParseContext, fields: frozenset[str],
                 column: Callable[[str], np.ndarray], ts: np.ndarray,
                 constants: Mapping[str, object] | None) -> list[int]:
    """Write the events of the sshd login lines among `rows` into the columns (and `ts`); their rows."""
    text = "\n".join([lines[i] for i in rows]) if len(rows) < len(lines) else "\n".join(lines)
    if "sshd" not in text or ("Failed " not in text and "Accepted " not in text):
        return []
    got = _SSHD_LOGIN.findall(text)
    if len(got) != len(rows):
        return []  # a line the pattern splits differently: leave the whole block to the per-line parser
    keys, secs, hosts, tags, pids, verbs, methods, users, addrs, ports, protos = zip(*got)
    cand = [j for j, v, p in zip(range(len(rows)), verbs, protos) if v and p]
    if not cand:
        return []
    ref = now_ms(ctx)
    cache = tsmod.rfc3164_cache(ctx.tz, ref)
    for key in {keys[j] for j in cand}:  # minutes resolved once, as the per-line parser resolves them
        if cache.get(key) is None:
            if len(cache) >= tsmod.CACHE_MAX:
                cache.clear()
            cache[key] = tsmod.rfc3164_minute_ms(key[:3], key[4:6], None, key[7:9], key[10:12], ctx.tz, ref)
    ips = {a: ip_or_none(a) for a in {addrs[j] for j in cand}}  # cached by ip_or_none
    keep = [j for j in cand if type(cache[keys[j]]) is int and secs[j] <= "60" and ips[addrs[j]] is not None]
    if not keep:
        return []
    done = [rows[j] for j in keep]
    pick = itemgetter(*keep) if len(keep) > 1 else lambda seq: (seq[keep[0]],)
    base = np.fromiter(map(cache.__getitem__, pick(keys)), dtype=np.int64, count=len(keep))
    ts[done] = base + np.fromiter(map(int, pick(secs)), dtype=np.int64, count=len(keep)) * 1000
    where = np.array(done, dtype=np.int64)
    want = fields.__contains__

    def put(f: str, values: Iterable[object]) -> None:
        column(f)[where] = object_array(list(values))

    if want("event.original"):
        put("event.original", [lines[r] for r in done])
    if want("host.name"):
        put("host.name", pick(hosts))
    if want("process.name"):
        put("process.name", pick(tags))
    if want("process.pid"):
        put("process.pid", map(int, pick(pids)))
    if want("message"):  # the text after "sshd[pid]: "
        put("message", [lines[r][len(k) + len(h) + len(t) + len(p) + 9:]
                        for r, k, h, t, p in zip(done, pick(keys), pick(hosts), pick(tags), pick(pids))])
    for f, v in (("event.dataset", "sshd"), ("event.action", "ssh_login"), ("event.category", "authentication")):
        if want(f):
            column(f)[where] = v
    if want("event.outcome"):
        put("event.outcome", ["success" if v == "Accepted" else "failure" for v in pick(verbs)])
    if want("user.name"):
        put("user.name", pick(users))
    if want("source.ip"):
        put("source.ip", map(ips.__getitem__, pick(addrs)))
    if want("source.port"):
        put("source.port", map(int, pick(ports)))
    if want("ssh.method"):
        put("ssh.method", [x.partition("/")[0] for x in pick(methods)])
    if want("ssh.protocol_version"):
        put("ssh.protocol_version", [x[3:] for x in pick(protos)])
    if constants:
        for k, v in constants.items():
            if want(k) and k not in _LOGIN_NAMES:
                column(k)[where] = v
    return done


_LOGIN_NAMES: Final = frozenset({
    "@timestamp", "event.original", "host.name", "process.name", "process.pid", "message", "event.dataset",
    "event.action", "event.category", "event.outcome", "user.name", "source.ip", "source.port", "ssh.method",
    "ssh.protocol_version"})


# --- several cores -----------------------------------------------------------------------------------


class BlockParsers:
    """parse_block in worker processes (parsing is Python code: threads would share one core).

        with BlockParsers(workers, ctx, projection, input_name) as parsers:
            for block in parsers.map((fmt, records, constants) for ...):   # in submission order
                engine.process_block(block)

    At most 2 x workers blocks are in flight (bounded memory; the reader waits for the slowest).
    Workers start with the forkserver method (safe in a process with threads, such as the daemon).
    Metrics counted by the workers' parsers stay in the workers: the caller counts blocks it receives
    (``siem_events_parsed_total`` / ``_failed_total`` are incremented here from each returned block)."""

    def __init__(self, workers: int, ctx: ParseContext, projection: Projection, input_name: str = "",
                 start_method: str = "forkserver") -> None:
        import concurrent.futures  # noqa: PLC0415 - only when several cores are asked for
        import multiprocessing  # noqa: PLC0415

        if workers < 1:
            raise ValueError("BlockParsers needs at least one worker")
        self.workers = workers
        self.ctx, self.projection, self.input_name = ctx, projection, input_name
        self._pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start_method))

    def map(self, chunks: Iterable[tuple[str, list[bytes], Mapping[str, object] | None]]) -> Iterator[EventBlock]:
        """The blocks of `chunks` ((format, records, constants) each), in order."""
        from collections import deque  # noqa: PLC0415

        inflight: deque = deque()
        for fmt, records, constants in chunks:
            inflight.append((fmt, self._pool.submit(parse_block, fmt, records, self.ctx, self.projection,
                                                    self.input_name, constants)))
            if len(inflight) >= 2 * self.workers:
                yield self._counted(*inflight.popleft())
        while inflight:
            yield self._counted(*inflight.popleft())

    def _counted(self, fmt: str, future: object) -> EventBlock:
        block: EventBlock = future.result()  # type: ignore[attr-defined]
        label = fmt if fmt in PARSERS else "unknown"
        failed = block.failed()
        if block.n - failed:
            metrics.EVENTS_PARSED.labels(input=self.input_name, format=label).inc(block.n - failed)
        if failed:
            metrics.EVENTS_FAILED.labels(input=self.input_name, format=label).inc(failed)
        return block

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BlockParsers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
