"""Load rule files: parse, resolve lists and macros, type-check, and collect every Issue before failing.

Passes, each small and named:
  1. split   - a file into top-level statements, so one syntax error does not hide the next
  2. parse   - each statement with the grammar (syntax errors become Issues with a caret)
  3. declare - lists and macros into one namespace for the whole rule pack (duplicates are errors)
  4. resolve - macro references (cycles are errors) and list references, into plain expressions
  5. check   - fields against the schema, types, regexes (RE2), CIDRs, thresholds, windows, templates
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import orjson
import pyparsing as pp

from siem import schema
from siem.dsl import ast, intel
from siem.dsl.regex import regex_error
from siem.dsl.attack import check_tag
from siem.dsl.grammar import MAX_DEPTH, parse_chunk
from siem.errors import Issue, Location, RuleError

MAX_WINDOW_MS = 30 * 86_400_000
MAX_EXPANDED_DEPTH = 4 * MAX_DEPTH  # an expression with its macros expanded (see _Resolver.resolve)
MAX_REGEX_LEN = 4096
MAX_LIST_ITEMS = 1_000_000
RULE_FILE_SUFFIXES = (".rules", ".siem")
SIGMA_FILE_SUFFIXES = (".yml", ".yaml")  # Sigma rules, converted when loaded (siem.sigma)
_STATEMENT_START = re.compile(r"^(rule|list|macro)\b", re.M)
_NUMBER_TEXT = re.compile(r"\s*-?\d+(\.\d+)?\s*")


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules ready to compile: macros expanded, lists inlined, everything checked."""

    rules: tuple[ast.RuleSpec, ...]
    warnings: tuple[Issue, ...] = ()
    sources: tuple[str, ...] = ()


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.suffix in RULE_FILE_SUFFIXES + SIGMA_FILE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Load every rule file under `paths`; raise RuleError listing every problem found."""
    files = rule_files(paths)
    texts: dict[str, str] = {}
    issues: list[Issue] = []
    sigma = [f for f in files if f.suffix in SIGMA_FILE_SUFFIXES]
    if sigma:
        texts.update(_sigma_texts(sigma, issues))
        files = [f for f in files if f.suffix not in SIGMA_FILE_SUFFIXES]
    for f in files:
        try:
            texts[str(f)] = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(Issue("unreadable-file", f"cannot read rule file: {exc}", Location(str(f), 1, 1)))
    if not files and not sigma:
        issues.append(Issue("no-rules", f"no rule files (*.rules) found in {', '.join(map(str, paths))}"))
    return load_texts(texts, issues)


def _sigma_texts(files: list[Path], issues: list[Issue]) -> dict[str, str]:
    """Sigma rule files converted to rule text (siem.sigma), keyed "<file> (converted)" so an issue in
    the generated text is not mistaken for a line of the YAML. A rule that cannot be converted is a
    warning (a SigmaHQ checkout always holds some), counted in siem_sigma_rules_skipped."""
    from siem import metrics
    from siem.sigma.convert import convert_files

    root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(".")
    out: dict[str, str] = {}
    skipped = 0
    for o in convert_files(files, root):
        path = str(root / o.source) if not Path(o.source).is_absolute() else o.source
        if o.text is None:
            skipped += 1
            issues.append(Issue("sigma-skipped", f"Sigma rule not converted: {o.reason}", Location(path, 1, 1),
                                severity="warning"))
        else:
            out[f"{path} (converted)"] = o.text
    metrics.SIGMA_RULES_SKIPPED.set(skipped)
    return out


def load_texts(texts: dict[str, str], issues: list[Issue] | None = None) -> RuleSet:
    """Load rules from {path: text}; raise RuleError listing every problem found."""
    issues = list(issues or [])
    decls: list[tuple[Any, str]] = []
    lines_of: dict[str, list[str]] = {p: t.splitlines() for p, t in texts.items()}
    for path, text in texts.items():
        for decl in _parse_file(path, text, issues):
            decls.append((decl, path))
    loader = _Resolver(lines_of, issues)
    rules = loader.run(decls)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise RuleError(sorted(issues, key=_issue_order))
    return RuleSet(tuple(rules), tuple(i for i in issues if i.severity != "error"), tuple(texts))


def _issue_order(i: Issue) -> tuple[str, int, int]:
    loc = i.location
    return (loc.path, loc.line, loc.column) if loc else ("", 0, 0)


# --- 1+2: split and parse -------------------------------------------------------------------------


def _parse_file(path: str, text: str, issues: list[Issue]) -> list[Any]:
    starts = [m.start() for m in _STATEMENT_START.finditer(text)] or [0]
    starts[0] = 0
    out: list[Any] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        chunk = text[start:end]
        if not chunk.strip() or _only_comments(chunk):
            continue
        line_offset = text.count("\n", 0, start)
        depth_issue = _depth_issue(chunk, path, line_offset)
        if depth_issue:
            issues.append(depth_issue)
            continue
        try:
            out.extend(parse_chunk(chunk, path, line_offset))
        except pp.ParseBaseException as exc:
            issues.append(_syntax_issue(exc, path, line_offset))
    return out


def _only_comments(chunk: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in chunk.splitlines())


# what the depth scan skips (a "(" inside them does not nest) and the one word that nests
_DEPTH_TOKENS = re.compile(r"""
    (?P<skip> "(?:[^"\\\n]|\\.)*" | '(?:[^'\\\n]|\\.)*' | `[^`\n]*` | \#[^\n]* )
  | (?P<regex> \bmatches\s+/(?:[^/\\\n]|\\.)*/ )
  | (?P<word> [A-Za-z_@][A-Za-z0-9_@.\-]* )
  | (?P<open> \( ) | (?P<close> \) )
""", re.X)


def _depth_issue(chunk: str, path: str, line_offset: int) -> Issue | None:
    """The first place where an expression nests deeper than MAX_DEPTH, before the grammar sees it.

    Each ``(`` and each ``not`` opens a level: ``not not x`` and ``((x))`` are both 2 deep. A run of
    ``not`` ends at its operand; the levels a parenthesis opened end at its ``)``. Strings, backquoted
    fields, comments and regex literals are skipped. Linear in the text, no recursion: a rule of any
    nesting depth gets this Issue instead of a RecursionError inside the parser."""
    base = 0  # levels opened by the enclosing parentheses (and the nots before each)
    nots = 0  # consecutive nots waiting for their operand at this level
    stack: list[int] = []
    for m in _DEPTH_TOKENS.finditer(chunk):
        kind = m.lastgroup
        if kind in ("skip", "regex"):
            nots = 0
            continue
        if kind == "word":
            if m.group() == "not":
                nots += 1
            else:
                nots = 0
                continue
        elif kind == "open":
            stack.append(base)
            base, nots = base + nots + 1, 0
        else:
            base, nots = (stack.pop() if stack else 0), 0
            continue
        if base + nots > MAX_DEPTH:
            pos = m.start()
            line = chunk.count("\n", 0, pos) + 1
            col = pos - (chunk.rfind("\n", 0, pos) + 1) + 1
            return Issue(
                "too-deep",
                f"expression nests more than {MAX_DEPTH} levels deep (parentheses and 'not's); "
                "split it into macros",
                Location(path, line + line_offset, col),
                chunk.splitlines()[line - 1],
            )
    return None


def _syntax_issue(exc: pp.ParseBaseException, path: str, line_offset: int) -> Issue:
    msg = str(exc.msg)
    found = exc.line[exc.col - 1 : exc.col + 11].split(" ")[0] if exc.line else ""
    if msg.startswith("Expected"):
        msg = msg[0].lower() + msg[1:]
    text = f"syntax error: {msg}" + (f", found {found!r}" if found and "found" not in msg else "")
    return Issue("syntax", text, Location(path, exc.lineno + line_offset, exc.col), exc.line)


# --- 3..5: declare, resolve, check ----------------------------------------------------------------


class _TooDeep(Exception):
    """Internal to _Resolver.resolve: the expansion passed MAX_EXPANDED_DEPTH."""


class _Resolver:
    def __init__(self, lines_of: dict[str, list[str]], issues: list[Issue]) -> None:
        self.lines_of = lines_of
        self.issues = issues
        self.lists: dict[str, ast.ListDecl] = {}
        self.macros: dict[str, ast.MacroDecl] = {}
        self.used: set[str] = set()
        self.context = ""
        self.relative = False  # checking the condition of an element-wise test

    def error(self, code: str, message: str, loc: Location | None, severity: str = "error") -> None:
        snippet = ""
        if loc is not None:
            lines = self.lines_of.get(loc.path, [])
            snippet = lines[loc.line - 1] if 0 < loc.line <= len(lines) else ""
        self.issues.append(Issue(code, message, loc, snippet, self.context, severity))

    def run(self, decls: list[tuple[Any, str]]) -> list[ast.RuleSpec]:
        for decl, path in decls:
            if isinstance(decl, ast.ListDecl):
                self.declare_list(decl, path)
            elif isinstance(decl, ast.MacroDecl):
                if decl.name in self.macros or decl.name in self.lists:
                    self.error("duplicate-name", f"'{decl.name}' is already defined", decl.loc)
                self.macros[decl.name] = decl
        rules: list[ast.RuleSpec] = []
        seen: dict[str, Location | None] = {}
        for decl, _path in decls:
            if isinstance(decl, tuple) and decl[0] == "rule":
                self.context = f"in rule '{decl[1]}'"
                rule = self.build_rule(decl)
                if rule.id in seen:
                    self.error("duplicate-rule", f"rule id '{rule.id}' is already used at {seen[rule.id]}", rule.loc)
                else:
                    seen[rule.id] = rule.loc
                    rules.append(rule)
        self.context = ""
        for name, decl in {**self.lists, **self.macros}.items():
            if name not in self.used:
                self.error("unused", f"'{name}' is defined but never used", decl.loc, "warning")
        return rules

    def declare_list(self, decl: ast.ListDecl, path: str) -> None:
        if decl.name in self.lists or decl.name in self.macros:
            self.error("duplicate-name", f"'{decl.name}' is already defined", decl.loc)
            return
        if decl.file is not None:
            name, _, kind = decl.file.partition("#")  # "feed.json#ip": threat-intel indicators (siem.dsl.intel)
            file = Path(path).parent / name
            values: tuple[str, ...] = ()
            if kind and kind not in intel.KINDS:
                self.error("list-file", f"unknown indicator kind {kind!r} (known: {', '.join(intel.KINDS)})", decl.loc)
            else:
                try:
                    values = intel.read_indicators(file, kind or None)
                except (OSError, intel.IntelError) as exc:
                    self.error("list-file", f"cannot read list file {file}: {exc}", decl.loc)
            if len(values) > MAX_LIST_ITEMS:
                self.error("list-too-long", f"list has {len(values)} items (max {MAX_LIST_ITEMS})", decl.loc)
            decl = replace(decl, values=values)
        self.lists[decl.name] = decl

    # --- rules

    def build_rule(self, raw: tuple[Any, ...]) -> ast.RuleSpec:
        _, rule_id, clauses, loc = raw
        fields: dict[str, Any] = {"tests": []}
        clause_locs: list[tuple[str, Location]] = []
        for _, name, value, cloc in clauses:
            clause_locs.append((name, cloc))
            if name == "test":
                fields["tests"].append(value)
            elif name in fields:
                self.error("duplicate-clause", f"'{_clause_word(name)}' given twice", cloc)
            else:
                fields[name] = value
        when = self.resolve(fields.get("when", ast.TrueExpr()), set())
        corr = fields.get("correlation")
        if corr is not None:
            corr = self.resolve_correlation(corr)
        if "when" not in fields and corr is None:
            self.error("empty-rule", "rule has neither 'when' nor a correlation: it would match every event", loc)
        severity = fields.get("severity", "medium")
        suppress = fields.get("suppress")
        rule = ast.RuleSpec(
            id=rule_id,
            title=fields.get("title", rule_id),
            severity=severity,
            tags=tuple(fields.get("tags", ())),
            when=when,
            correlation=corr,
            suppress=suppress,
            message=fields.get("message", fields.get("title", rule_id)),
            tests=tuple(fields["tests"]),
            loc=loc,
            clause_locs=tuple(clause_locs),
            references=tuple(fields.get("references", ())),
            runbook=fields.get("runbook", ""),
            author=fields.get("author", ""),
            falsepositives=tuple(fields.get("falsepositives", ())),
            license=fields.get("license", ""),
            sigma_id=fields.get("sigma_id", ""),
        )
        if rule.runbook and not rule.runbook.startswith(("https://", "http://")):
            self.error("bad-runbook", "runbook must be an http:// or https:// URL", dict(clause_locs).get("runbook", loc))
        self.check_rule(rule, dict(clause_locs))
        self.check_tags(rule.tags, dict(clause_locs).get("tags"))
        return rule

    def check_tags(self, tags: tuple[str, ...], loc: Location | None) -> None:
        """ATT&CK tags (siem.dsl.attack): tactics by name, techniques by id format."""
        for tag in tags:
            problem = check_tag(tag)
            if problem is None:
                continue
            where = loc
            if loc is not None:  # point at the tag itself on the clause's line
                lines = self.lines_of.get(loc.path, [])
                text = lines[loc.line - 1] if 0 < loc.line <= len(lines) else ""
                col = text.find(tag, max(loc.column - 1, 0))
                where = replace(loc, column=col + 1) if col >= 0 else loc
            self.error("attack-tag", problem, where)

    def resolve_correlation(self, corr: ast.Correlation) -> ast.Correlation:
        if isinstance(corr, ast.Sequence):
            steps = tuple(replace(s, expr=self.resolve(s.expr, set())) for s in corr.steps)
            return replace(corr, steps=steps)
        if isinstance(corr, ast.Absent):
            return replace(corr, expr=self.resolve(corr.expr, set()))
        return corr

    def resolve(self, node: ast.Expr, expanding: set[str], depth: int = 0) -> ast.Expr:
        """The expression with macros expanded and lists inlined. Macros nesting macros can build a tree
        deeper than any one text: past MAX_EXPANDED_DEPTH levels that is a ``too-deep`` Issue at the
        outermost macro reference, never a RecursionError (here, in the compiler or at evaluation)."""
        if depth > MAX_EXPANDED_DEPTH:
            raise _TooDeep
        match node:
            case ast.MacroRef(name, loc):
                if not expanding:  # the outermost reference: where a too-deep expansion is reported
                    try:
                        return self.resolve(node, {""}, depth)
                    except _TooDeep:
                        self.error("too-deep", f"expanding macro '{name}' nests the expression more than "
                                   f"{MAX_EXPANDED_DEPTH} levels deep (macros within macros)", loc)
                        return ast.TrueExpr()
                if name in expanding:
                    self.error("macro-cycle", f"macro '{name}' refers to itself", loc)
                    return ast.TrueExpr()
                macro = self.macros.get(name)
                if macro is None:
                    hint = _suggest(name, list(self.macros))
                    what = "list" if name in self.lists else "macro"
                    msg = f"'{name}' is a list, not a condition" if what == "list" else f"unknown macro '{name}'{hint}"
                    self.error("unknown-macro", msg, loc)
                    return ast.TrueExpr()
                self.used.add(name)
                return self.resolve(macro.expr, expanding | {name}, depth)
            case ast.And(args):
                return ast.And(tuple(self.resolve(a, expanding, depth + 1) for a in args))
            case ast.Or(args):
                return ast.Or(tuple(self.resolve(a, expanding, depth + 1) for a in args))
            case ast.Not(arg):
                return ast.Not(self.resolve(arg, expanding, depth + 1))
            case ast.Each():
                return replace(node, expr=self.resolve(node.expr, expanding, depth + 1))
            case ast.InSet(values=ast.ListRef() as ref) | ast.StrMatch(values=ast.ListRef() as ref):
                return replace(node, values=self.list_values(ref))  # type: ignore[arg-type]
            case ast.InCidr(networks=ast.ListRef() as ref):
                return replace(node, networks=tuple(str(v) for v in self.list_values(ref)))
            case _:
                return node

    def list_values(self, ref: ast.ListRef) -> tuple[Any, ...]:
        decl = self.lists.get(ref.name)
        if decl is None:
            hint = _suggest(ref.name, list(self.lists))
            self.error("unknown-list", f"unknown list '{ref.name}'{hint}", ref.loc)
            return ()
        self.used.add(ref.name)
        return decl.values

    # --- checks

    def check_rule(self, rule: ast.RuleSpec, clause_locs: dict[str, Location]) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule.id):
            self.error("bad-rule-id", f"rule id '{rule.id}' must be letters, digits and _", rule.loc)
        self.check_expr(rule.when)
        corr = rule.correlation
        cloc = clause_locs.get("correlation")
        keys: tuple[str, ...] = ()
        match corr:
            case ast.Threshold(kind, field, op, value, window_ms, by):
                keys = by
                self.check_window(window_ms, cloc)
                for m in (ast.Measure(kind, field, op, value, corr.q), *corr.extra):
                    self.check_measure(m, cloc)
            case ast.Sequence(steps, window_ms, by):
                keys = by
                self.check_window(window_ms, cloc)
                if len(steps) < 2:
                    self.error("short-sequence", "a sequence needs at least two steps", cloc)
                for step in steps:
                    self.check_expr(step.expr)
                    if step.distinct is not None:
                        self.check_field(step.distinct, step.loc)
                    if step.min_count < 1:
                        self.error("impossible-threshold", "a step count must be at least 1", step.loc)
            case ast.Absent(expr, window_ms, by):
                keys = by
                self.check_window(window_ms, cloc)
                self.check_expr(expr)
            case ast.FirstSeen(field, by, learn_ms):
                keys = by
                self.check_field(field, cloc)
                if learn_ms > MAX_WINDOW_MS * 12:
                    self.error("window", "learning period is longer than a year", cloc)
            case ast.Spike(factor, window_ms, baseline_ms, by, min_count):
                keys = by
                self.check_window(window_ms, cloc)
                self.check_window(baseline_ms, cloc)
                if baseline_ms < 2 * window_ms:
                    self.error("window", "the baseline must be at least twice the window", cloc)
                if factor <= 1:
                    self.error("impossible-threshold", "a spike factor must be above 1x", cloc)
        for key in keys:
            self.check_field(key, cloc)
        if rule.suppress is not None:
            self.check_window(rule.suppress.window_ms, rule.suppress.loc, allow_zero=False)
            for key in rule.suppress.by or ():
                self.check_field(key, rule.suppress.loc)
        self.check_template(rule.message, clause_locs.get("message"), corr)
        for case in rule.tests:
            for line in case.lines:
                if line.event_json is not None:
                    try:
                        ev = orjson.loads(line.event_json)
                        if not isinstance(ev, dict):
                            raise ValueError("not an object")
                    except ValueError as exc:
                        self.error("test-event", f"test event is not a JSON object: {exc}", line.loc)
                        continue
                    # a misspelt field would make a nofire case pass vacuously
                    for key in ev:
                        if schema.field_type(key) is None:
                            hint = _suggest(key, list(schema.FIELDS))
                            self.error("unknown-field", f"test event field '{key}' is not in the schema{hint}", line.loc)

    def check_measure(self, m: ast.Measure, loc: Location | None) -> None:
        if m.kind in ("count", "distinct", "sum"):
            if m.value < 1 or (m.op == ">" and m.value < 0):
                self.error("impossible-threshold", f"threshold {m.op} {m.value:g} is always true: use 1 or more", loc)
            if m.value != int(m.value) and m.kind != "sum":
                self.error("impossible-threshold", f"{m.kind} threshold must be a whole number", loc)
        if m.kind == "percentile" and not (m.q is not None and 0 < m.q <= 100):
            self.error("impossible-threshold", f"percentile must be above 0 and at most 100, not {m.q:g}", loc)
        if m.field is not None:
            self.check_field(m.field, loc)
            ftype = schema.field_type(m.field)
            if m.kind not in ("count", "distinct") and ftype not in (schema.LONG, None):
                self.error("type", f"{m.kind}({m.field}) needs a number field; '{m.field}' is {ftype}", loc)

    def check_window(self, window_ms: int, loc: Location | None, allow_zero: bool = False) -> None:
        if window_ms <= 0 and not allow_zero:
            self.error("window", "a window must be longer than 0s", loc)
        elif window_ms > MAX_WINDOW_MS:
            self.error("window", f"window of {window_ms // 86_400_000}d is longer than the 30d limit", loc)

    def check_field(self, field: str, loc: Location | None) -> str | None:
        if self.relative:  # inside any/all: fields of a list element, values are text
            return schema.KEYWORD
        ftype = schema.field_type(field)
        if ftype is None:
            hint = _suggest(field, list(schema.FIELDS))
            self.error("unknown-field", f"unknown field '{field}'{hint}", loc)
        return ftype

    def check_expr(self, node: ast.Expr) -> None:
        match node:
            case ast.And(args) | ast.Or(args):
                for a in args:
                    self.check_expr(a)
            case ast.Not(arg):
                self.check_expr(arg)
            case ast.Each(quantifier, path, inner, loc):
                from siem.schema import LIST_SOURCES, raw_path

                if self.relative:
                    self.error("each", f"{quantifier} inside any/all is not supported: name the nested path "
                                       "(e.g. ipRanges.items.cidrIp)", loc)
                elif raw_path(path) is None:
                    self.error("each", f"{quantifier} {path}: element-wise tests read lists from the raw "
                               f"record, under {', '.join(LIST_SOURCES)}", loc)
                self.relative = True
                try:
                    self.check_expr(inner)
                finally:
                    self.relative = False
            case ast.Compare(field, op, value, ci, loc):
                ftype = self.check_field(field, loc)
                is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
                ordering = op in ("<", "<=", ">", ">=")
                if ftype == schema.LONG and not is_num:
                    self.error("type", f"'{field}' is a number field, compared with {value!r}", loc)
                elif ordering and ftype == schema.IP:
                    self.error("type", f"'{field}' is an IP address: {op} does not apply to it (use in cidr(...))", loc)
                elif ordering and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
                    self.error("type", f"{op} {value!r} orders text, so \"30\" < \"8\" holds: write the number "
                               f"unquoted to compare numbers", loc)
                elif ordering and isinstance(value, bool):
                    self.error("type", f"{op} does not apply to true/false", loc)
                elif ftype in (schema.KEYWORD, schema.IP) and is_num and not ordering:
                    self.error("type", f"'{field}' is a text field, compared with the number {value!r}: quote it", loc)
                if ci and ftype == schema.LONG:
                    self.error("type", f"case-insensitive comparison on the number field '{field}'", loc)
            case ast.FieldCompare(field, op, other, ci, loc):
                ftype, otype = self.check_field(field, loc), self.check_field(other, loc)
                if op not in ("==", "!=", "contains", "startswith", "endswith"):
                    self.error("type", f"two fields compare with == != contains startswith endswith, not {op}", loc)
                elif op not in ("==", "!=") and schema.LONG in (ftype, otype):
                    self.error("type", f"{op} needs two text fields; '{field}' is {ftype}, '{other}' is {otype}", loc)
                elif ftype is not None and otype is not None and (ftype == schema.LONG) != (otype == schema.LONG):
                    self.error("type", f"'{field}' is {ftype} but '{other}' is {otype}", loc)
            case ast.InSet(field, values, ci, loc):
                ftype = self.check_field(field, loc)
                for v in values:
                    is_num = isinstance(v, (int, float)) and not isinstance(v, bool)
                    if ftype == schema.LONG and not is_num and not str(v).lstrip("-").isdigit():
                        self.error("type", f"'{field}' is a number field; list value {v!r} is not a number", loc)
                        break
            case ast.InCidr(field, networks, loc):
                ftype = self.check_field(field, loc)
                if ftype not in (schema.IP, schema.KEYWORD, None):  # text fields: the values that are addresses
                    self.error("type", f"cidr() needs an IP or text field; '{field}' is {ftype}", loc)
                for net in networks:
                    text = str(net)
                    if "/" not in text and ":" not in text:  # plain IPv4 (threat feeds): the C parser
                        try:
                            socket.inet_pton(socket.AF_INET, text)
                            continue
                        except OSError:
                            pass
                    try:
                        ipaddress.ip_network(text, strict=False)
                    except ValueError:
                        self.error("bad-cidr", f"{net!r} is not an IPv4 or IPv6 network", loc)
            case ast.StrMatch(field, kind, values, ci, loc):
                ftype = self.check_field(field, loc)
                if ftype == schema.LONG:
                    self.error("type", f"{kind} needs a text field; '{field}' is a number", loc)
                if not values:
                    self.error("empty-list", f"{kind} with no values never matches", loc, "warning")
            case ast.Matches(field, pattern, flags, loc):
                ftype = self.check_field(field, loc)
                if ftype == schema.LONG:
                    self.error("type", f"matches needs a text field; '{field}' is a number", loc)
                if len(pattern) > MAX_REGEX_LEN:
                    self.error("regex", f"regex is {len(pattern)} characters long (max {MAX_REGEX_LEN})", loc)
                elif bad := set(flags) - set("ims"):
                    self.error("regex", f"unknown regex flags {''.join(sorted(bad))!r} (use i, m, s)", loc)
                else:
                    err = regex_error(pattern, flags)
                    if err:
                        self.error("regex", err, loc)
            case ast.Exists(field, loc):
                self.check_field(field, loc)

    def check_template(self, template: str, loc: Location | None, corr: ast.Correlation | None) -> None:
        try:
            names = template_fields(template)
        except ValueError as exc:
            self.error("template", f"bad message template: {exc}", loc)
            return
        for name in names:
            m = re.fullmatch(r"(distinct|sum|min|max)\((.+)\)", name)
            if m:
                self.check_field(m.group(2), loc)
            elif name not in TEMPLATE_WORDS:
                self.check_field(name, loc)


TEMPLATE_WORDS = frozenset(
    {"count", "rule", "title", "severity", "first", "last", "key", "baseline", "factor", "silent_ms"}
)


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}?][^{}]*)\}")
# {? text {field} text}: an optional part, left out when any placeholder inside it has no value
_OPTIONAL = re.compile(r"\{\?((?:[^{}]|\{\{|\}\}|\{[^{}?][^{}]*\})*)\}")


def template_fields(template: str) -> list[str]:
    """Names used as {placeholders} in a message template, optional parts included ({{ and }} are
    literal braces). ValueError for an empty placeholder or a brace that opens nothing it closes."""
    bare = _OPTIONAL.sub(lambda m: m.group(1), template)
    names = [m.group(1) for m in _PLACEHOLDER.finditer(bare) if m.group(1) is not None]
    if any(not n.strip() for n in names) or "{}" in bare:
        raise ValueError("empty {} placeholder")
    rest = _PLACEHOLDER.sub("", bare)
    if "{" in rest or "}" in rest:
        raise ValueError("unbalanced '{' or '}' (write {{ and }} for literal braces; {? ...} for an optional part)")
    return [n.strip() for n in names]


def render_template(template: str, values: dict[str, object]) -> str:
    """Fill {placeholders}. An optional part ``{? text {field}}`` is printed only when every placeholder
    in it has a value (``"from {source.ip}{? ({user_agent.original})}"``); a missing value outside one
    renders as '-' (rule authors wrap fields that an event may lack, so shipped messages never show it)."""

    def fill(text: str) -> str | None:
        missing = False

        def sub(m: re.Match[str]) -> str:
            nonlocal missing
            if m.group(1) is None:
                return m.group(0)[0]
            v = values.get(m.group(1).strip())
            if v is None or v == "":
                missing = True
                return "-"
            return str(v)

        out = _PLACEHOLDER.sub(sub, text)
        return None if missing else out

    def optional(m: re.Match[str]) -> str:
        return fill(m.group(1)) or ""

    def required(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        v = values.get(m.group(1).strip())
        return "-" if v is None or v == "" else str(v)

    parts: list[str] = []
    pos = 0
    for m in _OPTIONAL.finditer(template):
        parts.append(_PLACEHOLDER.sub(required, template[pos:m.start()]))
        parts.append(optional(m))
        pos = m.end()
    parts.append(_PLACEHOLDER.sub(required, template[pos:]))
    return "".join(parts)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _clause_word(name: str) -> str:
    return {"correlation": "correlation (count/distinct/sum/sequence/absent/...)"}.get(name, name)
