"""`siem replay --rules rules/ FILE...`: run the rules over log files (or stdin, ``-``) and print the alerts:
one readable line each on a terminal, JSON lines when piped or with ``--format json``.

Files are read in parallel streams merged by event time (a log per host replays as if live), parsed
with the format given or detected from the first lines, and fed to the engine in micro-batches.
A summary goes to stderr; a progress line too when stderr is a terminal and the input is large.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import sys
import time
from pathlib import Path
from typing import IO, Callable, Iterator

from siem.dsl.loader import load_rules
from siem.engine.runtime import Engine
from siem.enrich import GeoSpec, enrich
from siem.enrich import check as check_geo
from siem.errors import RuleError
from siem.parse import PARSERS, ParseContext, parse_batch, parse_cloudtrail_record
from siem.parse.auditd import EventAssembler, join_lines
from siem.parse.base import MAX_JSON_BYTES
from siem.parse.block import BlockParsers, EventBlock, Projection
from siem.parse.block import parse_block as parse_columns
from siem.parse.detect import detect_format, open_log
from siem.parse.jsonfmt import loads_exact
from siem.schema import Event

BATCH_SIZE = 4096
READ_BLOCK_BYTES = 1 << 20
MAX_RECORD_BYTES = 2 * MAX_JSON_BYTES  # a longer line is passed on in pieces (parse cuts each to its limit)
PROGRESS_MIN_BYTES = 20 << 20
CLOUDTRAIL_FILE_MAX = 256 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="log files or directories (.gz is read too); - reads stdin")
    parser.add_argument("--rules", action="append",
                        help="rule file or directory (repeatable; default: the rules of --config, or ./rules)")
    parser.add_argument("--log-format", choices=sorted(PARSERS), help="input format (default: detected per file)")
    parser.add_argument("--format", default="auto",
                        help="output: text (one line per alert), json (JSON lines), auto (text on a terminal, "
                             "JSON otherwise; the default)")
    parser.add_argument("--lateness", default="10s", help="allowed event-time lateness (default 10s)")
    parser.add_argument("--timezone", default="UTC", help="zone of timestamps that carry none (default UTC)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=0,
                        help="parse one file in this many worker processes, into columnar blocks "
                             "(default 0: in this process)")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")
    parser.add_argument("--geoip", default="off", help='GeoIP enrichment: "off" (default), "builtin" or a MaxMind .mmdb')
    parser.add_argument("--geoip-asn", default="", help="a MaxMind ASN .mmdb (with --geoip PATH)")


def rule_paths(args: argparse.Namespace) -> list[str]:
    """--rules, else the rules of -c/--config, else the embedded default (./rules). ConfigError from a bad config."""
    if getattr(args, "rules", None):
        return list(args.rules)
    from siem.config import load_config  # noqa: PLC0415

    return list(load_config(getattr(args, "config", None)).daemon.rules)


def _cloudtrail_file(path: Path, ctx: ParseContext) -> Iterator[Event] | None:
    """A CloudTrail delivery file ({"Records": [...]}) as events; None when the file is not one."""
    with open_log(path) as f:
        head = f.read(64)
        if not head.lstrip().startswith(b"{") or b'"Records"' not in head + f.read(4096):
            return None
        f.seek(0)
        data = f.read(CLOUDTRAIL_FILE_MAX + 1)
    text = data.decode("utf-8", "replace")
    try:
        doc = loads_exact(text)  # integers beyond 64 bits keep their digits
    except ValueError:  # records concatenated without commas and the like: what the collector can read
        from siem.collect.cloudtrail import Malformed, iter_records  # noqa: PLC0415

        problems: list[str] = []
        found: list[object] = []
        try:
            found.extend(iter_records(text, problems))
        except Malformed:
            pass
        if not found:
            return None
        print(f"replay: {path}: {len(found)} records read despite {', '.join(sorted(set(problems))) or 'invalid JSON'}",
              file=sys.stderr)
        doc = {"Records": found}
    records = doc.get("Records") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        return None
    return (parse_cloudtrail_record(r, ctx) for r in records)


STDIN = Path("-")


def events_of(path: Path, fmt: str | None, ctx: ParseContext, counters: dict[str, int]) -> Iterator[Event]:
    if path == STDIN:  # lines as they come; a year-less timestamp takes its year from now
        from siem.timeutil import wall_ms  # noqa: PLC0415

        yield from _line_events(sys.stdin.buffer, "<stdin>", fmt, dataclasses.replace(ctx, now_ms=wall_ms()),
                                counters, path)
        return
    if ctx.now_ms is None:  # lines without a year (RFC 3164) take it from when the file was last written
        ctx = dataclasses.replace(ctx, now_ms=path.stat().st_mtime_ns // 1_000_000)
    if fmt in (None, "cloudtrail"):
        records = _cloudtrail_file(path, ctx)
        if records is not None:
            for ev in records:
                if ctx.geo is not None:
                    enrich(ev, ctx.geo)
                counters["events"] += 1
                counters["failed"] += "error.message" in ev
                yield ev
            return
    with open_log(path) as f:
        yield from _line_events(f, str(path), fmt, ctx, counters, path)


def _line_events(f: IO[bytes], file_path: str, fmt: str | None, ctx: ParseContext, counters: dict[str, int],
                 path: Path) -> Iterator[Event]:
    """The events of a line-oriented file or stream (audit records of one event joined into one)."""
    chosen = fmt
    assembler: EventAssembler | None = None
    for block in line_blocks(f, READ_BLOCK_BYTES if path != STDIN else 0):
        counters["bytes"] += sum(map(len, block)) + len(block)
        chosen = chosen or detect_format(path, block[:64])
        if chosen == "auditd":  # the records of one event become one event (siem.parse.auditd)
            assembler = assembler or EventAssembler()
            block = join_lines([ln for ln in block if ln and not ln.isspace()], assembler)
        events = parse_block(chosen, block, ctx, file_path)
        counters["events"] += len(events)
        counters["failed"] += sum("error.message" in ev for ev in events)
        yield from events
    if assembler is not None:
        events = parse_block("auditd", [b"\n".join(ls) for _, ls, _ in assembler.flush() if ls], ctx, file_path)
        counters["events"] += len(events)
        counters["failed"] += sum("error.message" in ev for ev in events)
        yield from events


def blocks_of(path: Path, fmt: str | None, ctx: ParseContext, counters: dict[str, int],
              projection: Projection, batch_size: int = BATCH_SIZE, workers: int = 0) -> Iterator[EventBlock]:
    """The file's events as columnar blocks (siem.parse.block) of `batch_size` rows (the last one
    shorter) holding what `projection` reads: the events of events_of, in the same micro-batches,
    restricted to those fields (and prefiltered rows kept raw). With `workers`, blocks are parsed in
    that many worker processes (siem.parse.block.BlockParsers)."""
    if ctx.now_ms is None:
        ctx = dataclasses.replace(ctx, now_ms=path.stat().st_mtime_ns // 1_000_000)
    if fmt in (None, "cloudtrail"):
        records = _cloudtrail_file(path, ctx)
        if records is not None:
            while chunk := list(itertools.islice(records, batch_size)):
                counters["events"] += len(chunk)
                counters["failed"] += sum("error.message" in ev for ev in chunk)
                yield EventBlock.from_events(chunk, projection.fields)
            return
    constants = {"log.file.path": str(path)}
    if workers:
        with BlockParsers(workers, ctx, projection, "replay") as parsers:
            for block in parsers.map((fmt, lines, constants) for fmt, lines in _line_batches(path, fmt, counters,
                                                                                               batch_size)):
                yield _counted(block, counters)
        return
    for chosen, lines in _line_batches(path, fmt, counters, batch_size):
        yield _counted(parse_columns(chosen, lines, ctx, projection, "replay", constants), counters)


def _line_batches(path: Path, fmt: str | None, counters: dict[str, int], batch_size: int) -> Iterator[tuple[str, list[bytes]]]:
    """(format, non-blank lines) of the file in lists of `batch_size` (the last one shorter)."""
    with open_log(path) as f:
        chosen = fmt
        carry: list[bytes] = []
        for lines in line_blocks(f):
            counters["bytes"] += sum(map(len, lines)) + len(lines)
            chosen = chosen or detect_format(path, lines[:64])
            carry += lines if all(lines) and not any(map(bytes.isspace, lines)) else [
                raw for raw in lines if raw and not raw.isspace()]
            start = 0
            while len(carry) - start >= batch_size:
                yield chosen, carry[start: start + batch_size]
                start += batch_size
            del carry[:start]
        if carry and chosen:
            yield chosen, carry


def use_blocks(projection: Projection) -> bool:
    """Whether replay parses into columnar blocks: when the rules let the prefilter skip records.
    Without a prefilter every record goes through the per-line parser anyway, and projecting its
    event dicts into columns costs more than the engine saves on them (sshd with the shipped pack:
    parse +40%, engine +35% CPU, measured): the per-event path is kept then."""
    return projection.wanted is not None


def _counted(block: EventBlock, counters: dict[str, int]) -> EventBlock:
    counters["events"] += block.n
    counters["failed"] += block.failed()
    return block


def parse_block(fmt: str, block: list[bytes], ctx: ParseContext, file_path: str) -> list[Event]:
    """The events of a block of lines of one file (blank lines skipped), each with its log.file.path."""
    events = parse_batch(fmt, [raw for raw in block if raw and not raw.isspace()], ctx, input_name="replay")
    for ev in events:
        if "log.file.path" not in ev:
            ev["log.file.path"] = file_path
    return events


def line_blocks(f: IO[bytes], block_bytes: int = READ_BLOCK_BYTES) -> Iterator[list[bytes]]:
    """The lines of a binary file without their line ends (LF or CRLF), a list per block read: one C-level
    split per block instead of one Python iteration step, and one line-end strip, per line. ``block_bytes``
    0 reads whatever a pipe holds (up to a full block) instead of waiting for a full block."""
    tail = b""
    read = f.read1 if block_bytes == 0 and hasattr(f, "read1") else f.read  # 0: what a pipe has, unblocked
    while data := read(block_bytes or READ_BLOCK_BYTES):
        buf = tail + data if tail else data
        lines = buf.split(b"\n")
        tail = lines.pop()
        if len(tail) > MAX_RECORD_BYTES:  # no line end in sight: a piece of it goes on (and is cut by the parser)
            lines.append(tail)
            tail = b""
        if b"\r" in buf:
            lines = [ln[:-1] if ln[-1:] == b"\r" else ln for ln in lines]
        if lines:
            yield lines
    if tail:
        yield [tail[:-1] if tail[-1:] == b"\r" else tail]


def input_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p == STDIN:
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_log_file(f)))
        else:
            out.append(p)
    return out


NOT_LOGS_SUFFIXES = frozenset({".md", ".txt", ".csv", ".tsv", ".yaml", ".yml", ".py", ".sh", ".toml", ".html", ".pdf"})
NOT_LOGS_NAMES = ("license", "readme", "notice", "copying", "authors")


def is_log_file(path: Path) -> bool:
    """Whether a file found in a directory is a log (documentation and data tables next to logs are not)."""
    name = path.name.lower()
    return not (name.startswith(".") or name.startswith(NOT_LOGS_NAMES) or path.suffix.lower() in NOT_LOGS_SUFFIXES)


def run(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from siem.alert.console import FORMATS, AlertPrinter
    from siem.errors import ConfigError
    from siem.timeutil import parse_duration_ms

    if args.format not in FORMATS:
        hint = f" (the input format is --log-format {args.format})" if args.format in PARSERS else ""
        print(f"siem replay: --format: expected one of {', '.join(FORMATS)}, got {args.format!r}{hint}",
              file=sys.stderr)
        return 2
    try:
        ruleset = load_rules(rule_paths(args))
    except (RuleError, ConfigError) as exc:
        print(exc, file=sys.stderr)
        return 2
    files = input_files(args.files)
    missing = [f for f in files if f != STDIN and not f.is_file()]
    if missing or not files:
        print(f"siem replay: no such file: {', '.join(map(str, missing)) or ' '.join(args.files)}", file=sys.stderr)
        return 2
    if files.count(STDIN) > 1:
        print("siem replay: - (stdin) can be given once", file=sys.stderr)
        return 2
    try:
        lateness_ms = parse_duration_ms(args.lateness)
    except ValueError as exc:
        print(f"siem replay: --lateness: {exc}", file=sys.stderr)
        return 2
    geo = None if args.geoip == "off" else GeoSpec(args.geoip, args.geoip_asn)
    problem = check_geo(geo) if geo is not None else None
    if problem is not None:
        print(f"siem replay: --geoip {args.geoip}: {problem}", file=sys.stderr)
        return 2
    counters = {"events": 0, "failed": 0, "bytes": 0, "alerts": 0}
    total_bytes = sum(f.stat().st_size for f in files if f != STDIN)
    show_progress = (sys.stderr.isatty() and total_bytes >= PROGRESS_MIN_BYTES and not args.quiet
                     and STDIN not in files)
    printer = AlertPrinter(args.format, sys.stdout.buffer)
    started = time.perf_counter()
    last_progress = started
    for alerts in replay_alerts(files, ruleset, fmt=args.log_format, tz=ZoneInfo(args.timezone),
                                lateness_ms=lateness_ms, batch_size=args.batch_size,
                                counters=counters, geo=geo, workers=args.workers):
        _emit(alerts, printer, counters)
        if show_progress and time.perf_counter() - last_progress > 0.5:
            last_progress = time.perf_counter()
            _progress(counters, total_bytes, last_progress - started)
    elapsed = time.perf_counter() - started
    if show_progress:
        sys.stderr.write("\r\x1b[K")
    if not args.quiet:
        rate = counters["events"] / elapsed if elapsed > 0 else 0.0
        print(
            f"replay: {counters['events']} events from {len(files)} file(s), {counters['failed']} parse failures, "
            f"{counters['alerts']} alerts, {len(ruleset.rules)} rules, {elapsed:.2f}s, {rate:,.0f} events/s",
            file=sys.stderr,
        )
    return 0


def replay_alerts(files: list[Path], ruleset: object, *, fmt: str | None = None, tz: object = None,
                  lateness_ms: int = 10_000, batch_size: int = BATCH_SIZE,
                  counters: dict[str, int] | None = None, geo: GeoSpec | None = None,
                  workers: int = 0) -> Iterator[list]:
    """The alerts of the rules over the files (merged by event time), a list per micro-batch. `counters`
    gets events, failed, bytes and the event-time span first_ms / last_ms. One file is read in columnar
    blocks (siem.parse.block) when the rules let the prefilter skip lines, or with parse `workers`."""
    from datetime import UTC  # noqa: PLC0415

    counters = counters if counters is not None else {}
    for k in ("events", "failed", "bytes"):
        counters.setdefault(k, 0)
    ctx = ParseContext(tz=tz or UTC, now_ms=None, geo=geo)  # type: ignore[arg-type]
    engine = Engine(ruleset, lateness_ms=lateness_ms, future_skew_ms=None)  # type: ignore[arg-type]
    if len(files) == 1 and files[0] != STDIN and (use_blocks(engine.projection) or workers):
        bspan: list[int] = []
        for block in blocks_of(files[0], fmt, ctx, counters, engine.projection, batch_size, workers):
            if len(block.ts):
                bspan += (int(block.ts.min()), int(block.ts.max()))
            yield engine.process_block(block)
        yield engine.flush()
        if bspan:
            counters["first_ms"], counters["last_ms"] = min(bspan), max(bspan)
        return
    streams = [events_of(f, fmt, ctx, counters) for f in files]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_ts_key)
    span: list[int] = []  # the times of each batch's first and last event (the stream is in time order)
    batch: list[Event] = []
    for ev in merged:
        batch.append(ev)
        if len(batch) >= batch_size:
            span += (_ts_key(batch[0]), _ts_key(batch[-1]))
            yield engine.process(batch)
            batch = []
    if batch:
        span += (_ts_key(batch[0]), _ts_key(batch[-1]))
    yield engine.process(batch) + engine.flush()
    if span:
        counters["first_ms"], counters["last_ms"] = min(span), max(span)


def _ts_key(ev: Event) -> int:
    t = ev.get("@timestamp")
    return t if type(t) is int else 0  # type: ignore[return-value]


def _emit(alerts: list, printer: Callable[[list], None], counters: dict[str, int]) -> None:
    printer(alerts)
    counters["alerts"] += len(alerts)


def _progress(counters: dict[str, int], total: int, elapsed: float) -> None:
    pct = 100.0 * counters["bytes"] / total if total else 100.0
    rate = counters["events"] / elapsed if elapsed else 0.0
    sys.stderr.write(f"\r{pct:5.1f}%  {counters['events']:,} events  {rate:,.0f}/s  {counters['alerts']} alerts")
    sys.stderr.flush()

