"""Checkpoints of the real daemon: a crafted pickle put in place of the checkpoint is refused (the daemon
says what to do and never runs it), `--start-fresh` sets it aside, and `siem state convert` turns an
earlier release's pickle checkpoint into the current format with its windows intact."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from siem.pipeline.evaluator import unwrap_state, wrap_state
from siem.dsl.loader import load_texts
from siem.engine.runtime import Engine
from siem.engine.windows import _Window
from siem.log.checkpoint import load_checkpoint, save_checkpoint
from tests.daemon_support import SSH_RULES, DaemonProc, sshd_line, wait_for
from tests.test_snapshot import _OldWindow, legacy_pickle, malicious_pickle

TCP = {"syslog_tcp": {"type": "syslog", "protocol": "tcp", "address": "127.0.0.1", "port": 0}}


def siem_state(d: DaemonProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siem", "state", *args, "--config", str(d.config)],
                          cwd=d.base, capture_output=True, text=True, timeout=60)


def metric(d: DaemonProc, line_start: str) -> float:
    with urllib.request.urlopen(d.metrics_url(), timeout=5) as r:
        text = r.read().decode()
    got = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return got[0] if got else 0.0


def feed(d: DaemonProc, first: int, n: int) -> None:
    now = time.strftime("%b %e %H:%M:%S", time.gmtime())  # the config's timezone is UTC
    d.send_tcp("syslog_tcp", [b"<38>" + sshd_line(now, "10.9.9.9", i) for i in range(first, first + n)])


@pytest.fixture
def daemon_with_two_failures(tmp_path: Path) -> DaemonProc:
    """A daemon stopped cleanly after 2 of the 5 failures ssh_bruteforce needs: its checkpoint holds a window."""
    d = DaemonProc.create(tmp_path, SSH_RULES, TCP, daemon={"lateness": "1s", "idle_advance": "300ms",
                                                             "timezone": "UTC"})
    d.start()
    try:
        feed(d, 0, 2)
        wait_for(lambda: metric(d, "siem_rule_matches_total") >= 2, 30, "2 matches")
    finally:
        assert d.terminate() == 0
    check = siem_state(d, "check")
    assert check.returncode == 0, check.stderr
    assert "1 window keys" in check.stdout
    yield d
    d.close()


def test_a_crafted_pickle_checkpoint_is_refused_never_run_and_set_aside_on_request(
        daemon_with_two_failures: DaemonProc, tmp_path: Path) -> None:
    d = daemon_with_two_failures
    marker = tmp_path / "pwned"
    ck = load_checkpoint(d.state_dir)
    assert ck is not None
    crafted = wrap_state(malicious_pickle(marker), {})
    save_checkpoint(d.state_dir, ck.offset, crafted)

    d.start(wait_ready=False)
    assert d.proc is not None and d.proc.wait(30) == 1
    d.proc = None
    err = d.stderr()
    assert "pickle written by an earlier siem" in err and "siem state convert" in err and "--start-fresh" in err
    assert not marker.exists()

    conv = siem_state(d, "convert")
    assert conv.returncode == 1 and "refusing to convert" in conv.stderr, conv.stderr
    assert not marker.exists()

    d.start(args=("--start-fresh",))
    try:
        assert metric(d, 'siem_state_refused_total{reason="legacy_pickle"}') == 1
        assert metric(d, "siem_checkpoint_corrupt_total") == 1
        [aside] = d.state_dir.glob("checkpoint.bad-*")
        assert aside.read_bytes().endswith(crafted)
    finally:
        assert d.terminate() == 0
    assert not marker.exists()


def test_a_corrupt_engine_state_stops_the_start_with_what_to_do(daemon_with_two_failures: DaemonProc) -> None:
    """A checkpoint whose container is intact but whose engine state is garbage (written by a broken
    writer, say): the daemon does not start with empty windows silently, and says how to go on."""
    d = daemon_with_two_failures
    ck = load_checkpoint(d.state_dir)
    assert ck is not None
    engine_state, marks = unwrap_state(ck.state)
    save_checkpoint(d.state_dir, ck.offset, wrap_state(engine_state[:-7], marks))
    d.start(wait_ready=False)
    assert d.proc is not None and d.proc.wait(30) == 1
    d.proc = None
    err = d.stderr()
    assert "engine snapshot is truncated or padded" in err and "siem run --start-fresh" in err


def test_an_earlier_release_pickle_checkpoint_is_converted_and_its_windows_go_on(
        daemon_with_two_failures: DaemonProc, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint rewritten as a release with pickled snapshots (version 5) wrote it; `siem state
    convert` converts it once, keeps the pickle aside; the daemon continues the window: 3 more failures
    make the alert of 5."""
    d = daemon_with_two_failures
    ck = load_checkpoint(d.state_dir)
    assert ck is not None
    engine_state, marks = unwrap_state(ck.state)
    eng = Engine(load_texts({"test.rules": SSH_RULES}))
    eng.restore(engine_state)

    def old(v: object) -> object:
        return _OldWindow((v.ts, v.vals, v.samples, v.base, v.resets)) if isinstance(v, _Window) else v

    v5 = {"version": 5, "max_ts": eng.max_ts, "wm": eng.wm, "seq": eng.seq,
          "pending": (eng.pending_events, eng.pending_ts, eng.pending_seq),
          "rules": {"groups": [({r.id: r.fingerprint for r in rules},
                                {**c.get_state(), "state": {k: old(v) for k, v in c.state.items()}})
                               for c, rules in eng.correlators().values()],
                    "suppress": {r.id: (r.fingerprint, r.suppress) for r in eng.rules}}}
    save_checkpoint(d.state_dir, ck.offset, wrap_state(legacy_pickle(v5, monkeypatch), marks))

    conv = siem_state(d, "convert")
    assert conv.returncode == 0, conv.stderr
    assert "converted" in conv.stdout and "1 window keys" in conv.stdout
    assert len(list(d.state_dir.glob("checkpoint.pickle-*"))) == 1
    again = load_checkpoint(d.state_dir)
    assert again is not None and again.offset == ck.offset
    assert unwrap_state(again.state) == (engine_state, marks)  # the very state the pickle was made of
    assert "already in the current format" in siem_state(d, "convert").stdout

    d.start()
    try:
        feed(d, 2, 3)
        [alert] = d.wait_alerts(1)
        assert alert["count"] == 5
    finally:
        assert d.terminate() == 0
