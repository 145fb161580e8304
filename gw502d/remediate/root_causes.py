"""The stages that feed root-cause pairing from blocks: live for the daemon, a timeline for
``gw502d scan``.

Only the hits of the incidents the pairing cares about (:data:`WATCHED`) are read, slot by
slot, as :class:`~gw502d.classify.events.Event`\\ s. The daemon reads lines as they are
written, so a line's arrival is a clock every log shares, whatever its own time zone,
format or lack of a time; a scan has only the lines' own times, so it keeps the events of
all its inputs and replays them in time order once everything is read.

A block whose source dates each line (``Block.times``: a journal record's
``__REALTIME_TIMESTAMP``, on the same clock as arrival) gives its events those times in
both: records read late (a burst after journalctl restarted) pair with the nginx symptoms
of their own moment that still wait (the correlator keeps those within the window of the
newest event), never with the symptoms that happen to arrive with them. A file's backlog
read after a restart has no such times: it is stamped with its arrival.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from itertools import compress

from gw502d.classify.block import Block, Match, Paired
from gw502d.classify.events import Event, EventReader, Span
from gw502d.classify.keys import Key, nest
from gw502d.classify.matcher import Slot
from gw502d.parse import FORMATS
from gw502d.parse.times import is_anchor, written_at
from gw502d.remediate.correlate import (
    DEFAULT_WINDOW,
    ROOT_CAUSE_PAIRS,
    WATCHED,
    Correlator,
    Pairing,
    pair_offline,
)


class _Readers:
    """An :class:`EventReader` per slot, built on first use and kept with its stage."""

    def __init__(self, keys: Sequence[Key]) -> None:
        self._keys = keys
        # by id(): hashing a slot would hash its compiled patterns; the slot is kept, so
        # its id is not reused while the entry lives
        self._readers: dict[int, tuple[Slot, EventReader]] = {}

    def events(self, block: Block, *, dated: bool,
               span_of: Callable[[Match], Span | None] | None = None) -> list[Event]:
        out: list[Event] = []
        index: dict[int, int] | None = None  # line (by id) -> its index, for block.times
        for run in block.runs:
            key, slot, hits = self._keys[run.k], run.slot, run.hits
            if key not in WATCHED:
                continue
            entry = self._readers.get(id(slot))
            if entry is None:
                entry = self._readers[id(slot)] = (slot, EventReader(slot, key))
            at = None
            if block.times is not None:
                if index is None:  # built in C, and only for a block with events
                    index = dict(zip(map(id, block.lines), range(len(block.lines)), strict=True))
                at = [source_time(block.times[index[id(m.string)]]) for m in hits]
            fmt = FORMATS.get(slot.family.name)
            spans = span_of if fmt is not None and fmt.anchors else None
            out += entry[1].events(run, None if dated else block.time, dated=dated, at=at,
                                   span_of=spans)
        return out


def source_time(t: float | None) -> float | None:
    """A line's time from its source (``Block.times``) as its events carry it: to 10 ms,
    so the same event's lines within it are one :class:`Event` with a count (a file
    block's lines share one arrival time too)."""
    return None if t is None else round(t, 2)


class RootCauses:
    """The daemon's root-cause stage: adds to ``counts[(nginx incident, cause)]``
    (``gw502d_root_causes_total``), every pair present from the start. *counts* may be the
    dict of a previous stage or of a snapshot: it is added to in place; so is the previous
    stage's *correlator* (pending events, upstreams and backend counts) if its window is
    the same."""

    def __init__(self, keys: Sequence[Key], window: float = DEFAULT_WINDOW,
                 counts: dict[tuple[str, str], int] | None = None,
                 correlator: Correlator | None = None) -> None:
        # a reload keeps the correlator (what it paired feeds the advice) if it can
        reuse = correlator is not None and correlator.window == window
        self.correlator = correlator if correlator is not None and reuse else Correlator(window)
        self.counts = counts if counts is not None else {}
        for pair in ROOT_CAUSE_PAIRS:
            self.counts.setdefault(pair, 0)
        self._readers = _Readers(keys)

    def observe(self, block: Block) -> None:
        events = self._readers.events(block, dated=False)
        for found in self.correlator.observe_all(events):
            pair = (found.incident, found.cause)
            self.counts[pair] = self.counts.get(pair, 0) + found.n
            block.paired.append(Paired(found.incident, found.cause, found.time, found.n))

    def by_incident(self) -> dict[str, dict[str, int]]:
        """Counts as ``{incident: {cause: n}}``."""
        return nest(self.counts)


class Timeline:
    """A scan's events, kept until every file is read, then paired all at once.

    Pairing the events, not the files: an nginx error log and a uWSGI log cover the same
    hours, so whole files in any order would never put an event next to its cause. An
    undated line gets the span between the dated lines around it in its block (its own
    log's: uWSGI's request log lines tell when they were written). Memory: one small tuple
    per distinct event, at most *limit* (``dropped`` counts the lines of more).
    """

    def __init__(self, keys: Sequence[Key], limit: int = 500_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._readers = _Readers(keys)
        self._events: list[Event] = []

    def add(self, block: Block) -> None:
        """The scan's root-cause stage: keep the block's events with their own times."""
        for event in self._readers.events(block, dated=True, span_of=_Spans(block)):
            if len(self._events) >= self.limit:
                self.dropped += event.n
            else:
                self._events.append(event)

    def correlate(self, window: float = DEFAULT_WINDOW) -> Pairing:
        """Pair every event kept (:func:`~gw502d.remediate.correlate.pair_offline`)."""
        return pair_offline(self._events, window)


class _Spans:
    """The span of time an undated line of a block was written in: from the nearest line
    before it that says when it was written to the nearest one after (at a block's edge,
    the window beside the one there is). Only undated hits pay for it: a few lines
    around each, else one pass in C over the block and a bisection."""

    _REACH = 5000  # lines looked at on each side
    _CLOSE = 16  # lines looked at one by one before the block's anchors are listed

    def __init__(self, block: Block) -> None:
        self._lines = block.lines
        self._hits = block.hits
        self._slots = block.slots
        self._index: dict[int, int] | None = None
        self._anchors: dict[str, list[int]] = {}  # family -> lines that say when, in order
        self._written: dict[tuple[str, int], float | None] = {}  # (family, line) -> when

    def __call__(self, m: Match) -> Span | None:
        if self._index is None:
            self._index = self._positions()
        i = self._index.get(id(m))
        if i is None:
            return None
        family = self._slots[m.lastindex].family.name  # type: ignore[index]
        low, high = self._near(family, i, -1), self._near(family, i, 1)
        if low is None:
            return None if high is None else (high - DEFAULT_WINDOW, high)
        if high is None:  # at a block's edge: the window beside the one there is
            return (low, low + DEFAULT_WINDOW)
        return (min(low, high), max(low, high))  # anchors out of order: trust neither side

    def _positions(self) -> dict[int, int]:
        """Each hit's line number: hits come in line order, so one walk of the block in C
        finds them all (a map of every line cost more than the spans)."""
        found: dict[int, int] = {}
        at, lines = -1, self._lines
        for m in self._hits:
            at = lines.index(m.string, at + 1)
            found[id(m)] = at
        return found

    def _anchors_of(self, family: str) -> list[int]:
        found = self._anchors.get(family)
        if found is None:
            match = is_anchor(family)
            found = self._anchors[family] = [] if match is None else list(
                compress(range(len(self._lines)), map(match, self._lines)))
        return found

    def _near(self, family: str, i: int, step: int) -> float | None:
        """When the nearest line before (*step* -1) or after (1) line *i* that says so was
        written: the lines next to it first (usually a request line is a few lines away),
        then (and from then on) the block's lines that say when, found once: a block of
        undated hits only would cost its length per hit."""
        j = i + step
        for _ in range(self._CLOSE if family not in self._anchors else 0):
            if not 0 <= j < len(self._lines):
                return None
            t = self._when(family, j)
            if t is not None:
                return t
            j += step
        anchors = self._anchors_of(family)
        order = range(bisect.bisect_right(anchors, j) - 1, -1, -1) if step < 0 else range(
            bisect.bisect_left(anchors, j), len(anchors))
        for k in order:
            if abs(anchors[k] - i) > self._REACH:
                return None
            t = self._when(family, anchors[k])
            if t is not None:  # None: a time that does not parse, passed over
                return t
        return None

    def _when(self, family: str, j: int) -> float | None:
        t = self._written.get((family, j), False)
        if t is False:
            t = self._written[(family, j)] = written_at(family, self._lines[j])
        return t
