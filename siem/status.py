"""`siem status`: a one-screen summary of a running daemon, read from its Prometheus metrics.

The daemon already publishes everything worth summarising on its metrics endpoint, so `siem status`
needs no second protocol: it fetches ``http://<metrics address>/metrics`` twice, ``--interval``
seconds apart, and prints totals, rates, lag, alerts and delivery health (:func:`summarize`). The same
numbers, condensed to one line, feed systemd's STATUS= (:class:`LiveStatus`, for
:func:`siem.service.watchdog_loop`).
"""

from __future__ import annotations

import argparse
import math
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from siem import metrics
from siem.logsetup import escape_control

Sample = tuple[str, dict[str, str], float]


@dataclass(frozen=True)
class Snapshot:
    """Samples of one scrape, indexed by name."""

    by_name: dict[str, list[tuple[dict[str, str], float]]]

    @staticmethod
    def of(samples: Iterable[Sample]) -> Snapshot:
        by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for name, labels, value in samples:
            by_name[name].append((labels, value))
        return Snapshot(dict(by_name))

    @staticmethod
    def parse(text: str) -> Snapshot:
        return Snapshot.of(metrics.parse_samples(text))

    def total(self, name: str, **match: str) -> float:
        return sum(v for labels, v in self.by_name.get(name, ()) if all(labels.get(k) == m for k, m in match.items()))

    def has(self, name: str) -> bool:
        return name in self.by_name

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, v in self.by_name.get(name, ()):
            if all(labels.get(k) == m for k, m in match.items()):
                out[labels.get(label, "")] += v
        return dict(out)

    def quantile(self, histogram: str, q: float) -> float | None:
        """q-quantile of a histogram (all label sets merged), interpolated within the bucket as
        Prometheus' histogram_quantile does; None without observations."""
        buckets: dict[float, float] = defaultdict(float)
        for labels, v in self.by_name.get(f"{histogram}_bucket", ()):
            buckets[float(labels["le"])] += v
        return _quantile(sorted(buckets.items()), q)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the +Inf bucket: the highest finite bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


# --- formatting -----------------------------------------------------------------------------------

def _num(x: float) -> str:
    """12, 1.2k, 3.4M: counts at a glance."""
    if abs(x) < 1000:
        return f"{x:.0f}" if x == int(x) else f"{x:.1f}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def _dur(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _name(text: str) -> str:
    return escape_control(text) or "-"


class _Rates:
    """Per-second rate of a counter between two snapshots (None without a previous one); a counter that
    went down (daemon restarted) counts from zero, as Prometheus' rate() does."""

    def __init__(self, now: Snapshot, previous: Snapshot | None, interval_s: float | None) -> None:
        self.now, self.prev = now, previous
        self.interval_s = interval_s if interval_s and interval_s > 0 else None

    def __call__(self, name: str, **match: str) -> float | None:
        if self.prev is None or self.interval_s is None:
            return None
        cur, old = self.now.total(name, **match), self.prev.total(name, **match)
        return (cur - old if cur >= old else cur) / self.interval_s

    def by(self, name: str, label: str) -> dict[str, float]:
        if self.prev is None or self.interval_s is None:
            return {}
        old = self.prev.by(name, label)
        return {k: (v - old.get(k, 0.0) if v >= old.get(k, 0.0) else v) / self.interval_s
                for k, v in self.now.by(name, label).items()}


def summarize(metrics_text: str, previous_text: str | None = None, interval_s: float | None = None,
              now_s: float | None = None) -> str:
    """A one-screen summary of a daemon's metrics exposition. With ``previous_text`` scraped
    ``interval_s`` seconds earlier, rates are shown too. Raises ValueError on text that is not an
    exposition."""
    s = Snapshot.parse(metrics_text)
    prev = Snapshot.parse(previous_text) if previous_text is not None else None
    rate = _Rates(s, prev, interval_s)
    now = time.time() if now_s is None else now_s
    lines: list[str] = []

    build = next((labels for labels, _ in s.by_name.get("siem_build_info", ())), {})
    version, role = build.get("version", "?"), build.get("role", "all")
    head = f"siem {_name(version)} ({'embedded' if role == 'all' else 'role ' + _name(role)})"
    if s.has("process_start_time_seconds"):
        head += f", up {_dur(now - s.total('process_start_time_seconds'))}"
    head += f", {s.total('siem_rules_loaded'):.0f} rules loaded"
    reloads = s.by("siem_reloads_total", "result")
    if reloads:
        head += f", reloads {reloads.get('success', 0):.0f} ok / {reloads.get('failure', 0):.0f} failed"
    if s.has("process_resident_memory_bytes"):
        head += f", {s.total('process_resident_memory_bytes') / 2**20:.0f} MiB resident"
    lines.append(head)

    # intake, one line per input
    received = s.by("siem_events_received_total", "input")
    failed = s.by("siem_events_failed_total", "input")
    dropped = s.by("siem_input_dropped_total", "input")
    conns = s.by("siem_input_connections", "input")
    last = s.by("siem_input_last_event_timestamp_seconds", "input")
    rates = rate.by("siem_events_received_total", "input")
    inputs = sorted(set(received) | set(dropped) | set(conns))
    lines.append("")
    lines.append(f"{'input':<20} {'received':>9} {'failed':>8} {'dropped':>8} {'events/s':>9} {'conns':>6}  last event")
    for name in inputs:
        r = rates.get(name)
        seen = f"{_dur(now - last[name])} ago" if last.get(name) else "never"
        lines.append(f"{_name(name)[:20]:<20} {_num(received.get(name, 0)):>9} {_num(failed.get(name, 0)):>8} "
                     f"{_num(dropped.get(name, 0)):>8} {('-' if r is None else f'{r:.1f}'):>9} "
                     f"{_num(conns.get(name, 0)):>6}  {seen}")
    if not inputs:
        lines.append("(no input has received anything yet)")
    total_received = s.total("siem_events_received_total")
    failed_share = s.total("siem_events_failed_total") / total_received if total_received else 0.0
    total_rate = rate("siem_events_received_total")
    lines.append(f"{'total':<20} {_num(total_received):>9} {_num(s.total('siem_events_failed_total')):>8} "
                 f"{_num(sum(dropped.values())):>8} "
                 f"{('-' if total_rate is None else f'{total_rate:.1f}'):>9}         parse errors {failed_share:.1%}")

    expiry = s.by("siem_tls_certificate_expiry_timestamp_seconds", "input")
    if expiry:
        name, not_after = min(expiry.items(), key=lambda kv: kv[1])
        left = not_after - now
        lines.append(f"tls certificate of {_name(name)} "
                     f"{'EXPIRED ' + _dur(-left) + ' ago' if left < 0 else 'expires in ' + _dur(left)}")

    # scale-out: what this role's consumer group has left to read
    lag = s.by_name.get("siem_kafka_consumer_lag_records", ())
    if lag:
        groups: dict[str, list[float]] = defaultdict(list)
        for labels, v in lag:
            groups[labels.get("group", "")].append(v)
        lines.append("")
        for group, values in sorted(groups.items()):
            lines.append(f"kafka     group {_name(group)}: lag {_num(sum(values))} records over {len(values)} "
                         f"partitions (max {_num(max(values))}), "
                         f"{_num(s.total('siem_kafka_rebalances_total', group=group))} rebalances, "
                         f"{_num(s.total('siem_kafka_commit_failed_total', group=group))} failed commits")
    if role in ("collector", "matcher"):  # no engine or delivery here: their figures would only read zero
        return "\n".join(lines)
    if role == "notifier":
        return "\n".join([*lines, "", *_delivery(s)])

    # engine
    lines.append("")
    p50, p99 = s.quantile("siem_batch_duration_seconds", 0.5), s.quantile("siem_batch_duration_seconds", 0.99)
    batch = "no batches yet" if p50 is None or p99 is None else f"batch p50 {_dur(p50)} p99 {_dur(p99)}"
    e2a = s.quantile("siem_event_to_alert_seconds", 0.95)
    lines.append(f"engine    {_num(s.total('siem_batches_total'))} batches, {batch}, "
                 f"event-to-alert p95 {'-' if e2a is None else _dur(e2a)}, "
                 f"{_num(s.total('siem_window_keys'))} window keys, {_num(s.total('siem_events_late_total'))} late")
    watermark = s.total("siem_watermark_timestamp_seconds")
    behind = f"watermark {_dur(now - watermark)} behind" if watermark > 0 else "no watermark yet"
    lines.append(f"lag       {_num(s.total('siem_log_lag_records'))} records not checkpointed, "
                 f"checkpoint {_dur(s.total('siem_checkpoint_age_seconds'))} old, {behind}")

    # alerts
    by_sev = s.by("siem_alerts_fired_total", "severity")
    fired = sum(by_sev.values())
    sev = ", ".join(f"{_name(k)} {_num(v)}" for k, v in sorted(by_sev.items(), key=lambda kv: -kv[1]) if v)
    top = sorted(s.by("siem_alerts_fired_total", "rule").items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    lines.append(f"alerts    {_num(fired)} fired{f' ({sev})' if sev else ''}, "
                 f"{_num(s.total('siem_alerts_suppressed_total'))} suppressed")
    if top and fired:
        lines.append("          top rules: " + ", ".join(f"{_name(k)} {_num(v)}" for k, v in top if v))

    return "\n".join(lines + _delivery(s))


def _delivery(s: Snapshot) -> list[str]:
    lines: list[str] = []
    sent, fail = s.by("siem_notifications_sent_total", "route"), s.by("siem_notifications_failed_total", "route")
    retried, dead = s.by("siem_notifications_retried_total", "route"), s.by("siem_notifications_dead_total", "route")
    lines.append(f"delivery  outbox {_num(s.total('siem_outbox_depth'))} waiting, {_num(sum(sent.values()))} sent, "
                 f"{_num(sum(fail.values()))} failed, {_num(sum(retried.values()))} retried, "
                 f"{_num(sum(dead.values()))} dead")
    for route in sorted(set(sent) | set(fail) | set(dead)):
        flag = "  FAILING" if fail.get(route, 0) and not sent.get(route, 0) else ""
        lines.append(f"          {_name(route)[:20]:<20} sent {_num(sent.get(route, 0))}, failed "
                     f"{_num(fail.get(route, 0))}, retried {_num(retried.get(route, 0))}, "
                     f"dead {_num(dead.get(route, 0))}{flag}")
    return lines


def summary_data(metrics_text: str, previous_text: str | None = None, interval_s: float | None = None,
                 now_s: float | None = None) -> dict[str, object]:
    """What :func:`summarize` shows, as data (``siem status --format json``): totals, per-input and
    per-route counters, rates per second when ``previous_text`` is given (else null)."""
    s = Snapshot.parse(metrics_text)
    prev = Snapshot.parse(previous_text) if previous_text is not None else None
    rate = _Rates(s, prev, interval_s)
    now = time.time() if now_s is None else now_s
    version = next((labels.get("version", "?") for labels, _ in s.by_name.get("siem_build_info", ())), "?")
    start = s.total("process_start_time_seconds") if s.has("process_start_time_seconds") else None
    received, failed = s.by("siem_events_received_total", "input"), s.by("siem_events_failed_total", "input")
    dropped, conns = s.by("siem_input_dropped_total", "input"), s.by("siem_input_connections", "input")
    last = s.by("siem_input_last_event_timestamp_seconds", "input")
    rates = rate.by("siem_events_received_total", "input")
    inputs = {name: {"received": received.get(name, 0), "failed": failed.get(name, 0),
                     "dropped": dropped.get(name, 0), "events_per_second": rates.get(name) if prev else None,
                     "connections": conns.get(name, 0), "last_event_timestamp_seconds": last.get(name) or None}
              for name in sorted(set(received) | set(dropped) | set(conns))}
    sent, fail = s.by("siem_notifications_sent_total", "route"), s.by("siem_notifications_failed_total", "route")
    retried, dead = s.by("siem_notifications_retried_total", "route"), s.by("siem_notifications_dead_total", "route")
    watermark = s.total("siem_watermark_timestamp_seconds")
    return {
        "version": version,
        "uptime_seconds": now - start if start is not None else None,
        "rules_loaded": s.total("siem_rules_loaded"),
        "reloads": s.by("siem_reloads_total", "result"),
        "resident_memory_bytes": s.total("process_resident_memory_bytes") if s.has("process_resident_memory_bytes")
        else None,
        "inputs": inputs,
        "events": {"received": s.total("siem_events_received_total"), "failed": s.total("siem_events_failed_total"),
                   "dropped": sum(dropped.values()), "late": s.total("siem_events_late_total"),
                   "events_per_second": rate("siem_events_received_total")},
        "engine": {"batches": s.total("siem_batches_total"),
                   "batch_p50_seconds": s.quantile("siem_batch_duration_seconds", 0.5),
                   "batch_p99_seconds": s.quantile("siem_batch_duration_seconds", 0.99),
                   "event_to_alert_p95_seconds": s.quantile("siem_event_to_alert_seconds", 0.95),
                   "window_keys": s.total("siem_window_keys"),
                   "log_lag_records": s.total("siem_log_lag_records"),
                   "checkpoint_age_seconds": s.total("siem_checkpoint_age_seconds"),
                   "watermark_behind_seconds": now - watermark if watermark > 0 else None},
        "alerts": {"fired": s.total("siem_alerts_fired_total"), "suppressed": s.total("siem_alerts_suppressed_total"),
                   "by_severity": s.by("siem_alerts_fired_total", "severity"),
                   "by_rule": {k: v for k, v in s.by("siem_alerts_fired_total", "rule").items() if v}},
        "delivery": {"outbox_depth": s.total("siem_outbox_depth"),
                     "routes": {r: {"sent": sent.get(r, 0), "failed": fail.get(r, 0), "retried": retried.get(r, 0),
                                    "dead": dead.get(r, 0)} for r in sorted(set(sent) | set(fail) | set(dead))}},
    }


def status_line(now: Snapshot, previous: Snapshot | None, interval_s: float | None) -> str:
    """One line for systemd's STATUS=: intake rate, parse errors, alerts, outbox, lag."""
    rate = _Rates(now, previous, interval_s)
    received = rate("siem_events_received_total")
    failed = rate("siem_events_failed_total")
    intake = "starting" if received is None else f"{received:.1f} events/s"
    errors = ""
    if received and failed is not None:
        errors = f", {failed / received:.1%} parse errors"
    dropped = rate("siem_input_dropped_total")
    drops = f", {dropped:.1f} dropped/s" if dropped else ""
    return (f"{intake}{errors}{drops}, {now.total('siem_alerts_fired_total'):.0f} alerts, "
            f"outbox {now.total('siem_outbox_depth'):.0f}, log lag {now.total('siem_log_lag_records'):.0f}")


class LiveStatus:
    """The status callable for :func:`siem.service.watchdog_loop`: rates since the previous call, read
    from this process's own metrics registry."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._prev: Snapshot | None = None
        self._prev_t = 0.0

    def __call__(self) -> str:
        snap = Snapshot.parse(metrics.render().decode())
        t = self._monotonic()
        line = status_line(snap, self._prev, t - self._prev_t if self._prev is not None else None)
        self._prev, self._prev_t = snap, t
        return line


# --- the command ----------------------------------------------------------------------------------

DEFAULT_URL = "http://127.0.0.1:9108/metrics"


def fetch(url: str, timeout_s: float = 5.0) -> str:
    """The text at ``url``; raises OSError with a readable message when the daemon cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - operator-given URL
            return str(response.read(16 * 2**20).decode("utf-8", "replace"))
    except urllib.error.URLError as exc:
        raise OSError(f"cannot read {url}: {getattr(exc, 'reason', exc)}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH",
                        help="read the metrics address from this config file ([daemon] metrics_address)")
    parser.add_argument("--url", help=f"the daemon's metrics endpoint (default {DEFAULT_URL})")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between the two scrapes used for rates; 0 shows totals only (default 2)")


def metrics_url(args: argparse.Namespace) -> str:
    """--url, else the metrics address of --config, else the default address."""
    if getattr(args, "url", None):
        return str(args.url)
    if getattr(args, "config", None):
        from siem.config import load_config  # noqa: PLC0415 - only for --config

        host_port = load_config(args.config).daemon.metrics_host_port
        if host_port is None:
            raise ValueError(f"{args.config}: metrics are turned off (daemon.metrics_address = \"\")")
        host, port = host_port
        host = f"[{host}]" if ":" in host else host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{port}/metrics"
    return DEFAULT_URL


def run(args: argparse.Namespace) -> int:
    import sys

    from siem.errors import ConfigError

    try:
        url = metrics_url(args)
        first = fetch(url)
        second = None
        if args.interval > 0:
            time.sleep(args.interval)
            second = fetch(url)
        if getattr(args, "format", "text") == "json":
            import json  # noqa: PLC0415

            data = summary_data(second, first, args.interval) if second is not None else summary_data(first)
            text = json.dumps(data, indent=None, sort_keys=True)
        else:
            text = summarize(second, first, args.interval) if second is not None else summarize(first)
    except ConfigError as exc:
        print(f"siem status: invalid config:\n{exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"siem status: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0
