"""One function per incident: start real servers, provoke the failure, return what they logged.

Why: the classifier's tests must feed on bytes nginx/uWSGI/gunicorn/Werkzeug really wrote on
this machine. Each function is bounded (a few seconds), talks only to 127.0.0.1, stops every
process it started by PID in `finally`, and returns a `Capture`: the whole relevant log file
as raw bytes plus the indexes of the line(s) that are the incident (companions in order).

Some misbehaving *upstreams* (reset, garbage, full backlog, ...) are tiny socket servers in a
thread of this process; the logs captured are always those of the real server in front.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.servers.harness import (
    DEFAULT_NGINX_USER,
    HARAKIRI_SLEEP,
    HARAKIRI_WAIT,
    HOST,
    FlaskDev,
    Gunicorn,
    Matcher,
    Nginx,
    Server,
    Uwsgi,
    after_match,
    free_port,
    make_workdir,
    read_lines,
    wait_for_line,
)
from tests.servers.versions import (
    GUNICORN_20,
    GUNICORN_23,
    GUNICORN_CURRENT,
    NGINX_DEBIAN,
    UWSGI_DEBIAN,
    UWSGI_PYPI,
    WERKZEUG_2,
    WERKZEUG_CURRENT,
    Version,
)

Via = Literal["uwsgi", "proxy"]
Pattern = str | re.Pattern[str]


class Unsupported(RuntimeError):
    """The scenario cannot be provoked on this machine (e.g. needs root for a www-data worker)."""


# --------------------------------------------------------------------------- result type


@dataclass
class Capture:
    """What one scenario made a real server write.

    `raw` is the whole log file, byte for byte; `lines` splits it on b"\\n" (no terminators);
    `incident` are indexes into `lines`, in file order, of the line(s) that signal the
    incident -- the first is the best identifier unless `primary` says otherwise.
    `extra` holds other logs of the same run (access logs, the backend's log), raw.
    """

    family: str
    scenario: str
    variant: str
    log_name: str
    raw: bytes
    incident: list[int]
    primary: int | None = None
    extra: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    server: str = ""  # who wrote `raw`, e.g. "uWSGI 2.0.31" (the origin of real: examples)

    @property
    def name(self) -> str:
        base = f"{self.family}-{self.scenario}"
        return f"{base}.{self.variant}" if self.variant else base

    @property
    def lines(self) -> list[bytes]:
        return split_lines(self.raw)

    @property
    def incident_lines(self) -> list[bytes]:
        lines = self.lines
        return [lines[i] for i in self.incident]

    @property
    def primary_line(self) -> bytes | None:
        if self.primary is not None:
            return self.lines[self.primary]
        return self.incident_lines[0] if self.incident else None


def split_lines(raw: bytes) -> list[bytes]:
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def find_lines(raw: bytes, *patterns: Pattern) -> list[int]:
    """Indexes of lines matching any pattern (substring or regex), in file order."""
    out = []
    for i, line in enumerate(split_lines(raw)):
        text = line.decode("utf-8", "replace")
        for p in patterns:
            if (p in text) if isinstance(p, str) else p.search(text):
                out.append(i)
                break
    return out


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _capture(
    family: str,
    scenario: str,
    variant: str,
    log: Path,
    patterns: Sequence[Pattern],
    *,
    primary: Pattern | None = None,
    extra: dict[str, Path] | None = None,
    notes: Sequence[str] = (),
    server: str = "",
) -> Capture:
    raw = _read(log)
    incident = find_lines(raw, *patterns)
    prim = None
    if primary is not None:
        hits = find_lines(raw, primary)
        prim = hits[0] if hits else None
    return Capture(
        family=family,
        scenario=scenario,
        variant=variant,
        log_name=log.name,
        raw=raw,
        incident=incident,
        primary=prim,
        extra={name: _read(p) for name, p in (extra or {}).items()},
        notes=list(notes),
        server=server,
    )


@contextlib.contextmanager
def _workdir(base: Path | None) -> Iterator[Path]:
    path = make_workdir(base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _running(*servers: Server) -> Iterator[None]:
    """Start servers in order; stop all of them (by PID, reverse order) whatever happens."""
    started: list[Server] = []
    try:
        for s in servers:
            s.start()
            started.append(s)
        yield
    finally:
        for s in reversed(started):
            s.stop()


def _wait_quietly(path: Path, match: Matcher, timeout: float, start: int = 0) -> bool:
    """Wait for an optional companion line; a missing one is data, not an error."""
    try:
        wait_for_line(path, match, timeout, start=start)
    except TimeoutError:
        return False
    return True


# --------------------------------------------------------------------------- clients


def http_request(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
) -> bytes:
    """Send one HTTP/1.1 request with a raw socket; return the raw response (b"" on error)."""
    hdrs = {"Host": f"{HOST}:{port}", "Connection": "close", **(headers or {})}
    if body or method == "POST":
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    chunks = []
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(head.encode("latin-1") + b"\r\n" + body)
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else None


def send_all(port: int, requests: Sequence[tuple[str, Mapping[str, str]]], *,
             parallel: bool = False) -> list[int | None]:
    """Each (path, headers) to 127.0.0.1:*port*, one after the other or all at once; the
    statuses (None: no answer)."""
    statuses: list[int | None] = [None] * len(requests)

    def one(n: int) -> None:
        path, headers = requests[n]
        statuses[n] = status_of(http_request(port, path, headers=dict(headers), timeout=15))

    if not parallel:
        for n in range(len(requests)):
            one(n)
        return statuses
    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return statuses


def _parallel(fn: Callable[[], object], n: int, timeout: float = 15.0) -> None:
    threads = [threading.Thread(target=fn, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(timeout)


def _set_linger0(sock: socket.socket) -> None:
    """Make close() send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def disconnect_mid_response(
    port: int, path: str, *, mode: Literal["fin", "rst"], read_bytes: int = 256 * 1024
) -> int:
    """GET `path`, read some of the body, then go away while the server is still writing.

    mode="fin": half-close first (server socket enters CLOSE_WAIT), then close -> the
    server's next write fails with EPIPE. mode="rst": close with SO_LINGER 0 -> ECONNRESET.
    Returns how many bytes were read.
    """
    got = 0
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        while got < read_bytes:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        if mode == "fin":
            s.shutdown(socket.SHUT_WR)
            time.sleep(0.05)
        else:
            _set_linger0(s)
    return got


def disconnect_before_response(port: int, path: str, *, after: float = 0.3) -> None:
    """Send a request, then close the client socket before the (slow) answer arrives."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        time.sleep(after)


# --------------------------------------------------------------------------- fake upstreams


def _read_request(conn: socket.socket, idle: float = 0.2) -> bytes:
    """Read what the client sent until it pauses (a request head or a uwsgi packet)."""
    conn.settimeout(3)
    data = b""
    with contextlib.suppress(OSError):
        data = conn.recv(65536)
        conn.settimeout(idle)
        while chunk := conn.recv(65536):
            data += chunk
    return data


def behave_close(conn: socket.socket) -> None:
    """Accept, read the request, close without a reply (FIN)."""
    _read_request(conn)
    conn.close()


def behave_reset(conn: socket.socket) -> None:
    """Accept, read the request, close with SO_LINGER 0 (RST)."""
    _read_request(conn)
    _set_linger0(conn)
    conn.close()


def behave_reply(payload: bytes) -> Callable[[socket.socket], None]:
    """Accept, read the request, send `payload`, close."""

    def behave(conn: socket.socket) -> None:
        _read_request(conn)
        with contextlib.suppress(OSError):
            conn.sendall(payload)
        time.sleep(0.1)
        conn.close()

    return behave


class FakeUpstream:
    """A listening socket (TCP on 127.0.0.1 or unix) whose connections get `behavior`.

    behavior=None means "never accept": connections pile up in the listen queue.
    """

    def __init__(
        self,
        behavior: Callable[[socket.socket], None] | None,
        *,
        unix_path: Path | None = None,
        backlog: int = 16,
        mode: int | None = None,
    ) -> None:
        self.behavior = behavior
        self.unix_path = unix_path
        self.backlog = backlog
        self.mode = mode
        self.port = 0
        self.fillers: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        family = socket.AF_UNIX if unix_path else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)

    def __enter__(self) -> FakeUpstream:
        if self.unix_path:
            self.sock.bind(str(self.unix_path))
            if self.mode is not None:
                self.unix_path.chmod(self.mode)
        else:
            self.sock.bind((HOST, 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(self.backlog)
        if self.behavior is not None:
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()
        return self

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            assert self.behavior is not None
            try:
                self.behavior(conn)
            finally:
                conn.close()

    def fill_backlog(self, max_conns: int = 8) -> int:
        """Occupy the listen queue with our own idle connections (never accepted)."""
        family = socket.AF_UNIX if self.unix_path else socket.AF_INET
        addr: str | tuple[str, int] = str(self.unix_path) if self.unix_path else (HOST, self.port)
        for _ in range(max_conns):
            c = socket.socket(family, socket.SOCK_STREAM)
            c.setblocking(False)
            self.fillers.append(c)
            err = c.connect_ex(addr)
            if err not in (0, 115):  # EINPROGRESS
                break  # EAGAIN: the unix queue is full
        time.sleep(0.2)  # let TCP handshakes land in the accept queue
        return len(self.fillers)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for c in self.fillers:
            c.close()
        self.sock.close()


# --------------------------------------------------------------------------- nginx config bits

UWSGI_PARAMS = """\
            uwsgi_param QUERY_STRING $query_string;
            uwsgi_param REQUEST_METHOD $request_method;
            uwsgi_param CONTENT_TYPE $content_type;
            uwsgi_param CONTENT_LENGTH $content_length;
            uwsgi_param REQUEST_URI $request_uri;
            uwsgi_param PATH_INFO $document_uri;
            uwsgi_param DOCUMENT_ROOT $document_root;
            uwsgi_param SERVER_PROTOCOL $server_protocol;
            uwsgi_param REQUEST_SCHEME $scheme;
            uwsgi_param REMOTE_ADDR $remote_addr;
            uwsgi_param REMOTE_PORT $remote_port;
            uwsgi_param SERVER_PORT $server_port;
            uwsgi_param SERVER_NAME $server_name;
            uwsgi_param HTTP_HOST $host;
"""


def pass_block(via: Via, target: int | Path | str, directives: str = "") -> str:
    """A location body: uwsgi_pass/proxy_pass to a port, a unix socket, or an upstream name.

    `directives` uses the prefix `X_` for the module prefix, e.g. "X_read_timeout 1s;".
    """
    if isinstance(target, int):
        addr = f"{HOST}:{target}"
    elif isinstance(target, Path):
        addr = f"unix:{target}" if via == "uwsgi" else f"unix:{target}:"
    else:
        addr = target
    extra = directives.replace("X_", f"{via}_")
    if via == "uwsgi":
        return f"{UWSGI_PARAMS}            uwsgi_pass {addr};\n            {extra}\n"
    return f"            proxy_pass http://{addr};\n            {extra}\n"


def _nginx_capture(
    nginx: Nginx,
    scenario: str,
    variant: str,
    patterns: Sequence[Pattern],
    *,
    primary: Pattern | None = None,
    extra: dict[str, Path] | None = None,
    notes: Sequence[str] = (),
) -> Capture:
    logs = {"access.log": nginx.access_log, "access_upstream.log": nginx.upstream_access_log}
    return _capture(
        "nginx",
        scenario,
        variant,
        nginx.log_path,
        patterns,
        primary=primary,
        extra={**logs, **(extra or {})},
        notes=notes,
        server=NGINX_DEBIAN.label,
    )


def _backend(tmp: Path, via: Via, options: dict[str, object] | None = None) -> Uwsgi | Gunicorn:
    """A real app server for `via`: uWSGI (binary protocol) or gunicorn (HTTP)."""
    if via == "uwsgi":
        return Uwsgi(tmp, options or {})
    return Gunicorn(tmp)


def _backend_log(backend: Uwsgi | Gunicorn) -> dict[str, Path]:
    logs = {backend.log_path.name: backend.log_path}
    if isinstance(backend, Gunicorn):
        logs[backend.access_log.name] = backend.access_log
    return logs


def _wait_backend_finished(backend: Uwsgi | Gunicorn, request: str, timeout: float) -> None:
    """Wait until the app server logged its own request line for `request` (e.g. "GET /sleep"),
    so its complaints about writing to a connection nginx already dropped are captured too."""
    log = backend.log_path if isinstance(backend, Uwsgi) else backend.access_log
    _wait_quietly(log, request, timeout)
    time.sleep(0.3)


# --------------------------------------------------------------------------- nginx scenarios


def nginx_upstream_header_too_big(via: Via = "uwsgi", base: Path | None = None) -> Capture:
    """Backend answers with an 8 KiB header; default 4k/8k buffers cannot hold it."""
    with _workdir(base) as tmp:
        backend = _backend(tmp, via)
        assert backend.port is not None
        nginx = Nginx(tmp, pass_block(via, backend.port))
        with _running(backend, nginx):
            resp = http_request(nginx.port, "/big-header?n=8192")
            wait_for_line(nginx.log_path, "too big header", 5)
        return _nginx_capture(
            nginx,
            "upstream_header_too_big",
            via,
            ["upstream sent too big header"],
            extra=_backend_log(backend),
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def nginx_upstream_timeout(
    phase: Literal["read_header", "connect", "send"] = "read_header",
    via: Via = "uwsgi",
    base: Path | None = None,
) -> Capture:
    """504s: slow app (read), full TCP accept queue (connect), never-read upstream (send)."""
    with _workdir(base) as tmp:
        if phase == "read_header":
            backend = _backend(tmp, via)
            assert backend.port is not None
            nginx = Nginx(tmp, pass_block(via, backend.port, "X_read_timeout 1s;"))
            with _running(backend, nginx):
                resp = http_request(nginx.port, "/sleep?s=2.5")
                wait_for_line(nginx.log_path, "timed out", 5)
                _wait_backend_finished(backend, "GET /sleep", 4)
            return _nginx_capture(
                nginx,
                "upstream_timeout",
                f"{phase}-{via}",
                ["upstream timed out"],
                extra=_backend_log(backend),
                notes=[f"client got HTTP {status_of(resp)}"],
            )
        if phase == "connect":
            with FakeUpstream(None, backlog=0) as up:
                filled = up.fill_backlog(3)
                nginx = Nginx(tmp, pass_block(via, up.port, "X_connect_timeout 1s;"))
                with _running(nginx):
                    resp = http_request(nginx.port, "/ok")
                    wait_for_line(nginx.log_path, "timed out", 5)
            return _nginx_capture(
                nginx,
                "upstream_timeout",
                f"{phase}-{via}",
                ["upstream timed out"],
                notes=[
                    f"listen(0) backlog filled with {filled} idle connections; SYNs dropped",
                    f"client got HTTP {status_of(resp)}",
                ],
            )
        # send: the upstream's accept queue holds the connection, nobody reads, buffers fill.
        with FakeUpstream(None, backlog=8) as up:
            block = pass_block(via, up.port, "X_send_timeout 1s;") + (
                "            client_max_body_size 256m;\n"
            )
            nginx = Nginx(tmp, block)
            with _running(nginx):
                body = b"x" * (48 * 1024 * 1024)
                resp = http_request(nginx.port, "/body", method="POST", body=body, timeout=15)
                wait_for_line(nginx.log_path, "timed out", 5)
        return _nginx_capture(
            nginx,
            "upstream_timeout",
            f"{phase}-{via}",
            ["upstream timed out", "buffered to a temporary file"],
            primary="upstream timed out",
            notes=[
                "48 MiB POST to an upstream that never reads (accept queue holds it)",
                f"client got HTTP {status_of(resp)}",
            ],
        )


def nginx_upstream_connect_refused(
    target: Literal["tcp", "unix"] = "tcp", via: Via = "uwsgi", base: Path | None = None
) -> Capture:
    """Nothing listens: a closed 127.0.0.1 port, or a stale unix socket file."""
    with _workdir(base) as tmp:
        dest: int | Path
        if target == "tcp":
            dest = free_port()
        else:
            dest = tmp / "stale.sock"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(dest))
            s.close()  # the file stays, nobody listens -> ECONNREFUSED
            dest.chmod(0o666)
        nginx = Nginx(tmp, pass_block(via, dest))
        with _running(nginx):
            resp = http_request(nginx.port, "/ok")
            wait_for_line(nginx.log_path, "connect() ", 5)
        return _nginx_capture(
            nginx,
            "upstream_connect_refused",
            f"{target}-{via}",
            ["(111: Connection refused)"],
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def nginx_upstream_socket_missing(via: Via = "uwsgi", base: Path | None = None) -> Capture:
    """uwsgi_pass/proxy_pass to a unix socket path that does not exist (app not started)."""
    with _workdir(base) as tmp:
        nginx = Nginx(tmp, pass_block(via, tmp / "missing" / "app.sock"))
        with _running(nginx):
            resp = http_request(nginx.port, "/ok")
            wait_for_line(nginx.log_path, "connect() ", 5)
        return _nginx_capture(
            nginx,
            "upstream_socket_missing",
            via,
            ["(2: No such file or directory)"],
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def nginx_upstream_socket_permission(
    source: Literal["fake", "uwsgi"] = "fake", via: Via = "uwsgi", base: Path | None = None
) -> Capture:
    """Workers run as www-data; the socket is root's and not writable for them.

    source="fake": a listener chmod 600; source="uwsgi": a real uWSGI unix socket created
    without --chmod-socket (umask 022 -> srwxr-xr-x root), the classic deployment mistake.
    """
    if DEFAULT_NGINX_USER is None:
        raise Unsupported("needs root so that nginx workers run as another user (www-data)")
    with _workdir(base) as tmp:
        sock = tmp / "app.sock"
        nginx = Nginx(tmp, pass_block(via, sock))
        if source == "fake":
            with FakeUpstream(behave_close, unix_path=sock, mode=0o600), _running(nginx):
                resp = http_request(nginx.port, "/ok")
                wait_for_line(nginx.log_path, "connect() ", 5)
            extra: dict[str, Path] = {}
        else:
            uw = Uwsgi(tmp, {"umask": "022"}, socket=str(sock))
            with _running(uw, nginx):
                resp = http_request(nginx.port, "/ok")
                wait_for_line(nginx.log_path, "connect() ", 5)
            extra = _backend_log(uw)
        return _nginx_capture(
            nginx,
            "upstream_socket_permission",
            f"{source}-{via}",
            ["(13: Permission denied)"],
            extra=extra,
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def nginx_upstream_backlog_full(
    source: Literal["fake", "uwsgi"] = "fake", base: Path | None = None
) -> Capture:
    """connect() to a unix socket whose listen queue is full -> EAGAIN (11).

    source="fake": listen(0), never accept, queue pre-filled by us. source="uwsgi": real
    uWSGI on a unix socket with --listen 1, its only worker busy, several parallel requests.
    """
    with _workdir(base) as tmp:
        sock = tmp / "app.sock"
        nginx = Nginx(tmp, pass_block("uwsgi", sock))
        pattern = "(11: Resource temporarily unavailable)"
        if source == "fake":
            with FakeUpstream(None, unix_path=sock, backlog=0, mode=0o666) as up:
                filled = up.fill_backlog(4)
                with _running(nginx):
                    resp = http_request(nginx.port, "/ok")
                    wait_for_line(nginx.log_path, "connect() ", 5)
            return _nginx_capture(
                nginx,
                "upstream_backlog_full",
                source,
                [pattern],
                notes=[f"{filled} filler connections", f"client got HTTP {status_of(resp)}"],
            )
        uw = Uwsgi(tmp, {"listen": 1, "chmod-socket": 666}, socket=str(sock))
        statuses: list[int | None] = []
        with _running(uw, nginx):

            def one() -> None:
                statuses.append(status_of(http_request(nginx.port, "/sleep?s=1")))

            _parallel(one, 6)
            _wait_quietly(nginx.log_path, pattern, 3)
        return _nginx_capture(
            nginx,
            "upstream_backlog_full",
            source,
            [pattern],
            extra=_backend_log(uw),
            notes=[f"statuses of 6 parallel requests: {sorted(map(str, statuses))}"],
        )


def _fake_upstream_failure(
    behave: Callable[[socket.socket], None], incident: str, pattern: str, via: Via,
    base: Path | None,
) -> Capture:
    """One request through nginx to a fake upstream that misbehaves as *behave* does."""
    with _workdir(base) as tmp, FakeUpstream(behave) as up:
        nginx = Nginx(tmp, pass_block(via, up.port))
        with _running(nginx):
            resp = http_request(nginx.port, "/ok")
            wait_for_line(nginx.log_path, pattern, 5)
        return _nginx_capture(
            nginx, incident, via, [pattern], notes=[f"client got HTTP {status_of(resp)}"]
        )


def nginx_upstream_premature_close(via: Via = "uwsgi", base: Path | None = None) -> Capture:
    """The upstream reads the request and closes without answering (FIN)."""
    return _fake_upstream_failure(
        behave_close, "upstream_premature_close", "upstream prematurely closed connection",
        via, base,
    )


def nginx_upstream_reset(via: Via = "uwsgi", base: Path | None = None) -> Capture:
    """The upstream reads the request and resets the connection (SO_LINGER 0 + close)."""
    return _fake_upstream_failure(
        behave_reset, "upstream_reset", "(104: Connection reset by peer)", via, base
    )


def nginx_no_live_upstreams(via: Via = "proxy", base: Path | None = None) -> Capture:
    """upstream{} of two dead servers with max_fails=1: request 1 marks both failed (502
    after two refusals), request 2 finds none alive. (A single-server upstream is never
    marked down by nginx, hence two.)"""
    with _workdir(base) as tmp:
        p1, p2 = free_port(), free_port()
        http_block = (
            "    upstream backend {\n"
            f"        server {HOST}:{p1} max_fails=1 fail_timeout=30s;\n"
            f"        server {HOST}:{p2} max_fails=1 fail_timeout=30s;\n"
            "    }\n"
        )
        nginx = Nginx(tmp, pass_block(via, "backend"), http_block=http_block)
        with _running(nginx):
            r1 = http_request(nginx.port, "/ok")
            r2 = http_request(nginx.port, "/ok")
            wait_for_line(nginx.log_path, "no live upstreams", 5)
        return _nginx_capture(
            nginx,
            "no_live_upstreams",
            via,
            ["no live upstreams", "(111: Connection refused)"],
            primary="no live upstreams",
            notes=[f"client got HTTP {status_of(r1)} then {status_of(r2)}"],
        )


INVALID_REPLIES: dict[str, bytes] = {
    "garbage": b"this is not http at all\r\n\r\n",
    "bad_header": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nBad header line\r\n\r\nok\n",
    "bad_status": b"HTTP/1.1 2000 OK\r\nContent-Length: 3\r\n\r\nok\n",
    "binary": b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
}


def nginx_upstream_invalid_header(
    reply: str = "garbage", via: Via = "proxy", base: Path | None = None
) -> Capture:
    """The upstream answers something that is not a valid HTTP response head."""
    with _workdir(base) as tmp, FakeUpstream(behave_reply(INVALID_REPLIES[reply])) as up:
        nginx = Nginx(tmp, pass_block(via, up.port))
        with _running(nginx):
            resp = http_request(nginx.port, "/ok")
            _wait_quietly(nginx.log_path, re.compile(r"\[(error|warn|crit)\]"), 3)
            time.sleep(0.2)
        return _nginx_capture(
            nginx,
            "upstream_invalid_header",
            f"{reply}-{via}",
            [re.compile(r"upstream sent (no valid|invalid)"), "upstream prematurely closed"],
            notes=[f"client got {resp[:60]!r}", f"reply was {INVALID_REPLIES[reply]!r}"],
        )


def nginx_client_disconnect(via: Via = "uwsgi", base: Path | None = None) -> Capture:
    """The client gives up while nginx waits for a slow upstream (-> info line, 499)."""
    with _workdir(base) as tmp:
        backend = _backend(tmp, via)
        assert backend.port is not None
        nginx = Nginx(tmp, pass_block(via, backend.port))
        with _running(backend, nginx):
            disconnect_before_response(nginx.port, "/sleep?s=1.5", after=0.3)
            wait_for_line(nginx.access_log, " 499 ", 5)
            _wait_backend_finished(backend, "GET /sleep", 3)
        return _nginx_capture(
            nginx,
            "client_disconnect",
            via,
            ["prematurely closed connection"],
            extra=_backend_log(backend),
        )


# --------------------------------------------------------------------------- uWSGI scenarios


def _uwsgi_capture(
    uw: Uwsgi,
    scenario: str,
    variant: str,
    patterns: Sequence[Pattern],
    *,
    primary: Pattern | None = None,
    nginx: Nginx | None = None,
    notes: Sequence[str] = (),
) -> Capture:
    extra = {"nginx-error.log": nginx.log_path, "access.log": nginx.access_log} if nginx else {}
    return _capture(
        "uwsgi",
        scenario,
        variant,
        uw.log_path,
        patterns,
        primary=primary,
        extra=extra,
        notes=notes,
        server=uw.version.label,
    )


def uwsgi_request_block_too_big(
    what: Literal["query", "header"] = "query", base: Path | None = None,
    version: Version = UWSGI_DEBIAN,
) -> Capture:
    """nginx forwards a request whose uwsgi vars exceed uWSGI's default buffer-size 4096."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, version=version)
        assert uw.port is not None
        nginx = Nginx(tmp, pass_block("uwsgi", uw.port))
        with _running(uw, nginx):
            if what == "query":
                resp = http_request(nginx.port, "/ok?q=" + "a" * 5000)
            else:
                resp = http_request(nginx.port, "/ok", headers={"X-Long": "b" * 5000})
            wait_for_line(uw.log_path, "invalid request block size", 5)
            _wait_quietly(nginx.log_path, "[error]", 2)
        return _uwsgi_capture(
            uw,
            "request_block_too_big",
            what,
            ["invalid request block size"],
            nginx=nginx,
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def uwsgi_protocol_mismatch(
    client: Literal["raw", "nginx_proxy_pass"] = "raw", base: Path | None = None,
    version: Version = UWSGI_DEBIAN,
) -> Capture:
    """Plain HTTP sent to a binary-protocol uwsgi --socket ("GE" read as a packet size)."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, version=version)
        assert uw.port is not None
        nginx: Nginx | None = None
        notes: list[str] = []
        if client == "raw":
            with _running(uw):
                resp = http_request(uw.port, "/ok", timeout=3)
                _wait_quietly(uw.log_path, re.compile(r"invalid request|skip"), 3)
        else:
            nginx = Nginx(tmp, pass_block("proxy", uw.port))
            with _running(uw, nginx):
                resp = http_request(nginx.port, "/ok")
                _wait_quietly(uw.log_path, re.compile(r"invalid request|skip"), 3)
                _wait_quietly(nginx.log_path, "[error]", 3)
        notes.append(f"client got HTTP {status_of(resp)} ({resp[:40]!r})")
        return _uwsgi_capture(
            uw, "protocol_mismatch", client, ["invalid request block size"], nginx=nginx,
            notes=notes,
        )  # fmt: skip


def uwsgi_client_disconnect(
    mode: Literal["fin", "rst", "nginx"] = "fin", base: Path | None = None,
    version: Version = UWSGI_DEBIAN,
) -> Capture:
    """The client goes away while the app streams a large body.

    fin/rst: raw client on --http-socket (EPIPE vs ECONNRESET). nginx: uwsgi_pass, client
    disconnects from nginx, nginx closes the upstream connection.
    """
    with _workdir(base) as tmp:
        nginx: Nginx | None = None
        stream = "/stream?n=400&size=65536&delay=0.01"
        if mode == "nginx":
            uw = Uwsgi(tmp, version=version)
            assert uw.port is not None
            nginx = Nginx(tmp, pass_block("uwsgi", uw.port))
            servers: tuple[Server, ...] = (uw, nginx)
        else:
            uw = Uwsgi(tmp, protocol="http", version=version)
            servers = (uw,)
        with _running(*servers):
            port = nginx.port if nginx else uw.port
            assert port is not None
            got = disconnect_mid_response(port, stream, mode="rst" if mode == "rst" else "fin")
            wait_for_line(uw.log_path, "GET /stream", 8)
            time.sleep(0.3)
        return _uwsgi_capture(
            uw,
            "client_disconnect",
            mode,
            [
                re.compile(r"uwsgi_response_\w+\(\)"),
                "SIGPIPE",
                re.compile(r"(IOError|OSError): write error"),
            ],
            primary=re.compile(r"uwsgi_response_\w+\(\)"),
            nginx=nginx,
            notes=[f"client read {got} bytes before leaving"],
        )


def _uwsgi_worker_lost(
    options: dict[str, object], path: str, scenario: str, variant: str, patterns: list[str],
    primary: str, base: Path | None, version: Version = UWSGI_DEBIAN,
) -> Capture:
    """A request behind nginx that costs uWSGI its worker; waits for the respawn."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, options, version=version)
        assert uw.port is not None
        nginx = Nginx(tmp, pass_block("uwsgi", uw.port))
        with _running(uw, nginx):
            resp = http_request(nginx.port, path)
            wait_for_line(uw.log_path, "Respawned uWSGI worker", HARAKIRI_WAIT)
            _wait_quietly(nginx.log_path, "[error]", 2)
            time.sleep(0.3)
        return _uwsgi_capture(
            uw, scenario, variant, patterns, primary=primary, nginx=nginx,
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def uwsgi_worker_harakiri(
    base: Path | None = None, version: Version = UWSGI_DEBIAN, graceful: bool = False
) -> Capture:
    """--harakiri 1 and a 6 s request behind nginx: the master kills the stuck worker
    (graceful: uWSGI >= 2.0.27 first sends SIGTERM, then kills harakiri-graceful-timeout
    seconds later)."""
    options: dict[str, object] = {"harakiri": 1}
    if graceful:
        options["harakiri-graceful-timeout"] = 1
    return _uwsgi_worker_lost(
        options, HARAKIRI_SLEEP, "worker_harakiri", "graceful" if graceful else "",
        ["HARAKIRI", "DAMN ! worker", "Respawned uWSGI worker"], "HARAKIRI ON WORKER",
        base, version,
    )


def uwsgi_worker_died(
    sig: int = 9, base: Path | None = None, version: Version = UWSGI_DEBIAN,
    scenario: str = "worker_died", primary: str = "DAMN ! worker",
) -> Capture:
    """The worker process dies by a signal mid-request (9 = OOM-killer-like, 11 = segfault)."""
    return _uwsgi_worker_lost(
        {}, f"/crash?sig={sig}", scenario, f"sig{sig}",
        ["DAMN ! worker", "Respawned uWSGI worker", "Segmentation Fault", "!!! uWSGI"],
        primary, base, version,
    )


def uwsgi_listen_queue_full(
    base: Path | None = None, version: Version = UWSGI_DEBIAN
) -> Capture:
    """--listen 2, one busy worker, many connects to the TCP --socket: queue overflows."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, {"listen": 2}, version=version)
        assert uw.port is not None
        clients: list[socket.socket] = []
        with _running(uw):
            # The binary --socket needs a uwsgi packet, not HTTP, to reach /sleep.
            busy = threading.Thread(target=_uwsgi_get, args=(uw.port, "/sleep", "s=4"))
            busy.start()
            time.sleep(0.3)
            for _ in range(12):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.setblocking(False)
                c.connect_ex((HOST, uw.port))
                clients.append(c)
            try:
                _wait_quietly(uw.log_path, "listen queue", 4)
            finally:
                for c in clients:
                    c.close()
                busy.join(6)
        return _uwsgi_capture(
            uw,
            "listen_queue_full",
            "",
            ["listen queue"],
            notes=["12 idle connects while the only worker sleeps 4 s"],
        )


def uwsgi_packet(path: str, query: str = "", method: str = "GET") -> bytes:
    """Encode a minimal uwsgi protocol request (modifier1 0 = WSGI)."""
    env = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": f"{path}?{query}" if query else path,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": HOST,
        "SERVER_PORT": "80",
        "REMOTE_ADDR": HOST,
        "HTTP_HOST": HOST,
    }
    body = b""
    for k, v in env.items():
        kb, vb = k.encode(), v.encode()
        body += struct.pack("<H", len(kb)) + kb + struct.pack("<H", len(vb)) + vb
    return struct.pack("<BHB", 0, len(body), 0) + body


def _uwsgi_get(port: int, path: str, query: str = "", timeout: float = 10.0) -> bytes:
    chunks = []
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(uwsgi_packet(path, query))
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


# --------------------------------------------------------------------------- gunicorn


def _gunicorn_capture(
    g: Gunicorn,
    scenario: str,
    variant: str,
    patterns: Sequence[Pattern],
    *,
    primary: Pattern | None = None,
    nginx: Nginx | None = None,
    notes: Sequence[str] = (),
) -> Capture:
    extra = {"gunicorn_access.log": g.access_log}
    if nginx:
        extra |= {"nginx-error.log": nginx.log_path, "access.log": nginx.access_log}
    return _capture(
        "gunicorn",
        scenario,
        variant,
        g.log_path,
        patterns,
        primary=primary,
        extra=extra,
        notes=notes,
        server=g.version.label,
    )


def gunicorn_worker_timeout(
    base: Path | None = None, version: Version = GUNICORN_CURRENT
) -> Capture:
    """--timeout 1 and a 5 s request (through nginx proxy_pass): the arbiter aborts the
    silent sync worker. The nginx logs of the same request are in `extra`."""
    with _workdir(base) as tmp:
        g = Gunicorn(tmp, ["--timeout", "1"], version=version)
        nginx = Nginx(tmp, pass_block("proxy", g.port))
        with _running(g, nginx):
            resp = http_request(nginx.port, "/sleep?s=5", timeout=8)
            lines = g.wait_for_line("WORKER TIMEOUT", 6)
            g.wait_for_line("Booting worker with pid", 6,
                            start=after_match(lines, "WORKER TIMEOUT"))
            time.sleep(0.3)
        pid = g.worker_pids()[0]
        return _gunicorn_capture(
            g,
            "worker_timeout",
            "",
            [
                "WORKER TIMEOUT",
                "Error handling request",
                "SystemExit",
                f"Worker exiting (pid: {pid})",
                re.compile(rf"Worker \(pid:{pid}\) (was sent|exited)"),
            ],
            primary="WORKER TIMEOUT",
            nginx=nginx,
            notes=[f"client (via nginx) got HTTP {status_of(resp)}"],
        )


#: How the arbiter reports a SIGKILLed worker: gunicorn >= 21, and 20.1
KILLED = re.compile(r"was sent SIGKILL|terminated due to signal 9$")


def gunicorn_worker_killed(
    how: Literal["external", "self"] = "external", base: Path | None = None,
    version: Version = GUNICORN_CURRENT,
) -> Capture:
    """The worker dies by SIGKILL (OOM-killer-like): we kill its idle PID, or it kills itself
    mid-request behind nginx proxy_pass (nginx logs in `extra`)."""
    with _workdir(base) as tmp:
        g = Gunicorn(tmp, version=version)
        nginx = Nginx(tmp, pass_block("proxy", g.port))
        with _running(g, nginx):
            if how == "external":
                os.kill(g.worker_pids()[0], signal.SIGKILL)
                resp = b""
            else:
                resp = http_request(nginx.port, "/crash?sig=9", timeout=5)
            lines = g.wait_for_line(KILLED, 5)
            g.wait_for_line("Booting worker with pid", 5, start=after_match(lines, KILLED))
            time.sleep(0.3)
        return _gunicorn_capture(
            g,
            "worker_killed",
            how,
            [KILLED],
            nginx=nginx if how == "self" else None,
            notes=[f"client (via nginx) got HTTP {status_of(resp)}"] if resp else [],
        )


def gunicorn_client_disconnect(
    mode: Literal["fin", "rst"] = "rst", base: Path | None = None,
    version: Version = GUNICORN_CURRENT,
) -> Capture:
    """The client leaves while a sync worker writes a large streamed body."""
    with _workdir(base) as tmp:
        g = Gunicorn(tmp, version=version)
        with _running(g):
            got = disconnect_mid_response(g.port, "/stream?n=400&size=65536&delay=0.01", mode=mode)
            _wait_quietly(g.log_path, re.compile(r"Ignoring|Socket error|Error handling"), 6)
            time.sleep(0.3)
        return _gunicorn_capture(
            g,
            "client_disconnect",
            mode,
            ["Ignoring EPIPE", "Ignoring connection reset", "Socket error", "Error handling"],
            notes=[f"client read {got} bytes before leaving"],
        )


# --------------------------------------------------------------------------- werkzeug


def werkzeug_dev_server(
    ansi: bool = False, base: Path | None = None, version: Version = WERKZEUG_CURRENT
) -> Capture:
    """Startup banner (the 'development server' warning) and request lines for 200/404/500.

    /boom raises inside a view: Flask logs "Exception on /boom [GET]" plus a traceback.
    ansi=True hides colorama, so non-200 request lines keep Werkzeug's ANSI escapes.
    """
    with _workdir(base) as tmp:
        f = FlaskDev(tmp, ansi=ansi, version=version)
        with _running(f):
            for path in ("/ok", "/nope", "/boom"):
                http_request(f.port, path)
            f.wait_for_line("GET /boom HTTP/1.1", 5)
        return _capture(
            "werkzeug",
            "dev_server",
            "ansi" if ansi else "",
            f.log_path,
            [
                "WARNING: This is a development server",
                re.compile(r'"(?:\x1b\[\d+m)*GET /\w+ HTTP/1.1'),
                "Exception on /boom",
            ],
            primary="WARNING: This is a development server",
            server=f.version.label,
        )


def werkzeug_client_disconnect(
    mode: Literal["fin", "rst", "body_reset"] = "rst", base: Path | None = None,
    version: Version = WERKZEUG_CURRENT,
) -> Capture:
    """Client leaves mid-response (fin/rst), or resets while the app reads the body."""
    with _workdir(base) as tmp:
        f = FlaskDev(tmp, version=version)
        with _running(f):
            seen = len(read_lines(f.log_path))
            if mode == "body_reset":
                with socket.create_connection((HOST, f.port), timeout=5) as s:
                    head = (
                        f"POST /body HTTP/1.1\r\nHost: {HOST}\r\n"
                        "Content-Type: application/octet-stream\r\n"
                        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
                    )
                    s.sendall(head.encode() + b"y" * (128 * 1024))
                    time.sleep(0.3)
                    _set_linger0(s)
                note = "POST announcing 10 MiB, 128 KiB sent, then RST"
            else:
                got = disconnect_mid_response(
                    f.port, "/stream?n=400&size=65536&delay=0.01", mode=mode
                )
                note = f"client read {got} bytes before leaving"
            _wait_quietly(f.log_path, lambda line: True, 3, start=seen)
            time.sleep(1.0)
        return _capture(
            "werkzeug",
            "client_disconnect",
            mode,
            f.log_path,
            [re.compile(r"Error|error|Traceback|Broken|reset"), re.compile(r'"(GET|POST) ')],
            notes=[note],
            server=f.version.label,
        )


# --------------------------------------------------------------------------- start-up and lifecycle

#: An app whose import fails: uWSGI and gunicorn report an app that cannot load.
BROKEN_APP = "raise ImportError('the app cannot be imported (test)')\n"
#: An app that imports but has no WSGI callable (gunicorn's AppImportError).
NO_CALLABLE_APP = "x = 1\n"
#: An app that kills its own process while loading: lazy-apps workers die in a loop.
SUICIDAL_APP = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"


@contextlib.contextmanager
def _taken_port() -> Iterator[int]:
    """A 127.0.0.1 port some other program listens on, for 'address already in use'."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        s.listen(1)
        yield s.getsockname()[1]


def _wait_exit(server: Server, timeout: float) -> None:
    """Wait until a server that must fail to start has exited (bounded)."""
    deadline = time.monotonic() + timeout
    while server.proc is not None and server.proc.running() and time.monotonic() < deadline:
        time.sleep(0.1)


def uwsgi_app_load_failed(
    mode: Literal["dynamic", "need_app"] = "dynamic", base: Path | None = None,
    version: Version = UWSGI_DEBIAN,
) -> Capture:
    """The app raises at import. Without need-app uWSGI serves 500s ("no python application
    found"); with need-app it exits and nginx finds nothing listening."""
    with _workdir(base) as tmp:
        options: dict[str, object] = {"need-app": True} if mode == "need_app" else {}
        uw = Uwsgi(tmp, options, version=version, app=BROKEN_APP)
        assert uw.port is not None
        nginx = Nginx(tmp, pass_block("uwsgi", uw.port))
        try:
            if mode == "need_app":
                uw.start(ready=None)
                wait_for_line(uw.log_path, "GAME OVER", 10)
                _wait_exit(uw, 5)
            else:
                uw.start(ready="no app loaded")
            with _running(nginx):
                resp = http_request(nginx.port, "/ok")
                if mode == "dynamic":
                    wait_for_line(uw.log_path, "GET /ok", 5)
                else:
                    wait_for_line(nginx.log_path, "connect() failed", 5)
        finally:
            uw.stop()
        return _uwsgi_capture(
            uw, "app_load_failed", mode,
            ["unable to load app", "no app loaded", "no python application found"],
            primary="unable to load app", nginx=nginx,
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def uwsgi_address_in_use(base: Path | None = None, version: Version = UWSGI_DEBIAN) -> Capture:
    """uWSGI's socket address is taken by another program: bind() fails, uWSGI exits."""
    with _workdir(base) as tmp, _taken_port() as port:
        uw = Uwsgi(tmp, socket=f"{HOST}:{port}", version=version)
        try:
            uw.start(ready=None)
            wait_for_line(uw.log_path, "Address already in use", 10)
            _wait_exit(uw, 5)
        finally:
            uw.stop()
        return _uwsgi_capture(
            uw, "address_in_use", "", ["Address already in use", "probably another instance"],
            primary="Address already in use",
        )


def uwsgi_workers_respawning_too_fast(
    base: Path | None = None, version: Version = UWSGI_DEBIAN
) -> Capture:
    """lazy-apps and an app that kills its worker while loading: the master's fork-bomb
    guard sleeps between respawns (and nginx would see refused or stalled requests)."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, {"lazy-apps": True}, version=version, app=SUICIDAL_APP)
        try:
            uw.start(ready="respawning too fast", timeout=15)
        finally:
            uw.stop()
        return _uwsgi_capture(
            uw, "workers_respawning_too_fast", "", ["respawning too fast", "DAMN ! worker"],
            primary="respawning too fast",
        )


def uwsgi_worker_memory_killed(
    base: Path | None = None, version: Version = UWSGI_DEBIAN
) -> Capture:
    """evil-reload-on-rss 150 (MB) and a request holding 200 MB behind nginx: the master
    SIGKILLs the worker mid-request (its memory is sampled every mem-collector-freq s)."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, {"evil-reload-on-rss": 150, "mem-collector-freq": 1}, version=version)
        assert uw.port is not None
        nginx = Nginx(tmp, pass_block("uwsgi", uw.port))
        with _running(uw, nginx):
            resp = http_request(nginx.port, "/eat?mb=200&s=5")
            wait_for_line(uw.log_path, "Respawned uWSGI worker", 8)
            _wait_quietly(nginx.log_path, "[error]", 2)
        return _uwsgi_capture(
            uw, "worker_memory_killed", "", ["EVIL RELOAD", "DAMN ! worker"],
            primary="EVIL RELOAD", nginx=nginx, notes=[f"client got HTTP {status_of(resp)}"],
        )


def _tls_hello(port: int) -> str:
    """Start a TLS handshake with a plain socket (what an https client sends); never waits
    long. Returns how the client's side ended."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((HOST, port), timeout=3) as s:
            ctx.wrap_socket(s, server_hostname="localhost")
    except (OSError, ssl.SSLError) as exc:
        return f"client got HTTP None (handshake ended: {type(exc).__name__})"
    return "client handshake completed (unexpected)"


def uwsgi_tls_on_uwsgi_socket(
    base: Path | None = None, version: Version = UWSGI_DEBIAN
) -> Capture:
    """An https client talks to the uwsgi socket: the TLS record's first byte (0x16) is read
    as modifier1 22. (nginx's proxy_pass https:// to the socket sends a ClientHello shorter
    than the packet size uWSGI then expects: uWSGI waits and logs nothing, nginx logs the
    failed handshake: see nginx_upstream_ssl_handshake.)"""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, version=version)
        assert uw.port is not None
        with _running(uw):
            note = _tls_hello(uw.port)
            wait_for_line(uw.log_path, "unavailable modifier", 5)
        return _uwsgi_capture(
            uw, "tls_on_uwsgi_socket", "raw", ["unavailable modifier"], notes=[note],
        )


def uwsgi_modifier_unavailable(
    base: Path | None = None, version: Version = UWSGI_DEBIAN
) -> Capture:
    """nginx asks for a modifier1 no loaded plugin serves (uwsgi_modifier1 5, PSGI)."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, version=version)
        assert uw.port is not None
        nginx = Nginx(tmp, pass_block("uwsgi", uw.port, "uwsgi_modifier1 5;"))
        with _running(uw, nginx):
            resp = http_request(nginx.port, "/ok")
            wait_for_line(uw.log_path, "unavailable modifier", 5)
            _wait_quietly(nginx.log_path, "[error]", 2)
        return _uwsgi_capture(
            uw, "modifier_unavailable", "", ["unavailable modifier"], nginx=nginx,
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def uwsgi_http_request_too_big(
    via: Literal["raw", "nginx"] = "raw", base: Path | None = None,
    version: Version = UWSGI_DEBIAN,
) -> Capture:
    """--http-socket with buffer-size 4096 and a 5000-byte header."""
    with _workdir(base) as tmp:
        uw = Uwsgi(tmp, protocol="http", version=version)
        assert uw.port is not None
        nginx = Nginx(tmp, pass_block("proxy", uw.port)) if via == "nginx" else None
        with _running(uw, *((nginx,) if nginx else ())):
            port = nginx.port if nginx else uw.port
            resp = http_request(port, "/ok", headers={"X-Long": "b" * 5000})
            wait_for_line(uw.log_path, "invalid HTTP request size", 5)
            if nginx:
                _wait_quietly(nginx.log_path, "[error]", 2)
        return _uwsgi_capture(
            uw, "http_request_too_big", via, ["invalid HTTP request size"], nginx=nginx,
            notes=[f"client got HTTP {status_of(resp)}"],
        )


def uwsgi_router(
    what: Literal["upstream_reset", "connect_failed", "client_reset"] = "upstream_reset",
    base: Path | None = None, version: Version = UWSGI_DEBIAN,
) -> Capture:
    """uWSGI's http router (--http) in front of its workers' uwsgi socket.

    upstream_reset: a header too big for the workers' buffer-size (the worker refuses the
    packet, the router's read from it is reset); connect_failed: --http-to a dead node;
    client_reset: the client resets while the app streams.
    """
    with _workdir(base) as tmp:
        options: dict[str, object] = {}
        if what == "connect_failed":
            options["http-to"] = f"{HOST}:{free_port()}"
        uw = Uwsgi(tmp, options, protocol="router", version=version)
        assert uw.port is not None
        with _running(uw):
            if what == "upstream_reset":
                resp = http_request(uw.port, "/ok", headers={"X-Long": "b" * 5000})
                wait_for_line(uw.log_path, "hr_instance_read()", 5)
                patterns: list[Pattern] = ["hr_instance_read()", "invalid request block size"]
            elif what == "connect_failed":
                resp = http_request(uw.port, "/ok")
                wait_for_line(uw.log_path, "marking", 5)
                patterns = ["unable to connect()", "marking"]
            else:
                disconnect_mid_response(uw.port, "/stream?n=400&size=65536&delay=0.01",
                                        mode="rst")
                resp = b""
                wait_for_line(uw.log_path, "GET /stream", 8)
                time.sleep(0.3)
                patterns = ["hr_read()", "Broken pipe", "SIGPIPE", "write error"]
        key = {"upstream_reset": "router_upstream_reset",
               "connect_failed": "router_connect_failed",
               "client_reset": "client_disconnect"}[what]
        return _uwsgi_capture(
            uw, key, "router", patterns, primary=patterns[0],
            notes=[f"client got HTTP {status_of(resp)} ({len(resp)} bytes)"],
        )


def _gunicorn_start_failure(
    scenario: str, app: str | None, port: int | None, wait: str, patterns: Sequence[Pattern],
    primary: Pattern, base: Path | None, version: Version,
) -> Capture:
    with _workdir(base) as tmp:
        g = Gunicorn(tmp, version=version, app=app, port=port)
        try:
            g.start(ready=False)
            wait_for_line(g.log_path, wait, 15)
            _wait_exit(g, 5)
        finally:
            g.stop()
        return _gunicorn_capture(g, scenario, "", patterns, primary=primary)


def gunicorn_worker_boot_failed(
    base: Path | None = None, version: Version = GUNICORN_CURRENT
) -> Capture:
    """The app module raises at import in the worker: the arbiter halts, nothing listens."""
    return _gunicorn_start_failure(
        "worker_boot_failed", BROKEN_APP, None, "Reason:",
        ["Exception in worker process", "exited with code", "Reason:"], "Reason:", base, version,
    )


def gunicorn_app_load_failed(
    base: Path | None = None, version: Version = GUNICORN_CURRENT
) -> Capture:
    """The app module has no 'application' callable: AppImportError, the arbiter halts."""
    return _gunicorn_start_failure(
        "app_load_failed", NO_CALLABLE_APP, None, "Reason:",
        ["AppImportError", "exited with code", "Reason:"], "Reason:", base, version,
    )


def gunicorn_address_in_use(
    base: Path | None = None, version: Version = GUNICORN_CURRENT
) -> Capture:
    """--bind to a port another program holds: five retries a second apart, then exit."""
    with _taken_port() as port:
        return _gunicorn_start_failure(
            "address_in_use", None, port, "Can't connect to",
            ["Connection in use", "Retrying", "failed: [Errno 98]", "Can't connect to"],
            "Can't connect to", base, version,
        )


def gunicorn_worker_crashed(
    base: Path | None = None, version: Version = GUNICORN_CURRENT
) -> Capture:
    """The worker dies by SIGSEGV mid-request behind nginx proxy_pass."""
    with _workdir(base) as tmp:
        g = Gunicorn(tmp, version=version)
        nginx = Nginx(tmp, pass_block("proxy", g.port))
        crashed = re.compile(r"(signal 11|SIGSEGV|code 139)")
        with _running(g, nginx):
            resp = http_request(nginx.port, "/crash?sig=11", timeout=5)
            lines = g.wait_for_line(crashed, 5)
            g.wait_for_line("Booting worker with pid", 5, start=after_match(lines, crashed))
            time.sleep(0.3)
        return _gunicorn_capture(
            g, "worker_crashed", "", [crashed], nginx=nginx,
            notes=[f"client (via nginx) got HTTP {status_of(resp)}"],
        )


def werkzeug_address_in_use(
    base: Path | None = None, version: Version = WERKZEUG_CURRENT
) -> Capture:
    """app.run() on a port another program holds: the dev server prints why and exits."""
    with _workdir(base) as tmp, _taken_port() as port:
        f = FlaskDev(tmp, version=version, port=port)
        try:
            f.start(ready=False)
            wait_for_line(f.log_path, "in use", 10)
            _wait_exit(f, 5)
        finally:
            f.stop()
        return _capture(
            "werkzeug", "address_in_use", "", f.log_path, ["Address already in use", "in use"],
            primary="is in use by another program", server=f.version.label,
        )


def nginx_address_in_use(base: Path | None = None) -> Capture:
    """nginx's listen port is taken by another program: bind() fails, nginx retries, exits."""
    with _workdir(base) as tmp, _taken_port() as port:
        nginx = Nginx(tmp, "            return 200;\n", port=port)
        try:
            nginx.start(ready=False)
            wait_for_line(nginx.log_path, "still could not bind", 10)
            _wait_exit(nginx, 5)
        finally:
            nginx.stop()
        return _nginx_capture(
            nginx, "address_in_use", "", ["Address already in use", "still could not bind"],
            primary="still could not bind",
        )


def nginx_upstream_ssl_handshake(via: Via = "uwsgi", base: Path | None = None) -> Capture:
    """proxy_pass https:// to a plain backend: a uwsgi socket (it closes the connection) or
    gunicorn's HTTP port (it answers 400 to the ClientHello: wrong version number)."""
    with _workdir(base) as tmp:
        backend = _backend(tmp, via)
        assert backend.port is not None
        nginx = Nginx(tmp, f"            proxy_pass https://{HOST}:{backend.port};\n")
        with _running(backend, nginx):
            resp = http_request(nginx.port, "/ok")
            wait_for_line(nginx.log_path, "SSL", 5)
        return _nginx_capture(
            nginx, "upstream_ssl_handshake_failed", via, [re.compile(r"SSL.*handshak")],
            extra=_backend_log(backend), notes=[f"client got HTTP {status_of(resp)}"],
        )


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Scenario:
    """One way to provoke an incident; `version` is the server build it runs (None: the
    default one, Debian's or the test environment's), named after "@" in `name`."""

    family: str
    scenario: str
    variant: str
    run: Callable[[Path | None], Capture]
    version: Version | None = None

    @property
    def name(self) -> str:
        base = f"{self.family}-{self.scenario}"
        base = f"{base}.{self.variant}" if self.variant else base
        return f"{base}@{self.version.version}" if self.version is not None else base


#: Every scenario variant, in the order capture.py runs them.
SCENARIOS: list[Scenario] = []


def _add(
    family: str, incident: str, variant: str, fn: Callable[..., Capture],
    version: Version | None = None, **kw: object,
) -> None:
    if version is not None:
        kw["version"] = version
    SCENARIOS.append(
        Scenario(family, incident, variant, functools.partial(_run, fn, kw), version)
    )


def _run(fn: Callable[..., Capture], kw: dict[str, object], base: Path | None) -> Capture:
    return fn(base=base, **kw)

VIAS: tuple[Via, Via] = ("uwsgi", "proxy")
for _v in VIAS:
    _add("nginx", "upstream_header_too_big", _v, nginx_upstream_header_too_big, via=_v)
for _p in ("read_header", "connect"):
    for _v in VIAS:
        _add("nginx", "upstream_timeout", f"{_p}-{_v}", nginx_upstream_timeout, phase=_p, via=_v)
_add("nginx", "upstream_timeout", "send-proxy", nginx_upstream_timeout, phase="send", via="proxy")
for _t in ("tcp", "unix"):
    for _v in VIAS:
        _add(
            "nginx", "upstream_connect_refused", f"{_t}-{_v}", nginx_upstream_connect_refused,
            target=_t, via=_v,
        )  # fmt: skip
for _v in VIAS:
    _add("nginx", "upstream_socket_missing", _v, nginx_upstream_socket_missing, via=_v)
for _src, _v in (("fake", "uwsgi"), ("fake", "proxy"), ("uwsgi", "uwsgi")):
    _add(
        "nginx", "upstream_socket_permission", f"{_src}-{_v}", nginx_upstream_socket_permission,
        source=_src, via=_v,
    )  # fmt: skip
for _src in ("fake", "uwsgi"):
    _add("nginx", "upstream_backlog_full", _src, nginx_upstream_backlog_full, source=_src)
for _v in VIAS:
    _add("nginx", "upstream_premature_close", _v, nginx_upstream_premature_close, via=_v)
for _v in VIAS:
    _add("nginx", "upstream_reset", _v, nginx_upstream_reset, via=_v)
for _v in VIAS:
    _add("nginx", "no_live_upstreams", _v, nginx_no_live_upstreams, via=_v)
for _r in INVALID_REPLIES:
    _add(
        "nginx", "upstream_invalid_header", f"{_r}-proxy", nginx_upstream_invalid_header,
        reply=_r, via="proxy",
    )  # fmt: skip
_add(
    "nginx", "upstream_invalid_header", "garbage-uwsgi", nginx_upstream_invalid_header,
    reply="garbage", via="uwsgi",
)  # fmt: skip
for _v in VIAS:
    _add("nginx", "client_disconnect", _v, nginx_client_disconnect, via=_v)
# Backends: every scenario for each version (the default one unnamed, extra ones "@version")
for _uv in (None, UWSGI_PYPI):
    for _w in ("query", "header"):
        _add("uwsgi", "request_block_too_big", _w, uwsgi_request_block_too_big, _uv, what=_w)
    for _c in ("raw", "nginx_proxy_pass"):
        _add("uwsgi", "protocol_mismatch", _c, uwsgi_protocol_mismatch, _uv, client=_c)
    for _m in ("fin", "rst", "nginx"):
        _add("uwsgi", "client_disconnect", _m, uwsgi_client_disconnect, _uv, mode=_m)
    _add("uwsgi", "worker_harakiri", "", uwsgi_worker_harakiri, _uv)
    for _sig in (9, 11):
        _add("uwsgi", "worker_died", f"sig{_sig}", uwsgi_worker_died, _uv, sig=_sig)
    _add("uwsgi", "listen_queue_full", "", uwsgi_listen_queue_full, _uv)
    for _mode in ("dynamic", "need_app"):
        _add("uwsgi", "app_load_failed", _mode, uwsgi_app_load_failed, _uv, mode=_mode)
    _add("uwsgi", "address_in_use", "", uwsgi_address_in_use, _uv)
    _add("uwsgi", "workers_respawning_too_fast", "", uwsgi_workers_respawning_too_fast, _uv)
    _add("uwsgi", "worker_memory_killed", "", uwsgi_worker_memory_killed, _uv)
    _add("uwsgi", "worker_crashed", "sig11", uwsgi_worker_died, _uv, sig=11,
         scenario="worker_crashed", primary="Segmentation Fault")
    _add("uwsgi", "tls_on_uwsgi_socket", "raw", uwsgi_tls_on_uwsgi_socket, _uv)
    _add("uwsgi", "modifier_unavailable", "", uwsgi_modifier_unavailable, _uv)
    for _via in ("raw", "nginx"):
        _add("uwsgi", "http_request_too_big", _via, uwsgi_http_request_too_big, _uv, via=_via)
    for _r in ("upstream_reset", "connect_failed", "client_reset"):
        _add("uwsgi", {"upstream_reset": "router_upstream_reset",
                       "connect_failed": "router_connect_failed",
                       "client_reset": "client_disconnect"}[_r], "router", uwsgi_router, _uv,
             what=_r)
for _gv in (None, GUNICORN_23, GUNICORN_20):
    _add("gunicorn", "worker_timeout", "", gunicorn_worker_timeout, _gv)
    for _h in ("external", "self"):
        _add("gunicorn", "worker_killed", _h, gunicorn_worker_killed, _gv, how=_h)
    for _m in ("fin", "rst"):
        _add("gunicorn", "client_disconnect", _m, gunicorn_client_disconnect, _gv, mode=_m)
    _add("gunicorn", "worker_boot_failed", "", gunicorn_worker_boot_failed, _gv)
    _add("gunicorn", "app_load_failed", "", gunicorn_app_load_failed, _gv)
    _add("gunicorn", "address_in_use", "", gunicorn_address_in_use, _gv)
    _add("gunicorn", "worker_crashed", "", gunicorn_worker_crashed, _gv)
for _wv in (None, WERKZEUG_2):
    _add("werkzeug", "dev_server", "", werkzeug_dev_server, _wv)
    _add("werkzeug", "dev_server", "ansi", werkzeug_dev_server, _wv, ansi=True)
    for _m in ("fin", "rst", "body_reset"):
        _add("werkzeug", "client_disconnect", _m, werkzeug_client_disconnect, _wv, mode=_m)
    _add("werkzeug", "address_in_use", "", werkzeug_address_in_use, _wv)
_add("uwsgi", "worker_harakiri", "graceful", uwsgi_worker_harakiri, UWSGI_PYPI, graceful=True)
_add("nginx", "address_in_use", "", nginx_address_in_use)
for _v in VIAS:
    _add("nginx", "upstream_ssl_handshake_failed", _v, nginx_upstream_ssl_handshake, via=_v)


def scenario(name: str) -> Scenario:
    """Look a scenario up by its capture name, e.g. "nginx-upstream_timeout.connect-proxy"."""
    for sc in SCENARIOS:
        if sc.name == name:
            return sc
    raise KeyError(name)
