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
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from gw502d.classify.matcher import Captures, Classifier, Slot
from gw502d.classify.tally import OnHit
from gw502d.parse.record import decode
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
# The facts the pairing reads (and the line's time)
_FACTS = frozenset({"time", "upstream", "worker_pid", "signal"})
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
# The pairing's own regex of each slot, by the slot's full regex's identity (hashing a
# compiled pattern hashes its whole program)
_GROUPS: dict[int, tuple[re.Pattern[bytes], re.Pattern[bytes], Captures]] = {}


class Event(NamedTuple):
    """A classified line: when, which (incident, source), its facts, the peer if known."""

    time: float | None
    incident: str
    source: str
    facts: Mapping[str, Any]
    peer: str | None = None


class RootCause(NamedTuple):
    """An nginx incident explained by a backend event (``upstream`` is nginx's field)."""

    incident: str
    cause: str
    time: float | None
    upstream: str | None


def line_time(source: str, facts: Mapping[str, Any]) -> float | None:
    """The epoch time a line carries (naive formats are local time), or None."""
    text = facts.get("time")
    return _parse_time(source, text) if isinstance(text, str) else None


@functools.lru_cache(maxsize=4096)  # lines come in bursts that share a second
def _parse_time(source: str, text: str) -> float | None:
    for fmt in _TIME_FORMATS.get(source, ()):
        try:
            return datetime.strptime(_SPACES.sub(" ", text), fmt).timestamp()
        except ValueError:
            continue
    return None


def cause_of(event: Event) -> str | None:
    """The cause a backend event stands for (None: not a backend cause)."""
    key = (event.incident, event.source)
    if key == ("worker_died", "uwsgi"):
        return "worker_oom_killed" if event.facts.get("signal") == 9 else "worker_crashed"
    return _DIRECT_CAUSE.get(key)


@dataclass(slots=True)
class _Waiting:
    time: float | None
    event: Event
    cause: str | None = None
    upstream: Upstream | None = None


class Correlator:
    """Pairs nginx symptoms with backend causes seen within *window* seconds.

    ``counts`` is ``gw502d_root_causes_total{incident, cause}`` as plain ints; ``backend``
    counts every backend cause, explained or not; ``upstreams`` the nginx upstreams each
    cause was paired with (bounded).

    >>> c = Correlator()
    >>> c.observe(Event(100.0, "worker_harakiri", "uwsgi", {"worker_pid": 7}))
    []
    >>> c.observe(Event(101.0, "upstream_premature_close", "nginx",
    ...                 {"upstream": "uwsgi://127.0.0.1:3031"}))[0].cause
    'worker_harakiri'
    """

    def __init__(self, window: float = DEFAULT_WINDOW, *, keep_unexplained: int = 0,
                 max_pending: int = 1024) -> None:
        self.window = window
        self.counts: dict[tuple[str, str], int] = {}
        self.backend: dict[str, int] = {}
        self.upstreams: dict[str, dict[str, int]] = {}
        self._symptoms: deque[_Waiting] = deque(maxlen=max_pending)
        self._causes: deque[_Waiting] = deque(maxlen=max_pending)
        self._unexplained: deque[_Waiting] = deque(maxlen=keep_unexplained)
        self._killed: dict[tuple[str, Any], None] = {}
        self._now = float("-inf")

    def observe(self, event: Event) -> list[RootCause]:
        """Take one event; return the root causes it completes (usually none or one)."""
        if (event.incident, event.source) in SYMPTOMS:
            return self._symptom(event)
        cause = self._cause(event)
        if cause is None:
            return []
        self.backend[cause] = self.backend.get(cause, 0) + 1
        return self._explain(_Waiting(event.time, event, cause))

    def by_incident(self) -> dict[str, dict[str, int]]:
        """Counts as ``{incident: {cause: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for (incident, cause), n in self.counts.items():
            out.setdefault(incident, {})[cause] = n
        return out

    def _cause(self, event: Event) -> str | None:
        """The event's cause, or None when it repeats a kill already seen (same worker)."""
        key = (event.incident, event.source)
        pid = event.facts.get("worker_pid")
        if pid is not None and (key in _KILLS or key in _DEATHS):
            worker = (event.source, pid)
            if worker in self._killed:
                if key in _DEATHS:
                    del self._killed[worker]
                return None
            if key in _KILLS:
                self._killed[worker] = None
                if len(self._killed) > _KILLED_CAP:
                    del self._killed[next(iter(self._killed))]
        return cause_of(event)

    def _symptom(self, event: Event) -> list[RootCause]:
        upstream = event.facts.get("upstream")
        waiting = _Waiting(event.time if event.time is not None else self._now, event,
                           upstream=_upstream(upstream) if upstream else None)
        self._advance(waiting.time)
        for cause in itertools.islice(self._causes, _SCAN):
            if _near(waiting, cause, self.window) and _fits(waiting, cause):
                self._causes.remove(cause)
                return [self._pair(waiting, cause)]
        self._symptoms.append(waiting)
        return []

    def _explain(self, cause: _Waiting) -> list[RootCause]:
        if cause.time is None:  # by order: the oldest symptom no dated event explained
            for pool in (self._unexplained, self._symptoms):
                for symptom in pool:
                    if _fits(symptom, cause):
                        pool.remove(symptom)
                        return [self._pair(symptom, cause)]
            return []
        self._advance(cause.time)
        for symptom in itertools.islice(self._symptoms, _SCAN):
            if _near(symptom, cause, self.window) and _fits(symptom, cause):
                self._symptoms.remove(symptom)
                return [self._pair(symptom, cause)]
        self._causes.append(cause)
        return []

    def _pair(self, symptom: _Waiting, cause: _Waiting) -> RootCause:
        assert cause.cause is not None
        key = (symptom.event.incident, cause.cause)
        self.counts[key] = self.counts.get(key, 0) + 1
        upstream = symptom.event.facts.get("upstream")
        if upstream:
            seen = self.upstreams.setdefault(cause.cause, {})
            if upstream in seen or len(seen) < _UPSTREAMS_CAP:
                seen[upstream] = seen.get(upstream, 0) + 1
        return RootCause(symptom.event.incident, cause.cause, symptom.time, upstream)

    def _advance(self, now: float | None) -> None:
        """Forget what is older than the window; unexplained symptoms wait for order matching."""
        if now is None or now <= self._now:
            return
        self._now = now
        horizon = now - self.window
        while self._symptoms and _before(self._symptoms[0], horizon):
            gone = self._symptoms.popleft()
            if self._unexplained.maxlen:
                self._unexplained.append(gone)
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


def to_event(key: tuple[str, str], slot: Slot, line: bytes, when: float | None, *,
             arrival: bool = False) -> Event | None:
    """The :class:`Event` of an incident line the correlation needs, else None (cheap).

    Its time is the line's own; *when* (the daemon's arrival time) stands in for lines
    without one, or for every line with *arrival*. Only the facts the pairing reads are
    matched and converted: the slot's templates compiled again capturing just those (once
    per slot, cached).
    """
    if key not in WATCHED:
        return None
    pattern, captures = _pairing_regex(slot)
    m = pattern.match(line)
    if m is None:  # pragma: no cover - the hot regex matched the same line
        return None
    facts: dict[str, Any] = {}
    for group, (name, convert) in enumerate(captures, 1):
        raw = m.group(group)
        if raw is not None:
            try:
                facts[name] = convert(decode(raw))
            except (KeyError, ValueError):
                facts[name] = decode(raw)
    stamped = None if arrival else line_time(key[1], facts)
    facts.pop("time", None)
    return Event(when if stamped is None else stamped, key[0], key[1], facts)


def _pairing_regex(slot: Slot) -> tuple[re.Pattern[bytes], Captures]:
    """The slot's line shape capturing only the pairing's facts (nginx's strict context,
    optional, as in the hot regex), keyed by the slot's full regex."""
    known = _GROUPS.get(id(slot.full))
    if known is not None and known[0] is slot.full:
        return known[1], known[2]
    fam = slot.family
    parts = [fam.prefix.keeping(_FACTS), slot.message.keeping(_FACTS)]
    regex = parts[0].regex + parts[1].regex
    captures = parts[0].captures + parts[1].captures
    if fam.evidence_context is not None:
        context = fam.evidence_context.keeping(_FACTS)
        regex += f"(?:{context.regex})?"
        captures += context.captures
    pattern = re.compile(regex.encode(), re.DOTALL)
    _GROUPS[id(slot.full)] = (slot.full, pattern, captures)
    return pattern, captures


class LineCorrelator:
    """The daemon's root-cause hook (``gw502d.daemon.counters.Correlator``): called for
    every incident hit in the follower's thread, it adds the root causes found to the
    daemon's ``causes[(incident, cause)]`` (``gw502d_root_causes_total``).

    ``correlator`` holds what the advice needs (:class:`~gw502d.remediate.Context`).
    """

    watched = WATCHED

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.correlator = Correlator(window)

    def observe(self, key: tuple[str, str], slot: Slot, line: bytes, when: float,
                causes: dict[tuple[str, str], int]) -> None:
        # The daemon reads lines as they are written: their arrival is a clock all logs
        # share, whatever their own time zone, format, or lack of a time.
        event = to_event(key, slot, line, when, arrival=True)
        if event is None:
            return
        for found in self.correlator.observe(event):
            pair = (found.incident, found.cause)
            causes[pair] = causes.get(pair, 0) + 1


class Timeline:
    """A scan's events, kept until every file is read, then replayed in time order.

    Merge-sorting the events, not the files: an nginx error log and a uWSGI log cover the
    same hours, so whole files in any order would never put an event next to its cause.
    Memory: one small tuple per watched event, at most *limit* (``dropped`` counts more).
    """

    def __init__(self, limit: int = 500_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._dated: list[tuple[float, int, Event]] = []
        self._undated: list[Event] = []

    def hook(self, classifier: Classifier) -> OnHit:
        """The ``on_hit`` hook of the scan's :class:`~gw502d.classify.tally.Tally`."""
        keys = classifier.catalog.keys

        def on_hit(k: int, slot: Slot, m: re.Match[bytes]) -> None:
            event = to_event(keys[k], slot, m.string, None)
            if event is not None:
                self.add(event)

        return on_hit

    def add(self, event: Event) -> None:
        if len(self._dated) + len(self._undated) >= self.limit:
            self.dropped += 1
        elif event.time is None:
            self._undated.append(event)
        else:
            self._dated.append((event.time, len(self._dated), event))

    def correlate(self, window: float = DEFAULT_WINDOW) -> Correlator:
        """Replay dated events by time, then undated ones in file order (order matching)."""
        correlator = Correlator(window, keep_unexplained=self.limit)
        for _, _, event in sorted(self._dated, key=lambda e: (e[0], e[1])):
            correlator.observe(event)
        for event in self._undated:
            correlator.observe(event)
        return correlator
