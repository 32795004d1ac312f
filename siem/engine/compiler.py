"""Compile resolved expressions into mask functions over a columnar Batch.

``compile_expr(node)`` returns ``MaskFn = Callable[[Batch], np.ndarray[bool]]``. Every compiled node
memoises its mask in ``batch.memo`` under a small integer standing for the node's content, so a sub-expression
used by many rules, e.g. ``event.dataset == "sshd"``, is computed once per batch. Text predicates are
evaluated on a column's unique values and cached across batches per value (bounded), then mapped to
rows with ``lut[codes]``.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np

from siem import schema
from siem.dsl import ast
from siem.dsl.regex import compile_regex
from siem.dsl.predicates import ValuePred, _cidr_pred, _str_pred
from siem.engine.batch import Batch

MaskFn = Callable[[Batch], np.ndarray]

_CACHE_LIMIT = 200_000
_ORDERING = frozenset(("<", "<=", ">", ">="))
_NUM_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def compile_expr(node: ast.Expr) -> MaskFn:
    """The memoised mask function of `node`."""
    inner = _compile(node)
    key = memo_key(node)

    def mask(batch: Batch) -> np.ndarray:
        got = batch.memo.get(key)
        if got is None:
            got = batch.memo[key] = inner(batch)
        return got

    return mask


_MEMO_KEYS: dict[ast.Expr, int] = {}


def memo_key(node: ast.Expr) -> int:
    """A small integer standing for the node's content, the same for equal nodes of different rules: hashing
    a frozen AST dataclass walks its whole subtree, and with a thousand rules that was 4% of evaluation."""
    got = _MEMO_KEYS.get(node)
    if got is None:
        got = _MEMO_KEYS[node] = len(_MEMO_KEYS)
    return got


def _is_number_field(field: str) -> bool:
    return schema.field_type(field) in (schema.LONG, schema.DATE)


def _compile(node: ast.Expr) -> MaskFn:
    match node:
        case ast.TrueExpr():
            return lambda b: b.every
        case ast.And(args):
            parts = [compile_expr(a) for a in args]

            def and_(b: Batch) -> np.ndarray:
                out = parts[0](b)
                for p in parts[1:]:
                    if out is b.none or not out.any():
                        return b.none
                    q = p(b)
                    if q is not b.every:
                        out = b.none if q is b.none else out & q
                return out

            return and_
        case ast.Or(args):
            parts = [compile_expr(a) for a in args]

            def or_(b: Batch) -> np.ndarray:
                out = parts[0](b)
                for p in parts[1:]:
                    q = p(b)
                    if q is not b.none:
                        out = b.every if q is b.every else q if out is b.none else out | q
                return out

            return or_
        case ast.Not(arg):
            inner = compile_expr(arg)

            def not_(b: Batch) -> np.ndarray:
                m = inner(b)
                return b.every if m is b.none else b.none if m is b.every else ~m

            return not_
        case ast.Compare(field, op, value, ci) if _is_number_field(field) and not isinstance(value, str):
            fn = _NUM_OPS[op]
            num = float(value)
            return lambda b: fn(b.number(field), num) & ~np.isnan(b.number(field))
        case ast.Compare(field, op, value, ci) if op in _ORDERING and not isinstance(value, (str, bool)):
            return _lut_mask(field, _number_text_pred(_NUM_OPS[op], float(value)))  # numbers held as text
        case ast.Compare(field, "==", value, False):
            return _equals(field, value)
        case ast.Compare(field, "!=", value, False):
            eq = _equals(field, value)
            present = _lut_mask(field, lambda s: True)
            return lambda b: present(b) & ~eq(b)
        case ast.Compare(field, op, value, ci):
            fn = _NUM_OPS[op]
            target = str(value).casefold() if ci else str(value)
            if ci:
                return _lut_mask(field, lambda s: fn(s.casefold(), target))
            return _lut_mask(field, lambda s: fn(s, target))
        case ast.FieldCompare(field, op, other, ci):
            return _field_compare(field, op, other, ci)
        case ast.InSet(field, values, ci) if _is_number_field(field):
            nums = np.array([float(v) for v in values], dtype=np.float64)
            return lambda b: np.isin(b.number(field), nums)
        case ast.InSet(field, values, ci):
            if ci:
                folded = frozenset(str(v).casefold() for v in values)
                return _lut_mask(field, lambda s: s.casefold() in folded)
            exact = frozenset(str(v) for v in values)
            return _lut_mask(field, lambda s: s in exact)
        case ast.InCidr(field, networks):
            return _lut_mask(field, _cidr_pred(networks))
        case ast.StrMatch(field, kind, values, ci):
            return _lut_mask(field, _str_pred(kind, values, ci))
        case ast.Matches(field, pattern, flags):
            rx = compile_regex(pattern, flags)
            search = rx.search
            return _lut_mask(field, lambda s: search(s) is not None)
        case ast.Exists(field):

            def exists(b: Batch) -> np.ndarray:
                col = b.keyword(field)  # shared with every other predicate on this field
                missing = col.code_of(None)
                return col.codes != missing if missing >= 0 else b.every

            return exists
        case ast.Each(quantifier, path, inner):
            from siem.dsl.evaluate import each_holds

            # once per distinct raw record (cached like every text predicate)
            return _lut_mask("event.original", lambda raw: each_holds(quantifier, path, inner, raw))
        case ast.MacroRef() | _:
            raise TypeError(f"cannot compile unresolved node {node!r}")


def _number_text_pred(fn: Callable[[float, float], bool], num: float) -> ValuePred:
    """A text value compared as a number (CloudTrail's flattened parameters hold numbers as text);
    a value that is not a number never matches."""

    def pred(s: str) -> bool:
        try:
            x = float(s)
        except ValueError:
            return False
        return x == x and fn(x, num)  # NaN never matches

    return pred


def _equals(field: str, value: Any) -> MaskFn:
    """Equality on a dictionary-encoded column: one integer comparison per row."""
    text = str(value)

    def eq(b: Batch) -> np.ndarray:
        col = b.keyword(field)
        code = col.code_of(text)
        if code < 0 and not isinstance(value, str):
            code = col.code_of(value)
        if code < 0:
            return b.none
        return col.codes == code

    return eq


_PAIR_OPS: dict[str, Callable[[str, str], bool]] = {
    "==": operator.eq, "!=": operator.ne, "contains": lambda a, b: b in a,
    "startswith": str.startswith, "endswith": str.endswith,
}


def _field_compare(field: str, op: str, other: str, ci: bool) -> MaskFn:
    """Two fields of the same event: equal, not equal, or the first containing / starting with / ending
    with the second; evaluated once per distinct pair of values. A missing field on either side never
    matches, as with a literal."""
    negate = op == "!="
    test = _PAIR_OPS[op]
    if op in ("==", "!=") and _is_number_field(field) and _is_number_field(other):
        def numbers(b: Batch) -> np.ndarray:
            left, right = b.number(field), b.number(other)
            both = ~np.isnan(left) & ~np.isnan(right)
            return both & ((left != right) if negate else (left == right))

        return numbers

    def texts(b: Batch) -> np.ndarray:
        lc, rc = b.keyword(field), b.keyword(other)
        pairs = lc.codes.astype(np.int64) * (len(rc.values) + 1) + rc.codes
        uniq, inverse = np.unique(pairs, return_inverse=True)
        lut = np.empty(len(uniq), dtype=bool)
        for i, pair in enumerate(uniq.tolist()):
            lv, rv = lc.values[pair // (len(rc.values) + 1)], rc.values[pair % (len(rc.values) + 1)]
            if lv is None or rv is None:
                lut[i] = False
                continue
            ls, rs = str(lv), str(rv)
            lut[i] = test(ls.casefold(), rs.casefold()) if ci else test(ls, rs)
        return lut[inverse.reshape(-1)]

    return texts


def _lut_mask(field: str, pred: ValuePred) -> MaskFn:
    """Evaluate `pred` once per unique text value (cached across batches), then map to rows."""
    cache: dict[object, bool] = {}

    def mask(b: Batch) -> np.ndarray:
        col = b.keyword(field)
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        lut = np.empty(len(col.values), dtype=bool)
        for i, v in enumerate(col.values):
            hit = cache.get(v)
            if hit is None:
                if v is None:
                    hit = False
                else:
                    s = v if type(v) is str else str(v)
                    hit = bool(pred(s))
                cache[v] = hit
            lut[i] = hit
        return lut[col.codes]

    return mask
