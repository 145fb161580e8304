"""Incidents per minute over the last hour, for the on-call page: its charts and its order.

A pipeline stage (``Block -> None``) after the classify stage: each counted run of a block
adds its length to the current minute's bucket of its (incident, source). The buckets are
keyed by the pair, not by a catalog's index, so one :class:`Rates` carries on through
reloads (as the recent incidents do). Memory is bounded: :data:`MINUTES` ints per catalog
pair seen within the hour; a pair quiet for a whole hour is dropped, so a reload that
removes incidents does not keep them. A minute is the block's arrival time (wall clock)
divided by 60; a clock set back counts into the newest minute.

It also keeps what the page says about this run: when each pair was first seen and how
often since the daemon started, and when each log last gave a line.
"""

from __future__ import annotations

from gw502d.classify.block import Block
from gw502d.classify.keys import Key

MINUTES = 60
RECENT_MINUTES = 5  # "now": the page's order and its rate column


class Rates:
    """Per-minute counts of each pair over the last :data:`MINUTES` minutes.

    >>> from gw502d.classify.catalog import load_catalog
    >>> from gw502d.classify.tally import Tallies
    >>> tallies, rates = Tallies(load_catalog()), Rates()
    >>> block = Block("app", None, [b"invalid request block size: 4363 (max 4096)...skip"], 600.0)
    >>> tallies.count(block); rates.add(block)
    >>> rates.series(("request_block_too_big", "uwsgi"), now=630.0)[-1]
    1
    """

    def __init__(self, minutes: int = MINUTES) -> None:
        self.minutes = minutes
        self._minute = 0  # the minute (since the epoch) of the newest bucket
        self._rings: dict[Key, list[int]] = {}  # bucket of minute m at m % minutes
        self.first_seen: dict[Key, float] = {}
        self.since_start: dict[Key, int] = {}
        self.last_line: dict[str, float] = {}  # per log name

    def add(self, block: Block) -> None:
        """The rates stage: count the block's runs in the minute it arrived."""
        self.last_line[block.log] = block.time
        if not block.runs:
            return
        minute = int(block.time // 60)
        if minute > self._minute:
            self._advance(minute)
        at = self._minute % self.minutes
        for run in block.runs:
            key = run.slot.incident.key
            n = len(run.hits)
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = [0] * self.minutes
                self.first_seen.setdefault(key, block.time)
            ring[at] += n
            self.since_start[key] = self.since_start.get(key, 0) + n

    def _advance(self, minute: int) -> None:
        """Make *minute* the newest: empty the buckets of the minutes in between."""
        passed = range(self._minute + 1, minute + 1)[-self.minutes:]
        for key, ring in list(self._rings.items()):
            for m in passed:
                ring[m % self.minutes] = 0
            if not any(ring):
                del self._rings[key]
        self._minute = minute

    def series(self, key: Key, now: float) -> list[int]:
        """The counts of *key* in the :attr:`minutes` minutes up to *now*'s, oldest first
        (the last one is still filling up)."""
        ring = self._rings.get(key)
        if ring is None:
            return [0] * self.minutes
        newest = int(now // 60)
        return [ring[m % self.minutes] if self._minute - self.minutes < m <= self._minute else 0
                for m in range(newest - self.minutes + 1, newest + 1)]
