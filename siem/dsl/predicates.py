"""Predicates on one text value, shared by the batch compiler (siem.engine.compiler, once per distinct
value of a column) and by one-event evaluation (siem.dsl.evaluate)."""

from __future__ import annotations

import bisect
import ipaddress
import socket
from typing import Callable

ValuePred = Callable[[str], bool]


def _str_pred(kind: str, values: tuple[str, ...], ci: bool) -> ValuePred:
    needles = tuple(v.casefold() if ci else v for v in map(str, values))
    fold = str.casefold if ci else (lambda s: s)
    if kind == "startswith":
        return lambda s: fold(s).startswith(needles)
    if kind == "endswith":
        return lambda s: fold(s).endswith(needles)
    if len(needles) == 1:
        needle = needles[0]
        return lambda s: needle in fold(s)

    def contains_any(s: str) -> bool:
        text = fold(s)  # once per value, not once per needle
        return any(n in text for n in needles)

    return contains_any


def _cidr_pred(networks: tuple[str, ...]) -> ValuePred:
    """IPs parsed to integers once per unique value and looked up by bisection in the networks merged into
    sorted, disjoint integer ranges: O(log n) per unique value, so a threat-intel list of a million
    addresses costs what a list of ten does."""
    ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    inet_pton, af_inet = socket.inet_pton, socket.AF_INET
    for text in networks:
        if "/" not in text and ":" not in text:  # a plain IPv4 address (most of a threat feed): the C parser
            try:
                n = int.from_bytes(inet_pton(af_inet, text), "big")
                ranges[4].append((n, n))
                continue
            except OSError:
                pass
        net = ipaddress.ip_network(text, strict=False)
        ranges[net.version].append((int(net.network_address), int(net.broadcast_address)))
    tables: dict[int, tuple[list[int], list[int]]] = {}
    for version, rs in ranges.items():
        rs.sort()
        starts: list[int] = []
        ends: list[int] = []
        for a, b in rs:
            if ends and a <= ends[-1] + 1:
                ends[-1] = max(ends[-1], b)
            else:
                starts.append(a)
                ends.append(b)
        tables[version] = (starts, ends)

    def inside(n: int, version: int) -> bool:
        starts, ends = tables[version]
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= ends[i]

    def pred(s: str) -> bool:
        try:  # dotted quads through the C parser; everything else through ipaddress
            return inside(int.from_bytes(socket.inet_pton(socket.AF_INET, s), "big"), 4)
        except OSError:
            pass
        try:
            ip = ipaddress.ip_address(s.strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return inside(int(ip), ip.version)

    return pred
