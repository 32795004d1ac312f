"""Threat-intel indicator files as rule lists: STIX 2 bundles, MISP exports, plain text; CIDR lookups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_support import ev

from siem.engine.compiler import _cidr_pred
from siem.dsl.intel import read_indicators
from siem.dsl.loader import load_rules
from siem.engine.runtime import Engine
from siem.errors import RuleError

STIX = {
    "type": "bundle", "id": "bundle--1", "objects": [
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--a", "pattern_type": "stix",
         "pattern": "[ipv4-addr:value = '203.0.113.66'] OR [domain-name:value = 'Evil.Example.']",
         "valid_from": "2024-01-01T00:00:00Z"},
        {"type": "indicator", "id": "indicator--b", "pattern": "[ipv4-addr:value = '198.51.100.0/24']",
         "pattern_type": "stix", "valid_from": "2024-01-01T00:00:00Z"},
        {"type": "indicator", "id": "indicator--c", "pattern": "[ipv4-addr:value = '192.0.2.1']", "revoked": True,
         "pattern_type": "stix", "valid_from": "2024-01-01T00:00:00Z"},
        {"type": "indicator", "id": "indicator--d", "pattern": "[ipv4-addr:value = '192.0.2.2']",
         "pattern_type": "stix", "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2020-02-01T00:00:00Z"},
        {"type": "indicator", "id": "indicator--e", "pattern_type": "stix",
         "pattern": "[file:hashes.'SHA-256' = 'E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855']"},
        {"type": "ipv6-addr", "id": "ipv6-addr--f", "value": "2001:db8::66"},
        {"type": "malware", "id": "malware--g", "name": "x"},
    ]}
MISP = {"response": [{"Event": {"info": "campaign", "Attribute": [
    {"type": "ip-dst|port", "value": "203.0.113.77|443", "to_ids": True},
    {"type": "domain", "value": "c2.example.net", "to_ids": True},
    {"type": "ip-src", "value": "203.0.113.78", "to_ids": False},
    {"type": "filename|sha256", "value": "x.exe|" + "ab" * 32, "to_ids": True}],
    "Object": [{"name": "file", "Attribute": [{"type": "md5", "value": "CD" * 16, "to_ids": True}]}]}}]}

RULES = """
list ti_ips     = file "intel/feed.json#ip"
list misp_ips   = file "intel/misp.json#ip"
list ti_domains = file "intel/feed.json#domain"
list txt_hashes = file "intel/hashes.txt#hash"
rule ti_ip {
  severity high
  when source.ip in cidr(ti_ips) or source.ip in cidr(misp_ips)
  message "{source.ip}"
}
rule ti_domain {
  severity high
  when url.domain in ti_domains
  message "{url.domain}"
}
rule ti_hash {
  severity high
  when file.hash.sha256 in txt_hashes
  message "{file.hash.sha256}"
}
"""


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "feed.json").write_text(json.dumps(STIX))
    (tmp_path / "intel" / "misp.json").write_text(json.dumps(MISP))
    (tmp_path / "intel" / "hashes.txt").write_text("# feed\n" + "AA" * 20 + "\nnot-a-hash!\n203.0.113.1\n")
    (tmp_path / "ti.rules").write_text(RULES)
    return tmp_path


def test_indicators_of_each_format_and_kind(pack: Path) -> None:
    load_rules([pack])  # the pack with all four lists loads

    feed, misp, txt = pack / "intel" / "feed.json", pack / "intel" / "misp.json", pack / "intel" / "hashes.txt"
    assert read_indicators(feed, "ip") == ("203.0.113.66", "198.51.100.0/24", "2001:db8::66")  # revoked/expired skipped
    assert read_indicators(feed, "domain") == ("evil.example",)
    assert read_indicators(feed, "hash") == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",)
    assert read_indicators(misp, "ip") == ("203.0.113.77",)  # to_ids false left out, port stripped
    assert read_indicators(misp, "hash") == ("ab" * 32, "cd" * 16)
    assert read_indicators(txt, "hash") == ("aa" * 20,)
    assert read_indicators(txt, "ip") == ("203.0.113.1",)


def test_rules_match_the_indicators(pack: Path) -> None:
    eng = Engine(load_rules([pack]), lateness_ms=0, future_skew_ms=None)
    events = [ev(0, source__ip="198.51.100.200"), ev(1, source__ip="203.0.113.77"), ev(2, source__ip="192.0.2.1"),
              ev(3, url__domain="evil.example"), ev(4, file__hash__sha256="aa" * 20), ev(5, source__ip="192.0.2.2")]
    fired = sorted((a.rule_id, a.message) for a in eng.process(events) + eng.flush())
    assert fired == [("ti_domain", "evil.example"), ("ti_hash", "aa" * 20), ("ti_ip", "198.51.100.200"),
                     ("ti_ip", "203.0.113.77")]


def test_bad_feeds_are_rule_errors_naming_the_file(pack: Path) -> None:
    (pack / "intel" / "feed.json").write_text('{"type": "report"}')
    with pytest.raises(RuleError) as err:
        load_rules([pack])
    assert "feed.json" in str(err.value) and "neither a STIX 2 bundle" in str(err.value)
    (pack / "intel" / "feed.json").write_text(json.dumps(STIX))
    (pack / "ti.rules").write_text(RULES.replace("feed.json#domain", "feed.json#fqdn"))
    with pytest.raises(RuleError) as err:
        load_rules([pack])
    assert "unknown indicator kind 'fqdn'" in str(err.value)


def test_cidr_lookup_with_many_networks_is_exact() -> None:
    nets = tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(0, 60_000, 2)) + ("2001:db8::/32", "10.200.0.0/16")
    pred = _cidr_pred(nets)
    assert pred("10.0.0.7") and not pred("10.0.1.7") and pred("10.0.2.255") and pred("10.200.5.5")
    assert pred("::ffff:10.0.4.1") and pred("2001:db8:1::1") and not pred("2001:db9::1")
    assert not pred("not an ip") and not pred("11.0.0.1")
