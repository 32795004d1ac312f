"""Routing: which routes a notification goes to. Pure: (config, what it is about, now) -> routes.

Routes are tried in order. A route matches when every condition it states holds: severity (a minimum or
a list), tags (any alert tag matches any glob), rules (the rule id matches any glob) and schedule (local
day of week and time of day in the route's time zone, or outside them with ``outside = true``). The first
matching route wins unless it says ``continue = true``; then later routes are tried as well. No match:
the default route, if any.

A time range whose end is not after its start (``22:00-06:00``) runs over midnight: it matches from the
start to midnight on a listed day and from midnight to the end on the day after a listed day.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from functools import lru_cache
from zoneinfo import ZoneInfo

from siem.alert.config import AlertingConfig, RouteConfig, ScheduleConfig


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def in_schedule(schedule: ScheduleConfig, now_ms: int) -> bool:
    """Whether now is inside the schedule (before applying `outside`)."""
    local = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).astimezone(_zone(schedule.timezone))
    day = local.weekday()
    minute = local.hour * 60 + local.minute
    for start, end in schedule.hours:
        if start < end:
            if day in schedule.days and start <= minute < end:
                return True
        else:  # over midnight
            if day in schedule.days and minute >= start:
                return True
            if (day - 1) % 7 in schedule.days and minute < end:
                return True
    return False


def route_matches(route: RouteConfig, rule_id: str, severity: str, tags: Iterable[str], now_ms: int) -> bool:
    if route.severity is not None and severity not in route.severity:
        return False
    if route.rules and not any(fnmatchcase(rule_id, g) for g in route.rules):
        return False
    if route.tags:
        tag_list = list(tags)
        if not any(fnmatchcase(t, g) for t in tag_list for g in route.tags):
            return False
    if route.schedule is not None and in_schedule(route.schedule, now_ms) == route.schedule.outside:
        return False
    return True


def select_routes(config: AlertingConfig, rule_id: str, severity: str, tags: Iterable[str],
                  now_ms: int) -> list[RouteConfig]:
    """The routes a notification about (rule_id, severity, tags) goes to at now_ms, in config order."""
    tag_list = tuple(tags)
    out: list[RouteConfig] = []
    for r in config.routes:
        if route_matches(r, rule_id, severity, tag_list, now_ms):
            out.append(r)
            if not r.cont:
                break
    if not out and config.default_route:
        d = config.route(config.default_route)
        if d is not None:
            out.append(d)
    return out
