"""Engine state is data (siem.engine.snapshot): round trips for every correlator kind, snapshots taken
mid-stream that change no alert, and snapshots that are refused: a crafted pickle that would run code,
corrupt, truncated and bit-flipped files, and well-formed msgpack that breaks the schema."""

from __future__ import annotations

import pickle
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siem import metrics
from siem.engine import snapshot
from siem.errors import StateError
from tests.engine_support import S, T0, engine, ev
from tests.test_engine_properties import PACK, arrival_order, event_st, signature

# every correlator kind, a rule keyed by two fields (tuple keys), tuned threshold variants sharing one
# timeline (members with their own resets), aggregates in messages, suppression by key and by group; one
# rule a line (the property test takes subsets)
KINDS = PACK + """
rule pair { when event.dataset == "sshd" count >= 2 within 20s by source.ip, user.name suppress 30s message "{distinct(source.port)}" }
rule bf_strict { when event.dataset == "sshd" and event.outcome == "failure" count >= 5 within 30s by source.ip }
"""


def stream(n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        out.append(ev(i * 700 + rnd.randrange(0, 300), event__dataset="sshd",
                      event__outcome=rnd.choice(["failure", "failure", "success"]),
                      source__ip=rnd.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
                      user__name=rnd.choice(["root", "a", "b"]), source__port=rnd.randrange(1, 60)))
    return out


def refused(reason: str) -> float:
    return metrics.value("siem_state_refused_total", reason=reason)


def body_of(blob: bytes) -> dict[str, Any]:
    return snapshot.decode(blob, snapshot.ENGINE, "test")


def reframe(body: dict[str, Any]) -> bytes:
    """A body re-encoded with a valid header and checksum: what a crafted (not corrupt) snapshot looks like."""
    return snapshot.encode(snapshot.ENGINE, body)


def half_way(src: str = KINDS, n: int = 60, lateness_ms: int = 2_000) -> tuple[Any, list[dict], list[dict]]:
    events = stream(2 * n)
    eng = engine(src, lateness_ms)
    eng.process(events[:n])
    return eng, events[:n], events[n:]


# --- round trips ------------------------------------------------------------------------------------------


def test_every_correlator_kind_round_trips_with_real_state() -> None:
    """Half a stream through every kind; the snapshot restored into a new engine encodes to the same
    bytes, holds the same keys per rule, and the second half gives the uninterrupted run's alerts."""
    eng, first, rest = half_way()
    kinds = {type(c).__name__: c.key_count() for c, _ in eng.correlators().values()}
    assert set(kinds) == {"ThresholdCorrelator", "SequenceCorrelator", "AbsentCorrelator", "FirstSeenCorrelator",
                          "SpikeCorrelator"}
    assert all(kinds.values()), kinds  # real state in every kind, not empty dicts
    assert any(r.suppress for r in eng.rules)  # and suppression in force
    blob = eng.snapshot()
    assert blob.startswith(b"SIEMSNAP")
    again = engine(KINDS, 2_000)
    again.restore(blob)
    assert again.snapshot() == blob
    assert again.window_keys() == eng.window_keys()
    assert len(again.correlators()) == len(eng.correlators())
    whole = engine(KINDS, 2_000)
    whole.process(first)
    expected = whole.process(rest) + whole.flush()
    assert signature(again.process(rest) + again.flush()) == signature(expected)


def test_tuple_keys_sets_and_timelines_come_back_as_the_engine_built_them() -> None:
    """Where the type matters it is restored: two-field keys are tuples, first_seen values a set, a
    threshold key seen once a tuple and a longer one a timeline with its members' resets."""
    eng, _, _ = half_way()
    again = engine(KINDS, 2_000)
    again.restore(eng.snapshot())
    by_kind = {type(c).__name__ + ":" + ",".join(r.id for r in rules): c for c, rules in again.correlators().values()}
    pair = next(c for k, c in by_kind.items() if k.endswith(":pair"))
    assert pair.state and all(type(k) is tuple and len(k) == 2 for k in pair.state)
    seen = next(c for k, c in by_kind.items() if k.startswith("FirstSeen"))
    assert all(type(v[1]) is set for v in seen.state.values())
    bf = next(c for k, c in by_kind.items() if "bf_strict" in k)
    assert any(getattr(w, "resets", None) for w in bf.state.values())
    original = next(c for c, rules in eng.correlators().values() if "bf_strict" in {r.id for r in rules})
    for key, win in original.state.items():
        got = bf.state[key]
        if type(win) is tuple:
            assert got == win
        else:
            assert (got.ts, got.vals, got.samples, got.base, got.resets) == (win.ts, win.vals, win.samples, win.base,
                                                                            win.resets)


def test_shared_samples_are_stored_once() -> None:
    """Rules of different kinds keep the same sample objects; the snapshot's table holds each once and the
    restored state shares them again."""
    eng, _, _ = half_way()
    table = _Counting()
    for corr, _ in eng.correlators().values():
        corr.to_data(table)
    body = body_of(eng.snapshot())
    assert len(snapshot.events(body["samples"], "samples")) == len(table.events) < table.made  # fewer than the refs
    again = engine(KINDS, 2_000)
    again.restore(eng.snapshot())
    kept = [e for corr, _ in again.correlators().values() for e in _samples_of(corr)]
    assert len({id(e) for e in kept}) == len(table.events)


class _Counting(snapshot.SampleTable):
    __slots__ = ("made",)

    def __init__(self) -> None:
        super().__init__()
        self.made = 0

    def ref(self, e: dict) -> int:
        self.made += 1
        return super().ref(e)

    def refs(self, evs: Any) -> list[int]:
        got = super().refs(evs)
        self.made += len(got)
        return got


def _samples_of(corr: Any) -> list[dict]:
    out: list[dict] = []
    for v in corr.state.values():
        if type(corr).__name__ == "ThresholdCorrelator":
            out += [v[2]] if type(v) is tuple else v.samples
        elif type(corr).__name__ == "SequenceCorrelator":
            out += [e for step in v for _, _, e in step]
        elif type(corr).__name__ == "AbsentCorrelator":
            out.append(v[1])
    return out


RULE_LINES = [line for line in KINDS.splitlines() if line.startswith("rule ")]
MACROS = "\n".join(line for line in KINDS.splitlines() if line.startswith("macro "))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_st, min_size=2, max_size=120), st.lists(st.integers(0, 60_000), max_size=10),
       st.sampled_from([0, 2_000, 30_000]), st.sets(st.sampled_from(RULE_LINES), min_size=1), st.data())
def test_snapshot_and_restore_mid_stream_changes_no_alert(events: list, delays: list[int], lateness: int,
                                                          rules: set[str], data: st.DataObject) -> None:
    """Any subset of the rules (every kind, shared and split correlators), any stream cut at any batch
    boundary: snapshot, restore into a new engine, go on; the alerts equal an uninterrupted run's (pending
    events, watermark, windows and suppression all survive)."""
    src = MACROS + "\n" + "\n".join(sorted(rules))
    arrived = arrival_order(events, delays, lateness)
    cut = data.draw(st.integers(1, len(arrived) - 1))
    whole = engine(src, lateness)
    expected = whole.process(arrived[:cut]) + whole.process(arrived[cut:]) + whole.flush()
    before = engine(src, lateness)
    got = before.process(arrived[:cut])
    after = engine(src, lateness)
    after.restore(before.snapshot())
    assert after.snapshot() == before.snapshot()
    got += after.process(arrived[cut:]) + after.flush()
    assert signature(got) == signature(expected)


# --- a crafted pickle ------------------------------------------------------------------------------------


class _Exploit:
    """Unpickling this creates a file: what a crafted checkpoint or siem.state record would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (str(self.path), "w"))


def malicious_pickle(marker: Path) -> bytes:
    """An engine snapshot of version 5 in shape, with the exploit where the pending events go."""
    return pickle.dumps({"version": 5, "max_ts": 0, "wm": 0, "seq": 0, "pending": (_Exploit(marker), None, None),
                         "rules": {"groups": [], "suppress": {}}}, protocol=pickle.HIGHEST_PROTOCOL)


def test_a_crafted_pickle_given_to_restore_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    pickle.loads(payload)["pending"][0].close()  # the payload is real: unpickling it does create the file
    assert marker.exists()
    marker.unlink()
    eng, _, _ = half_way()
    state_before = eng.snapshot()
    before = refused("legacy_pickle")
    with pytest.raises(StateError, match=r"pickle.*siem state convert.*--start-fresh"):
        eng.restore(payload)
    assert not marker.exists()
    assert refused("legacy_pickle") - before == 1
    assert eng.snapshot() == state_before  # the engine is untouched


# --- corrupt snapshots -------------------------------------------------------------------------------------


def test_truncated_zeroed_and_bit_flipped_snapshots_are_refused_and_counted() -> None:
    """Every prefix class, zero fill, garbage and a flip of every bit in the header and of many in the body:
    each is refused with StateError and counted under its reason; none changes the engine."""
    eng, _, _ = half_way()
    blob = eng.snapshot()
    target = engine(KINDS, 2_000)
    empty = target.snapshot()
    cases: list[tuple[bytes, str]] = [(blob[:n], "truncated") for n in (0, 5, 22)]
    cases += [(blob[:n], "truncated") for n in (23, len(blob) // 2, len(blob) - 1)]
    cases += [(blob + b"\0", "truncated"), (bytes(len(blob)), "not_a_snapshot"), (b"garbage" * 10, "not_a_snapshot")]
    rnd = random.Random(3)
    positions = list(range(23)) + rnd.sample(range(23, len(blob)), 200)
    for pos in positions:
        for bit in range(8) if pos < 23 else (rnd.randrange(8),):
            flipped = bytearray(blob)
            flipped[pos] ^= 1 << bit
            cases.append((bytes(flipped), ""))
    counts = {r: refused(r) for r in ("truncated", "not_a_snapshot", "version", "checksum", "malformed",
                                      "legacy_pickle")}
    for bad, reason in cases:
        with pytest.raises(StateError) as info:
            target.restore(bad)
        assert isinstance(info.value, snapshot.SnapshotRefused)
        if reason:
            assert info.value.reason == reason, (reason, str(info.value))
        assert "engine snapshot" in str(info.value)
    assert sum(refused(r) - n for r, n in counts.items()) == len(cases)
    assert refused("checksum") - counts["checksum"] > 150  # the body's flips, caught by the CRC
    assert target.snapshot() == empty


def test_a_newer_format_is_refused_saying_so() -> None:
    blob = bytearray(engine(KINDS).snapshot())
    blob[9] = snapshot.FORMAT_VERSION + 1  # the version's low byte
    body = bytes(blob[23:])
    head = bytes(blob[:19])
    blob = head + struct.pack(">I", zlib.crc32(body, zlib.crc32(head))) + body
    with pytest.raises(StateError, match=r"snapshot format 7, written by a newer siem.*--start-fresh"):
        engine(KINDS).restore(blob)


# --- crafted but well-formed: the schema -----------------------------------------------------------------


def _group(body: dict[str, Any], kind: str, rule: str | None = None) -> dict[str, Any]:
    return next(g for g in body["groups"] if g["kind"] == kind and (rule is None or rule in g["rules"]))


def _window(body: dict[str, Any]) -> list:
    return _group(body, "threshold", "bf_strict")["state"]["timelines"][0]


CRAFTED = {
    "unknown top-level field": (lambda b: b.update(extra=1), r"unknown field extra"),
    "missing field": (lambda b: b.pop("wm"), r"missing wm"),
    "watermark of the wrong type": (lambda b: b.update(wm="soon"), r"wm: expected an int, got str"),
    "time beyond int64": (lambda b: b.update(max_ts=2**64 - 1), r"max_ts: .* out of range"),
    "pending times shorter than the events": (
        lambda b: b["pending"].update(events=snapshot.events_data([{"@timestamp": T0}])),
        r"pending.ts: \d+ values, expected 1"),
    "array of another dtype": (lambda b: b["pending"]["ts"].update(dtype="|O"), r"pending.ts: dtype '\|O'"),
    "array data of the wrong length": (lambda b: b["pending"]["seq"].update(data=b"\0" * 3), r"pending.seq: data must"),
    "event nested too deep": (
        lambda b: b.update(samples=snapshot.events_data([{"a": _deep(300)}])), r"nested deeper than 256"),
    "event field named twice": (
        lambda b: b["samples"]["shapes"][0].__setitem__(1, b["samples"]["shapes"][0][0]),
        r"samples.shapes\[0\]: a field name appears twice"),
    "event of a shape that does not exist": (
        lambda b: b["samples"].update(shape=snapshot.array_data(np.full(_rows(b["samples"]), 7))),
        r"samples.shape: a shape outside the 1 shapes"),
    "event column shorter than its shape": (
        lambda b: _plain_column(b["samples"]).pop(), r"samples.columns\[0\]\[\d+\] \('@timestamp'\): expected"),
    "dictionary code beyond its values": (
        lambda b: _coded_column(b["samples"]).update(codes=snapshot.array_data(np.full(_rows(b["samples"]), 99))),
        r"codes: a code outside the \d+ values"),
    "dictionary of values that are not strings": (
        lambda b: _coded_column(b["samples"])["values"].__setitem__(0, [1]), r"values: a array, expected str or nil"),
    "unknown correlator kind": (
        lambda b: _group(b, "absent").update(kind="exec"), r"'exec' state for absent rules"),
    "key of a two-field rule that is one value": (
        lambda b: _pair_keys(b).__setitem__(0, "10.0.0.1"),
        r"rules pair\).*(keys|timelines)\[0\]: a key must be an array of 2 values"),
    "key that is a map": (
        lambda b: _group(b, "absent")["state"]["keys"][0].__setitem__(0, {"x": 1}),
        r"keys\[0\]: a key must be a str, int, float or bool, got map"),
    "duplicate keys": (
        lambda b: _group(b, "absent")["state"]["keys"].append(_group(b, "absent")["state"]["keys"][0]),
        r"duplicate keys"),
    "timeline with more times than values": (
        lambda b: _window(b)[1]["ts"].append(_window(b)[1]["ts"][-1]), r"vals\['user.name'\]: expected \d+ items"),
    "timeline whose times go back": (
        lambda b: _window(b)[1]["ts"].__setitem__(slice(None), sorted(_window(b)[1]["ts"], reverse=True) + [0]),
        r"times decrease"),
    "member reset beyond the timeline": (
        lambda b: _window(b)[1].update(resets={"bf_strict": _window(b)[1]["base"] + 10_000}),
        r"resets\['bf_strict'\]: .* out of range"),
    "sample reference out of range": (
        lambda b: _group(b, "absent")["state"]["keys"][0][1].__setitem__(1, 10**6),
        r"sample reference 1000000 is not an index"),
    "sequence with another number of steps": (
        lambda b: _group(b, "sequence")["state"]["keys"][0][1].append([]), r"steps: expected 2 items, got 3"),
    "sequence entry from the future": (
        lambda b: next(s for s in _group(b, "sequence")["state"]["keys"][0][1] if s)[0].__setitem__(
            1, _group(b, "sequence")["state"]["seq"] + 1), r"seq: .* out of range"),
    "first_seen values that are not strings": (
        lambda b: _group(b, "first_seen")["state"]["keys"][0][1].__setitem__(1, [1, 2]),
        r"values: an item of type int, expected str"),
    "spike with a zero count": (
        lambda b: _group(b, "spike")["state"]["keys"][0][1][1].append([10**9, 0]), r"count: 0 is out of range"),
    "suppression key of the wrong shape": (
        lambda b: next(s for s in b["suppress"].values() if s["until"])["until"][0].__setitem__(0, [[1, 2, 3]]),
        r"suppress\[.*a key part must be"),
}


def _pair_keys(body: dict[str, Any]) -> list:
    st = _group(body, "threshold", "pair")["state"]
    return st["once"]["keys"] if st["once"]["keys"] else st["timelines"][0]


def _rows(table: dict[str, Any]) -> int:
    return len(table["shape"]["data"]) // 8


def _plain_column(table: dict[str, Any]) -> list:
    return next(c for c in table["columns"][0] if type(c) is list)


def _coded_column(table: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in table["columns"][0] if type(c) is dict)


def _deep(n: int) -> object:
    v: object = 1
    for _ in range(n):
        v = [v]
    return v


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_well_formed_snapshot_that_breaks_the_schema_is_refused_naming_the_place(name: str) -> None:
    """msgpack with a valid checksum, one field wrong: StateError naming the place, counted as malformed, and
    the engine keeps the state it had (restore is all or nothing)."""
    mutate, message = CRAFTED[name]
    eng, _, _ = half_way()
    body = body_of(eng.snapshot())
    mutate(body)
    crafted = reframe(body)
    target, _, _ = half_way(n=20)
    had = target.snapshot()
    before = refused("malformed")
    with pytest.raises(StateError, match=message):
        target.restore(crafted)
    assert refused("malformed") - before == 1
    assert target.snapshot() == had


def test_an_unknown_extension_type_is_refused() -> None:
    body = body_of(engine(KINDS).snapshot())
    payload = msgpack.packb({**body, "max_ts": msgpack.ExtType(42, b"obj")}, use_bin_type=True)
    head = struct.pack(">8sHBQ", b"SIEMSNAP", snapshot.FORMAT_VERSION, snapshot.ENGINE, len(payload))
    crafted = head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload
    with pytest.raises(StateError, match="unknown msgpack extension type 42"):
        engine(KINDS).restore(crafted)


def _paths(v: object, at: tuple = ()) -> list[tuple]:
    out = [at]
    if type(v) is dict:
        for k, x in v.items():
            out += _paths(x, (*at, k))
    elif type(v) is list:
        for i, x in enumerate(v):
            out += _paths(x, (*at, i))
    return out


REPLACEMENTS = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=5),
                         st.binary(max_size=9), st.lists(st.integers(), max_size=3),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_well_typed_mutation_is_refused_or_leaves_a_working_engine(data: st.DataObject) -> None:
    """Replace any one node of a real snapshot by an arbitrary value: restore refuses it with StateError,
    or accepts it and the engine then processes the rest of the stream without a rule failing."""
    eng, _, rest = half_way(n=40)
    body = body_of(eng.snapshot())
    path = data.draw(st.sampled_from(_paths(body)[1:]))
    node: Any = body
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = data.draw(REPLACEMENTS)
    target = engine(KINDS, 2_000)
    try:
        target.restore(snapshot.encode(snapshot.ENGINE, body))
    except StateError:
        return
    errors = sum(metrics.value("siem_rule_errors_total", rule=r.id) for r in target.rules)
    target.process(rest)
    target.flush()
    assert sum(metrics.value("siem_rule_errors_total", rule=r.id) for r in target.rules) == errors


# --- legacy snapshots: refused by the engine, converted on request ---------------------------------------


def test_the_version_4_pickle_is_refused_by_restore_and_converted_by_siem_state() -> None:
    """tests/data/engine/snapshot-v4-bf.pickle (rule bf, 1.1.1.1 failed at 0s and 1s, 2.2.2.2 at 0s) is
    refused by Engine.restore; the convert command's reader turns it into state whose windows go on."""
    from siem.ctl.state import adopt_legacy, load_legacy
    from tests.test_windows import BF, fails

    blob = (Path(__file__).parent / "data" / "engine" / "snapshot-v4-bf.pickle").read_bytes()
    with pytest.raises(StateError, match="pickle written by an earlier siem"):
        engine(BF).restore(blob)
    old = engine(BF)
    adopt_legacy(old, load_legacy(blob))
    eng = engine(BF)
    eng.restore(old.snapshot())
    alerts = eng.process(fails("1.1.1.1", [2]) + fails("2.2.2.2", [1, 2]))
    assert [(a.count, a.first_ms - T0, a.group) for a in alerts] == [
        (3, 0, (("source.ip", "1.1.1.1"),)), (3, 0, (("source.ip", "2.2.2.2"),))]


def test_the_converter_refuses_a_crafted_pickle_without_running_it(tmp_path: Path) -> None:
    from siem.ctl.state import load_legacy

    marker = tmp_path / "pwned"
    with pytest.raises(StateError, match=r"open, which no engine snapshot holds: refusing to convert"):
        load_legacy(malicious_pickle(marker))
    assert not marker.exists()
    for name in ("os.system", "posix.system", "subprocess.Popen", "builtins.eval"):
        module, func = name.rsplit(".", 1)
        crafted = (b"\x80\x04c" + module.encode() + b"\n" + func.encode() + b"\n(S'touch " + str(marker).encode()
                   + b"'\ntR.")  # GLOBAL module.func, MARK, STRING, TUPLE, REDUCE: func("touch ...")
        with pytest.raises(StateError, match="refusing to convert"):
            load_legacy(crafted)
        assert not marker.exists()


class _OldWindow:
    """A window of a release that pickled snapshots, by its pickled state (legacy_pickle writes it as that
    release's siem.engine.windows._Window)."""

    def __init__(self, state: tuple) -> None:
        self.state = state


def legacy_pickle(state: dict, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """`state` pickled as releases before format 6 did, their window class included."""
    import siem.engine.windows as windows

    cls = type("_Window", (), {"__module__": "siem.engine.windows", "__qualname__": "_Window",
                               "__init__": lambda self, st: setattr(self, "st", st),
                               "__getstate__": lambda self: self.st})
    monkeypatch.setattr(windows, "_Window", cls)
    keep = [state]  # every object stays alive while _wrap's memo holds its id
    out = pickle.dumps(_wrap(keep[0], cls), protocol=pickle.HIGHEST_PROTOCOL)
    monkeypatch.undo()
    return out


def _wrap(v: object, cls: type, memo: dict[int, object] | None = None) -> object:
    """v with each _OldWindow as `cls`; an object met twice is copied once (pickle keeps sharing)."""
    memo = {} if memo is None else memo
    got = memo.get(id(v))
    if got is not None:
        return got
    if isinstance(v, _OldWindow):
        out: object = cls(_wrap(v.state, cls, memo))
    elif isinstance(v, dict):
        out = {k: _wrap(x, cls, memo) for k, x in v.items()}
    elif isinstance(v, tuple):
        out = tuple(_wrap(x, cls, memo) for x in v)
    elif isinstance(v, list):
        out = [_wrap(x, cls, memo) for x in v]
    else:
        return v
    memo[id(v)] = out
    return out


def test_a_version_4_snapshot_with_per_rule_state_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 4 kept one state per rule, windows pickled as (None, {slot: value}): converted, each rule
    continues its own window."""
    import numpy as np

    from siem.ctl.state import adopt_legacy, load_legacy
    from tests.test_windows import TUNED, fails

    eng = engine(TUNED)
    fp = {r.id: r.fingerprint for r in eng.rules}
    two = fails("1.1.1.1", [0, 1])
    window = _OldWindow((None, {"ts": [e["@timestamp"] for e in two], "vals": {"user.name": ["root", "root"]},
                                "samples": two}))
    blob = legacy_pickle({
        "version": 4, "max_ts": T0 + S, "wm": T0 + S, "seq": 2,
        "pending": ([], np.empty(0, np.int64), np.empty(0, np.int64)),
        "rules": {"bf": (fp["bf"], {"state": {"1.1.1.1": window}}, {}),
                  "bf_strict": (fp["bf_strict"], {"state": {"1.1.1.1": (T0 + S, (), two[1])}}, {})},
    }, monkeypatch)
    with pytest.raises(StateError, match="pickle"):
        eng.restore(blob)
    adopt_legacy(eng, load_legacy(blob))
    eng2 = engine(TUNED)
    eng2.restore(eng.snapshot())
    # bf held 0s and 1s, bf_strict only 1s
    assert [(a.rule_id, a.count) for a in eng2.process(fails("1.1.1.1", [2, 3]))] == [("bf", 3)]
    assert [(a.rule_id, a.count) for a in eng2.process(fails("1.1.1.1", [4, 5]))] == [("bf_strict", 4), ("bf", 3)]
    assert len(eng2.correlators()) == 2  # states restored per rule stay apart


def test_a_version_5_snapshot_of_every_kind_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A version 5 pickle (state per correlator, windows pickled as 5-tuples), built from a live engine's
    state as that release pickled it: converted, the rest of the stream gives the uninterrupted alerts."""
    from siem.ctl.state import adopt_legacy, load_legacy
    from siem.engine.windows import _Window

    eng, first, rest = half_way()

    def old(v: object) -> object:
        return _OldWindow((v.ts, v.vals, v.samples, v.base, v.resets)) if isinstance(v, _Window) else v

    state = {
        "version": 5, "max_ts": eng.max_ts, "wm": eng.wm, "seq": eng.seq,
        "pending": (eng.pending_events, eng.pending_ts, eng.pending_seq),
        "rules": {"groups": [({r.id: r.fingerprint for r in rules},
                              {**corr.get_state(), "state": {k: old(v) for k, v in corr.state.items()}})
                             for corr, rules in eng.correlators().values()],
                  "suppress": {r.id: (r.fingerprint, r.suppress) for r in eng.rules}},
    }
    blob = legacy_pickle(state, monkeypatch)
    converted = engine(KINDS, 2_000)
    adopt_legacy(converted, load_legacy(blob))
    assert converted.snapshot() == eng.snapshot()
    whole = engine(KINDS, 2_000)
    whole.process(first)
    again = engine(KINDS, 2_000)
    again.restore(converted.snapshot())
    assert signature(again.process(rest) + again.flush()) == signature(whole.process(rest) + whole.flush())
