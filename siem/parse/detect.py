"""Which parser a log file needs, from its first lines (replay, logtest and the embedded sample inputs)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO


def detect_format(path: Path, head: list[bytes]) -> str:
    """The parser for a file, from its first non-empty lines."""
    for line in head:
        s = line.strip()
        if not s:
            continue
        if (s.startswith(b"type=") or s.startswith(b"node=")) and b" msg=audit(" in s[:120]:
            return "auditd"
        if s.startswith(b"{"):
            if b'"Records"' in s[:200] or b'"eventSource"' in s or b'"eventName"' in s:
                return "cloudtrail"
            if b'"__REALTIME_TIMESTAMP"' in s:
                return "journald"
            return "json"
        if s.startswith(b"<") or s[:3].isalpha() and s[3:4] == b" ":
            return "syslog"
        if b'" ' in s and b"[" in s and (b"HTTP/" in s or b'"-"' in s):
            return "apache" if "apache" in path.name.lower() or "access_log" in path.name else "nginx"
        if s[:4].isdigit() and s[4:5] == b"-":
            return "syslog"
    return "syslog"


def open_log(path: Path) -> IO[bytes]:
    """A log file for reading bytes, gunzipped when its name ends in .gz."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")
