"""`siem logtest [LINE]`: how log lines parse, which rules they match and what each correlation then holds.

The counterpart of wazuh-logtest, for rule authors and for "why did this not alert?"::

    $ siem logtest 'Mar  9 03:12:01 web01 sshd[812]: Failed password for root from 203.0.113.7 port 52144 ssh2'
    line 1 (syslog)
      @timestamp        2026-03-09T03:12:01.000Z
      event.dataset     sshd
      ...
      rules matched (2):
        ssh_bruteforce  high  count >= 10 within 5m by source.ip
          key source.ip=203.0.113.7: count 1, fires at >= 10 (window 5m)
        ...
      alerts: none

Lines come from the arguments (one line each) or, without any, from stdin, one per line: paste a burst
and watch a count grow. They go through the daemon's own entry point, ``siem.parse.parse`` with the format
given (``--log-format``), the format of a configured input (``--input NAME``), or one detected from the line
(as ``siem replay`` does). The rules (``--rules``, else those of ``-c``, else ``./rules``) are compiled by the
engine's ``compile_rule``; each line is fed to one fresh engine with zero lateness, so the window state
shown after a line is exactly what the daemon would hold after the same lines, and the alerts shown are the
ones it would raise. ``--format json`` prints one JSON object per line with the same content.

Everything printed that came from the line is escaped (control characters, ANSI sequences, BiDi
overrides), as for every terminal output of siem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from siem.logsetup import escape_control
from siem.parse import PARSERS

MAX_LINES = 100_000  # a paste, not a replay: beyond this use `siem replay -`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lines", nargs="*", metavar="LINE", help="log lines (default: read lines from stdin)")
    parser.add_argument("--rules", action="append",
                        help="rule file or directory (repeatable; default: the rules of --config, or ./rules)")
    parser.add_argument("--log-format", choices=sorted(PARSERS), help="the lines' format (default: detected)")
    parser.add_argument("--input", metavar="NAME", help="take the format from this input of the config")
    parser.add_argument("--format", choices=("auto", "text", "json"), default="auto",
                        help="output: text, json (one object per line), auto (text; the default)")
    parser.add_argument("--timezone", default=None, help="zone of timestamps that carry none (default: the "
                                                          "config's daemon.timezone, UTC)")


def run(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from siem.config import load_config  # noqa: PLC0415
    from siem.dsl.loader import load_rules  # noqa: PLC0415
    from siem.engine.runtime import Engine  # noqa: PLC0415
    from siem.errors import ConfigError, RuleError  # noqa: PLC0415
    from siem.parse import ParseContext  # noqa: PLC0415
    from siem.timeutil import wall_ms  # noqa: PLC0415

    try:
        config = load_config(getattr(args, "config", None))
        fmt = args.log_format or (_input_format(config, args.input) if args.input else None)
        rule_paths = list(args.rules) if args.rules else list(config.daemon.rules)
        ruleset = load_rules(rule_paths)
    except (ConfigError, RuleError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"siem logtest: {exc.args[0]}", file=sys.stderr)
        return 2
    for warning in ruleset.warnings:
        print(warning.render(), file=sys.stderr)
    tz = args.timezone or config.daemon.timezone
    ctx = ParseContext(tz=ZoneInfo(tz), now_ms=wall_ms())
    engine = Engine(ruleset, lateness_ms=0, future_skew_ms=None)
    as_json = args.format == "json"
    out = sys.stdout
    lines = [a.encode("utf-8", "surrogateescape") for a in args.lines] if args.lines else _stdin_lines()
    n = 0
    for n, raw in enumerate(lines, 1):
        if n > MAX_LINES:
            print(f"siem logtest: stopped after {MAX_LINES} lines (use `siem replay -` for more)", file=sys.stderr)
            break
        report = test_line(raw, fmt, ctx, engine)
        report["line"] = n
        if as_json:
            out.write(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode() + "\n")
        else:
            out.write(render_text(report) + "\n")
        out.flush()
    if n == 0:
        print("siem logtest: no line given (pass one as an argument or on stdin)", file=sys.stderr)
        return 2
    return 0


def _stdin_lines() -> Any:
    for raw in sys.stdin.buffer:
        raw = raw.rstrip(b"\r\n")
        if raw.strip():
            yield raw


def _input_format(config: Any, name: str) -> str:
    for spec in config.inputs:
        if spec.name == name:
            if spec.type in ("cloudtrail", "journald"):
                return spec.type
            return str(getattr(spec.config, "format", "syslog"))
    known = ", ".join(s.name for s in config.inputs) or "none"
    raise LookupError(f"--input {name!r}: no such input in the config (inputs: {known})")


def test_line(raw: bytes, fmt: str | None, ctx: Any, engine: Any) -> dict[str, Any]:
    """One line through parse, every rule's filter, and the engine; all of it as plain data."""
    from siem.engine.batch import Batch  # noqa: PLC0415
    from siem.engine.windows import row_keys  # noqa: PLC0415
    from siem.parse import parse  # noqa: PLC0415
    from siem.parse.detect import detect_format  # noqa: PLC0415

    chosen = fmt or detect_format(Path("-"), [raw])
    event = parse(chosen, raw, ctx, "logtest")
    ts = event.get("@timestamp")
    batch = Batch([event], np.array([ts if type(ts) is int else 0], dtype=np.int64))
    one = np.array([0], dtype=np.int64)
    matched: list[dict[str, Any]] = []
    hits = []
    for rule in engine.rules:
        try:
            ok = bool(rule.filter(batch)[0])
        except Exception as exc:  # noqa: BLE001 - a rule failing on this event is what the user wants to see
            matched.append({"rule": rule.id, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if ok:
            hits.append(rule)
    alerts = engine.process([event])
    for rule in hits:
        spec = rule.spec
        entry: dict[str, Any] = {"rule": rule.id, "severity": spec.severity, "title": spec.title,
                                 "correlation": _correlation_text(spec)}
        corr = spec.correlation
        if corr is not None and rule.correlator is not None:
            by = tuple(getattr(corr, "by", ()))
            key = row_keys(batch, one, by)[0]
            if key is None:
                missing = [f for f in by if event.get(f) is None]
                entry["not_correlated"] = f"the event lacks {', '.join(missing)} (a `by` field)"
            else:
                entry["key"] = dict(zip(by, (key,) if len(by) == 1 else key))
                entry["state"] = rule.correlator.describe_key(key, rule.id)
        matched.append(entry)
    return {"format": chosen, "event": event, "rules": matched, "alerts": [a.to_json() for a in alerts]}


def _correlation_text(spec: Any) -> str:
    from siem.dsl import ast  # noqa: PLC0415

    corr = spec.correlation
    by = f" by {', '.join(corr.by)}" if corr is not None and getattr(corr, "by", ()) else ""
    match corr:
        case None:
            return "single event"
        case ast.Threshold():
            what = "count" if corr.kind == "count" else f"{corr.kind}({corr.field})"
            return f"{what} {corr.op} {corr.value:g} within {_dur(corr.window_ms)}{by}"
        case ast.Sequence():
            return f"sequence of {len(corr.steps)} steps within {_dur(corr.window_ms)}{by}"
        case ast.Absent():
            return f"absent for {_dur(corr.window_ms)}{by}"
        case ast.FirstSeen():
            return f"first_seen {corr.field}{by} learn {_dur(corr.learn_ms)}"
        case ast.Spike():
            return f"spike {corr.factor:g}x baseline {_dur(corr.baseline_ms)} within {_dur(corr.window_ms)}{by}"
    return type(corr).__name__


def _dur(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _state_text(state: dict[str, Any] | None) -> str:
    from siem.timeutil import iso_ms  # noqa: PLC0415

    if not state:
        return "no state (the window fired with this event, or holds nothing for the key)"
    if "measure" in state:
        return (f"{state['measure']} {state['value']:g} in the window, fires at {state['fires_at']} "
                f"(window {_dur(int(state['window_ms']))})")
    if "steps" in state:
        steps = ", ".join(f"step {i}: {s['seen']}/{s['needs']}" for i, s in enumerate(state["steps"], 1))
        return f"{steps} (within {_dur(int(state['window_ms']))})"
    if "last_seen_ms" in state:
        return (f"last seen {iso_ms(int(state['last_seen_ms']))}; fires if nothing arrives until "
                f"{iso_ms(int(state['fires_if_silent_until_ms']))}")
    if "first_seen_ms" in state:
        return (f"{state['values_seen']} value(s) of {state['field']} known; learning until "
                f"{iso_ms(int(state['learning_until_ms']))}")
    if "bucket_count" in state:
        return (f"{state['bucket_count']} in the current {_dur(int(state['window_ms']))} bucket, baseline mean "
                f"{state['baseline_mean']:g} x{state['factor']:g} (at least {state['min_count']})"
                + ("; still learning the baseline" if state["learning"] else ""))
    return str(state)


def render_text(report: dict[str, Any]) -> str:
    """The report of one line for a person; attacker text escaped."""
    from siem.alert.console import alert_line  # noqa: PLC0415
    from siem.alert.record import Alert  # noqa: PLC0415
    from siem.timeutil import iso_ms  # noqa: PLC0415

    event = report["event"]
    out = [f"line {report['line']} ({report['format']})"]
    width = min(max((len(k) for k in event), default=0), 40)
    for k in sorted(event, key=lambda k: (k != "@timestamp", k)):
        v = event[k]
        if k in ("@timestamp", "event.ingested") and type(v) is int:
            v = iso_ms(v)
        out.append(f"  {escape_control(k):<{width}}  {escape_control(str(v))[:500]}")
    if "error.message" in event:
        out.append("  (not parsed: the event keeps the raw line; rules see only the fields above)")
    rules = report["rules"]
    out.append(f"  rules matched ({len(rules)}):" if rules else "  rules matched: none")
    for r in rules:
        if "error" in r:
            out.append(f"    {r['rule']}  ERROR {escape_control(r['error'])}")
            continue
        out.append(f"    {r['rule']}  {r['severity']}  {r['correlation']}")
        if "not_correlated" in r:
            out.append(f"      not correlated: {r['not_correlated']}")
        elif "key" in r:
            key = " ".join(f"{f}={escape_control(str(v))}" for f, v in r["key"].items())
            out.append(f"      key {key}: {_state_text(r['state'])}")
    alerts = report["alerts"]
    if alerts:
        out.append(f"  alerts ({len(alerts)}):")
        out.extend(f"    {alert_line(Alert.from_json(a))}" for a in alerts)
    else:
        out.append("  alerts: none")
    return "\n".join(out)
