"""Tally: what the classifier found, kept as plain ints and bounded evidence.

The per-line path is ``filter(None, map(match, lines))`` in C. The hits of a block are
then sorted by slot (``m.lastindex``) and each slot's run goes to a handler built once per
slot, runs in the order of their last hits (so the last line kept is the block's last):
it adds the run's length to a list element and, when the remediation needs facts, counts
the raw bytes of those few groups with a ``Counter`` (also in C). Python work is per slot
and block, not per line. Exporters and reports read these numbers when asked (a scrape,
the end of a scan); nothing here locks or logs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter
from typing import Any

from gw502d.classify.catalog import Incident
from gw502d.classify.matcher import Classifier, Hit, RawKey, Slot

# Distinct evidence values kept per incident; beyond it they are merged, so a flood of
# lines with attacker-chosen values cannot grow memory.
EVIDENCE_CAP = 256
OTHER: RawKey = (b"\x00other",)

Key = tuple[str, str]
Matches = list[re.Match[bytes]]
# (incident index, slot, that slot's hits of that incident in line order), per block
Runs = list[tuple[int, Slot, Matches]]
OnWatched = Callable[[Runs], None]
OnBlock = Callable[["Tally", Matches], None]
_SLOT = attrgetter("lastindex")


@dataclass(slots=True)
class Evidence:
    """The facts seen for one (incident, source): distinct values and how often."""

    slot: Slot
    counts: dict[RawKey, int]

    def facts(self) -> list[tuple[dict[str, Any], int]]:
        """Each distinct fact set (with predicate facts) and its count, most seen first."""
        out = []
        for raw, n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            if raw == OTHER:
                continue
            out.append((self.slot.hot_facts(raw), n))
        return out


def _watched(slot: Slot, watch: Container[Key] | None) -> bool:
    return watch is None or slot.incident.key in watch


class Tally:
    """Counts per (incident, source) for one classifier; companion lines apart.

    >>> from gw502d.classify.catalog import load_catalog
    >>> t = Tally(Classifier(load_catalog()))
    >>> t.feed([b"invalid request block size: 4363 (max 4096)...skip", b"noise"])
    1
    >>> t.count("request_block_too_big", "uwsgi")
    1
    """

    def __init__(self, classifier: Classifier, on_watched: OnWatched | None = None, *,
                 watch: Container[Key] | None = None,
                 on_block: OnBlock | None = None) -> None:
        self.classifier = classifier
        self.keys: list[Key] = list(classifier.catalog.keys)
        self.companion_keys: list[Key] = list(dict.fromkeys(
            i.key for i in classifier.catalog.incidents if i.companion))
        n = len(self.keys)
        self.counts = [0] * n
        self.companions = [0] * len(self.companion_keys)
        self.first_line: list[bytes | None] = [None] * n
        self.last_line: list[bytes | None] = [None] * n
        self.evidence: list[dict[RawKey, int]] = [{} for _ in range(n)]
        self.evidence_slot: list[Slot | None] = [None] * n
        self._index = {k: i for i, k in enumerate(self.keys)}
        self._runs: Runs = []
        self._block: Matches = []  # the hits of the batch being counted, in line order
        self._new: dict[int, int] = {}  # incidents first seen in it: their first hit's index
        self._handlers: dict[int, Callable[[Matches], None]] = {
            group: self._handler(slot, on_watched is not None and _watched(slot, watch))
            for group, slot in classifier.slots.items()
        }
        self._on_watched = on_watched
        self._on_block = on_block

    def _handler(self, slot: Slot, watched: bool) -> Callable[[Matches], None]:
        """Specialise the work on one slot's hits (decided once, not per block)."""
        incident = slot.incident
        if incident.companion:
            j = self.companion_keys.index(incident.key)
            companions = self.companions

            def companion(ms: Matches) -> None:
                companions[j] += len(ms)

            return companion
        read = slot.raw_key() if slot.hot else None
        k = self._index[incident.key]

        def hits(ms: Matches) -> None:
            self._count(k, slot, ms)
            if read is not None:
                self._note(k, Counter(map(read, ms)))
            if watched:
                self._runs.append((k, slot, ms))

        return hits

    def _count(self, k: int, slot: Slot, ms: Matches) -> None:
        before = self.counts[k]
        self.counts[k] = before + len(ms)
        self.last_line[k] = ms[-1].string  # runs come in the order of their last hits
        if not before or k in self._new:  # first seen in this block: the earliest run wins
            at = self._block.index(ms[0])
            if at < self._new.get(k, at + 1):
                self._new[k] = at
                self.first_line[k] = ms[0].string
                self.evidence_slot[k] = slot

    def _note(self, k: int, found: Counter[RawKey]) -> None:
        seen = self.evidence[k]
        for raw, n in found.items():
            if raw in seen:
                seen[raw] += n
            elif len(seen) < EVIDENCE_CAP:
                seen[raw] = n
            else:
                seen[OTHER] = seen.get(OTHER, 0) + n

    def feed(self, lines: list[bytes]) -> int:
        """Classify and count a batch of complete lines; return the number of hits.

        Per batch with hits: ``on_watched`` with the runs of the watched incidents, then
        ``on_block`` with the tally and all the hits in line order (companion lines
        included), for work done per block.
        """
        matches = list(filter(None, map(self.classifier.match, lines)))
        if matches:
            self._block, self._new = matches, {}
            runs = {group: list(same)
                    for group, same in groupby(sorted(matches, key=_SLOT), _SLOT)}
            latest = list(map(_SLOT, reversed(matches)))
            handlers = self._handlers
            for group in sorted(runs, key=latest.index, reverse=True):
                handlers[group](runs[group])
            self._flush()
            if self._on_block is not None:
                self._on_block(self, matches)
        return len(matches)

    def _flush(self) -> None:
        """Hand the watched runs of the batch to ``on_watched``."""
        if self._runs and self._on_watched is not None:
            runs, self._runs = self._runs, []
            self._on_watched(runs)

    def hits(self, lines: list[bytes]) -> Iterator[tuple[int, Hit]]:
        """Count like :meth:`feed` and yield (index in *lines*, full hit) for each one."""
        handlers, slots, match = self._handlers, self.classifier.slots, self.classifier.match
        for n, line in enumerate(lines):
            m = match(line)
            if m is None or m.lastindex is None:
                continue
            self._block, self._new = [m], {}
            handlers[m.lastindex]([m])
            yield n, slots[m.lastindex].resolve(line)
        self._flush()

    def count(self, incident: str, source: str) -> int:
        return self.counts[self._index[(incident, source)]]

    def evidence_for(self, k: int) -> Evidence | None:
        slot = self.evidence_slot[k]
        return None if slot is None else Evidence(slot, self.evidence[k])

    def incident(self, k: int) -> Incident:
        return self.classifier.catalog.incident(*self.keys[k])

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Counts as ``{incident: {source: n}}``, every known pair included."""
        out: dict[str, dict[str, int]] = {}
        for (incident, source), n in zip(self.keys, self.counts, strict=True):
            out.setdefault(incident, {})[source] = n
        return out

    def restore(self, saved: dict[str, dict[str, int]]) -> None:
        """Continue from counts saved with the file positions (see the follower's snapshot)."""
        for incident, sources in saved.items():
            for source, n in sources.items():
                k = self._index.get((incident, source))
                if k is not None:
                    self.counts[k] = int(n)
