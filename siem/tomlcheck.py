"""The one checker for every TOML table of the config: ``[daemon]``, ``[inputs.*]``, ``[log]``, ``[kafka]``
and ``[alerting]`` all report their problems through it, in one shape.

Each component still owns its table (its keys, defaults and ranges live next to the code that uses them,
written as a list of ``r.<kind>(key, default, bounds)`` reads); this module owns how a value is checked:

* **types**: ``true`` is never an integer, an integer never a duration or a string;
* **durations** carry a unit: ``"30s"``, ``"5m"``, ``"250ms"`` (units ms s m h d w). A bare number is an
  error, never silently milliseconds (``lateness = 10`` would have meant 10 ms);
* **sizes**: ``65536`` or ``"64KiB"`` (B, KB, KiB, MB, MiB, GB, GiB);
* **unknown keys** are errors, with the closest known key offered (``did you mean 'protocol'?``, difflib);
* every problem is an :class:`~siem.errors.Issue` whose message starts with the dotted path of the value
  (``inputs.tcp.prot: ...``, ``alerting.routes[oncall].urls_file: ...``); nothing is raised.

``tomllib`` keeps no positions, so :func:`locate_issues` adds them afterwards for the whole file at once:
it finds the line of each dotted path by scanning the TOML source (table headers ``[a.b]``, arrays of
tables ``[[a.b]]`` named by their ``name`` key or their index, ``key =`` lines inside them, dotted keys and
inline tables by their first line). An issue about a key that is missing points at its table's header.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from siem.errors import Issue, Location
from siem.timeutil import parse_duration_ms

# --- values ---------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3,
               "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size_bytes(value: int | str) -> int:
    """65536 or '64KiB' -> 65536; units B, KB, KiB, MB, MiB, GB, GiB; raises ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE_RE.match(str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 65536, 64KiB, 256MiB)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def duration_value_ms(value: object) -> int:
    """A config duration in ms: a string with a unit. TypeError for a bare number or another type (saying
    how to write it), ValueError for a string that is not a duration."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected a duration such as \"30s\" or \"5m\", got {type(value).__name__} {value!r}")
    if not isinstance(value, str):
        raise TypeError(f"a duration needs a unit: write \"{value}s\" or \"{value}ms\" (units ms, s, m, h, d, "
                         f"w), not {value!r}")
    text = value.strip()
    if text.isdigit():
        raise ValueError(f"a duration needs a unit: write \"{text}s\" or \"{text}ms\" (units ms, s, m, h, d, w), "
                         f"not {value!r}")
    return parse_duration_ms(text)


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_key(where: str, key: str, known: Iterable[str]) -> Issue:
    known = sorted(known)
    return Issue("unknown-key", f"{where}.{key}: unknown key{did_you_mean(key, known)} (known: {', '.join(known)})")


def type_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)


# --- one table ------------------------------------------------------------------------------------


class TableReader:
    """Reads the values of one TOML table; every problem becomes an Issue in ``self.issues`` (shared when
    ``issues`` is given). ``known`` None skips the unknown-key check (the caller does its own)."""

    def __init__(self, table: object, where: str, known: Iterable[str] | None,
                 issues: list[Issue] | None = None) -> None:
        self.where = where
        self.issues: list[Issue] = issues if issues is not None else []
        if not isinstance(table, dict):
            self.issues.append(Issue("wrong-type", f"{where}: expected a table, got {type(table).__name__}"))
            table = {}
        self.table: dict = table
        if known is not None:
            known = set(known)
            for key in sorted(set(table) - known):
                self.issues.append(unknown_key(where, key, known))

    def bad(self, key: str, code: str, message: str, severity: str = "error") -> None:
        self.issues.append(Issue(code, f"{self.where}.{key}: {message}", severity=severity))

    def get(self, key: str, kind: type | tuple[type, ...], default: object) -> object:
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            self.bad(key, "wrong-type", f"expected {type_name(kinds)}, got {type(value).__name__} {value!r}")
            return default
        return value

    def str_(self, key: str, default: str | None) -> str | None:
        """A string; empty allowed."""
        return self.get(key, str, default)  # type: ignore[return-value]

    def string(self, key: str, default: str | None) -> str | None:
        """A non-empty string."""
        value = self.get(key, str, default)
        if isinstance(value, str) and not value:
            self.bad(key, "bad-value", "must not be empty")
            return default
        return value  # type: ignore[return-value]

    def boolean(self, key: str, default: bool) -> bool:
        return bool(self.get(key, bool, default))

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            self.bad(key, "bad-value", f"expected one of {', '.join(choices)}, got {value!r}"
                     f"{did_you_mean(str(value), choices)}")
            return default
        return value  # type: ignore[return-value]

    def int_range(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.get(key, int, default)
        if not isinstance(value, int) or not lo <= value <= hi:
            self.bad(key, "bad-value", f"must be {lo}..{hi}, got {value!r}")
            return default
        return value

    integer = int_range

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.get(key, (int, float), default)
        if not isinstance(value, (int, float)) or not lo <= value <= hi:
            self.bad(key, "bad-value", f"must be {lo:g}..{hi:g}, got {value!r}")
            return default
        return float(value)

    def size(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.get(key, (int, str), None)
        if value is None:
            return default
        try:
            n = parse_size_bytes(value)  # type: ignore[arg-type]
        except ValueError as exc:
            self.bad(key, "bad-value", str(exc))
            return default
        if not lo <= n <= hi:
            self.bad(key, "bad-value", f"must be {lo}..{hi} bytes, got {n}")
            return default
        return n

    def duration_ms(self, key: str, default_ms: int, lo_ms: int = 0, hi_ms: int | None = None) -> int:
        if key not in self.table:
            return default_ms
        try:
            ms = duration_value_ms(self.table[key])
        except TypeError as exc:
            self.bad(key, "wrong-type", str(exc))
            return default_ms
        except ValueError as exc:
            self.bad(key, "bad-value", str(exc))
            return default_ms
        if ms < lo_ms or (hi_ms is not None and ms > hi_ms):
            span = f"between {_ms_text(lo_ms)} and {_ms_text(hi_ms)}" if hi_ms is not None else \
                f"at least {_ms_text(lo_ms)}"
            self.bad(key, "bad-value", f"must be {span}, got {self.table[key]!r}")
            return default_ms
        return ms

    def str_list(self, key: str, default: list[str] | tuple[str, ...], required: bool = False) -> Any:
        """A list of non-empty strings (a single string is a list of one); the type of ``default``."""
        if key not in self.table:
            if required:
                self.bad(key, "missing-key", "required")
            return default
        value = self.get(key, (list, str), None)
        if value is None:
            return default
        items: list[object] = [value] if isinstance(value, str) else list(value)  # type: ignore[arg-type]
        if not all(isinstance(v, str) and v for v in items):
            self.bad(key, "wrong-type", "expected a list of non-empty strings")
            return default
        if required and not items:
            self.bad(key, "bad-value", "must not be empty")
        return list(map(str, items)) if isinstance(default, list) else tuple(map(str, items))

    def table_(self, key: str) -> dict | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.bad(key, "wrong-type", f"expected a table, got {type(value).__name__}")
            return None
        return value


def _ms_text(ms: int | None) -> str:
    if ms is None:
        return "-"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# --- positions ------------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\-"' ]+?)\s*=""")
_PATH = re.compile(r"^([A-Za-z0-9_.\-\[\]\"'*]+):\s")
_NAME = re.compile(r"""^\s*name\s*=\s*["']([^"']*)["']""")


def _split_key(text: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', text)
    return [a or b or c for a, b, c in parts]


def index_toml(text: str) -> dict[str, int]:
    """Dotted path -> 1-based line, for every table header and key line of a TOML document. Arrays of
    tables are indexed both as ``a.b[N]`` and, when they have a ``name``, ``a.b[NAME]``."""
    lines = text.splitlines()
    out: dict[str, int] = {}
    counts: dict[str, int] = {}
    prefix = ""
    depth_open = 0  # inside a multi-line array or inline table: no keys of ours there
    for no, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if depth_open:
            depth_open += stripped.count("[") + stripped.count("{") - stripped.count("]") - stripped.count("}")
            depth_open = max(depth_open, 0)
            continue
        h = _HEADER.match(line)
        if h and "=" not in line.split("]")[0]:
            name = ".".join(_split_key(h.group(2)))
            if h.group(1) == "[[":
                i = counts.get(name, 0)
                counts[name] = i + 1
                prefix = f"{name}[{i}]"
                out.setdefault(prefix, no)
                for later in lines[no:]:  # the element's name, for paths like routes[oncall]
                    if _HEADER.match(later):
                        break
                    nm = _NAME.match(later)
                    if nm:
                        out.setdefault(f"{name}[{nm.group(1)}]", no)
                        break
            else:
                prefix = name
            out.setdefault(prefix, no)
            continue
        k = _KEY.match(line)
        if k:
            path = ".".join([prefix, *_split_key(k.group(1))] if prefix else _split_key(k.group(1)))
            out.setdefault(path, no)
            value = line[k.end():]
            depth_open = max(value.count("[") + value.count("{") - value.count("]") - value.count("}"), 0)
    return out


def _aliases(path: str, index: dict[str, int]) -> int | None:
    """The line of ``path`` or of its closest ancestor that the index knows."""
    path = path.rstrip(".")
    while path:
        if path in index:
            return index[path]
        m = re.match(r"^(.*)\[([^\]]*)\]$", path)
        if m:  # routes[oncall] not found: try without the element
            path = m.group(1)
            continue
        if "." not in path:
            return None
        path = path.rsplit(".", 1)[0]
    return None


def locate_issues(issues: list[Issue], source: str, text: str) -> list[Issue]:
    """``issues`` with a Location (and the line as snippet) where their dotted path is found in ``text``."""
    index = index_toml(text)
    lines = text.splitlines()
    out = []
    for issue in issues:
        m = _PATH.match(issue.message) if issue.location is None else None
        line = _aliases(m.group(1), index) if m else None
        if line is None:
            out.append(issue)
            continue
        src = lines[line - 1]
        col = len(src) - len(src.lstrip()) + 1
        out.append(replace(issue, location=Location(source, line, col), snippet=src))
    return out

