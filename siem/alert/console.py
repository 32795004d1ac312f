"""Alerts printed for a person at a terminal, or as JSON lines for a program.

One line per alert, in the order a reader scans them::

    2026-03-04 14:12:49Z  HIGH      ssh_bruteforce  source.ip=203.0.113.7  12 failed SSH logins from ...
    ^ event time (UTC)    ^ severity ^ rule         ^ group key            ^ rendered message

The event time is that of the alert's last contributing event (when, in the log's own time, the rule
fired), never the wall clock. Every field but the severity carries attacker text (user names, URLs,
messages), so each is passed through :func:`siem.logsetup.escape_control`: control characters, ANSI
escapes, line separators and BiDi overrides become visible ``\\x1b``/``\\n``/``\\u202e`` text, and one
alert is always exactly one line that cannot repaint the terminal. Colour (the severity only) is used when
the stream is a terminal and ``NO_COLOR`` is not set.

Formats (``--format`` of ``siem run --print-alerts`` and ``siem replay``)::

    auto   text when the stream is a terminal, JSON lines otherwise (the default: a pipe gets JSON)
    text   the line above
    json   Alert.dumps(): one JSON object per line, the alert log's schema
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO

from siem.alert.record import Alert
from siem.logsetup import escape_control
from siem.timeutil import iso_ms

FORMATS = ("auto", "text", "json")
MESSAGE_MAX_CHARS = 400  # a longer message is cut on the console (the alert log keeps all of it)

_COLOURS = {"critical": "\x1b[1;31m", "high": "\x1b[31m", "medium": "\x1b[33m", "low": "\x1b[36m",
            "info": "\x1b[2m"}
_RESET = "\x1b[0m"


def resolve_format(fmt: str, stream: IO[bytes] | IO[str]) -> str:
    """``text`` or ``json`` for ``fmt`` written to ``stream`` (``auto`` asks whether it is a terminal)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown alert format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or odd stream
        return "json"


def _safe(text: object) -> str:
    return escape_control(str(text))


def alert_line(alert: Alert, *, colour: bool = False) -> str:
    """The one-line text form of an alert (no line end); every attacker-influenced part escaped."""
    when = iso_ms(alert.last_ms)
    when = f"{when[:10]} {when[11:19]}Z"
    sev = alert.severity.upper()
    sev_txt = f"{sev:<8}"
    if colour:
        sev_txt = f"{_COLOURS.get(alert.severity, '')}{sev:<8}{_RESET}"
    key = " ".join(f"{_safe(k)}={_safe(v)}" for k, v in alert.group) or "-"
    message = alert.message or alert.title
    if len(message) > MESSAGE_MAX_CHARS:
        message = message[:MESSAGE_MAX_CHARS] + f"... [{len(message) - MESSAGE_MAX_CHARS} more chars]"
    return f"{when}  {sev_txt}  {_safe(alert.rule_id)}  {key}  {_safe(message)}"


def render_alerts(alerts: Iterable[Alert], fmt: str, *, colour: bool = False) -> bytes:
    """The bytes to write for ``alerts`` in a resolved format (``text`` or ``json``)."""
    if fmt == "json":
        return b"".join(a.dumps() + b"\n" for a in alerts)
    return "".join(alert_line(a, colour=colour) + "\n" for a in alerts).encode("utf-8", "backslashreplace")


class AlertPrinter:
    """Prints batches of alerts to one binary stream in the format chosen once at construction."""

    def __init__(self, fmt: str = "auto", stream: IO[bytes] | None = None) -> None:
        import sys  # noqa: PLC0415

        self.stream: IO[bytes] = stream if stream is not None else sys.stdout.buffer
        self.format = resolve_format(fmt, self.stream)
        self.colour = self.format == "text" and _is_tty(self.stream) and not os.environ.get("NO_COLOR")
        self.closed = False  # set when the stream stopped taking output; printing is a convenience, never fatal

    def __call__(self, alerts: Iterable[Alert]) -> None:
        if self.closed:
            return
        data = render_alerts(alerts, self.format, colour=self.colour)
        if not data:
            return
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal hung up or the pipe's reader left: the alert log has them
            self.closed = True


def _is_tty(stream: IO[bytes]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
