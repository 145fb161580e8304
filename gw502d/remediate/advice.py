"""The remediation text for an incident, filled with the facts seen on this host.

The catalog's text is a template over the incident's ``evidence`` facts; the most common
value of each fact fills it. A fact never seen leaves a readable placeholder.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from gw502d.classify.catalog import Incident


class _Placeholders(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def remediation_for(incident: Incident, facts: Mapping[str, Any] | None = None) -> str:
    """The catalog remediation of *incident* with *facts* filled in."""
    values = _Placeholders(facts or {})
    return string.Formatter().vformat(incident.remediation, (), values)
