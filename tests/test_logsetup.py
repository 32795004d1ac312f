"""siem.logsetup: structured logs that never carry a secret or a raw control character."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from siem.logsetup import (
    JsonFormatter,
    RedactFilter,
    TextFormatter,
    clear_secrets,
    escape_control,
    redact,
    register_secret,
    setup_logging,
)


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactFilter())
    logger = logging.getLogger(f"siem.test.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_fields() -> None:
    """A JSON line carries ts, level, logger, msg and the extra fields."""
    logger, stream = _capture(JsonFormatter())
    logger.warning("frame too long: %d bytes", 70000, extra={"input": "syslog_tcp", "limit": 65536})
    (doc,) = _json_lines(stream)
    assert {k: v for k, v in doc.items() if k != "ts"} == {
        "level": "warning", "logger": logger.name, "msg": "frame too long: 70000 bytes",
        "input": "syslog_tcp", "limit": 65536}
    assert isinstance(doc["ts"], str) and doc["ts"].endswith("Z")


def test_registered_secret_is_masked_everywhere() -> None:
    """A registered secret is masked in the message, in extra fields and in the exception text."""
    register_secret("T0ps3cret-Webhook\n")
    logger, stream = _capture(JsonFormatter())
    try:
        raise ConnectionError("POST https://hooks.example/T0ps3cret-Webhook failed")
    except ConnectionError:
        logger.exception("delivery to %s failed", "https://hooks.example/T0ps3cret-Webhook",
                         extra={"url": "https://hooks.example/T0ps3cret-Webhook"})
    text = stream.getvalue()
    (doc,) = _json_lines(stream)
    assert "T0ps3cret" not in text
    assert (doc["msg"], doc["url"]) == ("delivery to https://hooks.example/*** failed", "https://hooks.example/***")
    assert "ConnectionError: POST https://hooks.example/*** failed" in str(doc["exc"])


def test_url_password_is_masked() -> None:
    """The password in scheme://user:PASS@host is masked, the user and host are kept."""
    assert redact("route mailtos://alerts:Pa55w0rd@smtp.example.com:465?to=soc@example.com") == (
        "route mailtos://alerts:***@smtp.example.com:465?to=soc@example.com")


def test_credential_query_parameters_are_masked() -> None:
    """?token=, &apikey= and friends lose their values; harmless parameters stay."""
    assert redact("jsons://h.example/hook?token=abc123&format=json&apikey=k-9") == (
        "jsons://h.example/hook?token=***&format=json&apikey=***")


def test_authorization_header_is_masked() -> None:
    """Authorization: Bearer xyz keeps the scheme and loses the credential."""
    assert redact("headers: Authorization: Bearer eyJhbGciOi.x.y, Accept: */*") == (
        "headers: Authorization: Bearer ***, Accept: */*")


def test_password_fields_are_masked() -> None:
    """password=, "secret": "..." and api_key: lose their values."""
    assert redact('password=hunter2 {"secret": "abc"} api_key: zzz') == (
        'password=*** {"secret": "***"} api_key: ***')


def test_sshd_text_is_not_mangled() -> None:
    """Ordinary log text that mentions passwords is left alone."""
    text = "Failed password for invalid user admin from 192.0.2.7 port 4242 ssh2"
    assert redact(text) == text


def test_explicit_secrets_argument() -> None:
    """Secrets passed to redact() directly are masked without registering them."""
    assert redact("key is q9q9q9", secrets=["q9q9q9"]) == "key is ***"


def test_control_characters_are_escaped_in_messages() -> None:
    """Attacker text with CR/LF, ANSI escapes, NUL, C1 and BiDi overrides cannot forge lines."""
    logger, stream = _capture(TextFormatter())
    logger.info("bad user %s", "root\r\n2026-01-01 INFO forged\x1b[31m\x00\x85\u202egnp.exe")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("bad user root\\r\\n2026-01-01 INFO forged\\x1b[31m\\x00\\x85\\u202egnp.exe")


def test_control_characters_are_escaped_in_extras() -> None:
    """Extra fields are escaped too (the text format would otherwise print them raw)."""
    logger, stream = _capture(TextFormatter())
    logger.info("dropped", extra={"peer_host": "a\nb"})
    assert stream.getvalue().splitlines()[0].endswith("dropped peer_host=a\\nb")


def test_escape_control_keeps_printable_unicode() -> None:
    """Printable non-ASCII text (names, accents) is kept as is."""
    assert escape_control("Zoë 東京 ok\t") == "Zoë 東京 ok\\t"


def test_text_format_shows_traceback_lines() -> None:
    """The text format prints the traceback on its own lines, redacted."""
    register_secret("pw-in-traceback")
    logger, stream = _capture(TextFormatter())
    try:
        raise ValueError("pw-in-traceback")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert (lines[1], lines[-1]) == ("Traceback (most recent call last):", "ValueError: ***")


def test_bad_format_arguments_do_not_lose_the_record() -> None:
    """A message whose arguments do not fit its format string is still logged."""
    logger, stream = _capture(JsonFormatter())
    logger.error("count %d", "not-a-number")
    (doc,) = _json_lines(stream)
    assert doc["msg"] == "'count %d' (log formatting failed: TypeError)"


def test_setup_logging_json_when_not_a_tty() -> None:
    """auto picks JSON for a stream that is not a terminal."""
    stream = io.StringIO()
    handler = setup_logging("info", "auto", stream=stream)
    try:
        logging.getLogger("siem.x").info("hello", extra={"n": 1})
        logging.getLogger("siem.x").debug("hidden")
    finally:
        logging.getLogger().removeHandler(handler)
    assert [(d["msg"], d["n"]) for d in _json_lines(stream)] == [("hello", 1)]


def test_setup_logging_text_on_a_tty() -> None:
    """auto picks the text format when stderr is a terminal."""
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        handler = setup_logging("info", "auto", stream=tty)
        logging.getLogger().removeHandler(handler)
    os.close(master)
    assert isinstance(handler.formatter, TextFormatter)


def test_setup_logging_rejects_bad_values() -> None:
    """Unknown formats and levels are refused with a message naming the value."""
    with pytest.raises(ValueError, match="'xml'"):
        setup_logging("info", "xml")
    with pytest.raises(ValueError, match="'loud'"):
        setup_logging("loud", "json")


@pytest.mark.timeout(60)
def test_journald_stream_gets_priority_prefix(tmp_path: os.PathLike[str]) -> None:
    """When JOURNAL_STREAM names stderr, JSON lines start with the syslog priority for journald."""
    script = (
        "import logging, os, sys\n"
        "st = os.fstat(2); os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        "from siem.logsetup import setup_logging\n"
        "setup_logging('info', 'auto')\n"
        "logging.getLogger('siem').error('disk full')\n"
        "logging.getLogger('siem').info('fine')\n"
    )
    err_path = os.path.join(tmp_path, "stderr")
    with open(err_path, "w") as err:
        subprocess.run([sys.executable, "-c", script], stderr=err, check=True, timeout=30)
    with open(err_path) as f:
        lines = f.read().splitlines()
    assert [(line[:3], json.loads(line[3:])["msg"]) for line in lines] == [("<3>", "disk full"), ("<6>", "fine")]


def test_undecodable_bytes_do_not_lose_the_record() -> None:
    """Text decoded with surrogateescape (invalid UTF-8 from a sender) is escaped and stays writable."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, like stderr under journald
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("siem.test.surrogates")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning("bad host %s", b"web\xff1".decode("utf-8", "surrogateescape"))
    stream.flush()
    (doc,) = [json.loads(line) for line in stream.buffer.getvalue().decode().splitlines()]  # type: ignore[attr-defined]
    assert doc["msg"] == "bad host web\\udcff1"
