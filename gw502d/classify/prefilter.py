"""The prefilter: Hyperscan names the lines of a block that may be incidents, ``re`` decides.

Every message of the catalog holds a literal that any line it matches must contain (``upstream
timed out (``, ``(): Broken pipe [``). Hyperscan looks for all of them at once over the whole
block (about a gigabyte a second here, whatever the catalog's size), and only the lines where one
occurs go to the classifier's regex. Most lines of an ordinary log are no incident and cost
no Python and no ``re`` at all; a line is still classified on its structure (the message at
its position), so a literal in a client's referrer only makes a candidate that ``re`` turns
down.

Optional: Hyperscan has wheels for x86-64 only. Without it, or when a message of the catalog
has no literal long enough, every line goes to the regex, as it does in a storm (where
nearly every line is a candidate, so looking first would only add work). Both ways give the
same hits; ``tests/test_fast_paths.py`` checks it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

try:
    import hyperscan
except ImportError:  # not built for this machine (arm64): every line goes to re
    hyperscan = None  # type: ignore[assignment]

# A shorter literal would pass most lines of a busy log (nginx's own words)
MIN_LITERAL = 6
# Blocks with more candidates than this share of their lines go to re whole for a while
DENSE = 0.25
# Blocks read without looking first once a block was dense, then one is looked at again
DENSE_SKIP = 32
# Lines longer than this on average: re turns a line down within its first bytes, Hyperscan
# would read them all (a block of 16 KB referrers)
LONG = 1024
# A block of this many lines is of short ones (a read is 1 MiB): not worth summing
BLOCK_LINES = 1024


def required_literal(regex: str) -> bytes | None:
    """The longest literal every match of *regex* contains (a run at its top level, not in
    a group or a branch), or None when it has none of :data:`MIN_LITERAL` bytes. ASCII
    only: the hot regex is the pattern encoded as UTF-8, where other characters are two
    bytes or more."""
    parsed = sre_parse.parse(regex)
    if parsed.state.flags & re.IGNORECASE:
        return None
    runs: list[bytes] = []
    run = bytearray()
    for op, value in [*parsed, (None, None)]:
        if op is sre.LITERAL and value != ord("\n") and value < 128:
            run.append(value)
        elif run:
            runs.append(bytes(run))
            run = bytearray()
    best = max(runs, key=len, default=b"")
    return best if len(best) >= MIN_LITERAL else None


class Prefilter:
    """The candidate lines of a block (not thread-safe: one per classifier, used under the
    caller's lock, as its tally is)."""

    def __init__(self, literals: Iterable[bytes]) -> None:
        assert hyperscan is not None
        chosen = sorted(set(literals))
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(expressions=chosen, ids=list(range(len(chosen))),
                         elements=len(chosen), literal=True)
        self._skip = 0  # blocks still to give to re whole (a storm)

    def candidates(self, lines: list[bytes]) -> list[bytes] | None:
        """The lines that hold a literal, in line order (a line holds no newline: every
        source splits on it); None: give every line to re (a storm's block, or one of long
        lines)."""
        if self._skip:
            self._skip -= 1
            return None
        if len(lines) < BLOCK_LINES and sum(map(len, lines)) > LONG * len(lines):
            return None
        data = b"\n".join(lines)
        ends: list[int] = []
        self._db.scan(data, match_event_handler=lambda _id, _from, end, _flags, _ctx:
                      ends.append(end))
        if len(ends) > DENSE * len(lines):
            self._skip = DENSE_SKIP
        ends.sort()
        chosen: list[bytes] = []
        line = at = 0
        last = -1
        for end in ends:  # the very objects of *lines*: later stages find hits by identity
            line += data.count(b"\n", at, end)
            at = end
            if line != last:
                chosen.append(lines[line])
                last = line
        return chosen


def prefilter(messages: Iterable[str]) -> Prefilter | None:
    """A prefilter for the hot regexes *messages*, or None when Hyperscan is missing or a
    message has no literal to look for."""
    if hyperscan is None:
        return None
    literals = [required_literal(regex) for regex in messages]
    if not literals or None in literals:
        return None
    return Prefilter(lit for lit in literals if lit is not None)
