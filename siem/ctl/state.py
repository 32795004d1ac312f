"""``siem state``: the engine checkpoint of a stopped daemon.

    siem state check   [--config FILE] [--state-dir DIR]   restore the checkpoint into the configured rules
    siem state convert [--config FILE] [--state-dir DIR]   convert a pickle checkpoint of an earlier release

Releases before snapshot format 6 pickled the engine state (snapshot versions 3-5). The daemon never
unpickles: a crafted pickle runs code when it is loaded. `convert` is the one place that reads such a file,
once, on the administrator's explicit request, for a file they trust. Even so it unpickles with an allow-list
(containers, numbers and strings, numpy int64 arrays and the old window class; anything else stops it), then
writes the state in the current format through the same checks a restore applies, and keeps the old file
as ``checkpoint.pickle-<unix ms>``. It takes the state directory's lock, so it refuses to run beside a daemon.
"""

from __future__ import annotations

import argparse
import importlib
import io
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from siem.ctl import add_config_argument
from siem.errors import ConfigError, RuleError, StateError

_ALLOWED_NUMPY = {("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                  ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray")}
LEGACY_VERSIONS = (3, 4, 5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("check", "restore the checkpoint into the configured rules, report what it holds"),
                       ("convert", "convert a pickle checkpoint written by an earlier release (trusted files only)")):
        p = sub.add_parser(name, help=text, description=text)
        add_config_argument(p)
        p.add_argument("--state-dir", type=Path, metavar="DIR",
                       help="the daemon's state directory (default: [daemon] state_dir of the config)")


def run(args: argparse.Namespace) -> int:
    from siem.config import load_config  # noqa: PLC0415
    from siem.dsl.loader import load_rules  # noqa: PLC0415

    try:
        config = load_config(getattr(args, "config", None))
        ruleset = load_rules(config.daemon.rules)
    except (ConfigError, RuleError) as exc:
        print(exc, file=sys.stderr)
        return 2
    state_dir = args.state_dir or Path(config.daemon.state_dir)
    try:
        return convert(state_dir, ruleset) if args.action == "convert" else check(state_dir, ruleset)
    except StateError as exc:
        print(f"siem state {args.action}: {exc}", file=sys.stderr)
        return 1


def check(state_dir: Path, ruleset: Any) -> int:
    from siem.pipeline.evaluator import unwrap_state  # noqa: PLC0415
    from siem.engine.runtime import Engine  # noqa: PLC0415
    from siem.log.checkpoint import load_checkpoint  # noqa: PLC0415

    ck = load_checkpoint(state_dir)
    if ck is None:
        print(f"{state_dir}: no checkpoint")
        return 0
    engine_state, marks = unwrap_state(ck.state)
    engine = Engine(ruleset)
    engine.restore(engine_state)
    keys = sum(c.key_count() for c, _ in engine.correlators().values())
    print(f"checkpoint {state_dir / 'checkpoint'}: log offset {ck.offset}, engine state {len(engine_state)} bytes, "
          f"{len(engine.correlators())} correlators, {keys} window keys, {len(engine.pending_events)} pending events, "
          f"{len(marks)} input positions")
    return 0


def convert(state_dir: Path, ruleset: Any) -> int:
    """Rewrite a pickle checkpoint in the current format (see the module docstring). 0 when converted or
    already current; StateError when the file cannot be converted."""
    from siem.pipeline.evaluator import unwrap_state, wrap_state  # noqa: PLC0415
    from siem.engine.runtime import Engine  # noqa: PLC0415
    from siem.log.checkpoint import FILENAME, checkpoint_path, load_checkpoint, save_checkpoint  # noqa: PLC0415
    from siem.log.local import DirLock  # noqa: PLC0415
    from siem.statefile import write_atomic  # noqa: PLC0415

    lock = DirLock(state_dir)  # no daemon may run on this directory meanwhile
    try:
        ck = load_checkpoint(state_dir)
        if ck is None:
            print(f"{state_dir}: no checkpoint, nothing to convert")
            return 0
        engine_state, marks = unwrap_state(ck.state)
        if not is_legacy(engine_state):
            Engine(ruleset).restore(engine_state)  # a current one: it must be valid as it is
            print(f"{checkpoint_path(state_dir)} is already in the current format")
            return 0
        engine = Engine(ruleset)
        adopt_legacy(engine, load_legacy(engine_state))
        new_state = engine.snapshot()
        Engine(ruleset).restore(new_state)  # what the daemon will do with it: the same checks
        old = checkpoint_path(state_dir)
        keep = old.with_name(f"{FILENAME}.pickle-{time.time_ns() // 1_000_000}")
        write_atomic(keep, old.read_bytes())
        save_checkpoint(state_dir, ck.offset, wrap_state(new_state, marks))
    finally:
        lock.close()
    keys = sum(c.key_count() for c, _ in engine.correlators().values())
    print(f"converted {old}: {keys} window keys, {len(engine.pending_events)} pending events; "
          f"the pickle is kept as {keep.name} (delete it once the daemon runs)")
    return 0


def is_legacy(blob: bytes) -> bool:
    return blob[:1] == b"\x80"


class _LegacyWindow:
    """Stands in for the window class that versions 3-5 pickled; it only records its state."""

    __slots__ = ("state",)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def window(self) -> Any:
        from siem.engine.windows import _Window  # noqa: PLC0415

        st = self.state
        if isinstance(st, tuple) and len(st) == 2 and st[0] is None:  # versions 3-4: (None, {slot: value})
            slots = st[1]
            return _Window(list(slots["ts"]), dict(slots["vals"]), list(slots["samples"]))
        if isinstance(st, tuple) and len(st) == 5:  # version 5: (ts, vals, samples, base, resets)
            return _Window(list(st[0]), dict(st[1]), list(st[2]), int(st[3]), st[4])
        raise StateError(f"unexpected window state in the pickle: {type(st).__name__}")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"a numpy array of dtype {dtype} is not allowed")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


class _AllowList(pickle.Unpickler):
    """Only what engine snapshots 3-5 held: builtin containers and scalars (no global needed), numpy
    numeric arrays and the old window class, replaced by an inert stand-in."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("siem.engine.windows", "_Window"):
            return _LegacyWindow
        if (module, name) in _ALLOWED_NUMPY:
            return _frombuffer if name == "_frombuffer" else getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"the pickle refers to {module}.{name}, which no engine snapshot holds: "
                                     "refusing to convert it")


def load_legacy(blob: bytes) -> dict[str, Any]:
    """A snapshot of versions 3-5 as the dict it pickled; StateError when it is not one."""
    try:
        state = _AllowList(io.BytesIO(blob)).load()
    except Exception as exc:  # noqa: BLE001 - anything the allow-list or a broken pickle raises
        raise StateError(f"the pickle cannot be converted: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") not in LEGACY_VERSIONS:
        raise StateError("the pickle is not an engine snapshot of versions 3-5")
    return state


def adopt_legacy(engine: Any, state: dict[str, Any]) -> None:
    """Give `engine` the state of a version 3-5 snapshot, as the engine of those releases restored it."""
    try:
        engine.max_ts, engine.wm, engine.seq = int(state["max_ts"]), int(state["wm"]), int(state["seq"])
        events, ts, seq = state["pending"]
        engine.pending_events = list(events)
        engine.pending_ts, engine.pending_seq = np.asarray(ts, np.int64), np.asarray(seq, np.int64)
        rules = state["rules"]
        if state["version"] < 5:  # one state per rule: each becomes a correlator of its own
            rules = {"groups": [({rid: fp}, cs) for rid, (fp, cs, _) in rules.items() if cs is not None],
                     "suppress": {rid: (fp, sup) for rid, (fp, _, sup) in rules.items()}}
        for _, cs in rules["groups"]:
            cs["state"] = {k: v.window() if isinstance(v, _LegacyWindow) else v for k, v in cs["state"].items()}
        engine._adopt(rules)
    except StateError:
        raise
    except Exception as exc:  # noqa: BLE001 - a pickle of the right version but the wrong shape
        raise StateError(f"the pickle does not hold an engine snapshot of version {state.get('version')}: "
                         f"{type(exc).__name__}: {exc}") from exc
