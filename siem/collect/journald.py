"""journald: follow ``journalctl -o json --follow`` and remember the cursor.

The follower runs::

    <command or journalctl_path> -o json --follow (--no-tail --after-cursor=C | --no-tail | --lines=0)
        [--unit=U ...] [--identifier=T ...]

and turns every stdout line (one journal entry as a JSON object) into ``RawRecord(format="journald",
data=<the line>, origin="journald")``; mapping ``_HOSTNAME``, ``SYSLOG_IDENTIFIER``, ``_PID``, ``MESSAGE``
to events is the ``journald`` parser's job. ``units`` become ``--unit=`` options and ``identifiers``
``--identifier=`` options; journalctl ORs values of one kind and ANDs the two kinds. ``command`` replaces
``[journalctl_path]`` as the start of the command line, e.g. ``["journalctl", "--directory=/var/log/journal/remote"]``
or ``["journalctl", "--file=/srv/x.journal"]`` (the options above are always appended).

Position: the ``__CURSOR`` of the last entry handed to the sink is kept in
``<state_dir>/journald-<name>.json`` (written atomically); a restart passes it as ``--after-cursor``, so after
a clean stop nothing is lost or repeated. Without a saved cursor ``start_at`` decides: ``"end"`` (default:
only entries written from now on; the newest entry's cursor is taken first with ``journalctl -n 1`` and
saved, so a restart before any new entry still continues from that point) or ``"beginning"`` (the whole
journal). We do not use
journalctl's ``--cursor-file``: journalctl writes it when *it* has printed an entry, which says nothing
about whether siem has stored it. The commit protocol is the file tailer's: with ``autocommit=True`` the
cursor is saved at most once a second while entries flow and at :meth:`JournaldFollower.stop`; with
``autocommit=False`` the owner calls ``p = positions()``, makes what the sink received durable, then
``commit(p)`` - at-least-once across crashes.

Failures (``siem_input_errors_total{reason}``), none of which ends :meth:`JournaldFollower.run`:
``spawn_failed`` (journalctl missing or not executable), ``subprocess_exit`` (journalctl ended; it is
restarted after a back-off of 0.5 s doubling to ``max_restart_delay``, reset once a run delivered entries or
lasted 10 s), ``bad_cursor`` (journalctl refused the saved cursor: it is dropped and ``start_at`` applies),
``corrupt_state``, ``state_write``. An entry longer than ``max_line_bytes`` is delivered cut at the limit
(``siem_input_dropped_total{reason="oversized"}``; the parser marks it as broken JSON); its cursor cannot be
read, so the saved cursor stays at the entry before it until a later entry moves it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from siem import metrics
from siem.collect import RawRecord, Sink, commit_positions
from siem.collect.files import LineSplitter, TableReader, state_file_name
from siem.errors import Issue, StateError
from siem.statefile import read_json, write_json_atomic
from siem.timeutil import Clock, monotonic_ms, wall_ms

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
COMMIT_EVERY_MS = 1000
BACKOFF_START_MS = 500
HEALTHY_RUN_MS = 10_000
STDERR_KEEP = 4096
_CURSOR_RE = re.compile(rb'"__CURSOR"\s*:\s*"([^"\\]*)"')


@dataclass(frozen=True, slots=True)
class JournaldConfig:
    """``[inputs.<name>]`` with ``type = "journald"``."""

    units: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()
    journalctl_path: str = "journalctl"
    command: tuple[str, ...] = ()
    start_at: Literal["beginning", "end"] = "end"
    max_line_bytes: int = 1024 * 1024
    max_restart_delay_ms: int = 30_000


_KEYS = ("units", "identifiers", "journalctl_path", "command", "start_at", "max_line_bytes", "max_restart_delay")


def config_from_toml(table: dict, where: str) -> tuple[JournaldConfig | None, list[Issue]]:
    """Validate one ``[inputs.<name>]`` table of type journald; every problem is returned, none raised."""
    r = TableReader(table, where, _KEYS)
    command = r.str_list("command", ())
    if "command" in r.table and not command:
        r.bad("command", "bad-value", "must not be empty (leave it out to run journalctl_path)")
    config = JournaldConfig(
        units=r.str_list("units", ()),
        identifiers=r.str_list("identifiers", ()),
        journalctl_path=r.string("journalctl_path", "journalctl") or "journalctl",
        command=command,
        start_at=r.choice("start_at", "end", ("beginning", "end")),  # type: ignore[arg-type]
        max_line_bytes=r.size("max_line_bytes", 1024 * 1024, 1024, 64 * 1024**2),
        max_restart_delay_ms=r.duration_ms("max_restart_delay", 30_000, 100, 3_600_000),
    )
    if r.issues:
        return None, r.issues
    return config, []


def base_argv(config: JournaldConfig) -> list[str]:
    return list(config.command) if config.command else [config.journalctl_path]


def build_argv(config: JournaldConfig, cursor: str | None, start_at: str | None = None) -> list[str]:
    """The journalctl command line for a start after ``cursor`` (None: by ``start_at``, default the config's)."""
    argv = base_argv(config) + ["-o", "json", "--follow"]
    if cursor:
        argv += ["--no-tail", f"--after-cursor={cursor}"]
    elif (start_at or config.start_at) == "end":
        argv.append("--lines=0")
    else:
        argv.append("--no-tail")
    argv += [f"--unit={u}" for u in config.units]
    argv += [f"--identifier={t}" for t in config.identifiers]
    return argv


def entry_cursor(line: bytes) -> str | None:
    """The ``__CURSOR`` field of one ``journalctl -o json`` line, without decoding the whole entry."""
    m = _CURSOR_RE.search(line)
    return m.group(1).decode("ascii", "replace") if m else None


class JournaldFollower:
    """Runs journalctl and follows it; see the module docstring for the guarantees."""

    def __init__(self, config: JournaldConfig, name: str, state_dir: str | Path, *, autocommit: bool = True,
                 clock: Clock = wall_ms) -> None:
        self.config = config
        self.name = name
        self.state_path = Path(state_dir) / state_file_name("journald", name)
        self.autocommit = autocommit
        self._clock = clock
        self._cursor: str | None = None
        self._saved: str | None = None
        self._loaded = False
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._running: asyncio.Future[None] | None = None
        self._last_commit_ms = 0
        self._state_problem: str | None = None
        self.restarts = 0
        self._received = metrics.EVENTS_RECEIVED.labels(input=name, format="journald")
        self._bytes = metrics.BYTES_RECEIVED.labels(input=name)
        self._last = metrics.INPUT_LAST_EVENT.labels(input=name)

    @property
    def pid(self) -> int | None:
        """The running journalctl's process id (None between runs)."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    # -- public -----------------------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Follow until :meth:`stop` or cancellation, restarting journalctl with back-off when it ends."""
        self._running = asyncio.get_running_loop().create_future()
        delay_ms = BACKOFF_START_MS
        try:
            self._load()
            while not self._stopping.is_set():
                started = monotonic_ms()
                try:
                    delivered, cursor_refused = await self._run_once(sink)
                except Exception:  # a bug must not end the input: say it loudly, count it, go on
                    log.exception("input %s: unexpected error while following journalctl", self.name)
                    self._error("internal")
                    delivered, cursor_refused = 0, False
                if self._stopping.is_set():
                    break
                if cursor_refused:
                    self._cursor = None
                    delay_ms = BACKOFF_START_MS
                elif delivered or monotonic_ms() - started >= HEALTHY_RUN_MS:
                    delay_ms = BACKOFF_START_MS
                else:
                    delay_ms = min(delay_ms * 2, self.config.max_restart_delay_ms)
                self.restarts += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay_ms / 1000)
        finally:
            await self._kill()
            if self.autocommit:
                self._autocommit()
            if not self._running.done():
                self._running.set_result(None)

    async def stop(self) -> None:
        """End journalctl, let :meth:`run` finish, persist the cursor when ``autocommit``."""
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if self._running is not None:
            await asyncio.shield(self._running)

    def positions(self) -> dict:
        """The cursor of the last entry handed to the sink."""
        return {"version": 1, "cursor": self._cursor}

    def commit(self, positions: dict) -> None:
        write_json_atomic(self.state_path, positions)
        self._saved = positions.get("cursor")

    # -- internals --------------------------------------------------------------------------------

    def _error(self, reason: str) -> None:
        metrics.INPUT_ERRORS.labels(input=self.name, reason=reason).inc()

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            data = read_json(self.state_path)
            if data is None:
                return
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            cursor = data["cursor"]
            if cursor is not None and not isinstance(cursor, str):
                raise TypeError("cursor is not a string")
            self._cursor = self._saved = cursor
        except (StateError, KeyError, TypeError) as exc:
            log.error("input %s: state file %s unusable (%s); starting by start_at", self.name, self.state_path,
                      exc)
            self._error("corrupt_state")

    def _autocommit(self) -> None:
        self._last_commit_ms = monotonic_ms()
        if self._cursor == self._saved:
            return
        self._state_problem = commit_positions(self.name, lambda: self.commit(self.positions()), self._state_problem)

    async def _last_cursor(self) -> str | None:
        """The cursor of the newest entry in the journal ("" when it is empty; None when that is unknown)."""
        argv = base_argv(self.config) + ["-o", "json", "--lines=1", "--no-pager"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        except (OSError, TimeoutError):
            return None
        if proc.returncode != 0:
            return None
        return entry_cursor(out) or ("" if not out.strip() else None)

    async def _run_once(self, sink: Sink) -> tuple[int, bool]:
        """One journalctl process from start to end: (entries delivered, whether it refused our cursor)."""
        start_at: str | None = None
        if self._cursor is None and self.config.start_at == "end":
            # "end" means from the entry that is newest now: anchor it as a cursor, so that a restart
            # before the first new entry still continues from here instead of from a later "now".
            last = await self._last_cursor()
            if last:
                self._cursor = last
            elif last == "":
                start_at = "beginning"  # an empty journal: everything in it is new
        cursor = self._cursor
        argv = build_argv(self.config, cursor, start_at)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            self._error("spawn_failed")
            log.error("input %s: cannot start %s: %s", self.name, argv[0], exc)
            return 0, False
        proc = self._proc
        if self._stopping.is_set():  # stop() came while we were starting it
            await self._kill()
            return 0, False
        if proc.stdout is None or proc.stderr is None:
            raise RuntimeError("subprocess pipes missing")  # cannot happen: PIPE was requested
        stderr_task = asyncio.create_task(_tail(proc.stderr, STDERR_KEEP))
        delivered = 0
        splitter = LineSplitter(self.config.max_line_bytes)
        try:
            while True:
                chunk = await proc.stdout.read(READ_CHUNK)
                if not chunk:
                    break
                for line, _end, truncated in splitter.feed(chunk, 0):
                    if truncated:
                        metrics.INPUT_DROPPED.labels(input=self.name, reason="oversized").inc()
                    if not line:
                        continue
                    await sink(RawRecord(input=self.name, format="journald", data=line, received_ms=self._clock(),
                                         origin="journald"))
                    delivered += 1
                    self._received.inc()
                    self._bytes.inc(len(line))
                    if not truncated:
                        self._cursor = entry_cursor(line) or self._cursor
                if delivered:
                    self._last.set(time.time())
                if self.autocommit and monotonic_ms() - self._last_commit_ms >= COMMIT_EVERY_MS:
                    self._autocommit()
        finally:
            code = await self._kill()
            stderr = await stderr_task
        if self._stopping.is_set():
            return delivered, False
        text = stderr.decode("utf-8", "replace").strip()
        if cursor and code != 0 and delivered == 0 and "cursor" in text.lower():
            self._error("bad_cursor")
            log.error("input %s: journalctl refused the saved cursor (%s); starting by start_at=%s", self.name,
                      text[-300:], self.config.start_at)
            return 0, True
        self._error("subprocess_exit")
        log.warning("input %s: journalctl exited with %s after %d entries%s; restarting", self.name, code,
                    delivered, f": {text[-300:]}" if text else "")
        return delivered, False

    async def _kill(self) -> int | None:
        """End the current journalctl (if any) and reap it; its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return proc.returncode


async def _tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    """Read a stream to its end, keeping only its last ``keep`` bytes."""
    buf = b""
    while chunk := await stream.read(READ_CHUNK):
        buf = (buf + chunk)[-keep:]
    return buf
