"""The shipped rule pack: its own fire / no-fire cases, the sample logs, and the real datasets.

* every rule in rules/ carries passing `expect fire` and `expect nofire` cases (the same check as
  `siem rules test rules/ --require-cases`);
* replaying sample_logs/ (as `make run` does) fires exactly the rules of the embedded attack story
  (sample_logs/README.md), each for the expected attacker, user or resource;
* replaying the benign real datasets fires no high or critical alert, and replaying real attack
  datasets finds the attacks their READMEs describe.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from siem.cli import main as siem_main
from siem.dsl.loader import load_rules
from siem.engine.testing import run_rule_tests

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "rules"
SAMPLES = REPO / "sample_logs"


def _datasets_dir() -> Path | None:
    for candidate in (Path(__file__).resolve().parents[2] / "shared" / "datasets", Path("/work/shared/datasets")):
        if candidate.is_dir():
            return candidate
    return None


DATASETS = _datasets_dir()
needs_datasets = pytest.mark.skipif(
    DATASETS is None, reason="the public datasets (../shared/datasets beside the checkout) are not available"
)


def replay(*paths: Path, options: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """Run `siem replay --rules rules/ PATH...` as a subprocess; the alerts it prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "siem", "replay", "--quiet", *options, "--rules", str(RULES), *map(str, paths)],
        cwd=REPO, capture_output=True, timeout=240, check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"siem replay failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def rule_counts(alerts: list[dict[str, object]]) -> dict[str, int]:
    return dict(Counter(str(a["rule"]) for a in alerts))


def groups_of(alerts: list[dict[str, object]], rule: str) -> list[dict[str, str]]:
    return [a["group"] for a in alerts if a["rule"] == rule]  # type: ignore[misc]


# --- the rules' own cases ---------------------------------------------------------------------------


def test_every_rule_case_passes() -> None:
    """All expect fire / expect nofire cases of the pack pass."""
    results = run_rule_tests(load_rules([RULES]))
    failed = [f"{r.rule_id} {'fire' if r.expect_fire else 'nofire'} at {r.location}: {r.error or r.fired}"
              for r in results if not r.passed]
    assert failed == []


def test_every_rule_has_a_firing_and_a_non_firing_case() -> None:
    """Each rule carries at least one expect fire and one expect nofire case."""
    ruleset = load_rules([RULES])
    lacking = [r.id for r in ruleset.rules if {c.expect_fire for c in r.tests} != {True, False}]
    assert lacking == []


def test_rules_test_command_passes_with_require_cases(capsys: pytest.CaptureFixture[str]) -> None:
    """`siem rules test rules/ --require-cases` exits 0."""
    assert siem_main(["rules", "test", str(RULES), "--require-cases"]) == 0
    assert " 0 failed" in capsys.readouterr().out


def test_rule_pack_loads_without_warnings() -> None:
    """The pack has no unused lists or macros and no other loader warnings."""
    assert [w.render() for w in load_rules([RULES]).warnings] == []


def test_every_rule_documents_itself() -> None:
    """Every rule has a title of its own, a MITRE ATT&CK technique tag and a message template with fields."""
    problems = []
    for rule in load_rules([RULES]).rules:
        if rule.title == rule.id:
            problems.append(f"{rule.id}: no title")
        if not any(re.fullmatch(r"attack\.t\d{4}(\.\d{3})?", t) for t in rule.tags):
            problems.append(f"{rule.id}: no ATT&CK technique tag")
        if rule.message == rule.title or "{" not in rule.message:
            problems.append(f"{rule.id}: no message template")
    assert problems == []


def test_every_rule_is_described_in_the_readme() -> None:
    """README.md's rule pack section names every rule id."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [r.id for r in load_rules([RULES]).rules if f"`{r.id}`" not in readme]
    assert missing == []


# --- sample_logs ------------------------------------------------------------------------------------

EXPECTED_SAMPLE_ALERTS = {
    # hosts
    "ssh_bruteforce": 1,
    "ssh_password_spraying": 1,
    "ssh_preauth_scan": 1,  # the sprayer's connections end before any login
    "ssh_failure_burst": 1,  # the 12:31 brute force starts with a burst
    "ssh_distributed_bruteforce": 1,
    "ssh_login_after_bruteforce": 1,
    "ssh_root_login": 1,
    "ssh_weak_protocol_or_algorithms": 2,
    "ssh_login_outside_allowed_networks": 2,
    "ssh_new_source_for_user": 1,
    "sudo_denied": 1,
    "sudo_auth_failure": 1,
    "sudo_to_root_by_non_admin": 1,
    "local_user_created": 1,
    "local_group_created": 1,
    "local_user_added_to_admin_group": 1,
    # web
    "web_scanning": 1,
    "web_scanner_user_agent": 2,  # Nikto and sqlmap announce themselves
    "web_admin_path_from_outside": 1,
    "web_path_traversal": 1,
    "web_sql_injection": 1,
    "web_command_injection": 1,
    "web_request_flood": 1,
    "web_5xx_burst": 1,
    # CloudTrail
    "aws_access_denied_burst": 1,
    "aws_console_login_failures": 1,
    "aws_root_account_usage": 1,
    "aws_console_login_without_mfa": 1,
    "aws_iam_access_key_for_other_user": 1,
    "aws_iam_admin_policy_attached": 2,
    "aws_mfa_device_deactivated": 1,
    "aws_iam_passrole_instance_launch": 1,
    "aws_new_region_for_account": 1,
    "aws_security_group_open_to_world": 1,
    "aws_s3_public_access_block_removed": 1,
    "aws_s3_bucket_made_public": 1,
    "aws_s3_bucket_encryption_weakened": 1,
    "aws_kms_decrypt_burst": 1,
    "aws_kms_key_disabled_or_deleted": 1,
    "aws_security_logging_disabled": 1,
    "aws_cloudtrail_logging_stopped": 1,
    # the pipeline
    "host_log_source_silent": 1,
    "cloudtrail_silent": 1,
}


@pytest.fixture(scope="module")
def sample_alerts() -> list[dict[str, object]]:
    return replay(SAMPLES)


@pytest.mark.timeout(300)
def test_sample_logs_fire_exactly_the_attack_story(sample_alerts: list[dict[str, object]]) -> None:
    """Replaying sample_logs/ fires exactly the rules (and counts) of the story in sample_logs/README.md."""
    assert rule_counts(sample_alerts) == EXPECTED_SAMPLE_ALERTS


@pytest.mark.timeout(300)
def test_sample_ssh_attack_is_attributed_to_the_attacker(sample_alerts: list[dict[str, object]]) -> None:
    """The SSH brute force and the login after it name the attacker's address."""
    assert groups_of(sample_alerts, "ssh_bruteforce") == [{"source.ip": "203.0.113.45"}]
    assert groups_of(sample_alerts, "ssh_login_after_bruteforce") == [{"source.ip": "203.0.113.45"}]
    assert groups_of(sample_alerts, "ssh_password_spraying") == [{"source.ip": "198.51.100.77"}]
    assert groups_of(sample_alerts, "ssh_root_login") == [{"host.name": "web01", "source.ip": "203.0.113.45"}]
    assert groups_of(sample_alerts, "ssh_new_source_for_user") == [{"user.name": "deploy", "source.ip": "203.0.113.45"}]


@pytest.mark.timeout(300)
def test_sample_web_attacks_are_attributed(sample_alerts: list[dict[str, object]]) -> None:
    """Scanning, traversal and SQL injection name their sources."""
    assert groups_of(sample_alerts, "web_scanning") == [{"source.ip": "203.0.113.45"}]
    assert groups_of(sample_alerts, "web_path_traversal") == [{"source.ip": "203.0.113.45"}]
    assert groups_of(sample_alerts, "web_sql_injection") == [{"source.ip": "198.51.100.23"}]
    assert groups_of(sample_alerts, "web_command_injection") == [{"source.ip": "192.0.2.77"}]


@pytest.mark.timeout(300)
def test_sample_cloud_attack_is_attributed(sample_alerts: list[dict[str, object]]) -> None:
    """The CloudTrail alerts name the account, the principal and the new region."""
    arn = "arn:aws:iam::111122223333:user/ci-deployer"
    assert groups_of(sample_alerts, "aws_access_denied_burst") == [{"aws.cloudtrail.user_identity.arn": arn}]
    assert groups_of(sample_alerts, "aws_kms_decrypt_burst") == [{"aws.cloudtrail.user_identity.arn": arn}]
    assert groups_of(sample_alerts, "aws_iam_passrole_instance_launch") == [{"aws.cloudtrail.user_identity.arn": arn}]
    assert groups_of(sample_alerts, "aws_new_region_for_account") == [
        {"cloud.account.id": "111122223333", "cloud.region": "ap-southeast-3"}
    ]
    assert groups_of(sample_alerts, "cloudtrail_silent") == [{"cloud.account.id": "111122223333"}]
    assert groups_of(sample_alerts, "host_log_source_silent") == [{"host.name": "db01"}]


@pytest.mark.timeout(300)
def test_sample_logs_raise_one_benign_alert_before_the_attack_day(sample_alerts: list[dict[str, object]]) -> None:
    """Eight ordinary days produce a single alert (carol's mistyped sudo password); the rest is Mar 9."""
    early = [a["rule"] for a in sample_alerts if str(a["first"]) < "2026-03-09"]
    assert early == ["sudo_auth_failure"]


@pytest.mark.timeout(300)
def test_sample_alerts_do_not_depend_on_batch_size(sample_alerts: list[dict[str, object]]) -> None:
    """Cutting the replay into batches of 50 events gives the same alerts as the default 4096."""

    def summary(alerts: list[dict[str, object]]) -> list[tuple[str, ...]]:
        return sorted((str(a["id"]), str(a["rule"]), str(a["first"]), str(a["count"])) for a in alerts)

    assert summary(replay(SAMPLES, options=("--batch-size", "50"))) == summary(sample_alerts)


# --- real datasets ----------------------------------------------------------------------------------

BENIGN_DATASETS = [
    "secrepo_access_log",  # the secrepo.com site's own Apache log: crawlers and dataset downloads
    "elastic_examples/apache_logs.log",  # semicomplete.com blog traffic
]


@needs_datasets
@pytest.mark.timeout(300)
def test_otrf_stolen_instance_credentials_are_found_and_the_admin_is_not() -> None:
    """OTRF's CloudGoat run: the instance role's credentials used from outside (aws-cli on a Mac) and its
    bucket listing then download are the alerts; the 87 console events of user pedro raise nothing."""
    assert DATASETS is not None
    alerts = replay(DATASETS / "otrf_security_datasets_aws" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json")
    assert sorted(rule_counts(alerts)) == ["aws_instance_credentials_used_outside", "aws_s3_listing_then_download"]
    assert all("i-0317f6c6b66ae9c40" in str(a["message"]) for a in alerts)
    assert not [a for a in alerts if "pedro" in str(a["message"])]


@needs_datasets
@pytest.mark.timeout(300)
def test_stratus_detonations_are_all_found_with_their_source() -> None:
    """The four Datadog-reshaped Stratus Red Team detonations (one file is records concatenated without
    commas) each raise their rule, and the messages carry the attacker's address."""
    assert DATASETS is not None
    alerts = replay(DATASETS / "stratus_detonations_datadog_zmallen")
    assert sorted(rule_counts(alerts)) == ["aws_cloudtrail_logging_stopped", "aws_ebs_snapshot_shared",
                                           "aws_ec2_user_data_modified", "aws_secrets_mass_retrieval"]
    assert all("62.167.105.104" in str(a["message"]) for a in alerts)


@needs_datasets
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", BENIGN_DATASETS)
def test_benign_dataset_fires_no_high_or_critical_alert(name: str) -> None:
    """Replaying a benign real dataset raises nothing of severity high or critical."""
    assert DATASETS is not None
    alerts = replay(DATASETS / name)
    loud = [(a["rule"], a["message"]) for a in alerts if a["severity"] in ("high", "critical")]
    assert loud == []


@needs_datasets
@pytest.mark.timeout(300)
def test_elastic_auth_log_injected_login_is_found() -> None:
    """The injected signature of elastic's auth.log (24.151.103.17 failing then logging in) is the one critical alert."""
    assert DATASETS is not None
    alerts = replay(DATASETS / "elastic_examples" / "suspicious_login_auth.log")
    critical = [a["group"] for a in alerts if a["severity"] == "critical"]
    assert critical == [{"source.ip": "24.151.103.17"}]


@needs_datasets
@pytest.mark.timeout(300)
def test_honeynet_awstats_exploitation_is_found() -> None:
    """The AWStats configdir command injection in the Honeynet SotM 34 web logs raises web_command_injection."""
    assert DATASETS is not None
    alerts = replay(*sorted((DATASETS / "honeynet_sotm34" / "raw" / "http").glob("access_log*")))
    hits = [a for a in alerts if a["rule"] == "web_command_injection"]
    assert hits and all("awstats.pl" in str(a["message"]) for a in hits)


@needs_datasets
@pytest.mark.timeout(300)
def test_real_cloudtrail_samples_are_detected() -> None:
    """The single-event CloudTrail samples of Elastic and AWS raise their matching rules."""
    assert DATASETS is not None
    alerts = replay(DATASETS / "elastic_cloudtrail_samples", DATASETS / "aws_docs_cloudtrail_examples" / "aws_docs_examples.jsonl")
    fired = set(rule_counts(alerts))
    assert {
        "aws_cloudtrail_logging_stopped", "aws_cloudtrail_trail_modified", "aws_iam_admin_policy_attached",
        "aws_kms_key_disabled_or_deleted", "aws_kms_key_policy_changed", "aws_security_logging_disabled",
        "aws_console_login_without_mfa", "aws_root_account_usage",
    } <= fired
