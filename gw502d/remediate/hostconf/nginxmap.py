"""Which server and location handled a failing request, and the directives in force there.

Follows nginx's own selection (ngx_http_find_virtual_server, ngx_http_core_find_location):

- server: among the servers on one listen address, an exact name, then the longest
  ``*.name`` wildcard, then the longest ``name.*``, then the first matching regex in
  config order, else the ``default_server`` (or first server) of that address. An error
  line's ``server:`` field is the chosen server's first name, so it picks the block
  directly (servers repeating a first name on other ports are told apart by the upstream).
- location: ``=`` exact wins; else the longest prefix, whose nested locations are searched
  the same way; unless that prefix is ``^~``, the regexes of its level (``~``, ``~*``) are
  tried in config order and the first match (then its nested locations) wins.
- pass: ``*_pass`` is not inherited into nested locations; one inside ``if`` or
  ``limit_except`` of the location counts (conditionally). A request that reached its
  upstream through try_files/error_page/rewrite ran in another location than its URI
  selects: then the location of that server passing to the upstream is taken (``by``
  says which way it was found).
- directives: the innermost level that sets a directive wins, and for array directives
  (``*_set_header``, ``*_param``, ``add_header``) a level that sets any instance replaces
  all inherited ones, so "the instances at the innermost level that has some" is right
  for both. Statements inside ``if`` are not counted.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from gw502d.remediate.hostconf.nginxmodel import (
    Builder,
    Location,
    Pass,
    Resolver,
    Server,
    UpstreamBlock,
    resolve,
)
from gw502d.remediate.hostconf.nginxread import NginxFiles, Statement, read_nginx
from gw502d.remediate.hostconf.result import Unreadable, Where
from gw502d.remediate.nginx import FAMILIES, Upstream, size_text

# nginx's defaults where the advice needs them; "{page}" is one memory page
# (ngx_http_proxy_module.c and its uwsgi/fastcgi/scgi/grpc copies, ngx_http_core_module.c)
_FAMILY_DEFAULTS = {
    "connect_timeout": "60s", "send_timeout": "60s", "read_timeout": "60s",
    "buffer_size": "{page}", "buffers": "8 {page}", "busy_buffers_size": "{2page}",
    "temp_file_write_size": "{2page}", "max_temp_file_size": "1024m",
    "buffering": "on", "request_buffering": "on", "next_upstream": "error timeout",
    "next_upstream_tries": "0", "next_upstream_timeout": "0", "intercept_errors": "off",
    "ignore_client_abort": "off", "socket_keepalive": "off",
}
_DEFAULTS = {
    "client_max_body_size": "1m", "client_body_buffer_size": "{2page}",
    "client_header_buffer_size": "1k", "large_client_header_buffers": "4 8k",
    "client_header_timeout": "60s", "client_body_timeout": "60s",
    "keepalive_timeout": "75s", "send_timeout": "60s",
}
# gRPC is not buffered: of the above it has only these
_GRPC = ("connect_timeout", "send_timeout", "read_timeout", "buffer_size")
# scheme and peer of an upstream: value, without the URI proxy_pass adds (as parse.nginx)
_UPSTREAM = re.compile(r"[a-z0-9+]+://(?:unix:[^\s\":]*:?|[^\s\"/]*)")
_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])|\(\?P?'(\w+)'")


def default_value(directive: str, page_size: int | None = None) -> str | None:
    """nginx's default for *directive* on a host with *page_size* (None: not known here)."""
    family, _, rest = directive.partition("_")
    if family in FAMILIES:
        text = _FAMILY_DEFAULTS.get(rest) if family != "grpc" or rest in _GRPC else None
    else:
        text = _DEFAULTS.get(directive)
    if text is None:
        return None
    page = page_size or os.sysconf("SC_PAGESIZE")
    return text.replace("{2page}", size_text(2 * page)).replace("{page}", size_text(page))


@dataclass(frozen=True, slots=True)
class Setting:
    """The value of a directive in force in a block, and where it comes from.

    ``statements`` are the instances in force (several for an array directive), empty
    when nginx's default applies; ``level`` is "location", "enclosing location",
    "server", "http" or "default".
    """

    directive: str
    statements: tuple[Statement, ...]
    level: str
    default: str | None

    @property
    def value(self) -> str | None:
        if self.statements:
            return " ".join(self.statements[0].args)
        return self.default

    @property
    def where(self) -> Where | None:
        return self.statements[0].where if self.statements else None

    def __str__(self) -> str:
        if self.statements:
            return "; ".join(f"{s} ({s.where})" for s in self.statements)
        if self.default is None:
            return f"{self.directive}: not set (default unknown here)"
        return f"{self.directive} {self.default} (nginx's default)"


@dataclass(frozen=True, slots=True)
class Handler:
    """The server and location that passed a request to an upstream, and the pass.

    ``by`` is "uri" when nginx's location selection for the request's URI reached it,
    "upstream" when it is the location of that server passing to the upstream (the URI's
    own location does not: an internal redirect such as ``try_files ... @app``), "config"
    in :meth:`NginxConfig.routes`.
    """

    server: Server
    location: Location
    pass_: Pass
    http: Statement
    by: str

    def setting(self, directive: str, page_size: int | None = None) -> Setting:
        """The value of *directive* in force in this location, with file:line."""
        return setting(self.location, self.http, directive, page_size)

    def __str__(self) -> str:
        return f"{self.server}, {self.location}, {self.pass_}"


def levels(block: Location | Server, http: Statement) -> list[tuple[str, Statement]]:
    """The blocks whose directives *block* inherits, innermost first, with their level."""
    if isinstance(block, Server):
        return [("server", block.statement), ("http", http)]
    chain = block.chain()
    out = [("location", chain[0].statement)]
    out += [("enclosing location", loc.statement) for loc in chain[1:]]
    return [*out, ("server", block.server.statement), ("http", http)]


def setting(block: Location | Server, http: Statement, directive: str,
            page_size: int | None = None) -> Setting:
    """The value of *directive* in force in *block* (location or server), with file:line."""
    for level, stmt in levels(block, http):
        found = stmt.find(directive)
        if found:
            return Setting(directive, tuple(found), level, None)
    return Setting(directive, (), "default", default_value(directive, page_size))


@dataclass(frozen=True, slots=True)
class Match:
    """The handlers of a failing request: one when certain, several when the config
    allows more (the same server name on two ports), none with ``reason``."""

    handlers: tuple[Handler, ...]
    reason: str = ""
    notes: tuple[str, ...] = ()

    @property
    def handler(self) -> Handler | None:
        return self.handlers[0] if len(self.handlers) == 1 else None


@dataclass
class NginxConfig:
    """nginx's configuration as read, with the request -> block mapping.

    >>> cfg = NginxConfig.read("/etc/nginx/nginx.conf")          # doctest: +SKIP
    >>> m = cfg.find("uwsgi://127.0.0.1:3031", server="shop.example.net", uri="/api/x")
    >>> str(m.handler.setting("uwsgi_read_timeout"))             # doctest: +SKIP
    'uwsgi_read_timeout 3s (/etc/nginx/sites-enabled/shop:14)'
    """

    files: NginxFiles
    http: Statement | None
    servers: list[Server]
    upstreams: dict[str, UpstreamBlock]
    problems: list[Unreadable] = field(default_factory=list)
    _labels: frozenset[str] | None = field(default=None, init=False, repr=False)

    @classmethod
    def read(cls, conf: str | None = None, *, nginx: str | None = "nginx",
             prefix: str | None = None, use_dump: bool = True,
             resolver: Resolver = resolve) -> NginxConfig:
        """Read and model the configuration (see :func:`read_nginx`); never raises for an
        unreadable host: ``problems`` says what is missing."""
        return cls.build(read_nginx(conf, nginx=nginx, prefix=prefix, use_dump=use_dump),
                         resolver)

    @classmethod
    def build(cls, files: NginxFiles, resolver: Resolver = resolve) -> NginxConfig:
        problems = list(files.problems)
        https = [s for s in files.statements if s.name == "http"]
        if not https:
            if files.files:
                problems.append(Unreadable(files.conf, "no http block"))
            return cls(files, None, [], {}, problems)
        builder = Builder(resolver, problems)
        servers = builder.build(https[0])
        return cls(files, https[0], servers, builder.upstreams, problems)

    # ----------------------------------------------------------------------- servers

    def select_server(self, host: str | None, port: int | None = None,
                      address: str | None = None) -> list[Server]:
        """The server nginx picks for a Host header on each listen address (of *port*;
        of *address* when given), as nginx does per address."""
        name = _host_name(host)
        groups: dict[tuple[str, int | None], list[Server]] = {}
        for srv in self.servers:
            for listen in srv.listens:
                group = groups.setdefault((listen.address, listen.port), [])
                if srv not in group:
                    group.append(srv)
        keys = [k for k in groups if port is None or k[1] == port]
        if address is not None:
            keys = [k for k in keys if k[0] == address] or [
                k for k in keys if k[0] in ("*", "[::]")]
        out: list[Server] = []
        for key in keys:
            srv = _by_name(groups[key], name) or _default_server(groups[key], key)
            if srv not in out:
                out.append(srv)
        return out

    def servers_named(self, name: str) -> list[Server]:
        """Servers whose ``server:`` name (as in an error line) is *name*."""
        return [s for s in self.servers if s.name == name]

    # ----------------------------------------------------------------------- requests

    def find(self, upstream: str, *, server: str | None = None, host: str | None = None,
             uri: str | None = None, port: int | None = None) -> Match:
        """Map a failing request to its handler: *upstream* is the error line's
        ``upstream:`` value, *server* its ``server:`` field (preferred) or *host* the
        request's Host, *uri* the request target (query and escapes are dealt with)."""
        if self.http is None:
            return Match((), "no nginx configuration read")
        up = _upstream(upstream)
        if server is not None:
            servers = self.servers_named(server)
            if not servers:
                return Match((), f"no server block named {server!r} (config changed?)")
        elif host is not None:
            servers = self.select_server(host, port)
        else:
            servers = list(self.servers)
        path = normalize_uri(uri) if uri is not None else None
        found: list[Handler] = []
        notes: list[str] = []
        for srv in servers:
            found += self._in_server(srv, up, path, notes)
        if not found:
            return Match((), f"no location passes to {up} in "
                         + (", ".join(str(s) for s in servers) or "any server"), tuple(notes))
        return Match(tuple(found), "" if len(found) == 1 else "several blocks pass to "
                     f"{up}: the error line does not say which", tuple(notes))

    def _in_server(self, srv: Server, up: Upstream, path: str | None,
                   notes: list[str]) -> list[Handler]:
        assert self.http is not None
        if path is not None:
            loc = self.select_location(srv, path, notes)
            if loc is not None:
                hit = [Handler(srv, loc, p, self.http, "uri") for p in loc.passes
                       if p.reaches(up.scheme, up.peer)]
                if hit:
                    return hit[:1]
        return [Handler(srv, loc, p, self.http, "upstream") for loc in srv.all_locations()
                for p in loc.passes if p.reaches(up.scheme, up.peer)]

    def select_location(self, srv: Server, uri: str,
                        notes: list[str] | None = None) -> Location | None:
        """The location nginx picks for a normalised *uri* in *srv* (None: none matches)."""
        found, _ = _find_location(srv.locations, uri, notes if notes is not None else [])
        return found

    def routes(self) -> list[Handler]:
        """Every (server, location, pass) in the config: the bounded set of upstreams."""
        if self.http is None:
            return []
        return [Handler(srv, loc, p, self.http, "config") for srv in self.servers
                for loc in srv.all_locations() for p in loc.passes]

    def upstream_labels(self) -> frozenset[str]:
        """``scheme://peer`` of every peer a pass reaches, as nginx prints them: a metric
        label from this set is bounded by the config (worked out once: the daemon asks per
        distinct upstream it reads)."""
        if self._labels is None:
            self._labels = frozenset(f"{r.pass_.scheme}://{peer}" for r in self.routes()
                                     for peer in r.pass_.peers)
        return self._labels

    def label(self, upstream: str, other: str = "other") -> str:
        """The error line's upstream as a label when the config reaches it, else *other*."""
        text = str(_upstream(upstream))
        return text if text in self.upstream_labels() else other


# --------------------------------------------------------------------------- helpers


def normalize_uri(target: str) -> str:
    """A request target as nginx matches locations: path only, %XX decoded, dot segments
    resolved, slashes merged (merge_slashes on)."""
    path = urlsplit(target).path if "://" in target else target.split("?", 1)[0]
    path = unquote(path.split("#", 1)[0], errors="replace") or "/"
    path = re.sub(r"/{2,}", "/", path)
    trailing = path.endswith(("/", "/.", "/.."))
    path = posixpath.normpath(path) if path.startswith("/") else "/" + path
    path = "/" + path.lstrip("/")
    return path + "/" if trailing and not path.endswith("/") else path


def _upstream(value: str) -> Upstream:
    m = _UPSTREAM.match(value)
    return Upstream.parse(m.group(0) if m else value)


def _host_name(host: str | None) -> str:
    """Host header -> the name nginx matches: port dropped, lowercased, no final dot."""
    if not host:
        return ""
    h = host.strip().lower()
    h = h.split("]", 1)[0] + "]" if h.startswith("[") else h.split(":", 1)[0]
    return h.rstrip(".")


def _compile(pattern: str, caseless: bool) -> re.Pattern[str] | None:
    """A PCRE pattern as a Python one (named groups translated); None if Python rejects it."""
    py = _NAMED_GROUP.sub(lambda m: f"(?P<{m.group(1)}>" if m.group(1) else "(?P<", pattern)
    try:
        return re.compile(py, re.IGNORECASE if caseless else 0)
    except re.error:
        return None


def _by_name(servers: list[Server], host: str) -> Server | None:
    for srv in servers:
        if any(n == host or (n.startswith(".") and n[1:] == host) for n in srv.names
               if not n.startswith(("~", "*")) and not n.endswith("*")):
            return srv
    best: tuple[int, Server] | None = None
    for srv in servers:
        for n in srv.names:
            if n.startswith(("*.", ".")):
                suffix = n[1:] if n.startswith("*") else n
                if host.endswith(suffix) and (best is None or len(suffix) > best[0]):
                    best = (len(suffix), srv)
    if best is None:
        for srv in servers:
            for n in srv.names:
                if n.endswith(".*"):
                    prefix = n[:-1]
                    if host.startswith(prefix) and (best is None or len(prefix) > best[0]):
                        best = (len(prefix), srv)
    if best is not None:
        return best[1]
    for srv in servers:
        for n in srv.names:
            if n.startswith("~"):
                rx = _compile(n[1:], any(c.isupper() for c in n))
                if rx is not None and rx.search(host):
                    return srv
    return None


def _default_server(servers: list[Server], key: tuple[str, int | None]) -> Server:
    for srv in servers:
        if any(ls.default and (ls.address, ls.port) == key for ls in srv.listens):
            return srv
    return servers[0]


def _find_location(locations: list[Location], uri: str,
                   notes: list[str]) -> tuple[Location | None, bool]:
    """ngx_http_core_find_location over one level: (location, final?)."""
    for loc in locations:
        if loc.modifier == "=" and loc.pattern == uri:
            return loc, True
    prefixes = [loc for loc in locations
                if loc.modifier in ("", "^~") and not loc.pattern.startswith("@")
                and uri.startswith(loc.pattern)]
    current = max(prefixes, key=lambda loc: len(loc.pattern)) if prefixes else None
    noregex = current is not None and current.modifier == "^~"
    if current is not None:
        inner, final = _find_location(current.children, uri, notes)
        if final:
            return inner, True
        current = inner or current
    if not noregex:
        for loc in locations:
            if loc.modifier not in ("~", "~*"):
                continue
            rx = _compile(loc.pattern, loc.modifier == "~*")
            if rx is None:
                notes.append(f"{loc} is not a Python regex: not tried")
                continue
            if rx.search(uri):
                inner, _ = _find_location(loc.children, uri, notes)
                return inner or loc, True
    return current, False
