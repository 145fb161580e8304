"""Hostile HTTP clients for the exporter's tests and bench/hostile.py, and a scraper to
time what a real client sees meanwhile.

Each attack is a context manager running its own threads against 127.0.0.1 only, bounded
in sockets and in time (it stops when the ``with`` block ends). None of them needs
anything from the server beyond a TCP port.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import ssl
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"


def _connect(port: int, timeout: float = 2.0) -> socket.socket | None:
    try:
        return socket.create_connection((HOST, port), timeout=timeout)
    except OSError:
        return None


def _linger0(sock: socket.socket) -> None:
    """close() sends RST instead of FIN: a client that vanishes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _alive(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (no EOF, no reset); *sock* must be
    non-blocking (a socket with a timeout would wait for data first)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


class Attack:
    """A client behaviour run by *threads* threads until the ``with`` block ends."""

    name = "attack"
    threads = 1

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop_event = threading.Event()
        self.count = 0  # connections or requests made, for the report
        self._threads: list[threading.Thread] = []

    def run(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        with contextlib.suppress(Exception):  # an attacker never cares why it failed
            self.run()

    def __enter__(self) -> Self:
        self._threads = [threading.Thread(target=self._loop, daemon=True, name=self.name)
                         for _ in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(10)


class SlowSockets(Attack):
    """Holds *n* connections that each send a partial request head and then a header line
    every *every* seconds (Slowloris); one the server closes is opened again."""

    name = "slow"

    def __init__(self, port: int, n: int, *, first: bytes | None = None,
                 trickle: bytes = b"X-Slow: 1\r\n", every: float = 1.0) -> None:
        super().__init__(port)
        self.n = n
        self.first = (b"GET /metrics HTTP/1.1\r\nHost: %s:%d\r\n" % (HOST.encode(), port)
                      if first is None else first)
        self.trickle = trickle
        self.every = every
        self.sockets: list[socket.socket] = []
        self.held = 0  # how many were open at the last round

    def _open(self) -> socket.socket | None:
        sock = _connect(self.port)
        if sock is not None:
            self.count += 1
            try:
                if self.first:
                    sock.sendall(self.first)
            except OSError:
                sock.close()
                return None
            sock.setblocking(False)
        return sock

    def run(self) -> None:
        while not self.stop_event.is_set() and len(self.sockets) < self.n:
            sock = self._open()
            if sock is not None:
                self.sockets.append(sock)
        while not self.stop_event.wait(self.every):
            for i, sock in enumerate(self.sockets):
                ok = _alive(sock)
                if ok and self.trickle:
                    try:
                        sock.send(self.trickle)
                    except BlockingIOError:
                        pass
                    except OSError:
                        ok = False
                if not ok:
                    sock.close()
                    self.sockets[i] = self._open() or sock
            self.held = sum(_alive(s) for s in self.sockets)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(None, None, None)
        for sock in self.sockets:
            sock.close()


class Idle(SlowSockets):
    """Holds *n* connections that send nothing at all."""

    name = "idle"

    def __init__(self, port: int, n: int) -> None:
        super().__init__(port, n, first=b"", trickle=b"")


class Flood(Attack):
    """*threads* clients asking for *path* back to back, each on a new connection."""

    name = "flood"

    def __init__(self, port: int, threads: int = 50, path: str = "/metrics",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(port)
        self.threads = threads
        self.path = path
        self.headers = headers or {}

    def run(self) -> None:
        while not self.stop_event.is_set():
            conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
            try:
                conn.request("GET", self.path, headers=self.headers)
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                time.sleep(0.01)
            finally:
                conn.close()
            self.count += 1


class BadAuth(Flood):
    """Clients sending wrong passwords for a real user name, back to back."""

    name = "badauth"

    def __init__(self, port: int, threads: int = 20, user: str = "prometheus") -> None:
        token = base64.b64encode(f"{user}:wrong-{os.getpid()}".encode()).decode()
        super().__init__(port, threads, headers={"Authorization": f"Basic {token}"})


class HugeHeaders(Attack):
    """Clients sending request heads of *size* bytes (header lines of 4 KiB), over and over."""

    name = "huge"

    def __init__(self, port: int, threads: int = 10, size: int = 1 << 20) -> None:
        super().__init__(port)
        self.threads = threads
        line = b"X-Big: " + b"a" * 4089 + b"\r\n"
        self.payload = (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        + line * (size // len(line)) + b"\r\n")

    def run(self) -> None:
        while not self.stop_event.is_set():
            sock = _connect(self.port)
            if sock is None:
                time.sleep(0.01)
                continue
            with sock, contextlib.suppress(OSError):
                sock.sendall(self.payload)
                sock.recv(4096)
            self.count += 1


class Disconnects(Attack):
    """Clients that send a request and reset the connection before the answer comes, or
    right in the middle of a TLS handshake."""

    name = "disconnects"

    def __init__(self, port: int, threads: int = 10, tls: bool = False) -> None:
        super().__init__(port)
        self.threads = threads
        self.tls = tls
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def run(self) -> None:
        request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        n = 0
        while not self.stop_event.is_set():
            sock = _connect(self.port)
            if sock is None:
                time.sleep(0.01)
                continue
            n += 1
            _linger0(sock)
            with sock, contextlib.suppress(OSError):
                if self.tls:  # a ClientHello, then gone
                    obj = self.context.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO())
                    with contextlib.suppress(ssl.SSLWantReadError):
                        obj.do_handshake()
                    sock.sendall(out.read())
                else:
                    sock.sendall(request)
                if n % 2:
                    sock.recv(100)  # part of the answer, then reset
            self.count += 1


class SlowReaders(Attack):
    """Clients that ask for *path* over and over on *n* connections and never read."""

    name = "slowread"

    def __init__(self, port: int, n: int = 100, path: str = "/metrics") -> None:
        super().__init__(port)
        self.n = n
        self.request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode()

    def run(self) -> None:
        sockets = [s for s in (_connect(self.port) for _ in range(self.n)) if s is not None]
        for s in sockets:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            while not self.stop_event.wait(0.2):
                for s in sockets:
                    with contextlib.suppress(OSError):
                        s.send(self.request, socket.MSG_DONTWAIT)
                        self.count += 1
        finally:
            for s in sockets:
                s.close()


@dataclass
class Scrapes:
    """What a scraper saw: latency of each answered scrape (s), and the failures."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(p) - 1]

    def summary(self) -> dict[str, float | int]:
        return {"scrapes": len(self.latencies) + len(self.failures),
                "failed": len(self.failures),
                "p50_ms": round(self.percentile(50) * 1000, 1),
                "p99_ms": round(self.percentile(99) * 1000, 1),
                "max_ms": round(max(self.latencies, default=float("nan")) * 1000, 1)}


class Scraper:
    """GET /metrics every *every* seconds on a new connection, *timeout* s allowed, as a
    Prometheus that just (re)started does; a non-200 answer or no answer is a failure."""

    def __init__(self, port: int, *, every: float = 0.2, timeout: float = 1.0,
                 headers: dict[str, str] | None = None,
                 context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.every = every
        self.timeout = timeout
        self.headers = {"Accept-Encoding": "gzip", **(headers or {})}
        self.context = context
        self.result = Scrapes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="scraper")

    def scrape(self) -> None:
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(HOST, self.port, timeout=self.timeout,
                                        context=self.context)
            if self.context is not None else
            http.client.HTTPConnection(HOST, self.port, timeout=self.timeout))
        start = time.monotonic()
        try:
            conn.request("GET", "/metrics", headers=self.headers)
            response = conn.getresponse()
            body = response.read()
            took = time.monotonic() - start
            if response.status != 200 or not body:
                self.result.failures.append(f"HTTP {response.status}")
            elif took > self.timeout:
                self.result.failures.append(f"took {took:.2f} s")
            else:
                self.result.latencies.append(took)
        except (OSError, http.client.HTTPException) as exc:
            self.result.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.scrape()
            self._stop.wait(max(0.0, self.every - (time.monotonic() - began)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


AttackFactory = Callable[[int], Attack]
