#!/usr/bin/env python3
"""Crafted long lines against every message template: the worst time to match and to
classify one 64 KiB line (issue 12: every shape must stay linear and under 1 ms).

For each template of the catalog, lines are built from its own pieces: the family's
prefix, the template's literal lead, then its literal fragments (" while ", '" (fd: ', ...)
repeated up to the size, with and without a valid ending, so a regex that backtracks over
them shows it. The two lines the issue measured are included.

    python3 bench/hostile_lines.py                 # 64 KiB, best of 5 per line
    python3 bench/hostile_lines.py --size 262144
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gw502d.classify.catalog import load_catalog  # noqa: E402
from gw502d.classify.matcher import Classifier  # noqa: E402

PREFIX = {"nginx": b"2024/05/01 10:00:00 [error] 812#812: *3 ", "uwsgi": b"",
          "gunicorn": b"[2024-05-01 10:00:00 +0000] [812] [ERROR] ", "werkzeug": b""}
ISSUE = [
    ("nginx invalid header + many 'x while '",
     PREFIX["nginx"] + b"upstream sent invalid header: " + b"x while " * 8192),
    ("uWSGI listen queue + many '\" (fd: '",
     b'*** uWSGI listen queue of socket "' + b'" (fd: ' * 9362),
]


def pieces(template: str) -> list[bytes]:
    """The literal runs of a template (captures and optional markers dropped)."""
    text = re.sub(r"\{[^{}]*\}", "\0", template).replace("[?", "\0").replace("]", "\0")
    return [p.encode() for p in text.split("\0") if p.strip()]


def lines(family: str, template: str, size: int) -> list[bytes]:
    parts = pieces(template) or [b"x"]
    lead = PREFIX.get(family, b"") + parts[0]
    out = []
    for filler in {*parts[1:], b" ", b"x", b"(", b'"'}:
        body = lead + filler * (size // max(len(filler), 1))
        out += [body[:size], (body[:size - 40] + parts[-1])[:size]]
    return out


def worst(fn: object, line: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn(line)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    catalog = load_catalog()
    classifier = Classifier(catalog)
    rows = [(name, line) for name, line in ISSUE]
    for incident in catalog.incidents:
        for template in incident.templates:
            for line in lines(incident.source, template, args.size):
                rows.append((f"{incident.source}/{incident.id}: {template[:50]}", line))
    results = []
    for name, line in rows:
        results.append((worst(classifier.match, line, args.rounds),
                        worst(classifier.classify, line, args.rounds), name, len(line)))
    results.sort(reverse=True, key=lambda r: max(r[0], r[1]))
    print(f"{len(rows)} crafted lines of up to {args.size} bytes, best of {args.rounds}")
    print("| line | bytes | match ms | classify ms |\n|---|--:|--:|--:|")
    for match, classify, name, n in results[:12]:
        print(f"| {name} | {n} | {match * 1e3:.3f} | {classify * 1e3:.3f} |")
    slow = [r for r in results if max(r[0], r[1]) > 1e-3]
    print(f"over 1 ms: {len(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
