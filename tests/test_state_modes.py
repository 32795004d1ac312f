"""State files and directories are private whatever the umask: files 0600, directories 0700 (issue 15.12).

The daemon runs as a subprocess under umask 000 (the worst case outside systemd's UMask=0077), handles
traffic that raises an alert, checkpoints and stops; then every path it created under its state directory
is checked. A rule of any nesting depth makes `siem run` exit 2 with file:line:col, not a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon_support import SSH_RULES, DaemonProc, free_port, sshd_line, wait_for


class _DeepStateDaemon(DaemonProc):
    """The state directory two missing parents below the test's directory: the daemon creates all three."""

    @property
    def state_dir(self) -> Path:
        return self.base / "deep" / "er" / "state"


def test_everything_under_the_state_dir_is_private_under_umask_000(tmp_path: Path) -> None:
    d = _DeepStateDaemon.create(tmp_path, SSH_RULES, {"syslog_tcp": {"type": "syslog", "protocol": "tcp",
                                                               "port": free_port()}},
                          daemon={"state_dir": str(tmp_path / "deep" / "er" / "state"),
                                  "checkpoint_interval": "1s", "lateness": "1s", "idle_advance": "300ms"})
    try:
        old = os.umask(0)  # Popen inherits it; restored at once
        try:
            d.start()
        finally:
            os.umask(old)
        now = datetime.fromtimestamp(time.time(), UTC).strftime("%b %e %H:%M:%S")
        d.send_tcp("syslog_tcp", [b"<38>" + sshd_line(now, "10.0.0.9", i) for i in range(6)])
        d.wait_alerts(1)
        state = tmp_path / "deep" / "er" / "state"
        assert d.terminate() == 0
    finally:
        d.close()
    state = tmp_path / "deep" / "er" / "state"
    created = [tmp_path / "deep", tmp_path / "deep" / "er", *[state, *state.rglob("*")]]
    wrong = []
    names = set()
    for p in created:
        mode = stat.S_IMODE(p.lstat().st_mode)
        names.add(p.name)
        want = 0o700 if p.is_dir() else 0o600
        if p.is_symlink() or mode != want:
            wrong.append(f"{p.relative_to(tmp_path)}: {oct(mode)} (want {oct(want)})")
    assert not wrong, wrong
    assert {"outbox.sqlite", "alerts.jsonl", "siem.pid", "run.json", "checkpoint", "LOCK"} <= names, names
    assert any(p.parent.name == "log" and p.is_file() for p in state.rglob("*")), names  # log segments


@pytest.mark.parametrize("n", [150, 1000, 100_000])
def test_siem_run_with_a_deeply_nested_rule_exits_2_with_a_location(tmp_path: Path, n: int) -> None:
    (tmp_path / "rules").mkdir()
    rules = tmp_path / "rules" / "deep.rules"
    rules.write_text("rule r {\n  when " + "not " * n + 'user.name == "x"\n}\n')
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nrules = ["{tmp_path / "rules"}"]\n'
                   f'metrics_address = "127.0.0.1:{free_port()}"\n')
    proc = subprocess.run([sys.executable, "-m", "siem", "run", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{rules}:2:" in proc.stderr and "too-deep" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
