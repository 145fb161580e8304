"""The HTTP server: ``/metrics``, ``/healthz``, ``/incidents`` and ``/``.

The standard library's threading server is enough for a scrape every few seconds; TLS is
negotiated in the connection's own thread, so a slow or broken client cannot hold up the
others. With basic auth every path but ``/healthz`` needs it: probes (systemd, Docker,
Kubernetes) reach the health check without a password, and it reveals nothing.
"""

from __future__ import annotations

import base64
import binascii
import errno
import gzip
import hashlib
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gw502d import __version__
from gw502d.export.listen import Listen
from gw502d.export.webconfig import WebConfig

log = structlog.get_logger("gw502d.http")

# bcrypt of a fixed text: an unknown user costs as much as a wrong password, so response
# times do not tell which user names exist.
_NO_USER = b"$2b$10$R/FLHWwGzoCglbKWwIcM5OM4xwRnOoQGvW7D5TAaXz.u3/adF4A0."
_AUTH_CACHE_SIZE = 64
_TIMEOUT = 30.0
_GZIP_MIN = 1024


class Site:
    """What the endpoints serve; the callables are asked once per request."""

    def __init__(self, registry: CollectorRegistry, *, health: Callable[[], str | None],
                 incidents: Callable[[], list[dict[str, Any]]], page: Callable[[], str],
                 web: WebConfig | None) -> None:
        self.registry = registry
        self.health = health
        self.incidents = incidents
        self.page = page
        self.web = web  # swapped whole by a reload; read once per connection
        self._lock = threading.Lock()
        self._accepted: set[bytes] = set()

    def authorized(self, header: str | None) -> bool:
        """Whether the Authorization header names a user with the right password.

        bcrypt is slow on purpose; a (user, password, hash) that passed is remembered, so
        a scrape every few seconds does not pay it each time.
        """
        users = self.web.users if self.web is not None else {}
        if not users:
            return True
        if header is None or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = users.get(user)
        token = hashlib.sha256(b"\0".join((user.encode(), password.encode(),
                                           hashed or b""))).digest()
        with self._lock:
            if token in self._accepted:
                return True
        ok = bcrypt.checkpw(password.encode(), hashed or _NO_USER) and hashed is not None
        if ok:
            with self._lock:
                if len(self._accepted) >= _AUTH_CACHE_SIZE:
                    self._accepted.clear()
                self._accepted.add(token)
        return ok


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive between scrapes
    # Headers and body go out in two writes; without TCP_NODELAY the body waits for the
    # client's delayed ACK (~40 ms per scrape on a kept-alive connection).
    disable_nagle_algorithm = True
    server_version = f"gw502d/{__version__}"
    timeout = _TIMEOUT

    def do_GET(self) -> None:
        site = self.server.site
        path = urlsplit(self.path).path
        if path != "/healthz" and not site.authorized(self.headers.get("Authorization")):
            self._send(401, "text/plain; charset=utf-8", b"unauthorized\n",
                       {"WWW-Authenticate": 'Basic realm="gw502d"'})
            return
        try:
            self._route(site, path)
        except Exception:
            log.exception("request failed", path=path)
            self._send(500, "text/plain; charset=utf-8", b"internal error\n")

    def _route(self, site: Site, path: str) -> None:
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, content_type, encoder(site.registry))
        elif path == "/healthz":
            problem = site.health()
            body = b"ok\n" if problem is None else f"{problem}\n".encode()
            self._send(200 if problem is None else 503, "text/plain; charset=utf-8", body)
        elif path == "/incidents":
            text = json.dumps({"incidents": site.incidents()}, ensure_ascii=False, indent=1)
            self._send(200, "application/json", text.encode())
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", site.page().encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        if len(body) >= _GZIP_MIN and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=5)
            headers = {**(headers or {}), "Content-Encoding": "gzip"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: a scrape every few seconds would drown the events."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily,
                 site: Site) -> None:
        self.address_family = family
        self.site = site
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Not HTTPServer's: its getfqdn() of the address can wait on DNS at start.
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        web = self.site.web
        if web is None or web.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_TIMEOUT)
        try:
            tls = web.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that speaks no TLS, or the wrong certificate: its problem
        with tls:
            super().finish_request(tls, client_address)


class Exporter:
    """The listening server and its thread; binding happens here, so errors come early."""

    def __init__(self, listen: Listen, site: Site) -> None:
        self.site = site
        self._server = _bind(listen, site)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5}, name="http",
                                        daemon=True)

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the kernel's pick for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a thread of its own; the socket is already bound."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, wait for the serving loop, close the socket."""
        self._server.shutdown()
        self._server.server_close()


def _bind(listen: Listen, site: Site) -> _Server:
    """Bind *listen*; an empty host is every address, IPv6 and IPv4 where the host has v6."""
    if listen.host:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        return _Server((listen.host, listen.port), family, site)
    try:
        return _Server(("::", listen.port), socket.AF_INET6, site)
    except OSError as exc:
        if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            raise
    return _Server(("0.0.0.0", listen.port), socket.AF_INET, site)
