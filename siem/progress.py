"""What a foreground daemon (``siem run --progress``, as ``make run`` runs it) tells the person watching.

Three kinds of line, on stderr, each starting with ``siem:``::

    siem: watching 5 inputs: syslog_tcp (syslog tcp 127.0.0.1:5514), sample_nginx (files, 1 path), ...
    siem: 42 rules; metrics on http://127.0.0.1:9108/metrics; alerts also in state/alerts/
    siem: caught up: 9,222 events, 43 alerts so far (1 critical, 13 high, 21 medium, 8 low)
    siem: 9,301 events (+79), 44 alerts so far (1 critical, 14 high, 21 medium, 8 low)

"Caught up" means the inputs had the time they may take to deliver their start-up backlog (a CloudTrail
file is read once it has settled), everything they delivered has been appended to the log and evaluated,
and nothing new arrived for ``settle_ms``: the backlog (sample files, a CloudTrail directory) is done and
the daemon now follows live input. It is said once per run; afterwards a line is printed every ``every_ms``
while the counts change (never when nothing happens, so an idle demo stays quiet).

The reporter only reads a :class:`ProgressSource` (the daemon) on a timer; it never touches the pipeline.
Alert counts by severity come from ``siem_alerts_fired_total``, which the engine keeps.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Protocol

from siem import metrics
from siem.alert.record import SEVERITIES
from siem.timeutil import monotonic_ms


@dataclass(frozen=True, slots=True)
class ProgressCounts:
    """The daemon's counters at one instant."""

    events: int  # records taken in and appended to the log
    evaluated_offset: int  # log offset the engine has evaluated up to
    log_end_offset: int  # log offset the next append gets
    intake_idle: bool  # nothing queued between the collectors and the log writer
    starting: bool = False  # the inputs are still within the time they may take to deliver their backlog


class ProgressSource(Protocol):
    def progress_counts(self) -> ProgressCounts: ...


def describe_input(name: str, kind: str, config: object, port: int | None = None) -> str:
    """``syslog_tcp (syslog tcp 127.0.0.1:5514)``, ``sample_nginx (files, 2 paths)`` - what a reader needs
    to recognise an input; built from the collector's config object."""
    if kind == "syslog":
        addr = ",".join(getattr(config, "address", ()) or ("?",))
        shown = port if port is not None else getattr(config, "port", "?")
        return f"{name} (syslog {getattr(config, 'protocol', '?')} {addr}:{shown})"
    if kind == "files":
        paths = tuple(getattr(config, "paths", ()))
        return f"{name} ({getattr(config, 'format', 'files')} files, {len(paths)} path{'s' * (len(paths) != 1)})"
    if kind == "cloudtrail":
        return f"{name} (cloudtrail {getattr(config, 'directory', '')})"
    return f"{name} ({kind})"


def alerts_by_severity() -> dict[str, int]:
    """Alerts fired so far by severity, from siem_alerts_fired_total."""
    totals = metrics.sum_by("siem_alerts_fired_total", "severity")
    return {s: int(totals.get(s, 0)) for s in reversed(SEVERITIES) if totals.get(s)}


def alerts_phrase() -> str:
    by_sev = alerts_by_severity()
    total = sum(by_sev.values())
    detail = ", ".join(f"{n} {s}" for s, n in by_sev.items())
    return f"{total:,} alert{'s' * (total != 1)} so far" + (f" ({detail})" if detail else "")


class ProgressReporter:
    """Prints the lines above: ``intro`` once the inputs run, then ``run`` as a task until cancelled."""

    def __init__(self, source: ProgressSource, stream: IO[str] | None = None, *, every_ms: int = 10_000,
                 settle_ms: int = 1_000, tick_ms: int = 250) -> None:
        self.source = source
        self.stream = stream if stream is not None else sys.stderr
        self.every_ms = every_ms
        self.settle_ms = settle_ms
        self.tick_ms = tick_ms
        self.caught_up = False

    def say(self, text: str) -> None:
        try:
            self.stream.write(f"siem: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed (a pipe whose reader went away): stay silent
            pass

    def intro(self, inputs: Iterable[str], rules: int, metrics_url: str | None, alert_log: str) -> None:
        names = list(inputs)
        self.say(f"watching {len(names)} input{'s' * (len(names) != 1)}: {', '.join(names) or 'none'}")
        where = f"metrics on {metrics_url}" if metrics_url else "metrics off"
        self.say(f"{rules} rules; {where}; alerts also in {alert_log}")

    def stopped(self) -> None:
        c = self.source.progress_counts()
        self.say(f"stopped: {c.events:,} events, {alerts_phrase()}")

    async def run(self) -> None:
        """Report until cancelled; the cancellation (the daemon stopping) prints the final counts."""
        try:
            await self._loop()
        except asyncio.CancelledError:
            self.stopped()
            raise

    async def _loop(self) -> None:
        quiet_since: int | None = None
        last = self.source.progress_counts()
        last_said = (last.events, -1)
        last_said_ms = monotonic_ms()
        while True:
            await asyncio.sleep(self.tick_ms / 1000)
            now = monotonic_ms()
            c = self.source.progress_counts()
            if not self.caught_up:
                idle = (c.intake_idle and not c.starting and c.evaluated_offset >= c.log_end_offset
                        and c.events == last.events)
                quiet_since = (quiet_since or now) if idle else None
                if quiet_since is not None and now - quiet_since >= self.settle_ms:
                    self.caught_up = True
                    self.say(f"caught up: {c.events:,} events, {alerts_phrase()}")
                    last_said, last_said_ms = (c.events, _alert_total()), now
            elif now - last_said_ms >= self.every_ms:
                state = (c.events, _alert_total())
                if state != last_said:
                    self.say(f"{c.events:,} events (+{c.events - last_said[0]:,}), {alerts_phrase()}")
                    last_said = state
                last_said_ms = now
            last = c


def _alert_total() -> int:
    return sum(alerts_by_severity().values())


def daemon_intro(reporter: ProgressReporter, config: object, ports: dict[str, int | None], metrics_port: int | None,
                 rules: int) -> None:
    """The two opening lines for a daemon with ``config`` (siem.config.Config) whose inputs bound ``ports``."""
    inputs = [describe_input(s.name, s.type, s.config, ports.get(s.name)) for s in getattr(config, "inputs", ())]
    daemon, alerting = getattr(config, "daemon"), getattr(config, "alerting")
    hp = daemon.metrics_host_port
    url = None
    if hp is not None and metrics_port is not None:
        host = f"[{hp[0]}]" if ":" in hp[0] else hp[0]
        url = f"http://{host}:{metrics_port}/metrics"
    from pathlib import Path  # noqa: PLC0415

    log_path = Path(alerting.log_path)
    if not log_path.is_absolute():
        log_path = Path(daemon.state_dir) / log_path
    reporter.intro(inputs, rules, url, str(log_path))
