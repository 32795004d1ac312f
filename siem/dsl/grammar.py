"""The rule DSL grammar (pyparsing). Only the grammar lives here; parse actions build ast nodes directly.

EBNF (``#`` starts a comment; keywords are reserved words)::

    file       = { list | macro | rule } ;
    list       = "list" IDENT "=" ( values | "file" STRING ) ;
    macro      = "macro" IDENT "=" expr ;
    rule       = "rule" IDENT "{" { clause } "}" ;
    clause     = "title" STRING | "severity" SEVERITY | "tags" "[" TAG { "," TAG } "]"
               | "references" "[" STRING { "," STRING } "]" | "runbook" STRING
               | "when" expr | "message" STRING | correlation | suppress | test
               | "author" STRING | "falsepositives" strings | "license" STRING | "sigma_id" STRING ;
    strings    = "[" [ STRING { "," STRING } [","] ] "]" ;
    correlation= threshold | sequence | absent | first_seen | spike ;
    threshold  = measure { "and" measure } "within" DURATION [ by ] ;
    measure    = ( "count" | ( "distinct" | "sum" | "avg" | "median" ) "(" FIELD ")"
                 | "percentile" "(" FIELD "," NUMBER ")" ) (">=" | ">") NUMBER ;
    sequence   = ( "sequence" | "all" ) "within" DURATION [ by ] "{" step { [","] step } "}" ;
                 (* sequence: the steps in this order; all: every step, in any order *)
    step       = expr [ ( "count" | "distinct" "(" FIELD ")" ) ">=" INT ] ;
    absent     = "absent" expr "for" DURATION [ by ] ;
    first_seen = "first_seen" FIELD [ by ] [ "learn" DURATION ] ;
    spike      = "spike" FACTOR "baseline" DURATION "within" DURATION [ by ] [ "min" INT ] ;
    suppress   = "suppress" DURATION [ by ] ;
    by         = "by" FIELD { "," FIELD } ;
    test       = "expect" ( "fire" | "nofire" ) "{" { event_line | "wait" DURATION } "}" ;
    event_line = JSON_OBJECT [ "x" INT ] [ "every" DURATION ] ;
    expr       = and_expr { "or" and_expr } ;
    and_expr   = not_expr { "and" not_expr } ;
    not_expr   = "not" not_expr | "(" expr ")" | each | predicate | IDENT (* a macro *) ;
    each       = ( "any" | "all" ) FIELD "{" expr "}" ;   (* elements of a list; fields relative to one *)
    predicate  = FIELD ( CMP ( literal | "field" "(" FIELD ")" ) | ["not"] "in" ( cidr | values | IDENT ) | "iin" ( values | IDENT )
                       | STROP ( STRING | values | IDENT | "field" "(" FIELD ")" ) | "matches" REGEX | "exists" ) ;
    cidr       = "cidr" "(" ( values | IDENT | STRING { "," STRING } ) ")" ;
    values     = "[" [ literal { "," literal } [","] ] "]" ;
    CMP        = "==" | "!=" | "<=" | ">=" | "<" | ">" | "i==" | "i!=" ;
    STROP      = "contains" | "startswith" | "endswith" | "icontains" | "istartswith" | "iendswith" ;
    DURATION   = digits ( "ms" | "s" | "m" | "h" | "d" | "w" ) ;   REGEX = "/" ... "/" [flags] ;

Expressions nest at most MAX_DEPTH parentheses/`not`s deep (checked before parsing).
"""

from __future__ import annotations

import contextvars
from typing import Any

import pyparsing as pp

from siem.dsl import ast
from siem.errors import Location
from siem.timeutil import parse_duration_ms

MAX_DEPTH = 32

_path: contextvars.ContextVar[str] = contextvars.ContextVar("path", default="<rules>")
_line_offset: contextvars.ContextVar[int] = contextvars.ContextVar("line_offset", default=0)


def _location(s: str, loc: int) -> Location:
    return Location(_path.get(), pp.lineno(loc, s) + _line_offset.get(), pp.col(loc, s))


def _with_loc(expr: pp.ParserElement) -> pp.ParserElement:
    """Prefix the tokens of `expr` with the Location where it starts."""
    marker = pp.Empty().set_parse_action(lambda s, loc, t: [_location(s, loc)])
    return marker + expr


K = pp.Keyword
S = pp.Suppress
KEYWORDS = (
    "rule list macro title severity tags when message count distinct sum within by sequence absent for "
    "first_seen learn spike baseline min suppress expect fire nofire wait every and or not in iin contains all "
    "avg median percentile any "
    "startswith endswith icontains istartswith iendswith matches exists cidr file field true false x "
    "references runbook"
).split()

_RESERVED = frozenset(KEYWORDS)
IDENT = (
    pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*")
    .add_condition(lambda t: t[0] not in _RESERVED, message="a name that is not a reserved word")
    .set_name("name")
)
FIELD = (
    pp.Regex(r"[A-Za-z_@][A-Za-z0-9_@\-]*(\.[A-Za-z0-9_@\-]+)*") | pp.QuotedString("`")
).set_name("field name")
STRING = (pp.QuotedString('"', esc_char="\\") | pp.QuotedString("'", esc_char="\\")).set_name("string")
NUMBER = pp.Regex(r"-?\d+(\.\d+)?").set_parse_action(
    lambda t: float(t[0]) if "." in t[0] else int(t[0])
).set_name("number")
INT = pp.Regex(r"\d+").set_parse_action(lambda t: int(t[0])).set_name("integer")
BOOL = (K("true") | K("false")).set_parse_action(lambda t: t[0] == "true")
DURATION = pp.Regex(r"\d+(ms|s|m|h|d|w)\b").set_parse_action(lambda t: parse_duration_ms(t[0])).set_name(
    "duration (e.g. 30s, 5m, 2h, 1d)"
)
FACTOR = pp.Regex(r"\d+(\.\d+)?x\b").set_parse_action(lambda t: float(t[0][:-1])).set_name("factor (e.g. 3x)")
REGEX = pp.Regex(r"/((?:[^/\\\n]|\\.)*)/([a-z]*)").set_name("regex /.../")
LITERAL = (STRING | NUMBER | BOOL).set_name("literal")
VALUES = (S("[") + pp.Group(pp.Opt(pp.DelimitedList(LITERAL, allow_trailing_delim=True))) + S("]")).set_name(
    "[values]"
)
STRINGS = (S("[") + pp.Group(pp.Opt(pp.DelimitedList(STRING, allow_trailing_delim=True))) + S("]")).set_name(
    '["text", ...]'
)
SEVERITY = pp.one_of("info low medium high critical", as_keyword=True).set_name("severity")
TAG = (pp.Regex(r"[A-Za-z0-9_.:\-]+") | STRING).set_name("tag")


def _values_or_ref(t: pp.ParseResults, loc: Location) -> tuple[Any, ...] | ast.ListRef:
    if isinstance(t, str):
        return ast.ListRef(t, loc)
    return tuple(t)


# --- expressions ----------------------------------------------------------------------------------

expr = pp.Forward().set_name("expression")
LIST_REF = IDENT.copy().set_name("list name")
REF_OR_VALUES = VALUES | LIST_REF

CIDR_ARGS = VALUES | pp.Group(STRING + pp.OneOrMore(S(",") + STRING)) | pp.Group(STRING) | LIST_REF

CMP_OP = pp.one_of("i== i!= == != <= >= < >").set_name("comparison operator")
STR_OP = pp.MatchFirst(
    [K(k) for k in ("icontains", "istartswith", "iendswith", "contains", "startswith", "endswith")]
)


def _values(v: Any, loc: Location) -> Any:
    if isinstance(v, pp.ParseResults):
        return tuple(v)
    if isinstance(v, str):
        return ast.ListRef(v, loc)
    return v


def _pred_compare(s: str, l: int, t: pp.ParseResults) -> ast.Expr:
    loc, field, op, value = t[0], t[1], t[2], t[3]
    ci = op.startswith("i")
    if isinstance(value, ast.FieldCompare):  # the FIELD_REF marker: compare with another field
        return ast.FieldCompare(field, op[1:] if ci else op, value.other, ci, loc)
    return ast.Compare(field, op[1:] if ci else op, value, ci, loc)


def _pred_in(s: str, l: int, t: pp.ParseResults) -> ast.Expr:
    loc, field, negate, op, arg = t[0], t[1], t[2] == "not", t[3], t[4]
    node: ast.Expr
    if op == "cidr":
        node = ast.InCidr(field, _values(arg, loc), loc)  # type: ignore[arg-type]
    else:
        node = ast.InSet(field, _values(arg, loc), op == "iin", loc)  # type: ignore[arg-type]
    return ast.Not(node) if negate else node


def _pred_str(s: str, l: int, t: pp.ParseResults) -> ast.Expr:
    loc, field, op, arg = t[0], t[1], t[2], t[3]
    ci = op.startswith("i")
    if isinstance(arg, ast.FieldCompare):  # field(other): the other field's value is the needle
        return ast.FieldCompare(field, op[1:] if ci else op, arg.other, ci, loc)
    vals = (arg,) if isinstance(arg, str) and t.get("quoted") else _values(arg, loc)
    return ast.StrMatch(field, op[1:] if ci else op, vals, ci, loc)  # type: ignore[arg-type]


def _pred_regex(s: str, l: int, t: pp.ParseResults) -> ast.Expr:
    import re as _re

    loc, field, token = t[0], t[1], t[2]
    m = _re.fullmatch(r"/((?:[^/\\\n]|\\.)*)/([a-z]*)", token)
    pattern = m.group(1).replace("\\/", "/") if m else token
    return ast.Matches(field, pattern, m.group(2) if m else "", loc)


NOT_WORD = pp.Opt(K("not"), default="")

FIELD_REF = (S(K("field")) - S("(") - FIELD - S(")")).set_parse_action(
    lambda t: ast.FieldCompare("", "", t[0])
).set_name("field(name)")

PREDICATE = pp.MatchFirst(
    [
        _with_loc(FIELD + CMP_OP - (LITERAL | FIELD_REF).set_name("literal or field(name)")).set_parse_action(
            _pred_compare
        ),
        _with_loc(FIELD + NOT_WORD + K("in") + S(K("cidr")) - S("(") - CIDR_ARGS - S(")")).set_parse_action(
            lambda s, l, t: _pred_in(s, l, pp.ParseResults([t[0], t[1], t[2], "cidr", t[4]]))
        ),
        _with_loc(FIELD + NOT_WORD + (K("in") | K("iin")) - REF_OR_VALUES).set_parse_action(_pred_in),
        _with_loc(FIELD + STR_OP - (STRING("quoted") | FIELD_REF | REF_OR_VALUES)).set_parse_action(_pred_str),
        _with_loc(FIELD + S(K("matches")) - REGEX).set_parse_action(_pred_regex),
        _with_loc(FIELD + S(K("exists"))).set_parse_action(lambda t: ast.Exists(t[1], t[0])),
    ]
).set_name("condition")

MACRO_REF = _with_loc(IDENT).set_parse_action(lambda t: ast.MacroRef(t[1], t[0])).set_name("macro name")
PAREN = S("(") - expr - S(")")
not_expr = pp.Forward()
EACH = _with_loc((K("any") | K("all")) + FIELD + S("{") - expr - S("}")).set_parse_action(
    lambda t: ast.Each(t[1], t[2], t[3], t[0])
)
not_expr <<= (
    (S(K("not")) + not_expr).set_parse_action(lambda t: ast.Not(t[0])) | PAREN | EACH | PREDICATE | MACRO_REF
).set_name('condition (e.g. user.name == "root")')


def _fold(cls: type) -> Any:
    def action(t: pp.ParseResults) -> Any:
        items = list(t)
        return items[0] if len(items) == 1 else cls(tuple(items))

    return action


and_expr = (not_expr + pp.ZeroOrMore(S(K("and")) + not_expr)).set_parse_action(_fold(ast.And))
expr <<= (and_expr + pp.ZeroOrMore(S(K("or")) + and_expr)).set_parse_action(_fold(ast.Or))
for _element in (not_expr, and_expr, expr):
    _element.set_name('condition (e.g. user.name == "root")')

# --- correlations ---------------------------------------------------------------------------------

BY = pp.Group(pp.Opt(S(K("by")) - pp.DelimitedList(FIELD)))


def _measure(t: pp.ParseResults) -> ast.Measure:
    kind = t[0]
    if kind == "count":
        return ast.Measure("count", None, t[1], float(t[2]))
    if kind == "percentile":
        return ast.Measure(kind, t[1], t[3], float(t[4]), float(t[2]))
    return ast.Measure(kind, t[1], t[2], float(t[3]))


def _threshold(t: pp.ParseResults) -> ast.Threshold:
    loc, measures, window_ms, by = t[0], list(t[1]), t[2], t[3]
    m = measures[0]
    return ast.Threshold(m.kind, m.field, m.op, m.value, window_ms, tuple(by), loc, m.q, tuple(measures[1:]))


AGG = (
    K("count")
    | ((K("distinct") | K("sum") | K("avg") | K("median")) + S("(") - FIELD - S(")"))
    | (K("percentile") + S("(") - FIELD - S(",") - NUMBER - S(")"))
)
MEASURE = pp.Group(AGG - pp.one_of(">= >") - NUMBER).set_parse_action(lambda t: _measure(t[0]))
THRESHOLD = _with_loc(
    pp.Group(MEASURE + pp.ZeroOrMore(S(K("and")) + MEASURE)) - S(K("within")) - DURATION - BY
).set_parse_action(_threshold)
STEP_COUNT = pp.Group(S(K("count")) - S(">=") - INT) | pp.Group(
    S(K("distinct")) - S("(") - FIELD - S(")") - S(">=") - INT
)
STEP = _with_loc(expr + pp.Opt(STEP_COUNT, default=None)).set_parse_action(
    lambda t: ast.Step(t[1], 1, t[0]) if t[2] is None
    else ast.Step(t[1], t[2][0], t[0]) if len(t[2]) == 1
    else ast.Step(t[1], t[2][1], t[0], t[2][0])
)
SEQUENCE = _with_loc(
    (K("sequence") | K("all")) - S(K("within")) - DURATION - BY - S("{")
    - pp.Group(pp.OneOrMore(STEP + pp.Opt(S(",")))) - S("}")
).set_parse_action(lambda t: ast.Sequence(tuple(t[4]), t[2], tuple(t[3]), t[0], t[1] == "sequence"))
ABSENT = _with_loc(S(K("absent")) - expr - S(K("for")) - DURATION - BY).set_parse_action(
    lambda t: ast.Absent(t[1], t[2], tuple(t[3]), t[0])
)
FIRST_SEEN = _with_loc(
    S(K("first_seen")) - FIELD - BY - pp.Opt(S(K("learn")) - DURATION, default=0)
).set_parse_action(lambda t: ast.FirstSeen(t[1], tuple(t[2]), t[3], t[0]))
SPIKE = _with_loc(
    S(K("spike")) - FACTOR - S(K("baseline")) - DURATION - S(K("within")) - DURATION - BY
    - pp.Opt(S(K("min")) - INT, default=1)
).set_parse_action(lambda t: ast.Spike(t[1], t[3], t[2], tuple(t[4]), t[5], t[0]))
CORRELATION = (THRESHOLD | SEQUENCE | ABSENT | FIRST_SEEN | SPIKE).set_name("correlation")

SUPPRESS = _with_loc(S(K("suppress")) - DURATION - pp.Opt(S(K("by")) - pp.Group(pp.DelimitedList(FIELD)))).set_parse_action(
    lambda t: ast.Suppress(t[1], tuple(t[2]) if len(t) > 2 else None, t[0])
)

# --- tests ----------------------------------------------------------------------------------------

JSON_OBJECT = pp.original_text_for(pp.nested_expr("{", "}", ignore_expr=pp.dbl_quoted_string)).set_name(
    "event {json}"
)
EVENT_LINE = _with_loc(
    JSON_OBJECT + pp.Opt(S(K("x")) - INT, default=1) + pp.Opt(S(K("every")) - DURATION, default=1000)
).set_parse_action(lambda t: ast.TestEvent(t[1], t[2], t[3], 0, t[0]))
WAIT = _with_loc(S(K("wait")) - DURATION).set_parse_action(lambda t: ast.TestEvent(None, 0, 0, t[1], t[0]))
TEST = _with_loc(
    S(K("expect")) - (K("fire") | K("nofire")) - S("{") - pp.Group(pp.ZeroOrMore(EVENT_LINE | WAIT)) - S("}")
).set_parse_action(lambda t: ast.TestCase(t[1] == "fire", tuple(t[2]), t[0]))

# --- rules ----------------------------------------------------------------------------------------


def _clause(name: str, body: pp.ParserElement) -> pp.ParserElement:
    return _with_loc(K(name) - body).set_parse_action(lambda t: ("clause", t[1], t[2], t[0]))


CLAUSE = (
    _clause("title", STRING)
    | _clause("severity", SEVERITY)
    | _clause("tags", S("[") + pp.Group(pp.DelimitedList(TAG, allow_trailing_delim=True)) + S("]"))
    | _clause("references", S("[") + pp.Group(pp.DelimitedList(STRING, allow_trailing_delim=True)) + S("]"))
    | _clause("runbook", STRING)
    | _clause("when", expr)
    | _clause("message", STRING)
    | _clause("author", STRING)
    | _clause("falsepositives", STRINGS)
    | _clause("license", STRING)
    | _clause("sigma_id", STRING)
    | CORRELATION.copy().add_parse_action(lambda t: ("clause", "correlation", t[0], t[0].loc))
    | SUPPRESS.copy().add_parse_action(lambda t: ("clause", "suppress", t[0], t[0].loc))
    | TEST.copy().add_parse_action(lambda t: ("clause", "test", t[0], t[0].loc))
).set_name("rule clause (title, severity, tags, references, runbook, when, message, a correlation, suppress, expect, author, ...)")

RULE = _with_loc(S(K("rule")) - IDENT - S("{") - pp.Group(pp.ZeroOrMore(CLAUSE)) - S("}")).set_parse_action(
    lambda t: ("rule", t[1], list(t[2]), t[0])
)
LIST = _with_loc(
    S(K("list")) - IDENT - S("=") - (VALUES | (K("file") - STRING))
).set_parse_action(
    lambda t: ast.ListDecl(t[1], (), t[3], t[0]) if t[2] == "file" else ast.ListDecl(t[1], tuple(t[2]), None, t[0])
)
MACRO = _with_loc(S(K("macro")) - IDENT - S("=") - expr).set_parse_action(lambda t: ast.MacroDecl(t[1], t[2], t[0]))
STATEMENT = (RULE | LIST | MACRO).set_name("'rule', 'list' or 'macro'")
CHUNK = pp.OneOrMore(STATEMENT) + pp.StringEnd()
CHUNK.ignore(pp.python_style_comment)
expr.ignore(pp.python_style_comment)


def parse_chunk(text: str, path: str, line_offset: int) -> list[Any]:
    """Parse a piece of a rule file; raises pp.ParseBaseException with positions relative to `text`."""
    t1 = _path.set(path)
    t2 = _line_offset.set(line_offset)
    try:
        return list(CHUNK.parse_string(text, parse_all=True))
    finally:
        _path.reset(t1)
        _line_offset.reset(t2)
