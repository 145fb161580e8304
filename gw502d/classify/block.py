"""A block: the lines one read of a log gave, and what the pipeline's stages found in them.

Every stage has one signature, ``Stage = Callable[[Block], None]``: it reads the block and
adds to what it keeps (counts, root causes, recent incidents, log events). The classify
stage fills ``hits``, ``runs`` and ``slots`` for the stages after it, so a line is matched
once. The daemon's and the scan's stage lists are each written in one place
(:mod:`gw502d.daemon.pipeline`, :mod:`gw502d.scan.engine`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gw502d.classify.matcher import Slot
from gw502d.parse.syslog import family_of

Match = re.Match[bytes]


class Paired(NamedTuple):
    """``n`` lines of an nginx *incident* (read at *time*) explained by a backend *cause*:
    what the root-cause stage found in a block, for the stages after it."""

    incident: str
    cause: str
    time: float | None
    n: int


class Run(NamedTuple):
    """One slot's hits in a block, in line order; ``k`` indexes ``catalog.keys``."""

    k: int
    slot: Slot
    hits: list[Match]


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
