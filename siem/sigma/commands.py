"""`siem sigma import DIR -o OUT` and `siem sigma coverage DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from siem.sigma.convert import convert_tree, write_tree


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sigma_command", required=True, metavar="ACTION")
    imp = sub.add_parser("import", help="convert Sigma rules (*.yml) into .rules files with generated tests")
    imp.add_argument("src", type=Path, help="a Sigma rule file or a directory of them (e.g. a SigmaHQ checkout)")
    imp.add_argument("-o", "--output", type=Path, required=True, help="directory for the .rules files")
    imp.add_argument("--var", action="append", default=[], metavar="NAME=V1,V2",
                     help="values for the |expand placeholder %%NAME%% (repeatable)")
    cov = sub.add_parser("coverage", help="convert, load and test Sigma rules; print the coverage table")
    cov.add_argument("src", type=Path, help="a Sigma rule file or a directory of them")
    cov.add_argument("--markdown", type=Path, help="also write the per-rule list as a Markdown file")


def run(args: argparse.Namespace) -> int:
    if not args.src.exists():
        print(f"{args.src}: no such file or directory", file=sys.stderr)
        return 2
    if args.sigma_command == "import":
        placeholders: dict[str, list[str]] = {}
        for spec in args.var:
            name, sep, values = spec.partition("=")
            if not sep or not name.strip():
                print(f"--var {spec!r}: expected NAME=VALUE[,VALUE...]", file=sys.stderr)
                return 2
            placeholders[name.strip()] = [v for v in values.split(",") if v]
        outcomes = convert_tree(args.src, placeholders)
        written = write_tree(outcomes, args.output)
        for o in outcomes:
            if o.text is None:
                print(f"skipped {o.source}: {o.reason}", file=sys.stderr)
        print(f"{len(written)} of {len(outcomes)} Sigma rule files converted into {args.output}")
        return 0 if written or not outcomes else 1
    from siem.sigma.coverage import measure, render_markdown

    report = measure(args.src)
    print(report.summary())
    if args.markdown:
        args.markdown.write_text(render_markdown(report), encoding="utf-8")
    return 0
