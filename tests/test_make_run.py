"""`make run`: the daemon on its embedded defaults over sample_logs/ shows alerts within seconds."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_embedded_defaults_print_alerts_from_sample_logs(tmp_path: Path) -> None:
    """`siem run --print-alerts` in a copy of the checkout prints the sample attack's alerts as JSON lines."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "sample_logs", tmp_path / "sample_logs")
    proc = subprocess.Popen([sys.executable, "-m", "siem", "run", "--print-alerts"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rules: set[str] = set()
    wanted = {"ssh_bruteforce", "ssh_login_after_bruteforce", "web_sql_injection", "aws_cloudtrail_logging_stopped"}
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        buf = b""
        deadline = time.monotonic() + 90
        while not wanted <= rules and time.monotonic() < deadline:
            if sel.select(timeout=1):
                chunk = os.read(proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                rules.update(orjson.loads(line)["rule"] for line in lines if line.strip())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert wanted <= rules, f"missing {wanted - rules}"


def _read_until(proc: subprocess.Popen, stream: str, pattern: bytes, deadline: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr until ``pattern`` shows up in ``stream``; (stdout, stderr) so far."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")  # type: ignore[arg-type]
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")  # type: ignore[arg-type]
    got = {"stdout": b"", "stderr": b""}
    while pattern not in got[stream] and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            got[key.data] += chunk
        if proc.poll() is not None:
            break
    sel.close()
    return got["stdout"], got["stderr"]


@pytest.mark.timeout(180)
def test_foreground_daemon_talks_to_a_person_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`make run` as a person sees it: what it watches, when it has caught up and the alerts so far on
    stderr, one readable line per alert on stdout, a single warning that no route is configured, and no
    traceback when Ctrl-C reaches the whole process group (the parse workers too)."""
    shutil.copytree(ROOT / "sample_logs", tmp_path / "sample_logs")
    logs = tmp_path / "sample_logs"
    (tmp_path / "siem.toml").write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\nrules = ["{ROOT}/rules"]\nmetrics_address = "127.0.0.1:0"\n'
        'parse_workers = 2\n'
        '[inputs.syslog_tcp]\ntype = "syslog"\nprotocol = "tcp"\naddress = "127.0.0.1"\nport = 0\n'
        f'[inputs.sample_syslog]\ntype = "files"\nformat = "syslog"\npaths = ["{logs}/syslog/*.log"]\n'
        f'[inputs.sample_nginx]\ntype = "files"\nformat = "nginx"\npaths = ["{logs}/nginx/*.log"]\n'
        f'[inputs.sample_cloudtrail]\ntype = "cloudtrail"\ndirectory = "{logs}/cloudtrail"\n'
        '[alerting]\ngroup_wait = "1s"\n')
    proc = subprocess.Popen([sys.executable, "-m", "siem", "run", "-c", str(tmp_path / "siem.toml"), "--print-alerts",
                             "--progress", "--format", "text"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    try:
        out, err = _read_until(proc, "stderr", b"siem: caught up:", time.monotonic() + 120)
        assert b"siem: caught up:" in err, err.decode(errors="replace")[-3000:]
        more_out, more_err = _read_until(proc, "stderr", b"no alerting routes are configured", time.monotonic() + 20)
        out, err = out + more_out, err + more_err
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        rest_out, rest_err = proc.communicate(timeout=60)
    out, err = out + rest_out, err + rest_err
    text = err.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    progress = [line for line in text.splitlines() if line.startswith("siem: ")]
    assert progress[0].startswith("siem: watching 4 inputs: syslog_tcp (syslog tcp 127.0.0.1:")
    assert "sample_cloudtrail (cloudtrail " in progress[0]
    assert re.match(r"siem: 42 rules; metrics on http://127\.0\.0\.1:\d+/metrics; alerts also in ", progress[1])
    caught = next(line for line in progress if line.startswith("siem: caught up:"))
    assert re.match(r"siem: caught up: [\d,]+ events, \d+ alerts so far \(\d+ critical, \d+ high", caught), caught
    assert progress[-1].startswith("siem: stopped: ")
    assert text.count("no alerting routes are configured") == 1
    assert "no alerting route matches" not in text
    lines = out.decode().splitlines()
    assert len(lines) >= 40
    line_re = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  (CRITICAL|HIGH|MEDIUM|LOW|INFO) +\S+  \S.*  \S")
    assert [x for x in lines if not line_re.match(x)] == []
    assert max(map(len, lines)) < 600
    assert any(" aws_cloudtrail_logging_stopped  " in x and "CRITICAL" in x for x in lines)


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\nrules = ["{ROOT}/rules"]\nmetrics_address = "127.0.0.1:0"\n'
                   '[inputs.tcp]\ntype = "syslog"\nprotocol = "tcp"\naddress = "127.0.0.1"\nport = 0\n')
    return cfg


def _in_a_terminal(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """`siem run --print-alerts` in a session of its own whose controlling terminal is a fresh pty."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    err = tmp_path / "stderr.log"
    proc = subprocess.Popen([sys.executable, "-m", "siem", "run", "-c", str(_config(tmp_path)), "--print-alerts"],
                            stdin=slave, stdout=slave, stderr=open(err, "wb"), cwd=tmp_path, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    deadline = time.monotonic() + 60
    while not (tmp_path / "state" / "run.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
        time.sleep(0.2)
    return proc, master, err


@pytest.mark.timeout(120)
def test_closing_the_terminal_stops_the_daemon_but_sighup_from_an_operator_reloads(tmp_path: Path) -> None:
    """A window running `make run` that is closed hangs up its terminal: the daemon drains and exits
    instead of running on orphaned with its ports; a SIGHUP while the terminal is there still reloads."""
    proc, master, err = _in_a_terminal(tmp_path)
    try:
        time.sleep(1)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while b'"reloaded"' not in err.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b'"reloaded"' in err.read_bytes() and proc.poll() is None
        os.close(master)  # the terminal window goes away: the kernel hangs up the pty, SIGHUP to the session
        master = -1
        assert proc.wait(timeout=60) == 0
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_text()
    assert "the controlling terminal hung up: stopping" in text and "stopped cleanly" in text
    assert "Traceback" not in text
