"""The per-upstream stage: nginx incidents that name their upstream, counted per (incident,
source, upstream label) for ``gw502d_upstream_incidents_total``.

The label is the upstream itself only when nginx's configuration passes to it
(:meth:`~gw502d.remediate.configured.HostConfig.label`), else ``other``: a log line can
name any upstream (a hostile Host header does not reach it, but a cut or forged line
might), the configuration cannot grow by itself. Work is per slot and distinct upstream
in a block (the hot match already captured it, and the block's run counted its values
for every stage: :meth:`~gw502d.classify.block.Run.count_of`), labels are remembered per
raw value.
Like :class:`~gw502d.remediate.root_causes.RootCauses`, the counts are a dict handed in
(the daemon's totals, restored from its snapshot) and added to in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gw502d.classify.block import Block
from gw502d.classify.catalog import Catalog
from gw502d.classify.matcher import Captures, RawKey, Slot
from gw502d.parse.record import convert
from gw502d.remediate.advice import per_upstream
from gw502d.remediate.nginx import OTHER

UpstreamKey = tuple[str, str, str]  # (incident, source, upstream label)
Labeler = Callable[[str | None], str]
_LABELS_KEPT = 1024  # raw upstream values remembered with their label, then forgotten


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
        self._captures: dict[int, tuple[Slot, Captures]] = {}
        self._label = label
        self._labels: dict[RawKey, str] = {}

    def relabel(self, label: Labeler) -> None:
        """Label with *label* from the next block on (a configuration read again)."""
        self._label, self._labels = label, {}

    def label(self, upstream: str | None) -> str:
        return self._label(upstream)

    def count(self, block: Block) -> None:
        for run in block.runs:
            if run.k not in self._wanted:
                continue
            captures = self._upstream(run.slot)
            incident, source = run.slot.incident.key
            for raw, n in run.count_of(captures).items():
                label = self._labels.get(raw)
                if label is None:
                    if len(self._labels) >= _LABELS_KEPT:
                        self._labels.clear()
                    label = self._labels[raw] = self._label(convert(captures, raw).get("upstream"))
                key = (incident, source, label)
                self.counts[key] = self.counts.get(key, 0) + n

    def _upstream(self, slot: Slot) -> Captures:
        """The upstream capture of *slot* (its evidence names it)."""
        entry = self._captures.get(id(slot))
        if entry is None:
            entry = self._captures[id(slot)] = (
                slot, tuple(c for c in slot.evidence if c[0] == "upstream"))
        return entry[1]

    def with_zeros(self, labels: Iterable[str]) -> dict[UpstreamKey, int]:
        """The counts, plus a 0 for every per-upstream incident and label not seen yet:
        alerts see a series before its first incident, so ``increase()`` counts it."""
        out = {(i, s, label): 0 for i, s in self.keys for label in labels}
        out.update(self.counts)
        return out
