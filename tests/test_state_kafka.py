"""The correlator role and siem.state: crafted records (what ran code through pickle.loads before) are
refused and counted, their partitions start empty, and nothing in them runs; a real snapshot hands a
window over to the next owner of the partition."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import orjson
from aiokafka import TopicPartition
from kafka_broker import TansuBroker

from siem import metrics
from siem.config import load_config
from siem.dsl.loader import load_texts
from siem.log.checkpoint import encode_checkpoint
from siem.log.kafka import KafkaProducerLog, KafkaStateStore, ensure_topics
from siem.pipeline.routing import _STATE_MAGIC, families
from siem.roles import CorrelatorRole
from tests.engine_support import T0, fails
from tests.test_kafka_log import cfg, name
from tests.test_snapshot import malicious_pickle

RULES = load_texts({"t.rules": """
rule bf { when event.dataset == "sshd" and event.outcome == "failure" count >= 3 within 5m by source.ip }
"""})
[FAMILY] = families(RULES)


def correlator(broker: TansuBroker, **kw: object) -> CorrelatorRole:
    return CorrelatorRole(dataclasses.replace(load_config(None), kafka=cfg(broker, **kw)), RULES)


def partition_state(blobs: dict[str, bytes], wm: int = 0) -> bytes:
    """A partition state as the correlator writes it (routing.encode_partition_state), around given blobs."""
    head = orjson.dumps({"wm": wm, "latest": {}, "seen": {}, "newest": wm,
                         "families": [[f, len(b)] for f, b in blobs.items()]})
    return _STATE_MAGIC + len(head).to_bytes(4, "big") + head + b"".join(blobs.values())


async def until(pred, c: CorrelatorRole, timeout_s: float = 40) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError(f"partitions {sorted(c.core.parts)}")
        await c.step()


def test_crafted_state_records_are_refused_and_never_run(kafka_broker: TansuBroker, tmp_path: Path) -> None:
    """Partition 0: the pickle exploit in a valid checkpoint frame, the record that ran code in the
    correlator of issue 14. Partition 1: a valid partition header whose engine snapshot is that pickle.
    Both are refused and counted, both partitions start empty, the role goes on, and the file the exploit
    would create does not exist."""
    marker = tmp_path / "pwned"
    kw = {"topic_matches": name("m"), "topic_state": name("st"), "group_correlator": name("gc"), "partitions": 2}

    async def main() -> None:
        c = correlator(kafka_broker, **kw)
        await ensure_topics(c.kafka, [c.kafka.topic_matches], partitions=2)
        await ensure_topics(c.kafka, [c.kafka.topic_state], partitions=1)
        group, topic = c.kafka.group_id("correlator"), c.kafka.topic_matches
        payloads = [malicious_pickle(marker), partition_state({FAMILY: malicious_pickle(marker)})]
        async with KafkaProducerLog(c.kafka) as raw:
            await raw.send_many(c.kafka.topic_state, [(f"{group}|{topic}|{p}".encode(), encode_checkpoint(0, blob))
                                                      for p, blob in enumerate(payloads)])
        corrupt = metrics.value("siem_checkpoint_corrupt_total")
        legacy = metrics.value("siem_state_refused_total", reason="legacy_pickle")
        await c.start()
        try:
            await until(lambda: len(c.core.parts) == 2, c)
            assert metrics.value("siem_checkpoint_corrupt_total") - corrupt == 2
            assert metrics.value("siem_state_refused_total", reason="legacy_pickle") - legacy == 1  # the engine's
            assert all(not p.engines for p in c.core.parts.values())
            await c.step()  # and it goes on
        finally:
            await c.stop()

    asyncio.run(main())
    assert not marker.exists()


def test_a_partition_snapshot_hands_the_window_to_the_next_owner(kafka_broker: TansuBroker) -> None:
    """A correlator snapshots a half-full window on the way out; the next one restores it from siem.state
    (engine snapshots in the data format): the third failure completes the window."""
    kw = {"topic_matches": name("m"), "topic_state": name("st"), "group_correlator": name("gc"), "partitions": 1}
    tp = TopicPartition(str(kw["topic_matches"]), 0)

    async def main() -> None:
        first = correlator(kafka_broker, **kw)
        await ensure_topics(first.kafka, [first.kafka.topic_matches, first.kafka.topic_state], partitions=1)
        await first.start()
        try:
            await until(lambda: tp in first.core.parts, first)
            eng = first.core._engine(first.core.parts[tp], FAMILY)
            assert eng is not None
            eng.process(fails("10.1.1.1", [0, 1]))  # pending: the roles' engines move with the matchers' watermark
            first.next[tp] = 5
        finally:
            await first.stop()  # revoked: snapshot to siem.state, commit
        async with KafkaStateStore(first.kafka, first.kafka.group_id("correlator")) as store:
            [snap] = (await store.load({tp})).values()
        assert snap.offset == 5 and b"SIEMSNAP" in snap.state
        second = correlator(kafka_broker, **kw)
        await second.start()
        try:
            await until(lambda: tp in second.core.parts and FAMILY in second.core.parts[tp].engines, second)
            eng = second.core.parts[tp].engines[FAMILY]
            alerts = eng.process(fails("10.1.1.1", [2])) + eng.advance(T0 + 10_000)
            assert [(a.count, a.first_ms - T0) for a in alerts] == [(3, 0)]
        finally:
            await second.stop()

    asyncio.run(main())
