"""pySigma plugin: the siem rule DSL backend (``sigma convert -t siem``); the code is siem.sigma.backend."""

from siem.sigma.backend import SiemBackend

backends = {"siem": SiemBackend}
__all__ = ["SiemBackend"]
