"""config_from_toml for syslog inputs: defaults, every mistake named by its dotted path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from siem.collect.syslog import SyslogConfig, SyslogServer, config_from_toml
from siem.errors import ConfigError


def load(text: str, where: str = "inputs.syslog") -> tuple[SyslogConfig | None, list[str]]:
    config, issues = config_from_toml(tomllib.loads(text), where)
    return config, [f"{i.code}: {i.message}" for i in issues]


def test_empty_table_gives_udp_defaults() -> None:
    """No keys: UDP on 127.0.0.1:5514, format syslog, 64 KiB messages."""
    assert load("") == (SyslogConfig(), [])


def test_tcp_defaults() -> None:
    """protocol = "tcp": port 5514, 200 connections, 5 minute idle timeout."""
    config, issues = load('protocol = "tcp"')
    assert (config, issues) == (SyslogConfig(protocol="tcp", port=5514, max_connections=200,
                                             idle_timeout_ms=300_000), [])


def test_tls_default_port_and_files(tmp_path: Path) -> None:
    """protocol = "tls": port 6514, cert and key taken, durations parsed."""
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    config, issues = load(f'''
        type = "syslog"
        protocol = "tls"
        address = ["127.0.0.1", "::1"]
        cert_file = "{tmp_path / 'c.pem'}"
        key_file = "{tmp_path / 'k.pem'}"
        ca_file = "{tmp_path / 'ca.pem'}"
        verify_client = true
        permitted_peers = ["relay1.example"]
        handshake_timeout = "5s"
        idle_timeout = "1h"
    ''')
    assert issues == []
    assert config == SyslogConfig(
        protocol="tls", address=("127.0.0.1", "::1"), port=6514, cert_file=str(tmp_path / "c.pem"),
        key_file=str(tmp_path / "k.pem"), ca_file=str(tmp_path / "ca.pem"), verify_client=True,
        permitted_peers=("relay1.example",), handshake_timeout_ms=5000, idle_timeout_ms=3_600_000,
    )


def test_unknown_key_named_by_dotted_path() -> None:
    """A misspelt key is an error naming inputs.<name>.<key>."""
    _, issues = load('prot = "tcp"', "inputs.syslog_tcp")
    assert len(issues) == 1 and issues[0].startswith("unknown-key: inputs.syslog_tcp.prot: unknown key")


def test_wrong_types_are_named() -> None:
    """Strings for ints, ints for bools, bools for ints: each named with what was expected."""
    _, issues = load('protocol = "tcp"\nport = "514"\nmax_connections = true\nidle_timeout = 5')
    assert issues == [
        "wrong-type: inputs.syslog.port: expected int, got str '514'",
        "wrong-type: inputs.syslog.max_connections: expected int, got bool True",
        'wrong-type: inputs.syslog.idle_timeout: a duration needs a unit: write "5s" or "5ms" (units ms, s, '
        'm, h, d, w), not 5',
    ]


def test_bad_values() -> None:
    """Unknown protocol, port out of range, non-IP address, bad duration: all reported at once."""
    _, issues = load('protocol = "sctp"\nport = 70000\naddress = "localhost"\nmax_message_bytes = 10')
    assert [i.split(":")[1].strip() for i in issues] == [
        "inputs.syslog.protocol", "inputs.syslog.address", "inputs.syslog.port", "inputs.syslog.max_message_bytes",
    ]


def test_bad_duration() -> None:
    """idle_timeout must be a duration like 30s or 5m."""
    _, issues = load('protocol = "tcp"\nidle_timeout = "soon"')
    assert issues == ["bad-value: inputs.syslog.idle_timeout: not a duration: 'soon' (use e.g. 30s, 5m, 2h, 1d)"]


def test_tls_needs_cert_and_key() -> None:
    """protocol = "tls" without cert_file and key_file names both."""
    _, issues = load('protocol = "tls"')
    assert issues == ['missing-key: inputs.syslog.cert_file: required when protocol = "tls"',
                      'missing-key: inputs.syslog.key_file: required when protocol = "tls"']


def test_verify_client_needs_ca_file(tmp_path: Path) -> None:
    """verify_client = true without a CA cannot verify anything."""
    (tmp_path / "c").write_text("x")
    _, issues = load(f'protocol = "tls"\ncert_file = "{tmp_path}/c"\nkey_file = "{tmp_path}/c"\nverify_client = true')
    assert [i.split(":")[0] + ":" + i.split(":")[1] for i in issues] == ["missing-key: inputs.syslog.ca_file"]


def test_missing_cert_file_is_named() -> None:
    """A cert_file that does not exist is reported with its path."""
    _, issues = load('protocol = "tls"\ncert_file = "/nonexistent/c.pem"\nkey_file = "/nonexistent/k.pem"')
    assert issues == ["file-not-found: inputs.syslog.cert_file: no such file: /nonexistent/c.pem",
                      "file-not-found: inputs.syslog.key_file: no such file: /nonexistent/k.pem"]


def test_credential_path_missing_is_only_a_warning(tmp_path: Path) -> None:
    """A key under /run/credentials/ exists only inside the service: a warning, the config is still built."""
    (tmp_path / "c.pem").write_text("x")
    config, issues = load(f'protocol = "tls"\ncert_file = "{tmp_path}/c.pem"\n'
                          'key_file = "/run/credentials/siem.service/tls-key"')
    assert config is not None and config.key_file == "/run/credentials/siem.service/tls-key"
    assert [i.split(":")[0] for i in issues] == ["file-not-found"]


def test_tls_keys_on_plain_tcp_are_errors() -> None:
    """TLS settings on a tcp input are a mistake, not silently ignored."""
    _, issues = load('protocol = "tcp"\nverify_client = true')
    assert issues == ['tls-only: inputs.syslog.verify_client: only applies to protocol = "tls" (this input is tcp)']


def test_per_source_limit_parsed() -> None:
    """max_connections_per_source is a stream setting, 0 (off) by default."""
    config, issues = load('protocol = "tcp"\nmax_connections_per_source = 8')
    assert (issues, config.max_connections_per_source if config else None) == ([], 8)


def test_stream_keys_on_udp_are_errors() -> None:
    """max_connections means nothing for UDP."""
    _, issues = load("max_connections = 10")
    assert issues == ['stream-only: inputs.syslog.max_connections: only applies to protocol = "tcp" or "tls"']


def test_unknown_format_is_named() -> None:
    """format must be a key of the parser registry; the known ones are listed."""
    _, issues = load('format = "sylog"')
    assert len(issues) == 1 and issues[0].startswith("unknown-format: inputs.syslog.format: unknown format 'sylog'")


def test_wrong_type_value_is_refused() -> None:
    """type, when present, must be "syslog"."""
    _, issues = load('type = "files"')
    assert issues == ['bad-value: inputs.syslog.type: expected "syslog", got \'files\'']


def test_unusable_certificate_raises_config_error(tmp_path: Path) -> None:
    """A cert file that is not PEM fails when the server is built, naming the file."""
    (tmp_path / "bad.pem").write_text("not a certificate")
    config = SyslogConfig(protocol="tls", cert_file=str(tmp_path / "bad.pem"), key_file=str(tmp_path / "bad.pem"))
    with pytest.raises(ConfigError, match="bad.pem"):
        SyslogServer(config, "tls_in")
