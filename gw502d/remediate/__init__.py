"""Remediate: turn what was seen into the change to make on this host.

:mod:`advice` computes the change for one incident (text and machine-readable form) from
the facts seen, this host's facts and what other logs said; :mod:`correlate` holds the
rules that join nginx's view with the application server's into root causes, and
:mod:`root_causes` the stages that feed it from blocks of lines.
"""
