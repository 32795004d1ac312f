"""A stand-in for systemd's side of the sd_notify protocol, for tests: a real unix datagram socket that
collects what a process sends to NOTIFY_SOCKET, with the sender's pid (SCM_CREDENTIALS), as systemd
receives it.

    with NotifySocket() as ns:
        proc = subprocess.Popen([...], env={**os.environ, **ns.env(watchdog_usec=1_000_000)})
        ns.wait_for("READY", timeout_s=20)           # -> the Notification carrying READY=1
        ns.wait_for("WATCHDOG", timeout_s=5)
        proc.terminate(); ns.wait_for("STOPPING", timeout_s=20)
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True)
class Notification:
    """One datagram: its assignments in order, and the sender's pid (None if unknown)."""

    fields: tuple[tuple[str, str], ...]
    pid: int | None
    raw: bytes = field(repr=False, default=b"")

    def get(self, key: str) -> str | None:
        for name, value in self.fields:
            if name == key:
                return value
        return None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


def parse_datagram(data: bytes, pid: int | None = None) -> Notification:
    pairs = []
    for line in data.decode("utf-8", "replace").split("\n"):
        if line:
            name, _, value = line.partition("=")
            pairs.append((name, value))
    return Notification(tuple(pairs), pid, data)


class NotifySocket:
    """Binds a datagram socket (a path in a short temporary directory, or an abstract ``@name``) and
    receives on a background thread. ``received`` holds everything so far, in arrival order."""

    def __init__(self, abstract: bool = False) -> None:
        self._dir: str | None = None
        if abstract:
            self.value = f"@siem-test-notify-{uuid.uuid4().hex}"
            address: str | bytes = b"\0" + self.value[1:].encode()
        else:
            self._dir = tempfile.mkdtemp(prefix="sdn-")  # short: sun_path holds 108 bytes
            self.value = os.path.join(self._dir, "notify.sock")
            address = self.value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.received: list[Notification] = []
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    def env(self, watchdog_usec: int | None = None, watchdog_pid: int | None = None) -> dict[str, str]:
        """Environment variables a supervisor would set for the child."""
        env = {"NOTIFY_SOCKET": self.value}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        if watchdog_pid is not None:
            env["WATCHDOG_PID"] = str(watchdog_pid)
        return env

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(_UCRED.size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                    pid = _UCRED.unpack_from(payload)[0]
            note = parse_datagram(data, pid)
            self.received.append(note)
            self._queue.put(note)

    def wait_for(self, key: str, timeout_s: float) -> Notification:
        """The next notification (after those already consumed by earlier waits) that carries ``key``;
        raises TimeoutError naming what did arrive."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [n.fields for n in self.received]
                raise TimeoutError(f"no {key}= notification within {timeout_s}s; received: {seen}")
            try:
                note = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if key in note:
                return note

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
