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

from collections.abc import Sequence

from gw502d.classify.block import Block
from gw502d.classify.events import Event, EventReader
from gw502d.classify.keys import Key, nest
from gw502d.classify.matcher import Slot
from gw502d.remediate.correlate import (
    DEFAULT_WINDOW,
    ROOT_CAUSE_PAIRS,
    WATCHED,
    Correlator,
    kills_first,
)


class _Readers:
    """An :class:`EventReader` per slot, built on first use and kept with its stage."""

    def __init__(self, keys: Sequence[Key]) -> None:
        self._keys = keys
        # by id(): hashing a slot would hash its compiled patterns; the slot is kept, so
        # its id is not reused while the entry lives
        self._readers: dict[int, tuple[Slot, EventReader]] = {}

    def events(self, block: Block, *, dated: bool) -> list[Event]:
        out: list[Event] = []
        index: dict[int, int] | None = None  # line (by id) -> its index, for block.times
        for k, slot, hits in block.runs:
            key = self._keys[k]
            if key not in WATCHED:
                continue
            entry = self._readers.get(id(slot))
            if entry is None:
                entry = self._readers[id(slot)] = (slot, EventReader(slot, key))
            at = None
            if block.times is not None:
                if index is None:  # built in C, and only for a block with events
                    index = dict(zip(map(id, block.lines), range(len(block.lines)), strict=True))
                at = [_bucket(block.times[index[id(m.string)]]) for m in hits]
            out += entry[1].events(hits, None if dated else block.time, dated=dated, at=at)
        return out


def _bucket(t: float | None) -> float | None:
    """A source's time to 10 ms: the same event's lines within it are one
    :class:`Event` with a count (a file block's lines share one arrival time too)."""
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

    def by_incident(self) -> dict[str, dict[str, int]]:
        """Counts as ``{incident: {cause: n}}``."""
        return nest(self.counts)


class Timeline:
    """A scan's events, kept until every file is read, then replayed in time order.

    Merge-sorting the events, not the files: an nginx error log and a uWSGI log cover the
    same hours, so whole files in any order would never put an event next to its cause.
    Memory: one small tuple per distinct event, at most *limit* (``dropped`` counts the
    lines of more).
    """

    def __init__(self, keys: Sequence[Key], limit: int = 500_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._readers = _Readers(keys)
        self._dated: list[tuple[float, bool, int, Event]] = []
        self._undated: list[Event] = []

    def add(self, block: Block) -> None:
        """The scan's root-cause stage: keep the block's events with their own times."""
        for event in self._readers.events(block, dated=True):
            if len(self._dated) + len(self._undated) >= self.limit:
                self.dropped += event.n
            elif event.time is None:
                self._undated.append(event)
            else:
                self._dated.append((event.time, kills_first(event), len(self._dated), event))

    def correlate(self, window: float = DEFAULT_WINDOW) -> Correlator:
        """Replay dated events by time, then undated ones in file order (order matching)."""
        correlator = Correlator(window, keep_unexplained=self.limit)
        self._dated.sort(key=lambda e: e[:3])
        for *_, event in self._dated:
            correlator.observe(event)
        for event in self._undated:
            correlator.observe(event)
        return correlator
