"""Sigma rules in siem: a pySigma backend emitting the rule DSL (backend.py), processing pipelines
from Sigma logsources and fields to our schema (pipelines.py), conversion of rule files with
generated tests (convert.py, rulefile.py, events.py) and the `siem sigma` command (commands.py)."""
