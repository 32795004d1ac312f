"""pySigma plugin: the siem processing pipelines (``sigma convert -t siem -p siem``); see siem.sigma.pipelines."""

from siem.sigma.pipelines import PIPELINES

pipelines = dict(PIPELINES)
__all__: list[str] = []
