#!/usr/bin/env python3
"""``gw502d run`` measured as a tailer, from the outside: what a Prometheus scrape sees.

bench/follow_latency.py and bench/idle_cpu.py time the Follower inside one process; this
script starts the real daemon (``python3 -m gw502d run`` on 127.0.0.1, a temporary config
and state dir), writes to the file it follows from a separate writer process and reads
the answers from ``/metrics`` and ``/proc/<pid>``, so the exporter, the lock between the
follower and a scrape, and the process's start-up memory are all in the numbers.

    python3 bench/follow.py latency --rate 1000 --rate 10000 --seconds 10
    python3 bench/follow.py sustained --seconds 30      # mixed dataset, one write() per line
    python3 bench/follow.py idle --seconds 60 --files 50
    python3 bench/follow.py rss --incidents 1000000

Every scrape uses a new connection: on a kept-alive one the daemon's answer waits for a
delayed ACK (headers and body go out in two writes), about 40 ms a scrape here. Clocks
are CLOCK_MONOTONIC, shared by the writer process and this one. bench/run.py imports
:func:`follow_file` for its ``gw502d-follow`` row.
"""

from __future__ import annotations

import argparse
import array
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from run import DATASETS, ROOT, SHARED_TYPES, generate

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHUNK = 1 << 20
LINES = "gw502d_log_lines_total"
INCIDENTS = "gw502d_incidents_total"
OPEN_FILES = "gw502d_log_open_files"
# The latency line: the upstream_timeout example of patterns/nginx.toml (reading the
# response header), with a date and connection number of our own.
TIMEOUT_LINE = ('%s [error] 812#812: *%d upstream timed out (110: Connection timed out) while '
                'reading response header from upstream, client: 127.0.0.1, server: localhost, '
                'request: "GET /slow HTTP/1.1", upstream: "http://127.0.0.1:8000/slow", '
                'host: "localhost"\n')
# Storm lines: the five nginx incidents of the shared types, each with its own URI and
# client, as a scan of the whole address space would give (nginx copies the request's
# URI into the upstream of a proxy_pass without a URI part).
STORM = (
    ("upstream_timeout", "[error]", "upstream timed out (110: Connection timed out) while "
     "reading response header from upstream", '"http://10.1.0.{u}:8000{uri}"'),
    ("upstream_header_too_big", "[error]", "upstream sent too big header while reading response "
     "header from upstream", '"uwsgi://127.0.0.1:5000"'),
    ("upstream_connect_refused", "[error]", "connect() failed (111: Connection refused) while "
     "connecting to upstream", '"http://10.1.0.{u}:8001{uri}"'),
    ("upstream_premature_close", "[error]", "upstream prematurely closed connection while "
     "reading response header from upstream", '"uwsgi://unix:/run/uwsgi/app.sock:"'),
    ("client_disconnect", "[info]", "client prematurely closed connection while sending "
     "response to client", '"http://10.1.0.{u}:8000{uri}"'),
)


# -- the daemon ------------------------------------------------------------------------


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again for the daemon)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes, int]:
    """Status, body and the monotonic ns the answer was complete, on a new connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.monotonic_ns()
    finally:
        conn.close()


def samples(body: bytes, name: str) -> dict[tuple[str, ...], float]:
    """The series of one metric family by label values (in the exporter's label order)."""
    out: dict[tuple[str, ...], float] = {}
    head = name.encode()
    for line in body.splitlines():
        if line.startswith(head) and line[len(head):len(head) + 1] in (b"{", b" "):
            series, _, value = line.rpartition(b" ")
            labels = re.findall(rb'="((?:[^"\\]|\\.)*)"', series)
            out[tuple(v.decode() for v in labels)] = float(value)
    return out


def series_count(body: bytes) -> tuple[int, int]:
    """(every series, gw502d's own series) on one /metrics page."""
    lines = [ln for ln in body.splitlines() if ln and not ln.startswith(b"#")]
    return len(lines), sum(ln.startswith(b"gw502d_") for ln in lines)


def shared_counts(incidents: dict[tuple[str, ...], float]) -> dict[str, int]:
    """gw502d's incident counters as the peer benchmark's eight types (as gw502d-scan)."""
    return {t: int(sum(incidents.get(pair, 0) for pair in pairs))
            for t, pairs in SHARED_TYPES.items()}


class Daemon:
    """One ``gw502d run`` child on 127.0.0.1 with a config of its own; stopped by its PID."""

    def __init__(self, work: Path, logs: list[tuple[Path, str, str | None]]) -> None:
        self.work = work
        self.port = free_port()
        config = ['start_at = "end"']
        for path, name, family in logs:
            config += ["", "[[log]]", f"path = {json.dumps(str(path))}",
                       f"name = {json.dumps(name)}"]
            if family is not None:
                config.append(f"family = {json.dumps(family)}")
        (work / "gw502d.toml").write_text("\n".join(config) + "\n")
        self._out = (work / "gw502d.out").open("wb")  # its JSON events, for a post-mortem
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gw502d", "run", "--config", str(work / "gw502d.toml"),
             "--listen", f"{HOST}:{self.port}", "--state-dir", str(work / "state")],
            stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"gw502d run exited {self.proc.returncode}: "
                                   f"see {work / 'gw502d.out'}")
            try:
                if get(self.port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gw502d run not healthy after 60 s")
            time.sleep(0.05)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM (it saves its state), SIGKILL if it is still there after 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()

    def metrics(self) -> tuple[bytes, int]:
        """One scrape of /metrics and when its answer was complete."""
        status, body, t = get(self.port, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body, t

    def lines(self) -> tuple[int, int]:
        """Lines read over every log, and when the scrape saying so was complete."""
        body, t = self.metrics()
        return int(sum(samples(body, LINES).values())), t

    def cpu(self) -> float:
        """User + system CPU seconds so far (every thread), from /proc/<pid>/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status(self, key: str) -> float:
        """A /proc/<pid>/status field in MB (VmRSS, VmHWM) or as a number (Threads)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                number = int(value.split()[0])
                return number / 1024 if value.strip().endswith("kB") else number
        raise KeyError(key)


def wait_lines(daemon: Daemon, total: int, *, slowest: float = 0.25,
               history: list[tuple[int, int]] | None = None) -> int:
    """Poll until the daemon has read *total* lines; when the scrape saying so was complete.

    Each scrape costs the daemon a few ms of the GIL, so the poller sleeps half the time the
    last rate predicts for the rest (5 ms to *slowest*): few scrapes while it is far
    behind, a few ms of resolution at the end.
    """
    seen: list[tuple[int, int]] = history if history is not None else []
    stalled_since = time.monotonic()
    while True:
        n, t = daemon.lines()
        if seen and n > seen[-1][1]:
            stalled_since = time.monotonic()
        seen.append((t, n))
        if n >= total:
            return t
        if time.monotonic() - stalled_since > 60:
            raise RuntimeError(f"gw502d stopped at {n} of {total} lines")
        wait = slowest
        if len(seen) >= 2 and seen[-1][1] > seen[-2][1]:
            rate = (seen[-1][1] - seen[-2][1]) / ((seen[-1][0] - seen[-2][0]) / 1e9)
            wait = (total - n) / rate / 2
        time.sleep(min(max(wait, 0.005), slowest))


def wait_counts(daemon: Daemon, truth: dict[str, int], seconds: float = 3.0) -> dict[str, int]:
    """The eight shared counts once they equal *truth*, or as they are after *seconds*.

    ``lines_total`` counts a block before the block is classified, so the last block's
    incidents may show up a scrape later.
    """
    deadline = time.monotonic() + seconds
    while True:
        counts = shared_counts(samples(daemon.metrics()[0], INCIDENTS))
        if counts == truth or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted *values*."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


# -- writers (run in their own process: `follow.py writer KIND ...`) -------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def writer_copy(src: str, dst: str) -> dict[str, int]:
    """Append *src* to *dst* in 1 MiB writes that end on a line boundary, at full speed."""
    fd = _open_append(dst)
    first = last = lines = size = 0
    carry = b""
    with open(src, "rb") as f:
        while block := f.read(CHUNK):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            carry, block = block[cut:], block[:cut]
            if not block:
                continue
            first = first or time.monotonic_ns()
            _write_all(fd, block)
            last = time.monotonic_ns()
            lines += block.count(b"\n")
            size += len(block)
    if carry:
        _write_all(fd, carry + b"\n")
        last, lines, size = time.monotonic_ns(), lines + 1, size + len(carry) + 1
    os.close(fd)
    return {"first_ns": first, "last_ns": last, "lines": lines, "bytes": size}


def writer_rate(dst: str, rate: int, seconds: float, times: str) -> dict[str, int]:
    """Incident lines at *rate*/s, one write() per line as nginx does; write times to *times*.

    The time of each line is taken just before its write() and saved (int64 ns) for the
    poller to match against the counter.
    """
    fd = _open_append(dst)
    stamps = array.array("q")
    start = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + 1
        date = time.strftime("%Y/%m/%d %H:%M:%S")
        while n < due:
            line = (TIMEOUT_LINE % (date, n + 1)).encode()
            stamps.append(time.monotonic_ns())
            os.write(fd, line)
            n += 1
        time.sleep(0.0005)
    os.close(fd)
    with open(times, "wb") as f:
        stamps.tofile(f)
    return {"first_ns": stamps[0], "last_ns": time.monotonic_ns(), "lines": n}


def _dataset_lines(src: str) -> Iterator[list[bytes]]:
    """The dataset's lines in batches, over and over."""
    while True:
        carry = b""
        with open(src, "rb") as f:
            while block := f.read(4 * CHUNK):
                block = carry + block
                cut = block.rfind(b"\n") + 1
                carry = block[cut:]
                yield block[:cut].splitlines(keepends=True)


def writer_lines(src: str, dst: str, seconds: float, rate: int) -> dict[str, int]:
    """The dataset's lines, one write() per line, for *seconds* (at *rate*/s if not 0)."""
    fd = _open_append(dst)
    first = time.monotonic_ns()
    end = first + int(seconds * 1e9)
    n = size = 0
    write = os.write
    for batch in _dataset_lines(src):
        for i in range(0, len(batch), 1000):
            now = time.monotonic_ns()
            if now >= end:
                break
            if rate:
                ahead = n / rate - (now - first) / 1e9
                if ahead > 0:
                    time.sleep(ahead)
            part = batch[i:i + 1000]
            for line in part:
                write(fd, line)
            n += len(part)
            size += sum(map(len, part))
        else:
            continue
        break
    last = time.monotonic_ns()
    os.close(fd)
    return {"first_ns": first, "last_ns": last, "lines": n, "bytes": size}


def storm_line(i: int) -> bytes:
    """Incident line *i* of the RSS storm: its own URI, client and connection number."""
    incident, level, message, upstream = STORM[i % len(STORM)]
    del incident
    uri = f"/shop/item/{i}?ref={i * 7919 % 1000003}"
    client = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    ups = upstream.format(u=i % 250 + 1, uri=uri)
    return (f"2026/11/22 03:00:{i // 20000 % 60:02d} {level} 812#812: *{i + 1} {message}, "
            f'client: {client}, server: shop.example.net, request: "GET {uri} HTTP/1.1", '
            f'upstream: {ups}, host: "shop.example.net"\n').encode()


def writer_storm(dst: str, count: int) -> dict[str, int]:
    """*count* storm lines in ~1 MiB writes, generated as they are written."""
    fd = _open_append(dst)
    first = 0
    buf: list[bytes] = []
    size = 0
    for i in range(count):
        line = storm_line(i)
        buf.append(line)
        size += len(line)
        if size >= CHUNK or i == count - 1:
            first = first or time.monotonic_ns()
            _write_all(fd, b"".join(buf))
            buf, size = [], 0
    last = time.monotonic_ns()
    os.close(fd)
    return {"first_ns": first, "last_ns": last, "lines": count}


def start_writer(*args: str) -> subprocess.Popen[str]:
    """This script as a writer process (its own interpreter, so no GIL shared with us)."""
    return subprocess.Popen([sys.executable, __file__, "writer", *args],
                            stdout=subprocess.PIPE, text=True)


def writer_result(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"writer failed ({proc.returncode})")
    result: dict[str, int] = json.loads(out)
    return result


# -- bench/run.py's gw502d-follow row ---------------------------------------------------


@dataclass
class FollowRun:
    """One follow-mode run over a dataset (times in seconds, memory in MB)."""

    wall: float  # first write -> lines_total == the dataset's lines
    cpu: float
    rss_mb: float  # VmHWM
    lag: float  # writer's last write -> lines_total == the dataset's lines
    writer: float  # first write -> last write
    counts: dict[str, int] = field(default_factory=dict)
    scrapes: int = 0


def follow_file(dataset: Path, total: int) -> FollowRun:
    """The daemon follows an empty file; the dataset is appended to it in 1 MiB writes."""
    with tempfile.TemporaryDirectory(prefix="gw502follow-") as tmp:
        work = Path(tmp)
        followed = work / "error.log"
        followed.touch()
        with Daemon(work, [(followed, "bench", None)]) as daemon:
            cpu0 = daemon.cpu()
            writer = start_writer("copy", str(dataset), str(followed))
            seen: list[tuple[int, int]] = []
            done = wait_lines(daemon, total, history=seen)
            cpu1 = daemon.cpu()
            w = writer_result(writer)
            if w["lines"] != total:
                raise RuntimeError(f"writer wrote {w['lines']} lines, dataset has {total}")
            truth = json.loads(Path(f"{dataset}.truth.json").read_text())["counts"]
            counts = wait_counts(daemon, truth)
            return FollowRun(wall=(done - w["first_ns"]) / 1e9, cpu=cpu1 - cpu0,
                             rss_mb=daemon.status("VmHWM"), lag=(done - w["last_ns"]) / 1e9,
                             writer=(w["last_ns"] - w["first_ns"]) / 1e9, counts=counts,
                             scrapes=len(seen))


# -- subcommands -----------------------------------------------------------------------


def cmd_latency(a: argparse.Namespace) -> int:
    """write() -> visible on /metrics, per line, at each rate, with one daemon."""
    rates = a.rate or [1000, 10000]
    key = ("upstream_timeout", "nginx")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gw502follow-") as tmp:
        work = Path(tmp)
        followed = work / "error.log"
        followed.touch()
        with Daemon(work, [(followed, "nginx", "nginx")]) as daemon:
            for rate in rates:
                base = samples(daemon.metrics()[0], INCIDENTS)[key]
                times = work / f"times-{rate}"
                cpu0, t0 = daemon.cpu(), time.monotonic()
                writer = start_writer("rate", str(followed), str(rate), str(a.seconds),
                                      str(times))
                seen: list[tuple[int, int]] = []  # (answer complete ns, lines counted)
                durations: list[float] = []
                written: int | None = None
                deadline: float | None = None
                while True:
                    sent = time.monotonic_ns()
                    body, t = daemon.metrics()
                    durations.append((t - sent) / 1e6)
                    seen.append((t, int(samples(body, INCIDENTS)[key] - base)))
                    if written is None and writer.poll() is not None:
                        written = writer_result(writer)["lines"]
                        deadline = time.monotonic() + 10
                    if written is not None and (seen[-1][1] >= written
                                                or time.monotonic() > (deadline or 0)):
                        break
                    time.sleep(a.poll_ms / 1000)
                cpu = 100 * (daemon.cpu() - cpu0) / (time.monotonic() - t0)
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
                             "cpu": cpu})
                print(f"rate {rate}: done", file=sys.stderr)
    print(f"latency, write() -> gw502d_incidents_total on /metrics; poll every {a.poll_ms} ms "
          f"(new connection per scrape), {a.seconds:g} s per rate")
    print("\n| lines/s | lines | counted | p50 ms | p99 ms | max ms | scrapes | "
          "median scrape ms | daemon CPU % |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['rate']:,} | {r['lines']:,} | {r['counted']:,} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['max']:.1f} | {r['scrapes']:,} | {r['scrape_ms']:.1f} | "
              f"{r['cpu']:.1f} |")
    _dump(a, rows)
    return 0 if all(r["counted"] == r["lines"] for r in rows) else 1


def _at(history: list[tuple[int, int]], t: int) -> float:
    """Lines read at monotonic ns *t*, interpolated between the scrapes around it."""
    for (t0, n0), (t1, n1) in zip(history, history[1:], strict=False):
        if t0 <= t <= t1:
            return n0 + (n1 - n0) * (t - t0) / max(t1 - t0, 1)
    return float(history[-1][1] if t > history[-1][0] else history[0][1])


def cmd_sustained(a: argparse.Namespace) -> int:
    """The mixed dataset, line by line, for N seconds: does the daemon keep up?"""
    n = DATASETS["mixed"][1]
    data = Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    dataset = generate(data, "mixed", n)
    rows = []
    for rate in a.rate or [0]:
        with tempfile.TemporaryDirectory(prefix="gw502follow-", dir=a.tmp) as tmp:
            work = Path(tmp)
            followed = work / "error.log"
            followed.touch()
            with Daemon(work, [(followed, "bench", None)]) as daemon:
                cpu0 = daemon.cpu()
                writer = start_writer("lines", str(dataset), str(followed), str(a.seconds),
                                      str(rate))
                seen: list[tuple[int, int]] = []
                while True:  # every 100 ms, and at once when the writer is done
                    n, t = daemon.lines()
                    seen.append((t, n))
                    try:
                        writer.wait(0.1)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                w = writer_result(writer)
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
    print(f"sustained: mixed dataset appended one write() per line for {a.seconds:g} s, "
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
            writer = start_writer("storm", str(followed), str(a.incidents))
            done = wait_lines(daemon, a.incidents)
            w = writer_result(writer)
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


def cmd_writer(a: argparse.Namespace) -> int:
    """The writer process: runs one writer, prints its JSON summary."""
    kind, args = a.kind, a.args
    if kind == "copy":
        result = writer_copy(args[0], args[1])
    elif kind == "rate":
        result = writer_rate(args[0], int(args[1]), float(args[2]), args[3])
    elif kind == "lines":
        result = writer_lines(args[0], args[1], float(args[2]), int(args[3]))
    else:
        result = writer_storm(args[0], int(args[1]))
    print(json.dumps(result))
    return 0


def _dump(a: argparse.Namespace, rows: list[dict[str, object]]) -> None:
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the raw rows here")
    sub = ap.add_subparsers(dest="cmd", required=True,
                            metavar="{latency,sustained,idle,rss}")
    p = sub.add_parser("latency", help="write() to /metrics latency at fixed rates")
    p.add_argument("--rate", type=int, action="append", help="lines/s (repeatable; "
                   "default 1000 and 10000)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--poll-ms", type=float, default=5.0, help="pause between scrapes")
    p.set_defaults(func=cmd_latency)
    p = sub.add_parser("sustained", help="mixed dataset line by line; lag back to zero")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=int, action="append",
                   help="writer lines/s (repeatable; default: as fast as it can)")
    p.add_argument("--data", default="/tmp/gw502bench", help="where the dataset is kept")
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
    p = sub.add_parser("writer")  # internal: the writer processes started above
    p.add_argument("kind", choices=["copy", "rate", "lines", "storm"])
    p.add_argument("args", nargs="*")
    p.set_defaults(func=cmd_writer)
    a = ap.parse_args()
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
