"""cProfile of one end-to-end replay: the top functions by own time, and the share of each stage.

cProfile adds a cost per Python call, so absolute times are inflated and call-heavy code (the
parsers) looks a little worse than it is; the ranking is what matters.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from siem.dsl.loader import RuleSet

from bench.stages import end_to_end


def profile_e2e(fmt: str, path: Path, ruleset: RuleSet, top: int = 15) -> dict:
    prof = cProfile.Profile()
    engines: list = []
    with tempfile.TemporaryFile() as out:
        result = prof.runcall(end_to_end, fmt, path, ruleset, out, keep=engines)
    # what a daemon checkpoint costs with this state: Engine.snapshot() (all window state, encoded)
    t0 = time.perf_counter()
    blob = engines[0].snapshot()
    snap_s = time.perf_counter() - t0
    stage_cpu = result["stages_cpu_s"]
    whole = sum(stage_cpu.values()) or 1.0
    return {
        "format": fmt,
        "events": result["events"],
        "stage_share": {k: v / whole for k, v in stage_cpu.items()},
        "hottest_stage": max(stage_cpu, key=stage_cpu.__getitem__),
        "snapshot_after_replay": {"window_keys": sum(engines[0].window_keys().values()), "seconds": snap_s,
                                  "bytes": len(blob)},
        **_top(prof, top),
    }


def profile_engine(ruleset: RuleSet, events: list[dict], top: int = 15) -> dict:
    """cProfile of Engine.process over parsed events (no parsing): where many rules spend their time."""
    from siem.engine.runtime import Engine  # noqa: PLC0415

    engine = Engine(ruleset, lateness_ms=10_000, future_skew_ms=None)  # compiling is not profiled

    def feed() -> None:
        for i in range(0, len(events), 4096):
            engine.process(events[i:i + 4096])
        engine.flush()

    prof = cProfile.Profile()
    prof.runcall(feed)
    return {"rules": len(ruleset.rules), "events": len(events), **_top(prof, top)}


def _top(prof: cProfile.Profile, top: int) -> dict:
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{_short(file)}:{line}({func})", "calls": nc, "own_s": tt, "cum_s": ct,
                     "own_share": tt / total if total else 0.0, "cum_share": ct / total if total else 0.0})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return {"profiled_total_s": total, "top": rows[:top]}


def _short(file: str) -> str:
    for marker in ("/siem/", "/bench/", "/site-packages/", "/lib/python3"):
        i = file.find(marker)
        if i >= 0:
            return file[i + 1:]
    return file
