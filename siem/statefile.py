"""Crash-safe small state files: write a temporary file, fsync it, rename it over the old one, fsync the dir.

A position file that skipped the fsync came back empty after power loss in Filebeat's history; every
offset, cursor and checkpoint in siem goes through ``write_atomic``.

Modes: everything siem creates under its state directory is private whatever the umask: files 0600
(``write_synced``, ``create_private``), directories 0700 (``make_private_dirs``). The umask can only take
bits away, so creating with these modes is enough; existing files and directories keep their modes (an
operator who opened a directory to a group on purpose is not overruled).
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from siem.errors import StateError


FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dirs(path: str | Path) -> Path:
    """``mkdir -p`` where every directory created is 0700 (``Path.mkdir(parents=True)`` gives the missing
    parents the umask's mode). Raises OSError as mkdir does."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not d.is_dir():
                raise
    return path


def create_private(path: str | Path) -> None:
    """Create path as an empty 0600 file when it does not exist (before a library such as sqlite opens
    it with its own 0644); an existing file is left alone."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass


def write_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write_synced(tmp, data)
    replace_synced(tmp, path)


def write_synced(path: str | Path, data: bytes) -> None:
    """Write (create or truncate) path and fsync it: the first half of write_atomic."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot write state file {path}: {exc.strerror or exc}") from exc


def replace_synced(tmp: str | Path, path: str | Path) -> None:
    """Rename a written and fsync'ed tmp over path and fsync the directory: the second half of write_atomic."""
    path = Path(path)
    try:
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise StateError(f"cannot write state file {path}: {exc.strerror or exc}") from exc


def write_json_atomic(path: str | Path, obj: object) -> None:
    write_atomic(path, orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS))


def read_json(path: str | Path, default: object = None) -> object:
    """The JSON in path; default when the file is missing. A corrupt file raises StateError."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror or exc}") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"state file {path} is corrupt: {exc}") from exc
