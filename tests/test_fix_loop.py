"""Closed loop with real servers and real diffs: provoke an incident on a running host with
two upstreams of different schemes (uwsgi_pass to uWSGI, proxy_pass to gunicorn), run
``gw502d fix --apply`` on the logs the servers wrote, reload nginx and restart the
backends from the changed files, send the same requests again.

A scenario passes only if the diff is right for this host: the requests succeed, the new
log lines hold no incident, and only the block or file that needed it changed. Each
scenario gets a fresh host.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gw502d.classify.catalog import load_catalog
from gw502d.cli import main
from gw502d.scan.engine import scan
from tests.fix_host import FixHost, Request, fix_host
from tests.servers.harness import DEFAULT_NGINX_USER, HARAKIRI_SLEEP, wait_for_line

pytestmark = pytest.mark.servers

CATALOG = load_catalog()
FAILED = (502, 504)


@dataclass
class Loop:
    """One scenario's round trip."""

    before: list[int | None]
    seen_before: dict[tuple[str, str], int]
    code: int
    diff: str
    said: str
    after: list[int | None]
    seen_after: dict[tuple[str, str], int]


def _seen(paths: Sequence[str]) -> dict[tuple[str, str], int]:
    counts, _, _ = scan(CATALOG, list(paths)).tallies.totals()
    return {key: n for key, n in counts.items() if n}


@pytest.fixture
def host() -> Iterator[FixHost]:
    with fix_host() as h:
        yield h


def round_trip(host: FixHost, capsys: pytest.CaptureFixture[str], requests: Sequence[Request],
               *, parallel: bool = False, settle: tuple[str, str] | None = None) -> Loop:
    host.write()
    with host.running():
        before = host.send(requests, parallel=parallel)
        if settle is not None:
            wait_for_line(host.log / settle[0], settle[1], 8)
        time.sleep(0.5)  # lines written after the answer (uWSGI's complaint, a respawn)
        seen_before = _seen([str(p) for p in host.logs if p.exists()])
        capsys.readouterr()
        code = main([*host.fix_args(), "--apply", *(str(p) for p in host.logs if p.exists())])
        out = capsys.readouterr()
        host.reload()
        sizes = host.log_sizes()
        after = host.send(requests, parallel=parallel)
        time.sleep(0.5)
    seen_after = _seen(host.logs_since(sizes, host.base / "after"))
    return Loop(before, seen_before, code, out.out, out.err, after, seen_after)


def assert_fixed(loop: Loop, incident: tuple[str, str]) -> None:
    assert loop.code == 0, loop.said
    assert incident in loop.seen_before, loop.seen_before
    assert set(loop.after) == {200}, (loop.after, loop.said, loop.diff)
    failures = {k: n for k, n in loop.seen_after.items()
                if CATALOG.incident(*k).status in FAILED}
    assert incident not in loop.seen_after and not failures, loop.seen_after


def _changed(diff: str) -> list[str]:
    """The lines a diff adds, without the "+" and indentation."""
    return [line[1:].strip() for line in diff.splitlines()
            if line.startswith("+") and not line.startswith("+++")]


def _files(diff: str) -> list[str]:
    return [line.split("/", 1)[1] for line in diff.splitlines() if line.startswith("+++ ")]


# --------------------------------------------------------------------------- scenarios


def test_header_buffers_per_scheme(host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    """Both upstreams send too big headers: each location gets its own module's buffers."""
    big = [("/api/big-header?n=8192", {}), ("/blog/big-header?n=8192", {})]
    loop = round_trip(host, capsys, big)
    assert loop.before == [502, 502]
    assert _changed(loop.diff) == ["uwsgi_buffer_size 16k;", "uwsgi_buffers 8 16k;",
                                   "proxy_buffer_size 16k;", "proxy_buffers 8 16k;"]
    # the two locations nginx chose for the requests; /health passes to the same socket
    assert re.search(r"location /api/ \{\n.*\n.*\n\+ *uwsgi_buffer_size", loop.diff)
    assert re.search(r"proxy_pass http://blog_app;\n\+ *proxy_buffer_size", loop.diff)
    assert ("sites-enabled/shop:8 (location /api/, uwsgi_pass unix:" in loop.said
            and "uwsgi_buffer_size is 4k (nginx's default); the upstream's response headers "
            "did not fit. Set uwsgi_buffer_size 16k." in loop.said)
    assert_fixed(loop, ("upstream_header_too_big", "nginx"))


def test_request_block_size(host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    loop = round_trip(host, capsys, [("/api/ok", {"X-Long": "b" * 5000})])
    assert loop.before == [502]
    assert _files(loop.diff) == [f"{host.base}/etc/uwsgi/apps-available/shop.ini"[1:]]
    assert _changed(loop.diff) == ["buffer-size = 8192"]
    assert "buffer-size is not set in " in loop.said and "(uWSGI's default: 4096)" in loop.said
    assert_fixed(loop, ("request_block_too_big", "uwsgi"))


def test_nginx_gives_up_first(host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    """uwsgi_read_timeout 1s inherited from the server block, no harakiri: a 504."""
    host.server_extra = "uwsgi_read_timeout 1s;"
    loop = round_trip(host, capsys, [("/api/sleep?s=2", {})])
    assert loop.before == [504]
    assert _changed(loop.diff) == ["harakiri = 30", "uwsgi_read_timeout 45s;"]
    assert "uwsgi_read_timeout is 1s, inherited from the server block" in loop.said
    assert "it must stay above harakiri (30, as set above)" in loop.said
    assert_fixed(loop, ("upstream_timeout", "nginx"))


def test_harakiri_kills_first(host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    """uwsgi_read_timeout is 30s already: raising it changes nothing, harakiri kills."""
    host.uwsgi = {"harakiri": "1"}
    loop = round_trip(host, capsys, [("/api" + HARAKIRI_SLEEP, {})],
                      settle=("uwsgi.log", "HARAKIRI ON WORKER"))
    assert loop.before == [502]
    assert _changed(loop.diff) == ["harakiri = 30", "uwsgi_read_timeout 45s;"]
    assert "harakiri is 1 in " in loop.said
    assert_fixed(loop, ("upstream_premature_close", "nginx"))
    assert ("worker_harakiri", "uwsgi") not in loop.seen_after


def test_gunicorn_timeout_kills_first(host: FixHost,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    host.gunicorn = {"timeout": "1"}
    loop = round_trip(host, capsys, [("/blog/sleep?s=2.5", {})],
                      settle=("gunicorn.log", "WORKER TIMEOUT"))
    assert loop.before in ([500], [502])  # gunicorn >= 22 answers 500 itself
    # proxy_read_timeout is 45s (http block), above the new 30: nginx stays as it is
    assert _files(loop.diff) == [str(host.gunicorn_conf)[1:]]
    assert _changed(loop.diff) == ["timeout = 30"]
    assert_fixed(loop, ("worker_timeout", "gunicorn"))


def test_socket_permission(host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    assert DEFAULT_NGINX_USER is not None, "nginx workers must run as another user: run as root"
    host.uwsgi, host.uwsgi_drop = {"umask": "022"}, ("chmod-socket",)
    loop = round_trip(host, capsys, [("/api/ok", {})])
    assert loop.before == [502]
    user = DEFAULT_NGINX_USER
    assert _changed(loop.diff) == ["chmod-socket = 660", f"chown-socket = {user}:{user}"]
    assert f"{host.socket} is srwxr-xr-x root:root" in loop.said
    assert_fixed(loop, ("upstream_socket_permission", "nginx"))


def test_protocol_mismatch(host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    """proxy_pass to uWSGI's uwsgi socket: nginx's location is the side to change."""
    host.api = f"proxy_pass http://unix:{host.socket}:;"
    loop = round_trip(host, capsys, [("/api/ok", {})])
    assert loop.before == [502]
    assert _changed(loop.diff) == [f"uwsgi_pass unix:{host.socket};", "include uwsgi_params;"]
    assert f"-        proxy_pass http://unix:{host.socket}:;" in loop.diff
    assert "speaks the uwsgi protocol: socket = " in loop.said
    assert_fixed(loop, ("protocol_mismatch", "uwsgi"))


def test_listen_queue(host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    host.uwsgi = {"listen": "1"}
    burst = [("/api/sleep?s=0.3", {})] * 8
    loop = round_trip(host, capsys, burst, parallel=True)
    assert 502 in loop.before
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert _changed(loop.diff) == [f"listen = {min(1024, somaxconn)}"]
    assert "listen is 1 in " in loop.said
    assert_fixed(loop, ("upstream_backlog_full", "nginx"))
