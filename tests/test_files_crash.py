"""kill -9 of a tailing process at random points, with the daemon's commit protocol: nothing is lost.

The child tails with ``autocommit=False``; its sink appends each line to an output file (standing in for the
durable log) and a committer loop does what the daemon does: ``p = positions()``, fsync the output, then
``commit(p)``. The parent appends numbered lines (with a rename rotation) while killing and restarting the
child. Afterwards every number must be in the output; duplicates may only come from after a commit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

CHILD = """
import asyncio, os, sys
from siem.collect.files import FileInputConfig, FileTailer

logs, state, out_path = sys.argv[1], sys.argv[2], sys.argv[3]

async def main():
    cfg = FileInputConfig(paths=(logs + "/app.log*",), format="raw", poll_interval_ms=10, rotate_wait_ms=200)
    tailer = FileTailer(cfg, "k9", state, autocommit=False)
    out = open(out_path, "ab", buffering=0)  # one write() per line: a kill never tears a line

    async def sink(record):
        out.write(record.data + b"\\n")

    async def committer():
        while True:
            await asyncio.sleep(0.03)
            p = tailer.positions()
            os.fsync(out.fileno())
            tailer.commit(p)

    asyncio.create_task(committer())
    print("ready", flush=True)
    await tailer.run(sink)

asyncio.run(main())
"""

TOTAL = 6000


def test_kill_9_at_random_points_loses_no_line(tmp_path: Path) -> None:
    """Six kill -9 while lines are written and rotated: every number arrives at least once."""
    logs, state, out = tmp_path / "logs", tmp_path / "state", tmp_path / "out.txt"
    logs.mkdir()
    state.mkdir()
    path = logs / "app.log"

    def writer() -> None:
        f = open(path, "ab", buffering=0)  # noqa: SIM115
        for i in range(TOTAL):
            if i and i % 1500 == 0:
                os.replace(path, logs / f"app.log.{i}")
                f.close()
                f = open(path, "ab", buffering=0)  # noqa: SIM115
            f.write(b"line %06d\n" % i)
            if i % 20 == 0:
                time.sleep(0.003)
        f.close()

    def start() -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(logs), str(state), str(out)],
                                 stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        return child

    rng = random.Random(1234)
    thread = threading.Thread(target=writer, daemon=True)
    child = start()
    thread.start()
    kills = 0
    try:
        while kills < 6:
            time.sleep(rng.uniform(0.05, 0.4))
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
            child = start()
        thread.join(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = {int(x.split()[1]) for x in out.read_bytes().splitlines()} if out.exists() else set()
            if len(got) == TOTAL:
                break
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lines = out.read_bytes().splitlines()
    numbers = [int(x.split()[1]) for x in lines]
    print(f"{kills} kills, {len(numbers) - TOTAL} duplicates")
    assert sorted(set(numbers)) == list(range(TOTAL))
    assert all(x.startswith(b"line ") and len(x) == 11 for x in lines)  # no torn or merged lines
