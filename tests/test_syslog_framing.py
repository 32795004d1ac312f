"""The synchronous core of the syslog server: RFC 6587 stream framing and UDP datagram framing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from siem.collect.syslog import HEADER_SLACK, Framed, Framer, frame_datagram


def frame_all(chunks: list[bytes], max_bytes: int = 100, framing: str = "auto") -> Framed:
    """Feed chunks one by one, then close; everything produced, in order."""
    framer = Framer(max_bytes, framing)  # type: ignore[arg-type]
    out = Framed()
    for c in chunks + [None]:  # type: ignore[list-item]
        got = framer.close() if c is None else framer.feed(c)
        out.messages += got.messages
        out.problems += got.problems
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_lf_frames() -> None:
    """LF-terminated messages come out without their terminator."""
    assert frame_all([b"<13>one\n<13>two\n"]) == Framed([b"<13>one", b"<13>two"], [])


def test_octet_counted_frames() -> None:
    """Octet-counted frames come out without the count and its space."""
    assert frame_all([b"8 <13>one 7 <13>two"]) == Framed([b"<13>one ", b"<13>two"], [])


def test_octet_frame_loses_trailing_lf() -> None:
    """An LF (CRLF, NUL) counted into an octet frame, as rsyslog's protocol-23 template sends it, is removed."""
    assert frame_all([b"6 <13>a\n7 <13>b\r\n5 <13>c"]) == Framed([b"<13>a", b"<13>b", b"<13>c"], [])


def test_mixed_framing_on_one_stream() -> None:
    """Framing is detected per frame: octet, LF, octet, LF, NUL on one connection (RELIABILITY case 1)."""
    stream = b"7 <13>a b<13>lf one\n11 <13>octet 2<13>lf two\n<13>nul\x00"
    assert frame_all([stream]) == Framed([b"<13>a b", b"<13>lf one", b"<13>octet 2", b"<13>lf two", b"<13>nul"], [])


def test_every_split_point_gives_the_same_frames() -> None:
    """Feeding byte by byte gives exactly what feeding at once gives."""
    stream = b"7 <13>a b<13>lf one\r\n11 <13>octet 2\n\n<13>nul\x0012a bad count\n5 tail"
    assert frame_all(bytewise(stream)) == frame_all([stream])


def test_crlf_and_nul_terminators() -> None:
    """CR before LF is removed; NUL terminates a frame like LF (RELIABILITY case 4)."""
    assert frame_all([b"<13>a\r\n<13>b\x00<13>c\r\x00"]) == Framed([b"<13>a", b"<13>b", b"<13>c"], [])


def test_empty_frames_are_skipped() -> None:
    """Bare LF, CRLF and NUL between frames (e.g. an LF after an octet frame) deliver nothing."""
    assert frame_all([b"\n\r\n\x005 hello\n\n<13>x\n"]) == Framed([b"hello", b"<13>x"], [])


def test_embedded_lf_inside_octet_frame_is_kept() -> None:
    """An octet-counted frame may carry LFs; they stay in the message."""
    assert frame_all([b"11 line1\nline2<13>z\n"]) == Framed([b"line1\nline2", b"<13>z"], [])


def test_no_trailing_lf_before_close() -> None:
    """The last LF frame is delivered when the connection closes without a terminator."""
    assert frame_all([b"<13>first\n<13>last"]) == Framed([b"<13>first", b"<13>last"], [])


def test_leading_zero_count_is_read_as_lf_frame() -> None:
    """`05 hello`: leading zero is a bad count; the frame is kept whole as an LF frame, counted."""
    assert frame_all([b"05 hello\n<13>next\n"]) == Framed([b"05 hello", b"<13>next"], ["bad_frame"])


def test_non_digit_count_is_read_as_lf_frame() -> None:
    """`2024-01-01 ...`: a non-digit before the space is a bad count; the line arrives whole."""
    assert frame_all([b"2024-01-01 x\n"]) == Framed([b"2024-01-01 x"], ["bad_frame"])


def test_eleven_digit_count_is_read_as_lf_frame() -> None:
    """A count of more than 10 digits is refused without waiting for a space."""
    out = frame_all([b"12345678901"])
    assert out == Framed([b"12345678901"], ["bad_frame"])


def test_count_larger_than_max_is_refused_and_the_stream_resyncs_at_the_next_lf() -> None:
    """A count above max is refused at once: the frame is re-read as a line (truncated to max), and the
    frames after the next LF are intact; the announced length is never trusted."""
    body = b"A" * 150
    assert frame_all([b"150 " + body + b"\n5 after"], max_bytes=100) == Framed(
        [b"150 " + b"A" * 96, b"after"], ["oversized_count", "oversized"])


def test_a_lying_count_costs_one_line() -> None:
    """`9999999999 x` (10 digits, 10 GB announced) then 10,000 good lines: all 10,000 arrive."""
    lines = b"".join(b"<13>good %d\n" % i for i in range(10_000))
    out = frame_all([b"9999999999 x\n" + lines[:5000], lines[5000:]], max_bytes=65536)
    assert out.messages == [b"9999999999 x"] + [b"<13>good %d" % i for i in range(10_000)]
    assert out.problems == ["oversized_count"]


def test_oversized_lf_frame_is_truncated_up_to_next_lf() -> None:
    """An LF frame beyond max: the first max bytes are delivered, the rest until LF discarded."""
    out = frame_all([b"B" * 90, b"B" * 90, b"B" * 90 + b"\n<13>next\n"], max_bytes=100)
    assert out == Framed([b"B" * 100, b"<13>next"], ["oversized"])


def test_frame_of_exactly_max_bytes_with_crlf_is_not_oversized() -> None:
    """A message of exactly max bytes followed by CRLF split across reads is delivered whole."""
    assert frame_all([b"C" * 100 + b"\r", b"\n"], max_bytes=100) == Framed([b"C" * 100], [])


def test_truncated_octet_frame_then_close() -> None:
    """A count larger than what follows, then close: the partial frame is delivered and counted (case 3)."""
    assert frame_all([b"50 <13>only part"]) == Framed([b"<13>only part"], ["truncated"])


def test_count_only_then_close() -> None:
    """A frame start of digits alone, then close: delivered as a message, nothing lost."""
    assert frame_all([b"5 hello42"]) == Framed([b"hello", b"42"], [])


def test_buffer_bounded_on_endless_line() -> None:
    """10 MiB with no delimiter in 64 KiB reads: never more than max + slack held between reads (case 5)."""
    framer = Framer(65536)
    chunk = b"x" * 65536
    messages: list[bytes] = []
    for _ in range(160):
        messages += framer.feed(chunk).messages
    assert messages == [b"x" * 65536]
    assert framer.peak_buffered <= 65536 + HEADER_SLACK
    assert framer.feed(b"\n<13>after\n").messages == [b"<13>after"]


def test_slow_partial_frame_is_not_rescanned() -> None:
    """A slowloris LF frame fed a byte at a time stays bounded and arrives whole at its LF."""
    framer = Framer(1000)
    for b in bytewise(b"<13>" + b"s" * 900):
        assert framer.feed(b).messages == []
    assert framer.buffered == 904
    assert framer.feed(b"\n").messages == [b"<13>" + b"s" * 900]


def test_forced_lf_framing_keeps_digit_lines() -> None:
    """framing = "lf": lines starting with digits (access logs) are not taken for octet counts."""
    assert frame_all([b"10.0.0.1 - - GET /\n"], framing="lf") == Framed([b"10.0.0.1 - - GET /"], [])


def test_forced_octet_framing_counts_non_octet_frames() -> None:
    """framing = "octet": a frame without a count is counted as bad_frame and kept as an LF frame."""
    assert frame_all([b"<13>x\n3 abc"], framing="octet") == Framed([b"<13>x", b"abc"], ["bad_frame"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=64, max_value=200))
def test_random_bytes_never_raise_and_stay_bounded(chunks: list[bytes], max_bytes: int) -> None:
    """Any byte stream: no exception, no message above max, no empty message, bounded buffer."""
    framer = Framer(max_bytes)
    for c in chunks:
        out = framer.feed(c)
        assert all(0 < len(m) <= max_bytes for m in out.messages)
        assert framer.buffered <= max_bytes + HEADER_SLACK
    assert all(0 < len(m) <= max_bytes for m in framer.close().messages)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=150).filter(lambda m: m[-1:] not in b"\r\n\x00"), max_size=15),
       st.integers(min_value=1, max_value=40))
def test_octet_framing_round_trips(messages: list[bytes], split: int) -> None:
    """Any messages, octet-counted and cut at any chunk size, come back exactly."""
    stream = b"".join(b"%d %s" % (len(m), m) for m in messages)
    chunks = [stream[i : i + split] for i in range(0, len(stream), split)]
    assert frame_all(chunks, max_bytes=200) == Framed(messages, [])


_LF_MESSAGE = st.binary(min_size=1, max_size=150).filter(
    lambda m: b"\n" not in m and b"\x00" not in m and m[:1] not in b"0123456789" and not m.endswith(b"\r"))


@settings(max_examples=100, deadline=None)
@given(st.lists(_LF_MESSAGE, max_size=15), st.sampled_from([b"\n", b"\r\n", b"\x00"]),
       st.integers(min_value=1, max_value=40))
def test_lf_framing_round_trips(messages: list[bytes], terminator: bytes, split: int) -> None:
    """Any messages not starting with a digit, terminated by LF, CRLF or NUL and cut anywhere, come back."""
    stream = b"".join(m + terminator for m in messages)
    chunks = [stream[i : i + split] for i in range(0, len(stream), split)]
    assert frame_all(chunks, max_bytes=200) == Framed(messages, [])


def test_datagram_trailing_terminators_removed() -> None:
    """A datagram loses trailing LF, CR and NUL."""
    assert frame_datagram(b"<13>hi\r\n\x00", 100) == (b"<13>hi", None)


def test_datagram_empty_is_dropped() -> None:
    """A zero-length (or terminator-only) datagram is dropped as empty (case 8)."""
    assert (frame_datagram(b"", 100), frame_datagram(b"\n", 100)) == ((None, "empty"), (None, "empty"))


def test_datagram_oversized_is_truncated() -> None:
    """A datagram above max is truncated to max and counted."""
    assert frame_datagram(b"D" * 150, 100) == (b"D" * 100, "oversized")
