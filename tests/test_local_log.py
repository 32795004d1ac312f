"""LocalLog, checkpoints and the event codec: real files, real fsync, real subprocesses killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from siem import metrics
from siem.errors import InputError, StateError
from siem.log import checkpoint as ckpt
from siem.log.checkpoint import load_checkpoint, save_checkpoint
from siem.log.codec import decode_events, encode_events
from siem.log.local import HEADER, LocalLog, config_from_toml, frame, segment_name

REPO = Path(__file__).resolve().parent.parent


def payloads(start: int, n: int, size: int = 40) -> list[bytes]:
    return [f"record-{i:08d}-".encode().ljust(size, b"x") for i in range(start, start + n)]


def corrupt_count() -> float:
    return metrics.value("siem_log_corrupt_records_total")


def segment_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


# --- appending and reading ---------------------------------------------------------------------------
def test_append_returns_offset_after_last_record(tmp_path: Path) -> None:
    """append_many returns the offset after its last record; offsets count records from 0."""
    with LocalLog(tmp_path) as log:
        assert log.append_many(payloads(0, 3)) == 3
        assert log.append_many(payloads(3, 2)) == 5
        assert log.end_offset == 5


def test_read_returns_records_with_their_offsets(tmp_path: Path) -> None:
    """read gives (offset, payload) pairs in order, starting at the requested offset."""
    with LocalLog(tmp_path) as log:
        log.append_many(payloads(0, 10))
        assert log.read(4, 3) == list(zip(range(4, 7), payloads(4, 3)))


def test_records_span_segment_rotation(tmp_path: Path) -> None:
    """Rotation by size creates segments named by their first offset; offsets continue across them."""
    with LocalLog(tmp_path, segment_bytes=1024) as log:
        for start in range(0, 500, 50):
            log.append_many(payloads(start, 50))
        assert len(log.segments) > 10
        assert [p.name for p in segment_files(tmp_path)] == [segment_name(b) for b in log.segments]
        assert all(p.stat().st_size <= 1024 for p in segment_files(tmp_path))
        assert log.read(0, 1000) == list(zip(range(500), payloads(0, 500)))


def test_random_access_reads_match_sequential(tmp_path: Path) -> None:
    """Reading from any offset gives the same records as a full sequential read."""
    with LocalLog(tmp_path, segment_bytes=64 * 1024) as log:
        log.append_many(payloads(0, 5000))
        rng = random.Random(7)
        for _ in range(50):
            start = rng.randrange(5000)
            n = rng.randrange(1, 300)
            assert log.read(start, n) == list(zip(range(start, min(start + n, 5000)), payloads(start, n)))[:n]


def test_read_respects_max_bytes(tmp_path: Path) -> None:
    """max_bytes stops a read after the record that reaches it (always at least one record)."""
    with LocalLog(tmp_path) as log:
        log.append_many(payloads(0, 10, size=100))
        assert [o for o, _ in log.read(0, 100, max_bytes=250)] == [0, 1, 2]


def test_reopen_after_close_continues_offsets(tmp_path: Path) -> None:
    """A closed log reopens with every record and appends after the last offset."""
    with LocalLog(tmp_path, segment_bytes=2048) as log:
        log.append_many(payloads(0, 200))
    with LocalLog(tmp_path, segment_bytes=2048) as log:
        assert log.recovery.torn_at is None
        assert log.append_many(payloads(200, 5)) == 205
        assert log.read(0, 1000) == list(zip(range(205), payloads(0, 205)))


def test_oversized_record_is_refused_and_nothing_written(tmp_path: Path) -> None:
    """A record above max_record_bytes raises InputError naming it; the batch is not written at all."""
    with LocalLog(tmp_path, max_record_bytes=2048) as log:
        with pytest.raises(InputError, match="record 1 of the batch"):
            log.append_many([b"a", b"b" * 4096, b"c"])
        assert log.end_offset == 0
        assert segment_files(tmp_path)[0].stat().st_size == 0


def test_lowering_max_record_bytes_keeps_existing_records(tmp_path: Path) -> None:
    """Records larger than a newly lowered max_record_bytes are still read, not taken for corruption."""
    with LocalLog(tmp_path) as log:
        log.append_many([b"x" * 5000, b"y"])
    with LocalLog(tmp_path, max_record_bytes=1024) as log:
        assert (log.recovery.torn_at, log.read(0, 10)) == (None, [(0, b"x" * 5000), (1, b"y")])


def test_empty_payloads_are_records(tmp_path: Path) -> None:
    """An empty payload is a valid record, distinct from zero fill."""
    with LocalLog(tmp_path) as log:
        log.append_many([b"", b"x"])
    with LocalLog(tmp_path) as log:
        assert log.read(0, 10) == [(0, b""), (1, b"x")]


# --- fsync policy ------------------------------------------------------------------------------------
def test_durable_offset_follows_fsync_always(tmp_path: Path) -> None:
    """With fsync on every append, durable_offset equals end_offset after each append."""
    with LocalLog(tmp_path, fsync_interval_ms=0) as log:
        log.append_many(payloads(0, 3))
        assert log.durable_offset == 3


def test_durable_offset_lags_with_interval_until_sync(tmp_path: Path) -> None:
    """With an interval policy, durable_offset advances only when a sync happens."""
    with LocalLog(tmp_path, fsync_interval_ms=3_600_000) as log:
        log.append_many(payloads(0, 3))
        assert (log.durable_offset, log.maybe_sync()) == (0, False)
        log.sync()
        assert log.durable_offset == 3


# --- crash recovery ----------------------------------------------------------------------------------
def _write_three(tmp_path: Path) -> Path:
    with LocalLog(tmp_path) as log:
        log.append_many(payloads(0, 3))
    return segment_files(tmp_path)[-1]


def test_truncated_last_record_is_cut_and_counted(tmp_path: Path) -> None:
    """A last record cut mid-payload is truncated away on open and counted once."""
    seg = _write_three(tmp_path)
    size = seg.stat().st_size
    os.truncate(seg, size - 10)
    before = corrupt_count()
    with LocalLog(tmp_path) as log:
        assert (log.end_offset, corrupt_count() - before) == (2, 1)
        assert log.read(0, 10) == list(zip(range(2), payloads(0, 2)))
        assert log.append_many([b"after"]) == 3
    assert seg.stat().st_size == 2 * len(frame(payloads(0, 1)[0])) + len(frame(b"after"))


def test_flipped_byte_in_last_record_is_cut_and_kept_aside(tmp_path: Path) -> None:
    """A checksum mismatch in the last record truncates it; the cut bytes are kept in a .bad file."""
    seg = _write_three(tmp_path)
    raw = bytearray(seg.read_bytes())
    raw[-5] ^= 0x01
    seg.write_bytes(bytes(raw))
    before = corrupt_count()
    with LocalLog(tmp_path) as log:
        assert (log.end_offset, corrupt_count() - before) == (2, 1)
        assert log.recovery.quarantine is not None
        assert log.recovery.quarantine.read_bytes() == bytes(raw[log.recovery.torn_at:])


def test_zero_filled_tail_is_cut_without_quarantine(tmp_path: Path) -> None:
    """Zeros after the last record (a filesystem extending the file before the data landed) are cut."""
    seg = _write_three(tmp_path)
    good = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)
    with LocalLog(tmp_path) as log:
        assert (log.end_offset, log.recovery.truncated_bytes, log.recovery.quarantine) == (3, 4096, None)
    assert seg.stat().st_size == good


def test_torn_header_is_cut(tmp_path: Path) -> None:
    """A record with only part of its 8-byte header is cut."""
    seg = _write_three(tmp_path)
    with open(seg, "ab") as f:
        f.write(frame(b"next")[: HEADER.size - 3])
    with LocalLog(tmp_path) as log:
        assert log.end_offset == 3


def test_corruption_mid_active_segment_keeps_valid_prefix(tmp_path: Path) -> None:
    """A bad record in the middle of the last segment cuts there: the prefix stays, the rest is kept aside."""
    with LocalLog(tmp_path) as log:
        log.append_many(payloads(0, 10))
    seg = segment_files(tmp_path)[-1]
    raw = bytearray(seg.read_bytes())
    flen = len(frame(payloads(0, 1)[0]))
    raw[4 * flen + HEADER.size + 3] ^= 0xFF  # inside record 4's payload
    seg.write_bytes(bytes(raw))
    with LocalLog(tmp_path) as log:
        assert log.read(0, 100) == list(zip(range(4), payloads(0, 4)))
        assert log.recovery.quarantine is not None
        assert log.recovery.quarantine.read_bytes() == bytes(raw[4 * flen:])


def test_corruption_in_sealed_segment_skips_to_next_segment(tmp_path: Path) -> None:
    """A bad record in an older segment: the valid prefix is read, the rest of that segment is skipped
    and the exact number of lost records is counted."""
    with LocalLog(tmp_path, segment_bytes=1024) as log:
        log.append_many(payloads(0, 100))
        bases = log.segments
    first = tmp_path / segment_name(bases[0])
    raw = bytearray(first.read_bytes())
    flen = len(frame(payloads(0, 1)[0]))
    raw[5 * flen + HEADER.size] ^= 0xFF  # record 5's payload
    first.write_bytes(bytes(raw))
    before = corrupt_count()
    with LocalLog(tmp_path, segment_bytes=1024) as log:
        got = log.read(0, 1000)
        expected = list(range(5)) + list(range(bases[1], 100))
        assert [o for o, _ in got] == expected
        assert corrupt_count() - before == bases[1] - 5
        log.read(0, 1000)  # a second read does not count the same loss again
        assert corrupt_count() - before == bases[1] - 5


def test_truncated_sealed_segment_counts_missing_records(tmp_path: Path) -> None:
    """A sealed segment cut at a record boundary loses its tail: reading skips and counts it."""
    with LocalLog(tmp_path, segment_bytes=1024) as log:
        log.append_many(payloads(0, 100))
        bases = log.segments
    first = tmp_path / segment_name(bases[0])
    flen = len(frame(payloads(0, 1)[0]))
    os.truncate(first, 3 * flen)
    before = corrupt_count()
    with LocalLog(tmp_path, segment_bytes=1024) as log:
        assert [o for o, _ in log.read(0, 1000)] == list(range(3)) + list(range(bases[1], 100))
        assert corrupt_count() - before == bases[1] - 3


def test_advance_to_skips_offsets_seen_by_the_engine(tmp_path: Path) -> None:
    """A checkpoint ahead of the log end makes new records start at the checkpoint offset."""
    with LocalLog(tmp_path) as log:
        log.append_many(payloads(0, 5))
        log.advance_to(9)
        assert log.append_many([b"new"]) == 10
        assert log.read(9, 10) == [(9, b"new")]
    with LocalLog(tmp_path) as log:
        assert log.end_offset == 10
        assert [o for o, _ in log.read(0, 100)] == [0, 1, 2, 3, 4, 9]


# --- retention ---------------------------------------------------------------------------------------
def test_retention_never_deletes_uncommitted_segments(tmp_path: Path) -> None:
    """Above the size limit, segments the engine has not committed are all kept."""
    with LocalLog(tmp_path, segment_bytes=1024, retention_bytes=2048) as log:
        log.append_many(payloads(0, 200))
        assert log.start_offset == 0
        assert log.read(0, 1000) == list(zip(range(200), payloads(0, 200)))


def test_retention_deletes_whole_committed_segments_over_the_limit(tmp_path: Path) -> None:
    """After a commit, the oldest fully committed segments go until the log fits the limit."""
    with LocalLog(tmp_path, segment_bytes=1024, retention_bytes=3000) as log:
        log.append_many(payloads(0, 200))
        log.commit(200)
        assert log.size_bytes() <= 3000
        assert log.start_offset > 0
        assert log.read(0, 1000) == list(zip(range(log.start_offset, 200), payloads(log.start_offset, 200)))


def test_retention_stops_at_committed_offset(tmp_path: Path) -> None:
    """A segment holding any record at or above the committed offset is kept, even over the limit."""
    with LocalLog(tmp_path, segment_bytes=1024, retention_bytes=1) as log:
        log.append_many(payloads(0, 200))
        bases = log.segments
        log.commit(bases[3] + 1)
        assert log.segments == bases[3:]


def test_lag_metric_is_appended_minus_committed(tmp_path: Path) -> None:
    """siem_log_lag_records is end offset minus committed offset."""
    with LocalLog(tmp_path) as log:
        log.append_many(payloads(0, 10))
        log.commit(4)
        assert metrics.value("siem_log_lag_records") == 6


# --- locking -----------------------------------------------------------------------------------------
def test_second_log_on_same_directory_is_refused(tmp_path: Path) -> None:
    """Two LocalLogs on one directory: the second raises StateError saying it is in use."""
    with LocalLog(tmp_path):
        with pytest.raises(StateError, match="in use by another siem process"):
            LocalLog(tmp_path)
    LocalLog(tmp_path).close()  # released on close


@pytest.mark.timeout(30)
def test_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    """A log held by another process is refused with that process's pid in the message."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from siem.log.local import LocalLog
            log = LocalLog({str(tmp_path)!r})
            print("ready", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with pytest.raises(StateError, match=f"pid {child.pid}"):
            LocalLog(tmp_path)
    finally:
        child.kill()
        child.wait()
    LocalLog(tmp_path).close()  # the kernel released the dead process's lock


# --- kill -9 -----------------------------------------------------------------------------------------
_APPENDER = textwrap.dedent("""
    import sys
    from siem.log.local import LocalLog
    log = LocalLog(sys.argv[1], segment_bytes=8192, fsync_interval_ms=0)
    n = log.end_offset
    print("start", n, flush=True)
    while True:
        batch = [b"rec-%d-" % i + b"z" * (i % 97) for i in range(n, n + 1 + n % 3)]
        n = log.append_many(batch)
        print(n, flush=True)
""")


@pytest.mark.timeout(120)
def test_sigkill_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    """A writer killed with SIGKILL at random moments (5 times): every offset it reported as appended is
    readable after reopening, in order, with the right content and no corruption."""
    rng = random.Random()
    acknowledged = 0
    for _round in range(5):
        child = subprocess.Popen([sys.executable, "-c", _APPENDER, str(tmp_path)], stdout=subprocess.PIPE,
                                 cwd=REPO, text=True)
        assert child.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)  # type: ignore[arg-type]
        reader.start()
        deadline = time.monotonic() + 20
        while len(lines) < 2 and time.monotonic() < deadline:  # "start", then a first acknowledged append
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join(5)
        assert lines and lines[0].startswith("start")
        assert int(lines[0].split()[1]) >= acknowledged  # the restarted writer continues after the log end
        reported = [int(l) for l in lines[1:] if l.strip().isdigit()]
        assert reported, "the child appended nothing before being killed"
        acknowledged = max(acknowledged, reported[-1])
        with LocalLog(tmp_path, segment_bytes=8192) as log:
            records = log.read(0, 10**7)
            assert log.end_offset >= acknowledged
        assert [o for o, _ in records] == list(range(len(records)))
        assert all(p == b"rec-%d-" % o + b"z" * (o % 97) for o, p in records)
    assert acknowledged > 0


# --- checkpoints -------------------------------------------------------------------------------------
def test_checkpoint_round_trips(tmp_path: Path) -> None:
    """save then load gives back the offset and the state bytes."""
    save_checkpoint(tmp_path, 1234, b"\x00state\xff" * 100)
    assert load_checkpoint(tmp_path) == (1234, b"\x00state\xff" * 100)


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    """No checkpoint file means a first start: None."""
    assert load_checkpoint(tmp_path) is None


def test_leftover_temp_file_does_not_replace_checkpoint(tmp_path: Path) -> None:
    """A crash before the rename leaves only a temp file: the previous checkpoint is still loaded."""
    save_checkpoint(tmp_path, 5, b"old")
    (tmp_path / ".checkpoint.tmp").write_bytes(ckpt.encode_checkpoint(9, b"new")[:7])
    assert load_checkpoint(tmp_path) == (5, b"old")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: b"\0" * len(raw), "zero-filled"),
        (lambda raw: raw[: len(raw) // 2], "truncated"),
        (lambda raw: raw[:10], "truncated"),
        (lambda raw: raw[:40] + bytes([raw[40] ^ 0x10]) + raw[41:], "checksum"),
        (lambda raw: raw[:15] + bytes([raw[15] ^ 0x01]) + raw[16:], "checksum"),
        (lambda raw: raw[:8] + (99).to_bytes(4, "big") + raw[12:], "format version 99"),
        (lambda raw: b"", "truncated"),
    ],
    ids=["zero-filled", "half", "header-cut", "state-byte", "offset-byte", "version", "empty"],
)
def test_damaged_checkpoint_is_refused(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    """A zero-filled, truncated, altered or other-version checkpoint raises StateError saying which."""
    save_checkpoint(tmp_path, 77, b"window-state" * 10)
    path = tmp_path / "checkpoint"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StateError, match=message):
        load_checkpoint(tmp_path)


def test_damaged_checkpoint_with_start_fresh_is_moved_aside(tmp_path: Path) -> None:
    """start_fresh discards a bad checkpoint: None, the file kept as checkpoint.bad-*, counted."""
    save_checkpoint(tmp_path, 77, b"s")
    (tmp_path / "checkpoint").write_bytes(b"garbage")
    before = metrics.value("siem_checkpoint_corrupt_total")
    assert load_checkpoint(tmp_path, start_fresh=True) is None
    assert [p.read_bytes() for p in tmp_path.glob("checkpoint.bad-*")] == [b"garbage"]
    assert metrics.value("siem_checkpoint_corrupt_total") - before == 1


def test_forked_checkpoint_writes_the_state_of_the_fork_instant(tmp_path: Path) -> None:
    """The child serialises the state as it was at fork(); what the parent changes afterwards is not in it,
    and the file appears only when finish() publishes it."""
    save_checkpoint(tmp_path, 1, b"old")
    state = [b"at-fork"]
    writer = ckpt.ForkedCheckpoint(tmp_path, 42, lambda: (time.sleep(0.3), state[0])[1])
    state[0] = b"changed-after-fork"
    assert load_checkpoint(tmp_path) == (1, b"old")  # not published yet
    writer.finish()
    assert load_checkpoint(tmp_path) == (42, b"at-fork")
    assert not list(tmp_path.glob(".checkpoint.*.tmp"))


def test_failed_forked_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    """A writer that fails (here: the state cannot be made) reports it; the old checkpoint stays."""
    save_checkpoint(tmp_path, 7, b"old")

    def broken() -> bytes:
        raise MemoryError("no memory for the snapshot")

    writer = ckpt.ForkedCheckpoint(tmp_path, 9, broken)
    with pytest.raises(StateError, match=r"checkpoint writer process \d+ exited with status 1"):
        writer.finish()
    assert load_checkpoint(tmp_path) == (7, b"old")
    assert not list(tmp_path.glob(".checkpoint.*.tmp"))


def test_abandoned_forked_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    """When the log cannot be made durable up to the offset, the daemon abandons the writer: the child is
    reaped, its file removed, the previous checkpoint kept."""
    save_checkpoint(tmp_path, 7, b"old")
    writer = ckpt.ForkedCheckpoint(tmp_path, 9, lambda: b"new")
    writer.abandon()
    with pytest.raises(ChildProcessError):
        os.waitpid(writer.pid, os.WNOHANG)  # reaped: no zombie left
    assert load_checkpoint(tmp_path) == (7, b"old")
    assert not list(tmp_path.glob(".checkpoint.*.tmp"))


def test_forked_writer_does_not_hold_the_state_lock(tmp_path: Path) -> None:
    """The child closes inherited descriptors: once the daemon's lock is closed (or the daemon is dead),
    a new daemon can lock the directory while the writer still runs."""
    from siem.log.local import DirLock  # noqa: PLC0415

    lock = DirLock(tmp_path)
    writer = ckpt.ForkedCheckpoint(tmp_path, 3, lambda: (time.sleep(2.0), b"s")[1])
    lock.close()
    deadline = time.monotonic() + 1.0  # the child drops its descriptors first thing, then makes the state for 2 s
    while True:
        try:
            DirLock(tmp_path).close()
            break
        except StateError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    writer.finish()


def test_stale_writer_temporaries_are_removed(tmp_path: Path) -> None:
    """A writer killed with its daemon leaves .checkpoint.<pid>-<offset>.tmp; the next start removes it."""
    save_checkpoint(tmp_path, 5, b"s")
    (tmp_path / ".checkpoint.123-9.tmp").write_bytes(b"partial")
    ckpt.remove_stale_temporaries(tmp_path)
    assert not list(tmp_path.glob(".checkpoint.*.tmp"))
    assert load_checkpoint(tmp_path) == (5, b"s")


_SAVER = textwrap.dedent("""
    import sys
    from siem.log.checkpoint import save_checkpoint
    i = 0
    while True:
        i += 1
        save_checkpoint(sys.argv[1], i, (b"%d;" % i) * (20000 + i % 5000))
        print(i, flush=True)
""")


@pytest.mark.timeout(60)
def test_checkpoint_survives_sigkill_during_save(tmp_path: Path) -> None:
    """A process killed while saving checkpoints in a loop leaves a valid one, at least the last reported."""
    for _round in range(3):
        child = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)], stdout=subprocess.PIPE,
                                 cwd=REPO, text=True)
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.strip().isdigit()
        time.sleep(random.uniform(0.05, 0.3))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        last = max(int(x) for x in [first, *rest.split()] if x.strip().isdigit())
        got = load_checkpoint(tmp_path)
        assert got is not None
        assert got.offset >= last
        assert got.state == (b"%d;" % got.offset) * (20000 + got.offset % 5000)


# --- event codec -------------------------------------------------------------------------------------
def test_events_round_trip_through_the_log(tmp_path: Path) -> None:
    """Events encoded with encode_events come back equal from decode_events with their offsets."""
    events = [{"@timestamp": 1700000000000 + i, "event.dataset": "sshd", "source.ip": "10.0.0.1",
               "message": "héllo \u202e"} for i in range(5)]
    with LocalLog(tmp_path) as log:
        log.append_many(encode_events(events))
        assert decode_events(log.read(0, 10)) == list(enumerate(events))


def test_unencodable_values_become_strings() -> None:
    """Ints beyond 64 bits, bytes and lone surrogates are encoded as strings instead of failing."""
    [raw] = encode_events([{"n": 2**70, "b": b"\xff", "s": "a\ud800b"}])
    assert decode_events([(0, raw)]) == [(0, {"n": str(2**70), "b": "\ufffd", "s": "a?b"})]


def test_undecodable_records_are_skipped_and_counted() -> None:
    """A record that is not a JSON object is skipped and counted; the others are kept."""
    before = metrics.value("siem_log_undecodable_records_total")
    got = decode_events([(0, b'{"a":1}'), (1, b"\xff\xfe"), (2, b"[1,2]"), (3, b'{"b":2}')])
    assert got == [(0, {"a": 1}), (3, {"b": 2})]
    assert metrics.value("siem_log_undecodable_records_total") - before == 2


# --- configuration -----------------------------------------------------------------------------------
def test_config_defaults() -> None:
    """An empty [log] table gives fsync on every append, 64 MiB segments and 1 GiB retention."""
    cfg, issues = config_from_toml({}, "log")
    assert (issues, cfg is not None and (cfg.fsync, cfg.segment_bytes, cfg.retention_bytes)) == (
        [], ("always", 64 << 20, 1 << 30))


def test_config_errors_name_their_path() -> None:
    """Unknown keys, wrong types and bad values are all reported with their dotted path."""
    cfg, issues = config_from_toml({"fsynk": 1, "segment_bytes": "big", "fsync": "sometimes",
                                    "fsync_interval": "soon"}, "log")
    assert cfg is None
    assert sorted(i.message.split(":")[0] for i in issues) == [
        "log.fsync", "log.fsync_interval", "log.fsynk", "log.segment_bytes"]


def test_config_builds_interval_log(tmp_path: Path) -> None:
    """fsync = "interval" builds a LocalLog with that interval in ms."""
    cfg, _ = config_from_toml({"fsync": "interval", "fsync_interval": "250ms"}, "log")
    assert cfg is not None
    with cfg.build(tmp_path / "log") as log:
        assert log.fsync_interval_ms == 250


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    from siem.errors import StateError
    from siem.log.local import LocalLog
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))
    log = LocalLog(sys.argv[1], segment_bytes=8192)
    n = 0
    while True:
        try:
            batch = [b"r%d-" % i + b"y" * 60 for i in range(n, n + 7)]
            if sys.argv[2] == "rotating" and n >= 35:  # ~3 KiB written: the big record needs a new segment
                batch[-1] = b"r%d-" % (n + 6) + b"y" * 6000
            n = log.append_many(batch)
        except StateError as exc:
            print("refused", n, log.end_offset, exc, flush=True)
            break
    log.close()
""")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["same-segment", "rotating"])
def test_append_refused_by_the_disk_leaves_the_log_unchanged(tmp_path: Path, mode: str) -> None:
    """A batch the filesystem refuses part-way (file size limit, like a full disk), also one that had
    already rotated into a new segment, raises StateError and is not appended at all: no partial batch,
    no leftover segment, no torn record after reopening."""
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path), mode], cwd=REPO, capture_output=True,
                         text=True, timeout=25)
    words = out.stdout.split()
    assert words[:1] == ["refused"], out.stdout + out.stderr
    accepted, end = int(words[1]), int(words[2])
    assert accepted == end and accepted % 7 == 0 and accepted > 0
    with LocalLog(tmp_path, segment_bytes=8192) as log:
        assert log.recovery.torn_at is None
        assert log.end_offset == accepted
        assert [o for o, _ in log.read(0, 10_000)] == list(range(accepted))
        assert log.segments == [0]


_BIG_CHECKPOINT = textwrap.dedent("""
    import resource, signal, sys
    from siem.errors import StateError
    from siem.log.checkpoint import save_checkpoint
    save_checkpoint(sys.argv[1], 10, b"small state")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        save_checkpoint(sys.argv[1], 20, b"s" * 100_000)
    except StateError as exc:
        print("refused:", exc)
""")


@pytest.mark.timeout(30)
def test_checkpoint_the_disk_refuses_keeps_the_previous_one(tmp_path: Path) -> None:
    """A checkpoint write that fails (file size limit, like a full disk) raises StateError and leaves
    the previous checkpoint in place."""
    out = subprocess.run([sys.executable, "-c", _BIG_CHECKPOINT, str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, timeout=25)
    assert out.stdout.startswith("refused: cannot write state file"), out.stdout + out.stderr
    assert load_checkpoint(tmp_path) == (10, b"small state")
