"""Make test events from a rule's own condition: one that satisfies it, one that violates it.

``satisfying(expr)`` returns an event (flat ECS dict) on which `expr` holds, or None when the search
finds none within its budget; ``violating(expr, keep)`` an event on which `keep` holds and `expr`
does not (for a converted Sigma rule, `keep` is its logsource condition, so the negative case is an
event of the right kind that the detection must ignore, not an empty event).

The search works on the expression in negation normal form: ``and`` adds every operand to the goal,
``or`` tries its operands in turn (backtracking, at most MAX_STEPS choices), and each predicate,
with its polarity, becomes a constraint on one field. A field's value is picked from candidates
built from its positive constraints (the literal, the needle of contains/startswith/endswith, all
needles joined, a string the regex matches, the first address of a network, a number just past a
bound) and checked against every constraint on the field with the same semantics as the compiler
(siem.engine.compiler). A field with only negative constraints is left out, which every negated
predicate accepts. The event is then checked against the whole expression once more, so a wrong
guess can only make the search fail, never yield a wrong test.
"""

from __future__ import annotations

import ipaddress
import re
import re._constants as sc  # the stdlib regex parser (sre_parse) builds the tree walked below
import re._parser as sre_parse
from typing import Iterator

from siem import schema
from siem.dsl import ast
from siem.dsl.evaluate import holds, predicate_holds
from siem.dsl.regex import compile_regex
from siem.schema import Event

MAX_STEPS = 20_000
FILLER = "siem-test"

Literal = tuple[ast.Expr, bool]  # a predicate and whether it must hold


def satisfying(expr: ast.Expr) -> Event | None:
    """An event on which `expr` holds, or None."""
    return _solve(_nnf(expr, True))


def violating(expr: ast.Expr, keep: ast.Expr | None = None, near: Event | None = None) -> Event | None:
    """An event on which `keep` holds and `expr` does not, or None. With `near` (a firing event),
    first try that event with one field removed or changed: a near miss tests the detection far
    better than an unrelated event."""
    if near is not None:
        for ev in _mutations(near):
            if (keep is None or holds(keep, ev)) and not holds(expr, ev):
                return ev
    goal = _nnf(expr, False)
    if keep is not None:
        goal = ast.And((_nnf(keep, True), goal))
    ev = _solve(goal)
    if ev is not None and holds(expr, ev):
        return None
    return ev


def _mutations(ev: Event) -> Iterator[Event]:
    """`ev` with one field changed (its text with the middle character replaced), then removed."""
    for field in sorted(ev):
        value = ev[field]
        if isinstance(value, str) and value:
            mid = len(value) // 2
            for repl in ("#", "0"):
                if value[mid] != repl:
                    yield {**ev, field: value[:mid] + repl + value[mid + 1:]}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield {**ev, field: value + 7}
    for field in sorted(ev):
        yield {k: v for k, v in ev.items() if k != field}


# --- evaluation: siem.dsl.evaluate (the compiler's semantics on one event) --------------------------


def _field_of(node: ast.Expr) -> str:
    return node.field  # type: ignore[union-attr]


def _is_number(field: str) -> bool:
    return schema.field_type(field) in (schema.LONG, schema.DATE)


# --- search -----------------------------------------------------------------------------------------


def _nnf(expr: ast.Expr, positive: bool) -> ast.Expr:
    """Negation normal form: `not` only directly above predicates."""
    match expr:
        case ast.Not(arg):
            return _nnf(arg, not positive)
        case ast.And(args):
            parts = tuple(_nnf(a, positive) for a in args)
            return ast.And(parts) if positive else ast.Or(parts)
        case ast.Or(args):
            parts = tuple(_nnf(a, positive) for a in args)
            return ast.Or(parts) if positive else ast.And(parts)
        case _:
            return expr if positive else ast.Not(expr)


def _solve(goal: ast.Expr) -> Event | None:
    budget = [MAX_STEPS]
    for constraints in _search([goal], {}, budget):
        ev = _assign(constraints)
        if ev is not None and holds(goal, ev):
            return ev
        if budget[0] <= 0:
            break
    return None


def _search(goals: list[ast.Expr], constraints: dict[str, list[Literal]], budget: list[int]) -> Iterator[dict[str, list[Literal]]]:
    budget[0] -= 1
    if budget[0] <= 0:
        return
    if not goals:
        yield constraints
        return
    head, rest = goals[0], goals[1:]
    match head:
        case ast.And(args):
            yield from _search(list(args) + rest, constraints, budget)
        case ast.Or(args):
            for a in args:
                yield from _search([a] + rest, constraints, budget)
                if budget[0] <= 0:
                    return
        case ast.TrueExpr():
            yield from _search(rest, constraints, budget)
        case ast.Not(ast.TrueExpr()):
            return
        case ast.Each() | ast.Not(ast.Each()):
            return  # element-wise tests are not generated
        case ast.Not(ast.FieldCompare() as fc) | (ast.FieldCompare() as fc):
            positive = not isinstance(head, ast.Not)
            # the pair is decided after the other constraints: recorded on the field, checked by holds()
            new = dict(constraints)
            new[fc.field] = constraints.get(fc.field, []) + [(fc, positive)]
            yield from _search(rest, new, budget)
        case _:
            node, positive = (head.arg, False) if isinstance(head, ast.Not) else (head, True)
            field = _field_of(node)
            lits = constraints.get(field, []) + [(node, positive)]
            if _value_for(field, lits) is _NONE:
                return
            new = dict(constraints)
            new[field] = lits
            yield from _search(rest, new, budget)


_NONE = object()


def _assign(constraints: dict[str, list[Literal]]) -> Event | None:
    ev: Event = {}
    pairs: list[tuple[ast.FieldCompare, bool]] = []
    for field, lits in sorted(constraints.items()):
        plain = [(n, p) for n, p in lits if not isinstance(n, ast.FieldCompare)]
        pairs.extend((n, p) for n, p in lits if isinstance(n, ast.FieldCompare))  # type: ignore[misc]
        value = _value_for(field, plain)
        if value is _NONE:
            return None
        if value is not None:
            ev[field] = value
    for fc, positive in pairs:
        left = ev.get(fc.field)
        if positive:
            if left is None:
                left = ev[fc.field] = FILLER
            if fc.other not in ev:
                ev[fc.other] = left
        elif left is not None and ev.get(fc.other) == left:
            ev[fc.other] = f"{left}-other"
    return ev


def _value_for(field: str, lits: list[Literal]) -> object:
    """A value meeting every constraint on `field`: None for "leave the field out", _NONE if none."""
    positives = [n for n, p in lits if p and not isinstance(n, ast.FieldCompare)]
    if not positives and all(not p or isinstance(n, ast.FieldCompare) for n, p in lits):
        return None  # a missing field fails every predicate, so it meets every negated one
    for cand in _candidates(field, positives):
        if all(predicate_holds(n, cand) == p for n, p in lits if not isinstance(n, ast.FieldCompare)):
            return cand
    return _NONE


def _candidates(field: str, positives: list[ast.Expr]) -> Iterator[object]:
    if _is_number(field):
        yield from _number_candidates(positives)
        return
    samples: list[list[str]] = [list(_samples(n)) for n in positives]
    for group in samples:
        yield from group
    # every positive constraint at once: prefix + needles + suffix
    starts = [n.values[0] for n in positives if isinstance(n, ast.StrMatch) and n.kind == "startswith"]
    ends = [n.values[0] for n in positives if isinstance(n, ast.StrMatch) and n.kind == "endswith"]
    mids = [s[0] for n, s in zip(positives, samples) if s and not (isinstance(n, ast.StrMatch) and n.kind != "contains")]
    for sep in ("", " "):
        yield sep.join([*starts[:1], *mids, *ends[:1]])
        yield sep.join([*starts[:1], *[n.values[0] for n in positives if isinstance(n, ast.StrMatch) and n.kind == "contains"], *ends[:1]])
    yield FILLER
    yield "x"
    yield ""


def _samples(node: ast.Expr) -> Iterator[str]:
    match node:
        case ast.Compare(_, "==", v, _):
            yield str(v)
        case ast.Compare(_, "!=", v, _):
            yield f"{v}-other"
        case ast.InSet(_, values, _):
            yield from (str(v) for v in values)
        case ast.StrMatch(_, _, values, _):
            yield from (str(v) for v in values)
        case ast.InCidr(_, networks):
            for n in networks:
                net = ipaddress.ip_network(n, strict=False)
                yield str(net.network_address + (1 if net.num_addresses > 2 else 0))
        case ast.Matches(_, pattern, flags):
            s = regex_sample(pattern, flags)
            if s is not None:
                yield s
        case ast.Exists():
            yield FILLER


def _number_candidates(positives: list[ast.Expr]) -> Iterator[object]:
    nums: list[float] = []
    for n in positives:
        if isinstance(n, ast.Compare) and not isinstance(n.value, str):
            nums.append(float(n.value))
        elif isinstance(n, ast.InSet):
            nums.extend(float(v) for v in n.values if not isinstance(v, str) or v.lstrip("-").isdigit())
    for x in nums:
        for d in (0, 1, -1):
            y = x + d
            yield int(y) if y == int(y) else y
    yield 1


# --- a string a regex matches -----------------------------------------------------------------------

_CATEGORY_SAMPLE = {
    sc.CATEGORY_DIGIT: "0", sc.CATEGORY_NOT_DIGIT: "a", sc.CATEGORY_SPACE: " ", sc.CATEGORY_NOT_SPACE: "a",
    sc.CATEGORY_WORD: "a", sc.CATEGORY_NOT_WORD: " ",
}


def regex_sample(pattern: str, flags: str = "") -> str | None:
    """A short string the (RE2-compatible) regex matches, checked with RE2; None if not found."""
    try:
        tree = sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError):
        return None
    try:
        text = _gen(tree, 0)
    except (ValueError, RecursionError):
        return None
    try:
        if compile_regex(pattern, flags).search(text) is None:
            return None
    except Exception:  # noqa: BLE001 - RE2 refuses it: no sample
        return None
    return text


def _gen(tree: object, depth: int) -> str:
    if depth > 50:
        raise ValueError("too deep")
    out: list[str] = []
    for op, arg in tree:  # type: ignore[attr-defined]
        if op is sc.LITERAL:
            out.append(chr(arg))
        elif op is sc.NOT_LITERAL:
            out.append("a" if chr(arg) != "a" else "b")
        elif op is sc.ANY:
            out.append("a")
        elif op is sc.IN:
            out.append(_gen_in(arg))
        elif op in (sc.MAX_REPEAT, sc.MIN_REPEAT, getattr(sc, "POSSESSIVE_REPEAT", None)):
            lo, _hi, sub = arg
            out.append(_gen(sub, depth + 1) * max(lo, 0))
        elif op is sc.SUBPATTERN:
            out.append(_gen(arg[-1], depth + 1))
        elif op is sc.BRANCH:
            out.append(_gen(arg[1][0], depth + 1))
        elif op is sc.AT:
            continue
        elif op is sc.CATEGORY:
            out.append(_CATEGORY_SAMPLE.get(arg, "a"))
        elif op in (sc.ASSERT, sc.ASSERT_NOT, sc.GROUPREF, getattr(sc, "GROUPREF_EXISTS", None)):
            raise ValueError("not RE2")
        else:
            raise ValueError(f"unknown regex op {op}")
    return "".join(out)


def _gen_in(items: list[tuple[object, object]]) -> str:
    negate = any(op is sc.NEGATE for op, _ in items)
    if negate:
        banned: set[str] = set()
        for op, arg in items:
            if op is sc.LITERAL:
                banned.add(chr(arg))  # type: ignore[arg-type]
            elif op is sc.RANGE:
                lo, hi = arg  # type: ignore[misc]
                banned.update(chr(c) for c in range(lo, min(hi, lo + 300) + 1))
        return next(c for c in "aZ0_ -x~" if c not in banned)
    for op, arg in items:
        if op is sc.LITERAL:
            return chr(arg)  # type: ignore[arg-type]
        if op is sc.RANGE:
            return chr(arg[0])  # type: ignore[index]
        if op is sc.CATEGORY:
            return _CATEGORY_SAMPLE.get(arg, "a")  # type: ignore[arg-type]
    return "a"
