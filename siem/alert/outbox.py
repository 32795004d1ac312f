"""The outbox: one SQLite file (standard library) holding everything alerting must not forget.

Tables:
  seen(id, ts_ms)          alert ids already taken in, to drop replays (kept ``dedup_retention``)
  groups(key, state)       open groups of the noise control (JSON), so a restart keeps their timers
  outbox(...)              one row per (notification, route, destination URL); state pending|sent|dead|held
                           (held: kept back by the rate limit, never sent; last_error says why)
  meta(k, v)               schema version, alert-log position committed, heartbeat slot

Durability: WAL journal with ``synchronous=FULL``: a committed transaction survives power loss. Each
``submit`` batch and each delivery result is one transaction.

Row ids are deterministic (sha256 of notification key, route and destination fingerprint) and inserted
with ``INSERT OR IGNORE``: enqueueing the same notification again is a no-op, even after it was sent.
A row is marked sent only after apprise reported success; a crash between the two re-sends it once
(at-least-once). Secrets never enter the database: rows name the destination by a fingerprint
(sha256 prefix of the URL) that is looked up in the running config.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from siem.errors import StateError
from siem.statefile import create_private, make_private_dirs

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, ts_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_ts ON seen(ts_ms);
CREATE TABLE IF NOT EXISTS groups (key TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    url_fp TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    notification TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    alert_ids TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    body_format TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    first_attempt_ms INTEGER,
    next_attempt_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    done_ms INTEGER,
    fallback_of TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
"""


# Due rows go out most severe first: a critical alert never queues behind a backlog of lower ones to the same
# destination. A group's rows share one severity, so its NEW still goes before its UPDATEs.
_SEVERITY_FIRST = ("CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 "
                   "WHEN 'info' THEN 4 ELSE 5 END")


def url_fingerprint(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def row_id(notification_key: str, route: str, url_fp: str) -> str:
    return hashlib.sha256(f"{notification_key}\x1f{route}\x1f{url_fp}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    route: str
    url_fp: str
    kind: str
    severity: str
    notification: str
    alert_id: str
    group_id: str
    alert_ids: tuple[str, ...]
    title: str
    body: str
    body_format: str
    created_ms: int
    first_attempt_ms: int | None
    next_attempt_ms: int
    attempts: int
    last_error: str
    state: str
    done_ms: int | None
    fallback_of: str | None


_COLS = ", ".join(Row.__slots__)


def _row(t: tuple[object, ...]) -> Row:
    d = dict(zip(Row.__slots__, t))
    d["alert_ids"] = tuple(orjson.loads(d["alert_ids"]))  # type: ignore[arg-type]
    return Row(**d)  # type: ignore[arg-type]


class Outbox:
    """Thread-safe (one lock) access to the alerting database."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if readonly:  # for the CLI while the daemon runs: never writes, never moves anything
            try:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False, timeout=30)
                self._db.execute("SELECT count(*) FROM outbox").fetchone()
            except sqlite3.DatabaseError as exc:
                raise StateError(f"cannot read alerting database {self.path}: {exc}") from exc
            return
        make_private_dirs(self.path.parent)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            # A corrupt outbox must not stop the daemon from alerting: keep the file for forensics,
            # start empty, and say so loudly.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("alerting database %s is unreadable (%s); moved to %s and starting empty: pending "
                      "notifications in it are NOT delivered", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    p.rename(Path(str(aside) + suffix))
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc2:
                raise StateError(f"cannot open alerting database {self.path}: {exc2}") from exc2

    def _open(self) -> sqlite3.Connection:
        create_private(self.path)  # sqlite creates its -wal and -shm files with the database's mode
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StateError(f"alerting database {self.path} has schema {row[0]}, this siem reads "
                                 f"{SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM outbox").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- transactions ------------------------------------------------------------------------------

    def begin(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        finally:
            self._lock.release()

    def rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        finally:
            self._lock.release()

    # --- meta, seen, groups (call inside begin/commit) -----------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def known(self, ids: list[str]) -> set[str]:
        out: set[str] = set()
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                q = f"SELECT id FROM seen WHERE id IN ({','.join('?' * len(chunk))})"
                out.update(r[0] for r in self._db.execute(q, chunk))
        return out

    def add_seen(self, ids: list[str], now_ms: int) -> None:
        self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", [(i, now_ms) for i in ids])

    def save_group(self, key: str, state: dict[str, object] | None) -> None:
        if state is None:
            self._db.execute("DELETE FROM groups WHERE key=?", (key,))
        else:
            data = orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)
            self._db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?)", (key, data.decode()))

    def load_groups(self) -> list[dict[str, object]]:
        with self._lock:
            rows = self._db.execute("SELECT key, state FROM groups").fetchall()
        out = []
        for key, state in rows:
            try:
                out.append(orjson.loads(state))
            except orjson.JSONDecodeError:
                log.error("alerting database: group %r is corrupt and was dropped", key)
        return out

    def enqueue(self, *, route: str, url_fp: str, kind: str, severity: str, notification: str, alert_id: str, group_id: str,
                alert_ids: tuple[str, ...], title: str, body: str, body_format: str, now_ms: int,
                fallback_of: str | None = None, held: str | None = None) -> tuple[str, bool]:
        """Insert a pending row (or, with ``held`` = the reason, a held one that is never sent, kept so
        `siem alerts show` can say why); (row id, inserted). Idempotent by row id."""
        rid = row_id(notification, route, url_fp)
        cur = self._db.execute(
            "INSERT OR IGNORE INTO outbox (id, route, url_fp, kind, severity, notification, alert_id, group_id, "
            "alert_ids, title, body, body_format, created_ms, next_attempt_ms, fallback_of, state, last_error, "
            "done_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rid, route, url_fp, kind, severity, notification, alert_id, group_id, orjson.dumps(list(alert_ids)).decode(),
             title, body, body_format, now_ms, now_ms, fallback_of, "held" if held else "pending", held or "",
             now_ms if held else None),
        )
        return rid, cur.rowcount == 1

    def supersede(self, route: str, kind: str, now_ms: int) -> int:
        """Retire pending rows of a kind on a route (a newer heartbeat makes older ones pointless)."""
        cur = self._db.execute(
            "UPDATE outbox SET state='dead', done_ms=?, last_error='superseded by a newer one' "
            "WHERE state='pending' AND route=? AND kind=?",
            (now_ms, route, kind),
        )
        return cur.rowcount

    def prune(self, seen_before_ms: int, done_before_ms: int) -> None:
        self._db.execute("DELETE FROM seen WHERE ts_ms < ?", (seen_before_ms,))
        self._db.execute("DELETE FROM outbox WHERE state != 'pending' AND done_ms < ?", (done_before_ms,))

    # --- delivery (each call its own transaction) ------------------------------------------------------

    def due(self, now_ms: int, limit: int, exclude: set[str]) -> list[Row]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM outbox WHERE state='pending' AND next_attempt_ms <= ? "
                f"ORDER BY {_SEVERITY_FIRST}, next_attempt_ms, created_ms, id LIMIT ?",
                (now_ms, limit + len(exclude)),
            ).fetchall()
        return [r for r in map(_row, rows) if r.id not in exclude][:limit]

    def next_attempt_ms(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT min(next_attempt_ms) FROM outbox WHERE state='pending'").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def mark_sent(self, rid: str, now_ms: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state='sent', done_ms=?, attempts=attempts+1, "
                "first_attempt_ms=coalesce(first_attempt_ms, ?) WHERE id=?",
                (now_ms, now_ms, rid),
            )

    def mark_resend(self, rid: str, now_ms: int, next_ms: int) -> None:
        """Delivered, but to be sent again at next_ms (Alertmanager: re-POST while the alert fires); the
        row stays pending with done_ms = its first delivery, and a fresh retry budget."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts=0, first_attempt_ms=NULL, next_attempt_ms=?, last_error='', "
                "done_ms=coalesce(done_ms, ?) WHERE id=?",
                (next_ms, now_ms, rid),
            )

    def mark_failed(self, rid: str, now_ms: int, next_ms: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts=attempts+1, first_attempt_ms=coalesce(first_attempt_ms, ?), "
                "next_attempt_ms=?, last_error=? WHERE id=?",
                (now_ms, next_ms, error[:2000], rid),
            )

    def mark_dead(self, rid: str, now_ms: int, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET state='dead', done_ms=?, attempts=attempts+1, last_error=?, "
            "first_attempt_ms=coalesce(first_attempt_ms, ?) WHERE id=?",
            (now_ms, error[:2000], now_ms, rid),
        )

    # --- reading -----------------------------------------------------------------------------------

    def depth(self) -> int:
        """Pending rows not yet delivered (rows delivered and waiting only for a resend do not count)."""
        with self._lock:
            return int(self._db.execute(
                "SELECT count(*) FROM outbox WHERE state='pending' AND done_ms IS NULL").fetchone()[0])

    def rows(self, state: str | None = None, alert_id: str | None = None) -> list[Row]:
        q = f"SELECT {_COLS} FROM outbox"
        cond, args = [], []
        if state is not None:
            cond.append("state=?")
            args.append(state)
        if alert_id is not None:
            cond.append("(alert_id=? OR group_id=? OR alert_ids LIKE ?)")
            args += [alert_id, alert_id, f'%"{alert_id}"%']
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY created_ms, id"
        with self._lock:
            return [_row(r) for r in self._db.execute(q, args).fetchall()]
