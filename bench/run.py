#!/usr/bin/env python3
"""gw502d against mtail on the same files, interleaved: throughput, CPU, memory, counts.

Generates (or reuses) the datasets of genlog.py: mixed, storm (a real storm's bursts of
thousands of incident lines a second, backend kills interleaved), storm-spread (the same
lines at ~35 a second of log time) and long. Then it runs every tool on a dataset round by
round (one run of each tool, then the next round), so a noisy neighbour slows all of them
alike. For each run: wall time, CPU time and peak RSS of the child (os.wait4). Prints
medians, lines/s, the ratio to mtail (by wall time, the target's measure, and by CPU time,
steadier on a loaded machine) and the root causes gw502d paired (and how many of them
are pairs the generator made: a backend event and the nginx line it caused), and checks
every tool's counts per (incident, source) against the generator's truth.

- ``gw502d-scan``: ``gw502d scan --format json FILE``;
- ``gw502d-follow``: the daemon as a tailer (harness.py): ``gw502d run`` follows an empty
  file, a writer process appends the dataset in 1 MiB writes; the time runs from the
  first write until /metrics says gw502d_log_lines_total = the dataset's lines. The
  writer is far faster than any reader, so its "lag back to zero" (last write -> all
  lines read) is the time to drain the backlog: a throughput figure, not a latency;
- ``mtail``: ``mtail --one_shot`` with peers/mtail/gw502d.mtail (the same catalog in RE2,
  counted by the same labels), on a unix socket (its one-shot mode still listens).

    python3 bench/run.py                      # full size, 3 rounds
    python3 bench/run.py --quick              # a twentieth of the lines, 1 round: a smoke test
    python3 bench/run.py --only gw502d-scan,mtail --datasets storm,storm-spread

mtail comes from Debian's package ``mtail``; without it its rows are skipped with a
message. Latency, sustained writing, idle CPU and RSS are in follow.py; catalog size and
followed files in scaling.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from datasets import DATA, HERE, SIZES, Counts, dataset, gw502d, nonzero, truth
from harness import follow_dataset, run_child

FOLLOW = "gw502d-follow"
MTAIL_PROGS = HERE / "peers" / "mtail"


class Run(NamedTuple):
    """One run of a tool on a dataset (seconds, MB; None: the tool does not tell)."""

    wall: float
    cpu: float
    rss_mb: float
    counts: Counts
    root_causes: Counts | None  # {nginx incident: {cause: n}}
    lag: float | None = None  # gw502d-follow: last write -> every line read


def scan_run(path: Path, facts: dict[str, Any]) -> Run:
    wall, cpu, rss, stdout = run_child(gw502d("scan", "--format", "json", str(path)))
    result = json.loads(stdout)
    return Run(wall, cpu, rss, nonzero(result["counts"]), nonzero(result["root_causes"]))


def follow_run(path: Path, facts: dict[str, Any]) -> Run:
    r = follow_dataset(path, facts)
    return Run(r.wall, r.cpu, r.rss_mb, r.counts, r.root_causes, r.lag)


def mtail_runner(sockets: Path) -> Callable[[Path, dict[str, Any]], Run]:
    """mtail in one-shot mode; it still opens a listener, so a unix socket keeps it off
    the network (a stale socket file fails the next run: removed first)."""
    sock = sockets / "mtail.sock"

    def run(path: Path, facts: dict[str, Any]) -> Run:
        sock.unlink(missing_ok=True)
        wall, cpu, rss, stdout = run_child(
            ["mtail", "--one_shot", "--one_shot_format", "json", "--unix_socket", str(sock),
             "--progs", str(MTAIL_PROGS), "--logs", str(path)])
        counts: Counts = {}
        for family in json.loads(stdout).get("gw502d_incidents_total", []):
            for point in family.get("LabelValues", []):
                incident, source = point["Labels"]
                counts.setdefault(incident, {})[source] = int(point["Value"]["Value"])
        return Run(wall, cpu, rss, nonzero(counts), None)

    return run


def tools(sockets: Path) -> dict[str, Callable[[Path, dict[str, Any]], Run]]:
    chosen: dict[str, Callable[[Path, dict[str, Any]], Run]] = {
        "gw502d-scan": scan_run, FOLLOW: follow_run}
    if shutil.which("mtail"):
        chosen["mtail"] = mtail_runner(sockets)
    else:
        print("mtail not installed (apt-get install mtail): its rows are skipped",
              file=sys.stderr)
    return chosen


def measure(path: Path, chosen: dict[str, Callable[[Path, dict[str, Any]], Run]],
            rounds: int) -> tuple[dict[str, Any], bool]:
    """Every tool *rounds* times on *path*, interleaved; medians and whether counts held."""
    facts = truth(path)
    runs: dict[str, list[Run]] = {t: [] for t in chosen}
    ok = True
    for _ in range(rounds):
        for name, run in chosen.items():
            r = run(path, facts)
            runs[name].append(r)
            if r.counts != facts["shapes" if name == "mtail" else "counts"]:
                ok = False
                print(f"COUNT MISMATCH {name} {facts['mode']}: {r.counts} != "
                      f"{facts['counts']}", file=sys.stderr)
    rows: dict[str, Any] = {}
    for name, rs in runs.items():
        wall = statistics.median(r.wall for r in rs)
        causes = [r.root_causes for r in rs if r.root_causes is not None]
        pairs = [_pairs(c) for c in causes]
        rows[name] = {"wall": wall, "cpu": statistics.median(r.cpu for r in rs),
                      "rss_mb": max(r.rss_mb for r in rs), "lines_per_s": facts["lines"] / wall,
                      "root_causes": int(statistics.median(map(total, pairs))) if causes else None,
                      "agreeing": int(statistics.median(total(p & _pairs(facts["root_causes"]))
                                                        for p in pairs)) if causes else None,
                      "walls": [r.wall for r in rs],
                      "lags": [r.lag for r in rs if r.lag is not None]}
    return {"truth": {k: v for k, v in facts.items() if k != "counts"}, "tools": rows}, ok


def _pairs(counts: Counts) -> Counter[tuple[str, str]]:
    return Counter({(outer, inner): n for outer, per in counts.items() for inner, n in per.items()})


def total(pairs: Counter[tuple[str, str]]) -> int:
    return sum(pairs.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="where datasets are kept (reused)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a twentieth of the lines, 1 round")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full-size lines")
    ap.add_argument("--datasets", default=",".join(SIZES))
    ap.add_argument("--only", default="", help="comma-separated tool names")
    ap.add_argument("--json", help="write raw results here")
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    scale = 0.05 if a.quick else a.scale
    sockets = Path(tempfile.mkdtemp(prefix="gw502bench-"))
    try:
        chosen = tools(sockets)
        if a.only:
            chosen = {k: v for k, v in chosen.items() if k in a.only.split(",")}
        results: dict[str, Any] = {}
        ok = True
        for mode in a.datasets.split(","):
            path = dataset(Path(a.data), mode, round(SIZES[mode] * scale))
            results[mode], held = measure(path, chosen, rounds)
            ok = ok and held
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    print_tables(results, rounds)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


def print_tables(results: dict[str, Any], rounds: int) -> None:
    print(f"# gw502d bench, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, medians of {rounds} interleaved rounds")
    for mode, result in results.items():
        t, rows = result["truth"], result["tools"]
        per_s = t["lines_per_log_second"]
        print(f"\n## {mode}: {t['lines']:,} lines, {t['bytes'] / 1e6:.0f} MB, "
              f"{100 * t['incident_lines'] / t['lines']:.1f} % incident lines, "
              f"{t['log_seconds']:,} s of log time ({per_s['mean']:,.0f} lines/s on average, "
              f"{per_s['max']:,} in the busiest second)\n")
        mtail = rows.get("mtail")
        made = total(_pairs(t["root_causes"]))
        print("| tool | median s | lines/s | CPU s | peak RSS MB | vs mtail | vs mtail, CPU | "
              f"root causes found (as generated, of {made:,}) |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|")
        for name, r in rows.items():
            ratio = f"{r['lines_per_s'] / mtail['lines_per_s']:.2f}x" if mtail else "n/a"
            by_cpu = f"{mtail['cpu'] / r['cpu']:.2f}x" if mtail and r["cpu"] else "n/a"
            causes = "n/a" if r["root_causes"] is None else (
                f"{r['root_causes']:,} ({r['agreeing']:,})")
            print(f"| {name} | {r['wall']:.3f} | {r['lines_per_s'] / 1e6:.2f}M | {r['cpu']:.2f} "
                  f"| {r['rss_mb']:.0f} | {ratio} | {by_cpu} | {causes} |")
        if rows.get(FOLLOW, {}).get("lags"):
            lags = ", ".join(f"{x:.3f}" for x in rows[FOLLOW]["lags"])
            print(f"\n{FOLLOW}: lag back to zero after the writer's last 1 MiB write: median "
                  f"{statistics.median(rows[FOLLOW]['lags']):.3f} s (runs: {lags})")


if __name__ == "__main__":
    sys.exit(main())
