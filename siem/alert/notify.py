"""Sending one notification to one destination through apprise. Blocking: call it from a worker thread.

apprise is a transport, not a queue: it keeps nothing, and its per-service throttle sleeps the calling
thread. ``send`` therefore runs in ``asyncio.to_thread`` behind our own outbox, one destination URL per
call, so one slow receiver never holds up another's row.

Failures: apprise reports success or failure per call, not the reason in a structured way (no HTTP status
or SMTP code reaches us). We keep the warning/error log lines apprise emits during the call (attached to
the result in apprise 2.x; captured from the calling thread's log records in 1.x) as ``last_error``, and treat EVERY failure as transient: a 4xx from a webhook or a
550 from an SMTP server is retried with back-off like a 503 until ``max_retry_age``, then the row goes to
the fallback route. A URL apprise cannot parse at all is permanent and dead at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from siem.alert.render import neutralise

_local = threading.local()


class _ThreadCapture(logging.Handler):
    """Collects apprise log records emitted by the thread that is currently sending."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(_local, "sink", None)
        if sink is not None and len(sink) < 20:
            try:
                sink.append(record.getMessage())
            except Exception:  # a broken log format must not break delivery
                sink.append(str(record.msg))


_capture_installed = False
_install_lock = threading.Lock()


def _install_capture() -> None:
    global _capture_installed
    with _install_lock:
        if not _capture_installed:
            handler = _ThreadCapture(level=logging.WARNING)
            logging.getLogger("apprise").addHandler(handler)
            _capture_installed = True


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    permanent: bool  # the URL itself is unusable; retrying cannot help
    error: str


# apprise's notify types colour and label the message on many channels.
_NOTIFY_TYPE = {"critical": "failure", "high": "failure", "medium": "warning", "low": "info", "info": "info"}


def send(url: str, title: str, body: str, body_format: str, severity: str = "") -> SendResult:
    """Deliver to one apprise URL. Never raises; the error text never contains the URL."""
    import apprise

    _install_capture()
    _local.sink = []
    try:
        asset = apprise.AppriseAsset(storage_mode="memory")
        ap = apprise.Apprise(asset=asset)
        if not ap.add(url):
            return SendResult(False, True, "apprise cannot use this URL")
        fmt = apprise.NotifyFormat.HTML if body_format == "html" else apprise.NotifyFormat.TEXT
        ntype = apprise.NotifyType(_NOTIFY_TYPE.get(severity, "info"))
        result = ap.notify(body=body or " ", title=title, body_format=fmt, notify_type=ntype)
        if bool(result):
            return SendResult(True, False, "")
        messages = _result_messages(result) or list(_local.sink)
        lines = [neutralise(m, 300, single_line=True) for m in messages[-5:]]
        return SendResult(False, False, "; ".join(lines) or "apprise reported a failure")
    except Exception as exc:  # apprise plugins raise a variety of things; one bad send must not kill the worker
        return SendResult(False, False, f"{type(exc).__name__}: {neutralise(str(exc), 300, single_line=True)}")
    finally:
        _local.sink = None


def _result_messages(result: object) -> list[str]:
    """Warning and error lines apprise (2.x) attached to a result; [] for apprise 1.x's plain bool."""
    out: list[str] = []
    try:
        for service in result:  # type: ignore[attr-defined]
            for attempt in getattr(service, "attempts", []):
                for entry in getattr(attempt, "logs", []):
                    if getattr(entry, "level", "") in ("WARNING", "ERROR", "CRITICAL"):
                        out.append(str(getattr(entry, "message", entry)))
    except TypeError:
        return []
    return out


def redact(url: str) -> str:
    """A URL safe to print: apprise's privacy form, or just the scheme."""
    import apprise

    obj = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if obj is not None:
        try:
            return str(obj.url(privacy=True))
        except Exception:
            pass
    return (url.split("://", 1)[0] if "://" in url else "?") + "://..."
