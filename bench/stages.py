"""One format, one core: read-only, parse-only and end-to-end replay on the same file, stage by stage.

    python -m bench.stages --format syslog --file F [--runs 3] [--rules rules/]   (prints JSON)

Run as its own process by the runner so that peak RSS (getrusage ru_maxrss) is this measurement's.
End to end is the loop of siem/replay.py (`siem replay`) for one file: read blocks of lines
(siem.replay.line_blocks), parse them in blocks of 4096 as replay does (into columns with
siem.parse.block.parse_block and Engine.process_block when the rules allow a prefilter, see
siem.replay.use_blocks; else parse_batch and Engine.process), alerts serialised as
JSON lines to an output file; each stage is timed separately (CPU time of this process, which is less
disturbed by other processes on a shared machine than wall time; wall time is recorded too).

The daemon path is the columnar path with the durable log in between, as the daemon's intake and
evaluator would use it: each parsed block is encoded (siem.log.codec.encode_block), appended to a LocalLog, read back
and decoded (decode_block) before Engine.process_block; its CPU time over end to end's is the log's cost.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import orjson

from siem.cli import tune_gc
from siem.dsl.loader import RuleSet, load_rules
from siem.engine.runtime import Engine
from siem.log.codec import BlockSource, decode_block, encode_block
from siem.log.local import LocalLog
from siem.parse import ParseContext, parse_batch
from siem.parse.block import EventBlock, Projection, parse_block
from siem.replay import line_blocks, use_blocks

from bench.workload import NOW_MS

BATCH = 4096
LATENESS_MS = 10_000  # siem replay's default


def clock() -> float:
    return time.process_time()


def read_only(path: Path) -> dict:
    """Read the file's lines as replay does (siem.replay.line_blocks)."""
    c0, w0 = clock(), time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for block in line_blocks(f):
            n += len(block)
    return {"lines": n, "cpu_s": clock() - c0, "wall_s": time.perf_counter() - w0}


def batches_of_lines(path: Path, batch: int = BATCH):
    """The file's non-blank lines in lists of `batch` (the last one shorter), as replay reads them."""
    carry: list[bytes] = []
    with open(path, "rb") as f:
        for block in line_blocks(f):
            carry += [raw for raw in block if raw and not raw.isspace()]
            start = 0
            while len(carry) - start >= batch:
                yield carry[start: start + batch]
                start += batch
            del carry[:start]
    if carry:
        yield carry


def parse_only(fmt: str, path: Path, projection: Projection) -> dict:
    """Parse the file's lines as replay parses them (blocks of 4096 lines; parse_block with the rules'
    projection when use_blocks says so, else parse_batch), and nothing else: the floor of this implementation for the
    format and rules. Only the parse calls are timed (reading is the read-only floor)."""
    ctx = ParseContext(now_ms=NOW_MS)
    cpu = wall = 0.0
    failed = n = 0
    blocks = use_blocks(projection)
    for lines in batches_of_lines(path):
        c0, w0 = clock(), time.perf_counter()
        if blocks:
            block = parse_block(fmt, lines, ctx, projection, "bench")
        else:
            evs = parse_batch(fmt, lines, ctx, "bench")
        cpu += clock() - c0
        wall += time.perf_counter() - w0
        n += block.n if blocks else len(evs)
        failed += block.failed() if blocks else sum("error.message" in ev for ev in evs)
    return {"events": n, "failed": failed, "cpu_s": cpu, "wall_s": wall}


def end_to_end(fmt: str, path: Path, ruleset: RuleSet, out: IO[bytes], batch: int = BATCH,
               keep: list[Engine] | None = None, log_dir: Path | None = None) -> dict:
    """Replay one file through the rules; CPU seconds per stage, events, alerts (per rule).
    `keep` receives the engine (to look at its state afterwards). With `log_dir`, the daemon path:
    every block goes through a LocalLog there (through_log) between parsing and the engine."""
    ctx = ParseContext(now_ms=NOW_MS)
    engine = Engine(ruleset, lateness_ms=LATENESS_MS, future_skew_ms=None)
    if keep is not None:
        keep.append(engine)
    stages = {"read": 0.0, "parse": 0.0, "evaluate": 0.0, "alerting": 0.0}
    per_rule: dict[str, int] = {}
    events = alerts = 0
    origin = str(path)
    c_start, w_start = clock(), time.perf_counter()

    def emit(got: list) -> None:
        t0 = clock()
        for a in got:
            out.write(a.dumps() + b"\n")
            per_rule[a.rule_id] = per_rule.get(a.rule_id, 0) + 1
        stages["alerting"] += clock() - t0

    blocks = batches_of_lines(path, batch)
    constants = {"log.file.path": origin}
    projection = engine.projection
    columnar = log_dir is not None or use_blocks(projection)  # as siem replay chooses (use_blocks)
    while True:
        t0 = clock()
        lines = next(blocks, None)
        t1 = clock()
        stages["read"] += t1 - t0
        if lines is None:
            break
        if columnar:
            block = parse_block(fmt, lines, ctx, projection, "bench", constants)
        else:
            evs = parse_batch(fmt, lines, ctx, "bench")
            for ev in evs:
                ev.setdefault("log.file.path", origin)
        t2 = clock()
        stages["parse"] += t2 - t1
        if log_dir is not None:
            block = through_log(block, BlockSource.of(fmt, ctx, "bench", constants), log_dir, projection, stages)
        t3 = clock()
        got = engine.process_block(block) if columnar else engine.process(evs)
        stages["evaluate"] += clock() - t3
        events += block.n if columnar else len(evs)
        alerts += len(got)
        emit(got)
    t3 = clock()
    got = engine.flush()
    stages["evaluate"] += clock() - t3
    alerts += len(got)
    emit(got)
    out.flush()
    if log_dir is not None:
        _LOGS.pop(log_dir)[0].close()
    return {"events": events, "alerts": alerts, "alerts_by_rule": per_rule, "cpu_s": clock() - c_start,
            "wall_s": time.perf_counter() - w_start, "stages_cpu_s": stages}


_LOGS: dict[Path, tuple[LocalLog, list[int]]] = {}


def through_log(block: EventBlock, source: BlockSource, log_dir: Path, projection: Projection,
                stages: dict[str, float]) -> EventBlock:
    """The block after a trip through a LocalLog: encoded, appended, read back, decoded (the daemon's
    intake -> log -> evaluator), each step timed into `stages` ("log" holds their sum)."""
    got = _LOGS.get(log_dir)
    if got is None:
        got = _LOGS[log_dir] = (LocalLog(log_dir, fsync_interval_ms=None, retention_bytes=None), [0])
    log_, next_offset = got
    t0 = clock()
    records = encode_block(block, source, log_.max_record_bytes)
    log_.append_many(records)
    parts = []
    for offset, payload in log_.read(next_offset[0], len(records)):
        next_offset[0] = offset + 1
        back = decode_block(payload, projection, where=f"offset {offset}")
        if back is not None:
            parts.append(back)
    stages["log"] = stages.get("log", 0.0) + clock() - t0
    out = parts[0]
    for p in parts[1:]:
        out = out.concat(p)
    return out


def peak_rss_mib() -> float:
    """Peak RSS of this process image (VmHWM: unlike ru_maxrss it does not inherit the parent's peak
    across fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure(fmt: str, path: Path, rules: list[str], runs: int) -> dict:
    ruleset = load_rules(rules)
    projection = Engine(ruleset).projection
    e2e: list[dict] = []
    daemon: list[dict] = []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        e2e.append(end_to_end(fmt, path, ruleset, out))
        rss_e2e = peak_rss_mib()
        reads = [read_only(path) for _ in range(runs)]
        parses = []
        # interleaved, so that a noisy neighbour slows both sides of the ratio alike
        for i in range(runs):
            gc.collect()
            parses.append(parse_only(fmt, path, projection))
            if i:
                gc.collect()
                out.seek(0)
                out.truncate()
                e2e.append(end_to_end(fmt, path, ruleset, out))
            gc.collect()
            out.seek(0)
            out.truncate()
            daemon.append(end_to_end(fmt, path, ruleset, out, log_dir=Path(tmp) / f"log{i}"))
    n = e2e[0]["events"]
    stage_rates = {}
    for st in ("read", "parse", "evaluate", "alerting"):
        t = statistics.median(r["stages_cpu_s"][st] for r in e2e)
        stage_rates[st] = {"cpu_s": t, "events_per_s": n / t if t > 0 else None}
    result = {
        "format": fmt,
        "file": str(path),
        "bytes": path.stat().st_size,
        "lines": reads[0]["lines"],
        "events": n,
        "rules": len(ruleset.rules),
        "runs": runs,
        "read_lines_per_s": reads[0]["lines"] / median_of(reads, "cpu_s"),
        "parse_events_per_s": parses[0]["events"] / median_of(parses, "cpu_s"),
        "e2e_events_per_s": n / median_of(e2e, "cpu_s"),
        "e2e_events_per_s_wall": n / median_of(e2e, "wall_s"),
        "e2e_runs_events_per_s": [n / r["cpu_s"] for r in e2e],
        "parse_runs_events_per_s": [r["events"] / r["cpu_s"] for r in parses],
        "stages": stage_rates,
        "alerts": e2e[0]["alerts"],
        "alerts_by_rule": e2e[0]["alerts_by_rule"],
        "parse_failed": parses[0]["failed"],
        "peak_rss_mib": rss_e2e,
    }
    result["ratio_e2e_to_parse"] = result["e2e_events_per_s"] / result["parse_events_per_s"]
    result["daemon_path_events_per_s"] = n / median_of(daemon, "cpu_s")
    result["daemon_path_log_cpu_s"] = statistics.median(r["stages_cpu_s"]["log"] for r in daemon)
    result["daemon_path_over_replay"] = median_of(daemon, "cpu_s") / median_of(e2e, "cpu_s")
    result["daemon_path_alerts_equal"] = all(r["alerts_by_rule"] == e2e[0]["alerts_by_rule"] for r in daemon)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", required=True)
    ap.add_argument("--file", type=Path, required=True)
    ap.add_argument("--rules", action="append", default=None)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    tune_gc()  # as `siem replay` runs
    rules = args.rules or [str(Path(__file__).resolve().parent.parent / "rules")]
    result = measure(args.format, args.file, rules, args.runs)
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
