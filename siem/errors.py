"""The exception tree of siem. Small on purpose:

    SiemError                 base; never raised itself
    ├── RuleError             rule files could not be loaded; carries every Issue found
    ├── ConfigError           the TOML config is invalid; carries every Issue found
    ├── InputError            one piece of outside input was refused (oversized, bomb, bad frame)
    └── StateError            a state file, log segment or outbox is corrupt or unwritable

User-facing errors carry their issues so that a CLI can print all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a text file, 1-based line and column."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Issue:
    """One mistake a rule or config author made, with where and how to fix it."""

    code: str
    message: str
    location: Location | None = None
    snippet: str = ""  # the source line, shown with a caret under location.column
    context: str = ""  # e.g. "in rule 'ssh_bruteforce'"
    severity: str = "error"  # or "warning"; warnings never stop loading

    def to_json(self) -> dict[str, object]:
        """The issue as data (``--format json`` of ``siem rules check`` and ``siem config check``)."""
        loc = self.location
        return {"code": self.code, "severity": self.severity, "message": self.message, "context": self.context,
                "location": None if loc is None else {"path": loc.path, "line": loc.line, "column": loc.column}}

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        out = [f"{where}{self.severity}[{self.code}]: {self.message}"]
        if self.context:
            out.append(f"  {self.context}")
        if self.snippet and self.location:
            out.append(f"    {self.snippet}")
            out.append("    " + " " * max(self.location.column - 1, 0) + "^")
        return "\n".join(out)


class SiemError(Exception):
    """Base of every error siem raises on purpose."""


@dataclass
class _WithIssues(SiemError):
    issues: list[Issue] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(i.render() for i in self.issues)


class RuleError(_WithIssues):
    """Rule files could not be loaded."""


class ConfigError(_WithIssues):
    """The configuration is invalid."""


class InputError(SiemError):
    """One piece of outside input was refused."""


class StateError(SiemError):
    """A state file is corrupt or cannot be written."""

