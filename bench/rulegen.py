"""Rule sets for the benchmark: variants of the shipped pack, and the SEC-equivalent SSH rules.

pack_variants(base, n)   n rules: the shipped pack's rules (a spread subset when n < 41), then
                         generated variants of them: new ids, thresholds and windows varied, and a
                         distinct exclusion per variant (``and not host.name == "decommissioned-0042"``,
                         the kind of tuning real packs carry), so no two rules share a filter. No
                         workload host is excluded, so a variant selects its base rule's rows and the
                         engine keeps their window state once (README, "Shared state"); variants whose
                         rows differ would each keep their own, as every rule did before that.
ssh_rules_dsl(n)         our DSL text of n SSH brute-force rules (the first: count >= 10 within 5m by
                         source.ip over "Failed password" events); variants differ in threshold/window.
ssh_rules_sec(n)         the same n rules as SEC SingleWithThreshold rules (window on arrival time).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from siem.dsl import ast
from siem.dsl.loader import RuleSet, load_rules, load_texts

from bench.workload import SEC_REGEX

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"


def shipped_pack(rules_dir: Path = RULES_DIR) -> RuleSet:
    return load_rules([rules_dir])


def _vary(spec: ast.RuleSpec, i: int) -> ast.RuleSpec:
    corr = spec.correlation
    k = i % 5
    if isinstance(corr, ast.Threshold):
        corr = replace(corr, value=corr.value + k, window_ms=corr.window_ms * (1 + i % 3))
    elif isinstance(corr, ast.Sequence):
        corr = replace(corr, window_ms=corr.window_ms * (1 + i % 3))
    elif isinstance(corr, ast.Absent):
        corr = replace(corr, window_ms=corr.window_ms + 600_000 * k)
    elif isinstance(corr, ast.Spike):
        corr = replace(corr, factor=corr.factor + k, min_count=corr.min_count + 10 * k)
    exclusion = ast.Not(ast.Compare("host.name", "==", f"decommissioned-{i:04d}"))
    when = exclusion if isinstance(spec.when, ast.TrueExpr) else ast.And((spec.when, exclusion))
    return replace(spec, id=f"{spec.id}_v{i:04d}", when=when, correlation=corr, tests=())


def pack_variants(base: RuleSet, n: int) -> RuleSet:
    """n rules derived from `base` (see the module docstring)."""
    rules = list(base.rules)
    if n <= len(rules):
        step = len(rules) / n
        return RuleSet(tuple(rules[int(i * step)] for i in range(n)))
    out = list(rules)
    i = 0
    while len(out) < n:
        out.append(_vary(rules[i % len(rules)], i))
        i += 1
    return RuleSet(tuple(out))


def _variant(i: int) -> tuple[int, int]:
    """(threshold, window seconds) of SSH rule i: rule 0 is the shipped rule's 10 in 5 minutes."""
    if i == 0:
        return 10, 300
    return 10 + i % 7, 300 + 60 * (i % 5)


def ssh_rules_dsl(n: int) -> RuleSet:
    parts = []
    for i in range(n):
        thresh, window = _variant(i)
        parts.append(
            f'rule ssh_bf_{i:02d} {{\n'
            f'  title    "SSH brute force from one source ({thresh} in {window}s)"\n'
            f'  severity high\n'
            f'  when     event.dataset == "sshd" and event.action == "ssh_login" and event.outcome == "failure"'
            f' and ssh.method == "password"\n'
            f'  count >= {thresh} within {window}s by source.ip\n'
            f'  message  "{{count}} failed SSH logins from {{source.ip}}"\n'
            f'}}\n')
    return load_texts({"bench_ssh.rules": "\n".join(parts)})


def ssh_rules_sec(n: int) -> str:
    """SEC rules: one SingleWithThreshold per variant; continue=TakeNext so every rule sees every line."""
    parts = []
    for i in range(n):
        thresh, window = _variant(i)
        parts.append(
            "type=SingleWithThreshold\n"
            "ptype=RegExp\n"
            f"pattern={SEC_REGEX}\n"
            "continue=TakeNext\n"
            f"desc=bf{i:02d} $1\n"
            f"action=write - ALERT{i:02d} $1\n"
            f"window={window}\n"
            f"thresh={thresh}\n")
    return "\n".join(parts)
