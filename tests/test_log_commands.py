"""`siem log verify|dump|checkpoint`: read-only inspection of the durable log, run as the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from siem.log.checkpoint import save_checkpoint
from siem.log.codec import encode_events
from siem.log.local import HEADER, LocalLog, segment_name

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def siem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siem", "log", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=30)


def make_log(state_dir: Path, n: int = 60) -> list[int]:
    with LocalLog(state_dir / "log", segment_bytes=1024) as log:
        log.append_many(encode_events([{"seq": i, "message": "x" * 20} for i in range(n)]))
        return log.segments


def test_verify_clean_log_exits_zero(tmp_path: Path) -> None:
    """A clean log: one 'ok' line per segment, exit status 0."""
    bases = make_log(tmp_path)
    out = siem("verify", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == [segment_name(b) for b in bases]
    assert all(line.endswith("ok") for line in out.stdout.splitlines())


def test_verify_reports_corruption_in_a_sealed_segment(tmp_path: Path) -> None:
    """A flipped byte inside an older segment is reported as CORRUPT with its position; exit status 1."""
    bases = make_log(tmp_path)
    first = tmp_path / "log" / segment_name(bases[0])
    raw = bytearray(first.read_bytes())
    raw[HEADER.size + 2] ^= 0xFF
    first.write_bytes(bytes(raw))
    out = siem("verify", str(tmp_path))
    assert out.returncode == 1
    assert "CORRUPT at byte 0: checksum mismatch" in out.stdout.splitlines()[0]


def test_dump_prints_events_from_an_offset(tmp_path: Path) -> None:
    """dump --from N --limit M prints M records as JSON lines starting at offset N."""
    make_log(tmp_path)
    out = siem("dump", str(tmp_path), "--from", "25", "--limit", "3")
    assert [orjson.loads(line) for line in out.stdout.splitlines()] == [
        {"offset": o, "event": {"seq": o, "message": "x" * 20}} for o in (25, 26, 27)]


def test_dump_works_while_the_log_is_locked(tmp_path: Path) -> None:
    """dump needs no lock: it reads while a LocalLog holds the directory."""
    make_log(tmp_path, 5)
    with LocalLog(tmp_path / "log", segment_bytes=1024):
        out = siem("dump", str(tmp_path))
    assert len(out.stdout.splitlines()) == 5


def test_checkpoint_shows_offset_or_the_problem(tmp_path: Path) -> None:
    """checkpoint prints the offset and state size; a corrupt one is explained with exit status 1."""
    save_checkpoint(tmp_path, 42, b"s" * 10)
    assert siem("checkpoint", str(tmp_path)).stdout.strip() == "offset 42  state 10 bytes"
    (tmp_path / "checkpoint").write_bytes(b"junk" * 20)
    bad = siem("checkpoint", str(tmp_path))
    assert (bad.returncode, "not a siem checkpoint" in bad.stderr) == (1, True)
