"""Errors a rule author can act on: file:line:col, what was expected, a caret; all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from siem.cli import main
from siem.dsl.loader import load_rules, load_texts
from siem.errors import RuleError

BROKEN = Path(__file__).parent / "data" / "rules" / "broken.rules"


def issues_of(src: str) -> list[tuple[int, int, str]]:
    with pytest.raises(RuleError) as exc:
        load_texts({"r.rules": src})
    return [(i.location.line, i.location.column, i.code) for i in exc.value.issues if i.severity == "error"]


def test_broken_file_lists_every_problem_with_line_and_column() -> None:
    """One run reports the syntax error, unknown names, type errors, duplicates and bad thresholds."""
    with pytest.raises(RuleError) as exc:
        load_rules([BROKEN])
    got = {(i.location.line, i.location.column, i.code) for i in exc.value.issues if i.severity == "error"}
    assert got == {
        (4, 12, "syntax"),
        (8, 8, "unknown-field"),
        (8, 8, "bad-cidr"),
        (8, 36, "type"),
        (8, 75, "regex"),
        (9, 3, "window"),
        (9, 3, "impossible-threshold"),
        (11, 1, "duplicate-rule"),
        (11, 17, "unknown-macro"),
        (11, 32, "unknown-list"),
        (12, 19, "type"),
        (13, 18, "regex"),
        (13, 43, "window"),
        (14, 18, "type"),
        (14, 33, "type"),
    }


def test_syntax_error_names_what_was_expected_with_a_caret() -> None:
    """The rendered issue shows path:line:col, the expectation and a caret under the spot."""
    with pytest.raises(RuleError) as exc:
        load_texts({"r.rules": "rule r {\n  when user.name == \n}\n"})
    text = str(exc.value)
    assert text.splitlines()[0].startswith("r.rules:3:1: error[syntax]: syntax error: expected literal or field(name)")
    assert text.splitlines()[-1].strip() == "^"


def test_unknown_field_suggests_the_close_name() -> None:
    """A typo in a field name gets a did-you-mean."""
    with pytest.raises(RuleError) as exc:
        load_texts({"r.rules": 'rule r { when source.ipp == "1.1.1.1" }'})
    assert "did you mean 'source.ip'" in str(exc.value)


def test_macro_cycle_is_an_error() -> None:
    """A macro that refers to itself is reported, not expanded forever."""
    src = "macro a = b or user.name == \"x\"\nmacro b = a\nrule r { when a }"
    assert ("macro-cycle" in {c for _, _, c in issues_of(src)})


def test_backtracking_regex_features_are_refused() -> None:
    """Backreferences and lookaround are not linear-time: refused at load time."""
    assert {c for *_, c in issues_of(r"rule r { when url.path matches /(a)\1/ }")} == {"regex"}
    assert {c for *_, c in issues_of(r"rule r { when url.path matches /a(?!b)/ }")} == {"regex"}


def test_catastrophic_pattern_is_accepted_and_linear() -> None:
    """(a+)+$ is fine under RE2: it compiles and runs in linear time."""
    from tests.engine_support import ev, run

    src = "rule r { when url.path matches /(a+)+$/ }"
    assert run(src, [ev(0, url__path="a" * 50_000 + "!")]) == []


def test_deep_nesting_is_refused() -> None:
    """Parentheses beyond the depth limit are an error, not a stack overflow."""
    src = "rule r { when " + "(" * 100 + 'user.name == "x"' + ")" * 100 + " }"
    assert {c for *_, c in issues_of(src)} == {"too-deep"}


def _deep(kind: str, n: int) -> str:
    cond = 'user.name == "x"'
    if kind == "not":
        return "not " * n + cond
    if kind == "paren":
        return "(" * n + cond + ")" * n
    return "not (" * n + cond + ")" * n


@pytest.mark.parametrize("n", [150, 1000, 100_000])
@pytest.mark.parametrize("kind", ["not", "paren", "mixed"])
def test_any_nesting_depth_is_a_located_issue_in_rules_check(tmp_path: Path, kind: str, n: int,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """150, 1,000 or 100,000 chained `not`s or parentheses: `rules check` exits 1 with file:line:col, no
    traceback (the depth scan runs before the recursive parser)."""
    f = tmp_path / "deep.rules"
    f.write_text("# deep\nrule r {\n  when " + _deep(kind, n) + "\n}\n")
    assert main(["rules", "check", str(f)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{f}:3:" in text and "error[too-deep]" in text
    assert "Traceback" not in text and "RecursionError" not in text


def test_nesting_at_the_limit_loads() -> None:
    """32 levels load: 32 nots, 32 parentheses, 16 `not (`; strings, regexes and comments do not count."""
    for src in (_deep("not", 32), _deep("paren", 32), _deep("mixed", 16)):
        assert load_texts({"r.rules": f"rule r {{ when {src} }}"}).rules
    assert load_texts({"r.rules": 'rule r { when user.name == "' + "(" * 40 + '" and url.path matches /'
                       + "(" * 40 + "a" + ")" * 40 + "/ # " + "(" * 40 + "\n}"}).rules
    assert {c for *_, c in issues_of("rule r { when " + _deep("not", 33) + " }")} == {"too-deep"}


def test_macros_nesting_macros_past_the_limit_are_an_issue_at_the_reference() -> None:
    """Each macro within the text limit, but 2,000 of them chained: an Issue where the rule uses the
    outermost one, not a RecursionError while expanding, compiling or evaluating."""
    src = 'macro m0 = user.name == "x"\n' + "".join(f"macro m{i} = not not m{i - 1}\n" for i in range(1, 2000))
    src += "rule r {\n  when m1999\n}\n"
    assert issues_of(src) == [(2002, 8, "too-deep")]


def test_sequence_needs_two_steps_and_threshold_at_least_one() -> None:
    """Impossible sequences and thresholds are load-time errors."""
    src = 'rule r { sequence within 5m by source.ip { user.name == "a" count >= 0 } }'
    assert {c for *_, c in issues_of(src)} == {"short-sequence", "impossible-threshold"}


def test_unused_list_is_a_warning_not_an_error() -> None:
    """Warnings never stop loading."""
    rs = load_texts({"r.rules": 'list unused = ["a"]\nrule r { when user.name == "x" }'})
    assert [w.code for w in rs.warnings] == ["unused"]


def test_rules_check_exits_nonzero_and_prints_all(capsys: pytest.CaptureFixture[str]) -> None:
    """`siem rules check` on the broken file exits 1 and prints every problem."""
    assert main(["rules", "check", str(BROKEN)]) == 1
    err = capsys.readouterr().err
    assert err.count("error[") == 15
    assert f"{BROKEN}:4:12: error[syntax]" in err


def test_rules_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file passes with exit 0."""
    (tmp_path / "ok.rules").write_text('rule r { when user.name == "x" }\n')
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert "ok: 1 rules" in capsys.readouterr().out


def test_rules_test_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`siem rules test` runs embedded cases and exits 1 when one fails."""
    (tmp_path / "t.rules").write_text(
        'rule r { when user.name == "x"\n expect fire { {"user.name": "x"} }\n expect nofire { {"user.name": "x"} } }\n'
    )
    assert main(["rules", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL r [expect nofire]" in out and "1 passed, 1 failed" in out


def test_reserved_word_as_a_name_is_explained() -> None:
    """`rule for { ... }` says the name is a reserved word, at the name."""
    with pytest.raises(RuleError) as exc:
        load_texts({"r.rules": 'rule for { when user.name == "x" }'})
    assert str(exc.value).splitlines()[0] == (
        "r.rules:1:6: error[syntax]: syntax error: a name that is not a reserved word, found 'for'")


def test_empty_condition_says_what_a_condition_looks_like() -> None:
    """A `when` with nothing after it asks for a condition, with an example."""
    with pytest.raises(RuleError) as exc:
        load_texts({"r.rules": "rule r { when }"})
    assert 'expected condition (e.g. user.name == "root"), found \'}\'' in str(exc.value)
