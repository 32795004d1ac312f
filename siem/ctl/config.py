"""`siem config check [--config FILE]`: validate the config and what it points at; print ok or every issue."""

from __future__ import annotations

import argparse
import json
import sys

from siem.ctl import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate the config, its rule files and its secrets",
                           description="Validate the config, its rule files and its secrets. Exit 0 when "
                                       "valid (warnings are printed), 1 when not.")
    add_config_argument(check)
    check.add_argument("--no-rules", action="store_true", help="do not load the rule files")
    check.add_argument("--format", choices=("text", "json"), default="text",
                       help="text (the default) or json: one object with what was found and every issue")


def run(args: argparse.Namespace) -> int:
    from siem.config import EMBEDDED, check_file

    path = getattr(args, "config", None)  # -c is SUPPRESSed when not given (siem.cli)
    config, issues = check_file(path, rules=not args.no_rules)
    errors = sum(1 for i in issues if i.severity == "error")
    source = path or EMBEDDED
    if args.format == "json":
        ok = config is not None and not errors
        print(json.dumps({
            "ok": ok, "source": source, "errors": errors, "issues": [i.to_json() for i in issues],
            "inputs": [{"name": i.name, "type": i.type} for i in config.inputs] if config is not None else [],
            "role": config.daemon.role if config is not None else None,
            "state_dir": config.daemon.state_dir if config is not None else None,
        }))
        return 0 if ok else 1
    _print_issues(issues)
    if config is None or errors:
        print(f"{source}: {errors} error(s)", file=sys.stderr)
        return 1
    print(f"ok: {source}: {len(config.inputs)} input(s) "
          f"({', '.join(f'{i.name}:{i.type}' for i in config.inputs) or 'none'}), role {config.daemon.role}, "
          f"state in {config.daemon.state_dir}")
    return 0


def _print_issues(issues: list) -> None:
    for issue in issues:
        print(issue.render(), file=sys.stderr)
