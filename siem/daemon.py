"""The daemon in embedded mode (``role = "all"``): the pipeline's stages wired in one process.

::

    collectors --sink--> Intake ---------------> LocalLog ---------> LocalEvaluator -----> AlertPipeline
    (siem.pipeline.      queue, parse, append      (siem.log.local)    engine, checkpoint    alert log first,
     collectors)         positions + watermark                                               dedup, delivery

This module only wires and runs them; what each stage guarantees is in its own docstring
(siem.pipeline.intake, siem.pipeline.evaluator). Crash safety (kill -9 at any moment):

* a record is *accepted* when the intake's append returned; each append carries the positions of the
  position-keeping inputs that cover exactly the records before them, so a restart resumes those inputs
  from the last positions in the log: no line read twice, none skipped;
* the watermark moves only with Watermark records in the log, so a replay of the log moves it identically;
* the engine's window state and the log offset it covers are written together, atomically, only after
  every alert of the events below that offset is in the alert log; after a restart the same alerts come
  again with the same ids and the alert pipeline drops the ids it already has.

Signals: SIGTERM/SIGINT drain (stop collectors, write what is queued, evaluate what is logged, final
checkpoint) and exit 0; SIGHUP reloads config and rules (an invalid set keeps the old one running).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from siem import metrics
from siem.alert.config import resolve_route_urls
from siem.alert.pipeline import AlertPipeline
from siem.alert.record import Alert
from siem.config import Config, InputSpec, init_metric_series, load_config
from siem.dsl.loader import RuleSet, load_rules
from siem.errors import ConfigError, RuleError, SiemError, StateError
from siem.log.checkpoint import remove_stale_temporaries
from siem.log.local import DirLock
from siem.logsetup import register_secret
from siem.pipeline.collectors import RunningInput, start_input, stop_input
from siem.pipeline.evaluator import Cadence, LocalEvaluator
from siem.pipeline.intake import Intake, ParsePool, drain, parse_context
from siem.pipeline.stores import LocalEventLog
from siem.pipeline.watermark import SourceWatermark, WatermarkPolicy
from siem.progress import ProgressCounts, ProgressReporter, daemon_intro
from siem.service import Notifier, has_terminal, watchdog_loop
from siem.statefile import make_private_dirs, write_atomic, write_json_atomic
from siem.timeutil import monotonic_ms

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # pid, bound ports: for `siem status`, `siem reload` and tests
PID_FILE = "siem.pid"


class Daemon:
    def __init__(self, config: Config, config_path: str | None, notifier: Notifier | None = None,
                 print_alerts: Callable[[list[Alert]], None] | None = None, progress: bool = False,
                 start_fresh: bool = False) -> None:
        self.config = config
        self.start_fresh = start_fresh  # a refused checkpoint is set aside instead of stopping the start
        self.config_path = config_path
        self.notifier = notifier or Notifier(None)
        self.print_alerts = print_alerts  # new alerts also to stdout (`siem run --print-alerts`, siem.alert.console)
        self.progress = progress  # siem.progress lines on stderr (`siem run --progress`)
        self.state_dir = Path(config.daemon.state_dir)
        self._stopping = asyncio.Event()
        self._reloading = False
        self._lock: DirLock | None = None
        self.pool: ParsePool | None = None
        self.intake: Intake | None = None
        self.evaluator: LocalEvaluator | None = None
        self.pipeline: AlertPipeline | None = None
        self.metrics_port: int | None = None
        self._last_events, self._last_status_ms = 0, monotonic_ms()

    # --- startup ----------------------------------------------------------------------------------

    def open_state(self, ruleset: RuleSet) -> None:
        """Lock the state directory, open the log, restore the checkpoint, build the stages."""
        d = self.config.daemon
        try:
            make_private_dirs(self.state_dir)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.state_dir}: {exc.strerror or exc}") from exc
        self._lock = DirLock(self.state_dir)
        remove_stale_temporaries(self.state_dir)
        lg = self.config.log.build(self.state_dir / "log")
        self.pipeline = AlertPipeline(self.config.alerting, self.state_dir)
        for route in self.config.alerting.routes:
            for url in resolve_route_urls(route)[0]:
                register_secret(url)
        self.evaluator = LocalEvaluator(self.state_dir, lg, ruleset, self.pipeline, Cadence.of(d),
                                        d.future_skew_ms, on_alerts=self.print_alerts,
                                        max_pending=d.max_pending_events, start_fresh=self.start_fresh)
        positions, newest, last_wm = self.evaluator.restore()
        watermark = SourceWatermark(WatermarkPolicy.of(d))
        watermark.sent, watermark.newest = last_wm, newest
        self.pool = ParsePool(d.parse_workers)
        self.intake = Intake(LocalEventLog(lg), watermark, self.pool, parse_context(d),
                             d.intake_queue_size, d.future_skew_ms, last_positions=positions)
        metrics.RULES_LOADED.set(len(ruleset.rules))
        init_metric_series(self.config, ruleset)  # every known series at 0 (dashboards show data)

    def close_state(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.evaluator is not None:
            self.evaluator.log.close()
        if self._lock is not None:
            self._lock.close()

    async def start_inputs(self, specs: tuple[InputSpec, ...]) -> None:
        intake = self._intake()
        for spec in specs:
            inp = await start_input(spec, self.state_dir, intake.sink, intake.last_positions.get(spec.name),
                                    durable=intake.durable)
            intake.inputs[spec.name] = inp
            log.info("input started", extra={"input": spec.name, "type": spec.type,
                                             **({"port": inp.port} if inp.port is not None else {})})

    def write_run_file(self) -> None:
        inputs: dict[str, RunningInput] = self.intake.inputs if self.intake is not None else {}
        write_json_atomic(self.state_dir / RUN_FILE, {
            "pid": os.getpid(),
            "role": "all",
            "metrics_port": self.metrics_port,
            "metrics_address": self.config.daemon.metrics_address,
            "inputs": {n: {"type": i.spec.type, "port": i.port} for n, i in inputs.items()},
            "config": self.config_path,
        })
        write_atomic(self.state_dir / PID_FILE, f"{os.getpid()}\n".encode())

    # --- reload -----------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """SIGHUP: re-read config and rules; apply only when everything is valid."""
        if self._reloading:
            log.warning("reload already in progress; ignoring this SIGHUP")
            return False
        self._reloading = True
        self.notifier.reloading("reloading configuration and rules")
        try:
            try:
                config, ruleset = await asyncio.to_thread(_load_all, self.config_path)
            except (ConfigError, RuleError) as exc:
                metrics.RELOADS.labels(result="failure").inc()
                log.error("reload failed, the running rules and config stay: %s", exc,
                          extra={"issues": [i.render() for i in exc.issues if i.severity == "error"]})
                return False
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old set
                metrics.RELOADS.labels(result="failure").inc()
                log.exception("reload failed, the running rules and config stay: %s", exc)
                return False
            self._evaluator().reload_rules = ruleset
            self._intake().appended.set()
            restart_needed = [name for name in ("daemon", "log", "alerting", "kafka")
                              if getattr(config, name) != getattr(self.config, name)]
            if restart_needed:
                log.warning("reload: changes to [%s] take effect after a restart", "], [".join(restart_needed))
            await self._apply_inputs(config.inputs)
            self.config = replace(self.config, inputs=config.inputs)
            metrics.RELOADS.labels(result="success").inc()
            metrics.RULES_LOADED.set(len(ruleset.rules))
            init_metric_series(config, ruleset)
            self.write_run_file()
            log.info("reloaded", extra={"rules": len(ruleset.rules), "inputs": len(config.inputs)})
            return True
        finally:
            self._reloading = False
            self.notifier.ready(self.status_line())

    async def _apply_inputs(self, specs: tuple[InputSpec, ...]) -> None:
        intake = self._intake()
        wanted = {s.name: s for s in specs}
        for name, inp in list(intake.inputs.items()):
            if wanted.get(name) != inp.spec:
                await stop_input(inp)
                await intake.wait_logged(name)  # its final positions behind its last record
                del intake.inputs[name]
                log.info("input stopped", extra={"input": name})
        for name, spec in wanted.items():
            if name not in intake.inputs:
                try:
                    await self.start_inputs((spec,))
                except (OSError, SiemError) as exc:
                    log.error("input could not start: %s", exc, extra={"input": name})

    # --- status -----------------------------------------------------------------------------------

    def status_line(self) -> str:
        intake, ev = self.intake, self.evaluator
        if intake is None or ev is None:
            return "starting"
        now = monotonic_ms()
        rate = (intake.written - self._last_events) / (max(now - self._last_status_ms, 1) / 1000)
        self._last_events, self._last_status_ms = intake.written, now
        lag = ev.log.end_offset - ev.next_offset
        return (f"{rate:.0f} events/s, {intake.written} events, {ev.alerts} alerts, "
                f"lag {lag} records, queue {intake.queue.qsize()}")

    def _hangup_or_reload(self, had_terminal: bool) -> Callable[[], None]:
        """SIGHUP: reload, unless it is the hangup of the terminal `siem run` was started from (then the
        daemon drains and stops, as for Ctrl-C, instead of running on orphaned and holding its ports)."""
        def on_sighup() -> None:
            if had_terminal and not has_terminal():
                log.info("the controlling terminal hung up: stopping")
                self._stopping.set()
            else:
                asyncio.ensure_future(self.reload())
        return on_sighup

    def progress_counts(self) -> ProgressCounts:
        intake, ev = self._intake(), self._evaluator()
        wm = intake.watermark
        return ProgressCounts(intake.written, ev.next_offset, ev.log.end_offset, intake.idle,
                              starting=monotonic_ms() - wm.started_ms < wm.grace_ms)

    async def _progress(self, ruleset: RuleSet) -> None:
        d = self.config.daemon  # settled: idle long enough for the watermark to move on the wall clock
        reporter = ProgressReporter(self, settle_ms=d.idle_advance_ms + d.batch_max_wait_ms + 1000)
        ports = {n: i.port for n, i in self._intake().inputs.items()}
        daemon_intro(reporter, self.config, ports, self.metrics_port, len(ruleset.rules))
        await reporter.run()

    def _stalled(self) -> str | None:
        """The stage that has stopped moving, for the watchdog: the engine loop (a batch or a checkpoint
        writer that hangs) not turning for stall_timeout."""
        ev = self.evaluator
        limit = self.config.daemon.stall_timeout_ms
        if ev is not None and ev.stalled_ms() > limit:
            return f"the engine has not moved for {ev.stalled_ms() / 1000:.0f}s (stall_timeout {limit / 1000:.0f}s)"
        return None

    # --- helpers ----------------------------------------------------------------------------------

    def _intake(self) -> Intake:
        if self.intake is None:
            raise StateError("the intake is not open")
        return self.intake

    def _evaluator(self) -> LocalEvaluator:
        if self.evaluator is None:
            raise StateError("the engine is not started")
        return self.evaluator

    # --- the whole life ---------------------------------------------------------------------------

    async def serve(self, ruleset: RuleSet) -> int:
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.open_state, ruleset)
        intake, evaluator, pipeline = self._intake(), self._evaluator(), self.pipeline
        assert pipeline is not None
        tasks: list[asyncio.Task[Any]] = []
        try:
            hp = self.config.daemon.metrics_host_port
            if hp is not None:
                self.metrics_port = metrics.serve(hp[0], hp[1])
                log.info("metrics listening", extra={"address": f"{hp[0]}:{self.metrics_port}"})
            intake.start_watermark(self.config.inputs)
            await self.start_inputs(self.config.inputs)
            writer = asyncio.create_task(intake.run(), name="intake")
            engine = asyncio.create_task(
                evaluator.run(intake.appended, lambda: intake.idle, intake.done), name="engine")
            alerts = asyncio.create_task(pipeline.run(), name="alerting")
            watchdog = asyncio.create_task(
                watchdog_loop(self.notifier, self.status_line, stalled=self._stalled,
                              status_every_s=self.config.daemon.status_interval_ms / 1000), name="watchdog")
            tasks = [writer, engine, alerts, watchdog]
            loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
            loop.add_signal_handler(signal.SIGINT, self._stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self._hangup_or_reload(has_terminal()))
            self.write_run_file()
            if self.progress:
                tasks.append(asyncio.create_task(self._progress(ruleset), name="progress"))
            self.notifier.ready(f"running: {len(intake.inputs)} inputs, {len(ruleset.rules)} rules")
            log.info("siem running", extra={"inputs": len(intake.inputs), "rules": len(ruleset.rules),
                                            "offset": evaluator.next_offset})
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stop, writer, engine], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            stop.cancel()
            # drain: no new input, everything queued written, everything logged evaluated, checkpoint
            self.notifier.stopping("draining")
            await drain(intake, self.config.daemon.drain_timeout_ms)
            await engine
            await evaluator.finish()
            log.info("stopped cleanly", extra={"offset": evaluator.next_offset})
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for inp in list(intake.inputs.values()):
                await stop_input(inp)
            await pipeline.close()
            await asyncio.to_thread(self.close_state)
            self.notifier.close()


def _load_all(config_path: str | None) -> tuple[Config, RuleSet]:
    config = load_config(config_path)
    return config, load_rules(config.daemon.rules)


def run_daemon(config: Config, ruleset: RuleSet, config_path: str | None,
               print_alerts: Callable[[list[Alert]], None] | None = None, progress: bool = False,
               start_fresh: bool = False) -> int:
    """`siem run` in embedded mode: serve until SIGTERM. Exit codes: 0 clean, 1 state or runtime failure."""
    daemon = Daemon(config, config_path, Notifier.from_env(), print_alerts=print_alerts, progress=progress,
                    start_fresh=start_fresh)
    try:
        return asyncio.run(daemon.serve(ruleset))
    except (StateError, OSError) as exc:
        log.error("cannot run: %s", exc)
        return 1
