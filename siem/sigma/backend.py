"""A pySigma backend whose target is the rule DSL: Sigma detections become DSL expression trees.

The backend builds ``siem.dsl.ast`` nodes (not text), so a converted rule is an ordinary rule that
shares masks and windows with the pack, and siem.dsl.printer renders it. Output formats:

* ``default``: one DSL condition per Sigma rule (what ``sigma convert -t siem`` prints);
* ``rules``: complete, loadable ``rule`` blocks with the rule's metadata (siem.sigma.rulefile);
* ``ast``: the expression trees themselves (for siem.sigma.convert).

Value semantics, as the Sigma specification gives them:

* strings match case-insensitively (``i==``, ``iin``, ``icontains`` ...) unless ``|cased``;
* ``*`` and ``?`` are wildcards: leading/trailing ``*`` become ``endswith`` / ``startswith`` /
  ``contains``, any other wildcard a linear-time regex (RE2) anchored at both ends; ``field: '*'``
  is ``field exists``; escapes (``\\*``) are literal characters;
* numbers compare as numbers on number fields and as their decimal text elsewhere;
* ``null`` is ``not field exists``; ``|exists`` is ``exists``; ``|cidr`` is ``in cidr(...)``;
* ``|re`` is ``matches /.../`` (flags i, m, s); a pattern RE2 cannot run (lookaround,
  backreferences) is refused with the reason;
* ``|gt`` / ``|gte`` / ``|lt`` / ``|lte`` are ``>`` ``>=`` ``<`` ``<=``, numeric also on text fields
  that hold numbers (CloudTrail parameters); refused on IP and boolean fields;
* ``|fieldref`` is ``field == field(other)``; ``|fieldref|contains`` (startswith, endswith) is
  ``field icontains field(other)``;
* keywords (values without a field) are a case-insensitive substring search over the pipeline's
  full-text field (state ``keyword_field``: ``message`` for syslog, ``event.original`` otherwise);
* ``|windash``, ``|base64``, ``|base64offset``, ``|all``, ``|expand`` are resolved by pySigma before
  this backend sees the values.

Every target field must exist in siem.schema: an unmapped Sigma field is refused, naming it, so no
converted rule silently tests a field that no event carries.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.base import Backend
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaFieldReference,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from siem import schema
from siem.dsl import ast
from siem.dsl.regex import regex_error
from siem.sigma.pipelines import KEYWORD_FIELD_STATE
from siem.dsl.printer import render_expr

# Fields whose values our parsers set from a fixed lower-case vocabulary (the pipelines' logsource
# conditions test them): compared exactly, so the engine can skip a rule for batches without its
# dataset (siem.engine.runtime.required_values) instead of evaluating it on every batch.
EXACT_FIELDS = frozenset({"event.dataset", "event.category", "event.type"})
DEFAULT_KEYWORD_FIELD = "event.original"

_OPS = {
    CompareOperators.LT: "<",
    CompareOperators.LTE: "<=",
    CompareOperators.GT: ">",
    CompareOperators.GTE: ">=",
}
_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}


class Unsupported(SigmaFeatureNotSupportedByBackendError):
    """A Sigma construct the DSL cannot express faithfully; the message says which and why."""


def _unsupported(message: str, cond: Any) -> Unsupported:
    return Unsupported(message, source=getattr(cond, "source", None))


def _is_number_field(field: str) -> bool:
    return schema.field_type(field) == schema.LONG


# An IP field whose Sigma value is not an address: our parsers put such values (CloudTrail's
# sourceIPAddress "AWS Internal", "signin.amazonaws.com") in the field's text sibling.
_IP_TEXT_FIELD = {"source.ip": "source.address"}


def _is_ip_text(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_field(field: str, cond: Any) -> str:
    if schema.field_type(field) is None:
        raise _unsupported(f"field '{field}' has no counterpart in the event schema (no pipeline maps it)", cond)
    return field


def _regex_of(s: SigmaString) -> str:
    """A whole-value regex for a Sigma string with wildcards."""
    out = []
    for part in s.iter_parts():
        if part is SpecialChars.WILDCARD_MULTI:
            out.append(".*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            out.append(".")
        elif isinstance(part, Placeholder):
            raise Unsupported(f"placeholder %{part.name}% has no values: give the pipeline a var '{part.name}'")
        else:
            out.append(re.escape(part))
    return "".join(out)


def string_predicate(field: str, s: SigmaString, cased: bool, cond: Any = None) -> ast.Expr:
    """The DSL predicate for `field` matching the Sigma string `s`."""
    parts = list(s.iter_parts())
    for part in parts:
        if isinstance(part, Placeholder):
            raise _unsupported(f"placeholder %{part.name}% has no values: give the pipeline a var '{part.name}'", cond)
    if parts == [SpecialChars.WILDCARD_MULTI]:
        return ast.Exists(field)
    lead = bool(parts) and parts[0] is SpecialChars.WILDCARD_MULTI
    trail = len(parts) > 1 and parts[-1] is SpecialChars.WILDCARD_MULTI
    core = parts[int(lead) : len(parts) - int(trail)]
    if _is_number_field(field):
        text = "".join(p for p in core if isinstance(p, str))
        if lead or trail or len(core) != 1 or not re.fullmatch(r"-?\d+", text):
            raise _unsupported(f"'{field}' holds numbers; the pattern {s.original!r} is not one", cond)
        return ast.Compare(field, "==", int(text))
    if all(isinstance(p, str) for p in core) and field in _IP_TEXT_FIELD:
        if lead or trail or not _is_ip_text("".join(core)):  # type: ignore[arg-type]
            field = _IP_TEXT_FIELD[field]
    ci = not cased and schema.field_type(field) != schema.IP and field not in EXACT_FIELDS
    if all(isinstance(p, str) for p in core):
        text = "".join(core)  # type: ignore[arg-type]
        if not lead and not trail:
            return ast.Compare(field, "==", text, ci)
        if not text:
            return ast.Exists(field)
        kind = "contains" if lead and trail else "endswith" if lead else "startswith"
        return ast.StrMatch(field, kind, (text,), ci)
    pattern = _regex_of(s)
    return ast.Matches(field, "^" + pattern + "$", "s" + ("" if cased else "i"))


def _flatten(cls: type, args: list[ast.Expr]) -> ast.Expr:
    out: list[ast.Expr] = []
    for a in args:
        if isinstance(a, cls):
            out.extend(a.args)  # type: ignore[attr-defined]
        else:
            out.append(a)
    return out[0] if len(out) == 1 else cls(tuple(out))


def _merge_or(node: ast.Expr) -> ast.Expr:
    """`f icontains "a" or f icontains "b"` -> `f icontains ["a", "b"]` (one pass over the values,
    and easier to read); the first occurrence keeps its place."""
    if not isinstance(node, ast.Or):
        return node
    out: list[ast.Expr] = []
    at: dict[tuple[str, str, bool], int] = {}
    for a in node.args:
        if isinstance(a, ast.StrMatch):
            key = (a.field, a.kind, a.ci)
            if key in at:
                prev = out[at[key]]
                out[at[key]] = ast.StrMatch(a.field, a.kind, prev.values + a.values, a.ci)  # type: ignore[union-attr]
                continue
            at[key] = len(out)
        out.append(a)
    return out[0] if len(out) == 1 else ast.Or(tuple(out))


class SiemBackend(Backend):
    """Sigma rules to siem rule DSL conditions (see the module docstring for the semantics)."""

    name: ClassVar[str] = "siem rule DSL"
    identifier: ClassVar[str] = "siem"
    formats: ClassVar[dict[str, str]] = {
        "default": "one DSL condition per rule",
        "rules": "loadable .rules files (rule blocks with metadata and generated tests)",
        "ast": "DSL expression trees (Python objects)",
    }
    requires_pipeline: ClassVar[bool] = True
    convert_or_as_in: ClassVar[bool] = True
    convert_and_as_in: ClassVar[bool] = False
    in_expressions_allow_wildcards: ClassVar[bool] = False
    explicit_not_exists_expression: ClassVar[bool] = False

    # --- boolean structure

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> ast.Expr:
        return _merge_or(_flatten(ast.Or, [self.convert_condition(a, state) for a in cond.args]))

    def convert_condition_and(self, cond: ConditionAND, state: ConversionState) -> ast.Expr:
        return _flatten(ast.And, [self.convert_condition(a, state) for a in cond.args])

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> ast.Expr:
        inner = self.convert_condition(cond.args[0], state)
        return inner.arg if isinstance(inner, ast.Not) else ast.Not(inner)

    def convert_condition_as_in_expression(self, cond: ConditionOR | ConditionAND, state: ConversionState) -> ast.Expr:
        field = _check_field(cond.args[0].field, cond)  # type: ignore[union-attr]
        values = [a.value for a in cond.args]  # type: ignore[union-attr]
        if _is_number_field(field):
            nums = []
            for v in values:
                text = str(v.to_plain())
                if not re.fullmatch(r"-?\d+", text):
                    raise _unsupported(f"'{field}' holds numbers; {text!r} is not one", cond)
                nums.append(int(text))
            return ast.InSet(field, tuple(nums))
        texts = tuple(str(v.to_plain()) if isinstance(v, SigmaString) else str(v.number) for v in values)
        cased = any(isinstance(v, SigmaCasedString) for v in values) or field in EXACT_FIELDS
        return ast.InSet(field, texts, not cased and schema.field_type(field) != schema.IP)

    # --- field = value

    def convert_condition_field_eq_val_str(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        return string_predicate(_check_field(cond.field, cond), cond.value, False, cond)  # type: ignore[arg-type]

    def convert_condition_field_eq_val_str_case_sensitive(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> ast.Expr:
        return string_predicate(_check_field(cond.field, cond), cond.value, True, cond)  # type: ignore[arg-type]

    def convert_condition_field_eq_val_num(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        field = _check_field(cond.field, cond)
        num = cond.value.number  # type: ignore[attr-defined]
        if _is_number_field(field):
            return ast.Compare(field, "==", num)
        return ast.Compare(field, "==", str(num), False)

    def convert_condition_field_eq_val_bool(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        field = _check_field(cond.field, cond)
        if schema.field_type(field) == schema.BOOL:
            return ast.Compare(field, "==", bool(cond.value.boolean))  # type: ignore[attr-defined]
        return ast.Compare(field, "==", "true" if cond.value.boolean else "false", True)  # type: ignore[attr-defined]

    def convert_condition_field_eq_val_re(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        field = _check_field(cond.field, cond)
        value: SigmaRegularExpression = cond.value  # type: ignore[assignment]
        pattern = str(value.regexp)
        flags = "".join(sorted(_FLAGS[f] for f in value.flags))
        why = regex_error(pattern, flags)
        if why:
            raise _unsupported(f"regex {pattern!r} on '{field}' is {why.removeprefix('not ')}", cond)
        return ast.Matches(field, pattern, flags)

    def convert_condition_field_eq_val_cidr(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        field = _check_field(cond.field, cond)
        value: SigmaCIDRExpression = cond.value  # type: ignore[assignment]
        return ast.InCidr(field, (str(value.network),))

    def convert_condition_field_compare_op_val(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> ast.Expr:
        field = _check_field(cond.field, cond)
        value: SigmaCompareExpression = cond.value  # type: ignore[assignment]
        if schema.field_type(field) in (schema.IP, schema.BOOL):
            raise _unsupported(f"'{field}' is {schema.field_type(field)}, not a number: cannot compare with <, >", cond)
        return ast.Compare(field, _OPS[value.op], value.number.number)  # numbers, also where held as text

    def convert_condition_field_eq_field(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        field = _check_field(cond.field, cond)
        ref: SigmaFieldReference = cond.value  # type: ignore[assignment]
        starts, ends = getattr(ref, "starts_with", False), getattr(ref, "ends_with", False)
        op = "contains" if starts and ends else "startswith" if starts else "endswith" if ends else "=="
        return ast.FieldCompare(field, op, _check_field(ref.field, cond), op != "==")

    def convert_condition_field_eq_val_null(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        return ast.Not(ast.Exists(_check_field(cond.field, cond)))

    def convert_condition_field_exists(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        return ast.Exists(_check_field(cond.field, cond))

    def convert_condition_field_not_exists(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        return ast.Not(ast.Exists(_check_field(cond.field, cond)))

    def convert_condition_field_eq_val_timestamp_part(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> ast.Expr:
        raise _unsupported("the |minute/|hour/|day/... timestamp-part modifiers have no DSL counterpart", cond)

    def convert_condition_field_eq_query_expr(self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> ast.Expr:
        raise _unsupported("query-expression placeholders are not supported", cond)

    # --- keywords: values without a field

    def _keyword_field(self, state: ConversionState) -> str:
        return str(state.processing_state.get(KEYWORD_FIELD_STATE, DEFAULT_KEYWORD_FIELD))

    def convert_condition_val_str(self, cond: ConditionValueExpression, state: ConversionState) -> ast.Expr:
        field = self._keyword_field(state)
        s: SigmaString = cond.value  # type: ignore[assignment]
        parts = list(s.iter_parts())
        if parts and parts[0] is not SpecialChars.WILDCARD_MULTI:
            s = SpecialChars.WILDCARD_MULTI + s  # type: ignore[assignment]
        if parts and parts[-1] is not SpecialChars.WILDCARD_MULTI:
            s = s + SpecialChars.WILDCARD_MULTI
        return string_predicate(field, s, isinstance(cond.value, SigmaCasedString), cond)

    def convert_condition_val_num(self, cond: ConditionValueExpression, state: ConversionState) -> ast.Expr:
        return ast.StrMatch(self._keyword_field(state), "contains", (str(cond.value.number),))  # type: ignore[attr-defined]

    def convert_condition_val_re(self, cond: ConditionValueExpression, state: ConversionState) -> ast.Expr:
        field = self._keyword_field(state)
        return self.convert_condition_field_eq_val_re(ConditionFieldEqualsValueExpression(field, cond.value), state)

    def convert_condition_query_expr(self, cond: ConditionValueExpression, state: ConversionState) -> ast.Expr:
        raise _unsupported("query-expression placeholders are not supported", cond)

    # --- correlations: not yet (see README "Sigma rules")

    def _no_correlation(self, *args: Any, **kwargs: Any) -> Any:
        raise SigmaFeatureNotSupportedByBackendError("Sigma correlation rules are not converted yet")

    convert_correlation_event_count_rule = _no_correlation
    convert_correlation_value_count_rule = _no_correlation
    convert_correlation_temporal_rule = _no_correlation
    convert_correlation_temporal_ordered_rule = _no_correlation
    convert_correlation_extended_temporal_rule = _no_correlation
    convert_correlation_extended_temporal_ordered_rule = _no_correlation
    convert_correlation_value_sum_rule = _no_correlation
    convert_correlation_value_avg_rule = _no_correlation
    convert_correlation_value_percentile_rule = _no_correlation
    convert_correlation_value_median_rule = _no_correlation

    # --- output

    def finalize_query_default(self, rule: SigmaRule, query: ast.Expr, index: int, state: ConversionState) -> str:
        return render_expr(query)

    def finalize_query_ast(self, rule: SigmaRule, query: ast.Expr, index: int, state: ConversionState) -> ast.Expr:
        return query

    def finalize_query_rules(self, rule: SigmaRule, query: ast.Expr, index: int, state: ConversionState) -> str:
        from siem.sigma.rulefile import rule_block

        return rule_block(rule, query, index)

    def finalize_output_default(self, queries: list[Any]) -> Any:
        return queries

    def finalize_output_ast(self, queries: list[Any]) -> Any:
        return queries

    def finalize_output_rules(self, queries: list[Any]) -> Any:
        return "\n".join(queries)
