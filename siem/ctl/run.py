"""`siem run [--config FILE] [--print-alerts] [--start-fresh]`: the daemon in the foreground (systemd runs it
like this)."""

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
    parser.add_argument("--start-fresh", action="store_true",
                        help="if the engine checkpoint cannot be used (corrupt, another version, a pickle of an "
                             "earlier release), keep it as checkpoint.bad-<ms> and start with empty windows, "
                             "re-reading the log from its oldest record, instead of refusing to start")


def run(args: argparse.Namespace) -> int:
    """Load config and rules, then run the embedded daemon or the configured Kafka role. Exit codes: 0
    clean, 2 bad config or rules, 1 state or runtime failure."""
    import logging  # noqa: PLC0415

    from siem.alert.console import AlertPrinter  # noqa: PLC0415
    from siem.config import load_config  # noqa: PLC0415
    from siem.dsl.loader import load_rules  # noqa: PLC0415
    from siem.errors import ConfigError, RuleError  # noqa: PLC0415
    from siem.logsetup import setup_logging  # noqa: PLC0415

    log = logging.getLogger("siem.run")
    path = getattr(args, "config", None)  # -c is SUPPRESSed when not given (siem.cli)
    try:
        config = load_config(path)
        ruleset = load_rules(config.daemon.rules)
    except (ConfigError, RuleError) as exc:
        setup_logging()
        log.error("cannot start: invalid %s", "rules" if isinstance(exc, RuleError) else "configuration",
                  extra={"issues": [i.render() for i in exc.issues if i.severity == "error"]})
        print(str(exc), file=sys.stderr)
        return 2
    setup_logging(config.daemon.log_level, config.daemon.log_format)
    for w in config.warnings:
        log.warning("config: %s", w.render())
    if config.daemon.role != "all":
        from siem.roles import run_role  # noqa: PLC0415

        return run_role(config, ruleset, path)
    from siem.daemon import run_daemon  # noqa: PLC0415

    printer = AlertPrinter(args.format) if args.print_alerts else None
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    return run_daemon(config, ruleset, path, print_alerts=printer, progress=progress, start_fresh=args.start_fresh)
