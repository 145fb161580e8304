"""The tools under test, seen from outside: one-shot runs timed by wait4, and the daemon
(start it, scrape it, read /proc, stop it).

``gw502d run`` starts as a child on 127.0.0.1 with a temporary config and state dir;
answers come from ``/metrics`` and ``/proc/<pid>``, so the exporter, the lock between
the follower and a scrape and the process's own memory are all in the numbers.

Every scrape uses a new connection: on a kept-alive one the daemon's answer used to wait
for a delayed ACK (headers and body went out in two writes). :func:`follow_dataset` is
the ``gw502d-follow`` row of run.py and the followed-files rows of scaling.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory, TemporaryFile
from types import TracebackType
from typing import Any

import writers
from datasets import ROOT, Counts, child_env, gw502d, nonzero

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LINES = "gw502d_log_lines_total"
INCIDENTS = "gw502d_incidents_total"
INCIDENT_LABELS = ("incident", "source")
ROOT_CAUSES = "gw502d_root_causes_total"
OPEN_FILES = "gw502d_log_open_files"
_LABEL = re.compile(rb'(\w+)="((?:[^"\\]|\\.)*)"')


def run_child(cmd: list[str]) -> tuple[float, float, float, bytes]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one run, and its stdout."""
    with TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT,
                                env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{cmd[0]} failed: {cmd}")
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read()


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again for the daemon)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, int]:
    """Status, body and the monotonic ns the answer was complete, on a new connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.monotonic_ns()
    finally:
        conn.close()


def samples(body: bytes, name: str, labels: Sequence[str] = ()) -> dict[tuple[str, ...], float]:
    """The series of one metric family, keyed by the values of *labels* (in that order;
    without *labels*, by every label's value in the exporter's order)."""
    out: dict[tuple[str, ...], float] = {}
    head = name.encode()
    for line in body.splitlines():
        if line.startswith(head) and line[len(head):len(head) + 1] in (b"{", b" "):
            series, _, value = line.rpartition(b" ")
            found = {k.decode(): v.decode() for k, v in _LABEL.findall(series)}
            key = tuple(found.get(k, "") for k in labels) if labels else tuple(found.values())
            out[key] = float(value)
    return out


def incident_counts(body: bytes) -> Counts:
    """``gw502d_incidents_total`` as ``{incident: {source: n}}``, zeros left out."""
    return _nested(samples(body, INCIDENTS, INCIDENT_LABELS))


def root_cause_counts(body: bytes) -> Counts:
    """``gw502d_root_causes_total`` as ``{incident: {cause: n}}``, zeros left out."""
    return _nested(samples(body, ROOT_CAUSES, ("incident", "cause")))


def _nested(series: dict[tuple[str, ...], float]) -> Counts:
    counts: Counts = {}
    for (outer, inner), n in series.items():
        counts.setdefault(outer, {})[inner] = int(n)
    return nonzero(counts)


def series_count(body: bytes) -> tuple[int, int]:
    """(every series, gw502d's own series) on one /metrics page."""
    lines = [ln for ln in body.splitlines() if ln and not ln.startswith(b"#")]
    return len(lines), sum(ln.startswith(b"gw502d_") for ln in lines)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted *values*."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Daemon:
    """One ``gw502d run`` child on 127.0.0.1 with a config of its own; stopped by its PID.

    *logs* are (path, name, family or None); *pattern_dirs* extra catalog directories;
    *extra* more top-level config lines (``incidents_buffer = 10000``).
    """

    def __init__(self, work: Path, logs: list[tuple[Path, str, str | None]], *,
                 pattern_dirs: Sequence[Path] = (), extra: Sequence[str] = ()) -> None:
        self.work = work
        self.port = free_port()
        config = ['start_at = "end"', *extra]
        if pattern_dirs:
            config.append(f"pattern_dirs = {json.dumps([str(d) for d in pattern_dirs])}")
        for path, name, family in logs:
            config += ["", "[[log]]", f"path = {json.dumps(str(path))}",
                       f"name = {json.dumps(name)}"]
            if family is not None:
                config.append(f"family = {json.dumps(family)}")
        (work / "gw502d.toml").write_text("\n".join(config) + "\n")
        self._out = (work / "gw502d.out").open("wb")  # its JSON events, for a post-mortem
        self.proc = subprocess.Popen(
            gw502d("run", "--config", str(work / "gw502d.toml"), "--listen",
                   f"{HOST}:{self.port}", "--state-dir", str(work / "state")),
            stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT, env=child_env())
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
        return proc_cpu(self.pid)

    def status(self, key: str) -> float:
        """A /proc/<pid>/status field in MB (VmRSS, VmHWM) or as a number (Threads)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                number = int(value.split()[0])
                return number / 1024 if value.strip().endswith("kB") else number
        raise KeyError(key)


def proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process so far, from /proc/<pid>/stat (0: none)."""
    if pid is None:
        return 0.0
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pid(pid: int, name: str) -> int | None:
    """The pid of *pid*'s child process called *name* (its comm), if there is one."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        if comm == name and int(rest.split()[1]) == pid:
            return int(entry.name)
    return None


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
            speed = (seen[-1][1] - seen[-2][1]) / ((seen[-1][0] - seen[-2][0]) / 1e9)
            wait = (total - n) / speed / 2
        time.sleep(min(max(wait, 0.005), slowest))


def settled(daemon: Daemon, truth: Counts, seconds: float = 3.0) -> tuple[Counts, Counts]:
    """Incident counts once they equal *truth* (or as they are after *seconds*), and the
    root causes paired so far.

    ``lines_total`` counts a block before the block is classified, so the last block's
    incidents may show up a scrape later.
    """
    deadline = time.monotonic() + seconds
    while True:
        body = daemon.metrics()[0]
        counts = incident_counts(body)
        if counts == truth or time.monotonic() > deadline:
            return counts, root_cause_counts(body)
        time.sleep(0.02)


@dataclass
class FollowRun:
    """One follow-mode run over a dataset (times in seconds, memory in MB)."""

    wall: float  # first write -> lines_total == the dataset's lines
    cpu: float
    rss_mb: float  # VmHWM
    lag: float  # writer's last write -> lines_total == the dataset's lines
    writer: float  # first write -> last write
    counts: Counts = field(default_factory=dict)
    root_causes: Counts = field(default_factory=dict)
    scrapes: int = 0


def follow_dataset(dataset: Path, truth: dict[str, Any], *, files: int = 1,
                   chunk: int = writers.MiB, pattern_dirs: Sequence[Path] = ()) -> FollowRun:
    """The daemon follows *files* empty files (family left to detection); a writer appends
    the dataset to them, *chunk* bytes a write, dealt to the files in turn."""
    total = truth["lines"]
    with TemporaryDirectory(prefix="gw502follow-") as tmp:
        work = Path(tmp)
        followed = [work / f"error{i}.log" for i in range(files)]
        for path in followed:
            path.touch()
        logs: list[tuple[Path, str, str | None]] = [(p, p.stem, None) for p in followed]
        with Daemon(work, logs, pattern_dirs=pattern_dirs) as daemon:
            cpu0 = daemon.cpu()
            writer = writers.start("copy", dataset, chunk, *followed)
            seen: list[tuple[int, int]] = []
            done = wait_lines(daemon, total, history=seen)
            cpu1 = daemon.cpu()
            w = writers.result(writer)
            if w["lines"] != total:
                raise RuntimeError(f"writer wrote {w['lines']} lines, dataset has {total}")
            counts, causes = settled(daemon, truth["counts"])
            return FollowRun(wall=(done - w["first_ns"]) / 1e9, cpu=cpu1 - cpu0,
                             rss_mb=daemon.status("VmHWM"), lag=(done - w["last_ns"]) / 1e9,
                             writer=(w["last_ns"] - w["first_ns"]) / 1e9, counts=counts,
                             root_causes=causes, scrapes=len(seen))
