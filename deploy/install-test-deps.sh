#!/usr/bin/env bash
# Installs the Debian packages that the integration tests drive for real, when they are missing.
# Needs root (CI and the dev machines run as root); elsewhere it says what is missing and continues.
set -u
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
command -v sec >/dev/null || need+=(sec)
command -v logger >/dev/null || need+=(bsdutils)
command -v openssl >/dev/null || need+=(openssl)
# Alertmanager: tests/test_alert_alertmanager.py posts alerts to a real one and checks its silences
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
# rsyslog's OpenSSL stream driver: tests/test_syslog_tls.py forwards from rsyslogd to siem over TLS
compgen -G "/usr/lib/*/rsyslog/lmnsd_ossl.so" >/dev/null || need+=(rsyslog-openssl)
# rsyslog's RELP output (omrelp, the real RELP client): tests/test_relp.py forwards from rsyslogd to siem
compgen -G "/usr/lib/*/rsyslog/omrelp.so" >/dev/null || need+=(rsyslog-relp)
# systemd-analyze (verify, security) and systemd-sysusers for tests/test_deploy_systemd.py
command -v systemd-analyze >/dev/null && command -v systemd-sysusers >/dev/null || need+=(systemd)
# systemd-journal-remote writes the real journal files that tests/test_journald.py follows with journalctl
[ -x /lib/systemd/systemd-journal-remote ] || [ -x /usr/lib/systemd/systemd-journal-remote ] || need+=(systemd-journal-remote)
# auditd (auditd -n, auditctl, ausearch): tests/test_auditd_live.py runs a real audit daemon
command -v auditctl >/dev/null || [ -x /usr/sbin/auditctl ] || [ -x /sbin/auditctl ] || need+=(auditd)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: not root; missing Debian packages: ${need[*]} (tests that need them will fail)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# --no-install-recommends keeps prometheus from pulling in a web UI; policy-rc.d keeps services from starting.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
rm -f /usr/sbin/policy-rc.d
