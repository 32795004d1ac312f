"""Starting and stopping collectors (siem.collect.INPUT_TYPES says which class serves an input type).

    spec (InputSpec, from config) --start_input--> RunningInput(collector, task, port)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siem.collect import INPUT_TYPES, Durable, PositionKeeper, Sink
from siem.config import InputSpec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunningInput:
    """A started collector: its spec, the task running it and the port it bound (network inputs)."""

    spec: InputSpec
    collector: Any
    task: asyncio.Task[None] | None = None
    port: int | None = None

    @property
    def keeper(self) -> PositionKeeper | None:
        return self.collector if INPUT_TYPES[self.spec.type].keeps_positions else None


async def start_input(spec: InputSpec, state_dir: Path, sink: Sink, positions: dict | None = None,
                      durable: Durable | None = None) -> RunningInput:
    """Build and start one collector; returns once its sockets are bound (network inputs). ``positions``:
    where a position-keeping input resumes (the last ones in the log), written to its state file first.
    ``durable`` (Intake.durable): for inputs that acknowledge (relp), returns once a record is logged."""
    kind = INPUT_TYPES[spec.type]
    collector = kind.build(spec.config, spec.name, state_dir)
    if kind.keeps_positions and positions is not None:
        collector.commit(positions)
    start = getattr(collector, "start", None)
    if start is not None:  # binds before returning, so the port is known (syslog)
        await (start(sink, durable) if kind.acks else start(sink))
        return RunningInput(spec, collector, port=collector.port)
    task = asyncio.create_task(collector.run(sink), name=f"input-{spec.name}")
    return RunningInput(spec, collector, task=task)


async def stop_input(inp: RunningInput, drain_s: float = 0.0) -> None:
    """Stop one collector; network inputs first read on for up to `drain_s` (what their senders still
    have in flight), the others finish the record in hand."""
    try:
        if inp.spec.type in ("syslog", "relp"):
            await inp.collector.stop(drain_s)
        else:
            await inp.collector.stop()
        if inp.task is not None:
            if not inp.task.done():
                inp.task.cancel()
            await asyncio.gather(inp.task, return_exceptions=True)
    except Exception:  # noqa: BLE001 - one input failing to stop must not keep the others running
        log.exception("stopping input failed", extra={"input": inp.spec.name})
