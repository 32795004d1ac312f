"""`siem run [--config FILE]`: the daemon in the foreground (systemd runs it like this)."""

from __future__ import annotations

import argparse

from siem.ctl import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--print-alerts", action="store_true",
                        help="also print each new alert as a JSON line on stdout (as `make run` does)")


def run(args: argparse.Namespace) -> int:
    from siem.daemon import run_daemon

    return run_daemon(args.config, print_alerts=args.print_alerts)
