"""This host's servers as their configuration files say: nginx, uWSGI and gunicorn, read from
the paths gw502d.toml (``[servers]``) or ``gw502d fix`` names, and read again when they change.

What is read serves three things: the upstream label of per-upstream metrics (a peer that
nginx's configuration passes to, anything else ``other``: bounded by the config, never by
a log line), the backend behind an upstream (the uWSGI or gunicorn config that binds the
peer nginx names), and the current values a remediation starts from. What cannot be read
is kept with its reason (:attr:`HostConfig.problems`) and said by ``check-config``, a
metric and a log line; nothing is guessed in its place.

The daemon reads nginx's files, not ``nginx -T``: on Debian the test opens the pid file and
needs root. It finds nothing from running processes either (systemd's
``ProtectProc=invisible`` hides them), hence the paths.
"""

# Paths stay strings exactly as the servers name them (pathlib would normalise them).
# ruff: noqa: PTH116, PTH118, PTH119, PTH120, PTH207

from __future__ import annotations

import glob
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from gw502d.remediate.host import ConfigPaths
from gw502d.remediate.hostconf import (
    GunicornConfig,
    NginxConfig,
    Unreadable,
    UwsgiConfig,
    read_gunicorn,
    read_uwsgi,
)
from gw502d.remediate.hostconf.nginxmodel import resolve
from gw502d.remediate.hostconf.result import Where
from gw502d.remediate.nginx import OTHER

SERVERS = ("nginx", "uwsgi", "gunicorn")
Server = Literal["nginx", "uwsgi", "gunicorn"]
# uWSGI options that bind a socket nginx can pass to, and the protocol spoken there
_UWSGI_BINDS = {"socket": "uwsgi", "uwsgi-socket": "uwsgi", "http-socket": "http",
                "http": "http"}
_ANY = ("", "*", "0.0.0.0", "[::]", "::")
_GLOB = frozenset("*?[")
Stamp = tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class Bind:
    """An address a backend listens on: ``unix`` with *path*, or *host* ("*": any) and
    *port*; *protocol* is what it speaks there (uwsgi or http)."""

    host: str
    port: int | None
    path: str | None
    protocol: str
    option: str  # as configured, with where: "socket = /run/shop.sock (shop.ini:7)"

    @classmethod
    def parse(cls, value: str, protocol: str, option: str,
              default_port: int | None = None) -> Bind | None:
        """``/run/x.sock``, ``unix:/run/x.sock``, ``:3031``, ``[::1]:80``, ``host:port``;
        None for what nginx cannot pass to (abstract sockets, fds, placeholders)."""
        text = value.split(",", 1)[0].strip()
        if not text or text.startswith(("@", "=", "fd://", "%", "$")):
            return None
        if text.startswith("unix:"):
            text = text[5:]
        if text.startswith("/"):
            return cls("unix", None, os.path.normpath(text), protocol, option)
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            host, port_text = f"[{host}]", rest.removeprefix(":")
        elif ":" in text:
            host, _, port_text = text.rpartition(":")
        else:
            host, port_text = text, ""
        port = int(port_text) if port_text.isdigit() else default_port
        if port is None:
            return None
        return cls("*" if host in _ANY else host.lower(), port, None, protocol, option)

    def serves(self, peer: str) -> bool:
        """Whether nginx's peer (``127.0.0.1:3031``, ``unix:/run/x.sock``) reaches this."""
        if peer.startswith("unix:"):
            return self.path is not None and os.path.normpath(peer[5:]) == self.path
        if self.path is not None:
            return False
        host, _, port = peer.rpartition(":")
        if not port.isdigit() or int(port) != self.port:
            return False
        return self.host in ("*", host) or peer in resolve(self.host, int(port))

    @property
    def peer(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"


@dataclass(eq=False)
class Backend:
    """One uWSGI or gunicorn configuration and the addresses it binds."""

    server: Server
    name: str  # the config file, or the command line
    uwsgi: UwsgiConfig | None = None
    gunicorn: GunicornConfig | None = None
    binds: tuple[Bind, ...] = ()

    def bind_for(self, peer: str) -> Bind | None:
        return next((b for b in self.binds if b.serves(peer)), None)


def _uwsgi_binds(cfg: UwsgiConfig) -> tuple[Bind, ...]:
    found = []
    for o in cfg.options:
        protocol = _UWSGI_BINDS.get(o.name)
        bind = Bind.parse(o.value, protocol, str(o)) if protocol else None
        if bind is not None:
            found.append(bind)
    return tuple(found)


def _gunicorn_binds(cfg: GunicornConfig) -> tuple[Bind, ...]:
    setting = cfg.get("bind")
    values = setting.value if isinstance(setting.value, list) else []
    where = f" ({setting.where})" if setting.where else " (gunicorn's default)"
    return tuple(b for v in values if isinstance(v, str)
                 and (b := Bind.parse(v, "http", f"bind = {v}{where}", 8000)) is not None)


@dataclass(eq=False)
class HostConfig:
    """What the configured paths hold, read once; :meth:`changed` tells when to read again."""

    paths: ConfigPaths
    nginx: NginxConfig | None = None
    backends: list[Backend] = field(default_factory=list)
    problems: list[tuple[Server, Unreadable]] = field(default_factory=list)
    stamps: dict[str, Stamp] = field(default_factory=dict)

    @classmethod
    def read(cls, paths: ConfigPaths) -> HostConfig:
        """Read everything *paths* names; never raises for what it cannot read."""
        host = cls(paths)
        if paths.nginx:
            host.nginx = NginxConfig.read(paths.nginx, nginx="nginx" if paths.nginx_dump
                                          else None, use_dump=paths.nginx_dump)
            host.problems += [("nginx", p) for p in host.nginx.problems]
        for entry in paths.uwsgi:
            for path in host._expand("uwsgi", entry):
                cfg = read_uwsgi(path)
                host.problems += [("uwsgi", p) for p in cfg.problems]
                if cfg.files:
                    host.backends.append(Backend("uwsgi", path, uwsgi=cfg,
                                                 binds=_uwsgi_binds(cfg)))
        for entry in paths.gunicorn:
            for path in host._expand("gunicorn", entry):
                host._gunicorn(path, read_gunicorn(path))
        for command in paths.gunicorn_commands:
            try:
                argv = shlex.split(command)
            except ValueError as e:
                host.problems.append(("gunicorn", Unreadable(command, str(e))))
                continue
            host._gunicorn(command, read_gunicorn(argv=argv, cwd=paths.cwd))
        host.stamps = host._stamp()
        return host

    def _expand(self, server: Server, entry: str) -> list[str]:
        if not _GLOB & set(entry):
            return [entry]
        found = sorted(glob.glob(entry))
        if not found:
            self.problems.append((server, Unreadable(entry, "matches no file")))
        return found

    def _gunicorn(self, name: str, cfg: GunicornConfig) -> None:
        """Keep *cfg* unless its config file could not be read: its settings are unknown
        then, not gunicorn's defaults."""
        self.problems += [("gunicorn", p) for p in cfg.problems]
        if any(p.path == cfg.config_file for p in cfg.problems):
            return
        if cfg.config_file is not None or cfg.overrides:
            self.backends.append(Backend("gunicorn", name, gunicorn=cfg,
                                         binds=_gunicorn_binds(cfg)))

    # ----------------------------------------------------------------------- changes

    def _watched(self) -> Iterator[str]:
        """Every file read, the directories holding them (an include glob gains a file),
        and the configured paths and globs' directories themselves."""
        files: list[str] = []
        if self.nginx is not None:
            files += self.nginx.files.files
        for b in self.backends:
            files += b.uwsgi.files if b.uwsgi else []
            files += [b.gunicorn.config_file] if b.gunicorn and b.gunicorn.config_file else []
        configured = [p for p in (self.paths.nginx, *self.paths.uwsgi, *self.paths.gunicorn)
                      if p]
        for path in (*files, *configured):
            plain = path.rsplit(":", 1)[0] if ":" in os.path.basename(path) else path
            if not _GLOB & set(plain):
                yield os.path.join(self.paths.cwd, plain)
            yield os.path.dirname(os.path.join(self.paths.cwd, plain))

    def _stamp(self) -> dict[str, Stamp]:
        stamps: dict[str, Stamp] = {}
        for path in self._watched():
            if path not in stamps:
                try:
                    st = os.stat(path)
                    stamps[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
                except OSError:
                    stamps[path] = None
        return stamps

    def changed(self) -> bool:
        """Whether a file read (or the directory of one) changed since: a few stats."""
        return self._stamp() != self.stamps

    # ----------------------------------------------------------------------- questions

    def label(self, upstream: str | None) -> str:
        """The error line's upstream as a metric label: itself when nginx's configuration
        passes to it, else ``other``."""
        if upstream is None or self.nginx is None:
            return OTHER
        return self.nginx.label(upstream, OTHER)

    def labels(self) -> frozenset[str]:
        """Every label :meth:`label` can give."""
        found = self.nginx.upstream_labels() if self.nginx is not None else frozenset()
        return found | {OTHER}

    def backends_for(self, peer: str) -> list[tuple[Backend, Bind]]:
        """The configured backends that bind nginx's *peer*."""
        return [(b, bind) for b in self.backends if (bind := b.bind_for(peer)) is not None]

    def only(self, server: Server) -> Backend | None:
        """The one backend of *server* configured here (None: none, or several)."""
        found = [b for b in self.backends if b.server == server]
        return found[0] if len(found) == 1 else None

    def nginx_user(self) -> tuple[str, str, Where] | None:
        """``user www-data;`` of nginx.conf: the workers' user and group, and where."""
        if self.nginx is None:
            return None
        for s in self.nginx.files.statements:
            if s.name == "user" and s.args:
                return s.args[0], s.args[1] if len(s.args) > 1 else s.args[0], s.where
        return None

    def read_count(self, server: Server) -> int:
        """Files of *server* read."""
        if server == "nginx":
            return len(self.nginx.files.files) if self.nginx is not None else 0
        return len([b for b in self.backends if b.server == server])

    def problem_counts(self) -> dict[str, int]:
        """What could not be read, per server (``gw502d_server_config_problems``)."""
        counts = dict.fromkeys(SERVERS, 0)
        for server, _ in self.problems:
            counts[server] += 1
        return counts

    def summary(self) -> list[str]:
        """One line per server: what was read (for check-config and the log)."""
        lines = []
        if self.paths.nginx:
            labels = len(self.labels()) - 1
            lines.append(f"nginx: {self.paths.nginx} ({self.read_count('nginx')} file(s), "
                         f"{labels} upstream(s))")
        for b in self.backends:
            binds = ", ".join(x.peer for x in b.binds) or "no address nginx can pass to"
            lines.append(f"{b.server}: {b.name} ({binds})")
        return lines
