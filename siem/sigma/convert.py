"""Convert a directory of Sigma rules (``*.yml``) into ``.rules`` files, one per Sigma file.

``convert_tree(src)`` reads every file first, so Sigma filters (meta-filters) apply to the rules they
name and correlations may reference rules in other files (by id or name), then converts every rule
and returns one Outcome per Sigma rule file, in path order:
the rule text, or the exact reason it was not converted (a logsource we do not ingest, a field our
events do not carry, a regex RE2 cannot run, ...). ``write_tree(outcomes, out)`` writes the texts as
``out/<same relative path>.rules``, removing ``.rules`` files there that no longer have a source, so
re-importing a changed SigmaHQ checkout gives exactly its rules. Output is deterministic.

A directory whose ``LICENSE*`` file is the Detection Rule License (as SigmaHQ's) gives its rules
the licence ``DRL-1.1`` unless a rule names its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule

from siem.dsl import ast
from siem.schema import ALERT_DATASET
from siem.sigma.correlation import Base, CorrelationUnsupported, correlate
from siem.sigma.pipelines import find_logsource

from siem.sigma.backend import SiemBackend
from siem.sigma.pipelines import pipeline
from siem.sigma.rulefile import rule_block, rule_id

SIGMA_SUFFIXES = (".yml", ".yaml")
MAX_FILE_BYTES = 1 << 20  # a Sigma rule is a few KiB; SigmaHQ's largest is under 40 KiB
MAX_CHAIN = 4  # correlations over correlations, as deep as the engine evaluates rules over alerts
GENERATED_MARK = "# Sigma rule "


@dataclass(frozen=True, slots=True)
class Outcome:
    """One Sigma rule file: its converted text, or why not."""

    source: str  # path relative to the converted directory, with /
    text: str | None
    reason: str = ""
    rule_ids: tuple[str, ...] = ()


def sigma_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    return sorted(p for p in src.rglob("*") if p.suffix in SIGMA_SUFFIXES and p.is_file())


def directory_license(src: Path) -> str:
    """DRL-1.1 when a LICENSE file in `src` or above it is the Detection Rule License."""
    start = src if src.is_dir() else src.parent
    for d in [start, *start.resolve().parents]:
        for name in ("LICENSE.md", "LICENSE", "LICENSE.txt", "Detection-Rule-License.md"):
            f = d / name
            try:
                if f.is_file() and "Detection Rule License" in f.read_text(encoding="utf-8", errors="replace")[:4000]:
                    return "DRL-1.1"
            except OSError:
                continue
    return ""


def _reason(exc: BaseException) -> str:
    text = str(exc)
    cut = text.find(" in /")  # pySigma appends the rule's absolute path: keep output machine-independent
    if cut < 0:
        cut = text.find(" (while ")
    return " ".join((text[:cut] if cut > 0 else text).split())


@dataclass
class _File:
    rel: str
    stem: str
    rules: list[Any]
    reason: str = ""


def _parse(path: Path, root: Path) -> _File:
    try:
        rel = path.relative_to(root).as_posix() if path != root else path.name
    except ValueError:
        rel = path.as_posix()
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return _File(rel, path.stem, [], f"not read: larger than {MAX_FILE_BYTES // 1024} KiB")
        collection = SigmaCollection.from_yaml(data.decode("utf-8"), collect_filters=True, resolve_references=False)
    except OSError as exc:
        return _File(rel, path.stem, [], f"not read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return _File(rel, path.stem, [], f"not UTF-8 text (byte {exc.start})")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return _File(rel, path.stem, [], f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}")
    except (SigmaError, ValueError, TypeError, AttributeError, KeyError) as exc:  # pySigma on odd documents
        return _File(rel, path.stem, [], f"not a valid Sigma rule: {_reason(exc) or type(exc).__name__}")
    return _File(rel, path.stem, [*collection.rules, *collection.filters])


def _unique(rid: str, taken: set[str]) -> str:
    while rid in taken:
        rid += "_"
    taken.add(rid)
    return rid


def convert_tree(src: Path, placeholders: dict[str, list[str]] | None = None) -> list[Outcome]:
    """Convert every Sigma file under `src` (see the module docstring); `placeholders` fill ``|expand``."""
    root = src if src.is_dir() else src.parent
    return convert_files(sigma_files(src), root, directory_license(src), placeholders)


def convert_files(paths: list[Path], root: Path, licence: str = "",
                  placeholders: dict[str, list[str]] | None = None) -> list[Outcome]:
    """convert_tree for a list of Sigma files, named relative to `root` (absolute when outside it)."""
    files = [_parse(p, root) for p in paths]
    everything = [r for f in files for r in f.rules]
    index = SigmaCollection([r for r in everything if not isinstance(r, SigmaFilter)], resolve_references=False)
    filters = [r for r in everything if isinstance(r, SigmaFilter)]
    for f in files:  # Sigma filters (meta-filters) apply to every rule they name or whose logsource they share
        f.rules = [reduce(lambda r, flt: flt.apply_on_rule(r), filters, r) if isinstance(r, SigmaRule) else r
                   for r in f.rules]
    bases: dict[int, Base | str] = {}  # id(SigmaRule) -> converted base, or why not
    silent: set[int] = set()  # referenced by a correlation that does not let them generate
    for f in files:
        for rule in f.rules:
            if isinstance(rule, SigmaRule):
                bases[id(rule)] = _convert_base(rule, placeholders)
            elif isinstance(rule, SigmaCorrelationRule):
                try:
                    rule.resolve_rule_references(index)
                except SigmaError as exc:
                    bases[id(rule)] = _reason(exc)
                    continue
                if not rule.generate:
                    silent.update(id(ref.rule) for ref in rule.rules or ())
    taken: set[str] = set()
    rids = {id(rule): _unique(rule_id(f.stem, n), taken) for f in files for n, rule in enumerate(f.rules)}
    texts = _convert_correlations(files, bases, rids, silent, licence)
    out: list[Outcome] = []
    for f in files:
        if f.reason:
            out.append(Outcome(f.rel, None, f.reason))
            continue
        blocks: list[str] = []
        ids: list[str] = []
        reasons: list[str] = []
        for rule in f.rules:
            rid = rids[id(rule)]
            if isinstance(rule, SigmaFilter):
                continue
            if isinstance(rule, SigmaRule):
                got = bases[id(rule)]
                if isinstance(got, str):
                    reasons.append(got)
                elif id(rule) not in silent:
                    blocks.append(rule_block(rule, got.when, stem=f.stem, source=f.rel, default_license=licence, rid=rid))
                    ids.append(rid)
                continue
            text = texts[id(rule)]
            if not text.startswith(GENERATED_MARK):
                reasons.append(text)
            elif id(rule) not in silent:
                blocks.append(text)
                ids.append(rid)
        if reasons:
            out.append(Outcome(f.rel, None, reasons[0]))
        elif blocks:
            out.append(Outcome(f.rel, "\n".join(blocks), "", tuple(ids)))
        elif any(isinstance(r, SigmaFilter) for r in f.rules):
            out.append(Outcome(f.rel, None, "a Sigma filter: applied to the rules it names, not a rule itself"))
        elif f.rules:
            out.append(Outcome(f.rel, None, "only rules referenced by correlations with generate: false"))
        else:
            out.append(Outcome(f.rel, None, "no rule in the file"))
    return out


def _convert_correlations(files: list[_File], bases: dict[int, Base | str], rids: dict[int, str], silent: set[int],
                          licence: str) -> dict[int, str]:
    """id(correlation) -> its rule text, or why not. A correlation over correlations (chaining) reads
    their alerts (rules over alerts: event.dataset "siem.alert"), so it is converted after them."""
    pending = [(f, r) for f in files for r in f.rules if isinstance(r, SigmaCorrelationRule)]
    texts: dict[int, str] = {}
    for _round in range(MAX_CHAIN + 1):
        waiting = []
        for f, rule in pending:
            refs = [ref.rule for ref in (rule.rules or ()) if hasattr(ref, "rule")]
            if any(isinstance(t, SigmaCorrelationRule) and id(t) not in texts for t in refs) and _round < MAX_CHAIN:
                waiting.append((f, rule))
                continue
            texts[id(rule)] = _convert_correlation(rule, bases, f, licence, rids[id(rule)], silent)
            if texts[id(rule)].startswith(GENERATED_MARK):  # its alerts are events for correlations over it
                inner = [bases[id(t)] for t in refs if isinstance(bases.get(id(t)), Base)]
                alert = ast.And((ast.Compare("event.dataset", "==", ALERT_DATASET),
                                 ast.Compare("rule.id", "==", rids[id(rule)])))
                bases[id(rule)] = Base(rule, alert, inner[0].logsource) if inner else "not converted"  # type: ignore[arg-type]
            else:
                bases[id(rule)] = texts[id(rule)]
        pending = waiting
        if not pending:
            break
    return texts


def _convert_base(rule: SigmaRule, placeholders: dict[str, list[str]] | None = None) -> Base | str:
    backend = SiemBackend(pipeline("siem", placeholders))
    try:
        backend.convert_rule(rule, "ast")
    except SigmaError as exc:
        return _reason(exc)
    queries = rule.get_conversion_result()  # also for a rule a correlation keeps from output (_output False)
    src = rule.logsource
    ls = find_logsource(src.product, src.service, src.category)
    if ls is None or not queries:
        return "logsource is not ingested by siem"
    when = queries[0] if len(queries) == 1 else ast.Or(tuple(queries))
    return Base(rule, when, ls)


def _convert_correlation(rule: SigmaCorrelationRule, bases: dict[int, Base | str], f: _File, licence: str,
                         rid: str, silent: set[int]) -> str:
    """The rule text, or (not starting with GENERATED_MARK) why the correlation is not converted."""
    got = bases.get(id(rule))
    if isinstance(got, str):
        return got
    refs: list[Base] = []
    for ref in rule.rules or ():
        target = ref.rule
        if isinstance(target, SigmaCorrelationRule) and id(target) in silent:
            return (f"a correlation over the correlation '{ref.reference}' reads its alerts, and siem has no "
                    "silent rules: set generate: true")
        base = bases.get(id(target))
        if not isinstance(base, Base):
            return f"referenced rule '{ref.reference}' is not converted: {base}"
        refs.append(base)
    try:
        when, corr = correlate(rule, refs)
    except CorrelationUnsupported as exc:
        return str(exc)
    return rule_block(rule, when, stem=f.stem, source=f.rel, default_license=licence, rid=rid, correlation=corr,
                      fields=refs[0].logsource.fields)


def write_tree(outcomes: list[Outcome], out: Path) -> list[Path]:
    """Write converted rules under `out`; drop generated files whose Sigma source is gone."""
    written: list[Path] = []
    for o in outcomes:
        if o.text is None:
            continue
        dest = out / Path(o.source).with_suffix(".rules")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(o.text, encoding="utf-8")
        os.replace(tmp, dest)
        written.append(dest)
    keep = set(written)
    for old in out.rglob("*.rules") if out.is_dir() else ():
        if old not in keep and old.read_text(encoding="utf-8", errors="replace").startswith(GENERATED_MARK):
            old.unlink()
    return written
