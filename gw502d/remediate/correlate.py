"""Root causes across logs: nginx's view of a failed request joined with the backend's.

nginx only says *that* its upstream closed, reset or timed out; uWSGI and gunicorn say
*why*: harakiri, a worker killed by signal 9 (likely the OOM killer) or crashed, a request
too big for ``buffer-size``, HTTP sent to a uwsgi socket, gunicorn's worker timeout. A
backend event within ``window`` seconds of an nginx symptom, on the same upstream where
that can be told, is that symptom's root cause.

Pairing rules:

- one backend event explains one nginx symptom, the earliest compatible one;
- compatible: the nginx upstream's scheme fits the backend (a too-big uwsgi packet only
  behind ``uwsgi://``, HTTP on a uwsgi socket only behind ``http://``, gunicorn only behind
  ``http(s)://``, uWSGI deaths behind either, as uWSGI also serves ``http-socket``); and
  when the event names its peer (:attr:`Event.peer`, e.g. from the daemon's log config)
  it is nginx's peer. uWSGI's and gunicorn's lines do not name the socket they serve, so
  otherwise time alone decides;
- a worker's death right after its harakiri (uWSGI logs the kill, then "died, killed by
  signal 9") or after gunicorn's WORKER TIMEOUT is the same event, told by the worker pid:
  it is not counted again and it is not an OOM kill.

Time: nginx writes ``YYYY/MM/DD HH:MM:SS`` in local time; uWSGI writes a ctime prefix only
with ``log-date`` (and always on its HARAKIRI lines), its other plain lines carry no time;
gunicorn writes ``[YYYY-mm-dd HH:MM:SS +zone]``.
The daemon stamps an undated line with its arrival time (it reads lines as they are
written). ``scan`` cannot, so it matches undated events by order: each pairs with the
oldest compatible nginx symptom no dated event explained (``keep_unexplained``).

Work is per distinct event, not per line: a block's hits of one slot are read for the few
facts the pairing needs (from the hot match where it captured them, else with the slot's
own small regex) and counted in C; an :class:`Event` stands for ``n`` identical lines
(same time, incident and facts) and pairs as many symptoms at once.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice, repeat
from operator import attrgetter, methodcaller
from typing import Any, NamedTuple

from gw502d.classify.matcher import Slot, reader
from gw502d.classify.tally import OnWatched, Runs
from gw502d.parse.record import convert, decode
from gw502d.remediate.nginx import Upstream

DEFAULT_WINDOW = 5.0
# nginx incidents a backend event can explain
SYMPTOMS = frozenset({
    ("upstream_premature_close", "nginx"), ("upstream_reset", "nginx"),
    ("upstream_timeout", "nginx"),
})
# Every cause, with the nginx module families it can appear behind (a bounded label set)
CAUSES: dict[str, frozenset[str]] = {
    "worker_harakiri": frozenset({"uwsgi", "proxy"}),
    "worker_oom_killed": frozenset({"uwsgi", "proxy"}),
    "worker_crashed": frozenset({"uwsgi", "proxy"}),
    "request_block_too_big": frozenset({"uwsgi"}),
    "protocol_mismatch": frozenset({"proxy"}),
    "gunicorn_worker_timeout": frozenset({"proxy"}),
    "gunicorn_worker_killed": frozenset({"proxy"}),
}
_DIRECT_CAUSE = {
    ("worker_harakiri", "uwsgi"): "worker_harakiri",
    ("request_block_too_big", "uwsgi"): "request_block_too_big",
    ("protocol_mismatch", "uwsgi"): "protocol_mismatch",
    ("worker_timeout", "gunicorn"): "gunicorn_worker_timeout",
    ("worker_killed", "gunicorn"): "gunicorn_worker_killed",
}
# A limit the server enforces by killing the worker; the death line that follows is the same
_KILLS = frozenset({("worker_harakiri", "uwsgi"), ("worker_timeout", "gunicorn")})
_DEATHS = frozenset({("worker_died", "uwsgi"), ("worker_killed", "gunicorn")})
WATCHED = SYMPTOMS | _DIRECT_CAUSE.keys() | _DEATHS
# The facts the pairing reads (besides the line's time)
_FACTS = ("upstream", "worker_pid", "signal")
_TIME_FORMATS = {
    "nginx": ("%Y/%m/%d %H:%M:%S",),
    "uwsgi": ("%a %b %d %H:%M:%S %Y",),
    "gunicorn": ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S"),
}
_KILLED_CAP = 4096  # recently killed workers remembered (pids), oldest forgotten first
_UPSTREAMS_CAP = 16  # distinct nginx upstreams remembered per cause
# Pending events looked at per new event, oldest first: within the window the first
# compatible one pairs; past this many, queues full of events that cannot pair (other
# upstreams, a clock apart) would make every event cost a scan of all of them.
_SCAN = 32
_SPACES = re.compile(r"\s+")
_SECONDS = re.compile(r"(.*\d:\d\d):(\d\d)(.*)", re.DOTALL)
# How each slot's hits are read for the pairing, by the slot's full regex's identity
# (hashing a compiled pattern would hash its whole program)
_READINGS: dict[int, tuple[re.Pattern[bytes], _Reading]] = {}
_CACHE = 1024  # converted values remembered per slot (times, facts), then forgotten
_LINE = attrgetter("string")
_GROUPS = methodcaller("groups")
_GROUP1 = methodcaller("group", 1)


class Event(NamedTuple):
    """Classified lines: when, which (incident, source), their facts, the peer if known,
    and how many identical ones (same time and facts) were seen together."""

    time: float | None
    incident: str
    source: str
    facts: Mapping[str, Any]
    peer: str | None = None
    n: int = 1


class RootCause(NamedTuple):
    """``n`` nginx incidents explained by a backend cause (``upstream``: nginx's field)."""

    incident: str
    cause: str
    time: float | None
    upstream: str | None
    n: int = 1


def line_time(source: str, facts: Mapping[str, Any]) -> float | None:
    """The epoch time a line carries (naive formats are local time), or None."""
    text = facts.get("time")
    return _parse_time(source, text) if isinstance(text, str) else None


@functools.lru_cache(maxsize=4096)  # lines come in bursts that share a second
def _parse_time(source: str, text: str) -> float | None:
    m = _SECONDS.fullmatch(_SPACES.sub(" ", text))
    if m is None:
        return None
    minute = _minute(source, m[1], m[3])
    return None if minute is None else minute + int(m[2])


@functools.lru_cache(maxsize=1024)  # strptime is slow; a minute's seconds share its work
def _minute(source: str, head: str, tail: str) -> float | None:
    for fmt in _TIME_FORMATS.get(source, ()):
        try:
            return datetime.strptime(f"{head}:00{tail}", fmt).timestamp()
        except ValueError:
            continue
    return None


def cause_of(event: Event) -> str | None:
    """The cause a backend event stands for (None: not a backend cause)."""
    key = (event.incident, event.source)
    if key == ("worker_died", "uwsgi"):
        return "worker_oom_killed" if event.facts.get("signal") == 9 else "worker_crashed"
    return _DIRECT_CAUSE.get(key)


def kills_first(event: Event) -> bool:
    """Sort key: in one instant a worker's kill goes before its death (a block's hits are
    grouped by slot, not in line order)."""
    return (event.incident, event.source) not in _KILLS


@dataclass(slots=True, eq=False)
class _Waiting:
    """An event waiting for its pair; ``n`` of its lines are still unpaired."""

    time: float | None
    event: Event
    n: int
    seq: int
    cause: str | None = None
    upstream: Upstream | None = None


class Correlator:
    """Pairs nginx symptoms with backend causes seen within *window* seconds.

    ``counts`` is ``gw502d_root_causes_total{incident, cause}`` as plain ints; ``backend``
    counts every backend cause, explained or not; ``upstreams`` the nginx upstreams each
    cause was paired with (bounded). Unexplained symptoms kept for order matching are
    bounded per upstream scheme family.

    >>> c = Correlator()
    >>> c.observe(Event(100.0, "worker_harakiri", "uwsgi", {"worker_pid": 7}))
    []
    >>> c.observe(Event(101.0, "upstream_premature_close", "nginx",
    ...                 {"upstream": "uwsgi://127.0.0.1:3031"}, n=3))[0].n
    1
    """

    def __init__(self, window: float = DEFAULT_WINDOW, *, keep_unexplained: int = 0,
                 max_pending: int = 1024) -> None:
        self.window = window
        self.counts: dict[tuple[str, str], int] = {}
        self.backend: dict[str, int] = {}
        self.upstreams: dict[str, dict[str, int]] = {}
        self._symptoms: deque[_Waiting] = deque(maxlen=max_pending)
        self._causes: deque[_Waiting] = deque(maxlen=max_pending)
        self._keep = keep_unexplained
        self._unexplained: dict[str | None, deque[_Waiting]] = {}
        self._killed: dict[tuple[str, Any], None] = {}
        self._now = float("-inf")
        self._seq = 0

    def observe(self, event: Event) -> list[RootCause]:
        """Take one event; return the root causes it completes (usually none or one)."""
        self._seq += 1
        if (event.incident, event.source) in SYMPTOMS:
            upstream = event.facts.get("upstream")
            waiting = _Waiting(event.time if event.time is not None else self._now, event,
                               event.n, self._seq,
                               upstream=_upstream(upstream) if upstream else None)
            self._advance(waiting.time)
            found = self._pair_within(waiting, self._causes)
            if waiting.n:
                self._symptoms.append(waiting)
            return found
        cause, n = self._cause(event)
        if cause is None or not n:
            return []
        self.backend[cause] = self.backend.get(cause, 0) + n
        waiting = _Waiting(event.time, event, n, self._seq, cause)
        if waiting.time is None:
            return self._pair_by_order(waiting)
        self._advance(waiting.time)
        found = self._pair_within(waiting, self._symptoms)
        if waiting.n:
            self._causes.append(waiting)
        return found

    def observe_all(self, events: Iterable[Event]) -> list[RootCause]:
        """Take the events of one instant (a block read at once), kills first."""
        return [found for event in sorted(events, key=kills_first)
                for found in self.observe(event)]

    def by_incident(self) -> dict[str, dict[str, int]]:
        """Counts as ``{incident: {cause: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for (incident, cause), n in self.counts.items():
            out.setdefault(incident, {})[cause] = n
        return out

    def _cause(self, event: Event) -> tuple[str | None, int]:
        """The event's cause and how many of its lines are new causes: a kill seen again
        (harakiri's next try) is none, a killed worker's death is not another cause."""
        key = (event.incident, event.source)
        n = event.n
        pid = event.facts.get("worker_pid")
        if pid is not None and (key in _KILLS or key in _DEATHS):
            worker = (event.source, pid)
            if worker in self._killed:
                if key in _KILLS:
                    return None, 0
                del self._killed[worker]
                n -= 1
            elif key in _KILLS:
                n = 1  # the same kill's tries, in one instant
                self._killed[worker] = None
                if len(self._killed) > _KILLED_CAP:
                    del self._killed[next(iter(self._killed))]
        return cause_of(event), n

    def _pair_within(self, new: _Waiting, pending: deque[_Waiting]) -> list[RootCause]:
        """Pair *new* with the oldest compatible events of *pending* within the window."""
        found, used = [], []
        for i, other in enumerate(islice(pending, _SCAN)):
            symptom, cause = (new, other) if new.cause is None else (other, new)
            if _near(new, other, self.window) and _fits(symptom, cause):
                found.append(self._pair(symptom, cause))
                if not other.n:
                    used.append(i)
                if not new.n:
                    break
        for i in reversed(used):
            del pending[i]
        return found

    def _pair_by_order(self, cause: _Waiting) -> list[RootCause]:
        """An undated cause: the oldest compatible symptoms no dated event explained."""
        found = []
        while cause.n:
            best: tuple[deque[_Waiting], int, _Waiting] | None = None
            families = CAUSES[cause.cause]  # type: ignore[index]
            pools = [pool for family, pool in self._unexplained.items()
                     if family is None or family in families]
            for pool in (*pools, self._symptoms):
                for i, symptom in enumerate(islice(pool, _SCAN)):
                    if _fits(symptom, cause):
                        if best is None or symptom.seq < best[2].seq:
                            best = (pool, i, symptom)
                        break
            if best is None:
                break
            pool, i, symptom = best
            found.append(self._pair(symptom, cause))
            if not symptom.n:
                del pool[i]
        return found

    def _pair(self, symptom: _Waiting, cause: _Waiting) -> RootCause:
        assert cause.cause is not None
        n = min(symptom.n, cause.n)
        symptom.n -= n
        cause.n -= n
        key = (symptom.event.incident, cause.cause)
        self.counts[key] = self.counts.get(key, 0) + n
        upstream = symptom.event.facts.get("upstream")
        if upstream:
            seen = self.upstreams.setdefault(cause.cause, {})
            if upstream in seen or len(seen) < _UPSTREAMS_CAP:
                seen[upstream] = seen.get(upstream, 0) + n
        return RootCause(symptom.event.incident, cause.cause, symptom.time, upstream, n)

    def _advance(self, now: float | None) -> None:
        """Forget what is older than the window; unexplained symptoms wait for order matching."""
        if now is None or now <= self._now:
            return
        self._now = now
        horizon = now - self.window
        while self._symptoms and _before(self._symptoms[0], horizon):
            gone = self._symptoms.popleft()
            if self._keep:
                family = gone.upstream.family if gone.upstream is not None else None
                pool = self._unexplained.get(family)
                if pool is None:
                    pool = self._unexplained[family] = deque(maxlen=self._keep)
                pool.append(gone)
        while self._causes and _before(self._causes[0], horizon):
            self._causes.popleft()


def _before(waiting: _Waiting, horizon: float) -> bool:
    return waiting.time is not None and waiting.time < horizon


@functools.lru_cache(maxsize=1024)  # a host has few upstreams
def _upstream(text: str) -> Upstream:
    return Upstream.parse(text)


def _near(a: _Waiting, b: _Waiting, window: float) -> bool:
    return a.time is not None and b.time is not None and abs(a.time - b.time) <= window


def _fits(symptom: _Waiting, cause: _Waiting) -> bool:
    """Same upstream as far as it can be told: scheme family, then the peer if known."""
    up = symptom.upstream
    if up is None:  # nginx cut the line before its upstream field
        return True
    assert cause.cause is not None
    peer = cause.event.peer
    return up.family in CAUSES[cause.cause] and (peer is None or peer == up.peer)


def to_events(key: tuple[str, str], slot: Slot, matches: list[re.Match[bytes]],
              when: float | None, *, dated: bool) -> list[Event]:
    """The :class:`Event`\\ s of one slot's hits of *key*, identical lines counted once.

    With *dated* the time is each line's own and *when* stands in for lines without one;
    otherwise (the daemon) every line is *when*, its arrival.
    """
    reading = _reading(slot)
    raws = reading.raws(matches)
    if dated:
        found = Counter(zip(reading.times(matches), raws, strict=True))
    else:
        found = Counter(zip(repeat(None), raws))
    events = []
    for (stamp, raw), n in found.items():
        t = reading.time(key[1], stamp)
        events.append(Event(when if t is None else t, key[0], key[1], reading.facts(raw), n=n))
    return events


class _Reading:
    """How to read the pairing's facts from the hits of one slot (built once per slot).

    From the hot match's own groups when it captured them (nginx's upstream), else with the
    slot's line shape compiled again capturing just those (nginx's strict context optional,
    as in the hot regex); the time from the family's prefix. Iterating is left to C
    (``map`` over compiled matchers and ``methodcaller``); converting is done per distinct
    value and remembered.
    """

    def __init__(self, slot: Slot) -> None:
        fam = slot.family
        parts = [slot.message] + ([fam.evidence_context] if fam.evidence_context else [])
        needs = [name for part in parts for name in part.names if name in _FACTS]
        hot = dict(zip((name for name, _ in slot.hot), slot.hot_groups, strict=True))
        self._pattern: re.Pattern[bytes] | None = None
        if all(name in hot for name in needs):
            self.captures = tuple(c for c in slot.hot if c[0] in needs)
            self._read = reader(tuple(hot[name] for name, _ in self.captures))
        else:
            message = slot.message.keeping(needs)
            regex = fam.prefix.keeping(()).regex + message.regex
            self.captures = message.captures
            if fam.evidence_context is not None:
                context = fam.evidence_context.keeping(needs)
                regex += f"(?:{context.regex})?"
                self.captures += context.captures
            self._pattern = re.compile(regex.encode(), re.DOTALL)
        prefix = fam.prefix.keeping({"time"})
        self._time = re.compile(prefix.regex.encode(), re.DOTALL) if prefix.captures else None
        self._facts: dict[tuple[bytes | None, ...], dict[str, Any]] = {}
        self._times: dict[bytes, float | None] = {}

    def raws(self, matches: list[re.Match[bytes]]) -> list[tuple[bytes | None, ...]]:
        """The raw facts of each hit."""
        if self._pattern is None:
            return list(map(self._read, matches))
        lines = map(_LINE, matches)
        try:
            return list(map(_GROUPS, map(self._pattern.match, lines)))
        except AttributeError:  # pragma: no cover - the hot regex matched the same shape
            missing = (None,) * len(self.captures)
            return [missing if m is None else m.groups()
                    for m in map(self._pattern.match, map(_LINE, matches))]

    def times(self, matches: list[re.Match[bytes]]) -> Iterable[bytes | None]:
        """The time text of each hit (None: the line has none)."""
        if self._time is None:
            return repeat(None, len(matches))
        try:  # the prefix matched in the hot regex, it matches here
            return list(map(_GROUP1, map(self._time.match, map(_LINE, matches))))
        except AttributeError:  # pragma: no cover
            return [None if m is None else m.group(1)
                    for m in map(self._time.match, map(_LINE, matches))]

    def time(self, source: str, stamp: bytes | None) -> float | None:
        if stamp is None:
            return None
        t = self._times.get(stamp, False)
        if t is False:
            if len(self._times) >= _CACHE:
                self._times.clear()
            t = self._times[stamp] = _parse_time(source, decode(stamp))
        return t

    def facts(self, raw: tuple[bytes | None, ...]) -> dict[str, Any]:
        facts = self._facts.get(raw)
        if facts is None:
            if len(self._facts) >= _CACHE:
                self._facts.clear()
            facts = self._facts[raw] = convert(self.captures, raw)
        return facts


def _reading(slot: Slot) -> _Reading:
    known = _READINGS.get(id(slot.full))
    if known is not None and known[0] is slot.full:
        return known[1]
    reading = _Reading(slot)
    _READINGS[id(slot.full)] = (slot.full, reading)
    return reading


class LineCorrelator:
    """The daemon's root-cause hook (``gw502d.daemon.counters.Correlator``): called in the
    follower's thread with each block's hits of the incidents it pairs, it adds the root
    causes found to the daemon's ``causes[(incident, cause)]`` (``gw502d_root_causes_total``).

    ``correlator`` holds what the advice needs (:class:`~gw502d.remediate.Context`).
    """

    watched = WATCHED

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.correlator = Correlator(window)

    def observe(self, keys: Sequence[tuple[str, str]], runs: Runs, when: float,
                causes: dict[tuple[str, str], int]) -> None:
        # The daemon reads lines as they are written: their arrival is a clock all logs
        # share, whatever their own time zone, format, or lack of a time.
        events = [event for k, slot, matches in runs
                  for event in to_events(keys[k], slot, matches, when, dated=False)]
        for found in self.correlator.observe_all(events):
            pair = (found.incident, found.cause)
            causes[pair] = causes.get(pair, 0) + found.n


class Timeline:
    """A scan's events, kept until every file is read, then replayed in time order.

    Merge-sorting the events, not the files: an nginx error log and a uWSGI log cover the
    same hours, so whole files in any order would never put an event next to its cause.
    Memory: one small tuple per distinct event, at most *limit* (``dropped`` counts the
    lines of more).
    """

    def __init__(self, limit: int = 500_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._dated: list[tuple[float, bool, int, Event]] = []
        self._undated: list[Event] = []

    def hook(self, keys: Sequence[tuple[str, str]]) -> OnWatched:
        """The ``on_watched`` hook of the scan's :class:`~gw502d.classify.tally.Tally`."""

        def on_watched(runs: Runs) -> None:
            for k, slot, matches in runs:
                for event in to_events(keys[k], slot, matches, None, dated=True):
                    self.add(event)

        return on_watched

    def add(self, event: Event) -> None:
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
