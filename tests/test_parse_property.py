"""Property tests: no input makes any registered parser raise, and @timestamp is always an int.

The parsers are called directly (parse() would hide an exception inside an error event), then
through parse() as the collectors do.
"""

from __future__ import annotations

import json
from datetime import UTC
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siem.parse import PARSERS, ParseContext, parse, parse_cloudtrail_record

FORMATS = sorted(PARSERS)
ZONES = [UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/St_Johns"), ZoneInfo("Australia/Lord_Howe")]

contexts = st.builds(
    ParseContext,
    tz=st.sampled_from(ZONES),
    now_ms=st.one_of(st.none(), st.integers(min_value=-62_000_000_000_000, max_value=253_000_000_000_000)),
    host=st.sampled_from(["", "collector"]),
)

# pieces of real syslog, access log and JSON lines, shuffled together
FRAGMENTS = [
    "<", ">", "<13>", "<191>", "<999>", "<00013>", "1 ", "2 ", "-", " ", "  ", ":", ": ", "[", "]", "\"", "\\", "=",
    "Jan", "Feb", "Dec", "Mär", " 1", " 29", "31", "2024", "0000", "9999", "12:34:56", "23:59:60", "99:99:99", ".123",
    "2024-02-30T25:61:61.1234567890+24:00", "2003-10-11T22:14:15.003Z", "t", "z", "host", "sshd", "sshd[123]",
    "sshd(pam_unix)[9]", "sudo", "su", "CRON[1]", "systemd-logind[1]", "useradd[2]", "\ufeff", "\x00", "\x1b[2J",
    "\u202e", "\n", "\r\n", "Accepted password for ", "Failed publickey for invalid user ", "Invalid user ",
    " from ", "1.2.3.4", "::ffff:10.0.0.1", "2001:db8::1", "999.1.1.1", " port ", "65536", "99999999999999999999",
    " ssh2", " [preauth]", "message repeated 3 times: [ ", "pam_unix(sshd:auth): authentication failure; ",
    "rhost=", "user=", "session opened for user root by ubuntu(uid=0)", " : TTY=pts/0 ; PWD=/ ; USER=root ; ",
    "COMMAND=/bin/sh", "3 incorrect password attempts ; ", "Unable to negotiate with ", ": no matching cipher found. Their offer: ",
    "Protocol major versions differ for ", " vs. ", "Bad protocol version identification '", "'", "New session ",
    " of user ", "new user: name=", "[exampleSDID@32473 iut=\"3\"]", "[x a=\"\\\"\\]\"", "] ", "x", " a=\"", "\"]",
    "10/Oct/2000:13:55:36 -0700", "[31/Feb/2020:99:00:00 +9999]", "\"GET / HTTP/1.1\"", "\\x16\\x03", " 200 ",
    " abc ", "{", "}", "\"eventTime\":", "\"Records\":[", "null", "1e400", "[[[[", "\"@timestamp\":",
]
syslogish = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=30).map("".join)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=25)
KEYS = ["eventTime", "eventName", "eventSource", "eventID", "userIdentity", "sourceIPAddress", "userAgent",
        "awsRegion", "errorCode", "requestParameters", "responseElements", "additionalEventData", "resources",
        "recipientAccountId", "tlsDetails", "@timestamp", "MESSAGE", "__REALTIME_TIMESTAMP", "_PID",
        "SYSLOG_IDENTIFIER", "_HOSTNAME", "PRIORITY", "request", "status", "remote_addr", "time_local", "msec",
        "detail-type", "detail", "Records"]
records = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), json_values, max_size=12)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(ev: dict[str, object]) -> None:
    assert type(ev["@timestamp"]) is int
    assert isinstance(ev["event.original"], str)
    assert isinstance(ev["event.dataset"], str)
    assert all(v is not None for v in ev.values())


@FAST
@given(data=st.binary(max_size=300), ctx=contexts)
def test_random_bytes_never_raise_in_any_parser(data: bytes, ctx: ParseContext) -> None:
    """Random bytes: every parser returns an event with an int @timestamp."""
    text = data.decode("utf-8", "replace")
    for fmt in FORMATS:
        _check(PARSERS[fmt](text, ctx))
        _check(parse(fmt, data, ctx, "property"))


@FAST
@given(text=syslogish, ctx=contexts)
def test_syslogish_text_never_raises_in_any_parser(text: str, ctx: ParseContext) -> None:
    """Random text built from fragments of real lines: no parser raises."""
    for fmt in FORMATS:
        _check(PARSERS[fmt](text, ctx))


@FAST
@given(head=st.sampled_from(["<38>Mar 27 13:06:56 web1 sshd[7]: ", "Mar 27 13:06:56 web1 sudo: ",
                             "<13>1 2024-03-27T13:06:56Z web1 su 9 - - ", "<13>1 2024-03-27T13:06:56Z h a 9 - ",
                             "<13>1 2024-03-27T13:06:56Z h a 9 - [", "Feb 29 00:00:00 h su[1]: ",
                             "Dec 31 23:59:59 h useradd[1]: ", "Mar 27 13:06:56 h systemd-logind[1]: "]),
       tail=syslogish, ctx=contexts)
def test_program_parsers_never_raise_on_random_messages(head: str, tail: str, ctx: ParseContext) -> None:
    """Real headers with random messages (and structured data) exercise every program parser."""
    _check(PARSERS["syslog"](head + tail, ctx))


@FAST
@given(rec=records, ctx=contexts)
def test_random_json_records_never_raise(rec: dict[str, object], ctx: ParseContext) -> None:
    """Random JSON objects with the keys the JSON parsers look at: no exception, int @timestamp."""
    line = json.dumps(rec)
    for fmt in ("cloudtrail", "json", "journald", "access_json"):
        _check(PARSERS[fmt](line, ctx))
    _check(parse_cloudtrail_record(rec, ctx))


@FAST
@given(value=json_values, ctx=contexts)
def test_any_json_value_as_a_cloudtrail_record_never_raises(value: object, ctx: ParseContext) -> None:
    """parse_cloudtrail_record accepts any JSON value (wrong types become error events)."""
    _check(parse_cloudtrail_record(value, ctx))
