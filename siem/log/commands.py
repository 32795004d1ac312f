"""``siem log``: look at the durable log and the engine checkpoint without touching them.

    siem log verify STATE_DIR          every segment scanned; exit 1 when anything is corrupt or missing
    siem log dump STATE_DIR [--from N] [--limit M]   records as JSON lines: {"offset": N, "event": {...}},
                                                     {"offset": N, "positions": {...}, "input": ...} or
                                                     {"offset": N, "watermark": ms, "origin": ...}
    siem log checkpoint STATE_DIR      the checkpoint's offset and state size, or what is wrong with it

Read-only and lock-free, so it is safe while the daemon runs (a record being appended may show up as a
torn tail in ``verify``; run it again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from siem.errors import StateError
from siem.log.checkpoint import load_checkpoint
from siem.log.local import inspect_log, read_log_readonly
from siem.pipeline.records import Match, Positions, Watermark, decode_record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    verify = sub.add_parser("verify", help="check every segment's records and checksums")
    verify.add_argument("state_dir", type=Path, help="the state directory (or its log/ subdirectory)")
    dump = sub.add_parser("dump", help="print records as JSON lines")
    dump.add_argument("state_dir", type=Path)
    dump.add_argument("--from", dest="from_offset", type=int, default=0, help="first offset (default 0)")
    dump.add_argument("--limit", type=int, default=None, help="at most this many records")
    ck = sub.add_parser("checkpoint", help="show the engine checkpoint")
    ck.add_argument("state_dir", type=Path)


def _log_dir(state_dir: Path) -> Path:
    return state_dir / "log" if (state_dir / "log").is_dir() else state_dir


def run(args: argparse.Namespace) -> int:
    if args.log_command == "verify":
        return _verify(_log_dir(args.state_dir))
    if args.log_command == "dump":
        return _dump(_log_dir(args.state_dir), args.from_offset, args.limit)
    return _checkpoint(args.state_dir)


def _verify(directory: Path) -> int:
    if not directory.is_dir():
        print(f"{directory}: not a directory", file=sys.stderr)
        return 2
    reports = inspect_log(directory)
    bad = 0
    for i, rep in enumerate(reports):
        last = i == len(reports) - 1
        status = "ok"
        if rep.problem is not None:
            status = f"{'torn tail' if last else 'CORRUPT'} at byte {rep.problem_at}: {rep.problem}"
            bad += 1
        elif rep.missing:
            status = f"{rep.missing} records MISSING before the next segment"
            bad += 1
        print(f"{rep.path.name}  offsets {rep.base}..{rep.base + rep.records - 1}  {rep.bytes} bytes  {status}")
    if not reports:
        print(f"{directory}: no segments")
    return 1 if bad else 0


def _dump(directory: Path, from_offset: int, limit: int | None) -> int:
    out = sys.stdout.buffer
    for n, (offset, payload) in enumerate(read_log_readonly(directory, from_offset)):
        if limit is not None and n >= limit:
            break
        rec = decode_record(payload)
        line: dict[str, object] = {"offset": offset}
        if isinstance(rec, Positions):
            line.update(input=rec.input, positions=rec.positions)
        elif isinstance(rec, Watermark):
            line.update(watermark=rec.ts_ms, origin=rec.origin)
        elif rec is None or isinstance(rec, Match):
            line.update(event={"undecodable_bytes": len(payload)})
        else:
            line.update(event=rec)
        out.write(orjson.dumps(line) + b"\n")
    out.flush()
    return 0


def _checkpoint(state_dir: Path) -> int:
    try:
        ck = load_checkpoint(state_dir)
    except StateError as exc:
        print(exc, file=sys.stderr)
        return 1
    if ck is None:
        print(f"{state_dir}: no checkpoint")
        return 0
    print(f"offset {ck.offset}  state {len(ck.state)} bytes")
    return 0
