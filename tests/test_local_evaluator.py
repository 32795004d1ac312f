"""LocalEvaluator.restore: the local log and the engine checkpoint opened together (embedded mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from siem.alert.record import Alert
from siem.dsl.loader import load_texts
from siem.errors import StateError
from siem.log.checkpoint import save_checkpoint
from siem.log.local import LocalLogConfig
from siem.pipeline.evaluator import Cadence, LocalEvaluator, wrap_state
from siem.pipeline.records import Positions, Watermark, encode_record

RULES = load_texts({"t.rules": 'rule r { severity low when event.dataset == "x" }'})
SMALL = LocalLogConfig(segment_bytes=2048, retention_bytes=4096)
CADENCE = Cadence(100, 50, 1000, 1000)


class Sink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def submit_many(self, alerts: list[Alert]) -> list[Alert]:
        self.alerts += alerts
        return alerts


def _evaluator(tmp_path: Path) -> LocalEvaluator:
    return LocalEvaluator(tmp_path, SMALL.build(tmp_path / "log"), RULES, Sink(), CADENCE, 3_600_000)


def _state(tmp_path: Path, positions: dict | None = None) -> bytes:
    ev = _evaluator(tmp_path / "scratch")
    try:
        return wrap_state(ev.engine.snapshot(), positions or {})
    finally:
        ev.log.close()


def test_first_start_reads_from_the_beginning(tmp_path: Path) -> None:
    ev = _evaluator(tmp_path)
    assert ev.restore() == ({}, -(2**62), -(2**62)) and ev.next_offset == 0
    ev.log.close()


def test_restart_resumes_at_the_checkpoint_and_reads_the_tail(tmp_path: Path) -> None:
    """The checkpoint's offset, its positions under the tail's, and the tail's newest time and watermark."""
    with SMALL.build(tmp_path / "log") as lg:
        lg.append_many([encode_record({"@timestamp": 5}), encode_record(Positions("f", {"at": 1})),
                        encode_record({"@timestamp": 9}), encode_record(Positions("f", {"at": 2})),
                        encode_record(Watermark("", 7))])
    save_checkpoint(tmp_path, 2, _state(tmp_path, {"f": {"at": 1}, "g": {"at": 0}}))
    ev = _evaluator(tmp_path)
    positions, newest, wm = ev.restore()
    assert (ev.next_offset, positions, newest, wm) == (2, {"f": {"at": 2}, "g": {"at": 0}}, 9, 7)
    ev.log.close()


def test_checkpoint_ahead_of_the_log_skips_ahead(tmp_path: Path) -> None:
    """A checkpoint beyond the log's end (an unsynced tail lost in an OS crash): new records get new offsets."""
    with SMALL.build(tmp_path / "log") as lg:
        lg.append_many([b"Ea", b"Eb"])
    save_checkpoint(tmp_path, 5, _state(tmp_path))
    ev = _evaluator(tmp_path)
    ev.restore()
    assert ev.next_offset == 5 and ev.log.append_many([b"Enew"]) == 6
    ev.log.close()


def test_checkpoint_older_than_the_log_is_refused(tmp_path: Path) -> None:
    """A checkpoint below the log's first offset would skip records: refused, saying what to do."""
    with SMALL.build(tmp_path / "log") as lg:
        lg.append_many([b"E" + b"x" * 100] * 200)
        lg.commit(200)
        assert lg.start_offset > 0
    save_checkpoint(tmp_path, 1, _state(tmp_path))
    ev = _evaluator(tmp_path)
    with pytest.raises(StateError, match="older than the log; move it aside"):
        ev.restore()
    ev.log.close()


def test_corrupt_checkpoint_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_bytes(b"\0" * 64)
    ev = _evaluator(tmp_path)
    with pytest.raises(StateError, match="zero-filled"):
        ev.restore()
    ev.log.close()


def test_the_local_state_store_keeps_one_partition_as_the_kafka_one_keeps_many(tmp_path: Path) -> None:
    """The StateStore protocol on a state directory: save then load gives the state and its offset back."""
    import asyncio

    from siem.pipeline.stores import LocalStateStore

    store = LocalStateStore(tmp_path)
    assert asyncio.run(store.load([None])) == {}
    asyncio.run(store.save(None, 7, b"state"))
    [(part, ck)] = asyncio.run(store.load([None])).items()
    assert (part, ck.offset, ck.state) == (None, 7, b"state")
