"""Program parsers behind syslog: sshd, sudo, su, pam_unix, systemd-logind, user/group tools."""

from __future__ import annotations

import pytest

from siem.parse import ParseContext, parse

CTX = ParseContext(now_ms=1_711_627_200_000)  # 2024-03-28T12:00:00Z
AUTH_KEYS = ("event.dataset", "event.action", "event.outcome", "user.name", "user.target.name", "source.ip",
             "source.address", "source.port", "ssh.method", "ssh.protocol_version", "group.name")


def prog(tag: str, msg: str) -> dict[str, object]:
    """The event of `msg` logged by `tag` (e.g. 'sshd[42]')."""
    return parse("syslog", f"Mar 27 13:06:56 web1 {tag}: {msg}".encode(), CTX, "test")


def auth(tag: str, msg: str) -> dict[str, object]:
    """Only the authentication-related fields of the event."""
    ev = prog(tag, msg)
    assert "error.message" not in ev, ev["error.message"]
    return {k: ev[k] for k in AUTH_KEYS if k in ev}


# --- sshd ------------------------------------------------------------------------------------------

SSHD_CASES = [
    ("Accepted password for fztu from 119.137.62.142 port 49116 ssh2",
     {"event.action": "ssh_login", "event.outcome": "success", "user.name": "fztu", "source.ip": "119.137.62.142",
      "source.port": 49116, "ssh.method": "password", "ssh.protocol_version": "2"}),
    ("Accepted publickey for ubuntu from 85.245.107.41 port 54259 ssh2: RSA SHA256:Kl8kPGZrTiz7g4FO1hyqHdsSBBb5Fge6",
     {"event.action": "ssh_login", "event.outcome": "success", "user.name": "ubuntu", "source.ip": "85.245.107.41",
      "source.port": 54259, "ssh.method": "publickey", "ssh.protocol_version": "2"}),
    ("Accepted keyboard-interactive/pam for alice from 2001:db8::7 port 5022 ssh2",
     {"event.action": "ssh_login", "event.outcome": "success", "user.name": "alice", "source.ip": "2001:db8::7",
      "source.port": 5022, "ssh.method": "keyboard-interactive", "ssh.protocol_version": "2"}),
    ("Failed password for root from 183.62.140.253 port 59372 ssh2",
     {"event.action": "ssh_login", "event.outcome": "failure", "user.name": "root", "source.ip": "183.62.140.253",
      "source.port": 59372, "ssh.method": "password", "ssh.protocol_version": "2"}),
    ("Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2",
     {"event.action": "ssh_login", "event.outcome": "failure", "user.name": "webmaster",
      "source.ip": "173.234.31.186", "source.port": 38926, "ssh.method": "password", "ssh.protocol_version": "2"}),
    ("Failed none for invalid user 0 from 5.188.10.180 port 49152 ssh2",
     {"event.action": "ssh_login", "event.outcome": "failure", "user.name": "0", "source.ip": "5.188.10.180",
      "source.port": 49152, "ssh.method": "none", "ssh.protocol_version": "2"}),
    ("Failed password for illegal user jordan from 211.233.14.63 port 33911 ssh2",
     {"event.action": "ssh_login", "event.outcome": "failure", "user.name": "jordan", "source.ip": "211.233.14.63",
      "source.port": 33911, "ssh.method": "password", "ssh.protocol_version": "2"}),
    ("Failed publickey for git from 10.0.0.9 port 2200 ssh2: ECDSA SHA256:abc",
     {"event.action": "ssh_login", "event.outcome": "failure", "user.name": "git", "source.ip": "10.0.0.9",
      "source.port": 2200, "ssh.method": "publickey", "ssh.protocol_version": "2"}),
    ("Invalid user webmaster from 173.234.31.186",
     {"event.action": "invalid_user", "event.outcome": "failure", "user.name": "webmaster",
      "source.ip": "173.234.31.186"}),
    ("Invalid user admin from 103.99.0.122 port 51262",
     {"event.action": "invalid_user", "event.outcome": "failure", "user.name": "admin", "source.ip": "103.99.0.122",
      "source.port": 51262}),
    ("Invalid user  from 10.1.1.1",
     {"event.action": "invalid_user", "event.outcome": "failure", "user.name": "", "source.ip": "10.1.1.1"}),
    ("Illegal user slapme from 67.103.15.70",
     {"event.action": "invalid_user", "event.outcome": "failure", "user.name": "slapme", "source.ip": "67.103.15.70"}),
    ("Disconnected from authenticating user root 61.177.172.13 port 21366 [preauth]",
     {"event.action": "disconnect", "user.name": "root", "source.ip": "61.177.172.13", "source.port": 21366}),
    ("Disconnected from invalid user test 10.2.2.2 port 3333 [preauth]",
     {"event.action": "disconnect", "user.name": "test", "source.ip": "10.2.2.2", "source.port": 3333}),
    ("Disconnected from 85.245.107.41 port 54259",
     {"event.action": "disconnect", "source.ip": "85.245.107.41", "source.port": 54259}),
    ("Received disconnect from 139.59.209.18 port 51986:11: Bye Bye [preauth]",
     {"event.action": "disconnect", "source.ip": "139.59.209.18", "source.port": 51986}),
    ("error: Received disconnect from 103.99.0.122: 14: No more user authentication methods available. [preauth]",
     {"event.action": "disconnect", "source.ip": "103.99.0.122"}),
    ("Connection closed by authenticating user root 61.177.172.13 port 21366 [preauth]",
     {"event.action": "disconnect", "user.name": "root", "source.ip": "61.177.172.13", "source.port": 21366}),
    ("Connection closed by 194.190.163.22 [preauth]",
     {"event.action": "disconnect", "source.ip": "194.190.163.22"}),
    ("Connection reset by 10.3.3.3 port 4444 [preauth]",
     {"event.action": "disconnect", "source.ip": "10.3.3.3", "source.port": 4444}),
    ("error: maximum authentication attempts exceeded for invalid user admin from 10.4.4.4 port 5555 ssh2 [preauth]",
     {"event.action": "max_auth_tries", "event.outcome": "failure", "user.name": "admin", "source.ip": "10.4.4.4",
      "source.port": 5555, "ssh.protocol_version": "2"}),
    ("error: maximum authentication attempts exceeded for root from 10.4.4.4 port 5555 ssh2 [preauth]",
     {"event.action": "max_auth_tries", "event.outcome": "failure", "user.name": "root", "source.ip": "10.4.4.4",
      "source.port": 5555, "ssh.protocol_version": "2"}),
    ("Disconnecting: Too many authentication failures for admin [preauth]",
     {"event.action": "max_auth_tries", "event.outcome": "failure", "user.name": "admin"}),
    ("Disconnecting authenticating user root 10.5.5.5 port 6666: Too many authentication failures [preauth]",
     {"event.action": "max_auth_tries", "event.outcome": "failure", "user.name": "root", "source.ip": "10.5.5.5",
      "source.port": 6666}),
    ("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112.95.230.3  user=root",
     {"event.action": "auth_failure", "user.name": "root", "source.ip": "112.95.230.3"}),
    ("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=zummit.com",
     {"event.action": "auth_failure", "source.address": "zummit.com"}),
    ("pam_unix(sshd:session): session opened for user ubuntu by (uid=0)",
     {"event.action": "session_opened", "event.outcome": "success", "user.name": "ubuntu"}),
    ("pam_unix(sshd:session): session closed for user ubuntu",
     {"event.action": "session_closed", "user.name": "ubuntu"}),
    ("fatal: Unable to negotiate with 116.7.243.198 port 21303: no matching key exchange method found. "
     "Their offer: diffie-hellman-group1-sha1 [preauth]",
     {"event.action": "negotiation_failed", "source.ip": "116.7.243.198", "source.port": 21303}),
    ("Bad protocol version identification 'GET / HTTP/1.1' from 186.219.213.14 port 59547",
     {"event.action": "protocol_mismatch", "source.ip": "186.219.213.14", "source.port": 59547}),
    ("Bad protocol version identification '\\026\\003\\001SSH-1.5-OpenSSH_3.4' from 10.6.6.6 port 1",
     {"event.action": "protocol_mismatch", "source.ip": "10.6.6.6", "source.port": 1, "ssh.protocol_version": "1.5"}),
    ("Protocol major versions differ for 10.7.7.7: SSH-2.0-OpenSSH_4.3 vs. SSH-1.5-Nmap-SSH1-Hostkey",
     {"event.action": "protocol_mismatch", "source.ip": "10.7.7.7", "ssh.protocol_version": "1.5"}),
    ("Protocol major versions differ for 10.7.7.7 port 4000: 2.0 vs. 1.99",
     {"event.action": "protocol_mismatch", "source.ip": "10.7.7.7", "source.port": 4000,
      "ssh.protocol_version": "1.99"}),
    ("reverse mapping checking getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN "
     "ATTEMPT!", {"event.action": "reverse_mapping_failed", "source.ip": "173.234.31.186"}),
    ("Address 10.8.8.8 maps to evil.example, but this does not map back to the address - POSSIBLE BREAK-IN ATTEMPT!",
     {"event.action": "reverse_mapping_failed", "source.ip": "10.8.8.8"}),
]


@pytest.mark.parametrize(("msg", "expected"), SSHD_CASES, ids=[c[0][:48] for c in SSHD_CASES])
def test_sshd_message(msg: str, expected: dict[str, object]) -> None:
    """Each real sshd message shape gives its action, outcome, user and source."""
    assert auth("sshd[24200]", msg) == {"event.dataset": "sshd", **expected}


def test_sshd_negotiation_offers_go_to_kex_and_cipher() -> None:
    """The offered algorithms land in ssh.kex or ssh.cipher as the comma-separated list."""
    kex = prog("sshd[1]", "fatal: Unable to negotiate with 1.2.3.4 port 5: no matching key exchange method found. "
                          "Their offer: diffie-hellman-group1-sha1,diffie-hellman-group14-sha1 [preauth]")
    assert kex["ssh.kex"] == "diffie-hellman-group1-sha1,diffie-hellman-group14-sha1"
    cipher = prog("sshd[1]", "Unable to negotiate with 1.2.3.4 port 5: no matching cipher found. Their offer: "
                             "aes128-cbc,3des-cbc,none [preauth]")
    assert cipher["ssh.cipher"] == "aes128-cbc,3des-cbc,none"
    assert prog("sshd[1]", "Unable to negotiate with 1.2.3.4 port 5: no matching host key type found. "
                           "Their offer: ssh-dss [preauth]")["ssh.host_key_type"] == "ssh-dss"


def test_sshd_user_name_cannot_forge_the_source() -> None:
    """A user name containing ' from <ip> port <n>' does not replace the real source address."""
    ev = auth("sshd[1]", "Failed password for invalid user x from 6.6.6.6 port 1 ssh2 from 1.2.3.4 port 5 ssh2")
    assert (ev["source.ip"], ev["source.port"], ev["user.name"]) == ("1.2.3.4", 5, "x from 6.6.6.6 port 1 ssh2")


def test_sshd_user_name_with_trailing_space_is_kept() -> None:
    """`Invalid user admin  from ...` (real loghub line) keeps the space in the name."""
    assert auth("sshd[1]", "Invalid user admin  from 1.1.1.1")["user.name"] == "admin "


def test_sshd_host_name_source_goes_to_source_address() -> None:
    """With UseDNS the source is a host name: source.address, no source.ip."""
    ev = auth("sshd[1]", "Failed password for root from host.example.net port 22 ssh2")
    assert ev["source.address"] == "host.example.net" and "source.ip" not in ev


def test_sshd_session_and_auth_programs_of_openssh_9_8() -> None:
    """sshd-session (OpenSSH >= 9.8) is parsed as sshd; process.name stays as logged."""
    ev = prog("sshd-session[77]", "Accepted publickey for bob from 10.0.0.2 port 40000 ssh2: ED25519 SHA256:x")
    assert (ev["event.dataset"], ev["event.action"], ev["process.name"]) == ("sshd", "ssh_login", "sshd-session")


def test_old_red_hat_pam_tag_is_sshd() -> None:
    """`sshd(pam_unix)[19939]: authentication failure; ...` (loghub Linux) is an sshd auth_failure."""
    ev = prog("sshd(pam_unix)[19939]", "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= "
                                      "rhost=218.188.2.4 ")
    assert (ev["event.dataset"], ev["event.action"], ev["source.ip"], ev["process.name"], ev["process.pid"]) == (
        "sshd", "auth_failure", "218.188.2.4", "sshd", 19939)


def test_sshd_pam_failure_has_no_outcome_so_attempts_are_not_counted_twice() -> None:
    """The 'Failed password' line carries the outcome; pam's line for the same attempt does not."""
    ev = prog("sshd[1]", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
                         "rhost=1.2.3.4 user=root")
    assert "event.outcome" not in ev


def test_userauth_request_echo_is_not_a_second_invalid_user() -> None:
    """`input_userauth_request: invalid user X [preauth]` repeats 'Invalid user': user only, no action."""
    ev = auth("sshd[1]", "input_userauth_request: invalid user webmaster [preauth]")
    assert ev == {"event.dataset": "sshd", "user.name": "webmaster"}


def test_other_sshd_messages_are_sshd_events_without_action() -> None:
    """`Server listening on ...` is an sshd event with no action."""
    ev = prog("sshd[1291]", "Server listening on 0.0.0.0 port 22.")
    assert ev["event.dataset"] == "sshd" and "event.action" not in ev


# --- sudo ------------------------------------------------------------------------------------------


def test_sudo_command() -> None:
    """A command line: invoking user, runas user, command, working directory, success."""
    ev = prog("sudo", "  ubuntu : TTY=pts/0 ; PWD=/home/ubuntu ; USER=root ; COMMAND=/usr/bin/vim /etc/ssh/sshd_config")
    assert {k: ev[k] for k in ("event.dataset", "event.action", "event.outcome", "user.name", "user.target.name",
                               "process.command_line", "process.working_directory")} == {
        "event.dataset": "sudo", "event.action": "sudo_command", "event.outcome": "success", "user.name": "ubuntu",
        "user.target.name": "root", "process.command_line": "/usr/bin/vim /etc/ssh/sshd_config",
        "process.working_directory": "/home/ubuntu"}


def test_sudo_command_with_semicolons_is_kept_whole() -> None:
    """COMMAND is everything after COMMAND=, even ' ; '."""
    ev = prog("sudo[99]", "alice : TTY=pts/1 ; PWD=/tmp ; USER=root ; TSID=000001 ; COMMAND=/bin/sh -c id ; whoami")
    assert ev["process.command_line"] == "/bin/sh -c id ; whoami"
    assert ev["event.action"] == "sudo_command"


def test_sudo_incorrect_password_attempts() -> None:
    """`3 incorrect password attempts` is sudo_auth_failure, failure."""
    ev = auth("sudo", "   alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
                      "COMMAND=/bin/ls")
    assert ev == {"event.dataset": "sudo", "event.action": "sudo_auth_failure", "event.outcome": "failure",
                  "user.name": "alice", "user.target.name": "root"}


def test_sudo_user_not_in_sudoers() -> None:
    """`user NOT in sudoers` is sudo_denied, failure, with the reason."""
    ev = prog("sudo", "mallory : user NOT in sudoers ; TTY=pts/2 ; PWD=/home/mallory ; USER=root ; COMMAND=/bin/bash")
    assert (ev["event.action"], ev["event.outcome"], ev["user.name"], ev["event.reason"]) == (
        "sudo_denied", "failure", "mallory", "user NOT in sudoers")


def test_sudo_command_not_allowed() -> None:
    """`command not allowed` is sudo_denied."""
    ev = prog("sudo", "bob : command not allowed ; TTY=pts/2 ; PWD=/ ; USER=root ; COMMAND=/bin/cat /etc/shadow")
    assert (ev["event.action"], ev["event.outcome"]) == ("sudo_denied", "failure")


def test_sudo_pam_authentication_failure() -> None:
    """pam_unix(sudo:auth) failure: dataset sudo, auth_failure, failure, the invoking user."""
    ev = auth("sudo", "pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/0 "
                      "ruser=alice rhost=  user=alice")
    assert ev == {"event.dataset": "sudo", "event.action": "auth_failure", "event.outcome": "failure",
                  "user.name": "alice"}


def test_sudo_pam_session_opened_names_actor_and_target() -> None:
    """`session opened for user root by ubuntu(uid=0)`: user.name ubuntu, target root."""
    ev = auth("sudo", "pam_unix(sudo:session): session opened for user root by ubuntu(uid=0)")
    assert ev == {"event.dataset": "sudo", "event.action": "session_opened", "event.outcome": "success",
                  "user.name": "ubuntu", "user.target.name": "root"}


def test_pam_session_opened_with_uid_after_user() -> None:
    """pam >= 1.4 writes `for user root(uid=0) by alice(uid=1000)`."""
    ev = auth("sudo", "pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)")
    assert (ev["user.name"], ev["user.target.name"]) == ("alice", "root")


# --- su --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("msg", "outcome", "user", "target"), [
    ("Successful su for root by ubuntu", "success", "ubuntu", "root"),
    ("FAILED su for root by alice", "failure", "alice", "root"),
    ("+ /dev/pts/1 ubuntu:root", "success", "ubuntu", "root"),
    ("- /dev/pts/1 alice:root", "failure", "alice", "root"),
    ("(to root) alice on pts/0", "success", "alice", "root"),
    ("FAILED SU (to root) alice on pts/0", "failure", "alice", "root"),
])
def test_su_attempts(msg: str, outcome: str, user: str, target: str) -> None:
    """shadow-utils and util-linux su lines: who switched to whom, and whether it worked."""
    assert auth("su[1234]", msg) == {"event.dataset": "su", "event.action": "switch_user", "event.outcome": outcome,
                                     "user.name": user, "user.target.name": target}


def test_su_pam_auth_failure_names_invoker_and_target() -> None:
    """pam_unix(su:auth): ruser is who ran su, user= the target."""
    ev = auth("su[5]", "pam_unix(su:auth): authentication failure; logname=alice uid=1000 euid=0 tty=pts/0 "
                       "ruser=alice rhost=  user=root")
    assert ev == {"event.dataset": "su", "event.action": "auth_failure", "event.outcome": "failure",
                  "user.name": "alice", "user.target.name": "root"}


def test_su_old_red_hat_pam_tag() -> None:
    """`su(pam_unix)[N]: session opened for user news by (uid=0)` (loghub Linux)."""
    ev = auth("su(pam_unix)[21416]", "session opened for user news by (uid=0)")
    assert ev == {"event.dataset": "su", "event.action": "session_opened", "event.outcome": "success",
                  "user.target.name": "news"}


# --- pam of other programs -------------------------------------------------------------------------


def test_cron_pam_session_is_dataset_pam() -> None:
    """pam_unix lines of other programs (CRON) are dataset pam."""
    ev = auth("CRON[21882]", "pam_unix(cron:session): session opened for user root by (uid=0)")
    assert ev == {"event.dataset": "pam", "event.action": "session_opened", "event.outcome": "success",
                  "user.name": "root"}


def test_login_pam_auth_failure_has_outcome() -> None:
    """A console login failure (program login) is pam auth_failure with outcome failure."""
    ev = auth("login[9]", "pam_unix(login:auth): authentication failure; logname=LOGIN uid=0 euid=0 tty=tty1 "
                          "ruser= rhost=  user=root")
    assert ev == {"event.dataset": "pam", "event.action": "auth_failure", "event.outcome": "failure",
                  "user.name": "root"}


# --- systemd-logind --------------------------------------------------------------------------------


def test_logind_new_and_removed_session() -> None:
    """New session N of user X / Removed session N."""
    ev = prog("systemd-logind[1118]", "New session 12 of user elastic_user_7.")
    assert (ev["event.dataset"], ev["event.action"], ev["user.name"], ev["labels.session_id"]) == (
        "systemd-logind", "session_new", "elastic_user_7", "12")
    ev = prog("systemd-logind[1118]", "Removed session 12.")
    assert (ev["event.action"], ev["labels.session_id"]) == ("session_removed", "12")


# --- user and group management ---------------------------------------------------------------------


@pytest.mark.parametrize(("tag", "msg", "expected"), [
    ("useradd[1]", "new user: name=elastic_user_0, UID=1001, GID=1001, home=/home/elastic_user_0, shell=/bin/bash",
     {"event.dataset": "useradd", "event.action": "user_created", "event.outcome": "success",
      "user.target.name": "elastic_user_0"}),
    ("useradd[1]", "new group: name=elastic_user_0, GID=1001",
     {"event.dataset": "useradd", "event.action": "group_created", "event.outcome": "success",
      "group.name": "elastic_user_0"}),
    ("useradd[1]", "failed adding user 'elastic_user_5', data deleted",
     {"event.dataset": "useradd", "event.action": "user_created", "event.outcome": "failure",
      "user.target.name": "elastic_user_5"}),
    ("groupadd[2]", "new group: name=elastic_users, GID=1002",
     {"event.dataset": "groupadd", "event.action": "group_created", "event.outcome": "success",
      "group.name": "elastic_users"}),
    ("usermod[3]", "add 'alice' to group 'sudo'",
     {"event.dataset": "usermod", "event.action": "group_member_added", "event.outcome": "success",
      "user.target.name": "alice", "group.name": "sudo"}),
    ("usermod[3]", "change user 'alice' shell from '/bin/bash' to '/bin/sh'",
     {"event.dataset": "usermod", "event.action": "user_modified", "event.outcome": "success",
      "user.target.name": "alice"}),
    ("userdel[4]", "delete user 'alice'",
     {"event.dataset": "userdel", "event.action": "user_deleted", "event.outcome": "success",
      "user.target.name": "alice"}),
    ("chpasswd[5]", "pam_unix(chpasswd:chauthtok): password changed for elastic_user_3",
     {"event.dataset": "chpasswd", "event.action": "password_changed", "event.outcome": "success",
      "user.target.name": "elastic_user_3"}),
    ("passwd[6]", "pam_unix(passwd:chauthtok): password changed for bob",
     {"event.dataset": "passwd", "event.action": "password_changed", "event.outcome": "success",
      "user.target.name": "bob"}),
])
def test_account_management(tag: str, msg: str, expected: dict[str, object]) -> None:
    """useradd/groupadd/usermod/userdel/passwd lines: dataset = program, action, target user or group."""
    assert auth(tag, msg) == expected


def test_groupadd_file_lines_are_not_a_second_group_created() -> None:
    """`group added to /etc/group: name=x` names the group without a second group_created."""
    ev = auth("groupadd[2]", "group added to /etc/group: name=elastic_users, GID=1002")
    assert ev == {"event.dataset": "groupadd", "group.name": "elastic_users"}
