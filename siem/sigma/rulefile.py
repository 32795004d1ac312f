"""Write a converted Sigma rule as a readable, loadable ``.rules`` block.

The block keeps what the Sigma rule says about itself: its id (``sigma_id``), title, author,
references, level (as severity), tags, false positives and licence, and its description and status
as comments. Its ``when`` is the converted detection (siem.sigma.backend), and it carries an
``expect fire`` and an ``expect nofire`` case generated from that condition (siem.sigma.events),
so ``siem rules test`` proves each converted rule both fires and stays quiet. Output depends only
on the rule (no dates, no paths of this machine): converting twice gives the same bytes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from siem import schema
from siem.dsl import ast
from siem.dsl.printer import render_expr, render_string
from siem.sigma import events
from siem.sigma.pipelines import find_logsource

SEVERITY = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}

# what an alert says, by kind of log (fields every such event carries)
MESSAGE_SUFFIX = {
    "linux": "on {host.name}: {message}",
    "auditd": "on {host.name}: {process.executable} ({process.command_line}) as {user.name}",
    "process": "on {host.name}: {process.executable} ({process.command_line}) as {user.name}",
    "cloudtrail": "{event.provider} {event.action} by {user.name} in {cloud.account.id} from {source.ip}",
    "web": "{http.request.method} {url.original} from {source.ip}: {http.response.status_code}",
}

DRL_NOTICE = (
    "Detection Rule License (DRL) 1.1, https://github.com/SigmaHQ/Detection-Rule-License: use and share with\n"
    "# attribution; the author and references below are kept for that."
)


def rule_id(stem: str, index: int = 0) -> str:
    """A DSL rule id from a Sigma file name: letters, digits and _ (``lnx_auditd_x-y`` -> ``lnx_auditd_x_y``)."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    if not re.match(r"[A-Za-z_]", base):
        base = "sigma_" + base
    return base if index == 0 else f"{base}_{index + 1}"


def _escape_template(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _strings(values: list[str]) -> str:
    return "[" + ", ".join(render_string(v) for v in values) + "]"


def _comment(text: str) -> list[str]:
    return ["# " + line.rstrip() if line.strip() else "#" for line in str(text).strip().splitlines()]


def logsource_expr(rule: Any) -> ast.Expr | None:
    """The condition standing for the rule's logsource, as the pipeline adds it."""
    src = rule.logsource
    ls = find_logsource(src.product, src.service, src.category)
    if ls is None:
        return None
    parts: list[ast.Expr] = []
    for field, value in ls.condition:
        if value == "*":
            parts.append(ast.Exists(field))
        elif isinstance(value, tuple):
            parts.append(ast.InSet(field, value, False))
        else:
            parts.append(ast.Compare(field, "==", value, False))
    return parts[0] if len(parts) == 1 else ast.And(tuple(parts))


def test_events(rule: Any, when: ast.Expr) -> tuple[dict[str, object] | None, dict[str, object] | None]:
    """A firing and a non-firing event generated from the rule's own condition."""
    keep = logsource_expr(rule)
    fire = _with_original(events.satisfying(when), when, True)
    nofire = events.violating(when, keep, near=fire)
    return fire, _with_original(nofire, when, False)


def _with_original(ev: dict[str, object] | None, when: ast.Expr, want: bool) -> dict[str, object] | None:
    """Give the event a raw line (event.original) when the search left it out, as a parser would."""
    if ev is None or "event.original" in ev:
        return ev
    line = " ".join(f"{k}={v}" for k, v in ev.items())
    candidate = {**ev, "event.original": line}
    return candidate if events.holds(when, candidate) == want else ev


def license_of(rule: Any, default: str) -> str:
    got = getattr(rule, "license", None)
    return str(got) if got else default


def _key_value(field: str) -> object:
    kind = schema.field_type(field)
    return "192.0.2.10" if kind == schema.IP else 1 if kind == schema.LONG else "key-1"


def _keyed(ev: dict[str, object] | None, by: tuple[str, ...]) -> dict[str, object] | None:
    if ev is None:
        return None
    return {**{k: _key_value(k) for k in by if k not in ev}, **ev}


def _line(ev: dict[str, object], times: int = 1, every_ms: int = 1000) -> str:
    text = orjson.dumps(ev, option=orjson.OPT_SORT_KEYS).decode()
    return text + (f" x {times} every {every_ms}ms" if times > 1 else "")


def correlation_tests(when: ast.Expr, corr: ast.Correlation) -> tuple[list[str] | None, list[str] | None]:
    """Event lines that make `corr` fire, and lines that come close without firing."""
    match corr:
        case ast.Threshold(kind, field, op, value, window_ms, by):
            need = int(value) + (1 if op == ">" or value != int(value) else 0)
            every = max(1, window_ms // (2 * need + 2))
            base = _keyed(events.satisfying(when), by)
            if base is None:
                return None, None
            if kind == "count":
                if need > 1:
                    return [_line(base, need, every)], [_line(base, need - 1, every)]
                miss = events.violating(when, None, near=base)
                return [_line(base)], ([_line(miss)] if miss is not None else None)
            if kind in ("sum", "avg", "median", "percentile") and field is not None:
                top = int(value) + 1 if op == ">" or value != int(value) else int(value)
                return [_line({**base, field: top})], [_line({**base, field: top - 1})]
            if kind == "distinct" and field is not None:
                first = base.get(field, "v")
                variants = [{**base, field: f"{first}-{i}" if i else first} for i in range(need)]
                if not all(events.holds(when, v) for v in variants):
                    return None, None
                return [_line(v) for v in variants], [_line(base, need)]
        case ast.Sequence(steps, window_ms, by, _, ordered):
            evs = [_keyed(events.satisfying(s.expr), by) for s in steps]
            if any(e is None for e in evs):
                return None, None
            keys = {k: evs[0][k] for k in by if k in evs[0]}  # type: ignore[index]
            evs = [{**e, **keys} for e in evs]  # type: ignore[dict-item]
            # in order: the steps reversed must not fire; in any order: all steps but the last
            miss = list(reversed(evs)) if ordered else evs[:-1]
            return [_line(e) for e in evs], [_line(e) for e in miss]
    return None, None


def rule_block(rule: Any, when: ast.Expr, index: int = 0, *, stem: str | None = None, source: str = "",
               default_license: str = "", rid: str | None = None, correlation: ast.Correlation | None = None,
               fields: str | None = None) -> str:
    """The text of one rule converted from Sigma rule `rule` with condition `when`."""
    if stem is None:
        path = getattr(getattr(rule, "source", None), "path", None)
        stem = path.stem if path is not None else (rule.title or "sigma_rule")
    rid = rid or rule_id(stem, index)
    src = getattr(rule, "logsource", None)
    ls = find_logsource(src.product, src.service, src.category) if src is not None else None
    kind = fields or (ls.fields if ls else "")
    licence = license_of(rule, default_license)
    lines: list[str] = []
    lines.append(f"# Sigma rule {source or stem}" + (f" (condition {index + 1})" if index else ""))
    if licence.upper().startswith("DRL"):
        lines.append("# Licence: " + DRL_NOTICE)
    elif licence:
        lines.append(f"# Licence: {licence}")
    status = getattr(rule, "status", None)
    if status is not None:
        lines.append(f"# Status: {str(status.name).lower() if hasattr(status, 'name') else status}")
    if rule.description:
        lines.extend(_comment(rule.description))
    lines.append(f"rule {rid} {{")
    lines.append(f"  title    {render_string(rule.title)}")
    if rule.id:
        lines.append(f"  sigma_id {render_string(str(rule.id))}")
    level = getattr(rule.level, "name", None) if rule.level is not None else None
    lines.append(f"  severity {SEVERITY.get(str(level).lower(), 'medium')}")
    tags = [f"{t.namespace}.{t.name}" for t in rule.tags]
    if tags:
        lines.append(f"  tags     [{', '.join(tags)}]")
    if rule.author:
        lines.append(f"  author   {render_string(rule.author)}")
    if rule.references:
        lines.append(f"  references {_strings(list(rule.references))}")
    if rule.falsepositives:
        lines.append(f"  falsepositives {_strings([str(f) for f in rule.falsepositives])}")
    if licence:
        lines.append(f"  license  {render_string('DRL-1.1' if licence.upper().startswith('DRL') else licence)}")
    if not isinstance(when, ast.TrueExpr):
        lines.append(f"  when     {render_expr(when, indent='           ')}")
    if correlation is not None:
        from siem.sigma.correlation import render_correlation

        lines.extend("  " + ln if i == 0 else ln for i, ln in enumerate(render_correlation(correlation)))
    suffix = MESSAGE_SUFFIX.get(kind, "")
    if correlation is not None:
        suffix = "{count} events for {key}, first {first}, last {last}"
    lines.append(f"  message  {render_string(_escape_template(rule.title) + (' ' + suffix if suffix else ''))}")
    if correlation is not None:
        fire_lines, nofire_lines = correlation_tests(when, correlation)
        for word, got in (("fire  ", fire_lines), ("nofire", nofire_lines)):
            if got is None:
                lines.append(f"  # no {word.strip()} test events could be generated from the condition")
            else:
                lines.append(f"  expect {word} {{")
                lines.extend(f"    {ln}" for ln in got)
                lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"
    fire, nofire = test_events(rule, when)
    if fire is not None:
        lines.append(f"  expect fire   {{ {orjson.dumps(fire, option=orjson.OPT_SORT_KEYS).decode()} }}")
    else:
        lines.append("  # no firing test event could be generated from the condition")
    if nofire is not None:
        lines.append(f"  expect nofire {{ {orjson.dumps(nofire, option=orjson.OPT_SORT_KEYS).decode()} }}")
    else:
        lines.append("  # no non-firing test event could be generated from the condition")
    lines.append("}")
    return "\n".join(lines) + "\n"
