"""Talking to systemd: the sd_notify protocol over NOTIFY_SOCKET, implemented by hand.

systemd passes a unix datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). Each notification is one datagram of newline-separated ``KEY=VALUE`` assignments
(systemd.notify(5), sd_notify(3)). What the daemon sends, and when:

    READY=1                      inputs bound and state restored (again after a reload)
    RELOADING=1 MONOTONIC_USEC=  SIGHUP received, reload starting (Type=notify-reload needs both)
    STOPPING=1                   SIGTERM received, draining
    EXTEND_TIMEOUT_USEC=         a slow start or drain asks for more time than TimeoutStartSec/StopSec
    STATUS=<one line>            rates for `systemctl status`; the caller builds it, secrets redacted
    WATCHDOG=1                   every WATCHDOG_USEC/2 from the event loop, so a blocked loop gets killed

Without NOTIFY_SOCKET (a terminal, a test, another supervisor) every call is a no-op. Sending never
raises: a supervisor that went away must not take the daemon with it; failures are logged once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from siem.logsetup import escape_control, redact

from siem import metrics

log = logging.getLogger(__name__)

STATUS_MAX_CHARS = 512  # systemctl status shows one line; keep datagrams small
_SEND_TIMEOUT_S = 2.0


def notify_address(value: str) -> str | bytes | None:
    """The socket address named by a NOTIFY_SOCKET value; None when unusable.

    ``/run/systemd/notify`` is a filesystem path; ``@name`` is the abstract namespace (a leading NUL
    byte on the wire). Other forms (``vsock:``) are not supported and give None.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send WATCHDOG=1, in seconds: half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises. None when the watchdog is off, malformed, or meant for another process (WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text.isdigit() or int(usec_text) == 0:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        if not pid_text.isdigit() or int(pid_text) != (os.getpid() if pid is None else pid):
            return None
    return int(usec_text) / 1_000_000 / 2


def sanitize_status(text: str, secrets: tuple[str, ...] = ()) -> str:
    """One safe STATUS line: secrets redacted, control characters (a newline would start a forged
    assignment such as READY=1) escaped, length capped."""
    line = escape_control(redact(text, secrets))
    if len(line) > STATUS_MAX_CHARS:
        line = line[: STATUS_MAX_CHARS - 3] + "..."
    return line


class Notifier:
    """Sends sd_notify messages. ``Notifier(None)`` is the disabled notifier: every call does nothing."""

    def __init__(self, address: str | bytes | None, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s if address is not None else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, *, unset_environment: bool = True) -> Notifier:
        """The notifier systemd configured for this process. With ``unset_environment`` (the default),
        NOTIFY_SOCKET and WATCHDOG_* are removed from the environment, so child processes (journalctl)
        do not inherit them, as sd_notify(3) does with unset_environment=1."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = notify_address(raw) if raw else None
        if raw and address is None:
            log.warning("NOTIFY_SOCKET has an unsupported form; not notifying systemd",
                        extra={"notify_socket": raw})
        watchdog_s = watchdog_interval_s(env)
        if unset_environment:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        """Send one raw notification datagram; True when it was sent. Never raises."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(_SEND_TIMEOUT_S)
                self._sock = sock
            self._sock.sendto(message.encode("utf-8", "replace"), self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd: %s", exc.strerror or exc.__class__.__name__)
            return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup (or a reload) finished."""
        return self.send(self._with_status("READY=1", status))

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, required by Type=notify-reload).
        Send ``ready()`` when the reload is done, whether it succeeded or not."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(self._with_status(f"RELOADING=1\nMONOTONIC_USEC={usec}", status))

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown began."""
        return self.send(self._with_status("STOPPING=1", status))

    def status(self, text: str) -> bool:
        """STATUS=<text>, sanitised (see :func:`sanitize_status`)."""
        return self.send(f"STATUS={sanitize_status(text)}")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: ask for ``seconds`` more before systemd gives up on a slow start (a long
        state restore), stop or reload; repeat it while the work goes on."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(int(seconds * 1_000_000), 0)}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the event loop is alive."""
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _with_status(head: str, status: str | None) -> str:
        return head if status is None else f"{head}\nSTATUS={sanitize_status(status)}"


async def watchdog_loop(
    notifier: Notifier,
    status_fn: Callable[[], str] | None = None,
    *,
    status_every_s: float = 10.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    stalled: Callable[[], str | None] | None = None,
) -> None:
    """Ping the watchdog and refresh STATUS until cancelled. Run it as a task on the daemon's event loop:
    the pings come from the loop itself, so a loop blocked by a runaway batch stops them and systemd
    restarts the daemon (that is the point; never move this to a thread).

    Pings every ``notifier.watchdog_s`` (half of WatchdogSec); sends ``status_fn()`` about every
    ``status_every_s``. A failing ``status_fn`` is logged and the pings go on. ``stalled()`` names a stage
    that has stopped moving (an engine or checkpoint writer that hangs in a thread, where the loop itself
    goes on): while it does, the pings stop (systemd restarts the daemon after WatchdogSec) and
    siem_stage_stalled is 1. Returns at once when there is nothing to ping and nothing to watch.
    """
    if stalled is None and (not notifier.enabled or (notifier.watchdog_s is None and status_fn is None)):
        return
    tick_s = status_every_s if notifier.watchdog_s is None else min(notifier.watchdog_s, status_every_s)
    if stalled is not None:
        tick_s = min(tick_s, 1.0)
    since_status_s = status_every_s  # send a status on the first tick
    was_stalled: str | None = None
    while True:
        stuck = stalled() if stalled is not None else None
        if stuck != was_stalled:
            if stuck is not None:
                log.error("%s; no longer telling systemd's watchdog that siem is alive", stuck)
            else:
                log.warning("the stalled stage moves again; watchdog pings resume")
            metrics.STAGE_STALLED.set(1 if stuck is not None else 0)
            was_stalled = stuck
        if notifier.watchdog_s is not None and stuck is None:
            notifier.watchdog()
        if status_fn is not None and since_status_s >= status_every_s:
            since_status_s = 0.0
            try:
                notifier.status(status_fn())
            except Exception:  # the status line is cosmetic; the watchdog is not
                log.exception("building the STATUS line failed")
        await sleep(tick_s)
        since_status_s += tick_s



def has_terminal() -> bool:
    """Whether this process has a usable controlling terminal. Compared before and at a SIGHUP, it tells a
    terminal's hangup (the window running `siem run` was closed: stop) from an operator's reload signal
    (the terminal is still there, or there never was one: systemd, nohup, setsid)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:  # ENXIO: no controlling terminal (any more); EIO: it was hung up
        return False
    try:
        os.write(fd, b"")  # a hung-up terminal fails writes with EIO
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
