"""Timestamps of every format to int ms UTC, without a datetime object per line.

Each function returns the epoch in ms (int) or, when the text is not a valid time, a short
description of what is wrong (str); callers test ``type(x) is int``. Minutes are cached: the epoch
of "the minute" is computed once (integer calendar arithmetic, or zoneinfo for zone-less local
times) and the seconds are added per line.

Rules (documented in README):
* RFC 3339 / ISO 8601: any number of fractional digits (truncated to ms), ``Z``/``z``/offset
  ``+hh:mm``/``+hhmm``/``+hh``; offsets beyond 23:59 are invalid; no zone means ``ctx.tz``.
  A leap second ``:60`` is the first second of the next minute.
* RFC 3164 (``Mmm dd hh:mm:ss``, optional year): local time in ``ctx.tz``; without a year the year
  is the one that puts the date at most 31 days after the reference time (so a ``Dec 31`` line read
  on Jan 1 is last year's, a ``Jan 1`` line read on Dec 31 is next year's). Feb 29 of a year that is
  not a leap year is an error. Ambiguous local times (DST fall-back) take the first occurrence;
  non-existent ones (spring-forward gap) use the offset before the transition.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import Final

MONTHS: Final[dict[str, int]] = {
    m: i + 1
    for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))
}
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
MAX_ABS_MS: Final = 253_402_300_800_000  # 10000-01-01T00:00:00Z; beyond this an epoch number is absurd
CACHE_MAX: Final = 50_000


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def date_error(y: int, m: int, d: int) -> str | None:
    """Why (y, m, d) is not a date, or None."""
    if not 1 <= m <= 12:
        return f"month {m} out of range"
    last = 29 if m == 2 and is_leap(y) else _DAYS_IN_MONTH[m - 1]
    if not 1 <= d <= last:
        return f"day {d} out of range for {y:04d}-{m:02d}"
    return None


def _local_minute_ms(y: int, m: int, d: int, hh: int, mi: int, tz: tzinfo) -> int | str:
    err = date_error(y, m, d)
    if err is not None:
        return err
    if hh > 23 or mi > 59:
        return f"time {hh:02d}:{mi:02d} out of range"
    if not 1 <= y <= 9999:
        return f"year {y} out of range"
    try:
        return int(datetime(y, m, d, hh, mi, tzinfo=tz).timestamp()) * 1000
    except (OverflowError, ValueError, OSError) as e:  # extreme years near the datetime limits
        return f"time not representable: {e}"


# --- RFC 3339 / ISO 8601 ---------------------------------------------------------------------------

_ISO: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)? ?([Zz]|[+-]\d\d(?::?\d\d)?)?"
)
_ISO_MATCH = _ISO.fullmatch
_utc_minutes: dict[str, int | str] = {}
_local_minutes: dict[tuple[tzinfo, str], int | str] = {}
_offsets: dict[str, int | str] = {"Z": 0, "z": 0, "+00:00": 0, "-00:00": 0}


def _offset_ms(zone: str) -> int | str:
    got = _offsets.get(zone)
    if got is not None:
        return got
    digits = zone[1:].replace(":", "")
    hh = int(digits[:2])
    mm = int(digits[2:4]) if len(digits) >= 4 else 0
    if hh > 23 or mm > 59:
        out: int | str = f"UTC offset {zone} out of range"
    else:
        out = (hh * 3600 + mm * 60) * 1000 * (-1 if zone[0] == "-" else 1)
    if len(_offsets) < 1000:
        _offsets[zone] = out
    return out


def iso_ms(text: str, tz: tzinfo) -> int | str:
    """RFC 3339 / ISO 8601 date-time (``2024-01-02T03:04:05.678+01:00``) to epoch ms."""
    m = _ISO_MATCH(text)
    if m is None:
        return f"not an ISO 8601 time: {text[:40]!r}"
    y, mo, d, hh, mi, ss, frac, zone = m.groups()
    key = text[:16]
    if zone is None:
        lkey = (tz, key)
        base = _local_minutes.get(lkey)
        if base is None:
            base = _local_minute_ms(int(y), int(mo), int(d), int(hh), int(mi), tz)
            if len(_local_minutes) > CACHE_MAX:
                _local_minutes.clear()
            _local_minutes[lkey] = base
        off = 0
    else:
        base = _utc_minutes.get(key)
        if base is None:
            yi, moi, di, hhi, mii = int(y), int(mo), int(d), int(hh), int(mi)
            err = date_error(yi, moi, di)
            if err is None and (hhi > 23 or mii > 59):
                err = f"time {hh}:{mi} out of range"
            base = err if err is not None else (days_from_civil(yi, moi, di) * 1440 + hhi * 60 + mii) * 60_000
            if len(_utc_minutes) > CACHE_MAX:
                _utc_minutes.clear()
            _utc_minutes[key] = base
        got_off = _offset_ms(zone)
        if isinstance(got_off, str):
            return got_off
        off = got_off
    if isinstance(base, str):
        return base
    ms = base
    if ss is not None:
        s = int(ss)
        if s > 60:
            return f"second {s} out of range"
        ms += s * 1000
        if frac is not None:
            ms += int((frac + "00")[:3])
    return ms - off


# --- RFC 3164 -----------------------------------------------------------------------------------------

_rfc3164_caches: dict[tuple[tzinfo, int], dict[str, int | str]] = {}


# The cache used last, as one immutable tuple (tz, day start ms, day end ms, cache) so that a reader in
# another thread never sees half of an update.
last_cache: tuple[tzinfo | None, int, int, dict[str, int | str]] = (None, -1, -1, {})


def rfc3164_cache(tz: tzinfo, ref_ms: int) -> dict[str, int | str]:
    """The minute cache for one zone and one reference day (year inference depends on both)."""
    global last_cache
    ltz, start, end, c = last_cache
    if ltz is tz and start <= ref_ms < end:
        return c
    day = ref_ms // 86_400_000
    key = (tz, day)
    got = _rfc3164_caches.get(key)
    if got is None:
        if len(_rfc3164_caches) > 16:
            _rfc3164_caches.clear()
        got = _rfc3164_caches[key] = {}
    last_cache = (tz, day * 86_400_000, (day + 1) * 86_400_000, got)
    return got


def infer_year(month: int, day: int, ref_ms: int) -> int:
    """The year that puts month/day at most 31 days after the reference day (UTC date of ref_ms)."""
    ref_days = ref_ms // 86_400_000
    # civil year of ref_days
    y = 1970 + ref_days // 366
    while days_from_civil(y + 1, 1, 1) <= ref_days:
        y += 1
    while days_from_civil(y, 1, 1) > ref_days:
        y -= 1
    limit = ref_days + 31
    for cand in (y + 1, y, y - 1):
        if days_from_civil(cand, month, day) <= limit:
            return cand
    return y - 1


def rfc3164_minute_ms(mon: str, day: str, year: str | None, hh: str, mi: str, tz: tzinfo, ref_ms: int) -> int | str:
    """Epoch ms of the minute of an RFC 3164 timestamp (uncached; callers cache by the text)."""
    month = MONTHS.get(mon) or MONTHS.get(mon.capitalize())
    if month is None:
        return f"unknown month name {mon!r}"
    d = int(day)
    y = int(year) if year is not None else infer_year(month, d, ref_ms)
    return _local_minute_ms(y, month, d, int(hh), int(mi), tz)


# --- Common Log Format: 10/Oct/2000:13:55:36 -0700 ----------------------------------------------------

_CLF: Final = re.compile(r"(\d\d?)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d)(?:\.(\d+))? ([+-]\d\d:?\d\d)")
_CLF_MATCH = _CLF.fullmatch
_clf_minutes: dict[str, int | str] = {}


def clf_ms(text: str) -> int | str:
    """Apache/nginx ``$time_local`` to epoch ms."""
    if len(text) == 26 and text[20] == " ":  # dd/Mon/yyyy:hh:mm:ss +zzzz, minute already seen
        base = _clf_minutes.get(text[:17] + text[20:])
        if type(base) is int:
            ss = text[18:20]
            if ss.isascii() and ss.isdigit() and ss <= "60":
                return base + int(ss) * 1000
    m = _CLF_MATCH(text)
    if m is None:
        return f"not a log time: {text[:40]!r}"
    d, mon, y, hh, mi, ss, frac, zone = m.groups()
    key = f"{d}/{mon}/{y}:{hh}:{mi} {zone}"  # == text[:17] + text[20:] for the common 26-character form
    base = _clf_minutes.get(key)
    if base is None:
        month = MONTHS.get(mon)
        off = _offset_ms(zone if ":" in zone else f"{zone[:3]}:{zone[3:]}")
        if month is None:
            base = f"unknown month name {mon!r}"
        elif type(off) is str:
            base = off
        else:
            yi, di, hhi, mii = int(y), int(d), int(hh), int(mi)
            err = date_error(yi, month, di)
            if err is None and (hhi > 23 or mii > 59):
                err = f"time {hh}:{mi} out of range"
            base = err if err is not None else (
                (days_from_civil(yi, month, di) * 1440 + hhi * 60 + mii) * 60_000 - off  # type: ignore[operator]
            )
        if len(_clf_minutes) > CACHE_MAX:
            _clf_minutes.clear()
        _clf_minutes[key] = base
    if type(base) is str:
        return base
    s = int(ss)
    if s > 60:
        return f"second {s} out of range"
    ms = base + s * 1000  # type: ignore[operator]
    if frac is not None:
        ms += int((frac + "00")[:3])
    return ms


def epoch_number_ms(value: int | float) -> int | str:
    """An epoch in ms given as a JSON number, bounded to years 0..9999."""
    try:
        ms = int(value)
    except (OverflowError, ValueError):
        return f"epoch {value!r} is not finite"
    if abs(ms) >= MAX_ABS_MS:
        return f"epoch {value!r} out of range (expected ms)"
    return ms
