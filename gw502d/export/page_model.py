"""What the on-call page shows, as plain data: built from the numbers, the rates, the logs'
stats and the daemon's own state, then rendered by :mod:`gw502d.export.page`.

The order is the on-call engineer's: incidents seen in the last five minutes first, by
severity, then by how many; then the rest of the hour; incidents seen only before the
hour, and those never seen, collapse. Each incident carries its breakdown by upstream
(:data:`UpstreamSource`: today the facts the tallies kept, each upstream with the advice
for its own lines; the parsed nginx configuration can plug in here instead, with upstream
names it bounds), its paired root causes and the links to its recent lines.

Values from log lines (upstreams, facts inside remediation texts) stay plain text here;
the renderer escapes everything.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gw502d import __version__
from gw502d.classify.catalog import SEVERITIES, Catalog, Incident
from gw502d.classify.keys import Key
from gw502d.classify.tally import Tallies
from gw502d.export.collector import Numbers
from gw502d.export.incidents import IncidentQuery
from gw502d.export.incidents_view import page_url
from gw502d.export.rates import RECENT_MINUTES, Rates
from gw502d.remediate.advice import MAX_VALUE, Context, advise
from gw502d.remediate.correlate import Correlator
from gw502d.remediate.host import host_facts
from gw502d.source.follower import LogStats
from gw502d.source.spec import LogSpec

UPSTREAMS_SHOWN = 8  # per incident; the rest are summed as "other"
# The nginx incidents the correlator explains and their causes (remediate.correlate's
# SYMPTOMS and CAUSES), as a person says them
SYMPTOM_NAMES = {
    "upstream_premature_close": "premature close",
    "upstream_reset": "connection reset",
    "upstream_timeout": "timeout",
    "upstream_backlog_full": "backlog full",
    "upstream_connect_refused": "connection refused",
    "upstream_socket_missing": "socket missing",
    "upstream_invalid_header": "invalid header",
    "no_live_upstreams": "no live upstreams",
}
CAUSE_NAMES = {
    "worker_harakiri": "uWSGI harakiri",
    "worker_oom_killed": "uWSGI worker killed (OOM killer?)",
    "worker_crashed": "uWSGI worker crashed",
    "worker_memory_killed": "uWSGI worker over evil-reload-on-rss",
    "request_block_too_big": "uWSGI request block too big",
    "protocol_mismatch": "HTTP sent to a uwsgi socket",
    "http_request_too_big": "uWSGI http-socket request too big",
    "modifier_unavailable": "uWSGI modifier not loaded",
    "router_connect_failed": "uWSGI router could not connect",
    "listen_queue_full": "uWSGI listen queue full",
    "workers_respawning_too_fast": "uWSGI workers respawning too fast",
    "app_load_failed": "uWSGI app failed to load",
    "address_in_use": "uWSGI address in use",
    "gunicorn_worker_timeout": "gunicorn worker timeout",
    "gunicorn_worker_killed": "gunicorn worker killed (OOM killer?)",
    "gunicorn_worker_crashed": "gunicorn worker crashed",
    "gunicorn_worker_exited": "gunicorn worker exited",
    "gunicorn_app_load_failed": "gunicorn app failed to load",
    "gunicorn_worker_boot_failed": "gunicorn worker failed to boot",
    "gunicorn_address_in_use": "gunicorn address in use",
}


@dataclass(frozen=True, slots=True)
class UpstreamRow:
    """One upstream of an incident: its lines and the change that fits it.

    ``name`` None: lines that name no upstream."""

    name: str | None
    count: int
    remediation: str


@dataclass(frozen=True, slots=True)
class Breakdown:
    """An incident's lines by upstream, most first; ``other`` lines are in no row."""

    rows: tuple[UpstreamRow, ...] = ()
    other: int = 0


@dataclass(frozen=True, slots=True)
class Cause:
    """A root cause paired with an nginx incident (*symptom*): ``count`` of its lines."""

    cause: str
    symptom: str
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """One incident type of the catalog as the page shows it."""

    id: str
    source: str
    severity: str
    status: int | None
    summary: str
    minutes: tuple[int, ...]  # per minute over the last hour, oldest first
    recent: int  # in the last RECENT_MINUTES minutes
    total: int  # every line counted, earlier runs included
    since_start: int  # this run's
    first_seen: float | None  # this run's first line
    last_seen: float | None
    causes: tuple[Cause, ...]
    upstreams: Breakdown
    remediation: str
    events_html: str
    events_json: str

    @property
    def hour(self) -> int:
        return sum(self.minutes)


@dataclass(frozen=True, slots=True)
class LogRow:
    """A configured log: is it followed, how far behind, what went wrong."""

    name: str
    path: str
    family: str | None
    followed: bool
    problem: str | None  # why it is not followed
    lines: int
    lag: int
    last_line: float | None
    read_errors: int
    rotations: int
    truncations: int
    unparsed: int


@dataclass(frozen=True, slots=True)
class RunState:
    """What the daemon knows of itself: when it started, its last reload, its health."""

    started: float
    reload_ok: bool
    reload_time: float
    config_source: str
    problem: str | None  # /healthz's 503 reason


@dataclass(frozen=True, slots=True)
class PageModel:
    """Everything the page shows, read at ``now``."""

    now: float
    host: str
    version: str
    run: RunState
    catalog_size: int
    families: int
    incidents: tuple[IncidentRow, ...]  # seen in the last hour, now first
    earlier: tuple[IncidentRow, ...]  # seen, but not in the last hour
    never_seen: tuple[Key, ...]
    logs: tuple[LogRow, ...]  # those not followed first

    @property
    def missing_logs(self) -> tuple[LogRow, ...]:
        return tuple(log for log in self.logs if not log.followed)


UpstreamSource = Callable[[Incident, int], Breakdown]
"""The breakdown by upstream of an incident with this many lines."""


@dataclass(frozen=True, slots=True)
class Reading:
    """The incident numbers of one page, read together at ``now``."""

    catalog: Catalog
    numbers: Numbers
    rates: Rates
    upstreams: UpstreamSource
    now: float


def evidence_upstreams(tallies: Tallies, correlator: Correlator,
                       numbers: Numbers) -> UpstreamSource:
    """Upstreams from the facts the live tallies kept, each advised on its own lines and
    root causes: those the correlator paired with that upstream (all of them while it has
    paired none with an upstream, as after a restart).

    Reads the tallies: call it, and the source it returns, under the pipeline's lock.
    Lines counted before the last reload or restart have no facts kept: they are in
    ``other``."""
    host = host_facts()

    def context(upstream: str | None) -> Context:
        causes = numbers.root_causes
        if upstream is not None and correlator.upstreams:
            paired = {c for c, seen in correlator.upstreams.items() if upstream in seen}
            causes = {key: n for key, n in causes.items() if key[1] in paired}
        return Context(host, tallies, correlator, causes=causes, counts=numbers.incidents)

    def breakdown(incident: Incident, total: int) -> Breakdown:
        if "upstream" not in incident.evidence:
            return Breakdown()
        by_upstream: dict[str | None, list[tuple[Mapping[str, object], int]]] = {}
        for facts, n in tallies.evidence(incident.key):
            upstream = facts.get("upstream")
            by_upstream.setdefault(None if upstream is None else str(upstream), []).append(
                (facts, n))
        counts = Counter({u: sum(n for _, n in ev) for u, ev in by_upstream.items()})
        rows = tuple(UpstreamRow(None if u is None else _shown(u), n,
                                 advise(incident, by_upstream[u], context(u)).text)
                     for u, n in counts.most_common(UPSTREAMS_SHOWN))
        return Breakdown(rows, max(total - sum(r.count for r in rows), 0))

    return breakdown


def _shown(value: str) -> str:
    """A value from a log line, printable and bounded."""
    text = "".join(c if c.isprintable() else "?" for c in value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 3] + "..."


def incident_rows(reading: Reading) -> tuple[list[IncidentRow], list[IncidentRow], list[Key]]:
    """(seen in the last hour, now first; seen before; never seen) over the catalog."""
    hour: list[IncidentRow] = []
    earlier: list[IncidentRow] = []
    never: list[Key] = []
    for key in reading.catalog.keys:
        total = reading.numbers.incidents.get(key, 0)
        if not total:
            never.append(key)
            continue
        row = _row(reading, reading.catalog.incident(*key), total)
        (hour if row.hour else earlier).append(row)
    hour.sort(key=lambda r: (not r.recent, SEVERITIES.index(r.severity), -r.recent, -r.hour,
                             -(r.last_seen or 0.0)))
    earlier.sort(key=lambda r: -(r.last_seen or 0.0))
    return hour, earlier, never


def _row(reading: Reading, incident: Incident, total: int) -> IncidentRow:
    key, numbers, rates = incident.key, reading.numbers, reading.rates
    minutes = rates.series(key, reading.now)
    causes = sorted(((cause, n) for (symptom, cause), n in numbers.root_causes.items()
                     if n and incident.source == "nginx" and symptom == incident.id),
                    key=lambda cn: -cn[1])
    query = IncidentQuery(incident=incident.id, source=incident.source)
    return IncidentRow(
        id=incident.id, source=incident.source, severity=incident.severity,
        status=incident.status, summary=incident.summary, minutes=tuple(minutes),
        recent=sum(minutes[-RECENT_MINUTES:]), total=total,
        since_start=rates.since_start.get(key, 0), first_seen=rates.first_seen.get(key),
        last_seen=numbers.last_seen.get(key) or None,
        causes=tuple(Cause(c, SYMPTOM_NAMES.get(incident.id, incident.id), CAUSE_NAMES.get(c, c),
                           n) for c, n in causes),
        upstreams=reading.upstreams(incident, total), remediation=numbers.remediation.get(key, ""),
        events_html=page_url(query, before=None, html=True),
        events_json=page_url(query, before=None, html=False))


def log_rows(specs: Sequence[LogSpec], stats: Mapping[str, LogStats], rates: Rates,
             unparsed: Mapping[str, int]) -> list[LogRow]:
    """Each configured log, those not followed first (then in configuration order)."""
    rows = []
    for spec in specs:
        s = stats.get(spec.name, LogStats())
        followed = s.files > 0  # files closed while idle (max_open) are followed too
        rows.append(LogRow(
            name=spec.name, path=spec.path, family=spec.family, followed=followed,
            problem=None if followed else (spec.problem() or "no file open"),
            lines=s.lines, lag=max(s.size - s.offset, 0), last_line=rates.last_line.get(spec.name),
            read_errors=s.read_errors, rotations=s.rotations, truncations=s.truncations,
            unparsed=unparsed.get(spec.name, 0)))
    rows.sort(key=lambda r: r.followed)
    return rows


def page_model(reading: Reading, specs: Sequence[LogSpec], stats: Mapping[str, LogStats],
               run: RunState) -> PageModel:
    """The page's data; *specs* are the configured logs, *stats* the follower's of them."""
    hour, earlier, never = incident_rows(reading)
    catalog = reading.catalog
    return PageModel(
        now=reading.now, host=socket.gethostname(), version=__version__, run=run,
        catalog_size=len(catalog.keys), families=len(catalog.families),
        incidents=tuple(hour), earlier=tuple(earlier), never_seen=tuple(never),
        logs=tuple(log_rows(specs, stats, reading.rates, reading.numbers.unparsed)))
