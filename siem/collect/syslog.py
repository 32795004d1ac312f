"""Syslog server: UDP, TCP with RFC 6587 framing, and TLS (RFC 5425) with optional client certificates.

Two layers, as everywhere in siem: a synchronous core (:class:`Framer`, :func:`frame_datagram`) that turns
bytes into message payloads and names every problem it meets, and a thin asyncio shell
(:class:`SyslogServer`) that owns sockets, limits, metrics and the sink.

Framing on a stream (TCP and TLS), decided again at the start of EVERY frame, so one connection may mix
both framings (``framing = "auto"``, the default)::

    frame       = octet-frame / lf-frame
    octet-frame = MSG-LEN SP MSG          ; MSG-LEN = NONZERO-DIGIT 0*9DIGIT, taken when the frame starts
                                          ; with a digit
    lf-frame    = MSG ( LF / NUL )        ; anything else; one CR before the terminator is removed

Empty frames (a bare LF, CRLF or NUL between frames) are skipped silently: several senders put an LF after
an octet-counted frame. Trailing CR, LF and NUL inside an octet frame are removed too (rsyslog's
``RSYSLOG_SyslogProtocol23Format`` ends every message with an LF, counted into the frame), as rsyslog
itself does on reception.

What happens to bad input (every case is counted, none stops the connection):

* octet count with a leading zero, a non-digit before the space, or more than 10 digits: counted as
  ``siem_input_errors_total{reason="bad_frame"}`` and the frame is re-read as an LF frame that starts at
  the same byte, so nothing is lost (a plain line such as ``2024-01-01 ...`` arrives whole);
* octet count larger than ``max_message_bytes`` (a lying ``9999999999 x`` as much as a real oversized
  frame): refused at once, counted as ``siem_input_errors_total{reason="oversized_count"}`` and the frame
  is re-read as an LF frame that starts at the count, so the connection resynchronises at the next LF or
  NUL and the count costs at most that one frame (never the lines that follow it). A sender that really
  sends frames above the limit sees them delivered in LF-separated pieces, truncated as below;
* an LF frame longer than ``max_message_bytes``: the first ``max_message_bytes`` bytes are delivered, the
  rest up to the next LF/NUL is discarded as it arrives, counted as ``oversized``. A connection never holds
  more than ``max_message_bytes`` + 16 bytes between reads, whatever the sender does;
* the connection closes inside a frame: a non-empty LF remainder is delivered as a message; a partial
  octet frame is delivered too and counted as ``siem_input_dropped_total{reason="truncated"}``.

``framing = "lf"`` turns detection off (for line formats whose lines may start with a digit, e.g. access
logs over TCP); ``framing = "octet"`` expects octet counting and treats a bad count as above.

UDP: one datagram is one message; trailing LF/CR/NUL are removed; empty datagrams are dropped and counted
(``reason="empty"``), longer ones are truncated (``reason="oversized"``). The reader callback never waits:
it drains the socket in batches onto a bounded queue and counts ``reason="queue_full"`` when the pipeline
cannot keep up, and ``reason="kernel"`` for what the kernel dropped on a full receive buffer (SO_MEMINFO).

Connections (TCP and TLS): at most ``max_connections``, and at most ``max_connections_per_source`` (32 by
default; 0 turns it off) from one client IP address (``reason="source_limit"``), so one host cannot take
the whole server. When a new connection arrives at the limit, one is closed to make room
(``siem_input_errors_total{reason="evicted"}``): the oldest that has not delivered a single message yet
(idle, half-open or still in the TLS handshake), else the one silent for longest, if it has been silent for
at least ``EVICT_SILENT_S`` (5 s) and is not handing a message over. So clients that connect, send a line
and squat cannot lock healthy senders out. When every connection is busier than that the new one is
refused (``reason="connection_limit"``). Connections silent for ``idle_timeout`` are closed
(``reason="idle_timeout"``); a TLS handshake must finish within ``handshake_timeout``. Each of these, and
each ``oversized_count``, is also logged naming the peer, at most one line per reason every 10 s per input
(the line says how many more happened meanwhile). Each connection
awaits the sink for every message, so a slow pipeline slows the reads (and, through the TCP window, the
sender), never grows memory.

Stopping: ``stop()`` closes the listeners, stops reading, and gives messages already read (TCP frames in
hand, UDP datagrams in the queue) up to ``stop_grace_s`` to reach the sink; whatever is still in hand
after that, and unfinished frames, is counted as ``reason="shutdown"``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, TypeVar, cast

from siem import metrics
from siem.collect import RawRecord, Sink
from siem.errors import ConfigError, Issue
from siem.timeutil import Clock, parse_duration_ms, wall_ms
from siem.tomlcheck import TableReader, did_you_mean

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
Protocol = Literal["udp", "tcp", "tls"]
Framing = Literal["auto", "lf", "octet"]

DEFAULT_PORTS: dict[str, int] = {"udp": 5514, "tcp": 5514, "tls": 6514}
READ_CHUNK = 64 * 1024
DRAIN_QUIET_S = 0.3  # stop(drain_s): a connection with nothing arriving for this long is drained
HEADER_SLACK = 16  # bytes a stream may hold beyond max_message_bytes: an unfinished octet-count header, a CR
_MAX_COUNT_DIGITS = 10

# ------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True, slots=True)
class SyslogConfig:
    """One syslog listener, as the user wrote it in ``[inputs.<name>]`` (with ``type = "syslog"``)."""

    protocol: Protocol = "udp"
    address: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5514
    format: str = "syslog"
    framing: Framing = "auto"
    max_message_bytes: int = 65536
    max_connections: int = 200
    max_connections_per_source: int = 32  # per client IP address; 0 = only max_connections applies
    idle_timeout_ms: int = 300_000
    handshake_timeout_ms: int = 10_000
    queue_size: int = 10_000  # UDP: datagrams waiting for the sink
    receive_buffer_bytes: int = 0  # SO_RCVBUF asked for (the kernel may cap it); 0: udp 8 MiB, tcp/tls the
    # kernel's autotuning. On tcp/tls a small one bounds what a crash can lose (README)
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    verify_client: bool = False
    min_tls_version: Literal["1.2", "1.3"] = "1.2"
    permitted_peers: tuple[str, ...] = ()


_KEYS = {
    "type", "protocol", "address", "port", "format", "framing", "max_message_bytes", "max_connections",
    "max_connections_per_source",
    "idle_timeout", "handshake_timeout", "queue_size", "receive_buffer_bytes", "cert_file", "key_file",
    "ca_file", "verify_client", "min_tls_version", "permitted_peers",
}
_TLS_KEYS = ("cert_file", "key_file", "ca_file", "verify_client", "min_tls_version", "permitted_peers",
             "handshake_timeout")
_STREAM_KEYS = ("framing", "max_connections", "max_connections_per_source", "idle_timeout")
_UDP_KEYS = ("queue_size",)


def _known_formats() -> frozenset[str] | None:
    """The parser registry's keys, or None while siem.parse has no registry (checked again by the caller)."""
    try:
        from siem.parse import PARSERS  # noqa: PLC0415 - the registry is optional for this module
    except ImportError:
        return None
    return frozenset(PARSERS)


def config_from_toml(table: dict, where: str) -> tuple[SyslogConfig | None, list[Issue]]:
    """Validate one ``[inputs.<name>]`` table of type syslog; every problem is returned, none raised."""
    if not isinstance(table, dict):
        return None, [Issue("wrong-type", f"{where}: expected a table, got {type(table).__name__}")]
    r = TableReader(table, where, _KEYS)  # siem.tomlcheck: types, durations, unknown keys (did you mean)
    issues, bad = r.issues, r.bad

    def wrong_type(key: str, expected: str, value: object) -> None:
        bad(key, "wrong-type", f"expected {expected}, got {type(value).__name__} {value!r}")

    def get(key: str, kind: type[_T], default: _T) -> _T:
        return r.get(key, kind, default)  # type: ignore[return-value]

    def opt_str(key: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            wrong_type(key, "str", value)
            return None
        return value

    kind = get("type", str, "syslog")
    if kind != "syslog":
        bad("type", "bad-value", f"expected \"syslog\", got {kind!r}")

    protocol = get("protocol", str, "udp")
    if protocol not in DEFAULT_PORTS:
        bad("protocol", "bad-value", f"expected one of udp, tcp, tls, got {protocol!r}"
                                     f"{did_you_mean(str(protocol), DEFAULT_PORTS)}")
        protocol = "udp"

    raw_address = table.get("address", "127.0.0.1")
    if not isinstance(raw_address, (str, list)):
        wrong_type("address", "str or list", raw_address)
        raw_address = "127.0.0.1"
    addresses: list[object] = [raw_address] if isinstance(raw_address, str) else list(raw_address)
    if not addresses:
        bad("address", "bad-value", "needs at least one address")
    for a in addresses:
        try:
            ipaddress.ip_address(a if isinstance(a, str) else repr(a))
        except ValueError:
            bad("address", "bad-value", f"{a!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)")
    address = tuple(a for a in addresses if isinstance(a, str)) or ("127.0.0.1",)

    port = get("port", int, DEFAULT_PORTS[protocol])
    if not 0 <= port <= 65535:
        bad("port", "bad-value", f"must be 0..65535, got {port}")

    fmt = get("format", str, "syslog")
    known = _known_formats()
    if not fmt:
        bad("format", "bad-value", "must not be empty")
    elif known is not None and fmt not in known:
        bad("format", "unknown-format", f"unknown format {fmt!r}{did_you_mean(fmt, known)} "
                                        f"(known: {', '.join(sorted(known))})")

    framing = get("framing", str, "auto")
    if framing not in ("auto", "lf", "octet"):
        bad("framing", "bad-value", f"expected one of auto, lf, octet, got {framing!r}")
        framing = "auto"

    def positive(key: str, default: int, lo: int, hi: int) -> int:
        value = get(key, int, default)
        if not lo <= value <= hi:
            bad(key, "bad-value", f"must be {lo}..{hi}, got {value}")
            return default
        return value

    max_bytes = positive("max_message_bytes", 65536, 64, 64 * 1024 * 1024)
    max_conns = positive("max_connections", 200, 1, 1_000_000)
    per_source = positive("max_connections_per_source", 32, 0, 1_000_000)
    queue_size = positive("queue_size", 10_000, 1, 10_000_000)
    rcvbuf = positive("receive_buffer_bytes", 0, 4096, 1024 * 1024 * 1024) if "receive_buffer_bytes" in table else 0

    def duration(key: str, default: str) -> int:
        return r.duration_ms(key, parse_duration_ms(default), lo_ms=1)

    idle_ms = duration("idle_timeout", "5m")
    handshake_ms = duration("handshake_timeout", "10s")

    def path(key: str) -> str | None:
        value = opt_str(key)
        if value is not None and not os.path.isfile(value):
            if value.startswith("/run/credentials/"):  # exists only inside the running service
                issues.append(Issue("file-not-found", f"{where}.{key}: no such file here: {value} (a systemd "
                                                      "credential exists only while the service runs)",
                                    severity="warning"))
            else:
                bad(key, "file-not-found", f"no such file: {value}")
        return value

    cert_file, key_file, ca_file = path("cert_file"), path("key_file"), path("ca_file")
    verify_client = get("verify_client", bool, False)
    min_tls = get("min_tls_version", str, "1.2")
    if min_tls not in ("1.2", "1.3"):
        bad("min_tls_version", "bad-value", f"expected \"1.2\" or \"1.3\", got {min_tls!r}")
        min_tls = "1.2"
    peers_raw = cast(list[object], get("permitted_peers", list, []))
    peers = [p for p in peers_raw if isinstance(p, str) and p]
    if len(peers) != len(peers_raw):
        bad("permitted_peers", "wrong-type", "expected a list of non-empty names (certificate CN or DNS SAN)")

    if protocol == "tls":
        for key in ("cert_file", "key_file"):
            if key not in table:
                bad(key, "missing-key", "required when protocol = \"tls\"")
        if verify_client and "ca_file" not in table:
            bad("ca_file", "missing-key", "required when verify_client = true (the CA that signs client certs)")
        if peers and not verify_client:
            bad("permitted_peers", "bad-value", "needs verify_client = true (names come from verified certs)")
    else:
        for key in _TLS_KEYS:
            if key in table:
                bad(key, "tls-only", f"only applies to protocol = \"tls\" (this input is {protocol})")
    if protocol == "udp":
        for key in _STREAM_KEYS:
            if key in table:
                bad(key, "stream-only", "only applies to protocol = \"tcp\" or \"tls\"")
    else:
        for key in _UDP_KEYS:
            if key in table:
                bad(key, "udp-only", "only applies to protocol = \"udp\"")

    if any(i.severity == "error" for i in issues):
        return None, issues
    return SyslogConfig(
        protocol=cast(Protocol, protocol), address=address, port=port, format=fmt, framing=cast(Framing, framing),
        max_message_bytes=max_bytes, max_connections=max_conns, max_connections_per_source=per_source,
        idle_timeout_ms=idle_ms,
        handshake_timeout_ms=handshake_ms, queue_size=queue_size, receive_buffer_bytes=rcvbuf,
        cert_file=cert_file, key_file=key_file, ca_file=ca_file, verify_client=verify_client,
        min_tls_version=cast(Literal["1.2", "1.3"], min_tls), permitted_peers=tuple(peers),
    ), issues


# ------------------------------------------------------------------------------------------------------
# the synchronous core: framing




def _find_delim(buf: bytearray, start: int) -> int:
    """Index of the first LF or NUL at or after start, or -1. Two C-level finds beat one regex here."""
    k = buf.find(b"\n", start)
    z = buf.find(b"\x00", start, len(buf) if k < 0 else k)
    return z if z >= 0 else k

_START, _HEADER, _OCTET, _LF, _DISCARD = range(5)
_DIGITS = frozenset(b"0123456789")
_TRAILING = b"\r\n\x00"  # removed from the end of octet frames and datagrams (rsyslog drops a trailing LF too)


@dataclass(slots=True)
class Framed:
    """What one ``feed``/``close`` produced: message payloads, and one reason string per problem met."""

    messages: list[bytes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "bad_frame", "oversized_count", "oversized", "truncated"


class Framer:
    """RFC 6587 deframer for one stream; framing decided per frame. See the module docstring."""

    def __init__(self, max_message_bytes: int, framing: Framing = "auto") -> None:
        self._max = max_message_bytes
        self._framing = framing
        self._buf = bytearray()
        self._state = _START
        self._need = 0  # _OCTET: payload bytes the current frame delivers (<= max)
        self._scanned = 0  # _LF: bytes of the pending frame already searched for a terminator
        self.peak_buffered = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> Framed:
        out = Framed()
        buf = self._buf
        buf += data
        with memoryview(buf) as view:  # slices of a view copy once (bytes(buf[a:b]) copies twice)
            i = self._run(buf, view, out)
        del buf[:i]
        if len(buf) > self.peak_buffered:
            self.peak_buffered = len(buf)
        return out

    def close(self) -> Framed:
        """The connection ended: deliver what is left of an unfinished frame."""
        out = Framed()
        rest = bytes(self._buf)
        if self._state in (_LF, _HEADER, _START) and rest:
            msg = rest[:-1] if rest.endswith(b"\r") else rest
            if len(msg) > self._max:
                msg = msg[: self._max]
                out.problems.append("oversized")
            if msg:
                out.messages.append(msg)
        elif self._state == _OCTET and rest:
            msg = rest.rstrip(_TRAILING)
            if msg:
                out.messages.append(msg)
            out.problems.append("truncated")
        self._buf.clear()
        self._state = _START
        return out

    def _run(self, buf: bytearray, view: memoryview, out: Framed) -> int:
        i, n, limit = 0, len(buf), self._max
        while i < n:
            state = self._state
            if state == _START:
                b = buf[i]
                if b == 0x0A or b == 0x00:  # empty frame between frames
                    i += 1
                elif self._framing != "lf" and (b in _DIGITS or self._framing == "octet"):
                    self._state = _HEADER
                else:
                    self._state, self._scanned = _LF, 0
            elif state == _HEADER:
                j = i
                end = min(n, i + _MAX_COUNT_DIGITS + 1)
                while j < end and buf[j] in _DIGITS:
                    j += 1
                if j == n and j - i <= _MAX_COUNT_DIGITS:
                    break  # header continues in the next read
                count = (int(buf[i:j]) if j < n and buf[j] == 0x20 and 0 < j - i <= _MAX_COUNT_DIGITS and buf[i] != 0x30
                         else 0)
                if 0 < count <= limit:
                    self._need = count
                    self._state = _OCTET
                    i = j + 1
                else:  # leading zero, non-digit, too many digits, a count above max_message_bytes:
                    # re-read this frame as an LF frame, so the stream resynchronises at the next LF
                    out.problems.append("oversized_count" if count else "bad_frame")
                    self._state, self._scanned = _LF, 0
            elif state == _OCTET:
                if n - i < self._need:
                    break
                msg = view[i : i + self._need].tobytes().rstrip(_TRAILING)
                if msg:
                    out.messages.append(msg)
                i += self._need
                self._state = _START
            elif state == _LF:
                k = _find_delim(buf, i + self._scanned)
                if k < 0:
                    pending = n - i
                    if pending > limit + 1:  # +1: a CR that may belong before the coming LF
                        out.messages.append(view[i : i + limit].tobytes())
                        out.problems.append("oversized")
                        self._state = _DISCARD
                        i = n
                    else:
                        self._scanned = pending
                    break
                end = k - 1 if k > i and buf[k - 1] == 0x0D else k
                if end - i > limit:
                    out.messages.append(view[i : i + limit].tobytes())
                    out.problems.append("oversized")
                elif end > i:
                    out.messages.append(view[i:end].tobytes())
                i = k + 1
                self._state = _START
            else:  # _DISCARD: the rest of an oversized LF frame
                k = _find_delim(buf, i)
                if k < 0:
                    i = n
                    break
                i = k + 1
                self._state = _START
        return i


def frame_datagram(data: bytes, max_message_bytes: int) -> tuple[bytes | None, str | None]:
    """One UDP datagram -> (message or None, problem or None)."""
    msg = data.rstrip(_TRAILING)
    if not msg:
        return None, "empty"
    if len(msg) > max_message_bytes:
        return msg[:max_message_bytes], "oversized"
    return msg, None


# ------------------------------------------------------------------------------------------------------
# the async shell

_DROP_REASONS = frozenset({"oversized", "truncated", "empty", "queue_full", "shutdown", "kernel"})
EVICT_SILENT_S = 5.0  # a connection that delivered is evicted at the limit only after this much silence
_PEER_LOG_EVERY_S = 10.0
_PEER_REASONS = {  # connection-level problems that are logged with the peer (rate-limited), and how
    "source_limit": "refused a connection: max_connections_per_source reached",
    "connection_limit": "refused a connection: max_connections reached and none silent to evict",
    "evicted": "closed a silent connection to make room for a new one",
    "idle_timeout": "closed a connection silent for idle_timeout",
    "oversized_count": "octet count above max_message_bytes; frame re-read as a line",
    "handshake_timeout": "TLS handshake not finished within handshake_timeout",
    "tls_handshake": "TLS handshake failed",
    "peer_not_permitted": "client certificate not in permitted_peers",
}


class PeerLog:
    """Rate-limited warnings naming the peer: the first problem of a kind is logged at once, later ones
    of that kind at most every ``every_s`` seconds, each line saying how many were not logged since."""

    def __init__(self, input_name: str, every_s: float = _PEER_LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic, reasons: dict[str, str] | None = None) -> None:
        self._name = input_name
        self.reasons = reasons if reasons is not None else _PEER_REASONS  # reason -> what the line says
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, reason: str, peer: str) -> bool:
        """Note one problem; returns whether a line was logged."""
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._every_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        more = self._suppressed.pop(reason, 0)
        self._last[reason] = now
        _log.warning("input %s: %s (peer %s)%s", self._name, self.reasons.get(reason, reason), peer or "?",
                     f"; {more} more since the last such line" if more else "",
                     extra={"input": self._name, "reason": reason, "peer": peer, "suppressed": more})
        return True
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux >= 4.12; Python does not export the name
_SK_MEMINFO_DROPS = 8  # index of the socket's drop counter in the u32 array SO_MEMINFO returns
_UDP_BUFSIZE = 65536  # above the largest UDP payload, so the kernel never truncates a datagram for us
_UDP_RCVBUF = 8 * 1024 * 1024  # receive_buffer_bytes = 0 on UDP
_UDP_BATCH = 256  # datagrams read per wakeup before other tasks get the loop
_UDP_DRAIN_BATCHES = 64  # stop(drain_s): at most this many batches read from a socket's buffer


def build_ssl_context(config: SyslogConfig) -> ssl.SSLContext:
    """The server-side TLS context; raises ConfigError naming the file when a cert or key cannot be used."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if config.min_tls_version == "1.3" else ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.cert_file or "", config.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([Issue("bad-certificate", f"cannot load cert_file {config.cert_file!r} / key_file "
                                                    f"{config.key_file!r}: {exc}")]) from exc
    if config.ca_file:
        try:
            ctx.load_verify_locations(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([Issue("bad-certificate", f"cannot load ca_file {config.ca_file!r}: {exc}")]) from exc
    ctx.verify_mode = ssl.CERT_REQUIRED if config.verify_client else ssl.CERT_NONE
    return ctx


def certificate_not_after(path: str) -> float | None:
    """notAfter of the first certificate in a PEM file, as epoch seconds; None when it cannot be read."""
    try:
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]  # the stdlib's only decoder
        return float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (AttributeError, KeyError, OSError, ValueError, ssl.SSLError):
        return None


def _kernel_drop_counter(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on this socket (receive buffer full), from SO_MEMINFO; None if unknown."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 4 * (_SK_MEMINFO_DROPS + 1))
    except OSError:
        return None
    if len(raw) < 4 * (_SK_MEMINFO_DROPS + 1):
        return None
    return int.from_bytes(raw[4 * _SK_MEMINFO_DROPS : 4 * (_SK_MEMINFO_DROPS + 1)], sys.byteorder)


def peer_names(peercert: dict) -> set[str]:
    """Subject CNs and DNS subjectAltNames of a verified peer certificate (``SSLSocket.getpeercert()``)."""
    names = {v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"}
    names.update(v for k, v in peercert.get("subjectAltName", ()) if k == "DNS")
    return {n.lower() for n in names}


def _unread_bytes(transport: object) -> int:
    """Bytes the kernel holds for this connection that were not read (FIONREAD); 0 when unknown."""
    sock = getattr(transport, "get_extra_info", lambda _n: None)("socket")
    if sock is None:
        return 0
    try:
        import fcntl  # noqa: PLC0415
        import termios  # noqa: PLC0415

        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")
    except (OSError, ValueError):
        return 0


def _origin(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer or "")


@dataclass(eq=False, slots=True)
class _Conn:
    transport: asyncio.BaseTransport
    opened_ns: int
    source: str = ""  # the peer's IP address
    peer: str = ""  # address:port, for log lines
    active_ns: int = 0  # when it last sent something (monotonic)
    task: asyncio.Task | None = None
    framer: Framer | None = None
    delivered: bool = False  # has handed (or is handing) a message to the sink: never evicted
    delivering: bool = False  # awaiting the sink right now: stop() lets it finish


class SyslogServer:
    """A running syslog listener built from a :class:`SyslogConfig`; ``name`` is the input name."""

    def __init__(self, config: SyslogConfig, name: str, clock: Clock = wall_ms, stop_grace_s: float = 5.0) -> None:
        self.config = config
        self.name = name
        self.port = 0  # the bound port, known once start() returned (the real one when 0 was asked)
        self._clock = clock
        self._stop_grace_s = stop_grace_s
        self._stopping = False
        self._drain_deadline: float | None = None  # stop(drain_s): connections read on until then
        self._ssl = build_ssl_context(config) if config.protocol == "tls" else None
        self._set_cert_expiry()
        self._peers = frozenset(p.lower() for p in config.permitted_peers)
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: list[socket.socket] = []
        self._kernel_drops: dict[int, int] = {}  # per UDP socket fd: its kernel drop counter when last read
        self._queue: asyncio.Queue[tuple[bytes, str, int]] | None = None
        self._consumer: asyncio.Task | None = None
        self._conns: set[_Conn] = set()
        self._sink: Sink | None = None
        self.peak_buffered = 0  # most bytes one connection held between reads, since start
        self._received = metrics.EVENTS_RECEIVED.labels(input=name, format=config.format)
        self._bytes = metrics.BYTES_RECEIVED.labels(input=name)
        self._connections = metrics.INPUT_CONNECTIONS.labels(input=name)
        self._last = metrics.INPUT_LAST_EVENT.labels(input=name)
        self._peer_log = PeerLog(name)

    # -- public ----------------------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Serve until cancelled."""
        await self.start(sink)
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def start(self, sink: Sink) -> None:
        """Bind every address; when this returns the sockets accept traffic and ``self.port`` is known."""
        self._sink = sink
        self._stopping = False
        port = self.config.port
        if self.config.protocol == "udp":
            self._queue = asyncio.Queue(self.config.queue_size)
        try:
            for address in self.config.address:
                if self.config.protocol == "udp":
                    port = await self._bind_udp(address, port)
                else:
                    server = await asyncio.start_server(
                        self._on_connection, sock=self._stream_socket(address, port),
                        backlog=min(max(self.config.max_connections, 128), 4096),
                        limit=READ_CHUNK,
                    )
                    self._servers.append(server)
                    port = server.sockets[0].getsockname()[1]
                self.port = port
        except BaseException:
            await self.stop()
            raise
        if self.config.protocol == "udp":
            self._consumer = asyncio.create_task(self._consume_udp(), name=f"syslog-udp-{self.name}")

    def _stream_socket(self, address: str, port: int) -> socket.socket:
        """The listening socket; SO_RCVBUF set before listen() so accepted connections inherit it and the
        window they advertise (scaling included) fits it."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self.config.receive_buffer_bytes:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.receive_buffer_bytes)
            sock.bind((address, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting; with ``drain_s``, first read on: every connection until it has been quiet for
        DRAIN_QUIET_S (its sender has nothing more in flight) or ``drain_s`` has passed, and every UDP
        socket until its buffer is empty, handing what arrives to the sink (which must still be running).
        Then stop reading: what was already read is handed over for up to ``stop_grace_s``, then every
        connection is closed. Messages that could not be handed over in time, and unfinished frames, are
        counted as reason="shutdown"; bytes a sender still had in flight when the drain ran out as
        siem_input_dropped_total{reason="shutdown_unread"} (one per connection)."""
        loop = asyncio.get_running_loop()
        if drain_s > 0:
            for server in self._servers:
                server.close()  # a sender that reconnects now is refused and keeps its messages queued
            self._drain_deadline = loop.time() + drain_s
            for sock in self._udp:
                loop.remove_reader(sock.fileno())
                for _ in range(1 + _UDP_DRAIN_BATCHES):
                    if not self._read_datagrams(sock):
                        break
            waiting = [c.task for c in self._conns if c.task is not None]
            if self._consumer is not None and self._queue is not None:
                waiting.append(asyncio.ensure_future(self._drained(self._queue)))
            if waiting:
                await asyncio.wait(waiting, timeout=drain_s + 1.0)
            for conn in self._conns:
                if _unread_bytes(conn.transport):
                    self._drop("shutdown_unread")
        self._stopping = True
        for server in self._servers:
            server.close()
        for sock in self._udp:
            if drain_s <= 0:
                loop.remove_reader(sock.fileno())
            self._count_kernel_drops(sock)
            sock.close()
        for conn in list(self._conns):
            if not conn.delivering and conn.task is not None:
                conn.task.cancel()  # waiting for input: nothing in hand to lose
        pending = [c.task for c in self._conns if c.delivering and c.task is not None]
        if self._consumer is not None and self._queue is not None:
            pending.append(asyncio.ensure_future(self._drained(self._queue)))
        if pending:
            await asyncio.wait(pending, timeout=self._stop_grace_s)
        for conn in list(self._conns):
            self._close(conn)
        tasks = [c.task for c in self._conns if c.task is not None] + [t for t in pending if not t.done()]
        if self._consumer is not None:
            tasks.append(self._consumer)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        if self._queue is not None and self._queue.qsize():
            self._drop("shutdown", self._queue.qsize())
        self._servers, self._udp, self._consumer, self._queue = [], [], None, None
        self._drain_deadline = None
        self._kernel_drops.clear()
        self._connections.set(0)

    def reload_certificates(self) -> None:
        """Re-read cert_file, key_file and ca_file (SIGHUP after a renewal); new connections use them.

        Raises ConfigError, keeping the running context, when the new files cannot be used.
        """
        if self.config.protocol != "tls":
            return
        self._ssl = build_ssl_context(self.config)
        self._set_cert_expiry()

    def _set_cert_expiry(self) -> None:
        if self.config.protocol == "tls" and self.config.cert_file:
            not_after = certificate_not_after(self.config.cert_file)
            if not_after is not None:
                metrics.TLS_CERT_EXPIRY.labels(input=self.name).set(not_after)

    def buffered_bytes(self) -> int:
        """Bytes currently held for unfinished frames, over all connections."""
        return sum(c.framer.buffered for c in self._conns if c.framer is not None)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    # -- metrics helpers -------------------------------------------------------------------------

    def _drop(self, reason: str, n: int = 1) -> None:
        metrics.INPUT_DROPPED.labels(input=self.name, reason=reason).inc(n)

    def _error(self, reason: str, peer: str | None = None) -> None:
        metrics.INPUT_ERRORS.labels(input=self.name, reason=reason).inc()
        if peer is not None and reason in self._peer_log.reasons:
            self._peer_log(reason, peer)

    def _problems(self, problems: list[str], peer: str | None = None) -> None:
        for p in problems:
            if p in _DROP_REASONS:
                self._drop(p)
            else:
                self._error(p, peer)

    async def _deliver(self, messages: list[bytes], origin: str, received_ms: int) -> None:
        sink = self._sink
        if sink is None:
            return
        fmt, name = self.config.format, self.name
        delivered = 0
        try:
            for msg in messages:
                await sink(RawRecord(input=name, format=fmt, data=msg, received_ms=received_ms, origin=origin))
                delivered += 1
        except asyncio.CancelledError:
            # cut off (stop() after its grace time, or an eviction): the one in the sink may or may not be
            # taken, the rest is not; counted as lost so nothing disappears silently
            self._drop("shutdown", len(messages) - delivered)
            raise
        finally:
            if delivered:
                self._received.inc(delivered)
                self._last.set(received_ms / 1000)

    # -- UDP -------------------------------------------------------------------------------------

    async def _bind_udp(self, address: str, port: int) -> int:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.receive_buffer_bytes or _UDP_RCVBUF)
            sock.bind((address, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._kernel_drops[sock.fileno()] = _kernel_drop_counter(sock) or 0
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read_datagrams, sock)
        self._udp.append(sock)
        return sock.getsockname()[1]

    def _read_datagrams(self, sock: socket.socket) -> bool:
        """Reader callback: drain up to a bounded batch of datagrams (asyncio's own reads one per wakeup).
        True when the batch was full (there may be more)."""
        for _ in range(_UDP_BATCH):
            try:
                data, addr = sock.recvfrom(_UDP_BUFSIZE)
            except (BlockingIOError, InterruptedError):
                # Drained. The kernel drops only while the buffer is full, i.e. while there is still
                # something to read, so looking here catches every drop.
                self._count_kernel_drops(sock)
                return False
            except OSError:
                self._error("udp")
                return False
            self._on_datagram(data, addr)
        self._count_kernel_drops(sock)  # a full batch: under a steady flood the socket may never drain
        return True

    def _count_kernel_drops(self, sock: socket.socket) -> None:
        total = _kernel_drop_counter(sock)
        if total is None:
            return
        fd = sock.fileno()
        lost = (total - self._kernel_drops.get(fd, 0)) & 0xFFFFFFFF
        if lost:
            self._drop("kernel", lost)
        self._kernel_drops[fd] = total

    def _on_datagram(self, data: bytes, addr: object) -> None:
        self._bytes.inc(len(data))
        msg, problem = frame_datagram(data, self.config.max_message_bytes)
        if problem is not None:
            self._problems([problem])
        if msg is None or self._queue is None:
            return
        try:
            self._queue.put_nowait((msg, _origin(addr), self._clock()))
        except asyncio.QueueFull:
            self._drop("queue_full")

    async def _consume_udp(self) -> None:
        queue = self._queue
        if queue is None:
            return
        while True:
            msg, origin, received_ms = await queue.get()
            try:
                await self._deliver([msg], origin, received_ms)
            except Exception:  # noqa: BLE001 - a failing sink must not end the input
                self._error("sink")
            finally:
                queue.task_done()

    @staticmethod
    async def _drained(queue: asyncio.Queue[tuple[bytes, str, int]]) -> None:
        await queue.join()

    # -- TCP / TLS -------------------------------------------------------------------------------

    def _admit(self, conn: _Conn) -> bool:
        per_source = self.config.max_connections_per_source
        if per_source and sum(1 for c in self._conns if c.source == conn.source) >= per_source:
            self._error("source_limit", conn.peer)
            return False
        if len(self._conns) >= self.config.max_connections:
            victim = self._victim(conn.opened_ns)
            if victim is None:
                self._error("connection_limit", conn.peer)
                return False
            self._error("evicted", victim.peer)
            self._close(victim)
            if victim.task is not None:
                victim.task.cancel()
            self._conns.discard(victim)
        self._conns.add(conn)
        self._connections.set(len(self._conns))
        return True

    def _victim(self, now_ns: int) -> _Conn | None:
        """The connection to close for a new one at the limit (see the module docstring), or None."""
        never = [c for c in self._conns if not c.delivered]
        if never:
            return min(never, key=lambda c: c.opened_ns)
        idle = [c for c in self._conns if not c.delivering and now_ns - c.active_ns >= EVICT_SILENT_S * 1e9]
        return min(idle, key=lambda c: c.active_ns) if idle else None

    def _close(self, conn: _Conn) -> None:
        transport = conn.transport
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            transport.abort()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        origin = _origin(peer)
        now_ns = time.monotonic_ns()
        conn = _Conn(transport=writer.transport, opened_ns=now_ns, active_ns=now_ns, task=asyncio.current_task(),
                     source=str(peer[0]) if isinstance(peer, tuple) and peer else "", peer=origin)
        if not self._admit(conn):
            writer.transport.abort()
            return
        try:
            if self._ssl is not None:
                # Straight away, before the first read, so the ClientHello is read by the TLS layer.
                if not await self._handshake(writer, conn):
                    return
            await self._read_loop(reader, writer, conn, origin)
        except asyncio.CancelledError:
            if self._stopping and conn.framer is not None and conn.framer.buffered:
                self._drop("shutdown")
        except Exception:  # noqa: BLE001 - one bad connection must not take the server down
            self._error("connection")
        finally:
            self._conns.discard(conn)
            self._connections.set(len(self._conns))
            self._close(conn)
            transport = writer.transport
            if transport is not conn.transport and not transport.is_closing():
                transport.abort()

    async def _handshake(self, writer: asyncio.StreamWriter, conn: _Conn) -> bool:
        # No wait_for around start_tls: it must run now, in this task, so that reading pauses before the
        # ClientHello arrives (a wrapping task would let the plain stream reader swallow it). asyncio's own
        # ssl_handshake_timeout aborts a handshake that takes too long with ConnectionAbortedError.
        try:
            await writer.start_tls(self._ssl,  # type: ignore[arg-type]
                                   ssl_handshake_timeout=self.config.handshake_timeout_ms / 1000)
        except (TimeoutError, ConnectionAbortedError):
            self._error("handshake_timeout", conn.peer)
            return False
        except (ssl.SSLError, ConnectionError, OSError, EOFError):
            self._error("tls_handshake", conn.peer)
            return False
        conn.transport = writer.transport
        if self._peers:
            cert = writer.get_extra_info("peercert") or {}
            if not peer_names(cert) & self._peers:
                self._error("peer_not_permitted", conn.peer)
                return False
        return True

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn,
                         origin: str) -> None:
        """One connection's life after admission (and the TLS handshake): read, frame, hand over.
        Subclasses speaking another protocol on the same listener (siem.collect.relp) replace this."""
        framer = conn.framer = Framer(self.config.max_message_bytes, self.config.framing)
        idle_s = self.config.idle_timeout_ms / 1000
        loop = asyncio.get_running_loop()
        while not self._stopping:
            timeout = idle_s
            if self._drain_deadline is not None:  # draining: read on until quiet or out of time
                left = self._drain_deadline - loop.time()
                if left <= 0:  # out of time: an unfinished frame is not a message
                    if framer.buffered:
                        self._drop("shutdown")
                    return
                timeout = min(DRAIN_QUIET_S, left)
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                if self._drain_deadline is None:
                    self._error("idle_timeout", conn.peer)
                framed = framer.close()
                break
            except (ConnectionError, ssl.SSLError, OSError):
                self._error("read")
                framed = framer.close()
                break
            if not data:
                framed = framer.close()
                break
            self._bytes.inc(len(data))
            conn.active_ns = time.monotonic_ns()
            framed = framer.feed(data)
            if framer.peak_buffered > self.peak_buffered:
                self.peak_buffered = framer.peak_buffered
            if framed.problems:
                self._problems(framed.problems, conn.peer)
            if framed.messages:
                await self._hand_over(conn, framed.messages, origin)
        else:  # stopping: what is left of an unfinished frame is not a message
            if framer.buffered:
                self._drop("shutdown")
            return
        if framed.problems:
            self._problems(framed.problems)
        if framed.messages:
            await self._hand_over(conn, framed.messages, origin)

    async def _hand_over(self, conn: _Conn, messages: list[bytes], origin: str) -> None:
        conn.delivered = conn.delivering = True
        try:
            await self._deliver(messages, origin, self._clock())
        finally:
            conn.delivering = False
