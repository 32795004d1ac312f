"""Real public log excerpts (tests/data/parse, see its README) parse without errors and with the right meaning.

Each line's expected action is derived from its text by simple, independent substring rules, so a
parser that drops or mislabels a real variant fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from siem.parse import ParseContext, parse

DATA = Path(__file__).parent / "data" / "parse"
CTX = ParseContext(now_ms=1_711_627_200_000)  # 2024-03-28T12:00:00Z
AUTH_LOGS = ["loghub_openssh.log", "secrepo_auth.log", "elastic_auth.log", "honeynet_secure.log", "loghub_linux.log"]

# (substring of the sshd message, expected event.action, expected event.outcome or None)
SSHD_RULES: list[tuple[str, str | None, str | None]] = [
    ("more authentication failure", None, None),  # PAM's summary line: no second auth_failure
    ("Accepted ", "ssh_login", "success"),
    ("Failed ", "ssh_login", "failure"),
    ("Invalid user ", "invalid_user", "failure"),
    ("Illegal user ", "invalid_user", "failure"),
    ("maximum authentication attempts exceeded", "max_auth_tries", "failure"),
    ("Too many authentication failures", "max_auth_tries", "failure"),
    ("authentication failure;", "auth_failure", None),
    ("Received disconnect from", "disconnect", None),
    ("Disconnected from", "disconnect", None),
    ("Connection closed by", "disconnect", None),
    ("reverse mapping checking", "reverse_mapping_failed", None),
    ("Bad protocol version identification", "protocol_mismatch", None),
    ("Unable to negotiate", "negotiation_failed", None),
    ("session opened for user", "session_opened", "success"),
    ("session closed for user", "session_closed", None),
]
_IP = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")


def lines(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("name", AUTH_LOGS)
def test_auth_log_lines_parse_without_errors(name: str) -> None:
    """Every line of the real auth logs is read without error.message, with host and program."""
    for line in lines(name):
        ev = parse("syslog", line.encode(), CTX)
        if len(line) < 16:  # secrepo's auth.log has a line cut inside its timestamp
            assert "error.message" in ev and ev["message"] == line
            continue
        assert "error.message" not in ev, (line, ev.get("error.message"))
        assert isinstance(ev["@timestamp"], int) and ev["host.name"] and ev["process.name"], line


@pytest.mark.parametrize("name", AUTH_LOGS)
def test_sshd_lines_get_the_action_their_text_says(name: str) -> None:
    """sshd lines: action and outcome as the message text says, source.ip the IP in the text."""
    checked = 0
    for line in lines(name):
        if " sshd[" not in line and " sshd(pam_unix)[" not in line:
            continue
        ev = parse("syslog", line.encode(), CTX)
        assert ev["event.dataset"] == "sshd", line
        msg = str(ev["message"])
        for needle, action, outcome in SSHD_RULES:
            if needle in msg:
                assert ev.get("event.action") == action, line
                if outcome is not None:
                    assert ev.get("event.outcome") == outcome, line
                ip = _IP.search(msg)
                if ip is not None and action != "session_opened":
                    assert ev.get("source.ip") == ip.group(1), line
                checked += 1
                break
    assert checked > 0


def test_sudo_su_and_account_lines_of_the_elastic_auth_log() -> None:
    """sudo commands, su, useradd/groupadd, chpasswd and logind lines get their dataset and action."""
    seen: dict[tuple[object, object], int] = {}
    for line in lines("elastic_auth.log"):
        ev = parse("syslog", line.encode(), CTX)
        key = (ev["event.dataset"], ev.get("event.action"))
        seen[key] = seen.get(key, 0) + 1
        if " COMMAND=" in line:
            assert (ev["event.dataset"], ev["event.action"], ev["event.outcome"]) == ("sudo", "sudo_command", "success")
            assert ev["process.command_line"] == line.split("COMMAND=", 1)[1]
            assert ev["user.target.name"] == "root"
    for key in [("sudo", "sudo_command"), ("systemd-logind", "session_new"), ("systemd-logind", "session_removed"),
                ("pam", "session_opened"), ("sshd", "ssh_login")]:
        assert seen.get(key, 0) > 0, key


@pytest.mark.parametrize(("name", "fmt"), [("elastic_apache.log", "apache"), ("hackers_access.log", "apache"),
                                           ("secrepo_access.log", "nginx"), ("ocatak_acunetix.txt", "apache")])
def test_access_log_lines_parse_without_errors(name: str, fmt: str) -> None:
    """Real access logs (including quote-wrapped scanner logs with escapes) give complete web events."""
    for line in lines(name):
        ev = parse(fmt, line.encode("utf-8", "surrogateescape"), CTX)
        assert "error.message" not in ev, (line, ev.get("error.message"))
        assert ev["source.ip"] and ev["http.request.method"] and isinstance(ev["http.response.status_code"], int)
        assert str(ev["url.original"]).startswith(str(ev["url.path"])) or "url.domain" in ev


@pytest.mark.parametrize("name", ["aws_docs_cloudtrail.jsonl", "otrf_cloudtrail.jsonl"])
def test_cloudtrail_records_parse_without_errors(name: str) -> None:
    """AWS documentation and OTRF records: action, provider, outcome and account on every event."""
    for line in lines(name):
        ev = parse("cloudtrail", line.encode(), CTX)
        assert "error.message" not in ev, ev.get("error.message")
        assert ev["event.action"] and ev["event.provider"] and ev["event.outcome"] in ("success", "failure")
        assert ev["cloud.account.id"] and ev["event.dataset"] == "aws.cloudtrail"
