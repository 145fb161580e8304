"""One log event per incident, rate-limited so that a storm costs no more than counting it.

Each (incident, source) logs at most once per interval; the events left out in between
are counted and reported as ``suppressed`` on the next event of the pair. The facts are
worked out only for the events that are logged.
"""

from __future__ import annotations

import structlog

from gw502d.classify.block import Block
from gw502d.classify.keys import Key
from gw502d.classify.matcher import Slot
from gw502d.export.incidents import LINE_CAP
from gw502d.export.redact import redact_facts
from gw502d.remediate.advice import remediation_for

log = structlog.get_logger("gw502d.incident")


class IncidentEvents:
    """Logs incidents seen by the follower (its thread only: no lock)."""

    def __init__(self, *, redact: bool, interval: float = 1.0) -> None:
        self.redact = redact
        self._interval = interval
        self._next: dict[Key, float] = {}
        self._suppressed: dict[Key, int] = {}

    def log(self, block: Block) -> None:
        """The log-events stage: one event per incident of *block*, unless rate-limited."""
        for run in block.runs:
            self.hit(run.slot.incident.key, run.slot, run.hits[-1].string[:LINE_CAP],
                     block.log, block.time, count=len(run.hits))

    def hit(self, key: Key, slot: Slot, line: bytes, log_name: str, now: float, *,
            count: int = 1) -> None:
        """Log the last of *count* hits of a pair (read in one block) unless the pair
        logged less than an interval ago; the others are counted as suppressed."""
        suppressed = self._suppressed.get(key, 0) + count - 1
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = suppressed + 1
            return
        self._suppressed[key] = suppressed
        self._next[key] = now + self._interval
        hit = slot.resolve(line)
        facts = hit.facts if hit is not None else {}
        if self.redact:
            facts = redact_facts(facts)
        incident, source = key
        log.info("incident", incident=incident, source=source, log=log_name, facts=facts,
                 remediation=remediation_for(hit.incident, facts) if hit is not None else None,
                 suppressed=self._suppressed.pop(key, 0))
