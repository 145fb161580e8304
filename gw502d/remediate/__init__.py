"""Remediate: turn what was seen into the change to make on this host."""

from gw502d.remediate.advice import remediation_for

__all__ = ["remediation_for"]
