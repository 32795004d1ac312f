"""RFC 3164 / RFC 5424 syslog parsing: header fields, timestamps and years, bad inputs (RELIABILITY 10-18)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from siem.parse import PARSERS, ParseContext, parse


def ms(iso: str) -> int:
    """ISO 8601 text (with zone) to epoch ms."""
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


REF = ms("2024-03-28T12:00:00+00:00")
CTX = ParseContext(now_ms=REF)


def syslog(line: str, ctx: ParseContext = CTX) -> dict[str, object]:
    return parse("syslog", line.encode(), ctx, "test")


# --- RFC 3164 ------------------------------------------------------------------------------------


def test_traditional_file_line_gives_the_whole_event() -> None:
    """A syslog file line (no PRI) gives time, host, program, pid and message."""
    line = "Mar 27 13:06:56 ip-10-77-20-248 systemd[1]: Started Session 1 of user ubuntu."
    assert syslog(line) == {
        "@timestamp": ms("2024-03-27T13:06:56+00:00"),
        "event.original": line,
        "event.dataset": "syslog",
        "host.name": "ip-10-77-20-248",
        "process.name": "systemd",
        "process.pid": 1,
        "message": "Started Session 1 of user ubuntu.",
    }


def test_pri_gives_facility_and_severity_names() -> None:
    """<38> is facility auth (4), severity info (6); <86> is authpriv info."""
    ev = syslog("<38>Mar 27 13:06:56 host app: hello")
    assert (ev["log.syslog.priority"], ev["log.syslog.facility.code"], ev["log.syslog.facility.name"],
            ev["log.syslog.severity.code"], ev["log.syslog.severity.name"]) == (38, 4, "auth", 6, "info")
    ev = syslog("<86>Mar 27 13:06:56 host app: hello")
    assert (ev["log.syslog.facility.name"], ev["log.syslog.severity.name"]) == ("authpriv", "info")
    assert "error.message" not in ev


def test_space_padded_and_zero_padded_days_are_the_same_time() -> None:
    """`Feb  1` and `Feb 01` are both February 1st."""
    a = syslog("Feb  1 05:39:30 combo app: x")
    b = syslog("Feb 01 05:39:30 combo app: x")
    assert a["@timestamp"] == b["@timestamp"] == ms("2024-02-01T05:39:30+00:00")


def test_explicit_year_is_used_instead_of_inference() -> None:
    """`Mmm dd yyyy hh:mm:ss` keeps the year it gives."""
    ev = syslog("Mar 27 2019 13:06:56 host app: x")
    assert ev["@timestamp"] == ms("2019-03-27T13:06:56+00:00")
    assert ev["host.name"] == "host"


def test_fractional_seconds_in_bsd_timestamp() -> None:
    """`13:06:56.789123` keeps the milliseconds."""
    assert syslog("Mar 27 13:06:56.789123 host app: x")["@timestamp"] == ms("2024-03-27T13:06:56.789+00:00")


def test_line_without_hostname_takes_host_from_context() -> None:
    """`<13>Mar 27 13:06:56 sshd[12]: ...` has no HOSTNAME; ctx.host fills host.name."""
    line = "<13>Mar 27 13:06:56 sshd[12]: Accepted password for bob from 10.0.0.1 port 22 ssh2"
    assert "host.name" not in syslog(line)
    ev = syslog(line, ParseContext(now_ms=REF, host="collector-1"))
    assert (ev["host.name"], ev["process.name"], ev["process.pid"], ev["event.action"]) == (
        "collector-1", "sshd", 12, "ssh_login")


def test_line_without_tag_keeps_host_and_message() -> None:
    """`Jun 14 15:16:01 combo -- MARK --` has a host and no tag."""
    ev = syslog("Jun 14 15:16:01 combo -- MARK --")
    assert (ev["host.name"], ev["message"], ev["event.dataset"]) == ("combo", "-- MARK --", "syslog")
    assert "process.name" not in ev and "error.message" not in ev


def test_tag_followed_by_colon_in_message_is_not_mistaken_for_host() -> None:
    """`sshd[1]: error: x` without HOSTNAME: the tag is sshd, not 'error'."""
    ev = syslog("Mar 27 13:06:56 sshd[1]: error: kex_exchange_identification: Connection closed")
    assert ev["process.name"] == "sshd"
    assert "host.name" not in ev


def test_timestamps_without_zone_are_in_the_context_zone() -> None:
    """13:06:56 in Europe/Berlin is 12:06:56Z in winter time and 11:06:56Z in summer time."""
    berlin = ParseContext(tz=ZoneInfo("Europe/Berlin"), now_ms=REF)
    assert syslog("Mar 27 13:06:56 h a: x", berlin)["@timestamp"] == ms("2024-03-27T12:06:56+00:00")
    summer = ParseContext(tz=ZoneInfo("Europe/Berlin"), now_ms=ms("2024-07-01T00:00:00+00:00"))
    assert syslog("Jun 27 13:06:56 h a: x", summer)["@timestamp"] == ms("2024-06-27T11:06:56+00:00")


def test_dec_31_line_read_on_jan_1_is_last_year() -> None:
    """Year inference at New Year: a Dec 31 line read on Jan 1 2025 is from 2024."""
    ctx = ParseContext(now_ms=ms("2025-01-01T00:05:00+00:00"))
    assert syslog("Dec 31 23:59:59 h a: x", ctx)["@timestamp"] == ms("2024-12-31T23:59:59+00:00")
    assert syslog("Jan  1 00:04:00 h a: x", ctx)["@timestamp"] == ms("2025-01-01T00:04:00+00:00")


def test_jan_1_line_read_on_dec_31_is_next_year() -> None:
    """A sender clock slightly ahead at New Year: Jan 1 read on Dec 31 2024 is 2025."""
    ctx = ParseContext(now_ms=ms("2024-12-31T23:59:30+00:00"))
    assert syslog("Jan  1 00:00:01 h a: x", ctx)["@timestamp"] == ms("2025-01-01T00:00:01+00:00")


def test_date_more_than_a_month_ahead_is_last_year() -> None:
    """Read on 2024-03-28: May 10 is 2023 (backfill of last year's file), Apr 20 is 2024."""
    assert syslog("May 10 10:00:00 h a: x")["@timestamp"] == ms("2023-05-10T10:00:00+00:00")
    assert syslog("Apr 20 10:00:00 h a: x")["@timestamp"] == ms("2024-04-20T10:00:00+00:00")


def test_feb_29_of_a_non_leap_year_is_an_error_kept_as_event() -> None:
    """Feb 29 read in 2023 cannot be a date: reference time, error, rest parsed."""
    ctx = ParseContext(now_ms=ms("2023-03-10T00:00:00+00:00"))
    ev = syslog("Feb 29 10:00:00 host sshd[1]: Invalid user x from 1.2.3.4", ctx)
    assert ev["@timestamp"] == ms("2023-03-10T00:00:00+00:00")
    assert "day 29 out of range" in str(ev["error.message"])
    assert (ev["host.name"], ev["event.action"]) == ("host", "invalid_user")
    assert syslog("Feb 29 10:00:00 h a: x")["@timestamp"] == ms("2024-02-29T10:00:00+00:00")


def test_unknown_and_localized_month_names_are_errors_with_the_rest_parsed() -> None:
    """`Foo` and German `Mär`/`Dez` are not months: error, host and program still read."""
    for line in ("Foo 27 13:06:56 host app[3]: x", "Mär 27 13:06:56 host app[3]: x", "Dez 27 13:06:56 host app[3]: x"):
        ev = syslog(line)
        assert "unknown month name" in str(ev["error.message"]), line
        assert (ev["@timestamp"], ev["host.name"], ev["process.name"]) == (REF, "host", "app")


def test_second_60_is_a_leap_second() -> None:
    """`23:59:60` is accepted as the first second of the next minute."""
    assert syslog("Mar 27 23:59:60 h a: x")["@timestamp"] == ms("2024-03-28T00:00:00+00:00")


def test_rsyslog_high_precision_file_format() -> None:
    """RSYSLOG_FileFormat: RFC 3339 timestamp instead of the BSD one."""
    ev = syslog("2024-03-27T13:06:56.123456+01:00 web1 sshd[7]: Invalid user oracle from 10.1.2.3 port 5555")
    assert (ev["@timestamp"], ev["host.name"], ev["event.action"]) == (
        ms("2024-03-27T12:06:56.123+00:00"), "web1", "invalid_user")


def test_message_repeated_is_parsed_with_its_count() -> None:
    """rsyslog's `message repeated N times: [ msg]` gives the inner event and event.repeat_count."""
    ev = syslog("Dec 10 07:51:15 LabSZ sshd[24324]: message repeated 5 times: [ Failed password for root "
                "from 195.154.37.122 port 49230 ssh2]")
    assert (ev["event.repeat_count"], ev["event.action"], ev["event.outcome"], ev["user.name"], ev["source.ip"]) == (
        5, "ssh_login", "failure", "root", "195.154.37.122")


# --- PRI edge cases (RELIABILITY 10) ------------------------------------------------------------------


def test_invalid_pri_values_are_errors_and_the_rest_is_parsed() -> None:
    """`<>`, `<192>`, `<999>`, `<-1>`, `<00013>` are invalid PRIs; header and message still read."""
    for pri in ("<>", "<192>", "<999>", "<-1>", "<00013>", "<013>"):
        ev = syslog(f"{pri}Mar 27 13:06:56 host app[3]: hello")
        assert "invalid PRI" in str(ev["error.message"]), pri
        assert (ev["host.name"], ev["process.name"], ev["message"]) == ("host", "app", "hello"), pri
        assert "log.syslog.priority" not in ev


def test_pri_zero_and_191_are_valid() -> None:
    """<0> is kern.emerg, <191> is local7.debug."""
    assert syslog("<0>Mar 27 13:06:56 h a: x")["log.syslog.facility.name"] == "kern"
    ev = syslog("<191>Mar 27 13:06:56 h a: x")
    assert (ev["log.syslog.facility.name"], ev["log.syslog.severity.name"]) == ("local7", "debug")


def test_pri_only_is_an_event_with_error() -> None:
    """`<13>` alone: no timestamp, empty message, reference time."""
    ev = syslog("<13>")
    assert (ev["@timestamp"], ev["message"], ev["event.dataset"]) == (REF, "", "syslog")
    assert "no syslog timestamp" in str(ev["error.message"])


def test_missing_timestamp_is_an_error_with_reference_time() -> None:
    """Free text after a PRI (no timestamp) is kept as message."""
    ev = syslog("<13>hello world: not a header")
    assert (ev["message"], ev["@timestamp"]) == ("hello world: not a header", REF)
    assert "no syslog timestamp" in str(ev["error.message"])


# --- RFC 5424 ---------------------------------------------------------------------------------------


def test_rfc5424_example_with_bom_dispatches_to_su() -> None:
    """RFC 5424 example 1: BOM stripped from MSG; su's failure is understood."""
    ev = parse("syslog", b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
                         b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8", CTX)
    assert ev["@timestamp"] == ms("2003-10-11T22:14:15.003+00:00")
    assert (ev["host.name"], ev["process.name"], ev["log.syslog.msgid"], ev["log.syslog.version"]) == (
        "mymachine.example.com", "su", "ID47", "1")
    assert ev["message"] == "'su root' failed for lonvick on /dev/pts/8"
    assert (ev["event.dataset"], ev["event.outcome"], ev["user.name"], ev["user.target.name"]) == (
        "su", "failure", "lonvick", "root")
    assert "error.message" not in ev


def test_rfc5424_structured_data_becomes_sd_fields() -> None:
    """Two SD elements, params as sd.<SD-ID>.<name> keywords, escapes resolved."""
    ev = syslog('<165>1 2003-10-11T22:14:15.003-07:00 host evntslog 42 ID47 [exampleSDID@32473 iut="3" '
                'eventSource="Application" eventID="1011"][examplePriority@32473 class="high" '
                r'note="a \"quoted\" \] \\ value"] An application event')
    assert ev["@timestamp"] == ms("2003-10-12T05:14:15.003+00:00")
    assert {k: v for k, v in ev.items() if k.startswith("sd.")} == {
        "sd.exampleSDID@32473.iut": "3",
        "sd.exampleSDID@32473.eventSource": "Application",
        "sd.exampleSDID@32473.eventID": "1011",
        "sd.examplePriority@32473.class": "high",
        "sd.examplePriority@32473.note": 'a "quoted" ] \\ value',
    }
    assert (ev["message"], ev["process.pid"]) == ("An application event", 42)


def test_rfc5424_nilvalue_everywhere() -> None:
    """`<13>1 - - - - - -`: reference time, no host/app/pid, empty message, no error."""
    ev = syslog("<13>1 - - - - - -")
    assert ev == {
        "@timestamp": REF, "event.original": "<13>1 - - - - - -", "event.dataset": "syslog", "message": "",
        "log.syslog.version": "1", "log.syslog.priority": 13, "log.syslog.facility.code": 1,
        "log.syslog.facility.name": "user", "log.syslog.severity.code": 5, "log.syslog.severity.name": "notice",
    }


def test_rfc5424_many_fraction_digits_lowercase_t_z_and_no_zone() -> None:
    """More than 6 fractional digits, `t`/`z`, and a zone-less time (ctx.tz) all parse."""
    assert syslog("<13>1 2024-03-27T13:06:56.123456789Z h a - - - x")["@timestamp"] == ms(
        "2024-03-27T13:06:56.123+00:00")
    assert syslog("<13>1 2024-03-27t13:06:56z h a - - - x")["@timestamp"] == ms("2024-03-27T13:06:56+00:00")
    ny = ParseContext(tz=ZoneInfo("America/New_York"), now_ms=REF)
    assert syslog("<13>1 2024-03-27T13:06:56 h a - - - x", ny)["@timestamp"] == ms("2024-03-27T17:06:56+00:00")


def test_rfc5424_leap_second_and_bad_offset() -> None:
    """23:59:60 is accepted; offset +24:00 is an error with the reference time."""
    assert syslog("<13>1 2016-12-31T23:59:60Z h a - - - x")["@timestamp"] == ms("2017-01-01T00:00:00+00:00")
    ev = syslog("<13>1 2024-03-27T13:06:56+24:00 h a - - - x")
    assert ev["@timestamp"] == REF and "offset" in str(ev["error.message"])
    assert ev["message"] == "x"


def test_rfc5424_other_version_is_parsed_with_error() -> None:
    """VERSION 2 is not RFC 5424; the fields are still read the same way."""
    ev = syslog("<13>2 2024-03-27T13:06:56Z host app - - - hello")
    assert "unsupported VERSION 2" in str(ev["error.message"])
    assert (ev["host.name"], ev["message"]) == ("host", "hello")


def test_rfc5424_overlong_header_fields_are_cut_with_error() -> None:
    """HOSTNAME > 255, APP-NAME > 48, PROCID > 128, MSGID > 32 are cut to the limit."""
    ev = syslog(f"<13>1 2024-03-27T13:06:56Z {'h' * 300} {'a' * 60} {'1' * 200} {'m' * 40} - x")
    assert (len(ev["host.name"]), len(ev["process.name"]), len(ev["log.syslog.procid"]),  # type: ignore[arg-type]
            len(ev["log.syslog.msgid"])) == (255, 48, 128, 32)  # type: ignore[arg-type]
    for name in ("HOSTNAME", "APP-NAME", "PROCID", "MSGID"):
        assert name in str(ev["error.message"])
    assert "process.pid" not in ev  # 128 digits is not a pid


def test_rfc5424_non_printable_header_bytes_do_not_break_parsing() -> None:
    """Control bytes inside HOSTNAME/APP-NAME are kept as they are."""
    ev = parse("syslog", b"<13>1 2024-03-27T13:06:56Z h\x01st a\x7fp - - - x", CTX)
    assert (ev["host.name"], ev["process.name"], ev["message"]) == ("h\x01st", "a\x7fp", "x")


def test_structured_data_unterminated_keeps_rest_in_message() -> None:
    """`[id a="1"` without `]`: error, parsed params kept, the SD text stays in message."""
    ev = syslog('<13>1 2024-03-27T13:06:56Z h a - - [id a="1" b="2 hello')
    assert ev["sd.id.a"] == "1"
    assert "structured data" in str(ev["error.message"])
    assert ev["message"] == '[id a="1" b="2 hello'


def test_structured_data_unescaped_quote_is_an_error() -> None:
    """An unescaped `"` ends the value early: error, nothing lost from message."""
    ev = syslog('<13>1 2024-03-27T13:06:56Z h a - - [id a="x"y"] msg')
    assert "structured data" in str(ev["error.message"])
    assert ev["message"] == '[id a="x"y"] msg'


def test_structured_data_unescaped_bracket_and_backslash_are_tolerated() -> None:
    """`]` and a lone `\\` inside a quoted value (RFC says escape them) are kept as written."""
    ev = syslog(r'<13>1 2024-03-27T13:06:56Z h a - - [id path="C:\dir\x]y" n="1"] m')
    assert (ev["sd.id.path"], ev["sd.id.n"], ev["message"]) == (r"C:\dir\x]y", "1", "m")
    assert "error.message" not in ev


def test_structured_data_duplicate_sd_id_values_are_joined() -> None:
    """The same SD-ID twice: values of one param name joined with ', '."""
    ev = syslog('<13>1 2024-03-27T13:06:56Z h a - - [id ip="1.1.1.1"][id ip="2.2.2.2"] m')
    assert ev["sd.id.ip"] == "1.1.1.1, 2.2.2.2"


def test_ten_thousand_sd_elements_are_capped() -> None:
    """10,000 SD elements (parser alone, beyond the 64 KiB line cap): 200 fields kept, the rest counted."""
    sd = "".join(f'[e{i} p="{i}"]' for i in range(10_000))
    ev = PARSERS["syslog"](f"<13>1 2024-03-27T13:06:56Z h a - - {sd} tail", CTX)
    assert sum(1 for k in ev if k.startswith("sd.")) == 200
    assert "9800 parameters beyond 200 dropped" in str(ev["error.message"])
    assert ev["message"] == "tail"


def test_long_sd_id_is_noted() -> None:
    """SD-ID longer than 32 characters: kept, with an error note."""
    ev = syslog(f'<13>1 2024-03-27T13:06:56Z h a - - [{"x" * 40} a="1"] m')
    assert ev[f"sd.{'x' * 40}.a"] == "1"
    assert "longer than 32" in str(ev["error.message"])


def test_rfc5424_incomplete_header_is_kept() -> None:
    """`<13>1 2024-...` cut after the timestamp is an event with error."""
    ev = syslog("<13>1 2024-03-27T13:06:56Z")
    assert "incomplete header" in str(ev["error.message"])
    assert ev["@timestamp"] == REF


# --- encodings and control characters (RELIABILITY 15, 16) ---------------------------------------------


def test_bom_then_invalid_utf8_is_replaced_and_parsed() -> None:
    """MSG = BOM + invalid UTF-8: replacement characters, still an sshd event."""
    ev = parse("syslog", b"<38>1 2024-03-27T13:06:56Z h sshd 9 - - \xef\xbb\xbfInvalid user \xff\xfe from 1.2.3.4", CTX)
    assert (ev["event.action"], ev["user.name"], ev["source.ip"]) == ("invalid_user", "\ufffd\ufffd", "1.2.3.4")


def test_overlong_encodings_lone_surrogates_and_utf16_do_not_break_parsing() -> None:
    """Overlong `/`, an encoded lone surrogate and UTF-16 text all become events."""
    for raw in (b"Mar 27 13:06:56 host app: \xc0\xaf etc",
                b"Mar 27 13:06:56 host app: \xed\xa0\x80 x",
                "Mar 27 13:06:56 host app: hello".encode("utf-16")):
        ev = parse("syslog", raw, CTX)
        assert isinstance(ev["@timestamp"], int)
        assert "\ufffd" in str(ev["event.original"]) or "\x00" in str(ev["event.original"])


def test_control_characters_are_kept_verbatim() -> None:
    """NUL, ESC sequences, BEL, DEL, C1, BiDi override and U+2028 stay in message (escaped at render time)."""
    payload = "a\x00b\x1b[2J\x1b]8;;http://x\x07y\x7f\u0085\u202eevil\u2028z"
    ev = syslog(f"Mar 27 13:06:56 host app: {payload}")
    assert ev["message"] == payload
    assert ev["event.original"] == f"Mar 27 13:06:56 host app: {payload}"


def test_forged_inner_line_stays_inside_the_outer_message() -> None:
    """An embedded LF + fake sshd line does not become a second event or an sshd login."""
    line = "<13>Mar 27 13:06:56 host myapp: hi\n<13>Jan  1 00:00:00 host sshd[1]: Accepted password for root " \
           "from 6.6.6.6 port 22 ssh2"
    ev = syslog(line)
    assert (ev["process.name"], ev["event.dataset"]) == ("myapp", "syslog")
    assert "event.action" not in ev and "source.ip" not in ev
    assert ev["message"] == line.split("myapp: ", 1)[1]


def test_json_cef_leef_messages_are_not_parsed_as_such() -> None:
    """Messages that look like JSON, CEF or LEEF stay plain messages of a generic event."""
    for msg in ('{"event.action": "ssh_login", "source.ip": "6.6.6.6"}',
                "CEF:0|Vendor|Product|1.0|100|Attack|10|src=6.6.6.6 act=blocked",
                "LEEF:1.0|Vendor|Product|1.0|100|src=6.6.6.6\tdst=1.1.1.1"):
        ev = syslog(f"Mar 27 13:06:56 host app: {msg}")
        assert ev["message"] == msg
        assert "source.ip" not in ev and "event.action" not in ev


def test_bare_json_line_under_syslog_format_is_an_error_event() -> None:
    """A JSON object sent to a syslog input is not parsed as JSON: error, kept whole."""
    ev = syslog('{"@timestamp": "2024-01-01T00:00:00Z", "source.ip": "6.6.6.6"}')
    assert "source.ip" not in ev
    assert "error.message" in ev and ev["event.dataset"] == "syslog"


def test_rfc5424_and_rfc3164_specific_parsers() -> None:
    """rfc3164 and rfc5424 parse their own format; given the other one they keep an error event."""
    assert PARSERS["rfc5424"]("<13>1 2024-03-27T13:06:56Z h a - - - x", CTX)["message"] == "x"
    assert PARSERS["rfc3164"]("<13>Mar 27 13:06:56 h a: x", CTX)["message"] == "x"
    assert "error.message" in PARSERS["rfc3164"]("<13>1 2024-03-27T13:06:56Z h a - - - x", CTX)
    assert "error.message" in PARSERS["rfc5424"]("<13>Mar 27 13:06:56 h a: x", CTX)


def test_truncated_line_is_an_event() -> None:
    """A line cut inside the timestamp (real: secrepo auth.log) is kept with error."""
    ev = syslog("Dec  2 13:14:2")
    assert (ev["message"], ev["@timestamp"]) == ("Dec  2 13:14:2", REF)
    assert "error.message" in ev


def test_same_minute_twice_uses_the_cached_minute() -> None:
    """The second line of a minute (fast path) gives the same fields as the first (general path)."""
    a = syslog("Mar 27 13:07:01 web sshd[5]: Invalid user a from 1.1.1.1 port 1")
    b = syslog("Mar 27 13:07:02 web sshd[5]: Invalid user a from 1.1.1.1 port 1")
    assert b["@timestamp"] == a["@timestamp"] + 1000  # type: ignore[operator]
    assert {k: v for k, v in a.items() if k not in ("@timestamp", "event.original")} == {
        k: v for k, v in b.items() if k not in ("@timestamp", "event.original")}


LOGIN_LINES = [
    "sshd[5]: Failed password for invalid user admin from 10.1.2.3 port 4242 ssh2",
    "sshd[5]: Failed password for root from ::ffff:10.1.2.3 port 4242 ssh2",
    "sshd[5]: Accepted publickey for bob from 2001:db8::1 port 22 ssh2: ED25519 SHA256:abc",
    "sshd[5]: Accepted keyboard-interactive/pam for bob from 10.0.0.1 port 22 ssh2",
    "sshd[5]: Failed none for invalid user x from host.example.com port 1 ssh2",
    "sshd[5]: Failed password for x from 10.0.0.1 port 1",
    "sshd[5]: Failed password for invalid user x from 6.6.6.6 port 1 ssh2 from 1.2.3.4 port 5 ssh2",
    "sshd[5]: Invalid user oracle from 10.9.8.7 port 50000",
    "sshd[5]: Invalid user  from 10.9.8.7 port 50000",
    "sshd[5]: Invalid user oracle from 10.9.8.7",
    "sshd[5]: Invalid user x from 6.6.6.6 port 1 from host.example.com port 2",
    "sshd-session[5]: Failed password for root from 10.0.0.1 port 1 ssh2",
]


@pytest.mark.parametrize("pri", ["", "<38>"])
@pytest.mark.parametrize("tail", LOGIN_LINES)
def test_fast_login_path_gives_the_general_paths_event(pri: str, tail: str) -> None:
    """Login/invalid-user lines take a shortcut once their minute is cached; same event as the general path."""
    ctx = ParseContext(now_ms=ms("2021-06-15T12:00:00+00:00"))
    minute = f"Jun 14 {LOGIN_LINES.index(tail):02d}:{len(pri):02d}"
    first = syslog(f"{pri}{minute}:01 web {tail}", ctx)  # first line of the minute: general path
    second = syslog(f"{pri}{minute}:02 web {tail}", ctx)  # minute cached: fast path
    assert second["@timestamp"] == first["@timestamp"] + 1000  # type: ignore[operator]
    assert {k: v for k, v in first.items() if k not in ("@timestamp", "event.original")} == {
        k: v for k, v in second.items() if k not in ("@timestamp", "event.original")}
    assert first["event.dataset"] == "sshd"


def test_reference_time_defaults_to_wall_clock() -> None:
    """Without now_ms the year comes from the current date (a date from yesterday is this year or last)."""
    now = datetime.now(timezone.utc)
    ev = parse("syslog", now.strftime("%b %d %H:%M:%S host app: x").encode(), ParseContext())
    assert abs(ev["@timestamp"] - int(now.timestamp() * 1000)) < 2000  # type: ignore[operator]
