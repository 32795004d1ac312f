"""`siem rules check PATH...` and `siem rules test PATH...`."""

from __future__ import annotations

import argparse
import json
import sys

from siem.dsl.loader import load_rules
from siem.engine.testing import run_rule_tests
from siem.errors import ConfigError, RuleError


def _configured_rules(config_path: str | None) -> list[str]:
    """The rule paths of the config (or of the embedded defaults: ./rules)."""
    from siem.config import load_config  # noqa: PLC0415

    return list(load_config(config_path).daemon.rules)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="load rule files and report every problem with file:line:col")
    check.add_argument("paths", nargs="*", help="rule files or directories of *.rules (default: the rules of "
                                                "--config, or ./rules)")
    check.add_argument("--format", choices=("text", "json"), default="text",
                       help="text (the default) or json: one object with the counts and every issue")
    test = sub.add_parser("test", help="run the expect fire / expect nofire cases the rules carry")
    test.add_argument("paths", nargs="*", help="rule files or directories of *.rules (default: the rules of "
                                               "--config, or ./rules)")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.add_argument("--require-cases", action="store_true",
                      help="fail when a rule lacks a firing or a non-firing case")


def run(args: argparse.Namespace) -> int:
    as_json = getattr(args, "format", "text") == "json"
    try:
        paths = args.paths or _configured_rules(getattr(args, "config", None))
        ruleset = load_rules(paths)
    except (RuleError, ConfigError) as exc:
        errors = sum(1 for i in exc.issues if i.severity == "error")
        if as_json:
            print(json.dumps({"ok": False, "errors": errors, "issues": [i.to_json() for i in exc.issues]}))
            return 1
        for issue in exc.issues:
            print(issue.render(), file=sys.stderr)
        print(f"{errors} error(s) in {'rule files' if isinstance(exc, RuleError) else 'the config'}", file=sys.stderr)
        return 1
    if as_json and args.rules_command == "check":
        print(json.dumps({"ok": True, "errors": 0, "rules": len(ruleset.rules), "files": len(ruleset.sources),
                          "issues": [w.to_json() for w in ruleset.warnings]}))
        return 0
    for warning in ruleset.warnings:
        print(warning.render(), file=sys.stderr)
    if args.rules_command == "check":
        print(f"ok: {len(ruleset.rules)} rules in {len(ruleset.sources)} files")
        return 0
    results = run_rule_tests(ruleset)
    failed = [r for r in results if not r.passed]
    for r in results:
        if r.passed and not args.verbose:
            continue
        word = "PASS" if r.passed else "FAIL"
        want = "fire" if r.expect_fire else "nofire"
        detail = r.error or f"expected {want}, got {r.fired} alert(s)"
        print(f"{word} {r.rule_id} [expect {want}] {r.location or ''} {'' if r.passed else detail}".rstrip())
    missing: list[str] = []
    if args.require_cases:
        for rule in ruleset.rules:
            kinds = {c.expect_fire for c in rule.tests}
            if kinds != {True, False}:
                missing.append(rule.id)
                print(f"FAIL {rule.id}: needs at least one 'expect fire' and one 'expect nofire' case")
    untested = sum(1 for rule in ruleset.rules if not rule.tests)
    print(f"{len(results) - len(failed)} passed, {len(failed) + len(missing)} failed"
          + (f" ({untested} rules without cases)" if untested else ""))
    return 1 if failed or missing else 0
