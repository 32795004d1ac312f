"""LocalLog: the embedded durable log between intake and the engine.

An append-only log of opaque byte records kept in segment files under one directory::

    <dir>/LOCK                              flock'ed by the owning process (holds its pid)
    <dir>/00000000000000000000.seg          segment whose first record has offset 0
    <dir>/00000000000000120431.seg          ... named by their first offset (20 digits)
    <dir>/00000000000000120431.seg.bad-N    bytes cut off a torn tail at byte N (kept for forensics)

Offsets are record sequence numbers, increasing by one per record across segments. ``end_offset`` is the
offset the next record will get. A segment's record count is implied by the next segment's name.

Each record is framed as ``[length u32 BE][crc u32 BE][payload]``; the CRC-32 (zlib) covers the four
length bytes and the payload, so a zero-filled tail (length 0, crc 0) never passes as an empty record.

Durability (``fsync_interval_ms``):

* ``0``    fsync (fdatasync) after every ``append_many`` call: a record is on disk when the call returns.
  One call is one batch, so the cost is per batch, not per record (group commit).
* ``N>0``  fsync when N ms have passed since the last one (checked on append and by ``maybe_sync()``,
  which the daemon calls from a timer): an OS crash or power loss can lose the last N ms.
* ``None`` never fsync while running (only on rotation-free close): the OS writes back when it likes.

None of these matter for a process crash (``kill -9``): every ``append_many`` that returned is in the page
cache and survives the process. They matter for an OS crash or power loss only. ``durable_offset`` says
how far the log is known to be on disk; commit source positions (file offsets, Kafka offsets) only for
records below it.

Crash recovery on open (documented decisions):

* The last segment is scanned. At the first invalid frame (short header, length beyond the end of the
  file, CRC mismatch, zero fill) the file is truncated there: a torn tail. The cut bytes
  are kept in ``<segment>.bad-<pos>`` when they are not all zero, and ``metrics.LOG_CORRUPT`` counts one.
* Sealed (older) segments are not scanned on open (that would read the whole log). If a read meets an
  invalid frame in one, the valid prefix is returned and the rest of that segment is skipped: the number
  of records lost is known exactly (the next segment's first offset minus the bad one) and counted in
  ``metrics.LOG_CORRUPT``. We do not try to resynchronise inside a segment: with no sync markers a
  resync could accept garbage that happens to look like a frame, and the offsets after it would be wrong.

Retention deletes whole sealed segments, oldest first, only while the log is larger than
``retention_bytes`` AND the segment lies entirely below the committed offset (``commit()``, which the
daemon calls after the engine's checkpoint is durable). The log never deletes what was not checkpointed;
if the engine stops committing the log grows, and appends fail with StateError when the disk is full.

One writer: a process holds ``LOCK`` (fcntl.flock) for the log's lifetime; a second LocalLog on the same
directory raises StateError. Methods are serialised by an internal lock so a reader thread is safe.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from siem import metrics
from siem.errors import InputError, Issue, StateError
from siem.log._toml import TableReader
from siem.statefile import make_private_dirs, write_synced

log = logging.getLogger(__name__)

MiB = 1024 * 1024
HEADER = struct.Struct(">II")
SEGMENT_SUFFIX = ".seg"
_SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
_INDEX_EVERY = 1024  # one (offset, position) index entry per this many records
_CHUNK = 1 * MiB  # read buffer
# Reading never trusts max_record_bytes (lowering the setting must not turn old records into "corruption");
# a corrupt length cannot cause a big allocation because it is checked against the file size first.
_READ_LIMIT = 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    """The on-disk frame of one record."""
    length = len(payload).to_bytes(4, "big")
    crc = zlib.crc32(payload, zlib.crc32(length))
    return length + crc.to_bytes(4, "big") + payload


def segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


class DirLock:
    """An exclusive fcntl.flock on ``<directory>/LOCK``; released when closed or when the process dies."""

    def __init__(self, directory: str | Path, what: str = "state directory") -> None:
        self.path = Path(directory) / "LOCK"
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
            who = f" (pid {holder})" if holder else ""
            raise StateError(
                f"{what} {self.path.parent} is in use by another siem process{who}; "
                "two daemons cannot share a state directory"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


@dataclass
class _Segment:
    base: int
    path: Path
    index: list[tuple[int, int]] = field(default_factory=list)  # sorted (offset, byte position)
    bad_from: int | None = None  # first offset found corrupt (records from here on are skipped)

    def remember(self, offset: int, pos: int) -> None:
        if (offset - self.base) % _INDEX_EVERY == 0:
            i = bisect.bisect_left(self.index, (offset, -1))
            if i == len(self.index) or self.index[i][0] != offset:
                self.index.insert(i, (offset, pos))

    def seek(self, offset: int) -> tuple[int, int]:
        """The nearest known (offset, pos) at or before offset."""
        i = bisect.bisect_right(self.index, (offset, float("inf"))) - 1
        return self.index[i] if i >= 0 else (self.base, 0)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What opening the log found and repaired."""

    segments: int
    truncated_bytes: int  # bytes cut off the last segment's torn tail
    torn_at: int | None  # byte position of the cut, None when the tail was clean
    quarantine: Path | None  # where the cut bytes were kept (None when they were all zero or none)


class LocalLog:
    """Append-only segment log of opaque byte records; see the module docstring."""

    def __init__(
        self,
        directory: str | Path,
        segment_bytes: int = 64 * MiB,
        retention_bytes: int | None = 1024 * MiB,
        fsync_interval_ms: int | None = 0,
        max_record_bytes: int = 8 * MiB,
    ) -> None:
        if segment_bytes < 1024:
            raise ValueError("segment_bytes must be at least 1024")
        if fsync_interval_ms is not None and fsync_interval_ms < 0:
            raise ValueError("fsync_interval_ms must be >= 0 or None")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.retention_bytes = retention_bytes
        self.fsync_interval_ms = fsync_interval_ms
        self.max_record_bytes = max_record_bytes
        self._mutex = threading.RLock()
        try:
            make_private_dirs(self.directory)
        except OSError as exc:
            raise StateError(f"cannot create log directory {self.directory}: {exc.strerror or exc}") from exc
        self._lock = DirLock(self.directory, "log directory")
        self._fd: int | None = None
        try:
            self._segments: list[_Segment] = self._list_segments()
            self.recovery = self._recover()
        except BaseException:
            if self._fd is not None:
                os.close(self._fd)
            self._lock.close()
            raise
        self._committed = self.start_offset
        self._last_sync_ns = time.monotonic_ns()
        self._dirty = False
        self._cursor: tuple[int, int, int] | None = None  # (offset, segment base, pos) after the last read
        metrics.LOG_LAG.set(self.end_offset - self._committed)

    # --- opening -----------------------------------------------------------------------------------
    def _list_segments(self) -> list[_Segment]:
        segments = []
        for entry in os.scandir(self.directory):
            m = _SEGMENT_RE.match(entry.name)
            if m and entry.is_file():
                segments.append(_Segment(int(m.group(1)), Path(entry.path)))
        segments.sort(key=lambda s: s.base)
        return segments

    def _recover(self) -> Recovery:
        if not self._segments:
            self._segments.append(self._create_segment(0))
            self._durable = 0
            return Recovery(1, 0, None, None)
        last = self._segments[-1]
        fd = self._open_rw(last.path)
        self._fd = fd
        size = os.fstat(fd).st_size
        pos, offset = 0, last.base
        last.index = [(last.base, 0)]
        torn_at = None
        for start, nxt, _payload in _scan(fd, 0, size, _READ_LIMIT):
            if nxt is None:
                torn_at = start
                break
            offset += 1
            pos = nxt
            last.remember(offset, pos)
        quarantine = None
        cut = size - pos
        if torn_at is not None and cut > 0:
            tail = os.pread(fd, cut, pos)
            if tail.strip(b"\0"):
                quarantine = last.path.with_name(f"{last.path.name}.bad-{pos}")
                write_synced(quarantine, tail)
            try:
                os.ftruncate(fd, pos)
                os.fsync(fd)
            except OSError as exc:
                raise StateError(f"cannot truncate torn log segment {last.path}: {exc.strerror or exc}") from exc
            metrics.LOG_CORRUPT.inc()
            log.warning(
                "log segment %s: torn record at byte %d (offset %d); cut %d bytes%s",
                last.path, pos, offset, cut, f", kept in {quarantine}" if quarantine else "",
            )
        self._size = pos
        self._end = offset
        self._durable = offset
        return Recovery(len(self._segments), cut if torn_at is not None else 0, torn_at, quarantine)

    def _open_rw(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open log segment {path}: {exc.strerror or exc}") from exc

    def _create_segment(self, base: int) -> _Segment:
        seg = _Segment(base, self.directory / segment_name(base), [(base, 0)])
        self._fd = self._open_rw(seg.path)
        if self.fsync_interval_ms is not None:
            self._fsync_dir()
        self._size = 0
        self._end = base
        return seg

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise StateError(f"cannot fsync log directory {self.directory}: {exc.strerror or exc}") from exc

    # --- properties --------------------------------------------------------------------------------
    @property
    def start_offset(self) -> int:
        """Offset of the oldest record still kept."""
        return self._segments[0].base

    @property
    def end_offset(self) -> int:
        """Offset the next appended record will get (one past the last record)."""
        return self._end

    @property
    def durable_offset(self) -> int:
        """Records below this offset are known to be fsync'ed."""
        return self._durable

    @property
    def committed_offset(self) -> int:
        return self._committed

    @property
    def segments(self) -> list[int]:
        """First offsets of the segment files, oldest first."""
        return [s.base for s in self._segments]

    def size_bytes(self) -> int:
        with self._mutex:
            total = self._size
            for seg in self._segments[:-1]:
                total += _file_size(seg.path)
            return total

    # --- writing -----------------------------------------------------------------------------------
    def append_many(self, payloads: list[bytes]) -> int:
        """Append records; return the offset after the last one. Raises InputError for an oversized
        record (nothing is written then) and StateError when the disk refuses (the log is unchanged)."""
        for i, p in enumerate(payloads):
            if len(p) > self.max_record_bytes:
                raise InputError(
                    f"log record {i} of the batch is {len(p)} bytes, above max_record_bytes={self.max_record_bytes}"
                )
        if not payloads:
            return self._end
        with self._mutex:
            self._check_open()
            active0, size0, end0 = self._segments[-1], self._size, self._end
            try:
                chunk: list[bytes] = []
                chunk_bytes = 0
                chunk_positions: list[int] = []
                for p in payloads:
                    fr = frame(p)
                    if self._size + chunk_bytes > 0 and self._size + chunk_bytes + len(fr) > self.segment_bytes:
                        self._write(chunk, chunk_positions)
                        chunk, chunk_bytes, chunk_positions = [], 0, []
                        self._rotate()
                    chunk_positions.append(self._size + chunk_bytes)
                    chunk.append(fr)
                    chunk_bytes += len(fr)
                self._write(chunk, chunk_positions)
                if self.fsync_interval_ms == 0:
                    self.sync()
                elif self.fsync_interval_ms is not None:
                    self.maybe_sync()
            except StateError:
                self._rollback(active0, size0, end0)
                raise
            metrics.LOG_APPENDED.inc(len(payloads))
            metrics.LOG_LAG.set(self._end - self._committed)
            if self._segments[-1] is not active0:
                self._apply_retention()
            return self._end

    def _rollback(self, active0: _Segment, size0: int, end0: int) -> None:
        """Undo a failed append_many: remove segments it created, cut the first one back to its old size.
        A batch is appended entirely or not at all. If even that fails the log closes itself; reopening
        it runs crash recovery."""
        try:
            if self._segments[-1] is not active0:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                i = next(k for k, seg in enumerate(self._segments) if seg is active0)
                for seg in self._segments[i + 1:]:
                    seg.path.unlink(missing_ok=True)
                del self._segments[i + 1:]
            if self._fd is None:
                self._fd = self._open_rw(active0.path)
            os.ftruncate(self._fd, size0)
        except (OSError, StateError, StopIteration) as exc:
            log.error("log %s: cannot undo a failed append (%s); closing the log", self.directory, exc)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            return
        self._size, self._end = size0, end0
        self._durable = min(self._durable, end0)
        active0.index = [e for e in active0.index if e[0] <= end0]
        self._cursor = None

    def _write(self, frames: list[bytes], positions: list[int]) -> None:
        if not frames:
            return
        data = memoryview(b"".join(frames))
        fd = self._fd
        if fd is None:
            raise StateError(f"log {self.directory} is closed")
        start = self._size
        pos = start
        try:
            while data:
                n = os.pwrite(fd, data, pos)
                pos += n
                data = data[n:]
        except OSError as exc:
            try:
                os.ftruncate(fd, start)  # never leave a torn frame behind a failed write
            except OSError:
                pass
            seg = self._segments[-1]
            raise StateError(f"cannot append to log segment {seg.path}: {exc.strerror or exc}") from exc
        seg = self._segments[-1]
        for k, p in enumerate(positions):
            seg.remember(self._end + k, p)
        self._end += len(frames)
        self._size = pos
        self._dirty = True

    def _rotate(self) -> None:
        if self.fsync_interval_ms is not None:
            self.sync()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._segments.append(self._create_segment(self._end))

    def sync(self) -> None:
        """fdatasync the active segment now (whatever the policy)."""
        with self._mutex:
            if self._fd is None:
                return
            if self._dirty:
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    raise StateError(
                        f"cannot fsync log segment {self._segments[-1].path}: {exc.strerror or exc}"
                    ) from exc
                self._dirty = False
            self._durable = self._end
            self._last_sync_ns = time.monotonic_ns()

    flush = sync  # records are written with os.pwrite, so there is no user-space buffer to flush

    def maybe_sync(self) -> bool:
        """Sync if the interval policy says it is due; True when it synced."""
        if self.fsync_interval_ms is None or not self._dirty:
            return False
        if (time.monotonic_ns() - self._last_sync_ns) // 1_000_000 >= self.fsync_interval_ms:
            self.sync()
            return True
        return False

    def advance_to(self, offset: int) -> None:
        """Make end_offset at least ``offset`` by starting a new segment there.

        For a checkpoint that is ahead of the log (records lost to an OS crash under a lazy fsync policy,
        after the engine had processed them): new records must not reuse offsets the engine has seen.
        Reading across the gap later counts the missing records in LOG_CORRUPT."""
        with self._mutex:
            self._check_open()
            if offset <= self._end:
                return
            log.warning("log %s: end offset %d is behind the checkpoint offset %d; skipping ahead",
                        self.directory, self._end, offset)
            if self.fsync_interval_ms is not None:
                self.sync()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._size == 0:  # an empty active segment: replace it rather than keep an empty file
                seg = self._segments.pop()
                seg.path.unlink(missing_ok=True)
            self._segments.append(self._create_segment(offset))
            self._durable = max(self._durable, offset)
            metrics.LOG_LAG.set(self._end - self._committed)

    # --- committing and retention ------------------------------------------------------------------
    def commit(self, offset: int) -> None:
        """Records below ``offset`` are checkpointed by the engine: retention may delete them."""
        with self._mutex:
            if offset > self._end:
                raise ValueError(f"commit offset {offset} is beyond the log end {self._end}")
            self._committed = max(self._committed, offset)
            metrics.LOG_LAG.set(self._end - self._committed)
            self._apply_retention()

    def _apply_retention(self) -> None:
        if self.retention_bytes is None:
            return
        sizes = [_file_size(s.path) for s in self._segments[:-1]] + [self._size]
        total = sum(sizes)
        while len(self._segments) > 1 and total > self.retention_bytes:
            oldest, nxt = self._segments[0], self._segments[1]
            if nxt.base > self._committed:  # not fully checkpointed: keep it, and everything after it
                break
            try:
                oldest.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("log retention: cannot delete %s: %s", oldest.path, exc.strerror or exc)
                break
            total -= sizes.pop(0)
            self._segments.pop(0)
            log.info("log retention: deleted segment %s", oldest.path.name)

    # --- reading -----------------------------------------------------------------------------------
    def read(self, from_offset: int, max_records: int = 1000, max_bytes: int | None = None) -> list[tuple[int, bytes]]:
        """Up to max_records (offset, payload) pairs starting at from_offset, in offset order.

        Offsets below start_offset (deleted by retention) start at start_offset. Records lost to
        corruption in a sealed segment are skipped (counted once), so offsets may jump."""
        out: list[tuple[int, bytes]] = []
        with self._mutex:
            self._check_open()
            offset = max(from_offset, self.start_offset)
            budget = max_bytes if max_bytes is not None else -1
            while len(out) < max_records and offset < self._end:
                i = self._segment_index(offset)
                seg = self._segments[i]
                last = i == len(self._segments) - 1
                seg_end_offset = self._end if last else self._segments[i + 1].base
                if seg.bad_from is not None and offset >= seg.bad_from:
                    offset = seg_end_offset
                    continue
                offset = self._read_segment(seg, last, offset, seg_end_offset, max_records, out, budget)
                if max_bytes is not None:
                    budget = max_bytes - sum(len(p) for _, p in out)
                    if budget <= 0:
                        break
        return out

    def _segment_index(self, offset: int) -> int:
        i = bisect.bisect_right([s.base for s in self._segments], offset) - 1
        return max(i, 0)

    def _read_segment(
        self, seg: _Segment, last: bool, offset: int, seg_end_offset: int, max_records: int,
        out: list[tuple[int, bytes]], budget: int,
    ) -> int:
        if self._cursor is not None and self._cursor[0] == offset and self._cursor[1] == seg.base:
            cur_off, pos = offset, self._cursor[2]
        else:
            cur_off, pos = seg.seek(offset)
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except OSError as exc:
            self._mark_bad(seg, cur_off, seg_end_offset, f"cannot open: {exc.strerror or exc}")
            return seg_end_offset
        try:
            end_pos = self._size if last else os.fstat(fd).st_size
            used = 0
            for start, nxt, payload in _scan(fd, pos, end_pos, _READ_LIMIT):
                if nxt is None:
                    self._mark_bad(seg, cur_off, seg_end_offset, f"invalid frame at byte {start} ({payload!r})")
                    return seg_end_offset
                if cur_off >= offset:
                    out.append((cur_off, payload))
                    used += len(payload)
                cur_off += 1
                seg.remember(cur_off, nxt)
                self._cursor = (cur_off, seg.base, nxt)
                if cur_off >= seg_end_offset or len(out) >= max_records or (0 <= budget <= used):
                    return cur_off
            if cur_off < seg_end_offset:
                if last:
                    return cur_off
                # clean end of file before the next segment's first offset: records are missing
                log.warning("log segment %s ends at offset %d, next segment starts at %d: %d records missing",
                            seg.path, cur_off, seg_end_offset, seg_end_offset - cur_off)
                metrics.LOG_CORRUPT.inc(seg_end_offset - cur_off)
                seg.bad_from = cur_off
                return seg_end_offset
            return cur_off
        finally:
            os.close(fd)

    def _mark_bad(self, seg: _Segment, offset: int, seg_end_offset: int, why: str) -> None:
        if seg.bad_from is None or offset < seg.bad_from:
            lost = seg_end_offset - offset
            metrics.LOG_CORRUPT.inc(lost)
            log.error("log segment %s: %s at offset %d; skipping %d records to offset %d",
                      seg.path, why, offset, lost, seg_end_offset)
            seg.bad_from = offset

    # --- closing -----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._fd is None:
            raise StateError(f"log {self.directory} is closed")

    def close(self) -> None:
        """Sync, close the active segment and release the lock. Idempotent."""
        with self._mutex:
            if self._fd is not None:
                try:
                    if self._dirty:
                        os.fdatasync(self._fd)
                        self._durable = self._end
                finally:
                    os.close(self._fd)
                    self._fd = None
            self._lock.close()

    def __enter__(self) -> LocalLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _scan(fd: int, pos: int, end: int, max_record: int):  # type: ignore[no-untyped-def]
    """Yield (start, next_pos, payload) for each valid frame in [pos, end); at the first invalid frame
    yield (start, None, reason) and stop."""
    buf = b""
    buf_pos = pos
    while pos < end:
        off = pos - buf_pos
        if len(buf) - off < HEADER.size:
            buf = os.pread(fd, min(max(_CHUNK, HEADER.size), end - pos), pos)
            buf_pos, off = pos, 0
            if len(buf) < HEADER.size:
                yield pos, None, "short header"
                return
        length, crc = HEADER.unpack_from(buf, off)
        if length > max_record:
            yield pos, None, f"length {length} above the maximum"
            return
        total = HEADER.size + length
        if pos + total > end:
            yield pos, None, "record runs past the end of the segment"
            return
        if len(buf) - off < total:
            buf = os.pread(fd, max(_CHUNK, total), pos)
            buf_pos, off = pos, 0
            if len(buf) < total:
                yield pos, None, "short record"
                return
        view = memoryview(buf)
        if zlib.crc32(view[off + HEADER.size: off + total], zlib.crc32(view[off: off + 4])) != crc:
            yield pos, None, "checksum mismatch"
            return
        yield pos, pos + total, bytes(view[off + HEADER.size: off + total])
        pos += total


# --- configuration ---------------------------------------------------------------------------------
FSYNC_POLICIES = ("always", "interval", "never")


@dataclass(frozen=True, slots=True)
class LocalLogConfig:
    """The ``[log]`` table as the user wrote it.

    fsync: "always" (every append batch; the default), "interval" (every fsync_interval) or "never"."""

    directory: str | None = None  # default: <state_dir>/log, filled in by the daemon
    segment_bytes: int = 64 * MiB
    retention_bytes: int | None = 1024 * MiB
    fsync: str = "always"
    fsync_interval_ms: int = 1000
    max_record_bytes: int = 8 * MiB

    def build(self, default_directory: str | Path) -> LocalLog:
        interval: int | None = {"always": 0, "interval": self.fsync_interval_ms, "never": None}[self.fsync]
        return LocalLog(
            self.directory or default_directory,
            segment_bytes=self.segment_bytes,
            retention_bytes=self.retention_bytes,
            fsync_interval_ms=interval,
            max_record_bytes=self.max_record_bytes,
        )


def config_from_toml(table: dict, where: str) -> tuple[LocalLogConfig | None, list[Issue]]:
    """Validate the ``[log]`` table; every problem is returned, none raised.

    Keys: directory, segment_bytes, retention_bytes (0 = keep every segment), fsync, fsync_interval
    (a duration such as "200ms" or "1s", or an int of ms), max_record_bytes."""
    if not isinstance(table, dict):
        return None, [Issue("wrong-type", f"{where}: expected a table, got {type(table).__name__}")]
    r = TableReader(table, where, ("directory", "segment_bytes", "retention_bytes", "fsync", "fsync_interval",
                                   "max_record_bytes"))
    directory = r.str_("directory", None)
    segment_bytes = r.int_range("segment_bytes", 64 * MiB, 1024, 1 << 40)
    retention = r.int_range("retention_bytes", 1024 * MiB, 0, 1 << 50)
    fsync = r.choice("fsync", "always", FSYNC_POLICIES)
    interval = r.duration_ms("fsync_interval", 1000, lo_ms=1)
    max_record = r.int_range("max_record_bytes", 8 * MiB, 1024, 1 << 30)
    if max_record > segment_bytes and "max_record_bytes" in table:
        r.bad("max_record_bytes", "bad-value", f"must not exceed segment_bytes ({segment_bytes})")
    if r.issues:
        return None, r.issues
    return LocalLogConfig(directory, segment_bytes, retention or None, fsync, interval, max_record), []


# --- read-only inspection (safe while a daemon owns the log) -----------------------------------------------
@dataclass(frozen=True, slots=True)
class SegmentReport:
    base: int
    path: Path
    bytes: int
    records: int  # valid records before the first problem
    problem: str | None  # None when the segment is clean
    problem_at: int | None  # byte position of the problem
    missing: int  # records implied by the next segment's first offset but not present (sealed segments)


def inspect_log(directory: str | Path) -> list[SegmentReport]:
    """Scan every segment read-only, without the lock and without repairing anything."""
    directory = Path(directory)
    bases = sorted(int(m.group(1)) for e in os.scandir(directory) if (m := _SEGMENT_RE.match(e.name)))
    out = []
    for i, base in enumerate(bases):
        path = directory / segment_name(base)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            out.append(SegmentReport(base, path, 0, 0, f"cannot open: {exc.strerror or exc}", 0, 0))
            continue
        try:
            size = os.fstat(fd).st_size
            count, problem, where = 0, None, None
            for start, nxt, payload in _scan(fd, 0, size, _READ_LIMIT):
                if nxt is None:
                    problem, where = str(payload), start
                    break
                count += 1
        finally:
            os.close(fd)
        missing = 0
        if i + 1 < len(bases):
            missing = max(bases[i + 1] - base - count, 0)
        out.append(SegmentReport(base, path, size, count, problem, where, missing))
    return out


def read_log_readonly(directory: str | Path, from_offset: int = 0):  # type: ignore[no-untyped-def]
    """Yield (offset, payload) for the valid records at or after from_offset, read-only."""
    for rep in inspect_log(directory):
        if rep.base + rep.records <= from_offset:
            continue
        fd = os.open(rep.path, os.O_RDONLY)
        try:
            offset = rep.base
            for _start, nxt, payload in _scan(fd, 0, rep.bytes, _READ_LIMIT):
                if nxt is None:
                    break
                if offset >= from_offset:
                    yield offset, payload
                offset += 1
        finally:
            os.close(fd)
