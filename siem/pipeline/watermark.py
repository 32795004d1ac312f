"""Event-time watermarks: how far event time has safely got.

Two stages compute one, with the same rule (the oldest of what the active parts have reached, minus the
allowed lateness):

* :class:`SourceWatermark`, at intake, over sources (an input + a file or a peer). It is what the intake
  writes into the log as :class:`~siem.pipeline.records.Watermark` records; the engine moves only with
  those records, so replaying the log after a crash moves it identically.
* :class:`MergedWatermark`, wherever several origins' watermark records meet (a matcher reading several
  collectors' partitions, a correlator partition fed by several matchers): the minimum over the origins.
  An origin none of whose records has been seen for ``origin_timeout_ms`` of record time no longer holds
  the others back: a collector or matcher that died for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable

from siem.config import DaemonConfig
from siem.timeutil import monotonic_ms, wall_ms

MIN_TS = -(2**62)


@dataclass(frozen=True, slots=True)
class WatermarkPolicy:
    lateness_ms: int  # allowed lateness of an event behind the newest of its source
    idle_advance_ms: int  # a source silent this long no longer holds the others back
    live_horizon_ms: int  # events within this of the wall clock are live

    @classmethod
    def of(cls, daemon: DaemonConfig) -> WatermarkPolicy:
        return cls(daemon.lateness_ms, daemon.idle_advance_ms, daemon.live_horizon_ms)


@dataclass(slots=True)
class SourceWatermark:
    """The watermark over intake sources.

    The oldest newest-event-time among the sources that delivered within idle_advance, minus lateness.
    Taking the minimum keeps a backfill of several sources (files of different hosts read side by side)
    from counting the slower ones' events as late. Until idle_advance has passed since the start (every
    source gets to deliver first; more where an input needs longer to deliver what was there when it
    started, see ``start``) there is none. When live and nothing arrives, event time follows the
    wall clock, so `absent` rules and window ends fire without traffic; a finished backfill moves to the
    newest time seen."""

    policy: WatermarkPolicy
    mono: Callable[[], int] = monotonic_ms
    wall: Callable[[], int] = wall_ms
    started_ms: int = 0
    grace_ms: int = 0  # no watermark this long after the start
    sent: int = MIN_TS  # the last watermark handed out
    newest: int = MIN_TS  # the newest event time any source delivered
    _src_max: dict[Hashable, int] = field(default_factory=dict)
    _src_seen: dict[Hashable, int] = field(default_factory=dict)
    _wall_adv_ms: int = 0

    def start(self, backlog_ms: int = 0) -> None:
        """From now on; the inputs need up to `backlog_ms` to deliver their backlog (a CloudTrail file is
        read once it settled): until every input had that time, an input that has not delivered yet is
        not known to hold the watermark back, and its backlog would count as late."""
        self.started_ms = self.mono()
        self.grace_ms = self.policy.idle_advance_ms + backlog_ms

    def observe(self, times: dict[Hashable, int]) -> None:
        """Newest event time per source of a batch just logged."""
        now = self.mono()
        for key, ts in times.items():
            self._src_max[key] = max(self._src_max.get(key, ts), ts)
            self._src_seen[key] = now
            self.newest = max(self.newest, ts)

    def next(self) -> int | None:
        """The watermark to log now, or None when it would not move."""
        p = self.policy
        now = self.mono()
        if now - self.started_ms < self.grace_ms:
            return None
        for key in [k for k, seen in self._src_seen.items() if now - seen >= p.idle_advance_ms]:
            del self._src_seen[key], self._src_max[key]  # idle: no longer holds the others back
        active = list(self._src_max.values())
        wall = self.wall()
        live = self.newest >= wall - p.live_horizon_ms
        if live:  # a source with a clock far behind (a device reset to 1970) must not stop the live ones;
            active = [t for t in active if t >= wall - p.live_horizon_ms]  # its events count as late
        if active:
            newest = min(active)
        elif live:
            if now - self._wall_adv_ms < p.idle_advance_ms:
                return None
            self._wall_adv_ms = now
            newest = wall
        else:
            newest = self.newest
        wm = newest - p.lateness_ms
        return wm if wm > self.sent else None


@dataclass(slots=True)
class MergedWatermark:
    """min over origins of their latest watermark.

    An origin's records come on one lane (a partition: a collector writes to one events partition); only
    origins on the lanes asked for count (the partitions a matcher holds). An origin stops counting when
    its last record is older than ``origin_timeout_ms`` of record time (Kafka's append timestamps, stored
    with the records, so a replay decides alike)."""

    origin_timeout_ms: int
    latest: dict[str, int] = field(default_factory=dict)  # origin -> its latest watermark
    lane: dict[str, Hashable] = field(default_factory=dict)  # origin -> where its records come from
    seen_ts: dict[str, int] = field(default_factory=dict)  # origin -> record time of its last record
    newest_ts: int = MIN_TS  # the newest record time seen

    def observe(self, origin: str, lane: Hashable, wm: int, record_ts: int) -> None:
        if wm > self.latest.get(origin, MIN_TS):
            self.latest[origin] = wm
        self.lane[origin] = lane
        self.seen_ts[origin] = max(self.seen_ts.get(origin, record_ts), record_ts)
        self.newest_ts = max(self.newest_ts, record_ts)

    def value(self, lanes: set[Hashable] | None = None) -> int | None:
        """The merged watermark over the live origins (on `lanes`), None when there is none."""
        got = [wm for o, wm in self.latest.items()
               if self.newest_ts - self.seen_ts[o] <= self.origin_timeout_ms and (lanes is None or self.lane[o] in lanes)]
        return min(got) if got else None
