"""JournaldFollower against the real journalctl, reading a real journal file written by
systemd-journal-remote (export format on stdin -> DIR/x.journal)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from siem import metrics
from siem.collect import RawRecord
from siem.collect.journald import (
    JournaldConfig,
    JournaldFollower,
    build_argv,
    config_from_toml,
    entry_cursor,
)

JOURNALCTL = shutil.which("journalctl")
REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote")
               if os.access(p, os.X_OK)), None)
BOOT = "0123456789abcdef0123456789abcdef"


class Journal:
    """A journal directory that tests append entries to with systemd-journal-remote."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def write(self, *entries: dict[str, str]) -> None:
        lines = []
        for fields in entries:
            self.count += 1
            base = {"__REALTIME_TIMESTAMP": str(1_700_000_000_000_000 + self.count),
                    "__MONOTONIC_TIMESTAMP": str(self.count), "_BOOT_ID": BOOT, "_HOSTNAME": "web1"}
            lines += [f"{k}={v}" for k, v in (base | fields).items()] + [""]
        subprocess.run([REMOTE or "", f"--output={self.directory / 'x.journal'}", "-"],
                       input=("\n".join(lines) + "\n").encode(), check=True, capture_output=True, timeout=30)

    def sshd(self, *numbers: int) -> None:
        self.write(*({"SYSLOG_IDENTIFIER": "sshd", "_PID": str(1000 + n), "_SYSTEMD_UNIT": "ssh.service",
                      "MESSAGE": f"Failed password for root from 10.0.0.{n} port 22 ssh2 n={n}"} for n in numbers))


class Collect:
    def __init__(self) -> None:
        self.records: list[RawRecord] = []

    async def __call__(self, record: RawRecord) -> None:
        self.records.append(record)

    def numbers(self) -> list[int]:
        return [int(orjson.loads(r.data)["MESSAGE"].rsplit("n=", 1)[1]) for r in self.records]


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def cfg(journal: Journal, **kw: object) -> JournaldConfig:
    base: dict = {"command": (JOURNALCTL or "journalctl", f"--directory={journal.directory}"),
                  "start_at": "beginning"}
    base.update(kw)
    return JournaldConfig(**base)


@contextlib.asynccontextmanager
async def running(config: JournaldConfig, state: Path, name: str = "jd") -> AsyncIterator[tuple]:
    sink = Collect()
    follower = JournaldFollower(config, name, state)
    task = asyncio.create_task(follower.run(sink))
    try:
        yield sink, follower
    finally:
        await follower.stop()
        await asyncio.wait_for(task, 10)


async def settle(sink: Collect, n: int) -> None:
    await until(lambda: len(sink.records) >= n, what=f"{n} records")
    await asyncio.sleep(0.3)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    if JOURNALCTL is None or REMOTE is None:
        pytest.fail("needs journalctl and systemd-journal-remote (deploy/install-test-deps.sh installs them)")
    d = tmp_path / "journal"
    d.mkdir()
    return Journal(d)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


def errors(name: str, reason: str) -> float:
    return metrics.value("siem_input_errors_total", input=name, reason=reason)


@pytest.mark.timeout(60)
def test_reads_the_journal_then_follows_new_entries(journal: Journal, state: Path) -> None:
    """Existing entries, then entries written later, each one JSON line with the journal fields."""
    journal.sshd(1, 2, 3)

    async def body() -> None:
        async with running(cfg(journal), state) as (sink, _):
            await settle(sink, 3)
            journal.sshd(4, 5)
            await settle(sink, 5)
        assert sink.numbers() == [1, 2, 3, 4, 5]
        first = orjson.loads(sink.records[0].data)
        assert {k: first[k] for k in ("_HOSTNAME", "SYSLOG_IDENTIFIER", "_PID", "MESSAGE")} == {
            "_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sshd", "_PID": "1001",
            "MESSAGE": "Failed password for root from 10.0.0.1 port 22 ssh2 n=1"}
        assert {(r.input, r.format, r.origin) for r in sink.records} == {("jd", "journald", "journald")}

    asyncio.run(body())


@pytest.mark.timeout(60)
def test_start_at_end_skips_the_history(journal: Journal, state: Path) -> None:
    """Without a saved cursor and start_at = end, only entries written after the start arrive."""
    journal.sshd(1, 2, 3)

    async def body() -> None:
        async with running(cfg(journal, start_at="end"), state) as (sink, follower):
            await until(lambda: follower.pid is not None, what="journalctl following")  # the anchor is taken
            journal.sshd(4, 5)
            await settle(sink, 2)
        assert sink.numbers() == [4, 5]

    asyncio.run(body())


@pytest.mark.timeout(60)
def test_start_at_end_then_restart_before_any_new_entry_loses_nothing(journal: Journal, state: Path) -> None:
    """start_at = end anchors at the newest entry: entries written while stopped, before the first new one
    arrived, are read by the next start."""
    journal.sshd(1, 2)

    async def run_once(wait_for: int) -> list[int]:
        async with running(cfg(journal, start_at="end"), state) as (sink, follower):
            if wait_for:
                await settle(sink, wait_for)
            else:
                await until(lambda: follower.pid is not None, what="journalctl following")
        return sink.numbers()

    assert asyncio.run(run_once(0)) == []
    journal.sshd(3, 4)
    assert asyncio.run(run_once(2)) == [3, 4]


@pytest.mark.timeout(60)
def test_restart_continues_after_the_saved_cursor(journal: Journal, state: Path) -> None:
    """Stop, write more, start again: exactly the new entries."""
    journal.sshd(1, 2, 3)

    async def run_once(n: int) -> list[int]:
        async with running(cfg(journal), state) as (sink, _):
            await settle(sink, n)
        return sink.numbers()

    assert asyncio.run(run_once(3)) == [1, 2, 3]
    journal.sshd(4, 5)
    assert asyncio.run(run_once(2)) == [4, 5]


@pytest.mark.timeout(60)
def test_killed_journalctl_is_restarted_from_the_cursor(journal: Journal, state: Path) -> None:
    """kill -9 of journalctl: counted, restarted after the last delivered entry, nothing lost or repeated."""
    journal.sshd(1, 2, 3)
    before = errors("kill", "subprocess_exit")

    async def body() -> None:
        async with running(cfg(journal), state, name="kill") as (sink, follower):
            await settle(sink, 3)
            pid = follower.pid
            os.kill(pid, signal.SIGKILL)
            await until(lambda: follower.pid not in (None, pid), what="a new journalctl")
            journal.sshd(4, 5)
            await settle(sink, 5)
        assert sink.numbers() == [1, 2, 3, 4, 5]

    asyncio.run(body())
    assert errors("kill", "subprocess_exit") == before + 1


@pytest.mark.timeout(60)
def test_unit_and_identifier_filters(journal: Journal, state: Path) -> None:
    """units and identifiers select entries the way journalctl --unit / --identifier do."""
    journal.sshd(1)
    journal.write({"SYSLOG_IDENTIFIER": "CRON", "_SYSTEMD_UNIT": "cron.service", "MESSAGE": "job n=2"},
                  {"SYSLOG_IDENTIFIER": "sudo", "_SYSTEMD_UNIT": "session-1.scope", "MESSAGE": "sudo n=3"})

    async def collect(**kw: object) -> list[int]:
        async with running(cfg(journal, **kw), state, name=f"f{len(kw)}{sorted(kw)}") as (sink, _):
            await settle(sink, 1)
        return sink.numbers()

    assert asyncio.run(collect(units=("ssh.service",))) == [1]
    assert asyncio.run(collect(identifiers=("sudo", "CRON"))) == [2, 3]


@pytest.mark.timeout(60)
def test_refused_cursor_is_dropped_and_start_at_applies(journal: Journal, state: Path) -> None:
    """A saved cursor journalctl cannot use: counted as bad_cursor, then read by start_at."""
    journal.sshd(1, 2)
    (state / "journald-badc.json").write_bytes(b'{"version": 1, "cursor": "not-a-cursor"}')
    before = errors("badc", "bad_cursor")

    async def body() -> None:
        async with running(cfg(journal), state, name="badc") as (sink, _):
            await settle(sink, 2)
        assert sink.numbers() == [1, 2]

    asyncio.run(body())
    assert errors("badc", "bad_cursor") == before + 1


@pytest.mark.timeout(30)
def test_missing_journalctl_is_counted_and_stop_still_works(state: Path) -> None:
    """A journalctl that cannot be started: spawn_failed counted, retried, run() ends on stop()."""
    before = errors("nojc", "spawn_failed")

    async def body() -> None:
        config = JournaldConfig(journalctl_path="/nonexistent/journalctl", max_restart_delay_ms=100)
        async with running(config, state, name="nojc") as (sink, _):
            await until(lambda: errors("nojc", "spawn_failed") >= before + 2, what="two spawn attempts")
        assert sink.records == []

    asyncio.run(body())


def test_argv_for_each_start() -> None:
    """The command line: json, follow, and cursor or start_at, then the filters."""
    config = JournaldConfig(units=("ssh.service",), identifiers=("sudo",))
    assert build_argv(config, None) == ["journalctl", "-o", "json", "--follow", "--lines=0",
                                        "--unit=ssh.service", "--identifier=sudo"]
    assert build_argv(JournaldConfig(command=("jc", "--file=/x.journal")), None, "beginning") == [
        "jc", "--file=/x.journal", "-o", "json", "--follow", "--no-tail"]
    assert build_argv(JournaldConfig(command=("jc", "--file=/x.journal")), "s=1;i=2") == [
        "jc", "--file=/x.journal", "-o", "json", "--follow", "--no-tail", "--after-cursor=s=1;i=2"]


def test_cursor_is_read_from_the_line() -> None:
    """__CURSOR is found anywhere in the entry; a line without one gives None."""
    assert entry_cursor(b'{"MESSAGE":"x","__CURSOR":"s=ab;i=1;b=cd","_PID":"1"}') == "s=ab;i=1;b=cd"
    assert entry_cursor(b'{"MESSAGE":"__CURSOR"}') is None


def test_config_defaults_and_errors() -> None:
    """Defaults follow the docs; unknown keys and wrong types name their dotted path."""
    config, issues = config_from_toml({"type": "journald"}, "inputs.jd")
    assert issues == [] and config == JournaldConfig()
    config, issues = config_from_toml({"units": "ssh.service", "identifiers": ["sshd", "sudo"],
                                       "command": ["journalctl", "--directory=/var/log/journal/remote"],
                                       "start_at": "beginning", "max_restart_delay": "5s"}, "inputs.jd")
    assert issues == [] and config == JournaldConfig(
        units=("ssh.service",), identifiers=("sshd", "sudo"),
        command=("journalctl", "--directory=/var/log/journal/remote"), start_at="beginning",
        max_restart_delay_ms=5000)
    config, issues = config_from_toml({"unit": ["x"], "identifiers": [1], "command": []}, "inputs.jd")
    assert config is None
    assert sorted(i.message.split(":")[0] for i in issues) == [
        "inputs.jd.command", "inputs.jd.identifiers", "inputs.jd.unit"]


@pytest.mark.timeout(60)
def test_entries_parse_into_the_same_sshd_event_as_syslog(journal: Journal, state: Path) -> None:
    """A journald entry from the follower, parsed as journald, gives the sshd event the syslog line gives."""
    from siem.parse import ParseContext, parse

    journal.write({"SYSLOG_IDENTIFIER": "sshd", "_PID": "4242", "__REALTIME_TIMESTAMP": "1700000000000000",
                   "MESSAGE": "Failed password for invalid user admin from 203.0.113.9 port 52100 ssh2"})

    async def body() -> RawRecord:
        async with running(cfg(journal), state) as (sink, _):
            await settle(sink, 1)
        return sink.records[0]

    record = asyncio.run(body())
    ctx = ParseContext()
    from_journal = parse("journald", record.data, ctx, "jd")
    from_syslog = parse("syslog", b"<38>Nov 14 22:13:20 web1 sshd[4242]: Failed password for invalid user admin "
                                  b"from 203.0.113.9 port 52100 ssh2", ctx, "sl")
    keys = ("event.dataset", "event.outcome", "user.name", "source.ip", "source.port", "host.name",
            "process.name", "process.pid")
    assert {k: from_journal.get(k) for k in keys} == {k: from_syslog.get(k) for k in keys}
    assert from_journal["event.outcome"] == "failure" and from_journal["source.ip"] == "203.0.113.9"
