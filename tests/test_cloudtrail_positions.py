"""CloudTrail positions of constant size (issue 15.6): thousands of files grow the daemon's log linearly,
and after restarts (five kill -9 and a SIGTERM) no file is read twice."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import orjson
import pytest

from daemon_support import DaemonProc, wait_for
from siem.log.local import read_log_readonly

DAY = "AWSLogs/111122223333/CloudTrail/us-east-1/2022/11/10"
FILES = 3000


def _put_files(root: Path, start: int, stop: int) -> None:
    d = root / DAY
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        rec = {"eventVersion": "1.08", "eventID": f"ev-{i:06d}", "eventTime": "2022-11-10T16:24:34Z",
               "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1",
               "sourceIPAddress": "198.51.100.7", "recipientAccountId": "111122223333",
               "userIdentity": {"type": "IAMUser", "userName": "alice"}}
        name = f"111122223333_CloudTrail_us-east-1_20221110T1624Z_{i:06d}abcdefgh.json"
        (d / name).write_bytes(orjson.dumps({"Records": [rec]}))


def _scan(state: Path) -> tuple[list[str], list[int]]:
    """eventIDs of the events in the log, and the size of every position record of the cloudtrail input."""
    ids, marks = [], []
    pattern = re.compile(rb"ev-(\d{6})")
    for _, payload in read_log_readonly(state / "log"):
        if payload[:1] == b"P":  # a Positions record (siem.pipeline.records)
            marks.append(len(payload))
            continue
        m = pattern.search(payload)
        if m:
            ids.append(m.group(1).decode())
    return ids, marks


@pytest.mark.timeout(300)
def test_thousands_of_files_log_linear_positions_and_none_is_read_twice(tmp_path: Path) -> None:
    root = tmp_path / "trail"
    _put_files(root, 0, FILES // 2)
    d = DaemonProc.create(tmp_path, 'rule r { when user.name == "nobody-at-all" }\n',
                          {"ct": {"type": "cloudtrail", "directory": str(root), "poll_interval": "100ms"}},
                          daemon={"parse_workers": 0}, extra="\n[log]\nretention_bytes = 0\n")
    try:
        for kill in range(1, 6):  # five kill -9 mid-stream, each after another twelfth of the files
            d.start()
            wait_for(lambda: len(_scan(d.state_dir)[0]) >= kill * FILES // 12, 120, f"{kill} twelfths of the files")
            os.kill(d.proc.pid, signal.SIGKILL)
            d.proc.wait(10)
        d.start()
        wait_for(lambda: len(set(_scan(d.state_dir)[0])) >= FILES // 2, 120, "the first half")
        assert d.terminate() == 0  # a clean restart in the middle too
        _put_files(root, FILES // 2, FILES)
        d.start()
        wait_for(lambda: len(set(_scan(d.state_dir)[0])) >= FILES, 180, "every file")
        time.sleep(1.0)  # nothing more comes
        assert d.terminate() == 0
    finally:
        d.close()
    ids, marks = _scan(d.state_dir)
    repeated = len(ids) - len(set(ids))
    per_file = sum(marks) / FILES
    print(f"\ncloudtrail {FILES} files: {len(marks)} position records, {sum(marks)} bytes "
          f"({per_file:.0f} B per file), largest {max(marks)} B; files read twice: {repeated}")
    assert len(set(ids)) == FILES
    assert repeated == 0
    assert max(marks) < 256 * 200  # MAX_DELTA_FILES entries at most, whatever the number of files
    # linear: the old whole-set records cost ~ FILES * 100 B (300 kB) per file here; the delta records cost
    # ~400 B per file on an idle machine and more when commits are slower (a record holds the files done
    # since the last commit, at most MAX_DELTA_FILES), never a multiple of FILES
    assert per_file < 20_000
