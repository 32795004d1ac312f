"""CloudTrailCollector: the S3 layout on disk, remembered files, and every bad file of RELIABILITY.md 27-32."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from siem import metrics
from siem.collect import RawRecord
from siem.collect.cloudtrail import (
    CloudTrailCollector,
    CloudTrailConfig,
    config_from_toml,
    is_cloudtrail_file,
    load_file,
)

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data" / "collect_cloudtrail" / "aws_docs_examples.jsonl"
RECORDS = [orjson.loads(line) for line in DATA.read_bytes().splitlines()]
DAY = "AWSLogs/111122223333/CloudTrail/us-east-1/2022/11/10"


@functools.lru_cache(maxsize=2)
def zero_bomb(size: int) -> bytes:
    """A valid gzip of `size` zero bytes (size a multiple of 16 MiB), built from one compressed block
    repeated, so making a 2 GiB bomb costs milliseconds and about 2 MB."""
    chunk = 16 << 20
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(chunk)) + co.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, refers only to itself
    crc = 0
    zeros = bytes(chunk)
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * (size // chunk) + b"\x03\x00" + struct.pack("<II", crc, size & 0xFFFFFFFF)


def ct_file(records: list) -> bytes:
    return orjson.dumps({"Records": records})


def put(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class Collect:
    def __init__(self) -> None:
        self.records: list[RawRecord] = []

    async def __call__(self, record: RawRecord) -> None:
        self.records.append(record)


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def cfg(root: Path, **kw: object) -> CloudTrailConfig:
    return CloudTrailConfig(directory=str(root), poll_interval_ms=20, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(config: CloudTrailConfig, state: Path, name: str = "ct",
                  sink: Collect | None = None) -> AsyncIterator[tuple[Collect, CloudTrailCollector]]:
    sink = sink or Collect()
    collector = CloudTrailCollector(config, name, state)
    task = asyncio.create_task(collector.run(sink))
    try:
        yield sink, collector
    finally:
        await collector.stop()
        await task


async def settle(sink: Collect, n: int) -> None:
    await until(lambda: len(sink.records) >= n, what=f"{n} records")
    await asyncio.sleep(0.15)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    root, state = tmp_path / "trail", tmp_path / "state"
    root.mkdir()
    state.mkdir()
    return root, state


def errors(name: str, reason: str) -> float:
    return metrics.value("siem_input_errors_total", input=name, reason=reason)


# --- the layout and the records ----------------------------------------------------------------------


def test_reads_gz_and_json_files_one_record_each(dirs: tuple[Path, Path]) -> None:
    """Every record of a .json.gz and a .json becomes one RawRecord holding that record's JSON."""
    root, state = dirs
    gz = put(root, f"{DAY}/111122223333_CloudTrail_us-east-1_20221110T1620Z_a.json.gz",
             gzip.compress(ct_file(RECORDS[:10])))
    plain = put(root, f"{DAY}/111122223333_CloudTrail_us-east-1_20221110T1625Z_b.json", ct_file(RECORDS[10:]))

    async def body() -> None:
        async with running(cfg(root), state) as (sink, _):
            await settle(sink, 16)
        assert [orjson.loads(r.data) for r in sink.records] == RECORDS
        assert [r.origin for r in sink.records] == [str(gz)] * 10 + [str(plain)] * 6
        assert {(r.input, r.format) for r in sink.records} == {("ct", "cloudtrail")}

    asyncio.run(body())


def test_digest_insight_and_temporary_files_are_ignored() -> None:
    """Only event files count: digests, Insights, dot-files and other names are skipped."""
    assert [p for p in [
        f"{DAY}/x_CloudTrail_us-east-1_20221110T1620Z_a.json.gz",
        "AWSLogs/1/CloudTrail-Digest/us-east-1/2022/11/10/1_CloudTrail-Digest_us-east-1_t_us-east-1_x.json.gz",
        "AWSLogs/1/CloudTrail-Insight/us-east-1/2022/11/10/1_CloudTrail-Insight_us-east-1_x.json.gz",
        "elsewhere/1_CloudTrail-Digest_us-east-1_t.json.gz",
        f"{DAY}/.x.json.gz.7f3a",
        f"{DAY}/notes.txt",
        "odd/prefix/file.json",
    ] if is_cloudtrail_file(p)] == [f"{DAY}/x_CloudTrail_us-east-1_20221110T1620Z_a.json.gz", "odd/prefix/file.json"]


def test_digest_files_in_the_tree_yield_nothing(dirs: tuple[Path, Path]) -> None:
    """A digest next to the logs is not read (it would look like a file without Records)."""
    root, state = dirs
    put(root, "AWSLogs/1/CloudTrail-Digest/us-east-1/2022/11/10/1_CloudTrail-Digest_x.json.gz",
        gzip.compress(b'{"digestStartTime":"2022-11-10T16:00:00Z","logFiles":[]}'))
    put(root, f"{DAY}/a.json.gz", gzip.compress(ct_file(RECORDS[:1])))
    before = errors("dig", "no_records")

    async def body() -> None:
        async with running(cfg(root), state, name="dig") as (sink, _):
            await settle(sink, 1)
        assert len(sink.records) == 1

    asyncio.run(body())
    assert errors("dig", "no_records") == before


def test_done_files_are_not_read_again_after_a_restart(dirs: tuple[Path, Path]) -> None:
    """A restart reads only files that arrived since."""
    root, state = dirs
    put(root, f"{DAY}/a.json.gz", gzip.compress(ct_file(RECORDS[:3])))

    async def run_once(n: int) -> list[dict]:
        async with running(cfg(root), state) as (sink, _):
            await settle(sink, n)
        return [orjson.loads(r.data) for r in sink.records]

    assert asyncio.run(run_once(3)) == RECORDS[:3]
    put(root, f"{DAY}/b.json.gz", gzip.compress(ct_file(RECORDS[3:5])))
    assert asyncio.run(run_once(2)) == RECORDS[3:5]


def test_new_files_are_picked_up_while_running(dirs: tuple[Path, Path]) -> None:
    """A file synced into the tree while the collector runs is read."""
    root, state = dirs

    async def body() -> None:
        async with running(cfg(root), state) as (sink, _):
            await asyncio.sleep(0.1)
            put(root, f"{DAY}/late.json.gz", gzip.compress(ct_file(RECORDS[:2])))
            await settle(sink, 2)
        assert [orjson.loads(r.data) for r in sink.records] == RECORDS[:2]

    asyncio.run(body())


def test_a_changed_file_is_read_again(dirs: tuple[Path, Path]) -> None:
    """A done file that gets another size (re-downloaded, replaced) is read again in full."""
    root, state = dirs
    path = put(root, f"{DAY}/a.json", ct_file(RECORDS[:1]))

    async def body() -> None:
        async with running(cfg(root), state) as (sink, _):
            await settle(sink, 1)
            path.write_bytes(ct_file(RECORDS[:2]))
            await settle(sink, 3)
        assert [orjson.loads(r.data) for r in sink.records] == [RECORDS[0], RECORDS[0], RECORDS[1]]

    asyncio.run(body())


def test_stop_inside_a_file_resumes_at_the_next_record(dirs: tuple[Path, Path]) -> None:
    """Stopping after 5 of 16 records: the restart delivers exactly the other 11."""
    root, state = dirs
    put(root, f"{DAY}/a.json.gz", gzip.compress(ct_file(RECORDS)))

    class StopAfter(Collect):
        collector: CloudTrailCollector | None = None

        async def __call__(self, record: RawRecord) -> None:
            await super().__call__(record)
            if len(self.records) == 5 and self.collector is not None:
                asyncio.get_running_loop().create_task(self.collector.stop())
                await asyncio.sleep(0)  # let stop() run, as a real (queue-backed) sink would at some point

    async def first() -> list[bytes]:
        sink = StopAfter()
        collector = CloudTrailCollector(cfg(root), "ct", state)
        sink.collector = collector
        await asyncio.wait_for(collector.run(sink), 20)
        return [r.data for r in sink.records]

    async def second() -> list[bytes]:
        async with running(cfg(root), state) as (sink, _):
            await settle(sink, 11)
        return [r.data for r in sink.records]

    got = asyncio.run(first()) + asyncio.run(second())
    assert [orjson.loads(d) for d in got] == RECORDS


def test_manual_commit_mode_rereads_what_was_not_committed(dirs: tuple[Path, Path]) -> None:
    """autocommit off and nothing committed: a restart reads the file again (at-least-once)."""
    root, state = dirs
    put(root, f"{DAY}/a.json.gz", gzip.compress(ct_file(RECORDS[:2])))

    async def run_once() -> int:
        sink = Collect()
        collector = CloudTrailCollector(cfg(root), "ct", state, autocommit=False)
        task = asyncio.create_task(collector.run(sink))
        await settle(sink, 2)
        await collector.stop()
        await task
        return len(sink.records)

    assert (asyncio.run(run_once()), asyncio.run(run_once())) == (2, 2)


def test_a_hundred_thousand_records_in_one_file(dirs: tuple[Path, Path]) -> None:
    """100,000 records in one file are all delivered, in order."""
    root, state = dirs
    records = [{"eventID": str(i), "eventName": "GetObject", "eventTime": "2022-11-10T16:24:34Z"}
               for i in range(100_000)]
    put(root, f"{DAY}/big.json.gz", gzip.compress(ct_file(records), 1))

    async def body() -> None:
        async with running(cfg(root), state) as (sink, _):
            await settle(sink, 100_000)
        assert [orjson.loads(r.data)["eventID"] for r in sink.records] == [str(i) for i in range(100_000)]

    asyncio.run(body())


# --- bad files (RELIABILITY.md 27-32), pure core ------------------------------------------------------


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_gzip_bomb_of_2_gib_is_refused(tmp_path: Path) -> None:
    """2 GiB of zeros in 2 MB of gzip, at the default caps: refused as a bomb."""
    got = load_file(write(tmp_path, "b.json.gz", zero_bomb(2 << 30)), 256 << 20, 1000.0, 10**6)
    assert (got.records, got.problems) == (None, ["bomb"])


def test_gzip_bomb_stays_within_bounded_memory(tmp_path: Path) -> None:
    """Refusing the 2 GiB bomb at default caps peaks far below its size (measured in a child process)."""
    path = write(tmp_path, "b.json.gz", zero_bomb(2 << 30))
    code = ("import re; from siem.collect.cloudtrail import load_file; "
            f"got = load_file({path!r}, 256 << 20, 1000.0, 10**6); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
            "print(got.problems[0], hwm)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    reason, peak_kib = out.stdout.split()
    assert reason == "bomb" and int(peak_kib) < 300 * 1024


def test_absolute_cap_refuses_what_the_ratio_allows(tmp_path: Path) -> None:
    """A file whose output passes max_object_bytes is refused even at an ordinary ratio."""
    data = gzip.compress(ct_file(RECORDS * 50))
    got = load_file(write(tmp_path, "a.json.gz", data), 10_000, 1000.0, 10**6)
    assert (got.records, got.problems) == (None, ["bomb"])


@pytest.mark.parametrize(("name", "make", "problems", "n"), [
    ("truncated", lambda: gzip.compress(ct_file(RECORDS))[:-30], ["truncated_gzip"], None),
    ("bad_crc", lambda: (lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:])(gzip.compress(ct_file(RECORDS))),
     ["bad_gzip"], None),
    ("not_gzip", lambda: ct_file(RECORDS), ["bad_gzip"], None),
    ("multi_member", lambda: gzip.compress(b'{"Records": [') + gzip.compress(b'{"a": 1}, {"b": 2}]}'), [], 2),
    ("trailing_garbage", lambda: gzip.compress(ct_file(RECORDS[:3])) + b"GARBAGE", ["trailing_garbage"], 3),
    ("zero_bytes", lambda: b"", ["invalid_json"], None),
    ("cut_json", lambda: gzip.compress(b'{"Records": [{"a": 1}, {"b": 2}, {"c"'), ["invalid_json"], 2),
    ("invalid_json", lambda: gzip.compress(b'{"Records" [{"a": 1}]}'), ["invalid_json"], None),
    ("data_after_json", lambda: gzip.compress(b'{"Records": [{"a": 1}]} {"x": 1}'), ["invalid_json"], 1),
    ("invalid_utf8", lambda: gzip.compress(b'{"Records": [{"a": "\xff\xfe"}]}'), ["invalid_utf8"], 1),
    ("no_records", lambda: gzip.compress(b'{"records": []}'), ["no_records"], None),
    ("top_level_list", lambda: gzip.compress(b"[1, 2]"), ["no_records"], None),
    ("records_not_list", lambda: gzip.compress(b'{"Records": {"a": 1}}'), ["bad_records"], None),
    ("empty_list", lambda: gzip.compress(b'{"Records": []}'), [], 0),
    ("deep_nesting", lambda: gzip.compress(b'{"Records": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"),
     ["invalid_json"], None),
])
def test_bad_gz_files_are_named_problems(tmp_path: Path, name: str, make: Callable[[], bytes],
                                         problems: list[str], n: int | None) -> None:
    """Each damaged .json.gz gives its documented problem, and records only when the data is intact."""
    got = load_file(write(tmp_path, f"{name}.json.gz", make()), 256 << 20, 1000.0, 10**6)
    assert got.problems == problems
    assert (None if got.records is None else len(got.records)) == n


def test_plain_json_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    """A .json larger than max_object_bytes is refused as oversized."""
    got = load_file(write(tmp_path, "a.json", ct_file(RECORDS)), 1000, 1000.0, 10**6)
    assert (got.records, got.problems) == (None, ["oversized"])


def test_records_over_max_records_are_cut_and_counted(tmp_path: Path) -> None:
    """Only the first max_records are kept; the rest are reported as dropped."""
    got = load_file(write(tmp_path, "a.json", ct_file(RECORDS)), 1 << 20, 1000.0, 10)
    assert (len(got.records or []), got.problems, got.dropped) == (10, ["too_many_records"], 6)


def test_odd_json_values_are_kept_deterministically(tmp_path: Path) -> None:
    """Duplicate keys keep the last value, null and non-object records pass on, integers beyond 64 bits and
    lone surrogates are kept exactly."""
    raw = (b'{"Records": [{"eventID": "a", "eventID": "b"}, {"n": 123456789012345678901234567890},'
           b' null, "text", {"s": "\\ud800"}, {"deep": ' + b"[" * 500 + b"]" * 500 + b"}]}")
    got = load_file(write(tmp_path, "a.json", raw), 1 << 20, 1000.0, 100)
    assert got.problems == [] and got.records is not None
    assert got.records[:5] == [b'{"eventID":"b"}', b'{"n":123456789012345678901234567890}', b"null", b'"text"',
                               b'{"s":"\\ud800"}']
    assert got.records[5] == b'{"deep":' + b"[" * 500 + b"]" * 500 + b"}"


def test_first_of_duplicate_records_keys_is_read(tmp_path: Path) -> None:
    """A second Records key is ignored (deterministic, and never read twice)."""
    got = load_file(write(tmp_path, "a.json", b'{"Records": [1], "x": {"y": 2}, "Records": [2, 3]}'),
                    1 << 20, 1000.0, 100)
    assert (got.records, got.problems) == ([b"1"], [])


def test_decoding_a_large_file_stays_near_its_size(tmp_path: Path) -> None:
    """50,000 records (about 30 MB of JSON) are decoded one at a time: the peak stays a small multiple of
    the text, not the tenfold of decoding the whole document at once (measured in a child process)."""
    records = [{"eventID": str(i), "eventName": "GetObject", "requestParameters": {"bucketName": "b" * 400,
                "key": f"k/{i}"}, "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::1:x"}}
               for i in range(50_000)]
    path = write(tmp_path, "big.json.gz", gzip.compress(ct_file(records), 1))
    size = len(ct_file(records))
    del records
    code = ("import re; from siem.collect.cloudtrail import RecordReader; "
            f"r = RecordReader({path!r}, 256 << 20, 1000.0, 10**6); n = 0\n"
            "while b := r.next_batch(1000): n += len(b)\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); print(n, hwm)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    n, peak_kib = map(int, out.stdout.split())
    assert n == 50_000 and peak_kib * 1024 < 4 * size, (peak_kib, size)


# --- bad files in the running collector -----------------------------------------------------------------


def test_bad_files_are_counted_and_the_good_ones_still_read(dirs: tuple[Path, Path]) -> None:
    """A tree of broken files next to a good one: every problem counted once, the good file read,
    nothing raised out of run(), and the broken files not retried."""
    root, state = dirs
    put(root, f"{DAY}/1_bomb.json.gz", zero_bomb(64 << 20))
    put(root, f"{DAY}/2_trunc.json.gz", gzip.compress(ct_file(RECORDS))[:-30])
    put(root, f"{DAY}/3_notgz.json.gz", b"not gzip at all")
    put(root, f"{DAY}/4_invalid.json", b"{nope")
    put(root, f"{DAY}/5_norecords.json", b'{"foo": 1}')
    put(root, f"{DAY}/6_good.json.gz", gzip.compress(ct_file(RECORDS[:4])))
    reasons = ("bomb", "truncated_gzip", "bad_gzip", "invalid_json", "no_records")
    before = {r: errors("badtree", r) for r in reasons}

    async def body() -> None:
        async with running(cfg(root, max_object_bytes=16 << 20), state, name="badtree") as (sink, _):
            await settle(sink, 4)
            await asyncio.sleep(0.2)  # several more scans: nothing retried
        assert [orjson.loads(r.data) for r in sink.records] == RECORDS[:4]

    asyncio.run(body())
    assert {r: errors("badtree", r) - before[r] for r in reasons} == dict.fromkeys(reasons, 1)


def test_missing_directory_is_counted_and_watched_until_it_appears(dirs: tuple[Path, Path]) -> None:
    """A directory that does not exist yet: counted once, read once it appears."""
    root, state = dirs
    later = root / "later"
    before = errors("missing", "missing_directory")

    async def body() -> None:
        async with running(cfg(later), state, name="missing") as (sink, _):
            await until(lambda: errors("missing", "missing_directory") > before, what="the first scan")
            put(later, f"{DAY}/a.json", ct_file(RECORDS[:1]))
            await settle(sink, 1)
        assert len(sink.records) == 1

    asyncio.run(body())
    assert errors("missing", "missing_directory") == before + 1


# --- config -----------------------------------------------------------------------------------------


def test_config_defaults_and_errors() -> None:
    """directory is required and absolute; the caps have the documented defaults."""
    config, issues = config_from_toml({"type": "cloudtrail", "directory": "/var/lib/cloudtrail"}, "inputs.ct")
    assert issues == [] and config == CloudTrailConfig(directory="/var/lib/cloudtrail")
    assert (config.poll_interval_ms, config.max_object_bytes, config.max_ratio, config.max_records) == (
        5000, 256 << 20, 1000.0, 1_000_000)
    config, issues = config_from_toml({"directory": "rel", "max_ratio": "lots", "dirx": 1}, "inputs.ct")
    assert config is None
    assert sorted(i.message.split(":")[0] for i in issues) == [
        "inputs.ct.directory", "inputs.ct.dirx", "inputs.ct.max_ratio"]


def test_config_accepts_sizes_with_units() -> None:
    """max_object_bytes takes 64MiB and the like."""
    config, issues = config_from_toml({"directory": "/x", "max_object_bytes": "64MiB", "max_records": 500_000,
                                       "poll_interval": "30s"}, "inputs.ct")
    assert issues == [] and config == CloudTrailConfig(directory="/x", poll_interval_ms=30_000,
                                                       max_object_bytes=64 << 20, max_records=500_000)


def test_state_file_is_named_after_the_input(dirs: tuple[Path, Path]) -> None:
    """The state file is named after the input and lives in the given state directory."""
    root, state = dirs
    put(root, f"{DAY}/a.json", ct_file(RECORDS[:1]))

    async def body() -> None:
        async with running(cfg(root), state, name="odd/name") as (sink, _):
            await settle(sink, 1)

    asyncio.run(body())
    # the snapshot and the journal of commits since (the snapshot appears once the journal is folded)
    assert os.listdir(state) and set(os.listdir(state)) <= {"cloudtrail-odd_name.json",
                                                            "cloudtrail-odd_name.json.journal"}


def test_records_parse_as_cloudtrail_events(dirs: tuple[Path, Path]) -> None:
    """What the collector emits is what the cloudtrail parser reads: one record, ECS fields out."""
    from siem.parse import ParseContext, parse

    root, state = dirs
    put(root, f"{DAY}/a.json.gz", gzip.compress(ct_file(RECORDS[:1])))

    async def body() -> RawRecord:
        async with running(cfg(root), state) as (sink, _):
            await settle(sink, 1)
        return sink.records[0]

    event = parse("cloudtrail", asyncio.run(body()).data, ParseContext(), "ct")
    assert "error.message" not in event
    assert (event["event.action"], event["event.provider"], event["cloud.account.id"]) == (
        RECORDS[0]["eventName"], RECORDS[0]["eventSource"], RECORDS[0]["userIdentity"]["accountId"])
