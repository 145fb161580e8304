"""Closed loop: provoke a failure on real servers, let gw502d classify the logs they wrote,
apply the change gw502d gives (its machine-readable form), restart, provoke again.

Each scenario passes only if the advice is right: the request succeeds and the incident is
gone from the new logs. Every round runs in a fresh directory with fresh logs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gw502d.classify.catalog import load_catalog
from gw502d.remediate.advice import Advice, Context, advise_seen
from gw502d.remediate.nginx import render
from gw502d.scan.engine import ScanResult, scan
from tests.servers.harness import (
    DEFAULT_NGINX_USER,
    HARAKIRI_SLEEP,
    Gunicorn,
    Nginx,
    Uwsgi,
    free_port,
    make_workdir,
    wait_for_line,
)
from tests.servers.provoke import Via, pass_block, send_all

pytestmark = pytest.mark.servers

CATALOG = load_catalog()
Backend = Uwsgi | Gunicorn
Request = tuple[str, Mapping[str, str]]


@dataclass
class Outcome:
    """One round: what the client got and what gw502d made of the logs."""

    statuses: list[int | None]
    result: ScanResult

    def advice(self, incident: str, source: str) -> Advice:
        assert self.seen().get((incident, source)), \
            f"{incident} ({source}) not seen: {self.seen()}"
        context = Context(tallies=self.result.tallies, correlator=self.result.correlator)
        return advise_seen(CATALOG.incident(incident, source), context)

    def seen(self) -> dict[tuple[str, str], int]:
        counts, _, _ = self.result.tallies.totals()
        return {key: n for key, n in counts.items() if n}

    def failures(self) -> dict[tuple[str, str], int]:
        """Incidents behind a 502/504 still in the logs."""
        catalog = CATALOG
        return {key: n for key, n in self.seen().items()
                if catalog.incident(*key).status in (502, 504)}


def run_round(backend: Callable[[Path], Backend], location: Callable[[Backend, Path], str],
              requests: Sequence[Request], *, parallel: bool = False,
              settle: str | None = None) -> Outcome:
    """Start the backend and nginx, send *requests*, stop both, classify their logs."""
    tmp = make_workdir()
    try:
        shutil.copy("/etc/nginx/uwsgi_params", tmp / "uwsgi_params")
        app = backend(tmp)
        nginx = Nginx(tmp, location(app, tmp))
        with app, nginx:
            statuses = send_all(nginx.port, requests, parallel=parallel)
            if settle is not None:
                wait_for_line(app.log_path, settle, 6)
            time.sleep(0.5)  # lines written after the answer (uWSGI's complaint, a respawn)
        result = scan(CATALOG, [str(nginx.log_path), str(app.log_path)])
        return Outcome(statuses, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def passing(via: Via, directives: Mapping[str, str] = {}) -> Callable[[Backend, Path], str]:
    """A location passing to the backend's port with *directives*; an advised ``*_pass``
    replaces the pass directive itself."""

    def location(app: Backend, tmp: Path) -> str:
        if any(name.endswith("_pass") for name in directives):
            return f"            {render(directives)}\n"
        target = Path(app.socket) if isinstance(app, Uwsgi) and app.port is None else app.port
        assert target is not None
        return pass_block(via, target, render(directives))

    return location


def uwsgi(options: Mapping[str, object] = {}, *, unix: bool = False,
          port: int | None = None) -> Callable[[Path], Backend]:
    """uWSGI on a unix socket, a given port (the same across rounds), or any free port."""

    def make(tmp: Path) -> Backend:
        socket = str(tmp / "app.sock") if unix else f"127.0.0.1:{port}" if port else None
        return Uwsgi(tmp, dict(options), socket=socket)

    return make


def applied(options: Mapping[str, object], advice: Mapping[str, str]) -> dict[str, object]:
    """uWSGI options with the advised ones (ini "true" is a command-line flag)."""
    return {**options, **{k: True if v == "true" else v for k, v in advice.items()}}


def assert_fixed(outcome: Outcome, incident: tuple[str, str]) -> None:
    assert set(outcome.statuses) == {200}, outcome.statuses
    assert incident not in outcome.seen()
    assert outcome.failures() == {}, outcome.failures()


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("via", ["uwsgi", "proxy"])
def test_response_header_too_big(via: Via) -> None:
    def backend(tmp: Path) -> Backend:
        return Uwsgi(tmp) if via == "uwsgi" else Gunicorn(tmp)

    big = [("/big-header?n=8192", {})]
    before = run_round(backend, passing(via), big)
    assert before.statuses == [502]
    advice = before.advice("upstream_header_too_big", "nginx")
    assert set(advice.nginx) == {f"{via}_buffer_size", f"{via}_buffers",
                                 f"{via}_busy_buffers_size"}
    after = run_round(backend, passing(via, advice.nginx), big)
    assert_fixed(after, ("upstream_header_too_big", "nginx"))


def test_request_block_too_big() -> None:
    long_header = [("/ok", {"X-Long": "b" * 5000})]
    before = run_round(uwsgi(), passing("uwsgi"), long_header)
    assert before.statuses == [502]
    assert before.result.correlator.counts == {("upstream_reset", "request_block_too_big"): 1}
    advice = before.advice("request_block_too_big", "uwsgi")
    assert advice.uwsgi == {"buffer-size": "8192"}
    # nginx's own line carries the same fix, through the root cause
    assert before.advice("upstream_reset", "nginx").uwsgi == advice.uwsgi
    after = run_round(uwsgi(applied({}, advice.uwsgi)), passing("uwsgi"), long_header)
    assert_fixed(after, ("request_block_too_big", "uwsgi"))


def test_protocol_mismatch_behind_proxy_pass() -> None:
    port = free_port()  # the advice names the address nginx passed to
    before = run_round(uwsgi(port=port), passing("proxy"), [("/ok", {})])
    assert before.statuses == [502]
    assert before.result.correlator.counts == {
        ("upstream_premature_close", "protocol_mismatch"): 1}
    advice = before.advice("protocol_mismatch", "uwsgi")
    assert set(advice.nginx) == {"include", "uwsgi_pass"}  # nginx is the side to change
    assert advice.nginx["uwsgi_pass"] == f"127.0.0.1:{port}"
    after = run_round(uwsgi(port=port), passing("uwsgi", advice.nginx), [("/ok", {})])
    assert_fixed(after, ("protocol_mismatch", "uwsgi"))


def test_harakiri_kills_before_nginx_read_timeout() -> None:
    """The trap: uwsgi_read_timeout was already raised; harakiri kills first."""
    slow = [(HARAKIRI_SLEEP, {})]
    trap = {"uwsgi_read_timeout": "30s"}
    before = run_round(uwsgi({"harakiri": 1}), passing("uwsgi", trap), slow,
                       settle="HARAKIRI ON WORKER")
    assert before.statuses == [502]
    advice = before.advice("upstream_premature_close", "nginx")
    assert advice.cause == "worker_harakiri"
    assert int(advice.uwsgi["harakiri"]) < int(advice.nginx["uwsgi_read_timeout"].rstrip("s"))
    after = run_round(uwsgi(applied({"harakiri": 1}, advice.uwsgi)),
                      passing("uwsgi", {**trap, **advice.nginx}), slow)
    assert_fixed(after, ("upstream_premature_close", "nginx"))
    assert "worker_harakiri" not in {i for i, _ in after.seen()}


def test_nginx_read_timeout_before_the_app() -> None:
    slow = [("/sleep?s=2", {})]
    short = {"uwsgi_read_timeout": "1s"}
    before = run_round(uwsgi(), passing("uwsgi", short), slow)
    assert before.statuses == [504]
    advice = before.advice("upstream_timeout", "nginx")
    assert "harakiri" in advice.uwsgi and "uwsgi_read_timeout" in advice.nginx
    after = run_round(uwsgi(applied({}, advice.uwsgi)),
                      passing("uwsgi", {**short, **advice.nginx}), slow)
    assert_fixed(after, ("upstream_timeout", "nginx"))


def test_gunicorn_worker_timeout() -> None:
    slow = [("/sleep?s=2.5", {})]

    def gunicorn(timeout: str) -> Callable[[Path], Backend]:
        return lambda tmp: Gunicorn(tmp, ["--timeout", timeout])

    before = run_round(gunicorn("1"), passing("proxy"), slow, settle="WORKER TIMEOUT")
    assert before.statuses in ([500], [502])  # gunicorn >= 22 answers 500 itself
    advice = before.advice("worker_timeout", "gunicorn")
    assert set(advice.gunicorn) == {"timeout"} and "proxy_read_timeout" in advice.nginx
    after = run_round(gunicorn(advice.gunicorn["timeout"]), passing("proxy", advice.nginx),
                      slow)
    assert_fixed(after, ("worker_timeout", "gunicorn"))


def test_socket_permission() -> None:
    assert DEFAULT_NGINX_USER is not None, "nginx workers must run as another user: run as root"
    umask = {"umask": "022"}  # the usual mistake: a root-owned srwxr-xr-x socket
    before = run_round(uwsgi(umask, unix=True), passing("uwsgi"), [("/ok", {})])
    assert before.statuses == [502]
    advice = before.advice("upstream_socket_permission", "nginx")
    assert set(advice.uwsgi) == {"chmod-socket", "chown-socket"}
    after = run_round(uwsgi(applied(umask, advice.uwsgi), unix=True), passing("uwsgi"),
                      [("/ok", {})])
    assert_fixed(after, ("upstream_socket_permission", "nginx"))


def test_backlog_full() -> None:
    short_queue = {"listen": 1, "chmod-socket": 666}
    burst = [("/sleep?s=0.3", {})] * 8
    before = run_round(uwsgi(short_queue, unix=True), passing("uwsgi"), burst, parallel=True)
    assert 502 in before.statuses
    advice = before.advice("upstream_backlog_full", "nginx")
    assert int(advice.uwsgi["listen"]) >= len(burst)
    after = run_round(uwsgi(applied(short_queue, advice.uwsgi), unix=True), passing("uwsgi"),
                      burst, parallel=True)
    assert_fixed(after, ("upstream_backlog_full", "nginx"))
