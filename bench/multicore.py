"""Multi-core: the real daemon (`siem run`) backfilling one sshd file with 0 and with N parse workers.

The daemon parses intake batches of 256 records or more in worker processes (`[daemon] parse_workers`),
while its own process reads files, appends to the log and runs the engine. Each run starts a fresh
daemon on a fresh state directory with a files input over the workload, and the clock stops when the
alert log holds every alert `siem replay` finds in the same file (so both runs did all the work). That wall time includes fixed
costs (start-up, spawning the workers, the final idle_advance hold of 2 s), so the speed-up is taken from
the steady rate instead: events evaluated per second between 10% and 90% of the file, read from the
daemon's siem_rule_evaluations_total every 50 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_latency import evaluated

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"


def _replay_alert_count(path: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "siem", "replay", "--rules", str(RULES_DIR), "--timezone", "UTC",
                          "--quiet", str(path)], capture_output=True, timeout=600, check=True)
    return sum(1 for line in out.stdout.splitlines() if line.strip())


def _daemon_run(path: Path, lines: int, workers: int, expected: int, timeout_s: float = 300) -> dict:
    """One backfill: seconds from start until the alert log holds `expected` alerts (start-up and the final
    idle_advance hold included), and the steady rate: events evaluated per second between 10% and 90% of
    the file, from siem_rule_evaluations_total scraped every 50 ms (fixed costs excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config = base / "siem.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{base / "state"}"\nrules = ["{RULES_DIR}"]\nmetrics_address = "127.0.0.1:0"\n'
            f'parse_workers = {workers}\ntimezone = "UTC"\nlog_level = "warning"\n'
            f'[inputs.backfill]\ntype = "files"\nformat = "syslog"\npaths = ["{path}"]\n')
        alerts = base / "state" / "alerts" / "alerts.jsonl"
        run_file = base / "state" / "run.json"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "siem", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base)
        port = 0
        progress: list[tuple[float, float]] = []  # (seconds, events evaluated)
        try:
            while time.perf_counter() - started < timeout_s:
                if not port and run_file.exists():
                    try:
                        port = int(json.loads(run_file.read_text()).get("metrics_port") or 0)
                    except (ValueError, TypeError):
                        pass
                if port:
                    try:
                        progress.append((time.perf_counter() - started, evaluated(port)))
                    except OSError:
                        pass
                if alerts.exists():
                    with open(alerts, "rb") as f:
                        if sum(1 for _ in f) >= expected:
                            return {"seconds": time.perf_counter() - started, "steady_events_per_s": _steady(progress, lines)}
                if proc.poll() is not None:
                    raise RuntimeError(f"siem run exited with {proc.returncode}")
                time.sleep(0.05)
            raise TimeoutError(f"the daemon did not write {expected} alerts within {timeout_s:.0f}s")
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _steady(progress: list[tuple[float, float]], lines: int) -> float | None:
    """Events per second between the first samples at or past 10% and 90% of the file."""
    lo = next(((t, v) for t, v in progress if v >= 0.1 * lines), None)
    hi = next(((t, v) for t, v in progress if v >= 0.9 * lines), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return None
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def measure(path: Path, lines: int, runs: int = 3, workers: int | None = None) -> dict:
    n = workers or max(os.cpu_count() or 1, 2)
    expected = _replay_alert_count(path)
    one, many = [], []
    for _ in range(runs):  # interleaved, so that a noisy neighbour slows both alike
        one.append(_daemon_run(path, lines, 0, expected))
        many.append(_daemon_run(path, lines, n, expected))
    t1, tn = statistics.median(r["seconds"] for r in one), statistics.median(r["seconds"] for r in many)
    r1 = [r["steady_events_per_s"] for r in one if r["steady_events_per_s"]]
    rn = [r["steady_events_per_s"] for r in many if r["steady_events_per_s"]]
    s1, sn = (statistics.median(r1) if r1 else None), (statistics.median(rn) if rn else None)
    return {
        "what": "siem run backfilling one sshd file: parse_workers = 0 vs N (steady evaluation rate, and wall "
                "time until every alert is logged)",
        "format": "syslog", "events": lines, "alerts": expected, "workers": n, "cpus": os.cpu_count(),
        "seconds_no_workers": t1, "seconds_workers": tn,
        "events_per_s_no_workers": lines / t1, "events_per_s_workers": lines / tn,
        "runs_no_workers": one, "runs_workers": many, "speedup_wall": t1 / tn,
        "steady_events_per_s_no_workers": s1, "steady_events_per_s_workers": sn,
        "speedup": (sn / s1) if s1 and sn else t1 / tn,
    }


def measure_replay(path: Path, rules: Path = RULES_DIR, runs: int = 3, workers: int | None = None) -> dict:
    """`siem replay` of one file with the columnar parser in this process (--workers 0) and in one worker
    process per CPU (--workers N), runs alternating: median wall seconds of each and their ratio, and
    whether both gave the same alerts. Wall time, start-up included (the point is the cores)."""
    workers = workers or os.cpu_count() or 2
    walls: dict[int, list[float]] = {0: [], workers: []}
    outs: dict[int, bytes] = {}
    for _ in range(runs):
        for w in (0, workers):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "siem", "replay", "--rules", str(rules), "--quiet",
                                   "--workers", str(w), str(path)], capture_output=True, timeout=900, check=True)
            walls[w].append(time.perf_counter() - t0)
            outs[w] = b"\n".join(sorted(json.loads(x)["id"].encode() for x in proc.stdout.splitlines() if x.strip()))
    one, many = statistics.median(walls[0]), statistics.median(walls[workers])
    return {"file": str(path), "rules": str(rules), "workers": workers, "cpus": os.cpu_count(),
            "wall_s_no_workers": one, "wall_s_workers": many, "runs_wall_s": {str(k): v for k, v in walls.items()},
            "speedup": one / many, "same_alerts": outs[0] == outs[workers]}
