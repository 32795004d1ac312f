"""The pipeline's two kinds of storage, each behind a protocol with a local and a Kafka implementation.

================  ==========================================  =============================================
protocol          embedded (one process)                      scale-out (roles over Kafka)
================  ==========================================  =============================================
EventLog          :class:`LocalEventLog`: siem.log.local       :class:`KafkaEventLog`: the collector's
                  segments; Positions kept in-band             ``siem.events`` partition; Positions in-band
StateStore        :class:`LocalStateStore`: the checkpoint     :class:`siem.log.kafka.KafkaStateStore`:
                  file (siem.log.checkpoint), one partition    compacted ``siem.state``, one per partition
================  ==========================================  =============================================

A StateStore keeps, per partition of what the evaluator reads, the engine state and the offset it covers,
written together so that a restart neither counts an event twice nor skips one. The state is data
(the engine's snapshot format), never code.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable, Hashable, Iterable, Protocol

from aiokafka.errors import KafkaError

from siem import metrics
from siem.errors import InputError, StateError
from siem.log.checkpoint import Checkpoint, load_checkpoint, restore_checkpoint, save_checkpoint
from siem.log.kafka import KafkaProducerLog, read_partition_tail
from siem.log.local import LocalLog
from siem.pipeline.records import Positions, Watermark, decode_record, encode_record

log = logging.getLogger(__name__)
_RETRY_S = 1.0


class StateStore(Protocol):
    async def save(self, partition: Hashable, offset: int, state: bytes) -> None: ...

    async def load(self, partitions: Iterable[Hashable]) -> dict[Hashable, Checkpoint]: ...


class LocalEventLog:
    """The EventLog of embedded mode: records appended to a LocalLog, positions kept in-band."""

    keeps_positions = True

    def __init__(self, local: LocalLog) -> None:
        self.local = local
        self._give_up = False

    def give_up(self) -> None:
        self._give_up = True

    async def append(self, events: list[bytes], control: list[Positions | Watermark]) -> None:
        """Append events then control records in one write. A record above max_record_bytes is dropped
        and counted (the others go in); a refusing disk is retried every second, never dropped."""
        payloads = events + [encode_record(c) for c in control]
        while True:
            try:
                await asyncio.to_thread(self.local.append_many, payloads)
                return
            except InputError as exc:
                log.error("log append refused a record: %s", exc)
                limit = self.local.max_record_bytes
                metrics.INPUT_DROPPED.labels(input="log", reason="oversized").inc(
                    sum(1 for p in payloads if len(p) > limit))
                payloads = [p for p in payloads if len(p) <= limit]
            except StateError as exc:
                if self._give_up:
                    raise
                log.error("cannot append to the log, retrying: %s", exc)
                await asyncio.sleep(_RETRY_S)

    async def sync(self) -> None:
        if self.local.durable_offset < self.local.end_offset:
            await asyncio.to_thread(self.local.sync)

    async def idle(self) -> None:
        self.local.maybe_sync()


class LocalStateStore:
    """The checkpoint file of a state directory, as the StateStore of its single partition (None)."""

    def __init__(self, state_dir: Path, *, start_fresh: bool = False) -> None:
        self.state_dir = state_dir
        self.start_fresh = start_fresh

    def restore(self, restore: Callable[[Checkpoint], None]) -> Checkpoint | None:
        """read(), then restore(checkpoint); one it refuses (StateError) stops the start with what to do, or
        with start_fresh is set aside like a corrupt file (siem.log.checkpoint.restore_checkpoint)."""
        return restore_checkpoint(self.state_dir, restore, start_fresh=self.start_fresh)

    def write(self, offset: int, state: bytes) -> None:
        save_checkpoint(self.state_dir, offset, state)

    async def save(self, partition: Hashable, offset: int, state: bytes) -> None:
        await asyncio.to_thread(self.write, offset, state)

    async def load(self, partitions: Iterable[Hashable]) -> dict[Hashable, Checkpoint]:
        ck = await asyncio.to_thread(load_checkpoint, self.state_dir, start_fresh=self.start_fresh)
        return {} if ck is None else {p: ck for p in partitions}


class KafkaEventLog:
    """The EventLog of the collector role: every record of one collector on one ``siem.events`` partition
    (keyed by the collector's name): events, then the Positions that cover them and its Watermark, in one
    send, so the matcher reads them in exactly the order embedded mode logs them (per key, late events
    meet the engine in the same order in both modes), and a restarted collector resumes from the last
    Positions on its partition (:meth:`last_positions`), as the embedded daemon resumes from its log.

    Without transactions a send is not atomic: a crash while the producer has written part of a send
    sends that part again after the restart (at most one send: ``intake_queue_size`` records)."""

    keeps_positions = True

    def __init__(self, producer: KafkaProducerLog, topic: str, origin: str) -> None:
        self.producer = producer
        self.topic = topic
        self.key = origin.encode()
        self._give_up = False

    def give_up(self) -> None:
        self._give_up = True

    async def last_positions(self, scan_records: int = 10_000) -> dict[str, dict]:
        """The last Positions per input on this collector's partition (within its last `scan_records`)."""
        out: dict[str, dict] = {}
        for raw in await read_partition_tail(self.producer.config, self.topic, self.key, scan_records):
            rec = decode_record(raw)
            if isinstance(rec, Positions):
                out[rec.input] = rec.positions
        return out

    async def append(self, events: list[bytes], control: list[Positions | Watermark]) -> None:
        items = [(self.key, p) for p in events] + [(self.key, encode_record(c)) for c in control]
        while True:
            try:
                if items:
                    await self.producer.send_many(self.topic, items)  # type: ignore[arg-type]
                return
            except KafkaError as exc:  # broker away: the whole batch again (duplicates absorbed downstream)
                if self._give_up:
                    raise StateError(f"cannot send to {self.topic}: {exc}") from exc
                log.error("cannot send to %s, retrying: %s", self.topic, exc)
                await asyncio.sleep(_RETRY_S)

    async def sync(self) -> None:
        return None  # append returned after every in-sync replica acknowledged

    async def idle(self) -> None:
        return None
