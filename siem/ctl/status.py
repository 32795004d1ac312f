"""`siem status [--config FILE]`: a one-screen summary read from the running daemon's metrics endpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from siem.ctl import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--url", help="the metrics endpoint (default: from the config's daemon.metrics_address)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between the two scrapes used for rates; 0 shows totals only (default 2)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text (one screen, the default) or json (one object, for scripts)")


def metrics_url(args: argparse.Namespace) -> str:
    """The endpoint: --url, else the config's address (the bound port from run.json when it says 0)."""
    if args.url:
        return str(args.url)
    from siem.config import load_config
    from siem.statefile import read_json

    config = load_config(getattr(args, "config", None))
    hp = config.daemon.metrics_host_port
    if hp is None:
        raise ValueError("metrics are turned off in the config (daemon.metrics_address = \"\")")
    host, port = hp
    if port == 0:
        run_info = read_json(Path(config.daemon.state_dir) / "run.json", {})
        port = int(run_info.get("metrics_port") or 0) if isinstance(run_info, dict) else 0
        if not port:
            raise ValueError(f"the daemon's metrics port is not known ({config.daemon.state_dir}/run.json)")
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/metrics"


def run(args: argparse.Namespace) -> int:
    from siem import status
    from siem.errors import ConfigError, StateError

    try:
        url = metrics_url(args)
    except (ConfigError, StateError, ValueError) as exc:
        print(f"siem status: {exc}", file=sys.stderr)
        return 1
    return status.run(argparse.Namespace(url=url, interval=args.interval, format=args.format))
