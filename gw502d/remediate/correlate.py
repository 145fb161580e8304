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

Work is per distinct event, not per line (:mod:`gw502d.classify.events`): an
:class:`Event` stands for ``n`` identical lines and pairs as many symptoms at once. The
stages that feed this from blocks are in :mod:`gw502d.remediate.root_causes`.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple

from gw502d.classify.events import Event
from gw502d.classify.keys import nest
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
_KILLED_CAP = 4096  # recently killed workers remembered (pids), oldest forgotten first
_UPSTREAMS_CAP = 16  # distinct nginx upstreams remembered per cause
# Pending events looked at per new event, oldest first: within the window the first
# compatible one pairs; past this many, queues full of events that cannot pair (other
# upstreams, a clock apart) would make every event cost a scan of all of them.
_SCAN = 32


# gw502d_root_causes_total{incident, cause}: every pair exists from the start at 0, so
# alerts and dashboards see a series before the first cause is found
ROOT_CAUSE_PAIRS = tuple((incident, cause) for incident, _ in sorted(SYMPTOMS)
                         for cause in CAUSES)


class RootCause(NamedTuple):
    """``n`` nginx incidents explained by a backend cause (``upstream``: nginx's field)."""

    incident: str
    cause: str
    time: float | None
    upstream: str | None
    n: int = 1


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
        return nest(self.counts)

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
