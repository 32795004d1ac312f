"""`siem run [--config FILE]`: the daemon in the foreground (systemd runs it like this)."""

from __future__ import annotations

import argparse
import sys

from siem.ctl import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--print-alerts", action="store_true",
                        help="also print each new alert on stdout (as `make run` does): one readable line on a "
                             "terminal, a JSON line when piped")
    parser.add_argument("--format", choices=("auto", "text", "json"), default="auto",
                        help="how --print-alerts prints: text lines, JSON lines, or auto (text on a terminal, "
                             "JSON otherwise; the default)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="say on stderr what the daemon is doing: its inputs, when it has caught up, alerts "
                             "so far (default: on when stderr is a terminal)")


def run(args: argparse.Namespace) -> int:
    from siem.alert.console import AlertPrinter
    from siem.daemon import run_daemon

    printer = AlertPrinter(args.format) if args.print_alerts else None
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    return run_daemon(args.config, print_alerts=printer, progress=progress)
