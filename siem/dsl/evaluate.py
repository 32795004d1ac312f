"""Evaluate a resolved expression on one event dict, with the compiler's semantics.

The compiler (siem.engine.compiler) evaluates columns of a batch; this module answers the same question for a
single dict: for the elements of a list field (``any`` / ``all``, see ``elements``) and for tools
that reason about one event (siem.sigma.events builds test events with it). A missing field fails
every predicate (so it meets every negated one); text compares as text, numbers as numbers, and an
unquoted number in ``<`` ``<=`` ``>`` ``>=`` compares numbers held as text.

Element-wise tests read their list from the raw record: ``any aws.cloudtrail.request_parameters.
ipPermissions.items { ... }`` parses the event's ``event.original`` (the CloudTrail record as
received), follows ``requestParameters.ipPermissions.items`` (through lists, and through JSON held
in a string, e.g. an IAM policy document, URL-encoded or not) and tests each element that is an
object, flattened as the parser flattens records (dotted keys, several values at one path joined
with ", "), fields named relative to the element.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import Any

import orjson

from siem import schema
from siem.dsl import ast
from siem.dsl.regex import compile_regex
from siem.schema import LIST_SOURCES, raw_path  # noqa: F401 - re-exported for the element-wise tests

MAX_ELEMENTS = 1000


def holds(expr: ast.Expr, ev: dict[str, object]) -> bool:
    match expr:
        case ast.And(args):
            return all(holds(a, ev) for a in args)
        case ast.Or(args):
            return any(holds(a, ev) for a in args)
        case ast.Not(arg):
            return not holds(arg, ev)
        case ast.TrueExpr():
            return True
        case ast.FieldCompare(field, op, other, ci):
            a, b = ev.get(field), ev.get(other)
            if a is None or b is None:
                return False
            sa, sb = (str(a).casefold(), str(b).casefold()) if ci else (str(a), str(b))
            return {"==": sa == sb, "!=": sa != sb, "contains": sb in sa, "startswith": sa.startswith(sb),
                    "endswith": sa.endswith(sb)}[op]
        case ast.Each(quantifier, path, inner):
            return each_holds(quantifier, path, inner, ev.get("event.original"))
        case _:
            return predicate_holds(expr, ev.get(expr.field))  # type: ignore[union-attr]


def _is_number(field: str) -> bool:
    return schema.field_type(field) in (schema.LONG, schema.DATE)


def _num(v: object) -> float | None:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if x == x else None


_ORDER = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
          "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def predicate_holds(node: ast.Expr, value: object) -> bool:
    """Whether predicate `node` holds for a field holding `value` (None: the field is missing)."""
    from siem.dsl.predicates import _str_pred

    if isinstance(node, ast.Exists):
        return value is not None
    if value is None:
        return False
    text = value if isinstance(value, str) else str(value)
    match node:
        case ast.Compare(field, op, lit, ci) if not isinstance(lit, (str, bool)) and (
                _is_number(field) or op in ("<", "<=", ">", ">=")):
            num = _num(value)
            return num is not None and _ORDER[op](num, lit)
        case ast.Compare(field, op, lit, ci):
            a, b = (text.casefold(), str(lit).casefold()) if ci else (text, str(lit))
            return _ORDER[op](a, b)
        case ast.InSet(field, values, ci):
            if _is_number(field):
                num = _num(value)
                return num is not None and num in {float(v) for v in values}
            if ci:
                return text.casefold() in {str(v).casefold() for v in values}
            return text in {str(v) for v in values}
        case ast.InCidr(field, networks):
            return bool(_cidr(networks)(text))
        case ast.StrMatch(field, kind, values, ci):
            return bool(_str_pred(kind, values, ci)(text))
        case ast.Matches(field, pattern, flags):
            return _regex(pattern, flags).search(text) is not None
    raise TypeError(f"not a predicate: {node!r}")


@functools.lru_cache(maxsize=4096)
def _cidr(networks: tuple[str, ...]) -> Any:
    from siem.dsl.predicates import _cidr_pred

    return _cidr_pred(networks)


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str, flags: str) -> Any:

    return compile_regex(pattern, flags)


# --- element-wise tests ------------------------------------------------------------------------------


def each_holds(quantifier: str, path: str, inner: ast.Expr, original: object) -> bool:
    """any: some element satisfies `inner`; all: there are elements and every one does."""
    elems = elements(path, original)
    if quantifier == "any":
        return any(holds(inner, e) for e in elems)
    return bool(elems) and all(holds(inner, e) for e in elems)


def elements(path: str, original: object) -> list[dict[str, object]]:
    """The objects of the list at `path` in the raw record `original`, flattened (see the module doc)."""
    parts = raw_path(path)
    if parts is None or not isinstance(original, (str, bytes)):
        return []
    try:
        record = orjson.loads(original)
    except orjson.JSONDecodeError:
        return []
    found: list[object] = []
    _walk(record, parts, found, 0)
    out: list[dict[str, object]] = []
    for el in found[:MAX_ELEMENTS]:
        if isinstance(el, dict):
            out.append(_flat(el))
    return out


def _decoded(v: object) -> object:
    """JSON held in a string (policy documents), plain or URL-encoded."""
    if not isinstance(v, str) or not v[:1] in "{[%":
        return v
    for text in (v, urllib.parse.unquote(v)):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
    return v


def _walk(obj: object, parts: list[str], out: list[object], depth: int) -> None:
    if depth > 32:
        return
    obj = _decoded(obj)
    if isinstance(obj, list):
        for x in obj:
            _walk(x, parts, out, depth + 1)
        return
    if not parts:
        out.append(obj)
        return
    if isinstance(obj, dict):
        _walk(obj.get(parts[0]), parts[1:], out, depth + 1)


def _flat(el: dict[str, Any]) -> dict[str, object]:
    from siem.parse.jsonfmt import Flattener

    fl = Flattener(stringify=True)
    fl.add("", el)
    ev: dict[str, object] = {}
    fl.into(ev)
    return {k: v for k, v in ev.items() if k != "error.message"}
