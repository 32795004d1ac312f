"""siem.service: the sd_notify protocol, spoken to a real unix datagram socket."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from notify_socket import NotifySocket

from siem.logsetup import clear_secrets, register_secret
from siem.service import Notifier, notify_address, sanitize_status, watchdog_interval_s, watchdog_loop

# A miniature daemon: READY after "binding", watchdog + STATUS from its event loop, STOPPING on SIGTERM.
DAEMON = textwrap.dedent(
    """
    import asyncio, signal, sys
    from siem.logsetup import register_secret
    from siem.service import Notifier, watchdog_loop

    register_secret("hunter2-webhook-token")
    notifier = Notifier.from_env()

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        notifier.ready("listening")
        status = lambda: "12.5 events/s; route pager via json://h/x?token=hunter2-webhook-token"
        task = asyncio.create_task(watchdog_loop(notifier, status, status_every_s=0.05))
        print("started", flush=True)
        await stop.wait()
        notifier.stopping("draining")
        task.cancel()

    asyncio.run(main())
    """
)


def _start(env_extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, **env_extra}
    return subprocess.Popen([sys.executable, "-c", DAEMON], env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.timeout(60)
def test_subprocess_sends_ready_watchdog_status_stopping() -> None:
    """A process using Notifier sends READY=1, WATCHDOG=1, STATUS= and STOPPING=1 to NOTIFY_SOCKET."""
    with NotifySocket() as ns:
        proc = _start(ns.env(watchdog_usec=200_000))
        try:
            ready = ns.wait_for("READY", timeout_s=30)
            ns.wait_for("WATCHDOG", timeout_s=30)
            ns.wait_for("WATCHDOG", timeout_s=30)
            status = ns.wait_for("STATUS", timeout_s=30)
            proc.send_signal(signal.SIGTERM)
            stopping = ns.wait_for("STOPPING", timeout_s=30)
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
            proc.wait()
    assert ready.fields == (("READY", "1"), ("STATUS", "listening"))
    assert ready.pid == proc.pid
    assert status.get("STATUS") == "12.5 events/s; route pager via json://h/x?token=***"
    assert stopping.fields == (("STOPPING", "1"), ("STATUS", "draining"))


@pytest.mark.timeout(60)
def test_abstract_namespace_socket() -> None:
    """An ``@name`` NOTIFY_SOCKET (abstract namespace) receives notifications too."""
    with NotifySocket(abstract=True) as ns:
        proc = _start(ns.env())
        try:
            ready = ns.wait_for("READY", timeout_s=30)
            proc.send_signal(signal.SIGTERM)
            ns.wait_for("STOPPING", timeout_s=30)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
    assert ready.get("READY") == "1"


@pytest.mark.timeout(60)
def test_no_watchdog_pings_when_watchdog_is_for_another_pid() -> None:
    """With WATCHDOG_PID naming another process, only STATUS lines flow, never WATCHDOG=1."""
    with NotifySocket() as ns:
        proc = _start(ns.env(watchdog_usec=200_000, watchdog_pid=1))
        try:
            ns.wait_for("READY", timeout_s=30)
            ns.wait_for("STATUS", timeout_s=30)
            ns.wait_for("STATUS", timeout_s=30)
            proc.send_signal(signal.SIGTERM)
            ns.wait_for("STOPPING", timeout_s=30)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        keys = {key for note in ns.received for key, _ in note.fields}
    assert "WATCHDOG" not in keys


def test_disabled_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET the notifier is disabled and every call is a quiet no-op."""
    notifier = Notifier.from_env({})
    assert (notifier.enabled, notifier.ready(), notifier.watchdog(), notifier.stopping()) == (
        False, False, False, False)


def test_from_env_unsets_the_variables() -> None:
    """from_env removes NOTIFY_SOCKET and WATCHDOG_* so child processes do not inherit them."""
    env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid()), "A": "b"}
    notifier = Notifier.from_env(env)
    assert (env, notifier.address, notifier.watchdog_s) == ({"A": "b"}, "/run/x.sock", 15.0)


def test_notify_address_forms() -> None:
    """Paths are used as they are, ``@`` becomes a leading NUL, other forms are refused."""
    assert [notify_address(v) for v in ("/run/systemd/notify", "@abc", "@", "vsock:2:1234", "rel/path")] == [
        "/run/systemd/notify", b"\0abc", None, None, None]


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=30000000 means a ping every 15 s."""
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0


def test_watchdog_interval_checks_pid_and_format() -> None:
    """Another process's WATCHDOG_PID, a zero or a malformed WATCHDOG_USEC all mean no watchdog."""
    envs = [
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "123"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "30s"},
        {},
    ]
    assert [watchdog_interval_s(e, pid=123) for e in envs] == [None, 15.0, None, None, None]


def test_reloading_carries_monotonic_usec() -> None:
    """RELOADING=1 comes with MONOTONIC_USEC read from CLOCK_MONOTONIC at the time of sending."""
    with NotifySocket() as ns:
        notifier = Notifier(ns.value)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        note = ns.wait_for("RELOADING", timeout_s=10)
        notifier.close()
    assert note.get("RELOADING") == "1"
    assert before <= int(note.get("MONOTONIC_USEC") or -1) <= after


def test_status_cannot_inject_assignments() -> None:
    """A newline in status text is escaped: the datagram holds one STATUS field and no READY=1."""
    with NotifySocket() as ns:
        notifier = Notifier(ns.value)
        notifier.status("user evil\nREADY=1\x1b[2J")
        note = ns.wait_for("STATUS", timeout_s=10)
        notifier.close()
    assert note.fields == (("STATUS", "user evil\\nREADY=1\\x1b[2J"),)


def test_status_redacts_registered_secrets() -> None:
    """A registered secret and a URL password never reach STATUS."""
    register_secret("s3cr3t-value")
    try:
        text = sanitize_status("route mailtos://ops:pw@mail.example token s3cr3t-value")
    finally:
        clear_secrets()
    assert text == "route mailtos://ops:***@mail.example token ***"


def test_status_is_capped() -> None:
    """A very long status line is cut to STATUS_MAX_CHARS."""
    assert len(sanitize_status("x" * 10_000)) == 512


def test_send_to_missing_socket_returns_false() -> None:
    """A NOTIFY_SOCKET that does not exist makes send() return False instead of raising."""
    notifier = Notifier("/nonexistent/dir/notify.sock")
    assert (notifier.ready(), notifier.watchdog()) == (False, False)


def test_watchdog_loop_keeps_pinging_when_status_fails() -> None:
    """A status callable that raises is logged; the watchdog pings go on."""
    ticks: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 3:
            raise asyncio.CancelledError

    def broken_status() -> str:
        raise RuntimeError("boom")

    with NotifySocket() as ns:
        notifier = Notifier(ns.value, watchdog_s=0.5)
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(watchdog_loop(notifier, broken_status, status_every_s=10.0, sleep=fake_sleep))
        for _ in range(3):
            ns.wait_for("WATCHDOG", timeout_s=10)
        notifier.close()
    assert ticks == [0.5, 0.5, 0.5]


def test_watchdog_loop_returns_when_disabled() -> None:
    """Without NOTIFY_SOCKET the loop has nothing to do and returns at once."""
    asyncio.run(asyncio.wait_for(watchdog_loop(Notifier(None), lambda: "x"), timeout=10))


BLOCKER = textwrap.dedent(
    """
    import asyncio, time
    from siem.service import Notifier, watchdog_loop

    notifier = Notifier.from_env()

    async def main():
        task = asyncio.create_task(watchdog_loop(notifier))
        await asyncio.sleep(0.5)            # some pings flow
        notifier.send("X_MARK=blocked")
        time.sleep(1.0)                     # a runaway batch blocks the event loop
        notifier.send("X_MARK=unblocked")
        await asyncio.sleep(0.5)            # pings resume
        task.cancel()
        notifier.stopping()

    asyncio.run(main())
    """
)


@pytest.mark.timeout(60)
def test_blocked_event_loop_stops_the_pings() -> None:
    """While the event loop is blocked no WATCHDOG=1 is sent (so systemd can notice); pings resume after."""
    with NotifySocket() as ns:
        proc = subprocess.Popen([sys.executable, "-c", BLOCKER], env={**os.environ, **ns.env(watchdog_usec=100_000)})
        try:
            ns.wait_for("STOPPING", timeout_s=30)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        keys = [note.get("X_MARK") or note.fields[0][0] for note in ns.received]
    start, end = keys.index("blocked"), keys.index("unblocked")
    assert ("WATCHDOG" in keys[:start], keys[start + 1:end], "WATCHDOG" in keys[end:]) == (True, [], True)


def test_extend_timeout_in_microseconds() -> None:
    """extend_timeout(90) asks systemd for 90 s more, in microseconds."""
    with NotifySocket() as ns:
        notifier = Notifier(ns.value)
        notifier.extend_timeout(90)
        note = ns.wait_for("EXTEND_TIMEOUT_USEC", timeout_s=10)
        notifier.close()
    assert note.fields == (("EXTEND_TIMEOUT_USEC", "90000000"),)
