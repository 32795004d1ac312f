"""Append throughput of LocalLog per fsync policy and batch size.

    .venv/bin/python bench/log_throughput.py [--seconds 2] [--dir /var/lib/siem/bench]

Run it on the disk that will hold the state directory: fsync cost is a property of the device
(a laptop NVMe, a cloud block volume and tmpfs differ by orders of magnitude).
Prints one row per (policy, batch size): appends (calls) per second, records per second, MiB/s; then
the sequential read rate (what the engine sees when it catches up after a restart).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from siem.log.codec import encode_events
from siem.log.local import LocalLog

POLICIES: list[tuple[str, int | None]] = [("always", 0), ("interval 100ms", 100), ("interval 1s", 1000),
                                          ("never", None)]
BATCHES = (1, 100, 1000)


def sample_records(n: int) -> list[bytes]:
    events = [{
        "@timestamp": 1_700_000_000_000 + i,
        "event.dataset": "sshd",
        "event.category": "authentication",
        "event.outcome": "failure",
        "source.ip": f"203.0.113.{i % 250}",
        "source.port": 40000 + i % 20000,
        "user.name": f"user{i % 97}",
        "host.name": "bastion-1",
        "process.name": "sshd",
        "process.pid": 1000 + i % 5000,
        "message": f"Failed password for invalid user user{i % 97} from 203.0.113.{i % 250} port {40000 + i} ssh2",
        "event.original": f"Jan 12 03:04:05 bastion-1 sshd[{1000 + i % 5000}]: Failed password for invalid user "
                          f"user{i % 97} from 203.0.113.{i % 250} port {40000 + i} ssh2",
    } for i in range(n)]
    return encode_events(events)


def measure(directory: Path, interval: int | None, batch: int, seconds: float) -> tuple[float, float, float]:
    records = sample_records(batch)
    size = sum(len(r) for r in records)
    with LocalLog(directory, segment_bytes=64 << 20, retention_bytes=None, fsync_interval_ms=interval) as log:
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            log.append_many(records)
            calls += 1
        log.sync()  # the time to make everything durable is part of the cost
        elapsed = time.perf_counter() - start
    return calls / elapsed, calls * batch / elapsed, calls * size / elapsed / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=None, help="parent directory for the test logs")
    args = parser.parse_args()
    print(f"record size ~{len(sample_records(1)[0])} bytes")
    print(f"{'policy':<16}{'batch':>7}{'appends/s':>12}{'records/s':>12}{'MiB/s':>9}")
    for name, interval in POLICIES:
        for batch in BATCHES:
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                calls, recs, mib = measure(Path(tmp), interval, batch, args.seconds)
            print(f"{name:<16}{batch:>7}{calls:>12,.0f}{recs:>12,.0f}{mib:>9.1f}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        with LocalLog(Path(tmp), fsync_interval_ms=None, retention_bytes=None) as log:
            records = sample_records(1000)
            for _ in range(500):
                log.append_many(records)
        with LocalLog(Path(tmp)) as log:  # reopened: recovery scans the last segment
            start = time.perf_counter()
            offset = n = 0
            while batch_read := log.read(offset, 10_000):
                n += len(batch_read)
                offset = batch_read[-1][0] + 1
            elapsed = time.perf_counter() - start
        print(f"sequential read of {n:,} records: {n / elapsed:,.0f} records/s")


if __name__ == "__main__":
    main()
