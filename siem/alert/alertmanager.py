"""The Alertmanager channel: alerts POSTed to Alertmanager's ``/api/v2/alerts``, through the same outbox.

Destination URLs: ``alertmanager://HOST:PORT[/PATH]`` (plain HTTP) or ``alertmanagers://...`` (HTTPS), with
optional ``USER:PASSWORD@`` for basic auth (use urls_file/urls_env for those). PATH is a prefix for an
Alertmanager behind a reverse proxy (``--web.route-prefix``); the API path is appended.

What is sent: one PostableAlert per siem alert (not per notification: Alertmanager does its own grouping,
silencing, inhibition and throttling, so a route's grouping and rate limit do not apply to it)::

    labels       alertname=<rule id>, severity, rule_id, siem="siem", one label per `by` key field
                 (source.ip -> source_ip; names sanitised to [a-zA-Z_][a-zA-Z0-9_]*)
    annotations  summary (title and key), description (the message), sample (a raw log line), first_event,
                 last_event, events, alert_id, tags, runbook_url, references (the rule's, then the ATT&CK
                 page of each technique tag)
    startsAt     event time of the first contributing event
    endsAt       min(now + resolve_timeout, raised + firing_for), computed at every POST
    generatorURL the rendered link_template, when there is one

Client contract (as Prometheus does it): Alertmanager keeps alerts in memory only, so an alert is POSTed
again every ``resend_interval`` while it fires, each time with endsAt pushed forward; when siem stops
re-sending (it stopped, or the alert's ``firing_for`` is over) Alertmanager resolves it at endsAt. The
outbox row of an alert stays pending between resends (``done_ms`` records the first delivery); a resend
that keeps failing is dropped quietly after max_retry_age, since Alertmanager already had the alert.

Heartbeat: a heartbeat route with an alertmanager:// destination gets an always-firing ``SiemHeartbeat``
alert (labels alertname, severity="none", siem, instance), POSTed once per heartbeat interval with endsAt two
intervals ahead, like Prometheus' Watchdog: route it in Alertmanager to a dead-man service.

Failures: connection errors, timeouts and 5xx/429 are transient (retried with the outbox's back-off, so an
alert raised while Alertmanager is down arrives when it is back); other 4xx mean Alertmanager rejected the
payload and are permanent (dead-lettered to the fallback route).
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import orjson

from siem.alert.notify import SendResult
from siem.alert.record import Alert
from siem.alert.render import neutralise, raw_line, references_of
from siem.timeutil import iso_ms

SCHEMES = frozenset({"alertmanager", "alertmanagers"})
KIND = "alertmanager"
_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_RESERVED = frozenset({"alertname", "severity", "rule_id", "siem"})


def is_alertmanager(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES if "://" in url else False


def check_url(url: str) -> str | None:
    """What is wrong with an alertmanager:// URL (never echoing it: it may carry a password), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid alertmanager URL (use alertmanager://HOST:PORT[/PATH])"
    if not parts.hostname:
        return "alertmanager URL without a host (use alertmanager://HOST:PORT[/PATH])"
    if parts.query or parts.fragment:
        return "alertmanager URL takes no query or fragment (settings are in [alerting.alertmanager])"
    del port
    return None


def _endpoint(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    scheme = "https" if parts.scheme.lower() == "alertmanagers" else "http"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    headers = {"Content-Type": "application/json", "User-Agent": "siem"}
    if parts.username is not None:
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}/api/v2/alerts", headers


def redact(url: str) -> str:
    parts = urlsplit(url)
    auth = "***@" if parts.username is not None else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{auth}{parts.hostname}{port}{parts.path}"


def label_name(field: str) -> str:
    name = _LABEL.sub("_", field)
    if not name or name[0].isdigit():
        name = "_" + name
    return name if name not in _RESERVED else f"key_{name}"


def alert_document(alert: Alert, raised_ms: int, *, runbook: str, references: tuple[str, ...], link: str,
                   field_max: int) -> dict[str, object]:
    """What the outbox row keeps: the PostableAlert without endsAt, plus when siem raised the alert."""
    labels = {"alertname": alert.rule_id, "severity": alert.severity, "rule_id": alert.rule_id, "siem": "siem"}
    for k, v in alert.group:
        labels[label_name(k)] = neutralise(v, 1024, single_line=True)
    key = ", ".join(f"{k}={v}" for k, v in alert.group)
    annotations = {
        "summary": neutralise(f"{alert.title} ({key})" if key else alert.title, field_max, single_line=True),
        "description": neutralise(alert.message, field_max),
        "first_event": iso_ms(alert.first_ms),
        "last_event": iso_ms(alert.last_ms),
        "events": str(alert.count),
        "alert_id": alert.id,
    }
    sample = next((line for e in alert.events if (line := raw_line(e))), "")
    if sample:
        annotations["sample"] = neutralise(sample, field_max)
    if alert.tags:
        annotations["tags"] = ", ".join(alert.tags)
    if runbook:
        annotations["runbook_url"] = runbook
    refs = references_of(references, alert.tags)
    if refs:
        annotations["references"] = "\n".join(refs)
    doc: dict[str, object] = {"labels": labels, "annotations": annotations, "startsAt": iso_ms(alert.first_ms),
                              "raised_ms": raised_ms}
    if link:
        doc["generatorURL"] = link
    return doc


def payload(stored: str, now_ms: int, resolve_timeout_ms: int, firing_for_ms: int) -> tuple[bytes, bool]:
    """(JSON body to POST, whether this is the last POST: the alert stops firing by its endsAt)."""
    doc: dict[str, object] = orjson.loads(stored)
    raised = int(doc.pop("raised_ms"))  # type: ignore[call-overload]
    fixed = doc.pop("ends_after_ms", None)
    if isinstance(fixed, int):  # the heartbeat: one POST, endsAt fixed (the next heartbeat renews it)
        doc["endsAt"] = iso_ms(raised + fixed)
        return orjson.dumps([doc]), True
    until = raised + firing_for_ms
    ends = min(now_ms + resolve_timeout_ms, until)
    doc["endsAt"] = iso_ms(max(ends, now_ms))
    return orjson.dumps([doc]), ends >= until


def post(url: str, body: bytes, timeout_ms: int) -> SendResult:
    """POST one body to an Alertmanager. Blocking (run it in a thread); never raises; errors omit the URL."""
    endpoint, headers = _endpoint(url)
    req = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_ms / 1000) as resp:
            resp.read(4096)
            return SendResult(True, False, "")
    except urllib.error.HTTPError as exc:
        text = neutralise(exc.read(300).decode("utf-8", "replace"), 200, single_line=True)
        transient = exc.code >= 500 or exc.code in (408, 429)
        return SendResult(False, not transient, f"Alertmanager answered HTTP {exc.code}: {text}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return SendResult(False, False, f"Alertmanager unreachable: {neutralise(str(reason), 200, single_line=True)}")


def annotations_of(stored: str) -> Mapping[str, object]:
    doc = orjson.loads(stored)
    return doc.get("annotations", {}) if isinstance(doc, dict) else {}
