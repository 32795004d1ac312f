"""The auditd input: FileTailer lines joined into whole events, with positions that never cover an open one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from siem import metrics
from siem.collect import RawRecord
from siem.collect.auditd import AuditdInputConfig, AuditdTailer, config_from_toml
from siem.parse.auditd import event_id

pytestmark = pytest.mark.timeout(60)
CAPTURE = Path(__file__).parent / "data" / "auditd" / "capture.log"


class Collect:
    def __init__(self) -> None:
        self.records: list[RawRecord] = []

    async def __call__(self, record: RawRecord) -> None:
        self.records.append(record)

    def events(self) -> list[list[str]]:
        return [r.data.decode().split("\n") for r in self.records]


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def cfg(path: Path, **kw: object) -> AuditdInputConfig:
    base: dict = {"poll_interval_ms": 20, "rotate_wait_ms": 200, "event_timeout_ms": 60_000}
    base.update(kw)
    return AuditdInputConfig(paths=(str(path),), **base)


@contextlib.asynccontextmanager
async def running(config: AuditdInputConfig, state: Path, name: str = "a") -> AsyncIterator[tuple[Collect, AuditdTailer]]:
    sink = Collect()
    tailer = AuditdTailer(config, name, state, autocommit=False)
    task = asyncio.create_task(tailer.run(sink))
    try:
        yield sink, tailer
    finally:
        await tailer.stop()
        await task


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def syscall(serial: int, t: str = "1700000000.100") -> str:
    return (f"type=SYSCALL msg=audit({t}:{serial}): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid={serial} "
            f'auid=1000 uid=0 comm="x{serial}" exe="/usr/bin/x" key="k"\n')


def proctitle(serial: int, t: str = "1700000000.100") -> str:
    return f"type=PROCTITLE msg=audit({t}:{serial}): proctitle=7800{serial:02x}\n"


def user_login(serial: int, t: str = "1700000000.100") -> str:
    return (f"type=USER_LOGIN msg=audit({t}:{serial}): pid=9 uid=0 auid=1000 ses=1 msg='op=login acct=\"alice\" "
            "exe=\"/usr/sbin/sshd\" hostname=? addr=198.51.100.7 terminal=ssh res=failed'\n")


def offset_of(positions: dict) -> int:
    files = positions["files"]
    assert len(files) == 1
    return int(files[0]["offset"])


def test_captured_log_becomes_one_record_per_event(tmp_path: Path) -> None:
    """Every line of a real audit.log is delivered exactly once, grouped by event id, in file order."""
    log = tmp_path / "audit.log"
    log.write_bytes(CAPTURE.read_bytes())
    lines = [ln for ln in CAPTURE.read_text("utf-8").split("\n") if ln]
    groups = [list(g) for _, g in itertools.groupby(lines, key=event_id)]

    async def main() -> list[list[str]]:
        async with running(cfg(log, event_timeout_ms=300), tmp_path / "state") as (sink, _):
            await until(lambda: sum(len(e) for e in sink.events()) >= len(lines), what="every line")
            await asyncio.sleep(0.2)
            return sink.events()

    (tmp_path / "state").mkdir()
    got = asyncio.run(main())
    assert got == groups


def test_positions_exclude_an_open_event_until_it_is_emitted(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    (tmp_path / "state").mkdir()

    async def main() -> None:
        async with running(cfg(log), tmp_path / "state") as (sink, tailer):
            append(log, user_login(1))
            await until(lambda: len(sink.records) == 1, what="the standalone record")
            first = log.stat().st_size
            await until(lambda: offset_of(tailer.positions()) == first, what="positions past the login")
            append(log, syscall(2))
            await until(lambda: offset_of(tailer.tailer.positions()) == log.stat().st_size, what="the line read")
            assert len(sink.records) == 1
            assert offset_of(tailer.positions()) == first  # the open event's line is not covered
            append(log, proctitle(2))
            await until(lambda: len(sink.records) == 2, what="the completed event")
            assert sink.records[1].format == "auditd" and sink.records[1].origin == str(log)
            assert sink.records[1].data.decode() == (syscall(2) + proctitle(2)).rstrip("\n")
            await until(lambda: offset_of(tailer.positions()) == log.stat().st_size, what="positions past it")

    asyncio.run(main())


def test_restart_with_an_open_event_neither_loses_nor_duplicates(tmp_path: Path) -> None:
    """Event 3 starts, user-space event 4 is emitted while 3 is open, the input stops: the restart rebuilds
    3 whole from its first line and skips 4, which it had emitted already."""
    log = tmp_path / "audit.log"
    log.write_text("")
    state = tmp_path / "state"
    state.mkdir()
    delivered: list[list[str]] = []

    async def first_run() -> None:
        async with running(cfg(log), state) as (sink, tailer):
            append(log, syscall(3) + user_login(4))
            await until(lambda: len(sink.records) == 1, what="event 4")
            await until(lambda: offset_of(tailer.tailer.positions()) == log.stat().st_size, what="lines read")
            pos = tailer.positions()
            assert pos["auditd"] == {"emitted": ["1700000000.100:4"]}
            tailer.commit(pos)  # what the daemon does once the records before pos are durable
            delivered.extend(sink.events())

    async def second_run() -> None:
        async with running(cfg(log), state) as (sink, tailer):
            append(log, proctitle(3) + user_login(5))
            await until(lambda: len(sink.records) == 2, what="events 3 and 5")
            await asyncio.sleep(0.2)
            delivered.extend(sink.events())
            await until(lambda: offset_of(tailer.positions()) == log.stat().st_size, what="positions at the end")

    asyncio.run(first_run())
    asyncio.run(second_run())
    ids = [event_id(e[0]) for e in delivered]
    assert ids == ["1700000000.100:4", "1700000000.100:3", "1700000000.100:5"]
    assert delivered[1] == [syscall(3).rstrip("\n"), proctitle(3).rstrip("\n")]


def test_timeout_and_newer_serial_complete_events(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    (tmp_path / "state").mkdir()
    before_timeout = metrics.value("siem_auditd_events_total", input="to", end="timeout") or 0
    before_newer = metrics.value("siem_auditd_events_total", input="to", end="newer_serial") or 0

    async def main() -> None:
        async with running(cfg(log, event_timeout_ms=150), tmp_path / "state", name="to") as (sink, _):
            append(log, "type=ANOM_PROMISCUOUS msg=audit(1700000000.100:10): dev=eth0 prom=256 old_prom=0 auid=0\n")
            append(log, syscall(11))  # a newer serial: the kernel record 10 stands alone
            await until(lambda: len(sink.records) == 1, what="record 10")
            assert event_id(sink.events()[0][0]) == "1700000000.100:10"
            await until(lambda: len(sink.records) == 2, what="event 11 after its timeout")  # no PROCTITLE came

    asyncio.run(main())
    assert metrics.value("siem_auditd_events_total", input="to", end="timeout") == before_timeout + 1
    assert metrics.value("siem_auditd_events_total", input="to", end="newer_serial") == before_newer + 1


def test_rotation_by_auditd_rename(tmp_path: Path) -> None:
    """auditd rotates by renaming audit.log to audit.log.1 and opening a new audit.log: nothing lost."""
    log = tmp_path / "audit.log"
    log.write_text("")
    (tmp_path / "state").mkdir()

    async def main() -> list[str]:
        async with running(cfg(log), tmp_path / "state") as (sink, _):
            append(log, syscall(20) + proctitle(20) + syscall(21))
            await until(lambda: len(sink.records) == 1, what="event 20")
            append(log, proctitle(21))
            os.rename(log, tmp_path / "audit.log.1")
            append(log, user_login(22) + syscall(23) + proctitle(23))
            await until(lambda: len(sink.records) == 4, what="all four events")
            await asyncio.sleep(0.3)
            return [event_id(e[0]) for e in sink.events()]

    assert asyncio.run(main()) == [f"1700000000.100:{n}" for n in (20, 21, 22, 23)]


def test_non_audit_lines_and_oversized_events_are_delivered_not_dropped(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    (tmp_path / "state").mkdir()

    async def main() -> list[list[str]]:
        async with running(cfg(log, max_event_bytes=1024), tmp_path / "state") as (sink, _):
            big = "".join(f'type=PATH msg=audit(1700000000.100:30): item={i} name="/{"x" * 100}"\n' for i in range(12))
            append(log, "garbage line\n" + syscall(30) + big)
            await until(lambda: len(sink.records) >= 2, what="the garbage line and the cut event")
            return sink.events()

    got = asyncio.run(main())
    assert got[0] == ["garbage line"]
    assert event_id(got[1][0]) == "1700000000.100:30" and 2 <= len(got[1]) <= 12


def test_config_checks() -> None:
    ok, issues = config_from_toml({"paths": ["/var/log/audit/audit.log"], "event_timeout": "3s"}, "inputs.audit")
    assert issues == [] and ok is not None and ok.event_timeout_ms == 3000
    default, _ = config_from_toml({}, "inputs.audit")
    assert default is not None and default.paths == ("/var/log/audit/audit.log",)
    bad, issues = config_from_toml({"paths": ["audit.log"], "colour": 1, "max_pending": 0}, "inputs.audit")
    assert bad is None
    text = "\n".join(str(i) for i in issues)
    assert "inputs.audit.colour: unknown key" in text and "inputs.audit.paths: 'audit.log' is not an absolute path" in text
    assert "inputs.audit.max_pending: must be 1..1000000" in text
