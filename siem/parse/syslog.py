"""Syslog: RFC 3164 (BSD, also the traditional file format), RFC 5424, and auto-detection.

Event: ``@timestamp``, ``event.original``, ``host.name`` (HOSTNAME, else ctx.host), ``process.name``
(TAG / APP-NAME), ``process.pid`` (int, when the PID is numeric; else ``log.syslog.procid``),
``message`` (the text after the tag), ``log.syslog.*`` (priority, facility/severity code and name,
msgid, version), ``sd.<SD-ID>.<param>`` for RFC 5424 structured data, then whatever the program parser
(siem.parse.auth) adds. Generic messages get ``event.dataset = "syslog"``.

Tolerated, with ``error.message`` describing it: invalid PRI (``<>``, ``<192>``, ``<00013>``...; the
rest is still parsed), no or invalid timestamp (``@timestamp`` is the reference time), unknown month
names, RFC 5424 VERSION other than 1, over-long header fields (cut to the RFC maximum), broken
structured data (params read so far are kept, the rest stays in ``message``).
"""

from __future__ import annotations

import re
import time
from typing import Final

from siem.parse import timestamps as ts
from siem.parse.auth import INVALID, LOGIN, PROGRAMS, dispatch
from siem.parse.base import IP_CACHE, ParseContext, ip_or_none, note
from siem.schema import Event

_FACILITIES: Final = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4", "local5",
    "local6", "local7",
)
SEVERITIES: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
# PRI value -> the five log.syslog fields it stands for
PRI_FIELDS: Final[tuple[tuple[tuple[str, object], ...], ...]] = tuple(
    (
        ("log.syslog.priority", p),
        ("log.syslog.facility.code", p >> 3),
        ("log.syslog.facility.name", _FACILITIES[p >> 3]),
        ("log.syslog.severity.code", p & 7),
        ("log.syslog.severity.name", SEVERITIES[p & 7]),
    )
    for p in range(192)
)

_HOT: Final = re.compile(
    r"(?:<(\d{1,3})>)?"  # 1 PRI
    r"((\w{3}) ( ?\d{1,2})(?: (\d{4}))? (\d\d):(\d\d)):(\d\d)(?:\.(\d{1,9}))? "  # 2 minute key, 3-9
    r"(?:(\S*[^\s:\]]) )?"  # 10 HOSTNAME (a token that does not end like a tag)
    r"([^\s\[\]:]+)(?:\[(\d{1,10})\])?: ?"  # 11 TAG, 12 PID
)
_HOT_MATCH = _HOT.match

_PRI_ANY: Final = re.compile(r"<([^>]{0,6})>")
_TS3164: Final = re.compile(r"(\w{3}) +(\d{1,2})(?: (\d{4}))? (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?= |$)")
_TSISO: Final = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:[Zz]|[+-]\d\d(?::?\d\d)?)?(?= |$)")
_TAG: Final = re.compile(r"([^\s\[\]:]+)(?:\[([^\]]{0,128})\])?: ?")
_TOKEN: Final = re.compile(r"(\S+) ?")
_LOOKS_5424: Final = re.compile(r"<[^>]{0,6}>\d{1,2} \S")


_time_ns = time.time_ns


def _wall_ms() -> int:
    return _time_ns() // 1_000_000


def _set_pri(ev: Event, pri: str) -> None:
    """Validate a PRI (the text between < and >) and add its fields, or note the problem."""
    if pri.isascii() and pri.isdigit() and len(pri) <= 3 and (pri == "0" or pri[0] != "0") and int(pri) < 192:
        ev.update(PRI_FIELDS[int(pri)])
    else:
        note(ev, f"invalid PRI <{pri[:8]}>")


def _set_pid(ev: Event, pid: str) -> None:
    if pid.isascii() and pid.isdigit() and len(pid) <= 10:
        ev["process.pid"] = int(pid)
    else:
        ev["log.syslog.procid"] = pid


# --- RFC 3164 --------------------------------------------------------------------------------------


# The commonest shape of all (traditional file format and most senders): no year, no fraction,
# a HOSTNAME and a TAG. Group 2 is the minute, the key of the timestamp cache.
# (An optional PRI group would triple the cost of the match: two patterns instead.)
_FAST_TAIL: Final = r"(\w{3} [ \d]\d \d\d:\d\d):(\d\d) (\S+) ([^\s\[\]:]+)(?:\[(\d{1,10})\])?: "
_FAST_MATCH = re.compile(r"()" + _FAST_TAIL).match
_FAST_PRI_MATCH = re.compile(r"<(\d{1,3})>" + _FAST_TAIL).match
_LOGIN_MATCH = LOGIN.fullmatch
_INVALID_MATCH = INVALID.fullmatch
_IP_CACHE = IP_CACHE
_PRI_OK: Final[dict[str, tuple[tuple[str, object], ...]]] = {str(p): PRI_FIELDS[p] for p in range(192)}


def _hot_event(text: str, m: re.Match[str], ctx: ParseContext, generic: str) -> Event:
    pri, key, mon, day, year, hh, mi, ss, frac, host, tag, pid = m.groups()
    ref = ctx.now_ms if ctx.now_ms is not None else _wall_ms()
    cache = ts.rfc3164_cache(ctx.tz, ref)
    base = cache.get(key)
    if base is None:
        if len(cache) >= ts.CACHE_MAX:
            cache.clear()
        base = cache[key] = ts.rfc3164_minute_ms(mon, day, year, hh, mi, ctx.tz, ref)
    msg = text[m.end():]
    ev: Event = {
        "@timestamp": 0,
        "event.original": text,
        "process.name": tag,
        "message": msg,
    }
    s = int(ss)
    if type(base) is int and s <= 60:
        ev["@timestamp"] = base + s * 1000 + (int((frac + "00")[:3]) if frac else 0)
    else:
        ev["@timestamp"] = ref
        note(ev, f"invalid timestamp: {base if type(base) is str else f'second {s}'}")
    if host is not None:
        ev["host.name"] = host
    elif ctx.host:
        ev["host.name"] = ctx.host
    if pid is not None:
        ev["process.pid"] = int(pid)
    if pri is not None:
        fields = _PRI_OK.get(pri)
        if fields is not None:
            ev.update(fields)
        else:
            note(ev, f"invalid PRI <{pri}>")
    dispatch(ev, tag, msg, generic)
    return ev


def _fast(text: str, ctx: ParseContext) -> Event | None:
    """The event of a line of the commonest shape, or None to take the general path."""
    m = _FAST_PRI_MATCH(text) if text.startswith("<") else _FAST_MATCH(text)
    if m is None:
        return None
    pri, key, ss, host, tag, pid = m.groups()
    if host[-1] == ":" or host[-1] == "]":
        return None  # no HOSTNAME: what looked like one is the tag
    ref = ctx.now_ms
    if ref is None:
        ref = _time_ns() // 1_000_000
    ltz, start, end, cache = ts.last_cache
    if ltz is not ctx.tz or not start <= ref < end:
        cache = ts.rfc3164_cache(ctx.tz, ref)
    base = cache.get(key)
    if base is None:
        return None  # first line of this minute: the general path validates and fills the cache
    s = int(ss)
    if type(base) is not int or s > 60:
        return None
    msg = text[m.end():]
    fields: tuple[tuple[str, object], ...] = ()
    if pri:
        got = _PRI_OK.get(pri)
        if got is None:
            return None
        fields = got
    ev: Event
    sshd = tag == "sshd" or tag == "sshd-session"  # OpenSSH >= 9.8 logs authentication as sshd-session
    if sshd and pid is not None and (msg[:7] == "Failed " or msg[:9] == "Accepted "):
        # The bulk of brute-force traffic: the whole event in one literal, same fields as auth.sshd gives.
        lm = _LOGIN_MATCH(msg)
        if lm is not None:
            verb, method, user, addr, port, proto = lm.groups()
            ip = _IP_CACHE.get(addr, "")
            if ip == "":
                ip = ip_or_none(addr)
            if ip is not None and proto is not None:
                ev = {
                    "@timestamp": base + s * 1000,
                    "event.original": text,
                    "host.name": host,
                    "process.name": tag,
                    "process.pid": int(pid),
                    "message": msg,
                    "event.dataset": "sshd",
                    "event.action": "ssh_login",
                    "event.category": "authentication",
                    "event.outcome": "success" if verb == "Accepted" else "failure",
                    "user.name": user,
                    "source.ip": ip,
                    "source.port": int(port),
                    "ssh.method": method.partition("/")[0],
                    "ssh.protocol_version": proto[3:],
                }
                if pri:
                    ev.update(fields)
                return ev
    elif sshd and pid is not None and msg[:13] == "Invalid user ":
        im = _INVALID_MATCH(msg)
        if im is not None:
            user, addr, port = im.groups()
            ip = _IP_CACHE.get(addr, "")
            if ip == "":
                ip = ip_or_none(addr)
            if ip is not None and port is not None:
                ev = {
                    "@timestamp": base + s * 1000,
                    "event.original": text,
                    "host.name": host,
                    "process.name": tag,
                    "process.pid": int(pid),
                    "message": msg,
                    "event.dataset": "sshd",
                    "event.action": "invalid_user",
                    "event.category": "authentication",
                    "event.outcome": "failure",
                    "user.name": user,
                    "source.ip": ip,
                    "source.port": int(port),
                }
                if pri:
                    ev.update(fields)
                return ev
    ev = {
        "@timestamp": base + s * 1000,
        "event.original": text,
        "host.name": host,
        "process.name": tag,
        "message": msg,
    }
    if pid is not None:
        ev["process.pid"] = int(pid)
    if pri:
        ev.update(fields)
    h = PROGRAMS.get(tag)
    if h is not None and not msg.startswith("message repeated "):
        h(ev, msg, tag)
    else:
        dispatch(ev, tag, msg, "syslog")
    return ev


def _slow_3164(text: str, ctx: ParseContext, generic: str) -> Event:
    """Every RFC 3164 shape the hot regex does not take: odd PRI, ISO timestamps, no host/tag..."""
    ref = ctx.now_ms if ctx.now_ms is not None else _wall_ms()
    ev: Event = {"@timestamp": ref, "event.original": text}
    pos = 0
    if text.startswith("<"):
        pm = _PRI_ANY.match(text)
        if pm is not None:
            _set_pri(ev, pm.group(1))
            pos = pm.end()
    stamp: int | str | None = None
    tm = _TS3164.match(text, pos)
    if tm is not None:
        mon, day, year, hh, mi, ss, frac = tm.groups()
        stamp = ts.rfc3164_minute_ms(mon, day, year, hh, mi, ctx.tz, ref)
        if type(stamp) is int:
            s = int(ss)
            stamp = stamp + s * 1000 + (int((frac + "00")[:3]) if frac else 0) if s <= 60 else f"second {s}"
        pos = tm.end()
    else:
        im = _TSISO.match(text, pos)
        if im is not None:
            stamp = ts.iso_ms(im.group(0), ctx.tz)
            pos = im.end()
    if stamp is None:
        note(ev, "no syslog timestamp; reference time used")
    elif type(stamp) is str:
        note(ev, f"invalid timestamp: {stamp}")
    else:
        ev["@timestamp"] = stamp
    if pos < len(text) and text[pos] == " ":
        pos += 1
    host: str | None = None
    tag: str | None = None
    if stamp is not None:
        tg = _TAG.match(text, pos)
        if tg is None:
            hm = _TOKEN.match(text, pos)
            if hm is not None:
                host = hm.group(1)
                pos = hm.end()
                tg = _TAG.match(text, pos)
        if tg is not None:
            tag = tg.group(1)
            if tg.group(2) is not None:
                _set_pid(ev, tg.group(2))
            pos = tg.end()
    if host is not None:
        ev["host.name"] = host
    elif ctx.host:
        ev["host.name"] = ctx.host
    msg = text[pos:]
    ev["message"] = msg
    if tag is None:
        ev["event.dataset"] = generic
        return ev
    ev["process.name"] = tag
    dispatch(ev, tag, msg, generic)
    return ev


def parse_rfc3164(text: str, ctx: ParseContext) -> Event:
    """BSD syslog / traditional syslog file lines: ``[<PRI>]Mmm dd [yyyy ]hh:mm:ss [host ]tag[pid]: msg``."""
    ev = _fast(text, ctx)
    if ev is not None:
        return ev
    m = _HOT_MATCH(text)
    if m is not None:
        return _hot_event(text, m, ctx, "syslog")
    return _slow_3164(text, ctx, "syslog")


# --- RFC 5424 --------------------------------------------------------------------------------------

_HEADER_5424: Final = re.compile(r"(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+)(?: |$)")
_SD_ID: Final = re.compile(r"\[([^\s=\]\"]*)")
_SD_PARAM: Final = re.compile(r" +([^\s=\]\"]+)=\"([^\"\\]*(?:\\.[^\"\\]*)*)\"", re.S)
_SD_UNESCAPE: Final = re.compile(r"\\([\"\\\]])")
MAX_SD_FIELDS: Final = 200
_LIMITS: Final = (("HOSTNAME", 255), ("APP-NAME", 48), ("PROCID", 128), ("MSGID", 32))


def _structured_data(ev: Event, text: str, pos: int) -> tuple[int, bool]:
    """Parse SD-ELEMENTs from text[pos] == '['; returns (end position, ok)."""
    n = len(text)
    fields = 0
    dropped = 0
    while pos < n and text[pos] == "[":
        im = _SD_ID.match(text, pos)
        sd_id = im.group(1) if im is not None else ""
        if not sd_id:
            note(ev, f"structured data: empty SD-ID at offset {pos}")
            return pos, False
        if len(sd_id) > 32:
            note(ev, "structured data: SD-ID longer than 32 characters")
        pos = im.end()  # type: ignore[union-attr]
        while True:
            pm = _SD_PARAM.match(text, pos)
            if pm is None:
                break
            name, value = pm.groups()
            if "\\" in value:
                value = _SD_UNESCAPE.sub(r"\1", value)
            key = f"sd.{sd_id}.{name}"
            old = ev.get(key)
            if old is not None:
                ev[key] = f"{old}, {value}"
            elif fields < MAX_SD_FIELDS:
                ev[key] = value
                fields += 1
            else:
                dropped += 1
            pos = pm.end()
        if pos < n and text[pos] == "]":
            pos += 1
            continue
        note(ev, f"structured data: unterminated or malformed element at offset {pos}")
        if dropped:
            note(ev, f"structured data: {dropped} parameters beyond {MAX_SD_FIELDS} dropped")
        return pos, False
    if dropped:
        note(ev, f"structured data: {dropped} parameters beyond {MAX_SD_FIELDS} dropped")
    return pos, True


def _parse_5424(text: str, ctx: ParseContext, generic: str) -> Event:
    ref = ctx.now_ms if ctx.now_ms is not None else _wall_ms()
    ev: Event = {"@timestamp": ref, "event.original": text}
    pos = 0
    pm = _PRI_ANY.match(text)
    if pm is None:
        note(ev, "RFC 5424: missing PRI")
    else:
        _set_pri(ev, pm.group(1))
        pos = pm.end()
    hm = _HEADER_5424.match(text, pos)
    if hm is None:
        note(ev, "RFC 5424: incomplete header")
        ev["event.dataset"] = generic
        ev["message"] = text[pos:]
        return ev
    version, stamp, host, app, procid, msgid = hm.groups()
    pos = hm.end()
    ev["log.syslog.version"] = version
    if version != "1":
        note(ev, f"RFC 5424: unsupported VERSION {version}")
    if stamp != "-":
        got = ts.iso_ms(stamp, ctx.tz)
        if type(got) is int:
            ev["@timestamp"] = got
        else:
            note(ev, f"invalid timestamp: {got}")
    fields = [host, app, procid, msgid]
    for i, (name, limit) in enumerate(_LIMITS):
        if len(fields[i]) > limit:
            note(ev, f"RFC 5424: {name} longer than {limit}")
            fields[i] = fields[i][:limit]
    host, app, procid, msgid = fields
    if host != "-":
        ev["host.name"] = host
    elif ctx.host:
        ev["host.name"] = ctx.host
    if procid != "-":
        _set_pid(ev, procid)
    if msgid != "-":
        ev["log.syslog.msgid"] = msgid
    ok = True
    sd_start = pos
    if pos < len(text):
        c = text[pos]
        if c == "-":
            pos += 1
        elif c == "[":
            pos, ok = _structured_data(ev, text, pos)
        else:
            note(ev, "RFC 5424: STRUCTURED-DATA is neither '-' nor '['")
            ok = False
    if not ok:
        pos = sd_start
    elif pos < len(text) and text[pos] == " ":
        pos += 1
    msg = text[pos:]
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    ev["message"] = msg
    if app == "-":
        ev["event.dataset"] = generic
        return ev
    ev["process.name"] = app
    dispatch(ev, app, msg, generic)
    return ev


def parse_rfc5424(text: str, ctx: ParseContext) -> Event:
    """``<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [BOM]MSG``."""
    return _parse_5424(text, ctx, "syslog")


def parse_syslog(text: str, ctx: ParseContext) -> Event:
    """Either syslog flavour, detected per message (RFC 5424 has a digit VERSION after the PRI)."""
    ev = _fast(text, ctx)
    if ev is not None:
        return ev
    m = _HOT_MATCH(text)
    if m is not None:
        return _hot_event(text, m, ctx, "syslog")
    if _LOOKS_5424.match(text) is not None:
        return _parse_5424(text, ctx, "syslog")
    return _slow_3164(text, ctx, "syslog")
