#!/usr/bin/env python3
"""Latency from write() to the line reaching Follower's on_lines callback.

A writer subprocess appends lines at a fixed rate, one write() per line as nginx does,
each line carrying its CLOCK_MONOTONIC write time; the follower runs in this process and
takes the clock once per on_lines call. Printed: p50/p99/max latency and the CPU the
follower process used (reader loop plus watchdog's threads), per rate and mode.

    python3 bench/follow_latency.py                 # 20, 1k and 10k lines/s, 5 s each
    python3 bench/follow_latency.py --seconds 10 --rates 1000,10000,50000
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gw502d.source.follower import Follower  # noqa: E402
from gw502d.source.spec import LogSpec  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

WRITER = r"""
import os, sys, time
path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
pad = b" upstream timed out (110: Connection timed out) while reading response header"
start = time.monotonic()
n = 0
while True:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    due = int(elapsed * rate) + 1
    while n < due:
        os.write(fd, b"%d %d%s\n" % (time.monotonic_ns(), n, pad))
        n += 1
    time.sleep(0.0005)
print(n)
"""


def percentile(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))
    return sorted_values[i] / 1e6


def measure(rate: int, seconds: float, inotify: bool, stat_interval: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "error.log"
        path.touch()
        latencies: list[int] = []
        received = 0

        def on_lines(_spec: LogSpec, _path: str, lines: list[bytes]) -> None:
            nonlocal received
            now = time.monotonic_ns()
            received += len(lines)
            latencies.extend(now - int(line.split(b" ", 1)[0]) for line in lines)

        follower = Follower([LogSpec(str(path), "bench", "nginx")], on_lines, state_dir=None,
                            stat_interval=stat_interval, use_inotify=inotify)
        stop = threading.Event()
        thread = threading.Thread(target=follower.run, args=(stop,))
        thread.start()
        time.sleep(0.5)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", WRITER, str(path), str(rate), str(seconds)],
                             capture_output=True, text=True, check=True).stdout
        written = int(out)
        deadline = time.monotonic() + stat_interval + 5
        while received < written and time.monotonic() < deadline:
            time.sleep(0.01)
        wall = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        follower.wake()
        thread.join()
    latencies.sort()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"written": written, "received": received, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "max": latencies[-1] / 1e6 if latencies else 0,
            "cpu": 100 * cpu / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="20,1000,10000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--poll-intervals", default="2.0,0.25",
                    help="stat_interval values for the polling rows")
    args = ap.parse_args()
    modes = [("inotify", True, 2.0)] + [
        (f"poll {float(s):g}s", False, float(s)) for s in args.poll_intervals.split(",")]
    print(f"{'mode':<12} {'lines/s':>8} {'lines':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'CPU %':>6}")
    for rate in (int(r) for r in args.rates.split(",")):
        for name, inotify, interval in modes:
            r = measure(rate, args.seconds, inotify, interval)
            ok = "" if r["received"] == r["written"] else f"  LOST {r['written'] - r['received']}"
            print(f"{name:<12} {rate:>8} {int(r['received']):>8} {r['p50']:>8.2f} "
                  f"{r['p99']:>8.2f} {r['max']:>8.2f} {r['cpu']:>6.1f}{ok}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
