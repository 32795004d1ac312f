"""FileTailer against real files: following, partial lines, limits, restart, state, gz, odd paths."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from siem import metrics
from siem.collect import RawRecord
from siem.collect.files import FileInputConfig, FileTailer, fingerprint

pytestmark = pytest.mark.timeout(60)


class Collect:
    """The real sink interface: an async callable; this one keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[RawRecord] = []

    async def __call__(self, record: RawRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[bytes]:
        return [r.data for r in self.records]


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def config(tmp: Path, *patterns: str, **kw: object) -> FileInputConfig:
    base: dict = {"poll_interval_ms": 20, "rotate_wait_ms": 300, "format": "raw"}
    base.update(kw)
    return FileInputConfig(paths=tuple(str(tmp / p) for p in patterns), **base)


@contextlib.asynccontextmanager
async def running(cfg: FileInputConfig, state: Path, name: str = "t", **kw: object) -> AsyncIterator[tuple]:
    sink = Collect()
    tailer = FileTailer(cfg, name, state, **kw)  # type: ignore[arg-type]
    task = asyncio.create_task(tailer.run(sink))
    try:
        yield sink, tailer
    finally:
        await tailer.stop()
        await task


async def settle(sink: Collect, n: int) -> None:
    """Wait for n records, then a few more polls to show nothing else arrives."""
    await until(lambda: len(sink.records) >= n, what=f"{n} records")
    await asyncio.sleep(0.15)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    state.mkdir()
    return logs, state


def test_reads_existing_lines_then_follows_appends(dirs: tuple[Path, Path]) -> None:
    """Lines present at start come first, appended lines follow, each with its path as origin."""
    logs, state = dirs
    append(logs / "app.log", b"one\ntwo\n")

    async def body() -> None:
        async with running(config(logs, "*.log"), state) as (sink, _):
            await until(lambda: len(sink.records) == 2)
            append(logs / "app.log", b"three\n")
            await settle(sink, 3)
        assert sink.lines == [b"one", b"two", b"three"]
        assert {(r.input, r.format, r.origin) for r in sink.records} == {("t", "raw", str(logs / "app.log"))}

    asyncio.run(body())


def test_partial_last_line_waits_for_its_newline(dirs: tuple[Path, Path]) -> None:
    """A line without LF is not delivered until the LF arrives, then whole."""
    logs, state = dirs
    append(logs / "app.log", b"done\nhalf")

    async def body() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 1)
            assert sink.lines == [b"done"]
            append(logs / "app.log", b" and rest\n")
            await settle(sink, 2)
        assert sink.lines == [b"done", b"half and rest"]

    asyncio.run(body())


def test_crlf_endings_and_empty_lines(dirs: tuple[Path, Path]) -> None:
    """CRLF lines lose the CR; empty lines are skipped."""
    logs, state = dirs
    append(logs / "app.log", b"a\r\n\r\n\nb\r\n")

    async def body() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 2)
        assert sink.lines == [b"a", b"b"]

    asyncio.run(body())


def test_long_line_is_truncated_and_counted(dirs: tuple[Path, Path]) -> None:
    """A line over max_line_bytes arrives cut to the limit and counts as oversized; the next is intact."""
    logs, state = dirs
    append(logs / "app.log", b"x" * 5000 + b"\nnext\n")
    before = metrics.value("siem_input_dropped_total", input="long", reason="oversized")

    async def body() -> None:
        async with running(config(logs, "app.log", max_line_bytes=100), state, name="long") as (sink, _):
            await settle(sink, 2)
        assert sink.lines == [b"x" * 100, b"next"]

    asyncio.run(body())
    assert metrics.value("siem_input_dropped_total", input="long", reason="oversized") == before + 1


def test_restart_resumes_exactly_where_it_stopped(dirs: tuple[Path, Path]) -> None:
    """Stop, append, restart: exactly the new lines, the pending partial line completed once."""
    logs, state = dirs
    append(logs / "app.log", b"".join(b"old %d\n" % i for i in range(100)) + b"par")

    async def first() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 100)
        assert len(sink.records) == 100

    async def second() -> list[bytes]:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 51)
        return sink.lines

    asyncio.run(first())
    append(logs / "app.log", b"tial\n" + b"".join(b"new %d\n" % i for i in range(50)))
    assert asyncio.run(second()) == [b"partial"] + [b"new %d" % i for i in range(50)]


def test_restart_of_a_file_shorter_than_the_fingerprint(dirs: tuple[Path, Path]) -> None:
    """A 3-byte file is resumed after a restart like any other (its fingerprint covers what exists)."""
    logs, state = dirs
    append(logs / "app.log", b"ab\n")

    async def run_once(n: int) -> list[bytes]:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, n)
        return sink.lines

    assert asyncio.run(run_once(1)) == [b"ab"]
    append(logs / "app.log", b"cd\n")
    assert asyncio.run(run_once(1)) == [b"cd"]


def test_inode_reused_by_other_content_starts_at_zero(dirs: tuple[Path, Path]) -> None:
    """A saved position for this device+inode but another fingerprint is not applied to the new file."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"brand new file\nsecond\n")
    st = path.stat()
    old = {"path": str(path), "dev": st.st_dev, "ino": st.st_ino, "gz": False, "fp_len": 14,
           "fp": fingerprint(b"previous file!"), "offset": 15, "size": 40, "mtime_ns": 0, "done": False,
           "retired_ms": 0}
    (state / "files-t.json").write_bytes(orjson.dumps({"version": 1, "files": [old]}))

    async def body() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 2)
        assert sink.lines == [b"brand new file", b"second"]

    asyncio.run(body())


def test_saved_position_with_matching_fingerprint_is_applied(dirs: tuple[Path, Path]) -> None:
    """The same saved entry with the file's real fingerprint resumes at its offset."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"brand new file\nsecond\n")
    st = path.stat()
    entry = {"path": str(path), "dev": st.st_dev, "ino": st.st_ino, "gz": False, "fp_len": 14,
             "fp": fingerprint(b"brand new file"), "offset": 15, "size": 15, "mtime_ns": 0, "done": False,
             "retired_ms": 0}
    (state / "files-t.json").write_bytes(orjson.dumps({"version": 1, "files": [entry]}))

    async def body() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 1)
        assert sink.lines == [b"second"]

    asyncio.run(body())


def test_corrupt_state_file_is_counted_and_reading_starts_over(dirs: tuple[Path, Path]) -> None:
    """A state file that is not JSON: counted as corrupt_state, the file is read from its start."""
    logs, state = dirs
    append(logs / "app.log", b"a\n")
    (state / "files-bad.json").write_bytes(b"\0\0\0\0")
    before = metrics.value("siem_input_errors_total", input="bad", reason="corrupt_state")

    async def body() -> None:
        async with running(config(logs, "app.log"), state, name="bad") as (sink, _):
            await settle(sink, 1)
        assert sink.lines == [b"a"]

    asyncio.run(body())
    assert metrics.value("siem_input_errors_total", input="bad", reason="corrupt_state") == before + 1


def test_manual_commit_mode_persists_only_what_was_committed(dirs: tuple[Path, Path]) -> None:
    """With autocommit off, a restart resumes at the last commit(positions()) - later lines come again."""
    logs, state = dirs
    append(logs / "app.log", b"a\nb\n")

    async def first() -> None:
        async with running(config(logs, "app.log"), state, autocommit=False) as (sink, tailer):
            await settle(sink, 2)
            tailer.commit(tailer.positions())
            append(logs / "app.log", b"c\n")
            await settle(sink, 3)

    async def second() -> list[bytes]:
        async with running(config(logs, "app.log"), state, autocommit=False) as (sink, _):
            await settle(sink, 1)
        return sink.lines

    asyncio.run(first())
    assert asyncio.run(second()) == [b"c"]


def test_truncate_in_place_starts_again_at_zero(dirs: tuple[Path, Path]) -> None:
    """After truncation to zero the new content is read from its first byte."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"first\nsecond\n")

    async def body() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 2)
            os.truncate(path, 0)
            await asyncio.sleep(0.1)
            append(path, b"after\n")
            await settle(sink, 3)
        assert sink.lines == [b"first", b"second", b"after"]

    asyncio.run(body())


def test_truncate_and_rewrite_longer_between_polls_is_detected(dirs: tuple[Path, Path]) -> None:
    """Content replaced by a longer one before the next poll: the changed first bytes restart it at 0."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"short\n")

    async def body() -> None:
        async with running(config(logs, "app.log", poll_interval_ms=200), state) as (sink, _):
            await settle(sink, 1)
            with open(path, "r+b") as f:  # same inode, new content longer than what we read
                f.truncate(0)
                f.write(b"replacement line\nmore\n")
            await settle(sink, 3)
        assert sink.lines == [b"short", b"replacement line", b"more"]

    asyncio.run(body())


def test_delete_and_recreate_reads_the_new_file(dirs: tuple[Path, Path]) -> None:
    """A deleted file is finished, a new file at the same path is read from its start."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"old\n")

    async def body() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 1)
            path.unlink()
            append(path, b"new\n")
            await settle(sink, 2)
        assert sink.lines == [b"old", b"new"]

    asyncio.run(body())


def test_symlink_is_followed_and_a_swap_reads_the_new_target(dirs: tuple[Path, Path]) -> None:
    """A symlinked path is read through; pointing it elsewhere starts the new target."""
    logs, state = dirs
    (logs / "a.txt").write_bytes(b"from a\n")
    (logs / "b.txt").write_bytes(b"from b\n")
    (logs / "app.log").symlink_to(logs / "a.txt")

    async def body() -> None:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, 1)
            (logs / "tmp.link").symlink_to(logs / "b.txt")
            os.replace(logs / "tmp.link", logs / "app.log")
            await settle(sink, 2)
        assert sink.lines == [b"from a", b"from b"]

    asyncio.run(body())


def test_start_at_end_skips_history_on_the_first_run_only(dirs: tuple[Path, Path]) -> None:
    """start_at = end: existing lines are skipped, appended lines and files appearing later are read."""
    logs, state = dirs
    append(logs / "a.log", b"history\n")

    async def body() -> None:
        async with running(config(logs, "*.log", start_at="end"), state) as (sink, tailer):
            await until(lambda: len(tailer.positions()["files"]) == 1, what="a.log tracked")
            append(logs / "a.log", b"live\n")
            append(logs / "b.log", b"new file\n")
            await settle(sink, 2)
        assert sorted(sink.lines) == [b"live", b"new file"]

    asyncio.run(body())


def test_start_at_end_skips_gz_history_too(dirs: tuple[Path, Path]) -> None:
    """start_at = end on a first run: a .gz present at start is history as well and is not read."""
    logs, state = dirs
    (logs / "app.log.1.gz").write_bytes(gzip.compress(b"old\n"))
    append(logs / "app.log", b"history\n")

    async def body() -> None:
        async with running(config(logs, "app.log*", start_at="end"), state) as (sink, tailer):
            await until(lambda: len(tailer.positions()["files"]) == 2, what="the .gz judged")
            append(logs / "app.log", b"live\n")
            await settle(sink, 1)
        assert sink.lines == [b"live"]

    asyncio.run(body())


def test_directory_matching_the_glob_is_counted_and_files_still_read(dirs: tuple[Path, Path]) -> None:
    """A directory named like a log is counted once as not_regular; the real file is read."""
    logs, state = dirs
    (logs / "dir.log").mkdir()
    append(logs / "app.log", b"x\n")
    before = metrics.value("siem_input_errors_total", input="nr", reason="not_regular")

    async def body() -> None:
        async with running(config(logs, "*.log"), state, name="nr") as (sink, _):
            await settle(sink, 1)
            await asyncio.sleep(0.1)
        assert sink.lines == [b"x"]

    asyncio.run(body())
    assert metrics.value("siem_input_errors_total", input="nr", reason="not_regular") == before + 1


def test_gz_backfill_is_read_once(dirs: tuple[Path, Path]) -> None:
    """A rotated .gz matched by the glob is read with the live file, and not again after a restart."""
    logs, state = dirs
    (logs / "app.log.1.gz").write_bytes(gzip.compress(b"".join(b"old %d\n" % i for i in range(1000))))
    append(logs / "app.log", b"live\n")

    async def run_once(n: int) -> list[bytes]:
        async with running(config(logs, "app.log*"), state) as (sink, _):
            await settle(sink, n)
            await asyncio.sleep(0.1)
        return sink.lines

    got = asyncio.run(run_once(1001))
    assert sorted(got) == sorted([b"old %d" % i for i in range(1000)] + [b"live"])
    append(logs / "app.log", b"later\n")
    assert asyncio.run(run_once(1)) == [b"later"]


def test_gz_of_content_already_tailed_is_not_read_again(dirs: tuple[Path, Path]) -> None:
    """rename + delaycompress + compress: the .gz holds what we tailed, so it yields nothing new."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"".join(b"line %d\n" % i for i in range(300)))

    async def body() -> None:
        async with running(config(logs, "app.log*"), state) as (sink, _):
            await settle(sink, 300)
            os.replace(path, logs / "app.log.1")
            append(path, b"fresh\n")
            await settle(sink, 301)
            await asyncio.sleep(0.4)  # past rotate_wait: app.log.1 is idle
            (logs / "app.log.2.gz").write_bytes(gzip.compress((logs / "app.log.1").read_bytes()))
            (logs / "app.log.1").unlink()
            await asyncio.sleep(0.3)  # two scans: the .gz settles and is judged
            append(path, b"end\n")
            await settle(sink, 302)
        assert sink.lines == [b"line %d" % i for i in range(300)] + [b"fresh", b"end"]

    asyncio.run(body())


def test_gz_bomb_is_refused_and_counted(dirs: tuple[Path, Path]) -> None:
    """A .gz expanding past the ratio cap stops with reason=bomb; the live file is still read."""
    logs, state = dirs
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    (logs / "app.log.9.gz").write_bytes(b"".join(co.compress(bytes(1 << 20)) for _ in range(256)) + co.flush())
    append(logs / "app.log", b"ok\n")
    before = metrics.value("siem_input_errors_total", input="bomb", reason="bomb")

    async def body() -> None:
        async with running(config(logs, "app.log*", max_gz_ratio=100.0), state, name="bomb") as (sink, _):
            await settle(sink, 1)
            await until(lambda: metrics.value("siem_input_errors_total", input="bomb", reason="bomb") > before)
        assert sink.lines == [b"ok"]

    asyncio.run(body())
    assert metrics.value("siem_input_errors_total", input="bomb", reason="bomb") == before + 1


def test_not_gzip_despite_the_name_is_counted(dirs: tuple[Path, Path]) -> None:
    """A .gz that is plain text counts bad_gzip once and delivers nothing from it."""
    logs, state = dirs
    (logs / "app.log.2.gz").write_bytes(b"plain text\n")
    append(logs / "app.log", b"ok\n")
    before = metrics.value("siem_input_errors_total", input="notgz", reason="bad_gzip")

    async def body() -> None:
        async with running(config(logs, "app.log*"), state, name="notgz") as (sink, _):
            await settle(sink, 1)
            await until(lambda: metrics.value("siem_input_errors_total", input="notgz", reason="bad_gzip") > before)
            await asyncio.sleep(0.1)  # more scans: it is not judged (or counted) again
        assert sink.lines == [b"ok"]

    asyncio.run(body())
    assert metrics.value("siem_input_errors_total", input="notgz", reason="bad_gzip") == before + 1


def test_metrics_count_events_and_bytes(dirs: tuple[Path, Path]) -> None:
    """EVENTS_RECEIVED and BYTES_RECEIVED count delivered lines (without their newline)."""
    logs, state = dirs
    append(logs / "app.log", b"abc\nde\n")
    ev = metrics.value("siem_events_received_total", input="m", format="raw")
    by = metrics.value("siem_received_bytes_total", input="m")

    async def body() -> None:
        async with running(config(logs, "app.log"), state, name="m") as (sink, _):
            await settle(sink, 2)

    asyncio.run(body())
    assert metrics.value("siem_events_received_total", input="m", format="raw") == ev + 2
    assert metrics.value("siem_received_bytes_total", input="m") == by + 5
    assert metrics.value("siem_input_last_event_timestamp_seconds", input="m") > 0


def test_rotation_while_stopped_is_caught_up_when_the_glob_matches_rotated_names(dirs: tuple[Path, Path]) -> None:
    """Stop; the file grows and is renamed; a new file appears; restart: the tail of the rotated file and
    the new file arrive, nothing twice."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"a\nb\n")

    async def run_once(n: int) -> list[bytes]:
        async with running(config(logs, "app.log*"), state) as (sink, _):
            await settle(sink, n)
        return sink.lines

    assert asyncio.run(run_once(2)) == [b"a", b"b"]
    append(path, b"c\n")
    os.replace(path, logs / "app.log.1")
    append(path, b"d\n")
    assert sorted(asyncio.run(run_once(2))) == [b"c", b"d"]


def test_rotation_while_stopped_is_caught_up_even_when_the_glob_matches_only_the_live_name(
        dirs: tuple[Path, Path]) -> None:
    """Glob app.log only: after a restart the file rotated to app.log.1 while we were stopped is found next
    to its old path and read to its end, then the new app.log."""
    logs, state = dirs
    path = logs / "app.log"
    append(path, b"a\nb\n")

    async def run_once(n: int) -> list[bytes]:
        async with running(config(logs, "app.log"), state) as (sink, _):
            await settle(sink, n)
        return sink.lines

    assert asyncio.run(run_once(2)) == [b"a", b"b"]
    append(path, b"c\n")
    os.replace(path, logs / "app.log.1")
    append(path, b"d\n")
    assert sorted(asyncio.run(run_once(2))) == [b"c", b"d"]


PERMISSION_CHILD = """
import asyncio, json, sys
from siem import metrics
from siem.collect.files import FileInputConfig, FileTailer

logs, state = sys.argv[1], sys.argv[2]
lines = []

async def sink(record):
    lines.append(record.data.decode())

def report():
    errors = metrics.value("siem_input_errors_total", input="perm", reason="permission")
    print(json.dumps({"lines": sorted(lines), "errors": errors}), flush=True)

async def main():
    cfg = FileInputConfig(paths=(logs + "/*.log",), format="raw", poll_interval_ms=20)
    tailer = FileTailer(cfg, "perm", state)
    task = asyncio.create_task(tailer.run(sink))
    while len(lines) < 1:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # several scans of the unreadable file
    report()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    while len(lines) < 2:
        await asyncio.sleep(0.02)
    report()
    await tailer.stop()
    await task

asyncio.run(main())
"""


def test_permission_denied_is_counted_once_and_retried(tmp_path: Path) -> None:
    """An unreadable file (the tailer running as an unprivileged user): counted once while it stays
    unreadable, read as soon as its mode allows."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.fail("running as root needs setpriv (util-linux) to drop privileges for this test")
    base = Path(tempfile.mkdtemp(prefix="siem-perm-"))
    try:
        base.chmod(0o777)
        logs, state = base / "logs", base / "state"
        for d in (logs, state):
            d.mkdir()
            d.chmod(0o777)
        (logs / "a.log").write_bytes(b"readable\n")
        (logs / "a.log").chmod(0o644)
        (logs / "b.log").write_bytes(b"locked\n")
        (logs / "b.log").chmod(0o000)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        child = subprocess.Popen([*prefix, sys.executable, "-c", PERMISSION_CHILD, str(logs), str(state)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert json.loads(child.stdout.readline()) == {"lines": ["readable"], "errors": 1.0}
            (logs / "b.log").chmod(0o644)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert json.loads(child.stdout.readline()) == {"lines": ["locked", "readable"], "errors": 1.0}
            assert child.wait(timeout=20) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_new_file_with_the_same_header_is_not_taken_for_a_copy(dirs: tuple[Path, Path]) -> None:
    """Two files sharing their first 300 bytes (a long header) but not what follows: the second is read
    from its start, not from the first one's offset."""
    logs, state = dirs
    header = b"#" + b"h" * 298 + b"\n"
    append(logs / "day1.log", header + b"".join(b"day1 %d\n" % i for i in range(5)))

    async def body() -> None:
        async with running(config(logs, "*.log"), state) as (sink, _):
            await settle(sink, 6)
            (logs / "day1.log").unlink()
            append(logs / "day2.log", header + b"".join(b"day2 line %d\n" % i for i in range(20)))
            await settle(sink, 27)
        assert sink.lines[6:] == [header[:-1]] + [b"day2 line %d" % i for i in range(20)]

    asyncio.run(body())


def test_unwritable_state_is_counted_and_tailing_goes_on(tmp_path: Path) -> None:
    """A state directory that cannot be written (here: missing): lines still flow, state_write is counted,
    and positions are written once the directory is back."""
    logs, state = tmp_path / "logs", tmp_path / "state-later"
    logs.mkdir()
    append(logs / "app.log", b"a\nb\n")
    before = metrics.value("siem_input_errors_total", input="nostate", reason="state_write")

    async def body() -> None:
        async with running(config(logs, "app.log"), state, name="nostate") as (sink, _):
            await settle(sink, 2)
            assert metrics.value("siem_input_errors_total", input="nostate", reason="state_write") > before
            state.mkdir()
            append(logs / "app.log", b"c\n")
            await until(lambda: (state / "files-nostate.json").exists(), what="the state file")
        assert sink.lines == [b"a", b"b", b"c"]

    asyncio.run(body())


def test_copy_found_while_still_empty_is_not_read_twice(dirs: tuple[Path, Path]) -> None:
    """copytruncate's copy seen by a scan before any byte was copied into it: once its content shows it
    is a copy of what we read, it continues at our offset instead of from its start."""
    logs, state = dirs
    path = logs / "app.log"
    content = b"".join(b"line %03d of the original file\n" % i for i in range(40))
    append(path, content)

    async def body() -> None:
        async with running(config(logs, "app.log*"), state) as (sink, _):
            await settle(sink, 40)
            (logs / "app.log.1").write_bytes(b"")
            await asyncio.sleep(0.1)  # scanned while empty
            (logs / "app.log.1").write_bytes(content + b"written just before the copy\n")
            os.truncate(path, 0)
            append(path, b"after the truncation\n")
            await settle(sink, 42)
        assert sink.lines[40:] in ([b"written just before the copy", b"after the truncation"],
                                   [b"after the truncation", b"written just before the copy"])
        assert len(sink.lines) == 42

    asyncio.run(body())


def test_cloudtrail_json_lines_are_a_files_input(dirs: tuple[Path, Path]) -> None:
    """CloudTrail records one per line (EventBridge, Kafka sinks): a files input with format cloudtrail;
    every line parses into a CloudTrail event."""
    from siem.parse import ParseContext, parse

    logs, state = dirs
    data = (Path(__file__).parent / "data" / "collect_cloudtrail" / "aws_docs_examples.jsonl").read_bytes()
    append(logs / "events.jsonl", data)

    async def body() -> list[RawRecord]:
        async with running(config(logs, "*.jsonl", format="cloudtrail"), state) as (sink, _):
            await settle(sink, 16)
        return sink.records

    records = asyncio.run(body())
    events = [parse(r.format, r.data, ParseContext(), r.input) for r in records]
    assert [e.get("error.message") for e in events] == [None] * 16
    assert [e["event.action"] for e in events] == [orjson.loads(x)["eventName"] for x in data.splitlines()]


def test_copy_of_a_file_still_being_read_is_not_read_twice(dirs: tuple[Path, Path]) -> None:
    """copytruncate racing the tailer: the copy (app.log.1) appears while app.log still holds lines we have
    not read. Those lines are read once, from app.log; when app.log is then truncated the copy is not read
    again from where we were when it appeared. A plain cp of a file being read adds nothing either."""
    logs, state = dirs
    log = logs / "app.log"
    append(log, b"".join(b"line %d\n" % i for i in range(100)))

    async def first() -> None:
        async with running(config(logs, "app.log*"), state) as (sink, _):
            await settle(sink, 100)

    async def second() -> list[bytes]:
        async with running(config(logs, "app.log*"), state) as (sink, _):
            await settle(sink, 50)  # lines 100-149 from app.log; app.log.1 is a copy of what app.log holds
            os.truncate(log, 0)
            append(log, b"".join(b"line %d\n" % i for i in range(150, 200)))
            await settle(sink, 100)
            shutil.copyfile(log, logs / "app.log.bak")  # a plain copy of a file being read
            await asyncio.sleep(0.3)
        return sink.lines

    asyncio.run(first())
    append(log, b"".join(b"line %d\n" % i for i in range(100, 150)))
    shutil.copyfile(log, logs / "app.log.1")  # made before the tailer (restarted) reads lines 100-149
    got = asyncio.run(second())
    assert sorted(got, key=lambda b: int(b.split()[1])) == [b"line %d" % i for i in range(100, 200)]
