"""A rule's `references [...]` and `runbook "URL"`: parsed, checked, and carried by every alert it raises."""

from __future__ import annotations

import pytest
from engine_support import ev, run

from siem.dsl.loader import load_texts
from siem.errors import RuleError

RULE = '''
rule ssh_root {
  title      "root login over SSH"
  severity   high
  references ["https://attack.mitre.org/techniques/T1078/003/", "CIS Debian 5.2.10"]
  runbook    "https://wiki.example.org/runbooks/ssh-root"
  when       event.dataset == "sshd" and user.name == "root"
}
'''


def test_references_and_runbook_reach_the_alert() -> None:
    """The alert of a rule with references and a runbook carries both."""
    [alert] = run(RULE, [ev(0, event__dataset="sshd", user__name="root")])
    assert alert.references == ("https://attack.mitre.org/techniques/T1078/003/", "CIS Debian 5.2.10")
    assert alert.runbook == "https://wiki.example.org/runbooks/ssh-root"
    assert alert.to_json()["runbook"] == alert.runbook


def test_a_runbook_that_is_not_a_url_is_an_error_at_its_clause() -> None:
    """runbook "see the wiki" is refused with the clause's line and column."""
    with pytest.raises(RuleError) as exc:
        load_texts({"r.rules": RULE.replace('"https://wiki.example.org/runbooks/ssh-root"', '"see the wiki"')})
    [issue] = [i for i in exc.value.issues if i.severity == "error"]
    assert (issue.code, issue.location.line, issue.location.column) == ("bad-runbook", 6, 3)


def test_rules_without_them_are_unchanged() -> None:
    """No references, no runbook: empty, and absent from the alert's JSON."""
    [alert] = run('rule r { when user.name == "x" }', [ev(0, user__name="x")])
    assert alert.references == () and alert.runbook == "" and "runbook" not in alert.to_json()
