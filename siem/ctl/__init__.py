"""Command-line entries for the daemon: `siem run`, `siem config check`, `siem reload`, `siem status`."""

from __future__ import annotations

import argparse


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                        help="the TOML config (default: embedded defaults for a checkout: ./state, ./rules, "
                             "./sample_logs, syslog on 127.0.0.1:5514)")
