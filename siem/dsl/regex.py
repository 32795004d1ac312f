"""Rule regexes: RE2 only (linear time, never backtracking on a rule author's pattern), compiled one way
for the loader's checks, the batch compiler and one-event evaluation."""

from __future__ import annotations

from typing import Any

import re2


def regex_error(pattern: str, flags: str) -> str | None:
    """None if RE2 accepts the pattern, else why not (backreferences, lookaround, ...)."""
    try:
        compile_regex(pattern, flags)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"not a linear-time (RE2) regex: {why}"
    return None


def compile_regex(pattern: str, flags: str) -> Any:
    options = re2.Options()
    options.max_mem = 8 << 20
    options.case_sensitive = "i" not in flags
    options.dot_nl = "s" in flags
    options.never_capture = True
    options.log_errors = False
    prefix = "(?m)" if "m" in flags else ""
    return re2.compile(prefix + pattern, options)
