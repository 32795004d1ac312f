"""Rule-count scaling: 10, 100 and 1,000 rules (the shipped pack and generated variants of it, see
bench/rulegen.py) over one mixed workload (sshd + nginx + CloudTrail events merged by time).

The events are parsed once (that CPU time is measured and is the same for every rule count), put in
columnar blocks of 4096 holding the fields the rules read (EventBlock.from_events, untimed: the block
parser's output), then fed to a fresh Engine per run with process_block: engine events/s per rule count (median of runs),
end-to-end events/s = events / (parse time + engine time), and the 1000-vs-10 time ratio of both.
"""

from __future__ import annotations

import gc
import statistics
import time

from siem.dsl.loader import RuleSet
from siem.engine.runtime import Engine
from siem.parse import ParseContext, parse
from siem.parse.block import EventBlock

from bench.rulegen import pack_variants
from bench.workload import NOW_MS

BATCH = 4096


def parse_mixed(sources: list[tuple[str, list[bytes]]]) -> tuple[list[dict], float]:
    ctx = ParseContext(now_ms=NOW_MS)
    t0 = time.process_time()
    events = [parse(fmt, raw, ctx, "bench") for fmt, lines in sources for raw in lines]
    cpu = time.process_time() - t0
    events.sort(key=lambda e: e["@timestamp"])  # one stream, as a collector merging the sources sees it
    return events, cpu


def engine_run(ruleset: RuleSet, events: list[dict]) -> tuple[float, int]:
    engine = Engine(ruleset, lateness_ms=10_000, future_skew_ms=None)
    fields = engine.projection.fields
    blocks = [EventBlock.from_events(events[i:i + BATCH], fields) for i in range(0, len(events), BATCH)]
    gc.collect()
    t0 = time.process_time()
    alerts = 0
    for block in blocks:
        alerts += len(engine.process_block(block))
    alerts += len(engine.flush())
    return time.process_time() - t0, alerts


def measure(base: RuleSet, sources: list[tuple[str, list[bytes]]], counts: tuple[int, ...] = (10, 100, 1000),
            runs: int = 3) -> dict:
    events, parse_cpu = parse_mixed(sources)
    n = len(events)
    rows = []
    for count in counts:
        ruleset = pack_variants(base, count)
        times, alerts = [], 0
        for _ in range(runs):
            t, alerts = engine_run(ruleset, events)
            times.append(t)
        eng = statistics.median(times)
        rows.append({"rules": count, "engine_cpu_s": eng, "engine_events_per_s": n / eng,
                     "e2e_events_per_s": n / (parse_cpu + eng), "alerts": alerts,
                     "engine_runs_events_per_s": [n / t for t in times]})
    first, last = rows[0], rows[-1]
    return {
        "events": n,
        "mix": {fmt: len(lines) for fmt, lines in sources},
        "parse_cpu_s": parse_cpu,
        "parse_events_per_s": n / parse_cpu,
        "rows": rows,
        "engine_time_ratio_max_vs_min": last["engine_cpu_s"] / first["engine_cpu_s"],
        "e2e_time_ratio_max_vs_min": (parse_cpu + last["engine_cpu_s"]) / (parse_cpu + first["engine_cpu_s"]),
    }
