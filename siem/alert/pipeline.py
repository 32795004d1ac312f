"""AlertPipeline: the facade the daemon uses. Alert in -> alert log -> dedup -> routing -> grouping per
route -> rate limit per route and rule (or severity, or route) -> outbox -> apprise or Alertmanager (off
the event loop).

An alert is routed when it is taken in; on each of its routes it joins a group of that route (the route's
``group_by`` and timers; critical and high default to immediate). Alertmanager destinations of a route get
every alert on its own (Alertmanager groups, silences and throttles), the other destinations get the
group's notifications. A notification the rate limit keeps back is stored as a ``held`` row saying why.

    pipeline = AlertPipeline(config, state_dir)          # opens the log and the outbox, recovers
    pipeline.submit(alert)                               # sync, fast, never touches the network
    task = asyncio.create_task(pipeline.run())           # delivery worker, group timers, heartbeat
    ...
    task.cancel(); await pipeline.close()

Guarantees:
* every alert is appended to the alert log (and fsynced, see siem.alert.alertlog) before anything else;
* an alert id is taken in once: ids are remembered in the outbox database for ``dedup_retention``, so a
  replay or a crash-restart that re-submits an alert writes no second log record and notifies nothing new;
* a crash between the log write and the database commit is repaired at start: the log lines after the
  committed log position are taken in again (their ids decide what is new);
* notifications are at-least-once: an outbox row is marked sent only after apprise reported success, so
  a crash in between re-sends it (channels with a dedup key get the same key again; email may repeat once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

import orjson

from siem import metrics
from siem.alert import alertmanager
from siem.alert.alertlog import AlertLog, log_files, read_alerts
from siem.alert.config import AlertingConfig, RouteConfig, resolve_route_urls
from siem.alert.noise import GroupState, Grouper, Notification, RateLimiter, Summary, scope_of
from siem.alert.notify import SendResult, send
from siem.alert.outbox import Outbox, Row, url_fingerprint
from siem.alert.record import Alert
from siem.alert.render import augment_url, body_format, encode_body, neutralise, notification_fields, render
from siem.alert.route import select_routes
from siem.errors import StateError
from siem.timeutil import Clock, iso_ms, wall_ms

log = logging.getLogger(__name__)

_PRUNE_EVERY_MS = 3_600_000
_MAX_SLEEP_S = 1.0


def _logged_ids(path: Path) -> list[str]:
    """Ids of every alert in the current and rotated logs (fast path: the id is the first key of a line)."""
    ids: list[str] = []
    for p in log_files(path):
        try:
            with open(p, "rb") as f:
                for line in f:
                    if line.startswith(b'{"id":"'):
                        end = line.find(b'"', 7)
                        if end > 7:
                            ids.append(line[7:end].decode("utf-8", "replace"))
                            continue
                    try:
                        d = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(d, dict) and isinstance(d.get("id"), str):
                        ids.append(d["id"])
        except OSError:
            continue
    return ids


class AlertPipeline:
    def __init__(self, config: AlertingConfig, state_dir: str | Path, now_ms: Clock = wall_ms,
                 rng: random.Random | None = None, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self._unrouted: set[str] = set()  # rules already reported as matching no route
        self.state_dir = Path(state_dir)
        self.now_ms = now_ms
        self._rng = rng or random.Random()
        self._core = threading.RLock()  # grouper, limiter and log: submit may come from another thread
        self._environ = environ
        self._dest, self._am, self._per_ms = self._destinations(config)
        self.log = AlertLog(self._path(config.log_path), config.log_max_bytes, config.log_keep, config.log_fsync)
        try:
            self.outbox = Outbox(self._path(config.outbox_path))
        except BaseException:
            self.log.close()
            raise
        self.grouper = Grouper(config.group_wait_ms, config.group_interval_ms, config.repeat_interval_ms,
                               config.max_groups)
        groups = []
        for d in self.outbox.load_groups():
            try:
                groups.append(GroupState.from_json(d))
            except TypeError:
                log.error("alerting database: a group has an unknown shape and was dropped")
        self.grouper.load(groups)
        self.limiter = RateLimiter()
        saved = self.outbox.get_meta("ratelimit")
        if saved:
            try:
                self.limiter.load(orjson.loads(saved))
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                log.error("alerting database: rate-limit state is corrupt; starting with empty windows")
        self._last_prune_ms = 0
        self._inflight: set[str] = set()
        self._busy_dests: set[str] = set()  # url fingerprints with a send in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        try:
            self._recover()
        except BaseException:
            self.log.close()
            self.outbox.close()
            raise
        metrics.OUTBOX_DEPTH.set(self.outbox.depth())

    def _destinations(self, config: AlertingConfig) -> tuple[
            dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, int]]:
        """Per route: apprise destinations, Alertmanager destinations (by URL fingerprint), rate-limit window."""
        dest: dict[str, dict[str, str]] = {}
        am: dict[str, dict[str, str]] = {}
        for r in config.routes:
            urls, issues = resolve_route_urls(r, self._environ)
            for issue in issues:
                log.error("%s", issue.message)
            dest[r.name] = {url_fingerprint(u): u for u in urls if not alertmanager.is_alertmanager(u)}
            am[r.name] = {url_fingerprint(u): u for u in urls if alertmanager.is_alertmanager(u)}
            if not urls:
                log.error("alerting route %r has no usable destination: its notifications go to the fallback "
                          "route", r.name)
        per_ms = {}
        for r in config.routes:
            rl = r.rate_limit or config.rate_limit
            if rl is not None:
                per_ms[r.name] = rl.per_ms
        return dest, am, per_ms

    def reconfigure(self, config: AlertingConfig) -> list[str]:
        """Apply a reloaded (already validated) config: routes, URLs (secrets re-read), templates, timers,
        rate limits, retry and heartbeat take effect at once; queued rows keep their rendered text. The
        alert log and outbox paths cannot move while running: returns a note for each such key."""
        notes = [f"alerting.{k} changes after a restart" for k in ("log_path", "outbox_path")
                 if getattr(config, k) != getattr(self.config, k)]
        dest, am, per_ms = self._destinations(config)
        with self._core:
            self.config = config if not notes else dataclasses.replace(
                config, log_path=self.config.log_path, outbox_path=self.config.outbox_path)
            self._dest, self._am, self._per_ms = dest, am, per_ms
            self.grouper.group_wait_ms = config.group_wait_ms
            self.grouper.group_interval_ms = config.group_interval_ms
            self.grouper.repeat_interval_ms = config.repeat_interval_ms
            self.grouper.max_groups = config.max_groups
            for key, g in self.grouper.groups.items():  # open groups take the new timers of their route
                if g.route:
                    t = config.timers(config.route(g.route), g.severity)
                    g.interval_ms, g.repeat_ms = t.group_interval_ms, t.repeat_interval_ms
                    if g.next_flush_ms is not None:  # a flush already scheduled moves with its timer
                        g.next_flush_ms = (g.opened_ms + t.group_wait_ms if g.last_notified_ms is None
                                           else g.last_notified_ms + t.group_interval_ms)
                    self.grouper.dirty.add(key)
            self.log.max_bytes, self.log.keep, self.log.fsync = config.log_max_bytes, config.log_keep, config.log_fsync
        self._wake_worker()
        return notes

    def _path(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else self.state_dir / path

    # --- intake ------------------------------------------------------------------------------------

    def submit(self, alert: Alert) -> None:
        """Take one alert in: log, dedup, group, route, enqueue. Synchronous, no network.

        Raises StateError when the alert log or the database cannot be written (disk full, read-only):
        the caller must then not move its checkpoint past this alert, so it is emitted again later."""
        self.submit_many([alert])

    def submit_many(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Take a batch in with one log fsync and one database transaction; returns the alerts that were new
        (the others were already logged: a replay after a crash, or a duplicate id)."""
        with self._core:
            batch: dict[str, Alert] = {}
            for a in alerts:
                if a.id in batch:
                    metrics.ALERTS_DUPLICATE.inc()
                else:
                    batch[a.id] = a
            if not batch:
                return []
            known = self.outbox.known(list(batch))
            if known:
                metrics.ALERTS_DUPLICATE.inc(len(known))
            new = [a for i, a in batch.items() if i not in known]
            if not new:
                return []
            try:
                pos = self.log.append([a.dumps() for a in new])
            except OSError as exc:
                raise StateError(f"cannot write the alert log {self.log.path}: {exc.strerror or exc}") from exc
            self._take_in(new, self.now_ms(), pos)
        self._wake_worker()
        return new

    def _take_in(self, alerts: list[Alert], now: int, pos: tuple[int, int]) -> None:
        notes: list[Notification] = []
        direct: list[tuple[RouteConfig, Alert]] = []
        for a in alerts:
            routes = select_routes(self.config, a.rule_id, a.severity, a.tags, now)
            if not routes:
                self._unrouted_alert(a)
            for r in routes:
                if self._am.get(r.name):
                    direct.append((r, a))
                if self._dest.get(r.name) or not self._am.get(r.name):  # no destination at all: the fallback
                    notes.extend(self.grouper.add(a, now, r.name, self.config.timers(r, a.severity), r.group_by))
        self._commit(now, notes, [], seen=[a.id for a in alerts], pos=pos, direct=direct)

    def _unrouted_alert(self, a: Alert) -> None:
        metrics.ALERTS_HELD.labels(route="", severity=a.severity, reason="no_route").inc()
        if not self.config.routes:  # nothing configured: one warning for all rules, not one per rule
            if not self._unrouted:
                self._unrouted.add("")
                log.warning("no alerting routes are configured ([[alerting.routes]]): alerts are only written "
                            "to the alert log (%s)", self.log.path)
        elif a.rule_id not in self._unrouted:  # once per rule: without routes every alert would repeat it
            self._unrouted.add(a.rule_id)
            log.warning("no alerting route matches rule %r (severity %s) and there is no default route; "
                        "its alerts are only in the alert log", a.rule_id, a.severity)

    def _enqueue_alertmanager(self, route: RouteConfig, a: Alert, now: int) -> None:
        """One row per Alertmanager destination for one alert (no grouping, no rate limit: Alertmanager's)."""
        fields = notification_fields(
            {"rule": a.rule_id, "severity": a.severity, "alert_id": a.id, "group_id": a.id, "group": a.group,
             "first_ms": a.first_ms, "last_ms": a.last_ms}, route.name, self._link_template(route))
        doc = alertmanager.alert_document(a, now, runbook=a.runbook, references=a.references,
                                          link=str(fields["link"]), field_max=self.config.field_max_chars)
        body = orjson.dumps(doc).decode()
        title = str(dict(doc["annotations"]).get("summary", a.title))  # type: ignore[call-overload]
        for fp in self._am.get(route.name, {}):
            self.outbox.enqueue(route=route.name, url_fp=fp, kind=alertmanager.KIND, severity=a.severity,
                                notification=f"am:{a.id}", alert_id=a.id, group_id=a.id, alert_ids=(a.id,),
                                title=title, body=body, body_format="json", now_ms=now)

    def _link_template(self, route: RouteConfig) -> str:
        return route.link_template if route.link_template is not None else self.config.link_template

    def _commit(self, now: int, notes: list[Notification], summaries: list[Summary], seen: Iterable[str] = (),
                pos: tuple[int, int] | None = None, heartbeat_slot: int | None = None, prune: bool = False,
                direct: Iterable[tuple[RouteConfig, Alert]] = ()) -> None:
        try:
            self.outbox.begin()
        except Exception as exc:
            raise StateError(f"alerting database {self.outbox.path}: {exc}") from exc
        try:
            if seen:
                self.outbox.add_seen(list(seen), now)
            for route, a in direct:
                self._enqueue_alertmanager(route, a, now)
            for n in notes:
                self._route_notification(n, now)
            for s in summaries:
                self._enqueue_summary(s, now)
            if heartbeat_slot is not None:
                self._enqueue_heartbeat(heartbeat_slot, now)
                self.outbox.set_meta("heartbeat_slot", str(heartbeat_slot))
            for key in self.grouper.dirty:
                g = self.grouper.groups.get(key)
                self.outbox.save_group(key, g.to_json() if g is not None else None)
            if pos is not None:
                self.outbox.set_meta("log_pos", f"{pos[0]}:{pos[1]}")
            if self.limiter.changed:
                self.outbox.set_meta("ratelimit", orjson.dumps(self.limiter.to_json()).decode())
            if prune:
                self.outbox.prune(now - self.config.dedup_retention_ms, now - self.config.sent_retention_ms)
            self.outbox.commit()
        except BaseException as exc:
            self.outbox.rollback()
            if isinstance(exc, Exception):
                raise StateError(f"alerting database {self.outbox.path}: {exc}") from exc
            raise
        self.grouper.dirty.clear()
        self.limiter.changed = False
        metrics.OUTBOX_DEPTH.set(self.outbox.depth())

    def _recover(self) -> None:
        """Take in alerts that reached the log but not the database (crash between the two)."""
        raw = self.outbox.get_meta("log_pos")
        cur_ino, cur_size = self.log.position()
        if raw is None:
            # A new database (first start, or the old one was corrupt): alerts already in the log were
            # handled before; remember their ids so a replay does not log or notify them again.
            ids = _logged_ids(self.log.path)
            self.outbox.begin()
            try:
                for i in range(0, len(ids), 10_000):
                    self.outbox.add_seen(ids[i:i + 10_000], self.now_ms())
                self.outbox.set_meta("log_pos", f"{cur_ino}:{cur_size}")
                self.outbox.commit()
            except BaseException:
                self.outbox.rollback()
                raise
            if ids:
                log.warning("alerting database is new but the alert log holds %d alerts: their ids are remembered "
                            "as taken in (not notified again)", len(ids))
            return
        ino_s, _, off_s = raw.partition(":")
        ino, off = int(ino_s), int(off_s)
        files = log_files(self.log.path)
        start = None
        for i, p in enumerate(files):
            try:
                if p.stat().st_ino == ino:
                    start = i
                    break
            except FileNotFoundError:
                continue
        if start is None:
            return  # the committed file rotated out of reach; nothing we can still tell apart
        found: list[Alert] = []
        for i, p in enumerate(files[start:]):
            try:
                for _, a in read_alerts(p, off if i == 0 else 0):
                    if a is not None:
                        found.append(a)
            except FileNotFoundError:
                continue
        if not found:
            return
        known = self.outbox.known([a.id for a in found])
        new = list({a.id: a for a in found if a.id not in known}.values())
        log.warning("alert log: %d alert(s) were logged but not processed before the last stop; taking them in",
                    len(new))
        self._take_in(new, self.now_ms(), (cur_ino, cur_size))

    # --- routing and enqueueing (inside a transaction) --------------------------------------------

    def _route_notification(self, n: Notification, now: int) -> None:
        if n.route:
            route = self.config.route(n.route)
            if route is None:  # the route went away in a reload: its open groups go where routing says now
                routes = select_routes(self.config, n.rule, n.severity, n.tags, now)
            else:
                routes = [route]
        else:  # a group saved by an older version, routed when it notifies
            routes = select_routes(self.config, n.rule, n.severity, n.tags, now)
        if not routes:
            metrics.ALERTS_HELD.labels(route="", severity=n.severity, reason="no_route").inc(n.alerts)
            return
        fields_src = n.to_json()
        for r in routes:
            fields = notification_fields(fields_src, r.name, self._link_template(r), self.config.field_max_chars)
            rl = r.rate_limit or self.config.rate_limit
            if (rl is not None and n.severity not in rl.exempt
                    and not self.limiter.allow(r.name, rl.max_notifications, rl.per_ms, n, now, rl.by)):
                metrics.NOTIFICATIONS_THROTTLED.labels(route=r.name).inc()
                metrics.ALERTS_HELD.labels(route=r.name, severity=n.severity, reason="rate_limit").inc(n.alerts)
                scope = scope_of(n, rl.by)
                reason = (f"held by the rate limit of route {r.name!r} ({rl.max_notifications} notifications "
                          f"{'of ' + scope + ' ' if scope else ''}per {rl.per_ms // 1000}s); counted in the "
                          f"summary sent when the window frees up")
                self._enqueue(r, n.key, n.kind, fields, n.alert_id, n.group_id, n.alert_ids, now, held=reason)
                continue
            self._enqueue(r, n.key, n.kind, fields, n.alert_id, n.group_id, n.alert_ids, now)

    def _enqueue(self, route: RouteConfig, key: str, kind: str, fields: dict[str, object], alert_id: str,
                 group_id: str, alert_ids: tuple[str, ...], now: int, *, title_tpl: str | None = None,
                 body_tpl: str | None = None, fallback_of: str | None = None, held: str | None = None) -> int:
        dests = self._dest.get(route.name, {})
        if not dests and held:
            return 0
        if not dests:
            metrics.NOTIFICATIONS_DEAD.labels(route=route.name).inc()
            fb = self.config.route(self.config.fallback_route) if self.config.fallback_route else None
            if fb is not None and fb.name != route.name and fallback_of is None:
                log.error("route %r has no usable destination; notification %s goes to fallback route %r",
                          route.name, key, fb.name)
                fields = dict(fields, title=f"[undeliverable via {route.name}] {fields.get('title', '')}")
                return self._enqueue(fb, key + ":fallback", kind, fields, alert_id, group_id, alert_ids, now,
                                     title_tpl=title_tpl, body_tpl=body_tpl, fallback_of=key)
            log.error("route %r has no usable destination and there is no other fallback: notification %s about "
                      "alert %s is NOT delivered", route.name, key, alert_id)
            return 0
        n = 0
        for fp, url in dests.items():
            title, body = render(title_tpl or route.title_template, body_tpl or route.body_template, fields,
                                 self.config.field_max_chars, self.config.body_max_chars)
            _, inserted = self.outbox.enqueue(
                route=route.name, url_fp=fp, kind=kind, severity=str(fields.get("severity", "")), notification=key, alert_id=alert_id, group_id=group_id,
                alert_ids=alert_ids, title=title, body=body, body_format=body_format(url), now_ms=now,
                fallback_of=fallback_of, held=held,
            )
            n += inserted
        return n

    def _enqueue_summary(self, s: Summary, now: int) -> None:
        route = self.config.route(s.route)
        if route is None:
            return
        lines = "\n".join(f"  {rule}: {count}" for rule, count in s.by_rule)
        fields: dict[str, object] = {"route": s.route, "alerts": s.alerts, "notifications": s.notifications,
                                     "rules": lines, "now": iso_ms(now),
                                     "scope": f" of {s.scope}" if s.scope else ""}
        self._enqueue(
            route, s.key, "summary", fields, "", s.key, (), now,
            title_tpl="[siem] +$alerts more alerts$scope suppressed by the rate limit on route $route",
            body_tpl="+$alerts more alerts$scope ($notifications notifications) were suppressed by the rate "
                     "limit of route $route up to $now.\nBy rule:\n$rules\n\nSee them with: siem alerts list",
        )

    def _enqueue_heartbeat(self, slot: int, now: int) -> None:
        hb = self.config.heartbeat
        route = self.config.route(hb.route) if hb else None
        if route is None:
            return
        self.outbox.supersede(route.name, "heartbeat", now)  # only the newest heartbeat is worth sending
        fields: dict[str, object] = {"host": socket.gethostname(), "now": iso_ms(now),
                                     "depth": self.outbox.depth(), "groups": len(self.grouper.groups)}
        if self._am.get(route.name):
            self._enqueue_am_heartbeat(route, slot, now, hb.interval_ms if hb else 0, str(fields["host"]))
            if not self._dest.get(route.name):
                return
        self._enqueue(route, f"heartbeat:{slot}", "heartbeat", fields, "", f"heartbeat:{slot}", (), now,
                      title_tpl="[siem] heartbeat from $host",
                      body_tpl="siem on $host is running at $now. Outbox depth: $depth, open alert groups: $groups.")

    def _enqueue_am_heartbeat(self, route: RouteConfig, slot: int, now: int, interval_ms: int, host: str) -> None:
        """The dead man's switch for Alertmanager: an always-firing ``SiemHeartbeat`` alert (like Prometheus'
        Watchdog), re-POSTed every heartbeat interval with endsAt two intervals ahead; when siem stops it
        resolves, which a dead-man receiver behind Alertmanager notices."""
        doc = {"labels": {"alertname": "SiemHeartbeat", "severity": "none", "siem": "siem",
                          "instance": neutralise(host, 200, single_line=True)},
               "annotations": {"summary": f"siem on {host} is running",
                               "description": "Always firing while siem runs; its absence means siem is down."},
               "startsAt": iso_ms(now), "raised_ms": now, "ends_after_ms": 2 * interval_ms}
        for fp in self._am.get(route.name, {}):
            self.outbox.enqueue(route=route.name, url_fp=fp, kind="heartbeat", severity="",
                                notification=f"am-heartbeat:{slot}", alert_id="", group_id=f"heartbeat:{slot}",
                                alert_ids=(), title="SiemHeartbeat", body=orjson.dumps(doc).decode(),
                                body_format="json", now_ms=now)

    # --- timers ------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Fire due group timers, owed rate-limit summaries and the heartbeat; prune old state."""
        with self._core:
            now = self.now_ms()
            notes = self.grouper.due(now)
            summaries = self.limiter.summaries(self._per_ms, now)
            slot = None
            if self.config.heartbeat is not None:
                s = now // self.config.heartbeat.interval_ms
                if self.outbox.get_meta("heartbeat_slot") != str(s):
                    slot = s
            prune = now - self._last_prune_ms >= _PRUNE_EVERY_MS
            if prune:
                self._last_prune_ms = now
            if notes or summaries or slot is not None or self.grouper.dirty or prune:
                self._commit(now, notes, summaries, heartbeat_slot=slot, prune=prune)

    def next_due_ms(self) -> int | None:
        times = [t for t in (self.grouper.next_due_ms(), self.limiter.next_due_ms(self._per_ms),
                             self.outbox.next_attempt_ms()) if t is not None]
        if self.config.heartbeat is not None:
            iv = self.config.heartbeat.interval_ms
            times.append((self.now_ms() // iv + 1) * iv)
        return min(times) if times else None

    # --- delivery ----------------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """Attempt every due row once and wait for the results; returns how many were attempted.
        Destinations run in parallel (up to retry.parallel), each destination's rows one after another in
        the order they were queued, so a receiver sees a group's NEW before its UPDATEs."""
        rows = self.outbox.due(self.now_ms(), 10_000, self._inflight)
        by_dest: dict[str, list[Row]] = {}
        for r in rows:
            if r.url_fp not in self._busy_dests:
                by_dest.setdefault(r.url_fp, []).append(r)
        sem = asyncio.Semaphore(self.config.retry.parallel)

        async def one_destination(queue: list[Row]) -> None:
            async with sem:
                for row in queue:
                    await self._deliver(row)

        await asyncio.gather(*(one_destination(q) for q in by_dest.values()))
        return sum(len(q) for q in by_dest.values())

    async def _deliver(self, row: Row) -> None:
        self._inflight.add(row.id)
        self._busy_dests.add(row.url_fp)
        try:
            url = self._dest.get(row.route, {}).get(row.url_fp)
            if row.attempts > 0:
                metrics.NOTIFICATIONS_RETRIED.labels(route=row.route).inc()
            am_url = self._am.get(row.route, {}).get(row.url_fp)
            last = True
            if am_url is not None:  # alerts (kind alertmanager) and heartbeats for an Alertmanager
                am = self.config.alertmanager
                body, last = alertmanager.payload(row.body, self.now_ms(), am.resolve_timeout_ms, am.firing_for_ms)
                res = await asyncio.to_thread(alertmanager.post, am_url, body, am.timeout_ms)
            elif url is None:
                res = SendResult(False, True, "destination is no longer in the configuration")
            else:
                target = augment_url(url, row.id, row.alert_id, row.group_id)
                res = await asyncio.to_thread(send, target, row.title,
                                              encode_body(row.body, row.body_format, row.title),
                                              row.body_format, row.severity)
            if not self._closed:
                # The database update fsyncs (synchronous=FULL): keep it off the event loop as well.
                await asyncio.to_thread(self._record, row, res, self.now_ms(), last)
        finally:
            self._inflight.discard(row.id)
            self._busy_dests.discard(row.url_fp)

    def _record(self, row: Row, res: SendResult, now: int, last: bool = True) -> None:
        """Book one attempt. ``last`` False: a delivered Alertmanager alert is re-POSTed after resend_interval."""
        if self._closed:
            return  # closing: the row stays pending and is sent again after the next start
        if res.ok:
            if last:
                self.outbox.mark_sent(row.id, now)
            else:
                self.outbox.mark_resend(row.id, now, now + self.config.alertmanager.resend_interval_ms)
            metrics.NOTIFICATIONS_SENT.labels(route=row.route).inc()
        else:
            metrics.NOTIFICATIONS_FAILED.labels(route=row.route).inc()
            first = row.first_attempt_ms if row.first_attempt_ms is not None else now
            if row.done_ms is not None and (res.permanent or now - first >= self.config.max_retry_age_ms):
                # A resend: Alertmanager had the alert, which now resolves at its last endsAt.
                log.warning("alert %s: re-sending it to Alertmanager (route %r) failed for %.0fs (%s); it "
                            "resolves there at its last endsAt", row.alert_id, row.route, (now - first) / 1000,
                            res.error)
                self.outbox.mark_sent(row.id, now)
            elif res.permanent or now - first >= self.config.max_retry_age_ms:
                self._give_up(row, res.error, now)
            else:
                r = self.config.retry
                ceiling = min(r.max_ms, r.initial_ms * r.multiplier ** min(row.attempts, 60))
                delay = max(100, int(self._rng.uniform(0, ceiling)))  # full jitter
                self.outbox.mark_failed(row.id, now, now + delay, res.error)
                log.warning("notification %s via route %r failed (attempt %d), retrying in %.1fs: %s",
                            row.id, row.route, row.attempts + 1, delay / 1000, res.error)
        metrics.OUTBOX_DEPTH.set(self.outbox.depth())

    def _give_up(self, row: Row, error: str, now: int) -> None:
        metrics.NOTIFICATIONS_DEAD.labels(route=row.route).inc()
        with self._core:
            self.outbox.begin()
            try:
                self.outbox.mark_dead(row.id, now, error)
                fb = self.config.route(self.config.fallback_route) if self.config.fallback_route else None
                age_s = (now - (row.first_attempt_ms or now)) / 1000
                if row.kind == "heartbeat":
                    log.error("heartbeat via route %r failed for %.0fs over %d attempts (last error: %s); the "
                              "receiver will notice the missing heartbeat", row.route, age_s, row.attempts + 1, error)
                elif fb is not None and fb.name != row.route and row.fallback_of is None:
                    log.error("ALERT NOTIFICATION UNDELIVERABLE: %s (%s) about alert %s via route %r failed for "
                              "%.0fs over %d attempts (last error: %s); sending it to fallback route %r",
                              row.id, row.kind, row.alert_id, row.route, age_s, row.attempts + 1, error, fb.name)
                    dests = self._dest.get(fb.name, {})
                    kind, body = row.kind, row.body
                    if kind == alertmanager.KIND:  # the fallback gets it as text, through apprise
                        ann = alertmanager.annotations_of(row.body)
                        kind, body = "first", "\n".join(f"{k}: {v}" for k, v in ann.items())
                    for fp, url in dests.items():
                        self.outbox.enqueue(
                            route=fb.name, url_fp=fp, kind=kind, severity=row.severity,
                            notification=row.id + ":fallback",
                            alert_id=row.alert_id, group_id=row.group_id, alert_ids=row.alert_ids,
                            title=neutralise(f"[undeliverable via {row.route}] {row.title}", 250, single_line=True),
                            body=body, body_format=body_format(url), now_ms=now, fallback_of=row.id,
                        )
                    if not dests:
                        log.error("fallback route %r has no usable destination either: %s is NOT delivered",
                                  fb.name, row.id)
                else:
                    log.error("ALERT NOTIFICATION LOST: %s (%s) about alert %s via route %r failed for %.0fs over %d "
                              "attempts (last error: %s) and there is no fallback left; it stays in the outbox as "
                              "dead", row.id, row.kind, row.alert_id, row.route, age_s, row.attempts + 1, error)
                self.outbox.commit()
            except BaseException:
                self.outbox.rollback()
                raise

    def _wake_worker(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # loop closed
            pass

    async def run(self) -> None:
        """Delivery worker, group timers, rate-limit summaries and heartbeat until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        parallel = self.config.retry.parallel
        try:
            while True:
                try:
                    await asyncio.to_thread(self.tick)  # may commit (fsync): not on the event loop
                except StateError as exc:
                    log.error("alerting: %s", exc)
                free = parallel - len(self._tasks)
                if free > 0:
                    picked = 0
                    for row in self.outbox.due(self.now_ms(), free * 8, self._inflight):
                        if picked == free:
                            break
                        if row.url_fp in self._busy_dests:
                            continue  # one row at a time per destination keeps their order
                        picked += 1
                        self._inflight.add(row.id)
                        self._busy_dests.add(row.url_fp)
                        task = asyncio.create_task(self._deliver(row))
                        self._tasks.add(task)
                        task.add_done_callback(self._task_done)
                due = self.next_due_ms()
                delay = _MAX_SLEEP_S if due is None else min(_MAX_SLEEP_S, max(0.0, (due - self.now_ms()) / 1000))
                if len(self._tasks) >= parallel:
                    delay = _MAX_SLEEP_S
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.005))
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
        finally:
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._loop = None
            self._wake = None

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alerting: delivery task failed: %r", task.exception())
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        """Close files. Cancel run() first; sends still in flight are retried after the next start."""
        self._closed = True
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with self._core:
            self.log.close()
            self.outbox.close()

