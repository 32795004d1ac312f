"""The real daemon (`siem run --config F`, a subprocess) under load: max sustained rate, then latency.

1. Max sustained rate: one TCP connection to a syslog input (framing lf) sends sshd/sudo lines as fast
   as the daemon takes them (the bounded intake queue pushes back on the socket) for a few seconds;
   the rate is the growth of siem_rule_evaluations_total{rule="ssh_bruteforce"} (every event of every
   batch is counted once per rule) between two scrapes of the metrics endpoint after a warm-up.
2. Latency: after the daemon has caught up, 50% of that rate is offered for `seconds`, paced in 10 ms
   ticks; 20 times a second one of the lines is a probe, "Accepted password for root from <a fresh
   address>", which completes the shipped rule ssh_root_login on its own (a single-event rule). The
   probe's send time is compared with the time its alert line appears in the alert log (tailed every
   5 ms): p50/p95/p99. The daemon's own histogram siem_event_to_alert_seconds (collector receive to
   alert submit) is scraped at the end too.

Event time and lateness: an event is evaluated once the watermark (max event time - lateness) passes
it, so with the default lateness (10s) a single-event alert waits for the stream to move 10 s on. The
latency phase therefore runs with the lateness given (default "0s": what the pipeline itself costs);
the daemon's default adds that lateness to every alert by design.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
BACKGROUND = (
    "sshd[{pid}]: Connection closed by {ip} port {port} [preauth]",
    "sshd[{pid}]: Accepted publickey for alice from 10.1.2.{o} port {port} ssh2: RSA SHA256:Kl3kPGZrTiz8gN5O5Yw9",
    "sshd[{pid}]: pam_unix(sshd:session): session opened for user alice by (uid=0)",
    "sudo:   admin : TTY=pts/0 ; PWD=/home/admin ; USER=root ; COMMAND=/usr/bin/apt-get update",
    "sshd[{pid}]: Invalid user oracle from {ip} port {port}",
    "CRON[{pid}]: pam_unix(cron:session): session opened for user root by (uid=0)",
)


_stamp_cache: list = [None, ""]


def _stamp(now: float) -> str:
    sec = int(now)
    if _stamp_cache[0] != sec:
        t = time.gmtime(sec)
        _stamp_cache[:] = [sec, time.strftime("%b ", t) + f"{t.tm_mday:2d} " + time.strftime("%H:%M:%S", t)]
    return _stamp_cache[1]


def background_line(i: int, now: float) -> bytes:
    ip = f"198.18.{(i >> 8) & 255}.{i & 255}"
    msg = BACKGROUND[i % len(BACKGROUND)].format(pid=1000 + i % 30000, ip=ip, port=1024 + i % 60000, o=i % 250)
    return f"<38>{_stamp(now)} web{i % 4} {msg}\n".encode()


def probe_line(k: int, now: float) -> tuple[str, bytes]:
    ip = f"203.0.{(k >> 8) & 255}.{k & 255}" if k < 65536 else f"198.51.{(k >> 8) & 255}.{k & 255}"
    return ip, f"<38>{_stamp(now)} bastion sshd[{2000 + k % 30000}]: Accepted password for root from {ip} " \
               f"port {20000 + k % 40000} ssh2\n".encode()


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def evaluated(port: int, rule: str = "ssh_bruteforce") -> float:
    for name, labels, value in scrape(port).get("siem_rule_evaluations", []):
        if name.endswith("_total") and labels.get("rule") == rule:
            return value
    return 0.0


def histogram_quantiles(port: int, name: str = "siem_event_to_alert_seconds") -> dict:
    buckets = [(float(labels["le"]), v) for n, labels, v in scrape(port).get(name, []) if n.endswith("_bucket")]
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return {"count": 0}
    total = buckets[-1][1]
    q = {}
    for p in (0.5, 0.95, 0.99):
        q[f"p{int(p * 100)}_le_s"] = next(le for le, c in buckets if c >= p * total)
    q["count"] = total
    return q


class AlertTail(threading.Thread):
    """Tails the alert log: source.ip of each ssh_root_login alert -> the time it was seen."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.seen, self.stop = path, {}, threading.Event()

    def run(self) -> None:
        pos, buf = 0, b""
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            now = time.time()
            if data:
                pos += len(data)
                buf += data
                *lines, buf = buf.split(b"\n")
                for ln in lines:
                    try:
                        a = json.loads(ln)
                    except ValueError:
                        continue
                    if a.get("rule") == "ssh_root_login":
                        self.seen.setdefault(a.get("group", {}).get("source.ip") or
                                             (a.get("events") or [{}])[0].get("source.ip"), now)
            time.sleep(0.005)


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]


def measure(max_rate_seconds: float = 6.0, seconds: float = 20.0, lateness: str = "0s",
            rules: str | None = None, warmup_seconds: float = 2.0, daemon_extra: dict | None = None,
            settle_seconds: float = 0.0, offered_rate: float | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="siem-bench-") as tmp:
        base = Path(tmp)
        cfg = base / "siem.toml"
        cfg.write_text(
            "[daemon]\n"
            f'state_dir = "{base / "state"}"\n'
            f'rules = ["{rules or REPO / "rules"}"]\n'
            'metrics_address = "127.0.0.1:0"\n'
            f'lateness = "{lateness}"\n'
            'log_format = "json"\n'
            'log_level = "warning"\n'
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in (daemon_extra or {}).items()) + "\n"
            "[inputs.bench]\n"
            'type = "syslog"\nprotocol = "tcp"\naddress = "127.0.0.1"\nport = 0\nframing = "lf"\n')
        stderr = open(base / "daemon.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "siem", "run", "--config", str(cfg)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            run_file = base / "state" / "run.json"
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {proc.returncode}: {(base / 'daemon.log').read_text()[-2000:]}")
                if run_file.exists():
                    try:
                        run = json.loads(run_file.read_text())
                        if run.get("metrics_port") and run["inputs"]["bench"]["port"]:
                            break
                    except (ValueError, KeyError, TypeError):
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError("daemon did not start within 60 s")
                time.sleep(0.1)
            mport, iport = run["metrics_port"], run["inputs"]["bench"]["port"]
            sock = socket.create_connection(("127.0.0.1", iport))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # --- phase 1: max sustained rate
            sent = 0
            stop = threading.Event()

            def blast() -> None:
                nonlocal sent
                while not stop.is_set():
                    now = time.time()
                    chunk = b"".join(background_line(sent + j, now) for j in range(500))
                    sock.sendall(chunk)
                    sent += 500

            if offered_rate is None:
                th = threading.Thread(target=blast, daemon=True)
                th.start()
                time.sleep(warmup_seconds)  # queues fill, the daemon is at its limit
                e0, t0 = evaluated(mport), time.monotonic()
                time.sleep(max_rate_seconds)
                e1, t1 = evaluated(mport), time.monotonic()
                stop.set()
                th.join()
                max_rate = (e1 - e0) / (t1 - t0)
            else:  # the rate is given (measured by an earlier run): no burst first
                max_rate = 2 * offered_rate
            # let it catch up with everything sent
            deadline = time.monotonic() + 120
            while evaluated(mport) < sent and time.monotonic() < deadline:
                time.sleep(0.2)
            caught_up = evaluated(mport) >= sent
            time.sleep(settle_seconds)  # let post-burst work (checkpoint, GC) pass before measuring latency
            # --- phase 2: 50% of the max, probes
            offered = max(max_rate * 0.5, 100.0)
            tail = AlertTail(base / "state" / "alerts" / "alerts.jsonl")
            tail.start()
            sent_at: dict[str, float] = {}
            per_tick = offered / 100.0
            owed = 0.0
            k = 0
            start = time.monotonic()
            tick = 0
            bg = sent
            behind_ticks = 0
            while time.monotonic() - start < seconds:
                tick += 1
                owed += per_tick
                now = time.time()
                batch = []
                while owed >= 1:
                    batch.append(background_line(bg, now))
                    bg += 1
                    owed -= 1
                if tick % 5 == 0:  # 20 probes per second
                    ip, line = probe_line(k, now)
                    k += 1
                    batch.append(line)
                    sent_at[ip] = time.time()
                if batch:
                    sock.sendall(b"".join(batch))
                next_t = start + tick * 0.01
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    behind_ticks += 1
            offered_actual = (bg - sent) / (time.monotonic() - start)
            deadline = time.monotonic() + 30
            while len(tail.seen) < len(sent_at) and time.monotonic() < deadline:
                time.sleep(0.05)
            tail.stop.set()
            tail.join()
            lat = [tail.seen[ip] - t for ip, t in sent_at.items() if ip in tail.seen]
            t_first = min(sent_at.values(), default=0.0)
            slow = sorted(round(t - t_first, 2) for ip, t in sent_at.items()
                          if ip in tail.seen and tail.seen[ip] - t > 0.5)
            hist = histogram_quantiles(mport)
            sock.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stderr.close()
    res = {
        "input": "syslog TCP (framing lf), one connection",
        "lateness": lateness,
        "max_sustained_events_per_s": max_rate if offered_rate is None else None,
        "caught_up_after_max": caught_up,
        "offered_events_per_s": offered_actual,
        "offered_target_events_per_s": offered,
        "pacer_late_ticks": behind_ticks,
        "seconds": seconds,
        "probes": len(sent_at),
        "probes_alerted": len(lat),
        "daemon_histogram": hist,
        "daemon_settings": daemon_extra or {},
        "slow_probe_send_offsets_s": slow[:40],  # when the probes slower than 0.5 s were sent
    }
    if lat:
        res.update(p50_s=_pct(lat, 0.5), p95_s=_pct(lat, 0.95), p99_s=_pct(lat, 0.99), max_s=max(lat),
                   mean_s=statistics.fmean(lat))
    return res


if __name__ == "__main__":
    extra = json.loads(os.environ.get("DAEMON_EXTRA", "{}"))
    got = measure(seconds=float(os.environ.get("SECONDS_", "10")), daemon_extra=extra,
                  settle_seconds=float(os.environ.get("SETTLE", "0")))
    print(json.dumps(got, indent=1))
