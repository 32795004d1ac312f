"""siem.metrics: the kernel's drops on an input's UDP sockets, read from /proc at scrape time."""

from __future__ import annotations

import socket

import pytest

from siem import metrics


@pytest.mark.timeout(30)
def test_kernel_drops_of_a_flooded_udp_socket_are_counted() -> None:
    """Datagrams sent to a socket whose tiny receive buffer is full show up as kernel drops."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel rounds up to its minimum
        server.bind(("127.0.0.1", 0))
        metrics.watch_udp_socket("test_udp_flood", server)
        try:
            before = metrics.value("siem_input_kernel_dropped_total", input="test_udp_flood")
            for _ in range(200):
                client.sendto(b"x" * 1000, server.getsockname())
            after = metrics.value("siem_input_kernel_dropped_total", input="test_udp_flood")
        finally:
            metrics.unwatch_udp_socket(server)
    assert (before, after > 100) == (0.0, True)


def test_unwatched_socket_has_no_series() -> None:
    """After unwatch_udp_socket the input's series is gone from the exposition."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        metrics.watch_udp_socket("test_udp_unwatched", sock)
        metrics.unwatch_udp_socket(sock)
    assert 'input="test_udp_unwatched"' not in metrics.render().decode()
