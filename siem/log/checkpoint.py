"""The engine checkpoint: window state and the log offset it corresponds to, in ONE file, written atomically.

Because state and offset are saved together (siem.statefile.write_atomic: temp file, fsync, rename,
fsync dir), a restart resumes reading the log exactly after the last event the saved state includes:
no event is counted twice into a window and none is skipped.

File layout (big-endian)::

    magic   8 bytes  b"SIEMCKPT"
    version u32      FORMAT_VERSION
    offset  u64      next log offset to read (records below it are inside ``state``)
    length  u64      len(state)
    crc     u32      CRC-32 of every byte before it plus the state
    state   bytes    the engine's snapshot() output, opaque here

A checkpoint that is truncated, zero-filled, altered or of another version is refused with StateError
(the daemon must not silently start with empty windows: that would miss or repeat alerts) unless the
caller passes ``start_fresh=True``; then the bad file is moved aside to ``checkpoint.bad-<unix ms>`` and
counted in metrics.CHECKPOINT_CORRUPT, and load returns None.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from siem import metrics
from siem.errors import StateError
from siem.statefile import write_atomic

log = logging.getLogger(__name__)

MAGIC = b"SIEMCKPT"
FORMAT_VERSION = 1
FILENAME = "checkpoint"
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


def decode_checkpoint(raw: bytes, where: str = "checkpoint") -> Checkpoint:
    """Parse a checkpoint file's bytes; StateError saying what is wrong otherwise."""
    fixed = _HEAD.size + _CRC.size
    if len(raw) < fixed:
        raise StateError(f"{where} is truncated ({len(raw)} bytes, a header needs {fixed})")
    magic, version, offset, length = _HEAD.unpack_from(raw, 0)
    if magic != MAGIC:
        if not raw.strip(b"\0"):
            raise StateError(f"{where} is zero-filled (lost in a crash before it reached the disk?)")
        raise StateError(f"{where} is not a siem checkpoint (bad magic {magic!r})")
    if version != FORMAT_VERSION:
        raise StateError(
            f"{where} has format version {version}, this siem reads version {FORMAT_VERSION}; "
            "start fresh to discard it (window state is lost)"
        )
    if len(raw) != fixed + length:
        raise StateError(f"{where} is truncated or padded: {len(raw)} bytes, header says {fixed + length}")
    (crc,) = _CRC.unpack_from(raw, _HEAD.size)
    state = raw[fixed:]
    if zlib.crc32(state, zlib.crc32(raw[: _HEAD.size])) != crc:
        raise StateError(f"{where} fails its checksum (corrupted on disk)")
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
        metrics.CHECKPOINT_CORRUPT.inc()
        aside = path.with_name(f"{FILENAME}.bad-{time.time_ns() // 1_000_000}")
        try:
            os.replace(path, aside)
        except OSError as move_exc:
            raise StateError(f"cannot move bad checkpoint {path} aside: {move_exc.strerror or move_exc}") from exc
        log.error("%s; starting fresh, the bad file is kept as %s", exc, aside)
        return None
