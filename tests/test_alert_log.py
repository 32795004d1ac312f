"""The alert log: JSON lines, size rotation, torn-tail repair, reading back in order."""

from __future__ import annotations

import orjson

from siem.alert.alertlog import AlertLog, iter_log, log_files
from siem.alert.record import Alert, alert_id


def mk(n: int) -> Alert:
    group = (("source.ip", "192.0.2.1"),)
    return Alert(id=alert_id("r", group, n), rule_id="r", title="t", severity="low", tags=(), group=group,
                 first_ms=n, last_ms=n, count=1, message="m" * 100)


def test_each_alert_is_one_json_line(tmp_path):
    """Appended alerts read back as the same records, one JSON object per line."""
    log = AlertLog(tmp_path / "alerts.jsonl", max_bytes=1 << 20, keep=2)
    log.append([mk(0).dumps(), mk(1).dumps()])
    log.close()
    lines = (tmp_path / "alerts.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["id"] for x in lines] == [mk(0).id, mk(1).id]
    assert list(iter_log(tmp_path / "alerts.jsonl")) == [mk(0), mk(1)]


def test_rotation_keeps_n_files_and_reads_oldest_first(tmp_path):
    """Past max_bytes the log rotates to .1, .2 ...; older than keep is deleted; reading stays ordered."""
    log = AlertLog(tmp_path / "alerts.jsonl", max_bytes=4096, keep=2)
    for i in range(100):
        log.append([mk(i).dumps()])
    log.close()
    files = log_files(tmp_path / "alerts.jsonl")
    assert [f.name for f in files] == ["alerts.jsonl.2", "alerts.jsonl.1", "alerts.jsonl"]
    ids = [a.first_ms for a in iter_log(tmp_path / "alerts.jsonl")]
    assert ids == sorted(ids) and ids[-1] == 99 and len(ids) < 100
    assert all(f.stat().st_size <= 4096 for f in files)


def test_torn_last_line_is_cut_on_open(tmp_path):
    """A half-written line from a crash is removed, so the next alert starts on a clean line."""
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(mk(0).dumps() + b"\n" + mk(1).dumps()[:40])
    log = AlertLog(path, max_bytes=1 << 20, keep=1)
    log.append([mk(2).dumps()])
    log.close()
    assert [a.first_ms for a in iter_log(path)] == [0, 2]


def test_corrupt_line_is_skipped_when_reading(tmp_path):
    """A garbage line in the middle does not hide the alerts around it."""
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(mk(0).dumps() + b"\n{not json\n" + mk(1).dumps() + b"\n")
    assert [a.first_ms for a in iter_log(path)] == [0, 1]


def test_alert_with_numpy_and_odd_values_is_logged(tmp_path):
    """Aggregates holding numpy scalars, sets and bytes (as an engine may produce) are written, not refused."""
    import numpy as np

    a = Alert(id="x1", rule_id="r", title="t", severity="low", tags=(), group=(), first_ms=0, last_ms=0, count=1,
              message="m", aggregates={"count": np.int64(7), "mean": np.float64(1.5), "users": {"b", "a"}},
              events=({"raw": b"\xff\x00"},))
    log = AlertLog(tmp_path / "alerts.jsonl", max_bytes=1 << 20, keep=1)
    log.append([a.dumps()])
    log.close()
    (back,) = iter_log(tmp_path / "alerts.jsonl")
    assert back.aggregates == {"count": 7, "mean": 1.5, "users": ["a", "b"]}
    assert back.events == ({"raw": "\\xff\x00"},)
