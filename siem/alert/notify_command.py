"""`siem notify test ROUTE`: send a test notification through every destination of one route, now.

Reads the route from the `[alerting]` table of the config file, resolves its URLs (inline, urls_env,
urls_file) and sends synchronously through apprise, bypassing the outbox, grouping and rate limit.
Prints one line per destination with apprise's privacy form of the URL (tokens masked). An alertmanager://
destination gets a test alert (alertname="siem_test_notification", severity="info") that resolves after 5
minutes; silence it in Alertmanager if its routing would page someone.
Exit status: 0 all delivered, 1 some failed, 2 configuration errors.
"""

from __future__ import annotations

import argparse
import socket
import sys

import orjson

from siem.alert import alertmanager
from siem.alert.commands import load_alerting
from siem.alert.config import resolve_route_urls
from siem.alert.notify import redact, send
from siem.alert.render import body_format, encode_body, neutralise
from siem.timeutil import iso_ms, wall_ms


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    test = sub.add_parser("test", help="send a test notification through a route")
    test.add_argument("route", help="route name from [[alerting.routes]]")
    test.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                      help="config file (default /etc/siem/siem.toml)")


def run(args: argparse.Namespace) -> int:
    args.config = getattr(args, "config", None) or "/etc/siem/siem.toml"
    cfg, errors = load_alerting(args.config)
    for e in errors:
        print(e, file=sys.stderr)
    if cfg is None:
        return 2
    route = cfg.route(args.route)
    if route is None:
        names = ", ".join(r.name for r in cfg.routes) or "none"
        print(f"{args.config}: no route named {neutralise(args.route, 80, True)!r} (routes: {names})",
              file=sys.stderr)
        return 2
    urls, issues = resolve_route_urls(route)
    for i in issues:
        print(f"{args.config}: {i.render()}", file=sys.stderr)
    if not urls:
        print(f"route {route.name!r} has no usable destination", file=sys.stderr)
        return 2
    now = wall_ms()
    title = f"[siem] test notification via route {route.name}"
    text = (f"This is a test notification from siem on {socket.gethostname()} at {iso_ms(now)}, sent with "
            f"`siem notify test {route.name}`. If you can read it, route {route.name!r} reaches you.")
    failed = 0
    for url in urls:
        if alertmanager.is_alertmanager(url):
            doc = {"labels": {"alertname": "siem_test_notification", "severity": "info", "siem": "siem",
                              "route": route.name},
                   "annotations": {"summary": title, "description": text},
                   "startsAt": iso_ms(now), "endsAt": iso_ms(now + 300_000)}
            res = alertmanager.post(url, orjson.dumps([doc]), cfg.alertmanager.timeout_ms)
            shown = alertmanager.redact(url)
        else:
            fmt = body_format(url)
            res = send(url, title, encode_body(text, fmt, title), fmt)
            shown = redact(url)
        if res.ok:
            print(f"OK      {shown}")
        else:
            failed += 1
            print(f"FAILED  {shown}: {res.error}")
    return 1 if failed else 0
