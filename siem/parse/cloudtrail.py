"""AWS CloudTrail records to ECS events; every field kept.

Mapped: ``@timestamp`` (eventTime, or a Logstash ``@timestamp`` when eventTime is absent), ``event.action`` (eventName), ``event.provider`` (eventSource),
``event.outcome`` (failure when errorCode is set or the console login failed, else success),
``event.id`` (eventID), ``source.ip`` (sourceIPAddress when it is an IP) else ``source.address``
(e.g. "signin.amazonaws.com"), ``user.name`` (userIdentity.userName, "root" for type Root, else the
last path part of the ARN: the role session name for AssumedRole), ``user.id`` (principalId),
``user_agent.original``, ``cloud.provider`` "aws", ``cloud.account.id`` (userIdentity.accountId or
recipientAccountId), ``cloud.region`` (awsRegion), ``tls.version`` / ``tls.cipher`` (tlsDetails),
``aws.cloudtrail.*``: user_identity.* (snake_case; sessionContext.attributes.X as
session_context.x), error_code, error_message, event_type, event_version, request_id,
recipient_account_id, mfa_used (additionalEventData.MFAUsed), console_login.result.

Records reshaped by Datadog's forwarder carry the source address in ``network.client.ip`` and the
user agent in ``http.useragent`` instead of sourceIPAddress / userAgent: those fill ``source.ip`` and
``user_agent.original`` when the CloudTrail keys are absent (the originals stay under aws.cloudtrail.).

Kept: requestParameters / responseElements / additionalEventData / serviceEventData / resources as
``aws.cloudtrail.request_parameters.<key.path>``, ``.response_elements.``, ``.additional_eventdata.``,
``.service_event_details.``, ``.resources.`` with the original key names; every other top-level key
as ``aws.cloudtrail.<snake_case key>[.<key.path>]``. All flattened values are keyword strings
(numbers in decimal, booleans true/false); lists are flattened without indices, several values at
one path joined with ", ". Caps: 500 keys per record, 8 KiB per value, depth 32 (deeper parts kept
as JSON text), each cut noted in ``error.message``.
"""

from __future__ import annotations

import re
from typing import Final

import orjson

from siem.parse import timestamps as ts
from siem.parse.base import ParseContext, clip, error_event, ip_or_none, note, now_ms
from siem.parse.jsonfmt import MAX_VALUE_CHARS, Flattener, JSONError, loads_exact, scalar_text
from siem.schema import Event

DATASET: Final = "aws.cloudtrail"
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_snake_cache: dict[str, str] = {}


def snake(name: str) -> str:
    """camelCase -> camel_case (``accessKeyId`` -> ``access_key_id``, ``requestID`` -> ``request_id``)."""
    got = _snake_cache.get(name)
    if got is None:
        got = _CAMEL.sub("_", name).lower()
        if len(_snake_cache) < 10_000:
            _snake_cache[name] = got
    return got


# top-level keys flattened with their original sub-key names
_BAGS: Final = {
    "requestParameters": "aws.cloudtrail.request_parameters",
    "responseElements": "aws.cloudtrail.response_elements",
    "additionalEventData": "aws.cloudtrail.additional_eventdata",
    "serviceEventData": "aws.cloudtrail.service_event_details",
    "resources": "aws.cloudtrail.resources",
}
# top-level scalars with a fixed destination
_SCALARS: Final = {
    "eventSource": "event.provider",
    "eventName": "event.action",
    "eventID": "event.id",
    "awsRegion": "cloud.region",
    "userAgent": "user_agent.original",
    "errorCode": "aws.cloudtrail.error_code",
    "errorMessage": "aws.cloudtrail.error_message",
    "eventType": "aws.cloudtrail.event_type",
    "eventVersion": "aws.cloudtrail.event_version",
    "requestID": "aws.cloudtrail.request_id",
    "recipientAccountId": "aws.cloudtrail.recipient_account_id",
}


def _text(v: object) -> str | None:
    if v is None or isinstance(v, (dict, list)):
        return None
    s = scalar_text(v)
    return s if len(s) <= MAX_VALUE_CHARS else s[:MAX_VALUE_CHARS]


def _user_identity(ev: Event, ui: object, fl: Flattener) -> None:
    if not isinstance(ui, dict):
        if ui is not None:
            note(ev, f"userIdentity is a {type(ui).__name__}, not an object")
            fl.add("aws.cloudtrail.user_identity", ui)
        return
    for k, v in ui.items():
        key = snake(k) if isinstance(k, str) else str(k)
        if key == "session_context" and isinstance(v, dict):
            for sk, sv in v.items():
                if sk == "attributes" and isinstance(sv, dict):
                    for ak, av in sv.items():
                        fl.add(f"aws.cloudtrail.user_identity.session_context.{snake(ak)}", av)
                else:
                    fl.add(f"aws.cloudtrail.user_identity.session_context.{snake(sk)}", _snake_keys(sv))
        else:
            fl.add(f"aws.cloudtrail.user_identity.{key}", _snake_keys(v))
    kind = _text(ui.get("type"))
    name = _text(ui.get("userName"))
    arn = _text(ui.get("arn"))
    if name:
        ev["user.name"] = name
    elif kind == "Root":
        ev["user.name"] = "root"
    elif arn:
        tail = arn.rsplit("/", 1)[-1] if "/" in arn else arn.rsplit(":", 1)[-1]
        if tail:
            ev["user.name"] = tail
    principal = _text(ui.get("principalId"))
    if principal:
        ev["user.id"] = principal
    account = _text(ui.get("accountId"))
    if account:
        ev["cloud.account.id"] = account


def _snake_keys(v: object, depth: int = 0) -> object:
    """Snake-case the keys of a userIdentity sub-object (bounded depth)."""
    if isinstance(v, dict) and depth < 8:
        return {snake(k) if isinstance(k, str) else str(k): _snake_keys(x, depth + 1) for k, x in v.items()}
    return v


def cloudtrail_event(rec: dict[str, object], original: str, ctx: ParseContext) -> Event:
    """The event for one CloudTrail record (a dict)."""
    ev: Event = {"@timestamp": 0, "event.original": original, "event.dataset": DATASET, "cloud.provider": "aws"}
    fl = Flattener(stringify=True)
    when = rec.get("eventTime")
    if when is None:
        when = rec.get("@timestamp")  # Logstash-shaped exports replace eventTime with @timestamp
    stamp: int | str
    if isinstance(when, str):
        stamp = ts.iso_ms(when, ctx.tz)
    else:
        stamp = "missing eventTime" if when is None else f"eventTime is a {type(when).__name__}"
    if type(stamp) is int:
        ev["@timestamp"] = stamp
    else:
        ev["@timestamp"] = now_ms(ctx)
        note(ev, f"invalid timestamp: {stamp}; reference time used")
    for key, value in rec.items():
        if not isinstance(key, str):
            key = str(key)
        dest = _SCALARS.get(key)
        if dest is not None:
            s = _text(value)
            if s is not None:
                ev[dest] = s
            elif value is not None:
                note(ev, f"{clip(key, 40)} is a {type(value).__name__}, not a scalar")
                fl.add(f"aws.cloudtrail.{snake(key)}", value)
            continue
        bag = _BAGS.get(key)
        if bag is not None:
            if value is not None and not isinstance(value, (dict, list)):
                note(ev, f"{key} is a {type(value).__name__}, not an object")
            fl.add(bag, value)
            continue
        if key == "eventTime":
            continue
        if key == "userIdentity":
            _user_identity(ev, value, fl)
        elif key == "sourceIPAddress":
            s = _text(value)
            if s:
                ip = ip_or_none(s)
                if ip is not None:
                    ev["source.ip"] = ip
                else:
                    ev["source.address"] = s
        elif key == "tlsDetails" and isinstance(value, dict):
            v = _text(value.get("tlsVersion"))
            if v:
                ev["tls.version"] = v
            c = _text(value.get("cipherSuite"))
            if c:
                ev["tls.cipher"] = c
            fl.add("aws.cloudtrail.tls_details", value)
        else:
            fl.add(f"aws.cloudtrail.{snake(key)}", value)
    fl.into(ev)
    if "source.ip" not in ev and "source.address" not in ev:  # reshaped by a forwarder (Datadog)
        client = ev.get("aws.cloudtrail.network.client.ip")
        ip = ip_or_none(client) if isinstance(client, str) else None
        if ip is not None:
            ev["source.ip"] = ip
    if "user_agent.original" not in ev:
        ua = ev.get("aws.cloudtrail.http.useragent")
        if isinstance(ua, str) and ua:
            ev["user_agent.original"] = ua
    if "cloud.account.id" not in ev:
        acct = ev.get("aws.cloudtrail.recipient_account_id")
        if acct:
            ev["cloud.account.id"] = acct
    extra = rec.get("additionalEventData")
    if isinstance(extra, dict):
        mfa = _text(extra.get("MFAUsed"))
        if mfa is not None:
            ev["aws.cloudtrail.mfa_used"] = mfa
    login = None
    resp = rec.get("responseElements")
    if isinstance(resp, dict):
        login = _text(resp.get("ConsoleLogin"))
        if login is not None:
            ev["aws.cloudtrail.console_login.result"] = login
    failed = bool(ev.get("aws.cloudtrail.error_code")) or login == "Failure"
    ev["event.outcome"] = "failure" if failed else "success"
    return ev


def _original_of(rec: object) -> str:
    try:
        return orjson.dumps(rec).decode()
    except (orjson.JSONEncodeError, TypeError):
        return clip(repr(rec), 65536)


def parse_cloudtrail_record(rec: object, ctx: ParseContext) -> Event:
    """One element of a CloudTrail file's ``Records`` list (already parsed JSON). Never raises.

    ``event.original`` is the record re-serialised as compact JSON.
    """
    original = _original_of(rec)
    if not isinstance(rec, dict):
        return error_event(original, DATASET, f"CloudTrail record is a {type(rec).__name__}, not an object", ctx)
    try:
        return cloudtrail_event(rec, original, ctx)
    except Exception as e:  # noqa: BLE001 - the contract is "never raises"; the failure is in the event
        return error_event(original, DATASET, f"cloudtrail parser failed: {type(e).__name__}: {clip(str(e))}", ctx)


def parse_cloudtrail(text: str, ctx: ParseContext) -> Event:
    """One CloudTrail record as a JSON object per line (EventBridge, Kafka).

    An EventBridge envelope (``{"detail-type": ..., "detail": {record}}``) is unwrapped.

    A ``{"Records": [...]}`` file is not a record: it is refused here (the CloudTrail file collector
    splits files and calls parse_cloudtrail_record per element).
    """
    try:
        obj = loads_exact(text)
    except JSONError as e:
        return error_event(text, DATASET, str(e), ctx)
    if not isinstance(obj, dict):
        return error_event(text, DATASET, f"JSON value is a {type(obj).__name__}, not an object", ctx)
    detail = obj.get("detail")
    if "detail-type" in obj and isinstance(detail, dict) and "eventName" in detail:
        obj = detail  # an EventBridge envelope around the CloudTrail record
    if "Records" in obj and "eventName" not in obj:
        return error_event(text, DATASET, "a CloudTrail file ({\"Records\": [...]}), not one record; "
                                          "use the cloudtrail file input", ctx)
    return cloudtrail_event(obj, text, ctx)
