"""Writes deploy/grafana/siem-dashboard.json, the Grafana dashboard for siem.

    python deploy/grafana/make_dashboard.py        # rewrite the JSON after editing the panels below

The JSON is generated so that panels stay consistent (one datasource variable, one instance filter,
a regular grid); tests/test_deploy_monitoring.py checks that the committed JSON matches this script
and that every query names only metrics siem exports.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("siem-dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'  # every query is filtered by the instance variable


def _target(expr: str, legend: str, ref: str) -> dict[str, object]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


class Layout:
    """Places panels left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[dict[str, object]] = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"id": self.next_id, "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.next_id += 1
        self.y += 1

    def add(self, kind: str, title: str, description: str, targets: list[tuple[str, str]], unit: str,
            w: int = 12, h: int = 8, **options: object) -> None:
        panel: dict[str, object] = {
            "id": self.next_id,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit, **options.pop("defaults", {})}, "overrides": []},
            "options": options.pop("panel_options", {}),
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"].setdefault("custom", {"drawStyle": "line", "fillOpacity": 10,  # type: ignore[index]
                                                                   "lineWidth": 1, "showPoints": "never"})
            panel["options"] = {"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                           "calcs": ["mean", "max"]},
                                "tooltip": {"mode": "multi", "sort": "desc"}, **panel["options"]}  # type: ignore[dict-item]
        self.next_id += 1
        self.panels.append(panel)

    def stat(self, title: str, description: str, expr: str, unit: str, thresholds: list[tuple[float | None, str]],
             w: int = 4) -> None:
        steps = [{"color": color, "value": value} for value, color in thresholds]
        self.add("stat", title, description, [(expr, "")], unit, w=w, h=4,
                 defaults={"thresholds": {"mode": "absolute", "steps": steps}},
                 panel_options={"colorMode": "background", "graphMode": "area", "justifyMode": "auto",
                                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                "textMode": "auto"})


def rate(metric: str, by: str, extra: str = "") -> str:
    matchers = f"{SEL}, {extra}" if extra else SEL
    return f"sum by ({by}) (rate({metric}{{{matchers}}}[$__rate_interval]))"


def quantiles(metric: str) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))", f"p{p}")
            for q, p in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))]


def build() -> dict[str, object]:
    L = Layout()
    green, amber, red = "green", "orange", "red"

    L.row("Overview")
    L.stat("Up", "Targets of the siem job that Prometheus can scrape.",
           f'sum(up{{job="siem", {SEL}}})', "none", [(None, red), (1, green)])
    L.stat("Events/s", "Records accepted by all inputs.",
           f"sum(rate(siem_events_received_total{{{SEL}}}[$__rate_interval]))", "ops", [(None, green)])
    L.stat("Parse errors", "Share of records that failed to parse.",
           f"sum(rate(siem_events_failed_total{{{SEL}}}[$__rate_interval])) / "
           f"sum(rate(siem_events_received_total{{{SEL}}}[$__rate_interval]))",
           "percentunit", [(None, green), (0.01, amber), (0.05, red)])
    L.stat("Alerts (range)", "Alerts fired in the selected time range.",
           f"sum(increase(siem_alerts_fired_total{{{SEL}}}[$__range]))", "none", [(None, green), (1, amber)])
    L.stat("Outbox", "Notifications waiting for delivery.",
           f"sum(siem_outbox_depth{{{SEL}}})", "none", [(None, green), (10, amber), (100, red)])
    L.stat("Rules loaded", "Rules in the running rule set.",
           f"sum(siem_rules_loaded{{{SEL}}})", "none", [(None, red), (1, green)])

    L.row("Intake")
    L.add("timeseries", "Events received by input", "Records accepted per second, by input.",
          [(rate("siem_events_received_total", "input"), "{{input}}")], "ops")
    L.add("timeseries", "Bytes received by input", "Bytes accepted per second, by input.",
          [(rate("siem_received_bytes_total", "input"), "{{input}}")], "Bps")
    L.add("timeseries", "Parse errors by input and format",
          "Records per second that could not be parsed (kept with error.message).",
          [(rate("siem_events_failed_total", "input, format"), "{{input}} {{format}}")], "ops")
    L.add("timeseries", "Parse error ratio by input", "Failed / received; the alert fires above 5 %.",
          [(f"{rate('siem_events_failed_total', 'input')} / {rate('siem_events_received_total', 'input')}",
            "{{input}}")], "percentunit")
    L.add("timeseries", "Dropped or truncated records",
          "By input and reason (queue_full: siem could not keep up; kernel: the UDP receive buffer overflowed).",
          [(rate("siem_input_dropped_total", "input, reason"), "{{input}} {{reason}}")], "ops", w=6)
    L.add("timeseries", "Input errors", "Errors the inputs survived (I/O, TLS, framing), by reason.",
          [(rate("siem_input_errors_total", "input, reason"), "{{input}} {{reason}}")], "ops", w=6)
    L.add("timeseries", "Connections and queues", "Open stream connections and items waiting in queues.",
          [(f"sum by (input) (siem_input_connections{{{SEL}}})", "conn {{input}}"),
           (f"sum by (queue) (siem_queue_depth{{{SEL}}})", "queue {{queue}}")], "none", w=6)
    L.add("bargauge", "TLS certificates", "Time left until each TLS input's server certificate expires.",
          [(f"min by (input) (siem_tls_certificate_expiry_timestamp_seconds{{{SEL}}}) - time()", "{{input}}")],
          "s", w=6, defaults={"thresholds": {"mode": "absolute", "steps": [
              {"color": "red", "value": None}, {"color": "orange", "value": 7 * 86400},
              {"color": "green", "value": 30 * 86400}]}},
          panel_options={"displayMode": "basic", "orientation": "horizontal",
                         "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})

    L.row("Detection")
    L.add("timeseries", "Alerts by rule and severity", "Alerts fired per minute.",
          [(f"sum by (rule, severity) (rate(siem_alerts_fired_total{{{SEL}}}[$__rate_interval])) * 60",
            "{{rule}} ({{severity}})")], "none")
    L.add("bargauge", "Alerts in range by severity", "Alerts fired in the selected time range.",
          [(f"sum by (severity) (increase(siem_alerts_fired_total{{{SEL}}}[$__range]))", "{{severity}}")],
          "none", panel_options={"displayMode": "gradient", "orientation": "horizontal",
                                 "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    L.add("table", "Recent alerts by rule and severity",
          "Alerts fired in the selected time range per rule and severity, most first (every rule is listed, "
          "with 0 when it did not fire). The alerts themselves: `siem alerts list` or the alert log.",
          [(f"sort_desc(sum by (rule, severity) (increase(siem_alerts_fired_total{{{SEL}}}[$__range])))", "")],
          "none", w=12, h=10, panel_options={"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]})
    table = L.panels[-1]
    table["targets"][0].update({"instant": True, "range": False, "format": "table"})  # type: ignore[index]
    table["transformations"] = [{"id": "organize", "options": {  # type: ignore[index]
        "excludeByName": {"Time": True}, "renameByName": {"Value": "alerts", "rule": "rule", "severity": "severity"}}}]
    L.add("timeseries", "Alerts per hour by severity", "Alerts fired per hour, stacked by severity.",
          [(f"sum by (severity) (rate(siem_alerts_fired_total{{{SEL}}}[$__rate_interval])) * 3600", "{{severity}}")],
          "none", w=12, h=10, defaults={"custom": {"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1,
                                                   "showPoints": "never", "stacking": {"mode": "normal"}}})
    L.add("timeseries", "Rule matches (top 10)", "Events per second passing a rule's filter.",
          [(f"topk(10, {rate('siem_rule_matches_total', 'rule')})", "{{rule}}")], "ops", w=8)
    L.add("timeseries", "Suppressed alerts", "Alerts muted by suppress clauses, per minute.",
          [(f"{rate('siem_alerts_suppressed_total', 'rule')} * 60", "{{rule}}")], "none", w=8)
    L.add("timeseries", "Window state and late events", "Keys held in window state; events behind the watermark.",
          [(f"sum by (rule) (siem_window_keys{{{SEL}}})", "keys {{rule}}"),
           (f"sum(rate(siem_events_late_total{{{SEL}}}[$__rate_interval]))", "late events/s")], "none", w=8)

    L.row("Delivery")
    L.stat("Delivered (range)", "Notifications delivered in the selected time range.",
           f"sum(increase(siem_notifications_sent_total{{{SEL}}}[$__range]))", "none", [(None, green)], w=6)
    L.stat("Delivery failures (range)", "Failed delivery attempts in the selected time range (each is retried).",
           f"sum(increase(siem_notifications_failed_total{{{SEL}}}[$__range]))", "none",
           [(None, green), (1, amber)], w=6)
    L.stat("Given up (range)", "Notifications given up on (sent to the fallback route) in the selected range.",
           f"sum(increase(siem_notifications_dead_total{{{SEL}}}[$__range]))", "none", [(None, green), (1, red)], w=6)
    L.stat("Delivery success", "Share of delivery attempts that succeeded in the range (no attempts: 100 %).",
           f"(sum(increase(siem_notifications_sent_total{{{SEL}}}[$__range])) + 1e-9) / "
           f"(sum(increase(siem_notifications_sent_total{{{SEL}}}[$__range])) + "
           f"sum(increase(siem_notifications_failed_total{{{SEL}}}[$__range])) + 1e-9)",
           "percentunit", [(None, red), (0.9, amber), (0.99, green)], w=6)
    L.add("timeseries", "Notifications by route", "Delivered, failed and retried attempts per second.",
          [(rate("siem_notifications_sent_total", "route"), "sent {{route}}"),
           (rate("siem_notifications_failed_total", "route"), "failed {{route}}"),
           (rate("siem_notifications_retried_total", "route"), "retried {{route}}")], "ops")
    L.add("timeseries", "Outbox depth", "Notifications waiting; dead (given up) and throttled per minute.",
          [(f"sum(siem_outbox_depth{{{SEL}}})", "waiting"),
           (f"{rate('siem_notifications_dead_total', 'route')} * 60", "dead {{route}}"),
           (f"{rate('siem_notifications_throttled_total', 'route')} * 60", "throttled {{route}}")], "none")

    L.row("Latency")
    L.add("timeseries", "Batch evaluation time", "Time to evaluate one micro-batch of events.",
          quantiles("siem_batch_duration_seconds"), "s", w=8)
    L.add("timeseries", "Event to alert", "From receiving the last contributing event to emitting the alert.",
          quantiles("siem_event_to_alert_seconds"), "s", w=8)
    L.add("timeseries", "Batches", "Micro-batches evaluated per second.",
          [(f"sum(rate(siem_batches_total{{{SEL}}}[$__rate_interval]))", "batches/s")], "ops", w=8)

    L.row("Lag and durability")
    L.add("timeseries", "Log lag", "Records in the durable log not yet checkpointed by the engine.",
          [(f"sum by (instance) (siem_log_lag_records{{{SEL}}})", "{{instance}}")], "none", w=8)
    L.add("timeseries", "Checkpoint age", "Seconds since the last engine checkpoint; the alert fires above 300.",
          [(f"max by (instance) (siem_checkpoint_age_seconds{{{SEL}}})", "{{instance}}")], "s", w=8)
    L.add("timeseries", "Event-time lag", "Wall clock minus the engine's watermark, and since each input last "
          "received data.",
          [(f"time() - max by (instance) (siem_watermark_timestamp_seconds{{{SEL}}})", "watermark {{instance}}"),
           (f"time() - max by (input) (siem_input_last_event_timestamp_seconds{{{SEL}}})", "input {{input}}")],
          "s", w=8)
    L.add("timeseries", "Durable log", "Records appended per second; corrupt records skipped.",
          [(f"sum(rate(siem_log_appended_records_total{{{SEL}}}[$__rate_interval]))", "appended/s"),
           (f"sum(rate(siem_log_corrupt_records_total{{{SEL}}}[$__rate_interval]))", "corrupt/s")], "ops", w=8)
    L.add("timeseries", "Reloads", "Rule and config reloads by result, per hour.",
          [(f"sum by (result) (rate(siem_reloads_total{{{SEL}}}[$__rate_interval])) * 3600", "{{result}}")],
          "none", w=8)
    L.add("timeseries", "Process", "Resident memory and CPU of the daemon.",
          [(f"sum by (instance) (process_resident_memory_bytes{{{SEL}}})", "memory {{instance}}"),
           (f"sum by (instance) (rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval]))", "cpu {{instance}}")],
          "bytes", w=8,
          )
    process = L.panels[-1]
    process["fieldConfig"]["overrides"] = [  # type: ignore[index]
        {"matcher": {"id": "byRegexp", "options": "cpu .*"},
         "properties": [{"id": "unit", "value": "percentunit"}, {"id": "custom.axisPlacement", "value": "right"}]}]

    return {
        "__inputs": [],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "bargauge", "name": "Bar gauge", "version": ""},
            {"type": "panel", "id": "table", "name": "Table", "version": ""},
        ],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "Health of the siem log-correlation daemon: intake, detection, delivery, latency, lag.",
        "editable": True,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": L.panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["siem", "security"],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "includeAll": False, "multi": False,
             "options": []},
            {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
             "query": {"query": 'label_values(siem_build_info, instance)', "refId": "instance"},
             "definition": "label_values(siem_build_info, instance)", "current": {}, "hide": 0,
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "regex": "", "sort": 1,
             "options": []},
        ]},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": "siem",
        "uid": "siem-overview",
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
