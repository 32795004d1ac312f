"""EmbeddedStore: the log and the engine checkpoint opened and advanced together."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from siem.errors import StateError
from siem.log.checkpoint import save_checkpoint
from siem.log.embedded import EmbeddedStore
from siem.log.local import LocalLog, LocalLogConfig

REPO = Path(__file__).resolve().parent.parent
SMALL = LocalLogConfig(segment_bytes=2048, retention_bytes=4096)


def test_first_start_reads_from_the_beginning(tmp_path: Path) -> None:
    """No checkpoint: no state to restore, read from the oldest record."""
    with EmbeddedStore.open(tmp_path, SMALL) as store:
        assert (store.state, store.read_from) == (None, 0)


def test_restart_resumes_at_the_checkpoint(tmp_path: Path) -> None:
    """After a checkpoint, a reopened store returns its state and offset."""
    with EmbeddedStore.open(tmp_path, SMALL) as store:
        store.log.append_many([b"a", b"b", b"c"])
        store.checkpoint(2, b"state-after-2")
    with EmbeddedStore.open(tmp_path, SMALL) as store:
        assert (store.state, store.read_from) == (b"state-after-2", 2)
        assert store.log.read(store.read_from, 10) == [(2, b"c")]


def test_checkpoint_lets_retention_delete_processed_segments(tmp_path: Path) -> None:
    """Segments are deleted only after a checkpoint covers them."""
    with EmbeddedStore.open(tmp_path, SMALL) as store:
        store.log.append_many([b"x" * 100] * 200)
        assert store.log.start_offset == 0
        store.checkpoint(200, b"s")
        assert store.log.start_offset > 0


def test_checkpoint_ahead_of_the_log_skips_ahead(tmp_path: Path) -> None:
    """A checkpoint beyond the log's end (unsynced tail lost in an OS crash): new records get new offsets."""
    with LocalLog(tmp_path / "log") as log:
        log.append_many([b"a", b"b"])
    save_checkpoint(tmp_path, 5, b"s")
    with EmbeddedStore.open(tmp_path, SMALL) as store:
        assert store.read_from == 5
        assert store.log.append_many([b"new"]) == 6


def test_checkpoint_older_than_the_log_is_refused(tmp_path: Path) -> None:
    """A checkpoint below the log's first offset would skip records: StateError unless starting fresh."""
    with EmbeddedStore.open(tmp_path, SMALL) as store:
        store.log.append_many([b"x" * 100] * 200)
        store.checkpoint(200, b"s")
        start = store.log.start_offset
    save_checkpoint(tmp_path, 1, b"old")
    with pytest.raises(StateError, match="older than the log"):
        EmbeddedStore.open(tmp_path, SMALL)
    with EmbeddedStore.open(tmp_path, SMALL, start_fresh=True) as store:
        assert (store.state, store.read_from) == (None, start)


def test_corrupt_checkpoint_stops_the_start(tmp_path: Path) -> None:
    """A corrupt checkpoint refuses to open (and releases the log lock)."""
    (tmp_path / "checkpoint").write_bytes(b"\0" * 64)
    with pytest.raises(StateError, match="zero-filled"):
        EmbeddedStore.open(tmp_path, SMALL)
    EmbeddedStore.open(tmp_path, SMALL, start_fresh=True).close()


_PIPELINE = textwrap.dedent("""
    import random, sys, orjson
    from siem.log.embedded import EmbeddedStore
    from siem.log.local import LocalLogConfig
    store = EmbeddedStore.open(sys.argv[1], LocalLogConfig(segment_bytes=4096, retention_bytes=8192))
    state = orjson.loads(store.state) if store.state is not None else {"count": 0, "sum": 0}
    position = store.read_from
    print("start", position, flush=True)
    rng = random.Random()
    while True:
        n = store.log.end_offset
        store.log.append_many([b"%d:" % i + b"p" * 200 for i in range(n, n + rng.randint(1, 5))])  # intake
        for offset, payload in store.log.read(position, 50):                         # engine
            if int(payload.split(b":")[0]) != offset:
                raise SystemExit(f"record {offset} holds {payload!r}")
            state["count"] += 1
            state["sum"] += offset
            position = offset + 1
        if rng.random() < 0.2:
            store.checkpoint(position, orjson.dumps(state))
            print("checkpoint", position, flush=True)
""")


@pytest.mark.timeout(120)
def test_sigkill_during_the_pipeline_never_counts_twice_or_loses(tmp_path: Path) -> None:
    """intake -> log -> engine -> checkpoint, killed with SIGKILL 5 times at random moments: after the
    last restart the engine state has counted every record exactly once."""
    for _round in range(5):
        child = subprocess.Popen([sys.executable, "-c", _PIPELINE, str(tmp_path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=REPO, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)  # type: ignore[arg-type]
        reader.start()
        deadline = time.monotonic() + 20
        while not any(line.startswith("checkpoint") for line in lines) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join(5)
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        assert any(line.startswith("checkpoint") for line in lines)
    with EmbeddedStore.open(tmp_path, LocalLogConfig(segment_bytes=4096, retention_bytes=8192)) as store:
        assert store.state is not None
        state = orjson.loads(store.state)
        position = store.read_from
        while records := store.log.read(position, 1000):
            for offset, _ in records:
                state["count"] += 1
                state["sum"] += offset
            position = records[-1][0] + 1
        end = store.log.end_offset
        assert store.log.start_offset > 0  # retention ran during the test
    assert (state["count"], state["sum"]) == (end, end * (end - 1) // 2)
