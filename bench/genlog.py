#!/usr/bin/env python3
"""Deterministic error logs for the benchmarks (nginx, uWSGI and gunicorn), with their truth.

    python3 bench/genlog.py --mode mixed -n 2000000 -o /tmp/mixed.log
    python3 bench/genlog.py --mode storm -n 500000 -o /tmp/storm.log

Writes FILE and FILE.truth.json. The truth counts the lines of each incident in the shape
of ``gw502d scan --format json``'s ``counts`` (``{incident: {source: n}}``), from the
labels the generator gives its own lines, never from a regex. The stream depends only on
(mode, seed): a file of N lines is the first N lines of any longer one.

The lines are the servers' own: the record formats of gw502d/parse/*.py and the messages
of the catalog's ``real:`` examples (written by nginx 1.22, uWSGI 2.0 and gunicorn in
tests/test_real_servers.py), with their companions as the servers write them. Times are
those of a host running in UTC (nginx and uWSGI write local time without a zone,
gunicorn writes ``+0000``): read them with ``TZ=UTC``.

Modes:

- ``mixed``: a busy site's error logs, one file: ~10 % incident lines among nginx 404s and
  notices, uWSGI request lines (63 %), companions and decoys (0.05 % of lines: a benign
  404 whose referrer or URI, sent by the client, carries an incident message);
- ``long``: mixed, with ~20 % of lines 4-16 KB (long URIs in uWSGI's request lines;
  nginx's records with long URIs and referrers are cut at 2047 bytes, as nginx does);
- ``quiet``: mixed without incidents (benign lines and decoys): the cost of a line the
  catalog does not know;
- ``storm``: a 502 storm as it is logged: every line an incident, bursts of 1,000-8,000
  lines a second of log time for 5-40 s with lulls of 50-400 lines a second between them;
  uWSGI harakiri kills, OOM kills and crashes, gunicorn worker timeouts and kills are
  written in the same second as the nginx line each of them causes, so the root-cause
  pairing has work;
- ``storm-spread``: the same lines with their times spread to ~35 lines a second over
  hours (the shape of the first storm dataset).

The two storms leave out the companions (HARAKIRI status lines, respawns), so that every
line is an incident; their uWSGI writes ``log-date`` prefixes on every line, as most
deployments configure it, so the daemon can pair uWSGI lines by their time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

# The version of the stream: part of the cached file names, bumped when lines change.
VERSION = 6
NGX_MAX_ERROR_STR = 2048  # src/core/ngx_log.h
MODES = ("mixed", "long", "quiet", "storm", "storm-spread")
START = 1795143600  # 2026-11-20 03:00:00 UTC: a night

Label = tuple[str, str] | None  # (incident, source) or None for a benign line
Lines = list[tuple[Label, str]]
DECOY: Label = ("decoy", "-")  # benign, but counted apart in the truth


def end_of(key: Label) -> Label:
    """The label of a line that ends an event counted already (a worker's death after its
    harakiri): no incident for gw502d, but a line of that shape for a stateless counter."""
    return (f"end:{key[0]}", key[1])

HOSTS = ("shop.example.net", "www.example.net", "api.example.net", "static.example.org")
RESOURCES = ("users", "orders", "products", "carts", "sessions", "reports", "search",
             "invoices", "images", "comments", "tags", "exports")
STATIC = ("/static/js/app.{h}.js", "/static/css/main.{h}.css", "/static/img/logo.{h}.png",
          "/media/uploads/{h}.jpg")
SCANNER = ("/wp-login.php", "/.env", "/xmlrpc.php", "/phpmyadmin/index.php", "/.git/config",
           "/cgi-bin/luci", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
           "/favicon.ico", "/robots.txt", "/apple-touch-icon.png", "/sitemap.xml")
REFERRERS = ("https://www.google.com/", "https://duckduckgo.com/", "https://t.co/Xk2p",
             "https://www.bing.com/search?q=shop", "android-app://com.google.android.gm/")
URLSAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%=&"
# Incident messages a client can put into a referrer or a URI (decoys)
DECOY_PHRASES = (
    "upstream sent too big header while reading response header from upstream",
    "upstream timed out (110: Connection timed out) while connecting to upstream",
    "connect() failed (111: Connection refused) while connecting to upstream",
    "upstream prematurely closed connection while reading response header from upstream",
    "client prematurely closed connection while reading client request body",
    "invalid request block size: 21573 (max 4096)...skip",
    "uwsgi_response_write_body_do(): Broken pipe [core/writer.c line 429] during GET /",
    "*** HARAKIRI ON WORKER 1 (pid: 2201, try: 1) ***",
    "DAMN ! worker 1 (pid: 2201) died, killed by signal 9 :( trying respawn ...",
    "WORKER TIMEOUT (pid:815)",
)

# Where nginx passes requests: uWSGI on TCP and on a unix socket, gunicorn over HTTP.
UWSGI_TCP = "uwsgi://127.0.0.1:3031"
UWSGI_SOCK = "/run/uwsgi/app.sock"
UWSGI_UNIX = f"uwsgi://unix:{UWSGI_SOCK}:"
GUNICORN = "http://127.0.0.1:8000"
NGINX_PIDS = (15273, 15274, 15275, 15276)
UWSGI_WORKERS = 16
GUNICORN_MASTER = 811
# uWSGI reads a request's first 4 bytes as its packet header: plain HTTP gives a block size
# of the method's 2nd and 3rd letters, little-endian ("GET " -> 21573): protocol_mismatch
HTTP_BLOCK_SIZES = tuple(ord(m[1]) | ord(m[2]) << 8 for m in ("GET", "POST", "PUT", "HEAD"))
# errno text as glibc writes it
ERRNO = {2: "No such file or directory", 11: "Resource temporarily unavailable",
         13: "Permission denied", 32: "Broken pipe", 104: "Connection reset by peer",
         110: "Connection timed out", 111: "Connection refused"}


def _two_capitals(size: int) -> bool:
    return all(0x41 <= byte <= 0x5A for byte in (size & 0xFF, size >> 8))


class Clock:
    """Log time in whole seconds, with each server's way of writing it (cached per second)."""

    def __init__(self) -> None:
        self.t = START
        self._at = -1
        self.nginx = self.ctime = self.gunicorn = ""

    def stamp(self) -> None:
        if self._at != self.t:
            g = time.gmtime(self.t)
            self.nginx = time.strftime("%Y/%m/%d %H:%M:%S", g)
            # ctime(3): day of month padded with a space
            self.ctime = time.strftime("%a %b ", g) + f"{g.tm_mday:2d}" + time.strftime(
                " %H:%M:%S %Y", g)
            self.gunicorn = time.strftime("%Y-%m-%d %H:%M:%S +0000", g)
            self._at = self.t

    def ctime_before(self, seconds: int) -> str:
        """ctime(3) of *seconds* ago: when a request that ends now began."""
        if not seconds:
            return self.ctime
        g = time.gmtime(self.t - seconds)
        return time.strftime("%a %b ", g) + f"{g.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", g)


class Servers:
    """The lines nginx, uWSGI and gunicorn write, in their formats, with random details."""

    def __init__(self, rng: random.Random, clock: Clock, *, log_date: bool) -> None:
        self.rng = rng
        self.clock = clock
        self.log_date = log_date  # uWSGI's log-date: every line carries a ctime prefix
        self.cid = 1_087_067
        self.ips = [self._ip() for _ in range(4000)]
        self.hashes = [f"{rng.getrandbits(32):08x}" for _ in range(300)]
        words = ("red", "blue", "big", "small", "new", "old", "fast", "cheap", "pro", "mini")
        self.slugs = ["-".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
                      for _ in range(500)]
        self.pool = "".join(rng.choice(URLSAFE) for _ in range(1 << 16))
        self.worker_pids = [2201 + w for w in range(UWSGI_WORKERS)]
        self.next_pid = 3000
        self.requests = [0] * UWSGI_WORKERS
        self.total_requests = 0
        self.gunicorn_pids = [812 + w for w in range(4)]

    def _ip(self) -> str:
        rng = self.rng
        if rng.random() < 0.05:
            return f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::" \
                   f"{rng.randrange(65536):x}"
        return (f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}."
                f"{rng.randrange(1, 255)}")

    # -- request details -----------------------------------------------------------------

    def path(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            p = f"/api/v1/{rng.choice(RESOURCES)}"
            if rng.random() < 0.6:
                p += f"/{rng.randrange(1, 10 ** rng.randint(1, 7))}"
            if rng.random() < 0.3:
                p += f"?page={rng.randint(1, 50)}&limit={rng.choice((10, 20, 50, 100))}"
            return p
        if r < 0.75:
            return "/products/" + rng.choice(self.slugs)
        if r < 0.9:
            return rng.choice(STATIC).format(h=rng.choice(self.hashes))
        return "/"

    def method(self) -> str:
        r = self.rng.random()
        return "GET" if r < 0.85 else "POST" if r < 0.97 else self.rng.choice(("HEAD", "PUT"))

    def pad(self, k: int) -> str:
        """*k* URL-safe characters (for long lines)."""
        out = []
        while k > 0:
            o = self.rng.randrange(0, len(self.pool) - 1024)
            out.append(self.pool[o:o + k])
            k -= len(out[-1])
        return "".join(out)

    # -- nginx -----------------------------------------------------------------------------

    def nginx(self, level: str, message: str, upstream: str | None = None, *,
              uri_in_upstream: bool = False, path: str | None = None, referrer: str | None = None,
              long: int = 0, connection: bool = True) -> str:
        """An error_log record with the request context nginx appends (ngx_http_log_error_handler).

        A proxy_pass without a URI part copies the request's URI into ``upstream``.
        """
        rng = self.rng
        self.clock.stamp()
        host = rng.choice(HOSTS)
        path = path or self.path()
        pid = rng.choice(NGINX_PIDS)
        head = f"{self.clock.nginx} [{level}] {pid}#{pid}: "
        if connection:
            self.cid += rng.randint(1, 40)
            head += f"*{self.cid} "
        if referrer is None and rng.random() < 0.4:
            referrer = rng.choice(REFERRERS) if rng.random() < 0.5 else f"https://{host}{self.path()}"
        if long:
            k = max(0, long - len(head) - len(message) - 200 - len(path))
            path += ("&" if "?" in path else "?") + "q=" + self.pad(k // 2)
            referrer = f"https://{host}/r?u={self.pad(k - k // 2)}"
        line = (f'{head}{message}, client: {rng.choice(self.ips)}, server: {host}, '
                f'request: "{self.method()} {path} HTTP/1.1"')
        if upstream is not None:
            line += f', upstream: "{upstream}{path if uri_in_upstream else ""}"'
        line += f', host: "{host}"'
        if referrer is not None:
            line += f', referrer: "{referrer}"'
        return line[:NGX_MAX_ERROR_STR - 1]  # nginx cuts its records there

    def nginx_upstream(self) -> tuple[str, bool]:
        """An upstream address and whether nginx appends the URI (proxy_pass to gunicorn)."""
        r = self.rng.random()
        if r < 0.5:
            return UWSGI_TCP, False
        if r < 0.7:
            return UWSGI_UNIX, False
        return GUNICORN, True

    # -- uWSGI ------------------------------------------------------------------------------

    def uwsgi(self, message: str, *, dated: bool = False) -> str:
        """A uWSGI log line: ctime prefix with log-date, or when uwsgi_log_verbose wrote it."""
        if dated or self.log_date:
            self.clock.stamp()
            return f"{self.clock.ctime} - {message}"
        return message

    def uwsgi_request(self, long: int = 0) -> str:
        """A request log line (uwsgi_logit_simple), sometimes with the memory report."""
        rng = self.rng
        w = rng.randrange(UWSGI_WORKERS)
        self.requests[w] += 1
        self.total_requests += 1
        status = rng.choices((200, 201, 204, 301, 302, 304, 400, 403, 404, 500, 502),
                             (70, 3, 2, 2, 5, 5, 2, 1, 7, 2, 1))[0]
        path = self.path()
        if long:
            path += ("&" if "?" in path else "?") + "q=" + self.pad(max(0, long - 220 - len(path)))
        self.clock.stamp()
        # written when the request ends (now), stamped with when it began
        msecs = rng.randint(0, 3000)
        line = (f"[pid: {self.worker_pids[w]}|app: 0|req: {self.requests[w]}/"
                f"{self.total_requests}] {rng.choice(self.ips)} () {{{rng.randint(28, 44)} vars "
                f"in {rng.randint(400, 1200)} bytes}} [{self.clock.ctime_before(msecs // 1000)}] "
                f"{self.method()} {path} => generated {rng.randint(0, 250000)} bytes in "
                f"{msecs} msecs (HTTP/1.1 {status}) {rng.randint(2, 9)} headers "
                f"in {rng.randint(60, 400)} bytes ({rng.randint(1, 3)} switches on core "
                f"{rng.randrange(2)})")
        if rng.random() < 0.1:
            line = (f"{{address space usage: 284614656 bytes/271MB}} {{rss usage: "
                    f"{38133760 + rng.randrange(1 << 20)} bytes/36MB}} {line}")
        return line

    def worker(self) -> tuple[int, int]:
        """A uWSGI worker number (1-based) and its pid."""
        w = self.rng.randrange(UWSGI_WORKERS)
        return w + 1, self.worker_pids[w]

    def respawn(self, worker: int) -> int:
        """The worker's new pid after its death (the master forks a new one)."""
        self.next_pid += self.rng.randint(1, 9)
        self.worker_pids[worker - 1] = self.next_pid
        return self.next_pid

    # -- gunicorn ---------------------------------------------------------------------------

    def gunicorn(self, pid: int, level: str, message: str) -> str:
        self.clock.stamp()
        return f"[{self.clock.gunicorn}] [{pid}] [{level}] {message}"


class Events:
    """What happens on the site, as the lines it leaves; each method returns (label, line)s."""

    def __init__(self, servers: Servers, *, companions: bool) -> None:
        self.s = servers
        self.rng = servers.rng
        self.companions = companions
        self.long = 0  # target length of the next line (long mode), 0 for an ordinary one
        self.caused: list[tuple[str, str]] = []  # (nginx incident, cause) of the last event

    def _caused_by(self, cause: str, symptom: Lines) -> Lines:
        """*symptom*, the nginx line a backend *cause* produced: the pair gw502d should find."""
        label = symptom[0][0]
        assert label is not None
        self.caused.append((label[0], cause))
        return symptom

    # -- nginx alone -------------------------------------------------------------------------

    def header_too_big(self) -> Lines:
        upstream, uri = self.s.nginx_upstream()
        return [(("upstream_header_too_big", "nginx"), self.s.nginx(
            "error", "upstream sent too big header while reading response header from upstream",
            upstream, uri_in_upstream=uri, long=self.long))]

    def timeout(self) -> Lines:
        upstream, uri = self.s.nginx_upstream()
        r = self.rng.random()
        phase = ("reading response header from upstream" if r < 0.85 else
                 "connecting to upstream" if r < 0.95 else "sending request to upstream")
        return [(("upstream_timeout", "nginx"), self.s.nginx(
            "error", f"upstream timed out (110: {ERRNO[110]}) while {phase}", upstream,
            uri_in_upstream=uri, long=self.long))]

    def refused(self) -> Lines:
        if self.rng.random() < 0.6:
            upstream, uri = self.s.nginx_upstream()
            if upstream == UWSGI_UNIX:
                upstream = UWSGI_TCP
            message = f"connect() failed (111: {ERRNO[111]}) while connecting to upstream"
        else:
            upstream, uri = UWSGI_UNIX, False
            message = (f"connect() to unix:{UWSGI_SOCK} failed (111: {ERRNO[111]}) while "
                       "connecting to upstream")
        return [(("upstream_connect_refused", "nginx"), self.s.nginx(
            "error", message, upstream, uri_in_upstream=uri, long=self.long))]

    def _unix(self, incident: str, errno: int, level: str) -> Lines:
        return [((incident, "nginx"), self.s.nginx(
            level, f"connect() to unix:{UWSGI_SOCK} failed ({errno}: {ERRNO[errno]}) while "
                   "connecting to upstream", UWSGI_UNIX, long=self.long))]

    def backlog_full(self) -> Lines:
        return self._unix("upstream_backlog_full", 11, "error")

    def socket_missing(self) -> Lines:
        return self._unix("upstream_socket_missing", 2, "crit")

    def socket_permission(self) -> Lines:
        return self._unix("upstream_socket_permission", 13, "crit")

    def _upstream(self, upstream: str | None) -> tuple[str, bool]:
        """The given upstream (a backend's own event) or a random one; proxy_pass appends
        the URI to an http upstream."""
        if upstream is None:
            return self.s.nginx_upstream()
        return upstream, upstream.startswith("http")

    def premature_close(self, upstream: str | None = None) -> Lines:
        upstream, uri = self._upstream(upstream)
        return [(("upstream_premature_close", "nginx"), self.s.nginx(
            "error", "upstream prematurely closed connection while reading response header "
                     "from upstream", upstream, uri_in_upstream=uri, long=self.long))]

    def reset(self, upstream: str | None = None) -> Lines:
        upstream, uri = self._upstream(upstream)
        call, phase = self.rng.choice((("recv", "reading response header from upstream"),
                                       ("readv", "reading upstream")))
        return [(("upstream_reset", "nginx"), self.s.nginx(
            "error", f"{call}() failed (104: {ERRNO[104]}) while {phase}", upstream,
            uri_in_upstream=uri, long=self.long))]

    def no_live(self) -> Lines:
        upstream = self.rng.choice(("uwsgi://app_backend", "http://api_backend"))
        return [(("no_live_upstreams", "nginx"), self.s.nginx(
            "error", "no live upstreams while connecting to upstream", upstream,
            long=self.long))]

    def invalid_header(self) -> Lines:
        return [(("upstream_invalid_header", "nginx"), self.s.nginx(
            "error", "upstream sent no valid HTTP/1.0 header while reading response header "
                     "from upstream", "http://127.0.0.1:3031", uri_in_upstream=True,
            long=self.long))]

    def client_gone(self) -> Lines:
        r = self.rng.random()
        upstream: str | None = None
        uri = False
        if r < 0.45:
            upstream, uri = self.s.nginx_upstream()
            message = ("epoll_wait() reported that client prematurely closed connection, so "
                       "upstream connection is closed too while sending request to upstream")
        elif r < 0.75:
            message = "client prematurely closed connection while reading client request body"
        else:
            message = f"writev() failed (32: {ERRNO[32]}) while sending to client"
        return [(("client_disconnect", "nginx"), self.s.nginx(
            "info", message, upstream, uri_in_upstream=uri, long=self.long))]

    # -- uWSGI and gunicorn, with the nginx line each causes ---------------------------------

    def block_too_big(self) -> Lines:
        """A request whose headers exceed buffer-size: uWSGI drops it unread, nginx sees a
        reset (recorded from real servers: tests/data/real/mixed-*)."""
        size = self.rng.randint(4097, 65535)
        while _two_capitals(size):  # some HTTP method's letters: a protocol mismatch
            size += 1
        out: Lines = [(("request_block_too_big", "uwsgi"), self.s.uwsgi(
            f"invalid request block size: {size} (max 4096)...skip"))]
        return out + self._caused_by("request_block_too_big", self.reset(UWSGI_TCP))

    def protocol_mismatch(self) -> Lines:
        """HTTP sent to uWSGI's uwsgi-protocol socket (proxy_pass to a ``socket =``)."""
        size = self.rng.choice(HTTP_BLOCK_SIZES)
        out: Lines = [(("protocol_mismatch", "uwsgi"), self.s.uwsgi(
            f"invalid request block size: {size} (max 4096)...skip"))]
        return out + self._caused_by("protocol_mismatch",
                                     self.premature_close("http://127.0.0.1:3031"))

    def broken_pipe(self) -> Lines:
        s, rng = self.s, self.rng
        path = s.path()
        if self.long:
            path += ("&" if "?" in path else "?") + "q=" + s.pad(
                max(0, self.long - 120 - len(path)))
        ip = rng.choice(s.ips)
        func, line = rng.choice((("uwsgi_response_writev_headers_and_body_do", 306),
                                 ("uwsgi_response_write_body_do", 429),
                                 ("uwsgi_response_sendfile_do", 583)))
        error = "Broken pipe" if rng.random() < 0.85 else "Connection reset by peer"
        out: Lines = [(("client_disconnect", "uwsgi"), s.uwsgi(
            f"{func}(): {error} [core/writer.c line {line}] during {s.method()} {path} ({ip})",
            dated=True))]
        if self.companions:
            if rng.random() < 0.7:
                out.append((None, s.uwsgi(
                    "SIGPIPE: writing to a closed pipe/socket/fd (probably the client "
                    f"disconnected) on request {path} (ip {ip}) !!!")))
            if rng.random() < 0.8:
                out.append((None, s.uwsgi(rng.choice(("IOError: write error",
                                                      "OSError: write error")))))
        return out

    def listen_queue_full(self) -> Lines:
        queue = self.rng.randint(101, 110)
        return [(("listen_queue_full", "uwsgi"), self.s.uwsgi(
            f'*** uWSGI listen queue of socket "{UWSGI_SOCK}" (fd: 3) full !!! ({queue}/100) ***',
            dated=True))]

    def harakiri(self) -> Lines:
        """A request past harakiri: the master kills its worker, nginx sees the close."""
        s, rng = self.s, self.rng
        worker, pid = s.worker()
        out: Lines = [(("worker_harakiri", "uwsgi"), s.uwsgi(
            f"*** HARAKIRI ON WORKER {worker} (pid: {pid}, try: 1) ***", dated=True))]
        path = s.path()
        if self.companions:
            out += [(None, s.uwsgi(f"HARAKIRI !!! worker {worker} status !!!", dated=True)),
                    (None, s.uwsgi(f"HARAKIRI [core 0] {rng.choice(s.ips)} - {s.method()} "
                                   f"{path} since {s.clock.t - 30}", dated=True)),
                    (None, s.uwsgi(f"HARAKIRI !!! end of worker {worker} status !!!",
                                   dated=True))]
        out += self._caused_by("worker_harakiri", self.premature_close(UWSGI_TCP))
        # the killed worker's death ends the harakiri (same pid): counted with it, once
        out.append((end_of(("worker_died", "uwsgi")), s.uwsgi(
            f"DAMN ! worker {worker} (pid: {pid}) died, killed by signal 9 :( trying respawn ...")))
        return out + self._respawned(worker)

    def worker_lost(self) -> Lines:
        """A worker killed by the OOM killer (signal 9) or crashed (segfault)."""
        s, rng = self.s, self.rng
        worker, pid = s.worker()
        out: Lines = []
        died_is: Label = ("worker_died", "uwsgi")
        cause = "worker_oom_killed"
        if rng.random() < 0.7:
            died = f"DAMN ! worker {worker} (pid: {pid}) died, killed by signal 9 :( trying " \
                   "respawn ..."
        else:
            if self.companions:  # the crash is the incident, the death (same pid) its end
                out.append((("worker_crashed", "uwsgi"),
                            s.uwsgi(f"!!! uWSGI process {pid} got Segmentation Fault !!!")))
                died_is = end_of(died_is)
            died = f"DAMN ! worker {worker} (pid: {pid}) died :( trying respawn ..."
            cause = "worker_crashed"
        symptom = self.premature_close if rng.random() < 0.7 else self.reset
        out += self._caused_by(cause, symptom(UWSGI_TCP))
        out.append((died_is, s.uwsgi(died)))
        return out + self._respawned(worker)

    def _respawned(self, worker: int) -> Lines:
        new = self.s.respawn(worker)
        if not self.companions:
            return []
        return [(None, self.s.uwsgi(f"Respawned uWSGI worker {worker} (new pid: {new})"))]

    def gunicorn_timeout(self) -> Lines:
        """gunicorn's arbiter kills a silent worker; nginx (proxy_pass) sees the close."""
        s = self.s
        pid = self.rng.choice(s.gunicorn_pids)
        out: Lines = [(("worker_timeout", "gunicorn"), s.gunicorn(
            GUNICORN_MASTER, "CRITICAL", f"WORKER TIMEOUT (pid:{pid})"))]
        out += self._caused_by("gunicorn_worker_timeout", self.premature_close(GUNICORN))
        if self.companions:
            out += [(None, s.gunicorn(pid, "ERROR", f"Error handling request {s.path()}")),
                    (None, "Traceback (most recent call last):"),
                    (None, '  File "/srv/app/venv/lib/python3.11/site-packages/gunicorn/workers/'
                           'base.py", line 200, in handle_abort'),
                    (None, "    sys.exit(1)"),
                    (None, "SystemExit: 1"),
                    (None, s.gunicorn(pid, "INFO", f"Worker exiting (pid: {pid})"))]
        return out + self._gunicorn_respawn(pid)

    def gunicorn_killed(self) -> Lines:
        s = self.s
        pid = self.rng.choice(s.gunicorn_pids)
        out = self._caused_by("gunicorn_worker_killed", self.premature_close(GUNICORN))
        out.append((("worker_killed", "gunicorn"), s.gunicorn(
            GUNICORN_MASTER, "ERROR", f"Worker (pid:{pid}) was sent SIGKILL! Perhaps out of "
                                      "memory?")))
        return out + self._gunicorn_respawn(pid)

    def _gunicorn_respawn(self, pid: int) -> Lines:
        s = self.s
        new = s.next_pid = s.next_pid + self.rng.randint(1, 9)
        s.gunicorn_pids[s.gunicorn_pids.index(pid)] = new
        if not self.companions:
            return []
        return [(None, s.gunicorn(new, "INFO", f"Booting worker with pid: {new}"))]

    def gunicorn_epipe(self) -> Lines:
        pid = self.rng.choice(self.s.gunicorn_pids)
        return [(("client_disconnect", "gunicorn"), self.s.gunicorn(pid, "DEBUG",
                                                                    "Ignoring EPIPE"))]

    # -- benign ------------------------------------------------------------------------------

    def request(self) -> Lines:
        return [(None, self.s.uwsgi_request(self.long))]

    def not_found(self) -> Lines:
        rng = self.rng
        p = (rng.choice(SCANNER) if rng.random() < 0.6
             else f"/static/img/{rng.choice(self.s.hashes)}.png")
        return [(None, self.s.nginx(
            "error", f'open() "/usr/share/nginx/html{p}" failed (2: {ERRNO[2]})', path=p,
            long=self.long))]

    def decoy(self) -> Lines:
        """A 404 whose client-sent referrer or URI holds an incident message."""
        rng, s = self.rng, self.s
        phrase = rng.choice(DECOY_PHRASES)
        if rng.random() < 0.7:
            p = rng.choice(SCANNER)
            return [(DECOY, s.nginx(
                "error", f'open() "/usr/share/nginx/html{p}" failed (2: {ERRNO[2]})', path=p,
                referrer=f"https://{rng.choice(HOSTS)}/search?q={phrase}"))]
        p = "/" + phrase.replace(" ", "%20")
        return [(DECOY, s.nginx(
            "error", f'open() "/usr/share/nginx/html/{phrase}" failed (2: {ERRNO[2]})',
            path=p))]

    def nginx_noise(self) -> Lines:
        s, rng = self.s, self.rng
        s.clock.stamp()
        pid = rng.choice(NGINX_PIDS)
        r = rng.random()
        if r < 0.30:
            s.cid += 1
            return [(None, f"{s.clock.nginx} [info] {pid}#{pid}: *{s.cid} client closed "
                           f"connection while waiting for request, client: "
                           f"{rng.choice(s.ips)}, server: 0.0.0.0:443")]
        if r < 0.45:
            s.cid += 1
            return [(None, f"{s.clock.nginx} [info] {pid}#{pid}: *{s.cid} SSL_do_handshake() "
                           "failed (SSL: error:0A00006C:SSL routines::bad key share) while SSL "
                           f"handshaking, client: {rng.choice(s.ips)}, server: 0.0.0.0:443")]
        if r < 0.70:
            return [(None, s.nginx(
                "warn", "an upstream response is buffered to a temporary file "
                        f"/var/lib/nginx/uwsgi/{rng.randrange(10)}/{rng.randrange(100):02d}/"
                        f"{rng.randrange(10 ** 9):010d} while reading upstream",
                UWSGI_TCP, long=self.long))]
        if r < 0.85:
            return [(None, s.nginx(
                "warn", "a client request body is buffered to a temporary file "
                        f"/var/lib/nginx/body/{rng.randrange(10 ** 9):010d}", long=self.long))]
        if r < 0.90:
            return [(None, f"{s.clock.nginx} [notice] {pid}#{pid}: signal process started")]
        return [(None, s.nginx("error", f'limiting requests, excess: {rng.randrange(1, 20)}.'
                                        f'{rng.randrange(1000):03d} by zone "api"'))]

    def uwsgi_noise(self) -> Lines:
        s, rng = self.s, self.rng
        r = rng.random()
        if r < 0.4:
            return [(None, s.uwsgi(
                f"WSGI app 0 (mountpoint='') ready in {rng.randint(1, 5)} seconds on interpreter "
                f"0x7fc1b1960018 pid: {rng.choice(s.worker_pids)} (default app)"))]
        if r < 0.6:
            return [(None, s.uwsgi("uwsgi_response_write_body_do() TIMEOUT !!!", dated=True))]
        if r < 0.8:
            return [(None, s.uwsgi(f"worker {rng.randint(1, UWSGI_WORKERS)} buried after 1 "
                                   "seconds"))]
        return [(None, s.uwsgi("announcing my loyalty to the Emperor..."))]

    def gunicorn_noise(self) -> Lines:
        pid = self.rng.choice(self.s.gunicorn_pids)
        return [(None, self.s.gunicorn(pid, "INFO", self.rng.choice((
            f"Booting worker with pid: {pid}", f"Worker exiting (pid: {pid})",
            "Handling signal: hup", "Autorestarting worker after current request.",
        ))))]


Event = Callable[[], Lines]


def _table(weights: list[tuple[float, Event]]) -> tuple[list[Event], list[float]]:
    """Events and their cumulative weights, for random.choices."""
    events = [e for _, e in weights]
    cum: list[float] = []
    total = 0.0
    for w, _ in weights:
        total += w
        cum.append(total)
    return events, cum


def site_events(ev: Events, *, incidents: bool, long_p: float) -> Iterator[Lines]:
    """A busy site (mixed, long, quiet): about 33 events a second of log time."""
    rng = ev.rng
    weights: list[tuple[float, Event]] = [
        (0.0005, ev.decoy), (0.150, ev.not_found), (0.100, ev.nginx_noise),
        (0.010, ev.uwsgi_noise), (0.005, ev.gunicorn_noise),
    ]
    if incidents:
        weights += [
            (0.015, ev.header_too_big), (0.010, ev.timeout), (0.010, ev.refused),
            (0.006, ev.premature_close), (0.006, ev.reset), (0.005, ev.no_live),
            (0.010, ev.client_gone), (0.0005, ev.backlog_full), (0.0003, ev.socket_missing),
            (0.0002, ev.socket_permission), (0.0005, ev.invalid_header),
            (0.009, ev.block_too_big), (0.001, ev.protocol_mismatch), (0.010, ev.broken_pipe),
            (0.0005, ev.listen_queue_full), (0.002, ev.harakiri), (0.002, ev.worker_lost),
            (0.001, ev.gunicorn_timeout), (0.0005, ev.gunicorn_killed),
            (0.0005, ev.gunicorn_epipe),
        ]
    weights.append((1.0 - sum(w for w, _ in weights), ev.request))
    events, cum = _table(weights)
    # Long lines only where a server writes client text (URIs, referrers)
    can_be_long = {ev.header_too_big, ev.timeout, ev.refused, ev.premature_close, ev.reset,
                   ev.client_gone, ev.broken_pipe, ev.not_found, ev.nginx_noise, ev.request}
    while True:
        if rng.random() < 0.03:
            ev.s.clock.t += 1
        event = rng.choices(events, cum_weights=cum)[0]
        ev.long = rng.randint(4096, 16384) if long_p and event in can_be_long and \
            rng.random() < long_p else 0
        yield event()


def storm_events(ev: Events, seconds: Iterator[int]) -> Iterator[Lines]:
    """A 502 storm, every line an incident; *seconds* gives the lines of each log second."""
    rng = ev.rng
    events, cum = _table([
        (0.30, ev.timeout), (0.15, ev.client_gone), (0.12, ev.backlog_full),
        (0.08, ev.no_live), (0.06, ev.refused), (0.04, ev.reset), (0.04, ev.premature_close),
        (0.02, ev.header_too_big), (0.08, ev.broken_pipe), (0.02, ev.listen_queue_full),
        (0.01, ev.block_too_big), (0.005, ev.protocol_mismatch), (0.02, ev.harakiri),
        (0.015, ev.worker_lost), (0.01, ev.gunicorn_timeout), (0.005, ev.gunicorn_killed),
    ])
    budget = next(seconds)
    used = 0
    while True:
        if used >= budget:
            ev.s.clock.t += 1
            budget, used = next(seconds), 0
        lines = rng.choices(events, cum_weights=cum)[0]()
        used += len(lines)
        yield lines


def burst_seconds(rng: random.Random) -> Iterator[int]:
    """Lines per second of a real storm: bursts of 1-8k lines/s for 5-40 s (ramping up and
    down over ~3 s), lulls of 50-400 lines/s for 2-20 s between them."""
    while True:
        peak, length = rng.randint(1000, 8000), rng.randint(5, 40)
        for i in range(length):
            ramp = min(1.0, (i + 1) / 3, (length - i) / 3)
            yield max(50, int(peak * ramp * rng.uniform(0.8, 1.2)))
        for _ in range(rng.randint(2, 20)):
            yield rng.randint(50, 400)


def spread_seconds(rng: random.Random) -> Iterator[int]:
    """About 35 lines a second, as the first storm dataset had."""
    while True:
        yield rng.randint(25, 45)


Pairs = tuple[tuple[str, str], ...]


def stream(mode: str, seed: int) -> Iterator[tuple[Label, str, int, Pairs]]:
    """Every (label, line, log second, pairs) of *mode*, forever; deterministic for (mode,
    seed). An event's (nginx incident, cause) pairs come with its last line, so a file cut
    in the middle of an event has none of its pairs in the truth."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    storm = mode.startswith("storm")
    # Both storms draw the same lines (one seed); only the seconds they fall in differ.
    rng = random.Random(f"{seed}:{'storm' if storm else mode}")
    clock = Clock()
    ev = Events(Servers(rng, clock, log_date=storm), companions=not storm)
    seconds = random.Random(f"{seed}:{mode}:seconds")
    if mode == "storm":
        episodes = storm_events(ev, burst_seconds(seconds))
    elif mode == "storm-spread":
        episodes = storm_events(ev, spread_seconds(seconds))
    else:
        episodes = site_events(ev, incidents=mode != "quiet",
                               long_p=0.225 if mode == "long" else 0.0)
    for lines in episodes:
        caused, ev.caused = tuple(ev.caused), []
        for i, (label, line) in enumerate(lines, 1 - len(lines)):
            yield label, line, clock.t, caused if i == 0 else ()


def nest_pairs(pairs: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """``{nginx incident: {cause: n}}``, gw502d scan's ``root_causes`` shape."""
    out: dict[str, dict[str, int]] = {}
    for (incident, cause), n in sorted(pairs.items()):
        out.setdefault(incident, {})[cause] = n
    return out


def generate(path: Path, mode: str, n: int, seed: int = 502) -> dict[str, object]:
    """Write *n* lines of *mode* to *path* and the truth next to it; return the truth."""
    counts: dict[str, dict[str, int]] = {}
    shapes: dict[str, dict[str, int]] = {}  # lines per incident shape, ends included
    root_causes: Counter[tuple[str, str]] = Counter()
    per_second: Counter[int] = Counter()
    decoys = long_lines = size = written = 0
    tmp = path.with_name(path.name + ".tmp")
    batch: list[str] = []
    with tmp.open("w", encoding="ascii", newline="\n") as f:
        for label, line, t, caused in stream(mode, seed):
            root_causes.update(caused)
            if label == DECOY:
                decoys += 1
            elif label is not None:
                ended = label[0].startswith("end:")
                shape = label[0].removeprefix("end:")
                for table in (shapes,) if ended else (shapes, counts):
                    per = table.setdefault(shape, {})
                    per[label[1]] = per.get(label[1], 0) + 1
            per_second[t] += 1
            size += len(line) + 1
            long_lines += len(line) >= 4096
            batch.append(line)
            written += 1
            if written == n or len(batch) == 20000:
                f.write("\n".join(batch) + "\n")
                batch = []
            if written == n:
                break
    os.replace(tmp, path)
    span = max(per_second) - min(per_second) + 1 if per_second else 0
    truth: dict[str, object] = {
        "generator": VERSION, "mode": mode, "seed": seed, "lines": written, "bytes": size,
        "incident_lines": sum(sum(v.values()) for v in shapes.values()),
        "decoy_lines": decoys, "long_lines": long_lines,
        "log_seconds": span,
        "lines_per_log_second": {"mean": round(written / span, 1) if span else 0,
                                 "max": max(per_second.values(), default=0)},
        "counts": {k: dict(sorted(v.items())) for k, v in sorted(counts.items())},
        "shapes": {k: dict(sorted(v.items())) for k, v in sorted(shapes.items())},
        # the generator's cause of each nginx line a backend event produced; other lines of
        # the same kind near a cause may pair as well (gw502d cannot tell them apart)
        "root_causes": nest_pairs(root_causes),
    }
    Path(f"{path}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default="mixed")
    ap.add_argument("-n", "--lines", type=int, required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--seed", type=int, default=502)
    a = ap.parse_args()
    truth = generate(Path(a.out), a.mode, a.lines, a.seed)
    json.dump(truth, sys.stderr, indent=1)
    print(file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
