"""Parse throughput per format, one core (CPU time of this process): lines/s through siem.parse.parse (decode, limits, metrics).

    .venv/bin/python -m bench.parse_throughput [--datasets ../shared/datasets] [--synthetic 500000]
                                               [--min-seconds 2] [--profile FORMAT]

Each format is measured on real lines from the datasets (repeated until at least --min-seconds of
parsing), and sshd additionally on a synthetic file of --synthetic lines written to a temporary file
and read back (a mix of failed/accepted logins, invalid users, disconnects and pam lines from 50,000
source addresses over a day), once through parse() per record and once through parse_batch (1,000
records per call). Each case is timed after a warm-up of its first 20,000 lines. Prints one line per
case: lines, CPU seconds, lines/s, failed events.
--profile FORMAT runs cProfile on that format and prints the top functions.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a script: bench/profile.py must not shadow the stdlib profile module

import argparse
import cProfile
import gc
import os
import pstats
import random
import tempfile
import time

from siem.parse import ParseContext, parse, parse_batch

REPO = Path(__file__).resolve().parent.parent
WARMUP = 20_000  # lines parsed before timing (interpreter specialisation, first minutes and addresses)
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"

SOURCES: dict[str, list[str]] = {
    "syslog": [
        "loghub/OpenSSH_2k.log",
        "secrepo_auth_log/auth.log",
        "elastic_examples/suspicious_login_auth.log",
        "loghub/Linux_2k.log",
    ],
    "apache": [
        "elastic_examples/apache_logs.log",
        "logparser_hackers_access/hackers-access.log",
        "ocatak_apache_http_logs/acunetix.txt",
    ],
    "nginx": ["secrepo_access_log/access.log.2022-12-22", "logparser_hackers_access/hackers-access.log"],
    "cloudtrail": [
        "otrf_security_datasets_aws/ec2_proxy_s3_exfiltration_2020-09-14011940.json",
        "aws_docs_cloudtrail_examples/aws_docs_examples.jsonl",
    ],
}


def _lines(datasets: Path, rel: list[str]) -> list[bytes]:
    out: list[bytes] = []
    for r in rel:
        out.extend(x for x in (datasets / r).read_bytes().splitlines() if x)
    return out


def synthetic_sshd(n: int, seed: int = 7) -> list[bytes]:
    """n realistic sshd syslog lines, written to and read back from a temporary file."""
    rnd = random.Random(seed)
    users = ["root", "admin", "oracle", "test", "ubuntu", "git", "postgres", "user1", "deploy", "pi"]
    months = ["Mar 27", "Mar 28"]
    shapes = [
        "Failed password for {u} from {ip} port {p} ssh2",
        "Failed password for invalid user {u} from {ip} port {p} ssh2",
        "Invalid user {u} from {ip} port {p}",
        "Accepted publickey for {u} from {ip} port {p} ssh2: RSA SHA256:Kl3kPGZrTiz8gN5O",
        "Accepted password for {u} from {ip} port {p} ssh2",
        "Disconnected from authenticating user {u} {ip} port {p} [preauth]",
        "Connection closed by {ip} port {p} [preauth]",
        "Received disconnect from {ip} port {p}:11: Bye Bye [preauth]",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={u}",
        "error: maximum authentication attempts exceeded for {u} from {ip} port {p} ssh2 [preauth]",
        "pam_unix(sshd:session): session opened for user {u}(uid=1000) by (uid=0)",
    ]
    ips = [f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
           for _ in range(50_000)]
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
        path = f.name
        for i in range(n):
            sec = i * 86_400 // n
            stamp = f"{months[sec // 86_400 % 2]} {sec // 3600 % 24:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
            msg = rnd.choice(shapes).format(u=rnd.choice(users), ip=rnd.choice(ips), p=rnd.randrange(1024, 65535))
            f.write(f"{stamp} web-{i % 7} sshd[{10000 + i % 50000}]: {msg}\n")
    try:
        return Path(path).read_bytes().splitlines()
    finally:
        os.unlink(path)


def measure(fmt: str, lines: list[bytes], min_seconds: float) -> tuple[int, float, int]:
    ctx = ParseContext(now_ms=1_700_000_000_000)
    for line in lines[:WARMUP]:
        parse(fmt, line, ctx, "bench-warmup")
    total = 0
    failed = 0
    gc.disable()
    try:
        start = time.process_time()
        while True:
            for line in lines:
                if "error.message" in parse(fmt, line, ctx, "bench"):
                    failed += 1
            total += len(lines)
            elapsed = time.process_time() - start
            if elapsed >= min_seconds:
                return total, elapsed, failed
    finally:
        gc.enable()


def measure_batch(fmt: str, lines: list[bytes], min_seconds: float, size: int = 1000) -> tuple[int, float, int]:
    """The same through parse_batch, `size` records per call."""
    ctx = ParseContext(now_ms=1_700_000_000_000)
    parse_batch(fmt, lines[:WARMUP], ctx, "bench-warmup")
    chunks = [lines[i:i + size] for i in range(0, len(lines), size)]
    total = 0
    failed = 0
    gc.disable()
    try:
        start = time.process_time()
        while True:
            for chunk in chunks:
                failed += sum("error.message" in ev for ev in parse_batch(fmt, chunk, ctx, "bench"))
            total += len(lines)
            elapsed = time.process_time() - start
            if elapsed >= min_seconds:
                return total, elapsed, failed
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    ap.add_argument("--synthetic", type=int, default=500_000)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--profile", default="")
    args = ap.parse_args(argv)
    cases: list[tuple[str, str, list[bytes]]] = []
    for fmt, rel in SOURCES.items():
        cases.append((fmt, "datasets", _lines(args.datasets, rel)))
    if args.synthetic:
        cases.append(("syslog", f"synthetic sshd x{args.synthetic}", synthetic_sshd(args.synthetic)))
    if args.profile:
        fmt_lines = [c for c in cases if c[0] == args.profile]
        if not fmt_lines:
            print(f"no lines for format {args.profile!r}", file=sys.stderr)
            return 2
        prof = cProfile.Profile()
        prof.runcall(measure, args.profile, fmt_lines[-1][2], args.min_seconds)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        return 0
    start = time.process_time()
    for _ in range(5_000_000):
        pass
    print(f"machine speed: {(time.process_time() - start) / 5_000_000 * 1e9:.1f} ns per empty Python loop iteration")
    print(f"{'format':<11} {'input':<28} {'lines':>9} {'seconds':>8} {'lines/s':>10} {'failed':>7}")
    for fmt, label, lines in cases:
        n, secs, failed = measure(fmt, lines, args.min_seconds)
        print(f"{fmt:<11} {label:<28} {n:>9} {secs:>8.2f} {n / secs:>10,.0f} {failed:>7}")
    fmt, label, lines = cases[-1]
    n, secs, failed = measure_batch(fmt, lines, args.min_seconds)
    print(f"{fmt:<11} {label + ', batch':<28} {n:>9} {secs:>8.2f} {n / secs:>10,.0f} {failed:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
