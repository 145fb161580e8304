"""``[servers]`` in gw502d.toml: check-config says what it reads and what it cannot, and the
running daemon reads the servers' configuration at start, when a file changes and on
SIGHUP, with per-upstream metrics labelled from it.

The host is :mod:`tests.hostconf_host`'s Debian-like nginx tree; the lines fed are nginx's
own (``real:`` catalog examples) with the upstream each step needs.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gw502d.daemon.config import parse_config
from gw502d.errors import ConfigError
from gw502d.remediate.configured import HostConfig
from gw502d.remediate.host import ConfigPaths
from tests.daemon import append, config_text, series
from tests.hostconf_host import Host, shop_host
from tests.servers.harness import free_port
from tests.test_config import gw502d, write
from tests.test_upstreams import line

UPSTREAM_INCIDENTS = "gw502d_upstream_incidents_total"


@pytest.fixture
def host() -> Iterator[Host]:
    with shop_host() as h:
        yield h


def servers_table(host: Host, *uwsgi: str) -> str:
    return (f"[servers]\nnginx_conf = {json.dumps(host.conf)}\n"
            f"uwsgi = {json.dumps([str(host.base / 'shop.ini'), *uwsgi])}\n")


@pytest.mark.parametrize(("table", "message"), [
    ({"servers": "x"}, "servers: must be a table ([servers])"),
    ({"servers": {"uwsgi": "/etc/uwsgi/x.ini"}}, "servers.uwsgi: must be an array of strings"),
    ({"servers": {"gunicorn": [""]}}, "servers.gunicorn: must be an array of non-empty"),
    ({"servers": {"nginx": "/etc/nginx/nginx.conf"}}, "servers.nginx: unknown key (known: "
                                                      "gunicorn, gunicorn_command, nginx_conf"),
])
def test_servers_keys_are_checked(tmp_path: Path, table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        parse_config(table, source="x.toml", base=tmp_path)


def test_servers_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = parse_config({"servers": {"nginx_conf": "nginx/nginx.conf", "uwsgi": ["u/*.ini"]}},
                          source="x.toml", base=tmp_path)
    assert config.servers.nginx == str(tmp_path / "nginx/nginx.conf")
    assert config.servers.uwsgi == (str(tmp_path / "u/*.ini"),)
    assert parse_config({"servers": {"nginx_conf": ""}}, source="x", base=tmp_path
                        ).servers.nginx is None
    assert parse_config({}, source="x", base=tmp_path).servers.nginx == "/etc/nginx/nginx.conf"


def test_check_config_says_what_it_reads_and_what_not(tmp_path: Path, host: Host) -> None:
    path = write(tmp_path, config_text({"nginx": tmp_path / "error.log"})
                 + servers_table(host, str(host.base / "apps/*.ini"))
                 + f'gunicorn = ["{host.base}/blog.conf.py"]\n')
    result = gw502d("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"  nginx: {host.conf} (7 file(s), 9 upstream(s))" in result.stdout
    assert f"  uwsgi: {host.base}/shop.ini (*:{host.ports['api']})" in result.stdout
    assert (f"warning: uwsgi configuration: {host.base}/apps/*.ini: matches no file"
            in result.stderr)
    assert (f"warning: gunicorn configuration: {host.base}/blog.conf.py: No such file or "
            "directory") in result.stderr


def test_daemon_reads_servers_at_start_on_change_and_on_sighup(
        tmp_path: Path, host: Host, daemon_factory: Any) -> None:
    log = tmp_path / "error.log"
    log.touch()
    d = daemon_factory(config_text({"nginx": log}, start_at="beginning") + servers_table(host))
    d.start()
    api, blog = f"uwsgi://127.0.0.1:{host.ports['api']}", f"http://127.0.0.1:{host.ports['blog']}"
    append(log, [line("upstream_header_too_big", api).decode()] * 2
           + [line("upstream_header_too_big", blog).decode(),
              line("upstream_header_too_big", "http://10.1.2.3:80").decode()])

    def counts() -> dict[str, float]:
        return {dict(k)["upstream"]: v for k, v in series(d.metrics(), UPSTREAM_INCIDENTS).items()
                if dict(k)["incident"] == "upstream_header_too_big"}

    d.wait_for(lambda: counts().get(api) == 2, "the per-upstream counts")
    assert counts()[blog] == 1 and counts()["other"] == 1
    assert set(counts()) == {*read_labels(host), "other"}
    fixes = {dict(k)["upstream"]: dict(k)["remediation"]
             for k in series(d.metrics(), "gw502d_upstream_remediation_info")}
    assert f"{host.shop}:13 (location /api/, uwsgi_pass" in fixes[api]
    assert "Set proxy_buffer_size 16k." in fixes[blog] and "uwsgi" not in fixes[blog]

    # a new location in a site: read again within seconds, its peer becomes a label
    new_port = free_port()
    site = host.etc / "sites-available/blog"
    site.write_text(site.read_text().rstrip().removesuffix("}") +
                    f"    location /new/ {{ proxy_pass http://127.0.0.1:{new_port}; }}\n}}\n")
    new = f"http://127.0.0.1:{new_port}"
    d.wait_for(lambda: counts().get(new) == 0, "the new upstream's label", timeout=20)
    reads = [e for e in d.events() if e.get("event") == "server configuration read"]
    assert [e["why"] for e in reads] == ["start", "files changed"]

    # SIGHUP reads it again; what cannot be read is said and exported
    d.config_path.write_text(config_text({"nginx": log}, start_at="beginning")
                             + servers_table(host, str(host.base / "missing.ini")))
    d.send(signal.SIGHUP)
    problems = ("gw502d_server_config_problems", frozenset({("server", "uwsgi")}))
    d.wait_for(lambda: d.metrics().get(problems) == 1, "the unreadable uWSGI config")
    assert [e["why"] for e in d.events() if e.get("event") == "server configuration read"][-1] \
        == "reload"
    warnings = [e for e in d.events() if e.get("event") == "server configuration not read"]
    assert warnings[-1]["path"] == str(host.base / "missing.ini")
    assert warnings[-1]["reason"] == "No such file or directory"
    assert counts()[api] == 2  # counters survive
    assert d.stop() == 0


def read_labels(host: Host) -> set[str]:
    return set(HostConfig.read(ConfigPaths(host.conf)).labels())
