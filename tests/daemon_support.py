"""Helpers for the daemon integration tests: a generated config, the real daemon as a subprocess, polling.

    d = DaemonProc.start(tmp_path, rules=SSH_RULES, inputs=TCP_AND_FILES)
    d.send_tcp("syslog_tcp", [b"<38>Mar  1 ..."])
    d.wait_alerts(1)
    d.terminate()            # SIGTERM, returns the exit code
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SSH_RULES = """
macro ssh_failure = event.dataset == "sshd" and event.outcome == "failure"

rule ssh_bruteforce {
  title    "SSH brute force from one source"
  severity high
  when     ssh_failure
  count >= 5 within 5m by source.ip
  message  "{count} failed SSH logins from {source.ip}"
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_config(path: Path, daemon: dict, inputs: dict[str, dict], extra: str = "") -> Path:
    lines = ["[daemon]"] + [f"{k} = {toml_value(v)}" for k, v in daemon.items()]
    for name, table in inputs.items():
        lines.append(f"\n[inputs.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def sshd_line(ts: str, ip: str, n: int, user: str = "root") -> bytes:
    """One RFC 3164 sshd failure line (ts like 'Mar  1 10:00:01')."""
    return f"{ts} web1 sshd[{1000 + n % 50}]: Failed password for {user} from {ip} port {40000 + n} ssh2".encode()


@dataclass
class DaemonProc:
    base: Path
    config: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    stderr_path: Path = field(default_factory=lambda: Path("/dev/null"))
    starts: int = 0

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def alert_log(self) -> Path:
        return self.state_dir / "alerts" / "alerts.jsonl"

    @classmethod
    def create(cls, base: Path, rules: str, inputs: dict[str, dict], daemon: dict | None = None,
               extra: str = "", env: dict[str, str] | None = None) -> DaemonProc:
        (base / "rules").mkdir(parents=True, exist_ok=True)
        (base / "rules" / "test.rules").write_text(rules)
        settings = {"state_dir": str(base / "state"), "rules": [str(base / "rules")],
                    "metrics_address": f"127.0.0.1:{free_port()}", "log_format": "json", **(daemon or {})}
        config = write_config(base / "siem.toml", settings, inputs, extra)
        return cls(base, config, {**os.environ, **(env or {})})

    def start(self, wait_ready: bool = True, args: tuple[str, ...] = ()) -> DaemonProc:
        self.starts += 1
        self.stderr_path = self.base / f"daemon-{self.starts}.log"
        run_file = self.state_dir / "run.json"
        if run_file.exists():
            run_file.unlink()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "siem", "run", "--config", str(self.config), *args],
            cwd=self.base, env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "wb"),
        )
        if wait_ready:
            wait_for(self._running, 30, f"the daemon to start (log: {self.stderr_path})")
        return self

    def _running(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.stderr()}")
        try:
            info = json.loads((self.state_dir / "run.json").read_text())
        except (OSError, ValueError):
            return False
        return self.proc is not None and info.get("pid") == self.proc.pid

    def run_info(self) -> dict:
        return json.loads((self.state_dir / "run.json").read_text())

    def port(self, input_name: str) -> int:
        return int(self.run_info()["inputs"][input_name]["port"])

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.run_info()['metrics_port']}/metrics"

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def send_tcp(self, input_name: str, lines: list[bytes]) -> None:
        with socket.create_connection(("127.0.0.1", self.port(input_name)), timeout=10) as s:
            s.sendall(b"".join(line + b"\n" for line in lines))

    def alerts(self) -> list[dict]:
        out = []
        try:
            text = self.alert_log.read_text()
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a torn last line of a killed daemon is repaired at the next start
        return out

    def wait_alerts(self, n: int, timeout_s: float = 30) -> list[dict]:
        return wait_for(lambda: (a := self.alerts()) and len(a) >= n and a, timeout_s,  # type: ignore[return-value]
                        f"{n} alert(s) in {self.alert_log}")

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)

    def terminate(self, timeout_s: float = 30) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def replay_ids(rules_dir: Path, files: list[Path], lateness: str = "10s") -> list[str]:
    """Alert ids `siem replay` gives over the same files."""
    out = subprocess.run(
        [sys.executable, "-m", "siem", "replay", "--quiet", "--lateness", lateness, "--rules", str(rules_dir),
         *map(str, files)], capture_output=True, check=True, timeout=120, cwd=ROOT,
    )
    return [json.loads(line)["id"] for line in out.stdout.splitlines() if line.strip()]
