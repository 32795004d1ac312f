"""Logs of the daemon itself: structured, on stderr, never carrying a secret or a raw control character.

Output format (``setup_logging(fmt=...)``):

    auto   JSON lines when stderr is not a terminal, human-readable text when it is (the default)
    json   one JSON object per line: ts, level, logger, msg, the record's ``extra`` fields, exc
    text   ``2026-11-25 14:50:00.123Z INFO  siem.collect.syslog: listening address=127.0.0.1:5514``

Under systemd (``JOURNAL_STREAM`` names our stderr) each JSON line starts with ``<N>``, the syslog
priority, which journald strips and stores as PRIORITY, so ``journalctl -p warning`` works.

Every record passes :class:`RedactFilter` before any formatter sees it:

* secrets are replaced by ``***``: values registered with :func:`register_secret` (webhook tokens,
  SMTP passwords, whole apprise URLs from the config), URL passwords (``mailtos://user:***@host``),
  credential query parameters (``?token=***``) and header-like fields (``Authorization: Bearer ***``,
  ``password=***``);
* control characters from attacker-controlled text (C0 including CR/LF, DEL, C1, and the Unicode
  line separators and bidirectional overrides) are escaped as ``\\n``, ``\\x1b``, ``\\u202e``, so a
  log line can neither be forged nor repaint a terminal.

Log with fields rather than formatting attacker text into the message where you can:
``log.warning("frame too long", extra={"input": name, "bytes": n})``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO

SECRET_MASK = "***"

# --- escaping -------------------------------------------------------------------------------------

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_table(keep: str) -> dict[int, str]:
    table: dict[int, str] = {}
    for code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]:
        char = chr(code)
        if char not in keep:
            table[code] = _NAMED_ESCAPES.get(char, f"\\x{code:02x}")
    # Unicode line/paragraph separators and the bidirectional embeddings, overrides and isolates
    # ("Trojan Source"): they reorder or break what an operator sees.
    # Lone surrogates (undecodable bytes kept with surrogateescape) would make the UTF-8 stream
    # writer raise, losing the record, so they are escaped as well.
    for code in [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F,
                 *range(0xD800, 0xE000)]:
        table[code] = f"\\u{code:04x}"
    return table


_ESCAPE_ALL = _escape_table(keep="")
_ESCAPE_KEEP_NEWLINES = _escape_table(keep="\n")


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters made visible: ``"a\\nb\\x1b[2J"`` -> ``'a\\\\nb\\\\x1b[2J'``.
    Backslashes are left alone, so the result is for reading, not for round-tripping."""
    return text.translate(_ESCAPE_KEEP_NEWLINES if keep_newlines else _ESCAPE_ALL)


# --- redaction ------------------------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None

# scheme://user:PASSWORD@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/:@?#]*):([^\s@/?#]*)@")
# ?token=...&password=... (names of parameters that carry credentials in webhook and API URLs)
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:access_token|api[_-]?key|apikey|auth|auth[_-]?token|client[_-]?secret|code|key|pass|passwd|"
    r"password|private[_-]?key|pwd|routing[_-]?key|secret|sig|signature|token|x-amz-signature|"
    r"x-amz-credential|x-amz-security-token)=)[^&;#\s\"']+"
)
# Authorization: Bearer xyz / Proxy-Authorization: Basic abc / X-Api-Key: ... (header-like fields)
_HEADER_SECRET = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|x-auth-token|api-key|cookie|set-cookie)(\"?\s*[:=]\s*\"?)"
    r"(?:(bearer|basic|token|digest|negotiate)\s+)?([^\s\"',;]+)"
)
# password=xyz, "secret": "xyz", token: xyz (but not "Failed password for root")
_FIELD_SECRET = re.compile(
    r"(?i)\b(password|passwd|passphrase|pwd|secret|client_secret|token|api[_-]?key|private[_-]?key)"
    r"(\"?\s*[:=]\s*\"?)(?!\*\*\*)([^\s\"',;&]+)"
)


def register_secret(value: str) -> None:
    """Never let ``value`` appear in a log line or a STATUS line again (this process, any logger).
    Register every secret the config resolves (credential files, environment values, apprise URLs).
    Surrounding whitespace is ignored; empty values are ignored."""
    global _secret_pattern
    value = value.strip()
    if not value:
        return
    forms = {value, json.dumps(value)[1:-1]}  # also as it appears inside JSON text
    with _SECRETS_LOCK:
        _SECRETS.update(forms)
        # longest first, so a URL is masked whole rather than around a registered password inside it
        ordered = sorted(_SECRETS, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def clear_secrets() -> None:
    """Forget every registered secret (tests; a reload re-registers the new config's secrets)."""
    global _secret_pattern
    with _SECRETS_LOCK:
        _SECRETS.clear()
        _secret_pattern = None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with registered ``secrets``, the extra ``secrets`` given here, URL passwords,
    credential query parameters and header-like credentials replaced by ``***``."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(SECRET_MASK, text)
    for secret in secrets:
        secret = secret.strip()
        if secret:
            text = text.replace(secret, SECRET_MASK)
    text = _URL_PASSWORD.sub(rf"\1:{SECRET_MASK}@", text)
    text = _QUERY_SECRET.sub(rf"\1{SECRET_MASK}", text)
    text = _HEADER_SECRET.sub(_mask_header, text)
    return _FIELD_SECRET.sub(rf"\1\2{SECRET_MASK}", text)


def _mask_header(m: re.Match[str]) -> str:
    scheme = f"{m.group(3)} " if m.group(3) else ""
    return f"{m.group(1)}{m.group(2)}{scheme}{SECRET_MASK}"


# --- the filter and the formatters ----------------------------------------------------------------

# attributes every LogRecord has; anything else on a record came from `extra=`
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _clean(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return escape_control(redact(value if isinstance(value, str) else str(value)))


class RedactFilter(logging.Filter):
    """Rewrites each record in place: message, ``extra`` fields and exception text redacted and
    escaped. Attach it to handlers (not loggers) so records from every logger pass through it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_siem_clean", False):
            return True
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not lose the record
            message = f"{record.msg!r} (log formatting failed: {exc.__class__.__name__})"
        record.msg = escape_control(redact(message))
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                record.__dict__[key] = _clean(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = escape_control(redact(record.exc_text), keep_newlines=True)
        record.exc_info = None  # exc_text now holds the (redacted) traceback
        if record.stack_info:
            record.stack_info = escape_control(redact(record.stack_info), keep_newlines=True)
        record._siem_clean = True
        return True


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _iso(created: float) -> str:
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((created - whole) * 1000):03d}Z"


_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JsonFormatter(logging.Formatter):
    """One JSON object per line. With ``journald_prefix`` each line starts with ``<priority>``."""

    def __init__(self, journald_prefix: bool = False) -> None:
        super().__init__()
        self.journald_prefix = journald_prefix

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        line = json.dumps(doc, ensure_ascii=False, default=str)
        if self.journald_prefix:
            level = max((lv for lv in _SYSLOG_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
            line = f"<{_SYSLOG_PRIORITY[level]}>{line}"
        return line


class TextFormatter(logging.Formatter):
    """Human-readable: ``2026-11-25T14:50:00.123Z INFO  logger: message key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{_iso(record.created)} {record.levelname:<5} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


def journald_stream(stream: IO[str]) -> bool:
    """True when ``stream`` is connected to journald: JOURNAL_STREAM holds its ``device:inode``."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


FORMATS = ("auto", "json", "text")


def setup_logging(level: str = "info", fmt: str = "auto", stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger to one stderr handler with redaction; returns that handler.
    Idempotent: a second call replaces the handler the first one installed."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use debug, info, warning, error)")
    out = sys.stderr if stream is None else stream
    is_tty = hasattr(out, "isatty") and out.isatty()
    formatter: logging.Formatter
    if fmt == "text" or (fmt == "auto" and is_tty):
        formatter = TextFormatter()
    else:
        formatter = JsonFormatter(journald_prefix=journald_stream(out))
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RedactFilter())
    handler._siem_handler = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_siem_handler", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    return handler
