"""Program parsers for syslog/journald messages: sshd, sudo, su, pam_unix, systemd-logind, shadow utils.

Each handler is ``handler(ev, msg, prog) -> None``: it receives the event built from the syslog
header (or the journald record), the message text after the tag, and the program name, and adds
fields in place. ``PROGRAMS`` maps program names to handlers; ``dispatch`` picks one.

Field contract (see README "Parsers and the event schema"): ``event.dataset`` is the program
(``sshd``, ``sudo``, ``su``, ``systemd-logind``, ``useradd``...), or ``pam`` for pam_unix messages
of other programs; ``event.action`` names what happened; ``event.outcome`` is set where the message
itself says success or failure.
"""

from __future__ import annotations

import re
from typing import Callable, Final

from siem.parse.base import set_source
from siem.schema import Event

Handler = Callable[[Event, str, str], None]

# --- helpers ---------------------------------------------------------------------------------------

_KV: Final = re.compile(r"(?<!\w)(\w{1,32})=(\S*)")  # bounded key: linear even on "aaaa...a"


def _proto(tok: str | None) -> str | None:
    """'ssh2' -> '2'."""
    if tok and tok.startswith("ssh") and len(tok) > 3:
        return tok[3:]
    return None


# --- sshd ------------------------------------------------------------------------------------------

LOGIN: Final = re.compile(
    r"(Accepted|Failed) (\S+) for (?:(?:invalid|illegal) user )?(.*?) from (\S+) port (\d+)(?: (ssh\d))?(?:: .*)?"
)
INVALID: Final = re.compile(r"(?:Invalid|Illegal) user (.*?) from (\S+?)(?: port (\d+))?")
_DISCONNECTED: Final = re.compile(
    r"Disconnected from (?:(?:invalid |authenticating )?user (.*) )?(\S+) port (\d+)"
)
_RECEIVED_DISC: Final = re.compile(r"Received disconnect from (\S+?)(?: port (\d+))?:\s*\d+:.*", re.S)
_CONN_CLOSED: Final = re.compile(
    r"Connection (?:closed|reset) by (?:(?:invalid |authenticating )?user (.*) )?(\S+) port (\d+)"
)
_CONN_CLOSED_NO_PORT: Final = re.compile(r"Connection (?:closed|reset) by (\S+)")
_CONN_FROM: Final = re.compile(r"Connection from (\S+) port (\d+) on (\S+) port (\d+).*")
_MAX_TRIES: Final = re.compile(
    r"maximum authentication attempts exceeded for (?:(?:invalid|illegal) user )?(.*?) from (\S+) port (\d+)"
    r"(?: (ssh\d))?"
)
_TOO_MANY: Final = re.compile(r"Disconnecting: Too many authentication failures(?: for (?:(?:invalid|illegal) user )?(.*))?")
_TOO_MANY_NEW: Final = re.compile(
    r"Disconnecting (?:invalid |authenticating )?user (.*) (\S+) port (\d+): Too many authentication failures"
)
_NEGOTIATE: Final = re.compile(
    r"Unable to negotiate with (\S+?)(?: port (\d+))?: no matching (.+?) found\. Their offer: (\S*)"
)
_NEGOTIATE_FIELD: Final = {
    "key exchange method": "ssh.kex",
    "cipher": "ssh.cipher",
    "MAC": "ssh.mac",
    "host key type": "ssh.host_key_type",
}
_MAJOR: Final = re.compile(r"Protocol major versions differ(?: for (\S+?)(?: port (\d+))?)?: (\S+) vs\. (\S+)")
_BAD_PROTO: Final = re.compile(r"Bad protocol version identification '(.*)' from (\S+?)(?: port (\d+))?", re.S)
_SSH_VERSION: Final = re.compile(r"SSH-(\d+\.\d+)-")
_REVERSE: Final = re.compile(r"reverse mapping checking getaddrinfo for (\S+) \[(\S+)\] failed.*")
_ADDRESS_MAPS: Final = re.compile(r"Address (\S+) maps to (\S+), but this does not map back to the address.*")
_NO_IDENT: Final = re.compile(r"Did not receive identification string from (\S+?)(?: port (\d+))?")
_PAM_MORE: Final = re.compile(r"PAM \d+ more authentication failures?; (.*)")
_USERAUTHINVALID: Final = re.compile(r"input_userauth_request: (?:invalid|illegal) user (.*)")


_LOGIN_SUCCESS: Final = {"event.action": "ssh_login", "event.category": "authentication", "event.outcome": "success"}
_LOGIN_FAILURE: Final = {"event.action": "ssh_login", "event.category": "authentication", "event.outcome": "failure"}
_INVALID_USER: Final = {"event.action": "invalid_user", "event.category": "authentication", "event.outcome": "failure"}


def _ssh_accept_fail(ev: Event, body: str) -> None:
    m = LOGIN.fullmatch(body)
    if m is None:
        return
    verb, method, user, addr, port, proto = m.groups()
    ev.update(_LOGIN_SUCCESS if verb == "Accepted" else _LOGIN_FAILURE)
    ev["user.name"] = user
    set_source(ev, addr)
    ev["source.port"] = int(port)
    ev["ssh.method"] = method.partition("/")[0]
    if proto:
        ev["ssh.protocol_version"] = proto[3:]


def _ssh_invalid(ev: Event, body: str) -> None:
    m = INVALID.fullmatch(body)
    if m is None:
        return
    user, addr, port = m.groups()
    ev.update(_INVALID_USER)
    ev["user.name"] = user
    set_source(ev, addr)
    if port:
        ev["source.port"] = int(port)


def _ssh_disconnect(ev: Event, user: str | None, addr: str, port: str | None) -> None:
    ev["event.action"] = "disconnect"
    ev["event.category"] = "session"
    if user is not None:
        ev["user.name"] = user
    set_source(ev, addr)
    if port:
        ev["source.port"] = int(port)


def _ssh_disconnected(ev: Event, body: str) -> None:
    m = _DISCONNECTED.fullmatch(body)
    if m is not None:
        _ssh_disconnect(ev, *m.groups())


def _ssh_received(ev: Event, body: str) -> None:
    m = _RECEIVED_DISC.fullmatch(body)
    if m is not None:
        _ssh_disconnect(ev, None, m.group(1), m.group(2))


def _ssh_connection(ev: Event, body: str) -> None:
    m = _CONN_CLOSED.fullmatch(body)
    if m is not None:
        _ssh_disconnect(ev, *m.groups())
        return
    m = _CONN_CLOSED_NO_PORT.fullmatch(body)
    if m is not None:
        _ssh_disconnect(ev, None, m.group(1), None)
        return
    m = _CONN_FROM.fullmatch(body)
    if m is not None:
        ev["event.action"] = "connection_opened"
        ev["event.category"] = "network"
        set_source(ev, m.group(1))
        ev["source.port"] = int(m.group(2))
        ev["destination.ip"] = m.group(3)
        ev["destination.port"] = int(m.group(4))


def _max_tries(ev: Event, user: str | None, addr: str | None, port: str | None) -> None:
    ev["event.action"] = "max_auth_tries"
    ev["event.category"] = "authentication"
    ev["event.outcome"] = "failure"
    if user is not None:
        ev["user.name"] = user
    if addr is not None:
        set_source(ev, addr)
    if port:
        ev["source.port"] = int(port)


def _ssh_maximum(ev: Event, body: str) -> None:
    m = _MAX_TRIES.fullmatch(body)
    if m is not None:
        user, addr, port, proto = m.groups()
        _max_tries(ev, user, addr, port)
        if proto:
            ev["ssh.protocol_version"] = proto[3:]


def _ssh_disconnecting(ev: Event, body: str) -> None:
    m = _TOO_MANY.fullmatch(body)
    if m is not None:
        _max_tries(ev, m.group(1), None, None)
        return
    m = _TOO_MANY_NEW.fullmatch(body)
    if m is not None:
        _max_tries(ev, *m.groups())


def _ssh_unable(ev: Event, body: str) -> None:
    m = _NEGOTIATE.fullmatch(body)
    if m is None:
        return
    addr, port, what, offer = m.groups()
    ev["event.action"] = "negotiation_failed"
    ev["event.category"] = "network"
    set_source(ev, addr)
    if port:
        ev["source.port"] = int(port)
    ev[_NEGOTIATE_FIELD.get(what, "ssh.kex" if "key exchange" in what else "ssh.cipher")] = offer


def _ssh_protocol(ev: Event, body: str) -> None:
    m = _MAJOR.fullmatch(body)
    if m is None:
        return
    addr, port, _ours, theirs = m.groups()
    ev["event.action"] = "protocol_mismatch"
    ev["event.category"] = "network"
    if addr:
        set_source(ev, addr)
    if port:
        ev["source.port"] = int(port)
    v = _SSH_VERSION.match(theirs)
    ev["ssh.protocol_version"] = v.group(1) if v else theirs


def _ssh_bad(ev: Event, body: str) -> None:
    m = _BAD_PROTO.fullmatch(body)
    if m is None:
        return
    ident, addr, port = m.groups()
    ev["event.action"] = "protocol_mismatch"
    ev["event.category"] = "network"
    set_source(ev, addr)
    if port:
        ev["source.port"] = int(port)
    v = _SSH_VERSION.search(ident)
    if v is not None:
        ev["ssh.protocol_version"] = v.group(1)


def _ssh_reverse(ev: Event, body: str) -> None:
    m = _REVERSE.fullmatch(body)
    if m is not None:
        ev["event.action"] = "reverse_mapping_failed"
        ev["event.category"] = "network"
        ev["source.domain"] = m.group(1)
        set_source(ev, m.group(2))


def _ssh_address(ev: Event, body: str) -> None:
    m = _ADDRESS_MAPS.fullmatch(body)
    if m is not None:
        ev["event.action"] = "reverse_mapping_failed"
        ev["event.category"] = "network"
        set_source(ev, m.group(1))
        ev["source.domain"] = m.group(2)


def _ssh_did(ev: Event, body: str) -> None:
    m = _NO_IDENT.fullmatch(body)
    if m is not None:
        ev["event.action"] = "no_identification"
        ev["event.category"] = "network"
        set_source(ev, m.group(1))
        if m.group(2):
            ev["source.port"] = int(m.group(2))


def _ssh_pam_more(ev: Event, body: str) -> None:
    m = _PAM_MORE.fullmatch(body)
    if m is not None:
        kv = dict(_KV.findall(m.group(1)))
        if kv.get("rhost"):
            set_source(ev, kv["rhost"])
        if kv.get("user"):
            ev["user.name"] = kv["user"]


def _ssh_userauth(ev: Event, body: str) -> None:
    m = _USERAUTHINVALID.fullmatch(body)
    if m is not None:
        ev["user.name"] = m.group(1)


_SSHD_WORDS: Final[dict[str, Callable[[Event, str], None]]] = {
    "Accepted": _ssh_accept_fail,
    "Failed": _ssh_accept_fail,
    "Invalid": _ssh_invalid,
    "Illegal": _ssh_invalid,
    "Disconnected": _ssh_disconnected,
    "Received": _ssh_received,
    "Connection": _ssh_connection,
    "maximum": _ssh_maximum,
    "Disconnecting:": _ssh_disconnecting,
    "Disconnecting": _ssh_disconnecting,
    "Unable": _ssh_unable,
    "Protocol": _ssh_protocol,
    "Bad": _ssh_bad,
    "reverse": _ssh_reverse,
    "Address": _ssh_address,
    "Did": _ssh_did,
    "PAM": _ssh_pam_more,
    "input_userauth_request:": _ssh_userauth,
}


def sshd(ev: Event, msg: str, prog: str) -> None:
    """OpenSSH server messages (also sshd-session / sshd-auth of OpenSSH >= 9.8)."""
    ev["event.dataset"] = "sshd"
    if msg[-10:] == " [preauth]":
        msg = msg[:-10]
    sp = msg.find(" ")
    h = _SSHD_WORDS.get(msg[:sp] if sp > 0 else msg)
    if h is None:  # rarer shapes: "error: ..."/"fatal: ..." prefixes, pam_unix lines
        if msg.startswith(("error: ", "fatal: ")):
            msg = msg[7:]
            sp = msg.find(" ")
            h = _SSHD_WORDS.get(msg[:sp] if sp > 0 else msg)
        if h is None:
            if msg.startswith("pam_unix("):
                pam(ev, msg, prog)
            return
    h(ev, msg)


# --- pam_unix --------------------------------------------------------------------------------------

_PAM_PREFIX: Final = re.compile(r"pam_unix\(([^:)]*)(?::([^)]*))?\): ")
_SESSION_OPENED: Final = re.compile(r"session opened for user (\S+?)(?:\(uid=\d+\))? by (\S*?)\(uid=\d+\)")
_SESSION_CLOSED: Final = re.compile(r"session closed for user (\S+)")
_PASSWORD_CHANGED: Final = re.compile(r"password changed for (\S+)")
_SSHD_NAMES: Final = frozenset({"sshd", "sshd-session", "sshd-auth"})
_ACTOR_TARGET: Final = frozenset({"sudo", "su", "su-l"})  # pam "user" is the target of these
_OWN_DATASET: Final = {"sudo": "sudo", "su": "su", "su-l": "su", "passwd": "passwd", "chpasswd": "chpasswd"}


def pam(ev: Event, msg: str, prog: str) -> None:
    """pam_unix messages, with or without the ``pam_unix(service:type): `` prefix.

    Actor and target: for su and sudo sessions, "for user X" is the target (user.target.name) and
    "by Y" the invoking user (user.name); su's auth failure ``user=`` is the target and ruser/logname
    the invoker; sudo's auth failure ``user=`` is the invoking user. For every other program the pam
    user is user.name. auth_failure has event.outcome "failure" except under sshd, whose own
    "Failed password" line carries the outcome (so one attempt is not counted twice).
    """
    base = "sshd" if prog in _SSHD_NAMES else prog
    ev["event.dataset"] = "sshd" if base == "sshd" else _OWN_DATASET.get(base, "pam")
    rest = msg
    m = _PAM_PREFIX.match(msg)
    if m is not None:
        rest = msg[m.end():]
    swap = base in _ACTOR_TARGET
    if rest.startswith("authentication failure;"):
        swap = base in ("su", "su-l")  # sudo authenticates the invoking user; su the target
        kv = dict(_KV.findall(rest, 23))
        ev["event.action"] = "auth_failure"
        ev["event.category"] = "authentication"
        if base != "sshd":
            ev["event.outcome"] = "failure"
        user = kv.get("user")
        if swap:
            if user:
                ev["user.target.name"] = user
            actor = kv.get("ruser") or kv.get("logname")
            if actor:
                ev["user.name"] = actor
        elif user:
            ev["user.name"] = user
        rhost = kv.get("rhost")
        if rhost:
            set_source(ev, rhost)
        return
    if rest.startswith("session opened"):
        so = _SESSION_OPENED.match(rest)
        if so is None:
            return
        ev["event.action"] = "session_opened"
        ev["event.category"] = "session"
        ev["event.outcome"] = "success"
        target, actor = so.groups()
        if swap:
            ev["user.target.name"] = target
            if actor:
                ev["user.name"] = actor
        else:
            ev["user.name"] = target
        return
    if rest.startswith("session closed"):
        sc = _SESSION_CLOSED.match(rest)
        if sc is not None:
            ev["event.action"] = "session_closed"
            ev["event.category"] = "session"
            ev["user.target.name" if swap else "user.name"] = sc.group(1)
        return
    if rest.startswith("password changed"):
        pc = _PASSWORD_CHANGED.match(rest)
        if pc is not None:
            ev["event.action"] = "password_changed"
            ev["event.category"] = "iam"
            ev["event.outcome"] = "success"
            ev["user.target.name"] = pc.group(1)


# --- sudo ------------------------------------------------------------------------------------------

_SUDO: Final = re.compile(r"\s*(\S+) : (.*)", re.S)


def sudo(ev: Event, msg: str, prog: str) -> None:
    """sudo's command log: ``alice : [reason ; ]TTY=.. ; PWD=.. ; USER=.. ; COMMAND=..``."""
    ev["event.dataset"] = "sudo"
    if msg.startswith("pam_unix("):
        pam(ev, msg, prog)
        return
    m = _SUDO.fullmatch(msg)
    if m is None:
        return
    user, rest = m.groups()
    ev["user.name"] = user
    cut = rest.find("COMMAND=")
    if cut >= 0:
        ev["process.command_line"] = rest[cut + 8:]
        rest = rest[:cut]
    reason = None
    for part in rest.split(" ; "):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        if eq and key.isupper():
            if key == "USER":
                ev["user.target.name"] = value
            elif key == "PWD":
                ev["process.working_directory"] = value
        elif reason is None:
            reason = part
    ev["event.category"] = "process"
    if reason is None:
        ev["event.action"] = "sudo_command"
        ev["event.outcome"] = "success"
        return
    ev["event.reason"] = reason
    if "incorrect password" in reason or "password is required" in reason or "authentication failure" in reason:
        ev["event.action"] = "sudo_auth_failure"
        ev["event.outcome"] = "failure"
    elif "NOT in sudoers" in reason or "NOT authorized" in reason or "not allowed" in reason:
        ev["event.action"] = "sudo_denied"
        ev["event.outcome"] = "failure"


# --- su ------------------------------------------------------------------------------------------

_SU_WORDS: Final = re.compile(r"(Successful|FAILED) su for (\S+) by (\S+)")
_SU_PLUSMINUS: Final = re.compile(r"([+-]) (\S+) (\S+?):(\S+)")
_SU_UTIL: Final = re.compile(r"(FAILED SU )?\(to (\S+)\) (\S+) on (\S+)")
_SU_BSD: Final = re.compile(r"'su (\S+)' (failed|succeeded) for (\S+) on (\S+)")


def su(ev: Event, msg: str, prog: str) -> None:
    """su (shadow-utils and util-linux formats) and its pam_unix lines."""
    ev["event.dataset"] = "su"
    if msg.startswith("pam_unix("):
        pam(ev, msg, prog)
        return
    ok: bool
    m = _SU_WORDS.fullmatch(msg)
    if m is not None:
        ok, target, user = m.group(1) == "Successful", m.group(2), m.group(3)
    elif (m := _SU_PLUSMINUS.fullmatch(msg)) is not None:
        ok, user, target = m.group(1) == "+", m.group(3), m.group(4)
    elif (m := _SU_UTIL.fullmatch(msg)) is not None:
        ok, target, user = m.group(1) is None, m.group(2), m.group(3)
    elif (m := _SU_BSD.fullmatch(msg)) is not None:
        ok, target, user = m.group(2) == "succeeded", m.group(1), m.group(3)
    else:
        return
    ev["event.action"] = "switch_user"
    ev["event.category"] = "authentication"
    ev["event.outcome"] = "success" if ok else "failure"
    ev["user.name"] = user
    ev["user.target.name"] = target


# --- systemd-logind --------------------------------------------------------------------------------

_NEW_SESSION: Final = re.compile(r"New session (\S+) of user (.+?)\.?")
_REMOVED_SESSION: Final = re.compile(r"Removed session (\S+?)\.?")


def logind(ev: Event, msg: str, prog: str) -> None:
    """systemd-logind session start/stop (session id in labels.session_id)."""
    ev["event.dataset"] = "systemd-logind"
    m = _NEW_SESSION.fullmatch(msg)
    if m is not None:
        ev["event.action"] = "session_new"
        ev["event.category"] = "session"
        ev["labels.session_id"] = m.group(1)
        ev["user.name"] = m.group(2)
        return
    m = _REMOVED_SESSION.fullmatch(msg)
    if m is not None:
        ev["event.action"] = "session_removed"
        ev["event.category"] = "session"
        ev["labels.session_id"] = m.group(1)


# --- shadow utils: useradd, groupadd, usermod, userdel, groupdel, gpasswd, passwd, chpasswd ---------

# (pattern, action or None, outcome or None, names of the fields the groups fill)
_Rule = tuple[re.Pattern[str], str | None, str | None, tuple[str, ...]]
_T, _G, _U = "user.target.name", "group.name", "user.name"
_SHADOW_RULES: Final[dict[str, list[_Rule]]] = {
    "useradd": [
        (re.compile(r"new user: name=([^,]*),.*"), "user_created", "success", (_T,)),
        (re.compile(r"new group: name=([^,]*).*"), "group_created", "success", (_G,)),
        (re.compile(r"add '([^']*)' to group '([^']*)'"), "group_member_added", "success", (_T, _G)),
        (re.compile(r"add '([^']*)' to shadow group '([^']*)'"), None, None, (_T, _G)),
        (re.compile(r"failed adding user '([^']*)'.*"), "user_created", "failure", (_T,)),
    ],
    "groupadd": [
        (re.compile(r"new group: name=([^,]*).*"), "group_created", "success", (_G,)),
        (re.compile(r"group added to \S+: name=([^,]*).*"), None, None, (_G,)),
    ],
    "usermod": [
        (re.compile(r"add '([^']*)' to group '([^']*)'"), "group_member_added", "success", (_T, _G)),
        (re.compile(r"add '([^']*)' to shadow group '([^']*)'"), None, None, (_T, _G)),
        (re.compile(r"delete '([^']*)' from group '([^']*)'"), "group_member_removed", "success", (_T, _G)),
        (re.compile(r"delete '([^']*)' from shadow group '([^']*)'"), None, None, (_T, _G)),
        (re.compile(r"(?:change|lock|unlock) user (?:name )?'([^']*)'.*"), "user_modified", "success", (_T,)),
    ],
    "userdel": [
        (re.compile(r"delete user '([^']*)'"), "user_deleted", "success", (_T,)),
        (re.compile(r"removed group '([^']*)' owned by '([^']*)'"), "group_deleted", "success", (_G, _T)),
        (re.compile(r"removed shadow group '([^']*)' owned by '([^']*)'"), None, None, (_G, _T)),
    ],
    "groupdel": [
        (re.compile(r"group '([^']*)' removed"), "group_deleted", "success", (_G,)),
        (re.compile(r"group '([^']*)' removed from .*"), None, None, (_G,)),
    ],
    "gpasswd": [
        (re.compile(r"user (\S+) added by (\S+) to group (\S+)"), "group_member_added", "success", (_T, _U, _G)),
        (re.compile(r"user (\S+) removed by (\S+) from group (\S+)"), "group_member_removed", "success",
         (_T, _U, _G)),
    ],
    "passwd": [
        (re.compile(r"password for '([^']*)' changed by '([^']*)'"), "password_changed", "success", (_T, _U)),
    ],
}
_SHADOW_RULES["chpasswd"] = _SHADOW_RULES["passwd"]


def shadow(ev: Event, msg: str, prog: str) -> None:
    """User and group management tools; event.dataset is the program name."""
    ev["event.dataset"] = prog
    if msg.startswith("pam_unix("):
        pam(ev, msg, prog)
        return
    for pattern, action, outcome, names in _SHADOW_RULES.get(prog, ()):
        m = pattern.fullmatch(msg)
        if m is None:
            continue
        for name, value in zip(names, m.groups()):
            ev[name] = value
        if action is not None:
            ev["event.action"] = action
            ev["event.category"] = "iam"
        if outcome is not None:
            ev["event.outcome"] = outcome
        return


# --- dispatch --------------------------------------------------------------------------------------

PROGRAMS: Final[dict[str, Handler]] = {
    "sshd": sshd,
    "sshd-session": sshd,
    "sshd-auth": sshd,
    "sudo": sudo,
    "su": su,
    "systemd-logind": logind,
    **{p: shadow for p in ("useradd", "groupadd", "usermod", "userdel", "groupdel", "gpasswd", "passwd",
                           "chpasswd")},
}

_REPEATED: Final = re.compile(r"message repeated (\d+) times: \[ ?(.*)\]", re.S)


def dispatch(ev: Event, prog: str, msg: str, generic_dataset: str) -> None:
    """Run the program parser for `prog` on `msg`, or label the event generic.

    Handles rsyslog's ``message repeated N times: [ msg]`` (event.repeat_count = N, the inner message
    parsed) and the old Red Hat tag form ``sshd(pam_unix)[pid]``.
    """
    if msg.startswith("message repeated "):
        m = _REPEATED.fullmatch(msg)
        if m is not None:
            ev["event.repeat_count"] = int(m.group(1)[:9])
            msg = m.group(2)
    h = PROGRAMS.get(prog)
    if h is not None:
        h(ev, msg, prog)
        return
    if prog.endswith("(pam_unix)"):
        base = prog[:-10]
        ev["process.name"] = base
        pam(ev, msg, base)
        return
    if msg.startswith("pam_unix("):
        pam(ev, msg, prog)
        return
    ev["event.dataset"] = generic_dataset


# --- prefilter needles (siem.parse.block) ----------------------------------------------------------
# Literal text a syslog record must contain to become an event of a dataset (or of a dataset and
# action): the block parser stores records with none of the wanted needles without parsing them.
# A needle list must be a necessary condition: every way the handlers above reach that dataset/action
# needs one of its needles in the record. tests/test_block.py checks it against these handlers on the
# shared datasets and on generated lines; a handler that gains a new way to set a dataset or action
# must extend its entry (or drop it: a dataset without an entry is always parsed).
DATASET_NEEDLES: Final[dict[str, tuple[str, ...]]] = {
    "sshd": ("sshd",),  # the tag: sshd, sshd-session, sshd-auth, sshd(pam_unix)
    "sudo": ("sudo",),
    "su": ("su",),
    "systemd-logind": ("systemd-logind",),
    "pam": ("pam_unix",),
    **{p: (p,) for p in ("useradd", "groupadd", "usermod", "userdel", "groupdel", "gpasswd", "passwd", "chpasswd")},
}
ACTION_NEEDLES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("sshd", "ssh_login"): ("Accepted ", "Failed "),  # LOGIN, via _SSHD_WORDS and syslog._fast
    ("sshd", "invalid_user"): ("Invalid user ", "Illegal user "),  # INVALID
    ("sshd", "negotiation_failed"): ("Unable to negotiate",),
    ("sshd", "protocol_mismatch"): ("Protocol major versions differ", "Bad protocol version"),
}
