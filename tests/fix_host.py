"""A running host laid out like Debian's, in a temp dir, with two upstreams of different
schemes: nginx passes ``/api/`` with ``uwsgi_pass`` to uWSGI on a unix socket and ``/blog/``
with ``proxy_pass`` (through an ``upstream {}`` block) to gunicorn on TCP.

Every server runs from its own files, as on a host: nginx from ``etc/nginx/nginx.conf``
(conf.d/, sites-available/ + a sites-enabled/ symlink, snippets/, directives inherited from
``http`` and ``server``), uWSGI from ``etc/uwsgi/apps-enabled/shop.ini`` (a symlink into
apps-available/), gunicorn from ``srv/blog/gunicorn.conf.py``. A change written to those
files reaches the servers at :meth:`FixHost.reload` (nginx: SIGHUP; uWSGI and gunicorn:
restarted). A scenario changes the files through the ``FixHost`` fields.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.hostconf_host import temp_paths
from tests.servers.harness import (
    DEFAULT_NGINX_USER,
    NGINX_BIN,
    UWSGI_BIN,
    WSGI_APP,
    Proc,
    _gunicorn_no_control_socket,
    after_match,
    free_port,
    make_workdir,
    read_lines,
    wait_for_line,
    wait_path,
    wait_port,
    write_wsgi_app,
)
from tests.servers.provoke import send_all
from tests.servers.versions import GUNICORN_CURRENT

# WSGI_APP behind a path prefix: /api/big-header is the app's /big-header
APP = WSGI_APP + '''

_inner = application


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    for prefix in ("/api/", "/blog/"):
        if path.startswith(prefix):
            environ["PATH_INFO"] = path[len(prefix) - 1:]
    return _inner(environ, start_response)
'''

Request = tuple[str, Mapping[str, str]]


@dataclass
class FixHost:
    """The host's files and servers; the fields are what a scenario gets wrong."""

    base: Path
    server_extra: str = ""  # statements in the shop's server block
    api: str = ""  # the /api/ location's body (default: uwsgi_pass to the socket)
    uwsgi: dict[str, str] = field(default_factory=dict)  # shop.ini options set or replaced
    uwsgi_drop: tuple[str, ...] = ()  # shop.ini options left out
    gunicorn: dict[str, str] = field(default_factory=dict)  # gunicorn.conf.py settings
    port: int = field(default_factory=free_port)
    gunicorn_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)

    # ----------------------------------------------------------------------- files

    @property
    def nginx_conf(self) -> Path:
        return self.base / "etc/nginx/nginx.conf"

    @property
    def shop_ini(self) -> Path:
        return self.base / "etc/uwsgi/apps-enabled/shop.ini"

    @property
    def gunicorn_conf(self) -> Path:
        return self.base / "srv/blog/gunicorn.conf.py"

    @property
    def socket(self) -> Path:
        return self.base / "run/shop.sock"

    @property
    def log(self) -> Path:
        return self.base / "log"

    @property
    def logs(self) -> list[Path]:
        return [self.log / "nginx-error.log", self.log / "uwsgi.log", self.log / "gunicorn.log"]

    def write(self) -> FixHost:
        b = self.base
        etc = b / "etc/nginx"
        for d in ("etc/nginx/conf.d", "etc/nginx/sites-available", "etc/nginx/sites-enabled",
                  "etc/nginx/snippets", "etc/uwsgi/apps-available", "etc/uwsgi/apps-enabled",
                  "srv/blog", "srv/shop", "run", "log"):
            (b / d).mkdir(parents=True, exist_ok=True)
        for f in ("mime.types", "uwsgi_params"):
            shutil.copy(f"/etc/nginx/{f}", etc / f)
        user = f"user {DEFAULT_NGINX_USER};\n" if DEFAULT_NGINX_USER else ""
        self.nginx_conf.write_text(f"""{user}worker_processes 1;
pid {b}/run/nginx.pid;
error_log {self.log}/nginx-error.log info;
events {{ worker_connections 64; }}

http {{
    include mime.types;
    access_log {self.log}/nginx-access.log;
{temp_paths(b / "run")}
    uwsgi_read_timeout 30s;
    proxy_read_timeout 45s;

    include {etc}/conf.d/*.conf;
    include sites-enabled/*;
}}
""")
        (etc / "conf.d/upstreams.conf").write_text(
            f"upstream blog_app {{\n    server 127.0.0.1:{self.gunicorn_port};\n}}\n")
        (etc / "snippets/connect.conf").write_text(
            "uwsgi_connect_timeout 5s;\nproxy_connect_timeout 5s;\n")
        api = self.api or f"include uwsgi_params;\n        uwsgi_pass unix:{self.socket};"
        (etc / "sites-available/shop").write_text(f"""# the shop and its blog
server {{
    listen 127.0.0.1:{self.port} default_server;
    server_name shop.test;
    include snippets/connect.conf;
    {self.server_extra}

    location /api/ {{
        {api}
    }}

    location = /health {{
        include uwsgi_params;
        uwsgi_pass unix:{self.socket};
    }}

    location /blog/ {{
        proxy_pass http://blog_app;
    }}
}}
""")
        _link(etc / "sites-available/shop", etc / "sites-enabled/shop")
        write_wsgi_app(b / "srv/shop", APP)
        write_wsgi_app(b / "srv/blog", APP)
        options = {"plugins": "python3", "master": "true", "processes": "1",
                   "socket": str(self.socket), "chmod-socket": "666", "die-on-term": "true",
                   "wsgi-file": f"{b}/srv/shop/wsgi_app.py", "logto": f"{self.log}/uwsgi.log",
                   **self.uwsgi}
        ini = "".join(f"{k} = {v}\n" for k, v in options.items() if k not in self.uwsgi_drop)
        (b / "etc/uwsgi/apps-available/shop.ini").write_text(f"; the shop\n[uwsgi]\n{ini}")
        _link(b / "etc/uwsgi/apps-available/shop.ini", self.shop_ini)
        settings = {"bind": repr(f"127.0.0.1:{self.gunicorn_port}"), "workers": "1",
                    "worker_class": "'sync'", "timeout": "30", "graceful_timeout": "2",
                    "errorlog": repr(f"{self.log}/gunicorn.log"),
                    "accesslog": repr(f"{self.log}/gunicorn-access.log"),
                    "loglevel": "'debug'", "chdir": repr(f"{b}/srv/blog"), **self.gunicorn}
        self.gunicorn_conf.write_text("# the blog\n" + "".join(
            f"{k} = {v}\n" for k, v in settings.items()))
        return self

    # ----------------------------------------------------------------------- servers

    def _start_uwsgi(self) -> None:
        seen = len(read_lines(self.log / "uwsgi.log"))
        self.socket.unlink(missing_ok=True)
        self.procs["uwsgi"] = Proc([UWSGI_BIN, "--ini", str(self.shop_ini)],
                                   self.log / "uwsgi.out", cwd=self.base,
                                   stop_signal=signal.SIGINT).start()
        wait_for_line(self.log / "uwsgi.log", "spawned uWSGI worker 1 ", 15, start=seen)
        wait_path(self.socket)

    def _start_gunicorn(self) -> None:
        python = GUNICORN_CURRENT.interpreter()
        self.procs["gunicorn"] = Proc(
            [python, "-m", "gunicorn", "-c", str(self.gunicorn_conf),
             *_gunicorn_no_control_socket(python), "wsgi_app:application"],
            self.log / "gunicorn.out", cwd=self.base / "srv/blog",
            stop_signal=signal.SIGINT).start()
        wait_port(self.gunicorn_port, 15)

    def start(self) -> None:
        self._start_uwsgi()
        self._start_gunicorn()
        seen = len(read_lines(self.log / "nginx-error.log"))
        self.procs["nginx"] = Proc([NGINX_BIN, "-c", str(self.nginx_conf), "-g", "daemon off;"],
                                   self.log / "nginx.out", cwd=self.base).start()
        wait_for_line(self.log / "nginx-error.log", "start worker process ", 10, start=seen)

    def reload(self) -> None:
        """nginx reads its files again (SIGHUP); uWSGI and gunicorn are restarted."""
        seen = len(read_lines(self.log / "nginx-error.log"))
        self.procs["nginx"].send_signal(signal.SIGHUP)
        lines = wait_for_line(self.log / "nginx-error.log", "reconfiguring", 10, start=seen)
        wait_for_line(self.log / "nginx-error.log", "start worker process ", 10,
                      start=after_match(lines, "reconfiguring", seen))
        for name in ("uwsgi", "gunicorn"):
            self.procs.pop(name).stop()
        self._start_uwsgi()
        self._start_gunicorn()

    def stop(self) -> None:
        for name in ("nginx", "uwsgi", "gunicorn"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()

    @contextmanager
    def running(self) -> Iterator[FixHost]:
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def send(self, requests: Sequence[Request], *, parallel: bool = False) -> list[int | None]:
        """Each request through nginx; their statuses (None: no answer)."""
        return send_all(self.port, requests, parallel=parallel)

    def fix_args(self) -> list[str]:
        """``gw502d fix`` with this host's configuration files (and a backup dir of its own)."""
        return ["fix", "--nginx-conf", str(self.nginx_conf), "--uwsgi-config", str(self.shop_ini),
                "--gunicorn-config", str(self.gunicorn_conf),
                "--backup-dir", str(self.base / "backups")]

    def log_sizes(self) -> dict[Path, int]:
        return {p: p.stat().st_size if p.exists() else 0 for p in self.logs}

    def logs_since(self, sizes: Mapping[Path, int], into: Path) -> list[str]:
        """What each log got after *sizes* was taken, as files in *into* (to scan)."""
        into.mkdir(parents=True, exist_ok=True)
        out = []
        for path in self.logs:
            data = path.read_bytes()[sizes.get(path, 0):] if path.exists() else b""
            part = into / path.name
            part.write_bytes(data)
            out.append(str(part))
        return out


def _link(target: Path, link: Path) -> None:
    if not link.is_symlink():
        os.symlink(target, link)


@contextmanager
def fix_host() -> Iterator[FixHost]:
    """A :class:`FixHost` in a fresh directory (not written yet), deleted afterwards."""
    base = make_workdir()
    try:
        yield FixHost(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
