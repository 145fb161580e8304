#!/usr/bin/env python3
"""``gw502d run`` against hostile clients: what a scraper sees while they attack.

Each scenario starts a fresh daemon (``python3 -m gw502d run`` on 127.0.0.1, under the
systemd unit's TasksMax, MemoryMax and LimitNOFILE when run as root: see
tests/servers/limits.py) and its monitoring, which scrapes (and logs in) once before the
attack begins, as on a running setup; then one attack from tests/servers/hostile.py, and
for ``--seconds``:

- a scraper of our own: GET /metrics on a new connection every 0.2 s, 1 s allowed (the
  worst case of a Prometheus, which keeps its connection); latency p50/p99/max of the
  answered ones, and failures (no answer, an error status, over 1 s);
- a real Prometheus (Debian's ``prometheus``) scraping every second with a 1 s timeout:
  how many of its scrapes failed (``up`` 0) and its slowest ``scrape_duration_seconds``;
- the daemon: threads and peak RSS at the end, and whether it is still alive.

Everything binds 127.0.0.1; every process is stopped by its PID; attacks end with their
scenario. The gw502d measured is the one ``import gw502d`` finds (set PYTHONPATH to
compare trees); its unit file is taken from the same tree.

    python3 bench/hostile.py                      # all scenarios, 10 s each (~3 min)
    python3 bench/hostile.py --seconds 5 --only baseline,slow
    PYTHONPATH=/path/to/old/tree python3 bench/hostile.py --json before.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt

import gw502d  # the tree measured: PYTHONPATH's first

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: for tests.servers, never for gw502d

from tests.servers.hostile import (  # noqa: E402
    Attack,
    BadAuth,
    Disconnects,
    Flood,
    HugeHeaders,
    Idle,
    Scraper,
    Scrapes,
    SlowReaders,
    SlowSockets,
)
from tests.servers.limits import Confinement, UnitLimits  # noqa: E402

HOST = "127.0.0.1"
PASSWORD = "s3cret"
TREE = Path(gw502d.__file__).resolve().parents[1]


class Quiet(Attack):
    """No attack: the baseline."""

    name = "baseline"

    def run(self) -> None:
        self.stop_event.wait()


# name: (what it does, the attack, whether the daemon needs basic auth)
SCENARIOS: dict[str, tuple[str, Callable[[int], Attack], bool]] = {
    "baseline": ("no attack", Quiet, False),
    "slow": ("500 sockets, partial request head, a header line a second",
             lambda port: SlowSockets(port, 500), False),
    "idle": ("500 sockets that send nothing", lambda port: Idle(port, 500), False),
    "flood": ("50 clients asking for /metrics back to back", lambda port: Flood(port, 50),
              False),
    "huge": ("10 clients sending 1 MiB request heads", lambda port: HugeHeaders(port, 10),
             False),
    "badauth": ("20 clients with a wrong password (cost-10 bcrypt)",
                lambda port: BadAuth(port, 20), True),
    "disconnects": ("10 clients resetting mid-request", lambda port: Disconnects(port, 10),
                    False),
    "slowread": ("100 sockets asking for /metrics, never reading",
                 lambda port: SlowReaders(port, 100), False),
}


def free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], failure: str,
               timeout: float) -> None:
    """Poll *ready* (an OSError counts as not yet) while *proc* runs, for *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if ready():
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def daemon(work: Path, *, auth: bool, prefix: tuple[str, ...]) -> Iterator[tuple[int, int]]:
    """A gw502d run following an empty nginx log; (port, pid)."""
    port = free_port()
    log = work / "error.log"
    log.touch()
    config = [f'[[log]]\npath = "{log}"\nfamily = "nginx"\nname = "nginx"']
    if auth:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        (work / "web.yml").write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
        config.insert(0, f'web_config = "{work / "web.yml"}"')
    (work / "gw502d.toml").write_text("\n".join(config) + "\n")
    out = (work / "gw502d.out").open("wb")
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "gw502d", "run", "--config", str(work / "gw502d.toml"),
         "--listen", f"{HOST}:{port}", "--state-dir", str(work / "state")],
        stdout=out, stderr=subprocess.STDOUT, cwd=TREE)
    def healthy() -> bool:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as r:
            return r.status == 200

    try:
        wait_until(healthy, proc, f"gw502d did not start: see {work / 'gw502d.out'}", 30)
        yield port, proc.pid
    finally:
        stop(proc)
        out.close()


@contextlib.contextmanager
def prometheus(work: Path, target: str, *, auth: bool) -> Iterator[Callable[[str], Any]]:
    """A Prometheus scraping *target* every second (1 s timeout); yields a query function."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: apt-get install prometheus")
    port = free_port()
    basic = (f"    basic_auth:\n      username: prometheus\n      password: {PASSWORD}\n"
             if auth else "")
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: gw502d\n{basic}"
        f"    static_configs:\n      - targets: ['{target}']\n")
    out = (work / "prometheus.out").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}",
         f"--web.listen-address={HOST}:{port}", f"--storage.tsdb.path={work / 'tsdb'}"],
        stdout=out, stderr=subprocess.STDOUT)

    def query(promql: str) -> Any:
        url = f"http://{HOST}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    try:  # until its first scrape (it waits ~5 s for its target list)
        wait_until(lambda: bool(query("count_over_time(up[1m])")), proc,
                   f"prometheus did not scrape: see {work / 'prometheus.out'}", 60)
        yield query
    finally:
        stop(proc)
        out.close()


def run_scenario(name: str, seconds: float, confine: bool) -> dict[str, Any]:
    what, attack, auth = SCENARIOS[name]
    headers = {}
    if auth:
        import base64  # noqa: PLC0415

        token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    with tempfile.TemporaryDirectory(prefix="gw502d-hostile-") as tmp:
        work = Path(tmp)
        box = Confinement(UnitLimits.from_unit(TREE / "deploy/systemd/gw502d.service"))
        with contextlib.ExitStack() as stack:
            prefix: tuple[str, ...] = ()
            if confine:
                prefix = stack.enter_context(box).prefix()
            port, pid = stack.enter_context(daemon(work, auth=auth, prefix=prefix))
            row: dict[str, Any] = {"scenario": name, "what": what}
            # The monitoring runs (and has logged in) before the attack starts.
            query = stack.enter_context(prometheus(work, f"{HOST}:{port}", auth=auth))
            scraper = Scraper(port, headers=headers)
            scraper.scrape()
            with attack(port) as attacker:
                time.sleep(1.0)  # let it take hold
                scraper.result = Scrapes()
                with scraper:
                    time.sleep(seconds)
                window = f"{round(seconds)}s"
                prom_total = query(f"count_over_time(up[{window}])")
                prom_up = query(f"sum_over_time(up[{window}])")
                row["prom_failed"] = (None if prom_total is None
                                      else f"{int(prom_total - (prom_up or 0))}/{int(prom_total)}")
                slowest = query(f"max_over_time(scrape_duration_seconds[{window}])")
                row["prom_max_ms"] = None if slowest is None else round(slowest * 1000, 1)
                alive = Path(f"/proc/{pid}").exists()
                row["alive"] = alive
                row["threads"] = proc_status(pid, "Threads") if alive else None
                row["peak_rss_mb"] = round(proc_status(pid, "VmHWM") / 1024) if alive else None
                row["attack_count"] = attacker.count
            row.update(scraper.result.summary())
            row["failures"] = sorted(set(scraper.result.failures))[:3]
            if confine:
                row["tasks_refused"] = box.tasks_refused()
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | scrapes failed | p50 ms | p99 ms | max ms | Prometheus failed | "
            "Prometheus max ms | threads | peak RSS MB |")
    out = [head, "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        out.append(f"| {r['scenario']} | {r['failed']}/{r['scrapes']} | {r['p50_ms']} | "
                   f"{r['p99_ms']} | {r['max_ms']} | {r['prom_failed']} | {r['prom_max_ms']} | "
                   f"{r['threads']} | {r['peak_rss_mb']} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per scenario")
    parser.add_argument("--only", help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--no-unit-limits", action="store_true",
                        help="do not apply TasksMax/MemoryMax/LimitNOFILE (not root)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    confine = not args.no_unit_limits
    if confine and os.geteuid() != 0:
        parser.error("the unit's limits need root (cgroups); use --no-unit-limits")
    print(f"gw502d from {TREE}, unit limits {'on' if confine else 'off'}", file=sys.stderr)
    rows = []
    for name in names:
        row = run_scenario(name, args.seconds, confine)
        print(f"{name}: {row}", file=sys.stderr)
        rows.append(row)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
