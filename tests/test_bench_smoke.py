"""Smoke test of the benchmark harness: `python -m bench --quick` runs every section on tiny inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(150)
def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    """The quick run exits 0, prints the table and its JSON has every section filled in."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--data", str(tmp_path / "data")],
        cwd=ROOT, capture_output=True, timeout=140)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert b"Targets:" in proc.stdout
    res = json.loads(out.read_text())
    assert set(res["formats"]) == {"syslog", "nginx", "cloudtrail"}
    for f in res["formats"].values():
        assert "error" not in f, f.get("error")
        assert f["events"] > 0 and f["e2e_events_per_s"] > 0 and f["parse_events_per_s"] > 0
        assert set(f["stages"]) == {"read", "parse", "evaluate", "alerting"}
        assert f["peak_rss_mib"] > 0
    assert [r["rules"] for r in res["scaling"]["rows"]] == [10, 100, 1000]
    assert res["multicore"]["workers"] >= 1 and res["multicore"]["speedup"] > 0 and res["multicore"]["alerts"] > 0
    assert [r["rules"] for r in res["sec"]["rows"]] == [1, 50]
    assert all(r["same_sources"] and r["sources_equal_attackers"] for r in res["sec"]["rows"])
    assert res["memory"]["live_keys"] == res["memory"]["keys_fed"]
    assert res["snapshot"]["keys"] == 5_000 and res["snapshot"]["data_bytes"] > 0 and res["snapshot"]["decode_ratio"] > 0
    assert res["daemon"]["probes"] > 0 and res["daemon"]["probes_alerted"] == res["daemon"]["probes"]
    assert res["profile"]["top"] and res["profile"]["hottest_stage"] in res["profile"]["stage_share"]
    assert {t["status"] for t in res["targets"]} <= {"PASS", "MISS", "n/a"} and len(res["targets"]) >= 10


def test_workload_generator_is_deterministic() -> None:
    """The same seed gives the same lines; another seed gives other lines."""
    from bench.workload import cloudtrail_lines, nginx_lines, sshd_lines

    assert sshd_lines(500, seed=4).lines == sshd_lines(500, seed=4).lines
    assert sshd_lines(500, seed=4).lines != sshd_lines(500, seed=5).lines
    assert nginx_lines(300, seed=4) == nginx_lines(300, seed=4)
    assert cloudtrail_lines(200, seed=4) == cloudtrail_lines(200, seed=4)


def test_detection_report_table_goes_between_the_readme_markers(tmp_path) -> None:
    """bench.detection writes its table between the README markers and keeps everything else."""
    from collections import Counter

    from bench.detection import MARK_END, MARK_START, Result, table, write_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{MARK_START}\nold table\n{MARK_END}\noutro\n")
    text = table([Result("ds", "3 bots", "2 of 3", "0 (0.0/day over 2.0 days)", "note", Counter({"r": 2}))])
    write_readme(readme, text)
    doc = readme.read_text()
    assert doc.startswith("intro\n") and doc.endswith(f"{MARK_END}\noutro\n") and "old table" not in doc
    assert "| ds | 3 bots | 2 of 3 | 0 (0.0/day over 2.0 days) | r 2 | note |" in doc
    real = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert real.count(MARK_START) == 1 and real.count(MARK_END) == 1
