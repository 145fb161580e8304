#!/usr/bin/env python3
"""CPU used by an idle follower: 50 quiet files watched for --seconds (default 60).

Each mode runs in its own process (a Follower with default intervals and a state dir,
files spread over 10 directories); the process measures its own user+system CPU from
the moment every file is open, so start-up is not counted. Printed: CPU seconds and %
of one core.

    python3 bench/idle_cpu.py                  # 60 s per mode
    python3 bench/idle_cpu.py --seconds 10     # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
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


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(seconds: float, files: int, inotify: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for i in range(files):
            d = Path(tmp) / f"site{i % 10}"
            d.mkdir(exist_ok=True)
            path = d / f"error{i}.log"
            path.write_bytes(b"2024/01/01 00:00:00 [error] 1#0: quiet\n")
            specs.append(LogSpec(str(path), f"log{i}", "nginx"))
        follower = Follower(specs, lambda *_: None, state_dir=Path(tmp) / "state",
                            use_inotify=inotify)
        stop = threading.Event()
        thread = threading.Thread(target=follower.run, args=(stop,))
        thread.start()
        while sum(s.open_files for s in follower.stats().values()) < files:
            time.sleep(0.01)
        time.sleep(1.0)  # past the first snapshot
        c0, t0 = cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(), time.monotonic()
        stop.set()
        follower.wake()
        thread.join()
    print(json.dumps({"cpu": c1 - c0, "wall": t1 - t0, "threads": threading.active_count()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--child", choices=["inotify", "poll"])
    args = ap.parse_args()
    if args.child:
        child(args.seconds, args.files, args.child == "inotify")
        return
    print(f"{'mode':<8} {'files':>5} {'seconds':>8} {'CPU s':>8} {'% of a core':>12}")
    for mode in ("inotify", "poll"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--seconds",
                              str(args.seconds), "--files", str(args.files)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{mode:<8} {args.files:>5} {r['wall']:>8.1f} {r['cpu']:>8.3f} "
              f"{100 * r['cpu'] / r['wall']:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
