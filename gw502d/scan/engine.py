"""``gw502d scan``: the daemon's engine over whole files (plain, gzip, stdin) and journals.

Each block of lines goes through the scan's stages, in this order::

    tallies.count     classify: match each line once, count, keep evidence
    timeline.add      keep the root-cause events with their lines' own times
    occurrences.emit  one jsonl record per incident line (--format jsonl only)

Root causes are paired once every input is read (:class:`~gw502d.remediate.root_causes.
Timeline`): an nginx error log and a uWSGI log cover the same hours. A journal's lines
carry their records' times, a syslog file's (told by its first lines) its prefixes' times:
those win over the times the lines write themselves, and are there where a line has none.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gw502d.classify.block import Block, Stage
from gw502d.classify.catalog import Catalog
from gw502d.classify.events import EVENT_FACTS
from gw502d.classify.matcher import Hit
from gw502d.classify.tally import Tallies
from gw502d.parse.syslog import PrefixTimes, strip_block
from gw502d.parse.times import line_time
from gw502d.parse.traceback import record_start
from gw502d.remediate.advice import remediation_for
from gw502d.remediate.correlate import DEFAULT_WINDOW, SYMPTOMS, Pairing
from gw502d.remediate.root_causes import Timeline, source_time
from gw502d.source.inputs import InputError, blocks, expand
from gw502d.source.lines import MAX_LINE

# A file is read as syslog when this share of its first lines have a syslog prefix
_SYSLOG_SHARE = 0.8
_SYSLOG_SAMPLE = 20


@dataclass(slots=True)
class Occurrence:
    """One incident line found by a scan (the jsonl record), with its root cause once
    pairing has found one."""

    path: str
    line: int
    hit: Hit
    root_cause: str | None = None
    source_time: float | None = None  # the time its source gave the line (a journal's)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "line": self.line, "source": self.hit.incident.source,
            "incident": self.hit.incident.id, "fields": self.hit.facts,
            "root_cause": self.root_cause,
            "remediation": remediation_for(self.hit.incident, self.hit.facts),
        }


class Occurrences:
    """The jsonl stage: each incident line with the 1-based number of its record's first
    line (a traceback's ``Traceback (most recent call last):``).

    An nginx line a backend event may explain is held until every input is read and
    paired (:meth:`finish`), up to :data:`HELD` of them; the others go out at once.
    """

    HELD = 200_000

    def __init__(self, emit: Callable[[Occurrence], None]) -> None:
        self._emit = emit
        self._seen: dict[str, int] = {}  # lines read per path before this block
        self._held: list[Occurrence] = []

    def _out(self, occurrence: Occurrence) -> None:
        key = occurrence.hit.incident.key
        if key in SYMPTOMS and len(self._held) < self.HELD:
            self._held.append(occurrence)
        else:
            self._emit(occurrence)

    def finish(self, pairing: Pairing) -> None:
        """Name each held line's root cause (the pairs say how many lines of an incident,
        time and upstream) and emit them in the order they were read."""
        causes: dict[tuple[str, float | None, str | None], deque[str]] = {}
        for found in pairing.found:
            causes.setdefault((found.incident, found.time, found.upstream), deque()).extend(
                [found.cause] * found.n)
        for occurrence in self._held:
            facts = occurrence.hit.facts
            time = occurrence.source_time
            if time is None:
                time = line_time(occurrence.hit.incident.source, str(facts.get("time", "")))
            waiting = causes.get((occurrence.hit.incident.id, time, facts.get("upstream")))
            if waiting:
                occurrence.root_cause = waiting.popleft()
            self._emit(occurrence)
        self._held = []

    def emit(self, block: Block) -> None:
        base = self._seen.get(block.log, 0)
        hits = iter(block.hits)
        m = next(hits, None)
        for i, line in enumerate(block.lines):
            if m is None:
                break
            if m.string is line:  # the matcher was given this very object
                slot = block.slots[m.lastindex]  # type: ignore[index]
                if not slot.incident.companion and id(m) not in block.ended:
                    first = record_start(block.lines, i, slot.incident.source)
                    at = source_time(block.times[i]) if block.times is not None else None
                    self._out(Occurrence(block.log, base + first + 1, slot.resolve(line),
                                         source_time=at))
                m = next(hits, None)
        self._seen[block.log] = base + len(block.lines)


@dataclass(slots=True)
class ScanResult:
    """Totals of a scan; the tallies hold the per-incident numbers (one, for every
    family), the correlator the root causes found across all inputs (``uncorrelated``:
    events beyond the timeline's cap)."""

    tallies: Tallies
    correlator: Pairing = field(default_factory=Pairing)
    uncorrelated: int = 0
    lines: int = 0
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def scan(catalog: Catalog, paths: list[str], *, max_line: int = MAX_LINE,
         on_occurrence: Callable[[Occurrence], None] | None = None,
         progress: Callable[[int], None] | None = None,
         window: float = DEFAULT_WINDOW, journals: list[str] | None = None) -> ScanResult:
    """Classify every line of *paths* and *journals* (directories or files) in order, then
    join the events of all of them by time into root causes. Unreadable inputs are
    recorded, not fatal."""
    tallies = Tallies(catalog, capture=EVENT_FACTS)
    timeline = Timeline(catalog.keys)
    route: list[Stage] = [tallies.count, timeline.add]
    occurrences = Occurrences(on_occurrence) if on_occurrence is not None else None
    if occurrences is not None:
        route.append(occurrences.emit)
    inputs, errors = expand(paths)
    result = ScanResult(tallies, errors=errors)
    sources = [(path, _file_blocks(path, max_line)) for path in inputs]
    sources += [(path, _journal_blocks(path, max_line)) for path in journals or ()]
    for path, found in sources:
        try:
            for block in found:
                for stage in route:
                    stage(block)
                result.lines += len(block.lines)
                if progress is not None:
                    progress(sum(map(len, block.lines)) + len(block.lines))
        except InputError as exc:
            result.errors.append(str(exc))
            continue
        result.files.append(path)
    result.correlator = timeline.correlate(window)
    result.uncorrelated = timeline.dropped
    if occurrences is not None:
        occurrences.finish(result.correlator)
    return result


def _file_blocks(path: str, max_line: int) -> Iterator[Block]:
    """A file's blocks; a syslog file's without their prefixes, dated by them."""
    syslog: bool | None = None
    for lines in blocks(path, max_line):
        if syslog is None:
            head = [line for line in lines[:_SYSLOG_SAMPLE] if line.strip()]
            tagged = sum(map(bool, strip_block(head).tags))
            syslog = bool(head) and tagged >= _SYSLOG_SHARE * len(head)
        if syslog:
            stripped = strip_block(lines)
            yield Block(path, None, stripped.lines, 0.0, PrefixTimes(stripped.times))
        else:
            yield Block(path, None, lines, 0.0)


def _journal_blocks(path: str, max_line: int) -> Iterator[Block]:
    """A journal's blocks, each line at its record's time (its reader imported here: a
    scan of files does not pay for it at start)."""
    from gw502d.source.journal import JournalError, JournalReader  # noqa: PLC0415

    try:
        for found in JournalReader(path, max_line=max_line):
            yield Block(path, None, found.lines, 0.0, found.times)
    except JournalError as exc:
        raise InputError(str(exc)) from exc
