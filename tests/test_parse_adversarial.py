"""Lines built to make backtracking regexes explode (ReDoS) parse in linear time.

Every message shape a parser recognises is padded to the 64 KiB line cap with fragments that each
of its patterns looks for. A super-linear pattern takes minutes on such lines; the timeout is the
failure criterion (no timed assertion: a linear parser finishes far below it on any machine).
"""

from __future__ import annotations

import pytest

from siem.parse import MAX_LINE_BYTES, PARSERS, ParseContext, parse

CTX = ParseContext(now_ms=1_711_627_200_000)
PREFIXES = [
    "Accepted password for ", "Failed password for invalid user ", "Invalid user ", "Illegal user ",
    "Disconnected from authenticating user ", "Received disconnect from ", "Connection closed by invalid user ",
    "Connection from ", "error: maximum authentication attempts exceeded for ", "Disconnecting: Too many "
    "authentication failures for ", "Disconnecting authenticating user ", "fatal: Unable to negotiate with ",
    "Protocol major versions differ for ", "Bad protocol version identification '", "reverse mapping checking "
    "getaddrinfo for ", "Address ", "Did not receive identification string from ", "PAM 2 more authentication "
    "failures; ", "input_userauth_request: invalid user ", "message repeated 3 times: [ ",
    "pam_unix(sshd:auth): authentication failure; ", "pam_unix(sshd:session): session opened for user ",
    "pam_unix(sshd:session): session closed for user ", "pam_unix(passwd:chauthtok): password changed for ",
]
OTHER_PROGRAMS = [
    ("sudo", "alice : "), ("sudo", "pam_unix(sudo:session): session opened for user "), ("su", "(to "),
    ("su", "'su "), ("su", "Successful su for "), ("su", "+ "), ("systemd-logind", "New session "),
    ("systemd-logind", "Removed session "), ("useradd", "new user: name="), ("usermod", "add '"),
    ("usermod", "change user '"), ("userdel", "removed group '"), ("gpasswd", "user "), ("passwd", "password for '"),
    ("CRON", "pam_unix(cron:session): session opened for user "),
]
FILLERS = [
    " from ", " from 1.2.3.4", " port 1", " port ", " ssh2", ": ", " by ", " by x", "(uid=0)", " user ", "user ",
    " vs. ", "' from ", " found. Their offer: ", " [1.2.3.4]", " failed", " maps to ", ", but", "]", "[", "'",
    " of user ", "=", " ; ", "COMMAND=", " to group '", "' ", " :", " ", "a", ".",
    " from 1.2.3.4 port 22", " from a port 1 ssh2", " user a 1.2.3.4 port 1", "' from 1.2.3.4 port 1",
    " by a(uid=0)", " for a by b", ":11: x", " port 1: no matching x found. Their offer: a",
    "a=b ", "rhost=1.2.3.4 user=a ", "USER=root ; ",
]


def _pad(head: str, filler: str) -> bytes:
    line = head
    reps = (MAX_LINE_BYTES - len(line)) // len(filler)
    return (line + filler * reps).encode()[:MAX_LINE_BYTES]


PROGRAM_HEADS = [f"Mar 27 13:06:56 host sshd[1]: {p}" for p in PREFIXES] + [
    f"Mar 27 13:06:56 host {prog}[2]: {p}" for prog, p in OTHER_PROGRAMS]
OTHER_HEADS = [
    "", "<13>", "Mar 27 13:06:56 ", "Mar 27 13:06:56 host ", "<13>1 2024-03-27T13:06:56Z h a - - ",
    "<13>1 2024-03-27T13:06:56Z h a - - [x", "<13>1 2024-03-27T13:06:56Z h a - - [x a=\"",
    '1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /a"b', '1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "',
    '"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "', '{"a":',
]
OTHER_FILLERS = FILLERS + ['" 200 x " "', '" 200 x', '\\"', '\\', ' a="1"', '][x', '" "', "[[", '{"a":[']


# A quadratic pattern needs tens of seconds on one of these lines; a linear parser needs milliseconds.
@pytest.mark.timeout(20)
@pytest.mark.parametrize("head", PROGRAM_HEADS, ids=[h[30:60] for h in PROGRAM_HEADS])
def test_program_message_padded_with_pattern_fragments(head: str) -> None:
    """A recognised sshd/sudo/su/pam/logind/shadow shape + 64 KiB of fragments: parsed, no blow-up."""
    for filler in FILLERS:
        ev = parse("syslog", _pad(head, filler), CTX)
        assert isinstance(ev["@timestamp"], int)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("head", OTHER_HEADS)
def test_headers_structured_data_and_access_lines_padded(head: str) -> None:
    """Syslog headers, RFC 5424 structured data, access-log and JSON lines padded, through every format."""
    for filler in OTHER_FILLERS:
        data = _pad(head, filler)
        for fmt in PARSERS:
            assert isinstance(parse(fmt, data, CTX)["@timestamp"], int)
