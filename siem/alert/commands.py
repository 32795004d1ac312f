"""`siem alerts list` and `siem alerts show ID`: read the alert log (and the outbox for delivery status).

Alert text is attacker-influenced: `list` prints neutralised one-line fields, `show` prints JSON with every
non-ASCII and control character escaped, so nothing reaches the terminal raw.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path

from siem.alert.alertlog import iter_log
from siem.alert.config import AlertingConfig, config_from_toml
from siem.alert.record import Alert
from siem.alert.render import neutralise
from siem.timeutil import iso_ms, parse_duration_ms, wall_ms

DEFAULT_STATE_DIR = "/var/lib/siem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="list logged alerts, newest last")
    _common(ls)
    ls.add_argument("--since", help="only alerts emitted since a duration ago (30m, 2h, 7d) or an ISO time")
    ls.add_argument("--rule", help="only alerts of rules matching this glob")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (the newest); 0 = all (default 50)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="show one alert and its notifications")
    _common(show)
    show.add_argument("id", help="alert id (a unique prefix is enough)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=None,
                   help=f"state directory (default: [daemon] state_dir of --config, else $SIEM_STATE_DIR, else "
                        f"{DEFAULT_STATE_DIR} or ./state, whichever exists)")
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                   help="siem.toml: its state_dir and the alert log and outbox paths of [alerting]")


def _resolve(args: argparse.Namespace) -> tuple[AlertingConfig | None, Path]:
    """The alerting config and state directory the command reads."""
    state_dir: str | None = args.state_dir
    cfg: AlertingConfig | None = None
    args.config = getattr(args, "config", None)  # -c is SUPPRESSed when not given (siem.cli)
    if args.config:
        from siem.config import load_config  # the whole daemon config, for [daemon] state_dir
        from siem.errors import ConfigError

        try:
            full = load_config(args.config)
            cfg = full.alerting
            state_dir = state_dir or full.daemon.state_dir
        except ConfigError as exc:
            print(f"{args.config}: the configuration has errors; reading only its [alerting] table:\n{exc}",
                  file=sys.stderr)
    if cfg is None:
        cfg, errors = load_alerting(args.config)
        for e in errors:
            print(e, file=sys.stderr)
    if state_dir is None:
        state_dir = os.environ.get("SIEM_STATE_DIR")
    if state_dir is None:
        state_dir = next((d for d in (DEFAULT_STATE_DIR, "state") if Path(d).is_dir()), DEFAULT_STATE_DIR)
    return cfg, Path(state_dir)


def load_alerting(path: str | None) -> tuple[AlertingConfig | None, list[str]]:
    """The [alerting] table of a TOML file (defaults when path is None); errors as printable lines."""
    if path is None:
        return AlertingConfig(), []
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc.strerror or exc}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{path}: invalid TOML: {exc}"]
    table = doc.get("alerting", {})
    cfg, issues = config_from_toml(table, "alerting")
    return cfg, [f"{path}: {i.render()}" for i in issues]


def _since_ms(text: str) -> int:
    try:
        return wall_ms() - parse_duration_ms(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"{text!r}: give a time zone (e.g. 2024-05-01T10:00:00Z)")
    return int(dt.timestamp() * 1000)


def _when(a: Alert) -> int:
    return a.emitted_ms or a.last_ms


def _line(a: Alert) -> str:
    key = ", ".join(f"{k}={v}" for k, v in a.group)
    return "  ".join([
        iso_ms(_when(a)), f"{a.severity:<8}", a.id, neutralise(a.rule_id, 80, True),
        f"count={a.count}", neutralise(a.title, 120, True), neutralise(f"({key})", 160, True) if key else "",
    ]).rstrip()


def run(args: argparse.Namespace) -> int:
    cfg, state_dir = _resolve(args)
    if cfg is None:
        return 2
    log_path = Path(cfg.log_path)
    if not log_path.is_absolute():
        log_path = state_dir / log_path
    if args.alerts_command == "list":
        return _list(args, log_path)
    outbox_path = Path(cfg.outbox_path)
    if not outbox_path.is_absolute():
        outbox_path = state_dir / outbox_path
    return _show(args, log_path, outbox_path, cfg)


def _list(args: argparse.Namespace, log_path: Path) -> int:
    try:
        since = _since_ms(args.since) if args.since else None
    except ValueError as exc:
        print(f"--since: {exc}", file=sys.stderr)
        return 2
    if not log_path.exists() and not list(log_path.parent.glob(log_path.name + ".*")):
        print(f"no alert log at {log_path}", file=sys.stderr)
        return 1
    picked: list[Alert] = []
    for a in iter_log(log_path):
        if since is not None and _when(a) < since:
            continue
        if args.rule and not fnmatchcase(a.rule_id, args.rule):
            continue
        picked.append(a)
        if args.limit > 0 and len(picked) > 4 * args.limit:
            picked = picked[-args.limit:]
    if args.limit > 0:
        picked = picked[-args.limit:]
    for a in picked:
        if args.json:
            print(json.dumps(a.to_json(), ensure_ascii=True, default=str))
        else:
            print(_line(a))
    return 0


def _show(args: argparse.Namespace, log_path: Path, outbox_path: Path, cfg: AlertingConfig | None = None) -> int:
    matches = [a for a in iter_log(log_path) if a.id.startswith(args.id)]
    ids = {a.id for a in matches}
    if not matches:
        print(f"no alert with id {args.id!r} in {log_path}", file=sys.stderr)
        return 1
    if len(ids) > 1:
        print(f"{args.id!r} is ambiguous: {', '.join(sorted(ids))}", file=sys.stderr)
        return 1
    alert = matches[0]
    print(json.dumps(alert.to_json(), ensure_ascii=True, indent=2, default=str))
    if outbox_path.exists():
        from siem.alert.outbox import Outbox
        from siem.errors import StateError

        try:
            ob = Outbox(outbox_path, readonly=True)
        except StateError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        try:
            rows = ob.rows(alert_id=alert.id)
            groups = [g for g in ob.load_groups() if alert.id in (g.get("pending_ids") or [])]
        finally:
            ob.close()
        print(f"\nnotifications ({len(rows)}):")
        for r in rows:
            if r.state == "pending" and r.done_ms:
                when = f"delivered {iso_ms(r.done_ms)}, re-sent while firing (next {iso_ms(r.next_attempt_ms)})"
            else:
                when = iso_ms(r.done_ms) if r.done_ms else f"next attempt {iso_ms(r.next_attempt_ms)}"
            label = "reason" if r.state == "held" else "last error"
            err = f"  {label}: {neutralise(r.last_error, 300, True)}" if r.last_error else ""
            print(f"  {r.state:<7} route={r.route} kind={r.kind} attempts={r.attempts} {when}{err}")
        for g in groups:  # not notified yet: say what it waits for
            due = g.get("next_flush_ms")
            print(f"  waiting route={neutralise(str(g.get('route') or '-'), 80, True)}: in a group of "
                  f"{g.get('pending', 0)} pending alert(s); its notification is due "
                  f"{iso_ms(int(due)) if isinstance(due, int) else 'with the next alert of the group'} "
                  f"(group_wait / group_interval)")
        if not rows and not groups and cfg_routes_for(alert, cfg) == []:
            print("  none: no alerting route matches this alert and there is no default_route; it is only in "
                  "the alert log")
    return 0


def cfg_routes_for(alert: Alert, cfg: AlertingConfig | None) -> list[str] | None:
    """Names of the routes the alert goes to under cfg (None without a config)."""
    if cfg is None:
        return None
    from siem.alert.route import select_routes

    return [r.name for r in select_routes(cfg, alert.rule_id, alert.severity, alert.tags, alert.emitted_ms or wall_ms())]
