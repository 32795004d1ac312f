"""Convert a directory of Sigma rules (``*.yml``) into ``.rules`` files, one per Sigma file.

``convert_tree(src)`` converts every rule and returns one Outcome per Sigma rule file, in path order:
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
from pathlib import Path

from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from siem.sigma.backend import SiemBackend
from siem.sigma.pipelines import pipeline
from siem.sigma.rulefile import rule_block, rule_id

SIGMA_SUFFIXES = (".yml", ".yaml")
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


def convert_file(path: Path, root: Path, default_license: str = "", taken: set[str] | None = None) -> Outcome:
    rel = path.relative_to(root).as_posix() if path != root else path.name
    taken = taken if taken is not None else set()
    try:
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"))
    except (SigmaError, OSError, UnicodeDecodeError, ValueError) as exc:
        return Outcome(rel, None, f"not a valid Sigma rule: {_reason(exc)}")
    rules = [r for r in collection.rules if isinstance(r, SigmaRule)]
    if len(rules) != len(collection.rules):
        return Outcome(rel, None, "Sigma correlation rules are not converted yet")
    if not rules:
        return Outcome(rel, None, "no rule in the file")
    blocks: list[str] = []
    ids: list[str] = []
    for n, rule in enumerate(rules):
        backend = SiemBackend(pipeline("siem"))
        try:
            queries = backend.convert_rule(rule, "ast")
        except SigmaError as exc:
            return Outcome(rel, None, _reason(exc))
        for index, query in enumerate(queries):
            rid = rule_id(path.stem, n + index)
            while rid in taken:
                rid += "_"
            taken.add(rid)
            ids.append(rid)
            blocks.append(rule_block(rule, query, index, stem=path.stem, source=rel, default_license=default_license,
                                     rid=rid))
    return Outcome(rel, "\n".join(blocks), "", tuple(ids))


def convert_tree(src: Path) -> list[Outcome]:
    licence = directory_license(src)
    root = src if src.is_dir() else src.parent
    taken: set[str] = set()
    return [convert_file(p, root, licence, taken) for p in sigma_files(src)]


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
