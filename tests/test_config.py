"""siem.config: the whole TOML config, every issue collected and named by its path; `siem config check`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from siem.config import DEFAULT_METRICS, EMBEDDED, check_file, config_from_dict, embedded_config, load_config
from siem.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RULE = 'rule r { severity low when event.dataset == "sshd" }\n'


def _errors(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "siem.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [i.message for i in exc.value.issues if i.severity == "error"]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siem", "config", "check", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_unknown_keys_are_named_with_their_dotted_path(tmp_path: Path) -> None:
    """Unknown keys anywhere (top level, [daemon], an input, alerting) are reported with their path."""
    errors = _errors(
        '[daemon]\nstate_dirr = "x"\n[inputs.tcp]\ntype = "syslog"\nprotocol = "tcp"\nprot = 1\n'
        '[alerting]\nlog_pat = "a"\n[metrics]\n', tmp_path)
    assert sorted(e.split(":")[0] for e in errors) == [
        "alerting.log_pat", "daemon.state_dirr", "inputs.tcp.prot", "metrics"]


def test_wrong_types_are_named(tmp_path: Path) -> None:
    """A value of the wrong type names the key, what was expected and what was given."""
    errors = _errors('[daemon]\nbatch_max_events = "many"\nrules = 3\n', tmp_path)
    assert sorted(errors) == ["daemon.batch_max_events: expected int, got str 'many'",
                              "daemon.rules: expected list or str, got int 3"]


def test_every_issue_is_collected_before_failing(tmp_path: Path) -> None:
    """Problems in several tables all come back in one ConfigError."""
    errors = _errors('[daemon]\nlateness = "soon"\nrole = "boss"\n[inputs.a]\ntype = "files"\nformat = "syslog"\n'
                     '[inputs.b]\ntype = "carrier-pigeon"\n[log]\nfsync = "sometimes"\n', tmp_path)
    assert [e.split(":")[0] for e in errors] == [
        "daemon.lateness", "daemon.role", "inputs.a.paths", "inputs.b.type", "log.fsync"]


def test_unreadable_config_file_is_named(tmp_path: Path) -> None:
    """A missing config file is an issue naming the file, not a traceback."""
    _, issues = check_file(tmp_path / "nope.toml")
    assert [i.render() for i in issues] == [
        f"error[unreadable-file]: cannot read config file {tmp_path / 'nope.toml'}: No such file or directory"]


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """Broken TOML is reported at its line and column with the line shown."""
    path = tmp_path / "siem.toml"
    path.write_text('[daemon]\nstate_dir = "/x"\nrules = ["a" "b"]\n')
    _, issues = check_file(path)
    assert len(issues) == 1 and issues[0].code == "toml-syntax"
    assert str(issues[0].location) == f"{path}:3:14"
    assert issues[0].snippet == 'rules = ["a" "b"]'


def test_relative_paths_are_taken_from_the_config_directory(tmp_path: Path) -> None:
    """state_dir, rules and files paths written relative resolve against the config file's directory."""
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "siem.toml"
    path.write_text('[daemon]\nstate_dir = "state"\nrules = ["rules"]\n'
                    '[inputs.f]\ntype = "files"\nformat = "syslog"\npaths = ["logs/*.log"]\n')
    config = load_config(path)
    assert (config.daemon.state_dir, config.daemon.rules, config.inputs[0].config.paths) == (  # type: ignore
        str(tmp_path / "etc" / "state"), (str(tmp_path / "etc" / "rules"),), (str(tmp_path / "etc/logs/*.log"),))


def test_inputs_dispatch_on_type_to_the_collector_config(tmp_path: Path) -> None:
    """[inputs.NAME] tables become the collectors' own config objects."""
    from siem.collect.files import FileInputConfig
    from siem.collect.syslog import SyslogConfig

    doc = {"inputs": {"udp": {"type": "syslog", "port": 1514},
                      "auth": {"type": "files", "format": "syslog", "paths": ["/var/log/auth.log"]}}}
    config, issues = config_from_dict(doc, "t.toml", tmp_path)
    assert issues == [] and config is not None
    assert [(i.name, i.type, type(i.config)) for i in config.inputs] == [
        ("udp", "syslog", SyslogConfig), ("auth", "files", FileInputConfig)]


def test_missing_input_type_and_port_conflicts_are_errors(tmp_path: Path) -> None:
    """An input without `type`, and two TCP listeners on one address and port, are refused."""
    errors = _errors('[inputs.x]\nport = 1\n[inputs.t1]\ntype = "syslog"\nprotocol = "tcp"\nport = 6000\n'
                     '[inputs.t2]\ntype = "syslog"\nprotocol = "tcp"\nport = 6000\n', tmp_path)
    assert errors == ["inputs.x.type: required (one of syslog, relp, files, cloudtrail, journald, auditd)",
                      "inputs.t2.port: tcp 127.0.0.1:6000 is also used by inputs.t1"]


def test_scale_out_role_needs_a_kafka_table(tmp_path: Path) -> None:
    """role = "matcher" without [kafka] is an error."""
    assert _errors('[daemon]\nrole = "matcher"\n', tmp_path) == ["kafka: role = 'matcher' needs a [kafka] table"]


def test_embedded_defaults_work_from_a_checkout(tmp_path: Path) -> None:
    """Without a config: ./state, ./rules, syslog TCP+UDP on 127.0.0.1:5514, the sample logs by format,
    metrics on 9108, the alert log only."""
    samples = tmp_path / "sample_logs"
    for d in ("syslog", "nginx", "cloudtrail"):
        (samples / d).mkdir(parents=True)
    (samples / "syslog" / "web01-auth.log").write_text(
        "Mar  1 10:00:00 h sshd[1]: Failed password for x from 10.0.0.1 port 1 ssh2\n")
    (samples / "nginx" / "access.log").write_text(
        '10.0.0.1 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl"\n')
    (samples / "cloudtrail" / "111122223333_CloudTrail_eu-west-1_20260301T2355Z_x.json").write_text(
        '{"Records": []}')
    config = embedded_config(tmp_path)
    assert config.source == EMBEDDED
    assert (config.daemon.state_dir, config.daemon.rules, config.daemon.metrics_address) == (
        str(tmp_path / "state"), (str(tmp_path / "rules"),), DEFAULT_METRICS)
    inputs = {i.name: i for i in config.inputs}
    assert [(n, i.config.protocol, i.config.address, i.config.port)  # type: ignore[attr-defined]
            for n, i in inputs.items() if i.type == "syslog"] == [
        ("syslog_tcp", "tcp", ("127.0.0.1",), 5514), ("syslog_udp", "udp", ("127.0.0.1",), 5514)]
    files = {n: (i.config.format, i.config.paths) for n, i in inputs.items() if i.type == "files"}  # type: ignore
    assert files == {"sample_syslog": ("syslog", (str(samples / "syslog" / "*.log"),)),
                     "sample_nginx": ("nginx", (str(samples / "nginx" / "*.log"),))}
    assert inputs["sample_cloudtrail"].config.directory == str(samples / "cloudtrail")  # type: ignore[attr-defined]
    assert config.alerting.routes == ()


def test_embedded_defaults_of_this_checkout_pass_config_check() -> None:
    """`siem config check` without --config, run in the repository, is ok (rules/ and sample_logs/ exist)."""
    out = _check()
    assert out.returncode == 0, out.stderr
    assert "sample_syslog:files" in out.stdout and "sample_nginx:files" in out.stdout


def test_config_check_reports_a_missing_secret_file(tmp_path: Path) -> None:
    """`siem config check` names the route and the unreadable urls_file, and exits non-zero."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.rules").write_text(RULE)
    path = tmp_path / "siem.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\nrules = ["{tmp_path}/rules"]\n'
                    '[alerting]\n[[alerting.routes]]\nname = "oncall"\nurls_file = "/run/credentials/nope/urls"\n')
    out = _check("--config", str(path))
    assert out.returncode == 1
    assert "alerting.routes[oncall].urls_file: cannot read /run/credentials/nope/urls" in out.stderr


def test_config_check_reports_rule_errors(tmp_path: Path) -> None:
    """Rule files the config points at are loaded by the check; their errors are printed with locations."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.rules").write_text('rule r { severity low when source.ipp == "1.2.3.4" }\n')
    path = tmp_path / "siem.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\nrules = ["{tmp_path}/rules"]\n')
    out = _check("--config", str(path))
    assert out.returncode == 1
    assert re.search(r"r\.rules:1:\d+: error\[unknown-field\]", out.stderr), out.stderr


def test_shipped_example_config_passes_config_check(tmp_path: Path) -> None:
    """deploy/siem.toml passes `siem config check` once its credentials and rules exist (pointed at tmp)."""
    text = (ROOT / "deploy" / "siem.toml").read_text()
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in set(re.findall(r"/run/credentials/siem\.service/([\w.-]+)", text)):
        (creds / name).write_text("json://127.0.0.1:9/hook\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.rules").write_text(RULE)
    text = (text.replace("/run/credentials/siem.service/", f"{creds}/")
            .replace('"/etc/siem/rules"', f'"{tmp_path}/rules"').replace('"/var/lib/siem"', f'"{tmp_path}/state"'))
    path = tmp_path / "siem.toml"
    path.write_text(text)
    out = _check("--config", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"ok: {path}: 4 input(s)")


def test_shipped_example_as_is_fails_only_on_what_the_host_lacks() -> None:
    """Unchanged, deploy/siem.toml's keys are all valid; the check names the missing credential files."""
    out = _check("--config", str(ROOT / "deploy" / "siem.toml"), "--no-rules")
    missing = re.findall(r"alerting\.routes\[(\w+)\]\.urls_file: cannot read", out.stderr)
    assert (out.returncode, sorted(missing)) == (1, ["email", "oncall"]), out.stderr
    assert "unknown-key" not in out.stderr and "wrong-type" not in out.stderr
