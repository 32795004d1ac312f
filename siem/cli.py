"""The `siem` command line. Each subcommand lives in the module that owns its subject; this file only
lists them (an explicit registry, no import-time magic) and dispatches."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

# (subcommand, module, help). The module provides `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: list[tuple[str, str, str]] = [
    ("replay", "siem.replay", "run rules over log files and print alerts as JSON lines"),
    ("rules", "siem.dsl.commands", "check or test rule files"),
    ("sigma", "siem.sigma.commands", "convert Sigma rules into rule files (siem sigma import), measure coverage"),
    ("alerts", "siem.alert.commands", "list logged alerts or show one with its notifications"),
    ("notify", "siem.alert.notify_command", "send a test notification through an alerting route"),
    ("run", "siem.ctl.run", "run the daemon in the foreground"),
    ("config", "siem.ctl.config", "validate a config file (siem config check)"),
    ("reload", "siem.ctl.reload", "reload rules and config of the running daemon (SIGHUP)"),
    ("status", "siem.ctl.status", "summary of the running daemon from its metrics"),
    ("log", "siem.log.commands", "verify or dump the durable log, show the engine checkpoint (read-only)"),
    ("state", "siem.ctl.state", "check the engine checkpoint, or convert one an earlier release pickled"),
]


# Window state keeps millions of long-lived objects, and CPython's default first-generation threshold (700
# allocations) re-scans them far too often: with these thresholds the engine ran 30-40% faster on the
# sshd benchmark (bench/stages.py), with no visible change in peak memory.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """All subcommands are listed; only the chosen one's module is imported (fast start, and one
    subcommand's import problem cannot break the others)."""
    parser = argparse.ArgumentParser(prog="siem", description="Log-correlation daemon with a compiled rule DSL.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen).parse_args(argv)
    tune_gc()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
