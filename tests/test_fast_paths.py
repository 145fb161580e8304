"""Each fast path against its plain counterpart, on the same random input (property tests).

The hot path works per block: one combined regex over every line in C, hits sorted into
runs per slot, facts read from the hot match, identical events counted in C, and spans of
undated lines found from their neighbours. The plain counterparts work line by line: one
line per block, every fact from the slot's full regex. A difference is a bug in the fast
path (or a fact the hot regex captures differently). The pairing search has its own
counterpart in test_root_cause.py.
"""

from __future__ import annotations

import platform
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gw502d.classify.block import Block, Paired, Run
from gw502d.classify.catalog import load_catalog
from gw502d.classify.events import EVENT_FACTS, FACTS
from gw502d.classify.matcher import Classifier
from gw502d.classify.prefilter import prefilter, required_literal
from gw502d.classify.tally import Tallies
from gw502d.export.incidents import RecentIncidents, Seen
from gw502d.parse.record import convert
from gw502d.remediate.root_causes import Timeline

CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG, capture=EVENT_FACTS)
# Every example line of the catalog (incidents, companions, benign lines) and some noise
LINES = sorted({ex.line.encode() for i in CATALOG.incidents for ex in i.examples}) + [
    b"", b"noise", b"2026/11/20 03:00:01 [notice] 1#1: signal process started",
    b"[pid: 2204|app: 0|req: 1/8] 10.0.0.1 () {40 vars in 518 bytes} "
    b"[Fri Nov 20 03:00:02 2026] GET / => generated 17 bytes in 1070 msecs (HTTP/1.1 200) "
    b"3 headers in 163 bytes (3 switches on core 0)",
]
lines_and_cuts = st.lists(st.sampled_from(LINES), max_size=60).flatmap(
    lambda lines: st.tuples(st.just(lines),
                            st.lists(st.integers(0, len(lines)), max_size=6).map(sorted)))


def _blocks(lines: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    edges = [0, *cuts, len(lines)]
    return [lines[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def _tally(blocks: list[list[bytes]]) -> tuple[Any, ...]:
    tallies = Tallies(CATALOG, capture=EVENT_FACTS)
    for lines in blocks:
        tallies.count(Block("log", None, lines, 0.0))
    counts, companions, _ = tallies.totals()
    evidence = {key: sorted(map(repr, tallies.evidence(key))) for key in CATALOG.keys}
    return counts, companions, evidence


@settings(max_examples=150, deadline=None)
@given(lines_and_cuts)
def test_counting_blocks_is_counting_line_by_line(case: tuple[list[bytes], list[int]]) -> None:
    lines, cuts = case
    per_block = _tally(_blocks(lines, cuts))
    assert per_block == _tally([[line] for line in lines])
    counts, companions, _ = per_block
    # every line the full classifier calls an incident is counted once: as one, or as a
    # companion of one (a consequence line ending an event counted before)
    hits = sum(CLASSIFIER.classify(line) is not None for line in lines)
    assert sum(counts.values()) + sum(companions.values()) == hits


def _events(blocks: list[list[bytes]]) -> Counter[tuple[Any, ...]]:
    timeline = Timeline(CATALOG.keys)
    tallies = Tallies(CATALOG, capture=EVENT_FACTS)
    for lines in blocks:
        block = Block("log", None, lines, 0.0)
        tallies.count(block)
        timeline.add(block)
    found: Counter[tuple[Any, ...]] = Counter()
    for e in timeline._events:  # noqa: SLF001 - what the timeline keeps is the subject
        found[(e.time, e.incident, e.source, tuple(sorted(e.facts.items())), e.span)] += e.n
    return found


def _plain_events(lines: list[bytes]) -> Counter[tuple[Any, ...]]:
    """Every watched line read on its own (no identical lines to count together)."""
    return _events([[line] for line in lines])


def test_evidence_of_an_incident_whose_messages_capture_different_facts() -> None:
    """Werkzeug's bind failure is two lines, one without the port (the case the property test
    above found): the evidence is read back with the message that has it, in any order."""
    slots = Classifier(CATALOG, capture=EVENT_FACTS).slots.values()
    shapes: dict[Any, set[tuple[str, ...]]] = {}
    for slot in slots:
        shapes.setdefault(slot.incident.key, set()).add(tuple(n for n, _ in slot.evidence))
    assert ("address_in_use", "werkzeug") in {k for k, v in shapes.items() if len(v) > 1}
    lines = [b"OSError: [Errno 98] Address already in use",
             b"Port 34153 is in use by another program. Either identify and stop that program, "
             b"or start the server with a different port."]
    for order in (lines, lines[::-1]):
        for blocks in ([order], [[line] for line in order]):
            _, _, evidence = _tally(blocks)
            assert evidence[("address_in_use", "werkzeug")] == [repr(({"port": 34153}, 1))]


@settings(max_examples=150, deadline=None)
@given(lines_and_cuts)
def test_events_counted_together_are_the_lines_read_alone(
        case: tuple[list[bytes], list[int]]) -> None:
    lines, _ = case
    # one block: identical events counted in C; spans need neighbours, so compare undated
    # events without them (test_root_cause checks spans against real logs)
    together = Counter({(t, i, s, f): 0 for t, i, s, f, _ in _events([lines])})
    for (t, i, s, f, _), n in _events([lines]).items():
        together[(t, i, s, f)] += n
    alone: Counter[tuple[Any, ...]] = Counter()
    for (t, i, s, f, _), n in _plain_events(lines).items():
        alone[(t, i, s, f)] += n
    assert +together == +alone


def _padded(line: bytes, length: int) -> bytes:
    """*line* with its request's URI grown until the line is *length* bytes."""
    return line.replace(b" HTTP/1.1\"", b"x" * (length - len(line)) + b" HTTP/1.1\"", 1)


# nginx lines around the length it cuts records at (2047 bytes): from there on the upstream
# field may be the client's, and neither the hot regex nor the full one may report it
_AT_THE_CUT = [_padded(line, n) for line in LINES
               if b'upstream: "' in line and b' HTTP/1.1"' in line and len(line) < 2000
               for n in (2046, 2047, 2048)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LINES + _AT_THE_CUT))
def test_facts_the_hot_regex_captures_are_the_full_regexes(line: bytes) -> None:
    m = CLASSIFIER.match(line)
    hit = CLASSIFIER.classify(line)
    assert (m is None or m.lastindex is None) == (hit is None)
    if m is None or m.lastindex is None or hit is None:
        return
    slot = CLASSIFIER.slots[m.lastindex]
    # m.lastindex names the variant that matched: its own full regex reads the line
    assert slot.full.match(line) is not None
    # the pairing facts are all facts of the message: counted with the run's, once
    captures = tuple(c for c in slot.counted if c[0] in FACTS)
    assert captures == tuple(c for c in slot.extra if c[0] in FACTS)
    run = Run(0, slot, [m], slot.counted_reader())
    (raw,) = run.count_of(captures)
    hot = convert(captures, raw)
    assert hot == {name: hit.facts[name] for name in hot if name in hit.facts}
    assert ("upstream" in hot) == ("upstream" in hit.facts)
    (evidence,) = run.count_of(slot.evidence)
    assert slot.hot_facts(evidence) == {name: value for name, value in hit.facts.items()
                                        if name in slot.hot_facts(evidence)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(LINES + _AT_THE_CUT), max_size=60))
def test_a_runs_counts_are_its_hits_read_one_by_one(lines: list[bytes]) -> None:
    """Each stage's facts taken from the run's counts (read once, projected) are the ones
    the full regex reads from each hit alone."""
    block = Block("log", None, lines, 0.0)
    Tallies(CATALOG, capture=EVENT_FACTS).count(block)
    for run in block.runs:
        slot = run.slot
        for captures in (slot.evidence, tuple(c for c in slot.counted if c[0] in FACTS),
                         tuple(c for c in slot.evidence if c[0] == "upstream"), slot.counted):
            names = [name for name, _ in captures]
            counted: Counter[frozenset[tuple[str, Any]]] = Counter()
            for raw, n in run.count_of(captures).items():
                counted[frozenset(convert(captures, raw).items())] += n
            alone = Counter(frozenset((name, value) for name, value in
                                      slot.resolve(m.string).facts.items() if name in names)
                            for m in run.hits)
            assert counted == alone


# ------------------------------------------------------------------ the prefilter, checked

def _mutated(line: bytes, at: int, text: bytes, cut: bool) -> bytes:
    at = min(at, len(line))
    return line[:at] if cut else line[:at] + text + line[at:]


# Lines that hold a literal without being an incident: a 404 whose request and referrer
# carry messages (client text), a message at the wrong position
_DECOYS = [
    b'2026/11/20 03:00:01 [error] 7#7: *9 open() "/srv/upstream timed out (" failed (2: No '
    b'such file or directory), client: 1.2.3.4, server: x, request: "GET /() failed (104: '
    b'HTTP/1.1", host: "x", referrer: "invalid request block size: 9 (max 4096)...skip"',
    b"x upstream timed out (110: Connection timed out) while connecting to upstream",
]
_TEXT = st.sampled_from([b"upstream timed out (", b"(): Broken pipe [", b"\xff\x00", b"a",
                         b"failed (111: ", b" upstream: \"http://6.6.6.6\","])
_LINE = st.one_of(st.sampled_from(LINES + _DECOYS),
                  st.builds(_mutated, st.sampled_from(LINES), st.integers(0, 300), _TEXT,
                            st.booleans()))
_PREFILTERED = Classifier(CATALOG, capture=EVENT_FACTS)  # one, so storms switch it off and on


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_LINE, max_size=80), max_size=8))
def test_the_prefilter_finds_the_hits_the_regex_finds_on_every_line(
        blocks: list[list[bytes]]) -> None:
    """Hits through the prefilter (Hyperscan names the lines holding a literal) against the
    regex on every line, block after block on one classifier: dense blocks turn the
    prefilter off for a while, long lines skip it. Every hit is the block's own line
    object (the scan's jsonl and journal times find lines by identity)."""
    for lines in blocks:
        fast = _PREFILTERED.hits(lines)
        plain = list(filter(None, map(_PREFILTERED.match, lines)))
        assert [(m.string, m.lastindex, m.groups()) for m in fast] == [
            (m.string, m.lastindex, m.groups()) for m in plain]
        ids = set(map(id, lines))
        assert all(id(m.string) in ids for m in fast)


def test_the_shipped_catalog_is_prefiltered_where_hyperscan_installs() -> None:
    """Hyperscan installs on x86-64 (a dependency there): the property test above must run
    the fast path, not fall back to re without anyone noticing."""
    if platform.machine() == "x86_64":
        assert CLASSIFIER.prefilter is not None
    noise = [b"2026/11/20 03:00:01 [notice] 1#1: signal process started"] * 50
    storm = [ex for ex in LINES if CLASSIFIER.match(ex)] * 3
    c = Classifier(CATALOG)
    assert c.prefilter is None or c.prefilter.candidates(noise) == []
    assert c.prefilter is None or c.prefilter.candidates(storm) is not None
    # after a block of candidates only, the next blocks go to re whole
    assert c.prefilter is None or c.prefilter.candidates(noise) is None
    assert c.hits(noise) == [] and len(c.hits(storm)) == len(storm)


def test_a_message_without_a_long_literal_leaves_every_line_to_the_regex() -> None:
    assert required_literal(r"(?P<x>\w+)\ died") is None
    assert required_literal(r"(?i)upstream\ timed\ out") is None
    assert required_literal(r"upstream\ timed\ out\ \((?P<n>\d+)\)") == b"upstream timed out ("
    assert prefilter([r"upstream\ timed\ out", r"(?P<x>\w+)\ died"]) is None


# ------------------------------------------------------------------ causes on recent lines

_SLOTS = {CLASSIFIER.slots[g].incident.id: CLASSIFIER.slots[g] for g in CLASSIFIER.slots}
_NAMES = sorted(_SLOTS)[:4]
_TIMES = st.sampled_from([0, 1, 59, 60, 61, 120])  # a minute apart or not, and its edge


def _named_one_pair_at_a_time(seen: list[Seen], pairs: list[Paired]) -> None:
    """The plain rule: each pair in turn names its newest unnamed lines near its time."""
    for paired in pairs:
        left = paired.n
        for s in reversed(seen):
            if left and s.cause is None and s.slot.incident.id == paired.incident and (
                    paired.time is None or abs(s.time - paired.time) <= 60.0):
                s.cause = paired.cause
                left -= 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NAMES), _TIMES, st.booleans()), max_size=40),
       st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(["a", "b"]),
                          st.one_of(st.none(), _TIMES), st.integers(1, 4)), max_size=8))
def test_one_walk_names_the_lines_each_pair_would_name_in_turn(
        lines: list[tuple[str, int, bool]], pairs: list[tuple[str, str, int | None, int]],
) -> None:
    recent = RecentIncidents(len(lines) or 1)
    plain: list[Seen] = []
    for name, t, named in lines:
        recent.add(Seen(_SLOTS[name], b"x", float(t), "log", "old" if named else None))
        plain.append(Seen(_SLOTS[name], b"x", float(t), "log", "old" if named else None))
    found = [Paired(name, cause, None if t is None else float(t), n)
             for name, cause, t, n in pairs]
    block = Block("log", None, [], 0.0, paired=found)
    recent.keep(block)
    _named_one_pair_at_a_time(plain, found)
    assert [s.cause for s in recent.copy()] == [s.cause for s in plain]
