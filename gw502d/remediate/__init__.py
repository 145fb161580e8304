"""Remediate: turn what was seen into the change to make on this host.

``advise`` computes the change for one incident (text and machine-readable form) from the
facts seen, this host's facts and what other logs said; ``Correlator`` joins nginx's view
with the application server's into root causes.
"""

from gw502d.remediate.advice import Advice, Context, advise, advise_tally, remediation_for
from gw502d.remediate.correlate import (
    CAUSES,
    DEFAULT_WINDOW,
    Correlator,
    Event,
    LineCorrelator,
    RootCause,
    Timeline,
)
from gw502d.remediate.host import HostFacts, host_facts

__all__ = [
    "CAUSES", "DEFAULT_WINDOW", "Advice", "Context", "Correlator", "Event", "HostFacts",
    "LineCorrelator", "RootCause", "Timeline", "advise", "advise_tally", "host_facts",
    "remediation_for",
]
