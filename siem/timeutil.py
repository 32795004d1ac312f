"""Time as integers with the unit in the name. The wall clock is injected so tests can freeze it."""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], int]  # returns wall-clock milliseconds since the epoch


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def iso_ms(ts_ms: int) -> str:
    """2024-01-02T03:04:05.678Z"""
    return f"{_iso_second(ts_ms // 1000)}{ts_ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(sec: int) -> str:
    """The second's part of iso_ms (cached: alerts of one burst share their seconds; strftime was a fifth
    of the cost of making an alert)."""
    return datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """'30s' -> 30000; accepts ms, s, m, h, d, w; raises ValueError otherwise."""
    text = text.strip()
    for unit in ("ms", "s", "m", "h", "d", "w"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * _UNITS_MS[unit]
    raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 1d)")
