"""`siem sigma import`: Sigma rule files become readable, deterministic .rules files that keep their
attribution and that `siem rules check` and `siem rules test` accept; sigma-cli finds the backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from siem.cli import main
from siem.dsl.loader import load_rules

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "sigma" / "rules"
SIGMA_CLI = Path(sys.executable).with_name("sigma")


def _import(out: Path) -> int:
    return main(["sigma", "import", str(SAMPLE), "-o", str(out)])


def test_import_writes_one_rules_file_per_convertible_sigma_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Four of the five sample rules convert; the fifth is named with the field that stops it."""
    assert _import(tmp_path / "out") == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.rules"))
    assert written == [
        "cloud/aws/cloudtrail/aws_cloudtrail_disable_logging.rules",
        "linux/auditd/execve/lnx_auditd_binary_padding.rules",
        "linux/builtin/sshd/lnx_sshd_susp_ssh.rules",
        "web/webserver_generic/web_path_traversal_exploitation_attempt.rules",
    ]
    err = capsys.readouterr().err
    assert "proxy_hktl_cobalt_strike_malleable_c2_requests.yml: field 'cs-cookie' has no counterpart" in err


def test_import_is_deterministic(tmp_path: Path) -> None:
    """Importing twice gives the same bytes."""
    _import(tmp_path / "a")
    _import(tmp_path / "b")
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*.rules")}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.rules")}
    assert a == b and a


def test_imported_rules_keep_attribution_and_licence(tmp_path: Path) -> None:
    """id, title, author, references, level, tags, false positives and the DRL licence survive."""
    _import(tmp_path)
    [rule] = load_rules([tmp_path / "cloud"]).rules
    assert rule.id == "aws_cloudtrail_disable_logging"
    assert rule.sigma_id == "4db60cc0-36fb-42b7-9b58-a5b53019fb74"
    assert rule.title == "AWS CloudTrail Important Change"
    assert rule.severity == "medium"
    assert rule.author == "vitaliy0x1"
    assert rule.references == ("https://docs.aws.amazon.com/awscloudtrail/latest/userguide/best-practices-security.html",)
    assert rule.falsepositives == ("Valid change in a Trail",)
    assert rule.license == "DRL-1.1"
    assert rule.tags == ("attack.defense-impairment", "attack.t1685.002")
    text = (tmp_path / "cloud/aws/cloudtrail/aws_cloudtrail_disable_logging.rules").read_text()
    assert "# Licence: Detection Rule License (DRL) 1.1" in text


def test_rules_check_and_test_accept_the_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every imported rule loads, and carries a passing firing and non-firing case."""
    _import(tmp_path)
    capsys.readouterr()
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert main(["rules", "test", "--require-cases", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("8 passed, 0 failed")


def test_reimport_drops_rules_whose_source_is_gone(tmp_path: Path) -> None:
    """A generated file whose Sigma rule was removed is deleted; hand-written files stay."""
    out = tmp_path / "out"
    _import(out)
    stale = out / "linux" / "gone.rules"
    stale.write_text("# Sigma rule linux/gone.yml\n")
    mine = out / "mine.rules"
    mine.write_text('rule mine {\n  when event.dataset == "sshd"\n}\n')
    _import(out)
    assert not stale.exists() and mine.exists()


@pytest.mark.skipif(not SIGMA_CLI.exists(), reason="sigma-cli is not installed in this environment")
def test_sigma_cli_converts_with_the_siem_backend() -> None:
    """`sigma convert -t siem -p siem` (sigma-cli) finds the plugin and prints DSL conditions."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(SIGMA_CLI), "convert", "-t", "siem", "-p", "siem",
         str(SAMPLE / "cloud/aws/cloudtrail/aws_cloudtrail_disable_logging.yml")],
        capture_output=True, text=True, timeout=120, cwd="/", env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'event.dataset == "aws.cloudtrail"' in proc.stdout
    assert 'event.action iin ["StopLogging", "UpdateTrail", "DeleteTrail"]' in proc.stdout


EXPAND = """\
title: Admin console login
id: 66666666-6666-6666-6666-666666666666
status: test
logsource:
  product: aws
  service: cloudtrail
detection:
  selection:
    eventName: ConsoleLogin
    userIdentity.userName|expand: '%admins%'
  condition: selection
level: medium
"""


def test_expand_placeholders_come_from_var_and_are_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--var admins=root,ops` fills %admins%; without it the rule is skipped, naming the placeholder."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "admin.yml").write_text(EXPAND)
    assert main(["sigma", "import", str(tmp_path / "src"), "-o", str(tmp_path / "a")]) == 1
    assert "placeholder %admins% has no values" in capsys.readouterr().err
    assert main(["sigma", "import", str(tmp_path / "src"), "-o", str(tmp_path / "b"), "--var", "admins=root,ops"]) == 0
    text = (tmp_path / "b" / "admin.rules").read_text()
    assert 'aws.cloudtrail.user_identity.user_name iin ["root", "ops"]' in text
    assert main(["rules", "test", "--require-cases", str(tmp_path / "b")]) == 0


def test_sigma_yml_files_load_directly_next_to_rules(tmp_path: Path) -> None:
    """A rules directory may hold Sigma .yml files: they are converted when loaded; one that cannot be
    converted is a warning (counted in siem_sigma_rules_skipped), not a failed load."""
    import shutil

    from siem import metrics
    from siem.engine.runtime import Engine

    shutil.copytree(SAMPLE, tmp_path / "sigma")
    (tmp_path / "own.rules").write_text('rule own {\n  when event.dataset == "sshd"\n}\n')
    rs = load_rules([tmp_path])
    assert sorted(r.id for r in rs.rules) == [
        "aws_cloudtrail_disable_logging", "lnx_auditd_binary_padding", "lnx_sshd_susp_ssh", "own",
        "web_path_traversal_exploitation_attempt"]
    [warning] = [w for w in rs.warnings if w.code == "sigma-skipped"]
    assert warning.location is not None and warning.location.path.endswith("proxy_hktl_cobalt_strike_malleable_c2_requests.yml")
    assert "'cs-cookie'" in warning.message
    assert metrics.SIGMA_RULES_SKIPPED._value.get() == 1
    engine = Engine(rs, lateness_ms=0, future_skew_ms=None)
    ev = {"@timestamp": 1_704_067_200_000, "event.dataset": "aws.cloudtrail", "event.provider": "cloudtrail.amazonaws.com",
          "event.action": "StopLogging", "event.original": ""}
    assert [a.rule_id for a in engine.process([ev]) + engine.flush()] == ["aws_cloudtrail_disable_logging"]


def test_converted_rules_share_the_packs_masks(tmp_path: Path) -> None:
    """A converted CloudTrail rule's logsource test is the very sub-expression the shipped pack's
    `cloudtrail` macro compiles to: one memo key, so one mask per batch for both."""
    from siem.dsl import ast
    from siem.engine.compiler import memo_key

    _import(tmp_path)
    [sigma_rule] = load_rules([tmp_path / "cloud"]).rules
    pack = load_rules([REPO / "rules"])
    pack_rule = next(r for r in pack.rules if r.id == "aws_cloudtrail_logging_stopped")

    dataset = ast.Compare("event.dataset", "==", "aws.cloudtrail")
    assert isinstance(sigma_rule.when, ast.And) and isinstance(pack_rule.when, ast.And)
    assert sigma_rule.when.args[0] == dataset == pack_rule.when.args[0]
    assert memo_key(sigma_rule.when.args[0]) == memo_key(pack_rule.when.args[0])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"title: x\n  bad: [\n", "not valid YAML at line 2, column 6: mapping values are not allowed here"),
        (b"just: a mapping\n", "not a valid Sigma rule: Sigma rule must have a title"),
        (b"\xff\xfe", "not UTF-8 text (byte 0)"),
        (b"title: c\nid: 77777777-7777-7777-7777-777777777777\ncorrelation:\n  type: event_count\n"
         b"  rules: [nope]\n  timespan: 5m\n  condition: {gte: 3}\n", "Rule 'nope' not found in rule collection"),
        (b"a: " + b"x" * (1 << 20) + b"\n", "not read: larger than 1024 KiB"),
    ],
    ids=["yaml", "not-sigma", "binary", "missing-reference", "too-large"],
)
def test_bad_sigma_files_are_skipped_with_the_reason(tmp_path: Path, content: bytes, reason: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Broken YAML, non-rules, binary, dangling references and huge files: skipped, named, nothing else lost."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad.yml").write_bytes(content)
    (tmp_path / "src" / "good.yml").write_text(EXPAND.replace("    userIdentity.userName|expand: '%admins%'\n", ""))
    assert main(["sigma", "import", str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 0
    assert f"skipped bad.yml: {reason}" in capsys.readouterr().err
    assert (tmp_path / "out" / "good.rules").exists()
