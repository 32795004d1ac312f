"""The alert log: every alert as one JSON line (``Alert.dumps``), written before anything else happens to it.

Files: ``alerts.jsonl`` (current), rotated by size to ``alerts.jsonl.1`` (newest) ... ``alerts.jsonl.N``.

Fsync policy: with ``log_fsync = true`` (the default) the file is fsynced once per submitted batch, before
the alerts are grouped, routed or queued, so an alert that was notified is always in the log after a
power loss; with ``false`` the data is in the page cache only (lost on power loss, not on a process crash).
Rotation fsyncs the directory after the renames.

A torn last line (a crash in the middle of a write) is cut off when the log is opened, so the next line
starts clean; the cut is logged and counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from siem import metrics
from siem.alert.record import Alert
from siem.statefile import FILE_MODE, make_private_dirs

log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AlertLog:
    def __init__(self, path: str | Path, max_bytes: int, keep: int, fsync: bool = True) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        make_private_dirs(self.path.parent)
        self._repair_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._size = os.fstat(self._fd).st_size

    def _repair_tail(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            # Find the last newline, scanning back in blocks.
            pos = size
            keep_to = 0
            while pos > 0:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                i = block.rfind(b"\n")
                if i >= 0:
                    keep_to = pos + i + 1
                    break
            f.truncate(keep_to)
            f.flush()
            os.fsync(f.fileno())
        metrics.LOG_CORRUPT.inc()
        log.warning("alert log %s: cut a torn last line (%d bytes) left by a crash", self.path, size - keep_to)

    def position(self) -> tuple[int, int]:
        """(inode, size) of the current file: where the next append goes."""
        return os.fstat(self._fd).st_ino, self._size

    def append(self, lines: list[bytes]) -> tuple[int, int]:
        """Append alert lines (without newline); rotates first when the file would grow past max_bytes.
        Returns the position after the write."""
        data = b"".join(line + b"\n" for line in lines)
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)
        if self.fsync:
            os.fsync(self._fd)
        return self.position()

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
            oldest.unlink(missing_ok=True)
            for i in range(self.keep - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._size = 0
        _fsync_dir(self.path.parent)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def log_files(path: str | Path) -> list[Path]:
    """The current and rotated files, oldest first."""
    path = Path(path)
    rotated = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    out = [p for _, p in sorted(rotated, reverse=True)]
    if path.exists():
        out.append(path)
    return out


def read_alerts(path: str | Path, start_offset: int = 0) -> Iterator[tuple[int, Alert | None]]:
    """(offset after the line, alert or None for a corrupt line) for each line of one file."""
    with open(path, "rb") as f:
        f.seek(start_offset)
        offset = start_offset
        for line in f:
            offset += len(line)
            if not line.endswith(b"\n"):
                return  # torn tail: not an alert yet
            try:
                d = orjson.loads(line)
                yield offset, Alert.from_json(d) if isinstance(d, dict) else None
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                yield offset, None


def iter_log(path: str | Path) -> Iterator[Alert]:
    """Every readable alert in the current and rotated files, oldest first; corrupt lines are skipped."""
    for p in log_files(path):
        try:
            for _, a in read_alerts(p):
                if a is not None:
                    yield a
        except FileNotFoundError:  # rotated away while reading
            continue
