"""Bytes of CloudTrail position records in the daemon's log per file read, at 10,000 and 100,000 files.

    .venv/bin/python bench/cloudtrail_positions.py [--files 100000] [--dir /tmp/x]

Drives the real CloudTrailCollector (autocommit off) the way the daemon's writer does: after each record
handed over, the positions are taken and, when they changed, "logged" (the bytes of the Positions record the
daemon would append, siem.pipeline.records), and every 0.5 s the last logged positions are committed.
Prints position bytes per file after the first tenth of the files and after all of them, and their ratio,
measured in one run: 1.0 is linear growth (the old whole-set records made it grow with the file count:
4,000 files gave a 526 MB log). Also the largest position record and a restart's re-read count.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from siem.collect.cloudtrail import CloudTrailCollector, CloudTrailConfig
from siem.pipeline.records import Positions, encode_record

DAY = "AWSLogs/111122223333/CloudTrail/us-east-1/2022/11/10"


def make_files(root: Path, n: int) -> None:
    d = root / DAY
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rec = {"eventID": f"ev-{i:07d}", "eventTime": "2022-11-10T16:24:34Z", "eventName": "GetObject"}
        (d / f"111122223333_CloudTrail_us-east-1_20221110T1624Z_{i:07d}abcdefgh.json").write_bytes(
            orjson.dumps({"Records": [rec]}))


async def drive(root: Path, state: Path, n: int) -> dict[str, float]:
    collector = CloudTrailCollector(CloudTrailConfig(directory=str(root), poll_interval_ms=50), "bench", state,
                                    autocommit=False)
    logged = {"bytes": 0, "records": 0, "largest": 0, "files": 0, "at_tenth": 0.0}
    last: dict = {}
    last_commit = time.monotonic()

    async def sink(record: object) -> int:
        nonlocal last, last_commit
        logged["files"] += 1
        pos = collector.positions()
        if pos != last:
            size = len(encode_record(Positions("bench", pos)))
            logged["bytes"] += size
            logged["records"] += 1
            logged["largest"] = max(logged["largest"], size)
            last = pos
        if logged["files"] == n // 10:
            logged["at_tenth"] = logged["bytes"] / logged["files"]
        if time.monotonic() - last_commit >= 0.5:
            collector.commit(last)
            last_commit = time.monotonic()
        if logged["files"] >= n:
            asyncio.get_running_loop().create_task(collector.stop())
        return logged["files"]

    async def committer() -> None:  # the daemon's writer also commits on its 0.5 s timer when quiet
        nonlocal last_commit
        while True:
            await asyncio.sleep(0.5)
            if last and time.monotonic() - last_commit >= 0.5:
                collector.commit(last)
                last_commit = time.monotonic()

    timer = asyncio.create_task(committer())
    await collector.run(sink)
    timer.cancel()
    collector.commit(collector.positions())
    # a restart: a new collector on the same state reads nothing again
    again = CloudTrailCollector(CloudTrailConfig(directory=str(root), poll_interval_ms=50), "bench", state,
                                autocommit=False)
    reread = 0

    async def count(record: object) -> None:
        nonlocal reread
        reread += 1

    task = asyncio.create_task(again.run(count))
    await asyncio.sleep(1.0)
    await again.stop()
    await task
    return {**logged, "reread": reread}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root, state = Path(tmp) / "trail", Path(tmp) / "state"
        state.mkdir()
        t0 = time.monotonic()
        make_files(root, args.files)
        t1 = time.monotonic()
        r = asyncio.run(drive(root, state, args.files))
        t2 = time.monotonic()
    per_file = r["bytes"] / max(r["files"], 1)
    print(f"files: {args.files} (written in {t1 - t0:.1f}s, read in {t2 - t1:.1f}s)")
    print(f"position records: {r['records']}, {r['bytes'] / 1e6:.1f} MB, largest {r['largest']} B")
    print(f"position bytes per file: {r['at_tenth']:.0f} after {args.files // 10} files, {per_file:.0f} after "
          f"{args.files}: ratio {per_file / max(r['at_tenth'], 1):.2f} (1.0 = linear)")
    print(f"files read again after a restart: {r['reread']}")


if __name__ == "__main__":
    main()
