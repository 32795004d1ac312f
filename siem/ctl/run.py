"""`siem run [--config FILE]`: the daemon in the foreground (systemd runs it like this)."""

from __future__ import annotations

import argparse

from siem.ctl import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    from siem.daemon import run_daemon

    return run_daemon(args.config)
