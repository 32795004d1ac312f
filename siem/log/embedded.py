"""The embedded-mode durability protocol in one place: open the log and the checkpoint together.

The daemon's loop, in order:

    store = EmbeddedStore.open(state_dir, log_config)          # lock, recover the log, load the checkpoint
    engine.restore(store.state) if store.state is not None     # window state as of store.read_from
    collectors -> parse -> store.log.append_many(encode_events(batch))
        -> commit source positions for records below store.log.durable_offset
    records = store.log.read(next_offset, n); next_offset = records[-1][0] + 1
        -> engine.process(decode_events(records))
        -> store.checkpoint(next_offset, engine.snapshot())    # state + offset, atomically; then retention

A crash anywhere resumes from the last checkpoint: the records after it are evaluated again with the
state from before them, so no window counts an event twice and none is lost; alerts recomputed for
records after the checkpoint carry the same deterministic ids as before the crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from siem import metrics
from siem.errors import StateError
from siem.log.checkpoint import load_checkpoint, save_checkpoint
from siem.log.local import LocalLog, LocalLogConfig


@dataclass
class EmbeddedStore:
    state_dir: Path
    log: LocalLog
    state: bytes | None  # the engine state to restore, None on a first (or fresh) start
    read_from: int  # the offset to read from: everything below it is inside ``state``
    last_checkpoint_s: float | None = None  # time.monotonic() of the last checkpoint saved or loaded

    @classmethod
    def open(cls, state_dir: str | Path, config: LocalLogConfig | None = None, *,
             start_fresh: bool = False) -> EmbeddedStore:
        """Open ``<state_dir>/log`` and ``<state_dir>/checkpoint``. A bad checkpoint raises StateError
        unless start_fresh (then the engine starts empty from the oldest record still in the log)."""
        state_dir = Path(state_dir)
        log = (config or LocalLogConfig()).build(state_dir / "log")
        try:
            ck = load_checkpoint(state_dir, start_fresh=start_fresh)
            if ck is None:
                return cls(state_dir, log, None, log.start_offset)
            if ck.offset < log.start_offset:
                # retention only deletes checkpointed segments, so this checkpoint is older than the log
                # (restored from a backup?): resuming would silently skip the records in between
                if not start_fresh:
                    raise StateError(
                        f"checkpoint in {state_dir} is at log offset {ck.offset} but the log starts at "
                        f"{log.start_offset}: the checkpoint is older than the log; start fresh to discard it"
                    )
                return cls(state_dir, log, None, log.start_offset)
            if ck.offset > log.end_offset:
                log.advance_to(ck.offset)  # the log lost its unsynced tail in an OS crash
            log.commit(ck.offset)
            metrics.CHECKPOINT_AGE.set(0)
            return cls(state_dir, log, ck.state, ck.offset, time.monotonic())
        except BaseException:
            log.close()
            raise

    def checkpoint(self, offset: int, state: bytes) -> None:
        """Save the engine state that includes every record below offset, then let retention run."""
        save_checkpoint(self.state_dir, offset, state)
        self.last_checkpoint_s = time.monotonic()
        metrics.CHECKPOINT_AGE.set(0)
        self.log.commit(offset)

    def update_age_metric(self) -> None:
        """Refresh siem_checkpoint_age_seconds (call from a periodic timer)."""
        if self.last_checkpoint_s is not None:
            metrics.CHECKPOINT_AGE.set(time.monotonic() - self.last_checkpoint_s)

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
