"""Deterministic generators of realistic log workloads (seeded; same arguments, same bytes).

    sshd_lines(n, seed, sources, attackers)        RFC 3164 auth log: sshd/sudo/cron, brute-force bursts
    nginx_lines(n, seed, clients, scanners)        nginx combined access log with scans and injections
    cloudtrail_lines(n, seed, principals)          CloudTrail records, one JSON object per line
    window_key_events(n)                           n parsed sshd failures from n distinct sources

The line shapes are those of real logs in /work/shared/datasets (loghub/OpenSSH_2k.log,
elastic_examples/suspicious_login_auth.log, secrepo_access_log, aws_docs_cloudtrail_examples):
same programs, same message texts, same field layout, so the parsers take their ordinary paths.
Time advances realistically: `span_s` seconds (hours) spread over the lines, background events at
random instants, attacks as compact bursts (a brute force is 12-40 attempts 1-3 s apart), so a
5-minute window sees a burst whole, and the file arrival order is the event time order.

Brute-force sources are the only ones with 10 or more "Failed password" lines in the whole sshd file
(background sources fail at most 4 times), so a detector that windows on arrival time (SEC reading the
whole file in a second) and one that windows on event time find the same attacking sources.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
START_MS = int(datetime(2026, 3, 27, 0, 0, 0, tzinfo=UTC).timestamp() * 1000)
# the reference "now" for RFC 3164 year inference: after every generated time
NOW_MS = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp() * 1000)
SEC_REGEX = r"sshd\[\d+\]: Failed password for (?:invalid user )?\S+ from ([0-9.]+) port \d+ ssh2"

USERS = ("root", "admin", "ubuntu", "deploy", "git", "postgres", "oracle", "test", "user", "pi", "jenkins",
         "ftpuser", "support", "guest", "www-data", "backup", "nagios", "mysql", "webmaster", "alice", "bob",
         "carol", "dave", "erin", "fztu", "curi", "hxu", "pgadmin")
STAFF = ("alice", "bob", "carol", "dave", "erin", "ubuntu", "deploy", "fztu", "curi", "hxu")
SUDO_COMMANDS = ("/usr/bin/apt-get update", "/usr/bin/systemctl restart nginx", "/bin/journalctl -u sshd",
                 "/usr/bin/apt-key add -", "/bin/cat /var/log/auth.log", "/usr/bin/dpkg -i filebeat-5.2.2-amd64.deb",
                 "/usr/bin/tail -f /var/log/syslog", "/bin/systemctl status filebeat")


_STAMPS: dict[int, str] = {}


def _stamp3164(ms: int) -> str:
    got = _STAMPS.get(ms // 1000)
    if got is not None:
        return got
    if len(_STAMPS) > 200_000:
        _STAMPS.clear()
    t = time.gmtime(ms // 1000)
    got = _STAMPS[ms // 1000] = f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return got


def _ip(rnd: random.Random) -> str:
    return f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"


def _pool(rnd: random.Random, n: int, avoid: set[str] | None = None) -> list[str]:
    seen = set(avoid or ())
    out: list[str] = []
    while len(out) < n:
        ip = _ip(rnd)
        if ip not in seen:
            seen.add(ip)
            out.append(ip)
    return out


@dataclass(frozen=True, slots=True)
class SshdWorkload:
    lines: list[bytes]
    attackers: frozenset[str]  # sources with a brute-force burst (>= 12 failures within 2 minutes)
    first_ms: int
    last_ms: int


def sshd_lines(n: int, seed: int = 1, sources: int = 50_000, attackers: int = 20, span_s: int = 6 * 3600,
               hosts: int = 8) -> SshdWorkload:
    """n auth-log lines: logins, sessions, disconnects, scanners' invalid users, sudo, cron; with
    `attackers` sources each doing 1-3 compact password brute-force bursts."""
    rnd = random.Random(seed)
    pool = _pool(rnd, sources)
    bad = _pool(rnd, attackers, set(pool))
    host_names = [f"ip-10-77-{20 + i}-{rnd.randrange(2, 250)}" for i in range(hosts)]
    # staff log in from their office / VPN addresses (inside ssh_allowed_networks), rarely from elsewhere
    home = {u: [f"10.{rnd.randrange(1, 40)}.{rnd.randrange(256)}.{rnd.randrange(2, 250)}" for _ in range(3)]
            for u in STAFF}
    span_ms = span_s * 1000
    items: list[tuple[int, int, str]] = []  # (ms, order, "host prog[pid]: message")
    # the bursts first: they take a known share of n
    for ip in bad:
        for _ in range(rnd.choice((1, 1, 2, 3))):
            start = START_MS + rnd.randrange(span_ms - 200_000)
            host = rnd.choice(host_names)
            pid = rnd.randrange(1000, 32000)
            t = start
            for _k in range(rnd.randrange(12, 41)):
                user = rnd.choice(USERS)
                inv = "" if user in STAFF or user == "root" else "invalid user "
                msg = f"Failed password for {inv}{user} from {ip} port {rnd.randrange(1024, 65535)} ssh2"
                items.append((t, len(items), f"{host} sshd[{pid}]: {msg}"))
                t += rnd.randrange(1000, 3001)
    fails: dict[str, int] = {}
    while len(items) < n:
        t = START_MS + rnd.randrange(span_ms)
        host = rnd.choice(host_names)
        pid = rnd.randrange(1000, 32000)
        ip = pool[rnd.randrange(len(pool))]
        user = rnd.choice(USERS)
        port = rnd.randrange(1024, 65535)
        r = rnd.random()
        block: list[str]
        if r < 0.30:  # a failed attempt from a background source (at most 4 per source in the file)
            if fails.get(ip, 0) >= 4:
                continue
            fails[ip] = fails.get(ip, 0) + 1
            if user in STAFF or user == "root":
                block = [f"sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2"]
            else:
                block = [f"sshd[{pid}]: Invalid user {user} from {ip} port {port}",
                         f"sshd[{pid}]: input_userauth_request: invalid user {user} [preauth]",
                         f"sshd[{pid}]: pam_unix(sshd:auth): check pass; user unknown",
                         f"sshd[{pid}]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                         f"tty=ssh ruser= rhost={ip} ",
                         f"sshd[{pid}]: Failed password for invalid user {user} from {ip} port {port} ssh2",
                         f"sshd[{pid}]: Received disconnect from {ip}: 11: Bye Bye [preauth]"]
        elif r < 0.55:  # a staff login and its session
            who = rnd.choice(STAFF)
            if rnd.random() < 0.98:
                ip = rnd.choice(home[who])
            how = "publickey" if rnd.random() < 0.7 else "password"
            tail = " ssh2: RSA SHA256:Kl3kPGZrTiz8gN5O5Yw9Kq2v1Xy7cM0a6sQ4dE8fH2I" if how == "publickey" else " ssh2"
            block = [f"sshd[{pid}]: Accepted {how} for {who} from {ip} port {port}{tail}",
                     f"sshd[{pid}]: pam_unix(sshd:session): session opened for user {who} by (uid=0)",
                     f"systemd-logind[1118]: New session {rnd.randrange(1, 9999)} of user {who}.",
                     f"sshd[{pid}]: Received disconnect from {ip} port {port}:11: disconnected by user",
                     f"sshd[{pid}]: Disconnected from user {who} {ip} port {port}",
                     f"sshd[{pid}]: pam_unix(sshd:session): session closed for user {who}"]
        elif r < 0.70:  # probes that never authenticate
            block = [f"sshd[{pid}]: Connection closed by {ip} port {port} [preauth]"]
            if rnd.random() < 0.3:
                block.insert(0, f"sshd[{pid}]: reverse mapping checking getaddrinfo for "
                                f"host-{ip.replace('.', '-')}.example.net [{ip}] failed - POSSIBLE BREAK-IN ATTEMPT!")
        elif r < 0.85:  # sudo, mostly by the admins
            who = "admin" if rnd.random() < 0.9 else rnd.choice(STAFF)
            block = [f"sudo:   {who} : TTY=pts/{rnd.randrange(4)} ; PWD=/home/{who} ; USER=root ; "
                     f"COMMAND={rnd.choice(SUDO_COMMANDS)}",
                     f"sudo: pam_unix(sudo:session): session opened for user root by {who}(uid=0)",
                     "sudo: pam_unix(sudo:session): session closed for user root"]
        else:  # cron
            cpid = rnd.randrange(1000, 32000)
            block = [f"CRON[{cpid}]: pam_unix(cron:session): session opened for user root by (uid=0)",
                     f"CRON[{cpid}]: (root) CMD (   cd / && run-parts --report /etc/cron.hourly)",
                     f"CRON[{cpid}]: pam_unix(cron:session): session closed for user root"]
        for k, msg in enumerate(block):
            if len(items) >= n:
                break
            items.append((t + k * rnd.randrange(0, 1500), len(items), f"{host} {msg}"))
    items.sort()
    lines = [f"{_stamp3164(t)} {text}".encode() for t, _, text in items]
    return SshdWorkload(lines, frozenset(bad), items[0][0], items[-1][0])


# --- nginx ------------------------------------------------------------------------------------------

PAGES = ("/", "/css/style.css", "/GitHub-Mark.png", "/favicon.ico", "/robots.txt", "/Security-Data-Analysis/",
         "/Security-Data-Analysis/Lab_1/", "/Security-Data-Analysis/Lab_2/", "/Datasets%20Overview/",
         "/datasets/", "/blog/", "/blog/2016/07/honeypot-data/", "/about/", "/js/jquery.min.js",
         "/images/logo.png", "/search?q=zeek+logs", "/feed.xml", "/sitemap.xml")
AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/107.0.0.0 "
          "Safari/537.36",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.1 "
          "Safari/605.1.15",
          "Mozilla/5.0 (X11; Linux x86_64; rv:107.0) Gecko/20100101 Firefox/107.0",
          "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 16_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/16.1 Mobile/15E148 Safari/604.1")
SCAN_PATHS = ("/.env", "/.git/config", "/wp-login.php", "/wp-admin/setup-config.php", "/phpmyadmin/index.php",
              "/admin/config.php", "/.aws/credentials", "/config.json", "/backup.zip", "/db.sql", "/server-status",
              "/.DS_Store", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/cgi-bin/luci", "/HNAP1/",
              "/actuator/health", "/solr/admin/info/system", "/owa/auth/logon.aspx", "/boaform/admin/formLogin")
SCAN_AGENTS = ("Mozilla/5.0 zgrab/0.x", "python-requests/2.28.1", "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
               "curl/7.68.0", "Go-http-client/1.1")
INJECTIONS = ("/index.php?id=1%27%20union%20select%201,2,3--", "/search?q=1' or '1'='1",
              "/download?file=../../../../etc/passwd", "/cgi-bin/test.cgi?cmd=;cat%20/etc/passwd",
              "/api/v1/items?sort=sleep(5)", "/page?lang=..%2f..%2f..%2fetc%2fpasswd")


def _stamp_clf(ms: int) -> str:
    t = time.gmtime(ms // 1000 - 8 * 3600)
    return f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} -0800"


def nginx_lines(n: int, seed: int = 2, clients: int = 20_000, scanners: int = 30, span_s: int = 6 * 3600) -> list[bytes]:
    """n nginx combined-format lines: browsing clients, `scanners` sources sweeping 40-150 missing
    paths each within minutes, a few answered injection attempts, one burst of 5xx."""
    rnd = random.Random(seed)
    pool = _pool(rnd, clients)
    scan_ips = _pool(rnd, scanners, set(pool))
    span_ms = span_s * 1000
    items: list[tuple[int, int, str]] = []

    def add(t: int, ip: str, method: str, path: str, status: int, size: int, ref: str, ua: str) -> None:
        items.append((t, len(items), f'{ip} - - [{_stamp_clf(t)}] "{method} {path} HTTP/1.1" {status} {size} '
                                     f'"{ref}" "{ua}"'))

    for ip in scan_ips:
        t = START_MS + rnd.randrange(span_ms - 600_000)
        ua = rnd.choice(SCAN_AGENTS)
        for k in range(rnd.randrange(40, 151)):
            path = SCAN_PATHS[k] if k < len(SCAN_PATHS) else f"/{rnd.choice(('admin', 'old', 'bak', 'test'))}{k}.php"
            add(t, ip, "GET", path, 404, 162, "-", ua)
            t += rnd.randrange(50, 2000)
        if rnd.random() < 0.3:
            add(t, ip, "GET", rnd.choice(INJECTIONS), 200, rnd.randrange(500, 9000), "-", ua)
    t5 = START_MS + span_ms // 2
    for k in range(80):  # the backend fell over for a minute
        add(t5 + k * 700, pool[rnd.randrange(len(pool))], "GET", rnd.choice(PAGES), 502, 166, "-", rnd.choice(AGENTS))
    while len(items) < n:
        t = START_MS + rnd.randrange(span_ms)
        ip = pool[rnd.randrange(len(pool))]
        ua = rnd.choice(AGENTS)
        # a page view: the page, then a few assets with the page as referrer
        page = rnd.choice(PAGES[:12] + ("/Security-Data-Analysis/", "/"))
        r = rnd.random()
        status = 200 if r < 0.8 else 301 if r < 0.88 else 304 if r < 0.95 else 404
        add(t, ip, "GET", page, status, rnd.randrange(300, 20000) if status == 200 else 0 if status == 304 else 438,
            "-", ua)
        for k in range(rnd.randrange(0, 4)):
            if len(items) >= n:
                break
            asset = rnd.choice(("/css/style.css", "/GitHub-Mark.png", "/js/jquery.min.js", "/images/logo.png",
                                "/favicon.ico"))
            add(t + 50 * (k + 1), ip, "GET", asset, 200, rnd.randrange(1000, 90000),
                f"http://www.secrepo.com{page}", ua)
    items.sort()
    return [text.encode() for _, _, text in items[:n]]


# --- CloudTrail --------------------------------------------------------------------------------------

ROUTINE = (  # (eventSource, eventName, readOnly, requestParameters maker)
    ("s3.amazonaws.com", "GetObject", True, lambda r: {"bucketName": f"app-data-{r.randrange(6)}",
                                                       "key": f"exports/{r.randrange(10**6)}.csv.gz"}),
    ("s3.amazonaws.com", "PutObject", False, lambda r: {"bucketName": f"app-data-{r.randrange(6)}",
                                                        "key": f"uploads/{r.randrange(10**6)}.json"}),
    ("ec2.amazonaws.com", "DescribeInstances", True, lambda r: {"instancesSet": {}, "filterSet": {}}),
    ("sts.amazonaws.com", "AssumeRole", True, lambda r: {"roleArn": f"arn:aws:iam::111122223333:role/app-{r.randrange(20)}",
                                                         "roleSessionName": f"s-{r.randrange(10**6)}"}),
    ("kms.amazonaws.com", "Decrypt", True, lambda r: {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
    ("logs.amazonaws.com", "PutLogEvents", False, lambda r: {"logGroupName": f"/aws/lambda/fn-{r.randrange(40)}"}),
    ("dynamodb.amazonaws.com", "GetItem", True, lambda r: {"tableName": f"orders-{r.randrange(3)}"}),
    ("lambda.amazonaws.com", "Invoke", False, lambda r: {"functionName": f"fn-{r.randrange(40)}"}),
    ("iam.amazonaws.com", "GetUser", True, lambda r: None),
    ("ec2.amazonaws.com", "DescribeSecurityGroups", True, lambda r: {"securityGroupSet": {}}),
)
REGIONS = ("us-east-1", "us-east-1", "us-east-1", "us-east-2", "eu-west-1", "eu-central-1")
CT_AGENTS = ("aws-cli/2.9.8 Python/3.9.11 Linux/5.15.0 exe/x86_64.ubuntu.22 prompt/off command/s3.cp",
             "Boto3/1.26.30 Python/3.10.8 Linux/5.10.157-139.675.amzn2.x86_64 Botocore/1.29.30",
             "aws-sdk-go/1.44.157 (go1.19.4; linux; amd64)", "console.amazonaws.com",
             "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/108.0")


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def cloudtrail_lines(n: int, seed: int = 3, principals: int = 2_000, accounts: int = 5,
                     span_s: int = 6 * 3600) -> list[bytes]:
    """n CloudTrail records (one JSON object per line, the shape of aws_docs_cloudtrail_examples):
    routine API calls by `principals` IAM users and roles, with console-login failure bursts, root
    logins, AccessDenied reconnaissance, StopLogging, a world-open security group and an admin policy."""
    rnd = random.Random(seed)
    accts = [f"{rnd.randrange(10**11, 10**12)}" for _ in range(accounts)]
    people = []
    for i in range(principals):
        acct = accts[i % accounts]
        if i % 3 == 0:
            name = f"svc-{i}"
            people.append({"type": "AssumedRole", "principalId": f"AROA{i:016d}:s-{i}",
                           "arn": f"arn:aws:sts::{acct}:assumed-role/app-{i % 20}/s-{i}", "accountId": acct,
                           "accessKeyId": f"ASIA{i:016d}",
                           "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": f"AROA{i:016d}",
                                                                "arn": f"arn:aws:iam::{acct}:role/app-{i % 20}",
                                                                "accountId": acct, "userName": f"app-{i % 20}"},
                                              "attributes": {"creationDate": "2026-03-27T00:00:00Z",
                                                             "mfaAuthenticated": "false"}}})
        else:
            name = f"user{i}"
            people.append({"type": "IAMUser", "principalId": f"AIDA{i:016d}", "arn": f"arn:aws:iam::{acct}:user/{name}",
                           "accountId": acct, "accessKeyId": f"AKIA{i:016d}", "userName": name})
    ips = _pool(rnd, max(principals // 2, 10))
    span_ms = span_s * 1000
    items: list[tuple[int, int, dict]] = []

    def rec(t: int, who: dict, source: str, name: str, params: object, ro: bool, ip: str, **extra: object) -> None:
        items.append((t, len(items), {
            "eventVersion": "1.08", "userIdentity": who, "eventTime": _iso(t), "eventSource": source,
            "eventName": name, "awsRegion": rnd.choice(REGIONS), "sourceIPAddress": ip,
            "userAgent": rnd.choice(CT_AGENTS), "requestParameters": params, "responseElements": None,
            "requestID": f"{rnd.getrandbits(64):016x}", "eventID": f"{rnd.getrandbits(128):032x}",
            "readOnly": ro, "eventType": "AwsApiCall", "managementEvent": True,
            "recipientAccountId": who["accountId"], "eventCategory": "Management", **extra}))

    attackers = _pool(rnd, 12, set(ips))
    for k, ip in enumerate(attackers):
        t = START_MS + rnd.randrange(span_ms - 900_000)
        acct = accts[k % accounts]
        kind = k % 4
        if kind == 0:  # console password guessing
            for _ in range(rnd.randrange(6, 15)):
                who = {"type": "IAMUser", "principalId": "AIDACKCEVSQ6C2EXAMPLE", "accountId": acct,
                       "accessKeyId": "", "userName": rnd.choice(("admin", "root", "devops", "anaya"))}
                items.append((t, len(items), {
                    "eventVersion": "1.05", "userIdentity": who, "eventTime": _iso(t),
                    "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
                    "sourceIPAddress": ip, "userAgent": CT_AGENTS[4], "errorMessage": "Failed authentication",
                    "requestParameters": None, "responseElements": {"ConsoleLogin": "Failure"},
                    "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home",
                                            "MobileVersion": "No", "MFAUsed": "No"},
                    "eventID": f"{rnd.getrandbits(128):032x}", "eventType": "AwsConsoleSignIn",
                    "recipientAccountId": acct}))
                t += rnd.randrange(5_000, 40_000)
        elif kind == 1:  # stolen key doing reconnaissance
            who = people[rnd.randrange(principals)]
            for _ in range(rnd.randrange(25, 60)):
                src, name, ro, mk = rnd.choice(ROUTINE)
                rec(t, who, src, rnd.choice(("ListUsers", "ListRoles", "ListBuckets", "GetAccountAuthorizationDetails",
                                            "DescribeInstances", "ListSecrets")), mk(rnd), True, ip,
                    errorCode="AccessDenied", errorMessage="User is not authorized to perform this operation")
                t += rnd.randrange(500, 8_000)
        elif kind == 2:  # defence evasion then persistence
            who = people[rnd.randrange(principals)]
            rec(t, who, "cloudtrail.amazonaws.com", "StopLogging",
                {"name": f"arn:aws:cloudtrail:us-east-1:{who['accountId']}:trail/management"}, False, ip)
            rec(t + 4_000, who, "iam.amazonaws.com", "AttachUserPolicy",
                {"userName": "backdoor", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, False, ip)
            rec(t + 9_000, who, "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress",
                {"groupId": f"sg-{rnd.getrandbits(32):08x}", "ipPermissions": {"items": [{
                    "ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
                    "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}}, False, ip)
        else:  # root console use
            root = {"type": "Root", "principalId": acct, "arn": f"arn:aws:iam::{acct}:root", "accountId": acct,
                    "accessKeyId": ""}
            items.append((t, len(items), {
                "eventVersion": "1.05", "userIdentity": root, "eventTime": _iso(t),
                "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
                "sourceIPAddress": ip, "userAgent": CT_AGENTS[4], "requestParameters": None,
                "responseElements": {"ConsoleLogin": "Success"},
                "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home",
                                        "MobileVersion": "No", "MFAUsed": "No"},
                "eventID": f"{rnd.getrandbits(128):032x}", "eventType": "AwsConsoleSignIn",
                "recipientAccountId": acct}))
            rec(t + 60_000, root, "kms.amazonaws.com", "ScheduleKeyDeletion",
                {"keyId": f"arn:aws:kms:us-east-1:{acct}:key/{rnd.getrandbits(128):032x}", "pendingWindowInDays": 7},
                False, ip)
    while len(items) < n:
        t = START_MS + rnd.randrange(span_ms)
        i = rnd.randrange(principals)
        src, name, ro, mk = ROUTINE[min(int(rnd.expovariate(0.45)), len(ROUTINE) - 1)]
        rec(t, people[i], src, name, mk(rnd), ro, ips[i % len(ips)])
    items.sort(key=lambda x: (x[0], x[1]))
    return [orjson.dumps(d) for _, _, d in items[:n]]


def window_key_events(n: int, t0_ms: int = START_MS) -> list[dict]:
    """n parsed sshd failures from n distinct sources within one minute (1M live window keys)."""
    step = max(60_000 // max(n, 1), 0)
    out = []
    for i in range(n):
        out.append({"@timestamp": t0_ms + (i * 60_000) // max(n, 1) if step == 0 else t0_ms + i * step,
                    "event.dataset": "sshd", "event.action": "ssh_login", "event.outcome": "failure",
                    "source.ip": f"{10 + (i >> 24) % 200}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                    "user.name": "root", "host.name": "bastion-1"})
    return out


def write_lines(path: str, lines: list[bytes]) -> int:
    data = b"\n".join(lines) + b"\n"
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
