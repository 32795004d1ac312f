"""A small checker for one TOML table: every problem becomes an Issue naming its dotted path."""

from __future__ import annotations

from collections.abc import Iterable

from siem.errors import Issue
from siem.timeutil import parse_duration_ms


class TableReader:
    def __init__(self, table: dict, where: str, known: Iterable[str]) -> None:
        self.table = table
        self.where = where
        self.issues: list[Issue] = []
        known = set(known)
        for key in sorted(set(table) - known):
            self.bad(key, "unknown-key", f"unknown key (known: {', '.join(sorted(known))})")

    def bad(self, key: str, code: str, message: str) -> None:
        self.issues.append(Issue(code, f"{self.where}.{key}: {message}"))

    def get(self, key: str, kind: type | tuple[type, ...], default: object) -> object:
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in kinds)
            self.bad(key, "wrong-type", f"expected {names}, got {type(value).__name__} {value!r}")
            return default
        return value

    def str_(self, key: str, default: str | None) -> str | None:
        return self.get(key, str, default)  # type: ignore[return-value]

    def int_range(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.get(key, int, default)
        if not isinstance(value, int) or not lo <= value <= hi:
            self.bad(key, "bad-value", f"must be {lo}..{hi}, got {value}")
            return default
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            self.bad(key, "bad-value", f"expected one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def duration_ms(self, key: str, default_ms: int, lo_ms: int = 0) -> int:
        value = self.get(key, (str, int), None)
        if value is None:
            return default_ms
        if isinstance(value, int):
            ms = value
        else:
            try:
                ms = parse_duration_ms(str(value))
            except ValueError as exc:
                self.bad(key, "bad-value", str(exc))
                return default_ms
        if ms < lo_ms:
            self.bad(key, "bad-value", f"must be at least {lo_ms} ms, got {ms} ms")
            return default_ms
        return ms

    def str_list(self, key: str, default: list[str]) -> list[str]:
        value = self.get(key, (list, str), default)
        items: list[object] = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []
        if not all(isinstance(v, str) and v for v in items):
            self.bad(key, "wrong-type", "expected a list of non-empty strings")
            return default
        return [str(v) for v in items]
