"""JSON lines: exact loading, bounded flattening, generic ECS JSON and journald records.

``loads_exact`` parses with orjson and falls back to the stdlib parser with number hooks when
orjson would lose information (integers beyond 64 bits become floats there) or refuses the text
(numbers overflowing a double, lone surrogates): integers beyond int64 and non-finite numbers are
kept as their literal text, lone surrogates become U+FFFD. Duplicate keys: the last one wins.
Nesting deeper than the parsers allow is an error.

``flatten`` turns nested objects into dotted keys with hard caps (keys per record, value length,
depth); lists are flattened without indices and several values at one path are joined with ", ".
"""

from __future__ import annotations

import json
from typing import Final

import orjson

from siem.parse import timestamps as ts
from siem.parse.auth import dispatch
from siem.parse.base import ParseContext, clip, error_event, note, now_ms
from siem.parse.syslog import PRI_FIELDS
from siem.schema import FIELDS, LONG, Event

MAX_KEYS: Final = 500
MAX_VALUE_CHARS: Final = 8 * 1024
MAX_DEPTH: Final = 32
MAX_KEY_CHARS: Final = 256
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_DIGITS_TO_ZERO: Final = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # ASCII digit -> "0", else " "
_LONG_RUN: Final = b"0" * 19


class JSONError(ValueError):
    """The text is not JSON this parser accepts."""


def _int_hook(s: str) -> int | str:
    v = int(s)
    return v if _INT64_MIN <= v <= _INT64_MAX else s


def _float_hook(s: str) -> float | str:
    v = float(s)
    return v if v - v == 0.0 else s  # inf/nan -> keep the literal


def _const_hook(s: str) -> str:
    return s  # NaN, Infinity, -Infinity


def _clean(obj: object, depth: int = 0) -> object:
    """Replace lone surrogates (only the stdlib parser lets them through)."""
    if isinstance(obj, str):
        if obj.isascii():
            return obj
        return obj.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if depth > MAX_DEPTH * 4:
        return obj
    if isinstance(obj, dict):
        return {_clean(k, depth + 1): _clean(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v, depth + 1) for v in obj]
    return obj


_STD_DECODER: Final = json.JSONDecoder(parse_int=_int_hook, parse_float=_float_hook, parse_constant=_const_hook)


def _has_long_digit_run(text: str) -> bool:
    """19 or more ASCII digits in a row: maybe an integer orjson would turn into a float. One C pass over
    the bytes (a regex took 15 times as long on CloudTrail records, which are full of digits)."""
    return _LONG_RUN in text.encode("utf-8", "surrogatepass").translate(_DIGITS_TO_ZERO)


def loads_exact(text: str) -> object:
    """JSON text to Python objects without silent precision loss; raises JSONError."""
    if not _has_long_digit_run(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return _clean(_STD_DECODER.decode(text))
    except RecursionError:
        raise JSONError("JSON nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, int() of absurd literals
        raise JSONError(f"invalid JSON: {clip(str(e), 120)}") from None


def scalar_text(v: object) -> str:
    """A JSON scalar as keyword text: true/false, decimal numbers, strings as they are."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return v
    return repr(v) if isinstance(v, float) else str(v)


def _dump(obj: object) -> str:
    """Compact JSON text of a subtree that is too deep to flatten."""
    try:
        return orjson.dumps(obj).decode()
    except orjson.JSONEncodeError:
        return "(nested too deeply to keep)"


class Flattener:
    """Collects dotted keys from nested JSON with caps; one per record."""

    __slots__ = ("values", "keys", "dropped_keys", "cut_values", "too_deep", "stringify")

    def __init__(self, stringify: bool, keys_used: int = 0) -> None:
        self.values: dict[str, list[object]] = {}
        self.keys = keys_used
        self.dropped_keys = 0
        self.cut_values = 0
        self.too_deep = 0
        self.stringify = stringify

    def add(self, prefix: str, obj: object, depth: int = 0) -> None:
        if isinstance(obj, dict):
            if depth >= MAX_DEPTH:
                self.too_deep += 1
                self._leaf(prefix, _dump(obj))
                return
            for k, v in obj.items():
                k = k if isinstance(k, str) else str(k)
                if len(k) > MAX_KEY_CHARS:
                    self.dropped_keys += 1
                    continue
                self.add(f"{prefix}.{k}" if prefix else k, v, depth + 1)
        elif isinstance(obj, list):
            if depth >= MAX_DEPTH:
                self.too_deep += 1
                self._leaf(prefix, _dump(obj))
                return
            for v in obj:
                self.add(prefix, v, depth + 1)
        elif obj is not None:
            self._leaf(prefix, obj)

    def _leaf(self, key: str, value: object) -> None:
        if self.stringify or isinstance(value, str):
            value = scalar_text(value)
            if len(value) > MAX_VALUE_CHARS:
                value = value[:MAX_VALUE_CHARS]
                self.cut_values += 1
        got = self.values.get(key)
        if got is not None:
            got.append(value)
            return
        if self.keys >= MAX_KEYS:
            self.dropped_keys += 1
            return
        self.keys += 1
        self.values[key] = [value]

    def into(self, ev: Event) -> None:
        """Write the collected values (joined) into ev and note what the caps cut."""
        for key, vals in self.values.items():
            if len(vals) == 1:
                ev[key] = vals[0]
            else:
                joined = ", ".join(scalar_text(v) for v in vals)
                if len(joined) > MAX_VALUE_CHARS:
                    joined = joined[:MAX_VALUE_CHARS]
                    self.cut_values += 1
                ev[key] = joined
        if self.dropped_keys:
            note(ev, f"{self.dropped_keys} fields dropped (more than {MAX_KEYS} keys or key longer than "
                     f"{MAX_KEY_CHARS})")
        if self.cut_values:
            note(ev, f"{self.cut_values} values cut to {MAX_VALUE_CHARS} characters")
        if self.too_deep:
            note(ev, f"{self.too_deep} values nested deeper than {MAX_DEPTH} kept as JSON text")


# --- generic ECS JSON --------------------------------------------------------------------------------


def timestamp_value(v: object, ctx: ParseContext) -> int | str:
    """@timestamp as ISO 8601 text or epoch ms number (or digits)."""
    if isinstance(v, bool):
        return "@timestamp is a boolean"
    if isinstance(v, (int, float)):
        return ts.epoch_number_ms(v)
    if isinstance(v, str):
        if v.isascii() and v.isdigit() and len(v) < 19:
            return ts.epoch_number_ms(int(v))
        return ts.iso_ms(v, ctx.tz)
    return f"@timestamp has type {type(v).__name__}"


def parse_json(text: str, ctx: ParseContext) -> Event:
    """ECS JSON lines: nested objects flattened to dotted names; @timestamp ISO 8601 or epoch ms.

    Schema LONG fields given as digit strings become ints. Missing @timestamp: reference time + error.
    """
    try:
        obj = loads_exact(text)
    except JSONError as e:
        return error_event(text, "json", str(e), ctx)
    if not isinstance(obj, dict):
        return error_event(text, "json", f"JSON value is a {type(obj).__name__}, not an object", ctx)
    fl = Flattener(stringify=False)
    fl.add("", obj)
    ev: Event = {}
    fl.into(ev)
    for key, value in list(ev.items()):
        if isinstance(value, str) and FIELDS.get(key) == LONG and value.isascii() and value.isdigit() and len(value) < 19:
            ev[key] = int(value)
    stamp = ev.get("@timestamp")
    got = timestamp_value(stamp, ctx) if stamp is not None else "missing @timestamp; reference time used"
    if type(got) is int:
        ev["@timestamp"] = got
    else:
        ev["@timestamp"] = now_ms(ctx)
        note(ev, str(got))
    ev["event.original"] = text
    if not isinstance(ev.get("event.dataset"), str):
        ev["event.dataset"] = "json"
    return ev


# --- journald ----------------------------------------------------------------------------------------

_JOURNALD_EXTRA: Final = {
    "_SYSTEMD_UNIT": "journald.systemd_unit",
    "_UID": "journald.uid",
    "_GID": "journald.gid",
    "_COMM": "journald.comm",
    "_EXE": "journald.exe",
    "_TRANSPORT": "journald.transport",
}


def _jstr(v: object) -> str | None:
    """A journald field value as text: strings as-is, byte arrays decoded, repeated fields: the first."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and v:
        if all(isinstance(b, int) and 0 <= b < 256 for b in v):
            return bytes(v).decode("utf-8", "replace")
        return _jstr(v[0])
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def parse_journald(text: str, ctx: ParseContext) -> Event:
    """One ``journalctl -o json`` object: the same event as the syslog line of that message.

    Differences from syslog, by design: ``event.original`` (the JSON), ``log.syslog.*`` (from
    PRIORITY / SYSLOG_FACILITY) and ``journald.*`` (trusted fields: systemd_unit, uid, gid, comm, exe,
    transport). Generic messages get event.dataset "journald".
    """
    try:
        obj = loads_exact(text)
    except JSONError as e:
        return error_event(text, "journald", str(e), ctx)
    if not isinstance(obj, dict):
        return error_event(text, "journald", f"JSON value is a {type(obj).__name__}, not an object", ctx)
    ev: Event = {"@timestamp": 0, "event.original": text}
    rt = _jstr(obj.get("__REALTIME_TIMESTAMP"))
    if rt is not None and rt.isascii() and rt.isdigit() and len(rt) < 19:
        ev["@timestamp"] = int(rt) // 1000
    else:
        ev["@timestamp"] = now_ms(ctx)
        note(ev, "journald: missing or invalid __REALTIME_TIMESTAMP; reference time used")
    host = _jstr(obj.get("_HOSTNAME"))
    if host:
        ev["host.name"] = host
    elif ctx.host:
        ev["host.name"] = ctx.host
    prog = _jstr(obj.get("SYSLOG_IDENTIFIER")) or _jstr(obj.get("_COMM"))
    pid = _jstr(obj.get("_PID")) or _jstr(obj.get("SYSLOG_PID"))
    if pid:
        if pid.isascii() and pid.isdigit() and len(pid) <= 10:
            ev["process.pid"] = int(pid)
        else:
            ev["log.syslog.procid"] = pid
    msg = _jstr(obj.get("MESSAGE"))
    if msg is None:
        msg = ""
        note(ev, "journald: MESSAGE missing or not text")
    ev["message"] = msg
    prio = _jstr(obj.get("PRIORITY"))
    fac = _jstr(obj.get("SYSLOG_FACILITY"))
    if prio is not None and prio.isascii() and prio.isdigit() and int(prio) < 8:
        f = int(fac) if fac is not None and fac.isascii() and fac.isdigit() and int(fac) < 24 else 1
        ev.update(PRI_FIELDS[f * 8 + int(prio)])
    for src, dst in _JOURNALD_EXTRA.items():
        v = _jstr(obj.get(src))
        if v is not None:
            ev[dst] = v
    if not prog:
        ev["event.dataset"] = "journald"
        return ev
    ev["process.name"] = prog
    dispatch(ev, prog, msg, "journald")
    return ev
