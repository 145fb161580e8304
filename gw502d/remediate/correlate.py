"""Root causes across logs: nginx's view of a failed request joined with the backend's.

nginx only says *that* its upstream closed, reset, refused or timed out; uWSGI and gunicorn
say *why*: harakiri, a worker killed by signal 9 (likely the OOM killer) or crashed, a
request too big for ``buffer-size``, HTTP sent to a uwsgi socket, an app that never
loaded... A backend event close in time to an nginx symptom it can explain, on the same
upstream where that can be told, is that symptom's root cause. A wrong root cause sends
the on-call engineer the wrong way, so the rules would rather leave a symptom unpaired:

- a cause explains only the symptoms it can produce (:data:`CAUSES`; a request refused
  for its size is reset at once, it never times out), and prefers the first of them;
- the nginx upstream's scheme must fit the backend (a too-big uwsgi packet only behind
  ``uwsgi://``, HTTP on a uwsgi socket only behind ``http://``, gunicorn only behind
  ``http(s)://``); when the event names its peer it must be nginx's peer; a symptom whose
  upstream field cannot be trusted (a line nginx cut) fits only a cause behind any scheme;
- one backend event explains one symptom; lasting causes (an app that failed to load, an
  address in use) explain every fitting symptom for :data:`LASTING` seconds after them;
- time: within ``window`` seconds. The daemon reads lines as they are written, so their
  arrival is the clock of every log. ``scan`` has only the lines' own times: an undated
  uWSGI line (no ``log-date``) gets the span between the dated lines around it in its own
  log (:attr:`Event.span`), and pairs only with a symptom inside it; with no dated line
  around it, it stays unpaired.

The pairing facts come from :mod:`gw502d.classify.events`; the stages that feed this from
blocks are in :mod:`gw502d.remediate.root_causes`. The audit's ``[[pairing]]`` tables
(``patterns/audit/*.toml``) say why each backend incident explains what it does.
"""

from __future__ import annotations

import bisect
import functools
import heapq
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count, islice
from operator import itemgetter
from typing import Any, NamedTuple

from gw502d.classify.events import Event
from gw502d.classify.keys import nest
from gw502d.remediate.nginx import Upstream

DEFAULT_WINDOW = 5.0
LASTING = 60.0  # how long a startup failure explains the refusals that follow it
_SECOND = 1.0  # nginx's timestamps are to the second

_CLOSE, _RESET, _TIMEOUT = "upstream_premature_close", "upstream_reset", "upstream_timeout"
_REFUSED, _MISSING, _NONE_LIVE = ("upstream_connect_refused", "upstream_socket_missing",
                                  "no_live_upstreams")
_BACKLOG, _INVALID = "upstream_backlog_full", "upstream_invalid_header"
_UWSGI_OR_HTTP = frozenset({"uwsgi", "proxy"})  # uWSGI serves http-socket too
_HTTP = frozenset({"proxy"})
_FIRST_FAMILY = {"uwsgi": "uwsgi", "gunicorn": "proxy"}
_FIRST = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Cause:
    """A backend cause: the nginx incidents it explains (the first preferred), the nginx
    module families it can sit behind, and whether it lasts (a state, not an event)."""

    explains: tuple[str, ...]
    families: frozenset[str]
    lasting: bool = False


# Every cause: a bounded label set (gw502d_root_causes_total{incident, cause})
CAUSES: dict[str, Cause] = {
    "worker_harakiri": Cause((_CLOSE, _TIMEOUT), _UWSGI_OR_HTTP),
    "worker_oom_killed": Cause((_CLOSE, _RESET), _UWSGI_OR_HTTP),
    "worker_crashed": Cause((_CLOSE, _RESET), _UWSGI_OR_HTTP),
    "worker_memory_killed": Cause((_CLOSE, _RESET), _UWSGI_OR_HTTP),
    "request_block_too_big": Cause((_RESET, _CLOSE), frozenset({"uwsgi"})),
    "protocol_mismatch": Cause((_CLOSE, _RESET), _HTTP),
    "http_request_too_big": Cause((_RESET,), _HTTP),
    "modifier_unavailable": Cause((_CLOSE,), frozenset({"uwsgi"})),
    "router_connect_failed": Cause((_CLOSE,), _HTTP),
    "listen_queue_full": Cause((_TIMEOUT, _BACKLOG), _UWSGI_OR_HTTP),
    "workers_respawning_too_fast": Cause((_CLOSE, _TIMEOUT, _BACKLOG), _UWSGI_OR_HTTP),
    "app_load_failed": Cause((_REFUSED, _MISSING, _NONE_LIVE), _UWSGI_OR_HTTP, lasting=True),
    "address_in_use": Cause((_REFUSED, _INVALID, _CLOSE), _UWSGI_OR_HTTP, lasting=True),
    "gunicorn_worker_timeout": Cause((_CLOSE, _TIMEOUT), _HTTP),
    "gunicorn_worker_killed": Cause((_CLOSE, _RESET), _HTTP),
    "gunicorn_worker_crashed": Cause((_CLOSE, _RESET), _HTTP),
    "gunicorn_worker_exited": Cause((_CLOSE, _RESET), _HTTP),
    "gunicorn_app_load_failed": Cause((_REFUSED, _MISSING, _NONE_LIVE), _HTTP, lasting=True),
    "gunicorn_worker_boot_failed": Cause((_REFUSED, _MISSING, _NONE_LIVE), _HTTP,
                                         lasting=True),
    "gunicorn_address_in_use": Cause((_REFUSED, _INVALID, _CLOSE), _HTTP, lasting=True),
}
# The backend incidents that stand for a cause (uWSGI's worker_died is either an OOM kill
# or a crash, told by its signal)
CAUSE_OF_INCIDENT = {
    ("worker_harakiri", "uwsgi"): "worker_harakiri",
    ("worker_crashed", "uwsgi"): "worker_crashed",
    ("worker_memory_killed", "uwsgi"): "worker_memory_killed",
    ("request_block_too_big", "uwsgi"): "request_block_too_big",
    ("protocol_mismatch", "uwsgi"): "protocol_mismatch",
    ("http_request_too_big", "uwsgi"): "http_request_too_big",
    ("modifier_unavailable", "uwsgi"): "modifier_unavailable",
    ("router_connect_failed", "uwsgi"): "router_connect_failed",
    ("listen_queue_full", "uwsgi"): "listen_queue_full",
    ("workers_respawning_too_fast", "uwsgi"): "workers_respawning_too_fast",
    ("app_load_failed", "uwsgi"): "app_load_failed",
    ("address_in_use", "uwsgi"): "address_in_use",
    ("worker_timeout", "gunicorn"): "gunicorn_worker_timeout",
    ("worker_killed", "gunicorn"): "gunicorn_worker_killed",
    ("worker_crashed", "gunicorn"): "gunicorn_worker_crashed",
    ("worker_exited", "gunicorn"): "gunicorn_worker_exited",
    ("app_load_failed", "gunicorn"): "gunicorn_app_load_failed",
    ("worker_boot_failed", "gunicorn"): "gunicorn_worker_boot_failed",
    ("address_in_use", "gunicorn"): "gunicorn_address_in_use",
}
# how many nginx incidents a cause explains at most (the passes of offline pairing)
PREFERENCES = max(len(cause.explains) for cause in CAUSES.values())
# nginx incidents a backend event can explain
SYMPTOMS = frozenset((incident, "nginx") for cause in CAUSES.values()
                     for incident in cause.explains)
# the incidents whose hits the pairing reads
WATCHED = SYMPTOMS | CAUSE_OF_INCIDENT.keys() | {("worker_died", "uwsgi")}
# gw502d_root_causes_total{incident, cause}: every pair that can happen exists from the
# start at 0, so alerts and dashboards see a series before the first cause is found
ROOT_CAUSE_PAIRS = tuple(sorted((incident, name) for name, cause in CAUSES.items()
                                for incident in cause.explains))
_KILLS = frozenset({("worker_harakiri", "uwsgi"), ("worker_timeout", "gunicorn")})
_KILLED_CAP = 4096  # recently killed workers remembered (pids), oldest forgotten first
_UPSTREAMS_CAP = 16  # distinct nginx upstreams remembered per cause
# Pending events looked at per new event, oldest first: queues full of events that
# cannot pair (other upstreams, a clock apart) must not make every event cost them all.
_SCAN = 32


class RootCause(NamedTuple):
    """``n`` nginx incidents explained by a backend cause (``upstream``: nginx's field;
    ``time``: the nginx line's)."""

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
    return CAUSE_OF_INCIDENT.get(key)


def is_symptom(event: Event) -> bool:
    return (event.incident, event.source) in SYMPTOMS


@dataclass(slots=True, eq=False)
class _Waiting:
    """An event waiting for its pair; ``n`` of its lines are still unpaired."""

    time: float
    event: Event
    n: int
    cause: str | None = None
    upstream: Upstream | None = None

    @property
    def lasting(self) -> bool:
        """A startup failure: it explains every symptom within reach, not one."""
        return self.cause is not None and CAUSES[self.cause].lasting


@dataclass(slots=True)
class Pairing:
    """What pairing found: ``counts`` is ``gw502d_root_causes_total{incident, cause}`` as
    plain ints, ``backend`` every backend cause seen (explained or not), ``upstreams`` the
    nginx upstreams each cause was paired with (bounded); ``found``, offline only, each
    pair made."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    backend: dict[str, int] = field(default_factory=dict)
    upstreams: dict[str, dict[str, int]] = field(default_factory=dict)
    found: list[RootCause] = field(default_factory=list)  # a scan's pairs, one by one
    _killed: dict[tuple[str, Any], None] = field(default_factory=dict)

    def by_incident(self) -> dict[str, dict[str, int]]:
        """Counts as ``{incident: {cause: n}}``."""
        return nest(self.counts)

    def _cause(self, event: Event) -> tuple[str | None, int]:
        """The event's cause and how many of its lines are new causes: a kill tried again
        (harakiri's next try, the same worker) is none."""
        key = (event.incident, event.source)
        n = event.n
        pid = event.facts.get("worker_pid")
        if pid is not None and key in _KILLS:
            worker = (event.source, pid)
            if worker in self._killed:
                return None, 0
            n = 1  # the same kill's tries, in one instant
            self._killed[worker] = None
            if len(self._killed) > _KILLED_CAP:
                del self._killed[next(iter(self._killed))]
        cause = cause_of(event)
        if cause is not None and n:
            self.backend[cause] = self.backend.get(cause, 0) + n
        return cause, n

    def _pair(self, symptom: _Waiting, cause: _Waiting) -> RootCause:
        assert cause.cause is not None
        n = symptom.n if cause.lasting else min(symptom.n, cause.n)
        symptom.n -= n
        if not cause.lasting:
            cause.n -= n
        key = (symptom.event.incident, cause.cause)
        self.counts[key] = self.counts.get(key, 0) + n
        upstream = symptom.event.facts.get("upstream")
        if upstream:
            seen = self.upstreams.setdefault(cause.cause, {})
            if upstream in seen or len(seen) < _UPSTREAMS_CAP:
                seen[upstream] = seen.get(upstream, 0) + n
        return RootCause(symptom.event.incident, cause.cause, symptom.time, upstream, n)


class Correlator(Pairing):
    """Pairs nginx symptoms with backend causes as events arrive (the daemon).

    >>> c = Correlator()
    >>> c.observe(Event(100.0, "worker_harakiri", "uwsgi", {"worker_pid": 7}))
    []
    >>> c.observe(Event(101.0, "upstream_premature_close", "nginx",
    ...                 {"upstream": "uwsgi://127.0.0.1:3031"}, n=3))[0].n
    1
    """

    def __init__(self, window: float = DEFAULT_WINDOW, *, max_pending: int = 1024) -> None:
        super().__init__()
        self.window = window
        self._symptoms: deque[_Waiting] = deque(maxlen=max_pending)
        self._causes: deque[_Waiting] = deque(maxlen=max_pending)
        self._lasting: deque[_Waiting] = deque(maxlen=max_pending)  # startup failures
        self._now = float("-inf")

    def observe(self, event: Event) -> list[RootCause]:
        """Take one event; return the root causes it completes (usually none or one)."""
        time = event.time if event.time is not None else self._now
        self._advance(time)
        if is_symptom(event):
            upstream = event.facts.get("upstream")
            waiting = _Waiting(time, event, event.n,
                               upstream=_upstream(upstream) if upstream else None)
            found = self._pair_with(waiting, self._causes)
            if waiting.n:
                found += self._pair_with(waiting, self._lasting)
            if waiting.n:
                self._symptoms.append(waiting)
            return found
        cause, n = self._cause(event)
        if cause is None or not n:
            return []
        waiting = _Waiting(time, event, n, cause)
        found = self._pair_with(waiting, self._symptoms)
        if CAUSES[cause].lasting:
            self._lasting.append(waiting)
        elif waiting.n:
            self._causes.append(waiting)
        return found

    def observe_all(self, events: Iterable[Event]) -> list[RootCause]:
        """Take the events of one instant (a block read at once): the symptoms first, so
        a cause chooses among all of them, and kills before deaths."""
        return [found for event in sorted(events, key=_order)
                for found in self.observe(event)]

    def _pair_with(self, new: _Waiting, pending: deque[_Waiting]) -> list[RootCause]:
        """Pair *new* with fitting events of *pending* within the window: a new symptom
        with the oldest causes, a new cause with its preferred symptoms, oldest first."""
        candidates = self._fitting(new, pending)
        if new.cause is not None:
            explains = CAUSES[new.cause].explains
            candidates.sort(key=lambda c: explains.index(c[1].event.incident))
        found, used = [], []
        for i, other in candidates:
            symptom, cause = (new, other) if new.cause is None else (other, new)
            found.append(self._pair(symptom, cause))
            if not other.n:
                used.append(i)
            if not new.n:
                break
        for i in sorted(used, reverse=True):
            del pending[i]
        return found

    def _fitting(self, new: _Waiting, pending: deque[_Waiting]) -> list[tuple[int, _Waiting]]:
        """The pending events (of the first :data:`_SCAN`, oldest first) that pair with
        *new*: the symptom one a cause explains, on its upstream, within its reach. Written
        out in one loop: a storm asks it for every event."""
        window = self.window
        found = []
        for i, other in enumerate(islice(pending, _SCAN)):
            symptom, cause = (new, other) if new.cause is None else (other, new)
            kind = CAUSES[cause.cause]  # type: ignore[index]
            if symptom.event.incident in kind.explains and (
                    0 <= symptom.time - cause.time <= LASTING if kind.lasting
                    else abs(symptom.time - cause.time) <= window) and _fits_upstream(
                        symptom.upstream, cause):
                found.append((i, other))
        return found

    def _advance(self, now: float) -> None:
        """Forget what is too old to pair."""
        if now <= self._now:
            return
        self._now = now
        horizon = now - self.window
        for pending, since in ((self._symptoms, horizon), (self._causes, horizon),
                               (self._lasting, now - LASTING)):
            while pending and pending[0].time < since:
                pending.popleft()


def pair_offline(events: Sequence[Event], window: float = DEFAULT_WINDOW) -> Pairing:
    """Pair a scan's events, all known at once (:class:`~gw502d.remediate.root_causes.
    Timeline`). Every fitting (cause, symptom) within reach is a candidate: a dated cause
    reaches the window around its time, an undated one its span (nginx wrote its line in
    the same second). The best candidates pair first, over all causes at once: the
    symptom the cause explains best, a dated cause before an undated one, the closest in
    time, on the protocol the backend most often speaks; so no cause takes a symptom
    another explains better. An undated cause without a span stays unpaired.

    Exact and unbounded: each cause walks outward from its time through the symptoms it
    fits (grouped by incident and upstream, taken ones skipped), one step per pop of a
    heap, so a storm costs O((causes + pairs) log causes), not a window's worth per cause.
    The symptoms a cause explains best all pair before the next best, so each preference
    is a pass of its own: a cause paired in one starts no walk in the next (in a storm,
    most causes pair in the first)."""
    pairing = Pairing()
    sides = offline_sides(events, pairing, window)
    for preference in range(PREFERENCES):
        heap = [entry for reach in offline_reaches(sides, preference)
                if (entry := reach.step()) is not None]
        heapq.heapify(heap)
        while heap:
            reach = heapq.heappop(heap)[-1]
            waiting, symptom = reach.cause, reach.group.found[reach.at]
            if not (waiting.n or waiting.lasting):
                continue
            if symptom.n:
                pairing.found.append(pairing._pair(symptom, waiting))
                if not symptom.n:
                    reach.group.taken(reach.at)
            if (waiting.n or waiting.lasting) and (entry := reach.step()) is not None:
                heapq.heappush(heap, entry)
    return pairing


class Sides(NamedTuple):
    """A scan's events ready to pair: the causes in time order, each with the times it
    reaches and the incidents it explains (best first), and the symptoms grouped by
    incident and upstream."""

    causes: list[tuple[float, float, _Waiting, tuple[str, ...]]]
    groups: dict[str, list[_Group]]


def offline_sides(events: Sequence[Event], pairing: Pairing,
                  window: float = DEFAULT_WINDOW) -> Sides:
    """The causes and symptoms of a scan's *events*, before any pairing (*pairing* counts
    the causes)."""
    causes: list[tuple[float, float, _Waiting, tuple[str, ...]]] = []
    for event in sorted((e for e in events if (e.incident, e.source) not in SYMPTOMS),
                        key=_order_offline):
        cause, n = pairing._cause(event)
        if cause is None or not n:
            continue
        if event.time is not None:
            low, high, slack = event.time, event.time, window
        elif event.span is not None:
            low, high = event.span
            slack = _SECOND
        else:
            continue
        kind = CAUSES[cause]
        causes.append((low - (0 if kind.lasting else slack),
                       high + (LASTING if kind.lasting else slack),
                       _Waiting(high, event, n, cause), kind.explains))
    # a storm's symptoms: the most events by far, sorted by time alone (stable: as
    # sorting them among the causes would)
    symptoms = [_Waiting(t, e, e.n, None, _upstream(up) if (up := e.facts.get("upstream"))
                         else None)
                for t, e in sorted(((e.time, e) for e in events if e.time is not None
                                    and (e.incident, e.source) in SYMPTOMS), key=_FIRST)]
    found: dict[tuple[str, Upstream | None], list[_Waiting]] = {}
    for s in symptoms:  # in time order: each group is sorted
        found.setdefault((s.event.incident, s.upstream), []).append(s)
    groups: dict[str, list[_Group]] = {}
    for (incident, upstream), same in found.items():
        groups.setdefault(incident, []).append(_Group(upstream, same))
    return Sides(causes, groups)


def offline_reaches(sides: Sides, preference: int) -> list[_Reach]:
    """The walks of one pass: every cause with lines left to pair (or lasting) through
    each group of the incident it explains *preference*-th best that it fits; ties go to
    the earlier cause."""
    order = count()
    return [_Reach(group, waiting, next(order), (low, high))
            for low, high, waiting, explains in sides.causes
            if preference < len(explains) and (waiting.n or waiting.lasting)
            for group in sides.groups.get(explains[preference], ())
            if _fits_upstream(group.upstream, waiting)]


class _Group:
    """A scan's symptoms of one incident on one upstream, in time order. Every one of them
    fits a cause the group fits, and taken ones are skipped in near-constant time, so the
    next nearest symptom of a cause is found without testing or rescanning."""

    __slots__ = ("_left", "_right", "found", "times", "upstream")

    def __init__(self, upstream: Upstream | None, found: list[_Waiting]) -> None:
        self.upstream, self.found = upstream, found
        self.times = [s.time for s in found]
        self._right = list(range(len(found) + 1))  # i -> the first untaken index >= i
        self._left = list(range(len(found) + 1))  # i + 1 -> 1 + the last untaken <= i

    def taken(self, i: int) -> None:
        self._right[i], self._left[i + 1] = i + 1, i

    def right(self, i: int) -> int:
        return _root(self._right, i)

    def left(self, i: int) -> int:
        return _root(self._left, i + 1) - 1


def _root(parent: list[int], i: int) -> int:
    """The representative of *i* (path halving: taken runs are crossed once)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


class _Reach:
    """One cause's walk through one group: the untaken symptoms within its reach, the
    closest to its time first (in time order for an undated or lasting cause)."""

    __slots__ = (
        "_next_left",
        "_next_right",
        "at",
        "cause",
        "center",
        "end",
        "group",
        "order",
        "other_family",
        "start",
        "undated",
    )

    def __init__(self, group: _Group, cause: _Waiting, order: int,
                 reach: tuple[float, float]) -> None:
        low, high = reach
        self.group, self.cause, self.order = group, cause, order
        self.undated = cause.event.time is None
        # at equal distance, the protocol the backend speaks first: uWSGI is most often
        # behind uwsgi_pass (its http-socket is the rarer case), gunicorn only speaks http
        up = group.upstream
        self.other_family = up is not None and up.family != _FIRST_FAMILY[cause.event.source]
        self.center = None if cause.lasting else cause.event.time
        times = group.times
        self.start = bisect.bisect_left(times, low)
        self.end = bisect.bisect_right(times, high, self.start)
        middle = self.start if self.center is None else bisect.bisect_left(
            times, self.center, self.start, self.end)
        self._next_right, self._next_left, self.at = middle, middle - 1, -1

    def step(self) -> tuple[bool, float, bool, int, _Reach] | None:
        """Move to the nearest untaken symptom within reach (``at``): its heap entry, how
        good a pair it makes (lower pairs first, within one preference) and the walk
        (one flat tuple: nested ones cost twice the comparisons); None if none is left."""
        group, center = self.group, self.center
        right = group.right(self._next_right)
        right = right if right < self.end else -1
        left = group.left(self._next_left) if center is not None else -1
        left = left if left >= self.start else -1
        if right < 0 and left < 0:
            return None
        if center is None:
            self.at = self._next_right = right
            return (self.undated, 0.0, self.other_family, self.order, self)
        times = group.times
        if left < 0 or (right >= 0 and times[right] - center <= center - times[left]):
            self.at = self._next_right = right
        else:
            self.at = self._next_left = left
        return (self.undated, abs(times[self.at] - center), self.other_family, self.order,
                self)


def _order(event: Event) -> tuple[bool, bool]:
    """Within one instant: symptoms first, then kills, then the rest."""
    return (not is_symptom(event), (event.incident, event.source) not in _KILLS)


def _order_offline(event: Event) -> tuple[float, bool, bool]:
    span = event.span
    at = event.time if event.time is not None else (span[1] if span else float("inf"))
    return (at, *_order(event))


@functools.lru_cache(maxsize=1024)  # a host has few upstreams
def _upstream(text: str) -> Upstream:
    return Upstream.parse(text)


def _fits_upstream(up: Upstream | None, cause: _Waiting) -> bool:
    """Scheme family, then the peer if known. No trusted upstream field (a line nginx
    cut): any scheme must fit."""
    assert cause.cause is not None
    families = CAUSES[cause.cause].families
    if up is None:
        return families >= _UWSGI_OR_HTTP
    peer = cause.event.peer
    return up.family in families and (peer is None or peer == up.peer)
