"""Threat-intel list cost: a cidr() list of 10 against one of 1,000,000 addresses, in one run.

    python -m bench.intel [--indicators N] [--lookups N]

Prints the time to load a plain-text feed of N addresses through the rule loader (read, recognise,
validate, compile) and the cost per distinct address looked up, for 10 and N indicators, and their ratio.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from siem.dsl.loader import load_rules
from siem.engine.batch import Batch
from siem.engine.runtime import compile_rule

RULE = 'list ti = file "feed.txt#ip"\nrule ti_hit {\n  severity high\n  when source.ip in cidr(ti)\n  message "{source.ip}"\n}\n'


def _ip(rnd: random.Random) -> str:
    return f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"


def measure(indicators: int, lookups: int, seed: int = 1) -> dict[str, float]:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "feed.txt").write_text("\n".join(_ip(rnd) for _ in range(indicators)) + "\n")
        (Path(d) / "ti.rules").write_text(RULE)
        t = time.perf_counter()
        rules = load_rules([Path(d)])
        rule = compile_rule(rules.rules[0])
        load_s = time.perf_counter() - t
    events = [{"@timestamp": 0, "source.ip": _ip(rnd)} for _ in range(lookups)]  # distinct, nearly all
    batch = Batch(events, np.zeros(len(events), dtype=np.int64))
    t = time.perf_counter()
    rule.filter(batch)
    per_lookup_us = (time.perf_counter() - t) / lookups * 1e6
    return {"indicators": indicators, "load_s": load_s, "lookup_us": per_lookup_us}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.intel", description=__doc__.splitlines()[0])
    ap.add_argument("--indicators", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=100_000)
    a = ap.parse_args(argv)
    small, big = measure(10, a.lookups), measure(a.indicators, a.lookups)
    for r in (small, big):
        print(f"{r['indicators']:>9,} indicators: load {r['load_s']:.2f} s, {r['lookup_us']:.2f} us per distinct address")
    print(f"lookup cost ratio {big['indicators']:,} / 10 indicators: {big['lookup_us'] / small['lookup_us']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
