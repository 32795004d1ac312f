"""The daemon's TOML configuration: every table validated, every problem collected, then ConfigError.

Tables and who validates them (each component owns its ``config_from_toml(table, where)``, all of them
through the one checker in siem.tomlcheck, which also adds the file line of every issue)::

    [daemon]           here (DaemonConfig)
    [inputs.<name>]    type = one of siem.collect.INPUT_TYPES (syslog, relp, files, cloudtrail, journald, auditd)
    [log]              siem.log.local (the embedded durable log)
    [alerting]         siem.alert.config (alert log, routes, secrets from urls_env / urls_file)
    [kafka]            siem.log.kafka (scale-out roles only)

Relative paths in ``[daemon]`` (state_dir, rules) and in files inputs' ``paths`` are taken relative to
the directory of the config file. Without a config file :func:`embedded_config` gives defaults that
work from a checkout: state in ./state, rules from ./rules, the sample logs tailed, syslog on
127.0.0.1:5514 (TCP and UDP), metrics on 127.0.0.1:9108, alerts to the alert log only.

``load_config`` checks what the TOML says; ``check_runtime`` additionally reads what the config points
at (rule files, secret files and variables, the state directory) so ``siem config check`` finds a
missing credential before a restart does.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from siem.alert.config import AlertingConfig, resolve_route_urls
from siem.alert.config import config_from_toml as alerting_from_toml
from siem.collect import INPUT_TYPES
from siem.enrich import GeoSpec
from siem.errors import ConfigError, Issue, Location
from siem.log.local import LocalLogConfig
from siem.log.local import config_from_toml as log_from_toml
from siem.tomlcheck import TableReader, did_you_mean, locate_issues

if TYPE_CHECKING:
    from siem.dsl.loader import RuleSet

ROLES = ("all", "collector", "matcher", "correlator", "notifier")
EMBEDDED = "<embedded defaults>"
DEFAULT_METRICS = "127.0.0.1:9108"
DEFAULT_SYSLOG_PORT = 5514

_TOP_KEYS = ("daemon", "inputs", "log", "alerting", "kafka")
_DAEMON_KEYS = (
    "state_dir", "rules", "lateness", "future_skew", "timezone", "batch_max_events", "batch_max_wait",
    "intake_queue_size", "checkpoint_interval", "checkpoint_records", "idle_advance", "live_horizon",
    "metrics_address", "role", "log_level", "log_format", "status_interval", "parse_workers", "drain_timeout",
    "stall_timeout", "max_pending_events", "geoip", "geoip_asn",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """``[daemon]`` as the user wrote it (paths made absolute)."""

    state_dir: str = "state"
    rules: tuple[str, ...] = ("rules",)
    lateness_ms: int = 10_000  # allowed event-time lateness (watermark = max event time - lateness)
    future_skew_ms: int = 3_600_000  # events dated further ahead of the wall clock are clamped
    timezone: str = "UTC"  # zone of timestamps that carry none (RFC 3164)
    batch_max_events: int = 4096  # engine micro-batch: at most this many events ...
    batch_max_wait_ms: int = 200  # ... and an event waits at most this long before evaluation
    intake_queue_size: int = 10_000  # raw records between the collectors and the log writer
    checkpoint_interval_ms: int = 30_000  # engine checkpoint at least this often (when there was input)
    checkpoint_records: int = 500_000  # ... or after this many records
    idle_advance_ms: int = 2_000  # caught up and no input this long: advance the watermark on the wall clock
    live_horizon_ms: int = 3_600_000  # ... only when the last events were at most this far behind the wall clock
    metrics_address: str = DEFAULT_METRICS  # "" turns the exporter off
    role: str = "all"
    log_level: str = "info"
    log_format: str = "auto"
    status_interval_ms: int = 10_000  # STATUS= line for systemd
    parse_workers: int = -1  # processes parsing intake batches: -1 one per CPU when there are 2 or more, 0 none
    geoip: str = "off"  # "off", "builtin" (geoip2fast data) or a MaxMind mmdb path (siem.enrich)
    geoip_asn: str = ""  # a MaxMind ASN mmdb path (with an mmdb geoip)
    max_pending_events: int = 500_000  # events waiting for the watermark at most (the oldest beyond go early)
    stall_timeout_ms: int = 60_000  # the engine loop not turning this long is a stall: the watchdog stops
    drain_timeout_ms: int = 10_000  # SIGTERM: inputs read on (sockets until quiet) and the queue is logged, for at most this

    @property
    def geo_spec(self) -> GeoSpec | None:
        """The GeoIP enrichment the parse step applies, or None when it is off."""
        return None if self.geoip == "off" else GeoSpec(self.geoip, self.geoip_asn)

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        if not self.metrics_address:
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def pid_file(self) -> Path:
        return Path(self.state_dir) / "siem.pid"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One ``[inputs.<name>]`` table: its name, type and the collector's own config object."""

    name: str
    type: str
    config: object


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    inputs: tuple[InputSpec, ...] = ()
    log: LocalLogConfig = field(default_factory=LocalLogConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    kafka: object | None = None  # siem.log.kafka.KafkaConfig when a [kafka] table is given
    source: str = EMBEDDED  # the config file, or EMBEDDED
    warnings: tuple[Issue, ...] = ()


# --- loading ---------------------------------------------------------------------------------------


def load_config(path: str | Path | None) -> Config:
    """The config in ``path`` (or the embedded defaults for None); ConfigError with every issue."""
    if path is None:
        return embedded_config()
    doc, issues = read_toml(path)
    if doc is None:
        raise ConfigError(issues)
    config, issues = config_from_dict(doc, str(path), Path(path).resolve().parent)
    if config is None:
        raise ConfigError(_located(issues, path))
    return replace(config, warnings=tuple(_located(list(config.warnings), path)))


def _located(issues: list[Issue], path: str | Path) -> list[Issue]:
    """Issues with the file's line for their dotted path (siem.tomlcheck.locate_issues)."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return issues
    return locate_issues(issues, str(path), text)


def read_toml(path: str | Path) -> tuple[dict | None, list[Issue]]:
    """The parsed document, or the issue saying why the file cannot be read or parsed."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return None, [Issue("unreadable-file", f"cannot read config file {path}: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Issue("bad-encoding", f"config file {path} is not UTF-8 (byte {exc.start})")]
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        loc, snippet = None, ""
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            loc = Location(str(path), line, col)
            lines = text.splitlines()
            snippet = lines[line - 1] if 0 < line <= len(lines) else ""
            msg = msg[: m.start()].strip()
        return None, [Issue("toml-syntax", f"invalid TOML: {msg}", loc, snippet)]


def config_from_dict(doc: dict, source: str, base_dir: Path) -> tuple[Config | None, list[Issue]]:
    """Validate a whole parsed document; (None, issues) when any issue is an error."""
    issues: list[Issue] = []
    for key in sorted(set(doc) - set(_TOP_KEYS)):
        issues.append(Issue("unknown-key", f"{key}: unknown table or key{did_you_mean(key, _TOP_KEYS)} "
                                           f"(known: {', '.join(_TOP_KEYS)})"))

    daemon_table = doc.get("daemon", {})
    daemon, more = daemon_from_toml(daemon_table, "daemon", base_dir)
    issues += more

    inputs: list[InputSpec] = []
    raw_inputs = doc.get("inputs", {})
    if not isinstance(raw_inputs, dict):
        issues.append(Issue("wrong-type", f"inputs: expected tables [inputs.<name>], got {type(raw_inputs).__name__}"))
        raw_inputs = {}
    for name, table in raw_inputs.items():
        spec, more = input_from_toml(name, table, base_dir)
        issues += more
        if spec is not None:
            inputs.append(spec)

    log_cfg: LocalLogConfig | None = LocalLogConfig()
    if "log" in doc:
        log_cfg, more = log_from_toml(doc["log"], "log")
        issues += more
        if log_cfg is not None and log_cfg.directory and not os.path.isabs(log_cfg.directory):
            log_cfg = _replace_dir(log_cfg, str(base_dir / log_cfg.directory))

    alerting: AlertingConfig | None = AlertingConfig()
    if "alerting" in doc:
        alerting, more = alerting_from_toml(doc["alerting"], "alerting")
        issues += more

    kafka = None
    if "kafka" in doc:
        from siem.log.kafka import config_from_toml as kafka_from_toml  # noqa: PLC0415 - aiokafka is heavy

        kafka, more = kafka_from_toml(doc["kafka"], "kafka")
        issues += more
    if daemon is not None and daemon.role not in ("all",) and "kafka" not in doc:
        issues.append(Issue("missing-key", f"kafka: role = {daemon.role!r} needs a [kafka] table"))
    if daemon is not None and daemon.role in ("all", "collector") and not inputs and raw_inputs == {}:
        issues.append(Issue("no-inputs", "inputs: no [inputs.<name>] table: nothing will be collected",
                            severity="warning"))
    _check_ports(inputs, daemon, issues)

    errors = [i for i in issues if i.severity == "error"]
    if errors or daemon is None or log_cfg is None or alerting is None:
        return None, issues
    return Config(daemon, tuple(inputs), log_cfg, alerting, kafka, source,
                  tuple(i for i in issues if i.severity != "error")), issues


def _replace_dir(cfg: LocalLogConfig, directory: str) -> LocalLogConfig:
    return replace(cfg, directory=directory)


def daemon_from_toml(table: object, where: str, base_dir: Path) -> tuple[DaemonConfig | None, list[Issue]]:
    if not isinstance(table, dict):
        return None, [Issue("wrong-type", f"{where}: expected a table, got {type(table).__name__}")]
    r = TableReader(table, where, _DAEMON_KEYS)
    d = DaemonConfig()
    state_dir = r.str_("state_dir", d.state_dir) or d.state_dir
    rules = r.str_list("rules", list(d.rules))
    lateness = r.duration_ms("lateness", d.lateness_ms)
    future = r.duration_ms("future_skew", d.future_skew_ms, lo_ms=1000)
    tz = r.str_("timezone", d.timezone) or d.timezone
    try:
        from zoneinfo import ZoneInfo  # noqa: PLC0415

        ZoneInfo(tz)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError for odd keys
        r.bad("timezone", "bad-value", f"unknown time zone {tz!r} (e.g. UTC, Europe/Berlin)")
    batch_events = r.int_range("batch_max_events", d.batch_max_events, 1, 1_000_000)
    batch_wait = r.duration_ms("batch_max_wait", d.batch_max_wait_ms, lo_ms=1)
    queue = r.int_range("intake_queue_size", d.intake_queue_size, 1, 10_000_000)
    ck_interval = r.duration_ms("checkpoint_interval", d.checkpoint_interval_ms, lo_ms=100)
    ck_records = r.int_range("checkpoint_records", d.checkpoint_records, 1, 1 << 40)
    idle = r.duration_ms("idle_advance", d.idle_advance_ms, lo_ms=100)
    horizon = r.duration_ms("live_horizon", d.live_horizon_ms, lo_ms=1000)
    metrics_address = r.str_("metrics_address", d.metrics_address)
    if metrics_address:
        host, _, port = metrics_address.rpartition(":")
        ok = bool(host) and port.isdigit() and 0 <= int(port) < 65536  # 0: any free port
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            ok = ok and host == "localhost"
        if not ok:
            r.bad("metrics_address", "bad-value",
                  f"{metrics_address!r} is not IP:PORT (e.g. 127.0.0.1:9108; \"\" turns metrics off)")
    role = r.choice("role", d.role, ROLES)
    level = r.choice("log_level", d.log_level, ("debug", "info", "warning", "error"))
    fmt = r.choice("log_format", d.log_format, ("auto", "json", "text"))
    status = r.duration_ms("status_interval", d.status_interval_ms, lo_ms=1000)
    parse_workers = r.int_range("parse_workers", d.parse_workers, -1, 64)
    geoip = r.str_("geoip", d.geoip) or d.geoip
    geoip_asn = r.str_("geoip_asn", d.geoip_asn) or ""
    if geoip not in ("off", "builtin"):
        geoip = _abs(geoip, base_dir)
    if geoip_asn:
        geoip_asn = _abs(geoip_asn, base_dir)
    for key, path in (("geoip", geoip), ("geoip_asn", geoip_asn)):
        if path and path not in ("off", "builtin") and not Path(path).is_file():
            r.bad(key, "bad-value", f"{path!r}: no such file (\"off\", \"builtin\" or a MaxMind .mmdb file)")
    if geoip_asn and geoip in ("off", "builtin"):
        r.bad("geoip_asn", "bad-value", "needs geoip set to a MaxMind .mmdb file (the builtin data has AS names)")
    drain = r.duration_ms("drain_timeout", d.drain_timeout_ms, lo_ms=0)
    stall = r.duration_ms("stall_timeout", d.stall_timeout_ms, lo_ms=1000)
    max_pending = r.int_range("max_pending_events", d.max_pending_events, 1000, 100_000_000)
    if r.issues:
        return None, r.issues
    return DaemonConfig(
        state_dir=_abs(state_dir, base_dir), rules=tuple(_abs(p, base_dir) for p in rules), lateness_ms=lateness,
        future_skew_ms=future, timezone=tz, batch_max_events=batch_events, batch_max_wait_ms=batch_wait,
        intake_queue_size=queue, checkpoint_interval_ms=ck_interval, checkpoint_records=ck_records,
        idle_advance_ms=idle, live_horizon_ms=horizon, metrics_address=metrics_address or "", role=role,
        log_level=level, log_format=fmt, status_interval_ms=status, parse_workers=parse_workers,
        geoip=geoip, geoip_asn=geoip_asn,
        drain_timeout_ms=drain, stall_timeout_ms=stall, max_pending_events=max_pending,
    ), []


def _abs(path: str, base_dir: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def input_from_toml(name: str, table: object, base_dir: Path) -> tuple[InputSpec | None, list[Issue]]:
    """One ``[inputs.<name>]`` table, dispatched on its ``type`` to the collector's validator."""
    where = f"inputs.{name}"
    if not _NAME_RE.match(name):
        return None, [Issue("bad-value", f"{where}: input names are letters, digits, '_', '.', '-' (max 64)")]
    if not isinstance(table, dict):
        return None, [Issue("wrong-type", f"{where}: expected a table, got {type(table).__name__}")]
    kind = table.get("type")
    if kind is None:
        return None, [Issue("missing-key", f"{where}.type: required (one of {', '.join(INPUT_TYPES)})")]
    if not isinstance(kind, str) or kind not in INPUT_TYPES:
        return None, [Issue("bad-value", f"{where}.type: expected one of {', '.join(INPUT_TYPES)}, got {kind!r}"
                                         f"{did_you_mean(str(kind), INPUT_TYPES)}")]
    fn = _validator(kind)
    if fn is None:
        return None, [Issue("unavailable", f"{where}.type: input type {kind!r} is not available in this build")]
    if kind == "files" and isinstance(table.get("paths"), (list, str)):
        paths = table["paths"]
        items = [paths] if isinstance(paths, str) else paths
        table = {**table, "paths": [_abs(p, base_dir) if isinstance(p, str) and p else p for p in items]}
    if kind != "syslog":  # the syslog validator knows `type`; the others expect it removed
        table = {k: v for k, v in table.items() if k != "type"}
    cfg, issues = fn(table, where)
    if cfg is None or any(i.severity == "error" for i in issues):
        return None, issues
    return InputSpec(name, kind, cfg), issues


def _validator(kind: str) -> Callable[[dict, str], tuple[object, list[Issue]]] | None:
    try:
        module = importlib.import_module(INPUT_TYPES[kind].module)
    except ImportError:
        return None
    return getattr(module, "config_from_toml", None)


def _check_ports(inputs: list[InputSpec], daemon: DaemonConfig | None, issues: list[Issue]) -> None:
    """Two listeners on one address, port and transport cannot both bind."""
    seen: dict[tuple[str, str, int], str] = {}
    for spec in inputs:
        if spec.type not in ("syslog", "relp"):
            continue
        cfg = spec.config
        transport = "udp" if getattr(cfg, "protocol", "") == "udp" else "tcp"
        port = int(getattr(cfg, "port", 0))
        if port == 0:
            continue
        for addr in getattr(cfg, "address", ()):
            key = (transport, addr, port)
            if key in seen:
                issues.append(Issue("port-conflict", f"inputs.{spec.name}.port: {transport} {addr}:{port} is "
                                                     f"also used by inputs.{seen[key]}"))
            seen[key] = spec.name
    hp = daemon.metrics_host_port if daemon is not None else None
    if hp is not None and ("tcp", hp[0], hp[1]) in seen:
        issues.append(Issue("port-conflict", f"daemon.metrics_address: {daemon.metrics_address if daemon else ''} "
                                             f"is also used by inputs.{seen[('tcp', hp[0], hp[1])]}"))


# --- embedded defaults ----------------------------------------------------------------------------


def embedded_config(cwd: str | Path | None = None) -> Config:
    """Defaults for `siem run` without --config, relative to the working directory."""
    base = Path(cwd or os.getcwd()).resolve()
    doc = embedded_document(base)
    config, issues = config_from_dict(doc, EMBEDDED, base)
    if config is None:
        raise ConfigError(issues)
    return config


def embedded_document(base: Path) -> dict:
    """The TOML document the embedded defaults correspond to (shown by `siem config show`)."""
    doc: dict = {
        "daemon": {"state_dir": str(base / "state"), "rules": [str(base / "rules")],
                   "metrics_address": DEFAULT_METRICS},
        "inputs": {
            "syslog_tcp": {"type": "syslog", "protocol": "tcp", "address": "127.0.0.1",
                           "port": DEFAULT_SYSLOG_PORT},
            "syslog_udp": {"type": "syslog", "protocol": "udp", "address": "127.0.0.1",
                           "port": DEFAULT_SYSLOG_PORT},
        },
    }
    doc["inputs"].update(sample_inputs(base / "sample_logs"))
    return doc


def sample_inputs(directory: Path) -> dict[str, dict]:
    """Inputs over the sample logs (searched recursively): one files input per detected format, with a
    glob per directory where every file it matches has that format; CloudTrail delivery files through
    the cloudtrail collector. Without any sample file: a files input over ``<directory>/*.log``."""
    if not directory.is_dir():
        return {"sample_syslog": {"type": "files", "format": "syslog", "paths": [str(directory / "*.log")]}}
    found: dict[Path, str] = {}
    cloudtrail_dirs: set[Path] = set()
    for f in sorted(directory.rglob("*")):
        if any(part.startswith(".") for part in f.relative_to(directory).parts) or not f.is_file():
            continue
        if f.suffix in (".md", ".txt", ".csv", ".yml", ".yaml"):
            continue
        if f.name.endswith((".json", ".json.gz")) and ("_CloudTrail_" in f.name or _detect(f) == "cloudtrail"):
            cloudtrail_dirs.add(f.parent)
            continue
        if f.suffix == ".gz":
            continue  # compressed rotations: the files collector reads them next to their plain file
        found[f] = _detect(f)
    inputs: dict[str, dict] = {}
    by_format: dict[str, list[str]] = {}
    for f, fmt in found.items():
        pattern = f.parent / f"*{f.suffix}" if f.suffix else f
        same = [g for g in found if g.parent == f.parent and g.suffix == f.suffix]
        path = str(pattern) if all(found[g] == fmt for g in same) else str(f)
        if path not in by_format.setdefault(fmt, []):
            by_format[fmt].append(path)
    for fmt, paths in sorted(by_format.items()):
        inputs[f"sample_{fmt}"] = {"type": "files", "format": fmt, "paths": paths}
    if cloudtrail_dirs and importlib.util.find_spec("siem.collect.cloudtrail") is not None:
        common = Path(os.path.commonpath([str(d) for d in cloudtrail_dirs]))
        inputs["sample_cloudtrail"] = {"type": "cloudtrail", "directory": str(common), "poll_interval": "1s"}
    if not inputs:
        inputs["sample_syslog"] = {"type": "files", "format": "syslog", "paths": [str(directory / "*.log")]}
    return inputs


def _detect(path: Path) -> str:
    try:
        from siem.parse.detect import detect_format, open_log  # noqa: PLC0415

        with open_log(path) as f:
            head = f.readlines(8192)
        return detect_format(path, head)
    except (ImportError, OSError, EOFError):
        return "syslog"


# --- what the config points at --------------------------------------------------------------------


def check_runtime(config: Config, environ: dict[str, str] | None = None, *, rules: bool = True) -> list[Issue]:
    """Problems a running daemon would meet: unreadable rules, missing secrets, an unusable state dir."""
    issues: list[Issue] = []
    for route in config.alerting.routes:
        _, more = resolve_route_urls(route, environ)
        issues += more
    state = Path(config.daemon.state_dir)
    probe = state if state.exists() else next((p for p in state.parents if p.exists()), None)
    if probe is None or not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        issues.append(Issue("unwritable", f"daemon.state_dir: {state} is not a writable directory"))
    if rules and config.daemon.role in ("all", "matcher", "correlator"):
        from siem.dsl.loader import load_rules, rule_files  # noqa: PLC0415
        from siem.errors import RuleError  # noqa: PLC0415

        for p in config.daemon.rules:
            if not os.path.exists(p):
                issues.append(Issue("file-not-found", f"daemon.rules: no such file or directory: {p}"))
            elif not os.access(p, os.R_OK):
                issues.append(Issue("unreadable-file", f"daemon.rules: cannot read {p}"))
        if not any(i.code in ("file-not-found", "unreadable-file") for i in issues):
            try:
                ruleset = load_rules(config.daemon.rules)
                issues += list(ruleset.warnings)
            except RuleError as exc:
                issues += exc.issues
    return issues


def check_file(path: str | Path | None, environ: dict[str, str] | None = None, *, rules: bool = True) -> tuple[
        Config | None, list[Issue]]:
    """Everything `siem config check` reports: the TOML's issues and, as far as the config could be
    read, what it points at (secrets even when other tables are invalid)."""
    if path is None:
        try:
            config = embedded_config()
        except ConfigError as exc:
            return None, exc.issues
        return config, list(config.warnings) + check_runtime(config, environ, rules=rules)
    doc, issues = read_toml(path)
    if doc is None:
        return None, issues
    config, issues = config_from_dict(doc, str(path), Path(path).resolve().parent)
    if config is not None:
        return config, _located(issues + check_runtime(config, environ, rules=rules), path)
    alerting = doc.get("alerting")
    if isinstance(alerting, dict):
        parsed, _ = alerting_from_toml(alerting, "alerting")
        if parsed is not None:
            for route in parsed.routes:
                issues += resolve_route_urls(route, environ)[1]
    return None, _located(issues, path)


def init_metric_series(config: Config, ruleset: RuleSet) -> None:
    """Every series the config and rules make known, at 0 (siem.metrics.init_series): dashboards and
    alert rules see data before the first event."""
    from siem import metrics  # noqa: PLC0415

    metrics.init_series(
        [(s.name, s.type, s.type if s.type in ("cloudtrail", "journald") else str(getattr(s.config, "format", s.type)))
         for s in config.inputs],
        [(r.id, r.severity, r.correlation is not None) for r in ruleset.rules],
        [r.name for r in config.alerting.routes],
    )
