"""CLI and config conventions (issue 16, point 7): --version, -c on every subcommand, JSON output of status,
rules check and config check, shell completion, durations with units, ATT&CK tags, config errors with a
line and a did-you-mean."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from siem import __version__
from siem.cli import build_parser
from siem.config import check_file, load_config
from siem.dsl.attack import check_tag
from siem.dsl.loader import load_rules
from siem.errors import ConfigError, RuleError
from siem.status import summary_data
from siem.tomlcheck import index_toml

ROOT = Path(__file__).resolve().parents[1]


def siem(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siem", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_version() -> None:
    got = siem("--version")
    assert (got.returncode, got.stdout.strip()) == (0, f"siem {__version__}")


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    if not subs:
        return [(path, parser)]
    return [leaf for name, child in subs[0].choices.items() for leaf in _leaves(child, (*path, name))]


def test_every_subcommand_and_action_takes_dash_c() -> None:
    """Every leaf of the command tree accepts -c/--config; found by walking the real parser."""
    leaves = _leaves(build_parser(everything=True))
    assert len(leaves) >= 15
    missing = [" ".join(p) for p, parser in leaves if "-c" not in parser._option_string_actions]  # noqa: SLF001
    assert missing == []


@pytest.mark.parametrize("argv", [["-c", "X.toml", "rules", "check"], ["rules", "-c", "X.toml", "check"],
                                  ["rules", "check", "-c", "X.toml"], ["rules", "check", "--config", "X.toml"]])
def test_dash_c_is_kept_wherever_it_is_given(argv: list[str]) -> None:
    from siem.cli import _chosen

    args = build_parser(_chosen(argv)).parse_args(argv)
    assert args.config == "X.toml"


def test_rules_check_takes_the_rules_of_the_config(tmp_path: Path) -> None:
    rules = tmp_path / "r"
    rules.mkdir()
    (rules / "one.rules").write_text('rule only_one {\n  when event.dataset == "sshd"\n}\n')
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[daemon]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n')
    got = siem("rules", "check", "-c", str(cfg), "--format", "json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"ok": True, "errors": 0, "rules": 1, "files": 1, "issues": []}


def test_rules_check_json_lists_issues_with_locations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text('rule r {\n  tags [attack.credential_acces]\n  when source.ipp == "x"\n}\n')
    got = siem("rules", "check", str(bad), "--format", "json")
    assert got.returncode == 1
    doc = json.loads(got.stdout)
    assert doc["ok"] is False and doc["errors"] == 2
    by_code = {i["code"]: i for i in doc["issues"]}
    assert by_code["attack-tag"]["location"] == {"path": str(bad), "line": 2, "column": 9}
    assert "did you mean 'credential_access'" in by_code["attack-tag"]["message"]
    assert by_code["unknown-field"]["location"]["line"] == 3


def test_config_check_json(tmp_path: Path) -> None:
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\nrules = ["{ROOT}/rules"]\n'
                   '[inputs.tcp]\ntype = "syslog"\nprotocol = "tcp"\nport = 0\n')
    got = siem("config", "check", "-c", str(cfg), "--format", "json")
    assert got.returncode == 0, got.stdout + got.stderr
    doc = json.loads(got.stdout)
    assert (doc["ok"], doc["errors"], doc["inputs"], doc["role"]) == (True, 0, [{"name": "tcp", "type": "syslog"}],
                                                                      "all")
    cfg.write_text(cfg.read_text() + "protocl = 1\n")
    doc = json.loads(siem("config", "check", "-c", str(cfg), "--format", "json").stdout)
    assert doc["ok"] is False
    assert doc["issues"][0]["location"] == {"path": str(cfg), "line": 8, "column": 1}


def test_status_json_from_an_exposition() -> None:
    """The data behind `siem status --format json`, from a real exposition of our registry."""
    from siem import metrics

    metrics.ALERTS_FIRED.labels(rule="status_json_rule", severity="high").inc(2)
    text = metrics.render().decode()
    data = summary_data(text, text, 2.0)
    assert data["alerts"]["by_rule"]["status_json_rule"] == 2.0  # type: ignore[index]
    assert data["version"] == __version__
    assert json.loads(json.dumps(data)) == data


def test_status_json_cli_against_a_metrics_endpoint() -> None:
    """`siem status --url ... --format json` reads a live endpoint (this process's registry, served)."""
    code = ("import json,subprocess,sys\nfrom siem import metrics\nport = metrics.serve('127.0.0.1', 0)\n"
            "out = subprocess.run([sys.executable, '-m', 'siem', 'status', '--url', f'http://127.0.0.1:{port}/metrics',"
            " '--interval', '0', '--format', 'json'], capture_output=True, text=True, timeout=60)\n"
            "print(out.returncode); print(out.stdout)")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=ROOT)
    rc, _, body = got.stdout.partition("\n")
    assert rc == "0", got.stdout + got.stderr
    assert json.loads(body)["version"] == __version__


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_name_every_subcommand(shell: str) -> None:
    got = siem("completion", shell)
    assert got.returncode == 0, got.stderr
    for word in ("replay", "logtest", "rules", "status", "config", "completion"):
        assert word in got.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completion_completes_subcommands_and_actions(tmp_path: Path) -> None:
    script = tmp_path / "siem.bash"
    script.write_text(siem("completion", "bash").stdout)

    def complete(*words: str) -> set[str]:
        cmd = (f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
               "_shtab_siem; printf '%s\\n' \"${COMPREPLY[@]}\"")
        return set(subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30).stdout.split())

    assert {"logtest", "log"} <= complete("siem", "lo")
    assert complete("siem", "rules", "ch") == {"check"}


# --- config errors: a line, a did-you-mean, units ----------------------------------------------------

BAD = """\
[daemon]
state_dir = "STATE"
lateness = 10
metrics_adress = "127.0.0.1:0"

[inputs.tcp]
type = "syslog"
protocl = "tcp"

[inputs.auth]
type = "file"

[alerting]
group_wiat = "30s"

[[alerting.routes]]
name = "first"
urls = ["json://127.0.0.1:1/x"]

[[alerting.routes]]
name = "oncall"
urls = ["json://127.0.0.1:1/x"]
severty = ["high"]

[logg]
"""


def test_every_config_error_has_a_line_and_a_did_you_mean(tmp_path: Path) -> None:
    cfg = tmp_path / "siem.toml"
    cfg.write_text(BAD.replace("STATE", str(tmp_path / "state")))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    got = {i.message.split(":")[0]: (i.location.line if i.location else None, i.message) for i in info.value.issues}
    assert {k: line for k, (line, _) in got.items()} == {
        "daemon.lateness": 3, "daemon.metrics_adress": 4, "inputs.tcp.protocl": 8, "inputs.auth.type": 11,
        "alerting.group_wiat": 14, "alerting.routes[1].severty": 23, "logg": 25}
    hints = {k: m for k, (_, m) in got.items()}
    assert "did you mean 'metrics_address'?" in hints["daemon.metrics_adress"]
    assert "did you mean 'protocol'?" in hints["inputs.tcp.protocl"]
    assert "did you mean 'files'?" in hints["inputs.auth.type"]
    assert "did you mean 'group_wait'?" in hints["alerting.group_wiat"]
    assert "did you mean 'severity'?" in hints["alerting.routes[1].severty"]
    assert "did you mean 'log'?" in hints["logg"]
    assert 'a duration needs a unit: write "10s" or "10ms"' in hints["daemon.lateness"]
    rendered = [i.render() for i in info.value.issues]
    assert any(r.startswith(f"{cfg}:3:1: error[wrong-type]: daemon.lateness") and "    lateness = 10" in r
               for r in rendered)


@pytest.mark.parametrize("table, key", [("daemon", "lateness"), ("daemon", "batch_max_wait"), ("log", "fsync_interval"),
                                        ("alerting", "group_wait"), ("inputs.t", "idle_timeout"),
                                        ("inputs.f", "poll_interval")])
def test_a_duration_without_a_unit_is_an_error_in_every_table(tmp_path: Path, table: str, key: str) -> None:
    inputs = ('[inputs.t]\ntype = "syslog"\nprotocol = "tcp"\nport = 0\n'
              f'[inputs.f]\ntype = "files"\npaths = ["{tmp_path}/x.log"]\nformat = "syslog"\n')
    body = {"daemon": f'[daemon]\nstate_dir = "{tmp_path}/s"\n', "log": "[log]\n", "alerting": "[alerting]\n"}
    doc = inputs + "".join(v for k, v in body.items() if k != table)
    doc += body.get(table, "").rstrip("\n") + "\n" if table in body else ""
    lines = doc.splitlines()
    header = f"[{table}]"
    lines.insert(lines.index(header) + 1, f"{key} = 10")
    cfg = tmp_path / "siem.toml"
    cfg.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    (issue,) = [i for i in info.value.issues if i.message.startswith(f"{table}.{key}:")]
    assert "needs a unit" in issue.message
    assert issue.location is not None and issue.location.line == lines.index(f"{key} = 10") + 1


def test_index_toml_knows_tables_arrays_and_keys() -> None:
    text = ('top = 1\n[a]\nx = [\n  "y = 2",\n]\nz = 3\n[[a.r]]\nname = "one"\n[[a.r]]\n  name = \'two\'\n  k = 1\n'
            '[b."c.d"]\ne = { f = 1 }\n')
    idx = index_toml(text)
    assert idx["top"] == 1 and idx["a"] == 2 and idx["a.x"] == 3 and idx["a.z"] == 6
    assert "a.y" not in idx  # inside a multi-line array
    assert idx["a.r[0]"] == idx["a.r[one]"] == 7 and idx["a.r[1]"] == idx["a.r[two]"] == 9 and idx["a.r[1].k"] == 11
    assert idx["b.c.d"] == 12 and idx["b.c.d.e"] == 13


def test_check_file_locates_runtime_issues_too(tmp_path: Path) -> None:
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path}/s"\nrules = ["{tmp_path}/nope"]\n')
    _, issues = check_file(cfg)
    (missing,) = [i for i in issues if i.code == "file-not-found"]
    assert missing.location is not None and missing.location.line == 3


# --- ATT&CK tags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["attack.credential_access", "attack.command-and-control", "attack.t1110",
                                 "attack.t1110.001", "attack.g0032", "attack.s0002", "attack.stealth",
                                 "cis.5.1", "team.web"])
def test_valid_tags(tag: str) -> None:
    assert check_tag(tag) is None


@pytest.mark.parametrize("tag, says", [
    ("attack.credential_acces", "did you mean 'credential_access'"),
    ("attack.T1110", "lower case: 'attack.t1110'"),
    ("attack.t111", "not a technique id"),
    ("attack.t1110.1", "not a technique id"),
    ("Attack.t1110", "lower case"),
    ("attack.persistance", "did you mean 'persistence'"),
])
def test_invalid_tags(tag: str, says: str) -> None:
    problem = check_tag(tag)
    assert problem is not None and says in problem


def test_a_bad_tag_stops_loading_with_its_position(tmp_path: Path) -> None:
    f = tmp_path / "t.rules"
    f.write_text('rule r {\n  tags [attack.t1110, attack.lateral_movment]\n  when event.dataset == "sshd"\n}\n')
    with pytest.raises(RuleError) as info:
        load_rules([str(f)])
    (issue,) = info.value.issues
    assert (issue.code, issue.location.line, issue.location.column) == ("attack-tag", 2, 23)  # type: ignore[union-attr]


def test_the_shipped_pack_and_sigma_tags_are_valid() -> None:
    load_rules([str(ROOT / "rules")])  # raises on any bad tag
    sigma = ROOT.parent / "shared" / "datasets" / "sigmahq_rules"
    if not sigma.is_dir():
        sigma = Path(os.environ.get("SIEM_DATASETS", "/nonexistent")) / "sigmahq_rules"
    if sigma.is_dir():
        import re

        tags = {t for f in sigma.rglob("*.yml") for t in re.findall(r"attack\.[a-z0-9_.\-]+", f.read_text().lower())}
        assert tags and [t for t in tags if check_tag(t)] == []
