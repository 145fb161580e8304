"""Tally: what the classifier found, kept as plain ints and bounded evidence.

The per-line path is ``filter(None, map(match, lines))`` in C; each hit calls a closure
built once per slot that adds 1 to a list element and, when the remediation needs facts,
counts the raw bytes of those few groups in a small dict. Exporters and reports read
these numbers when asked (a scrape, the end of a scan); nothing here locks or logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import Any

from gw502d.classify.catalog import Incident
from gw502d.classify.matcher import Classifier, Hit, RawKey, Slot

# Distinct evidence values kept per incident; beyond it they are merged, so a flood of
# lines with attacker-chosen values cannot grow memory.
EVIDENCE_CAP = 256
OTHER: RawKey = (b"\x00other",)

Key = tuple[str, str]
OnHit = Callable[[int, Slot, re.Match[bytes]], None]
Matches = list[re.Match[bytes]]
OnBlock = Callable[["Tally", Matches], None]


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
            found = self.slot.hot_facts(raw)
            self.slot.pick(found)
            out.append((found, n))
        return out


def _watched(slot: Slot, watch: Container[Key] | None) -> bool:
    return watch is None or any(i.key in watch for i in slot.candidates)


class Tally:
    """Counts per (incident, source) for one classifier; companion lines apart.

    >>> from gw502d.classify.catalog import load_catalog
    >>> t = Tally(Classifier(load_catalog()))
    >>> t.feed([b"invalid request block size: 4363 (max 4096)...skip", b"noise"])
    1
    >>> t.count("request_block_too_big", "uwsgi")
    1
    """

    def __init__(self, classifier: Classifier, on_hit: OnHit | None = None, *,
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
        self._handlers: dict[int, Callable[[re.Match[bytes]], None]] = {
            group: self._handler(slot, on_hit if _watched(slot, watch) else None)
            for group, slot in classifier.slots.items()
        }
        self._on_block = on_block

    def _handler(self, slot: Slot, on_hit: OnHit | None) -> Callable[[re.Match[bytes]], None]:
        """Specialise the per-hit work for one slot (decided once, not per line)."""
        fixed = slot.fixed
        if fixed is not None and fixed.companion:
            j = self.companion_keys.index(fixed.key)
            companions = self.companions

            def companion(m: re.Match[bytes]) -> None:
                companions[j] += 1

            return companion
        counts, first, last = self.counts, self.first_line, self.last_line
        raw_key = slot.raw_key()
        index = self._index
        evidence, evidence_slot = self.evidence, self.evidence_slot

        def first_hit(k: int, m: re.Match[bytes]) -> None:
            first[k] = m.string
            evidence_slot[k] = slot

        def note(k: int, raw: RawKey) -> None:
            seen = evidence[k]
            if raw in seen:
                seen[raw] += 1
            elif len(seen) < EVIDENCE_CAP:
                seen[raw] = 1
            else:
                seen[OTHER] = seen.get(OTHER, 0) + 1

        if fixed is not None:
            k = index[fixed.key]
            seen = evidence[k]
            groups = tuple(range(slot.first, slot.first + len(slot.hot)))
            # The storm path: one closure per slot shape, everything inline.
            if not groups and on_hit is None:
                def plain(m: re.Match[bytes]) -> None:
                    n = counts[k] = counts[k] + 1
                    last[k] = m.string
                    if n == 1:
                        first_hit(k, m)

                return plain
            if len(groups) == 1 and on_hit is None:
                (g,) = groups

                def one_fact(m: re.Match[bytes]) -> None:
                    n = counts[k] = counts[k] + 1
                    last[k] = m.string
                    if n == 1:
                        first_hit(k, m)
                    raw = (m.group(g),)
                    if raw in seen:
                        seen[raw] += 1
                    else:
                        note(k, raw)

                return one_fact

            def fixed_hit(m: re.Match[bytes]) -> None:
                n = counts[k] = counts[k] + 1
                last[k] = m.string
                if n == 1:
                    first_hit(k, m)
                if groups:
                    raw = raw_key(m)
                    if raw in seen:
                        seen[raw] += 1
                    else:
                        note(k, raw)
                if on_hit is not None:
                    on_hit(k, slot, m)

            return fixed_hit

        def chosen(m: re.Match[bytes]) -> None:
            raw = raw_key(m)
            incident = slot.pick(slot.hot_facts(raw))
            if incident is None:
                return
            k = index[incident.key]
            n = counts[k] = counts[k] + 1
            last[k] = m.string
            if n == 1:
                first_hit(k, m)
            note(k, raw)
            if on_hit is not None:
                on_hit(k, slot, m)

        return chosen

    def feed(self, lines: list[bytes]) -> int:
        """Classify and count a batch of complete lines; return the number of hits.

        ``on_hit`` runs for each hit of a watched incident; ``on_block`` once with the tally
        and all the hits of the batch (companion lines included), for work done per block.
        """
        handlers = self._handlers
        if self._on_block is None:
            hits = 0
            for m in filter(None, map(self.classifier.match, lines)):
                handlers[m.lastindex](m)  # type: ignore[index]
                hits += 1
            return hits
        matches = list(filter(None, map(self.classifier.match, lines)))
        for m in matches:
            handlers[m.lastindex](m)  # type: ignore[index]
        self._on_block(self, matches)
        return len(matches)

    def hits(self, lines: list[bytes]) -> Iterator[tuple[int, Hit]]:
        """Count like :meth:`feed` and yield (index in *lines*, full hit) for each one."""
        handlers, slots, match = self._handlers, self.classifier.slots, self.classifier.match
        for n, line in enumerate(lines):
            m = match(line)
            if m is None or m.lastindex is None:
                continue
            handlers[m.lastindex](m)
            hit = slots[m.lastindex].resolve(line)
            if hit is not None:
                yield n, hit

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
