"""Every filter operator, firing and not firing, evaluated through the compiled engine."""

from __future__ import annotations

import pytest

from tests.engine_support import ev, run

CASES = [
    # (condition, event fields that match, event fields that do not)
    ('user.name == "root"', {"user.name": "root"}, {"user.name": "Root"}),
    ('user.name != "root"', {"user.name": "bob"}, {"user.name": "root"}),
    ('user.name i== "ROOT"', {"user.name": "Root"}, {"user.name": "rooted"}),
    ('user.name i!= "ROOT"', {"user.name": "bob"}, {"user.name": "rOOt"}),
    ("http.response.status_code == 404", {"http.response.status_code": 404}, {"http.response.status_code": 200}),
    ("http.response.status_code >= 500", {"http.response.status_code": 503}, {"http.response.status_code": 499}),
    ("http.response.status_code > 500", {"http.response.status_code": 501}, {"http.response.status_code": 500}),
    ("http.response.status_code < 300", {"http.response.status_code": 204}, {"http.response.status_code": 300}),
    ("http.response.status_code <= 300", {"http.response.status_code": 300}, {"http.response.status_code": 301}),
    ('user.name > "m"', {"user.name": "zed"}, {"user.name": "alice"}),
    ('user.name in ["root", "admin"]', {"user.name": "admin"}, {"user.name": "Admin"}),
    ('user.name not in ["root", "admin"]', {"user.name": "bob"}, {"user.name": "root"}),
    ('user.name iin ["root", "admin"]', {"user.name": "ADMIN"}, {"user.name": "bob"}),
    ("http.response.status_code in [401, 403]", {"http.response.status_code": 403}, {"http.response.status_code": 404}),
    ('url.original contains "../"', {"url.original": "/a/../etc"}, {"url.original": "/a/b"}),
    ('url.original icontains "UNION SELECT"', {"url.original": "/?q=1 union select"}, {"url.original": "/?q=union"}),
    ('url.original contains ["<script", "%3Cscript"]', {"url.original": "/x%3Cscript"}, {"url.original": "/x"}),
    ('url.path startswith "/admin"', {"url.path": "/admin/login"}, {"url.path": "/user/admin"}),
    ('url.path istartswith "/ADMIN"', {"url.path": "/admin"}, {"url.path": "/x/admin"}),
    ('url.path endswith ".php"', {"url.path": "/index.php"}, {"url.path": "/index.php/x"}),
    ('url.path iendswith ".PHP"', {"url.path": "/a.php"}, {"url.path": "/a.html"}),
    ("url.original matches /(?:%2e|\\.){2}\\//", {"url.original": "/%2e%2e/etc"}, {"url.original": "/./etc"}),
    ("user_agent.original matches /sqlmap|nikto/i", {"user_agent.original": "SQLMap/1.0"}, {"user_agent.original": "curl"}),
    ('source.ip in cidr("10.0.0.0/8")', {"source.ip": "10.1.2.3"}, {"source.ip": "11.1.2.3"}),
    ('source.ip in cidr("2001:db8::/32")', {"source.ip": "2001:db8::1"}, {"source.ip": "2001:db9::1"}),
    ('source.ip in cidr("10.0.0.0/8")', {"source.ip": "::ffff:10.0.0.1"}, {"source.ip": "not-an-ip"}),
    ('source.ip not in cidr("10.0.0.0/8", "192.168.0.0/16")', {"source.ip": "8.8.8.8"}, {"source.ip": "192.168.1.1"}),
    ("user.name exists", {"user.name": "x"}, {"host.name": "x"}),
    ('not user.name == "root"', {"user.name": "bob"}, {"user.name": "root"}),
    ('user.name == "a" and host.name == "h"', {"user.name": "a", "host.name": "h"}, {"user.name": "a", "host.name": "g"}),
    ('user.name == "a" or host.name == "h"', {"host.name": "h"}, {"user.name": "b", "host.name": "g"}),
    ('not (user.name == "a" or user.name == "b") and host.name == "h"', {"user.name": "c", "host.name": "h"},
     {"user.name": "b", "host.name": "h"}),
]


@pytest.mark.parametrize("cond,hit,miss", CASES, ids=[c[0] for c in CASES])
def test_operator_fires_and_does_not(cond: str, hit: dict, miss: dict) -> None:
    """The condition matches the first event and not the second."""
    src = f"rule r {{ when {cond} }}"
    assert len(run(src, [ev(0, **{k.replace('.', '__'): v for k, v in hit.items()})])) == 1
    assert run(src, [ev(0, **{k.replace('.', '__'): v for k, v in miss.items()})]) == []


def test_missing_field_never_matches_comparisons() -> None:
    """A comparison on a missing field is false, even !=."""
    assert run('rule r { when user.name != "root" }', [ev(0, host__name="h")]) == []


def test_lists_and_macros_expand() -> None:
    """Named lists and macros resolve, including macros that use lists."""
    src = """
list admins = ["root", "admin"]
macro admin_login = event.dataset == "sshd" and user.name in admins
rule r { when admin_login }
"""
    assert len(run(src, [ev(0, event__dataset="sshd", user__name="admin")])) == 1
    assert run(src, [ev(0, event__dataset="sshd", user__name="bob")]) == []


def test_list_loaded_from_file(tmp_path) -> None:
    """`list x = file "..."` reads one value per line relative to the rule file, skipping comments."""
    from siem.dsl.loader import load_rules
    from siem.engine.runtime import Engine

    (tmp_path / "vpn.txt").write_text("# VPN\n10.8.0.0/16\n\n192.168.5.0/24\n")
    (tmp_path / "r.rules").write_text('list vpn = file "vpn.txt"\nrule r { when source.ip in cidr(vpn) }\n')
    eng = Engine(load_rules([tmp_path]), lateness_ms=0, future_skew_ms=None)
    hits = eng.process([ev(0, source__ip="10.8.3.4"), ev(1, source__ip="10.9.0.1"), ev(2, source__ip="192.168.5.9")])
    assert [a.events[0]["source.ip"] for a in hits] == ["10.8.3.4", "192.168.5.9"]


def test_shared_subexpression_computed_once() -> None:
    """Two rules using the same condition share one mask per batch."""
    from siem.engine.batch import Batch
    from tests.engine_support import engine

    eng = engine('rule a { when event.dataset == "sshd" }\nrule b { when event.dataset == "sshd" and user.name == "x" }')
    import numpy as np

    batch = Batch([ev(0, event__dataset="sshd", user__name="x")], np.array([0]))
    from siem.dsl import ast
    from siem.engine.compiler import memo_key

    for rule in eng.rules:
        rule.filter(batch)
    assert memo_key(ast.Compare("event.dataset", "==", "sshd")) in batch.memo
    assert len(batch.memo) == 3  # event.dataset == "sshd", user.name == "x", and their And: not 4


def test_regex_runs_on_unique_values_only() -> None:
    """A regex is evaluated once per distinct value of a column, not once per row."""
    import numpy as np

    from siem.dsl import ast
    from siem.engine.compiler import _lut_mask
    from siem.engine.batch import Batch

    calls: list[str] = []
    mask = _lut_mask("url.path", lambda s: calls.append(s) or s == "/a")
    batch = Batch([ev(i, url__path="/a" if i % 2 else "/b") for i in range(1000)], np.arange(1000))
    assert int(mask(batch).sum()) == 500
    assert sorted(calls) == ["/a", "/b"]
    assert ast  # the node module is what the compiler consumes


def test_rules_are_skipped_for_datasets_absent_from_the_batch() -> None:
    """A rule pinned to event.dataset knows it; the engine uses it to skip whole batches."""
    from siem.engine.runtime import required_values
    from tests.engine_support import ruleset

    rs = ruleset('rule a { when event.dataset == "sshd" and user.name == "x" }\n'
                 'rule b { when event.dataset in ["nginx.access", "apache.access"] or event.dataset == "x" }\n'
                 'rule c { when user.name == "x" or event.dataset == "sshd" }')
    assert [required_values(r.when, "event.dataset") for r in rs.rules] == [
        frozenset({"sshd"}), frozenset({"nginx.access", "apache.access", "x"}), None]
    assert len(run('rule a { when event.dataset == "sshd" and user.name == "x" }',
                   [ev(0, event__dataset="nginx.access", user__name="x"), ev(1, event__dataset="sshd", user__name="x")])) == 1


def test_unhashable_values_do_not_break_a_batch() -> None:
    """A list or object where a text is expected (JSON input) is compared as its JSON text, not a crash."""
    src = 'rule r { when user.name == "root" or user.name contains "admin" }'
    events = [ev(0, user__name=["a", "b"]), ev(1, user__name={"x": 1}), ev(2, user__name="root")]
    assert [a.events[0]["user.name"] for a in run(src, events)] == ["root"]


FIELD_CASES = [
    ('user.name != field(user.target.name)', {"user.name": "alice", "user.target.name": "bob"},
     {"user.name": "alice", "user.target.name": "alice"}),
    ('user.name == field(user.target.name)', {"user.name": "root", "user.target.name": "root"},
     {"user.name": "root", "user.target.name": "toor"}),
    ('user.name i== field(user.target.name)', {"user.name": "Root", "user.target.name": "rOOT"},
     {"user.name": "root", "user.target.name": "admin"}),
    ("source.port == field(destination.port)", {"source.port": 22, "destination.port": 22},
     {"source.port": 22, "destination.port": 2222}),
    ('user.name != field(user.target.name)', {"user.name": "a", "user.target.name": "b"}, {"user.name": "a"}),
]


@pytest.mark.parametrize("cond,hit,miss", FIELD_CASES, ids=[c[0] + str(i) for i, c in enumerate(FIELD_CASES)])
def test_field_to_field_comparison(cond: str, hit: dict, miss: dict) -> None:
    """field(...) compares two fields of one event; a missing side never matches."""
    src = f"rule r {{ when {cond} }}"
    assert len(run(src, [ev(0, **{k.replace('.', '__'): v for k, v in hit.items()})])) == 1
    assert run(src, [ev(0, **{k.replace('.', '__'): v for k, v in miss.items()})]) == []


def test_field_comparison_type_errors() -> None:
    """Only == and != between fields of the same kind."""
    from siem.dsl.loader import load_texts
    from siem.errors import RuleError

    for src in ("rule r { when user.name < field(user.target.name) }",
                "rule r { when user.name == field(source.port) }"):
        with pytest.raises(RuleError) as exc:
            load_texts({"r.rules": src})
        assert [i.code for i in exc.value.issues] == ["type"]
