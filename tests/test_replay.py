"""`siem replay`: files in, alerts out as JSON lines, a summary on stderr."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson

RULE = """
rule ssh_bruteforce { severity high
  when event.dataset == "sshd" and event.outcome == "failure"
  count >= 5 within 5m by source.ip
  message "{count} failures from {source.ip}" }
"""


def sshd_lines(host: str, ip: str, start_s: int, n: int, step_s: int) -> list[str]:
    out = []
    for i in range(n):
        t = start_s + i * step_s
        out.append(f"Mar  9 {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d} {host} sshd[{100 + i}]: "
                   f"Failed password for root from {ip} port {40000 + i} ssh2\n")
    return out


def replay(tmp_path: Path, *files: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "r.rules"
    rules.write_text(RULE)
    return subprocess.run([sys.executable, "-m", "siem", "replay", "--rules", str(rules), *map(str, files), *extra],
                          capture_output=True, text=True, timeout=120)


def test_alerts_are_json_lines_with_the_fields_an_analyst_needs(tmp_path: Path) -> None:
    """One alert per line: rule, severity, times, group, count, message and sample events."""
    log = tmp_path / "auth.log"
    log.write_text("".join(sshd_lines("web01", "203.0.113.9", 3600, 6, 10)))
    result = replay(tmp_path, log)
    assert result.returncode == 0, result.stderr
    [alert] = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert (alert["rule"], alert["severity"], alert["group"], alert["count"]) == (
        "ssh_bruteforce", "high", {"source.ip": "203.0.113.9"}, 5)
    assert alert["message"] == "5 failures from 203.0.113.9"
    assert alert["first"].endswith("01:00:00.000Z") and alert["last"].endswith("01:00:40.000Z")
    assert len(alert["events"]) == 3 and "Failed password" in alert["events"][-1]["event.original"]
    assert "replay: 6 events from 1 file(s), 0 parse failures, 1 alerts" in result.stderr


def test_files_are_merged_by_event_time(tmp_path: Path) -> None:
    """Two hosts' logs given as two files give the alerts of one time-ordered file, including .gz input."""
    a = sshd_lines("web01", "198.51.100.1", 0, 30, 120)     # slow: one failure every 2 minutes
    b = sshd_lines("db01", "198.51.100.1", 60, 30, 120)     # the same source against another host
    one = tmp_path / "all.log"
    one.write_text("".join(sorted(a + b, key=lambda line: line[:15])))
    fa, fb = tmp_path / "a.log", tmp_path / "b.log.gz"
    fa.write_text("".join(a))
    with gzip.open(fb, "wt") as f:
        f.write("".join(b))
    merged, single = replay(tmp_path, fa, fb), replay(tmp_path, one)
    assert merged.returncode == single.returncode == 0
    ids = [orjson.loads(line)["id"] for line in merged.stdout.splitlines()]
    assert ids == [orjson.loads(line)["id"] for line in single.stdout.splitlines()] and len(ids) == 12


def test_directories_skip_documentation(tmp_path: Path) -> None:
    """A folder's README or LICENSE is not read as a log."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "auth.log").write_text("".join(sshd_lines("web01", "203.0.113.9", 0, 5, 1)))
    (tmp_path / "logs" / "LICENSE").write_text("Permission is hereby granted\n" * 50)
    (tmp_path / "logs" / "README.md").write_text("# notes\n")
    result = replay(tmp_path, tmp_path / "logs")
    assert "replay: 5 events from 1 file(s)" in result.stderr


def test_missing_file_and_broken_rules_exit_2(tmp_path: Path) -> None:
    """Usage errors name the problem and exit 2."""
    result = replay(tmp_path, tmp_path / "nope.log")
    assert result.returncode == 2 and "no such file" in result.stderr
    bad = tmp_path / "bad.rules"
    bad.write_text("rule r { when }")
    log = tmp_path / "a.log"
    log.write_text("x\n")
    result = subprocess.run([sys.executable, "-m", "siem", "replay", "--rules", str(bad), str(log)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "bad.rules:1:15: error[syntax]" in result.stderr


def test_garbage_input_is_counted_not_fatal(tmp_path: Path) -> None:
    """Binary junk and invalid UTF-8 are parse failures in the summary, and the run completes."""
    log = tmp_path / "junk.log"
    log.write_bytes(b"\x00\xff\xfe garbage\n" * 10 + "".join(sshd_lines("h", "203.0.113.9", 0, 5, 1)).encode())
    result = replay(tmp_path, log, extra=("--log-format", "syslog"))
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1


def test_line_blocks_split_lines_across_block_boundaries() -> None:
    """Lines come back whole and without their LF or CRLF, whatever the block size; a last line without a
    line end is kept; a lone CR inside a line stays."""
    import io  # noqa: PLC0415

    from siem.replay import line_blocks  # noqa: PLC0415

    data = b"first\r\nsecond\n\nthi\rrd\r\n" + b"x" * 50 + b"\nlast-without-newline"
    want = [b"first", b"second", b"", b"thi\rrd", b"x" * 50, b"last-without-newline"]
    for size in (1, 2, 3, 7, 64, 1 << 20):
        got = [ln for block in line_blocks(io.BytesIO(data), size) for ln in block]
        assert got == want, size
    assert list(line_blocks(io.BytesIO(b""))) == []
    assert [ln for b in line_blocks(io.BytesIO(b"a\nb\n")) for ln in b] == [b"a", b"b"]


def test_line_blocks_pass_an_endless_line_on_in_pieces() -> None:
    """A line with no line end (binary junk, a runaway writer) is not gathered forever: it goes on in pieces
    of bounded size, which the parser cuts and counts, and the lines after it are intact."""
    import io  # noqa: PLC0415

    from siem.replay import MAX_RECORD_BYTES, line_blocks  # noqa: PLC0415

    data = b"A" * (3 * MAX_RECORD_BYTES) + b"\nnext line\n"
    got = [ln for block in line_blocks(io.BytesIO(data), 1 << 20) for ln in block]
    assert got[-1] == b"next line"
    assert b"".join(got[:-1]) == b"A" * (3 * MAX_RECORD_BYTES)
    assert max(map(len, got)) <= MAX_RECORD_BYTES + (1 << 20)
