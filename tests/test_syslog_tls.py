"""Syslog over TLS (RFC 5425) with a CA, server and client certificates generated for the test run."""

from __future__ import annotations

import asyncio
import glob
import re
import shutil
import time
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from siem import metrics
from siem.collect.syslog import SyslogConfig, SyslogServer
from siem.errors import ConfigError
from syslog_support import RSYSLOGD, errors, rsyslogd, run_logger, serving, unique_name, wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl CLI not installed (deploy/install-test-deps.sh)")


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client1: tuple[Path, Path]  # CN=client1, SAN DNS:client1.example
    client2: tuple[Path, Path]  # CN=client2, same CA
    rogue: tuple[Path, Path]  # CN=client1, signed by another CA
    renewed: tuple[Path, Path]  # a second server cert, CN=renewed, for reload tests
    expired: tuple[Path, Path]  # CN=client1 from our CA, valid 2020-01-01 to 2020-01-02 only


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


def _leaf(d: Path, name: str, cn: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


_CA_CNF = """
[ca]
default_ca = test
[test]
database = index.txt
serial = serial
new_certs_dir = .
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
"""


def _expired(d: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """`openssl ca` is the CLI that can backdate a certificate (x509 -req cannot in OpenSSL 3.0)."""
    (d / "ca.cnf").write_text(_CA_CNF)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=client1", cwd=d)
    _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", ca[0], "-keyfile", ca[1], "-in", "expired.csr",
             "-out", "expired.pem", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext", cwd=d)
    return d / "expired.pem", d / "expired.key"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A fresh CA, a server cert for 127.0.0.1, two client certs and one from a rogue CA (private keys in tmp)."""
    d = tmp_path_factory.mktemp("syslog-certs")
    ca = _ca(d, "siem-test-ca")
    rogue_ca = _ca(d, "rogue-ca")
    server = _leaf(d, "server", "localhost", ca,
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client_ext = "extendedKeyUsage=clientAuth\n"
    return Certs(
        ca=ca[0], server_cert=server[0], server_key=server[1],
        client1=_leaf(d, "client1", "client1", ca, client_ext + "subjectAltName=DNS:client1.example\n"),
        client2=_leaf(d, "client2", "client2", ca, client_ext),
        rogue=_leaf(d, "rogue", "client1", rogue_ca, client_ext),
        renewed=_leaf(d, "renewed", "renewed", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        expired=_expired(d, ca),
    )


def tls_config(certs: Certs, **kw: object) -> SyslogConfig:
    base: dict[str, object] = dict(protocol="tls", port=0, cert_file=str(certs.server_cert),
                                   key_file=str(certs.server_key), ca_file=str(certs.ca), verify_client=True)
    return SyslogConfig(**(base | kw))  # type: ignore[arg-type]


def client_context(certs: Certs, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


async def tls_send(port: int, ctx: ssl.SSLContext, payload: bytes) -> str:
    """Send payload over TLS and close; returns "" or the error the client saw."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 10)
        writer.write(payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


async def _send_with(certs: Certs, config: SyslogConfig, cert: tuple[Path, Path] | None,
                     payload: bytes = b"<13>over tls\n") -> tuple[list[bytes], float, float, str]:
    async with serving(config) as (server, sink):
        err = await tls_send(server.port, client_context(certs, cert), payload)
        await wait_until(lambda: server.connection_count == 0 and bool(
            sink.records or errors(server, "tls_handshake") or errors(server, "peer_not_permitted")))
        await asyncio.sleep(0.05)
        return sink.data, errors(server, "tls_handshake"), errors(server, "peer_not_permitted"), err


@pytest.mark.timeout(30)
def test_client_with_valid_cert_gets_through(certs: Certs) -> None:
    """verify_client on, a cert from our CA: octet-counted and LF frames both arrive."""
    data, failed, _, err = asyncio.run(_send_with(certs, tls_config(certs), certs.client1,
                                                  b"13 <13>octet tls<13>lf tls\n"))
    assert (data, failed, err) == ([b"<13>octet tls", b"<13>lf tls"], 0, "")


@pytest.mark.timeout(30)
def test_client_without_cert_refused_when_verification_on(certs: Certs) -> None:
    """verify_client on, no client cert: nothing delivered, the handshake failure counted."""
    data, failed, _, _ = asyncio.run(_send_with(certs, tls_config(certs), None))
    assert (data, failed) == ([], 1)


@pytest.mark.timeout(30)
def test_client_without_cert_accepted_when_verification_off(certs: Certs) -> None:
    """verify_client off: a client without a cert is served."""
    config = tls_config(certs, verify_client=False, ca_file=None)
    data, failed, _, err = asyncio.run(_send_with(certs, config, None))
    assert (data, failed, err) == ([b"<13>over tls"], 0, "")


@pytest.mark.timeout(30)
def test_client_cert_from_untrusted_ca_refused(certs: Certs) -> None:
    """A client cert signed by another CA is refused, even with an allowed name."""
    data, failed, _, _ = asyncio.run(_send_with(certs, tls_config(certs, permitted_peers=("client1",)), certs.rogue))
    assert (data, failed) == ([], 1)


@pytest.mark.timeout(30)
def test_expired_client_cert_refused(certs: Certs) -> None:
    """A client cert from our CA that expired in 2020 is refused and counted."""
    data, failed, _, _ = asyncio.run(_send_with(certs, tls_config(certs), certs.expired))
    assert (data, failed) == ([], 1)


@pytest.mark.timeout(30)
def test_permitted_peers_accepts_listed_san(certs: Certs) -> None:
    """permitted_peers matches a DNS subjectAltName of the verified client cert."""
    config = tls_config(certs, permitted_peers=("CLIENT1.example",))
    data, failed, refused, _ = asyncio.run(_send_with(certs, config, certs.client1))
    assert (data, failed, refused) == ([b"<13>over tls"], 0, 0)


@pytest.mark.timeout(30)
def test_permitted_peers_refuses_unlisted_client(certs: Certs) -> None:
    """A valid cert whose names are not in permitted_peers is closed before any read, counted."""
    config = tls_config(certs, permitted_peers=("client1",))
    data, failed, refused, _ = asyncio.run(_send_with(certs, config, certs.client2))
    assert (data, failed, refused) == ([], 0, 1)


async def _never_handshakes(certs: Certs) -> tuple[bytes, float]:
    async with serving(tls_config(certs, handshake_timeout_ms=300)) as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            got = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            got = b""
        await wait_until(lambda: errors(server, "handshake_timeout") >= 1)
        writer.close()
        return got, errors(server, "handshake_timeout")


@pytest.mark.timeout(30)
def test_client_that_never_finishes_the_handshake_is_closed(certs: Certs) -> None:
    """Case 6: a TCP client that never sends a ClientHello is closed after handshake_timeout, counted."""
    assert asyncio.run(_never_handshakes(certs)) == (b"", 1)


async def _plaintext_then_tls(certs: Certs) -> tuple[list[bytes], float]:
    async with serving(tls_config(certs)) as (server, sink):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"<13>plaintext to the TLS port\n" * 100)
        await writer.drain()
        await wait_until(lambda: errors(server, "tls_handshake") >= 1)
        writer.close()
        err = await tls_send(server.port, client_context(certs, certs.client1), b"<13>still serving\n")
        await wait_until(lambda: len(sink.records) >= 1)
        return sink.data + [err.encode()], errors(server, "tls_handshake")


@pytest.mark.timeout(30)
def test_plaintext_to_tls_port_is_refused_and_counted(certs: Certs) -> None:
    """Case 7: plaintext on the TLS port is a counted handshake failure; the next TLS client is served."""
    assert asyncio.run(_plaintext_then_tls(certs)) == ([b"<13>still serving", b""], 1)


async def _old_tls(certs: Certs) -> tuple[str, list[bytes]]:
    async with serving(tls_config(certs, verify_client=False, ca_file=None)) as (server, sink):
        ctx = client_context(certs, None)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        err = await tls_send(server.port, ctx, b"<13>old tls\n")
        await wait_until(lambda: errors(server, "tls_handshake") >= 1)
        return err, sink.data


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_client_is_refused(certs: Certs) -> None:
    """Case 7: a TLS 1.1 ClientHello is refused by the server (alert or reset); nothing delivered."""
    err, data = asyncio.run(_old_tls(certs))
    # A client that could not even offer TLS 1.1 would fail locally with NO_PROTOCOLS_AVAILABLE instead.
    assert "PROTOCOL_VERSION" in err.upper() or err.startswith("ConnectionResetError"), err
    assert data == []


async def _pending_handshakes(certs: Certs) -> tuple[list[bytes], float]:
    async with serving(tls_config(certs, max_connections=5)) as (server, sink):
        pending = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        await wait_until(lambda: errors(server, "evicted") >= 15)
        err = await tls_send(server.port, client_context(certs, certs.client1), b"<13>healthy\n")
        await wait_until(lambda: len(sink.records) >= 1)
        for _, w in pending:
            w.close()
        return sink.data + [err.encode()], errors(server, "evicted")


@pytest.mark.timeout(30)
def test_pending_handshakes_do_not_lock_out_a_valid_client(certs: Certs) -> None:
    """Case 6: 20 clients stuck before the handshake at a limit of 5; a valid TLS client still gets through."""
    assert asyncio.run(_pending_handshakes(certs)) == ([b"<13>healthy", b""], 16)


async def _server_cn(port: int, certs: Certs) -> str:
    ctx = client_context(certs, certs.client1)
    ctx.check_hostname = False
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    cert = writer.get_extra_info("peercert")
    writer.close()
    return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")


async def _reload(certs: Certs, tmp_path: Path) -> tuple[str, str, str]:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(certs.server_cert, cert)
    shutil.copy(certs.server_key, key)
    async with serving(tls_config(certs, cert_file=str(cert), key_file=str(key))) as (server, _):
        before = await _server_cn(server.port, certs)
        shutil.copy(certs.renewed[0], cert)
        shutil.copy(certs.renewed[1], key)
        server.reload_certificates()
        after = await _server_cn(server.port, certs)
        cert.write_text("garbage")
        try:
            server.reload_certificates()
            refused = "reloaded garbage"
        except ConfigError as exc:
            refused = "ConfigError" if "server.pem" in str(exc) else str(exc)
        kept = await _server_cn(server.port, certs)
        return before, after, refused + " " + kept


@pytest.mark.timeout(30)
def test_reload_certificates_swaps_in_renewed_cert(certs: Certs, tmp_path: Path) -> None:
    """reload_certificates(): new connections get the renewed cert; unusable files keep the running one."""
    assert asyncio.run(_reload(certs, tmp_path)) == ("localhost", "renewed", "ConfigError renewed")


def test_certificate_expiry_is_exported(certs: Certs) -> None:
    """siem_tls_certificate_expiry_timestamp_seconds holds the server cert's notAfter (2 days ahead here)."""
    server = SyslogServer(tls_config(certs), "tls_expiry_test")
    not_after = metrics.value("siem_tls_certificate_expiry_timestamp_seconds", input=server.name)
    assert abs(not_after - (time.time() + 2 * 86400)) < 3600


# --- rsyslog as a TLS sender (RFC 5425: octet-counted frames over TLS, mutual authentication) -----------

RSYSLOG_TLS_CONF = """
global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{work}/port" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" tcp_framing="octet-counted"
         StreamDriver="ossl" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost"
         StreamDriver.CAFile="{ca}" StreamDriver.CertFile="{cert}" StreamDriver.KeyFile="{key}"
         template="RSYSLOG_SyslogProtocol23Format" action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"""
_HAS_OSSL = bool(glob.glob("/usr/lib/*/rsyslog/lmnsd_ossl.so"))


async def _rsyslog_over_tls(certs: Certs, tmp_path: Path, n: int) -> tuple[list[int], list[bytes], float]:
    run = unique_name("tls").replace("_", "")
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"tls message siemtest-{run}-{i}-end\n" for i in range(n)))
    work = tmp_path / "rsyslog"
    work.mkdir()
    async with serving(tls_config(certs, permitted_peers=("client1",))) as (server, sink):
        conf = RSYSLOG_TLS_CONF.format(work=work, port=server.port, ca=certs.ca, cert=certs.client1[0],
                                       key=certs.client1[1])
        async with rsyslogd(work, conf) as rs_port:
            await run_logger("-n", "127.0.0.1", "-P", str(rs_port), "--tcp", "-t", "siemtest", "-f", str(lines))
            pattern = re.compile(rb"siemtest-" + run.encode() + rb"-(\d+)-end")
            numbers = lambda: sorted(int(m.group(1)) for d in sink.data for m in pattern.finditer(d))  # noqa: E731
            await wait_until(lambda: len(numbers()) >= n, 30)
            await asyncio.sleep(0.1)
        return numbers(), sink.data, errors(server, "tls_handshake")


@pytest.mark.skipif(RSYSLOGD is None or not _HAS_OSSL,
                    reason="rsyslogd with its OpenSSL driver not installed (Debian rsyslog, rsyslog-openssl)")
@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger not installed")
@pytest.mark.timeout(90)
def test_rsyslog_forwards_over_mutual_tls(certs: Certs, tmp_path: Path) -> None:
    """logger -> rsyslogd -> omfwd with the ossl driver and a client cert -> our TLS input: each message once."""
    numbers, data, failed = asyncio.run(_rsyslog_over_tls(certs, tmp_path, 200))
    assert numbers == list(range(200))
    assert all(d.startswith(b"<13>1 ") and not d.endswith(b"\n") for d in data)
    assert failed == 0
