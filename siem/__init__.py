"""siem: a log-correlation daemon with a compiled, vectorised rule DSL."""

__version__ = "0.1.0"
