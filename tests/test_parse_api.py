"""siem.parse.parse: decoding, line caps, newline stripping, error events, metrics, the registry."""

from __future__ import annotations

import pytest

from siem import metrics
from siem.parse import MAX_JSON_BYTES, MAX_LINE_BYTES, PARSERS, ParseContext, parse, parse_batch
from siem.schema import FIELDS, field_type

REF = 1_711_627_200_000
CTX = ParseContext(now_ms=REF)
SSHD = b"Mar 27 13:06:56 web1 sshd[7]: Invalid user admin from 1.2.3.4 port 22"


def test_registry_has_exactly_the_documented_formats() -> None:
    """PARSERS is the explicit registry the collectors and the config refer to."""
    assert sorted(PARSERS) == sorted(["syslog", "rfc3164", "rfc5424", "nginx", "apache", "access_json",
                                      "cloudtrail", "json", "journald", "auditd"])


def test_one_trailing_newline_is_stripped() -> None:
    """`\\n` and `\\r\\n` are removed once; a second one stays in the message."""
    assert parse("syslog", SSHD + b"\n", CTX)["event.original"] == SSHD.decode()
    assert parse("syslog", SSHD + b"\r\n", CTX)["event.original"] == SSHD.decode()
    assert parse("syslog", SSHD + b"\n\n", CTX)["event.original"] == SSHD.decode() + "\n"


def test_invalid_utf8_is_replaced_and_the_line_still_parsed() -> None:
    """Invalid bytes become U+FFFD; the sshd fields are still read."""
    ev = parse("syslog", b"Mar 27 13:06:56 web1 sshd[7]: Invalid user \xc3\x28dmin from 1.2.3.4 port 22", CTX)
    assert (ev["user.name"], ev["event.action"]) == ("\ufffd(dmin", "invalid_user")
    assert "error.message" not in ev


def test_overlong_text_line_is_cut_at_64_kib_and_noted() -> None:
    """A 100 KB syslog line: cut to 64 KiB, still parsed, error.message says so."""
    ev = parse("syslog", b"Mar 27 13:06:56 web1 sshd[7]: Received disconnect from 1.2.3.4 port 22:11: "
               + b"x" * 100_000, CTX)
    assert len(str(ev["event.original"])) == MAX_LINE_BYTES
    assert (ev["event.action"], ev["source.ip"]) == ("disconnect", "1.2.3.4")
    assert "truncated to 65536" in str(ev["error.message"])


def test_json_formats_allow_up_to_one_mib() -> None:
    """A 200 KB CloudTrail record is under the JSON cap and parses whole."""
    big = b'{"eventTime": "2024-03-27T13:06:56Z", "eventName": "PutBucketPolicy", "requestParameters": {"policy": "' \
          + b"p" * 200_000 + b'"}}'
    ev = parse("cloudtrail", big, CTX)
    assert ev["event.action"] == "PutBucketPolicy"
    assert "truncated" not in str(ev.get("error.message", ""))
    assert MAX_JSON_BYTES == 1024 * 1024


def test_unknown_format_is_an_error_event_counted_as_unknown() -> None:
    """An unknown format name: error event, counted under format="unknown"."""
    before = metrics.value("siem_events_failed_total", input="api-test", format="unknown")
    ev = parse("syslg", b"hello", CTX, "api-test")
    assert ev == {"@timestamp": REF, "event.original": "hello", "event.dataset": "syslg",
                  "error.message": "unknown format 'syslg'"}
    assert metrics.value("siem_events_failed_total", input="api-test", format="unknown") == before + 1


def test_parsed_and_failed_are_counted_per_input_and_format() -> None:
    """A good line counts as parsed, a bad one as failed, labelled with input and format."""
    p0 = metrics.value("siem_events_parsed_total", input="api-count", format="apache")
    f0 = metrics.value("siem_events_failed_total", input="api-count", format="apache")
    parse("apache", b'1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-"', CTX, "api-count")
    parse("apache", b"garbage", CTX, "api-count")
    parse("apache", b"garbage", CTX, "api-count")
    assert metrics.value("siem_events_parsed_total", input="api-count", format="apache") == p0 + 1
    assert metrics.value("siem_events_failed_total", input="api-count", format="apache") == f0 + 2


def test_a_parser_exception_becomes_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a parser raises, parse returns an event naming the failure and never raises."""
    def broken(text: str, ctx: ParseContext) -> dict[str, object]:
        raise KeyError("boom")

    monkeypatch.setitem(PARSERS, "broken", broken)
    ev = parse("broken", b"line\n", CTX, "api-test")
    assert ev == {"@timestamp": REF, "event.original": "line", "event.dataset": "broken",
                  "error.message": "broken parser failed: KeyError: 'boom'"}


def test_text_bytearray_and_memoryview_input_are_accepted() -> None:
    """A str, bytearray or memoryview instead of bytes is parsed the same way; None is an error event."""
    a = parse("syslog", SSHD, CTX)
    assert parse("syslog", SSHD.decode(), CTX) == a
    assert parse("syslog", bytearray(SSHD), CTX) == a
    assert parse("syslog", memoryview(SSHD), CTX) == a
    ev = parse("syslog", None, CTX)  # type: ignore[arg-type]
    assert ev["event.original"] == "None" and "error.message" in ev


def test_every_field_the_parsers_emit_is_typed_in_the_schema() -> None:
    """Fields produced on the test corpus are declared in FIELDS or under an open namespace."""
    lines = {
        "syslog": [SSHD, b"<165>1 2003-10-11T22:14:15.003Z h app 1 ID47 [x@1 a=\"1\"] m",
                   b"Mar 27 13:06:56 h sudo: bob : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/id",
                   b"Mar 27 13:06:56 h sshd[1]: message repeated 2 times: [ Failed none for x from 1.1.1.1 port 1 ssh2]",
                   b"Mar 27 13:06:56 h sshd[1]: Unable to negotiate with 1.1.1.1 port 1: no matching MAC found. "
                   b"Their offer: hmac-md5 [preauth]",
                   b"Mar 27 13:06:56 h systemd-logind[1]: New session 3 of user bob."],
        "nginx": [b'::1 - u [10/Oct/2000:13:55:36 +0000] "GET http://x/y?z HTTP/1.1" 200 1 "r" "ua"'],
        "journald": [b'{"__REALTIME_TIMESTAMP": "1", "_HOSTNAME": "h", "SYSLOG_IDENTIFIER": "sshd", "_PID": "1", '
                     b'"PRIORITY": "3", "_UID": "0", "MESSAGE": "Connection from 1.1.1.1 port 2 on 2.2.2.2 port 22"}'],
        "cloudtrail": [b'{"eventTime": "2024-01-01T00:00:00Z", "userIdentity": {"type": "Root"}, "tlsDetails": '
                       b'{"tlsVersion": "TLSv1.2"}, "sourceIPAddress": "x.amazonaws.com", "errorCode": "E"}'],
    }
    for fmt, raws in lines.items():
        for raw in raws:
            for name in parse(fmt, raw, CTX):
                assert field_type(name) is not None, (fmt, name)
    assert FIELDS["event.repeat_count"] == "long"


def test_batch_gives_the_same_events_and_counts_as_single_calls() -> None:
    """parse_batch = parse per record: same events, same parsed/failed counts (oversized ones included)."""
    records = [SSHD, b"garbage", SSHD + b"\n", b"x" * (MAX_LINE_BYTES + 10), bytearray(SSHD), "text line"]
    p0 = metrics.value("siem_events_parsed_total", input="api-batch", format="syslog")
    f0 = metrics.value("siem_events_failed_total", input="api-batch", format="syslog")
    singles = [parse("syslog", r, CTX, "api-single") for r in records]  # type: ignore[arg-type]
    assert parse_batch("syslog", records, CTX, "api-batch") == singles  # type: ignore[arg-type]
    failed = sum("error.message" in ev for ev in singles)
    assert metrics.value("siem_events_parsed_total", input="api-batch", format="syslog") == p0 + len(records) - failed
    assert metrics.value("siem_events_failed_total", input="api-batch", format="syslog") == f0 + failed


def test_batch_with_unknown_format() -> None:
    """An unknown format in a batch: one error event per record."""
    assert [ev["error.message"] for ev in parse_batch("nope", [b"a", b"b"], CTX)] == ["unknown format 'nope'"] * 2
