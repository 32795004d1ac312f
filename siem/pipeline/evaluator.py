"""Evaluation: event log -> Engine -> alert sink -> checkpoint.

::

    log records --decode--> Event ........ batched (batch_max_events / batch_max_wait)
                            Watermark .... evaluate what came before, then advance the engine to it
                            Positions .... remembered: the checkpoint says where each input resumes
    Engine --alerts--> AlertSink (alert log first: fsync'ed before the checkpoint moves past them)
    every checkpoint_interval / checkpoint_records: state + the offset it covers, atomically

The engine runs with unbounded lateness: it moves only with the Watermark records in the log, so a
replay of the log after a crash moves it identically, and evaluation does not depend on batch
boundaries. After a restart the engine restores the checkpoint and re-reads the log from its offset: the
same alerts come again with the same ids, and the alert sink drops the ids it already has.

:func:`scan_tail` reads what the log holds beyond the checkpoint: the inputs' last positions (where they
resume) and the newest event time and watermark (where the watermark resumes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol


from siem import metrics
from siem.alert.record import Alert
from siem.config import DaemonConfig
from siem.dsl.loader import RuleSet
from siem.engine.runtime import Engine
from siem.errors import StateError
from siem.log.checkpoint import Checkpoint, ForkedCheckpoint
from siem.log.local import LocalLog
from siem.pipeline.records import Positions, Watermark, decode_record, split_header, with_header
from siem.pipeline.stores import LocalStateStore
from siem.schema import Event
from siem.timeutil import monotonic_ms, wall_ms

log = logging.getLogger(__name__)

UNBOUNDED_LATENESS_MS = 10**15
FIRST_CHECKPOINT_MS = 2_000  # after the start, the first checkpoint is due this soon (then every interval)
_STATE_MAGIC = b"SIEMD1\n"
MIN_TS = -(2**62)


class AlertSink(Protocol):
    def submit_many(self, alerts: list[Alert]) -> list[Alert]: ...  # the new ones, durable when it returns


@dataclass(frozen=True, slots=True)
class Cadence:
    batch_max_events: int
    batch_max_wait_ms: int
    checkpoint_interval_ms: int
    checkpoint_records: int

    @classmethod
    def of(cls, d: DaemonConfig) -> Cadence:
        return cls(d.batch_max_events, d.batch_max_wait_ms, d.checkpoint_interval_ms, d.checkpoint_records)


def wrap_state(engine_state: bytes, positions: dict[str, dict]) -> bytes:
    """The checkpoint's state: the input positions it covers, then the engine snapshot."""
    return with_header(_STATE_MAGIC, positions, engine_state)


def unwrap_state(state: bytes) -> tuple[bytes, dict[str, dict]]:
    if not state.startswith(_STATE_MAGIC):
        return state, {}
    positions, engine_state = split_header(_STATE_MAGIC, state, "checkpoint input positions")
    return engine_state, positions if isinstance(positions, dict) else {}  # type: ignore[return-value]


def scan_tail(lg: LocalLog, from_offset: int, chunk: int = 4096) -> tuple[dict[str, dict], int, int]:
    """The last positions per input, the newest event time and the last watermark (MIN_TS when none) in
    the log from `from_offset` on."""
    positions: dict[str, dict] = {}
    newest = last_wm = MIN_TS
    offset = from_offset
    while offset < lg.end_offset:
        records = lg.read(offset, chunk)
        if not records:
            break
        for _, payload in records:
            rec = decode_record(payload)
            if isinstance(rec, Positions):
                positions[rec.input] = rec.positions
            elif isinstance(rec, Watermark):
                last_wm = max(last_wm, rec.ts_ms)
            elif rec is not None and type(rec.get("@timestamp")) is int:
                newest = max(newest, rec["@timestamp"])  # type: ignore[type-var]
        offset = records[-1][0] + 1
    return positions, newest, last_wm


class LocalEvaluator:
    """The embedded evaluator: reads the local log from the checkpoint on, evaluates, checkpoints."""

    def __init__(self, state_dir: Path, lg: LocalLog, ruleset: RuleSet, sink: AlertSink, cadence: Cadence,
                 future_skew_ms: int, *, on_alerts: Callable[[list[Alert]], None] | None = None,
                 max_pending: int | None = None, start_fresh: bool = False) -> None:
        self.state_dir = state_dir
        self.log = lg
        self.sink = sink
        self.cadence = cadence
        self.on_alerts = on_alerts  # new alerts, e.g. printed by `siem run --print-alerts`
        self.engine = Engine(ruleset, lateness_ms=UNBOUNDED_LATENESS_MS, future_skew_ms=future_skew_ms,
                             max_pending=max_pending)
        self.store = LocalStateStore(state_dir, start_fresh=start_fresh)
        self.next_offset = lg.start_offset
        self.positions: dict[str, dict] = {}  # input -> positions covering the log below next_offset
        self.alerts = 0
        self.reload_rules: RuleSet | None = None
        self._ckpt_task: asyncio.Task[None] | None = None
        self._ckpt_offset = -1
        self.beat_ms = monotonic_ms()  # the loop's last turn: a stalled engine or checkpoint writer stops it
        self.checkpointed_ms = monotonic_ms()  # when the last checkpoint was written (or the start)
        metrics.CHECKPOINT_AGE.set_function(lambda: (monotonic_ms() - self.checkpointed_ms) / 1000)

    def stalled_ms(self) -> int:
        """How long the loop has not turned (0 while it turns); read by the watchdog."""
        return monotonic_ms() - self.beat_ms

    # --- start ------------------------------------------------------------------------------------

    def restore(self) -> tuple[dict[str, dict], int, int]:
        """Restore the checkpoint (blocking); returns what the log says beyond it (see scan_tail), with the
        checkpoint's positions under the tail's."""
        def restore(ck: Checkpoint) -> None:  # all or nothing: the engine refuses a bad state unchanged
            if ck.offset < self.log.start_offset:
                # retention only deletes checkpointed segments, so this checkpoint is older than the log
                # (restored from a backup?): resuming would silently skip the records in between
                raise StateError(
                    f"checkpoint in {self.state_dir} is at log offset {ck.offset} but the log starts at "
                    f"{self.log.start_offset}: the checkpoint is older than the log; move it aside to start with "
                    f"empty windows from the oldest record")
            engine_state, positions = unwrap_state(ck.state)
            self.engine.restore(engine_state)
            self.positions = positions

        ck = self.store.restore(restore)
        if ck is not None:
            self.next_offset = ck.offset
            if ck.offset > self.log.end_offset:
                self.log.advance_to(ck.offset)  # the log lost its unsynced tail in an OS crash
            self.log.commit(min(ck.offset, self.log.end_offset))
            log.info("restored checkpoint", extra={"offset": ck.offset, "log_end": self.log.end_offset})
        tail_positions, tail_newest, tail_wm = scan_tail(self.log, self.next_offset)
        self._ckpt_offset = self.next_offset
        return ({**self.positions, **tail_positions}, max(self.engine.max_ts, tail_newest),
                max(self.engine.wm, tail_wm))

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self, appended: asyncio.Event, intake_idle: Callable[[], bool],
                  intake_done: asyncio.Event) -> None:
        """Evaluate the log as it grows, until intake is done and everything it wrote is evaluated."""
        c = self.cadence
        lg, engine = self.log, self.engine
        batch: list[Event] = []
        batch_positions: dict[str, dict] = {}
        batch_end = self.next_offset
        first_read_ms = 0
        since_ckpt = 0
        # the first checkpoint comes soon after the start, so a crash early on does not replay the whole log
        last_ckpt_ms = monotonic_ms() - c.checkpoint_interval_ms + min(FIRST_CHECKPOINT_MS, c.checkpoint_interval_ms)
        advance_to: int | None = None
        while True:
            self.beat_ms = monotonic_ms()
            if self.reload_rules is not None:
                rules, self.reload_rules = self.reload_rules, None
                await asyncio.to_thread(engine.replace_rules, rules)
            want = c.batch_max_events - len(batch)
            records = await asyncio.to_thread(lg.read, batch_end, want) if want > 0 else []
            if records:
                if not batch:
                    first_read_ms = monotonic_ms()
                for off, payload in records:
                    rec = decode_record(payload)
                    batch_end = off + 1
                    if rec is None:
                        log.error("log record at offset %d is not a pipeline record; skipped", off)
                    elif isinstance(rec, Positions):
                        batch_positions[rec.input] = rec.positions
                    elif isinstance(rec, Watermark):  # evaluate what came before, then move the watermark
                        advance_to = rec.ts_ms
                        break
                    else:
                        batch.append(rec)
            caught_up = batch_end >= lg.end_offset
            due = advance_to is not None or bool(batch) and (
                len(batch) >= c.batch_max_events or monotonic_ms() - first_read_ms >= c.batch_max_wait_ms
                or (caught_up and intake_idle()))
            if due or (not batch and batch_end > self.next_offset):
                n = len(batch)
                await asyncio.to_thread(self._evaluate, batch, batch_end, batch_positions, advance_to)
                batch_positions, advance_to, batch = {}, None, []
                since_ckpt += n
            now = monotonic_ms()
            if self.next_offset > self._ckpt_offset and (
                    since_ckpt >= c.checkpoint_records or now - last_ckpt_ms >= c.checkpoint_interval_ms):
                await self.checkpoint_in_background()
                since_ckpt, last_ckpt_ms = 0, now
            if intake_done.is_set() and caught_up and not batch and batch_end >= lg.end_offset:
                return
            if caught_up and not batch:
                appended.clear()
                if lg.end_offset > batch_end:
                    continue
                try:
                    await asyncio.wait_for(appended.wait(), timeout=c.batch_max_wait_ms / 1000)
                except TimeoutError:
                    pass
            elif not records:  # a partial batch waiting to fill, or records the log cannot give (a
                # segment lost under it): wait a moment instead of asking again at once
                await asyncio.sleep(min(c.batch_max_wait_ms / 1000, 0.01 if batch else 0.2))

    def _evaluate(self, batch: list[Event], end_offset: int, positions: dict[str, dict], advance_to: int | None) -> None:
        """Evaluate one batch (worker thread), hand the alerts on, advance next_offset."""
        started = time.perf_counter()
        alerts = self.engine.process(batch) if batch else []
        if advance_to is not None:
            alerts += self.engine.advance(advance_to)
            metrics.WATERMARK.set(max(self.engine.wm, 0) / 1000)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self._submit(alerts)
        self.next_offset = end_offset
        self.positions.update(positions)

    def _submit(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        now = wall_ms()
        for a in alerts:
            ingested = [e.get("event.ingested") for e in a.events]
            latest = max((t for t in ingested if isinstance(t, int)), default=None)
            if latest is not None:
                metrics.EVENT_TO_ALERT_SECONDS.observe(max(now - latest, 0) / 1000)
        new = self.sink.submit_many(alerts)  # alert log (fsync'ed) before the checkpoint moves past them
        self.alerts += len(new)
        if self.on_alerts is not None and new:
            self.on_alerts(new)

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Window state + the offset it covers, atomically (blocking); then the log may drop what is below."""
        self._set_window_metrics()
        offset, state = self.next_offset, wrap_state(self.engine.snapshot(), self.positions)
        self._write_checkpoint(offset, state)

    async def finish(self) -> None:
        if self._ckpt_task is not None:
            await self._ckpt_task
        await asyncio.to_thread(self.checkpoint)

    def _set_window_metrics(self) -> None:
        for rule, n in self.engine.window_keys().items():
            metrics.WINDOW_KEYS.labels(rule=rule).set(n)

    def _write_checkpoint(self, offset: int, state: bytes) -> None:
        self._sync_log(offset)
        self.store.write(offset, state)
        self._checkpoint_written(offset)

    def _sync_log(self, offset: int) -> None:
        if self.log.durable_offset < offset:
            self.log.sync()

    def _checkpoint_written(self, offset: int) -> None:
        self.log.commit(offset)
        self._ckpt_offset = offset
        self.checkpointed_ms = monotonic_ms()
        log.debug("checkpoint", extra={"offset": offset})

    async def checkpoint_in_background(self) -> None:
        """Fork a child that writes the state of this instant (siem.log.checkpoint.ForkedCheckpoint) while
        the engine goes on; fsync the log meanwhile, then publish the file. One at a time. A failed write
        is logged and the next round tries again (siem_checkpoint_age_seconds keeps growing, which the
        shipped Prometheus rules alert on)."""
        if self._ckpt_task is not None:
            await self._ckpt_task
        self._set_window_metrics()
        offset, engine, positions = self.next_offset, self.engine, self.positions
        try:
            writer = ForkedCheckpoint(self.state_dir, offset, lambda: wrap_state(engine.snapshot(), positions))
        except OSError as exc:  # fork refused (memory or process limits): snapshot here, stalling evaluation
            log.warning("cannot fork a checkpoint writer (%s); checkpointing in the daemon process", exc)
            state = await asyncio.to_thread(lambda: wrap_state(engine.snapshot(), positions))
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
