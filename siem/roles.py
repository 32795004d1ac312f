"""Scale-out roles over Kafka (``[daemon] role``): the pipeline's stages wired across processes.

::

    collector ---siem.events---> matcher ---siem.matches---> correlator ---siem.alerts---> notifier
    Intake                       rule filters (one pass,     one Engine per partition     AlertPipeline
    (siem.pipeline.intake)       shared masks); re-key by     and group-by family,        (alert log first,
    key = collector name         group-by family + values     state in siem.state         dedup, delivery)

* **collector**: the same Intake stage as embedded mode, with the KafkaEventLog: its events, the Positions
  that cover them and the Watermark records of the same SourceWatermark, in log order on one events
  partition (keyed by the collector's name); a restarted collector resumes its inputs from the last
  Positions there.
* **matcher** (stateless, scales freely): evaluates every rule's filter over a batch at once (masks and
  the dataset pre-filter shared, as in the engine) and sends each event once per *family* (the group-by
  fields of the rules it matched) keyed by those fields' values, so every event of a window lands on one
  partition. It forwards event time: its own Watermark is the minimum over the collectors (origins) on
  the events partitions it holds of their latest Watermark (siem.pipeline.watermark.MergedWatermark), sent
  to every matches partition after the matches before it are acknowledged.
* **correlator** (stateful per partition): one Engine per partition and family, holding every rule of the
  family, so rules that share group-by fields share masks and window state as in embedded mode. Engines
  move only with the merged Watermark of the matchers, so any number of correlators computes the windows
  of embedded mode. State (engine snapshots + the watermark merge) goes to the compacted ``siem.state``
  with the offset it covers, then the offset is committed; a correlator that gains a partition restores
  that snapshot and seeks to its offset.
* **notifier**: alerts are keyed by rule id, so all alerts of one rule reach one notifier and its
  grouping; the AlertPipeline drops alert ids it already has.

Every role commits its input offsets only after its effects are durable, so a killed process's work is
redone by the next owner of its partitions (at-least-once), made exactly-once for alerts by their
deterministic ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Protocol

from aiokafka import TopicPartition

from siem import metrics
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert
from siem.config import Config, init_metric_series
from siem.dsl.loader import RuleSet, load_rules
from siem.errors import ConfigError, RuleError, StateError
from siem.log.kafka import (
    KafkaConfig,
    KafkaConsumerLog,
    KafkaProducerLog,
    KafkaStateStore,
    ensure_topics,
)
from siem.log.local import DirLock
from siem.pipeline.collectors import start_input, stop_input
from siem.pipeline.intake import drain
from siem.statefile import make_private_dirs, write_atomic
from siem.pipeline.intake import Intake, ParsePool, parse_context
from siem.pipeline.records import Watermark, decode_record, encode_record
from siem.pipeline.routing import ORIGIN_TIMEOUT_MS, Correlation, Routing
from siem.pipeline.stores import KafkaEventLog
from siem.pipeline.watermark import (
    MIN_TS,
    MergedWatermark,
    SourceWatermark,
    WatermarkPolicy,
)
from siem.schema import Event
from siem.service import Notifier, watchdog_loop
from siem.statefile import write_json_atomic
from siem.timeutil import monotonic_ms

log = logging.getLogger(__name__)



def instance_id(config: Config) -> str:
    """This process's name as a watermark origin: stable across its restarts (host + state directory)."""
    where = f"{socket.gethostname()}:{Path(config.daemon.state_dir).resolve()}"
    return f"{config.daemon.role}-{hashlib.sha1(where.encode()).hexdigest()[:12]}"


class Role(Protocol):
    def set_rules(self, ruleset: RuleSet) -> None: ...

    async def start(self) -> None: ...

    async def step(self) -> None: ...

    async def stop(self) -> None: ...


# --- collector -------------------------------------------------------------------------------------


class CollectorRole:
    """inputs -> Intake -> siem.events."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        d = config.daemon
        self.config = config
        self.kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        self.state_dir = state_dir
        self.producer = KafkaProducerLog(self.kafka)
        self.pool = ParsePool(d.parse_workers)
        watermark = SourceWatermark(WatermarkPolicy.of(d))
        origin = instance_id(config)
        self.event_log = KafkaEventLog(self.producer, self.kafka.topic_events, origin)
        self.intake = Intake(self.event_log, watermark, self.pool, parse_context(d), d.intake_queue_size,
                             d.future_skew_ms, origin=origin)
        self._task: asyncio.Task[None] | None = None

    def set_rules(self, ruleset: RuleSet) -> None:
        pass

    async def start(self) -> None:
        await self.producer.start()
        self.intake.start_watermark(self.config.inputs)
        positions = await self.event_log.last_positions()  # where each input resumes: the log says
        self.intake.last_positions.update(positions)
        for spec in self.config.inputs:
            self.intake.inputs[spec.name] = await start_input(spec, self.state_dir, self.intake.sink,
                                                              positions.get(spec.name), durable=self.intake.durable)
        self._task = asyncio.create_task(self.intake.run(), name="intake")

    async def step(self) -> None:
        assert self._task is not None
        done, _ = await asyncio.wait([self._task], timeout=0.5)
        if done:
            self._task.result()  # an intake failure ends the role

    async def stop(self) -> None:
        try:
            if self._task is not None and not self._task.done():
                await drain(self.intake, self.config.daemon.drain_timeout_ms)  # queued records, final positions
            else:
                for inp in self.intake.inputs.values():
                    await stop_input(inp)
        finally:
            self.pool.close()
            await self.producer.stop()


# --- matcher ---------------------------------------------------------------------------------------


class MatcherRole:
    """siem.events -> Routing -> siem.matches keyed by family, plus the merged watermark."""

    def __init__(self, config: Config, ruleset: RuleSet) -> None:
        self.kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        self.origin = instance_id(config)
        self.producer = KafkaProducerLog(self.kafka)
        self.consumer = KafkaConsumerLog(self.kafka, "matcher", [self.kafka.topic_events], decode=decode_record)
        self.merged = MergedWatermark(ORIGIN_TIMEOUT_MS)
        self.sent_wm = MIN_TS
        self.routing = Routing(ruleset)

    def set_rules(self, ruleset: RuleSet) -> None:
        self.routing = Routing(ruleset)

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        try:
            await self.consumer.stop()
        finally:
            await self.producer.stop()

    async def step(self) -> None:
        """Forward a polled batch in segments that end at a watermark record: the matches of a segment,
        then the merged watermark, so event time moves at the same places in the stream as in the log
        (which events count as late, and so the alerts, depend on it)."""
        batch = await self.consumer.poll(timeout_ms=200)
        events: list[Event] = []
        for r in batch.records:
            rec = r.value
            if isinstance(rec, Watermark):
                await self._forward(events)
                events = []
                self.merged.observe(rec.origin, TopicPartition(r.topic, r.partition), rec.ts_ms, r.timestamp_ms)
                wm = self.merged.value(self.consumer.assignment)
                if wm is not None and wm > self.sent_wm:  # after the matches before it are acknowledged
                    await self.producer.broadcast(self.kafka.topic_matches, encode_record(Watermark(self.origin, wm)))
                    self.sent_wm = wm
            elif isinstance(rec, dict):
                events.append(rec)
        await self._forward(events)
        if batch.positions:
            await self.consumer.commit(batch.positions)

    async def _forward(self, events: list[Event]) -> None:
        if events:
            matches = await asyncio.to_thread(self.routing.match, events)
            if matches:
                await self.producer.send_many(self.kafka.topic_matches, matches)  # type: ignore[arg-type]


# --- correlator ------------------------------------------------------------------------------------


class CorrelatorRole:
    """siem.matches -> Correlation -> siem.alerts; snapshots in siem.state."""

    def __init__(self, config: Config, ruleset: RuleSet) -> None:
        self.kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        self.config = config
        self.producer = KafkaProducerLog(self.kafka)
        self.store = KafkaStateStore(self.kafka, self.kafka.group_id("correlator"))
        self.consumer = KafkaConsumerLog(self.kafka, "correlator", [self.kafka.topic_matches], listener=self,
                                         decode=decode_record)
        self.core = Correlation(ruleset, config.daemon.future_skew_ms, config.daemon.max_pending_events)
        self.next: dict[TopicPartition, int] = {}
        self.saved: dict[TopicPartition, int] = {}
        self.last_save_ms = monotonic_ms()
        self._lock = asyncio.Lock()  # a rebalance hook runs between two steps, never inside one

    def set_rules(self, ruleset: RuleSet) -> None:
        self.core.set_rules(ruleset)

    async def start(self) -> None:
        await self.producer.start()
        await self.store.start()
        await self.consumer.start()

    async def stop(self) -> None:
        try:
            await self.consumer.stop()  # revokes: snapshots and commits
        finally:
            await self.store.stop()
            await self.producer.stop()

    async def step(self) -> None:
        batch = await self.consumer.poll(timeout_ms=200)
        async with self._lock:
            if batch.records:
                records = [(TopicPartition(r.topic, r.partition), r.timestamp_ms, r.value) for r in batch.records]
                alerts = await asyncio.to_thread(self.core.process, records)
                if alerts:  # acknowledged before the snapshot that includes them is saved
                    await self.producer.send_many(self.kafka.topic_alerts,
                                                  [(a.rule_id.encode(), a.to_json()) for a in alerts])
            self.next.update({tp: off for tp, off in batch.positions.items() if tp in self.core.parts})
            if monotonic_ms() - self.last_save_ms >= self.config.daemon.checkpoint_interval_ms:
                await self.save(set(self.next))
                self.last_save_ms = monotonic_ms()

    async def save(self, partitions: set[TopicPartition]) -> None:
        """Snapshot (state + offset) then commit, for partitions that moved since their last save."""
        done = {tp: self.next[tp] for tp in partitions if tp in self.next and self.saved.get(tp) != self.next[tp]}
        for tp, offset in done.items():
            await self.store.save(tp, offset, self.core.state(tp))
            self.saved[tp] = offset
        if done:
            await self.consumer.commit(done)

    async def on_partitions_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            await self.save(partitions)
            for tp in partitions:
                self.core.close(tp)
                self.next.pop(tp, None)
                self.saved.pop(tp, None)

    async def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            snaps = await self.store.load(partitions)
            for tp in partitions:
                snap = snaps.get(tp)
                try:
                    self.core.open(tp, snap.state if snap is not None else None)
                except StateError as exc:
                    metrics.CHECKPOINT_CORRUPT.inc()
                    log.error("window state of %s[%d] refused (%s); starting it empty from the committed offset",
                              tp.topic, tp.partition, exc)
                    continue
                if snap is not None:
                    self.next[tp] = self.saved[tp] = snap.offset
                    self.consumer.seek(tp, snap.offset)
                    log.info("restored window state of %s[%d] at offset %d", tp.topic, tp.partition, snap.offset)


# --- notifier --------------------------------------------------------------------------------------


class NotifierRole:
    """siem.alerts -> AlertPipeline (alert log first, dedup by id, delivery); commit after the log."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        self.kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        self.consumer = KafkaConsumerLog(self.kafka, "notifier", [self.kafka.topic_alerts])
        self.pipeline = AlertPipeline(config.alerting, state_dir)
        self._task: asyncio.Task[None] | None = None

    def set_rules(self, ruleset: RuleSet) -> None:
        pass

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self.pipeline.run(), name="alerting")

    async def stop(self) -> None:
        try:
            await self.consumer.stop()
        finally:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            await self.pipeline.close()

    async def step(self) -> None:
        batch = await self.consumer.poll(timeout_ms=200)
        alerts = []
        for r in batch.records:
            try:
                alerts.append(Alert.from_json(r.value))
            except (KeyError, TypeError, ValueError) as exc:
                metrics.KAFKA_POISON.labels(topic=r.topic, reason="bad_alert").inc()
                log.error("%s[%d]@%d is not an alert: %s", r.topic, r.partition, r.offset, exc)
        if alerts:
            await asyncio.to_thread(self.pipeline.submit_many, alerts)
        if batch.positions:
            await self.consumer.commit(batch.positions)


# --- process ---------------------------------------------------------------------------------------


def build_role(config: Config, ruleset: RuleSet, state_dir: Path) -> Role:
    role = config.daemon.role
    if role == "collector":
        return CollectorRole(config, state_dir)
    if role == "matcher":
        return MatcherRole(config, ruleset)
    if role == "correlator":
        return CorrelatorRole(config, ruleset)
    if role == "notifier":
        return NotifierRole(config, state_dir)
    raise ConfigError([])


async def _serve(config: Config, ruleset: RuleSet, config_path: str | None) -> int:
    role = config.daemon.role
    state_dir = Path(config.daemon.state_dir)
    make_private_dirs(state_dir)
    lock = DirLock(state_dir)
    notifier = Notifier.from_env()
    try:
        hp = config.daemon.metrics_host_port
        metrics_port = metrics.serve(hp[0], hp[1]) if hp is not None else None
        kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        await ensure_topics(kafka, [kafka.topic_events, kafka.topic_matches, kafka.topic_alerts, kafka.topic_state])
        metrics.set_role(role)
        worker = build_role(config, ruleset, state_dir)
        await worker.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def reload() -> None:
            notifier.reloading(f"{role}: reloading rules")
            try:
                from siem.config import load_config  # noqa: PLC0415

                new = await asyncio.to_thread(lambda: load_rules(load_config(config_path).daemon.rules))
            except (ConfigError, RuleError) as exc:
                metrics.RELOADS.labels(result="failure").inc()
                log.error("reload failed, the running rules stay: %s", exc)
            else:
                worker.set_rules(new)
                metrics.RELOADS.labels(result="success").inc()
                metrics.RULES_LOADED.set(len(new.rules))
            notifier.ready()

        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
        write_json_atomic(state_dir / "run.json", {"pid": os.getpid(), "role": role, "metrics_port": metrics_port,
                                                  "metrics_address": config.daemon.metrics_address,
                                                  "inputs": {}, "config": config_path})
        write_atomic(state_dir / "siem.pid", f"{os.getpid()}\n".encode())
        metrics.RULES_LOADED.set(len(ruleset.rules))
        init_metric_series(config, ruleset)  # every known series at 0 (dashboards show data)
        watchdog = asyncio.create_task(watchdog_loop(notifier, lambda: f"role {role}"))
        notifier.ready(f"role {role} running")
        log.info("siem running", extra={"role": role})
        try:
            while not stopping.is_set():
                await worker.step()
        finally:
            notifier.stopping(f"role {role} stopping")
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            await worker.stop()
        log.info("stopped cleanly", extra={"role": role})
        return 0
    finally:
        lock.close()
        notifier.close()


def run_role(config: Config, ruleset: RuleSet, config_path: str | None) -> int:
    try:
        return asyncio.run(_serve(config, ruleset, config_path))
    except (StateError, OSError) as exc:
        log.error("cannot run role %s: %s", config.daemon.role, exc)
        return 1
