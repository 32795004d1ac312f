"""`python -m bench` (`make bench`): the whole benchmark, a table on stdout, JSON in bench/out/results.json.

    python -m bench [--quick] [--out FILE] [--runs 3] [--seed 1] [--sshd-lines N] [--nginx-lines N]
                    [--cloudtrail-lines N] [--sources N] [--only SECTION ...] [--daemon-seconds S]

Sections (README "Benchmark" explains each figure):
  formats    per format (sshd syslog, nginx, CloudTrail): read-only lines/s, parse-only events/s,
             end-to-end replay events/s with the shipped pack (one core, per stage), ratio, peak RSS,
             and the daemon path (the same through the durable log: encode, append, read, decode)
  scaling    10 / 100 / 1000 rules (variants of the pack) over one mixed workload
  multicore  the daemon backfilling a file with parse_workers = 0 and = one per CPU
  sec        SEC vs our engine: 1 SSH brute-force rule on a 1,000,000-line sshd file, 50 rules on the
             100,000-line one; same detections?
  memory     1,000,000 live window keys: RSS
  snapshot   Engine.snapshot()/restore() of 200,000 threshold keys: the data format vs the pickle it replaced
  daemon     the real daemon: max sustained rate over syslog TCP, latency at 50% of it
  profile    cProfile of the end-to-end replay of the sshd file: hottest stage and functions
Figures are medians of --runs runs (CPU time of the measuring process unless marked wall).
--quick runs everything on tiny inputs (a smoke test of the harness, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from siem.cli import tune_gc

from bench import workload
from bench.rulegen import shipped_pack

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTIONS = ("formats", "scaling", "multicore", "sec", "memory", "snapshot", "daemon", "profile")
FORMATS = (("syslog", "sshd"), ("nginx", "nginx"), ("cloudtrail", "cloudtrail"))
TARGET_RATE = {"syslog": 150_000, "nginx": 150_000, "cloudtrail": 60_000}


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one run: checks the harness only")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "results.json")
    ap.add_argument("--data", type=Path, default=HERE / "out" / "data", help="generated workloads (cached)")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sshd-lines", type=int, default=None)
    ap.add_argument("--nginx-lines", type=int, default=None)
    ap.add_argument("--cloudtrail-lines", type=int, default=None)
    ap.add_argument("--sec-lines", type=int, default=None, help="sshd file for SEC (50 rules) and profile")
    ap.add_argument("--sec1-lines", type=int, default=None, help="sshd file for SEC with one rule")
    ap.add_argument("--sources", type=int, default=50_000, help="key cardinality: distinct sshd sources")
    ap.add_argument("--memory-keys", type=int, default=None)
    ap.add_argument("--snapshot-keys", type=int, default=None)
    ap.add_argument("--daemon-seconds", type=float, default=None)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=None)
    ap.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # set by _isolated()
    a = ap.parse_args(argv)
    q = a.quick
    a.runs = a.runs or (1 if q else 3)
    a.sshd_lines = a.sshd_lines or (3_000 if q else 250_000)
    a.nginx_lines = a.nginx_lines or (2_000 if q else 200_000)
    a.cloudtrail_lines = a.cloudtrail_lines or (1_000 if q else 60_000)
    a.sec_lines = a.sec_lines or (3_000 if q else 100_000)
    a.sec1_lines = a.sec1_lines or (4_000 if q else 1_000_000)
    a.memory_keys = a.memory_keys or (20_000 if q else 1_000_000)
    a.snapshot_keys = a.snapshot_keys or (5_000 if q else 200_000)
    a.daemon_seconds = a.daemon_seconds or (2.0 if q else 20.0)
    a.sources = min(a.sources, 2_000) if q else a.sources
    return a


def _mix(wl: dict, divide: int) -> list[tuple[str, list[bytes]]]:
    """The mixed workload of the scaling section: the first lines of each file."""
    mix = []
    for fmt, name, share in (("syslog", "sshd", 24_000), ("nginx", "nginx", 16_000), ("cloudtrail", "cloudtrail", 8_000)):
        lines = Path(wl[name]["path"]).read_bytes().splitlines()
        mix.append((fmt, lines[: share // divide]))
    return mix


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_workloads(a: argparse.Namespace) -> dict:
    """Generate (or reuse from --data) the three files; returns paths, sizes and the sshd attackers."""
    a.data.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    specs = {
        "sshd": (f"sshd-{a.sshd_lines}-s{a.seed}-k{a.sources}.log",
                 lambda: workload.sshd_lines(a.sshd_lines, a.seed, sources=a.sources)),
        "sshd_sec": (f"sshd-{a.sec_lines}-s{a.seed}-k{a.sources}.log",
                     lambda: workload.sshd_lines(a.sec_lines, a.seed, sources=a.sources)),
        "sshd_sec1": (f"sshd-{a.sec1_lines}-s{a.seed}-k{a.sources}.log",
                      lambda: workload.sshd_lines(a.sec1_lines, a.seed, sources=a.sources)),
        "nginx": (f"nginx-{a.nginx_lines}-s{a.seed}.log", lambda: workload.nginx_lines(a.nginx_lines, a.seed + 1)),
        "cloudtrail": (f"cloudtrail-{a.cloudtrail_lines}-s{a.seed}.jsonl",
                       lambda: workload.cloudtrail_lines(a.cloudtrail_lines, a.seed + 2)),
    }
    for name, (fname, make) in specs.items():
        path = a.data / fname
        meta_path = path.with_suffix(".meta.json")
        if not (path.exists() and meta_path.exists()):
            t0 = time.perf_counter()
            got = make()
            lines = got.lines if isinstance(got, workload.SshdWorkload) else got
            workload.write_lines(str(path), lines)
            meta = {"lines": len(lines), "generated_s": time.perf_counter() - t0}
            if isinstance(got, workload.SshdWorkload):
                meta.update(attackers=sorted(got.attackers), first_ms=got.first_ms, last_ms=got.last_ms)
            meta_path.write_text(json.dumps(meta))
            log(f"generated {path.name}: {len(lines):,} lines in {meta['generated_s']:.1f}s")
        meta = json.loads(meta_path.read_text())
        out[name] = {"path": str(path), "bytes": path.stat().st_size, **meta}
    return out


def _isolated(section: str, argv: list[str] | None) -> dict:
    """Run one in-process section in a fresh `python -m bench` process: measured in this process, after
    the other sections, our side ran up to a third slower (a larger heap, colder caches) than on its own,
    while SEC and the format stages always run as processes of their own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "section.json"
        args = [a for a in (sys.argv[1:] if argv is None else argv)]
        args = _without(args, "--only", nargs=True)
        args = _without(args, "--out", nargs=False)
        proc = subprocess.run([sys.executable, "-m", "bench", *args, "--only", section, "--in-process", "--out",
                               str(out)], cwd=REPO, capture_output=True, timeout=1800)
        if proc.returncode != 0:
            return {"error": f"bench section {section} failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}"}
        return json.loads(out.read_text())[section]  # type: ignore[no-any-return]


def _without(args: list[str], flag: str, nargs: bool) -> list[str]:
    """args without `flag` and its value (all its values when nargs), in the `--flag V` or `--flag=V` form."""
    out: list[str] = []
    i = 0
    while i < len(args):
        x = args[i]
        i += 1
        if x == flag:
            taken = 0
            while i < len(args) and not args[i].startswith("--") and (nargs or taken == 0):
                i += 1
                taken += 1
        elif not x.startswith(flag + "="):
            out.append(x)
    return out


def run_module(module: str, *args: str, timeout: float = 900) -> dict:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}")
    return orjson.loads(proc.stdout.splitlines()[-1])


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1000:,.1f}k" if x >= 1000 else f"{x:,.0f}"


def targets(res: dict) -> list[dict]:
    rows: list[dict] = []

    def add(name: str, target: str, measured: str, ok: bool | None) -> None:
        rows.append({"target": name, "wanted": target, "measured": measured,
                     "status": "PASS" if ok else "MISS" if ok is not None else "n/a"})

    for f in res.get("formats", {}).values():
        if "error" in f:
            continue
        fmt = f["format"]
        add(f"{fmt}: end-to-end / parse-only", ">= 0.50", f"{f['ratio_e2e_to_parse']:.2f}",
            f["ratio_e2e_to_parse"] >= 0.5)
        add(f"{fmt}: end-to-end events/s (one core)", f">= {TARGET_RATE[fmt]:,}", f"{f['e2e_events_per_s']:,.0f}",
            f["e2e_events_per_s"] >= TARGET_RATE[fmt])
        if "daemon_path_over_replay" in f:
            add(f"{fmt}: daemon path (through the log) / replay, CPU time", "<= 1.25x",
                f"{f['daemon_path_over_replay']:.2f}x", f["daemon_path_over_replay"] <= 1.25)
            add(f"{fmt}: daemon path alerts = replay alerts", "identical",
                "same" if f["daemon_path_alerts_equal"] else "DIFFERENT", f["daemon_path_alerts_equal"])
    sc = res.get("scaling")
    if sc and "rows" in sc:
        add("1000 rules vs 10 rules, time (end to end)", "<= 2.0x", f"{sc['e2e_time_ratio_max_vs_min']:.2f}x",
            sc["e2e_time_ratio_max_vs_min"] <= 2.0)
        add("1000 rules vs 10 rules, time (engine only)", "<= 2.0x", f"{sc['engine_time_ratio_max_vs_min']:.2f}x",
            sc["engine_time_ratio_max_vs_min"] <= 2.0)
    sec = res.get("sec")
    if sec and "rows" in sec:
        for r in sec["rows"]:
            want = 2.0 if r["rules"] == 1 else 10.0
            add(f"{r['rules']} SSH rule(s), {r['lines']:,} lines: ours / SEC", f">= {want:.0f}x",
                f"{r['ours_over_sec']:.2f}x",
                r["ours_over_sec"] >= want)
            add(f"{r['rules']} SSH rule(s): same attacking sources as SEC", "identical",
                f"SEC {r['sec_alerting_sources']}, ours {r['ours_alerting_sources']}"
                f"{' (same set)' if r['same_sources'] else ' (differ)'}", r["same_sources"])
    mem = res.get("memory")
    if mem and "live_keys" in mem:
        add(f"{mem['live_keys']:,} live window keys: RSS", "< 1024 MiB", f"{mem['rss_after_mib']:,.0f} MiB",
            mem["rss_after_mib"] < 1024 if mem["live_keys"] >= 1_000_000 else None)
    d = res.get("daemon")
    if d and "p99_s" in d:
        add(f"daemon p99 event-to-alert at 50% load (lateness {d['lateness']})", "< 1 s", f"{d['p99_s']:.2f} s",
            d["p99_s"] < 1.0)
    mc = res.get("multicore")
    if mc and "speedup" in mc:
        add("daemon uses all cores (parse worker processes)", ">= 1.2x",
            f"{mc['speedup']:.2f}x with {mc['workers']} workers", mc["speedup"] >= 1.2)
    rp = (mc or {}).get("replay")
    if rp and "speedup" in rp:
        add("replay uses all cores (--workers, wall time)", ">= 1.2x",
            f"{rp['speedup']:.2f}x with {rp['workers']} workers", rp["speedup"] >= 1.2)
        add("replay --workers gives the same alerts", "identical", "same" if rp["same_alerts"] else "DIFFERENT",
            rp["same_alerts"])
    return rows


def print_table(res: dict) -> None:
    p = print
    p()
    fm = res.get("formats", {})
    if fm:
        p("Per format, one core, shipped pack (median of runs; CPU time):")
        p(f"{'format':<11}{'events':>9}{'read l/s':>10}{'parse e/s':>11}{'e2e e/s':>10}{'ratio':>7}"
          f"{'  stages e/s: read / parse / evaluate / alerting':<50}{'alerts':>7}{'RSS MiB':>9}")
        for f in fm.values():
            if "error" in f:
                p(f"{f['format']:<11} error: {f['error'][:100]}")
                continue
            st = f["stages"]
            stages = " / ".join(_rate(st[k]["events_per_s"]) for k in ("read", "parse", "evaluate", "alerting"))
            p(f"{f['format']:<11}{f['events']:>9,}{_rate(f['read_lines_per_s']):>10}{_rate(f['parse_events_per_s']):>11}"
              f"{_rate(f['e2e_events_per_s']):>10}{f['ratio_e2e_to_parse']:>7.2f}  {stages:<48}{f['alerts']:>7}"
              f"{f['peak_rss_mib']:>9.0f}")
        p("Daemon path (each block encoded, appended to a LocalLog, read back, decoded before the engine):")
        for f in fm.values():
            if "daemon_path_over_replay" in f:
                p(f"  {f['format']:<11} {_rate(f['daemon_path_events_per_s'])} e/s, {f['daemon_path_over_replay']:.2f}x "
                  f"replay's CPU time (log {f['daemon_path_log_cpu_s']:.2f}s); alerts "
                  f"{'identical' if f['daemon_path_alerts_equal'] else 'DIFFERENT'}")
    sc = res.get("scaling")
    if sc and "rows" in sc:
        p(f"\nRule-count scaling ({sc['events']:,} mixed events, parse {_rate(sc['parse_events_per_s'])}/s):")
        p(f"{'rules':>6}{'engine e/s':>12}{'e2e e/s':>10}{'alerts':>8}")
        for r in sc["rows"]:
            p(f"{r['rules']:>6}{_rate(r['engine_events_per_s']):>12}{_rate(r['e2e_events_per_s']):>10}{r['alerts']:>8}")
        p(f"time 1000 vs 10 rules: engine {sc['engine_time_ratio_max_vs_min']:.2f}x, "
          f"end to end {sc['e2e_time_ratio_max_vs_min']:.2f}x")
    mc = res.get("multicore")
    if mc and "speedup" in mc:
        steady = (f"steady rate parse_workers=0 {_rate(mc['steady_events_per_s_no_workers'])}/s, "
                  f"parse_workers={mc['workers']} {_rate(mc['steady_events_per_s_workers'])}/s: "
                  if mc.get("steady_events_per_s_no_workers") and mc.get("steady_events_per_s_workers") else "")
        p(f"\nMulti-core (siem run backfilling {mc['events']:,} sshd lines, {mc['alerts']} alerts): {steady}"
          f"speed-up {mc['speedup']:.2f}x on {mc['cpus']} shared CPUs; wall time to the last alert, start-up "
          f"included: {_rate(mc['events_per_s_no_workers'])}/s vs {_rate(mc['events_per_s_workers'])}/s "
          f"({mc.get('speedup_wall', mc['speedup']):.2f}x)")
        rp = mc.get("replay")
        if rp and "speedup" in rp:
            p(f"  siem replay of the same file (pack), wall: --workers 0 {rp['wall_s_no_workers']:.2f}s, --workers "
              f"{rp['workers']} {rp['wall_s_workers']:.2f}s: {rp['speedup']:.2f}x; alerts "
              f"{'identical' if rp['same_alerts'] else 'DIFFERENT'}")
    sec = res.get("sec")
    if sec and "rows" in sec:
        p(f"\nSEC vs ours, sshd lines ({sec['attackers']} attacking sources generated), lines/s CPU:")
        p(f"{'rules':>6}{'lines':>11}{'SEC':>10}{'ours':>10}{'ours/SEC':>10}  detections (rule 0 sources)")
        for r in sec["rows"]:
            p(f"{r['rules']:>6}{r['lines']:>11,}{_rate(r['sec_lines_per_s']):>10}{_rate(r['ours_lines_per_s']):>10}"
              f"{r['ours_over_sec']:>9.2f}x  SEC {r['sec_alerting_sources']}, ours {r['ours_alerting_sources']}: "
              f"{'same' if r['same_sources'] else 'DIFFERENT'}")
    elif sec:
        p(f"\nSEC: {sec.get('error')}")
    mem = res.get("memory")
    if mem and "live_keys" in mem:
        p(f"\nMemory: {mem['live_keys']:,} live window keys, RSS {mem['rss_after_mib']:,.0f} MiB "
          f"(before {mem['rss_before_mib']:.0f} MiB, {mem['bytes_per_key']:.0f} bytes/key)")
    sn = res.get("snapshot")
    if sn and "keys" in sn:
        p(f"\nSnapshot of {sn['keys']:,} window keys: data {sn['data_bytes'] / 2**20:.1f} MiB, encode "
          f"{sn['data_encode_s']:.2f}s, restore {sn['data_decode_s']:.2f}s (checks included); pickle "
          f"{sn['pickle_bytes'] / 2**20:.1f} MiB, {sn['pickle_encode_s']:.2f}s, {sn['pickle_decode_s']:.2f}s; "
          f"data/pickle: size {sn['size_ratio']:.2f}x, encode {sn['encode_ratio']:.2f}x, decode {sn['decode_ratio']:.2f}x")
    elif sn:
        p(f"\nSnapshot: {sn.get('error')}")
    d = res.get("daemon")
    if d and "max_sustained_events_per_s" in d:
        lat = (f"p50 {d['p50_s']:.3f}s p95 {d['p95_s']:.3f}s p99 {d['p99_s']:.3f}s "
               f"({d['probes_alerted']}/{d['probes']} probes)") if "p99_s" in d else "no probe alerted"
        p(f"\nDaemon ({d['input']}): max sustained {_rate(d['max_sustained_events_per_s'])}/s; at "
          f"{_rate(d['offered_events_per_s'])}/s offered for {d['seconds']:.0f}s, lateness {d['lateness']}: {lat}; "
          f"daemon histogram {d['daemon_histogram']}")
        nc = d.get("no_checkpoint_run")
        if nc and "p99_s" in nc:
            p(f"  same with checkpoint_interval=1h: max {_rate(nc['max_sustained_events_per_s'])}/s; at "
              f"{_rate(nc['offered_events_per_s'])}/s: p50 {nc['p50_s']:.3f}s p95 {nc['p95_s']:.3f}s "
              f"p99 {nc['p99_s']:.3f}s")
        dl = d.get("default_lateness_run")
        if dl and "p99_s" in dl:
            p(f"  same with the default lateness 10s (no burst first), at {_rate(dl['offered_events_per_s'])}/s: "
              f"p50 {dl['p50_s']:.3f}s p95 {dl['p95_s']:.3f}s p99 {dl['p99_s']:.3f}s")
    pr = res.get("profile")
    if pr and "top" in pr:
        p(f"\nProfile ({pr['format']} end to end): stage shares "
          + ", ".join(f"{k} {v:.0%}" for k, v in pr["stage_share"].items()))
        sn = pr["snapshot_after_replay"]
        p(f"  Engine.snapshot() after it: {sn['window_keys']:,} window keys, {sn['bytes'] / 2**20:.1f} MiB "
          f"in {sn['seconds']:.2f}s (what a forked checkpoint writer encodes while the daemon goes on)")
        for r in pr["top"][:10]:
            p(f"  {r['own_share']:6.1%}  {r['calls']:>9,}  {r['function']}")
        en = pr.get("engine_1000_rules")
        if en:
            p(f"Profile (engine only, {en['rules']} rules, {en['events']:,} mixed events): own time share, calls, function")
            for r in en["top"][:10]:
                p(f"  {r['own_share']:6.1%}  {r['calls']:>9,}  {r['function']}")
    tg = res.get("targets", [])
    if tg:
        p("\nTargets:")
        for t in tg:
            p(f"  {t['status']:<5} {t['target']:<58} wanted {t['wanted']:<22} measured {t['measured']}")
    p(f"\nTotal {res['meta']['elapsed_s']:.0f}s; load average at start {res['meta']['loadavg_start']}, "
      f"at end {res['meta']['loadavg_end']} (shared machine: figures are noisy, medians of runs)")


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    tune_gc()  # the in-process sections (scaling, SEC, profiles) run as `siem` does
    started = time.perf_counter()
    sections = a.only or SECTIONS
    res: dict = {"meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": a.quick,
                          "runs": a.runs, "seed": a.seed, "python": platform.python_version(),
                          "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}}
    wl = make_workloads(a)
    res["workloads"] = wl
    rules_dir = str(REPO / "rules")
    base = shipped_pack()
    res["meta"]["shipped_rules"] = len(base.rules)
    if "formats" in sections:
        res["formats"] = {}
        for fmt, name in FORMATS:
            log(f"formats: {fmt} ({wl[name]['lines']:,} lines, {a.runs} runs)")
            try:
                res["formats"][fmt] = run_module("bench.stages", "--format", fmt, "--file", wl[name]["path"],
                                                 "--rules", rules_dir, "--runs", str(a.runs))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                res["formats"][fmt] = {"format": fmt, "error": str(exc)}
    if "scaling" in sections and not a.in_process and len(sections) > 1:
        log("scaling: 10/100/1000 rules (a process of its own)")
        res["scaling"] = _isolated("scaling", argv)
    elif "scaling" in sections:
        from bench import scaling  # noqa: PLC0415

        mix = _mix(wl, 10 if a.quick else 1)
        log(f"scaling: 10/100/1000 rules over {sum(len(x[1]) for x in mix):,} mixed events")
        res["scaling"] = scaling.measure(base, mix, runs=a.runs)
    if "multicore" in sections:
        from bench import multicore  # noqa: PLC0415

        log("multicore: the daemon backfilling sshd with parse_workers 0 vs one per CPU")
        # the large sshd file: on the 100,000-line one the steady part lasted ~3 s and a neighbour's burst
        # on the second CPU moved the speed-up between 0.7x and 1.3x; on 250,000 lines runs agree within 15%
        res["multicore"] = multicore.measure(Path(wl["sshd"]["path"]), wl["sshd"]["lines"], runs=a.runs)
        log("multicore: siem replay of the sshd file, columnar parse in 0 vs one worker process per CPU")
        res["multicore"]["replay"] = multicore.measure_replay(Path(wl["sshd"]["path"]), runs=a.runs)
    if "sec" in sections and not a.in_process and len(sections) > 1:
        log("sec: SEC vs ours, 1 and 50 rules (sshd; a process of its own)")
        res["sec"] = _isolated("sec", argv)
    elif "sec" in sections:
        from bench import sec  # noqa: PLC0415

        log("sec: SEC vs ours, 1 and 50 rules (sshd)")
        one = sec.measure(Path(wl["sshd_sec1"]["path"]), wl["sshd_sec1"]["lines"],
                          frozenset(wl["sshd_sec1"]["attackers"]), rule_counts=(1,), runs=a.runs)
        res["sec"] = sec.measure(Path(wl["sshd_sec"]["path"]), wl["sshd_sec"]["lines"],
                                 frozenset(wl["sshd_sec"]["attackers"]), rule_counts=(50,), runs=a.runs)
        if "rows" in one and "rows" in res["sec"]:
            res["sec"]["rows"] = one["rows"] + res["sec"]["rows"]
    if "memory" in sections:
        log(f"memory: {a.memory_keys:,} live window keys")
        try:
            res["memory"] = run_module("bench.memory", "--keys", str(a.memory_keys))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            res["memory"] = {"error": str(exc)}
    if "snapshot" in sections:
        log(f"snapshot: {a.snapshot_keys:,} threshold keys, data format vs pickle")
        try:
            res["snapshot"] = run_module("bench.snapshot", "--keys", str(a.snapshot_keys), "--runs", str(a.runs))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            res["snapshot"] = {"error": str(exc)}
    if "daemon" in sections:
        from bench import daemon_latency  # noqa: PLC0415

        log(f"daemon: max sustained rate, then {a.daemon_seconds:.0f}s at 50% of it")
        try:
            res["daemon"] = daemon_latency.measure(max_rate_seconds=1.0 if a.quick else 6.0,
                                                  seconds=a.daemon_seconds, warmup_seconds=0.5 if a.quick else 2.0,
                                                  settle_seconds=0.5 if a.quick else 3.0)
            if not a.quick:  # diagnosis: the same with the periodic checkpoint moved out of the way
                log("daemon: again with checkpoint_interval = 1h (diagnosis of the latency tail)")
                res["daemon"]["no_checkpoint_run"] = daemon_latency.measure(
                    max_rate_seconds=6.0, seconds=a.daemon_seconds / 2, settle_seconds=3.0,
                    daemon_extra={"checkpoint_interval": "1h", "checkpoint_records": 100_000_000})
                log("daemon: the default lateness (10s) at the same offered rate")
                res["daemon"]["default_lateness_run"] = daemon_latency.measure(
                    seconds=a.daemon_seconds / 2, lateness="10s", settle_seconds=1.0,
                    offered_rate=res["daemon"]["offered_target_events_per_s"])
        except (RuntimeError, OSError) as exc:
            res["daemon"] = {"error": str(exc)}
    if "profile" in sections:
        from bench.profile import profile_e2e, profile_engine  # noqa: PLC0415
        from bench.rulegen import pack_variants  # noqa: PLC0415
        from bench.scaling import parse_mixed  # noqa: PLC0415

        log("profile: cProfile of the sshd end-to-end replay, and of the engine with 1000 rules")
        res["profile"] = profile_e2e("syslog", Path(wl["sshd_sec"]["path"]), base)
        events, _ = parse_mixed(_mix(wl, 4 * (10 if a.quick else 1)))
        res["profile"]["engine_1000_rules"] = profile_engine(pack_variants(base, 1000), events)
    res["targets"] = targets(res)
    res["meta"]["elapsed_s"] = time.perf_counter() - started
    res["meta"]["loadavg_end"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print_table(res)
    print(f"\nresults: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
