"""deploy/siem.toml: the example configuration validates with siem.config, as shipped and with every
optional block enabled, and it keeps secrets out of the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from siem.config import config_from_dict

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "siem.toml"
UNIT = ROOT / "deploy" / "siem.service"
CREDENTIALS = "/run/credentials/siem.service/"


def _errors(doc: dict, tmp_path: Path) -> list[str]:
    _, issues = config_from_dict(doc, str(EXAMPLE), tmp_path)
    return [i.render() for i in issues if i.severity == "error"]


def test_example_config_is_valid(tmp_path: Path) -> None:
    """The shipped example passes siem.config's validation without errors."""
    assert _errors(tomllib.loads(EXAMPLE.read_text()), tmp_path) == []


def test_example_with_every_optional_block_enabled_is_valid(tmp_path: Path) -> None:
    """Uncommenting every optional setting ("#key = ...", "#[table]") still gives a valid config.

    The files those settings name (TLS certificates, credentials) are created empty under tmp_path and
    the paths pointed there, since the validators check that they exist. An input type this build does
    not have yet is reported as "unavailable" and tolerated here; its keys are checked once it exists."""
    text = re.sub(r"(?m)^#(?=[\[a-z])", "", EXAMPLE.read_text())
    for prefix in (CREDENTIALS, "/etc/siem/tls/"):
        local = tmp_path / prefix.strip("/").replace("/", "_")
        local.mkdir()
        for name in re.findall(re.escape(prefix) + r"([\w.-]+)", text):
            (local / name).write_text("placeholder\n")
        text = text.replace(prefix, f"{local}/")
    errors = [e for e in _errors(tomllib.loads(text), tmp_path) if "error[unavailable]" not in e]
    assert errors == []


def test_no_inline_secrets() -> None:
    """No URL in the example carries a password or token: they come from credential files."""
    values = [line.split("=", 1)[1] for line in EXAMPLE.read_text().splitlines()
              if not line.lstrip().startswith("#") and "=" in line]
    assert [v for v in values if re.search(r"://[^\s/\"]*:[^\s/\"]*@|token=|password", v, re.I)] == []


def test_credentials_the_config_reads_are_named_in_the_unit() -> None:
    """Every /run/credentials/siem.service/<name> in the example has a LoadCredential=<name>: line."""
    wanted = set(re.findall(re.escape(CREDENTIALS) + r"([\w.-]+)", EXAMPLE.read_text()))
    loaded = set(re.findall(r"(?m)^#?LoadCredential=([\w.-]+):", UNIT.read_text()))
    assert wanted - loaded == set()
