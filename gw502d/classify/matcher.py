"""The classifier: the whole catalog compiled into one anchored regular expression.

Every family contributes ``PREFIX(?:MESSAGE1()|MESSAGE2()|...)`` and the families are
joined in one alternation, matched with ``re.match`` on raw bytes. A line that is no
incident is rejected in C within a few bytes of its structured prefix and never reaches
Python. Two details keep that fast:

- each variant ends with an empty marker group; it closes last, so ``m.lastindex`` names
  the :class:`Slot`, and no branch starts with a group (sre skips a branch whose first
  literal or character class does not match without entering it);
- the hot regex captures only the facts the remediation needs (the incident's
  ``evidence``) and those the caller asks for at build time (``capture``: root causes are
  paired on a line's time, upstream and worker pid); all facts of a hit come from the
  slot's own full regex, run on hits only.

Classification looks only at the message at its position after the prefix: the
client-controlled request, host and referrer nginx appends can carry any text, and a
match that starts anywhere else is impossible by construction.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from operator import attrgetter, methodcaller
from typing import Any

from gw502d.classify.catalog import Catalog, Family, Incident
from gw502d.classify.predicates import PREDICATES, VALUES
from gw502d.classify.prefilter import prefilter
from gw502d.parse import FAMILIES, FORMATS
from gw502d.parse.record import convert
from gw502d.parse.record import facts as group_facts
from gw502d.parse.template import Compiled, Converter

Captures = tuple[tuple[str, Converter], ...]
RawKey = tuple[bytes | None, ...]
Reader = Callable[[re.Match[bytes]], RawKey]


def reader(groups: tuple[int, ...]) -> Reader:
    """A function reading *groups* of a match as a tuple of raw bytes (cheap, hashable)."""
    if not groups:
        return lambda m: ()
    if len(groups) == 1:
        (g,) = groups
        return lambda m: (m.group(g),)
    return methodcaller("group", *groups)


_LINE = attrgetter("string")


class LazyPattern:
    """A regex compiled on first use: a slot's full regex reads a line's every fact, and
    most slots never need one (start-up compiled a hundred of them)."""

    __slots__ = ("_pattern", "_source")

    def __init__(self, source: bytes) -> None:
        self._source = source
        self._pattern: re.Pattern[bytes] | None = None

    def match(self, line: bytes) -> re.Match[bytes] | None:
        if self._pattern is None:  # two threads may both compile: the same pattern
            self._pattern = re.compile(self._source, re.DOTALL)
        return self._pattern.match(line)


class FactReader:
    """Reads some captured facts of a slot's hits as raw byte tuples (cheap, hashable).

    The reading is in C (``map`` over a ``methodcaller``; one group's values made tuples
    by ``zip``). On a line its server may have cut (nginx: 2047 bytes) the facts the hot
    regex still captured there read as None (the shipped formats capture none there: the
    slot's ``hot_cut_facts`` is empty and no line is measured).
    """

    def __init__(self, slot: Slot, captures: Captures, groups: tuple[int, ...]) -> None:
        self._read = reader(groups)
        self._cut = slot.cut_at or 0
        self._drop = [i for i, (name, _) in enumerate(captures) if name in slot.hot_cut_facts]
        self._group = methodcaller("group", groups[0]) if len(groups) == 1 else None

    def __call__(self, hits: list[re.Match[bytes]]) -> Iterator[RawKey]:
        if self._drop and self._cut and max(map(len, map(_LINE, hits))) >= self._cut:
            return map(self._read_uncut, hits)
        if self._group is not None:
            return zip(map(self._group, hits))
        return map(self._read, hits)

    def _read_uncut(self, m: re.Match[bytes]) -> RawKey:
        raw = self._read(m)
        if len(m.string) < self._cut:
            return raw
        fixed = list(raw)
        for i in self._drop:
            fixed[i] = None
        return tuple(fixed)


@dataclass(frozen=True, slots=True)
class Hit:
    """A classified line: the catalog entry and the facts read from the line."""

    incident: Incident
    facts: dict[str, Any]
    line: bytes


@dataclass(frozen=True, slots=True)
class Slot:
    """One message variant inside the combined regex and the entry it means.

    Entries that share a template get a variant each: one with a ``when`` predicate matches
    only the values it holds for (compiled into the regex, tried first), the entry without
    one the rest. The hot regex captures ``evidence`` (the facts the remediation reads) and
    ``extra`` (what the classifier was asked to capture besides, e.g. the facts root causes
    are paired on, the prefix's ``time`` included; in ``extra_groups``); ``counted`` (in
    ``counted_groups``) are the evidence and the message's extra facts, which repeat from
    line to line: a block's hits are read for them once and counted by value
    (:class:`~gw502d.classify.block.Run`); ``full`` captures every fact of the line.
    """

    group: int
    family: Family
    incident: Incident
    message: Compiled
    evidence: Captures
    extra: Captures
    extra_groups: tuple[int, ...]
    counted: Captures
    counted_groups: tuple[int, ...]
    full: LazyPattern
    full_captures: tuple[tuple[Captures, int], ...]
    cut_at: int | None = None
    cut_facts: frozenset[str] = frozenset()
    # the cut facts the hot regex still captures on a line that long (its guarded context
    # captures none there): the readers of hits null these
    hot_cut_facts: frozenset[str] = frozenset()

    def counted_reader(self) -> FactReader:
        """Reads the ``counted`` facts of this slot's hits."""
        return FactReader(self, self.counted, self.counted_groups)

    def extra_reader(self, names: Iterable[str]) -> tuple[Captures, FactReader]:
        """The extra captures named *names*, and a reader of them in that order."""
        chosen = [(c, g) for c, g in zip(self.extra, self.extra_groups, strict=True)
                  if c[0] in set(names)]
        captures = tuple(c for c, _ in chosen)
        return captures, FactReader(self, captures, tuple(g for _, g in chosen))

    def hot_facts(self, raw: RawKey) -> dict[str, Any]:
        """Convert a raw evidence key back into named facts (with the predicate's, if any)."""
        return self.add_predicate_facts(convert(self.evidence, raw))

    def add_predicate_facts(self, facts: dict[str, Any]) -> dict[str, Any]:
        """*facts* plus what the entry's predicate adds (``method`` for a block size)."""
        if self.incident.when is not None:
            facts.update(PREDICATES[self.incident.when](facts) or {})
        return facts

    def is_cut(self, line: bytes) -> bool:
        """Whether *line* may have been cut by its server (its ``cut_facts`` untrusted)."""
        return self.cut_at is not None and len(line) >= self.cut_at

    def resolve(self, line: bytes) -> Hit:
        """Every fact of *line* (prefix, message, context) that can be trusted."""
        m = self.full.match(line)
        found: dict[str, Any] = {}
        if m is not None:  # always: the hot regex matched the same text
            for captures, first in self.full_captures:
                found.update(group_facts(m, captures, first))
        if self.is_cut(line):
            for name in self.cut_facts:
                found.pop(name, None)
        return Hit(self.incident, self.add_predicate_facts(found), line)


def _counted(hot: Captures, evidence: AbstractSet[str],
             message_facts: AbstractSet[str]) -> Captures:
    """The facts a block's hits are counted by: the evidence and the message's other
    captured facts (a prefix's time differs from line to line), each name once."""
    chosen: dict[str, tuple[str, Converter]] = {}
    for name, convert_ in hot:
        if (name in evidence or name in message_facts) and name not in chosen:
            chosen[name] = (name, convert_)
    return tuple(chosen.values())


def _factor(items: list[tuple[str, str]]) -> list[str]:
    """Alternatives as a trie over their literal leads, so a shared start is tested once.

    Items are (lead literal, rest regex) in priority order; order is kept among items that
    share a start, and items whose lead is used up come after the longer ones.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for lead, rest in items:
        groups.setdefault(lead[:1], []).append((lead, rest))
    done = groups.pop("", [])
    out = []
    for group in groups.values():
        if len(group) == 1:
            lead, rest = group[0]
            out.append(re.escape(lead) + rest)
            continue
        common = os.path.commonprefix([lead for lead, _ in group])  # noqa: RUF071 - wanted
        inner = _factor([(lead[len(common):], rest) for lead, rest in group])
        out.append(f"{re.escape(common)}(?:{'|'.join(inner)})")
    return out + [rest for _, rest in done]


class Classifier:
    """Compiled catalog. ``match`` is the hot-path entry point; ``classify`` the full one.

    >>> from gw502d.classify.catalog import load_catalog
    >>> c = Classifier(load_catalog())
    >>> c.classify(b"invalid request block size: 21573 (max 4096)...skip").incident.id
    'protocol_mismatch'
    """

    def __init__(self, catalog: Catalog, families: Iterable[str] | None = None, *,
                 capture: Iterable[str] = ()) -> None:
        wanted = set(families) if families is not None else None
        self._capture = frozenset(capture)
        # Busiest and strictest prefixes first; uWSGI's prefix is optional, so it goes last.
        order = {name: n for n, name in enumerate(FAMILIES)}
        self.catalog = catalog
        self.families = tuple(sorted(
            (f for f in catalog.families if wanted is None or f.name in wanted),
            key=lambda f: order.get(f.name, len(order)),
        ))
        self._pending: list[tuple[str, str, Slot]] = []
        parts = [self._family(fam) for fam in self.families]
        self.pattern = re.compile(("|".join(p for p in parts if p) or "(?!)").encode(),
                                  re.DOTALL)
        self.match = self.pattern.match
        self.prefilter = prefilter(slot.message.regex for _, _, slot in self._pending)
        index = self.pattern.groupindex
        self.slots: dict[int, Slot] = {}
        for tag, family_tag, slot in self._pending:
            def group(name: str, tag: str = tag, family_tag: str = family_tag) -> int:
                return index.get(f"{tag}_{name}") or index[f"{family_tag}_{name}"]

            self.slots[index[tag]] = replace(
                slot, group=index[tag],
                extra_groups=tuple(group(name) for name, _ in slot.extra),
                counted_groups=tuple(group(name) for name, _ in slot.counted))

    def _family(self, fam: Family) -> str:
        variants: dict[str, tuple[Compiled, list[Incident]]] = {}
        for incident in fam.incidents:
            for message in incident.messages:
                variants.setdefault(message.regex, (message, []))[1].append(incident)
        if not variants:
            return ""
        alternatives = []
        # The prefix is shared by the family's variants: what it captures is named after
        # the family (``f2_time``), once.
        family_tag = f"f{len(self._pending)}"
        prefix = fam.prefix.keeping(self._capture, family_tag)
        fmt = FORMATS.get(fam.name)
        # O(1) in sre: a bounded repeat of "any byte" jumps, it does not walk the line
        guard = f"(?!.{{{fmt.max_length + 1}}})" if fmt is not None and fmt.max_length else ""
        # A line as long as its server cuts them sets a mark (O(1) too); the slots then skip
        # the context whose facts it cannot vouch for, so no reader of hits checks lengths
        cut = None
        if fmt is not None and fmt.cut_at and fmt.cut_facts and fam.evidence_context:
            cut = f"{family_tag}_cut"
            guard += f"(?:(?=.{{{fmt.cut_at}}})(?P<{cut}>)|)"
        for message, incidents in variants.values():
            # entries with a predicate first (they match only where it holds), then the
            # first without one; a later one with the same template could never match
            chosen = [i for i in incidents if i.when is not None]
            chosen += [i for i in incidents if i.when is None][:1]
            alternatives += [self._slot(fam, i, message, family_tag, prefix.captures, cut=cut)
                             for i in chosen]
        return f"{guard}{prefix.regex}(?:{'|'.join(_factor(alternatives))})"

    def _slot(self, fam: Family, incident: Incident, message: Compiled, family_tag: str,
              prefix: Captures, *, cut: str | None) -> tuple[str, str]:
        """Register the slot for one variant; return its hot regex as (lead, rest).

        Groups are named after the slot (``s3_upstream``, marker ``s3``): factoring reorders
        the alternatives, so their numbers are only known once the whole regex is built.
        """
        evidence = set(incident.evidence)
        wanted = evidence | self._capture
        only = None
        if incident.when is not None:
            fact, values = VALUES[incident.when]
            evidence.add(fact)
            wanted.add(fact)
            only = {fact: f"0*+(?:{'|'.join(map(str, sorted(values, reverse=True)))})"}
        tag = f"s{len(self._pending)}"
        hot_message = message.keeping(wanted, tag, only)
        body, hot = hot_message.tail, hot_message.captures
        if fam.evidence_context is not None:
            # nginx's upstream field: optional, so a line cut at 2048 bytes still counts
            hot_context = fam.evidence_context.keeping(wanted, tag)
            if hot_context.captures:
                context = f"(?:{hot_context.regex}|)"
                body += context if cut is None else f"(?({cut})|{context})"
                hot += hot_context.captures
        hot += prefix
        full_regex = fam.prefix.regex + message.regex + (fam.context.regex if fam.context else "")
        full_caps: list[tuple[Captures, int]] = []
        n = 1
        for part in (fam.prefix, message, fam.context):
            if part is not None:
                full_caps.append((part.captures, n))
                n += len(part.captures)
        fmt = FORMATS.get(fam.name)
        self._pending.append((tag, family_tag, Slot(
            group=0, family=fam, incident=incident, message=message,
            evidence=tuple(c for c in hot if c[0] in evidence),
            extra=tuple(c for c in hot if c[0] in self._capture), extra_groups=(),
            counted=_counted(hot, evidence, self._capture - {name for name, _ in prefix}),
            counted_groups=(),
            full=LazyPattern(full_regex.encode()), full_captures=tuple(full_caps),
            cut_at=fmt.cut_at if fmt is not None else None,
            cut_facts=fmt.cut_facts if fmt is not None else frozenset(),
            hot_cut_facts=frozenset(name for name, _ in (hot_message.captures if cut else hot)
                                    if fmt is not None and name in fmt.cut_facts),
        )))
        return hot_message.lead, f"{body}(?P<{tag}>)"

    def hits(self, lines: list[bytes]) -> list[re.Match[bytes]]:
        """The matches among *lines*, in line order: of the lines the prefilter names, or
        of every line (no prefilter, or a block it leaves to the regex)."""
        chosen = self.prefilter.candidates(lines) if self.prefilter is not None else None
        return list(filter(None, map(self.match, lines if chosen is None else chosen)))

    def classify(self, line: bytes) -> Hit | None:
        """Classify one line (bytes, without its newline) with all its facts."""
        m = self.match(line)
        return None if m is None or m.lastindex is None else self.slots[m.lastindex].resolve(line)
