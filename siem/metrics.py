"""Every metric siem exports. The only module that imports prometheus_client.

Naming: ``siem_<noun>_<unit>[_total]``, base units (seconds, bytes), ``_total`` on counters, and only
bounded label values: input names and formats come from the config, rule ids from the rule files,
routes from the config. Never an IP, a user name or a host name as a label value.

Modules record through the objects below, e.g. ``metrics.EVENTS_RECEIVED.labels(input="syslog_tcp",
format="syslog").inc()``. Tests may read values with ``metrics.value(name, **labels)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    Metric,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from siem import __version__

# No `*_created` series: they double the exposition and no dashboard or alert of ours reads them.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)
# process_start_time_seconds (restart detection), process_resident_memory_bytes, open fds; python_info.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

BUILD_INFO = Info("siem_build", "Version of the running siem.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__, "role": "all"})


def set_role(role: str) -> None:
    """Which stage this process runs (`siem status` says so): all (embedded), collector, matcher, ..."""
    BUILD_INFO.info({"version": __version__, "role": role})


# --- intake ---------------------------------------------------------------------------------------
EVENTS_RECEIVED = Counter(
    "siem_events_received_total", "Raw records accepted by an input.", ["input", "format"], registry=REGISTRY
)
EVENTS_PARSED = Counter(
    "siem_events_parsed_total", "Records parsed into events without error.", ["input", "format"], registry=REGISTRY
)
EVENTS_FAILED = Counter(
    "siem_events_failed_total",
    "Records that could not be parsed (kept as events with error.message).",
    ["input", "format"],
    registry=REGISTRY,
)
BYTES_RECEIVED = Counter("siem_received_bytes_total", "Bytes accepted by an input.", ["input"], registry=REGISTRY)
INPUT_DROPPED = Counter(
    "siem_input_dropped_total",
    "Records an input had to drop or truncate, by reason (oversized, queue_full, bad_frame, bomb, ...).",
    ["input", "reason"],
    registry=REGISTRY,
)
INPUT_CONNECTIONS = Gauge("siem_input_connections", "Open connections per stream input.", ["input"], registry=REGISTRY)
AUDITD_EVENTS = Counter(
    "siem_auditd_events_total",
    "Linux audit events the auditd input assembled from their records, by what ended them (proctitle, eoe, "
    "standalone, newer_serial, timeout, overflow, oversized, late, not_audit).",
    ["input", "end"],
    registry=REGISTRY,
)
INPUT_ERRORS = Counter(
    "siem_input_errors_total", "Errors an input survived (I/O, TLS, decompression).", ["input", "reason"],
    registry=REGISTRY,
)
RELP_UNACKED = Counter(
    "siem_relp_unacked_total", "RELP messages in the log whose ack was never sent (the connection ended first); "
    "the client sends each again.", ["input"], registry=REGISTRY,
)
RELP_DUPLICATES = Counter(
    "siem_relp_duplicates_total", "RELP messages of a new session repeating the unacknowledged tail of the "
    "previous session from the same address (appended again).", ["input"], registry=REGISTRY,
)
INPUT_LAST_EVENT = Gauge(
    "siem_input_last_event_timestamp_seconds", "Wall-clock time an input last received data.", ["input"],
    registry=REGISTRY,
)
TLS_CERT_EXPIRY = Gauge(
    "siem_tls_certificate_expiry_timestamp_seconds", "notAfter of the server certificate a TLS input uses.",
    ["input"], registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("siem_queue_depth", "Items waiting in a pipeline queue.", ["queue"], registry=REGISTRY)

# --- engine ---------------------------------------------------------------------------------------
BATCHES = Counter("siem_batches_total", "Micro-batches evaluated.", registry=REGISTRY)
BATCH_SECONDS = Histogram(
    "siem_batch_duration_seconds", "Time to evaluate one micro-batch.", buckets=_LATENCY_BUCKETS, registry=REGISTRY
)
EVENT_TO_ALERT_SECONDS = Histogram(
    "siem_event_to_alert_seconds",
    "Wall-clock delay from receiving the last contributing event to emitting its alert.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RULE_EVALUATIONS = Counter(
    "siem_rule_evaluations_total", "Events a rule's filter was evaluated on.", ["rule"], registry=REGISTRY
)
RULE_ERRORS = Counter(
    "siem_rule_errors_total", "Batches a rule failed on (an engine bug or unexpected input; the rule skips them).",
    ["rule"], registry=REGISTRY,
)
RULE_MATCHES = Counter("siem_rule_matches_total", "Events that passed a rule's filter.", ["rule"], registry=REGISTRY)
ALERTS_FIRED = Counter(
    "siem_alerts_fired_total", "Alerts emitted by the engine.", ["rule", "severity"], registry=REGISTRY
)
ALERTS_SUPPRESSED = Counter(
    "siem_alerts_suppressed_total", "Alerts muted by a rule's suppress clause.", ["rule"], registry=REGISTRY
)
EVENTS_LATE = Counter(
    "siem_events_late_total", "Events older than the watermark minus allowed lateness.", registry=REGISTRY
)
EVENTS_REPEATED = Counter(
    "siem_events_repeated_total",
    "Copies the engine made of events that stand for several (rsyslog's 'message repeated N times'), by "
    "outcome: expanded (a copy evaluated), capped (a repetition beyond MAX_REPEAT, not evaluated).",
    ["outcome"],
    registry=REGISTRY,
)
EVENTS_RELEASED_EARLY = Counter(
    "siem_events_released_early_total",
    "Events evaluated before the watermark reached them because pending events hit max_pending_events.",
    registry=REGISTRY,
)
EVENTS_FUTURE = Counter(
    "siem_events_future_total",
    "Events dated ahead of the wall clock by more than the allowed lateness (beyond future_skew: clamped).",
    registry=REGISTRY,
)
WINDOW_KEYS = Gauge("siem_window_keys", "Live keys held in window state.", ["rule"], registry=REGISTRY)
WINDOW_KEYS_EXPIRED = Counter(
    "siem_window_keys_expired", "Window keys dropped because all their events left the window (idle keys).",
    registry=REGISTRY)
WATERMARK = Gauge("siem_watermark_timestamp_seconds", "Event-time watermark of the engine.", registry=REGISTRY)

# --- durability -----------------------------------------------------------------------------------
LOG_APPENDED = Counter("siem_log_appended_records_total", "Records appended to the durable log.", registry=REGISTRY)
LOG_LAG = Gauge("siem_log_lag_records", "Records in the durable log not yet checkpointed by the engine.",
                registry=REGISTRY)
STAGE_STALLED = Gauge(
    "siem_stage_stalled", "1 while a pipeline stage (engine, checkpoint writer) has stopped moving.", registry=REGISTRY
)
CHECKPOINT_AGE = Gauge("siem_checkpoint_age_seconds", "Seconds since the last engine checkpoint.", registry=REGISTRY)
LOG_CORRUPT = Counter("siem_log_corrupt_records_total", "Corrupt records skipped in the durable log.",
                      registry=REGISTRY)
BLOCK_PREFILTERED = Counter(
    "siem_block_records_prefiltered_total",
    "Records kept with their raw text and time only, because no loaded rule can match them (siem.parse.block).",
    ["format"],
    registry=REGISTRY,
)
LOG_BLOCKS_REPARSED = Counter(
    "siem_log_blocks_reparsed_total",
    "Columnar log records parsed again from their raw lines, because the rules now read fields they lack.",
    registry=REGISTRY,
)
LOG_UNDECODABLE = Counter(
    "siem_log_undecodable_records_total", "Log records with a valid checksum that are not a JSON event.",
    registry=REGISTRY,
)
CHECKPOINT_CORRUPT = Counter(
    "siem_checkpoint_corrupt_total", "Corrupt or wrong-version checkpoints discarded on a fresh start.",
    registry=REGISTRY,
)
STATE_REFUSED = Counter(
    "siem_state_refused_total",
    "State snapshots and checkpoints refused on load (reason: legacy_pickle, not_a_snapshot, version, truncated, "
    "zero_filled, checksum, malformed).",
    ["reason"],
    registry=REGISTRY,
)
KAFKA_POISON = Counter(
    "siem_kafka_poison_messages_total",
    "Kafka messages skipped because they cannot be used (reason: not_json, oversized, bad_header, ...).",
    ["topic", "reason"],
    registry=REGISTRY,
)
KAFKA_COMMIT_FAILED = Counter(
    "siem_kafka_commit_failed_total", "Offset commits refused by the group coordinator (e.g. during a rebalance).",
    ["group"], registry=REGISTRY,
)
KAFKA_LAG = Gauge(
    "siem_kafka_consumer_lag_records",
    "Records of a partition not yet read by this consumer group member (high-water mark - position).",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
KAFKA_IDEMPOTENT = Gauge(
    "siem_kafka_idempotent_producer", "1 when this process's Kafka producer is idempotent (no duplicates on retry).",
    registry=REGISTRY,
)
KAFKA_REBALANCES = Counter(
    "siem_kafka_rebalances_total", "Partition assignment changes seen by a consumer.", ["group", "change"],
    registry=REGISTRY,
)

# --- alerting -------------------------------------------------------------------------------------
NOTIFICATIONS_SENT = Counter("siem_notifications_sent_total", "Notifications delivered.", ["route"], registry=REGISTRY)
NOTIFICATIONS_FAILED = Counter(
    "siem_notifications_failed_total", "Delivery attempts that failed.", ["route"], registry=REGISTRY
)
NOTIFICATIONS_RETRIED = Counter(
    "siem_notifications_retried_total", "Delivery attempts that were retries.", ["route"], registry=REGISTRY
)
NOTIFICATIONS_DEAD = Counter(
    "siem_notifications_dead_total", "Notifications given up on and sent to the fallback route.", ["route"],
    registry=REGISTRY,
)
NOTIFICATIONS_THROTTLED = Counter(
    "siem_notifications_throttled_total", "Notifications folded into a summary by the rate limit.", ["route"],
    registry=REGISTRY,
)
ALERTS_HELD = Counter(
    "siem_alerts_held_total",
    "Alerts not notified on a route, by why: rate_limit (folded into a summary; `siem alerts show` says so) or "
    "no_route (route=\"\": only in the alert log).", ["route", "severity", "reason"], registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge("siem_outbox_depth", "Notifications waiting in the outbox.", registry=REGISTRY)
ALERTS_DUPLICATE = Counter(
    "siem_alerts_duplicate_total", "Alerts dropped at intake because their id was already taken in (replays).",
    registry=REGISTRY,
)

# --- operations -----------------------------------------------------------------------------------
RELOADS = Counter(
    "siem_reloads_total", "Rule/config reloads, by result (success, failure).", ["result"], registry=REGISTRY
)
RULES_LOADED = Gauge("siem_rules_loaded", "Rules in the running rule set.", registry=REGISTRY)
SIGMA_RULES_SKIPPED = Gauge(
    "siem_sigma_rules_skipped", "Sigma rule files in the rule paths that could not be converted (see the warnings).",
    registry=REGISTRY,
)


# --- known label sets -----------------------------------------------------------------------------

# The reasons each input type counts drops and errors under (siem/collect/<type>.py), so that every
# (input, reason) series exists from the start.
INPUT_REASONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # type: (dropped, errors)
    "syslog": (("oversized", "truncated", "bad_frame", "empty", "queue_full", "kernel", "shutdown"),
               ("connection", "connection_limit", "source_limit", "idle_timeout", "handshake_timeout",
                "tls_handshake", "peer_not_permitted", "read", "udp", "sink", "evicted", "state_write")),
    "files": (("oversized",), ("io", "corrupt_state", "internal", "bomb", "state_write")),
    "cloudtrail": (("too_many_records",), ("io", "corrupt_state", "internal", "missing_directory", "state_write")),
    "journald": (("oversized",), ("spawn_failed", "subprocess_exit", "bad_cursor", "corrupt_state", "internal",
                                  "state_write")),
}


def init_series(inputs: Iterable[tuple[str, str, str]], rules: Iterable[tuple[str, str, bool]],
                routes: Iterable[str]) -> None:
    """Create every labelled series whose label values are known at start, at 0: (input name, input type,
    format) of each configured input, (rule id, severity, has a correlation) of each rule, and the route
    names. A counter that was never incremented has no series, and `rate()` over it returns nothing: a
    dashboard panel stays empty and `absent()`-style alerts misfire until the first event of its kind.
    Idempotent (an existing child keeps its value), so a reload calls it again for new names."""
    for name, kind, fmt in inputs:
        for family in (EVENTS_RECEIVED, EVENTS_PARSED, EVENTS_FAILED):
            family.labels(input=name, format=fmt)
        BYTES_RECEIVED.labels(input=name)
        dropped, errors = INPUT_REASONS.get(kind, ((), ()))
        for reason in dropped:
            INPUT_DROPPED.labels(input=name, reason=reason)
        for reason in errors:
            INPUT_ERRORS.labels(input=name, reason=reason)
        if kind == "syslog":
            INPUT_CONNECTIONS.labels(input=name)
    for rule, severity, correlated in rules:
        for family in (RULE_EVALUATIONS, RULE_MATCHES, RULE_ERRORS, ALERTS_SUPPRESSED):
            family.labels(rule=rule)
        ALERTS_FIRED.labels(rule=rule, severity=severity)
        if correlated:
            WINDOW_KEYS.labels(rule=rule)
    severities = ("info", "low", "medium", "high", "critical")  # siem.alert.record.SEVERITIES
    for route in routes:
        for family in (NOTIFICATIONS_SENT, NOTIFICATIONS_FAILED, NOTIFICATIONS_RETRIED, NOTIFICATIONS_DEAD,
                       NOTIFICATIONS_THROTTLED):
            family.labels(route=route)
        for severity in severities:
            ALERTS_HELD.labels(route=route, severity=severity, reason="rate_limit")
    for severity in severities:
        ALERTS_HELD.labels(route="", severity=severity, reason="no_route")
    for result in ("success", "failure"):
        RELOADS.labels(result=result)
    QUEUE_DEPTH.labels(queue="intake")


def render() -> bytes:
    """The text exposition of every metric."""
    return generate_latest(REGISTRY)


def serve(host: str, port: int) -> int:
    """Serve /metrics on host:port from a daemon thread; returns the bound port (useful with port 0)."""
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_port)


def value(name: str, **labels: str) -> float:
    """Current value of a sample (for tests and `siem status`); 0.0 when absent."""
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def sum_by(name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` summed per value of ``label`` (e.g. alerts fired per severity)."""
    out: dict[str, float] = {}
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == name and label in s.labels:
                out[s.labels[label]] = out.get(s.labels[label], 0.0) + float(s.value)
    return out


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) for every sample of a text exposition, e.g. a daemon's /metrics
    (for `siem status`). Raises ValueError on text that is not an exposition."""
    try:
        families = _parse_text(text)
    except Exception as exc:  # the parser raises assorted errors on garbage
        raise ValueError(f"not a Prometheus text exposition: {exc}") from exc
    return [(s.name, dict(s.labels), float(s.value)) for family in families for s in family.samples]


def _parse_text(text: str) -> list[Metric]:
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(text))

