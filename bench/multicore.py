"""Multi-core: the real daemon (`siem run`) backfilling one sshd file with 0 and with N parse workers.

The daemon parses intake batches of 256 records or more in worker processes (`[daemon] parse_workers`),
while its own process reads files, appends to the log and runs the engine. Each run starts a fresh
daemon on a fresh state directory with a files input over the workload, and the clock stops when the
alert log holds every alert `siem replay` finds in the same file (so both runs did all the work).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"


def _replay_alert_count(path: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "siem", "replay", "--rules", str(RULES_DIR), "--timezone", "UTC",
                          "--quiet", str(path)], capture_output=True, timeout=600, check=True)
    return sum(1 for line in out.stdout.splitlines() if line.strip())


def _daemon_run(path: Path, workers: int, expected: int, timeout_s: float = 300) -> float:
    """Seconds from start until the alert log holds `expected` alerts (the daemon's own start included)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config = base / "siem.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{base / "state"}"\nrules = ["{RULES_DIR}"]\nmetrics_address = ""\n'
            f'parse_workers = {workers}\ntimezone = "UTC"\nlog_level = "warning"\n'
            f'[inputs.backfill]\ntype = "files"\nformat = "syslog"\npaths = ["{path}"]\n')
        alerts = base / "state" / "alerts" / "alerts.jsonl"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "siem", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base)
        try:
            while time.perf_counter() - started < timeout_s:
                if alerts.exists():
                    with open(alerts, "rb") as f:
                        if sum(1 for _ in f) >= expected:
                            return time.perf_counter() - started
                if proc.poll() is not None:
                    raise RuntimeError(f"siem run exited with {proc.returncode}")
                time.sleep(0.1)
            raise TimeoutError(f"the daemon did not write {expected} alerts within {timeout_s:.0f}s")
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def measure(path: Path, lines: int, runs: int = 3, workers: int | None = None) -> dict:
    n = workers or max(os.cpu_count() or 1, 2)
    expected = _replay_alert_count(path)
    one = [_daemon_run(path, 0, expected) for _ in range(runs)]
    many = [_daemon_run(path, n, expected) for _ in range(runs)]
    t1, tn = statistics.median(one), statistics.median(many)
    return {
        "what": "siem run backfilling one sshd file: parse_workers = 0 vs N (wall time until every alert is logged)",
        "format": "syslog", "events": lines, "alerts": expected, "workers": n, "cpus": os.cpu_count(),
        "seconds_no_workers": t1, "seconds_workers": tn,
        "events_per_s_no_workers": lines / t1, "events_per_s_workers": lines / tn,
        "runs_no_workers_s": one, "runs_workers_s": many, "speedup": t1 / tn,
    }
