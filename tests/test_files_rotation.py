"""FileTailer while a writer thread appends numbered lines and rotates the file (rename and copytruncate).

Every test checks the set of numbers received against the set written: nothing missing, nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from siem.collect import RawRecord
from siem.collect.files import FileInputConfig, FileTailer

pytestmark = pytest.mark.timeout(90)

TOTAL = 3000
ROTATE_EVERY = 700


class Collect:
    def __init__(self) -> None:
        self.records: list[RawRecord] = []

    async def __call__(self, record: RawRecord) -> None:
        self.records.append(record)


def numbers(sink: Collect) -> list[int]:
    return [int(r.data.split()[1]) for r in sink.records]


def line(i: int) -> bytes:
    return b"line %06d some payload to make the line a bit longer\n" % i


def run_with_writer(logs: Path, state: Path, pattern: str, writer: Callable[[Collect], None]) -> Collect:
    """Tail `pattern` while `writer` runs in a thread; return once every number arrived (or on timeout)."""
    cfg = FileInputConfig(paths=(str(logs / pattern),), format="raw", poll_interval_ms=20, rotate_wait_ms=500)
    sink = Collect()

    async def body() -> None:
        tailer = FileTailer(cfg, "rot", state)
        task = asyncio.create_task(tailer.run(sink))
        thread = threading.Thread(target=writer, args=(sink,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while (thread.is_alive() or len(set(numbers(sink))) < TOTAL) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # a few more polls: anything read twice would show now
        await tailer.stop()
        await task
        thread.join(5)

    asyncio.run(body())
    return sink


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    state.mkdir()
    return logs, state


def test_rename_rotation_while_writing_loses_and_repeats_nothing(dirs: tuple[Path, Path]) -> None:
    """rename + create, the writer still appending to the renamed file before it reopens: exactly once."""
    logs, state = dirs
    path = logs / "app.log"

    def writer(_: Collect) -> None:
        f = open(path, "ab", buffering=0)  # noqa: SIM115
        for i in range(TOTAL):
            if i and i % ROTATE_EVERY == 0:
                os.replace(path, logs / "app.log.1")  # replaces (deletes) the previous rotation
                f.write(line(i))  # the daemon has not reopened yet: this goes to the rotated file
                f.close()
                f = open(path, "ab", buffering=0)  # noqa: SIM115
                continue
            f.write(line(i))
            if i % 50 == 0:
                time.sleep(0.002)
        f.close()

    got = numbers(run_with_writer(logs, state, "app.log", writer))
    assert sorted(got) == list(range(TOTAL))


def test_rename_rotation_with_rotated_names_in_the_glob(dirs: tuple[Path, Path]) -> None:
    """The glob also matches app.log.1, app.log.2: rotated files are known by inode, never read twice."""
    logs, state = dirs
    path = logs / "app.log"

    def writer(_: Collect) -> None:
        f = open(path, "ab", buffering=0)  # noqa: SIM115
        for i in range(TOTAL):
            if i and i % ROTATE_EVERY == 0:
                if (logs / "app.log.1").exists():
                    os.replace(logs / "app.log.1", logs / "app.log.2")
                os.replace(path, logs / "app.log.1")
                f.close()
                f = open(path, "ab", buffering=0)  # noqa: SIM115
            f.write(line(i))
            if i % 50 == 0:
                time.sleep(0.002)
        f.close()

    got = numbers(run_with_writer(logs, state, "app.log*", writer))
    assert sorted(got) == list(range(TOTAL))


def test_copytruncate_while_writing_loses_nothing_when_the_tailer_keeps_up(dirs: tuple[Path, Path]) -> None:
    """copytruncate after the tailer caught up (the gap is then empty): exactly once."""
    logs, state = dirs
    path = logs / "app.log"

    def writer(sink: Collect) -> None:
        f = open(path, "ab", buffering=0)  # noqa: SIM115 - O_APPEND, as copytruncate requires of writers
        for i in range(TOTAL):
            if i and i % ROTATE_EVERY == 0:
                deadline = time.monotonic() + 20
                while len(sink.records) < i and time.monotonic() < deadline:
                    time.sleep(0.005)
                shutil.copyfile(path, logs / "app.log.1")
                os.truncate(path, 0)
            f.write(line(i))
            if i % 50 == 0:
                time.sleep(0.002)
        f.close()

    got = numbers(run_with_writer(logs, state, "app.log", writer))
    assert sorted(got) == list(range(TOTAL))


def test_copytruncate_gap_is_closed_when_the_glob_matches_the_copy(dirs: tuple[Path, Path]) -> None:
    """copytruncate without waiting for the tailer: the copy continues at our old offset, exactly once."""
    logs, state = dirs
    path = logs / "app.log"

    def writer(_: Collect) -> None:
        f = open(path, "ab", buffering=0)  # noqa: SIM115
        for i in range(TOTAL):
            if i and i % ROTATE_EVERY == 0:
                if (logs / "app.log.1").exists():
                    os.replace(logs / "app.log.1", logs / "app.log.2")
                shutil.copyfile(path, logs / "app.log.1")
                os.truncate(path, 0)
            f.write(line(i))
            if i % 50 == 0:
                time.sleep(0.002)
        f.close()

    got = numbers(run_with_writer(logs, state, "app.log*", writer))
    assert sorted(got) == list(range(TOTAL))
