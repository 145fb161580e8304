"""The HTTP server: ``/metrics``, ``/healthz``, ``/incidents`` and ``/``.

One asyncio event loop, in a thread of its own, reads every connection: a slow or idle
client costs a socket and a few kilobytes, never a thread, so it cannot starve a scrape or
hit the unit's TasksMax. What a request asks for is worked out by
:class:`gw502d.export.routes.Responder`, which keeps the CPU-bound parts in a small pool.

Bounds, so that no client can take the exporter down (numbers in
:class:`~gw502d.export.routes.Limits`):

- Connections: at most half the open-file limit (1024 at most). A new connection beyond
  that closes the oldest one still sending its request head, else the oldest idle
  kept-alive one: a scraper that sends its request at once always gets in, a client that
  never finishes a request is the first to go.
- Time: a request head (and the TLS handshake) must be complete within 10 s of the
  connection or of its first byte; an answer the client does not read within 30 s ends
  the connection; kept-alive connections wait 120 s for the next request.
- Size: a request head over 16 KiB is refused (431); bodies are refused; one answer at a
  time per connection, the next request is read only when the last answer has left.
- The listen backlog is 1024 (the kernel caps it at net.core.somaxconn).

TLS runs through memory BIOs inside the connection, so the handshake is subject to the
same deadline, and the web config in force when a connection opens is the one it uses.
Ordinary client failures (resets, broken pipes, failed handshakes) end their connection
quietly: the daemon's log is JSON lines, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import structlog

from gw502d.export.listen import Listen
from gw502d.export.request import HEAD_END, MAX_HEAD, HttpError, parse_request
from gw502d.export.response import encode, text
from gw502d.export.routes import Limits, Responder, Site

__all__ = ["Exporter", "Limits", "Site", "connection_limit"]

log = structlog.get_logger("gw502d.http")

_MAX_CONNECTIONS = 1024
_SWEEP_EVERY = 0.5
_READ_SIZE = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)


def connection_limit(limits: Limits) -> int:
    """How many connections to hold: *limits*' number, else half the open-file limit
    (the rest is for the logs followed and the state file), at most 1024."""
    if limits.connections is not None:
        return limits.connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    return max(16, min(_MAX_CONNECTIONS, soft // 2))


class _Tls:
    """Server-side TLS over memory BIOs: bytes from the socket in, bytes to send out."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._ready = False
        self.closed = False  # the client sent close_notify

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """(plain bytes received, bytes to send back); ssl.SSLError if the peer is bad."""
        self._incoming.write(data)
        if not self._ready:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b"", self._outgoing.read()
            self._ready = True
        plain = []
        while True:
            try:
                chunk = self._tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            if not chunk:
                break
            plain.append(chunk)
        return b"".join(plain), self._outgoing.read()

    def send(self, data: bytes) -> bytes:
        """The TLS records carrying *data*."""
        view = memoryview(data)
        while view:
            view = view[self._tls.write(view):]
        return self._outgoing.read()

    def close(self) -> bytes:
        """The close_notify alert to send before closing."""
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()
        return self._outgoing.read()


class _Connection(asyncio.Protocol):
    """One client connection: reads a request head, answers it, maybe waits for the next."""

    # States; a connection is in the server's "waiting" set while reading a head and in
    # its "idle" set while kept alive with nothing received yet.
    HEAD, IDLE, BUSY, WRITING, CLOSED = range(5)

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._tls: _Tls | None = None
        self._client = ""
        self._buffer = bytearray()
        self._scanned = 0
        self._state = self.HEAD
        self.deadline = 0.0
        self._paused = False
        self._keep = False
        self._eof = False
        self._task: asyncio.Task[None] | None = None
        self._on_sent: Callable[[], None] | None = None

    # -- asyncio's callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=0)  # pause_writing() whenever data waits
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) else ""
        web = self._server.site.web
        if web is not None and web.tls is not None:
            try:
                self._tls = _Tls(web.tls)
            except ssl.SSLError:
                transport.abort()
                return
        self.deadline = self._server.now() + self._server.limits.head_timeout
        self._server.opened(self)

    def data_received(self, data: bytes) -> None:
        if self._tls is not None:
            try:
                data, reply = self._tls.receive(data)
            except ssl.SSLError:  # not TLS, a refused certificate, a broken record
                self.abort()
                return
            if reply:
                self._write(reply)
            if self._tls.closed and self._state in (self.HEAD, self.IDLE):
                self.close()
                return
        if not data:
            return
        if self._state == self.IDLE:
            self._state = self.HEAD
            self.deadline = self._server.now() + self._server.limits.head_timeout
            self._server.waiting(self)
        self._buffer += data
        if self._state == self.HEAD:
            self._read_head()
        elif len(self._buffer) > MAX_HEAD:  # more requests piled up than anyone sends
            self.abort()

    def eof_received(self) -> bool:
        # A client may half-close after its request: answer it, then close.
        self._eof = True
        return self._state in (self.BUSY, self.WRITING)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._state == self.WRITING:
            self._sent()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = self.CLOSED
        self._server.closed(self)
        if self._task is not None:
            self._task.cancel()
        self._release()

    # -- requests ------------------------------------------------------------------------

    def _read_head(self) -> None:
        while self._buffer[:2] == b"\r\n" or self._buffer[:1] == b"\n":
            del self._buffer[:2 if self._buffer[:1] == b"\r" else 1]  # blank lines first
        found = HEAD_END.search(self._buffer, max(0, self._scanned - 3))
        if found is None or found.start() > MAX_HEAD:
            if len(self._buffer) > MAX_HEAD:
                self._answer_error(HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                             "request head larger than 16 KiB"))
            self._scanned = len(self._buffer)
            return
        head = bytes(self._buffer[:found.start()])
        del self._buffer[:found.end()]
        self._scanned = 0
        self._state = self.BUSY
        self._server.busy(self)
        assert self._transport is not None
        self._transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._serve(head))

    def _answer_error(self, error: HttpError) -> None:
        self._state = self.BUSY
        self._server.busy(self)
        response = text(error.status, str(error))
        self._respond(encode(response, head=False, keep_alive=False), None, keep=False)

    async def _serve(self, head: bytes) -> None:
        try:
            request = parse_request(head)
        except HttpError as exc:
            self._answer_error(exc)
            return
        response = await self._server.responder.respond(request, self._client)
        keep = (request.keep_alive and not response.close and self._keep_allowed())
        self._respond(encode(response, head=request.method == "HEAD", keep_alive=keep),
                      response.on_sent, keep=keep)

    def _keep_allowed(self) -> bool:
        return not (self._server.stopping or self._eof
                    or (self._tls is not None and self._tls.closed))

    def _respond(self, data: bytes, on_sent: Callable[[], None] | None, *, keep: bool) -> None:
        self._on_sent = on_sent
        self._keep = keep
        self._task = None
        if self._state == self.CLOSED:
            self._release()
            return
        try:
            self._write(self._tls.send(data) if self._tls is not None else data)
        except ssl.SSLError:  # the peer ended TLS meanwhile
            self.abort()
            return
        if not keep:
            self.close()
        if self._paused:
            self._state = self.WRITING
            self.deadline = self._server.now() + self._server.limits.write_timeout
        else:
            self._sent()

    def _sent(self) -> None:
        """The answer has left: give back what it held, then wait for the next request."""
        self._release()
        if not self._keep or self._state == self.CLOSED:
            return
        self._state = self.IDLE
        self.deadline = self._server.now() + self._server.limits.idle_timeout
        self._server.idle(self)
        assert self._transport is not None
        self._transport.resume_reading()
        if self._buffer:
            self._state = self.HEAD
            self.deadline = self._server.now() + self._server.limits.head_timeout
            self._server.waiting(self)
            self._read_head()

    def _release(self) -> None:
        on_sent, self._on_sent = self._on_sent, None
        if on_sent is not None:
            on_sent()

    # -- the transport -------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Bytes as they go on the wire (TLS records already made)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """Close after what is written has left (TLS: with close_notify)."""
        if self._transport is None or self._transport.is_closing():
            return
        if self._tls is not None:
            with contextlib.suppress(ssl.SSLError):
                self._transport.write(self._tls.close())
        self._transport.close()

    def abort(self) -> None:
        """Close now with a reset: what is unsent, here or in the kernel, is dropped (a
        plain close would leave the kernel sending it to a client that does not read)."""
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self._transport.abort()

    def expired(self, now: float) -> bool:
        """Whether its head, idle or write deadline has passed (answering has none)."""
        return self._state != self.BUSY and self.deadline < now


class _Server:
    """The connections of one listening socket: their number, their deadlines."""

    def __init__(self, site: Site, limits: Limits, responder: Responder) -> None:
        self.site = site
        self.limits = limits
        self.responder = responder
        self.stopping = False
        self._cap = connection_limit(limits)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all: set[_Connection] = set()
        # insertion-ordered: the first is the one waiting longest
        self._waiting: dict[_Connection, None] = {}
        self._idle: dict[_Connection, None] = {}

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.call_later(_SWEEP_EVERY, self._sweep)

    def opened(self, conn: _Connection) -> None:
        if len(self._all) >= self._cap:
            victims = self._waiting or self._idle
            if not victims:  # every connection is being answered: this one waits its turn
                conn.abort()
                return
            next(iter(victims)).abort()
        self._all.add(conn)
        self._waiting[conn] = None

    def waiting(self, conn: _Connection) -> None:
        self._idle.pop(conn, None)
        self._waiting[conn] = None

    def idle(self, conn: _Connection) -> None:
        self._waiting.pop(conn, None)
        self._idle[conn] = None

    def busy(self, conn: _Connection) -> None:
        self._waiting.pop(conn, None)
        self._idle.pop(conn, None)

    def closed(self, conn: _Connection) -> None:
        self.busy(conn)
        self._all.discard(conn)

    def _sweep(self) -> None:
        """End the connections past their deadline (head, idle or write)."""
        now = self.now()
        for conn in [c for c in self._all if c.expired(now)]:
            conn.abort()
        if not self.stopping and self._loop is not None:
            self._loop.call_later(_SWEEP_EVERY, self._sweep)

    def abort_all(self) -> None:
        self.stopping = True
        for conn in list(self._all):
            conn.abort()


class Exporter:
    """The listening socket and the thread serving it; binding happens here, so errors
    come early."""

    def __init__(self, listen: Listen, site: Site, limits: Limits | None = None) -> None:
        self.site = site
        self.limits = limits or Limits()
        self._socket = _bind(listen, self.limits.backlog)
        self._responder = Responder(site, self.limits)
        self._server = _Server(site, self.limits, self._responder)
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_loop_error)
        self._listener: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the kernel's pick for port 0)."""
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        """Serve in a thread of its own; the socket is already bound and listening."""
        self._thread.start()

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._server.start(loop)
        self._listener = loop.run_until_complete(loop.create_server(
            lambda: _Connection(self._server), sock=self._socket, backlog=self.limits.backlog))
        loop.run_forever()

    def stop(self) -> None:
        """Stop accepting, close every connection, end the thread."""
        if self._thread.is_alive():
            done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            with contextlib.suppress(Exception):
                done.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
        self._socket.close()
        self._responder.close()

    async def _shutdown(self) -> None:
        """Close the listener and the connections; end what was answering them."""
        if self._listener is not None:
            self._listener.close()
        self._server.abort_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Errors asyncio reports itself (e.g. accept() out of file descriptors): one line."""
    exc = context.get("exception")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return
    log.error("http server error", error=context.get("message"),
              exception=repr(exc) if exc is not None else None)


def _bind(listen: Listen, backlog: int) -> socket.socket:
    """Bind *listen*; an empty host is every address, IPv6 and IPv4 where the host has v6."""
    if listen.host:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        return _listening((listen.host, listen.port), family, backlog)
    try:
        return _listening(("::", listen.port), socket.AF_INET6, backlog)
    except OSError as exc:
        if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            raise
    return _listening(("0.0.0.0", listen.port), socket.AF_INET, backlog)


def _listening(address: tuple[str, int], family: socket.AddressFamily,
               backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
