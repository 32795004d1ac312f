"""Turning attacker-influenced alert text into notification text that is safe on every channel.

Alert fields (titles, messages, group values, sample events) contain text an attacker chose: a user name
of ``<img src=x onerror=...>``, an ANSI sequence that clears the terminal, a U+202E that reverses what a
reader sees, ``@channel`` that pages a whole Slack workspace, a 1 MB URL. The rules here:

1. every field is capped (``field_max_chars``) before and after it is made safe, so work is bounded;
2. control characters (C0 except newline and tab, DEL, C1) become visible ``\\xNN`` text; ANSI escape
   sequences lose their ESC (so ``\\x1b[2J`` prints as ``\\x1b[2J``, harmless); BiDi overrides and
   isolates become U+FFFD; CR LF and U+2028/U+2029 become a newline (titles: a space);
3. chat mentions are neutralised with a zero-width space: ``@channel`` -> ``@\\u200bchannel``,
   ``<!here>`` -> ``<\\u200b!here>``, ``<@U123>`` -> ``<\\u200b@U123>``;
4. values are substituted into the route's template with :class:`string.Template` (no attribute access,
   no expressions), and only then encoded for the channel: HTML-escaped for email (``mailto``/``mailtos``,
   sent with body_format html), JSON-encoded by apprise for ``json``/``jsons`` webhooks, plain text for the
   rest. The template text itself is the operator's and is not escaped except as part of the whole body.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Mapping
from urllib.parse import quote

from siem.timeutil import iso_ms

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]{0,512}(\x07|\x1b\\)?|[@-Z\\-_])")
_BIDI = {ord(c): "\ufffd" for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MENTION = re.compile(r"@(?=(channel|here|everyone|all|group|room|team)\b)", re.IGNORECASE)
_SLACK_MENTION = re.compile(r"<(?=[!@#])")


def _visible(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group(0)):02x}"


def cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [truncated {len(text) - limit} chars]"


def neutralise(text: str, limit: int, single_line: bool = False) -> str:
    """Attacker text made inert for any channel, at most ``limit`` characters (plus a truncation note)."""
    original = len(text)
    text = text[:limit]
    text = text.replace("\r\n", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    text = _ANSI.sub(lambda m: "\\x1b" + m.group(0)[1:], text)
    text = _CONTROL.sub(_visible, text)
    text = text.translate(_BIDI)
    text = _MENTION.sub("@\u200b", text)
    text = _SLACK_MENTION.sub("<\u200b", text)
    if single_line:
        text = text.replace("\n", " ").replace("\t", " ")
    if original > limit or len(text) > limit:
        text = text[:limit] + f"... [truncated {max(original - limit, 0) or len(text) - limit} chars]"
    return text


def template_values(fields: Mapping[str, object], limit: int) -> dict[str, str]:
    """Every value neutralised and capped; ints and lists formatted."""
    out: dict[str, str] = {}
    for k, v in fields.items():
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        out[k] = neutralise(str(v), limit)
    return out


def render_template(template: str, values: Mapping[str, str]) -> str:
    return string.Template(template).safe_substitute(values)


def notification_fields(n: Mapping[str, object], route: str) -> dict[str, object]:
    """Template fields of a stored notification (see siem.alert.noise.Notification.to_json)."""
    group = n.get("group")
    pairs = [(str(p[0]), str(p[1])) for p in group if isinstance(p, (list, tuple)) and len(p) == 2] \
        if isinstance(group, (list, tuple)) else []
    key = ", ".join(f"{k}={v}" for k, v in pairs)
    aggregates = n.get("aggregates")
    if not isinstance(aggregates, dict):
        aggregates = {}
    fields: dict[str, object] = {
        "id": n.get("alert_id", ""),
        "rule": n.get("rule", ""),
        "title": n.get("title", ""),
        "severity": n.get("severity", ""),
        "tags": list(n.get("tags") or []),  # type: ignore[call-overload]
        "key": key,
        "where": f" ({key})" if key else "",
        "message": n.get("message", ""),
        "status": "NEW" if n.get("kind") == "first" else "UPDATE",
        "alerts": n.get("alerts", 0),
        "total": n.get("total", 0),
        "events": n.get("events", 0),
        "first": iso_ms(int(n.get("first_ms", 0) or 0)),  # type: ignore[call-overload]
        "last": iso_ms(int(n.get("last_ms", 0) or 0)),  # type: ignore[call-overload]
        "route": route,
        "group_id": n.get("group_id", ""),
        "aggregates": ", ".join(f"{k}={v}" for k, v in aggregates.items()),
        "alert_ids": list(n.get("alert_ids") or []),  # type: ignore[call-overload]
        "kind": n.get("kind", ""),
    }
    for k, v in pairs:
        fields["group_" + re.sub(r"[^A-Za-z0-9_]", "_", k)] = v
    return fields


# --- channels -------------------------------------------------------------------------------------

HTML_SCHEMES = frozenset({"mailto", "mailtos"})
JSON_SCHEMES = frozenset({"json", "jsons"})


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def body_format(url: str) -> str:
    """apprise body_format for a destination: 'html' for email, else 'text'."""
    return "html" if scheme_of(url) in HTML_SCHEMES else "text"


def encode_body(text: str, fmt: str) -> str:
    if fmt == "html":
        return "<html><body><pre style=\"white-space: pre-wrap\">" + html.escape(text) + "</pre></body></html>"
    return text


def render(title_template: str, body_template: str, fields: Mapping[str, object],
           field_max: int, body_max: int) -> tuple[str, str]:
    """(title, plain-text body) for one destination; ``encode_body`` makes the body fit the channel when it
    is sent. Titles are one line of plain text (email subjects included)."""
    values = template_values(fields, field_max)
    title = neutralise(render_template(title_template, values), 250, single_line=True)
    body = cap(render_template(body_template, values), body_max)
    return title, body


def _has_param(url: str, name: str) -> bool:
    query = url.split("?", 1)[1] if "?" in url else ""
    return any(p.split("=", 1)[0].lower() == name.lower() for p in query.split("&"))


def augment_url(url: str, notification_id: str, alert_id: str, group_id: str) -> str:
    """Add the ids a channel can carry as dedup/idempotency keys (never overriding what the user set).

    json/jsons: body fields ``alert_id``, ``group_id``, ``notification_id`` (apprise ``:key=value``) and
    headers ``X-Siem-Alert-Id`` and ``Idempotency-Key`` (apprise ``+Header=value``).
    pagerduty: ``dedup`` (PagerDuty ``dedup_key``) = the group id, so updates land on one incident.
    opsgenie: ``alias`` = the group id (Opsgenie deduplicates open alerts by alias).
    """
    scheme = scheme_of(url)
    params: list[tuple[str, str]] = []
    if scheme in JSON_SCHEMES:
        params = [
            (":alert_id", alert_id),
            (":group_id", group_id),
            (":notification_id", notification_id),
            ("+X-Siem-Alert-Id", alert_id),
            ("+Idempotency-Key", notification_id),
        ]
    elif scheme == "pagerduty":
        params = [("dedup", group_id)]
    elif scheme == "opsgenie":
        params = [("alias", group_id)]
    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in params if v and not _has_param(url, k))
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + extra
