"""File tailing: globs, rotation, gzip backfill and persisted offsets.

Two layers: a synchronous core (:class:`LineSplitter` turns bytes into lines with a size cap,
:class:`BoundedGunzip` decompresses with output caps, the fingerprint helpers identify files) and a thin
asyncio shell (:class:`FileTailer`) that polls the globs, reads, awaits the sink and keeps the offsets.

Identity of a file: device + inode, checked against a fingerprint (a hash of the first
``FINGERPRINT_BYTES`` bytes, or of the whole file while it is shorter). The fingerprint keeps a new file
that reuses a deleted file's inode from inheriting the old offset. A new inode whose first bytes AND whose
``TAIL_BYTES`` bytes just before a remembered offset equal those of a file we read is taken for a copy of
it (the copy ``copytruncate`` makes, the ``.gz`` that ``compress`` makes later) and continues at that
offset, so that content is not read twice; files that merely share a header are read whole. A copy found
while still shorter than our offset is read from its start (duplicates, never loss). Rotation shapes:

* **rename + create** (logrotate's default): the renamed file keeps its inode; its open descriptor is read
  to its end (also whatever the writer still appends before it reopens), and it is closed once it has been
  idle at its end for ``rotate_wait``; the new file at the path is read from its start. No loss, no
  duplicate.
* **copytruncate**: the file shrinks below our offset; we restart at 0. The lines written between our last
  read and the truncation are the *copytruncate gap*: they are only in the copy. When the glob also matches
  the copy (``app.log*``) the copy is recognised by its fingerprint and read from our old offset to its end,
  which closes the gap; otherwise the gap is lost (zero when the tailer keeps up, i.e. has read everything
  before logrotate copies; at most one ``poll_interval`` of writes otherwise). This is unavoidable for any
  tailer: the truncation destroys the bytes.
* **truncate in place**, and truncate-then-rewrite past our offset between two polls: detected by the size
  and by the fingerprint; restart at 0.
* **delete + recreate**, inode reuse: the new file has a different fingerprint, so it starts at 0.
* **symlinks** are followed (identity is the target's); a swapped symlink is a rename rotation.
* **rotation while stopped**: after a restart, a file we were reading that is gone from its path is looked
  for in its directory under a rotated name (``app.log.1``, ``app.log-20240101``) and read to its end.

Lines: split at LF; one CR before the LF is removed; empty lines are skipped (their bytes still count in
the offset). A line longer than ``max_line_bytes`` is delivered cut at the limit once its LF arrives
(``siem_input_dropped_total{reason="oversized"}``); the rest of it is discarded as it is read, so memory per
file stays at ``max_line_bytes``. A partial last line (no LF yet) is never delivered early: it is kept
unread until its LF arrives, also across a clean stop (the offset stays at its start). Only when a file is
final - a rotated or deleted file idle for ``rotate_wait``, or the end of a ``.gz`` - is a last line without
LF delivered as it is.

``.gz`` files matching a glob (``read_gz = true``) are read once, after their size and mtime were equal in
two scans (so a ``.gz`` still being written is not read early), streamed through :class:`BoundedGunzip`
(``max_gz_bytes`` of output and ``max_gz_ratio`` output/input at most; a bomb stops that file with
``siem_input_errors_total{reason="bomb"}``). A ``.gz`` whose content we already tailed uncompressed (same
fingerprint) continues at the old offset, i.e. normally reads nothing.

Offsets (the end of the last line handed to the sink, in decompressed bytes for ``.gz``) are kept in
``<state_dir>/files-<name>.json``, written with :func:`siem.statefile.write_atomic`. Two ways to commit:

* ``autocommit=True`` (the simple mode): after lines were handed to the sink, at most once a second (or
  per ``poll_interval`` if longer), and at :meth:`FileTailer.stop`. The sink only enqueues, so a crash can lose what was
  enqueued but not yet durable downstream (a clean stop is exact: no line lost, none read twice).
* ``autocommit=False`` (the daemon's crash-safe mode): take ``p = tailer.positions()`` - it covers exactly
  the lines already handed to the sink - make everything handed to the sink so far durable (e.g. wait for
  the durable log to append and fsync everything enqueued before ``positions()`` was called), then
  ``tailer.commit(p)``. After ``kill -9`` the tailer re-reads from the last commit: at-least-once.

Errors (all counted in ``siem_input_errors_total{reason}``, none stops the tailer): ``permission`` (retried
every scan, counted once per episode), ``not_regular`` (a directory or FIFO matched the glob), ``io``,
``bomb``, ``truncated_gzip``, ``bad_gzip``, ``trailing_garbage``. ``start_at`` applies on the very first run
only (no state file yet) to the files found by the first scan; every file that appears later is read from
its beginning, so a rotation never skips lines.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import logging
import os
import re
import stat
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from siem import metrics
from siem.collect import RawRecord, Sink, commit_positions
from siem.errors import InputError, Issue, StateError
from siem.statefile import read_json, write_json_atomic
from siem.timeutil import Clock, monotonic_ms, wall_ms
from siem.tomlcheck import TableReader as _TableReader
from siem.tomlcheck import did_you_mean, parse_size_bytes

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 256
TAIL_BYTES = 64  # the bytes just before an offset, kept to check that a copy really continues there
READ_CHUNK = 64 * 1024
ROUND_BUDGET = 1024 * 1024  # bytes read per file per round, so one big file cannot starve the others
RETIRED_KEEP_MS = 3 * 86_400_000  # a rotated file's fingerprint is remembered this long (its .gz comes later)
RETIRED_MAX = 2_000
COMMIT_EVERY_MS = 1000  # autocommit: at most this often while lines flow (and at stop)
STATE_VERSION = 1
YIELD_EVERY = 256  # lines handed to the sink between two yields to the event loop

StartAt = Literal["beginning", "end"]

# ------------------------------------------------------------------------------------------------------
# configuration helpers (also used by cloudtrail.py and journald.py)

class TableReader(_TableReader):
    """An input's table (siem.tomlcheck): ``type``, which selects the input kind, is a known key."""

    def __init__(self, table: object, where: str, known: Iterable[str]) -> None:
        super().__init__(table, where, (*known, "type"))

    def format_(self, key: str, default: str | None) -> str:
        """A key of siem.parse.PARSERS (checked when the registry exists)."""
        fmt = self.string(key, default)
        if fmt is None:
            self.bad(key, "missing-key", "required (a parser name, e.g. nginx, syslog, cloudtrail)")
            return ""
        known = known_formats()
        if known is not None and fmt not in known:
            self.bad(key, "unknown-format", f"unknown format {fmt!r}{did_you_mean(fmt, known)} "
                                            f"(known: {', '.join(sorted(known))})")
        return fmt


def known_formats() -> frozenset[str] | None:
    """The parser registry's keys, or None while siem.parse has no registry."""
    try:
        from siem.parse import PARSERS  # noqa: PLC0415 - optional at this layer
    except ImportError:
        return None
    return frozenset(PARSERS)


def state_file_name(prefix: str, name: str) -> str:
    """A file name for an input's state: the name with anything unusual replaced."""
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json"


# ------------------------------------------------------------------------------------------------------
# bounded gzip


class GzipError(InputError):
    """A gzip stream was refused or is damaged; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_GZIP_MAGIC = b"\x1f\x8b"
RATIO_FLOOR_BYTES = 1024 * 1024  # the ratio is judged only past this much output


class BoundedGunzip:
    """Incremental gzip decoder with caps on total output and on the output/input ratio.

    ``read(n)`` returns at most ``n`` decompressed bytes, ``b""`` at the clean end. Memory stays at about
    ``n`` + one input chunk whatever the stream holds. Multi-member streams are read whole; NUL padding
    after the last member is ignored (as gzip does). Raises :class:`GzipError` with reason ``bomb``
    (over ``max_bytes`` or ``max_ratio``), ``truncated_gzip`` (input ends inside a member), ``bad_gzip``
    (not gzip, bad header, corrupt data, bad CRC or length) or ``trailing_garbage`` (non-gzip bytes after
    a complete member; everything before them was returned and is intact). An error found while some
    output of the same call was ready is raised by the next call, so no verified byte is withheld.
    """

    def __init__(self, fileobj: BinaryIO, *, max_bytes: int, max_ratio: float, in_chunk: int = READ_CHUNK) -> None:
        self._f = fileobj
        self._max_bytes = max_bytes
        self._max_ratio = max_ratio
        self._in_chunk = in_chunk
        self._d = zlib.decompressobj(31)
        self._pending = b""  # compressed bytes not yet given to the decompressor
        self._started = False  # a member has started (some input was fed)
        self._eof_input = False
        self._done = False
        self._error: GzipError | None = None
        self.total_in = 0
        self.total_out = 0

    def _next_input(self) -> bytes:
        if self._d.unconsumed_tail:
            return self._d.unconsumed_tail
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._eof_input:
            return b""
        data = self._f.read(self._in_chunk)
        if not data:
            self._eof_input = True
        self.total_in += len(data)
        return data

    def _member_end(self) -> None:
        """The current member ended: start the next one, accept NUL padding, or flag trailing garbage."""
        rest = self._d.unused_data
        while len(rest) < 2 and not self._eof_input:
            more = self._f.read(self._in_chunk)
            if not more:
                self._eof_input = True
                break
            self.total_in += len(more)
            rest += more
        if not rest:
            self._done = True
            return
        if rest[:2] == _GZIP_MAGIC:
            self._d = zlib.decompressobj(31)
            self._pending = rest
            return
        while True:  # NUL padding is allowed; anything else is garbage
            if rest.strip(b"\0"):
                self._done = True
                raise GzipError("trailing_garbage", "non-gzip bytes after the end of the gzip stream")
            rest = b"" if self._eof_input else self._f.read(self._in_chunk)
            if not rest:
                self._done = True
                return
            self.total_in += len(rest)

    def read(self, n: int) -> bytes:
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        out: list[bytes] = []
        got = 0
        try:
            while got < n and not self._done:
                data = self._next_input()
                if not data:
                    if not self._started:
                        self._done = True  # an empty file: nothing to read
                        break
                    raise GzipError("truncated_gzip", "the gzip stream ends before its end marker (truncated)")
                self._started = True
                try:
                    piece = self._d.decompress(data, n - got)
                except zlib.error as exc:
                    raise GzipError("bad_gzip", f"not a valid gzip stream: {exc}") from None
                if piece:
                    out.append(piece)
                    got += len(piece)
                    self.total_out += len(piece)
                    self._check_caps()
                if self._d.eof:
                    self._member_end()
        except GzipError as exc:
            self._done = True
            if out:
                self._error = exc
                return b"".join(out)
            raise
        return b"".join(out)

    def _check_caps(self) -> None:
        if self.total_out > self._max_bytes:
            raise GzipError("bomb", f"decompressed size exceeds the cap of {self._max_bytes} bytes")
        if self.total_out > RATIO_FLOOR_BYTES and self.total_out > self._max_ratio * max(self.total_in, 1):
            raise GzipError(
                "bomb", f"compression ratio exceeds {self._max_ratio:g}:1 ({self.total_out} bytes from "
                f"{self.total_in})")


# ------------------------------------------------------------------------------------------------------
# lines


class LineSplitter:
    """Splits a byte stream into lines with a cap; keeps at most ``max_line_bytes`` between calls.

    The result does not depend on how the stream is cut into chunks (a CR at the end of a chunk is held
    back until the next chunk shows whether an LF follows)."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._overflow = False
        self._cr = False  # the last chunk ended with a CR that is not in _buf yet

    def reset(self) -> None:
        self._buf.clear()
        self._overflow = False
        self._cr = False

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._overflow or self._cr

    def _take(self, seg: bytes | memoryview) -> None:
        if self._overflow:
            return
        room = self.max_line_bytes - len(self._buf)
        if len(seg) > room:
            self._buf += seg[:room]
            self._overflow = True
        else:
            self._buf += seg

    def feed(self, data: bytes, base: int) -> list[tuple[bytes, int, bool]]:
        """Lines completed by ``data`` (which starts at stream offset ``base``) as (line, end, truncated);
        ``end`` is the stream offset just past the line's LF."""
        if not data:
            return []
        if self._cr:
            self._cr = False
            if data[0] != 10:
                self._take(b"\r")  # not a CRLF: the CR belongs to the line
        out: list[tuple[bytes, int, bool]] = []
        if b"\r" not in data:  # the usual case: one C-level split, no per-line buffer work
            parts = data.split(b"\n")
            rest = parts.pop()
            end = base
            cap = self.max_line_bytes
            for i, part in enumerate(parts):
                end += len(part) + 1
                if i == 0 and (self._buf or self._overflow):  # completes the line held from the last chunk
                    self._take(part)
                    out.append((bytes(self._buf), end, self._overflow))
                    self._buf.clear()
                    self._overflow = False
                else:
                    out.append((part, end, False) if len(part) <= cap else (part[:cap], end, True))
            self._take(rest)
            return out
        view = memoryview(data)
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest_end = len(data)
                if rest_end > start and data[rest_end - 1] == 13:
                    rest_end -= 1
                    self._cr = True
                self._take(view[start:rest_end])
                break
            seg_end = nl - 1 if nl > start and data[nl - 1] == 13 else nl  # drop one CR before LF
            self._take(view[start:seg_end])
            out.append((bytes(self._buf), base + nl + 1, self._overflow))
            self._buf.clear()
            self._overflow = False
            start = nl + 1
        return out

    def final(self) -> tuple[bytes, bool] | None:
        """The unfinished last line, at the end of a stream that will not grow; None if there is none.
        A CR that ended the stream is dropped."""
        if not self.pending:
            return None
        line, truncated = bytes(self._buf), self._overflow
        self.reset()
        return line, truncated


# ------------------------------------------------------------------------------------------------------
# fingerprints


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _fd_prefix(fd: int, n: int) -> bytes:
    return os.pread(fd, n, 0) if n > 0 else b""


def _gz_prefix(path: str, n: int, max_bytes: int, max_ratio: float) -> bytes:
    with open(path, "rb") as f:
        gz = BoundedGunzip(f, max_bytes=max_bytes, max_ratio=max_ratio, in_chunk=4096)
        out = b""
        while len(out) < n:
            piece = gz.read(n - len(out))
            if not piece:
                break
            out += piece
        return out


# ------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True, slots=True)
class FileInputConfig:
    """``[inputs.<name>]`` with ``type = "files"``."""

    paths: tuple[str, ...]
    format: str
    poll_interval_ms: int = 250
    max_line_bytes: int = 65536
    start_at: StartAt = "beginning"
    read_gz: bool = True
    max_gz_bytes: int = 4 * 1024**3
    max_gz_ratio: float = 1000.0
    rotate_wait_ms: int = 5000


_FILE_KEYS = ("paths", "format", "poll_interval", "max_line_bytes", "start_at", "read_gz", "max_gz_bytes",
              "max_gz_ratio", "rotate_wait")


def config_from_toml(table: dict, where: str) -> tuple[FileInputConfig | None, list[Issue]]:
    """Validate one ``[inputs.<name>]`` table of type files; every problem is returned, none raised."""
    r = TableReader(table, where, _FILE_KEYS)
    paths = r.str_list("paths", (), required=True)
    for p in paths:
        if not os.path.isabs(p):
            r.bad("paths", "bad-value", f"{p!r} is not an absolute path")
    fmt = r.format_("format", None)
    config = FileInputConfig(
        paths=paths,
        format=fmt,
        poll_interval_ms=r.duration_ms("poll_interval", 250, 10, 3_600_000),
        max_line_bytes=r.size("max_line_bytes", 65536, 64, 64 * 1024**2),
        start_at=r.choice("start_at", "beginning", ("beginning", "end")),  # type: ignore[arg-type]
        read_gz=r.boolean("read_gz", True),
        max_gz_bytes=r.size("max_gz_bytes", 4 * 1024**3, 1024, 1024**4),
        max_gz_ratio=r.number("max_gz_ratio", 1000.0, 2.0, 1e6),
        rotate_wait_ms=r.duration_ms("rotate_wait", 5000, 0, 86_400_000),
    )
    if r.issues:
        return None, r.issues
    return config, []


# ------------------------------------------------------------------------------------------------------
# runtime


@dataclass(slots=True)
class _Known:
    """What we remember of a file we no longer hold open (rotated away, deleted, or from the state file)."""

    path: str
    dev: int
    ino: int
    gz: bool
    fp_len: int
    fp: str
    offset: int
    size: int
    mtime_ns: int
    done: bool
    retired_ms: int
    tail_len: int = 0  # the TAIL_BYTES (or fewer) bytes just before offset, as length + fingerprint
    tail_fp: str = ""
    from_state: bool = False  # loaded from the state file as a file being read (not retired) at the stop

    def to_json(self) -> dict:
        return {"path": self.path, "dev": self.dev, "ino": self.ino, "gz": self.gz, "fp_len": self.fp_len,
                "fp": self.fp, "offset": self.offset, "size": self.size, "mtime_ns": self.mtime_ns,
                "done": self.done, "retired_ms": self.retired_ms, "tail_len": self.tail_len,
                "tail_fp": self.tail_fp}

    @staticmethod
    def from_json(d: dict) -> _Known:
        return _Known(str(d["path"]), int(d["dev"]), int(d["ino"]), bool(d["gz"]), int(d["fp_len"]),
                      str(d["fp"]), int(d["offset"]), int(d["size"]), int(d["mtime_ns"]), bool(d["done"]),
                      int(d["retired_ms"]), int(d.get("tail_len", 0)), str(d.get("tail_fp", "")))


@dataclass(slots=True)
class _File:
    """A file we track: open descriptor (plain files) or a gzip reader (while a .gz is being read)."""

    path: str
    dev: int
    ino: int
    gz: bool
    fp_len: int
    fp: str
    offset: int  # end of the last line handed to the sink: the commit point
    read_pos: int  # how far we have read (>= offset; the gap is the unfinished line in the splitter)
    splitter: LineSplitter
    size: int = -1
    mtime_ns: int = -1
    fd: int | None = None
    gz_file: BinaryIO | None = None
    gz_reader: BoundedGunzip | None = None
    done: bool = False  # .gz only: read to its end (or refused)
    at_path: bool = True  # matched by the last scan
    idle_since_ms: int | None = None
    io_error: bool = False
    tail: bytes = b""  # the raw bytes (at most TAIL_BYTES) just before offset
    raw_tail: bytes = b""  # the raw bytes (at most TAIL_BYTES) just before read_pos
    verify_tail: tuple[int, str] | None = None  # .gz continuing another file's offset: check these bytes
    shadow_of: str | None = None  # a copy of this live file (key): not read while that file is (see _mirror)

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"

    @property
    def tail_len(self) -> int:
        return len(self.tail)

    @property
    def tail_fp(self) -> str:
        return fingerprint(self.tail)

    def known(self, now_ms: int) -> _Known:
        return _Known(self.path, self.dev, self.ino, self.gz, self.fp_len, self.fp, self.offset, self.size,
                      self.mtime_ns, self.done, now_ms, len(self.tail), fingerprint(self.tail))


class FileTailer:
    """Tails the files matching ``config.paths``; see the module docstring for the guarantees."""

    def __init__(self, config: FileInputConfig, name: str, state_dir: str | Path, *, autocommit: bool = True,
                 clock: Clock = wall_ms) -> None:
        self.config = config
        self.name = name
        self.state_path = Path(state_dir) / state_file_name("files", name)
        self.autocommit = autocommit
        self._clock = clock
        self._live: dict[str, _File] = {}
        self._known: list[_Known] = []
        self._path_errors: dict[str, str] = {}
        self._gz_seen: dict[str, tuple[int, int]] = {}  # path -> (size, mtime) of the last scan, to settle
        self._gz_at_start: set[str] = set()  # .gz paths of the first scan of a first run (start_at = "end")
        self._first_run = True
        self._resumed = False  # state was loaded: look for files rotated while we were stopped
        self._loaded = False
        self._stopping = asyncio.Event()
        self._running: asyncio.Future[None] | None = None
        self._dirty = False
        self._last_commit_ms = 0
        self._state_problem: str | None = None
        self._since_yield = 0
        self._received = metrics.EVENTS_RECEIVED.labels(input=name, format=config.format)
        self._bytes = metrics.BYTES_RECEIVED.labels(input=name)
        self._last = metrics.INPUT_LAST_EVENT.labels(input=name)

    # -- public -----------------------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Tail until :meth:`stop` or cancellation; commits positions at the end when ``autocommit``."""
        self._running = asyncio.get_running_loop().create_future()
        try:
            self._load()
            next_scan = 0
            while not self._stopping.is_set():
                now = monotonic_ms()
                try:
                    if now >= next_scan:
                        self._scan()
                        next_scan = now + self.config.poll_interval_ms
                    more = await self._round(sink)
                except Exception:  # a bug must not end the input: say it loudly, count it, go on
                    log.exception("input %s: unexpected error while tailing", self.name)
                    self._error("internal")
                    more = False
                if self.autocommit and self._dirty and monotonic_ms() - self._last_commit_ms >= \
                        max(self.config.poll_interval_ms, COMMIT_EVERY_MS):
                    self._autocommit()
                if not more:
                    delay = max(next_scan - monotonic_ms(), 0) / 1000
                    try:
                        await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(0)
        finally:
            self._close_all()
            if self.autocommit:
                self._autocommit(final=True)
            if not self._running.done():
                self._running.set_result(None)

    async def stop(self) -> None:
        """Ask :meth:`run` to finish after the line it is delivering; wait for it; persist positions
        (in autocommit mode; otherwise the owner commits what is durable)."""
        self._stopping.set()
        if self._running is not None:
            await asyncio.shield(self._running)
        elif self.autocommit and self._loaded:
            self._autocommit(final=True)

    def positions(self) -> dict:
        """A JSON-able snapshot of the offsets of every line already handed to the sink. Before :meth:`run`
        has started, the committed state (loaded now), not an empty snapshot that would forget it."""
        self._load()
        now = self._clock()
        files = [f.known(now).to_json() | {"retired_ms": 0} for f in self._live.values()]
        files += [k.to_json() for k in self._known]
        return {"version": STATE_VERSION, "files": files}

    def commit(self, positions: dict) -> None:
        """Persist a snapshot from :meth:`positions` atomically (raises StateError if the disk refuses)."""
        write_json_atomic(self.state_path, positions)

    # -- state ------------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            data = read_json(self.state_path)
        except StateError as exc:
            log.error("input %s: %s; reading every file from its start", self.name, exc)
            self._error("corrupt_state")
            self._first_run = False  # not a first run: start_at = "end" would skip what was never read
            return
        if data is None:
            return
        self._first_run = False
        try:
            entries = data["files"] if isinstance(data, dict) else []
            for d in entries:
                k = _Known.from_json(d)
                if k.retired_ms == 0:
                    k.retired_ms = self._clock()
                    k.from_state = self._resumed = True
                self._known.append(k)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("input %s: state file %s has an unexpected shape (%s); ignoring it", self.name,
                      self.state_path, exc)
            self._error("corrupt_state")
            self._known.clear()

    def _autocommit(self, final: bool = False) -> None:
        if not self._dirty and not final:
            return
        self._state_problem = commit_positions(self.name, lambda: self.commit(self.positions()), self._state_problem)
        self._dirty = self._dirty and self._state_problem is not None
        self._last_commit_ms = monotonic_ms()

    # -- metrics ----------------------------------------------------------------------------------

    def _error(self, reason: str) -> None:
        metrics.INPUT_ERRORS.labels(input=self.name, reason=reason).inc()

    def _path_error(self, path: str, reason: str, detail: object) -> None:
        if self._path_errors.get(path) != reason:
            self._path_errors[path] = reason
            self._error(reason)
            log.warning("input %s: %s: %s (%s); retrying every scan", self.name, path, reason, detail)

    # -- scanning ---------------------------------------------------------------------------------

    def _scan(self) -> None:
        first = self._first_run
        self._first_run = False
        matched: set[str] = set()
        for pattern in self.config.paths:
            matched.update(glob.glob(pattern, recursive=True))
        seen: set[str] = set()
        for path in sorted(matched):
            is_gz = path.endswith(".gz")
            if is_gz and not self.config.read_gz:
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._path_error(path, "permission" if isinstance(exc, PermissionError) else "io", exc)
                continue
            if not stat.S_ISREG(st.st_mode):
                self._path_error(path, "not_regular", "not a regular file")
                continue
            key = f"{st.st_dev}:{st.st_ino}"
            f = self._live.get(key)
            if f is not None and f.gz and f.done and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                del self._live[key]  # a finished .gz changed: judge it again below
                f = None
            if f is not None:
                seen.add(key)
                f.path = path
                f.at_path = True
                f.idle_since_ms = None
                continue
            if is_gz:
                if first:
                    self._gz_at_start.add(path)
                if self._gz_seen.get(path) != (st.st_size, st.st_mtime_ns):
                    self._gz_seen[path] = (st.st_size, st.st_mtime_ns)
                    continue  # not settled yet: read it when the next scan sees it unchanged
                self._gz_seen.pop(path, None)
            if self._open(path, st, is_gz, first or path in self._gz_at_start):
                seen.add(key)
                self._path_errors.pop(path, None)
        if self._resumed:
            self._resumed = False
            self._find_rotated_while_stopped()
        for key, f in list(self._live.items()):
            if key not in seen:
                f.at_path = False
                if f.gz:  # a .gz that went away: remember it, stop reading it
                    self._retire(f)
        for path in [p for p in self._gz_seen if p not in matched]:
            del self._gz_seen[path]
        self._prune_known()

    def _find_rotated_while_stopped(self) -> None:
        """After a restart: a file we were reading that is no longer at its path may have been rotated
        while we were stopped. Look for it next to its old path under a rotated name (``app.log.1``,
        ``app.log-20240101``; not ``.gz``) and finish reading it, so the lines written between the stop
        and the rotation are not lost even when the glob does not match rotated names."""
        for k in [k for k in self._known if k.from_state and not k.gz]:
            directory, base = os.path.split(k.path)
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if not name.startswith(base) or name == base or name[len(base)] not in ".-_" \
                        or name.endswith(".gz"):
                    continue
                try:
                    st = os.stat(entry.path)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (k.dev, k.ino) and stat.S_ISREG(st.st_mode):
                    log.info("input %s: %s was rotated to %s while stopped; reading its rest", self.name, k.path,
                             entry.path)
                    self._open(entry.path, st, False, False)
                    break
        for k in self._known:
            k.from_state = False

    def _open(self, path: str, st: os.stat_result, is_gz: bool, first: bool) -> bool:
        """Start tracking a file we hold no descriptor for; True when it is tracked now."""
        fd: int | None = None
        try:
            if is_gz:
                prefix = _gz_prefix(path, FINGERPRINT_BYTES, self.config.max_gz_bytes, self.config.max_gz_ratio)
            else:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                st2 = os.fstat(fd)
                if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(st2.st_mode):
                    os.close(fd)
                    return False  # replaced between stat and open; the next scan sees the new one
                st = st2
                prefix = _fd_prefix(fd, FINGERPRINT_BYTES)
        except PermissionError as exc:
            self._path_error(path, "permission", exc)
            return False
        except GzipError as exc:
            self._gz_failed(path, st, exc)
            return True
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            if not isinstance(exc, FileNotFoundError):
                self._path_error(path, "io", exc)
            return False
        f = _File(path=path, dev=st.st_dev, ino=st.st_ino, gz=is_gz, fp_len=len(prefix), fp=fingerprint(prefix),
                  offset=0, read_pos=0, splitter=LineSplitter(self.config.max_line_bytes), size=st.st_size,
                  mtime_ns=st.st_mtime_ns, fd=fd)
        prior = self._match_known(f, prefix, fd)
        if prior is not None:
            f.offset = prior.offset
            if isinstance(prior, _File) and not is_gz:
                f.shadow_of = prior.key
            same_inode = (prior.dev, prior.ino) == (f.dev, f.ino)
            f.done = prior.done and prior.gz and is_gz and same_inode
            if is_gz and not same_inode and prior.offset > 0:
                f.verify_tail = (prior.tail_len, prior.tail_fp)
        elif first and self.config.start_at == "end":
            if is_gz:
                f.done = True
            elif fd is not None:
                f.offset = _last_line_end(fd, st.st_size)
        if not is_gz and f.offset > st.st_size:
            f.offset = 0  # shrank since we knew it: truncated
        if fd is not None and f.offset > 0:
            try:
                f.tail = _bytes_before(fd, f.offset)
            except OSError:
                f.tail = b""
        f.raw_tail = f.tail
        f.read_pos = f.offset
        if f.gz and not f.done:
            f.size = -1  # make the first round open the reader
        self._live[f.key] = f
        self._dirty = True
        return True

    def _gz_failed(self, path: str, st: os.stat_result, exc: GzipError) -> None:
        """A .gz that cannot even be fingerprinted: count once, remember it as done."""
        self._error(exc.reason)
        log.warning("input %s: %s: %s", self.name, path, exc)
        f = _File(path=path, dev=st.st_dev, ino=st.st_ino, gz=True, fp_len=0, fp=fingerprint(b""), offset=0,
                  read_pos=0, splitter=LineSplitter(self.config.max_line_bytes), size=st.st_size,
                  mtime_ns=st.st_mtime_ns, done=True)
        self._live[f.key] = f

    def _match_known(self, f: _File, prefix: bytes, fd: int | None) -> _Known | _File | None:
        """The remembered file this one continues: same inode with the same start (a reopened or resumed
        file), else the same content under another inode (a copy or a compressed rotation): same first
        bytes, and for a plain file also the same bytes just before the remembered offset (checked later
        for a .gz, see _read_gz). The furthest such offset wins."""
        for i, k in enumerate(self._known):
            if (k.dev, k.ino) == (f.dev, f.ino) and k.gz == f.gz and k.fp_len <= len(prefix) \
                    and fingerprint(prefix[: k.fp_len]) == k.fp:
                del self._known[i]
                return k
        return self._content_match(f, prefix, fd)

    def _content_match(self, f: _File, prefix: bytes, fd: int | None) -> _Known | _File | None:
        if not prefix:
            return None
        fp = fingerprint(prefix)
        best: _Known | _File | None = None
        candidates: list[_Known | _File] = [*self._known, *self._live.values()]
        for c in candidates:
            if c is f or c.fp_len != len(prefix) or c.fp != fp or (best is not None and c.offset <= best.offset):
                continue
            if c.offset > 0 and fd is not None and not _tail_matches(fd, f.size, c.offset, c.tail_len, c.tail_fp):
                continue
            best = c
        return best

    def _mirror(self, f: _File, fd: int) -> bool:
        """A copy of a file we are still reading (cp, or copytruncate before the truncate): everything in it
        is also in the source, which is read instead; the copy's position follows the source's, so that if
        the source is truncated (or goes) the copy continues exactly where the source stopped. Reading both
        would deliver the lines between our offset at the copy's discovery and the truncate twice.
        False once the source is gone: then the copy is read from the position mirrored last."""
        src = self._live.get(f.shadow_of or "")
        if src is None or src is f:
            f.shadow_of = None
            return False
        if src.offset != f.offset:
            self._mirror_to(f, fd, src.offset)
        return True

    def _release_copies(self, src: _File) -> None:
        """The source of mirrored copies is truncated or gone: they go on from where it stopped."""
        for g in self._live.values():
            if g.shadow_of == src.key:
                g.shadow_of = None
                if g.fd is not None:
                    self._mirror_to(g, g.fd, src.offset)

    def _mirror_to(self, g: _File, fd: int, at: int) -> None:
        """Move copy g to the source's offset `at` (its size at most: a cp taken earlier is shorter)."""
        try:
            at = min(at, os.fstat(fd).st_size)
            if at == g.offset:
                return
            g.offset = g.read_pos = at
            g.tail = g.raw_tail = _bytes_before(fd, at)
        except OSError:
            return
        g.splitter.reset()
        self._dirty = True

    def _retire(self, f: _File) -> None:
        self._release_copies(f)
        self._close(f)
        self._live.pop(f.key, None)
        self._remember(f)
        self._dirty = True

    def _remember(self, f: _File) -> None:
        """Keep what a later copy or .gz of this content needs (nothing, if nothing was read of it)."""
        if f.offset <= 0 or f.fp_len <= 0:
            return
        k = f.known(self._clock())
        self._known = [o for o in self._known if (o.fp_len, o.fp, o.offset, o.tail_fp) !=
                       (k.fp_len, k.fp, k.offset, k.tail_fp)]
        self._known.append(k)

    def _prune_known(self) -> None:
        now = self._clock()
        keep = [k for k in self._known if now - k.retired_ms < RETIRED_KEEP_MS]
        if len(keep) > RETIRED_MAX:
            keep.sort(key=lambda k: k.retired_ms)
            keep = keep[-RETIRED_MAX:]
        if len(keep) != len(self._known):
            self._known = keep
            self._dirty = True

    def _close(self, f: _File) -> None:
        if f.fd is not None:
            os.close(f.fd)
            f.fd = None
        if f.gz_file is not None:
            f.gz_file.close()
            f.gz_file = None
            f.gz_reader = None

    def _close_all(self) -> None:
        for f in self._live.values():
            self._close(f)

    # -- reading ----------------------------------------------------------------------------------

    async def _round(self, sink: Sink) -> bool:
        """Read every tracked file once, up to ROUND_BUDGET each; True when some file has more waiting."""
        more = False
        for f in list(self._live.values()):
            if self._stopping.is_set():
                break
            if f.gz:
                if not f.done:
                    more |= await self._read_gz(f, sink)
            elif f.fd is not None:
                more |= await self._read_plain(f, f.fd, sink)
        return more

    async def _read_plain(self, f: _File, fd: int, sink: Sink) -> bool:
        if f.shadow_of is not None and self._mirror(f, fd):
            return False
        try:
            st = os.fstat(fd)
            if st.st_size < f.read_pos:
                self._truncated(f, fd, "size below our offset")
            elif (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                prefix = _fd_prefix(fd, FINGERPRINT_BYTES)
                if len(prefix) < f.fp_len or fingerprint(prefix[: f.fp_len]) != f.fp:
                    self._truncated(f, fd, "its first bytes changed")
                elif len(prefix) > f.fp_len:
                    f.fp_len, f.fp = len(prefix), fingerprint(prefix)
                    if f.read_pos == 0:  # nothing read yet: it may be a copy that was still empty when found
                        f.size = st.st_size
                        prior = self._content_match(f, prefix, fd)
                        if prior is not None and prior.offset > 0:
                            f.offset = f.read_pos = prior.offset
                            if isinstance(prior, _File):
                                f.shadow_of = prior.key
                            f.tail = f.raw_tail = _bytes_before(fd, f.offset)
            f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
            progressed = False
            budget = ROUND_BUDGET
            while f.read_pos < st.st_size and budget > 0:
                data = os.pread(fd, min(READ_CHUNK, st.st_size - f.read_pos, budget), f.read_pos)
                if not data:
                    break
                base = f.read_pos
                f.read_pos += len(data)
                budget -= len(data)
                progressed = True
                await self._deliver(f, f.splitter.feed(data, base), sink, data, base)
                if self._stopping.is_set():
                    break
            f.io_error = False
        except OSError as exc:
            if not f.io_error:
                f.io_error = True
                self._error("io")
                log.warning("input %s: reading %s: %s", self.name, f.path, exc)
            return False
        if progressed:
            f.idle_since_ms = None
            return budget <= 0
        if not f.at_path:  # rotated away or deleted, and at its end
            now = monotonic_ms()
            if f.idle_since_ms is None:
                f.idle_since_ms = now
            elif now - f.idle_since_ms >= self.config.rotate_wait_ms:
                last = f.splitter.final()
                if last is not None:
                    await self._deliver(f, [(last[0], f.read_pos, last[1])], sink, b"", f.read_pos)
                self._retire(f)
        return False

    def _truncated(self, f: _File, fd: int, why: str) -> None:
        """The file was truncated (copytruncate, truncate in place): remember the old content's offset
        under its fingerprint (so a copy of it can continue there), restart at 0."""
        log.info("input %s: %s was truncated (%s); reading it again from the start", self.name, f.path, why)
        self._release_copies(f)
        self._remember(f)
        f.offset = f.read_pos = 0
        f.tail = f.raw_tail = b""
        prefix = _fd_prefix(fd, FINGERPRINT_BYTES)
        f.fp_len, f.fp = len(prefix), fingerprint(prefix)
        f.splitter.reset()
        self._dirty = True

    async def _read_gz(self, f: _File, sink: Sink) -> bool:
        try:
            if f.gz_reader is None:
                f.gz_file = open(f.path, "rb")  # noqa: SIM115 - closed in _close
                st = os.fstat(f.gz_file.fileno())
                if (st.st_dev, st.st_ino) != (f.dev, f.ino):
                    raise FileNotFoundError(f.path)
                f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
                f.gz_reader = BoundedGunzip(f.gz_file, max_bytes=self.config.max_gz_bytes,
                                            max_ratio=self.config.max_gz_ratio)
                skip = f.offset  # resume: decompress and discard what was delivered before
                tail = b""
                while skip > 0:
                    piece = f.gz_reader.read(min(skip, READ_CHUNK))
                    if not piece:
                        break
                    skip -= len(piece)
                    tail = (tail + piece)[-TAIL_BYTES:]
                if f.verify_tail is not None and (skip > 0 or (len(tail), fingerprint(tail)) != f.verify_tail):
                    # not the content we read before after all (only the first bytes were equal): all of it
                    log.info("input %s: %s is not a copy of what we read; reading it whole", self.name, f.path)
                    f.verify_tail = None
                    f.offset = 0
                    self._close(f)
                    return True
                f.verify_tail = None
                f.read_pos = f.offset
                f.tail = f.raw_tail = tail
            budget = ROUND_BUDGET
            while budget > 0:
                data = f.gz_reader.read(READ_CHUNK)
                if not data:
                    last = f.splitter.final()
                    if last is not None:
                        await self._deliver(f, [(last[0], f.read_pos, last[1])], sink, b"", f.read_pos)
                    self._gz_finished(f)
                    return False
                base = f.read_pos
                f.read_pos += len(data)
                budget -= len(data)
                await self._deliver(f, f.splitter.feed(data, base), sink, data, base)
                if self._stopping.is_set():
                    break
            return True  # budget used up: more is waiting
        except GzipError as exc:
            self._error(exc.reason)
            log.warning("input %s: %s: %s; lines before the problem were delivered", self.name, f.path, exc)
            last = f.splitter.final() if exc.reason == "trailing_garbage" else None
            if last is not None:
                await self._deliver(f, [(last[0], f.read_pos, last[1])], sink, b"", f.read_pos)
            self._gz_finished(f)
            return False
        except OSError as exc:
            self._error("io")
            log.warning("input %s: reading %s: %s", self.name, f.path, exc)
            self._close(f)
            self._live.pop(f.key, None)  # the next scan looks at it again
            return False

    def _gz_finished(self, f: _File) -> None:
        self._close(f)
        f.done = True
        f.splitter.reset()
        self._dirty = True

    async def _deliver(self, f: _File, lines: list[tuple[bytes, int, bool]], sink: Sink, data: bytes,
                       base: int) -> None:
        """Hand lines to the sink, moving the offset (and the bytes just before it) after each one.
        ``data`` is the chunk read at stream offset ``base`` that completed these lines."""
        prev = f.raw_tail  # the bytes just before base
        if data:
            f.raw_tail = (prev + data[-TAIL_BYTES:])[-TAIL_BYTES:]
        if not lines:
            return
        name, fmt, origin = self.name, self.config.format, f.path
        received = received_bytes = 0  # counted once per chunk (a counter increment per line was 3% of the daemon)
        received_ms = self._clock()  # the lines of one read arrived together
        try:
            for line, end, truncated in lines:
                if truncated:
                    metrics.INPUT_DROPPED.labels(input=name, reason="oversized").inc()
                if line:
                    await sink(RawRecord(name, fmt, line, received_ms, origin))
                    received += 1
                    received_bytes += len(line)
                k = end - base
                tail = data[max(k - TAIL_BYTES, 0):k]
                if len(tail) < TAIL_BYTES:
                    tail = (prev + tail)[-TAIL_BYTES:]
                f.offset, f.tail = end, tail
                self._since_yield += 1
                if self._since_yield >= YIELD_EVERY:
                    self._since_yield = 0
                    await asyncio.sleep(0)  # a sink that never blocks must not starve other tasks (committers)
        finally:
            self._received.inc(received)
            self._bytes.inc(received_bytes)
        self._dirty = True
        self._last.set(time.time())


def _bytes_before(fd: int, offset: int) -> bytes:
    """The (at most TAIL_BYTES) bytes just before offset: what identifies a position in a file."""
    n = min(TAIL_BYTES, offset)
    return os.pread(fd, n, offset - n)


def _tail_matches(fd: int, size: int, offset: int, tail_len: int, tail_fp: str) -> bool:
    """Whether the file behind fd holds the remembered bytes just before offset."""
    if tail_len <= 0 or size < offset or tail_len > offset:
        return False
    try:
        return fingerprint(os.pread(fd, tail_len, offset - tail_len)) == tail_fp
    except OSError:
        return False


def _last_line_end(fd: int, size: int) -> int:
    """The offset just past the last LF within the final 64 KiB (for start_at = "end"), else ``size``."""
    start = max(size - READ_CHUNK, 0)
    tail = os.pread(fd, size - start, start)
    nl = tail.rfind(b"\n")
    return start + nl + 1 if nl >= 0 else (0 if start == 0 else size)


__all__ = ["BoundedGunzip", "FileInputConfig", "FileTailer", "GzipError", "LineSplitter", "TableReader",
           "config_from_toml", "parse_size_bytes"]
