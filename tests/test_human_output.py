"""Output for humans (issue 16, points 4, 6 and 8): the one-line alert form and its escaping, `siem logtest`,
`siem replay -`, optional parts of message templates, and the shipped pack's messages never printing '-'."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from siem.alert.console import AlertPrinter, alert_line, resolve_format
from siem.alert.record import Alert
from siem.dsl.loader import render_template, template_fields

ROOT = Path(__file__).resolve().parents[1]
SSH_FAIL = "Mar  9 03:12:{s:02d} web01 sshd[812]: Failed password for root from 203.0.113.7 port 52144 ssh2"


def siem(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siem", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _alert(**kw: object) -> Alert:
    base = dict(id="a1", rule_id="ssh_bruteforce", title="SSH brute force", severity="high", tags=(),
                group=(("source.ip", "203.0.113.7"),), first_ms=1_772_000_000_000, last_ms=1_772_000_009_000,
                count=10, message="10 failed SSH logins from 203.0.113.7")
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


# --- the alert line -----------------------------------------------------------------------------------


def test_alert_line_has_time_severity_rule_key_message() -> None:
    assert alert_line(_alert()) == ("2026-02-25 06:13:29Z  HIGH      ssh_bruteforce  source.ip=203.0.113.7  "
                                    "10 failed SSH logins from 203.0.113.7")


def test_attacker_text_cannot_break_the_line_or_repaint_the_terminal() -> None:
    evil = "root\x1b[2J\x1b]8;;http://x\x07click\nMar 1 forged line\u202eevil\r\x00"
    line = alert_line(_alert(group=(("user.name", evil),), message=f"login by {evil}"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
    assert "\u202e" not in line and "\x07" not in line
    assert "\\x1b[2J" in line and "\\n" in line and "\\u202e" in line


def test_json_when_piped_text_on_a_terminal() -> None:
    class Tty(io.BytesIO):
        def isatty(self) -> bool:
            return True

    piped, tty = io.BytesIO(), Tty()
    assert resolve_format("auto", piped) == "json" and resolve_format("auto", tty) == "text"
    AlertPrinter("auto", piped)([_alert()])
    assert json.loads(piped.getvalue())["rule"] == "ssh_bruteforce"
    AlertPrinter("auto", tty)([_alert(severity="critical")])
    assert b"\x1b[1;31mCRITICAL" in tty.getvalue()  # colour: ours, around the severity only
    forced = io.BytesIO()
    AlertPrinter("text", forced)([_alert()])
    assert forced.getvalue().decode().endswith("10 failed SSH logins from 203.0.113.7\n")
    assert b"\x1b" not in forced.getvalue()


def test_a_long_message_is_cut_on_the_console() -> None:
    line = alert_line(_alert(message="x" * 5000))
    assert len(line) < 600 and line.endswith("... [4600 more chars]")


# --- message templates ------------------------------------------------------------------------------


def test_optional_parts_are_left_out_when_a_value_is_missing() -> None:
    t = "{source.ip} to {host.name}:{? kex {ssh.kex}}{? cipher {ssh.cipher}} {{literal}}"
    assert render_template(t, {"source.ip": "1.2.3.4", "host.name": "web01", "ssh.cipher": "3des"}) == \
        "1.2.3.4 to web01: cipher 3des {literal}"
    assert render_template(t, {"source.ip": "1.2.3.4"}) == "1.2.3.4 to -: {literal}"
    assert template_fields(t) == ["source.ip", "host.name", "ssh.kex", "ssh.cipher"]


@pytest.mark.parametrize("bad", ["a {", "a }", "{}", "{? x {}}"])
def test_broken_templates_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        template_fields(bad)


_DASH = re.compile(r"(^|[\s(/=])-($|[\s),/:])")


def _replay_messages(*paths: Path) -> list[tuple[str, str]]:
    got = siem("replay", "--format", "json", "--rules", str(ROOT / "rules"), *map(str, paths))
    assert got.returncode == 0, got.stderr
    return [(a["rule"], a["message"]) for a in map(json.loads, got.stdout.splitlines())]


def test_shipped_messages_never_print_a_dash_for_a_missing_value() -> None:
    """The pack over the sample logs and the public CloudTrail datasets: every value shown exists."""
    paths = [ROOT / "sample_logs"]
    datasets = ROOT.parent / "shared" / "datasets"
    paths += [p for p in (datasets / "stratus_detonations_datadog_zmallen", datasets / "aws_docs_cloudtrail_examples",
                          datasets / "secrepo_auth_log") if p.is_dir()]
    messages = _replay_messages(*paths)
    assert len(messages) >= 40
    assert [m for m in messages if _DASH.search(m[1])] == []
    assert [m for m in messages if "  " in m[1] or "( " in m[1] or " ," in m[1]] == []  # optional parts join cleanly


def test_absent_messages_show_the_group_values(tmp_path: Path) -> None:
    """cloudtrail_silent names the account: the key's value is known even though no event carries it."""
    rules = tmp_path / "r.rules"
    rules.write_text('rule quiet {\n  absent event.dataset == "x" for 10m by cloud.account.id\n'
                     '  message "account {cloud.account.id} went quiet"\n}\n')
    log = tmp_path / "x.jsonl"
    log.write_text('{"@timestamp": "2026-03-01T00:00:00Z", "event.dataset": "x", "cloud.account.id": "1111"}\n'
                   '{"@timestamp": "2026-03-01T01:00:00Z", "event.dataset": "y", "cloud.account.id": "2222"}\n')
    got = siem("replay", "--format", "json", "--rules", str(rules), "--log-format", "json", str(log))
    assert got.returncode == 0, got.stderr
    assert [json.loads(x)["message"] for x in got.stdout.splitlines()] == ["account 1111 went quiet"]


# --- replay - -----------------------------------------------------------------------------------------


def test_replay_reads_stdin_and_gives_the_alerts_of_the_file() -> None:
    log = ROOT / "sample_logs" / "syslog" / "web01-auth.log"
    from_file = siem("replay", "--format", "json", str(log))
    from_stdin = siem("replay", "--format", "json", "-", stdin=log.read_text())
    assert from_file.returncode == from_stdin.returncode == 0, from_stdin.stderr
    ids = [json.loads(x)["id"] for x in from_file.stdout.splitlines()]
    assert ids and [json.loads(x)["id"] for x in from_stdin.stdout.splitlines()] == ids


def test_replay_format_is_the_output_and_says_where_the_input_format_went() -> None:
    got = siem("replay", "--format", "syslog", "-", stdin="")
    assert got.returncode == 2 and "--log-format syslog" in got.stderr


# --- logtest ------------------------------------------------------------------------------------------


def test_logtest_shows_fields_rules_and_window_state() -> None:
    got = siem("logtest", SSH_FAIL.format(s=1))
    assert got.returncode == 0, got.stderr
    out = got.stdout
    assert out.startswith("line 1 (syslog)\n")
    assert re.search(r"^  source\.ip +203\.0\.113\.7$", out, re.M)
    assert re.search(r"^  event\.outcome +failure$", out, re.M)
    assert "ssh_bruteforce  high  count >= 10 within 5m by source.ip" in out
    assert "key source.ip=203.0.113.7: count 1 in the window, fires at >= 10 (window 5m)" in out
    assert "step 1: 1/5, step 2: 0/1" in out  # ssh_login_after_bruteforce, a sequence
    assert out.rstrip().endswith("alerts: none")


def test_logtest_a_burst_on_stdin_grows_the_count_until_the_alert() -> None:
    burst = "".join(SSH_FAIL.format(s=i) + "\n" for i in range(10))
    got = siem("logtest", "--format", "json", stdin=burst)
    assert got.returncode == 0, got.stderr
    reports = [json.loads(x) for x in got.stdout.splitlines()]
    assert [r["line"] for r in reports] == list(range(1, 11))
    counts = [next(m["state"]["value"] for m in r["rules"] if m["rule"] == "ssh_bruteforce") for r in reports]
    assert counts == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # the window fired with the 10th and starts empty
    assert [a["rule"] for a in reports[-1]["alerts"]] == ["ssh_bruteforce"]
    assert all(not r["alerts"] for r in reports[:-1])


def test_logtest_takes_the_format_of_a_configured_input(tmp_path: Path) -> None:
    cfg = tmp_path / "siem.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path}/s"\nrules = ["{ROOT}/rules"]\n'
                   f'[inputs.web]\ntype = "files"\npaths = ["{tmp_path}/a.log"]\nformat = "nginx"\n')
    line = ('203.0.113.5 - - [09/Mar/2026:10:00:00 +0000] "GET /index.php?id=1%20UNION%20SELECT%20password HTTP/1.1" '
            '200 512 "-" "sqlmap/1.7"')
    got = siem("logtest", "-c", str(cfg), "--input", "web", "--format", "json", line)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert report["format"] == "nginx" and report["event"]["source.ip"] == "203.0.113.5"
    assert "web_sql_injection" in [m["rule"] for m in report["rules"]]
    assert [a["rule"] for a in report["alerts"]] == ["web_sql_injection"]
    missing = siem("logtest", "-c", str(cfg), "--input", "nope", line)
    assert missing.returncode == 2 and "no such input" in missing.stderr and "web" in missing.stderr


def test_logtest_shows_an_unparsed_line_and_escapes_it() -> None:
    got = siem("logtest", "--log-format", "nginx", "not an access log \x1b[2J")
    assert got.returncode == 0, got.stderr
    assert "error.message" in got.stdout and "\x1b" not in got.stdout and "\\x1b[2J" in got.stdout
    assert "(not parsed: the event keeps the raw line" in got.stdout


def test_logtest_without_input_says_so() -> None:
    got = siem("logtest", stdin="")
    assert got.returncode == 2 and "no line given" in got.stderr
