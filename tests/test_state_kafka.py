"""The correlator role and siem.state: a crafted record (what ran code through pickle.loads before) is
refused and counted, its partition starts empty, and nothing in it runs; a real snapshot hands a window
over to the next owner of the partition."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from aiokafka import TopicPartition
from kafka_broker import TansuBroker

from siem import metrics
from siem.config import load_config
from siem.dsl.loader import load_texts
from siem.log.checkpoint import encode_checkpoint
from siem.log.kafka import KafkaProducerLog, KafkaStateStore, ensure_topics
from siem.roles import Correlator
from tests.engine_support import T0, fails
from tests.test_kafka_log import cfg, name
from tests.test_snapshot import malicious_pickle

RULES = load_texts({"t.rules": """
rule bf { when event.dataset == "sshd" and event.outcome == "failure" count >= 3 within 5m by source.ip }
"""})


def correlator(broker: TansuBroker, **kw: object) -> Correlator:
    kafka = cfg(broker, **kw)
    return Correlator(dataclasses.replace(load_config(None), kafka=kafka), RULES)


async def until(pred, c: Correlator, timeout_s: float = 40) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError(f"owned {c.owned}")
        await c.step()


def test_a_crafted_state_record_is_refused_and_never_run(kafka_broker: TansuBroker, tmp_path: Path) -> None:
    """One record per partition on the state topic, each the pickle exploit in a valid checkpoint frame
    (the attack of issue 14): the correlator refuses all, counts them, starts the partitions empty and
    keeps running; the file the exploit would create does not exist."""
    marker = tmp_path / "pwned"
    kw = {"topic_matches": name("m"), "topic_state": name("st"), "group_correlator": name("gc"), "partitions": 2}

    async def main() -> None:
        c = correlator(kafka_broker, **kw)
        await ensure_topics(c.kafka, [c.kafka.topic_matches], partitions=2)
        await ensure_topics(c.kafka, [c.kafka.topic_state], partitions=1)
        group = c.kafka.group_id("correlator")
        async with KafkaProducerLog(c.kafka) as raw:
            await raw.send_many(c.kafka.topic_state, [
                (f"{group}|{c.kafka.topic_matches}|{p}".encode(), encode_checkpoint(0, malicious_pickle(marker)))
                for p in range(2)])
        before = metrics.value("siem_state_refused_total", reason="legacy_pickle")
        await c.start()
        try:
            await until(lambda: len(c.owned) == 2, c)
            assert metrics.value("siem_state_refused_total", reason="legacy_pickle") - before == 2
            assert all(c.engines[tp] == {} for tp in c.owned)
            await c.step()  # and it goes on
        finally:
            await c.stop()

    asyncio.run(main())
    assert not marker.exists()


def test_a_partition_snapshot_hands_the_window_to_the_next_owner(kafka_broker: TansuBroker) -> None:
    """A correlator snapshots a half-full window on the way out (encode_partition_state); the next one
    restores it from siem.state: the third failure completes the window."""
    kw = {"topic_matches": name("m"), "topic_state": name("st"), "group_correlator": name("gc"), "partitions": 1}
    tp = TopicPartition(str(kw["topic_matches"]), 0)

    async def main() -> None:
        first = correlator(kafka_broker, **kw)
        await ensure_topics(first.kafka, [first.kafka.topic_matches, first.kafka.topic_state], partitions=1)
        await first.start()
        try:
            await until(lambda: tp in first.owned, first)
            eng = first._engine(tp, "bf")
            assert eng is not None
            eng.process(fails("10.1.1.1", [0, 1]))  # pending: the roles' engines move with the matcher's watermark
            first.next[tp] = 5
            first.wm[tp] = T0 + 1_234
        finally:
            await first.stop()  # revoked: snapshot to siem.state, commit
        async with KafkaStateStore(first.kafka, first.kafka.group_id("correlator")) as store:
            [snap] = (await store.load({tp})).values()
        assert snap.offset == 5 and snap.state.startswith(b"SIEMSNAP")
        second = correlator(kafka_broker, **kw)
        await second.start()
        try:
            await until(lambda: tp in second.owned and "bf" in second.engines.get(tp, {}), second)
            assert second.wm[tp] == T0 + 1_234
            eng = second.engines[tp]["bf"]
            alerts = eng.process(fails("10.1.1.1", [2])) + eng.advance(T0 + 10_000)
            assert [(a.count, a.first_ms - T0) for a in alerts] == [(3, 0)]
        finally:
            await second.stop()

    asyncio.run(main())
