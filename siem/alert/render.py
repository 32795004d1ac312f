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
   rest. The template text itself is the operator's and is not escaped except as part of the whole body;
5. a body template line whose placeholders are all empty is left out (``runbook: $runbook`` disappears
   for a rule without a runbook);
6. link templates get URL-encoded values only (``$rule_url``, ``$key_url``, ``$group_<field>_url``) and
   times (``$first_ms``, ``$first_s``, ``$first``); the result must be an http(s) URL or it is dropped.

HTML email (``encode_body(..., "html")``) is a readable page, not a ``<pre>`` block: the title as a heading
with the severity's colour, paragraphs, ``label: value`` lines as a two-column table, indented lines
(sample log lines) in monospace, and http(s) URLs as links. Everything is escaped before markup is added.
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


_TECHNIQUE = re.compile(r"^attack\.t(\d{4})(?:\.(\d{3}))?$", re.IGNORECASE)


def references_of(references: object, tags: object) -> list[str]:
    """The rule's references, then the MITRE ATT&CK page of each technique tag (attack.t1110.001 ->
    https://attack.mitre.org/techniques/T1110/001/) not already among them."""
    out = [str(r) for r in references] if isinstance(references, (list, tuple)) else []
    for t in tags if isinstance(tags, (list, tuple)) else ():
        m = _TECHNIQUE.match(str(t))
        if m:
            url = f"https://attack.mitre.org/techniques/T{m.group(1)}/" + (f"{m.group(2)}/" if m.group(2) else "")
            if url not in out:
                out.append(url)
    return out


def raw_line(event: Mapping[str, object]) -> str:
    """The raw log line of a sample event (``event.original``, else its message), "" when it has none."""
    v = event.get("event.original") or event.get("message") or ""
    return v if isinstance(v, str) else str(v)


def template_values(fields: Mapping[str, object], limit: int) -> dict[str, str]:
    """Every value neutralised and capped; ints and lists formatted."""
    out: dict[str, str] = {}
    for k, v in fields.items():
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        out[k] = neutralise(str(v), limit)
    return out


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Substitute; a line whose placeholders all came out empty is left out."""
    out = []
    for line in template.splitlines(keepends=True):
        tpl = string.Template(line)
        names = tpl.get_identifiers() if tpl.is_valid() else []
        if names and all(not values.get(n, "") for n in names if n in values) and any(n in values for n in names):
            continue
        out.append(tpl.safe_substitute(values))
    return "".join(out)


def render_link(template: str, fields: Mapping[str, object]) -> str:
    """The notification's link from the operator's template, or "" (no template, or not an http(s) URL)."""
    if not template:
        return ""
    first, last = int(fields.get("first_ms", 0) or 0), int(fields.get("last_ms", 0) or 0)  # type: ignore[call-overload]
    values = {
        "rule": quote(str(fields.get("rule", "")), safe=""), "rule_url": quote(str(fields.get("rule", "")), safe=""),
        "key_url": quote(str(fields.get("key", "")), safe=""), "id": quote(str(fields.get("id", "")), safe=""),
        "group_id": quote(str(fields.get("group_id", "")), safe=""),
        "severity": quote(str(fields.get("severity", "")), safe=""),
        "first": quote(iso_ms(first), safe=""), "last": quote(iso_ms(last), safe=""),
        "first_ms": str(first), "last_ms": str(last), "first_s": str(first // 1000), "last_s": str(-(-last // 1000)),
    }
    for k, v in fields.items():
        if k.startswith("group_") and k != "group_id":
            values[k + "_url"] = quote(str(v), safe="")
    link = string.Template(template).safe_substitute(values)
    if not link.startswith(("https://", "http://")) or any(c in link for c in " \n\r\t\"<>"):
        return ""
    return link


def notification_fields(n: Mapping[str, object], route: str, link_template: str = "",
                        limit: int = 2_000) -> dict[str, object]:
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
        "rules": list(n.get("rules") or []),  # type: ignore[call-overload]
        "runbook": n.get("runbook", "") or "",
        "references": references_of(n.get("references"), n.get("tags")),
    }
    keys = [str(k) for k in n.get("keys") or []]  # type: ignore[attr-defined]
    more = int(n.get("keys_more", 0) or 0)  # type: ignore[call-overload]
    fields["keys"] = ("; ".join(keys) + (f" (+{more} more alerts)" if more else "")) if len(keys) > 1 or more else ""
    samples = [s for s in n.get("samples") or [] if isinstance(s, (list, tuple)) and len(s) == 2]  # type: ignore[attr-defined]
    fields["samples"] = ("sample events:\n" + "\n".join(
        f"  {iso_ms(int(ts))}  {neutralise(str(line), limit, single_line=True)}" for ts, line in samples)
    ) if samples else ""
    for k, v in pairs:
        fields["group_" + re.sub(r"[^A-Za-z0-9_]", "_", k)] = v
    fields["first_ms"], fields["last_ms"] = n.get("first_ms", 0), n.get("last_ms", 0)
    fields["link"] = render_link(link_template, fields)
    del fields["first_ms"], fields["last_ms"]
    return fields


# --- channels -------------------------------------------------------------------------------------

HTML_SCHEMES = frozenset({"mailto", "mailtos"})
JSON_SCHEMES = frozenset({"json", "jsons"})


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def body_format(url: str) -> str:
    """apprise body_format for a destination: 'html' for email, else 'text'."""
    return "html" if scheme_of(url) in HTML_SCHEMES else "text"


_URL = re.compile(r"https?://[^\s<>\"']+")
_LABELLED = re.compile(r"^([A-Za-z][A-Za-z0-9 _.-]{0,30}): (.*)$")
_COLOURS = {"critical": "#b00020", "high": "#d9480f", "medium": "#b08800", "low": "#1971c2", "info": "#495057"}


def _inline(text: str) -> str:
    """Escaped text with http(s) URLs as links (the URL is escaped as well, in text and href)."""
    out, pos = [], 0
    for m in _URL.finditer(text):
        if m.start() < pos:
            continue
        raw = m.group(0).rstrip(".,;:)]")  # "see https://x/a, https://x/b." : not part of the URLs
        out.append(html.escape(text[pos:m.start()]))
        url = html.escape(raw, quote=True)
        out.append(f'<a href="{url}">{url}</a>')
        pos = m.start() + len(raw)
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _html(text: str, title: str) -> str:
    sev = next((s for s in _COLOURS if title.lower().startswith(f"[{s}]")), "info")
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head>",
        "<body style=\"font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; font-size: 14px; "
        "color: #212529; max-width: 60em\">",
    ]
    if title:
        parts.append(f"<h2 style=\"border-left: 6px solid {_COLOURS[sev]}; padding-left: 8px; font-size: 18px\">"
                     f"{html.escape(title)}</h2>")
    for para in re.split(r"\n\s*\n", text.strip("\n")):
        runs: list[tuple[str, list[str]]] = []  # consecutive lines of one kind: rows, code or text
        for line in para.split("\n"):
            m = _LABELLED.match(line)
            if line.startswith("  "):
                kind, item = "code", _inline(line.strip())
            elif m:
                kind, item = "rows", (f"<tr><td style=\"color: #6c757d; padding: 2px 12px 2px 0; vertical-align: "
                                      f"top; white-space: nowrap\">{html.escape(m.group(1))}</td>"
                                      f"<td style=\"padding: 2px 0\">{_inline(m.group(2))}</td></tr>")
            else:
                kind, item = "text", _inline(line)
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(item)
            else:
                runs.append((kind, [item]))
        for kind, items in runs:
            if kind == "rows":
                parts.append("<table style=\"border-collapse: collapse\">" + "".join(items) + "</table>")
            elif kind == "code":
                parts.append("<pre style=\"background: #f1f3f5; padding: 6px; white-space: pre-wrap; "
                             "word-break: break-all; font-size: 12px\">" + "\n".join(items) + "</pre>")
            else:
                parts.append("<p>" + "<br>".join(items) + "</p>")
    parts.append("</body></html>")
    return "".join(parts)


def encode_body(text: str, fmt: str, title: str = "") -> str:
    if fmt == "html":
        return _html(text, title)
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
