"""Tally: what the classifier found in blocks of lines, kept as plain ints and bounded evidence.

The per-line path is ``filter(None, map(match, lines))`` in C, over the lines the
prefilter names (:mod:`gw502d.classify.prefilter`) when it can look first. The hits of a block are
then sorted by slot (``m.lastindex``) and each slot's run goes to a handler built once per
slot, runs in the order of their last hits (so the last line kept is the block's last):
it adds the run's length to a list element and, when the remediation needs facts, takes
them from the run's counts (:class:`~gw502d.classify.block.Run`: the raw bytes of those
few groups, read and counted in C once for every stage). Python work is per slot and
block, not per line. Exporters and reports read these numbers when asked (a scrape,
the end of a scan); nothing here locks or logs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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
# Recent events a consequence line may still follow (a harakiri's worker pid), per incident
RECENT_CAP = 256
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
        incidents = classifier.catalog.incidents
        self.keys: list[Key] = list(classifier.catalog.keys)
        # companion lines, and consequence lines (a death after its harakiri), are counted
        # apart, under the incident they accompany
        targets = {(c.incident, i.source): c.same for i in incidents for c in i.consequence_of}
        self.companion_keys: list[Key] = list(dict.fromkeys(
            [i.key for i in incidents if i.companion] + list(targets)))
        # events waiting for the line that ends them: values of the ``same`` facts -> count
        self._recent: dict[Key, dict[tuple[Any, ...], int]] = {key: {} for key in targets}
        # a companion line (a harakiri's status report) neither ends an event nor is one
        self._linked = {group: _Link(slot, targets)
                        for group, slot in classifier.slots.items()
                        if not slot.incident.companion
                        and (slot.incident.consequence_of or slot.incident.key in targets)}
        n = len(self.keys)
        self.counts = [0] * n
        self.companions = [0] * len(self.companion_keys)
        self.first_line: list[bytes | None] = [None] * n
        self.last_line: list[bytes | None] = [None] * n
        self.last_seen = [0.0] * n  # the time of the block that had the last hit
        self.evidence: list[dict[RawKey, int]] = [{} for _ in range(n)]
        # the slot that reads the raw keys back: one with evidence (another message of the
        # same incident may capture none, e.g. Werkzeug's OSError line beside its port line)
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
        read = slot.counted_reader()

        def hits(ms: list[Match]) -> None:
            self._count(k, ms)
            run = Run(k, slot, ms, read)
            if slot.evidence:
                if self.evidence_slot[k] is None:
                    self.evidence_slot[k] = slot
                self._note(k, run.count_of(slot.evidence))
            self._runs.append(run)

        return hits

    def _count(self, k: int, ms: list[Match]) -> None:
        before = self.counts[k]
        self.counts[k] = before + len(ms)
        self.last_line[k] = ms[-1].string  # runs come in the order of their last hits
        self.last_seen[k] = self._now
        if not before or k in self._new:  # first seen in this block: the earliest run wins
            at = self._block.index(ms[0])
            if at < self._new.get(k, at + 1):
                self._new[k] = at
                self.first_line[k] = ms[0].string

    def _note(self, k: int, found: Mapping[RawKey, int]) -> None:
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
        matches = self.classifier.hits(block.lines)
        block.hits, block.slots = matches, self.classifier.slots
        if not matches:
            block.runs = []
            return
        self._block, self._new, self._now = matches, {}, block.time
        runs = {group: list(same) for group, same in groupby(sorted(matches, key=_SLOT), _SLOT)}
        latest = list(map(_SLOT, reversed(matches)))
        if not self._linked.keys().isdisjoint(runs):
            block.ended = self._link(matches, runs)
        handlers = self._handlers
        for group in sorted(runs, key=latest.index, reverse=True):
            if runs[group]:
                handlers[group](runs[group])
        block.runs, self._runs = self._runs, []

    def pending_ends(self) -> dict[str, dict[str, list[list[str]]]]:
        """The events still waiting for their end (saved with the counters, so a restart
        that reads lines again counts them as the first read did)."""
        return nest({key: [[n, *(v.decode("latin-1") for v in values)]
                           for values, n in recent.items()]
                     for key, recent in self._recent.items() if recent})

    def restore_pending_ends(self, saved: Mapping[str, Any]) -> None:
        """Take up :meth:`pending_ends` of a snapshot (anything malformed is skipped)."""
        for key, recent in self._recent.items():
            entries = saved.get(key[0], {}).get(key[1], []) if isinstance(saved, dict) else []
            for entry in entries if isinstance(entries, list) else []:
                if (isinstance(entry, list) and entry and isinstance(entry[0], int)
                        and entry[0] > 0 and all(isinstance(v, str) for v in entry[1:])):
                    recent[tuple(v.encode("latin-1", "replace") for v in entry[1:])] = entry[0]

    def _link(self, matches: list[Match], runs: dict[int, list[Match]]) -> set[int]:
        """Consequence lines in line order: a line that ends an event counted before (a
        death after its harakiri, told by the worker pid) is that event's companion, not an
        incident; the events that may be ended are remembered. Only blocks that hold such
        lines pay for the walk."""
        values: dict[tuple[int, tuple[str, ...]], tuple[Any, ...]] = {}
        for group, ms in runs.items():
            link = self._linked.get(group)
            if link is not None:
                for names in link.names:
                    for m, v in zip(ms, _values(link.slot, names, ms), strict=True):
                        values[(id(m), names)] = v
        ended: set[int] = set()
        for m in matches:
            link = self._linked.get(m.lastindex)  # type: ignore[arg-type]
            if link is None:
                continue
            for target, same in link.follows:
                recent = self._recent[target]
                v = values[(id(m), same)]
                if recent.get(v):
                    recent[v] -= 1
                    if not recent[v]:
                        del recent[v]
                    self.companions[self.companion_keys.index(target)] += 1
                    ended.add(id(m))
                    break
            else:
                if link.remember is not None:
                    v = values[(id(m), link.remember)]
                    recent = self._recent[link.slot.incident.key]
                    if None not in v:
                        recent[v] = recent.get(v, 0) + 1
                        if len(recent) > RECENT_CAP:
                            del recent[next(iter(recent))]
        if ended:
            for group in runs.keys() & self._linked.keys():
                runs[group] = [m for m in runs[group] if id(m) not in ended]
        return ended

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


class _Link:
    """How one slot takes part in consequences: the incidents its lines may end
    (``follows``, with the facts that must be equal) and whether its own events may be
    ended by a later line (``remember``: the facts to remember them by)."""

    def __init__(self, slot: Slot, targets: Mapping[Key, tuple[str, ...]]) -> None:
        self.slot = slot
        source = slot.incident.source
        self.follows = [((c.incident, source), c.same) for c in slot.incident.consequence_of]
        self.remember = targets.get(slot.incident.key)
        self.names = {same for _, same in self.follows} | (
            {self.remember} if self.remember is not None else set())


def _values(slot: Slot, names: tuple[str, ...], ms: list[Match]) -> list[tuple[Any, ...]]:
    """The values of facts *names* in each hit: from the hot match when the classifier
    captured them (the daemon's and the scan's do), else from the slot's full regex."""
    captures, read = slot.extra_reader(names)
    if len(captures) == len(names):
        order = [next(i for i, (c, _) in enumerate(captures) if c == name) for name in names]
        return [tuple(raw[i] for i in order) for raw in read(ms)]
    facts = [slot.resolve(m.string).facts for m in ms]
    return [tuple(str(f.get(name)).encode() for name in names) for f in facts]


class Tallies:
    """One tally per log family the configuration names (and one for logs without a
    family), all of one catalog: their counts index alike (``catalog.keys``).

    ``capture`` goes to each classifier (facts a later stage reads from the hits), with the
    facts that tell a consequence line from an incident of its own.
    """

    def __init__(self, catalog: Catalog, families: Iterable[str | None] = (None,), *,
                 capture: Iterable[str] = ()) -> None:
        self.catalog = catalog
        self.keys = catalog.keys
        same = (name for i in catalog.incidents for c in i.consequence_of for name in c.same)
        self._capture = tuple(dict.fromkeys([*capture, *same]))
        self.pending: Mapping[str, Any] = {}  # saved pending ends, for tallies built later
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
            tally.restore_pending_ends(self.pending.get(family or "*", {}))
        return tally

    def restore_pending_ends(self, pending: Mapping[str, Any]) -> None:
        """Take up :meth:`pending_ends` (a snapshot's, or the tallies' a reload replaces)."""
        self.pending = pending
        for family, tally in self.by_family.items():
            tally.restore_pending_ends(pending.get(family or "*", {}))

    def pending_ends(self) -> dict[str, Any]:
        """Each family's :meth:`Tally.pending_ends` (``*``: logs without a family); a
        family restored but not counted in since (its tally not built yet: a journal's
        or a syslog file's families come with their lines) keeps what was restored."""
        built = {family or "*" for family in self.by_family}
        out = {family: ends for family, ends in self.pending.items() if family not in built}
        out.update({family or "*": ends for family, tally in self.by_family.items()
                    if (ends := tally.pending_ends())})
        return out

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
