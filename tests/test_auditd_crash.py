"""kill -9 of the auditd input at random points, with the daemon's commit protocol: every audit event
arrives exactly once and whole, also when the records of events interleave.

The child does what the daemon does with a position-keeping input (``autocommit=False``): its sink queues
each event; a writer appends the queued events (one line each, records joined by " | ") together with
``positions()`` taken in the same step to an output file standing in for the durable log, in one write
and fsync; at a start it hands the last positions in that file to ``commit()`` before running. The parent
writes numbered events (three records each, every fourth interleaved with the next one, user-space
records between) while killing and restarting the child.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

CHILD = """
import asyncio, json, os, sys
from siem.collect.auditd import AuditdInputConfig, AuditdTailer

log, state, out_path = sys.argv[1], sys.argv[2], sys.argv[3]

async def main():
    cfg = AuditdInputConfig(paths=(log,), poll_interval_ms=10, event_timeout_ms=60_000)
    tailer = AuditdTailer(cfg, "k9", state, autocommit=False)
    last = None  # where to resume: the last positions in the "log", as the daemon does
    if os.path.exists(out_path):
        for line in open(out_path, "rb"):
            if line.startswith(b"POS "):
                last = json.loads(line[4:])
    if last is not None:
        tailer.commit(last)
    out = open(out_path, "ab", buffering=0)
    pending = []

    async def sink(record):  # the intake queue
        pending.append(record.data.replace(b"\\n", b" | "))

    async def writer():  # the log append: the records and the positions covering them, in one write
        while True:
            await asyncio.sleep(0.005)
            p = tailer.positions()
            batch = pending[:]
            pending.clear()
            out.write(b"".join(r + b"\\n" for r in batch) + b"POS " + json.dumps(p).encode() + b"\\n")
            os.fsync(out.fileno())

    asyncio.create_task(writer())
    print("ready", flush=True)
    await tailer.run(sink)

asyncio.run(main())
"""

EVENTS = 1500


def _event(n: int) -> list[str]:
    t = f"1700000000.{n % 1000:03d}:{n}"
    return [f"type=SYSCALL msg=audit({t}): arch=c000003e syscall=59 success=yes exit=0 pid={n} comm=\"x\" key=\"k\"",
            f"type=EXECVE msg=audit({t}): argc=1 a0=\"x{n}\"",
            f"type=PROCTITLE msg=audit({t}): proctitle=78"]


def _lines(rnd: random.Random) -> list[str]:
    out: list[str] = []
    n = 1
    while n <= EVENTS:
        a = _event(n)
        if n % 4 == 0 and n + 1 <= EVENTS:  # interleave n with n + 1
            b = _event(n + 1)
            out += [a[0], b[0], a[1], b[1], a[2], b[2]]
            n += 2
        else:
            out += a
            n += 1
        if rnd.random() < 0.1:
            out.append(f"type=USER_LOGIN msg=audit(1700000001.000:{100000 + n}): pid=1 uid=0 msg='op=login acct=\"u{n}\" res=failed'")
    return out


def test_kill_9_neither_loses_nor_repeats_an_event(tmp_path: Path) -> None:
    rnd = random.Random(7)
    log, state, out = tmp_path / "audit.log", tmp_path / "state", tmp_path / "out.txt"
    state.mkdir()
    lines = _lines(rnd)
    logins = sum("USER_LOGIN" in ln for ln in lines)
    log.write_text("")

    def start() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(log), str(state), str(out)], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        return p

    child = start()
    kills = 0
    with open(log, "a") as f:
        for i, ln in enumerate(lines):
            f.write(ln + "\n")
            if i % 50 == 0:
                f.flush()
            if i and i % (len(lines) // 7) == 0:
                f.flush()
                time.sleep(rnd.uniform(0.02, 0.2))
                child.send_signal(signal.SIGKILL)
                child.wait()
                kills += 1
                child = start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = [g for g in out.read_text().splitlines() if not g.startswith("POS ")] if out.exists() else []
        if len(got) >= EVENTS + logins:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.wait()
    got = [g for g in out.read_text().splitlines() if not g.startswith("POS ")]
    assert kills >= 6
    ids = Counter(g.split("msg=audit(", 1)[1].split(")", 1)[0] for g in got)
    repeated = {k: v for k, v in ids.items() if v > 1}
    assert repeated == {}, f"events delivered twice: {sorted(repeated)[:10]}"
    syscall_events = [g for g in got if "SYSCALL" in g]
    assert len(syscall_events) == EVENTS and all(g.count("type=") == 3 for g in syscall_events), "an event was cut"
    assert len(got) == EVENTS + logins
