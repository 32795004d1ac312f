"""Threat-intel indicator files for rule lists: plain text, STIX 2 bundles, MISP exports.

A rule pack names them like any list file, with the kind of indicator after ``#``::

    list bad_ips     = file "intel/feed.stix.json#ip"      # IPv4/IPv6 addresses and networks
    list bad_domains = file "intel/misp-event.json#domain"
    list bad_hashes  = file "intel/hashes.txt#hash"         # MD5, SHA-1, SHA-256, SHA-512 (lower case)
    list bad_urls    = file "intel/feed.stix.json#url"

    when source.ip in cidr(bad_ips) or url.domain in bad_domains or file.hash.sha256 in bad_hashes

Kinds: ``ip``, ``domain``, ``url``, ``hash`` (a file without ``#kind`` keeps every line, as before). The
file's format is recognised from its content:

* **plain text**: one indicator per line, ``#`` comments; each value's kind is recognised (an IP or
  CIDR, a hex digest of 32/40/64/128 digits, a URL with a scheme, else a domain when it looks like one);
* **STIX 2.0/2.1 bundle** (``{"type": "bundle", "objects": [...]}``): ``indicator`` objects whose
  ``pattern`` compares ``ipv4-addr:value``, ``ipv6-addr:value``, ``domain-name:value``, ``url:value`` or
  ``file:hashes.<alg>`` to a string (every comparison of an OR/AND pattern is taken; revoked
  indicators and those whose ``valid_until`` has passed are skipped), and cyber observables of those
  types with a ``value``;
* **MISP** event exports (``{"Event": {...}}``, ``{"response": [{"Event": ...}]}`` or a list of events):
  attributes (also inside objects) of type ip-src/ip-dst (``|port`` stripped), domain, hostname, url,
  md5/sha1/sha256/sha512 and the ``filename|<hash>`` pairs; ``to_ids`` false attributes are skipped.

Lists are read when the rules load, so ``siem reload`` (SIGHUP) picks up a new feed without a restart;
a file that cannot be read or parsed is a rule error and the running rule set stays.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Iterator

import orjson

KINDS: Final = ("ip", "domain", "url", "hash")
_HASH: Final = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}|[0-9a-fA-F]{128}")
_DOMAIN: Final = re.compile(r"(?=.{1,253}$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62}\.?")
_STIX_CMP: Final = re.compile(
    r"(ipv4-addr|ipv6-addr|domain-name|url|file):(value|hashes\.(?:'[^']+'|\"[^\"]+\"|[A-Za-z0-9_-]+))\s*=\s*'((?:[^'\\]|\\.)*)'")
_STIX_KIND: Final = {"ipv4-addr": "ip", "ipv6-addr": "ip", "domain-name": "domain", "url": "url", "file": "hash"}
_MISP_KIND: Final = {"ip-src": "ip", "ip-dst": "ip", "ip-src|port": "ip", "ip-dst|port": "ip", "domain": "domain",
                     "hostname": "domain", "url": "url", "uri": "url", "md5": "hash", "sha1": "hash",
                     "sha256": "hash", "sha512": "hash", "domain|ip": "domain"}


class IntelError(ValueError):
    """An indicator file that is not one of the formats above."""


def kind_of(value: str) -> str | None:
    """The indicator kind of a plain value, or None."""
    v = value.strip()
    if "/" not in v and ":" not in v:
        try:
            socket.inet_pton(socket.AF_INET, v)
            return "ip"
        except OSError:
            pass
    try:
        ipaddress.ip_network(v, strict=False)
        return "ip"
    except ValueError:
        pass
    if _HASH.fullmatch(v):
        return "hash"
    if "://" in v:
        return "url"
    if _DOMAIN.fullmatch(v):
        return "domain"
    return None


def _norm(kind: str, value: str) -> str | None:
    v = value.strip()
    if not v:
        return None
    if kind == "ip":
        if "/" not in v and ":" not in v:
            try:
                socket.inet_pton(socket.AF_INET, v)  # a plain IPv4 address, already canonical
                return v
            except OSError:
                return None
        try:
            return str(ipaddress.ip_network(v, strict=False)) if "/" in v else str(ipaddress.ip_address(v))
        except ValueError:
            return None
    if kind == "hash":
        return v.lower() if _HASH.fullmatch(v) else None
    if kind == "domain":
        return v.lower().rstrip(".")
    return v


def read_indicators(path: Path, kind: str | None, now: datetime | None = None) -> tuple[str, ...]:
    """The values of one kind (every line for kind None on a text file) in file order, deduplicated.
    Raises OSError when unreadable and IntelError when the JSON is not a STIX bundle or MISP export."""
    data = path.read_bytes()
    head = data.lstrip()[:1]
    if head in (b"{", b"["):
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise IntelError(f"{path}: invalid JSON: {exc}") from None
        pairs = list(_json_indicators(doc, now or datetime.now(UTC)))
        if kind is None:
            raise IntelError(f"{path}: a STIX/MISP file needs the kind of indicator: {path.name}#ip, #domain, "
                             "#url or #hash")
    else:
        lines = data.decode("utf-8", "replace").splitlines()
        values = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if kind is None:
            return tuple(dict.fromkeys(values))
        pairs = [(k, v) for v in values if (k := kind_of(v)) is not None]
    out = (_norm(k, v) for k, v in pairs if k == kind)
    return tuple(dict.fromkeys(v for v in out if v))


def _json_indicators(doc: object, now: datetime) -> Iterator[tuple[str, str]]:
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        objects = doc.get("objects")
        if not isinstance(objects, list):
            raise IntelError("STIX bundle without an objects list")
        yield from _stix(objects, now)
        return
    events: list[object] = []
    if isinstance(doc, dict) and "Event" in doc:
        events = [doc]
    elif isinstance(doc, dict) and isinstance(doc.get("response"), list):
        events = doc["response"]
    elif isinstance(doc, list):
        events = doc
    else:
        raise IntelError("neither a STIX 2 bundle ({\"type\": \"bundle\"}) nor a MISP event export ({\"Event\": ...})")
    for e in events:
        ev = e.get("Event") if isinstance(e, dict) else None
        if not isinstance(ev, dict):
            raise IntelError("MISP export: an element without an Event object")
        attrs = list(ev.get("Attribute") or [])
        for obj in ev.get("Object") or []:
            if isinstance(obj, dict):
                attrs += obj.get("Attribute") or []
        yield from _misp(attrs)


def _stix(objects: list[object], now: datetime) -> Iterator[tuple[str, str]]:
    for o in objects:
        if not isinstance(o, dict):
            continue
        t = o.get("type")
        if t == "indicator":
            if o.get("revoked") is True or _expired(o.get("valid_until"), now):
                continue
            pattern = o.get("pattern")
            if not isinstance(pattern, str) or o.get("pattern_type", "stix") != "stix":
                continue
            for obj_type, prop, value in _STIX_CMP.findall(pattern):
                if obj_type == "file" and not prop.startswith("hashes"):
                    continue
                yield _STIX_KIND[obj_type], value.replace("\\'", "'").replace("\\\\", "\\")
        elif t in _STIX_KIND and t != "file" and isinstance(o.get("value"), str):
            yield _STIX_KIND[t], o["value"]
        elif t == "file" and isinstance(o.get("hashes"), dict):
            for h in o["hashes"].values():
                if isinstance(h, str):
                    yield "hash", h


def _expired(stamp: object, now: datetime) -> bool:
    if not isinstance(stamp, str):
        return False
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) < now
    except ValueError:
        return False


def _misp(attrs: list[object]) -> Iterator[tuple[str, str]]:
    for a in attrs:
        if not isinstance(a, dict) or a.get("to_ids") in (False, "0", 0):
            continue
        t, v = a.get("type"), a.get("value")
        if not isinstance(t, str) or not isinstance(v, str):
            continue
        if t.startswith("filename|"):
            yield "hash", v.split("|", 1)[-1]
            continue
        kind = _MISP_KIND.get(t)
        if kind is None:
            continue
        if "|" in t:  # ip-dst|port, domain|ip
            v = v.split("|", 1)[0]
        yield kind, v
