#!/usr/bin/env python3
"""The classify step with and without its prefilter: what Hyperscan buys, per dataset.

gw502d matches lines with one combined ``re`` pattern (``Classifier.match``, in C via
``map``). With Hyperscan installed (a dependency on x86-64), the prefilter
(``gw502d.classify.prefilter``) first looks for every message's literal over the whole
block and only the lines holding one go to ``re`` (``Classifier.hits``); in a storm (most
lines candidates) and on long lines it steps aside. Both give the same hits (checked here,
property-tested in tests/test_fast_paths.py); printed per dataset: CPU µs per line of each
way (lines already split, as the follower hands them over), and the candidates.

    python3 bench/alternatives.py                 # mixed, storm, long, quiet: 100,000 lines
    python3 bench/alternatives.py --lines 400000 --datasets mixed

Without hyperscan installed it says so and measures ``re`` alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import DATA, ROOT, dataset

sys.path.insert(0, str(ROOT))
from gw502d.classify.block import Match  # noqa: E402
from gw502d.classify.catalog import load_catalog  # noqa: E402
from gw502d.classify.events import EVENT_FACTS  # noqa: E402
from gw502d.classify.matcher import Classifier  # noqa: E402
from gw502d.source.lines import BLOCK_SIZE  # noqa: E402


def cpu(f: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.process_time()
        result = f()
        best = min(best, time.process_time() - start)
    return best, result


def blocks(data: bytes) -> list[list[bytes]]:
    """*data* in the follower's 1 MiB reads, split into lines."""
    out, at = [], 0
    while at < len(data):
        end = data.rfind(b"\n", at, at + BLOCK_SIZE) + 1 or len(data)
        out.append(data[at:end].split(b"\n")[:-1])
        at = end
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--datasets", default="mixed,storm,long,quiet")
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3, help="the best of these is kept")
    a = ap.parse_args()
    start = time.process_time()
    classifier = Classifier(load_catalog(), capture=EVENT_FACTS)
    built = time.process_time() - start
    pre = classifier.prefilter
    print(f"classifier built in {built:.3f} s CPU, prefilter: "
          f"{'Hyperscan' if pre is not None else 'none (pip install hyperscan)'}")
    print("| dataset | lines | re on every line µs/line | prefilter + re µs/line | "
          "candidates | hits |")
    print("|---|--:|--:|--:|--:|--:|")
    for mode in a.datasets.split(","):
        split = blocks(dataset(Path(a.data), mode, a.lines).read_bytes())
        n = sum(map(len, split))

        def plain(split: list[list[bytes]] = split) -> list[list[Match]]:
            return [list(filter(None, map(classifier.match, lines))) for lines in split]

        t_re, hits = cpu(plain, a.rounds)
        row = "n/a | n/a"
        if pre is not None:
            t_fast, fast = cpu(lambda split=split: list(map(classifier.hits, split)), a.rounds)
            if [[m.string for m in b] for b in fast] != [[m.string for m in b] for b in hits]:
                raise SystemExit(f"{mode}: the prefilter lost or added hits")
            looked = [pre.candidates(lines) for lines in split]
            candidates = sum(len(c) if c is not None else len(lines)
                             for c, lines in zip(looked, split, strict=True))
            row = f"{t_fast / n * 1e6:.2f} | {candidates:,}"
        print(f"| {mode} | {n:,} | {t_re / n * 1e6:.2f} | {row} | {sum(map(len, hits)):,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
