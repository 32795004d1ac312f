"""The pySigma backend: each Sigma detection feature converts to a DSL rule that the engine runs with
Sigma's meaning (checked by running events through the real engine, not by comparing text)."""

from __future__ import annotations

import textwrap

import pytest
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError

from siem.dsl import ast
from siem.dsl.grammar import expr as EXPR
from siem.dsl.loader import load_texts
from siem.dsl.printer import render_expr
from siem.engine.runtime import Engine
from siem.sigma.backend import SiemBackend
from siem.sigma.pipelines import pipeline

T0 = 1_704_067_200_000


def convert(detection: str, logsource: str = "product: aws\n  service: cloudtrail") -> str:
    text = textwrap.dedent("""\
        title: t
        id: 00000000-0000-0000-0000-000000000001
        status: test
        logsource:
          {logsource}
        detection:
        {detection}
        level: high
        """).format(logsource=logsource, detection=textwrap.indent(textwrap.dedent(detection), "  "))
    [query] = SiemBackend(pipeline("siem")).convert(SigmaCollection.from_yaml(text))
    return query


def fires(when: str, event: dict[str, object]) -> bool:
    """Whether a rule `when <when>` fires on `event` in the real engine."""
    rules = load_texts({"t.rules": f"rule t {{\n  when {when}\n}}\n"})
    engine = Engine(rules, lateness_ms=0, future_skew_ms=None)
    ev = {"@timestamp": T0, "event.original": "", **event}
    return bool(engine.process([ev]) + engine.flush())


CT = {"event.dataset": "aws.cloudtrail"}


def test_plain_value_is_case_insensitive_equality() -> None:
    """A plain Sigma value matches the whole field, ignoring case."""
    q = convert("sel:\n  eventName: StopLogging\ncondition: sel")
    assert fires(q, {**CT, "event.action": "stoplogging"})
    assert not fires(q, {**CT, "event.action": "StopLoggingX"})


def test_logsource_condition_is_added() -> None:
    """A CloudTrail rule never matches an event of another dataset."""
    q = convert("sel:\n  eventName: StopLogging\ncondition: sel")
    assert not fires(q, {"event.dataset": "sshd", "event.action": "StopLogging"})


@pytest.mark.parametrize(
    ("modifier", "value", "hit", "miss"),
    [
        ("contains", "Trail", "StopTrailLogging", "StopLogging"),
        ("startswith", "Stop", "StopLogging", "NoStopLogging"),
        ("endswith", "Logging", "StartLogging", "LoggingStart"),
        ("contains|cased", "Trail", "DeleteTrail", "Deletetrail"),
        ("re", "^Stop(Logging|Trail)$", "StopTrail", "StopTrails"),
        ("re|i", "^stop", "StopTrail", "NoStop"),
    ],
)
def test_string_modifiers(modifier: str, value: str, hit: str, miss: str) -> None:
    """contains / startswith / endswith / cased / re keep their Sigma meaning."""
    q = convert(f"sel:\n  eventName|{modifier}: '{value}'\ncondition: sel")
    assert fires(q, {**CT, "event.action": hit})
    assert not fires(q, {**CT, "event.action": miss})


def test_wildcards_in_the_middle_become_an_anchored_regex() -> None:
    """`*` and `?` inside a value match any run / any one character, over the whole value."""
    q = convert("sel:\n  eventName: 'Put*Pol?cy'\ncondition: sel")
    assert fires(q, {**CT, "event.action": "PutBucketPolicy"})
    assert fires(q, {**CT, "event.action": "putbucketpolacy"})
    assert not fires(q, {**CT, "event.action": "PutBucketPolicyX"})


def test_escaped_wildcard_is_a_literal_character() -> None:
    """`\\*` is a star, not a wildcard."""
    q = convert("sel:\n  userAgent: 'a\\*b'\ncondition: sel")
    assert fires(q, {**CT, "user_agent.original": "a*b"})
    assert not fires(q, {**CT, "user_agent.original": "axxb"})


def test_all_modifier_needs_every_value() -> None:
    """`|contains|all` requires all needles."""
    q = convert("sel:\n  userAgent|contains|all: [curl, '7.']\ncondition: sel")
    assert fires(q, {**CT, "user_agent.original": "curl/7.88"})
    assert not fires(q, {**CT, "user_agent.original": "curl/8.1"})


def test_null_and_exists() -> None:
    """`field: null` is a missing field; `|exists: true` a present one."""
    q = convert("sel:\n  errorCode: null\ncondition: sel")
    assert fires(q, CT)
    assert not fires(q, {**CT, "aws.cloudtrail.error_code": "AccessDenied"})
    q = convert("sel:\n  errorCode|exists: true\ncondition: sel")
    assert fires(q, {**CT, "aws.cloudtrail.error_code": "AccessDenied"})
    assert not fires(q, CT)


def test_cidr_modifier() -> None:
    """`|cidr` tests the address against the network."""
    q = convert("sel:\n  sourceIPAddress|cidr: 10.0.0.0/8\ncondition: sel")
    assert fires(q, {**CT, "source.ip": "10.1.2.3"})
    assert not fires(q, {**CT, "source.ip": "192.0.2.1"})


def test_non_address_source_value_tests_the_text_field() -> None:
    """sourceIPAddress values that are service names are in source.address, as the parser puts them."""
    q = convert("sel:\n  sourceIPAddress: 'AWS Internal'\ncondition: sel")
    assert fires(q, {**CT, "source.address": "AWS Internal"})


def test_numeric_comparison_on_a_number_field() -> None:
    """`|gte` compares numbers on a number field."""
    q = convert("sel:\n  sc-status|gte: 500\ncondition: sel", "category: webserver")
    assert fires(q, {"event.dataset": "nginx.access", "http.response.status_code": 503})
    assert not fires(q, {"event.dataset": "nginx.access", "http.response.status_code": 404})


def test_fieldref_compares_two_fields() -> None:
    """`|fieldref` holds when both fields have the same value."""
    q = convert("sel:\n  userIdentity.arn|fieldref: userIdentity.principalId\ncondition: sel")
    same = {**CT, "aws.cloudtrail.user_identity.arn": "x", "aws.cloudtrail.user_identity.principal_id": "x"}
    assert fires(q, same)
    assert not fires(q, {**same, "aws.cloudtrail.user_identity.principal_id": "y"})


def test_fieldref_contains_tests_one_field_holding_the_other() -> None:
    """`|fieldref|contains` holds when the first field's value contains the second's."""
    q = convert("sel:\n  userAgent|fieldref|contains: userIdentity.userName\ncondition: sel")
    ev = {**CT, "user_agent.original": "aws-cli/2 bob-script", "aws.cloudtrail.user_identity.user_name": "Bob"}
    assert fires(q, ev)
    assert not fires(q, {**ev, "aws.cloudtrail.user_identity.user_name": "alice"})


def test_numeric_comparison_on_numbers_held_as_text() -> None:
    """`|lt` on a CloudTrail parameter compares numbers, not text ("30" is not below 8)."""
    q = convert("sel:\n  requestParameters.fromPort|lt: 8\ncondition: sel")
    assert fires(q, {**CT, "aws.cloudtrail.request_parameters.fromPort": "7"})
    assert not fires(q, {**CT, "aws.cloudtrail.request_parameters.fromPort": "30"})


def test_windash_expands_dash_variants() -> None:
    """`|windash` accepts -x and /x (and the Unicode dashes)."""
    q = convert("sel:\n  CommandLine|windash|contains: ' -e '\ncondition: sel", "product: linux\n  category: process_creation")
    proc = {"event.dataset": "auditd", "event.category": "process", "event.type": "start"}
    assert fires(q, {**proc, "process.command_line": "nc /e sh"})
    assert fires(q, {**proc, "process.command_line": "nc -e sh"})
    assert not fires(q, {**proc, "process.command_line": "nc sh"})


def test_base64offset_finds_the_encoded_needle_at_any_alignment() -> None:
    """`|base64offset|contains` matches the text base64-encoded at each of the 3 offsets."""
    import base64

    q = convert("sel:\n  CommandLine|base64offset|contains: 'curl '\ncondition: sel",
                "product: linux\n  category: process_creation")
    proc = {"event.dataset": "auditd", "event.category": "process", "event.type": "start"}
    for prefix in ("", "a", "ab"):
        encoded = base64.b64encode((prefix + "curl http://x").encode()).decode()
        assert fires(q, {**proc, "process.command_line": f"echo {encoded} | base64 -d | sh"}), prefix
    assert not fires(q, {**proc, "process.command_line": "echo aGVsbG8= | base64 -d"})


def test_keywords_search_the_message() -> None:
    """Keywords on a syslog logsource are a case-insensitive substring search of the message."""
    q = convert("keywords:\n  - 'Accepted publickey'\ncondition: keywords", "product: linux\n  service: sshd")
    assert fires(q, {"event.dataset": "sshd", "message": "accepted publickey for root from 10.0.0.1"})
    assert not fires(q, {"event.dataset": "sshd", "message": "Failed password for root"})


def test_condition_grammar_one_of_all_of_and_filters() -> None:
    """`1 of sel*`, `all of`, `them` and `not filter` follow Sigma's condition grammar."""
    det = """\
        sel_a:
          eventName: A
        sel_b:
          eventName: B
        filter_main:
          errorCode: AccessDenied
        condition: 1 of sel_* and not 1 of filter_*
        """
    q = convert(det)
    assert fires(q, {**CT, "event.action": "B"})
    assert not fires(q, {**CT, "event.action": "B", "aws.cloudtrail.error_code": "AccessDenied"})
    assert not fires(q, {**CT, "event.action": "C"})
    q = convert("s1:\n  eventName|contains: Put\ns2:\n  eventName|contains: Policy\ncondition: all of them")
    assert fires(q, {**CT, "event.action": "PutBucketPolicy"})
    assert not fires(q, {**CT, "event.action": "PutBucketAcl"})


@pytest.mark.parametrize(
    ("detection", "logsource", "reason"),
    [
        # pySigma 1.x parses regexes with Python's re and our backend refuses it for RE2; pySigma 2.x already
        # validates with RE2 ("invalid perl operator: (?!")
        ("sel:\n  eventName|re: '^(?!Get)'\ncondition: sel", "product: aws\n  service: cloudtrail", "RE2|perl operator"),
        ("sel:\n  NoSuchField: x\ncondition: sel", "product: linux\n  service: sshd", "'NoSuchField'"),
        ("sel:\n  EventID: 4624\ncondition: sel", "product: windows\n  service: security", "not ingested"),
        ("sel:\n  sourceIPAddress|gt: 5\ncondition: sel", "product: aws\n  service: cloudtrail", "not a number"),
    ],
)
def test_what_cannot_be_converted_says_why(detection: str, logsource: str, reason: str) -> None:
    """Lookaround regexes, unmapped fields, unknown logsources and impossible comparisons are refused with the reason."""
    with pytest.raises(SigmaError, match=reason if reason.startswith("'") else f"(?i){reason}"):
        convert(detection, logsource)


@pytest.mark.parametrize(
    "text",
    [
        'a == "x\\"y\\\\z" and not (b i== "q" or c icontains ["1", "2"])',
        "source.ip in cidr(\"10.0.0.0/8\") or url.path matches /a\\/b[0-9]+/i",
        "`odd field-name` exists and http.response.status_code >= 500",
        "a icontains field(b) and not c == field(d)",
        "x == \"1\" and any aws.cloudtrail.request_parameters.items { y in cidr(\"0.0.0.0/0\") or not z == 3 }",
    ],
)
def test_printer_round_trip(text: str) -> None:
    """Rendering an expression and parsing it back gives the same expression."""
    node = EXPR.parse_string(text, parse_all=True)[0]
    again = EXPR.parse_string(render_expr(node), parse_all=True)[0]
    assert again == node
    assert isinstance(node, (ast.And, ast.Or))
