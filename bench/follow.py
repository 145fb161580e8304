#!/usr/bin/env python3
"""``gw502d run`` measured as a tailer, from the outside: what a Prometheus scrape sees.

bench/journal.py --only file and bench/idle_cpu.py time the Follower inside one process; this
script starts the real daemon (harness.py: ``gw502d run`` on 127.0.0.1, a temporary
config and state dir), writes to the files it follows from separate writer processes
(writers.py) and reads the answers from ``/metrics`` and ``/proc/<pid>``.

    python3 bench/follow.py latency --rate 1000 --rate 10000 --seconds 10
    python3 bench/follow.py latency --source journal --rate 10000   # a [[journal]] source
    python3 bench/follow.py sustained --seconds 30      # mixed dataset, one write() per line
    python3 bench/follow.py sustained --dataset storm --rate 20000   # a storm's pace
    python3 bench/follow.py idle --seconds 60 --files 50
    python3 bench/follow.py rss --incidents 1000000
    python3 bench/follow.py page --incidents 10000      # GET / with 10k recent incidents

Clocks are CLOCK_MONOTONIC, shared by the writer processes and this one.
"""

from __future__ import annotations

import argparse
import array
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import writers
from datasets import DATA, dataset
from harness import (
    INCIDENT_LABELS,
    INCIDENTS,
    OPEN_FILES,
    Daemon,
    child_pid,
    get,
    percentile,
    proc_cpu,
    samples,
    series_count,
    wait_lines,
)

# -- subcommands -----------------------------------------------------------------------


def cmd_latency(a: argparse.Namespace) -> int:
    """write() -> visible on /metrics, per line, at each rate, with one daemon; with
    ``--source journal`` the lines are a unit's journal entries, followed by a [[journal]]
    source (journalctl's CPU is counted apart)."""
    rates = a.rate or [1000, 10000]
    key = ("upstream_timeout", "nginx")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gw502follow-") as tmp:
        work = Path(tmp)
        followed = work / "error.log"
        followed.touch()
        logs: list[tuple[Path, str, str | None]] = [(followed, "nginx", "nginx")]
        extra: list[str] = []
        kind, target = "rate", followed
        if a.source == "journal":
            target = work / "journal" / "system.journal"
            _journal_with_an_entry(target)
            logs, kind = [], "journal-rate"
            extra = ["[[journal]]", f"directory = {json.dumps(str(target.parent))}",
                     'units = ["app.service"]', 'family = "nginx"', 'name = "app"']
        with Daemon(work, logs, extra=extra) as daemon:
            for rate in rates:
                base = samples(daemon.metrics()[0], INCIDENTS, INCIDENT_LABELS)[key]
                times = work / f"times-{rate}"
                jpid = child_pid(daemon.pid, "journalctl")
                cpu0, jcpu0, t0 = daemon.cpu(), proc_cpu(jpid), time.monotonic()
                writer = writers.start(kind, target, rate, a.seconds, times)
                seen: list[tuple[int, int]] = []  # (answer complete ns, lines counted)
                durations: list[float] = []
                written: int | None = None
                deadline: float | None = None
                while True:
                    sent = time.monotonic_ns()
                    body, t = daemon.metrics()
                    durations.append((t - sent) / 1e6)
                    seen.append((t, int(samples(body, INCIDENTS, INCIDENT_LABELS)[key] - base)))
                    if written is None and writer.poll() is not None:
                        written = writers.result(writer)["lines"]
                        deadline = time.monotonic() + 10
                    if written is not None and (seen[-1][1] >= written
                                                or time.monotonic() > (deadline or 0)):
                        break
                    time.sleep(a.poll_ms / 1000)
                cpu = 100 * (daemon.cpu() - cpu0) / (time.monotonic() - t0)
                jcpu = 100 * (proc_cpu(jpid) - jcpu0) / (time.monotonic() - t0)
                stamps = array.array("q")
                with times.open("rb") as f:
                    stamps.frombytes(f.read())
                latencies: list[float] = []
                j = 0
                for k, wrote in enumerate(stamps, 1):  # line k is visible once count >= k
                    while j < len(seen) and seen[j][1] < k:
                        j += 1
                    if j == len(seen):
                        break
                    latencies.append((seen[j][0] - wrote) / 1e6)
                latencies.sort()
                rows.append({"rate": rate, "lines": len(stamps), "counted": seen[-1][1],
                             "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                             "max": latencies[-1] if latencies else float("nan"),
                             "scrapes": len(seen), "scrape_ms": statistics.median(durations),
                             "cpu": cpu, "journalctl_cpu": jcpu})
                print(f"rate {rate}: done", file=sys.stderr)
    print(f"latency, write() -> gw502d_incidents_total on /metrics ({a.source}); poll every "
          f"{a.poll_ms} ms (new connection per scrape), {a.seconds:g} s per rate")
    print("\n| lines/s | lines | counted | p50 ms | p99 ms | max ms | scrapes | "
          "median scrape ms | daemon CPU % | journalctl CPU % |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['rate']:,} | {r['lines']:,} | {r['counted']:,} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['max']:.1f} | {r['scrapes']:,} | {r['scrape_ms']:.1f} | "
              f"{r['cpu']:.1f} | {r['journalctl_cpu']:.1f} |")
    _dump(a, rows)
    return 0 if all(r["counted"] == r["lines"] for r in rows) else 1


def _journal_with_an_entry(path: Path) -> None:
    """A journal file with one entry of another unit: journalctl starts at its end."""
    path.parent.mkdir()
    subprocess.run([writers.JOURNAL_REMOTE, f"--output={path}", "-"], check=True,
                   input=b"__REALTIME_TIMESTAMP=%d\n_BOOT_ID=%s\n_SYSTEMD_UNIT=x.service\n"
                         b"MESSAGE=start\n\n" % (time.time_ns() // 1000, b"0" * 32))


def _at(history: list[tuple[int, int]], t: int) -> float:
    """Lines read at monotonic ns *t*, interpolated between the scrapes around it."""
    for (t0, n0), (t1, n1) in zip(history, history[1:], strict=False):
        if t0 <= t <= t1:
            return n0 + (n1 - n0) * (t - t0) / max(t1 - t0, 1)
    return float(history[-1][1] if t > history[-1][0] else history[0][1])


def cmd_sustained(a: argparse.Namespace) -> int:
    """A dataset, line by line, for N seconds: does the daemon keep up?"""
    source = dataset(Path(a.data), a.dataset, a.lines)
    rows = []
    for rate in a.rate or [0]:
        with tempfile.TemporaryDirectory(prefix="gw502follow-", dir=a.tmp) as tmp:
            work = Path(tmp)
            followed = work / "error.log"
            followed.touch()
            with Daemon(work, [(followed, "bench", None)]) as daemon:
                cpu0 = daemon.cpu()
                writer = writers.start("lines", source, followed, a.seconds, rate)
                seen: list[tuple[int, int]] = []
                while True:  # every 100 ms, and at once when the writer is done
                    n, t = daemon.lines()
                    seen.append((t, n))
                    try:
                        writer.wait(0.1)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                w = writers.result(writer)
                done = wait_lines(daemon, w["lines"], slowest=0.1, history=seen)
                cpu = daemon.cpu() - cpu0
                seconds = (w["last_ns"] - w["first_ns"]) / 1e9
                behind = w["lines"] - _at(seen, w["last_ns"])
                during = _at(seen, w["last_ns"]) - _at(seen, w["first_ns"])
                rows.append({
                    "rate": rate, "lines": w["lines"], "writer_s": seconds,
                    "writer_lps": w["lines"] / seconds, "daemon_lps": during / seconds,
                    "overall_lps": w["lines"] / ((done - w["first_ns"]) / 1e9),
                    "behind": behind, "lag": (done - w["last_ns"]) / 1e9,
                    "cpu": cpu, "cpu_pct": 100 * cpu / ((done - w["first_ns"]) / 1e9),
                    "rss_mb": daemon.status("VmHWM"), "gb": w["bytes"] / 1e9})
            print(f"rate {rate or 'max'}: done", file=sys.stderr)
    print(f"sustained: {a.dataset} dataset appended one write() per line for {a.seconds:g} s, "
          "lines_total polled every 100 ms")
    print("\n| writer rate | lines | GB | writer lines/s | daemon lines/s while writing | "
          "daemon lines/s to zero | behind at writer stop | lag back to 0 s | daemon CPU % | "
          "peak RSS MB |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['rate'] or 'max'} | {r['lines']:,} | {r['gb']:.2f} | "
              f"{r['writer_lps'] / 1e3:.0f}k | {r['daemon_lps'] / 1e3:.0f}k | "
              f"{r['overall_lps'] / 1e3:.0f}k | {r['behind']:,.0f} | {r['lag']:.3f} | "
              f"{r['cpu_pct']:.0f} | {r['rss_mb']:.0f} |")
    _dump(a, rows)
    return 0


def cmd_idle(a: argparse.Namespace) -> int:
    """CPU of a daemon watching quiet files (spread over 10 directories)."""
    rows = []
    for scrape_every in a.scrape_every or [0.0]:
        with tempfile.TemporaryDirectory(prefix="gw502follow-") as tmp:
            work = Path(tmp)
            logs: list[tuple[Path, str, str | None]] = []
            for i in range(a.files):
                d = work / "logs" / f"site{i % 10}"
                d.mkdir(parents=True, exist_ok=True)
                path = d / f"error{i}.log"
                path.write_bytes(b"2026/11/22 03:00:00 [notice] 1#1: quiet\n")
                logs.append((path, f"log{i}", "nginx"))
            with Daemon(work, logs) as daemon:
                while sum(samples(daemon.metrics()[0], OPEN_FILES).values()) < a.files:
                    time.sleep(0.05)
                time.sleep(1.0)
                cpu0, t0 = daemon.cpu(), time.monotonic()
                scrapes = 0
                while (left := a.seconds - (time.monotonic() - t0)) > 0:
                    if scrape_every:
                        time.sleep(min(scrape_every, left))
                        if time.monotonic() - t0 < a.seconds:
                            daemon.metrics()
                            scrapes += 1
                    else:
                        time.sleep(left)
                cpu, wall = daemon.cpu() - cpu0, time.monotonic() - t0
                rows.append({"files": a.files, "scrape_every": scrape_every, "scrapes": scrapes,
                             "wall": wall, "cpu": cpu, "pct": 100 * cpu / wall,
                             "threads": daemon.status("Threads"),
                             "rss_mb": daemon.status("VmRSS")})
    print(f"idle: gw502d run with {a.files} quiet files in 10 directories, CPU from "
          "/proc/<pid>/stat (ticks of 10 ms)")
    print("\n| files | scrapes | seconds | CPU s | % of one core | threads | RSS MB |")
    print("|--:|---|--:|--:|--:|--:|--:|")
    for r in rows:
        how = f"every {r['scrape_every']:g} s" if r["scrape_every"] else "none"
        print(f"| {r['files']} | {how} | {r['wall']:.1f} | {r['cpu']:.2f} | {r['pct']:.2f} | "
              f"{r['threads']:.0f} | {r['rss_mb']:.1f} |")
    _dump(a, rows)
    return 0


def cmd_rss(a: argparse.Namespace) -> int:
    """Memory and series count through a storm of distinct URIs and clients."""
    with tempfile.TemporaryDirectory(prefix="gw502follow-") as tmp:
        work = Path(tmp)
        followed = work / "error.log"
        followed.touch()
        with Daemon(work, [(followed, "nginx", "nginx")]) as daemon:
            series0 = series_count(daemon.metrics()[0])
            time.sleep(1.0)
            before = daemon.status("VmRSS")
            writer = writers.start("storm", followed, a.incidents)
            done = wait_lines(daemon, a.incidents)
            w = writers.result(writer)
            right_after = daemon.status("VmRSS")
            time.sleep(5.0)
            later = daemon.status("VmRSS")
            body = daemon.metrics()[0]
            series1 = series_count(body)
            incidents = int(sum(samples(body, INCIDENTS).values()))
            hwm = daemon.status("VmHWM")
            status, page, _ = get(daemon.port, "/incidents")
            shown = len(json.loads(page)["incidents"]) if status == 200 else -1
    row = {"incidents": a.incidents, "counted": incidents, "seconds": (done - w["first_ns"]) / 1e9,
           "before": before, "right_after": right_after, "later": later, "hwm": hwm,
           "series_before": series0, "series_after": series1, "recent_shown": shown}
    print(f"rss: {a.incidents:,} nginx incident lines (5 types, every line its own URI and "
          "client) appended in 1 MiB writes")
    print("\n| incidents | counted | seconds | VmRSS before MB | right after | 5 s after | "
          "VmHWM | series before (gw502d_) | series after (gw502d_) | /incidents entries |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    print(f"| {a.incidents:,} | {incidents:,} | {row['seconds']:.1f} | {before:.1f} | "
          f"{right_after:.1f} | {later:.1f} | {hwm:.1f} | {series0[0]} ({series0[1]}) | "
          f"{series1[0]} ({series1[1]}) | {shown} |")
    _dump(a, [row])
    return 0 if incidents == a.incidents else 1


def cmd_page(a: argparse.Namespace) -> int:
    """How long ``GET /`` (the on-call page) takes with N recent incidents in memory.

    The daemon keeps up to 10,000 recent incidents (``incidents_buffer``, its maximum); N
    distinct nginx incident lines (the storm: five incident types, 250 upstreams, every line
    its own URI and client) fill it, and the buffer is paged through to count them. Then
    ``/`` is fetched --requests times, a new connection each, plain and gzipped (what a
    browser asks for). Not a timed test: a number to read.
    """
    keep = min(a.incidents, 10_000)
    with tempfile.TemporaryDirectory(prefix="gw502follow-") as tmp:
        work = Path(tmp)
        followed = work / "error.log"
        followed.touch()
        with Daemon(work, [(followed, "nginx", "nginx")],
                    extra=[f"incidents_buffer = {keep}"]) as daemon:
            writer = writers.start("storm", followed, a.incidents)
            wait_lines(daemon, a.incidents)
            writers.result(writer)
            kept = _recent_count(daemon.port)
            rows = []
            for how, headers in (("plain", {}), ("gzip", {"Accept-Encoding": "gzip"})):
                times: list[float] = []
                statuses: set[int] = set()
                body = b""
                for _ in range(a.requests):
                    sent = time.monotonic_ns()
                    status, body, done = get(daemon.port, "/", headers)
                    times.append((done - sent) / 1e6)
                    statuses.add(status)
                times.sort()
                rows.append({"incidents": a.incidents, "kept": kept, "encoding": how,
                             "requests": a.requests, "p50": percentile(times, 50),
                             "p99": percentile(times, 99), "max": times[-1],
                             "kb": len(body) / 1024, "statuses": sorted(statuses)})
            _, page, _ = get(daemon.port, "/")
    shown = page.count(b'<article class="incident'), page.count(b'<li class="upstream"')
    print(f"page: GET / with {a.incidents:,} distinct incidents written, incidents_buffer = "
          f"{keep}, {kept:,} in memory; the page shows {shown[0]} incident types and "
          f"{shown[1]} upstream rows; target: under 50 ms")
    print("\n| incidents in memory | encoding | requests | p50 ms | p99 ms | max ms | page KB "
          "| status |")
    print("|--:|---|--:|--:|--:|--:|--:|---|")
    for row in rows:
        print(f"| {kept:,} | {row['encoding']} | {a.requests} | {row['p50']:.1f} | "
              f"{row['p99']:.1f} | {row['max']:.1f} | {row['kb']:.0f} | "
              f"{', '.join(map(str, row['statuses']))} |")
    _dump(a, rows)
    return 0 if all(row["statuses"] == [200] for row in rows) and kept == keep else 1


def _recent_count(port: int) -> int:
    """The incidents ``/incidents`` holds, counted page by page."""
    n, path = 0, "/incidents?limit=500"
    while path:
        status, body, _ = get(port, path)
        if status != 200:
            return -1
        page = json.loads(body)
        n += len(page["incidents"])
        path = page["next"]
    return n


def _dump(a: argparse.Namespace, rows: list[dict[str, object]]) -> None:
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the raw rows here")
    sub = ap.add_subparsers(dest="cmd", required=True,
                            metavar="{latency,sustained,idle,rss,page}")
    p = sub.add_parser("latency", help="write() to /metrics latency at fixed rates")
    p.add_argument("--rate", type=int, action="append", help="lines/s (repeatable; "
                   "default 1000 and 10000)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--poll-ms", type=float, default=5.0, help="pause between scrapes")
    p.add_argument("--source", choices=("file", "journal"), default="file",
                   help="the lines go to a followed file or to a unit's journal entries")
    p.set_defaults(func=cmd_latency)
    p = sub.add_parser("sustained", help="a dataset line by line; lag back to zero")
    p.add_argument("--dataset", choices=("mixed", "storm", "long"), default="mixed")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=int, action="append",
                   help="writer lines/s (repeatable; default: as fast as it can)")
    p.add_argument("--data", default=str(DATA), help="where the dataset is kept")
    p.add_argument("--lines", type=int, default=100_000,
                   help="lines of the dataset the writer cycles through")
    p.add_argument("--tmp", default=None, help="directory for the followed file (GBs)")
    p.set_defaults(func=cmd_sustained)
    p = sub.add_parser("idle", help="CPU with quiet watched files")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--files", type=int, default=50)
    p.add_argument("--scrape-every", type=float, action="append",
                   help="also scrape /metrics every S seconds (repeatable; 0: never)")
    p.set_defaults(func=cmd_idle)
    p = sub.add_parser("rss", help="memory and series through an incident storm")
    p.add_argument("--incidents", type=int, default=1_000_000)
    p.set_defaults(func=cmd_rss)
    p = sub.add_parser("page", help="GET / (the on-call page) with many recent incidents")
    p.add_argument("--incidents", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=50)
    p.set_defaults(func=cmd_page)
    a = ap.parse_args()
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
