"""The engine checkpoint: window state and the log offset it corresponds to, in ONE file, written atomically.

Because state and offset are saved together (siem.statefile.write_atomic: temp file, fsync, rename,
fsync dir), a restart resumes reading the log exactly after the last event the saved state includes:
no event is counted twice into a window and none is skipped.

A running daemon writes its checkpoints from a forked child (``ForkedCheckpoint``): fork() gives the child a
copy-on-write image of the window state at that instant, the child encodes and writes it while the daemon
goes on evaluating, and the daemon renames the file into place once the child succeeded (and the log is
fsync'ed up to the offset). Encoding a million window keys takes seconds; fork() takes milliseconds, so a
checkpoint no longer stalls evaluation (the p99 event-to-alert latency of bench/daemon_latency.py).

File layout (big-endian)::

    magic   8 bytes  b"SIEMCKPT"
    version u32      FORMAT_VERSION
    offset  u64      next log offset to read (records below it are inside ``state``)
    length  u64      len(state)
    crc     u32      CRC-32 of every byte before it plus the state
    state   bytes    the engine's snapshot() output (siem.engine.snapshot), opaque here

A checkpoint that is truncated, zero-filled, altered or of another version is refused with StateError
(the daemon must not silently start with empty windows: that would miss or repeat alerts), counted in
siem_state_refused_total{reason}, unless the caller passes ``start_fresh=True``; then the bad file is moved
aside to ``checkpoint.bad-<unix ms>`` and counted in metrics.CHECKPOINT_CORRUPT, and load returns None.
restore_checkpoint does the same for a state the engine refuses to restore.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import struct
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from siem import metrics
from siem.errors import StateError
from collections.abc import Callable

from siem.statefile import replace_synced, write_atomic, write_synced

log = logging.getLogger(__name__)

MAGIC = b"SIEMCKPT"
FORMAT_VERSION = 1
FILENAME = "checkpoint"
FRESH_HINT = ("to start anyway with empty windows (alerts in progress are lost, the log is evaluated again from "
              "its oldest record), run `siem run --start-fresh` once: the bad file is kept as checkpoint.bad-<ms>")
_HEAD = struct.Struct(">8sIQQ")
_CRC = struct.Struct(">I")


class Checkpoint(NamedTuple):
    offset: int
    state: bytes


def checkpoint_path(directory: str | Path) -> Path:
    return Path(directory) / FILENAME


def encode_checkpoint(offset: int, state: bytes) -> bytes:
    if offset < 0:
        raise ValueError("checkpoint offset must be >= 0")
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, offset, len(state))
    crc = zlib.crc32(state, zlib.crc32(head))
    return head + _CRC.pack(crc) + state


def _refused(reason: str, message: str) -> StateError:
    metrics.STATE_REFUSED.labels(reason=reason).inc()
    return StateError(message)


def decode_checkpoint(raw: bytes, where: str = "checkpoint") -> Checkpoint:
    """Parse a checkpoint file's bytes; StateError saying what is wrong otherwise (counted)."""
    fixed = _HEAD.size + _CRC.size
    if len(raw) < fixed:
        raise _refused("truncated", f"{where} is truncated ({len(raw)} bytes, a header needs {fixed})")
    magic, version, offset, length = _HEAD.unpack_from(raw, 0)
    if magic != MAGIC:
        if not raw.strip(b"\0"):
            raise _refused("zero_filled", f"{where} is zero-filled (lost in a crash before it reached the disk?)")
        raise _refused("not_a_snapshot", f"{where} is not a siem checkpoint (bad magic {magic!r})")
    if version != FORMAT_VERSION:
        raise _refused(
            "version", f"{where} has format version {version}, this siem reads version {FORMAT_VERSION}; "
            "discard it with `siem run --start-fresh` (window state is lost)"
        )
    if len(raw) != fixed + length:
        raise _refused("truncated", f"{where} is truncated or padded: {len(raw)} bytes, header says {fixed + length}")
    (crc,) = _CRC.unpack_from(raw, _HEAD.size)
    state = raw[fixed:]
    if zlib.crc32(state, zlib.crc32(raw[: _HEAD.size])) != crc:
        raise _refused("checksum", f"{where} fails its checksum (corrupted on disk)")
    return Checkpoint(offset, state)


def save_checkpoint(directory: str | Path, offset: int, state: bytes) -> None:
    """Atomically replace the checkpoint in directory with (offset, state)."""
    write_atomic(checkpoint_path(directory), encode_checkpoint(offset, state))


def load_checkpoint(directory: str | Path, *, start_fresh: bool = False) -> Checkpoint | None:
    """The saved (offset, state); None when there is none. A bad checkpoint raises StateError, unless
    start_fresh: then it is moved aside, counted and None is returned."""
    path = checkpoint_path(directory)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    try:
        return decode_checkpoint(raw, f"checkpoint {path}")
    except StateError as exc:
        if not start_fresh:
            raise
        _set_aside(path, exc)
        return None


def restore_checkpoint(directory: str | Path, restore: Callable[[Checkpoint], None], *,
                       start_fresh: bool = False) -> Checkpoint | None:
    """Load the checkpoint and give it to `restore` (which raises StateError for one it refuses, changing
    nothing). Returns the checkpoint restored, None when there is none. A bad checkpoint raises
    StateError saying what is wrong and what to do, unless start_fresh: then it is moved aside, counted and
    None is returned."""
    try:
        ck = load_checkpoint(directory, start_fresh=start_fresh)
        if ck is not None:
            restore(ck)
    except StateError as exc:
        if not start_fresh:
            if "--start-fresh" in str(exc):
                raise
            raise StateError(f"{exc}; {FRESH_HINT}") from exc
        _set_aside(checkpoint_path(directory), exc)
        return None
    return ck


def _set_aside(path: Path, exc: StateError) -> None:
    metrics.CHECKPOINT_CORRUPT.inc()
    aside = path.with_name(f"{FILENAME}.bad-{time.time_ns() // 1_000_000}")
    try:
        os.replace(path, aside)
    except OSError as move_exc:
        raise StateError(f"cannot move bad checkpoint {path} aside: {move_exc.strerror or move_exc}") from exc
    log.error("%s; starting fresh, the bad file is kept as %s", exc, aside)


class ForkedCheckpoint:
    """A checkpoint being written by a forked child; `finish()` (blocking) waits and publishes it."""

    def __init__(self, directory: str | Path, offset: int, make_state: Callable[[], bytes]) -> None:
        self.offset = offset
        self.path = checkpoint_path(directory)
        self.tmp = self.path.with_name(f".{FILENAME}.{os.getpid()}-{offset}.tmp")
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child; its outcome is tested through finish()
            _child_write(self.tmp, offset, make_state)

    def abandon(self) -> None:
        """Wait for the child and drop what it wrote (the log could not be made durable up to the offset)."""
        os.waitpid(self.pid, 0)
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> None:
        """Wait for the child; on success rename its file over the checkpoint, else StateError."""
        _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            self.tmp.unlink(missing_ok=True)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise StateError(f"checkpoint writer process {self.pid} {how}; the previous checkpoint stays")
        replace_synced(self.tmp, self.path)


def _child_write(tmp: Path, offset: int, make_state: Callable[[], bytes]) -> None:
    """In the forked child: write the checkpoint to tmp and _exit, never returning into the daemon's code.
    The child drops every inherited descriptor (sockets, the state directory's lock, the signal wake-up
    pipe) and takes default signal dispositions, so it neither holds the lock after the daemon dies nor
    answers for it."""
    code = 1
    try:
        gc.disable()  # the child exits when done: a collection would only walk (and so copy) the daemon's pages
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        write_synced(tmp, encode_checkpoint(offset, make_state()))
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported through the exit status and stderr
        try:
            os.write(2, f"siem checkpoint writer: {type(exc).__name__}: {exc}\n".encode(errors="replace"))
        except OSError:
            pass
    finally:
        os._exit(code)


def remove_stale_temporaries(directory: str | Path) -> None:
    """Temporary files of writers that died with their daemon (kill -9 during a checkpoint)."""
    for p in Path(directory).glob(f".{FILENAME}.*.tmp"):
        p.unlink(missing_ok=True)
