"""The `siem` command line. Each subcommand lives in the module that owns its subject; this file only
lists them (an explicit registry, no import-time magic) and dispatches.

Conventions every subcommand follows (tested in tests/test_cli.py):

* ``siem --version`` prints the version;
* ``-c/--config FILE`` is accepted by every subcommand and sub-action, before or after the action
  (``siem -c f rules check``, ``siem rules check -c f``); a command that needs something the config
  says (rule directories, the state directory, the metrics address) takes it from there, and without
  ``-c`` from the embedded defaults of a checkout (``siem config check`` describes them);
* machine-readable output is ``--format json`` (``status``, ``rules check``, ``config check``,
  ``logtest``; ``replay`` and ``run --print-alerts`` print alert JSON lines when piped);
* ``siem completion bash|zsh|tcsh`` prints a completion script generated from this parser.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from siem import __version__

# (subcommand, module, help). The module provides `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: list[tuple[str, str, str]] = [
    ("replay", "siem.replay", "run rules over log files (or stdin) and print the alerts"),
    ("logtest", "siem.logtest", "show how log lines parse, which rules they match and the windows they fill"),
    ("rules", "siem.ctl.rules", "check or test rule files"),
    ("sigma", "siem.sigma.commands", "convert Sigma rules into rule files (siem sigma import), measure coverage"),
    ("alerts", "siem.alert.commands", "list logged alerts or show one with its notifications"),
    ("notify", "siem.alert.notify_command", "send a test notification through an alerting route"),
    ("run", "siem.ctl.run", "run the daemon in the foreground"),
    ("config", "siem.ctl.config", "validate a config file (siem config check)"),
    ("reload", "siem.ctl.reload", "reload rules and config of the running daemon (SIGHUP)"),
    ("status", "siem.ctl.status", "summary of the running daemon from its metrics"),
    ("log", "siem.log.commands", "verify or dump the durable log, show the engine checkpoint (read-only)"),
    ("state", "siem.ctl.state", "check the engine checkpoint, or convert one an earlier release pickled"),
    ("completion", "siem.cli", "print a shell completion script (bash, zsh or tcsh)"),
]
CONFIG_HELP = "the TOML config (default: the embedded defaults of a checkout: ./state, ./rules, ./sample_logs)"

# Window state keeps millions of long-lived objects, and CPython's default first-generation threshold (700
# allocations) re-scans them far too often: with these thresholds the engine ran 30-40% faster on the
# sshd benchmark (bench/stages.py), with no visible change in peak memory.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def build_parser(chosen: str | None = None, *, everything: bool = False) -> argparse.ArgumentParser:
    """All subcommands are listed; only the chosen one's module is imported (fast start, and one
    subcommand's import problem cannot break the others), or every module with ``everything`` (completion)."""
    parser = argparse.ArgumentParser(prog="siem", description="Log-correlation daemon with a compiled rule DSL.")
    parser.add_argument("--version", action="version", version=f"siem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen or everything:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    add_config_everywhere(parser)
    parser.set_defaults(config=None)  # the one default: sub-parsers' SUPPRESS never overwrites a given -c
    return parser


def add_config_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-c/--config`` on this parser and every sub-parser below it that lacks one. The default is
    SUPPRESS at every level, so a value given before an action is not reset by the action's parser."""
    if "--config" not in parser._option_string_actions:  # noqa: SLF001 - argparse has no public walk
        parser.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in action.choices.values():
                add_config_everywhere(child)


def _chosen(argv: list[str]) -> str | None:
    """The subcommand: the first word that is neither an option nor the value of -c/--config."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("-c", "--config"):
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_chosen(argv)).parse_args(argv)
    tune_gc()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


# --- `siem completion SHELL` ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh", "tcsh"),
                        help="the shell; e.g. `siem completion bash > /etc/bash_completion.d/siem`, or "
                             "`siem completion zsh > \"${fpath[1]}/_siem\"`")


def run(args: argparse.Namespace) -> int:
    import shtab  # noqa: PLC0415 - only this command needs it

    sys.stdout.write(shtab.complete(build_parser(everything=True), shell=args.shell))
    return 0
