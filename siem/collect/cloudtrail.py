"""CloudTrail log files on disk: watch a directory tree, read each ``.json`` / ``.json.gz`` once.

The layout is what CloudTrail delivers to S3 and ``aws s3 sync`` (or rclone) copies to disk::

    <directory>/AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<time>_<id>.json.gz

Any file below ``directory`` whose name ends in ``.json`` or ``.json.gz`` is read; names starting with a dot
(temporary files of sync tools) are not. Files of the digest and Insights deliveries are ignored: anything
with a path component ``CloudTrail-Digest`` or ``CloudTrail-Insight`` or a name containing
``_CloudTrail-Digest_`` / ``_CloudTrail-Insight_`` (digests hold hashes, not events; Insights events are a
different record type that the cloudtrail parser does not map).

A file is read once its size and mtime were equal in two consecutive scans (so a file still being
downloaded is not read half-way). Which files are done is remembered as ``path -> (size, mtime_ns)`` in
``<state_dir>/cloudtrail-<name>.json`` (a snapshot, written atomically) plus
``<state_dir>/cloudtrail-<name>.json.journal`` (what was committed since, one JSON line per commit,
appended and fsync'ed; folded into a new snapshot once it is larger than the snapshot or 1 MiB, so the
cost of 100,000 files stays linear): a file that later has another size or mtime
(re-downloaded, replaced) is read again in full - CloudTrail objects are immutable, so that only happens
when something rewrote it, and at-least-once is the safer side. Entries for files that disappeared are
forgotten (unless a scan finds no file at all, e.g. an unmounted directory).

Each element of ``Records`` becomes one :class:`RawRecord` (``format = "cloudtrail"``, ``data`` = the
record as compact JSON, ``origin`` = the file path). Decoding is bounded: ``.gz`` files are streamed through
:class:`siem.collect.files.BoundedGunzip` with ``max_object_bytes`` of output and ``max_ratio`` at most, so
a gzip bomb is refused after at most ``max_object_bytes`` of output; plain files larger than
``max_object_bytes`` are refused unread. The JSON is then decoded one record at a time
(:func:`iter_records`), so the peak memory is about twice the decompressed size, not the tenfold that
decoding the whole document at once costs. Every bad file is counted in ``siem_input_errors_total{reason}``
and marked done (it is not retried until it changes); nothing escapes :meth:`CloudTrailCollector.run`.
Records that come before a problem in the JSON text are delivered (they are complete and valid):

=====================  ================================================================================
reason                 file
=====================  ================================================================================
``bomb``               decompresses past ``max_object_bytes`` or ``max_ratio``: refused, nothing emitted
``truncated_gzip``     gzip stream cut short: refused
``bad_gzip``           not gzip despite ``.gz``, corrupt data, bad CRC or length: refused
``trailing_garbage``   junk after a complete gzip member: counted, the (CRC-checked) records are read
``oversized``          a plain ``.json`` over ``max_object_bytes``: refused
``invalid_json``       not JSON, JSON cut short, data after the document, or nesting deeper than the JSON
                       decoder's recursion limit (about 1000): the records before that point are delivered
``invalid_utf8``       bytes that are not UTF-8: replaced by U+FFFD, the records are delivered
``missing_comma``      records not separated by ``,`` (badly concatenated exports): read as if it were
                       there, counted once per place
``no_records``         JSON that is not an object with ``Records``: nothing delivered
``bad_records``        ``Records`` is not an array: nothing delivered
``unencodable_record`` a record that cannot be re-encoded as JSON: skipped
``too_many_records``   more than ``max_records``: the first ``max_records`` are read, the rest counted
                       in ``siem_input_dropped_total{reason="too_many_records"}``
``io``                 cannot read the file (permission, vanished): retried at the next scan
=====================  ================================================================================

Multi-member gzip is read whole; an empty ``Records`` list is a correct, empty file. Records that are not
objects are passed on as they are (the parser keeps them as error events). Duplicate keys keep the last
value; of duplicate ``Records`` keys the first is read. Integers beyond 64 bits and lone surrogate escapes
are kept exactly (decoded by the standard library's JSON decoder, re-encoded by orjson or, for what orjson
refuses, by the standard library).

Delivery: a file's records are handed to the sink in order; the position ``(file, records delivered)`` is
part of :meth:`CloudTrailCollector.positions`, so a restart after a clean stop continues inside a file
without repeats. Crash safety follows the same protocol as the file tailer (``autocommit=False``,
``positions()`` before making the sink durable, ``commit()`` after): at-least-once end to end.

Positions are a delta of constant size, not the whole set of done files (which made the daemon's log grow
quadratically: every position record repeated every file read so far)::

    {"version": 2, "done": {path: [size, mtime_ns], ...},   # files finished since the last commit()
     "current": {"path": ..., "size": ..., "mtime_ns": ..., "records": n} | null}

``commit(positions)`` merges ``done`` into the state (a union: committing an older or repeated delta is
harmless, so the daemon may commit any positions it has logged, in order, as often as it likes) and takes
``current`` as is. A delta never holds more than ``MAX_DELTA_FILES`` files: at that size the collector
waits for a commit before it starts the next file (the daemon commits its logged positions every 0.5 s),
so a position record stays below ``MAX_DELTA_FILES`` x (path length + 40) bytes. Version 1 positions (the
whole set in ``done``) merge the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from siem import metrics
from siem.collect import RawRecord, Sink, commit_positions
from siem.collect.files import BoundedGunzip, GzipError, TableReader, state_file_name
from siem.errors import Issue, StateError
from siem.statefile import FILE_MODE, read_json, write_atomic
from siem.timeutil import Clock, monotonic_ms, wall_ms

log = logging.getLogger(__name__)

_IGNORED_DIRS = frozenset({"CloudTrail-Digest", "CloudTrail-Insight"})
_IGNORED_NAME_PARTS = ("_CloudTrail-Digest_", "_CloudTrail-Insight_")
COMMIT_EVERY_MS = 1000
MAX_DELTA_FILES = 256  # files finished and not yet committed before reading pauses (see the docstring)
_JOURNAL_MIN_COMPACT = 1 << 20
BATCH_RECORDS = 1000  # records decoded per worker-thread call
STATE_VERSION = 2


@dataclass(frozen=True, slots=True)
class CloudTrailConfig:
    """``[inputs.<name>]`` with ``type = "cloudtrail"``."""

    directory: str
    poll_interval_ms: int = 5000
    max_object_bytes: int = 256 * 1024**2
    max_ratio: float = 1000.0
    max_records: int = 1_000_000


_KEYS = ("directory", "poll_interval", "max_object_bytes", "max_ratio", "max_records")


def config_from_toml(table: dict, where: str) -> tuple[CloudTrailConfig | None, list[Issue]]:
    """Validate one ``[inputs.<name>]`` table of type cloudtrail; every problem is returned, none raised."""
    r = TableReader(table, where, _KEYS)
    directory = r.string("directory", None)
    if directory is None:
        r.bad("directory", "missing-key", "required (the directory CloudTrail files are synced to)")
    elif not os.path.isabs(directory):
        r.bad("directory", "bad-value", f"{directory!r} is not an absolute path")
    config = CloudTrailConfig(
        directory=directory or "",
        poll_interval_ms=r.duration_ms("poll_interval", 5000, 10, 3_600_000),
        max_object_bytes=r.size("max_object_bytes", 256 * 1024**2, 1024, 16 * 1024**3),
        max_ratio=r.number("max_ratio", 1000.0, 2.0, 1e6),
        max_records=r.integer("max_records", 1_000_000, 1, 100_000_000),
    )
    if r.issues:
        return None, r.issues
    return config, []


# ------------------------------------------------------------------------------------------------------
# synchronous core


def is_cloudtrail_file(relpath: str) -> bool:
    """True for the event files of the layout; False for digests, Insights, temporaries and others."""
    parts = relpath.replace(os.sep, "/").split("/")
    name = parts[-1]
    if name.startswith(".") or not (name.endswith(".json") or name.endswith(".json.gz")):
        return False
    if any(p in _IGNORED_DIRS for p in parts[:-1]):
        return False
    return not any(s in name for s in _IGNORED_NAME_PARTS)


def read_object(path: str, max_bytes: int, max_ratio: float) -> tuple[bytes | bytearray | None, list[str]]:
    """The decompressed bytes of one file (None when refused) and the problems met (metric reasons)."""
    with open(path, "rb") as f:
        if not path.endswith(".gz"):
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                return None, ["oversized"]
            return f.read(max_bytes + 1), []
        gz = BoundedGunzip(f, max_bytes=max_bytes, max_ratio=max_ratio)
        out = bytearray()
        try:
            while piece := gz.read(1024 * 1024):
                out += piece
        except GzipError as exc:
            if exc.reason != "trailing_garbage":
                return None, [exc.reason]
            return out, [exc.reason]
        return out, []


class Malformed(ValueError):
    """The document is not a CloudTrail log file from this point on; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_WS = re.compile(r"[ \t\n\r]*")


def iter_records(text: str, problems: list[str] | None = None) -> Iterator[object]:
    """The elements of the top-level ``Records`` array of a JSON document, decoded one at a time.

    One repair: records written one after another without the ``,`` between them (``} {``, as some
    exporters concatenate them) are read as if it were there; each such place adds ``missing_comma`` to
    `problems`.

    Only one record's objects exist at a time (decoding the whole document first would need about ten
    times its size). Raises :class:`Malformed` where the document stops being a CloudTrail file:
    ``invalid_json`` (syntax, nesting deeper than the decoder's recursion limit, trailing data),
    ``no_records`` (not an object, or no ``Records`` key), ``bad_records`` (``Records`` not an array).
    Records before the problem have been yielded. Of duplicate ``Records`` keys the first is read.
    """
    dec = json.JSONDecoder()

    def skip(pos: int) -> int:
        m = _WS.match(text, pos)
        return m.end() if m else pos

    def value(pos: int) -> tuple[object, int]:
        try:
            return dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise Malformed("invalid_json", f"invalid JSON: {exc}") from None
        except RecursionError:
            raise Malformed("invalid_json", f"JSON nested too deeply at char {pos}") from None

    def expect(pos: int, char: str) -> int:
        pos = skip(pos)
        if not text.startswith(char, pos):
            raise Malformed("invalid_json", f"invalid JSON: expected {char!r} at char {pos}")
        return skip(pos + 1)

    pos = skip(0)
    if not text.startswith("{", pos):
        value(pos)  # say invalid_json rather than no_records for text that is not JSON at all
        raise Malformed("no_records", "the JSON document is not an object with Records")
    pos = skip(pos + 1)
    found = False
    while not text.startswith("}", pos):
        key, pos = value(pos)
        if not isinstance(key, str):
            raise Malformed("invalid_json", f"invalid JSON: object key expected at char {pos}")
        pos = expect(pos, ":")
        if key == "Records" and not found:
            found = True
            if not text.startswith("[", pos):
                value(pos)
                raise Malformed("bad_records", "Records is not an array")
            pos = skip(pos + 1)
            if text.startswith("]", pos):
                pos += 1
            else:
                while True:
                    record, pos = value(pos)
                    yield record
                    pos = skip(pos)
                    if text.startswith(",", pos):
                        pos = skip(pos + 1)
                    elif text.startswith("]", pos):
                        pos += 1
                        break
                    elif text.startswith("{", pos):  # the next record without the ',' before it
                        if problems is not None:
                            problems.append("missing_comma")
                    else:
                        raise Malformed("invalid_json", f"invalid JSON: expected ',' or ']' at char {pos}")
        else:
            _, pos = value(pos)
        pos = skip(pos)
        if text.startswith(",", pos):
            pos = skip(pos + 1)
        elif not text.startswith("}", pos):
            raise Malformed("invalid_json", f"invalid JSON: expected ',' or '}}' at char {pos}")
    if skip(pos + 1) != len(text):
        raise Malformed("invalid_json", f"invalid JSON: data after the document at char {pos + 1}")
    if not found:
        raise Malformed("no_records", "the JSON object has no Records")


def encode_record(record: object) -> bytes | None:
    """One record as compact JSON (orjson; the standard library for what orjson refuses, such as integers
    beyond 64 bits or lone surrogates); None when it cannot be encoded at all."""
    try:
        return orjson.dumps(record)
    except TypeError:
        try:
            return json.dumps(record, separators=(",", ":")).encode()
        except (ValueError, RecursionError):
            return None


class RecordReader:
    """Reads one CloudTrail file in batches: bounded decompression, one record decoded at a time.

    Peak memory is about the decompressed size (at most ``max_bytes``) once or twice (the text), plus one
    batch. ``problems`` collects metric reasons; ``refused`` is true when the file yielded nothing usable
    because of a problem; ``dropped`` counts records beyond ``max_records`` (still read, not returned).
    """

    def __init__(self, path: str, max_bytes: int, max_ratio: float, max_records: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.max_records = max_records
        self.problems: list[str] = []
        self.dropped = 0
        self.refused = False
        self.count = 0  # records returned or skipped so far
        self._records: Iterator[object] | None = None
        self._finished = False

    def _start(self) -> Iterator[object] | None:
        raw, problems = read_object(self.path, self.max_bytes, self.max_ratio)
        self.problems += problems
        if raw is None:
            self.refused = True
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            self.problems.append("invalid_utf8")
        del raw
        return iter_records(text, self.problems)

    def next_batch(self, n: int, skip: int = 0) -> list[tuple[int, bytes]]:
        """Up to ``n`` more records as (position in Records counting from 1, compact JSON); ``[]`` at the
        end. The first ``skip`` records are passed over (resuming). Blocking: call it from a worker thread."""
        if self._finished:
            return []
        if self._records is None:
            self._records = self._start()
            if self._records is None:
                self._finished = True
                return []
        out: list[tuple[int, bytes]] = []
        try:
            while len(out) < n:
                record = next(self._records)
                if self.count >= self.max_records:
                    self.dropped += 1
                    continue
                self.count += 1
                if self.count <= skip:
                    continue
                data = encode_record(record)
                if data is None:
                    self.problems.append("unencodable_record")
                    continue
                out.append((self.count, data))
        except StopIteration:
            self._finished = True
        except Malformed as exc:
            self._finished = True
            self.problems.append(exc.reason)
            self.refused = self.count == 0
        if self._finished and self.dropped:
            self.problems.append("too_many_records")
        return out


@dataclass(frozen=True, slots=True)
class Decoded:
    """Everything one file yielded: its records (None when refused), problems, records over the cap."""

    records: list[bytes] | None
    problems: list[str]
    dropped: int = 0


def load_file(path: str, max_bytes: int, max_ratio: float, max_records: int) -> Decoded:
    """All records of one file at once (for tests and tools; the collector reads in batches)."""
    reader = RecordReader(path, max_bytes, max_ratio, max_records)
    records: list[bytes] = []
    while batch := reader.next_batch(10_000):
        records += [data for _, data in batch]
    return Decoded(None if reader.refused else records, reader.problems, reader.dropped)


# ------------------------------------------------------------------------------------------------------
# runtime


class CloudTrailCollector:
    """Watches ``config.directory``; see the module docstring for what is read and guaranteed."""

    def __init__(self, config: CloudTrailConfig, name: str, state_dir: str | Path, *, autocommit: bool = True,
                 clock: Clock = wall_ms) -> None:
        self.config = config
        self.name = name
        self.state_path = Path(state_dir) / state_file_name("cloudtrail", name)
        self.journal_path = self.state_path.with_name(self.state_path.name + ".journal")
        self._delta: dict[str, tuple[int, int]] = {}  # done since the last commit: what positions() says
        self._committed_state: dict[str, tuple[int, int]] = {}  # done as the state files say
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self._committed = asyncio.Event()
        self.autocommit = autocommit
        self._clock = clock
        self._done: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns)
        self._current: tuple[str, int, int, int] | None = None  # (relpath, size, mtime_ns, records delivered)
        self._seen: dict[str, tuple[int, int]] = {}  # size/mtime of the previous scan, to let files settle
        self._io_errors: set[str] = set()
        self._loaded = False
        self._dirty = False
        self._last_commit_ms = 0
        self._state_problem: str | None = None
        self._missing_dir = False
        self._stopping = asyncio.Event()
        self._running: asyncio.Future[None] | None = None
        self._received = metrics.EVENTS_RECEIVED.labels(input=name, format="cloudtrail")
        self._bytes = metrics.BYTES_RECEIVED.labels(input=name)
        self._last = metrics.INPUT_LAST_EVENT.labels(input=name)

    # -- public -----------------------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Scan every ``poll_interval`` until :meth:`stop` or cancellation."""
        self._running = asyncio.get_running_loop().create_future()
        try:
            self._load()
            while not self._stopping.is_set():
                try:
                    await self._scan_once(sink)
                except Exception:  # a bug must not end the input: say it loudly, count it, go on
                    log.exception("input %s: unexpected error while scanning", self.name)
                    self._error("internal")
                if self.autocommit and self._dirty:
                    self._autocommit()
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.config.poll_interval_ms / 1000)
                except TimeoutError:
                    pass
        finally:
            if self.autocommit:
                self._autocommit()
            if not self._running.done():
                self._running.set_result(None)

    async def stop(self) -> None:
        """Finish after the record being delivered; persist positions when ``autocommit``."""
        self._stopping.set()
        if self._running is not None:
            await asyncio.shield(self._running)

    def positions(self) -> dict:
        """What changed since the last commit, covering exactly the records already handed to the sink:
        the files finished since (at most MAX_DELTA_FILES) and the file being read."""
        current = None
        if self._current is not None:
            rel, size, mtime, n = self._current
            current = {"path": rel, "size": size, "mtime_ns": mtime, "records": n}
        return {"version": STATE_VERSION, "done": {p: list(v) for p, v in self._delta.items()}, "current": current}

    def commit(self, positions: dict) -> None:
        """Persist positions (from positions(), now or earlier): merge their ``done`` into the state and
        take their ``current``. Raises StateError when the state cannot be written."""
        self._load()
        try:
            done = {str(p): (int(v[0]), int(v[1])) for p, v in positions.get("done", {}).items()}
            cur = positions.get("current")
            current = None if not cur else (str(cur["path"]), int(cur["size"]), int(cur["mtime_ns"]),
                                            int(cur["records"]))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise StateError(f"input {self.name}: positions to commit are malformed: {exc}") from exc
        line = orjson.dumps({"done": {p: list(v) for p, v in done.items()},
                             "current": _current_json(current)}) + b"\n"
        if self._journal_bytes + len(line) > max(self._snapshot_bytes, _JOURNAL_MIN_COMPACT):
            self._committed_state.update(done)
            snapshot = orjson.dumps({"version": STATE_VERSION,
                                     "done": {p: list(v) for p, v in self._committed_state.items()},
                                     "current": _current_json(current)})
            write_atomic(self.state_path, snapshot)
            _truncate(self.journal_path)
            self._snapshot_bytes, self._journal_bytes = len(snapshot), 0
        else:
            _append_synced(self.journal_path, line)
            self._committed_state.update(done)
            self._journal_bytes += len(line)
        for p, sig in done.items():
            if self._delta.get(p) == sig:
                del self._delta[p]
            self._done.setdefault(p, sig)  # a restart commits the log's positions before run()
        if self._running is None:  # not started: these positions (the log's) say where to resume
            self._current = current
        self._committed.set()

    # -- state ------------------------------------------------------------------------------------

    def _load(self) -> None:
        """The snapshot, then every complete journal line (a torn last line is ignored: its commit had
        not returned)."""
        if self._loaded:
            return
        self._loaded = True
        self._committed_state = {}
        try:
            data = read_json(self.state_path)
            if data is not None:
                if not isinstance(data, dict):
                    raise TypeError("not a JSON object")
                self._snapshot_bytes = self.state_path.stat().st_size
                self._apply_state(data)
            try:
                journal = self.journal_path.read_bytes()
            except FileNotFoundError:
                journal = b""
            self._journal_bytes = len(journal)
            for raw in journal.split(b"\n"):
                try:
                    entry = orjson.loads(raw) if raw.strip() else None
                except orjson.JSONDecodeError:
                    break
                if isinstance(entry, dict):
                    self._apply_state(entry)
        except (OSError, StateError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            log.error("input %s: state file %s unusable (%s); reading every file again", self.name,
                      self.state_path, exc)
            self._error("corrupt_state")
            self._committed_state, self._current = {}, None
        self._done = dict(self._committed_state)

    def _apply_state(self, data: dict) -> None:
        self._committed_state.update({str(p): (int(v[0]), int(v[1])) for p, v in data["done"].items()})
        cur = data.get("current")
        self._current = (str(cur["path"]), int(cur["size"]), int(cur["mtime_ns"]), int(cur["records"])) if cur else None

    def _autocommit(self) -> None:
        self._state_problem = commit_positions(self.name, lambda: self.commit(self.positions()), self._state_problem)
        self._dirty = self._dirty and self._state_problem is not None
        self._last_commit_ms = monotonic_ms()

    def _error(self, reason: str) -> None:
        metrics.INPUT_ERRORS.labels(input=self.name, reason=reason).inc()

    # -- scanning and reading ---------------------------------------------------------------------

    def _list(self) -> dict[str, tuple[int, int]] | None:
        """Every candidate file below the directory as relpath -> (size, mtime_ns); None if unreadable."""
        root = self.config.directory
        if not os.path.isdir(root):
            if not self._missing_dir:
                self._missing_dir = True
                self._error("missing_directory")
                log.warning("input %s: directory %s does not exist (yet)", self.name, root)
            return None
        self._missing_dir = False
        found: dict[str, tuple[int, int]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _IGNORED_DIRS and not d.startswith(".")]
            for fn in filenames:
                full = os.path.join(dirpath, fn)
                rel = os.path.relpath(full, root)
                if not is_cloudtrail_file(rel):
                    continue
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                found[rel] = (st.st_size, st.st_mtime_ns)
        return found

    async def _scan_once(self, sink: Sink) -> None:
        found = await asyncio.to_thread(self._list)
        if found is None:
            return
        if found:  # forget files that are gone (not when everything vanished: an unmounted directory)
            for rel in [p for p in self._done if p not in found]:
                del self._done[rel]
                self._delta.pop(rel, None)
                self._committed_state.pop(rel, None)  # left out of the next snapshot
                self._dirty = True
        ready = []
        for rel, sig in sorted(found.items()):
            if self._done.get(rel) == sig:
                continue
            if self._seen.get(rel) != sig:
                self._seen[rel] = sig
                continue
            ready.append((rel, sig))
        self._seen = {rel: sig for rel, sig in self._seen.items() if rel in found and self._done.get(rel) != sig}
        for rel, sig in ready:
            while len(self._delta) >= MAX_DELTA_FILES and not self._stopping.is_set():
                if self.autocommit:
                    self._autocommit()
                    if len(self._delta) < MAX_DELTA_FILES:
                        break
                self._committed.clear()
                try:  # positions stay bounded: wait for the daemon to log and commit them
                    await asyncio.wait_for(self._committed.wait(), 1.0)
                except TimeoutError:
                    pass
            if self._stopping.is_set():
                return
            await self._read_file(rel, sig, sink)
            if self.autocommit and monotonic_ms() - self._last_commit_ms >= COMMIT_EVERY_MS:
                self._autocommit()

    async def _read_file(self, rel: str, sig: tuple[int, int], sink: Sink) -> None:
        path = os.path.join(self.config.directory, rel)
        reader = RecordReader(path, self.config.max_object_bytes, self.config.max_ratio, self.config.max_records)
        skip = 0
        if self._current is not None and self._current[:3] == (rel, *sig):
            skip = self._current[3]  # resuming inside this file after a stop
        self._current = (rel, sig[0], sig[1], skip)
        name = self.name
        delivered = 0
        while True:
            try:
                batch = await asyncio.to_thread(reader.next_batch, BATCH_RECORDS, skip)
            except OSError as exc:
                if rel not in self._io_errors:
                    self._io_errors.add(rel)
                    self._error("io")
                    log.warning("input %s: cannot read %s: %s; retrying", self.name, path, exc)
                self._seen.pop(rel, None)
                return
            self._io_errors.discard(rel)
            if not batch:
                break
            for position, data in batch:
                await sink(RawRecord(input=name, format="cloudtrail", data=data, received_ms=self._clock(),
                                     origin=path))
                self._received.inc()
                self._bytes.inc(len(data))
                self._current = (rel, sig[0], sig[1], position)
                self._dirty = True
                delivered += 1
                if self._stopping.is_set():
                    self._last.set(time.time())
                    return  # stop inside the file: positions() says how far
            self._last.set(time.time())
        for reason in reader.problems:
            self._error(reason)
            log.warning("input %s: %s: %s%s", self.name, path, reason, "; file refused" if reader.refused else "")
        if reader.dropped:
            metrics.INPUT_DROPPED.labels(input=self.name, reason="too_many_records").inc(reader.dropped)
        self._mark_done(rel, sig)

    def _mark_done(self, rel: str, sig: tuple[int, int]) -> None:
        self._done[rel] = sig
        self._delta[rel] = sig
        self._current = None
        self._seen.pop(rel, None)
        self._dirty = True


def _current_json(current: tuple[str, int, int, int] | None) -> dict | None:
    if current is None:
        return None
    rel, size, mtime, n = current
    return {"path": rel, "size": size, "mtime_ns": mtime, "records": n}


def _append_synced(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot write state file {path}: {exc.strerror or exc}") from exc


def _truncate(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot write state file {path}: {exc.strerror or exc}") from exc
