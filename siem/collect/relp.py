"""RELP input (rsyslog's ``omrelp`` / ``imrelp`` protocol): every message acknowledged only once it is in
the durable log.

No maintained Python implementation exists (PyPI's ``pyrelp`` is a 2014 wrapper of librelp), so this is a
server written from librelp's source (``src/relpframe.c``, ``copen.c``, ``cclose.c``, ``scsyslog.c``).
The listener, TLS, connection limits, eviction, idle timeout and the rate-limited peer log are the syslog
server's (:class:`siem.collect.syslog.SyslogServer`); only what happens on an admitted connection differs.

Framing (every frame, both directions)::

    frame   = TXNR SP COMMAND SP DATALEN [SP DATA] LF
    TXNR    = 1*9DIGIT          ; 1..999999999, +1 per frame the client sends, then wraps to 1
    COMMAND = 1*32ALPHA         ; open, syslog, close from the client; rsp, serverclose from us
    DATALEN = 1*9DIGIT          ; bytes of DATA; 0 means no SP and no DATA

A session::

    client: 1 open 85 relp_version=0 LF relp_software=librelp,... LF commands=syslog
    server: 1 rsp 64 200 OK LF relp_version=0 LF relp_software=siem,... LF commands=syslog
    client: 2 syslog 40 <13>Jan  1 00:00:00 host app: message        (up to its window, unanswered)
    server: 2 rsp 6 200 OK                                          (once record 2 is in the log)
    client: 9 close 0            server: 9 rsp 0                    then the connection closes
    server (when stopping): 0 serverclose 0                         a hint; the client reconnects later

When a message counts as delivered: the sink (siem.pipeline.intake.Intake) numbers each record it takes,
and ``durable(seq)`` returns once the writer has appended the batch holding that record to the event log:
in the local log with its default ``fsync = "always"`` that append has been fdatasync'ed (the record
survives power loss); with ``"interval"`` or ``"never"`` it has been written (it survives kill -9 of siem,
not an OS crash); on Kafka (the collector role) the producer's send completed (``acks = "all"``).
Only then is ``200 OK`` sent, in txnr order; frames read meanwhile wait in the kernel, so a slow log
slows the sender through RELP's window, and kill -9 at any moment loses no message the client saw
acknowledged.

Duplicates: what the client sent but did not see acknowledged it sends again after reconnecting, with new
txnrs (librelp renumbers its unacknowledged frames), so txnrs cannot identify a resend. Those messages may
already be in our log (appended, ack not yet written or not yet read by the client when the connection or
siem died): they are appended again. The window is the client's: at most omrelp's ``windowSize``
(librelp's default 128) messages per connection per crash or broken connection. Counted:

* ``siem_relp_unacked_total{input}``: messages in the log whose ack was never written because the
  connection ended first (each one comes back as a duplicate);
* ``siem_relp_duplicates_total{input}``: messages of a new session that repeat, byte for byte and in
  order, the unacknowledged tail of the previous session from the same address (a resend we saw the
  other half of; after a siem crash that tail is gone, so those duplicates are bounded, not counted).

Bad input (each counted in ``siem_input_errors_total`` / ``siem_input_dropped_total`` and logged naming the
peer, rate-limited): a malformed frame or trailer (``bad_frame``), a txnr out of sequence (``bad_txnr``),
``syslog`` before ``open`` or a client without ``commands=syslog`` (``relp_protocol``, answered ``500``):
the connection is closed, which costs only its own unacknowledged frames (the client resends them). A
DATALEN above ``max_message_bytes`` is not trusted with memory: the first ``max_message_bytes`` are kept,
the rest skipped (the trailer check proves the stream is still in sync), counted as ``oversized``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from siem import __version__, metrics
from siem.collect import Durable, RawRecord, Sink
from siem.collect.syslog import _TRAILING, READ_CHUNK, SyslogConfig, SyslogServer, _Conn
from siem.collect.syslog import config_from_toml as _syslog_config
from siem.errors import ConfigError, Issue
from siem.timeutil import Clock, wall_ms

DEFAULT_PORT = 2514
MAX_TXNR = 999_999_999
_MAX_DIGITS = 9
_MAX_CMD = 32
_OFFER_BYTES = 4096  # open/close carry offers, not messages: their own small limit
_PEERS_REMEMBERED = 1024  # addresses whose unacknowledged tail is kept for duplicate counting
_RELP_KEYS_NOT_ALLOWED = ("framing",)
_RELP_PEER_REASONS = {
    "bad_frame": "malformed RELP frame; session closed",
    "bad_txnr": "RELP transaction number out of sequence; session closed",
    "relp_protocol": "RELP protocol error (no open, or no commands=syslog); session closed",
}

# ------------------------------------------------------------------------------------------------------
# configuration


def config_from_toml(table: dict, where: str) -> tuple[SyslogConfig | None, list[Issue]]:
    """``[inputs.<name>]`` with ``type = "relp"``: the keys of a tcp/tls syslog input (protocol "tcp" by
    default, or "tls"; port 2514 by default) except framing and the UDP keys."""
    if not isinstance(table, dict):
        return None, [Issue("wrong-type", f"{where}: expected a table, got {type(table).__name__}")]
    issues = [Issue("relp-only", f"{where}.{k}: does not apply to a relp input") for k in _RELP_KEYS_NOT_ALLOWED
              if k in table]
    protocol = table.get("protocol", "tcp")
    if protocol not in ("tcp", "tls"):
        issues.append(Issue("bad-value", f"{where}.protocol: expected \"tcp\" or \"tls\", got {protocol!r}"))
    t = {k: v for k, v in table.items() if k not in _RELP_KEYS_NOT_ALLOWED}
    t.update(type="syslog", protocol=protocol if protocol in ("tcp", "tls") else "tcp")
    t.setdefault("port", DEFAULT_PORT)
    cfg, more = _syslog_config(t, where)
    issues += more
    if any(i.severity == "error" for i in issues):
        return None, issues
    return cfg, issues


# ------------------------------------------------------------------------------------------------------
# the synchronous core: frames


@dataclass(frozen=True, slots=True)
class Frame:
    txnr: int
    command: str
    data: bytes
    truncated: bool = False  # DATALEN was above the limit: data holds its first bytes only


class RelpError(Exception):
    """A frame that cannot be parsed: the session must end. ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RelpFramer:
    """Incremental RELP frame parser for one connection; holds at most the limit plus a header."""

    def __init__(self, max_data_bytes: int) -> None:
        self._max = max(max_data_bytes, _OFFER_BYTES)
        self._buf = bytearray()
        self._head: tuple[int, str, int] | None = None  # txnr, command, datalen of the frame being read
        self._kept = bytearray()  # data of the current frame (up to the limit)
        self._skip = 0  # data bytes of the current frame still to read beyond the limit

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._kept)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data``; raises RelpError at the first malformed byte."""
        self._buf += data
        out: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return out
            out.append(frame)

    def _next(self) -> Frame | None:
        buf = self._buf
        if self._head is None:
            # header: TXNR SP COMMAND SP DATALEN, then SP (data follows) or LF (DATALEN 0)
            end = _header_end(buf)
            if end < 0:
                if len(buf) > 2 * _MAX_DIGITS + _MAX_CMD + 3:
                    raise RelpError("bad_frame", f"no frame header in {bytes(buf[:40])!r}")
                return None
            self._head = _parse_header(bytes(buf[:end]))
            del buf[: end + 1 if self._head[2] > 0 else end]
            self._kept.clear()
            self._skip = 0
        txnr, cmd, datalen = self._head
        need = datalen - len(self._kept) - self._skip
        if need > 0 and buf:
            take = min(need, len(buf))
            room = max(self._max - len(self._kept), 0)
            self._kept += buf[: min(take, room)]
            self._skip += max(take - room, 0)
            del buf[:take]
            need -= take
        if need > 0 or not buf:
            return None
        if buf[0] != 0x0A:
            raise RelpError("bad_frame", f"frame {txnr} {cmd}: expected LF after {datalen} data bytes, got "
                                         f"{bytes(buf[:1])!r}")
        del buf[:1]
        frame = Frame(txnr, cmd, bytes(self._kept), truncated=self._skip > 0)
        self._head = None
        self._kept.clear()
        self._skip = 0
        return frame


def _header_end(buf: bytearray) -> int:
    """Index of the byte ending the header (the SP before DATA, or the LF of an empty frame), or -1."""
    sp1 = buf.find(b" ", 0, _MAX_DIGITS + 1)
    if sp1 < 0:
        return -1 if len(buf) <= _MAX_DIGITS else _bad(buf)
    sp2 = buf.find(b" ", sp1 + 1, sp1 + 2 + _MAX_CMD)
    if sp2 < 0:
        return -1 if len(buf) <= sp1 + 1 + _MAX_CMD else _bad(buf)
    i = sp2 + 1
    while i < len(buf) and i - sp2 <= _MAX_DIGITS + 1 and 0x30 <= buf[i] <= 0x39:
        i += 1
    if i == len(buf):
        return -1 if i - sp2 - 1 <= _MAX_DIGITS else _bad(buf)
    return i if buf[i] in (0x20, 0x0A) else _bad(buf)


def _bad(buf: bytearray) -> int:
    raise RelpError("bad_frame", f"malformed frame header {bytes(buf[:48])!r}")


def _parse_header(head: bytes) -> tuple[int, str, int]:
    try:
        txnr_s, cmd_b, len_s = head.split(b" ")
    except ValueError:
        raise RelpError("bad_frame", f"malformed frame header {head[:48]!r}") from None
    if not (txnr_s.isdigit() and 0 < len(txnr_s) <= _MAX_DIGITS) or not (len_s.isdigit() and len(len_s) <= _MAX_DIGITS):
        raise RelpError("bad_frame", f"malformed frame header {head[:48]!r}")
    if not (cmd_b.isalpha() and cmd_b.isascii() and len(cmd_b) <= _MAX_CMD):
        raise RelpError("bad_frame", f"malformed command in frame header {head[:48]!r}")
    return int(txnr_s), cmd_b.decode("ascii"), int(len_s)


def next_txnr(txnr: int) -> int:
    return 1 if txnr >= MAX_TXNR else txnr + 1


def encode_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    if not data:
        return b"%d %s 0\n" % (txnr, command.encode())
    return b"%d %s %d %s\n" % (txnr, command.encode(), len(data), data)


def parse_offers(data: bytes) -> dict[str, list[str]]:
    """``name[=value[,value...]]`` per LF-separated line, as librelp's offers."""
    offers: dict[str, list[str]] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, _, values = line.partition("=")
        offers[name.strip()] = [v for v in values.split(",") if v] if values else []
    return offers


def open_response(offers: dict[str, list[str]]) -> tuple[bytes, bool]:
    """The data of our ``rsp`` to an ``open``, and whether the session may go on."""
    if "syslog" not in offers.get("commands", []):
        return b"500 required command not supported by client", False
    version = offers.get("relp_version", ["0"])
    if not version or not version[0].isdigit():
        return b"500 invalid relp_version offer", False
    return (b"200 OK\nrelp_version=0\nrelp_software=siem," + __version__.encode() + b"\ncommands=syslog"), True


# ------------------------------------------------------------------------------------------------------
# the async shell


@dataclass(slots=True)
class _Session:
    """One RELP session's state on an admitted connection."""

    opened: bool = False
    expect: int = 0  # the txnr the next client frame must carry (0 until the first frame)
    unacked: deque[tuple[int, int, bytes]] = field(default_factory=deque)  # (txnr, seq, digest) handed over
    replay: deque[bytes] = field(default_factory=deque)  # the previous session's unacknowledged digests


class RelpServer(SyslogServer):
    """A RELP listener built from a (tcp or tls) :class:`SyslogConfig`; ``name`` is the input name."""

    def __init__(self, config: SyslogConfig, name: str, clock: Clock = wall_ms, stop_grace_s: float = 5.0) -> None:
        if config.protocol not in ("tcp", "tls"):
            raise ConfigError([Issue("bad-value", f"inputs.{name}.protocol: relp runs over tcp or tls")])
        super().__init__(config, name, clock, stop_grace_s)
        self._durable: Durable | None = None
        self._unacked_total = metrics.RELP_UNACKED.labels(input=name)
        self._duplicates = metrics.RELP_DUPLICATES.labels(input=name)
        self._tails: OrderedDict[str, deque[bytes]] = OrderedDict()  # address -> unacked digests at its end
        self._writers: dict[_Conn, asyncio.StreamWriter] = {}
        self._peer_log.reasons = {**self._peer_log.reasons, **_RELP_PEER_REASONS}

    async def start(self, sink: Sink, durable: Durable | None = None) -> None:  # type: ignore[override]
        """Bind; ``durable`` is required (acks wait for it), see the module docstring."""
        if durable is None:
            raise ConfigError([Issue("unavailable", f"inputs.{self.name}: a relp input needs the daemon's "
                                                    "durable log to acknowledge messages (role = \"all\")")])
        self._durable = durable
        await super().start(sink)

    async def run(self, sink: Sink, durable: Durable | None = None) -> None:  # type: ignore[override]
        await self.start(sink, durable)
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def stop(self, drain_s: float = 0.0) -> None:
        """Send every session the ``serverclose`` hint (the client closes the session; what it has not seen
        acknowledged stays in its queue), then stop as the syslog server does: for up to ``drain_s`` the
        sessions go on until their clients close them, and messages being handed over get the grace time
        to become durable and be acknowledged."""
        for writer in list(self._writers.values()):
            try:
                writer.write(encode_frame(0, "serverclose"))
            except (ConnectionError, RuntimeError):
                pass
        await super().stop(drain_s)

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn,
                         origin: str) -> None:
        framer = RelpFramer(self.config.max_message_bytes)
        session = _Session(replay=self._tails.pop(conn.source, deque()))
        idle_s = self.config.idle_timeout_ms / 1000
        self._writers[conn] = writer
        try:
            while not self._stopping:
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), idle_s)
                except (TimeoutError, asyncio.TimeoutError):
                    self._error("idle_timeout", conn.peer)
                    return
                except (ConnectionError, ssl.SSLError, OSError):
                    self._error("read")
                    return
                if not data:
                    return
                self._bytes.inc(len(data))
                conn.active_ns = time.monotonic_ns()
                try:
                    frames = framer.feed(data)
                except RelpError as exc:
                    self._error(exc.reason, conn.peer)
                    return
                if frames and not await self._session_step(session, frames, reader, writer, conn, origin):
                    return
        finally:
            self._writers.pop(conn, None)
            if session.unacked:  # in our log, never acknowledged: the client will send them again
                self._unacked_total.inc(len(session.unacked))
                self._remember_tail(conn.source, session)

    async def _session_step(self, session: _Session, frames: list[Frame], reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, conn: _Conn, origin: str) -> bool:
        """Hand over the syslog frames of one read, wait until they are durable, answer every frame in
        order. False when the session ends."""
        replies: list[bytes] = []
        go_on = True
        conn.delivered = conn.delivering = True
        try:
            received_ms = self._clock()
            last_seq = 0
            for f in frames:
                if session.expect and f.txnr != session.expect:
                    self._error("bad_txnr", conn.peer)
                    go_on = False
                    break
                session.expect = next_txnr(f.txnr)
                if f.command == "syslog":
                    if not session.opened:
                        self._error("relp_protocol", conn.peer)
                        replies.append(encode_frame(f.txnr, "rsp", b"500 protocol error: no open"))
                        go_on = False
                        break
                    if f.truncated:
                        self._drop("oversized")
                    msg = f.data.rstrip(_TRAILING)
                    digest = hashlib.blake2b(f.data, digest_size=16).digest()
                    if session.replay:
                        if session.replay[0] == digest:
                            session.replay.popleft()
                            self._duplicates.inc()
                        else:
                            session.replay.clear()
                    seq = 0
                    if msg:
                        seq = await self._hand(msg, origin, received_ms)
                    else:
                        self._drop("empty")
                    last_seq = max(last_seq, seq)
                    session.unacked.append((f.txnr, seq, digest))
                    replies.append(encode_frame(f.txnr, "rsp", b"200 OK"))
                elif f.command == "open":
                    data, ok = open_response(parse_offers(f.data))
                    replies.append(encode_frame(f.txnr, "rsp", data))
                    if not ok or session.opened:
                        self._error("relp_protocol", conn.peer)
                        go_on = False
                        break
                    session.opened = True
                elif f.command == "close":
                    replies.append(encode_frame(f.txnr, "rsp"))
                    go_on = False
                    break
                else:
                    self._error("relp_protocol", conn.peer)
                    replies.append(encode_frame(f.txnr, "rsp", b"500 unknown command"))
            if last_seq and self._durable is not None:
                await self._durable(last_seq)
            if writer.transport.is_closing() or reader.at_eof():  # the peer went away meanwhile (a
                return False  # RELP client never half-closes): these acks would never arrive
            if replies:
                writer.write(b"".join(replies))
                await writer.drain()
                session.unacked.clear()
        except (ConnectionError, RuntimeError, OSError):
            self._error("write")
            return False
        finally:
            conn.delivering = False
        return go_on

    async def _hand(self, msg: bytes, origin: str, received_ms: int) -> int:
        sink = self._sink
        if sink is None:
            return 0
        seq = await sink(RawRecord(input=self.name, format=self.config.format, data=msg,
                                   received_ms=received_ms, origin=origin))
        self._received.inc()
        self._last.set(received_ms / 1000)
        return int(seq or 0)

    def _remember_tail(self, source: str, session: _Session) -> None:
        self._tails[source] = deque(d for _, _, d in session.unacked)
        self._tails.move_to_end(source)
        while len(self._tails) > _PEERS_REMEMBERED:
            self._tails.popitem(last=False)

