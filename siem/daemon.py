"""The daemon in embedded mode (``role = "all"``): every stage in one process, LocalLog in between.

::

    collectors --sink--> intake queue (bounded) --writer--> LocalLog --engine--> AlertPipeline
      syslog / files        back-pressure          parse, append,     read from the     alert log first,
      / cloudtrail ...      (UDP counts drops)     then commit file   checkpointed      dedup by alert id,
                                                   positions          offset, batch,    notifications
                                                                      checkpoint

Tasks on one asyncio loop; the blocking parts (parsing + append + fsync, engine evaluation, checkpoint
writes) run in worker threads so the loop keeps reading sockets and pinging the watchdog.

Crash safety (kill -9 at any moment):

* a record is *accepted* when the writer's append returned. Each append also carries the positions of the
  position-keeping inputs (files, cloudtrail, journald) that cover exactly the records before them, so a
  restart resumes those inputs from the last positions in the log: no line read twice, none skipped;
* the event-time watermark moves only with records in the log (the minimum over the active sources, and
  the wall clock for an idle live stream), so a replay of the log after a crash moves it identically;
* the engine's window state and the log offset it covers are written together, atomically
  (siem.log.checkpoint), and only after every alert of the events below that offset is in the alert log;
* after a restart the engine restores the checkpoint and re-reads the log from its offset; evaluation does
  not depend on batch boundaries, so it emits the same alerts with the same ids, and the alert pipeline
  drops the ids it already has. No alert is lost, none is written or notified twice.

Signals: SIGTERM/SIGINT drain (stop collectors, write what is queued, evaluate what is logged, final
checkpoint) and exit 0; SIGHUP reloads config and rules (an invalid set keeps the old one running).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import logging
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from siem import metrics
from siem.alert.config import resolve_route_urls
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert
from siem.collect import RawRecord
from siem.config import Config, InputSpec, load_config
from siem.dsl.loader import RuleSet, load_rules
from siem.engine.runtime import Engine
from siem.errors import ConfigError, InputError, RuleError, SiemError, StateError
from siem.log.checkpoint import ForkedCheckpoint, load_checkpoint, remove_stale_temporaries, save_checkpoint
from siem.log.codec import decode_event, encode_events
from siem.log.local import DirLock, LocalLog
from siem.logsetup import register_secret
from siem.progress import ProgressCounts, ProgressReporter, daemon_intro
from siem.schema import Event
from siem.service import Notifier, watchdog_loop
from siem.statefile import write_json_atomic
from siem.timeutil import monotonic_ms, wall_ms

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # pid, bound ports: for `siem status`, `siem reload` and tests
PID_FILE = "siem.pid"
_FILE_COMMIT_EVERY_MS = 500
_RETRY_S = 1.0
MARK_KEY = "@siem.positions"  # a log record holding an input's positions, not an event
ADVANCE_KEY = "@siem.advance"  # a log record moving the watermark, not an event
UNBOUNDED_LATENESS_MS = 10**15
_STATE_MAGIC = b"SIEMD1\n"


def encode_mark(input_name: str, positions: dict) -> bytes:
    """The log record saying: input `input_name` has put exactly the records before this one."""
    return orjson.dumps({MARK_KEY: input_name, "positions": positions})


def scan_tail(lg: LocalLog, from_offset: int, chunk: int = 4096) -> tuple[dict[str, dict], int, int]:
    """What the part of the log not covered by the checkpoint says, for a restart: the last positions per
    input, the newest event time and the last watermark record (-2**62 when none)."""
    marks: dict[str, dict] = {}
    newest = last_wm = -(2**62)
    offset = from_offset
    while offset < lg.end_offset:
        records = lg.read(offset, chunk)
        if not records:
            break
        for _, payload in records:
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(doc, dict):
                continue
            if MARK_KEY in doc:
                marks[str(doc[MARK_KEY])] = doc.get("positions")  # type: ignore[assignment]
            elif ADVANCE_KEY in doc:
                if isinstance(doc[ADVANCE_KEY], int):
                    last_wm = max(last_wm, doc[ADVANCE_KEY])
            elif type(doc.get("@timestamp")) is int:
                newest = max(newest, doc["@timestamp"])
        offset = records[-1][0] + 1
    return marks, newest, last_wm


def wrap_state(engine_state: bytes, marks: dict[str, dict]) -> bytes:
    """The checkpoint's state: the input positions the checkpoint covers, then the engine snapshot."""
    head = orjson.dumps(marks)
    return _STATE_MAGIC + len(head).to_bytes(4, "big") + head + engine_state


def unwrap_state(state: bytes) -> tuple[bytes, dict[str, dict]]:
    if not state.startswith(_STATE_MAGIC):
        return state, {}
    n = int.from_bytes(state[len(_STATE_MAGIC): len(_STATE_MAGIC) + 4], "big")
    start = len(_STATE_MAGIC) + 4
    try:
        marks = orjson.loads(state[start: start + n])
    except orjson.JSONDecodeError as exc:
        raise StateError(f"checkpoint input positions are corrupt: {exc}") from exc
    return state[start + n:], marks if isinstance(marks, dict) else {}


# --- inputs ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class RunningInput:
    """A started collector: how to stop it, what it bound, and (files) its positions hook."""

    spec: InputSpec
    obj: Any
    task: asyncio.Task[None] | None = None
    port: int | None = None
    tailer: Any = None  # a FileTailer (autocommit off): positions() / commit()


async def start_input(spec: InputSpec, state_dir: Path, sink: Any, positions: dict | None = None) -> RunningInput:
    """Build and start one collector; returns once its sockets are bound (network inputs). ``positions``
    (files, cloudtrail): where to resume, from the log; written to the input's state file first."""
    if spec.type == "syslog":
        from siem.collect.syslog import SyslogServer  # noqa: PLC0415

        server = SyslogServer(spec.config, spec.name)  # type: ignore[arg-type]
        await server.start(sink)
        return RunningInput(spec, server, port=server.port)
    if spec.type == "files":
        from siem.collect.files import FileTailer  # noqa: PLC0415

        tailer = FileTailer(spec.config, spec.name, state_dir, autocommit=False)  # type: ignore[arg-type]
        if positions is not None:
            tailer.commit(positions)
        task = asyncio.create_task(tailer.run(sink), name=f"input-{spec.name}")
        return RunningInput(spec, tailer, task=task, tailer=tailer)
    if spec.type == "cloudtrail":
        from siem.collect.cloudtrail import CloudTrailCollector  # noqa: PLC0415

        obj: Any = CloudTrailCollector(spec.config, spec.name, state_dir, autocommit=False)  # type: ignore[arg-type]
    elif spec.type == "journald":
        from siem.collect.journald import JournaldFollower  # noqa: PLC0415

        obj = JournaldFollower(spec.config, spec.name, state_dir, autocommit=False)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown input type {spec.type!r}")
    tailer = obj if hasattr(obj, "positions") and hasattr(obj, "commit") else None
    if tailer is not None and positions is not None:
        tailer.commit(positions)
    task = asyncio.create_task(obj.run(sink), name=f"input-{spec.name}")
    return RunningInput(spec, obj, task=task, tailer=tailer)


async def stop_input(inp: RunningInput) -> None:
    try:
        if hasattr(inp.obj, "stop"):
            await inp.obj.stop()
        if inp.task is not None:
            if not inp.task.done():
                inp.task.cancel()
            await asyncio.gather(inp.task, return_exceptions=True)
    except Exception:  # noqa: BLE001 - one input failing to stop must not keep the others running
        log.exception("stopping input failed", extra={"input": inp.spec.name})


# --- the daemon ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    events_in: int = 0
    alerts: int = 0
    last_events_in: int = 0
    last_status_ms: int = field(default_factory=monotonic_ms)


_POOL_MIN_BATCH = 256  # smaller intake batches are parsed in a thread: the pool's round trip is not worth it


def encode_records(items: list[RawRecord], ctx: object, limit_ms: int, file_inputs: frozenset[str],
                   ) -> tuple[list[bytes], dict[tuple[str, str], int], dict[tuple[str, str], tuple[int, int]]]:
    """Parse raw records into encoded log records (runs in a thread or a parse worker process).

    Returns the encoded events, the newest event time per source (input, origin) and the parsed/failed
    counts per (input, format)."""
    from siem.parse import parse  # noqa: PLC0415

    events: list[Event] = []
    times: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for rec in items:
        ev = parse(rec.format, rec.data, ctx, rec.input)  # type: ignore[arg-type]
        ev["event.ingested"] = rec.received_ms
        if rec.origin and rec.input in file_inputs:
            ev.setdefault("log.file.path", rec.origin)
        events.append(ev)
        ok, failed = counts.get((rec.input, rec.format), (0, 0))
        counts[(rec.input, rec.format)] = (ok, failed + 1) if "error.message" in ev else (ok + 1, failed)
        ts = ev.get("@timestamp")
        if type(ts) is int:
            key = (rec.input, rec.origin)
            times[key] = max(times.get(key, ts), min(ts, limit_ms))  # type: ignore[type-var]
    return encode_events(events), times, counts


def _start_parse_pool(workers: int) -> tuple[ProcessPoolExecutor | None, int]:
    """Parse worker processes (spawned: no fork of a threaded event loop); none when there is one CPU."""
    n = (os.cpu_count() or 1) if workers < 0 else workers
    if workers < 0 and n < 2:
        n = 0
    if n <= 0:
        return None, 0
    return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_sigint), n


def _ignore_sigint() -> None:
    """Parse workers leave Ctrl-C to the daemon, which drains and then shuts the pool down (a terminal's
    SIGINT reaches the whole process group: without this each worker printed a KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Daemon:
    def __init__(self, config: Config, config_path: str | None, notifier: Notifier | None = None,
                 print_alerts: Callable[[list[Alert]], None] | None = None, progress: bool = False) -> None:
        self.config = config
        self._parse_pool: ProcessPoolExecutor | None = None  # parse worker processes (daemon.parse_workers)
        self._ckpt_task: asyncio.Task[None] | None = None  # the checkpoint being written
        self._parse_workers = 0
        self.print_alerts = print_alerts  # new alerts also to stdout (`siem run --print-alerts`, siem.alert.console)
        self.progress = progress  # siem.progress lines on stderr (`siem run --progress`)
        self.config_path = config_path
        self.notifier = notifier or Notifier(None)
        d = config.daemon
        self.state_dir = Path(d.state_dir)
        self.intake: asyncio.Queue[RawRecord | None] = asyncio.Queue(d.intake_queue_size)
        self.enqueued = 0  # records put on the intake queue so far
        self.written = 0  # records taken off it and appended to the log
        self.inputs: dict[str, RunningInput] = {}
        self.stats = _Stats()
        self._last_mark: dict[str, dict] = {}  # input -> the positions last appended to the log
        self._file_committed: dict[str, dict] = {}  # input -> the positions last written to its state file
        self.marks: dict[str, dict] = {}  # input -> positions covering the log below next_offset (engine side)
        self._last_file_commit_ms = 0
        self._appended = asyncio.Event()
        self._stopping = asyncio.Event()
        self._writer_done = asyncio.Event()
        self._reload_rules: RuleSet | None = None
        self._reloading = False
        self._queue_gauge = metrics.QUEUE_DEPTH.labels(queue="intake")
        self._lock: DirLock | None = None
        self.log: LocalLog | None = None
        self.engine: Engine | None = None
        self.pipeline: AlertPipeline | None = None
        self.metrics_port: int | None = None
        self.next_offset = 0
        self._src_max: dict[tuple[str, str], int] = {}  # source -> newest event time it delivered
        self._src_seen: dict[tuple[str, str], int] = {}  # source -> when it last delivered (monotonic)
        self._sent_wm = -(2**62)
        self._newest_ts = -(2**62)
        self._wall_adv_ms = 0
        self._started_ms = monotonic_ms()
        self._ckpt_offset = -1  # offset of the last checkpoint written
        self._ctx: Any = None

    # --- startup ----------------------------------------------------------------------------------

    def open_state(self, ruleset: RuleSet) -> None:
        """Lock the state directory, open the log, restore the checkpoint, open the alert pipeline."""
        d = self.config.daemon
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.state_dir}: {exc.strerror or exc}") from exc
        self._lock = DirLock(self.state_dir)
        remove_stale_temporaries(self.state_dir)
        self.log = self.config.log.build(self.state_dir / "log")
        # the engine's watermark moves only with the advance records in the log (see _source_watermark)
        engine = Engine(ruleset, lateness_ms=UNBOUNDED_LATENESS_MS, future_skew_ms=d.future_skew_ms)
        ckpt = load_checkpoint(self.state_dir)
        if ckpt is not None:
            engine_state, self.marks = unwrap_state(ckpt.state)
            engine.restore(engine_state)
            self.next_offset = ckpt.offset
            if ckpt.offset > self.log.end_offset:
                self.log.advance_to(ckpt.offset)
            self.log.commit(min(ckpt.offset, self.log.end_offset))
            log.info("restored checkpoint", extra={"offset": ckpt.offset, "log_end": self.log.end_offset})
        else:
            self.next_offset = self.log.start_offset
        # where each position-keeping input resumes: the last positions in the log; and the event times
        # the previous run appended after the checkpoint (the watermark must still get past them)
        tail_marks, tail_newest, tail_wm = scan_tail(self.log, self.next_offset)
        self._last_mark = {**self.marks, **tail_marks}
        self._file_committed = {}
        self.engine = engine
        self._sent_wm = max(engine.wm, tail_wm)
        self._newest_ts = max(engine.max_ts, tail_newest)
        self._ckpt_offset = self.next_offset
        self.pipeline = AlertPipeline(self.config.alerting, self.state_dir)
        for route in self.config.alerting.routes:
            for url in resolve_route_urls(route)[0]:
                register_secret(url)
        metrics.RULES_LOADED.set(len(ruleset.rules))
        metrics.init_series_for(self.config, ruleset)  # every known series at 0 (dashboards show data)
        from zoneinfo import ZoneInfo  # noqa: PLC0415

        from siem.parse import ParseContext  # noqa: PLC0415

        self._ctx = ParseContext(tz=ZoneInfo(d.timezone), now_ms=None)
        if self._parse_pool is None:
            self._parse_pool, self._parse_workers = _start_parse_pool(d.parse_workers)

    def close_state(self) -> None:
        if self._parse_pool is not None:
            self._parse_pool.shutdown(wait=True, cancel_futures=True)
            self._parse_pool = None
        if self.log is not None:
            self.log.close()
        if self._lock is not None:
            self._lock.close()

    async def sink(self, record: RawRecord) -> None:
        """What collectors await for each record: a bounded queue, so a slow pipeline slows intake."""
        await self.intake.put(record)
        self.enqueued += 1

    async def start_inputs(self, specs: tuple[InputSpec, ...]) -> None:
        for spec in specs:
            self.inputs[spec.name] = await start_input(spec, self.state_dir, self.sink, self._last_mark.get(spec.name))
            inp = self.inputs[spec.name]
            log.info("input started", extra={"input": spec.name, "type": spec.type,
                                             **({"port": inp.port} if inp.port is not None else {})})

    def write_run_file(self) -> None:
        write_json_atomic(self.state_dir / RUN_FILE, {
            "pid": os.getpid(),
            "metrics_port": self.metrics_port,
            "metrics_address": self.config.daemon.metrics_address,
            "inputs": {n: {"type": i.spec.type, "port": i.port} for n, i in self.inputs.items()},
            "config": self.config_path,
        })
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")

    # --- the writer: intake queue -> parse -> log -------------------------------------------------

    async def writer(self) -> None:
        """Take everything queued, parse it, append it to the log together with the positions of the
        inputs that have them (files, cloudtrail), in one append.

        The queue is drained completely before the positions are read, in the same step of the event loop:
        a collector is then either between records (its positions cover exactly what it has put on the
        queue) or suspended inside a ``put`` (that record is neither queued nor covered). So each batch
        ends with positions that cover exactly the records before them in the log: after a crash the
        inputs resume from the last positions in the log, neither re-reading nor skipping a line."""
        done = False
        while not done:
            try:
                first = await asyncio.wait_for(self.intake.get(), timeout=_FILE_COMMIT_EVERY_MS / 1000)
            except TimeoutError:  # quiet: positions may still move (empty lines, finished files); fsync policy
                marks = self._take_marks()
                wm = self._source_watermark()  # a source fell idle, or the wall clock moved on
                if marks or wm is not None:
                    await self._append([], marks, wm)
                self._log().maybe_sync()
                self._commit_files()
                continue
            items: list[RawRecord] = []
            if first is None:
                done = True
            else:
                items.append(first)
            while not self.intake.empty():
                nxt = self.intake.get_nowait()
                if nxt is None:
                    done = True
                    break
                items.append(nxt)
            marks = self._take_marks()  # same step as the drain: see the docstring
            self._queue_gauge.set(self.intake.qsize())
            if items or marks:
                await self._append(items, marks)
                self.written += len(items)
                self.stats.events_in += len(items)
                self._appended.set()
            self._commit_files(force=done)
        self._writer_done.set()

    def _take_marks(self) -> dict[str, dict]:
        """Positions of every input that has them and moved since the last ones logged."""
        out = {}
        for name, inp in self.inputs.items():
            if inp.tailer is None:
                continue
            pos = inp.tailer.positions()
            if pos != self._last_mark.get(name):
                out[name] = pos
        return out

    async def _append(self, items: list[RawRecord], marks: dict[str, dict], wm: int | None = None) -> None:
        """Parse and append, with the positions and the watermark they make; a refusing disk is retried
        (intake waits meanwhile), never dropped."""
        payloads, times = await self._encode_async(items)
        now = monotonic_ms()
        for key, ts in times.items():
            self._src_max[key] = max(self._src_max.get(key, ts), ts)
            self._src_seen[key] = now
            self._newest_ts = max(self._newest_ts, ts)
        payloads += [encode_mark(name, pos) for name, pos in marks.items()]
        if items:
            wm = self._source_watermark()
        if wm is not None:
            payloads.append(orjson.dumps({ADVANCE_KEY: wm}))
        while True:
            try:
                await asyncio.to_thread(self._log().append_many, payloads)
                break
            except InputError as exc:  # a record above max_record_bytes: keep the others
                log.error("log append refused a record: %s", exc)
                limit = self._log().max_record_bytes
                metrics.INPUT_DROPPED.labels(input="log", reason="oversized").inc(
                    sum(1 for p in payloads if len(p) > limit))
                payloads = [p for p in payloads if len(p) <= limit]
            except StateError as exc:
                log.error("cannot append to the log, retrying: %s", exc)
                await asyncio.sleep(_RETRY_S)
        self._last_mark.update(marks)
        if wm is not None:
            self._sent_wm = wm

    def _source_watermark(self) -> int | None:
        """The event-time watermark over the sources (input + file or peer): the oldest newest-event-time
        among the sources that delivered within idle_advance, minus lateness. None until idle_advance has
        passed since the start (every source gets to deliver first) or when it would not move.

        Taking the minimum keeps a backfill of several sources (files of different hosts read side by
        side) from counting the slower ones' events as late: windows come out as they would live."""
        d = self.config.daemon
        now = monotonic_ms()
        if now - self._started_ms < d.idle_advance_ms:
            return None
        for key in [k for k, seen in self._src_seen.items() if now - seen >= d.idle_advance_ms]:
            del self._src_seen[key], self._src_max[key]  # idle: no longer holds the others back
        active = list(self._src_max.values())
        wall = wall_ms()
        live = self._newest_ts >= wall - d.live_horizon_ms
        if live:  # a source with a clock far behind (a device reset to 1970) must not stop the live ones;
            active = [t for t in active if t >= wall - d.live_horizon_ms]  # its events count as late
        if active:
            newest = min(active)
        elif live:  # no live source is sending: event time follows the wall clock, so `absent` rules and
            if now - self._wall_adv_ms < d.idle_advance_ms:  # window ends fire without traffic
                return None
            self._wall_adv_ms = now
            newest = wall
        else:  # a finished backfill: everything there is has been delivered, up to the newest time seen
            newest = self._newest_ts
        wm = newest - d.lateness_ms
        return wm if wm > self._sent_wm else None

    async def _encode_async(self, items: list[RawRecord]) -> tuple[list[bytes], dict[tuple[str, str], int]]:
        """Parse a batch: in the parse worker processes when there are some and the batch is worth
        splitting, else in a thread. Returns the encoded events and the newest event time per source."""
        limit = wall_ms() + self.config.daemon.future_skew_ms  # the engine clamps forged future times too
        file_inputs = frozenset(n for n, i in self.inputs.items() if i.spec.type == "files")
        pool = self._parse_pool
        if pool is None or len(items) < _POOL_MIN_BATCH:
            payloads, times, _ = await asyncio.to_thread(encode_records, items, self._ctx, limit, file_inputs)
            return payloads, times
        loop = asyncio.get_running_loop()
        n = self._parse_workers
        step = -(-len(items) // n)
        parts = await asyncio.gather(*(
            loop.run_in_executor(pool, encode_records, items[i : i + step], self._ctx, limit, file_inputs)
            for i in range(0, len(items), step)))
        payloads, times = [], {}
        for part_payloads, part_times, counts in parts:
            payloads += part_payloads
            for key, ts in part_times.items():
                times[key] = max(times.get(key, ts), ts)
            for (input_name, fmt), (ok, failed) in counts.items():  # the workers' own counters are not served
                metrics.EVENTS_PARSED.labels(input=input_name, format=fmt).inc(ok)
                if failed:
                    metrics.EVENTS_FAILED.labels(input=input_name, format=fmt).inc(failed)
        return payloads, times

    def _commit_files(self, force: bool = False) -> None:
        """Also write the logged positions to the inputs' own state files (once they are fsync'ed), so a
        lost log does not mean reading every file again. The log's positions win at a restart."""
        now = monotonic_ms()
        if not force and now - self._last_file_commit_ms < _FILE_COMMIT_EVERY_MS:
            return
        self._last_file_commit_ms = now
        lg = self._log()
        for name, pos in list(self._last_mark.items()):
            inp = self.inputs.get(name)
            if inp is None or inp.tailer is None or self._file_committed.get(name) is pos:
                continue
            try:
                if lg.durable_offset < lg.end_offset:
                    lg.sync()
                inp.tailer.commit(pos)
            except SiemError as exc:
                log.error("cannot commit input positions: %s", exc, extra={"input": name})
                continue
            self._file_committed[name] = pos

    # --- the engine: log -> rules -> alerts -> checkpoint -----------------------------------------

    async def engine_loop(self) -> None:
        d = self.config.daemon
        lg, engine = self._log(), self._engine()
        batch: list[Event] = []
        batch_marks: dict[str, dict] = {}
        batch_end = self.next_offset
        first_read_ms = 0
        since_ckpt_records = 0
        last_ckpt_ms = monotonic_ms()
        advance_to: int | None = None
        while True:
            if self._reload_rules is not None:
                rules, self._reload_rules = self._reload_rules, None
                await asyncio.to_thread(engine.replace_rules, rules)
            want = d.batch_max_events - len(batch)
            records = await asyncio.to_thread(lg.read, batch_end, want) if want > 0 else []
            if records:
                if not batch:
                    first_read_ms = monotonic_ms()
                for off, payload in records:
                    e = decode_event(payload)
                    batch_end = off + 1
                    if e is None:
                        log.error("log record at offset %d is not a JSON object; skipped", off)
                    elif MARK_KEY in e:
                        batch_marks[str(e[MARK_KEY])] = e.get("positions")  # type: ignore[assignment]
                    elif ADVANCE_KEY in e:  # evaluate what came before, then move the watermark
                        advance_to = e[ADVANCE_KEY] if isinstance(e[ADVANCE_KEY], int) else None
                        break
                    else:
                        batch.append(e)
            caught_up = batch_end >= lg.end_offset
            idle_intake = self.intake.empty() and self.written == self.enqueued
            due = advance_to is not None or batch and (len(batch) >= d.batch_max_events
                             or monotonic_ms() - first_read_ms >= d.batch_max_wait_ms
                             or (caught_up and idle_intake))
            if due or (not batch and batch_end > self.next_offset):
                n = len(batch)
                alerts = await asyncio.to_thread(self._evaluate, batch, batch_end, batch_marks, advance_to)
                batch_marks, advance_to = {}, None
                since_ckpt_records += n
                batch = []
                self.stats.alerts += alerts
            now = monotonic_ms()
            if self.next_offset > self._ckpt_offset and (
                    since_ckpt_records >= d.checkpoint_records or now - last_ckpt_ms >= d.checkpoint_interval_ms):
                await self._checkpoint_in_background()
                since_ckpt_records, last_ckpt_ms = 0, now
            metrics.CHECKPOINT_AGE.set((now - last_ckpt_ms) / 1000)
            if self._writer_done.is_set() and caught_up and not batch and batch_end >= lg.end_offset:
                return
            if caught_up and not batch:
                self._appended.clear()
                if lg.end_offset > batch_end:
                    continue
                try:
                    await asyncio.wait_for(self._appended.wait(), timeout=d.batch_max_wait_ms / 1000)
                except TimeoutError:
                    pass
            elif batch and not records:
                await asyncio.sleep(min(d.batch_max_wait_ms / 1000, 0.01))

    def _evaluate(self, batch: list[Event], end_offset: int, marks: dict[str, dict], advance_to: int | None) -> int:
        """Evaluate one batch (worker thread), hand the alerts to the pipeline, advance next_offset."""
        started = time.perf_counter()
        alerts = self._engine().process(batch) if batch else []
        if advance_to is not None:
            alerts += self._engine().advance(advance_to)
            metrics.WATERMARK.set(max(self._engine().wm, 0) / 1000)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self._submit(alerts)
        self.next_offset = end_offset
        self.marks.update(marks)
        return len(alerts)

    def _submit(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        now = wall_ms()
        for a in alerts:
            ingested = [e.get("event.ingested") for e in a.events]
            latest = max((t for t in ingested if isinstance(t, int)), default=None)
            if latest is not None:
                metrics.EVENT_TO_ALERT_SECONDS.observe(max(now - latest, 0) / 1000)
        new = self._pipeline().submit_many(alerts)  # alert log (fsync'ed) before the checkpoint moves past them
        if self.print_alerts and new:
            self.print_alerts(new)

    def checkpoint(self) -> None:
        """Window state + the offset it covers, atomically; then the log may drop what is below."""
        self._write_checkpoint(*self._take_snapshot())

    def _take_snapshot(self) -> tuple[int, bytes]:
        """The state to checkpoint and the offset it covers (while the engine is not evaluating)."""
        self._set_window_metrics()
        return self.next_offset, wrap_state(self._engine().snapshot(), self.marks)

    def _set_window_metrics(self) -> None:
        for rule, n in self._engine().window_keys().items():
            metrics.WINDOW_KEYS.labels(rule=rule).set(n)

    def _write_checkpoint(self, offset: int, state: bytes) -> None:
        """fsync the log up to offset, write the checkpoint, let the log drop what is below it."""
        self._sync_log(offset)
        save_checkpoint(self.state_dir, offset, state)
        self._checkpoint_written(offset)

    def _sync_log(self, offset: int) -> None:
        lg = self._log()
        if lg.durable_offset < offset:
            lg.sync()

    def _checkpoint_written(self, offset: int) -> None:
        self._log().commit(offset)
        self._ckpt_offset = offset
        log.debug("checkpoint", extra={"offset": offset})

    async def _checkpoint_in_background(self) -> None:
        """Fork a child that writes the state of this instant (siem.log.checkpoint.ForkedCheckpoint) while
        the engine goes on; fsync the log meanwhile, then publish the file. One at a time: a write still
        running makes this round wait for it. A failed write is logged and the next round tries again
        (siem_checkpoint_age_seconds keeps growing, which the shipped Prometheus rules alert on)."""
        if self._ckpt_task is not None:
            await self._ckpt_task
        self._set_window_metrics()
        offset, engine, marks = self.next_offset, self._engine(), self.marks
        try:
            writer = ForkedCheckpoint(self.state_dir, offset, lambda: wrap_state(engine.snapshot(), marks))
        except OSError as exc:  # fork refused (memory or process limits): snapshot here, stalling evaluation
            log.warning("cannot fork a checkpoint writer (%s); checkpointing in the daemon process", exc)
            offset, state = await asyncio.to_thread(self._take_snapshot)
            self._ckpt_task = asyncio.create_task(asyncio.to_thread(self._write_checkpoint, offset, state))
            return
        self._ckpt_task = asyncio.create_task(asyncio.to_thread(self._publish_checkpoint, writer))

    def _publish_checkpoint(self, writer: ForkedCheckpoint) -> None:
        try:
            self._sync_log(writer.offset)
        except StateError as exc:
            writer.abandon()
            log.error("checkpoint at offset %d not written: %s", writer.offset, exc)
            return
        try:
            writer.finish()
        except StateError as exc:
            log.error("checkpoint at offset %d not written: %s", writer.offset, exc)
            return
        self._checkpoint_written(writer.offset)

    # --- reload -----------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """SIGHUP: re-read config and rules; apply only when everything is valid."""
        if self._reloading:
            log.warning("reload already in progress; ignoring this SIGHUP")
            return False
        self._reloading = True
        self.notifier.reloading("reloading configuration and rules")
        try:
            try:
                config, ruleset = await asyncio.to_thread(_load_all, self.config_path)
            except (ConfigError, RuleError) as exc:
                metrics.RELOADS.labels(result="failure").inc()
                log.error("reload failed, the running rules and config stay: %s", exc,
                          extra={"issues": [i.render() for i in exc.issues if i.severity == "error"]})
                return False
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old set
                metrics.RELOADS.labels(result="failure").inc()
                log.exception("reload failed, the running rules and config stay: %s", exc)
                return False
            self._reload_rules = ruleset
            self._appended.set()
            restart_needed = [name for name in ("daemon", "log", "alerting", "kafka")
                              if getattr(config, name) != getattr(self.config, name)]
            if restart_needed:
                log.warning("reload: changes to [%s] take effect after a restart", "], [".join(restart_needed))
            await self._apply_inputs(config.inputs)
            self.config = _with_inputs(self.config, config.inputs)
            metrics.RELOADS.labels(result="success").inc()
            metrics.RULES_LOADED.set(len(ruleset.rules))
            metrics.init_series_for(config, ruleset)
            self.write_run_file()
            log.info("reloaded", extra={"rules": len(ruleset.rules), "inputs": len(config.inputs)})
            return True
        finally:
            self._reloading = False
            self.notifier.ready(self.status_line())

    async def _apply_inputs(self, specs: tuple[InputSpec, ...]) -> None:
        wanted = {s.name: s for s in specs}
        for name, inp in list(self.inputs.items()):
            if wanted.get(name) != inp.spec:
                await stop_input(inp)
                if inp.tailer is not None:  # until its final positions are logged behind its last record
                    final = inp.tailer.positions()
                    deadline = monotonic_ms() + 10_000
                    while self._last_mark.get(name) != final and monotonic_ms() < deadline:
                        await asyncio.sleep(0.05)
                    self._commit_files(force=True)
                del self.inputs[name]
                log.info("input stopped", extra={"input": name})
        for name, spec in wanted.items():
            if name not in self.inputs:
                try:
                    await self.start_inputs((spec,))
                except (OSError, SiemError) as exc:
                    log.error("input could not start: %s", exc, extra={"input": name})

    # --- status -----------------------------------------------------------------------------------

    def status_line(self) -> str:
        now = monotonic_ms()
        s = self.stats
        dt = max(now - s.last_status_ms, 1) / 1000
        rate = (s.events_in - s.last_events_in) / dt
        s.last_events_in, s.last_status_ms = s.events_in, now
        lag = self._log().end_offset - self.next_offset if self.log is not None else 0
        return (f"{rate:.0f} events/s, {s.events_in} events, {s.alerts} alerts, "
                f"lag {lag} records, queue {self.intake.qsize()}")

    def progress_counts(self) -> ProgressCounts:
        return ProgressCounts(self.stats.events_in, self.next_offset, self._log().end_offset,
                              self.intake.empty() and self.written == self.enqueued)

    async def _progress(self, ruleset: RuleSet) -> None:
        d = self.config.daemon  # settled: idle long enough for the watermark to move on the wall clock
        reporter = ProgressReporter(self, settle_ms=d.idle_advance_ms + d.batch_max_wait_ms + 1000)
        daemon_intro(reporter, self.config, {n: i.port for n, i in self.inputs.items()}, self.metrics_port,
                     len(ruleset.rules))
        await reporter.run()

    # --- helpers ----------------------------------------------------------------------------------

    def _log(self) -> LocalLog:
        if self.log is None:
            raise StateError("the log is not open")
        return self.log

    def _engine(self) -> Engine:
        if self.engine is None:
            raise StateError("the engine is not started")
        return self.engine

    def _pipeline(self) -> AlertPipeline:
        if self.pipeline is None:
            raise StateError("the alert pipeline is not open")
        return self.pipeline

    # --- the whole life ---------------------------------------------------------------------------

    async def serve(self, ruleset: RuleSet) -> int:
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.open_state, ruleset)
        tasks: list[asyncio.Task[Any]] = []
        try:
            hp = self.config.daemon.metrics_host_port
            if hp is not None:
                self.metrics_port = metrics.serve(hp[0], hp[1])
                log.info("metrics listening", extra={"address": f"{hp[0]}:{self.metrics_port}"})
            self._started_ms = monotonic_ms()
            await self.start_inputs(self.config.inputs)
            writer = asyncio.create_task(self.writer(), name="writer")
            engine = asyncio.create_task(self.engine_loop(), name="engine")
            alerts = asyncio.create_task(self._pipeline().run(), name="alerting")
            watchdog = asyncio.create_task(
                watchdog_loop(self.notifier, self.status_line,
                              status_every_s=self.config.daemon.status_interval_ms / 1000), name="watchdog")
            tasks = [writer, engine, alerts, watchdog]
            loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
            loop.add_signal_handler(signal.SIGINT, self._stopping.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
            self.write_run_file()
            if self.progress:
                tasks.append(asyncio.create_task(self._progress(ruleset), name="progress"))
            self.notifier.ready(f"running: {len(self.inputs)} inputs, {len(ruleset.rules)} rules")
            log.info("siem running", extra={"inputs": len(self.inputs), "rules": len(ruleset.rules),
                                            "offset": self.next_offset})
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stop, writer, engine], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            stop.cancel()
            # drain: no new input, everything queued written, everything logged evaluated, checkpoint
            self.notifier.stopping("draining")
            log.info("stopping: draining queues")
            for inp in list(self.inputs.values()):
                await stop_input(inp)
            await self.intake.put(None)
            await writer
            self._appended.set()
            await engine
            if self._ckpt_task is not None:
                await self._ckpt_task
            await asyncio.to_thread(self.checkpoint)
            log.info("stopped cleanly", extra={"offset": self.next_offset})
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for inp in list(self.inputs.values()):
                await stop_input(inp)
            if self.pipeline is not None:
                await self.pipeline.close()
            await asyncio.to_thread(self.close_state)
            self.notifier.close()


def _with_inputs(config: Config, inputs: tuple[InputSpec, ...]) -> Config:
    from dataclasses import replace  # noqa: PLC0415

    return replace(config, inputs=inputs)


def _load_all(config_path: str | None) -> tuple[Config, RuleSet]:
    config = load_config(config_path)
    return config, load_rules(config.daemon.rules)


def run_daemon(config_path: str | None, print_alerts: Callable[[list[Alert]], None] | None = None,
               progress: bool = False) -> int:
    """`siem run`: load everything, serve until SIGTERM. Exit codes: 0 clean, 2 bad config/rules,
    1 state or runtime failure."""
    try:
        config, ruleset = _load_all(config_path)
    except (ConfigError, RuleError) as exc:
        from siem.logsetup import setup_logging  # noqa: PLC0415

        setup_logging()
        log.error("cannot start: invalid %s", "rules" if isinstance(exc, RuleError) else "configuration",
                  extra={"issues": [i.render() for i in exc.issues if i.severity == "error"]})
        import sys  # noqa: PLC0415

        print(str(exc), file=sys.stderr)
        return 2
    from siem.logsetup import setup_logging  # noqa: PLC0415

    setup_logging(config.daemon.log_level, config.daemon.log_format)
    if config.daemon.role != "all":
        from siem.roles import run_role  # noqa: PLC0415

        return run_role(config, ruleset, config_path)
    for w in config.warnings:
        log.warning("config: %s", w.message)
    notifier = Notifier.from_env()
    daemon = Daemon(config, config_path, notifier, print_alerts=print_alerts, progress=progress)
    try:
        return asyncio.run(daemon.serve(ruleset))
    except StateError as exc:
        log.error("cannot run: %s", exc)
        return 1
    except OSError as exc:
        log.error("cannot run: %s", exc)
        return 1
