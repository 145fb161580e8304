"""Recent incidents for ``/incidents``: raw lines kept cheaply, facts built when asked.

A hit costs one tuple append (slot, line, time, log) to a bounded deque; the facts, the
remediation and the redaction are worked out only when someone reads ``/incidents``, at
most ``incidents_buffer`` lines per request.

Redaction hides what identifies a client (its address) and what may carry secrets (query
strings, cookies) in the facts and in the line. Where it is off, ``/incidents`` shows the
log as nginx wrote it: keep such an endpoint away from anyone who may not read the logs.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gw502d.classify.block import Block
from gw502d.classify.matcher import Slot
from gw502d.parse.record import decode
from gw502d.remediate.advice import remediation_for

REDACTED = "<redacted>"
# Stored lines are cut here: nginx cuts its own at 2048 bytes, and the buffer must stay
# small whatever max_line_bytes allows.
LINE_CAP = 8192
_CLIENT_FACTS = frozenset({"client"})
_QUERY = re.compile(r"\?[^\s\"',)]+")
_COOKIE = re.compile(r"(?i)(cookie[\"']?\s*[:=]\s*)[^\s,]+")

Seen = tuple[Slot, bytes, float, str]  # (slot, line, wall-clock time read, log name)


def redact_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Facts without client addresses and query strings."""
    out: dict[str, Any] = {}
    for name, value in facts.items():
        if name in _CLIENT_FACTS:
            out[name] = REDACTED
        elif isinstance(value, str):
            out[name] = _QUERY.sub("?" + REDACTED, value)
        else:
            out[name] = value
    return out


def redact_line(slot: Slot, line: bytes) -> str:
    """The line without the client's address, query strings and cookie values.

    The address is cut where the line's own structure has it (nginx's ``client:``, the end
    of a uWSGI request error), not wherever the same text appears: the upstream is often
    the same 127.0.0.1.
    """
    m = slot.full.match(line)
    spans = []
    if m is not None:
        for captures, first in slot.full_captures:
            spans += [m.span(first + n) for n, (name, _) in enumerate(captures)
                      if name in _CLIENT_FACTS and m.start(first + n) >= 0]
    for start, end in sorted(spans, reverse=True):
        line = line[:start] + REDACTED.encode() + line[end:]
    text = _QUERY.sub("?" + REDACTED, decode(line))
    return _COOKIE.sub(r"\1" + REDACTED, text)


class RecentIncidents:
    """The last *size* incident lines, newest last; appended in the follower's thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: deque[Seen] = deque(maxlen=size)
        self.add = self._seen.append  # the hot path: a bound C method, nothing else

    def resize(self, size: int) -> None:
        """Keep the newest *size* lines (a reload may change incidents_buffer)."""
        self.size = size
        self._seen = deque(self._seen, maxlen=size)
        self.add = self._seen.append

    def keep(self, block: Block) -> None:
        """The recent-incidents stage: the block's newest incident lines (no companions)."""
        slots = block.slots
        for m in block.hits[-self.size:]:
            slot = slots[m.lastindex]  # type: ignore[index]
            if not slot.incident.companion:
                self.add((slot, m.string[:LINE_CAP], block.time, block.log))

    def copy(self) -> list[Seen]:
        """The buffer as it is now (deque.copy runs in C: no mutation can interleave)."""
        return list(self._seen.copy())


def describe(seen: Seen, *, redact: bool) -> dict[str, Any] | None:
    """The ``/incidents`` entry of one line, or None if it no longer classifies."""
    slot, line, when, log = seen
    hit = slot.resolve(line)
    if hit is None:
        return None
    facts = hit.facts
    text = decode(line)
    if redact:
        text = redact_line(slot, line)
        facts = redact_facts(facts)
    incident = hit.incident
    return {
        "time": datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds"),
        "log": log,
        "source": incident.source,
        "incident": incident.id,
        "severity": incident.severity,
        "status": incident.status,
        "facts": facts,
        "remediation": remediation_for(incident, facts),
        "line": text,
    }
