"""What the converted SigmaHQ rules cost the engine, against the shipped pack (`python -m bench.sigma`).

One mixed workload (sshd syslog + nginx + CloudTrail, bench/workload.py, parsed once), three engines
fed the same micro-batches in one process, one after the other, each run `--runs` times (median CPU):

* ``pack``: the shipped pack (rules/);
* ``sigma``: every Sigma rule that converts (``siem sigma import`` of ../shared/datasets/sigmahq_rules);
* ``pack+sigma``: both in one engine, as a user who imports them next to the pack runs them.

Printed: rule count, engine CPU seconds, events/s, alerts, and the ratios sigma/pack and
(pack+sigma)/pack: the cost of the converted rules measured as a ratio in one run, not as a timed
assertion. Converted rules are ordinary rules, so they share the pack's masks and per-value caches
(e.g. ``event.dataset == "aws.cloudtrail"`` is computed once per batch for every rule that tests it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from siem.cli import tune_gc
from siem.dsl.loader import RuleSet, load_texts

from bench import workload
from bench.rulegen import shipped_pack
from bench.scaling import engine_run, parse_mixed

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIGMA = REPO.parent / "shared" / "datasets" / "sigmahq_rules" / "rules"


def converted_rules(src: Path) -> RuleSet:
    from siem.sigma.convert import convert_tree

    return load_texts({o.source: o.text for o in convert_tree(src) if o.text is not None})


def measure(src: Path, lines: int, runs: int, seed: int = 1) -> dict:
    sources = [
        ("syslog", workload.sshd_lines(lines, seed, sources=5_000).lines),
        ("nginx", workload.nginx_lines(lines, seed + 1)),
        ("cloudtrail", workload.cloudtrail_lines(lines // 2, seed + 2)),
    ]
    events, parse_cpu = parse_mixed(sources)
    pack, sigma = shipped_pack(), converted_rules(src)
    both = RuleSet(pack.rules + sigma.rules)
    rows = {}
    for name, rs in (("pack", pack), ("sigma", sigma), ("pack+sigma", both)):
        times, alerts = [], 0
        for _ in range(runs):
            t, alerts = engine_run(rs, events)
            times.append(t)
        cpu = statistics.median(times)
        rows[name] = {"rules": len(rs.rules), "engine_cpu_s": cpu, "events_per_s": len(events) / cpu, "alerts": alerts}
    return {
        "events": len(events), "parse_cpu_s": parse_cpu, "rows": rows,
        "ratio_sigma_vs_pack": rows["sigma"]["engine_cpu_s"] / rows["pack"]["engine_cpu_s"],
        "ratio_pack_plus_sigma_vs_pack": rows["pack+sigma"]["engine_cpu_s"] / rows["pack"]["engine_cpu_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sigma", description=__doc__.splitlines()[0])
    ap.add_argument("--sigma-rules", type=Path, default=DEFAULT_SIGMA)
    ap.add_argument("--lines", type=int, default=100_000, help="sshd and nginx lines (CloudTrail: half)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    a = ap.parse_args(argv)
    tune_gc()
    res = measure(a.sigma_rules, a.lines, a.runs)
    print(f"{res['events']:,} mixed events (sshd + nginx + CloudTrail), engine CPU, median of {a.runs}:")
    for name, r in res["rows"].items():
        print(f"  {name:<11} {r['rules']:>4} rules  {r['engine_cpu_s']:7.3f} s  {r['events_per_s']:>10,.0f} events/s"
              f"  {r['alerts']:>6} alerts")
    print(f"  ratio sigma / pack: {res['ratio_sigma_vs_pack']:.2f}x;"
          f" (pack + sigma) / pack: {res['ratio_pack_plus_sigma_vs_pack']:.2f}x")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
