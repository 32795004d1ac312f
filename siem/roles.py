"""Scale-out roles over Kafka (``[daemon] role``): collector, matcher, correlator, notifier.

::

    collector --siem.events--> matcher --siem.matches--> correlator --siem.alerts--> notifier
    inputs, parse              rule filters,            windows per partition,       alert log,
    key = source.ip/host       key = rule + group key   state in siem.state           dedup, delivery

Every role commits its input offsets only after its effects are durable (produced and acknowledged by
all in-sync replicas, or written to the alert log), so a killed process's work is redone by the next
owner of its partitions: at-least-once everywhere, made exactly-once for alerts by their deterministic
ids (the notifier's AlertPipeline drops ids it has already taken in).

Event time across processes. A correlator partition receives matches from several events partitions,
interleaved by timing; its engines therefore never advance on their own (their lateness is unbounded)
but only on watermark records: the matcher sends ``{"@siem.advance": W}`` to every matches partition,
where W = (the smallest, over the events partitions it reads, of the newest event time seen there) minus
the configured lateness. Events of one events partition arrive in order, so later matches are not older
than W (up to that lateness), whichever order the matcher interleaved them in: every correlator, and any
number of them, computes the same windows. A partition that has delivered nothing for ``idle_advance``
and has nothing left to read does not hold W back; when every partition is idle, W is the newest time
seen minus lateness. With several matchers, W of one matcher may run ahead of another's: lateness must
cover the skew between matchers.

A correlator saves each partition's window state with the offset it covers (siem.log.kafka
KafkaStateStore) every checkpoint interval and when partitions are revoked, then commits; a correlator
that gains a partition restores that snapshot and seeks to its offset before reading.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from siem import metrics
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert
from siem.collect import RawRecord
from siem.config import Config
from siem.dsl import ast
from siem.dsl.loader import RuleSet, load_rules
from siem.engine.batch import Batch
from siem.engine.runtime import Engine, compile_rule
from siem.errors import ConfigError, RuleError, SiemError, StateError
from siem.log.codec import encode_event
from siem.log.kafka import KafkaConfig, KafkaConsumerLog, KafkaProducerLog, KafkaStateStore, ensure_topics
from siem.log.local import DirLock
from siem.schema import Event
from siem.service import Notifier, watchdog_loop
from siem.statefile import write_json_atomic
from siem.timeutil import monotonic_ms, wall_ms

log = logging.getLogger(__name__)

RULE_KEY = "@siem.rule"
ADVANCE_KEY = "@siem.advance"
_UNBOUNDED_LATENESS_MS = 10**15  # correlator engines move only with the matcher's watermark records
_MIN_TS = -(2**62)


def routing_key(spec: ast.RuleSpec, event: Event) -> bytes:
    """rule id + the values of the rule's group fields: all events of one window share a partition."""
    corr = spec.correlation
    by: tuple[str, ...] = tuple(getattr(corr, "by", ()) or ()) if corr is not None else ()
    if not by and spec.suppress is not None and spec.suppress.by:
        by = tuple(spec.suppress.by)
    return "\x1f".join([spec.id, *(str(event.get(f, "")) for f in by)]).encode()


def event_key(event: Event) -> bytes | None:
    """The key of an event on siem.events: events of one source stay in order on one partition."""
    for f in ("source.ip", "host.name"):
        v = event.get(f)
        if v:
            return str(v).encode()
    return None


def _ts(e: Event) -> int:
    t = e.get("@timestamp")
    return t if type(t) is int else _MIN_TS  # type: ignore[return-value]


# --- matcher ---------------------------------------------------------------------------------------


class Matcher:
    """siem.events -> rule filters -> siem.matches (+ watermark records); stateless, scales freely."""

    def __init__(self, config: Config, ruleset: RuleSet) -> None:
        self.kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        self.lateness_ms = config.daemon.lateness_ms
        self.producer = KafkaProducerLog(self.kafka)
        self.consumer = KafkaConsumerLog(self.kafka, "matcher", [self.kafka.topic_events])
        self.set_rules(ruleset)
        self.max_ts: dict[TopicPartition, int] = {}
        self.sent_wm = _MIN_TS
        self.last_wm_ms = 0
        self.last_record_ms: dict[TopicPartition, int] = {}  # when a partition last delivered (monotonic)
        self.idle_ms = config.daemon.idle_advance_ms
        self.live_horizon_ms = config.daemon.live_horizon_ms
        self.wall_adv_ms = 0

    def set_rules(self, ruleset: RuleSet) -> None:
        self.rules = [compile_rule(spec) for spec in ruleset.rules]

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        try:
            await self.consumer.stop()
        finally:
            await self.producer.stop()

    def match(self, events: list[Event]) -> list[tuple[bytes, Event]]:
        """(key, match record) per event and rule whose filter it passes, in event order per rule."""
        if not events:
            return []
        ts = np.fromiter((_ts(e) for e in events), dtype=np.int64, count=len(events))
        batch = Batch(events, ts)
        out: list[tuple[int, int, bytes, Event]] = []
        for k, rule in enumerate(self.rules):
            rule.evaluations.inc(batch.n)
            rows = batch.rows(rule.filter(batch))
            if len(rows):
                rule.matches.inc(len(rows))
            for r in rows.tolist():
                out.append((r, k, routing_key(rule.spec, events[r]), {RULE_KEY: rule.id, "event": events[r]}))
        out.sort(key=lambda x: (x[0], x[1]))  # keep the events' order
        return [(key, value) for _, _, key, value in out]

    async def step(self) -> None:
        batch = await self.consumer.poll(timeout_ms=200)
        if batch.records:
            events = [r.value for r in batch.records]
            now = monotonic_ms()
            for r in batch.records:
                tp = TopicPartition(r.topic, r.partition)
                self.max_ts[tp] = max(self.max_ts.get(tp, _MIN_TS), _ts(r.value))
                self.last_record_ms[tp] = now
            matches = await asyncio.to_thread(self.match, events)
            if matches:
                await self.producer.send_many(self.kafka.topic_matches, matches)
        held = self.consumer.assignment
        for tp in list(self.max_ts):
            if tp not in held:
                del self.max_ts[tp]
                self.last_record_ms.pop(tp, None)
        if held and monotonic_ms() - self.last_wm_ms >= 200:
            wm = await self._watermark(held)
            if wm is not None and wm > self.sent_wm:
                await self._send_watermark(wm)
                self.sent_wm = wm
            self.last_wm_ms = monotonic_ms()
        if batch.positions:  # matches and watermarks are acknowledged: the events are done
            await self.consumer.commit(batch.positions)

    async def _watermark(self, held: set[TopicPartition]) -> int | None:
        """min over the held events partitions of the newest event time seen, minus lateness. A partition
        counts until it has been caught up (nothing left to read) for idle_advance: one that has not
        delivered yet holds the watermark back (its backlog may be older), an idle one does not."""
        consumer = self.consumer._consumer  # noqa: SLF001 - positions and high-water marks
        now = monotonic_ms()
        newest: list[int] = []
        for tp in held:
            high = consumer.highwater(tp)
            try:
                pos = await consumer.position(tp)
            except Exception:  # noqa: BLE001 - no position yet (just assigned): not caught up
                pos = None
            caught_up = high is not None and pos is not None and pos >= high
            quiet_ms = now - self.last_record_ms.setdefault(tp, now)
            if caught_up and quiet_ms >= self.idle_ms:
                continue  # idle (or empty): does not hold the others back
            if tp not in self.max_ts:
                return None
            newest.append(self.max_ts[tp])
        if not self.max_ts:
            return None
        wall = wall_ms()
        live = max(self.max_ts.values()) >= wall - self.live_horizon_ms
        if live:  # a partition whose newest event is far behind the wall clock (a reset device clock)
            newest = [t for t in newest if t >= wall - self.live_horizon_ms]  # does not stop the live ones
        if newest:
            return min(newest) - self.lateness_ms
        if live:  # nothing live is arriving: event time follows the wall clock (absent rules, window ends)
            if now - self.wall_adv_ms < self.idle_ms:
                return None
            self.wall_adv_ms = now
            return wall - self.lateness_ms
        return max(self.max_ts.values()) - self.lateness_ms  # a finished backfill: up to the newest time

    async def _send_watermark(self, wm: int) -> None:
        topic = self.kafka.topic_matches
        producer = self.producer._producer  # noqa: SLF001 - one record per partition needs the partition
        parts = await producer.partitions_for(topic)
        value = encode_event({ADVANCE_KEY: wm})
        futures = [await producer.send(topic, value=value, partition=p) for p in sorted(parts)]
        for f in futures:
            await f


# --- correlator ------------------------------------------------------------------------------------


class Correlator:
    """siem.matches -> window state per (partition, rule) -> siem.alerts; snapshots in siem.state."""

    def __init__(self, config: Config, ruleset: RuleSet) -> None:
        self.kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        self.config = config
        self.producer = KafkaProducerLog(self.kafka)
        self.store = KafkaStateStore(self.kafka, self.kafka.group_id("correlator"))
        self.consumer = KafkaConsumerLog(self.kafka, "correlator", [self.kafka.topic_matches], listener=self)
        self.specs = {r.id: r for r in ruleset.rules}
        self.engines: dict[TopicPartition, dict[str, Engine]] = {}
        self.wm: dict[TopicPartition, int] = {}
        self.next: dict[TopicPartition, int] = {}
        self.saved: dict[TopicPartition, int] = {}
        self.owned: set[TopicPartition] = set()
        self.last_save_ms = monotonic_ms()
        # a rebalance hook runs between two steps, never while a polled batch is half processed
        self._lock = asyncio.Lock()

    def set_rules(self, ruleset: RuleSet) -> None:
        """New rules: engines of changed rules are rebuilt (their state is lost), unchanged ones kept."""
        self.specs = {r.id: r for r in ruleset.rules}
        for engines in self.engines.values():
            for rid, eng in list(engines.items()):
                spec = self.specs.get(rid)
                if spec is None:
                    del engines[rid]
                else:
                    eng.replace_rules(RuleSet((spec,)))

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

    def _engine(self, tp: TopicPartition, rule_id: str) -> Engine | None:
        engines = self.engines.setdefault(tp, {})
        eng = engines.get(rule_id)
        if eng is None:
            spec = self.specs.get(rule_id)
            if spec is None:
                return None
            eng = engines[rule_id] = Engine(RuleSet((spec,)), lateness_ms=_UNBOUNDED_LATENESS_MS,
                                            future_skew_ms=self.config.daemon.future_skew_ms)
            if tp in self.wm:
                eng.advance(self.wm[tp])
        return eng

    def process(self, records: list[Any]) -> list[Alert]:
        """Evaluate records (in partition order), grouping consecutive matches of one engine."""
        alerts: list[Alert] = []
        pending: dict[tuple[TopicPartition, str], list[Event]] = defaultdict(list)

        def flush_tp(tp: TopicPartition) -> None:
            for (ptp, rid), events in list(pending.items()):
                if ptp == tp and events:
                    eng = self._engine(ptp, rid)
                    if eng is not None:
                        alerts.extend(eng.process(events))
                    del pending[(ptp, rid)]

        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in self.owned:  # revoked after the poll: its new owner reads it from the snapshot
                continue
            value = r.value
            if ADVANCE_KEY in value:
                to = value[ADVANCE_KEY]
                if isinstance(to, int) and to > self.wm.get(tp, _MIN_TS):
                    flush_tp(tp)
                    self.wm[tp] = to
                    for eng in self.engines.get(tp, {}).values():
                        alerts.extend(eng.advance(to))
                continue
            rid, event = value.get(RULE_KEY), value.get("event")
            if not isinstance(rid, str) or not isinstance(event, dict):
                continue
            if rid not in self.specs:
                log.warning("match for unknown rule %r skipped (matcher and correlator rules differ?)", rid)
                continue
            pending[(tp, rid)].append(event)
        for tp in {tp for tp, _ in pending}:
            flush_tp(tp)
        return alerts

    async def step(self) -> None:
        batch = await self.consumer.poll(timeout_ms=200)
        if (batch.records or batch.positions) and log.isEnabledFor(logging.DEBUG):
            log.debug("correlator poll", extra={"records": len(batch.records), "owned": len(self.owned),
                                                "positions": {f"{tp.partition}": o for tp, o in batch.positions.items()}})
        async with self._lock:
            if batch.records:
                alerts = await asyncio.to_thread(self.process, batch.records)
                if alerts:  # acknowledged before the snapshot that includes them is saved
                    await self.producer.send_many(self.kafka.topic_alerts,
                                                  [(a.id.encode(), a.to_json()) for a in alerts])
            self.next.update({tp: off for tp, off in batch.positions.items() if tp in self.owned})
            if monotonic_ms() - self.last_save_ms >= self.config.daemon.checkpoint_interval_ms:
                await self.save(set(self.next))
                self.last_save_ms = monotonic_ms()

    def _snapshot(self, tp: TopicPartition) -> bytes:
        engines = self.engines.get(tp, {})
        return pickle.dumps({"wm": self.wm.get(tp, _MIN_TS), "rules": {rid: e.snapshot() for rid, e in engines.items()}},
                            protocol=pickle.HIGHEST_PROTOCOL)

    async def save(self, partitions: set[TopicPartition]) -> None:
        """Snapshot (state + offset) then commit, for partitions that moved since their last save."""
        done = {tp: self.next[tp] for tp in partitions if tp in self.next and self.saved.get(tp) != self.next[tp]}
        for tp, offset in done.items():
            await self.store.save(tp, offset, self._snapshot(tp))
            self.saved[tp] = offset
        if done:
            await self.consumer.commit(done)

    async def on_partitions_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            await self._revoke(partitions)

    async def _revoke(self, partitions: set[TopicPartition]) -> None:
        await self.save(partitions)
        self.owned -= partitions
        for tp in partitions:
            self.engines.pop(tp, None)
            self.wm.pop(tp, None)
            self.next.pop(tp, None)
            self.saved.pop(tp, None)

    async def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            await self._assign(partitions)

    async def _assign(self, partitions: set[TopicPartition]) -> None:
        snaps = await self.store.load(partitions)
        self.owned = set(partitions)
        for tp in partitions:
            self.engines[tp] = {}
            self.wm.pop(tp, None)
            snap = snaps.get(tp)
            if snap is None:
                continue
            try:
                state = pickle.loads(snap.state)
            except Exception as exc:  # noqa: BLE001 - a corrupt snapshot: start that partition empty
                log.error("window state of %s[%d] is unreadable (%s); starting it empty", tp.topic, tp.partition, exc)
                continue
            self.wm[tp] = int(state.get("wm", _MIN_TS))
            for rid, blob in state.get("rules", {}).items():
                eng = self._engine(tp, rid)
                if eng is not None:
                    eng.restore(blob)
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


# --- collector -------------------------------------------------------------------------------------


class Collector:
    """inputs -> parse -> siem.events; file positions committed after the broker acknowledged."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        from zoneinfo import ZoneInfo  # noqa: PLC0415

        from siem.parse import ParseContext  # noqa: PLC0415

        self.config = config
        self.kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        self.state_dir = state_dir
        self.producer = KafkaProducerLog(self.kafka)
        self.queue: asyncio.Queue[RawRecord] = asyncio.Queue(config.daemon.intake_queue_size)
        self.inputs: dict[str, Any] = {}
        self.ctx = ParseContext(tz=ZoneInfo(config.daemon.timezone))

    def set_rules(self, ruleset: RuleSet) -> None:
        pass

    async def sink(self, record: RawRecord) -> None:
        await self.queue.put(record)

    async def start(self) -> None:
        from siem.daemon import start_input  # noqa: PLC0415

        await self.producer.start()
        for spec in self.config.inputs:
            self.inputs[spec.name] = await start_input(spec, self.state_dir, self.sink)

    async def stop(self) -> None:
        from siem.daemon import stop_input  # noqa: PLC0415

        for inp in self.inputs.values():
            await stop_input(inp)
        await self._send_drained([])  # what is still queued, and the final positions
        await self.producer.stop()

    async def step(self) -> None:
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout=0.5)
        except TimeoutError:
            return
        await self._send_drained([first])

    async def _send_drained(self, items: list[RawRecord]) -> None:
        """Send `items` and everything queued; then commit the positions read right after the drain."""
        from siem.parse import parse  # noqa: PLC0415

        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        # positions read in the same step as the drain cover exactly what was taken (see siem.daemon)
        marks = {n: i.tailer.positions() for n, i in self.inputs.items() if i.tailer is not None}
        events = []
        for rec in items:
            ev = parse(rec.format, rec.data, self.ctx, rec.input)
            ev["event.ingested"] = rec.received_ms
            events.append((event_key(ev), ev))
        if events:
            await self.producer.send_many(self.kafka.topic_events, events)
        for name, pos in marks.items():
            try:
                self.inputs[name].tailer.commit(pos)
            except SiemError as exc:
                log.error("cannot commit input positions: %s", exc, extra={"input": name})


# --- process ---------------------------------------------------------------------------------------


async def _serve(config: Config, ruleset: RuleSet, config_path: str | None) -> int:
    role = config.daemon.role
    state_dir = Path(config.daemon.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = DirLock(state_dir)
    notifier = Notifier.from_env()
    try:
        hp = config.daemon.metrics_host_port
        metrics_port = metrics.serve(hp[0], hp[1]) if hp is not None else None
        kafka: KafkaConfig = config.kafka  # type: ignore[assignment]
        await ensure_topics(kafka, [kafka.topic_events, kafka.topic_matches, kafka.topic_alerts, kafka.topic_state])
        worker: Any
        if role == "matcher":
            worker = Matcher(config, ruleset)
        elif role == "correlator":
            worker = Correlator(config, ruleset)
        elif role == "notifier":
            worker = NotifierRole(config, state_dir)
        elif role == "collector":
            worker = Collector(config, state_dir)
        else:
            raise ConfigError([])
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
                                                  "inputs": {}, "config": config_path})
        (state_dir / "siem.pid").write_text(f"{os.getpid()}\n")
        metrics.RULES_LOADED.set(len(ruleset.rules))
        metrics.init_series_for(config, ruleset)  # every known series at 0 (dashboards show data)
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
