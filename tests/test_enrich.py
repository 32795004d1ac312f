"""GeoIP enrichment: the data geoip2fast ships, and MaxMind databases (written here with mmdb-writer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from siem.config import daemon_from_toml
from siem.dsl.loader import load_texts
from siem.engine.runtime import Engine
from siem.enrich import GeoSpec, check, enrich
from siem.parse import ParseContext, parse, parse_batch

LINE = b"Dec 10 07:13:43 web01 sshd[24227]: Failed password for root from %s port 42393 ssh2"


@pytest.fixture(scope="module")
def mmdb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("mmdb")
    city = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"])
    city.insert_network(IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "NZ", "names": {"en": "New Zealand"}}})
    city.insert_network(IPSet(["2a02:cf40:77::/48"]), {"country": {"iso_code": "IS", "names": {"en": "Iceland"}}})
    city.to_db_file(str(d / "city.mmdb"))
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    asn.insert_network(IPSet(["81.2.69.0/25"]), {"autonomous_system_number": 64500,
                                                   "autonomous_system_organization": "Example Transit"})
    asn.to_db_file(str(d / "asn.mmdb"))
    return d / "city.mmdb", d / "asn.mmdb"


def test_maxmind_country_and_asn(mmdb: tuple[Path, Path]) -> None:
    spec = GeoSpec(str(mmdb[0]), str(mmdb[1]))
    assert check(spec) is None
    ev = parse("syslog", LINE % b"81.2.69.7", ParseContext(geo=spec), "t")
    assert (ev["source.geo.country_iso_code"], ev["source.geo.country_name"]) == ("NZ", "New Zealand")
    assert (ev["source.as.number"], ev["source.as.organization.name"]) == (64500, "Example Transit")
    outside_asn = parse("syslog", LINE % b"81.2.69.200", ParseContext(geo=spec), "t")
    assert outside_asn["source.geo.country_iso_code"] == "NZ" and "source.as.number" not in outside_asn
    v6 = {"destination.ip": "2a02:cf40:77::5"}
    enrich(v6, spec)
    assert v6["destination.geo.country_iso_code"] == "IS"


def test_builtin_data_and_private_addresses() -> None:
    spec = GeoSpec()
    events = parse_batch("syslog", [LINE % b"8.8.8.8", LINE % b"10.1.2.3", LINE % b"192.0.2.1"],
                         ParseContext(geo=spec), "t")
    google, private, testnet = events
    assert google["source.geo.country_iso_code"] == "US" and "GOOGLE" in google["source.as.organization.name"]
    assert not [k for k in {**private, **testnet} if ".geo." in k or ".as." in k]


def test_without_geo_nothing_is_added() -> None:
    ev = parse("syslog", LINE % b"8.8.8.8", ParseContext(), "t")
    assert not [k for k in ev if ".geo." in k]


def test_a_rule_on_the_country_of_the_source(mmdb: tuple[Path, Path]) -> None:
    rules = load_texts({"t.rules": """
rule login_from_nz {
  severity medium
  when event.action == "ssh_login" and source.geo.country_iso_code == "NZ"
  message "{user.name} from {source.geo.country_name} ({source.as.organization.name})"
}"""})
    spec = GeoSpec(str(mmdb[0]), str(mmdb[1]))
    events = parse_batch("syslog", [LINE % b"81.2.69.7", LINE % b"8.8.4.4"], ParseContext(geo=spec), "t")
    eng = Engine(rules, lateness_ms=0, future_skew_ms=None)
    assert [a.message for a in eng.process(events) + eng.flush()] == ["root from New Zealand (Example Transit)"]


def test_config_names_a_missing_database(tmp_path: Path) -> None:
    cfg, issues = daemon_from_toml({"geoip": "GeoLite2-City.mmdb"}, "daemon", tmp_path)
    assert cfg is None and "daemon.geoip" in str(issues[0]) and "no such file" in str(issues[0])
    cfg, issues = daemon_from_toml({"geoip": "builtin", "geoip_asn": "asn.mmdb"}, "daemon", tmp_path)
    assert cfg is None
    cfg, issues = daemon_from_toml({"geoip": "builtin"}, "daemon", tmp_path)
    assert issues == [] and cfg is not None and cfg.geo_spec == GeoSpec("builtin", "")
    assert daemon_from_toml({}, "daemon", tmp_path)[0].geo_spec is None  # type: ignore[union-attr]
    assert check(GeoSpec(str(tmp_path / "nope.mmdb"))) is not None
