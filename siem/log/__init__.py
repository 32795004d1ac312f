"""The durability point between intake and processing.

* ``siem.log.local``      LocalLog: append-only segment files with checksums (the embedded default)
* ``siem.log.checkpoint`` engine window state + log offset in one atomically written file
* ``siem.log.codec``      events <-> log records (orjson, one event per record)
* ``siem.log.kafka``      KafkaLog: the same role over Kafka topics, for scale-out

Guarantee: at-least-once. Every record appended before a crash is read again after a restart from the
last checkpoint; consumers commit (checkpoint) only after their effects are durable.
"""

from __future__ import annotations

from siem.log.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from siem.log.codec import decode_events, encode_events
from siem.log.local import DirLock, LocalLog, LocalLogConfig

__all__ = [
    "Checkpoint",
    "DirLock",
    "LocalLog",
    "LocalLogConfig",
    "decode_events",
    "encode_events",
    "load_checkpoint",
    "save_checkpoint",
]
