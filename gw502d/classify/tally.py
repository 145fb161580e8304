"""Tally: what the classifier found in blocks of lines, kept as plain ints and bounded evidence.

The per-line path is ``filter(None, map(match, lines))`` in C. The hits of a block are
then sorted by slot (``m.lastindex``) and each slot's run goes to a handler built once per
slot, runs in the order of their last hits (so the last line kept is the block's last):
it adds the run's length to a list element and, when the remediation needs facts, counts
the raw bytes of those few groups with a ``Counter`` (also in C). Python work is per slot
and block, not per line. Exporters and reports read these numbers when asked (a scrape,
the end of a scan); nothing here locks or logs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter
from typing import Any

from gw502d.classify.block import Block, Match, Run
from gw502d.classify.catalog import Catalog, Incident
from gw502d.classify.keys import Key, nest
from gw502d.classify.matcher import Classifier, RawKey, Slot

# Distinct evidence values kept per incident; beyond it they are merged, so a flood of
# lines with attacker-chosen values cannot grow memory.
EVIDENCE_CAP = 256
OTHER: RawKey = (b"\x00other",)

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


class Tally:
    """Counts per (incident, source) for one classifier; companion lines apart.

    >>> from gw502d.classify.catalog import load_catalog
    >>> t = Tally(Classifier(load_catalog()))
    >>> t.count(Block("app", None, [b"invalid request block size: 4363 (max 4096)...skip",
    ...                             b"noise"], 0.0))
    >>> t.counted("request_block_too_big", "uwsgi")
    1
    """

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.keys: list[Key] = list(classifier.catalog.keys)
        self.companion_keys: list[Key] = list(dict.fromkeys(
            i.key for i in classifier.catalog.incidents if i.companion))
        n = len(self.keys)
        self.counts = [0] * n
        self.companions = [0] * len(self.companion_keys)
        self.first_line: list[bytes | None] = [None] * n
        self.last_line: list[bytes | None] = [None] * n
        self.last_seen = [0.0] * n  # the time of the block that had the last hit
        self.evidence: list[dict[RawKey, int]] = [{} for _ in range(n)]
        self.evidence_slot: list[Slot | None] = [None] * n
        self._index = {k: i for i, k in enumerate(self.keys)}
        self._block: list[Match] = []  # the hits of the block being counted, in line order
        self._new: dict[int, int] = {}  # incidents first seen in it: their first hit's index
        self._runs: list[Run] = []
        self._now = 0.0
        self._handlers: dict[int, Callable[[list[Match]], None]] = {
            group: self._handler(slot) for group, slot in classifier.slots.items()}

    def _handler(self, slot: Slot) -> Callable[[list[Match]], None]:
        """Specialise the work on one slot's hits (decided once, not per block)."""
        incident = slot.incident
        if incident.companion:
            j = self.companion_keys.index(incident.key)
            companions = self.companions

            def companion(ms: list[Match]) -> None:
                companions[j] += len(ms)

            return companion
        k = self._index[incident.key]
        read = slot.evidence_reader() if slot.evidence else None

        def hits(ms: list[Match]) -> None:
            self._count(k, slot, ms)
            if read is not None:
                self._note(k, Counter(read(ms)))
            self._runs.append(Run(k, slot, ms))

        return hits

    def _count(self, k: int, slot: Slot, ms: list[Match]) -> None:
        before = self.counts[k]
        self.counts[k] = before + len(ms)
        self.last_line[k] = ms[-1].string  # runs come in the order of their last hits
        self.last_seen[k] = self._now
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

    def count(self, block: Block) -> None:
        """The classify stage: match and count *block*, and fill its hits, runs and slots."""
        matches = list(filter(None, map(self.classifier.match, block.lines)))
        block.hits, block.slots = matches, self.classifier.slots
        if not matches:
            block.runs = []
            return
        self._block, self._new, self._now = matches, {}, block.time
        runs = {group: list(same) for group, same in groupby(sorted(matches, key=_SLOT), _SLOT)}
        latest = list(map(_SLOT, reversed(matches)))
        handlers = self._handlers
        for group in sorted(runs, key=latest.index, reverse=True):
            handlers[group](runs[group])
        block.runs, self._runs = self._runs, []

    def counted(self, incident: str, source: str) -> int:
        """How many lines of (incident, source) were counted."""
        return self.counts[self._index[(incident, source)]]

    def evidence_for(self, k: int) -> Evidence | None:
        slot = self.evidence_slot[k]
        return None if slot is None else Evidence(slot, self.evidence[k])

    def incident(self, k: int) -> Incident:
        return self.classifier.catalog.incident(*self.keys[k])

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Counts as ``{incident: {source: n}}``, every known pair included."""
        return nest(dict(zip(self.keys, self.counts, strict=True)))


class Tallies:
    """One tally per log family the configuration names (and one for logs without a
    family), all of one catalog: their counts index alike (``catalog.keys``).

    ``capture`` goes to each classifier (facts a later stage reads from the hits).
    """

    def __init__(self, catalog: Catalog, families: Iterable[str | None] = (None,), *,
                 capture: Iterable[str] = ()) -> None:
        self.catalog = catalog
        self.keys = catalog.keys
        self._capture = tuple(capture)
        self.by_family: dict[str | None, Tally] = {}
        for family in families:
            self.for_family(family)

    def for_family(self, family: str | None) -> Tally:
        """The tally of *family*, built on first use (a log added by a reload)."""
        tally = self.by_family.get(family)
        if tally is None:
            families = None if family is None else [family]
            tally = self.by_family[family] = Tally(
                Classifier(self.catalog, families, capture=self._capture))
        return tally

    def count(self, block: Block) -> None:
        """The classify stage: count *block* with its family's tally."""
        self.for_family(block.family).count(block)

    def totals(self) -> tuple[dict[Key, int], dict[Key, int], dict[Key, float]]:
        """Counts, companion counts and last-seen times summed over the families."""
        counts = Counter(dict.fromkeys(self.keys, 0))
        companions: Counter[Key] = Counter()
        last_seen = dict.fromkeys(self.keys, 0.0)
        for tally in self.by_family.values():
            counts.update(dict(zip(tally.keys, tally.counts, strict=True)))
            companions.update(dict(zip(tally.companion_keys, tally.companions, strict=True)))
            for key, t in zip(tally.keys, tally.last_seen, strict=True):
                last_seen[key] = max(last_seen[key], t)
        return dict(counts), dict(companions), last_seen

    def evidence(self, key: Key) -> list[tuple[dict[str, Any], int]]:
        """The facts seen for *key* over every family's tally, with counts."""
        k = self.keys.index(key)
        out: list[tuple[dict[str, Any], int]] = []
        for tally in self.by_family.values():
            found = tally.evidence_for(k)
            if found is not None:
                out += found.facts()
        return out
