"""Events: a slot's hits read for what root-cause pairing needs, identical lines counted once.

The facts come from the hot match itself (the classifier captures them when it is built
with ``capture=EVENT_FACTS``), so no line is matched twice; the reading is in C and the
conversion runs per distinct value. An :class:`Event` stands for ``n`` identical lines
(same time, incident and facts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter, methodcaller
from typing import Any, NamedTuple

from gw502d.classify.block import Match, Run, positions
from gw502d.classify.keys import Key
from gw502d.classify.matcher import RawKey, Slot
from gw502d.parse.record import convert, decode
from gw502d.parse.times import line_time

Span = tuple[float, float]
# The facts events carry (the pairing reads them) and the line's time
FACTS = ("upstream", "worker_pid", "signal")
EVENT_FACTS = (*FACTS, "time")
_CACHE = 1024  # converted values remembered per slot, then forgotten


class Event(NamedTuple):
    """Classified lines: when, which (incident, source), their facts, the peer if known,
    and how many identical ones (same time and facts) were seen together. An undated line
    may know the ``span`` of time it was written in (from the dated lines around it)."""

    time: float | None
    incident: str
    source: str
    facts: Mapping[str, Any]
    peer: str | None = None
    n: int = 1
    span: Span | None = None  # an undated line: written between these times


class EventReader:
    """Reads one slot's hits as :class:`Event`\\ s (built once per slot and kept).

    The pairing facts are facts of the message (``slot.counted``: a test keeps it so), so
    they come from the run's counts: a block's hits are read for them once, with the
    other stages' facts.
    """

    def __init__(self, slot: Slot, key: Key) -> None:
        self._key = key
        self._family = slot.family.name
        self._captures = tuple(c for c in slot.counted if c[0] in FACTS)
        at = positions(slot.counted, self._captures)
        # each hit's facts from the run's values, in C (itemgetter of one index gives
        # the value itself: zip makes it a tuple); None: the run's values are these facts
        self._pick: Callable[[list[RawKey]], Iterable[RawKey]] | None = (
            None if at is None
            else (lambda raws: repeat((), len(raws))) if not at
            else (lambda raws: zip(map(itemgetter(at[0]), raws))) if len(at) == 1
            else (lambda raws: map(itemgetter(*at), raws)))
        # each hit's time text, read in C (None: the family's prefix has no time)
        self._stamp = next((methodcaller("group", group) for (name, _), group
                            in zip(slot.extra, slot.extra_groups, strict=True)
                            if name == "time"), None)
        self._facts: dict[RawKey, dict[str, Any]] = {}
        self._times: dict[bytes, float | None] = {}

    def events(self, run: Run, when: float | None, *, dated: bool,
               at: Sequence[float | None] | None = None,
               span_of: Callable[[Match], Span | None] | None = None) -> list[Event]:
        """The events of *run*: each at its line's own time with *dated* (*when* for lines
        without one, or the span *span_of* finds around them), else all at *when* (the
        daemon: their arrival). *at*, when given, is each hit's time from its source (a
        journal record's, a syslog prefix's): it wins where it is known."""
        key = self._key
        if not dated and at is None and span_of is None:  # the daemon's file blocks
            return [Event(when, key[0], key[1], self._convert(raw), n=n)
                    for raw, n in run.count_of(self._captures).items()]
        hits = run.hits
        raws = run.raws() if self._pick is None else list(self._pick(run.raws()))
        stamps: list[bytes | float | None] = list(map(self._stamp, hits)) \
            if dated and self._stamp is not None else [None] * len(raws)
        if at is not None:
            stamps = [s if a is None else a for a, s in zip(at, stamps, strict=True)]
        # counted in C: a storm's hits cost no Python each
        events = [Event(when if (t := self._time(stamp)) is None else t, key[0], key[1],
                        self._convert(raw), n=n)
                  for (stamp, raw), n in Counter(zip(stamps, raws, strict=True)).items()
                  if stamp is not None or span_of is None]
        if span_of is not None and None in stamps:  # undated lines: each its own span
            found: Counter[tuple[Span | None, RawKey]] = Counter(
                (span_of(m), raw) for m, stamp, raw in zip(hits, stamps, raws, strict=True)
                if stamp is None)
            events += [Event(when, key[0], key[1], self._convert(raw), n=n, span=span)
                       for (span, raw), n in found.items()]
        return events

    def _time(self, stamp: bytes | float | None) -> float | None:
        if stamp is None or isinstance(stamp, float):  # none, or a time from the source
            return stamp
        t = self._times.get(stamp, False)
        if t is False:
            if len(self._times) >= _CACHE:
                self._times.clear()
            t = self._times[stamp] = line_time(self._family, decode(stamp))
        return t

    def _convert(self, raw: RawKey) -> dict[str, Any]:
        facts = self._facts.get(raw)
        if facts is None:
            if len(self._facts) >= _CACHE:
                self._facts.clear()
            facts = self._facts[raw] = convert(self._captures, raw)
        return facts
