"""A block: the lines one read of a log gave, and what the pipeline's stages found in them.

Every stage has one signature, ``Stage = Callable[[Block], None]``: it reads the block and
adds to what it keeps (counts, root causes, recent incidents, log events). The classify
stage fills ``hits``, ``runs`` and ``slots`` for the stages after it, so a line is matched
once. The daemon's and the scan's stage lists are each written in one place
(:mod:`gw502d.daemon.pipeline`, :mod:`gw502d.scan.engine`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gw502d.classify.matcher import Captures, RawKey, Slot
from gw502d.parse.syslog import family_of

Match = re.Match[bytes]


class Paired(NamedTuple):
    """``n`` lines of an nginx *incident* (read at *time*) explained by a backend *cause*:
    what the root-cause stage found in a block, for the stages after it."""

    incident: str
    cause: str
    time: float | None
    n: int


class Run:
    """One slot's hits in a block, in line order; ``k`` indexes ``catalog.keys``.

    The facts of the message (``slot.counted``: the evidence, the upstream, the worker
    pid...) are read from the hits once, in C, when a stage first asks, and counted by
    value; each stage takes its own facts from those counts (:meth:`count_of`), so a
    storm's line is read once, not once per stage.
    """

    __slots__ = ("_counted", "_raws", "_read", "hits", "k", "slot")

    def __init__(self, k: int, slot: Slot, hits: list[Match],
                 read: Callable[[list[Match]], Iterable[RawKey]]) -> None:
        """*read*: the slot's ``counted_reader()``, built once per slot by the tally."""
        self.k, self.slot, self.hits, self._read = k, slot, hits, read
        self._raws: list[RawKey] | None = None
        self._counted: Counter[RawKey] | None = None

    def raws(self) -> list[RawKey]:
        """Each hit's ``slot.counted`` facts, raw, in line order."""
        if self._raws is None:
            self._raws = list(self._read(self.hits))
        return self._raws

    def counted(self) -> Counter[RawKey]:
        """The hits' ``slot.counted`` facts, raw, by distinct value."""
        if self._counted is None:
            self._counted = Counter(self.raws())
        return self._counted

    def count_of(self, captures: Captures) -> Mapping[RawKey, int]:
        """The hits by the distinct values of *captures* (some of ``slot.counted``, in
        their order)."""
        return project(self.counted(), self.slot.counted, captures)


def project(counts: Mapping[RawKey, int], have: Captures,
            want: Captures) -> Mapping[RawKey, int]:
    """*counts* keyed by values of *have* as counts keyed by those of *want* (a subset):
    Python per distinct value, none when the two are the same."""
    at = positions(have, want)
    if at is None:
        return counts
    out: dict[RawKey, int] = {}
    for raw, n in counts.items():
        key = tuple([raw[i] for i in at])
        out[key] = out.get(key, 0) + n
    return out


def positions(have: Captures, want: Captures) -> list[int] | None:
    """Where each of *want* is among *have* (None: they are the same)."""
    if want == have:
        return None
    names = [name for name, _ in have]
    return [names.index(name) for name, _ in want]


@dataclass(slots=True, eq=False)
class Block:
    """Complete lines of one log, read at ``time`` (wall clock).

    ``times``, when given, is each line's own time from its source (a journal record's
    ``__REALTIME_TIMESTAMP``, a syslog prefix's), None where unknown; else every line counts
    as read at ``time``. ``hits`` are the matches of incident and companion lines in
    line order, ``runs`` the counted incidents' hits per slot in the order of each slot's
    last hit, ``slots`` the classifier's slots by group (``m.lastindex``); ``paired`` the
    root causes found with this block (for symptoms of this block or earlier ones);
    ``ended`` the hits that end an event counted before (a death after its harakiri):
    companions, whatever their own template says.
    """

    log: str
    family: str | None
    lines: list[bytes]
    time: float
    times: Sequence[float | None] | None = None
    hits: list[Match] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    slots: Mapping[int, Slot] = field(default_factory=dict)
    paired: list[Paired] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)  # id() of hits that end an event counted


Stage = Callable[[Block], None]


def by_family(log: str, family: str | None, lines: list[bytes], tags: Sequence[bytes | str],
              time: float, *, times: Sequence[float | None] | None = None) -> list[Block]:
    """One block per family, for lines that name their writer in a tag (a journal
    identifier or unit, a syslog tag): each family's lines in line order, so its tally
    sees a death after its harakiri. *family*, when set, is every line's; a tag that names
    no family leaves the line to the all-families classifier (family None).

    The usual block has one writer: the distinct tags are looked at, not every line.
    """
    if family is not None or not lines:
        return [Block(log, family, lines, time, times)] if lines else []
    families = {family_of(tag) for tag in set(tags)}
    if len(families) == 1:
        return [Block(log, families.pop(), lines, time, times)]
    split: dict[str | None, tuple[list[bytes], list[float | None]]] = {}
    for i, tag in enumerate(tags):
        fam = family_of(tag)
        got = split.get(fam)
        if got is None:
            got = split[fam] = ([], [])
        got[0].append(lines[i])
        if times is not None:
            got[1].append(times[i])
    return [Block(log, fam, ls, time, ts if times is not None else None)
            for fam, (ls, ts) in split.items()]
