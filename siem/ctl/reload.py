"""`siem reload [--config FILE]`: ask the running daemon to reload rules and config (SIGHUP to its pid)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from siem.ctl import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--pid", type=int, help="the daemon's pid (default: read from <state_dir>/siem.pid)")


def daemon_pid(state_dir: str) -> int:
    """The pid in <state_dir>/siem.pid; OSError/ValueError saying what is wrong."""
    path = Path(state_dir) / "siem.pid"
    text = path.read_text().strip()
    if not text.isdigit():
        raise ValueError(f"{path} does not hold a pid")
    return int(text)


def run(args: argparse.Namespace) -> int:
    from siem.config import load_config
    from siem.errors import ConfigError

    pid = args.pid
    if pid is None:
        try:
            config = load_config(getattr(args, "config", None))
            pid = daemon_pid(config.daemon.state_dir)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        except (OSError, ValueError) as exc:
            print(f"siem reload: is the daemon running? {exc}", file=sys.stderr)
            return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"siem reload: no process {pid} (stale pid file?)", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"siem reload: not allowed to signal pid {pid} (run as the daemon's user)", file=sys.stderr)
        return 1
    print(f"sent SIGHUP to siem (pid {pid}); the result is in its log and in siem_reloads_total")
    return 0
