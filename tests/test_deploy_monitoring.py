"""deploy/prometheus and deploy/grafana: promtool accepts the rules, their unit tests pass, the
exposition passes `promtool check metrics`, and every query in the rules and the dashboard names only
metrics (and labels) that siem.metrics exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "siem-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "siem-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "siem-dashboard.json"
GENERATOR = ROOT / "deploy" / "grafana" / "make_dashboard.py"

# Every labelled metric gets one child so that each series exists in the exposition, as in a daemon
# that has seen traffic. Run in a subprocess so this test's registry stays untouched.
EXPOSITION_SCRIPT = """
import sys
from prometheus_client.metrics import MetricWrapperBase
from siem import metrics
for obj in vars(metrics).values():
    if isinstance(obj, MetricWrapperBase) and obj._labelnames:
        obj.labels(**{name: "x" for name in obj._labelnames})
sys.stdout.write(metrics.render().decode())
"""

SCRAPE_LABELS = {"job", "instance"}
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                   "offset", "bool", "inf", "nan", "atan2"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (Debian package `prometheus`); `make test` installs it "
                    "through deploy/install-test-deps.sh")
    return path


@pytest.fixture(scope="module")
def exposition() -> str:
    result = subprocess.run([sys.executable, "-c", EXPOSITION_SCRIPT], capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout


@pytest.fixture(scope="module")
def exported(exposition: str) -> dict[str, set[str]]:
    """sample name -> label names it can carry once scraped (scrape labels included)."""
    names: dict[str, set[str]] = {"up": set(SCRAPE_LABELS)}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            names.setdefault(sample.name, set(SCRAPE_LABELS)).update(sample.labels)
    return names


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], list[set[str]]]:
    """The metric selectors of a PromQL expression, as (metric name, label names matched), and the
    label sets of its `by`/`on`/... clauses. Enough PromQL for our rules and panels, not a parser."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values can hold anything
    found: list[tuple[str, set[str]]] = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}", text):
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        found.append((m.group(1) or "", labels))
    text = re.sub(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{[^}]*\}", " ", text)
    groupings = [set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", g)) for g in
                 re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text)]
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        if m.group(1) not in PROMQL_KEYWORDS:
            found.append((m.group(1), set()))
    return found, groupings


def unknown_references(expr: str, exported: dict[str, set[str]]) -> list[str]:
    found, groupings = selectors(expr)
    problems = []
    for name, labels in found:
        if name not in exported:
            problems.append(f"unknown metric {name!r}")
        elif labels - exported[name]:
            problems.append(f"{name} has no label(s) {sorted(labels - exported[name])}")
    known_labels = set().union(*(exported.get(name, set()) for name, _ in found)) | {"le"}
    for group in groupings:
        if group - known_labels:
            problems.append(f"grouping by unknown label(s) {sorted(group - known_labels)}")
    return problems


def _alert_rules() -> list[dict[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, object]:
    return json.loads(DASHBOARD.read_text())


def _panel_targets(dashboard: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    return [(str(panel["title"]), target) for panel in dashboard["panels"]  # type: ignore[union-attr]
            for target in panel.get("targets", [])]  # type: ignore[union-attr]


# --- Prometheus -----------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts deploy/prometheus/siem-alerts.yml."""
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_promtool_test_rules() -> None:
    """The promtool unit tests of the alerting rules pass."""
    result = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_rule_has_a_unit_test() -> None:
    """Each alert in siem-alerts.yml is exercised by at least one promtool test case."""
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    assert {rule["alert"] for rule in _alert_rules()} - tested == set()


def test_alert_rules_reference_exported_metrics(exported: dict[str, set[str]]) -> None:
    """Alert expressions name only metrics and labels that siem.metrics exports (or `up`)."""
    problems = {rule["alert"]: unknown_references(rule["expr"], exported) for rule in _alert_rules()}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.timeout(60)
def test_promtool_check_metrics(exposition: str) -> None:
    """`promtool check metrics` finds nothing to complain about in the exposition."""
    result = subprocess.run([_promtool(), "check", "metrics"], input=exposition, capture_output=True, text=True,
                            timeout=50)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_exposition_covers_the_operations_metrics(exported: dict[str, set[str]]) -> None:
    """The metrics issue 6 asks for are all exported."""
    wanted = {
        "siem_events_received_total", "siem_events_parsed_total", "siem_events_failed_total",
        "siem_received_bytes_total", "siem_input_dropped_total", "siem_queue_depth",
        "siem_batch_duration_seconds_bucket", "siem_event_to_alert_seconds_bucket", "siem_rule_evaluations_total",
        "siem_rule_matches_total", "siem_alerts_fired_total", "siem_notifications_sent_total",
        "siem_notifications_failed_total", "siem_notifications_retried_total", "siem_outbox_depth",
        "siem_log_lag_records", "siem_checkpoint_age_seconds", "siem_window_keys", "siem_reloads_total",
        "siem_build_info", "process_start_time_seconds",
    }
    assert wanted - set(exported) == set()


# --- Grafana --------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_dashboard_matches_its_generator() -> None:
    """The committed dashboard JSON is what deploy/grafana/make_dashboard.py produces."""
    result = subprocess.run([sys.executable, "-c",
                             f"import runpy; print(runpy.run_path({str(GENERATOR)!r})['render'](), end='')"],
                            capture_output=True, text=True, timeout=50, check=True)
    assert result.stdout == DASHBOARD.read_text()


def test_dashboard_has_a_prometheus_datasource_variable() -> None:
    """The dashboard defines `datasource`, a variable listing Prometheus data sources, for import."""
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}  # type: ignore[index]
    assert ({k: variables["datasource"][k] for k in ("type", "query")}, dashboard["uid"], dashboard["schemaVersion"]) == (
        {"type": "datasource", "query": "prometheus"}, "siem-overview", 39)


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    """No panel, query or variable is tied to a particular data source."""
    dashboard = _dashboard()
    wrong = [p["title"] for p in dashboard["panels"] if p["type"] != "row"  # type: ignore[union-attr]
             and p.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}]
    wrong += [title for title, t in _panel_targets(dashboard) if t.get("datasource", {}).get("uid") != "${datasource}"]  # type: ignore[union-attr]
    wrong += [v["name"] for v in dashboard["templating"]["list"]  # type: ignore[index]
              if v["type"] == "query" and v["datasource"]["uid"] != "${datasource}"]
    assert wrong == []


def test_dashboard_queries_reference_exported_metrics(exported: dict[str, set[str]]) -> None:
    """Every panel query names only metrics and labels that siem.metrics exports."""
    problems = {f"{title} / {t['refId']}": unknown_references(str(t["expr"]), exported)
                for title, t in _panel_targets(_dashboard())}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.timeout(60)
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (Grafana's variables replaced by sample values)."""
    rules = []
    for i, (_, target) in enumerate(_panel_targets(_dashboard())):
        expr = (str(target["expr"]).replace("$__rate_interval", "1m").replace("$__range", "6h")
                .replace("$instance", ".*"))
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_do_not_overlap() -> None:
    """No two panels share a cell of the grid, and all fit within its 24 columns."""
    taken: dict[tuple[int, int], str] = {}
    clashes = []
    for panel in _dashboard()["panels"]:  # type: ignore[union-attr]
        pos = panel["gridPos"]
        if pos["x"] + pos["w"] > 24:
            clashes.append(f"{panel['title']} exceeds 24 columns")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in taken:
                    clashes.append(f"{panel['title']} overlaps {taken[(x, y)]}")
                taken[(x, y)] = panel["title"]
    assert sorted(set(clashes)) == []


def test_selector_extraction() -> None:
    """The PromQL reference extractor sees metric names, matcher labels and groupings, not functions."""
    found, groups = selectors('sum by (input) (rate(siem_x_total{reason="a{b}", job="siem"}[5m] offset 15m)) '
                              '/ on (input) up > 0.05 and time() - siem_y')
    assert (sorted((n, sorted(ls)) for n, ls in found), groups) == (
        [("siem_x_total", ["job", "reason"]), ("siem_y", []), ("up", [])], [{"input"}, {"input"}])


def test_every_alert_rule_links_its_runbook_section() -> None:
    """Each rule's runbook_url names a section of deploy/prometheus/RUNBOOK.md that exists."""
    runbook = (ROOT / "deploy" / "prometheus" / "RUNBOOK.md").read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^## (.+)$", runbook, re.M)}
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    missing = [r["alert"] for r in rules
               if r.get("annotations", {}).get("runbook_url", "").rpartition("#")[2] not in anchors]
    assert rules and missing == []
