#!/usr/bin/env python3
"""The journal source against the file source: latency and CPU at a fixed rate.

A writer subprocess appends entries at a fixed rate, each message carrying its
CLOCK_MONOTONIC write time: for the journal, export-format entries piped into one
long-running ``systemd-journal-remote -o FILE -`` (a real journal file, written and
announced as journald does, but without journald's 250 ms post-change coalescing); for
a file, one ``write()`` per line. The follower (:class:`JournalFollower` or
:class:`Follower`, unit-filtered journal with one other unit's entry per ten) runs in
this process with a callback that only takes the clock. Printed per rate: p50/p99/max
latency (write -> callback) and CPU over the run: this process (reader thread and
callback) and, for the journal, journalctl.

    python3 bench/journal.py                          # 100 and 10k records/s, 10 s each
    python3 bench/journal.py --rates 1000,10000 --seconds 20 --only journal
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gw502d.source.follower import Follower  # noqa: E402
from gw502d.source.journal import JournalFollower  # noqa: E402
from gw502d.source.spec import JournalSpec, LogSpec  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
PAD = b" uwsgi_response_writev_headers_and_body_do(): Broken pipe [core/writer.c line 306]"

WRITER = r"""
import os, sys, time, uuid
mode, path, pad = sys.argv[1], sys.argv[2], sys.argv[5].encode()
rate, seconds = int(sys.argv[3]), float(sys.argv[4])
boot = uuid.uuid4().hex.encode()
if mode == "journal":
    out = sys.stdout.buffer
else:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
start = time.monotonic()
n = 0
while True:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    due = int(elapsed * rate) + 1
    chunk = []
    while n < due:
        t = time.monotonic_ns()
        msg = b"%d %d%s" % (t, n, pad)
        if mode == "journal":
            unit = b"other.service" if n % 10 == 9 else b"app.service"
            chunk.append(b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n"
                         b"_HOSTNAME=bench\n_SYSTEMD_UNIT=%s\nSYSLOG_IDENTIFIER=uwsgi\n"
                         b"MESSAGE=%s\n\n" % (time.time_ns() // 1000, t // 1000, boot, unit, msg))
        else:
            os.write(fd, msg + b"\n")
        n += 1
    if chunk:
        out.write(b"".join(chunk))
        out.flush()
    time.sleep(0.0005)
print(n, file=sys.stderr)
"""


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def proc_cpu(pid: int | None) -> float:
    """utime + stime of a process in seconds (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Clock:
    """The callback: the latency of every line, from the write time in its message."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lines = 0
        self.calls = 0

    def take(self, lines: list[bytes]) -> None:
        now = time.monotonic_ns()
        self.latencies.extend((now - int(line.split(b" ", 1)[0])) / 1e6 for line in lines)
        self.lines += len(lines)
        self.calls += 1


def run(kind: str, rate: int, seconds: float, tmp: Path) -> dict[str, Any]:
    clock = Clock()
    stop = threading.Event()
    jpid: Callable[[], int | None] = lambda: None  # noqa: E731
    if kind == "journal":
        path = tmp / f"bench-{rate}.journal"
        sink = subprocess.Popen([JOURNAL_REMOTE, f"--output={path}", "-"],
                                stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert sink.stdin is not None
        # The file must exist before journalctl starts at its end; one entry of another unit.
        sink.stdin.write(b"__REALTIME_TIMESTAMP=%d\n_BOOT_ID=%s\nMESSAGE=start\n\n"
                         % (time.time_ns() // 1000, b"0" * 32))
        sink.stdin.flush()
        while not path.exists():
            time.sleep(0.01)
        j = JournalFollower(JournalSpec("app", "uwsgi", units=("app",), directory=str(tmp)),
                            lambda spec, lines, times, tags: clock.take(lines))
        target: Callable[[threading.Event], None] = j.run
        jpid = lambda: j.pid  # noqa: E731
        wake = j.wake
        writer_out: Any = sink.stdin
    else:
        path = tmp / f"bench-{rate}.log"
        path.touch()
        f = Follower([LogSpec(str(path), "app", "uwsgi")],
                     lambda spec, p, lines: clock.take(lines), state_dir=None)
        target = f.run
        wake = f.wake
        writer_out = subprocess.DEVNULL
        sink = None
    thread = threading.Thread(target=target, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while kind == "journal" and jpid() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # started, at the end of the file
    cpu0, jcpu0 = self_cpu(), proc_cpu(jpid())
    writer = subprocess.run([sys.executable, "-c", WRITER, kind, str(path), str(rate),
                             str(seconds), PAD.decode()], stdout=writer_out,
                            stderr=subprocess.PIPE, check=True)
    written = int(writer.stderr.split()[-1])
    expected = written - written // 10 if kind == "journal" else written
    deadline = time.monotonic() + 30
    while clock.lines < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu, jcpu = self_cpu() - cpu0, proc_cpu(jpid()) - jcpu0
    stop.set()
    wake()
    thread.join()
    if sink is not None:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait()
    lat = sorted(clock.latencies)
    return {"source": kind, "rate": rate, "seconds": seconds, "lines": clock.lines,
            "expected": expected, "calls": clock.calls,
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else float("nan"),
            "cpu_self_pct": 100 * cpu / seconds, "cpu_journalctl_pct": 100 * jcpu / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="100,10000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--only", choices=("journal", "file"))
    args = ap.parse_args()
    kinds = [args.only] if args.only else ["journal", "file"]
    print(f"{'source':8} {'rate/s':>7} {'lines':>7} {'calls':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'CPU self':>8} {'journalctl':>10}")
    with tempfile.TemporaryDirectory(prefix="gw502d-bench-journal-") as d:
        for rate in (int(r) for r in args.rates.split(",")):
            for kind in kinds:
                r = run(kind, rate, args.seconds, Path(d))
                lost = "" if r["lines"] == r["expected"] else f"  ({r['expected']} expected)"
                print(f"{kind:8} {rate:7d} {r['lines']:7d} {r['calls']:6d} {r['p50_ms']:7.1f} "
                      f"{r['p99_ms']:7.1f} "
                      f"{r['max_ms']:7.1f} {r['cpu_self_pct']:7.1f}% "
                      f"{r['cpu_journalctl_pct']:9.1f}%{lost}", flush=True)


if __name__ == "__main__":
    main()
