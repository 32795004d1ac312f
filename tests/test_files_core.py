"""siem.collect.files, the synchronous core: line splitting, bounded gunzip, config validation."""

from __future__ import annotations

import gzip
import io
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siem.collect.files import (
    BoundedGunzip,
    FileInputConfig,
    GzipError,
    LineSplitter,
    config_from_toml,
    parse_size_bytes,
)


def gunzip_all(data: bytes, max_bytes: int = 1 << 30, max_ratio: float = 1000.0, n: int = 4096) -> bytes:
    gz = BoundedGunzip(io.BytesIO(data), max_bytes=max_bytes, max_ratio=max_ratio, in_chunk=1024)
    out = bytearray()
    while piece := gz.read(n):
        out += piece
    return bytes(out)


# --- LineSplitter ------------------------------------------------------------------------------------


def test_lines_carry_the_offset_past_their_newline() -> None:
    """Each line is returned with the stream offset just after its LF."""
    s = LineSplitter(100)
    assert s.feed(b"ab\ncd\n", 10) == [(b"ab", 13, False), (b"cd", 16, False)]


def test_partial_line_is_kept_until_its_newline() -> None:
    """A line without LF is not returned until the LF arrives in a later chunk."""
    s = LineSplitter(100)
    assert s.feed(b"one\ntw", 0) == [(b"one", 4, False)]
    assert s.feed(b"o\n", 6) == [(b"two", 8, False)]


def test_crlf_loses_its_cr_also_across_chunks() -> None:
    """One CR before the LF is removed, also when the CR ends the previous chunk."""
    s = LineSplitter(100)
    assert s.feed(b"a\r\nb\r", 0) == [(b"a", 3, False)]
    assert s.feed(b"\n", 5) == [(b"b", 6, False)]


def test_long_line_is_cut_at_the_limit_and_flagged() -> None:
    """A line over max_line_bytes comes out cut to the limit, flagged, when its LF is seen."""
    s = LineSplitter(4)
    assert s.feed(b"abcdefgh", 0) == []
    assert s.feed(b"ij\nok\n", 8) == [(b"abcd", 11, True), (b"ok", 14, False)]


def test_crlf_split_across_chunks_at_the_limit_is_not_truncated() -> None:
    """A line exactly max_line_bytes long whose CR and LF arrive in different chunks is whole."""
    s = LineSplitter(2)
    assert (s.feed(b"ab\r", 0), s.feed(b"\n", 3)) == ([], [(b"ab", 4, False)])


def test_lone_cr_at_a_chunk_end_stays_in_the_line() -> None:
    """A CR not followed by LF is content, wherever the chunk boundary falls."""
    s = LineSplitter(100)
    assert (s.feed(b"a\r", 0), s.feed(b"b\n", 2)) == ([], [(b"a\rb", 4, False)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"x" * 9]), max_size=40),
       st.lists(st.integers(1, 12), min_size=1, max_size=10))
def test_lines_do_not_depend_on_the_chunking(pieces: list[bytes], cuts: list[int]) -> None:
    """Any chunking gives the lines, ends and truncation flags of the whole stream fed at once (both the
    split fast path for chunks without CR and the byte-wise path are exercised)."""
    stream = b"".join(pieces)
    whole = LineSplitter(8)
    want = whole.feed(stream, 0)
    want_final = whole.final()
    s = LineSplitter(8)
    got: list = []
    pos = i = 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        got += s.feed(stream[pos:pos + n], pos)
        pos += n
        i += 1
    assert got == want
    assert s.final() == want_final


def test_final_returns_the_unfinished_last_line_once() -> None:
    """final() hands out the remainder of a stream that will not grow, then nothing."""
    s = LineSplitter(100)
    s.feed(b"x\nlast\r", 0)
    assert (s.final(), s.final()) == ((b"last", False), None)


# --- BoundedGunzip -----------------------------------------------------------------------------------


def test_gunzip_reads_a_plain_member() -> None:
    """A normal gzip stream decompresses to its content."""
    assert gunzip_all(gzip.compress(b"hello\n" * 1000)) == b"hello\n" * 1000


def test_gunzip_reads_every_member_of_a_multi_member_stream() -> None:
    """Concatenated gzip members decompress to the concatenated content (as gzip -d does)."""
    assert gunzip_all(gzip.compress(b"one\n") + gzip.compress(b"two\n")) == b"one\ntwo\n"


def test_gunzip_accepts_nul_padding_after_the_stream() -> None:
    """Zero bytes after the last member are padding, not an error."""
    assert gunzip_all(gzip.compress(b"a\n") + b"\0" * 600) == b"a\n"


def test_gunzip_empty_input_is_empty() -> None:
    """A zero-byte file is an empty stream."""
    assert gunzip_all(b"") == b""


def _reason(data: bytes, **caps: float) -> tuple[str, bytes]:
    gz = BoundedGunzip(io.BytesIO(data), max_bytes=int(caps.get("max_bytes", 1 << 30)),
                       max_ratio=caps.get("max_ratio", 1000.0), in_chunk=1024)
    got = bytearray()
    try:
        while piece := gz.read(4096):
            got += piece
    except GzipError as exc:
        return exc.reason, bytes(got)
    return "ok", bytes(got)


def test_gunzip_truncated_stream_is_an_error_after_the_readable_part() -> None:
    """A stream cut short raises truncated_gzip after returning what could be decoded."""
    original = bytes(range(256)) * 400
    blob = gzip.compress(original)
    reason, got = _reason(blob[: len(blob) // 2])
    assert reason == "truncated_gzip" and original.startswith(got) and 0 < len(got) < len(original)


def test_gunzip_bad_crc_is_an_error() -> None:
    """A flipped CRC in the trailer raises bad_gzip."""
    blob = bytearray(gzip.compress(b"payload\n" * 10))
    blob[-8] ^= 0xFF
    assert _reason(bytes(blob))[0] == "bad_gzip"


def test_gunzip_not_gzip_is_an_error() -> None:
    """Plain JSON in a .gz file raises bad_gzip."""
    assert _reason(b'{"Records": []}')[0] == "bad_gzip"


def test_gunzip_trailing_garbage_is_flagged_after_the_complete_content() -> None:
    """Non-gzip bytes after a complete member: the content is returned, then trailing_garbage."""
    assert _reason(gzip.compress(b"good\n") + b"garbage!") == ("trailing_garbage", b"good\n")


def test_gunzip_ratio_cap_refuses_a_bomb_early() -> None:
    """64 MiB of zeros (about 64 KiB compressed) stops at the ratio cap long before its end."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = b"".join(co.compress(bytes(1 << 20)) for _ in range(64)) + co.flush()
    reason, got = _reason(blob, max_ratio=100.0)
    assert reason == "bomb" and len(got) < 8 << 20


def test_gunzip_absolute_cap_refuses_a_large_output() -> None:
    """Output beyond max_bytes raises bomb even at a harmless ratio."""
    assert _reason(gzip.compress(bytes(range(256)) * 100), max_bytes=10_000)[0] == "bomb"


# --- config ------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    """Only paths and format are required; the rest has the documented defaults."""
    config, issues = config_from_toml({"type": "files", "paths": ["/var/log/nginx/*.log"], "format": "nginx"},
                                      "inputs.web")
    assert issues == []
    assert config == FileInputConfig(paths=("/var/log/nginx/*.log",), format="nginx")


def test_config_reads_every_key() -> None:
    """Durations and sizes accept units."""
    config, issues = config_from_toml(
        {"paths": ["/a/*.log"], "format": "syslog", "poll_interval": "1s", "max_line_bytes": "1KiB",
         "start_at": "end", "read_gz": False, "max_gz_bytes": "1GiB", "max_gz_ratio": 50, "rotate_wait": "2s"},
        "inputs.f")
    assert issues == []
    assert config == FileInputConfig(paths=("/a/*.log",), format="syslog", poll_interval_ms=1000,
                                     max_line_bytes=1024, start_at="end", read_gz=False, max_gz_bytes=1 << 30,
                                     max_gz_ratio=50.0, rotate_wait_ms=2000)


def test_config_names_every_problem_by_dotted_path() -> None:
    """Unknown keys, wrong types and bad values are all reported, each naming its key."""
    config, issues = config_from_toml(
        {"paths": ["relative/*.log"], "format": "nginx", "pol_interval": "1s", "read_gz": "yes",
         "start_at": "middle", "max_line_bytes": "huge"},
        "inputs.web")
    assert config is None
    assert sorted(i.message.split(":")[0] for i in issues) == [
        "inputs.web.max_line_bytes", "inputs.web.paths", "inputs.web.pol_interval", "inputs.web.read_gz",
        "inputs.web.start_at"]


def test_config_requires_paths_and_format() -> None:
    """A table without paths and format names both."""
    config, issues = config_from_toml({}, "inputs.x")
    assert config is None and {i.code for i in issues} == {"missing-key"} and len(issues) == 2


@pytest.mark.parametrize(("text", "n"), [(65536, 65536), ("64KiB", 65536), ("256MiB", 256 << 20), ("10 kb", 10000)])
def test_sizes_accept_units(text: int | str, n: int) -> None:
    """Sizes are integers or numbers with B/KB/KiB/MB/MiB/GB/GiB."""
    assert parse_size_bytes(text) == n


@given(st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n", b"\xff"]), max_size=60).map(b"".join),
       st.lists(st.integers(min_value=1, max_value=20), max_size=30), st.integers(min_value=1, max_value=6))
def test_splitting_is_independent_of_how_the_bytes_are_chunked(data: bytes, cuts: list[int], limit: int) -> None:
    """Any chunking of a stream gives the lines, offsets and truncation flags of splitting it whole."""
    whole = LineSplitter(limit).feed(data, 0)
    s, got, pos = LineSplitter(limit), [], 0
    for n in cuts + [len(data)]:
        got += s.feed(data[pos:pos + n], pos)
        pos = min(pos + n, len(data))
    assert got == whole
