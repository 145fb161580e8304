"""Events: a slot's hits read for what root-cause pairing needs, identical lines counted once.

The facts come from the hot match itself (the classifier captures them when it is built
with ``capture=EVENT_FACTS``), so no line is matched twice; the reading is in C and the
conversion runs per distinct value. An :class:`Event` stands for ``n`` identical lines
(same time, incident and facts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple

from gw502d.classify.block import Match
from gw502d.classify.keys import Key
from gw502d.classify.matcher import RawKey, Slot
from gw502d.parse.record import convert, decode
from gw502d.parse.times import line_time

# The facts events carry (the pairing reads them) and the line's time
FACTS = ("upstream", "worker_pid", "signal")
EVENT_FACTS = (*FACTS, "time")
_CACHE = 1024  # converted values remembered per slot, then forgotten


class Event(NamedTuple):
    """Classified lines: when, which (incident, source), their facts, the peer if known,
    and how many identical ones (same time and facts) were seen together."""

    time: float | None
    incident: str
    source: str
    facts: Mapping[str, Any]
    peer: str | None = None
    n: int = 1


class EventReader:
    """Reads one slot's hits as :class:`Event`\\ s (built once per slot and kept)."""

    def __init__(self, slot: Slot, key: Key) -> None:
        self._key = key
        self._family = slot.family.name
        self._captures, self._read = slot.extra_reader(FACTS)
        time_capture, self._read_time = slot.extra_reader(("time",))
        self._dated = bool(time_capture)  # the family's prefix has a time
        self._facts: dict[RawKey, dict[str, Any]] = {}
        self._times: dict[bytes, float | None] = {}

    def events(self, hits: list[Match], when: float | None, *, dated: bool,
               at: Sequence[float | None] | None = None) -> list[Event]:
        """The events of *hits*: each at its line's own time with *dated* (*when* for lines
        without one), else all at *when* (the daemon: their arrival). *at*, when given, is
        each hit's time from its source (a journal record's): it wins where it is known."""
        raws = self._read(hits)
        times = (time_bytes for (time_bytes,) in self._read_time(hits)) \
            if dated and self._dated else repeat(None)
        if at is None:  # converted once per distinct stamp
            found = Counter(zip(times, raws, strict=False)).items()
            counted = ((self._time(stamp), raw, n) for (stamp, raw), n in found)
        else:
            sourced = (a if a is not None else self._time(stamp)
                       for a, stamp in zip(at, times, strict=False))
            counted = ((t, raw, n) for (t, raw), n in
                       Counter(zip(sourced, raws, strict=False)).items())
        incident, source = self._key
        return [Event(when if t is None else t, incident, source, self._convert(raw), n=n)
                for t, raw, n in counted]

    def _time(self, stamp: bytes | None) -> float | None:
        if stamp is None:
            return None
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
