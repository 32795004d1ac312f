"""Event-time watermarks: how far event time has safely got.

Two stages compute one, with the same rule (the oldest of what the active parts have reached, minus the
allowed lateness):

* :class:`SourceWatermark`, at intake, over sources (an input + a file or a peer). It is what the intake
  writes into the log as :class:`~siem.pipeline.records.Watermark` records; the engine moves only with
  those records, so replaying the log after a crash moves it identically.
* :class:`MergedWatermark`, wherever several origins' watermark records meet (a matcher reading many
  events partitions, a correlator partition fed by several matchers): the minimum over the origins, and
  over the partitions each origin writes to. An origin none of whose records has been seen for
  ``origin_timeout_ms`` of record time (Kafka's append timestamps, stored with the records, so a replay
  decides alike) no longer holds the others back: a collector that died for good.
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
    source gets to deliver first) there is none. When live and nothing arrives, event time follows the
    wall clock, so `absent` rules and window ends fire without traffic; a finished backfill moves to the
    newest time seen."""

    policy: WatermarkPolicy
    mono: Callable[[], int] = monotonic_ms
    wall: Callable[[], int] = wall_ms
    started_ms: int = 0
    sent: int = MIN_TS  # the last watermark handed out
    newest: int = MIN_TS  # the newest event time any source delivered
    _src_max: dict[Hashable, int] = field(default_factory=dict)
    _src_seen: dict[Hashable, int] = field(default_factory=dict)
    _wall_adv_ms: int = 0

    def start(self) -> None:
        self.started_ms = self.mono()

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
        if now - self.started_ms < p.idle_advance_ms:
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
    """min over origins (and, per origin, over the lanes it writes to) of their latest watermark.

    ``lanes`` are what one origin's records are spread over (events partitions, for a matcher); an origin
    counts once it has been seen on every lane in ``lanes`` — until then it holds the merge back — and it
    stops counting when its last record is older than ``origin_timeout_ms`` of record time."""

    origin_timeout_ms: int
    _latest: dict[tuple[str, Hashable], int] = field(default_factory=dict)  # (origin, lane) -> watermark
    _seen_ts: dict[str, int] = field(default_factory=dict)  # origin -> record time of its last record
    _newest_ts: int = MIN_TS  # the newest record time seen

    def observe(self, origin: str, lane: Hashable, wm: int, record_ts: int) -> None:
        key = (origin, lane)
        if wm > self._latest.get(key, MIN_TS):
            self._latest[key] = wm
        self._seen_ts[origin] = max(self._seen_ts.get(origin, record_ts), record_ts)
        self._newest_ts = max(self._newest_ts, record_ts)

    def drop_lane(self, lane: Hashable) -> None:
        for key in [k for k in self._latest if k[1] == lane]:
            del self._latest[key]

    def value(self, lanes: set[Hashable] | None = None) -> int | None:
        """The merged watermark over the live origins, None while one of them has not reached every lane."""
        live = {o for o, ts in self._seen_ts.items() if self._newest_ts - ts <= self.origin_timeout_ms}
        if not live:
            return None
        out: int | None = None
        for origin in live:
            got = [wm for (o, lane), wm in self._latest.items() if o == origin and (lanes is None or lane in lanes)]
            if lanes is not None and len(got) < len(lanes):
                return None
            if got:
                low = min(got)
                out = low if out is None else min(out, low)
        return out
