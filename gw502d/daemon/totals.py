"""The numbers ``gw502d run`` exports and saves: the live stages' plus what came before them.

Counters never go back. What earlier stages counted (before a reload, which builds new
stages for the new catalog, or before a restart, as restored from the follower's snapshot)
is kept as ``base`` and added to the live numbers whenever they are read. The snapshot is
taken in the follower's thread with the file offsets, so a restart continues from one
consistent point: lines read after it are read and counted again from these numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from gw502d.classify.catalog import Catalog
from gw502d.classify.keys import Key, nest
from gw502d.classify.tally import Tallies
from gw502d.export.collector import Numbers
from gw502d.remediate.advice import Context, advise, advise_seen, advise_upstreams
from gw502d.remediate.configured import HostConfig
from gw502d.remediate.host import host_facts
from gw502d.remediate.nginx import OTHER
from gw502d.remediate.root_causes import RootCauses
from gw502d.remediate.upstreams import UpstreamIncidents, UpstreamKey

log = structlog.get_logger("gw502d.daemon")

Facts = dict[str, Any]


class Totals:
    """Base numbers, summed with the live tallies and root causes when read."""

    def __init__(self) -> None:
        self.incidents: Counter[Key] = Counter()
        self.companions: Counter[Key] = Counter()
        self.last_seen: dict[Key, float] = {}
        self.facts: dict[Key, Facts] = {}  # evidence of the last remediation, per pair
        # root causes and lines without their family's shape (per log): the live stages
        # add to these dicts themselves, a reload hands them to the new ones
        self.root_causes: dict[Key, int] = {}
        self.unparsed: dict[str, int] = {}
        self.pending_ends: dict[str, Any] = {}  # events waiting for their end, per family
        # per (incident, source, upstream label): the per-upstream stage adds to the counts
        self.upstream_incidents: dict[UpstreamKey, int] = {}
        self.upstream_facts: dict[UpstreamKey, Facts] = {}

    def sums(self, tallies: Tallies) -> tuple[dict[Key, int], dict[Key, int], dict[Key, float]]:
        """Counts, companion counts and last-seen times: base plus the live tallies."""
        counts, companions, last_seen = tallies.totals()
        incidents = Counter(counts)
        incidents.update(self.incidents)
        all_companions = Counter(companions)
        all_companions.update(self.companions)
        seen = {key: max(t, self.last_seen.get(key, 0.0)) for key, t in last_seen.items()}
        return dict(incidents), dict(all_companions), seen

    def top_facts(self, tallies: Tallies, counts: Mapping[Key, int]) -> dict[Key, Facts]:
        """Per pair seen, the most common evidence (or the saved one while none is new)."""
        out = {}
        for key, n in counts.items():
            if not n:
                continue
            evidence = tallies.evidence(key)
            if evidence:
                out[key] = dict(max(evidence, key=lambda fc: fc[1])[0])
            elif key in self.facts:
                out[key] = self.facts[key]
        return out

    def top_upstream_facts(self, tallies: Tallies, upstreams: UpstreamIncidents
                           ) -> dict[UpstreamKey, Facts]:
        """Per (incident, source, label) counted, the most common evidence with it (or the
        saved one while none is new)."""
        out = dict(self.upstream_facts)
        for incident, source in upstreams.keys:
            best: dict[str, tuple[Facts, int]] = {}
            for facts, n in tallies.evidence((incident, source)):
                label = upstreams.label(facts.get("upstream"))
                if n > best.get(label, ({}, 0))[1]:
                    best[label] = (facts, n)
            out.update({(incident, source, label): dict(facts)
                        for label, (facts, _) in best.items()})
        return {key: facts for key, facts in out.items() if key in self.upstream_incidents}

    def carry(self, tallies: Tallies, upstreams: UpstreamIncidents) -> None:
        """Before a reload drops *tallies*: what they counted becomes base."""
        incidents, companions, last_seen = self.sums(tallies)
        self.facts = self.top_facts(tallies, incidents)
        self.upstream_facts = self.top_upstream_facts(tallies, upstreams)
        self.incidents, self.companions = Counter(incidents), Counter(companions)
        self.last_seen = last_seen
        self.pending_ends = tallies.pending_ends()

    def snapshot(self, tallies: Tallies, root_causes: RootCauses,
                 upstreams: UpstreamIncidents) -> dict[str, Any]:
        """The counters saved with the file offsets (the follower's ``snapshot_extra``)."""
        incidents, companions, last_seen = self.sums(tallies)
        return {
            "incidents": nest(incidents),
            "companions": nest(companions),
            "last_seen": nest(last_seen),
            "facts": nest(self.top_facts(tallies, incidents)),
            "root_causes": nest(root_causes.counts),
            "unparsed": dict(self.unparsed),
            "pending_ends": tallies.pending_ends(),
            "upstream_incidents": _nest3(upstreams.counts),
            "upstream_facts": _nest3(self.top_upstream_facts(tallies, upstreams)),
        }

    def restore(self, saved: Mapping[str, Any], catalog: Catalog) -> None:
        """Continue from a snapshot's counters; pairs the catalog no longer has are dropped
        (and said once), so a renamed or removed incident is not exported forever."""
        known = set(catalog.keys) | {i.key for i in catalog.incidents}
        dropped: set[Key] = set()

        def entries(name: str, kind: type) -> Iterable[tuple[Key, Any]]:
            for key, value in _unnest(saved.get(name), kind):
                if name != "root_causes" and key not in known:
                    dropped.add(key)
                    continue
                yield key, value

        for key, n in entries("incidents", int):
            self.incidents[key] += n
        for key, n in entries("companions", int):
            self.companions[key] += n
        self.last_seen.update(entries("last_seen", float))
        self.facts.update(entries("facts", dict))
        self.root_causes.update(entries("root_causes", int))
        for key3, n in _unnest3(saved.get("upstream_incidents"), int):
            if key3[:2] in known:
                self.upstream_incidents[key3] = self.upstream_incidents.get(key3, 0) + n
        self.upstream_facts.update((key, facts) for key, facts
                                   in _unnest3(saved.get("upstream_facts"), dict)
                                   if key in self.upstream_incidents)
        pending = saved.get("pending_ends")
        if isinstance(pending, dict):
            self.pending_ends = pending
        unparsed = saved.get("unparsed")
        if isinstance(unparsed, dict):
            self.unparsed.update({k: v for k, v in unparsed.items()
                                  if isinstance(k, str) and _valid(v, int)})
        if dropped:
            log.warning("saved counts of incidents not in the catalog dropped",
                        incidents=sorted(f"{i}/{s}" for i, s in dropped))

    def numbers(self, catalog: Catalog, tallies: Tallies, root_causes: RootCauses,
                upstreams: UpstreamIncidents, conf: HostConfig | None) -> Numbers:
        """Everything a scrape exports, with the remediation of every pair of *catalog*
        and of every (pair, upstream) counted."""
        incidents, companions, last_seen = self.sums(tallies)
        context = Context(host_facts(), tallies, root_causes.correlator,
                          causes=root_causes.counts, counts=incidents, conf=conf)
        remediation = {key: advise_seen(catalog.incident(*key), context,
                                        self.facts.get(key)).text for key in catalog.keys}
        per_upstream: dict[UpstreamKey, str] = {}
        for key in upstreams.keys:
            counted = [u for (i, s, u), n in upstreams.counts.items() if (i, s) == key and n]
            if not counted:
                continue
            incident = catalog.incident(*key)
            saved = {u: f for (i, s, u), f in self.upstream_facts.items() if (i, s) == key}
            advice = advise_upstreams(incident, context, saved)
            # a label counted with no facts left (a restart without saved ones): the
            # catalog's text, so that an alert on it still carries a remediation
            per_upstream.update({(*key, label): (advice.get(label)
                                                 or advise(incident, [], context)).text
                                 for label in counted})
        labels = conf.labels() if conf is not None else {OTHER}
        return Numbers(incidents, companions, last_seen, remediation,
                       dict(root_causes.counts), dict(self.unparsed),
                       upstreams.with_zeros(labels), per_upstream)


def _nest3(flat: Mapping[UpstreamKey, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{(incident, source, upstream): v}`` as ``{incident: {source: {upstream: v}}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (incident, source, upstream), value in flat.items():
        out.setdefault(incident, {}).setdefault(source, {})[upstream] = value
    return out


def _unnest3(nested: Any, kind: type) -> Iterable[tuple[UpstreamKey, Any]]:
    """The entries of a saved :func:`_nest3`; anything malformed is logged and skipped."""
    for (incident, source), inner in _unnest(nested, dict):
        for upstream, value in inner.items():
            if _valid(value, kind):
                yield (incident, source, upstream), value
            else:
                log.warning("saved counter malformed, ignored", value=repr(value)[:100],
                            key=f"{incident}.{source}.{upstream}")


def _unnest(nested: Any, kind: type) -> Iterable[tuple[Key, Any]]:
    """The entries of a saved ``{a: {b: v}}``; anything malformed is logged and skipped."""
    if nested is None:
        return
    if not isinstance(nested, dict):
        log.warning("saved counters malformed, ignored", value=repr(nested)[:100])
        return
    for a, inner in nested.items():
        if not isinstance(inner, dict):
            log.warning("saved counter malformed, ignored", key=a, value=repr(inner)[:100])
            continue
        for b, value in inner.items():
            if not _valid(value, kind):
                log.warning("saved counter malformed, ignored", key=f"{a}.{b}",
                            value=repr(value)[:100])
                continue
            yield (a, b), float(value) if kind is float else value


def _valid(value: Any, kind: type) -> bool:
    """A saved number is a non-negative int (or float for times); facts are objects."""
    if kind is dict:
        return isinstance(value, dict)
    numbers = (int, float) if kind is float else (int,)
    return isinstance(value, numbers) and not isinstance(value, bool) and value >= 0
