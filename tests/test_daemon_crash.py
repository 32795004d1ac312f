"""Crash safety: SIGKILL the daemon at random moments during a steady feed, restart it each time, and get
exactly the alerts of an uninterrupted run (and of `siem replay` over the same file), none twice."""

from __future__ import annotations

import calendar
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from daemon_support import DaemonProc, replay_ids, wait_for

RULES = """
macro ssh_failure = event.dataset == "sshd" and event.outcome == "failure"

rule ssh_bruteforce {
  severity high
  when ssh_failure
  count >= 5 within 2m by source.ip
  message "{count} failures from {source.ip}"
}

rule ssh_spray {
  severity medium
  when ssh_failure
  distinct(user.name) >= 3 within 5m by source.ip
  suppress 10m by source.ip
}
"""
T0 = 1_709_280_000  # 2024-03-01T08:00:00Z: historical, so no wall-clock advance interferes
IPS = ["203.0.113.10", "203.0.113.11", "198.51.100.20", "192.0.2.30"]
USERS = ["root", "admin", "oracle", "git", "ubuntu"]


def feed_lines(n: int, seed: int) -> list[bytes]:
    """n numbered RFC 5424 sshd failure lines, event time spaced irregularly, then one late sentinel
    line that moves the watermark past every failure (the daemon never flushes; replay does)."""
    rng = random.Random(seed)
    t = T0
    lines = []
    for i in range(n):
        t += rng.choice([1, 2, 5, 20, 45, 90])
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        ip, user = rng.choice(IPS), rng.choice(USERS)
        lines.append(f"<38>1 {ts} web{i % 3} sshd {1000 + i % 97} - - Failed password for {user} from {ip} "
                     f"port {20000 + i} ssh2".encode())  # numbered by port
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 7200))
    lines.append(f"<38>1 {ts} web0 cron 1 - - sentinel seq={n}".encode())
    return lines


def files_input(path: Path) -> dict[str, dict]:
    return {"auth": {"type": "files", "format": "syslog", "paths": [str(path)], "poll_interval": "20ms"}}


def committed_offset(d: DaemonProc, path: Path) -> int:
    try:
        state = json.loads((d.state_dir / "files-auth.json").read_text())
    except (OSError, ValueError):
        return -1
    return max((f["offset"] for f in state.get("files", []) if f["path"] == str(path)), default=-1)


def watermark_s(d: DaemonProc) -> float:
    import urllib.request

    from siem.metrics import parse_samples

    try:
        with urllib.request.urlopen(d.metrics_url(), timeout=5) as r:
            samples = parse_samples(r.read().decode())
    except OSError:
        return 0.0
    return max((v for n, _, v in samples if n == "siem_watermark_timestamp_seconds"), default=0.0)


def finish(d: DaemonProc, path: Path, last_event_s: int) -> list[str]:
    """Wait until every line of the file is committed (hence in the log) and the watermark has passed the
    last failure (every alert is out), drain with SIGTERM, read the ids."""
    size = path.stat().st_size
    wait_for(lambda: committed_offset(d, path) == size, 60, f"the whole file committed ({size} bytes)")
    wait_for(lambda: watermark_s(d) >= last_event_s, 60, "the watermark to pass the last failure")
    assert d.terminate() == 0, d.stderr()
    return [a["id"] for a in d.alerts()]


@pytest.mark.timeout(240)
def test_sigkill_at_random_moments_loses_and_repeats_no_alert(tmp_path: Path) -> None:
    """Five or more SIGKILLs during a steady feed: the alert set equals an uninterrupted run's and replay's,
    and the alert log holds no id twice."""
    seed = int(os.environ.get("SIEM_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"crash test seed {seed}")
    lines = feed_lines(2500, seed)
    last_event_s = calendar.timegm(time.strptime(lines[-2].split()[1].decode(), "%Y-%m-%dT%H:%M:%SZ"))
    rng = random.Random(seed)

    # the reference: one uninterrupted run over the complete file
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref_file = ref_dir / "auth.log"
    ref_file.write_bytes(b"".join(line + b"\n" for line in lines))
    ref = DaemonProc.create(ref_dir, RULES, files_input(ref_file))
    try:
        ref.start()
        ref_ids = finish(ref, ref_file, last_event_s)
    finally:
        ref.close()
    assert len(ref_ids) >= 10, "the feed should make several alerts fire"
    assert len(ref_ids) == len(set(ref_ids))

    # the crashed run: the same lines appended at a steady pace while the daemon is killed and restarted
    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    crash_file = crash_dir / "auth.log"
    crash_file.touch()
    d = DaemonProc.create(crash_dir, RULES, files_input(crash_file),
                          daemon={"checkpoint_interval": "300ms", "batch_max_events": 64})
    done = threading.Event()

    def writer() -> None:
        with open(crash_file, "ab", buffering=0) as f:
            for i in range(0, len(lines), 25):
                f.write(b"".join(line + b"\n" for line in lines[i: i + 25]))
                time.sleep(0.1)
        done.set()

    feeder = threading.Thread(target=writer, daemon=True)
    kills = 0
    try:
        d.start()
        feeder.start()
        while kills < 5 or not done.is_set():
            time.sleep(rng.uniform(0.1, 1.5))
            if d.proc is not None:
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait(10)
                d.proc = None
                kills += 1
            d.start(wait_ready=rng.random() < 0.7)  # sometimes killed again while still starting up
            if kills > 40:
                break
        feeder.join(60)
        if d.proc is not None and d.proc.poll() is not None:
            d.proc = None
        if d.proc is None:
            d.start()
        else:
            wait_for(d._running, 30, "the daemon to start")
        crash_ids = finish(d, crash_file, last_event_s)
    finally:
        d.close()
    assert kills >= 5
    assert len(crash_ids) == len(set(crash_ids)), "an alert was written twice"
    assert sorted(crash_ids) == sorted(ref_ids)
    assert sorted(replay_ids(tmp_path / "ref" / "rules", [ref_file])) == sorted(ref_ids)


@pytest.mark.timeout(120)
def test_events_logged_before_a_kill_still_reach_the_watermark_after_restart(tmp_path: Path) -> None:
    """Killed after the whole file is in the log but before the watermark record was written (the start-up
    hold of idle_advance): the restarted daemon learns the newest event time from the log's tail and still
    releases every alert."""
    lines = feed_lines(300, 5)
    last_event_s = calendar.timegm(time.strptime(lines[-2].split()[1].decode(), "%Y-%m-%dT%H:%M:%SZ"))
    log_file = tmp_path / "auth.log"
    log_file.write_bytes(b"".join(line + b"\n" for line in lines))
    expected = sorted(replay_ids(_rules_dir(tmp_path), [log_file]))
    d = DaemonProc.create(tmp_path, RULES, files_input(log_file), daemon={"idle_advance": "6s"})
    try:
        d.start()
        size = log_file.stat().st_size
        wait_for(lambda: committed_offset(d, log_file) == size, 30, "the whole file committed")
        assert watermark_s(d) < last_event_s  # still in the start-up hold
        d.kill()
        assert d.alerts() == []
        d.start()
        ids = finish(d, log_file, last_event_s)
    finally:
        d.close()
    assert sorted(ids) == expected


def _rules_dir(tmp_path: Path) -> Path:
    p = tmp_path / "replay-rules"
    p.mkdir(exist_ok=True)
    (p / "t.rules").write_text(RULES)
    return p
