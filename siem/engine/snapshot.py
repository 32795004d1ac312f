"""Engine state as data: the snapshot format, version 6. Nothing in it can run code when it is read.

A snapshot is a short binary header and a msgpack body::

    magic    8 bytes  b"SIEMSNAP"
    version  u16      FORMAT_VERSION (6; versions 3-5 were pickles written by earlier releases)
    kind     u8       1: engine state (Engine.snapshot); other values are reserved
    length   u64      len(body)
    crc      u32      CRC-32 (zlib) of the 19 header bytes and the body
    body     msgpack  a map; the schemas are below and in README.md ("Snapshot format")

The body is read with msgpack's plain types only (str keys, no extension types but one: code 1, an int
beyond 64 bits as ASCII digits), then every field is checked against its schema before anything of the
engine changes: a field of the wrong type, a list of the wrong length, an unknown key, an index out of
range is refused with a StateError naming the place (``groups[2] (rules bf): keys[17]: ...``) and
counted in ``siem_state_refused_total{reason}``. A crafted snapshot can therefore give the engine only
state it could have built itself.

Engine body (kind 1)::

    max_ts    int                 newest event time seen (ms)
    wm        int                 watermark (ms)
    seq       int                 arrival sequence number of the next event
    pending   {events: events, ts: array, seq: array}   events waiting for the watermark
    samples   events              the events window state keeps, each once (referenced by index)
    groups    [{rules: {rule id: fingerprint}, kind: str, state: map}]   one per correlator
    suppress  {rule id: {fingerprint: str, until: [[key, int]]}}

An *event* is a map from str to JSON values (null, bool, int, float, str, arrays, maps with str keys);
*events* are a table of them, column by column (events_data).
An *array* is ``{dtype: "<i8", shape: [n], data: bytes}`` (n int64 values, little-endian). A window *key* is
the value of the rule's `by` field (str, int, float or bool), or an array of one value per field when it
has several (or none). Each correlator kind's ``state`` is documented at its ``to_data`` in windows.py.

Version policy. FORMAT_VERSION changes whenever a reader of the previous version would misread a body;
a reader accepts only the versions in READABLE and converts older ones in code. A snapshot of a newer
version is refused (downgrading needs ``siem run --start-fresh``). Pickled snapshots of releases before
version 6 are never unpickled by the daemon: ``siem state convert`` converts a trusted one once.
"""

from __future__ import annotations

import gc
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import msgpack
import numpy as np

from siem import metrics
from siem.errors import StateError
from siem.schema import Event

MAGIC = b"SIEMSNAP"
FORMAT_VERSION = 6
READABLE = (FORMAT_VERSION,)
ENGINE = 1
_KIND_NAMES = {ENGINE: "engine state"}
_HEAD = struct.Struct(">8sHBQ")
_CRC = struct.Struct(">I")
_BIGINT = 1  # the one msgpack extension type: an int beyond 64 bits, as ASCII digits
_MAX_BIGINT_DIGITS = 4300  # CPython's default int/str conversion limit
_MAX_DEPTH = 256  # nesting of JSON values inside an event
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol 2 or later (snapshot versions 3-5)

LEGACY_HINT = (
    "siem no longer unpickles state, because a crafted pickle runs code when it is loaded. If the file is "
    "your own, convert it once with `siem state convert --config CONFIG` (with the daemon stopped); or discard "
    "the window state with `siem run --start-fresh` (windows start empty: alerts in progress are lost)"
)


class SnapshotRefused(StateError):
    """A snapshot or checkpoint that was refused; `reason` is its siem_state_refused_total label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Malformed(Exception):
    """The body breaks its schema; the message says where. Turned into a counted SnapshotRefused by the
    function that reads the whole snapshot (Engine.restore)."""


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a snapshot is decoded: it makes millions of containers, none of
    them garbage, and each collection they trigger walks all of them (restoring 200,000 keys: ~10% faster)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def refuse(reason: str, message: str) -> SnapshotRefused:
    """The error to raise for a refused snapshot, counted once here."""
    metrics.STATE_REFUSED.labels(reason=reason).inc()
    return SnapshotRefused(reason, message)


# --- frame --------------------------------------------------------------------------------------------


def _default(obj: object) -> object:
    if isinstance(obj, int):  # msgpack calls this for ints beyond 64 bits
        return msgpack.ExtType(_BIGINT, str(obj).encode("ascii"))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"a {type(obj).__name__} cannot be stored in a snapshot (state holds JSON values only)")


def _ext(code: int, data: bytes) -> object:
    if code != _BIGINT:
        raise Malformed(f"unknown msgpack extension type {code}")
    if not 0 < len(data) <= _MAX_BIGINT_DIGITS or not data.lstrip(b"-").isdigit():
        raise Malformed("a big integer that is not decimal digits")
    return int(data)


def encode(kind: int, body: Mapping[str, object]) -> bytes:
    """Frame a body (plain data: see the module docstring) as a snapshot of `kind`."""
    payload = msgpack.packb(body, use_bin_type=True, default=_default)
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, kind, len(payload))
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def decode(blob: bytes, kind: int, where: str) -> dict[str, Any]:
    """The body of a snapshot of `kind`, as plain msgpack types; a counted SnapshotRefused otherwise."""
    fixed = _HEAD.size + _CRC.size
    if blob[:1] == bytes((_PICKLE_PROTO,)):
        raise refuse("legacy_pickle", f"{where} is a pickle written by an earlier siem (snapshot version 3-5). "
                                      + LEGACY_HINT)
    if len(blob) < fixed:
        raise refuse("truncated", f"{where} is truncated ({len(blob)} bytes, a snapshot header needs {fixed})")
    magic, version, got_kind, length = _HEAD.unpack_from(blob, 0)
    if magic != MAGIC:
        raise refuse("not_a_snapshot", f"{where} is not a siem snapshot (bad magic {magic!r})")
    if version not in READABLE:
        newer = "a newer" if version > FORMAT_VERSION else "an older"
        raise refuse("version", f"{where} has snapshot format {version}, written by {newer} siem; this one reads "
                                f"{', '.join(map(str, READABLE))}. Run the siem that wrote it, or discard the window "
                                "state with `siem run --start-fresh`")
    if got_kind != kind:
        raise refuse("malformed", f"{where} holds {_KIND_NAMES.get(got_kind, f'kind {got_kind}')}, "
                                  f"expected {_KIND_NAMES[kind]}")
    if len(blob) != fixed + length:
        raise refuse("truncated", f"{where} is truncated or padded: {len(blob)} bytes, its header says "
                                  f"{fixed + length}")
    (crc,) = _CRC.unpack_from(blob, _HEAD.size)
    view = memoryview(blob)
    if zlib.crc32(view[fixed:], zlib.crc32(view[: _HEAD.size])) != crc:
        raise refuse("checksum", f"{where} fails its checksum (corrupted)")
    try:
        body = msgpack.unpackb(view[fixed:], raw=False, strict_map_key=True, use_list=True, ext_hook=_ext)
    except Malformed as exc:
        raise refuse("malformed", f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises assorted errors (ValueError, StackError, ...)
        raise refuse("malformed", f"{where} has an undecodable body ({type(exc).__name__}: {exc})") from None
    if type(body) is not dict:
        raise refuse("malformed", f"{where}: the body is a {_name(body)}, expected a map")
    return body


# --- schema checks: each raises Malformed saying what it expected ----------------------------------------

SCALARS = frozenset((str, int, float, bool, type(None)))
_KEY_SCALARS = frozenset((str, int, float, bool))


def _name(v: object) -> str:
    return {dict: "map", list: "array", type(None): "nil"}.get(type(v), type(v).__name__)


def fields(v: object, what: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    """A map with exactly the `required` keys (and maybe some `optional` ones)."""
    m = map_(v, what)
    req = tuple(required)
    missing = [k for k in req if k not in m]
    if missing:
        raise Malformed(f"{what}: missing {', '.join(missing)}")
    extra = set(m) - set(req) - set(optional)
    if extra:
        raise Malformed(f"{what}: unknown field {', '.join(sorted(extra))}")
    return m


def map_(v: object, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        raise Malformed(f"{what}: expected a map, got {_name(v)}")
    for k in v:
        if type(k) is not str:
            raise Malformed(f"{what}: a key of type {_name(k)}, expected str")
    return v  # type: ignore[return-value]


def list_(v: object, what: str, n: int | None = None) -> list[Any]:
    if type(v) is not list:
        raise Malformed(f"{what}: expected an array, got {_name(v)}")
    if n is not None and len(v) != n:
        raise Malformed(f"{what}: expected {n} items, got {len(v)}")
    return v  # type: ignore[return-value]


_I64 = (-(2**63), 2**63 - 1)


def int_(v: object, what: str, lo: int = _I64[0], hi: int = _I64[1]) -> int:
    """An int in [lo, hi]; by default any int64 (what numpy arrays of times and counts can hold)."""
    if type(v) is not int:
        raise Malformed(f"{what}: expected an int, got {_name(v)}")
    if not lo <= v <= hi:
        raise Malformed(f"{what}: {v} is out of range [{lo}, {hi}]")
    return v


def str_(v: object, what: str) -> str:
    if type(v) is not str:
        raise Malformed(f"{what}: expected a str, got {_name(v)}")
    return v


def ints(v: object, what: str) -> list[int]:
    """An array of int64 values."""
    lst = list_(v, what)
    lo, hi = _I64
    for x in lst:
        if type(x) is not int or not lo <= x <= hi:
            raise Malformed(f"{what}: an item {x!r} that is not an int64")
    return lst


def strs(v: object, what: str) -> list[str]:
    lst = list_(v, what)
    for x in lst:
        if type(x) is not str:
            raise Malformed(f"{what}: an item of type {_name(x)}, expected str")
    return lst


def value(v: object, what: str, depth: int = 0) -> object:
    """A JSON value (what an event field holds)."""
    t = type(v)
    if t in SCALARS:
        return v
    if depth >= _MAX_DEPTH:
        raise Malformed(f"{what}: nested deeper than {_MAX_DEPTH}")
    if t is list:
        for x in v:  # type: ignore[attr-defined]
            if type(x) not in SCALARS:
                value(x, what, depth + 1)
    elif t is dict:
        for k, x in v.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                raise Malformed(f"{what}: a map key of type {_name(k)}")
            if type(x) not in SCALARS:
                value(x, what, depth + 1)
    else:
        raise Malformed(f"{what}: a value of type {_name(v)}")
    return v


def event(v: object, what: str) -> Event:
    """An event: a map from field name to JSON value."""
    if type(v) is not dict:
        raise Malformed(f"{what}: an event must be a map, got {_name(v)}")
    for k, x in v.items():  # type: ignore[attr-defined]
        if type(k) is not str:
            raise Malformed(f"{what}: an event field name of type {_name(k)}")
        if type(x) not in SCALARS:
            value(x, f"{what} field {k!r}", 1)
    return v  # type: ignore[return-value]


def events_data(evs: list[Event]) -> dict[str, object]:
    """Events as a table: ``{shapes: [[field]], shape: array, columns: [[column per field] per shape]}``.
    `shape` gives each event's shape (its field names, in order); the columns of a shape hold its events'
    values in order, each a plain array or, when that is shorter, ``{values: [value], codes: array}``
    (dictionary-encoded: the same strings in every sample were most of the bytes, and of the decoding)."""
    shape_ids: dict[tuple[str, ...], int] = {}
    shape_of = [shape_ids.setdefault(names, len(shape_ids)) for names in map(tuple, evs)]
    if len(shape_ids) == 1:
        groups = [evs]
    else:
        groups = [[] for _ in shape_ids]
        for e, i in zip(evs, shape_of):
            groups[i].append(e)
    columns = [[_column(list(c)) for c in zip(*map(dict.values, g))] if names else []
               for names, g in zip(shape_ids, groups)]
    return {"shapes": [list(names) for names in shape_ids], "shape": array_data(np.array(shape_of, np.int64)),
            "columns": columns}


_CODED = frozenset((str, type(None)))  # only these: 1, 1.0 and True are one dict key, but not one value


def _column(col: list[object]) -> object:
    head = col[:1024]  # a column of mostly distinct values (event.original) is not worth indexing
    try:
        if len(set(head)) * 2 > len(head) or not set(map(type, col)) <= _CODED:
            return col
    except TypeError:  # an unhashable value (a JSON array or map)
        return col
    index = dict.fromkeys(col)
    if len(index) * 2 > len(col):
        return col
    where = {v: k for k, v in enumerate(index)}
    return {"values": list(index), "codes": array_data(np.fromiter(map(where.__getitem__, col), np.int64, len(col)))}


def events(v: object, what: str) -> list[Event]:
    """The inverse of events_data, every field name and value checked."""
    m = fields(v, what, ("shapes", "shape", "columns"))
    shapes = [strs(names, f"{what}.shapes[{i}]") for i, names in enumerate(list_(m["shapes"], f"{what}.shapes"))]
    for i, names in enumerate(shapes):
        if len(set(names)) != len(names):
            raise Malformed(f"{what}.shapes[{i}]: a field name appears twice")
    shape_of = array(m["shape"], f"{what}.shape")
    if len(shape_of) and not (0 <= int(shape_of.min()) and int(shape_of.max()) < len(shapes)):
        raise Malformed(f"{what}.shape: a shape outside the {len(shapes)} shapes")
    counts = np.bincount(shape_of, minlength=len(shapes)).tolist() if len(shape_of) else [0] * len(shapes)
    columns = list_(m["columns"], f"{what}.columns", len(shapes))
    rows: list[list[Event]] = []
    for i, names in enumerate(shapes):
        cols = list_(columns[i], f"{what}.columns[{i}]", len(names))
        got = [_decoded(c, f"{what}.columns[{i}][{j}] ({names[j]!r})", counts[i]) for j, c in enumerate(cols)]
        rows.append([dict(zip(names, vals)) for vals in zip(*got)] if names else [{} for _ in range(counts[i])])
    if len(shapes) == 1:
        return rows[0]
    nexts = [iter(r) for r in rows]
    return [next(nexts[i]) for i in shape_of.tolist()]


def _decoded(c: object, what: str, n: int) -> list[object]:
    if type(c) is dict:
        m = fields(c, what, ("values", "codes"))
        values = list_(m["values"], f"{what}.values")
        for x in values:
            if type(x) not in _CODED:
                raise Malformed(f"{what}.values: a {_name(x)}, expected str or nil")
        codes = array(m["codes"], f"{what}.codes", n)
        if n and not (0 <= int(codes.min()) and int(codes.max()) < len(values)):
            raise Malformed(f"{what}.codes: a code outside the {len(values)} values")
        return [values[k] for k in codes.tolist()]
    col = list_(c, what, n)
    for x in col:
        if type(x) not in SCALARS:
            value(x, what)
    return col


def key_decoder(arity: int) -> Callable[[object], Any]:
    """Decodes a window key of a rule with `arity` by-fields: one value, or a tuple of `arity` values."""
    if arity == 1:
        def one(v: object) -> Any:
            if type(v) not in _KEY_SCALARS:
                raise Malformed(f"a key must be a str, int, float or bool, got {_name(v)}")
            return v
        return one

    def several(v: object) -> Any:
        if type(v) is not list or len(v) != arity:
            raise Malformed(f"a key must be an array of {arity} values, got {_name(v)}"
                            + (f" of {len(v)}" if type(v) is list else ""))
        for x in v:
            if type(x) not in _KEY_SCALARS:
                raise Malformed(f"a key value must be a str, int, float or bool, got {_name(x)}")
        return tuple(v)
    return several


def keys(v: object, what: str, arity: int) -> list[Any]:
    """An array of window keys of a rule with `arity` by-fields (key_decoder), checked in one pass."""
    lst = list_(v, what)
    if arity == 1:
        if all(type(k) in _KEY_SCALARS for k in lst):
            return lst
    elif all(type(k) is list and len(k) == arity and all(type(x) in _KEY_SCALARS for x in k) for k in lst):
        return [tuple(k) for k in lst]
    decode = key_decoder(arity)
    for i, k in enumerate(lst):
        try:
            decode(k)
        except Malformed as exc:
            raise Malformed(f"{what}[{i}]: {exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def keyed(v: object, what: str, arity: int, entry: Callable[[object], Any]) -> dict[Any, Any]:
    """``[[key, entry], ...]`` as a dict: keys decoded for `arity` by-fields, entries by `entry`."""
    rows = list_(v, what)
    key_of = key_decoder(arity)
    out: dict[Any, Any] = {}
    for i, row in enumerate(rows):
        try:
            if type(row) is not list or len(row) != 2:
                raise Malformed(f"expected [key, state], got {_name(row)}")
            out[key_of(row[0])] = entry(row[1])
        except Malformed as exc:
            raise Malformed(f"{what}[{i}]: {exc}") from None
    if len(out) != len(rows):
        raise Malformed(f"{what}: {len(rows) - len(out)} duplicate keys")
    return out


def array(v: object, what: str, n: int | None = None) -> np.ndarray:
    """An int64 vector ``{dtype: "<i8", shape: [n], data: bytes}``; the only dtype state holds."""
    m = fields(v, what, ("dtype", "shape", "data"))
    if m["dtype"] != "<i8":
        raise Malformed(f"{what}: dtype {m['dtype']!r}, expected '<i8'")
    shape = ints(m["shape"], f"{what}.shape")
    if len(shape) != 1 or shape[0] < 0:
        raise Malformed(f"{what}: shape {shape}, expected one dimension")
    data = m["data"]
    if type(data) is not bytes or len(data) != shape[0] * 8:
        raise Malformed(f"{what}: data must be {shape[0] * 8} bytes for shape {shape}")
    if n is not None and shape[0] != n:
        raise Malformed(f"{what}: {shape[0]} values, expected {n}")
    return np.frombuffer(data, dtype="<i8").astype(np.int64)  # a writable, native copy


def array_data(a: np.ndarray) -> dict[str, object]:
    a = np.ascontiguousarray(a, dtype="<i8")
    if a.ndim != 1:
        raise ValueError("snapshot arrays are one-dimensional")
    return {"dtype": "<i8", "shape": [len(a)], "data": a.tobytes()}


class SampleTable:
    """The events window state keeps, each stored once however many entries refer to it (samples are
    shared between rules and correlators; msgpack, unlike pickle, would write every reference in full)."""

    __slots__ = ("events", "_index")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._index: dict[int, int] = {}  # id(event) -> position; every event is alive while encoding

    def ref(self, e: Event) -> int:
        i = self._index.get(id(e))
        if i is None:
            i = self._index[id(e)] = len(self.events)
            self.events.append(e)
        return i

    def refs(self, evs: Iterable[Event]) -> list[int]:
        """ref() of each (one call for many: the per-call cost was a third of encoding 200,000 keys)."""
        index, events, out = self._index, self.events, []
        for e in evs:
            k = id(e)
            i = index.get(k)
            if i is None:
                i = index[k] = len(events)
                events.append(e)
            out.append(i)
        return out


@dataclass(frozen=True, slots=True)
class StateData:
    """A correlator's state as read from a snapshot, not yet checked: the correlator that adopts it checks it
    against its own rule (Correlator.from_data), so the key arity and step count are its own."""

    kind: str
    data: dict[str, Any]
    samples: list[Event]  # the snapshot's sample table
    where: str  # e.g. "groups[2] (rules bf, bf_strict)", for messages

    def sample_list(self, refs: np.ndarray, what: str) -> list[Event]:
        """The samples an int64 array of references names."""
        if len(refs) and not (0 <= int(refs.min()) and int(refs.max()) < len(self.samples)):
            raise Malformed(f"{what}: a sample reference outside the {len(self.samples)} samples")
        return [self.samples[i] for i in refs.tolist()]

    def sample(self, v: object) -> Event:
        if type(v) is not int or not 0 <= v < len(self.samples):
            raise Malformed(f"sample reference {v!r} is not an index of the {len(self.samples)} samples")
        return self.samples[v]  # type: ignore[index]
