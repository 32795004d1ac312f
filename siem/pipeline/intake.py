"""Intake: collectors -> bounded queue -> parse -> event log -> commit input positions.

::

    collectors --sink--> queue (bounded) --writer--> parse (threads or worker processes)
                         back-pressure               --> EventLog.append(events, [Positions..., Watermark])
                                                     --> inputs' own position files (once durable)

The same stage feeds the local log (embedded mode) and the ``siem.events`` topic (the Kafka collector
role); only the EventLog differs.

Positions. The queue is drained completely before the positions are read, in the same step of the event
loop: a collector is then either between records (its positions cover exactly what it has put on the
queue) or suspended inside a ``put`` (that record is neither queued nor covered). So each append ends
with positions that cover exactly the records before them: a log that keeps them (LocalLog) lets the
inputs resume from the last positions in the log after a crash, neither re-reading nor skipping a line.
The positions are also written to the inputs' own state files once the append is durable, so a lost log
does not mean reading every file again; the log's positions win at a restart.

Watermark. Every append that carries events, and every quiet interval, may end with a Watermark record
from :class:`~siem.pipeline.watermark.SourceWatermark`: the engine moves only with those.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from siem import metrics
from siem.collect import INPUT_TYPES, RawRecord
from siem.config import DaemonConfig, InputSpec
from siem.errors import SiemError
from siem.pipeline.collectors import RunningInput, stop_input
from siem.pipeline.records import Positions, Watermark, encode_record
from siem.pipeline.watermark import SourceWatermark
from siem.timeutil import monotonic_ms, wall_ms

log = logging.getLogger(__name__)

QUIET_INTERVAL_MS = 500  # a quiet queue still logs moved positions and watermarks this often
POOL_MIN_BATCH = 256  # smaller batches are parsed in a thread: a worker round trip is not worth it


class EventLog(Protocol):
    """Where intake puts parsed events: the local log or a Kafka topic.

    ``append`` returns once the records are accepted (in the local log: written; on Kafka: acknowledged
    by every in-sync replica); a refusal that may pass (a full disk, a broker away) is retried inside it,
    so intake waits meanwhile and nothing is dropped. ``sync`` makes what was appended durable."""

    keeps_positions: bool  # Positions records are logged and read back at a restart

    async def append(self, events: list[bytes], control: list[Positions | Watermark]) -> None: ...

    async def sync(self) -> None: ...

    async def idle(self) -> None: ...  # nothing to append for a while: the log's own timed work (fsync policy)

    def give_up(self) -> None: ...  # stop retrying a refused append: it raises StateError instead (shutdown)


@dataclass(frozen=True, slots=True)
class Parsed:
    events: list[bytes]  # encoded event records
    times: dict[tuple[str, str], int]  # newest event time per source (input, origin)
    counts: dict[tuple[str, str], tuple[int, int]]  # (input, format) -> (parsed, failed)
    future: int = 0  # events dated ahead of the wall clock by more than the allowed lateness


def parse_context(daemon: DaemonConfig) -> object:
    """The parse context of a daemon config: the zone of timestamps that carry none, GeoIP enrichment."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from siem.parse import ParseContext  # noqa: PLC0415

    return ParseContext(tz=ZoneInfo(daemon.timezone), now_ms=None, geo=daemon.geo_spec)


def parse_records(items: list[RawRecord], ctx: object, limit_ms: int, file_inputs: frozenset[str],
                  ahead_ms: int = 2**62) -> Parsed:
    """Parse raw records into encoded events (runs in a thread or a parse worker process). A source's
    event time counts for the watermark up to `limit_ms` (now + future_skew); events dated after
    `ahead_ms` (now + lateness) are counted as dated in the future."""
    from siem.parse import parse  # noqa: PLC0415
    events: list[bytes] = []
    times: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    future = 0
    for rec in items:
        ev = parse(rec.format, rec.data, ctx, rec.input)  # type: ignore[arg-type]
        ev["event.ingested"] = rec.received_ms
        if rec.origin and rec.input in file_inputs:
            ev.setdefault("log.file.path", rec.origin)
        events.append(encode_record(ev))
        ok, failed = counts.get((rec.input, rec.format), (0, 0))
        counts[(rec.input, rec.format)] = (ok, failed + 1) if "error.message" in ev else (ok + 1, failed)
        ts = ev.get("@timestamp")
        if type(ts) is int:
            key = (rec.input, rec.origin)
            times[key] = max(times.get(key, ts), min(ts, limit_ms))  # type: ignore[type-var]
            future += ts > ahead_ms  # type: ignore[operator]
    return Parsed(events, times, counts, future)


def _worker_init(parent_pid: int) -> None:
    """In a parse worker: Ctrl-C is the parent's to handle, and the worker dies with its parent, even
    after kill -9 (PR_SET_PDEATHSIG plus a parent-pid watch: siem.orphans.die_with_parent)."""
    from siem.orphans import die_with_parent  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


class ParsePool:
    """Parse worker processes (spawned: no fork of a threaded event loop); none with one CPU."""

    def __init__(self, workers: int) -> None:
        n = (os.cpu_count() or 1) if workers < 0 else workers
        if workers < 0 and n < 2:
            n = 0
        self.workers = max(n, 0)
        self._pool = (ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_worker_init, initargs=(os.getpid(),))
                      if self.workers else None)

    async def parse(self, items: list[RawRecord], ctx: object, limit_ms: int, file_inputs: frozenset[str],
                    ahead_ms: int = 2**62) -> Parsed:
        if self._pool is None or len(items) < POOL_MIN_BATCH:
            parsed = await asyncio.to_thread(parse_records, items, ctx, limit_ms, file_inputs, ahead_ms)
        else:
            loop = asyncio.get_running_loop()
            step = -(-len(items) // self.workers)
            parts = await asyncio.gather(*(
                loop.run_in_executor(self._pool, parse_records, items[i: i + step], ctx, limit_ms, file_inputs,
                                     ahead_ms)
                for i in range(0, len(items), step)))
            parsed = Parsed([e for p in parts for e in p.events], {}, {}, sum(p.future for p in parts))
            for p in parts:
                for key, ts in p.times.items():
                    parsed.times[key] = max(parsed.times.get(key, ts), ts)
                for (input_name, fmt), (ok, failed) in p.counts.items():  # workers' counters are not served
                    metrics.EVENTS_PARSED.labels(input=input_name, format=fmt).inc(ok)
                    if failed:
                        metrics.EVENTS_FAILED.labels(input=input_name, format=fmt).inc(failed)
        return parsed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class Intake:
    """The intake stage: owns the queue, the writer loop and the inputs' positions."""

    def __init__(self, log_: EventLog, watermark: SourceWatermark, pool: ParsePool, ctx: object,
                 queue_size: int, future_skew_ms: int, origin: str = "",
                 last_positions: dict[str, dict] | None = None) -> None:
        self.log = log_
        self.watermark = watermark
        self.pool = pool
        self.ctx = ctx
        self.future_skew_ms = future_skew_ms
        self.origin = origin  # names this intake in its Watermark records
        self.queue: asyncio.Queue[RawRecord | None] = asyncio.Queue(queue_size)
        self.inputs: dict[str, RunningInput] = {}
        self.enqueued = 0  # records put on the queue so far
        self.written = 0  # records taken off it and appended
        self._durable_seq = 0  # every record the sink numbered up to this is appended
        self._durable_waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap: (seq, id, future)
        self.last_positions: dict[str, dict] = dict(last_positions or {})  # input -> positions last appended
        self._file_committed: dict[str, dict] = {}  # input -> positions last written to its state file
        self._last_file_commit_ms = 0
        self.appended = asyncio.Event()  # set after every append (the embedded evaluator waits on it)
        self.done = asyncio.Event()
        self._queue_gauge = metrics.QUEUE_DEPTH.labels(queue="intake")

    async def sink(self, record: RawRecord) -> int:
        """What collectors await for each record: a bounded queue, so a slow pipeline slows intake.
        Returns the record's sequence number, for ``durable``."""
        await self.queue.put(record)
        self.enqueued += 1  # same step as the put: queue order is sequence order
        return self.enqueued

    async def durable(self, seq: int) -> None:
        """Returns once the record ``sink`` numbered ``seq`` has been appended (siem.collect.Durable): in
        the local log under its fsync policy (fdatasync'ed with the default fsync = "always"), on Kafka
        acknowledged by the in-sync replicas. RELP acknowledges only then (siem.collect.relp)."""
        if seq <= self._durable_seq:
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._durable_waiters, (seq, id(fut), fut))
        await fut

    def _set_durable(self, seq: int) -> None:
        """Every record up to ``seq`` is appended: wake the ``durable`` waiters it covers."""
        self._durable_seq = seq
        waiters = self._durable_waiters
        while waiters and waiters[0][0] <= seq:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(None)

    def start_watermark(self, specs: tuple[InputSpec, ...]) -> None:
        """Start event time: once every input had the time to deliver what it found at its start."""
        self.watermark.start(max((INPUT_TYPES[s.type].backlog_ms(s.config) for s in specs), default=0))

    @property
    def idle(self) -> bool:
        return self.queue.empty() and self.written == self.enqueued

    async def finish(self, timeout_s: float | None = None) -> int:
        """After the inputs stopped: write everything still queued and the final positions. With a
        timeout (the drain bound), a log that still refuses appends then (a full disk) is given up:
        returns the number of records that were accepted by the collectors but not logged."""
        await self.queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self.done.wait()), timeout_s)
            return 0
        except TimeoutError:
            self.log.give_up()
            await self.done.wait()
            return self.enqueued - self.written

    async def run(self) -> None:
        """Take everything queued, parse it, append it with the positions and the watermark it makes."""
        try:
            finished = False
            while not finished:
                try:
                    first = await asyncio.wait_for(self.queue.get(), timeout=QUIET_INTERVAL_MS / 1000)
                except TimeoutError:  # quiet: positions may still move (empty lines, finished files)
                    positions = self._moved_positions()
                    wm = self.watermark.next()  # a source fell idle, or the wall clock moved on
                    if positions or wm is not None:
                        await self._append([], positions, wm)
                    await self.log.idle()
                    await self._commit_files()
                    continue
                self._queue_gauge.set(self.queue.qsize() + 1)
                items: list[RawRecord] = []
                if first is None:
                    finished = True
                else:
                    items.append(first)
                while not self.queue.empty():
                    nxt = self.queue.get_nowait()
                    if nxt is None:
                        finished = True
                        break
                    items.append(nxt)
                positions = self._moved_positions()  # same step as the drain: see the module docstring
                if items or positions:
                    await self._append(items, positions)
                    self.written += len(items)
                    self._set_durable(self.written)  # relp acks: these records are in the log now
                await self._commit_files(force=finished)
                self._queue_gauge.set(self.queue.qsize())
        finally:
            self.done.set()
            self.appended.set()

    def _moved_positions(self) -> list[Positions]:
        out = []
        for name, inp in self.inputs.items():
            keeper = inp.keeper
            if keeper is not None:
                pos = keeper.positions()
                if pos != self.last_positions.get(name):
                    out.append(Positions(name, pos))
        return out

    async def _append(self, items: list[RawRecord], positions: list[Positions], wm: int | None = None) -> None:
        file_inputs = frozenset(n for n, i in self.inputs.items() if i.spec.type == "files")
        now = wall_ms()
        parsed = await self.pool.parse(items, self.ctx, now + self.future_skew_ms, file_inputs,
                                       now + self.watermark.policy.lateness_ms)
        if parsed.future:
            metrics.EVENTS_FUTURE.inc(parsed.future)
        self.watermark.observe(parsed.times)
        if items:
            wm = self.watermark.next()
        control: list[Positions | Watermark] = list(positions)
        if wm is not None:
            control.append(Watermark(self.origin, wm))
        await self.log.append(parsed.events, control)
        for p in positions:
            self.last_positions[p.input] = p.positions
        if wm is not None:
            self.watermark.sent = wm
        self.appended.set()

    async def _commit_files(self, force: bool = False) -> None:
        """Write the appended positions to the inputs' own state files once they are durable."""
        now = monotonic_ms()
        if not force and now - self._last_file_commit_ms < QUIET_INTERVAL_MS:
            return
        self._last_file_commit_ms = now
        pending = [(n, p) for n, p in self.last_positions.items()
                   if n in self.inputs and self.inputs[n].keeper is not None and self._file_committed.get(n) is not p]
        if not pending:
            return
        await self.log.sync()
        for name, pos in pending:
            try:
                self.inputs[name].keeper.commit(pos)  # type: ignore[union-attr]
            except SiemError as exc:
                log.error("cannot commit input positions: %s", exc, extra={"input": name})
                continue
            self._file_committed[name] = pos

    async def wait_logged(self, name: str, timeout_ms: int = 10_000) -> None:
        """Until a stopped input's final positions are appended behind its last record (reload)."""
        inp = self.inputs.get(name)
        if inp is None or inp.keeper is None:
            return
        final = inp.keeper.positions()
        deadline = monotonic_ms() + timeout_ms
        while self.last_positions.get(name) != final and monotonic_ms() < deadline:
            await asyncio.sleep(0.05)
        await self._commit_files(force=True)


async def drain(intake: Intake, drain_timeout_ms: int) -> None:
    """SIGTERM: stop accepting; network inputs read what their senders still have in flight (until each
    connection is quiet), then everything queued is logged, all within `drain_timeout_ms`. A log that
    refuses appends past the bound (a full disk) is given up on: what it did not take is logged as lost."""
    started = monotonic_ms()
    log.info("stopping: draining inputs and queues", extra={"bound_ms": drain_timeout_ms})
    await asyncio.gather(*(stop_input(inp, drain_timeout_ms / 1000) for inp in list(intake.inputs.values())))
    left_s = max(drain_timeout_ms - (monotonic_ms() - started), 1000) / 1000
    lost = await intake.finish(left_s)
    if lost:
        metrics.INPUT_DROPPED.labels(input="log", reason="shutdown").inc(lost)
        log.error("stopping: %d accepted records could not be logged within the drain bound", lost)
    log.info("drained", extra={"ms": monotonic_ms() - started, "records": intake.written})
