"""The TOML checker of the log and Kafka tables: the one in siem.tomlcheck (kept as an import path)."""

from siem.tomlcheck import TableReader

__all__ = ["TableReader"]
