"""The daemon's incident numbers: plain ints added in the follower's thread, read when asked.

Lines are counted by one :class:`~gw502d.classify.tally.Tally` per family a log is
configured with (the all-families classifier for logs without one). Tallies of one catalog
index their counts alike (``catalog.keys``), so a scrape sums them per (incident, source)
and adds ``base``: what earlier tallies counted (before a reload, or before a restart, as
restored from the follower's snapshot). Counters therefore never go back, whatever is
reloaded, and a restart continues from the numbers saved with the file offsets.

``lock`` is taken once per block of lines (up to 1 MiB), by a scrape and by a reload,
never per line: a reload swaps the tallies between two blocks.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from gw502d.classify.catalog import Catalog
from gw502d.classify.matcher import Classifier
from gw502d.classify.tally import Key, Matches, OnWatched, Runs, Tally
from gw502d.daemon.events import IncidentEvents
from gw502d.export.collector import Numbers
from gw502d.export.incidents import LINE_CAP, RecentIncidents
from gw502d.export.metric_names import ROOT_CAUSE_INCIDENTS, ROOT_CAUSE_NAMES
from gw502d.parse import FORMATS, compile_template
from gw502d.remediate import Context, advise, host_facts
from gw502d.source.spec import LogSpec

log = structlog.get_logger("gw502d.daemon")

CauseKey = tuple[str, str]  # (incident, cause)
Facts = dict[str, Any]

# Lines of a Python traceback (gunicorn writes them under its records) and blank lines
# are part of a log's structure even though they carry no record prefix.
_CONTINUATION = (rb"[ \t]|Traceback \(|During handling|The above exception"
                 rb"|[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b|\Z")


class Correlator(Protocol):
    """The root-cause hook; ``gw502d.remediate`` provides the implementation.

    It sees each block's hits of the incidents it pairs in the follower's thread (so it
    needs no lock either) and adds to ``causes[(nginx incident, cause)]``, which
    :class:`Counters` keeps, saves with the snapshot and exports as
    ``gw502d_root_causes_total``.
    """

    @property
    def watched(self) -> Container[Key]:
        """The incidents it pairs: only their hits reach :meth:`observe`."""

    @property
    def correlator(self) -> Any:
        """What the advice reads (``gw502d.remediate.Context.correlator``)."""

    def observe(self, keys: Sequence[Key], runs: Runs, when: float,
                causes: dict[CauseKey, int]) -> None: ...


def structure(catalog: Catalog, family: str | None) -> re.Pattern[bytes] | None:
    """What every line of a log of *family* starts with; None if anything goes.

    uWSGI and Werkzeug lines need no prefix, so no line of theirs is unparsed; for nginx
    and gunicorn a line without the record prefix means a wrong family or log format.
    """
    parts = []
    for fam in catalog.families:
        if family is not None and fam.name != family:
            continue
        prefix = fam.prefix.keeping(()).regex
        if re.match(prefix, ""):
            return None
        fmt = FORMATS.get(fam.name)
        forms = fmt.forms.values() if fmt is not None else ()
        parts += [prefix, *(compile_template(f).keeping(()).regex for f in forms)]
    if not parts:
        return None
    return re.compile(b"(?:" + "|".join(parts).encode() + b"|" + _CONTINUATION + b")",
                      re.DOTALL)


class _Live:
    """The tallies of one catalog: where lines are counted until the next reload."""

    def __init__(self, catalog: Catalog, families: Iterable[str | None],
                 on_watched: OnWatched, watch: Container[Key],
                 on_block: Callable[[Tally, Matches], None]) -> None:
        self.catalog = catalog
        self.keys = catalog.keys
        self.companion_keys = tuple(dict.fromkeys(
            i.key for i in catalog.incidents if i.companion))
        self.last_seen = [0.0] * len(self.keys)
        self.tallies: dict[str | None, Tally] = {}
        self.shapes: dict[str | None, re.Pattern[bytes] | None] = {}
        self._on_watched = on_watched
        self._watch = watch
        self._on_block = on_block
        for family in families:
            self.tally(family)

    def tally(self, family: str | None) -> Tally:
        """The tally for *family*; built on first use (a log added by a reload)."""
        tally = self.tallies.get(family)
        if tally is None:
            families = None if family is None else [family]
            tally = self.tallies[family] = Tally(Classifier(self.catalog, families),
                                                 self._on_watched, watch=self._watch,
                                                 on_block=self._on_block)
            self.shapes[family] = structure(self.catalog, family)
        return tally

    def top_facts(self, k: int) -> Facts | None:
        """The most common evidence of incident *k* over every tally, or None."""
        seen: Counter[tuple[tuple[str, Any], ...]] = Counter()
        for tally in self.tallies.values():
            evidence = tally.evidence_for(k)
            if evidence is not None:
                for facts, n in evidence.facts():
                    seen[tuple(facts.items())] += n
        return dict(seen.most_common(1)[0][0]) if seen else None


class Counters:
    """Every incident number the daemon exports and saves.

    Per block of lines (the tallies' ``on_block``) it notes the time of the incidents the
    block had, appends the newest to the ring buffer of :mod:`gw502d.export.incidents` and
    offers one rate-limited log event per incident; the correlator alone sees every hit, and
    only of the incidents it pairs, slot by slot. Facts are worked out later, when someone asks.
    """

    def __init__(self, catalog: Catalog, specs: Iterable[LogSpec], *, incidents_buffer: int,
                 redact: bool, correlator: Correlator | None = None) -> None:
        self.lock = threading.Lock()
        self.recent = RecentIncidents(incidents_buffer)
        self.events = IncidentEvents(redact=redact)
        self.root_causes: dict[CauseKey, int] = {
            (i, c): 0 for i in ROOT_CAUSE_INCIDENTS for c in ROOT_CAUSE_NAMES}
        self.unparsed: dict[str, int] = {}
        self._correlator = correlator
        self._host = host_facts()
        self._base: Counter[Key] = Counter()
        self._companion_base: Counter[Key] = Counter()
        self._last_base: dict[Key, float] = {}
        self._facts_base: dict[Key, Facts] = {}
        self._facts_cache: dict[Key, tuple[int, Facts | None]] = {}
        self._now = 0.0
        self._log = ""
        self._before: list[int] = []
        self._live = self._build(catalog, specs)

    def _build(self, catalog: Catalog, specs: Iterable[LogSpec]) -> _Live:
        def on_watched(runs: Runs) -> None:
            if self._correlator is not None:
                self._correlator.observe(live.keys, runs, self._now, self.root_causes)

        def on_block(tally: Tally, matches: Matches) -> None:
            now, log_name = self._now, self._log
            slots = tally.classifier.slots
            for m in matches[-self.recent.size:]:
                slot = slots[m.lastindex]  # type: ignore[index]
                if not slot.incident.companion:
                    self.recent.add((slot, m.string[:LINE_CAP], now, log_name))
            for k, (before, after) in enumerate(zip(self._before, tally.counts, strict=True)):
                if after != before:
                    live.last_seen[k] = now
                    line = tally.last_line[k]
                    found = tally.classifier.match(line) if line is not None else None
                    if found is not None and found.lastindex is not None:
                        self.events.hit(live.keys[k], slots[found.lastindex],
                                        found.string[:LINE_CAP], log_name, now,
                                        count=after - before)

        watch = self._correlator.watched if self._correlator is not None else ()
        live = _Live(catalog, dict.fromkeys(s.family for s in specs), on_watched, watch,
                     on_block)
        return live

    @property
    def catalog(self) -> Catalog:
        """The catalog lines are classified with now."""
        return self._live.catalog

    # -- the follower's thread -----------------------------------------------------------

    def feed(self, spec: LogSpec, path: str, lines: list[bytes]) -> None:
        """The follower's ``on_lines``: classify and count one block of lines."""
        with self.lock:
            live = self._live
            self._now = time.time()
            self._log = spec.name
            tally = live.tally(spec.family)
            self._before = tally.counts.copy()
            tally.feed(lines)
            shape = live.shapes[spec.family]
            if shape is not None:
                unparsed = len(lines) - sum(map(bool, map(shape.match, lines)))
                self.unparsed[spec.name] = self.unparsed.get(spec.name, 0) + unparsed

    def snapshot(self) -> dict[str, Any]:
        """The follower's ``snapshot_extra``: the counters saved with the file offsets."""
        with self.lock:
            incidents, companions, last_seen = self._totals()
            facts = {key: f for key in incidents if (f := self._facts(key)) is not None}
            return {
                "incidents": _nest(incidents),
                "companions": _nest(companions),
                "last_seen": _nest(last_seen),
                "facts": _nest(facts),
                "root_causes": _nest(self.root_causes),
            }

    # -- start, reload, scrape -----------------------------------------------------------

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from a snapshot's counters (``Follower.restored_extra``)."""
        with self.lock:
            for key, n in _unnest(saved.get("incidents"), int):
                self._base[key] += n
            for key, n in _unnest(saved.get("companions"), int):
                self._companion_base[key] += n
            for key, t in _unnest(saved.get("last_seen"), float):
                self._last_base[key] = t
            for key, facts in _unnest(saved.get("facts"), dict):
                self._facts_base[key] = facts
            for key, n in _unnest(saved.get("root_causes"), int):
                self.root_causes[key] = n

    def reload(self, catalog: Catalog, specs: Iterable[LogSpec], *, incidents_buffer: int,
               redact: bool) -> None:
        """Count into tallies of *catalog* from the next block on; totals carry over."""
        live = self._build(catalog, specs)  # compiling takes a while: outside the lock
        with self.lock:
            incidents, companions, last_seen = self._totals()
            for key in incidents:
                facts = self._facts(key)
                if facts is not None:
                    self._facts_base[key] = facts
            self._base, self._companion_base = Counter(incidents), Counter(companions)
            self._last_base = last_seen
            self._facts_cache.clear()
            self._live = live
            self.recent.resize(incidents_buffer)
            self.events.redact = redact

    def numbers(self) -> Numbers:
        """Everything a scrape exports, read at once."""
        with self.lock:
            incidents, companions, last_seen = self._totals()
            catalog = self._live.catalog
            remediation = {
                key: self._remediation(catalog, key, incidents) for key in self._live.keys
            }
            return Numbers(incidents, companions, last_seen, remediation,
                           dict(self.root_causes), dict(self.unparsed))

    def _totals(self) -> tuple[dict[Key, int], dict[Key, int], dict[Key, float]]:
        """Counts, companion counts and last-seen times: base plus the live tallies."""
        live = self._live
        incidents = Counter(dict.fromkeys(live.keys, 0))
        incidents.update(self._base)
        companions = Counter(dict.fromkeys(live.companion_keys, 0))
        companions.update(self._companion_base)
        for tally in live.tallies.values():
            incidents.update(dict(zip(tally.keys, tally.counts, strict=True)))
            companions.update(dict(zip(tally.companion_keys, tally.companions, strict=True)))
        last_seen = dict.fromkeys(live.keys, 0.0) | self._last_base
        for key, t in zip(live.keys, live.last_seen, strict=True):
            if t:
                last_seen[key] = t
        return dict(incidents), dict(companions), last_seen

    def _remediation(self, catalog: Catalog, key: Key, counts: Mapping[Key, int]) -> str:
        """The advice for *key* from every tally's evidence, this host and the root causes
        paired so far (facts saved before a restart stand in until new ones arrive)."""
        live = self._live
        correlator = self._correlator.correlator if self._correlator is not None else None
        context = Context(self._host, tuple(live.tallies.values()), correlator,
                          causes=self.root_causes, counts=counts)
        evidence = context.evidence(*key)
        if not evidence and (saved := self._facts_base.get(key)) is not None:
            evidence = [(saved, 1)]
        return advise(catalog.incident(*key), evidence, context).text

    def _facts(self, key: Key) -> Facts | None:
        """The evidence that fills the remediation of *key*; recomputed when it was hit."""
        live = self._live
        try:
            k = live.keys.index(key)
        except ValueError:
            return self._facts_base.get(key)
        count = sum(t.counts[k] for t in live.tallies.values())
        cached = self._facts_cache.get(key)
        if cached is None or cached[0] != count:
            cached = (count, live.top_facts(k) or self._facts_base.get(key))
            self._facts_cache[key] = cached
        return cached[1]


def _nest(flat: Mapping[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    """``{(a, b): v}`` as ``{a: {b: v}}``: the JSON shape of ``Tally.as_dict``."""
    out: dict[str, dict[str, Any]] = {}
    for (a, b), value in flat.items():
        out.setdefault(a, {})[b] = value
    return out


def _unnest(nested: Any, kind: type) -> Iterable[tuple[tuple[str, str], Any]]:
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
