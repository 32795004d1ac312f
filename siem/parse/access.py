"""Web access logs: Apache/nginx combined and common log format, and JSON access logs.

Event: ``event.dataset`` ("nginx.access" / "apache.access"), ``source.ip`` (or ``source.address``
when the server logged a host name), ``user.name`` (unless "-"), ``http.request.method``,
``url.original``, ``url.path``, ``url.query``, ``url.domain`` (absolute-form targets),
``http.version``, ``http.response.status_code`` (int), ``http.response.body.bytes`` (int),
``http.request.referrer``, ``user_agent.original``, ``host.name`` (ctx.host).

Values are kept as the server escaped them (``\\"``, ``\\x16``). A request line that is not
``METHOD target [HTTP/x]`` (the method in any case, kept as logged: worms send ``get``; TLS handshake bytes sent to port 80, binary garbage) leaves the url and
method fields out and sets ``error.message``; the rest of the line is still read. Lines wrapped in
an extra pair of double quotes (seen in exported logs) are unwrapped.
"""

from __future__ import annotations

import re
from typing import Final

from siem.parse import timestamps as ts
from siem.parse.base import ParseContext, clip, error_event, note, now_ms, set_source
from siem.parse.jsonfmt import JSONError, loads_exact, scalar_text
from siem.schema import Event

_Q: Final = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_COMBINED: Final = re.compile(rf"(\S+) (\S+) (\S+) \[([^\]]*)\] {_Q} (\S+) (\S+)(?: {_Q} {_Q})?", re.S)
_COMBINED_MATCH = _COMBINED.match
# Fallback for servers that did not escape quotes inside the request (Apache < 2.0.46): the request
# ends at the first `" <status> <size>`; referrer and user agent are split at the first `" "`.
# (Plain string scanning: a regex with two free-running groups here backtracks cubically.)
_LOOSE_HEAD: Final = re.compile(r'(\S+) (\S+) (\S+) \[([^\]]*)\] "')
_LOOSE_STATUS: Final = re.compile(r'" (\d{1,3}|-) (\S+)')


_Fields = tuple[str, str, str, str, str, str, str, "str | None", "str | None"]


def _loose(line: str) -> _Fields | None:
    h = _LOOSE_HEAD.match(line)
    if h is None:
        return None
    st = _LOOSE_STATUS.search(line, h.end())
    if st is None:
        return None
    ref: str | None = None
    agent: str | None = None
    rest = line[st.end():].strip()
    if len(rest) >= 2 and rest[0] == '"' and rest[-1] == '"':
        inner = rest[1:-1]
        cut = inner.find('" "')
        if cut >= 0:
            ref, agent = inner[:cut], inner[cut + 3:]
    addr, ident, user, when = h.groups()
    return (addr, ident, user, when, line[h.end():st.start()], st.group(1), st.group(2), ref, agent)
_METHOD: Final = re.compile(r"[A-Za-z][A-Za-z_-]{0,31}")  # as logged: worms send `get`
_METHOD_MATCH = _METHOD.fullmatch
_COMMON_METHODS: Final = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT"})


def _request(ev: Event, req: str) -> None:
    if not req or req == "-":
        return
    parts = req.split(" ")
    n = len(parts)
    if n == 3 and parts[0] in _COMMON_METHODS and parts[2].startswith("HTTP/"):
        target = parts[1]
        ev["http.version"] = parts[2][5:]
    elif n >= 3 and parts[-1].startswith("HTTP/") and _METHOD_MATCH(parts[0]) is not None:
        target = parts[1] if n == 3 else " ".join(parts[1:-1])
        ev["http.version"] = parts[-1][5:]
    elif n == 2 and _METHOD_MATCH(parts[0]) is not None:
        target = parts[1]
    else:
        note(ev, f"unparseable request line: {clip(req, 80)!r}")
        return
    ev["http.request.method"] = parts[0]
    ev["url.original"] = target
    if target.startswith(("http://", "https://")):
        rest = target[target.index("//") + 2:]
        slash = rest.find("/")
        authority = rest if slash < 0 else rest[:slash]
        ev["url.domain"] = authority.rpartition("@")[2]
        target = "/" if slash < 0 else rest[slash:]
    q = target.find("?")
    if q < 0:
        ev["url.path"] = target
    else:
        ev["url.path"] = target[:q]
        ev["url.query"] = target[q + 1:]


def _status_bytes(ev: Event, status: str, size: str) -> None:
    if status.isascii() and status.isdigit() and len(status) <= 3:
        ev["http.response.status_code"] = int(status)
    elif status != "-":
        note(ev, f"invalid status code {clip(status, 20)!r}")
    if size.isascii() and size.isdigit() and len(size) < 19:
        ev["http.response.body.bytes"] = int(size)
    elif size != "-":
        note(ev, f"invalid body size {clip(size, 20)!r}")


def _clf(text: str, ctx: ParseContext, dataset: str) -> Event:
    line = text
    if line.startswith('"') and line.endswith('"') and len(line) > 2:
        line = line[1:-1]
    m = _COMBINED_MATCH(line)
    fields: _Fields | None = m.groups() if m is not None else _loose(line)  # type: ignore[assignment]
    if fields is None:
        return error_event(text, dataset, "not a common/combined log format line", ctx)
    addr, _ident, user, when, req, status, size, ref, agent = fields
    stamp = ts.clf_ms(when)
    ev: Event = {"@timestamp": stamp, "event.original": text, "event.dataset": dataset, "event.category": "web"}
    if type(stamp) is str:
        ev["@timestamp"] = now_ms(ctx)
        note(ev, f"invalid timestamp: {stamp}")
    set_source(ev, addr)
    if user != "-":
        ev["user.name"] = user
    _request(ev, req)
    _status_bytes(ev, status, size)
    if ref is not None and ref != "-":
        ev["http.request.referrer"] = ref
    if agent is not None and agent != "-":
        ev["user_agent.original"] = agent
    if ctx.host:
        ev["host.name"] = ctx.host
    return ev


def parse_nginx(text: str, ctx: ParseContext) -> Event:
    """nginx ``combined`` (or ``common``) access log line."""
    return _clf(text, ctx, "nginx.access")


def parse_apache(text: str, ctx: ParseContext) -> Event:
    """Apache ``combined`` / ``common`` access log line."""
    return _clf(text, ctx, "apache.access")


# --- JSON access logs --------------------------------------------------------------------------------

# first key present wins
_J_TIME: Final = ("time_iso8601", "time_local", "@timestamp", "timestamp", "time", "msec")
_J_ADDR: Final = ("remote_addr", "client_ip", "clientip", "remote_ip", "client", "ip")
_J_USER: Final = ("remote_user", "user")
_J_STATUS: Final = ("status", "status_code", "response_status")
_J_BYTES: Final = ("body_bytes_sent", "bytes_sent", "bytes", "size", "response_bytes")
_J_REF: Final = ("http_referer", "http_referrer", "referer", "referrer")
_J_UA: Final = ("http_user_agent", "user_agent", "agent", "useragent")
_J_DOMAIN: Final = ("host", "http_host", "server_name")
_J_USED: Final = frozenset(
    _J_TIME + _J_ADDR + _J_USER + _J_STATUS + _J_BYTES + _J_REF + _J_UA + _J_DOMAIN
    + ("request", "request_method", "request_uri", "uri", "args", "query_string", "server_protocol", "protocol")
)
MAX_LABELS: Final = 64


def _first(obj: dict[str, object], keys: tuple[str, ...]) -> str | None:
    for k in keys:
        v = obj.get(k)
        if v is not None and not isinstance(v, (dict, list)):
            s = scalar_text(v)
            if s != "" and s != "-":
                return s
    return None


def _json_time(v: str, ctx: ParseContext) -> int | str:
    if "/" in v:
        return ts.clf_ms(v)
    if v[:1].isascii() and v[:1].isdigit() and "-" not in v[:5]:
        sec, _, frac = v.partition(".")
        if sec.isascii() and sec.isdigit() and len(sec) <= 11 and (not frac or frac.isascii() and frac.isdigit()):  # nginx $msec: seconds.millis
            return int(sec) * 1000 + (int((frac + "00")[:3]) if frac else 0)
        return f"not a time: {clip(v, 40)!r}"
    return ts.iso_ms(v, ctx.tz)


def parse_access_json(text: str, ctx: ParseContext) -> Event:
    """JSON access log objects (e.g. nginx ``log_format json escape=json``) with nginx variable names.

    Recognised keys: time_iso8601/time_local/@timestamp/timestamp/time/msec, remote_addr, remote_user,
    request or request_method+request_uri(+server_protocol), status, body_bytes_sent, http_referer,
    http_user_agent, host. Other scalar keys are kept as ``labels.<key>`` (up to 64).
    """
    try:
        obj = loads_exact(text)
    except JSONError as e:
        return error_event(text, "nginx.access", str(e), ctx)
    if not isinstance(obj, dict):
        return error_event(text, "nginx.access", f"JSON value is a {type(obj).__name__}, not an object", ctx)
    ev: Event = {"@timestamp": 0, "event.original": text, "event.dataset": "nginx.access", "event.category": "web"}
    when = _first(obj, _J_TIME)
    stamp: int | str = _json_time(when, ctx) if when is not None else "no time field"
    if type(stamp) is int:
        ev["@timestamp"] = stamp
    else:
        ev["@timestamp"] = now_ms(ctx)
        note(ev, f"invalid timestamp: {stamp}")
    addr = _first(obj, _J_ADDR)
    if addr is not None:
        set_source(ev, addr)
    user = _first(obj, _J_USER)
    if user is not None:
        ev["user.name"] = user
    req = _first(obj, ("request",))
    if req is not None:
        _request(ev, req)
    else:
        method = _first(obj, ("request_method",))
        uri = _first(obj, ("request_uri", "uri"))
        if method is not None and uri is not None:
            args = _first(obj, ("args", "query_string"))
            if args and "?" not in uri:
                uri = f"{uri}?{args}"
            proto = _first(obj, ("server_protocol", "protocol"))
            _request(ev, f"{method} {uri} {proto}" if proto else f"{method} {uri}")
    status = _first(obj, _J_STATUS)
    size = _first(obj, _J_BYTES)
    _status_bytes(ev, status or "-", size or "-")
    ref = _first(obj, _J_REF)
    if ref is not None:
        ev["http.request.referrer"] = ref
    agent = _first(obj, _J_UA)
    if agent is not None:
        ev["user_agent.original"] = agent
    domain = _first(obj, _J_DOMAIN)
    if domain is not None:
        ev["url.domain"] = domain
    if ctx.host:
        ev["host.name"] = ctx.host
    kept = 0
    for k, v in obj.items():
        if k in _J_USED or v is None or isinstance(v, (dict, list)) or len(k) > 64:
            continue
        if kept >= MAX_LABELS:
            note(ev, f"more than {MAX_LABELS} extra keys; the rest dropped")
            break
        ev[f"labels.{k}"] = clip(scalar_text(v), 8192)
        kept += 1
    return ev
