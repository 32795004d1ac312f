"""Bad input over real sockets (RELIABILITY.md cases 1-9): the server survives, counts, and keeps serving."""

from __future__ import annotations

import asyncio
import socket

import pytest

from siem import metrics
from siem.collect import RawRecord, Sink, syslog
from siem.collect.syslog import HEADER_SLACK, Protocol, SyslogConfig, SyslogServer
from syslog_support import dropped, errors, send_tcp, serving, unique_name, wait_until

TCP = SyslogConfig(protocol="tcp", port=0)


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


async def _stream(payload: bytes, config: SyslogConfig = TCP) -> tuple[list[bytes], dict[str, float]]:
    async with serving(config) as (server, sink):
        await send_tcp(server.port, payload)
        await wait_until(lambda: server.connection_count == 0 and server.buffered_bytes() == 0)
        await wait_until(lambda: metrics.value("siem_received_bytes_total", input=server.name) == len(payload))
        counts = {r: dropped(server, r) for r in ("oversized", "truncated")} | {"bad_frame": errors(server, "bad_frame")}
        return sink.data, counts


@pytest.mark.timeout(30)
def test_mixed_framing_on_one_connection() -> None:
    """Case 1: octet-counted and LF-framed messages interleaved on one connection all arrive, in order."""
    data, counts = run(_stream(b"9 <13>one 1<13>two\n9 <13>three<13>four\n"))
    assert (data, counts) == ([b"<13>one 1", b"<13>two", b"<13>three", b"<13>four"],
                              {"oversized": 0, "truncated": 0, "bad_frame": 0})


@pytest.mark.timeout(30)
def test_bad_octet_counts_are_counted_and_kept() -> None:
    """Case 2: leading zero, non-digit, 11 digits: each frame kept as an LF frame, counted as bad_frame."""
    data, counts = run(_stream(b"07 <13>a\n1x2 <13>b\n12345678901 <13>c\n5 after"))
    assert (data, counts) == ([b"07 <13>a", b"1x2 <13>b", b"12345678901 <13>c", b"after"],
                              {"oversized": 0, "truncated": 0, "bad_frame": 3})


@pytest.mark.timeout(30)
def test_octet_count_above_max_is_refused_and_the_stream_resyncs() -> None:
    """Case 2: a count above max_message_bytes is refused at once (oversized_count); the frame is read as
    a line up to the next LF (truncated to max), and what follows the LF is intact."""
    config = SyslogConfig(protocol="tcp", port=0, max_message_bytes=1024)
    data, counts = run(_stream(b"5000 " + b"O" * 5000 + b"\n8 <13>next", config))
    assert (data, counts) == ([b"5000 " + b"O" * 1019, b"<13>next"], {"oversized": 1, "truncated": 0, "bad_frame": 0})


@pytest.mark.timeout(30)
def test_truncated_octet_frame_then_close() -> None:
    """Case 3: a count larger than the bytes that follow, then close: partial frame delivered, counted."""
    data, counts = run(_stream(b"6 <13>ok100 <13>cut short"))
    assert (data, counts) == ([b"<13>ok", b"<13>cut short"], {"oversized": 0, "truncated": 1, "bad_frame": 0})


@pytest.mark.timeout(30)
def test_no_trailing_lf_embedded_nul_and_crlf() -> None:
    """Case 4: CRLF and NUL terminate frames; a last frame without LF is delivered at close."""
    data, counts = run(_stream(b"<13>crlf\r\n<13>nul\x00<13>no newline at close"))
    assert (data, counts) == ([b"<13>crlf", b"<13>nul", b"<13>no newline at close"],
                              {"oversized": 0, "truncated": 0, "bad_frame": 0})


async def _endless_line(total: int) -> tuple[list[bytes], float, int]:
    async with serving(TCP) as (server, sink):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        block = b"x" * (1024 * 1024)
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        writer.write(b"\n<13>after the flood\n")
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: len(sink.records) >= 2)
        return sink.data, dropped(server, "oversized"), server.peak_buffered


@pytest.mark.timeout(60)
def test_ten_mib_line_without_delimiter_keeps_memory_bounded() -> None:
    """Case 5: 10 MiB with no LF: one max-size message, counted; the server never held more than max + slack."""
    data, oversized, peak = run(_endless_line(10 * 1024 * 1024))
    assert data == [b"x" * 65536, b"<13>after the flood"]
    assert oversized == 1
    assert peak <= 65536 + HEADER_SLACK


async def _idle_flood(limit: int, idle: int) -> tuple[list[bytes], float, int, int]:
    config = SyslogConfig(protocol="tcp", port=0, max_connections=limit, max_connections_per_source=0)
    async with serving(config) as (server, sink):
        idlers = []
        for _ in range(idle):
            idlers.append(await asyncio.open_connection("127.0.0.1", server.port))
        await wait_until(lambda: errors(server, "evicted") >= idle - limit)
        peak_conns = server.connection_count
        _, writer = await send_tcp(server.port, b"<13>healthy client\n")
        await wait_until(lambda: len(sink.records) >= 1)
        evicted = errors(server, "evicted")
        for _, w in idlers:
            w.close()
        return sink.data, evicted, peak_conns, limit


@pytest.mark.timeout(60)
def test_idle_connections_beyond_limit_do_not_lock_out_a_healthy_client() -> None:
    """Case 6: 150 idle connections at a limit of 50: the oldest silent ones are evicted, a sender gets through."""
    data, evicted, conns, limit = run(_idle_flood(50, 150))
    assert data == [b"<13>healthy client"]
    assert evicted == 150 - 50 + 1  # the healthy client evicted one more silent connection
    assert conns == limit


async def _full_of_senders(limit: int) -> tuple[bytes, float, list[bytes]]:
    config = SyslogConfig(protocol="tcp", port=0, max_connections=limit)
    async with serving(config) as (server, sink):
        senders = []
        for i in range(limit):
            senders.append(await send_tcp(server.port, b"<13>sender %d\n" % i, close=False))
        await wait_until(lambda: len(sink.records) == limit)
        reader, writer = await send_tcp(server.port, b"<13>one too many\n", close=False)
        try:
            refused = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:  # the server aborts the refused connection (RST)
            refused = b""
        await wait_until(lambda: errors(server, "connection_limit") >= 1)
        count = errors(server, "connection_limit")
        for _, w in senders + [(reader, writer)]:
            w.close()
        return refused, count, sink.data


@pytest.mark.timeout(60)
def test_connection_beyond_limit_of_active_senders_is_refused() -> None:
    """When every connection has delivered messages, one more is closed at once and counted."""
    refused, count, data = run(_full_of_senders(10))
    assert (refused, count) == (b"", 1)
    assert sorted(data) == sorted(b"<13>sender %d" % i for i in range(10))


async def _per_source(limit: int) -> tuple[bytes, float, list[bytes]]:
    config = SyslogConfig(protocol="tcp", port=0, max_connections_per_source=limit)
    async with serving(config) as (server, sink):
        flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(limit)]
        await wait_until(lambda: server.connection_count == limit)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            refused = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            refused = b""
        # another address of the loopback network is another source
        _, other = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        other.write(b"<13>from another source\n")
        await other.drain()
        await wait_until(lambda: len(sink.records) >= 1)
        for _, w in flood + [(reader, writer), (None, other)]:
            w.close()
        return refused, errors(server, "source_limit"), sink.data


@pytest.mark.timeout(30)
def test_connections_per_source_are_capped() -> None:
    """max_connections_per_source: one address's extra connection is refused; other sources still get in."""
    assert run(_per_source(3)) == (b"", 1, [b"<13>from another source"])


async def _idle_timeout() -> tuple[bytes, float]:
    config = SyslogConfig(protocol="tcp", port=0, idle_timeout_ms=300)
    async with serving(config) as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"<13>partial, never finished")
        await writer.drain()
        got = await asyncio.wait_for(reader.read(), 10)
        await wait_until(lambda: errors(server, "idle_timeout") >= 1)
        writer.close()
        return got, errors(server, "idle_timeout")


@pytest.mark.timeout(30)
def test_idle_connection_is_closed_after_idle_timeout() -> None:
    """Case 6 (slowloris): a connection silent for idle_timeout is closed by the server and counted."""
    assert run(_idle_timeout()) == (b"", 1)


async def _udp_bad() -> tuple[list[bytes], float, float]:
    config = SyslogConfig(protocol="udp", port=0, max_message_bytes=1024)
    async with serving(config) as (server, sink):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        payloads = [b"", b"\n", b"U" * 60000, b"<13>fine\n"]
        for p in payloads:
            sock.sendto(p, ("127.0.0.1", server.port))
        sock.close()
        await wait_until(lambda: len(sink.records) >= 2 and dropped(server, "empty") >= 2)
        return sink.data, dropped(server, "empty"), dropped(server, "oversized")


@pytest.mark.timeout(30)
def test_udp_zero_length_and_oversized_datagrams() -> None:
    """Case 8: empty datagrams are dropped and counted; a 60000-byte one is truncated to max and counted."""
    data, empty, oversized = run(_udp_bad())
    assert (data, empty, oversized) == ([b"U" * 1024, b"<13>fine"], 2, 1)


async def _udp_kernel_overflow() -> tuple[int, float, int]:
    config = SyslogConfig(protocol="udp", port=0, receive_buffer_bytes=4096, queue_size=100_000)
    async with serving(config) as (server, sink):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        burst = 2000
        for i in range(burst):  # the loop is not running: nothing reads while the burst fills the buffer
            sock.sendto(b"<13>flood %d" % i, ("127.0.0.1", server.port))
        await wait_until(lambda: len(sink.records) > 0)
        await asyncio.sleep(0.05)  # let the reader drain what the kernel kept
        sock.sendto(b"<13>marker", ("127.0.0.1", server.port))  # once it is in, the burst has been read
        await wait_until(lambda: sink.data[-1:] == [b"<13>marker"])
        sock.close()
        return len(sink.records), dropped(server, "kernel"), burst + 1


@pytest.mark.timeout(30)
def test_udp_burst_above_receive_buffer_counts_kernel_drops() -> None:
    """Case 8: datagrams the kernel dropped on a full receive buffer are counted (SO_MEMINFO drop counter)."""
    received, kernel, sent = run(_udp_kernel_overflow())
    assert kernel > 0
    assert received + kernel == sent


async def _udp_slow_sink() -> tuple[float, int, int]:
    release = asyncio.Event()
    records: list[RawRecord] = []

    async def slow_sink(record: RawRecord) -> None:
        await release.wait()
        records.append(record)

    config = SyslogConfig(protocol="udp", port=0, queue_size=5)
    async with serving(config, sink=slow_sink) as (server, _):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        for i in range(50):
            payload = b"<13>burst %d" % i
            sent += len(payload)
            sock.sendto(payload, ("127.0.0.1", server.port))
        sock.close()
        await wait_until(lambda: metrics.value("siem_received_bytes_total", input=server.name) == sent)
        full = dropped(server, "queue_full")
        release.set()
        await wait_until(lambda: len(records) >= 50 - full)
        await asyncio.sleep(0.05)
        return full, len(records), 50


@pytest.mark.timeout(30)
def test_udp_burst_beyond_slow_sink_is_dropped_and_counted() -> None:
    """Case 8: the datagram callback never waits; a stuck sink makes the bounded queue drop, counted."""
    full, delivered, sent = run(_udp_slow_sink())
    assert delivered + full == sent  # nothing lost silently
    assert delivered in (5, 6)  # the queue's 5, plus 1 if the sink had taken one before the burst ended


async def _tcp_backpressure() -> tuple[int, int, int, int]:
    release = asyncio.Event()
    records: list[RawRecord] = []

    async def slow_sink(record: RawRecord) -> None:
        await release.wait()
        records.append(record)

    async with serving(TCP, sink=slow_sink) as (server, _):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        line = b"<13>" + b"p" * 95 + b"\n"
        cap = 64 * 1024 * 1024
        block = line * 1000
        sent = 0
        stalled = 0
        while sent < cap and stalled < 50:  # a writer that cannot write for 50 x 10 ms is blocked
            try:
                sent += sock.send(block[sent % len(block) :])
                stalled = 0
            except BlockingIOError:
                stalled += 1
                await asyncio.sleep(0.01)
        held = server.buffered_bytes()
        release.set()
        # finish the last block so every line is whole (through the loop: the server shares it)
        await asyncio.get_running_loop().sock_sendall(sock, block[sent % len(block) :])
        sent += (len(block) - sent % len(block)) % len(block)
        sock.close()
        lines = sent // len(line)
        await wait_until(lambda: len(records) >= lines, 60)
        return sent, cap, held, lines - len(records)


@pytest.mark.timeout(90)
def test_slow_sink_slows_the_tcp_sender_not_memory() -> None:
    """A stuck sink stops the reads: the sender blocks (TCP window) long before 64 MiB; then all arrives."""
    sent, cap, held, missing = run(_tcp_backpressure())
    assert sent < cap
    assert held <= 65536 + HEADER_SLACK
    assert missing == 0


async def _replay() -> list[tuple[bytes, str]]:
    async with serving(TCP) as (server, sink):
        for _ in range(2):  # a sender that reconnects and sends the same message again
            await send_tcp(server.port, b"<13>same message\n")
        await wait_until(lambda: len(sink.records) >= 2)
        return [(r.data, r.origin) for r in sink.records]


@pytest.mark.timeout(30)
def test_replayed_message_after_reconnect_is_delivered_again() -> None:
    """Case 9: TCP is at-least-once; a replay after reconnect arrives twice, from two origins (dedup is later)."""
    got = run(_replay())
    assert [d for d, _ in got] == [b"<13>same message"] * 2
    assert got[0][1] != got[1][1] and all(o.startswith("127.0.0.1:") for _, o in got)


# --- stopping -----------------------------------------------------------------------------------------

def _gated_sink() -> tuple[asyncio.Event, list[RawRecord], Sink]:
    gate = asyncio.Event()
    records: list[RawRecord] = []

    async def sink(record: RawRecord) -> None:
        await gate.wait()
        records.append(record)

    return gate, records, sink


async def _stop_while_delivering(protocol: Protocol) -> tuple[list[bytes], float]:
    gate, records, sink = _gated_sink()
    config = SyslogConfig(protocol=protocol, port=0)
    async with serving(config, sink=sink) as (server, _):
        if protocol == "tcp":
            _, writer = await send_tcp(server.port, b"<13>a\n<13>b\n<13>c\n<13>unfinished", close=False)
            await wait_until(lambda: server.buffered_bytes() > 0)  # read and framed; a, b, c at the sink
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for m in (b"<13>a", b"<13>b", b"<13>c"):
                    sock.sendto(m, ("127.0.0.1", server.port))
            await wait_until(lambda: metrics.value("siem_received_bytes_total", input=server.name) == 15)
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.sleep(0.05)
        gate.set()  # the pipeline takes the records while stop() waits
        await stopping
        if protocol == "tcp":
            writer.close()
        return [r.data for r in records], dropped(server, "shutdown")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_stop_hands_over_what_was_already_read(protocol: Protocol) -> None:
    """stop() lets messages already read reach a slow sink; an unfinished TCP frame is counted, not sent."""
    data, shutdown = asyncio.run(_stop_while_delivering(protocol))
    assert data == [b"<13>a", b"<13>b", b"<13>c"]
    assert shutdown == (1 if protocol == "tcp" else 0)


async def _stop_with_stuck_sink() -> tuple[float, int]:
    _, records, sink = _gated_sink()  # the gate never opens
    server = SyslogServer(SyslogConfig(protocol="tcp", port=0), unique_name(), stop_grace_s=0.2)
    await server.start(sink)
    _, writer = await send_tcp(server.port, b"<13>a\n<13>b\n<13>c\n", close=False)
    await wait_until(lambda: server.connection_count == 1 and metrics.value(
        "siem_received_bytes_total", input=server.name) == 18)
    await server.stop()
    writer.close()
    return dropped(server, "shutdown"), len(records)


@pytest.mark.timeout(30)
def test_stop_with_stuck_sink_gives_up_after_grace_and_counts() -> None:
    """A sink that never returns: stop() ends after its grace time; the 3 messages are counted as lost."""
    assert asyncio.run(_stop_with_stuck_sink()) == (3, 0)


# --- fair sharing (issue 15.8) --------------------------------------------------------------------


async def _squatters(distinct_sources: bool) -> tuple[list[bytes], float, float, int]:
    """200 connections that each send one line and stay open, then a fresh sender from 127.0.0.1."""
    config = SyslogConfig(protocol="tcp", port=0)  # the defaults: 200 connections, 32 per source
    async with serving(config) as (server, sink):
        squat = []
        for i in range(200):
            local = f"127.0.{1 + i // 250}.{2 + i % 250}" if distinct_sources else "127.0.0.2"
            try:
                squat.append(await send_tcp(server.port, b"<13>squat %d\n" % i, close=False,
                                            local_addr=(local, 0)))
            except ConnectionError:
                pass
        await wait_until(lambda: errors(server, "source_limit") + len(sink.records) >= 200)
        await asyncio.sleep(0.7)  # > EVICT_SILENT_S as patched by the test
        before = len(sink.records)
        _, writer = await send_tcp(server.port, b"<13>fresh sender\n", close=False)
        await wait_until(lambda: b"<13>fresh sender" in sink.data)
        data = sink.data[before:]
        result = data, errors(server, "source_limit"), errors(server, "evicted"), server.connection_count
        writer.close()
        for _, w in squat:
            w.close()
        return result


@pytest.mark.timeout(60)
def test_200_squatters_from_one_host_do_not_lock_out_a_fresh_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-source limit on by default: one host keeps 32 connections, the other 168 are refused at once."""
    monkeypatch.setattr(syslog, "EVICT_SILENT_S", 0.5)
    data, source_limit, evicted, conns = run(_squatters(distinct_sources=False))
    assert data == [b"<13>fresh sender"]
    assert (source_limit, evicted, conns) == (168, 0, 33)


@pytest.mark.timeout(60)
def test_200_squatters_from_200_hosts_do_not_lock_out_a_fresh_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slot taken by a connection that sent one line and went silent: the one silent longest is
    evicted for the fresh sender."""
    monkeypatch.setattr(syslog, "EVICT_SILENT_S", 0.5)
    data, source_limit, evicted, conns = run(_squatters(distinct_sources=True))
    assert data == [b"<13>fresh sender"]
    assert (source_limit, evicted, conns) == (0, 1, 200)


async def _lying_count() -> tuple[list[bytes], list[bytes], float]:
    async with serving(TCP) as (server, sink):
        _, liar = await send_tcp(server.port, b"9999999999 x\n", close=False)
        _, honest = await send_tcp(server.port, b"", close=False)
        lines = [b"<13>line %d" % i for i in range(10_000)]
        for i in range(0, 10_000, 1000):
            chunk = b"".join(ln + b"\n" for ln in lines[i:i + 1000])
            liar.write(chunk)
            honest.write(chunk)
            await asyncio.gather(liar.drain(), honest.drain())
        await wait_until(lambda: len(sink.records) >= 20_001)
        by_origin: dict[str, list[bytes]] = {}
        for r in sink.records:
            by_origin.setdefault(r.origin, []).append(r.data)
        liar_port = liar.get_extra_info("sockname")[1]
        mine = by_origin.pop(f"127.0.0.1:{liar_port}")
        (theirs,) = by_origin.values()
        liar.close()
        honest.close()
        return mine, theirs, errors(server, "oversized_count")


@pytest.mark.timeout(60)
def test_a_lying_octet_count_costs_only_its_own_line(caplog: pytest.LogCaptureFixture) -> None:
    """`9999999999 x` then 10,000 lines: the liar's own lines all arrive, and so do those of another
    connection sending at the same time; counted, and logged naming the peer."""
    with caplog.at_level("WARNING", logger="siem.collect.syslog"):
        mine, theirs, count = run(_lying_count())
    lines = [b"<13>line %d" % i for i in range(10_000)]
    assert mine == [b"9999999999 x"] + lines
    assert theirs == lines
    assert count == 1
    assert [r.getMessage() for r in caplog.records if "octet count" in r.getMessage()][0].endswith(
        ")") and "peer 127.0.0.1:" in caplog.text


def test_peer_log_is_rate_limited_and_says_how_many_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    peer_log = syslog.PeerLog("t", every_s=10, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="siem.collect.syslog"):
        logged = [peer_log("evicted", f"10.0.0.{i}:1") for i in range(5)]
        now[0] = 10.0
        logged.append(peer_log("evicted", "10.0.0.9:1"))
        logged.append(peer_log("source_limit", "10.0.0.9:2"))
    assert logged == [True, False, False, False, False, True, True]
    msgs = [r.getMessage() for r in caplog.records]
    assert "peer 10.0.0.0:1" in msgs[0] and msgs[1].endswith("(peer 10.0.0.9:1); 4 more since the last such line")
    assert "max_connections_per_source" in msgs[2]
