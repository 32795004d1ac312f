"""`make run`: the daemon on its embedded defaults over sample_logs/ shows alerts within seconds."""

from __future__ import annotations

import os
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
