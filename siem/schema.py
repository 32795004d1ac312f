"""The event schema: flat dicts keyed by Elastic Common Schema names.

An event is a plain ``dict[str, object]``. Conventions every parser follows:

* ``@timestamp``: event time as **int milliseconds since the epoch, UTC** (rendered ISO 8601 on output).
* strings are ``str`` (already decoded; invalid UTF-8 replaced), numbers of type ``long`` are ``int``,
  ``ip`` fields are the textual address (``"10.0.0.1"``, ``"2001:db8::1"``).
* ``event.original`` keeps the raw line; a line that could not be parsed still becomes an event with
  ``error.message`` set (and ``event.dataset`` naming the format that was tried).
* absent values are simply missing keys, never ``None``.

FIELDS below is what the rule compiler type-checks against. Fields under an OPEN_NAMESPACES prefix
(CloudTrail's free-form request parameters, labels) are accepted without being listed, as keywords.
"""

from __future__ import annotations

from typing import Final

Event = dict[str, object]

KEYWORD: Final = "keyword"
LONG: Final = "long"
IP: Final = "ip"
DATE: Final = "date"
BOOL: Final = "boolean"

FIELDS: Final[dict[str, str]] = {
    "@timestamp": DATE,
    "event.original": KEYWORD,
    "event.dataset": KEYWORD,
    "event.module": KEYWORD,
    "event.category": KEYWORD,
    "event.type": KEYWORD,
    "event.action": KEYWORD,
    "event.outcome": KEYWORD,
    "event.provider": KEYWORD,
    "event.reason": KEYWORD,
    "event.id": KEYWORD,
    "event.repeat_count": LONG,
    "event.kind": KEYWORD,
    "error.message": KEYWORD,
    "message": KEYWORD,
    "source.ip": IP,
    "source.port": LONG,
    "source.address": KEYWORD,
    "source.domain": KEYWORD,
    "destination.ip": IP,
    "destination.port": LONG,
    "source.geo.country_iso_code": KEYWORD,
    "source.geo.country_name": KEYWORD,
    "source.as.number": LONG,
    "source.as.organization.name": KEYWORD,
    "destination.geo.country_iso_code": KEYWORD,
    "destination.geo.country_name": KEYWORD,
    "destination.as.number": LONG,
    "destination.as.organization.name": KEYWORD,
    "network.type": KEYWORD,
    "user.name": KEYWORD,
    "user.id": KEYWORD,
    "user.target.name": KEYWORD,
    "user.effective.name": KEYWORD,
    "group.name": KEYWORD,
    "host.name": KEYWORD,
    "host.hostname": KEYWORD,
    "process.name": KEYWORD,
    "process.pid": LONG,
    "process.command_line": KEYWORD,
    "process.working_directory": KEYWORD,
    "process.executable": KEYWORD,
    "process.parent.name": KEYWORD,
    "process.parent.executable": KEYWORD,
    "process.parent.command_line": KEYWORD,
    "file.directory": KEYWORD,
    "destination.domain": KEYWORD,
    "process.parent.pid": LONG,
    "process.args": KEYWORD,
    "process.args_count": LONG,
    "process.title": KEYWORD,
    "process.user.id": KEYWORD,
    "process.user.name": KEYWORD,
    "user.effective.id": KEYWORD,
    "user.audit.id": KEYWORD,
    "user.audit.name": KEYWORD,
    "user.target.id": KEYWORD,
    "group.id": KEYWORD,
    "file.path": KEYWORD,
    "file.name": KEYWORD,
    "file.inode": KEYWORD,
    "file.mode": KEYWORD,
    "file.hash.md5": KEYWORD,
    "file.hash.sha1": KEYWORD,
    "file.hash.sha256": KEYWORD,
    "url.path": KEYWORD,
    "url.original": KEYWORD,
    "url.query": KEYWORD,
    "url.domain": KEYWORD,
    "http.request.method": KEYWORD,
    "http.request.referrer": KEYWORD,
    "http.version": KEYWORD,
    "http.response.status_code": LONG,
    "http.response.body.bytes": LONG,
    "user_agent.original": KEYWORD,
    "tls.version": KEYWORD,
    "tls.cipher": KEYWORD,
    "ssh.method": KEYWORD,
    "ssh.kex": KEYWORD,
    "ssh.cipher": KEYWORD,
    "ssh.protocol_version": KEYWORD,
    "ssh.mac": KEYWORD,
    "ssh.host_key_type": KEYWORD,
    "cloud.provider": KEYWORD,
    "cloud.account.id": KEYWORD,
    "cloud.region": KEYWORD,
    "cloud.service.name": KEYWORD,
    "log.syslog.facility.code": LONG,
    "log.syslog.facility.name": KEYWORD,
    "log.syslog.severity.code": LONG,
    "log.syslog.severity.name": KEYWORD,
    "log.syslog.priority": LONG,
    "log.syslog.appname": KEYWORD,
    "log.syslog.procid": KEYWORD,
    "log.syslog.msgid": KEYWORD,
    "log.syslog.version": KEYWORD,
    "log.syslog.hostname": KEYWORD,
    "log.file.path": KEYWORD,
    "log.level": KEYWORD,
    "input.type": KEYWORD,
    "observer.name": KEYWORD,
    "rule.id": KEYWORD,
    "rule.name": KEYWORD,
    "aws.cloudtrail.user_identity.type": KEYWORD,
    "aws.cloudtrail.user_identity.arn": KEYWORD,
    "aws.cloudtrail.user_identity.access_key_id": KEYWORD,
    "aws.cloudtrail.user_identity.session_context.mfa_authenticated": KEYWORD,
    "aws.cloudtrail.error_code": KEYWORD,
    "aws.cloudtrail.error_message": KEYWORD,
    "aws.cloudtrail.event_type": KEYWORD,
    "aws.cloudtrail.event_version": KEYWORD,
    "aws.cloudtrail.recipient_account_id": KEYWORD,
    "aws.cloudtrail.request_id": KEYWORD,
    "aws.cloudtrail.mfa_used": KEYWORD,
    "aws.cloudtrail.console_login.result": KEYWORD,
}

# Prefixes whose fields are free-form (flattened JSON) and typed as keywords.
OPEN_NAMESPACES: Final = ("aws.cloudtrail.", "auditd.", "siem.alert.", "labels.", "journald.", "sd.")


def field_type(name: str) -> str | None:
    """The declared type of a field, KEYWORD for open namespaces, None when unknown."""
    if name in FIELDS:
        return FIELDS[name]
    if name.startswith(OPEN_NAMESPACES):
        return KEYWORD
    return None


# ECS prefix -> the raw record key it was flattened from (siem.parse.cloudtrail)
LIST_SOURCES: dict[str, str] = {
    "aws.cloudtrail.request_parameters": "requestParameters",
    "aws.cloudtrail.response_elements": "responseElements",
    "aws.cloudtrail.additional_eventdata": "additionalEventData",
    "aws.cloudtrail.service_event_details": "serviceEventData",
    "aws.cloudtrail.resources": "resources",
}


def raw_path(path: str) -> list[str] | None:
    """The raw record path of an element-wise test's list, or None when no raw source holds it."""
    for prefix, raw in LIST_SOURCES.items():
        if path == prefix or path.startswith(prefix + "."):
            rest = path[len(prefix) + 1 :]
            return [raw, *([p for p in rest.split(".")] if rest else [])]
    return None


ALERT_DATASET = "siem.alert"  # event.dataset of alerts fed back to the engine (rules over alerts)
