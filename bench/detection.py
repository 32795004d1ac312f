"""Detection report: per public dataset, the attacks found against those labelled, and the high/critical
alerts on benign data per day of event time; also the benign generated workloads.

    python -m bench.detection [--datasets DIR] [--readme README.md] [--lines N]

Runs the shipped pack (rules/) over each dataset as `siem replay` does and prints a Markdown table;
with ``--readme`` it replaces the table between the ``<!-- detection-report -->`` markers of README.md.

Labels. Where a dataset's README names its attackers, those are the labels. Otherwise they are counted
from the raw lines with a plain pattern that uses neither our parsers nor our rules (each row says which),
so a row measures the rules, not the rules against themselves. "Detected" counts labelled items named by
an alert of any severity (its group, or the source of an event it carries).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench import workload
from siem.dsl.loader import load_rules
from siem.replay import input_files, replay_alerts

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DAY_MS = 86_400_000
MARK_START, MARK_END = "<!-- detection-report -->", "<!-- /detection-report -->"
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


@dataclass
class Result:
    name: str
    labelled: str = ""
    detected: str = ""
    loud_per_day: str = ""  # high/critical alerts per day on the benign part
    note: str = ""
    rules: Counter = field(default_factory=Counter)


def run_pack(files: list[Path], fmt: str | None = None) -> tuple[list[dict], dict]:
    ruleset = load_rules([REPO / "rules"])
    counters: dict = {}
    alerts: list[dict] = []
    for batch in replay_alerts(files, ruleset, fmt=fmt, counters=counters):
        alerts += [orjson.loads(a.dumps()) for a in batch]
    return alerts, counters


def named(alert: dict) -> set[str]:
    """Sources, users and principals an alert names (its group and the events it carries)."""
    out = {str(v) for v in alert.get("group", {}).values()}
    for ev in alert.get("events", ()):
        for k in ("source.ip", "source.address", "user.name", "aws.cloudtrail.user_identity.arn"):
            if k in ev:
                out.add(str(ev[k]))
    return out


def per_day(n: int, counters: dict) -> str:
    span = max(counters.get("last_ms", 0) - counters.get("first_ms", 0), 3_600_000)  # at least an hour
    over = f"{span / DAY_MS:.1f} days" if span >= DAY_MS else f"{span / 3_600_000:.1f} h"
    return f"{n} ({n * DAY_MS / span:.1f}/day over {over})"


def loud(alerts: list[dict], exclude: Callable[[dict], bool] = lambda a: False) -> list[dict]:
    return [a for a in alerts if a["severity"] in ("high", "critical") and not exclude(a)]


def _lines(paths: Iterable[Path]) -> Iterable[str]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            yield from f


def sources_with(paths: list[Path], pattern: str, at_least: int, group: int = 1) -> set[str]:
    rx = re.compile(pattern)
    c: Counter = Counter()
    for line in _lines(paths):
        m = rx.search(line)
        if m:
            rep = re.search(r"message repeated (\d+) times", line)
            c[m.group(group)] += int(rep.group(1)) if rep else 1
    return {k for k, v in c.items() if v >= at_least}


def coverage(labels: set[str], alerts: list[dict]) -> str:
    hit = set().union(*(named(a) for a in alerts)) if alerts else set()
    return f"{len(labels & hit)} of {len(labels)}"


# --- the datasets -------------------------------------------------------------------------------------


def report(ds: Path, lines: int) -> list[Result]:
    out: list[Result] = []

    def add(r: Result, alerts: list[dict]) -> None:
        r.rules = Counter(a["rule"] for a in alerts)
        out.append(r)
        print(f"  {r.name}: {r.detected or '-'} / {r.labelled or '-'}; loud {r.loud_per_day or '-'}", file=sys.stderr)

    st = ds / "stratus_detonations_datadog_zmallen"
    if st.is_dir():
        files = sorted(st.glob("*.json"))
        found = [f.name for f in files if run_pack([f])[0]]
        alerts, _ = run_pack(files)
        add(Result("Stratus Red Team detonations (Datadog export)", f"{len(files)} techniques",
                   f"{len(found)} of {len(files)}", note="one file has records without commas between them"), alerts)

    otrf = ds / "otrf_security_datasets_aws" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"
    if otrf.is_file():
        alerts, c = run_pack([otrf])
        attacker = "i-0317f6c6b66ae9c40"
        n_attack = sum(attacker in ln for ln in _lines([otrf]))
        hit = [a for a in alerts if attacker in orjson.dumps(a).decode()]
        add(Result("OTRF stolen EC2 instance credentials (CloudGoat)", f"1 principal ({n_attack} events)",
                   f"{1 if hit else 0} of 1 ({len(hit)} alerts)",
                   per_day(len(loud(alerts, lambda a: attacker in orjson.dumps(a).decode())), c),
                   "benign part: 87 console events of user pedro"), alerts)

    ocatak = ds / "ocatak_apache_http_logs"
    for name, label_rx, label in (("netsparker", r"(?i)(%3c|<)script|alert\(|onmouseover", "XSS attempts"),
                                  ("acunetix", r"(?i)(%3c|<)script|alert\(|onmouseover", "XSS attempts"),
                                  ("w3af", r"w3af", "w3af requests")):
        f = ocatak / f"{name}.txt"
        if f.is_file():
            alerts, _ = run_pack([f], fmt="apache")
            n = sum(bool(re.search(label_rx, ln)) for ln in _lines([f]))
            src = sources_with([f], r'^"?(\S+) ', 1)
            add(Result(f"ocatak {name} scan", f"{n} {label}, {len(src)} source(s)",
                       f"{coverage(src, alerts)} sources; rules {', '.join(sorted({a['rule'] for a in alerts}))}",
                       note=f"label: lines matching /{label_rx}/"), alerts)

    hn = ds / "honeynet_redhat71_httpd"
    if hn.is_dir():
        files = input_files([str(hn)])
        alerts, _ = run_pack(files)
        ips = sources_with(files, r"^(\d+\.\d+\.\d+\.\d+) ", 1)
        worms = sources_with(files, r"^(\d+\.\d+\.\d+\.\d+) .*(cmd\.exe|root\.exe|default\.ida)", 1)
        add(Result("Honeynet RedHat 7.1 httpd (worms, proxies)", f"{len(ips)} hostile sources ({len(worms)} worm)",
                   f"{coverage(ips, alerts)} sources ({coverage(worms, alerts)} worm)",
                   note="label: every client (README: almost entirely hostile); worm = cmd.exe/root.exe/default.ida"),
            alerts)

    hk = ds / "logparser_hackers_access" / "hackers-access.log"
    if hk.is_file():
        alerts, _ = run_pack([hk])
        bots = sources_with([hk], r"^(\S+) ", 1)
        add(Result("hackers-access.log (form-spam bots)", f"{len(bots)} bots", coverage(bots, alerts) + " bots",
                   note="label: every source (README)"), alerts)

    lx = ds / "loghub" / "Linux_2k.log"
    if lx.is_file():
        alerts, c = run_pack([lx])
        lab = sources_with([lx], r"sshd\(pam_unix\).*authentication failure.*rhost=(\S+)", 10)
        add(Result("loghub Linux_2k (pam_unix-only sshd)", f"{len(lab)} sources with >= 10 pam failures",
                   coverage(lab, alerts), note="label: rhost= of pam_unix authentication failure lines"), alerts)

    osh = ds / "loghub" / "OpenSSH_2k.log"
    if osh.is_file():
        alerts, c = run_pack([osh])
        lab = sources_with([osh], r"Failed password for (?:invalid user )?\S+ from (\S+)", 5)
        add(Result("loghub OpenSSH_2k", f"{len(lab)} sources with >= 5 failed passwords (repeats counted)",
                   coverage(lab, alerts), note="label: Failed password lines, `message repeated N` as N"), alerts)

    sotm = ds / "honeynet_sotm34" / "raw" / "syslog"
    if sotm.is_dir():
        files = sorted(sotm.glob("secure*"))
        alerts, c = run_pack(files)
        fails = sources_with(files, r"(?:Failed password for .* from|Illegal user \S+ from) (\S+)", 5)
        scans = sources_with(files, r"(?:Did not receive identification string from|scanned from) (\S+)", 5)
        lab = fails | scans
        add(Result("Honeynet SotM34 sshd", f"{len(lab)} sources ({len(fails)} guessing, {len(scans)} scanning)",
                   coverage(lab, alerts), note="label: >= 5 failures/illegal users, or >= 5 scans"), alerts)

    el = ds / "elastic_examples" / "suspicious_login_auth.log"
    if el.is_file():
        alerts, c = run_pack([el])
        crit = [a for a in alerts if a["severity"] == "critical"]
        add(Result("elastic suspicious_login_auth.log", "1 injected login (24.151.103.17)",
                   f"{sum('24.151.103.17' in named(a) for a in crit)} of 1 (critical)",
                   per_day(len(loud(alerts, lambda a: "24.151.103.17" in named(a))), c),
                   "benign part: a real internet-facing host (its brute forces are real attacks too)"), alerts)

    for rel, what in (("secrepo_access_log", "secrepo.com's own Apache log"),
                      ("elastic_examples/apache_logs.log", "a blog's Apache log")):
        p = ds / rel
        if p.exists():
            files = input_files([str(p)])
            alerts, c = run_pack(files)
            add(Result(f"benign: {rel}", "none", "-", per_day(len(loud(alerts)), c), what), alerts)

    # the generated workloads without planted attacks (bench/workload.py)
    tmp = HERE / "out" / "detection"
    tmp.mkdir(parents=True, exist_ok=True)
    gens = (("sshd", lambda: workload.sshd_lines(lines, attackers=0).lines, None),
            ("nginx", lambda: workload.nginx_lines(lines, scanners=0), "nginx"))
    for name, make, fmt in gens:
        f = tmp / f"benign-{name}.log"
        workload.write_lines(str(f), make())
        alerts, c = run_pack([f], fmt=fmt)
        note = "planted: a few answered injections and one 5xx burst" if name == "nginx" else "no planted attacks"
        add(Result(f"benign generated {name} ({lines:,} lines)", "none", "-", per_day(len(loud(alerts)), c), note),
            alerts)
    return out


def table(results: list[Result]) -> str:
    rows = ["| dataset | labelled attacks | detected | high/critical on benign data | rules that fired | notes |",
            "|---|---|---|---|---|---|"]
    for r in results:
        fired = ", ".join(f"{k} {v}" for k, v in sorted(r.rules.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
        more = len(r.rules) - 6
        rows.append(f"| {r.name} | {r.labelled} | {r.detected} | {r.loud_per_day or '-'} | "
                    f"{fired}{f' (+{more} more)' if more > 0 else ''} | {r.note} |")
    return "\n".join(rows) + "\n"


def write_readme(readme: Path, text: str) -> None:
    doc = readme.read_text(encoding="utf-8")
    a, b = doc.index(MARK_START) + len(MARK_START), doc.index(MARK_END)
    readme.write_text(doc[:a] + "\n" + text + doc[b:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--readme", type=Path, default=None, help="write the table into this README's markers")
    ap.add_argument("--lines", type=int, default=200_000, help="lines per generated benign workload")
    a = ap.parse_args(argv)
    if not a.datasets.is_dir():
        print(f"no datasets at {a.datasets}", file=sys.stderr)
        return 2
    text = table(report(a.datasets, a.lines))
    sys.stdout.write(text)
    if a.readme is not None:
        write_readme(a.readme, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
