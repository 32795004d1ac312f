"""Sigma correlations and filters: converted into DSL correlations in event time, with generated
tests that `siem rules test` runs; what the DSL cannot express yet is refused with the reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

from siem.dsl.loader import load_texts
from siem.engine.testing import TEST_EPOCH_MS, run_rule_tests
from siem.engine.runtime import Engine
from siem.sigma.convert import convert_tree

BASE = """\
title: Failed console login
id: 11111111-1111-1111-1111-111111111111
name: failed_console_login
status: test
logsource:
  product: aws
  service: cloudtrail
detection:
  selection:
    eventName: ConsoleLogin
    errorMessage: Failed authentication
  condition: selection
level: medium
"""


def _convert(tmp_path: Path, correlation: str, base: str = BASE) -> dict[str, object]:
    (tmp_path / "base.yml").write_text(base)
    (tmp_path / "corr.yml").write_text(textwrap.dedent(correlation))
    return {o.source: o for o in convert_tree(tmp_path)}


def _fired(text: str, events: list[dict[str, object]]) -> int:
    engine = Engine(load_texts({"c.rules": text}), lateness_ms=0, future_skew_ms=None)
    evs = [{"@timestamp": TEST_EPOCH_MS + i * 1000, "event.original": "", **e} for i, e in enumerate(events)]
    return len(engine.process(evs) + engine.flush())


EVENT_COUNT = """\
title: Many failed console logins for one user
id: 22222222-2222-2222-2222-222222222222
status: test
correlation:
  type: event_count
  rules:
    - failed_console_login
  group-by:
    - userIdentity.arn
  timespan: 10m
  condition:
    gte: 5
level: high
"""

FAIL = {"event.dataset": "aws.cloudtrail", "event.action": "ConsoleLogin",
        "aws.cloudtrail.error_message": "Failed authentication"}


def test_event_count_becomes_a_count_threshold_by_the_mapped_group_by(tmp_path: Path) -> None:
    """event_count gte 5 within 10m by userIdentity.arn -> count >= 5 within 10m by aws.cloudtrail.user_identity.arn."""
    got = _convert(tmp_path, EVENT_COUNT)
    text = got["corr.yml"].text
    assert text is not None
    assert "count >= 5 within 10m by aws.cloudtrail.user_identity.arn" in text
    user = {**FAIL, "aws.cloudtrail.user_identity.arn": "arn:aws:iam::1:user/a"}
    assert _fired(text, [user] * 5) == 1
    assert _fired(text, [user] * 4) == 0
    assert _fired(text, [user] * 3 + [{**user, "aws.cloudtrail.user_identity.arn": "b"}] * 2) == 0


def test_referenced_rule_does_not_alert_alone_unless_generate(tmp_path: Path) -> None:
    """Sigma's generate: false (the default) keeps the referenced rule inside the correlation only."""
    got = _convert(tmp_path, EVENT_COUNT)
    assert got["base.yml"].text is None
    got = _convert(tmp_path, EVENT_COUNT.replace("correlation:\n", "correlation:\n  generate: true\n"))
    assert got["base.yml"].text is not None


def test_generated_correlation_tests_pass(tmp_path: Path) -> None:
    """The converted correlation carries a firing and a non-firing case, and both pass."""
    text = _convert(tmp_path, EVENT_COUNT)["corr.yml"].text
    results = run_rule_tests(load_texts({"c.rules": text}))
    assert {r.expect_fire for r in results} == {True, False}
    assert all(r.passed for r in results)


def test_value_count_becomes_distinct(tmp_path: Path) -> None:
    """value_count over sourceIPAddress -> distinct(source.ip)."""
    corr = EVENT_COUNT.replace("type: event_count", "type: value_count").replace(
        "gte: 5", "gte: 3\n    field: sourceIPAddress")
    text = _convert(tmp_path, corr)["corr.yml"].text
    assert text is not None and "distinct(source.ip) >= 3 within 10m" in text
    user = {**FAIL, "aws.cloudtrail.user_identity.arn": "a"}
    assert _fired(text, [{**user, "source.ip": f"192.0.2.{i}"} for i in range(3)]) == 1
    assert _fired(text, [{**user, "source.ip": "192.0.2.1"}] * 5) == 0
    assert all(r.passed for r in run_rule_tests(load_texts({"c.rules": text})))


def test_temporal_ordered_becomes_a_sequence(tmp_path: Path) -> None:
    """temporal_ordered A then B -> sequence { A B }: B before A does not fire."""
    second = BASE.replace("Failed console login", "Success").replace("failed_console_login", "console_ok").replace(
        "11111111-1111-1111-1111-111111111111", "33333333-3333-3333-3333-333333333333").replace(
        "errorMessage: Failed authentication", "responseElements.ConsoleLogin: Success")
    corr = EVENT_COUNT.replace("type: event_count", "type: temporal_ordered").replace(
        "    - failed_console_login\n", "    - failed_console_login\n    - console_ok\n").replace(
        "condition:\n    gte: 5\n", "")
    (tmp_path / "ok.yml").write_text(second)
    text = _convert(tmp_path, corr)["corr.yml"].text
    assert text is not None and "sequence within 10m by aws.cloudtrail.user_identity.arn {" in text
    ok = {"event.dataset": "aws.cloudtrail", "event.action": "ConsoleLogin",
          "aws.cloudtrail.console_login.result": "Success", "aws.cloudtrail.user_identity.arn": "a"}
    fail = {**FAIL, "aws.cloudtrail.user_identity.arn": "a"}
    assert _fired(text, [fail, ok]) == 1
    assert _fired(text, [ok, fail]) == 0
    assert all(r.passed for r in run_rule_tests(load_texts({"c.rules": text})))


def test_temporal_becomes_all_in_any_order(tmp_path: Path) -> None:
    """temporal A, B -> all within T { A B }: B before A fires too."""
    second = BASE.replace("Failed console login", "Success").replace("failed_console_login", "console_ok").replace(
        "11111111-1111-1111-1111-111111111111", "33333333-3333-3333-3333-333333333333").replace(
        "errorMessage: Failed authentication", "responseElements.ConsoleLogin: Success")
    corr = EVENT_COUNT.replace("type: event_count", "type: temporal").replace(
        "    - failed_console_login\n", "    - failed_console_login\n    - console_ok\n").replace(
        "condition:\n    gte: 5\n", "")
    (tmp_path / "ok.yml").write_text(second)
    text = _convert(tmp_path, corr)["corr.yml"].text
    assert text is not None and "all within 10m by aws.cloudtrail.user_identity.arn {" in text
    ok = {"event.dataset": "aws.cloudtrail", "event.action": "ConsoleLogin",
          "aws.cloudtrail.console_login.result": "Success", "aws.cloudtrail.user_identity.arn": "a"}
    fail = {**FAIL, "aws.cloudtrail.user_identity.arn": "a"}
    assert _fired(text, [ok, fail]) == 1
    assert _fired(text, [ok, ok]) == 0
    assert all(r.passed for r in run_rule_tests(load_texts({"c.rules": text})))


def test_what_the_dsl_lacks_is_refused_with_the_reason(tmp_path: Path) -> None:
    """lt conditions, and chaining over a correlation that does not generate, are refused with the reason."""
    lt = EVENT_COUNT.replace("gte: 5", "lt: 5")
    assert _convert(tmp_path, lt)["corr.yml"].reason == "correlation condition 'lt' has no DSL counterpart (only gte and gt)"
    (tmp_path / "chain.yml").write_text(EVENT_COUNT.replace("22222222-2222-2222-2222-222222222222",
                                                            "55555555-5555-5555-5555-555555555555").replace(
        "failed_console_login", "22222222-2222-2222-2222-222222222222"))
    got = {o.source: o for o in convert_tree(tmp_path)}
    assert got["chain.yml"].reason == ("a correlation over the correlation '22222222-2222-2222-2222-222222222222' "
                                       "reads its alerts, and siem has no silent rules: set generate: true")


def test_correlation_over_a_correlation_counts_its_alerts(tmp_path: Path) -> None:
    """Chaining: an event_count over the event_count rule counts that rule's alerts by the same key."""
    (tmp_path / "base.yml").write_text(BASE)
    (tmp_path / "corr.yml").write_text(EVENT_COUNT)
    (tmp_path / "chain.yml").write_text(EVENT_COUNT.replace("22222222-2222-2222-2222-222222222222",
                                                            "55555555-5555-5555-5555-555555555555").replace(
        "failed_console_login", "22222222-2222-2222-2222-222222222222").replace(
        "correlation:\n", "correlation:\n  generate: true\n").replace("timespan: 10m", "timespan: 1h").replace(
        "gte: 5", "gte: 2"))
    got = {o.source: o for o in convert_tree(tmp_path)}
    chain, corr = got["chain.yml"].text, got["corr.yml"].text
    assert chain is not None and corr is not None
    assert 'when     event.dataset == "siem.alert" and rule.id == "corr"' in chain
    assert "count >= 2 within 1h by aws.cloudtrail.user_identity.arn" in chain
    user = {**FAIL, "aws.cloudtrail.user_identity.arn": "arn:aws:iam::1:user/a"}
    engine = Engine(load_texts({"corr.rules": corr, "chain.rules": chain}), lateness_ms=0, future_skew_ms=None)
    evs = [{"@timestamp": TEST_EPOCH_MS + i * 1000, "event.original": "", **user} for i in range(10)]
    fired = [a.rule_id for a in engine.process(evs) + engine.flush()]
    assert fired == ["corr", "corr", "chain"]


def test_value_avg_median_percentile_become_window_aggregates(tmp_path: Path) -> None:
    """value_avg / value_median / value_percentile -> avg(f) / median(f) / percentile(f, P) thresholds."""
    web = BASE.replace("product: aws\n  service: cloudtrail", "category: webserver").replace(
        "    eventName: ConsoleLogin\n    errorMessage: Failed authentication\n", "    cs-method: GET\n")
    for kind, extra, want in (
        ("value_avg", "", "avg(http.response.body.bytes) >= 5000 within 10m by source.ip"),
        ("value_median", "", "median(http.response.body.bytes) >= 5000 within 10m by source.ip"),
        ("value_percentile", "\n    percentile: 95", "percentile(http.response.body.bytes, 95) >= 5000 within 10m by source.ip"),
    ):
        corr = EVENT_COUNT.replace("type: event_count", f"type: {kind}").replace(
            "userIdentity.arn", "c-ip").replace("gte: 5", f"gte: 5000\n    field: sc-bytes{extra}")
        text = _convert(tmp_path, corr, web)["corr.yml"].text
        assert text is not None and want in text, kind
        big = {"event.dataset": "nginx.access", "http.request.method": "GET", "source.ip": "192.0.2.1",
               "http.response.body.bytes": 9000}
        small = {**big, "http.response.body.bytes": 10}
        assert _fired(text, [small]) == 0 and _fired(text, [small, big, big]) >= 1
        assert _fired(text, [{**big, "http.response.body.bytes": 10}] * 2) == 0
        assert all(r.passed for r in run_rule_tests(load_texts({"c.rules": text}))), kind


def test_sigma_filter_applies_to_the_rule_it_names(tmp_path: Path) -> None:
    """A Sigma filter document adds `and not <filter>` to the rule it names, across files."""
    (tmp_path / "base.yml").write_text(BASE.replace("name: failed_console_login\n", "name: failed_console_login\n"))
    (tmp_path / "filter.yml").write_text(textwrap.dedent("""\
        title: Not the break-glass user
        id: 44444444-4444-4444-4444-444444444444
        logsource:
          product: aws
          service: cloudtrail
        filter:
          rules:
            - failed_console_login
          selection:
            userIdentity.arn: 'arn:aws:iam::1:user/breakglass'
          condition: not selection
        """))
    got = {o.source: o for o in convert_tree(tmp_path)}
    text = got["base.yml"].text
    assert text is not None
    assert _fired(text, [{**FAIL, "aws.cloudtrail.user_identity.arn": "arn:aws:iam::1:user/alice"}]) == 1
    assert _fired(text, [{**FAIL, "aws.cloudtrail.user_identity.arn": "arn:aws:iam::1:user/breakglass"}]) == 0
    assert got["filter.yml"].text is None and "Sigma filter" in got["filter.yml"].reason
