"""`siem run [--config FILE] [--print-alerts] [--start-fresh]`: the daemon in the foreground (systemd runs it like this)."""

from __future__ import annotations

import argparse

from siem.ctl import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--print-alerts", action="store_true",
                        help="also print each new alert as a JSON line on stdout (as `make run` does)")
    parser.add_argument("--start-fresh", action="store_true",
                        help="if the engine checkpoint cannot be used (corrupt, another version, a pickle of an "
                             "earlier release), keep it as checkpoint.bad-<ms> and start with empty windows, "
                             "re-reading the log from its oldest record, instead of refusing to start")


def run(args: argparse.Namespace) -> int:
    from siem.daemon import run_daemon

    return run_daemon(args.config, print_alerts=args.print_alerts, start_fresh=args.start_fresh)
