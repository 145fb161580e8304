#!/usr/bin/env python3
"""gw502d against mtail and the naive Python baseline, side by side, interleaved.

Generates (or reuses) the three inputs of ../shared/bench/gen_log.py (mixed, storm, long),
then runs every tool on every dataset round-robin (one run of each tool, then the next
round), so a noisy neighbour slows all of them alike. For each run: wall time, CPU time
and peak RSS of the child (os.wait4). Prints medians, lines/s and the ratio to mtail, and
checks gw502d's counts for the eight shared incident types against the generator's truth.

The gw502d-follow row is the daemon as a tailer in the same rounds: `gw502d run` (127.0.0.1,
start_at = "end") follows an empty file, a writer process appends the dataset to it in
1 MiB writes, and the time runs from the first write until /metrics says
gw502d_log_lines_total = the dataset's lines; CPU and peak RSS (VmHWM) come from
/proc/<pid>, the counts from gw502d_incidents_total. The writer is far faster than any
reader, so its "lag back to zero" (last write -> all lines read) is the time the daemon
needs to drain what it has not read yet: a throughput figure, not a latency.

    python3 bench/run.py                      # full size, 3 rounds
    python3 bench/run.py --quick              # 10% of the lines, 2 rounds (a smoke test)
    python3 bench/run.py --only gw502d-scan,gw502d-follow,mtail --datasets storm

mtail comes from Debian's package `mtail`; without it the mtail rows are skipped with a
message. Latency, sustained line-by-line writing, idle CPU and RSS are in bench/follow.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "bench"
FOLLOW = "gw502d-follow"
DATASETS = {"mixed": ("", 2_000_000), "storm": ("--storm", 500_000), "long": ("--long", 200_000)}

# The peer benchmark's eight types, as gw502d's (incident, source) pairs.
SHARED_TYPES = {
    "too_big_header": [("upstream_header_too_big", "nginx")],
    "upstream_timeout": [("upstream_timeout", "nginx")],
    "connect_refused": [("upstream_connect_refused", "nginx")],
    "premature_close": [("upstream_premature_close", "nginx")],
    "client_closed": [("client_disconnect", "nginx")],
    "block_size": [("request_block_too_big", "uwsgi"), ("protocol_mismatch", "uwsgi")],
    "broken_pipe": [("client_disconnect", "uwsgi")],
    "harakiri_worker_died": [("worker_harakiri", "uwsgi"), ("worker_died", "uwsgi")],
}


def generate(data: Path, mode: str, n: int) -> Path:
    """The dataset file, generated once (the generator is deterministic)."""
    flag, _ = DATASETS[mode]
    path = data / f"{mode}-{n}-s502.log"
    truth = Path(f"{path}.truth.json")
    if not (truth.exists() and path.exists()
            and path.stat().st_size == json.loads(truth.read_text())["bytes"]):
        print(f"generating {path}", file=sys.stderr)
        cmd = [sys.executable, str(SHARED / "gen_log.py"), "-n", str(n), "--seed", "502",
               "-o", str(path)]
        subprocess.run(cmd + ([flag] if flag else []), check=True,
                       stderr=subprocess.DEVNULL)
    return path


def run_child(cmd: list[str]) -> tuple[float, float, float, bytes]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one run, and its stdout."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{cmd[0]} failed: {cmd}")
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read()


def run_follow(path: Path, lines: int) -> tuple[float, float, float, dict[str, int], float]:
    """Wall, CPU, peak RSS, the eight shared counts and the lag of one gw502d-follow run."""
    # follow.py imports generate() from this module, so it cannot be imported at the top
    from follow import follow_file  # noqa: PLC0415

    r = follow_file(path, lines)
    return r.wall, r.cpu, r.rss_mb, r.counts, r.lag


def gw502d_counts(stdout: bytes) -> dict[str, int]:
    counts = json.loads(stdout)["counts"]
    return {t: sum(counts[i][s] for i, s in pairs) for t, pairs in SHARED_TYPES.items()}


def plain_counts(stdout: bytes) -> dict[str, int]:
    return dict(json.loads(stdout)["counts"])


def mtail_counts(stdout: bytes) -> dict[str, int]:
    counts = dict.fromkeys(SHARED_TYPES, 0)
    for family in json.loads(stdout).get("gw502_incidents_total", []):
        for point in family.get("LabelValues", []):
            counts[point["Labels"][0]] = int(point["Value"]["Value"])
    return counts


def tools(socket_dir: Path) -> dict[str, tuple[list[str], object]]:
    gw = [sys.executable, "-m", "gw502d", "scan", "--format", "json"]
    out: dict[str, tuple[list[str], object]] = {
        "gw502d-scan": (gw, gw502d_counts),
        "py-naive": ([sys.executable, str(SHARED / "peers" / "naive.py")], plain_counts),
        "py-fast-split": ([sys.executable, str(SHARED / "peers" / "fast.py")], plain_counts),
        FOLLOW: ([], None),  # not a command: see run_follow()
    }
    if shutil.which("mtail"):
        # one-shot mtail still opens a listener: a unix socket keeps it off the network
        sock = socket_dir / "mtail.sock"
        out["mtail"] = (["mtail", "--one_shot", "--one_shot_format", "json", "--unix_socket",
                         str(sock), "--progs", str(SHARED / "peers" / "mtail"), "--logs"],
                        mtail_counts)
    else:
        print("mtail not installed (apt-get install mtail): its rows are skipped",
              file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/gw502bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10%% of the lines, 2 rounds")
    ap.add_argument("--datasets", default="mixed,storm,long")
    ap.add_argument("--only", default="", help="comma-separated tool names")
    ap.add_argument("--json", help="write raw results here")
    a = ap.parse_args()
    data = Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    rounds = 2 if a.quick else a.rounds
    sockets = Path(tempfile.mkdtemp(prefix="gw502bench-"))
    chosen = tools(sockets)
    if a.only:
        chosen = {k: v for k, v in chosen.items() if k in a.only.split(",")}
    results: dict[str, dict[str, dict[str, object]]] = {}
    ok = True
    for mode in a.datasets.split(","):
        n = DATASETS[mode][1] // (10 if a.quick else 1)
        path = generate(data, mode, n)
        truth = json.loads(Path(f"{path}.truth.json").read_text())
        runs: dict[str, list[tuple[float, float, float]]] = {t: [] for t in chosen}
        lags: list[float] = []
        for _ in range(rounds):
            for name, (cmd, parse) in chosen.items():
                if name == FOLLOW:
                    wall, cpu, rss, counts, lag = run_follow(path, truth["lines"])
                    lags.append(lag)
                else:
                    (sockets / "mtail.sock").unlink(missing_ok=True)
                    wall, cpu, rss, stdout = run_child([*cmd, str(path)])
                    counts = parse(stdout)  # type: ignore[operator]
                runs[name].append((wall, cpu, rss))
                if counts != truth["counts"]:
                    ok = False
                    print(f"COUNT MISMATCH {name} {mode}: {counts} != {truth['counts']}",
                          file=sys.stderr)
        results[mode] = {}
        for name, rs in runs.items():
            wall = statistics.median(r[0] for r in rs)
            results[mode][name] = {"lines": truth["lines"], "wall": wall,
                                   "cpu": statistics.median(r[1] for r in rs),
                                   "rss_mb": max(r[2] for r in rs),
                                   "lines_per_s": truth["lines"] / wall}
            if name == FOLLOW:
                results[mode][name]["lag"] = statistics.median(lags)
                results[mode][name]["lags"] = lags
    shutil.rmtree(sockets, ignore_errors=True)
    print_table(results)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


def print_table(results: dict[str, dict[str, dict[str, object]]]) -> None:
    print(f"# gw502d bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}")
    for mode, rows in results.items():
        base = rows.get("mtail", {}).get("lines_per_s")
        print(f"\n## {mode}\n")
        print("| tool | lines | median s | lines/s | CPU s | peak RSS MB | vs mtail |")
        print("|---|--:|--:|--:|--:|--:|--:|")
        for name, r in rows.items():
            ratio = f"{r['lines_per_s'] / base:.2f}x" if base else "n/a"  # type: ignore[operator]
            print(f"| {name} | {r['lines']:,} | {r['wall']:.3f} | {r['lines_per_s'] / 1e6:.2f}M "
                  f"| {r['cpu']:.2f} | {r['rss_mb']:.0f} | {ratio} |")
        if FOLLOW in rows:
            lags = ", ".join(f"{x:.3f}" for x in rows[FOLLOW]["lags"])  # type: ignore[attr-defined]
            print(f"\n{FOLLOW}: lag back to zero after the writer's last 1 MiB write: median "
                  f"{rows[FOLLOW]['lag']:.3f} s (runs: {lags})")


if __name__ == "__main__":
    sys.exit(main())
