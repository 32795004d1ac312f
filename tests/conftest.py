"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka_broker import TansuBroker


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[TansuBroker]:
    """A real Kafka-protocol broker (Tansu, memory storage) on 127.0.0.1, one per test module."""
    broker = TansuBroker.start()
    try:
        yield broker
    finally:
        broker.stop()
