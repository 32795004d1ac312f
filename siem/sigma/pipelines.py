"""Processing pipelines: Sigma logsources and field names to siem's event schema (ECS names).

One table, LOGSOURCES, says for each Sigma logsource we ingest which events it means (a condition
on fields our parsers set) and where its keywords are searched; FIELD_MAPS says how its field names
map. The pipelines are built from the table:

========================  ==========================================================================
``siem``                  every logsource below (what ``siem sigma import`` uses)
``siem_linux``            product linux: services auth, sshd, sudo, cron, syslog, vsftpd, clamav,
                          guacamole, and linux without a service (any syslog program)
``siem_auditd``           service auditd; categories process_creation, file_event, network_connection
``siem_cloudtrail``       product aws, service cloudtrail
``siem_web``              categories webserver and proxy; services apache and nginx
========================  ==========================================================================

A rule whose logsource none of a pipeline's entries claims fails with "logsource ... is not
ingested", so nothing converts into a rule that could never see an event.

Linux audit events (from the auditd intake) are ``event.dataset "auditd"``; the Sysmon-style
categories are the joined audit records of one event: process_creation is ``event.category
"process"`` + ``event.type "start"`` (EXECVE), file_event ``event.category "file"`` (PATH),
network_connection ``event.category "network"`` (connect/accept). Raw audit record fields keep
their names under ``auditd.data.`` (``a0`` -> ``auditd.data.a0``), the record type is
``auditd.record_type`` (siem.parse.auditd: the record that says what happened, e.g. SYSCALL for an execve), the syscall ``auditd.syscall``, the rule key ``auditd.key``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from sigma.correlations import SigmaCorrelationRule
from sigma.processing.conditions import IncludeFieldCondition, RuleProcessingCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddConditionTransformation,
    DropDetectionItemTransformation,
    FieldFunctionTransformation,
    RuleFailureTransformation,
    SetStateTransformation,
    ValueListPlaceholderTransformation,
)
from sigma.rule import SigmaRule

KEYWORD_FIELD_STATE = "keyword_field"  # the pipeline state naming the field Sigma keywords search (backend)


@dataclass(frozen=True, slots=True)
class Logsource:
    """One Sigma logsource we ingest: which events it means and where its keywords are searched."""

    pipeline: str  # siem_linux, siem_auditd, ...
    product: str | None
    service: str | None
    category: str | None
    condition: tuple[tuple[str, str | tuple[str, ...]], ...]  # field: value (a tuple: any of them)
    fields: str  # key of FIELD_MAPS
    keyword_field: str = "event.original"

    @property
    def label(self) -> str:
        return "/".join(f"{k}:{v}" for k, v in (("product", self.product), ("service", self.service),
                                                ("category", self.category)) if v)


_AUTH_DATASETS = ("sshd", "sudo", "su", "pam", "systemd-logind", "useradd", "userdel", "usermod", "groupadd",
                  "groupdel", "groupmod", "passwd", "chpasswd", "chage", "gpasswd", "login")
_WEB_DATASETS = ("nginx.access", "apache.access")

LOGSOURCES: tuple[Logsource, ...] = (
    Logsource("siem_linux", "linux", "auth", None, (("event.dataset", _AUTH_DATASETS),), "linux", "message"),
    Logsource("siem_linux", "linux", "sshd", None, (("event.dataset", "sshd"),), "linux", "message"),
    Logsource("siem_linux", "linux", "sudo", None, (("event.dataset", "sudo"),), "linux", "message"),
    Logsource("siem_linux", "linux", "cron", None, (("process.name", ("cron", "crond", "anacron")),), "linux", "message"),
    Logsource("siem_linux", "linux", "syslog", None, (("process.name", "*"),), "linux", "message"),
    Logsource("siem_linux", "linux", "vsftpd", None, (("process.name", "vsftpd"),), "linux", "message"),
    Logsource("siem_linux", "linux", "clamav", None,
              (("process.name", ("clamd", "freshclam", "clamscan", "clamav-milter", "clamonacc")),), "linux", "message"),
    Logsource("siem_linux", "linux", "guacamole", None, (("process.name", ("guacd", "guacamole")),), "linux", "message"),
    Logsource("siem_linux", "linux", None, None, (("process.name", "*"),), "linux", "message"),
    Logsource("siem_auditd", "linux", "auditd", None, (("event.dataset", "auditd"),), "auditd"),
    Logsource("siem_auditd", "linux", None, "process_creation",
              (("event.dataset", "auditd"), ("event.category", "process"), ("event.type", "start")), "process"),
    Logsource("siem_auditd", "linux", None, "file_event",
              (("event.dataset", "auditd"), ("event.category", "file")), "process"),
    Logsource("siem_auditd", "linux", None, "network_connection",
              (("event.dataset", "auditd"), ("event.category", "network")), "process"),
    Logsource("siem_cloudtrail", "aws", "cloudtrail", None, (("event.dataset", "aws.cloudtrail"),), "cloudtrail"),
    Logsource("siem_web", None, None, "webserver", (("event.dataset", _WEB_DATASETS),), "web"),
    Logsource("siem_web", None, None, "proxy", (("event.dataset", _WEB_DATASETS),), "web"),
    Logsource("siem_web", None, "apache", None, (("event.dataset", "apache.access"),), "web"),
    Logsource("siem_web", None, "nginx", None, (("event.dataset", "nginx.access"),), "web"),
)

# Sigma field name -> ECS name, per kind of log. Names not listed fail the conversion (the backend
# refuses fields the schema does not know), except where a function below maps a whole family.
FIELD_MAPS: dict[str, dict[str, str]] = {
    "linux": {
        "pam_message": "message",
        "pam_user": "user.name",
        "pam_rhost": "source.ip",
    },
    "auditd": {
        "type": "auditd.record_type",
        "key": "auditd.key",
        "exe": "process.executable",
        "comm": "process.name",
        "cwd": "process.working_directory",
        "name": "file.path",
        "pid": "process.pid",
        "ppid": "process.parent.pid",
        "uid": "user.id",
        "auid": "auditd.data.auid",
        "euid": "user.effective.id",
        "SYSCALL": "auditd.syscall",
        "syscall": "auditd.syscall",
    },
    "process": {
        "Image": "process.executable",
        "CommandLine": "process.command_line",
        "ParentImage": "process.parent.executable",
        "ParentCommandLine": "process.parent.command_line",
        "CurrentDirectory": "process.working_directory",
        "User": "user.name",
        "LogonId": "auditd.session",
        "ProcessId": "process.pid",
        "ParentProcessId": "process.parent.pid",
        "TargetFilename": "file.path",
        "DestinationIp": "destination.ip",
        "DestinationPort": "destination.port",
        "DestinationHostname": "destination.domain",
        "SourceIp": "source.ip",
        "SourcePort": "source.port",
    },
    "cloudtrail": {
        "eventName": "event.action",
        "eventSource": "event.provider",
        "eventID": "event.id",
        "awsRegion": "cloud.region",
        "sourceIPAddress": "source.ip",
        "userAgent": "user_agent.original",
        "errorCode": "aws.cloudtrail.error_code",
        "errorMessage": "aws.cloudtrail.error_message",
        "eventType": "aws.cloudtrail.event_type",
        "recipientAccountId": "aws.cloudtrail.recipient_account_id",
        "additionalEventData.MFAUsed": "aws.cloudtrail.mfa_used",
        "responseElements.ConsoleLogin": "aws.cloudtrail.console_login.result",
        # the whole bag: its flattened keys are searched through the raw record
        "requestParameters": "event.original",
        "responseElements": "event.original",
    },
    "web": {
        "c-ip": "source.ip",
        "cs-method": "http.request.method",
        "cs-uri-query": "url.query",
        "c-uri-query": "url.query",
        "cs-uri-stem": "url.path",
        "c-uri-stem": "url.path",
        "cs-uri": "url.original",
        "c-uri": "url.original",
        "cs-host": "url.domain",
        "sc-status": "http.response.status_code",
        "cs-user-agent": "user_agent.original",
        "c-useragent": "user_agent.original",
        "cs-referer": "http.request.referrer",
        "cs-referrer": "http.request.referrer",
        "cs-username": "user.name",
        "cs-version": "http.version",
        "dst_ip": "destination.ip",
        "sc-bytes": "http.response.body.bytes",
    },
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_CT_BAGS = {
    "requestParameters": "aws.cloudtrail.request_parameters",
    "responseElements": "aws.cloudtrail.response_elements",
    "additionalEventData": "aws.cloudtrail.additional_eventdata",
    "serviceEventDetails": "aws.cloudtrail.service_event_details",
    "resources": "aws.cloudtrail.resources",
}


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def cloudtrail_field(name: str | None) -> str:
    """CloudTrail record paths as siem.parse.cloudtrail flattens them: request/response bags keep
    their key names, userIdentity and other top-level keys are snake_cased."""
    if name is None:
        return name  # type: ignore[return-value]
    head, _, rest = name.partition(".")
    if head in _CT_BAGS:
        return _CT_BAGS[head] + ("." + rest if rest else "")
    if head == "userIdentity":
        return "aws.cloudtrail.user_identity" + "".join("." + _snake(p) for p in rest.split(".") if p)
    return "aws.cloudtrail." + ".".join(_snake(p) for p in name.split("."))


def auditd_field(name: str | None) -> str:
    if name is None:
        return name  # type: ignore[return-value]
    return "auditd.data." + name.lower()


def _identity(name: str | None) -> str:
    return name  # type: ignore[return-value]


_FIELD_FUNCTIONS: dict[str, Callable[[str | None], str]] = {
    "cloudtrail": cloudtrail_field,
    "auditd": auditd_field,
}


def _claims(ls: Logsource, logsource: tuple[str | None, str | None, str | None]) -> bool:
    product, service, category = logsource
    return (ls.product, ls.service, ls.category) == (product, service, category)


def find_logsource(product: str | None, service: str | None, category: str | None,
                   entries: tuple[Logsource, ...] = LOGSOURCES) -> Logsource | None:
    """The entry for a rule's logsource: exact match on (product, service, category)."""
    for ls in entries:
        if _claims(ls, (product, service, category)):
            return ls
    return None


def pipeline(name: str = "siem", placeholders: dict[str, list[str]] | None = None) -> ProcessingPipeline:
    """The pipeline `name` (siem, siem_linux, siem_auditd, siem_cloudtrail, siem_web). `placeholders`
    fill Sigma's ``|expand`` placeholders (``%admin_users%`` -> any of the listed values); a rule with a
    placeholder not given here is refused, naming it."""
    entries = tuple(ls for ls in LOGSOURCES if name == "siem" or ls.pipeline == name)
    if not entries:
        raise ValueError(f"unknown pipeline {name!r}")
    items: list[ProcessingItem] = []
    if placeholders:
        items.append(ProcessingItem(
            identifier="siem_placeholders",
            transformation=ValueListPlaceholderTransformation(include=sorted(placeholders)),
        ))
    items += [
        ProcessingItem(
            identifier="siem_unsupported_logsource",
            transformation=RuleFailureTransformation(
                "logsource is not ingested by siem (see README, 'Sigma rules', for the logsources we read)"
            ),
            rule_condition_negation=True,
            rule_condition_linking=any,
            rule_conditions=[_exact(ls) for ls in entries],
        )
    ]
    for ls in entries:
        slug = ls.label.replace("/", "_").replace(":", "_")
        items.append(ProcessingItem(
            identifier=f"siem_keywords_{slug}",
            transformation=SetStateTransformation(KEYWORD_FIELD_STATE, ls.keyword_field),
            rule_conditions=[_exact(ls)],
        ))
        if ls.fields == "process":
            items.append(ProcessingItem(
                identifier=f"siem_drop_initiated_{slug}",
                transformation=DropDetectionItemTransformation(),
                field_name_conditions=[IncludeFieldCondition(fields=["Initiated"])],
                rule_conditions=[_exact(ls)],
            ))
        items.append(ProcessingItem(
            identifier=f"siem_fields_{slug}",
            transformation=FieldFunctionTransformation(
                mapping=FIELD_MAPS[ls.fields], transform_func=_FIELD_FUNCTIONS.get(ls.fields, _identity)
            ),
            rule_conditions=[_exact(ls)],
        ))
        items.append(ProcessingItem(
            identifier=f"siem_logsource_{slug}",
            transformation=AddConditionTransformation(
                {k: list(v) if isinstance(v, tuple) else v for k, v in ls.condition}, name="siem_logsource"
            ),
            rule_conditions=[_exact(ls)],
        ))
    return ProcessingPipeline(name=f"siem: Sigma logsources to siem events ({name})", priority=20, items=items,
                              vars=dict(placeholders or {}))


@dataclass
class LogsourceExact(RuleProcessingCondition):
    """Matches a rule whose logsource is exactly (product, service, category): pySigma's
    LogsourceCondition also matches a rule that names more than the condition (product linux alone
    would claim service auditd)."""

    product: str | None = None
    service: str | None = None
    category: str | None = None

    def match(self, rule: SigmaRule | SigmaCorrelationRule) -> bool:  # type: ignore[override]
        src = getattr(rule, "logsource", None)
        return src is not None and (src.product, src.service, src.category) == (self.product, self.service, self.category)


def _exact(ls: Logsource) -> LogsourceExact:
    return LogsourceExact(ls.product, ls.service, ls.category)


PIPELINES = {name: (lambda n=name: pipeline(n)) for name in
             ("siem", "siem_linux", "siem_auditd", "siem_cloudtrail", "siem_web")}


def map_field(ls: Logsource, name: str) -> str:
    """The event field a Sigma field name of logsource `ls` maps to (as the pipeline maps it)."""
    mapping = FIELD_MAPS[ls.fields]
    if name in mapping:
        return mapping[name]
    return _FIELD_FUNCTIONS.get(ls.fields, _identity)(name)
