"""The ``auditd`` input: tails ``audit.log`` and emits one record per complete Linux audit event.

The file side is :class:`siem.collect.files.FileTailer` (rotation by auditd's own rename, inode tracking,
persisted offsets, ``.gz`` backfill); this module sits between its lines and the pipeline and joins the
lines of one event (same ``msg=audit(<time>:<serial>)``) into one :class:`RawRecord` of format ``auditd``
(the lines joined by LF; siem.parse.auditd maps them to ECS).

When an event is complete is decided by :class:`siem.parse.auditd.EventAssembler` (replay uses it too):

* its record is a user-space or daemon record (USER_LOGIN, USER_CMD, ADD_USER, CRED_*, DAEMON_START,
  ...): those stand alone (``end="standalone"``);
* its ``PROCTITLE`` or ``EOE`` record arrives: the kernel writes PROCTITLE last and EOE after it, and
  auditd does not write EOE to its log (``end="proctitle"`` / ``"eoe"``); an EOE that follows an
  emitted PROCTITLE is dropped;
* a newer serial appears and the event has no SYSCALL record (a kernel record that stands alone, such as
  ANOM_PROMISCUOUS or a CONFIG_CHANGE without syscall auditing) (``end="newer_serial"``);
* ``event_timeout`` passed since its first record arrived (a SYSCALL event whose PROCTITLE never
  comes; ``end="timeout"``; this input's clock drives it);
* more than ``max_pending`` events are open (the oldest goes, ``end="overflow"``) or an event grew past
  ``max_event_bytes`` (``end="oversized"``).

A line that is not an audit record is emitted by itself (``end="not_audit"``; the parser marks it with
``error.message``); so is a record that arrives after its event was emitted (``end="late"``, a
lone EOE excepted). Events of several serials may interleave in the file (two CPUs); they are joined
correctly as long as each completes by one of the rules above.

Positions (the crash-safe contract of the daemon, see FileTailer): :meth:`positions` never covers a line
of an event that was not yet handed to the sink. While events are open it returns the file offsets from
just before the oldest open event's first line, plus the ids of the events emitted since (whose lines
lie after that point): after a restart those lines are read again, the open events are rebuilt whole,
and the records of the listed events are skipped, so a restart neither loses nor duplicates an event.
The ids travel in the same state document as the file offsets (key ``"auditd"``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from siem import metrics
from siem.collect import RawRecord, Sink, commit_positions
from siem.collect.files import FileInputConfig, FileTailer, TableReader
from siem.errors import Issue, StateError
from siem.parse.auditd import EventAssembler, event_id, is_standalone, record_type
from siem.statefile import read_json
from siem.timeutil import Clock, monotonic_ms, wall_ms

log = logging.getLogger(__name__)

DEFAULT_PATH = "/var/log/audit/audit.log"


@dataclass(frozen=True, slots=True)
class AuditdInputConfig:
    """``[inputs.<name>]`` with ``type = "auditd"``."""

    paths: tuple[str, ...] = (DEFAULT_PATH,)
    event_timeout_ms: int = 2000
    max_pending: int = 1000
    max_event_bytes: int = 1024 * 1024
    poll_interval_ms: int = 250
    max_line_bytes: int = 65536
    start_at: str = "beginning"
    read_gz: bool = False
    rotate_wait_ms: int = 5000

    def files(self) -> FileInputConfig:
        return FileInputConfig(paths=self.paths, format="auditd", poll_interval_ms=self.poll_interval_ms,
                               max_line_bytes=self.max_line_bytes, start_at=self.start_at,  # type: ignore[arg-type]
                               read_gz=self.read_gz, rotate_wait_ms=self.rotate_wait_ms)


_KEYS = ("paths", "event_timeout", "max_pending", "max_event_bytes", "poll_interval", "max_line_bytes", "start_at",
         "read_gz", "rotate_wait")


def config_from_toml(table: dict, where: str) -> tuple[AuditdInputConfig | None, list[Issue]]:
    """Validate one ``[inputs.<name>]`` table of type auditd; every problem is returned, none raised."""
    r = TableReader(table, where, _KEYS)
    paths = r.str_list("paths", (DEFAULT_PATH,))
    for p in paths:
        if not p.startswith("/"):
            r.bad("paths", "bad-value", f"{p!r} is not an absolute path")
    config = AuditdInputConfig(
        paths=paths,
        event_timeout_ms=r.duration_ms("event_timeout", 2000, 10, 600_000),
        max_pending=r.integer("max_pending", 1000, 1, 1_000_000),
        max_event_bytes=r.size("max_event_bytes", 1024 * 1024, 1024, 64 * 1024**2),
        poll_interval_ms=r.duration_ms("poll_interval", 250, 10, 3_600_000),
        max_line_bytes=r.size("max_line_bytes", 65536, 256, 64 * 1024**2),
        start_at=r.choice("start_at", "beginning", ("beginning", "end")),
        read_gz=r.boolean("read_gz", False),
        rotate_wait_ms=r.duration_ms("rotate_wait", 5000, 0, 86_400_000),
    )
    if r.issues:
        return None, r.issues
    return config, []


@dataclass(frozen=True, slots=True)
class _Open:
    """An event whose records are still arriving (or that is being handed to the sink)."""

    eid: str
    seq: int  # arrival order of its first line
    before: dict  # the tailer's positions just before its first line
    origin: str
    received_ms: int


class AuditdTailer:
    """Tails audit logs (see the module docstring); ``positions()``/``commit()`` like FileTailer."""

    def __init__(self, config: AuditdInputConfig, name: str, state_dir: str | Path, *, autocommit: bool = True,
                 clock: Clock = wall_ms, monotonic: Clock = monotonic_ms) -> None:
        self.config = config
        self.name = name
        self.autocommit = autocommit
        self._mono = monotonic
        self.tailer = FileTailer(config.files(), name, state_dir, autocommit=False, clock=clock)
        self._asm = EventAssembler(config.max_pending, config.max_event_bytes)
        self._open: dict[str, _Open] = {}
        self._emitted: list[tuple[int, str]] = []  # (seq, eid) of events emitted while an older one is open
        self._skip: set[str] = set()  # ids emitted before a restart whose lines we read again
        self._skip_loaded = False
        self._seq = 0
        self._lock = asyncio.Lock()
        self._sink: Sink | None = None
        self._ends = {}
        self._state_problem: str | None = None

    # -- public -----------------------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Tail until :meth:`stop` or cancellation. Open events are not emitted at the stop: positions
        exclude them, so the next run reads them again whole."""
        self._sink = sink
        self._load_skip()
        ticker = asyncio.create_task(self._tick(), name=f"input-{self.name}-timeouts")
        try:
            await self.tailer.run(self._line)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            if self.autocommit:
                self._commit()

    async def stop(self) -> None:
        await self.tailer.stop()

    def positions(self) -> dict:
        """Offsets covering exactly the lines of the events already handed to the sink (see the docstring);
        before :meth:`run`, the committed ones."""
        self._load_skip()
        if not self._open:
            pos = self.tailer.positions()
            if self._skip:
                pos["auditd"] = {"emitted": sorted(self._skip)}
            return pos
        oldest = next(iter(self._open.values()))
        pos = dict(oldest.before)
        emitted = [eid for seq, eid in self._emitted if seq > oldest.seq]
        emitted += [eid for eid in self._skip if eid not in self._open]
        if emitted:
            pos["auditd"] = {"emitted": sorted(set(emitted))}
        return pos

    def commit(self, positions: dict) -> None:
        self.tailer.commit(positions)

    # -- state ------------------------------------------------------------------------------------

    def _load_skip(self) -> None:
        if self._skip_loaded:
            return
        self._skip_loaded = True
        try:
            data = read_json(self.tailer.state_path)
        except StateError:
            return  # FileTailer says so and counts it
        extra = data.get("auditd") if isinstance(data, dict) else None
        ids = extra.get("emitted") if isinstance(extra, dict) else None
        if isinstance(ids, list):
            self._skip = {i for i in ids if isinstance(i, str)}

    def _commit(self) -> None:
        self._state_problem = commit_positions(self.name, lambda: self.commit(self.positions()), self._state_problem)

    # -- assembling -------------------------------------------------------------------------------

    def _count(self, end: str) -> None:
        c = self._ends.get(end)
        if c is None:
            c = self._ends[end] = metrics.AUDITD_EVENTS.labels(input=self.name, end=end)
        c.inc()

    async def _line(self, rec: RawRecord) -> None:
        """One line from the tailer (its offset moves past the line only after this returns)."""
        async with self._lock:
            if self._skip:
                head = rec.data[:200].decode("utf-8", "replace")
                eid = event_id(head)
                if eid is not None and eid in self._skip:  # emitted before the restart
                    rtype = record_type(head)
                    if rtype in ("PROCTITLE", "EOE") or is_standalone(rtype):
                        self._skip.discard(eid)  # its last record: the id is not needed any more
                    return
            self._seq += 1
            seq = self._seq
            done = self._asm.add(rec.data, self._mono())
            for eid in self._asm.open_ids()[-1:]:
                if eid not in self._open:  # this line opened an event: remember where it starts
                    self._open[eid] = _Open(eid, seq, self.tailer.positions(), rec.origin, rec.received_ms)
            for eid, lines, end in done:
                meta = self._open.get(eid) or _Open(eid, seq, {}, rec.origin, rec.received_ms)
                await self._emit(meta, lines, end)

    async def _emit(self, ev: _Open, lines: list[bytes], end: str) -> None:
        """Hand one event to the sink; it leaves the open set only once the sink took it."""
        assert self._sink is not None
        if lines:
            await self._sink(RawRecord(self.name, "auditd", b"\n".join(lines), ev.received_ms, ev.origin))
        self._count(end)
        self._open.pop(ev.eid, None)
        if self._open:  # a restart reads again from the oldest open event's first line: skip this one then
            oldest = next(iter(self._open.values())).seq
            self._emitted = [(s, e) for s, e in self._emitted if s > oldest]
            if ev.eid and self._seq > oldest:  # (conservative: its last line may be later than that point)
                self._emitted.append((self._seq, ev.eid))
        else:
            self._emitted.clear()

    async def _tick(self) -> None:
        """Emit events that timed out; autocommit once a second."""
        every = min(max(self.config.event_timeout_ms // 4, 10), 250) / 1000
        last_commit = time.monotonic()
        while True:
            await asyncio.sleep(every)
            if self._open:
                async with self._lock:
                    for eid, lines, end in self._asm.expire(self._mono() - self.config.event_timeout_ms):
                        meta = self._open.get(eid)
                        if meta is not None:
                            await self._emit(meta, lines, end)
            if self.autocommit and time.monotonic() - last_commit >= 1.0:
                last_commit = time.monotonic()
                self._commit()


__all__ = ["AuditdInputConfig", "AuditdTailer", "config_from_toml"]
