"""The typed syntax tree of the rule DSL: frozen dataclasses, built by grammar.py, resolved by loader.py.

Expression nodes compare and hash by content only (locations are excluded), so identical
sub-expressions in different rules are the same key in the compiler's per-batch memo: that is how a
sub-expression shared by many rules is computed once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from siem.errors import Location


def _loc() -> Location | None:
    return field(default=None, compare=False, hash=False, repr=False)  # type: ignore[return-value]


# --- expressions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """field OP literal, with OP in == != < <= > >=; `ci` for the case-insensitive i== / i!=."""

    field: str
    op: str
    value: str | int | float | bool
    ci: bool = False
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class FieldCompare:
    """field OP field(other), two fields of one event: OP in == != contains startswith endswith
    (`ci` for i== i!= icontains istartswith iendswith)."""

    field: str
    op: str
    other: str
    ci: bool = False
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class InSet:
    field: str
    values: tuple[str | int | float | bool, ...]
    ci: bool = False
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class InCidr:
    field: str
    networks: tuple[str, ...]
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class StrMatch:
    """contains / startswith / endswith any of `values`."""

    field: str
    kind: str
    values: tuple[str, ...]
    ci: bool = False
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class Matches:
    field: str
    pattern: str
    flags: str = ""
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class Exists:
    field: str
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class Not:
    arg: "Expr"


@dataclass(frozen=True, slots=True)
class And:
    args: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Or:
    args: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class MacroRef:
    name: str
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class ListRef:
    """A named list used where values are expected; replaced by its values when loading."""

    name: str
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class Each:
    """``any`` / ``all`` elements of the list at `path` satisfy `expr`, whose fields are relative to an
    element (siem.dsl.evaluate: the list is read from the raw record)."""

    quantifier: str  # "any" | "all"
    path: str
    expr: "Expr"
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class TrueExpr:
    """Matches every event (a rule without `when`)."""


Expr = Compare | FieldCompare | InSet | InCidr | StrMatch | Matches | Exists | Not | And | Or | MacroRef | TrueExpr | Each


# --- correlations ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measure:
    """One more aggregate condition of a threshold: kind(field[, q]) OP value."""

    kind: str
    field: str | None
    op: str
    value: float
    q: float | None = None  # the percentile, for kind "percentile"


@dataclass(frozen=True, slots=True)
class Threshold:
    """kind(field) OP value [and kind(field) OP value ...] within window by keys; kind is count,
    distinct, sum, avg, median or percentile (with `q`). Every condition must hold in one window."""

    kind: str  # "count" | "distinct" | "sum" | "avg" | "median" | "percentile"
    field: str | None
    op: str  # ">=" | ">"
    value: float
    window_ms: int
    by: tuple[str, ...]
    loc: Location | None = _loc()
    q: float | None = field(default=None, repr=False)
    extra: tuple[Measure, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class Step:
    """One step: `min_count` matching events, or with `distinct` that many different values of it."""

    expr: Expr
    min_count: int = 1
    loc: Location | None = _loc()
    distinct: str | None = field(default=None, repr=False)  # repr: see v2_repr


@dataclass(frozen=True, slots=True)
class Sequence:
    """The steps in order (``sequence``) or in any order (``all``), within window by keys."""

    steps: tuple[Step, ...]
    window_ms: int
    by: tuple[str, ...]
    loc: Location | None = _loc()
    ordered: bool = field(default=True, repr=False)


@dataclass(frozen=True, slots=True)
class Absent:
    expr: Expr
    window_ms: int
    by: tuple[str, ...]
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class FirstSeen:
    """A value of `field` never seen before for the key, once the key has been learnt for `learn_ms`."""

    field: str
    by: tuple[str, ...]
    learn_ms: int
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class Spike:
    """count within window exceeds `factor` times the mean per-window count over the baseline."""

    factor: float
    window_ms: int
    baseline_ms: int
    by: tuple[str, ...]
    min_count: int
    loc: Location | None = _loc()


Correlation = Threshold | Sequence | Absent | FirstSeen | Spike


def v2_repr(corr: Correlation | None) -> str:
    """The correlation fields added after state snapshots began (percentile, extra measures, any-order,
    distinct steps), "" while they have their defaults. They are left out of repr() so the identity of
    an existing rule (siem.engine.runtime.fingerprint) and its saved window state survive the upgrade;
    whoever identifies a correlation by repr() appends this."""
    match corr:
        case Threshold(q=q, extra=extra) if q is not None or extra:
            return repr((q, extra))
        case Sequence(steps=steps, ordered=ordered) if not ordered or any(st.distinct for st in steps):
            return repr((ordered, tuple(st.distinct for st in steps)))
    return ""


@dataclass(frozen=True, slots=True)
class Suppress:
    window_ms: int
    by: tuple[str, ...] | None  # None: the correlation's keys
    loc: Location | None = _loc()


# --- rule tests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestEvent:
    """One line of a test block: an event (JSON text) repeated `times`, `every_ms` apart, or a `wait`."""

    event_json: str | None
    times: int = 1
    every_ms: int = 1000
    wait_ms: int = 0
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class TestCase:
    expect_fire: bool
    lines: tuple[TestEvent, ...]
    loc: Location | None = _loc()


# --- top level ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListDecl:
    name: str
    values: tuple[str | int | float | bool, ...]
    file: str | None  # values loaded from this file (relative to the rule file) when set
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class MacroDecl:
    name: str
    expr: Expr
    loc: Location | None = _loc()


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as its author wrote it (with locations, for messages)."""

    id: str
    title: str
    severity: str
    tags: tuple[str, ...]
    when: Expr
    correlation: Correlation | None
    suppress: Suppress | None
    message: str
    tests: tuple[TestCase, ...]
    loc: Location | None = _loc()
    clause_locs: tuple[tuple[str, Location], ...] = field(default=(), compare=False, hash=False, repr=False)
    references: tuple[str, ...] = ()  # URLs or citations for the reader of an alert
    runbook: str = ""  # URL of what on-call should do
    # attribution kept from where the rule came from (a converted Sigma rule, a vendor pack)
    author: str = ""
    falsepositives: tuple[str, ...] = ()
    license: str = ""
    sigma_id: str = ""


Decl = ListDecl | MacroDecl | RuleSpec
