"""The per-upstream stage: nginx incidents that name their upstream, counted per (incident,
source, upstream label) for ``gw502d_upstream_incidents_total``.

The label is the upstream itself only when nginx's configuration passes to it
(:meth:`~gw502d.remediate.configured.HostConfig.label`), else ``other``: a log line can
name any upstream (a hostile Host header does not reach it, but a cut or forged line
might), the configuration cannot grow by itself. Work is per slot and distinct upstream
in a block (the hot match already captured it: one ``m.group`` per line, in C),
labels are remembered per raw value.
Like :class:`~gw502d.remediate.root_causes.RootCauses`, the counts are a dict handed in
(the daemon's totals, restored from its snapshot) and added to in place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from operator import attrgetter, methodcaller

from gw502d.classify.block import Block, Match
from gw502d.classify.catalog import Catalog
from gw502d.classify.matcher import Captures, Slot
from gw502d.parse.record import convert
from gw502d.remediate.advice import per_upstream
from gw502d.remediate.nginx import OTHER

UpstreamKey = tuple[str, str, str]  # (incident, source, upstream label)
Labeler = Callable[[str | None], str]
Read = Callable[[list[Match]], Iterable[bytes | None]]
_LABELS_KEPT = 1024  # raw upstream values remembered with their label, then forgotten
_LINE = attrgetter("string")


def _upstream_reader(slot: Slot) -> tuple[Captures, Read]:
    """The raw upstream of each hit, read in C (one ``m.group`` each); None on a line its
    server may have cut (nginx's 2048 bytes: the field may be the cut one)."""
    chosen = [(c, g) for c, g in zip(slot.evidence, slot.evidence_groups, strict=True)
              if c[0] == "upstream"]
    (capture, group), = chosen
    by_group = methodcaller("group", group)
    cut = slot.cut_at if "upstream" in slot.hot_cut_facts else None

    def read(hits: list[Match]) -> Iterable[bytes | None]:
        if cut and max(map(len, map(_LINE, hits))) >= cut:
            return [None if len(m.string) >= cut else m.group(group) for m in hits]
        return map(by_group, hits)

    return (capture,), read


def other(upstream: str | None) -> str:
    """The labeler without a configuration: every upstream is ``other``."""
    return OTHER


class UpstreamIncidents:
    """Adds to ``counts[(incident, source, label)]`` for the incidents whose evidence names
    nginx's upstream; :meth:`relabel` takes a newly read configuration's labeler."""

    def __init__(self, catalog: Catalog, counts: dict[UpstreamKey, int] | None = None,
                 label: Labeler = other) -> None:
        self.counts = counts if counts is not None else {}
        self.keys = [key for key in catalog.keys if per_upstream(catalog.incident(*key))]
        self._wanted = {catalog.keys.index(key) for key in self.keys}
        # by id(): the slot is kept in the entry, so its id is not reused while it lives
        self._readers: dict[int, tuple[Slot, Captures, Read]] = {}
        self._label = label
        self._labels: dict[bytes | None, str] = {}

    def relabel(self, label: Labeler) -> None:
        """Label with *label* from the next block on (a configuration read again)."""
        self._label, self._labels = label, {}

    def label(self, upstream: str | None) -> str:
        return self._label(upstream)

    def count(self, block: Block) -> None:
        for k, slot, hits in block.runs:
            if k not in self._wanted:
                continue
            captures, read = self._reader(slot)
            incident, source = slot.incident.key
            for raw, n in Counter(read(hits)).items():
                label = self._labels.get(raw)
                if label is None:
                    if len(self._labels) >= _LABELS_KEPT:
                        self._labels.clear()
                    label = self._labels[raw] = self._label(
                        convert(captures, (raw,)).get("upstream"))
                key = (incident, source, label)
                self.counts[key] = self.counts.get(key, 0) + n

    def _reader(self, slot: Slot) -> tuple[Captures, Read]:
        entry = self._readers.get(id(slot))
        if entry is None:
            entry = self._readers[id(slot)] = (slot, *_upstream_reader(slot))
        return entry[1], entry[2]

    def with_zeros(self, labels: Iterable[str]) -> dict[UpstreamKey, int]:
        """The counts, plus a 0 for every per-upstream incident and label not seen yet:
        alerts see a series before its first incident, so ``increase()`` counts it."""
        out = {(i, s, label): 0 for i, s in self.keys for label in labels}
        out.update(self.counts)
        return out
