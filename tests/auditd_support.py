"""A real Linux audit daemon for tests: ``auditd -n`` writing to a temporary directory.

    with running_auditd(tmp_path) as audit:      # flock /tmp/siem-auditd.lock; skips if auditd is busy
        audit.rule("-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-F", f"auid={AUID}", "-k", "siemtest")
        run_as_login(AUID, ["/bin/true"])          # a process tree with its own login uid
        audit.log_path                             # the audit.log auditd writes

On exit (also on failure) the daemon is stopped, the rules are deleted (``auditctl -D``) and the
kernel's audit ``enabled`` flag is set back to what it was. Only one audit daemon can be registered
with the kernel: when another one is running (``auditctl -s`` shows a pid) the test is skipped rather
than taking the host's audit trail away.

Processes started through :func:`run_as_login` set their login uid (``/proc/self/loginuid``) to a
test value first, so rules with ``-F auid=<that>`` see only the test's processes, not the rest of a
busy machine. :func:`send_user_message` sends a user-space audit record (USER_LOGIN, USER_CMD...) the
way libaudit's ``audit_log_user_message`` does: an AUDIT_USER_* netlink message to the kernel, which
adds pid, uid, auid and ses and hands it to auditd.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK = "/tmp/siem-auditd.lock"
AUID = 4242  # the login uid the test processes take
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
USER_TYPES = {"USER_AUTH": 1100, "USER_ACCT": 1101, "USER_MGMT": 1102, "CRED_ACQ": 1103, "CRED_DISP": 1104,
              "USER_START": 1105, "USER_END": 1106, "USER_LOGIN": 1112, "USER_LOGOUT": 1113,
              "SERVICE_START": 1130, "SERVICE_STOP": 1131, "USER_CMD": 1123, "ADD_USER": 1114, "DEL_USER": 1115}


def auditctl(*args: str, check: bool = True) -> str:
    out = subprocess.run(["auditctl", *args], capture_output=True, text=True, env=ENV, timeout=20, cwd="/")
    if check and out.returncode != 0:
        raise RuntimeError(f"auditctl {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def status() -> dict[str, str]:
    return dict(re.findall(r"^(\w+) (\S+)", auditctl("-s"), re.M))


@dataclass
class Audit:
    directory: Path
    proc: subprocess.Popen
    log_path: Path
    enabled_before: str = "0"  # the kernel's audit flag before the test (restored at the end)

    def rule(self, *args: str) -> None:
        auditctl(*args)

    def wait_for(self, needle: str, timeout_s: float = 10.0) -> str:
        """The log's text once it holds `needle` (auditd flushes asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


@contextlib.contextmanager
def running_auditd(tmp: Path) -> Iterator[Audit]:
    import pytest  # noqa: PLC0415 - the rest of this module also runs under a plain python

    if os.geteuid() != 0:
        pytest.skip("auditd needs root")
    if shutil.which("auditd", path=ENV["PATH"]) is None or shutil.which("auditctl", path=ENV["PATH"]) is None:
        pytest.fail("auditd is not installed: run deploy/install-test-deps.sh (Debian package auditd)")
    lock = open(LOCK, "w")  # noqa: SIM115 - held for the whole test
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:  # another test of ours has the audit daemon: wait for it (bounded)
            deadline = time.monotonic() + 120
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        pytest.skip("the audit daemon stayed busy (lock held by another test) for 120 s")
                    time.sleep(0.5)
        except BaseException:
            lock.close()
            raise
    proc = None
    try:
        before = status()
        if before.get("pid", "0") != "0":
            pytest.skip(f"an audit daemon (pid {before['pid']}) is already registered with the kernel")
        directory = tmp / "auditd"
        directory.mkdir()
        (directory / "plugins.d").mkdir()
        log_path = directory / "audit.log"
        conf = directory / "auditd.conf"
        conf.write_text(
            f"log_file = {log_path}\nlog_format = ENRICHED\nflush = INCREMENTAL_ASYNC\nfreq = 1\nmax_log_file = 8\n"
            "num_logs = 5\nmax_log_file_action = ROTATE\nspace_left = 2\nspace_left_action = IGNORE\n"
            "admin_space_left = 1\nadmin_space_left_action = IGNORE\ndisk_full_action = IGNORE\n"
            "disk_error_action = IGNORE\nname_format = NONE\nlocal_events = yes\nwrite_logs = yes\n"
            f"plugin_dir = {directory / 'plugins.d'}\nq_depth = 2000\noverflow_action = IGNORE\n")
        conf.chmod(0o640)
        proc = subprocess.Popen(["auditd", "-n", "-c", str(directory)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=ENV)
        deadline = time.monotonic() + 10
        while status().get("pid", "0") != str(proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else ""
                raise RuntimeError(f"auditd did not register with the kernel: {err.strip()}")
            time.sleep(0.05)
        yield Audit(directory, proc, log_path, before.get("enabled", "0"))
    finally:
        with contextlib.suppress(Exception):
            auditctl("-D", check=False)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            prior = before.get("enabled", "0") if "before" in locals() else "0"
            auditctl("-e", prior if prior in ("0", "1") else "0", check=False)
        lock.close()


def run_as_login(auid: int, argv: list[str], **kw: object) -> subprocess.CompletedProcess:
    """Run argv in a child whose login uid is `auid` (set before exec, inherited by its children)."""
    def set_loginuid() -> None:
        with open("/proc/self/loginuid", "w") as f:
            f.write(str(auid))
    kw.setdefault("env", ENV)
    kw.setdefault("cwd", "/")
    kw.setdefault("timeout", 30)
    return subprocess.run(argv, preexec_fn=set_loginuid, capture_output=True, **kw)  # type: ignore[call-overload]


_SEND = """
import os, socket, struct, sys
kind, text = int(sys.argv[1]), sys.argv[2].encode() + b"\\0"
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)
s.settimeout(5)
s.sendto(struct.pack("=IHHII", 16 + len(text), kind, 5, 1, 0) + text, (0, 0))
r = s.recv(8192)
if len(r) >= 20 and struct.unpack("=H", r[4:6])[0] == 2 and struct.unpack("=i", r[16:20])[0] != 0:
    sys.exit("refused: " + os.strerror(-struct.unpack("=i", r[16:20])[0]))
"""


def send_user_message(type_name: str, text: str, auid: int = AUID) -> None:
    """One user-space audit record, sent as libaudit's audit_log_user_message does (an AUDIT_USER_*
    netlink message; the kernel adds pid, uid, auid and ses), from a process with login uid `auid`."""
    out = run_as_login(auid, ["/usr/bin/python3", "-c", _SEND, str(USER_TYPES[type_name]), text])
    if out.returncode != 0:
        raise OSError(f"audit user message {type_name} refused: {out.stderr.decode().strip()}")
