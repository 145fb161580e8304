#!/usr/bin/env python3
"""The classify step against a faster regex engine as its prefilter: does Hyperscan win?

gw502d matches every line with one combined ``re`` pattern (``Classifier.match``, in C via
``map``). Hyperscan (``pip install hyperscan``: Intel's multi-pattern engine, wheels for
x86-64 and arm64) can scan a whole block at once; as a prefilter it would name the lines
that may be incidents, and only those would go to ``re`` for the slot and facts. Both give
the same hits (checked); printed per dataset: CPU µs per line of each way, the candidate
lines Hyperscan passes on, and its compile time (paid at every start).

    python3 bench/alternatives.py                 # mixed, storm, long: 100,000 lines each
    python3 bench/alternatives.py --lines 400000 --datasets mixed

Without hyperscan installed it says so and measures ``re`` alone.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import DATA, ROOT, dataset

sys.path.insert(0, str(ROOT))
from gw502d.classify.catalog import Catalog, load_catalog  # noqa: E402
from gw502d.classify.events import EVENT_FACTS  # noqa: E402
from gw502d.classify.matcher import Classifier  # noqa: E402

_NAMED = re.compile(r"\(\?P<[^>]+>")


def _plain(regex: str) -> str:
    """*regex* as Hyperscan takes it in prefilter mode: no names, no possessive forms."""
    regex = _NAMED.sub("(?:", regex)
    return regex.replace("*+", "*").replace("++", "+").replace("?+", "?")


def prefilter(catalog: Catalog) -> tuple[Any, float]:
    """A Hyperscan database: per family, its prefix then any message's literal start (or
    the message when it has none), anchored at a line's start; and its compile time."""
    import hyperscan  # noqa: PLC0415 - optional: only this comparison needs it

    expressions = []
    for family in catalog.families:
        leads = sorted({re.escape(m.lead) if m.lead else f"(?:{_plain(m.regex)})"
                        for i in family.incidents for m in i.messages})
        expressions.append(f"^{_plain(family.prefix.regex)}(?:{'|'.join(leads)})".encode())
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    flags = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_MULTILINE | hyperscan.HS_FLAG_DOTALL
    start = time.process_time()
    db.compile(expressions=expressions, ids=list(range(len(expressions))),
               elements=len(expressions), flags=[flags] * len(expressions))
    return db, time.process_time() - start


def with_prefilter(db: Any, match: Callable[[bytes], Any], data: bytes) -> list[Any]:
    """The hits of *data*: Hyperscan names candidate line ends, ``re`` decides."""
    ends: list[int] = []
    db.scan(data, match_event_handler=lambda _id, _start, end, _flags, _ctx: ends.append(end))
    hits, last = [], -1
    for end in ends:
        start = data.rfind(b"\n", 0, end) + 1
        if start == last:
            continue
        last = start
        stop = data.find(b"\n", end)
        m = match(data[start:stop if stop >= 0 else len(data)])
        if m is not None:
            hits.append(m)
    return hits


def cpu(f: Callable[[], list[Any]], rounds: int) -> tuple[float, list[Any]]:
    best, result = float("inf"), []
    for _ in range(rounds):
        start = time.process_time()
        result = f()
        best = min(best, time.process_time() - start)
    return best, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--datasets", default="mixed,storm,long")
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3, help="the best of these is kept")
    a = ap.parse_args()
    catalog = load_catalog()
    match = Classifier(catalog, capture=EVENT_FACTS).match
    try:
        db, compile_s = prefilter(catalog)
    except ImportError:
        db, compile_s = None, 0.0
        print("hyperscan not installed (pip install hyperscan): re alone", file=sys.stderr)
    print(f"Hyperscan prefilter compile: {compile_s:.3f} s CPU" if db is not None else "")
    print("| dataset | lines | re: split + match µs/line | Hyperscan + re µs/line | "
          "candidates | hits |")
    print("|---|--:|--:|--:|--:|--:|")
    for mode in a.datasets.split(","):
        data = dataset(Path(a.data), mode, a.lines).read_bytes()
        n = data.count(b"\n")
        t_re, hits = cpu(lambda: list(filter(None, map(match, data.split(b"\n")))), a.rounds)
        row = "n/a | n/a"
        if db is not None:
            ends: list[int] = []
            db.scan(data, match_event_handler=lambda _i, _s, e, _f, _c: ends.append(e))
            t_hs, fast = cpu(lambda: with_prefilter(db, match, data), a.rounds)
            if [m.string for m in fast] != [m.string for m in hits]:
                raise SystemExit(f"{mode}: the prefilter lost or added hits")
            row = f"{t_hs / n * 1e6:.2f} | {len(ends):,}"
        print(f"| {mode} | {n:,} | {t_re / n * 1e6:.2f} | {row} | {len(hits):,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
