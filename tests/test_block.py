"""The columnar path: parse_block against the per-line reference parsers, the prefilter's soundness, the
engine on blocks against the engine on event dicts, and the block codec of the log.

Parity: for every record, every projected field of a parsed row equals the reference event's
(``siem.parse.parse``), and its time equals the reference's @timestamp. Soundness: a prefiltered row is
never an event with a (dataset, action) the projection wants; its raw text and time are the reference's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siem import metrics
from siem.dsl.loader import load_rules, load_texts
from siem.engine.batch import sample
from siem.engine.runtime import Engine
from siem.log.codec import BlockSource, decode_block, encode_block, encode_event, is_block
from siem.parse import ParseContext, parse, parse_batch
from siem.parse.auth import ACTION_NEEDLES, DATASET_NEEDLES
from siem.parse.block import BlockParsers, EventBlock, Projection, parse_block
from siem.replay import blocks_of, events_of, input_files
from siem.schema import FIELDS
from tests.engine_support import T0, ev, run
from tests.test_engine_properties import PACK, arrival_order, event_st, signature
from tests.test_parse_property import FRAGMENTS

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "parse"
SHARED = ROOT.parent / "shared" / "datasets"
CTX = ParseContext(now_ms=1_711_627_200_000)

SYSLOG_FILES = ["loghub_openssh.log", "secrepo_auth.log", "elastic_auth.log", "honeynet_secure.log",
                "loghub_linux.log"]
SHARED_SYSLOG = ["secrepo_auth_log/auth.log", "loghub/OpenSSH_2k.log", "loghub/Linux_2k.log",
                 "elastic_examples/suspicious_login_auth.log"]
ACCESS_FILES = [("nginx", "secrepo_access.log"), ("apache", "elastic_apache.log"), ("nginx", "hackers_access.log")]

EVERYTHING = Projection(frozenset(FIELDS) | {"log.file.path", "ssh.method", "ssh.protocol_version", "ssh.kex",
                                             "ssh.cipher", "ssh.mac", "ssh.host_key_type"})
PAIRS = sorted(ACTION_NEEDLES)
# prefilters: one per dataset with needles, one per (dataset, action) pair, all of them, and the pack's
PREFILTERS = ([Projection(EVERYTHING.fields, frozenset({(d, None)})) for d in sorted(DATASET_NEEDLES)]
              + [Projection(EVERYTHING.fields, frozenset({p})) for p in PAIRS]
              + [Projection(EVERYTHING.fields, frozenset(PAIRS) | {("sudo", None), ("pam", None)})])


def pack_projection() -> Projection:
    return Engine(load_rules([str(ROOT / "rules")])).projection


def check_block(fmt: str, records: list[bytes], projection: Projection, ctx: ParseContext = CTX) -> int:
    """Assert parity and soundness of parse_block over `records`; the number of prefiltered rows."""
    block = parse_block(fmt, records, ctx, projection, "test")
    assert block.n == len(records)
    inert = block.inert if block.inert is not None else np.zeros(block.n, bool)
    for i, raw in enumerate(records):
        ref = parse(fmt, raw, ctx, "test")
        assert block.ts[i] == ref["@timestamp"], (i, raw)
        assert block.column("event.original")[i] == ref["event.original"], (i, raw)
        if inert[i]:
            pair = (ref.get("event.dataset"), ref.get("event.action"))
            assert projection.wanted is not None
            assert pair not in projection.wanted and (pair[0], None) not in projection.wanted, (raw, pair)
            continue
        for f in projection.fields:
            assert block.column(f)[i] == ref.get(f), (f, raw)
    return int(inert.sum())


def _lines(path: Path) -> list[bytes]:
    return [ln for ln in path.read_bytes().split(b"\n") if ln.strip()]


@pytest.mark.parametrize("name", SYSLOG_FILES)
def test_syslog_blocks_equal_the_reference_parser_on_real_logs(name: str) -> None:
    records = _lines(DATA / name)
    check_block("syslog", records, EVERYTHING)
    check_block("syslog", records, pack_projection())
    skipped = sum(check_block("syslog", records[:600], p) for p in PREFILTERS)
    assert skipped > 0  # the prefilter does skip real lines


@pytest.mark.parametrize("name", SHARED_SYSLOG)
def test_syslog_blocks_equal_the_reference_parser_on_the_shared_datasets(name: str) -> None:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    records = _lines(path)[:5_000]
    check_block("syslog", records, EVERYTHING)
    check_block("syslog", records, PREFILTERS[-1])
    for p in PREFILTERS[:-1]:
        check_block("syslog", records[:1_000], p)


@pytest.mark.parametrize(("fmt", "name"), ACCESS_FILES)
def test_access_log_blocks_equal_the_reference_parser(fmt: str, name: str) -> None:
    records = _lines(DATA / name)
    check_block(fmt, records, EVERYTHING)
    assert check_block(fmt, records, pack_projection()) == 0


def test_cloudtrail_blocks_equal_the_reference_parser() -> None:
    check_block("cloudtrail", _lines(DATA / "aws_docs_cloudtrail.jsonl"), pack_projection())


headers = st.sampled_from(["Mar 27 13:06:56 web1 ", "Mar  7 01:02:03 h ", "<38>Mar 27 13:06:56 web1 ",
                           "Feb 29 23:59:60 x ", "Dec 31 23:59:59 ", "Xyz 12 00:00:00 h ", "Mar 27 13:06:61 h ",
                           "2024-03-27T13:06:56Z h ", "Mar 27 13:06:56.123 h ", ""])
tags = st.sampled_from(["sshd[12]: ", "sshd: ", "sshd-session[3]: ", "sudo: ", "su[4]: ", "CRON[1]: ",
                        "sshd(pam_unix)[9]: ", "useradd[2]: ", "systemd-logind[1]: ", "passwd[5]: ", ""])
messages = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=12).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(headers, tags, messages), min_size=1, max_size=40), st.sampled_from(PREFILTERS))
def test_generated_syslog_lines_parse_as_the_reference_and_are_never_wrongly_skipped(
        lines: list[tuple[str, str, str]], projection: Projection) -> None:
    records = [("".join(parts)).encode("utf-8", "surrogatepass") for parts in lines]
    records = [r for r in records if r.strip()]
    if records:
        check_block("syslog", records, projection)
        check_block("syslog", records, EVERYTHING)


def test_a_block_whose_records_hold_line_ends_or_invalid_utf8_is_parsed_line_by_line() -> None:
    records = [b"Mar 27 13:06:56 web1 CRON[1]: a\nb", b"Mar 27 13:06:57 web1 CRON[1]: \xff\xfe",
               b"Mar 27 13:06:58 web1 sshd[2]: Failed password for root from 1.2.3.4 port 22 ssh2",
               b"Mar 27 13:06:59 web1 CRON[1]: " + b"x" * 70_000]
    for p in PREFILTERS:
        check_block("syslog", records, p)


def test_prefiltered_records_are_counted() -> None:
    before = metrics.BLOCK_PREFILTERED.labels(format="syslog")._value.get()
    p = Projection(frozenset({"source.ip"}), frozenset({("sshd", "ssh_login")}))
    block = parse_block("syslog", [b"Mar 27 13:06:56 web1 CRON[1]: job", b"Mar 27 13:06:57 web1 sshd[2]: "
                                   b"Failed password for root from 1.2.3.4 port 22 ssh2"], CTX, p)
    assert block.inert is not None and block.inert.tolist() == [True, False]
    assert block.column("source.ip").tolist() == [None, "1.2.3.4"]
    assert metrics.BLOCK_PREFILTERED.labels(format="syslog")._value.get() == before + 1


# --- the engine on blocks -------------------------------------------------------------------------


def run_blocks(src: str, events: list, lateness_ms: int, batch: int) -> list:
    eng = Engine(load_texts({"t.rules": src}), lateness_ms=lateness_ms, future_skew_ms=None)
    out = []
    for i in range(0, len(events), batch):
        out.extend(eng.process_block(EventBlock.from_events(events[i: i + batch], eng.projection.fields)))
    out.extend(eng.flush())
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_st, min_size=1, max_size=120), st.lists(st.integers(0, 60_000), max_size=10),
       st.sampled_from([0, 2_000, 30_000]), st.sampled_from([1, 7, 1000]))
def test_blocks_give_the_alerts_of_event_dicts(events: list, delays: list[int], lateness: int, batch: int) -> None:
    """process_block over blocks of any size gives the alerts process gives over the same events."""
    stream = arrival_order(events, delays, lateness)
    assert signature(run_blocks(PACK, stream, lateness, batch)) == signature(run(PACK, stream, lateness_ms=lateness))


def test_mixing_dicts_and_blocks_and_a_snapshot_in_between_changes_nothing() -> None:
    events = [ev(i * 700, event__dataset="sshd", event__outcome="failure" if i % 3 else "success",
                 source__ip=f"10.0.0.{i % 3}", user__name="abc"[i % 3], source__port=i % 50) for i in range(300)]
    want = signature(run(PACK, events, lateness_ms=5_000))
    eng = Engine(load_texts({"t.rules": PACK}), lateness_ms=5_000, future_skew_ms=None)
    got = eng.process(events[:100])
    got += eng.process_block(EventBlock.from_events(events[100:200], eng.projection.fields))
    again = Engine(load_texts({"t.rules": PACK}), lateness_ms=5_000, future_skew_ms=None)
    again.restore(eng.snapshot())  # pending rows of a block are saved as event dicts
    got += again.process_block(EventBlock.from_events(events[200:250], eng.projection.fields))
    got += again.process(events[250:])
    got += again.flush()
    assert signature(got) == want


def test_a_block_lacking_fields_the_rules_read_is_refused() -> None:
    eng = Engine(load_texts({"t.rules": PACK}), lateness_ms=0, future_skew_ms=None)
    block = EventBlock.from_events([ev(0, event__dataset="sshd")], ["@timestamp", "event.dataset"])
    with pytest.raises(ValueError, match="source.ip"):
        eng.process_block(block)


def test_projection_names_what_rules_templates_and_suppression_read() -> None:
    eng = Engine(load_texts({"t.rules": PACK}))
    p = eng.projection
    assert {"source.ip", "user.name", "source.port", "event.outcome", "event.original"} <= p.fields
    assert "count" not in p.fields
    assert p.wanted is None  # `root` and `newip` match any dataset: no prefilter
    one = Engine(load_texts({"t.rules": 'rule r { when event.dataset == "sshd" and event.action in '
                                        '["ssh_login", "invalid_user"] count >= 2 within 1m by source.ip '
                                        'message "{distinct(user.name)} {host.name}" }'})).projection
    assert one.wanted == {("sshd", "ssh_login"), ("sshd", "invalid_user")}
    assert {"user.name", "host.name", "source.ip"} <= one.fields
    assert Projection(one.fields, None).covers(one) and not one.covers(Projection(one.fields, None))


def _visible(alert: object) -> bytes:
    """An alert with its sample events cut to the sample fields: a single-event rule's alert carries its
    whole event on the event path, and the row's projected fields (the raw line among them) on the block path."""
    return dataclasses.replace(alert, events=tuple(sample(e) for e in alert.events)).dumps()  # type: ignore


def test_replay_of_the_sample_logs_gives_the_same_alerts_through_blocks() -> None:
    """The pack over every sample log, file by file: the block path (siem replay's) gives the alerts, in
    the same order, with the same ids, messages and samples, that the event path gives."""
    ruleset = load_rules([str(ROOT / "rules")])
    total = 0
    for path in input_files([str(ROOT / "sample_logs")]):
        a = Engine(ruleset, future_skew_ms=None, clock=lambda: 0)
        b = Engine(ruleset, future_skew_ms=None, clock=lambda: 0)
        counters = {"events": 0, "failed": 0, "bytes": 0}
        events = list(events_of(path, None, CTX, counters))
        want = [x for i in range(0, len(events), 4096) for x in a.process(events[i: i + 4096])] + a.flush()
        blocks = blocks_of(path, None, CTX, dict(counters), b.projection, 4096)
        got = [x for blk in blocks for x in b.process_block(blk)] + b.flush()
        assert [_visible(x) for x in got] == [_visible(x) for x in want], path
        total += len(want)
    assert total > 20


# --- the block codec ------------------------------------------------------------------------------

SSH = [b"Mar 27 13:06:56 web1 sshd[2]: Failed password for root from 1.2.3.4 port 22 ssh2",
       b"Mar 27 13:06:57 web1 CRON[1]: (root) CMD (run-parts /etc/cron.hourly)",
       b"Mar 27 13:06:58 web1 sudo:   bob : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/sh"]


def _same(a: EventBlock, b: EventBlock, fields: frozenset[str]) -> None:
    assert a.ts.tolist() == b.ts.tolist()
    for f in fields:
        assert a.column(f).tolist() == b.column(f).tolist(), f


def test_block_records_round_trip_and_are_told_from_event_records() -> None:
    p = Projection(frozenset({"source.ip", "user.name", "event.dataset"}), frozenset({("sshd", "ssh_login")}))
    block = parse_block("syslog", SSH, CTX, p)
    (rec,) = encode_block(block, BlockSource.of("syslog", CTX, "t"))
    assert is_block(rec) and not is_block(encode_event({"a": 1}))
    back = decode_block(rec, p)
    assert back is not None
    _same(back, block, p.fields)
    assert back.inert is not None and back.inert.tolist() == [False, True, True]


def test_a_reader_that_needs_more_parses_the_raw_lines_again() -> None:
    narrow = Projection(frozenset({"source.ip"}), frozenset({("sshd", "ssh_login")}))
    wide = Projection(frozenset({"source.ip", "user.name", "event.action", "log.file.path"}), None)
    constants = {"log.file.path": "/var/log/auth.log"}
    rec = encode_block(parse_block("syslog", SSH, CTX, narrow, "t", constants),
                       BlockSource.of("syslog", CTX, "t", constants))[0]
    before = metrics.LOG_BLOCKS_REPARSED._value.get()
    back = decode_block(rec, wide)
    assert back is not None and metrics.LOG_BLOCKS_REPARSED._value.get() == before + 1
    _same(back, parse_block("syslog", SSH, CTX, wide, "t", constants), wide.fields)
    assert back.inert is None and back.column("user.name").tolist() == ["root", None, "bob"]


def test_large_blocks_are_split_into_records_below_the_limit() -> None:
    p = Projection(frozenset({"source.ip"}))
    block = parse_block("syslog", SSH * 200, CTX, p)
    recs = encode_block(block, BlockSource.of("syslog", CTX), max_bytes=10_000)
    assert len(recs) > 1 and all(len(r) <= 10_000 for r in recs)
    parts = [decode_block(r, p) for r in recs]
    assert sum(b.n for b in parts if b is not None) == block.n
    joined = parts[0]
    for b in parts[1:]:
        joined = joined.concat(b)
    _same(joined, block, p.fields)


def test_values_orjson_refuses_are_kept_as_text() -> None:
    block = EventBlock.from_events([{"@timestamp": T0, "event.original": "x\udc80", "n": 2**70}])
    back = decode_block(encode_block(block, BlockSource("json"))[0])
    assert back is not None and back.column("n").tolist() == [str(2**70)]


@pytest.mark.parametrize("payload", [b'{"siem.block":1}', b'{"siem.block":1,"n":2,"source":{}}', b"\x00garbage",
                                     orjson.dumps({"siem.block": 1, "n": 2, "source": {"fmt": "syslog", "input": "",
                                                   "tz": "UTC", "now_ms": 0, "host": "", "constants": {}},
                                                   "projection": {"fields": [], "wanted": None}, "ts": [1],
                                                   "inert": None, "cols": {"event.original": ["a", "b"]}})])
def test_a_corrupt_block_record_is_counted_and_skipped(payload: bytes) -> None:
    before = metrics.LOG_UNDECODABLE._value.get()
    assert decode_block(payload, where="offset 7") is None
    assert metrics.LOG_UNDECODABLE._value.get() == before + 1


def test_worker_processes_give_the_blocks_of_this_process() -> None:
    p = pack_projection()
    chunks = [("syslog", _lines(DATA / "secrepo_auth.log")[i: i + 300], {"log.file.path": "x"}) for i in range(0, 1200, 300)]
    with BlockParsers(2, CTX, p, "test") as parsers:
        got = list(parsers.map(chunks))
    want = [parse_block(fmt, recs, CTX, p, "test", c) for fmt, recs, c in chunks]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        _same(a, b, p.fields)


def test_replay_with_workers_prints_the_alerts_of_replay_without(tmp_path: Path) -> None:
    """--workers parses into blocks in worker processes (the pack allows no prefilter, so without it
    replay goes event by event): the same alerts."""
    import subprocess
    import sys

    log = tmp_path / "auth.log"
    log.write_bytes((ROOT / "sample_logs" / "syslog" / "web01-auth.log").read_bytes())
    outs = []
    for w in ("0", "2"):
        proc = subprocess.run([sys.executable, "-m", "siem", "replay", "--quiet", "--workers", w, "--batch-size", "256",
                               "--rules", str(ROOT / "rules"), str(log)], capture_output=True, check=True, timeout=300)
        alerts = [orjson.loads(x) for x in proc.stdout.splitlines()]
        for a in alerts:  # the clock, and sample events cut to the sample fields (see _visible)
            del a["emitted_ms"]
            a["events"] = [sample(e) for e in a["events"]]
        outs.append(alerts)
    assert outs[0] and outs[0] == outs[1]


def test_a_column_set_per_row_after_parsing() -> None:
    block = parse_block("syslog", SSH, CTX, Projection(frozenset({"source.ip"})))
    got = block.with_column("event.ingested", [1, 2, 3])
    assert got.column("event.ingested").tolist() == [1, 2, 3] and "event.ingested" in got.projection.fields
    assert got.row(0)["event.ingested"] == 1 and "event.ingested" not in block.columns
    with pytest.raises(ValueError):
        block.with_column("x", [1])
