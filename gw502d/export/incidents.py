"""Recent incidents for ``/incidents``: raw lines kept cheaply, facts built when asked.

A hit costs one tuple append (slot, line, time, log) to a bounded deque; the facts, the
remediation and the redaction are worked out only when someone reads ``/incidents``, and
only for the page asked for (``?limit=``, newest first, ``?before=`` an id for the next
page, ``?incident=``/``?source=`` to filter).

Each entry gets an id when it is first read: ids grow with the order lines were seen and
stay the same for a line as long as it is in the buffer, so ``?before=`` pages through it
even while new incidents arrive. Numbering happens at read time, so appending stays a
bound C method.

Redaction (:mod:`gw502d.export.redact`) hides client addresses, query strings and cookies
in the facts and in the line. Where it is off, ``/incidents`` shows the log as nginx wrote
it: keep such an endpoint away from anyone who may not read the logs.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from gw502d.classify.block import Block, Paired
from gw502d.classify.matcher import Slot
from gw502d.export.redact import redact_facts, redact_line
from gw502d.parse.record import decode
from gw502d.remediate.advice import remediation_for

# Stored lines are cut here: nginx cuts its own at 2048 bytes, and the buffer must stay
# small whatever max_line_bytes allows.
LINE_CAP = 8192
_NEAR = 60.0  # a cause named on lines read this close to the symptom's time
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_QUERY_KEYS = frozenset({"limit", "before", "incident", "source", "format"})
FORMATS = ("json", "html")

@dataclass(slots=True, eq=False)
class Seen:
    """One recent incident line: its slot, the line, when it was read (wall clock), its
    log's name, and the root cause paired with it, once one is."""

    slot: Slot
    line: bytes
    time: float
    log: str
    cause: str | None = None


@dataclass(slots=True)
class _Wanted:
    """A pair's lines still to name: how many, the cause, the symptom's time."""

    n: int
    cause: str
    time: float | None


Entry = tuple[int, dict[str, Any]]  # (id, the /incidents entry)


@dataclass(frozen=True, slots=True)
class IncidentQuery:
    """Which recent incidents to show: newest first, at most *limit*, ids below *before*."""

    limit: int = DEFAULT_LIMIT
    before: int | None = None
    incident: str | None = None
    source: str | None = None
    format: str | None = None  # None: as the Accept header says

    def matches(self, slot: Slot) -> bool:
        """Whether lines of *slot* pass the incident and source filters."""
        incident = slot.incident
        return ((self.incident is None or incident.id == self.incident)
                and (self.source is None or incident.source == self.source))


def parse_query(query: str) -> IncidentQuery:
    """The ``/incidents`` query string; ValueError says what is wrong with it."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=len(_QUERY_KEYS))
    except ValueError as exc:
        raise ValueError(f"malformed query string ({exc})") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key not in _QUERY_KEYS:
            raise ValueError(f"unknown parameter (known: {', '.join(sorted(_QUERY_KEYS))})")
        if key in values:
            raise ValueError(f"{key} given twice")
        values[key] = value
    limit = _number(values, "limit", 1, MAX_LIMIT)
    before = _number(values, "before", 1, 1 << 62)
    for key in ("incident", "source"):
        if key in values and not _NAME.fullmatch(values[key]):
            raise ValueError(f"{key} must be an incident or source name")
    fmt = values.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    return IncidentQuery(DEFAULT_LIMIT if limit is None else limit, before,
                         values.get("incident"), values.get("source"), fmt)


def _number(values: dict[str, str], key: str, low: int, high: int) -> int | None:
    text = values.get(key)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{key} must be a whole number from {low} to {high}")
    return int(text)


class RecentIncidents:
    """The last *size* incident lines, newest last; appended in the follower's thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: deque[Seen] = deque(maxlen=size)
        self.add = self._seen.append  # the hot path: a bound C method, nothing else
        self._lock = threading.Lock()
        # The newest entry numbered so far and its id: the anchor of the next numbering.
        self._anchor: Seen | None = None
        self._anchor_id = 0

    def resize(self, size: int) -> None:
        """Keep the newest *size* lines (a reload may change incidents_buffer)."""
        self.size = size
        self._seen = deque(self._seen, maxlen=size)
        self.add = self._seen.append

    def keep(self, block: Block) -> None:
        """The recent-incidents stage: the block's newest incident lines (no companions),
        and the root causes paired with this block's lines or earlier ones."""
        slots = block.slots
        for m in block.hits[-self.size:]:
            slot = slots[m.lastindex]  # type: ignore[index]
            if not slot.incident.companion and id(m) not in block.ended:
                self.add(Seen(slot, m.string[:LINE_CAP], block.time, block.log))
        if block.paired:
            self._attach(block.paired)

    def _attach(self, pairs: list[Paired]) -> None:
        """Name each pair's cause on the newest lines of its incident still without one,
        read around the symptom's time (the pairing counts lines, not which ones). One walk
        for the block's pairs, newest line first, each line to the first pair that still
        wants it: what the pairs, one walk each, would choose in turn (a storm's block
        brings dozens of pairs)."""
        wanted: dict[str, list[_Wanted]] = {}
        for paired in pairs:
            wanted.setdefault(paired.incident, []).append(
                _Wanted(paired.n, paired.cause, paired.time))
        left = sum(paired.n for paired in pairs)
        for seen in reversed(self._seen):
            if not left:
                return
            takers = wanted.get(seen.slot.incident.id) if seen.cause is None else None
            for taker in takers or ():
                if taker.n and (taker.time is None or abs(seen.time - taker.time) <= _NEAR):
                    seen.cause = taker.cause
                    taker.n -= 1
                    left -= 1
                    break

    def copy(self) -> list[Seen]:
        """The buffer as it is now (deque.copy runs in C: no mutation can interleave)."""
        return list(self._seen.copy())

    def numbered(self) -> list[tuple[int, Seen]]:
        """The buffer, oldest first, each line with its id.

        Lines are only appended and dropped from the front, so one line with a known id
        (the anchor) numbers all the others. When the anchor has been dropped, every line
        now held is newer than it and numbering goes on after it.
        """
        with self._lock:  # a copy older than the anchor would number backwards
            seen = self.copy()
            first = self._anchor_id + 1
            for index in range(len(seen) - 1, -1, -1):
                if seen[index] is self._anchor:
                    first = self._anchor_id - index
                    break
            if seen:
                self._anchor, self._anchor_id = seen[-1], first + len(seen) - 1
        return [(first + n, s) for n, s in enumerate(seen)]

    def select(self, query: IncidentQuery, *, redact: bool) -> Iterator[Entry]:
        """The entries *query* asks for, newest first (lazily: a page stops early)."""
        for number, seen in reversed(self.numbered()):
            if (query.before is not None and number >= query.before) or not query.matches(
                    seen.slot):
                continue
            entry = describe(seen, redact=redact)
            if entry is not None:
                yield number, {"id": number, **entry}


def describe(seen: Seen, *, redact: bool) -> dict[str, Any] | None:
    """The ``/incidents`` entry of one line, or None if it no longer classifies."""
    slot, line, when, log = seen.slot, seen.line, seen.time, seen.log
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
        "root_cause": seen.cause,
        "remediation": remediation_for(incident, facts),
        "line": text,
    }
