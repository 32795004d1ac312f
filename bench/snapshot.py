"""Engine snapshots: the data format (siem.engine.snapshot: msgpack, schema-checked) against the pickle it
replaced, on one large state, measured in one process and run.

    python -m bench.snapshot [--keys 200000] [--runs 3]   (prints JSON; run as its own process by the runner)

The state: one count rule by source.ip whose message aggregates user.name, fed `keys` sshd failures from
as many sources (each key seen once: a tuple entry), plus a tenth of them seen 3 more times (timelines),
1 ms apart with a lateness of 1 s (the last 1,000 events are pending).
Reported per format: bytes, encode seconds (Engine.snapshot(); what the forked checkpoint writer does),
decode seconds (Engine.restore() into a new engine; what a restart waits for, checks included); and the
ratios data/pickle. The pickle side is what release 5 wrote: pickle.dumps of the same dict of live objects,
pickle.loads of it (no checks at all). CPU time of this process, medians of --runs.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import statistics
import sys
import time

import numpy as np
import orjson

from siem.cli import tune_gc
from siem.dsl.loader import load_texts
from siem.engine.runtime import Engine

from bench.workload import START_MS

RULE = """
rule bench_snapshot {
  severity low
  when     event.dataset == "sshd" and event.outcome == "failure"
  count >= 1000 within 1h by source.ip
  message  "{count} failures from {source.ip} ({distinct(user.name)} users)"
}
"""


def _event(i: int, t: int) -> dict:
    ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    return {"@timestamp": t, "event.dataset": "sshd", "event.outcome": "failure", "source.ip": ip,
            "user.name": f"user{i % 97}", "host.name": "web1", "process.name": "sshd",
            "event.original": f"Failed password for user{i % 97} from {ip} port {20000 + i % 40000} ssh2"}


def build(keys: int) -> Engine:
    engine = Engine(load_texts({"bench_snapshot.rules": RULE}), lateness_ms=1_000, future_skew_ms=None)
    t = START_MS
    batch: list[dict] = []
    order = list(range(keys)) + [i for _ in range(3) for i in range(0, keys, 10)]
    for n, i in enumerate(order):
        batch.append(_event(i, t + n))
        if len(batch) == 4096:
            engine.process(batch)
            batch = []
    engine.process(batch)
    return engine


def legacy_dumps(engine: Engine) -> bytes:
    """What Engine.snapshot() pickled in snapshot version 5."""
    state = {"version": 5, "max_ts": engine.max_ts, "wm": engine.wm, "seq": engine.seq,
             "pending": (engine.pending_events, engine.pending_ts, engine.pending_seq),
             "rules": {"groups": [({r.id: r.fingerprint for r in rules}, corr.get_state())
                                  for corr, rules in engine.correlators().values()],
                       "suppress": {r.id: (r.fingerprint, r.suppress) for r in engine.rules}}}
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _cpu(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    gc.collect()
    t0 = time.process_time()
    got = fn()
    return time.process_time() - t0, got


def measure(keys: int, runs: int) -> dict:
    engine = build(keys)
    live = sum(engine.window_keys().values())
    rows: dict[str, list[float]] = {"data_encode_s": [], "data_decode_s": [], "pickle_encode_s": [],
                                    "pickle_decode_s": []}
    data = blob = b""
    for _ in range(runs):
        s, data = _cpu(engine.snapshot)
        rows["data_encode_s"].append(s)
        fresh = Engine(load_texts({"bench_snapshot.rules": RULE}), lateness_ms=10_000, future_skew_ms=None)
        s, _ = _cpu(lambda: fresh.restore(data))  # noqa: B023
        assert sum(fresh.window_keys().values()) == live
        rows["data_decode_s"].append(s)
        del fresh
        s, blob = _cpu(lambda: legacy_dumps(engine))
        rows["pickle_encode_s"].append(s)
        s, back = _cpu(lambda: pickle.loads(blob))  # noqa: B023
        rows["pickle_decode_s"].append(s)
        del back
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "keys": live, "pending_events": len(engine.pending_events), "runs": runs, "data_bytes": len(data),
        "pickle_bytes": len(blob), **med,
        "size_ratio": len(data) / len(blob),  # type: ignore[arg-type]
        "encode_ratio": med["data_encode_s"] / med["pickle_encode_s"],
        "decode_ratio": med["data_decode_s"] / med["pickle_decode_s"],
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.snapshot", description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args(argv)
    tune_gc()  # as `siem run` does
    sys.stdout.write(orjson.dumps(measure(a.keys, a.runs)).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
