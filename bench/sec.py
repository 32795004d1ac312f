"""SEC (Simple Event Correlator) and our engine side by side over the same sshd file.

SEC: ``sec --conf=F --input=FILE --fromstart --notail --nointevents --log=/dev/null`` with 1 and with
50 SingleWithThreshold rules (bench/rulegen.py: the same "Failed password ... from IP" regex,
``desc=bfNN $1``, ``action=write - ALERTNN $1``, window and threshold as ours; ``continue=TakeNext`` so
every rule sees every line). Its CPU time is taken from getrusage(RUSAGE_CHILDREN) (wall recorded too).
Ours: read + parse + engine (bench.stages.end_to_end) with the 1 and 50 equivalent DSL rules.
Detections: the set of source IPs alerted by rule 0 on each side, and the generator's attackers.

SEC windows on arrival time (reading a file with --fromstart, the whole file arrives in seconds, so a
300 s window spans all of it); our engine windows on event time. The sshd workload keeps brute-force
bursts compact and background sources under 5 failures each, so both definitions agree on it.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import orjson

from bench.rulegen import ssh_rules_dsl, ssh_rules_sec
from bench.stages import end_to_end


def sec_binary() -> str | None:
    return shutil.which("sec")


def run_sec(conf: Path, path: Path) -> tuple[float, float, list[str]]:
    """(cpu seconds, wall seconds, output lines) of one SEC run over `path`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    proc = subprocess.run(
        ["sec", f"--conf={conf}", f"--input={path}", "--fromstart", "--notail", "--nointevents", "--log=/dev/null"],
        capture_output=True, check=True, timeout=600)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, proc.stdout.decode().splitlines()


def measure(path: Path, lines: int, attackers: frozenset[str], rule_counts: tuple[int, ...] = (1, 50),
            runs: int = 3, sec_runs_many: int = 1) -> dict:
    if sec_binary() is None:
        return {"error": "sec is not installed (Debian package sec; deploy/install-test-deps.sh installs it)"}
    out: dict = {"lines": lines, "attackers": len(attackers), "rows": []}
    ips: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in rule_counts:
            conf = Path(tmp) / f"ssh{count}.sec"
            conf.write_text(ssh_rules_sec(count))
            sec_cpu, sec_wall = [], []
            got: list[str] = []
            # SEC with many rules is slow: one run unless asked (its rate is steady, it is one process)
            for _ in range(runs if count == 1 else sec_runs_many):
                cpu, wall, got = run_sec(conf, path)
                sec_cpu.append(cpu)
                sec_wall.append(wall)
            sec_ips = {ln.split()[1] for ln in got if ln.startswith("ALERT00 ")}
            ruleset = ssh_rules_dsl(count)
            ours = []
            for _ in range(runs):
                with open(Path(tmp) / "alerts.jsonl", "w+b") as f:
                    ours.append(end_to_end("syslog", path, ruleset, f))
                    f.seek(0)
                    our_ips = set()
                    for ln in f:
                        a = orjson.loads(ln)
                        if a.get("rule") == "ssh_bf_00":
                            our_ips.add(a["group"]["source.ip"])
            ips[f"sec_{count}"], ips[f"ours_{count}"] = sec_ips, our_ips
            sec_rate = lines / statistics.median(sec_cpu)
            our_rate = lines / statistics.median(r["cpu_s"] for r in ours)
            out["rows"].append({
                "rules": count,
                "lines": lines,
                "sec_lines_per_s": sec_rate,
                "sec_lines_per_s_wall": lines / statistics.median(sec_wall),
                "sec_runs": len(sec_cpu),
                "ours_lines_per_s": our_rate,
                "ours_lines_per_s_wall": lines / statistics.median(r["wall_s"] for r in ours),
                "ours_over_sec": our_rate / sec_rate,
                "sec_alerting_sources": len(sec_ips),
                "ours_alerting_sources": len(our_ips),
                "same_sources": sec_ips == our_ips,
                "sources_equal_attackers": our_ips == set(attackers),
                "only_sec": sorted(sec_ips - our_ips)[:10],
                "only_ours": sorted(our_ips - sec_ips)[:10],
            })
    return out
