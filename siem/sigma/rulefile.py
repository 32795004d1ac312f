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
            parts.append(ast.InSet(field, value, True))
        else:
            parts.append(ast.Compare(field, "==", value, True))
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


def rule_block(rule: Any, when: ast.Expr, index: int = 0, *, stem: str | None = None, source: str = "",
               default_license: str = "", rid: str | None = None) -> str:
    """The text of one rule converted from Sigma rule `rule` with condition `when`."""
    if stem is None:
        path = getattr(getattr(rule, "source", None), "path", None)
        stem = path.stem if path is not None else (rule.title or "sigma_rule")
    rid = rid or rule_id(stem, index)
    src = rule.logsource
    ls = find_logsource(src.product, src.service, src.category)
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
    lines.append(f"  when     {render_expr(when, indent='           ')}")
    suffix = MESSAGE_SUFFIX.get(ls.fields if ls else "", "")
    lines.append(f"  message  {render_string(_escape_template(rule.title) + (' ' + suffix if suffix else ''))}")
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
