"""PROTOTYPE (not the daemon): parsing in a multiprocessing.Pool of 2 workers feeding one engine.

The daemon (siem/daemon.py) parses in a worker *thread* of its one process (``Daemon._encode`` via
asyncio.to_thread), so parsing and rule evaluation share one core under the GIL. This measures the
speed-up a process pool could give on this machine: the file is cut into chunks of 4096 lines, workers
parse a chunk each and send the events back as one orjson document (cheaper than pickling dicts), the
main process decodes them and runs Engine.process in order (Pool.imap keeps chunk order). Wall time is
compared with the same replay in one process (bench.stages.end_to_end), run just before.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import orjson

from siem.dsl.loader import RuleSet
from siem.engine.runtime import Engine
from siem.parse import ParseContext, parse

from bench.stages import end_to_end
from bench.workload import NOW_MS

CHUNK = 4096
_fmt = "syslog"
_origin = ""


def _init(fmt: str, origin: str) -> None:
    global _fmt, _origin
    _fmt, _origin = fmt, origin


def _parse_chunk(lines: list[bytes]) -> bytes:
    ctx = ParseContext(now_ms=NOW_MS)
    out = []
    for raw in lines:
        if raw.strip():
            ev = parse(_fmt, raw, ctx, "replay")
            ev.setdefault("log.file.path", _origin)
            out.append(ev)
    return orjson.dumps(out)


def _chunks(path: Path):
    with open(path, "rb") as f:
        while chunk := list(islice(f, CHUNK)):
            yield chunk


def pooled(fmt: str, path: Path, ruleset: RuleSet, workers: int = 2) -> dict:
    engine = Engine(ruleset, lateness_ms=10_000, future_skew_ms=None)
    ctx = multiprocessing.get_context("fork")
    events = alerts = 0
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool = ctx.Pool(workers, initializer=_init, initargs=(fmt, str(path)))
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        for blob in pool.imap(_parse_chunk, _chunks(path), chunksize=1):
            evs = orjson.loads(blob)
            events += len(evs)
            alerts += len(engine.process(evs))
        alerts += len(engine.flush())
        wall, main_cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        pool.close()
        pool.join()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    return {"events": events, "alerts": alerts, "wall_s": wall, "main_cpu_s": main_cpu, "workers_cpu_s": workers_cpu}


def measure(fmt: str, path: Path, ruleset: RuleSet, runs: int = 3, workers: int = 2) -> dict:
    single, multi = [], []
    with tempfile.TemporaryFile() as out:
        for _ in range(runs):
            out.seek(0)
            out.truncate()
            single.append(end_to_end(fmt, path, ruleset, out))
            multi.append(pooled(fmt, path, ruleset, workers))
    n = single[0]["events"]
    one = n / statistics.median(r["wall_s"] for r in single)
    many = n / statistics.median(r["wall_s"] for r in multi)
    # noise-robust estimate for an otherwise idle machine with `cpus` cores: the critical path is the
    # main process (decode + engine) or the total CPU spread over the cores, whichever is longer
    single_cpu = statistics.median(r["cpu_s"] for r in single)
    main_cpu = statistics.median(r["main_cpu_s"] for r in multi)
    workers_cpu = statistics.median(r["workers_cpu_s"] for r in multi)
    cpus = multiprocessing.cpu_count()
    bound = max(main_cpu, (main_cpu + workers_cpu) / cpus)
    return {
        "prototype": True,
        "what": f"bench/multicore.py: multiprocessing.Pool({workers}) parsing 4096-line chunks, one engine "
                "in the main process; NOT what `siem run` does (its parsing is a thread in the one process)",
        "format": fmt,
        "events": n,
        "workers": workers,
        "cpus": multiprocessing.cpu_count(),
        "single_events_per_s_wall": one,
        "pool_events_per_s_wall": many,
        "speedup": many / one,
        "single_cpu_s": single_cpu,
        "pool_main_cpu_s": main_cpu,
        "pool_workers_cpu_s": workers_cpu,
        "speedup_cpu_bound_estimate": single_cpu / bound,
        "same_alert_count": single[0]["alerts"] == multi[0]["alerts"],
        "alerts_single": single[0]["alerts"],
        "alerts_pool": multi[0]["alerts"],
    }
