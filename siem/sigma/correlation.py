"""Sigma correlation rules as DSL correlations, in event time with the engine's windows.

========================  ==========================================================================
Sigma                     DSL
========================  ==========================================================================
event_count  gte/gt N     ``when <any referenced rule> count >= N within T by <group-by>``
value_count  gte/gt N     ``distinct(<field>) >= N within T by ...``
value_sum    gte/gt N     ``sum(<field>) >= N within T by ...``
value_avg, value_median   ``avg(<field>) >= N ...``, ``median(<field>) >= N ...``
value_percentile          ``percentile(<field>, P) >= N ...``
temporal_ordered          ``sequence within T by ... { <rule 1> <rule 2> ... }``
temporal                  ``all within T by ... { <rule 1> <rule 2> ... }`` (any order)
========================  ==========================================================================

Group-by fields and the aggregated field are mapped with the referenced rules' pipeline (the same
names the rules' conditions use). Refused, with the reason: conditions other than gte/gt, field
aliases, and correlations over correlations; each needs a DSL construct that does not exist yet
(README "Sigma rules").

Referenced rules with ``generate: false`` (Sigma's default) do not become rules of their own; their
conditions live on inside the correlation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sigma.correlations import SigmaCorrelationConditionOperator as Op
from sigma.correlations import SigmaCorrelationRule, SigmaCorrelationType as Kind
from sigma.rule import SigmaRule

from siem.dsl import ast
from siem.dsl.printer import render_field
from siem.sigma.pipelines import FIELD_MAPS, Logsource, map_field

MAX_WINDOW_S = 30 * 86_400


class CorrelationUnsupported(ValueError):
    """A Sigma correlation the DSL cannot express (yet); the message says which part."""


@dataclass(frozen=True, slots=True)
class Base:
    """A converted base rule: its condition and the logsource entry that mapped its fields."""

    rule: SigmaRule
    when: ast.Expr
    logsource: Logsource


def _ops(cond: object) -> str:
    op = getattr(cond, "op", None)
    if op is Op.GTE:
        return ">="
    if op is Op.GT:
        return ">"
    name = getattr(op, "name", "extended").lower()
    raise CorrelationUnsupported(f"correlation condition '{name}' has no DSL counterpart (only gte and gt)")


def duration(seconds: int) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _mapped(name: str, bases: list[Base]) -> str:
    targets = {map_field(b.logsource, name) for b in bases}
    if len(targets) != 1:
        raise CorrelationUnsupported(f"field '{name}' maps to different fields in the referenced rules: "
                                     f"{', '.join(sorted(targets))}")
    return targets.pop()


def correlate(corr: SigmaCorrelationRule, bases: list[Base]) -> tuple[ast.Expr, ast.Correlation]:
    """The DSL `when` and correlation of `corr` over its (converted) referenced rules."""
    if corr.aliases is not None and len(corr.aliases):
        raise CorrelationUnsupported("correlation field aliases have no DSL counterpart yet")
    window_s = corr.timespan.seconds
    if window_s <= 0 or window_s > MAX_WINDOW_S:
        raise CorrelationUnsupported(f"timespan {corr.timespan.spec} is outside 1s..30d")
    by = tuple(_mapped(g, bases) for g in (corr.group_by or ()))
    window_ms = window_s * 1000
    whens = [b.when for b in bases]
    when: ast.Expr = whens[0] if len(whens) == 1 else ast.Or(tuple(whens))
    kind = corr.type
    if kind is Kind.EVENT_COUNT:
        return when, ast.Threshold("count", None, _ops(corr.condition), float(corr.condition.count), window_ms, by)
    aggs = {Kind.VALUE_COUNT: "distinct", Kind.VALUE_SUM: "sum", Kind.VALUE_AVG: "avg",
            Kind.VALUE_MEDIAN: "median", Kind.VALUE_PERCENTILE: "percentile"}
    if kind in aggs:
        ref = corr.condition.fieldref
        if not isinstance(ref, str):
            raise CorrelationUnsupported(f"{kind.name.lower()} over several fields has no DSL counterpart")
        q = float(corr.condition.percentile) if kind is Kind.VALUE_PERCENTILE and corr.condition.percentile else None
        if kind is Kind.VALUE_PERCENTILE and q is None:
            raise CorrelationUnsupported("value_percentile needs a percentile")
        return when, ast.Threshold(aggs[kind], _mapped(ref, bases), _ops(corr.condition),
                                   float(corr.condition.count), window_ms, by, None, q)
    if kind in (Kind.TEMPORAL, Kind.TEMPORAL_ORDERED):
        if len(bases) < 2:
            raise CorrelationUnsupported(f"{kind.name.lower()} needs at least two rules")
        cond = corr.condition
        if cond is not None and getattr(cond, "count", None) not in (None, len(bases)):
            raise CorrelationUnsupported(f"{kind.name.lower()} over {cond.count} of {len(bases)} rules has no DSL "
                                         f"counterpart (only all of them)")
        steps = tuple(ast.Step(w) for w in whens)
        return ast.TrueExpr(), ast.Sequence(steps, window_ms, by, None, kind is Kind.TEMPORAL_ORDERED)
    raise CorrelationUnsupported(f"Sigma correlation type '{kind.name.lower()}' has no DSL counterpart yet")


def render_correlation(corr: ast.Correlation) -> list[str]:
    """Rule-text lines for a threshold or sequence (siem.dsl.grammar's syntax)."""
    from siem.dsl.printer import render_expr

    by = f" by {', '.join(render_field(k) for k in corr.by)}" if corr.by else ""  # type: ignore[union-attr]
    match corr:
        case ast.Threshold(kind, field, op, value, window_ms, _, _, q):
            agg = "count" if kind == "count" else f"{kind}({render_field(field or '')}" + (
                f", {q:g})" if q is not None else ")")
            num = int(value) if value == int(value) else value
            return [f"{agg} {op} {num} within {duration(window_ms // 1000)}{by}"]
        case ast.Sequence(steps, window_ms, _, _, ordered):
            word = "sequence" if ordered else "all"
            lines = [f"{word} within {duration(window_ms // 1000)}{by} {{"]
            lines += [f"    {render_expr(s.expr, indent='      ')}" for s in steps]
            return lines + ["  }"]
    raise CorrelationUnsupported(f"cannot render {type(corr).__name__}")


__all__ = ["Base", "CorrelationUnsupported", "correlate", "render_correlation", "duration", "FIELD_MAPS"]
