"""Generic ECS JSON lines and journald records (same events as syslog for the same message)."""

from __future__ import annotations

import json

import pytest

from siem.parse import ParseContext, parse

REF = 1_711_627_200_000  # 2024-03-28T12:00:00Z
CTX = ParseContext(now_ms=REF)
T0 = 1_711_544_816_000  # 2024-03-27T13:06:56Z


def js(obj: object, fmt: str = "json") -> dict[str, object]:
    return parse(fmt, json.dumps(obj).encode(), CTX, "test")


# --- generic ECS JSON ------------------------------------------------------------------------------


def test_nested_objects_are_flattened_to_dotted_names() -> None:
    """ECS nested JSON becomes flat dotted keys; ints stay ints; @timestamp ISO -> ms."""
    line = {"@timestamp": "2024-03-27T13:06:56.250Z", "event": {"dataset": "app.audit", "action": "login"},
            "source": {"ip": "10.0.0.1", "port": 5555}, "user": {"name": "bob"}, "tags": ["a", "b"]}
    ev = js(line)
    assert ev == {"@timestamp": T0 + 250, "event.original": json.dumps(line), "event.dataset": "app.audit",
                  "event.action": "login", "source.ip": "10.0.0.1", "source.port": 5555, "user.name": "bob",
                  "tags": "a, b"}


def test_epoch_ms_timestamp_and_dotted_keys_as_given() -> None:
    """@timestamp as epoch ms (number or digits); already dotted keys are kept."""
    assert js({"@timestamp": T0, "source.ip": "1.1.1.1"})["@timestamp"] == T0
    assert js({"@timestamp": str(T0)})["@timestamp"] == T0


def test_long_fields_given_as_text_become_ints() -> None:
    """source.port "22" (a schema LONG) becomes 22; unknown fields are left as they are."""
    ev = js({"@timestamp": T0, "source": {"port": "22"}, "custom": "22"})
    assert (ev["source.port"], ev["custom"]) == (22, "22")


def test_dataset_defaults_to_json() -> None:
    """Without event.dataset the event is dataset json."""
    assert js({"@timestamp": T0, "message": "x"})["event.dataset"] == "json"


def test_missing_or_absurd_timestamp_uses_reference_time() -> None:
    """No @timestamp, an epoch beyond year 9999, or a boolean: reference time and error."""
    for obj in ({"message": "x"}, {"@timestamp": 10**20}, {"@timestamp": True}, {"@timestamp": "yesterday"}):
        ev = js(obj)
        assert ev["@timestamp"] == REF and "error.message" in ev, obj


@pytest.mark.parametrize("raw", [b'{"a": ', b"[1,2,3]", b'"just a string"', b"", b"\xff\xfe{}"])
def test_invalid_or_non_object_json_is_an_error_event(raw: bytes) -> None:
    """Bad JSON and non-objects are kept as error events."""
    ev = parse("json", raw, CTX)
    assert ev["event.dataset"] == "json" and ev["@timestamp"] == REF and "error.message" in ev


def test_lone_surrogate_escape_is_replaced() -> None:
    """`"\\ud800"` (valid JSON, not valid Unicode) becomes U+FFFD instead of failing."""
    ev = parse("json", b'{"@timestamp": 0, "message": "a\\ud800b"}', CTX)
    assert ev["message"] == "a\ufffdb"


# --- journald --------------------------------------------------------------------------------------


def journal(message: object, **fields: object) -> dict[str, object]:
    rec = {"__CURSOR": "s=abc;i=1", "__REALTIME_TIMESTAMP": str(T0 * 1000), "_HOSTNAME": "web1",
           "SYSLOG_IDENTIFIER": "sshd", "_PID": "24200", "PRIORITY": "6", "SYSLOG_FACILITY": "4",
           "_SYSTEMD_UNIT": "ssh.service", "_UID": "0", "_COMM": "sshd", "_TRANSPORT": "syslog",
           "MESSAGE": message}
    rec.update(fields)
    return rec


SSHD_MESSAGES = [
    "Failed password for invalid user admin from 1.2.3.4 port 4242 ssh2",
    "Accepted publickey for ubuntu from 85.245.107.41 port 54259 ssh2: RSA SHA256:Kl8kPGZrTiz7g4FO",
    "Invalid user webmaster from 173.234.31.186 port 38926",
    "Connection closed by authenticating user root 61.177.172.13 port 21366 [preauth]",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112.95.230.3  user=root",
    "error: maximum authentication attempts exceeded for root from 10.4.4.4 port 5555 ssh2 [preauth]",
    "Server listening on 0.0.0.0 port 22.",
]


def _core(ev: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in ev.items() if k != "event.original" and not k.startswith(("log.", "journald."))}


@pytest.mark.parametrize("message", SSHD_MESSAGES, ids=[m[:40] for m in SSHD_MESSAGES])
def test_journald_and_syslog_give_the_same_sshd_event(message: str) -> None:
    """The same sshd message from journald and from a syslog line: identical except event.original, log.*, journald.*."""
    from_syslog = parse("syslog", f"<38>Mar 27 13:06:56 web1 sshd[24200]: {message}".encode(), CTX)
    from_journal = js(journal(message), "journald")
    assert _core(from_journal) == _core(from_syslog)
    assert "error.message" not in from_journal


def test_journald_specific_fields() -> None:
    """PRIORITY/SYSLOG_FACILITY -> log.syslog.*, trusted fields -> journald.*."""
    ev = js(journal("Server listening on :: port 22."), "journald")
    assert (ev["log.syslog.severity.name"], ev["log.syslog.facility.name"], ev["journald.systemd_unit"],
            ev["journald.uid"], ev["journald.transport"]) == ("info", "auth", "ssh.service", "0", "syslog")


def test_journald_binary_message_as_byte_array() -> None:
    """MESSAGE as an array of bytes (journald's form for non-UTF-8) is decoded with replacement."""
    ev = js(journal(list(b"Invalid user \xff from 1.2.3.4")), "journald")
    assert (ev["message"], ev["event.action"], ev["source.ip"]) == ("Invalid user \ufffd from 1.2.3.4",
                                                                    "invalid_user", "1.2.3.4")


def test_journald_generic_message_and_missing_fields() -> None:
    """Other programs are dataset journald; no timestamp or MESSAGE: reference time and error."""
    ev = js(journal("Started Daily apt download activities.", SYSLOG_IDENTIFIER="systemd", _PID="1"), "journald")
    assert (ev["event.dataset"], ev["process.name"], ev["process.pid"]) == ("journald", "systemd", 1)
    ev = js({"_HOSTNAME": "h"}, "journald")
    assert ev["@timestamp"] == REF and "__REALTIME_TIMESTAMP" in str(ev["error.message"])
    assert "MESSAGE missing" in str(ev["error.message"])


def test_journald_wrong_types_do_not_break_parsing() -> None:
    """Numbers, nulls and nested values where strings are expected: an event, no exception."""
    ev = js({"__REALTIME_TIMESTAMP": 12, "_HOSTNAME": None, "SYSLOG_IDENTIFIER": {"x": 1}, "_PID": [1, 2],
             "MESSAGE": None, "PRIORITY": "99"}, "journald")
    assert isinstance(ev["@timestamp"], int) and "error.message" in ev


# --- exact numbers (loads_exact) --------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from siem.parse.jsonfmt import loads_exact  # noqa: E402


@given(st.integers(min_value=-(10**40), max_value=10**40), st.text(max_size=30))
def test_integers_of_any_size_load_exactly(n: int, pad: str) -> None:
    """An integer within int64 loads as that int; a longer one is kept as its literal text, never as a
    rounded float (orjson would give 1.8446744073709552e+19 for 2**64)."""
    doc = json.dumps({"pad": pad, "n": n, "list": [n, "x"]})
    got = loads_exact(doc)
    want: object = n if -(2**63) <= n <= 2**63 - 1 else str(n)
    assert got == {"pad": pad, "n": want, "list": [want, "x"]}


@pytest.mark.parametrize("literal", ["18446744073709551616", "9223372036854775808", "-9223372036854775809",
                                     "123456789012345678901234567890"])
def test_integers_beyond_int64_inside_a_record_keep_their_digits(literal: str) -> None:
    """Where digits run long inside a record (next to 12-digit account ids and dates), the value is exact."""
    doc = '{"account": "123456789012", "when": "2024-03-27T13:06:56Z", "big": ' + literal + "}"
    assert loads_exact(doc) == {"account": "123456789012", "when": "2024-03-27T13:06:56Z", "big": literal}


@pytest.mark.parametrize("fmt", ["json", "journald"])
def test_non_ascii_digits_are_not_numbers(fmt: str) -> None:
    """'²' and '٣' pass str.isdigit(); as a time, a pid or a priority they are text, never a crash."""
    raw = json.dumps({"@timestamp": "²", "__REALTIME_TIMESTAMP": "²", "_PID": "٣", "PRIORITY": "²",
                      "MESSAGE": "x", "http.response.status_code": "²"}).encode()
    ev = parse(fmt, raw, ParseContext(now_ms=1_700_000_000_000), "t")
    assert type(ev["@timestamp"]) is int
