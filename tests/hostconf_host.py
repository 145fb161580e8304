"""A host laid out like Debian's, in a temp dir: nginx.conf with conf.d/, sites-available/
and sites-enabled/ symlinks, snippets/, directives inherited at http and server level; a
uWSGI ini and a gunicorn.conf.py. Every location passes to its own port, so nginx's error
line for a request names the location nginx chose.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.harness import free_port, make_workdir

PORTS = ("root", "api", "json", "json_backup", "static", "images", "exact", "blog")


def temp_paths(run: Path) -> str:
    """http-level temp paths under *run*: nginx -t and a root nginx never touch /var/lib."""
    return "".join(f"    {name}_temp_path {run}/{dir_};\n" for name, dir_ in (
        ("client_body", "body"), ("proxy", "proxy"), ("uwsgi", "uwsgi"),
        ("fastcgi", "fastcgi"), ("scgi", "scgi")))


@dataclass
class Host:
    base: Path
    port: int = field(default_factory=free_port)
    ports: dict[str, int] = field(default_factory=lambda: {k: free_port() for k in PORTS})

    @property
    def etc(self) -> Path:
        return self.base / "etc/nginx"

    @property
    def conf(self) -> str:
        return str(self.etc / "nginx.conf")

    @property
    def shop(self) -> str:
        """The shop site as nginx reads it (a symlink into sites-available)."""
        return str(self.etc / "sites-enabled/shop")

    def write(self) -> Host:
        etc, p = self.etc, self.ports
        for d in ("conf.d", "sites-available", "sites-enabled", "snippets", "run", "log"):
            (etc / d).mkdir(parents=True, exist_ok=True)
        for f in ("mime.types", "uwsgi_params"):
            shutil.copy(f"/etc/nginx/{f}", etc / f)
        (etc / "nginx.conf").write_text(f"""worker_processes 1;
pid {etc}/run/nginx.pid;
error_log {etc}/log/error.log info;
events {{ worker_connections 64; }}

http {{
    include mime.types;
    access_log {etc}/log/access.log;
{temp_paths(etc / "run")}
    uwsgi_read_timeout 30s;
    proxy_read_timeout 45s;
    proxy_set_header X-From-Http 1;

    include {etc}/conf.d/*.conf;
    include sites-enabled/*;
}}
""")
        (etc / "conf.d/upstreams.conf").write_text(f"""upstream shop_json {{
    server 127.0.0.1:{p['json']};
    server 127.0.0.1:{p['json_backup']} backup;
}}

upstream blog_app {{
    server localhost:{p['blog']};
}}
""")
        (etc / "snippets/uwsgi-timeouts.conf").write_text(
            "uwsgi_send_timeout 20s;\nuwsgi_connect_timeout 5s;\n")
        (etc / "sites-available/shop").write_text(f"""# the shop
server {{
    listen 127.0.0.1:{self.port} default_server;
    server_name shop.example.net www.shop.example.net;
    uwsgi_read_timeout 20s;
    include snippets/uwsgi-timeouts.conf;

    location / {{
        include uwsgi_params;
        uwsgi_pass 127.0.0.1:{p['root']};
    }}

    location /api/ {{
        include uwsgi_params;
        uwsgi_pass 127.0.0.1:{p['api']};
        uwsgi_read_timeout 3s;   # short on purpose

        location ~ \\.json$ {{
            include uwsgi_params;
            uwsgi_pass shop_json;
        }}
    }}

    location ^~ /static/ {{ include uwsgi_params; uwsgi_pass 127.0.0.1:{p['static']}; }}
    location ~* \\.(png|jpg)$ {{
        include uwsgi_params;
        uwsgi_pass 127.0.0.1:{p['images']};
    }}
    location = /exact {{
        include uwsgi_params;
        uwsgi_pass 127.0.0.1:{p['exact']};
    }}
    location /app/ {{
        root {etc}/run;
        try_files $uri @app;
    }}
    location @app {{
        proxy_pass http://blog_app;
    }}
}}
""")
        (etc / "sites-available/blog").write_text(f"""server {{
    listen 127.0.0.1:{self.port};
    server_name *.blog.example.org blog.example.org;
    proxy_set_header X-From-Server 1;

    location / {{
        proxy_pass http://127.0.0.1:{p['blog']};
        proxy_set_header Host $host;
    }}
    location ~ ^/admin {{
        proxy_pass http://unix:{etc}/run/admin.sock;
    }}
}}
""")
        # not enabled, and not valid: reading it would be a mistake
        (etc / "sites-available/unused").write_text("server { listen 1; broken\n")
        for site in ("shop", "blog"):
            os.symlink(etc / "sites-available" / site, etc / "sites-enabled" / site)
        return self


UWSGI_INI = """\
; the shop's uWSGI
[uwsgi]
plugins = python3
master = true
processes = 2
# comments start with ; or #
harakiri = 6
buffer-size = 8192
socket = {socket}
chmod-socket = 660
stats = %(socket).stats
enable-threads
listen = 64 ; not a comment: uWSGI keeps it in the value
processes = 3

[other]
harakiri = 99
"""

GUNICORN_CONF = """\
import multiprocessing

bind = "127.0.0.1:8000"
workers = multiprocessing.cpu_count() * 2 + 1
timeout = 30
worker_class = "sync"
keepalive = 7
max_requests = 100
if False:
    backlog = 10
graceful_timeout: int = 2
"""


@contextmanager
def shop_host() -> Iterator[Host]:
    """A written :class:`Host` with :data:`UWSGI_INI` as ``shop.ini``, serving the api port on
    every address; deleted afterwards."""
    base = make_workdir()
    try:
        host = Host(base).write()
        (base / "shop.ini").write_text(UWSGI_INI.format(socket=f":{host.ports['api']}"))
        yield host
    finally:
        shutil.rmtree(base, ignore_errors=True)
