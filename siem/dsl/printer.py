"""Render resolved expressions back to rule text: the inverse of grammar.py for expressions.

``render_expr(node)`` returns text that the grammar parses back to an equal node (the round trip is
tested), so generated rule files (a converted Sigma rule) are ordinary, readable rules. Strings
escape ``\\`` and ``"`` (and line breaks and tabs as ``\\n``, ``\\r``, ``\\t``); regexes escape ``/``;
field names that are not plain dotted names are written in backticks. Long ``and`` / ``or`` chains
break over lines, indented by ``indent``, never starting a line with a statement word.
"""

from __future__ import annotations

import re

from siem.dsl import ast

_PLAIN_FIELD = re.compile(r"[A-Za-z_@][A-Za-z0-9_@\-]*(\.[A-Za-z0-9_@\-]+)*")
_WIDTH = 100


def render_string(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return '"' + out + '"'


def render_field(name: str) -> str:
    if _PLAIN_FIELD.fullmatch(name):
        return name
    if "`" in name:
        raise ValueError(f"field name {name!r} cannot be written in a rule (it holds a backtick)")
    return f"`{name}`"


def render_literal(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return render_string(v)


def render_regex(pattern: str, flags: str) -> str:
    body = re.sub(r"(?<!\\)((?:\\\\)*)/", r"\1\\/", pattern).replace("\n", "\\n")
    return f"/{body}/{flags}"


def _values(values: tuple[str | int | float | bool, ...], indent: str = "  ") -> str:
    items = [render_literal(v) for v in values]
    flat = "[" + ", ".join(items) + "]"
    if len(flat) <= _WIDTH:
        return flat
    return "[" + ("," + "\n" + indent + " ").join(items) + "]"


def render_predicate(node: ast.Expr, indent: str = "  ") -> str:
    match node:
        case ast.Compare(field, op, value, ci):
            return f"{render_field(field)} {'i' if ci else ''}{op} {render_literal(value)}"
        case ast.FieldCompare(field, op, other, ci):
            word = f"{'i' if ci else ''}{op}"
            return f"{render_field(field)} {word} field({render_field(other)})"
        case ast.InSet(field, values, ci):
            return f"{render_field(field)} {'iin' if ci else 'in'} {_values(values, indent)}"
        case ast.InCidr(field, networks):
            return f"{render_field(field)} in cidr({', '.join(render_string(n) for n in networks)})"
        case ast.StrMatch(field, kind, values, ci):
            arg = render_string(values[0]) if len(values) == 1 else _values(values, indent)
            return f"{render_field(field)} {'i' if ci else ''}{kind} {arg}"
        case ast.Matches(field, pattern, flags):
            return f"{render_field(field)} matches {render_regex(pattern, flags)}"
        case ast.Exists(field):
            return f"{render_field(field)} exists"
    raise ValueError(f"not a predicate: {node!r}")


def render_expr(node: ast.Expr, indent: str = "  ") -> str:
    """Rule text for a resolved expression (no macros, no list references, no TrueExpr)."""
    return _render(node, indent, top=True)


def _render(node: ast.Expr, indent: str, top: bool = False) -> str:
    match node:
        case ast.And(args) | ast.Or(args):
            word = " and " if isinstance(node, ast.And) else " or "
            parts = [_operand(a, node, indent + "  ") for a in args]
            flat = word.join(parts)
            if len(flat) <= _WIDTH and "\n" not in flat:
                return flat
            return ("\n" + indent + word.strip() + " ").join(parts)
        case ast.Not(arg):
            inner = _render(arg, indent + "  ")
            if isinstance(arg, (ast.And, ast.Or)):
                return f"not ({inner})"
            return f"not {inner}"
        case ast.Each(quantifier, path, inner):
            return f"{quantifier} {render_field(path)} {{ {_render(inner, indent + '  ')} }}"
        case ast.TrueExpr() | ast.MacroRef():
            raise ValueError(f"cannot render {node!r}")
        case _:
            return render_predicate(node, indent)


def _operand(arg: ast.Expr, parent: ast.Expr, indent: str) -> str:
    text = _render(arg, indent)
    if isinstance(arg, (ast.And, ast.Or)) and type(arg) is not type(parent):
        return f"({text})"
    return text
