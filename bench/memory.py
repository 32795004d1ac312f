"""1,000,000 live window keys: RSS of a process whose engine holds them.

    python -m bench.memory [--keys 1000000]   (prints JSON; run as its own process by the runner)

One count rule by source.ip (threshold never reached) fed N parsed sshd failures from N distinct
sources within one minute, in batches of 4096 generated on the fly (the events are not kept, so what
stays is the window state). Reports the rule's live keys and RSS before, after and at peak.
"""

from __future__ import annotations

import argparse
import gc
import sys

import orjson

from siem.dsl.loader import load_texts
from siem.engine.runtime import Engine

from bench.stages import peak_rss_mib
from bench.workload import START_MS

RULE = """
rule bench_many_keys {
  title    "SSH failures per source (never reaches its threshold here)"
  severity low
  when     event.dataset == "sshd" and event.outcome == "failure"
  count >= 1000 within 1h by source.ip
  message  "{count} failures from {source.ip}"
}
"""


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(keys: int) -> dict:
    engine = Engine(load_texts({"bench_keys.rules": RULE}), lateness_ms=10_000, future_skew_ms=None)
    gc.collect()
    before = rss_mib()
    batch = 4096
    for start in range(0, keys, batch):
        evs = []
        for i in range(start, min(start + batch, keys)):
            evs.append({"@timestamp": START_MS + (i * 60_000) // keys, "event.dataset": "sshd",
                        "event.action": "ssh_login", "event.outcome": "failure",
                        "source.ip": f"{10 + (i >> 24) % 200}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                        "user.name": "root", "host.name": "bastion-1"})
        engine.process(evs)
    engine.advance(START_MS + 60_000)  # every event released and evaluated; none expired (1h window)
    gc.collect()
    live = sum(engine.window_keys().values())
    after = rss_mib()
    return {"keys_fed": keys, "live_keys": live, "rss_before_mib": before, "rss_after_mib": after,
            "peak_rss_mib": peak_rss_mib(),
            "bytes_per_key": (after - before) * 1024 * 1024 / live if live else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    sys.stdout.buffer.write(orjson.dumps(measure(args.keys)) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
