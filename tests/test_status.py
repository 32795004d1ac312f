"""siem.status: summaries of a real exposition produced by siem.metrics (in a subprocess, so this
process's registry stays untouched)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from siem import status

T0 = 1_800_000_000

TRAFFIC = textwrap.dedent(
    f"""
    import sys
    from siem import metrics as m
    m.RULES_LOADED.set(12)
    m.EVENTS_RECEIVED.labels(input="syslog_udp", format="syslog").inc(1000)
    m.EVENTS_FAILED.labels(input="syslog_udp", format="syslog").inc(50)
    m.EVENTS_RECEIVED.labels(input="auth_files", format="auth").inc(200)
    m.INPUT_LAST_EVENT.labels(input="syslog_udp").set({T0})
    m.INPUT_DROPPED.labels(input="syslog_udp", reason="queue_full").inc(3)
    m.INPUT_CONNECTIONS.labels(input="syslog_tcp").set(2)
    for v in [0.002] * 90 + [0.2] * 10:
        m.BATCH_SECONDS.observe(v)
        m.BATCHES.inc()
    m.ALERTS_FIRED.labels(rule="ssh_bruteforce", severity="high").inc(4)
    m.ALERTS_FIRED.labels(rule="sudo_root", severity="critical").inc(1)
    m.NOTIFICATIONS_SENT.labels(route="oncall").inc(5)
    m.NOTIFICATIONS_FAILED.labels(route="pager").inc(7)
    m.OUTBOX_DEPTH.set(7)
    m.RELOADS.labels(result="success").inc(2)
    m.LOG_LAG.set(120)
    m.CHECKPOINT_AGE.set(4)
    m.WATERMARK.set({T0 - 30})
    sys.stdout.write(m.render().decode() + "#SPLIT\\n")
    m.EVENTS_RECEIVED.labels(input="syslog_udp", format="syslog").inc(500)
    sys.stdout.write(m.render().decode())
    """
)


@pytest.fixture(scope="module")
def scrapes() -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", TRAFFIC], capture_output=True, text=True, timeout=60, check=True)
    first, second = out.stdout.split("#SPLIT\n")
    return first, second


def _lines(text: str, *prefixes: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefixes)]


@pytest.mark.timeout(60)
def test_summary_shows_inputs_with_rates(scrapes: tuple[str, str]) -> None:
    """Per input: received, failed, dropped, events/s between two scrapes, connections, last event."""
    first, second = scrapes
    text = status.summarize(second, first, 10.0, now_s=T0 + 10)
    assert _lines(text, "input", "auth_files", "syslog_", "total") == [
        "input                 received   failed  dropped  events/s  conns  last event",
        "auth_files                 200        0        0       0.0      0  never",
        "syslog_tcp                   0        0        0         -      2  never",
        "syslog_udp                1.5k       50        3      50.0      0  10s ago",
        "total                     1.7k       50        3      50.0         parse errors 2.9%",
    ]


@pytest.mark.timeout(60)
def test_summary_shows_engine_lag_alerts_and_delivery(scrapes: tuple[str, str]) -> None:
    """Batch quantiles, lag, alerts by severity and rule, and delivery health per route."""
    text = status.summarize(scrapes[0], now_s=T0 + 10)
    assert text.splitlines()[-7:] == [
        "engine    100 batches, batch p50 3ms p99 235ms, event-to-alert p95 -, 0 window keys, 0 late",
        "lag       120 records not checkpointed, checkpoint 4s old, watermark 40s behind",
        "alerts    5 fired (high 4, critical 1), 0 suppressed",
        "          top rules: ssh_bruteforce 4, sudo_root 1",
        "delivery  outbox 7 waiting, 5 sent, 7 failed, 0 retried, 0 dead",
        "          oncall               sent 5, failed 0, retried 0, dead 0",
        "          pager                sent 0, failed 7, retried 0, dead 0  FAILING",
    ]


@pytest.mark.timeout(60)
def test_summary_header(scrapes: tuple[str, str]) -> None:
    """The first line names the version, rules loaded and reloads."""
    head = status.summarize(scrapes[0], now_s=T0).splitlines()[0]
    assert head.startswith("siem 0.1.0 (embedded), up ") and ", 12 rules loaded, reloads 2 ok / 0 failed, " in head


def test_summary_of_an_idle_daemon() -> None:
    """A daemon that received nothing yet gets a summary, not an error."""
    text = status.summarize("siem_rules_loaded 3\n", now_s=T0)
    assert _lines(text, "siem", "(no input", "engine") == [
        "siem ? (embedded), 3 rules loaded",
        "(no input has received anything yet)",
        "engine    0 batches, no batches yet, event-to-alert p95 -, 0 window keys, 0 late",
    ]


def test_summary_rejects_non_exposition_text() -> None:
    """An HTML error page instead of metrics raises ValueError with a clear message."""
    with pytest.raises(ValueError, match="not a Prometheus text exposition"):
        status.summarize("<html><body>502 Bad Gateway</body></html>")


def test_counter_reset_counts_from_zero() -> None:
    """A counter lower than in the previous scrape (the daemon restarted) is a rate from zero."""
    now = status.Snapshot.parse('siem_events_received_total{input="a",format="x"} 30\n')
    prev = status.Snapshot.parse('siem_events_received_total{input="a",format="x"} 1000\n')
    assert status.status_line(now, prev, 10.0).startswith("3.0 events/s")


def test_quantile_matches_prometheus_interpolation() -> None:
    """histogram quantiles interpolate linearly inside the bucket, as histogram_quantile() does."""
    snap = status.Snapshot.parse(
        'h_bucket{le="0.1"} 0\nh_bucket{le="0.2"} 50\nh_bucket{le="0.4"} 100\nh_bucket{le="+Inf"} 100\n')
    got = (snap.quantile("h", 0.25), snap.quantile("h", 0.75), snap.quantile("h", 1.0))
    assert got == pytest.approx((0.15, 0.3, 0.4))


LIVE = textwrap.dedent(
    """
    from siem import metrics as m
    from siem.status import LiveStatus
    ticks = iter([100.0, 110.0])
    live = LiveStatus(monotonic=lambda: next(ticks))
    print(live())
    m.EVENTS_RECEIVED.labels(input="u", format="syslog").inc(100)
    m.EVENTS_FAILED.labels(input="u", format="syslog").inc(5)
    m.ALERTS_FIRED.labels(rule="r", severity="high").inc(2)
    m.OUTBOX_DEPTH.set(1)
    print(live())
    """
)


@pytest.mark.timeout(60)
def test_live_status_lines() -> None:
    """LiveStatus gives rates since its previous call, for systemd's STATUS=."""
    out = subprocess.run([sys.executable, "-c", LIVE], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == [
        "starting, 0 alerts, outbox 0, log lag 0",
        "10.0 events/s, 5.0% parse errors, 2 alerts, outbox 1, log lag 0",
    ]


SERVER = textwrap.dedent(
    """
    import sys, time
    from siem import metrics as m
    m.RULES_LOADED.set(4)
    m.EVENTS_RECEIVED.labels(input="syslog_tcp", format="syslog").inc(42)
    print(m.serve("127.0.0.1", 0), flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.timeout(60)
def test_status_command_reads_a_metrics_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    """`siem status --url` scrapes a real metrics endpoint and prints the summary."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        code = status.run(argparse.Namespace(url=f"http://127.0.0.1:{port}/metrics", config=None, interval=0.0))
    finally:
        proc.kill()
        proc.wait()
    out = capsys.readouterr().out
    assert (code, _lines(out, "syslog_tcp")) == (0, ["syslog_tcp                  42        0        0         -      0  never"])
    assert ", 4 rules loaded" in out.splitlines()[0]


@pytest.mark.timeout(60)
def test_status_command_reports_an_unreachable_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: exit status 1 and a message naming the URL."""
    code = status.run(argparse.Namespace(url="http://127.0.0.1:1/metrics", config=None, interval=0.0))
    assert (code, capsys.readouterr().err.startswith("siem status: cannot read http://127.0.0.1:1/metrics")) == (1, True)


def test_metrics_url_comes_from_the_config(tmp_path: Path) -> None:
    """--config gives the URL of the daemon's metrics_address; a wildcard address is reached locally."""
    config = tmp_path / "siem.toml"
    config.write_text('[daemon]\nmetrics_address = "0.0.0.0:9300"\n')
    urls = [status.metrics_url(argparse.Namespace(url=u, config=c)) for u, c in
            ((None, str(config)), ("http://h:1/metrics", str(config)), (None, None))]
    assert urls == ["http://127.0.0.1:9300/metrics", "http://h:1/metrics", "http://127.0.0.1:9108/metrics"]


def test_summary_warns_about_the_earliest_tls_expiry() -> None:
    """The TLS input whose certificate expires first is named with the time left, or flagged EXPIRED."""
    text = ('siem_tls_certificate_expiry_timestamp_seconds{input="tls_a"} %d\n'
            'siem_tls_certificate_expiry_timestamp_seconds{input="tls_b"} %d\n') % (T0 + 90 * 86400, T0 + 10 * 86400)
    assert (_lines(status.summarize(text, now_s=T0), "tls"), _lines(status.summarize(text, now_s=T0 + 13 * 86400), "tls")) == (
        ["tls certificate of tls_b expires in 10.0d"], ["tls certificate of tls_b EXPIRED 3.0d ago"])


def test_summary_of_a_kafka_role_names_it_and_shows_its_consumer_lag() -> None:
    text = "\n".join([
        'siem_build_info{role="correlator",version="0.1.0"} 1.0',
        'siem_kafka_consumer_lag_records{group="siem-correlator",partition="0",topic="siem.matches"} 120.0',
        'siem_kafka_consumer_lag_records{group="siem-correlator",partition="3",topic="siem.matches"} 5.0',
        'siem_kafka_rebalances_total{change="assigned",group="siem-correlator"} 2.0',
    ]) + "\n"
    out = status.summarize(text)
    assert out.splitlines()[0].startswith("siem 0.1.0 (role correlator)")
    assert "kafka     group siem-correlator: lag 125 records over 2 partitions (max 120), 2 rebalances" in out
    matcher = status.summarize(text.replace('role="correlator"', 'role="matcher"'))
    assert "engine" not in matcher and "delivery" not in matcher
