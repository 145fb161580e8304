"""What the exporter answers: the checks every request passes, then its endpoint.

Runs in the HTTP server's event loop. Cheap steps happen there (method, Host, a
remembered credential, ``/healthz``); everything that costs CPU (bcrypt, rendering
``/metrics``, ``/incidents``, ``/``, gzip) runs in a small thread pool, so the loop keeps
reading the other connections. Concurrent ``/metrics`` requests share one rendering (the
numbers are at most one rendering old), so a flood of them costs about what one scrape
costs. ``/incidents`` runs a few at a time and each holds its slot until its answer is
sent, which bounds the memory its pages take.

``/healthz`` answers anyone: probes (systemd, Docker, Kubernetes) reach it, and it reveals
nothing. Every other path needs basic auth when the web config has users, and without
them answers only a Host that names this machine (:mod:`gw502d.export.hosts`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gw502d.export.auth import BasicAuth
from gw502d.export.hosts import HostPolicy
from gw502d.export.incidents import Entry, IncidentQuery, parse_query
from gw502d.export.incidents_view import render_html, render_json
from gw502d.export.request import Request
from gw502d.export.response import HTML, Response, accepts_gzip, compress, new_nonce, text
from gw502d.export.webconfig import WebConfig

log = structlog.get_logger("gw502d.http")
T = TypeVar("T")
_HOST_SHOWN = 100  # characters of a refused Host header in the log


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the HTTP server takes on.

    ``connections`` None: half the open-file limit, at most 1024 (see
    :func:`gw502d.export.http.connection_limit`). Timeouts: a request head (TLS handshake
    included) must arrive whole within ``head_timeout``; a kept-alive connection may wait
    ``idle_timeout`` for its next request; an answer the client does not take within
    ``write_timeout`` ends the connection.
    """

    connections: int | None = None
    backlog: int = 1024
    head_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_timeout: float = 30.0
    workers: int = 2
    queued: int = 64
    incidents: int = 2


class Site:
    """What the endpoints serve; the callables are asked once per request.

    ``incidents(query)`` yields the entries a query asks for, newest first;
    ``page(nonce)`` is the HTML of ``/``, whose style and script elements carry *nonce*.
    ``web`` and ``hosts`` are swapped whole by a reload and read once per request.
    """

    def __init__(self, registry: CollectorRegistry, *, health: Callable[[], str | None],
                 incidents: Callable[[IncidentQuery], Iterable[Entry]],
                 page: Callable[[str], str], web: WebConfig | None,
                 hosts: HostPolicy | None = None) -> None:
        self.registry = registry
        self.health = health
        self.incidents = incidents
        self.page = page
        self.web = web
        self.hosts = hosts if hosts is not None else HostPolicy()


class Responder:
    """Answers requests in the server's loop; owns the worker threads and auth state."""

    def __init__(self, site: Site, limits: Limits) -> None:
        self.site = site
        self.auth = BasicAuth()
        self._limits = limits
        self._workers = ThreadPoolExecutor(limits.workers, thread_name_prefix="http-worker")
        self._checkers = ThreadPoolExecutor(2, thread_name_prefix="http-auth")
        self._queued = 0
        self._incidents = 0
        self._renders: dict[tuple[str, bool], asyncio.Future[Response]] = {}

    def close(self) -> None:
        """Let the worker threads end (a running job finishes on its own)."""
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._checkers.shutdown(wait=False, cancel_futures=True)

    async def respond(self, request: Request, client: str) -> Response:
        """The answer to *request* from *client* (its address)."""
        if request.method not in ("GET", "HEAD"):
            return text(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD", Allow="GET, HEAD")
        site = self.site
        if request.path == "/healthz":
            problem = site.health()
            if problem is None:
                return text(HTTPStatus.OK, "ok")
            return text(HTTPStatus.SERVICE_UNAVAILABLE, problem)
        web = site.web
        users = web.users if web is not None else {}
        host = request.headers.get("host")
        if not users and not site.hosts.allows(host):
            log.warning("request for a host name that is not allowed",
                        host=(host or "")[:_HOST_SHOWN], client=client)
            return text(HTTPStatus.FORBIDDEN, "this Host is not allowed: add the name to "
                        "allowed_hosts in gw502d.toml")
        try:
            return await self._authorize(users, request, client) or await self._route(request)
        except _BusyError:
            return text(HTTPStatus.SERVICE_UNAVAILABLE, "busy, try again", **{"Retry-After": "1"})
        except Exception:
            log.exception("request failed", path=request.path)
            return text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    async def _authorize(self, users: Mapping[str, bytes], request: Request,
                         client: str) -> Response | None:
        """None if the request may go on, else the answer that refuses it."""
        verdict = self.auth.decide(users, request.headers.get("authorization"), client)
        if verdict.check is not None:
            try:
                ok = await self._run(self._checkers, self.auth.verify, users, verdict.check,
                                     client, counted=False)
            except _BusyError:
                self.auth.release()
                ok = False
            if ok:
                return None
        elif verdict.allowed:
            return None
        if verdict.retry_after is not None:
            status = (HTTPStatus.SERVICE_UNAVAILABLE if verdict.busy
                      else HTTPStatus.TOO_MANY_REQUESTS)
            return text(status, "too many failed logins, try later" if not verdict.busy
                        else "busy, try again",
                        **{"Retry-After": str(max(1, round(verdict.retry_after)))})
        return text(HTTPStatus.UNAUTHORIZED, "unauthorized",
                    **{"WWW-Authenticate": 'Basic realm="gw502d", charset="UTF-8"'})

    async def _route(self, request: Request) -> Response:
        path = request.path
        accept_encoding = request.headers.get("accept-encoding", "")
        if path == "/metrics":
            return await self._metrics(request.headers.get("accept", ""), accept_encoding)
        if path == "/incidents":
            return await self._incidents_page(request, accept_encoding)
        if path == "/":
            nonce = new_nonce()

            def page() -> Response:
                body = self.site.page(nonce).encode()
                return compress(Response(HTTPStatus.OK, body, HTML, nonce=nonce),
                                accept_encoding)

            return await self._run(self._workers, page)
        return text(HTTPStatus.NOT_FOUND, "not found")

    async def _metrics(self, accept: str, accept_encoding: str) -> Response:
        encoder, content_type = choose_encoder(accept)
        key = (content_type, accepts_gzip(accept_encoding))
        render = self._renders.get(key)
        if render is None:
            registry = self.site.registry

            def scrape() -> Response:
                return compress(Response(HTTPStatus.OK, encoder(registry), content_type),
                                accept_encoding)

            render = asyncio.ensure_future(self._run(self._workers, scrape))
            self._renders[key] = render
            render.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(render)

    def _forget(self, key: tuple[str, bool], done: asyncio.Future[Response]) -> None:
        if self._renders.get(key) is done:
            del self._renders[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failed render is logged where it failed

    async def _incidents_page(self, request: Request, accept_encoding: str) -> Response:
        try:
            query = parse_query(request.query)
        except ValueError as exc:
            return text(HTTPStatus.BAD_REQUEST, str(exc))
        html = query.format == "html" or (
            query.format is None and "text/html" in request.headers.get("accept", ""))
        if self._incidents >= self._limits.incidents:
            raise _BusyError
        self._incidents += 1
        nonce = new_nonce()

        def page() -> Response:
            entries = self.site.incidents(query)
            if html:
                return compress(Response(HTTPStatus.OK, render_html(entries, query, nonce),
                                         HTML, nonce=nonce), accept_encoding)
            return compress(Response(HTTPStatus.OK, render_json(entries, query),
                                     "application/json"), accept_encoding)

        try:
            response = await self._run(self._workers, page)
        except BaseException:
            self._incidents -= 1
            raise
        response.on_sent = self._incident_sent
        return response

    def _incident_sent(self) -> None:
        self._incidents -= 1

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any,
                   counted: bool = True) -> T:
        """*fn* in *pool*; _BusyError when too many wait already or no thread can start."""
        if counted and self._queued >= self._limits.queued:
            raise _BusyError
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(pool, fn, *args)
        except RuntimeError as exc:  # "can't start new thread": the task limit
            raise _BusyError from exc
        self._queued += counted
        try:
            return await future
        finally:
            self._queued -= counted


class _BusyError(Exception):
    """No capacity for this request now: 503 with Retry-After."""
