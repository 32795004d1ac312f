"""KafkaLog: the durable log over Kafka topics, for the scale-out roles (aiokafka 0.14).

Topics (ARCHITECTURE.md section 4): ``siem.events`` (normalised events, keyed by source), ``siem.matches``
(keyed by rule id + group key so one window's events share a partition), ``siem.alerts``. Message
values are one JSON object each (siem.log.codec), keys are bytes.

aiokafka's defaults are wrong for a SIEM; here they are set deliberately:

producer
  ``acks="all"``           a send completes only when every in-sync replica has the record.
  ``enable_idempotence``   off by default because the test broker (Tansu) rejects it; on Apache Kafka and
                           Redpanda turn it on (``[kafka] enable_idempotence = true``) so a retried send
                           cannot duplicate a record. Without it, duplicates after a retry are possible:
                           the log is at-least-once and consumers are idempotent (deterministic alert ids).
  ``linger_ms`` / ``max_batch_size``  batch sends (default 20 ms / 256 KiB) for throughput.
  keys                     always given for events and matches, so ordering per key holds.
consumer
  ``enable_auto_commit=False``  offsets are committed only by ``commit()``, which the caller calls after
                           the effects of the records are durable (matches produced and acked, window state
                           checkpointed, alert written to the outbox).
  ``auto_offset_reset="earliest"``  a new group reads the backlog instead of skipping it.
  ``isolation_level="read_committed"``  never see aborted transactional writes.
  rebalances               a PartitionListener is told ``on_partitions_revoked(all held partitions)``
                           before a rebalance and on ``stop()``, and ``on_partitions_assigned(the new
                           assignment)`` after it, before any record of those partitions is returned
                           (the eager protocol: every rebalance revokes everything). The correlator
                           snapshots window state and commits in the first, restores in the second.
  commit failures          CommitFailedError (the group rebalanced under us), RebalanceInProgressError and
                           commits for partitions no longer assigned never escape ``commit()``: they are
                           logged, counted in siem_kafka_commit_failed_total, and ``commit()`` returns False.
                           The records are then delivered again to the new owner (at-least-once).
  poison messages          a value that is not a JSON object, is null (tombstone), is larger than
                           ``max_message_bytes``, or a header value that is not UTF-8, is counted in
                           siem_kafka_poison_messages_total{topic,reason}, skipped (its offset still
                           advances, so it never blocks the partition) and, when ``dead_letter_topic`` is
                           set, copied there with headers naming the reason and the origin.

Nothing here depends on Tansu; the tests use it because it starts without a JVM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.partitioner import DefaultPartitioner

from siem import metrics
from siem.errors import ConfigError, Issue, StateError
from siem.log._toml import TableReader
from siem.log.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from siem.log.codec import encode_event
from siem.schema import Event

log = logging.getLogger(__name__)
_CHUNKED = b"SIEMCHNK"  # a window-state manifest whose snapshot is in chunks

ROLES = ("matcher", "correlator", "notifier")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
_INVALID_REPLICATION_FACTOR = 38
_TOPIC_EXISTS = 36


# --- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Passed through to aiokafka. The password is never printed (repr=False)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def client_kwargs(self) -> dict[str, object]:
        kw: dict[str, object] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(cafile=self.ssl_cafile)
            ctx.check_hostname = self.ssl_check_hostname
            if self.ssl_certfile:
                ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            kw["ssl_context"] = ctx
        if self.protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        return kw


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """The ``[kafka]`` table as the user wrote it (after secrets were resolved)."""

    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    client_id: str = "siem"
    topic_events: str = "siem.events"
    topic_matches: str = "siem.matches"
    topic_alerts: str = "siem.alerts"
    topic_state: str = "siem.state"  # per-partition window-state snapshots of the correlators (compacted)
    dead_letter_topic: str | None = None
    group_matcher: str = "siem-matcher"
    group_correlator: str = "siem-correlator"
    group_notifier: str = "siem-notifier"
    partitions: int = 6
    replication_factor: int = 3  # of the topics siem creates; min.insync.replicas = min(2, this)
    # producer
    acks: str = "all"
    enable_idempotence: bool | str = "auto"  # True, False, or "auto": on where the broker supports it
    linger_ms: int = 20
    max_batch_size: int = 256 * 1024
    compression: str = "none"
    max_message_bytes: int = 1024 * 1024
    request_timeout_ms: int = 30_000
    # consumer
    max_poll_records: int = 1000
    fetch_max_wait_ms: int = 200
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    isolation_level: str = "read_committed"
    security: KafkaSecurity = KafkaSecurity()

    def group_id(self, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        return str(getattr(self, f"group_{role}"))

    @property
    def topics(self) -> tuple[str, ...]:
        return (self.topic_events, self.topic_matches, self.topic_alerts)

    def _common(self) -> dict[str, object]:
        return {"bootstrap_servers": list(self.bootstrap_servers), "client_id": self.client_id,
                "request_timeout_ms": self.request_timeout_ms, **self.security.client_kwargs()}


_KEYS = (
    "bootstrap_servers", "client_id", "topics", "groups", "partitions", "replication_factor", "acks",
    "enable_idempotence", "linger_ms", "max_batch_size", "compression", "max_message_bytes", "request_timeout_ms",
    "max_poll_records", "fetch_max_wait_ms", "session_timeout_ms", "heartbeat_interval_ms",
    "max_poll_interval_ms", "isolation_level", "security",
)
_SECURITY_KEYS = ("protocol", "sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file",
                  "sasl_password_env", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def config_from_toml(table: dict, where: str) -> tuple[KafkaConfig | None, list[Issue]]:
    """Validate the ``[kafka]`` table; every problem is returned, none raised.

    Subtables: ``topics`` (events, matches, alerts, dead_letter), ``groups`` (matcher, correlator,
    notifier), ``security`` (protocol, sasl_mechanism, sasl_username, sasl_password | sasl_password_file |
    sasl_password_env, ssl_cafile, ssl_certfile, ssl_keyfile, ssl_check_hostname)."""
    if not isinstance(table, dict):
        return None, [Issue("wrong-type", f"{where}: expected a table, got {type(table).__name__}")]
    r = TableReader(table, where, _KEYS)
    d = KafkaConfig()
    servers = r.str_list("bootstrap_servers", list(d.bootstrap_servers))
    for s in servers:
        host, _, port = s.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            r.bad("bootstrap_servers", "bad-value", f"{s!r} is not host:port")
    client_id = r.str_("client_id", d.client_id) or d.client_id

    def sub(name: str, keys: Iterable[str]) -> TableReader:
        value = r.get(name, dict, {})
        reader = TableReader(value if isinstance(value, dict) else {}, f"{where}.{name}", keys)
        return reader

    t = sub("topics", ("events", "matches", "alerts", "state", "dead_letter"))
    topics = [t.str_(k, getattr(d, f"topic_{k}")) or "" for k in ("events", "matches", "alerts", "state")]
    dead = t.str_("dead_letter", None)
    for k, v in zip(("events", "matches", "alerts", "state", "dead_letter"), [*topics, dead]):
        if v is not None and (not v or len(v) > 249 or not all(c.isalnum() or c in "._-" for c in v)):
            t.bad(k, "bad-value", f"{v!r} is not a valid topic name (letters, digits, '.', '_', '-')")
    g = sub("groups", ROLES)
    groups = [g.str_(k, getattr(d, f"group_{k}")) or getattr(d, f"group_{k}") for k in ROLES]

    partitions = r.int_range("partitions", d.partitions, 1, 10_000)
    replication = r.int_range("replication_factor", d.replication_factor, 1, 100)
    acks = r.get("acks", (str, int), d.acks)
    if acks not in ("all", -1, 1):
        r.bad("acks", "bad-value", f"expected \"all\" (recommended) or 1, got {acks!r}")
        acks = d.acks
    idem = r.get("enable_idempotence", (bool, str), d.enable_idempotence)
    if isinstance(idem, str) and idem != "auto":
        r.bad("enable_idempotence", "bad-value", f"expected true, false or \"auto\", got {idem!r}")
        idem = d.enable_idempotence
    linger = r.int_range("linger_ms", d.linger_ms, 0, 60_000)
    batch = r.int_range("max_batch_size", d.max_batch_size, 1024, 64 << 20)
    compression = r.choice("compression", d.compression, COMPRESSION)
    max_msg = r.int_range("max_message_bytes", d.max_message_bytes, 1024, 256 << 20)
    req_timeout = r.int_range("request_timeout_ms", d.request_timeout_ms, 1000, 600_000)
    poll = r.int_range("max_poll_records", d.max_poll_records, 1, 1_000_000)
    fetch_wait = r.int_range("fetch_max_wait_ms", d.fetch_max_wait_ms, 0, 60_000)
    session = r.int_range("session_timeout_ms", d.session_timeout_ms, 1000, 3_600_000)
    heartbeat = r.int_range("heartbeat_interval_ms", d.heartbeat_interval_ms, 100, 3_600_000)
    if heartbeat >= session:
        r.bad("heartbeat_interval_ms", "bad-value", f"must be below session_timeout_ms ({session})")
    poll_interval = r.int_range("max_poll_interval_ms", d.max_poll_interval_ms, 1000, 86_400_000)
    isolation = r.choice("isolation_level", d.isolation_level, ("read_committed", "read_uncommitted"))

    sec = sub("security", _SECURITY_KEYS)
    protocol = sec.choice("protocol", "PLAINTEXT", SECURITY_PROTOCOLS)
    mechanism = sec.str_("sasl_mechanism", None)
    if mechanism is not None and mechanism not in SASL_MECHANISMS:
        sec.bad("sasl_mechanism", "bad-value", f"expected one of {', '.join(SASL_MECHANISMS)}, got {mechanism!r}")
    username = sec.str_("sasl_username", None)
    password = _secret(sec, "sasl_password")
    if protocol.startswith("SASL") and (username is None or password is None):
        sec.bad("protocol", "missing-key", f"{protocol} needs sasl_username and a sasl_password(_file|_env)")
    files: dict[str, str | None] = {}
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = files[key] = sec.str_(key, None)
        if path is not None and not os.access(path, os.R_OK):
            sec.bad(key, "unreadable-file", f"cannot read {path}")
    check_host = sec.get("ssl_check_hostname", bool, True)

    issues = r.issues + t.issues + g.issues + sec.issues
    if issues:
        return None, issues
    security = KafkaSecurity(protocol, mechanism, username, password, files["ssl_cafile"], files["ssl_certfile"],
                             files["ssl_keyfile"], bool(check_host))
    return KafkaConfig(
        tuple(servers), client_id, topics[0], topics[1], topics[2], topics[3], dead, groups[0], groups[1],
        groups[2],
        partitions, replication, "all" if acks in ("all", -1) else "1", idem, linger, batch, compression,
        max_msg, req_timeout, poll, fetch_wait, session, heartbeat, poll_interval, isolation, security,
    ), []


def _secret(r: TableReader, key: str) -> str | None:
    """A secret given inline, in a file (systemd credentials) or in an environment variable."""
    given = [k for k in (key, f"{key}_file", f"{key}_env") if k in r.table]
    if len(given) > 1:
        r.bad(given[1], "conflict", f"give only one of {', '.join(given)}")
        return None
    value = r.str_(key, None)
    path = r.str_(f"{key}_file", None)
    if path is not None:
        try:
            value = Path(path).read_text().rstrip("\n")
        except OSError as exc:
            r.bad(f"{key}_file", "unreadable-file", f"cannot read {path}: {exc.strerror or exc}")
    env = r.str_(f"{key}_env", None)
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            r.bad(f"{key}_env", "missing-env", f"environment variable {env} is not set")
    return value


# --- topics --------------------------------------------------------------------------------------------
async def ensure_topics(config: KafkaConfig, topics: Sequence[str] | None = None,
                        partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet (partition count from the config); return those created.
    Existing topics are left as they are (their partition count is not changed)."""
    names = list(topics) if topics is not None else [*config.topics, config.topic_state,
                                                      *([config.dead_letter_topic] if config.dead_letter_topic else [])]
    admin = AIOKafkaAdminClient(**config._common())
    await admin.start()
    try:
        isr = {"min.insync.replicas": str(min(2, config.replication_factor))}
        response = await admin.create_topics([
            NewTopic(n, partitions or config.partitions, config.replication_factor,
                     topic_configs={**isr, "cleanup.policy": "compact"} if n == config.topic_state else isr)
            for n in names])
    finally:
        await admin.close()
    created, problems = [], []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else ""
        if code == 0:
            created.append(name)
        elif code == _INVALID_REPLICATION_FACTOR:
            problems.append(f"{name}: replication factor {config.replication_factor} is more than the brokers "
                            f"available (set [kafka] replication_factor; 1 only for a test cluster)")
        elif code != _TOPIC_EXISTS:
            problems.append(f"{name}: error {code} {message or ''}".strip())
    if problems:
        raise StateError(f"cannot create Kafka topics: {'; '.join(problems)}")
    return created


# --- producing -----------------------------------------------------------------------------------------
class KafkaProducerLog:
    """Keyed JSON messages to Kafka; ``send_many`` returns when every message is acknowledged."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.idempotent = config.enable_idempotence is not False
        self._producer = self._build(self.idempotent)

    def _build(self, idempotent: bool) -> AIOKafkaProducer:
        config = self.config
        return AIOKafkaProducer(
            **config._common(),
            acks="all" if config.acks == "all" or idempotent else 1,
            enable_idempotence=idempotent,
            linger_ms=config.linger_ms,
            max_batch_size=config.max_batch_size,
            max_request_size=config.max_message_bytes + 64 * 1024,
            compression_type=None if config.compression == "none" else config.compression,
        )

    async def start(self) -> None:
        """Start; with ``enable_idempotence = "auto"`` a broker that refuses producer ids (InitProducerId:
        Tansu, old brokers) gets a plain producer, said once and shown by siem_kafka_idempotent_producer."""
        try:
            await self._producer.start()
        except KafkaError as exc:
            if self.config.enable_idempotence != "auto" or not self.idempotent:
                raise
            await self._producer.stop()
            log.warning("kafka: the broker refuses the idempotent producer (%s); a retried send may duplicate "
                        "a record (absorbed by deterministic alert ids, see README 'Scale-out')", exc)
            self.idempotent = False
            self._producer = self._build(False)
            await self._producer.start()
        metrics.KAFKA_IDEMPOTENT.set(1 if self.idempotent else 0)

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> KafkaProducerLog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send_many(
        self, topic: str, items: Sequence[tuple[bytes | None, Event | bytes]],
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> list[tuple[int, int] | None]:
        """Send (key, value) pairs (a value is an event dict or already-encoded bytes); wait for all acks.
        Returns (partition, offset) per item; None for an item refused as oversized (counted).

        A KafkaError (broker unreachable past request_timeout_ms, ...) propagates; some items may have
        been written by then, so the caller retries the whole batch (at-least-once: duplicates possible,
        absorbed downstream by deterministic alert ids)."""
        futures: list[asyncio.Future | None] = []
        for key, value in items:
            raw = encode_event(value) if isinstance(value, dict) else value
            if len(raw) > self.config.max_message_bytes:
                metrics.KAFKA_POISON.labels(topic=topic, reason="oversized_produce").inc()
                log.error("not sending a %d-byte message to %s: above max_message_bytes=%d", len(raw), topic,
                          self.config.max_message_bytes)
                futures.append(None)
                continue
            futures.append(await self._producer.send(topic, value=raw, key=key, headers=list(headers or [])))
        out: list[tuple[int, int] | None] = []
        for fut in futures:
            if fut is None:
                out.append(None)
            else:
                md = await fut
                out.append((md.partition, md.offset))
        return out

    async def send_tombstones(self, topic: str, keys: Sequence[bytes]) -> None:
        """Null values for `keys` (compaction then drops them); returns once acknowledged."""
        futures = [await self._producer.send(topic, value=None, key=k) for k in keys]
        for f in futures:
            await f

    async def broadcast(self, topic: str, value: bytes) -> None:
        """One copy of `value` on every partition of `topic` (watermark records); returns once acknowledged."""
        parts = await self._producer.partitions_for(topic)
        futures = [await self._producer.send(topic, value=value, partition=p) for p in sorted(parts)]
        for f in futures:
            await f


# --- consuming -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any  # an event dict, or what the consumer's decode made of the bytes
    timestamp_ms: int
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class KafkaBatch:
    """Records returned by one poll, and the offsets to commit once their effects are durable: the next
    offset per partition, covering skipped poison messages too."""

    records: list[KafkaRecord]
    positions: dict[TopicPartition, int]


class PartitionListener(Protocol):
    async def on_partitions_revoked(self, partitions: set[TopicPartition]) -> None: ...

    async def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None: ...


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: KafkaConsumerLog) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.owner._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.owner._assigned(set(assigned))


class KafkaConsumerLog:
    """A consumer-group member for one role, with manual commits and rebalance hooks."""

    def __init__(
        self, config: KafkaConfig, role: str, topics: Sequence[str], listener: PartitionListener | None = None,
        dead_letter: KafkaProducerLog | None = None, group_id: str | None = None,
        decode: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.config = config
        self.decode = decode  # bytes -> value, None for a poison message; default: a JSON object
        self.group = group_id or config.group_id(role)
        self.topics = list(topics)
        self.listener = listener
        self.dead_letter = dead_letter if config.dead_letter_topic else None
        self._assignment: set[TopicPartition] = set()
        self._read_to: dict[TopicPartition, int] = {}  # the next offset to read, per partition polled
        self._generation = 0  # bumped by every revocation and assignment
        self._consumer = AIOKafkaConsumer(
            **config._common(),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=config.isolation_level,
            max_poll_records=config.max_poll_records,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            max_partition_fetch_bytes=max(config.max_message_bytes + 64 * 1024, 1024 * 1024),
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self.topics, listener=_Listener(self))

    async def stop(self) -> None:
        """Tell the listener its partitions are revoked (so it can snapshot and commit), then leave."""
        try:
            if self._assignment:
                await self._revoked(set(self._assignment))
        finally:
            await self._consumer.stop()

    async def __aenter__(self) -> KafkaConsumerLog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        if not partitions:  # aiokafka reports an empty revocation on the first join
            return
        metrics.KAFKA_REBALANCES.labels(group=self.group, change="revoked").inc()
        log.info("kafka group %s: partitions revoked: %s", self.group, _fmt(partitions))
        self._generation += 1
        self._assignment -= partitions
        for tp in partitions:  # another member reports these now
            if self._read_to.pop(tp, None) is not None:
                try:
                    metrics.KAFKA_LAG.remove(self.group, tp.topic, str(tp.partition))
                except KeyError:
                    pass
        if self.listener is not None:
            await _call_hook(self.listener.on_partitions_revoked, partitions, "on_partitions_revoked")

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        metrics.KAFKA_REBALANCES.labels(group=self.group, change="assigned").inc()
        log.info("kafka group %s: partitions assigned: %s", self.group, _fmt(partitions))
        self._generation += 1
        self._assignment = set(partitions)
        if self.listener is not None:
            # aiokafka may start fetching the new partitions while this hook still runs (seen with state
            # restores that take a network round trip): hold their records back until it has finished,
            # so no record is returned before its partition's state is restored.
            self._consumer.pause(*partitions)
            try:
                await _call_hook(self.listener.on_partitions_assigned, partitions, "on_partitions_assigned")
            finally:
                self._consumer.resume(*(tp for tp in partitions if tp in self._consumer.assignment()))

    async def poll(self, timeout_ms: int = 1000, max_records: int | None = None) -> KafkaBatch:
        """The next records (poison messages skipped and counted) and the positions to commit after them.

        Update your own positions only after processing a batch: the revocation hook may run between two
        polls (whenever this task awaits), and what it snapshots must match the positions it commits."""
        data = await self._consumer.getmany(timeout_ms=timeout_ms,
                                            max_records=max_records or self.config.max_poll_records)
        generation = self._generation
        records: list[KafkaRecord] = []
        positions: dict[TopicPartition, int] = {}
        for tp, messages in data.items():
            for m in messages:
                positions[tp] = m.offset + 1
                record, reason = self._decode(m)
                if record is not None:
                    records.append(record)
                    continue
                metrics.KAFKA_POISON.labels(topic=tp.topic, reason=reason).inc()
                log.error("kafka %s[%d]@%d: skipping poison message (%s)", tp.topic, tp.partition, m.offset, reason)
                if self.dead_letter is not None and self.config.dead_letter_topic:
                    await self._to_dead_letter(m, reason)
        self._update_lag(positions)
        if generation != self._generation:
            # a rebalance ran while we were copying to the dead-letter topic: these records may belong to
            # a partition we lost, or precede the offset a restored snapshot seeked to. Drop them; the
            # partition's current owner reads them again from its committed or restored offset.
            log.info("kafka group %s: dropping %d records polled before a rebalance", self.group, len(records))
            return KafkaBatch([], {})
        return KafkaBatch(records, positions)

    def _update_lag(self, polled: dict[TopicPartition, int]) -> None:
        """siem_kafka_consumer_lag_records per held partition: its high-water mark minus what was read."""
        for tp in self._assignment:
            if tp in polled:
                self._read_to[tp] = polled[tp]
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            pos = self._read_to.get(tp)
            if pos is not None:
                metrics.KAFKA_LAG.labels(group=self.group, topic=tp.topic, partition=str(tp.partition)).set(
                    max(high - pos, 0))

    def _decode(self, m: object) -> tuple[KafkaRecord | None, str]:
        value = getattr(m, "value")
        if value is None:
            return None, "null_value"
        if len(value) > self.config.max_message_bytes:
            return None, "oversized"
        headers: dict[str, str] = {}
        for hk, hv in getattr(m, "headers") or ():
            try:
                headers[hk] = hv.decode("utf-8") if hv is not None else ""
            except UnicodeDecodeError:
                return None, "bad_header"
        if self.decode is not None:
            event = self.decode(value)
            if event is None:
                return None, "undecodable"
        else:
            try:
                event = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None, "not_json"
            if not isinstance(event, dict):
                return None, "not_json"
        return KafkaRecord(getattr(m, "topic"), getattr(m, "partition"), getattr(m, "offset"), getattr(m, "key"),
                           event, getattr(m, "timestamp"), headers), ""

    async def _to_dead_letter(self, m: object, reason: str) -> None:
        if self.dead_letter is None or not self.config.dead_letter_topic:
            return
        value = getattr(m, "value") or b""
        if len(value) > self.config.max_message_bytes:
            value = value[: self.config.max_message_bytes]  # keep evidence, within the topic's limit
        headers = [("siem.reason", reason.encode()), ("siem.topic", str(getattr(m, "topic")).encode()),
                   ("siem.partition", str(getattr(m, "partition")).encode()),
                   ("siem.offset", str(getattr(m, "offset")).encode())]
        try:
            await self.dead_letter.send_many(self.config.dead_letter_topic, [(getattr(m, "key"), value)], headers)
        except KafkaError as exc:
            log.error("cannot copy poison message to dead-letter topic %s: %s", self.config.dead_letter_topic, exc)

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit next-offsets once the records' effects are durable. Offsets of partitions this member
        no longer owns are dropped; a commit refused because of a rebalance returns False (counted and
        logged, never raised): the new owner re-reads those records."""
        owned = {tp: off for tp, off in offsets.items() if tp in self._consumer.assignment()}
        if len(owned) < len(offsets):
            metrics.KAFKA_COMMIT_FAILED.labels(group=self.group).inc()
            log.warning("kafka group %s: not committing %s, no longer assigned here", self.group,
                        _fmt(set(offsets) - set(owned)))
        if not owned:
            return len(offsets) == 0
        try:
            await self._consumer.commit(owned)
        except (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError,
                IllegalStateError) as exc:
            metrics.KAFKA_COMMIT_FAILED.labels(group=self.group).inc()
            log.warning("kafka group %s: commit refused during a rebalance (%s); records will be re-delivered",
                        self.group, type(exc).__name__)
            return False
        return len(owned) == len(offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return await self._consumer.committed(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read tp from offset next (e.g. from a restored snapshot's offset in on_partitions_assigned)."""
        self._consumer.seek(tp, offset)


async def read_partition_tail(config: KafkaConfig, topic: str, key: bytes, records: int) -> list[bytes]:
    """The values of the last `records` messages (at most) of the partition `key` maps to, oldest first
    (how a collector finds the positions it last logged). Empty when the topic does not exist yet."""
    consumer = AIOKafkaConsumer(**config._common(), group_id=None, enable_auto_commit=False,
                                isolation_level=config.isolation_level,
                                max_partition_fetch_bytes=max(config.max_message_bytes + 64 * 1024, 1024 * 1024))
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        ordered = sorted(parts)
        tp = TopicPartition(topic, DefaultPartitioner()(key, ordered, ordered))
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        begin = (await consumer.beginning_offsets([tp]))[tp]
        start = max(begin, end - records)
        if start >= end:
            return []
        consumer.seek(tp, start)
        out: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.request_timeout_ms / 1000
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise StateError(f"timed out reading the tail of {topic}[{tp.partition}]")
            data = await consumer.getmany(tp, timeout_ms=200)
            out += [m.value for m in data.get(tp, []) if m.key == key and m.value is not None]
        return out
    finally:
        await consumer.stop()


# --- per-partition state snapshots ----------------------------------------------------------------------
class KafkaStateStore:
    """Window-state snapshots per input partition, kept in a compacted topic (``topics.state``).

    The Kafka counterpart of siem.log.checkpoint: each snapshot holds the state AND the input offset it
    covers (same encoding, with version and CRC), keyed ``<group>|<topic>|<partition>``. The correlator:

    * on_partitions_revoked / periodically: ``await store.save(tp, next_offset, engine_snapshot)``, then
      ``await consumer.commit({tp: next_offset})`` (snapshot first: a crash between the two leaves a
      snapshot ahead of the commit, which is safe, see below);
    * on_partitions_assigned: ``snaps = await store.load(partitions)``; for each tp with a snapshot,
      restore its state and ``consumer.seek(tp, snap.offset)``, so the records already inside the state
      are not counted again even if the commit did not happen. Without a snapshot, start empty from the
      committed offset.

    A snapshot that fails its checksum is counted (siem_checkpoint_corrupt_total) and treated as missing.
    A snapshot larger than one message (``max_message_bytes``) is stored in chunks (see ``save``).
    """

    def __init__(self, config: KafkaConfig, group: str) -> None:
        self.config = config
        self.group = group
        self.topic = config.topic_state
        self._chunks: dict[TopicPartition, tuple[str, int]] = {}  # the chunked snapshot last saved or loaded
        self._producer = KafkaProducerLog(config)
        self._consumer = AIOKafkaConsumer(
            **config._common(),
            group_id=None, enable_auto_commit=False, isolation_level=config.isolation_level,
            max_partition_fetch_bytes=max(config.max_message_bytes + 64 * 1024, 1024 * 1024),
        )

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()

    async def stop(self) -> None:
        try:
            await self._producer.stop()
        finally:
            await self._consumer.stop()

    async def __aenter__(self) -> KafkaStateStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _key(self, tp: TopicPartition) -> bytes:
        return f"{self.group}|{tp.topic}|{tp.partition}".encode()

    async def save(self, tp: TopicPartition, offset: int, state: bytes) -> None:
        """Store (offset, state) for tp; returns once every in-sync replica has it.

        A snapshot larger than one message goes in chunks keyed ``<key>|<generation>|<i>``, then a manifest
        under ``<key>`` naming the generation, chunk count and CRC; then the previous generation's chunks
        are deleted (tombstones, so compaction drops them). A crash before the manifest leaves the previous
        manifest and its chunks intact: the previous snapshot is restored."""
        raw = encode_checkpoint(offset, state)
        base = self._key(tp)
        limit = max(self.config.max_message_bytes - 1024, 1024)
        previous = self._chunks.get(tp)
        if len(raw) <= limit:
            items: list[tuple[bytes | None, Event | bytes]] = [(base, raw)]
            self._chunks.pop(tp, None)
        else:
            gen = os.urandom(6).hex()
            parts = [raw[i: i + limit] for i in range(0, len(raw), limit)]
            items = [(f"{base.decode()}|{gen}|{i}".encode(), part) for i, part in enumerate(parts)]
            manifest = _CHUNKED + orjson.dumps({"gen": gen, "n": len(parts), "size": len(raw),
                                                "crc": zlib.crc32(raw)})
            items.append((base, manifest))
            self._chunks[tp] = (gen, len(parts))
        acks = await self._producer.send_many(self.topic, items)
        if any(a is None for a in acks):
            raise StateError(f"window state of {tp.topic}[{tp.partition}] could not be stored in {self.topic}")
        if previous is not None and previous != self._chunks.get(tp):
            gen, n = previous
            await self._producer.send_tombstones(self.topic, [f"{base.decode()}|{gen}|{i}".encode() for i in range(n)])

    async def load(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Checkpoint]:
        """The latest snapshot of each partition that has one (reads the state topic to its end)."""
        wanted = {self._key(tp): tp for tp in partitions}
        if not wanted:
            return {}
        parts = self._consumer.partitions_for_topic(self.topic)
        if parts is None:
            await self._consumer.topics()  # refresh metadata
            parts = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if not tps:
            return {}
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        latest: dict[TopicPartition, bytes] = {}
        chunks: dict[bytes, bytes] = {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout_ms / 1000
        while remaining:
            if loop.time() > deadline:
                raise StateError(f"timed out reading window-state topic {self.topic}")
            data = await self._consumer.getmany(*remaining, timeout_ms=200)
            for stp, messages in data.items():
                for m in messages:
                    if m.key in wanted:
                        if m.value is None:
                            latest.pop(wanted[m.key], None)
                        else:
                            latest[wanted[m.key]] = m.value
                    elif m.key is not None and m.key.rsplit(b"|", 2)[0] in wanted:
                        if m.value is None:
                            chunks.pop(m.key, None)
                        else:
                            chunks[m.key] = m.value
                    if m.offset + 1 >= ends[stp]:
                        remaining.discard(stp)
            for stp in list(remaining):
                if await self._consumer.position(stp) >= ends[stp]:
                    remaining.discard(stp)
        out = {}
        for tp, raw in latest.items():
            where = f"window state of {tp.topic}[{tp.partition}] in {self.topic}"
            try:
                if raw.startswith(_CHUNKED):
                    raw = self._assemble(tp, raw, chunks, where)
                out[tp] = decode_checkpoint(raw, where)
            except StateError as exc:
                metrics.CHECKPOINT_CORRUPT.inc()
                log.error("%s; starting that partition from its committed offset with empty state", exc)
        return out

    def _assemble(self, tp: TopicPartition, manifest: bytes, chunks: dict[bytes, bytes], where: str) -> bytes:
        try:
            m = orjson.loads(manifest[len(_CHUNKED):])
            gen, n, size, crc = m["gen"], m["n"], m["size"], m["crc"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise StateError(f"{where}: unreadable chunk manifest") from exc
        if not (isinstance(gen, str) and type(n) is int and 0 < n <= 100_000 and type(size) is int):
            raise StateError(f"{where}: chunk manifest has the wrong shape")
        base = self._key(tp).decode()
        parts = [chunks.get(f"{base}|{gen}|{i}".encode()) for i in range(n)]
        if any(p is None for p in parts):
            raise StateError(f"{where}: {sum(p is None for p in parts)} of {n} chunks are missing")
        raw = b"".join(parts)  # type: ignore[arg-type]
        if len(raw) != size or zlib.crc32(raw) != crc:
            raise StateError(f"{where}: chunks do not add up to the snapshot the manifest describes")
        self._chunks[tp] = (gen, n)
        return raw


async def _call_hook(fn: Callable[[set[TopicPartition]], Awaitable[None]], partitions: set[TopicPartition],
                     name: str) -> None:
    try:
        await fn(partitions)
    except asyncio.CancelledError:
        raise
    except Exception:  # aiokafka would swallow it too; say so loudly. The hook owner must cope (stop?)
        log.exception("rebalance hook %s failed for %s", name, _fmt(partitions))


def _fmt(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "(none)"


def build_config(table: dict, where: str = "kafka") -> KafkaConfig:
    """config_from_toml that raises ConfigError with every issue."""
    cfg, issues = config_from_toml(table, where)
    if cfg is None:
        raise ConfigError(issues)
    return cfg


class KafkaLog:
    """The one entry point the daemon's roles use: clients built from one KafkaConfig.

        kafka = KafkaLog(config)
        await kafka.ensure_topics()
        producer = kafka.producer()                                   # collector, matcher, correlator
        consumer = kafka.consumer("correlator", [config.topic_matches], listener=correlator)
        store = kafka.state_store("correlator")                       # correlator window state
    """

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config

    async def ensure_topics(self) -> list[str]:
        return await ensure_topics(self.config)

    def producer(self) -> KafkaProducerLog:
        return KafkaProducerLog(self.config)

    def consumer(self, role: str, topics: Sequence[str], listener: PartitionListener | None = None,
                 dead_letter: KafkaProducerLog | None = None) -> KafkaConsumerLog:
        return KafkaConsumerLog(self.config, role, topics, listener, dead_letter)

    def state_store(self, role: str = "correlator") -> KafkaStateStore:
        return KafkaStateStore(self.config, self.config.group_id(role))
