#!/usr/bin/env python3
"""How gw502d's throughput scales with the catalog's size and with the files it follows.

- ``catalog``: ``gw502d scan`` with today's catalog, +50 % and x2 entries. The extra
  entries are synthetic, written into a temporary directory passed with
  ``--patterns-dir``: per family as many as the share asks, shaped like real messages of
  that server and sharing the first words of real ones (``upstream sent ...``,
  ``connect() failed (113: ...)``, ``open() "..." failed (13: ...)``, ``Worker (pid:N)
  ...``), so the matcher has to look at them. None matches a generated line, so the counts
  must stay equal to the truth (checked). Datasets: ``quiet`` (no incident at all: the
  cost of a line the catalog does not know), ``mixed`` and ``storm``. The cost per line is
  CPU time net of start-up (a scan of a one-line file with the same catalog), over lines.
- ``files``: ``gw502d run`` following 1, 10 and 100 files (one ``[[log]]`` each); one
  writer deals the mixed dataset to them in 256 KiB writes, in turn, as fast as it can.
  Time from the first write until /metrics counts every line.

    python3 bench/scaling.py                 # full size, 3 rounds
    python3 bench/scaling.py --quick         # a twentieth of the lines, 1 round: a smoke test
    python3 bench/scaling.py catalog --factors 1,2

Runs are interleaved round by round, as in run.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import DATA, ROOT, dataset, gw502d, nonzero, truth
from harness import follow_dataset, run_child

CHUNK = 256 * 1024
SIZES = {"quiet": 2_000_000, "mixed": 2_000_000, "storm": 500_000}
# Messages (catalog template language) of each family that the catalog does not have and
# the generator never writes, many starting as real incidents or common lines do.
VOCABULARY = {
    "nginx": (
        "upstream SSL certificate verify error: ({code:int}:{reason:text}) while "
        "{phase:ngx_phase}",
        "upstream sent more data than specified in \"Content-Length\" header while "
        "{phase:ngx_phase}",
        "upstream sent invalid chunked response while {phase:ngx_phase}",
        "upstream sent duplicate header line: \"{header:text}\" while {phase:ngx_phase}",
        "connect() failed (113: {strerror:errtext}) while {phase:ngx_phase}",
        "connect() to {peer:word} failed (101: {strerror:errtext}) while {phase:ngx_phase}",
        "open() \"{file:token}\" failed (13: {strerror:errtext})",
        "recv() failed (111: {strerror:errtext}) while {phase:ngx_phase}",
        "peer closed connection in SSL handshake while {phase:ngx_phase}",
        "SSL_read() failed ({detail:text}) while {phase:ngx_phase}",
        "zero size buf in output t:{t:int} r:{r:int} f:{f:int}",
        "client intended to send too large body: {size:int} bytes",
        "upstream server temporarily disabled while {phase:ngx_phase}",
        "worker_connections are not enough while {phase:ngx_phase}",
        "accept4() failed (24: {strerror:errtext})",
        "no resolver defined to resolve {name:word}",
    ),
    "uwsgi": (
        "!!! uWSGI process {pid:int} got Bus Error !!!",
        "worker {worker:int} killed successfully (pid: {pid:int})",
        "worker {worker:int} lifetime reached, it was running for {seconds:int} second(s)",
        "uwsgi_proto_uwsgi_parser(): {strerror:text} [{src:token} line {n:int}]",
        "epoll_ctl(): {strerror:text} [{src:token} line {n:int}]",
        "DAMN ! worker {worker:int} (pid: {pid:int}) stuck in cheaper mode :( killing it ...",
        "*** HARAKIRI ON MULE {mule:int} (pid: {pid:int}) ***",
        "invalid request packet of {size:int} bytes from {client:token}",
        "MEMORY LIMIT REACHED !!! worker {worker:int} (pid: {pid:int}) uses {mb:int}MB",
        "[deadlock-detector] a process holding a robust mutex died. recovering...",
    ),
    "gunicorn": (
        "Worker (pid:{worker_pid:int}) was sent SIGTERM!",
        "Worker (pid:{worker_pid:int}) exited with code {code:int}",
        "Worker failed to boot.",
        "Exception in worker process",
        "Connection in use: ({addr:text})",
        "Unhandled exception in main loop",
    ),
    "werkzeug": (
        "OSError: [Errno 24] Too many open files",
        "ConnectionAbortedError: [Errno 103] Software caused connection abort",
        "TimeoutError: [Errno 110] Connection timed out",
        "ssl.SSLEOFError: EOF occurred in violation of protocol{:rest}",
    ),
}


def catalog_entries() -> dict[str, int]:
    """Today's catalog: entries ([[incident]] tables) per family."""
    out: dict[str, int] = {}
    for path in sorted((ROOT / "patterns").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        out[data["family"]] = out.get(data["family"], 0) + len(data.get("incident", []))
    return out


def write_synthetic(directory: Path, factor: float) -> int:
    """Pattern files with (factor - 1) x today's entries per family; how many."""
    written = 0
    for family, count in catalog_entries().items():
        extra = round(count * (factor - 1))
        words = VOCABULARY[family]
        toml = [f"family = {json.dumps(family)}"]
        for k in range(extra):
            message = words[k % len(words)]
            if k >= len(words):  # more than the vocabulary: the same shapes, numbered
                message += f" #{k // len(words)}"
            toml += ["", "[[incident]]", f'id = "synthetic_{family}_{k}"', 'severity = "warning"',
                     "status = 502", 'summary = "A synthetic entry of bench/scaling.py"',
                     f"messages = [{json.dumps(message)}]", "evidence = []",
                     'remediation = "None: it never matches."', "docs = []"]
        if extra:
            (directory / f"synthetic-{family}.toml").write_text("\n".join(toml) + "\n")
            written += extra
    return written


def scan_cpu(path: Path, patterns: Path | None) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds of one scan and its JSON result."""
    args = ["--patterns-dir", str(patterns)] if patterns else []
    wall, cpu, _, stdout = run_child(gw502d(*args, "scan", "--format", "json", str(path)))
    return wall, cpu, json.loads(stdout)


def catalog_rows(data: Path, work: Path, modes: Sequence[str], factors: Sequence[float],
                 rounds: int, scale: float) -> tuple[list[dict[str, Any]], bool]:
    base = sum(catalog_entries().values())
    catalogs: list[tuple[float, Path | None, int]] = []
    for factor in factors:
        directory = None
        extra = 0
        if factor != 1:
            directory = work / f"patterns-x{factor:g}"
            directory.mkdir()
            extra = write_synthetic(directory, factor)
        catalogs.append((factor, directory, base + extra))
    one_line = work / "one-line.log"
    one_line.write_text("2026/11/20 03:00:00 [notice] 1#1: signal process started\n")
    files = {m: dataset(data, m, round(SIZES[m] * scale)) for m in modes}
    runs: dict[tuple[float, str], list[tuple[float, float]]] = {}
    ok = True
    for _ in range(rounds):
        for factor, directory, _ in catalogs:
            wall, cpu, _ = scan_cpu(one_line, directory)
            runs.setdefault((factor, "start-up"), []).append((wall, cpu))
            for mode, path in files.items():
                wall, cpu, result = scan_cpu(path, directory)
                runs.setdefault((factor, mode), []).append((wall, cpu))
                if nonzero(result["counts"]) != truth(path)["counts"]:
                    ok = False
                    print(f"COUNT MISMATCH catalog x{factor:g} {mode}", file=sys.stderr)
    rows = []
    for factor, _, entries in catalogs:
        start = statistics.median(c for _, c in runs[(factor, "start-up")])
        for mode, path in files.items():
            lines = truth(path)["lines"]
            wall = statistics.median(w for w, _ in runs[(factor, mode)])
            cpu = statistics.median(c for _, c in runs[(factor, mode)])
            rows.append({"factor": factor, "entries": entries, "dataset": mode, "lines": lines,
                         "wall": wall, "cpu": cpu, "startup_cpu": start,
                         "lines_per_s": lines / wall, "us_per_line": 1e6 * (cpu - start) / lines})
    return rows, ok


def files_rows(data: Path, counts: Sequence[int], rounds: int,
               scale: float) -> tuple[list[dict[str, Any]], bool]:
    path = dataset(data, "mixed", round(SIZES["mixed"] * scale))
    facts = truth(path)
    runs: dict[int, list[Any]] = {n: [] for n in counts}
    ok = True
    for _ in range(rounds):
        for n in counts:
            r = follow_dataset(path, facts, files=n, chunk=CHUNK)
            runs[n].append(r)
            if r.counts != facts["counts"]:
                ok = False
                print(f"COUNT MISMATCH {n} files: {r.counts}", file=sys.stderr)
    rows = []
    for n, rs in runs.items():
        wall = statistics.median(r.wall for r in rs)
        cpu = statistics.median(r.cpu for r in rs)
        rows.append({"files": n, "lines": facts["lines"], "wall": wall, "cpu": cpu,
                     "lines_per_s": facts["lines"] / wall,
                     "us_per_line": 1e6 * cpu / facts["lines"],
                     "rss_mb": max(r.rss_mb for r in rs),
                     "lag": statistics.median(r.lag for r in rs)})
    return rows, ok


def print_catalog(rows: list[dict[str, Any]]) -> None:
    print("\n## Throughput against catalog size (`gw502d scan`)\n")
    print("| catalog | entries | dataset | lines | median s | lines/s | CPU s | start-up CPU s "
          "| CPU µs/line | µs/line vs today |")
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|")
    today = {r["dataset"]: r["us_per_line"] for r in rows if r["factor"] == 1}
    for r in rows:
        name = "today" if r["factor"] == 1 else f"x{r['factor']:g}"
        base = today.get(r["dataset"])
        ratio = f"{r['us_per_line'] / base:.2f}x" if base else "n/a"
        print(f"| {name} | {r['entries']} | {r['dataset']} | {r['lines']:,} | {r['wall']:.3f} "
              f"| {r['lines_per_s'] / 1e6:.2f}M | {r['cpu']:.2f} | {r['startup_cpu']:.2f} "
              f"| {r['us_per_line']:.2f} | {ratio} |")


def print_files(rows: list[dict[str, Any]]) -> None:
    print("\n## Throughput against followed files (`gw502d run`, mixed dataset, "
          f"{CHUNK // 1024} KiB writes dealt in turn)\n")
    print("| files | lines | median s | lines/s | CPU s | CPU µs/line | peak RSS MB | "
          "lag back to 0 s |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['files']} | {r['lines']:,} | {r['wall']:.3f} | "
              f"{r['lines_per_s'] / 1e6:.2f}M | {r['cpu']:.2f} | {r['us_per_line']:.2f} | "
              f"{r['rss_mb']:.0f} | {r['lag']:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["all", "catalog", "files"], default="all")
    ap.add_argument("--data", default=str(DATA), help="where datasets are kept (reused)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a twentieth of the lines, 1 round")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full-size lines")
    ap.add_argument("--factors", default="1,1.5,2", help="catalog sizes, today's = 1")
    ap.add_argument("--datasets", default=",".join(SIZES), help="for the catalog rows")
    ap.add_argument("--files", default="1,10,100", help="followed files")
    ap.add_argument("--json", help="write raw results here")
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    scale = 0.05 if a.quick else a.scale
    data = Path(a.data)
    results: dict[str, Any] = {}
    ok = True
    print(f"# gw502d scaling, {time.strftime('%Y-%m-%d %H:%M')}, medians of {rounds} "
          "interleaved rounds")
    if a.what in ("all", "catalog"):
        work = Path(tempfile.mkdtemp(prefix="gw502scaling-"))
        try:
            rows, held = catalog_rows(data, work, a.datasets.split(","),
                                      [float(f) for f in a.factors.split(",")], rounds, scale)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print_catalog(rows)
        results["catalog"], ok = rows, ok and held
    if a.what in ("all", "files"):
        rows, held = files_rows(data, [int(n) for n in a.files.split(",")], rounds, scale)
        print_files(rows)
        results["files"], ok = rows, ok and held
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
