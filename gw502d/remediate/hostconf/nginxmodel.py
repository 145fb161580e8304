"""nginx's http configuration as blocks: servers, locations, upstreams and pass targets.

Built from the statement tree of :mod:`nginxread`. Names follow nginx's own structures:
a server's ``name`` is what nginx prints as ``server:`` in its error lines (the first
``server_name``, lowercased unless a regex, a leading dot dropped, "" when there is none:
ngx_http_core_merge_srv_conf); a pass's ``peers`` are the addresses nginx prints as the
peer in ``upstream: "scheme://peer"`` (an ``upstream {}`` block's servers, a hostname
resolved to its addresses as nginx does at load time).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gw502d.remediate.hostconf.nginxread import Statement
from gw502d.remediate.hostconf.result import Unreadable, Where

# *_pass directive -> module family (the one gw502d.remediate.nginx names directives after)
PASS_FAMILY = {"proxy_pass": "proxy", "uwsgi_pass": "uwsgi", "fastcgi_pass": "fastcgi",
               "scgi_pass": "scgi", "grpc_pass": "grpc"}
# u->schema when the pass argument gives none
_DEFAULT_SCHEME = {"uwsgi": "uwsgi", "fastcgi": "fastcgi", "scgi": "scgi", "grpc": "grpc"}
_DEFAULT_PORT = {"http": 80, "https": 443, "grpc": 80, "grpcs": 443}
_MODIFIERS = ("=", "^~", "~*", "~", "@")
# blocks inside a location whose pass directive is the location's (conditionally)
_PASS_CONTAINERS = ("if", "limit_except")

Resolver = Callable[[str, int], tuple[str, ...]]


@functools.lru_cache(maxsize=256)
def resolve(host: str, port: int) -> tuple[str, ...]:
    """A hostname's addresses as nginx names peers: ``127.0.0.1:80``, ``[::1]:80``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return ()
    return tuple(dict.fromkeys(_peer_name(str(i[4][0]), port) for i in infos))


def _peer_name(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class Listen:
    """One ``listen``: address ("*" for any IPv4, "[::]", "unix:/path"), port, default."""

    address: str
    port: int | None
    default: bool
    where: Where | None

    @classmethod
    def parse(cls, s: Statement) -> Listen:
        a = s.args[0] if s.args else "80"
        default = any(x in ("default_server", "default") for x in s.args[1:])
        if a.startswith("unix:"):
            return cls(a, None, default, s.where)
        if a.startswith("["):
            host, _, rest = a[1:].partition("]")
            address, port = f"[{host}]", rest.removeprefix(":")
        elif a.isdigit():
            address, port = "*", a
        elif ":" in a:
            address, port = a.rsplit(":", 1)
        else:
            address, port = a, ""
        address = "*" if address in ("0.0.0.0", "*") else address.lower()
        return cls(address, int(port) if port.isdigit() else 80, default, s.where)


@dataclass(frozen=True, slots=True)
class UpstreamBlock:
    """An ``upstream NAME {}`` block and the peer names of its servers."""

    name: str
    statement: Statement
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pass:
    """A ``*_pass`` directive and whom it reaches.

    ``scheme`` is what nginx prints before ``://``; ``target`` the host part as written
    (an address, ``unix:/path`` or an upstream block's name); ``peers`` the addresses
    (empty when the target holds a variable: known only at request time).
    """

    statement: Statement
    family: str
    scheme: str
    target: str
    upstream: UpstreamBlock | None
    peers: tuple[str, ...]
    conditional: bool = False

    @property
    def variable(self) -> bool:
        return "$" in self.target

    @property
    def label(self) -> str:
        """``uwsgi://127.0.0.1:3031`` or ``http://shop_backend``: from the config only."""
        return f"{self.scheme}://{self.target}"

    def reaches(self, scheme: str, peer: str) -> bool:
        return scheme == self.scheme and peer in self.peers

    def __str__(self) -> str:
        return f"{self.statement} ({self.statement.where})"


@dataclass(eq=False, repr=False)
class Location:
    """A ``location`` block: modifier ("" for a plain prefix, "=", "^~", "~", "~*", "@"),
    pattern, the location it is nested in, the locations nested in it, its passes."""

    statement: Statement
    modifier: str
    pattern: str
    server: Server = field(repr=False)
    parent: Location | None = field(default=None, repr=False)
    children: list[Location] = field(default_factory=list, repr=False)
    passes: list[Pass] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        """``location ~* \\.php$`` as written (modifier, then pattern)."""
        return " ".join(x for x in ("location", self.modifier, self.pattern) if x)

    def chain(self) -> list[Location]:
        """This location, then each enclosing one outwards."""
        out: list[Location] = []
        loc: Location | None = self
        while loc is not None:
            out.append(loc)
            loc = loc.parent
        return out

    def walk(self) -> Iterator[Location]:
        yield self
        for c in self.children:
            yield from c.walk()

    def __str__(self) -> str:
        return f"{self.text} ({self.statement.where})"

    __repr__ = __str__


@dataclass(eq=False, repr=False)
class Server:
    """A ``server`` block in ``http``."""

    statement: Statement
    names: tuple[str, ...]
    listens: tuple[Listen, ...]
    locations: list[Location] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        """What nginx prints as ``server:``: the first server_name, as nginx stores it."""
        first = self.names[0] if self.names else ""
        return first[1:] if first.startswith(".") else first

    def all_locations(self) -> Iterator[Location]:
        for loc in self.locations:
            yield from loc.walk()

    def __str__(self) -> str:
        return f"server {self.name or '(no server_name)'} ({self.statement.where})"

    __repr__ = __str__


def split_location(args: tuple[str, ...]) -> tuple[str, str]:
    """``("~*", "\\.php$")`` or ``("=/x",)`` -> (modifier, pattern)."""
    if len(args) >= 2:
        return args[0], args[1]
    arg = args[0] if args else ""
    for m in _MODIFIERS:
        if arg.startswith(m) and (m == "@" or len(arg) > len(m)):
            return ("", arg) if m == "@" else (m, arg[len(m):])
    return "", arg


def _server_names(s: Statement) -> tuple[str, ...]:
    names: list[str] = []
    for sn in s.find("server_name"):
        for n in sn.args:
            name = socket.gethostname() if n.lower() == "$hostname" else n
            names.append(name if name.startswith("~") else name.lower())
    return tuple(names)


@dataclass
class Builder:
    """Builds servers, locations and passes from the ``http`` block."""

    resolver: Resolver
    problems: list[Unreadable]
    upstreams: dict[str, UpstreamBlock] = field(default_factory=dict)

    def build(self, http: Statement) -> list[Server]:
        for s in http.find("upstream"):
            if s.args:
                self.upstreams[s.args[0].lower()] = UpstreamBlock(
                    s.args[0], s, tuple(p for srv in s.find("server")
                                        for p in self._peers_of_server(srv)))
        servers = []
        for s in http.find("server"):
            listens = tuple(Listen.parse(x) for x in s.find("listen"))
            server = Server(s, _server_names(s), listens or (Listen("*", 80, False, None),))
            server.locations = self._locations(s, server, None)
            servers.append(server)
        return servers

    def _locations(self, block: Statement, server: Server,
                   parent: Location | None) -> list[Location]:
        out = []
        for s in block.find("location"):
            modifier, pattern = split_location(s.args)
            loc = Location(s, modifier, pattern, server, parent)
            loc.passes = list(self._passes(s, False))
            loc.children = self._locations(s, server, loc)
            out.append(loc)
        return out

    def _passes(self, block: Statement, conditional: bool) -> Iterator[Pass]:
        for s in block.block or ():
            if s.name in PASS_FAMILY and s.args:
                yield self.pass_of(s, conditional)
            elif s.name in _PASS_CONTAINERS:
                yield from self._passes(s, True)

    def pass_of(self, s: Statement, conditional: bool = False) -> Pass:
        family = PASS_FAMILY[s.name]
        arg = s.args[0]
        scheme, sep, rest = arg.partition("://")
        if not sep:
            scheme, rest = _DEFAULT_SCHEME.get(family, "http"), arg
        scheme = scheme.lower()
        if rest.startswith("unix:"):
            target = "unix:" + rest[5:].split(":", 1)[0]
        else:
            target = rest.split("/", 1)[0]
        up = self.upstreams.get(target.lower())
        if "$" in target:
            peers: tuple[str, ...] = ()
        elif up is not None:
            peers = up.peers
        else:
            peers = self._peers(target, _DEFAULT_PORT.get(scheme), s.where)
        return Pass(s, family, scheme, target, up, peers, conditional)

    def _peers_of_server(self, s: Statement) -> tuple[str, ...]:
        return self._peers(s.args[0], 80, s.where) if s.args else ()

    def _peers(self, target: str, default_port: int | None, where: Where) -> tuple[str, ...]:
        """An address as nginx names its peers; a hostname resolved."""
        if target.startswith("unix:"):
            return (target,)
        if target.startswith("["):
            host, _, rest = target[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = target.rpartition(":") if ":" in target else (target, "", "")
        port = int(port_text) if port_text.isdigit() else default_port
        if port is None:
            self.problems.append(Unreadable(str(where), f"no port in {target}"))
            return ()
        try:
            return (_peer_name(str(ipaddress.ip_address(host)), port),)
        except ValueError:
            pass
        found = self.resolver(host, port)
        if not found:
            self.problems.append(Unreadable(str(where), f"cannot resolve {host}"))
        return found
