"""Linux audit (auditd) events: the records of one event, joined by serial, mapped to ECS.

Input: one or more ``audit.log`` lines (LF-separated) that share one event id
``msg=audit(<seconds>.<ms>:<serial>)``, as the ``auditd`` input emits them (siem.collect.auditd). A plain
``files`` input with ``format = "auditd"`` hands over single lines; each then becomes its own event.
Lines whose id differs from the first line's are still read (a second event in one record is not
expected) and noted in ``error.message``.

A line is ``[node=<host> ]type=<TYPE> msg=audit(<s>.<ms>:<serial>): <fields>`` with, in auditd's
``log_format = ENRICHED``, a GS (``\\x1d``) and the interpreted fields (``UID="root" SYSCALL=execve``).
Field values are ``"quoted"`` (taken as they are), unquoted tokens, or, for fields that carry untrusted
text (``proctitle``, ``a0``.., ``name``, ``cwd``, ``exe``, ``comm``, ``acct``, ``key``, ``cmd``...), an
unquoted hex string the kernel writes when the text holds a space, a quote or a control byte: those are
decoded (UTF-8, invalid bytes replaced). ``proctitle`` separates arguments with NUL; ``key`` joins
several keys with ``\\x01``; long ``EXECVE`` arguments come in pieces (``a1_len=`` ``a1[0]=`` ..).
User-space records (USER_LOGIN, USER_AUTH, USER_CMD, ADD_USER, CRED_*, SERVICE_START...) carry
their own fields inside ``msg='...'``; those are read like the others.

ECS mapping (field -> source):

    @timestamp                  the event id's time (ms)
    event.dataset               "auditd";  event.module "auditd";  event.kind "event"
    event.action                the syscall name for syscall events (execve, openat, connect...),
                                otherwise the main record type in lower case (user_login, add_user)
    event.category / event.type per record type and syscall (process/start, file/change,
                                authentication/start, iam/user, session, configuration...)
    event.outcome               success / failure from success=yes|no or res=success|failed|1|0
    process.executable, .name   exe, comm (or the executable's base name)
    process.pid, .parent.pid    pid, ppid
    process.args, .args_count   EXECVE a0.. (a list of strings), argc
    process.command_line        the EXECVE arguments joined by spaces, else the decoded proctitle
    process.title               the decoded proctitle (NULs as spaces)
    process.working_directory   CWD cwd
    user.id / user.name         uid / its name (ENRICHED UID=); for user-space records the account
                                they are about (id= / acct=), and the writer's uid as process.user.*
    user.effective.id / .name   euid / EUID=;  group.id gid
    user.audit.id / .name       auid / AUID= (the login user; unset = 4294967295 is left out)
    file.path                   the PATH record that names the object (not the PARENT item;
                                relative names joined to the cwd), file.inode, file.mode
    source.ip / source.address  addr= (an IP) / hostname= of user-space records
    host.name                   node= when auditd writes one, else the input's host
    auditd.*                    serial, record_type, types (all record types, in order), syscall,
                                arch, exit, session, key, tty, terminal, op, uid, auid, res and
                                the remaining fields of the main record
    event.original              the raw lines
"""

from __future__ import annotations

import os
import re
from typing import Final

from siem.parse.base import ParseContext, clip, error_event, ip_or_none, note
from siem.schema import Event

_LINE: Final = re.compile(
    r"(?:node=(?P<node>\S+) )?type=(?P<type>[A-Z0-9_]+) msg=audit\((?P<sec>\d+)\.(?P<ms>\d+):(?P<serial>\d+)\):\s?(?P<body>.*)",
    re.S)
_KV: Final = re.compile(r"""([A-Za-z0-9_\-\[\]]+)=("[^"]*"|'[^']*'|\S*)""")
_OP: Final = re.compile(r"(?:^| )op=(.*?)(?= [A-Za-z0-9_-]+=|$)")
_HEX: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")
GS: Final = "\x1d"
UNSET_ID: Final = "4294967295"

# Fields the kernel and libaudit write as hex when the text needs it (audit_log_untrustedstring and
# libaudit's audit_encode_value): an unquoted value of these is hex, a quoted one is plain text.
_ENCODED: Final = frozenset({
    "proctitle", "name", "cwd", "exe", "comm", "acct", "key", "cmd", "data", "path", "new", "old", "file",
    "dir", "ocomm", "grp", "new_group", "old_group", "vm", "watch", "subj", "obj", "id_name",
})
_SKIP_HEX: Final = frozenset({"(null)", "?", "(none)", ""})

# Record types numbered 1100-1199 and 2100-2999 come from user space; they stand alone (no SYSCALL).
_SYSCALL_CATEGORY: Final[dict[str, tuple[str, str]]] = {
    "execve": ("process", "start"), "execveat": ("process", "start"),
    "open": ("file", "access"), "openat": ("file", "access"), "openat2": ("file", "access"),
    "creat": ("file", "creation"), "truncate": ("file", "change"), "ftruncate": ("file", "change"),
    "unlink": ("file", "deletion"), "unlinkat": ("file", "deletion"), "rmdir": ("file", "deletion"),
    "rename": ("file", "change"), "renameat": ("file", "change"), "renameat2": ("file", "change"),
    "chmod": ("file", "change"), "fchmod": ("file", "change"), "fchmodat": ("file", "change"),
    "chown": ("file", "change"), "fchown": ("file", "change"), "fchownat": ("file", "change"),
    "lchown": ("file", "change"), "setxattr": ("file", "change"), "link": ("file", "creation"),
    "linkat": ("file", "creation"), "symlink": ("file", "creation"), "symlinkat": ("file", "creation"),
    "mkdir": ("file", "creation"), "mkdirat": ("file", "creation"), "mknod": ("file", "creation"),
    "connect": ("network", "connection"), "bind": ("network", "start"), "accept": ("network", "connection"),
    "accept4": ("network", "connection"), "listen": ("network", "start"),
    "init_module": ("driver", "start"), "finit_module": ("driver", "start"), "delete_module": ("driver", "end"),
    "ptrace": ("process", "access"), "kill": ("process", "end"), "tkill": ("process", "end"),
    "setuid": ("iam", "change"), "setreuid": ("iam", "change"), "setresuid": ("iam", "change"),
    "mount": ("configuration", "change"), "umount2": ("configuration", "change"),
    "sethostname": ("configuration", "change"), "settimeofday": ("configuration", "change"),
    "clock_settime": ("configuration", "change"), "adjtimex": ("configuration", "change"),
}
# x86_64 numbers of the syscalls above and a few more, for logs written without ENRICHED interpretation
_X86_64: Final[dict[str, str]] = {
    "0": "read", "1": "write", "2": "open", "4": "stat", "9": "mmap", "41": "socket", "42": "connect",
    "43": "accept", "44": "sendto", "49": "bind", "50": "listen", "56": "clone", "57": "fork", "59": "execve",
    "62": "kill", "76": "truncate", "77": "ftruncate", "82": "rename", "83": "mkdir", "84": "rmdir",
    "85": "creat", "86": "link", "87": "unlink", "88": "symlink", "90": "chmod", "91": "fchmod",
    "92": "chown", "93": "fchown", "94": "lchown", "101": "ptrace", "105": "setuid", "113": "setreuid",
    "117": "setresuid", "133": "mknod", "159": "adjtimex", "164": "settimeofday", "165": "mount",
    "166": "umount2", "170": "sethostname", "175": "init_module", "176": "delete_module", "188": "setxattr",
    "200": "tkill", "227": "clock_settime", "257": "openat", "258": "mkdirat", "259": "mknodat",
    "260": "fchownat", "263": "unlinkat", "264": "renameat", "265": "linkat", "266": "symlinkat",
    "268": "fchmodat", "288": "accept4", "313": "finit_module", "316": "renameat2", "322": "execveat",
    "437": "openat2",
}
_TYPE_CATEGORY: Final[dict[str, tuple[str, str]]] = {
    "LOGIN": ("session", "start"), "USER_AUTH": ("authentication", "info"), "USER_LOGIN": ("authentication", "start"),
    "USER_LOGOUT": ("authentication", "end"), "USER_ERR": ("authentication", "info"),
    "USER_ACCT": ("authentication", "info"), "USER_MGMT": ("iam", "change"),
    "CRED_ACQ": ("authentication", "info"), "CRED_DISP": ("authentication", "info"),
    "CRED_REFR": ("authentication", "info"), "USER_START": ("session", "start"),
    "USER_END": ("session", "end"), "USER_CMD": ("process", "start"), "USER_CHAUTHTOK": ("iam", "change"),
    "ADD_USER": ("iam", "creation"), "DEL_USER": ("iam", "deletion"), "ADD_GROUP": ("iam", "creation"),
    "DEL_GROUP": ("iam", "deletion"), "GRP_MGMT": ("iam", "change"), "ACCT_LOCK": ("iam", "change"),
    "ACCT_UNLOCK": ("iam", "change"), "USER_ROLE_CHANGE": ("iam", "change"), "ROLE_ASSIGN": ("iam", "change"),
    "SERVICE_START": ("process", "start"), "SERVICE_STOP": ("process", "end"),
    "SYSTEM_BOOT": ("host", "start"), "SYSTEM_SHUTDOWN": ("host", "end"), "SYSTEM_RUNLEVEL": ("host", "change"),
    "CONFIG_CHANGE": ("configuration", "change"), "DAEMON_START": ("process", "start"),
    "DAEMON_END": ("process", "end"), "DAEMON_CONFIG": ("configuration", "change"),
    "DAEMON_ROTATE": ("configuration", "info"), "DAEMON_ABORT": ("process", "end"),
    "ANOM_PROMISCUOUS": ("network", "change"), "ANOM_ABEND": ("process", "end"),
    "AVC": ("intrusion_detection", "denied"), "SELINUX_ERR": ("intrusion_detection", "denied"),
    "APPARMOR_DENIED": ("intrusion_detection", "denied"), "KERN_MODULE": ("driver", "start"),
    "NETFILTER_CFG": ("configuration", "change"), "TTY": ("process", "info"), "USER_TTY": ("process", "info"),
}
# Records that only add detail to a SYSCALL event: never the event's main record.
_AUX: Final = frozenset({
    "EXECVE", "CWD", "PATH", "PROCTITLE", "EOE", "SOCKADDR", "BPRM_FCAPS", "CAPSET", "MMAP", "FD_PAIR",
    "OBJ_PID", "IPC", "SOCKETCALL", "NETFILTER_PKT", "KERN_MODULE", "TIME_INJOFFSET", "TIME_ADJNTPVAL",
})


def is_standalone(record_type: str, type_number: int | None = None) -> bool:
    """Whether a record of this type is an event by itself (user-space and daemon records): the
    collector emits those at once instead of waiting for the rest of an event."""
    if type_number is not None:
        return 1100 <= type_number <= 1299 or 2100 <= type_number <= 2999
    return (record_type.startswith(("USER_", "CRED_", "DAEMON_", "ACCT_", "GRP_", "ROLE_", "SYSTEM_",
                                    "SERVICE_", "ANOM_LOGIN", "ANOM_ADD_ACCT", "ANOM_DEL_ACCT", "ANOM_MOD_ACCT"))
            or record_type in ("ADD_USER", "DEL_USER", "ADD_GROUP", "DEL_GROUP", "CHGRP_ID",
                               "CHUSER_ID", "TRUSTED_APP", "LABEL_OVERRIDE", "SOFTWARE_UPDATE"))


def event_id(line: str) -> str | None:
    """``"<seconds>.<ms>:<serial>"`` of an audit line, or None when the line is not an audit record."""
    i = line.find("msg=audit(")
    if i < 0:
        return None
    j = line.find(")", i + 10)
    return line[i + 10:j] if j > 0 else None


def record_type(line: str) -> str:
    """The ``type=`` of an audit line ('' when it has none)."""
    i = line.find("type=")
    if i < 0:
        return ""
    j = line.find(" ", i)
    return line[i + 5:j if j > 0 else len(line)]


def _hex(value: str) -> str | None:
    if len(value) % 2 or _HEX.fullmatch(value) is None:
        return None
    return bytes.fromhex(value).decode("utf-8", "replace")


def _fields(body: str) -> tuple[dict[str, str], dict[str, str]]:
    """The raw fields of one record body and its ENRICHED interpretations (values decoded)."""
    enriched: dict[str, str] = {}
    if GS in body:
        body, _, extra = body.partition(GS)
        for k, v in _KV.findall(extra):
            enriched[k] = v[1:-1] if v[:1] == '"' and v[-1:] == '"' and len(v) >= 2 else v
    out: dict[str, str] = {}
    for k, v in _KV.findall(body):
        if v[:1] == "'" and v[-1:] == "'" and len(v) >= 2 and k == "msg":  # user-space record: its own fields
            inner = v[1:-1]
            for k2, v2 in _KV.findall(inner):
                out.setdefault(k2, _value(k2, v2))
            op = _OP.search(inner)  # shadow-utils writes op=adding user (a value with spaces)
            if op is not None:
                out["op"] = op.group(1)
            continue
        out[k] = _value(k, v)
    return out, enriched


def _value(key: str, v: str) -> str:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    if v in _SKIP_HEX:
        return v
    base = key.split("[", 1)[0]
    if base in _ENCODED or (base[:1] == "a" and base[1:].isdigit()):
        decoded = _hex(v)
        if decoded is not None:
            return decoded
    return v


def _outcome(fields: dict[str, str]) -> str | None:
    s = fields.get("success") or fields.get("res") or fields.get("result")
    if s in ("yes", "success", "1"):
        return "success"
    if s in ("no", "failed", "fail", "failure", "0"):
        return "failure"
    return None


def parse_auditd(text: str, ctx: ParseContext) -> Event:
    """The ECS event of the audit records in `text` (see the module docstring)."""
    records: list[tuple[str, dict[str, str], dict[str, str]]] = []
    ev: Event = {"event.original": text, "event.dataset": "auditd", "event.module": "auditd", "event.kind": "event"}
    first: tuple[str, str, str] | None = None
    node: str | None = None
    problems: list[str] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            problems.append(f"line {n}: not an audit record: {clip(line, 80)!r}")
            continue
        key = (m["sec"], m["ms"], m["serial"])
        if first is None:
            first = key
            node = m["node"]
        elif key != first:
            problems.append(f"line {n}: record of event {key[0]}.{key[1]}:{key[2]} mixed into event "
                            f"{first[0]}.{first[1]}:{first[2]}")
        fields, enriched = _fields(m["body"])
        records.append((m["type"], fields, enriched))
    if first is None:
        return error_event(text, "auditd", "auditd: no audit record (expected 'type=... msg=audit(...)')", ctx)
    ev["@timestamp"] = int(first[0]) * 1000 + int(first[1].ljust(3, "0")[:3])
    ev["auditd.serial"] = first[2]
    ev["auditd.types"] = [t for t, _, _ in records]
    if node:
        ev["host.name"] = node
    elif ctx.host:
        ev["host.name"] = ctx.host
    _map(ev, records)
    for p in problems:
        note(ev, p)
    return ev


def _map(ev: Event, records: list[tuple[str, dict[str, str], dict[str, str]]]) -> None:
    by_type: dict[str, list[tuple[dict[str, str], dict[str, str]]]] = {}
    for t, f, e in records:
        by_type.setdefault(t, []).append((f, e))
    sc = next(((f, e) for t, f, e in records if t == "SYSCALL"), None)
    kind = next(((t, f, e) for t, f, e in records if t not in _AUX and t != "SYSCALL"), None)
    if kind is not None:  # LOGIN, CONFIG_CHANGE, AVC...: the record that says what happened
        mtype, mf, me = kind
        if sc is not None:  # the process fields come from the SYSCALL record
            mf = {**sc[0], **mf}
            me = {**sc[1], **me}
    elif sc is not None:
        mtype, (mf, me) = "SYSCALL", sc
    else:
        mtype, mf, me = records[0]
    ev["auditd.record_type"] = mtype
    syscall = None
    if sc is not None:
        number = sc[0].get("syscall", "")
        syscall = sc[1].get("SYSCALL") or (number if number and not number.isdigit() else None)
        if syscall is None and sc[0].get("arch") in (None, "c000003e"):
            syscall = _X86_64.get(number)
        syscall = syscall or f"syscall_{number or '?'}"
        ev["auditd.syscall"] = syscall
        if "arch" in sc[0]:
            ev["auditd.arch"] = sc[1].get("ARCH", sc[0]["arch"])
        if "exit" in sc[0]:
            ev["auditd.exit"] = sc[0]["exit"]
    if mtype == "SYSCALL":
        ev["event.action"] = syscall
        cat = _SYSCALL_CATEGORY.get(syscall or "")
    else:
        ev["event.action"] = mtype.lower()
        cat = _TYPE_CATEGORY.get(mtype)
    if cat is not None:
        ev["event.category"], ev["event.type"] = cat
    outcome = _outcome(mf)
    if outcome is not None:
        ev["event.outcome"] = outcome
    _process(ev, mf, me, by_type)
    _users(ev, mf, me, is_standalone(mtype))
    _paths(ev, by_type, syscall, sc[0] if sc is not None else None)
    _sockaddr(ev, by_type, syscall)
    for k in ("ses", "key", "tty", "terminal", "op", "res", "auid", "uid", "success"):
        v = mf.get(k)
        if v is None or v in ("(null)", "?", "(none)"):
            continue
        if k == "ses":
            if v != UNSET_ID:
                ev["auditd.session"] = v
        elif k == "key":
            keys = [x for x in v.split("\x01") if x]
            if keys:
                ev["auditd.key"] = keys[0]
                if len(keys) > 1:
                    ev["auditd.keys"] = keys
        else:
            ev[f"auditd.{k}"] = v
    for k, v in mf.items():  # the rest of the main record, for rules that need a field we do not map
        name = f"auditd.data.{k}"
        if k not in _MAPPED and name not in ev:
            ev[name] = v
    addr = mf.get("addr") or mf.get("saddr_ip")
    if addr and addr not in ("?", "(none)"):
        ip = ip_or_none(addr)
        if ip is not None:
            ev["source.ip"] = ip
    hostname = mf.get("hostname")
    if hostname and hostname not in ("?", "(none)") and "source.ip" not in ev:
        ip = ip_or_none(hostname)
        if ip is not None:
            ev["source.ip"] = ip
        else:
            ev["source.address"] = hostname


_MAPPED: Final = frozenset({
    "arch", "syscall", "success", "exit", "ppid", "pid", "auid", "uid", "gid", "euid", "ses", "comm", "exe",
    "key", "tty", "terminal", "op", "res", "acct", "addr", "hostname", "msg", "items", "cmd", "id",
})


def _process(ev: Event, mf: dict[str, str], me: dict[str, str],
             by_type: dict[str, list[tuple[dict[str, str], dict[str, str]]]]) -> None:
    exe = mf.get("exe")
    if exe and exe not in ("?", "(null)"):
        ev["process.executable"] = exe
    comm = mf.get("comm")
    if comm and comm not in ("?", "(null)"):
        ev["process.name"] = comm
    elif exe and exe not in ("?", "(null)"):
        ev["process.name"] = os.path.basename(exe)
    for k, field in (("pid", "process.pid"), ("ppid", "process.parent.pid")):
        v = mf.get(k, "")
        if v.isdigit():
            ev[field] = int(v)
    execve = by_type.get("EXECVE")
    if execve:
        ef = execve[0][0]
        args: list[str] = []
        i = 0
        while True:
            a = ef.get(f"a{i}")
            if a is None:
                if f"a{i}_len" not in ef:
                    break
                parts = []
                j = 0
                while f"a{i}[{j}]" in ef:
                    parts.append(ef[f"a{i}[{j}]"])
                    j += 1
                a = "".join(parts)
            args.append(a)
            i += 1
        ev["process.args"] = args
        argc = ef.get("argc", "")
        ev["process.args_count"] = int(argc) if argc.isdigit() else len(args)
        ev["process.command_line"] = " ".join(args)
    proctitle = by_type.get("PROCTITLE")
    if proctitle:
        title = proctitle[0][0].get("proctitle", "").replace("\x00", " ").strip()
        if title and title != "(null)":
            ev["process.title"] = title
            ev.setdefault("process.command_line", title)
    cmd = mf.get("cmd")  # USER_CMD: the command run through sudo
    if cmd:
        ev["process.command_line"] = cmd
    cwd = by_type.get("CWD")
    if cwd and cwd[0][0].get("cwd"):
        ev["process.working_directory"] = cwd[0][0]["cwd"]
    elif mf.get("cwd"):
        ev["process.working_directory"] = mf["cwd"]


def _users(ev: Event, mf: dict[str, str], me: dict[str, str], userspace: bool) -> None:
    """Kernel records: uid/euid/auid are the process's users. User-space records (a login, sudo, useradd)
    are about the account in acct= / id=; the uid of the program that wrote them is process.user."""
    for k, field in (("uid", "process.user" if userspace else "user"), ("euid", "user.effective"),
                     ("auid", "user.audit")):
        v = mf.get(k)
        if v is None or not v.isdigit() or (k == "auid" and v == UNSET_ID):
            continue
        ev[f"{field}.id"] = v
        name = me.get(k.upper())
        if name and not name.startswith("unknown(") and name != "unset":
            ev[f"{field}.name"] = name
    gid = mf.get("gid")
    if gid and gid.isdigit():
        ev["group.id"] = gid
        if me.get("GID"):
            ev["group.name"] = me["GID"]
    acct = mf.get("acct")  # user-space records: the account acted on (login, sudo target, new user)
    if acct and acct not in ("?", "(unknown)", "(invalid user)"):
        if ev.get("event.category") == "iam":
            ev["user.target.name"] = acct
        else:
            ev["user.name"] = acct
    uid_target = mf.get("id")
    if uid_target and uid_target.isdigit() and userspace:
        side = "user.target" if ev.get("event.category") == "iam" else "user"
        ev[f"{side}.id"] = uid_target
        name = me.get("ID")
        if name and not name.startswith("unknown("):
            ev.setdefault(f"{side}.name", name)


def _sockaddr(ev: Event, by_type: dict[str, list[tuple[dict[str, str], dict[str, str]]]], syscall: str | None) -> None:
    """SOCKADDR (hex struct sockaddr): destination.ip/port of a connect or sendto, source of a bind or
    accept; a unix socket's path as auditd.socket.path."""
    recs = by_type.get("SOCKADDR")
    if not recs:
        return
    raw = recs[0][0].get("saddr", "")
    try:
        b = bytes.fromhex(raw)
    except ValueError:
        return
    if len(b) < 2:
        return
    family = int.from_bytes(b[:2], "little")
    side = "source" if syscall in ("bind", "accept", "accept4", "listen") else "destination"
    if family == 2 and len(b) >= 8:
        ev[f"{side}.ip"] = ".".join(str(x) for x in b[4:8])
        ev[f"{side}.port"] = int.from_bytes(b[2:4], "big")
        ev["network.type"] = "ipv4"
    elif family == 10 and len(b) >= 24:
        ip = ip_or_none(":".join(b[8:24].hex()[i:i + 4] for i in range(0, 32, 4)))
        if ip is not None:
            ev[f"{side}.ip"] = ip
            ev[f"{side}.port"] = int.from_bytes(b[2:4], "big")
            ev["network.type"] = "ipv6"
    elif family == 1:
        path = b[2:].split(b"\0", 1)[0] or b"@" + b[3:].split(b"\0", 1)[0]  # abstract: leading NUL
        ev["auditd.socket.path"] = path.decode("utf-8", "replace")


_O_WRITE: Final = 0o1 | 0o2 | 0o1000 | 0o2000  # O_WRONLY, O_RDWR, O_TRUNC, O_APPEND


def _paths(ev: Event, by_type: dict[str, list[tuple[dict[str, str], dict[str, str]]]], syscall: str | None,
           sc: dict[str, str] | None = None) -> None:
    open_flags = None
    arg = {"open": "a1", "openat": "a2", "creat": None}.get(syscall or "", "")
    if sc is not None and arg:
        try:
            open_flags = int(sc.get(arg, ""), 16)
        except ValueError:
            open_flags = None
    paths = by_type.get("PATH")
    if not paths:
        return
    cwd = str(ev.get("process.working_directory", ""))
    parent = next((f.get("name", "") for f, _ in paths if f.get("nametype") == "PARENT"), "")
    chosen = None
    for f, _ in paths:
        if f.get("nametype") in ("PARENT", "UNKNOWN"):
            continue
        if syscall in ("execve", "execveat") and f.get("item") != "0":
            continue  # the loader (ld.so) is item 1; the program is item 0
        chosen = f
        break
    if chosen is None:
        chosen = paths[0][0]
    name = chosen.get("name")
    if not name or name in ("(null)", "?"):
        return
    if not name.startswith("/"):  # relative to the directory of a *at() call (its PARENT item) or the cwd
        base = parent if parent.startswith("/") else cwd
        if base.startswith("/"):
            name = os.path.normpath(os.path.join(base, name))
    if ev.get("event.category") == "file":
        nametype = chosen.get("nametype")
        if nametype == "CREATE":
            ev["event.type"] = "creation"
        elif nametype == "DELETE":
            ev["event.type"] = "deletion"
        elif open_flags is not None and open_flags & _O_WRITE:
            ev["event.type"] = "change"  # opened for writing, appending or truncation
    ev["file.path"] = name
    ev["file.name"] = os.path.basename(name)
    if chosen.get("inode", "").isdigit():
        ev["file.inode"] = chosen["inode"]
    if chosen.get("mode"):
        ev["file.mode"] = chosen["mode"]
    if chosen.get("nametype"):
        ev["auditd.nametype"] = chosen["nametype"]


# --- joining lines into events ---------------------------------------------------------------------


class EventAssembler:
    """Joins audit.log lines into events by their id; the one place that decides when an event is complete.

    ``add(line)`` returns the events the line completes, oldest first, as ``(eid, lines, end)``; ``end`` says
    why: ``standalone`` (a user-space or daemon record), ``proctitle`` / ``eoe`` (the kernel's last records
    of a syscall event; auditd does not write EOE to its log), ``newer_serial`` (a record of a newer event
    arrived and this one has no SYSCALL record, so nothing more belongs to it), ``oversized`` (over
    ``max_event_bytes``), ``overflow`` (more than ``max_pending`` open events: the oldest goes),
    ``not_audit`` (a line that is no audit record, alone), ``late`` (a record of an event already
    completed; a late EOE is dropped). ``expire(older_than)`` completes events that began before a time
    (``timeout``); ``flush()`` completes all (the end of a file in replay). Events are kept in the order
    of their first line; ``open_ids()`` lists them so. Pure: no clock, no I/O.
    """

    def __init__(self, max_pending: int = 1000, max_event_bytes: int = 1024 * 1024) -> None:
        self.max_pending = max_pending
        self.max_event_bytes = max_event_bytes
        self._open: dict[str, tuple[list[bytes], list[int]]] = {}  # eid -> (lines, [size, has_syscall, t0])
        self._recent: dict[str, None] = {}

    def open_ids(self) -> list[str]:
        return list(self._open)

    def add(self, line: bytes, now: int = 0) -> list[tuple[str, list[bytes], str]]:
        head = line[:200].decode("utf-8", "replace")
        eid = event_id(head)
        if eid is None:
            return [("", [line], "not_audit")]
        rtype = record_type(head)
        out: list[tuple[str, list[bytes], str]] = []
        entry = self._open.get(eid)
        if entry is None:
            if eid in self._recent:
                return [] if rtype == "EOE" else [(eid, [line], "late")]
            serial = _serial_of(eid)
            for other in [o for o, (_, m) in self._open.items() if not m[1] and _serial_of(o) < serial]:
                out.append(self._done(other, "newer_serial"))
            if rtype == "EOE":
                return out
            if is_standalone(rtype):
                self._remember(eid)
                out.append((eid, [line], "standalone"))
                return out
            entry = self._open[eid] = ([], [0, 0, now])
        if rtype == "EOE":
            out.append(self._done(eid, "eoe"))
            return out
        entry[0].append(line)
        entry[1][0] += len(line) + 1
        if rtype == "SYSCALL":
            entry[1][1] = 1
        if rtype == "PROCTITLE":
            out.append(self._done(eid, "proctitle"))
        elif entry[1][0] > self.max_event_bytes:
            out.append(self._done(eid, "oversized"))
        elif len(self._open) > self.max_pending:
            out.append(self._done(next(iter(self._open)), "overflow"))
        return out

    def expire(self, older_than: int) -> list[tuple[str, list[bytes], str]]:
        return [self._done(e, "timeout") for e, (_, m) in list(self._open.items()) if m[2] < older_than]

    def flush(self) -> list[tuple[str, list[bytes], str]]:
        return [self._done(e, "end") for e in list(self._open)]

    def _done(self, eid: str, end: str) -> tuple[str, list[bytes], str]:
        lines, _ = self._open.pop(eid)
        self._remember(eid)
        return eid, lines, end

    def _remember(self, eid: str) -> None:
        self._recent[eid] = None
        if len(self._recent) > 4096:
            for k in list(self._recent)[:2048]:
                del self._recent[k]


def _serial_of(eid: str) -> int:
    _, _, s = eid.rpartition(":")
    return int(s) if s.isdigit() else 0


def join_lines(lines: list[bytes] | object, assembler: EventAssembler | None = None) -> list[bytes]:
    """Whole events (lines joined by LF) from audit.log lines, in completion order; open events at the end
    are completed too (for replay of a finished file)."""
    asm = assembler or EventAssembler()
    out = [b"\n".join(ls) for _, ls, _ in (ev for ln in lines for ev in asm.add(ln)) if ls]  # type: ignore[attr-defined]
    if assembler is None:
        out += [b"\n".join(ls) for _, ls, _ in asm.flush() if ls]
    return out
