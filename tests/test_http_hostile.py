"""The exporter against hostile clients (issue 12, item 1 and the quiet-failure part of 6).

The daemon runs as ``python -m gw502d run`` under the systemd unit's own limits (TasksMax,
MemoryMax as cgroups, LimitNOFILE as an rlimit: tests/servers/limits.py), the attackers
are tests/servers/hostile.py on 127.0.0.1, and the witness is a real Prometheus scraping
every second with a one-second timeout, plus a scraper of our own that opens a new
connection each time (what a restarted Prometheus does). The bounds themselves (head,
idle and write deadlines, the connection cap) are checked on an in-process server with
small limits, so no test waits for the production timeouts.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_prometheus_scrape import Prometheus

from gw502d.classify.catalog import load_catalog
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.export.collector import Scrape, build_registry
from gw502d.export.hosts import HostPolicy
from gw502d.export.http import Exporter, Limits, Site
from gw502d.export.listen import Listen
from tests.daemon import DaemonProcess, config_text, log_paths
from tests.servers.hostile import Disconnects, Scraper, SlowSockets
from tests.servers.limits import Confinement, UnitLimits

CATALOG = load_catalog()


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_unit_limits_are_the_ones_tested() -> None:
    limits = UnitLimits.from_unit()
    assert limits.tasks == 64
    # 500 slow sockets, the logs and the state need more than systemd's default 1024.
    assert limits.nofile[0] >= 4096
    assert limits.memory == 256 << 20


def test_scrapes_answer_within_a_second_while_500_slow_sockets_are_held(
        tmp_path: Path) -> None:
    logs = log_paths(tmp_path, ("nginx",))
    with Confinement() as box, DaemonProcess(tmp_path, config_text(logs),
                                             prefix=box.prefix()) as d:
        d.start()
        with SlowSockets(d.port, 500) as slow:
            deadline = time.monotonic() + 30
            while slow.count < 500 and time.monotonic() < deadline:
                time.sleep(0.1)
            with Prometheus(tmp_path, f"127.0.0.1:{d.port}") as prom, \
                    Scraper(d.port, every=0.25, timeout=1.0) as scraper:
                prom.wait_for("count_over_time(up[1m])",
                              lambda r: bool(r) and float(r[0]["value"][1]) >= 6, timeout=60)
                ups = prom.query("min_over_time(up[1m])")
                slowest = prom.query("max_over_time(scrape_duration_seconds[1m])")
            held = slow.held
            threads = thread_count(d.pid)
        assert ups and float(ups[0]["value"][1]) == 1, ups
        assert slowest and float(slowest[0]["value"][1]) < 1.0, slowest
        summary = scraper.result.summary()
        assert summary["scrapes"] >= 10 and not scraper.result.failures, (
            summary, scraper.result.failures[:5])
        assert scraper.result.percentile(99) < 1.0, summary
        assert held >= 450, held  # they were really held during the scrapes
        assert threads <= 16, threads
        assert box.tasks_refused() == 0
        assert d.stop() == 0


def test_200_concurrent_clients_are_all_answered(tmp_path: Path) -> None:
    logs = log_paths(tmp_path, ("nginx",))
    with DaemonProcess(tmp_path, config_text(logs)) as d:
        d.start()
        start = threading.Barrier(200)
        results: list[Any] = []

        def one() -> None:
            start.wait()
            began = time.monotonic()
            try:
                with urllib.request.urlopen(f"{d.url}/metrics", timeout=5) as response:
                    results.append((response.status, time.monotonic() - began))
            except OSError as exc:
                results.append((repr(exc), time.monotonic() - began))

        threads = [threading.Thread(target=one) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        failed = [r for r in results if r[0] != 200]
        assert len(results) == 200 and not failed, (len(failed), failed[:3])
        assert d.stop() == 0


def _quiet(d: DaemonProcess) -> None:
    """Every line the daemon wrote (stdout and stderr) is a JSON event, none a traceback."""
    lines = d.output.read_text(errors="replace").splitlines()
    assert lines and all(line.startswith("{") for line in lines), [
        line for line in lines if not line.startswith("{")][:10]
    assert "Traceback" not in d.output.read_text(errors="replace")


def test_client_failures_are_quiet(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    logs = log_paths(tmp_path, ("nginx",))
    with DaemonProcess(tmp_path, config_text(logs)) as d:
        d.start()
        with Disconnects(d.port, threads=8) as gone:
            time.sleep(3)
        assert gone.count >= 100
        assert d.get("/healthz")[0] == 200
        assert d.stop() == 0
        _quiet(d)

    cert, key = tls_files
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    (tmp_path / "daemon.out").unlink()
    with DaemonProcess(tmp_path, config_text(logs, web_config=str(web)), scheme="https") as d:
        d.start(wait=False)
        context = ssl.create_default_context(cafile=str(cert))
        d.wait_for(lambda: d.get("/healthz", context=context)[0] == 200, "TLS /healthz")
        with Disconnects(d.port, threads=8, tls=True) as gone, \
                Disconnects(d.port, threads=4) as plain:
            time.sleep(3)
        assert gone.count >= 50 and plain.count >= 50
        assert d.get("/healthz", context=context)[0] == 200
        assert d.stop() == 0
        _quiet(d)


# --- the bounds, on an in-process server with small limits ----------------------------


@contextlib.contextmanager
def serving(limits: Limits) -> Iterator[Exporter]:
    """An in-process exporter whose ``/`` is 16 MiB (more than the kernel buffers)."""
    counters = Pipeline(CATALOG, [], Settings(10, True, 5.0), Totals())
    site = Site(build_registry(lambda: Scrape(counters.numbers(), {}, True, 1.0)),
                health=lambda: None, incidents=lambda query: [],
                page=lambda nonce: "<html>" + "x" * (16 << 20), web=None,
                hosts=HostPolicy(names=()))
    exporter = Exporter(Listen("127.0.0.1", 0), site, limits)
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.stop()


@pytest.fixture
def small() -> Iterator[Exporter]:
    with serving(Limits(connections=20, head_timeout=0.6, idle_timeout=1.0,
                        write_timeout=1.0)) as exporter:
        yield exporter


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_a_head_that_never_ends_is_dropped(small: Exporter) -> None:
    with socket.create_connection(("127.0.0.1", small.port)) as partial, \
            socket.create_connection(("127.0.0.1", small.port)) as silent:
        partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(3):  # trickling does not extend the deadline
            time.sleep(0.2)
            with contextlib.suppress(OSError):  # closed already on a slow machine
                partial.sendall(b"X-More: 1\r\n")
        assert _closed_within(partial, 2.0)
        assert _closed_within(silent, 2.0)


def test_idle_and_unread_connections_are_dropped(small: Exporter) -> None:
    with socket.create_connection(("127.0.0.1", small.port)) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
        assert _closed_within(kept, 3.0)  # idle_timeout 1 s
    with socket.create_connection(("127.0.0.1", small.port)) as deaf:
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # 16 MiB: more than the kernel's buffers take, so the server holds the rest
        deaf.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(3)  # write_timeout 1 s: the server gave up on the unread answer
        assert _closed_within(deaf, 5.0)


def test_new_connections_push_out_the_oldest_unfinished_one() -> None:
    with serving(Limits(connections=20)) as exporter, contextlib.ExitStack() as stack:
        port = exporter.port
        slow = [stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200
        assert _closed_within(slow[0], 2.0)  # the oldest made room
        assert not _closed_within(slow[-1], 0.1)


def test_oversized_heads_and_bodies_are_refused(small: Exporter) -> None:
    def ask(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", small.port), timeout=5) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    assert ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
               ).startswith(b"HTTP/1.1 431 ")
    assert ask(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
               ).startswith(b"HTTP/1.1 400 ")
    assert ask(b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    assert ask(b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert ask(b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert ask(b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # Two requests in one packet: both answered, in order.
    both = ask(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert both.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 404 " in both
