"""kill -9 of the daemon leaves no process behind: parse workers and multiprocessing's resource_tracker
die with it (issue 15.4). Five kills in a row, each with the pool busy or idle."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from daemon_support import DaemonProc, free_port, sshd_line, wait_for


def _children_of(pid: int) -> set[int]:
    """Every live process whose parent is pid, from /proc."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.timeout(240)
def test_parse_workers_and_resource_tracker_die_with_a_killed_daemon(tmp_path: Path) -> None:
    d = DaemonProc.create(tmp_path, "rule r { when user.name == \"nobody-at-all\" }\n",
                          {"syslog_tcp": {"type": "syslog", "protocol": "tcp", "port": free_port()}},
                          daemon={"parse_workers": 2})
    lines = [b"<38>" + sshd_line("Mar  1 10:00:00", "10.0.0.1", i) for i in range(3000)]
    try:
        for kill in range(5):
            d.start()
            pid = d.proc.pid
            # the pool starts its workers at the first batch worth splitting (>= 256 records)
            deadline = time.monotonic() + 60
            while len(children := _children_of(pid)) < 3 and time.monotonic() < deadline:
                d.send_tcp("syslog_tcp", lines)
                time.sleep(0.5)
            assert len(children) >= 3, f"expected 2 parse workers and the resource tracker: {children}"
            if kill % 2:
                d.send_tcp("syslog_tcp", lines)  # busy this time
            os.kill(pid, signal.SIGKILL)
            d.proc.wait(10)
            t0 = time.monotonic()
            wait_for(lambda: not any(_alive(c) for c in children), 10,
                     f"children {sorted(children)} of the killed daemon to exit")
            print(f"kill {kill + 1}: {len(children)} children gone {time.monotonic() - t0:.2f}s after kill -9")
    finally:
        d.close()
