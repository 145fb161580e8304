"""The way every block of lines goes in ``gw502d run``, in one place.

The follower hands each block it reads to :meth:`Pipeline.feed`, a journal follower the
records it read to :meth:`Pipeline.feed_records`; each wraps them in a
:class:`~gw502d.classify.block.Block` (one per family, when a syslog tag or the journal
names the writer) and passes it through the stages, in this order::

    tallies.count        classify: match each line once, count, keep evidence
    upstreams.count      nginx incidents per upstream label (from the host's config)
    unparsed.count       lines without their family's record shape, per log
    root_causes.observe  pair nginx symptoms with backend causes, at arrival time (a
                         journal record's own time)
    recent.keep          the newest incident lines, for /incidents
    rates.add            incidents per minute over the last hour, for the page
    events.log           one rate-limited log event per incident

Every stage has one signature (``Block -> None``) and keeps its own numbers; the exporter
reads them through :class:`~gw502d.daemon.totals.Totals` when Prometheus asks. All
stages run in the follower's thread or a journal follower's, under :attr:`Pipeline.lock`,
taken once per block (up to 1 MiB of lines), never per line (syslog prefixes are stripped
before it is taken). A reload builds the stages of the new catalog outside the lock and
swaps them in between two blocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from gw502d.classify.block import Block, Stage, by_family
from gw502d.classify.catalog import Catalog
from gw502d.classify.events import EVENT_FACTS
from gw502d.classify.tally import Tallies
from gw502d.classify.unparsed import UnparsedLines
from gw502d.daemon.totals import Totals
from gw502d.export.collector import Numbers
from gw502d.export.events import IncidentEvents
from gw502d.export.incidents import RecentIncidents
from gw502d.export.rates import Rates
from gw502d.parse.syslog import strip_block
from gw502d.remediate.configured import HostConfig
from gw502d.remediate.root_causes import RootCauses
from gw502d.remediate.upstreams import UpstreamIncidents, other
from gw502d.source.spec import JournalSpec, LogSpec

Spec = LogSpec | JournalSpec


@dataclass(frozen=True, slots=True)
class Settings:
    """What the stages are built with (from the configuration)."""

    incidents_buffer: int
    redact: bool
    window: float


@dataclass(frozen=True, slots=True)
class Stages:
    """The live stages of one catalog."""

    catalog: Catalog
    tallies: Tallies
    upstreams: UpstreamIncidents
    unparsed: UnparsedLines
    root_causes: RootCauses
    recent: RecentIncidents
    rates: Rates
    events: IncidentEvents

    @property
    def route(self) -> tuple[Stage, ...]:
        return (self.tallies.count, self.upstreams.count, self.unparsed.count,
                self.root_causes.observe, self.recent.keep, self.rates.add, self.events.log)


class Pipeline:
    """The stages of the running configuration, and the totals they add to."""

    def __init__(self, catalog: Catalog, specs: Iterable[Spec], settings: Settings,
                 totals: Totals) -> None:
        self.lock = threading.Lock()
        self.totals = totals
        self.conf: HostConfig | None = None  # this host's server configuration, when read
        self.stages = self._build(catalog, specs, settings, None)
        self.stages.tallies.restore_pending_ends(totals.pending_ends)
        self._route = self.stages.route

    def _build(self, catalog: Catalog, specs: Iterable[Spec], settings: Settings,
               old: Stages | None) -> Stages:
        recent = old.recent if old is not None else RecentIncidents(settings.incidents_buffer)
        events = old.events if old is not None else IncidentEvents(redact=settings.redact)
        return Stages(
            catalog=catalog,
            tallies=Tallies(catalog, dict.fromkeys(s.family for s in specs),
                            capture=EVENT_FACTS),
            upstreams=UpstreamIncidents(catalog, self.totals.upstream_incidents,
                                        self.conf.label if self.conf is not None else other),
            unparsed=UnparsedLines(catalog, self.totals.unparsed),
            root_causes=RootCauses(catalog.keys, settings.window, self.totals.root_causes,
                                   old.root_causes.correlator if old is not None else None),
            recent=recent,
            rates=old.rates if old is not None else Rates(),
            events=events,
        )

    def feed(self, spec: LogSpec, path: str, lines: list[bytes]) -> None:
        """The follower's ``on_lines``: one block through every stage."""
        now = time.time()
        if spec.format == "syslog":
            stripped = strip_block(lines)
            self._run(by_family(spec.name, spec.family, stripped.lines, stripped.tags, now))
        else:
            self._run([Block(spec.name, spec.family, lines, now)])

    def feed_records(self, spec: JournalSpec, lines: list[bytes], times: list[float],
                     tags: list[str]) -> None:
        """A journal follower's ``on_records``: each line at its record's time, in the
        tally of the family its spec or its tag names."""
        self._run(by_family(spec.name, spec.family, lines, tags, time.time(), times=times))

    def _run(self, blocks: list[Block]) -> None:
        with self.lock:
            route = self._route
            for block in blocks:
                for stage in route:
                    stage(block)

    def reload(self, catalog: Catalog, specs: Iterable[Spec], settings: Settings) -> None:
        """Count with stages of *catalog* from the next block on; totals carry over."""
        fresh = self._build(catalog, specs, settings, self.stages)  # compiling takes a while
        with self.lock:
            self.totals.carry(self.stages.tallies, self.stages.upstreams)
            fresh.tallies.restore_pending_ends(self.totals.pending_ends)
            fresh.recent.resize(settings.incidents_buffer)
            fresh.events.redact = settings.redact
            self.stages, self._route = fresh, fresh.route

    def set_host(self, conf: HostConfig) -> None:
        """Use *conf* (read at start, again on SIGHUP or when its files changed) for upstream
        labels and remediation from the next block on."""
        with self.lock:
            self.conf = conf
            self.stages.upstreams.relabel(conf.label)

    def snapshot(self) -> dict[str, object]:
        """The follower's ``snapshot_extra``: the counters saved with the file offsets."""
        with self.lock:
            s = self.stages
            return self.totals.snapshot(s.tallies, s.root_causes, s.upstreams)

    def numbers(self) -> Numbers:
        """Everything a scrape exports, read at once."""
        with self.lock:
            s = self.stages
            return self.totals.numbers(s.catalog, s.tallies, s.root_causes, s.upstreams,
                                       self.conf)
